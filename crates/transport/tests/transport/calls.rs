//! Calls across nodes and node-level operations: timeouts, dead pids, registered names,
//! remote spawn by factory, `is_alive`, RPC (with follow-up handlers and panics), ping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shoal_process::{Addr, CallError, Dest, ExitReason, NodeId, Pid, SpawnOptions, Target};
use shoal_transport::{Failure, RemoteError};

use tokio::sync::mpsc;

use super::support::{
    BOUND, CALL, Echo, Sequencer, Silent, Stopper, cluster, eventually, shutdown, within,
};

/// A remote call that the callee never answers ends with `Timeout` at the caller's deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_call_without_a_reply_times_out() {
    let nodes = cluster(&["a", "b"]).await;
    let silent = nodes[0].runtime().spawn(Silent::default()).pid();
    let call: Result<String, CallError> =
        within(nodes[1].runtime().call(silent, "hello?".to_owned(), Duration::from_millis(300)))
            .await;
    assert_eq!(call, Err(CallError::Timeout));
    // The node is still fine: the next call to another process is answered.
    let echo = nodes[0].runtime().spawn(Echo).pid();
    let reply: String = nodes[1].runtime().call(echo, "fine".to_owned(), CALL).await.unwrap();
    assert_eq!(reply, "FINE");
    shutdown(&nodes);
}

/// A remote call in flight when the callee's node is lost fails as soon as the loss is
/// detected, with "no connection" (not at its deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_remote_call_fails_when_the_node_is_lost() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (nodes[0].clone(), nodes[1].clone());
    let (arrived, mut arrivals) = mpsc::unbounded_channel();
    let silent = a.runtime().spawn(Silent { arrived: Some(arrived), held: Vec::new() }).pid();
    let runtime = b.runtime().clone();
    let call = tokio::spawn(async move {
        runtime.call::<_, String>(silent, "anyone?".to_owned(), BOUND * 2).await
    });
    within(arrivals.recv()).await.expect("the call arrived");
    a.shutdown();
    let outcome = within(call).await.expect("the caller finished");
    assert!(
        matches!(
            outcome,
            Err(CallError::NoConnection | CallError::Exited(ExitReason::NoConnection))
        ),
        "{outcome:?}"
    );
    shutdown(&nodes);
}

/// An RPC in flight when the target node is lost fails with `NoConnection`: the node did not
/// answer, so the failure is not the node's (`Failed`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_rpc_fails_with_no_connection_when_the_node_is_lost() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (nodes[0].clone(), nodes[1].clone());
    let (arrived, mut arrivals) = mpsc::unbounded_channel::<()>();
    assert!(a.register_rpc("hang", move |(): ()| {
        let arrived = arrived.clone();
        async move {
            let _ = arrived.send(());
            std::future::pending::<()>().await;
        }
    }));
    let caller = b.clone();
    let rpc = tokio::spawn(async move { caller.rpc::<_, ()>("a", "hang", &(), BOUND * 2).await });
    within(arrivals.recv()).await.expect("the request arrived");
    a.shutdown();
    let outcome = within(rpc).await.expect("the caller finished");
    assert_eq!(outcome, Err(RemoteError::NoConnection("a".into())));
    shutdown(&nodes);
}

/// A call to a remote pid that is no longer alive fails with `NoProc`, reported by its node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_call_to_a_dead_pid_is_no_proc() {
    let nodes = cluster(&["a", "b"]).await;
    let stopper = nodes[0].runtime().spawn(Stopper);
    let exited = nodes[0].runtime().watch(stopper.pid());
    stopper.cast(ExitReason::Normal).await.unwrap();
    assert_eq!(within(exited).await, ExitReason::Normal);
    let call: Result<(), CallError> = nodes[1].runtime().call(stopper.pid(), (), CALL).await;
    assert_eq!(call, Err(CallError::NoProc));
    shutdown(&nodes);
}

/// Casts and calls to a name on a node (`Dest::name_on`) reach the process registered under
/// that name there; a name nobody holds is `NoProc`, a node that is not connected
/// `NoConnection`. A typed target by that name checks the behaviour's types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_processes_are_reached_on_their_node() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    b.runtime().spawn_with(Echo, SpawnOptions::new().name("echo")).unwrap();
    let sequencer = b.runtime().spawn_with(Sequencer::default(), SpawnOptions::new().name("seq"));
    let sequencer = sequencer.unwrap();

    let runtime = a.runtime();
    let reply: String = runtime.call(Dest::name_on("b", "echo"), "named", CALL).await.unwrap();
    assert_eq!(reply, "NAMED");
    for seq in 0..3u64 {
        runtime.cast(Dest::name_on("b", "seq"), (1u32, seq)).await.unwrap();
    }
    eventually("the named casts arrived", || {
        let sequencer = sequencer.clone();
        async move { sequencer.call(()).await.unwrap().received == 3 }
    })
    .await;
    assert!(sequencer.call(()).await.unwrap().breaks.is_empty());

    let missing: Result<String, _> = runtime.call(Dest::name_on("b", "nobody"), "x", CALL).await;
    assert_eq!(missing, Err(CallError::NoProc));
    let unknown: Result<String, _> =
        runtime.call(Dest::name_on("nowhere", "echo"), "x", CALL).await;
    assert_eq!(unknown, Err(CallError::NoConnection));

    let echo: Target<Echo> = runtime.target(Dest::name_on("b", "echo"));
    assert_eq!(echo.call("typed".to_owned()).await, Ok("TYPED".to_owned()));
    shutdown(&nodes);
}

/// A typed handle to a process of another node, made from its pid, casts and calls it over
/// TCP with the behaviour's own types, as it would a local one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_handle_works_on_a_process_of_another_node() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let sequencer = b.runtime().spawn(Sequencer::default());
    let echo = b.runtime().spawn(Echo);
    let remote: Addr<Echo> = a.runtime().addr(echo.pid()).expect("Echo takes remote messages");
    assert!(!remote.is_local() && remote.is_alive());
    assert_eq!(remote.call("over tcp".to_owned()).await, Ok("OVER TCP".to_owned()));
    let counter: Addr<Sequencer> = a.runtime().addr(sequencer.pid()).expect("a sequencer too");
    for seq in 0..100u64 {
        counter.cast((3, seq)).await.unwrap();
    }
    let report = counter.call(()).await.unwrap();
    assert_eq!((report.received, report.breaks.len()), (100, 0));
    shutdown(&nodes);
}

/// `spawn_remote` builds a process on the target from a registered factory; the pid it returns
/// is of that node and answers calls. An unknown factory is a `Spawn` failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_remote_starts_a_process_from_a_factory() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    b.runtime().register_factory("echo", |(): ()| Echo).unwrap();
    let pid = a.spawn_remote("b", "echo", &(), CALL).await.unwrap();
    assert_eq!(pid.node(), b.id());
    assert!(b.runtime().is_alive(pid));
    let reply: String = a.runtime().call(pid, "spawned".to_owned(), CALL).await.unwrap();
    assert_eq!(reply, "SPAWNED");
    let unknown = a.spawn_remote("b", "no-such-factory", &(), CALL).await;
    assert!(matches!(unknown, Err(RemoteError::Failed(Failure::Spawn(_)))), "{unknown:?}");
    shutdown(&nodes);
}

/// `is_alive` answers for local pids, remote live and dead pids, and pids of unknown nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn is_alive_answers_for_every_kind_of_pid() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let local = a.runtime().spawn(Stopper);
    let remote_alive = b.runtime().spawn(Stopper).pid();
    let remote_dead = b.runtime().spawn(Stopper);
    let exited = b.runtime().watch(remote_dead.pid());
    remote_dead.cast(ExitReason::Normal).await.unwrap();
    within(exited).await;

    assert!(a.is_alive(local.pid()).await);
    assert!(a.is_alive(remote_alive).await);
    assert!(!a.is_alive(remote_dead.pid()).await);
    assert!(!a.is_alive(Pid::from_parts(NodeId::from_name("nowhere"), 1, 1)).await);
    let exited = a.runtime().watch(local.pid());
    local.cast(ExitReason::Normal).await.unwrap();
    within(exited).await;
    assert!(!a.is_alive(local.pid()).await);
    shutdown(&nodes);
}

/// RPC: a registered handler's result comes back; an unknown handler and a panicking one are
/// reported as such, with the panic's message; the node survives the panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_runs_registered_handlers_and_reports_failures() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    assert!(b.register_rpc("double", |x: u64| async move { x * 2 }));
    assert!(!b.register_rpc("double", |x: u64| async move { x * 3 }), "the name is taken");
    assert!(b.register_rpc("boom", |x: u64| async move {
        assert!(x != 0, "kaboom in the handler");
        x
    }));

    let doubled: u64 = a.rpc("b", "double", &21u64, CALL).await.unwrap();
    assert_eq!(doubled, 42);
    let unknown: Result<u64, RemoteError> = a.rpc("b", "triple", &1u64, CALL).await;
    assert_eq!(unknown, Err(RemoteError::Failed(Failure::UnknownHandler("triple".into()))));
    let panicked: Result<u64, RemoteError> = a.rpc("b", "boom", &0u64, CALL).await;
    match panicked {
        Err(RemoteError::Failed(Failure::Handler(message))) => {
            assert!(message.contains("kaboom in the handler"), "{message}");
        }
        other => panic!("expected a handler failure, got {other:?}"),
    }
    let again: u64 = a.rpc("b", "double", &5u64, CALL).await.unwrap();
    assert_eq!(again, 10);
    let nowhere: Result<u64, RemoteError> = a.rpc("nowhere", "double", &1u64, CALL).await;
    assert_eq!(nowhere, Err(RemoteError::NoConnection("nowhere".into())));
    shutdown(&nodes);
}

/// `rpc_then`: the follow-up handler runs on the target with the first handler's result,
/// before the answer is sent — so it has run by the time the caller has the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_then_runs_the_follow_up_on_the_target_before_answering() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let recorded = Arc::new(AtomicU64::new(0));
    assert!(b.register_rpc("double", |x: u64| async move { x * 2 }));
    let record = recorded.clone();
    assert!(b.register_rpc("record", move |x: u64| {
        let record = record.clone();
        async move {
            record.store(x, Ordering::SeqCst);
        }
    }));
    let answer: u64 = a.rpc_then("b", "double", &21u64, "record", CALL).await.unwrap();
    assert_eq!(answer, 42);
    assert_eq!(recorded.load(Ordering::SeqCst), 42, "the follow-up ran before the answer");
    shutdown(&nodes);
}

/// Ping measures a round trip to a connected node; a node that is not connected is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_returns_a_round_trip() {
    let nodes = cluster(&["a", "b"]).await;
    let rtt: Duration = nodes[0].ping("b", CALL).await.unwrap();
    assert!(!rtt.is_zero(), "a round trip over TCP takes some time");
    let nowhere = nodes[0].ping("nowhere", CALL).await;
    assert_eq!(nowhere, Err(RemoteError::NoConnection("nowhere".into())));
    shutdown(&nodes);
}
