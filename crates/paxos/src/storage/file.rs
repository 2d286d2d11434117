//! The durable store: an append-only log file, fsynced before every answer.
//!
//! Each record (the meta record, or one key's slot) is appended as a frame
//! `[length: u32 LE][checksum: u64 LE][msgpack record]` and the file is fsynced before the save
//! returns. Opening replays the log into memory; the last write wins. A frame cut short or with
//! a bad checksum *at the end* of the file is a write torn by a crash, which was never
//! acknowledged: it is cut off. A bad frame followed by more data is corruption, an error.
//! When the log holds many more records than live keys it is rewritten (to a temporary file,
//! fsynced, renamed over the log, directory fsynced).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Meta, Slot, Storage, Tables};
use crate::error::StorageError;
use crate::hash::fnv1a;
use crate::register::Key;

const LOG_NAME: &str = "paxos.log";
const TMP_NAME: &str = "paxos.log.tmp";
const HEADER_BYTES: usize = 12;
/// By default the log is rewritten when it holds this many more records than live ones.
const COMPACT_SLACK_RECORDS: usize = 4096;

#[derive(Serialize, Deserialize)]
enum Record {
    Meta(Meta),
    Slot(Key, Slot),
}

/// An acceptor store in a directory, durable across crashes.
#[derive(Debug)]
pub struct FileStorage {
    dir: PathBuf,
    log: File,
    tables: Tables,
    records: usize,
    compact_slack_records: usize,
}

impl FileStorage {
    /// Opens (or creates) the store in `dir`, replaying its log.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StorageError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)?;
        let path = dir.join(LOG_NAME);
        let mut log = OpenOptions::new().create(true).read(true).append(true).open(&path)?;
        let mut bytes = Vec::new();
        log.read_to_end(&mut bytes)?;
        let (tables, records, good_len) = replay(&bytes)?;
        if good_len < bytes.len() {
            log.set_len(good_len as u64)?;
            log.sync_all()?;
        }
        sync_dir(&dir)?;
        Ok(FileStorage { dir, log, tables, records, compact_slack_records: COMPACT_SLACK_RECORDS })
    }

    /// Rewrites the log once it holds `records` more records than live ones (default 4096).
    pub fn with_compaction_slack(mut self, records: usize) -> Self {
        self.compact_slack_records = records;
        self
    }

    /// Records in the log file now (live ones and superseded ones).
    pub fn log_records(&self) -> usize {
        self.records
    }

    fn append(&mut self, record: &Record) -> Result<(), StorageError> {
        let frame = encode_frame(record)?;
        self.log.write_all(&frame)?;
        self.log.sync_data()?;
        self.records += 1;
        Ok(())
    }

    fn compact_if_due(&mut self) -> Result<(), StorageError> {
        if self.records <= self.tables.slots.len() + 1 + self.compact_slack_records {
            return Ok(());
        }
        let tmp = self.dir.join(TMP_NAME);
        let mut file = File::create(&tmp)?;
        file.write_all(&encode_frame(&Record::Meta(self.tables.meta.clone()))?)?;
        for (key, slot) in &self.tables.slots {
            file.write_all(&encode_frame(&Record::Slot(key.clone(), slot.clone()))?)?;
        }
        file.sync_all()?;
        fs::rename(&tmp, self.dir.join(LOG_NAME))?;
        sync_dir(&self.dir)?;
        self.log = OpenOptions::new().read(true).append(true).open(self.dir.join(LOG_NAME))?;
        self.records = self.tables.slots.len() + 1;
        Ok(())
    }
}

impl Storage for FileStorage {
    fn meta(&self) -> &Meta {
        &self.tables.meta
    }

    fn save_meta(&mut self, meta: &Meta) -> Result<(), StorageError> {
        self.append(&Record::Meta(meta.clone()))?;
        self.tables.meta = meta.clone();
        self.compact_if_due()
    }

    fn slot(&self, key: &Key) -> Option<&Slot> {
        self.tables.slots.get(key)
    }

    fn save_slot(&mut self, key: &Key, slot: &Slot) -> Result<(), StorageError> {
        self.append(&Record::Slot(key.clone(), slot.clone()))?;
        self.tables.slots.insert(key.clone(), slot.clone());
        self.compact_if_due()
    }

    fn scan(&self, after: Option<&Key>, limit: usize) -> Vec<(Key, Slot)> {
        self.tables.scan(after, limit)
    }
}

fn encode_frame(record: &Record) -> Result<Vec<u8>, StorageError> {
    let payload = rmp_serde::to_vec(record)?;
    let len = u32::try_from(payload.len()).map_err(|_| StorageError::Corrupt {
        offset: 0,
        reason: format!("record of {} bytes is too large", payload.len()),
    })?;
    let mut frame = Vec::with_capacity(HEADER_BYTES + payload.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&fnv1a(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// Replays a log: the tables, the number of records, and the length of the good prefix.
fn replay(bytes: &[u8]) -> Result<(Tables, usize, usize), StorageError> {
    let mut tables = Tables::default();
    let mut offset = 0;
    let mut records = 0;
    while offset < bytes.len() {
        let Some((record, end)) = decode_frame(bytes, offset)? else {
            break; // a torn tail: never acknowledged, cut off by the caller
        };
        match record {
            Record::Meta(meta) => tables.meta = meta,
            Record::Slot(key, slot) => {
                tables.slots.insert(key, slot);
            }
        }
        records += 1;
        offset = end;
    }
    Ok((tables, records, offset))
}

/// The frame at `offset`: `Ok(None)` if it is a torn tail, an error if it is corrupt.
fn decode_frame(bytes: &[u8], offset: usize) -> Result<Option<(Record, usize)>, StorageError> {
    let rest = &bytes[offset..];
    if rest.len() < HEADER_BYTES {
        return Ok(None);
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&rest[4..HEADER_BYTES]);
    let end = HEADER_BYTES + len;
    if rest.len() < end {
        return Ok(None);
    }
    let payload = &rest[HEADER_BYTES..end];
    let corrupt = |reason: String| StorageError::Corrupt { offset: offset as u64, reason };
    if fnv1a(payload) != u64::from_le_bytes(sum) {
        return if rest.len() == end { Ok(None) } else { Err(corrupt("bad checksum".into())) };
    }
    let record = rmp_serde::from_slice(payload).map_err(|e| corrupt(e.to_string()))?;
    Ok(Some((record, offset + end)))
}

/// Makes a rename or a new file in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)?.sync_all()?;
    Ok(())
}
