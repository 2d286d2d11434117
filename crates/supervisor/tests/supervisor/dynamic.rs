//! The dynamic supervisor (Elixir's `DynamicSupervisor`, OTP's simple_one_for_one): children
//! added at run time, known by pid.

use std::time::Duration;

use shoal_process::{ExitReason, Restart};
use shoal_supervisor::{
    ChildCounts, DynamicSupervisorRef, DynamicSupervisorSpec, Intensity, SupervisorError,
};

use crate::support::{
    Journal, Order, crash, dynamic_children, is_intensity_exit, listing, runtime, started,
    terminated, within, worker,
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
        max_children: None,
    };
    let (supervisor, [a, b, c]) = with_three(&runtime, &journal, spec).await;
    let supervisor_exit = runtime.watch(supervisor.pid());

    let reason = ExitReason::custom("a failed");
    assert_eq!(crash(&runtime, a, Order::Stop(reason.clone())).await, reason);
    let a2 = journal.wait_for(5).await[4].pid();
    assert_eq!(crash(&runtime, a2, Order::Stop(reason.clone())).await, reason);
    let exit = within(supervisor_exit).await;
    assert!(is_intensity_exit(&exit), "exited with {exit:?}");
    assert_eq!(
        journal.events()[3..],
        [
            terminated("a", a, reason.clone()),
            started("a", a2),
            terminated("a", a2, reason),
            terminated("c", c, ExitReason::Shutdown),
            terminated("b", b, ExitReason::Shutdown),
        ]
    );
    assert_eq!(runtime.process_count(), baseline);
}

// DynamicSupervisor shutdown: the children are terminated in reverse start order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_terminates_the_children_in_reverse_start_order() {
    let runtime = runtime();
    let baseline = runtime.process_count();
    let journal = Journal::new();
    let (supervisor, [a, b, c]) =
        with_three(&runtime, &journal, DynamicSupervisorSpec::default()).await;

    assert_eq!(within(supervisor.stop()).await, ExitReason::Shutdown);
    assert_eq!(
        journal.events()[3..],
        [
            terminated("c", c, ExitReason::Shutdown),
            terminated("b", b, ExitReason::Shutdown),
            terminated("a", a, ExitReason::Shutdown),
        ]
    );
    assert_eq!(runtime.process_count(), baseline);
}
