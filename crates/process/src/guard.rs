//! Runs a behaviour's handler so that a panic ends only that process, and a pending exit
//! (or a kill) interrupts the handler at its next await point.

use std::any::Any;
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::task::Poll;

use crate::control::{Control, Interruptible};

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
pub(crate) async fn guarded<F: Future>(
    control: &Control,
    scope: Interruptible,
    handler: F,
) -> Outcome<F::Output> {
    let mut handler = pin!(handler);
    poll_fn(|cx| {
        if control.is_interrupted(scope) {
            return Poll::Ready(Outcome::Interrupted);
        }
        match catch_unwind(AssertUnwindSafe(|| handler.as_mut().poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Outcome::Done(output)),
            Err(payload) => Poll::Ready(Outcome::Panicked(panic_message(payload.as_ref()))),
            Ok(Poll::Pending) => {
                control.register_handler_waker(cx.waker());
                // An exit requested between the poll and the registration found no waker.
                if control.is_interrupted(scope) {
                    Poll::Ready(Outcome::Interrupted)
                } else {
                    Poll::Pending
                }
            }
        }
    })
    .await
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
