//! Changing the acceptor set: the one-step-at-a-time procedure of the `membership` docs.

use shoal_paxos::{Acceptor, AcceptorConfig, Change, Entry, MemoryStorage, NodeId, Storage};

use super::wire::{Wire, ids};

/// Writes `k = v` while acceptor 3 is cut off, so the value is chosen on {1, 2} only.
fn write_on_one_and_two() -> Wire {
    let mut wire = Wire::new(3, 1);
    wire.down.insert(NodeId(3));
    let now = wire.now;
    wire.proposers[0].propose(now, "k".into(), Change::Set(Entry::new("v"))).unwrap();
    wire.deliver_all();
    assert!(wire.completions(0)[0].result.is_ok());
    wire.down.clear();
    wire
}

/// Gives every proposer and acceptor the set `set`.
fn install(wire: &mut Wire, set: &[u64]) {
    let set: Vec<NodeId> = set.iter().map(|&n| NodeId(n)).collect();
    let now = wire.now;
    for p in &mut wire.proposers {
        p.set_acceptors(now, set.clone());
    }
    for a in &mut wire.acceptors {
        a.set_acceptors(set.clone());
    }
}

/// Reads `k` through proposer 0; the value's data, or `None`.
fn read(wire: &mut Wire) -> Option<Vec<u8>> {
    let now = wire.now;
    wire.proposers[0].propose(now, "k".into(), Change::Read).unwrap();
    wire.deliver_all();
    let done = wire.completions(0).pop().expect("the read completes");
    done.result.unwrap().after.entry.map(|e| e.data)
}

/// Membership, steps 2–4: remove acceptor 1, rewrite every key under {2, 3}, then remove
/// acceptor 2. The value that was chosen on {1, 2} alone is still read through {3}.
#[test]
fn removing_one_at_a_time_with_rewrites_keeps_values() {
    let mut wire = write_on_one_and_two();
    install(&mut wire, &[2, 3]);
    assert_eq!(read(&mut wire), Some(b"v".to_vec()), "the rewrite");
    install(&mut wire, &[3]);
    wire.down.extend([NodeId(1), NodeId(2)]);
    assert_eq!(read(&mut wire), Some(b"v".to_vec()));
}

/// Membership, why step 3 exists: the same two removals without the rewrite in between leave a
/// set whose majority ({3}) never saw the value, and it is lost.
#[test]
fn skipping_the_rewrite_can_lose_a_value() {
    let mut wire = write_on_one_and_two();
    install(&mut wire, &[2, 3]);
    install(&mut wire, &[3]);
    wire.down.extend([NodeId(1), NodeId(2)]);
    assert_eq!(read(&mut wire), None);
}

/// Membership, step 1: a new acceptor starts empty and rejoins before it votes, copying the
/// slots of a majority of the set, so it holds the value before any quorum counts on it.
#[test]
fn a_new_acceptor_copies_values_before_it_votes() {
    let mut wire = write_on_one_and_two();
    let config = AcceptorConfig::new(NodeId(4), ids(4), 4);
    wire.acceptors.push(Acceptor::new(wire.now, config, MemoryStorage::new()));
    install(&mut wire, &[1, 2, 3, 4]);
    assert_eq!(wire.acceptors[3].incarnation(), None, "not voting before the rejoin");
    wire.settle();
    assert!(wire.acceptors[3].incarnation().is_some());
    let slot = wire.acceptors[3].storage().slot(&"k".into()).unwrap();
    assert_eq!(slot.register.entry, Some(Entry::new("v")));
    // A majority of the four without acceptor 1 reads it.
    wire.down.insert(NodeId(1));
    assert_eq!(read(&mut wire), Some(b"v".to_vec()));
}
