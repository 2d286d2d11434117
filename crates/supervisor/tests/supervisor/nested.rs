//! Supervision trees (OTP design principles, "Supervision Trees"): supervisors supervise
//! supervisors.

use std::time::Duration;

use shoal_process::{ExitReason, Pid, Restart};
use shoal_supervisor::{Child, Intensity, Strategy, SupervisorRef, SupervisorSpec};

use crate::support::{
    Journal, Order, children, crash, is_intensity_exit, listing, running, runtime, started,
    terminated, within, worker,
};

/// An outer one_for_one supervisor over a worker "w" and an inner one_for_one supervisor
/// (restart budget one) over workers x and y.
fn tree(journal: &Journal) -> SupervisorSpec {
    let inner = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(Intensity { max_restarts: 1, period: Duration::from_secs(60) })
        .child(worker("x", journal))
        .child(worker("y", journal));
    SupervisorSpec::new(Strategy::OneForOne)
        .child(worker("w", journal))
        .child(Child::supervisor("inner", inner))
}

fn inner_ref(runtime: &shoal_process::Runtime, pid: Pid) -> SupervisorRef {
    SupervisorRef::from_pid(runtime, pid).expect("the inner child is a supervisor")
}

// OTP supervision tree: a worker's crash is handled by its own supervisor; when that
// supervisor goes past its restart intensity it exits, and its supervisor restarts it, which
// starts fresh children.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inner_supervisor_restarts_its_child_and_is_restarted_past_its_intensity() {
    let runtime = runtime();
    let journal = Journal::new();
    let outer = within(SupervisorRef::start(&runtime, tree(&journal))).await.expect("it starts");
    let [w, inner] = running(&children(&outer).await);
    let [x, y] = running(&children(&inner_ref(&runtime, inner)).await);

    // One crash: the inner supervisor restarts x, nothing else changes.
    let reason = ExitReason::custom("x failed");
    assert_eq!(crash(&runtime, x, Order::Stop(reason.clone())).await, reason);
    let events = journal.wait_for(5).await;
    let x2 = events[4].pid();
    assert_eq!(events[3..], [terminated("x", x, reason.clone()), started("x", x2)]);
    assert_eq!(
        children(&inner_ref(&runtime, inner)).await,
        listing(&[("x", Some(x2)), ("y", Some(y))])
    );
    assert_eq!(children(&outer).await, listing(&[("w", Some(w)), ("inner", Some(inner))]));

    // A second crash is past the inner budget: it stops y and exits; the outer restarts it.
    let inner_exit = runtime.watch(inner);
    assert_eq!(crash(&runtime, x2, Order::Stop(reason.clone())).await, reason);
    let exit = within(inner_exit).await;
    assert!(is_intensity_exit(&exit), "the inner supervisor exited with {exit:?}");
    let events = journal.wait_for(9).await;
    let [x3, y3] = [events[7].pid(), events[8].pid()];
    assert_eq!(
        events[5..],
        [
            terminated("x", x2, reason),
            terminated("y", y, ExitReason::Shutdown),
            started("x", x3),
            started("y", y3),
        ]
    );
    let [w_now, inner2] = running(&children(&outer).await);
    assert_eq!(w_now, w);
    assert_ne!(inner2, inner);
    assert_eq!(
        children(&inner_ref(&runtime, inner2)).await,
        listing(&[("x", Some(x3)), ("y", Some(y3))])
    );
    assert_eq!(within(outer.stop()).await, ExitReason::Shutdown);
}

// OTP supervision tree shutdown: stopping the top supervisor stops every process of the tree,
// each supervisor's children in reverse start order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_outer_supervisor_stops_the_whole_tree() {
    let runtime = runtime();
    let baseline = runtime.process_count();
    let journal = Journal::new();
    let outer = within(SupervisorRef::start(&runtime, tree(&journal))).await.expect("it starts");
    let [w, inner] = running(&children(&outer).await);
    let [x, y] = running(&children(&inner_ref(&runtime, inner)).await);
    assert_eq!(runtime.process_count(), baseline + 5);
    let inner_exit = runtime.watch(inner);

    assert_eq!(within(outer.stop()).await, ExitReason::Shutdown);
    assert_eq!(within(inner_exit).await, ExitReason::Shutdown);
    assert_eq!(
        journal.events()[3..],
        [
            terminated("y", y, ExitReason::Shutdown),
            terminated("x", x, ExitReason::Shutdown),
            terminated("w", w, ExitReason::Shutdown),
        ]
    );
    assert_eq!(runtime.process_count(), baseline);
}

// OTP: a supervisor that reaches its restart intensity exits with `shutdown` (the detail goes
// to the log), a normal reason: its own supervisor does not restart it when it is transient,
// and carries on with its other children. (On a current-thread runtime, so that the inner
// supervisor's exit signal is queued at the outer one before the test asks it.)
#[tokio::test]
async fn a_transient_supervisor_that_gives_up_is_not_restarted() {
    let runtime = runtime();
    let journal = Journal::new();
    let inner = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(Intensity { max_restarts: 0, period: Duration::from_secs(60) })
        .child(worker("x", &journal));
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(Intensity { max_restarts: 0, period: Duration::from_secs(60) })
        .child(worker("w", &journal))
        .child(Child::supervisor("inner", inner).restart(Restart::Transient));
    let outer = within(SupervisorRef::start(&runtime, spec)).await.expect("it starts");
    let [w, inner] = running(&children(&outer).await);
    let [x] = running(&children(&inner_ref(&runtime, inner)).await);
    let inner_exit = runtime.watch(inner);

    let reason = ExitReason::custom("x failed");
    assert_eq!(crash(&runtime, x, Order::Stop(reason.clone())).await, reason);
    assert_eq!(within(inner_exit).await, ExitReason::Shutdown);
    // Had the outer supervisor counted it as a failure, its own budget of none would be spent.
    assert_eq!(children(&outer).await, listing(&[("w", Some(w)), ("inner", None)]));
    assert!(runtime.is_alive(outer.pid()));
    assert_eq!(within(outer.stop()).await, ExitReason::Shutdown);
}
