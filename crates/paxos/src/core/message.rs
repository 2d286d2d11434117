//! The messages between proposers and acceptors (and between acceptors, to rejoin).
//!
//! All of them are serde types: the driver sends them as msgpack over the transport. Every
//! message names its key and ballot, so a reply that arrives late, twice or out of order is
//! matched to the round it belongs to or ignored.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::membership::Configuration;
use crate::core::{Ballot, Epoch, Incarnation, Lineage, NodeId, ProposerId};
use crate::error::PaxosError;
use crate::register::{Change, Key, Outcome, Register};
use crate::storage::Slot;

/// A proposer's own numbering of its requests, for forwarding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// Why an acceptor refused a prepare or an accept. The proposer learns from it; nothing changed
/// at the acceptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    /// A higher ballot was promised (the one given): another proposer is active on the key.
    Promised(Ballot),
    /// The accept counted a promise from an incarnation that has since lost its state.
    StaleIncarnation,
    /// The acceptor lost its state and has not rejoined yet: it does not vote.
    Recovering,
    /// The acceptor runs a newer configuration (this version) than the message's, or is no
    /// longer in its own; a [`Message::Configure`] with it follows.
    StaleConfiguration(u64),
    /// The ballot does not belong to the node that sent it, or is at the end of its range.
    BadBallot,
}

/// Everything the core sends. The first group goes to acceptors, the second to proposers; a
/// driver routes by [`Message::to_acceptor`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Phase 1a: promise to ignore ballots below `ballot`, and say what you accepted.
    Prepare {
        /// The register.
        key: Key,
        /// The proposer's new ballot.
        ballot: Ballot,
        /// The newest epoch the proposer knows: an acceptor of an older one learns that its
        /// epoch has ended.
        epoch: Epoch,
        /// The version of the configuration the proposer runs.
        configuration: u64,
    },
    /// Phase 2a: accept `register` at `ballot`.
    Accept {
        /// The register.
        key: Key,
        /// The ballot promised by a quorum (or the fast-path ballot promised with the last accept).
        ballot: Ballot,
        /// The value to accept.
        register: Register,
        /// Where `register` came from: its ancestors' ballots, parent first.
        lineage: Lineage,
        /// The promises this accept relies on: each acceptor with the incarnation it promised in.
        quorum: Vec<(NodeId, Incarnation)>,
        /// The version of the configuration the proposer runs.
        configuration: u64,
    },
    /// A configuration (an operator's change of the acceptor set, or an acceptor's answer to a
    /// proposer that runs an older one): acceptors and proposers take it if it is newer than
    /// theirs; an acceptor answers [`Message::Configured`].
    Configure {
        /// The configuration.
        configuration: Configuration,
    },
    /// An acceptor runs configuration `version` (or a newer one).
    Configured {
        /// The version it runs.
        version: u64,
        /// Whether it votes (a new acceptor rejoins first).
        voting: bool,
    },
    /// Asks an acceptor for the keys it holds, after `after` (the rewrite step of a change of
    /// the acceptor set).
    ListKeys {
        /// Resume after this key.
        after: Option<Key>,
    },
    /// A page of an acceptor's keys, in order.
    Keys {
        /// The keys.
        keys: Vec<Key>,
        /// Where the next page starts, if there is one.
        next: Option<Key>,
    },
    /// A rejoining acceptor asks what incarnation of it the others know (rejoin, step 1).
    Query {
        /// Matches the answers to this attempt.
        attempt: u64,
    },
    /// A rejoining acceptor announces its new incarnation and asks for the state (rejoin, step 2).
    Fence {
        /// Matches the answers to this attempt.
        attempt: u64,
        /// The new incarnation; accepts counting older promises of it are refused from now on.
        incarnation: Incarnation,
        /// Resume the state transfer after this key.
        after: Option<Key>,
    },
    /// A rejoining acceptor that found a majority of the set without state asks the others
    /// without state to promise never to join an epoch below `epoch` (founding, step 1).
    ProposeEpoch {
        /// Matches the answers to this attempt.
        attempt: u64,
        /// The epoch to found.
        epoch: Epoch,
    },
    /// A majority promised: the epoch starts, empty (founding, step 2). Only the acceptors
    /// listed, each still in the rejoin attempt it promised in, join it this way.
    StartEpoch {
        /// The epoch founded.
        epoch: Epoch,
        /// Each acceptor that promised, with the number it drew for its promise.
        members: Vec<(NodeId, u64)>,
    },
    /// Phase 1b: the promise, with the highest accepted value.
    Promise {
        /// The register.
        key: Key,
        /// The ballot promised.
        ballot: Ballot,
        /// The incarnation that promised; the accept must echo it.
        incarnation: Incarnation,
        /// The ballot of the value below (`Ballot::ZERO`: none yet).
        accepted: Ballot,
        /// The accepted value.
        register: Register,
        /// Where the accepted value came from: its ancestors' ballots, parent first.
        lineage: Lineage,
    },
    /// Phase 2b: accepted; also a promise of `ballot.successor()` (the fast path).
    Accepted {
        /// The register.
        key: Key,
        /// The ballot accepted.
        ballot: Ballot,
        /// The incarnation that accepted (and promised the successor ballot).
        incarnation: Incarnation,
        /// The newest incarnation of each other acceptor this one knows (its fences): the
        /// proposer counts no vote of an incarnation that has since been replaced.
        fences: Vec<(NodeId, Incarnation)>,
    },
    /// A prepare or accept was refused.
    Rejected {
        /// The register.
        key: Key,
        /// The ballot refused.
        ballot: Ballot,
        /// Why.
        reason: Rejection,
    },
    /// The answer to [`Message::Query`].
    QueryReply {
        /// The attempt answered.
        attempt: u64,
        /// The highest incarnation of the asker this acceptor knows.
        known: Incarnation,
        /// Whether the answering acceptor votes, and in which incarnation.
        standing: Standing,
    },
    /// The answer to [`Message::Fence`]: the fence is recorded, and here is a page of state.
    FenceReply {
        /// The attempt answered.
        attempt: u64,
        /// Slots in key order.
        slots: Vec<(Key, Slot)>,
        /// Where the next page starts, if there is one.
        next: Option<Key>,
        /// Whether the answering acceptor votes: only the pages of a voting one are copied.
        standing: Standing,
        /// The answering acceptor's fences, which the rejoining acceptor carries on, so that
        /// no incarnation is forgotten while acceptors restart one after another.
        fences: Vec<(NodeId, Incarnation)>,
    },
    /// The answer to [`Message::ProposeEpoch`].
    EpochReply {
        /// The founding attempt answered.
        attempt: u64,
        /// The epoch proposed.
        epoch: Epoch,
        /// If the acceptor promised: a number it drew for this promise, which
        /// [`Message::StartEpoch`] must name for it to join (so a copy that outlives the
        /// promise, or the acceptor's state, never applies).
        promised_in: Option<u64>,
        /// The answering acceptor's standing.
        standing: Standing,
    },
    /// A proposer hands a change to the key's designated proposer.
    Forward {
        /// The sending proposer (its run tells its requests apart from an earlier run's).
        origin: ProposerId,
        /// The sender's request, echoed in the result.
        id: RequestId,
        /// The register.
        key: Key,
        /// The change to run.
        change: Change,
        /// How long the sender still waits for the result.
        timeout: Duration,
        /// The run of the designated proposer this change is for: another run of it (one that
        /// restarted since, and cannot know whether its predecessor ran the change) refuses it
        /// with [`PaxosError::Misdirected`], so no copy is ever run by two runs.
        to_run: u64,
        /// 0 for the first copy; the sender sends again until the designated proposer
        /// acknowledges it.
        copy: u32,
    },
    /// The designated proposer has the forwarded change (sent for every copy received).
    ForwardAck {
        /// The proposer that forwarded the change.
        origin: ProposerId,
        /// The sender's request.
        id: RequestId,
    },
    /// The designated proposer's result for a forwarded change.
    ForwardResult {
        /// The proposer that forwarded the change; a later run of it ignores the result.
        origin: ProposerId,
        /// The sender's request.
        id: RequestId,
        /// What happened.
        result: Result<Outcome, PaxosError>,
    },
}

impl Message {
    /// Whether a proposer handles this message: all but those for acceptors, and
    /// [`Message::Configure`], which both take.
    pub fn to_proposer(&self) -> bool {
        !self.to_acceptor() || matches!(self, Message::Configure { .. })
    }

    /// Whether an acceptor handles this message. `FenceReply` and `QueryReply` go to the
    /// rejoining acceptor; [`Message::Configure`] goes to the proposer too.
    pub fn to_acceptor(&self) -> bool {
        matches!(
            self,
            Message::Prepare { .. }
                | Message::Accept { .. }
                | Message::Query { .. }
                | Message::Fence { .. }
                | Message::QueryReply { .. }
                | Message::FenceReply { .. }
                | Message::ProposeEpoch { .. }
                | Message::EpochReply { .. }
                | Message::StartEpoch { .. }
                | Message::ListKeys { .. }
                | Message::Configure { .. }
        )
    }
}

/// Whether an acceptor votes, as it tells a rejoining one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Standing {
    /// It votes, in this incarnation.
    Voting(Incarnation),
    /// It has no state and rejoins; it never joins an epoch below `epoch`.
    Recovering {
        /// The newest epoch it knows or promised.
        epoch: Epoch,
    },
}

impl Standing {
    /// The epoch the acceptor votes in or has promised.
    pub fn epoch(&self) -> Epoch {
        match self {
            Standing::Voting(incarnation) => incarnation.epoch,
            Standing::Recovering { epoch } => *epoch,
        }
    }
}
