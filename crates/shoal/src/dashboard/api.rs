//! The JSON API's answers as types: what the dashboard writes, and what a client in Rust
//! reads back with `serde_json` (the `shoal` inspector does).
//!
//! One type per answer, named after its path ([`NodeView`] for `GET /api/node`, ...); the
//! [module docs](super) say what each field means. Every list is a [`List`]; text that came
//! from users is cut to [`MAX_TEXT_CHARS`](super::MAX_TEXT_CHARS) characters, pids are written
//! as `"<node.id.incarnation>"` and times as milliseconds since the Unix epoch.
//!
//! ```
//! use shoal::dashboard::api::NodesView;
//!
//! let json = r#"{"node": "a", "events_lagged": 0, "nodes": {"items": [], "total": 0, "truncated": false}}"#;
//! let nodes: NodesView = serde_json::from_str(json)?;
//! assert_eq!(nodes.node, "a");
//! assert!(!nodes.nodes.truncated);
//! # Ok::<(), serde_json::Error>(())
//! ```
//!
//! The structs are `#[non_exhaustive]`: a later version may add fields, which a client of this
//! version reads past (serde ignores fields it does not know).

use serde::{Deserialize, Serialize};

/// A bounded list: at most a fixed number of `items`, the `total` there were, and whether
/// some were left out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct List<T> {
    /// The items, at most the list's bound.
    pub items: Vec<T>,
    /// How many there were before the bound.
    pub total: usize,
    /// Whether some were left out (`total` is more than `items` holds).
    pub truncated: bool,
}

impl<T> List<T> {
    /// The first `max` of `all`.
    pub(crate) fn capped(all: impl IntoIterator<Item = T>, max: usize) -> Self {
        let mut items = Vec::new();
        let mut total = 0;
        for item in all {
            if items.len() < max {
                items.push(item);
            }
            total += 1;
        }
        let truncated = total > items.len();
        Self { items, total, truncated }
    }

    /// Says there were `total` (more than it holds, if some were left out before).
    pub(crate) fn set_total(&mut self, total: usize) {
        self.total = total.max(self.items.len());
        self.truncated = self.total > self.items.len();
    }
}

impl<T> Default for List<T> {
    fn default() -> Self {
        Self { items: Vec::new(), total: 0, truncated: false }
    }
}

/// `GET /api/node`: this node.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NodeView {
    /// Its name.
    pub name: String,
    /// Its incarnation (larger at every start).
    pub incarnation: u64,
    /// When it was made (its `shoal::Node`), on its clock.
    pub started_at_ms: u64,
    /// The transport's listening address.
    pub listen_addr: String,
    /// Whether it is ready ([`Node::is_ready`](crate::Node::is_ready)).
    pub ready: bool,
    /// `"full_mesh"`, `"static"` or `"managed"`.
    pub membership: String,
    /// The names of the nodes it is connected to.
    pub connected: List<String>,
    /// How many members it knows, connected or not.
    pub members: usize,
    /// How many processes live here.
    pub processes: usize,
    /// Which layers run here.
    pub layers: Layers,
}

/// Which layers run on a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Layers {
    /// Paxos.
    pub paxos: bool,
    /// Broadcast.
    pub broadcast: bool,
    /// The registry.
    pub registry: bool,
    /// Process groups.
    pub groups: bool,
}

/// `GET /api/nodes`: the nodes this one knows, and their history.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NodesView {
    /// This node's name.
    pub node: String,
    /// Node events missed because the recorder fell behind.
    pub events_lagged: u64,
    /// The nodes, by name.
    pub nodes: List<NodeRow>,
}

/// A node of [`NodesView`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NodeRow {
    /// Its name.
    pub name: String,
    /// Whether it is the node that answers.
    pub this_node: bool,
    /// Connected now (the node that answers always is).
    pub up: bool,
    /// The latest incarnation seen.
    pub incarnation: Option<u64>,
    /// Where it listens, if known.
    pub listen_addr: Option<String>,
    /// Its latest changes, oldest first, since the dashboard started.
    pub history: List<Change>,
}

/// A node's going up or down.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Change {
    /// When.
    pub at_ms: u64,
    /// Up, or down.
    pub up: bool,
    /// The incarnation it went up or down in, if known.
    pub incarnation: Option<u64>,
    /// Why it went down (or `"connected when the dashboard started"`, `"resynchronised"`);
    /// `None` for a plain up.
    pub reason: Option<String>,
}

/// `GET /api/processes`: the processes with the longest mailboxes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProcessesView {
    /// The node's name.
    pub node: String,
    /// How many processes live there.
    pub count: usize,
    /// The processes with the longest mailboxes, longest first.
    pub top: Vec<ProcessRow>,
}

/// A process of [`ProcessesView`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProcessRow {
    /// Its pid.
    pub pid: String,
    /// Its local registered name, if any.
    pub name: Option<String>,
    /// How many messages wait in its mailbox.
    pub mailbox_len: usize,
}

/// What a node answers the cluster view's RPC with: its [`NodeView`] and its processes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Summary {
    /// What `GET /api/node` would answer there.
    pub node: NodeView,
    /// Its processes with the longest mailboxes.
    pub processes: ProcessesView,
}

/// `GET /api/cluster`: every node's [`Summary`], asked through the transport.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClusterView {
    /// The name of the node that asked.
    pub node: String,
    /// Every node, by name.
    pub nodes: List<ClusterRow>,
}

/// A node of [`ClusterView`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClusterRow {
    /// Its name.
    pub name: String,
    /// Whether it answered in time.
    pub answering: bool,
    /// Why it did not.
    pub error: Option<String>,
    /// What it answered.
    pub summary: Option<Summary>,
}

/// `GET /api/transport`: per-peer counters and the totals over time.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TransportView {
    /// The node's name.
    pub node: String,
    /// Its peers, by name.
    pub peers: List<PeerRow>,
    /// The counters summed over the peers.
    pub totals: Counters,
    /// The totals once a second, oldest first.
    pub samples: Vec<TransportSample>,
}

/// A peer of [`TransportView`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PeerRow {
    /// Its name.
    pub node: String,
    /// Connected now.
    pub up: bool,
    /// The protocol version of the connection, if connected.
    pub protocol_version: Option<u32>,
    /// Its counters (flat in the JSON).
    #[serde(flatten)]
    pub counters: Counters,
}

/// A peer's counters, or their sum over the peers
/// ([`PeerStats`](shoal_transport::PeerStats)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Counters {
    /// Frames sent.
    pub frames_sent: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Frames received.
    pub frames_received: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Messages queued to send now.
    pub queued: u64,
    /// Connections made again.
    pub reconnects: u64,
    /// Frames dropped by injected faults.
    pub dropped_by_faults: u64,
}

/// The transport's totals at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TransportSample {
    /// When.
    pub at_ms: u64,
    /// The totals then (flat in the JSON).
    #[serde(flatten)]
    pub totals: Counters,
}

/// `GET /api/paxos`: the acceptor set, the quorum, and this node's proposer.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PaxosView {
    /// Whether Paxos runs here (else the rest is empty).
    pub running: bool,
    /// Why the acceptor set could not be read.
    pub error: Option<String>,
    /// The acceptor set.
    pub acceptors: Vec<String>,
    /// Its configuration version.
    pub version: Option<u64>,
    /// Whether a majority of the acceptors is reachable.
    pub has_quorum: bool,
    /// Whether this node is an acceptor that votes.
    pub voting: bool,
    /// This node's proposer since Paxos started on it.
    pub figures: Option<PaxosFigures>,
    /// Paxos once a second, oldest first.
    pub samples: Vec<PaxosSample>,
}

/// What a node's proposer counted since Paxos started on it (`Paxos::stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PaxosFigures {
    /// Phase-1 and phase-2 rounds started.
    pub rounds: u64,
    /// Rounds lost to a higher ballot.
    pub conflicts: u64,
    /// Rounds that timed out waiting for a majority.
    pub round_timeouts: u64,
    /// Changes decided without a phase 1.
    pub fast_decisions: u64,
    /// Changes decided after a phase 1.
    pub slow_decisions: u64,
    /// Changes timed (the latency histogram's count).
    pub operations: u64,
    /// Half of the changes took at most this long (a bucket's upper bound), in microseconds.
    pub latency_p50_us: Option<u64>,
    /// 99 in 100 changes took at most this long (a bucket's upper bound), in microseconds.
    pub latency_p99_us: Option<u64>,
}

/// Paxos at one instant: the counters since Paxos started, the latency of the changes since
/// the sample before.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PaxosSample {
    /// When.
    pub at_ms: u64,
    /// Whether a majority of the acceptors was reachable.
    pub has_quorum: bool,
    /// How many acceptors the set had.
    pub acceptors: usize,
    /// Rounds started since Paxos started.
    pub rounds: u64,
    /// Rounds lost to a higher ballot since Paxos started.
    pub conflicts: u64,
    /// The 99th percentile of the changes since the sample before (`None`: there were none).
    pub latency_p99_us: Option<u64>,
}

/// `GET /api/registry`: every name and lock of the cluster.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RegistryView {
    /// Whether the registry runs here (else the rest is empty).
    pub running: bool,
    /// Why the listing did not finish within its bound.
    pub error: Option<String>,
    /// The names.
    pub names: List<NameRow>,
    /// The held locks.
    pub locks: List<LockRow>,
    /// The members that did not answer the listing.
    pub unreachable: List<String>,
}

/// A registered name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NameRow {
    /// The name.
    pub name: String,
    /// The node it is registered on.
    pub host: String,
    /// Its process (`None` while it starts).
    pub pid: Option<String>,
    /// Its fencing token.
    pub token: u64,
    /// `"temporary"` or `"permanent"`.
    pub restart: String,
}

/// A held lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LockRow {
    /// The lock's key.
    pub key: String,
    /// The holder's pid.
    pub holder: String,
    /// The holder's node.
    pub host: String,
    /// The fencing token.
    pub token: u64,
    /// Acquisitions not yet released.
    pub count: u32,
    /// Processes waiting for it.
    pub waiters: usize,
}

/// `GET /api/groups`: the process groups as this node sees them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GroupsView {
    /// Whether groups run here (else the rest is empty).
    pub running: bool,
    /// The groups.
    pub groups: List<GroupRow>,
}

/// A process group.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GroupRow {
    /// Its name.
    pub name: String,
    /// The nodes with members.
    pub nodes: List<String>,
    /// Its members.
    pub members: List<MemberRow>,
}

/// A member of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MemberRow {
    /// Its pid.
    pub pid: String,
    /// Its node, if known here.
    pub node: Option<String>,
}

/// `GET /api/hubs`: the hubs and distributed supervisors this node runs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HubsView {
    /// The hubs, in id order.
    pub hubs: Vec<HubRow>,
    /// How many hubs there were before the cap.
    pub total_hubs: usize,
    /// The distributed supervisors' hubs, in name order.
    #[serde(default)]
    pub supervisors: Vec<HubRow>,
    /// How many supervisors there were before the cap.
    #[serde(default)]
    pub total_supervisors: usize,
}

impl HubsView {
    /// Every hub, the supervisors' after the others.
    pub fn all(&self) -> impl Iterator<Item = &HubRow> {
        self.hubs.iter().chain(&self.supervisors)
    }

    /// The hub `id` (a supervisor's hub by its hub's id), if listed.
    pub fn find(&self, id: &str) -> Option<&HubRow> {
        self.all().find(|hub| hub.id == id)
    }
}

/// A hub's ring and children.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HubRow {
    /// The distributed supervisor whose hub it is, if it is one's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor: Option<String>,
    /// The hub's id.
    pub id: String,
    /// Whether it runs (false if it stopped since it was listed).
    pub running: bool,
    /// The ring's nodes as this node sees them.
    pub nodes: List<String>,
    /// Whether it has its quorum.
    pub has_quorum: bool,
    /// Whether it sees a partition.
    pub partitioned: bool,
    /// How many children it knows.
    pub children: usize,
    /// Its copies per node.
    pub per_node: List<NodeShare>,
    /// Children no node runs now.
    pub unplaced: usize,
    /// Some of its children.
    pub sample: List<ChildRow>,
}

/// A hub's copies on one node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NodeShare {
    /// The node.
    pub node: String,
    /// Copies running there.
    pub running: usize,
    /// Copies restarting, moving or suspended there.
    pub other: usize,
}

/// A hub's child.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChildRow {
    /// Its id.
    pub child: String,
    /// Where it runs (`None`: unplaced).
    pub node: Option<String>,
    /// `"running"`, `"restarting"`, `"moving"`, `"unknown"` or `"suspended"`.
    pub status: String,
}
