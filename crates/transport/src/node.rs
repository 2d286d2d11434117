//! The [`Node`]: the public face of the transport. What it does is built in the modules below
//! it: the cluster (`crate::cluster`: membership, connections, failure detection), remote
//! process operations (`crate::remote`) and node-level requests (`crate::requests`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shoal_process::{NodeId, Pid, Runtime};
use tokio::sync::broadcast;

use crate::cluster::Cluster;
use crate::config::{Membership, NodeBuilder, NodeConfig};
use crate::conn::{self, ConnError};
use crate::fault::{Direction, Fault};
use crate::handshake::ClusterKey;
use crate::keep::KeepConnection;
use crate::peer::PeerStats;
use crate::wire::Frame;
use crate::{DownReason, JoinError, NodeEvent, NodeSpec, NodeStartError};

/// A Shoal node: a process runtime connected to other nodes.
///
/// Cheap to clone; every clone is the same node. The node runs until [`Node::leave`] or
/// [`Node::shutdown`].
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use shoal_transport::{ClusterKey, Node};
///
/// let key = ClusterKey::generate(); // in a real cluster: read from a file (`shoal-node generate-key`)
/// let a = Node::builder("a", key.clone()).start().await?;
/// let b = Node::builder("b", key).start().await?;
/// b.join(a.listen_addr()).await?;
/// assert!(a.is_connected("b"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Node {
    pub(crate) cluster: Arc<Cluster>,
}

impl Node {
    /// Configures a node called `name` (unique in the cluster) with the cluster `key`, which
    /// every node of the cluster holds (32 random bytes: see [`ClusterKey`]).
    pub fn builder(name: impl Into<String>, key: ClusterKey) -> NodeBuilder {
        NodeBuilder::new(name.into(), key)
    }

    pub(crate) async fn start(mut config: NodeConfig) -> Result<Self, NodeStartError> {
        let runtime = match config.runtime.take() {
            Some(runtime) if runtime.node_name() != config.name => {
                return Err(NodeStartError::InvalidConfig(format!(
                    "the runtime is named {:?}, the node {:?}",
                    runtime.node_name(),
                    config.name
                )));
            }
            Some(runtime) => runtime,
            None => Runtime::builder().node_name(config.name.clone()).build()?,
        };
        Ok(Self { cluster: Cluster::start(config, runtime).await? })
    }

    /// The process runtime of this node.
    pub fn runtime(&self) -> &Runtime {
        self.cluster.runtime()
    }

    /// How this node finds its peers (what it was built with).
    pub fn membership(&self) -> &Membership {
        &self.cluster.config.membership
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.cluster.spec().name
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.cluster.runtime().node()
    }

    /// This run of the node: different (larger) at every start.
    pub fn incarnation(&self) -> u64 {
        self.cluster.spec().incarnation
    }

    /// What this node tells others about itself.
    pub fn spec(&self) -> &NodeSpec {
        self.cluster.spec()
    }

    /// The address the node listens on (with the port picked when 0 was asked for).
    pub fn listen_addr(&self) -> SocketAddr {
        self.cluster.spec().listen_addrs[0]
    }

    /// Joins the cluster that the node at `addr` belongs to; returns that node's name once it
    /// is up. In full-mesh mode the other members follow through gossip.
    pub async fn join(&self, addr: SocketAddr) -> Result<String, JoinError> {
        let cluster = &self.cluster;
        let mut events = cluster.events.subscribe();
        let spec = conn::probe(&cluster.wiring, addr).await.map_err(join_error)?;
        let name = spec.name.clone();
        let peer = cluster.admit(&spec).map_err(JoinError::Refused)?;
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
        let deadline = cluster.config.connect_timeout * 2 + cluster.config.backoff_max;
        let clock = &cluster.wiring.clock;
        clock.timeout(deadline, wait).await.map_err(|_| JoinError::Timeout)??;
        Ok(name)
    }

    /// Leaves the cluster for good: tells every peer (so stale gossip cannot bring this
    /// incarnation back), waits briefly for that to go out, and stops the node.
    pub async fn leave(&self) {
        let frame = Frame::Leave { incarnation: self.incarnation() };
        let peers = self.cluster.members.list();
        for peer in &peers {
            peer.push_control(frame.clone());
        }
        // Give the writers a moment to put the goodbyes on the wire.
        for _ in 0..20 {
            if peers.iter().all(|peer| peer.stats().queued == 0) {
                break;
            }
            self.cluster.wiring.clock.sleep(Duration::from_millis(5)).await;
        }
        self.cluster.wiring.clock.sleep(Duration::from_millis(20)).await;
        self.shutdown();
    }

    /// Stops the node at once, without a goodbye: its connections close and its peers see
    /// it go down, as if it had crashed. Its processes keep running on the runtime, cut off.
    pub fn shutdown(&self) {
        self.cluster.stop();
    }

    /// Whether the node has been stopped.
    pub fn is_stopped(&self) -> bool {
        self.cluster.tasks.is_stopped()
    }

    /// The names of the nodes this node is connected to, sorted.
    pub fn nodes(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.cluster.members.list().iter().filter(|p| p.is_up()).map(|p| p.name()).collect();
        names.sort();
        names
    }

    /// The specs of every known member, connected or not (this node excluded).
    pub fn members(&self) -> Vec<NodeSpec> {
        self.cluster.members.list().iter().map(|peer| peer.spec()).collect()
    }

    /// The spec of the member called `node`, connected or not, this node included; `None`
    /// for a node this one does not know (or no longer knows: it left).
    pub fn node_spec(&self, node: &str) -> Option<NodeSpec> {
        if node == self.name() {
            return Some(self.cluster.spec().clone());
        }
        self.cluster.members.by_name(node).map(|peer| peer.spec())
    }

    /// The name of the node `pid` runs on (OTP's `node(Pid)`): this node's for a local pid, a
    /// member's for a remote one (in managed mode, also one the directory knows); `None` when
    /// the pid's node is not known here.
    pub fn node_name(&self, pid: Pid) -> Option<String> {
        self.name_of(pid.node())
    }

    /// The name of node `id`: this node's, a member's, or (in managed mode) one the directory
    /// knows; `None` when it is not known here.
    pub fn name_of(&self, id: NodeId) -> Option<String> {
        if id == self.id() {
            return Some(self.name().to_owned());
        }
        let member = self.cluster.members.get(id).map(|peer| peer.name());
        member.or_else(|| self.cluster.members.directory().get(id).map(|spec| spec.name))
    }

    /// Whether `node` is connected.
    pub fn is_connected(&self, node: &str) -> bool {
        self.cluster.members.by_name(node).is_some_and(|peer| peer.is_up())
    }

    /// Claims the connection to `node` for the caller's layer (Paxos to its acceptors,
    /// HyParView to its neighbours) until the returned guard is dropped: see
    /// [`KeepConnection`]. In [`Membership::Managed`](crate::Membership::Managed) mode the
    /// connection then stays open however idle it is, is opened now if `node`'s address is
    /// known (from a handshake or the address gossip), or as soon as it is learnt, and is opened
    /// again after a loss; no other layer closes it but [`Node::disconnect_node`]. In other
    /// modes every connection is kept anyway. Claims on this node's own name change nothing.
    ///
    /// ```no_run
    /// # fn demo(node: shoal_transport::Node) {
    /// let acceptor = node.keep("b");
    /// // ... the connection to b stays open while `acceptor` lives ...
    /// drop(acceptor);
    /// # }
    /// ```
    pub fn keep(&self, node: &str) -> KeepConnection {
        let keep = KeepConnection::new(self.cluster.keeps.clone(), node);
        if node != self.name() && *self.membership() == Membership::Managed {
            self.cluster.reach_name(node);
        }
        keep
    }

    /// Closes the connections to `node` at once, whatever holds them (claims, monitors, calls
    /// in flight): the forceful close, for operators and tests; layers release their claims
    /// instead ([`KeepConnection`]). The node goes down with [`DownReason::Disconnected`]. Its
    /// connections are set up again after the reconnect backoff, except in
    /// [`Membership::Managed`](crate::Membership::Managed) mode, where the node is forgotten
    /// until a send, a claim or a join opens them again (at once, after the backoff, if a
    /// layer here claims them). Returns whether it was connected.
    pub fn disconnect_node(&self, node: &str) -> bool {
        match self.cluster.members.by_name(node) {
            Some(peer) => self.cluster.down(&peer, DownReason::Disconnected),
            None => false,
        }
    }

    /// Node up and down events, from now on, for code outside processes. The stream holds
    /// a bounded backlog: a receiver that falls behind skips events and is told it lagged.
    /// Processes use [`Node::monitor_nodes`], which loses nothing.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.cluster.events.subscribe()
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
        let watchers = &self.cluster.node_watchers;
        watchers.subscribe(self.cluster.runtime(), Arc::downgrade(watchers), pid)
    }

    /// Ends `pid`'s subscription to node events; returns whether it had one. Events already
    /// in its mailbox stay there.
    pub fn demonitor_nodes(&self, pid: Pid) -> bool {
        self.cluster.node_watchers.unsubscribe(pid)
    }

    /// The local processes subscribed to node events, sorted.
    pub fn node_monitors(&self) -> Vec<Pid> {
        self.cluster.node_watchers.subscribers()
    }

    /// Resolves with the reason when `node` goes down (at once with
    /// [`DownReason::NotConnected`] if it is not connected now).
    pub fn monitor_node(&self, node: &str) -> impl Future<Output = DownReason> + Send + 'static {
        let mut events = self.cluster.events.subscribe();
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
        self.cluster.members.by_name(node).map(|peer| peer.stats())
    }

    /// The protocol version this node speaks with `node`: the one the latest handshake between
    /// them negotiated (the highest both speak, see [`crate::handshake::negotiate`]); `None`
    /// for a node that is not a member, or before any of its connections was made.
    pub fn peer_version(&self, node: &str) -> Option<u32> {
        self.cluster.members.by_name(node).and_then(|peer| peer.version())
    }

    /// Injects a fault into the traffic with `node` (which need not be known yet).
    pub fn inject_fault(&self, node: &str, direction: Direction, fault: Fault) {
        tracing::info!(node = %self.name(), peer = node, ?direction, ?fault, "fault injected");
        self.cluster.wiring.faults.set(NodeId::from_name(node), direction, fault);
    }

    /// Removes the faults on the traffic with `node`.
    pub fn heal(&self, node: &str) {
        tracing::info!(node = %self.name(), peer = node, "faults healed");
        self.cluster.wiring.faults.heal(Some(NodeId::from_name(node)));
        self.cluster.kick(node);
    }

    /// Removes every fault.
    pub fn heal_all(&self) {
        self.cluster.wiring.faults.heal(None);
        for peer in self.cluster.members.list() {
            self.cluster.kick(&peer.name());
        }
    }
}

fn join_error(error: ConnError) -> JoinError {
    match error {
        ConnError::Handshake(error) => JoinError::Handshake(error),
        ConnError::Timeout => JoinError::Timeout,
        other => JoinError::Connect(other.to_string()),
    }
}
