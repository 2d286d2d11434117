//! The life of one process, as the tokio task that runs it.
//!
//! ```text
//! spawn ─▶ init ─ok─▶ loop { take a batch from the mailbox; hand each letter to its handler }
//!            │                 │ ctx.stop / exit signal / panic / kill
//!            │ error           ▼
//!            │           terminate(reason)   (skipped when killed)
//!            ▼                 ▼
//!        drop state ─▶ Runtime::finish: leave the table, free the name, cancel timers,
//!                      send Down to monitors and exit signals to links (a process that was
//!                      handed off leaves a forwarder in its place: see `hand_off`)
//! ```

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::task::Poll;

use tokio::sync::oneshot;

use crate::cell::{Cell, Envelope};
use crate::control::{Control, Interruptible};
use crate::current::Running;
use crate::guard::{Outcome, guarded, guarded_now, panic_message};
use crate::hand_off;
use crate::remote::Inbound;
use crate::trace::{Traced, handle_call_span};
use crate::{Context, ExitReason, Pid, Process, RemoteFailure, ReplyTo, Signal};

/// Tells `start` how `init` went.
pub(crate) type InitAck = oneshot::Sender<Result<(), ExitReason>>;

/// The process task.
///
/// Everything a process owns lives in the one future built here, and that future is most of
/// an idle process's memory, so this module keeps it small and flat: `run` returns an
/// `async move` block rather than being an `async fn` (which would hold a second copy of its
/// arguments: the state, the context), the phases it awaits in turn borrow instead of taking
/// ownership, no letter is held across an await, and handler futures are pinned where they are
/// created (see [`guarded`]).
///
/// Each phase (`init`, serving, `terminate`) is polled inside [`Running`], which marks the
/// thread as running this process for the length of each poll: the mark is what refuses a call
/// to itself and keeps a cast to itself from waiting.
pub(crate) fn run<P: Process>(
    process: P,
    ctx: Context<P>,
    ack: Option<InitAck>,
) -> impl Future<Output = ()> + Send {
    // Built out here so that the block below holds the one copy of the state and context.
    let mut owner = Owner { process: Some(process), ctx };
    async move {
        let cell = owner.ctx.cell.clone();
        let init = {
            let (process, ctx) = owner.parts();
            let init = pin!(process.init(ctx));
            let init = pin!(guarded(&cell.control, Interruptible::ByAnyExit, init));
            Running::new(&cell.control, init).await
        };
        // Not a `match` on the result around the awaits below: its scrutinee would stay in the
        // task for the whole life of the process.
        if let Err(reason) = started(&cell.control, init, ack) {
            cell.control.begin_exit(&reason);
            owner.finish(reason);
            return;
        }
        let (process, ctx) = owner.parts();
        let reason = Running::new(&cell.control, pin!(serve(process, ctx, &cell))).await;
        // Before `terminate` and the state may drop reply handles they hold.
        cell.control.begin_exit(&reason);
        let (process, ctx) = owner.parts();
        let reason =
            Running::new(&cell.control, pin!(terminate(process, ctx, &cell, reason))).await;
        owner.finish(reason);
    }
}

/// Owns the process's state and context, and makes sure that the state is dropped and then the
/// runtime hears of the exit even if the task is dropped mid-flight (when the tokio runtime
/// shuts down): monitors and links still fire, with `Killed`.
struct Owner<P: Process> {
    /// `None` once the process has finished.
    process: Option<P>,
    ctx: Context<P>,
}

impl<P: Process> Owner<P> {
    fn parts(&mut self) -> (&mut P, &mut Context<P>) {
        match &mut self.process {
            Some(process) => (process, &mut self.ctx),
            None => unreachable!("the state is dropped only once the process has finished"),
        }
    }

    /// Drops the state (so resources it holds are released before monitors hear of the exit),
    /// removes the monitors the process holds on others, then tells the runtime. Only the
    /// first call does anything.
    fn finish(&mut self, reason: ExitReason) {
        if let Some(process) = self.process.take() {
            drop_state(process);
            self.ctx.demonitor_all();
            let cell = self.ctx.cell.clone();
            match cell.control.take_successor() {
                // Handed off: its mail goes on to its successor.
                Some(plan) => hand_off::take_over(&self.ctx.runtime, cell, reason, plan),
                None => self.ctx.runtime.finish(cell, reason),
            }
        }
    }
}

impl<P: Process> Drop for Owner<P> {
    fn drop(&mut self) {
        self.finish(ExitReason::Killed);
    }
}

/// How `init` went, told to the `start` waiting for it, if any.
fn started(
    control: &Control,
    init: Outcome<Result<(), ExitReason>>,
    ack: Option<InitAck>,
) -> Result<(), ExitReason> {
    let started = match init {
        Outcome::Done(result) => result,
        Outcome::Panicked(message) => Err(ExitReason::Panic(message)),
        Outcome::Interrupted => Err(control.pending_reason()),
    };
    if let Some(ack) = ack {
        ack.send(started.clone()).ok();
    }
    started
}

/// Runs `terminate`, unless the process was killed; returns the final exit reason (a kill
/// while `terminate` runs makes it `Killed`, a panic in it makes it that panic).
///
/// Only a kill skips `terminate`: a process ending with the *reason* `Killed` (relayed by a
/// link from a process that was killed, say) runs it, and nothing but a kill interrupts it.
async fn terminate<P: Process>(
    process: &mut P,
    ctx: &mut Context<P>,
    cell: &Cell<P>,
    reason: ExitReason,
) -> ExitReason {
    if cell.control.is_interrupted(Interruptible::ByKill) {
        return ExitReason::Killed;
    }
    let outcome = {
        let handler = pin!(process.terminate(&reason, ctx));
        guarded(&cell.control, Interruptible::ByKill, handler).await
    };
    match outcome {
        Outcome::Done(()) => reason,
        Outcome::Interrupted => ExitReason::Killed,
        Outcome::Panicked(message) => {
            tracing::warn!(pid = %cell.control.pid, %reason, %message, "terminate panicked");
            let panic = ExitReason::Panic(message);
            cell.control.revise_exit(&panic);
            panic
        }
    }
}

/// Drops the behaviour's state; a panicking `Drop` is logged, not propagated. (The exit reason
/// is recorded by now, so callers whose reply handles the state held learn it.)
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
            break *reason;
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
        // Casts, the bulk of most mailboxes, are handed over here: going through `dispatch`
        // costs a future of its own per letter. (Calls too would make the task larger.)
        let scope = Interruptible::ByAnyExit;
        let outcome = match envelope {
            Envelope::Cast(message) => {
                guarded(control, scope, pin!(process.handle_cast(message, ctx))).await
            }
            letter => dispatch(process, ctx, cell, letter).await,
        };
        match outcome {
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
fn next_batch<'a, P: Process>(
    cell: &'a Cell<P>,
    batch: &'a mut VecDeque<Envelope<P>>,
) -> impl Future<Output = bool> + 'a {
    poll_fn(move |cx| {
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
}

/// Hands one letter to its handler (`serve` hands local casts over itself). Not an
/// `async fn`, so that the letter is not stored twice in the task (see [`run`]).
#[expect(clippy::manual_async_fn, reason = "an async fn would store the letter twice")]
fn dispatch<'a, P: Process>(
    process: &'a mut P,
    ctx: &'a mut Context<P>,
    cell: &'a Cell<P>,
    envelope: Envelope<P>,
) -> impl Future<Output = Outcome<()>> + 'a {
    async move {
        let control = &cell.control;
        let scope = Interruptible::ByAnyExit;
        let mut trace = None;
        let letter = match envelope {
            Envelope::Signal(signal) | Envelope::DirectExit(signal) => {
                if !admit_signal(ctx, &signal) {
                    return Outcome::Done(());
                }
                let handler = pin!(process.handle_signal(*signal, ctx));
                return guarded(control, scope, handler).await;
            }
            // Synchronous, and guarded as a handler is: a panic in it ends this process only.
            Envelope::Sys(work) => return guarded_now(control, scope, || work(process, ctx)),
            Envelope::Remote(mut inbound) => {
                // Boxed: only traced calls pay for their span, in memory as in time.
                trace = inbound
                    .trace
                    .take()
                    .and_then(|caller| handle_call_span(&ctx.runtime, caller))
                    .map(Box::new);
                match decode_inbound(cell.control.pid, *inbound) {
                    Some(letter) => letter,
                    None => return Outcome::Done(()),
                }
            }
            letter => letter,
        };
        match letter {
            Envelope::Cast(message) => {
                guarded(control, scope, pin!(process.handle_cast(message, ctx))).await
            }
            Envelope::Call(request, reply) => {
                let handler = pin!(process.handle_call(request, reply, ctx));
                Traced::new(trace, guarded(control, scope, handler)).await
            }
            Envelope::Signal(_)
            | Envelope::DirectExit(_)
            | Envelope::Remote(_)
            | Envelope::Sys(_) => {
                unreachable!("signals, remote letters and sys work were handled above")
            }
        }
    }
}

/// Whether the process's handler is to see `signal`: the signals it must not see are acted on
/// here.
fn admit_signal<P: Process>(ctx: &mut Context<P>, signal: &Signal) -> bool {
    match signal {
        // Demonitored while the Down was on its way.
        Signal::Down { monitor, .. } if ctx.release_monitor(monitor).is_none() => false,
        Signal::Exit { from, reason } if Some(*from) == ctx.parent() => {
            // As OTP's gen_server: a process that traps exits still ends when its parent (its
            // supervisor, say) exits or orders it to; `terminate` runs.
            ctx.stop(reason.clone());
            false
        }
        _ => true,
    }
}

/// A letter from another node decoded into the cast or call it carries; `None` when it was
/// refused (no codec, or a call that does not decode: the caller is told) or dropped (a cast
/// that does not decode: logged).
fn decode_inbound<P: Process>(pid: Pid, mut inbound: Inbound) -> Option<Envelope<P>> {
    let Some(codec) = P::remote_messages() else {
        tracing::warn!(%pid, "refused a message from another node: no codec");
        inbound.refuse(RemoteFailure::NotRemote);
        return None;
    };
    match inbound.reply.take() {
        None => match (codec.decode_cast)(&inbound.payload) {
            Ok(message) => Some(Envelope::Cast(message)),
            Err(error) => {
                tracing::warn!(%pid, %error, "dropped a remote message that did not decode");
                None
            }
        },
        Some(sink) => match (codec.decode_call)(&inbound.payload) {
            Ok(request) => Some(Envelope::Call(request, ReplyTo::remote(sink, codec.encode_reply))),
            Err(error) => {
                tracing::warn!(%pid, %error, "refused a remote call that did not decode");
                sink.reply(Err(RemoteFailure::BadRequest(error.0)));
                None
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::Runtime;

    struct Stateless;

    impl Process for Stateless {
        type Message = ();
        type Call = ();
        type Reply = ();

        async fn handle_cast(&mut self, (): (), _: &mut Context<Self>) {}
    }

    /// The task of an idle process is most of what the process costs in memory
    /// (`process_bytes` in the benches): this catches a change that makes it grow again, as
    /// nested `async fn`s taking their arguments by value did (1,200 bytes, now 392). Tokio
    /// allocates a task in multiples of 128 bytes (a 32-byte header, the future plus 24 bytes,
    /// a 48-byte trailer), so at 408 bytes or less the whole task of this process fits in 512.
    #[test]
    fn the_task_of_a_stateless_process_stays_small() {
        let tokio = tokio::runtime::Builder::new_current_thread().build().expect("tokio");
        let _entered = tokio.enter();
        let runtime = Runtime::new().expect("a runtime");
        let cell = Arc::new(Cell::<Stateless>::new(runtime.system_pid(), Default::default()));
        let task = run(Stateless, Context::new(runtime, cell, None), None);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 408, "the task of a stateless process takes {size} bytes");
    }
}
