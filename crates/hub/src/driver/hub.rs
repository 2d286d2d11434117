//! [`Hub`]: the handle, its configuration, the queries, the events, and the index that keeps
//! the [`Table`] up to date as the replicated entries change.
//!
//! Each node publishes its own children (one [`Entry`] per child it runs) in a
//! [`Replicated`] map on the service `shoal.hub.ID`, with acknowledgements on; the map's
//! observer ([`Index`]) feeds every change, and every change of the hub's nodes, to the
//! [`Table`] under the map's lock, and wakes the reconcile task (`children.rs`), which carries
//! out what the table decides. Queries read the table under the same lock: no network.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use shoal_process::{
    ChildSpec, Clock, Dest, Pid, Process, Resolve, ResolveError, Resolving, Runtime, Via,
};
use shoal_registry::{PeerEvent, ReplicaObserver, Replicated, ReplicatedConfig, next_run};
use shoal_transport::Node;
use tokio::sync::{Notify, broadcast, watch};

use super::children::{self, Local};
use super::error::{HubStartError, MAX_CHILD_ID};
use super::handover::{self, Handovers};
use super::migrate::{self, Migration};
use super::stats::{Counters, HubStats};
use crate::core::{Consistent, Entry, Redundancy, Role, State, Strategy, Table, TableConfig};

/// What a hub replicates of a child, besides its placement and state. Shared (`Arc`), as
/// every node keeps several copies of it (its own, its view of each peer's, the newest).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildData {
    /// What to start.
    pub spec: Arc<ChildSpec>,
    /// The caller's metadata.
    pub meta: Arc<ByteBuf>,
    /// The caller's tags.
    pub tags: Arc<Vec<String>>,
    /// Its pid on the entry's node (none while it is not running there).
    pub pid: Option<Pid>,
    /// When it restarted within [`HubConfig::restart_window`], on whichever nodes it ran
    /// (wall-clock milliseconds of the node that restarted it, oldest first): its restart
    /// intensity is counted across the cluster, not per node.
    #[serde(default)]
    pub restarts: Arc<Vec<u64>>,
    /// It ended for good past its restart intensity (a tombstone that says it failed).
    #[serde(default)]
    pub failed: bool,
}

/// A child to start: its spec (the spec's id is the child's id in the hub), with metadata,
/// tags, and the nodes to run on if the caller wants to choose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubChild {
    /// What to start; `spec.id` is the child id, unique in the hub.
    pub spec: ChildSpec,
    /// Bytes kept with the child, read back by [`Hub::child`].
    pub meta: Vec<u8>,
    /// Tags, for [`Hub::children_by_tag`].
    pub tags: Vec<String>,
    /// The nodes to run on, best first (for the guided strategy; a node list given to the
    /// default strategy guides it too).
    pub nodes: Option<Vec<String>>,
}

impl HubChild {
    /// A child with no metadata, tags or node list.
    pub fn new(spec: ChildSpec) -> Self {
        HubChild { spec, meta: Vec::new(), tags: Vec::new(), nodes: None }
    }

    /// With metadata `meta`.
    pub fn meta(mut self, meta: impl Into<Vec<u8>>) -> Self {
        self.meta = meta.into();
        self
    }

    /// With tag `tag` too.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// To run on the first of `nodes` in the hub.
    pub fn on_nodes<S: Into<String>>(mut self, nodes: impl IntoIterator<Item = S>) -> Self {
        self.nodes = Some(nodes.into_iter().map(Into::into).collect());
        self
    }
}

/// Two copies of a child ran at once (started on both sides of a partition); the loser is
/// about to stop, with [`CONFLICT`] as its exit reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The child.
    pub child: String,
    /// The copy that stops (a process of this node).
    pub loser: Pid,
    /// The node whose copy stays.
    pub winner: String,
    /// Its pid there, if known.
    pub winner_pid: Option<Pid>,
}

/// Run on the loser's node before a conflicting copy stops, so the winner can take what it
/// needs of the loser's state (call the loser, send to the winner); bounded by
/// [`HubConfig::conflict_timeout`].
pub type ConflictHook =
    Arc<dyn Fn(Conflict) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// The exit reason of a copy stopped because another copy of its child won.
pub const CONFLICT: &str = "shoal.hub.conflict";

/// The exit reason of a child stopped to move to another node.
pub const MOVED: &str = "shoal.hub.moved";

/// The exit reason of a child stopped because its node lost its quorum
/// ([`crate::core::Partition`]).
pub const QUORUM_LOST: &str = "shoal.hub.quorum_lost";

/// How a hub runs. Every node of a hub must use the same [`TableConfig::vnodes`].
#[derive(Clone)]
pub struct HubConfig {
    /// Failover, redistribution and tombstones: the table's knobs (how long a node must be
    /// down before its children move, moves per second, whether children move on a join).
    pub table: TableConfig,
    /// How a child is placed when first started ([`Consistent`] by default).
    pub strategy: Arc<dyn Strategy>,
    /// Anti-entropy period of the replicated children.
    pub sync_every: Duration,
    /// How often the table is reconciled when nothing changes.
    pub tick: Duration,
    /// Forwards of a start between nodes whose views disagree, at most.
    pub max_hops: u8,
    /// Restarts of one child within [`HubConfig::restart_window`] before it is ended for
    /// good (a tombstone marked failed, [`HubEvent::Failed`]). Counted across the cluster:
    /// the child's entry carries its recent restarts, so a child that crashes wherever it
    /// runs fails once, not once per node. A failover start whose process does not start
    /// (an `init` that fails on its new node) counts as a restart, and is retried at once
    /// while the intensity allows.
    pub max_restarts: u32,
    /// See [`HubConfig::max_restarts`].
    pub restart_window: Duration,
    /// Events a subscriber may have waiting before it misses some (and is told how many).
    pub events: usize,
    /// Run before a conflicting copy stops.
    pub on_conflict: Option<ConflictHook>,
    /// How long [`HubConfig::on_conflict`] may take.
    pub conflict_timeout: Duration,
    /// The children's behaviours with state to hand over, by factory name (roles and state
    /// streams need them).
    pub handovers: Handovers,
    /// How often each active copy's state is streamed to its passive copies, at most (the
    /// staleness bound of a promoted copy, plus the time to send it; see [`crate::Handover`]).
    pub stream_every: Duration,
    /// How children move to another node: cold (the default) or hot, with their state and
    /// mail ([`Migration`]).
    pub migration: Migration,
    /// When the hub stops here on purpose, how long it may take to hand its children with
    /// state ([`HubConfig::handovers`]) to their new owners, hot, before it stops the rest
    /// (whatever [`HubConfig::migration`] says).
    pub handover_deadline: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            table: TableConfig::default(),
            strategy: Arc::new(Consistent),
            sync_every: Duration::from_secs(2),
            tick: Duration::from_millis(100),
            max_hops: 3,
            max_restarts: 10,
            restart_window: Duration::from_secs(10),
            events: 4_096,
            on_conflict: None,
            conflict_timeout: Duration::from_secs(5),
            handovers: Handovers::default(),
            stream_every: Duration::from_millis(200),
            migration: Migration::Cold,
            handover_deadline: Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubConfig")
            .field("table", &self.table)
            .field("sync_every", &self.sync_every)
            .field("tick", &self.tick)
            .field("max_hops", &self.max_hops)
            .field("max_restarts", &self.max_restarts)
            .field("restart_window", &self.restart_window)
            .field("handovers", &self.handovers)
            .field("stream_every", &self.stream_every)
            .field("migration", &self.migration)
            .field("handover_deadline", &self.handover_deadline)
            .finish_non_exhaustive()
    }
}

/// What happened in a hub, as this node sees it (for every node of the hub).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HubEvent {
    /// A child runs on `node` (first start, restart, failover or move).
    Started {
        /// The child.
        child: String,
        /// Where.
        node: String,
        /// Its pid.
        pid: Pid,
    },
    /// A child no longer runs on `node`.
    Stopped {
        /// The child.
        child: String,
        /// Where it ran.
        node: String,
        /// Whether it was terminated or ended for good (a tombstone), not moved or lost.
        ended: bool,
    },
    /// A child is moving from `from` to `to`.
    Moved {
        /// The child.
        child: String,
        /// Where it ran.
        from: String,
        /// Where it goes.
        to: String,
    },
    /// A node started the hub, or came back.
    NodeUp(String),
    /// A node is out of the hub.
    NodeDown {
        /// The node.
        node: String,
        /// Whether it left on purpose (it stopped the hub), or was lost.
        left: bool,
    },
    /// A move finished: the child runs on `to` now, where `from` was moving it.
    Migrated {
        /// The child.
        child: String,
        /// Where it ran.
        from: String,
        /// Where it runs.
        to: String,
    },
    /// This node handed a child's state to the copy that replaces it on `to` (a hot move, or a
    /// hand-over as the hub stops here), and how many letters it forwarded there.
    HandedOver {
        /// The child.
        child: String,
        /// The new node.
        to: String,
        /// Bytes of state handed over.
        bytes: usize,
    },
    /// A hot move could not hand the state over (the old copy was gone, the new node did not
    /// take it, or letters for the old copy could not be forwarded): the child runs on `to`
    /// as after a cold move, and what it had is lost.
    HandOverFailed {
        /// The child.
        child: String,
        /// The new node.
        to: String,
        /// What went wrong.
        error: String,
    },
    /// The retention window of a hot move from this node ended: the letters for the old copy
    /// it forwarded to the new one, and those it could not (their senders were told; past
    /// the window, letters for the old pid are refused as for any process that is gone).
    ForwardingEnded {
        /// The child.
        child: String,
        /// Letters forwarded.
        forwarded: u64,
        /// Letters not forwarded.
        failed: u64,
    },
    /// This node's copy of a child was told its role (active/passive replication).
    Role {
        /// The child.
        child: String,
        /// Its role now.
        role: Role,
    },
    /// A child ended for good on `node` past its restart intensity ([`HubConfig::max_restarts`],
    /// counted across the nodes it ran on): no node starts it again until it is started anew.
    /// Follows its [`HubEvent::Stopped`].
    Failed {
        /// The child.
        child: String,
        /// Where it last ran.
        node: String,
        /// Its restarts within [`HubConfig::restart_window`].
        restarts: usize,
    },
    /// This node lost its quorum ([`crate::core::Partition`]): its children stop, with
    /// [`QUORUM_LOST`], and it starts none.
    QuorumLost,
    /// This node has its quorum again: its suspended children start again where no other
    /// node took them over.
    QuorumRegained,
}

/// Where a copy of a child stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChildStatus {
    /// Running, as this pid.
    Running(Pid),
    /// Exited, and being restarted.
    Restarting,
    /// Stopped, and being started on `to`.
    Moving {
        /// The new owner.
        to: String,
    },
    /// Known, but no node of the hub runs it now (its node was lost; it will be started
    /// elsewhere).
    Unknown,
    /// Stopped because its node lost its quorum; started again when it is back.
    Suspended,
}

/// Everything a node knows of one child ([`Hub::child`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubChildInfo {
    /// The child id.
    pub child: String,
    /// Its spec.
    pub spec: ChildSpec,
    /// Its metadata.
    pub meta: Vec<u8>,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its version (grows with each termination).
    pub version: u64,
    /// Its restarts within [`HubConfig::restart_window`], on whichever nodes it ran, as its
    /// newest entry says (see [`HubConfig::max_restarts`]).
    pub restarts: usize,
    /// How it is placed, as its newest entry says (every node that has heard from the same
    /// nodes says the same).
    pub placement: crate::core::Placement,
    /// Its copies: node and status (empty while no node runs it).
    pub copies: Vec<(String, ChildStatus)>,
}

/// A child in a listing ([`Hub::which_children_local`], [`Hub::which_children_global`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildRow {
    /// The child id.
    pub child: String,
    /// Where it runs (`None`: nowhere now, see [`ChildStatus::Unknown`]).
    pub node: Option<String>,
    /// How.
    pub status: ChildStatus,
}

/// A hub on one node: its children across the cluster, started, found and moved from here
/// (see the crate docs).
#[derive(Clone)]
pub struct Hub {
    pub(crate) inner: Arc<HubInner>,
    /// Stops the hub's tasks when the last handle goes.
    _guard: Arc<StopOnDrop>,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub").field("id", &self.inner.id).finish_non_exhaustive()
    }
}

struct StopOnDrop(watch::Sender<bool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

pub(crate) type Map = Replicated<String, Entry<ChildData>, Index>;

/// What the handle and the hub's tasks share.
pub(crate) struct HubInner {
    pub(crate) id: String,
    pub(crate) rpc: String,
    pub(crate) node: Node,
    pub(crate) runtime: Runtime,
    pub(crate) clock: Clock,
    pub(crate) config: HubConfig,
    pub(crate) map: Map,
    /// This node's children: their processes and restarts.
    pub(crate) local: Mutex<BTreeMap<String, Local>>,
    pub(crate) events: broadcast::Sender<HubEvent>,
    pub(crate) subscribed: Arc<AtomicBool>,
    /// Wakes the reconcile task.
    pub(crate) wake: Arc<Notify>,
    pub(crate) stop: watch::Sender<bool>,
    /// Moves and hand-overs, counted ([`Hub::stats`]).
    pub(crate) counters: Counters,
}

impl HubInner {
    pub(crate) fn me(&self) -> &str {
        self.node.name()
    }

    /// Reads the table under the map's lock.
    pub(crate) fn table<R>(&self, read: impl FnOnce(&Table<ChildData>) -> R) -> R {
        self.map.with(|state| read(&state.observer.table))
    }

    /// Works on the table under the map's lock.
    pub(crate) fn table_mut<R>(&self, work: impl FnOnce(&mut Table<ChildData>) -> R) -> R {
        self.map.with_mut(|state| work(&mut state.observer.table))
    }

    /// This node's own entry for `child`.
    pub(crate) fn own(&self, child: &str) -> Option<Entry<ChildData>> {
        self.map.with(|state| state.replica.own().get(child).cloned())
    }

    pub(crate) fn is_stopped(&self) -> bool {
        *self.stop.borrow()
    }
}

impl Hub {
    /// Starts hub `id` on `node`: this node joins the hub's other nodes (those running the
    /// same id), and its reconcile task starts.
    ///
    /// # Errors
    ///
    /// [`HubStartError::BadId`], or [`HubStartError::Running`] if it runs here already.
    pub async fn start(node: &Node, id: &str, config: HubConfig) -> Result<Hub, HubStartError> {
        if id.is_empty() || id.len() > MAX_CHILD_ID {
            return Err(HubStartError::BadId(id.to_owned()));
        }
        config.table.partition.check().map_err(HubStartError::BadConfig)?;
        let clock = node.runtime().clock().clone();
        let wake = Arc::new(Notify::new());
        let (events, _) = broadcast::channel(config.events.max(1));
        let subscribed = Arc::new(AtomicBool::new(false));
        let index = Index {
            table: Table::new(node.name(), config.table, clock.now().into_std()),
            pids: HashMap::new(),
            clock: clock.clone(),
            events: events.clone(),
            subscribed: subscribed.clone(),
            wake: wake.clone(),
        };
        let replicated =
            ReplicatedConfig { sync_every: config.sync_every, acks: true, ..Default::default() };
        let service = format!("shoal.hub.{id}");
        let map =
            Replicated::start(node, &service, next_run(node.incarnation()), replicated, index)
                .await
                .map_err(|source| HubStartError::Running { hub: id.to_owned(), source })?;
        let (stop, _) = watch::channel(false);
        let inner = Arc::new(HubInner {
            id: id.to_owned(),
            rpc: format!("shoal.hub.{id}"),
            node: node.clone(),
            runtime: node.runtime().clone(),
            clock,
            config,
            map,
            local: Mutex::new(BTreeMap::new()),
            events,
            subscribed,
            wake,
            stop: stop.clone(),
            counters: Counters::default(),
        });
        children::serve(&inner);
        tokio::spawn(children::reconcile_task(inner.clone()));
        let table = &inner.config.table;
        if table.replicas > 1 && table.redundancy == Redundancy::ActivePassive {
            tokio::spawn(handover::stream_task(inner.clone()));
        }
        Ok(Hub { inner, _guard: Arc::new(StopOnDrop(stop)) })
    }

    /// The hub id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The hub's nodes as this node sees them (itself included), sorted.
    pub fn nodes(&self) -> Vec<String> {
        self.inner.table(|table| table.ring().nodes().iter().cloned().collect())
    }

    /// Whether a node of the hub went down without leaving within
    /// [`TableConfig::partition_window`], or this node is without its quorum.
    pub fn is_partitioned(&self) -> bool {
        let now = self.inner.clock.now().into_std();
        self.inner.table(|table| table.is_partitioned(now))
    }

    /// Whether this node has its quorum ([`TableConfig::partition`]; always, under the
    /// default divergence strategy).
    pub fn has_quorum(&self) -> bool {
        self.inner.table(Table::has_quorum)
    }

    /// The pid of `child` where it runs, as this node sees it (no network).
    pub fn pid(&self, child: &str) -> Option<Pid> {
        self.inner.map.with(|state| state.observer.pids.get(child).copied())
    }

    /// The node whose copy of `child` serves (with several copies under active/passive
    /// redundancy, the active one), as this node sees it (no network).
    pub fn active(&self, child: &str) -> Option<String> {
        self.inner.table(|table| table.active(child).map(str::to_owned))
    }

    /// `child` as a destination for any send, call, monitor or link: its serving copy
    /// ([`Hub::pid`]), looked up at each operation. Calls by child id go to the active
    /// replica.
    ///
    /// ```no_run
    /// # async fn example(hub: shoal_hub::Hub, runtime: shoal_process::Runtime) {
    /// # struct Room;
    /// # impl shoal_process::Process for Room {
    /// #     type Message = (); type Call = (); type Reply = u64;
    /// #     async fn handle_cast(&mut self, (): (), _: &mut shoal_process::Context<Self>) {}
    /// # }
    /// let seats: Result<u64, _> = runtime.target::<Room>(hub.via("room/7")).call(()).await;
    /// # }
    /// ```
    pub fn via(&self, child: &str) -> Dest {
        Dest::Via(Via::new(ChildName { hub: Arc::downgrade(&self.inner), child: child.to_owned() }))
    }

    /// Casts `message` to every running copy of `child` (each replica); how many it was
    /// sent to (none: no copy runs, as this node sees it).
    pub async fn cast_all<P: Process>(&self, child: &str, message: P::Message) -> usize
    where
        P::Message: Clone,
    {
        let pids: Vec<Pid> = self.inner.table(|table| {
            table.child(child).map_or_else(Vec::new, |known| {
                known.running().filter_map(|node| known.holders.get(node)?.data.pid).collect()
            })
        });
        let mut sent = 0;
        for pid in pids {
            let target = self.inner.runtime.target::<P>(pid);
            sent += usize::from(target.cast(message.clone()).await.is_ok());
        }
        sent
    }

    /// Everything this node knows of `child`: spec, metadata, copies (no network).
    pub fn child(&self, child: &str) -> Option<HubChildInfo> {
        self.inner.table(|table| {
            let known = table.child(child)?;
            if known.is_ended() {
                return None;
            }
            let copies = known
                .holders
                .iter()
                .filter(|(_, entry)| entry.state != State::Ended)
                .map(|(node, entry)| (node.clone(), status(entry)))
                .collect();
            let data = &known.newest.data;
            Some(HubChildInfo {
                child: child.to_owned(),
                spec: (*data.spec).clone(),
                meta: data.meta.to_vec(),
                tags: (*data.tags).clone(),
                version: known.newest.version,
                restarts: data.restarts.len(),
                placement: known.newest.placement.clone(),
                copies,
            })
        })
    }

    /// This node's children, by child id (no network).
    pub fn which_children_local(&self) -> Vec<ChildRow> {
        let me = self.inner.me().to_owned();
        self.inner.map.with(|state| {
            state
                .replica
                .own()
                .iter()
                .filter(|(_, entry)| entry.state != State::Ended)
                .map(|(child, entry)| ChildRow {
                    child: child.clone(),
                    node: Some(me.clone()),
                    status: status(entry),
                })
                .collect()
        })
    }

    /// This node's figures: its children now (as [`Hub::which_children_local`] counts them),
    /// the children it moved away, and its hand-overs done and failed. Counts this node's
    /// entries under the hub's lock: for a sampler on a tick, not for a hot path.
    pub fn stats(&self) -> HubStats {
        let mut stats = self.inner.counters.snapshot();
        let children = self.inner.map.with(|state| {
            state.replica.own().values().filter(|entry| entry.state != State::Ended).count()
        });
        stats.children = children as u64;
        stats
    }

    /// Every child of the hub as this node sees it, by child id then node: each copy, and
    /// each child no node runs now with [`ChildStatus::Unknown`] (no network).
    pub fn which_children_global(&self) -> Vec<ChildRow> {
        self.inner.table(global_rows)
    }

    /// The children tagged `tag`, sorted (no network).
    pub fn children_by_tag(&self, tag: &str) -> Vec<String> {
        let mut tagged: Vec<String> = self.inner.table(|table| {
            table
                .children()
                .filter(|(_, known)| {
                    !known.is_ended() && known.newest.data.tags.iter().any(|t| t == tag)
                })
                .map(|(child, _)| child.clone())
                .collect()
        });
        tagged.sort_unstable();
        tagged
    }

    /// Events from now on, in the order this node saw them happen: children started,
    /// stopped, moved and migrated, states handed over, roles, nodes up and down, quorum lost
    /// and regained. A subscriber that falls more than [`HubConfig::events`] behind is told
    /// how many it missed (`RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<HubEvent> {
        self.subscribe_with_snapshot().1
    }

    /// [`Hub::subscribe`], with the hub as it stood just before the first event the receiver
    /// gets ([`Hub::which_children_global`] at that instant): taken together, so no change
    /// falls between them.
    pub fn subscribe_with_snapshot(&self) -> (Vec<ChildRow>, broadcast::Receiver<HubEvent>) {
        // Child events are sent under the map's lock, which the snapshot holds.
        self.inner.map.with(|state| {
            self.inner.subscribed.store(true, Ordering::Relaxed);
            let receiver = self.inner.events.subscribe();
            (global_rows(&state.observer.table), receiver)
        })
    }

    /// Stops the hub on this node, on purpose: its children with state
    /// ([`HubConfig::handovers`]) are handed to their new owners, hot, within
    /// [`HubConfig::handover_deadline`]; the others are stopped, and the other nodes are told
    /// (they start them on their new owners at once, without waiting for
    /// [`TableConfig::down_after`]); then the service closes.
    pub async fn stop(&self) {
        if self.inner.stop.send_replace(true) {
            return;
        }
        let deadline = self.inner.clock.now().into_std() + self.inner.config.handover_deadline;
        // Moves into this node finish first (their children are then handed on too), and so do
        // moves out of it (a child whose move fails runs on here, and is handed over with the
        // others; one stopped mid-move would lose its state).
        while (children::any_prepared(&self.inner) || children::any_moving_out(&self.inner))
            && self.inner.clock.now().into_std() < deadline
        {
            self.inner.clock.sleep(Duration::from_millis(10)).await;
        }
        migrate::hand_over_all(&self.inner, deadline).await;
        children::stop_all(&self.inner).await;
        self.inner.node.unregister_rpc(&self.inner.rpc);
        self.inner.map.stop().await;
    }
}

/// Every child of the hub as `table` sees it (see [`Hub::which_children_global`]).
fn global_rows(table: &Table<ChildData>) -> Vec<ChildRow> {
    let mut rows = Vec::new();
    let mut children: Vec<_> = table.children().collect();
    children.sort_unstable_by_key(|(child, _)| *child);
    for (child, known) in children {
        if known.is_ended() {
            continue;
        }
        let before = rows.len();
        for (node, entry) in &known.holders {
            if entry.state != State::Ended {
                rows.push(ChildRow {
                    child: child.clone(),
                    node: Some(node.clone()),
                    status: status(entry),
                });
            }
        }
        if rows.len() == before {
            rows.push(ChildRow { child: child.clone(), node: None, status: ChildStatus::Unknown });
        }
    }
    rows
}

fn status(entry: &Entry<ChildData>) -> ChildStatus {
    match (&entry.state, entry.data.pid) {
        (State::Running | State::Syncing, Some(pid)) => ChildStatus::Running(pid),
        (State::Running | State::Syncing | State::Restarting, _) => ChildStatus::Restarting,
        (State::Moving { to }, _) => ChildStatus::Moving { to: to.clone() },
        (State::Ended, _) => ChildStatus::Unknown,
        (State::Suspended, _) => ChildStatus::Suspended,
    }
}

/// A hub child id as a destination ([`Hub::via`]).
struct ChildName {
    hub: std::sync::Weak<HubInner>,
    child: String,
}

impl Resolve for ChildName {
    fn describe(&self) -> String {
        let hub = self.hub.upgrade().map_or_else(String::new, |hub| hub.id.clone());
        format!("hub {hub:?} child {:?}", self.child)
    }

    fn cached(&self) -> Option<Pid> {
        let hub = self.hub.upgrade()?;
        hub.map.with(|state| state.observer.pids.get(&self.child).copied())
    }

    fn resolve(&self) -> Resolving<'_> {
        Box::pin(async move {
            self.cached().ok_or_else(|| ResolveError::NoProc(Resolve::describe(self)))
        })
    }
}

/// The replicated map's observer: the table, and the events.
pub(crate) struct Index {
    pub(crate) table: Table<ChildData>,
    /// The pid of each running child (one copy's), for [`Hub::pid`].
    pids: HashMap<String, Pid>,
    clock: Clock,
    events: broadcast::Sender<HubEvent>,
    /// Whether anyone ever subscribed to the events.
    subscribed: Arc<AtomicBool>,
    wake: Arc<Notify>,
}

impl Index {
    /// The node that was moving `child` to `origin`, if `origin` now runs it.
    fn migrated_from(
        &self,
        origin: &str,
        child: &str,
        value: Option<&Entry<ChildData>>,
    ) -> Option<String> {
        value.and_then(running_pid)?;
        let known = self.table.child(child)?;
        known.holders.iter().find_map(|(node, entry)| match &entry.state {
            State::Moving { to } if to == origin => Some(node.clone()),
            _ => None,
        })
    }
}

impl ReplicaObserver<String, Entry<ChildData>> for Index {
    fn changed(&mut self, origin: &str, child: &String, value: Option<&Entry<ChildData>>) {
        let now = self.clock.now().into_std();
        // Cheaper than asking the channel (which takes its lock) on every change.
        let subscribed = self.subscribed.load(Ordering::Relaxed);
        let was = subscribed
            .then(|| self.table.child(child)?.holders.get(origin).and_then(running_pid))
            .flatten();
        let failed = |table: &Table<ChildData>| {
            table
                .child(child)
                .is_some_and(|known| known.newest.state == State::Ended && known.newest.data.failed)
        };
        let failed_before = subscribed && failed(&self.table);
        self.table.changed(origin, child, value, now);
        let failed_now = subscribed && !failed_before && failed(&self.table);
        // The serving copy; during a hot move, the copy being moved (its pid forwards).
        let pid = self.table.child(child).and_then(|known| {
            let node = self.table.active(child).or_else(|| {
                let moving = known.holders.iter().find(|(_, entry)| {
                    matches!(entry.state, State::Moving { .. }) && entry.data.pid.is_some()
                });
                moving.map(|(node, _)| node.as_str())
            })?;
            known.holders.get(node)?.data.pid
        });
        match (pid, self.pids.get_mut(child)) {
            (Some(pid), Some(known)) => *known = pid,
            (Some(pid), None) => {
                self.pids.insert(child.clone(), pid);
            }
            (None, _) => {
                self.pids.remove(child);
            }
        }
        if subscribed {
            for event in events(origin, child, was, value, failed_now) {
                let _ = self.events.send(event);
            }
            if let Some(from) = self.migrated_from(origin, child, value) {
                let (child, to) = (child.clone(), origin.to_owned());
                let _ = self.events.send(HubEvent::Migrated { child, from, to });
            }
        }
        self.wake.notify_one();
    }

    fn peer(&mut self, peer: &str, event: PeerEvent) {
        let now = self.clock.now().into_std();
        let event = match event {
            PeerEvent::Up => {
                self.table.node_up(peer, now);
                HubEvent::NodeUp(peer.to_owned())
            }
            PeerEvent::Down => {
                self.table.node_down(peer, now);
                HubEvent::NodeDown { node: peer.to_owned(), left: false }
            }
            PeerEvent::Left => {
                self.table.node_leaving(peer);
                self.table.node_down(peer, now);
                HubEvent::NodeDown { node: peer.to_owned(), left: true }
            }
        };
        let _ = self.events.send(event);
        self.wake.notify_one();
    }
}

/// The events a change of `origin`'s entry for `child` makes (`was`: its running pid
/// before; `failed`: the change is the first this node sees of the child failing).
fn events(
    origin: &str,
    child: &str,
    was: Option<Pid>,
    after: Option<&Entry<ChildData>>,
    failed: bool,
) -> Vec<HubEvent> {
    let now = after.and_then(running_pid);
    let mut events = Vec::new();
    if was.is_some() && was != now {
        match after.map(|entry| &entry.state) {
            Some(State::Moving { to }) => events.push(HubEvent::Moved {
                child: child.to_owned(),
                from: origin.to_owned(),
                to: to.clone(),
            }),
            Some(State::Running | State::Syncing) if now.is_some() => {}
            state => events.push(HubEvent::Stopped {
                child: child.to_owned(),
                node: origin.to_owned(),
                ended: state == Some(&State::Ended),
            }),
        }
    }
    if let Some(entry) = after.filter(|_| failed) {
        events.push(HubEvent::Failed {
            child: child.to_owned(),
            node: origin.to_owned(),
            restarts: entry.data.restarts.len(),
        });
    }
    if let Some(pid) = now
        && was != now
    {
        events.push(HubEvent::Started { child: child.to_owned(), node: origin.to_owned(), pid });
    }
    events
}

fn running_pid(entry: &Entry<ChildData>) -> Option<Pid> {
    entry.state.is_up().then_some(entry.data.pid).flatten()
}
