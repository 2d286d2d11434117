//! Changing the acceptor set: the one-step-at-a-time procedure of the `membership` docs.

use shoal_paxos::core::membership::Configuration;
use shoal_paxos::core::{Acceptor, AcceptorConfig, Message, NodeId, Rejection, Storage};
use shoal_paxos::{Change, Entry, MemoryStorage};

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
    let acceptors: Vec<NodeId> = set.iter().map(|&n| NodeId(n)).collect();
    let version = wire.proposers[0].configuration().version + 1;
    let configuration = Configuration { version, acceptors };
    let now = wire.now;
    for p in &mut wire.proposers {
        p.set_configuration(now, configuration.clone());
    }
    for a in &mut wire.acceptors {
        a.install(configuration.clone());
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
    wire.acceptors.push(Acceptor::new(wire.now, config, &MemoryStorage::new()));
    install(&mut wire, &[1, 2, 3, 4]);
    assert_eq!(wire.acceptors[3].incarnation(), None, "not voting before the rejoin");
    wire.settle();
    assert!(wire.acceptors[3].incarnation().is_some());
    let slot = wire.acceptors[3].state().slot(&"k".into()).unwrap();
    assert_eq!(slot.register.entry, Some(Entry::new("v")));
    // A majority of the four without acceptor 1 reads it.
    wire.down.insert(NodeId(1));
    assert_eq!(read(&mut wire), Some(b"v".to_vec()));
}

/// Configuration versions (issue 9, point 7): a proposer that missed two changes of the set
/// cannot form a majority of the set it still runs once a majority of that set runs a newer
/// configuration. The proposer runs version 1 ({1, 2, 3}); acceptor 1 was removed since and
/// missed it, 2, 3 and 4 run version 2 ({2, 3, 4}); the stale prepare wins only acceptor 1, 2 and 3 refuse
/// it naming their version and send their configuration, which the proposer adopts, and the
/// change completes through {2, 3, 4}.
#[test]
fn a_proposer_that_missed_a_change_learns_it_and_cannot_count_the_old_set() {
    let mut wire = Wire::new(4, 1);
    let newest = Configuration { version: 2, acceptors: vec![NodeId(2), NodeId(3), NodeId(4)] };
    for a in &mut wire.acceptors[1..] {
        assert!(a.install(newest.clone()));
    }
    let stale = Configuration { version: 1, acceptors: vec![NodeId(1), NodeId(2), NodeId(3)] };
    let now = wire.now;
    assert!(wire.proposers[0].set_configuration(now, stale));
    wire.proposers[0].propose(now, "k".into(), Change::Set(Entry::new("v"))).unwrap();
    let mut refusals = 0;
    let mut step = || {
        let delivered = wire.deliver_one();
        if delivered.is_none() {
            // The proposer took the newer configuration and starts its round over at once.
            let now = wire.now;
            wire.proposers[0].handle_timeout(now);
            return wire.deliver_one();
        }
        delivered
    };
    while let Some((from, _, message)) = step() {
        if let Message::Rejected { reason: Rejection::StaleConfiguration(version), .. } = message {
            assert_eq!(version, 2, "refused by {from}");
            refusals += 1;
        }
        if let Message::Accept { quorum, configuration, .. } = &message {
            let counted: Vec<NodeId> = quorum.iter().map(|(node, _)| *node).collect();
            assert!(!counted.contains(&NodeId(1)), "an accept counted removed acceptor 1");
            assert_eq!(*configuration, 2);
        }
    }
    assert_eq!(refusals, 2, "acceptors 2 and 3 refused the stale prepare");
    assert_eq!(wire.proposers[0].configuration(), newest, "the proposer learned version 2");
    let done = wire.completions(0);
    assert!(done[0].result.is_ok(), "{done:?}");
    // A removed acceptor that learns of its removal refuses every vote.
    assert!(wire.acceptors[0].install(newest.clone()));
    let b = super::acceptor::ballot(9, 101);
    let answer = {
        let message = super::acceptor::prepare("k", b);
        let _ = wire.acceptors[0].handle_message(now, NodeId(101), message);
        wire.sent_by_acceptor(0)
    };
    let refusal =
        Message::Rejected { key: "k".into(), ballot: b, reason: Rejection::StaleConfiguration(2) };
    assert_eq!(answer[0], (NodeId(101), refusal));
}
