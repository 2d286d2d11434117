//! The seam between the process runtime and a transport to other nodes.
//!
//! The runtime never opens a socket. When an operation targets a pid of another node, it hands
//! an [`Outbound`] to the [`Remote`] installed with [`crate::Runtime::set_remote`]; when a
//! transport reads something for a local process off the wire, it calls the `deliver_*` and
//! `remote_*` methods of [`crate::Runtime`] defined here. Payloads stay encoded until the
//! receiving process decodes them with its behaviour's [`crate::Codec`].
//!
//! ```text
//!  process A ──cast(pid on node 2)──▶ Runtime ──Outbound::Cast──▶ Remote (transport)
//!                                                                    │ bytes
//!  process B ◀──handle_cast(msg)── decode in B ◀── deliver(Inbound) ◀─┘ (node 2)
//! ```
//!
//! Without a transport installed, every remote operation fails with "no connection", and a
//! monitor on a remote pid fires at once with [`crate::ExitReason::NoConnection`].

use std::fmt;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::cell::ErasedPush;
pub use crate::mailbox::Admitted;
use crate::trace::SpanId;
use crate::{ExitKind, ExitReason, NodeId, Pid, Ref, RemoteFailure, Runtime, TraceContext};

/// What a transport does for the runtime: carry operations to processes on other nodes.
///
/// `try_route` must not block. Casts and calls may be refused with [`RouteError::Full`] when
/// the peer's queue is full or the receiver asked its senders to hold (the runtime then waits
/// in [`Remote::poll_ready`] and tries again); signals, monitors and links must be accepted
/// unless the node is unreachable, since they are bounded by the processes' own monitors and
/// links.
///
/// `try_route` runs in the sender's context: [`current_sender`] tells a transport which
/// process (if any) is sending, so that it can keep each sender's operations in order.
pub trait Remote: Send + Sync + 'static {
    /// Queues an operation for the node of its target pid.
    fn try_route(&self, outbound: Outbound) -> Result<(), RouteError>;

    /// Ready when the cast or call `waiting` (handed back as [`RouteError::Full`]) would be
    /// accepted, or with an error when its node cannot be reached.
    fn poll_ready(&self, waiting: &Outbound, cx: &mut Context<'_>)
    -> Poll<Result<(), Unreachable>>;

    /// Whether `node` is connected now: what a handle to a process there can tell of its
    /// liveness without asking. `true` unless the transport knows otherwise.
    fn is_connected(&self, node: NodeId) -> bool {
        let _ = node;
        true
    }

    /// The trace context of `span`, a remote call's `call` span just created, as a tracing
    /// bridge the transport has sees it (OpenTelemetry's trace and span ids, say); `None` (the
    /// default) lets the runtime use its own ([`TraceContext`]).
    fn trace_context(&self, span: &tracing::Span) -> Option<TraceContext> {
        let _ = span;
        None
    }

    /// Makes `caller`, the trace context a call from another node came with, the parent of
    /// `span`, the callee's `handle_call` span just created, in a tracing bridge the transport
    /// has (OpenTelemetry's `set_parent`, say); returns `span`'s own span id in that bridge.
    /// `None` (the default) lets the runtime draw one ([`Runtime::fresh_span_id`]).
    fn join_trace(&self, span: &tracing::Span, caller: TraceContext) -> Option<SpanId> {
        let _ = (span, caller);
        None
    }
}

/// The process whose code runs on this thread now, if any: the sender of whatever is sent
/// from here. `None` outside processes (a plain task, a test's main).
pub fn current_sender() -> Option<Pid> {
    crate::current::running_pid()
}

/// The node cannot be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unreachable;

/// An operation on a process of another node.
#[derive(Debug)]
#[non_exhaustive]
pub enum Outbound {
    /// An encoded message for `to`.
    Cast {
        /// The receiver.
        to: Pid,
        /// The message, encoded with [`crate::codec::encode`].
        payload: Bytes,
    },
    /// An encoded request for `to`; answer through `reply`.
    Call {
        /// The receiver.
        to: Pid,
        /// The request, encoded.
        payload: Bytes,
        /// Where the encoded reply, or the failure, goes.
        reply: RemoteReply,
        /// The call's trace context, when a subscriber records its span (see
        /// [`TraceContext`]).
        trace: Option<TraceContext>,
    },
    /// An encoded message for the process registered as `name` on the node of `target`
    /// ([`Pid::name_placeholder`] of that node), resolved there.
    CastNamed {
        /// The node, as its name placeholder.
        target: Pid,
        /// The registered name.
        name: String,
        /// The message, encoded.
        payload: Bytes,
    },
    /// An encoded request for the process registered as `name` on the node of `target`;
    /// answer through `reply` (a name registered by no process there fails the call).
    CallNamed {
        /// The node, as its name placeholder.
        target: Pid,
        /// The registered name.
        name: String,
        /// The request, encoded.
        payload: Bytes,
        /// Where the encoded reply, or the failure, goes.
        reply: RemoteReply,
        /// The call's trace context, as for [`Outbound::Call`].
        trace: Option<TraceContext>,
    },
    /// An exit signal from `from` to `to`.
    Exit {
        /// The receiver.
        to: Pid,
        /// The sender.
        from: Pid,
        /// The exit reason.
        reason: ExitReason,
        /// From a link, or from an explicit `exit`.
        kind: ExitKind,
    },
    /// A monitored process exited: tell the watcher `to`.
    Down {
        /// The watcher.
        to: Pid,
        /// The monitor.
        monitor: Ref,
        /// The process that exited.
        pid: Pid,
        /// Why.
        reason: ExitReason,
    },
    /// `watcher` (on this node) starts monitoring `target`. The transport must deliver a
    /// `Down` with [`ExitReason::NoConnection`] to the watcher if the node is lost first.
    Monitor {
        /// The monitored process.
        target: Pid,
        /// The watching process.
        watcher: Pid,
        /// The monitor.
        monitor: Ref,
    },
    /// `watcher` (on this node) starts monitoring whichever process is registered as `name`
    /// on `node` now (OTP's `monitor(process, {Name, Node})`). The transport resolves the name
    /// on that node: the watcher gets a `Down` with [`ExitReason::NoProc`] if no process has
    /// it, the process's exit reason when it exits, and [`ExitReason::NoConnection`] if the
    /// node is lost first. `target` ([`Pid::name_placeholder`] of the node) stands for the
    /// process: a `Down` for its exit names it, one with `noproc` or `noconnection` names
    /// `target`.
    MonitorName {
        /// The node the name is registered on; `target` for the unresolved process.
        target: Pid,
        /// The registered name.
        name: String,
        /// The watching process.
        watcher: Pid,
        /// The monitor.
        monitor: Ref,
    },
    /// A monitor is removed.
    Demonitor {
        /// The monitored process.
        target: Pid,
        /// The watching process (on this node).
        watcher: Pid,
        /// The monitor.
        monitor: Ref,
    },
    /// `from` (on this node) links to `to`. The transport must deliver a link exit with
    /// [`ExitReason::NoConnection`] to `from` if the node is lost while linked.
    Link {
        /// The remote process.
        to: Pid,
        /// The local process.
        from: Pid,
    },
    /// `from` removes its link to `to`.
    Unlink {
        /// The remote process.
        to: Pid,
        /// The local process.
        from: Pid,
    },
}

impl Outbound {
    /// The node this operation goes to.
    pub fn node(&self) -> NodeId {
        match self {
            Self::Cast { to, .. }
            | Self::Call { to, .. }
            | Self::Exit { to, .. }
            | Self::Down { to, .. }
            | Self::Link { to, .. }
            | Self::Unlink { to, .. } => to.node(),
            Self::Monitor { target, .. }
            | Self::MonitorName { target, .. }
            | Self::CastNamed { target, .. }
            | Self::CallNamed { target, .. }
            | Self::Demonitor { target, .. } => target.node(),
        }
    }
}

/// An operation the transport did not take; it is handed back.
#[derive(Debug)]
pub enum RouteError {
    /// The peer's queue is full: wait in [`Remote::poll_ready`] and try again.
    Full(Outbound),
    /// The node cannot be reached.
    NoConnection(Outbound),
}

/// Where the answer to an outgoing remote call goes: the transport calls
/// [`RemoteReply::send`] once with the encoded reply or the failure the other node reported.
pub struct RemoteReply(oneshot::Sender<Result<Bytes, RemoteFailure>>);

impl RemoteReply {
    pub(crate) fn new() -> (Self, oneshot::Receiver<Result<Bytes, RemoteFailure>>) {
        let (sender, receiver) = oneshot::channel();
        (Self(sender), receiver)
    }

    /// Answers the call. Returns `false` when the caller no longer waits (it timed out).
    pub fn send(self, outcome: Result<Bytes, RemoteFailure>) -> bool {
        self.0.send(outcome).is_ok()
    }

    /// Whether the caller stopped waiting (it timed out): the transport may forget the call.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

impl fmt::Debug for RemoteReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RemoteReply")
    }
}

/// Where the answer to an incoming remote call goes: implemented by the transport, called
/// exactly once (a reply handle dropped unanswered reports [`RemoteFailure::NoReply`]).
pub trait ReplySink: Send + 'static {
    /// Sends the encoded reply, or the failure, back to the calling node.
    fn reply(self: Box<Self>, outcome: Result<Bytes, RemoteFailure>);
}

/// A message from another node for a local process, still encoded.
pub struct Inbound {
    pub(crate) payload: Bytes,
    pub(crate) reply: Option<Box<dyn ReplySink>>,
    /// The caller's trace context, for a traced call.
    pub(crate) trace: Option<TraceContext>,
}

impl Inbound {
    /// An encoded cast.
    pub fn cast(payload: Bytes) -> Self {
        Self { payload, reply: None, trace: None }
    }

    /// An encoded call, answered through `reply`.
    pub fn call(payload: Bytes, reply: Box<dyn ReplySink>) -> Self {
        Self { payload, reply: Some(reply), trace: None }
    }

    /// The same message, from a caller in the trace `caller`: its handler runs in a
    /// `handle_call` span of that trace, with the caller's span as parent, when a subscriber
    /// records it (see [`TraceContext`]), and a call made from the handler continues the trace.
    pub fn with_trace(mut self, caller: TraceContext) -> Self {
        self.trace = Some(caller);
        self
    }

    /// The caller's trace context, if the message came with one.
    pub fn trace_context(&self) -> Option<TraceContext> {
        self.trace
    }

    /// Answers a refused call with `failure` (a cast is just dropped).
    pub fn refuse(mut self, failure: RemoteFailure) {
        if let Some(sink) = self.reply.take() {
            sink.reply(Err(failure));
        }
    }
}

impl Drop for Inbound {
    /// A call dropped unanswered (never handled, never refused) still gets an answer.
    fn drop(&mut self) {
        if let Some(sink) = self.reply.take() {
            sink.reply(Err(RemoteFailure::NoReply));
        }
    }
}

impl fmt::Debug for Inbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.reply.is_some() { "call" } else { "cast" };
        f.debug_struct("Inbound").field("kind", &kind).field("bytes", &self.payload.len()).finish()
    }
}

/// An inbound message that was not queued; it is handed back so the transport can wait for
/// room ([`Runtime::poll_room`]) or [`Inbound::refuse`] it.
#[derive(Debug)]
pub enum DeliverError {
    /// The mailbox is full.
    Full(Inbound),
    /// No such process is alive here.
    NoProc(Inbound),
}

/// The inbound half of the seam, called by transports.
impl Runtime {
    /// Queues a message from another node for the local process `to`, without waiting.
    pub fn try_deliver(&self, to: Pid, inbound: Inbound) -> Result<(), DeliverError> {
        self.deliver_past_bound(to, inbound, 0).map(|_| ())
    }

    /// Queues a message from another node for the local process `to` without waiting: within
    /// its mailbox's capacity if there is room, otherwise — for a mailbox whose senders wait
    /// when it is full — up to `overdraft` messages past it, which a transport that reads many
    /// senders' messages from one connection uses so that one full mailbox does not hold up the
    /// rest (it then asks the senders to hold, and bounds the overdraft by what they had in
    /// flight). [`DeliverError::Full`] for a `Reject` mailbox that is full, or past the
    /// overdraft.
    pub fn deliver_past_bound(
        &self,
        to: Pid,
        inbound: Inbound,
        overdraft: usize,
    ) -> Result<Admitted, DeliverError> {
        let Some(cell) = self.lookup(to) else {
            return Err(DeliverError::NoProc(inbound));
        };
        match cell.try_push_inbound(inbound, overdraft) {
            Ok(admitted) => Ok(admitted),
            Err(ErasedPush::Full(inbound)) => Err(DeliverError::Full(inbound)),
            Err(ErasedPush::Closed(inbound) | ErasedPush::WrongType(inbound)) => {
                Err(DeliverError::NoProc(inbound))
            }
        }
    }

    /// Queues a message from another node for the local process `to`, waiting for room when
    /// its mailbox is full (a `Reject` mailbox answers [`DeliverError::Full`] at once). A cast
    /// refused that way is counted ([`Runtime::refused_remote_casts`]) and logged; a call's
    /// caller is told by whoever refuses it.
    pub async fn deliver(&self, to: Pid, mut inbound: Inbound) -> Result<(), DeliverError> {
        loop {
            match self.try_deliver(to, inbound) {
                Err(DeliverError::Full(back)) if self.waits_when_full(to) => {
                    inbound = back;
                    std::future::poll_fn(|cx| self.poll_room(to, cx)).await;
                }
                Err(DeliverError::Full(refused)) => {
                    if refused.reply.is_none() {
                        let refused_so_far = self.count_refused_remote_cast();
                        tracing::warn!(
                            %to,
                            refused_so_far,
                            "a cast from another node was refused: the mailbox is full"
                        );
                    }
                    return Err(DeliverError::Full(refused));
                }
                done => return done,
            }
        }
    }

    /// Ready when the local process `to` has room for a message or is gone.
    pub fn poll_room(&self, to: Pid, cx: &mut Context<'_>) -> Poll<()> {
        match self.lookup(to) {
            Some(cell) => cell.poll_room(cx).map(|_| ()),
            None => Poll::Ready(()),
        }
    }

    /// Delivers an exit signal from a process of another node to the local process `to`. A
    /// direct exit for a process that traps exits counts against its mailbox's bound; one that
    /// finds it full is refused and logged (this does not wait).
    pub fn deliver_exit(&self, to: Pid, from: Pid, reason: ExitReason, kind: ExitKind) {
        if let Err(error) = self.send_exit(to, from, reason, kind) {
            tracing::warn!(%to, %from, %error, "an exit signal from another node was refused");
        }
    }

    /// Delivers a monitor's `Down` from another node to the local watcher `to`.
    pub fn deliver_down(&self, to: Pid, monitor: Ref, pid: Pid, reason: ExitReason) {
        self.send_down(to, monitor, pid, reason);
    }

    /// Delivers [`crate::Signal::NodeUp`] to the local process `to`, which subscribed to node
    /// events through the transport. Like a `Down`, it is a signal: admitted whatever the
    /// mailbox holds, since the transport bounds how many it sends. Returns `false` when `to`
    /// is not alive.
    pub fn deliver_node_up(&self, to: Pid, node: String, incarnation: u64) -> bool {
        self.push_node_signal(to, crate::Signal::NodeUp { node, incarnation })
    }

    /// Delivers [`crate::Signal::NodeDown`] to the local process `to`, as
    /// [`Runtime::deliver_node_up`] does `NodeUp`.
    pub fn deliver_node_down(
        &self,
        to: Pid,
        node: String,
        incarnation: u64,
        reason: String,
    ) -> bool {
        self.push_node_signal(to, crate::Signal::NodeDown { node, incarnation, reason })
    }

    fn push_node_signal(&self, to: Pid, signal: crate::Signal) -> bool {
        self.lookup(to).is_some_and(|cell| cell.push_signal(signal))
    }

    /// A process of another node starts monitoring the local process `target`. When it is not
    /// alive, returns the reason to report at once in a `Down` (always
    /// [`ExitReason::NoProc`]).
    pub fn remote_monitor(
        &self,
        target: Pid,
        watcher: Pid,
        monitor: Ref,
    ) -> Result<(), ExitReason> {
        self.add_monitor(target, monitor, crate::control::Watcher::Process(watcher))
    }

    /// Removes a monitor set up by [`Runtime::remote_monitor`].
    pub fn remote_demonitor(&self, target: Pid, monitor: Ref) {
        if let Some(cell) = self.lookup(target) {
            cell.control().remove_monitor(monitor);
        }
    }

    /// A process of another node links to the local process `local`. When `local` is not
    /// alive, the caller must send a link exit with [`ExitReason::NoProc`] back.
    pub fn remote_link(&self, local: Pid, remote: Pid) -> Result<(), crate::LinkError> {
        let cell = self.lookup(local).ok_or(crate::LinkError::NoProc(local))?;
        cell.control().add_link(remote).map_err(|_| crate::LinkError::NoProc(local))
    }

    /// Removes a link made by [`Runtime::remote_link`].
    pub fn remote_unlink(&self, local: Pid, remote: Pid) {
        if let Some(cell) = self.lookup(local) {
            cell.control().remove_link(remote);
        }
    }
}
