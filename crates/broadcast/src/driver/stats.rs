//! [`Stats`]: what a broadcast driver counted, read with
//! [`Broadcast::stats`](super::Broadcast::stats).
//!
//! The driver task owns them (one writer, plain integers: nothing is shared until a handle
//! asks), and counts per protocol message it sends, never through a metrics library; a
//! sampler such as the facade's `shoal::metrics` reads them on a tick.

use crate::core::PlumtreeMessage;

/// Counters of a [`Broadcast`](super::Broadcast) driver since it started: what the trees
/// sent, by kind, and the redundant payloads they received; and every message the driver
/// does not send is in one of the `dropped_*`, `oversized` and `send_failures` counters, each
/// such loss recoverable by the protocols (another announcer's GRAFT, or the next
/// anti-entropy exchange).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages dropped because a peer's queue of messages waiting for its connection was
    /// full ([`BroadcastConfig::max_unsent_per_peer`](super::BroadcastConfig::max_unsent_per_peer)).
    pub dropped_unsent: u64,
    /// Messages dropped because their peer had no connection and none could be opened (past
    /// [`BroadcastConfig::max_connecting`](super::BroadcastConfig::max_connecting), or the
    /// peer not in the overlay any more): the trees' and the overlay's own.
    pub dropped_unroutable: u64,
    /// IHAVE announcements dropped, oldest first, past
    /// [`BroadcastConfig::max_lazy_queue`](super::BroadcastConfig::max_lazy_queue), over all
    /// topics.
    pub dropped_announcements: u64,
    /// Messages not sent because they encode larger than
    /// [`BroadcastConfig::max_message_bytes`](super::BroadcastConfig::max_message_bytes)
    /// (an anti-entropy digest, a payload too large for the transport): an error, logged.
    pub oversized: u64,
    /// Sends the transport refused for another reason than a missing connection (logged).
    pub send_failures: u64,
    /// Anti-entropy digests sent.
    pub digests_sent: u64,
    /// Messages delivered by anti-entropy exchanges (merged as new from an exchange answer).
    pub delivered_by_exchange: u64,
    /// Payloads pushed eagerly (Plumtree GOSSIP, to a tree's eager links or in answer to a
    /// GRAFT), as the trees asked for them: those lost to the drops above included.
    pub eager_pushes: u64,
    /// Lazy pushes: IHAVE messages (each a batch of announcements), as asked for.
    pub lazy_pushes: u64,
    /// GRAFTs sent: a link made eager again, for a missing message or a shorter path.
    pub grafts: u64,
    /// PRUNEs sent: a link made lazy after a duplicate came over it.
    pub prunes: u64,
    /// Redundant deliveries: payloads received that were known already, over all topics.
    pub duplicates: u64,
}

impl Stats {
    /// Counts a tree message the driver was asked to send, by its kind.
    pub(super) fn count_tree_send<P, I, T>(&mut self, message: &PlumtreeMessage<P, I, T>) {
        let counter = match message {
            PlumtreeMessage::Gossip { .. } => &mut self.eager_pushes,
            PlumtreeMessage::IHave { .. } => &mut self.lazy_pushes,
            PlumtreeMessage::Graft { .. } => &mut self.grafts,
            PlumtreeMessage::Prune { .. } => &mut self.prunes,
        };
        *counter += 1;
    }
}
