//! The durable store: an append-only log file, fsynced before every answer.
//!
//! Each record (the meta record, or one key's slot) is a checksummed frame; a write appends
//! the frames of all its records at once and fsyncs the file before it returns (group commit:
//! the driver writes every vote waiting at that moment as one batch). Opening replays the log
//! into memory; the last write of a key wins. When the log holds many more records than live
//! keys it is rewritten.
//!
//! # On-disk format (version 1)
//!
//! ```text
//! paxos.log  = file header, frame*
//! file header  8 bytes   "SHOALPX" then the format version, 0x01
//! frame        4 bytes   length: the body's size, u32 LE
//!              4 bytes   header check: FNV-1a of (length, body check) as 12 LE bytes,
//!                        its two halves xored into a u32 LE
//!              8 bytes   body check: FNV-1a of the body, u64 LE
//!              length    body: msgpack of Record::Meta(Meta), Record::Slot(Key, Slot) or
//!                        Record::ClearSlots (every slot before it is forgotten)
//! ```
//!
//! The header check covers the length, so a frame whose length is damaged does not verify,
//! and neither does a frame header of zeros.
//!
//! # What every acknowledged save relies on
//!
//! - **A write returns `Ok` only once its frames are fsynced**, after every earlier one.
//! - **A failed write leaves nothing behind.** An append or fsync that fails may have put any
//!   part of its frames on disk, so the log is cut back to the end of the last acknowledged
//!   frame and fsynced. The next acknowledged frame then follows the last one directly,
//!   instead of sitting behind a broken frame that reopening would take for a torn tail and cut
//!   off, with the acknowledged frame in it. If the cut-back fails too, the store is
//!   *poisoned*: every later write fails ([`StorageError::Poisoned`]), so its acceptor's
//!   replies never leave, until the store is reopened. (After a failed fsync, Linux may drop the dirty
//!   pages and report the error only once; nothing acknowledged depends on them, since every
//!   byte before the cut was fsynced earlier and the cut itself is fsynced.)
//! - **Reopening keeps every frame that verifies.** It reads frames until one does not verify
//!   (cut short, a check that does not match, zeros). If any verified frame starts after it,
//!   at any offset, the bad frame is in the middle of the log: [`StorageError::Corrupt`], with
//!   its offset and what was wrong. Otherwise the bad frame and everything after it is a
//!   *tail*, cut off: an append a crash tore, or blocks of zeros (preallocated, or not written
//!   before the crash). By the first two rules only the frames of the last write can be torn,
//!   and it was never acknowledged; a torn write keeps a prefix of its records, which the
//!   acceptor's order of writes makes safe (see [`Storage`]'s module). The price of looking at every offset: a torn last frame whose own
//!   body holds the image of a whole frame (a value that embeds a log) makes the store refuse
//!   to open rather than guess.
//! - **A fresh log is made durable before it is used**: the directory (and the parent of each
//!   directory created) is fsynced after creating it, and again after creating the log file;
//!   the file header is fsynced before the first record is written. A file that holds nothing
//!   but a prefix of the header and zeros is a creation a crash cut short, and starts afresh; a
//!   file that does not start with the header is not a log ([`StorageError::Corrupt`] at 0).
//! - **Compaction** writes the live records to `paxos.log.tmp`, fsyncs it, renames it over the
//!   log and fsyncs the directory. Both files hold every acknowledged record, so a crash at any
//!   point is safe. If writing the new file fails, the old log stays and the store carries on
//!   (compaction is tried again once as many records again as the slack have been written); if
//!   the rename or the directory fsync fails, appends could go to a file a crash discards, so
//!   the store is poisoned.
//!
//! # Testing
//!
//! The file store does its I/O through a small private seam ([`log::Log`]) so that
//! `file/tests.rs` can run it on a disk in memory that fails appends half-way, fails fsyncs,
//! fails the cut-back and crashes, leaving torn and zero-filled tails; a property test checks
//! that no acknowledged save is lost. Those tests live beside the seam rather than in
//! `tests/paxos/storage.rs` because the seam is not public. `tests/paxos/storage.rs` checks the
//! format through real files.

mod log;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;

use self::log::{FsLog, Log};
use super::{Meta, Record, Slot, Storage, Tables};
use crate::error::StorageError;
use crate::hash::fnv1a;
use crate::register::Key;

/// The first bytes of every log: a magic, then the format version.
const FILE_HEADER: [u8; 8] = *b"SHOALPX\x01";
const FRAME_HEADER_BYTES: usize = 16;
/// By default the log is rewritten when it holds this many more records than live ones.
const COMPACT_SLACK_RECORDS: usize = 4096;

/// An acceptor store in a directory, durable across crashes.
///
/// A write that fails leaves the store as it was, on disk and in memory. If the store cannot
/// undo a failed write, it refuses every later write ([`StorageError::Poisoned`]) until it is
/// opened again.
#[derive(Debug)]
pub struct FileStorage {
    log: Box<dyn Log>,
    tables: Tables,
    /// The log's length up to the end of the last synced frame: every acknowledged record is
    /// before it, and a failed append is cut back to it.
    synced_len: u64,
    records: usize,
    compact_slack_records: usize,
    /// No compaction is tried before the log holds this many records: after one failed, the
    /// store waits for as many new records as the slack before it tries again.
    compaction_retry_records: usize,
    /// Set once a failed write could not be undone: why the store no longer writes.
    poisoned: Option<String>,
}

impl FileStorage {
    /// Opens (or creates) the store in `dir`, replaying its log.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StorageError> {
        FileStorage::open_log(Box::new(FsLog::open(dir.as_ref())?))
    }

    /// Opens the store on `log`: replays it, cuts off a torn or zero-filled tail, and starts a
    /// log that holds no header yet afresh.
    fn open_log(mut log: Box<dyn Log>) -> Result<Self, StorageError> {
        let bytes = log.read_all()?;
        let Replayed { tables, records, good_len } = replay(&bytes)?;
        if good_len == 0 {
            log.truncate(0)?;
            log.append(&FILE_HEADER)?;
            log.sync()?;
        } else if good_len < bytes.len() {
            log.truncate(good_len as u64)?;
            log.sync()?;
        }
        Ok(FileStorage {
            log,
            tables,
            synced_len: good_len.max(FILE_HEADER.len()) as u64,
            records,
            compact_slack_records: COMPACT_SLACK_RECORDS,
            compaction_retry_records: 0,
            poisoned: None,
        })
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

    /// Appends the frames of `records` and fsyncs them, once; on a failure, cuts the log back
    /// to where it was.
    fn append(&mut self, records: &[Record]) -> Result<(), StorageError> {
        if let Some(cause) = &self.poisoned {
            return Err(StorageError::Poisoned { cause: cause.clone() });
        }
        let mut frames = Vec::new();
        for record in records {
            frames.extend(encode_frame(record)?);
        }
        if let Err(error) = self.log.append(&frames).and_then(|()| self.log.sync()) {
            self.cut_back();
            return Err(error.into());
        }
        self.synced_len += frames.len() as u64;
        self.records += records.len();
        Ok(())
    }

    /// Removes whatever a failed append left after the last synced frame, durably; poisons the
    /// store if it cannot.
    fn cut_back(&mut self) {
        if let Err(error) = self.log.truncate(self.synced_len).and_then(|()| self.log.sync()) {
            let len = self.synced_len;
            self.poisoned =
                Some(format!("cutting the log back to {len} bytes after a failed append: {error}"));
        }
    }

    /// Rewrites the log with the live records only, once it holds enough superseded ones.
    ///
    /// It runs after a write is durable and does not fail it: a rewrite that fails before the
    /// switch leaves the old log in use (and is tried again once the slack has filled again);
    /// one that fails during the switch poisons the store.
    fn compact_if_due(&mut self) {
        let live = self.tables.slots.len() + 1;
        if self.records <= live + self.compact_slack_records
            || self.records < self.compaction_retry_records
        {
            return;
        }
        let prepared = self.encode_live_records().and_then(|bytes| {
            self.log.prepare_replacement(&bytes)?;
            Ok(bytes)
        });
        let Ok(bytes) = prepared else {
            self.compaction_retry_records = self.records + self.compact_slack_records;
            return;
        };
        match self.log.install_replacement() {
            Ok(()) => {
                self.synced_len = bytes.len() as u64;
                self.records = live;
            }
            Err(error) => {
                self.poisoned = Some(format!("putting the compacted log in place: {error}"));
            }
        }
    }

    /// A whole log holding the live records: the file header, the meta record, every slot.
    fn encode_live_records(&self) -> Result<Vec<u8>, StorageError> {
        let mut bytes = FILE_HEADER.to_vec();
        bytes.extend(encode_frame(&Record::Meta(self.tables.meta.clone()))?);
        for (key, slot) in &self.tables.slots {
            bytes.extend(encode_frame(&Record::Slot(key.clone(), slot.clone()))?);
        }
        Ok(bytes)
    }
}

impl Storage for FileStorage {
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
        if records.is_empty() {
            return Ok(());
        }
        self.append(records)?;
        records.iter().for_each(|record| self.tables.apply(record));
        self.compact_if_due();
        Ok(())
    }
}

fn encode_frame(record: &Record) -> Result<Vec<u8>, StorageError> {
    let body = rmp_serde::to_vec(record)?;
    let len = u32::try_from(body.len())
        .map_err(|_| StorageError::RecordTooLarge { bytes: body.len() })?;
    let body_check = fnv1a(&body);
    let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + body.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&header_check(len, body_check).to_le_bytes());
    frame.extend_from_slice(&body_check.to_le_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// The check of a frame header: FNV-1a of its length and body check, folded to 32 bits.
fn header_check(len: u32, body_check: u64) -> u32 {
    let mut bytes = [0u8; 12];
    bytes[..4].copy_from_slice(&len.to_le_bytes());
    bytes[4..].copy_from_slice(&body_check.to_le_bytes());
    let hash = fnv1a(&bytes);
    (hash ^ (hash >> 32)) as u32
}

/// What replaying a log found.
#[derive(Default)]
struct Replayed {
    tables: Tables,
    records: usize,
    /// The length of the part to keep: the file header and every verified frame. Zero for a
    /// log whose creation was cut short.
    good_len: usize,
}

/// Replays a log: its records, and how much of it to keep (see the module docs for the rules).
fn replay(bytes: &[u8]) -> Result<Replayed, StorageError> {
    if !bytes.starts_with(&FILE_HEADER) {
        return if never_held_a_record(bytes) {
            Ok(Replayed::default())
        } else {
            Err(StorageError::Corrupt { offset: 0, reason: describe_bad_file_header(bytes) })
        };
    }
    let mut replayed = Replayed { good_len: FILE_HEADER.len(), ..Replayed::default() };
    while replayed.good_len < bytes.len() {
        let offset = replayed.good_len;
        match verify_frame(bytes, offset) {
            Ok((body, end)) => {
                match decode_record(body, offset)? {
                    Record::Meta(meta) => replayed.tables.meta = meta,
                    Record::ClearSlots => replayed.tables.slots.clear(),
                    Record::Slot(key, slot) => {
                        replayed.tables.slots.insert(key, slot);
                    }
                }
                replayed.records += 1;
                replayed.good_len = end;
            }
            Err(what) => {
                if let Some(next) =
                    (offset + 1..bytes.len()).find(|&o| verify_frame(bytes, o).is_ok())
                {
                    let reason =
                        format!("{what}, and a record that verifies follows at byte {next}");
                    return Err(StorageError::Corrupt { offset: offset as u64, reason });
                }
                break; // a torn or zero-filled tail: never acknowledged, cut off by the caller
            }
        }
    }
    Ok(replayed)
}

/// Why a frame does not verify.
#[derive(Debug)]
enum BadFrame {
    HeaderCutShort { bytes: usize },
    Zeros,
    HeaderCheck { len: u32 },
    CutShort { len: u32, missing: usize },
    BodyCheck { len: u32 },
}

impl fmt::Display for BadFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadFrame::HeaderCutShort { bytes } => {
                write!(f, "a frame header cut short ({bytes} of {FRAME_HEADER_BYTES} bytes)")
            }
            BadFrame::Zeros => write!(f, "zeros where a frame header should be"),
            BadFrame::HeaderCheck { len } => {
                write!(f, "a frame header that does not match its check (length {len})")
            }
            BadFrame::CutShort { len, missing } => {
                write!(f, "a frame of {len} bytes cut short by {missing} bytes")
            }
            BadFrame::BodyCheck { len } => {
                write!(f, "a record of {len} bytes that does not match its check")
            }
        }
    }
}

/// The body of the frame at `offset` and where the next frame starts, or what is wrong with it.
/// (Cheap when it fails: reopening calls it at every offset of a tail.)
fn verify_frame(bytes: &[u8], offset: usize) -> Result<(&[u8], usize), BadFrame> {
    let rest = &bytes[offset..];
    let Some((header, after)) = rest.split_first_chunk::<FRAME_HEADER_BYTES>() else {
        return Err(BadFrame::HeaderCutShort { bytes: rest.len() });
    };
    if *header == [0; FRAME_HEADER_BYTES] {
        return Err(BadFrame::Zeros);
    }
    let [l0, l1, l2, l3, h0, h1, h2, h3, b0, b1, b2, b3, b4, b5, b6, b7] = *header;
    let len = u32::from_le_bytes([l0, l1, l2, l3]);
    let body_check = u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]);
    if header_check(len, body_check) != u32::from_le_bytes([h0, h1, h2, h3]) {
        return Err(BadFrame::HeaderCheck { len });
    }
    let Some(body) = after.get(..len as usize) else {
        return Err(BadFrame::CutShort { len, missing: len as usize - after.len() });
    };
    if fnv1a(body) != body_check {
        return Err(BadFrame::BodyCheck { len });
    }
    Ok((body, offset + FRAME_HEADER_BYTES + body.len()))
}

/// A verified frame's record. Both checks passed, so a failure is not a torn write: it is
/// corruption (or a bug), reported.
fn decode_record(body: &[u8], offset: usize) -> Result<Record, StorageError> {
    rmp_serde::from_slice(body).map_err(|error| StorageError::Corrupt {
        offset: offset as u64,
        reason: format!("a record that verifies but does not decode: {error}"),
    })
}

/// Whether a file without a complete header holds only what a cut-short creation leaves: a
/// prefix of the header, and zeros.
fn never_held_a_record(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().all(|(i, &byte)| byte == 0 || FILE_HEADER.get(i) == Some(&byte))
}

fn describe_bad_file_header(bytes: &[u8]) -> String {
    let (magic, ours) = FILE_HEADER.split_at(FILE_HEADER.len() - 1);
    match bytes.strip_prefix(magic).and_then(|rest| rest.first()) {
        Some(version) => {
            format!("log format version {version}; this build reads version {}", ours[0])
        }
        None => "not a Shoal Paxos log: it does not start with \"SHOALPX\"".into(),
    }
}
