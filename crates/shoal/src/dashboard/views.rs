//! The functions that read the JSON API's answers ([`api`](super::api), one type per answer)
//! from the node's layers. Every list is capped ([`List`]), every piece of user text cut
//! ([`clip`]).

use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_process::Pid;
use shoal_transport::{Membership, PeerStats};
use tokio::time::Instant;

#[cfg(feature = "hub")]
use super::MAX_HUBS;
#[cfg(feature = "paxos")]
use super::api::PaxosFigures;
#[cfg(feature = "hub")]
use super::api::{ChildRow, HubRow, NodeShare};
use super::api::{
    ClusterRow, ClusterView, Counters, GroupsView, HubsView, Layers, List, NodeRow, NodeView,
    NodesView, PaxosSample, PaxosView, PeerRow, ProcessRow, ProcessesView, RegistryView, Summary,
    TransportSample, TransportView,
};
#[cfg(feature = "registry")]
use super::api::{GroupRow, LockRow, MemberRow, NameRow};
use super::watch::Watched;
use super::{CLUSTER_TIMEOUT, MAX_CLUSTER_NODES, MAX_LIST_ITEMS, MAX_TEXT_CHARS, MAX_TOP, RPC};
use crate::Node;

/// How long a listing that asks every member (registry, cluster) is shared by the requests
/// that come after it.
const LISTING_FRESH_FOR: Duration = Duration::from_secs(1);

/// How many processes each node's summary lists in `GET /api/cluster` when not asked.
pub(super) const SUMMARY_TOP: usize = 5;

/// The state a dashboard's requests share: the node, the access token, the recorder's history
/// and samples, and the listings taken at most once a second.
pub(super) struct Shared {
    pub(super) node: Node,
    pub(super) token: Option<String>,
    /// The recorder whose text `GET /metrics` serves, if the dashboard was given one.
    #[cfg(feature = "prometheus")]
    pub(super) prometheus: Option<crate::metrics::Prometheus>,
    watched: Mutex<Watched>,
    registry: tokio::sync::Mutex<Option<(Instant, RegistryView)>>,
    /// The latest cluster view, when it was taken, and the `top` it was asked with.
    cluster: tokio::sync::Mutex<Option<(Instant, usize, ClusterView)>>,
}

impl Shared {
    pub(super) fn new(node: Node, token: Option<String>) -> Self {
        Self {
            node,
            token,
            #[cfg(feature = "prometheus")]
            prometheus: None,
            watched: Mutex::new(Watched::default()),
            registry: tokio::sync::Mutex::default(),
            cluster: tokio::sync::Mutex::default(),
        }
    }

    pub(super) fn watched<R>(&self, read: impl FnOnce(&mut Watched) -> R) -> R {
        let mut watched = self.watched.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        read(&mut watched)
    }
}

/// `text` cut to [`MAX_TEXT_CHARS`] characters (an ellipsis marks a cut).
pub(super) fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_TEXT_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// Milliseconds since the Unix epoch, now, on `node`'s clock (as all its time: a simulated
/// node's drifts).
pub(super) fn now_ms(node: &Node) -> u64 {
    node.runtime().clock().wall_millis()
}

fn pid_text(pid: Pid) -> String {
    pid.to_string()
}

pub(super) fn node_view(node: &Node) -> NodeView {
    let transport = node.transport();
    let membership = match transport.membership() {
        Membership::FullMesh => "full_mesh",
        Membership::Static(_) => "static",
        Membership::Managed => "managed",
    };
    NodeView {
        name: clip(node.name()),
        incarnation: transport.incarnation(),
        started_at_ms: node.started_at_ms(),
        listen_addr: node.listen_addr().to_string(),
        ready: node.is_ready(),
        membership: membership.to_owned(),
        connected: List::capped(transport.nodes().iter().map(|name| clip(name)), MAX_LIST_ITEMS),
        members: transport.members().len(),
        processes: node.runtime().process_count(),
        layers: layers(node),
    }
}

fn layers(node: &Node) -> Layers {
    let _ = node;
    Layers {
        #[cfg(feature = "paxos")]
        paxos: node.paxos().is_ok(),
        #[cfg(not(feature = "paxos"))]
        paxos: false,
        #[cfg(feature = "broadcast")]
        broadcast: node.broadcast().is_ok(),
        #[cfg(not(feature = "broadcast"))]
        broadcast: false,
        #[cfg(feature = "registry")]
        registry: node.registry().is_ok(),
        #[cfg(not(feature = "registry"))]
        registry: false,
        #[cfg(feature = "registry")]
        groups: node.groups().is_ok(),
        #[cfg(not(feature = "registry"))]
        groups: false,
    }
}

/// The `top` processes of `node` with the longest mailboxes, longest first (`top` at most
/// [`MAX_TOP`]).
pub(super) fn processes_view(node: &Node, top: usize) -> ProcessesView {
    let runtime = node.runtime();
    let top = top.min(MAX_TOP);
    // A min-heap of the `top` longest seen so far: one pass, `top` entries held.
    let mut longest = BinaryHeap::new();
    for pid in runtime.processes() {
        let Some(len) = runtime.mailbox_len(pid) else { continue };
        longest.push(std::cmp::Reverse((len, pid)));
        if longest.len() > top {
            longest.pop();
        }
    }
    let mut rows: Vec<(usize, Pid)> = longest.into_iter().map(|entry| entry.0).collect();
    rows.sort_by(|a, b| b.cmp(a));
    let top = rows
        .into_iter()
        .map(|(mailbox_len, pid)| ProcessRow {
            pid: pid_text(pid),
            name: runtime.process_info(pid).and_then(|info| info.name).map(|name| clip(&name)),
            mailbox_len,
        })
        .collect();
    ProcessesView { node: clip(node.name()), count: runtime.process_count(), top }
}

/// What [`RPC`] is asked.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct SummaryRequest {
    pub(super) top: usize,
}

pub(super) fn summary(node: &Node, top: usize) -> Summary {
    Summary { node: node_view(node), processes: processes_view(node, top) }
}

/// Every node's summary with its `top` processes, this one's read here and the others' asked
/// in parallel, each within [`CLUSTER_TIMEOUT`]; taken at most once a second for each `top`
/// (one kept: the latest).
pub(super) async fn cluster_view(shared: &Shared, top: usize) -> ClusterView {
    let clock = shared.node.runtime().clock();
    let mut cached = shared.cluster.lock().await;
    if let Some((taken, asked, view)) = &*cached
        && *asked == top
        && clock.since(*taken) < LISTING_FRESH_FOR
    {
        return view.clone();
    }
    let view = ask_cluster(&shared.node, top).await;
    *cached = Some((clock.now(), top, view.clone()));
    view
}

async fn ask_cluster(node: &Node, top: usize) -> ClusterView {
    let mut names: Vec<String> =
        node.transport().members().into_iter().map(|spec| spec.name).collect();
    names.push(node.name().to_owned());
    names.sort();
    names.dedup();
    let total = names.len();
    names.truncate(MAX_CLUSTER_NODES);
    let mut asked = tokio::task::JoinSet::new();
    for (index, name) in names.iter().enumerate() {
        let transport = node.transport().clone();
        let name = name.clone();
        asked.spawn(async move {
            let request = SummaryRequest { top };
            let answer =
                transport.rpc::<_, Option<Summary>>(&name, RPC, &request, CLUSTER_TIMEOUT).await;
            (index, answer)
        });
    }
    let mut rows: Vec<ClusterRow> = names
        .iter()
        .map(|name| ClusterRow {
            name: clip(name),
            answering: false,
            error: Some("no answer".to_owned()),
            summary: None,
        })
        .collect();
    while let Some(joined) = asked.join_next().await {
        let Ok((index, answer)) = joined else { continue };
        let Some(row) = rows.get_mut(index) else { continue };
        match answer {
            Ok(Some(summary)) => {
                row.answering = true;
                row.error = None;
                row.summary = Some(summary);
            }
            Ok(None) => row.error = Some("it is stopping".to_owned()),
            Err(error) => row.error = Some(clip(&error.to_string())),
        }
    }
    // This node answers for itself even when nothing answers the RPC here.
    let me = node.name();
    if let Some(row) = rows.iter_mut().find(|row| row.name == me && !row.answering) {
        row.answering = true;
        row.error = None;
        row.summary = Some(summary(node, top));
    }
    let mut nodes = List::capped(rows, MAX_CLUSTER_NODES);
    nodes.set_total(total);
    ClusterView { node: clip(me), nodes }
}

impl Counters {
    fn of(stats: PeerStats) -> Self {
        Self {
            frames_sent: stats.frames_sent,
            bytes_sent: stats.bytes_sent,
            frames_received: stats.frames_received,
            bytes_received: stats.bytes_received,
            queued: stats.queued,
            reconnects: stats.reconnects,
            dropped_by_faults: stats.dropped_by_faults,
        }
    }

    fn add(&mut self, other: Counters) {
        self.frames_sent = self.frames_sent.saturating_add(other.frames_sent);
        self.bytes_sent = self.bytes_sent.saturating_add(other.bytes_sent);
        self.frames_received = self.frames_received.saturating_add(other.frames_received);
        self.bytes_received = self.bytes_received.saturating_add(other.bytes_received);
        self.queued = self.queued.saturating_add(other.queued);
        self.reconnects = self.reconnects.saturating_add(other.reconnects);
        self.dropped_by_faults = self.dropped_by_faults.saturating_add(other.dropped_by_faults);
    }
}

/// The counters summed over every member of `node`.
pub(super) fn transport_totals(node: &Node) -> TransportSample {
    let transport = node.transport();
    let mut totals = Counters::default();
    for spec in transport.members() {
        if let Some(stats) = transport.peer_stats(&spec.name) {
            totals.add(Counters::of(stats));
        }
    }
    TransportSample { at_ms: now_ms(node), totals }
}

pub(super) fn transport_view(shared: &Shared) -> TransportView {
    let transport = shared.node.transport();
    let mut members = transport.members();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let mut totals = Counters::default();
    let rows: Vec<PeerRow> = members
        .iter()
        .filter_map(|spec| {
            let counters = Counters::of(transport.peer_stats(&spec.name)?);
            totals.add(counters);
            Some(PeerRow {
                node: clip(&spec.name),
                up: transport.is_connected(&spec.name),
                protocol_version: transport.peer_version(&spec.name),
                counters,
            })
        })
        .collect();
    TransportView {
        node: clip(shared.node.name()),
        peers: List::capped(rows, MAX_LIST_ITEMS),
        totals,
        samples: shared.watched(|watched| watched.transport_samples()),
    }
}

/// The latency histogram of the previous sample, from which the next one's interval is taken.
#[derive(Debug, Default)]
pub(super) struct LastLatencies {
    #[cfg(feature = "paxos")]
    histogram: Option<shoal_paxos::LatencyHistogram>,
}

/// The upper bound, in microseconds, of the bucket that holds the `quantile` of `buckets`
/// (`None`: empty, or the quantile lies above the largest bound, where the bucket has none).
#[cfg(feature = "paxos")]
fn quantile_micros(buckets: &[u64], quantile: f64) -> Option<u64> {
    let count: u64 = buckets.iter().sum();
    if count == 0 {
        return None;
    }
    let rank = ((count as f64) * quantile).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (index, in_bucket) in buckets.iter().enumerate() {
        seen += in_bucket;
        if seen >= rank {
            return shoal_paxos::LATENCY_BOUNDS_MICROS.get(index).copied();
        }
    }
    None
}

#[cfg(feature = "paxos")]
fn paxos_figures(stats: &shoal_paxos::PaxosStats) -> PaxosFigures {
    PaxosFigures {
        rounds: stats.prepare_rounds + stats.accept_rounds,
        conflicts: stats.conflicts,
        round_timeouts: stats.round_timeouts,
        fast_decisions: stats.fast_decisions,
        slow_decisions: stats.slow_decisions,
        operations: stats.latency.count(),
        latency_p50_us: quantile_micros(&stats.latency.buckets, 0.5),
        latency_p99_us: quantile_micros(&stats.latency.buckets, 0.99),
    }
}

/// How long reading the acceptor set may take.
#[cfg(feature = "paxos")]
const PAXOS_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// The acceptor set and its version, or why it could not be read (`None`: Paxos does not run).
#[cfg(feature = "paxos")]
async fn acceptors(node: &Node) -> Option<Result<(u64, Vec<String>), String>> {
    let paxos = node.paxos().ok()?;
    let read = node.runtime().clock().timeout(PAXOS_READ_TIMEOUT, paxos.acceptors()).await;
    Some(match read {
        Ok(Ok(set)) => Ok(set),
        Ok(Err(error)) => Err(clip(&error.to_string())),
        Err(_) => Err(format!("no answer within {PAXOS_READ_TIMEOUT:?}")),
    })
}

/// Paxos now, for the charts (`None`: Paxos does not run).
pub(super) async fn paxos_sample(node: &Node, last: &mut LastLatencies) -> Option<PaxosSample> {
    #[cfg(feature = "paxos")]
    {
        let paxos = node.paxos().ok()?;
        let has_quorum = paxos.has_quorum();
        let stats = paxos.stats();
        let count = match acceptors(node).await? {
            Ok((_, names)) => names.len(),
            Err(_) => 0,
        };
        let mut since = stats.latency.buckets;
        if let Some(before) = last.histogram.replace(stats.latency) {
            for (now, then) in since.iter_mut().zip(before.buckets) {
                *now = now.saturating_sub(then);
            }
        }
        Some(PaxosSample {
            at_ms: now_ms(node),
            has_quorum,
            acceptors: count,
            rounds: stats.prepare_rounds + stats.accept_rounds,
            conflicts: stats.conflicts,
            latency_p99_us: quantile_micros(&since, 0.99),
        })
    }
    #[cfg(not(feature = "paxos"))]
    {
        let _ = (node, last);
        None
    }
}

pub(super) async fn paxos_view(shared: &Shared) -> PaxosView {
    let samples = shared.watched(|watched| watched.paxos_samples());
    #[cfg(feature = "paxos")]
    if let Ok(paxos) = shared.node.paxos() {
        let mut view = PaxosView {
            running: true,
            has_quorum: paxos.has_quorum(),
            voting: paxos.is_voting(),
            figures: Some(paxos_figures(&paxos.stats())),
            samples,
            ..PaxosView::default()
        };
        match acceptors(&shared.node).await {
            Some(Ok((version, names))) => {
                view.version = Some(version);
                view.acceptors = names.iter().take(MAX_LIST_ITEMS).map(|name| clip(name)).collect();
            }
            Some(Err(error)) => view.error = Some(error),
            None => {}
        }
        return view;
    }
    PaxosView { samples, ..PaxosView::default() }
}

/// How long the registry's listing (which asks every member) may take.
#[cfg(feature = "registry")]
const REGISTRY_LIST_TIMEOUT: Duration = Duration::from_secs(3);

/// Every name and lock of the cluster; taken at most once a second.
pub(super) async fn registry_view(shared: &Shared) -> RegistryView {
    let clock = shared.node.runtime().clock();
    let mut cached = shared.registry.lock().await;
    if let Some((taken, view)) = &*cached
        && clock.since(*taken) < LISTING_FRESH_FOR
    {
        return view.clone();
    }
    let view = list_registry(&shared.node).await;
    *cached = Some((clock.now(), view.clone()));
    view
}

#[cfg(feature = "registry")]
async fn list_registry(node: &Node) -> RegistryView {
    use shoal_registry::core::NameRestart;

    let Ok(registry) = node.registry() else { return RegistryView::default() };
    let listed = node.runtime().clock().timeout(REGISTRY_LIST_TIMEOUT, registry.list()).await;
    let Ok(listing) = listed else {
        return RegistryView {
            running: true,
            error: Some(format!("the listing did not finish within {REGISTRY_LIST_TIMEOUT:?}")),
            ..RegistryView::default()
        };
    };
    let names = listing.names.into_iter().map(|name| NameRow {
        name: clip(&name.name),
        host: clip(&name.host),
        pid: name.pid.map(pid_text),
        token: name.token,
        restart: match name.restart {
            NameRestart::Temporary => "temporary",
            NameRestart::Permanent => "permanent",
        }
        .to_owned(),
    });
    let locks = listing.locks.into_iter().map(|lock| LockRow {
        key: clip(&lock.key),
        holder: pid_text(lock.holder),
        host: clip(&lock.host),
        token: lock.token,
        count: lock.count,
        waiters: lock.waiters,
    });
    RegistryView {
        running: true,
        error: None,
        names: List::capped(names, MAX_LIST_ITEMS),
        locks: List::capped(locks, MAX_LIST_ITEMS),
        unreachable: List::capped(listing.unreachable.iter().map(|n| clip(n)), MAX_LIST_ITEMS),
    }
}

#[cfg(not(feature = "registry"))]
async fn list_registry(_: &Node) -> RegistryView {
    RegistryView::default()
}

#[cfg(feature = "registry")]
pub(super) fn groups_view(node: &Node) -> GroupsView {
    use super::MAX_GROUP_MEMBERS;

    let Ok(groups) = node.groups() else { return GroupsView::default() };
    let transport = node.transport();
    let rows = groups.all().into_iter().map(|(name, pids)| {
        let members = pids.iter().map(|&pid| MemberRow {
            pid: pid_text(pid),
            node: transport.node_name(pid).map(|node| clip(&node)),
        });
        let nodes = groups.member_nodes(&name);
        GroupRow {
            nodes: List::capped(nodes.iter().map(|node| clip(node)), MAX_LIST_ITEMS),
            name: clip(&name),
            members: List::capped(members, MAX_GROUP_MEMBERS),
        }
    });
    GroupsView { running: true, groups: List::capped(rows, MAX_LIST_ITEMS) }
}

#[cfg(not(feature = "registry"))]
pub(super) fn groups_view(_: &Node) -> GroupsView {
    GroupsView::default()
}

/// Every hub and distributed supervisor the node runs, at most [`MAX_HUBS`] of each.
#[cfg(feature = "hub")]
pub(super) fn hubs_view(node: &Node) -> HubsView {
    let ids = node.hub_ids();
    let hubs = ids.iter().take(MAX_HUBS).map(|id| match node.hub(id) {
        Ok(hub) => hub_row(&hub),
        // Stopped since it was listed.
        Err(_) => HubRow { id: clip(id), ..HubRow::default() },
    });
    let (supervisors, total_supervisors) = supervisor_rows(node);
    HubsView { hubs: hubs.collect(), total_hubs: ids.len(), supervisors, total_supervisors }
}

/// The hub rows of the distributed supervisors the node runs (at most [`MAX_HUBS`]), and how
/// many it runs.
#[cfg(all(feature = "hub", feature = "supervisor"))]
fn supervisor_rows(node: &Node) -> (Vec<HubRow>, usize) {
    let names = node.supervisor_names();
    let rows = names.iter().take(MAX_HUBS).map(|name| {
        let mut row = match node.supervisor(name) {
            Ok(supervisor) => hub_row(supervisor.hub()),
            // Stopped since it was listed.
            Err(_) => HubRow::default(),
        };
        row.supervisor = Some(clip(name));
        row
    });
    (rows.collect(), names.len())
}

#[cfg(all(feature = "hub", not(feature = "supervisor")))]
fn supervisor_rows(_: &Node) -> (Vec<HubRow>, usize) {
    (Vec::new(), 0)
}

#[cfg(not(feature = "hub"))]
pub(super) fn hubs_view(_: &Node) -> HubsView {
    HubsView::default()
}

/// What `hub` holds: its ring, and its children per node.
#[cfg(feature = "hub")]
fn hub_row(hub: &shoal_hub::Hub) -> HubRow {
    use std::collections::BTreeSet;

    use shoal_hub::ChildStatus;

    use super::MAX_HUB_CHILDREN;

    let ring = hub.nodes();
    let mut shares: BTreeMap<String, NodeShare> = ring
        .iter()
        .map(|node| (node.clone(), NodeShare { node: clip(node), ..NodeShare::default() }))
        .collect();
    let rows = hub.which_children_global();
    let mut children = BTreeSet::new();
    let mut unplaced = 0;
    for row in &rows {
        children.insert(row.child.as_str());
        match &row.node {
            Some(node) => {
                let share = shares
                    .entry(node.clone())
                    .or_insert_with(|| NodeShare { node: clip(node), ..NodeShare::default() });
                match row.status {
                    ChildStatus::Running(_) => share.running += 1,
                    _ => share.other += 1,
                }
            }
            None => unplaced += 1,
        }
    }
    let sample = rows.iter().map(|row| ChildRow {
        child: clip(&row.child),
        node: row.node.as_deref().map(clip),
        status: match row.status {
            ChildStatus::Running(_) => "running",
            ChildStatus::Restarting => "restarting",
            ChildStatus::Moving { .. } => "moving",
            ChildStatus::Unknown => "unknown",
            ChildStatus::Suspended => "suspended",
        }
        .to_owned(),
    });
    HubRow {
        supervisor: None,
        id: clip(hub.id()),
        running: true,
        nodes: List::capped(ring.iter().map(|node| clip(node)), MAX_LIST_ITEMS),
        has_quorum: hub.has_quorum(),
        partitioned: hub.is_partitioned(),
        children: children.len(),
        per_node: List::capped(shares.into_values(), MAX_LIST_ITEMS),
        unplaced,
        sample: List::capped(sample, MAX_HUB_CHILDREN),
    }
}

pub(super) fn nodes_view(shared: &Shared) -> NodesView {
    let node = &shared.node;
    let transport = node.transport();
    let mut rows: BTreeMap<String, NodeRow> = BTreeMap::new();
    rows.insert(
        node.name().to_owned(),
        NodeRow {
            name: clip(node.name()),
            this_node: true,
            up: true,
            incarnation: Some(transport.incarnation()),
            listen_addr: Some(node.listen_addr().to_string()),
            history: List::default(),
        },
    );
    for spec in transport.members() {
        rows.insert(
            spec.name.clone(),
            NodeRow {
                up: transport.is_connected(&spec.name),
                name: clip(&spec.name),
                this_node: false,
                incarnation: Some(spec.incarnation),
                listen_addr: spec.listen_addrs.first().map(ToString::to_string),
                history: List::default(),
            },
        );
    }
    let events_lagged = shared.watched(|watched| {
        watched.fill_histories(&mut rows);
        watched.lagged()
    });
    NodesView {
        node: clip(node.name()),
        events_lagged,
        nodes: List::capped(rows.into_values(), MAX_LIST_ITEMS),
    }
}

#[cfg(all(test, feature = "paxos"))]
mod tests {
    use super::quantile_micros;

    #[test]
    fn quantiles_are_the_upper_bounds_of_their_buckets() {
        let mut buckets = [0u64; shoal_paxos::LATENCY_BOUNDS_MICROS.len() + 1];
        assert_eq!(quantile_micros(&buckets, 0.5), None, "no change, no quantile");
        buckets[0] = 98; // at most 500 µs
        buckets[3] = 1; // at most 5 ms
        buckets[6] = 1; // at most 50 ms
        assert_eq!(quantile_micros(&buckets, 0.5), Some(500));
        assert_eq!(quantile_micros(&buckets, 0.99), Some(5_000));
        assert_eq!(quantile_micros(&buckets, 1.0), Some(50_000));
        let last = buckets.len() - 1;
        buckets[last] = 10_000; // above the largest bound
        assert_eq!(quantile_micros(&buckets, 0.99), None, "beyond the largest bound");
    }
}
