//! Rules of the rejoin (the crate docs, "Losing state") that the mutants showed no other test
//! pinned: each test here kills a mutant that survived every other suite, or was caught only
//! by rare schedules (see `mutants.rs`), and names the rule it checks.

use shoal_paxos::core::{NodeId, Storage};
use shoal_paxos::{Change, Entry};

use super::acceptor::value;
use super::regressions::{held, read_through, run};
use super::wire::Wire;

const A1: NodeId = NodeId(1);

/// Rule: incarnations never repeat, in a set of five too — a rejoin carries the fences of the
/// acceptors it copies from, not only the incarnations of those that answer it.
///
/// Acceptor 1 rejoins once (life 1, fenced at 2–5). Then 2, 3, 4 and 5 lose their state and
/// rejoin one after another while 1 is cut off: each copies from the three other voters
/// (`n - majority + 1` of the four others), never from 1, so 1's life reaches it only in the
/// fences it copies. When 1 loses its state again, its new life is above 1.
#[test]
fn fences_outlive_a_rolling_restart_of_the_others_in_a_set_of_five() {
    let mut wire = Wire::new(5, 0);
    let first = wire.lose_state_and_rejoin(0);
    wire.down = [A1].into();
    for a in 1..5 {
        wire.lose_state_and_rejoin(a);
        let fence = wire.acceptors[a].state().meta().fences.get(&A1).copied();
        assert_eq!(fence, Some(first), "acceptor {} knows 1's life", a + 1);
    }
    wire.down.clear();
    let second = wire.lose_state_and_rejoin(0);
    assert!(second > first, "1's life repeats: {first} -> {second}");
}

/// Rule: a rejoin copies only from voting acceptors — the pages of one that is itself
/// rejoining are empty, and counting it as one of the `n - majority + 1` would leave out a
/// voter that holds a chosen value.
///
/// A value chosen on {1,2,5} of five (3 and 4 cut off); 1 and 2 lose their state at once.
/// 1's fences are answered first by 2 (rejoining), then by 3 and 4 (voting, without the
/// value), and last by 5: 1 must wait for 5. Both rejoin with the value, and a read through
/// {1,2,3} returns it.
#[test]
fn a_rejoin_copies_no_page_of_an_acceptor_without_state() {
    let mut wire = Wire::new(5, 1);
    wire.down = [NodeId(3), NodeId(4)].into();
    let write = run(&mut wire, 0, "k", Change::Set(Entry::new("v")));
    assert!(write.result.is_ok(), "{write:?}");
    wire.down.clear();

    wire.lose_state(0);
    wire.lose_state(1);
    wire.settle();
    assert_eq!((held(&wire, 0, "k"), held(&wire, 1, "k")), (Some(value("v")), Some(value("v"))));
    let down = [NodeId(4), NodeId(5)];
    assert_eq!(read_through(&mut wire, 0, "k", &down), Some(Entry::new("v")));
}
