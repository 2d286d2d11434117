//! What the distributed supervisor refuses, as values: a supervisor that did not start
//! ([`DistributedStartError`]), a child operation that did not happen
//! ([`DistributedSupervisorError`]).

use shoal_hub::{ChildError, HubError, HubStartError, MAX_CHILD_ID};
use shoal_process::Pid;

/// Why a distributed supervisor did not start on this node. Nothing runs then.
#[derive(Debug, thiserror::Error)]
pub enum DistributedStartError {
    /// The supervisor's name is empty, or too long for the hub id it becomes
    /// (`dsup/` and the name, at most [`MAX_CHILD_ID`] bytes).
    #[error(
        "supervisor name {0:?} is empty or too long (the hub id `dsup/NAME` is at most {MAX_CHILD_ID} bytes)"
    )]
    BadName(String),
    /// A setting that breaks the supervisor's promise of one live child per name (more than
    /// one copy per child, say).
    #[error("bad distributed supervisor configuration: {0}")]
    BadConfig(String),
    /// The hub under it did not start: it runs on this node already, or its configuration
    /// is refused.
    #[error(transparent)]
    Hub(#[from] HubStartError),
}

/// A child operation of a distributed supervisor that did not happen. Unless a variant says
/// otherwise, the supervisor's children are as they were.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DistributedSupervisorError {
    /// The child's name is empty or longer than [`MAX_CHILD_ID`] bytes; nothing started.
    #[error("child name {0:?} is empty or longer than {MAX_CHILD_ID} bytes")]
    BadName(String),
    /// The node the child was asked to run on does not run this supervisor (as this node
    /// sees it); nothing started.
    #[error("node {0} does not run this supervisor")]
    NotInSupervisor(String),
    /// A child of this name runs already: one live child per name.
    #[error("child {name:?} is already running on {node} as {pid}")]
    AlreadyStarted {
        /// The name.
        name: String,
        /// Where it runs.
        node: String,
        /// Its pid there.
        pid: Pid,
    },
    /// The supervisor refused the start as a whole (it is stopped on this node, or this node
    /// is without its quorum); nothing started.
    #[error("the start was refused: {0}")]
    Refused(HubError),
    /// The child did not start, or did not start as asked: an unknown factory, an `init` that
    /// failed, an owner that could not be reached, no answer in time (it may still start),
    /// started but not yet held by a second node (it runs). The hub's error says which.
    #[error("child {name:?}: {error}")]
    Start {
        /// The name.
        name: String,
        /// What the hub said.
        error: ChildError,
    },
    /// No node of the supervisor runs a child of this name.
    #[error("no child {0:?}")]
    NotFound(String),
    /// The child was not terminated (it is being restarted, it did not exit in time, or its
    /// node could not be reached). The hub's error says which.
    #[error("child {name:?} was not terminated: {error}")]
    Terminate {
        /// The name.
        name: String,
        /// What the hub said.
        error: shoal_hub::TerminateError,
    },
}
