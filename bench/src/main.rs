//! `shoal-bench`: Shoal's benchmark binary, driven by `cargo xtask bench`.
//!
//! ```text
//! shoal-bench list          one line per metric: `<name> <unit>`
//! shoal-bench run <name>    one sample of one metric: its value alone on stdout
//! shoal-bench peer PROT     the second node of the `remote_*` metrics (see [`remote`]), its
//!                           connections `encrypted`, `authenticated` or `unsealed`
//! shoal-bench registry-node NAME
//!                           node `b` or `c` of `singleton_failover_ms` (see
//!                           [`registry_failover`])
//! shoal-bench hub-node NAME node `b` or `c` of `failover_ms` and `failover_silent_ms` (see
//!                           [`hub_failover`])
//! shoal-bench hub-replica-node NAME
//!                           node `b` or `c` of `replica_promote_ms` (see [`hub_failover`])
//! shoal-bench dsup-node NAME
//!                           node `b` or `c` of `dsup_failover_ms` (see [`dsup`])
//! ```
//!
//! The `..._unsealed` metrics, and the `unsealed` protection, exist only with the cargo
//! feature `unsealed` (which `cargo xtask bench` turns on): it lets the transport run without
//! records, which no other build should.
//!
//! Each `run` takes exactly one sample in a fresh OS process, so no sample inherits the heap,
//! the threads or the warm caches of another; `xtask bench` runs several and takes the median.
//! Everything besides the value (details, progress) goes to stderr. The metric names and
//! targets are those of SPEC.md, "Benchmarks".
//!
//! What it is not: a statistics harness. One sample is one number; repetition, medians and
//! the comparison with targets belong to `xtask bench`.
//!
//! Codemap: [`METRICS`] is the table of every metric; each area of Shoal has a module of its
//! own ([`local`]: one node's process runtime; [`remote`]: two nodes in two OS processes;
//! [`paxos`]: three nodes' consensus; [`registry`]: locks and names over it; [`hub`]: the
//! hash-ring distributor; [`hub_failover`]: its failover, and the promotion of a passive
//! replica, across three OS processes; [`hub_handover`]: a child moved hot with its state;
//! [`dsup`]: the distributed supervisor's starts, and its failover across three OS
//! processes; [`broadcast`]: Plumtree in simulation and over loopback), and [`harness`] holds
//! what they share.
//!
//! Adding a metric: a function `fn() -> anyhow::Result<f64>` in its area's module that takes
//! one sample, a row in [`METRICS`], and a doc comment saying exactly what is timed. A metric
//! that needs a second OS process (a second node) starts this same binary again
//! (`std::env::current_exe()`) with a subcommand of its own, next to `list` and `run`.

mod broadcast;
mod dsup;
mod harness;
mod hub;
mod hub_failover;
mod hub_handover;
mod local;
mod observed;
mod paxos;
mod registry;
mod registry_failover;
mod remote;

#[cfg(feature = "unsealed")]
use shoal_transport::Protection::Unsealed;
use shoal_transport::Protection::{Authenticated, Encrypted};

use std::io::Write;
use std::process::ExitCode;

use crate::hub_failover::Setup;
use crate::observed::Main;

/// One metric: what `list` shows and what `run` calls.
struct Metric {
    /// The name `run` takes, as in SPEC.md.
    name: &'static str,
    /// The unit of the value, for `list`.
    unit: &'static str,
    /// Takes one sample. Builds whatever runtime it needs and tears it down.
    sample: fn() -> anyhow::Result<f64>,
}

/// Every metric, in the order of SPEC.md's table, then what the records cost.
const METRICS: &[Metric] = &[
    Metric { name: "local_send_msgs_per_s", unit: "msgs/s", sample: local::send_msgs_per_s },
    Metric { name: "local_call_rtt_us", unit: "us", sample: local::call_rtt_us },
    Metric { name: "spawn_ns", unit: "ns", sample: local::spawn_ns },
    Metric { name: "process_bytes", unit: "bytes", sample: local::process_bytes },
    Metric {
        name: "remote_send_msgs_per_s",
        unit: "msgs/s",
        sample: || remote::send_msgs_per_s(Encrypted),
    },
    Metric { name: "remote_call_rtt_us", unit: "us", sample: || remote::call_rtt_us(Encrypted) },
    Metric {
        name: "remote_calls_pipelined_per_s",
        unit: "calls/s",
        sample: || remote::calls_pipelined_per_s(Encrypted),
    },
    Metric {
        name: "control_ping_p99_us_under_bulk",
        unit: "us",
        sample: || remote::control_ping_p99_us_under_bulk(Encrypted),
    },
    Metric { name: "paxos_write_us", unit: "us", sample: paxos::paxos_write_us },
    Metric { name: "paxos_writes_per_s", unit: "writes/s", sample: paxos::paxos_writes_per_s },
    Metric {
        name: "paxos_durable_writes_per_s",
        unit: "writes/s",
        sample: paxos::paxos_durable_writes_per_s,
    },
    Metric {
        name: "lock_acquire_release_us",
        unit: "us",
        sample: registry::lock_acquire_release_us,
    },
    Metric { name: "lock_handoff_us", unit: "us", sample: registry::lock_handoff_us },
    Metric { name: "name_register_us", unit: "us", sample: registry::name_register_us },
    Metric { name: "whereis_cached_ns", unit: "ns", sample: registry::whereis_cached_ns },
    Metric { name: "group_join_us", unit: "us", sample: registry::group_join_us },
    Metric { name: "group_members_ns", unit: "ns", sample: registry::group_members_ns },
    Metric { name: "group_converge_ms", unit: "ms", sample: registry::group_converge_ms },
    Metric {
        name: "singleton_failover_ms",
        unit: "ms",
        sample: registry_failover::singleton_failover_ms,
    },
    Metric {
        name: "hub_start_children_per_s",
        unit: "children/s",
        sample: hub::hub_start_children_per_s,
    },
    Metric { name: "ring_max_over_mean", unit: "ratio", sample: hub::ring_max_over_mean },
    Metric { name: "hub_moved_on_join_ratio", unit: "ratio", sample: hub::hub_moved_on_join_ratio },
    Metric { name: "hub_lookup_ns", unit: "ns", sample: hub::hub_lookup_ns },
    Metric { name: "failover_ms", unit: "ms", sample: hub_failover::failover_ms },
    Metric { name: "failover_silent_ms", unit: "ms", sample: hub_failover::failover_silent_ms },
    Metric { name: "handover_ms", unit: "ms", sample: hub_handover::handover_ms },
    Metric { name: "replica_promote_ms", unit: "ms", sample: hub_failover::replica_promote_ms },
    Metric { name: "dsup_start_child_us", unit: "us", sample: dsup::dsup_start_child_us },
    Metric { name: "dsup_failover_ms", unit: "ms", sample: dsup::dsup_failover_ms },
    Metric { name: "plumtree_rmr", unit: "ratio", sample: broadcast::plumtree_rmr },
    Metric {
        name: "plumtree_reliability_pct_20_crashed",
        unit: "%",
        sample: broadcast::plumtree_reliability_pct_20_crashed,
    },
    Metric { name: "plumtree_ldh", unit: "hops", sample: broadcast::plumtree_ldh },
    // The harder cases of the broadcast (beyond SPEC.md's table): many roots, loss,
    // duplication, a crash during a broadcast.
    Metric {
        name: "plumtree_rmr_many_roots",
        unit: "ratio",
        sample: broadcast::plumtree_rmr_many_roots,
    },
    Metric {
        name: "plumtree_reliability_pct_many_roots",
        unit: "%",
        sample: broadcast::plumtree_reliability_pct_many_roots,
    },
    Metric {
        name: "plumtree_reliability_pct_1pct_loss",
        unit: "%",
        sample: broadcast::plumtree_reliability_pct_1pct_loss,
    },
    Metric {
        name: "plumtree_rmr_1pct_loss",
        unit: "ratio",
        sample: broadcast::plumtree_rmr_1pct_loss,
    },
    Metric {
        name: "plumtree_reliability_pct_5pct_loss",
        unit: "%",
        sample: broadcast::plumtree_reliability_pct_5pct_loss,
    },
    Metric {
        name: "plumtree_rmr_5pct_loss",
        unit: "ratio",
        sample: broadcast::plumtree_rmr_5pct_loss,
    },
    Metric {
        name: "plumtree_rmr_5pct_duplication",
        unit: "ratio",
        sample: broadcast::plumtree_rmr_5pct_duplication,
    },
    Metric {
        name: "plumtree_reliability_pct_5pct_duplication",
        unit: "%",
        sample: broadcast::plumtree_reliability_pct_5pct_duplication,
    },
    Metric {
        name: "plumtree_reliability_pct_crash_during_1s",
        unit: "%",
        sample: broadcast::plumtree_reliability_pct_crash_during_1s,
    },
    Metric {
        name: "plumtree_reliability_pct_crash_during_5s",
        unit: "%",
        sample: broadcast::plumtree_reliability_pct_crash_during_5s,
    },
    Metric { name: "broadcast_p99_us", unit: "us", sample: broadcast::broadcast_p99_us },
    // What the records cost: the remote metrics again, with records only authenticated, and
    // with none at all (`Protection::Unsealed`, never for a real cluster; only with the
    // `unsealed` feature).
    Metric {
        name: "remote_send_msgs_per_s_authenticated",
        unit: "msgs/s",
        sample: || remote::send_msgs_per_s(Authenticated),
    },
    // What the metrics cost: the send metrics again on a `shoal::Node`, without and with its
    // metrics sampled (see `observed`).
    Metric {
        name: "local_send_msgs_per_s_node",
        unit: "msgs/s",
        sample: || observed::local_send_msgs_per_s(Main::Node),
    },
    Metric {
        name: "local_send_msgs_per_s_metrics",
        unit: "msgs/s",
        sample: || observed::local_send_msgs_per_s(Main::Sampled),
    },
    Metric {
        name: "remote_send_msgs_per_s_node",
        unit: "msgs/s",
        sample: || remote::send_msgs_per_s_observed(Encrypted, Main::Node),
    },
    Metric {
        name: "remote_send_msgs_per_s_metrics",
        unit: "msgs/s",
        sample: || remote::send_msgs_per_s_observed(Encrypted, Main::Sampled),
    },
    #[cfg(feature = "unsealed")]
    Metric {
        name: "remote_send_msgs_per_s_unsealed",
        unit: "msgs/s",
        sample: || remote::send_msgs_per_s(Unsealed),
    },
    #[cfg(feature = "unsealed")]
    Metric {
        name: "remote_call_rtt_us_unsealed",
        unit: "us",
        sample: || remote::call_rtt_us(Unsealed),
    },
    #[cfg(feature = "unsealed")]
    Metric {
        name: "remote_calls_pipelined_per_s_unsealed",
        unit: "calls/s",
        sample: || remote::calls_pipelined_per_s(Unsealed),
    },
    #[cfg(feature = "unsealed")]
    Metric {
        name: "control_ping_p99_us_under_bulk_unsealed",
        unit: "us",
        sample: || remote::control_ping_p99_us_under_bulk(Unsealed),
    },
];

const USAGE: &str = "usage: shoal-bench list | shoal-bench run <metric> | shoal-bench peer \
                     <protection> | shoal-bench registry-node <b|c> | shoal-bench hub-node <b|c> \
                     | shoal-bench hub-replica-node <b|c> | shoal-bench dsup-node <b|c>";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["list"] => list(),
        ["run", name] => run(name),
        ["peer", protection] => {
            served("peer", remote::protection(protection).and_then(remote::serve_peer))
        }
        ["registry-node", name] => served("registry-node", registry_failover::serve_node(name)),
        ["hub-node", name] => served("hub-node", hub_failover::serve_node(Setup::Failover, name)),
        ["hub-replica-node", name] => {
            served("hub-replica-node", hub_failover::serve_node(Setup::Replica, name))
        }
        ["dsup-node", name] => served("dsup-node", dsup::serve_node(name)),
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// How a node process of `subcommand` (a second or third node of a metric) ended.
fn served(subcommand: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("shoal-bench {subcommand}: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn list() -> ExitCode {
    let mut out = std::io::stdout().lock();
    for metric in METRICS {
        if writeln!(out, "{} {}", metric.name, metric.unit).is_err() {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn run(name: &str) -> ExitCode {
    let Some(metric) = METRICS.iter().find(|metric| metric.name == name) else {
        eprintln!("shoal-bench: unknown metric `{name}` (`shoal-bench list` names them)");
        return ExitCode::from(2);
    };
    match (metric.sample)() {
        Ok(value) if value.is_finite() => {
            println!("{value}");
            ExitCode::SUCCESS
        }
        Ok(value) => {
            eprintln!("shoal-bench: {name} measured a value that is not a number: {value}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("shoal-bench: {name} failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}
