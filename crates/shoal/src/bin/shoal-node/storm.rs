//! The message storm: numbered casts from every node to the `storm` process of every other.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use shoal::prelude::*;
use shoal::transport::Node;

use crate::{SENDS_PER_YIELD, STORM, lock};

/// What the receiver saw from one sender.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct SenderTally {
    pub(crate) count: u64,
    pub(crate) last: u64,
    pub(crate) anomalies: u64,
}

/// What the storm receiver saw, by sender.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) senders: BTreeMap<String, SenderTally>,
}

impl Tally {
    /// Counts cast number `seq` from `sender`. Casts from one sender are numbered from 1, so
    /// each must be one more than the one before; anything else is a gap, a duplicate or a
    /// reordering.
    pub(crate) fn record(&mut self, sender: String, seq: u64) {
        let tally = self.senders.entry(sender).or_default();
        if seq != tally.last + 1 {
            tally.anomalies += 1;
        }
        tally.count += 1;
        tally.last = seq;
    }
}

/// The process registered as `storm`: counts numbered casts per sender.
pub(crate) struct StormReceiver {
    pub(crate) tally: Arc<Mutex<Tally>>,
}

impl Process for StormReceiver {
    /// The sending node's name and the cast's number.
    type Message = (String, u64);
    type Call = ();
    type Reply = ();

    async fn handle_cast(&mut self, (sender, seq): (String, u64), _: &mut Context<Self>) {
        lock(&self.tally).record(sender, seq);
    }

    fn remote_messages() -> Option<Codec<Self>> {
        Some(Codec::msgpack())
    }
}

/// This node's storm senders, all peers together.
#[derive(Default)]
pub(crate) struct StormSenders {
    pub(crate) running: AtomicBool,
    pub(crate) sent: AtomicU64,
    pub(crate) target: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) active: AtomicU64,
}

/// Casts `1..=messages` to `peer`'s storm receiver, each after the one before is queued; stops
/// at the first error (the peer went away), which is counted.
///
/// It yields to the scheduler every [`SENDS_PER_YIELD`] casts besides what the runtime's casts
/// spend of tokio's cooperative budget: a sender that held its worker thread until the peer's
/// queue (65,536 frames) is full would, with a few of them on the two workers, keep heartbeats
/// and reads waiting long enough under load for peers to be declared down mid-storm.
pub(crate) async fn send_storm(node: Node, peer: String, messages: u64, storm: Arc<StormSenders>) {
    let me = node.name().to_owned();
    let to = Dest::name_on(&peer, STORM);
    for seq in 1..=messages {
        if let Err(error) = node.runtime().cast(to.clone(), (me.clone(), seq)).await {
            eprintln!("{me}: storm to {peer} stopped at {seq}: {error}");
            storm.errors.fetch_add(1, Ordering::Relaxed);
            break;
        }
        storm.sent.fetch_add(1, Ordering::Relaxed);
        if seq % SENDS_PER_YIELD == 0 {
            tokio::task::yield_now().await;
        }
    }
    if storm.active.fetch_sub(1, Ordering::AcqRel) == 1 {
        storm.running.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The storm's invariant: from each sender, exactly 1, 2, ..., M in order. Any gap,
    /// duplicate or swap shows as an anomaly.
    #[test]
    fn the_tally_flags_gaps_duplicates_and_reorderings() {
        let tally_of = |seqs: &[u64]| {
            let mut tally = Tally::default();
            for &seq in seqs {
                tally.record("a".to_owned(), seq);
            }
            tally.senders["a"]
        };
        assert_eq!(tally_of(&[1, 2, 3]), SenderTally { count: 3, last: 3, anomalies: 0 });
        assert_eq!(tally_of(&[1, 3]).anomalies, 1, "a gap");
        // The repeated 2 breaks the sequence once; the extra message shows in the count.
        assert_eq!(tally_of(&[1, 2, 2, 3]), SenderTally { count: 4, last: 3, anomalies: 1 });
        assert_eq!(tally_of(&[1, 3, 2]).anomalies, 2, "a reordering");
        assert_eq!(tally_of(&[2, 3]).anomalies, 1, "the first one missing");
    }
}
