//! Plumtree on HyParView at 1,000 nodes: reliability, relative message redundancy (RMR) and
//! last delivery hop (LDH) as defined in the Plumtree paper (§4), with no failures and with
//! 20% and 40% of the nodes crashed at once, as in its failure experiments.

use std::time::Duration;

use proptest::prelude::*;
use shoal_broadcast::simulation::{Report, Scenario, run};

/// The seed of the 1,000-node scenarios. Change it to explore; the failure message of a
/// test names the seed it ran with.
const SEED: u64 = 1;

/// Runs `scenario`, printing its figures (visible with `--nocapture`).
fn run_and_print(scenario: &Scenario) -> Report {
    let started = std::time::Instant::now();
    let report = run(scenario);
    println!(
        "seed {} nodes {} crashed {} ({:?} wall): stable reliability {} rmr {:.4} ldh {}",
        report.seed,
        report.nodes,
        report.crashed,
        started.elapsed(),
        report.stable.reliability,
        report.stable.rmr,
        report.stable.ldh
    );
    for (index, broadcast) in report.after_crash.iter().enumerate() {
        println!(
            "  broadcast {} after the crash: reliability {:.4} ({} of {}) rmr {:.4} ldh {}",
            index + 1,
            broadcast.reliability,
            broadcast.delivered,
            broadcast.live,
            broadcast.rmr,
            broadcast.ldh
        );
    }
    if let Some(broadcast) = &report.after_restart {
        println!(
            "  broadcast after the restart: reliability {:.4} ({} of {}) rmr {:.4} ldh {}",
            broadcast.reliability,
            broadcast.delivered,
            broadcast.live,
            broadcast.rmr,
            broadcast.ldh
        );
    }
    report
}

/// With no failures, once the first broadcast has shaped the root's tree (duplicates pruned,
/// §3.4), a broadcast reaches every node over a spanning tree: reliability 100% and almost no
/// redundant payload (RMR ≤ 0.05; a perfect tree has 0).
#[test]
fn settled_tree_reaches_every_node_with_little_redundancy() {
    let report = run_and_print(&Scenario::new(SEED));
    assert_eq!(report.stable.reliability, 1.0, "seed {SEED}: {report:#?}");
    assert!(report.stable.rmr <= 0.05, "seed {SEED}: {report:#?}");
    assert!(report.stable.ldh > 0, "seed {SEED}: {report:#?}");
}

/// Many senders (issue 15, point 6): after one root's tree has settled, 20 other nodes
/// broadcast once each, 5 s apart. Each first broadcast reaches every node through the tree
/// within 1 s, with almost no redundant payload: a new root's tree starts as a copy of the
/// settled one. (Before: each first broadcast flooded, a mean RMR of 3.0.)
#[test]
fn first_broadcasts_of_new_roots_follow_the_settled_tree() {
    let report = run_and_print(&Scenario { new_roots: 20, ..Scenario::new(SEED) });
    assert_eq!(report.new_roots.len(), 20);
    for broadcast in &report.new_roots {
        assert_eq!(broadcast.reliability_at_1s, 1.0, "seed {SEED}: {broadcast:#?}");
    }
    let mean_rmr = report.new_roots.iter().map(|b| b.rmr).sum::<f64>() / 20.0;
    assert!(mean_rmr <= 0.05, "seed {SEED}: mean RMR {mean_rmr}: {report:#?}");
}

/// Loss and duplication (issue 15, point 6): with every message lost with probability 5%
/// (joins, shuffles and the detector's pings included), the settled tree's broadcast still
/// reaches every node through the tree (GRAFTs from lazy links) within 5 s, 99% of them
/// within 1 s, and spread GRAFT timers keep the redundancy down (before: RMR 0.28, 83% at
/// 1 s). With every message delivered twice with probability 5%, the copies prune nothing
/// (before: RMR 0.47, 57% at 1 s).
#[test]
fn loss_and_duplication_keep_the_tree() {
    use shoal_sim::Network;
    let lossy = Network { drop_probability: 0.05, ..Network::reliable() };
    let report = run_and_print(&Scenario { network: lossy, ..Scenario::new(SEED) });
    assert_eq!(report.stable.reliability, 1.0, "seed {SEED}: {report:#?}");
    assert!(report.stable.reliability_at_1s >= 0.99, "seed {SEED}: {report:#?}");
    assert!(report.stable.rmr <= 0.25, "seed {SEED}: {report:#?}");

    let duplicating = Network { duplicate_probability: 0.05, ..Network::reliable() };
    let report = run_and_print(&Scenario { network: duplicating, ..Scenario::new(SEED) });
    assert_eq!(report.stable.reliability_at_1s, 1.0, "seed {SEED}: {report:#?}");
    assert!(report.stable.rmr <= 0.05, "seed {SEED}: {report:#?}");
}

/// A crash during a broadcast (issue 15, point 6): 20% of the nodes crash 20 ms after the
/// root broadcast on the settled tree, while it spreads. Within 1 s, 95% of the live nodes
/// have it through the tree; within 5 s, all of them. (Before: 70% at 1 s, when every
/// node cut off grafted a fixed 1 s after its first announcement.)
#[test]
fn a_crash_during_a_broadcast() {
    let report = run_and_print(&Scenario {
        crash_fraction: 0.2,
        broadcasts_after_crash: 1,
        crash_during_broadcast: Some(Duration::from_millis(20)),
        ..Scenario::new(SEED)
    });
    assert_eq!(report.crashed, 200);
    let broadcast = &report.after_crash[0];
    assert!(broadcast.reliability_at_1s >= 0.95, "seed {SEED}: {report:#?}");
    assert_eq!(broadcast.reliability, 1.0, "seed {SEED}: {report:#?}");
}

/// 20% of the nodes crash at once; the root broadcasts right after (before any failure is
/// detected) and twice more, 5 s apart. Lazy links GRAFT around the dead (§3.5) so at least
/// 99% of the live nodes get the first broadcast, and once HyParView has repaired the active
/// views from the passive ones (§4.3 of the HyParView paper) the third reaches all of them.
#[test]
fn twenty_percent_crashed() {
    let report = run_and_print(&Scenario {
        crash_fraction: 0.2,
        broadcasts_after_crash: 3,
        ..Scenario::new(SEED)
    });
    assert_eq!(report.crashed, 200);
    assert!(report.after_crash[0].reliability >= 0.99, "seed {SEED}: {report:#?}");
    assert_eq!(report.after_crash[2].reliability, 1.0, "seed {SEED}: {report:#?}");
}

/// As above with 40% crashed: at least 95% of the live nodes get the first broadcast after
/// the crash, all of them the third.
#[test]
fn forty_percent_crashed() {
    let report = run_and_print(&Scenario {
        crash_fraction: 0.4,
        broadcasts_after_crash: 3,
        ..Scenario::new(SEED)
    });
    assert_eq!(report.crashed, 400);
    assert!(report.after_crash[0].reliability >= 0.95, "seed {SEED}: {report:#?}");
    assert_eq!(report.after_crash[2].reliability, 1.0, "seed {SEED}: {report:#?}");
}

/// Crash and restart: 20% of the nodes crash, and after the broadcasts that follow they
/// restart with empty state and rejoin through their first contact (HyParView §4.2 again);
/// once settled, a broadcast reaches every node, old and restarted.
#[test]
fn restarted_nodes_rejoin_the_tree() {
    let report = run_and_print(&Scenario {
        crash_fraction: 0.2,
        broadcasts_after_crash: 1,
        restart_crashed: true,
        ..Scenario::new(SEED)
    });
    let after_restart = report.after_restart.as_ref().expect("restarted");
    assert_eq!(after_restart.live, 1000, "seed {SEED}: {report:#?}");
    assert_eq!(after_restart.reliability, 1.0, "seed {SEED}: {report:#?}");
}

/// Anti-entropy (the paper's "complementary" mechanism; Partisan's exchange): with exchanges
/// on, every live node ends up holding every broadcast made after a 40% crash, including the
/// ones the tree missed.
#[test]
fn anti_entropy_delivers_what_the_tree_missed() {
    let mut scenario = Scenario {
        nodes: 200,
        crash_fraction: 0.4,
        broadcasts_after_crash: 3,
        anti_entropy_wait: Duration::from_secs(30),
        ..Scenario::new(SEED)
    };
    scenario.node.plumtree.exchange_interval = Some(Duration::from_secs(5));
    let report = run_and_print(&scenario);
    assert_eq!(report.eventual_reliability, 1.0, "seed {SEED}: {report:#?}");
}

/// A third of a 12-node overlay crashes 0.5 s after the last join, before any shuffle (the
/// first is due 10 s after a node starts), as in the driver test
/// `broadcasts_after_four_nodes_crash_reach_every_live_node`: 20 s later, every live node gets
/// the broadcasts. Until then a joiner's passive view is what its contact's JOIN_REPLY gave it;
/// without JOIN_REPLY, 53 of these 400 seeds left a node (or a small group) whose contact and
/// walk ends had all crashed knowing no live peer, and known by none, for good. Once a node and
/// everything it ever heard of are gone, no rule of its own can bring it back (it needs a
/// second contact, which the overlay does not give it): one seed in 400 (163) still does that,
/// hence the margin.
#[test]
fn a_third_crashed_right_after_the_joins_leaves_no_live_node_behind() {
    let seeds = 0..400u64;
    let left_behind: Vec<(u64, usize, usize)> = seeds
        .clone()
        .filter_map(|seed| {
            let report = run(&Scenario {
                nodes: 12,
                join_interval: Duration::from_millis(5),
                settle: Duration::from_millis(20),
                warmup_broadcasts: 1,
                broadcast_interval: Duration::from_millis(500),
                crash_fraction: 0.34,
                broadcasts_after_crash: 40,
                ..Scenario::new(seed)
            });
            let last = report.after_crash.last().expect("40 broadcasts after the crash");
            (last.reliability < 1.0).then_some((seed, last.delivered, last.live))
        })
        .collect();
    println!("(seed, delivered, live) left behind: {left_behind:?}");
    assert!(left_behind.len() <= 4, "of {} seeds: {left_behind:?}", seeds.end);
}

proptest! {
    // A fixed seed: CI runs the same cases every time (the project's rule: every RNG seeded).
    #![proptest_config(ProptestConfig {
        cases: 16,
        rng_seed: proptest::test_runner::RngSeed::Fixed(5),
        ..ProptestConfig::default()
    })]

    /// Small overlays of any size and seed, joined one node at a time (every 20 ms) through
    /// random earlier nodes: once settled, HyParView's active views connect every node, so
    /// every broadcast reaches every node. A burst of joins can leave a small group cut off
    /// for a while (its low-priority NEIGHBOUR requests refused by full views) until the
    /// repair tick, fed by the samples refusals carry, finds a view with room: in 300 random
    /// cases one needed more than 10 s, none more than 30 s, hence the settle time.
    #[test]
    fn small_overlays_reach_every_node(seed in any::<u64>(), nodes in 2usize..120) {
        let report = run(&Scenario {
            nodes,
            join_interval: Duration::from_millis(20),
            settle: Duration::from_secs(30),
            warmup_broadcasts: 2,
            ..Scenario::new(seed)
        });
        prop_assert_eq!(report.stable.reliability, 1.0, "seed {}: {:#?}", seed, report);
        prop_assert_eq!(report.isolated, 0, "seed {}: {:#?}", seed, report);
    }
}

/// Determinism: the same scenario and seed give the same run, event for event, and a
/// different seed a different one.
#[test]
fn same_seed_same_run() {
    let scenario = Scenario {
        nodes: 100,
        crash_fraction: 0.2,
        broadcasts_after_crash: 1,
        ..Scenario::new(SEED)
    };
    let first = run(&scenario);
    let second = run(&scenario);
    assert_eq!(first, second);
    let other = run(&Scenario { seed: SEED + 1, ..scenario });
    assert_ne!(first.trace_hash, other.trace_hash);
}

/// The three 1,000-node scenarios over many seeds, for exploring margins (slow: run with
/// `cargo test -p shoal-broadcast --test broadcast -- --ignored --nocapture seed_sweep`).
#[test]
#[ignore = "a sweep over seeds for exploration, not a CI check"]
fn seed_sweep() {
    for seed in 1..=12 {
        for crash_fraction in [0.0, 0.2, 0.4] {
            run_and_print(&Scenario {
                crash_fraction,
                broadcasts_after_crash: 3,
                ..Scenario::new(seed)
            });
        }
    }
}

/// The same scenarios at 10,000 nodes (the benchmark's size; slow in a debug build: run with
/// `cargo test --release -p shoal-broadcast --test broadcast -- --ignored --nocapture
/// ten_thousand`).
#[test]
#[ignore = "10,000 nodes: a benchmark-sized run, not a CI check"]
fn ten_thousand_nodes() {
    for crash_fraction in [0.0, 0.2, 0.4] {
        run_and_print(&Scenario {
            nodes: 10_000,
            join_interval: Duration::from_millis(2),
            crash_fraction,
            broadcasts_after_crash: 3,
            ..Scenario::new(SEED)
        });
    }
}
