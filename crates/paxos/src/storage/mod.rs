//! Where an acceptor keeps its votes: a small synchronous trait, in memory or in a file.
//!
//! The acceptor writes through [`Storage`] *before* it answers: a `save_*` call that returns
//! `Ok` means the vote is as durable as the store makes it (for [`FileStorage`], fsynced), and
//! only then does the reply leave. A call that fails makes the acceptor refuse the vote
//! ([`Rejection::Storage`](crate::core::Rejection::Storage)); its in-memory view is left as before.
//!
//! A store with no [`Meta::incarnation`] is a store that lost its state (or never had any):
//! the acceptor then rejoins before voting. So the acceptor saves the incarnation *last* when it
//! rejoins, and a crash half-way through a rejoin leaves a store that rejoins again.

mod file;
mod memory;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use self::file::FileStorage;
pub use self::memory::MemoryStorage;
use crate::core::membership::Configuration;
use crate::core::{Ballot, Epoch, Incarnation, Lineage, NodeId};
use crate::error::StorageError;
use crate::register::{Key, Register};

/// An acceptor's state for one key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// The highest ballot promised: no prepare or accept below it is answered positively.
    pub promised: Ballot,
    /// The ballot of the accepted value (`Ballot::ZERO`: none).
    pub accepted: Ballot,
    /// The accepted value.
    pub register: Register,
    /// Where the accepted value came from ([`Lineage`]): its ancestors' ballots, parent first
    /// (for a value a proposer wrote back unchanged to confirm it, the ballot it had been
    /// accepted at comes first). A proposer retrying a change reads it to tell whether a later
    /// value was built on one of its own, so that it never applies the change twice.
    pub lineage: Lineage,
}

/// An acceptor's state for all keys: who it is and what it knows of the others.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The acceptor's current incarnation; `None` until it has (re)joined, and then it must not
    /// vote.
    pub incarnation: Option<Incarnation>,
    /// The newest incarnation of each other acceptor that this one knows of (fences): accepts
    /// that counted a promise of an older one are refused.
    pub fences: BTreeMap<NodeId, Incarnation>,
    /// The newest epoch this acceptor knows of or promised to found: it never joins an older
    /// one (see the crate docs, "Losing state").
    pub epoch: Epoch,
    /// The configuration installed at run time, if newer than the one the acceptor was
    /// started with (see [`membership`](crate::core::membership)).
    pub configuration: Option<Configuration>,
}

/// Durable (or not) storage for one acceptor.
///
/// Each `save_*` must not return `Ok` until the write is as durable as the store promises;
/// the acceptor answers only after it returns.
pub trait Storage {
    /// The stored meta record (`Meta::default()` for an empty store).
    fn meta(&self) -> &Meta;
    /// Replaces the meta record.
    fn save_meta(&mut self, meta: &Meta) -> Result<(), StorageError>;
    /// The slot of `key`, if any was saved.
    fn slot(&self, key: &Key) -> Option<&Slot>;
    /// Replaces the slot of `key`.
    fn save_slot(&mut self, key: &Key, slot: &Slot) -> Result<(), StorageError>;
    /// Up to `limit` slots in key order, starting after `after` (from the first key if `None`).
    fn scan(&self, after: Option<&Key>, limit: usize) -> Vec<(Key, Slot)>;

    /// Forgets every slot (the meta record stays): an acceptor without state drops whatever it
    /// holds from an earlier life before it copies the others' slots.
    ///
    /// The default overwrites each slot with an empty one, which votes exactly like no slot;
    /// a store that can drop its slots outright should.
    fn clear_slots(&mut self) -> Result<(), StorageError> {
        let mut after: Option<Key> = None;
        loop {
            let page = self.scan(after.as_ref(), 256);
            let Some((last, _)) = page.last() else { return Ok(()) };
            after = Some(last.clone());
            for (key, slot) in page {
                if slot != Slot::default() {
                    self.save_slot(&key, &Slot::default())?;
                }
            }
        }
    }
}

/// The state both stores keep in memory: the meta record and a sorted map of slots.
#[derive(Clone, Debug, Default)]
struct Tables {
    meta: Meta,
    slots: BTreeMap<Key, Slot>,
}

impl Tables {
    fn scan(&self, after: Option<&Key>, limit: usize) -> Vec<(Key, Slot)> {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.slots
            .range((start, Bound::Unbounded))
            .take(limit)
            .map(|(key, slot)| (key.clone(), slot.clone()))
            .collect()
    }
}
