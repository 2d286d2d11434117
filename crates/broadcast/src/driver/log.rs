//! [`Log`]: a ready-made handler that keeps the messages it delivers, in delivery order, and
//! delivers each once.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use shoal_transport::Node;
use tokio::sync::watch;

use super::{AntiEntropy, Seen, Summary};
use crate::core::{Graft, Handler};

/// A broadcast of a [`Log`]: the node it started from (name and incarnation, so a restarted
/// node's numbers never collide with its previous run's) and its number there, from 0.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MessageId {
    /// The broadcasting node's name.
    pub origin: String,
    /// The broadcasting node's incarnation.
    pub incarnation: u64,
    /// The broadcast's number at that node, from 0.
    pub seq: u64,
}

struct State<T> {
    origin: String,
    incarnation: u64,
    next_seq: u64,
    /// Every id delivered, apart from the payloads (which are forgotten past the capacity).
    seen: Seen,
    messages: BTreeMap<MessageId, T>,
    /// Delivery order, for reading and for forgetting the oldest past the capacity.
    order: VecDeque<MessageId>,
    capacity: usize,
}

/// A handler that keeps the messages it delivers (broadcast here or received), at most
/// `capacity` of them: past it the oldest payload is forgotten. Each message is delivered
/// once, however small the capacity: the ids delivered are kept apart from the payloads, in a
/// [`Seen`] (a watermark per origin and incarnation plus a bounded set above it), so a
/// forgotten message that comes again (a late GRAFT, an exchange) is a duplicate. Clones share
/// the log: register one with [`Broadcast::register`](super::Broadcast::register), read
/// another.
///
/// A broadcast's number is taken when its message is merged (as [`Plumtree::broadcast`]
/// does right after producing it), so a produced message that never was (its encoding
/// failed) leaves no gap in the origin's numbers.
///
/// [`Plumtree::broadcast`]: crate::core::Plumtree::broadcast
///
/// ```
/// use shoal_broadcast::{Handler, Log, MessageId};
///
/// let mut log = Log::<u64>::with_origin("a", 1, 100);
/// let (id, payload) = log.produce(7);
/// assert!(log.merge(&id, payload));
/// assert_eq!(log.messages(), [(MessageId { origin: "a".into(), incarnation: 1, seq: 0 }, 7)]);
/// ```
pub struct Log<T> {
    state: Arc<Mutex<State<T>>>,
    delivered: Arc<watch::Sender<usize>>,
}

impl<T> Clone for Log<T> {
    fn clone(&self) -> Self {
        Log { state: self.state.clone(), delivered: self.delivered.clone() }
    }
}

impl<T> Debug for Log<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log").field("delivered", &*self.delivered.borrow()).finish()
    }
}

impl<T: Clone> Log<T> {
    /// An empty log for broadcasts from `node`, keeping at most `capacity` messages.
    pub fn new(node: &Node, capacity: usize) -> Self {
        Self::with_origin(node.name(), node.incarnation(), capacity)
    }

    /// An empty log whose broadcasts are numbered as from `origin` run `incarnation`.
    pub fn with_origin(origin: &str, incarnation: u64, capacity: usize) -> Self {
        let state = State {
            origin: origin.to_owned(),
            incarnation,
            next_seq: 0,
            seen: Seen::default(),
            messages: BTreeMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        };
        Log { state: Arc::new(Mutex::new(state)), delivered: Arc::new(watch::Sender::new(0)) }
    }

    fn state(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The messages held, in delivery order.
    pub fn messages(&self) -> Vec<(MessageId, T)> {
        let state = self.state();
        state
            .order
            .iter()
            .filter_map(|id| state.messages.get(id).map(|message| (id.clone(), message.clone())))
            .collect()
    }

    /// Whether `id` is held.
    pub fn contains(&self, id: &MessageId) -> bool {
        self.state().messages.contains_key(id)
    }

    /// How many messages are held.
    pub fn len(&self) -> usize {
        self.state().messages.len()
    }

    /// Whether no message is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `id` was delivered here (its payload may be forgotten).
    pub fn delivered(&self, id: &MessageId) -> bool {
        self.state().seen.contains(id)
    }

    /// Counts every delivery (forgotten messages included; each message once): wait on it
    /// with `changed`/`wait_for` instead of polling.
    pub fn deliveries(&self) -> watch::Receiver<usize> {
        self.delivered.subscribe()
    }
}

impl<T: Clone + Debug> Handler<String> for Log<T> {
    type Message = T;
    type Id = MessageId;
    type Payload = T;
    type Error = std::convert::Infallible;

    fn produce(&mut self, message: T) -> (MessageId, T) {
        let state = self.state();
        let id = MessageId {
            origin: state.origin.clone(),
            incarnation: state.incarnation,
            seq: state.next_seq,
        };
        (id, message)
    }

    fn merge(&mut self, id: &MessageId, payload: T) -> bool {
        let mut state = self.state();
        if !state.seen.insert(id) {
            return false;
        }
        if id.origin == state.origin && id.incarnation == state.incarnation {
            state.next_seq = state.next_seq.max(id.seq + 1);
        }
        while state.order.len() >= state.capacity {
            if let Some(oldest) = state.order.pop_front() {
                state.messages.remove(&oldest);
            }
        }
        state.messages.insert(id.clone(), payload);
        state.order.push_back(id.clone());
        drop(state);
        self.delivered.send_modify(|count| *count += 1);
        true
    }

    fn is_stale(&self, id: &MessageId) -> bool {
        self.delivered(id)
    }

    fn graft(&mut self, id: &MessageId) -> Graft<T, Self::Error> {
        self.state()
            .messages
            .get(id)
            .map_or(Graft::Stale, |message| Graft::Payload(message.clone()))
    }

    fn exchange(&mut self, _peer: &String) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// The digest is a [`Summary`] of the ids delivered: bounded by the origins, whatever the
/// number of messages.
impl<T: Clone + Debug> AntiEntropy for Log<T> {
    type Digest = Summary;

    fn digest(&self) -> Summary {
        self.state().seen.summary()
    }

    fn missing(&mut self, digest: &Summary, max: usize) -> Vec<(MessageId, T)> {
        let state = self.state();
        state
            .order
            .iter()
            .filter(|id| !digest.covers(id))
            .filter_map(|id| state.messages.get(id).map(|message| (id.clone(), message.clone())))
            .take(max)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Anti-entropy answers exactly what the peer's digest lacks, bounded by `max`.
    #[test]
    fn missing_is_what_the_digest_lacks() {
        let mut a = Log::<u32>::with_origin("a", 1, 10);
        let mut b = Log::<u32>::with_origin("b", 1, 10);
        for n in 0..3 {
            let (id, payload) = a.produce(n);
            assert!(a.merge(&id, payload));
        }
        let (id, payload) = a.produce(99);
        assert!(b.merge(&id, payload));
        let missing = a.missing(&b.digest(), 10);
        assert_eq!(missing.iter().map(|(_, n)| *n).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(a.missing(&b.digest(), 2).len(), 2);
        assert!(b.missing(&a.digest(), 10).iter().all(|(id, _)| id.seq == 3));
    }

    /// The log holds at most its capacity of payloads, forgetting the oldest; a duplicate is
    /// not new, even once its payload is forgotten (exactly-once delivery).
    #[test]
    fn capacity_bounds_the_log_and_duplicates_are_not_new() {
        let mut log = Log::<u32>::with_origin("a", 1, 2);
        let ids: Vec<MessageId> = (0..3)
            .map(|n| {
                let (id, payload) = log.produce(n);
                assert!(log.merge(&id, payload));
                id
            })
            .collect();
        assert_eq!(log.len(), 2);
        assert!(!log.contains(&ids[0]));
        assert!(log.delivered(&ids[0]));
        assert!(!log.merge(&ids[2], 2));
        assert!(!log.merge(&ids[0], 0), "a forgotten payload is not delivered again");
        assert_eq!(*log.deliveries().borrow(), 3);
    }
}
