//! Messaging by destination, wherever the process runs: a pid, a name, a name on another node,
//! a via-name. A local process gets the value moved (its type checked on arrival); a process on
//! another node gets it encoded, through the transport.
//!
//! The untyped operations ([`Runtime::cast`], [`Runtime::call`]) encode with serde; the typed
//! ones ([`crate::Addr`], [`crate::Target`]) with the behaviour's [`crate::Codec`]. Both come
//! down to the same paths here, given how to encode (a [`Wire`]).

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use crate::addr::within;
use crate::cell::{AnyBox, ErasedPush, ProcessCell};
use crate::clock::Clock;
use crate::codec::{decode, encode};
use crate::current;
use crate::dest::{Dest, ResolveError};
use crate::mailbox::Overflow;
use crate::remote::{Outbound, Remote, RemoteReply, RouteError};
use crate::{
    CallError, DecodeError, EncodeError, NodeId, Pid, Process, RemoteFailure, Runtime, SendError,
    TraceContext,
};
use tracing::field::Empty;

/// Encodes a value for another node.
type Encoder<Q> = fn(&Q) -> Result<Bytes, EncodeError>;

/// How a request of type `Q` goes to another node and its answer `R` comes back: serde's
/// msgpack for the untyped operations, a behaviour's codec for the typed ones. `None` where
/// the behaviour takes no messages from other nodes.
pub(crate) struct Wire<Q, R> {
    encode: Option<Encoder<Q>>,
    decode: fn(&[u8]) -> Result<R, DecodeError>,
    /// The behaviour, for the error when it takes nothing from other nodes.
    behaviour: &'static str,
}

impl<Q, R> Clone for Wire<Q, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Q, R> Copy for Wire<Q, R> {}

impl<Q: Serialize, R: DeserializeOwned> Wire<Q, R> {
    fn serde() -> Self {
        Self { encode: Some(|value| encode(value)), decode, behaviour: "" }
    }
}

impl<Q, R> Wire<Q, R> {
    fn encode(&self, value: &Q) -> Result<Bytes, EncodeError> {
        match self.encode {
            Some(encode) => encode(value),
            None => Err(EncodeError(format!(
                "behaviour {} takes no messages from other nodes (Process::remote_messages)",
                self.behaviour
            ))),
        }
    }
}

/// A behaviour's casts on the wire.
pub(crate) fn cast_wire<P: Process>() -> Wire<P::Message, ()> {
    let codec = P::remote_messages();
    Wire {
        encode: codec.map(|codec| codec.encode_cast),
        decode: |_| Ok(()),
        behaviour: std::any::type_name::<P>(),
    }
}

/// A behaviour's calls on the wire.
pub(crate) fn call_wire<P: Process>() -> Wire<P::Call, P::Reply> {
    let codec = P::remote_messages();
    Wire {
        encode: codec.map(|codec| codec.encode_call),
        decode: codec.map_or(|_| Err(DecodeError("no codec".into())), |codec| codec.decode_reply),
        behaviour: std::any::type_name::<P>(),
    }
}

/// Why an operation for another node could not even be handed to the transport.
enum NotRoutable {
    NoProc,
    NoConnection,
    Encode(EncodeError),
}

/// Where an operation for another node goes: a pid, or a name resolved by its node.
#[derive(Clone)]
enum Far {
    Pid(Pid),
    Named { node: NodeId, name: String },
}

impl Far {
    fn cast(&self, payload: Bytes) -> Outbound {
        match self.clone() {
            Self::Pid(to) => Outbound::Cast { to, payload },
            Self::Named { node, name } => {
                Outbound::CastNamed { target: Pid::name_placeholder(node), name, payload }
            }
        }
    }

    fn call(&self, payload: Bytes, reply: RemoteReply, trace: Option<TraceContext>) -> Outbound {
        match self.clone() {
            Self::Pid(to) => Outbound::Call { to, payload, reply, trace },
            Self::Named { node, name } => {
                let target = Pid::name_placeholder(node);
                Outbound::CallNamed { target, name, payload, reply, trace }
            }
        }
    }

    fn node(&self) -> NodeId {
        match self {
            Self::Pid(pid) => pid.node(),
            Self::Named { node, .. } => *node,
        }
    }
}

/// How a `call` span names its destination.
impl std::fmt::Display for Far {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pid(pid) => write!(f, "{pid}"),
            Self::Named { node, name } => write!(f, "{name} on {node}"),
        }
    }
}

impl Runtime {
    /// Casts `message` to `to` (a pid, an [`crate::Addr`], a name, or any [`Dest`]), waiting
    /// for room if its mailbox (or the link to its node) is full. A local process gets the value
    /// moved; a remote one gets it encoded. A name not registered is [`SendError::NoProc`]. A
    /// process casting to itself never waits: see [`crate::Addr::cast`].
    pub async fn cast<M>(&self, to: impl Into<Dest>, message: M) -> Result<(), SendError<M>>
    where
        M: Serialize + Send + 'static,
    {
        match to.into() {
            Dest::Pid(pid) => self.cast_pid(pid, message, Wire::<M, ()>::serde()).await,
            dest => Box::pin(self.cast_dest(dest, message, Wire::<M, ()>::serde())).await,
        }
    }

    /// Casts `message` to `to` without waiting: a full mailbox, or a full link to the node,
    /// is [`SendError::Full`]; a via-name not resolved yet is [`SendError::Unresolved`] (the
    /// waiting [`Runtime::cast`] resolves it).
    pub fn try_cast<M>(&self, to: impl Into<Dest>, message: M) -> Result<(), SendError<M>>
    where
        M: Serialize + Send + 'static,
    {
        self.try_cast_with(to.into(), message, Wire::<M, ()>::serde())
    }

    /// Calls `to` with `request` and waits up to `timeout` for a reply of type `R`. A process
    /// calling itself is refused at once with [`CallError::CallingSelf`].
    pub async fn call<Q, R>(
        &self,
        to: impl Into<Dest>,
        request: Q,
        timeout: Duration,
    ) -> Result<R, CallError>
    where
        Q: Serialize + Send + 'static,
        R: DeserializeOwned + Send + 'static,
    {
        match to.into() {
            Dest::Pid(pid) => self.call_pid(pid, request, timeout, Wire::serde()).await,
            dest => Box::pin(self.call_dest(dest, request, timeout, Wire::serde())).await,
        }
    }

    /// The typed cast of [`crate::Target`] and remote [`crate::Addr`]s.
    pub(crate) async fn cast_typed<P: Process>(
        &self,
        to: &Dest,
        message: P::Message,
    ) -> Result<(), SendError<P::Message>> {
        match to {
            Dest::Pid(pid) => self.cast_pid(*pid, message, cast_wire::<P>()).await,
            dest => Box::pin(self.cast_dest(dest.clone(), message, cast_wire::<P>())).await,
        }
    }

    /// The typed try-cast of remote [`crate::Addr`]s.
    pub(crate) fn try_cast_typed<P: Process>(
        &self,
        to: Pid,
        message: P::Message,
    ) -> Result<(), SendError<P::Message>> {
        self.try_cast_with(Dest::Pid(to), message, cast_wire::<P>())
    }

    /// The typed call of [`crate::Target`] and remote [`crate::Addr`]s.
    pub(crate) async fn call_typed<P: Process>(
        &self,
        to: &Dest,
        request: P::Call,
        timeout: Duration,
    ) -> Result<P::Reply, CallError> {
        match to {
            Dest::Pid(pid) => self.call_pid(*pid, request, timeout, call_wire::<P>()).await,
            dest => {
                Box::pin(self.call_dest(dest.clone(), request, timeout, call_wire::<P>())).await
            }
        }
    }

    /// A cast to anything but a pid: the name resolved here, by its node, or by its layer (a
    /// via-name whose process is gone is resolved once more).
    async fn cast_dest<M, R>(
        &self,
        dest: Dest,
        message: M,
        wire: Wire<M, R>,
    ) -> Result<(), SendError<M>>
    where
        M: Send + 'static,
    {
        match dest {
            Dest::NameOn { node, name } if node != self.node() => {
                self.cast_far(Far::Named { node, name }, message, wire).await
            }
            Dest::Via(via) => {
                let mut message = message;
                for attempt in 0..2 {
                    let pid = match via.resolve().await {
                        Ok(pid) => pid,
                        Err(error) => return Err(unresolved(error, message)),
                    };
                    match self.cast_pid(pid, message, wire).await {
                        Err(SendError::NoProc(back)) if attempt == 0 => {
                            via.forget(pid);
                            message = back;
                        }
                        done => return done,
                    }
                }
                unreachable!("the second attempt returns")
            }
            local => match local.resolve_now(self) {
                Some(pid) => self.cast_pid(pid, message, wire).await,
                None => Err(SendError::NoProc(message)),
            },
        }
    }

    fn try_cast_with<M, R>(
        &self,
        dest: Dest,
        message: M,
        wire: Wire<M, R>,
    ) -> Result<(), SendError<M>>
    where
        M: Send + 'static,
    {
        let far = match dest {
            Dest::Pid(pid) if self.is_local(pid) => {
                return match self.lookup(pid) {
                    Some(cell) => cell.try_cast_any(Box::new(message)).map_err(send_error),
                    None => Err(SendError::NoProc(message)),
                };
            }
            Dest::Pid(pid) => Far::Pid(pid),
            Dest::NameOn { node, name } if node != self.node() => Far::Named { node, name },
            local => match local.resolve_now(self) {
                Some(pid) => return self.try_cast_with(Dest::Pid(pid), message, wire),
                None if matches!(local, Dest::Via(_)) => {
                    let error = ResolveError::Failed {
                        what: local.to_string(),
                        reason: "not resolved yet (a waiting cast resolves it)".into(),
                    };
                    return Err(SendError::Unresolved(message, error));
                }
                None => return Err(SendError::NoProc(message)),
            },
        };
        let (remote, payload) = match self.prepare_remote(far.node(), &message, &wire) {
            Ok(prepared) => prepared,
            Err(failure) => return Err(not_routable(failure, message)),
        };
        match remote.try_route(far.cast(payload)) {
            Ok(()) => Ok(()),
            Err(RouteError::Full(_)) => Err(SendError::Full(message)),
            Err(RouteError::NoConnection(_)) => Err(SendError::NoConnection(message)),
        }
    }

    /// A cast to a pid, local or remote.
    async fn cast_pid<M, R>(
        &self,
        pid: Pid,
        message: M,
        wire: Wire<M, R>,
    ) -> Result<(), SendError<M>>
    where
        M: Send + 'static,
    {
        if !self.is_local(pid) {
            return self.cast_far(Far::Pid(pid), message, wire).await;
        }
        let mut message: AnyBox = Box::new(message);
        loop {
            let Some(cell) = self.lookup(pid) else {
                return Err(SendError::NoProc(unbox(message)));
            };
            match cell.try_cast_any(message) {
                Err(ErasedPush::Full(back))
                    if cell.mailbox_config().overflow == Overflow::Wait
                        && !current::is_running(cell.control()) =>
                {
                    message = back;
                    poll_fn(|cx| cell.poll_room(cx)).await;
                }
                done => return done.map_err(send_error),
            }
        }
    }

    async fn cast_far<M, R>(
        &self,
        far: Far,
        message: M,
        wire: Wire<M, R>,
    ) -> Result<(), SendError<M>> {
        let (remote, payload) = match self.prepare_remote(far.node(), &message, &wire) {
            Ok(prepared) => prepared,
            Err(failure) => return Err(not_routable(failure, message)),
        };
        let mut outbound = far.cast(payload);
        loop {
            match remote.try_route(outbound) {
                Ok(()) => {
                    // A sender with room never waits. Spending coop budget makes a long loop
                    // of casts yield now and then, so that the transport's writer (woken on
                    // this worker, where it waits behind the sender) and heartbeats run, and
                    // the sender and the writer can go on in parallel on two workers.
                    tokio::task::coop::consume_budget().await;
                    return Ok(());
                }
                Err(RouteError::Full(back)) => {
                    outbound = back;
                    if poll_fn(|cx| remote.poll_ready(&outbound, cx)).await.is_err() {
                        return Err(SendError::NoConnection(message));
                    }
                }
                Err(RouteError::NoConnection(_)) => return Err(SendError::NoConnection(message)),
            }
        }
    }

    fn prepare_remote<Q, R>(
        &self,
        node: NodeId,
        message: &Q,
        wire: &Wire<Q, R>,
    ) -> Result<(Arc<dyn Remote>, Bytes), NotRoutable> {
        if node == self.node() {
            // A pid of a previous run of this node: that process is gone.
            return Err(NotRoutable::NoProc);
        }
        let remote = self.remote().ok_or(NotRoutable::NoConnection)?.clone();
        let payload = wire.encode(message).map_err(NotRoutable::Encode)?;
        Ok((remote, payload))
    }

    /// A call to anything but a pid (see [`Runtime::cast_dest`]).
    async fn call_dest<Q, R>(
        &self,
        dest: Dest,
        request: Q,
        timeout: Duration,
        wire: Wire<Q, R>,
    ) -> Result<R, CallError>
    where
        Q: Send + 'static,
        R: Send + 'static,
    {
        let far = match dest {
            Dest::NameOn { node, name } if node != self.node() => Far::Named { node, name },
            Dest::Via(via) => {
                // Unlike a cast, the request is moved into the first attempt: a process found
                // gone is forgotten, for the next operation to resolve afresh.
                let pid = via.resolve().await.map_err(|error| match error {
                    ResolveError::NoProc(_) => CallError::NoProc,
                    ResolveError::NoConnection(_) => CallError::NoConnection,
                    error => CallError::Unresolved(error),
                })?;
                let outcome = self.call_pid(pid, request, timeout, wire).await;
                if matches!(outcome, Err(CallError::NoProc)) {
                    via.forget(pid);
                }
                return outcome;
            }
            local => match local.resolve_now(self) {
                Some(pid) => return self.call_pid(pid, request, timeout, wire).await,
                None => return Err(CallError::NoProc),
            },
        };
        with_deadline(self.clock(), timeout, self.call_far(far, request, wire)).await
    }

    /// A call to a pid, local or remote.
    async fn call_pid<Q, R>(
        &self,
        pid: Pid,
        request: Q,
        timeout: Duration,
        wire: Wire<Q, R>,
    ) -> Result<R, CallError>
    where
        Q: Send + 'static,
        R: Send + 'static,
    {
        if self.is_local(pid) {
            within(self.clock(), timeout, self.call_local(pid, request), || CallError::Timeout)
                .await
        } else {
            with_deadline(self.clock(), timeout, self.call_far(Far::Pid(pid), request, wire)).await
        }
    }

    async fn call_local<Q, R>(&self, pid: Pid, request: Q) -> Result<R, CallError>
    where
        Q: Send + 'static,
        R: Send + 'static,
    {
        let (cell, reply) = self.queue_local_call(pid, request).await?;
        local_answer(cell, reply).await
    }

    /// Queues the typed call `request` for `pid`, here or on another node, waiting for room as
    /// a call does, and returns its answer to await apart: for the forwarder of a hand-off
    /// ([`Runtime::hand_off`]), which queues letters in their order without waiting for each
    /// reply.
    pub(crate) async fn queue_call<P: Process>(
        &self,
        pid: Pid,
        request: P::Call,
    ) -> Result<Answer<P::Reply>, CallError> {
        if self.is_local(pid) {
            let (cell, reply) = self.queue_local_call(pid, request).await?;
            Ok(Box::pin(local_answer(cell, reply)))
        } else {
            let wire = call_wire::<P>();
            let trace = TraceContext::current().map(|current| current.child(self.fresh_span_id()));
            let answer = self.queue_far_call(Far::Pid(pid), request, wire, trace).await?;
            Ok(Box::pin(far_answer(answer, wire)))
        }
    }

    /// Queues a call for the local process `pid`; the process and where its reply comes.
    async fn queue_local_call<Q: Send + 'static>(
        &self,
        pid: Pid,
        request: Q,
    ) -> Result<(Arc<dyn ProcessCell>, oneshot::Receiver<AnyBox>), CallError> {
        let mut request: AnyBox = Box::new(request);
        loop {
            let cell = self.lookup(pid).ok_or(CallError::NoProc)?;
            if current::is_running(cell.control()) {
                return Err(CallError::CallingSelf);
            }
            let (sender, reply) = oneshot::channel();
            match cell.try_call_any(request, sender) {
                Ok(()) => return Ok((cell, reply)),
                Err(ErasedPush::Full(back)) if cell.mailbox_config().overflow == Overflow::Wait => {
                    request = back;
                    poll_fn(|cx| cell.poll_room(cx)).await;
                }
                Err(ErasedPush::Full(_)) => return Err(CallError::Full),
                Err(ErasedPush::Closed(_)) => return Err(CallError::NoProc),
                Err(ErasedPush::WrongType(_)) => {
                    return Err(CallError::WrongType(std::any::type_name::<Q>()));
                }
            }
        }
    }

    /// A call to another node, inside a `call` span when a subscriber records it: the span's
    /// trace context (see [`TraceContext`]) travels with the call, for the callee's span to
    /// join the trace.
    async fn call_far<Q, R>(&self, far: Far, request: Q, wire: Wire<Q, R>) -> Result<R, CallError> {
        let span = tracing::info_span!("call", to = %far, trace_id = Empty, span_id = Empty);
        if span.is_disabled() {
            let answer = self.queue_far_call(far, request, wire, None).await?;
            return far_answer(answer, wire).await;
        }
        let bridged = self.remote().and_then(|remote| remote.trace_context(&span));
        let trace = bridged.unwrap_or_else(|| TraceContext::for_call(self));
        span.record("trace_id", tracing::field::display(trace.trace_id));
        span.record("span_id", tracing::field::display(trace.span_id));
        let exchange = async move {
            let answer = self.queue_far_call(far, request, wire, Some(trace)).await?;
            far_answer(answer, wire).await
        };
        tracing::Instrument::instrument(exchange, span).await
    }

    /// Hands a call to the transport; where its encoded answer comes.
    async fn queue_far_call<Q, R>(
        &self,
        far: Far,
        request: Q,
        wire: Wire<Q, R>,
        trace: Option<TraceContext>,
    ) -> Result<FarAnswer, CallError> {
        let (remote, payload) =
            self.prepare_remote(far.node(), &request, &wire).map_err(|failure| match failure {
                NotRoutable::NoProc => CallError::NoProc,
                NotRoutable::NoConnection => CallError::NoConnection,
                NotRoutable::Encode(error) => CallError::Encode(error),
            })?;
        let (reply, answer) = RemoteReply::new();
        match route_waiting(remote.as_ref(), far.call(payload, reply, trace)).await {
            Ok(()) => Ok(answer),
            Err(_) => Err(CallError::NoConnection),
        }
    }
}

/// A call's answer, awaited apart from its queueing ([`Runtime::queue_call`]).
pub(crate) type Answer<R> = Pin<Box<dyn Future<Output = Result<R, CallError>> + Send>>;

/// Where the encoded answer to a call on another node comes.
type FarAnswer = oneshot::Receiver<Result<Bytes, RemoteFailure>>;

/// The reply to a call queued in a local process's mailbox.
async fn local_answer<R: 'static>(
    cell: Arc<dyn ProcessCell>,
    reply: oneshot::Receiver<AnyBox>,
) -> Result<R, CallError> {
    match reply.await {
        Ok(reply) => reply
            .downcast::<R>()
            .map(|reply| *reply)
            .map_err(|_| CallError::ReplyType(std::any::type_name::<R>())),
        Err(_) => {
            Err(cell.control().reason_for_callers().map_or(CallError::NoReply, CallError::Exited))
        }
    }
}

/// The reply to a call handed to the transport, decoded.
async fn far_answer<Q, R>(answer: FarAnswer, wire: Wire<Q, R>) -> Result<R, CallError> {
    match answer.await {
        Ok(Ok(bytes)) => (wire.decode)(&bytes).map_err(CallError::Decode),
        Ok(Err(failure)) => Err(match failure {
            RemoteFailure::NoProc => CallError::NoProc,
            RemoteFailure::Exited(reason) => CallError::Exited(reason),
            RemoteFailure::NoReply => CallError::NoReply,
            RemoteFailure::Full => CallError::Full,
            other => CallError::Remote(other),
        }),
        // The transport dropped the call: the connection was lost before an answer.
        Err(_) => Err(CallError::NoConnection),
    }
}

/// Hands `outbound` (a cast or a call) to the transport, waiting while it is full; handed back
/// when its node cannot be reached.
pub(crate) async fn route_waiting(
    remote: &dyn Remote,
    mut outbound: Outbound,
) -> Result<(), Outbound> {
    loop {
        match remote.try_route(outbound) {
            Ok(()) => return Ok(()),
            Err(RouteError::Full(back)) => {
                outbound = back;
                if poll_fn(|cx| remote.poll_ready(&outbound, cx)).await.is_err() {
                    return Err(outbound);
                }
            }
            Err(RouteError::NoConnection(back)) => return Err(back),
        }
    }
}

/// Runs a call to another node for at most `timeout`. Its answer never comes within one round
/// of the scheduler, so the timer is armed at once (unlike a local call's, see `within`).
async fn with_deadline<R>(
    clock: &Clock,
    timeout: Duration,
    exchange: impl Future<Output = Result<R, CallError>>,
) -> Result<R, CallError> {
    match clock.now().checked_add(timeout) {
        Some(deadline) => {
            clock.timeout_at(deadline, exchange).await.unwrap_or(Err(CallError::Timeout))
        }
        // Further away than the clock can count: no deadline at all.
        None => exchange.await,
    }
}

fn unbox<M: 'static>(message: AnyBox) -> M {
    match message.downcast::<M>() {
        Ok(message) => *message,
        Err(_) => unreachable!("only an M boxed by the caller comes back"),
    }
}

fn send_error<M: 'static>(error: ErasedPush<AnyBox>) -> SendError<M> {
    match error {
        ErasedPush::Full(message) => SendError::Full(unbox(message)),
        ErasedPush::Closed(message) => SendError::NoProc(unbox(message)),
        ErasedPush::WrongType(message) => SendError::WrongType(unbox(message)),
    }
}

fn not_routable<M>(failure: NotRoutable, message: M) -> SendError<M> {
    match failure {
        NotRoutable::NoProc => SendError::NoProc(message),
        NotRoutable::NoConnection => SendError::NoConnection(message),
        NotRoutable::Encode(error) => SendError::Encode(message, error),
    }
}

fn unresolved<M>(error: ResolveError, message: M) -> SendError<M> {
    match error {
        ResolveError::NoProc(_) => SendError::NoProc(message),
        ResolveError::NoConnection(_) => SendError::NoConnection(message),
        error => SendError::Unresolved(message, error),
    }
}
