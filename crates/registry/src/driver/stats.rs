//! [`RegistryStats`] and [`GroupsStats`]: what a node's registry and groups count, read with
//! [`Registry::stats`](crate::Registry::stats) and [`Groups::stats`](crate::Groups::stats).
//!
//! Counters are plain atomics, never a metrics library's calls: a sampler such as the
//! facade's `shoal::metrics` reads them on a tick. The cache-hit counter is touched by every
//! lookup a caller makes (a caller may resolve a name before each message), so it is sharded:
//! each thread adds to a cache line of its own, and a read sums the shards.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// What a node's registry counted since it started, and what it holds now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegistryStats {
    /// Names hosted on this node now (their processes run here, or are starting).
    pub names: u64,
    /// Names whose process this node has cached now.
    pub cached_names: u64,
    /// Lookups answered from this node's cache, without consensus (`lookup`, a [`Name`]'s
    /// `whereis` and `lookup`). Sends through a [`Name`] that use its cached pid are not
    /// lookups and are not counted.
    ///
    /// [`Name`]: crate::Name
    pub lookup_hits: u64,
    /// Lookups that missed the cache and read the name's register (one consensus read, or
    /// more when the name's host is asked or its process started).
    pub lookup_misses: u64,
    /// Locks acquired by processes of this node (re-entries included).
    pub lock_acquisitions: u64,
    /// Acquisitions that had to wait: queued behind another holder.
    pub lock_waits: u64,
    /// The time those acquisitions waited in all, from the call to its answer (acquired,
    /// timed out or failed).
    pub lock_wait: Duration,
    /// Locks held by processes of this node now.
    pub locks_held: u64,
}

/// What a node's groups hold now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupsStats {
    /// Groups with at least one member, over every scope, as this node sees them.
    pub groups: u64,
    /// Memberships over every group and scope (a process in two groups counts twice), as this
    /// node sees them.
    pub members: u64,
    /// Of those, the memberships of this node's processes.
    pub local_members: u64,
}

/// Shards of [`Sharded`]: enough that two cores seldom share one.
const SHARDS: usize = 16;

/// A counter on its own cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Padded(AtomicU64);

/// A counter that many threads add to without sharing a cache line.
#[derive(Debug, Default)]
pub(crate) struct Sharded([Padded; SHARDS]);

impl Sharded {
    pub(crate) fn add_one(&self) {
        self.0[shard()].0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn sum(&self) -> u64 {
        self.0.iter().map(|padded| padded.0.load(Ordering::Relaxed)).sum()
    }
}

/// This thread's shard: threads are given shards in turn, the first time they count.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

/// The registry's counters (the gauges are read from its state).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) lookup_hits: Sharded,
    pub(crate) lookup_misses: AtomicU64,
    pub(crate) lock_acquisitions: AtomicU64,
    pub(crate) lock_waits: AtomicU64,
    pub(crate) lock_wait_micros: AtomicU64,
}

impl Counters {
    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_wait(&self, waited: Duration) {
        let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        self.lock_wait_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The counters, with the gauges left at 0 for the caller to fill.
    pub(crate) fn snapshot(&self) -> RegistryStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        RegistryStats {
            lookup_hits: self.lookup_hits.sum(),
            lookup_misses: load(&self.lookup_misses),
            lock_acquisitions: load(&self.lock_acquisitions),
            lock_waits: load(&self.lock_waits),
            lock_wait: Duration::from_micros(load(&self.lock_wait_micros)),
            ..RegistryStats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sharded counter sums what every thread added.
    #[test]
    fn sharded_sums_every_thread() {
        let counter = std::sync::Arc::new(Sharded::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let counter = counter.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| counter.add_one()))
            })
            .collect();
        for thread in threads {
            thread.join().expect("the thread counts");
        }
        assert_eq!(counter.sum(), 4000);
    }
}
