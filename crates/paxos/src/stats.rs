//! [`PaxosStats`]: what a node's proposer counted since it started, read with
//! `Paxos::stats` (or [`Proposer::stats`](crate::core::Proposer::stats) on the core).
//!
//! The proposer counts into plain atomics as its rounds start and end (never per message),
//! which the handle reads without asking the driver task; a sampler such as the facade's
//! `shoal::metrics` reads them on a tick and publishes them. Nothing here calls a metrics
//! library.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The upper bounds of the latency histogram's buckets, in microseconds; a last bucket holds
/// everything above the largest.
pub const LATENCY_BOUNDS_MICROS: [u64; 12] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000,
];

/// Buckets of the latency histogram: one per bound, and one above the largest.
const BUCKETS: usize = LATENCY_BOUNDS_MICROS.len() + 1;

/// Counters of a node's proposer since the service started (one [`Proposer`] run).
///
/// [`Proposer`]: crate::core::Proposer
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PaxosStats {
    /// Phase-1 attempts: prepares sent, one per round that did not take the fast path.
    pub prepare_rounds: u64,
    /// Phase-2 attempts: accepts sent, after a majority of promises or on the fast path.
    pub accept_rounds: u64,
    /// Rounds lost to contention: a majority could no longer vote for the round because
    /// acceptors had promised a higher ballot (another proposer's); the change backs off and
    /// retries, or is forwarded to the key's designated proposer.
    pub conflicts: u64,
    /// Rounds that timed out waiting for a majority, and start over.
    pub round_timeouts: u64,
    /// Changes decided without a phase 1 (the fast path: the proposer held the promises of
    /// the key's next ballot from its previous round).
    pub fast_decisions: u64,
    /// Changes decided after a phase 1.
    pub slow_decisions: u64,
    /// How long this node's callers waited for their changes, from `propose` to completion
    /// (whatever the outcome, forwarded changes included).
    pub latency: LatencyHistogram,
}

/// A histogram of operation latencies in fixed buckets ([`LATENCY_BOUNDS_MICROS`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Operations per bucket: `buckets[i]` counts those of at most
    /// `LATENCY_BOUNDS_MICROS[i]` and more than the bound before (not cumulative); the last
    /// counts those above the largest bound.
    pub buckets: [u64; BUCKETS],
    /// The sum of every latency recorded, in microseconds.
    pub sum_micros: u64,
}

impl LatencyHistogram {
    /// Operations recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The upper bound of bucket `index`, or `None` for the last (unbounded) bucket.
    pub fn upper_bound(index: usize) -> Option<Duration> {
        LATENCY_BOUNDS_MICROS.get(index).map(|micros| Duration::from_micros(*micros))
    }

    /// The bucket a latency falls in.
    fn bucket_of(micros: u64) -> usize {
        LATENCY_BOUNDS_MICROS.partition_point(|bound| *bound < micros)
    }
}

/// The proposer's counters, shared with the handle: written only by the driver task's
/// proposer (one writer), read by anyone.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    prepare_rounds: AtomicU64,
    accept_rounds: AtomicU64,
    conflicts: AtomicU64,
    round_timeouts: AtomicU64,
    fast_decisions: AtomicU64,
    slow_decisions: AtomicU64,
    latency: [AtomicU64; BUCKETS],
    latency_sum_micros: AtomicU64,
}

/// What a counter counts (one method per counter would repeat the same line six times).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Event {
    Prepare,
    Accept,
    Conflict,
    RoundTimeout,
    FastDecision,
    SlowDecision,
}

impl Counters {
    pub(crate) fn count(&self, event: Event) {
        let counter = match event {
            Event::Prepare => &self.prepare_rounds,
            Event::Accept => &self.accept_rounds,
            Event::Conflict => &self.conflicts,
            Event::RoundTimeout => &self.round_timeouts,
            Event::FastDecision => &self.fast_decisions,
            Event::SlowDecision => &self.slow_decisions,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_latency(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency[LatencyHistogram::bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> PaxosStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        PaxosStats {
            prepare_rounds: load(&self.prepare_rounds),
            accept_rounds: load(&self.accept_rounds),
            conflicts: load(&self.conflicts),
            round_timeouts: load(&self.round_timeouts),
            fast_decisions: load(&self.fast_decisions),
            slow_decisions: load(&self.slow_decisions),
            latency: LatencyHistogram {
                buckets: std::array::from_fn(|i| load(&self.latency[i])),
                sum_micros: load(&self.latency_sum_micros),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A latency lands in the first bucket whose bound is at least it; above every bound, in
    /// the last.
    #[test]
    fn latency_buckets_are_upper_bounds() {
        let counters = Counters::default();
        counters.record_latency(Duration::from_micros(500));
        counters.record_latency(Duration::from_micros(501));
        counters.record_latency(Duration::from_secs(10));
        let latency = counters.snapshot().latency;
        assert_eq!(latency.buckets[0], 1);
        assert_eq!(latency.buckets[1], 1);
        assert_eq!(latency.buckets[BUCKETS - 1], 1);
        assert_eq!(latency.count(), 3);
        assert_eq!(latency.sum_micros, 500 + 501 + 10_000_000);
        assert_eq!(LatencyHistogram::upper_bound(0), Some(Duration::from_micros(500)));
        assert_eq!(LatencyHistogram::upper_bound(BUCKETS - 1), None);
    }
}
