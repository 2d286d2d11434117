//! Managing children at run time (OTP `supervisor:start_child/2`, `terminate_child/2`,
//! `restart_child/2`, `delete_child/2`, `which_children/1`, `count_children/1`), and the
//! start-up checks on a supervisor's spec.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use shoal_process::{ChildSpec, ExitReason, Restart, Runtime, Shutdown, SpawnError, StartError};
use shoal_supervisor::{
    Child, ChildCounts, ChildInfo, ChildKind, DynamicSupervisorRef, DynamicSupervisorSpec,
    Strategy, SupervisorError, SupervisorRef, SupervisorSpec,
};

use crate::support::{
    Journal, Worker, children, init_refused, listing, running, runtime, within, worker,
};

/// A one_for_one supervisor over plain workers with these ids.
async fn one_for_one(runtime: &Runtime, journal: &Journal, ids: &[&str]) -> SupervisorRef {
    let spec = ids
        .iter()
        .fold(SupervisorSpec::new(Strategy::OneForOne), |spec, id| spec.child(worker(id, journal)));
    within(SupervisorRef::start(runtime, spec)).await.expect("it starts")
}

// OTP start_child/2: the new child is started and added last; an id in use is refused with
// `already_started` (running) or `already_present` (known, not running), and nothing starts.
#[tokio::test]
async fn start_child_adds_last_and_refuses_an_id_in_use() {
    let runtime = runtime();
    let journal = Journal::new();
    let supervisor = one_for_one(&runtime, &journal, &["a"]).await;
    let [a] = running(&children(&supervisor).await);

    let b = within(supervisor.start_child(worker("b", &journal))).await.expect("b starts");
    assert_eq!(children(&supervisor).await, listing(&[("a", Some(a)), ("b", Some(b))]));
    assert_eq!(
        within(supervisor.start_child(worker("a", &journal))).await,
        Err(SupervisorError::AlreadyStarted { id: "a".into(), pid: a })
    );
    assert_eq!(within(supervisor.terminate_child("a")).await, Ok(()));
    assert_eq!(
        within(supervisor.start_child(worker("a", &journal))).await,
        Err(SupervisorError::AlreadyPresent("a".into()))
    );
    assert_eq!(children(&supervisor).await, listing(&[("a", None), ("b", Some(b))]));
    assert_eq!(journal.events().len(), 3, "only a and b started: {:?}", journal.events());
    assert_eq!(within(supervisor.stop()).await, ExitReason::Shutdown);
}

// OTP terminate_child/2, restart_child/2, delete_child/2: terminate keeps the child's spec
// (and is a no-op on a stopped child); restart starts it again in its place, refusing one
// that runs; delete forgets a stopped child, refusing one that runs; an unknown id is
// `not_found` everywhere.
#[tokio::test]
async fn terminate_restart_and_delete_child() {
    let runtime = runtime();
    let journal = Journal::new();
    let supervisor = one_for_one(&runtime, &journal, &["a", "b"]).await;
    let [a, b] = running(&children(&supervisor).await);
    let not_found = || SupervisorError::NotFound("nope".into());

    assert_eq!(within(supervisor.terminate_child("nope")).await, Err(not_found()));
    assert_eq!(within(supervisor.restart_child("nope")).await, Err(not_found()));
    assert_eq!(within(supervisor.delete_child("nope")).await, Err(not_found()));
    assert_eq!(
        within(supervisor.restart_child("a")).await,
        Err(SupervisorError::AlreadyStarted { id: "a".into(), pid: a })
    );
    assert_eq!(
        within(supervisor.delete_child("a")).await,
        Err(SupervisorError::Running("a".into()))
    );

    let a_exit = runtime.watch(a);
    assert_eq!(within(supervisor.terminate_child("a")).await, Ok(()));
    assert_eq!(within(a_exit).await, ExitReason::Shutdown);
    assert_eq!(children(&supervisor).await, listing(&[("a", None), ("b", Some(b))]));
    assert_eq!(within(supervisor.terminate_child("a")).await, Ok(()));

    let a2 = within(supervisor.restart_child("a")).await.expect("a restarts");
    assert_ne!(a2, a);
    assert_eq!(children(&supervisor).await, listing(&[("a", Some(a2)), ("b", Some(b))]));

    assert_eq!(within(supervisor.terminate_child("a")).await, Ok(()));
    assert_eq!(within(supervisor.delete_child("a")).await, Ok(()));
    assert_eq!(children(&supervisor).await, listing(&[("b", Some(b))]));
    assert_eq!(
        within(supervisor.restart_child("a")).await,
        Err(SupervisorError::NotFound("a".into()))
    );
    assert_eq!(within(supervisor.stop()).await, ExitReason::Shutdown);
}

// OTP terminate_child/2 on a temporary child: its spec is deleted with it.
#[tokio::test]
async fn terminating_a_temporary_child_forgets_it() {
    let runtime = runtime();
    let journal = Journal::new();
    let supervisor = one_for_one(&runtime, &journal, &["a"]).await;
    let [a] = running(&children(&supervisor).await);
    let t = within(supervisor.start_child(worker("t", &journal).restart(Restart::Temporary)))
        .await
        .expect("t starts");
    assert_eq!(children(&supervisor).await, listing(&[("a", Some(a)), ("t", Some(t))]));

    assert_eq!(within(supervisor.terminate_child("t")).await, Ok(()));
    assert_eq!(children(&supervisor).await, listing(&[("a", Some(a))]));
    assert_eq!(
        within(supervisor.restart_child("t")).await,
        Err(SupervisorError::NotFound("t".into()))
    );
    assert_eq!(within(supervisor.stop()).await, ExitReason::Shutdown);
}

// OTP start_child/2 and restart_child/2 when the child's init fails: `{error, Reason}`; a new
// child is not added, a known one stays known and not running.
#[tokio::test]
async fn a_child_whose_init_fails_is_not_added() {
    let runtime = runtime();
    let journal = Journal::new();
    let supervisor = one_for_one(&runtime, &journal, &["a"]).await;
    let [a] = running(&children(&supervisor).await);
    let processes = runtime.process_count();

    let never = Worker::new("never", &journal).starts_allowed(&Arc::new(AtomicUsize::new(0)), 0);
    assert_eq!(
        within(supervisor.start_child(never.child())).await,
        Err(SupervisorError::Start { id: "never".into(), error: StartError::Init(init_refused()) })
    );
    assert_eq!(children(&supervisor).await, listing(&[("a", Some(a))]));
    assert_eq!(runtime.process_count(), processes);

    let once = Worker::new("once", &journal).starts_allowed(&Arc::new(AtomicUsize::new(0)), 1);
    let first = within(supervisor.start_child(once.child())).await.expect("once starts once");
    assert_eq!(within(supervisor.terminate_child("once")).await, Ok(()));
    assert_eq!(
        within(supervisor.restart_child("once")).await,
        Err(SupervisorError::Start { id: "once".into(), error: StartError::Init(init_refused()) })
    );
    assert!(!runtime.is_alive(first));
    assert_eq!(children(&supervisor).await, listing(&[("a", Some(a)), ("once", None)]));
    assert_eq!(runtime.process_count(), processes);
    assert_eq!(within(supervisor.stop()).await, ExitReason::Shutdown);
}

// OTP which_children/1 lists every child in start order with its pid (`undefined` when not
// running) and type; count_children/1 counts specs, active children, supervisors and workers.
#[tokio::test]
async fn which_children_and_count_children() {
    let runtime = runtime();
    let journal = Journal::new();
    let inner = SupervisorSpec::new(Strategy::OneForOne).child(worker("x", &journal));
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(worker("w1", &journal))
        .child(shoal_supervisor::Child::supervisor("inner", inner))
        .child(worker("w2", &journal).restart(Restart::Transient).shutdown(Shutdown::BrutalKill));
    let supervisor = within(SupervisorRef::start(&runtime, spec)).await.expect("it starts");
    let [w1, inner, w2] = running(&children(&supervisor).await);
    let info = |id: &str, pid, kind, restart| ChildInfo { id: id.into(), pid, kind, restart };

    assert_eq!(
        within(supervisor.which_children()).await,
        Ok(vec![
            info("w1", Some(w1), ChildKind::Worker, Restart::Permanent),
            info("inner", Some(inner), ChildKind::Supervisor, Restart::Permanent),
            info("w2", Some(w2), ChildKind::Worker, Restart::Transient),
        ])
    );
    assert_eq!(
        within(supervisor.count_children()).await,
        Ok(ChildCounts { specs: 3, active: 3, supervisors: 1, workers: 2 })
    );
    assert_eq!(within(supervisor.terminate_child("w2")).await, Ok(()));
    assert_eq!(
        within(supervisor.count_children()).await,
        Ok(ChildCounts { specs: 3, active: 2, supervisors: 1, workers: 2 })
    );
    assert_eq!(within(supervisor.stop()).await, ExitReason::Shutdown);
}

// OTP supervisor init: child ids must be unique within a supervisor (`duplicate_child_name`);
// a spec that repeats one does not start, and starts no child.
#[tokio::test]
async fn duplicate_child_ids_make_the_start_fail() {
    let runtime = runtime();
    let baseline = runtime.process_count();
    let journal = Journal::new();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(worker("a", &journal))
        .child(worker("b", &journal))
        .child(worker("a", &journal));
    assert_eq!(
        within(SupervisorRef::start(&runtime, spec)).await.map(|supervisor| supervisor.pid()),
        Err(StartError::Init(ExitReason::custom("duplicate child id \"a\"")))
    );
    assert_eq!(journal.events(), []);
    assert_eq!(runtime.process_count(), baseline);
}

// OTP: a crash while starting a child is a start error, not a crash of the supervisor: a
// `Child::new` closure or a factory's build that panics (a configuration that does not load)
// fails start_child with the panic's message; the supervisor and its other children go on.
#[tokio::test]
async fn a_child_builder_that_panics_is_a_start_error() {
    let runtime = runtime();
    let journal = Journal::new();
    let supervisor = one_for_one(&runtime, &journal, &["a"]).await;
    let [a] = running(&children(&supervisor).await);
    runtime
        .register_factory("broken", |path: String| -> Worker {
            panic!("cannot load {path}");
        })
        .unwrap();
    let closure = Child::new("closure", || -> Worker { panic!("cannot load app.toml") });
    let spec = ChildSpec::new("factory", "broken", "app.toml").unwrap();
    for child in [closure, Child::from_spec(spec)] {
        let id = child.id().to_owned();
        let panicked = SpawnError::BuildPanicked("cannot load app.toml".to_owned());
        assert_eq!(
            within(supervisor.start_child(child)).await,
            Err(SupervisorError::Start { id, error: StartError::Spawn(panicked) })
        );
    }
    assert_eq!(children(&supervisor).await, listing(&[("a", Some(a))]));

    let dynamic = within(DynamicSupervisorRef::start(&runtime, DynamicSupervisorSpec::default()))
        .await
        .expect("it starts");
    let closure = Child::new("closure", || -> Worker { panic!("cannot load app.toml") });
    assert!(matches!(
        within(dynamic.start_child(closure)).await,
        Err(SupervisorError::Start { error: StartError::Spawn(SpawnError::BuildPanicked(_)), .. })
    ));
    assert_eq!(within(dynamic.count_children()).await.map(|counts| counts.specs), Ok(0));
    assert_eq!(within(supervisor.stop()).await, ExitReason::Shutdown);
    assert_eq!(within(dynamic.stop()).await, ExitReason::Shutdown);
}
