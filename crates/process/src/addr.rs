//! [`Addr`]: a typed handle to a process, local or on another node.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::cell::{Cell, Envelope};
use crate::clock::Clock;
use crate::current;
use crate::dest::Dest;
use crate::mailbox::{Overflow, PushError};
use crate::sys;
use crate::timer::TimerRef;
use crate::{CallError, Context, Pid, Process, ReplyTo, Runtime, SendError, SysError};

/// How long [`Addr::call`] waits for a reply, as OTP's default.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A typed handle to a process running behaviour `P`, on this node or another: its casts and
/// calls take `P`'s message and request types, checked at compile time wherever it runs.
///
/// A local process gets messages straight into its mailbox, moved, with no lookup and no type
/// check at run time. A process on another node gets them encoded with `P`'s codec
/// ([`Process::remote_messages`]), through the transport; a handle to it is made with
/// [`Runtime::addr`] from its pid, for a behaviour that takes messages from other nodes. Cheap
/// to clone.
///
/// ```
/// use shoal_process::{Addr, Codec, Context, Pid, Process, ReplyTo, Runtime};
///
/// struct Echo;
///
/// impl Process for Echo {
///     type Message = ();
///     type Call = String;
///     type Reply = String;
///
///     async fn handle_cast(&mut self, (): (), _: &mut Context<Self>) {}
///
///     async fn handle_call(&mut self, text: String, reply: ReplyTo<String>, _: &mut Context<Self>) {
///         reply.send(text);
///     }
///
///     fn remote_messages() -> Option<Codec<Self>> {
///         Some(Codec::msgpack())
///     }
/// }
///
/// async fn ask(runtime: &Runtime, echo_anywhere: Pid) -> Option<String> {
///     let echo: Addr<Echo> = runtime.addr(echo_anywhere)?;
///     echo.call("hello".to_owned()).await.ok()
/// }
/// ```
///
/// The request's type is the behaviour's, checked at compile time for a process on another
/// node too: `Echo` takes `String`s, so this does not compile.
///
/// ```compile_fail,E0308
/// # use shoal_process::{Addr, Codec, Context, Pid, Process, ReplyTo, Runtime};
/// # struct Echo;
/// # impl Process for Echo {
/// #     type Message = ();
/// #     type Call = String;
/// #     type Reply = String;
/// #     async fn handle_cast(&mut self, (): (), _: &mut Context<Self>) {}
/// #     async fn handle_call(&mut self, t: String, r: ReplyTo<String>, _: &mut Context<Self>) {
/// #         r.send(t);
/// #     }
/// #     fn remote_messages() -> Option<Codec<Self>> {
/// #         Some(Codec::msgpack())
/// #     }
/// # }
/// async fn ask(runtime: &Runtime, echo_on_another_node: Pid) {
///     let echo: Addr<Echo> = runtime.addr(echo_on_another_node).unwrap();
///     let _ = echo.call(42u32).await;
/// }
/// ```
pub struct Addr<P: Process> {
    at: At<P>,
    runtime: Runtime,
}

/// Where the process runs.
enum At<P: Process> {
    Local(Arc<Cell<P>>),
    Remote(Pid),
}

impl<P: Process> Addr<P> {
    pub(crate) fn new(runtime: Runtime, cell: Arc<Cell<P>>) -> Self {
        Self { at: At::Local(cell), runtime }
    }

    /// A handle to `pid` on another node (the caller vouches for its behaviour).
    pub(crate) fn remote(runtime: Runtime, pid: Pid) -> Self {
        Self { at: At::Remote(pid), runtime }
    }

    /// The process's pid.
    pub fn pid(&self) -> Pid {
        match &self.at {
            At::Local(cell) => cell.control.pid,
            At::Remote(pid) => *pid,
        }
    }

    /// Whether the process runs on this node.
    pub fn is_local(&self) -> bool {
        matches!(self.at, At::Local(_))
    }

    /// The runtime the handle sends from (the process's own, when it is local).
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Casts `message`, waiting for room if the mailbox is full and its overflow policy is
    /// `Wait` (or, on another node, while the link to it is full). A process casting to itself
    /// never waits (only it could make room): its cast to its own full mailbox fails with
    /// [`SendError::Full`], whatever the policy.
    pub async fn cast(&self, message: P::Message) -> Result<(), SendError<P::Message>> {
        let cell = match &self.at {
            At::Local(cell) => cell,
            At::Remote(pid) => {
                return self.runtime.cast_typed::<P>(&Dest::Pid(*pid), message).await;
            }
        };
        // Whether the sender is the process itself is asked only once the mailbox is full.
        match cell.mailbox.try_push(Envelope::Cast(message)) {
            Err(PushError::Full(letter))
                if cell.mailbox.config().overflow == Overflow::Wait
                    && !current::is_running(&cell.control) =>
            {
                cell.mailbox.push_when_room(letter).await.map_err(cast_error)
            }
            done => done.map_err(cast_error),
        }
    }

    /// Casts `message` without waiting: a full mailbox (or link to the process's node) is
    /// [`SendError::Full`].
    pub fn try_cast(&self, message: P::Message) -> Result<(), SendError<P::Message>> {
        match &self.at {
            At::Local(cell) => cell.mailbox.try_push(Envelope::Cast(message)).map_err(cast_error),
            At::Remote(pid) => self.runtime.try_cast_typed::<P>(*pid, message),
        }
    }

    /// Calls with `request` and waits up to [`DEFAULT_CALL_TIMEOUT`] for the reply.
    pub async fn call(&self, request: P::Call) -> Result<P::Reply, CallError> {
        self.call_timeout(request, DEFAULT_CALL_TIMEOUT).await
    }

    /// Calls with `request` and waits up to `timeout` (for room in the mailbox, then for the
    /// reply). A reply that comes later is discarded. A process calling itself is refused at
    /// once with [`CallError::CallingSelf`].
    pub async fn call_timeout(
        &self,
        request: P::Call,
        timeout: Duration,
    ) -> Result<P::Reply, CallError> {
        let cell = match &self.at {
            At::Local(cell) => cell,
            At::Remote(pid) => {
                return self.runtime.call_typed::<P>(&Dest::Pid(*pid), request, timeout).await;
            }
        };
        if current::is_running(&cell.control) {
            return Err(CallError::CallingSelf);
        }
        let exchange = async {
            let (sender, reply) = oneshot::channel();
            let call = Envelope::Call(request, ReplyTo::local(sender));
            cell.mailbox.push(call).await.map_err(|error| match error {
                PushError::Full(_) => CallError::Full,
                PushError::Closed(_) => CallError::NoProc,
            })?;
            reply.await.map_err(|_| {
                cell.control.reason_for_callers().map_or(CallError::NoReply, CallError::Exited)
            })
        };
        within(self.runtime.clock(), timeout, exchange, || CallError::Timeout).await
    }

    /// Runs `work` on the process's state inside the process, after every letter queued before
    /// it; see [`Runtime::sys`]. A handle to a process of another node is refused
    /// ([`SysError::Remote`]).
    pub async fn sys<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut P, &mut Context<P>) -> R + Send + 'static,
        timeout: Duration,
    ) -> Result<R, SysError> {
        match &self.at {
            At::Local(cell) => sys::run_in(cell, self.runtime.clock(), work, timeout).await,
            At::Remote(pid) => Err(SysError::Remote(*pid)),
        }
    }

    /// Casts `message` after `delay`, unless the timer is cancelled first (or, for a local
    /// process, the process exits first). A full mailbox makes the delivery wait, whatever its
    /// overflow policy: the timer is a task of its own, so its waiting holds up no one, and its
    /// message is never dropped.
    pub fn cast_after(&self, delay: Duration, message: P::Message) -> TimerRef {
        let id = self.runtime.make_ref();
        let cell = match &self.at {
            At::Local(cell) => cell.clone(),
            At::Remote(_) => {
                let addr = self.clone();
                let deliver = async move {
                    let _ = addr.cast(message).await;
                };
                let timer = self.runtime.clock().sleep(delay);
                return TimerRef::detached(self.runtime.tokio(), id, timer, deliver);
            }
        };
        let target = cell.clone();
        let deliver = async move {
            // Refused only once the process has exited, which cancels its timers anyway.
            let _ = cell.mailbox.push_when_room(Envelope::Cast(message)).await;
        };
        // A process that has already exited gets a timer that never fires.
        let timer = self.runtime.clock().sleep(delay);
        TimerRef::start(self.runtime.tokio(), id, timer, target, deliver)
            .unwrap_or_else(|| TimerRef::settled(id))
    }

    /// Whether the process is alive, as far as this node knows without asking: a local process
    /// exactly; one on another node, while its node is connected (a monitor tells when it
    /// exits).
    pub fn is_alive(&self) -> bool {
        match &self.at {
            At::Local(cell) => cell.control.exit_reason().is_none(),
            At::Remote(pid) => self.runtime.is_connected(pid.node()),
        }
    }

    /// Letters waiting in the mailbox of a local process; `None` for one on another node.
    pub fn mailbox_len(&self) -> Option<usize> {
        match &self.at {
            At::Local(cell) => Some(cell.mailbox.len() + cell.control.batch_len()),
            At::Remote(_) => None,
        }
    }
}

impl<P: Process> Clone for Addr<P> {
    fn clone(&self) -> Self {
        let at = match &self.at {
            At::Local(cell) => At::Local(cell.clone()),
            At::Remote(pid) => At::Remote(*pid),
        };
        Self { at, runtime: self.runtime.clone() }
    }
}

/// Runs a call's `exchange` (queueing the request, then waiting for the reply) for at most
/// `timeout`; past it, the error `timed_out` makes.
///
/// A local callee usually answers as soon as it runs, and when it shares this worker thread it
/// runs right after this task yields. Arming a timer (a lock on tokio's timer wheel, an
/// insertion and then a removal) costs about as much as the rest of such a call, so the
/// exchange gets one round of the scheduler before a timer is armed. The deadline is fixed
/// first, so that round does not extend it.
pub(crate) async fn within<T, E>(
    clock: &Clock,
    timeout: Duration,
    exchange: impl Future<Output = Result<T, E>>,
    timed_out: impl FnOnce() -> E,
) -> Result<T, E> {
    let Some(deadline) = clock.now().checked_add(timeout) else {
        // Further away than the clock can count: no deadline at all.
        return exchange.await;
    };
    let mut exchange = pin!(exchange);
    if let Poll::Ready(result) = poll_once(exchange.as_mut()).await {
        return result;
    }
    tokio::task::yield_now().await;
    if let Poll::Ready(result) = poll_once(exchange.as_mut()).await {
        return result;
    }
    clock.timeout_at(deadline, exchange).await.unwrap_or_else(|_| Err(timed_out()))
}

/// Polls `future` once, without waiting for it.
fn poll_once<F: Future>(mut future: Pin<&mut F>) -> impl Future<Output = Poll<F::Output>> {
    poll_fn(move |cx| Poll::Ready(future.as_mut().poll(cx)))
}

fn cast_error<P: Process>(error: PushError<Envelope<P>>) -> SendError<P::Message> {
    match error {
        PushError::Full(Envelope::Cast(message)) => SendError::Full(message),
        PushError::Closed(Envelope::Cast(message)) => SendError::NoProc(message),
        _ => unreachable!("the mailbox hands back the cast it was given"),
    }
}

impl<P: Process> fmt::Debug for Addr<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Addr").field(&self.pid()).finish()
    }
}

impl<P: Process> PartialEq for Addr<P> {
    fn eq(&self, other: &Self) -> bool {
        self.pid() == other.pid()
    }
}

impl<P: Process> Eq for Addr<P> {}
