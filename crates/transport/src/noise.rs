//! The keyed handshake, sans-IO: Noise `NNpsk0` over the cluster key, with the protocol
//! version negotiated, giving each connection its two record keys (`crate::record`).
//!
//! ```text
//!  initiator                                      responder
//!     ── psk, e   [Hello: versions, spec, channel, index] ──▶   (sealed under the key)
//!     ◀── e, ee   [Welcome: version chosen, spec]  ──────────   (sealed under the key and ee)
//!  both: a Sealer and an Opener, one key per direction, fresh for this connection
//! ```
//!
//! The cluster key is a [`Key`]: 32 random bytes, never a password. The first message can be
//! recorded by anyone on the path and is sealed under the key alone, so a guessable key could
//! be found offline; 32 random bytes cannot. Only a holder of the key can make a first message
//! the responder opens, or a reply the initiator opens; the ephemeral keys make every
//! connection's record keys fresh, so a replayed first message gets a reply under keys its
//! sender cannot know, and nothing it sends after opens.
//!
//! Versions: the initiator offers the range it speaks, the responder picks the highest it
//! shares, so nodes one version apart interoperate during a rolling upgrade; a node that shares
//! none is refused with both ranges in the reason.
//!
//! Not wired to connections yet: `crate::handshake` still authenticates them (issue 11).

use std::fmt;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use crate::record::{Opener, Sealer};
use crate::spec::NodeSpec;

/// The protocol versions this build speaks.
pub const VERSIONS: RangeInclusive<u32> = 2..=2;

/// The Noise protocol: no static keys, the pre-shared cluster key mixed in first.
const PATTERN: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";

/// Bound into both handshakes' transcripts.
const PROLOGUE: &[u8] = b"shoal transport";

/// The largest Noise message.
const MAX_MESSAGE_BYTES: usize = 65_535;

/// The cluster key: 32 bytes from a random generator, shared by every node of a cluster.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; 32]);

impl Key {
    /// A new random key, from the operating system.
    pub fn generate() -> Self {
        let mut key = [0; 32];
        // As for nonces: without OS randomness no key can be made safe.
        getrandom::fill(&mut key).expect("the operating system's random number generator failed");
        Self(key)
    }

    /// The key written as 64 hexadecimal digits (what [`Key::to_hex`] gives).
    pub fn from_hex(hex: &str) -> Result<Self, KeyError> {
        let hex = hex.trim();
        if hex.len() != 64 {
            return Err(KeyError::Length(hex.len()));
        }
        let mut key = [0; 32];
        for (byte, pair) in key.iter_mut().zip(hex.as_bytes().chunks(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| KeyError::NotHex)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| KeyError::NotHex)?;
        }
        Ok(Self(key))
    }

    /// The key as 64 hexadecimal digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// A key from its bytes (tests; keys for real clusters come from [`Key::generate`]).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// A key that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not 64 hexadecimal digits long.
    #[error("a key is 64 hexadecimal digits (32 random bytes), not {0} characters")]
    Length(usize),
    /// A character that is not a hexadecimal digit.
    #[error("a key is written in hexadecimal digits only")]
    NotHex,
}

/// What the initiator says of itself, sealed in the first message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The versions it speaks, lowest and highest.
    pub versions: (u32, u32),
    /// Its node spec.
    pub spec: NodeSpec,
    /// The channel this connection carries, and which of its connections it is.
    pub channel: String,
    /// Which of the channel's parallel connections this is.
    pub index: u16,
}

/// The responder's answer, sealed in the second message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The version both will speak.
    pub version: u32,
    /// The responder's node spec.
    pub spec: NodeSpec,
}

/// Why a keyed handshake failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoiseError {
    /// A message did not open: another key, or tampered with.
    #[error("the handshake did not authenticate (another cluster key, or tampered with)")]
    Unauthenticated,
    /// A message opened but does not hold what it should.
    #[error("malformed handshake message: {0}")]
    Malformed(String),
    /// The two nodes share no protocol version.
    #[error("no common protocol version: this node speaks {ours:?}, the other {theirs:?}")]
    NoCommonVersion {
        /// This node's versions.
        ours: (u32, u32),
        /// The other node's.
        theirs: (u32, u32),
    },
}

/// A connection's keys, and what was agreed.
pub struct Keyed<T> {
    /// What the other side said of itself.
    pub peer: T,
    /// The version both speak.
    pub version: u32,
    /// Seals what this side sends.
    pub sealer: Sealer,
    /// Opens what the other side sends.
    pub opener: Opener,
}

/// The connecting side.
pub struct Initiator {
    state: snow::HandshakeState,
}

impl Initiator {
    /// Starts a handshake with `hello`; returns the first message to send.
    pub fn start(key: &Key, hello: &Hello) -> Result<(Self, Vec<u8>), NoiseError> {
        let mut state = builder(key).build_initiator().map_err(internal)?;
        let payload =
            rmp_serde::to_vec(hello).map_err(|error| NoiseError::Malformed(error.to_string()))?;
        let first = write(&mut state, &payload)?;
        Ok((Self { state }, first))
    }

    /// Takes the responder's message: the connection's keys, and the responder's welcome.
    pub fn finish(mut self, reply: &[u8]) -> Result<Keyed<Welcome>, NoiseError> {
        let payload = read(&mut self.state, reply)?;
        let welcome: Welcome = decode(&payload)?;
        if !VERSIONS.contains(&welcome.version) {
            return Err(NoiseError::NoCommonVersion {
                ours: (*VERSIONS.start(), *VERSIONS.end()),
                theirs: (welcome.version, welcome.version),
            });
        }
        let (to_responder, to_initiator) = split(self.state)?;
        let version = welcome.version;
        Ok(Keyed {
            peer: welcome,
            version,
            sealer: Sealer::new(to_responder),
            opener: Opener::new(to_initiator),
        })
    }
}

/// The accepting side: opens the first message and answers it.
pub struct Responder;

impl Responder {
    /// Opens the initiator's first message and answers it as `us`; returns the keys, the
    /// initiator's hello, and the reply to send. A first message that does not open under `key`
    /// is refused before anything is said back.
    pub fn answer(
        key: &Key,
        first: &[u8],
        us: &NodeSpec,
    ) -> Result<(Keyed<Hello>, Vec<u8>), NoiseError> {
        let mut state = builder(key).build_responder().map_err(internal)?;
        let payload = read(&mut state, first)?;
        let hello: Hello = decode(&payload)?;
        let version = negotiate(hello.versions)?;
        let welcome = Welcome { version, spec: us.clone() };
        let payload = rmp_serde::to_vec(&welcome)
            .map_err(|error| NoiseError::Malformed(error.to_string()))?;
        let reply = write(&mut state, &payload)?;
        let (to_responder, to_initiator) = split(state)?;
        let keyed = Keyed {
            peer: hello,
            version,
            sealer: Sealer::new(to_initiator),
            opener: Opener::new(to_responder),
        };
        Ok((keyed, reply))
    }
}

/// The highest version both speak.
pub fn negotiate(theirs: (u32, u32)) -> Result<u32, NoiseError> {
    let (low, high) = (theirs.0.max(*VERSIONS.start()), theirs.1.min(*VERSIONS.end()));
    if low > high {
        return Err(NoiseError::NoCommonVersion {
            ours: (*VERSIONS.start(), *VERSIONS.end()),
            theirs,
        });
    }
    Ok(high)
}

fn builder(key: &Key) -> snow::Builder<'_> {
    let params = PATTERN.parse().expect("the Noise pattern is valid");
    snow::Builder::new(params).prologue(PROLOGUE).psk(0, &key.0)
}

fn write(state: &mut snow::HandshakeState, payload: &[u8]) -> Result<Vec<u8>, NoiseError> {
    let mut message = vec![0; MAX_MESSAGE_BYTES];
    let len = state
        .write_message(payload, &mut message)
        .map_err(|error| NoiseError::Malformed(error.to_string()))?;
    message.truncate(len);
    Ok(message)
}

fn read(state: &mut snow::HandshakeState, message: &[u8]) -> Result<Vec<u8>, NoiseError> {
    let mut payload = vec![0; MAX_MESSAGE_BYTES];
    let len = state.read_message(message, &mut payload).map_err(|_| NoiseError::Unauthenticated)?;
    payload.truncate(len);
    Ok(payload)
}

fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, NoiseError> {
    rmp_serde::from_slice(payload).map_err(|error| NoiseError::Malformed(error.to_string()))
}

/// The two record keys: initiator to responder, responder to initiator.
fn split(mut state: snow::HandshakeState) -> Result<([u8; 32], [u8; 32]), NoiseError> {
    if !state.is_handshake_finished() {
        return Err(NoiseError::Malformed("the handshake is not finished".into()));
    }
    Ok(state.dangerously_get_raw_split())
}

fn internal(error: snow::Error) -> NoiseError {
    NoiseError::Malformed(format!("noise: {error}"))
}
