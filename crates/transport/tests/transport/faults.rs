//! Fault injection: a partition cut on both sides is detected as a node going down, healing
//! it brings the node back, and nodes outside the partition are not disturbed.

use shoal_transport::{Direction, DownReason, Fault, NodeEvent};

use super::support::{CALL, Echo, cluster, eventually, is_down, is_up, next_event, shutdown};

/// Partition a | c with b connected to both: a and c each see the other go down, then come
/// back up once both sides heal; b sees neither go down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_is_detected_and_heals() {
    let nodes = cluster(&["a", "b", "c"]).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let (mut a_events, mut b_events, mut c_events) = (a.subscribe(), b.subscribe(), c.subscribe());

    a.inject_fault("c", Direction::Both, Fault::Cut);
    c.inject_fault("a", Direction::Both, Fault::Cut);
    next_event(&mut a_events, |event| is_down(event, "c")).await;
    next_event(&mut c_events, |event| is_down(event, "a")).await;
    assert!(!a.is_connected("c") && !c.is_connected("a"));
    assert_eq!(b.nodes(), ["a", "c"], "b is outside the partition");

    a.heal("c");
    c.heal("a");
    next_event(&mut a_events, |event| is_up(event, "c")).await;
    next_event(&mut c_events, |event| is_up(event, "a")).await;
    let echo = c.runtime().spawn(Echo).pid();
    let reply: String = a.runtime().call(echo, "healed".to_owned(), CALL).await.unwrap();
    assert_eq!(reply, "HEALED");

    assert_eq!(b.nodes(), ["a", "c"]);
    while let Ok(event) = b_events.try_recv() {
        assert!(!matches!(event, NodeEvent::Down { .. }), "b saw {event:?}");
    }
    shutdown(&nodes);
}

/// A cut of only the inbound direction means nothing from the peer is heard any more: the
/// failure detector must take the peer down (`HeartbeatTimeout`), as it would for a peer that
/// fell silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_cut_is_detected_as_silence() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut a_events = a.subscribe();
    a.inject_fault("b", Direction::Inbound, Fault::Cut);
    match next_event(&mut a_events, |event| is_down(event, "b")).await {
        NodeEvent::Down { reason, .. } => {
            assert!(matches!(reason, DownReason::HeartbeatTimeout(_)), "{reason:?}");
        }
        up => panic!("expected b down, got {up:?}"),
    }
    a.heal("b");
    next_event(&mut a_events, |event| is_up(event, "b")).await;
    // b saw a close its connections and reconnects after its own backoff.
    eventually("b reconnects to a", || async { b.is_connected("a") }).await;
    shutdown(&nodes);
}
