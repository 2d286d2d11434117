//! Shoal's transport between nodes (the ideas of Erlang's Partisan).
//!
//! A [`Node`] is a `shoal_process` runtime with a name, an incarnation (fresh at every start)
//! and a listen address, connected to other nodes over TCP:
//!
//! - a handshake (Noise `NNpsk0` over a 32-byte cluster [`ClusterKey`]; the protocol version
//!   negotiated per connection, see "Rolling upgrades" below; names and incarnations checked):
//!   [`handshake`];
//! - every connection after its handshake in sealed records (ChaCha20-Poly1305, 64 KiB at
//!   most, the nonce the record's number), so any alteration, replay, reorder or injection
//!   closes it; encrypted too unless [`Protection::Authenticated`] is chosen: [`record`];
//! - length-prefixed msgpack frames inside the records, in the connection's version, with a
//!   maximum size, decoded strictly; a bad frame closes only its connection: [`wire`];
//! - named channels with parallel connections, a control channel for membership and
//!   heartbeats apart from data, monotonic channels, coalesced writes;
//! - full-mesh membership by gossip (with tombstones for nodes that left, and restarted nodes
//!   replacing their old incarnation), static membership, or connections that follow use
//!   ([`Membership::Managed`], for HyParView's partial views: opened on demand, kept while a
//!   layer claims them with [`Node::keep`], closed when idle; see "Any send reaches any
//!   member" below); heartbeats and connection errors detect
//!   failures; reconnection with backoff; [`Node::monitor_node`] and
//!   [`Node::subscribe`] for node up and down events with reasons, and
//!   [`Node::monitor_nodes`] to have them delivered to a process's mailbox as signals (as
//!   OTP's `monitor_nodes`); [`Node::node_spec`] of any member and [`Node::node_name`] of
//!   any pid (OTP's `node(Pid)`);
//! - remote process operations through the runtime's seam (`shoal_process::remote`): cast,
//!   call, monitors (a `Down` with `noconnection` when the node is lost) and links work on
//!   remote pids exactly as on local ones, and a process registered by name on a node is
//!   reached (cast, call, monitor) by its name there (`shoal_process::Dest::NameOn`), resolved
//!   on that node; plus remote spawn by factory, `is_alive` for any pid, and RPC to handlers
//!   registered by name;
//! - services ([`Node::open_service`]): the same named endpoint on every node, through which
//!   protocol drivers (Paxos, Plumtree) exchange their cores' messages;
//! - fault injection ([`Node::inject_fault`], [`Node::heal`]) for tests and the cluster test.
//!
//! What it does not do: broadcast (`shoal-broadcast`), consensus (`shoal-paxos`), per-node
//! identities (every node holds the one cluster key, so any holder can join and claim any
//! name; keep the key as secret as the cluster's data), or hide traffic patterns (record
//! lengths and timing show). Socket I/O sits behind [`net::Network`], so a simulated network can stand
//! in for TCP.
//!
//! # Any send reaches any member
//!
//! In a full mesh every member is connected to every other. In [`Membership::Managed`] mode
//! (partial views) a node is connected to a few, and a send to another member (to a pid
//! there, a service's message, an RPC) **opens a connection on demand**: the node keeps a
//! bounded directory of where members listen (learnt from handshakes and from the address
//! gossip of its connections), queues what is sent in the peer's bounded queue while it
//! connects, and closes the connection once nothing has used it for
//! [`NodeBuilder::idle_close`]. A layer that needs a connection for good (Paxos to its
//! acceptors, HyParView to its neighbours) holds a [`KeepConnection`]; no layer closes what
//! another keeps.
//!
//! We chose on-demand connections over Partisan's transitive forwarding (relaying a message
//! through the overlay's neighbours): forwarding adds a hop, and a queue per hop, to every
//! message, and breaks what the transport guarantees between two nodes, the order of what
//! one process sends another and the back-pressure of a bounded queue per peer; a direct
//! connection keeps both. The cost is the directory: memory in the number of members
//! (bounded, 4,096 entries), and a handshake's delay on the first send to a node.
//!
//! # Security
//!
//! Every node of a cluster holds its one [`ClusterKey`] (32 random bytes: `shoal-node generate-key`,
//! or [`ClusterKey::generate`]). The handshake is Noise `NNpsk0` over it: a connection opens only
//! between holders of the key, and each connection gets fresh keys of its own. The first
//! message is sealed under the key alone, so whoever records one can test guesses of the key
//! offline: harmless for 32 random bytes, which no one can guess, and the reason a key must
//! never be a password ([`ClusterKey::from_bytes`] refuses keys that cannot be random). After the
//! handshake every byte is in sealed records ([`record`]): [`Protection::Encrypted`] by
//! default, [`Protection::Authenticated`] (readable, still tamper-proof) by choice. Until a
//! peer has proved it holds the key, its connection counts against bounds per address and in
//! all, with short deadlines ([`NodeBuilder::max_handshakes`] and the settings after it).
//!
//! # Rolling upgrades
//!
//! Each build speaks a range of protocol versions ([`handshake::VERSIONS`]; this one speaks
//! versions 2 to 4: 3 adds [`wire::Frame::Keep`], 4 the traced calls of "Tracing" below,
//! which go as plain calls to a peer of version 2 or 3). On every
//! connection the initiator offers its range and the responder picks the highest version
//! both speak ([`handshake::negotiate`]), or refuses the connection,
//! naming both ranges, when they share none. The version chosen is the connection's: its
//! frames are encoded and decoded in a [`wire::Format`] of that version, and
//! [`Node::peer_version`] tells which version a node speaks with each peer. A later release
//! that changes the wire speaks its version and the one before (3 and 2, say), keeps the old
//! layout for the old version, and so speaks version 2 with the nodes not yet upgraded and 3
//! with the rest. To upgrade a cluster to such a release:
//!
//! 1. Restart one node at a time on the new build, with the same name, key and data
//!    directory; wait until every other node lists it again ([`Node::nodes`]) before the next.
//! 2. Mixed, every connection that involves an old node speaks the old version
//!    ([`Node::peer_version`] shows it); once the last node is restarted, every connection
//!    speaks the new one.
//! 3. Never skip a version: a node of N+1 speaks N and N+1, not N−1. Roll back the same way,
//!    one node at a time.
//!
//! Version 2 is the first with this handshake: nodes of version 1 (the HMAC handshake, no
//! records) cannot be upgraded in place, and need one full restart. Changing the cluster key
//! also needs a full restart. The Paxos acceptors' files carry a format version too
//! (`shoal-paxos`'s file store): a build refuses, with the version named, a file in a format
//! it does not read, rather than misread it.
//!
//! # Tracing
//!
//! Shoal logs and makes spans through `tracing`; it installs no subscriber. These spans, all
//! at level `INFO`, exist when the subscriber records them, and cost nothing (no span, no
//! larger task, no larger frame) when it does not:
//!
//! | span | where | fields |
//! |---|---|---|
//! | `process` | around every poll of each process's task (`shoal-process`) | `node` (name), `pid` |
//! | `call` | the caller's side of a call to a process on another node, until its answer | `to` (pid, or `name on node`), `trace_id`, `span_id` |
//! | `handle_call` | the callee's handler of such a call, inside its `process` span | `trace_id`, `parent_span_id` (the caller's `span_id`), `span_id` |
//!
//! So every line a process logs shows its node and pid, and the lines of one call across
//! nodes share a `trace_id` (32 hex digits, W3C Trace Context's). The caller's trace context
//! (trace id, its `call` span's id, the sampled flag: [`shoal_process::TraceContext`])
//! travels in the call frame ([`wire::Frame::TracedCall`], protocol version 4); a call made
//! while handling a traced call continues its trace, and any other call starts a trace of its
//! own. A context that is not valid (a zero id) is ignored, and counted
//! ([`PeerStats::ignored_trace_contexts`]).
//!
//! **One trace in OpenTelemetry**: build with the `opentelemetry` feature and give the
//! subscriber a `tracing-opentelemetry` layer (versions compatible with `opentelemetry`
//! 0.33 and `tracing-opentelemetry` 0.34). The `call` span's OpenTelemetry context is then
//! the one the frame carries, and the callee's `handle_call` span takes it as its (remote)
//! parent, so the exporter shows the caller's spans, the call and the callee's handling as
//! one trace; the `trace_id` fields hold OpenTelemetry's trace id too.
//!
//! ```no_run
//! # #[cfg(feature = "opentelemetry")]
//! # fn install(provider: &opentelemetry_sdk::trace::SdkTracerProvider) {
//! use opentelemetry::trace::TracerProvider as _;
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! // `provider`: an OpenTelemetry SDK tracer provider with the user's exporter.
//! let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("my-service"));
//! let subscriber = tracing_subscriber::registry().with(layer);
//! tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
//! # }
//! ```
//!
//! ```
//! use std::time::Duration;
//! use shoal_process::{Codec, Context, Process, ReplyTo};
//! use shoal_transport::Node;
//!
//! struct Echo;
//!
//! impl Process for Echo {
//!     type Message = ();
//!     type Call = String;
//!     type Reply = String;
//!
//!     async fn handle_cast(&mut self, _: (), _: &mut Context<Self>) {}
//!
//!     async fn handle_call(&mut self, text: String, reply: ReplyTo<String>, _: &mut Context<Self>) {
//!         reply.send(text.to_uppercase());
//!     }
//!
//!     fn remote_messages() -> Option<Codec<Self>> {
//!         Some(Codec::msgpack())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = shoal_transport::ClusterKey::generate();
//! let a = Node::builder("a", key.clone()).start().await?;
//! let b = Node::builder("b", key).start().await?;
//! b.join(a.listen_addr()).await?;
//!
//! let echo = a.runtime().spawn(Echo).pid();
//! let reply: String = b.runtime().call(echo, "hi".to_owned(), Duration::from_secs(5)).await?;
//! assert_eq!(reply, "HI");
//! # a.shutdown(); b.shutdown();
//! # Ok(()) }
//! ```

mod admission;
mod answers;
mod cluster;
mod config;
mod conn;
mod directory;
mod entropy;
mod fault;
pub mod handshake;
mod keep;
mod membership;
pub mod net;
mod node;
mod node_watchers;
mod peer;
mod progress;
mod queue;
pub mod record;
mod remote;
mod requests;
mod rpc;
mod service;
mod spec;
mod tasks;
mod trace;
pub mod wire;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

pub use config::{Membership, NodeBuilder};
pub use fault::{Direction, Fault};
pub use handshake::{ClusterKey, ClusterKeyError, HandshakeError, Protection};
pub use keep::KeepConnection;
pub use node::Node;
pub use peer::PeerStats;
pub use service::{Inbox, Incoming, Service, ServiceError};
pub use spec::{CONTROL_CHANNEL, ChannelConfig, DEFAULT_CHANNEL, NodeSpec};
pub use wire::Failure;

// Every handle a user shares across tasks and threads is `Send` and `Sync`: checked when the
// crate builds, so a change that breaks it does not compile.
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Node>();
    send_and_sync::<NodeBuilder>();
    send_and_sync::<ClusterKey>();
    send_and_sync::<Service<Vec<u8>>>();
    send_and_sync::<NodeSpec>();
    send_and_sync::<KeepConnection>();
};

/// A change in the set of connected nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// A node is connected.
    Up {
        /// Its name.
        node: String,
        /// Its incarnation.
        incarnation: u64,
    },
    /// A node is no longer connected.
    Down {
        /// Its name.
        node: String,
        /// The incarnation that went down.
        incarnation: u64,
        /// Why.
        reason: DownReason,
    },
}

/// Why a node went down.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownReason {
    /// Nothing came from it for this long (more than the failure timeout).
    HeartbeatTimeout(Duration),
    /// A connection to it failed or was closed.
    ConnectionLost(String),
    /// [`Node::disconnect_node`] was called.
    Disconnected,
    /// It left the cluster.
    Left,
    /// It restarted: a new incarnation replaced the old one.
    Restarted,
    /// It was not connected in the first place.
    NotConnected,
    /// Nothing used the connections for the idle timeout and nothing holds them
    /// ([`Membership::Managed`], see [`NodeBuilder::idle_close`]); a send opens them again.
    Idle,
}

impl fmt::Display for DownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HeartbeatTimeout(silent) => write!(f, "no heartbeat for {silent:?}"),
            Self::ConnectionLost(why) => write!(f, "connection lost: {why}"),
            Self::Disconnected => f.write_str("disconnected"),
            Self::Left => f.write_str("left the cluster"),
            Self::Restarted => f.write_str("restarted with a new incarnation"),
            Self::NotConnected => f.write_str("not connected"),
            Self::Idle => f.write_str("idle, and kept by no one"),
        }
    }
}

/// A node that did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeStartError {
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The process runtime could not be built (bad node name, no tokio runtime).
    #[error(transparent)]
    Runtime(#[from] shoal_process::BuildError),
    /// The listen address could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, String),
}

/// A join that did not happen. The node runs on, alone or with the members it had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// No connection could be made.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The handshake failed (another cluster key, no common version, name clash, refused).
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The other node was not admitted here.
    #[error("not admitted: {0}")]
    Refused(String),
    /// The node did not come up in time.
    #[error("timed out")]
    Timeout,
}

/// A node-level operation on another node that failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The node is not connected.
    #[error("node {0} is not connected")]
    NoConnection(String),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// The other node answered with a failure.
    #[error(transparent)]
    Failed(#[from] Failure),
    /// The arguments could not be encoded.
    #[error("cannot encode: {0}")]
    Encode(String),
    /// The answer could not be decoded as the expected type.
    #[error("cannot decode the answer: {0}")]
    Decode(String),
    /// No channel of that name is configured on this node.
    #[error("no channel named {0:?}")]
    NoSuchChannel(String),
    /// A local send failed.
    #[error("{0}")]
    Send(String),
}
