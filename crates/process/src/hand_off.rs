//! A hand-off: a process ends at a snapshot of its state, taken at its place in the mailbox
//! order, and its pid forwards its mail to a successor for a while — the hub's hot migration of
//! a process to another node.
//!
//! ```text
//!  hand_off(pid, to, work) ── sys letter ──▶ pid's mailbox ──▶ pid runs work(&mut state),
//!    ▲                                                         then exits with `reason`
//!    │ (what work returned, Forwarding)                        (terminate, Down, links, name)
//!    │                                                               │
//!    │                 pid's table entry becomes a Forwarder ◀───────┘
//!    │                 (the same mailbox, still open and bounded: the letters left in it,
//!    │                  and those sent to pid from now on, wait there in order)
//!  caller: gives `to` what work returned (a restore cast, say), then Forwarding::start
//!                                      │
//!                                      ▼
//!  forwarder task: takes the letters one at a time and sends them on to `to`: casts and calls
//!    typed (a call's reply relayed to its caller), letters from other nodes as they came;
//!    signals and sys work were for the process, and are dropped (sys callers are told)
//!  window task: after `retention`, the forwarder leaves the table and the mailbox is sealed
//!    (later sends: no such process); the forwarder sends on what is left, then reports
//! ```
//!
//! What it is not: a migration by itself (the caller starts `to` and hands it the snapshot),
//! nor a redirect kept for good (the window is bounded, as every queue here is).

use std::any::Any;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use crate::cell::{AnyBox, Cell, Envelope, ErasedPush, ProcessCell};
use crate::control::Control;
use crate::mailbox::{Admitted, MailboxConfig};
use crate::remote::{DeliverError, Inbound, Outbound, RemoteReply};
use crate::send::{Answer, route_waiting};
use crate::sys;
use crate::{
    Context, Dest, ExitReason, Pid, Process, RemoteFailure, ReplyTo, Runtime, Signal, SysError,
};

impl Runtime {
    /// Runs `work` inside the local process `pid` (behaviour `P`) at its place in the mailbox
    /// order, as [`Runtime::sys`] does, then ends the process with `reason` before it takes
    /// another letter; from then on, for `retention`, its pid forwards: the letters left in its
    /// mailbox, then every cast or call that arrives for it, go on to `to` in the order they
    /// came, once the returned [`Forwarding`] is started. For moving a process "hot": start
    /// `to`, hand it off, give `to` what `work` returned, start the forwarding.
    ///
    /// The process exits as any process does: `terminate` runs, monitors get `Down` with
    /// `reason`, links their exit signal, its name is freed, [`Runtime::is_alive`] is false and
    /// [`Runtime::watch`] completes. Only its mailbox outlives it, kept in its pid's place in
    /// the table (bounded as it was) until the window is over: casts and calls sent there — by
    /// pid, through an [`crate::Addr`] or a [`crate::Target`], or from another node — wait in
    /// order and go on to `to` (typed, with `P`'s codec if `to` is on another node; letters from
    /// other nodes still encoded, as they came), a call's reply coming back to its caller. The
    /// signals and other sys work queued for the process are dropped, as at any exit. After the
    /// window, the pid is gone as any other ([`crate::SendError::NoProc`]); what was accepted
    /// before is still sent on. What cannot be sent on (`to` is gone, its node unreachable) is
    /// counted ([`ForwardReport::failed`]), and its caller, if any, told rather than left
    /// waiting: a caller on this node gets [`crate::CallError::Exited`] with `reason`, one on
    /// another node no such process (or no reply, if `to` took the call and exited unanswered).
    ///
    /// Refused at once, with nothing done: those of [`Runtime::sys`] ([`SysError::NoProc`],
    /// [`SysError::Remote`], [`SysError::WrongBehaviour`], [`SysError::ToSelf`]), a `to` on
    /// another node for a behaviour without a codec ([`SysError::NoCodec`]), and `to == pid`
    /// ([`SysError::HandOffToItself`]). If the work has not begun within `timeout`, it is
    /// withdrawn ([`SysError::Timeout`]): the process goes on as if nothing had been asked.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use shoal_process::{Context, ExitReason, ForwardReport, Process, ReplyTo, Runtime};
    ///
    /// struct Counter(u64);
    ///
    /// impl Process for Counter {
    ///     type Message = u64;
    ///     type Call = ();
    ///     type Reply = u64;
    ///
    ///     async fn handle_cast(&mut self, n: u64, _: &mut Context<Self>) {
    ///         self.0 += n;
    ///     }
    ///
    ///     async fn handle_call(&mut self, (): (), reply: ReplyTo<u64>, _: &mut Context<Self>) {
    ///         reply.send(self.0);
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let runtime = Runtime::new()?;
    /// let (old, new) = (runtime.spawn(Counter(0)), runtime.spawn(Counter(0)));
    /// old.cast(2).await?;
    /// let retention = Duration::from_millis(100);
    /// let timeout = Duration::from_secs(5);
    /// let (snapshot, forwarding) = runtime
    ///     .hand_off::<Counter, _>(old.pid(), new.pid(), |state, _| state.0, ExitReason::Normal, retention, timeout)
    ///     .await?;
    /// assert_eq!(snapshot, 2, "the snapshot saw the cast before it");
    /// // The new process gets the snapshot first, ahead of the forwarded mail.
    /// new.cast(snapshot).await?;
    /// forwarding.start();
    /// // The old pid forwards, in order, and the new process answers.
    /// old.cast(40).await?;
    /// assert_eq!(old.call(()).await?, 42);
    /// assert!(!runtime.is_alive(old.pid()));
    /// assert_eq!(forwarding.finished().await, ForwardReport { forwarded: 2, failed: 0 });
    /// assert!(old.cast(1).await.is_err(), "the window is over: no such process");
    /// # Ok(()) }
    /// ```
    pub async fn hand_off<P: Process, R: Send + 'static>(
        &self,
        pid: Pid,
        to: Pid,
        work: impl FnOnce(&mut P, &mut Context<P>) -> R + Send + 'static,
        reason: ExitReason,
        retention: Duration,
        timeout: Duration,
    ) -> Result<(R, Forwarding), SysError> {
        if pid.node() != self.node() {
            return Err(SysError::Remote(pid));
        }
        let cell = self.lookup_process(pid).ok_or(SysError::NoProc(pid))?;
        let cell =
            cell.into_any().downcast::<Cell<P>>().map_err(|_| SysError::WrongBehaviour(pid))?;
        if to == pid {
            return Err(SysError::HandOffToItself(pid));
        }
        if to.node() != self.node() && P::remote_messages().is_none() {
            return Err(SysError::NoCodec { pid, to });
        }
        let (start, started) = watch::channel(false);
        let (progress, watched) = watch::channel(Progress::default());
        let plan = HandOff { to, retention, started, progress };
        let forwarding = Forwarding { pid, to, start, progress: watched };
        let snapshot = move |process: &mut P, ctx: &mut Context<P>| {
            let result = work(process, ctx);
            // Only once the work has returned: a panic in it ends the process as an ordinary
            // exit (its mail dropped), as in `sys`.
            ctx.cell.control.set_successor(Box::new(plan));
            ctx.stop(reason);
            (result, forwarding)
        };
        sys::run_in(&cell, self.clock(), snapshot, timeout).await
    }
}

/// The forwarding of a handed-off process's mail to its successor ([`Runtime::hand_off`]).
///
/// The letters wait, queued, until [`Forwarding::start`], so that the caller can first hand the
/// snapshot to the successor, ahead of them. Dropping a `Forwarding` that was not started
/// starts it.
#[derive(Debug)]
pub struct Forwarding {
    pid: Pid,
    to: Pid,
    start: watch::Sender<bool>,
    progress: watch::Receiver<Progress>,
}

/// What a forwarder did in its window: see [`Forwarding::finished`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForwardReport {
    /// Casts and calls sent on to the successor: queued in its mailbox, or handed to the
    /// transport for its node (a call's reply then goes back to its caller).
    pub forwarded: u64,
    /// Casts and calls that could not be sent on: the successor was gone or refused them (a full
    /// `Reject` mailbox, a message of a type it does not take), or its node could not be
    /// reached. The callers among them were told (an error, not a reply).
    pub failed: u64,
}

impl Forwarding {
    /// The process that was handed off, whose pid forwards.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The successor the letters go to.
    pub fn to(&self) -> Pid {
        self.to
    }

    /// Starts sending the letters on to the successor. Starting twice does nothing more.
    pub fn start(&self) {
        self.start.send_replace(true);
    }

    /// Completes once every letter that was queued when the process ended has been sent on (or
    /// counted as failed); waits for the start. Letters that arrive later may still be on their
    /// way.
    pub async fn drained(&self) {
        let mut progress = self.progress.clone();
        // An error means the forwarder is gone (its tokio runtime shut down): nothing to wait for.
        let _ = progress.wait_for(|progress| progress.drained).await;
    }

    /// Starts the forwarding if it was not, and completes when the retention window is over and
    /// the forwarder is gone, having sent on (or failed) every letter it accepted; sends to the
    /// old pid are then refused as to any process that is gone. What it did.
    ///
    /// A successor on this node that stays alive and never makes room in its full mailbox
    /// holds the forwarder, and this, as it holds any sender.
    pub async fn finished(self) -> ForwardReport {
        self.start();
        let mut progress = self.progress.clone();
        let _ = progress.wait_for(|progress| progress.finished).await;
        progress.borrow().report
    }
}

/// What the forwarder tells its [`Forwarding`].
#[derive(Clone, Copy, Debug, Default)]
struct Progress {
    report: ForwardReport,
    /// The letters queued when the process ended have all been sent on.
    drained: bool,
    /// The window is over and every letter accepted has been sent on.
    finished: bool,
}

/// The plan a hand-off leaves with the process ([`Control::set_successor`]), carried out by its
/// task as it exits ([`take_over`]).
struct HandOff {
    to: Pid,
    retention: Duration,
    started: watch::Receiver<bool>,
    progress: watch::Sender<Progress>,
}

/// Carries out a hand-off as the process of `cell` exits with `reason`: a forwarder takes its
/// place in the table, and the tasks that send its mail on and close the window begin.
pub(crate) fn take_over<P: Process>(
    runtime: &Runtime,
    cell: Arc<Cell<P>>,
    reason: ExitReason,
    plan: Box<dyn Any + Send>,
) {
    let Ok(plan) = plan.downcast::<HandOff>() else {
        // Only this module leaves a plan; were it another, the process exits as any does.
        runtime.finish(cell, reason);
        return;
    };
    let HandOff { to, retention, started, progress } = *plan;
    let forwarder: Arc<dyn ProcessCell> = Arc::new(Forwarder { cell: cell.clone() });
    runtime.finish_handed_off(cell.clone(), reason, forwarder.clone());
    runtime.tokio().spawn(close_window(runtime.clone(), cell.clone(), forwarder, retention));
    runtime.tokio().spawn(forward(runtime.clone(), cell, to, started, progress));
}

/// After `retention`, the forwarder leaves the table and its mailbox is sealed.
async fn close_window<P: Process>(
    runtime: Runtime,
    cell: Arc<Cell<P>>,
    forwarder: Arc<dyn ProcessCell>,
    retention: Duration,
) {
    runtime.clock().sleep(retention).await;
    // Out of the table first: a sender that looks the pid up from now on finds nothing, and one
    // that found the forwarder just before is refused by the sealed mailbox, as by any process
    // that is gone (or got in just before the seal, and its letter is sent on).
    runtime.end_forwarding(&forwarder);
    cell.mailbox.seal();
}

/// The forwarder: once started, sends the mailbox's letters on to `to`, one at a time and in
/// order, until the window is over and nothing is left.
async fn forward<P: Process>(
    runtime: Runtime,
    cell: Arc<Cell<P>>,
    to: Pid,
    mut started: watch::Receiver<bool>,
    progress: watch::Sender<Progress>,
) {
    // An error means the `Forwarding` was dropped, which starts it.
    let _ = started.wait_for(|started| *started).await;
    // The letters queued when the process ended (and any that came before the start).
    let mut before_drained = cell.mailbox.len();
    loop {
        if before_drained == 0 {
            progress.send_if_modified(|progress| !std::mem::replace(&mut progress.drained, true));
        }
        let Some(letter) = poll_fn(|cx| cell.mailbox.poll_take_one(cx)).await else { break };
        before_drained = before_drained.saturating_sub(1);
        let sent = send_on(&runtime, to, letter).await;
        // Counted without waking the waiters: they wait for `drained` or `finished`.
        progress.send_if_modified(|progress| {
            match sent {
                Sent::Forwarded => progress.report.forwarded += 1,
                Sent::Failed => progress.report.failed += 1,
                Sent::Dropped => {}
            }
            false
        });
    }
    progress.send_modify(|progress| {
        progress.drained = true;
        progress.finished = true;
    });
}

/// What became of one letter.
#[derive(Clone, Copy)]
enum Sent {
    Forwarded,
    Failed,
    /// A signal or sys work: for the process that ended, not for its successor.
    Dropped,
}

/// Sends one letter of the old process's mailbox on to `to`.
async fn send_on<P: Process>(runtime: &Runtime, to: Pid, letter: Envelope<P>) -> Sent {
    match letter {
        Envelope::Cast(message) => match runtime.cast_typed::<P>(&Dest::Pid(to), message).await {
            Ok(()) => Sent::Forwarded,
            Err(error) => {
                tracing::debug!(%to, %error, "a forwarded cast was not sent on");
                Sent::Failed
            }
        },
        Envelope::Call(request, reply) => match runtime.queue_call::<P>(to, request).await {
            Ok(answer) => {
                runtime.tokio().spawn(relay(answer, reply));
                Sent::Forwarded
            }
            Err(error) => {
                // Dropping the reply handle tells the caller.
                tracing::debug!(%to, %error, "a forwarded call was not sent on");
                Sent::Failed
            }
        },
        Envelope::Remote(inbound) => send_inbound_on(runtime, to, *inbound).await,
        // Dropped as at any exit: a sys caller learns the exit reason from its dropped letter.
        Envelope::Signal(_) | Envelope::DirectExit(_) | Envelope::Sys(_) => Sent::Dropped,
    }
}

/// Hands the successor's answer to a forwarded call to its caller; one that does not come
/// drops the reply handle, which tells the caller.
async fn relay<R: Send + 'static>(answer: Answer<R>, reply: ReplyTo<R>) {
    match answer.await {
        Ok(value) => {
            reply.send(value);
        }
        Err(error) => tracing::debug!(%error, "a forwarded call got no reply from the successor"),
    }
}

/// Sends a letter from another node on to `to` as it came, still encoded: delivered here, or
/// handed to the transport as a cast or call of this node (a call's answer relayed back).
async fn send_inbound_on(runtime: &Runtime, to: Pid, mut inbound: Inbound) -> Sent {
    if to.node() == runtime.node() {
        return match runtime.deliver(to, inbound).await {
            Ok(()) => Sent::Forwarded,
            Err(DeliverError::NoProc(inbound)) => {
                inbound.refuse(RemoteFailure::NoProc);
                Sent::Failed
            }
            Err(DeliverError::Full(inbound)) => {
                inbound.refuse(RemoteFailure::Full);
                Sent::Failed
            }
        };
    }
    let Some(remote) = runtime.remote().cloned() else {
        inbound.refuse(RemoteFailure::NoProc);
        return Sent::Failed;
    };
    let payload = inbound.payload.clone();
    let trace = inbound.trace_context();
    let (outbound, caller) = match inbound.reply.take() {
        None => (Outbound::Cast { to, payload }, None),
        Some(sink) => {
            let (reply, answer) = RemoteReply::new();
            (Outbound::Call { to, payload, reply, trace }, Some((sink, answer)))
        }
    };
    if route_waiting(remote.as_ref(), outbound).await.is_err() {
        if let Some((sink, _)) = caller {
            sink.reply(Err(RemoteFailure::NoProc));
        }
        return Sent::Failed;
    }
    if let Some((sink, answer)) = caller {
        runtime.tokio().spawn(async move {
            // The transport dropped the call (its connection was lost): no reply came.
            sink.reply(answer.await.unwrap_or(Err(RemoteFailure::NoReply)));
        });
    }
    Sent::Forwarded
}

/// The table entry of a process that was handed off, for its retention window: casts, calls
/// and letters from other nodes sent to its pid reach its mailbox (still open, and bounded as
/// it was), which the forwarder drains; for everything else the process is gone (monitors and
/// links are refused, signals dropped).
struct Forwarder<P: Process> {
    cell: Arc<Cell<P>>,
}

impl<P: Process> ProcessCell for Forwarder<P> {
    fn pid(&self) -> Pid {
        self.cell.control.pid
    }

    fn control(&self) -> &Control {
        // Exited: what reads it finds the process gone.
        &self.cell.control
    }

    fn mailbox_config(&self) -> MailboxConfig {
        self.cell.mailbox.config()
    }

    fn mailbox_len(&self) -> usize {
        self.cell.mailbox.len()
    }

    fn try_cast_any(&self, message: AnyBox) -> Result<(), ErasedPush<AnyBox>> {
        self.cell.try_cast_any(message)
    }

    fn try_call_any(
        &self,
        request: AnyBox,
        reply: oneshot::Sender<AnyBox>,
    ) -> Result<(), ErasedPush<AnyBox>> {
        self.cell.try_call_any(request, reply)
    }

    fn try_push_inbound(
        &self,
        inbound: Inbound,
        overdraft: usize,
    ) -> Result<Admitted, ErasedPush<Inbound>> {
        self.cell.try_push_inbound(inbound, overdraft)
    }

    fn poll_room(&self, cx: &mut TaskContext<'_>) -> Poll<bool> {
        self.cell.poll_room(cx)
    }

    fn push_signal(&self, _: Signal) -> bool {
        false
    }

    fn push_direct_exit(&self, _: Pid, _: ExitReason) -> Result<(), ExitReason> {
        // As to a process that is gone: ignored.
        Ok(())
    }

    fn wake(&self) {}

    fn close(&self, _: &ExitReason) {
        self.cell.mailbox.seal();
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }

    fn is_forwarder(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hub holds a `Forwarding` across awaits and hands it between tasks.
    #[test]
    fn a_forwarding_and_its_report_go_between_threads() {
        fn send_and_sync<T: Send + Sync>() {}
        send_and_sync::<Forwarding>();
        send_and_sync::<ForwardReport>();
    }
}
