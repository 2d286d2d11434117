//! Services: the same named endpoint on every node, for a protocol's messages between nodes.
//!
//! The protocol cores of Shoal (Paxos, Plumtree, HyParView) are sans-IO state machines; their
//! drivers need one thing from the transport: "send this message to my counterpart on node X,
//! and hand me what my counterparts send me, with who sent it". [`Node::open_service`] gives
//! exactly that. On each node the service is a process registered as `shoal.service.NAME`,
//! which passes each message it gets to the driver through a bounded queue, so a slow driver
//! slows its senders (through the mailbox, then the connection) instead of losing messages.
//!
//! ```no_run
//! # async fn example(node: shoal_transport::Node) -> Result<(), Box<dyn std::error::Error>> {
//! let (service, mut inbox) = node.open_service::<String>("echo", 1024).await?;
//! while let Some(incoming) = inbox.recv().await {
//!     service.send(&incoming.from, &incoming.message).await?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! A message to a node where the service is not open is dropped, as a cast to an unknown name
//! is. Messages from one node's service to another's arrive in the order they were sent.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shoal_process::{Codec, Context, ExitReason, Pid, Process, SpawnOptions, StartError};
use tokio::sync::mpsc;

use crate::{Node, RemoteError};

/// The prefix of the name a service's process is registered under.
const SERVICE_PREFIX: &str = "shoal.service.";

/// One message from a counterpart: who sent it and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming<M> {
    /// The name of the node that sent it.
    pub from: String,
    /// The message.
    pub message: M,
}

/// The sending half of an open service: sends to the same service on any node.
pub struct Service<M> {
    node: Node,
    registered: Arc<str>,
    _message: PhantomData<fn(M)>,
}

impl<M> Clone for Service<M> {
    fn clone(&self) -> Self {
        Service {
            node: self.node.clone(),
            registered: self.registered.clone(),
            _message: PhantomData,
        }
    }
}

impl<M> fmt::Debug for Service<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service").field("name", &self.registered).finish()
    }
}

impl<M: Serialize> Service<M> {
    /// Sends `message` to this service on `node` (this node too), waiting while that peer's
    /// queue is full.
    ///
    /// # Errors
    ///
    /// [`RemoteError::NoConnection`] if `node` is not connected, [`RemoteError::Encode`] if
    /// the message does not encode.
    pub async fn send(&self, node: &str, message: &M) -> Result<(), RemoteError> {
        let envelope = EnvelopeRef { from: self.node.name(), message };
        self.node.cast_named(node, &self.registered, &envelope).await
    }

    /// The node this service runs on.
    pub fn node(&self) -> &Node {
        &self.node
    }
}

/// The receiving half of an open service. Dropping it closes the service on this node.
pub struct Inbox<M> {
    receiver: mpsc::Receiver<Incoming<M>>,
    node: Node,
    relay: Pid,
}

impl<M> Inbox<M> {
    /// The next message, or `None` once the node has shut down.
    pub async fn recv(&mut self) -> Option<Incoming<M>> {
        self.receiver.recv().await
    }

    /// The next message if one is waiting.
    pub fn try_recv(&mut self) -> Option<Incoming<M>> {
        self.receiver.try_recv().ok()
    }

    /// Closes the service on this node, as dropping the inbox does, and returns once its
    /// process has exited and its name is free, so that the service can be opened again
    /// straight away.
    pub async fn close(self) {
        let watch = self.node.runtime().watch(self.relay);
        drop(self);
        watch.await;
    }
}

impl<M> Drop for Inbox<M> {
    fn drop(&mut self) {
        self.node.runtime().exit(self.relay, ExitReason::Shutdown);
    }
}

impl<M> fmt::Debug for Inbox<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox").field("relay", &self.relay).finish()
    }
}

/// Why a service could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// `capacity` was zero: the queue to the driver needs room for at least one message.
    #[error("a service needs a queue capacity of at least 1")]
    ZeroCapacity,
    /// The service's process could not start (its name is taken: the service is already
    /// open on this node).
    #[error("service {name:?} could not start: {source}")]
    Start {
        /// The service's name.
        name: String,
        /// Why.
        source: StartError,
    },
}

impl Node {
    /// Opens the service `name` on this node: messages that counterparts on other nodes (or
    /// this one) send to `name` arrive in the returned [`Inbox`], at most `capacity` of them
    /// waiting at a time.
    ///
    /// # Errors
    ///
    /// [`ServiceError::Start`] if the service is already open here,
    /// [`ServiceError::ZeroCapacity`] for a zero capacity.
    pub async fn open_service<M>(
        &self,
        name: &str,
        capacity: usize,
    ) -> Result<(Service<M>, Inbox<M>), ServiceError>
    where
        M: Serialize + DeserializeOwned + Send + 'static,
    {
        if capacity == 0 {
            return Err(ServiceError::ZeroCapacity);
        }
        let registered: Arc<str> = format!("{SERVICE_PREFIX}{name}").into();
        let (sender, receiver) = mpsc::channel(capacity);
        let relay = Relay { to_driver: sender };
        let options = SpawnOptions::new().name(&*registered);
        let addr = self
            .runtime()
            .start_with(relay, options)
            .await
            .map_err(|source| ServiceError::Start { name: name.to_owned(), source })?;
        let service = Service { node: self.clone(), registered, _message: PhantomData };
        let inbox = Inbox { receiver, node: self.clone(), relay: addr.pid() };
        Ok((service, inbox))
    }
}

/// A message on the wire: the sender's node name and the message. Sent by reference, read
/// back owned; both encode as the same two-element msgpack array.
#[derive(Serialize)]
struct EnvelopeRef<'a, M> {
    from: &'a str,
    message: &'a M,
}

#[derive(Serialize, Deserialize)]
struct Envelope<M> {
    from: String,
    message: M,
}

/// The process behind a service on one node: hands each message to the driver's queue.
struct Relay<M> {
    to_driver: mpsc::Sender<Incoming<M>>,
}

impl<M> Process for Relay<M>
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    type Message = Envelope<M>;
    type Call = ();
    type Reply = ();

    async fn handle_cast(&mut self, envelope: Envelope<M>, ctx: &mut Context<Self>) {
        let incoming = Incoming { from: envelope.from, message: envelope.message };
        // Waiting for room here is the back-pressure: the mailbox fills, then the
        // connection's reader waits, then the sender's queue.
        if self.to_driver.send(incoming).await.is_err() {
            ctx.stop(ExitReason::Shutdown);
        }
    }

    fn remote_messages() -> Option<Codec<Self>> {
        Some(Codec::msgpack())
    }
}
