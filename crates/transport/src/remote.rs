//! Process operations across the wire, both ways: [`Transport`] is the runtime's
//! [`Remote`] (outbound), and [`Shared::dispatch`] hands what a peer sent to the runtime
//! (inbound).
//!
//! Every frame for a process — casts, calls, exit and down signals, monitor and link
//! requests — is keyed by its *receiver* pid, so all of them take the same connection of the
//! default channel and arrive in the order they were sent, as in Erlang: a message sent before
//! a process exited is seen before its `Down`. Monitors and links that cross to a peer are
//! recorded on the peer ([`crate::peer::Ties`]), so that losing the peer can be reported to
//! each local process with [`ExitReason::NoConnection`].

use std::future::poll_fn;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use shoal_process::remote::{
    DeliverError, Inbound, Outbound, Remote, RemoteReply, ReplySink, RouteError, Unreachable,
};
use shoal_process::{ExitKind, ExitReason, NodeId, Pid, RemoteFailure};
use tokio::sync::oneshot;

use crate::DEFAULT_CHANNEL;
use crate::node::Shared;
use crate::peer::{Peer, PushError, lock, pid_key};
use crate::wire::{Failure, Frame};

/// Someone waiting for a [`Frame::Reply`].
pub(crate) enum Waiter {
    /// A process's remote call, through the runtime.
    Runtime(RemoteReply),
    /// A node-level request made through the [`crate::Node`] API.
    Oneshot(oneshot::Sender<Result<Bytes, Failure>>),
}

impl Waiter {
    pub(crate) fn complete(self, outcome: Result<Bytes, Failure>) {
        match self {
            Self::Runtime(reply) => {
                reply.send(outcome.map_err(|failure| match failure {
                    Failure::Process(failure) => failure,
                    // A process call is only ever answered with a process failure.
                    other => RemoteFailure::BadReply(other.to_string()),
                }));
            }
            Self::Oneshot(sender) => {
                let _ = sender.send(outcome);
            }
        }
    }

    pub(crate) fn is_abandoned(&self) -> bool {
        match self {
            Self::Runtime(reply) => reply.is_closed(),
            Self::Oneshot(sender) => sender.is_closed(),
        }
    }
}

/// The runtime's way out to other nodes.
pub(crate) struct Transport(Weak<Shared>);

impl Transport {
    pub(crate) fn new(shared: &Arc<Shared>) -> Self {
        Self(Arc::downgrade(shared))
    }
}

impl Remote for Transport {
    fn try_route(&self, outbound: Outbound) -> Result<(), RouteError> {
        let peer = self.0.upgrade().and_then(|shared| {
            let peer = shared.peer(outbound.node()).filter(|peer| peer.is_up())?;
            Some((shared, peer))
        });
        let Some((shared, peer)) = peer else {
            return Err(RouteError::NoConnection(outbound));
        };
        route(&shared, &peer, outbound)
    }

    fn poll_ready(&self, node: NodeId, cx: &mut Context<'_>) -> Poll<Result<(), Unreachable>> {
        match self.0.upgrade().and_then(|shared| shared.peer(node)) {
            Some(peer) => peer.poll_room(cx).map_err(|()| Unreachable),
            None => Poll::Ready(Err(Unreachable)),
        }
    }
}

fn route(shared: &Shared, peer: &Peer, outbound: Outbound) -> Result<(), RouteError> {
    let handed_back = |error: PushError, reply: Option<RemoteReply>| match error {
        PushError::Full(frame) => RouteError::Full(into_outbound(frame, reply)),
        PushError::Down(frame) => RouteError::NoConnection(into_outbound(frame, reply)),
    };
    match outbound {
        Outbound::Cast { to, payload } => peer
            .push(DEFAULT_CHANNEL, pid_key(to), Frame::Cast { to, payload }, true)
            .map_err(|error| handed_back(error, None)),
        Outbound::Call { to, payload, reply } => {
            let id = shared.expect(peer.id, Waiter::Runtime(reply));
            peer.push(DEFAULT_CHANNEL, pid_key(to), Frame::Call { id, to, payload }, true).map_err(
                |error| {
                    let reply = match shared.forget(id) {
                        Some(Waiter::Runtime(reply)) => Some(reply),
                        _ => None,
                    };
                    handed_back(error, reply)
                },
            )
        }
        signal => match tie(peer, signal) {
            Ok((key, frame)) => peer
                .push(DEFAULT_CHANNEL, key, frame, false)
                .map_err(|error| handed_back(error, None)),
            Err(unknown) => Err(RouteError::NoConnection(unknown)),
        },
    }
}

/// Records what a signal changes in the ties to the peer; returns its key and frame. An
/// operation this transport does not know is handed back.
fn tie(peer: &Peer, signal: Outbound) -> Result<(u64, Frame), Outbound> {
    let mut ties = lock(&peer.ties);
    match signal {
        Outbound::Exit { to, from, reason, kind } => {
            if kind == ExitKind::Link {
                ties.links.remove(&(from, to));
            }
            Ok((pid_key(to), Frame::Exit { to, from, reason, kind }))
        }
        Outbound::Down { to, monitor, pid, reason } => {
            ties.watched.remove(&monitor);
            Ok((pid_key(to), Frame::Down { to, monitor, pid, reason }))
        }
        Outbound::Monitor { target, watcher, monitor } => {
            ties.watching.insert(monitor, (watcher, target));
            Ok((pid_key(target), Frame::Monitor { target, watcher, monitor }))
        }
        Outbound::MonitorName { target, name, watcher, monitor } => {
            ties.watching.insert(monitor, (watcher, target));
            // Keyed by the stand-in pid, as a later demonitor of it is.
            Ok((pid_key(target), Frame::MonitorName { target, name, watcher, monitor }))
        }
        Outbound::Demonitor { target, monitor } => {
            ties.watching.remove(&monitor);
            Ok((pid_key(target), Frame::Demonitor { target, monitor }))
        }
        Outbound::Link { to, from } => {
            ties.links.insert((from, to));
            Ok((pid_key(to), Frame::Link { to, from }))
        }
        Outbound::Unlink { to, from } => {
            ties.links.remove(&(from, to));
            Ok((pid_key(to), Frame::Unlink { to, from }))
        }
        // Casts and calls are routed before this; an operation added to the runtime later is
        // refused rather than guessed at.
        other => Err(other),
    }
}

/// Turns a frame that was not queued back into the operation it came from.
fn into_outbound(frame: Frame, reply: Option<RemoteReply>) -> Outbound {
    match (frame, reply) {
        (Frame::Cast { to, payload }, _) => Outbound::Cast { to, payload },
        (Frame::Call { to, payload, .. }, Some(reply)) => Outbound::Call { to, payload, reply },
        (Frame::Exit { to, from, reason, kind }, _) => Outbound::Exit { to, from, reason, kind },
        (Frame::Down { to, monitor, pid, reason }, _) => {
            Outbound::Down { to, monitor, pid, reason }
        }
        (Frame::Monitor { target, watcher, monitor }, _) => {
            Outbound::Monitor { target, watcher, monitor }
        }
        (Frame::MonitorName { target, name, watcher, monitor }, _) => {
            Outbound::MonitorName { target, name, watcher, monitor }
        }
        (Frame::Demonitor { target, monitor }, _) => Outbound::Demonitor { target, monitor },
        (Frame::Link { to, from }, _) => Outbound::Link { to, from },
        (Frame::Unlink { to, from }, _) => Outbound::Unlink { to, from },
        (frame, _) => unreachable!("a {} frame is not a process operation", frame.kind()),
    }
}

/// Answers a call from a peer by queueing a [`Frame::Reply`] to it.
pub(crate) struct ReplyVia {
    pub(crate) shared: Weak<Shared>,
    pub(crate) node: NodeId,
    pub(crate) id: u64,
}

impl ReplySink for ReplyVia {
    fn reply(self: Box<Self>, outcome: Result<Bytes, RemoteFailure>) {
        self.send(outcome.map_err(Failure::Process));
    }
}

impl ReplyVia {
    pub(crate) fn send(&self, outcome: Result<Bytes, Failure>) {
        let Some(peer) = self.shared.upgrade().and_then(|shared| shared.peer(self.node)) else {
            return;
        };
        let frame = Frame::Reply { id: self.id, outcome };
        if peer.push(DEFAULT_CHANNEL, self.id, frame, false).is_err() {
            tracing::debug!(peer = %peer.name(), "a reply was lost with the connection");
        }
    }
}

/// A message that [`Shared::dispatch`] could not deliver yet: its mailbox is full.
pub(crate) type Blocked = Option<(Pid, Inbound)>;

impl Shared {
    fn reply_via(self: &Arc<Self>, peer: &Peer, id: u64) -> ReplyVia {
        ReplyVia { shared: Arc::downgrade(self), node: peer.id, id }
    }

    /// Hands one frame from `peer` to where it belongs, without waiting. A message for a
    /// local process whose mailbox is full is handed back, to be delivered with
    /// [`Shared::deliver`] (which waits for room) before the connection's next frame.
    #[must_use = "a message handed back must be delivered"]
    pub(crate) fn dispatch(self: &Arc<Self>, peer: &Arc<Peer>, frame: Frame) -> Blocked {
        let runtime = &self.runtime;
        match frame {
            Frame::Ping { id } => {
                peer.push_control(Frame::Pong { id });
            }
            Frame::Pong { id } => self.answer(id, Ok(Bytes::new())),
            Frame::Gossip { members, left } => self.merge_gossip(members, left),
            Frame::Leave { incarnation } => self.tombstone(&peer.name(), incarnation),
            Frame::Cast { to, payload } => return self.deliver_now(to, Inbound::cast(payload)),
            Frame::Call { id, to, payload } => {
                let sink = Box::new(self.reply_via(peer, id));
                return self.deliver_now(to, Inbound::call(payload, sink));
            }
            Frame::Reply { id, outcome } => self.answer(id, outcome),
            Frame::Exit { to, from, reason, kind } => {
                if kind == ExitKind::Link {
                    lock(&peer.ties).links.remove(&(to, from));
                }
                runtime.deliver_exit(to, from, reason, kind);
            }
            Frame::Down { to, monitor, pid, reason } => {
                lock(&peer.ties).watching.remove(&monitor);
                runtime.deliver_down(to, monitor, pid, reason);
            }
            Frame::Monitor { target, watcher, monitor } => {
                self.monitor_for(peer, target, watcher, monitor);
            }
            Frame::MonitorName { target, name, watcher, monitor } => match runtime.whereis(&name) {
                Some(named) => self.monitor_for(peer, named, watcher, monitor),
                None => {
                    let reason = ExitReason::NoProc;
                    let down = Frame::Down { to: watcher, monitor, pid: target, reason };
                    let _ = peer.push(DEFAULT_CHANNEL, pid_key(watcher), down, false);
                }
            },
            Frame::Demonitor { target, monitor } => {
                // A monitor by name was set on the process the name resolved to.
                let target = lock(&peer.ties).watched.remove(&monitor).unwrap_or(target);
                runtime.remote_demonitor(target, monitor);
            }
            Frame::Link { to, from } => {
                lock(&peer.ties).links.insert((to, from));
                if runtime.remote_link(to, from).is_err() {
                    lock(&peer.ties).links.remove(&(to, from));
                    let exit = Frame::Exit {
                        to: from,
                        from: to,
                        reason: ExitReason::NoProc,
                        kind: ExitKind::Link,
                    };
                    let _ = peer.push(DEFAULT_CHANNEL, pid_key(from), exit, false);
                }
            }
            Frame::Unlink { to, from } => {
                lock(&peer.ties).links.remove(&(to, from));
                runtime.remote_unlink(to, from);
            }
            Frame::CastNamed { name, payload } => match runtime.whereis(&name) {
                Some(pid) => return self.deliver_now(pid, Inbound::cast(payload)),
                None => tracing::debug!(%name, "a cast for an unregistered name was dropped"),
            },
            Frame::CallNamed { id, name, payload } => match runtime.whereis(&name) {
                Some(pid) => {
                    let sink = Box::new(self.reply_via(peer, id));
                    return self.deliver_now(pid, Inbound::call(payload, sink));
                }
                None => self.reply_via(peer, id).send(Err(Failure::NotRegistered(name))),
            },
            Frame::Request { id, request } => {
                let reply = self.reply_via(peer, id);
                self.spawn(crate::requests::serve(self.clone(), request, reply));
            }
            other => {
                tracing::warn!(peer = %peer.name(), kind = other.kind(), "unexpected frame ignored");
            }
        }
        None
    }

    /// Sets up a monitor by `peer`'s process `watcher` on the local process `target`, or sends
    /// the watcher its `Down` at once when `target` is not alive.
    fn monitor_for(&self, peer: &Peer, target: Pid, watcher: Pid, monitor: shoal_process::Ref) {
        lock(&peer.ties).watched.insert(monitor, target);
        if let Err(reason) = self.runtime.remote_monitor(target, watcher, monitor) {
            lock(&peer.ties).watched.remove(&monitor);
            let down = Frame::Down { to: watcher, monitor, pid: target, reason };
            let _ = peer.push(DEFAULT_CHANNEL, pid_key(watcher), down, false);
        }
    }

    /// Delivers to a local process if its mailbox has room; hands the message back if not.
    /// A call that cannot be delivered is answered with the reason.
    fn deliver_now(&self, to: Pid, inbound: Inbound) -> Blocked {
        match self.runtime.try_deliver(to, inbound) {
            Ok(()) => None,
            Err(DeliverError::NoProc(inbound)) => {
                tracing::trace!(%to, "no such process: message dropped");
                inbound.refuse(RemoteFailure::NoProc);
                None
            }
            Err(DeliverError::Full(inbound)) => Some((to, inbound)),
        }
    }

    /// Delivers to a local process, waiting while its mailbox is full (which holds back this
    /// connection: back-pressure reaches the sender through TCP). A call that cannot be
    /// delivered is answered with the reason.
    pub(crate) async fn deliver(&self, to: Pid, inbound: Inbound) {
        match self.runtime.deliver(to, inbound).await {
            Ok(()) => {}
            Err(DeliverError::NoProc(inbound)) => {
                tracing::trace!(%to, "no such process: message dropped");
                inbound.refuse(RemoteFailure::NoProc);
            }
            Err(DeliverError::Full(inbound)) => inbound.refuse(RemoteFailure::Full),
        }
    }

    /// Queues a bounded frame for `peer`, waiting for room.
    pub(crate) async fn push_waiting(
        &self,
        peer: &Peer,
        channel: &str,
        key: u64,
        mut frame: Frame,
    ) -> Result<(), ()> {
        loop {
            match peer.push(channel, key, frame, true) {
                Ok(()) => {
                    // A sender with room never waits; spending coop budget makes a long
                    // loop of sends yield now and then, so heartbeats are not starved.
                    tokio::task::coop::consume_budget().await;
                    return Ok(());
                }
                Err(PushError::Down(_)) => return Err(()),
                Err(PushError::Full(back)) => {
                    frame = back;
                    poll_fn(|cx| peer.poll_room(cx)).await?;
                }
            }
        }
    }
}
