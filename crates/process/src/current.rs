//! Which process this thread is running, if any.
//!
//! A process's task marks the thread with the process's control block for the length of each
//! poll ([`Running`]), once per wake-up rather than once per message. Two rules need it:
//!
//! - a process never waits on itself: a call to itself is refused at once, and a cast to
//!   itself that finds the mailbox full fails instead of waiting for room only it can make
//!   ([`is_running`]);
//! - a caller whose call handler panicked learns the panic, not "no reply": a reply handle
//!   dropped while a handler unwinds is held back ([`hold_back`]) until the process has
//!   recorded why it is ending, and only then released ([`release_held`]).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::control::Control;
use crate::{ExitReason, Pid};

thread_local! {
    /// The address of the running process's control block; 0 when no process runs here.
    static RUNNING: Cell<usize> = const { Cell::new(0) };
    /// The running process's pid; `None` when no process runs here.
    static RUNNING_PID: Cell<Option<Pid>> = const { Cell::new(None) };
    /// Reply handles dropped while the running process's handler unwound.
    static HELD_BACK: RefCell<Vec<Box<dyn HeldReply>>> = const { RefCell::new(Vec::new()) };
    /// Whether `HELD_BACK` may hold anything: checked after every poll, and cheaper to read
    /// than the vector (which has a destructor to register).
    static ANY_HELD: Cell<bool> = const { Cell::new(false) };
}

fn address(control: &Control) -> usize {
    std::ptr::from_ref(control) as usize
}

/// Whether the code calling this runs inside the process whose control block is `control`.
pub(crate) fn is_running(control: &Control) -> bool {
    RUNNING.with(|running| running.get() == address(control))
}

/// The pid of the process whose code runs on this thread now, if any.
pub(crate) fn running_pid() -> Option<Pid> {
    RUNNING_PID.with(Cell::get)
}

/// A reply handle whose caller is told only once the process's exit reason is known.
pub(crate) trait HeldReply: Send {
    /// Tells the caller that the process is ending with `reason`.
    fn release(self: Box<Self>, reason: Option<&ExitReason>);
}

/// Keeps `reply` until [`release_held`] if a process runs on this thread (its handler is
/// unwinding); otherwise hands it back, to be dropped at once.
pub(crate) fn hold_back(reply: Box<dyn HeldReply>) -> Result<(), Box<dyn HeldReply>> {
    if RUNNING.with(Cell::get) == 0 {
        return Err(reply);
    }
    HELD_BACK.with(|held| held.borrow_mut().push(reply));
    ANY_HELD.with(|any| any.set(true));
    Ok(())
}

/// Releases the reply handles held back on this thread, telling their callers `reason`.
pub(crate) fn release_held(reason: Option<&ExitReason>) {
    if !ANY_HELD.with(|any| any.replace(false)) {
        return;
    }
    let held = HELD_BACK.with(|held| std::mem::take(&mut *held.borrow_mut()));
    for reply in held {
        reply.release(reason);
    }
}

/// Polls a process's whole task with the thread marked as running that process.
pub(crate) struct Running<'a, F> {
    control: &'a Control,
    task: Pin<&'a mut F>,
}

impl<'a, F: Future> Running<'a, F> {
    pub(crate) fn new(control: &'a Control, task: Pin<&'a mut F>) -> Self {
        Self { control, task }
    }
}

impl<F: Future> Future for Running<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _mark = Mark::set(self.control);
        self.task.as_mut().poll(cx)
    }
}

/// The thread's mark for one poll; the previous mark comes back when it drops.
struct Mark<'a> {
    control: &'a Control,
    previous: usize,
    previous_pid: Option<Pid>,
}

impl<'a> Mark<'a> {
    fn set(control: &'a Control) -> Self {
        Self {
            control,
            previous: RUNNING.with(|running| running.replace(address(control))),
            previous_pid: RUNNING_PID.with(|running| running.replace(Some(control.pid))),
        }
    }
}

impl Drop for Mark<'_> {
    fn drop(&mut self) {
        RUNNING.with(|running| running.set(self.previous));
        RUNNING_PID.with(|running| running.set(self.previous_pid));
        // Handlers release what they held back as soon as they have unwound; anything else a
        // panic dropped in this poll (outside a handler) is released here.
        if ANY_HELD.with(Cell::get) {
            release_held(self.control.reason_for_callers().as_ref());
        }
    }
}
