//! The broadcast commands: `shoal-broadcast`'s service over this node's full-mesh
//! connections, with a [`Log`] of numbers as its one topic's handler.

use shoal::broadcast::{Broadcast, BroadcastConfig, Contact, Log, Topic};
use shoal::transport::Node;

/// The topic of the numbers, registered on every node.
const NUMBERS: Topic<u64> = Topic::new("numbers");

/// The most numbers a node keeps (far more than any cluster test broadcasts).
const LOG_CAPACITY: usize = 1_000_000;

/// This node's broadcast service and what it delivered.
pub(crate) struct Broadcasts {
    service: Broadcast,
    log: Log<u64>,
}

impl Broadcasts {
    /// Starts the service on the connections the transport keeps (the node runs full mesh,
    /// the default of both) and registers the numbers' log.
    pub(crate) async fn start(node: &Node) -> Result<Self, String> {
        let service = Broadcast::start(node, BroadcastConfig::default())
            .await
            .map_err(|error| format!("cannot start the broadcast service: {error}"))?;
        let log = Log::new(node, LOG_CAPACITY);
        service
            .register(NUMBERS, log.clone())
            .await
            .map_err(|error| format!("cannot register the numbers' handler: {error}"))?;
        Ok(Broadcasts { service, log })
    }

    /// The broadcast service (for the dashboard's view of this node).
    #[cfg(feature = "dashboard")]
    pub(crate) fn service(&self) -> &Broadcast {
        &self.service
    }

    /// `bcast send N`: broadcasts the number `N`.
    pub(crate) async fn send(&self, number: u64) -> Result<String, String> {
        self.service
            .broadcast(NUMBERS, number)
            .await
            .map(|()| String::new())
            .map_err(|error| format!("cannot broadcast {number}: {error}"))
    }

    /// `bcast seen`: every number delivered here, as sorted ranges (`1-3,5`).
    pub(crate) fn seen(&self) -> String {
        let mut numbers: Vec<u64> =
            self.log.messages().into_iter().map(|(_, number)| number).collect();
        numbers.sort_unstable();
        numbers.dedup();
        ranges(&numbers)
    }

    /// `bcast views`: the overlay's active and passive views, for diagnosis.
    pub(crate) async fn views(&self) -> Result<String, String> {
        let views = self.service.views().await.ok_or("the broadcast driver has stopped")?;
        let names = |contacts: &std::collections::BTreeSet<Contact>| {
            contacts.iter().map(|contact| contact.name.as_str()).collect::<Vec<_>>().join(",")
        };
        Ok(format!("active={} passive={}", names(&views.active), names(&views.passive)))
    }
}

/// Sorted, distinct numbers as ranges: `[1, 2, 3, 5]` → `1-3,5`.
fn ranges(numbers: &[u64]) -> String {
    let mut parts = Vec::new();
    let mut iter = numbers.iter().copied().peekable();
    while let Some(low) = iter.next() {
        let mut high = low;
        while iter.peek() == Some(&(high + 1)) {
            high += 1;
            iter.next();
        }
        parts.push(if low == high { low.to_string() } else { format!("{low}-{high}") });
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::ranges;

    #[test]
    fn numbers_print_as_ranges() {
        assert_eq!(ranges(&[1, 2, 3, 5, 7, 8]), "1-3,5,7-8");
        assert_eq!(ranges(&[4]), "4");
        assert_eq!(ranges(&[]), "");
    }
}
