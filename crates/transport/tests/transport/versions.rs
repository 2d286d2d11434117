//! Rolling upgrades: each connection's handshake negotiates the highest protocol version both
//! nodes speak, both nodes record it for the peer (`Node::peer_version`), and the frames of
//! the connection are encoded and decoded in a `Format` of that version, which only a version
//! this build speaks can have.

use bytes::BytesMut;
use shoal_transport::handshake::VERSIONS;
use shoal_transport::wire::{Format, Frame, FrameDecoder, FrameError, encode_frame};

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
