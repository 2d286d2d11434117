//! Reads passed and failed test counts out of test runners' output.
//!
//! `cargo xtask ci` ends with `tests: N passed, M failed`, which CI reads as the result of the
//! test run. Neither runner offers a stable machine-readable report (libtest's JSON is
//! nightly-only, nextest's is experimental), so the counts come from the summary lines they
//! print for people. The parsers are pure functions of one line, and the formats they accept
//! are pinned by the tests at the bottom of this file.
//!
//! Colour codes are stripped first: `CARGO_TERM_COLOR=always` reaches nextest untouched.

use std::ops::AddAssign;

/// How many tests passed and failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TestCounts {
    /// Tests that ran and passed (nextest's flaky tests included: they passed on retry).
    pub(crate) passed: u64,
    /// Tests that ran and did not pass: failed, crashed or timed out.
    pub(crate) failed: u64,
}

impl AddAssign for TestCounts {
    fn add_assign(&mut self, other: Self) {
        self.passed += other.passed;
        self.failed += other.failed;
    }
}

/// The test runner whose output is read; each announces its counts differently.
///
/// Both runners also print what failing tests printed, and a test may print anything,
/// including lines that look like a runner's summary. Each reporter therefore trusts only the
/// lines in the places its runner puts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reporter {
    /// cargo-nextest: one `Summary` line for the whole run, on stderr, its label right-aligned
    /// at the start of the line. Replayed test output is indented, so it cannot supply one.
    Nextest,
    /// libtest, through `cargo test`: a `running N tests` line for each test binary and each
    /// doctest run, then the tests' own output, then that run's `test result:` line. The last
    /// result line of each run counts, and the runs are summed.
    Libtest,
    /// `cargo xtask cluster-test`: each scenario is a test, and its report ends with
    /// `N passed, M failed` as its last line on stdout. Node output never reaches its stdout.
    ClusterTest,
}

impl Reporter {
    /// The counts announced in `lines`, or `None` if the runner announced none (it did not
    /// get as far as running tests).
    pub(crate) fn count(self, lines: &[String]) -> Option<TestCounts> {
        match self {
            Reporter::Nextest => lines.iter().rev().find_map(|line| parse_nextest_summary(line)),
            Reporter::Libtest => sum_libtest_runs(lines),
            Reporter::ClusterTest => lines.iter().rev().find_map(|line| parse_cluster_test(line)),
        }
    }
}

/// Sums the last `test result:` line of each libtest run in `lines`.
fn sum_libtest_runs(lines: &[String]) -> Option<TestCounts> {
    let mut finished_runs = Vec::new();
    let mut this_run = None;
    for line in lines {
        if is_libtest_run_start(line) {
            finished_runs.extend(this_run.take());
        } else if let Some(result) = parse_libtest_result(line) {
            this_run = Some(result);
        }
    }
    finished_runs.extend(this_run);
    finished_runs.into_iter().reduce(|mut total, run| {
        total += run;
        total
    })
}

/// Parses nextest's final line, such as
/// `     Summary [   1.234s] 57 tests run: 55 passed (1 slow), 2 failed, 3 skipped`.
///
/// Tests that failed, could not be executed or timed out all count as failed.
fn parse_nextest_summary(line: &str) -> Option<TestCounts> {
    let line = strip_colour(line);
    // nextest right-aligns its status labels to 12 columns.
    let after_label = line.strip_prefix("     Summary ")?;
    let (_, results) = after_label.split_once(" run: ")?;
    let mut counts = TestCounts::default();
    let mut saw_passed = false;
    // Parenthesised details ("1 slow, 1 flaky") would otherwise split into false items.
    for item in without_parentheses(results).split(',') {
        let (number, label) = item.trim().split_once(' ')?;
        let number: u64 = number.parse().ok()?;
        match label.trim() {
            "passed" => {
                counts.passed += number;
                saw_passed = true;
            }
            "failed" | "exec failed" | "timed out" => counts.failed += number,
            _ => {}
        }
    }
    saw_passed.then_some(counts)
}

/// Parses the cluster test's last line, `5 passed, 1 failed`, and nothing looser.
fn parse_cluster_test(line: &str) -> Option<TestCounts> {
    let line = strip_colour(line);
    let (passed, failed) = line.trim_end().split_once(" passed, ")?;
    let failed = failed.strip_suffix(" failed")?;
    Some(TestCounts { passed: passed.parse().ok()?, failed: failed.parse().ok()? })
}

/// Whether `line` is libtest's `running 12 tests` (or `running 1 test`), which opens a run.
fn is_libtest_run_start(line: &str) -> bool {
    let line = strip_colour(line);
    let Some(rest) = line.strip_prefix("running ") else {
        return false;
    };
    let count = rest.strip_suffix(" tests").or_else(|| rest.strip_suffix(" test"));
    count.is_some_and(|count| count.parse::<u64>().is_ok())
}

/// Parses libtest's line for one test binary, such as
/// `test result: FAILED. 10 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; ...`.
fn parse_libtest_result(line: &str) -> Option<TestCounts> {
    let line = strip_colour(line);
    let (outcome, fields) = line.strip_prefix("test result: ")?.split_once(". ")?;
    if outcome != "ok" && outcome != "FAILED" {
        return None;
    }
    let mut passed = None;
    let mut failed = None;
    for field in fields.split("; ") {
        let Some((number, label)) = field.split_once(' ') else { continue };
        match label {
            "passed" => passed = number.parse().ok(),
            "failed" => failed = number.parse().ok(),
            _ => {}
        }
    }
    Some(TestCounts { passed: passed?, failed: failed? })
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`, and two-byte `ESC x`).
fn strip_colour(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            plain.push(c);
        } else if chars.next() == Some('[') {
            // A control sequence ends at its first byte in `@`..=`~`.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    plain
}

/// `text` with every `( ... )` group removed.
fn without_parentheses(text: &str) -> String {
    let mut depth = 0_u32;
    let mut kept = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth == 0 => kept.push(c),
            _ => {}
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(passed: u64, failed: u64) -> Option<TestCounts> {
        Some(TestCounts { passed, failed })
    }

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn nextest_summary_all_passed() {
        let line = "     Summary [   1.234s] 57 tests run: 57 passed, 0 skipped";
        assert_eq!(parse_nextest_summary(line), counts(57, 0));
    }

    #[test]
    fn nextest_summary_with_skipped() {
        let line = "     Summary [   1.234s] 57 tests run: 57 passed, 2 skipped";
        assert_eq!(parse_nextest_summary(line), counts(57, 0));
    }

    #[test]
    fn nextest_summary_with_failed_and_skipped() {
        let line = "     Summary [   0.149s] 57 tests run: 55 passed, 2 failed, 1 skipped";
        assert_eq!(parse_nextest_summary(line), counts(55, 2));
    }

    #[test]
    fn nextest_summary_singular_test() {
        let line = "     Summary [   0.007s] 1 test run: 1 passed, 4 skipped";
        assert_eq!(parse_nextest_summary(line), counts(1, 0));
    }

    /// Slow, flaky and leaky tests are details of `passed`, in parentheses with their own
    /// commas; crashes land in `failed`, and exec failures and timeouts are failures too.
    #[test]
    fn nextest_summary_with_details_and_every_kind_of_failure() {
        let line = "     Summary [  61.000s] 10 tests run: 6 passed (2 slow, 1 flaky, 1 leaky), \
                    1 failed, 1 exec failed, 2 timed out, 0 skipped";
        assert_eq!(parse_nextest_summary(line), counts(6, 4));
    }

    /// A cancelled run reports `finished/initial`; tests that never ran are not failures.
    #[test]
    fn nextest_summary_of_cancelled_run() {
        let line = "     Summary [   0.500s] 3/10 tests run: 2 passed, 1 failed, 0 skipped";
        assert_eq!(parse_nextest_summary(line), counts(2, 1));
    }

    #[test]
    fn nextest_summary_in_colour() {
        let line = "\u{1b}[31;1m     Summary\u{1b}[0m [   0.134s] \u{1b}[1m3\u{1b}[0m tests run: \
                    \u{1b}[1m2\u{1b}[0m \u{1b}[32;1mpassed\u{1b}[0m, \u{1b}[1m1\u{1b}[0m \
                    \u{1b}[31;1mfailed\u{1b}[0m, \u{1b}[1m1\u{1b}[0m \u{1b}[33;1mskipped\u{1b}[0m";
        assert_eq!(parse_nextest_summary(line), counts(2, 1));
    }

    #[test]
    fn nextest_other_lines_are_not_summaries() {
        assert_eq!(parse_nextest_summary("        PASS [   0.008s] (1/3) scratch tests::p"), None);
        assert_eq!(parse_nextest_summary("    Starting 3 tests across 1 binary"), None);
        assert_eq!(parse_nextest_summary("Summary of changes: 3 files"), None);
    }

    #[test]
    fn libtest_result_ok() {
        let line = "test result: ok. 12 passed; 0 failed; 0 ignored; 0 measured; \
                    0 filtered out; finished in 0.00s";
        assert_eq!(parse_libtest_result(line), counts(12, 0));
    }

    #[test]
    fn libtest_result_failed() {
        let line = "test result: FAILED. 2 passed; 1 failed; 1 ignored; 0 measured; \
                    0 filtered out; finished in 0.13s";
        assert_eq!(parse_libtest_result(line), counts(2, 1));
    }

    #[test]
    fn libtest_other_lines_are_not_results() {
        assert_eq!(parse_libtest_result("test tests::fail1 ... FAILED"), None);
        assert_eq!(parse_libtest_result("test result: maybe. 1 passed; 0 failed"), None);
        assert_eq!(parse_libtest_result("test result: ok. 1 passed"), None);
    }

    /// `cargo test` prints one result per test binary and one for the doctests: they add up.
    #[test]
    fn libtest_counts_sum_over_binaries() {
        let output = lines(
            "running 4 tests\n\
             test result: FAILED. 2 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out\n\
             \n\
             running 2 tests\n\
             test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        assert_eq!(Reporter::Libtest.count(&output), counts(4, 1));
    }

    /// nextest replays a failing test's captured stdout, libtest's result line included; only
    /// nextest's own summary counts, or that failure would be counted twice.
    #[test]
    fn nextest_count_ignores_replayed_libtest_output() {
        let output = lines(
            "        FAIL [   0.147s] (3/3) scratch tests::fail1\n\
             \x20 stdout ───\n\
             \x20   test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured\n\
             test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured\n\
             ────────────\n\
             \x20    Summary [   0.149s] 3 tests run: 2 passed, 1 failed, 1 skipped\n\
             \x20       FAIL [   0.147s] (3/3) scratch tests::fail1\n\
             error: test run failed",
        );
        assert_eq!(Reporter::Nextest.count(&output), counts(2, 1));
    }

    /// A failing test's output is printed before its run's result line, so a result line the
    /// test printed itself is not the last of its run.
    #[test]
    fn libtest_count_ignores_result_lines_printed_by_tests() {
        let output = lines(
            "running 2 tests\n\
             test tests::fail1 ... FAILED\n\
             ---- tests::fail1 stdout ----\n\
             test result: ok. 99 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n\
             test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n\
             running 1 test\n\
             test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        assert_eq!(Reporter::Libtest.count(&output), counts(2, 1));
    }

    #[test]
    fn libtest_run_starts() {
        assert!(is_libtest_run_start("running 12 tests"));
        assert!(is_libtest_run_start("running 1 test"));
        assert!(is_libtest_run_start("running 0 tests"));
        assert!(!is_libtest_run_start("running the numbers"));
        assert!(!is_libtest_run_start("    running 3 tests"));
    }

    /// nextest indents replayed test output, so a summary printed by a test is not nextest's,
    /// even when nextest replays it after its own summary (`failure-output = "final"`).
    #[test]
    fn nextest_count_ignores_summary_lines_printed_by_tests() {
        let output = lines(
            "\x20    Summary [   0.149s] 3 tests run: 2 passed, 1 failed, 1 skipped\n\
             \x20       FAIL [   0.147s] (3/3) scratch tests::fail1\n\
             \x20 stdout ───\n\
             \x20        Summary [   9.000s] 99 tests run: 99 passed, 0 skipped",
        );
        assert_eq!(Reporter::Nextest.count(&output), counts(2, 1));
    }

    #[test]
    fn no_announcement_means_no_counts() {
        let output = lines("error[E0425]: cannot find value `x` in this scope");
        assert_eq!(Reporter::Nextest.count(&output), None);
        assert_eq!(Reporter::Libtest.count(&output), None);
    }

    #[test]
    fn cluster_test_summary_is_its_last_such_line() {
        let output = lines(
            "==> [2/6] storm: every node casts numbered messages\n\
             \x20   ok in 1.2s: 20 pairs x 1000 messages\n\
             5 passed, 1 failed\n\
             \x20   Finished `dev` profile",
        );
        assert_eq!(Reporter::ClusterTest.count(&output), counts(5, 1));
        assert_eq!(parse_cluster_test("6 passed, 0 failed"), counts(6, 0));
        assert_eq!(parse_cluster_test("tests: 6 passed, 0 failed"), None);
        assert_eq!(parse_cluster_test("6 passed, 0 failed, 1 skipped"), None);
        assert_eq!(Reporter::ClusterTest.count(&lines("error: building failed")), None);
    }
}
