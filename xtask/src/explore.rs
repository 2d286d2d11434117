//! `cargo xtask explore-paxos`: the Paxos simulations and random walk on seeds CI never ran.
//!
//! CI runs fixed seeds (style habit 15); this command moves every simulation family's seeds
//! and the walk's by an offset taken from the clock (or `--offset K`, to rerun an
//! exploration), prints it, and runs larger counts with no time limit:
//!
//! ```text
//! SHOAL_PAXOS_SCHEDULES=N SHOAL_PAXOS_WALKS=N SHOAL_PAXOS_SEED_OFFSET=K \
//!     cargo test -p shoal-paxos --test paxos -- paxos::sim paxos::walk --include-ignored --nocapture
//! ```
//!
//! A failing schedule or walk prints its seed and the command that replays it (the variables
//! are documented in `crates/paxos/tests/paxos/sim/mod.rs` and `walk.rs`); the exit code is
//! the tests'.
//!
//! `cargo xtask explore-nodes` does the same for the whole-node simulations (`tests/tests/nodes/`:
//! the transport, the Paxos driver's register and counter, the broadcast driver, the
//! registry, process groups, the hub and the distributed supervisor under random faults on a
//! simulated network), with `SHOAL_SIM_SEED`, `SHOAL_SIM_SCHEDULES`,
//! `SHOAL_SIM_PAXOS_SCHEDULES`, `SHOAL_SIM_PAXOS_COUNTER_SCHEDULES`,
//! `SHOAL_SIM_BROADCAST_SCHEDULES`, `SHOAL_SIM_BROADCAST_SOAK_SCHEDULES`,
//! `SHOAL_SIM_BROADCAST_LOG_SCHEDULES`, `SHOAL_SIM_REGISTRY_SCHEDULES`,
//! `SHOAL_SIM_GROUPS_SCHEDULES`, `SHOAL_SIM_HUB_SCHEDULES`, `SHOAL_SIM_HUB_HANDOVER_SCHEDULES`,
//! `SHOAL_SIM_HUB_QUORUM_SCHEDULES`, `SHOAL_SIM_HUB_REPLICAS_SCHEDULES` and
//! `SHOAL_SIM_DSUP_SCHEDULES`.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::cargo;

/// Schedules per simulation family by default: CI runs 2,500 to 80,000 per family; this is
/// about a quarter of an hour for all nine families on the 2-core box.
const SCHEDULES: u64 = 200_000;

/// Random walks by default (CI runs 300,000): under two minutes.
const WALKS: u64 = 1_000_000;

/// Runs `cargo xtask explore-paxos` with the arguments after it.
pub(crate) fn run(args: &[String]) -> Result<ExitCode> {
    let (mut schedules, mut walks, mut offset) = (SCHEDULES, WALKS, None);
    let flags = ["--schedules", "--walks", "--offset"];
    numeric_flags("explore-paxos", args, &flags, |flag, value| match flag {
        "--schedules" => schedules = value,
        "--walks" => walks = value,
        _ => offset = Some(value),
    })?;
    let offset = offset_or_clock(offset)?;
    let env = [
        ("SHOAL_PAXOS_SCHEDULES", schedules.to_string()),
        ("SHOAL_PAXOS_WALKS", walks.to_string()),
        ("SHOAL_PAXOS_SEED_OFFSET", offset.to_string()),
    ];
    let args = [
        "test",
        "-p",
        "shoal-paxos",
        "--test",
        "paxos",
        "--",
        "paxos::sim",
        "paxos::walk",
        "--include-ignored",
        "--nocapture",
    ];
    explore(offset, &env, &args)
}

/// Whole-node schedules per family by default: about ten minutes on the 2-core box.
const NODE_SCHEDULES: u64 = 5_000;

/// Runs `cargo xtask explore-nodes` with the arguments after it.
pub(crate) fn run_nodes(args: &[String]) -> Result<ExitCode> {
    let (mut schedules, mut offset) = (NODE_SCHEDULES, None);
    numeric_flags("explore-nodes", args, &["--schedules", "--offset"], |flag, value| match flag {
        "--schedules" => schedules = value,
        _ => offset = Some(value),
    })?;
    let offset = offset_or_clock(offset)?;
    let env = [
        ("SHOAL_SIM_SEED", offset.to_string()),
        ("SHOAL_SIM_SCHEDULES", schedules.to_string()),
        ("SHOAL_SIM_PAXOS_SCHEDULES", schedules.to_string()),
        ("SHOAL_SIM_PAXOS_COUNTER_SCHEDULES", schedules.to_string()),
        ("SHOAL_SIM_BROADCAST_SCHEDULES", schedules.to_string()),
        ("SHOAL_SIM_BROADCAST_SOAK_SCHEDULES", schedules.to_string()),
        ("SHOAL_SIM_BROADCAST_LOG_SCHEDULES", schedules.to_string()),
        ("SHOAL_SIM_REGISTRY_SCHEDULES", schedules.to_string()),
        ("SHOAL_SIM_GROUPS_SCHEDULES", schedules.to_string()),
        ("SHOAL_SIM_HUB_SCHEDULES", schedules.to_string()),
        ("SHOAL_SIM_HUB_HANDOVER_SCHEDULES", schedules.to_string()),
        ("SHOAL_SIM_HUB_QUORUM_SCHEDULES", schedules.to_string()),
        ("SHOAL_SIM_HUB_REPLICAS_SCHEDULES", schedules.to_string()),
        ("SHOAL_SIM_DSUP_SCHEDULES", schedules.to_string()),
    ];
    let args = [
        "test",
        "-p",
        "shoal-tests",
        "--test",
        "nodes",
        "--",
        "membership_and_a_cast_stream_survive_random_faults",
        "a_paxos_register_stays_linearisable_under_random_faults",
        "a_paxos_counter_survives_crashes_restarts_and_partitions",
        "every_live_node_gets_every_broadcast_after_random_faults",
        "the_registry_keeps_one_process_per_name_and_fenced_locks_under_random_faults",
        "every_node_reports_the_same_members_after_random_faults",
        "every_child_runs_once_on_its_owner_after_random_faults",
        "a_hot_move_loses_no_acknowledged_increment",
        "the_minority_stops_what_its_strategy_says_and_restarts_it_on_heal",
        "two_copies_one_active_and_promoted_within_a_bound_after_random_faults",
        "--nocapture",
    ];
    explore(offset, &env, &args)
}

/// Reads `args` as `--flag NUMBER` pairs of the `known` flags, handing each to `take`.
fn numeric_flags(
    command: &str,
    args: &[String],
    known: &[&str],
    mut take: impl FnMut(&str, u64),
) -> Result<()> {
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        if !known.contains(&flag.as_str()) {
            bail!("unknown argument `{flag}` for `{command}`; see `cargo xtask help`");
        }
        let value = args.next().with_context(|| format!("`{flag}` needs a number"))?;
        take(flag, value.parse().with_context(|| format!("`{flag} {value}`: not a number"))?);
    }
    Ok(())
}

/// `offset`, or microseconds since 1970: about 1.8e15, far above every seed CI runs (below
/// 1e7) and different for every exploration.
fn offset_or_clock(offset: Option<u64>) -> Result<u64> {
    match offset {
        Some(offset) => Ok(offset),
        None => {
            let since = SystemTime::now().duration_since(UNIX_EPOCH).context("the clock")?;
            u64::try_from(since.as_micros()).context("the clock is past 2554")
        }
    }
}

/// Runs cargo with `args` and `env`, saying how to rerun the exploration.
fn explore(offset: u64, env: &[(&str, String)], args: &[&str]) -> Result<ExitCode> {
    let shown: Vec<String> = env.iter().map(|(name, value)| format!("{name}={value}")).collect();
    println!("==> seed offset {offset} (rerun this exploration with --offset {offset})");
    println!("==> {} cargo {}", shown.join(" "), args.join(" "));
    let status = cargo(args).envs(env.iter().cloned()).status().context("running cargo")?;
    println!(
        "==> seed offset {offset}: {}",
        if status.success() { "no failure" } else { "FAILED" }
    );
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
