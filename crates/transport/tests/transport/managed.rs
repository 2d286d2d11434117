//! Managed membership's connections follow use (issue 21, point 2): a layer keeps the
//! connections it needs ([`Node::keep`]), a send to a member known only by address gossip opens
//! one on demand, and a connection nothing holds closes once idle for `idle_close`.

use std::time::Duration;

use shoal_transport::{DownReason, Membership, Node, NodeEvent, RemoteError};
use tokio::sync::broadcast;

use super::support::{CALL, Echo, builder, eventually, is_down, next_event, shutdown, within};

/// Short enough that the tests see idle connections close, several heartbeats (100 ms) long.
const IDLE: Duration = Duration::from_millis(600);

async fn managed(name: &str) -> Node {
    builder(name)
        .membership(Membership::Managed)
        .idle_close(IDLE)
        .start()
        .await
        .expect("node starts")
}

/// Waits until `a` and `b` are no longer connected, either way.
async fn eventually_apart(a: &Node, b: &Node) {
    eventually(&format!("{} and {} are apart", a.name(), b.name()), || {
        let (a, b) = (a.clone(), b.clone());
        async move { !a.is_connected(b.name()) && !b.is_connected(a.name()) }
    })
    .await;
}

/// The reason of the next down event of `node` on `events`.
async fn down_reason(events: &mut broadcast::Receiver<NodeEvent>, node: &str) -> DownReason {
    match next_event(events, |event| is_down(event, node)).await {
        NodeEvent::Down { reason, .. } => reason,
        up => unreachable!("not a down event: {up:?}"),
    }
}

/// A connection that a layer keeps stays open however long it is idle, and whatever another
/// layer lets go of it (the overlay, after its linger); once the last claim is dropped, and
/// nothing else uses it, it closes as idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_connection_outlives_an_overlay_letting_it_go_and_closes_once_unkept() {
    let (a, b) = (managed("a").await, managed("b").await);
    let (mut a_events, mut b_events) = (a.subscribe(), b.subscribe());
    within(a.join(b.listen_addr())).await.expect("a joins b");
    let paxos = a.keep("b");
    let overlay = a.keep("b");
    assert_eq!(overlay.node(), "b");
    overlay.let_go();
    // Several idle timeouts with no traffic but heartbeats: the claim holds it, on both sides,
    // without a moment down.
    tokio::time::sleep(IDLE * 3).await;
    assert!(a.is_connected("b") && b.is_connected("a"), "a kept connection closed");
    for (events, peer) in [(&mut a_events, "b"), (&mut b_events, "a")] {
        while let Ok(event) = events.try_recv() {
            assert!(!is_down(&event, peer), "a kept connection went down: {event:?}");
        }
    }

    drop(paxos);
    eventually_apart(&a, &b).await;
    let reasons = [down_reason(&mut a_events, "b").await, down_reason(&mut b_events, "a").await];
    assert!(reasons.contains(&DownReason::Idle), "{reasons:?}");
    shutdown(&[a, b]);
}

/// A connection that no layer holds, opened by a join, closes once it has carried nothing
/// for `idle_close`; the node goes down as `Idle` on the side that closed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unkept_idle_connection_closes_after_idle_close() {
    let (a, b) = (managed("a").await, managed("b").await);
    let (mut a_events, mut b_events) = (a.subscribe(), b.subscribe());
    within(a.join(b.listen_addr())).await.expect("a joins b");
    eventually_apart(&a, &b).await;
    let reasons = [down_reason(&mut a_events, "b").await, down_reason(&mut b_events, "a").await];
    assert!(reasons.contains(&DownReason::Idle), "{reasons:?}");
    assert!(a.members().is_empty() && b.members().is_empty(), "idle peers are forgotten");
    shutdown(&[a, b]);
}

/// Any send reaches any member: `a` has never connected to `c`, but learnt where it listens
/// from `b`'s address gossip; a call from `a` to a process on `c` opens the connection on
/// demand and is answered, and the connection closes once idle. A node nobody has heard of
/// gets the same typed error as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_to_a_member_known_by_gossip_opens_a_connection_on_demand() {
    let (a, b, c) = (managed("a").await, managed("b").await, managed("c").await);
    // Both keep their connection to b, so that b's gossip reaches a.
    let _c_to_b = c.keep("b");
    within(c.join(b.listen_addr())).await.expect("c joins b");
    let _a_to_b = a.keep("b");
    within(a.join(b.listen_addr())).await.expect("a joins b");

    let echo = c.runtime().spawn(Echo).pid();
    eventually("a learns where c listens", || {
        let a = a.clone();
        async move { a.node_name(echo).as_deref() == Some("c") }
    })
    .await;
    assert!(!a.is_connected("c"), "gossip opened a connection");
    let (mut a_events, mut c_events) = (a.subscribe(), c.subscribe());

    let reply: String = within(a.runtime().call(echo, "far".to_owned(), CALL)).await.unwrap();
    assert_eq!(reply, "FAR");
    eventually_apart(&a, &c).await;
    let reasons = [down_reason(&mut a_events, "c").await, down_reason(&mut c_events, "a").await];
    assert!(reasons.contains(&DownReason::Idle), "{reasons:?}");
    assert!(a.is_connected("b"), "the kept connection stays");

    let unknown: Result<String, _> = a.rpc("nobody", "echo", &(), CALL).await;
    assert_eq!(unknown, Err(RemoteError::NoConnection("nobody".to_owned())));
    shutdown(&[a, b, c]);
}
