//! What can go wrong, as values: a batch refused as a whole ([`HubError`]), one child that did
//! not start ([`ChildError`]), a termination or a move that did not happen ([`TerminateError`],
//! [`RedistError`]), a hub that did not start ([`HubStartError`]).

use serde::{Deserialize, Serialize};
use shoal_process::Pid;
use shoal_transport::ServiceError;

use crate::core::PlacementError;

/// Longest child id, in bytes.
pub const MAX_CHILD_ID: usize = 1_024;

/// A batch refused before anything started.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// The batch is empty.
    #[error("no children given")]
    NoChildren,
    /// A child id is empty or longer than [`MAX_CHILD_ID`] bytes.
    #[error("child id {0:?} is empty or longer than {MAX_CHILD_ID} bytes")]
    BadId(String),
    /// The same child id twice in one batch.
    #[error("child id {0:?} appears twice in the batch")]
    Duplicate(String),
    /// The hub's strategy refused to place a child.
    #[error(transparent)]
    Placement(#[from] PlacementError),
    /// The hub was stopped.
    #[error("the hub is stopped")]
    Stopped,
    /// This node is without its quorum ([`crate::core::Partition`]): it starts nothing.
    #[error("this node is without its quorum")]
    NoQuorum,
}

/// Why one child of a batch did not start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ChildError {
    /// It runs already (reported as an error only when the caller asked for the check).
    #[error("already started on {node} as {pid}")]
    AlreadyStarted {
        /// Where it runs.
        node: String,
        /// Its pid there.
        pid: Pid,
    },
    /// It is being started or restarted on `node` now; ask again.
    #[error("being started on {node}")]
    Starting {
        /// Where.
        node: String,
    },
    /// Its process did not start: an unknown factory, arguments that do not decode, an
    /// `init` that failed.
    #[error("did not start: {0}")]
    Start(String),
    /// The node that owns it could not be reached, or does not run this hub.
    #[error("node {node} could not be reached: {error}")]
    Unreachable {
        /// The owner.
        node: String,
        /// What the transport said.
        error: String,
    },
    /// Forwarded from owner to owner more than the hop limit allows (the nodes' views of
    /// the hub disagree; retry once they agree).
    #[error("forwarded more than {0} times")]
    TooManyHops(u8),
    /// No answer within the batch's timeout (it may still start).
    #[error("no answer in time")]
    Timeout,
    /// It started, but no other node acknowledged holding its spec in time (it runs; it
    /// would be lost with this node).
    #[error("started on {node} as {pid}, but not yet held by a second node")]
    NotHeld {
        /// Where it runs.
        node: String,
        /// Its pid there.
        pid: Pid,
    },
    /// A newer termination of the child is known (a hand-over of an older copy).
    #[error("terminated (version {0})")]
    Terminated(u64),
    /// It started, then was stopped again because another child of the batch failed and the
    /// caller asked for a rollback.
    #[error("rolled back")]
    RolledBack,
    /// Its owner is without its quorum ([`crate::core::Partition`]): it starts nothing.
    #[error("node {0} is without its quorum")]
    NoQuorum(String),
}

/// Why a child was not terminated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum TerminateError {
    /// No node of the hub runs it.
    #[error("child {0:?} not found")]
    NotFound(String),
    /// It is being restarted; try again.
    #[error("child {0:?} is being restarted")]
    Restarting(String),
    /// It did not exit within the timeout. It keeps running under the hub's supervision:
    /// it was asked to shut down, and if it exits later its restart policy applies.
    #[error("child {0:?} still runs after the timeout")]
    Running(String),
    /// The node that runs it could not be reached.
    #[error("node {node} could not be reached: {error}")]
    Unreachable {
        /// The node.
        node: String,
        /// What the transport said.
        error: String,
    },
}

/// Why a child was not moved.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum RedistError {
    /// No node of the hub runs it.
    #[error("child {0:?} not found")]
    NotFound(String),
    /// The target node is not in the hub.
    #[error("node {0} is not in the hub")]
    NotInHub(String),
    /// The child did not start on the target (it runs where it ran).
    #[error("not started on the target: {0}")]
    Start(ChildError),
    /// The node that runs it could not be reached.
    #[error("node {node} could not be reached: {error}")]
    Unreachable {
        /// The node.
        node: String,
        /// What the transport said.
        error: String,
    },
}

/// Why a hub did not start.
#[derive(Debug, thiserror::Error)]
pub enum HubStartError {
    /// The hub id is empty or longer than [`MAX_CHILD_ID`] bytes.
    #[error("hub id {0:?} is empty or longer than {MAX_CHILD_ID} bytes")]
    BadId(String),
    /// This hub runs on the node already.
    #[error("hub {hub} already runs on this node")]
    Running {
        /// The hub id.
        hub: String,
        /// The service's error.
        source: ServiceError,
    },
    /// A setting that cannot work (a partition strategy with a zero size, say).
    #[error("bad hub configuration: {0}")]
    BadConfig(String),
}
