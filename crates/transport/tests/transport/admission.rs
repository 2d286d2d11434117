//! Who gets in: the handshake refuses another cluster key, a protocol version in common with
//! none, a node that claims the target's own name, and a replayed first message, and nothing
//! sent on a refused connection reaches a process; a node one version ahead is admitted. And
//! who is kept out: connections that never finish their handshake, flooding from other
//! loopback addresses, hold only their share of the handshake slots and only briefly, so that
//! new nodes join, members reconnect and nobody is taken down meanwhile.

use std::net::Ipv4Addr;
use std::time::Duration;

use shoal_process::{Addr, SpawnOptions};
use shoal_transport::handshake::{HandshakeError, Hello, Initiator, Message, VERSIONS};
use shoal_transport::wire::{Format, Frame};
use shoal_transport::{DEFAULT_CHANNEL, DownReason, JoinError, Node, NodeEvent, Protection};
use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast;

use super::support::{
    CALL, Echo, FLOOD_SOURCE, HandshakeFlood, RawPeer, SequenceReport, Sequencer, builder,
    builder_on, cluster, eventually, fake_spec, hello_bytes, is_up, key, next_event, other_key,
    shutdown, start, within,
};

/// A sequencer registered as "seq" on `node`, to tell whether anything reached a process.
fn witness(node: &Node) -> Addr<Sequencer> {
    let options = SpawnOptions::new().name("seq");
    node.runtime().spawn_with(Sequencer::default(), options).expect("spawns")
}

async fn nothing_received(witness: &Addr<Sequencer>) {
    let report: SequenceReport = witness.call(()).await.expect("the witness answers");
    assert_eq!(report, SequenceReport::default(), "something reached a process");
}

/// A hello from a node called `name`, offering `versions`.
fn hello_offering(name: &str, versions: (u32, u32)) -> Hello {
    Hello { versions, ..Hello::new(fake_spec(name, 1), DEFAULT_CHANNEL, 0, Protection::Encrypted) }
}

fn refusal(message: Option<Message>) -> String {
    match message {
        Some(Message::Refusal(reason)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A node with another cluster key cannot join: its first message does not open, and the
/// target admits no member and delivers nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_key_is_refused() {
    let a = start("a").await;
    let seq = witness(&a);
    let intruder = Node::builder("x", other_key()).start().await.expect("the intruder starts");
    let joined = intruder.join(a.listen_addr()).await;
    match joined {
        Err(JoinError::Handshake(HandshakeError::Refused(reason))) => {
            assert!(reason.contains("did not authenticate"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(a.nodes().is_empty());
    assert!(a.members().is_empty(), "the intruder was never admitted: {:?}", a.members());
    assert!(intruder.nodes().is_empty());
    nothing_received(&seq).await;
    shutdown(&[a, intruder]);
}

/// A raw peer whose first message is under another key is refused ("did not authenticate")
/// and disconnected; a frame it sends after is not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_message_under_another_key_is_refused_and_nothing_is_delivered() {
    let a = start("a").await;
    let seq = witness(&a);
    let mut raw = RawPeer::connect(a.listen_addr()).await;
    let (_, answer) = raw.greet(&other_key(), &hello_offering("x", (2, 2))).await;
    assert!(refusal(answer).contains("did not authenticate"));
    let payload = shoal_process::codec::encode(&(1u32, 0u64)).unwrap();
    let mut cast = bytes::BytesMut::new();
    let frame = Frame::CastNamed { name: "seq".into(), payload };
    shoal_transport::wire::encode_frame(&frame, &mut cast, Format::latest(1 << 20)).unwrap();
    let _ = raw.stream.write_all(&cast).await;
    raw.closed_by_node().await;
    assert!(a.members().is_empty());
    nothing_received(&seq).await;
    shutdown(&[a]);
}

/// A data frame before any handshake does not open as a first message: refused, never
/// delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_frame_before_the_handshake_is_refused() {
    let a = start("a").await;
    let seq = witness(&a);
    let mut raw = RawPeer::connect(a.listen_addr()).await;
    let payload = shoal_process::codec::encode(&(1u32, 0u64)).unwrap();
    let mut cast = bytes::BytesMut::new();
    let frame = Frame::CastNamed { name: "seq".into(), payload };
    shoal_transport::wire::encode_frame(&frame, &mut cast, Format::latest(1 << 20)).unwrap();
    raw.send_raw(&cast).await;
    let reason = refusal(raw.recv_message().await);
    assert!(reason.contains("did not authenticate") || reason.contains("malformed"), "{reason}");
    raw.closed_by_node().await;
    nothing_received(&seq).await;
    shutdown(&[a]);
}

/// A node that shares no protocol version with the target is refused with both ranges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_common_version_is_refused() {
    let a = start("a").await;
    let mut raw = RawPeer::connect(a.listen_addr()).await;
    let too_new = (VERSIONS.end() + 1, VERSIONS.end() + 9);
    let (_, answer) = raw.greet(&key(), &hello_offering("x", too_new)).await;
    let reason = refusal(answer);
    assert!(reason.contains("no common protocol version"), "{reason}");
    assert!(reason.contains(&format!("{too_new:?}")), "{reason}");
    raw.closed_by_node().await;
    assert!(a.members().is_empty());
    shutdown(&[a]);
}

/// A node one version ahead (it speaks this version and the next) is admitted, speaking this
/// one, and the node records that version for it: nodes of versions N and N+1 interoperate
/// during a rolling upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_one_version_ahead_is_admitted_at_this_version() {
    let a = start("a").await;
    let mut raw = RawPeer::connect(a.listen_addr()).await;
    let newer = (*VERSIONS.start(), VERSIONS.end() + 1);
    let (initiator, answer) = raw.greet(&key(), &hello_offering("x", newer)).await;
    let verdict = raw.confirm(initiator, answer.expect("answered")).await;
    assert_eq!(verdict, Some(Frame::Accepted));
    assert_eq!(raw.version(), Some(*VERSIONS.end()));
    eventually("x is a member", || {
        let members = a.members();
        async move { members.iter().any(|member| member.name == "x") }
    })
    .await;
    assert_eq!(a.peer_version("x"), Some(*VERSIONS.end()), "recorded at the common version");
    shutdown(&[a]);
}

/// A node that calls itself by the target's name is refused with a name clash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_named_like_the_target_is_refused() {
    let a = start("a").await;
    let impostor = builder("a").start().await.expect("starts");
    let joined = impostor.join(a.listen_addr()).await;
    match joined {
        Err(JoinError::Handshake(HandshakeError::Refused(reason))) => {
            assert!(reason.contains("name clash"), "{reason}");
        }
        other => panic!("expected a name clash, got {other:?}"),
    }
    assert!(a.members().is_empty());
    assert!(impostor.members().is_empty());
    shutdown(&[a, impostor]);
}

/// A first message recorded on the path and replayed is answered (it opens under the key),
/// but the replayer cannot confirm: a confirmation sealed under keys it guessed is refused and
/// nothing is admitted, and a replay that never confirms is closed after the hello timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_first_message_is_answered_but_never_admitted() {
    let a = builder("a")
        .connect_timeout(Duration::from_secs(60))
        .hello_timeout(Duration::from_millis(300))
        .start()
        .await
        .expect("a starts");
    let seq = witness(&a);
    let recorded = hello_bytes("x");
    for confirm in [true, false] {
        let mut replay = RawPeer::connect(a.listen_addr()).await;
        replay.send_raw(&recorded).await;
        assert!(matches!(replay.recv_message().await, Some(Message::Noise(_))), "answered");
        if confirm {
            // What a replayer can send: a record under a key of its own.
            let mut sealer = shoal_transport::record::Sealer::new([5; 32], Protection::Encrypted);
            let mut confirmation = bytes::BytesMut::new();
            let mut frame = bytes::BytesMut::new();
            shoal_transport::wire::encode_frame(&Frame::Confirm, &mut frame, Format::latest(1024))
                .unwrap();
            sealer.seal(&frame, &mut confirmation).unwrap();
            replay.send_raw(&confirmation).await;
        }
        replay.closed_by_node().await;
    }
    assert!(a.members().is_empty(), "a replay was admitted: {:?}", a.members());
    nothing_received(&seq).await;
    shutdown(&[a]);
}

// ---------------------------------------------------------------------------------------------
// Floods of handshakes that never finish.

/// How long a member cut off during a flood may take to be connected again: one connect
/// timeout (2 s, the default) and one backoff (at most 300 ms in `builder`), with as much again
/// for a machine loaded by parallel tests. Before per-address bounds, a flood like these kept
/// a member out for 30 s or for good.
const RECONNECT: Duration = Duration::from_millis(2 * (2_000 + 300));

/// How long a flood goes on, at least, besides what a test does meanwhile: longer than the
/// failure timeout (2 s in `builder`), so that a member starved of heartbeats by it would be
/// taken down, and than several hello timeouts, so that the node closes held connections.
const EXPOSURE: Duration = Duration::from_millis(2_500);

/// The address of a node that has never connected before, apart from the other nodes'
/// 127.0.0.1 and the floods' 127.0.0.2 to 127.0.0.7.
const FRESH_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);

/// Every event received so far on `events`, without waiting.
fn received(events: &mut broadcast::Receiver<NodeEvent>) -> Vec<NodeEvent> {
    let mut seen = Vec::new();
    loop {
        match events.try_recv() {
            Ok(event) => seen.push(event),
            Err(broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => return seen,
        }
    }
}

/// Fails if any of `events` is a node going down.
fn assert_no_downs(node: &str, events: &[NodeEvent]) {
    let downs: Vec<_> = events.iter().filter(|e| matches!(e, NodeEvent::Down { .. })).collect();
    assert!(downs.is_empty(), "{node} saw nodes go down during the flood: {downs:?}");
}

/// Whether a call from `from` to `echo` goes through.
async fn call_goes_through(from: &Node, echo: shoal_process::Pid) -> bool {
    let call = from.runtime().call::<String, String>(echo, "ping".to_owned(), CALL);
    call.await.is_ok_and(|reply| reply == "PING")
}

/// While one address floods a node with connections that never finish their handshake
/// (silent ones, partial `Hello`s, whole `Hello`s of a stranger with no proof), a node that
/// has never been seen joins it at its first try (within its own connect timeout), the
/// cluster meshes, and no member goes down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_node_joins_while_an_address_floods_the_handshakes() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (nodes[0].clone(), nodes[1].clone());
    let c = builder_on("c", FRESH_ADDRESS).start().await.expect("c starts");
    let mut events = [a.subscribe(), b.subscribe(), c.subscribe()];
    let flood = HandshakeFlood::start(a.listen_addr(), &[FLOOD_SOURCE], &[]);
    flood.closed_at_least(200).await;
    // Not to synchronise: the members live through the flood for a while before c joins.
    tokio::time::sleep(EXPOSURE).await;

    let joined = within(c.join(a.listen_addr())).await;
    assert_eq!(joined.expect("c joins during the flood"), "a");
    eventually("the three nodes mesh", || {
        let (a, b, c) = (a.clone(), b.clone(), c.clone());
        async move { a.nodes() == ["b", "c"] && b.nodes() == ["a", "c"] && c.nodes() == ["a", "b"] }
    })
    .await;
    let echo = a.runtime().spawn(Echo).pid();
    assert!(call_goes_through(&c, echo).await, "c calls a");

    let tally = flood.stop().await;
    for (node, events) in ["a", "b", "c"].into_iter().zip(&mut events) {
        assert_no_downs(node, &received(events));
    }
    eprintln!("flood: {tally:?}");
    shutdown(&[a, b, c]);
}

/// A member whose connections to a flooded node are cut (three times over) is connected
/// again within a connect timeout and a backoff, even though the flood also sends `Hello`s
/// that claim to be that member; the pair only ever goes down for the cuts (never for want
/// of a heartbeat), and a third member never goes down at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cut_off_during_a_handshake_flood_reconnects_at_once() {
    let nodes = cluster(&["a", "b", "c"]).await;
    let (a, b, c) = (nodes[0].clone(), nodes[1].clone(), nodes[2].clone());
    let mut events = [a.subscribe(), b.subscribe(), c.subscribe()];
    let mut b_events = b.subscribe();
    let flood = HandshakeFlood::start(a.listen_addr(), &[FLOOD_SOURCE], &["b", "c"]);
    flood.closed_at_least(200).await;
    let echo_a = a.runtime().spawn(Echo).pid();
    let echo_b = b.runtime().spawn(Echo).pid();

    for round in 0..3 {
        assert!(b.disconnect_node("a"), "round {round}: b was connected to a");
        let up = tokio::time::timeout(RECONNECT, next_event(&mut b_events, |e| is_up(e, "a")));
        up.await.unwrap_or_else(|_| panic!("round {round}: a is not back after {RECONNECT:?}"));
        // a notices the cut on its own a moment later and may take b down in turn, cycling
        // the pair once more: calls go through both ways once it has settled.
        eventually("calls go through both ways", || {
            let (a, b) = (a.clone(), b.clone());
            async move { call_goes_through(&b, echo_a).await && call_goes_through(&a, echo_b).await }
        })
        .await;
    }
    // Not to synchronise: the settled pair lives through the flood for a while (a session
    // that came up one way only would time out meanwhile).
    tokio::time::sleep(EXPOSURE).await;

    let tally = flood.stop().await;
    let [a_seen, b_seen, c_seen] = events.each_mut().map(received);
    for (node, seen) in [("a", &a_seen), ("b", &b_seen)] {
        for event in seen {
            if let NodeEvent::Down { node: down, reason, .. } = event {
                assert!(down != "c", "{node} took c down during the flood: {reason}");
                assert!(
                    matches!(reason, DownReason::Disconnected | DownReason::ConnectionLost(_)),
                    "{node} took {down} down for another reason than the cut: {reason}"
                );
            }
        }
    }
    assert_no_downs("c", &c_seen);
    eprintln!("flood: {tally:?}");
    shutdown(&nodes);
}

/// Connections from six addresses at once fill a node's general handshake pool (small here:
/// 12 slots, 4 per address); a fresh node, from an address of its own, still joins, because a
/// full pool makes room for an address with few handshakes by closing the oldest of the
/// busiest address; and a member cut off still reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_many_addresses_leaves_room_for_another_address() {
    let a = builder("a")
        .max_handshakes(16)
        .reserved_handshakes(4)
        .max_handshakes_per_address(4)
        .start()
        .await
        .expect("a starts");
    let b = start("b").await;
    within(b.join(a.listen_addr())).await.expect("b joins");
    let c = builder_on("c", FRESH_ADDRESS).start().await.expect("c starts");
    let mut events = [a.subscribe(), b.subscribe(), c.subscribe()];
    let mut b_events = b.subscribe();
    let sources: Vec<Ipv4Addr> = (2..8).map(|host| Ipv4Addr::new(127, 0, 0, host)).collect();
    let flood = HandshakeFlood::start(a.listen_addr(), &sources, &[]);
    flood.closed_at_least(200).await;

    let joined = within(c.join(a.listen_addr())).await;
    assert_eq!(joined.expect("c joins during the flood"), "a");
    assert!(b.disconnect_node("a"));
    let up = tokio::time::timeout(RECONNECT, next_event(&mut b_events, |e| is_up(e, "a")));
    up.await.unwrap_or_else(|_| panic!("a is not back for b after {RECONNECT:?}"));
    eventually("the three nodes mesh", || {
        let (a, b, c) = (a.clone(), b.clone(), c.clone());
        async move { a.nodes() == ["b", "c"] && b.nodes() == ["a", "c"] && c.nodes() == ["a", "b"] }
    })
    .await;

    flood.stop().await;
    let [a_seen, b_seen, c_seen] = events.each_mut().map(received);
    for (node, seen) in [("a", &a_seen), ("b", &b_seen), ("c", &c_seen)] {
        for event in seen {
            if let NodeEvent::Down { node: down, reason, .. } = event {
                let cut = [("a", "b"), ("b", "a")].contains(&(node, down.as_str()));
                assert!(cut, "{node} took {down} down during the flood: {reason}");
            }
        }
    }
    shutdown(&[a, b, c]);
}

/// A node started with a bound of 2 handshakes per address: two connections from 127.0.0.2
/// that sent a `Hello` hold them (each got its challenge); a third from there is closed at
/// once, unanswered; 127.0.0.3 and a node on 127.0.0.1 still get in; and once one of the two
/// closes, 127.0.0.2 gets a slot again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_address_bound_closes_connections_over_it_while_another_address_gets_in() {
    // Timeouts far beyond the test, so that nothing it holds expires meanwhile.
    let a = builder("a")
        .max_handshakes_per_address(2)
        .connect_timeout(Duration::from_secs(60))
        .hello_timeout(Duration::from_secs(60))
        .start()
        .await
        .expect("a starts");
    let target = a.listen_addr();
    let source = FLOOD_SOURCE;
    let mut held = Vec::new();
    for name in ["x", "y"] {
        let mut raw = RawPeer::connect_from(source, target).await;
        raw.send_raw(&hello_bytes(name)).await;
        assert!(
            matches!(raw.recv_message().await, Some(Message::Noise(_))),
            "{name} is in the handshake"
        );
        held.push(raw);
    }

    let mut over = RawPeer::connect_from(source, target).await;
    // The node may have closed it already: a failed write is fine.
    let _ = over.stream.write_all(&hello_bytes("z")).await;
    assert_eq!(
        over.recv_message().await,
        None,
        "the third handshake from one address is closed unanswered"
    );

    let mut other = RawPeer::connect_from(Ipv4Addr::new(127, 0, 0, 3), target).await;
    other.send_raw(&hello_bytes("w")).await;
    let answer = other.recv_message().await;
    assert!(matches!(answer, Some(Message::Noise(_))), "another address gets in");
    let b = start("b").await;
    assert_eq!(within(b.join(target)).await.expect("b joins from 127.0.0.1"), "a");

    drop(held.pop());
    eventually("127.0.0.2 gets a slot again", || async move {
        let Ok(stream) = super::support::connect_from(source, target).await else { return false };
        let mut raw = RawPeer::new(stream);
        let _ = raw.stream.write_all(&hello_bytes("v")).await;
        matches!(raw.recv_message().await, Some(Message::Noise(_)))
    })
    .await;
    shutdown(&[a, b]);
}

/// A connection that sends nothing, one that sends all of a first message but its last
/// byte, and one whose first message was answered but that never confirms it, are each closed
/// after the hello timeout (here 200 ms), long before the connect timeout (60 s); a connection
/// that confirms at once is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_hello_in_time_is_closed_before_the_connect_timeout() {
    let a = builder("a")
        .connect_timeout(Duration::from_secs(60))
        .hello_timeout(Duration::from_millis(200))
        .start()
        .await
        .expect("a starts");
    let target = a.listen_addr();
    let mut greeted = RawPeer::connect(target).await;
    let (_, answer) = greeted.greet(&key(), &hello_offering("x", (2, 2))).await;
    assert!(matches!(answer, Some(Message::Noise(_))));

    let mut silent = RawPeer::connect(target).await;
    let mut partial = RawPeer::connect(target).await;
    let hello = hello_bytes("y");
    partial.send_raw(&hello[..hello.len() - 1]).await;
    assert_eq!(silent.recv_message().await, None, "a silent connection is closed");
    assert_eq!(partial.recv_message().await, None, "a partial first message is closed");
    assert_eq!(greeted.recv_message().await, None, "an unconfirmed handshake is closed");

    let mut prompt = RawPeer::connect(target).await;
    let (initiator, answer) = prompt.greet(&key(), &hello_offering("z", (2, 2))).await;
    let verdict = prompt.confirm(initiator, answer.expect("answered")).await;
    assert_eq!(verdict, Some(Frame::Accepted));
    shutdown(&[a]);
}

/// A connection from `source` whose first message names `name`: the node answers it, so it
/// holds a handshake slot until it confirms.
struct Held {
    raw: RawPeer,
    initiator: Initiator,
    answer: Message,
}

async fn in_handshake(source: Ipv4Addr, target: std::net::SocketAddr, name: &str) -> Held {
    let mut raw = RawPeer::connect_from(source, target).await;
    let (initiator, answer) = raw.greet(&key(), &hello_offering(name, (2, 2))).await;
    match answer {
        Some(answer @ Message::Noise(_)) => Held { raw, initiator, answer },
        other => panic!("{name} from {source}: {other:?}"),
    }
}

/// A connection from `source` is closed at once: its first message goes unanswered.
async fn closed_at_once(source: Ipv4Addr, target: std::net::SocketAddr) {
    let mut raw = RawPeer::connect_from(source, target).await;
    // The node may have closed it already: a failed write is fine.
    let _ = raw.stream.write_all(&hello_bytes("late")).await;
    assert_eq!(raw.recv_message().await, None, "a connection from {source} got in");
}

/// A node with small pools: 4 handshakes, 2 of them reserved, 2 per address; timeouts far
/// beyond the test, so that nothing it holds expires meanwhile.
async fn small_pools() -> Node {
    builder("a")
        .max_handshakes(4)
        .reserved_handshakes(2)
        .max_handshakes_per_address(2)
        .connect_timeout(Duration::from_secs(60))
        .hello_timeout(Duration::from_secs(60))
        .start()
        .await
        .expect("a starts")
}

fn loopback(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, host)
}

/// A connection whose `Hello` names a member moves to the reserved pool: two strangers still
/// find the whole general pool (2 slots) free after it; a third stranger, with the general
/// pool full, finds no room, although the reserve has a slot left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_naming_a_member_moves_to_the_reserve_which_strangers_cannot_take() {
    let a = small_pools().await;
    let b = start("b").await;
    within(b.join(a.listen_addr())).await.expect("b joins");
    let target = a.listen_addr();
    let _claim = in_handshake(loopback(2), target, "b").await;
    let _first = in_handshake(loopback(3), target, "x").await;
    let _second = in_handshake(loopback(4), target, "y").await;
    closed_at_once(loopback(5), target).await;
    shutdown(&[a, b]);
}

/// Strangers from two addresses hold the whole general pool (one slot each, so no share to
/// take from either); a stranger from a third is closed at once; yet a member cut off
/// reconnects at once, from the address it proved the key from before, through the
/// reserve, and the strangers keep their slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_reconnects_while_strangers_hold_every_general_slot() {
    let a = small_pools().await;
    let b = start("b").await;
    within(b.join(a.listen_addr())).await.expect("b joins");
    let mut b_events = b.subscribe();
    let target = a.listen_addr();
    let strangers = [
        in_handshake(loopback(2), target, "x").await,
        in_handshake(loopback(3), target, "y").await,
    ];
    closed_at_once(loopback(4), target).await;

    assert!(b.disconnect_node("a"));
    let up = tokio::time::timeout(RECONNECT, next_event(&mut b_events, |e| is_up(e, "a")));
    up.await.unwrap_or_else(|_| panic!("a is not back for b after {RECONNECT:?}"));
    let echo = a.runtime().spawn(Echo).pid();
    eventually("b calls a", || call_goes_through(&b, echo)).await;

    for Held { mut raw, initiator, answer } in strangers {
        let verdict = raw.confirm(initiator, answer).await;
        assert_eq!(verdict, Some(Frame::Accepted), "a stranger lost its slot");
    }
    shutdown(&[a, b]);
}

/// The admission settings are checked when a node starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_settings_out_of_range_are_refused_at_start() {
    let invalid = [
        ("no hello timeout", builder("a").hello_timeout(Duration::ZERO)),
        ("hello after the connect timeout", builder("a").hello_timeout(Duration::from_secs(3))),
        ("no handshakes", builder("a").max_handshakes(0)),
        ("all reserved", builder("a").max_handshakes(8).reserved_handshakes(8)),
        ("fewer per address than a peer's connections", builder("a").max_handshakes_per_address(1)),
    ];
    for (what, builder) in invalid {
        let started = builder.start().await;
        assert!(
            matches!(started, Err(shoal_transport::NodeStartError::InvalidConfig(_))),
            "{what}"
        );
    }
    // A short connect timeout shortens the default hello timeout with it.
    let a = builder("a").connect_timeout(Duration::from_millis(300)).start().await;
    shutdown(&[a.expect("a connect timeout under the default hello timeout is fine")]);
}
