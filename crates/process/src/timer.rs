//! Timers: a message or a [`crate::Signal::Timeout`] delivered to a process after a delay.
//!
//! Each timer is a small tokio task that sleeps and then delivers. Timers aimed at a process
//! are cancelled when it exits, as in OTP. The process keeps a record of each pending timer
//! (to cancel it then); firing or cancelling a timer removes that record, so a process that
//! re-arms a timer at every message keeps one record, not one per message.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::task::AbortHandle;

use crate::Ref;
use crate::control::Control;

/// A pending timer. Dropping it does not cancel it; [`TimerRef::cancel`] does.
#[derive(Clone)]
pub struct TimerRef {
    id: Ref,
    shared: Arc<TimerShared>,
}

pub(crate) struct TimerShared {
    /// Set once, by whichever comes first: firing or cancelling.
    settled: AtomicBool,
    task: Mutex<Option<AbortHandle>>,
    /// The process the timer is aimed at, whose record of it a cancel removes (weak: that
    /// record holds this).
    target: Option<Weak<dyn AsControl>>,
}

impl TimerShared {
    /// Cancels the timer; `true` if it had not fired yet. The caller removes the process's
    /// record of it, if the process has not exited (which cancels every timer).
    pub(crate) fn cancel(&self) -> bool {
        if self.settled.swap(true, Ordering::AcqRel) {
            return false;
        }
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task {
            task.abort();
        }
        true
    }
}

impl TimerRef {
    /// The timer's reference, as carried by [`crate::Signal::Timeout`].
    pub fn id(&self) -> Ref {
        self.id
    }

    /// Cancels the timer. Returns `true` if it had not fired yet (it now never will), `false`
    /// if it had already fired or been cancelled.
    pub fn cancel(&self) -> bool {
        if !self.shared.cancel() {
            return false;
        }
        if let Some(target) = self.shared.target.as_ref().and_then(Weak::upgrade) {
            target.as_control().forget_timer(self.id);
        }
        true
    }

    /// A timer that can no longer fire (its target had already exited).
    pub(crate) fn settled(id: Ref) -> Self {
        let settled = AtomicBool::new(true);
        let shared = Arc::new(TimerShared { settled, task: Mutex::new(None), target: None });
        Self { id, shared }
    }

    /// Starts a timer that runs `deliver` once `timer` (a sleep on the node's clock) is over,
    /// unless cancelled first. The timer is
    /// tied to `target`: cancelled when that process exits. Returns `None` if it already has.
    pub(crate) fn start(
        handle: &tokio::runtime::Handle,
        id: Ref,
        timer: tokio::time::Sleep,
        target: Arc<dyn AsControl>,
        deliver: impl Future<Output = ()> + Send + 'static,
    ) -> Option<Self> {
        let shared = Arc::new(TimerShared {
            settled: AtomicBool::new(false),
            task: Mutex::new(None),
            target: Some(Arc::downgrade(&target)),
        });
        target.as_control().add_timer(id, shared.clone()).ok()?;
        let fired = shared.clone();
        let task = handle.spawn(async move {
            timer.await;
            target.as_control().forget_timer(id);
            if !fired.settled.swap(true, Ordering::AcqRel) {
                deliver.await;
            }
        });
        *shared.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(task.abort_handle());
        Some(Self { id, shared })
    }

    /// Starts a timer tied to no process of this node (its target runs on another): it runs
    /// `deliver` once `timer` is over, unless cancelled first.
    pub(crate) fn detached(
        handle: &tokio::runtime::Handle,
        id: Ref,
        timer: tokio::time::Sleep,
        deliver: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        let shared = Arc::new(TimerShared {
            settled: AtomicBool::new(false),
            task: Mutex::new(None),
            target: None,
        });
        let fired = shared.clone();
        let task = handle.spawn(async move {
            timer.await;
            if !fired.settled.swap(true, Ordering::AcqRel) {
                deliver.await;
            }
        });
        *shared.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(task.abort_handle());
        Self { id, shared }
    }
}

/// Anything that leads to a process's [`Control`] (its cell, typed or erased).
pub(crate) trait AsControl: Send + Sync + 'static {
    fn as_control(&self) -> &Control;
}

impl fmt::Debug for TimerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TimerRef").field(&self.id).finish()
    }
}

impl PartialEq for TimerRef {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for TimerRef {}
