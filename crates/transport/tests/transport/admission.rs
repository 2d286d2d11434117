//! Who gets in: the handshake refuses a wrong secret, another protocol version and a node
//! that claims the target's own name, and nothing sent on a refused connection reaches a
//! process.

use shoal_process::{Addr, SpawnOptions};
use shoal_transport::handshake::{HandshakeError, NONCE_BYTES};
use shoal_transport::wire::{Frame, Hello};
use shoal_transport::{DEFAULT_CHANNEL, JoinError, Node};

use super::support::{RawPeer, SequenceReport, Sequencer, builder, fake_spec, shutdown, start};

/// A sequencer registered as "seq" on `node`, to tell whether anything reached a process.
fn witness(node: &Node) -> Addr<Sequencer> {
    let options = SpawnOptions::new().name("seq");
    node.runtime().spawn_with(Sequencer::default(), options).expect("spawns")
}

async fn nothing_received(witness: &Addr<Sequencer>) {
    let report: SequenceReport = witness.call(()).await.expect("the witness answers");
    assert_eq!(report, SequenceReport::default(), "something reached a process");
}

/// A node with another secret cannot join: the proofs do not verify, and the target admits no
/// member and delivers nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_wrong_secret_is_refused() {
    let a = start("a").await;
    let seq = witness(&a);
    let intruder = Node::builder("x", "not the secret").start().await.expect("the intruder starts");
    let joined = intruder.join(a.listen_addr()).await;
    assert!(
        matches!(
            joined,
            Err(JoinError::Handshake(HandshakeError::BadProof | HandshakeError::Refused(_)))
        ),
        "{joined:?}"
    );
    assert!(a.nodes().is_empty());
    assert!(a.members().is_empty(), "the intruder was never admitted: {:?}", a.members());
    assert!(intruder.nodes().is_empty());
    nothing_received(&seq).await;
    shutdown(&[a, intruder]);
}

/// A raw peer that does not know the secret and sends a made-up proof is refused ("the peer
/// does not know the cluster secret") and disconnected; a frame it sends after is not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_proof_is_refused_and_nothing_is_delivered() {
    let a = start("a").await;
    let seq = witness(&a);
    let mut raw = RawPeer::connect(a.listen_addr()).await;
    let hello = Hello {
        version: shoal_transport::wire::PROTOCOL_VERSION,
        spec: fake_spec("x", 1),
        channel: DEFAULT_CHANNEL.into(),
        index: 0,
        nonce: vec![1; NONCE_BYTES],
    };
    raw.send(&Frame::Hello(hello)).await;
    assert!(matches!(raw.recv().await, Some(Frame::Challenge(_))));
    raw.send(&Frame::Proof { proof: vec![0; 32] }).await;
    match raw.recv().await {
        Some(Frame::Refused { reason }) => assert!(reason.contains("secret"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    raw.closed_by_node().await;
    assert!(a.members().is_empty());
    nothing_received(&seq).await;
    shutdown(&[a]);
}

/// A data frame before any handshake is refused as unexpected and never delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_frame_before_the_handshake_is_refused() {
    let a = start("a").await;
    let seq = witness(&a);
    let mut raw = RawPeer::connect(a.listen_addr()).await;
    let payload = shoal_process::codec::encode(&(1u32, 0u64)).unwrap();
    raw.send(&Frame::CastNamed { name: "seq".into(), payload }).await;
    match raw.recv().await {
        Some(Frame::Refused { reason }) => assert!(reason.contains("unexpected"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    raw.closed_by_node().await;
    nothing_received(&seq).await;
    shutdown(&[a]);
}

/// A hello with an unsupported protocol version is refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_version_is_refused() {
    let a = start("a").await;
    let mut raw = RawPeer::connect(a.listen_addr()).await;
    let hello = Hello {
        version: 999,
        spec: fake_spec("x", 1),
        channel: DEFAULT_CHANNEL.into(),
        index: 0,
        nonce: vec![1; NONCE_BYTES],
    };
    raw.send(&Frame::Hello(hello)).await;
    match raw.recv().await {
        Some(Frame::Refused { reason }) => {
            assert!(reason.contains("unsupported protocol version 999"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    raw.closed_by_node().await;
    assert!(a.members().is_empty());
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
