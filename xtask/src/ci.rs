//! `cargo xtask ci`: every check CI runs, in order, and a summary CI can read.
//!
//! | step      | command |
//! |-----------|---------|
//! | `fmt`     | `cargo fmt --all --check` |
//! | `clippy`  | `cargo clippy --workspace --all-targets --locked --features shoal/cli,shoal/prometheus,shoal/opentelemetry -- -D warnings` |
//! | `cores`   | `cargo xtask cores`: each sans-IO core builds without tokio or the transport |
//! | `features` | `cargo xtask features`: the facade builds with no feature and with each alone |
//! | `test`    | `cargo nextest run --workspace --locked --no-fail-fast --features shoal/cli,shoal/prometheus,shoal/opentelemetry`, or `cargo test` |
//! | `doctest` | `cargo test --workspace --doc --locked --features shoal/cli,shoal/prometheus,shoal/opentelemetry` |
//! | `doc`     | `RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --features shoal/cli,shoal/prometheus,shoal/opentelemetry` |
//! | `examples` | `cargo xtask examples`: every example of the facade runs and ends well |
//! | `chat`    | `cargo xtask chat`: the chat example as three processes survives a SIGKILL |
//! | `browser` | `cargo xtask browser`: three nodes' dashboard in headless Chromium, before and after a SIGKILL |
//! | `cluster-test` | `cargo xtask cluster-test --quick --seed 20261206`: node processes on loopback |
//!
//! Every step runs even when an earlier one failed, so one CI run reports everything that is
//! wrong; `--skip STEP` leaves one out locally. Each prints its command first, so it can be
//! rerun by hand. The report ends with a table of the steps and then, as the very last line,
//! `tests: N passed, M failed`, which CI reads as the result of the test run. The exit code is
//! non-zero if any step failed.
//!
//! The environment passes through untouched: `CARGO_TERM_COLOR` keeps the caller's choice,
//! and `PROPTEST_CASES` stays unset unless the caller sets it, so each property test runs as
//! many cases as it asks for. One variable is set, for the test step only: `PROPTEST_RNG_SEED`,
//! so that every CI run draws the same property-test cases (the simulations and walks already
//! run fixed seeds); run `cargo test` or `cargo nextest run` by hand to explore others. The
//! quick cluster test runs one fixed seed too (its choices: who joins whom, who is killed,
//! the partitions); `cargo xtask cluster-test` without `--seed` explores a new one each run,
//! and prints how to replay it.

use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::tee;
use crate::test_counts::{Reporter, TestCounts};
use crate::{EXTRA_FEATURES, cargo};

/// One check: a cargo command, and how to read its test counts if it runs tests.
struct Step {
    /// Short name, for the summary and for `--skip`.
    name: &'static str,
    /// The arguments to `cargo`.
    cargo_args: &'static [&'static str],
    /// Environment variables set for this step only.
    env: &'static [(&'static str, &'static str)],
    /// The runner whose announced counts this step adds to the total, if it runs tests.
    reporter: Option<Reporter>,
}

/// The checks, in the order they run: cheapest first, so the usual mistakes show up early.
fn steps() -> Vec<Step> {
    vec![
        Step { name: "fmt", cargo_args: &["fmt", "--all", "--check"], env: &[], reporter: None },
        Step {
            name: "clippy",
            cargo_args: &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--locked",
                "--features",
                EXTRA_FEATURES,
                "--",
                "-D",
                "warnings",
            ],
            env: &[],
            reporter: None,
        },
        Step { name: "cores", cargo_args: &["xtask", "cores"], env: &[], reporter: None },
        Step { name: "features", cargo_args: &["xtask", "features"], env: &[], reporter: None },
        test_step(),
        Step {
            name: "doctest",
            cargo_args: &["test", "--workspace", "--doc", "--locked", "--features", EXTRA_FEATURES],
            env: &[],
            reporter: Some(Reporter::Libtest),
        },
        Step {
            name: "doc",
            cargo_args: &[
                "doc",
                "--workspace",
                "--no-deps",
                "--locked",
                "--features",
                EXTRA_FEATURES,
            ],
            env: &[("RUSTDOCFLAGS", "-D warnings")],
            reporter: None,
        },
        Step { name: "examples", cargo_args: &["xtask", "examples"], env: &[], reporter: None },
        Step { name: "chat", cargo_args: &["xtask", "chat"], env: &[], reporter: None },
        Step { name: "browser", cargo_args: &["xtask", "browser"], env: &[], reporter: None },
        // Last: it starts real node processes, so it runs once everything above has built
        // and had its own say. Each scenario counts as one test in the final line.
        Step {
            name: "cluster-test",
            cargo_args: &["xtask", "cluster-test", "--quick", "--seed", CLUSTER_TEST_SEED],
            env: &[],
            reporter: Some(Reporter::ClusterTest),
        },
    ]
}

/// The test step: nextest when it is installed (one summary line for the whole run, and
/// faster), `cargo test` otherwise.
///
/// `cargo test` is limited to `--lib --bins --tests`, which is what nextest runs: doctests
/// have a step of their own, and examples and benches are built by clippy.
/// The quick cluster test's seed in CI: the same choices every run.
const CLUSTER_TEST_SEED: &str = "20261206";

/// The property tests' seed in CI: the same cases every run.
const PROPTEST_SEED: &[(&str, &str)] = &[("PROPTEST_RNG_SEED", "20261206")];

fn test_step() -> Step {
    if nextest_is_installed() {
        Step {
            name: "test",
            cargo_args: &[
                "nextest",
                "run",
                "--workspace",
                "--locked",
                "--no-fail-fast",
                "--features",
                EXTRA_FEATURES,
            ],
            env: PROPTEST_SEED,
            reporter: Some(Reporter::Nextest),
        }
    } else {
        Step {
            name: "test",
            cargo_args: &[
                "test",
                "--workspace",
                "--locked",
                "--no-fail-fast",
                "--lib",
                "--bins",
                "--tests",
                "--features",
                EXTRA_FEATURES,
            ],
            env: PROPTEST_SEED,
            reporter: Some(Reporter::Libtest),
        }
    }
}

fn nextest_is_installed() -> bool {
    cargo(&["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

impl Step {
    /// Runs the step, its output streaming to the terminal, and reports how it went.
    fn run(&self) -> StepReport {
        println!("==> {}: {}", self.name, self.command_line());
        let started = Instant::now();
        let result = tee::run(cargo(self.cargo_args).envs(self.env.iter().copied()));
        let duration = started.elapsed();
        let (succeeded, lines) = match result {
            Ok(teed) => (teed.status.success(), teed.lines),
            Err(error) => {
                eprintln!("error: could not start `{}`: {error}", self.command_line());
                (false, Vec::new())
            }
        };
        StepReport {
            name: self.name,
            outcome: if succeeded { Outcome::Passed } else { Outcome::Failed },
            duration,
            counts: self.test_counts(succeeded, &lines),
        }
    }

    /// The tests this step ran, as its runner announced them in `lines`.
    ///
    /// A failed step whose runner announced no failure (a test binary crashed before printing
    /// its result, or the tests did not build) counts as one failed test: the real number is
    /// unknown, but the final line must never read as a clean run when it was not.
    fn test_counts(&self, succeeded: bool, lines: &[String]) -> TestCounts {
        let Some(reporter) = self.reporter else {
            return TestCounts::default();
        };
        let mut counts = reporter.count(lines).unwrap_or_default();
        if !succeeded && counts.failed == 0 {
            counts.failed = 1;
        }
        counts
    }

    /// The command as one would type it, environment first.
    fn command_line(&self) -> String {
        let mut line: String =
            self.env.iter().map(|(name, value)| format!("{name}={value:?} ")).collect();
        line.push_str("cargo ");
        line.push_str(&self.cargo_args.join(" "));
        line
    }

    fn skipped(&self) -> StepReport {
        StepReport {
            name: self.name,
            outcome: Outcome::Skipped,
            duration: Duration::ZERO,
            counts: TestCounts::default(),
        }
    }
}

/// How one step went, for the summary.
struct StepReport {
    name: &'static str,
    outcome: Outcome,
    /// Wall-clock time the step took.
    duration: Duration,
    /// Tests it ran; zero for steps that run none.
    counts: TestCounts,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Passed,
    Failed,
    Skipped,
}

/// What the command line asked of `ci`.
struct Options {
    /// Names of the steps not to run.
    skipped: Vec<String>,
}

/// Runs `cargo xtask ci` with the arguments after `ci`.
pub(crate) fn run(args: &[String]) -> Result<ExitCode> {
    let options = parse_options(args)?;
    let steps = steps();
    check_step_names(&options.skipped, &steps)?;
    let reports: Vec<StepReport> = steps
        .iter()
        .map(|step| {
            if options.skipped.iter().any(|name| name == step.name) {
                step.skipped()
            } else {
                step.run()
            }
        })
        .collect();
    print_summary(&reports);
    let failed = reports.iter().any(|report| report.outcome == Outcome::Failed);
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn parse_options(args: &[String]) -> Result<Options> {
    let mut skipped = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--skip" => skipped.push(args.next().context("`--skip` needs a step name")?.clone()),
            other => bail!("unknown argument `{other}` for `ci`; see `cargo xtask help`"),
        }
    }
    Ok(Options { skipped })
}

/// Refuses a `--skip` that names no step, so a typo cannot silently run what it meant to skip.
fn check_step_names(names: &[String], steps: &[Step]) -> Result<()> {
    let known: Vec<&str> = steps.iter().map(|step| step.name).collect();
    match names.iter().find(|name| !known.contains(&name.as_str())) {
        Some(unknown) => bail!("no step is named `{unknown}`; the steps are {}", known.join(", ")),
        None => Ok(()),
    }
}

/// Prints the table of steps, then the test totals as the very last line.
fn print_summary(reports: &[StepReport]) {
    println!();
    println!("==> summary");
    let mut total = TestCounts::default();
    for report in reports {
        let (result, time) = match report.outcome {
            Outcome::Passed => ("ok", seconds(report.duration)),
            Outcome::Failed => ("FAILED", seconds(report.duration)),
            Outcome::Skipped => ("skipped", String::new()),
        };
        let row = format!("    {:<14}{result:<9}{time:>9}", report.name);
        println!("{}", row.trim_end());
        total += report.counts;
    }
    // CI reads this line as the result of the test run; nothing may be printed after it.
    println!("tests: {} passed, {} failed", total.passed, total.failed);
}

fn seconds(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}
