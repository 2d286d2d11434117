//! Process operations across the wire, both ways: [`Transport`] is the runtime's [`Remote`]
//! (outbound), and [`Processes::dispatch`] hands what a peer sent for processes to the runtime
//! (inbound).
//!
//! # Order
//!
//! OTP's rule holds for every kind of send: what one process sends to another arrives in the
//! order it was sent, whatever its kind (cast, call, exit signal, `Down`, link, monitor,
//! reply) and however the receiver is addressed (by pid, or by registered name with a
//! `shoal_process::Dest`). Every frame is keyed by its *sender*: the process on whose behalf it goes (a
//! `Down` and an exit signal by the process that exited or sent it, a monitor or link by the
//! watcher or linker, a reply by the process that answered, a remote spawn's answer by the new
//! process, an RPC's answer by the handler's task), or the task that sends it for code outside
//! processes. A channel sends all frames of one key on one of its connections, in order; the
//! receiving node dispatches each connection's frames in order and never waits between them
//! (see below). So the rule holds with any channel parallelism. It holds per channel:
//! [`crate::Node::cast_on`] sends on the channel it names, and frames on two different
//! channels are not ordered with each other.
//!
//! # Head-of-line
//!
//! A connection carries many senders' frames to many receivers, so its reader never waits for
//! one receiver. A message for a process whose mailbox is full is queued past the mailbox's
//! capacity (`Runtime::deliver_past_bound`), and the receiving node sends the sending node a
//! [`Frame::Hold`] for that receiver, addressed as the sender addressed it (pid or name). The
//! sending node's casts and calls to it then wait (`try_` sends fail with "full") until a
//! [`Frame::Resume`], which the receiving node sends once the process has taken the messages in
//! its mailbox. Only the senders to that process wait: other processes, replies and the
//! control channel go on; nothing is dropped; signals are never held, so an exit signal takes
//! effect on arrival with messages still queued, as in OTP.
//!
//! The bound: a mailbox holds at most its capacity plus what its senders had sent before the
//! hold reached them (per peer, at most the peer's queue, `peer_queue_frames`, and what the
//! sockets buffer), and never more than its capacity plus [`OVERDRAFT_PER_PEER_QUEUE`] times
//! `peer_queue_frames`. A peer that ignores holds past that finds its connection waiting for
//! room (TCP back-pressure, on that peer alone).
//!
//! Monitors and links that cross to a peer are recorded on the peer ([`crate::peer::Ties`]),
//! so that losing the peer can be reported to each local process with
//! [`ExitReason::NoConnection`].

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use shoal_process::remote::{
    Admitted, DeliverError, Inbound, Outbound, Remote, RemoteReply, ReplySink, RouteError,
    Unreachable,
};
use shoal_process::{
    ExitKind, ExitReason, NodeId, Pid, Ref, RemoteFailure, Runtime, SpanId, TraceContext,
};

use crate::DEFAULT_CHANNEL;
use crate::answers::{PendingAnswers, Waiter};
use crate::membership::Members;
use crate::net::BoxFuture;
use crate::peer::{Bound, Lane, Peer, PushError, lock, pid_key, sender_key};
use crate::requests::name_key;
use crate::rpc::{self, RpcHandlers};
use crate::tasks::Tasks;
use crate::trace;
use crate::wire::{Addressee, Failure, Frame};

/// How far past its capacity a mailbox may be filled by other nodes, in peer queues (see
/// "Head-of-line" above).
pub(crate) const OVERDRAFT_PER_PEER_QUEUE: usize = 4;

/// Opens connections on demand ([`crate::Membership::Managed`]): the node's cluster, as the
/// process operations see it.
pub(crate) trait Reach: Send + Sync {
    /// A peer for `node`, not a member yet, whose connections are being opened from where the
    /// node's directory says it listens; `None` when it is not known (or not in managed mode).
    fn open_on_demand(self: Arc<Self>, node: NodeId) -> Option<Arc<Peer>>;
}

/// What remote process operations need: the runtime, the members, the answers awaited, the
/// RPC handlers, and the holds this node asked of its peers.
pub(crate) struct Processes {
    pub(crate) runtime: Runtime,
    pub(crate) members: Arc<Members>,
    /// Set once the cluster is built.
    reach: OnceLock<Weak<dyn Reach>>,
    pub(crate) answers: Arc<PendingAnswers>,
    pub(crate) rpc: Arc<RpcHandlers>,
    tasks: Arc<Tasks>,
    /// Local processes past their mailbox's capacity, with the peers asked to hold.
    holds: Mutex<HashMap<Pid, Vec<Held>>>,
    overdraft: usize,
}

impl Processes {
    pub(crate) fn new(
        runtime: Runtime,
        members: Arc<Members>,
        answers: Arc<PendingAnswers>,
        tasks: Arc<Tasks>,
        peer_queue_frames: usize,
    ) -> Self {
        Self {
            runtime,
            members,
            reach: OnceLock::new(),
            answers,
            rpc: Arc::default(),
            tasks,
            holds: Mutex::default(),
            overdraft: peer_queue_frames.saturating_mul(OVERDRAFT_PER_PEER_QUEUE),
        }
    }
}

impl Processes {
    /// Lets process operations open connections on demand through `reach` (managed mode
    /// only: in the others, what is sent goes to connected members only, as always).
    pub(crate) fn set_reach(&self, reach: Weak<dyn Reach>) {
        let _ = self.reach.set(reach);
    }

    /// The peer to send to `node` through: a member that is up, or else, in managed mode, one
    /// whose connections are being opened (what is sent waits in its queue), opened on demand
    /// now if need be. `None`: not reachable.
    pub(crate) fn reach(&self, node: NodeId) -> Option<Arc<Peer>> {
        let on_demand = self.reach.get();
        if let Some(peer) = self.members.get(node) {
            let usable = if on_demand.is_some() { peer.is_reachable() } else { peer.is_up() };
            return usable.then_some(peer);
        }
        on_demand?.upgrade()?.open_on_demand(node)
    }
}

/// A peer asked to hold its casts and calls to a local process, and how it addresses it.
type Held = (Weak<Peer>, Addressee);

/// The runtime's way out to other nodes.
pub(crate) struct Transport(Weak<Processes>);

impl Transport {
    pub(crate) fn new(processes: &Arc<Processes>) -> Self {
        Self(Arc::downgrade(processes))
    }
}

impl Remote for Transport {
    fn try_route(&self, outbound: Outbound) -> Result<(), RouteError> {
        let found = self.0.upgrade().and_then(|processes| {
            let peer = processes.reach(outbound.node())?;
            Some((processes, peer))
        });
        let Some((processes, peer)) = found else {
            return Err(RouteError::NoConnection(outbound));
        };
        processes.route(&peer, outbound)
    }

    fn poll_ready(
        &self,
        waiting: &Outbound,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Unreachable>> {
        let peer = self.0.upgrade().and_then(|processes| processes.members.get(waiting.node()));
        let Some(peer) = peer else {
            return Poll::Ready(Err(Unreachable));
        };
        let addressee = match waiting {
            Outbound::CastNamed { name, .. } | Outbound::CallNamed { name, .. } => {
                Addressee::Name(name.clone())
            }
            Outbound::Cast { to, .. } | Outbound::Call { to, .. } => Addressee::Pid(*to),
            // Only casts and calls are handed back for want of room.
            _ => return Poll::Ready(Ok(())),
        };
        match peer.poll_room(cx) {
            Poll::Ready(Ok(())) => peer.poll_unheld(&addressee, cx).map(Ok),
            other => other.map_err(|()| Unreachable),
        }
    }

    fn is_connected(&self, node: NodeId) -> bool {
        let peer = self.0.upgrade().and_then(|processes| processes.members.get(node));
        peer.is_some_and(|peer| peer.is_up())
    }

    fn trace_context(&self, span: &tracing::Span) -> Option<TraceContext> {
        trace::outbound(span)
    }

    fn join_trace(&self, span: &tracing::Span, caller: TraceContext) -> Option<SpanId> {
        trace::join(span, caller)
    }
}

impl Processes {
    #[expect(
        clippy::result_large_err,
        reason = "the operation is handed back only when it was not queued; boxing it would \
                  allocate on every send"
    )]
    fn route(&self, peer: &Peer, outbound: Outbound) -> Result<(), RouteError> {
        let node = peer.id;
        let handed_back = |error: PushError, reply: Option<RemoteReply>| match error {
            PushError::Full(frame) => RouteError::Full(into_outbound(node, frame, reply)),
            PushError::Down(frame) => RouteError::NoConnection(into_outbound(node, frame, reply)),
        };
        match outbound {
            Outbound::Cast { to, payload } => {
                if peer.is_held(&Addressee::Pid(to)) {
                    return Err(RouteError::Full(Outbound::Cast { to, payload }));
                }
                let lane = Lane::new(sender_key(), pid_key(to));
                let frame = Frame::Cast { to, payload };
                peer.push(DEFAULT_CHANNEL, lane, frame, Bound::Counted)
                    .map_err(|error| handed_back(error, None))
            }
            Outbound::Call { to, payload, reply, trace } => {
                if peer.is_held(&Addressee::Pid(to)) {
                    return Err(RouteError::Full(Outbound::Call { to, payload, reply, trace }));
                }
                let id = self.answers.await_from(peer.id, Waiter::Runtime(reply));
                let lane = Lane::new(sender_key(), pid_key(to));
                let frame = match trace {
                    None => Frame::Call { id, to, payload },
                    Some(trace) => Frame::TracedCall { id, to, payload, trace: trace.into() },
                };
                peer.push(DEFAULT_CHANNEL, lane, frame, Bound::Counted).map_err(|error| {
                    let reply = match self.answers.withdraw(id) {
                        Some(Waiter::Runtime(reply)) => Some(reply),
                        _ => None,
                    };
                    handed_back(error, reply)
                })
            }
            Outbound::CastNamed { target, name, payload } => {
                if peer.is_held_name(&name) {
                    return Err(RouteError::Full(Outbound::CastNamed { target, name, payload }));
                }
                let lane = Lane::new(sender_key(), name_key(&name));
                let frame = Frame::CastNamed { name, payload };
                peer.push(DEFAULT_CHANNEL, lane, frame, Bound::Counted)
                    .map_err(|error| handed_back(error, None))
            }
            Outbound::CallNamed { target, name, payload, reply, trace } => {
                if peer.is_held_name(&name) {
                    let call = Outbound::CallNamed { target, name, payload, reply, trace };
                    return Err(RouteError::Full(call));
                }
                let id = self.answers.await_from(peer.id, Waiter::Runtime(reply));
                let lane = Lane::new(sender_key(), name_key(&name));
                let frame = match trace {
                    None => Frame::CallNamed { id, name, payload },
                    Some(trace) => {
                        Frame::TracedCallNamed { id, name, payload, trace: trace.into() }
                    }
                };
                peer.push(DEFAULT_CHANNEL, lane, frame, Bound::Counted).map_err(|error| {
                    let reply = match self.answers.withdraw(id) {
                        Some(Waiter::Runtime(reply)) => Some(reply),
                        _ => None,
                    };
                    handed_back(error, reply)
                })
            }
            signal => match self.tie(peer, signal) {
                Ok((lane, frame)) => peer
                    .push(DEFAULT_CHANNEL, lane, frame, Bound::Exempt)
                    .map_err(|error| handed_back(error, None)),
                Err(unknown) => Err(RouteError::NoConnection(unknown)),
            },
        }
    }

    /// Records what a signal changes in the ties to the peer; returns its lane and frame. An
    /// operation this transport does not know is handed back.
    fn tie(&self, peer: &Peer, signal: Outbound) -> Result<(Lane, Frame), Outbound> {
        let mut ties = lock(&peer.ties);
        match signal {
            Outbound::Exit { to, from, reason, kind } => {
                if kind == ExitKind::Link {
                    ties.links.remove(&(from, to));
                }
                // An exit from code outside processes comes from the system pid: it goes in
                // order with the rest of what that code sends.
                let sender =
                    if from == self.runtime.system_pid() { sender_key() } else { pid_key(from) };
                Ok((Lane::new(sender, pid_key(to)), Frame::Exit { to, from, reason, kind }))
            }
            Outbound::Down { to, monitor, pid, reason } => {
                ties.watched.remove(&monitor);
                Ok((Lane::new(pid_key(pid), pid_key(to)), Frame::Down { to, monitor, pid, reason }))
            }
            Outbound::Monitor { target, watcher, monitor } => {
                ties.watching.insert(monitor, (watcher, target));
                let lane = Lane::new(pid_key(watcher), pid_key(target));
                Ok((lane, Frame::Monitor { target, watcher, monitor }))
            }
            Outbound::MonitorName { target, name, watcher, monitor } => {
                ties.watching.insert(monitor, (watcher, target));
                let lane = Lane::new(pid_key(watcher), pid_key(target));
                Ok((lane, Frame::MonitorName { target, name, watcher, monitor }))
            }
            Outbound::Demonitor { target, watcher, monitor } => {
                ties.watching.remove(&monitor);
                let lane = Lane::new(pid_key(watcher), pid_key(target));
                Ok((lane, Frame::Demonitor { target, monitor }))
            }
            Outbound::Link { to, from } => {
                ties.links.insert((from, to));
                Ok((Lane::new(pid_key(from), pid_key(to)), Frame::Link { to, from }))
            }
            Outbound::Unlink { to, from } => {
                ties.links.remove(&(from, to));
                Ok((Lane::new(pid_key(from), pid_key(to)), Frame::Unlink { to, from }))
            }
            // Casts and calls are routed before this; an operation added to the runtime later
            // is refused rather than guessed at.
            other => Err(other),
        }
    }
}

/// Turns a frame for `node` that was not queued back into the operation it came from.
fn into_outbound(node: NodeId, frame: Frame, reply: Option<RemoteReply>) -> Outbound {
    let target = Pid::name_placeholder(node);
    match (frame, reply) {
        (Frame::Cast { to, payload }, _) => Outbound::Cast { to, payload },
        (Frame::Call { to, payload, .. }, Some(reply)) => {
            Outbound::Call { to, payload, reply, trace: None }
        }
        (Frame::TracedCall { to, payload, trace, .. }, Some(reply)) => {
            Outbound::Call { to, payload, reply, trace: trace.context() }
        }
        (Frame::CastNamed { name, payload }, _) => Outbound::CastNamed { target, name, payload },
        (Frame::CallNamed { name, payload, .. }, Some(reply)) => {
            Outbound::CallNamed { target, name, payload, reply, trace: None }
        }
        (Frame::TracedCallNamed { name, payload, trace, .. }, Some(reply)) => {
            Outbound::CallNamed { target, name, payload, reply, trace: trace.context() }
        }
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
        // Only the transport reads the watcher of a demonitor, and it did: any pid does.
        (Frame::Demonitor { target, monitor }, _) => {
            Outbound::Demonitor { target, watcher: target, monitor }
        }
        (Frame::Link { to, from }, _) => Outbound::Link { to, from },
        (Frame::Unlink { to, from }, _) => Outbound::Unlink { to, from },
        (frame, _) => unreachable!("a {} frame is not a process operation", frame.kind()),
    }
}

/// Queues a counted frame (a cast, a call, a request) for `peer`, waiting for room in its queue
/// and, when the receiver is addressed as `held_as`, for any hold on it to be lifted.
pub(crate) async fn push_waiting(
    peer: &Peer,
    channel: &str,
    lane: Lane,
    held_as: Option<&Addressee>,
    mut frame: Frame,
) -> Result<(), ()> {
    loop {
        if let Some(to) = held_as {
            poll_fn(|cx| peer.poll_unheld(to, cx)).await;
        }
        match peer.push(channel, lane, frame, Bound::Counted) {
            Ok(()) => {
                // A sender with room never waits; spending coop budget makes a long loop of
                // sends yield now and then, so heartbeats are not starved.
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

/// Answers a call or request from a peer by queueing a [`Frame::Reply`] to it, in order with
/// what the answering sender (`from_key`) sends.
pub(crate) struct ReplyVia {
    peer: Weak<Peer>,
    id: u64,
    from_key: u64,
}

impl ReplySink for ReplyVia {
    fn reply(self: Box<Self>, outcome: Result<Bytes, RemoteFailure>) {
        self.send(outcome.map_err(Failure::Process));
    }
}

impl ReplyVia {
    fn new(peer: &Arc<Peer>, id: u64, from_key: u64) -> Self {
        Self { peer: Arc::downgrade(peer), id, from_key }
    }

    fn send(&self, outcome: Result<Bytes, Failure>) {
        let Some(peer) = self.peer.upgrade() else { return };
        let frame = Frame::Reply { id: self.id, outcome };
        let lane = Lane::new(self.from_key, self.id);
        if peer.push(DEFAULT_CHANNEL, lane, frame, Bound::Exempt).is_err() {
            tracing::debug!(peer = %peer.name(), "a reply was lost with the connection");
        }
    }
}

impl Processes {
    /// Hands one process frame from `peer` to where it belongs. Returns a future to finish
    /// before the connection's next frame only for a message past the overdraft (a peer that
    /// ignored its hold), or one for a full mailbox that refuses rather than waits.
    pub(crate) fn dispatch(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        frame: Frame,
    ) -> Option<BoxFuture<'static, ()>> {
        let runtime = &self.runtime;
        match frame {
            Frame::Cast { to, payload } => {
                return self.deliver(peer, to, Addressee::Pid(to), Inbound::cast(payload));
            }
            Frame::Call { id, to, payload } => {
                let sink = Box::new(ReplyVia::new(peer, id, pid_key(to)));
                return self.deliver(peer, to, Addressee::Pid(to), Inbound::call(payload, sink));
            }
            Frame::TracedCall { id, to, payload, trace } => {
                let sink = Box::new(ReplyVia::new(peer, id, pid_key(to)));
                let inbound = trace::inbound(Inbound::call(payload, sink), peer, &trace);
                return self.deliver(peer, to, Addressee::Pid(to), inbound);
            }
            Frame::Reply { id, outcome } => self.answers.settle(id, outcome),
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
                    let lane = Lane::new(pid_key(target), pid_key(watcher));
                    let _ = peer.push(DEFAULT_CHANNEL, lane, down, Bound::Exempt);
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
                    let reason = ExitReason::NoProc;
                    let exit = Frame::Exit { to: from, from: to, reason, kind: ExitKind::Link };
                    let lane = Lane::new(pid_key(to), pid_key(from));
                    let _ = peer.push(DEFAULT_CHANNEL, lane, exit, Bound::Exempt);
                }
            }
            Frame::Unlink { to, from } => {
                lock(&peer.ties).links.remove(&(to, from));
                runtime.remote_unlink(to, from);
            }
            Frame::CastNamed { name, payload } => match runtime.whereis(&name) {
                Some(pid) => {
                    return self.deliver(peer, pid, Addressee::Name(name), Inbound::cast(payload));
                }
                None => tracing::debug!(%name, "a cast for an unregistered name was dropped"),
            },
            Frame::CallNamed { id, name, payload } => match runtime.whereis(&name) {
                Some(pid) => {
                    let sink = Box::new(ReplyVia::new(peer, id, pid_key(pid)));
                    let inbound = Inbound::call(payload, sink);
                    return self.deliver(peer, pid, Addressee::Name(name), inbound);
                }
                None => {
                    ReplyVia::new(peer, id, sender_key()).send(Err(Failure::NotRegistered(name)))
                }
            },
            Frame::TracedCallNamed { id, name, payload, trace } => match runtime.whereis(&name) {
                Some(pid) => {
                    let sink = Box::new(ReplyVia::new(peer, id, pid_key(pid)));
                    let inbound = trace::inbound(Inbound::call(payload, sink), peer, &trace);
                    return self.deliver(peer, pid, Addressee::Name(name), inbound);
                }
                None => {
                    ReplyVia::new(peer, id, sender_key()).send(Err(Failure::NotRegistered(name)))
                }
            },
            Frame::Request { id, request } => {
                let (processes, peer) = (self.clone(), peer.clone());
                self.tasks.spawn(async move {
                    let answer = move |outcome, from_key: Option<u64>| {
                        let from_key = from_key.unwrap_or_else(sender_key);
                        ReplyVia::new(&peer, id, from_key).send(outcome);
                    };
                    rpc::serve(&processes.runtime, &processes.rpc, request, answer).await;
                });
            }
            Frame::Hold { to } => peer.hold(to),
            Frame::Resume { to } => peer.resume(&to),
            other => {
                tracing::warn!(peer = %peer.name(), kind = other.kind(), "unexpected frame ignored");
            }
        }
        None
    }

    /// Sets up a monitor by `peer`'s process `watcher` on the local process `target`, or sends
    /// the watcher its `Down` at once when `target` is not alive.
    fn monitor_for(&self, peer: &Peer, target: Pid, watcher: Pid, monitor: Ref) {
        lock(&peer.ties).watched.insert(monitor, target);
        if let Err(reason) = self.runtime.remote_monitor(target, watcher, monitor) {
            lock(&peer.ties).watched.remove(&monitor);
            let down = Frame::Down { to: watcher, monitor, pid: target, reason };
            let lane = Lane::new(pid_key(target), pid_key(watcher));
            let _ = peer.push(DEFAULT_CHANNEL, lane, down, Bound::Exempt);
        }
    }

    /// Delivers a message from `peer` to the local process `to` (which the sender addressed as
    /// `addressed`) without waiting: past a full mailbox's capacity if need be, with a hold
    /// sent to the peer.
    fn deliver(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        to: Pid,
        addressed: Addressee,
        inbound: Inbound,
    ) -> Option<BoxFuture<'static, ()>> {
        match self.runtime.deliver_past_bound(to, inbound, self.overdraft) {
            Ok(Admitted::WithinBound) => None,
            Ok(Admitted::PastBound) => {
                self.hold(peer, to, addressed);
                None
            }
            Err(DeliverError::NoProc(inbound)) => {
                tracing::trace!(%to, "no such process: message dropped");
                inbound.refuse(RemoteFailure::NoProc);
                None
            }
            Err(DeliverError::Full(inbound)) => {
                // A mailbox that refuses when full answers at once; past the overdraft, the
                // connection waits for room.
                let processes = self.clone();
                Some(Box::pin(async move { processes.deliver_waiting(to, inbound).await }))
            }
        }
    }

    /// Delivers to a local process, waiting while its mailbox is full (which holds back the
    /// connection it came on). A message that cannot be delivered is refused with the reason.
    pub(crate) async fn deliver_waiting(&self, to: Pid, inbound: Inbound) {
        match self.runtime.deliver(to, inbound).await {
            Ok(()) => {}
            Err(DeliverError::NoProc(inbound)) => {
                tracing::trace!(%to, "no such process: message dropped");
                inbound.refuse(RemoteFailure::NoProc);
            }
            Err(DeliverError::Full(inbound)) => inbound.refuse(RemoteFailure::Full),
        }
    }

    /// Asks `peer` to hold casts and calls to `to` (addressed as `addressed`) until it has
    /// room, once per peer and address.
    fn hold(self: &Arc<Self>, peer: &Arc<Peer>, to: Pid, addressed: Addressee) {
        let first = {
            let mut holds = lock(&self.holds);
            let first = !holds.contains_key(&to);
            let asked = holds.entry(to).or_default();
            let peer_ref = Arc::downgrade(peer);
            if asked.iter().any(|(p, a)| p.ptr_eq(&peer_ref) && *a == addressed) {
                return;
            }
            asked.push((peer_ref, addressed.clone()));
            first
        };
        tracing::trace!(%to, peer = %peer.name(), "mailbox past its capacity: sender held");
        peer.push_control(Frame::Hold { to: addressed });
        if first {
            let processes = self.clone();
            self.tasks.spawn(async move { processes.resume_when_room(to).await });
        }
    }

    /// Waits until `to` has room (or is gone), then lifts its holds.
    async fn resume_when_room(self: Arc<Self>, to: Pid) {
        poll_fn(|cx| self.runtime.poll_room(to, cx)).await;
        let asked = lock(&self.holds).remove(&to).unwrap_or_default();
        for (peer, addressed) in asked {
            if let Some(peer) = peer.upgrade() {
                peer.push_control(Frame::Resume { to: addressed });
            }
        }
    }
}
