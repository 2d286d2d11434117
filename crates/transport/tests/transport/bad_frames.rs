//! A bad frame after the handshake — longer than the maximum, or not a frame at all — closes
//! the connection it came on, and only that one: the node stays connected to its real peers.
//! So does anything an attacker on the path does to the sealed records: a bit flipped, a
//! record replayed, two records swapped, a byte dropped, bytes injected. Frames in the records
//! before the damage are delivered, nothing after it, and nothing altered.

use shoal_transport::wire::{Format, Frame, TraceParent, encode_frame};
use shoal_transport::{Node, NodeEvent};
use tokio::sync::broadcast;

use super::support::{CALL, Echo, RawPeer, Sequencer, cluster, eventually, fake_spec, shutdown};

/// Sends `bytes` on an authenticated connection to `a` and expects `a` to close it.
async fn bad_bytes_close_the_connection(a: &Node, bytes: &[u8]) {
    let mut raw = RawPeer::handshake(a.listen_addr(), fake_spec("fake", 1)).await;
    raw.send_bytes(bytes).await;
    raw.closed_by_node().await;
}

/// a is still connected to b, a call from b to a is answered, and no node event said
/// otherwise.
async fn still_connected(a: &Node, b: &Node, events: &mut [broadcast::Receiver<NodeEvent>]) {
    assert_eq!(a.nodes(), ["b"]);
    assert!(b.is_connected("a"));
    let echo = a.runtime().spawn(Echo).pid();
    let reply: String = b.runtime().call(echo, "still here".to_owned(), CALL).await.unwrap();
    assert_eq!(reply, "STILL HERE");
    for events in events {
        while let Ok(event) = events.try_recv() {
            assert!(!matches!(event, NodeEvent::Down { .. }), "unexpected {event:?}");
        }
    }
}

/// A length prefix above the maximum frame size closes that connection before anything is
/// buffered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_closes_only_its_connection() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut events = [a.subscribe(), b.subscribe()];
    let mut bytes = u32::MAX.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0; 64]);
    bad_bytes_close_the_connection(a, &bytes).await;
    still_connected(a, b, &mut events).await;
    shutdown(&nodes);
}

/// Bytes that are not msgpack, behind a valid length prefix, close that connection; frames
/// before them on the same connection were delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_closes_only_its_connection() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut events = [a.subscribe(), b.subscribe()];
    let sequencer = a.runtime().spawn(Sequencer::default());

    let mut raw = RawPeer::handshake(a.listen_addr(), fake_spec("fake", 1)).await;
    let payload = shoal_process::codec::encode(&(7u32, 0u64)).unwrap();
    raw.send(&Frame::Cast { to: sequencer.pid(), payload }).await;
    // 0xc1 is the one byte msgpack never uses.
    let mut garbage = 16u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(&[0xc1; 16]);
    raw.send_bytes(&garbage).await;
    raw.closed_by_node().await;
    eventually("the frame before the garbage was delivered", || {
        let sequencer = sequencer.clone();
        async move { sequencer.call(()).await.unwrap().received == 1 }
    })
    .await;

    // Truncated msgpack (a map announced, never given) behind a valid prefix, on a new
    // connection.
    let mut truncated = 3u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&[0x81, 0xa4, b'c']);
    bad_bytes_close_the_connection(a, &truncated).await;
    still_connected(a, b, &mut events).await;
    shutdown(&nodes);
}

/// What an attacker on the path does to two sealed records, `first` and `second`: the bytes
/// that reach the node instead, and how many of the two casts may be delivered.
type Tampering = fn(Vec<u8>, Vec<u8>) -> (Vec<u8>, u64);

const TAMPERINGS: [(&str, Tampering); 6] = [
    ("a bit flipped in the second record", |first, mut second| {
        let at = second.len() - 20;
        second[at] ^= 0x04;
        ([first, second].concat(), 1)
    }),
    ("the first record replayed", |first, _| ([first.clone(), first].concat(), 1)),
    ("the records swapped", |first, second| ([second, first].concat(), 0)),
    ("a byte of the first record dropped", |mut first, second| {
        first.remove(6);
        ([first, second].concat(), 0)
    }),
    ("a frame injected in the clear between them", |first, second| {
        let mut injected = bytes::BytesMut::new();
        let frame = Frame::CastNamed { name: "seq".into(), payload: numbered(1).into() };
        encode_frame(&frame, &mut injected, Format::latest(1 << 20)).unwrap();
        ([first, injected.to_vec(), second].concat(), 1)
    }),
    ("the second record's length inflated", |first, mut second| {
        second[3] = second[3].wrapping_add(9);
        ([first, second, vec![0; 64]].concat(), 1)
    }),
];

fn numbered(seq: u64) -> Vec<u8> {
    shoal_process::codec::encode(&(1u32, seq)).unwrap().to_vec()
}

/// Each tampering closes the connection, and delivers exactly the casts in the records before
/// the damage: never an altered, duplicated or injected one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_tampered_with_on_the_path_close_the_connection_and_deliver_nothing_altered() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut events = [a.subscribe(), b.subscribe()];
    for (what, tamper) in TAMPERINGS {
        let sequencer = a.runtime().spawn(Sequencer::default());
        let mut raw = RawPeer::handshake(a.listen_addr(), fake_spec("fake", 1)).await;
        let mut records = (0..2).map(|seq| {
            let mut frame = bytes::BytesMut::new();
            let cast = Frame::Cast { to: sequencer.pid(), payload: numbered(seq).into() };
            encode_frame(&cast, &mut frame, Format::latest(1 << 20)).unwrap();
            raw.seal(&frame)
        });
        let (first, second) = (records.next().unwrap(), records.next().unwrap());
        drop(records);
        let (wire, delivered) = tamper(first, second);
        raw.send_raw(&wire).await;
        raw.closed_by_node().await;
        let report = sequencer.call(()).await.unwrap();
        assert_eq!(report.received, delivered, "{what}: {report:?}");
        assert!(report.breaks.is_empty(), "{what}: {report:?}");
    }
    still_connected(a, b, &mut events).await;
    shutdown(&nodes);
}

/// A traced call whose trace context is not valid (W3C: a zero id) is no bad frame: it is
/// delivered, untraced, and counted on its peer (`PeerStats::ignored_trace_contexts`); the
/// connection stays open for what follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_call_with_an_invalid_context_is_handled_untraced_and_counted() {
    let nodes = cluster(&["a", "b"]).await;
    let a = &nodes[0];
    let echo = a.runtime().spawn(Echo).pid();
    let sequencer = a.runtime().spawn(Sequencer::default());
    let mut raw = RawPeer::handshake(a.listen_addr(), fake_spec("fake", 1)).await;
    let invalid = shoal_process::TraceContext {
        trace_id: shoal_process::TraceId::from_u128(0),
        span_id: shoal_process::SpanId(9),
        sampled: true,
    };
    let payload = shoal_process::codec::encode(&"hello".to_owned()).unwrap();
    let trace = TraceParent::from(invalid);
    raw.send(&Frame::TracedCall { id: 1, to: echo, payload, trace }).await;
    let payload = shoal_process::codec::encode(&(7u32, 0u64)).unwrap();
    raw.send(&Frame::Cast { to: sequencer.pid(), payload }).await;
    eventually("the cast behind the traced call was delivered", || {
        let sequencer = sequencer.clone();
        async move { sequencer.call(()).await.unwrap().received == 1 }
    })
    .await;
    let ignored = a.peer_stats("fake").map(|stats| stats.ignored_trace_contexts);
    assert_eq!(ignored, Some(1));
    shutdown(&nodes);
}
