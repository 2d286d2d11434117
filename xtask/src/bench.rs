//! `cargo xtask bench`: runs the benchmarks and prints one `name value unit` line per metric.
//!
//! The measuring is done by the `shoal-bench` binary (the `bench/` package), which offers two
//! commands: `list` prints `<name> <unit>` per metric, and `run <name>` takes one sample in a
//! fresh OS process and prints the value alone on stdout. This command builds it in release
//! mode with its `unsealed` feature (for the `..._unsealed` metrics), runs each selected
//! metric `--runs` times (5 by default, as SPEC.md's targets are judged on the median of 5),
//! and prints the median. A fresh process per sample means no
//! sample inherits the heap, threads or warm caches of another.
//!
//! Only result lines go to stdout, so results can be saved and compared run to run; progress
//! and the individual samples go to stderr. A sample that fails, or runs longer than 60 s
//! (it is killed), fails its metric; the other metrics still run, and the exit code is
//! non-zero.
//!
//! What it is not: a statistics harness. There are no warm-up runs, outlier rejection or
//! comparisons with earlier results here; the median of a few fresh processes is the figure
//! the targets are stated in.

use std::env;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};

use crate::{cargo, target_dir};

/// Samples per metric unless `--runs` says otherwise.
const DEFAULT_RUNS: usize = 5;

/// How long one `shoal-bench` process may take before it is killed.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a running sample is checked for having exited.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// What the command line asked of `bench`.
#[derive(Debug, PartialEq)]
struct Options {
    /// Metric-name prefixes; empty selects every metric.
    prefixes: Vec<String>,
    /// Samples per metric, at least 1.
    runs: usize,
}

/// One metric, as `shoal-bench list` describes it.
#[derive(Debug, PartialEq)]
struct Metric {
    name: String,
    unit: String,
}

/// Runs `cargo xtask bench` with the arguments after `bench`.
pub(crate) fn run(args: &[String]) -> Result<ExitCode> {
    let options = parse_options(args)?;
    build_bench_binary()?;
    let binary = bench_binary();
    let listing = run_with_timeout(&binary, &["list"])?;
    let metrics = select(parse_metric_list(&listing)?, &options.prefixes)?;
    let mut failed = Vec::new();
    for metric in &metrics {
        match median_of_runs(&binary, metric, options.runs) {
            Ok(median) => println!("{} {} {}", metric.name, format_value(median), metric.unit),
            Err(error) => {
                eprintln!("    {}: FAILED: {error:#}", metric.name);
                failed.push(metric.name.as_str());
            }
        }
    }
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("{} of {} metrics failed: {}", failed.len(), metrics.len(), failed.join(", "));
    Ok(ExitCode::FAILURE)
}

fn parse_options(args: &[String]) -> Result<Options> {
    let mut options = Options { prefixes: Vec::new(), runs: DEFAULT_RUNS };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => {
                let runs = args.next().context("`--runs` needs a number")?;
                options.runs = runs.parse().ok().filter(|&runs| runs > 0).with_context(|| {
                    format!("`--runs` needs a whole number of at least 1, not `{runs}`")
                })?;
            }
            flag if flag.starts_with('-') => {
                bail!("unknown option `{flag}` for `bench`; see `cargo xtask help`")
            }
            prefix => options.prefixes.push(prefix.to_owned()),
        }
    }
    Ok(options)
}

/// Builds `shoal-bench` in release mode, as the targets are stated for release builds, with
/// its `unsealed` feature: the `..._unsealed` metrics measure what the records cost. (A build
/// of this one package, so the feature reaches no other workspace build.)
fn build_bench_binary() -> Result<()> {
    let args = ["build", "--release", "--locked", "-p", "shoal-bench", "--features", "unsealed"];
    eprintln!("==> cargo {}", args.join(" "));
    // Cargo's own stdout goes to stderr too, keeping stdout for result lines alone.
    let status =
        cargo(&args).stdout(Stdio::from(io::stderr())).status().context("could not start cargo")?;
    ensure!(status.success(), "building shoal-bench failed ({status})");
    Ok(())
}

/// Where cargo put the release `shoal-bench`.
fn bench_binary() -> PathBuf {
    target_dir().join("release").join(format!("shoal-bench{}", env::consts::EXE_SUFFIX))
}

/// Parses `shoal-bench list`: one `<name> <unit>` per line.
fn parse_metric_list(listing: &str) -> Result<Vec<Metric>> {
    let metrics: Vec<Metric> = listing
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (name, unit) = line.trim().split_once(char::is_whitespace).with_context(|| {
                format!("`shoal-bench list` printed `{line}`, not `<name> <unit>`")
            })?;
            Ok(Metric { name: name.to_owned(), unit: unit.trim().to_owned() })
        })
        .collect::<Result<_>>()?;
    ensure!(!metrics.is_empty(), "`shoal-bench list` listed no metrics");
    Ok(metrics)
}

/// The metrics whose names start with any of `prefixes` (all of them if there are none).
///
/// A prefix that matches nothing is an error, not an empty selection: it is almost always a
/// typo, and silently measuring nothing would hide it.
fn select(metrics: Vec<Metric>, prefixes: &[String]) -> Result<Vec<Metric>> {
    let selected_by = |metric: &Metric, prefix: &String| metric.name.starts_with(prefix.as_str());
    let unmatched: Vec<&str> = prefixes
        .iter()
        .filter(|prefix| !metrics.iter().any(|metric| selected_by(metric, prefix)))
        .map(String::as_str)
        .collect();
    if !unmatched.is_empty() {
        let known: Vec<&str> = metrics.iter().map(|metric| metric.name.as_str()).collect();
        bail!(
            "no metric starts with `{}`; the metrics are: {}",
            unmatched.join("`, `"),
            known.join(", ")
        );
    }
    if prefixes.is_empty() {
        return Ok(metrics);
    }
    Ok(metrics
        .into_iter()
        .filter(|metric| prefixes.iter().any(|prefix| selected_by(metric, prefix)))
        .collect())
}

/// Takes `runs` samples of `metric`, each in a fresh process, and returns their median.
/// The first failed sample fails the metric: a median of what is left would mislead.
fn median_of_runs(binary: &Path, metric: &Metric, runs: usize) -> Result<f64> {
    eprintln!("==> {} ({runs} runs)", metric.name);
    let mut samples = Vec::with_capacity(runs);
    for run in 1..=runs {
        let stdout = run_with_timeout(binary, &["run", &metric.name])
            .with_context(|| format!("run {run} of {runs}"))?;
        let sample = parse_sample(&stdout).with_context(|| format!("run {run} of {runs}"))?;
        eprintln!("    run {run}/{runs}: {} {}", format_value(sample), metric.unit);
        samples.push(sample);
    }
    median(&samples).context("no samples were taken")
}

/// Parses `shoal-bench run`'s stdout: one line holding one finite number.
fn parse_sample(stdout: &str) -> Result<f64> {
    let mut lines = stdout.lines().filter(|line| !line.trim().is_empty());
    let (Some(line), None) = (lines.next(), lines.next()) else {
        bail!("expected one line holding a number on stdout, got {stdout:?}");
    };
    let value: f64 = line
        .trim()
        .parse()
        .with_context(|| format!("expected a number on stdout, got {line:?}"))?;
    ensure!(value.is_finite(), "expected a finite number on stdout, got {line:?}");
    Ok(value)
}

/// The middle sample, or the mean of the two middle ones for an even count.
fn median(samples: &[f64]) -> Option<f64> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        len if len % 2 == 1 => Some(sorted[middle]),
        _ => Some((sorted[middle - 1] + sorted[middle]) / 2.0),
    }
}

/// A value for a result line: whole numbers from 100 up, where decimals would be noise;
/// below that three decimals, or as many as it takes to show three significant digits.
fn format_value(value: f64) -> String {
    if value.abs() >= 100.0 {
        return format!("{value:.0}");
    }
    let decimals = if value == 0.0 {
        3
    } else {
        // For 0.0123, log10 is -1.9: the first significant digit is the 2nd decimal.
        let first_significant_decimal = -(value.abs().log10().floor() as i32);
        (first_significant_decimal + 2).max(3) as usize
    };
    format!("{value:.decimals$}")
}

/// Runs `binary args` with no input, its stderr shown, and returns its stdout.
///
/// The run is killed once it has taken [`RUN_TIMEOUT`]. Its stdout is read on a thread of
/// its own, so a child that prints more than a pipe holds cannot block, and a helper process
/// that keeps the pipe open after the child exits cannot hang xtask past the deadline.
fn run_with_timeout(binary: &Path, args: &[&str]) -> Result<String> {
    let command_line = format!("{} {}", binary.display(), args.join(" "));
    let deadline = Instant::now() + RUN_TIMEOUT;
    let mut child = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{command_line}`"))?;
    let stdout = read_on_thread(child.stdout.take().context("stdout was not piped")?);
    let Some(status) = wait_until(&mut child, deadline)? else {
        let _ = child.kill(); // It may have exited just now; either way it is gone after wait.
        child.wait()?;
        bail!("`{command_line}` took longer than {} s and was killed", RUN_TIMEOUT.as_secs());
    };
    ensure!(status.success(), "`{command_line}` failed ({status})");
    let remaining = deadline.saturating_duration_since(Instant::now());
    stdout
        .recv_timeout(remaining)
        .map_err(|_| {
            anyhow!("`{command_line}` exited, but its stdout was held open past the deadline")
        })?
        .with_context(|| format!("could not read the stdout of `{command_line}`"))
}

/// Reads `pipe` to its end on a new thread; the text arrives on the returned channel.
fn read_on_thread(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<io::Result<String>> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mut text = String::new();
        let result = pipe.read_to_string(&mut text).map(|_| text);
        // The receiver is gone only if xtask gave up on this run already.
        let _ = sender.send(result);
    });
    receiver
}

/// Waits for `child` to exit, but not past `deadline`: `None` means it is still running.
fn wait_until(child: &mut Child, deadline: Instant) -> io::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|&arg| arg.to_owned()).collect()
    }

    fn metric(name: &str, unit: &str) -> Metric {
        Metric { name: name.to_owned(), unit: unit.to_owned() }
    }

    #[test]
    fn options_default_to_every_metric_and_five_runs() {
        let options = parse_options(&[]).unwrap();
        assert_eq!(options, Options { prefixes: vec![], runs: 5 });
    }

    #[test]
    fn options_take_prefixes_and_runs_in_any_order() {
        let options = parse_options(&strings(&["local_", "--runs", "3", "spawn"])).unwrap();
        assert_eq!(options, Options { prefixes: strings(&["local_", "spawn"]), runs: 3 });
    }

    #[test]
    fn options_refuse_zero_runs_and_unknown_flags() {
        assert!(parse_options(&strings(&["--runs", "0"])).is_err());
        assert!(parse_options(&strings(&["--runs"])).is_err());
        assert!(parse_options(&strings(&["--fast"])).is_err());
    }

    #[test]
    fn metric_list_is_name_then_unit() {
        let listing = "local_send_msgs_per_s msgs/s\nlocal_call_rtt_us us\n\n";
        let metrics = parse_metric_list(listing).unwrap();
        assert_eq!(
            metrics,
            [metric("local_send_msgs_per_s", "msgs/s"), metric("local_call_rtt_us", "us")]
        );
        assert!(parse_metric_list("spawn_ns\n").is_err(), "a metric without a unit");
        assert!(parse_metric_list("").is_err(), "no metrics at all");
    }

    #[test]
    fn selection_is_by_prefix() {
        let metrics = || {
            vec![
                metric("local_send", "msgs/s"),
                metric("local_call", "us"),
                metric("spawn_ns", "ns"),
            ]
        };
        assert_eq!(select(metrics(), &[]).unwrap().len(), 3);
        let local = select(metrics(), &strings(&["local_"])).unwrap();
        assert_eq!(local, [metric("local_send", "msgs/s"), metric("local_call", "us")]);
        let both = select(metrics(), &strings(&["spawn", "local_call"])).unwrap();
        assert_eq!(both, [metric("local_call", "us"), metric("spawn_ns", "ns")]);
    }

    #[test]
    fn selection_names_the_metrics_when_a_prefix_matches_none() {
        let error = select(vec![metric("spawn_ns", "ns")], &strings(&["spwan"])).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("spwan") && message.contains("spawn_ns"), "{message}");
    }

    #[test]
    fn sample_is_one_finite_number() {
        assert_eq!(parse_sample("12345.5\n").unwrap(), 12345.5);
        assert!(parse_sample("").is_err());
        assert!(parse_sample("1\n2\n").is_err());
        assert!(parse_sample("fast\n").is_err());
        assert!(parse_sample("NaN\n").is_err());
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[5.0, 1.0, 4.0, 2.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn values_from_100_up_are_whole() {
        assert_eq!(format_value(12_345_678.4), "12345678");
        assert_eq!(format_value(100.0), "100");
        assert_eq!(format_value(999.6), "1000");
    }

    #[test]
    fn values_below_100_keep_three_significant_decimals() {
        assert_eq!(format_value(99.25), "99.250");
        assert_eq!(format_value(1.07), "1.070");
        assert_eq!(format_value(0.45), "0.450");
        assert_eq!(format_value(0.0123), "0.0123");
        assert_eq!(format_value(0.0), "0.000");
    }
}
