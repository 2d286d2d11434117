//! Children started from factory specs (SPEC: "a child spec is then data: factory name +
//! encoded arguments + restart policy"), the form every layer above starts processes in.

use shoal_process::{ChildSpec, ExitReason, Restart, Runtime, SpawnError, StartError};
use shoal_supervisor::{Child, Strategy, SupervisorError, SupervisorRef, SupervisorSpec};

use crate::support::{
    Journal, Order, Worker, children, crash, listing, running, runtime, started, terminated,
    within, worker,
};

/// Registers the factory "worker": a [`Worker`] journaling into `journal`, its id the argument.
fn register_worker(runtime: &Runtime, journal: &Journal) {
    let journal = journal.clone();
    runtime
        .register_factory("worker", move |id: String| Worker::new(&id, &journal))
        .expect("the name is free");
}

fn spec(id: &str, factory: &str) -> ChildSpec {
    ChildSpec::new(id, factory, id).expect("a string encodes")
}

// OTP one_for_one, with the child started from a spec (factory and arguments): after a crash
// it is built again from the same spec, under a new pid, with the spec's restart policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_factory_child_is_restarted_after_a_crash() {
    let runtime = runtime();
    let journal = Journal::new();
    register_worker(&runtime, &journal);
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(Child::from_spec(spec("f", "worker").restart(Restart::Transient)))
        .child(worker("a", &journal));
    let supervisor = within(SupervisorRef::start(&runtime, spec)).await.expect("it starts");
    let [f, a] = running(&children(&supervisor).await);

    let reason = ExitReason::custom("f failed");
    assert_eq!(crash(&runtime, f, Order::Stop(reason.clone())).await, reason);
    let events = journal.wait_for(4).await;
    let f2 = events[3].pid();
    assert_eq!(events[2..], [terminated("f", f, reason), started("f", f2)]);
    assert_ne!(f2, f);
    assert_eq!(children(&supervisor).await, listing(&[("f", Some(f2)), ("a", Some(a))]));
    let infos = within(supervisor.which_children()).await.expect("it answers");
    assert_eq!(infos[0].restart, Restart::Transient);
    assert_eq!(within(supervisor.stop()).await, ExitReason::Shutdown);
}

// OTP start_child/2 with a child that cannot be started (here: its factory is unknown):
// `{error, Reason}`, and the child is not added.
#[tokio::test]
async fn an_unknown_factory_is_refused_by_start_child() {
    let runtime = runtime();
    let journal = Journal::new();
    let spec = SupervisorSpec::new(Strategy::OneForOne).child(worker("a", &journal));
    let supervisor = within(SupervisorRef::start(&runtime, spec)).await.expect("it starts");
    let [a] = running(&children(&supervisor).await);

    assert_eq!(
        within(supervisor.start_child(Child::from_spec(spec_of_ghost()))).await,
        Err(SupervisorError::Start {
            id: "ghost".into(),
            error: StartError::Spawn(SpawnError::UnknownFactory("nope".into())),
        })
    );
    assert_eq!(children(&supervisor).await, listing(&[("a", Some(a))]));
    assert_eq!(within(supervisor.stop()).await, ExitReason::Shutdown);
}

// OTP supervisor start: if a child of the initial spec fails to start, the children already
// started are terminated (in reverse order) and the supervisor's start fails with the reason.
#[tokio::test]
async fn an_unknown_factory_in_the_spec_fails_the_start_and_stops_started_children() {
    let runtime = runtime();
    let baseline = runtime.process_count();
    let journal = Journal::new();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(worker("a", &journal))
        .child(worker("b", &journal))
        .child(Child::from_spec(spec_of_ghost()))
        .child(worker("c", &journal));
    let unknown = StartError::Spawn(SpawnError::UnknownFactory("nope".into()));
    assert_eq!(
        within(SupervisorRef::start(&runtime, spec)).await.map(|supervisor| supervisor.pid()),
        Err(StartError::Init(ExitReason::custom(format!(
            "child \"ghost\" did not start: {unknown}"
        ))))
    );
    let events = journal.events();
    let [a, b] = [events[0].pid(), events[1].pid()];
    assert_eq!(
        events,
        [
            started("a", a),
            started("b", b),
            terminated("b", b, ExitReason::Shutdown),
            terminated("a", a, ExitReason::Shutdown),
        ]
    );
    assert_eq!(runtime.process_count(), baseline);
}

fn spec_of_ghost() -> ChildSpec {
    spec("ghost", "nope")
}
