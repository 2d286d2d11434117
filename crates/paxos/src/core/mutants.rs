//! Mutants: one-line changes to the protocol's rules, each switched on by the test harness to
//! measure what the test suites catch (issue 9, point 9). **Test-only.**
//!
//! Each [`Mutant`] breaks one rule of the acceptor, the proposer or the rejoin, at one place in
//! the code marked `mutated(Mutant::...)`. Without the cargo feature `mutants` (every build but
//! the paxos test binary's, which enables it through a dev-dependency on its own crate),
//! `mutated` is a constant `false` that the compiler removes, and this module is private.
//!
//! With the feature, a mutant is on when it is selected:
//!
//! - on the current thread, by [`with`] (the in-binary check: a walk or a simulation runs on
//!   the test's own thread, so the tests running beside it are not touched), or else
//! - for the whole process, by the environment variable `SHOAL_PAXOS_MUTANT=<name>`, read once
//!   (`cargo xtask mutants` runs the whole test binary under each mutant in turn).
//!
//! Reading the environment here does not make the core depend on it: the read is compiled
//! only with the test-only feature, and a mutant selected is a test's input like a seed.
//!
//! Every mutant declared here must be caught: the test binary's
//! `every_mutant_is_killed_by_the_fast_suites` fails naming any that its scripted tests and
//! random walks let through. **Equivalent mutants** — changes no test could tell from the real
//! core — are not declared; those considered:
//!
//! - *The fast path on retries* (dropping the `request.proposal.is_none()` filter in
//!   `Proposer::start_round`): a key's fast-path promise is removed whenever its round is
//!   refused or times out, and added only when a round completes, which finishes the change at
//!   the front of the key's queue. So a change that already proposed (a retry) never finds
//!   one; the filter is a guard, not a rule a test can see.
//! - *Counting a vote of a replaced incarnation in `Proposer::counts` alone*: every vote
//!   `counts` lets through is filtered again by the round's own check against the newest
//!   incarnations and epoch (the `retain` after each insert), so no rule changes — only the
//!   `Ignored` reason, and whether the stale acceptor is recorded as having answered
//!   (`NoQuorum` versus `Timeout` for a change that times out). Not declared, as no rule is
//!   broken; `replaced-votes-kept` breaks the check that holds the rule.

// Without the feature the module is private and only `mutated` is used.
#![cfg_attr(not(feature = "mutants"), allow(unreachable_pub, dead_code))]

/// Declares the mutants: the enum, every variant in order, and each one's name.
macro_rules! mutants {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal,)*) => {
        /// A one-line change that breaks one rule of the protocol (see the module docs).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Mutant {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Mutant {
            /// Every mutant, in declaration order.
            pub const ALL: &'static [Mutant] = &[$(Mutant::$variant),*];

            /// Its name, as `SHOAL_PAXOS_MUTANT` and `cargo xtask mutants` spell it.
            pub fn name(self) -> &'static str {
                match self {
                    $(Mutant::$variant => $name,)*
                }
            }
        }
    };
}

mutants! {
    // The acceptor's votes (CASPaxos §2, phase 1b and 2b).
    /// Acceptor: a prepare below the promise is answered with a promise, not refused.
    PrepareBelowPromise = "prepare-below-promise",
    /// Acceptor: an accept below the promise is accepted (breaks phase 2b).
    AcceptBelowPromise = "accept-below-promise",
    /// Acceptor: a promise is answered but never saved (save before reply: the acceptor that
    /// forgets the promises it acknowledged).
    PromiseNotSaved = "promise-not-saved",
    /// Acceptor: an acceptance is answered but never saved (save before reply).
    AcceptNotSaved = "accept-not-saved",
    /// Acceptor: a reply leaves before the writes it follows are durable (persist, then
    /// reply): a crash between the two forgets a vote that a proposer counted.
    ReplyBeforePersist = "reply-before-persist",
    /// Acceptor: accepting ballot `b` promises `b`, not its successor, though the proposer
    /// takes the fast path at the successor.
    NoSuccessorPromise = "no-successor-promise",
    /// Acceptor: an accept that counted a promise of a fenced (replaced) incarnation of
    /// another acceptor is accepted.
    FenceCheckOff = "fence-check-off",
    /// Acceptor: an accept that counted this acceptor's own promise from an earlier life is
    /// accepted.
    OwnIncarnationUnchecked = "own-incarnation-unchecked",
    /// Acceptor: an acceptor without state (rejoining) votes.
    RecoveringVotes = "recovering-votes",
    /// Acceptor: a prepare or accept of an older configuration is voted on.
    StaleConfigurationVoted = "stale-configuration-voted",
    // The rejoin ("Losing state" in the crate docs).
    /// Rejoin: a fence is answered with the slots but not recorded.
    FenceNotSaved = "fence-not-saved",
    /// Rejoin: the copied slots are dropped (a rejoin that copies nothing).
    RejoinCopiesNoSlots = "rejoin-copies-no-slots",
    /// Rejoin: the others' fences are not carried over.
    RejoinCopiesNoFences = "rejoin-copies-no-fences",
    /// Rejoin: the merged promise is the lower of the two, not the higher.
    MergedPromiseMin = "merged-promise-min",
    /// Rejoin: the merged value is the last one copied, not the one with the higher ballot.
    MergedValueNotHighest = "merged-value-not-highest",
    /// Rejoin: every rejoin takes life 1, so incarnations never grow.
    IncarnationsNeverGrow = "incarnations-never-grow",
    /// Rejoin: the pages of an acceptor without state are copied, and it counts as one of
    /// the voters copied from.
    NonVoterPagesCopied = "non-voter-pages-copied",
    /// Rejoin: one voting acceptor fewer than `n - majority + 1` is enough to copy from.
    RejoinQuorumTooSmall = "rejoin-quorum-too-small",
    /// Rejoin: every answer to the query counts as a voter's, so a rejoin starts copying with
    /// too few voters.
    NonVotersCountForRejoin = "non-voters-count-for-rejoin",
    // Epochs ("Losing state", **Epochs**).
    /// Epochs: a voting acceptor promises a new epoch (and so gives up its state to it).
    VoterPromisesEpoch = "voter-promises-epoch",
    /// Epochs: an acceptor that sees a newer epoch keeps voting in its own, or (without
    /// state) keeps accepting older epochs.
    NewerEpochIgnored = "newer-epoch-ignored",
    /// Epochs: a founder starts its epoch with one promise fewer than a majority.
    FoundingWithoutMajority = "founding-without-majority",
    // The proposer.
    /// Proposer: the promises' ballots are ignored, so the change applies to the value of
    /// whichever promise sorts last, not the one accepted at the highest ballot.
    AcceptedBallotsIgnored = "accepted-ballots-ignored",
    /// Proposer: a round accepts with one promise fewer than a majority.
    PromiseQuorumTooSmall = "promise-quorum-too-small",
    /// Proposer: a change completes with one acceptance fewer than a majority.
    AcceptQuorumTooSmall = "accept-quorum-too-small",
    /// Proposer: the fast path reuses the ballot just accepted, with a new value (one
    /// ballot, two values).
    FastBallotReused = "fast-ballot-reused",
    /// Proposer: the fences an `Accepted` carries are ignored.
    AcceptedFencesIgnored = "accepted-fences-ignored",
    /// Proposer: acceptances of an incarnation since replaced still count.
    ReplacedVotesKept = "replaced-votes-kept",
    /// Proposer: a forward meant for another run of this proposer is run.
    ForwardRunUnchecked = "forward-run-unchecked",
    /// Proposer: a duplicated forward is run again.
    ForwardDedupeOff = "forward-dedupe-off",
    // At most once (the crate docs, "At most once").
    /// Proposer: a retried change is applied afresh to whatever the acceptors hold, as if it
    /// had never proposed a value.
    RetryAppliesAgain = "retry-applies-again",
    /// Proposer: a value that descends from one of the change's own proposals is not seen as
    /// holding the change.
    AncestorsNotMine = "ancestors-not-mine",
}

#[cfg(feature = "mutants")]
mod selection {
    use std::cell::Cell;
    use std::sync::OnceLock;

    use super::Mutant;

    thread_local! {
        /// The mutant selected on this thread by [`with`](super::with).
        static ON_THREAD: Cell<Option<Mutant>> = const { Cell::new(None) };
    }

    /// The variable that selects a mutant for the whole process.
    pub(super) const VARIABLE: &str = "SHOAL_PAXOS_MUTANT";

    /// The mutant on now: this thread's, or else the process's.
    pub(super) fn selected() -> Option<Mutant> {
        ON_THREAD.get().or_else(from_environment)
    }

    fn from_environment() -> Option<Mutant> {
        static SELECTED: OnceLock<Option<Mutant>> = OnceLock::new();
        *SELECTED.get_or_init(|| {
            let name = std::env::var(VARIABLE).ok().filter(|name| !name.is_empty())?;
            // A name that selects nothing would let every suite pass as if it had survived.
            let mutant = Mutant::from_name(&name);
            let names: Vec<_> = Mutant::ALL.iter().map(|m| m.name()).collect();
            Some(mutant.unwrap_or_else(|| panic!("{VARIABLE}={name}: not one of {names:?}")))
        })
    }

    /// Selects `mutant` on this thread until dropped (also when the closure panics).
    pub(super) struct Selected(Option<Mutant>);

    impl Selected {
        pub(super) fn new(mutant: Mutant) -> Selected {
            Selected(ON_THREAD.replace(Some(mutant)))
        }
    }

    impl Drop for Selected {
        fn drop(&mut self) {
            ON_THREAD.set(self.0);
        }
    }
}

#[cfg(feature = "mutants")]
impl Mutant {
    /// The mutant of this name, if there is one.
    pub fn from_name(name: &str) -> Option<Mutant> {
        Mutant::ALL.iter().copied().find(|m| m.name() == name)
    }
}

/// Runs `f` with `mutant` on for this thread only (it wins over `SHOAL_PAXOS_MUTANT`).
#[cfg(feature = "mutants")]
pub fn with<T>(mutant: Mutant, f: impl FnOnce() -> T) -> T {
    let _selected = selection::Selected::new(mutant);
    f()
}

/// Whether `mutant` is on. Without the feature: never, at no cost.
#[cfg(not(feature = "mutants"))]
#[inline(always)]
pub(crate) const fn mutated(_mutant: Mutant) -> bool {
    false
}

/// Whether `mutant` is on: selected on this thread, or for the process.
#[cfg(feature = "mutants")]
pub(crate) fn mutated(mutant: Mutant) -> bool {
    selection::selected() == Some(mutant)
}
