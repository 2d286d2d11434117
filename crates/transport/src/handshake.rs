//! The connection handshake, sans-IO: versions, names, incarnations, and mutual
//! authentication by HMAC-SHA256 challenge-response over the cluster secret.
//!
//! ```text
//!  connector                                   acceptor
//!     │ Hello{version, spec, channel, nonce_c}     │
//!     │ ─────────────────────────────────────────▶ │ version checked
//!     │ Challenge{version, spec, nonce_a, proof_a} │ proof_a = HMAC(secret, "acceptor" ‖ transcript)
//!     │ ◀───────────────────────────────────────── │
//!     │ Proof{proof_c}                             │ proof_c = HMAC(secret, "connector" ‖ transcript)
//!     │ ─────────────────────────────────────────▶ │ verified: Authenticated
//!     │ Accepted | Refused{reason}                 │ the node's own checks (names, incarnations)
//!     │ ◀───────────────────────────────────────── │
//! ```
//!
//! The transcript binds both nonces, both node specs and the connection's channel and index,
//! so a proof is good for one connection only and nothing either side claims can be altered
//! on the way; the two labels keep one side's proof from being replayed as the
//! other's. The secret itself never crosses the wire. Until a connection is open, nothing the
//! peer sent reaches any process: the driver only reads handshake frames.
//!
//! [`Connector`] and [`Acceptor`] are plain state machines: a frame in, what to send (or the
//! outcome) out. They never panic on any input.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::NodeSpec;
use crate::wire::{Challenge, Frame, Hello, PROTOCOL_VERSION};

/// Bytes of each side's challenge.
pub const NONCE_BYTES: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// The shared cluster secret. Printing it shows only its length.
#[derive(Clone)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    /// A secret from bytes (any length; at least 16 random bytes are advised).
    pub fn new(bytes: impl AsRef<[u8]>) -> Self {
        Self(bytes.as_ref().into())
    }

    fn mac(&self, label: &[u8], transcript: &[u8]) -> HmacSha256 {
        // HMAC accepts keys of every length, so this cannot fail.
        let mut mac = HmacSha256::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!());
        mac.update(label);
        mac.update(transcript);
        mac
    }

    fn prove(&self, label: &[u8], transcript: &[u8]) -> Vec<u8> {
        self.mac(label, transcript).finalize().into_bytes().to_vec()
    }

    /// Checks a proof in constant time.
    fn verify(&self, label: &[u8], transcript: &[u8], proof: &[u8]) -> bool {
        self.mac(label, transcript).verify_slice(proof).is_ok()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

const ACCEPTOR_LABEL: &[u8] = b"shoal/handshake/acceptor/v1";
const CONNECTOR_LABEL: &[u8] = b"shoal/handshake/connector/v1";

/// Why a handshake failed. The connection is closed; nothing it carried was delivered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peer speaks another protocol version.
    #[error("unsupported protocol version {theirs} (this node speaks {ours})")]
    UnsupportedVersion {
        /// The peer's version.
        theirs: u32,
        /// Ours.
        ours: u32,
    },
    /// The peer's proof is wrong: it does not know the cluster secret.
    #[error("authentication failed: the peer does not know the cluster secret")]
    BadProof,
    /// A nonce of the wrong length.
    #[error("malformed challenge: a nonce of {0} bytes (expected {NONCE_BYTES})")]
    BadNonce(usize),
    /// The peer claims this node's own name.
    #[error("name clash: the peer calls itself {0:?}, which is this node's name")]
    SameName(String),
    /// A frame that does not belong at this step.
    #[error("unexpected {got} frame during the handshake (expected {expected})")]
    Unexpected {
        /// What the handshake waited for.
        expected: &'static str,
        /// What came.
        got: &'static str,
    },
    /// The other side refused the connection.
    #[error("refused by the peer: {0}")]
    Refused(String),
}

impl HandshakeError {
    /// Whether the peer should be told (with [`Frame::Refused`]) why it was turned away.
    pub fn tell_peer(&self) -> bool {
        !matches!(self, Self::Refused(_))
    }
}

/// What the connecting side does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectorStep {
    /// Send this frame, then wait for the next.
    Send(Frame),
    /// The connection is open to `peer`.
    Open {
        /// The acceptor's spec.
        peer: NodeSpec,
    },
}

/// The connecting side of a handshake.
#[derive(Debug)]
pub struct Connector {
    secret: Secret,
    local: NodeSpec,
    channel: String,
    index: u16,
    nonce: Vec<u8>,
    state: ConnectorState,
}

#[derive(Debug)]
enum ConnectorState {
    AwaitChallenge,
    AwaitAccepted(NodeSpec),
    Done,
}

impl Connector {
    /// Starts a handshake for one connection of `channel`; returns the [`Frame::Hello`] to
    /// send first.
    pub fn new(
        secret: Secret,
        local: NodeSpec,
        channel: &str,
        index: u16,
        nonce: [u8; NONCE_BYTES],
    ) -> (Self, Frame) {
        let hello = Frame::Hello(Hello {
            version: PROTOCOL_VERSION,
            spec: local.clone(),
            channel: channel.to_owned(),
            index,
            nonce: nonce.to_vec(),
        });
        let connector = Self {
            secret,
            local,
            channel: channel.to_owned(),
            index,
            nonce: nonce.to_vec(),
            state: ConnectorState::AwaitChallenge,
        };
        (connector, hello)
    }

    /// Takes the next frame from the acceptor.
    pub fn on_frame(&mut self, frame: Frame) -> Result<ConnectorStep, HandshakeError> {
        if let Frame::Refused { reason } = frame {
            self.state = ConnectorState::Done;
            return Err(HandshakeError::Refused(reason));
        }
        match std::mem::replace(&mut self.state, ConnectorState::Done) {
            ConnectorState::AwaitChallenge => {
                let Frame::Challenge(challenge) = frame else {
                    return Err(unexpected("challenge", &frame));
                };
                let peer = self.check_challenge(challenge)?;
                let transcript =
                    transcript(&self.nonce, &peer.1, &self.local, &peer.0, self.connection());
                let proof = self.secret.prove(CONNECTOR_LABEL, &transcript);
                self.state = ConnectorState::AwaitAccepted(peer.0);
                Ok(ConnectorStep::Send(Frame::Proof { proof }))
            }
            ConnectorState::AwaitAccepted(peer) => match frame {
                Frame::Accepted => Ok(ConnectorStep::Open { peer }),
                other => Err(unexpected("accepted", &other)),
            },
            ConnectorState::Done => Err(unexpected("nothing", &frame)),
        }
    }

    fn connection(&self) -> (&str, u16) {
        (&self.channel, self.index)
    }

    /// Verifies the acceptor's version and proof; returns its spec and nonce.
    fn check_challenge(&self, challenge: Challenge) -> Result<(NodeSpec, Vec<u8>), HandshakeError> {
        check_version(challenge.version)?;
        check_nonce(&challenge.nonce)?;
        if challenge.spec.name == self.local.name {
            return Err(HandshakeError::SameName(challenge.spec.name));
        }
        let transcript = transcript(
            &self.nonce,
            &challenge.nonce,
            &self.local,
            &challenge.spec,
            self.connection(),
        );
        if !self.secret.verify(ACCEPTOR_LABEL, &transcript, &challenge.proof) {
            return Err(HandshakeError::BadProof);
        }
        Ok((challenge.spec, challenge.nonce))
    }
}

/// What the accepting side does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcceptorStep {
    /// Send this frame, then wait for the next.
    Send(Frame),
    /// The connector proved it knows the secret. The node now runs its own checks and sends
    /// [`Frame::Accepted`] or [`Frame::Refused`].
    Authenticated {
        /// The connector's hello.
        hello: Hello,
    },
}

/// The accepting side of a handshake.
#[derive(Debug)]
pub struct Acceptor {
    secret: Secret,
    local: NodeSpec,
    nonce: Vec<u8>,
    state: AcceptorState,
}

#[derive(Debug)]
enum AcceptorState {
    AwaitHello,
    AwaitProof { hello: Hello, transcript: Vec<u8> },
    Done,
}

impl Acceptor {
    /// Waits for a connector's hello.
    pub fn new(secret: Secret, local: NodeSpec, nonce: [u8; NONCE_BYTES]) -> Self {
        Self { secret, local, nonce: nonce.to_vec(), state: AcceptorState::AwaitHello }
    }

    /// Takes the next frame from the connector.
    pub fn on_frame(&mut self, frame: Frame) -> Result<AcceptorStep, HandshakeError> {
        match std::mem::replace(&mut self.state, AcceptorState::Done) {
            AcceptorState::AwaitHello => {
                let Frame::Hello(hello) = frame else {
                    return Err(unexpected("hello", &frame));
                };
                check_version(hello.version)?;
                check_nonce(&hello.nonce)?;
                if hello.spec.name == self.local.name {
                    return Err(HandshakeError::SameName(hello.spec.name));
                }
                let transcript = transcript(
                    &hello.nonce,
                    &self.nonce,
                    &hello.spec,
                    &self.local,
                    (&hello.channel, hello.index),
                );
                let proof = self.secret.prove(ACCEPTOR_LABEL, &transcript);
                let challenge = Frame::Challenge(Challenge {
                    version: PROTOCOL_VERSION,
                    spec: self.local.clone(),
                    nonce: self.nonce.clone(),
                    proof,
                });
                self.state = AcceptorState::AwaitProof { hello, transcript };
                Ok(AcceptorStep::Send(challenge))
            }
            AcceptorState::AwaitProof { hello, transcript } => {
                let Frame::Proof { proof } = frame else {
                    return Err(unexpected("proof", &frame));
                };
                if !self.secret.verify(CONNECTOR_LABEL, &transcript, &proof) {
                    return Err(HandshakeError::BadProof);
                }
                Ok(AcceptorStep::Authenticated { hello })
            }
            AcceptorState::Done => Err(unexpected("nothing", &frame)),
        }
    }
}

fn check_version(theirs: u32) -> Result<(), HandshakeError> {
    if theirs == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(HandshakeError::UnsupportedVersion { theirs, ours: PROTOCOL_VERSION })
    }
}

fn check_nonce(nonce: &[u8]) -> Result<(), HandshakeError> {
    if nonce.len() == NONCE_BYTES { Ok(()) } else { Err(HandshakeError::BadNonce(nonce.len())) }
}

/// Everything the handshake settles, connector first: the version, both nonces, both node
/// specs whole (names, incarnations, addresses, channels — so none can be altered on the
/// way), and which connection this is.
fn transcript(
    connector_nonce: &[u8],
    acceptor_nonce: &[u8],
    connector: &NodeSpec,
    acceptor: &NodeSpec,
    (channel, index): (&str, u16),
) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(2 * NONCE_BYTES + 256);
    bytes.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    bytes.extend_from_slice(connector_nonce);
    bytes.extend_from_slice(acceptor_nonce);
    for node in [connector, acceptor] {
        // A spec always encodes (strings, numbers, addresses); an empty encoding would only
        // make both sides disagree, failing the handshake safely.
        let spec = rmp_serde::to_vec(node).unwrap_or_default();
        bytes.extend_from_slice(&(spec.len() as u64).to_be_bytes());
        bytes.extend_from_slice(&spec);
    }
    bytes.extend_from_slice(&(channel.len() as u64).to_be_bytes());
    bytes.extend_from_slice(channel.as_bytes());
    bytes.extend_from_slice(&index.to_be_bytes());
    bytes
}

fn unexpected(expected: &'static str, frame: &Frame) -> HandshakeError {
    HandshakeError::Unexpected { expected, got: frame.kind() }
}
