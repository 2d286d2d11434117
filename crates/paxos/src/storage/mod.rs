//! Where an acceptor keeps its votes: a small synchronous trait, in memory or in a file.
//!
//! The acceptor does not call the store: it keeps its state in memory and asks for writes as
//! an output ([`Acceptor::poll_persist`](crate::core::Acceptor::poll_persist), a batch of
//! [`Record`]s), and the caller writes each batch with [`Storage::write`] — the driver on a
//! blocking thread, several votes to one fsync — and reports it done
//! ([`Acceptor::persisted`](crate::core::Acceptor::persisted)). A reply that reflects a
//! write waits until then, so a reply that left always describes a durable state. A `write`
//! that returns `Ok` means the records are as durable as the store makes them (for
//! [`FileStorage`], fsynced); one that fails is handed back to the acceptor
//! ([`Acceptor::persist_failed`](crate::core::Acceptor::persist_failed)), which drops the
//! replies waiting for it and asks for the write again.
//!
//! A store with no [`Meta::incarnation`] is a store that lost its state (or never had any):
//! the acceptor then rejoins before voting. So the acceptor writes the incarnation *last* when
//! it rejoins, records are written in the order they were asked for, and a crash half-way
//! through a rejoin leaves a store that rejoins again.

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

/// One write an acceptor asks for: records replace what they name, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// Replaces the meta record.
    Meta(Meta),
    /// Replaces the slot of a key.
    Slot(Key, Slot),
    /// Forgets every slot (the meta record stays): an acceptor without state drops whatever it
    /// holds from an earlier life before it copies the others' slots.
    ClearSlots,
}

/// Durable (or not) storage for one acceptor: read once, when the acceptor starts
/// ([`Acceptor::new`](crate::core::Acceptor::new)), then written in batches.
pub trait Storage {
    /// The stored meta record (`Meta::default()` for an empty store).
    fn meta(&self) -> &Meta;
    /// The slot of `key`, if any was saved.
    fn slot(&self, key: &Key) -> Option<&Slot>;
    /// Up to `limit` slots in key order, starting after `after` (from the first key if `None`).
    fn scan(&self, after: Option<&Key>, limit: usize) -> Vec<(Key, Slot)>;
    /// Applies `records` in order, as one write: `Ok` only once all of them are as durable as
    /// the store promises. On an error the store holds the records of some prefix of the batch
    /// (the file store: none of them), so the same batch may be written again.
    fn write(&mut self, records: &[Record]) -> Result<(), StorageError>;

    /// Replaces the meta record (a write of one record).
    fn save_meta(&mut self, meta: &Meta) -> Result<(), StorageError> {
        self.write(&[Record::Meta(meta.clone())])
    }
    /// Replaces the slot of `key` (a write of one record).
    fn save_slot(&mut self, key: &Key, slot: &Slot) -> Result<(), StorageError> {
        self.write(&[Record::Slot(key.clone(), slot.clone())])
    }
    /// Forgets every slot; the meta record stays (a write of one record).
    fn clear_slots(&mut self) -> Result<(), StorageError> {
        self.write(&[Record::ClearSlots])
    }
}

/// The state both stores keep in memory: the meta record and a sorted map of slots.
#[derive(Clone, Debug, Default)]
struct Tables {
    meta: Meta,
    slots: BTreeMap<Key, Slot>,
}

impl Tables {
    fn apply(&mut self, record: &Record) {
        match record {
            Record::Meta(meta) => self.meta = meta.clone(),
            Record::Slot(key, slot) => {
                self.slots.insert(key.clone(), slot.clone());
            }
            Record::ClearSlots => self.slots.clear(),
        }
    }

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
