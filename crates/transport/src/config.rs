//! A node's configuration and its builder.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use shoal_process::Runtime;

use crate::handshake::{ClusterKey, Protection};
use crate::net::{Network, TcpNetwork};
use crate::{CONTROL_CHANNEL, ChannelConfig, DEFAULT_CHANNEL, Node, NodeStartError};

/// See [`NodeBuilder::hello_timeout`].
const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_millis(500);

impl NodeConfig {
    /// See [`NodeBuilder::stall_timeout`].
    pub(crate) fn stall_timeout(&self) -> Duration {
        self.stall_timeout.unwrap_or(self.failure_timeout * 2)
    }

    /// See [`NodeBuilder::hello_timeout`].
    pub(crate) fn hello_timeout(&self) -> Duration {
        self.hello_timeout.unwrap_or(DEFAULT_HELLO_TIMEOUT.min(self.connect_timeout))
    }

    /// See [`NodeBuilder::reserved_handshakes`].
    pub(crate) fn reserved_handshakes(&self) -> usize {
        self.reserved_handshakes.unwrap_or(self.max_handshakes / 4)
    }
}

/// How a node finds its peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Membership {
    /// Every node connects to every other; members are learnt by gossip (the default).
    FullMesh,
    /// Only these addresses, and nodes that connect to this one: nothing is learnt by gossip.
    Static(Vec<SocketAddr>),
    /// Connections follow use, not membership: for partial views (HyParView in
    /// `shoal-broadcast`) and clusters too large for a full mesh.
    ///
    /// - A layer that needs the connection to a node keeps it ([`Node::keep`]): the
    ///   transport connects to the node, and again after a loss, while the claim is held.
    /// - A send to a node this one is not connected to (a cast, call, exit or monitor to a
    ///   pid there, a service's message, an RPC) opens a connection on demand, if the node's
    ///   address is known: from a handshake, or from the address gossip of the nodes this one
    ///   is connected to (a bounded directory; gossip never opens a connection by itself).
    ///   What is sent meanwhile waits in the peer's bounded queue.
    /// - A connection closes when nothing holds it: no claim on either node, no monitor, link
    ///   or call across it, and no frame either way (heartbeats aside) for
    ///   [`NodeBuilder::idle_close`] (its node goes down with
    ///   [`DownReason::Idle`](crate::DownReason::Idle)), or sooner when its last claim was
    ///   let go ([`KeepConnection::let_go`](crate::KeepConnection::let_go)).
    ///   [`Node::disconnect_node`] closes one at once, whatever holds it.
    /// - A peer whose session ends (lost, timed out, idle, disconnected) is forgotten rather
    ///   than reconnected, unless it is kept. Node up and down events mean what they always do,
    ///   for the peers this node is connected to.
    Managed,
}

/// Everything a node is started with. Built with [`Node::builder`].
#[derive(Clone)]
pub(crate) struct NodeConfig {
    pub(crate) name: String,
    pub(crate) listen: SocketAddr,
    pub(crate) key: ClusterKey,
    pub(crate) protection: Protection,
    pub(crate) channels: BTreeMap<String, ChannelConfig>,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) failure_timeout: Duration,
    /// `None`: twice the failure timeout.
    pub(crate) stall_timeout: Option<Duration>,
    pub(crate) connect_timeout: Duration,
    /// `None`: 500 ms, or the connect timeout if that is shorter.
    pub(crate) hello_timeout: Option<Duration>,
    pub(crate) max_handshakes: usize,
    /// `None`: a quarter of `max_handshakes`.
    pub(crate) reserved_handshakes: Option<usize>,
    pub(crate) max_handshakes_per_address: usize,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) gossip_interval: Duration,
    pub(crate) max_frame_bytes: usize,
    pub(crate) peer_queue_frames: usize,
    pub(crate) idle_close: Duration,
    pub(crate) membership: Membership,
    pub(crate) seed: u64,
    pub(crate) runtime: Option<Runtime>,
    pub(crate) network: Arc<dyn Network>,
}

/// Configures and starts a [`Node`].
///
/// Defaults: listen on `127.0.0.1:0`; channels `control` (1 connection) and `default`
/// (1 connection); heartbeat every 250 ms, a peer silent for 2 s is down; connect and handshake
/// within 2 s, an incoming connection's first frame within 500 ms; at most 256 incoming
/// handshakes at once (64 of them kept for members), 32 from one address; reconnect after
/// 100 ms, backing off to 2 s; gossip every second; frames up to 16 MiB; 65,536 queued casts
/// and calls per peer; full-mesh membership (managed: unused connections close after 30 s
/// idle); every connection encrypted and authenticated.
#[must_use]
pub struct NodeBuilder {
    config: NodeConfig,
}

impl NodeBuilder {
    pub(crate) fn new(name: String, key: ClusterKey) -> Self {
        let mut channels = BTreeMap::new();
        channels.insert(CONTROL_CHANNEL.to_owned(), ChannelConfig::new());
        channels.insert(DEFAULT_CHANNEL.to_owned(), ChannelConfig::new());
        Self {
            config: NodeConfig {
                name,
                listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                key,
                protection: Protection::Encrypted,
                channels,
                heartbeat_interval: Duration::from_millis(250),
                failure_timeout: Duration::from_secs(2),
                stall_timeout: None,
                connect_timeout: Duration::from_secs(2),
                hello_timeout: None,
                max_handshakes: 256,
                reserved_handshakes: None,
                max_handshakes_per_address: 32,
                backoff_min: Duration::from_millis(100),
                backoff_max: Duration::from_secs(2),
                gossip_interval: Duration::from_secs(1),
                max_frame_bytes: 16 * 1024 * 1024,
                peer_queue_frames: 65_536,
                idle_close: Duration::from_secs(30),
                membership: Membership::FullMesh,
                seed: 0,
                runtime: None,
                network: Arc::new(TcpNetwork),
            },
        }
    }

    /// How the records of this node's connections are protected after their handshakes: all
    /// are authenticated (alteration, replay, reorder or injection closes the connection),
    /// and encrypted unless [`Protection::Authenticated`] is chosen. Each node decides for the
    /// connections it opens, which carry what it sends; it accepts either from its peers.
    pub fn protection(mut self, protection: Protection) -> Self {
        self.config.protection = protection;
        self
    }

    /// The address to listen on; port 0 picks a free one (see [`Node::listen_addr`]).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.config.listen = addr;
        self
    }

    /// Adds or replaces a channel. The `control` channel's parallelism stays 1.
    pub fn channel(mut self, name: &str, config: ChannelConfig) -> Self {
        self.config.channels.insert(name.to_owned(), config);
        self
    }

    /// How often a ping goes to each peer, and how long a silent peer stays up. A peer is
    /// taken down at the first heartbeat tick past the failure timeout; when that tick comes
    /// more than two intervals after the one before (this node stalled, and may not have read
    /// what the peer sent), one tick later, once per silence.
    pub fn heartbeat(mut self, interval: Duration, failure_timeout: Duration) -> Self {
        self.config.heartbeat_interval = interval;
        self.config.failure_timeout = failure_timeout;
        self
    }

    /// How long a connection with bytes waiting may go without its peer reading at least
    /// 64 KiB of them (or all of them, if fewer wait) before it counts as failed and the peer
    /// goes down (see [`DownReason::ConnectionLost`](crate::DownReason)). Heartbeats travel on
    /// the control channel, so this is what notices a data connection that stopped moving.
    /// Twice the failure timeout unless set; at least twice the heartbeat interval.
    pub fn stall_timeout(mut self, timeout: Duration) -> Self {
        self.config.stall_timeout = Some(timeout);
        self
    }

    /// How long a connection and its handshake may take, both ways (2 s by default). An
    /// incoming connection must besides send its first frame within the
    /// [hello timeout](Self::hello_timeout).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// How long an incoming connection may take to send its first handshake message (and,
    /// once answered, its confirmation) before it is closed: 500 ms (or the connect timeout,
    /// if shorter) unless set; not zero, and at most the connect timeout. Short, so that
    /// connections that say nothing, or replay a recorded first message, hold a handshake slot
    /// only briefly (a connecting node sends each as soon as it can).
    pub fn hello_timeout(mut self, timeout: Duration) -> Self {
        self.config.hello_timeout = Some(timeout);
        self
    }

    /// How many incoming connections may be in their handshake at once, from any address (a
    /// connection counts until its peer has proved it holds the cluster key); one more is closed
    /// at once, or takes the slot of the busiest address's oldest handshake when that one
    /// holds a share at least two larger than its own address's. 256 by default; at least 1,
    /// and more than [`reserved_handshakes`](Self::reserved_handshakes).
    pub fn max_handshakes(mut self, handshakes: usize) -> Self {
        self.config.max_handshakes = handshakes;
        self
    }

    /// How many of the [`max_handshakes`](Self::max_handshakes) are kept for members, so that
    /// strangers cannot keep a member from reconnecting: for connections whose `Hello` names
    /// a node that is a member here, and, when the rest is full, for connections from an
    /// address from which a peer has proved it knows the key before. A quarter of
    /// `max_handshakes` unless set (64 by default); fewer than `max_handshakes`; 0 keeps none.
    pub fn reserved_handshakes(mut self, handshakes: usize) -> Self {
        self.config.reserved_handshakes = Some(handshakes);
        self
    }

    /// How many incoming connections from one address (an IPv6 one by its /64 prefix) may be
    /// in their handshake at once; one more is closed at once. 32 by default; at least the
    /// number of connections this node opens to a peer (its channels' parallelism, summed),
    /// since a peer opens all of its connections at once.
    pub fn max_handshakes_per_address(mut self, handshakes: usize) -> Self {
        self.config.max_handshakes_per_address = handshakes;
        self
    }

    /// The first and the longest wait between reconnection attempts (doubling, with jitter).
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.config.backoff_min = min;
        self.config.backoff_max = max;
        self
    }

    /// How often membership is gossiped in full-mesh mode.
    pub fn gossip_interval(mut self, interval: Duration) -> Self {
        self.config.gossip_interval = interval;
        self
    }

    /// The largest frame sent or accepted; a peer's larger frame closes its connection.
    pub fn max_frame_bytes(mut self, bytes: usize) -> Self {
        self.config.max_frame_bytes = bytes;
        self
    }

    /// How many casts and calls may wait for one peer before senders wait (or `try_` senders
    /// fail).
    pub fn peer_queue_frames(mut self, frames: usize) -> Self {
        self.config.peer_queue_frames = frames;
        self
    }

    /// In [`Membership::Managed`] mode, how long a connection that nothing holds (no
    /// [`Node::keep`] claim on either node, no monitor, link or call across it) may carry no
    /// frame either way, heartbeats aside, before it closes; a later send opens it again. 30 s
    /// by default; not zero. It is checked at each heartbeat, so it is in effect at least a
    /// heartbeat interval. Other modes keep every connection.
    pub fn idle_close(mut self, idle: Duration) -> Self {
        self.config.idle_close = idle;
        self
    }

    /// Full mesh (default), static, or managed by a layer above ([`Membership::Managed`]).
    pub fn membership(mut self, membership: Membership) -> Self {
        self.config.membership = membership;
        self
    }

    /// Seeds the node's randomness (backoff jitter, fault injection's drops), for replays.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// Runs on this process runtime instead of a new one; its node name must be the node's.
    pub fn runtime(mut self, runtime: Runtime) -> Self {
        self.config.runtime = Some(runtime);
        self
    }

    /// Uses another network than TCP (a simulated one, in tests).
    pub fn network(mut self, network: Arc<dyn Network>) -> Self {
        self.config.network = network;
        self
    }

    /// Checks the configuration, listens, and starts the node.
    pub async fn start(mut self) -> Result<Node, NodeStartError> {
        self.validate()?;
        Node::start(self.config).await
    }

    fn validate(&mut self) -> Result<(), NodeStartError> {
        let config = &mut self.config;
        let invalid = |what: String| Err(NodeStartError::InvalidConfig(what));
        if let Some(control) = config.channels.get_mut(CONTROL_CHANNEL) {
            *control = ChannelConfig::new();
        }
        if let Some((name, _)) = config.channels.iter().find(|(_, c)| c.parallelism == 0) {
            return invalid(format!("channel {name:?} has parallelism 0"));
        }
        if config.heartbeat_interval.is_zero()
            || config.failure_timeout <= config.heartbeat_interval
        {
            return invalid("the failure timeout must be longer than a non-zero heartbeat".into());
        }
        let stall_timeout = *config.stall_timeout.get_or_insert(config.failure_timeout * 2);
        if stall_timeout < config.heartbeat_interval * 2 {
            return invalid(format!(
                "the stall timeout {stall_timeout:?} must be at least twice the heartbeat interval"
            ));
        }
        if config.max_frame_bytes < 1024 || config.max_frame_bytes > u32::MAX as usize {
            return invalid(format!(
                "max_frame_bytes {} is not within 1 KiB..4 GiB",
                config.max_frame_bytes
            ));
        }
        if config.idle_close.is_zero() {
            return invalid("idle_close must be non-zero".into());
        }
        if config.peer_queue_frames == 0 {
            return invalid("peer_queue_frames must be at least 1".into());
        }
        if config.backoff_min.is_zero() || config.backoff_max < config.backoff_min {
            return invalid("the reconnect backoff must be non-zero and min <= max".into());
        }
        if config.connect_timeout.is_zero() {
            return invalid("the connect timeout must be non-zero".into());
        }
        let hello_timeout = config.hello_timeout();
        if hello_timeout.is_zero() || hello_timeout > config.connect_timeout {
            return invalid(format!(
                "the hello timeout {hello_timeout:?} must be non-zero and at most the connect \
                 timeout {:?}",
                config.connect_timeout
            ));
        }
        let reserved = config.reserved_handshakes();
        if config.max_handshakes == 0 || reserved >= config.max_handshakes {
            return invalid(format!(
                "max_handshakes {} must be at least 1 and more than the {reserved} reserved",
                config.max_handshakes
            ));
        }
        let connections: usize =
            config.channels.values().map(|channel| usize::from(channel.parallelism)).sum();
        if config.max_handshakes_per_address < connections.max(1) {
            return invalid(format!(
                "max_handshakes_per_address {} is less than the {connections} connections a \
                 node opens to a peer",
                config.max_handshakes_per_address
            ));
        }
        Ok(())
    }
}
