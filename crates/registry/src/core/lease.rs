//! Host leases: the timing that keeps at most one live process per name.
//!
//! Every host node holds one lease over all the names it hosts, a Paxos register it renews by a
//! compare-and-set that bumps the register's version. No record holds a time: clocks are not
//! shared, so each side measures durations on its own clock, and the rules below make that
//! safe as long as every clock's rate stays within `1 ± ρ` of real time.
//!
//! **The host.** A renewal that *began* at the host's instant `s` (before its write was sent)
//! and succeeded lets the host run its names' processes until `s + D`
//! ([`LeaseConfig::host_deadline`]); by then it must have stopped them (a distinct exit
//! reason), unless a later renewal succeeded. The stop itself may take up to `δ` of real time
//! ([`LeaseConfig::stop_within`]).
//!
//! **A contender.** A node that wants to take over a host's names reads the host's lease and
//! sees version `v`, its read completing at the contender's instant `r`. It may claim only at
//! `r + W` ([`LeaseConfig::claimable_at`]), and only by a compare-and-set on version `v`: if
//! the host renewed in between, the version moved on and the claim fails.
//!
//! **Why at most one.** Let `t(x)` be the real time of an event `x`. The renewal that wrote `v`
//! began before it took effect, and the contender's read that saw `v` completed after that:
//! `t(s) ≤ t(r)`. The host's clock runs at least `1 − ρ` times real speed, so its `D` last at
//! most `D / (1 − ρ)` of real time, and its processes are gone by `t(s) + D/(1 − ρ) + δ`. The
//! contender's clock runs at most `1 + ρ` times real speed, so its `W` last at least
//! `W / (1 + ρ)`, and it claims no earlier than `t(r) + W/(1 + ρ) ≥ t(s) + W/(1 + ρ)`. With
//! `W = (1 + ρ)·(D/(1 − ρ) + δ)` the claim comes after the old processes are gone. If the
//! claim's compare-and-set succeeds, no renewal succeeded after `v`, so there is no later
//! deadline to consider. Assumptions, stated with their defaults in [`LeaseConfig`]: every
//! clock's rate within `1 ± ρ`; a host stops its processes within `δ` of its deadline (a host
//! paused longer than that, say by a stopped VM, breaks it, which is why every start also
//! carries a fencing token that is exact under any timing).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use shoal_registry::core::LeaseConfig;
//!
//! let lease = LeaseConfig::default();
//! let began = Instant::now();
//! // The contender waits longer than the host runs, by the drift and stop margins.
//! assert!(lease.claimable_at(began) > lease.host_deadline(began) + lease.stop_within);
//! assert_eq!(lease.claim_wait(), Duration::from_micros(6_051_316));
//! ```

use std::time::{Duration, Instant};

/// The timing of host leases (see the module docs for the argument).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LeaseConfig {
    /// `D`: how long after a renewal began a host may run its names' processes (default 5 s).
    pub duration: Duration,
    /// How often a host renews (default `duration / 3`, so two renewals may fail before the
    /// deadline).
    pub renew_every: Duration,
    /// `ρ`: the largest error of any node's clock rate against real time (default 0.05, 5%,
    /// far beyond quartz, to cover virtual machines whose clocks are slewed).
    pub max_drift: f64,
    /// `δ`: how long, in real time, a host may take to stop its processes once its deadline
    /// has come (default 500 ms).
    pub stop_within: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        let duration = Duration::from_secs(5);
        LeaseConfig {
            duration,
            renew_every: duration / 3,
            max_drift: 0.05,
            stop_within: Duration::from_millis(500),
        }
    }
}

/// Why a [`LeaseConfig`] was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum LeaseConfigError {
    /// `max_drift` is not in `0.0..0.5`.
    #[error("max_drift {0} is not at least 0 and below 0.5")]
    Drift(f64),
    /// `duration` is zero.
    #[error("a lease duration of zero")]
    ZeroDuration,
    /// `renew_every` is zero or not shorter than `duration`.
    #[error("renew_every {renew_every:?} is not between zero and the duration {duration:?}")]
    Renewal {
        /// The renewal period asked for.
        renew_every: Duration,
        /// The lease duration.
        duration: Duration,
    },
}

impl LeaseConfig {
    /// `Ok` when the settings make sense together.
    pub fn validate(&self) -> Result<(), LeaseConfigError> {
        if !(0.0..0.5).contains(&self.max_drift) {
            return Err(LeaseConfigError::Drift(self.max_drift));
        }
        if self.duration.is_zero() {
            return Err(LeaseConfigError::ZeroDuration);
        }
        if self.renew_every.is_zero() || self.renew_every >= self.duration {
            let (renew_every, duration) = (self.renew_every, self.duration);
            return Err(LeaseConfigError::Renewal { renew_every, duration });
        }
        Ok(())
    }

    /// When a host whose last successful renewal began at `renewal_began` (its own clock) must
    /// have stopped its names' processes.
    pub fn host_deadline(&self, renewal_began: Instant) -> Instant {
        renewal_began + self.duration
    }

    /// `W`: how long, on its own clock, a contender waits after its read of a lease completed
    /// before it may claim: `(1 + ρ)·(D/(1 − ρ) + δ)`.
    pub fn claim_wait(&self) -> Duration {
        let rho = self.max_drift;
        let host_run = self.duration.as_secs_f64() / (1.0 - rho);
        let wait = (1.0 + rho) * (host_run + self.stop_within.as_secs_f64());
        // Rounded up to the microsecond, never down.
        Duration::from_micros((wait * 1e6).ceil() as u64)
    }

    /// The contender's instant from which it may claim a lease whose read completed at
    /// `read_completed` (its own clock).
    pub fn claimable_at(&self, read_completed: Instant) -> Instant {
        read_completed + self.claim_wait()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// One interleaving of a host's renewal and a contender's claim, in real seconds, with
    /// each node's clock rate (its seconds per real second).
    #[derive(Clone, Debug)]
    struct Timeline {
        /// Real time the renewal began.
        began: f64,
        /// Real time from its beginning to the write taking effect.
        write_delay: f64,
        /// Real time from the write to the contender's read completing.
        read_delay: f64,
        /// The host's clock rate.
        host_rate: f64,
        /// The contender's clock rate.
        contender_rate: f64,
        /// Real time the host takes to stop its processes after its deadline.
        stop: f64,
    }

    impl Timeline {
        /// Real time the host's processes are gone, and real time the contender claims.
        fn stop_and_claim(&self, lease: &LeaseConfig) -> (f64, f64) {
            let host_run = lease.duration.as_secs_f64() / self.host_rate;
            let gone = self.began + host_run + self.stop;
            let read = self.began + self.write_delay + self.read_delay;
            let claim = read + lease.claim_wait().as_secs_f64() / self.contender_rate;
            (gone, claim)
        }
    }

    /// Timelines whose clock rates are within `1 ± drift` and whose stop is within the
    /// lease's `δ`.
    fn timeline(lease: LeaseConfig, drift: f64) -> impl Strategy<Value = Timeline> {
        let rate = 1.0 - drift..=1.0 + drift;
        (0.0..100.0f64, 0.0..2.0f64, 0.0..2.0f64, rate.clone(), rate, 0.0..=1.0f64).prop_map(
            move |(began, write_delay, read_delay, host_rate, contender_rate, stop)| Timeline {
                began,
                write_delay,
                read_delay,
                host_rate,
                contender_rate,
                stop: stop * lease.stop_within.as_secs_f64(),
            },
        )
    }

    fn leases() -> impl Strategy<Value = LeaseConfig> {
        (1u64..30_000, 0.0..0.3f64, 0u64..2_000).prop_map(|(millis, max_drift, stop)| {
            let duration = Duration::from_millis(millis);
            LeaseConfig {
                duration,
                renew_every: duration / 3,
                max_drift,
                stop_within: Duration::from_millis(stop),
            }
        })
    }

    proptest! {
        /// Within the assumptions, in every interleaving the host's processes are gone
        /// before the contender may claim.
        #[test]
        fn the_old_host_stops_before_anyone_claims(
            (lease, timeline) in leases().prop_flat_map(|lease| (Just(lease), timeline(lease, lease.max_drift)))
        ) {
            let (gone, claim) = timeline.stop_and_claim(&lease);
            prop_assert!(gone <= claim, "gone at {gone}, claimed at {claim}: {timeline:?}");
        }
    }

    /// The control: with clocks drifting past `ρ` (a fast host clock would be safe; a slow
    /// host and a fast contender are not) the same check finds an overlap, so the property
    /// above is not vacuous.
    #[test]
    fn drift_past_the_bound_breaks_it() {
        let lease = LeaseConfig::default();
        let rho = lease.max_drift;
        let timeline = Timeline {
            began: 0.0,
            write_delay: 0.0,
            read_delay: 0.0,
            host_rate: 1.0 - 2.0 * rho,
            contender_rate: 1.0 + 2.0 * rho,
            stop: lease.stop_within.as_secs_f64(),
        };
        let (gone, claim) = timeline.stop_and_claim(&lease);
        assert!(gone > claim, "gone at {gone}, claimed at {claim}");
        let within = Timeline { host_rate: 1.0 - rho, contender_rate: 1.0 + rho, ..timeline };
        let (gone, claim) = within.stop_and_claim(&lease);
        assert!(gone <= claim, "at the bound: gone at {gone}, claimed at {claim}");
    }

    #[test]
    fn settings_that_do_not_fit_together_are_refused() {
        assert_eq!(LeaseConfig::default().validate(), Ok(()));
        let drift = LeaseConfig { max_drift: 0.5, ..LeaseConfig::default() };
        assert_eq!(drift.validate(), Err(LeaseConfigError::Drift(0.5)));
        let zero = LeaseConfig { duration: Duration::ZERO, ..LeaseConfig::default() };
        assert_eq!(zero.validate(), Err(LeaseConfigError::ZeroDuration));
        let slow = LeaseConfig { renew_every: Duration::from_secs(5), ..LeaseConfig::default() };
        assert!(matches!(slow.validate(), Err(LeaseConfigError::Renewal { .. })));
    }
}
