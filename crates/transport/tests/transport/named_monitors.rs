//! Monitors by registered name on a node (OTP's `monitor(process, {Name, Node})`): `noproc`
//! when no process has the name, the process's exit reason when it exits, `noconnection` when
//! the node is lost.

use shoal_process::{
    Addr, Context, Dest, ExitReason, NodeId, Pid, Process, ReplyTo, Runtime, Signal,
};
use tokio::sync::mpsc;

use super::support::{CALL, Stopper, cluster, eventually, shutdown, within};

/// Monitors `{name, node}` on order (and removes the monitor at once if `demonitor`), and
/// reports every signal it gets.
struct NameWatcher {
    signals: mpsc::UnboundedSender<Signal>,
    demonitor: bool,
}

impl Process for NameWatcher {
    type Message = ();
    type Call = (NodeId, String);
    type Reply = ();

    async fn handle_cast(&mut self, (): (), _: &mut Context<Self>) {}

    async fn handle_call(
        &mut self,
        (node, name): (NodeId, String),
        reply: ReplyTo<()>,
        ctx: &mut Context<Self>,
    ) {
        let monitor = ctx.monitor(Dest::NameOn { node, name });
        if self.demonitor {
            assert!(ctx.demonitor(monitor));
        }
        reply.send(());
    }

    async fn handle_signal(&mut self, signal: Signal, _: &mut Context<Self>) {
        let _ = self.signals.send(signal);
    }
}

fn watcher(runtime: &Runtime) -> (Addr<NameWatcher>, mpsc::UnboundedReceiver<Signal>) {
    let (signals, seen) = mpsc::unbounded_channel();
    (runtime.spawn(NameWatcher { signals, demonitor: false }), seen)
}

/// The pid and reason of the next signal, which must be a `Down`.
async fn next_down(seen: &mut mpsc::UnboundedReceiver<Signal>) -> (Pid, ExitReason) {
    match within(seen.recv()).await.expect("the watcher reports") {
        Signal::Down { pid, reason, .. } => (pid, reason),
        other => panic!("expected a Down, got {other:?}"),
    }
}

/// Waits until the process `target` (local to `runtime`) is watched by `count` monitors.
async fn monitored_by(runtime: &Runtime, target: Pid, count: usize) {
    eventually("the monitor is set up", || {
        let info = runtime.process_info(target);
        async move { info.is_some_and(|info| info.monitored_by == count) }
    })
    .await;
}

/// Monitoring `{name, node}` when no process has that name there delivers one `Down` with
/// `noproc`, naming the node's placeholder pid; on another node and on this one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitoring_a_name_no_process_has_is_down_with_noproc() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (watching, mut seen) = watcher(a.runtime());
    for node in [b.id(), a.id()] {
        watching.call((node, "ghost".to_owned())).await.unwrap();
        assert_eq!(next_down(&mut seen).await, (Pid::name_placeholder(node), ExitReason::NoProc));
    }
    shutdown(&nodes);
}

/// Monitoring `{name, node}` follows the process registered under the name: its exit is
/// reported with its pid and its own exit reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitoring_a_name_delivers_the_exit_reason_when_the_process_exits() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (watching, mut seen) = watcher(a.runtime());
    for (node, reason) in [(b, ExitReason::custom("out of coffee")), (a, ExitReason::Normal)] {
        let worker = node.runtime().spawn(Stopper);
        node.runtime().register("worker", worker.pid()).unwrap();
        watching.call((node.id(), "worker".to_owned())).await.unwrap();
        monitored_by(node.runtime(), worker.pid(), 1).await;
        worker.cast(reason.clone()).await.unwrap();
        assert_eq!(next_down(&mut seen).await, (worker.pid(), reason));
    }
    shutdown(&nodes);
}

/// Monitoring `{name, node}` delivers `noconnection` when the node is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitoring_a_name_is_down_with_noconnection_when_the_node_goes() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let worker = b.runtime().spawn(Stopper);
    b.runtime().register("worker", worker.pid()).unwrap();
    let (watching, mut seen) = watcher(a.runtime());
    watching.call((b.id(), "worker".to_owned())).await.unwrap();
    monitored_by(b.runtime(), worker.pid(), 1).await;
    b.shutdown();
    assert_eq!(
        next_down(&mut seen).await,
        (Pid::name_placeholder(b.id()), ExitReason::NoConnection)
    );
    shutdown(&nodes);
}

/// A name monitor removed with `demonitor` is removed from the process the name resolved to
/// (the demonitor follows the monitor on its connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demonitoring_a_name_monitor_removes_it_from_the_named_process() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let worker = b.runtime().spawn(Stopper);
    b.runtime().register("worker", worker.pid()).unwrap();
    let (ends, _ended) = mpsc::unbounded_channel();
    let demonitoring = a.runtime().spawn(NameWatcher { signals: ends, demonitor: true });
    demonitoring.call((b.id(), "worker".to_owned())).await.unwrap();
    // With one connection per channel, a call sent now reaches b after the monitor and the
    // demonitor, which b handles as it reads them.
    let () = a.runtime().call(worker.pid(), (), CALL).await.unwrap();
    assert_eq!(b.runtime().process_info(worker.pid()).unwrap().monitored_by, 0);
    shutdown(&nodes);
}
