//! Issue 9's scenarios, scripted message by message on the [`Wire`]: each test names the rule
//! it checks and the point of the issue whose failure it replays. Each of them failed on the
//! core before the fixes (commit f805009), as far as that core's API could express it.
//! Point 4 (a service restarted on the same node) is a driver test, in `driver.rs`; point 5
//! (the file store) is tested in `storage.rs`.

use std::time::Duration;

use shoal_paxos::core::{
    AcceptorConfig, Completion, Message, NodeId, Proposer, ProposerConfig, ProposerId, Rejection,
    RequestId, Storage,
};
use shoal_paxos::{
    BeginEpochError, Change, Entry, Holder, Outcome, Owner, PaxosError, Recovery, Register,
};

use super::acceptor::{accept, accepted, ask, ballot, prepare, rejected, value};
use super::proposer::{forward, forward_ack, forward_result};
use super::wire::{Wire, ids};

const A1: NodeId = NodeId(1);
const A2: NodeId = NodeId(2);
const P1: NodeId = NodeId(101);
const P2: NodeId = NodeId(102);

/// The value key `k` holds on acceptor `a` (`None`: nothing accepted).
pub(crate) fn held(wire: &Wire, a: usize, key: &str) -> Option<Register> {
    let slot = wire.acceptors[a].state().slot(&key.into())?;
    (slot.accepted != shoal_paxos::core::Ballot::ZERO).then(|| slot.register.clone())
}

/// Runs `change` on `key` through proposer `p` until it completes (time runs as needed).
pub(crate) fn run(wire: &mut Wire, p: usize, key: &str, change: Change) -> Completion {
    let id = wire.proposers[p].propose(wire.now, key.into(), change).expect("room");
    wire.advance_to(wire.now + Duration::from_secs(10));
    let done = wire.completions(p);
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].id, id);
    done.into_iter().next().expect("one")
}

/// A read of `key` through proposer `p` while the acceptors in `down` are cut off.
pub(crate) fn read_through(wire: &mut Wire, p: usize, key: &str, down: &[NodeId]) -> Option<Entry> {
    wire.down = down.iter().copied().collect();
    let read = run(wire, p, key, Change::Read);
    wire.down.clear();
    read.result.expect("a majority answered").after.entry
}

/// Issue 9, point 1. Rule: a vote of an incarnation that has since been replaced never counts
/// toward a majority — the `Accepted` of an acceptor that accepted after a rejoin fenced it
/// carries the fence, and the proposer drops the replaced incarnation's vote.
///
/// P prepares on {2,3} and sends its accept to all. 1 accepts and its vote reaches P; then 1
/// loses its state and rejoins from 2 and 3 while P's accepts to them are still in flight, so
/// the copy lacks the value. The accept then reaches 2, which accepts: old-1 and 2 are no
/// majority, so P does not acknowledge the write; once 3 accepts it does, and a read through
/// {1,3} returns the value.
#[test]
fn a_vote_of_a_replaced_incarnation_does_not_count() {
    let mut wire = Wire::new(3, 2);
    let epoch = wire.acceptors[0].epoch();
    let incarnations: Vec<_> = wire.acceptors.iter().map(|a| a.incarnation().unwrap()).collect();
    let id = wire.proposers[0].propose(wire.now, "k".into(), Change::Set(Entry::new("v"))).unwrap();
    // P prepares on {2,3}: its prepare to 1 is lost.
    let lost = wire.take(|_, to, m| to == A1 && matches!(m, Message::Prepare { .. }));
    assert_eq!(lost.len(), 1);
    for _ in 0..4 {
        let (_, _, m) = wire.deliver_one().unwrap();
        assert!(matches!(m, Message::Prepare { .. } | Message::Promise { .. }), "{m:?}");
    }
    let b = ballot(1, 101);
    let sent = accept("k", b, value("v"), &[(2, incarnations[1]), (3, incarnations[2])]);
    let mut to_2_and_3 = wire.take(|_, to, _| to != A1);
    assert_eq!(to_2_and_3, vec![(P1, A2, sent.clone()), (P1, NodeId(3), sent)]);

    // 1 accepts, and P counts its vote.
    wire.deliver_all();
    assert_eq!(held(&wire, 0, "k"), Some(value("v")));
    assert!(wire.completions(0).is_empty());

    // 1 loses its state and rejoins from 2 and 3, neither of which holds the value.
    let rejoined = wire.lose_state_and_rejoin(0);
    assert!(rejoined > incarnations[0]);
    assert_eq!(held(&wire, 0, "k"), None, "the copy lacks the value");

    // The accept reaches 2, which accepts and reports the fence of 1's new life.
    let to_3 = to_2_and_3.pop().unwrap();
    wire.deliver_now(to_2_and_3.pop().unwrap());
    let fences: Vec<_> = wire.acceptors[1].state().meta().fences.clone().into_iter().collect();
    assert!(fences.contains(&(A1, rejoined)), "{fences:?}");
    let vote = wire.deliver_one().unwrap();
    assert_eq!(vote, (A2, P1, accepted("k", b, incarnations[1], fences)));
    assert!(wire.in_flight.is_empty());
    assert_eq!(wire.completions(0), vec![], "old-1 and 2 are no majority");
    assert_eq!(wire.proposers[0].pending(), 1);

    // 3 accepts: now a majority of the current incarnations holds the value.
    wire.deliver_now(to_3);
    wire.deliver_all();
    let epoch = epoch.number;
    let outcome = Outcome { before: Register::default(), after: value("v"), applied: true, epoch };
    assert_eq!(wire.completions(0), vec![Completion { id, key: "k".into(), result: Ok(outcome) }]);
    assert_eq!(read_through(&mut wire, 1, "k", &[A2]), Some(Entry::new("v")));
}

/// Issue 9, point 2. Rule: incarnations never repeat — rejoining copies the fences with the
/// slots, so after a rolling restart of acceptors 2 then 3, the others still know acceptor 1's
/// incarnation, and 1's next life is above every earlier one.
///
/// The crate docs' case then stays refused: acceptor 1 promised ballot 6 and lost its state;
/// ballot 6's prepare reached 2 only after 1 had rejoined; ballot 5 is chosen on {1,3}; the
/// accept of ballot 6, counting 1's lost promise and 2's, is refused by every acceptor, so no
/// second value is chosen.
#[test]
fn incarnations_never_repeat_across_a_rolling_restart() {
    let mut wire = Wire::new(3, 0);
    let first = wire.acceptors[0].incarnation().unwrap();
    let second = wire.lose_state_and_rejoin(0);
    wire.lose_state_and_rejoin(1);
    wire.lose_state_and_rejoin(2);
    let (p5, p6) = (NodeId(101), NodeId(102));
    let (b5, b6) = (ballot(5, 101), ballot(6, 102));

    // 1 promises ballot 6; its promise is counted, then 1 loses its state and rejoins.
    let answer = ask(&mut wire, 0, p6, prepare("k", b6));
    assert!(
        matches!(&answer[..], [(_, Message::Promise { incarnation, .. })] if *incarnation == second)
    );
    let third = wire.lose_state_and_rejoin(0);
    assert!(third > second && third > first, "{first} -> {second} -> {third}");

    // Ballot 6's prepare reaches 2 only now.
    let answer = ask(&mut wire, 1, p6, prepare("k", b6));
    let inc2 = wire.acceptors[1].incarnation().unwrap();
    assert!(
        matches!(&answer[..], [(_, Message::Promise { incarnation, .. })] if *incarnation == inc2)
    );

    // Ballot 5 is chosen on {1,3}.
    let inc3 = wire.acceptors[2].incarnation().unwrap();
    for a in [0, 2] {
        let answer = ask(&mut wire, a, p5, prepare("k", b5));
        assert!(matches!(&answer[..], [(_, Message::Promise { .. })]), "{answer:?}");
    }
    for a in [0, 2] {
        let five = accept("k", b5, value("five"), &[(1, third), (3, inc3)]);
        let answer = ask(&mut wire, a, p5, five);
        assert!(matches!(&answer[..], [(_, Message::Accepted { .. })]), "{answer:?}");
    }

    // Ballot 6's accept counted 1's lost promise: refused everywhere.
    for a in 0..3 {
        let six = accept("k", b6, value("six"), &[(1, second), (2, inc2)]);
        let answer = ask(&mut wire, a, p6, six);
        let refusal = rejected("k", b6, Rejection::StaleIncarnation);
        assert_eq!(answer, vec![(p6, refusal)], "acceptor {}", a + 1);
    }
    assert_eq!(held(&wire, 1, "k"), None);
    assert_eq!(held(&wire, 2, "k"), Some(value("five")));
}

/// Issue 9, point 3. Rule: only voting acceptors count toward a rejoin — an acceptor that is
/// itself rejoining answers with its empty state, which must not stand in for a voter's.
///
/// A value chosen on {1,2,3} of five; 1 and 2 lose their state at once. While 3 is cut off,
/// each has only two voters (4 and 5) and the other rejoining acceptor to copy from: neither
/// votes. Once 3 answers, both rejoin from voters only, both hold the value, and a read
/// through {1,2,4} returns it.
#[test]
fn two_of_five_losing_state_at_once_keep_a_chosen_value() {
    let mut wire = Wire::new(5, 2);
    wire.down = [NodeId(4), NodeId(5)].into();
    let write = run(&mut wire, 0, "k", Change::Set(Entry::new("v")));
    assert!(write.result.is_ok(), "{write:?}");
    wire.down.clear();
    assert_eq!((held(&wire, 3, "k"), held(&wire, 4, "k")), (None, None));

    wire.lose_state(0);
    wire.lose_state(1);
    wire.down = [NodeId(3)].into();
    wire.settle();
    assert_eq!((wire.acceptors[0].incarnation(), wire.acceptors[1].incarnation()), (None, None));

    wire.down.clear();
    wire.settle();
    assert!(wire.acceptors[0].incarnation().is_some() && wire.acceptors[1].incarnation().is_some());
    assert_eq!((held(&wire, 0, "k"), held(&wire, 1, "k")), (Some(value("v")), Some(value("v"))));
    let down = [NodeId(3), NodeId(5)];
    assert_eq!(read_through(&mut wire, 1, "k", &down), Some(Entry::new("v")));
}

/// Issue 9, point 3, when a majority loses its state together (`lost` of `n`, under the default
/// [`Recovery::Manual`]). Rule: nobody votes and no write completes however long time runs,
/// until the operator calls `Acceptor::begin_epoch` on an acceptor without state (on a voting
/// one it is refused); then a new, empty epoch is founded, writes complete, and the fencing
/// token `(Outcome::epoch, version)` of the first write in it is above the old epoch's last.
fn a_majority_without_state_waits_for_the_operator(n: u64, lost: &[usize]) {
    let mut wire = Wire::new(n, 1);
    let old_epoch = wire.acceptors[0].epoch();
    let voting = wire.acceptors[0].incarnation().unwrap();
    assert_eq!(wire.acceptors[0].begin_epoch(wire.now), Err(BeginEpochError::Voting(voting)));
    let mut last = None;
    for data in ["a", "b", "c"] {
        last = Some(run(&mut wire, 0, "lock", Change::Set(Entry::new(data))).result.unwrap());
    }
    let last = last.unwrap();
    let old_token = (last.epoch, last.after.version);
    assert_eq!(old_token, (old_epoch.number, 3));

    // The driver sets the floor from the wall clock; a later start has a higher one.
    let floor = old_epoch.number + 1_000;
    for &a in lost {
        let id = wire.acceptors[a].id();
        let config = AcceptorConfig { epoch_floor: floor, ..AcceptorConfig::new(id, ids(n), 77) };
        assert_eq!(config.recovery, Recovery::Manual);
        wire.lose_state_with(a, config);
    }
    let start = wire.now;
    let write = run(&mut wire, 0, "other", Change::Set(Entry::new("x")));
    // Every acceptor answered, but a majority only with `Recovering`: no majority can vote,
    // which is `NoQuorum` (not a timeout under contention), and nothing applied.
    assert_eq!(write.result, Err(PaxosError::NoQuorum { maybe_applied: false }), "{write:?}");
    wire.advance_to(start + Duration::from_secs(600));
    assert!(wire.now >= start + Duration::from_secs(599), "time ran");
    for &a in lost {
        assert_eq!(wire.acceptors[a].incarnation(), None, "acceptor {}", a + 1);
    }

    // The operator founds a new epoch on one without state.
    wire.acceptors[lost[0]].begin_epoch(wire.now).unwrap();
    wire.settle();
    let new_epoch = wire.acceptors[lost[0]].epoch();
    assert_eq!(new_epoch.number, floor);
    for a in &wire.acceptors {
        assert_eq!(a.incarnation().map(|i| i.epoch), Some(new_epoch), "acceptor {}", a.id());
    }
    let first = run(&mut wire, 0, "lock", Change::Set(Entry::new("d"))).result.unwrap();
    let expected = Outcome {
        before: Register::default(),
        after: Register { version: 1, entry: Some(Entry::new("d")) },
        applied: true,
        epoch: floor,
    };
    assert_eq!(first, expected, "the new epoch starts empty");
    assert!((first.epoch, first.after.version) > old_token);
}

/// Issue 9, point 3: all three acceptors of three lose their state.
#[test]
fn all_of_three_without_state_wait_for_the_operators_new_epoch() {
    a_majority_without_state_waits_for_the_operator(3, &[0, 1, 2]);
}

/// Issue 9, point 3: three acceptors of five lose their state; the two voting ones leave the
/// old epoch when the new one is founded.
#[test]
fn three_of_five_without_state_wait_for_the_operators_new_epoch() {
    a_majority_without_state_waits_for_the_operator(5, &[0, 1, 2]);
}

/// Wires three acceptors and two proposers, 101 forwarding to 102 under contention. 102 writes
/// `k = v` and `j = w`; 101 then reads `k` and sets `j = x`, meets 102's promises and forwards
/// both changes to 102's run 1. Returns the two requests and the forwards, held off the wire.
fn forward_a_read_and_a_write(wire: &mut Wire) -> (RequestId, RequestId, Vec<Message>) {
    wire.restart_proposer(0, 1, vec![P2]);
    for (key, data) in [("k", "v"), ("j", "w")] {
        assert!(run(wire, 1, key, Change::Set(Entry::new(data))).result.is_ok());
    }
    let now = wire.now;
    let read = wire.proposers[0].propose(now, "k".into(), Change::Read).unwrap();
    let write = wire.proposers[0].propose(now, "j".into(), Change::Set(Entry::new("x"))).unwrap();
    let mut forwards = Vec::new();
    loop {
        forwards.extend(wire.take(|_, _, m| matches!(m, Message::Forward { .. })));
        if wire.deliver_one().is_none() {
            break;
        }
    }
    let origin = wire.proposers[0].id();
    let timeout = Duration::from_secs(2);
    let expected = vec![
        (P1, P2, forward(origin, read, ("k", Change::Read), timeout, 1, 0)),
        (P1, P2, forward(origin, write, ("j", Change::Set(Entry::new("x"))), timeout, 1, 0)),
    ];
    assert_eq!(forwards, expected);
    assert!(wire.completions(0).is_empty());
    (read, write, forwards.into_iter().map(|(_, _, m)| m).collect())
}

/// The outcome of a read of a key holding `data` (written once).
fn read_outcome(wire: &Wire, data: &str) -> Outcome {
    let register = Register { version: 1, entry: Some(Entry::new(data)) };
    let epoch = wire.acceptors[0].epoch().number;
    Outcome { before: register.clone(), after: register, applied: false, epoch }
}

/// Issue 9, point 6 (a). Rule: when the transport reports a change's designated proposer down
/// (`Proposer::peer_down`), a forwarded write fails at once with `DesignatedDown` (it may have
/// run) and a forwarded read is taken back and run here — at that moment, not at the deadline.
#[test]
fn forwards_to_a_designated_proposer_that_went_down_end_at_once() {
    let mut wire = Wire::new(3, 2);
    let (read, write, _lost) = forward_a_read_and_a_write(&mut wire);
    let down_at = wire.now;
    wire.down = [P2].into();
    wire.proposers[0].peer_down(down_at, P2);
    wire.deliver_all();
    let expected = vec![
        Completion { id: write, key: "j".into(), result: Err(PaxosError::DesignatedDown) },
        Completion { id: read, key: "k".into(), result: Ok(read_outcome(&wire, "v")) },
    ];
    assert_eq!(wire.completions(0), expected);
    assert_eq!(wire.now, down_at, "no time passed (the deadline is 2 s away)");
    assert_eq!(wire.proposers[0].pending(), 0);
    assert_eq!(wire.proposers[0].poll_timeout(), None, "no copy is sent again");
}

/// Issue 9, point 6 (b). Rule: the designated proposer acknowledges every copy of a forward
/// on receipt, before it runs it; the sender sends a copy again every round timeout until one
/// is acknowledged, and every four after (a run that restarted since answers `Misdirected`:
/// issue 14, the whole-node counter simulation at seed 356, where an acknowledged forward to
/// a Paxos service restarted alone waited out its deadline).
#[test]
fn forwards_are_acknowledged_on_receipt_and_resent_less_often_after() {
    let mut wire = Wire::new(3, 2);
    let (read, write, _lost) = forward_a_read_and_a_write(&mut wire);
    let (start, origin, round) = (wire.now, wire.proposers[0].id(), Duration::from_millis(100));
    let left = |elapsed: Duration| Duration::from_secs(2) - elapsed;

    // The first copies were lost: after a round timeout, copy 1 of each.
    assert_eq!(wire.proposers[0].poll_timeout(), Some(start + round));
    wire.now = start + round;
    wire.proposers[0].handle_timeout(wire.now);
    let read_copy = forward(origin, read, ("k", Change::Read), left(round), 1, 1);
    let write_change = ("j", Change::Set(Entry::new("x")));
    let write_copy = forward(origin, write, write_change.clone(), left(round), 1, 1);
    assert_eq!(wire.sent_by_proposer(0), vec![(P2, read_copy.clone()), (P2, write_copy)]);

    // 102 acknowledges the read's copy first thing, and 101 hears it.
    wire.deliver_now((P1, P2, read_copy));
    let first_answer = wire.in_flight.iter().find(|(from, _, _)| *from == P2).cloned();
    assert_eq!(first_answer, Some((P2, P1, forward_ack(origin, read))));
    let acks = wire.take(|_, to, m| to == P1 && matches!(m, Message::ForwardAck { .. }));
    assert_eq!(acks.len(), 1);
    wire.deliver_now(acks.into_iter().next().unwrap());

    // A round timeout later only the write is sent again; 102 acknowledges it.
    wire.now = start + 2 * round;
    wire.proposers[0].handle_timeout(wire.now);
    let write_copy = forward(origin, write, write_change, left(2 * round), 1, 2);
    assert_eq!(wire.sent_by_proposer(0), vec![(P2, write_copy.clone())]);
    wire.deliver_now((P1, P2, write_copy));
    let acks = wire.take(|_, to, m| to == P1 && matches!(m, Message::ForwardAck { .. }));
    assert_eq!(acks, vec![(P2, P1, forward_ack(origin, write))]);
    wire.deliver_now(acks.into_iter().next().unwrap());

    // Acknowledged copies go every four round timeouts (the read's from its acknowledgement
    // after one round, the write's after two), as long as the deadline is further; 102 only
    // acknowledges them again. The only deadline left at the end is the changes' own.
    for step in 3..20 {
        wire.now = start + step * round;
        wire.proposers[0].handle_timeout(wire.now);
        let sent: Vec<_> = wire
            .sent_by_proposer(0)
            .into_iter()
            .map(|(to, message)| match message {
                Message::Forward { id, .. } => (to, id),
                other => panic!("only copies of forwards are sent, not {other:?}"),
            })
            .collect();
        let expected: Vec<_> = [(1, read), (2, write)]
            .into_iter()
            .filter(|(acked_at, _)| step > *acked_at && (step - acked_at) % 4 == 0)
            .map(|(_, id)| (P2, id))
            .collect();
        assert_eq!(sent, expected, "at {step} round timeouts");
    }
    assert_eq!(wire.proposers[0].poll_timeout(), Some(start + Duration::from_secs(2)));

    // 102 runs both, once.
    wire.deliver_all();
    let done = wire.completions(0);
    let wrote = Outcome {
        before: Register { version: 1, entry: Some(Entry::new("w")) },
        after: Register { version: 2, entry: Some(Entry::new("x")) },
        applied: true,
        epoch: wire.acceptors[0].epoch().number,
    };
    let expected = vec![
        Completion { id: read, key: "k".into(), result: Ok(read_outcome(&wire, "v")) },
        Completion { id: write, key: "j".into(), result: Ok(wrote) },
    ];
    assert_eq!(done, expected);
}

/// A proposer on node 101, run 1, that holds at most one change.
fn proposer_of_one() -> Proposer {
    let config = ProposerConfig {
        max_requests: 1,
        ..ProposerConfig::new(ProposerId { node: P1, run: 1 }, ids(3), 5)
    };
    Proposer::new(config)
}

fn drain(p: &mut Proposer) -> Vec<(NodeId, Message)> {
    std::iter::from_fn(|| p.poll_transmit()).collect()
}

/// Issue 9, point 6 (c). Rule: a forward refused as `Overloaded` (its sender is told nothing
/// applied) is never run: a copy arriving once there is room gets the same answer again.
#[test]
fn a_forward_refused_as_overloaded_never_runs() {
    let mut p = proposer_of_one();
    let now = std::time::Instant::now();
    p.propose(now, "busy".into(), Change::Read).unwrap();
    drain(&mut p);
    let origin = ProposerId { node: NodeId(50), run: 3 };
    let id = RequestId(7);
    let copy = |n| forward(origin, id, ("k", Change::Add(1)), Duration::from_secs(1), 1, n);
    let refused = vec![
        (NodeId(50), forward_ack(origin, id)),
        (NodeId(50), forward_result(origin, id, Err(PaxosError::Overloaded))),
    ];
    p.handle_message(now, NodeId(50), copy(0)).unwrap();
    assert_eq!(drain(&mut p), refused);

    // The busy change ends (nobody answers it); there is room again.
    while let Some(at) = p.poll_timeout() {
        drain(&mut p);
        p.handle_timeout(at);
    }
    let busy = p.poll_completion().unwrap().result;
    assert_eq!(busy, Err(PaxosError::NoQuorum { maybe_applied: false }));
    assert_eq!(p.pending(), 0);

    p.handle_message(now, NodeId(50), copy(1)).unwrap();
    assert_eq!(drain(&mut p), refused, "the same answer, and no prepare");
    assert_eq!((p.pending(), p.poll_timeout()), (0, None));
}

/// Issue 9, point 6 (d). Rule: a forward names the run of the designated proposer it is for;
/// another run refuses it with `Misdirected` and does not run it (the run it was for may
/// have), and the sender then fails a write with `DesignatedDown` (maybe applied) and runs a
/// read itself.
#[test]
fn a_forward_for_another_run_is_refused_and_the_sender_decides() {
    // The receiving side: a forward for run 2 reaching run 1.
    let mut p = proposer_of_one();
    let now = std::time::Instant::now();
    let origin = ProposerId { node: NodeId(50), run: 3 };
    let id = RequestId(7);
    let stale = forward(origin, id, ("k", Change::Add(1)), Duration::from_secs(1), 2, 0);
    p.handle_message(now, NodeId(50), stale).unwrap();
    let refusal = forward_result(origin, id, Err(PaxosError::Misdirected));
    assert_eq!(drain(&mut p), vec![(NodeId(50), refusal)], "no acknowledgement, no prepare");
    assert_eq!(p.pending(), 0);

    // The sending side: 102 restarts (run 2) before 101's forwards reach it.
    let mut wire = Wire::new(3, 2);
    let (read, write, forwards) = forward_a_read_and_a_write(&mut wire);
    wire.restart_proposer(1, 2, Vec::new());
    for message in forwards {
        wire.deliver_now((P1, P2, message));
    }
    assert_eq!(wire.proposers[1].pending(), 0, "run 2 runs neither");
    wire.deliver_all();
    let expected = vec![
        Completion { id: read, key: "k".into(), result: Ok(read_outcome(&wire, "v")) },
        Completion { id: write, key: "j".into(), result: Err(PaxosError::DesignatedDown) },
    ];
    let mut done = wire.completions(0);
    done.sort_by_key(|c| c.id);
    assert_eq!(done, expected);
    let j = run(&mut wire, 0, "j", Change::Read).result.unwrap();
    assert_eq!(j.after.entry, Some(Entry::new("w")), "the write was not applied");
}

/// Issue 9, point 6 (e). Rule: an owned entry bound to a node names the node's incarnation
/// (`node:<name>.<incarnation>`), so a `ClearIfOwner` for the node's previous life — a clear
/// retried after the node came back — leaves the entry its next life wrote.
#[test]
fn a_clear_for_a_nodes_previous_life_leaves_its_next_lifes_entry() {
    let previous = Holder::Node { name: "c".into(), incarnation: 1 };
    let next = Holder::Node { name: "c".into(), incarnation: 2 };
    assert_eq!(previous.owner(), Owner(b"node:c.1".to_vec()));
    assert_eq!(next.owner(), Owner(b"node:c.2".to_vec()));

    let mut wire = Wire::new(3, 1);
    let entry = Entry::owned("singleton", next.owner());
    assert!(run(&mut wire, 0, "s", Change::Set(entry.clone())).result.is_ok());
    let stale = run(&mut wire, 0, "s", Change::ClearIfOwner(previous.owner())).result.unwrap();
    assert_eq!((stale.applied, stale.after.entry), (false, Some(entry)));
    let clear = run(&mut wire, 0, "s", Change::ClearIfOwner(next.owner())).result.unwrap();
    assert_eq!((clear.applied, clear.after.entry), (true, None));
}
