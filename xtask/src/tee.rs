//! Runs a command with its output shown live and also kept, like `tee`.
//!
//! `cargo xtask ci` needs both: people watch a long test run as it happens, and the summary
//! reads test counts out of the same output afterwards. The child's stdout goes to our stdout
//! and its stderr to our stderr, a line at a time, so each stream keeps its own order and a
//! reader of either sees what they would have seen without xtask in between.
//!
//! What it is not: a pseudo-terminal. The child sees pipes, so tools that colour only for a
//! terminal print plain text unless told otherwise (`CARGO_TERM_COLOR` passes through).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::panic;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;

/// What a finished command left behind.
pub(crate) struct Teed {
    /// How the command ended.
    pub(crate) status: ExitStatus,
    /// Every line it printed, without line endings: its stdout's lines, then its stderr's.
    pub(crate) lines: Vec<String>,
}

/// Runs `command` to completion, forwarding its output line by line and keeping a copy.
///
/// Fails only if the command cannot be started or waited for; a command that runs and fails
/// is reported through [`Teed::status`].
pub(crate) fn run(command: &mut Command) -> io::Result<Teed> {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let child_stdout = child.stdout.take();
    let child_stderr = child.stderr.take();
    // Both pipes are drained at once: a child that fills one while we block on the other
    // would never finish.
    let (stdout_lines, stderr_lines) = thread::scope(|scope| {
        let stdout_lines = scope.spawn(|| child_stdout.map(|pipe| tee_lines(pipe, io::stdout())));
        let stderr_lines = child_stderr.map(|pipe| tee_lines(pipe, io::stderr()));
        (stdout_lines.join(), stderr_lines)
    });
    let status = child.wait()?;
    let mut lines =
        stdout_lines.unwrap_or_else(|payload| panic::resume_unwind(payload)).unwrap_or_default();
    lines.extend(stderr_lines.unwrap_or_default());
    Ok(Teed { status, lines })
}

/// Copies `pipe` to `sink` a line at a time until the pipe closes, returning the lines.
///
/// Bytes are forwarded as they came; only the kept copy is decoded, lossily, because test
/// output is not promised to be UTF-8.
fn tee_lines(pipe: impl Read, mut sink: impl Write) -> Vec<String> {
    let mut reader = BufReader::new(pipe);
    let mut lines = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return lines,
            Ok(_) => {}
        }
        // A failed write is ignored, not returned: the pipe must keep draining so the child
        // can finish even when our own output has gone (`cargo xtask ci | head`).
        let _ = sink.write_all(&line);
        let text = String::from_utf8_lossy(&line);
        lines.push(text.trim_end_matches(['\n', '\r']).to_owned());
    }
}
