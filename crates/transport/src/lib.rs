//! Shoal's transport between nodes (the ideas of Erlang's Partisan).
//!
//! A [`Node`] is a `shoal_process` runtime with a name, an incarnation (fresh at every start)
//! and a listen address, connected to other nodes over TCP:
//!
//! - an authenticated handshake (HMAC-SHA256 challenge-response over a shared secret that
//!   never crosses the wire; versions, names and incarnations checked): [`handshake`];
//! - length-prefixed msgpack frames with a maximum size; a bad frame closes only its
//!   connection: [`wire`];
//! - named channels with parallel connections, a control channel for membership and
//!   heartbeats apart from data, monotonic channels, coalesced writes;
//! - full-mesh membership by gossip (with tombstones for nodes that left, and restarted nodes
//!   replacing their old incarnation), static membership, or membership managed by a layer
//!   above ([`Membership::Managed`], for HyParView); heartbeats and connection errors detect
//!   failures; reconnection with backoff; [`Node::monitor_node`] and
//!   [`Node::subscribe`] for node up and down events with reasons, and
//!   [`Node::monitor_nodes`] to have them delivered to a process's mailbox as signals (as
//!   OTP's `monitor_nodes`); [`Node::node_spec`] of any member and [`Node::node_name`] of
//!   any pid (OTP's `node(Pid)`);
//! - remote process operations through the runtime's seam (`shoal_process::remote`): cast,
//!   call, monitors (a `Down` with `noconnection` when the node is lost) and links work on
//!   remote pids exactly as on local ones, and a monitor by registered name on a node
//!   (`Context::monitor_name`) is resolved on that node; plus named processes on a node, remote spawn by
//!   factory, `is_alive` for any pid, and RPC to handlers registered by name;
//! - services ([`Node::open_service`]): the same named endpoint on every node, through which
//!   protocol drivers (Paxos, Plumtree) exchange their cores' messages;
//! - fault injection ([`Node::inject_fault`], [`Node::heal`]) for tests and the cluster test.
//!
//! What it does not do: broadcast (`shoal-broadcast`), consensus (`shoal-paxos`), or
//! encryption (frames are authenticated at connection set-up, not encrypted; run it on a
//! trusted network). Socket I/O sits behind [`net::Network`], so a simulated network can stand
//! in for TCP.
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
//!     fn codec() -> Option<Codec<Self>> {
//!         Some(Codec::msgpack())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let a = Node::builder("a", "secret").start().await?;
//! let b = Node::builder("b", "secret").start().await?;
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
mod fault;
pub mod handshake;
mod membership;
pub mod net;
mod node;
mod node_watchers;
pub mod noise;
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
pub mod wire;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

pub use config::{Membership, NodeBuilder};
pub use fault::{Direction, Fault};
pub use handshake::{HandshakeError, Secret};
pub use node::Node;
pub use peer::PeerStats;
pub use service::{Inbox, Incoming, Service, ServiceError};
pub use spec::{CONTROL_CHANNEL, ChannelConfig, DEFAULT_CHANNEL, NodeSpec};
pub use wire::Failure;

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
        }
    }
}

/// A node that did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
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
    /// The handshake failed (wrong secret, version, name clash, refused).
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
