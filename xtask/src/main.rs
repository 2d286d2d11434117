//! `cargo xtask`: the one entry point for Shoal's automation.
//!
//! ```text
//! cargo xtask ci [--skip STEP]...        every check CI runs, with a test-count summary
//! cargo xtask cores                     the sans-IO cores build without tokio or the transport
//! cargo xtask features                  the facade builds with no feature and with each alone
//! cargo xtask examples                  every example of the facade runs and ends well
//! cargo xtask chat                      the chat example as three processes, one SIGKILLed
//! cargo xtask browser                   three nodes' dashboard in headless Chromium
//! cargo xtask cluster-test [--quick] [--seed S] [--nodes N]
//!                                        a real cluster of node processes on loopback, put
//!                                        through kills and partitions
//! cargo xtask bench [--runs N] [NAME]... the benchmarks, one `name value unit` line per metric
//! cargo xtask mutants [--no-fail-fast] [--schedules N] [--walks N] [NAME]...
//!                                        the whole paxos test binary against each mutant
//! cargo xtask explore-paxos [--schedules N] [--walks N] [--offset K]
//! cargo xtask explore-nodes [--schedules N] [--offset K]
//!                                        the paxos simulations and walk on seeds CI never ran
//! ```
//!
//! It is an ordinary binary in the workspace (the alias in `.cargo/config.toml` runs it), so
//! automation is Rust that anyone can read and run locally, and CI runs the same thing: `.ci/run`
//! only calls `cargo xtask ci`.
//!
//! What it is not: a build system. Every step is a plain `cargo` command, printed before it
//! runs so it can be copied and rerun by hand. It depends on nothing but `anyhow`, because CI
//! builds it before anything else, on two cores.
//!
//! Codemap: [`ci`] runs the checks and [`test_counts`] reads test counts out of their output;
//! [`cores`] checks that the sans-IO cores build alone; [`features`] that the facade builds
//! with each of its features alone; [`examples`] that its examples run, and [`chat`] drives the
//! chat example's node processes through a SIGKILL, and [`browser`] loads the dashboard of
//! `shoal-node` processes in headless Chromium, before and after a SIGKILL;
//! [`tee`] runs a command with its output both shown and kept; [`cluster_test`] starts and
//! drives `shoal-node` processes; [`bench`](mod@bench) drives the `shoal-bench` binary;
//! [`mutants`] runs the paxos tests against each mutant of the protocol and [`explore`] runs
//! its simulations on new seeds; [`tidy`] holds the checks on the source tree that run as tests.

mod bench;
mod browser;
mod chat;
mod ci;
mod cluster_test;
mod cores;
mod examples;
mod explore;
mod features;
mod mutants;
mod progress;
mod tee;
mod test_counts;
mod tidy;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, anyhow, bail};

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
    ci [--skip STEP]...          run every check CI runs, in order, and summarise them
                                 (steps: fmt, clippy, cores, features, test, doctest,
                                 doc, examples, chat, browser, cluster-test)
    cluster-test [--quick] [--seed S] [--nodes N]
                                 build shoal-node, start N node processes (default 5) on
                                 127.0.0.2, 127.0.0.3, ... and run the scenarios: join,
                                 message storm, SIGKILL and restart, partition and heal;
                                 --quick is the short run CI does, --seed replays a run
    cores                        check that each sans-IO core crate (paxos, broadcast, sim)
                                 builds without its default features and without tokio,
                                 shoal-process or shoal-transport in its package graph
    features                     check that the facade (crates/shoal) builds with none of
                                 its features and with each of them alone
    examples                     run every example of the facade (crates/shoal/examples);
                                 fails if one fails or runs past five minutes
    chat                         build the chat example, run it as three node processes on
                                 127.0.0.1, drive a conversation, SIGKILL a room's node and
                                 check from the survivors that nothing acknowledged was lost
    browser                      build shoal-node with the dashboard, run three of them on
                                 127.0.0.1 with a name, a lock and hub children, load a's
                                 dashboard in headless Chromium (`chromium` on PATH) until
                                 it shows them, SIGKILL c, load it until c shows down;
                                 screenshots in target/browser/
    bench [--runs N] [NAME]...   build the benchmarks in release mode and print one
                                 `name value unit` line per metric: the median of N runs
                                 (default 5); NAME selects metrics by name prefix
    mutants [--no-fail-fast] [--schedules N] [--walks N] [NAME]...
                                 build the paxos test binary once, run it without a mutant
                                 (the control) and then under each mutant of the protocol
                                 (SHOAL_PAXOS_MUTANT), and print which tests kill each;
                                 fails if one survives; NAME selects mutants
    explore-paxos [--schedules N] [--walks N] [--offset K]
                                 run the paxos simulations (N schedules per family, default
                                 200000) and random walks (default 1000000) on seeds moved by
                                 K (default: from the clock, printed); fails on a violation
    explore-nodes [--schedules N] [--offset K]
                                 run the whole-node simulations (the transport, the Paxos
                                 register and counter, broadcast, under random faults, N
                                 schedules each, default 5000) on seeds from K (default:
                                 from the clock, printed)
    help                         print this message
";

fn main() -> ExitCode {
    match command_line_args().and_then(|args| run(&args)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The arguments after `cargo xtask`, refused rather than mangled if they are not UTF-8.
fn command_line_args() -> Result<Vec<String>> {
    env::args_os()
        .skip(1)
        .map(|arg| arg.into_string().map_err(|arg| anyhow!("argument {arg:?} is not UTF-8")))
        .collect()
}

/// Dispatches to a command. Commands print their own report and choose the exit code; an
/// error means the command could not do its job at all (bad arguments, a missing tool).
fn run(args: &[String]) -> Result<ExitCode> {
    let Some((command, options)) = args.split_first() else {
        eprint!("{USAGE}");
        return Ok(ExitCode::FAILURE);
    };
    match command.as_str() {
        "ci" => ci::run(options),
        "cluster-test" => cluster_test::run(options),
        "cores" => cores::run(options),
        "features" => features::run(options),
        "examples" => examples::run(options),
        "chat" => chat::run(options),
        "browser" => browser::run(options),
        "bench" => bench::run(options),
        "mutants" => mutants::run(options),
        "explore-paxos" => explore::run(options),
        "explore-nodes" => explore::run_nodes(options),
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        unknown => bail!("unknown command `{unknown}`\n\n{USAGE}"),
    }
}

/// The workspace root, where every command runs: xtask's own directory is one level below.
///
/// Taken from the build rather than the current directory, so `cargo xtask` works from
/// anywhere inside the workspace.
fn workspace_root() -> PathBuf {
    let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask_dir.parent().unwrap_or(xtask_dir).to_path_buf()
}

/// Where cargo puts what it builds: `$CARGO_TARGET_DIR` if set (relative to the workspace
/// root, where every build runs), else `<workspace root>/target`.
fn target_dir() -> PathBuf {
    let root = workspace_root();
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir))
}

/// The facade's features that no default turns on but that CI builds and tests too: the web
/// view and the command-line inspector (`cli`, which turns on `dashboard`), the metrics sampler
/// with its Prometheus recorder (`prometheus`, which turns on `metrics`), and traced calls
/// joined to OpenTelemetry traces (`opentelemetry`). The clippy, test, doctest and doc steps
/// and [`build_programs`] all turn them on, so that they build the workspace alike (axum turns
/// on tokio's `default` feature, which changes the build of tokio and of everything above it)
/// and each reuses what the one before built. `cargo xtask features` builds the facade with
/// each alone.
const EXTRA_FEATURES: &str = "shoal/cli,shoal/prometheus,shoal/opentelemetry";

/// Builds the facade's programs that the `examples`, `chat`, `browser` and `cluster-test`
/// steps run (`shoal-node` and the examples), and returns the directory they are in.
///
/// They are built as CI's test step builds them (the `test` profile, the whole workspace
/// with [`EXTRA_FEATURES`], examples and so dev-dependencies included), so after that step
/// this only links what it already compiled, instead of compiling the facade and its
/// dependencies a second time with other features.
fn build_programs() -> Result<PathBuf> {
    let args = [
        "build",
        "--locked",
        "--profile",
        "test",
        "--workspace",
        "--features",
        EXTRA_FEATURES,
        "--bin",
        "shoal-node",
        "--examples",
    ];
    println!("==> cargo {}", args.join(" "));
    let status = cargo(&args).status().context("cargo build starts")?;
    anyhow::ensure!(status.success(), "building shoal-node and the examples failed ({status})");
    // The test profile inherits the dev profile's directory.
    Ok(target_dir().join("debug"))
}

/// A `cargo` command with `args`, to run in the workspace root.
///
/// It uses the cargo that runs xtask (`$CARGO`), so `cargo +nightly xtask ci` checks with
/// nightly throughout; plain `cargo` from `PATH` is the fallback when xtask runs on its own.
fn cargo(args: &[&str]) -> Command {
    let program = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(program);
    command.args(args).current_dir(workspace_root());
    command
}
