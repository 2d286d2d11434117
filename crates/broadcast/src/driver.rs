//! The broadcast service: HyParView and Plumtree over a [`shoal_transport::Node`].
//!
//! A [`Broadcast`] is a handle to one tokio task per node that runs one
//! [`Overlay`](crate::core::Overlay) core (HyParView and the policy that keeps the node in the
//! overlay) and one [`Plumtree`](crate::core::Plumtree) core per registered topic, following
//! the driver contract of the [`core`](crate::core) module: it feeds the cores messages, node
//! events, connection outcomes and time, sends what they ask to send, opens and closes the
//! connections the overlay names, and decides nothing a test of the protocols would need to
//! check. Several applications share one overlay: each registers a handler for a [`Topic`]
//! ([`Broadcast::register`]) and broadcasts on it with [`Broadcast::broadcast`]; every tree
//! message carries the topic's name, so each reaches its own Plumtree core on the other side.
//!
//! ```text
//!   Broadcast (handle) ── commands ──►  driver task  ◄── Inbox<Wire> (service "broadcast")
//!                                       │  Overlay<Contact> ──NeighbourUp/Down──► Plumtree × topics
//!   Node events (up/down) ────────────► │  ▲ handle_timeout when poll_timeout is due
//!   connections opened ───────────────► │
//!                                       └──► Service::send / Node::join + Node::keep
//!                                            (Connect, NeighbourUp) / KeepConnection::let_go
//!                                            (Disconnect)
//! ```
//!
//! **Messages** travel over a transport service ([`Node::open_service`]), tagged with the
//! sending node: overlay messages, tree messages (topic name + Plumtree message, ids and
//! payloads encoded with msgpack by the handler's types), and anti-entropy exchanges.
//!
//! **Connections** follow the node's membership, and the overlay core's policy (its rules are
//! listed on [`Overlay`](crate::core::Overlay)):
//!
//! - Managed ([`Membership::Managed`]): the overlay claims the connections it needs, and
//!   shares them with the node's other layers. HyParView peers are [`Contact`]s (name and
//!   listen address); a message to a peer that is not connected makes the overlay ask for a
//!   connection, which the driver opens (`Node::join`) and claims (`Node::keep`), the
//!   messages for it waiting (bounded by [`BroadcastConfig::max_unsent_per_peer`]) until it
//!   is up; every active neighbour's connection is claimed too. The overlay lets a connection
//!   to a peer outside the active view go once idle for [`BroadcastConfig::linger`], and at
//!   once when that peer sends DISCONNECT
//!   ([`KeepConnection::let_go`](shoal_transport::KeepConnection::let_go)): the transport then
//!   closes it unless another layer, here or there, still uses it (Paxos to an acceptor, a
//!   process's call, the peer's overlay if it still holds this node as a neighbour). So the
//!   connections open are the active view's and whatever else the node uses; the trees'
//!   neighbours are the active view, whatever stays open. A one-sided link (the peer holds
//!   this node as a neighbour, this node does not) ends when its tree traffic is answered
//!   with DISCONNECT, as over a full mesh.
//! - Full mesh or static: the same cores run over the connections the transport keeps; the
//!   driver opens and closes none. A message to a peer that is not connected counts as that
//!   peer failing.
//!
//! **Rejoining.** A node that knows no peer any more rejoins through the contact it first
//! joined, and joins it again while its active view has room its passive view cannot fill.
//! Peers lost to a failure are retried quickly, one per [`BroadcastConfig::tick`], for
//! [`BroadcastConfig::forget_lost_after`]; HyParView keeps them longer (a bounded set, the
//! oldest dropped first) and retries them with a growing backoff, into a full active view if
//! need be, so two halves of a healed partition link again however long it lasted. Over a full
//! mesh a lost peer that connects again is joined through at once, and connected nodes are
//! offered to HyParView while its active view has room its passive view cannot fill.
//!
//! **Restarts.** A node may restart on another port under the same name: a contact of that
//! name at another address than the transport knows now is dropped from the views and the
//! lost set, so that an old address never holds a view slot under a name that is still
//! connected.
//!
//! **Anti-entropy.** When a Plumtree core asks for an exchange with a peer, the driver calls
//! the handler's [`exchange`](Handler::exchange) and, if it agrees, sends the peer the
//! handler's [`digest`](AntiEntropy::digest); the peer answers with up to
//! [`BroadcastConfig::max_exchange_items`] messages the digest lacks (fewer if more would not
//! fit in [`BroadcastConfig::max_message_bytes`]), which are merged (and so delivered, once:
//! see [`AntiEntropy`]) here.
//!
//! **Nothing is dropped silently.** Every message the driver sends is measured first: one
//! encoded larger than [`BroadcastConfig::max_message_bytes`] (kept below the transport's
//! frame limit, which would drop it with a log line) is not sent, and is counted and logged
//! as an error. Messages dropped at the driver's bounds (a peer's queue of messages waiting
//! for its connection, the connections being opened) and announcements dropped at the
//! trees' bounds are counted too ([`Broadcast::stats`]). Each such loss is one the protocols
//! recover from: a lost payload or announcement is grafted from another announcer or brought
//! by the next anti-entropy exchange (with [`BroadcastConfig::exchange_interval`] set).
//!
//! What the driver does *not* do: detect failures itself (the transport's heartbeats do),
//! retry a broadcast, or persist anything.

mod config;
mod erased;
mod error;
mod log;
mod seen;
mod stats;
mod task;
mod topic;

use std::any::Any;
use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shoal_transport::{Membership, Node};
use tokio::sync::{mpsc, oneshot};

use crate::core::{ConnectionMode, Handler, Peer};

pub use config::BroadcastConfig;
pub use error::{BroadcastError, BroadcastStartError};
pub use log::{Log, MessageId};
pub use seen::{Seen, Summary};
pub use stats::Stats;
pub use topic::Topic;

/// A HyParView peer in the driver: a node's name and the address it listens on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Contact {
    /// The node's name.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl fmt::Display for Contact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

/// Who owns `node`'s connections, read from its membership: in `Membership::Managed` the
/// overlay opens and closes them so that they follow HyParView's active view; in full-mesh or
/// static membership the cores run over the connections the transport keeps.
fn connection_mode(node: &Node) -> ConnectionMode {
    match node.membership() {
        Membership::Managed => ConnectionMode::Managed,
        Membership::FullMesh | Membership::Static(_) => ConnectionMode::Existing,
    }
}

/// A driver's contacts are overlay peers by name: a node restarted on another port is the
/// same node at a new address.
impl Peer for Contact {
    type Name = String;

    fn name(&self) -> &String {
        &self.name
    }
}

/// Anti-entropy for a handler the driver runs: what an exchange sends and answers. (The
/// Plumtree core only says *when* to exchange; the driver carries the exchange itself.)
///
/// **Exactly once.** The driver delivers to a handler only through
/// [`Handler::merge`], and takes its answer as the truth: a message is delivered once if
/// `merge` returns `true` at most once per id, for as long as the node runs, also for a
/// message whose payload the handler has forgotten (late GRAFTs and exchanges bring old
/// messages back). Deduplication is thus the handler's, apart from its payload store:
/// [`Log`] keeps a [`Seen`] (a watermark per origin and incarnation plus a bounded set above
/// it), and a handler of [`MessageId`]s of its own can keep one too.
pub trait AntiEntropy: Handler<String> {
    /// What an exchange sends the peer: a summary of what this node holds. Keep it bounded
    /// whatever the number of messages ([`Summary`] grows with the origins only): a digest
    /// encoded larger than [`BroadcastConfig::max_message_bytes`] is not sent, and the
    /// driver counts it ([`Stats::oversized`]).
    type Digest: Serialize + DeserializeOwned;

    /// A summary of what this node holds, sent to the exchange peer.
    fn digest(&self) -> Self::Digest;

    /// Up to `max` messages this node holds that `digest` (a peer's) lacks.
    fn missing(&mut self, digest: &Self::Digest, max: usize) -> Vec<(Self::Id, Self::Payload)>;
}

/// A snapshot of the overlay's views.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Views {
    /// The active view: the neighbours every tree uses.
    pub active: BTreeSet<Contact>,
    /// The passive view.
    pub passive: BTreeSet<Contact>,
}

/// What a handle asks of the driver task.
enum Command {
    Join(Contact),
    Register {
        topic: &'static str,
        handler: erased::Erased,
        reply: oneshot::Sender<bool>,
    },
    Broadcast {
        topic: &'static str,
        message: Box<dyn Any + Send>,
        reply: oneshot::Sender<Result<(), BroadcastError>>,
    },
    Views(oneshot::Sender<Views>),
    Stats(oneshot::Sender<Stats>),
    Stop,
}

/// A node's broadcast service: a handle to its driver (cheap to clone). The driver task stops
/// when the node stops, on [`Broadcast::stop`], or when every handle is dropped.
#[derive(Clone)]
pub struct Broadcast {
    node: Node,
    commands: mpsc::Sender<Command>,
}

impl fmt::Debug for Broadcast {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broadcast").field("node", &self.node.name()).finish()
    }
}

impl Broadcast {
    /// Starts the broadcast service of `node` on the current tokio runtime: opens the
    /// transport service [`BroadcastConfig::service`] and starts the driver task. The node is
    /// alone in its overlay until it joins one ([`Broadcast::join`]), or, over a full mesh,
    /// until a node connects.
    ///
    /// # Errors
    ///
    /// [`BroadcastStartError::Service`] if the service is open already,
    /// [`BroadcastStartError::InvalidConfig`] for a zero capacity or tick.
    pub async fn start(
        node: &Node,
        config: BroadcastConfig,
    ) -> Result<Broadcast, BroadcastStartError> {
        if config.command_capacity == 0 {
            return Err(BroadcastStartError::InvalidConfig("command_capacity is zero"));
        }
        if config.tick.is_zero() {
            return Err(BroadcastStartError::InvalidConfig("tick is zero"));
        }
        let mode = connection_mode(node);
        let (service, inbox) = node.open_service(&config.service, config.inbox_capacity).await?;
        let (commands, receiver) = mpsc::channel(config.command_capacity);
        let task = task::Task::new(node.clone(), config, mode, service, inbox, receiver);
        tokio::spawn(task.run());
        Ok(Broadcast { node: node.clone(), commands })
    }

    /// The node this service runs on.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Joins the overlay through the node listening at `addr`: connects to it, then sends it
    /// HyParView's JOIN. The contact is remembered for rejoining.
    ///
    /// # Errors
    ///
    /// [`BroadcastError::Transport`] if the contact cannot be connected (its cause inside),
    /// [`BroadcastError::ContactIsSelf`], [`BroadcastError::Stopped`].
    pub async fn join(&self, addr: SocketAddr) -> Result<Contact, BroadcastError> {
        if addr == self.node.listen_addr() {
            return Err(BroadcastError::ContactIsSelf);
        }
        let name = self.node.join(addr).await?;
        let contact = Contact { name, addr };
        let command = Command::Join(contact.clone());
        self.commands.send(command).await.map_err(|_| BroadcastError::Stopped)?;
        Ok(contact)
    }

    /// Registers `handler` for `topic`: from now on, the topic's messages from other nodes
    /// reach it, and [`Broadcast::broadcast`] on `topic` broadcasts through it. The handler
    /// takes the topic's message type (checked at compile time). Its tree starts with the
    /// current active view as neighbours.
    ///
    /// # Errors
    ///
    /// [`BroadcastError::TopicTaken`] if a handler is registered under the topic's name
    /// already, [`BroadcastError::Stopped`].
    pub async fn register<H>(
        &self,
        topic: Topic<H::Message>,
        handler: H,
    ) -> Result<(), BroadcastError>
    where
        H: AntiEntropy + Send + 'static,
        H::Message: Send + 'static,
        H::Id: Serialize + DeserializeOwned + Send,
        H::Payload: Serialize + DeserializeOwned + Send,
    {
        let (reply, registered) = oneshot::channel();
        let handler = erased::Erased::new(handler);
        let command = Command::Register { topic: topic.name(), handler, reply };
        self.commands.send(command).await.map_err(|_| BroadcastError::Stopped)?;
        match registered.await {
            Ok(true) => Ok(()),
            Ok(false) => Err(BroadcastError::TopicTaken(topic.name().to_owned())),
            Err(_) => Err(BroadcastError::Stopped),
        }
    }

    /// Broadcasts `message` on `topic`: the topic's handler here produces its id and payload
    /// and merges it, and the topic's Plumtree core pushes it on. Returns once the core has
    /// taken it.
    ///
    /// # Errors
    ///
    /// [`BroadcastError::UnknownTopic`], [`BroadcastError::Encode`],
    /// [`BroadcastError::NotNew`], [`BroadcastError::Stopped`]: nothing was sent, and the
    /// message is dropped.
    pub async fn broadcast<M: Send + 'static>(
        &self,
        topic: Topic<M>,
        message: M,
    ) -> Result<(), BroadcastError> {
        let (reply, done) = oneshot::channel();
        let message = Box::new(message);
        let command = Command::Broadcast { topic: topic.name(), message, reply };
        self.commands.send(command).await.map_err(|_| BroadcastError::Stopped)?;
        done.await.unwrap_or(Err(BroadcastError::Stopped))
    }

    /// The overlay's active and passive views now, or `None` if the driver has stopped.
    pub async fn views(&self) -> Option<Views> {
        let (reply, views) = oneshot::channel();
        self.commands.send(Command::Views(reply)).await.ok()?;
        views.await.ok()
    }

    /// What the driver counted since it started: messages dropped at its bounds, sends that
    /// failed or were too large, deliveries by anti-entropy. `None` if the driver has
    /// stopped.
    pub async fn stats(&self) -> Option<Stats> {
        let (reply, stats) = oneshot::channel();
        self.commands.send(Command::Stats(reply)).await.ok()?;
        stats.await.ok()
    }

    /// Stops the driver task (the node runs on). Its service closes.
    pub async fn stop(&self) {
        let _ = self.commands.send(Command::Stop).await;
    }

    /// Whether the driver task has ended.
    pub fn is_stopped(&self) -> bool {
        self.commands.is_closed()
    }
}

#[cfg(test)]
mod tests {
    /// A handle can move between tasks.
    #[test]
    fn handles_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<super::Broadcast>();
        assert_send_sync::<super::Topic<std::rc::Rc<u8>>>();
        assert_send_sync::<super::Log<String>>();
    }
}
