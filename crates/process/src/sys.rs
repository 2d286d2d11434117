//! Work run inside a process, on its state, at its place in the mailbox order: OTP's
//! `sys:get_state` and `sys:replace_state`, for the layers that take a process's state to hand
//! it over to another node, or change its role in place.
//!
//! ```text
//! caller ── Envelope::Sys(work) ──▶ mailbox ──▶ process, between two letters:
//!   ▲          (counts as a message)               claim, then work(&mut state, ctx)
//!   │                                                           │
//!   └──────────── what work returned (through a ReplyTo) ◀──────┘
//! ```
//!
//! What it is not: a way into a process on another node (a closure cannot be sent there), nor
//! a handler (the work is synchronous, and runs whole between two letters).
//!
//! The caller and the process settle who has the last word through a *claim*: the process
//! takes it just before it runs the work, and a caller whose timeout ran out takes it to
//! withdraw the work. So a timeout means the work never ran and never will, and work that began
//! always reports back (its result, or the exit it caused).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::addr::within;
use crate::cell::{Cell, Envelope};
use crate::clock::Clock;
use crate::current;
use crate::{Context, Pid, Process, ReplyTo, Runtime, SysError};

impl Runtime {
    /// Runs `work` on the state of the local process `pid` (behaviour `P`) inside that process,
    /// between two letters, after every letter queued before it (as OTP's `sys:get_state` and
    /// `sys:replace_state`); returns what `work` returns.
    ///
    /// The work is queued as a message is, and counts against the mailbox's bound; a full
    /// mailbox makes it wait for room, whatever the overflow policy (as a timer's message does:
    /// the caller bounds its wait with `timeout`). It runs synchronously: a long one holds up
    /// the process as a long handler does, and a panic in it ends the process as a panic in a
    /// handler does ([`SysError::Exited`] with the panic's reason).
    ///
    /// Refused at once: a pid of another node ([`SysError::Remote`]), a process of another
    /// behaviour ([`SysError::WrongBehaviour`]), and work a process asks of itself
    /// ([`SysError::ToSelf`]: it would wait for its own handler). If the work has not begun
    /// within `timeout` it is withdrawn ([`SysError::Timeout`]): it never runs. A process that
    /// exits with the work queued tells the caller at once ([`SysError::Exited`]).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use shoal_process::{Context, Process, Runtime};
    ///
    /// struct Counter(u64);
    ///
    /// impl Process for Counter {
    ///     type Message = u64;
    ///     type Call = ();
    ///     type Reply = ();
    ///
    ///     async fn handle_cast(&mut self, n: u64, _: &mut Context<Self>) {
    ///         self.0 += n;
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let runtime = Runtime::new()?;
    /// let counter = runtime.spawn(Counter(0));
    /// let timeout = Duration::from_secs(5);
    /// counter.cast(2).await?;
    /// // As sys:get_state, after the cast queued before it.
    /// let count = runtime.sys::<Counter, _>(counter.pid(), |state, _| state.0, timeout).await?;
    /// assert_eq!(count, 2);
    /// // As sys:replace_state: the next letter sees the new state. (`Addr::sys` is the same.)
    /// counter.sys(|state, _| state.0 = 40, timeout).await?;
    /// counter.cast(2).await?;
    /// assert_eq!(counter.sys(|state, _| state.0, timeout).await?, 42);
    /// # Ok(()) }
    /// ```
    pub async fn sys<P: Process, R: Send + 'static>(
        &self,
        pid: Pid,
        work: impl FnOnce(&mut P, &mut Context<P>) -> R + Send + 'static,
        timeout: Duration,
    ) -> Result<R, SysError> {
        if pid.node() != self.node() {
            return Err(SysError::Remote(pid));
        }
        let cell = self.lookup_process(pid).ok_or(SysError::NoProc(pid))?;
        let cell =
            cell.into_any().downcast::<Cell<P>>().map_err(|_| SysError::WrongBehaviour(pid))?;
        run_in(&cell, self.clock(), work, timeout).await
    }
}

/// Queues `work` in the process of `cell` and waits for its result; see [`Runtime::sys`].
pub(crate) async fn run_in<P: Process, R: Send + 'static>(
    cell: &Cell<P>,
    clock: &Clock,
    work: impl FnOnce(&mut P, &mut Context<P>) -> R + Send + 'static,
    timeout: Duration,
) -> Result<R, SysError> {
    let pid = cell.control.pid;
    if current::is_running(&cell.control) {
        return Err(SysError::ToSelf(pid));
    }
    let claim = Arc::new(AtomicBool::new(false));
    let (sender, mut result) = oneshot::channel();
    let letter = letter(work, ReplyTo::local(sender), claim.clone());
    let exchange = async {
        cell.mailbox.push_when_room(letter).await.map_err(|_| SysError::NoProc(pid))?;
        (&mut result).await.map_err(|_| exited(cell))
    };
    match within(clock, timeout, exchange, || SysError::Timeout).await {
        // The process claimed the work just as the time ran out. It runs the work without
        // awaiting, so its outcome is moments away.
        Err(SysError::Timeout) if !withdraw(&claim) => result.await.map_err(|_| exited(cell)),
        outcome => outcome,
    }
}

/// The letter that runs `work`, unless the caller has withdrawn it, and replies with its
/// result. A panic in `work` drops `reply` while unwinding, which holds it back until the
/// process has recorded the panic as its exit reason (see [`ReplyTo`]).
fn letter<P: Process, R: Send + 'static>(
    work: impl FnOnce(&mut P, &mut Context<P>) -> R + Send + 'static,
    reply: ReplyTo<R>,
    claim: Arc<AtomicBool>,
) -> Envelope<P> {
    Envelope::Sys(Box::new(move |process, ctx| {
        if !claim.swap(true, Ordering::AcqRel) {
            reply.send(work(process, ctx));
        }
    }))
}

/// Takes the claim for a caller that gives up; `false` if the process took it first.
fn withdraw(claim: &AtomicBool) -> bool {
    !claim.swap(true, Ordering::AcqRel)
}

/// What a caller whose work was dropped unrun (or whose work panicked) is told.
fn exited<P: Process>(cell: &Cell<P>) -> SysError {
    let pid = cell.control.pid;
    match cell.control.reason_for_callers() {
        Some(reason) => SysError::Exited { pid, reason },
        None => SysError::NoProc(pid),
    }
}
