//! Rolling upgrades: each connection's handshake negotiates the highest protocol version both
//! nodes speak, both nodes record it for the peer (`Node::peer_version`), and the frames of
//! the connection are encoded and decoded in a `Format` of that version, which only a version
//! this build speaks can have.

use bytes::BytesMut;
use shoal_process::{SpanId, TraceContext, TraceId};
use shoal_transport::handshake::VERSIONS;
use shoal_transport::wire::{
    Format, Frame, FrameDecoder, FrameError, TRACE_SINCE_VERSION, TraceParent, encode_frame,
};

use super::support::{cluster, shutdown, start};

/// Two nodes over TCP agree on one version, the highest both speak, and each records it for
/// the other; a node that is no member has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_agree_on_the_highest_common_version_and_both_record_it() {
    let lone = start("lone").await;
    assert_eq!(lone.peer_version("a"), None, "no member, no version");
    shutdown(&[lone]);

    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    assert_eq!(a.peer_version("b"), Some(*VERSIONS.end()));
    assert_eq!(b.peer_version("a"), Some(*VERSIONS.end()));
    assert_eq!(a.peer_version("c"), None);
    shutdown(&nodes);
}

/// A format exists only for a version this build speaks: a negotiated one. Frames of it
/// round-trip.
#[test]
fn a_format_is_only_for_a_version_this_build_speaks() {
    for version in [0, VERSIONS.start() - 1, VERSIONS.end() + 1, u32::MAX] {
        assert_eq!(Format::new(version, 1024), Err(FrameError::Version(version)));
    }
    for version in VERSIONS {
        let format = Format::new(version, 1024).expect("a version this build speaks");
        assert_eq!(format.version(), version);
        let mut out = BytesMut::new();
        encode_frame(&Frame::Ping { id: 9 }, &mut out, format).expect("encodes");
        let mut decoder = FrameDecoder::new(format);
        decoder.extend(&out);
        assert_eq!(decoder.next_frame(), Ok(Some(Frame::Ping { id: 9 })));
    }
    assert_eq!(Format::latest(1024).version(), *VERSIONS.end());
}

fn context(trace_id: u128, span_id: u64) -> TraceContext {
    TraceContext { trace_id: TraceId::from_u128(trace_id), span_id: SpanId(span_id), sampled: true }
}

/// Version 4 adds calls that carry a trace context. On a connection of version 4 a traced call
/// travels as it is; on one of version 3 or 2 (a peer not yet upgraded, which would not decode
/// it) the encoder lays it out as the plain call it extends, the context left out, so that an
/// older peer still answers it.
#[test]
fn a_traced_call_goes_as_a_plain_call_on_a_connection_before_version_4() {
    let to = shoal_process::Pid::from_parts(shoal_process::NodeId::from_name("b"), 1, 7);
    let trace = TraceParent::from(context(0xfeed, 0xbeef));
    let payload = bytes::Bytes::from_static(b"request");
    let traced = Frame::TracedCall { id: 3, to, payload: payload.clone(), trace };
    let named =
        Frame::TracedCallNamed { id: 4, name: "echo".into(), payload: payload.clone(), trace };
    let round_trip = |frame: &Frame, version: u32| {
        let format = Format::new(version, 1024).expect("a version this build speaks");
        let mut out = BytesMut::new();
        encode_frame(frame, &mut out, format).expect("encodes");
        let mut decoder = FrameDecoder::new(format);
        decoder.extend(&out);
        decoder.next_frame().expect("decodes").expect("a whole frame")
    };
    assert_eq!(round_trip(&traced, TRACE_SINCE_VERSION), traced);
    assert_eq!(round_trip(&named, TRACE_SINCE_VERSION), named);
    assert_eq!(trace.context(), Some(context(0xfeed, 0xbeef)));
    for version in *VERSIONS.start()..TRACE_SINCE_VERSION {
        let plain = Frame::Call { id: 3, to, payload: payload.clone() };
        assert_eq!(round_trip(&traced, version), plain, "version {version}");
        let plain = Frame::CallNamed { id: 4, name: "echo".into(), payload: payload.clone() };
        assert_eq!(round_trip(&named, version), plain, "version {version}");
    }
}

/// W3C Trace Context: an all-zero trace id or span id is not a context; such a frame still
/// decodes (the call is handled), and its context reads as none.
#[test]
fn a_trace_context_with_a_zero_id_reads_as_none() {
    assert_eq!(TraceParent::from(context(0, 1)).context(), None);
    assert_eq!(TraceParent::from(context(1, 0)).context(), None);
    assert!(TraceParent::from(context(1, 1)).context().is_some());
}
