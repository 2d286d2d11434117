//! `cargo xtask mutants`: the whole paxos test binary against each mutant of the protocol.
//!
//! The mutants are one-line changes to the Paxos core's rules
//! (`crates/paxos/src/core/mutants.rs`), compiled into the test binary and off unless selected.
//! This command builds the binary once, runs it without a mutant (the control: it must pass, or
//! nothing can be measured), then once per mutant with `SHOAL_PAXOS_MUTANT=<name>`, and prints
//! a table: each mutant killed (by which tests, and their first words, which name the seed of a
//! failing walk or schedule) or survived. It exits non-zero if any mutant survives, or the
//! control fails.
//!
//! CI does not run this: it checks every mutant against the fast suites inside the test
//! binary (`every_mutant_is_killed_by_the_fast_suites`, in one build and about ten seconds).
//! Here every suite runs, simulations and the driver over TCP included. By default a mutant's
//! run stops at its first failing test (most die within a second); `--no-fail-fast` runs every
//! suite to the end (a minute or more each) to show everything that catches it, and
//! `--schedules N` / `--walks N` pass larger counts to the simulations and the walk (see
//! `crates/paxos/tests/paxos/sim/mod.rs`). Each run's output is kept in
//! `target/mutants/<name>.log`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{cargo, target_dir, workspace_root};

/// Where the mutants are declared, one `Variant = "name",` line each.
const MUTANTS_SOURCE: &str = "crates/paxos/src/core/mutants.rs";

/// The test that checks the mutants from inside the binary: not run here (it selects mutants
/// of its own, and the whole binary runs under each mutant anyway).
const IN_BINARY_CHECK: &str = "paxos::mutants::";

/// The longest one run of the binary may take before it is stopped (a mutant may make a
/// driver test wait on a quorum that never forms).
const RUN_LIMIT: Duration = Duration::from_secs(15 * 60);

/// What the command line asked for.
#[derive(Default)]
struct Options {
    /// Mutants to run (all if empty).
    names: Vec<String>,
    /// Run every test of a mutant's run, not only until the first failure.
    no_fail_fast: bool,
    /// `SHOAL_PAXOS_SCHEDULES` and `SHOAL_PAXOS_WALKS` for every run, if given.
    schedules: Option<u64>,
    walks: Option<u64>,
}

/// How one run of the test binary went.
struct RunReport {
    /// Tests that failed, each with the first line of its panic message, if one was seen.
    failed: BTreeMap<String, String>,
    /// Whether the binary exited with success.
    passed: bool,
    /// Whether it was stopped: at its first failure, or at [`RUN_LIMIT`].
    stopped: Option<&'static str>,
    took: Duration,
}

/// Runs `cargo xtask mutants` with the arguments after `mutants`.
pub(crate) fn run(args: &[String]) -> Result<ExitCode> {
    let options = parse_options(args)?;
    let all = declared_mutants()?;
    let chosen: Vec<String> = if options.names.is_empty() {
        all.clone()
    } else {
        if let Some(unknown) = options.names.iter().find(|name| !all.contains(name)) {
            bail!("no mutant is named `{unknown}`; the mutants are {}", all.join(", "));
        }
        options.names.clone()
    };
    let binary = build_test_binary()?;
    let logs = target_dir().join("mutants");
    fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;

    println!("==> control: the whole binary without a mutant");
    let control = run_binary(&binary, None, &options, &logs.join("control.log"))?;
    if !control.passed {
        println!("the tests fail without a mutant, so no mutant can be measured:");
        for (test, why) in &control.failed {
            println!("    {test}: {why}");
        }
        return Ok(ExitCode::FAILURE);
    }
    println!("    passed in {:.1} s", control.took.as_secs_f64());

    let mut reports = Vec::new();
    for name in &chosen {
        println!("==> {name}");
        let report = run_binary(&binary, Some(name), &options, &logs.join(format!("{name}.log")))?;
        println!("    {}", verdict(&report));
        reports.push((name.clone(), report));
    }
    print_table(&reports);
    let survivors = reports.iter().filter(|(_, report)| report.failed.is_empty()).count();
    println!(
        "mutants: {} run, {} killed, {survivors} survived",
        reports.len(),
        reports.len() - survivors
    );
    Ok(if survivors == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn parse_options(args: &[String]) -> Result<Options> {
    let mut options = Options::default();
    let mut args = args.iter();
    let number = |flag: &str, value: Option<&String>| -> Result<u64> {
        let value = value.with_context(|| format!("`{flag}` needs a number"))?;
        value.parse().with_context(|| format!("`{flag} {value}`: not a number"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--no-fail-fast" => options.no_fail_fast = true,
            "--schedules" => options.schedules = Some(number(arg, args.next())?),
            "--walks" => options.walks = Some(number(arg, args.next())?),
            flag if flag.starts_with('-') => {
                bail!("unknown argument `{flag}` for `mutants`; see `cargo xtask help`")
            }
            name => options.names.push(name.to_owned()),
        }
    }
    Ok(options)
}

/// The mutants' names, read from their declaration (`Variant = "name",` inside `mutants!`).
fn declared_mutants() -> Result<Vec<String>> {
    let path = workspace_root().join(MUTANTS_SOURCE);
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let names: Vec<String> = text
        .lines()
        .filter_map(|line| {
            let (variant, rest) = line.trim().split_once(" = \"")?;
            let name = rest.strip_suffix("\",")?;
            let is_variant = variant.starts_with(|c: char| c.is_ascii_uppercase())
                && variant.chars().all(|c| c.is_ascii_alphanumeric());
            (is_variant && name.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
                .then(|| name.to_owned())
        })
        .collect();
    if names.is_empty() {
        bail!("no mutant declared in {}", path.display());
    }
    Ok(names)
}

/// Builds the paxos test binary (mutants compiled in, all off) and returns its path.
fn build_test_binary() -> Result<PathBuf> {
    let args =
        ["test", "-p", "shoal-paxos", "--test", "paxos", "--no-run", "--message-format=json"];
    println!("==> build: cargo {}", args.join(" "));
    let output = cargo(&args).stderr(Stdio::inherit()).output().context("running cargo")?;
    if !output.status.success() {
        bail!("the paxos test binary does not build");
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    // The one test artifact's line names its executable: `"executable":"/path/to/paxos-hash"`.
    let executable = stdout
        .lines()
        .filter(|line| line.contains("\"reason\":\"compiler-artifact\""))
        .find_map(|line| {
            let rest = line.split_once("\"executable\":\"")?.1;
            Some(rest.split_once('"')?.0.to_owned())
        })
        .context("cargo named no test executable")?;
    Ok(PathBuf::from(executable))
}

/// Runs the whole binary (but the in-binary mutant check), with `mutant` on if given, its
/// output kept in `log`.
fn run_binary(
    binary: &Path,
    mutant: Option<&str>,
    options: &Options,
    log: &Path,
) -> Result<RunReport> {
    let mut command = Command::new(binary);
    command
        .args(["--skip", IN_BINARY_CHECK, "--nocapture"])
        .current_dir(workspace_root().join("crates/paxos"))
        // A property test failing under a mutant must not write a regression file into the
        // source tree, nor spend minutes shrinking.
        .env("PROPTEST_DISABLE_FAILURE_PERSISTENCE", "1")
        .env("PROPTEST_MAX_SHRINK_ITERS", "0")
        .env("PROPTEST_RNG_SEED", "1")
        .env_remove("SHOAL_PAXOS_MUTANT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(name) = mutant {
        command.env("SHOAL_PAXOS_MUTANT", name);
    }
    if let Some(schedules) = options.schedules {
        command.env("SHOAL_PAXOS_SCHEDULES", schedules.to_string());
    }
    if let Some(walks) = options.walks {
        command.env("SHOAL_PAXOS_WALKS", walks.to_string());
    }
    let started = Instant::now();
    let mut child = command.spawn().with_context(|| format!("starting {}", binary.display()))?;
    let lines = stream_lines(&mut child);
    let fail_fast = mutant.is_some() && !options.no_fail_fast;
    let mut kept = String::new();
    let mut failed = BTreeMap::new();
    let mut panics: BTreeMap<String, String> = BTreeMap::new();
    let mut panicking: Option<String> = None;
    let mut stopped = None;
    loop {
        let left = RUN_LIMIT.saturating_sub(started.elapsed());
        let line = match lines.recv_timeout(left) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                stopped = Some("stopped at the time limit");
                failed.insert("(the whole run)".to_owned(), "did not finish in time".to_owned());
                break;
            }
        };
        kept.push_str(&line);
        kept.push('\n');
        // `thread 'NAME' (ID) panicked at FILE:LINE:`, its message on the next line.
        if let Some(thread) = panicking.take() {
            panics.entry(thread).or_insert_with(|| line.clone());
        }
        if let Some(rest) = line.strip_prefix("thread '")
            && rest.contains("panicked at")
        {
            panicking = rest.split_once('\'').map(|(name, _)| name.to_owned());
        }
        if let Some(test) = line.strip_prefix("test ").and_then(|l| l.strip_suffix(" ... FAILED")) {
            let why = panics.get(test).cloned().unwrap_or_default();
            failed.insert(test.to_owned(), why);
            if fail_fast {
                stopped = Some("stopped at the first failure");
                break;
            }
        }
    }
    if stopped.is_some() {
        // Our own child: stopping it is how a run ends early.
        let _ = child.kill();
    }
    let status = child.wait().context("waiting for the test binary")?;
    fs::write(log, kept).with_context(|| format!("writing {}", log.display()))?;
    let passed = status.success() && failed.is_empty();
    if !status.success() && failed.is_empty() && stopped.is_none() {
        failed.insert("(the whole run)".to_owned(), format!("exited with {status}"));
    }
    Ok(RunReport { failed, passed, stopped, took: started.elapsed() })
}

/// Both of the child's output streams, a line at a time, through one channel.
fn stream_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    let pipes: [Option<Box<dyn Read + Send>>; 2] = [
        child.stdout.take().map(|pipe| Box::new(pipe) as Box<dyn Read + Send>),
        child.stderr.take().map(|pipe| Box::new(pipe) as Box<dyn Read + Send>),
    ];
    for pipe in pipes.into_iter().flatten() {
        crate::cluster_test::forward_lines(pipe, sender.clone());
    }
    receiver
}

fn verdict(report: &RunReport) -> String {
    let took = format!("{:.1} s", report.took.as_secs_f64());
    match report.failed.keys().next() {
        None => format!("SURVIVED ({took}): every test passed"),
        Some(_) => {
            let tests: Vec<&str> = report.failed.keys().map(String::as_str).collect();
            let stopped = report.stopped.map(|s| format!(", {s}")).unwrap_or_default();
            format!("killed ({took}{stopped}) by {}", tests.join(", "))
        }
    }
}

/// One row per mutant: verdict, time, and each failing test with its panic's first line.
fn print_table(reports: &[(String, RunReport)]) {
    println!();
    println!("==> mutants");
    let width = reports.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    for (name, report) in reports {
        let took = format!("{:.1}s", report.took.as_secs_f64());
        let result = if report.failed.is_empty() { "SURVIVED" } else { "killed" };
        println!("    {name:<width$}  {result:<8} {took:>7}");
        for (test, why) in &report.failed {
            let mut why: String = why.chars().take(160).collect();
            if why.len() < report.failed[test].len() {
                why.push_str("...");
            }
            println!("    {:<width$}    {test}: {why}", "");
        }
    }
}
