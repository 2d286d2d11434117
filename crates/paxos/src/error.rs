//! The crate's errors, one enum per family of operations. [`PaxosError`] and
//! [`BeginEpochError`] are shared by the handle and the core, which report a subset of their
//! variants (each variant says who reports it).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::core::Incarnation;
use crate::register::{Change, Key};

/// Why a change did not complete. Each variant says whether the change may still have taken
/// effect ([`PaxosError::maybe_applied`]): when it may, a later read tells.
///
/// Every operation on keys of [`Paxos`](crate::Paxos) fails with it; the core's proposer
/// completes a change with it ([`Completion`](crate::core::Completion)), and proposers answer
/// forwarded changes with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum PaxosError {
    /// Fewer than a majority of the acceptors answered before the request's deadline.
    #[error("no quorum of acceptors answered (change maybe applied: {maybe_applied})")]
    NoQuorum {
        /// True once an accept was sent: a minority may have stored it, and a later round can
        /// still complete it.
        maybe_applied: bool,
    },
    /// A quorum answered, but contention kept every round from completing before the deadline.
    #[error("timed out under contention (change maybe applied: {maybe_applied})")]
    Timeout {
        /// As for [`PaxosError::NoQuorum`]; always true for a forwarded change.
        maybe_applied: bool,
    },
    /// An accept for the change was sent but not confirmed, and a later round found another
    /// write chosen on top of it: the change may or may not have taken effect before that write.
    #[error(
        "another write was chosen after this change's unconfirmed accept (change maybe applied)"
    )]
    Indeterminate,
    /// Between proposers only: a forward reached a run of the designated proposer other than
    /// the one it was meant for, which did not run it (the run it was meant for may have). No
    /// change completes with it: the forwarding proposer reports
    /// [`PaxosError::DesignatedDown`], or runs a read itself.
    #[error("the forward reached another run of the designated proposer, which did not run it")]
    Misdirected,
    /// The proposer this change was forwarded to went down before it answered; it may have run
    /// the change.
    #[error("the designated proposer went down before answering (change maybe applied)")]
    DesignatedDown,
    /// This node's proposer, or the designated proposer the change was forwarded to, held its
    /// maximum of requests; nothing was applied. (The core's own proposer refuses such a change
    /// at once, handing it back: [`ProposeError::Overloaded`].)
    #[error("the proposer is overloaded; nothing was applied")]
    Overloaded,
    /// The Paxos service on this node has stopped ([`Paxos::stop`](crate::Paxos::stop)).
    /// Reported by the handle only, never by the core.
    #[error("the Paxos service on this node has stopped (change maybe applied: {maybe_applied})")]
    Stopped {
        /// True if the change had been handed to the proposer.
        maybe_applied: bool,
    },
    /// [`Paxos::acceptors`](crate::Paxos::acceptors) only: this node does not know the names of
    /// every acceptor of its configuration yet (it learns them from the transport as it hears
    /// of them), so a list of names would be short. Nothing was changed.
    #[error("{named} of the {acceptors} acceptors are known by name on this node")]
    UnnamedAcceptors {
        /// The configuration's acceptors.
        acceptors: usize,
        /// How many of them this node can name.
        named: usize,
    },
}

impl PaxosError {
    /// Whether the change may have taken effect despite the error.
    pub fn maybe_applied(&self) -> bool {
        match self {
            PaxosError::NoQuorum { maybe_applied }
            | PaxosError::Timeout { maybe_applied }
            | PaxosError::Stopped { maybe_applied } => *maybe_applied,
            PaxosError::Indeterminate | PaxosError::DesignatedDown => true,
            PaxosError::Overloaded | PaxosError::UnnamedAcceptors { .. } => false,
            PaxosError::Misdirected => true,
        }
    }
}

/// Why founding a new epoch ([`Paxos::begin_epoch`](crate::Paxos::begin_epoch),
/// [`Acceptor::begin_epoch`](crate::core::Acceptor::begin_epoch)) did nothing. Nothing was
/// changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum BeginEpochError {
    /// The acceptor votes: its state, and its epoch's, are intact.
    #[error("the acceptor votes in incarnation {0}; its epoch goes on")]
    Voting(Incarnation),
    /// This node is not in the acceptor set (reported by the handle only).
    #[error("this node is not an acceptor")]
    NotAnAcceptor,
    /// The service on this node has stopped (reported by the handle only).
    #[error("the Paxos service on this node has stopped")]
    Stopped,
}

/// A change the proposer refused to take; nothing was sent.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProposeError {
    /// The proposer already holds its maximum of requests; the change is handed back.
    #[error("the proposer holds its maximum of {limit} requests")]
    Overloaded {
        /// The key, handed back.
        key: Key,
        /// The change, handed back (boxed: it can be large).
        change: Box<Change>,
        /// The configured maximum.
        limit: usize,
    },
}

/// A storage failure. The acceptor that saw it did not give the vote it was recording.
#[derive(Debug, Error)]
pub enum StorageError {
    /// The file system failed.
    #[error("storage I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// A record could not be encoded.
    #[error("cannot encode a storage record: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// A record in the middle of the log does not decode (a torn tail is not an error: it is cut).
    #[error("storage record at byte {offset} is corrupt: {reason}")]
    Corrupt {
        /// Where the record starts in the log.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// An earlier write failed and could not be undone: the log could not be cut back to its
    /// last acknowledged record, or a compaction failed while putting the rewritten log in
    /// place. The store writes nothing more until it is reopened, which reads back every
    /// acknowledged record; this write was not made, and the store's state is as before.
    #[error("the store refuses writes until it is reopened: {cause}")]
    Poisoned {
        /// The failure that could not be undone.
        cause: String,
    },
    /// A record is larger than a frame can hold (its length is a `u32`); nothing was written.
    #[error("a storage record of {bytes} bytes is too large for a frame")]
    RecordTooLarge {
        /// The record's encoded size.
        bytes: usize,
    },
}
