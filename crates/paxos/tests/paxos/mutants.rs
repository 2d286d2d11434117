//! Detection power, measured (issue 9, point 9): every mutant of `shoal_paxos::core::mutants` — a
//! one-line change that breaks one rule of the acceptor, the proposer or the rejoin — must
//! make one of the fast suites fail.
//!
//! Each mutant meets, in this order, until one of them fails:
//!
//! 1. the **scripted rule tests** (`acceptor`, `rejoin`, `proposer`, `regressions`,
//!    `membership`, `storage`, property tests included, with a fixed proptest seed), run by a
//!    child process of this very binary with `SHOAL_PAXOS_MUTANT` set: they take
//!    milliseconds, and a child keeps their panics and their proptest state away from this
//!    process;
//! 2. **random walks** (`super::walk`), on this test's own thread with the mutant selected for
//!    this thread only ([`mutants::with`]), so the tests running beside it see the real core:
//!    seeds from 0, at most [`WALKS`] of them or [`BUDGET`] of wall clock.
//!
//! A walk that panics (a core's assertion, a walk that never settles) kills the mutant too: the
//! suite would fail the same way. Today every mutant dies in the scripted tests or within 250
//! walks, and the whole check takes about five seconds; the simulations are not needed here,
//! and run against every mutant in `cargo xtask mutants`.
//!
//! **Why the fast suites, in the one build.** CI builds the test binary once, with every
//! mutant compiled in and off (the feature `mutants`), and switches them on one at a time at
//! run time; rebuilding per mutant would cost a minute or more each on the 2-core box, and the
//! whole suite under each mutant over a minute more (the simulations run to their counts). So
//! CI runs the fast suites, and `cargo xtask mutants`, outside CI, runs the whole binary
//! (simulations and the driver over TCP included) under each mutant.
//!
//! **The controls** are this binary's ordinary tests: the scripted tests and the random walks
//! of seeds 0–299,999 pass without a mutant, so a failure here is the mutant's doing. They are
//! not run twice.
//!
//! **Equivalent mutants** (no test can tell them from the real core) are not declared, so none
//! is excused here; the ones considered are listed in `src/mutants.rs`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::Command;
use std::time::{Duration, Instant};

use shoal_paxos::core::mutants::{self, Mutant};

use super::walk::violation_in_walk;

/// The scripted rule tests, as libtest filters (modules of this binary).
const SCRIPTED: [&str; 6] = [
    "paxos::acceptor::",
    "paxos::rejoin::",
    "paxos::proposer::",
    "paxos::regressions::",
    "paxos::membership::",
    "paxos::storage::",
];

/// The most random walks a mutant meets (every one of them passes without it).
const WALKS: u64 = 20_000;

/// The wall clock a mutant may take in the walks.
const BUDGET: Duration = Duration::from_secs(4);

/// What became of a mutant.
#[derive(Debug)]
enum Verdict {
    /// A suite failed: which, and how.
    Killed { suite: &'static str, how: String },
    /// Every suite passed: what ran.
    Survived { ran: String },
}

/// Runs the scripted tests in a child process with `mutant` on: the tests that failed.
fn scripted(mutant: Mutant) -> Option<Verdict> {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let output = Command::new(exe)
        .args(SCRIPTED)
        .args(["--test-threads", "2"])
        .env("SHOAL_PAXOS_MUTANT", mutant.name())
        // A property test that fails under a mutant must not write a regression seed into the
        // source tree, nor spend long shrinking.
        .env("PROPTEST_DISABLE_FAILURE_PERSISTENCE", "1")
        .env("PROPTEST_MAX_SHRINK_ITERS", "0")
        .env("PROPTEST_RNG_SEED", "1")
        .output()
        .expect("the test binary runs itself");
    if output.status.success() {
        return None;
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let failed: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("test ")?.strip_suffix(" ... FAILED"))
        .map(|name| name.trim_start_matches("paxos::"))
        .collect();
    let how = if failed.is_empty() { format!("exit {}", output.status) } else { failed.join(", ") };
    Some(Verdict::Killed { suite: "scripted", how })
}

/// The text of a caught panic.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_string());
    text.lines().next().unwrap_or_default().to_string()
}

/// Runs walks from seed 0 with `mutant` on for this thread until one fails, [`WALKS`] ran,
/// or `deadline` passed.
fn walks(mutant: Mutant, deadline: Instant) -> Verdict {
    let mut walked = 0;
    for seed in 0..WALKS {
        if Instant::now() >= deadline {
            break;
        }
        walked += 1;
        let walk = || mutants::with(mutant, || violation_in_walk(seed));
        let failure = match catch_unwind(AssertUnwindSafe(walk)) {
            Ok(None) => continue,
            Ok(Some(violation)) => violation.lines().next().unwrap_or_default().to_string(),
            Err(payload) => format!("panicked: {}", panic_text(&*payload)),
        };
        let how = format!("walk {seed}, after {walked} walks: {failure}");
        return Verdict::Killed { suite: "walk", how };
    }
    Verdict::Survived { ran: format!("the scripted tests and {walked} walks") }
}

/// Detection power (issue 9, point 9): every mutant of the acceptor, the proposer and the
/// rejoin makes a fast suite fail.
#[test]
fn every_mutant_is_killed_by_the_fast_suites() {
    let started = Instant::now();
    let mut survivors = Vec::new();
    for &mutant in Mutant::ALL {
        let at = Instant::now();
        let verdict = scripted(mutant).unwrap_or_else(|| walks(mutant, at + BUDGET));
        let (name, took) = (mutant.name(), at.elapsed().as_secs_f64());
        match verdict {
            Verdict::Killed { suite, how } => {
                eprintln!("{name:<28} killed in {took:.2} s by {suite}: {how}");
            }
            Verdict::Survived { ran } => {
                eprintln!("{name:<28} SURVIVED {took:.2} s of {ran}");
                survivors.push(name);
            }
        }
    }
    eprintln!("mutants: {} in {:.1} s", Mutant::ALL.len(), started.elapsed().as_secs_f64());
    assert!(survivors.is_empty(), "mutants no fast suite caught: {survivors:?}");
}
