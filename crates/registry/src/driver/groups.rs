//! [`Groups`]: process groups (Distribunator's model, and Erlang's `pg`): many pids under one
//! name, cluster-wide, eventually consistent, available on both sides of a partition.
//!
//! Each node is the authority for its own members (a member is an entry `(group, pid) →
//! count` of the node its process runs on) and replicates them through a [`Replicated`] map
//! per scope. Reads (`members`, `pick`, ...) never wait on the network: they read this node's
//! index, kept up to date under the map's lock as changes arrive.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shoal_process::{CallError, Pid, Runtime, SendError};
use shoal_transport::{Node, ServiceError};
use tokio::sync::mpsc;

use crate::core::{KeyError, RegistryKey};
use crate::driver::replicated::{ReplicaObserver, Replicated, ReplicatedConfig, next_run};
use crate::driver::stats::GroupsStats;

/// The scope [`Groups::start`] runs: the one every node has without set-up.
pub const DEFAULT_SCOPE: &str = "default";

/// How a scope of groups runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupsConfig {
    /// How often each node tells the others where its members stand, so that a node that
    /// missed changes converges (default 2 s).
    pub sync_every: Duration,
    /// Events a subscriber may have waiting before it is told it fell behind (default 4,096).
    pub subscription_queue: usize,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        GroupsConfig { sync_every: Duration::from_secs(2), subscription_queue: 4_096 }
    }
}

/// Why a group operation was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GroupsError {
    /// The group name is empty or too long.
    #[error(transparent)]
    Name(#[from] KeyError),
    /// Only a process of this node joins or leaves through this node.
    #[error("{0} is not a process of this node")]
    NotLocal(Pid),
    /// The process is not alive.
    #[error("{0} is not alive")]
    NoProc(Pid),
    /// The process is not a member of the group.
    #[error("{pid} is not a member of group {group}")]
    NotMember {
        /// The group.
        group: String,
        /// The process.
        pid: Pid,
    },
    /// The group has no member to send to.
    #[error("group {0} has no member")]
    Empty(String),
    /// A remote call through the group failed.
    #[error("node {node}: {error}")]
    Remote {
        /// The node called.
        node: String,
        /// What went wrong.
        error: String,
    },
}

/// What a handler run by [`Groups::node_rpc`] is given: the group, who called (so the target
/// can monitor the caller), and the arguments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCall<A> {
    /// The group through which it was called.
    pub group: String,
    /// The calling process, if the caller named one.
    pub caller: Option<Pid>,
    /// The arguments.
    pub args: A,
}

/// Why a scope did not start.
#[derive(Debug, thiserror::Error)]
pub enum GroupsStartError {
    /// The scope's service could not be opened (it runs on this node already?).
    #[error("scope {scope}: {source}")]
    Service {
        /// The scope.
        scope: String,
        /// Why.
        source: ServiceError,
    },
}

/// A change to a group, as a subscriber sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupEvent {
    /// `pid` joined `group` (`times` more times).
    Joined {
        /// The group.
        group: String,
        /// The process.
        pid: Pid,
        /// How many joins.
        times: u32,
    },
    /// `pid` left `group` (`times` fewer joins; it left, or its process or node is gone).
    Left {
        /// The group.
        group: String,
        /// The process.
        pid: Pid,
        /// How many leaves.
        times: u32,
    },
    /// The subscriber fell behind its queue: the events since its last one are replaced by
    /// this snapshot of what it follows (group → members), from which events continue.
    Resync(BTreeMap<String, Vec<Pid>>),
}

/// One scope of process groups on this node (see the module docs): cheap to clone.
#[derive(Clone)]
pub struct Groups {
    inner: Arc<GroupsInner>,
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups").field("scope", &self.inner.scope).finish()
    }
}

struct GroupsInner {
    scope: String,
    node: Node,
    runtime: Runtime,
    map: Replicated<(String, Pid), u32, Index>,
    /// Local members with a watch (their memberships go when they exit).
    watched: Mutex<BTreeSet<Pid>>,
    /// State of `pick`'s generator.
    picks: AtomicU64,
}

impl Groups {
    /// Starts the default scope on `node`.
    ///
    /// # Errors
    ///
    /// [`GroupsStartError::Service`] if it runs here already.
    pub async fn start(node: &Node, config: GroupsConfig) -> Result<Groups, GroupsStartError> {
        Self::start_scope(node, DEFAULT_SCOPE, config).await
    }

    /// Starts the scope `scope` on `node`: an independent namespace of groups, replicated on
    /// its own (a busy scope does not slow another), among the nodes that run it.
    ///
    /// # Errors
    ///
    /// [`GroupsStartError::Service`] if it runs here already.
    pub async fn start_scope(
        node: &Node,
        scope: &str,
        config: GroupsConfig,
    ) -> Result<Groups, GroupsStartError> {
        let replicated = ReplicatedConfig { sync_every: config.sync_every, ..Default::default() };
        let index = Index {
            groups: BTreeMap::new(),
            subscribers: Vec::new(),
            queue: config.subscription_queue,
        };
        let service = format!("shoal.groups.{scope}");
        let map =
            Replicated::start(node, &service, next_run(node.incarnation()), replicated, index)
                .await
                .map_err(|source| GroupsStartError::Service { scope: scope.to_owned(), source })?;
        let seed = shoal_process::NodeId::from_name(node.name()).as_u64();
        let inner = GroupsInner {
            scope: scope.to_owned(),
            node: node.clone(),
            runtime: node.runtime().clone(),
            map,
            watched: Mutex::new(BTreeSet::new()),
            picks: AtomicU64::new(seed | 1),
        };
        Ok(Groups { inner: Arc::new(inner) })
    }

    /// The scope's name.
    pub fn scope(&self) -> &str {
        &self.inner.scope
    }

    /// `pid`, a process of this node, joins `group` (once more, if it is a member already: it
    /// must then leave as often). Seen by this node's reads when it returns, by the others'
    /// soon after. The membership goes when the process exits.
    ///
    /// # Errors
    ///
    /// [`GroupsError::Name`], [`GroupsError::NotLocal`], [`GroupsError::NoProc`].
    pub fn join(&self, group: &str, pid: Pid) -> Result<(), GroupsError> {
        self.join_many(group, &[pid])
    }

    /// Each of `pids` joins `group` once (one replicated change for all).
    ///
    /// # Errors
    ///
    /// As for [`Groups::join`]; nobody joins if one is refused.
    pub fn join_many(&self, group: &str, pids: &[Pid]) -> Result<(), GroupsError> {
        let group = RegistryKey::new(group)?.to_string();
        for &pid in pids {
            self.check_local(pid)?;
        }
        let changes = self.inner.map.with(|shared| {
            let own = shared.replica.own();
            let mut counts: BTreeMap<Pid, u32> = BTreeMap::new();
            for &pid in pids {
                let count = counts
                    .entry(pid)
                    .or_insert_with(|| own.get(&(group.clone(), pid)).copied().unwrap_or(0));
                *count += 1;
            }
            counts
                .into_iter()
                .map(|(pid, count)| ((group.clone(), pid), Some(count)))
                .collect::<Vec<_>>()
        });
        self.inner.map.set(changes);
        for &pid in pids {
            self.watch(pid);
        }
        Ok(())
    }

    /// `pid` leaves `group` once.
    ///
    /// # Errors
    ///
    /// [`GroupsError::Name`], [`GroupsError::NotLocal`], [`GroupsError::NotMember`].
    pub fn leave(&self, group: &str, pid: Pid) -> Result<(), GroupsError> {
        let group = RegistryKey::new(group)?.to_string();
        if pid.node() != self.inner.runtime.node() {
            return Err(GroupsError::NotLocal(pid));
        }
        let key = (group.clone(), pid);
        let count = self.inner.map.with(|shared| shared.replica.own().get(&key).copied());
        let Some(count) = count else { return Err(GroupsError::NotMember { group, pid }) };
        self.inner.map.set(vec![(key, (count > 1).then(|| count - 1))]);
        Ok(())
    }

    /// The members of `group` across the cluster, as this node sees them now: a process
    /// appears once per join, in pid order. No network: a read of this node's index.
    pub fn members(&self, group: &str) -> Arc<[Pid]> {
        self.inner.map.with(|shared| {
            shared.observer.groups.get(group).map_or_else(|| Arc::from([]), GroupIndex::members)
        })
    }

    /// The members of `group` that run on this node.
    pub fn local_members(&self, group: &str) -> Vec<Pid> {
        let node = self.inner.runtime.node();
        self.members(group).iter().copied().filter(|pid| pid.node() == node).collect()
    }

    /// The nodes that have a member of `group` (Distribunator's `all_nodes_of`), sorted.
    pub fn member_nodes(&self, group: &str) -> Vec<String> {
        self.inner.map.with(|shared| {
            shared
                .observer
                .groups
                .get(group)
                .map_or_else(Vec::new, |index| index.nodes.keys().cloned().collect())
        })
    }

    /// One member of `group` picked at random (Distribunator's `pid_of`), each process as
    /// likely as its joins make it.
    pub fn pick(&self, group: &str) -> Option<Pid> {
        let members = self.members(group);
        if members.is_empty() {
            return None;
        }
        let draw = self.draw();
        Some(members[(draw % members.len() as u64) as usize])
    }

    /// One member of `group` by a stable rule: the lowest pid (ordered by node id, then
    /// incarnation, then local number). Every node that sees the same members picks the same.
    pub fn first(&self, group: &str) -> Option<Pid> {
        self.members(group).first().copied()
    }

    /// The groups with at least one member, sorted.
    pub fn groups(&self) -> Vec<String> {
        self.inner.map.with(|shared| shared.observer.groups.keys().cloned().collect())
    }

    /// How many groups and memberships this node sees now, and how many of the memberships
    /// are its own processes'. Counts every membership of the scope: for a sampler on a tick,
    /// not for a hot path.
    pub fn stats(&self) -> GroupsStats {
        let me = self.inner.runtime.node();
        self.inner.map.with(|shared| {
            let mut stats = GroupsStats::default();
            for index in shared.observer.groups.values() {
                let members = index.members();
                stats.groups += 1;
                stats.members += members.len() as u64;
                stats.local_members += members.iter().filter(|pid| pid.node() == me).count() as u64;
            }
            stats
        })
    }

    /// Every group with its members (Distribunator's `registry`).
    pub fn all(&self) -> BTreeMap<String, Vec<Pid>> {
        self.inner.map.with(|shared| {
            shared
                .observer
                .groups
                .iter()
                .map(|(group, index)| (group.clone(), index.members().to_vec()))
                .collect()
        })
    }

    /// Follows the joins and leaves of `group` (or of every group of the scope, for `None`),
    /// from a snapshot of its members now; see [`Subscription`].
    pub fn subscribe(&self, group: Option<&str>) -> Subscription {
        let (sender, receiver) = mpsc::channel(self.inner.map.with(|shared| shared.observer.queue));
        let lagged = Arc::new(AtomicBool::new(false));
        let group = group.map(str::to_owned);
        let snapshot = self.inner.map.with_mut(|shared| {
            let snapshot = shared.observer.snapshot(group.as_deref());
            shared.observer.subscribers.push(Subscriber {
                group: group.clone(),
                sender,
                lagged: lagged.clone(),
            });
            snapshot
        });
        Subscription { groups: self.clone(), group, receiver, lagged, snapshot: Some(snapshot) }
    }

    /// Casts `message` to one member of `group`, picked at random.
    ///
    /// # Errors
    ///
    /// [`GroupsError::Empty`] without members; otherwise the cast's own error, as a
    /// [`SendError`] in the `Err` of the outer result's `Ok`.
    pub async fn cast_one<M>(
        &self,
        group: &str,
        message: M,
    ) -> Result<Result<(), SendError<M>>, GroupsError>
    where
        M: Serialize + Send + 'static,
    {
        let Some(pid) = self.pick(group) else { return Err(GroupsError::Empty(group.to_owned())) };
        Ok(self.inner.runtime.cast(pid, message).await)
    }

    /// Casts `message` to every member of `group` (once per process, however often it
    /// joined); the number of processes it was sent to (a member that is gone is skipped).
    pub async fn cast_all<M>(&self, group: &str, message: M) -> usize
    where
        M: Serialize + Clone + Send + 'static,
    {
        self.cast_to(self.members(group), message).await
    }

    /// Casts `message` to the members of `group` on node `node`; the number sent to.
    pub async fn cast_on_node<M>(&self, group: &str, node: &str, message: M) -> usize
    where
        M: Serialize + Clone + Send + 'static,
    {
        let node = shoal_process::NodeId::from_name(node);
        let members: Vec<Pid> =
            self.members(group).iter().copied().filter(|pid| pid.node() == node).collect();
        self.cast_to(members.into(), message).await
    }

    /// Calls one member of `group`, picked at random, and waits up to `timeout`.
    ///
    /// # Errors
    ///
    /// [`GroupsError::Empty`] without members; the call's own error inside.
    pub async fn call_one<Q, R>(
        &self,
        group: &str,
        request: Q,
        timeout: Duration,
    ) -> Result<Result<R, CallError>, GroupsError>
    where
        Q: Serialize + Send + 'static,
        R: DeserializeOwned + Send + 'static,
    {
        let Some(pid) = self.pick(group) else { return Err(GroupsError::Empty(group.to_owned())) };
        Ok(self.inner.runtime.call(pid, request, timeout).await)
    }

    /// Distribunator's `node_rpc`: runs the RPC handler `handler` (registered with
    /// [`Node::register_rpc`], taking a [`GroupCall<A>`]) on the node of the group's first
    /// member (the lowest pid, [`Groups::first`]), with `caller` available to it so that it can
    /// monitor the caller; and, if `then` names a handler there, runs that one with the first
    /// one's result on the same node before the answer comes back (Distribunator's callback).
    ///
    /// # Errors
    ///
    /// [`GroupsError::Empty`] without members, [`GroupsError::Remote`] if the call failed.
    pub async fn node_rpc<A, R>(
        &self,
        group: &str,
        handler: &str,
        args: A,
        then: Option<&str>,
        caller: Option<Pid>,
        timeout: Duration,
    ) -> Result<R, GroupsError>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        let Some(first) = self.first(group) else {
            return Err(GroupsError::Empty(group.to_owned()));
        };
        let node = &self.inner.node;
        let target = if first.node() == node.id() {
            node.name().to_owned()
        } else {
            node.node_name(first).ok_or_else(|| GroupsError::Remote {
                node: first.node().to_string(),
                error: "not connected".into(),
            })?
        };
        let call = GroupCall { group: group.to_owned(), caller, args };
        let answered = match then {
            Some(then) => node.rpc_then(&target, handler, &call, then, timeout).await,
            None => node.rpc(&target, handler, &call, timeout).await,
        };
        answered.map_err(|error| GroupsError::Remote { node: target, error: error.to_string() })
    }

    /// Has the local process `pid` told of the joins and leaves of `group` (or of the whole
    /// scope, for `None`): each [`GroupEvent`] is cast to it (so its messages must be
    /// `GroupEvent`s), the snapshot first as a [`GroupEvent::Resync`]. It ends when the
    /// process exits.
    ///
    /// # Errors
    ///
    /// [`GroupsError::NotLocal`] or [`GroupsError::NoProc`].
    pub fn subscribe_process(&self, group: Option<&str>, pid: Pid) -> Result<(), GroupsError> {
        self.check_local(pid)?;
        let mut subscription = self.subscribe(group);
        let runtime = self.inner.runtime.clone();
        let exited = runtime.watch(pid);
        tokio::spawn(async move {
            let snapshot = subscription.snapshot().unwrap_or_default();
            let mut next = Some(GroupEvent::Resync(snapshot));
            let forward = async {
                while let Some(event) = next.take() {
                    if runtime.cast(pid, event).await.is_err() {
                        return;
                    }
                    next = subscription.next().await;
                }
            };
            tokio::select! {
                biased;
                _ = exited => {}
                () = forward => {}
            }
        });
        Ok(())
    }

    /// Stops the scope on this node: the other nodes running it are told, and drop this
    /// node's members (a node out of reach drops them when it sees this node down).
    pub async fn stop(&self) {
        self.inner.map.stop().await;
    }

    /// Replication messages dropped for a full send queue (repaired by anti-entropy).
    pub fn dropped(&self) -> u64 {
        self.inner.map.dropped()
    }

    async fn cast_to<M>(&self, members: Arc<[Pid]>, message: M) -> usize
    where
        M: Serialize + Clone + Send + 'static,
    {
        let distinct: BTreeSet<Pid> = members.iter().copied().collect();
        let mut sent = 0;
        for pid in distinct {
            if self.inner.runtime.cast(pid, message.clone()).await.is_ok() {
                sent += 1;
            }
        }
        sent
    }

    fn check_local(&self, pid: Pid) -> Result<(), GroupsError> {
        if pid.node() != self.inner.runtime.node() {
            return Err(GroupsError::NotLocal(pid));
        }
        if !self.inner.runtime.is_alive(pid) {
            return Err(GroupsError::NoProc(pid));
        }
        Ok(())
    }

    /// Watches local member `pid` (once): when it exits, its memberships go.
    fn watch(&self, pid: Pid) {
        if !self.inner.watched.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(pid)
        {
            return;
        }
        let groups = Arc::downgrade(&self.inner);
        let watch = self.inner.runtime.watch(pid);
        tokio::spawn(async move {
            watch.await;
            let Some(inner) = groups.upgrade() else { return };
            inner.watched.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&pid);
            let gone: Vec<((String, Pid), Option<u32>)> = inner.map.with(|shared| {
                shared
                    .replica
                    .own()
                    .keys()
                    .filter(|(_, member)| *member == pid)
                    .map(|key| (key.clone(), None))
                    .collect()
            });
            if !gone.is_empty() {
                inner.map.set(gone);
            }
        });
    }

    /// The next draw of `pick`'s generator (splitmix64 over a counter seeded by the node's
    /// name: no global randomness, so a simulation replays).
    fn draw(&self) -> u64 {
        let mut z = self.inner.picks.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A subscription to a scope's or one group's joins and leaves ([`Groups::subscribe`]).
///
/// It starts with the snapshot (group → members) taken when it was made; then every change,
/// in the order each originating node made them. Its queue is bounded: a subscriber that
/// falls behind is not left with a silent gap, but given [`GroupEvent::Resync`], a fresh
/// snapshot, once it has read what was queued.
pub struct Subscription {
    groups: Groups,
    group: Option<String>,
    receiver: mpsc::Receiver<GroupEvent>,
    lagged: Arc<AtomicBool>,
    snapshot: Option<BTreeMap<String, Vec<Pid>>>,
}

impl Subscription {
    /// The snapshot the subscription started from (once; `None` after).
    pub fn snapshot(&mut self) -> Option<BTreeMap<String, Vec<Pid>>> {
        self.snapshot.take()
    }

    /// The next event (`None` once the scope stopped).
    pub async fn next(&mut self) -> Option<GroupEvent> {
        if let Ok(event) = self.receiver.try_recv() {
            return Some(event);
        }
        if self.lagged.load(Ordering::Acquire) {
            return Some(self.resync());
        }
        let event = self.receiver.recv().await;
        if event.is_none() && self.lagged.load(Ordering::Acquire) {
            return Some(self.resync());
        }
        event
    }

    fn resync(&mut self) -> GroupEvent {
        let group = self.group.clone();
        let (lagged, receiver) = (&self.lagged, &mut self.receiver);
        GroupEvent::Resync(self.groups.inner.map.with_mut(|shared| {
            // Under the lock nothing is sent: what is queued is older than the snapshot.
            while receiver.try_recv().is_ok() {}
            lagged.store(false, Ordering::Release);
            shared.observer.snapshot(group.as_deref())
        }))
    }
}

/// The index of a scope's groups, kept by the replicated map's observer.
struct Index {
    groups: BTreeMap<String, GroupIndex>,
    subscribers: Vec<Subscriber>,
    queue: usize,
}

struct GroupIndex {
    counts: BTreeMap<Pid, u32>,
    /// Members per node name.
    nodes: BTreeMap<String, usize>,
    members: OnceLock<Arc<[Pid]>>,
}

impl GroupIndex {
    fn members(&self) -> Arc<[Pid]> {
        self.members
            .get_or_init(|| {
                self.counts
                    .iter()
                    .flat_map(|(pid, count)| std::iter::repeat_n(*pid, *count as usize))
                    .collect()
            })
            .clone()
    }
}

struct Subscriber {
    group: Option<String>,
    sender: mpsc::Sender<GroupEvent>,
    lagged: Arc<AtomicBool>,
}

impl Index {
    fn snapshot(&self, group: Option<&str>) -> BTreeMap<String, Vec<Pid>> {
        self.groups
            .iter()
            .filter(|(name, _)| group.is_none_or(|group| group == name.as_str()))
            .map(|(name, index)| (name.clone(), index.members().to_vec()))
            .collect()
    }

    fn tell(&mut self, group: &str, event: GroupEvent) {
        self.subscribers.retain(|subscriber| !subscriber.sender.is_closed());
        for subscriber in &self.subscribers {
            if subscriber.group.as_deref().is_some_and(|wanted| wanted != group)
                || subscriber.lagged.load(Ordering::Acquire)
            {
                continue;
            }
            if subscriber.sender.try_send(event.clone()).is_err() {
                subscriber.lagged.store(true, Ordering::Release);
            }
        }
    }
}

impl ReplicaObserver<(String, Pid), u32> for Index {
    fn changed(&mut self, origin: &str, (group, pid): &(String, Pid), value: Option<&u32>) {
        let after = value.copied().unwrap_or(0);
        let index = self.groups.entry(group.clone()).or_insert_with(|| GroupIndex {
            counts: BTreeMap::new(),
            nodes: BTreeMap::new(),
            members: OnceLock::new(),
        });
        let before = index.counts.get(pid).copied().unwrap_or(0);
        if after == before {
            return;
        }
        if after == 0 {
            index.counts.remove(pid);
        } else {
            index.counts.insert(*pid, after);
        }
        let on_node = index.nodes.entry(origin.to_owned()).or_insert(0);
        match (before, after) {
            (0, _) => *on_node += 1,
            (_, 0) => *on_node -= 1,
            _ => {}
        }
        if *on_node == 0 {
            index.nodes.remove(origin);
        }
        index.members = OnceLock::new();
        if index.counts.is_empty() {
            self.groups.remove(group);
        }
        let event = if after > before {
            GroupEvent::Joined { group: group.clone(), pid: *pid, times: after - before }
        } else {
            GroupEvent::Left { group: group.clone(), pid: *pid, times: before - after }
        };
        self.tell(group, event);
    }
}
