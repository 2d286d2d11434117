//! The proposer's rules, checked by the exact messages it sends.

use std::time::Duration;

use shoal_paxos::core::{
    Ballot, Epoch, Incarnation, Lineage, Message, NodeId, ProposeError, Proposer, ProposerConfig,
    ProposerId, ProposerIgnored, Rejection, RequestId,
};
use shoal_paxos::{Change, Entry, Outcome, PaxosError, Register};

/// Life `life` of the epoch before any founding (what a proposer that saw no vote expects).
pub(crate) fn inc(life: u64) -> Incarnation {
    Incarnation::new(Epoch::default(), life)
}

use super::acceptor::ballot;
use super::wire::{Wire, ids};

/// Rule: a change on a fresh key completes through prepare and accept on a majority.
#[test]
fn a_write_completes() {
    let mut wire = Wire::new(3, 1);
    let now = wire.now;
    let id = wire.proposers[0].propose(now, "k".into(), Change::Set(Entry::new("v"))).unwrap();
    wire.deliver_all();
    let done = wire.completions(0);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].id, id);
    assert_eq!(done[0].result.as_ref().unwrap().after.entry, Some(Entry::new("v")));
}

fn proposer(designated: Vec<NodeId>) -> Proposer {
    let mut config = ProposerConfig::new(ProposerId { node: NodeId(101), run: 1 }, ids(3), 5);
    config.designated = designated;
    config.request_timeout = Duration::from_secs(1);
    Proposer::new(config)
}

fn drain(p: &mut Proposer) -> Vec<(NodeId, Message)> {
    std::iter::from_fn(|| p.poll_transmit()).collect()
}

pub(crate) fn promise(
    key: &str,
    b: Ballot,
    life: u64,
    accepted: Ballot,
    register: Register,
) -> Message {
    Message::Promise {
        key: key.into(),
        ballot: b,
        incarnation: inc(life),
        accepted,
        register,
        lineage: Lineage::from_ancestors(vec![Ballot::ZERO]),
    }
}

/// Copy `copy` of a change `origin` forwards as its request `id`, for run `to_run` of the
/// designated proposer, which has `timeout` left to run it.
pub(crate) fn forward(
    origin: ProposerId,
    id: RequestId,
    (key, change): (&str, Change),
    timeout: Duration,
    to_run: u64,
    copy: u32,
) -> Message {
    Message::Forward { origin, id, key: key.into(), change, timeout, to_run, copy }
}

/// The designated proposer has the forward `id` of `origin`.
pub(crate) fn forward_ack(origin: ProposerId, id: RequestId) -> Message {
    Message::ForwardAck { origin, id }
}

/// The designated proposer's answer to the forward `id` of `origin`.
pub(crate) fn forward_result(
    origin: ProposerId,
    id: RequestId,
    result: Result<Outcome, PaxosError>,
) -> Message {
    Message::ForwardResult { origin, id, result }
}

fn to_all(message: Message) -> Vec<(NodeId, Message)> {
    ids(3).into_iter().map(|n| (n, message.clone())).collect()
}

/// CASPaxos §2.2: the proposer applies the change to the value with the highest ballot among a
/// majority of promises, and its accept lists the promises it counted with their incarnations.
#[test]
fn accept_carries_the_change_applied_to_the_highest_accepted_value() {
    let mut p = proposer(vec![]);
    let now = std::time::Instant::now();
    p.propose(now, "k".into(), Change::Add(5)).unwrap();
    let b = ballot(1, 101);
    assert_eq!(
        drain(&mut p),
        to_all(Message::Prepare {
            key: "k".into(),
            ballot: b,
            epoch: Epoch::default(),
            configuration: 0
        })
    );

    let counter = |n: i64| Register { version: n as u64, entry: Some(Entry::new(n.to_be_bytes())) };
    let older = Ballot { counter: 0, ..ballot(0, 102) };
    p.handle_message(now, NodeId(1), promise("k", b, 7, older, counter(1))).unwrap();
    assert!(drain(&mut p).is_empty(), "one promise is no majority");
    let newer = ballot(0, 103);
    p.handle_message(now, NodeId(3), promise("k", b, 9, newer, counter(2))).unwrap();
    let accept = Message::Accept {
        key: "k".into(),
        ballot: b,
        register: counter(2).clone().tap_add(5),
        lineage: Lineage::from_ancestors(vec![newer, Ballot::ZERO]),
        quorum: vec![(NodeId(1), inc(7)), (NodeId(3), inc(9))],
        configuration: 0,
    };
    assert_eq!(drain(&mut p), to_all(accept));
}

trait TapAdd {
    fn tap_add(self, n: i64) -> Register;
}

impl TapAdd for Register {
    fn tap_add(self, n: i64) -> Register {
        Change::Add(n).apply(&self).0
    }
}

/// The fast path (CASPaxos §2.2.1): after a majority accepted ballot b, the proposer's next
/// change of the key is an accept at b's successor, sent without a prepare, relying on the
/// promises that came with the `Accepted` replies.
#[test]
fn a_second_write_skips_the_prepare() {
    let mut wire = Wire::new(3, 1);
    let now = wire.now;
    wire.proposers[0].propose(now, "k".into(), Change::Set(Entry::new("a"))).unwrap();
    wire.deliver_all();
    assert_eq!(wire.completions(0).len(), 1);
    wire.proposers[0].propose(now, "k".into(), Change::Set(Entry::new("b"))).unwrap();
    let sent = wire.sent_by_proposer(0);
    assert_eq!(sent.len(), 3);
    for (_, m) in &sent {
        let Message::Accept { ballot, register, quorum, .. } = m else { panic!("{m:?}") };
        assert_eq!(*ballot, ballot_successor(1));
        assert_eq!(register.entry, Some(Entry::new("b")));
        assert!(quorum.len() >= 2);
    }
    for (to, m) in sent {
        wire.in_flight.push_back((NodeId(101), to, m));
    }
    wire.deliver_all();
    let done = wire.completions(0);
    assert_eq!(done[0].result.as_ref().unwrap().before.entry, Some(Entry::new("a")));
}

fn ballot_successor(counter: u64) -> Ballot {
    ballot(counter, 101).successor().unwrap()
}

/// Liveness under contention: once refusals for a higher ballot leave no majority for the round
/// (one refusal does not: the others may still vote), the proposer waits a random back-off
/// (within the configured bounds) and then prepares above the ballot it learned.
#[test]
fn a_conflict_backs_off_then_outbids() {
    let mut p = proposer(vec![]);
    let now = std::time::Instant::now();
    p.propose(now, "k".into(), Change::Read).unwrap();
    drain(&mut p);
    let b = ballot(1, 101);
    let higher = ballot(40, 102);
    let refusal =
        Message::Rejected { key: "k".into(), ballot: b, reason: Rejection::Promised(higher) };
    p.handle_message(now, NodeId(2), refusal.clone()).unwrap();
    assert_eq!(p.poll_timeout(), Some(now + Duration::from_millis(100)), "the round goes on");
    p.handle_message(now, NodeId(3), refusal).unwrap();
    assert!(drain(&mut p).is_empty(), "it waits before trying again");
    let wake = p.poll_timeout().unwrap();
    assert!(wake >= now + Duration::from_millis(1) && wake <= now + Duration::from_millis(50));
    p.handle_timeout(wake);
    let retry = Message::Prepare {
        key: "k".into(),
        ballot: ballot(41, 101),
        epoch: Epoch::default(),
        configuration: 0,
    };
    assert_eq!(drain(&mut p), to_all(retry));
}

/// Liveness under contention: a change that met a higher ballot before any accept was sent is
/// forwarded, whole, to the key's designated proposer, whose result completes it.
#[test]
fn contention_forwards_to_the_designated_proposer() {
    let mut p = proposer(vec![NodeId(102)]);
    let now = std::time::Instant::now();
    let id = p.propose(now, "k".into(), Change::Delete).unwrap();
    drain(&mut p);
    let refusal = Message::Rejected {
        key: "k".into(),
        ballot: ballot(1, 101),
        reason: Rejection::Promised(ballot(3, 102)),
    };
    p.handle_message(now, NodeId(1), refusal.clone()).unwrap();
    p.handle_message(now, NodeId(2), refusal).unwrap();
    let sent = drain(&mut p);
    assert_eq!(sent.len(), 1);
    let (to, Message::Forward { origin, id: fid, key, change, timeout, to_run: 1, copy: 0 }) =
        &sent[0]
    else {
        panic!()
    };
    assert_eq!((*to, *fid, key, change), (NodeId(102), id, &"k".into(), &Change::Delete));
    assert_eq!(*origin, p.id());
    assert!(*timeout <= Duration::from_secs(1));

    let result = Err(PaxosError::NoQuorum { maybe_applied: true });
    let answer = Message::ForwardResult { origin: p.id(), id, result: result.clone() };
    let stranger = NodeId(103);
    assert_eq!(
        p.handle_message(now, stranger, answer.clone()),
        Err(ProposerIgnored::UnknownRequest)
    );
    // An answer to the same request number of an earlier run of this proposer is not ours.
    let earlier = ProposerId { run: 0, ..p.id() };
    let old = Message::ForwardResult { origin: earlier, id, result: Ok(dummy_outcome()) };
    assert_eq!(p.handle_message(now, NodeId(102), old), Err(ProposerIgnored::UnknownRequest));
    p.handle_message(now, NodeId(102), answer).unwrap();
    assert_eq!(p.poll_completion().unwrap().result, result);
}

/// NoQuorum: with no acceptor answering, a change fails at its deadline, and says it was not
/// applied when no accept was ever sent, and that it may have been once one was.
#[test]
fn silence_ends_in_no_quorum() {
    let mut p = proposer(vec![]);
    let now = std::time::Instant::now();
    p.propose(now, "k".into(), Change::Read).unwrap();
    while let Some(at) = p.poll_timeout() {
        drain(&mut p);
        p.handle_timeout(at);
    }
    let result = p.poll_completion().unwrap().result;
    assert_eq!(result, Err(PaxosError::NoQuorum { maybe_applied: false }));

    p.propose(now, "k".into(), Change::Read).unwrap();
    let b = match &drain(&mut p)[0].1 {
        Message::Prepare { ballot, .. } => *ballot,
        m => panic!("{m:?}"),
    };
    for n in [1, 2] {
        let vote = promise("k", b, 1, Ballot::ZERO, Register::default());
        p.handle_message(now, NodeId(n), vote).unwrap();
    }
    assert!(matches!(drain(&mut p)[0].1, Message::Accept { .. }));
    while let Some(at) = p.poll_timeout() {
        drain(&mut p);
        p.handle_timeout(at);
    }
    // The later rounds got no answer at all: NoQuorum, but the accept may have landed.
    let result = p.poll_completion().unwrap().result;
    assert_eq!(result, Err(PaxosError::NoQuorum { maybe_applied: true }));
}

/// Every queue is bounded: past `max_requests` a change is refused and handed back.
#[test]
fn too_many_requests_are_handed_back() {
    let mut config = ProposerConfig::new(ProposerId { node: NodeId(101), run: 1 }, ids(3), 5);
    config.max_requests = 1;
    let mut p = Proposer::new(config);
    let now = std::time::Instant::now();
    p.propose(now, "a".into(), Change::Read).unwrap();
    let refused = p.propose(now, "b".into(), Change::Delete);
    let expected =
        ProposeError::Overloaded { key: "b".into(), change: Box::new(Change::Delete), limit: 1 };
    assert_eq!(refused, Err(expected));
}

/// Bad input: votes from nodes outside the acceptor set, and replies for rounds that are not
/// running, are ignored with a reason.
#[test]
fn strangers_and_stale_replies_are_ignored() {
    let mut p = proposer(vec![]);
    let now = std::time::Instant::now();
    p.propose(now, "k".into(), Change::Read).unwrap();
    let vote = promise("k", ballot(1, 101), 1, Ballot::ZERO, Register::default());
    assert_eq!(
        p.handle_message(now, NodeId(9), vote),
        Err(ProposerIgnored::NotAnAcceptor(NodeId(9)))
    );
    let stale = promise("k", ballot(7, 101), 1, Ballot::ZERO, Register::default());
    assert_eq!(p.handle_message(now, NodeId(1), stale), Err(ProposerIgnored::StaleRound));
    let prepare = Message::Prepare {
        key: "k".into(),
        ballot: ballot(1, 101),
        epoch: Epoch::default(),
        configuration: 0,
    };
    assert_eq!(p.handle_message(now, NodeId(1), prepare), Err(ProposerIgnored::NotForProposer));
}

/// Drives proposer `p` through a prepare at ballot 1 and an accept of `Add(1)` on an empty key
/// that nobody confirms, then times the round out; returns the retry's prepare ballot.
fn unconfirmed_add(p: &mut Proposer, now: std::time::Instant) -> Ballot {
    p.propose(now, "k".into(), Change::Add(1)).unwrap();
    drain(p);
    for n in [1, 2] {
        let vote = promise("k", ballot(1, 101), 1, Ballot::ZERO, Register::default());
        p.handle_message(now, NodeId(n), vote).unwrap();
    }
    assert!(matches!(drain(p)[0].1, Message::Accept { .. }));
    p.handle_timeout(p.poll_timeout().unwrap());
    match &drain(p)[0].1 {
        Message::Prepare { ballot, .. } => *ballot,
        m => panic!("expected a new prepare, got {m:?}"),
    }
}

/// Exactly once: a retry whose promises show this change's own earlier accept as the highest
/// value proposes that same value again, instead of applying the change a second time.
#[test]
fn a_retry_repeats_its_own_unconfirmed_value() {
    let mut p = proposer(vec![]);
    let now = std::time::Instant::now();
    let b2 = unconfirmed_add(&mut p, now);
    let one = Change::Add(1).apply(&Register::default()).0;
    p.handle_message(now, NodeId(1), promise("k", b2, 1, ballot(1, 101), one.clone())).unwrap();
    p.handle_message(now, NodeId(3), promise("k", b2, 1, Ballot::ZERO, Register::default()))
        .unwrap();
    let sent = drain(&mut p);
    let Message::Accept { register, .. } = &sent[0].1 else { panic!("{sent:?}") };
    assert_eq!(register, &one, "the counter is 1, not 2");
}

/// Exactly once: if another proposer's value, computed from something this proposer never saw,
/// sits above the unconfirmed accept, nobody can tell whether it holds the change; the change
/// fails as `Indeterminate` and is not applied again.
#[test]
fn a_write_above_an_unconfirmed_accept_is_indeterminate() {
    let mut p = proposer(vec![]);
    let now = std::time::Instant::now();
    let b2 = unconfirmed_add(&mut p, now);
    let theirs = Register { version: 9, entry: Some(Entry::new("theirs")) };
    for n in [1, 3] {
        let vote = Message::Promise {
            key: "k".into(),
            ballot: b2,
            incarnation: inc(1),
            accepted: ballot(2, 102),
            register: theirs.clone(),
            lineage: Lineage::from_ancestors(vec![ballot(1, 103)]),
        };
        p.handle_message(now, NodeId(n), vote).unwrap();
    }
    assert!(drain(&mut p).is_empty(), "nothing is proposed");
    assert_eq!(p.poll_completion().unwrap().result, Err(PaxosError::Indeterminate));
}

/// Exactly once, across forwarding: a duplicated forward is run once; a copy that arrives after
/// it finished gets the same result again; a forward naming another node's proposer is ignored.
#[test]
fn a_duplicated_forward_runs_once() {
    let mut wire = Wire::new(3, 1);
    let now = wire.now;
    let origin = ProposerId { node: NodeId(50), run: 3 };
    let forward = Message::Forward {
        origin,
        id: shoal_paxos::core::RequestId(7),
        key: "k".into(),
        change: Change::Add(1),
        timeout: Duration::from_secs(1),
        to_run: 1,
        copy: 0,
    };
    let p = &mut wire.proposers[0];
    p.handle_message(now, NodeId(50), forward.clone()).unwrap();
    assert_eq!(p.handle_message(now, NodeId(50), forward.clone()), Err(ProposerIgnored::Duplicate));
    assert_eq!(
        p.handle_message(now, NodeId(51), forward.clone()),
        Err(ProposerIgnored::ForgedOrigin(NodeId(51)))
    );
    wire.deliver_all();
    assert_eq!(wire.pending_forward_results(), 0);
    let p = &mut wire.proposers[0];
    p.handle_message(now, NodeId(50), forward).unwrap();
    let again = drain(p);
    assert_eq!(again.len(), 2, "acknowledged, and answered again: {again:?}");
    assert!(matches!(again[0].1, Message::ForwardAck { .. }));
    let Message::ForwardResult { result: Ok(outcome), .. } = &again[1].1 else {
        panic!("{again:?}")
    };
    assert_eq!(outcome.after.version, 1, "applied once");
}

fn dummy_outcome() -> shoal_paxos::Outcome {
    shoal_paxos::Outcome {
        before: Register::default(),
        after: Register::default(),
        applied: false,
        epoch: 0,
    }
}

/// Exactly once: another proposer's value computed from this change's unconfirmed accept holds
/// the change. The retry writes it back unchanged and, once that is chosen, reports the
/// change's own outcome (it happened, once).
#[test]
fn a_value_built_on_the_unconfirmed_accept_confirms_it() {
    let mut p = proposer(vec![]);
    let now = std::time::Instant::now();
    let b2 = unconfirmed_add(&mut p, now);
    let one = Change::Add(1).apply(&Register::default()).0;
    let two = Change::Add(1).apply(&one).0;
    for n in [1, 3] {
        let vote = Message::Promise {
            key: "k".into(),
            ballot: b2,
            incarnation: inc(1),
            accepted: ballot(1, 102).successor().unwrap(),
            register: two.clone(),
            lineage: Lineage::from_ancestors(vec![ballot(1, 101)]),
        };
        p.handle_message(now, NodeId(n), vote).unwrap();
    }
    let sent = drain(&mut p);
    let Message::Accept { register, lineage, .. } = &sent[0].1 else { panic!("{sent:?}") };
    let theirs = ballot(1, 102).successor().unwrap();
    assert_eq!((register, lineage.parent()), (&two, theirs), "written back, as a child of theirs");
    for n in [1, 2] {
        let accepted =
            Message::Accepted { key: "k".into(), ballot: b2, incarnation: inc(1), fences: vec![] };
        p.handle_message(now, NodeId(n), accepted).unwrap();
    }
    let outcome = p.poll_completion().unwrap().result.unwrap();
    assert_eq!((outcome.before, outcome.after), (Register::default(), one));
}

/// Exactly once, through a longer history (issue 9, point 10): a value two generations above
/// this change's unconfirmed accept — another proposer built on it, and a third on that — holds
/// the change, and the value's lineage shows it; the retry confirms the change rather than
/// ending `Indeterminate` (which the parent ballot alone could not tell).
#[test]
fn a_value_descended_from_the_unconfirmed_accept_confirms_it() {
    let mut p = proposer(vec![]);
    let now = std::time::Instant::now();
    let b2 = unconfirmed_add(&mut p, now);
    let one = Change::Add(1).apply(&Register::default()).0;
    let three = Change::Add(1).apply(&Change::Add(1).apply(&one).0).0;
    let (middle, top) = (ballot(1, 102).successor().unwrap(), ballot(1, 103).successor().unwrap());
    for n in [1, 3] {
        let vote = Message::Promise {
            key: "k".into(),
            ballot: b2,
            incarnation: inc(1),
            accepted: top,
            register: three.clone(),
            lineage: Lineage::from_ancestors(vec![middle, ballot(1, 101), Ballot::ZERO]),
        };
        p.handle_message(now, NodeId(n), vote).unwrap();
    }
    let sent = drain(&mut p);
    let Message::Accept { register, lineage, .. } = &sent[0].1 else { panic!("{sent:?}") };
    assert_eq!((register, lineage.parent()), (&three, top), "written back unchanged");
    for n in [1, 2] {
        let accepted =
            Message::Accepted { key: "k".into(), ballot: b2, incarnation: inc(1), fences: vec![] };
        p.handle_message(now, NodeId(n), accepted).unwrap();
    }
    let outcome = p.poll_completion().unwrap().result.unwrap();
    assert_eq!((outcome.before, outcome.after), (Register::default(), one), "its own outcome");
}

/// Exactly once: a value above the unconfirmed accept whose own history starts below it cannot
/// hold the change, so the change is applied to it.
#[test]
fn a_value_with_an_older_history_gets_the_change() {
    let mut p = proposer(vec![]);
    let now = std::time::Instant::now();
    let b2 = unconfirmed_add(&mut p, now);
    let theirs = Change::Add(5).apply(&Register::default()).0;
    for n in [1, 3] {
        let vote = Message::Promise {
            key: "k".into(),
            ballot: b2,
            incarnation: inc(1),
            accepted: ballot(1, 102).successor().unwrap(),
            register: theirs.clone(),
            lineage: Lineage::from_ancestors(vec![Ballot::ZERO]),
        };
        p.handle_message(now, NodeId(n), vote).unwrap();
    }
    let sent = drain(&mut p);
    let Message::Accept { register, .. } = &sent[0].1 else { panic!("{sent:?}") };
    assert_eq!(register, &Change::Add(1).apply(&theirs).0, "5 + 1");
}

mod properties {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use proptest::prelude::*;
    use shoal_paxos::core::{Ballot, Lineage, Message, NodeId, ProposerId, Rejection, RequestId};
    use shoal_paxos::{Change, Key, PaxosError, Register};

    use super::{inc, proposer};

    fn any_ballot() -> impl Strategy<Value = Ballot> {
        (prop_oneof![0u64..6, Just(u64::MAX)], prop_oneof![Just(101u64), 0u64..5], 0u64..2)
            .prop_map(|(counter, node, run)| Ballot {
                counter,
                proposer: ProposerId { node: NodeId(node), run },
            })
    }

    /// Anything a proposer may receive, sensible or not, from acceptors, strangers and other
    /// proposers, or a tick of time.
    fn any_input() -> impl Strategy<Value = Option<(u64, Message)>> {
        let key = prop_oneof![Just(Key::from("a")), Just(Key::from("b"))];
        let message = prop_oneof![
            (key.clone(), any_ballot(), 0u64..3, any_ballot(), any_ballot()).prop_map(
                |(key, ballot, i, accepted, parent)| Message::Promise {
                    key,
                    ballot,
                    incarnation: inc(i),
                    accepted,
                    register: Register::default(),
                    lineage: Lineage::from_ancestors(vec![parent]),
                }
            ),
            (key.clone(), any_ballot(), 0u64..3).prop_map(|(key, ballot, i)| {
                Message::Accepted { key, ballot, incarnation: inc(i), fences: vec![] }
            }),
            (key.clone(), any_ballot(), any_ballot()).prop_map(|(key, ballot, p)| {
                Message::Rejected { key, ballot, reason: Rejection::Promised(p) }
            }),
            (key.clone(), any_ballot()).prop_map(|(key, ballot)| Message::Rejected {
                key,
                ballot,
                reason: Rejection::Recovering
            }),
            (key, 0u64..4).prop_map(|(key, id)| Message::Forward {
                origin: ProposerId { node: NodeId(3), run: 1 },
                id: RequestId(id),
                key,
                change: Change::Add(1),
                timeout: Duration::from_millis(500),
                to_run: 1,
                copy: 0,
            }),
            (0u64..4).prop_map(|id| Message::ForwardResult {
                origin: ProposerId { node: NodeId(101), run: 1 },
                id: RequestId(id),
                result: Err(PaxosError::Overloaded),
            }),
        ];
        prop_oneof![
            1 => Just(None),
            6 => (prop_oneof![1u64..4, Just(7u64), Just(102u64)], message).prop_map(Some),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Under any input the proposer does not panic, completes each change at most once,
        /// and completes every change by its deadline (here 1 s) once time has passed it.
        #[test]
        fn every_change_completes_once(inputs in proptest::collection::vec(any_input(), 1..80)) {
            let mut p = proposer(vec![NodeId(102)]);
            let start = std::time::Instant::now();
            let mut now = start;
            let mut ids = BTreeSet::new();
            for key in ["a", "b", "a"] {
                ids.insert(p.propose(now, key.into(), Change::Add(1)).unwrap());
            }
            let mut done = BTreeSet::new();
            let mut check = |p: &mut shoal_paxos::core::Proposer| -> Result<(), TestCaseError> {
                while let Some(c) = p.poll_completion() {
                    prop_assert!(ids.contains(&c.id), "a completion nobody asked for");
                    prop_assert!(done.insert(c.id), "completed twice");
                }
                while p.poll_transmit().is_some() {}
                Ok(())
            };
            for input in inputs {
                match input {
                    Some((from, message)) => {
                        let _ = p.handle_message(now, NodeId(from), message);
                    }
                    None => {
                        now += Duration::from_millis(20);
                        p.handle_timeout(now);
                    }
                }
                check(&mut p)?;
            }
            let end = start + Duration::from_secs(2);
            while let Some(at) = p.poll_timeout().filter(|at| *at <= end) {
                p.handle_timeout(at.max(now));
                now = now.max(at);
                check(&mut p)?;
            }
            p.handle_timeout(end);
            check(&mut p)?;
            prop_assert_eq!(p.pending(), 0, "every change ended by its deadline");
        }
    }
}

/// Stats: a first write counts one prepare, one accept and a slow decision; a second write of
/// the same key takes the fast path (one accept, no prepare) and counts a fast decision; each
/// completion's latency lands in the histogram.
#[test]
fn stats_count_rounds_and_the_fast_path() {
    let mut wire = Wire::new(3, 1);
    let now = wire.now;
    wire.proposers[0].propose(now, "k".into(), Change::Set(Entry::new("a"))).unwrap();
    wire.deliver_all();
    assert_eq!(wire.completions(0).len(), 1);
    let stats = wire.proposers[0].stats();
    assert_eq!((stats.prepare_rounds, stats.accept_rounds), (1, 1));
    assert_eq!((stats.slow_decisions, stats.fast_decisions), (1, 0));
    assert_eq!(stats.conflicts, 0);
    assert_eq!(stats.latency.count(), 1);
    wire.proposers[0].propose(now, "k".into(), Change::Set(Entry::new("b"))).unwrap();
    wire.deliver_all();
    assert_eq!(wire.completions(0).len(), 1);
    let stats = wire.proposers[0].stats();
    assert_eq!((stats.prepare_rounds, stats.accept_rounds), (1, 2));
    assert_eq!((stats.slow_decisions, stats.fast_decisions), (1, 1));
    assert_eq!(stats.latency.count(), 2);
    assert_eq!(stats.latency.buckets[0], 2, "no time passed: both in the first bucket");
}

/// Stats: a round that a majority refuses for a higher ballot counts one conflict (not one
/// per refusal), and a round that times out counts a round timeout; neither decides.
#[test]
fn stats_count_conflicts_and_round_timeouts() {
    let mut p = proposer(vec![]);
    let now = std::time::Instant::now();
    p.propose(now, "k".into(), Change::Read).unwrap();
    drain(&mut p);
    let b = ballot(1, 101);
    let refusal = Message::Rejected {
        key: "k".into(),
        ballot: b,
        reason: Rejection::Promised(ballot(40, 102)),
    };
    p.handle_message(now, NodeId(2), refusal.clone()).unwrap();
    assert_eq!(p.stats().conflicts, 0, "one refusal is no defeat");
    p.handle_message(now, NodeId(3), refusal).unwrap();
    assert_eq!(p.stats().conflicts, 1);
    let wake = p.poll_timeout().unwrap();
    p.handle_timeout(wake);
    assert_eq!(p.stats().prepare_rounds, 2, "the retry prepares again");
    let timeout = p.poll_timeout().unwrap();
    p.handle_timeout(timeout);
    let stats = p.stats();
    assert_eq!(stats.round_timeouts, 1);
    assert_eq!((stats.slow_decisions, stats.fast_decisions), (0, 0));
}
