//! The [`Node`]: start, membership (full mesh or static), failure detection, reconnection,
//! and the public face of the transport.
//!
//! ```text
//!            accept loop ──handshake──▶ admit(peer) ──▶ read_loop ──▶ dispatch ──▶ Runtime
//!                                          │ unknown peer: add + connector
//!  connector (one task per peer):          ▼
//!     connect every channel × parallelism ─▶ Session (one OutQueue + writer per connection)
//!     heartbeat: ping on control, down when silent past the failure timeout
//!     session lost ─▶ down(reason): monitors, links, calls told; NodeDown; backoff; again
//! ```
//!
//! Each node sends on connections it opened itself and reads on connections others opened
//! to it, so two nodes connecting to each other at once never race over one socket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use shoal_process::{ExitKind, ExitReason, NodeId, Pid, RemoteFailure, Runtime};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::config::{Membership, NodeBuilder, NodeConfig};
use crate::conn::{self, ConnError};
use crate::fault::{Direction, Fault, Faults};
use crate::handshake::Secret;
use crate::net::Listener;
use crate::node_watchers::NodeWatchers;
use crate::peer::{NodeIdHash, Peer, PeerStats, Session, lock, millis_since};
use crate::remote::Waiter;
use crate::requests::RpcHandler;
use crate::wire::Frame;
use crate::{CONTROL_CHANNEL, DownReason, JoinError, NodeEvent, NodeSpec, StartError};

/// Heartbeat ticks between two traces of a peer's counters.
const STATS_EVERY_TICKS: u64 = 40;

/// Events buffered for a slow subscriber before it is told it lagged.
const EVENT_BUFFER: usize = 1024;

/// A Shoal node: a process runtime connected to other nodes.
///
/// Cheap to clone; every clone is the same node. The node runs until [`Node::leave`] or
/// [`Node::shutdown`].
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use shoal_transport::Node;
///
/// let a = Node::builder("a", "cluster secret").start().await?;
/// let b = Node::builder("b", "cluster secret").start().await?;
/// b.join(a.listen_addr()).await?;
/// assert!(a.is_connected("b"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Node {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) config: NodeConfig,
    pub(crate) runtime: Runtime,
    pub(crate) spec: NodeSpec,
    pub(crate) origin: Instant,
    pub(crate) peers: RwLock<HashMap<NodeId, Arc<Peer>, NodeIdHash>>,
    /// Tombstones: the last incarnation of each node that left.
    pub(crate) left: Mutex<HashMap<String, u64>>,
    pub(crate) waiters: Mutex<HashMap<u64, (NodeId, Waiter)>>,
    pub(crate) next_id: AtomicU64,
    pub(crate) rpc: RwLock<HashMap<String, RpcHandler>>,
    pub(crate) events: broadcast::Sender<NodeEvent>,
    /// Local processes that get node events in their mailboxes.
    node_watchers: Arc<NodeWatchers>,
    pub(crate) faults: Faults,
    stop: watch::Sender<bool>,
}

impl Node {
    /// Configures a node called `name` (unique in the cluster) with the cluster `secret`.
    pub fn builder(name: impl Into<String>, secret: impl AsRef<[u8]>) -> NodeBuilder {
        NodeBuilder::new(name.into(), Secret::new(secret))
    }

    pub(crate) async fn start(mut config: NodeConfig) -> Result<Self, StartError> {
        let runtime = match config.runtime.take() {
            Some(runtime) if runtime.node_name() != config.name => {
                return Err(StartError::InvalidConfig(format!(
                    "the runtime is named {:?}, the node {:?}",
                    runtime.node_name(),
                    config.name
                )));
            }
            Some(runtime) => runtime,
            None => Runtime::builder().node_name(config.name.clone()).build()?,
        };
        let listener = config
            .network
            .bind(config.listen)
            .await
            .map_err(|error| StartError::Bind(config.listen, error.to_string()))?;
        let listen_addr = listener
            .local_addr()
            .map_err(|error| StartError::Bind(config.listen, error.to_string()))?;
        let spec = NodeSpec {
            name: config.name.clone(),
            incarnation: runtime.incarnation(),
            listen_addrs: vec![listen_addr],
            channels: config.channels.clone(),
        };
        let shared = Arc::new(Shared {
            faults: Faults::new(config.seed ^ runtime.incarnation()),
            config,
            runtime,
            spec,
            origin: Instant::now(),
            peers: RwLock::default(),
            left: Mutex::default(),
            waiters: Mutex::default(),
            next_id: AtomicU64::new(1),
            rpc: RwLock::default(),
            events: broadcast::Sender::new(EVENT_BUFFER),
            node_watchers: Arc::default(),
            stop: watch::Sender::new(false),
        });
        let remote = crate::remote::Transport::new(&shared);
        if shared.runtime.set_remote(Arc::new(remote)).is_err() {
            return Err(StartError::InvalidConfig("the runtime already has a transport".into()));
        }
        shared.spawn(accept_loop(shared.clone(), listener));
        if shared.config.membership == Membership::FullMesh {
            shared.spawn(gossip_loop(shared.clone()));
        }
        if let Membership::Static(addrs) = &shared.config.membership {
            for addr in addrs.clone() {
                shared.spawn(join_static(shared.clone(), addr));
            }
        }
        tracing::info!(node = %shared.spec.name, addr = %listen_addr, "node started");
        Ok(Self { shared })
    }

    /// The process runtime of this node.
    pub fn runtime(&self) -> &Runtime {
        &self.shared.runtime
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.shared.spec.name
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.shared.runtime.node()
    }

    /// This run of the node: different (larger) at every start.
    pub fn incarnation(&self) -> u64 {
        self.shared.spec.incarnation
    }

    /// What this node tells others about itself.
    pub fn spec(&self) -> &NodeSpec {
        &self.shared.spec
    }

    /// The address the node listens on (with the port picked when 0 was asked for).
    pub fn listen_addr(&self) -> SocketAddr {
        self.shared.spec.listen_addrs[0]
    }

    /// Joins the cluster that the node at `addr` belongs to; returns that node's name once it
    /// is up. In full-mesh mode the other members follow through gossip.
    pub async fn join(&self, addr: SocketAddr) -> Result<String, JoinError> {
        let shared = &self.shared;
        let mut events = shared.events.subscribe();
        let opened = conn::connect(shared, addr, CONTROL_CHANNEL, 0).await.map_err(join_error)?;
        drop(opened.conn);
        let name = opened.peer.name.clone();
        let peer = shared.admit(&opened.peer).map_err(JoinError::Refused)?;
        let wait = async {
            while !peer.is_up() {
                match events.recv().await {
                    Ok(NodeEvent::Up { node, .. }) if node == name => break,
                    Err(broadcast::error::RecvError::Closed) => return Err(JoinError::Timeout),
                    _ => {}
                }
            }
            Ok(())
        };
        let deadline = shared.config.connect_timeout * 2 + shared.config.backoff_max;
        tokio::time::timeout(deadline, wait).await.map_err(|_| JoinError::Timeout)??;
        Ok(name)
    }

    /// Leaves the cluster for good: tells every peer (so stale gossip cannot bring this
    /// incarnation back), waits briefly for that to go out, and stops the node.
    pub async fn leave(&self) {
        let frame = Frame::Leave { incarnation: self.incarnation() };
        let peers = self.shared.peer_list();
        for peer in &peers {
            peer.push_control(frame.clone());
        }
        // Give the writers a moment to put the goodbyes on the wire.
        for _ in 0..20 {
            if peers.iter().all(|peer| peer.stats().queued == 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.shutdown();
    }

    /// Stops the node at once, without a goodbye: its connections close and its peers see
    /// it go down, as if it had crashed. Its processes keep running on the runtime, cut off.
    pub fn shutdown(&self) {
        self.shared.stop.send_replace(true);
        for peer in self.shared.peer_list() {
            peer.remove();
        }
    }

    /// Whether the node has been stopped.
    pub fn is_stopped(&self) -> bool {
        *self.shared.stop.borrow()
    }

    /// The names of the nodes this node is connected to, sorted.
    pub fn nodes(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.shared.peer_list().iter().filter(|p| p.is_up()).map(|p| p.name()).collect();
        names.sort();
        names
    }

    /// The specs of every known member, connected or not (this node excluded).
    pub fn members(&self) -> Vec<NodeSpec> {
        self.shared.peer_list().iter().map(|peer| peer.spec()).collect()
    }

    /// The spec of the member called `node`, connected or not, this node included; `None`
    /// for a node this one does not know (or no longer knows: it left).
    pub fn node_spec(&self, node: &str) -> Option<NodeSpec> {
        if node == self.name() {
            return Some(self.shared.spec.clone());
        }
        self.shared.peer_by_name(node).map(|peer| peer.spec())
    }

    /// The name of the node `pid` runs on (OTP's `node(Pid)`): this node's for a local pid, a
    /// member's for a remote one; `None` when the pid's node is not a member known here.
    pub fn node_name(&self, pid: Pid) -> Option<String> {
        if pid.node() == self.id() {
            return Some(self.name().to_owned());
        }
        self.shared.peer(pid.node()).map(|peer| peer.name())
    }

    /// Whether `node` is connected.
    pub fn is_connected(&self, node: &str) -> bool {
        self.shared.peer_by_name(node).is_some_and(|peer| peer.is_up())
    }

    /// Closes the connections to `node` (it goes down with
    /// [`DownReason::Disconnected`]); they are set up again after the reconnect backoff, except
    /// in [`Membership::Managed`] mode, where the node is forgotten until joined again.
    /// Returns whether it was connected.
    pub fn disconnect_node(&self, node: &str) -> bool {
        match self.shared.peer_by_name(node) {
            Some(peer) => self.shared.down(&peer, DownReason::Disconnected),
            None => false,
        }
    }

    /// Node up and down events, from now on, for code outside processes. The stream holds
    /// a bounded backlog: a receiver that falls behind skips events and is told it lagged.
    /// Processes use [`Node::monitor_nodes`], which loses nothing.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.shared.events.subscribe()
    }

    /// Subscribes the local process `pid` to node events (OTP's `monitor_nodes(true)`): from
    /// now on it gets a [`shoal_process::Signal::NodeUp`] or
    /// [`shoal_process::Signal::NodeDown`] (with the [`DownReason`] in words) for every
    /// [`NodeEvent`], in its mailbox, in the order this node saw them, until
    /// [`Node::demonitor_nodes`] or its exit. Like a monitor's `Down` they are signals, so
    /// they never wait for room, and none is dropped. Returns `false` (and changes nothing)
    /// if `pid` is not a live local process or is subscribed already.
    ///
    /// The bound: one subscription per process, removed when it exits; a node reports at most
    /// one up and one down per session with each peer, so what a process that does not drain
    /// its mailbox accumulates grows only with the sessions made meanwhile (each a handshake,
    /// and after a failure the reconnect backoff).
    pub fn monitor_nodes(&self, pid: Pid) -> bool {
        let watchers = &self.shared.node_watchers;
        watchers.subscribe(&self.shared.runtime, Arc::downgrade(watchers), pid)
    }

    /// Ends `pid`'s subscription to node events; returns whether it had one. Events already
    /// in its mailbox stay there.
    pub fn demonitor_nodes(&self, pid: Pid) -> bool {
        self.shared.node_watchers.unsubscribe(pid)
    }

    /// The local processes subscribed to node events, sorted.
    pub fn node_monitors(&self) -> Vec<Pid> {
        self.shared.node_watchers.subscribers()
    }

    /// Resolves with the reason when `node` goes down (at once with
    /// [`DownReason::NotConnected`] if it is not connected now).
    pub fn monitor_node(&self, node: &str) -> impl Future<Output = DownReason> + Send + 'static {
        let mut events = self.shared.events.subscribe();
        let connected = self.is_connected(node);
        let node = node.to_owned();
        async move {
            if !connected {
                return DownReason::NotConnected;
            }
            loop {
                match events.recv().await {
                    Ok(NodeEvent::Down { node: down, reason, .. }) if down == node => {
                        return reason;
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return DownReason::NotConnected,
                }
            }
        }
    }

    /// Counters for the traffic with `node`.
    pub fn peer_stats(&self, node: &str) -> Option<PeerStats> {
        self.shared.peer_by_name(node).map(|peer| peer.stats())
    }

    /// Injects a fault into the traffic with `node` (which need not be known yet).
    pub fn inject_fault(&self, node: &str, direction: Direction, fault: Fault) {
        tracing::info!(node = %self.name(), peer = node, ?direction, ?fault, "fault injected");
        self.shared.faults.set(NodeId::from_name(node), direction, fault);
    }

    /// Removes the faults on the traffic with `node`.
    pub fn heal(&self, node: &str) {
        tracing::info!(node = %self.name(), peer = node, "faults healed");
        self.shared.faults.heal(Some(NodeId::from_name(node)));
        self.shared.kick(node);
    }

    /// Removes every fault.
    pub fn heal_all(&self) {
        self.shared.faults.heal(None);
        for peer in self.shared.peer_list() {
            self.shared.kick(&peer.name());
        }
    }
}

impl Shared {
    /// Spawns a task that ends when the node stops.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut stop = self.stop.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => {}
                () = task => {}
            }
        });
    }

    pub(crate) fn is_stopped(&self) -> bool {
        *self.stop.borrow()
    }

    pub(crate) fn peer(&self, id: NodeId) -> Option<Arc<Peer>> {
        self.peers.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&id).cloned()
    }

    pub(crate) fn peer_by_name(&self, name: &str) -> Option<Arc<Peer>> {
        self.peer(NodeId::from_name(name)).filter(|peer| peer.name() == name)
    }

    pub(crate) fn peer_list(&self) -> Vec<Arc<Peer>> {
        self.peers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Tells the subscribed processes and the event stream's receivers of a node event.
    fn publish(&self, event: NodeEvent) {
        self.node_watchers.notify(&self.runtime, &event);
        let _ = self.events.send(event);
    }

    pub(crate) fn now_ms(&self) -> u64 {
        millis_since(self.origin)
    }

    /// Decides whether a node that authenticated (or was learnt of) may be a member; adds it,
    /// or updates it when it restarted. The reason is logged and sent to a refused peer.
    pub(crate) fn admit(self: &Arc<Self>, spec: &NodeSpec) -> Result<Arc<Peer>, String> {
        let id = spec.id();
        if self.is_stopped() {
            return Err("this node is stopping".into());
        }
        if spec.name == self.spec.name || id == self.spec.id() {
            return Err(format!("name clash: {:?} is this node's name", spec.name));
        }
        if self.faults.is_cut(id) {
            return Err("traffic with this node is cut by fault injection".into());
        }
        if lock(&self.left).get(&spec.name).is_some_and(|left| *left >= spec.incarnation) {
            return Err(format!(
                "incarnation {} of {} left the cluster",
                spec.incarnation, spec.name
            ));
        }
        let mut peers = self.peers.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(peer) = peers.get(&id).cloned() {
            drop(peers);
            let known = peer.spec();
            if known.name != spec.name {
                return Err(format!(
                    "name clash: {:?} and {:?} hash to the same node id",
                    spec.name, known.name
                ));
            }
            if spec.incarnation < known.incarnation {
                return Err(format!(
                    "stale incarnation {} of {} (incarnation {} is running)",
                    spec.incarnation, spec.name, known.incarnation
                ));
            }
            if spec.incarnation == known.incarnation {
                return Ok(peer);
            }
            tracing::info!(peer = %spec.name, "the peer restarted with a new incarnation");
            self.down(&peer, DownReason::Restarted);
            if self.config.membership != Membership::Managed {
                peer.set_spec(spec.clone());
                peer.connecting(&self.config.channels);
                self.kick(&spec.name);
                return Ok(peer);
            }
            // Managed: the old incarnation's connector forgets its peer when its session
            // ends; the new incarnation is a new member with a connector of its own.
            self.forget_peer(&peer);
            peers = self.peers.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(admitted) = peers.get(&id) {
                // Admitted by a concurrent connection of the new incarnation meanwhile.
                return Ok(admitted.clone());
            }
        }
        let peer = Arc::new(Peer::new(spec.clone(), self.config.peer_queue_frames));
        peer.connecting(&self.config.channels);
        peers.insert(id, peer.clone());
        drop(peers);
        tracing::debug!(node = %self.spec.name, peer = %spec.name, "new member");
        self.spawn(connector(self.clone(), peer.clone()));
        Ok(peer)
    }

    /// Skips the reconnect backoff of `node`'s connector.
    pub(crate) fn kick(&self, node: &str) {
        if let Some(peer) = self.peer_by_name(node) {
            peer.kick.notify_one();
        }
    }

    /// Takes `peer` down here: its session ends, and every local process that depends on it
    /// learns why (monitors fire, links exit, pending calls fail). Returns whether it was up.
    pub(crate) fn down(&self, peer: &Peer, reason: DownReason) -> bool {
        let was_up = peer.end();
        self.fail_waiters(peer.id);
        let ties = std::mem::take(&mut *lock(&peer.ties));
        for (monitor, (watcher, target)) in ties.watching {
            self.runtime.deliver_down(watcher, monitor, target, ExitReason::NoConnection);
        }
        for (monitor, target) in ties.watched {
            self.runtime.remote_demonitor(target, monitor);
        }
        for (local, remote) in ties.links {
            self.runtime.deliver_exit(local, remote, ExitReason::NoConnection, ExitKind::Link);
        }
        if was_up {
            let (node, incarnation) = (peer.name(), peer.incarnation());
            tracing::info!(node = %self.spec.name, peer = %node, %reason, "node down");
            self.publish(NodeEvent::Down { node, incarnation, reason });
        }
        was_up
    }

    fn fail_waiters(&self, node: NodeId) {
        let failed: Vec<Waiter> = {
            let mut waiters = lock(&self.waiters);
            let ids: Vec<u64> =
                waiters.iter().filter(|(_, (n, _))| *n == node).map(|(id, _)| *id).collect();
            ids.into_iter().filter_map(|id| waiters.remove(&id)).map(|(_, w)| w).collect()
        };
        for waiter in failed {
            match waiter {
                // A process's call fails as if the process had exited with `noconnection`.
                Waiter::Runtime(_) => {
                    waiter.complete(Err(RemoteFailure::Exited(ExitReason::NoConnection).into()));
                }
                // A dropped sender tells `await_answer` that the node was lost.
                Waiter::Oneshot(sender) => drop(sender),
            }
        }
    }

    /// Records that `name`'s incarnation `incarnation` left, and forgets it.
    pub(crate) fn tombstone(&self, name: &str, incarnation: u64) {
        {
            let mut left = lock(&self.left);
            let entry = left.entry(name.to_owned()).or_insert(incarnation);
            *entry = (*entry).max(incarnation);
        }
        let Some(peer) = self.peer_by_name(name) else { return };
        if peer.incarnation() <= incarnation {
            self.down(&peer, DownReason::Left);
            self.forget_peer(&peer);
        }
    }

    /// Drops `peer` from the members (it must be down already) and stops its connector. A
    /// later peer of the same id is not affected.
    pub(crate) fn forget_peer(&self, peer: &Arc<Peer>) {
        peer.remove();
        let mut peers = self.peers.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if peers.get(&peer.id).is_some_and(|known| Arc::ptr_eq(known, peer)) {
            peers.remove(&peer.id);
        }
    }

    /// Merges a peer's gossip: new members are added (full mesh only), restarted ones
    /// replaced, departed ones tombstoned.
    pub(crate) fn merge_gossip(self: &Arc<Self>, members: Vec<NodeSpec>, left: Vec<(String, u64)>) {
        for (name, incarnation) in left {
            if name != self.spec.name {
                self.tombstone(&name, incarnation);
            }
        }
        if self.config.membership != Membership::FullMesh {
            return;
        }
        for spec in members {
            if spec.name == self.spec.name {
                continue;
            }
            let known = self.peer(spec.id()).map(|peer| peer.incarnation());
            if known.is_none_or(|incarnation| incarnation < spec.incarnation)
                && let Err(reason) = self.admit(&spec)
            {
                tracing::debug!(peer = %spec.name, %reason, "gossiped member not admitted");
            }
        }
    }

    fn gossip_frame(&self) -> Frame {
        let mut members: Vec<NodeSpec> =
            self.peer_list().iter().filter(|p| p.is_up()).map(|p| p.spec()).collect();
        members.push(self.spec.clone());
        let left = lock(&self.left).iter().map(|(n, i)| (n.clone(), *i)).collect();
        Frame::Gossip { members, left }
    }
}

fn join_error(error: ConnError) -> JoinError {
    match error {
        ConnError::Handshake(error) => JoinError::Handshake(error),
        ConnError::Timeout => JoinError::Timeout,
        other => JoinError::Connect(other.to_string()),
    }
}

/// Handshakes in progress at once; a connection beyond them is closed at once, so a flood
/// of connections cannot pile up tasks.
const MAX_PENDING_HANDSHAKES: usize = 256;

async fn accept_loop(shared: Arc<Shared>, listener: Box<dyn Listener>) {
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        match listener.accept().await {
            Ok(conn) => {
                let Ok(permit) = pending.clone().try_acquire_owned() else {
                    tracing::warn!(addr = %conn.peer_addr, "too many handshakes in progress: connection closed");
                    continue;
                };
                let task_shared = shared.clone();
                shared.spawn(async move {
                    let addr = conn.peer_addr;
                    let accepted = conn::accept(&task_shared, conn).await;
                    drop(permit);
                    match accepted {
                        Ok((peer, conn, decoder)) => {
                            let epoch = peer.inbound_epoch.subscribe();
                            conn::read_loop(task_shared, peer, conn, decoder, epoch).await;
                        }
                        Err(error) => {
                            tracing::warn!(node = %task_shared.spec.name, %addr, %error, "connection refused");
                        }
                    }
                });
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn gossip_loop(shared: Arc<Shared>) {
    let mut ticks = tokio::time::interval(shared.config.gossip_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let frame = shared.gossip_frame();
        for peer in shared.peer_list().iter().filter(|peer| peer.is_up()) {
            peer.push_control(frame.clone());
        }
    }
}

/// Static membership: keeps trying to reach `addr` until its node is known.
async fn join_static(shared: Arc<Shared>, addr: SocketAddr) {
    let mut backoff = shared.config.backoff_min;
    loop {
        match conn::connect(&shared, addr, CONTROL_CHANNEL, 0).await {
            Ok(opened) => match shared.admit(&opened.peer) {
                Ok(_) => return,
                Err(reason) => tracing::warn!(%addr, %reason, "static peer not admitted"),
            },
            Err(error) => tracing::debug!(%addr, %error, "static peer not reachable"),
        }
        tokio::time::sleep(shared.faults.jitter(backoff)).await;
        backoff = (backoff * 2).min(shared.config.backoff_max);
    }
}

/// Keeps one peer connected: opens every connection, watches the session, takes the peer
/// down when it fails, and tries again with backoff. Ends when the peer is removed.
async fn connector(shared: Arc<Shared>, peer: Arc<Peer>) {
    let mut removed = peer.removed();
    let mut backoff = shared.config.backoff_min;
    let mut sessions = 0u64;
    while !peer.is_removed() {
        match open_session(&shared, &peer).await {
            Ok((session, failures)) => {
                if sessions > 0 {
                    peer.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                sessions += 1;
                backoff = shared.config.backoff_min;
                run_session(&shared, &peer, session, failures, &mut removed).await;
            }
            Err(error) => {
                tracing::debug!(node = %shared.spec.name, peer = %peer.name(), %error, "connect failed");
            }
        }
        if peer.is_removed() {
            break;
        }
        if shared.config.membership == Membership::Managed {
            // The layer above owns the connections: it hears of the loss through the node
            // down event and connects again if it wants to.
            shared.forget_peer(&peer);
            break;
        }
        let wait = shared.faults.jitter(backoff);
        backoff = (backoff * 2).min(shared.config.backoff_max);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = peer.kick.notified() => {}
            _ = removed.changed() => {}
        }
    }
}

/// Opens every connection to `peer` (control first) and starts their writers on the
/// session's queues.
async fn open_session(
    shared: &Arc<Shared>,
    peer: &Arc<Peer>,
) -> Result<(Arc<Session>, mpsc::Receiver<DownReason>), ConnError> {
    let session = peer.connecting(&shared.config.channels);
    match open_connections(shared, peer).await {
        Ok(opened) => {
            let (failed, failures) = mpsc::channel(1);
            for (channel, index, conn) in opened {
                let Some(queue) = session.queue(&channel, index) else { continue };
                let ended = session.ended();
                let writer = conn::write_loop(
                    shared.clone(),
                    peer.clone(),
                    queue,
                    conn.conn.write,
                    failed.clone(),
                );
                shared.spawn(until_ended(ended.clone(), writer));
                shared
                    .spawn(until_ended(ended, conn::watch_closed(conn.conn.read, failed.clone())));
            }
            Ok((session, failures))
        }
        Err(error) => {
            peer.abandon(&session);
            Err(error)
        }
    }
}

async fn open_connections(
    shared: &Arc<Shared>,
    peer: &Arc<Peer>,
) -> Result<Vec<(String, u16, conn::Opened)>, ConnError> {
    if shared.faults.is_cut(peer.id) {
        return Err(ConnError::Refused("traffic is cut by fault injection".into()));
    }
    let spec = peer.spec();
    let mut opened = Vec::new();
    let control = (CONTROL_CHANNEL.to_owned(), shared.config.channels[CONTROL_CHANNEL]);
    let others = shared.config.channels.iter().filter(|(name, _)| *name != CONTROL_CHANNEL);
    for (channel, config) in std::iter::once(control).chain(others.map(|(n, c)| (n.clone(), *c))) {
        for index in 0..config.parallelism {
            let conn = connect_any(shared, &spec, &channel, index).await?;
            opened.push((channel.clone(), index, conn));
        }
    }
    Ok(opened)
}

/// Connects one connection of `channel` to the first of the peer's addresses that answers,
/// and checks that it is still the same node.
async fn connect_any(
    shared: &Shared,
    spec: &NodeSpec,
    channel: &str,
    index: u16,
) -> Result<conn::Opened, ConnError> {
    let mut last = ConnError::Refused(format!("{} has no listen address", spec.name));
    for addr in &spec.listen_addrs {
        match conn::connect(shared, *addr, channel, index).await {
            Ok(opened) if opened.peer.name != spec.name => {
                last = ConnError::Refused(format!(
                    "{addr} is now {}, not {}",
                    opened.peer.name, spec.name
                ));
            }
            Ok(opened) if opened.peer.incarnation != spec.incarnation => {
                last = ConnError::Refused(format!(
                    "{} runs incarnation {}, not {}",
                    spec.name, opened.peer.incarnation, spec.incarnation
                ));
            }
            Ok(opened) => return Ok(opened),
            Err(error) => last = error,
        }
    }
    Err(last)
}

async fn until_ended(mut ended: watch::Receiver<bool>, task: impl Future<Output = ()>) {
    tokio::select! {
        _ = ended.wait_for(|ended| *ended) => {}
        () = task => {}
    }
}

/// Runs a session until it fails, the peer falls silent, or it is ended from elsewhere
/// (disconnect, leave, restart); then takes the peer down.
async fn run_session(
    shared: &Arc<Shared>,
    peer: &Arc<Peer>,
    session: Arc<Session>,
    mut failures: mpsc::Receiver<DownReason>,
    removed: &mut watch::Receiver<bool>,
) {
    let mut ended = session.ended();
    if !peer.begin(&session, shared.now_ms()) {
        return;
    }
    let (node, incarnation) = (peer.name(), peer.incarnation());
    tracing::info!(node = %shared.spec.name, peer = %node, "node up");
    shared.publish(NodeEvent::Up { node, incarnation });
    peer.push_control(shared.gossip_frame());
    let interval = shared.config.heartbeat_interval;
    let timeout_ms = shared.config.failure_timeout.as_millis() as u64;
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks_seen = 0u64;
    let reason = loop {
        tokio::select! {
            reason = failures.recv() => {
                break reason.unwrap_or(DownReason::ConnectionLost("connection tasks ended".into()));
            }
            _ = ended.wait_for(|ended| *ended) => return,
            _ = removed.changed() => return,
            _ = ticks.tick() => {
                let silent_ms = shared.now_ms().saturating_sub(peer.last_heard_ms());
                if silent_ms > timeout_ms {
                    break DownReason::HeartbeatTimeout(Duration::from_millis(silent_ms));
                }
                let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
                peer.push_control(Frame::Ping { id });
                shared.sweep_waiters();
                ticks_seen += 1;
                if ticks_seen.is_multiple_of(STATS_EVERY_TICKS) {
                    tracing::debug!(node = %shared.spec.name, peer = %peer.name(), stats = ?peer.stats(), "peer counters");
                }
            }
        }
    };
    shared.down(peer, reason);
}

impl Shared {
    /// Forgets calls whose callers stopped waiting (they timed out).
    fn sweep_waiters(&self) {
        lock(&self.waiters).retain(|_, (_, waiter)| !waiter.is_abandoned());
    }

    /// Registers an answer to wait for from `node`; returns its id.
    pub(crate) fn expect(&self, node: NodeId, waiter: Waiter) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.waiters).insert(id, (node, waiter));
        id
    }

    /// Completes the answer `id`, if still awaited.
    pub(crate) fn answer(&self, id: u64, outcome: Result<Bytes, crate::wire::Failure>) {
        let waiter = lock(&self.waiters).remove(&id);
        if let Some((_, waiter)) = waiter {
            waiter.complete(outcome);
        }
    }

    pub(crate) fn forget(&self, id: u64) -> Option<Waiter> {
        lock(&self.waiters).remove(&id).map(|(_, waiter)| waiter)
    }

    /// A oneshot waiter for a node request.
    pub(crate) fn expect_oneshot(
        &self,
        node: NodeId,
    ) -> (u64, oneshot::Receiver<Result<Bytes, crate::wire::Failure>>) {
        let (sender, receiver) = oneshot::channel();
        (self.expect(node, Waiter::Oneshot(sender)), receiver)
    }
}
