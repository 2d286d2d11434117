//! Restart strategies (OTP design principles, "Supervisor Behaviour", Restart Strategy): which
//! siblings one child's failure takes down, in which order they stop and start again.

use shoal_process::ExitReason;
use shoal_supervisor::{Strategy, SupervisorRef, SupervisorSpec};

use crate::support::{
    Journal, Order, children, crash, listing, running, runtime, started, terminated, within, worker,
};

/// A one_for_one supervisor over a, b, c; b is crashed by `order`, exiting with `reason`.
async fn one_for_one_restarts_only(order: Order, reason: ExitReason) {
    let runtime = runtime();
    let journal = Journal::new();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(worker("a", &journal))
        .child(worker("b", &journal))
        .child(worker("c", &journal));
    let supervisor = within(SupervisorRef::start(&runtime, spec)).await.expect("it starts");
    let [a, b, c] = running(&children(&supervisor).await);

    assert_eq!(crash(&runtime, b, order).await, reason);
    let events = journal.wait_for(5).await;
    let b2 = events[4].pid();
    assert_eq!(events[3..], [terminated("b", b, reason), started("b", b2)]);
    assert_ne!(b2, b);
    assert!(!runtime.is_alive(b));
    assert_eq!(
        children(&supervisor).await,
        listing(&[("a", Some(a)), ("b", Some(b2)), ("c", Some(c))])
    );
    assert_eq!(within(supervisor.stop()).await, ExitReason::Shutdown);
}

// OTP one_for_one: a child that panics is restarted (under a new pid); its siblings are not
// affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_one_restarts_only_a_child_that_panicked() {
    one_for_one_restarts_only(Order::Panic("b failed"), ExitReason::Panic("b failed".into())).await;
}

// OTP one_for_one: a child that stops with its own abnormal reason is restarted (under a new
// pid); its siblings are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_one_restarts_only_a_child_that_stopped_with_a_custom_reason() {
    let reason = ExitReason::custom("b gave up");
    one_for_one_restarts_only(Order::Stop(reason.clone()), reason).await;
}

// OTP one_for_all: when a child terminates, all other children are terminated (in reverse
// start order), then all of them are restarted (in start order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_all_stops_all_in_reverse_and_restarts_all_in_order() {
    let runtime = runtime();
    let journal = Journal::new();
    let spec = SupervisorSpec::new(Strategy::OneForAll)
        .child(worker("a", &journal))
        .child(worker("b", &journal))
        .child(worker("c", &journal));
    let supervisor = within(SupervisorRef::start(&runtime, spec)).await.expect("it starts");
    let [a, b, c] = running(&children(&supervisor).await);

    let reason = ExitReason::custom("b failed");
    assert_eq!(crash(&runtime, b, Order::Stop(reason.clone())).await, reason);
    let events = journal.wait_for(9).await;
    let [a2, b2, c2] = [events[6].pid(), events[7].pid(), events[8].pid()];
    assert_eq!(
        events[3..],
        [
            terminated("b", b, reason),
            terminated("c", c, ExitReason::Shutdown),
            terminated("a", a, ExitReason::Shutdown),
            started("a", a2),
            started("b", b2),
            started("c", c2),
        ]
    );
    for (old, new) in [(a, a2), (b, b2), (c, c2)] {
        assert_ne!(old, new);
        assert!(!runtime.is_alive(old));
    }
    assert_eq!(
        children(&supervisor).await,
        listing(&[("a", Some(a2)), ("b", Some(b2)), ("c", Some(c2))])
    );
    // The runtime's figures count each child started again, the siblings' too.
    assert_eq!(runtime.stats().restarts_total, 3);
    assert_eq!(within(supervisor.stop()).await, ExitReason::Shutdown);
}

// OTP rest_for_one: when a child terminates, the children started after it are terminated (in
// reverse start order), then it and they are restarted (in start order); the children
// started before it keep running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_for_one_restarts_the_failed_child_and_those_started_after_it() {
    let runtime = runtime();
    let journal = Journal::new();
    let spec = SupervisorSpec::new(Strategy::RestForOne)
        .child(worker("a", &journal))
        .child(worker("b", &journal))
        .child(worker("c", &journal))
        .child(worker("d", &journal));
    let supervisor = within(SupervisorRef::start(&runtime, spec)).await.expect("it starts");
    let [a, b, c, d] = running(&children(&supervisor).await);

    assert_eq!(
        crash(&runtime, b, Order::Panic("b failed")).await,
        ExitReason::Panic("b failed".into())
    );
    let events = journal.wait_for(10).await;
    let [b2, c2, d2] = [events[7].pid(), events[8].pid(), events[9].pid()];
    assert_eq!(
        events[4..],
        [
            terminated("b", b, ExitReason::Panic("b failed".into())),
            terminated("d", d, ExitReason::Shutdown),
            terminated("c", c, ExitReason::Shutdown),
            started("b", b2),
            started("c", c2),
            started("d", d2),
        ]
    );
    assert!(runtime.is_alive(a));
    for (old, new) in [(b, b2), (c, c2), (d, d2)] {
        assert_ne!(old, new);
        assert!(!runtime.is_alive(old));
    }
    assert_eq!(
        children(&supervisor).await,
        listing(&[("a", Some(a)), ("b", Some(b2)), ("c", Some(c2)), ("d", Some(d2))])
    );
    assert_eq!(within(supervisor.stop()).await, ExitReason::Shutdown);
}
