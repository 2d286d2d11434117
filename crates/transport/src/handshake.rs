//! The handshake, sans-IO: Noise `NNpsk0` over the cluster [`ClusterKey`], the protocol version
//! negotiated, each connection given its two record keys (`crate::record`), and the initiator
//! proving it holds them before the responder admits it.
//!
//! ```text
//!  initiator                                          responder
//!     │ message: psk, e  [Hello: versions, spec,          │ opens only under the key; the
//!     │          channel, index, protection]              │ version is chosen here
//!     │ ────────────────────────────────────────────────▶ │
//!     │ message: e, ee   [Welcome: version, spec]         │ or a refusal in the clear (another
//!     │ ◀──────────────────────────────────────────────── │ key, no common version, same name)
//!     │ record 0: Frame::Confirm                          │ the initiator holds the keys: it
//!     │ ────────────────────────────────────────────────▶ │ is admitted by the node, or not
//!     │ record 0: Frame::Accepted | Frame::Refused        │
//!     │ ◀──────────────────────────────────────────────── │
//!     │ records: frames (initiator → responder only)      │
//! ```
//!
//! Before the keys, each side sends [`Message`]s: a kind byte, a big-endian `u16` length, and
//! that many bytes. After them, everything is in sealed records, which any alteration, replay,
//! reorder or injection fails to open.
//!
//! The cluster key is a [`ClusterKey`]: 32 random bytes, never a password. The first message can be
//! recorded by anyone on the path and is sealed under the key alone, so a guessable key could
//! be found offline; 32 random bytes cannot. Only a holder of the key can make a first message
//! the responder opens, or a reply the initiator opens. The ephemeral keys make every
//! connection's record keys fresh: a replayed first message gets a reply under keys its sender
//! cannot know, so its confirmation never opens and nothing it claims is ever admitted.
//!
//! Versions: the initiator offers the range it speaks, the responder picks the highest both
//! share ([`negotiate`]); a node that shares none is refused, with both ranges in the reason.
//! The version chosen ([`Keyed::version`]) is the connection's: its frames, `Frame::Confirm`
//! on, are in a [`crate::wire::Format`] of that version, so a release that speaks two versions
//! talks to nodes of either during a rolling upgrade (see the crate docs). [`Hello`] and [`Welcome`]
//! travel as msgpack maps, so a later version may add fields (with defaults) that this one
//! skips.
//!
//! [`Initiator`] and [`Responder`] are plain functions of their input: bytes in, bytes or the
//! outcome out. They never panic on any input.

use std::fmt;
use std::ops::RangeInclusive;

use bytes::{Buf, BytesMut};
use serde::{Deserialize, Serialize};

pub use crate::entropy::Entropy;
use crate::record::{Opener, Sealer};
use crate::spec::NodeSpec;

/// The protocol versions this build speaks. Version 2 is the first with this handshake; a
/// version 1 node (HMAC handshake, no records) cannot talk to it. Version 3 adds
/// [`crate::wire::Frame::Keep`], which is never sent on a version-2 connection. Version 4
/// adds [`crate::wire::Frame::TracedCall`] and [`crate::wire::Frame::TracedCallNamed`], which
/// go as plain calls on connections of older versions.
pub const VERSIONS: RangeInclusive<u32> = 2..=4;

/// The Noise protocol: no static keys, the pre-shared cluster key mixed in first.
const PATTERN: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";

/// Bound into both handshakes' transcripts.
const PROLOGUE: &[u8] = b"shoal transport";

/// The largest handshake message (Noise's limit, and what a `u16` length holds).
pub const MAX_MESSAGE_BYTES: usize = 65_535;

/// Bytes in front of a [`Message`]: its kind and its length.
const MESSAGE_HEAD_BYTES: usize = 3;

/// The cluster key: 32 bytes from a random generator, shared by every node of a cluster.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; 32]);

impl ClusterKey {
    /// A new random key, from the operating system.
    pub fn generate() -> Self {
        let mut key = [0; 32];
        // Without OS randomness no key can be made safe; every platform tokio runs on has it,
        // so its absence is a broken machine, not bad input.
        // tidy-allow: a new key for an operator to share, never made in a simulation.
        getrandom::fill(&mut key).expect("the operating system's random number generator failed");
        Self(key)
    }

    /// The key written as 64 hexadecimal digits (what [`ClusterKey::to_hex`] gives).
    pub fn from_hex(hex: &str) -> Result<Self, ClusterKeyError> {
        let hex = hex.trim();
        if hex.len() != 64 {
            return Err(ClusterKeyError::Length(hex.len()));
        }
        let mut key = [0; 32];
        for (byte, pair) in key.iter_mut().zip(hex.as_bytes().chunks(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| ClusterKeyError::NotHex)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| ClusterKeyError::NotHex)?;
        }
        Self::from_bytes(key)
    }

    /// A key from its 32 bytes, refused when they cannot have come from a random generator:
    /// fewer than 8 distinct byte values (32 random bytes have about 30); fewer than 8
    /// distinct steps from one byte to the next (a count such as `00 01 … 1f`, or a short
    /// pattern repeated: 31 random steps take about 29 values); or printable characters only
    /// (a password, which random bytes are with a chance of 10⁻¹⁴). A generated key is refused
    /// with a chance far below 10⁻¹³.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, ClusterKeyError> {
        let distinct = distinct_values(bytes);
        if distinct < 8 {
            return Err(ClusterKeyError::NotRandom(distinct));
        }
        let mut steps = [0u8; 31];
        for (step, pair) in steps.iter_mut().zip(bytes.windows(2)) {
            *step = pair[1].wrapping_sub(pair[0]);
        }
        let distinct_steps = distinct_values(steps);
        if distinct_steps < 8 {
            return Err(ClusterKeyError::Pattern(distinct_steps));
        }
        if bytes.iter().all(|byte| (0x20..=0x7e).contains(byte)) {
            return Err(ClusterKeyError::Text);
        }
        Ok(Self(bytes))
    }

    /// The key as 64 hexadecimal digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl std::str::FromStr for ClusterKey {
    type Err = ClusterKeyError;

    fn from_str(hex: &str) -> Result<Self, ClusterKeyError> {
        Self::from_hex(hex)
    }
}

/// How many distinct values `bytes` holds.
fn distinct_values<const N: usize>(bytes: [u8; N]) -> usize {
    let mut seen = [false; 256];
    for byte in bytes {
        seen[usize::from(byte)] = true;
    }
    seen.iter().filter(|seen| **seen).count()
}

/// A key that was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterKeyError {
    /// Not 64 hexadecimal digits long.
    #[error(
        "a key is 64 hexadecimal digits (32 random bytes, from `shoal-node generate-key`), \
         not {0} characters"
    )]
    Length(usize),
    /// A character that is not a hexadecimal digit.
    #[error("a key is written in hexadecimal digits only")]
    NotHex,
    /// Too few distinct bytes to be random.
    #[error(
        "a key of only {0} distinct byte values is not random: generate one \
         (`shoal-node generate-key`)"
    )]
    NotRandom(usize),
    /// Too few distinct steps from one byte to the next to be random: a count, or a pattern.
    #[error(
        "a key whose bytes step by only {0} distinct amounts is a pattern, not random: \
         generate one (`shoal-node generate-key`)"
    )]
    Pattern(usize),
    /// Printable characters only: a password or a phrase, not random bytes.
    #[error(
        "a key of printable characters only is a password, not random bytes: generate one \
         (`shoal-node generate-key`)"
    )]
    Text,
}

/// What protects a connection's records after its handshake. Integrity is never off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Protection {
    /// Encrypted and authenticated (ChaCha20-Poly1305): the default.
    #[default]
    Encrypted,
    /// Authenticated but readable on the path (Poly1305 over the plaintext): for a network
    /// that is already private, at less CPU. Alteration, replay, reorder and injection are
    /// still caught.
    Authenticated,
    /// No records: after the handshake, bytes travel unprotected. Only with the `unsealed`
    /// cargo feature, to measure what integrity costs; a node accepts it only when it runs
    /// unsealed itself.
    #[cfg(feature = "unsealed")]
    Unsealed,
}

/// What the initiator says of itself, sealed in the first message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The versions it speaks, lowest and highest.
    pub versions: (u32, u32),
    /// Its node spec.
    pub spec: NodeSpec,
    /// The channel this connection carries.
    pub channel: String,
    /// Which of the channel's parallel connections this is.
    pub index: u16,
    /// How both directions of the connection are protected (the initiator's setting: the
    /// connection carries its data).
    pub protection: Protection,
    /// The connection only introduces its node (a join): the responder admits it, answers,
    /// and closes it, never taking it as one of the node's connections (which a probe that
    /// arrives after the node's own connection would otherwise replace).
    #[serde(default)]
    pub probe: bool,
    /// Which of the initiator's connection attempts to this peer the connection belongs to:
    /// every connection of one attempt carries the same number, later attempts larger ones
    /// (0 for a probe).
    #[serde(default)]
    pub attempt: u64,
    /// The latest of the responder's own connection attempts whose connections the initiator
    /// has closed (it took the responder down; 0 when none). When the responder is up on a
    /// session that attempt (or an earlier one) opened, that session is dead: the responder
    /// takes the initiator down before it takes this connection, instead of noticing later and
    /// closing this connection with the dead session's.
    #[serde(default)]
    pub released: u64,
}

impl Hello {
    /// A hello offering every version this build speaks.
    pub fn new(spec: NodeSpec, channel: &str, index: u16, protection: Protection) -> Self {
        let versions = (*VERSIONS.start(), *VERSIONS.end());
        Self {
            versions,
            spec,
            channel: channel.to_owned(),
            index,
            protection,
            probe: false,
            attempt: 0,
            released: 0,
        }
    }
}

/// The responder's answer, sealed in the second message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The version both will speak.
    pub version: u32,
    /// The responder's node spec.
    pub spec: NodeSpec,
}

/// Why a handshake failed. The connection is closed; nothing it carried was delivered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// A message did not open: the other side holds another cluster key, or it was tampered
    /// with on the way.
    #[error("the handshake did not authenticate (another cluster key, or tampered with)")]
    Unauthenticated,
    /// Something that opened (or a message's framing) does not hold what it should.
    #[error("malformed handshake: {0}")]
    Malformed(String),
    /// The two nodes share no protocol version.
    #[error("no common protocol version: this node speaks {ours:?}, the other {theirs:?}")]
    NoCommonVersion {
        /// This node's versions, lowest and highest.
        ours: (u32, u32),
        /// The other node's.
        theirs: (u32, u32),
    },
    /// The other side asks for a protection this node does not run.
    #[error("the peer asks for {theirs:?} records, and this node runs {ours:?}")]
    Protection {
        /// This node's.
        ours: Protection,
        /// The other's.
        theirs: Protection,
    },
    /// The peer claims this node's own name.
    #[error("name clash: the peer calls itself {0:?}, which is this node's name")]
    SameName(String),
    /// Something that does not belong at this step.
    #[error("unexpected {got} during the handshake (expected {expected})")]
    Unexpected {
        /// What the handshake waited for.
        expected: &'static str,
        /// What came.
        got: &'static str,
    },
    /// The other side refused the connection, and why. A refusal before the keys is not
    /// authenticated (anyone on the path could send one, as anyone can close a connection).
    #[error("refused by the peer: {0}")]
    Refused(String),
}

impl HandshakeError {
    /// Whether the other side should be told why it was turned away.
    pub fn tell_peer(&self) -> bool {
        !matches!(self, Self::Refused(_))
    }
}

/// A handshake message before the keys, as it travels: a kind byte, a big-endian `u16`
/// length, the bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A Noise handshake message (kind 0).
    Noise(Vec<u8>),
    /// Why the connection is refused, in the clear (kind 1).
    Refusal(String),
}

impl Message {
    /// Appends the message to `out`. A longer one is cut at [`MAX_MESSAGE_BYTES`] (only a
    /// refusal's reason can be: Noise messages never are).
    pub fn encode(&self, out: &mut BytesMut) {
        let (kind, bytes) = match self {
            Self::Noise(bytes) => (0, bytes.as_slice()),
            Self::Refusal(reason) => (1, reason.as_bytes()),
        };
        let bytes = &bytes[..bytes.len().min(MAX_MESSAGE_BYTES)];
        out.extend_from_slice(&[kind]);
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(bytes);
    }

    /// Takes the next whole message off the front of `buffer`; `None` until one is whole.
    pub fn decode(buffer: &mut BytesMut) -> Result<Option<Self>, HandshakeError> {
        let Some(head) = buffer.get(..MESSAGE_HEAD_BYTES) else { return Ok(None) };
        let (kind, len) = (head[0], usize::from(u16::from_be_bytes([head[1], head[2]])));
        if kind > 1 {
            return Err(HandshakeError::Malformed(format!("a message of kind {kind}")));
        }
        if buffer.len() < MESSAGE_HEAD_BYTES + len {
            return Ok(None);
        }
        buffer.advance(MESSAGE_HEAD_BYTES);
        let bytes = buffer.split_to(len).to_vec();
        Ok(Some(match kind {
            0 => Self::Noise(bytes),
            _ => Self::Refusal(String::from_utf8_lossy(&bytes).into_owned()),
        }))
    }

    /// What it is, for errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Noise(_) => "handshake message",
            Self::Refusal(_) => "refusal",
        }
    }
}

/// A connection's keys, and what was agreed.
pub struct Keyed<T> {
    /// What the other side said of itself.
    pub peer: T,
    /// The version both speak.
    pub version: u32,
    /// How the records are protected.
    pub protection: Protection,
    /// Seals what this side sends.
    pub sealer: Sealer,
    /// Opens what the other side sends.
    pub opener: Opener,
}

/// The connecting side.
pub struct Initiator {
    state: snow::HandshakeState,
    name: String,
    protection: Protection,
}

impl Initiator {
    /// Starts a handshake with `hello`; returns the first message to send.
    pub fn start(key: &ClusterKey, hello: &Hello) -> Result<(Self, Message), HandshakeError> {
        Self::start_with(key, hello, &Entropy::os())
    }

    /// [`Initiator::start`], its ephemeral key drawn from `entropy`.
    pub fn start_with(
        key: &ClusterKey,
        hello: &Hello,
        entropy: &Entropy,
    ) -> Result<(Self, Message), HandshakeError> {
        let mut state = builder(key, entropy).build_initiator().map_err(internal)?;
        let payload = rmp_serde::to_vec_named(hello)
            .map_err(|error| HandshakeError::Malformed(error.to_string()))?;
        let first = write(&mut state, &payload)?;
        let initiator = Self { state, name: hello.spec.name.clone(), protection: hello.protection };
        Ok((initiator, Message::Noise(first)))
    }

    /// Takes the responder's answer: the connection's keys and the responder's welcome, or
    /// why not. The initiator then sends [`crate::wire::Frame::Confirm`] as its first record.
    pub fn finish(mut self, reply: Message) -> Result<Keyed<Welcome>, HandshakeError> {
        let reply = match reply {
            Message::Noise(reply) => reply,
            Message::Refusal(reason) => return Err(HandshakeError::Refused(reason)),
        };
        let payload = read(&mut self.state, &reply)?;
        let welcome: Welcome = decode(&payload)?;
        if !VERSIONS.contains(&welcome.version) {
            return Err(HandshakeError::NoCommonVersion {
                ours: (*VERSIONS.start(), *VERSIONS.end()),
                theirs: (welcome.version, welcome.version),
            });
        }
        if welcome.spec.name == self.name {
            return Err(HandshakeError::SameName(welcome.spec.name));
        }
        let (to_responder, to_initiator) = split(self.state)?;
        let protection = self.protection;
        Ok(Keyed {
            version: welcome.version,
            peer: welcome,
            protection,
            sealer: Sealer::new(to_responder, protection),
            opener: Opener::new(to_initiator, protection),
        })
    }
}

/// The accepting side: opens the first message and answers it.
pub struct Responder;

impl Responder {
    /// Opens the initiator's first message and answers it as `us`, whose records are protected
    /// by `ours`: the keys, the initiator's hello, and the reply to send. A first message that
    /// does not open under `key` is refused before anything is said back; one that opens is
    /// not yet proof of anything (it may be replayed): the initiator's first record is.
    pub fn answer(
        key: &ClusterKey,
        first: &[u8],
        us: &NodeSpec,
        ours: Protection,
    ) -> Result<(Keyed<Hello>, Message), HandshakeError> {
        Self::answer_with(key, first, us, ours, &Entropy::os())
    }

    /// [`Responder::answer`], its ephemeral key drawn from `entropy`.
    pub fn answer_with(
        key: &ClusterKey,
        first: &[u8],
        us: &NodeSpec,
        ours: Protection,
        entropy: &Entropy,
    ) -> Result<(Keyed<Hello>, Message), HandshakeError> {
        let mut state = builder(key, entropy).build_responder().map_err(internal)?;
        let payload = read(&mut state, first)?;
        let hello: Hello = decode(&payload)?;
        let version = negotiate(hello.versions)?;
        if hello.spec.name == us.name {
            return Err(HandshakeError::SameName(hello.spec.name));
        }
        check_protection(ours, hello.protection)?;
        let welcome = Welcome { version, spec: us.clone() };
        let payload = rmp_serde::to_vec_named(&welcome)
            .map_err(|error| HandshakeError::Malformed(error.to_string()))?;
        let reply = write(&mut state, &payload)?;
        let (to_responder, to_initiator) = split(state)?;
        let protection = hello.protection;
        let keyed = Keyed {
            peer: hello,
            version,
            protection,
            sealer: Sealer::new(to_initiator, protection),
            opener: Opener::new(to_responder, protection),
        };
        Ok((keyed, Message::Noise(reply)))
    }
}

/// The highest version both speak, given the other side's lowest and highest.
pub fn negotiate(theirs: (u32, u32)) -> Result<u32, HandshakeError> {
    let (low, high) = (theirs.0.max(*VERSIONS.start()), theirs.1.min(*VERSIONS.end()));
    if low > high {
        return Err(HandshakeError::NoCommonVersion {
            ours: (*VERSIONS.start(), *VERSIONS.end()),
            theirs,
        });
    }
    Ok(high)
}

/// Either protection with records is accepted from any peer (each node decides what its own
/// data is worth); a connection without records only between nodes that both run so.
fn check_protection(ours: Protection, theirs: Protection) -> Result<(), HandshakeError> {
    #[cfg(feature = "unsealed")]
    if (ours == Protection::Unsealed) != (theirs == Protection::Unsealed) {
        return Err(HandshakeError::Protection { ours, theirs });
    }
    let _ = (ours, theirs);
    Ok(())
}

fn builder<'a>(key: &'a ClusterKey, entropy: &Entropy) -> snow::Builder<'a> {
    let params = PATTERN.parse().expect("the Noise pattern is valid");
    let builder = match entropy.resolver() {
        None => snow::Builder::new(params),
        Some(resolver) => snow::Builder::with_resolver(params, resolver),
    };
    builder.prologue(PROLOGUE).psk(0, &key.0)
}

fn write(state: &mut snow::HandshakeState, payload: &[u8]) -> Result<Vec<u8>, HandshakeError> {
    let mut message = vec![0; MAX_MESSAGE_BYTES];
    let len = state
        .write_message(payload, &mut message)
        .map_err(|error| HandshakeError::Malformed(error.to_string()))?;
    message.truncate(len);
    Ok(message)
}

fn read(state: &mut snow::HandshakeState, message: &[u8]) -> Result<Vec<u8>, HandshakeError> {
    let mut payload = vec![0; MAX_MESSAGE_BYTES];
    let len =
        state.read_message(message, &mut payload).map_err(|_| HandshakeError::Unauthenticated)?;
    payload.truncate(len);
    Ok(payload)
}

fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, HandshakeError> {
    rmp_serde::from_slice(payload).map_err(|error| HandshakeError::Malformed(error.to_string()))
}

/// The two record keys: initiator to responder, responder to initiator.
fn split(mut state: snow::HandshakeState) -> Result<([u8; 32], [u8; 32]), HandshakeError> {
    if !state.is_handshake_finished() {
        return Err(HandshakeError::Malformed("the handshake is not finished".into()));
    }
    Ok(state.dangerously_get_raw_split())
}

fn internal(error: snow::Error) -> HandshakeError {
    HandshakeError::Malformed(format!("noise: {error}"))
}
