//! Identities and ballots: who is speaking, and in which round.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A node of the cluster, as the core knows it: an opaque number chosen by the driver.
///
/// The core never interprets it beyond equality and order (order breaks ties between ballots).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// One run of a proposer: its node and a number that is different for every start of it.
///
/// Ballots carry it so that a proposer that restarts (and forgets its ballot counter) can never
/// reuse a ballot it used before with a different value: one ballot, one value, is the invariant
/// Paxos is built on. The driver draws a new one at every start of the service (the wall clock
/// in microseconds, kept increasing); the simulation a random number.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct ProposerId {
    /// The node the proposer runs on; messages from it must come from this node.
    pub node: NodeId,
    /// Different for every start of the proposer on that node.
    pub run: u64,
}

/// A life of the cluster's state: a new epoch starts only when a majority of the acceptors have
/// lost their state (see the crate docs, "Losing state"), and everything before it is gone.
///
/// Ordered by `number`, then `nonce`. A founder numbers a new epoch above every epoch it saw
/// (and above its configured floor, a wall-clock reading in the driver, so numbers grow across
/// full restarts), and draws the nonce at random, so two foundings never make the same epoch.
/// `Epoch::default()` is the epoch before any founding.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Epoch {
    /// Grows from epoch to epoch: the first half of a fencing token that survives epochs.
    pub number: u64,
    /// Tells apart two foundings that chose the same number.
    pub nonce: u64,
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}~{:x}", self.number, self.nonce & 0xffff)
    }
}

/// The life of an acceptor's state: a new one each time an acceptor rejoins after losing it.
///
/// Ordered by epoch first. Within an epoch, `life` grows with every rejoin of the acceptor; the
/// acceptors that found an epoch start it at life 0, and a rejoin never takes 0.
///
/// An acceptor sends its incarnation with every promise, and a proposer echoes the incarnations
/// of the promises it counted in its accept; an accept that counted a promise of an older
/// incarnation is refused, and a proposer counts no vote of an incarnation it knows was replaced.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Incarnation {
    /// The epoch the acceptor votes in.
    pub epoch: Epoch,
    /// The acceptor's life within the epoch.
    pub life: u64,
}

impl Incarnation {
    /// Life `life` of `epoch`.
    pub const fn new(epoch: Epoch, life: u64) -> Self {
        Incarnation { epoch, life }
    }
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.epoch, self.life)
    }
}

/// Where a value came from: the ballots of its ancestors in its key's history, parent first,
/// at most [`Lineage::MAX`] of them.
///
/// Each accepted value was computed from the value accepted at its parent's ballot, so a key's
/// values form a chain. A proposer retrying a change whose accept went unconfirmed reads the
/// current value's lineage: if one of its own attempts is an ancestor, the value holds the
/// change; if the lineage reaches a ballot older than the change's first attempt without
/// meeting one, it does not. Only a chain longer than the lineage leaves the change's fate
/// unknown ([`PaxosError::Indeterminate`](crate::PaxosError::Indeterminate)).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lineage(Vec<Ballot>);

impl Lineage {
    /// The most ancestors a lineage keeps: deep enough that several proposers building on
    /// each other's unconfirmed values rarely hide one of them.
    pub const MAX: usize = 6;

    /// The lineage of a value computed from the one accepted at `parent`, whose own lineage
    /// is `parent_lineage` (for a value computed from the empty register, `Ballot::ZERO` and
    /// an empty lineage).
    pub fn child_of(parent: Ballot, parent_lineage: &Lineage) -> Lineage {
        let mut ballots = Vec::with_capacity(Self::MAX);
        ballots.push(parent);
        ballots.extend(parent_lineage.0.iter().take(Self::MAX - 1).copied());
        Lineage(ballots)
    }

    /// A lineage of these ancestors, parent first (cut to [`Lineage::MAX`]).
    pub fn from_ancestors(mut ancestors: Vec<Ballot>) -> Lineage {
        ancestors.truncate(Self::MAX);
        Lineage(ancestors)
    }

    /// The ancestors, parent first.
    pub fn ancestors(&self) -> &[Ballot] {
        &self.0
    }

    /// The parent's ballot (`Ballot::ZERO` if none is known).
    pub fn parent(&self) -> Ballot {
        self.0.first().copied().unwrap_or(Ballot::ZERO)
    }
}

/// A Paxos round number: a counter, with the proposer breaking ties.
///
/// Ordered by counter first, so a proposer that learns of a higher counter can always pick a
/// higher ballot.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Ballot {
    /// Grows with every round a proposer starts.
    pub counter: u64,
    /// Who owns this ballot; no other proposer (nor another run of this one) ever uses it.
    pub proposer: ProposerId,
}

impl Ballot {
    /// The ballot below every real one: nothing promised, nothing accepted.
    pub const ZERO: Ballot =
        Ballot { counter: 0, proposer: ProposerId { node: NodeId(0), run: 0 } };

    /// The next ballot of the same proposer: what an acceptor promises when it accepts this one,
    /// so that the proposer's next write of the key needs no prepare (the fast path).
    ///
    /// `None` at the end of the counter's range, which a proposer never reaches honestly.
    pub fn successor(self) -> Option<Ballot> {
        Some(Ballot { counter: self.counter.checked_add(1)?, proposer: self.proposer })
    }
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}:{}", self.counter, self.proposer.node, self.proposer.run)
    }
}
