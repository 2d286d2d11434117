//! Restart types (OTP supervisor, child specification `restart`): permanent, transient and
//! temporary children.
//!
//! Tests that check a child was *not* restarted run on the current-thread runtime: there the
//! exiting child queues its exit signal to the supervisor before the test runs again, so the
//! supervisor has handled it before it answers the test's next call.

use shoal_process::{ExitReason, Restart};
use shoal_supervisor::{ChildCounts, Strategy, SupervisorRef, SupervisorSpec};

use crate::support::{
    Journal, Order, Worker, children, crash, listing, running, runtime, started, terminated,
    within, worker,
};

// OTP restart types: a permanent child is always restarted, even after a normal exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_child_is_restarted_after_a_normal_exit() {
    let runtime = runtime();
    let journal = Journal::new();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(worker("p", &journal))
        .child(worker("s", &journal));
    let supervisor = within(SupervisorRef::start(&runtime, spec)).await.expect("it starts");
    let [p, s] = running(&children(&supervisor).await);

    assert_eq!(crash(&runtime, p, Order::Stop(ExitReason::Normal)).await, ExitReason::Normal);
    let events = journal.wait_for(4).await;
    let p2 = events[3].pid();
    assert_eq!(events[2..], [terminated("p", p, ExitReason::Normal), started("p", p2)]);
    assert_ne!(p2, p);
    assert_eq!(children(&supervisor).await, listing(&[("p", Some(p2)), ("s", Some(s))]));
    assert_eq!(within(supervisor.stop()).await, ExitReason::Shutdown);
}

// OTP restart types: a transient child is restarted after an abnormal exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_child_is_restarted_after_an_abnormal_exit() {
    let runtime = runtime();
    let journal = Journal::new();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(worker("t", &journal).restart(Restart::Transient));
    let supervisor = within(SupervisorRef::start(&runtime, spec)).await.expect("it starts");
    let [t] = running(&children(&supervisor).await);

    let reason = ExitReason::custom("t failed");
    assert_eq!(crash(&runtime, t, Order::Stop(reason.clone())).await, reason);
    let events = journal.wait_for(3).await;
    let t2 = events[2].pid();
    assert_eq!(events[1..], [terminated("t", t, reason), started("t", t2)]);
    assert_ne!(t2, t);
    assert_eq!(children(&supervisor).await, listing(&[("t", Some(t2))]));
    assert_eq!(within(supervisor.stop()).await, ExitReason::Shutdown);
}

// OTP restart types: a transient child is not restarted after exiting with `normal` or
// `shutdown`; it stays known to the supervisor, not running.
#[tokio::test]
async fn a_transient_child_is_not_restarted_after_normal_or_shutdown() {
    let runtime = runtime();
    let journal = Journal::new();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(worker("t1", &journal).restart(Restart::Transient))
        .child(worker("t2", &journal).restart(Restart::Transient))
        .child(worker("p", &journal));
    let supervisor = within(SupervisorRef::start(&runtime, spec)).await.expect("it starts");
    let [t1, t2, p] = running(&children(&supervisor).await);

    assert_eq!(crash(&runtime, t1, Order::Stop(ExitReason::Normal)).await, ExitReason::Normal);
    assert_eq!(
        children(&supervisor).await,
        listing(&[("t1", None), ("t2", Some(t2)), ("p", Some(p))])
    );
    assert_eq!(crash(&runtime, t2, Order::Stop(ExitReason::Shutdown)).await, ExitReason::Shutdown);
    assert_eq!(children(&supervisor).await, listing(&[("t1", None), ("t2", None), ("p", Some(p))]));
    assert_eq!(
        within(supervisor.count_children()).await,
        Ok(ChildCounts { specs: 3, active: 1, supervisors: 0, workers: 3 })
    );
    assert_eq!(journal.events().len(), 5, "nothing restarted: {:?}", journal.events());
    assert_eq!(within(supervisor.stop()).await, ExitReason::Shutdown);
}

// OTP restart types: a temporary child is never restarted, whatever its exit reason, and is
// removed from the supervisor's children.
#[tokio::test]
async fn a_temporary_child_is_never_restarted_and_is_forgotten() {
    let runtime = runtime();
    let journal = Journal::new();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(worker("crashes", &journal).restart(Restart::Temporary))
        .child(worker("ends", &journal).restart(Restart::Temporary))
        .child(worker("p", &journal));
    let supervisor = within(SupervisorRef::start(&runtime, spec)).await.expect("it starts");
    let [crashes, ends, p] = running(&children(&supervisor).await);

    assert_eq!(
        crash(&runtime, crashes, Order::Panic("oops")).await,
        ExitReason::Panic("oops".into())
    );
    assert_eq!(children(&supervisor).await, listing(&[("ends", Some(ends)), ("p", Some(p))]));
    assert_eq!(crash(&runtime, ends, Order::Stop(ExitReason::Normal)).await, ExitReason::Normal);
    assert_eq!(children(&supervisor).await, listing(&[("p", Some(p))]));
    assert_eq!(journal.events().len(), 5, "nothing restarted: {:?}", journal.events());
    assert_eq!(within(supervisor.stop()).await, ExitReason::Shutdown);
}

// OTP one_for_all with a temporary sibling: a temporary child terminated because another
// child failed is not restarted, and is removed from the children.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_all_forgets_a_temporary_sibling_it_stopped() {
    let runtime = runtime();
    let journal = Journal::new();
    let spec = SupervisorSpec::new(Strategy::OneForAll)
        .child(worker("a", &journal))
        .child(Worker::new("t", &journal).child().restart(Restart::Temporary))
        .child(worker("c", &journal));
    let supervisor = within(SupervisorRef::start(&runtime, spec)).await.expect("it starts");
    let [a, t, c] = running(&children(&supervisor).await);

    let reason = ExitReason::custom("a failed");
    assert_eq!(crash(&runtime, a, Order::Stop(reason.clone())).await, reason);
    let events = journal.wait_for(8).await;
    let [a2, c2] = [events[6].pid(), events[7].pid()];
    assert_eq!(
        events[3..],
        [
            terminated("a", a, reason),
            terminated("c", c, ExitReason::Shutdown),
            terminated("t", t, ExitReason::Shutdown),
            started("a", a2),
            started("c", c2),
        ]
    );
    assert!(!runtime.is_alive(t));
    assert_eq!(children(&supervisor).await, listing(&[("a", Some(a2)), ("c", Some(c2))]));
    assert_eq!(within(supervisor.stop()).await, ExitReason::Shutdown);
}
