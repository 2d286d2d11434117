//! [`Stats`]: what a broadcast driver counted, read with
//! [`Broadcast::stats`](super::Broadcast::stats).

/// Counters of a [`Broadcast`](super::Broadcast) driver since it started. Every message the
/// driver does not send is in one of them; each such loss is recoverable by the protocols
/// (another announcer's GRAFT, or the next anti-entropy exchange).
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
}
