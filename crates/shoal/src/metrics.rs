//! A node's figures through the `metrics` facade (feature `metrics`), and a
//! Prometheus recorder to render them (feature `prometheus`).
//!
//! Every layer counts in plain atomics of its own (sharded where a per-message path touches
//! them) and shows them as a snapshot: [`Runtime::stats`](crate::process::Runtime::stats),
//! the transport's [`peer_stats`](crate::transport::Node::peer_stats), `Paxos::stats`,
//! `Broadcast::stats`, `Registry::stats`, `Groups::stats`, `Hub::stats`. [`Metrics::start`]
//! spawns **one sampler task** per node that reads those snapshots on a tick (every second by
//! default) and publishes them through the facade: counters with `absolute`, gauges with
//! `set`, the Paxos latency histogram as the counts its buckets gained since the last tick.
//! Nothing on a per-message path calls the facade, so a build with the feature costs the
//! messages nothing, and one without it has no `metrics` crate at all.
//!
//! The facade publishes to whichever recorder the program installed (`metrics` does nothing
//! without one): an exporter of the user's choice, or, with the feature `prometheus`,
//! `prometheus_recorder`, whose `Prometheus::render` gives the text a `/metrics` endpoint
//! serves (this module opens no listener).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use shoal::metrics::{Metrics, MetricsConfig};
//!
//! let node = shoal::Node::start("n1").await?;
//! # #[cfg(feature = "prometheus")]
//! let prometheus = shoal::metrics::prometheus_recorder()?;
//! let _metrics = Metrics::start(&node, MetricsConfig::default());
//! // ... later, in a `/metrics` handler:
//! # #[cfg(feature = "prometheus")]
//! let text: String = prometheus.render();
//! # Ok(()) }
//! ```
//!
//! # Names
//!
//! Prometheus conventions: the `shoal_` prefix, base units last (`_seconds`, `_bytes`),
//! `_total` for counters. Every series has the label `node` (this node's name); per-peer ones
//! `peer` (the peer node's name); a hub's `hub` (its id, `dsup/NAME` for a distributed
//! supervisor); a few `reason`, from a fixed set. No label takes its value from user data
//! (names, keys, child ids). A layer that does not run on the node (or whose cargo feature is
//! off) publishes nothing.
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `shoal_processes` | gauge | node | processes alive |
//! | `shoal_processes_spawned_total` | counter | node | processes spawned |
//! | `shoal_process_exits_total` | counter | node, reason | exits, by `normal`, `shutdown`, `killed`, `panic`, `error` |
//! | `shoal_process_restarts_total` | counter | node | children restarted by supervisors |
//! | `shoal_mailboxes_over_threshold` | gauge | node | mailboxes over the runtime's threshold |
//! | `shoal_peer_sent_frames_total` | counter | node, peer | frames written to the peer |
//! | `shoal_peer_sent_bytes_total` | counter | node, peer | bytes written to the peer |
//! | `shoal_peer_received_frames_total` | counter | node, peer | frames read from the peer |
//! | `shoal_peer_received_bytes_total` | counter | node, peer | bytes read from the peer |
//! | `shoal_peer_queued_messages` | gauge | node, peer | casts and calls queued for the peer |
//! | `shoal_peer_reconnects_total` | counter | node, peer | connections set up again after a loss |
//! | `shoal_peer_fault_dropped_frames_total` | counter | node, peer | frames dropped by fault injection |
//! | `shoal_peer_rtt_seconds` | gauge | node, peer | smoothed heartbeat round trip (once measured) |
//! | `shoal_paxos_prepare_rounds_total` | counter | node | phase-1 attempts |
//! | `shoal_paxos_accept_rounds_total` | counter | node | phase-2 attempts |
//! | `shoal_paxos_conflicts_total` | counter | node | rounds lost to a higher ballot |
//! | `shoal_paxos_round_timeouts_total` | counter | node | rounds that timed out |
//! | `shoal_paxos_fast_decisions_total` | counter | node | changes decided without a phase 1 |
//! | `shoal_paxos_slow_decisions_total` | counter | node | changes decided after a phase 1 |
//! | `shoal_paxos_fast_path_ratio` | gauge | node | fast decisions over all decisions (0 before any) |
//! | `shoal_paxos_operation_duration_seconds` | histogram | node | callers' waits, propose to completion |
//! | `shoal_broadcast_eager_pushes_total` | counter | node | payloads pushed (GOSSIP) |
//! | `shoal_broadcast_lazy_pushes_total` | counter | node | IHAVE messages |
//! | `shoal_broadcast_grafts_total` | counter | node | GRAFTs sent |
//! | `shoal_broadcast_prunes_total` | counter | node | PRUNEs sent |
//! | `shoal_broadcast_duplicates_total` | counter | node | redundant payloads received |
//! | `shoal_broadcast_digests_sent_total` | counter | node | anti-entropy digests sent |
//! | `shoal_broadcast_exchange_deliveries_total` | counter | node | messages delivered by anti-entropy |
//! | `shoal_broadcast_dropped_messages_total` | counter | node, reason | messages not sent, by `unsent`, `unroutable`, `announcement`, `oversized`, `send_failure` |
//! | `shoal_registry_names` | gauge | node | names hosted on the node |
//! | `shoal_registry_cached_names` | gauge | node | names whose process the node has cached |
//! | `shoal_registry_cache_hits_total` | counter | node | lookups answered from the cache |
//! | `shoal_registry_cache_misses_total` | counter | node | lookups that read the name's register |
//! | `shoal_registry_lock_acquisitions_total` | counter | node | locks acquired |
//! | `shoal_registry_lock_waits_total` | counter | node | acquisitions that queued |
//! | `shoal_registry_lock_wait_seconds` | gauge | node | time those waited in all (rises only; a gauge because the facade's counters are integers) |
//! | `shoal_registry_locks_held` | gauge | node | locks held by the node's processes |
//! | `shoal_groups` | gauge | node | groups with members |
//! | `shoal_group_members` | gauge | node | memberships over every group |
//! | `shoal_group_local_members` | gauge | node | memberships of the node's processes |
//! | `shoal_hub_children` | gauge | node, hub | the hub's children on the node |
//! | `shoal_hub_moves_total` | counter | node, hub | children the node moved away |
//! | `shoal_hub_handovers_total` | counter | node, hub | states handed over in hot moves |
//! | `shoal_hub_failed_handovers_total` | counter | node, hub | hot moves whose state was lost |
//!
//! The histogram's buckets are Paxos's own (`shoal::paxos::LATENCY_BOUNDS_MICROS`,
//! from 0.5 ms to 2.5 s): each tick records every bucket's new operations at the bucket's upper
//! bound (above the largest, at twice it), so a recorder with the same buckets, as
//! `prometheus_recorder` sets up, shows exact counts, and the sum is an upper bound.

use std::collections::BTreeMap;
use std::time::Duration;

use ::metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Node;

#[cfg(feature = "prometheus")]
mod prometheus;

#[cfg(feature = "prometheus")]
pub use self::prometheus::{Prometheus, PrometheusError, prometheus_recorder};

/// The name of the Paxos latency histogram (its buckets are set by name).
pub const PAXOS_LATENCY: &str = "shoal_paxos_operation_duration_seconds";

/// How a node's metrics are sampled.
#[derive(Clone, Debug)]
pub struct MetricsConfig {
    /// How often the layers' figures are read and published.
    pub every: Duration,
    /// The hubs to publish, by id (those running on the node when a tick comes; one that
    /// does not run is skipped).
    pub hubs: Vec<String>,
    /// The distributed supervisors to publish, by name (through their hubs, `dsup/NAME`).
    pub supervisors: Vec<String>,
}

impl Default for MetricsConfig {
    /// Every second; no hubs or supervisors.
    fn default() -> Self {
        MetricsConfig { every: Duration::from_secs(1), hubs: Vec::new(), supervisors: Vec::new() }
    }
}

/// The sampler of one node's figures (see the [module docs](self)): it runs until
/// [`Metrics::stop`], until this handle is dropped, or until the node's tokio runtime ends.
#[derive(Debug)]
pub struct Metrics {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Metrics {
    /// Describes every metric to the installed recorder (help and unit) and spawns the sampler
    /// task on the current tokio runtime; its first sample is taken at once.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (as `tokio::spawn`).
    pub fn start(node: &Node, config: MetricsConfig) -> Metrics {
        describe();
        let (stop, mut stopped) = watch::channel(false);
        let mut sampler = Sampler::new(node.clone(), config);
        let task = tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(sampler.config.every.max(Duration::from_millis(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    _ = stopped.changed() => return,
                    _ = tick.tick() => sampler.sample().await,
                }
            }
        });
        Metrics { stop, task: Some(task) }
    }

    /// Stops the sampler and waits for it to end (what it published stays with the recorder).
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Metrics {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// The sampler's state: the node, and what it needs to publish differences (the histogram's
/// buckets at the last tick).
struct Sampler {
    node: Node,
    config: MetricsConfig,
    /// The node's name, the `node` label of every series.
    name: String,
    #[cfg(feature = "paxos")]
    latency_seen: Option<(u64, crate::paxos::LatencyHistogram)>,
}

impl Sampler {
    fn new(node: Node, config: MetricsConfig) -> Self {
        let name = node.name().to_owned();
        Sampler {
            node,
            config,
            name,
            #[cfg(feature = "paxos")]
            latency_seen: None,
        }
    }

    async fn sample(&mut self) {
        self.runtime();
        self.peers();
        #[cfg(feature = "paxos")]
        self.paxos();
        #[cfg(feature = "broadcast")]
        self.broadcast().await;
        #[cfg(feature = "registry")]
        self.registry();
        #[cfg(feature = "hub")]
        self.hubs();
    }

    fn runtime(&self) {
        let stats = self.node.runtime().stats();
        let node = self.name.clone();
        gauge!("shoal_processes", "node" => node.clone()).set(stats.processes as f64);
        counter!("shoal_processes_spawned_total", "node" => node.clone())
            .absolute(stats.spawned_total);
        let exits = stats.exits;
        for (reason, count) in [
            ("normal", exits.normal),
            ("shutdown", exits.shutdown),
            ("killed", exits.killed),
            ("panic", exits.panic),
            ("error", exits.error),
        ] {
            counter!("shoal_process_exits_total", "node" => node.clone(), "reason" => reason)
                .absolute(count);
        }
        counter!("shoal_process_restarts_total", "node" => node.clone())
            .absolute(stats.restarts_total);
        gauge!("shoal_mailboxes_over_threshold", "node" => node)
            .set(stats.mailboxes_over_threshold as f64);
    }

    fn peers(&self) {
        let transport = self.node.transport();
        // By name, so that a peer's series are published in the same order every tick.
        let peers: BTreeMap<String, _> = transport
            .members()
            .into_iter()
            .filter_map(|spec| Some((spec.name.clone(), transport.peer_stats(&spec.name)?)))
            .collect();
        for (peer, stats) in peers {
            let labels = [("node", self.name.clone()), ("peer", peer)];
            counter!("shoal_peer_sent_frames_total", &labels).absolute(stats.frames_sent);
            counter!("shoal_peer_sent_bytes_total", &labels).absolute(stats.bytes_sent);
            counter!("shoal_peer_received_frames_total", &labels).absolute(stats.frames_received);
            counter!("shoal_peer_received_bytes_total", &labels).absolute(stats.bytes_received);
            gauge!("shoal_peer_queued_messages", &labels).set(stats.queued as f64);
            counter!("shoal_peer_reconnects_total", &labels).absolute(stats.reconnects);
            counter!("shoal_peer_fault_dropped_frames_total", &labels)
                .absolute(stats.dropped_by_faults);
            if let Some(rtt) = stats.rtt {
                gauge!("shoal_peer_rtt_seconds", &labels).set(rtt.as_secs_f64());
            }
        }
    }

    #[cfg(feature = "paxos")]
    fn paxos(&mut self) {
        let Ok(paxos) = self.node.paxos() else { return };
        let stats = paxos.stats();
        let node = self.name.clone();
        for (name, value) in [
            ("shoal_paxos_prepare_rounds_total", stats.prepare_rounds),
            ("shoal_paxos_accept_rounds_total", stats.accept_rounds),
            ("shoal_paxos_conflicts_total", stats.conflicts),
            ("shoal_paxos_round_timeouts_total", stats.round_timeouts),
            ("shoal_paxos_fast_decisions_total", stats.fast_decisions),
            ("shoal_paxos_slow_decisions_total", stats.slow_decisions),
        ] {
            counter!(name, "node" => node.clone()).absolute(value);
        }
        let decisions = stats.fast_decisions + stats.slow_decisions;
        let ratio =
            if decisions == 0 { 0.0 } else { stats.fast_decisions as f64 / decisions as f64 };
        gauge!("shoal_paxos_fast_path_ratio", "node" => node.clone()).set(ratio);
        // Only what the buckets gained since the last tick; a new run of the service (its
        // counters started again) is taken whole.
        let run = paxos.proposer_run();
        let seen = match self.latency_seen.take() {
            Some((seen_run, seen)) if seen_run == run => seen,
            _ => crate::paxos::LatencyHistogram::default(),
        };
        let histogram = ::metrics::histogram!(PAXOS_LATENCY, "node" => node);
        for (index, (now, before)) in stats.latency.buckets.iter().zip(seen.buckets).enumerate() {
            let gained = now.saturating_sub(before);
            if gained > 0 {
                histogram.record_many(bucket_value(index), gained as usize);
            }
        }
        self.latency_seen = Some((run, stats.latency));
    }

    #[cfg(feature = "broadcast")]
    async fn broadcast(&self) {
        let Ok(broadcast) = self.node.broadcast() else { return };
        // Asked of the driver task: a busy or stuck one costs this tick its broadcast figures,
        // not the sampler its ticks.
        let patience = self.config.every.max(Duration::from_secs(1));
        let asked = tokio::time::timeout(patience, broadcast.stats()).await;
        let Ok(Some(stats)) = asked else { return };
        let node = self.name.clone();
        for (name, value) in [
            ("shoal_broadcast_eager_pushes_total", stats.eager_pushes),
            ("shoal_broadcast_lazy_pushes_total", stats.lazy_pushes),
            ("shoal_broadcast_grafts_total", stats.grafts),
            ("shoal_broadcast_prunes_total", stats.prunes),
            ("shoal_broadcast_duplicates_total", stats.duplicates),
            ("shoal_broadcast_digests_sent_total", stats.digests_sent),
            ("shoal_broadcast_exchange_deliveries_total", stats.delivered_by_exchange),
        ] {
            counter!(name, "node" => node.clone()).absolute(value);
        }
        for (reason, value) in [
            ("unsent", stats.dropped_unsent),
            ("unroutable", stats.dropped_unroutable),
            ("announcement", stats.dropped_announcements),
            ("oversized", stats.oversized),
            ("send_failure", stats.send_failures),
        ] {
            let labels = [("node", node.clone()), ("reason", reason.to_owned())];
            counter!("shoal_broadcast_dropped_messages_total", &labels).absolute(value);
        }
    }

    #[cfg(feature = "registry")]
    fn registry(&self) {
        let node = self.name.clone();
        if let Ok(registry) = self.node.registry() {
            let stats = registry.stats();
            gauge!("shoal_registry_names", "node" => node.clone()).set(stats.names as f64);
            gauge!("shoal_registry_cached_names", "node" => node.clone())
                .set(stats.cached_names as f64);
            for (name, value) in [
                ("shoal_registry_cache_hits_total", stats.lookup_hits),
                ("shoal_registry_cache_misses_total", stats.lookup_misses),
                ("shoal_registry_lock_acquisitions_total", stats.lock_acquisitions),
                ("shoal_registry_lock_waits_total", stats.lock_waits),
            ] {
                counter!(name, "node" => node.clone()).absolute(value);
            }
            gauge!("shoal_registry_lock_wait_seconds", "node" => node.clone())
                .set(stats.lock_wait.as_secs_f64());
            gauge!("shoal_registry_locks_held", "node" => node.clone())
                .set(stats.locks_held as f64);
        }
        if let Ok(groups) = self.node.groups() {
            let stats = groups.stats();
            gauge!("shoal_groups", "node" => node.clone()).set(stats.groups as f64);
            gauge!("shoal_group_members", "node" => node.clone()).set(stats.members as f64);
            gauge!("shoal_group_local_members", "node" => node).set(stats.local_members as f64);
        }
    }

    #[cfg(feature = "hub")]
    fn hubs(&self) {
        let hubs = self.config.hubs.iter().filter_map(|id| self.node.hub(id).ok());
        #[cfg(feature = "supervisor")]
        let hubs = hubs.chain(
            self.config
                .supervisors
                .iter()
                .filter_map(|name| Some(self.node.supervisor(name).ok()?.hub().clone())),
        );
        for hub in hubs {
            let stats = hub.stats();
            let labels = [("node", self.name.clone()), ("hub", hub.id().to_owned())];
            gauge!("shoal_hub_children", &labels).set(stats.children as f64);
            counter!("shoal_hub_moves_total", &labels).absolute(stats.moves);
            counter!("shoal_hub_handovers_total", &labels).absolute(stats.handovers_done);
            counter!("shoal_hub_failed_handovers_total", &labels).absolute(stats.handovers_failed);
        }
    }
}

/// The value the histogram records for bucket `index`'s operations: its upper bound, in
/// seconds (twice the largest bound for the last, unbounded bucket).
#[cfg(feature = "paxos")]
fn bucket_value(index: usize) -> f64 {
    let bounds = crate::paxos::LATENCY_BOUNDS_MICROS;
    let micros = bounds.get(index).copied().unwrap_or(bounds[bounds.len() - 1] * 2);
    Duration::from_micros(micros).as_secs_f64()
}

/// The Paxos histogram's bucket bounds, in seconds, for a recorder that takes buckets.
#[cfg(feature = "paxos")]
pub fn paxos_latency_buckets() -> Vec<f64> {
    let bounds = crate::paxos::LATENCY_BOUNDS_MICROS;
    bounds.iter().map(|micros| Duration::from_micros(*micros).as_secs_f64()).collect()
}

/// Every metric's help and unit, told to the installed recorder once.
fn describe() {
    let counters: &[(&str, Unit, &str)] = &[
        ("shoal_processes_spawned_total", Unit::Count, "Processes spawned."),
        ("shoal_process_exits_total", Unit::Count, "Processes that exited, by reason class."),
        ("shoal_process_restarts_total", Unit::Count, "Children restarted by supervisors."),
        ("shoal_peer_sent_frames_total", Unit::Count, "Frames written to the peer."),
        ("shoal_peer_sent_bytes_total", Unit::Bytes, "Bytes written to the peer."),
        ("shoal_peer_received_frames_total", Unit::Count, "Frames read from the peer."),
        ("shoal_peer_received_bytes_total", Unit::Bytes, "Bytes read from the peer."),
        ("shoal_peer_reconnects_total", Unit::Count, "Connections to the peer set up again."),
        ("shoal_peer_fault_dropped_frames_total", Unit::Count, "Frames dropped by faults."),
        ("shoal_paxos_prepare_rounds_total", Unit::Count, "Paxos phase-1 attempts."),
        ("shoal_paxos_accept_rounds_total", Unit::Count, "Paxos phase-2 attempts."),
        ("shoal_paxos_conflicts_total", Unit::Count, "Paxos rounds lost to a higher ballot."),
        ("shoal_paxos_round_timeouts_total", Unit::Count, "Paxos rounds that timed out."),
        ("shoal_paxos_fast_decisions_total", Unit::Count, "Changes decided without phase 1."),
        ("shoal_paxos_slow_decisions_total", Unit::Count, "Changes decided after phase 1."),
        ("shoal_broadcast_eager_pushes_total", Unit::Count, "Payloads pushed eagerly."),
        ("shoal_broadcast_lazy_pushes_total", Unit::Count, "IHAVE messages sent."),
        ("shoal_broadcast_grafts_total", Unit::Count, "GRAFT messages sent."),
        ("shoal_broadcast_prunes_total", Unit::Count, "PRUNE messages sent."),
        ("shoal_broadcast_duplicates_total", Unit::Count, "Redundant payloads received."),
        ("shoal_broadcast_digests_sent_total", Unit::Count, "Anti-entropy digests sent."),
        ("shoal_broadcast_exchange_deliveries_total", Unit::Count, "Delivered by anti-entropy."),
        ("shoal_broadcast_dropped_messages_total", Unit::Count, "Messages not sent, by reason."),
        ("shoal_registry_cache_hits_total", Unit::Count, "Name lookups from the cache."),
        ("shoal_registry_cache_misses_total", Unit::Count, "Name lookups that read consensus."),
        ("shoal_registry_lock_acquisitions_total", Unit::Count, "Locks acquired."),
        ("shoal_registry_lock_waits_total", Unit::Count, "Lock acquisitions that queued."),
        ("shoal_hub_moves_total", Unit::Count, "Hub children moved away from the node."),
        ("shoal_hub_handovers_total", Unit::Count, "Hub children's states handed over."),
        ("shoal_hub_failed_handovers_total", Unit::Count, "Hub hand-overs that lost the state."),
    ];
    for (name, unit, help) in counters {
        describe_counter!(*name, *unit, *help);
    }
    let gauges: &[(&str, Unit, &str)] = &[
        ("shoal_processes", Unit::Count, "Processes alive."),
        ("shoal_mailboxes_over_threshold", Unit::Count, "Mailboxes over the threshold."),
        ("shoal_peer_queued_messages", Unit::Count, "Casts and calls queued for the peer."),
        ("shoal_peer_rtt_seconds", Unit::Seconds, "Smoothed heartbeat round trip to the peer."),
        ("shoal_registry_names", Unit::Count, "Registry names hosted on the node."),
        ("shoal_registry_cached_names", Unit::Count, "Registry names cached on the node."),
        ("shoal_registry_lock_wait_seconds", Unit::Seconds, "Time lock acquisitions waited."),
        ("shoal_registry_locks_held", Unit::Count, "Locks held by the node's processes."),
        ("shoal_groups", Unit::Count, "Process groups with members."),
        ("shoal_group_members", Unit::Count, "Group memberships."),
        ("shoal_group_local_members", Unit::Count, "Group memberships of local processes."),
        ("shoal_hub_children", Unit::Count, "The hub's children on the node."),
    ];
    for (name, unit, help) in gauges {
        describe_gauge!(*name, *unit, *help);
    }
    describe_gauge!("shoal_paxos_fast_path_ratio", "Share of decisions without phase 1.");
    describe_histogram!(PAXOS_LATENCY, Unit::Seconds, "Paxos operations' latency.");
}
