//! The in-memory store: the default, lost with the process.

use super::{Meta, Slot, Storage, Tables};
use crate::error::StorageError;
use crate::register::Key;

/// Keeps everything in memory. An acceptor on it that restarts has lost its state and rejoins
/// before it votes (see the crate docs, "Losing state"). Clone it to model a disk that survives
/// a crash (the simulation does).
#[derive(Clone, Debug, Default)]
pub struct MemoryStorage {
    tables: Tables,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStorage::default()
    }
}

impl Storage for MemoryStorage {
    fn meta(&self) -> &Meta {
        &self.tables.meta
    }

    fn save_meta(&mut self, meta: &Meta) -> Result<(), StorageError> {
        self.tables.meta = meta.clone();
        Ok(())
    }

    fn slot(&self, key: &Key) -> Option<&Slot> {
        self.tables.slots.get(key)
    }

    fn save_slot(&mut self, key: &Key, slot: &Slot) -> Result<(), StorageError> {
        self.tables.slots.insert(key.clone(), slot.clone());
        Ok(())
    }

    fn scan(&self, after: Option<&Key>, limit: usize) -> Vec<(Key, Slot)> {
        self.tables.scan(after, limit)
    }

    fn clear_slots(&mut self) -> Result<(), StorageError> {
        self.tables.slots.clear();
        Ok(())
    }
}
