//! [`SupervisorError`]: what supervisor operations refuse, and why.

use shoal_process::{CallError, Pid, StartError};

/// A supervisor operation that did not happen. Unless a variant says otherwise, the
/// supervisor's children are as they were.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SupervisorError {
    /// A child with this id is running.
    #[error("child {id:?} is already running as {pid}")]
    AlreadyStarted {
        /// The child's id.
        id: String,
        /// Its pid.
        pid: Pid,
    },
    /// A child with this id is known but not running (restart or delete it instead).
    #[error("child {0:?} already exists (not running)")]
    AlreadyPresent(String),
    /// No child has this id.
    #[error("no child {0:?}")]
    NotFound(String),
    /// No child has this pid.
    #[error("no child {0}")]
    NoSuchPid(Pid),
    /// The child is running, so it cannot be deleted.
    #[error("child {0:?} is running: terminate it first")]
    Running(String),
    /// The dynamic supervisor has as many children as it may.
    #[error("the supervisor already has its maximum of {0} children")]
    MaxChildren(usize),
    /// The child did not start; it was not added.
    #[error("child {id:?} did not start: {error}")]
    Start {
        /// The child's id.
        id: String,
        /// Why.
        error: StartError,
    },
    /// The child was killed (it had not stopped within its shutdown time) and had still not
    /// exited when the kill timeout passed: its handler never awaits, so the kill cannot take
    /// effect. The supervisor forgot it as stopped; it may still be running.
    #[error("child {id:?} ({pid}) was killed but has not exited: it may still be running")]
    StillAlive {
        /// The child's id.
        id: String,
        /// Its pid.
        pid: Pid,
    },
    /// The supervisor could not be reached (it exited, or did not answer in time).
    #[error("the supervisor did not answer: {0}")]
    Call(#[from] CallError),
}
