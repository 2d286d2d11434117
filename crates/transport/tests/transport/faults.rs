//! Fault injection and the counters that show it: a partition cut on both sides is detected
//! as a node going down and heals; an inbound cut is silence; an outbound cut stops one
//! direction only; `Drop(p)` loses about that share of frames and duplicates none; `Delay(d)`
//! holds every frame back by at least `d`. Also the operations whose effect is seen the same
//! way: `Node::leave` (tombstones that stale gossip cannot undo, and a `Leave` that counts only
//! for its sender's own incarnation) and `peer_stats`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shoal_process::{Addr, Pid};
use shoal_transport::handshake::Hello;
use shoal_transport::wire::Frame;
use shoal_transport::{
    DEFAULT_CHANNEL, Direction, DownReason, Fault, Node, NodeEvent, PeerStats, Protection,
};

use super::support::{
    CALL, Echo, RawPeer, Sequencer, SlowRecorder, builder, cluster, cluster_of, eventually,
    fake_spec, is_down, is_up, key, next_event, shutdown, start,
};

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

/// A node whose own runtime stalls past the failure timeout does not take its peers down for
/// the silence its stall made: a tick that comes late gives the peer one more tick to be
/// heard through. Here both nodes share one current-thread runtime, blocked for 1.5 failure
/// timeouts, so each is the stalled one; neither sees the other go down, and the connection
/// carries on. (Before, each took the other down at its first tick after the stall.)
#[tokio::test(flavor = "current_thread")]
async fn a_stall_of_this_node_is_not_taken_for_the_peers_silence() {
    let quick = |name: &str| {
        builder(name).heartbeat(Duration::from_millis(100), Duration::from_millis(1_000))
    };
    let nodes = cluster_of(vec![quick("a"), quick("b")]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (mut a_events, mut b_events) = (a.subscribe(), b.subscribe());
    let frames = |node: &Node, peer: &str| {
        node.peer_stats(peer).map_or(0, |stats: PeerStats| stats.frames_received)
    };
    // Every task of both nodes waits while this thread sleeps.
    std::thread::sleep(Duration::from_millis(1_500));
    let (a_before, b_before) = (frames(a, "b"), frames(b, "a"));
    // Past the grace tick: each has heard a good many heartbeats since.
    eventually("heartbeats heard again both ways", || async {
        frames(a, "b") >= a_before + 20 && frames(b, "a") >= b_before + 20
    })
    .await;
    for events in [&mut a_events, &mut b_events] {
        while let Ok(event) = events.try_recv() {
            assert!(!matches!(event, NodeEvent::Down { .. }), "{event:?}");
        }
    }
    assert!(a.is_connected("b") && b.is_connected("a"));
    shutdown(&nodes);
}

/// Casts numbered by the tests below, 0..CASTS; a value of CASTS or more is a sentinel.
const CASTS: u64 = 400;

/// A recorder of every value cast to it, on `node`.
fn recorder(node: &Node) -> Addr<SlowRecorder> {
    node.runtime().spawn(SlowRecorder { delay: Duration::ZERO, seen: Vec::new() })
}

/// Casts 0..CASTS from `from` to `to`, in order.
async fn cast_numbered(from: &Node, to: Pid) {
    for n in 0..CASTS {
        from.runtime().cast(to, n).await.expect("the cast is queued");
    }
}

/// Waits until everything `from` cast to `recorder` before now has arrived or been lost:
/// casts sentinels (CASTS, CASTS + 1, ...) by pid, which stay in order behind the numbered
/// casts, until one arrives. Returns the numbered values seen, in arrival order.
async fn numbered_after_a_sentinel(from: &Node, recorder: &Addr<SlowRecorder>) -> Vec<u64> {
    let next_sentinel = AtomicU64::new(CASTS);
    eventually("a sentinel cast after the numbered casts arrives", || {
        let sentinel = next_sentinel.fetch_add(1, Ordering::Relaxed);
        let (from, recorder) = (from.clone(), recorder.clone());
        async move {
            from.runtime().cast(recorder.pid(), sentinel).await.expect("the cast is queued");
            let seen = recorder.call(()).await.expect("the recorder answers");
            seen.iter().any(|value| *value >= CASTS)
        }
    })
    .await;
    let seen = recorder.call(()).await.expect("the recorder answers");
    seen.into_iter().filter(|value| *value < CASTS).collect()
}

fn stats(node: &Node, peer: &str) -> PeerStats {
    node.peer_stats(peer).expect("the peer is a member")
}

/// `Drop(p)` discards each frame with probability p, independently: with `Drop(0.5)` on a's
/// outbound traffic to b, between 20% and 80% of 400 casts arrive (the chance of falling
/// outside is below 1e-30), each at most once and in the order sent, and a counts every one
/// it discarded in `dropped_by_faults`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_fault_loses_about_its_share_of_casts_and_duplicates_none() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let recorder = recorder(b);
    let dropped_before = stats(a, "b").dropped_by_faults;

    a.inject_fault("b", Direction::Outbound, Fault::Drop(0.5));
    cast_numbered(a, recorder.pid()).await;
    let arrived = numbered_after_a_sentinel(a, &recorder).await;

    let share = arrived.len() as u64;
    assert!((CASTS / 5..=CASTS * 4 / 5).contains(&share), "{share} of {CASTS} casts arrived");
    assert!(
        arrived.windows(2).all(|pair| pair[0] < pair[1]),
        "duplicated or reordered: {arrived:?}"
    );
    let dropped = stats(a, "b").dropped_by_faults - dropped_before;
    assert!(dropped >= CASTS - share, "{dropped} frames counted as dropped, {share} arrived");
    shutdown(&nodes);
}

/// `Delay(d)` holds every frame back by d before it is written, keeping order: with a 300 ms
/// delay on a's outbound traffic to b, a ping from a (its ping delayed) and a ping from b (a's
/// pong delayed) each take at least 300 ms, and 400 casts all arrive, in order, none dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_fault_holds_every_frame_back_by_at_least_its_duration() {
    const DELAY: Duration = Duration::from_millis(300);
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let recorder = recorder(b);

    a.inject_fault("b", Direction::Outbound, Fault::Delay(DELAY));
    let from_a = a.ping("b", CALL).await.expect("b answers the ping");
    assert!(from_a >= DELAY, "a's ping took {from_a:?}, under the {DELAY:?} delay");
    let from_b = b.ping("a", CALL).await.expect("a answers the ping");
    assert!(from_b >= DELAY, "b's ping took {from_b:?}, under the {DELAY:?} delay");
    // Measured by the test too, not only by the node's own clock.
    let started = Instant::now();
    let echo = b.runtime().spawn(Echo).pid();
    let reply: String = a.runtime().call(echo, "late".to_owned(), CALL).await.unwrap();
    assert_eq!(reply, "LATE");
    assert!(started.elapsed() >= DELAY, "a call took {:?}", started.elapsed());

    cast_numbered(a, recorder.pid()).await;
    let arrived = numbered_after_a_sentinel(a, &recorder).await;
    assert_eq!(arrived, (0..CASTS).collect::<Vec<_>>(), "a delay loses and reorders nothing");
    assert_eq!(stats(a, "b").dropped_by_faults, 0);
    shutdown(&nodes);
}

/// A cut of only a's outbound traffic to b stops a → b and nothing else: 400 casts from b to a
/// all arrive, in order, while 400 casts from a to b are all discarded (counted in a's
/// `dropped_by_faults`) and none reaches b. To b the cut is silence: it takes a down with
/// `HeartbeatTimeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_cut_stops_one_direction_while_the_other_still_delivers() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut b_events = b.subscribe();
    let (on_a, on_b) = (recorder(a), recorder(b));

    a.inject_fault("b", Direction::Outbound, Fault::Cut);
    // b → a first: b's failure detector takes a down once a has been silent for 2 s.
    cast_numbered(b, on_a.pid()).await;
    let arrived = numbered_after_a_sentinel(b, &on_a).await;
    assert_eq!(arrived, (0..CASTS).collect::<Vec<_>>(), "b → a is not affected");

    let dropped_before = stats(a, "b").dropped_by_faults;
    cast_numbered(a, on_b.pid()).await;
    eventually("a discarded its 400 casts", || async {
        let stats = stats(a, "b");
        stats.dropped_by_faults - dropped_before >= CASTS && stats.queued == 0
    })
    .await;
    let seen = on_b.call(()).await.expect("the recorder answers");
    assert!(seen.is_empty(), "casts from a reached b through the cut: {seen:?}");

    match next_event(&mut b_events, |event| is_down(event, "a")).await {
        NodeEvent::Down { reason, .. } => {
            assert!(matches!(reason, DownReason::HeartbeatTimeout(_)), "{reason:?}");
        }
        up => panic!("expected a down, got {up:?}"),
    }
    shutdown(&nodes);
}

/// `Node::leave` tombstones the node on every peer: each takes it down with `Left` and forgets
/// it, and a gossip that still lists the departed incarnation does not bring it back. The
/// control: a member never seen before, in the same gossip after the departed one, is
/// admitted, so the gossip was merged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_left_is_tombstoned_and_stale_gossip_does_not_revive_it() {
    let nodes = cluster(&["a", "b", "c"]).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let (mut a_events, mut b_events) = (a.subscribe(), b.subscribe());
    let departed = c.spec().clone();

    c.leave().await;
    assert!(c.is_stopped());
    for events in [&mut a_events, &mut b_events] {
        match next_event(events, |event| is_down(event, "c")).await {
            NodeEvent::Down { reason, incarnation, .. } => {
                assert_eq!(reason, DownReason::Left);
                assert_eq!(incarnation, departed.incarnation);
            }
            up => panic!("expected c down, got {up:?}"),
        }
    }
    for node in [a, b] {
        eventually("c is forgotten", || async { node.members().iter().all(|m| m.name != "c") })
            .await;
    }

    let mut raw = RawPeer::handshake(a.listen_addr(), fake_spec("x", 1)).await;
    let stale = Frame::Gossip { members: vec![departed, fake_spec("y", 1)], left: Vec::new() };
    raw.send(&stale).await;
    eventually("a admits y from the gossip", || async {
        a.members().iter().any(|m| m.name == "y")
    })
    .await;
    let names: Vec<String> = a.members().into_iter().map(|m| m.name).collect();
    assert!(!names.contains(&"c".to_owned()), "stale gossip revived c: {names:?}");
    assert!(!a.is_connected("c"));
    shutdown(&nodes);
}

/// A `Leave` counts only for the incarnation its sender runs: one naming an earlier or a later
/// incarnation is ignored (the sender stays a member, and no tombstone is recorded that would
/// keep that later incarnation out), and one naming its own takes it out for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_counts_only_for_the_incarnation_its_sender_runs() {
    let a = start("a").await;
    let sequencer = a.runtime().spawn(Sequencer::default());
    let is_member =
        |incarnation| a.members().iter().any(|m| m.name == "x" && m.incarnation == incarnation);
    let mut raw = RawPeer::handshake(a.listen_addr(), fake_spec("x", 5)).await;
    raw.send(&Frame::Leave { incarnation: 4 }).await;
    raw.send(&Frame::Leave { incarnation: 6 }).await;
    // One connection's frames are dispatched in order: once the cast sent after the leaves
    // has arrived, the leaves were handled.
    let payload = shoal_process::codec::encode(&(1u32, 0u64)).unwrap();
    raw.send(&Frame::Cast { to: sequencer.pid(), payload }).await;
    eventually("the cast after the leaves arrived", || {
        let sequencer = sequencer.clone();
        async move { sequencer.call(()).await.unwrap().received == 1 }
    })
    .await;
    assert!(is_member(5), "a leave for another incarnation took x out: {:?}", a.members());

    raw.send(&Frame::Leave { incarnation: 5 }).await;
    eventually("x left", || async { a.members().iter().all(|m| m.name != "x") }).await;
    let mut again = RawPeer::connect(a.listen_addr()).await;
    let hello = Hello::new(fake_spec("x", 5), DEFAULT_CHANNEL, 0, Protection::Encrypted);
    let (initiator, answer) = again.greet(&key(), &hello).await;
    let verdict = again.confirm(initiator, answer.expect("answered")).await;
    assert!(matches!(verdict, Some(Frame::Refused { .. })), "x 5 came back: {verdict:?}");

    let _newer = RawPeer::handshake(a.listen_addr(), fake_spec("x", 6)).await;
    eventually("x's next incarnation is a member", || async { is_member(6) }).await;
    shutdown(&[a]);
}

/// Nodes whose heartbeats and gossip are minutes apart, so that a test's own traffic is the
/// only traffic while it runs.
fn quiet(name: &str) -> shoal_transport::NodeBuilder {
    let minute = Duration::from_secs(60);
    builder(name).heartbeat(minute, 2 * minute).gossip_interval(minute)
}

/// Waits until a and b have each read all the other wrote, the same counts twice 100 ms apart.
/// A reader counts a read's frames after dispatching them, so a process can see a message
/// before its frame is counted: the counters are compared once the traffic settles.
async fn eventually_settled(a: &Node, b: &Node) {
    let settled = || {
        let (a_b, b_a) = (stats(a, "b"), stats(b, "a"));
        let counts = (a_b.frames_sent, b_a.frames_received, b_a.frames_sent, a_b.frames_received);
        (counts.0 == counts.1 && counts.2 == counts.3).then_some(counts)
    };
    eventually("the traffic between a and b settles", || async {
        let first = settled();
        tokio::time::sleep(Duration::from_millis(100)).await;
        first.is_some() && first == settled()
    })
    .await;
}

/// `peer_stats` counts frames and bytes exactly: with no other traffic, 400 casts from a to b
/// move a's `frames_sent` and b's `frames_received` by 400 and nothing the other way, a's
/// `bytes_sent` and b's `bytes_received` by the same amount; one call is one frame each way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_stats_count_exactly_the_frames_and_bytes_sent_and_received() {
    let nodes = cluster_of(vec![quiet("a"), quiet("b")]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    eventually_settled(a, b).await;
    let (a_before, b_before) = (stats(a, "b"), stats(b, "a"));

    let recorder = recorder(b);
    cast_numbered(a, recorder.pid()).await;
    eventually("b has every cast", || async {
        recorder.call(()).await.expect("the recorder answers").len() as u64 == CASTS
    })
    .await;
    eventually_settled(a, b).await;
    let (a_after, b_after) = (stats(a, "b"), stats(b, "a"));
    assert_eq!(a_after.frames_sent - a_before.frames_sent, CASTS);
    assert_eq!(b_after.frames_received - b_before.frames_received, CASTS);
    let bytes = a_after.bytes_sent - a_before.bytes_sent;
    assert!(bytes >= CASTS, "{bytes} bytes for {CASTS} frames");
    assert_eq!(b_after.bytes_received - b_before.bytes_received, bytes);
    assert_eq!(b_after.frames_sent, b_before.frames_sent, "b sent nothing");
    assert_eq!(a_after.frames_received, a_before.frames_received, "a received nothing");
    assert_eq!((a_after.queued, a_after.dropped_by_faults, a_after.reconnects), (0, 0, 0));

    let echo = b.runtime().spawn(Echo).pid();
    let reply: String = a.runtime().call(echo, "counted".to_owned(), CALL).await.unwrap();
    assert_eq!(reply, "COUNTED");
    eventually_settled(a, b).await;
    let (a_call, b_call) = (stats(a, "b"), stats(b, "a"));
    assert_eq!(a_call.frames_sent - a_after.frames_sent, 1, "the call");
    assert_eq!(b_call.frames_received - b_after.frames_received, 1, "the call");
    assert_eq!(b_call.frames_sent - b_after.frames_sent, 1, "the reply");
    assert_eq!(a_call.frames_received - a_after.frames_received, 1, "the reply");
    shutdown(&nodes);
}

/// `reconnects` counts sessions set up again after a loss: none while the first session
/// lasts, then one for each `Up` of the peer after `disconnect_node`. That is usually one;
/// it is two when `b` notices the loss only after `a` has reconnected and closes the new
/// session too (a known second cycle), so the count is checked against the `Up`s seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_stats_count_one_reconnect_per_session_set_up_again() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut a_events = a.subscribe();
    assert_eq!(stats(a, "b").reconnects, 0);

    assert!(a.disconnect_node("b"));
    next_event(&mut a_events, |event| is_down(event, "b")).await;
    next_event(&mut a_events, |event| is_up(event, "b")).await;
    let mut ups = 1;
    eventually("b is connected to a again", || async { b.is_connected("a") }).await;
    eventually("one reconnect counted per Up of b", || {
        while let Ok(event) = a_events.try_recv() {
            ups += u64::from(is_up(&event, "b"));
        }
        let reconnects = stats(a, "b").reconnects;
        async move { a.is_connected("b") && reconnects == ups }
    })
    .await;
    assert!(ups <= 2, "{ups} sessions set up again after one disconnect");
    shutdown(&nodes);
}
