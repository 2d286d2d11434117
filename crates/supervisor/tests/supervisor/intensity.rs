//! Restart intensity (OTP supervisor, "Restart Intensity and Period"): more than
//! `max_restarts` restarts within `period` make the supervisor terminate all its children and
//! then itself. No assertion here depends on time: every period is far longer than the test.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use shoal_process::ExitReason;
use shoal_supervisor::{Child, Intensity, Strategy, SupervisorRef, SupervisorSpec};

use crate::support::{
    Journal, Order, Worker, children, crash, is_intensity_exit, running, runtime, started,
    terminated, within, worker,
};

fn budget(max_restarts: u32) -> Intensity {
    Intensity { max_restarts, period: Duration::from_secs(60) }
}

// OTP restart intensity: with MaxR = 2, the third restart within the period makes the
// supervisor stop its other children and exit, with a reason that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_restart_past_the_intensity_stops_the_children_and_the_supervisor() {
    let runtime = runtime();
    let baseline = runtime.process_count();
    let journal = Journal::new();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(budget(2))
        .child(worker("a", &journal))
        .child(worker("b", &journal));
    let supervisor = within(SupervisorRef::start(&runtime, spec)).await.expect("it starts");
    let supervisor_exit = runtime.watch(supervisor.pid());
    let [mut a, b] = running(&children(&supervisor).await);

    let reason = ExitReason::custom("a failed");
    for restarts in 1..=2 {
        assert_eq!(crash(&runtime, a, Order::Stop(reason.clone())).await, reason);
        let events = journal.wait_for(2 + 2 * restarts).await;
        let a2 = events[1 + 2 * restarts].pid();
        assert_eq!(events[2 * restarts..], [terminated("a", a, reason.clone()), started("a", a2)]);
        a = a2;
    }
    let b_exit = runtime.watch(b);
    assert_eq!(crash(&runtime, a, Order::Stop(reason.clone())).await, reason);
    let exit = within(supervisor_exit).await;
    assert!(is_intensity_exit(&exit), "exited with {exit:?}");
    assert_eq!(within(b_exit).await, ExitReason::Shutdown);
    assert_eq!(
        journal.events()[6..],
        [terminated("a", a, reason), terminated("b", b, ExitReason::Shutdown)]
    );
    assert_eq!(runtime.process_count(), baseline);
}

// OTP restart intensity: with MaxR = 0, the first failure makes the supervisor exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_restarts_allowed_the_first_failure_ends_the_supervisor() {
    let runtime = runtime();
    let baseline = runtime.process_count();
    let journal = Journal::new();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(budget(0))
        .child(worker("a", &journal))
        .child(worker("b", &journal));
    let supervisor = within(SupervisorRef::start(&runtime, spec)).await.expect("it starts");
    let supervisor_exit = runtime.watch(supervisor.pid());
    let [a, b] = running(&children(&supervisor).await);

    assert_eq!(
        crash(&runtime, a, Order::Panic("a failed")).await,
        ExitReason::Panic("a failed".into())
    );
    let exit = within(supervisor_exit).await;
    assert!(is_intensity_exit(&exit), "exited with {exit:?}");
    assert_eq!(
        journal.events()[2..],
        [
            terminated("a", a, ExitReason::Panic("a failed".into())),
            terminated("b", b, ExitReason::Shutdown)
        ]
    );
    assert_eq!(runtime.process_count(), baseline);
}

// OTP restart intensity: a restart attempt that fails counts as another restart, so a child
// that cannot be started again exhausts the budget instead of being retried forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_cannot_restart_exhausts_the_budget() {
    let runtime = runtime();
    let baseline = runtime.process_count();
    let journal = Journal::new();
    let starts = Arc::new(AtomicUsize::new(0));
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(budget(2))
        .child(worker("a", &journal))
        .child(Worker::new("flaky", &journal).starts_allowed(&starts, 1).child());
    let supervisor = within(SupervisorRef::start(&runtime, spec)).await.expect("it starts");
    let supervisor_exit = runtime.watch(supervisor.pid());
    let [a, flaky] = running(&children(&supervisor).await);

    let reason = ExitReason::custom("flaky failed");
    assert_eq!(crash(&runtime, flaky, Order::Stop(reason.clone())).await, reason);
    let exit = within(supervisor_exit).await;
    assert!(is_intensity_exit(&exit), "exited with {exit:?}");
    // The first start, then two restart attempts: the failure and the first failed attempt
    // are within the budget of two, the second failed attempt goes past it.
    assert_eq!(starts.load(Ordering::SeqCst), 3);
    assert_eq!(
        journal.events(),
        [
            started("a", a),
            started("flaky", flaky),
            terminated("flaky", flaky, reason),
            terminated("a", a, ExitReason::Shutdown),
        ]
    );
    assert_eq!(runtime.process_count(), baseline);
}

// OTP restart intensity: a restart whose start crashes (the child's builder panics) is a
// failed restart and counts toward the intensity like one whose init fails; the supervisor
// then gives up in order (its other children stopped, exit `shutdown`) instead of being taken
// down by the panic with its children left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_whose_builder_panics_counts_toward_the_intensity() {
    let runtime = runtime();
    let baseline = runtime.process_count();
    let journal = Journal::new();
    let builds = Arc::new(AtomicUsize::new(0));
    let fragile = {
        let (journal, builds) = (journal.clone(), builds.clone());
        Child::new("fragile", move || {
            if builds.fetch_add(1, Ordering::SeqCst) > 0 {
                panic!("the configuration is gone");
            }
            Worker::new("fragile", &journal)
        })
    };
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(budget(2))
        .child(worker("a", &journal))
        .child(fragile);
    let supervisor = within(SupervisorRef::start(&runtime, spec)).await.expect("it starts");
    let supervisor_exit = runtime.watch(supervisor.pid());
    let [a, fragile] = running(&children(&supervisor).await);

    let reason = ExitReason::custom("fragile failed");
    assert_eq!(crash(&runtime, fragile, Order::Stop(reason.clone())).await, reason);
    let exit = within(supervisor_exit).await;
    assert!(is_intensity_exit(&exit), "exited with {exit:?}");
    // The first build, then two restart attempts: the failure and the first failed attempt
    // are within the budget of two, the second failed attempt goes past it.
    assert_eq!(builds.load(Ordering::SeqCst), 3);
    assert_eq!(
        journal.events(),
        [
            started("a", a),
            started("fragile", fragile),
            terminated("fragile", fragile, reason),
            terminated("a", a, ExitReason::Shutdown),
        ]
    );
    assert_eq!(runtime.process_count(), baseline);
}
