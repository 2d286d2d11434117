//! The driver: HyParView and Plumtree over a [`shoal_transport::Node`].
//!
//! A [`Driver`] is a handle to one tokio task per node that runs one [`HyParView`](crate::HyParView) core (the
//! overlay) and one [`Plumtree`](crate::Plumtree) core per registered handler, following the crate's driver
//! contract (see the [crate docs](crate)): it feeds the cores messages, node events and time,
//! sends what they ask to send, and decides nothing a test of the protocols would need to
//! check. Several applications share one overlay: each registers a handler under a name
//! ([`Driver::register`]) and broadcasts with [`Driver::broadcast`]; every tree message carries
//! the handler's name, so each reaches its own Plumtree core on the other side.
//!
//! ```text
//!   Driver (handle) ── commands ──►  driver task  ◄── Inbox<Wire> (service "broadcast")
//!                                    │  HyParView<Contact> ──NeighbourUp/Down──► Plumtree × handlers
//!   Node events (up/down) ─────────► │  ▲ handle_timeout when poll_timeout is due
//!                                    └──► Service::send / Node::join / Node::disconnect_node
//! ```
//!
//! **Messages** travel over a transport service ([`Node::open_service`]), tagged with the
//! sending node: overlay messages, tree messages (handler name + Plumtree message, ids and
//! payloads encoded with msgpack by the handler's types), and anti-entropy exchanges.
//!
//! **Connections** depend on the node's membership ([`Mode`]):
//!
//! - [`Mode::Managed`], for a node started with [`Membership::Managed`](shoal_transport::Membership):
//!   the driver owns the connections. HyParView peers are [`Contact`]s (name and listen
//!   address); a message to a peer that is not connected opens a connection (`Node::join`),
//!   the messages for it waiting (bounded) until it is up. A connection to a peer outside
//!   the active view is closed once idle for [`Config::linger`], and at once when that peer
//!   sends DISCONNECT, so the node's up and down events are the active view's. A node that
//!   goes down while in the active view is reported to HyParView (`peer_failed`), which
//!   repairs the view from the passive one.
//! - [`Mode::Existing`], for full-mesh or static membership: the same cores run over the
//!   connections the transport keeps; the driver opens and closes none. A message to a peer
//!   that is not connected counts as that peer failing.
//!
//! **Rejoining.** A node that knows no peer any more rejoins through the contact it first
//! joined. Peers lost to a failure (a down event, a connection that could not be opened) are
//! remembered for [`Config::forget_lost_after`]; every [`Config::tick`] the driver tries one
//! of them, and if it answers, joins the overlay through it again. That is how two halves
//! of a healed partition find each other, whose passive views forgot the other side while it
//! was unreachable. In [`Mode::Existing`] a lost peer that connects again is joined through
//! at once, on its up event, unless it is a neighbour already; and while HyParView's active
//! view has room its passive view cannot fill, the connected nodes are offered to it
//! ([`HyParView::offer`](crate::HyParView::offer)), so that the overlay does not stay split
//! in components whose passive views emptied, though every node is connected to every other.
//!
//! **Restarts.** A node may restart on another port under the same name. A contact of that
//! name at another address than the transport knows now is dropped from the views and the
//! lost set (when the node connects or sends an overlay message, or a message is about to go
//! to the old address), and lost peers are retried at their current address, so that an old
//! address never holds a view slot under a name that is still connected.
//!
//! **Anti-entropy.** When a Plumtree core asks for an exchange with a peer, the driver calls
//! the handler's [`exchange`](Handler::exchange) and, if it agrees, sends the peer the
//! handler's [`digest`](AntiEntropy::digest); the peer answers with up to
//! [`Config::max_exchange_items`] messages the digest lacks, which are merged (and so
//! delivered) here.
//!
//! What the driver does *not* do: detect failures itself (the transport's heartbeats do),
//! retry a broadcast, or persist anything.
//!
//! ```
//! use std::time::Duration;
//! use shoal_broadcast::driver::{Config, Driver, Log};
//! use shoal_transport::{Key, Membership, Node};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = Key::generate();
//! let a = Node::builder("a", key.clone()).membership(Membership::Managed).start().await?;
//! let b = Node::builder("b", key).membership(Membership::Managed).start().await?;
//! let driver_a = Driver::start(&a, Config::default()).await?;
//! let driver_b = Driver::start(&b, Config::default()).await?;
//! let (log_a, log_b) = (Log::<String>::new(&a, 10_000), Log::<String>::new(&b, 10_000));
//! driver_a.register("chat", log_a).await?;
//! driver_b.register("chat", log_b.clone()).await?;
//! driver_b.join(a.listen_addr()).await?;
//!
//! driver_a.broadcast("chat", "hello".to_owned()).await?;
//! let mut deliveries = log_b.deliveries();
//! tokio::time::timeout(Duration::from_secs(10), deliveries.wait_for(|n| *n == 1)).await??;
//! assert_eq!(log_b.messages()[0].1, "hello");
//! # a.shutdown(); b.shutdown();
//! # Ok(()) }
//! ```

mod erased;
mod log;
mod task;

use std::any::Any;
use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shoal_transport::Node;
use tokio::sync::{mpsc, oneshot};

use crate::plumtree::Handler;
use crate::{hyparview, plumtree};

pub use log::{Log, MessageId};

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

/// Who owns the node's connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The node runs `Membership::Managed`: the driver opens and closes connections so that
    /// they follow HyParView's active view.
    Managed,
    /// The node runs full-mesh or static membership: the cores run over the connections the
    /// transport keeps, and the driver opens or closes none.
    Existing,
}

/// What a [`Driver`] is started with.
#[derive(Clone, Debug)]
pub struct Config {
    /// Who owns the connections; must match the node's membership (default: managed).
    pub mode: Mode,
    /// The name of the transport service the driver's messages travel on (default
    /// `"broadcast"`); the same on every node of one overlay.
    pub service: String,
    /// The overlay's configuration. Its seed is mixed with the node's incarnation, so nodes
    /// and restarts draw differently.
    pub hyparview: hyparview::Config,
    /// Every handler's Plumtree configuration; the seed is mixed likewise.
    pub plumtree: plumtree::Config,
    /// Messages from other nodes waiting for the driver (back-pressure past it).
    pub inbox_capacity: usize,
    /// Requests from handles waiting for the driver.
    pub command_capacity: usize,
    /// How long a connection to a peer outside the active view stays open after its last
    /// overlay message ([`Mode::Managed`]).
    pub linger: Duration,
    /// Housekeeping period: idle connections closed, one lost peer retried, a stopped node
    /// noticed.
    pub tick: Duration,
    /// How long a peer lost to a failure is remembered and retried.
    pub forget_lost_after: Duration,
    /// The most lost peers remembered (the oldest forgotten first).
    pub max_lost: usize,
    /// The most messages waiting for one peer's connection to open; past it the newest is
    /// dropped (the protocols' timers and anti-entropy cover a lost message).
    pub max_unsent_per_peer: usize,
    /// The most connections being opened at once; a message to one more unconnected peer is
    /// dropped.
    pub max_connecting: usize,
    /// The most messages one anti-entropy answer carries.
    pub max_exchange_items: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Managed,
            service: "broadcast".to_owned(),
            hyparview: hyparview::Config::default(),
            plumtree: plumtree::Config::default(),
            inbox_capacity: 4096,
            command_capacity: 1024,
            linger: Duration::from_secs(5),
            tick: Duration::from_millis(500),
            forget_lost_after: Duration::from_secs(300),
            max_lost: 64,
            max_unsent_per_peer: 256,
            max_connecting: 64,
            max_exchange_items: 256,
        }
    }
}

/// Anti-entropy for a handler the driver runs: what an exchange sends and answers. (The
/// Plumtree core only says *when* to exchange; the driver carries the exchange itself.)
pub trait AntiEntropy: Handler<String> {
    /// The ids this node holds, sent to the exchange peer.
    fn digest(&self) -> Vec<Self::Id>;

    /// Up to `max` messages this node holds that `digest` (a peer's) lacks.
    fn missing(&mut self, digest: &[Self::Id], max: usize) -> Vec<(Self::Id, Self::Payload)>;
}

/// A snapshot of the overlay's views.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Views {
    /// The active view: the neighbours every tree uses.
    pub active: BTreeSet<Contact>,
    /// The passive view.
    pub passive: BTreeSet<Contact>,
}

/// Why the driver did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The transport service could not be opened (it is open already on this node).
    #[error(transparent)]
    Service(#[from] shoal_transport::ServiceError),
    /// A capacity in the configuration is zero.
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
}

/// Why [`Driver::join`] did not join.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The contact could not be connected; the overlay is unchanged.
    #[error(transparent)]
    Transport(#[from] shoal_transport::JoinError),
    /// The contact is this node; the overlay is unchanged.
    #[error("a node cannot join through itself")]
    ContactIsSelf,
    /// The driver has stopped.
    #[error("the broadcast driver has stopped")]
    Stopped,
}

/// Why [`Driver::register`] did not register.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// A handler is registered under that name already; it is kept.
    #[error("a handler named {0:?} is registered already")]
    Taken(String),
    /// The driver has stopped.
    #[error("the broadcast driver has stopped")]
    Stopped,
}

/// Why [`Driver::broadcast`] sent nothing. The message is dropped in every case.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BroadcastError {
    /// No handler is registered under that name.
    #[error("no handler named {0:?}")]
    UnknownHandler(String),
    /// The handler takes another message type.
    #[error("handler {0:?} takes another message type")]
    WrongMessageType(String),
    /// The handler's id or payload did not encode.
    #[error("cannot encode: {0}")]
    Encode(String),
    /// The handler's `merge` said the message is not new; nothing was sent.
    #[error("the handler already knew the produced message; nothing was sent")]
    NotNew,
    /// The driver has stopped.
    #[error("the broadcast driver has stopped")]
    Stopped,
}

/// What a handle asks of the driver task.
enum Command {
    Join(Contact),
    Register {
        name: String,
        handler: erased::Erased,
        reply: oneshot::Sender<bool>,
    },
    Broadcast {
        handler: String,
        message: Box<dyn Any + Send>,
        reply: oneshot::Sender<Result<(), BroadcastError>>,
    },
    Views(oneshot::Sender<Views>),
    Stop,
}

/// A handle to a node's broadcast driver (cheap to clone). The driver task stops when the
/// node stops, on [`Driver::stop`], or when every handle is dropped.
#[derive(Clone)]
pub struct Driver {
    node: Node,
    commands: mpsc::Sender<Command>,
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver").field("node", &self.node.name()).finish()
    }
}

impl Driver {
    /// Starts the driver of `node` on the current tokio runtime: opens the service
    /// [`Config::service`] and starts the task. The node is alone in its overlay until it
    /// joins one ([`Driver::join`]), or, in [`Mode::Existing`], until a node connects.
    ///
    /// # Errors
    ///
    /// [`StartError::Service`] if the service is open already, [`StartError::InvalidConfig`]
    /// for a zero capacity.
    pub async fn start(node: &Node, config: Config) -> Result<Driver, StartError> {
        if config.command_capacity == 0 {
            return Err(StartError::InvalidConfig("command_capacity is zero"));
        }
        if config.tick.is_zero() {
            return Err(StartError::InvalidConfig("tick is zero"));
        }
        let (service, inbox) = node.open_service(&config.service, config.inbox_capacity).await?;
        let (commands, receiver) = mpsc::channel(config.command_capacity);
        let task = task::Task::new(node.clone(), config, service, inbox, receiver);
        tokio::spawn(task.run());
        Ok(Driver { node: node.clone(), commands })
    }

    /// The node this driver runs on.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Joins the overlay through the node listening at `addr`: connects to it, then sends it
    /// HyParView's JOIN. The contact is remembered for rejoining.
    ///
    /// # Errors
    ///
    /// [`JoinError::Transport`] if the contact cannot be connected (its cause inside),
    /// [`JoinError::ContactIsSelf`], [`JoinError::Stopped`].
    pub async fn join(&self, addr: SocketAddr) -> Result<Contact, JoinError> {
        if addr == self.node.listen_addr() {
            return Err(JoinError::ContactIsSelf);
        }
        let name = self.node.join(addr).await?;
        let contact = Contact { name, addr };
        self.commands.send(Command::Join(contact.clone())).await.map_err(|_| JoinError::Stopped)?;
        Ok(contact)
    }

    /// Registers `handler` under `name`: from now on, tree messages for `name` reach it, and
    /// [`Driver::broadcast`] with `name` broadcasts through it. Its tree starts with the
    /// current active view as neighbours.
    ///
    /// # Errors
    ///
    /// [`RegisterError::Taken`] if `name` is registered already, [`RegisterError::Stopped`].
    pub async fn register<H>(&self, name: &str, handler: H) -> Result<(), RegisterError>
    where
        H: AntiEntropy + Send + 'static,
        H::Message: Send + 'static,
        H::Id: Serialize + DeserializeOwned + Send,
        H::Payload: Serialize + DeserializeOwned + Send,
    {
        let (reply, registered) = oneshot::channel();
        let handler = erased::Erased::new(handler);
        let command = Command::Register { name: name.to_owned(), handler, reply };
        self.commands.send(command).await.map_err(|_| RegisterError::Stopped)?;
        match registered.await {
            Ok(true) => Ok(()),
            Ok(false) => Err(RegisterError::Taken(name.to_owned())),
            Err(_) => Err(RegisterError::Stopped),
        }
    }

    /// Broadcasts `message` through the handler registered as `handler` (which must take
    /// messages of type `M`): the handler produces its id and payload, merges it here, and
    /// the handler's Plumtree core pushes it on. Returns once the core has taken it.
    ///
    /// # Errors
    ///
    /// [`BroadcastError`] says why nothing was sent.
    pub async fn broadcast<M: Send + 'static>(
        &self,
        handler: &str,
        message: M,
    ) -> Result<(), BroadcastError> {
        let (reply, done) = oneshot::channel();
        let command =
            Command::Broadcast { handler: handler.to_owned(), message: Box::new(message), reply };
        self.commands.send(command).await.map_err(|_| BroadcastError::Stopped)?;
        done.await.unwrap_or(Err(BroadcastError::Stopped))
    }

    /// The overlay's active and passive views now, or `None` if the driver has stopped.
    pub async fn views(&self) -> Option<Views> {
        let (reply, views) = oneshot::channel();
        self.commands.send(Command::Views(reply)).await.ok()?;
        views.await.ok()
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
        assert_send_sync::<super::Driver>();
        assert_send_sync::<super::Log<String>>();
    }
}
