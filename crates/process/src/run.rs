//! The life of one process, as the tokio task that runs it.
//!
//! ```text
//! spawn ─▶ init ─ok─▶ loop { take a batch from the mailbox; hand each letter to its handler }
//!            │                 │ ctx.stop / exit signal / panic / kill
//!            │ error           ▼
//!            │           terminate(reason)   (skipped when killed)
//!            ▼                 ▼
//!        drop state ─▶ Runtime::finish: leave the table, free the name, cancel timers,
//!                      send Down to monitors and exit signals to links
//! ```

use std::collections::VecDeque;
use std::future::poll_fn;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::task::Poll;

use tokio::sync::oneshot;

use crate::cell::{Cell, Envelope};
use crate::control::Interruptible;
use crate::guard::{Outcome, guarded, panic_message};
use crate::{Context, ExitReason, Process, RemoteFailure, ReplyTo, Runtime, Signal};

/// Tells `start` how `init` went.
pub(crate) type InitAck = oneshot::Sender<Result<(), ExitReason>>;

/// The process task.
pub(crate) async fn run<P: Process>(process: P, ctx: Context<P>, ack: Option<InitAck>) {
    let mut exit = ExitGuard { runtime: ctx.runtime.clone(), cell: Some(ctx.cell.clone()) };
    let reason = live(process, ctx, ack).await;
    exit.finish(reason);
}

/// Makes sure the runtime hears of the exit even if the task is dropped mid-flight (when the
/// tokio runtime shuts down): monitors and links still fire, with `Killed`.
struct ExitGuard<P: Process> {
    runtime: Runtime,
    cell: Option<Arc<Cell<P>>>,
}

impl<P: Process> ExitGuard<P> {
    fn finish(&mut self, reason: ExitReason) {
        if let Some(cell) = self.cell.take() {
            self.runtime.finish(cell, reason);
        }
    }
}

impl<P: Process> Drop for ExitGuard<P> {
    fn drop(&mut self) {
        self.finish(ExitReason::Killed);
    }
}

async fn live<P: Process>(mut process: P, mut ctx: Context<P>, ack: Option<InitAck>) -> ExitReason {
    let cell = ctx.cell.clone();
    let control = &cell.control;
    let init = guarded(control, Interruptible::ByAnyExit, process.init(&mut ctx)).await;
    let started = match init {
        Outcome::Done(Ok(())) => Ok(()),
        Outcome::Done(Err(reason)) => Err(reason),
        Outcome::Panicked(message) => Err(ExitReason::Panic(message)),
        Outcome::Interrupted => Err(control.pending_reason()),
    };
    if let Some(ack) = ack {
        ack.send(started.clone()).ok();
    }
    let mut reason = match started {
        Ok(()) => serve(&mut process, &mut ctx, &cell).await,
        Err(reason) => {
            control.begin_exit(&reason);
            drop_state(process);
            return reason;
        }
    };
    // Before `terminate` and the state may drop reply handles they hold.
    control.begin_exit(&reason);
    if reason != ExitReason::Killed {
        match guarded(control, Interruptible::ByKill, process.terminate(&reason, &mut ctx)).await {
            Outcome::Done(()) => {}
            Outcome::Interrupted => reason = ExitReason::Killed,
            Outcome::Panicked(message) => {
                tracing::warn!(pid = %cell.pid, %message, "terminate panicked");
            }
        }
    }
    drop_state(process);
    reason
}

/// Drops the behaviour's state before monitors hear of the exit, so resources it holds are
/// released first; a panicking `Drop` is logged, not propagated.
fn drop_state<P>(process: P) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| drop(process))) {
        tracing::warn!(message = %panic_message(payload.as_ref()), "dropping a process panicked");
    }
}

/// Handles letters until the process stops; returns why.
async fn serve<P: Process>(process: &mut P, ctx: &mut Context<P>, cell: &Cell<P>) -> ExitReason {
    let control = &cell.control;
    let mut batch = VecDeque::new();
    let reason = loop {
        if let Some(reason) = ctx.stop.take() {
            break reason;
        }
        if control.is_interrupted(Interruptible::ByAnyExit) {
            break control.pending_reason();
        }
        let Some(envelope) = batch.pop_front() else {
            control.set_batch_len(0);
            if !next_batch(cell, &mut batch).await {
                break control.pending_reason();
            }
            continue;
        };
        control.set_batch_len(batch.len());
        match dispatch(process, ctx, cell, envelope).await {
            Outcome::Done(()) => {}
            Outcome::Panicked(message) => break ExitReason::Panic(message),
            Outcome::Interrupted => break control.pending_reason(),
        }
    };
    // Letters taken but not handled go back to the mailbox, to be dropped with it once the exit
    // is complete: their callers learn the exit reason, as those of letters still queued do.
    cell.mailbox.put_back(batch);
    control.set_batch_len(0);
    reason
}

/// Waits for letters; `false` when an exit arrived instead.
async fn next_batch<P: Process>(cell: &Cell<P>, batch: &mut VecDeque<Envelope<P>>) -> bool {
    poll_fn(|cx| {
        if cell.control.is_interrupted(Interruptible::ByAnyExit) {
            return Poll::Ready(false);
        }
        match cell.mailbox.poll_take(batch, cx) {
            Poll::Ready(()) => Poll::Ready(true),
            // The waker is registered; an exit requested meanwhile wakes it, or is seen here.
            Poll::Pending if cell.control.is_interrupted(Interruptible::ByAnyExit) => {
                Poll::Ready(false)
            }
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Hands one letter to its handler.
async fn dispatch<P: Process>(
    process: &mut P,
    ctx: &mut Context<P>,
    cell: &Cell<P>,
    envelope: Envelope<P>,
) -> Outcome<()> {
    let control = &cell.control;
    let scope = Interruptible::ByAnyExit;
    match envelope {
        Envelope::Cast(message) => guarded(control, scope, process.handle_cast(message, ctx)).await,
        Envelope::Call(request, reply) => {
            guarded(control, scope, process.handle_call(request, reply, ctx)).await
        }
        Envelope::Signal(signal) => {
            match &signal {
                Signal::Down { monitor, .. } if ctx.monitors.remove(monitor).is_none() => {
                    // Demonitored while the Down was on its way.
                    return Outcome::Done(());
                }
                Signal::Exit { from, reason } if Some(*from) == ctx.parent() => {
                    // As OTP's gen_server: a process that traps exits still ends when its
                    // parent (its supervisor, say) exits or orders it to; `terminate` runs.
                    ctx.stop(reason.clone());
                    return Outcome::Done(());
                }
                _ => {}
            }
            guarded(control, scope, process.handle_signal(signal, ctx)).await
        }
        Envelope::Remote(mut inbound) => {
            let Some(codec) = P::codec() else {
                tracing::warn!(pid = %cell.pid, "refused a message from another node: no codec");
                inbound.refuse(RemoteFailure::NotRemote);
                return Outcome::Done(());
            };
            match inbound.reply.take() {
                None => match (codec.decode_cast)(&inbound.payload) {
                    Ok(message) => guarded(control, scope, process.handle_cast(message, ctx)).await,
                    Err(error) => {
                        tracing::warn!(pid = %cell.pid, %error, "dropped a remote message that did not decode");
                        Outcome::Done(())
                    }
                },
                Some(sink) => match (codec.decode_call)(&inbound.payload) {
                    Ok(request) => {
                        let reply = ReplyTo::remote(sink, codec.encode_reply);
                        guarded(control, scope, process.handle_call(request, reply, ctx)).await
                    }
                    Err(error) => {
                        tracing::warn!(pid = %cell.pid, %error, "refused a remote call that did not decode");
                        sink.reply(Err(RemoteFailure::BadRequest(error.0)));
                        Outcome::Done(())
                    }
                },
            }
        }
    }
}
