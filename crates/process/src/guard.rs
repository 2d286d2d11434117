//! Runs a behaviour's handler so that a panic ends only that process, and a pending exit
//! (or a kill) interrupts the handler at its next await point.

use std::any::Any;
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::Poll;

use crate::control::{Control, Interruptible};
use crate::current;

/// How a guarded handler ended.
pub(crate) enum Outcome<T> {
    Done(T),
    Panicked(String),
    Interrupted,
}

/// Polls `handler` to completion unless it panics or the process is asked to exit.
///
/// A handler that never awaits costs one atomic load and a `catch_unwind` frame. One that does
/// await leaves its waker with the control block, so an exit request wakes it to be dropped.
///
/// The caller pins the handler's future in its own frame and this returns a bare `poll_fn`:
/// an `async fn` here would keep a second copy of the handler's future in the task of every
/// process for its whole life (an async fn moves its arguments into its own state).
pub(crate) fn guarded<'a, F: Future>(
    control: &'a Control,
    scope: Interruptible,
    mut handler: Pin<&'a mut F>,
) -> impl Future<Output = Outcome<F::Output>> + 'a {
    poll_fn(move |cx| {
        if control.is_interrupted(scope) {
            return Poll::Ready(interrupted(control));
        }
        match catch_unwind(AssertUnwindSafe(|| handler.as_mut().poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Outcome::Done(output)),
            Err(payload) => Poll::Ready(panicked(control, payload.as_ref())),
            Ok(Poll::Pending) => {
                control.register_handler_waker(cx.waker());
                // An exit requested between the poll and the registration found no waker.
                if control.is_interrupted(scope) {
                    Poll::Ready(interrupted(control))
                } else {
                    Poll::Pending
                }
            }
        }
    })
}

/// [`guarded`] for synchronous work (sys work, see `crate::sys`): runs `work` now, unless the
/// process is asked to exit; a panic in it ends only this process.
///
/// No future: a letter whose work never awaits adds nothing to the process's task.
pub(crate) fn guarded_now<T>(
    control: &Control,
    scope: Interruptible,
    work: impl FnOnce() -> T,
) -> Outcome<T> {
    if control.is_interrupted(scope) {
        return interrupted(control);
    }
    match catch_unwind(AssertUnwindSafe(work)) {
        Ok(output) => Outcome::Done(output),
        Err(payload) => panicked(control, payload.as_ref()),
    }
}

/// Ends a handler for the pending exit. Both an interruption and a panic end the process, and
/// say why before the handler, and any reply handle it holds, is dropped.
fn interrupted<T>(control: &Control) -> Outcome<T> {
    control.begin_exit(&control.pending_reason());
    Outcome::Interrupted
}

/// Ends a handler that panicked with `payload` (see [`interrupted`]).
fn panicked<T>(control: &Control, payload: &(dyn Any + Send)) -> Outcome<T> {
    let message = panic_message(payload);
    control.begin_exit(&crate::ExitReason::Panic(message.clone()));
    // Reply handles dropped while the handler unwound tell their callers only now that the
    // reason is recorded: the panic, not "no reply".
    current::release_held(control.reason_for_callers().as_ref());
    Outcome::Panicked(message)
}

/// The message of a panic payload (`panic!` produces a `&str` or a `String`).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}
