//! Shutdown (OTP supervisor, child specification `shutdown`, and "Stopping"): children stop in
//! reverse start order, each asked with `shutdown` and given its time, then killed; a
//! supervisor stops when ordered to, or when its parent exits.

use std::sync::Arc;
use std::time::Duration;

use shoal_process::{ExitReason, Shutdown, SpawnOptions};
use shoal_supervisor::{Strategy, SupervisorError, SupervisorRef, SupervisorSpec};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::support::{
    Hang, Journal, Order, Worker, children, crash, freeze, listing, running, runtime, started,
    terminated, within, worker,
};

/// A one_for_one supervisor over a, b, c, with their pids.
async fn three_workers(
    runtime: &shoal_process::Runtime,
    journal: &Journal,
    options: SpawnOptions,
) -> (SupervisorRef, [shoal_process::Pid; 3]) {
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(worker("a", journal))
        .child(worker("b", journal))
        .child(worker("c", journal));
    let supervisor =
        within(SupervisorRef::start_with(runtime, spec, options)).await.expect("it starts");
    let pids = running(&children(&supervisor).await);
    (supervisor, pids)
}

// OTP supervisor shutdown: the children are terminated in reverse start order, then the
// supervisor exits with `shutdown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_terminates_the_children_in_reverse_start_order() {
    let runtime = runtime();
    let baseline = runtime.process_count();
    let journal = Journal::new();
    let (supervisor, [a, b, c]) = three_workers(&runtime, &journal, SpawnOptions::new()).await;

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

// OTP shutdown => Timeout: a child that does not exit within its shutdown time after the
// `shutdown` exit signal is killed (its exit reason is `killed`); the others stop as usual.
#[tokio::test(start_paused = true)]
async fn a_child_that_does_not_stop_in_time_is_killed() {
    let runtime = runtime();
    let journal = Journal::new();
    let grace = Duration::from_millis(100);
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(worker("a", &journal))
        .child(
            Worker::new("stuck", &journal)
                .hanging(Hang::Forever)
                .child()
                .shutdown(Shutdown::Timeout(grace)),
        )
        .child(worker("c", &journal));
    let supervisor = within(SupervisorRef::start(&runtime, spec)).await.expect("it starts");
    let [a, stuck, c] = running(&children(&supervisor).await);
    let stuck_exit = runtime.watch(stuck);

    let stopping = Instant::now();
    assert_eq!(within(supervisor.stop()).await, ExitReason::Shutdown);
    assert!(stopping.elapsed() >= grace, "killed after {:?}", stopping.elapsed());
    assert_eq!(within(stuck_exit).await, ExitReason::Killed);
    assert_eq!(
        journal.events()[3..],
        [
            terminated("c", c, ExitReason::Shutdown),
            terminated("stuck", stuck, ExitReason::Shutdown),
            terminated("a", a, ExitReason::Shutdown),
        ]
    );
}

// OTP shutdown => brutal_kill: the child is killed at once; it gets no chance to run its
// `terminate`, and its exit reason is `killed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brutal_kill_child_is_killed_without_terminating() {
    let runtime = runtime();
    let journal = Journal::new();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(worker("a", &journal))
        .child(worker("brutal", &journal).shutdown(Shutdown::BrutalKill));
    let supervisor = within(SupervisorRef::start(&runtime, spec)).await.expect("it starts");
    let [a, brutal] = running(&children(&supervisor).await);
    let brutal_exit = runtime.watch(brutal);

    assert_eq!(within(supervisor.stop()).await, ExitReason::Shutdown);
    assert_eq!(within(brutal_exit).await, ExitReason::Killed);
    assert_eq!(
        journal.events(),
        [started("a", a), started("brutal", brutal), terminated("a", a, ExitReason::Shutdown)]
    );
}

// OTP shutdown => infinity: the supervisor waits for the child to exit however long it
// takes, and never kills it.
#[tokio::test(start_paused = true)]
async fn an_infinity_child_is_waited_for() {
    let runtime = runtime();
    let journal = Journal::new();
    let release = Arc::new(Notify::new());
    let spec = SupervisorSpec::new(Strategy::OneForOne).child(
        Worker::new("slow", &journal)
            .hanging(Hang::Until(release.clone()))
            .child()
            .shutdown(Shutdown::Infinity),
    );
    let supervisor = within(SupervisorRef::start(&runtime, spec)).await.expect("it starts");
    let [slow] = running(&children(&supervisor).await);
    let slow_exit = runtime.watch(slow);

    let stopping = tokio::spawn({
        let supervisor = supervisor.clone();
        async move { supervisor.stop().await }
    });
    journal.wait_for(2).await;
    // An hour of (paused, so free) time: far past any default timeout.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(runtime.is_alive(slow));
    assert!(runtime.is_alive(supervisor.pid()));
    assert!(!stopping.is_finished());

    release.notify_one();
    assert_eq!(within(stopping).await.expect("the stop task ends"), ExitReason::Shutdown);
    assert_eq!(within(slow_exit).await, ExitReason::Shutdown);
}

// OTP: a supervisor is linked to its parent and terminates (stopping its children first) when
// the parent exits, with the parent's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_stops_with_its_children_when_its_parent_fails() {
    let runtime = runtime();
    let baseline = runtime.process_count();
    let journal = Journal::new();
    let parent = within(runtime.start(Worker::new("parent", &journal))).await.expect("it starts");
    let (supervisor, [a, b, c]) =
        three_workers(&runtime, &journal, SpawnOptions::new().link(parent.pid())).await;
    let supervisor_exit = runtime.watch(supervisor.pid());

    let reason = ExitReason::custom("parent failed");
    assert_eq!(crash(&runtime, parent.pid(), Order::Stop(reason.clone())).await, reason);
    assert_eq!(within(supervisor_exit).await, reason);
    assert_eq!(
        journal.events()[5..],
        [
            terminated("c", c, ExitReason::Shutdown),
            terminated("b", b, ExitReason::Shutdown),
            terminated("a", a, ExitReason::Shutdown),
        ]
    );
    assert_eq!(runtime.process_count(), baseline);
}

// OTP: `exit(Supervisor, shutdown)` stops a top-level supervisor, children first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_signal_stops_a_top_level_supervisor() {
    let runtime = runtime();
    let baseline = runtime.process_count();
    let journal = Journal::new();
    let (supervisor, [a, b, c]) = three_workers(&runtime, &journal, SpawnOptions::new()).await;
    let supervisor_exit = runtime.watch(supervisor.pid());

    runtime.exit(supervisor.pid(), ExitReason::Shutdown);
    assert_eq!(within(supervisor_exit).await, ExitReason::Shutdown);
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

// A kill takes effect only where the child's handler awaits: terminate_child waits for a
// child that outlives its kill at most the kill timeout, then reports it (StillAlive) and
// forgets it as stopped; the child can be restarted, and the blocked one ends, killed, once
// it reaches an await point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_child_reports_a_child_that_outlives_its_kill() {
    let runtime = runtime();
    let journal = Journal::new();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .kill_timeout(Duration::from_millis(100))
        .child(worker("a", &journal).shutdown(Shutdown::BrutalKill));
    let supervisor = within(SupervisorRef::start(&runtime, spec)).await.expect("it starts");
    let [a] = running(&children(&supervisor).await);
    let thaw = freeze(&runtime, a).await;
    let exited = runtime.watch(a);
    assert_eq!(
        within(supervisor.terminate_child("a")).await,
        Err(SupervisorError::StillAlive { id: "a".to_owned(), pid: a })
    );
    assert_eq!(children(&supervisor).await, listing(&[("a", None)]));
    let a2 = within(supervisor.restart_child("a")).await.expect("it restarts");
    drop(thaw);
    assert_eq!(within(exited).await, ExitReason::Killed);
    assert_eq!(children(&supervisor).await, listing(&[("a", Some(a2))]));
    assert_eq!(within(supervisor.stop()).await, ExitReason::Shutdown);
}
