//! The dynamic supervisor (Elixir's `DynamicSupervisor`, OTP's simple_one_for_one): children
//! added at run time, known by pid.

use std::sync::Arc;
use std::time::Duration;

use shoal_process::{ExitReason, Restart, Shutdown};
use shoal_supervisor::{
    ChildCounts, DynamicSupervisorRef, DynamicSupervisorSpec, Intensity, SupervisorError,
};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::support::{
    Event, Hang, Journal, Order, Worker, crash, dynamic_children, freeze, is_intensity_exit,
    listing, runtime, started, terminated, within, worker,
};

/// A dynamic supervisor with `spec`, and children a, b, c started under it, with their pids.
async fn with_three(
    runtime: &shoal_process::Runtime,
    journal: &Journal,
    spec: DynamicSupervisorSpec,
) -> (DynamicSupervisorRef, [shoal_process::Pid; 3]) {
    let supervisor = within(DynamicSupervisorRef::start(runtime, spec)).await.expect("it starts");
    let mut pids = Vec::new();
    for id in ["a", "b", "c"] {
        pids.push(within(supervisor.start_child(worker(id, journal))).await.expect("it starts"));
    }
    (supervisor, pids.try_into().expect("three pids"))
}

// DynamicSupervisor.start_child/2: returns the new child's pid; which_children lists the
// running children in start order, count_children counts them.
#[tokio::test]
async fn start_child_returns_the_pids_which_children_lists() {
    let runtime = runtime();
    let journal = Journal::new();
    let (supervisor, [a, b, c]) =
        with_three(&runtime, &journal, DynamicSupervisorSpec::default()).await;

    assert_eq!(journal.events(), [started("a", a), started("b", b), started("c", c)]);
    assert_eq!(
        dynamic_children(&supervisor).await,
        listing(&[("a", Some(a)), ("b", Some(b)), ("c", Some(c))])
    );
    assert_eq!(
        within(supervisor.count_children()).await,
        Ok(ChildCounts { specs: 3, active: 3, supervisors: 0, workers: 3 })
    );
    assert_eq!(within(supervisor.stop()).await, ExitReason::Shutdown);
}

// DynamicSupervisor one_for_one: a crashed permanent child is restarted under a new pid; the
// old pid is gone from which_children, the siblings are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_permanent_child_is_restarted_under_a_new_pid() {
    let runtime = runtime();
    let journal = Journal::new();
    let (supervisor, [a, b, c]) =
        with_three(&runtime, &journal, DynamicSupervisorSpec::default()).await;

    assert_eq!(
        crash(&runtime, b, Order::Panic("b failed")).await,
        ExitReason::Panic("b failed".into())
    );
    let events = journal.wait_for(5).await;
    let b2 = events[4].pid();
    assert_eq!(
        events[3..],
        [terminated("b", b, ExitReason::Panic("b failed".into())), started("b", b2)]
    );
    assert_ne!(b2, b);
    // The restart is the latest start, so b now comes last.
    assert_eq!(
        dynamic_children(&supervisor).await,
        listing(&[("a", Some(a)), ("c", Some(c)), ("b", Some(b2))])
    );
    assert_eq!(runtime.stats().restarts_total, 1, "the runtime's figures count the restart");
    assert_eq!(within(supervisor.stop()).await, ExitReason::Shutdown);
}

// DynamicSupervisor one_for_one: a temporary child is not restarted and is forgotten.
#[tokio::test]
async fn a_temporary_child_is_forgotten_when_it_exits() {
    let runtime = runtime();
    let journal = Journal::new();
    let supervisor =
        within(DynamicSupervisorRef::start(&runtime, DynamicSupervisorSpec::default()))
            .await
            .expect("it starts");
    let t = within(supervisor.start_child(worker("t", &journal).restart(Restart::Temporary)))
        .await
        .expect("it starts");

    let reason = ExitReason::custom("t failed");
    assert_eq!(crash(&runtime, t, Order::Stop(reason.clone())).await, reason);
    assert_eq!(dynamic_children(&supervisor).await, listing(&[]));
    assert_eq!(journal.events().len(), 2, "not restarted: {:?}", journal.events());
    assert_eq!(within(supervisor.stop()).await, ExitReason::Shutdown);
}

// DynamicSupervisor.terminate_child/2: stops the child by pid and forgets it; a pid that is
// not a child is `{:error, :not_found}`.
#[tokio::test]
async fn terminate_child_by_pid() {
    let runtime = runtime();
    let journal = Journal::new();
    let (supervisor, [a, b, c]) =
        with_three(&runtime, &journal, DynamicSupervisorSpec::default()).await;
    let b_exit = runtime.watch(b);

    assert_eq!(within(supervisor.terminate_child(b)).await, Ok(()));
    assert_eq!(within(b_exit).await, ExitReason::Shutdown);
    assert_eq!(dynamic_children(&supervisor).await, listing(&[("a", Some(a)), ("c", Some(c))]));
    assert_eq!(within(supervisor.terminate_child(b)).await, Err(SupervisorError::NoSuchPid(b)));
    assert_eq!(
        within(supervisor.terminate_child(supervisor.pid())).await,
        Err(SupervisorError::NoSuchPid(supervisor.pid()))
    );
    assert_eq!(within(supervisor.stop()).await, ExitReason::Shutdown);
}

// DynamicSupervisor max_children: a start past the maximum is refused (`{:error, :max_children}`)
// and starts nothing; once a child is gone, there is room again.
#[tokio::test]
async fn max_children_refuses_a_start_past_the_maximum() {
    let runtime = runtime();
    let journal = Journal::new();
    let spec = DynamicSupervisorSpec { max_children: Some(2), ..DynamicSupervisorSpec::default() };
    let supervisor = within(DynamicSupervisorRef::start(&runtime, spec)).await.expect("it starts");
    let a = within(supervisor.start_child(worker("a", &journal))).await.expect("a starts");
    let b = within(supervisor.start_child(worker("b", &journal))).await.expect("b starts");

    assert_eq!(
        within(supervisor.start_child(worker("c", &journal))).await,
        Err(SupervisorError::MaxChildren(2))
    );
    assert_eq!(journal.events().len(), 2, "c did not start: {:?}", journal.events());
    assert_eq!(within(supervisor.terminate_child(a)).await, Ok(()));
    let c = within(supervisor.start_child(worker("c", &journal))).await.expect("c starts");
    assert_eq!(dynamic_children(&supervisor).await, listing(&[("b", Some(b)), ("c", Some(c))]));
    assert_eq!(within(supervisor.stop()).await, ExitReason::Shutdown);
}

// DynamicSupervisor restart intensity: past max_restarts within max_seconds it stops its
// children and exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_intensity_it_stops_its_children_and_exits() {
    let runtime = runtime();
    let baseline = runtime.process_count();
    let journal = Journal::new();
    let spec = DynamicSupervisorSpec {
        intensity: Intensity { max_restarts: 1, period: Duration::from_secs(60) },
        ..DynamicSupervisorSpec::default()
    };
    let (supervisor, [a, b, c]) = with_three(&runtime, &journal, spec).await;
    let supervisor_exit = runtime.watch(supervisor.pid());

    let reason = ExitReason::custom("a failed");
    assert_eq!(crash(&runtime, a, Order::Stop(reason.clone())).await, reason);
    let a2 = journal.wait_for(5).await[4].pid();
    assert_eq!(crash(&runtime, a2, Order::Stop(reason.clone())).await, reason);
    let exit = within(supervisor_exit).await;
    assert!(is_intensity_exit(&exit), "exited with {exit:?}");
    let events = journal.events();
    assert_eq!(
        events[3..6],
        [terminated("a", a, reason.clone()), started("a", a2), terminated("a", a2, reason)]
    );
    // The survivors stop together, in no set order.
    assert_eq!(
        sorted(&events[6..]),
        sorted(&[
            terminated("b", b, ExitReason::Shutdown),
            terminated("c", c, ExitReason::Shutdown)
        ])
    );
    assert_eq!(runtime.process_count(), baseline);
}

/// Events in a fixed order, to compare those that happen together.
fn sorted(events: &[Event]) -> Vec<String> {
    let mut events: Vec<String> = events.iter().map(|event| format!("{event:?}")).collect();
    events.sort();
    events
}

// DynamicSupervisor shutdown: every child is told to shut down before any is waited for (as
// OTP's dynamic supervisors do), so children whose `terminate` takes a while all run it at
// once: ten that each wait for a release are all terminating before the first is released.
// The signals go out newest first.
#[tokio::test(start_paused = true)]
async fn stop_terminates_the_children_together() {
    const CHILDREN: usize = 10;
    let runtime = runtime();
    let baseline = runtime.process_count();
    let journal = Journal::new();
    let release = Arc::new(Notify::new());
    let supervisor =
        within(DynamicSupervisorRef::start(&runtime, DynamicSupervisorSpec::default()))
            .await
            .expect("it starts");
    let mut pids = Vec::new();
    for n in 0..CHILDREN {
        let child = Worker::new(&format!("w{n}"), &journal).hanging(Hang::Until(release.clone()));
        pids.push(within(supervisor.start_child(child.child())).await.expect("it starts"));
    }
    let stopping = tokio::spawn({
        let supervisor = supervisor.clone();
        async move { supervisor.stop().await }
    });
    // Before the fix, the second child was told only once the first had exited (5 s later, by
    // its kill): far past the bound.
    let events = journal.wait_for(2 * CHILDREN).await;
    let expected: Vec<Event> = (0..CHILDREN)
        .rev()
        .map(|n| terminated(&format!("w{n}"), pids[n], ExitReason::Shutdown))
        .collect();
    assert_eq!(events[CHILDREN..], expected);
    release.notify_waiters();
    assert_eq!(within(stopping).await.expect("stop returns"), ExitReason::Shutdown);
    assert_eq!(runtime.process_count(), baseline);
}

// DynamicSupervisor shutdown: each child gets its own shutdown time, all counted from the
// moment they were told, so N children that never stop are all killed after one shutdown
// time, not N of them.
#[tokio::test(start_paused = true)]
async fn hung_children_are_killed_after_one_shutdown_time_not_one_each() {
    const CHILDREN: usize = 20;
    let runtime = runtime();
    let baseline = runtime.process_count();
    let journal = Journal::new();
    let grace = Duration::from_secs(1);
    let supervisor =
        within(DynamicSupervisorRef::start(&runtime, DynamicSupervisorSpec::default()))
            .await
            .expect("it starts");
    let mut exits = Vec::new();
    for n in 0..CHILDREN {
        let child = Worker::new(&format!("w{n}"), &journal).hanging(Hang::Forever);
        let child = child.child().shutdown(Shutdown::Timeout(grace));
        let pid = within(supervisor.start_child(child)).await.expect("it starts");
        exits.push(runtime.watch(pid));
    }
    let stopping = Instant::now();
    assert_eq!(within(supervisor.stop()).await, ExitReason::Shutdown);
    let took = stopping.elapsed();
    assert!(took >= grace && took < 2 * grace, "stopping took {took:?}");
    for exited in exits {
        assert_eq!(within(exited).await, ExitReason::Killed);
    }
    assert_eq!(runtime.process_count(), baseline);
}

// A kill takes effect only where the child's handler awaits: a child blocked in its handler
// outlives its kill. The supervisor waits for it at most the kill timeout, reports it
// (StillAlive) and goes on, instead of waiting for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_outlives_its_kill_is_reported_after_the_kill_timeout() {
    let runtime = runtime();
    let journal = Journal::new();
    let spec = DynamicSupervisorSpec {
        kill_timeout: Duration::from_millis(100),
        ..DynamicSupervisorSpec::default()
    };
    let supervisor = within(DynamicSupervisorRef::start(&runtime, spec)).await.expect("it starts");
    let child = worker("frozen", &journal).shutdown(Shutdown::Timeout(Duration::from_millis(50)));
    let frozen = within(supervisor.start_child(child)).await.expect("it starts");
    let other = within(supervisor.start_child(worker("other", &journal))).await.expect("starts");
    let thaw = freeze(&runtime, frozen).await;
    let exited = runtime.watch(frozen);
    assert_eq!(
        within(supervisor.terminate_child(frozen)).await,
        Err(SupervisorError::StillAlive { id: "frozen".to_owned(), pid: frozen })
    );
    assert!(runtime.is_alive(frozen));
    assert_eq!(dynamic_children(&supervisor).await, listing(&[("other", Some(other))]));
    thaw.send(()).expect("the child waits to thaw");
    // Back at an await point, the kill takes effect.
    assert_eq!(within(exited).await, ExitReason::Killed);
    assert_eq!(within(supervisor.stop()).await, ExitReason::Shutdown);
}
