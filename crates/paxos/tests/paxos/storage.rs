//! The stores: the file store survives a restart, cuts a torn or zero-filled tail and reports
//! corruption in the middle of its log; an acceptor on it keeps its promises across a restart
//! and votes at once. Persist, then reply: an acceptor's reply waits until the writes before
//! it are durable, a crash between them forgets only what nobody heard, votes asked for while
//! a write is out share the next one, and a failed write drops the replies waiting for it.
//!
//! The file store under injected faults (failed appends, fsyncs and compactions, crashes) is
//! tested beside its private I/O seam, in `src/storage/file/tests.rs`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use proptest::prelude::*;
use shoal_paxos::core::{
    Acceptor, AcceptorConfig, Ballot, Incarnation, Message, Meta, NodeId, Record, Rejection, Slot,
    Storage,
};
use shoal_paxos::{FileStorage, MemoryStorage, Register, StorageError};

use super::acceptor::{ballot, prepare};
use super::wire::ids;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let unique = format!("shoal-paxos-{name}-{}-{:?}", std::process::id(), Instant::now());
        let dir = std::env::temp_dir().join(unique.replace([' ', ':', '.'], "_"));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn slot(promised: u64, accepted: u64, version: u64) -> Slot {
    Slot {
        promised: ballot(promised, 101),
        accepted: if accepted == 0 { Ballot::ZERO } else { ballot(accepted, 101) },
        register: Register { version, entry: None },
        lineage: Default::default(),
    }
}

/// Durability: what was saved is there after reopening, the last write of a key winning.
#[test]
fn the_file_store_survives_reopening() {
    let dir = TempDir::new("reopen");
    let meta = Meta {
        incarnation: Some(Incarnation { life: 3, ..Incarnation::default() }),
        fences: [(NodeId(2), Incarnation { life: 4, ..Incarnation::default() })].into(),
        ..Meta::default()
    };
    {
        let mut store = FileStorage::open(&dir.0).unwrap();
        store.save_meta(&meta).unwrap();
        store.save_slot(&"a".into(), &slot(1, 0, 0)).unwrap();
        store.save_slot(&"a".into(), &slot(2, 2, 1)).unwrap();
        store.save_slot(&"b".into(), &slot(5, 0, 0)).unwrap();
    }
    let store = FileStorage::open(&dir.0).unwrap();
    assert_eq!(store.meta(), &meta);
    assert_eq!(store.slot(&"a".into()), Some(&slot(2, 2, 1)));
    assert_eq!(store.scan(None, 10).len(), 2);
    assert_eq!(store.scan(Some(&"a".into()), 10), vec![("b".into(), slot(5, 0, 0))]);
}

/// Rule: an acceptor without state drops what its store held before it copies the others'
/// slots; in the file store that is one record (one fsync, not one per key), and it holds
/// after reopening.
#[test]
fn clearing_the_slots_is_one_record_that_survives_reopening() {
    let dir = TempDir::new("clear");
    {
        let mut store = FileStorage::open(&dir.0).unwrap();
        for key in ["a", "b", "c"] {
            store.save_slot(&key.into(), &slot(1, 1, 1)).unwrap();
        }
        let before = store.log_records();
        store.clear_slots().unwrap();
        assert_eq!(store.log_records(), before + 1);
        store.save_slot(&"d".into(), &slot(2, 2, 2)).unwrap();
    }
    let store = FileStorage::open(&dir.0).unwrap();
    assert_eq!(store.scan(None, 10), vec![("d".into(), slot(2, 2, 2))]);
}

// The on-disk format (documented in `src/storage/file.rs`): an 8-byte file header, then frames
// of a 16-byte header (length u32, header check u32, body check u64) and a body.
const FILE_HEADER_BYTES: u64 = 8;
const FRAME_HEADER_BYTES: u64 = 16;

/// A store in `dir` holding one slot per key of `keys`, saved in that order, and the offset of
/// each one's frame in the log.
fn log_of(dir: &TempDir, keys: &[&str]) -> (PathBuf, Vec<u64>) {
    let log = dir.0.join("paxos.log");
    let mut store = FileStorage::open(&dir.0).unwrap();
    let mut offsets = Vec::new();
    for (version, key) in keys.iter().enumerate() {
        offsets.push(std::fs::metadata(&log).unwrap().len());
        store.save_slot(&(*key).into(), &slot(1, 0, version as u64)).unwrap();
    }
    (log, offsets)
}

fn keys_in(store: &FileStorage) -> Vec<shoal_paxos::Key> {
    store.scan(None, 100).into_iter().map(|(key, _)| key).collect()
}

fn flip_byte(log: &std::path::Path, offset: u64) {
    let mut bytes = std::fs::read(log).unwrap();
    bytes[offset as usize] ^= 0x40;
    std::fs::write(log, &bytes).unwrap();
}

/// A torn last record (cut short, or whole but not matching its check with nothing after it)
/// was never acknowledged: opening cuts it off and keeps the rest, and the store writes on.
#[test]
fn a_torn_last_record_is_cut() {
    let dir = TempDir::new("torn");
    let (log, offsets) = log_of(&dir, &["a", "b"]);
    let full_len = std::fs::metadata(&log).unwrap().len();
    for torn_len in [offsets[1] + 3, offsets[1] + FRAME_HEADER_BYTES + 2, full_len - 1] {
        OpenOptions::new().write(true).open(&log).unwrap().set_len(torn_len).unwrap();
        let mut store = FileStorage::open(&dir.0).unwrap();
        assert_eq!(keys_in(&store), vec!["a".into()], "torn at {torn_len}");
        assert_eq!(std::fs::metadata(&log).unwrap().len(), offsets[1], "cut back");
        store.save_slot(&"b".into(), &slot(1, 0, 1)).unwrap();
    }
    flip_byte(&log, full_len - 1);
    let store = FileStorage::open(&dir.0).unwrap();
    assert_eq!(keys_in(&store), vec!["a".into()], "a last record that does not match its check");
}

/// A tail of zeros (blocks preallocated, or allocated but not written, before a crash) opens:
/// it is cut off, after whole records and after a torn one alike.
#[test]
fn a_zero_filled_tail_opens_and_is_cut() {
    let dir = TempDir::new("zeros");
    let (log, offsets) = log_of(&dir, &["a", "b"]);
    let full_len = std::fs::metadata(&log).unwrap().len();
    OpenOptions::new().append(true).open(&log).unwrap().write_all(&[0; 8192]).unwrap();
    {
        let mut store = FileStorage::open(&dir.0).unwrap();
        assert_eq!(keys_in(&store), vec!["a".into(), "b".into()]);
        assert_eq!(std::fs::metadata(&log).unwrap().len(), full_len);
        store.save_slot(&"c".into(), &slot(1, 0, 2)).unwrap();
    }
    // Record `b` torn half-way, then zeros.
    OpenOptions::new().write(true).open(&log).unwrap().set_len(offsets[1] + 20).unwrap();
    OpenOptions::new().append(true).open(&log).unwrap().write_all(&[0; 100]).unwrap();
    let store = FileStorage::open(&dir.0).unwrap();
    assert_eq!(keys_in(&store), vec!["a".into()]);
}

/// A damaged length in the middle of the log is corruption, reported with its offset: the
/// header check covers the length, and a record that verifies follows. (With a length that
/// was not checked, a larger one read as a frame running past the end of the file, and every
/// later record was cut off as a torn tail.)
#[test]
fn a_corrupt_length_mid_log_is_an_error_not_a_torn_tail() {
    let dir = TempDir::new("length");
    let (log, offsets) = log_of(&dir, &["a", "b", "c"]);
    flip_byte(&log, offsets[1] + 1); // the second byte of `b`'s length: 16 KiB longer
    match FileStorage::open(&dir.0) {
        Err(StorageError::Corrupt { offset, reason }) => {
            assert_eq!(offset, offsets[1]);
            assert!(reason.contains("does not match its check"), "{reason}");
        }
        other => panic!("expected corruption at {}, got {other:?}", offsets[1]),
    }
    assert!(std::fs::metadata(&log).unwrap().len() > offsets[2], "nothing was cut");
}

/// A record whose body is damaged in the middle of the log is corruption, not a torn tail.
#[test]
fn a_corrupt_record_mid_log_is_an_error() {
    let dir = TempDir::new("body");
    let (log, offsets) = log_of(&dir, &["a", "b"]);
    assert_eq!(offsets[0], FILE_HEADER_BYTES);
    flip_byte(&log, offsets[0] + FRAME_HEADER_BYTES + 2);
    assert!(matches!(
        FileStorage::open(&dir.0),
        Err(StorageError::Corrupt { offset, .. }) if offset == FILE_HEADER_BYTES
    ));
}

/// A file that does not start with the log's header is not opened as a log (another file, or
/// another format version); one that holds only what a cut-short creation leaves (nothing, a
/// prefix of the header, zeros) opens as a new, empty log.
#[test]
fn a_file_that_is_not_a_log_is_refused_and_a_cut_short_creation_starts_afresh() {
    let dir = TempDir::new("header");
    let log = dir.0.join("paxos.log");
    for not_a_log in [&b"hello, world"[..], b"SHOALPX\x02"] {
        std::fs::write(&log, not_a_log).unwrap();
        let opened = FileStorage::open(&dir.0);
        assert!(matches!(opened, Err(StorageError::Corrupt { offset: 0, .. })), "{opened:?}");
    }
    for cut_short in [&b""[..], b"SHO", b"SHOAL\0\0\0\0\0\0\0\0", &[0; 4096]] {
        std::fs::write(&log, cut_short).unwrap();
        let mut store = FileStorage::open(&dir.0).unwrap();
        assert_eq!(store.scan(None, 10), vec![]);
        store.save_slot(&"a".into(), &slot(1, 0, 0)).unwrap();
        drop(store);
        assert_eq!(keys_in(&FileStorage::open(&dir.0).unwrap()), vec!["a".into()]);
    }
}

/// A log of another format version is refused, and the error names both versions (the file's
/// and the one this build reads), so an operator rolling back an upgrade sees why; the file is
/// left as it was.
#[test]
fn a_log_of_another_format_version_is_refused_with_the_version_named() {
    let dir = TempDir::new("version");
    let log = dir.0.join("paxos.log");
    for version in [2u8, 7, 255] {
        let file = [&b"SHOALPX"[..], &[version], &[0; 32]].concat();
        std::fs::write(&log, &file).unwrap();
        let error = FileStorage::open(&dir.0).expect_err("another format version is refused");
        let StorageError::Corrupt { offset: 0, reason } = &error else {
            panic!("expected a refusal of the header, got {error:?}");
        };
        let expected = format!("log format version {version}; this build reads version 1");
        assert_eq!(reason, &expected);
        assert!(error.to_string().contains(&expected), "{error}");
        assert_eq!(std::fs::read(&log).unwrap(), file, "the refused file is left as it was");
    }
}

/// Opening creates the directory and its missing parents.
#[test]
fn opening_creates_missing_directories() {
    let dir = TempDir::new("nested");
    let nested = dir.0.join("a").join("b");
    FileStorage::open(&nested).unwrap().save_slot(&"k".into(), &slot(1, 0, 0)).unwrap();
    assert_eq!(keys_in(&FileStorage::open(&nested).unwrap()), vec!["k".into()]);
}

/// Durability end to end: an acceptor on a file store that restarts keeps its incarnation and
/// its promise, so it votes at once and still refuses the lower ballot.
#[test]
fn an_acceptor_on_a_file_store_keeps_its_promises() {
    let dir = TempDir::new("acceptor");
    let now = Instant::now();
    let meta = Meta {
        incarnation: Some(Incarnation { life: 1, ..Incarnation::default() }),
        ..Meta::default()
    };
    let mut store = FileStorage::open(&dir.0).unwrap();
    store.save_meta(&meta).unwrap();
    let mut acceptor = Acceptor::new(now, AcceptorConfig::new(NodeId(1), ids(3), 1), &store);
    let b = ballot(6, 101);
    acceptor.handle_message(now, NodeId(101), prepare("k", b)).unwrap();
    write_to(&mut store, &mut acceptor);
    assert!(matches!(acceptor.poll_transmit(), Some((_, Message::Promise { .. }))));
    drop((acceptor, store));

    let store = FileStorage::open(&dir.0).unwrap();
    let mut acceptor = Acceptor::new(now, AcceptorConfig::new(NodeId(1), ids(3), 1), &store);
    assert_eq!(acceptor.incarnation(), Some(Incarnation { life: 1, ..Incarnation::default() }));
    let low = ballot(5, 102);
    acceptor.handle_message(now, NodeId(102), prepare("k", low)).unwrap();
    let refusal =
        Message::Rejected { key: "k".into(), ballot: low, reason: Rejection::Promised(b) };
    assert_eq!(acceptor.poll_transmit(), Some((NodeId(102), refusal)));
}

/// Writes every batch `acceptor` asks for to `store`, and reports it durable.
fn write_to(store: &mut impl Storage, acceptor: &mut Acceptor) {
    while let Some(batch) = acceptor.poll_persist() {
        store.write(&batch.records).unwrap();
        acceptor.persisted(batch.id);
    }
}

/// An acceptor with an incarnation, voting at once, on a copy of `disk`.
fn voting_on(disk: &MemoryStorage, now: Instant) -> Acceptor {
    let acceptor = Acceptor::new(now, AcceptorConfig::new(NodeId(1), ids(3), 1), disk);
    assert!(acceptor.incarnation().is_some());
    acceptor
}

fn disk_with_incarnation() -> MemoryStorage {
    let mut disk = MemoryStorage::new();
    let meta = Meta {
        incarnation: Some(Incarnation { life: 1, ..Incarnation::default() }),
        ..Meta::default()
    };
    disk.save_meta(&meta).unwrap();
    disk
}

/// Persist, then reply (CASPaxos §2: an acceptor's promise and acceptance are durable before
/// it answers): the promise waits until its write is reported durable. An acceptor that
/// crashes between the two forgets a promise that nobody heard, so after its restart it may
/// promise a lower ballot; the promise that left is kept across a restart. The mutant
/// `reply-before-persist` sends the first promise at once, and this test fails.
#[test]
fn a_reply_leaves_only_once_its_write_is_durable() {
    let now = Instant::now();
    let disk = disk_with_incarnation();
    let mut acceptor = voting_on(&disk, now);
    let (high, low) = (ballot(6, 101), ballot(5, 102));
    acceptor.handle_message(now, NodeId(101), prepare("k", high)).unwrap();
    assert_eq!(acceptor.poll_transmit(), None, "the promise waits for its write");
    let batch = acceptor.poll_persist().expect("the promise is to be written");
    assert_eq!(batch.records.len(), 1);
    assert_eq!(acceptor.poll_persist(), None, "one batch out at a time");
    assert_eq!(acceptor.poll_transmit(), None);

    // A crash before the write: the restarted acceptor never promised 6, and nobody heard it.
    drop(acceptor);
    let mut restarted = voting_on(&disk, now);
    restarted.handle_message(now, NodeId(102), prepare("k", low)).unwrap();
    assert_eq!(restarted.poll_transmit(), None);
    let mut disk = disk;
    write_to(&mut disk, &mut restarted);
    assert!(
        matches!(restarted.poll_transmit(), Some((_, Message::Promise { ballot, .. })) if ballot == low)
    );

    // The write done: the promise leaves, and a restart keeps it.
    restarted.handle_message(now, NodeId(101), prepare("k", high)).unwrap();
    write_to(&mut disk, &mut restarted);
    assert!(
        matches!(restarted.poll_transmit(), Some((_, Message::Promise { ballot, .. })) if ballot == high)
    );
    let mut again = voting_on(&disk, now);
    again.handle_message(now, NodeId(102), prepare("k", low)).unwrap();
    let refusal =
        Message::Rejected { key: "k".into(), ballot: low, reason: Rejection::Promised(high) };
    assert_eq!(again.poll_transmit(), Some((NodeId(102), refusal)));
}

/// Group commit: votes asked for while a batch is out go into the next batch, all of them, and
/// each reply leaves in order once the batch it waits for is durable.
#[test]
fn votes_asked_for_while_a_write_is_out_share_the_next_batch() {
    let now = Instant::now();
    let mut disk = disk_with_incarnation();
    let mut acceptor = voting_on(&disk, now);
    acceptor.handle_message(now, NodeId(101), prepare("a", ballot(1, 101))).unwrap();
    let first = acceptor.poll_persist().unwrap();
    for key in ["b", "c", "d"] {
        acceptor.handle_message(now, NodeId(101), prepare(key, ballot(1, 101))).unwrap();
    }
    assert_eq!(acceptor.poll_persist(), None);
    disk.write(&first.records).unwrap();
    acceptor.persisted(first.id);
    let promised = |acceptor: &mut Acceptor| {
        std::iter::from_fn(|| acceptor.poll_transmit())
            .map(|(_, m)| match m {
                Message::Promise { key, .. } => key,
                other => panic!("not a promise: {other:?}"),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(promised(&mut acceptor), vec!["a".into()]);
    let second = acceptor.poll_persist().unwrap();
    assert_eq!(second.records.len(), 3, "one batch for the three votes: {second:?}");
    disk.write(&second.records).unwrap();
    acceptor.persisted(second.id);
    assert_eq!(promised(&mut acceptor), vec!["b".into(), "c".into(), "d".into()]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// The file store and the memory store agree on any sequence of saves, and the file store
    /// still agrees after reopening.
    #[test]
    fn file_and_memory_stores_agree(saves in proptest::collection::vec((0u8..4, 0u64..5, 0u64..5), 1..20)) {
        let dir = TempDir::new("prop");
        let mut file = FileStorage::open(&dir.0).unwrap();
        let mut memory = MemoryStorage::new();
        for (key, promised, version) in &saves {
            let key = vec![*key].into();
            let s = slot(*promised, *promised, *version);
            file.save_slot(&key, &s).unwrap();
            memory.save_slot(&key, &s).unwrap();
        }
        prop_assert_eq!(file.scan(None, 100), memory.scan(None, 100));
        drop(file);
        let reopened = FileStorage::open(&dir.0).unwrap();
        prop_assert_eq!(reopened.scan(None, 100), memory.scan(None, 100));
    }
}

/// Compaction: once the log holds many superseded records it is rewritten with the live ones
/// only, and what it holds is unchanged, before and after reopening.
#[test]
fn compaction_keeps_the_live_records() {
    let dir = TempDir::new("compact");
    let meta = Meta {
        incarnation: Some(Incarnation { life: 2, ..Incarnation::default() }),
        ..Meta::default()
    };
    let mut store = FileStorage::open(&dir.0).unwrap().with_compaction_slack(8);
    store.save_meta(&meta).unwrap();
    for round in 0..10u64 {
        store.save_slot(&"a".into(), &slot(round + 1, round, round)).unwrap();
        store.save_slot(&"b".into(), &slot(round + 2, 0, 0)).unwrap();
    }
    assert!(store.log_records() <= 2 + 1 + 8, "compacted: {} records", store.log_records());
    let expected = store.scan(None, 10);
    drop(store);
    let reopened = FileStorage::open(&dir.0).unwrap();
    assert_eq!(reopened.scan(None, 10), expected);
    assert_eq!(reopened.meta(), &meta);
}

/// A store that fails every write after the first `ok` ones.
struct FailingStore {
    inner: MemoryStorage,
    ok: usize,
}

impl Storage for FailingStore {
    fn meta(&self) -> &Meta {
        self.inner.meta()
    }
    fn slot(&self, key: &shoal_paxos::Key) -> Option<&Slot> {
        self.inner.slot(key)
    }
    fn scan(
        &self,
        after: Option<&shoal_paxos::Key>,
        limit: usize,
    ) -> Vec<(shoal_paxos::Key, Slot)> {
        self.inner.scan(after, limit)
    }
    fn write(&mut self, records: &[Record]) -> Result<(), StorageError> {
        if self.ok == 0 {
            return Err(StorageError::Io(std::io::Error::other("disk full")));
        }
        self.ok -= 1;
        self.inner.write(records)
    }
}

/// Persist, then reply, when the write fails: the vote's reply is dropped, never sent (a lost
/// message to the proposer), and the same records are asked for again after the retry
/// interval, before anything asked for since; once they are durable, the replies flow again.
#[test]
fn a_vote_the_store_cannot_record_is_not_given() {
    let now = Instant::now();
    let mut store = FailingStore { inner: disk_with_incarnation(), ok: 0 };
    let mut acceptor = Acceptor::new(now, AcceptorConfig::new(NodeId(1), ids(3), 1), &store);
    let b = ballot(1, 101);
    acceptor.handle_message(now, NodeId(101), prepare("k", b)).unwrap();
    let batch = acceptor.poll_persist().unwrap();
    assert!(store.write(&batch.records).is_err());
    acceptor.persist_failed(now, batch.clone());
    assert_eq!(acceptor.poll_transmit(), None, "the promise is dropped");
    assert_eq!(acceptor.poll_persist(), None, "not asked for again at once");
    assert_eq!(store.slot(&"k".into()), None);

    // A later vote's reply waits behind the write asked for again.
    acceptor.handle_message(now, NodeId(101), prepare("j", b)).unwrap();
    let retry_at = acceptor.poll_timeout().expect("a retry is due");
    acceptor.handle_timeout(retry_at);
    let again = acceptor.poll_persist().unwrap();
    assert_eq!(again.records[..1], batch.records[..], "the failed write comes first");
    assert_eq!(again.records.len(), 2);
    assert_eq!(acceptor.poll_transmit(), None);
    store.ok = 1;
    store.write(&again.records).unwrap();
    acceptor.persisted(again.id);
    assert!(
        matches!(acceptor.poll_transmit(), Some((_, Message::Promise { key, .. })) if key == "j".into())
    );
    assert_eq!(store.slot(&"k".into()).map(|s| s.promised), Some(b));
}
