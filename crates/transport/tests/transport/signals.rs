//! Monitors and links across nodes: the real exit reason when the remote process exits, and
//! `noconnection` when its node is lost (OTP's rules for distributed monitors and links).

use shoal_process::{Addr, ExitReason, Pid, Runtime, Signal};
use tokio::sync::mpsc;

use super::support::{Order, Probe, Stopper, cluster, eventually, shutdown, within};

fn probe(runtime: &Runtime) -> (Addr<Probe>, mpsc::UnboundedReceiver<Signal>) {
    let (signals, seen) = mpsc::unbounded_channel();
    (runtime.spawn(Probe { signals }), seen)
}

async fn next_signal(seen: &mut mpsc::UnboundedReceiver<Signal>) -> Signal {
    within(seen.recv()).await.expect("the probe reports")
}

/// Waits until the process `target` (local to `runtime`) is watched by `count` monitors.
async fn monitored_by(runtime: &Runtime, target: Pid, count: usize) {
    eventually("the remote monitor is set up", || {
        let info = runtime.process_info(target);
        async move { info.is_some_and(|info| info.monitored_by == count) }
    })
    .await;
}

/// Waits until the process `target` (local to `runtime`) is linked to `peer`.
async fn linked(runtime: &Runtime, target: Pid, peer: Pid) {
    eventually("the remote link is set up", || {
        let info = runtime.process_info(target);
        async move { info.is_some_and(|info| info.links.contains(&peer)) }
    })
    .await;
}

/// A remote monitor delivers the monitored process's own exit reason: normal and custom.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_monitor_gets_the_real_exit_reason() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    for reason in [ExitReason::Normal, ExitReason::custom("out of coffee")] {
        let target = a.runtime().spawn(Stopper);
        let (watcher, mut seen) = probe(b.runtime());
        watcher.call(Order::Monitor(target.pid())).await.unwrap();
        monitored_by(a.runtime(), target.pid(), 1).await;
        target.cast(reason.clone()).await.unwrap();
        match next_signal(&mut seen).await {
            Signal::Down { pid, reason: got, .. } => {
                assert_eq!(pid, target.pid());
                assert_eq!(got, reason);
            }
            other => panic!("expected a Down, got {other:?}"),
        }
    }
    shutdown(&nodes);
}

/// A monitor on a pid that is already dead fires at once with `noproc`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_monitor_on_a_dead_pid_is_no_proc() {
    let nodes = cluster(&["a", "b"]).await;
    let target = nodes[0].runtime().spawn(Stopper);
    let exited = nodes[0].runtime().watch(target.pid());
    target.cast(ExitReason::Normal).await.unwrap();
    within(exited).await;
    let (watcher, mut seen) = probe(nodes[1].runtime());
    watcher.call(Order::Monitor(target.pid())).await.unwrap();
    match next_signal(&mut seen).await {
        Signal::Down { pid, reason, .. } => {
            assert_eq!(pid, target.pid());
            assert_eq!(reason, ExitReason::NoProc);
        }
        other => panic!("expected a Down, got {other:?}"),
    }
    shutdown(&nodes);
}

/// A remote monitor fires with `noconnection` when the monitored process's node is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_monitor_fires_no_connection_when_the_node_is_killed() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let target = a.runtime().spawn(Stopper);
    let (watcher, mut seen) = probe(b.runtime());
    watcher.call(Order::Monitor(target.pid())).await.unwrap();
    monitored_by(a.runtime(), target.pid(), 1).await;
    a.shutdown();
    match next_signal(&mut seen).await {
        Signal::Down { pid, reason, .. } => {
            assert_eq!(pid, target.pid());
            assert_eq!(reason, ExitReason::NoConnection);
        }
        other => panic!("expected a Down, got {other:?}"),
    }
    assert!(target.is_alive(), "the process itself did not exit: only its node is gone");
    shutdown(&nodes);
}

/// A link across nodes carries an abnormal exit from the remote side to the local one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_link_propagates_an_exit_from_the_remote_side() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let target = a.runtime().spawn(Stopper);
    let (linked_probe, _seen) = probe(b.runtime());
    let probe_exited = b.runtime().watch(linked_probe.pid());
    linked_probe.call(Order::Link(target.pid())).await.unwrap();
    linked(a.runtime(), target.pid(), linked_probe.pid()).await;
    target.cast(ExitReason::custom("remote crash")).await.unwrap();
    assert_eq!(within(probe_exited).await, ExitReason::custom("remote crash"));
    shutdown(&nodes);
}

/// A link across nodes carries an abnormal exit from the local side to the remote one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_link_propagates_an_exit_to_the_remote_side() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let target = a.runtime().spawn(Stopper);
    let target_exited = a.runtime().watch(target.pid());
    let (linked_probe, _seen) = probe(b.runtime());
    linked_probe.call(Order::Link(target.pid())).await.unwrap();
    linked(a.runtime(), target.pid(), linked_probe.pid()).await;
    linked_probe.cast(ExitReason::custom("local crash")).await.unwrap();
    assert_eq!(within(target_exited).await, ExitReason::custom("local crash"));
    shutdown(&nodes);
}

/// A link to a process whose node is lost ends with `noconnection` (seen as a trapped exit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_link_gives_no_connection_when_the_node_goes() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let target = a.runtime().spawn(Stopper);
    let (linked_probe, mut seen) = probe(b.runtime());
    linked_probe.call(Order::TrapExits).await.unwrap();
    linked_probe.call(Order::Link(target.pid())).await.unwrap();
    linked(a.runtime(), target.pid(), linked_probe.pid()).await;
    a.shutdown();
    match next_signal(&mut seen).await {
        Signal::Exit { from, reason } => {
            assert_eq!(from, target.pid());
            assert_eq!(reason, ExitReason::NoConnection);
        }
        other => panic!("expected an Exit, got {other:?}"),
    }
    assert!(linked_probe.is_alive(), "it traps exits");
    shutdown(&nodes);
}
