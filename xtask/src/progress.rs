//! Progress of a run of long steps: a live status line on a terminal, plain lines elsewhere.
//!
//! `cargo xtask cluster-test` runs scenarios that take seconds to minutes each and says what
//! it is waiting for while they run. Everything it prints while a scenario runs goes through
//! [`Progress`], which knows whether stdout is a terminal (`std::io::IsTerminal`):
//!
//! ```text
//! on a terminal                                  elsewhere (CI, a pipe, a file)
//!
//! ==> [8/15] lock: every node loops on ...        ==> [8/15] lock: every node loops on ...
//!     SIGKILL d while it holds token 14               SIGKILL d while it holds token 14
//!     [8/15] lock 3.1s: full mesh: e sees [a]         ... full mesh: e sees [a]
//!     `- the live line, redrawn in place              ... full mesh: e sees [a,b]
//!                                                     `- notes: one a second at most
//! and once the step is over, in both:
//!     ok in 7.3s: 31 holds, 205 fenced writes, ...
//! ```
//!
//! A *line* ([`Progress::line`]) is permanent: printed as it comes in both modes (on a
//! terminal, above the live line). A *note* ([`Progress::note`]) is the latest state of a
//! wait: on a terminal it only updates the live line, which shows the step's label, the time
//! it has run and its latest note, and is redrawn in place (`\r`, then erase the line) at
//! most ten times a second; elsewhere it is printed as a `    ... note` line, at most one a
//! second per step and only when it changed, so that CI logs stay readable and hold no escape
//! codes. When a step finishes ([`Progress::finish`]), its final line replaces the live line.
//!
//! The decisions (what to print and when) are made by [`Status`], which is given the time
//! and returns the text to write, so tests check them without a terminal or a clock;
//! [`Progress`] writes that text to stdout and, on a terminal, runs a ticker thread that
//! keeps the elapsed time moving while nothing is reported.
//!
//! What it is not: a general progress bar (no bars, no colours, one step at a time). Std
//! cannot ask the terminal its width, so the live line is cut to `$COLUMNS` (80 when unset);
//! a terminal narrower than that wraps it and the redraw leaves the wrapped part behind.

use std::env;
use std::io::{self, IsTerminal, Write};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The least time between two draws of the live line.
const REDRAW_INTERVAL: Duration = Duration::from_millis(100);

/// The least time between two notes printed as plain lines, within one step.
const NOTE_INTERVAL: Duration = Duration::from_secs(1);

/// Back to the start of the line and clear it: `\r`, then erase the whole line (`ESC [ 2 K`).
const CLEAR_LINE: &str = "\r\x1b[2K";

/// The progress of a run, shown on stdout. Dropping it stops its ticker and clears the live
/// line, if one is on screen.
pub(crate) struct Progress {
    status: Arc<Mutex<Status>>,
    /// Dropped to stop the ticker (a terminal only).
    stop: Option<mpsc::Sender<()>>,
    ticker: Option<JoinHandle<()>>,
}

impl Progress {
    /// Progress on stdout: live if stdout is a terminal, plain lines otherwise.
    pub(crate) fn stdout() -> Self {
        let mode = if io::stdout().is_terminal() {
            Mode::Live { width: terminal_width() }
        } else {
            Mode::Plain
        };
        let status = Arc::new(Mutex::new(Status::new(mode)));
        let Mode::Live { .. } = mode else {
            return Self { status, stop: None, ticker: None };
        };
        let (stop, stopped) = mpsc::channel::<()>();
        let ticking = Arc::clone(&status);
        let ticker = thread::spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(REDRAW_INTERVAL) {
                apply(&ticking, Status::tick);
            }
        });
        Self { status, stop: Some(stop), ticker: Some(ticker) }
    }

    /// A step begins: on a terminal, its live line shows `label` and the time since now.
    pub(crate) fn start(&self, label: &str) {
        apply(&self.status, |status, now| status.start(label, now));
    }

    /// The latest state of what the step is doing (see the module docs for how it is shown).
    pub(crate) fn note(&self, note: &str) {
        apply(&self.status, |status, now| status.note(note, now));
    }

    /// A permanent line, printed as it is.
    pub(crate) fn line(&self, line: &str) {
        apply(&self.status, |status, now| status.line(line, now));
    }

    /// The step is over: its final line replaces the live line.
    pub(crate) fn finish(&self, line: &str) {
        apply(&self.status, |status, _| status.finish(line));
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop = None;
        if let Some(ticker) = self.ticker.take() {
            // The ticker only draws; if it panicked, there is nothing left to clean up.
            let _ = ticker.join();
        }
        apply(&self.status, |status, _| status.clear());
    }
}

/// Runs `change` on the status and writes what it returns, under the lock, so that the
/// ticker and the step never interleave their output.
fn apply(status: &Mutex<Status>, change: impl FnOnce(&mut Status, Instant) -> String) {
    let mut status = status.lock().unwrap_or_else(PoisonError::into_inner);
    let text = change(&mut status, Instant::now());
    if text.is_empty() {
        return;
    }
    let mut stdout = io::stdout().lock();
    // Ignored like `tee` ignores it: progress must not fail a run whose stdout has gone.
    let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
}

/// `$COLUMNS` if set to something sensible, else 80.
fn terminal_width() -> usize {
    env::var("COLUMNS").ok().and_then(|columns| columns.parse().ok()).unwrap_or(80).max(20)
}

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// A terminal `width` columns wide: a live line, redrawn in place.
    Live { width: usize },
    /// Anything else: plain lines only, no escape codes.
    Plain,
}

/// What is shown, and what to print next: each method takes the time and returns the text
/// to write (empty for nothing).
struct Status {
    mode: Mode,
    step: Option<Step>,
    /// When the live line on screen was drawn; `None` when there is none.
    drawn: Option<Instant>,
    /// The last note printed as a plain line and when; reset when a step starts.
    printed_note: Option<(String, Instant)>,
}

/// The step under way.
struct Step {
    /// `[3/15] lock`.
    label: String,
    started: Instant,
    /// The latest note; empty when there is none, or a line was printed since.
    note: String,
}

impl Status {
    fn new(mode: Mode) -> Self {
        Self { mode, step: None, drawn: None, printed_note: None }
    }

    fn start(&mut self, label: &str, now: Instant) -> String {
        let mut text = self.clear();
        self.step = Some(Step { label: label.to_owned(), started: now, note: String::new() });
        self.printed_note = None;
        text.push_str(&self.draw(now));
        text
    }

    fn note(&mut self, note: &str, now: Instant) -> String {
        if let Some(step) = &mut self.step {
            note.clone_into(&mut step.note);
        }
        if let Mode::Live { .. } = self.mode {
            return self.tick(now);
        }
        let due = self.printed_note.as_ref().is_none_or(|(printed, at)| {
            printed != note && now.duration_since(*at) >= NOTE_INTERVAL
        });
        if !due {
            return String::new();
        }
        self.printed_note = Some((note.to_owned(), now));
        format!("    ... {note}\n")
    }

    fn line(&mut self, line: &str, now: Instant) -> String {
        let mut text = self.clear();
        text.push_str(line);
        text.push('\n');
        // The note was about what came before this line.
        if let Some(step) = &mut self.step {
            step.note.clear();
        }
        text.push_str(&self.draw(now));
        text
    }

    fn finish(&mut self, line: &str) -> String {
        self.step = None;
        let mut text = self.clear();
        text.push_str(line);
        text.push('\n');
        text
    }

    /// Redraws the live line if it is due.
    fn tick(&mut self, now: Instant) -> String {
        let due = self.drawn.is_none_or(|at| now.duration_since(at) >= REDRAW_INTERVAL);
        if due { self.draw(now) } else { String::new() }
    }

    /// Draws the live line, if there is one to draw.
    fn draw(&mut self, now: Instant) -> String {
        let Some(line) = self.live_line(now) else {
            return String::new();
        };
        self.drawn = Some(now);
        format!("{CLEAR_LINE}{line}")
    }

    /// Clears the live line, if one is on screen.
    fn clear(&mut self) -> String {
        match self.drawn.take() {
            Some(_) => CLEAR_LINE.to_owned(),
            None => String::new(),
        }
    }

    /// `    [3/15] lock 4.2s: NOTE`, cut to the terminal's width; `None` when not live or
    /// no step is under way.
    fn live_line(&self, now: Instant) -> Option<String> {
        let (Mode::Live { width }, Some(step)) = (self.mode, &self.step) else {
            return None;
        };
        let mut line = format!("    {} {}", step.label, seconds(now.duration_since(step.started)));
        if !step.note.is_empty() {
            line.push_str(": ");
            line.push_str(&step.note);
        }
        Some(cut_to_width(line, width))
    }
}

/// `line` if it fits in `width - 1` columns (a line that fills the last column wraps on some
/// terminals), else its start and `...`. Counts characters, which is columns for the ASCII
/// that cluster-test prints.
fn cut_to_width(line: String, width: usize) -> String {
    let columns = width.saturating_sub(1);
    if line.chars().count() <= columns {
        return line;
    }
    let mut cut: String = line.chars().take(columns.saturating_sub(3)).collect();
    cut.push_str("...");
    cut
}

/// `3.0s`: a duration as the reports show it.
pub(crate) fn seconds(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: Mode = Mode::Live { width: 80 };

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    /// A whole plain run: lines and notes as lines, the final line last, and not one escape
    /// code or carriage return (CI logs are read as text).
    #[test]
    fn plain_mode_prints_plain_lines_only() {
        let t0 = Instant::now();
        let mut status = Status::new(Mode::Plain);
        let mut out = status.line("==> [1/2] join: start the nodes", t0);
        out += &status.start("[1/2] join", t0);
        out += &status.note("full mesh: a sees []", at(t0, 10));
        out += &status.line("    started b", at(t0, 20));
        out += &status.tick(at(t0, 500));
        out += &status.note("full mesh: a sees [b]", at(t0, 1010));
        out += &status.finish("    ok in 1.2s: 2 nodes");
        assert_eq!(
            out,
            "==> [1/2] join: start the nodes\n\
             \x20   ... full mesh: a sees []\n\
             \x20   started b\n\
             \x20   ... full mesh: a sees [b]\n\
             \x20   ok in 1.2s: 2 nodes\n"
        );
        assert!(!out.contains(['\x1b', '\r']));
    }

    /// Plain notes: at most one a second per step, and a note that did not change is not
    /// repeated; a new step may print its first note at once.
    #[test]
    fn plain_notes_are_throttled_to_one_a_second_per_step() {
        let t0 = Instant::now();
        let mut status = Status::new(Mode::Plain);
        status.start("[1/2] kill", t0);
        assert_eq!(
            status.note("nodedown seen: 4 missing", t0),
            "    ... nodedown seen: 4 missing\n"
        );
        assert_eq!(status.note("nodedown seen: 3 missing", at(t0, 999)), "");
        assert_eq!(status.note("full mesh: a sees []", at(t0, 999)), "");
        assert_eq!(status.note("nodedown seen: 4 missing", at(t0, 1500)), "");
        assert_eq!(
            status.note("full mesh: a sees []", at(t0, 1500)),
            "    ... full mesh: a sees []\n"
        );
        status.finish("    ok in 1.6s");
        status.start("[2/2] partition", at(t0, 1600));
        assert_eq!(status.note("views split", at(t0, 1600)), "    ... views split\n");
    }

    /// The live line: label, time run and latest note, drawn over itself; a permanent line
    /// is printed above it and clears the note; the final line replaces it.
    #[test]
    fn live_mode_redraws_one_line_in_place() {
        let t0 = Instant::now();
        let mut status = Status::new(LIVE);
        assert_eq!(
            status.line("==> [3/15] lock: loop on a lock", t0),
            "==> [3/15] lock: loop on a lock\n"
        );
        assert_eq!(status.start("[3/15] lock", t0), "\r\x1b[2K    [3/15] lock 0.0s");
        assert_eq!(
            status.note("full mesh", at(t0, 240)),
            "\r\x1b[2K    [3/15] lock 0.2s: full mesh"
        );
        assert_eq!(
            status.line("    SIGKILL c", at(t0, 300)),
            "\r\x1b[2K    SIGKILL c\n\r\x1b[2K    [3/15] lock 0.3s"
        );
        assert_eq!(
            status.finish("    ok in 3.0s: 7 tokens"),
            "\r\x1b[2K    ok in 3.0s: 7 tokens\n"
        );
        assert_eq!(status.tick(at(t0, 3000)), "", "no live line between steps");
    }

    /// At most ten draws a second, however often notes come.
    #[test]
    fn live_mode_redraws_at_most_every_100_ms() {
        let t0 = Instant::now();
        let mut status = Status::new(LIVE);
        status.start("[1/1] storm", t0);
        assert_eq!(status.note("20 pairs incomplete", at(t0, 50)), "");
        assert_eq!(status.tick(at(t0, 99)), "");
        assert_eq!(status.tick(at(t0, 100)), "\r\x1b[2K    [1/1] storm 0.1s: 20 pairs incomplete");
        assert_eq!(status.tick(at(t0, 199)), "");
        assert_eq!(status.tick(at(t0, 200)), "\r\x1b[2K    [1/1] storm 0.2s: 20 pairs incomplete");
        assert_eq!(status.note("19 pairs incomplete", at(t0, 250)), "");
        assert_eq!(status.tick(at(t0, 300)), "\r\x1b[2K    [1/1] storm 0.3s: 19 pairs incomplete");
    }

    /// A long note is cut so that the live line never wraps (a wrapped line cannot be
    /// redrawn in place).
    #[test]
    fn the_live_line_fits_the_terminal() {
        let t0 = Instant::now();
        let mut status = Status::new(Mode::Live { width: 40 });
        status.start("[1/1] storm", t0);
        let drawn = status.note(&"a->b 17, ".repeat(20), at(t0, 100));
        let line = drawn.strip_prefix(CLEAR_LINE).unwrap();
        assert_eq!(line, "    [1/1] storm 0.1s: a->b 17, a->b ...");
        assert_eq!(line.len(), 39);
        assert_eq!(cut_to_width("short".to_owned(), 40), "short");
    }

    #[test]
    fn seconds_have_one_decimal() {
        assert_eq!(seconds(Duration::from_millis(2960)), "3.0s");
        assert_eq!(seconds(Duration::ZERO), "0.0s");
    }
}
