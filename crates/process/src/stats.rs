//! [`RuntimeStats`]: what a node's runtime has done, for metrics and dashboards.
//!
//! The counters behind it are plain atomics touched once per spawn and once per exit (a spawn
//! is counted by the id it takes, so it costs nothing more); nothing is counted per message.
//! The one figure about mailboxes, how many are over a threshold, is computed when the stats
//! are read, by a walk over the process table: read them on a tick, not in a loop.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::ExitReason;

/// The mailbox length above which [`RuntimeStats::mailboxes_over_threshold`] counts a process,
/// unless the runtime was built with another
/// ([`crate::RuntimeBuilder::mailbox_threshold`]).
pub const DEFAULT_MAILBOX_THRESHOLD: usize = 1_000;

/// A snapshot of a node's processes, from [`crate::Runtime::stats`]. Totals count from the
/// runtime's start and only grow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuntimeStats {
    /// Processes alive now (forwarders of processes that were handed off are not counted).
    pub processes: usize,
    /// Processes spawned, including those whose spawn failed after they were created (a
    /// name taken, a link to a process gone): each of those also counts as an exit.
    pub spawned_total: u64,
    /// Processes that exited, by the class of their reason.
    pub exits: ExitCounts,
    /// Children restarted by supervisors on this node ([`crate::Runtime::note_restart`]).
    pub restarts_total: u64,
    /// Processes whose mailbox holds more than `mailbox_threshold` letters now.
    pub mailboxes_over_threshold: usize,
    /// The threshold `mailboxes_over_threshold` counts against.
    pub mailbox_threshold: usize,
}

/// Exits by the class of their reason: a fixed, small set, so that a metric labelled by it
/// has a bounded number of series.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExitCounts {
    /// [`ExitReason::Normal`].
    pub normal: u64,
    /// [`ExitReason::Shutdown`].
    pub shutdown: u64,
    /// [`ExitReason::Killed`].
    pub killed: u64,
    /// [`ExitReason::Panic`]: a handler panicked.
    pub panic: u64,
    /// Every other reason: [`ExitReason::Custom`], [`ExitReason::NoProc`],
    /// [`ExitReason::NoConnection`].
    pub error: u64,
}

impl ExitCounts {
    /// All exits, whatever their reason.
    pub fn total(&self) -> u64 {
        self.normal + self.shutdown + self.killed + self.panic + self.error
    }
}

/// The runtime's counters of exits and restarts.
#[derive(Default)]
pub(crate) struct Counters {
    normal: AtomicU64,
    shutdown: AtomicU64,
    killed: AtomicU64,
    panic: AtomicU64,
    error: AtomicU64,
    restarts: AtomicU64,
}

impl Counters {
    pub(crate) fn count_exit(&self, reason: &ExitReason) {
        let counter = match reason {
            ExitReason::Normal => &self.normal,
            ExitReason::Shutdown => &self.shutdown,
            ExitReason::Killed => &self.killed,
            ExitReason::Panic(_) => &self.panic,
            ExitReason::Custom(_) | ExitReason::NoProc | ExitReason::NoConnection => &self.error,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn exits(&self) -> ExitCounts {
        ExitCounts {
            normal: self.normal.load(Ordering::Relaxed),
            shutdown: self.shutdown.load(Ordering::Relaxed),
            killed: self.killed.load(Ordering::Relaxed),
            panic: self.panic.load(Ordering::Relaxed),
            error: self.error.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }
}
