//! [`BroadcastConfig`]: everything a [`Broadcast`](super::Broadcast) is started with, the
//! protocols' settings included. The cores keep configurations of their own
//! ([`HyParViewConfig`], [`PlumtreeConfig`]); this is the one place that fills them in.

use std::time::Duration;

use crate::core::{ConnectionMode, HyParViewConfig, OverlayConfig, PlumtreeConfig};

/// What a [`Broadcast`](super::Broadcast) is started with: the overlay's and the trees'
/// protocol settings, and the driver's own bounds. The defaults suit a LAN; every node of one
/// overlay should use the same protocol settings and [`service`](Self::service).
///
/// Whether HyParView chooses the node's connections or runs over the transport's full mesh is
/// not a setting of its own: it follows the node's
/// [`Membership`](shoal_transport::Membership) (`Membership::Managed`: HyParView's active view
/// decides the connections; otherwise the cores run over the connections the transport keeps).
#[derive(Clone, Debug)]
pub struct BroadcastConfig {
    /// HyParView's active view size: the neighbours every tree uses (default 5). See
    /// [`HyParViewConfig::active_capacity`].
    pub active_view_capacity: usize,
    /// HyParView's passive view size (default 30). See [`HyParViewConfig::passive_capacity`].
    pub passive_view_capacity: usize,
    /// Hops after which a FORWARD_JOIN walk ends in an active view (default 6). See
    /// [`HyParViewConfig::active_walk_length`].
    pub active_walk_length: u32,
    /// The hop at which a FORWARD_JOIN walk drops the joiner into a passive view (default 3).
    /// See [`HyParViewConfig::passive_walk_length`].
    pub passive_walk_length: u32,
    /// How often a node starts a SHUFFLE (default 10 s).
    pub shuffle_interval: Duration,
    /// Active peers sent in a shuffle (default 3).
    pub shuffle_active: usize,
    /// Passive peers sent in a shuffle (default 4).
    pub shuffle_passive: usize,
    /// Hops of a shuffle walk (default 6).
    pub shuffle_walk_length: u32,
    /// A NEIGHBOUR request is high priority while the active view holds fewer peers than
    /// this (default 3). See [`HyParViewConfig::high_priority_below`].
    pub high_priority_below: usize,
    /// How long a NEIGHBOUR request may go unanswered before another candidate is tried
    /// (default 1 s).
    pub neighbour_timeout: Duration,
    /// How often a node with room in its active view asks a passive peer to fill it
    /// (default 1 s).
    pub repair_interval: Duration,
    /// How often queued IHAVE announcements are flushed (default 200 ms).
    pub lazy_tick: Duration,
    /// How long an announced message may stay missing before the first GRAFT, at least
    /// (default 500 ms). See [`PlumtreeConfig::graft_timeout`].
    pub graft_timeout: Duration,
    /// Up to how much longer the first GRAFT waits, drawn for each missing message (default
    /// 250 ms). See [`PlumtreeConfig::graft_jitter`].
    pub graft_jitter: Duration,
    /// How long after a GRAFT the next announcer is grafted (default 500 ms).
    pub second_graft_timeout: Duration,
    /// How often each topic asks for an anti-entropy exchange with a random neighbour
    /// (default 10 s); `None` for never.
    pub exchange_interval: Option<Duration>,
    /// Announcements queued for one peer between lazy ticks; past it the oldest is dropped
    /// (default 4,096).
    pub max_lazy_queue: usize,
    /// Messages tracked as missing per topic (default 4,096). See
    /// [`PlumtreeConfig::max_missing`].
    pub max_missing: usize,
    /// Roots with their own tree per topic; past it the least recently used is forgotten
    /// (default 1,024).
    pub max_roots: usize,
    /// Plumtree's §3.8 optimisation threshold, in hops (default 3); `None` turns it off. See
    /// [`PlumtreeConfig::optimisation_threshold`].
    pub optimisation_threshold: Option<u32>,
    /// How long a delivered message is announced to neighbours that come up later (default
    /// 10 s); `Duration::ZERO` turns it off. See [`PlumtreeConfig::catch_up_window`].
    pub catch_up_window: Duration,
    /// Messages kept for catch-up announcements per topic (default 256).
    pub max_catch_up: usize,
    /// Messages per topic whose parent and hop count are remembered for the optimisation
    /// (default 4,096).
    pub max_remembered: usize,
    /// Seeds every random choice of the protocols, mixed with the node's incarnation (and,
    /// for a topic's tree, its name) so that nodes, restarts and topics draw differently.
    pub seed: u64,
    /// The name of the transport service the driver's messages travel on (default
    /// `"broadcast"`); the same on every node of one overlay.
    pub service: String,
    /// Messages from other nodes waiting for the driver (back-pressure past it).
    pub inbox_capacity: usize,
    /// Requests from handles waiting for the driver.
    pub command_capacity: usize,
    /// How long a connection to a peer outside the active view stays open after its last
    /// overlay message (managed membership only).
    pub linger: Duration,
    /// Housekeeping period: idle connections closed, one lost peer retried, a stopped node
    /// noticed.
    pub tick: Duration,
    /// How long the driver's quick retries of a peer lost to a failure go on (a connection
    /// attempt each tick, in turn; default 300 s). HyParView's own retries go on past it.
    pub forget_lost_after: Duration,
    /// The most lost peers remembered (the oldest forgotten first; default 64).
    pub max_lost: usize,
    /// The longest wait between HyParView's retries of one lost peer: the wait starts at
    /// `repair_interval` and doubles with each unanswered retry up to this (default 30 s).
    /// A lost peer is retried for as long as it is remembered, so two halves of a
    /// partition of any length link again within about this long after it heals. See
    /// [`HyParViewConfig::max_retry_backoff`].
    pub max_retry_backoff: Duration,
    /// The most messages waiting for one peer's connection to open; past it the newest is
    /// dropped (the protocols' timers and anti-entropy cover a lost message).
    pub max_unsent_per_peer: usize,
    /// The most connections being opened at once; a message to one more unconnected peer is
    /// dropped.
    pub max_connecting: usize,
    /// The most messages one anti-entropy answer carries.
    pub max_exchange_items: usize,
    /// The largest message the driver sends, encoded (default 16 MiB less 64 KiB, under the
    /// transport's default frame limit of 16 MiB with room for its envelope). A message
    /// larger than this is not sent and is counted in
    /// [`Stats::oversized`](super::Stats::oversized), since the transport would drop it;
    /// an anti-entropy answer carries fewer messages to fit. Keep it below the transport's
    /// `max_frame_bytes` less 64 KiB when that is set lower.
    pub max_message_bytes: usize,
}

impl Default for BroadcastConfig {
    fn default() -> Self {
        let overlay = HyParViewConfig::default();
        let tree = PlumtreeConfig::default();
        BroadcastConfig {
            active_view_capacity: overlay.active_capacity,
            passive_view_capacity: overlay.passive_capacity,
            active_walk_length: overlay.active_walk_length,
            passive_walk_length: overlay.passive_walk_length,
            shuffle_interval: overlay.shuffle_interval,
            shuffle_active: overlay.shuffle_active,
            shuffle_passive: overlay.shuffle_passive,
            shuffle_walk_length: overlay.shuffle_walk_length,
            high_priority_below: overlay.high_priority_below,
            neighbour_timeout: overlay.neighbour_timeout,
            repair_interval: overlay.repair_interval,
            lazy_tick: tree.lazy_tick,
            graft_timeout: tree.graft_timeout,
            graft_jitter: tree.graft_jitter,
            second_graft_timeout: tree.second_graft_timeout,
            exchange_interval: tree.exchange_interval,
            max_lazy_queue: tree.max_lazy_queue,
            max_missing: tree.max_missing,
            max_roots: tree.max_roots,
            optimisation_threshold: tree.optimisation_threshold,
            catch_up_window: tree.catch_up_window,
            max_catch_up: tree.max_catch_up,
            max_remembered: tree.max_remembered,
            seed: 0,
            service: "broadcast".to_owned(),
            inbox_capacity: 4096,
            command_capacity: 1024,
            linger: Duration::from_secs(5),
            tick: Duration::from_millis(500),
            forget_lost_after: Duration::from_secs(300),
            max_lost: 64,
            max_retry_backoff: overlay.max_retry_backoff,
            max_unsent_per_peer: 256,
            max_connecting: 64,
            max_exchange_items: 256,
            max_message_bytes: 16 * 1024 * 1024 - 64 * 1024,
        }
    }
}

impl BroadcastConfig {
    /// The overlay core's configuration, seeded with `seed`.
    pub(super) fn hyparview(&self, seed: u64) -> HyParViewConfig {
        HyParViewConfig {
            active_capacity: self.active_view_capacity,
            passive_capacity: self.passive_view_capacity,
            active_walk_length: self.active_walk_length,
            passive_walk_length: self.passive_walk_length,
            shuffle_interval: self.shuffle_interval,
            shuffle_active: self.shuffle_active,
            shuffle_passive: self.shuffle_passive,
            shuffle_walk_length: self.shuffle_walk_length,
            high_priority_below: self.high_priority_below,
            neighbour_timeout: self.neighbour_timeout,
            repair_interval: self.repair_interval,
            max_lost: self.max_lost,
            max_retry_backoff: self.max_retry_backoff,
            seed,
        }
    }

    /// The overlay core's configuration in `mode`, seeded with `seed`.
    pub(super) fn overlay(&self, mode: ConnectionMode, seed: u64) -> OverlayConfig {
        OverlayConfig {
            mode,
            hyparview: self.hyparview(seed),
            tick: self.tick,
            linger: self.linger,
            forget_lost_after: self.forget_lost_after,
            max_lost: self.max_lost,
            max_connecting: self.max_connecting,
        }
    }

    /// A topic's tree core's configuration, seeded with `seed`.
    pub(super) fn plumtree(&self, seed: u64) -> PlumtreeConfig {
        PlumtreeConfig {
            lazy_tick: self.lazy_tick,
            graft_timeout: self.graft_timeout,
            graft_jitter: self.graft_jitter,
            second_graft_timeout: self.second_graft_timeout,
            exchange_interval: self.exchange_interval,
            max_lazy_queue: self.max_lazy_queue,
            max_missing: self.max_missing,
            max_roots: self.max_roots,
            optimisation_threshold: self.optimisation_threshold,
            catch_up_window: self.catch_up_window,
            max_catch_up: self.max_catch_up,
            max_remembered: self.max_remembered,
            seed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults are the cores' own: one place says what they are.
    #[test]
    fn defaults_are_the_cores_defaults() {
        let config = BroadcastConfig::default();
        assert_eq!(config.hyparview(0), HyParViewConfig::default());
        assert_eq!(config.plumtree(0), PlumtreeConfig::default());
        let overlay = OverlayConfig { mode: ConnectionMode::Managed, ..OverlayConfig::default() };
        assert_eq!(config.overlay(ConnectionMode::Managed, 0), overlay);
    }
}
