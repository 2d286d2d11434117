//! The stores: the file store survives a restart and cuts a torn tail; an acceptor on it keeps
//! its promises across a restart and votes at once.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use proptest::prelude::*;
use shoal_paxos::{
    Acceptor, AcceptorConfig, Ballot, FileStorage, Incarnation, MemoryStorage, Message, Meta,
    NodeId, Register, Rejection, Slot, Storage, StorageError,
};

use super::acceptor::ballot;
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
        base: Ballot::ZERO,
    }
}

/// Durability: what was saved is there after reopening, the last write of a key winning.
#[test]
fn the_file_store_survives_reopening() {
    let dir = TempDir::new("reopen");
    let meta =
        Meta { incarnation: Some(Incarnation(3)), fences: [(NodeId(2), Incarnation(4))].into() };
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

/// A write torn by a crash was never acknowledged: opening cuts it off and keeps the rest,
/// while garbage in the middle of the log is reported as corruption.
#[test]
fn a_torn_tail_is_cut_and_corruption_reported() {
    let dir = TempDir::new("torn");
    {
        let mut store = FileStorage::open(&dir.0).unwrap();
        store.save_slot(&"a".into(), &slot(1, 0, 0)).unwrap();
    }
    let log = dir.0.join("paxos.log");
    let good_len = std::fs::metadata(&log).unwrap().len();
    OpenOptions::new().append(true).open(&log).unwrap().write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
    {
        let mut store = FileStorage::open(&dir.0).unwrap();
        assert_eq!(store.slot(&"a".into()), Some(&slot(1, 0, 0)));
        assert_eq!(std::fs::metadata(&log).unwrap().len(), good_len);
        store.save_slot(&"b".into(), &slot(2, 0, 0)).unwrap();
    }
    // Flip a payload byte of the first record: it no longer matches its checksum.
    let mut bytes = std::fs::read(&log).unwrap();
    bytes[14] ^= 0xff;
    std::fs::write(&log, &bytes).unwrap();
    assert!(matches!(FileStorage::open(&dir.0), Err(StorageError::Corrupt { offset: 0, .. })));
}

/// Durability end to end: an acceptor on a file store that restarts keeps its incarnation and
/// its promise, so it votes at once and still refuses the lower ballot.
#[test]
fn an_acceptor_on_a_file_store_keeps_its_promises() {
    let dir = TempDir::new("acceptor");
    let now = Instant::now();
    let meta = Meta { incarnation: Some(Incarnation(1)), ..Meta::default() };
    let mut store = FileStorage::open(&dir.0).unwrap();
    store.save_meta(&meta).unwrap();
    let mut acceptor = Acceptor::new(now, AcceptorConfig::new(NodeId(1), ids(3), 1), store);
    let b = ballot(6, 101);
    acceptor
        .handle_message(now, NodeId(101), Message::Prepare { key: "k".into(), ballot: b })
        .unwrap();
    assert!(matches!(acceptor.poll_transmit(), Some((_, Message::Promise { .. }))));
    drop(acceptor);

    let store = FileStorage::open(&dir.0).unwrap();
    let mut acceptor = Acceptor::new(now, AcceptorConfig::new(NodeId(1), ids(3), 1), store);
    assert_eq!(acceptor.incarnation(), Some(Incarnation(1)));
    let low = ballot(5, 102);
    acceptor
        .handle_message(now, NodeId(102), Message::Prepare { key: "k".into(), ballot: low })
        .unwrap();
    let refusal =
        Message::Rejected { key: "k".into(), ballot: low, reason: Rejection::Promised(b) };
    assert_eq!(acceptor.poll_transmit(), Some((NodeId(102), refusal)));
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
    let meta = Meta { incarnation: Some(Incarnation(2)), ..Meta::default() };
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
    fn save_meta(&mut self, meta: &Meta) -> Result<(), StorageError> {
        self.inner.save_meta(meta)
    }
    fn slot(&self, key: &shoal_paxos::Key) -> Option<&Slot> {
        self.inner.slot(key)
    }
    fn save_slot(&mut self, key: &shoal_paxos::Key, slot: &Slot) -> Result<(), StorageError> {
        if self.ok == 0 {
            return Err(StorageError::Io(std::io::Error::other("disk full")));
        }
        self.ok -= 1;
        self.inner.save_slot(key, slot)
    }
    fn scan(
        &self,
        after: Option<&shoal_paxos::Key>,
        limit: usize,
    ) -> Vec<(shoal_paxos::Key, Slot)> {
        self.inner.scan(after, limit)
    }
}

/// Durability before answers: a vote the store could not record is refused (`Storage`), and
/// the acceptor's state is as it was.
#[test]
fn a_vote_the_store_cannot_record_is_not_given() {
    let now = Instant::now();
    let mut inner = MemoryStorage::new();
    inner.save_meta(&Meta { incarnation: Some(Incarnation(1)), ..Meta::default() }).unwrap();
    let store = FailingStore { inner, ok: 0 };
    let mut acceptor = Acceptor::new(now, AcceptorConfig::new(NodeId(1), ids(3), 1), store);
    let b = ballot(1, 101);
    acceptor
        .handle_message(now, NodeId(101), Message::Prepare { key: "k".into(), ballot: b })
        .unwrap();
    let refusal = Message::Rejected { key: "k".into(), ballot: b, reason: Rejection::Storage };
    assert_eq!(acceptor.poll_transmit(), Some((NodeId(101), refusal)));
    assert_eq!(acceptor.storage().slot(&"k".into()), None);
}
