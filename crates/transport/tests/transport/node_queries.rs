//! What OTP and Partisan users ask of a node besides messaging: the node of a pid
//! (`node(Pid)`), any member's spec, and node up/down events in a process's mailbox
//! (`monitor_nodes`).

use shoal_process::{Addr, ExitReason, Runtime, Signal};
use tokio::sync::mpsc;

use super::support::{Probe, Stopper, cluster, eventually, shutdown, start, within};

fn probe(runtime: &Runtime) -> (Addr<Probe>, mpsc::UnboundedReceiver<Signal>) {
    let (signals, seen) = mpsc::unbounded_channel();
    (runtime.spawn(Probe { signals }), seen)
}

async fn next_signal(seen: &mut mpsc::UnboundedReceiver<Signal>) -> Signal {
    within(seen.recv()).await.expect("the probe reports")
}

/// `node_name(pid)` is OTP's `node(Pid)`: the name of the node a pid runs on, local or remote;
/// `None` for a pid of a node that is not a member here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_name_of_a_pid_is_its_nodes_name_and_none_for_an_unknown_node() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let stranger = start("stranger").await;
    let on_a = a.runtime().spawn(Stopper).pid();
    let on_b = b.runtime().spawn(Stopper).pid();
    let on_stranger = stranger.runtime().spawn(Stopper).pid();

    assert_eq!(a.node_name(on_a).as_deref(), Some("a"));
    assert_eq!(a.node_name(on_b).as_deref(), Some("b"));
    assert_eq!(b.node_name(on_a).as_deref(), Some("a"));
    assert_eq!(a.node_name(on_stranger), None);
    shutdown(&nodes);
    shutdown(&[stranger]);
}

/// `node_spec(name)` gives any member's spec as that member announces it, this node's own
/// included, and `None` for a name that is not a member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_spec_returns_each_members_spec_and_this_nodes_own() {
    let nodes = cluster(&["a", "b", "c"]).await;
    for node in &nodes {
        for member in &nodes {
            assert_eq!(node.node_spec(member.name()).as_ref(), Some(member.spec()));
        }
        assert_eq!(node.node_spec("nobody"), None);
    }
    shutdown(&nodes);
}

/// A process subscribed with `monitor_nodes` gets every node event as a signal in its
/// mailbox, in order: `NodeUp` when a node connects, `NodeDown` with the reason when it is
/// lost. Subscribing twice changes nothing (one subscription per process, so one signal per
/// event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_subscribed_to_node_events_gets_node_up_and_node_down_in_its_mailbox() {
    let a = start("a").await;
    let b = start("b").await;
    let (watcher, mut seen) = probe(a.runtime());
    assert!(a.monitor_nodes(watcher.pid()));
    assert!(!a.monitor_nodes(watcher.pid()), "a second subscription is refused");
    assert_eq!(a.node_monitors(), vec![watcher.pid()]);

    b.join(a.listen_addr()).await.expect("join");
    let up = Signal::NodeUp { node: "b".into(), incarnation: b.incarnation() };
    assert_eq!(next_signal(&mut seen).await, up);

    b.shutdown();
    match next_signal(&mut seen).await {
        Signal::NodeDown { node, incarnation, reason } => {
            assert_eq!((node.as_str(), incarnation), ("b", b.incarnation()));
            assert!(!reason.is_empty());
        }
        other => panic!("expected NodeDown for b, got {other:?}"),
    }
    assert!(seen.try_recv().is_err(), "one signal per event");
    shutdown(&[a]);
}

/// A subscription to node events ends when its process exits (nothing outlives its reason),
/// and `demonitor_nodes` ends one at once, leaving no monitor on the process behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_event_subscription_ends_with_its_process_or_demonitor_nodes() {
    let a = start("a").await;
    let (exiting, _seen) = probe(a.runtime());
    assert!(a.monitor_nodes(exiting.pid()));
    exiting.cast(ExitReason::Normal).await.unwrap();
    eventually("the exited process is unsubscribed", || {
        let subscribed = a.node_monitors();
        async move { subscribed.is_empty() }
    })
    .await;
    assert!(!a.monitor_nodes(exiting.pid()), "a dead process cannot subscribe");

    let (staying, _seen) = probe(a.runtime());
    assert!(a.monitor_nodes(staying.pid()));
    assert!(a.demonitor_nodes(staying.pid()));
    assert!(!a.demonitor_nodes(staying.pid()));
    assert!(a.node_monitors().is_empty());
    eventually("no monitor on the process is left behind", || {
        let info = a.runtime().process_info(staying.pid());
        async move { info.is_some_and(|info| info.monitored_by == 0) }
    })
    .await;
    shutdown(&[a]);
}

/// `PeerStats::rtt` is the smoothed round trip of heartbeat pings: `Some` once pongs came
/// back over real TCP on loopback, each way, and below the failure timeout (a pong that slow
/// would have taken the peer down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_stats_show_the_round_trip_time_once_heartbeats_were_answered() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    eventually("both sides measured a round trip", || async {
        let rtt = |node: &shoal_transport::Node, peer| node.peer_stats(peer).and_then(|s| s.rtt);
        rtt(a, "b").is_some() && rtt(b, "a").is_some()
    })
    .await;
    let rtt = a.peer_stats("b").and_then(|stats| stats.rtt).expect("measured");
    assert!(rtt < std::time::Duration::from_secs(2), "a loopback round trip of {rtt:?}");
    shutdown(&nodes);
}
