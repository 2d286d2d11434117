//! Telling a connection that makes no progress: heartbeats travel on the control channel, so a
//! data connection that stops moving (a stuck middlebox, a half-dead socket) would otherwise go
//! unnoticed while both nodes see each other up.
//!
//! Each node tells each peer, with every heartbeat, how many bytes it has read on each
//! connection that peer opened to it ([`crate::wire::Frame::Received`]). The writing side
//! compares that with what it has written: a connection with bytes waiting whose reader has not
//! read at least [`FLOOR_BYTES`] of them (or all of them, if fewer wait) within the stall
//! timeout has stalled, or trickles slower than the floor, and is treated as failed. Sans-IO:
//! [`StallWatch`] is fed numbers and the time, and says when.

/// Within each stall timeout, a connection with bytes waiting must move at least this many of
/// them (or all of them).
pub(crate) const FLOOR_BYTES: u64 = 64 * 1024;

/// A connection that made too little progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stall {
    /// Bytes written and not yet read by the peer.
    pub(crate) waiting: u64,
    /// Bytes the peer read in the window.
    pub(crate) moved: u64,
    /// How long the window lasted.
    pub(crate) for_ms: u64,
}

/// Watches one connection's progress.
#[derive(Debug, Default)]
pub(crate) struct StallWatch {
    window: Option<Window>,
}

/// A span of time in which bytes were waiting.
#[derive(Debug, Clone, Copy)]
struct Window {
    started_ms: u64,
    /// What the peer had read when the window started.
    read_at_start: u64,
    /// Bytes waiting when the window started.
    waiting_at_start: u64,
}

impl StallWatch {
    /// Looks at the connection at `now_ms`: `written` bytes written here, `read` bytes the
    /// peer says it has read. Returns the stall once a window of `limit_ms` with bytes waiting
    /// has passed with too little progress.
    pub(crate) fn observe(
        &mut self,
        now_ms: u64,
        written: u64,
        read: u64,
        limit_ms: u64,
    ) -> Option<Stall> {
        let waiting = written.saturating_sub(read);
        if waiting == 0 {
            self.window = None;
            return None;
        }
        let fresh = Window { started_ms: now_ms, read_at_start: read, waiting_at_start: waiting };
        let Some(window) = self.window else {
            self.window = Some(fresh);
            return None;
        };
        let moved = read.saturating_sub(window.read_at_start);
        if moved >= window.waiting_at_start.min(FLOOR_BYTES) {
            self.window = Some(fresh);
            return None;
        }
        let for_ms = now_ms.saturating_sub(window.started_ms);
        (for_ms >= limit_ms).then_some(Stall { waiting, moved, for_ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: u64 = 1_000;

    #[test]
    fn an_idle_connection_never_stalls() {
        let mut watch = StallWatch::default();
        for now in (0..100_000).step_by(100) {
            assert_eq!(watch.observe(now, 500, 500, LIMIT), None);
        }
    }

    #[test]
    fn bytes_that_wait_and_never_move_stall_after_the_limit() {
        let mut watch = StallWatch::default();
        assert_eq!(watch.observe(0, 500, 100, LIMIT), None);
        assert_eq!(watch.observe(900, 500, 100, LIMIT), None);
        assert_eq!(
            watch.observe(1_000, 500, 100, LIMIT),
            Some(Stall { waiting: 400, moved: 0, for_ms: 1_000 })
        );
    }

    #[test]
    fn a_long_idle_spell_does_not_count_against_a_new_write() {
        let mut watch = StallWatch::default();
        assert_eq!(watch.observe(0, 10, 10, LIMIT), None);
        // Written at 50_000 and not yet acknowledged at the next look.
        assert_eq!(watch.observe(50_000, 20, 10, LIMIT), None);
        assert_eq!(watch.observe(50_100, 20, 20, LIMIT), None);
    }

    #[test]
    fn steady_progress_above_the_floor_never_stalls() {
        let mut watch = StallWatch::default();
        let mut read = 0;
        for step in 0..1_000u64 {
            read += FLOOR_BYTES / 4;
            // Always far behind, but moving a floor's worth per limit.
            assert_eq!(
                watch.observe(step * LIMIT / 4, read + 100 * FLOOR_BYTES, read, LIMIT),
                None
            );
        }
    }

    #[test]
    fn a_trickle_below_the_floor_stalls() {
        let mut watch = StallWatch::default();
        let written = 100 * FLOOR_BYTES;
        let mut stalled = None;
        for step in 0..20u64 {
            let read = step * 1024;
            stalled = stalled.or(watch.observe(step * 100, written, read, LIMIT));
        }
        let stall = stalled.expect("a trickle of 10 KiB/s stalls");
        assert!(stall.moved < FLOOR_BYTES);
    }

    #[test]
    fn a_little_waiting_needs_only_itself_moved() {
        let mut watch = StallWatch::default();
        assert_eq!(watch.observe(0, 100, 0, LIMIT), None);
        assert_eq!(watch.observe(500, 150, 100, LIMIT), None, "all 100 bytes that waited moved");
        assert_eq!(watch.observe(1_400, 150, 100, LIMIT), None);
        assert!(watch.observe(1_500, 150, 100, LIMIT).is_some());
    }
}
