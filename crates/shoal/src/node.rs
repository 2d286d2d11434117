//! One [`Node`] that starts every layer of Shoal together.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // A cluster of one: names, locks, groups, hubs and supervisors work on it as they are.
//! let first = shoal::Node::start("a").await?;
//!
//! // Another node joins it (the same cluster key, a seed to join through).
//! let key = first.key().clone();
//! let second = shoal::Node::builder("b").key(key).join(first.listen_addr()).start().await?;
//! second.ready().await;
//! let server = second.registry()?.lookup("config-server").await?;
//! # let _ = server;
//! # Ok(()) }
//! ```
//!
//! **What starts.** The runtime and the transport always; then, each when its cargo feature is
//! on and the builder did not turn it off: Paxos, broadcast, the registry (names and locks) and
//! process groups, the hubs and the distributed supervisors given to the builder (more start
//! later with [`Node::start_hub`] and [`Node::start_supervisor`]).
//!
//! **Joining.** [`NodeBuilder::join`] names seeds; [`NodeBuilder::start`] joins one of them,
//! retrying with a growing backoff until [`NodeBuilder::join_timeout`], and only then starts
//! the layers, so that the new node runs Paxos over the cluster's acceptors (it asks the node
//! it joined). A node with no seed founds a cluster of its own, of which it is the only Paxos
//! acceptor: give a restarted node a seed, or it founds a second cluster. A node with seeds
//! that finds itself without a connected peer joins them again.
//!
//! **The acceptors** grow as nodes join, one at a time by `shoal-paxos`'s procedure, to
//! [`NodeBuilder::acceptors`] (3 by default), so the first node does not stay a single point of
//! failure. Each step is claimed by consensus first (a compare-and-set on the register
//! `shoal.node.acceptors`), so no two nodes take different steps of one version; the set is
//! never shrunk by itself (`Paxos::remove_acceptor` is an operator's removal).
//!
//! **Ready** ([`Node::ready`], [`Node::readiness`]) means: joined, a majority of the acceptors
//! reachable, and this node's registry lease held; what an orchestrator waits for before it
//! sends traffic.
//!
//! **Stopping.** [`Node::shutdown`] hands the hubs' children over (hot, within their
//! hand-over deadline), stops every layer and leaves the cluster, so that the others move its
//! children at once; [`Node::abort`] drops every connection and process at once, as a crash
//! would (what recovers after a crash recovers after it).
//!
//! **A node of parts.** [`Node::from_parts`] makes a node of layers started one by one
//! ([`NodeParts`]), for settings the builder does not offer (the `shoal-node` binary's fixed
//! acceptor set); it is then a node as any other.
//!
//! **Seen from a dashboard.** With the `dashboard` feature, every node answers the dashboard's
//! RPC (`shoal::dashboard::RPC`) from its start, whether it serves a page or not, so that it
//! shows in any dashboard's cluster view; [`Node::hub_ids`] and [`Node::supervisor_names`] say
//! which hubs and supervisors to show.
//!
//! It does not (yet) choose the membership by itself: full mesh is the default, and
//! [`NodeBuilder::membership`] picks another.

#[cfg(feature = "paxos")]
mod acceptors;
mod builder;
mod error;
mod parts;

#[cfg(feature = "hub")]
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
#[cfg(feature = "hub")]
use std::sync::Mutex;
use std::time::Duration;

#[cfg(feature = "broadcast")]
use shoal_broadcast::Broadcast;
#[cfg(feature = "hub")]
use shoal_hub::{Hub, HubConfig};
#[cfg(feature = "paxos")]
use shoal_paxos::Paxos;
use shoal_process::Runtime;
#[cfg(feature = "registry")]
use shoal_registry::{Groups, Registry};
#[cfg(all(feature = "hub", feature = "supervisor"))]
use shoal_supervisor::{DistributedSupervisor, DistributedSupervisorConfig};
use shoal_transport::ClusterKey;
use tokio::sync::watch;

pub use builder::NodeBuilder;
pub use error::{NodeError, StartError};
pub use parts::NodeParts;

// The node's handle and errors go between tasks and threads (a build error otherwise); the
// builder goes between tasks.
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    const fn send<T: Send>() {}
    send_and_sync::<Node>();
    send_and_sync::<NodeError>();
    send_and_sync::<StartError>();
    send::<NodeBuilder>();
    send::<NodeParts>();
};

/// The first wait between two attempts to join a seed; it doubles up to [`JOIN_BACKOFF_MAX`].
const JOIN_BACKOFF_MIN: Duration = Duration::from_millis(100);

/// The longest wait between two attempts to join a seed.
const JOIN_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// How often readiness is looked at again.
const READINESS_EVERY: Duration = Duration::from_millis(50);

/// A Shoal node: the runtime, the transport and every layer started over them, as one handle
/// (cheap to clone). See the [module docs](self).
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    transport: shoal_transport::Node,
    key: ClusterKey,
    #[cfg(feature = "paxos")]
    paxos: Option<Paxos>,
    #[cfg(feature = "broadcast")]
    broadcast: Option<Broadcast>,
    #[cfg(feature = "registry")]
    registry: Option<Registry>,
    #[cfg(feature = "registry")]
    groups: Option<Groups>,
    #[cfg(feature = "hub")]
    hubs: Mutex<BTreeMap<String, Hub>>,
    #[cfg(all(feature = "hub", feature = "supervisor"))]
    supervisors: Mutex<BTreeMap<String, DistributedSupervisor>>,
    /// How long [`Node::join`] keeps trying.
    join_timeout: Duration,
    /// When the node was made, in milliseconds since the Unix epoch on its clock.
    #[cfg_attr(not(feature = "dashboard"), allow(dead_code))]
    started_at_ms: u64,
    ready: watch::Receiver<bool>,
    /// True once the node stops: its background tasks end.
    stopping: watch::Sender<bool>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name())
            .field("listen_addr", &self.listen_addr())
            .field("ready", &self.is_ready())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A builder for node `name`, with every layer on (as far as the cargo features go) and
    /// the defaults of each.
    pub fn builder(name: impl Into<String>) -> NodeBuilder {
        NodeBuilder::new(name.into())
    }

    /// A node of layers started one by one ([`NodeParts`]), for settings the builder does not
    /// offer (a fixed Paxos acceptor set, say): from then on it is a node as any other, with
    /// its readiness kept, and [`Node::shutdown`] and [`Node::abort`] stop every part.
    pub fn from_parts(parts: NodeParts) -> Node {
        let (ready_sender, ready) = watch::channel(false);
        Node::from_inner(parts.into_inner(ready), ready_sender)
    }

    /// The node of `inner`, its readiness kept in `ready` from now on. With the `dashboard`
    /// feature, it answers the dashboard's RPC from now on too, so that every node shows in a
    /// dashboard's cluster view.
    fn from_inner(inner: Inner, ready: watch::Sender<bool>) -> Node {
        let node = Node { inner: Arc::new(inner) };
        tokio::spawn(readiness(Arc::downgrade(&node.inner), ready));
        #[cfg(feature = "dashboard")]
        crate::dashboard::answer_summaries(&node);
        node
    }

    /// When the node was made, in milliseconds since the Unix epoch on its clock.
    #[cfg(feature = "dashboard")]
    pub(crate) fn started_at_ms(&self) -> u64 {
        self.inner.started_at_ms
    }

    /// A handle that does not keep the node alive (for a handler the node itself holds).
    #[cfg(feature = "dashboard")]
    pub(crate) fn downgrade(&self) -> WeakNode {
        WeakNode(Arc::downgrade(&self.inner))
    }

    /// Starts node `name` with every default: a cluster of one on a free loopback port, which
    /// others join through [`Node::listen_addr`] with its [key](Node::key).
    ///
    /// # Errors
    ///
    /// As for [`NodeBuilder::start`].
    pub async fn start(name: impl Into<String>) -> Result<Node, StartError> {
        Node::builder(name).start().await
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        self.inner.transport.name()
    }

    /// The address the node listens on (others join through it).
    pub fn listen_addr(&self) -> SocketAddr {
        self.inner.transport.listen_addr()
    }

    /// The cluster key (nodes that join this one need it).
    pub fn key(&self) -> &ClusterKey {
        &self.inner.key
    }

    /// The local process runtime.
    pub fn runtime(&self) -> &Runtime {
        self.inner.transport.runtime()
    }

    /// The transport node: members, node events, remote spawn, RPC, services.
    pub fn transport(&self) -> &shoal_transport::Node {
        &self.inner.transport
    }

    /// Per-key consensus.
    ///
    /// # Errors
    ///
    /// [`NodeError::Off`] if Paxos is off on this node.
    #[cfg(feature = "paxos")]
    pub fn paxos(&self) -> Result<&Paxos, NodeError> {
        self.inner.paxos.as_ref().ok_or(NodeError::Off("paxos"))
    }

    /// Epidemic broadcast.
    ///
    /// # Errors
    ///
    /// [`NodeError::Off`] if broadcast is off on this node.
    #[cfg(feature = "broadcast")]
    pub fn broadcast(&self) -> Result<&Broadcast, NodeError> {
        self.inner.broadcast.as_ref().ok_or(NodeError::Off("broadcast"))
    }

    /// Cluster-wide names and locks.
    ///
    /// # Errors
    ///
    /// [`NodeError::Off`] if the registry is off on this node.
    #[cfg(feature = "registry")]
    pub fn registry(&self) -> Result<&Registry, NodeError> {
        self.inner.registry.as_ref().ok_or(NodeError::Off("the registry"))
    }

    /// Process groups.
    ///
    /// # Errors
    ///
    /// [`NodeError::Off`] if groups are off on this node.
    #[cfg(feature = "registry")]
    pub fn groups(&self) -> Result<&Groups, NodeError> {
        self.inner.groups.as_ref().ok_or(NodeError::Off("groups"))
    }

    /// Hub `id` on this node.
    ///
    /// # Errors
    ///
    /// [`NodeError::NoHub`] if it does not run here.
    #[cfg(feature = "hub")]
    pub fn hub(&self, id: &str) -> Result<Hub, NodeError> {
        let hubs = self.inner.hubs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        hubs.get(id).cloned().ok_or_else(|| NodeError::NoHub(id.to_owned()))
    }

    /// The ids of the hubs this node runs (those given to the builder or to
    /// [`NodeParts::hub`], and those started since with [`Node::start_hub`]), sorted.
    #[cfg(feature = "hub")]
    pub fn hub_ids(&self) -> Vec<String> {
        let hubs = self.inner.hubs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        hubs.keys().cloned().collect()
    }

    /// Starts hub `id` on this node (its children's factories must be registered on
    /// [`Node::runtime`] first, or on the runtime given to [`NodeBuilder::runtime`]);
    /// [`Node::hub`] finds it from then on, and
    /// [`Node::shutdown`] stops it.
    ///
    /// # Errors
    ///
    /// [`NodeError::Hub`] if it does not start (it runs already, a bad id or configuration),
    /// [`NodeError::Stopping`].
    #[cfg(feature = "hub")]
    pub async fn start_hub(&self, id: &str, config: HubConfig) -> Result<Hub, NodeError> {
        if *self.inner.stopping.borrow() {
            return Err(NodeError::Stopping);
        }
        let hub = Hub::start(&self.inner.transport, id, config).await?;
        let mut hubs = self.inner.hubs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        hubs.insert(id.to_owned(), hub.clone());
        Ok(hub)
    }

    /// Distributed supervisor `name` on this node.
    ///
    /// # Errors
    ///
    /// [`NodeError::NoSupervisor`] if it does not run here.
    #[cfg(all(feature = "hub", feature = "supervisor"))]
    pub fn supervisor(&self, name: &str) -> Result<DistributedSupervisor, NodeError> {
        let supervisors =
            self.inner.supervisors.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        supervisors.get(name).cloned().ok_or_else(|| NodeError::NoSupervisor(name.to_owned()))
    }

    /// The names of the distributed supervisors this node runs (those given to the builder or
    /// to [`NodeParts::supervisor`], and those started since with [`Node::start_supervisor`]),
    /// sorted.
    #[cfg(all(feature = "hub", feature = "supervisor"))]
    pub fn supervisor_names(&self) -> Vec<String> {
        let supervisors =
            self.inner.supervisors.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        supervisors.keys().cloned().collect()
    }

    /// Starts distributed supervisor `name` on this node; [`Node::supervisor`] finds it from
    /// then on, and [`Node::shutdown`] stops it.
    ///
    /// # Errors
    ///
    /// [`NodeError::Supervisor`] if it does not start, [`NodeError::Stopping`].
    #[cfg(all(feature = "hub", feature = "supervisor"))]
    pub async fn start_supervisor(
        &self,
        name: &str,
        config: DistributedSupervisorConfig,
    ) -> Result<DistributedSupervisor, NodeError> {
        if *self.inner.stopping.borrow() {
            return Err(NodeError::Stopping);
        }
        let supervisor = DistributedSupervisor::start(&self.inner.transport, name, config).await?;
        let mut supervisors =
            self.inner.supervisors.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        supervisors.insert(name.to_owned(), supervisor.clone());
        Ok(supervisor)
    }

    /// Connects to the node at `addr` (one more member of this cluster), retrying with a
    /// growing backoff for the builder's join timeout; its name.
    ///
    /// Joining a node of *another* cluster, with Paxos acceptors of its own, does not merge
    /// the two: their registries refuse each other (`Registry::mismatched`).
    ///
    /// # Errors
    ///
    /// [`NodeError::Join`] with the last attempt's error.
    pub async fn join(&self, addr: SocketAddr) -> Result<String, NodeError> {
        let joined = join_any(&self.inner.transport, &[addr], self.inner.join_timeout).await;
        let name = joined.map_err(|last| NodeError::Join { addr, last })?;
        #[cfg(feature = "broadcast")]
        if let Some(broadcast) = &self.inner.broadcast {
            join_overlay(broadcast, addr).await;
        }
        Ok(name)
    }

    /// Whether the node is ready now: joined, a majority of the Paxos acceptors reachable, and
    /// its registry lease held (as far as those layers run).
    pub fn is_ready(&self) -> bool {
        *self.inner.ready.borrow()
    }

    /// Waits until the node is ready ([`Node::is_ready`]).
    pub async fn ready(&self) {
        let mut ready = self.inner.ready.clone();
        let _ = ready.wait_for(|ready| *ready).await;
    }

    /// The node's readiness as it changes: true when ready, false when it loses its quorum or
    /// its lease (for an orchestrator's probe).
    pub fn readiness(&self) -> watch::Receiver<bool> {
        self.inner.ready.clone()
    }

    /// Stops the node in order: the distributed supervisors and hubs first (children with
    /// state handed over to their new owners), then groups, the registry (its names and locks
    /// released), broadcast and Paxos, and last the transport, which tells the other nodes it
    /// leaves (they move its children at once, without waiting for a failure timeout).
    pub async fn shutdown(self) {
        let inner = &self.inner;
        if inner.stopping.send_replace(true) {
            return;
        }
        inner.stop_layers().await;
        inner.transport.leave().await;
        inner.transport.shutdown();
    }

    /// Stops the node as a crash would: every connection drops and every process of the
    /// runtime is killed at once, with no hand-over and no goodbye; the other nodes find out
    /// by their failure detection. The layers' tasks end too, so nothing runs on afterwards.
    pub async fn abort(self) {
        let inner = &self.inner;
        inner.stopping.send_replace(true);
        inner.transport.shutdown();
        let runtime = inner.transport.runtime();
        for pid in runtime.processes() {
            runtime.kill(pid);
        }
        // With the transport down, each stop is local: nothing is handed over, and with
        // Paxos stopped first nothing waits on a consensus write (a lease's end) either.
        #[cfg(feature = "paxos")]
        if let Some(paxos) = &inner.paxos {
            paxos.stop().await;
        }
        inner.stop_layers().await;
    }
}

/// A [`Node`] that does not keep it alive: [`WeakNode::upgrade`] gives it back while it
/// lives.
#[cfg(feature = "dashboard")]
#[derive(Clone)]
pub(crate) struct WeakNode(std::sync::Weak<Inner>);

#[cfg(feature = "dashboard")]
impl WeakNode {
    pub(crate) fn upgrade(&self) -> Option<Node> {
        self.0.upgrade().map(|inner| Node { inner })
    }
}

impl Inner {
    /// Whether the layers that gate readiness say ready.
    fn is_ready_now(&self) -> bool {
        #[cfg(feature = "paxos")]
        if self.paxos.as_ref().is_some_and(|paxos| !paxos.has_quorum()) {
            return false;
        }
        #[cfg(feature = "registry")]
        if self.registry.as_ref().is_some_and(|registry| !registry.holds_lease()) {
            return false;
        }
        true
    }

    /// Stops every layer above the transport, the highest first.
    async fn stop_layers(&self) {
        #[cfg(all(feature = "hub", feature = "supervisor"))]
        for supervisor in take(&self.supervisors) {
            supervisor.stop().await;
        }
        #[cfg(feature = "hub")]
        for hub in take(&self.hubs) {
            hub.stop().await;
        }
        #[cfg(feature = "registry")]
        if let Some(groups) = &self.groups {
            groups.stop().await;
        }
        #[cfg(feature = "registry")]
        if let Some(registry) = &self.registry {
            registry.stop().await;
        }
        #[cfg(feature = "broadcast")]
        if let Some(broadcast) = &self.broadcast {
            broadcast.stop().await;
        }
        #[cfg(feature = "paxos")]
        if let Some(paxos) = &self.paxos {
            paxos.stop().await;
        }
    }

    /// Stops what started of a node that fails to start, and hands back why.
    async fn undo(&self, error: StartError) -> StartError {
        self.stopping.send_replace(true);
        self.stop_layers().await;
        self.transport.shutdown();
        error
    }
}

/// Keeps `ready` true while the node is ready: a majority of the acceptors reachable and the
/// registry lease held (as far as those layers run); ends with the node.
async fn readiness(inner: std::sync::Weak<Inner>, ready: watch::Sender<bool>) {
    loop {
        let Some(inner) = inner.upgrade() else { return };
        if *inner.stopping.borrow() {
            ready.send_replace(false);
            return;
        }
        ready.send_if_modified(|was| {
            let now = inner.is_ready_now();
            std::mem::replace(was, now) != now
        });
        let clock = inner.transport.runtime().clock().clone();
        drop(inner);
        clock.sleep(READINESS_EVERY).await;
    }
}

/// Empties a map of handles, for stopping them (without holding the lock across the stops).
#[cfg(feature = "hub")]
fn take<T>(map: &Mutex<BTreeMap<String, T>>) -> Vec<T> {
    let mut map = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    std::mem::take(&mut *map).into_values().collect()
}

/// Joins one of `seeds`, trying each in turn and again with a growing backoff until `timeout`
/// has passed; the joined node's name, or the last attempt's error.
async fn join_any(
    transport: &shoal_transport::Node,
    seeds: &[SocketAddr],
    timeout: Duration,
) -> Result<String, String> {
    let clock = transport.runtime().clock().clone();
    let deadline = clock.now() + timeout;
    let mut backoff = JOIN_BACKOFF_MIN;
    let mut last = "no seed was given".to_owned();
    loop {
        for &seed in seeds {
            match transport.join(seed).await {
                Ok(name) => return Ok(name),
                Err(error) => {
                    tracing::debug!(%seed, %error, "join failed; trying again");
                    last = error.to_string();
                }
            }
        }
        if clock.now() + backoff > deadline {
            return Err(last);
        }
        clock.sleep(backoff).await;
        backoff = (backoff * 2).min(JOIN_BACKOFF_MAX);
    }
}

/// Joins `seeds` again whenever the node finds itself without a connected peer (checked every
/// [`JOIN_BACKOFF_MAX`]), until `stop`: a node whose only contact went down before the others
/// learnt of it, or that was apart from all of them longer than they remember it, finds the
/// cluster again through the seeds it was given.
async fn rejoin(
    transport: shoal_transport::Node,
    seeds: Vec<SocketAddr>,
    mut stop: watch::Receiver<bool>,
) {
    let clock = transport.runtime().clock().clone();
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|stopped| *stopped) => return,
            () = clock.sleep(JOIN_BACKOFF_MAX) => {}
        }
        if !transport.nodes().is_empty() {
            continue;
        }
        for &seed in &seeds {
            match transport.join(seed).await {
                Ok(name) => {
                    tracing::info!(%seed, %name, "alone: joined a seed again");
                    break;
                }
                Err(error) => tracing::debug!(%seed, %error, "alone: a seed did not answer"),
            }
        }
    }
}

/// Joins the broadcast overlay through `addr` when the overlay keeps its own connections
/// (managed membership); over a full mesh it finds its peers among the connected nodes.
#[cfg(feature = "broadcast")]
async fn join_overlay(broadcast: &Broadcast, addr: SocketAddr) {
    if *broadcast.node().membership() == shoal_transport::Membership::Managed
        && let Err(error) = broadcast.join(addr).await
    {
        tracing::warn!(%addr, %error, "could not join the broadcast overlay");
    }
}
