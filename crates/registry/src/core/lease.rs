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

/// A host's side of its lease, sans-IO: when to renew, and until when its names may run.
///
/// The driver asks [`poll_renewal`](Self::poll_renewal) whether a renewal is due (it returns
/// the instant the renewal begins, which the driver hands back with the result), writes the
/// lease register by compare-and-set, and reports [`renewed`](Self::renewed),
/// [`failed`](Self::failed) or [`lost`](Self::lost). [`is_valid`](Self::is_valid) says whether
/// the host may run (and start) its names' processes; once it is false they must stop. The
/// lease is valid until `D` after the latest successful renewal *began*, never longer.
#[derive(Clone, Debug)]
pub struct HostLease {
    config: LeaseConfig,
    epoch: u64,
    /// `D` after the latest successful renewal began; `None` before the first or once lost.
    valid_until: Option<Instant>,
    /// When the renewal in flight began, if one is.
    in_flight: Option<Instant>,
    /// When the next renewal is due.
    due: Instant,
    /// The register showed this epoch ended: for good.
    lost: bool,
}

impl HostLease {
    /// A host starting its lease `epoch` at `now`: not valid until its first renewal
    /// succeeds, which is due at once.
    pub fn new(config: LeaseConfig, epoch: u64, now: Instant) -> Self {
        HostLease { config, epoch, valid_until: None, in_flight: None, due: now, lost: false }
    }

    /// The lease epoch this host runs under.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether the host may run its names' processes at `now`.
    pub fn is_valid(&self, now: Instant) -> bool {
        self.valid_until.is_some_and(|until| now < until)
    }

    /// Until when the lease is valid, if it is at all.
    pub fn valid_until(&self) -> Option<Instant> {
        self.valid_until
    }

    /// A renewal to begin now, if one is due and none is in flight: its beginning, to hand
    /// back with its result.
    pub fn poll_renewal(&mut self, now: Instant) -> Option<Instant> {
        if self.lost || self.in_flight.is_some() || now < self.due {
            return None;
        }
        self.in_flight = Some(now);
        Some(now)
    }

    /// The renewal that began at `began` succeeded. (Ignored once the lease was lost: a
    /// renewal's write cannot succeed on an epoch that ended.)
    pub fn renewed(&mut self, began: Instant) {
        if self.in_flight == Some(began) {
            self.in_flight = None;
        }
        if self.lost {
            return;
        }
        let until = self.config.host_deadline(began);
        self.valid_until = Some(self.valid_until.map_or(until, |current| current.max(until)));
        self.due = began + self.config.renew_every;
    }

    /// The renewal that began at `began` failed for want of a quorum (the lease may still be
    /// valid): the next one is due a quarter of the renewal period later.
    pub fn failed(&mut self, began: Instant, now: Instant) {
        if self.in_flight == Some(began) {
            self.in_flight = None;
        }
        self.due = now + self.config.renew_every / 4;
    }

    /// The register shows this epoch ended (taken over by a contender): not valid from now
    /// on, for good. A host that hosts again does so under a new epoch (a new `HostLease`).
    pub fn lost(&mut self) {
        self.lost = true;
        self.valid_until = None;
        self.in_flight = None;
    }

    /// When the driver must act next: a renewal due, or the end of the lease.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let renewal = (self.in_flight.is_none() && !self.lost).then_some(self.due);
        [renewal, self.valid_until].into_iter().flatten().min()
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

    #[derive(Clone, Debug)]
    enum HostStep {
        Advance(u64),
        Begin,
        /// The renewal in flight completes: true for success.
        Complete(bool),
        Lost,
    }

    fn host_steps() -> impl Strategy<Value = Vec<HostStep>> {
        let step = prop_oneof![
            (0u64..3_000).prop_map(HostStep::Advance),
            Just(HostStep::Begin),
            any::<bool>().prop_map(HostStep::Complete),
            Just(HostStep::Lost),
        ];
        proptest::collection::vec(step, 0..80)
    }

    proptest! {
        /// Whatever the renewals' timing and results, the host's lease is valid only before
        /// `D` after the latest successful renewal began, and never again once it was lost
        /// (a renewal still in flight then included).
        #[test]
        fn a_host_runs_only_within_d_of_its_latest_renewal(steps in host_steps()) {
            let lease = LeaseConfig::default();
            let start = Instant::now();
            let mut now = start;
            let mut host = HostLease::new(lease, 1, now);
            let mut in_flight: Option<Instant> = None;
            let mut latest_success: Option<Instant> = None;
            let mut lost = false;
            for step in steps {
                match step {
                    HostStep::Advance(millis) => now += Duration::from_millis(millis),
                    HostStep::Begin => {
                        if let Some(began) = host.poll_renewal(now) {
                            prop_assert!(in_flight.is_none(), "one renewal in flight at a time");
                            in_flight = Some(began);
                        }
                    }
                    HostStep::Complete(success) => {
                        if let Some(began) = in_flight.take() {
                            if success {
                                host.renewed(began);
                                if !lost {
                                    latest_success = Some(latest_success.map_or(began, |l| l.max(began)));
                                }
                            } else {
                                host.failed(began, now);
                            }
                        }
                    }
                    HostStep::Lost => {
                        // A renewal in flight may still complete, successfully as far as
                        // the driver can tell: it must not count.
                        host.lost();
                        lost = true;
                        latest_success = None;
                    }
                }
                let bound = latest_success.map(|began| began + lease.duration);
                prop_assert_eq!(host.valid_until(), bound);
                prop_assert_eq!(host.is_valid(now), bound.is_some_and(|b| now < b));
                if let Some(next) = host.poll_timeout() {
                    prop_assert!(next <= now + lease.renew_every.max(lease.duration));
                }
            }
        }
    }

    /// A host renews every `renew_every`; with every renewal failing from some point, its
    /// lease ends `D` after the last one that succeeded began, and `poll_timeout` says when.
    #[test]
    fn a_host_that_cannot_renew_stops_at_its_deadline() {
        let lease = LeaseConfig::default();
        let t0 = Instant::now();
        let mut host = HostLease::new(lease, 7, t0);
        assert!(!host.is_valid(t0), "not valid before its first renewal");
        let began = host.poll_renewal(t0).expect("due at once");
        assert_eq!(host.poll_renewal(t0), None, "one in flight");
        host.renewed(began);
        assert!(host.is_valid(t0));
        assert_eq!(host.poll_timeout(), Some(t0 + lease.renew_every));
        let later = t0 + lease.renew_every;
        let began = host.poll_renewal(later).expect("due");
        host.failed(began, later);
        assert_eq!(host.poll_timeout(), Some(later + lease.renew_every / 4));
        assert!(host.is_valid(t0 + lease.duration - Duration::from_millis(1)));
        assert!(!host.is_valid(t0 + lease.duration), "ends D after the renewal began");
        host.lost();
        assert_eq!(host.valid_until(), None);
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
