//! The acceptor's rules, checked by the exact messages it answers with.

use std::time::Instant;

use shoal_paxos::core::{
    Acceptor, AcceptorConfig, AcceptorIgnored, Ballot, Epoch, Incarnation, Lineage, Message,
    NodeId, ProposerId, Rejection, Standing, Storage,
};
use shoal_paxos::{Change, Entry, MemoryStorage, Register};

use super::wire::{Wire, ids, persist_all};

pub(crate) fn ballot(counter: u64, node: u64) -> Ballot {
    Ballot { counter, proposer: ProposerId { node: NodeId(node), run: 1 } }
}

pub(crate) fn value(data: &str) -> Register {
    Register { version: 1, entry: Some(Entry::new(data)) }
}

const P: NodeId = NodeId(101);

/// A prepare from a proposer that knows no epoch yet.
pub(crate) fn prepare(key: &str, ballot: Ballot) -> Message {
    Message::Prepare { key: key.into(), ballot, epoch: Epoch::default(), configuration: 0 }
}

/// Runs `message` from `from` into acceptor `a` of `wire` and returns what it answered.
pub(crate) fn ask(
    wire: &mut Wire,
    a: usize,
    from: NodeId,
    message: Message,
) -> Vec<(NodeId, Message)> {
    let now = wire.now;
    let _ = wire.acceptors[a].handle_message(now, from, message);
    wire.sent_by_acceptor(a)
}

/// An accept of `register` at `b`, computed from the empty register, that counted the promises
/// in `quorum` (acceptor number, incarnation).
pub(crate) fn accept(
    key: &str,
    b: Ballot,
    register: Register,
    quorum: &[(u64, Incarnation)],
) -> Message {
    let quorum = quorum.iter().map(|&(n, i)| (NodeId(n), i)).collect();
    let lineage = Lineage::from_ancestors(vec![Ballot::ZERO]);
    Message::Accept { key: key.into(), ballot: b, register, lineage, quorum, configuration: 0 }
}

/// An acceptor's vote for `b`, given in `incarnation`, reporting the acceptor's `fences`.
pub(crate) fn accepted(
    key: &str,
    b: Ballot,
    incarnation: Incarnation,
    fences: Vec<(NodeId, Incarnation)>,
) -> Message {
    Message::Accepted { key: key.into(), ballot: b, incarnation, fences }
}

/// An acceptor's refusal of `b`.
pub(crate) fn rejected(key: &str, b: Ballot, reason: Rejection) -> Message {
    Message::Rejected { key: key.into(), ballot: b, reason }
}

/// Paxos phase 1b: a promise reports the highest accepted value, and binds the acceptor to
/// refuse lower ballots.
#[test]
fn promise_reports_accepted_value_and_refuses_lower_ballots() {
    let mut wire = Wire::new(3, 0);
    let inc = wire.acceptors[0].incarnation().unwrap();
    let b = ballot(3, 101);
    let answer = ask(&mut wire, 0, P, prepare("k", b));
    let promise = Message::Promise {
        key: "k".into(),
        ballot: b,
        incarnation: inc,
        accepted: Ballot::ZERO,
        register: Register::default(),
        lineage: Lineage::default(),
    };
    assert_eq!(answer, vec![(P, promise)]);

    let low = ballot(2, 102);
    let answer = ask(&mut wire, 0, NodeId(102), prepare("k", low));
    let refusal =
        Message::Rejected { key: "k".into(), ballot: low, reason: Rejection::Promised(b) };
    assert_eq!(answer, vec![(NodeId(102), refusal)]);

    // Keys are independent registers: the promise on "k" says nothing about "j".
    let answer = ask(&mut wire, 0, NodeId(102), prepare("j", low));
    assert!(matches!(answer[0].1, Message::Promise { .. }));
}

/// Paxos phase 2b, with the fast path: accepting `b` also promises `b`'s successor, so a
/// prepare at `b` itself (or any ballot below the successor) is refused afterwards.
#[test]
fn accept_promises_the_successor_ballot() {
    let mut wire = Wire::new(3, 0);
    let inc = wire.acceptors[0].incarnation().unwrap();
    let b = ballot(4, 101);
    let answer = ask(&mut wire, 0, P, accept("k", b, value("v"), &[(1, inc)]));
    // The reply carries the acceptor's fences (here: of acceptor 3, which rejoined).
    let fences = wire.acceptors[0].state().meta().fences.clone().into_iter().collect();
    assert_eq!(
        answer,
        vec![(P, Message::Accepted { key: "k".into(), ballot: b, incarnation: inc, fences })]
    );

    let next = b.successor().unwrap();
    let other = ballot(4, 102); // above b, below b's successor
    let answer = ask(&mut wire, 0, NodeId(102), prepare("k", other));
    let refusal =
        Message::Rejected { key: "k".into(), ballot: other, reason: Rejection::Promised(next) };
    assert_eq!(answer, vec![(NodeId(102), refusal)]);

    // The successor itself is accepted without a prepare, and a duplicate of the first accept
    // is answered again without changing anything.
    let answer = ask(&mut wire, 0, P, accept("k", next, value("w"), &[(1, inc)]));
    assert!(matches!(answer[0].1, Message::Accepted { .. }));
    let answer = ask(&mut wire, 0, P, accept("k", next, value("w"), &[(1, inc)]));
    assert!(matches!(answer[0].1, Message::Accepted { .. }));
    let slot = wire.acceptors[0].state().slot(&"k".into()).unwrap().clone();
    assert_eq!((slot.accepted, slot.register), (next, value("w")));
}

/// Bad input from the network: a ballot that does not belong to its sender, the zero ballot, and
/// rejoin traffic from strangers get a typed refusal or are ignored with a reason, never a panic.
#[test]
fn nonsense_is_refused_with_a_reason() {
    let mut wire = Wire::new(3, 0);
    let forged = ballot(9, 102);
    let answer = ask(&mut wire, 0, P, prepare("k", forged));
    let refusal =
        Message::Rejected { key: "k".into(), ballot: forged, reason: Rejection::BadBallot };
    assert_eq!(answer, vec![(P, refusal)]);
    let answer = ask(&mut wire, 0, NodeId(0), prepare("k", Ballot::ZERO));
    assert!(matches!(answer[0].1, Message::Rejected { reason: Rejection::BadBallot, .. }));
    let max = Ballot { counter: u64::MAX, ..ballot(0, 101) };
    let answer = ask(&mut wire, 0, P, accept("k", max, value("v"), &[]));
    assert!(matches!(answer[0].1, Message::Rejected { reason: Rejection::BadBallot, .. }));

    let now = wire.now;
    let stranger = wire.acceptors[0].handle_message(now, NodeId(77), Message::Query { attempt: 1 });
    assert_eq!(stranger, Err(AcceptorIgnored::NotAnAcceptor(NodeId(77))));
    let standing = Standing::Recovering { epoch: Epoch::default() };
    let reply = Message::QueryReply { attempt: 1, known: Incarnation::default(), standing };
    assert_eq!(
        wire.acceptors[0].handle_message(now, NodeId(2), reply),
        Err(AcceptorIgnored::StaleAttempt)
    );
    let not_mine = Message::Accepted {
        key: "k".into(),
        ballot: forged,
        incarnation: Incarnation::default(),
        fences: vec![],
    };
    assert_eq!(
        wire.acceptors[0].handle_message(now, P, not_mine),
        Err(AcceptorIgnored::NotForAcceptor)
    );
    assert!(wire.sent_by_acceptor(0).is_empty());
}

/// Losing state: an acceptor whose store has no incarnation does not vote until it has rejoined.
#[test]
fn an_acceptor_without_state_does_not_vote() {
    let now = Instant::now();
    let mut fresh =
        Acceptor::new(now, AcceptorConfig::new(NodeId(1), ids(3), 1), &MemoryStorage::new());
    persist_all(&mut fresh);
    let queries: Vec<_> = std::iter::from_fn(|| fresh.poll_transmit()).collect();
    assert_eq!(queries.len(), 2, "it queries both others: {queries:?}");
    assert!(queries.iter().all(|(_, m)| matches!(m, Message::Query { .. })));
    let b = ballot(1, 101);
    let _ = fresh.handle_message(now, P, prepare("k", b));
    let refusal = Message::Rejected { key: "k".into(), ballot: b, reason: Rejection::Recovering };
    assert_eq!(fresh.poll_transmit(), Some((P, refusal)));
    assert_eq!(fresh.incarnation(), None);
}

/// Rebuilds acceptor `a` of `wire` with an empty store (it lost its state) and lets it rejoin.
fn lose_state_and_rejoin(wire: &mut Wire, a: usize) -> Incarnation {
    wire.lose_state_and_rejoin(a)
}

/// Losing state: rejoining copies what a majority of the others accepted, so a value chosen on
/// a majority that included the lost acceptor comes back to it.
#[test]
fn rejoining_restores_chosen_values() {
    let mut wire = Wire::new(3, 1);
    let now = wire.now;
    wire.proposers[0].propose(now, "k".into(), Change::Set(Entry::new("v"))).unwrap();
    wire.deliver_all();
    assert!(wire.completions(0)[0].result.is_ok());
    let before = wire.acceptors[0].incarnation().unwrap();
    let after = lose_state_and_rejoin(&mut wire, 0);
    assert!(after > before, "a new, higher incarnation: {before:?} -> {after:?}");
    let slot = wire.acceptors[0].state().slot(&"k".into()).unwrap();
    assert_eq!(slot.register.entry, Some(Entry::new("v")));
}

/// Losing state, the subtle case: acceptor 1 promised ballot 6 (the promise reached the
/// proposer, which counted it with acceptor 2's), then lost its state and rejoined. The accept
/// of ballot 6 that counts the lost promise is refused by everyone — by the fenced acceptors 2
/// and 3, and by 1 itself — so it cannot complete a quorum that a ballot-5 proposer, which
/// acceptor 1 no longer knows about, could conflict with.
#[test]
fn a_promise_from_a_lost_incarnation_counts_for_nothing() {
    let mut wire = Wire::new(3, 0);
    let old = wire.acceptors[0].incarnation().unwrap();
    let b6 = ballot(6, 101);
    for a in 0..2 {
        let answer = ask(&mut wire, a, P, prepare("k", b6));
        assert!(matches!(answer[0].1, Message::Promise { .. }));
    }
    let inc2 = wire.acceptors[1].incarnation().unwrap();
    lose_state_and_rejoin(&mut wire, 0);
    let counted = [(1, old), (2, inc2)];
    for a in 0..3 {
        let answer = ask(&mut wire, a, P, accept("k", b6, value("six"), &counted));
        let refusal =
            Message::Rejected { key: "k".into(), ballot: b6, reason: Rejection::StaleIncarnation };
        assert_eq!(answer, vec![(P, refusal)], "acceptor {}", a + 1);
    }
    // The rejoined acceptor took the highest promise of the others: ballot 5 is refused too.
    let b5 = ballot(5, 102);
    let answer = ask(&mut wire, 0, NodeId(102), prepare("k", b5));
    assert!(matches!(answer[0].1, Message::Rejected { reason: Rejection::Promised(_), .. }));
}

mod properties {
    use proptest::prelude::*;
    use shoal_paxos::core::{
        Ballot, Epoch, Incarnation, Lineage, Message, NodeId, ProposerId, Standing, Storage,
    };
    use shoal_paxos::{Key, Register};

    use super::super::wire::Wire;

    fn any_ballot() -> impl Strategy<Value = Ballot> {
        (prop_oneof![0u64..6, Just(u64::MAX)], 0u64..6, 0u64..2).prop_map(|(counter, node, run)| {
            Ballot { counter, proposer: ProposerId { node: NodeId(node), run } }
        })
    }

    /// Whatever arrives from the network, including nonsense: prepares, accepts with any quorum
    /// list, rejoin traffic and proposer messages, from members and strangers.
    fn any_message() -> impl Strategy<Value = (u64, Message)> {
        let key = prop_oneof![Just(Key::from("a")), Just(Key::from("b"))];
        let epoch = |number: u64| Epoch { number, nonce: 0 };
        let incarnation = move |(e, life): (u64, u64)| Incarnation::new(epoch(e), life);
        let quorum = proptest::collection::vec((0u64..5, (0u64..2, 0u64..3)), 0..4)
            .prop_map(move |q| q.into_iter().map(|(n, i)| (NodeId(n), incarnation(i))).collect());
        let message = prop_oneof![
            (key.clone(), any_ballot(), 0u64..2).prop_map(move |(key, ballot, e)| {
                Message::Prepare { key, ballot, epoch: epoch(e), configuration: 0 }
            }),
            (key.clone(), any_ballot(), any_ballot(), quorum, 0u64..3).prop_map(
                |(key, ballot, parent, quorum, version)| Message::Accept {
                    key,
                    ballot,
                    register: Register { version, entry: None },
                    lineage: Lineage::from_ancestors(vec![parent]),
                    quorum,
                    configuration: 0,
                }
            ),
            (0u64..3).prop_map(|attempt| Message::Query { attempt }),
            (0u64..3, (0u64..2, 0u64..4)).prop_map(move |(attempt, i)| Message::Fence {
                attempt,
                incarnation: incarnation(i),
                after: None,
            }),
            (0u64..3, (0u64..2, 0u64..4)).prop_map(move |(attempt, i)| Message::QueryReply {
                attempt,
                known: incarnation(i),
                standing: Standing::Voting(incarnation(i)),
            }),
            (0u64..3, 0u64..2)
                .prop_map(move |(attempt, e)| Message::ProposeEpoch { attempt, epoch: epoch(e) }),
            (0u64..2, 0u64..3).prop_map(move |(e, n)| Message::StartEpoch {
                epoch: epoch(e),
                members: vec![(NodeId(1), n)],
            }),
            (key, any_ballot()).prop_map(|(key, ballot)| Message::Accepted {
                key,
                ballot,
                incarnation: Incarnation::default(),
                fences: vec![],
            }),
        ];
        (0u64..6, message)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Paxos acceptor invariants under any input: nothing panics; within one incarnation a
        /// key's promised and accepted ballots never go down, the accepted one never exceeds
        /// the promised one, and every promise sent is for a ballot at least the one promised
        /// before; an incarnation ends only for a newer epoch.
        #[test]
        fn votes_only_move_up(messages in proptest::collection::vec(any_message(), 1..60)) {
            let mut wire = Wire::new(3, 0);
            let now = wire.now;
            let keys = [Key::from("a"), Key::from("b")];
            for (from, message) in messages {
                let before: Vec<_> = keys
                    .iter()
                    .map(|k| wire.acceptors[0].state().slot(k).cloned().unwrap_or_default())
                    .collect();
                let life = wire.acceptors[0].incarnation();
                let _ = wire.acceptors[0].handle_message(now, NodeId(from), message);
                if wire.acceptors[0].incarnation() != life {
                    // Only a newer epoch ends a life, and the acceptor forgets it entirely.
                    prop_assert!(wire.acceptors[0].epoch() > life.map(|i| i.epoch).unwrap_or_default());
                    break;
                }
                for (key, old) in keys.iter().zip(&before) {
                    let new = wire.acceptors[0].state().slot(key).cloned().unwrap_or_default();
                    prop_assert!(new.promised >= old.promised);
                    prop_assert!(new.accepted >= old.accepted);
                    prop_assert!(new.accepted <= new.promised);
                }
                for (_, sent) in wire.sent_by_acceptor(0) {
                    if let Message::Promise { key, ballot, .. } = sent {
                        let i = keys.iter().position(|k| *k == key).unwrap();
                        prop_assert!(ballot >= before[i].promised);
                    }
                }
            }
        }
    }
}
