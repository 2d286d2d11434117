//! The wire format: length-prefixed msgpack frames.
//!
//! Every frame on a connection is a big-endian `u32` byte count followed by that many bytes
//! of msgpack (rmp-serde) encoding one [`Frame`]. Payloads (encoded messages, replies, RPC
//! arguments) travel as msgpack *bin* values, never as arrays of integers. Both sides bound
//! a frame by the node's configured maximum: a longer one is refused before it is buffered.
//!
//! Every encoder and decoder works in a [`Format`]: the protocol version the connection's
//! handshake negotiated ([`crate::handshake::negotiate`]) and the largest frame. A release
//! that changes how a frame is laid out keeps the old layout for the version before it, and
//! chooses by [`Format::version`]: a node then speaks the old layout on its connections with
//! nodes not yet upgraded and the new one on the rest. This build speaks versions 2 to 4,
//! in the layout described here: version 3 adds [`Frame::Keep`], which a node sends only on
//! connections of version 3 or later ([`KEEP_SINCE_VERSION`]) and accepts on any; version 4
//! adds [`Frame::TracedCall`] and [`Frame::TracedCallNamed`], calls that carry the caller's
//! trace context ([`TraceParent`]), which the encoder lays out as the plain [`Frame::Call`] and
//! [`Frame::CallNamed`] (the context left out) on connections of older versions
//! ([`TRACE_SINCE_VERSION`]).
//!
//! Nothing here does I/O: [`encode_frame`] appends to a buffer and [`FrameDecoder`] takes
//! bytes as they arrive, so the same code serves TCP, a simulated network and the fuzz tests.
//! A malformed or oversized frame is a [`FrameError`]; the caller closes that one connection.
//!
//! ```
//! use bytes::BytesMut;
//! use shoal_transport::wire::{Format, Frame, FrameDecoder, encode_frame};
//!
//! let format = Format::latest(1024);
//! let mut out = BytesMut::new();
//! encode_frame(&Frame::Ping { id: 7 }, &mut out, format)?;
//! let mut decoder = FrameDecoder::new(format);
//! decoder.extend(&out);
//! assert_eq!(decoder.next_frame()?, Some(Frame::Ping { id: 7 }));
//! assert_eq!(decoder.next_frame()?, None);
//! # Ok::<(), shoal_transport::wire::FrameError>(())
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use shoal_process::{ExitKind, ExitReason, Pid, Ref, RemoteFailure, SpanId, TraceContext, TraceId};

use crate::NodeSpec;
use crate::handshake::VERSIONS;

mod hot;

/// The first protocol version with [`Frame::Keep`].
pub const KEEP_SINCE_VERSION: u32 = 3;

/// The first protocol version with [`Frame::TracedCall`] and [`Frame::TracedCallNamed`].
pub const TRACE_SINCE_VERSION: u32 = 4;

/// Bytes of the length prefix in front of every frame.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// How the frames of one connection are encoded and decoded: the protocol version its
/// handshake negotiated, and the largest frame either side takes (length prefix excluded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format {
    version: u32,
    max_frame_bytes: usize,
}

impl Format {
    /// Frames of `version`, up to `max_frame_bytes`; refused for a version this build does not
    /// speak ([`crate::handshake::VERSIONS`]), which no handshake negotiates.
    pub fn new(version: u32, max_frame_bytes: usize) -> Result<Self, FrameError> {
        if !VERSIONS.contains(&version) {
            return Err(FrameError::Version(version));
        }
        Ok(Self { version, max_frame_bytes })
    }

    /// Frames of the newest version this build speaks, up to `max_frame_bytes`.
    pub const fn latest(max_frame_bytes: usize) -> Self {
        Self { version: *VERSIONS.end(), max_frame_bytes }
    }

    /// The protocol version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The largest frame, in bytes, length prefix excluded.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// The same version, frames up to `max_frame_bytes`.
    pub fn with_max_frame_bytes(self, max_frame_bytes: usize) -> Self {
        Self { max_frame_bytes, ..self }
    }
}

/// One message between two nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Frame {
    /// Handshake, initiator → responder, its first record: it holds the connection's keys (a
    /// replayed first message cannot send one), see [`crate::handshake`].
    Confirm,
    /// Handshake, responder → initiator: the connection is open.
    Accepted,
    /// Handshake, responder → initiator: the node refused the connection, and why.
    Refused {
        /// What was wrong, for the other side's log.
        reason: String,
    },

    /// Liveness probe; answered with [`Frame::Pong`] on the answering node's control channel.
    Ping {
        /// Echoed in the pong.
        id: u64,
    },
    /// Answer to [`Frame::Ping`].
    Pong {
        /// The ping's id.
        id: u64,
    },
    /// Full-mesh membership: the sender's view of the live members, and of who left.
    Gossip {
        /// Members, the sender included.
        members: Vec<NodeSpec>,
        /// Nodes that left: name and the incarnation that left.
        left: Vec<(String, u64)>,
    },
    /// The sender leaves the cluster for good (this incarnation).
    Leave {
        /// The incarnation that leaves.
        incarnation: u64,
    },

    /// An encoded message for a process.
    Cast {
        /// The receiver.
        to: Pid,
        /// The message, encoded by the sender.
        #[serde(with = "zero_copy")]
        payload: Bytes,
    },
    /// An encoded request for a process, answered with [`Frame::Reply`].
    Call {
        /// Matches the reply to the call on the calling node.
        id: u64,
        /// The receiver.
        to: Pid,
        /// The request, encoded.
        #[serde(with = "zero_copy")]
        payload: Bytes,
    },
    /// The answer to a [`Frame::Call`], [`Frame::CallNamed`] or [`Frame::Request`].
    Reply {
        /// The id of the call or request.
        id: u64,
        /// The encoded answer, or why there is none.
        outcome: Result<Bytes, Failure>,
    },
    /// An exit signal.
    Exit {
        /// The receiver.
        to: Pid,
        /// The sender.
        from: Pid,
        /// Why.
        reason: ExitReason,
        /// Through a link or direct.
        kind: ExitKind,
    },
    /// A monitored process exited.
    Down {
        /// The watcher.
        to: Pid,
        /// The monitor.
        monitor: Ref,
        /// The process that exited.
        pid: Pid,
        /// Why.
        reason: ExitReason,
    },
    /// A process of the sending node monitors `target`.
    Monitor {
        /// The monitored process.
        target: Pid,
        /// The watcher, on the sending node.
        watcher: Pid,
        /// The monitor.
        monitor: Ref,
    },
    /// A monitor set up with [`Frame::Monitor`] or [`Frame::MonitorName`] is removed (the
    /// receiver removes it from the process the monitor was set on, whatever `target` says).
    Demonitor {
        /// The monitored process.
        target: Pid,
        /// The monitor.
        monitor: Ref,
    },
    /// A process of the sending node links to `to`.
    Link {
        /// The receiver's process.
        to: Pid,
        /// The sender's process.
        from: Pid,
    },
    /// A link made with [`Frame::Link`] is removed.
    Unlink {
        /// The receiver's process.
        to: Pid,
        /// The sender's process.
        from: Pid,
    },
    /// An encoded message for the process registered as `name` on the receiving node.
    CastNamed {
        /// The registered name.
        name: String,
        /// The message, encoded.
        #[serde(with = "zero_copy")]
        payload: Bytes,
    },
    /// An encoded request for the process registered as `name`; answered with
    /// [`Frame::Reply`].
    CallNamed {
        /// Matches the reply.
        id: u64,
        /// The registered name.
        name: String,
        /// The request, encoded.
        #[serde(with = "zero_copy")]
        payload: Bytes,
    },
    /// A node-level request, answered with [`Frame::Reply`].
    Request {
        /// Matches the reply.
        id: u64,
        /// What is asked.
        request: Request,
    },
    /// A process of the sending node monitors whichever process is registered as `name` on
    /// the receiving node now; answered with [`Frame::Down`] with `target` as its pid and
    /// `noproc` if none is, else handled as a [`Frame::Monitor`] of that process.
    MonitorName {
        /// Stands for the process until the name is resolved
        /// ([`shoal_process::Pid::name_placeholder`] of the receiving node).
        target: Pid,
        /// The registered name.
        name: String,
        /// The watcher, on the sending node.
        watcher: Pid,
        /// The monitor.
        monitor: Ref,
    },
    /// The receiving node's process addressed as `to` holds more messages than its mailbox's
    /// capacity: the sending node holds further casts and calls to it, addressed that way,
    /// until [`Frame::Resume`] (see `crate::remote`, "Head-of-line").
    Hold {
        /// The process, as the held senders address it.
        to: Addressee,
    },
    /// The process of a [`Frame::Hold`] has made room: casts and calls to it go again.
    Resume {
        /// The process, as in the hold.
        to: Addressee,
    },
    /// How many bytes the sending node has read on each connection the receiving node opened
    /// to it (after the handshake), so that the receiving node can tell a connection that makes
    /// no progress (see `crate::progress`).
    Received {
        /// Channel, connection index, bytes read.
        counts: Vec<(String, u16, u64)>,
    },
    /// Whether a layer on the sending node keeps its connections to the receiving node
    /// ([`crate::Node::keep`]): while it does, the receiving node does not close them when
    /// they are idle ([`crate::Membership::Managed`]). Sent when that changes, when a
    /// session begins, and every few heartbeats; only on connections of version
    /// [`KEEP_SINCE_VERSION`] or later.
    Keep {
        /// Whether it keeps them.
        keep: bool,
    },
    /// A [`Frame::Call`] made inside a span a subscriber records: it carries the caller's
    /// trace context, for the callee's span to join the trace. Version
    /// [`TRACE_SINCE_VERSION`] on; encoded as a plain `Call` on older connections.
    TracedCall {
        /// Matches the reply to the call on the calling node.
        id: u64,
        /// The receiver.
        to: Pid,
        /// The request, encoded.
        #[serde(with = "zero_copy")]
        payload: Bytes,
        /// The caller's trace context.
        trace: TraceParent,
    },
    /// A [`Frame::CallNamed`] with the caller's trace context, as [`Frame::TracedCall`].
    TracedCallNamed {
        /// Matches the reply.
        id: u64,
        /// The registered name.
        name: String,
        /// The request, encoded.
        #[serde(with = "zero_copy")]
        payload: Bytes,
        /// The caller's trace context.
        trace: TraceParent,
    },
}

/// A trace context on the wire, as W3C's `traceparent` holds it: the trace id (in two
/// halves, high first), the id of the caller's span, and the trace flags (bit 0: sampled;
/// other bits are ignored). Whatever a peer sends decodes; whether it is valid (neither id
/// zero) is asked with [`TraceParent::context`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceParent {
    trace_id_high: u64,
    trace_id_low: u64,
    parent_span_id: u64,
    flags: u8,
}

impl TraceParent {
    /// W3C's `sampled` trace flag.
    const SAMPLED: u8 = 0x01;

    /// The context it carries; `None` when it is not valid (a zero id), which the receiving
    /// node counts and ignores: the call is handled, untraced.
    pub fn context(&self) -> Option<TraceContext> {
        let context = TraceContext {
            trace_id: TraceId::from_u128(
                u128::from(self.trace_id_high) << 64 | u128::from(self.trace_id_low),
            ),
            span_id: SpanId(self.parent_span_id),
            sampled: self.flags & Self::SAMPLED != 0,
        };
        context.is_valid().then_some(context)
    }
}

impl From<TraceContext> for TraceParent {
    fn from(context: TraceContext) -> Self {
        Self {
            trace_id_high: (context.trace_id.as_u128() >> 64) as u64,
            trace_id_low: context.trace_id.as_u128() as u64,
            parent_span_id: context.span_id.0,
            flags: if context.sampled { Self::SAMPLED } else { 0 },
        }
    }
}

/// How a sender addresses a process on another node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Addressee {
    /// By pid.
    Pid(Pid),
    /// By the name it is registered under on its node.
    Name(String),
}

impl Frame {
    /// The frame's variant name, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Confirm => "confirm",
            Self::Accepted => "accepted",
            Self::Refused { .. } => "refused",
            Self::Ping { .. } => "ping",
            Self::Pong { .. } => "pong",
            Self::Gossip { .. } => "gossip",
            Self::Leave { .. } => "leave",
            Self::Cast { .. } => "cast",
            Self::Call { .. } => "call",
            Self::Reply { .. } => "reply",
            Self::Exit { .. } => "exit",
            Self::Down { .. } => "down",
            Self::Monitor { .. } => "monitor",
            Self::Demonitor { .. } => "demonitor",
            Self::Link { .. } => "link",
            Self::Unlink { .. } => "unlink",
            Self::CastNamed { .. } => "cast-named",
            Self::CallNamed { .. } => "call-named",
            Self::Request { .. } => "request",
            Self::MonitorName { .. } => "monitor_name",
            Self::Hold { .. } => "hold",
            Self::Resume { .. } => "resume",
            Self::Received { .. } => "received",
            Self::Keep { .. } => "keep",
            Self::TracedCall { .. } => "traced-call",
            Self::TracedCallNamed { .. } => "traced-call-named",
        }
    }

    /// This frame as a connection of protocol `version` takes it, when that is another frame:
    /// a traced call as a plain one, before [`TRACE_SINCE_VERSION`].
    fn older_layout(&self, version: u32) -> Option<Frame> {
        if version >= TRACE_SINCE_VERSION {
            return None;
        }
        match self {
            Self::TracedCall { id, to, payload, .. } => {
                Some(Self::Call { id: *id, to: *to, payload: payload.clone() })
            }
            Self::TracedCallNamed { id, name, payload, .. } => {
                Some(Self::CallNamed { id: *id, name: name.clone(), payload: payload.clone() })
            }
            _ => None,
        }
    }
}

/// A node-level request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Request {
    /// Is this process alive? Answered with an encoded `bool`.
    IsAlive(Pid),
    /// Spawn from a factory; answered with the encoded [`Pid`].
    Spawn {
        /// The factory's registered name.
        factory: String,
        /// Encoded start arguments.
        #[serde(with = "zero_copy")]
        args: Bytes,
    },
    /// Run the RPC handler `name`; answered with its encoded result. When `then` names
    /// another handler, it runs on the target with that result before the answer is sent.
    Rpc {
        /// The handler.
        name: String,
        /// Encoded arguments.
        #[serde(with = "zero_copy")]
        args: Bytes,
        /// A handler to run right after, with the first one's encoded result.
        then: Option<String>,
    },
}

/// Why a call or request has no answer, as reported by the node that handled it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// The target process failed the call.
    #[error(transparent)]
    Process(#[from] RemoteFailure),
    /// No process is registered under that name.
    #[error("no process is registered as {0:?}")]
    NotRegistered(String),
    /// No RPC handler is registered under that name.
    #[error("no RPC handler is registered as {0:?}")]
    UnknownHandler(String),
    /// The RPC handler failed (its error message, or its panic message).
    #[error("the RPC handler failed: {0}")]
    Handler(String),
    /// The spawn failed.
    #[error("the spawn failed: {0}")]
    Spawn(String),
}

/// A frame that could not be read or written. The connection it came from must be closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more bytes than the maximum frame size.
    #[error("a frame of {len} bytes exceeds the maximum of {max} bytes")]
    Oversized {
        /// The announced (or, when writing, encoded) length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The bytes of a frame are not a valid msgpack [`Frame`].
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A frame could not be encoded (a payload type that msgpack cannot represent).
    #[error("a frame could not be encoded: {0}")]
    Encode(String),
    /// Frames of a protocol version this build does not speak were asked for.
    #[error("protocol version {0} is not one this build speaks")]
    Version(u32),
}

/// Appends `frame`, length prefix first, to `out`, as `format` lays it out. Returns the
/// bytes appended. Nothing is appended on error.
pub fn encode_frame(
    frame: &Frame,
    out: &mut BytesMut,
    format: Format,
) -> Result<usize, FrameError> {
    let max_frame_bytes = format.max_frame_bytes;
    if let Some((head, payload)) = hot::split(frame) {
        let header = hot::Header::new(&head, payload.len());
        let len = header.bytes().len() + payload.len();
        if len > max_frame_bytes {
            return Err(FrameError::Oversized { len, max: max_frame_bytes });
        }
        out.reserve(LENGTH_PREFIX_BYTES + len);
        out.put_slice(&prefix(len));
        out.put_slice(header.bytes());
        out.put_slice(payload);
        return Ok(LENGTH_PREFIX_BYTES + len);
    }
    if let Some(older) = frame.older_layout(format.version) {
        return encode_frame(&older, out, format);
    }
    let start = out.len();
    out.put_u32(0);
    let written = rmp_serde::encode::write(&mut out.writer(), frame);
    let len = out.len() - start - LENGTH_PREFIX_BYTES;
    let outcome = match written {
        Err(error) => Err(FrameError::Encode(error.to_string())),
        Ok(()) if len > max_frame_bytes => Err(FrameError::Oversized { len, max: max_frame_bytes }),
        Ok(()) => {
            out[start..start + LENGTH_PREFIX_BYTES].copy_from_slice(&prefix(len));
            return Ok(len + LENGTH_PREFIX_BYTES);
        }
    };
    out.truncate(start);
    outcome
}

/// Like [`encode_frame`], except that a cast's, call's or reply's payload of at least
/// `large_payload_bytes` is not copied: only the length prefix and the frame up to the payload
/// are appended, and the payload is returned, to be written right after them.
pub(crate) fn encode_frame_head<'f>(
    frame: &'f Frame,
    out: &mut BytesMut,
    format: Format,
    large_payload_bytes: usize,
) -> Result<Option<&'f Bytes>, FrameError> {
    let max_frame_bytes = format.max_frame_bytes;
    match hot::split(frame) {
        Some((head, payload)) if payload.len() >= large_payload_bytes => {
            let header = hot::Header::new(&head, payload.len());
            let len = header.bytes().len() + payload.len();
            if len > max_frame_bytes {
                return Err(FrameError::Oversized { len, max: max_frame_bytes });
            }
            out.put_slice(&prefix(len));
            out.put_slice(header.bytes());
            Ok(Some(payload))
        }
        _ => encode_frame(frame, out, format).map(|_| None),
    }
}

/// The length prefix of a body of `len` bytes. `len` is at most the maximum frame size,
/// which the node configuration keeps within `u32`.
fn prefix(len: usize) -> [u8; LENGTH_PREFIX_BYTES] {
    u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes()
}

/// The least room kept free for the next read from the socket.
const READ_BYTES: usize = 64 * 1024;

/// Splits a byte stream into frames.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: BytesMut,
    format: Format,
}

impl FrameDecoder {
    /// A decoder of frames in `format`, which refuses frames longer than its maximum.
    pub fn new(format: Format) -> Self {
        Self { buffer: BytesMut::with_capacity(READ_BYTES), format }
    }

    /// Refuses frames longer than `max_frame_bytes` from now on.
    pub fn set_max_frame_bytes(&mut self, max_frame_bytes: usize) {
        self.format = self.format.with_max_frame_bytes(max_frame_bytes);
    }

    /// Adds bytes read from the connection.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The buffer to read into directly (for `AsyncReadExt::read_buf`), with room for at
    /// least one good-sized read.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        if self.buffer.capacity() - self.buffer.len() < READ_BYTES / 4 {
            self.buffer.reserve(READ_BYTES);
        }
        &mut self.buffer
    }

    /// The next whole frame, `None` when more bytes are needed. After an error the decoder
    /// is in an unspecified state: close the connection.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some(prefix) = self.buffer.get(..LENGTH_PREFIX_BYTES) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let max = self.format.max_frame_bytes;
        if len > max {
            return Err(FrameError::Oversized { len, max });
        }
        if self.buffer.len() < LENGTH_PREFIX_BYTES + len {
            // Room for the whole frame now, so the next reads do not reallocate piecemeal;
            // at least a read's worth, since frames sliced out share (and so pin) the buffer.
            let missing = LENGTH_PREFIX_BYTES + len - self.buffer.len();
            self.buffer.reserve(missing.max(READ_BYTES));
            return Ok(None);
        }
        let body = &self.buffer[LENGTH_PREFIX_BYTES..LENGTH_PREFIX_BYTES + len];
        if let Some((head, payload)) = hot::parse(body) {
            // Only the payload is split off (one reference count), the rest skipped.
            self.buffer.advance(LENGTH_PREFIX_BYTES + payload.start);
            let bytes = self.buffer.split_to(payload.len()).freeze();
            self.buffer.advance(len - payload.end);
            return Ok(Some(head.with_payload(bytes)));
        }
        self.buffer.advance(LENGTH_PREFIX_BYTES);
        let body = self.buffer.split_to(len).freeze();
        decode_body(&body, self.format).map(Some)
    }
}

/// Decodes one frame body (without its length prefix) as `format` lays it out, sharing its
/// payloads with `body` rather than copying them. The decoder borrows from the slice, so a
/// forged length can never make it allocate more than the frame holds. The body must be
/// exactly one frame, within the format's maximum: bytes left over after it are an error (a
/// frame with a forged length, or two run together).
pub fn decode_body(body: &Bytes, format: Format) -> Result<Frame, FrameError> {
    if body.len() > format.max_frame_bytes {
        return Err(FrameError::Oversized { len: body.len(), max: format.max_frame_bytes });
    }
    if let Some((head, payload)) = hot::parse(body) {
        return Ok(head.with_payload(body.slice(payload)));
    }
    zero_copy::FRAME.with(|current| *current.borrow_mut() = Some(body.clone()));
    let frame = rmp_serde::from_slice::<Frame>(body);
    zero_copy::FRAME.with(|current| current.borrow_mut().take());
    let frame = frame.map_err(|error| FrameError::Malformed(error.to_string()))?;
    match value_len(body) {
        Some(len) if len == body.len() => Ok(frame),
        Some(len) => Err(FrameError::Malformed(format!(
            "{} bytes left over after the frame",
            body.len() - len
        ))),
        None => Err(FrameError::Malformed("the frame does not end where it says".into())),
    }
}

/// The length of the msgpack value at the start of `bytes`, by walking its markers (payloads
/// are skipped, not read); `None` if it runs past the end or holds an invalid marker.
fn value_len(bytes: &[u8]) -> Option<usize> {
    let mut at = 0usize;
    // Values still to skip: each takes at least one byte, so a forged count runs out of bytes.
    let mut pending: u64 = 1;
    let take = |at: &mut usize, n: usize| -> Option<u64> {
        let field = bytes.get(*at..at.checked_add(n)?)?;
        *at += n;
        Some(field.iter().fold(0u64, |value, byte| value << 8 | u64::from(*byte)))
    };
    while pending > 0 {
        pending -= 1;
        let marker = take(&mut at, 1)? as u8;
        let (skip, children): (u64, u64) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * u64::from(marker & 0x0f)),
            0x90..=0x9f => (0, u64::from(marker & 0x0f)),
            0xa0..=0xbf => (u64::from(marker & 0x1f), 0),
            0xc4 | 0xd9 => (take(&mut at, 1)?, 0),
            0xc5 | 0xda => (take(&mut at, 2)?, 0),
            0xc6 | 0xdb => (take(&mut at, 4)?, 0),
            0xc7 => (take(&mut at, 1)? + 1, 0),
            0xc8 => (take(&mut at, 2)? + 1, 0),
            0xc9 => (take(&mut at, 4)? + 1, 0),
            0xca => (4, 0),
            0xcb => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xce | 0xd2 => (4, 0),
            0xcf | 0xd3 => (8, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => (0, take(&mut at, 2)?),
            0xdd => (0, take(&mut at, 4)?),
            0xde => (0, 2 * take(&mut at, 2)?),
            0xdf => (0, 2 * take(&mut at, 4)?),
            0xc1 => return None,
        };
        at = at.checked_add(usize::try_from(skip).ok()?).filter(|end| *end <= bytes.len())?;
        pending = pending.checked_add(children)?;
        if pending > (bytes.len() - at) as u64 {
            return None;
        }
    }
    Some(at)
}

/// Payload fields: written as msgpack `bin`; read as a slice of the frame being decoded
/// (found through a thread-local set by [`decode_body`]), so a payload is never copied
/// between the socket buffer and the receiving process.
mod zero_copy {
    use std::cell::RefCell;
    use std::fmt;

    use bytes::Bytes;
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    thread_local! {
        pub(super) static FRAME: RefCell<Option<Bytes>> = const { RefCell::new(None) };
    }

    pub(super) fn serialize<S: Serializer>(
        bytes: &Bytes,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Bytes, D::Error> {
        deserializer.deserialize_bytes(PayloadVisitor)
    }

    struct PayloadVisitor;

    impl<'de> Visitor<'de> for PayloadVisitor {
        type Value = Bytes;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a binary payload")
        }

        fn visit_borrowed_bytes<E: Error>(self, bytes: &'de [u8]) -> Result<Bytes, E> {
            let shared = FRAME.with(|frame| {
                let frame = frame.borrow();
                let frame = frame.as_ref()?;
                let range = frame.as_ptr_range();
                let inside = range.start <= bytes.as_ptr() && bytes.as_ptr_range().end <= range.end;
                inside.then(|| frame.slice_ref(bytes))
            });
            Ok(shared.unwrap_or_else(|| Bytes::copy_from_slice(bytes)))
        }

        fn visit_bytes<E: Error>(self, bytes: &[u8]) -> Result<Bytes, E> {
            Ok(Bytes::copy_from_slice(bytes))
        }

        fn visit_byte_buf<E: Error>(self, bytes: Vec<u8>) -> Result<Bytes, E> {
            Ok(Bytes::from(bytes))
        }
    }
}
