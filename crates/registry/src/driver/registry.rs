//! [`Registry`], the handle, and what every part of the service shares: the node, the store of
//! records, this node's lease as the lease task publishes it, and the local state (the peers
//! running the registry, the name cache, the names hosted here, the locks held and awaited
//! here). `host.rs` runs the lease and takeovers, `names.rs` names, `locks.rs` locks.
//!
//! Nodes of the registry speak through one RPC, `shoal.registry` ([`Request`]): a hello that
//! compares acceptor sets, a request to host a name, the news that a lock was handed to a
//! waiter, and a listing of what a node hosts and holds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shoal_paxos::{Entry, Paxos};
use shoal_process::{Addr, Clock, Context, Pid, Process, Ref, Runtime, Signal};
use shoal_transport::{Node, NodeEvent};
use tokio::sync::{oneshot, watch};

use crate::core::{LeaseConfig, NameRestart, RegistryKey};
use crate::driver::error::WireError;
use crate::driver::records::{LockHolder, Store};
use crate::driver::stats::Counters;
use crate::{RegistryError, RegistryStartError, RegistryStats};

/// The name of the registry's RPC on every node.
pub(crate) const RPC: &str = "shoal.registry";

/// How the registry of a node is set up. Every node must run it over the same Paxos acceptor
/// set (checked when nodes meet) and should give it the same lease settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RegistryConfig {
    /// The host lease's timing, and the drift and stop assumptions under which at most one
    /// process per name runs (see [`LeaseConfig`]).
    pub lease: LeaseConfig,
    /// How long `whereis` (and a cast or call through a name) waits in all for the name's
    /// process: a start, a host's lease to end, a quorum (default 15 s, more than the
    /// default lease's claim wait).
    pub resolve_timeout: Duration,
    /// How long a node waits for another to answer a request to host a name (default 5 s).
    pub ask_timeout: Duration,
    /// How long to wait before looking again at a name that another node is starting, or a
    /// write that found no quorum (default 20 ms).
    pub retry_every: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            lease: LeaseConfig::default(),
            resolve_timeout: Duration::from_secs(15),
            ask_timeout: Duration::from_secs(5),
            retry_every: Duration::from_millis(20),
        }
    }
}

/// Cluster-wide names and locks on one node: the handle (cheap to clone). See the crate docs.
#[derive(Clone)]
pub struct Registry {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("node", &self.inner.me).finish()
    }
}

/// This node's lease, as the lease task publishes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LeaseView {
    /// The epoch it runs under (0 before the first).
    pub(crate) epoch: u64,
    /// Until when names may run and locks be held under it (`None`: not valid).
    pub(crate) valid_until: Option<Instant>,
}

/// A name's cached pid on this node, shared by every handle to the name.
#[derive(Debug, Default)]
pub(crate) struct Slot(std::sync::RwLock<Option<Pid>>);

impl Slot {
    pub(crate) fn get(&self) -> Option<Pid> {
        *self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn set(&self, pid: Option<Pid>) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = pid;
    }

    /// Empties the slot if it holds `pid`.
    pub(crate) fn forget(&self, pid: Pid) {
        let mut slot = self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if *slot == Some(pid) {
            *slot = None;
        }
    }
}

/// A name this node hosts: the start it runs, and its process once started.
#[derive(Clone, Debug)]
pub(crate) struct Hosted {
    pub(crate) token: u64,
    pub(crate) pid: Option<Pid>,
    pub(crate) restart: NameRestart,
    pub(crate) meta: Vec<u8>,
    /// Stopped when the lease lapsed: freed or restarted once it is valid again.
    pub(crate) lapsed: bool,
}

/// A lock held by a process of this node.
#[derive(Clone, Debug)]
pub(crate) struct HeldLock {
    pub(crate) token: u64,
    pub(crate) count: u32,
    pub(crate) waiters: usize,
}

/// What the parts of the service share on this node. Ordered maps only: what is done for each
/// entry in turn (stopping hosted processes, say) happens in the same order on every run, so
/// a simulated run replays by its seed.
#[derive(Default)]
pub(crate) struct State {
    /// Peers running the registry over the same acceptors (this node not included).
    pub(crate) members: BTreeSet<String>,
    /// The registry's claims on its members' connections, so that a transport that closes
    /// idle connections (managed membership) keeps them: a member's loss means a failure.
    pub(crate) keeps: BTreeMap<String, shoal_transport::KeepConnection>,
    /// Peers running it over other acceptors: never asked to host anything.
    pub(crate) mismatched: BTreeMap<String, Vec<String>>,
    pub(crate) cache: BTreeMap<RegistryKey, Arc<Slot>>,
    pub(crate) hosted: BTreeMap<RegistryKey, Hosted>,
    /// The permanent names in this node's index register for its epoch.
    pub(crate) indexed: (u64, BTreeSet<RegistryKey>),
    /// One start at a time per name on this host.
    pub(crate) starting: BTreeMap<RegistryKey, Arc<tokio::sync::Mutex<()>>>,
    pub(crate) held: BTreeMap<(RegistryKey, Pid), HeldLock>,
    /// Local waiters for locks, told their token when the lock is handed to them.
    pub(crate) waiting: BTreeMap<(RegistryKey, Pid), oneshot::Sender<u64>>,
    /// Watches of local lock holders and waiters, aborted once they neither hold nor wait.
    pub(crate) watched: BTreeMap<(RegistryKey, Pid), tokio::task::AbortHandle>,
    /// What this node knows of other hosts' leases: the latest epoch seen, and whether it
    /// ended. An epoch below the latest is over (its host started again).
    pub(crate) leases: BTreeMap<String, (u64, bool)>,
    /// Hosts that went away: the takeover watches their leases.
    pub(crate) suspects: BTreeSet<String>,
    /// The (host, epoch) leases whose permanent names this node recovered (or is recovering).
    pub(crate) recovered: BTreeSet<(String, u64)>,
}

pub(crate) struct Inner {
    pub(crate) node: Node,
    pub(crate) runtime: Runtime,
    pub(crate) clock: Clock,
    pub(crate) store: Store,
    pub(crate) config: RegistryConfig,
    pub(crate) me: String,
    /// The acceptor set's version and names when the registry started, sorted.
    pub(crate) acceptors: (u64, Vec<String>),
    pub(crate) state: Mutex<State>,
    pub(crate) lease: watch::Sender<LeaseView>,
    /// Bumped whenever a lock's holder may have changed without a notice to its waiters
    /// here (a node went down or came back, a lease ended): they look again.
    pub(crate) locks_changed: watch::Sender<u64>,
    /// Bumped when the takeover has a new suspect.
    pub(crate) suspected: watch::Sender<u64>,
    pub(crate) stop: watch::Sender<bool>,
    /// Lookups and lock acquisitions, counted ([`Registry::stats`]).
    pub(crate) counters: Counters,
    agent: Addr<Agent>,
}

/// A request from one node's registry to another's.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// "I, node `from`, run the registry over these acceptors (configuration `version`)."
    Hello { from: String, version: u64, acceptors: Vec<String> },
    /// "Host this name, unless it runs" (with what the asker read in its register).
    Start { name: RegistryKey, spec: Vec<u8>, restart: NameRestart, seen: Option<Option<Entry>> },
    /// "Your process `pid` now holds lock `key` with `token`."
    Handed { key: RegistryKey, pid: Pid, token: u64 },
    /// "What do you host and hold?"
    List,
    /// "Which process is registered as `name` on your node?" (a node-local name)
    Local { name: String },
    /// "`name` is no longer `pid`'s (it was unregistered): forget it if you cached it."
    Forget { name: RegistryKey, pid: Pid },
    /// "I, node `from`, stopped the registry: my lease `epoch` is over."
    Bye { from: String, epoch: u64 },
}

/// The answers, in the same order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    Hello { version: u64, acceptors: Vec<String> },
    Started(Result<Hosting, WireError>),
    Handed,
    List(Listing),
    Local(Option<Pid>),
    Done,
}

/// Where a name runs, as its host answers a request to start it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Hosting {
    /// It runs (or now runs) here as this process.
    Running(Pid),
    /// The name is another host's.
    Elsewhere(String),
}

/// What names and locks a registry shows ([`Registry::list`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// The names hosted, by name.
    pub names: Vec<NameInfo>,
    /// The locks held, by key.
    pub locks: Vec<LockInfo>,
    /// Members that did not answer (what they host is missing).
    pub unreachable: Vec<String>,
}

/// A name and the process that runs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameInfo {
    /// The name.
    pub name: String,
    /// Its host.
    pub host: String,
    /// Its process (`None` while it starts or restarts).
    pub pid: Option<Pid>,
    /// The fencing token of its current start.
    pub token: u64,
    /// Whether it is restarted when it exits.
    pub restart: NameRestart,
    /// The metadata given with it (empty if none).
    pub meta: Vec<u8>,
}

/// A lock and its holder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// The lock's key.
    pub key: String,
    /// The holding process.
    pub holder: Pid,
    /// Its node.
    pub host: String,
    /// The fencing token of the acquisition.
    pub token: u64,
    /// Acquisitions not yet released.
    pub count: u32,
    /// Waiters queued (in [`Registry::list`]: when the holder's node last wrote the lock).
    pub waiters: usize,
}

impl Registry {
    /// Starts the registry on the node of `paxos`: registers its RPC, meets the peers already
    /// connected (refusing to start if one runs over other acceptors), and starts the lease
    /// task, which wins this node's lease (a new epoch) before the node hosts anything.
    ///
    /// # Errors
    ///
    /// A [`RegistryStartError`]; nothing is left running.
    pub async fn start(
        paxos: &Paxos,
        config: RegistryConfig,
    ) -> Result<Registry, RegistryStartError> {
        config.lease.validate()?;
        let node = paxos.node().clone();
        let mut acceptors =
            paxos.acceptors().await.map_err(|_| RegistryStartError::PaxosStopped)?;
        acceptors.1.sort();
        let runtime = node.runtime().clone();
        let me = node.name().to_owned();
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| Inner {
            agent: runtime.spawn(Agent { registry: weak.clone(), watched: BTreeMap::new() }),
            clock: runtime.clock().clone(),
            node: node.clone(),
            runtime: runtime.clone(),
            store: Store::new(paxos.clone()),
            config,
            me: me.clone(),
            acceptors,
            state: Mutex::new(State::default()),
            counters: Counters::default(),
            lease: watch::Sender::new(LeaseView::default()),
            locks_changed: watch::Sender::new(0),
            suspected: watch::Sender::new(0),
            stop: watch::Sender::new(false),
        });
        let weak = Arc::downgrade(&inner);
        let registered = node.register_rpc(RPC, move |request: Request| {
            let registry = weak.upgrade();
            async move {
                match registry {
                    Some(registry) => Some(registry.serve(request).await),
                    None => None,
                }
            }
        });
        if !registered {
            inner.runtime.kill(inner.agent.pid());
            return Err(RegistryStartError::AlreadyRunning(me));
        }
        // Subscribe before meeting the peers, so none that connects meanwhile is missed.
        let events = node.subscribe();
        for peer in node.nodes() {
            if let Err(error @ RegistryError::AcceptorMismatch { .. }) = inner.hello(&peer).await {
                inner.shut_down().await;
                return Err(RegistryStartError::AcceptorMismatch(error));
            }
        }
        tokio::spawn(crate::driver::host::lease_task(inner.clone()));
        tokio::spawn(crate::driver::host::takeover_task(inner.clone()));
        tokio::spawn(events_task(Arc::downgrade(&inner), events, inner.stop.subscribe()));
        Ok(Registry { inner })
    }

    /// The node this registry runs on.
    pub fn node(&self) -> &Node {
        &self.inner.node
    }

    /// The peers running the registry over the same acceptors, as this node sees them now
    /// (this node not included).
    pub fn members(&self) -> Vec<String> {
        self.inner.lock_state().members.iter().cloned().collect()
    }

    /// Peers that run the registry over other acceptors than this node, with their set: a
    /// misconfiguration (they are never asked to host a name).
    pub fn mismatched(&self) -> BTreeMap<String, Vec<String>> {
        self.inner.lock_state().mismatched.clone()
    }

    /// Whether this node holds its lease now (it may host names and hold locks).
    pub fn holds_lease(&self) -> bool {
        self.inner.valid_epoch().is_some()
    }

    /// Waits until this node holds its lease, at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`RegistryError::NoLease`] if it does not by then.
    pub async fn ready(&self, timeout: Duration) -> Result<(), RegistryError> {
        let until = self.inner.now() + timeout;
        self.inner.wait_lease(until).await.map(|_| ())
    }

    /// Every name hosted and lock held across the registry's members, asked of each
    /// (members that do not answer are listed as unreachable), sorted by name and key.
    pub async fn list(&self) -> Listing {
        let mut listing = self.inner.local_listing();
        let members = self.members();
        for member in members {
            let asked = self
                .inner
                .node
                .rpc::<Request, Option<Reply>>(
                    &member,
                    RPC,
                    &Request::List,
                    self.inner.config.ask_timeout,
                )
                .await;
            match asked {
                Ok(Some(Reply::List(theirs))) => {
                    listing.names.extend(theirs.names);
                    listing.locks.extend(theirs.locks);
                }
                _ => listing.unreachable.push(member),
            }
        }
        listing.names.sort_by(|a, b| a.name.cmp(&b.name));
        listing.locks.sort_by(|a, b| a.key.cmp(&b.key));
        listing
    }

    /// What this node's registry counted (lookups from the cache and not, lock acquisitions
    /// and waits) and holds now (names hosted and cached, locks held). Reads atomics and, for
    /// the gauges, takes the registry's state lock briefly: for a sampler on a tick, not for a
    /// hot path.
    pub fn stats(&self) -> RegistryStats {
        let mut stats = self.inner.counters.snapshot();
        let state = self.inner.lock_state();
        stats.names = state.hosted.len() as u64;
        stats.cached_names =
            state.cache.values().filter(|slot| slot.get().is_some()).count() as u64;
        stats.locks_held = state.held.len() as u64;
        stats
    }

    /// Stops the registry on this node: the processes of the names it hosts stop (reason
    /// [`LEASE_ENDED`](crate::LEASE_ENDED)), its lease is ended in its register so that other
    /// nodes take its permanent names over at once rather than after the claim wait, and its
    /// RPC closes.
    pub async fn stop(&self) {
        self.inner.shut_down().await;
    }
}

impl Inner {
    pub(crate) fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Now, on this node's clock (as the cores take it).
    pub(crate) fn now(&self) -> Instant {
        self.clock.now().into_std()
    }

    /// Sleeps until `at` on this node's clock.
    pub(crate) async fn sleep_until(&self, at: Instant) {
        self.clock.sleep_until(at.into()).await;
    }

    /// The epoch this node's lease runs under, if it is valid now.
    pub(crate) fn valid_epoch(&self) -> Option<u64> {
        let view = *self.lease.borrow();
        view.valid_until.is_some_and(|until| self.now() < until).then_some(view.epoch)
    }

    /// Waits until this node's lease is valid (until `until` at most).
    pub(crate) async fn wait_lease(&self, until: Instant) -> Result<u64, RegistryError> {
        let mut view = self.lease.subscribe();
        loop {
            if *self.stop.borrow() {
                return Err(RegistryError::Stopped);
            }
            if let Some(epoch) = self.valid_epoch() {
                return Ok(epoch);
            }
            tokio::select! {
                biased;
                changed = view.changed() => if changed.is_err() { return Err(RegistryError::Stopped) },
                () = self.sleep_until(until) => return Err(RegistryError::NoLease),
            }
        }
    }

    /// Whether `host` is this node or a member it reaches now.
    pub(crate) fn reachable(&self, host: &str) -> bool {
        host == self.me || self.lock_state().members.contains(host)
    }

    /// This node and the members: the hosts a name may start on.
    pub(crate) fn hosts(&self) -> Vec<String> {
        let state = self.lock_state();
        std::iter::once(self.me.clone()).chain(state.members.iter().cloned()).collect()
    }

    /// The shared cache slot of `name`.
    pub(crate) fn slot(&self, name: &RegistryKey) -> Arc<Slot> {
        self.lock_state().cache.entry(name.clone()).or_default().clone()
    }

    /// Caches `pid` for `name` and watches it, so the entry goes when the process does.
    pub(crate) fn cache(&self, name: &RegistryKey, slot: &Slot, pid: Pid) {
        slot.set(Some(pid));
        if self.agent.try_cast(AgentMessage::Watch(pid, name.clone())).is_err() {
            // The agent cannot watch it: do not trust the entry beyond this answer.
            slot.forget(pid);
        }
    }

    /// `pid` of `name` is gone: forget it here.
    pub(crate) fn forget(&self, name: &RegistryKey, pid: Pid) {
        let mut state = self.lock_state();
        if let Some(slot) = state.cache.get(name) {
            slot.forget(pid);
            if Arc::strong_count(slot) == 1 {
                state.cache.remove(name);
            }
        }
    }

    /// Whether `host`'s lease epoch `epoch` is over, reading its register if what this node
    /// knows does not say. Once over, it stays over.
    /// An epoch found over has its permanent names recovered (once per node).
    pub(crate) async fn epoch_over(
        self: &Arc<Self>,
        host: &str,
        epoch: u64,
    ) -> Result<bool, RegistryError> {
        if self.known_over(host, epoch) {
            return Ok(true);
        }
        let key = crate::driver::records::lease_key(host);
        let (_, record) = self.store.read::<crate::core::LeaseRecord>(&key).await?;
        let Some(record) = record else { return Ok(true) };
        self.learn_lease(host, record.epoch, record.ended);
        let over = self.known_over(host, epoch);
        if over {
            crate::driver::host::recover_once(self, host, epoch);
        }
        Ok(over)
    }

    pub(crate) fn known_over(&self, host: &str, epoch: u64) -> bool {
        if host == self.me {
            return self.lease.borrow().epoch > epoch;
        }
        match self.lock_state().leases.get(host) {
            Some((latest, ended)) => *latest > epoch || (*latest == epoch && *ended),
            None => false,
        }
    }

    pub(crate) fn learn_lease(&self, host: &str, epoch: u64, ended: bool) {
        let mut state = self.lock_state();
        let known = state.leases.entry(host.to_owned()).or_insert((epoch, ended));
        if epoch > known.0 || (epoch == known.0 && ended) {
            *known = (epoch, ended);
        }
    }

    /// `host` went away: the takeover watches its lease.
    pub(crate) fn suspect(&self, host: &str) {
        if host != self.me && self.lock_state().suspects.insert(host.to_owned()) {
            self.suspected.send_modify(|n| *n += 1);
        }
    }

    /// The acceptor set this node's Paxos runs now, sorted, and its configuration's version
    /// (the set it started with if Paxos has stopped).
    async fn acceptor_set(&self) -> (u64, Vec<String>) {
        match self.store.paxos().acceptors().await {
            Ok((version, mut acceptors)) => {
                acceptors.sort();
                (version, acceptors)
            }
            Err(_) => self.acceptors.clone(),
        }
    }

    /// Says hello to `peer`'s registry: a member if it runs over the same acceptors.
    async fn hello(&self, peer: &str) -> Result<(), RegistryError> {
        let (version, acceptors) = self.acceptor_set().await;
        let request = Request::Hello { from: self.me.clone(), version, acceptors };
        let asked = self
            .node
            .rpc::<Request, Option<Reply>>(peer, RPC, &request, self.config.ask_timeout)
            .await;
        match asked {
            Ok(Some(Reply::Hello { version, acceptors })) => {
                self.met(peer, (version, acceptors)).await
            }
            // Not running the registry (yet: it says hello when it starts), or gone.
            _ => Ok(()),
        }
    }

    /// `peer` runs the registry over `theirs` (a configuration's version and its acceptors).
    ///
    /// It is the same consensus cluster when both run the same configuration, or, while a
    /// change of the acceptor set rolls out (one acceptor at a time, see `shoal-paxos`),
    /// configurations of different versions that share an acceptor. Two sets of one version
    /// that differ, or sets with no acceptor in common, are two clusters.
    async fn met(&self, peer: &str, theirs: (u64, Vec<String>)) -> Result<(), RegistryError> {
        if !self.node.is_connected(peer) {
            return Ok(());
        }
        let (version, ours) = self.acceptor_set().await;
        let (their_version, mut acceptors) = theirs;
        acceptors.sort();
        let same = if version == their_version {
            acceptors == ours
        } else {
            acceptors.iter().any(|acceptor| ours.contains(acceptor))
        };
        let mut state = self.lock_state();
        if !same {
            state.members.remove(peer);
            state.mismatched.insert(peer.to_owned(), acceptors.clone());
            tracing::error!(%peer, ?ours, theirs = ?acceptors,
                "a peer runs the registry over other acceptors: it is left out");
            return Err(RegistryError::AcceptorMismatch {
                peer: peer.to_owned(),
                ours,
                theirs: acceptors,
            });
        }
        state.mismatched.remove(peer);
        state.members.insert(peer.to_owned());
        state.keeps.entry(peer.to_owned()).or_insert_with(|| self.node.keep(peer));
        state.suspects.remove(peer);
        drop(state);
        self.locks_changed.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Serves a peer's request.
    async fn serve(self: Arc<Self>, request: Request) -> Reply {
        match request {
            Request::Hello { from, version, acceptors } => {
                // A mismatch is logged and kept by `met`; the peer learns it from the answer.
                let _ = self.met(&from, (version, acceptors)).await;
                let (version, acceptors) = self.acceptor_set().await;
                Reply::Hello { version, acceptors }
            }
            Request::Start { name, spec, restart, seen } => {
                let result = self.host_start(&name, &spec, restart, seen).await;
                Reply::Started(result.map_err(|error| error.to_wire()))
            }
            Request::Handed { key, pid, token } => {
                self.handed(&key, pid, token);
                Reply::Handed
            }
            Request::List => Reply::List(self.local_listing()),
            Request::Local { name } => Reply::Local(self.runtime.whereis(&name)),
            Request::Forget { name, pid } => {
                self.forget(&name, pid);
                Reply::Done
            }
            Request::Bye { from, epoch } => {
                self.lock_state().members.remove(&from);
                crate::driver::host::ended(&self, &from, epoch);
                Reply::Done
            }
        }
    }

    /// What this node hosts and holds.
    fn local_listing(&self) -> Listing {
        let state = self.lock_state();
        let names = state
            .hosted
            .iter()
            .map(|(name, hosted)| NameInfo {
                name: name.to_string(),
                host: self.me.clone(),
                pid: hosted.pid,
                token: hosted.token,
                restart: hosted.restart,
                meta: hosted.meta.clone(),
            })
            .collect();
        let locks = state
            .held
            .iter()
            .map(|((key, pid), held)| LockInfo {
                key: key.to_string(),
                holder: *pid,
                host: self.me.clone(),
                token: held.token,
                count: held.count,
                waiters: held.waiters,
            })
            .collect();
        Listing { names, locks, unreachable: Vec::new() }
    }

    /// A lock was handed to local waiter `pid` with `token`.
    pub(crate) fn handed(&self, key: &RegistryKey, pid: Pid, token: u64) {
        if let Some(waiter) = self.lock_state().waiting.remove(&(key.clone(), pid)) {
            let _ = waiter.send(token);
        }
    }

    /// Sends `request` to every member and waits for their answers (a member that does not
    /// answer within the ask timeout is left behind).
    pub(crate) async fn tell_members(&self, request: Request) {
        let members: Vec<String> = self.lock_state().members.iter().cloned().collect();
        let timeout = self.config.ask_timeout;
        let asks = members
            .iter()
            .map(|member| self.node.rpc::<Request, Option<Reply>>(member, RPC, &request, timeout));
        for ask in asks.collect::<Vec<_>>() {
            let _ = ask.await;
        }
    }

    /// Tells `holder`'s node that it was handed lock `key`.
    pub(crate) fn tell_handed(
        self: &Arc<Self>,
        key: &RegistryKey,
        holder: &LockHolder,
        token: u64,
    ) {
        if holder.host == self.me {
            self.handed(key, holder.pid, token);
            return;
        }
        let request = Request::Handed { key: key.clone(), pid: holder.pid, token };
        let (node, host, timeout) =
            (self.node.clone(), holder.host.clone(), self.config.ask_timeout);
        tokio::spawn(async move {
            // Lost if the node is unreachable: its waiter looks again when it is back.
            let _ = node.rpc::<Request, Option<Reply>>(&host, RPC, &request, timeout).await;
        });
    }

    /// Stops the service on this node (see [`Registry::stop`]).
    pub(crate) async fn shut_down(self: &Arc<Self>) {
        if self.stop.send_replace(true) {
            return;
        }
        self.node.unregister_rpc(RPC);
        crate::driver::host::stop_hosting(self, "registry stopped").await;
        let epoch = crate::driver::host::end_own_lease(self).await;
        if let Some(epoch) = epoch {
            // Its members take its permanent names over now, not after the claim wait.
            self.tell_members(Request::Bye { from: self.me.clone(), epoch }).await;
        }
        self.runtime.kill(self.agent.pid());
    }
}

/// Follows node events: meets peers that connect, suspects members that go.
async fn events_task(
    registry: Weak<Inner>,
    mut events: tokio::sync::broadcast::Receiver<NodeEvent>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.changed() => return,
            event = events.recv() => event,
        };
        let Some(inner) = registry.upgrade() else { return };
        match event {
            Ok(NodeEvent::Up { node, .. }) => {
                let inner = inner.clone();
                tokio::spawn(async move {
                    let _ = inner.hello(&node).await;
                });
            }
            Ok(NodeEvent::Down { node, .. }) => {
                let was_member = {
                    let mut state = inner.lock_state();
                    state.keeps.remove(&node);
                    state.members.remove(&node)
                };
                if was_member {
                    inner.suspect(&node);
                }
                inner.locks_changed.send_modify(|n| *n += 1);
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                // Events were missed: meet every connected node again, suspect the rest.
                let connected: BTreeSet<String> = inner.node.nodes().into_iter().collect();
                let gone: Vec<String> = {
                    let mut state = inner.lock_state();
                    let gone = state.members.difference(&connected).cloned().collect::<Vec<_>>();
                    for node in &gone {
                        state.members.remove(node);
                        state.keeps.remove(node);
                    }
                    gone
                };
                for node in gone {
                    inner.suspect(&node);
                }
                for node in connected {
                    let inner = inner.clone();
                    tokio::spawn(async move {
                        let _ = inner.hello(&node).await;
                    });
                }
                inner.locks_changed.send_modify(|n| *n += 1);
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// The process that watches cached pids for this node's name cache: a monitor per pid, and
/// the names cached for it forgotten at its `Down` (its exit, or its node's loss).
struct Agent {
    registry: Weak<Inner>,
    watched: BTreeMap<Pid, (Ref, BTreeSet<RegistryKey>)>,
}

enum AgentMessage {
    Watch(Pid, RegistryKey),
}

impl Process for Agent {
    type Message = AgentMessage;
    type Call = ();
    type Reply = ();

    async fn handle_cast(&mut self, message: AgentMessage, ctx: &mut Context<Self>) {
        let AgentMessage::Watch(pid, name) = message;
        match self.watched.get_mut(&pid) {
            Some((_, names)) => {
                names.insert(name);
            }
            None => {
                let monitor = ctx.monitor(pid);
                self.watched.insert(pid, (monitor, BTreeSet::from([name])));
            }
        }
    }

    async fn handle_signal(&mut self, signal: Signal, _ctx: &mut Context<Self>) {
        if let Signal::Down { pid, .. } = signal
            && let Some((_, names)) = self.watched.remove(&pid)
            && let Some(registry) = self.registry.upgrade()
        {
            for name in names {
                registry.forget(&name, pid);
            }
        }
    }
}
