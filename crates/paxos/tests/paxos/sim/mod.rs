//! Randomised simulations checked for linearisability.
//!
//! Each test runs thousands of seeded schedules (3–5 acceptors, 2–3 proposers, two keys, a
//! dozen client operations, message loss, duplication, reordering, partitions, crashes). A
//! failing schedule names its seed and prints the offending key's history; `SHOAL_PAXOS_SEED=<seed>`
//! runs that seed alone in every simulation test, and `SHOAL_PAXOS_TRACE=1` also prints every
//! message delivered.

mod node;
mod schedule;

pub(crate) use schedule::RegisterModel;

use node::Setup;
use schedule::{Faults, Report, run};

/// How many schedules each simulation test runs.
const SCHEDULES: u64 = 2_500;

/// Runs `SCHEDULES` seeds from `first` (or only `SHOAL_PAXOS_SEED`), fails on the first
/// violation, naming the seed, and returns (operations, completed operations).
fn run_many(
    name: &str,
    first: u64,
    setup: impl Fn(u64) -> Setup,
    faults: Faults,
) -> (usize, usize) {
    let seeds: Vec<u64> = match std::env::var("SHOAL_PAXOS_SEED") {
        Ok(seed) => vec![seed.parse().expect("SHOAL_PAXOS_SEED is a number")],
        Err(_) => (first..first + SCHEDULES).collect(),
    };
    let (mut ops, mut completed) = (0, 0);
    let mut failures = std::collections::BTreeMap::new();
    let mut steps = [0usize; 3];
    for seed in seeds {
        let report: Report = run(seed, setup(seed), faults);
        if let Some(violation) = report.violation {
            panic!(
                "{name}: seed {seed} is not linearisable; replay with \
                 SHOAL_PAXOS_SEED={seed} cargo test -p shoal-paxos --test paxos {name}\n{violation}"
            );
        }
        ops += report.ops;
        completed += report.completed;
        steps[report.membership_steps] += 1;
        for (kind, count) in report.failures {
            *failures.entry(kind).or_insert(0) += count;
        }
    }
    eprintln!(
        "{name}: {ops} operations, {completed} completed, no violation; failed: {failures:?}"
    );
    if steps[1] + steps[2] > 0 {
        eprintln!("{name}: schedules by membership steps completed (0, 1, 2): {steps:?}");
    }
    (ops, completed)
}

fn setup(seed: u64, durable: bool, forwarding: bool) -> Setup {
    Setup {
        acceptors: 3 + (seed % 3) as usize,
        proposers: 2 + (seed / 3 % 2) as usize,
        durable,
        forwarding,
        forget_promises: false,
        membership: false,
    }
}

/// Safety (CASPaxos §2, linearisability per key) under loss, duplication, reordering and
/// partitions, with durable acceptors that crash and restart at any time.
#[test]
fn durable_acceptors_crashing_anywhere_stay_linearisable() {
    let faults = Faults { crashes: true, partitions: true, drop: 0.05, duplicate: 0.05 };
    run_many("durable_acceptors", 0, |seed| setup(seed, true, false), faults);
}

/// Safety when acceptors lose their state (memory stores): one at a time, each rejoining
/// before the next crash (the crate docs, "Losing state").
#[test]
fn acceptors_losing_state_rejoin_without_breaking_linearisability() {
    let faults = Faults { crashes: true, partitions: true, drop: 0.05, duplicate: 0.05 };
    run_many("lost_state", 1_000_000, |seed| setup(seed, false, false), faults);
}

/// Membership (the `membership` module's procedure): an acceptor is added, every key
/// rewritten, another removed, every key rewritten, while clients run and nodes crash.
#[test]
fn changing_the_acceptor_set_stays_linearisable() {
    let faults = Faults { crashes: true, partitions: true, drop: 0.05, duplicate: 0.05 };
    let membership = |seed| Setup { membership: true, ..setup(seed, true, seed % 2 == 0) };
    run_many("membership", 4_000_000, membership, faults);
}

/// Safety with contention handled by forwarding to the designated proposer, on a lossier
/// network.
#[test]
fn forwarding_under_contention_stays_linearisable() {
    let faults = Faults { crashes: true, partitions: true, drop: 0.15, duplicate: 0.1 };
    run_many("forwarding", 2_000_000, |seed| setup(seed, true, true), faults);
}

/// Safety and progress on a network that only reorders and delays: no fault, so nearly every
/// operation completes.
#[test]
fn a_clean_network_completes_nearly_everything() {
    let faults = Faults { crashes: false, partitions: false, drop: 0.0, duplicate: 0.0 };
    let (ops, completed) =
        run_many("clean", 3_000_000, |seed| setup(seed, true, seed % 2 == 0), faults);
    // The rest end `Indeterminate`: two proposers racing on a key, one's accept adopted by
    // the other in a way the first cannot see.
    assert!(completed * 100 >= ops * 90, "only {completed} of {ops} operations completed");
}

/// The checker catches a planted bug: acceptors whose store acknowledges a promise without
/// making it durable (the promise is lost in a crash while the acceptor keeps its incarnation,
/// so it votes again as if it had never promised). Some seed of a bounded search must produce
/// a history that is not linearisable.
#[test]
fn the_checker_catches_acceptors_that_forget_promises() {
    let faults = Faults { crashes: true, partitions: false, drop: 0.02, duplicate: 0.0 };
    let planted = |_seed: u64| Setup {
        acceptors: 3,
        proposers: 3,
        durable: true,
        forwarding: false,
        forget_promises: true,
        membership: false,
    };
    let found =
        (0..SEARCH_LIMIT).find(|&seed| run(seed, planted(seed), faults).violation.is_some());
    let seed = found.expect("no seed in the bounded search exposed the planted bug");
    eprintln!("planted bug: first caught by seed {seed} of at most {SEARCH_LIMIT}");
    // The control: the same schedules with honest stores are linearisable, so it is the bug
    // that the checker caught.
    let honest = |seed| Setup { forget_promises: false, ..planted(seed) };
    for seed in 0..=seed {
        assert!(run(seed, honest(seed), faults).violation.is_none(), "seed {seed} without the bug");
    }
}

/// How many seeds the planted-bug search may try.
const SEARCH_LIMIT: u64 = 5_000;

/// Replay: the same seed gives the same run, event for event.
#[test]
fn a_seed_replays_the_same_run() {
    let faults = Faults { crashes: true, partitions: true, drop: 0.05, duplicate: 0.05 };
    let a = run(42, setup(42, false, true), faults);
    let b = run(42, setup(42, false, true), faults);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!((a.ops, a.completed), (b.ops, b.completed));
}
