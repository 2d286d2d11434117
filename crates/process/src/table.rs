//! The process table: local id → process, sharded so that spawns and lookups from several
//! threads rarely meet on one lock.
//!
//! An entry may also be the forwarder of a process that was handed off
//! ([`crate::Runtime::hand_off`]): it takes the letters sent to the old pid for its retention
//! window, but it is no process, so it is left out of what the table reports as alive.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::cell::ProcessCell;

const SHARDS: usize = 32;

type Shard = RwLock<HashMap<u64, Arc<dyn ProcessCell>, BuildHasherDefault<IdHasher>>>;

pub(crate) struct ProcessTable {
    shards: Box<[Shard]>,
    /// Entries that are forwarders, not processes.
    forwarders: AtomicUsize,
}

impl ProcessTable {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            forwarders: AtomicUsize::new(0),
        }
    }

    fn shard(&self, id: u64) -> &Shard {
        &self.shards[id as usize % SHARDS]
    }

    pub(crate) fn insert(&self, id: u64, cell: Arc<dyn ProcessCell>) {
        self.shard(id).write().unwrap_or_else(PoisonError::into_inner).insert(id, cell);
    }

    pub(crate) fn remove(&self, id: u64) {
        self.shard(id).write().unwrap_or_else(PoisonError::into_inner).remove(&id);
    }

    /// Puts the forwarder of a process that was handed off in the process's place.
    pub(crate) fn hand_over(&self, id: u64, forwarder: Arc<dyn ProcessCell>) {
        debug_assert!(forwarder.is_forwarder());
        let mut shard = self.shard(id).write().unwrap_or_else(PoisonError::into_inner);
        shard.insert(id, forwarder);
        self.forwarders.fetch_add(1, Ordering::Relaxed);
    }

    /// Removes `forwarder`, if it is still the entry of `id`.
    pub(crate) fn remove_forwarder(&self, id: u64, forwarder: &Arc<dyn ProcessCell>) {
        let mut shard = self.shard(id).write().unwrap_or_else(PoisonError::into_inner);
        if shard.get(&id).is_some_and(|entry| Arc::ptr_eq(entry, forwarder)) {
            shard.remove(&id);
            self.forwarders.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn get(&self, id: u64) -> Option<Arc<dyn ProcessCell>> {
        self.shard(id).read().unwrap_or_else(PoisonError::into_inner).get(&id).cloned()
    }

    /// Whether `id` is a process (not a forwarder).
    pub(crate) fn contains_process(&self, id: u64) -> bool {
        let shard = self.shard(id).read().unwrap_or_else(PoisonError::into_inner);
        shard.get(&id).is_some_and(|entry| !entry.is_forwarder())
    }

    /// The ids of the processes (not the forwarders), in order.
    pub(crate) fn ids(&self) -> Vec<u64> {
        let mut ids = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.read().unwrap_or_else(PoisonError::into_inner);
            ids.extend(shard.iter().filter(|(_, entry)| !entry.is_forwarder()).map(|(id, _)| *id));
        }
        ids.sort_unstable();
        ids
    }

    /// How many processes (not forwarders) satisfy `test`, each shard read in turn.
    pub(crate) fn count_processes(&self, test: impl Fn(&dyn ProcessCell) -> bool) -> usize {
        let count_in = |shard: &Shard| {
            let shard = shard.read().unwrap_or_else(PoisonError::into_inner);
            shard.values().filter(|entry| !entry.is_forwarder() && test(entry.as_ref())).count()
        };
        self.shards.iter().map(count_in).sum()
    }

    /// How many processes (not forwarders) are in the table.
    pub(crate) fn len(&self) -> usize {
        let entries: usize = self
            .shards
            .iter()
            .map(|shard| shard.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum();
        // A forwarder counted before the shard was read, or removed after: never below zero.
        entries.saturating_sub(self.forwarders.load(Ordering::Relaxed))
    }
}

/// Local ids are handed out by a counter, so a multiplicative mix is a good enough hash and
/// much cheaper than SipHash; nothing outside the node chooses them.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, id: u64) {
        // The map picks a bucket from the low bits of the hash and keeps a 7-bit tag from the
        // top bits. The ids of one shard are `SHARDS` apart, so their quotient as the low bits
        // puts processes spawned one after another in neighbouring buckets: a spawn writes
        // next to where the previous one did instead of to a random cache line of a table of
        // megabytes. Fibonacci hashing supplies well-spread tag bits. (Only speed depends on
        // this; any hash is correct.)
        let mixed = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = (id / SHARDS as u64) ^ (mixed & (0x7f << 57));
    }
}
