//! The in-memory store: the default, lost with the process.

use super::{Meta, Record, Slot, Storage, Tables};
use crate::error::StorageError;
use crate::register::Key;

/// Keeps everything in memory. An acceptor on it that restarts has lost its state and rejoins
/// before it votes (see the crate docs, "Losing state"). Keep one across a simulated crash to
/// model a disk that survives it (the simulation does). An acceptor also keeps its own state
/// in one ([`Acceptor::state`](crate::core::Acceptor::state)).
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

    fn slot(&self, key: &Key) -> Option<&Slot> {
        self.tables.slots.get(key)
    }

    fn scan(&self, after: Option<&Key>, limit: usize) -> Vec<(Key, Slot)> {
        self.tables.scan(after, limit)
    }

    fn write(&mut self, records: &[Record]) -> Result<(), StorageError> {
        records.iter().for_each(|record| self.tables.apply(record));
        Ok(())
    }
}
