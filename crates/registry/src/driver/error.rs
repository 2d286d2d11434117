//! The registry's errors: [`RegistryError`] for every operation, [`RegistryStartError`] for
//! starting the service.

use serde::{Deserialize, Serialize};
use shoal_paxos::PaxosError;
use shoal_process::Pid;

use crate::core::{KeyError, LeaseConfigError};

/// Why a registry operation did not complete.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The name or lock key is not acceptable.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A name asked for OTP's `transient` restart policy, which the registry refuses (as
    /// Paxtor does): a name is `temporary` (cleared when its process exits) or `permanent`.
    #[error(
        "the transient restart policy is not supported for registry names: use temporary or permanent"
    )]
    Transient,
    /// No majority of the acceptors answered. `maybe_applied`: the operation may still have
    /// taken effect (a later read tells).
    #[error("no quorum of acceptors answered (maybe applied: {maybe_applied})")]
    NoQuorum {
        /// Whether the write may have taken effect.
        maybe_applied: bool,
    },
    /// Consensus failed otherwise (see the [`PaxosError`], which says whether it may have
    /// taken effect).
    #[error("consensus failed: {0}")]
    Consensus(PaxosError),
    /// The node chosen to host a name has no factory of that name.
    #[error("node {node} has no process factory {factory:?}")]
    UnknownFactory {
        /// The node that was asked.
        node: String,
        /// The factory named by the spec.
        factory: String,
    },
    /// The spec's arguments do not decode as its factory's argument type.
    #[error("node {node}: bad start arguments for factory {factory:?}: {error}")]
    BadArgs {
        /// The node that was asked.
        node: String,
        /// The factory named by the spec.
        factory: String,
        /// What was wrong.
        error: String,
    },
    /// The process was built but did not start (its `init` failed, or its build panicked).
    #[error("node {node} could not start the process: {reason}")]
    StartFailed {
        /// The node that was asked.
        node: String,
        /// Why.
        reason: String,
    },
    /// No node running the registry could host the name (each refused or failed: the reasons,
    /// by node).
    #[error("no node could host {name}: {}", refusals.iter().map(|(node, why)| format!("{node}: {why}")).collect::<Vec<_>>().join("; "))]
    NoHost {
        /// The name.
        name: String,
        /// Each node asked, and why it did not host it.
        refusals: Vec<(String, String)>,
    },
    /// The name is taken by another process.
    #[error("the name {name} is taken by {holder:?} on {host}")]
    Taken {
        /// The name.
        name: String,
        /// The process that has it (`None` while its host starts it).
        holder: Option<Pid>,
        /// Its host.
        host: String,
    },
    /// The name is not registered to that process.
    #[error("the name {name} is not registered to {pid}")]
    NotRegistered {
        /// The name.
        name: String,
        /// The process named.
        pid: Pid,
    },
    /// An unlock of a lock that is free.
    #[error("the lock {key} is not held")]
    NotHeld {
        /// The lock's key.
        key: String,
    },
    /// An unlock by a process that does not hold the lock.
    #[error("the lock {key} is held by {holder}, not by {by}")]
    NotHolder {
        /// The lock's key.
        key: String,
        /// Its holder.
        holder: Pid,
        /// The process that tried to release it.
        by: Pid,
    },
    /// The process given (a lock holder, a process to register) runs on another node: only
    /// a process of this node can hold a lock or be registered through this node.
    #[error("{0} is not a process of this node")]
    NotLocal(Pid),
    /// The process given is not alive.
    #[error("{0} is not alive")]
    NoProc(Pid),
    /// This node does not hold its registry lease (it has not won it yet, or lost the
    /// majority), so it may not host names or hold locks now.
    #[error("this node does not hold its registry lease")]
    NoLease,
    /// The operation did not complete within its time.
    #[error("timed out")]
    Timeout,
    /// A register holds a record that does not decode (written by an incompatible version?).
    #[error("the register {register} holds a record that does not decode: {error}")]
    Corrupt {
        /// The register.
        register: String,
        /// The decoding error.
        error: String,
    },
    /// Other writers kept changing the register; nothing was written.
    #[error("the register {register} kept changing under contention; nothing was written")]
    Contended {
        /// The register.
        register: String,
    },
    /// A node runs the registry over a different acceptor set than this one.
    #[error("node {peer} runs the registry over acceptors {theirs:?}, this node over {ours:?}")]
    AcceptorMismatch {
        /// The peer.
        peer: String,
        /// This node's acceptor set, sorted.
        ours: Vec<String>,
        /// The peer's, sorted.
        theirs: Vec<String>,
    },
    /// A peer's registry answered something this one cannot read.
    #[error("node {node}: {error}")]
    Remote {
        /// The peer.
        node: String,
        /// What went wrong.
        error: String,
    },
    /// The registry on this node has stopped.
    #[error("the registry on this node has stopped")]
    Stopped,
}

impl RegistryError {
    /// Whether the operation may have taken effect despite the error.
    pub fn maybe_applied(&self) -> bool {
        match self {
            RegistryError::NoQuorum { maybe_applied } => *maybe_applied,
            RegistryError::Consensus(error) => error.maybe_applied(),
            _ => false,
        }
    }

    /// Whether the operation may succeed if tried again as it is (no quorum, contention, a
    /// timeout, a host without its lease yet or out of reach), as opposed to bad input or a
    /// stopped registry.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RegistryError::NoQuorum { .. }
                | RegistryError::Consensus(_)
                | RegistryError::Contended { .. }
                | RegistryError::Timeout
                | RegistryError::NoLease
                | RegistryError::Remote { .. }
                | RegistryError::NoHost { .. }
        )
    }

    /// Whether the error is about what was asked (a factory, its arguments, a process that
    /// would not start): trying again elsewhere would fail alike.
    pub(crate) fn is_bad_input(&self) -> bool {
        matches!(
            self,
            RegistryError::UnknownFactory { .. }
                | RegistryError::BadArgs { .. }
                | RegistryError::StartFailed { .. }
        )
    }

    /// The error as it crosses to the node that asked for it.
    pub(crate) fn to_wire(&self) -> WireError {
        match self {
            RegistryError::UnknownFactory { factory, .. } => {
                WireError::UnknownFactory(factory.clone())
            }
            RegistryError::BadArgs { factory, error, .. } => {
                WireError::BadArgs { factory: factory.clone(), error: error.clone() }
            }
            RegistryError::StartFailed { reason, .. } => WireError::StartFailed(reason.clone()),
            other => WireError::Other(other.to_string()),
        }
    }
}

/// A host's refusal, as it travels back to the node that asked it to start a name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum WireError {
    UnknownFactory(String),
    BadArgs { factory: String, error: String },
    StartFailed(String),
    Other(String),
}

impl WireError {
    pub(crate) fn into_error(self, node: &str) -> RegistryError {
        let node = node.to_owned();
        match self {
            WireError::UnknownFactory(factory) => RegistryError::UnknownFactory { node, factory },
            WireError::BadArgs { factory, error } => {
                RegistryError::BadArgs { node, factory, error }
            }
            WireError::StartFailed(reason) => RegistryError::StartFailed { node, reason },
            WireError::Other(error) => RegistryError::Remote { node, error },
        }
    }
}

/// Why the registry did not start on a node. Nothing is left running.
#[derive(Debug, thiserror::Error)]
pub enum RegistryStartError {
    /// The lease settings do not make sense together.
    #[error(transparent)]
    Lease(#[from] LeaseConfigError),
    /// The registry already runs on this node.
    #[error("the registry already runs on node {0}")]
    AlreadyRunning(String),
    /// The node's Paxos service has stopped.
    #[error("the Paxos service of this node has stopped")]
    PaxosStopped,
    /// A connected peer runs the registry over a different acceptor set.
    #[error(transparent)]
    AcceptorMismatch(RegistryError),
}
