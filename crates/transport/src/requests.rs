//! Node-level operations: messages to registered names on a node, remote spawn by factory,
//! `is_alive` for any pid, ping, messages on a chosen channel, and RPC to handlers registered
//! by name (with an optional follow-up handler that runs on the target right after, as
//! Distribunator's `node_rpc` callback does). Each goes in order with whatever else its
//! sender (the process or task calling) sends, as `crate::remote` explains.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_process::Pid;
use shoal_process::codec::{decode, encode};
use shoal_process::remote::Inbound;

use crate::peer::{Lane, Peer, pid_key, sender_key};
use crate::remote::push_waiting;
use crate::rpc::{self, RpcHandler};
use crate::wire::{Addressee, Failure, Frame, Request};
use crate::{DEFAULT_CHANNEL, Node, RemoteError};

/// How long [`Node::is_alive`] waits for a remote answer.
const IS_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

impl Node {
    /// Registers the RPC handler `name` on this node: other nodes call it with [`Node::rpc`].
    /// Returns `false` (and keeps the old one) if the name is taken.
    pub fn register_rpc<A, R, F, Fut>(&self, name: &str, handler: F) -> bool
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: RpcHandler = Arc::new(move |args: Bytes| {
            let handler = handler.clone();
            Box::pin(async move {
                let args = decode::<A>(&args).map_err(|error| format!("bad arguments: {error}"))?;
                let result = handler(args).await;
                encode(&result).map_err(|error| error.to_string())
            })
        });
        self.cluster.processes.rpc.register(name, erased)
    }

    /// Removes the RPC handler `name` from this node (a layer that stops); `false` if none was
    /// registered. Requests for it fail as for a name never registered.
    pub fn unregister_rpc(&self, name: &str) -> bool {
        self.cluster.processes.rpc.unregister(name)
    }

    /// Runs the RPC handler `name` on `node` with `args` and returns its result.
    pub async fn rpc<A: Serialize, R: DeserializeOwned>(
        &self,
        node: &str,
        name: &str,
        args: &A,
        timeout: Duration,
    ) -> Result<R, RemoteError> {
        self.rpc_inner(node, name, args, None, timeout).await
    }

    /// Like [`Node::rpc`], and on `node`, right after the handler returns and before the answer
    /// is sent, runs the handler `then` with the first handler's result.
    pub async fn rpc_then<A: Serialize, R: DeserializeOwned>(
        &self,
        node: &str,
        name: &str,
        args: &A,
        then: &str,
        timeout: Duration,
    ) -> Result<R, RemoteError> {
        self.rpc_inner(node, name, args, Some(then.to_owned()), timeout).await
    }

    async fn rpc_inner<A: Serialize, R: DeserializeOwned>(
        &self,
        node: &str,
        name: &str,
        args: &A,
        then: Option<String>,
        timeout: Duration,
    ) -> Result<R, RemoteError> {
        let args = encode(args).map_err(|error| RemoteError::Encode(error.to_string()))?;
        let request = Request::Rpc { name: name.to_owned(), args, then };
        let bytes = if node == self.name() {
            let processes = self.cluster.processes.clone();
            let (answer, answered) = tokio::sync::oneshot::channel();
            let answer = move |outcome, _| drop(answer.send(outcome));
            let run = async move {
                rpc::serve(&processes.runtime, &processes.rpc, request, answer).await;
                answered.await
            };
            let clock = &self.cluster.wiring.clock;
            let outcome = clock.timeout(timeout, run).await.map_err(|_| RemoteError::Timeout)?;
            // `serve` answers every request it is given.
            outcome.map_err(|_| RemoteError::Failed(Failure::Handler("no answer".into())))??
        } else {
            self.request(node, None, |id| Frame::Request { id, request }, timeout).await?
        };
        decode(&bytes).map_err(|error| RemoteError::Decode(error.to_string()))
    }

    /// Spawns a process on `node` from its factory `factory` with start arguments `args`.
    pub async fn spawn_remote<A: Serialize>(
        &self,
        node: &str,
        factory: &str,
        args: &A,
        timeout: Duration,
    ) -> Result<Pid, RemoteError> {
        let args = encode(args).map_err(|error| RemoteError::Encode(error.to_string()))?;
        let request = Request::Spawn { factory: factory.to_owned(), args };
        let bytes = self.request(node, None, |id| Frame::Request { id, request }, timeout).await?;
        decode(&bytes).map_err(|error| RemoteError::Decode(error.to_string()))
    }

    /// Whether `pid` is alive, wherever it runs. A pid of an unreachable node is not.
    pub async fn is_alive(&self, pid: Pid) -> bool {
        if pid.node() == self.id() {
            return self.runtime().is_alive(pid);
        }
        let Some(node) = self.node_name(pid) else { return false };
        let request = Request::IsAlive(pid);
        let frame = |id| Frame::Request { id, request };
        match self.request(&node, None, frame, IS_ALIVE_TIMEOUT).await {
            Ok(bytes) => decode(&bytes).unwrap_or(false),
            Err(_) => false,
        }
    }

    /// Sends `message`, encoded, to the process registered as `name` on `node` (this node
    /// included): the services' relays, which take encoded envelopes from every node alike.
    /// Nothing is reported if no process is registered there, as with a cast to a dead pid.
    /// (Processes send by name through the runtime: `Runtime::cast` with a `Dest`.)
    pub(crate) async fn cast_named<M: Serialize>(
        &self,
        node: &str,
        name: &str,
        message: &M,
    ) -> Result<(), RemoteError> {
        let payload = encode(message).map_err(|error| RemoteError::Encode(error.to_string()))?;
        if node == self.name() {
            if let Some(pid) = self.runtime().whereis(name) {
                self.cluster.processes.deliver_waiting(pid, Inbound::cast(payload)).await;
            }
            return Ok(());
        }
        let peer = self.reach(node)?;
        let frame = Frame::CastNamed { name: name.to_owned(), payload };
        let lane = Lane::new(sender_key(), name_key(name));
        let held_as = Addressee::Name(name.to_owned());
        push_waiting(&peer, DEFAULT_CHANNEL, lane, Some(&held_as), frame)
            .await
            .map_err(|()| RemoteError::NoConnection(node.to_owned()))
    }

    /// Sends `message` to `pid` on the named `channel` (for example a monotonic one), waiting
    /// for room. Local pids get it through the runtime as usual.
    pub async fn cast_on<M: Serialize + Send + 'static>(
        &self,
        channel: &str,
        pid: Pid,
        message: M,
    ) -> Result<(), RemoteError> {
        if pid.node() == self.id() {
            return self
                .runtime()
                .cast(pid, message)
                .await
                .map_err(|error| RemoteError::Send(error.to_string()));
        }
        if !self.cluster.config.channels.contains_key(channel) {
            return Err(RemoteError::NoSuchChannel(channel.to_owned()));
        }
        let payload = encode(&message).map_err(|error| RemoteError::Encode(error.to_string()))?;
        let peer = self
            .cluster
            .processes
            .reach(pid.node())
            .ok_or_else(|| RemoteError::NoConnection(pid.node().to_string()))?;
        let lane = Lane::new(sender_key(), pid_key(pid));
        let frame = Frame::Cast { to: pid, payload };
        push_waiting(&peer, channel, lane, Some(&Addressee::Pid(pid)), frame)
            .await
            .map_err(|()| RemoteError::NoConnection(peer.name()))
    }

    /// The round trip of a ping to `node` over the control channel.
    pub async fn ping(&self, node: &str, timeout: Duration) -> Result<Duration, RemoteError> {
        let peer = self.connected(node)?;
        let (id, answer) = self.cluster.answers.await_oneshot(peer.id);
        let clock = &self.cluster.wiring.clock;
        let started = clock.now();
        if !peer.push_control(Frame::Ping { id }) {
            self.cluster.answers.withdraw(id);
            return Err(RemoteError::NoConnection(node.to_owned()));
        }
        self.await_answer(node, id, answer, timeout).await?;
        Ok(clock.since(started))
    }

    /// The peer to send to `node` through: connected, connecting, or (managed mode) opened on
    /// demand now.
    fn reach(&self, node: &str) -> Result<Arc<Peer>, RemoteError> {
        self.cluster.reach_name(node).ok_or_else(|| RemoteError::NoConnection(node.to_owned()))
    }

    fn connected(&self, node: &str) -> Result<Arc<Peer>, RemoteError> {
        self.cluster
            .members
            .by_name(node)
            .filter(|peer| peer.is_up())
            .ok_or_else(|| RemoteError::NoConnection(node.to_owned()))
    }

    /// Sends a frame that expects a [`Frame::Reply`] (to a process addressed as `held_as`, which
    /// may be held, or to the node) and waits for it.
    async fn request(
        &self,
        node: &str,
        held_as: Option<&Addressee>,
        frame: impl FnOnce(u64) -> Frame,
        timeout: Duration,
    ) -> Result<Bytes, RemoteError> {
        let peer = self.reach(node)?;
        let answers = &self.cluster.answers;
        let (id, answer) = answers.await_oneshot(peer.id);
        let lane = Lane::new(sender_key(), id);
        let push = push_waiting(&peer, DEFAULT_CHANNEL, lane, held_as, frame(id));
        match self.cluster.wiring.clock.timeout(timeout, push).await {
            Ok(Ok(())) => self.await_answer(node, id, answer, timeout).await,
            Ok(Err(())) => {
                answers.withdraw(id);
                Err(RemoteError::NoConnection(node.to_owned()))
            }
            Err(_) => {
                answers.withdraw(id);
                Err(RemoteError::Timeout)
            }
        }
    }

    async fn await_answer(
        &self,
        node: &str,
        id: u64,
        answer: tokio::sync::oneshot::Receiver<Result<Bytes, Failure>>,
        timeout: Duration,
    ) -> Result<Bytes, RemoteError> {
        match self.cluster.wiring.clock.timeout(timeout, answer).await {
            Ok(Ok(outcome)) => outcome.map_err(RemoteError::Failed),
            // The node was lost: its waiters are dropped unanswered.
            Ok(Err(_)) => Err(RemoteError::NoConnection(node.to_owned())),
            Err(_) => {
                self.cluster.answers.withdraw(id);
                Err(RemoteError::Timeout)
            }
        }
    }
}

/// The lane key of a process addressed by its registered name.
pub(crate) fn name_key(name: &str) -> u64 {
    shoal_process::NodeId::from_name(name).as_u64()
}
