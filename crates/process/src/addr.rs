//! [`Addr`]: a typed handle to a local process, the fast path for messaging.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::cell::{Cell, Envelope};
use crate::current;
use crate::mailbox::{Overflow, PushError};
use crate::timer::TimerRef;
use crate::{CallError, Pid, Process, ReplyTo, Runtime, SendError};

/// How long [`Addr::call`] waits for a reply, as OTP's default.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A typed handle to a local process running behaviour `P`. Messages go straight into its
/// mailbox, moved, with no lookup and no type check at run time. Cheap to clone.
pub struct Addr<P: Process> {
    cell: Arc<Cell<P>>,
    runtime: Runtime,
}

impl<P: Process> Addr<P> {
    pub(crate) fn new(runtime: Runtime, cell: Arc<Cell<P>>) -> Self {
        Self { cell, runtime }
    }

    /// The process's pid.
    pub fn pid(&self) -> Pid {
        self.cell.control.pid
    }

    /// The runtime the process runs on.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Casts `message`, waiting for room if the mailbox is full and its overflow policy is
    /// `Wait`. A process casting to itself never waits (only it could make room): its cast to
    /// its own full mailbox fails with [`SendError::Full`], whatever the policy.
    pub async fn cast(&self, message: P::Message) -> Result<(), SendError<P::Message>> {
        // Whether the sender is the process itself is asked only once the mailbox is full.
        match self.cell.mailbox.try_push(Envelope::Cast(message)) {
            Err(PushError::Full(letter))
                if self.cell.mailbox.config().overflow == Overflow::Wait
                    && !current::is_running(&self.cell.control) =>
            {
                self.cell.mailbox.push_when_room(letter).await.map_err(cast_error)
            }
            done => done.map_err(cast_error),
        }
    }

    /// Casts `message` without waiting: a full mailbox is [`SendError::Full`].
    pub fn try_cast(&self, message: P::Message) -> Result<(), SendError<P::Message>> {
        self.cell.mailbox.try_push(Envelope::Cast(message)).map_err(cast_error)
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
        if current::is_running(&self.cell.control) {
            return Err(CallError::CallingSelf);
        }
        let exchange = async {
            let (sender, reply) = oneshot::channel();
            let call = Envelope::Call(request, ReplyTo::local(sender));
            self.cell.mailbox.push(call).await.map_err(|error| match error {
                PushError::Full(_) => CallError::Full,
                PushError::Closed(_) => CallError::NoProc,
            })?;
            reply.await.map_err(|_| {
                self.cell.control.reason_for_callers().map_or(CallError::NoReply, CallError::Exited)
            })
        };
        within(timeout, exchange).await
    }

    /// Casts `message` after `delay`, unless the timer is cancelled or the process exits
    /// first. A full mailbox makes the delivery wait, whatever its overflow policy: the timer
    /// is a task of its own, so its waiting holds up no one, and its message is never dropped.
    pub fn cast_after(&self, delay: Duration, message: P::Message) -> TimerRef {
        let id = self.runtime.make_ref();
        let cell = self.cell.clone();
        let deliver = async move {
            // Refused only once the process has exited, which cancels its timers anyway.
            let _ = cell.mailbox.push_when_room(Envelope::Cast(message)).await;
        };
        // A process that has already exited gets a timer that never fires.
        TimerRef::start(self.runtime.tokio(), id, delay, self.cell.clone(), deliver)
            .unwrap_or_else(|| TimerRef::settled(id))
    }

    /// Whether the process is still alive.
    pub fn is_alive(&self) -> bool {
        self.cell.control.exit_reason().is_none()
    }

    /// Letters waiting in the mailbox.
    pub fn mailbox_len(&self) -> usize {
        self.cell.mailbox.len() + self.cell.control.batch_len()
    }
}

/// Runs a call's `exchange` (queueing the request, then waiting for the reply) for at most
/// `timeout`.
///
/// A local callee usually answers as soon as it runs, and when it shares this worker thread it
/// runs right after this task yields. Arming a timer (a lock on tokio's timer wheel, an
/// insertion and then a removal) costs about as much as the rest of such a call, so the
/// exchange gets one round of the scheduler before a timer is armed. The deadline is fixed
/// first, so that round does not extend it.
pub(crate) async fn within<T>(
    timeout: Duration,
    exchange: impl Future<Output = Result<T, CallError>>,
) -> Result<T, CallError> {
    let Some(deadline) = tokio::time::Instant::now().checked_add(timeout) else {
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
    tokio::time::timeout_at(deadline, exchange).await.unwrap_or(Err(CallError::Timeout))
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

impl<P: Process> Clone for Addr<P> {
    fn clone(&self) -> Self {
        Self { cell: self.cell.clone(), runtime: self.runtime.clone() }
    }
}

impl<P: Process> fmt::Debug for Addr<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Addr").field(&self.cell.control.pid).finish()
    }
}

impl<P: Process> PartialEq for Addr<P> {
    fn eq(&self, other: &Self) -> bool {
        self.pid() == other.pid()
    }
}

impl<P: Process> Eq for Addr<P> {}
