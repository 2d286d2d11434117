//! Membership: joining, full mesh by gossip, static membership, restarted nodes replacing
//! their old incarnation, node monitors and disconnection.

use shoal_process::{CallError, ExitReason};
use std::time::Duration;

use shoal_transport::{DownReason, Membership, NodeEvent};

use super::support::{
    CALL, Echo, Stopper, builder, cluster, eventually, is_down, is_up, next_event, shutdown, start,
    within,
};

/// Full mesh: every node that joins through one member ends up connected to all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_join_into_a_full_mesh() {
    let nodes = cluster(&["a", "b", "c"]).await;
    assert_eq!(nodes[0].nodes(), vec!["b".to_owned(), "c".to_owned()]);
    assert_eq!(nodes[1].nodes(), vec!["a".to_owned(), "c".to_owned()]);
    assert_eq!(nodes[2].nodes(), vec!["a".to_owned(), "b".to_owned()]);
    shutdown(&nodes);
}

/// Gossip: a node joining through any member (here not the first one) learns of, and is
/// learnt of by, every other member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_joining_through_any_member_reaches_all_by_gossip() {
    let mut nodes = cluster(&["a", "b", "c"]).await;
    let d = start("d").await;
    assert_eq!(within(d.join(nodes[2].listen_addr())).await.expect("joins"), "c");
    nodes.push(d);
    eventually("all four see the three others", || {
        let nodes = nodes.clone();
        async move { nodes.iter().all(|node| node.nodes().len() == 3) }
    })
    .await;
    assert_eq!(nodes[3].nodes(), vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]);
    assert_eq!(nodes[0].nodes(), vec!["b".to_owned(), "c".to_owned(), "d".to_owned()]);
    shutdown(&nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_call_is_answered() {
    let nodes = cluster(&["a", "b"]).await;
    let echo = nodes[0].runtime().spawn(Echo).pid();
    let reply: String = nodes[1].runtime().call(echo, "hello".to_owned(), CALL).await.unwrap();
    assert_eq!(reply, "HELLO");
    shutdown(&nodes);
}

/// Static membership: the node connects to the listed address, and both sides see each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_membership_connects_to_the_listed_node() {
    let a = start("a").await;
    let s = builder("s").membership(Membership::Static(vec![a.listen_addr()])).start().await;
    let s = s.expect("starts");
    eventually("s and a are connected", || {
        let (a, s) = (a.clone(), s.clone());
        async move { s.nodes() == ["a"] && a.nodes() == ["s"] }
    })
    .await;
    let echo = a.runtime().spawn(Echo).pid();
    let reply: String = s.runtime().call(echo, "static".to_owned(), CALL).await.unwrap();
    assert_eq!(reply, "STATIC");
    shutdown(&[a, s]);
}

/// Managed membership: connections are exactly those the layer above opened. Joining one
/// node learns nothing of its peers (no gossip), and a disconnected peer is forgotten on both
/// sides and not reconnected, until it is joined again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_membership_connects_only_where_asked_and_never_reconnects() {
    let managed = |name| builder(name).membership(Membership::Managed).start();
    let (a, b, c) =
        (managed("a").await.unwrap(), managed("b").await.unwrap(), managed("c").await.unwrap());
    let mut a_events = a.subscribe();
    assert_eq!(within(a.join(b.listen_addr())).await.expect("a joins b"), "b");
    assert_eq!(within(c.join(b.listen_addr())).await.expect("c joins b"), "b");
    eventually("b sees both", || {
        let b = b.clone();
        async move { b.nodes() == ["a", "c"] }
    })
    .await;
    // Several gossip intervals of the default builder pass: a and c still do not meet.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(a.nodes(), ["b"]);
    assert_eq!(c.nodes(), ["b"]);

    next_event(&mut a_events, |event| is_up(event, "b")).await;
    assert!(a.disconnect_node("b"));
    let down = next_event(&mut a_events, |event| is_down(event, "b")).await;
    assert!(matches!(down, NodeEvent::Down { reason: DownReason::Disconnected, .. }), "{down:?}");
    eventually("b forgets a too", || {
        let b = b.clone();
        async move { b.nodes() == ["c"] }
    })
    .await;
    // Well past the reconnect backoff (at most 300 ms): nobody reconnected.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(a.nodes().is_empty() && a.members().is_empty(), "a forgot b: {:?}", a.members());
    assert_eq!(b.nodes(), ["c"]);

    assert_eq!(within(a.join(b.listen_addr())).await.expect("a joins b again"), "b");
    next_event(&mut a_events, |event| is_up(event, "b")).await;
    shutdown(&[a, b, c]);
}

/// Managed membership: a peer that restarts (a new incarnation) and connects again is a new
/// member; the old incarnation went down with `Restarted` or a lost connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_membership_admits_a_restarted_peer_as_new() {
    let a = builder("a").membership(Membership::Managed).start().await.unwrap();
    let old_b = builder("b").membership(Membership::Managed).start().await.unwrap();
    within(old_b.join(a.listen_addr())).await.expect("joins");
    let old_incarnation = old_b.incarnation();
    old_b.shutdown();
    let new_b = builder("b").membership(Membership::Managed).start().await.unwrap();
    within(new_b.join(a.listen_addr())).await.expect("the new incarnation joins");
    eventually("a knows the new incarnation only", || {
        let (a, new_b) = (a.clone(), new_b.clone());
        async move {
            let members = a.members();
            members.len() == 1
                && members[0].incarnation == new_b.incarnation()
                && a.is_connected("b")
        }
    })
    .await;
    assert_ne!(old_incarnation, new_b.incarnation());
    shutdown(&[a, new_b]);
}

/// A node restarted under the same name (a new incarnation) replaces the old one: its peers
/// record the new incarnation, pids of the old run are dead, pids of the new run answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_replaces_its_old_incarnation() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, old_b) = (nodes[0].clone(), nodes[1].clone());
    let old_pid = old_b.runtime().spawn(Stopper).pid();
    assert!(a.is_alive(old_pid).await);

    old_b.shutdown();
    let new_b = start("b").await;
    assert!(new_b.incarnation() > old_b.incarnation());
    within(new_b.join(a.listen_addr())).await.expect("the new b joins");
    eventually("a sees the new incarnation of b up", || {
        let (a, incarnation) = (a.clone(), new_b.incarnation());
        async move {
            a.is_connected("b")
                && a.members().iter().any(|m| m.name == "b" && m.incarnation == incarnation)
        }
    })
    .await;
    let specs: Vec<_> = a.members().into_iter().filter(|m| m.name == "b").collect();
    assert_eq!(specs.len(), 1, "one member named b: {specs:?}");
    assert_eq!(specs[0].listen_addrs, vec![new_b.listen_addr()]);

    assert!(!a.is_alive(old_pid).await, "the old run's pid is not alive");
    let call: Result<(), CallError> = a.runtime().call(old_pid, (), CALL).await;
    assert_eq!(call, Err(CallError::NoProc));
    let new_pid = new_b.runtime().spawn(Echo).pid();
    assert!(a.is_alive(new_pid).await);
    let reply: String = a.runtime().call(new_pid, "new".to_owned(), CALL).await.unwrap();
    assert_eq!(reply, "NEW");
    // The old run's processes live on, cut off; the runtime is not the node.
    old_b.runtime().exit(old_pid, ExitReason::Shutdown);
    shutdown(&[a, old_b, new_b]);
}

/// `monitor_node` resolves with a reason when the node is lost (here: shut down), and at once
/// with `NotConnected` for a node that is not connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_node_resolves_when_the_node_is_shut_down() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (nodes[0].clone(), nodes[1].clone());
    assert_eq!(within(a.monitor_node("nowhere")).await, DownReason::NotConnected);
    let lost = a.monitor_node("b");
    b.shutdown();
    let reason = within(lost).await;
    assert!(
        matches!(reason, DownReason::ConnectionLost(_) | DownReason::HeartbeatTimeout(_)),
        "{reason:?}"
    );
    shutdown(&nodes);
}

/// How long one call waits while a pair settles after a disconnect.
const SETTLE: Duration = Duration::from_secs(1);

/// `disconnect_node` takes the node down with `Disconnected`; it is connected again after
/// the backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnected_node_goes_down_then_comes_back() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (nodes[0].clone(), nodes[1].clone());
    let mut events = a.subscribe();
    let b_incarnation = b.incarnation();
    assert!(a.disconnect_node("b"));
    let down = next_event(&mut events, |event| is_down(event, "b")).await;
    assert_eq!(
        down,
        NodeEvent::Down {
            node: "b".into(),
            incarnation: b_incarnation,
            reason: DownReason::Disconnected
        }
    );
    let up = next_event(&mut events, |event| is_up(event, "b")).await;
    assert_eq!(up, NodeEvent::Up { node: "b".into(), incarnation: b_incarnation });
    // b learns of the loss on its own, a moment later, and takes a down in turn (closing the
    // connections a opened meanwhile), so the pair may go down and up once more: traffic flows
    // once both have settled.
    let echo = b.runtime().spawn(Echo).pid();
    eventually("a call goes through again", || {
        let runtime = a.runtime().clone();
        async move {
            let call = runtime.call::<String, String>(echo, "back".to_owned(), SETTLE);
            call.await.is_ok_and(|reply| reply == "BACK")
        }
    })
    .await;
    assert!(!a.disconnect_node("nowhere"));
    shutdown(&nodes);
}
