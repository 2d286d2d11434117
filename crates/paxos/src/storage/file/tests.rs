//! The file store on a disk that fails: appends that write a prefix and fail, fsyncs that
//! fail, cut-backs that fail, compactions that fail before or during the switch, and crashes
//! that keep what was synced plus a torn or zero-filled tail. The rule throughout: **no save
//! that returned `Ok` is lost on reopen**, and a save that failed leaves the store as it was.
//!
//! The format through real files is checked in `tests/paxos/storage.rs`.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use proptest::prelude::*;

use super::log::Log;
use super::{FILE_HEADER, FileStorage};
use crate::core::Incarnation;
use crate::error::StorageError;
use crate::register::{Key, Register};
use crate::storage::{Meta, Slot, Storage};

/// A log file in memory, shared between a store and the test, that fails when told to.
///
/// It keeps apart what reads see (`written`, the page cache) and what a crash keeps for sure
/// (`durable`, as of the last successful sync).
#[derive(Clone, Debug, Default)]
struct FaultyDisk(Arc<Mutex<Disk>>);

#[derive(Debug, Default)]
struct Disk {
    written: Vec<u8>,
    durable: Vec<u8>,
    /// Compaction's prepared file (durable once prepared).
    replacement: Option<Vec<u8>>,
    /// After a switch that failed once the rename was done: the old log, which a crash may
    /// bring back.
    replaced: Option<Vec<u8>>,
    faults: Faults,
}

/// Faults armed for the next call of each kind.
#[derive(Debug, Default)]
struct Faults {
    /// The next append writes at most this many bytes, then fails.
    append: Option<usize>,
    /// The next sync fails, after making this many bytes of the changes since the last sync
    /// durable.
    sync: Option<usize>,
    /// The next truncate fails.
    truncate: bool,
    /// The next compaction fails writing its new file.
    prepare: bool,
    /// The next compaction fails during the switch: before the rename (`false`) or after it.
    install: Option<bool>,
}

/// One fault, armed for the next call it applies to.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Append { written: usize },
    Sync { made_durable: usize },
    Truncate,
    Prepare,
    Install { renamed: bool },
}

/// What a crash keeps beyond the synced log.
#[derive(Clone, Copy, Debug, Default)]
struct Crash {
    /// Bytes of what was written after the synced part that reached the disk anyway.
    unsynced_kept: usize,
    /// A range after the synced part (offset from it, length) that reads back as zeros: a
    /// block that was allocated but not written.
    hole: Option<(usize, usize)>,
    /// Zeros after the end of the file (preallocated blocks).
    zeros_after: usize,
    /// After a failed switch, whether the old log comes back (else the compacted one stays).
    old_log: bool,
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected fault: {what}"))
}

impl FaultyDisk {
    fn lock(&self) -> MutexGuard<'_, Disk> {
        self.0.lock().expect("the disk's lock is never held across a panic")
    }

    fn arm(&self, fault: Fault) {
        let faults = &mut self.lock().faults;
        match fault {
            Fault::Append { written } => faults.append = Some(written),
            Fault::Sync { made_durable } => faults.sync = Some(made_durable),
            Fault::Truncate => faults.truncate = true,
            Fault::Prepare => faults.prepare = true,
            Fault::Install { renamed } => faults.install = Some(renamed),
        }
    }

    /// Loses power: the log becomes what was synced, plus what `crash` says survived.
    fn crash(&self, crash: Crash) {
        let mut disk = self.lock();
        if let Some(old) = disk.replaced.take().filter(|_| crash.old_log) {
            disk.durable = old.clone();
            disk.written = old;
        }
        let synced = common_prefix_len(&disk.durable, &disk.written);
        let mut log = if crash.unsynced_kept > 0 {
            let end = disk.written.len().min(synced + crash.unsynced_kept);
            disk.written[..end].to_vec()
        } else {
            disk.durable.clone()
        };
        if let Some((start, len)) = crash.hole {
            let start = (synced + start).min(log.len());
            let end = (start + len).min(log.len());
            log[start..end].fill(0);
        }
        log.resize(log.len() + crash.zeros_after, 0);
        *disk = Disk { written: log.clone(), durable: log, ..Disk::default() };
    }

    fn open(&self) -> Result<FileStorage, StorageError> {
        FileStorage::open_log(Box::new(self.clone()))
    }
}

fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl Log for FaultyDisk {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        Ok(self.lock().written.clone())
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut disk = self.lock();
        match disk.faults.append.take() {
            Some(written) => {
                disk.written.extend_from_slice(&bytes[..written.min(bytes.len())]);
                Err(injected("append"))
            }
            None => {
                disk.written.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut disk = self.lock();
        match disk.faults.sync.take() {
            Some(made_durable) => {
                if made_durable > 0 {
                    let end = common_prefix_len(&disk.durable, &disk.written) + made_durable;
                    disk.durable = disk.written[..end.min(disk.written.len())].to_vec();
                }
                Err(injected("sync"))
            }
            None => {
                disk.durable = disk.written.clone();
                Ok(())
            }
        }
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut disk = self.lock();
        if std::mem::take(&mut disk.faults.truncate) {
            return Err(injected("truncate"));
        }
        disk.written.resize(len as usize, 0);
        Ok(())
    }

    fn prepare_replacement(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut disk = self.lock();
        if std::mem::take(&mut disk.faults.prepare) {
            return Err(injected("prepare"));
        }
        disk.replacement = Some(bytes.to_vec());
        Ok(())
    }

    fn install_replacement(&mut self) -> io::Result<()> {
        let mut disk = self.lock();
        let new = disk.replacement.take().ok_or_else(|| injected("nothing prepared"))?;
        let renamed = disk.faults.install.take();
        if renamed != Some(false) {
            let old = std::mem::replace(&mut disk.durable, new.clone());
            disk.written = new;
            if renamed == Some(true) {
                disk.replaced = Some(old);
            }
        }
        match renamed {
            Some(_) => Err(injected("install")),
            None => Ok(()),
        }
    }
}

fn slot(version: u64) -> Slot {
    Slot { register: Register { version, entry: None }, ..Slot::default() }
}

fn meta(life: u64) -> Meta {
    Meta { incarnation: Some(Incarnation { life, ..Incarnation::default() }), ..Meta::default() }
}

fn key(name: &str) -> Key {
    name.into()
}

/// The case from the issue: an append that fails half-way used to leave its half frame in the
/// log, so the next save, acknowledged, sat behind it and was cut as a "torn tail" on reopen.
#[test]
fn a_failed_append_is_cut_back_so_the_next_acknowledged_save_survives_reopen() {
    let disk = FaultyDisk::default();
    let mut store = disk.open().unwrap();
    store.save_slot(&key("a"), &slot(1)).unwrap();
    disk.arm(Fault::Append { written: 10 });
    assert!(matches!(store.save_slot(&key("b"), &slot(1)), Err(StorageError::Io(_))));
    assert_eq!(store.slot(&key("b")), None, "a failed save leaves the store as it was");
    store.save_slot(&key("c"), &slot(1)).unwrap();
    drop(store);
    disk.crash(Crash::default());

    let store = disk.open().unwrap();
    assert_eq!(store.scan(None, 10), vec![(key("a"), slot(1)), (key("c"), slot(1))]);
}

/// A failed fsync is a failed append: the frame may or may not be on disk, so it is cut back;
/// the next save succeeds and survives.
#[test]
fn an_fsync_error_fails_the_save_and_the_next_save_survives_reopen() {
    let disk = FaultyDisk::default();
    let mut store = disk.open().unwrap();
    store.save_meta(&meta(1)).unwrap();
    // The whole frame reaches the disk before the fsync reports its error.
    disk.arm(Fault::Sync { made_durable: usize::MAX / 2 });
    assert!(matches!(store.save_slot(&key("a"), &slot(1)), Err(StorageError::Io(_))));
    assert_eq!(store.slot(&key("a")), None);
    store.save_slot(&key("a"), &slot(2)).unwrap();
    drop(store);
    disk.crash(Crash::default());

    let store = disk.open().unwrap();
    assert_eq!(store.meta(), &meta(1));
    assert_eq!(store.scan(None, 10), vec![(key("a"), slot(2))]);
    assert_eq!(store.log_records(), 2, "the failed frame was cut, not kept");
}

/// A store that cannot undo a failed append (the truncate fails, or the fsync after it)
/// refuses every later save, so its acceptor refuses to vote, until it is reopened; reopening
/// reads back every acknowledged save, and the store writes again.
#[test]
fn a_store_that_cannot_cut_back_a_failed_append_refuses_every_save_until_reopened() {
    for cut_back_fault in [Fault::Truncate, Fault::Sync { made_durable: 0 }] {
        let disk = FaultyDisk::default();
        let mut store = disk.open().unwrap();
        store.save_slot(&key("a"), &slot(1)).unwrap();
        disk.arm(Fault::Append { written: 20 });
        disk.arm(cut_back_fault);
        assert!(matches!(store.save_slot(&key("b"), &slot(1)), Err(StorageError::Io(_))));
        for _ in 0..2 {
            let refused = store.save_slot(&key("c"), &slot(1));
            assert!(matches!(refused, Err(StorageError::Poisoned { .. })), "{cut_back_fault:?}");
            assert!(matches!(store.save_meta(&meta(1)), Err(StorageError::Poisoned { .. })));
        }
        assert_eq!(store.scan(None, 10), vec![(key("a"), slot(1))], "reads still answer");
        drop(store);
        // The half frame is still in the log; reopening cuts it as a torn tail.
        disk.crash(Crash { unsynced_kept: 20, ..Crash::default() });

        let mut store = disk.open().unwrap();
        assert_eq!(store.scan(None, 10), vec![(key("a"), slot(1))]);
        store.save_slot(&key("c"), &slot(1)).unwrap();
    }
}

/// A compaction that fails writing its new file leaves the old log in use: the save that
/// triggered it is acknowledged (it is durable), the store goes on, and the compaction is tried
/// again once the slack has filled again (not at every save, which could rewrite the whole log
/// each time on a disk that is full).
#[test]
fn a_compaction_that_fails_before_the_switch_keeps_the_old_log_in_use() {
    let disk = FaultyDisk::default();
    let mut store = disk.open().unwrap().with_compaction_slack(2);
    // Compaction is due once the log holds more than 1 + 1 + 2 records.
    for version in 1..=4 {
        store.save_slot(&key("a"), &slot(version)).unwrap();
    }
    disk.arm(Fault::Prepare);
    store.save_slot(&key("a"), &slot(5)).unwrap();
    store.save_slot(&key("a"), &slot(6)).unwrap();
    assert_eq!(store.log_records(), 6, "not compacted");
    store.save_slot(&key("a"), &slot(7)).unwrap();
    assert_eq!(store.log_records(), 2, "compacted two records after the failure");
    drop(store);
    disk.crash(Crash::default());
    assert_eq!(disk.open().unwrap().scan(None, 10), vec![(key("a"), slot(7))]);
}

/// A compaction that fails during the switch leaves the store not knowing which log a crash
/// keeps, so later appends could be lost: it is poisoned. Both logs hold every acknowledged
/// save, so either one reopens with all of them.
#[test]
fn a_compaction_that_fails_during_the_switch_poisons_and_either_log_reopens() {
    for (renamed, old_log) in [(false, false), (true, false), (true, true)] {
        let disk = FaultyDisk::default();
        let mut store = disk.open().unwrap().with_compaction_slack(2);
        store.save_meta(&meta(1)).unwrap();
        store.save_slot(&key("a"), &slot(1)).unwrap();
        store.save_slot(&key("a"), &slot(2)).unwrap();
        store.save_slot(&key("a"), &slot(3)).unwrap();
        disk.arm(Fault::Install { renamed });
        store.save_slot(&key("a"), &slot(4)).unwrap();
        assert!(matches!(store.save_slot(&key("b"), &slot(1)), Err(StorageError::Poisoned { .. })));
        drop(store);
        disk.crash(Crash { old_log, ..Crash::default() });

        let store = disk.open().unwrap();
        assert_eq!(store.meta(), &meta(1), "renamed {renamed}, old log {old_log}");
        assert_eq!(store.scan(None, 10), vec![(key("a"), slot(4))]);
    }
}

/// A crash during the creation of a log (an empty file, or a header cut short and zeros) leaves
/// a log that opens empty; one that cut off or zeroed the last append opens with the rest.
#[test]
fn torn_and_zero_filled_tails_open_with_every_acknowledged_save() {
    let disk = FaultyDisk::default();
    disk.lock().written = vec![b'S', b'H', 0, 0];
    let mut store = disk.open().unwrap();
    assert_eq!(store.scan(None, 10), vec![]);
    assert_eq!(disk.lock().durable, FILE_HEADER, "a fresh header, synced");
    store.save_slot(&key("a"), &slot(1)).unwrap();
    drop(store);

    // The failed save of `b` below leaves its whole frame written but not synced.
    let frame = super::encode_frame(&super::Record::Slot(key("b"), slot(1))).unwrap().len();
    let crashes = [
        Crash { zeros_after: 4096, ..Crash::default() },
        Crash { unsynced_kept: 7, ..Crash::default() },
        // (Not `frame - 1` with zeros after: the frame's last byte is a zero, which the zeros
        // would put back, leaving the frame whole.)
        Crash { unsynced_kept: frame / 2, zeros_after: 100, ..Crash::default() },
        Crash { unsynced_kept: frame, hole: Some((4, 4)), ..Crash::default() },
        Crash { unsynced_kept: frame, hole: Some((16, frame)), zeros_after: 9, ..Crash::default() },
    ];
    for crash in crashes {
        let mut store = disk.open().unwrap();
        disk.arm(Fault::Sync { made_durable: 0 });
        disk.arm(Fault::Truncate);
        assert!(store.save_slot(&key("b"), &slot(1)).is_err());
        drop(store);
        disk.crash(crash);
        let store = disk.open().unwrap();
        assert_eq!(store.scan(None, 10), vec![(key("a"), slot(1))], "{crash:?}");
    }
}

/// A save, and the fault armed before it.
#[derive(Clone, Debug)]
enum Step {
    SaveSlot { key: u8, version: u64 },
    SaveMeta { life: u64 },
    Arm(Fault),
    Crash(Crash),
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        (0usize..40).prop_map(|written| Fault::Append { written }),
        (0usize..40).prop_map(|made_durable| Fault::Sync { made_durable }),
        Just(Fault::Truncate),
        Just(Fault::Prepare),
        any::<bool>().prop_map(|renamed| Fault::Install { renamed }),
    ]
}

fn crash() -> impl Strategy<Value = Crash> {
    let hole = proptest::option::of((0usize..40, 1usize..40));
    let zeros_after = prop_oneof![Just(0usize), 1usize..64, Just(4096)];
    (0usize..60, hole, zeros_after, any::<bool>()).prop_map(
        |(unsynced_kept, hole, zeros_after, old_log)| Crash {
            unsynced_kept,
            hole,
            zeros_after,
            old_log,
        },
    )
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (0u8..4, 0u64..1000).prop_map(|(key, version)| Step::SaveSlot { key, version }),
        1 => (0u64..1000).prop_map(|life| Step::SaveMeta { life }),
        3 => fault().prop_map(Step::Arm),
        1 => crash().prop_map(Step::Crash),
    ]
}

/// The acknowledged state: the last `Ok` save of each key and of the meta record.
#[derive(Clone, Debug, Default, PartialEq)]
struct Acknowledged {
    meta: Meta,
    slots: BTreeMap<Key, Slot>,
}

impl Acknowledged {
    fn of(store: &FileStorage) -> Acknowledged {
        let slots = store.scan(None, usize::MAX).into_iter().collect();
        Acknowledged { meta: store.meta().clone(), slots }
    }

    fn with(&self, save: &Step) -> Acknowledged {
        let mut after = self.clone();
        match *save {
            Step::SaveSlot { key, version } => {
                after.slots.insert(vec![key].into(), slot(version));
            }
            Step::SaveMeta { life } => after.meta = meta(life),
            Step::Arm(_) | Step::Crash(_) => {}
        }
        after
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// No acknowledged save is lost: under any sequence of saves, faults (partial appends,
    /// fsync errors, failed cut-backs and compactions) and crashes (torn and zero-filled tails,
    /// holes), the store reopens with the last acknowledged value of every key and of the meta
    /// record. The one other outcome allowed: the failed save that poisoned the store, whose
    /// frame a crash may keep whole (a vote recorded but never answered). A failed save leaves
    /// the store's view as it was, and a poisoned store refuses every save.
    #[test]
    fn no_acknowledged_save_is_lost_under_faults_and_crashes(
        steps in proptest::collection::vec(step(), 1..60),
    ) {
        let disk = FaultyDisk::default();
        let mut store = disk.open().unwrap().with_compaction_slack(3);
        let mut acked = Acknowledged::default();
        // The failed save that poisoned the store: a crash may keep it.
        let mut limbo: Option<Step> = None;
        for step in steps.iter().chain([&Step::Crash(Crash::default())]) {
            let result = match *step {
                Step::SaveSlot { key, version } => store.save_slot(&vec![key].into(), &slot(version)),
                Step::SaveMeta { life } => store.save_meta(&meta(life)),
                Step::Arm(fault) => {
                    disk.arm(fault);
                    continue;
                }
                Step::Crash(crash) => {
                    drop(store);
                    disk.crash(crash);
                    let reopened = disk.open();
                    prop_assert!(reopened.is_ok(), "reopening failed: {:?}", reopened.err());
                    store = reopened.unwrap().with_compaction_slack(3);
                    let found = Acknowledged::of(&store);
                    let allowed = limbo.take().map(|save| acked.with(&save));
                    prop_assert!(
                        found == acked || Some(&found) == allowed.as_ref(),
                        "after {crash:?}: found {found:?}, acknowledged {acked:?}, or {allowed:?}"
                    );
                    acked = found;
                    continue;
                }
            };
            match result {
                Ok(()) => acked = acked.with(step),
                Err(StorageError::Poisoned { .. }) => prop_assert!(store.poisoned.is_some()),
                Err(_) if store.poisoned.is_some() => limbo = Some(step.clone()),
                Err(_) => {}
            }
            prop_assert_eq!(&Acknowledged::of(&store), &acked, "the store's view after {:?}", step);
        }
    }
}
