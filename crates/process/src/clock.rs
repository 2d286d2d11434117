//! [`Clock`]: a node's time — instants, timers and the wall clock — injectable, so that a
//! simulation runs every node on simulated time, each at a rate of its own.
//!
//! Everything in Shoal outside the sans-IO cores takes its time from its node's clock
//! (`Runtime::clock`), never from `Instant::now()`, `SystemTime::now()` or tokio's timers
//! directly (a tidy test in `xtask` holds the crates to it). By default the clock is tokio's:
//! real time, or tokio's paused clock in a test that pauses it, at no cost over calling tokio
//! itself. A simulation gives a node a clock that runs fast or slow against the others
//! ([`Clock::simulated`]): its instants, its timers and its wall clock all run at that rate,
//! as a real machine's drifting clock would.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::{Instant, Interval, Sleep, Timeout};

/// The slowest and fastest rates of a simulated clock against tokio's.
pub const CLOCK_RATES: std::ops::RangeInclusive<f64> = 0.5..=2.0;

/// A node's clock. Cheap to clone.
#[derive(Clone)]
pub struct Clock(Option<Arc<Drift>>);

/// A clock that runs at `rate` against tokio's from `origin`, with its wall clock at
/// `wall_origin` (microseconds since the Unix epoch) then.
struct Drift {
    origin: Instant,
    rate: f64,
    wall_origin: u64,
}

impl Clock {
    /// Tokio's clock, and the system's wall clock.
    pub const fn tokio() -> Self {
        Self(None)
    }

    /// A simulated node's clock: from now on it runs at `rate` times tokio's (within
    /// [`CLOCK_RATES`]), and its wall clock reads `wall_micros` (microseconds since the Unix
    /// epoch) now. `None` for a rate out of bounds.
    pub fn simulated(rate: f64, wall_micros: u64) -> Option<Self> {
        CLOCK_RATES.contains(&rate).then(|| {
            Self(Some(Arc::new(Drift { origin: Instant::now(), rate, wall_origin: wall_micros })))
        })
    }

    /// How fast it runs against tokio's clock (1 for tokio's own).
    pub fn rate(&self) -> f64 {
        self.0.as_ref().map_or(1.0, |drift| drift.rate)
    }

    /// The current instant on this clock.
    pub fn now(&self) -> Instant {
        let now = Instant::now();
        match &self.0 {
            None => now,
            Some(drift) => drift.origin + (now - drift.origin).mul_f64(drift.rate),
        }
    }

    /// How long this clock says has passed since `earlier` (zero if `earlier` is later).
    pub fn since(&self, earlier: Instant) -> Duration {
        self.now().saturating_duration_since(earlier)
    }

    /// Microseconds since the Unix epoch, on this clock.
    pub fn wall_micros(&self) -> u64 {
        match &self.0 {
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_micros() as u64),
            Some(drift) => {
                let elapsed = (Instant::now() - drift.origin).mul_f64(drift.rate);
                drift.wall_origin + elapsed.as_micros() as u64
            }
        }
    }

    /// Milliseconds since the Unix epoch, on this clock.
    pub fn wall_millis(&self) -> u64 {
        self.wall_micros() / 1_000
    }

    /// Tokio's instant at which this clock reads `deadline`.
    fn tokio_instant(&self, deadline: Instant) -> Instant {
        match &self.0 {
            None => deadline,
            Some(drift) => match deadline.checked_duration_since(drift.origin) {
                Some(ahead) => drift.origin + ahead.div_f64(drift.rate),
                None => drift.origin,
            },
        }
    }

    /// Tokio's duration in which this clock advances by `duration`.
    fn tokio_duration(&self, duration: Duration) -> Duration {
        match &self.0 {
            None => duration,
            Some(drift) => duration.div_f64(drift.rate),
        }
    }

    /// Completes once `duration` has passed on this clock.
    pub fn sleep(&self, duration: Duration) -> Sleep {
        tokio::time::sleep(self.tokio_duration(duration))
    }

    /// Completes once this clock reads `deadline`.
    pub fn sleep_until(&self, deadline: Instant) -> Sleep {
        tokio::time::sleep_until(self.tokio_instant(deadline))
    }

    /// Moves `sleep` to complete once this clock reads `deadline`.
    pub fn reset(&self, sleep: std::pin::Pin<&mut Sleep>, deadline: Instant) {
        sleep.reset(self.tokio_instant(deadline));
    }

    /// `future`, given up on once `duration` has passed on this clock.
    pub fn timeout<F: Future>(&self, duration: Duration, future: F) -> Timeout<F> {
        tokio::time::timeout(self.tokio_duration(duration), future)
    }

    /// `future`, given up on once this clock reads `deadline`.
    pub fn timeout_at<F: Future>(&self, deadline: Instant, future: F) -> Timeout<F> {
        tokio::time::timeout_at(self.tokio_instant(deadline), future)
    }

    /// Ticks every `period` of this clock, the first at once.
    pub fn interval(&self, period: Duration) -> Interval {
        tokio::time::interval(self.tokio_duration(period))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::tokio()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("Clock(tokio)"),
            Some(drift) => write!(f, "Clock(simulated, rate {})", drift.rate),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fast clock's instants, timers and wall clock all run at its rate.
    #[tokio::test(start_paused = true)]
    async fn a_simulated_clock_runs_at_its_rate() {
        let fast = Clock::simulated(2.0, 1_000_000).unwrap();
        let tokio = Clock::tokio();
        let (start, tokio_start) = (fast.now(), tokio.now());
        fast.sleep(Duration::from_secs(4)).await;
        assert_eq!(tokio.since(tokio_start), Duration::from_secs(2));
        assert_eq!(fast.since(start), Duration::from_secs(4));
        assert_eq!(fast.wall_micros(), 1_000_000 + 4_000_000);
        let late = fast.timeout(Duration::from_secs(1), std::future::pending::<()>()).await;
        assert!(late.is_err());
        assert_eq!(tokio.since(tokio_start), Duration::from_millis(2_500));
        assert!(Clock::simulated(3.0, 0).is_none(), "out of bounds");
    }

    /// Tokio's clock is tokio's, exactly.
    #[tokio::test(start_paused = true)]
    async fn the_default_clock_is_tokios() {
        let clock = Clock::default();
        assert_eq!(clock.now(), Instant::now());
        assert_eq!(clock.rate(), 1.0);
        let deadline = clock.now() + Duration::from_millis(300);
        clock.sleep_until(deadline).await;
        assert_eq!(Instant::now(), deadline);
    }
}
