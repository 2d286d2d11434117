//! The acceptor set, its quorums, and how to change it safely.
//!
//! A quorum is a majority of an explicit set of acceptors: `n / 2 + 1` of `n`. Every proposer
//! and acceptor is configured with the set; they do not discover it.
//!
//! # Changing the set
//!
//! Two majorities of one set always share an acceptor, and that shared acceptor is what carries
//! a chosen value from one round to the next. While a change is rolled out, proposers run with
//! the old set and the new one at the same time, so every majority of either set must share an
//! acceptor with every majority of the other. That holds when the sets differ by **exactly one
//! acceptor** ([`is_single_step`]): a majority of `n + 1` acceptors holds at least `n / 2 + 1`
//! of the old `n`, which meets every old majority, and symmetrically when one is removed. A jump
//! of two or more acceptors at once does not have that property, and neither does a second step
//! taken while values chosen under the first-but-one set exist only on its majorities.
//!
//! The procedure, one acceptor at a time (it is the CASPaxos paper's, section 2.3, in the
//! "majority of an explicit set" form):
//!
//! 1. To **add** acceptor `x`: start `x` with an empty store. It rejoins like any acceptor that
//!    has no state (it fences and copies the others' slots) before it votes.
//! 2. Give every proposer (and every acceptor, for rejoining) the new set as the next
//!    [`Configuration`] version,
//!    [`Proposer::set_configuration`](super::Proposer::set_configuration) /
//!    [`Acceptor::install`](super::Acceptor::install), and wait until a majority of the old set
//!    and a majority of the new set run it. Until all have it, old and new majorities are
//!    mixed, which the single-step rule makes safe; and since an acceptor refuses prepares and
//!    accepts of an older version (and sends its configuration back), a proposer that missed
//!    the change cannot complete a round on the old set once a majority of it runs the new
//!    one — so it can never count a majority disjoint from the current set, however many
//!    changes it missed.
//! 3. When every proposer runs the new set, **rewrite every key** with an identity change
//!    ([`Change::Read`](crate::Change::Read)) through the new set. Afterwards each key's current
//!    value is accepted by a majority of the new set, so nothing depends on majorities of the
//!    old set any more.
//! 4. Only then take the next step. To **remove** acceptor `y`, do 2–3 with the set without `y`,
//!    then stop `y`.
//!
//! The rewrite in step 3 is what makes steps compose: without it, a value chosen under the set
//! two steps back may sit on acceptors that are no majority of the current set (the test
//! `membership::skipping_the_rewrite_can_lose_a_value` shows it happen).
//!
//! The handle runs this procedure: [`Paxos::add_acceptor`](crate::Paxos::add_acceptor) and
//! [`Paxos::remove_acceptor`](crate::Paxos::remove_acceptor). An
//! acceptor added rejoins from `n - majority + 1` voting acceptors of the `n - 1` others, so
//! adding a fourth to three works with one of the three down.

use serde::{Deserialize, Serialize};

use crate::core::NodeId;

/// An acceptor set and its version. Every change of the set is a new, higher version;
/// prepares and accepts carry the version their proposer runs, and an acceptor that runs a
/// newer one refuses them ([`Rejection::StaleConfiguration`](super::Rejection)) and sends its
/// configuration back ([`Message::Configure`](super::Message)), so a proposer that missed a
/// change learns it instead of counting a majority of a set that is no longer the cluster's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Configuration {
    /// Grows with every change of the set.
    pub version: u64,
    /// The acceptors.
    pub acceptors: Vec<NodeId>,
}

/// The number of acceptors that make a quorum of `acceptors` of them: a majority.
pub fn majority(acceptors: usize) -> usize {
    acceptors / 2 + 1
}

/// Whether moving from `old` to `new` is one safe step: the sets differ by exactly one
/// acceptor, added or removed (duplicates in either list are ignored).
pub fn is_single_step(old: &[NodeId], new: &[NodeId]) -> bool {
    use std::collections::BTreeSet;
    let old: BTreeSet<_> = old.iter().collect();
    let new: BTreeSet<_> = new.iter().collect();
    old.symmetric_difference(&new).count() == 1 && !new.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rule: any two majorities of one set intersect, and majorities of sets one step apart do too.
    #[test]
    fn single_steps_keep_majorities_intersecting() {
        for n in 1..8usize {
            // Old set 0..n, new set 0..=n (one added). The worst case for the intersection is
            // an old majority at the low end and a new majority at the high end.
            let old_majority: Vec<usize> = (0..majority(n)).collect();
            let new_majority: Vec<usize> = (n + 1 - majority(n + 1)..=n).collect();
            assert!(old_majority.iter().any(|a| new_majority.contains(a)), "n = {n}");
        }
        let ids = |v: &[u64]| v.iter().map(|&i| NodeId(i)).collect::<Vec<_>>();
        assert!(is_single_step(&ids(&[1, 2, 3]), &ids(&[1, 2, 3, 4])));
        assert!(is_single_step(&ids(&[1, 2, 3]), &ids(&[1, 3])));
        assert!(!is_single_step(&ids(&[1, 2, 3]), &ids(&[1, 4, 3, 5])));
        assert!(!is_single_step(&ids(&[1, 2, 3]), &ids(&[2, 3, 4])));
        assert!(!is_single_step(&ids(&[1]), &ids(&[])));
    }
}
