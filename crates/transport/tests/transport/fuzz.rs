//! Property tests of the sans-IO cores that face the network: the frame decoder, sealed
//! records and the handshake, fed random, mutated, tampered and genuine input.
//!
//! Case counts are set per property (about 81,000 in all, see each `with_cases`); the whole
//! module runs in well under a minute in a debug build on two shared cores.
//!
//! The decoder is checked against a model: a stream of length-prefixed bodies, each decoded
//! with `decode_body`, stopping at the first error. Whatever the chunking, the decoder must
//! yield exactly what the model yields — in particular never a frame behind a length prefix
//! above the maximum.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use shoal_process::{ExitKind, ExitReason, NodeId, Pid, Ref, RemoteFailure, Runtime};
use shoal_transport::handshake::{
    ClusterKey, ClusterKeyError, Entropy, HandshakeError, Hello, Initiator, Keyed, Message,
    Protection, Responder, VERSIONS, Welcome, negotiate,
};
use shoal_transport::record::{MAX_RECORD_BYTES, Opener, RecordError, Sealer};
use shoal_transport::wire::{
    Format, Frame, FrameDecoder, FrameError, LENGTH_PREFIX_BYTES, Request, TraceParent,
    decode_body, encode_frame,
};
use shoal_transport::{ChannelConfig, Failure, NodeSpec};

// ---------------------------------------------------------------------------------------------
// Strategies

fn text() -> impl Strategy<Value = String> {
    "[a-z0-9 _-]{0,8}"
}

fn payload() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn pid() -> impl Strategy<Value = Pid> {
    (prop::sample::select(vec!["a", "b", "c"]), any::<u64>(), any::<u64>()).prop_map(
        |(node, incarnation, id)| Pid::from_parts(NodeId::from_name(node), incarnation, id),
    )
}

/// References come only from a runtime; a few made once serve every case.
fn monitor_ref() -> impl Strategy<Value = Ref> {
    static REFS: OnceLock<Vec<Ref>> = OnceLock::new();
    let refs = REFS.get_or_init(|| {
        let tokio = tokio::runtime::Builder::new_current_thread().build().expect("tokio");
        tokio.block_on(async {
            let runtime = Runtime::new().expect("a runtime");
            (0..4).map(|_| runtime.make_ref()).collect()
        })
    });
    prop::sample::select(refs.clone())
}

fn exit_reason() -> impl Strategy<Value = ExitReason> {
    prop_oneof![
        Just(ExitReason::Normal),
        Just(ExitReason::Shutdown),
        Just(ExitReason::Killed),
        text().prop_map(ExitReason::Panic),
        Just(ExitReason::NoProc),
        Just(ExitReason::NoConnection),
        text().prop_map(ExitReason::Custom),
    ]
}

fn exit_kind() -> impl Strategy<Value = ExitKind> {
    prop_oneof![Just(ExitKind::Link), Just(ExitKind::Direct)]
}

fn failure() -> impl Strategy<Value = Failure> {
    let process = prop_oneof![
        Just(RemoteFailure::NoProc),
        exit_reason().prop_map(RemoteFailure::Exited),
        Just(RemoteFailure::NoReply),
        Just(RemoteFailure::Full),
        Just(RemoteFailure::NotRemote),
        text().prop_map(RemoteFailure::BadRequest),
        text().prop_map(RemoteFailure::BadReply),
    ];
    prop_oneof![
        process.prop_map(Failure::Process),
        text().prop_map(Failure::NotRegistered),
        text().prop_map(Failure::UnknownHandler),
        text().prop_map(Failure::Handler),
        text().prop_map(Failure::Spawn),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        pid().prop_map(Request::IsAlive),
        (text(), payload()).prop_map(|(factory, args)| Request::Spawn { factory, args }),
        (text(), payload(), prop::option::of(text())).prop_map(|(name, args, then)| Request::Rpc {
            name,
            args,
            then
        }),
    ]
}

fn node_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_-]{0,7}"
}

fn spec() -> impl Strategy<Value = NodeSpec> {
    let addr = any::<u16>().prop_map(|port| SocketAddr::from(([127, 0, 0, 1], port)));
    let channel = (1u16..8, any::<bool>())
        .prop_map(|(parallelism, monotonic)| ChannelConfig { parallelism, monotonic });
    (node_name(), any::<u64>(), vec(addr, 0..3), btree_map(text(), channel, 0..3)).prop_map(
        |(name, incarnation, listen_addrs, channels)| NodeSpec {
            name,
            incarnation,
            listen_addrs,
            channels,
        },
    )
}

fn handshake_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        Just(Frame::Confirm),
        Just(Frame::Accepted),
        text().prop_map(|reason| Frame::Refused { reason }),
    ]
}

fn control_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        any::<u64>().prop_map(|id| Frame::Ping { id }),
        any::<u64>().prop_map(|id| Frame::Pong { id }),
        (vec(spec(), 0..3), vec((text(), any::<u64>()), 0..3))
            .prop_map(|(members, left)| Frame::Gossip { members, left }),
        any::<u64>().prop_map(|incarnation| Frame::Leave { incarnation }),
        (any::<u64>(), request()).prop_map(|(id, request)| Frame::Request { id, request }),
        (any::<u64>(), prop_oneof![payload().prop_map(Ok), failure().prop_map(Err)])
            .prop_map(|(id, outcome)| Frame::Reply { id, outcome }),
    ]
}

fn process_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (pid(), payload()).prop_map(|(to, payload)| Frame::Cast { to, payload }),
        (any::<u64>(), pid(), payload()).prop_map(|(id, to, payload)| Frame::Call {
            id,
            to,
            payload
        }),
        (pid(), pid(), exit_reason(), exit_kind())
            .prop_map(|(to, from, reason, kind)| Frame::Exit { to, from, reason, kind }),
        (pid(), monitor_ref(), pid(), exit_reason())
            .prop_map(|(to, monitor, pid, reason)| Frame::Down { to, monitor, pid, reason }),
        (pid(), pid(), monitor_ref()).prop_map(|(target, watcher, monitor)| Frame::Monitor {
            target,
            watcher,
            monitor
        }),
        (pid(), monitor_ref()).prop_map(|(target, monitor)| Frame::Demonitor { target, monitor }),
        (pid(), pid()).prop_map(|(to, from)| Frame::Link { to, from }),
        (pid(), pid()).prop_map(|(to, from)| Frame::Unlink { to, from }),
        (text(), payload()).prop_map(|(name, payload)| Frame::CastNamed { name, payload }),
        (any::<u64>(), text(), payload()).prop_map(|(id, name, payload)| Frame::CallNamed {
            id,
            name,
            payload
        }),
        (any::<u64>(), pid(), payload(), trace_parent())
            .prop_map(|(id, to, payload, trace)| { Frame::TracedCall { id, to, payload, trace } }),
        (any::<u64>(), text(), payload(), trace_parent()).prop_map(|(id, name, payload, trace)| {
            Frame::TracedCallNamed { id, name, payload, trace }
        }),
    ]
}

/// Any trace context, zero ids (not valid, still decoded) included.
fn trace_parent() -> impl Strategy<Value = TraceParent> {
    (any::<u128>(), any::<u64>(), any::<bool>()).prop_map(|(trace_id, span_id, sampled)| {
        let trace_id = shoal_process::TraceId::from_u128(trace_id);
        let span_id = shoal_process::SpanId(span_id);
        TraceParent::from(shoal_process::TraceContext { trace_id, span_id, sampled })
    })
}

/// Any frame of the protocol.
fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![handshake_frame(), control_frame(), process_frame()]
}

/// One change to an encoded byte stream. Positions are taken modulo the stream's length.
#[derive(Clone, Debug)]
enum Mutation {
    FlipBit {
        at: usize,
        bit: u8,
    },
    Overwrite {
        at: usize,
        byte: u8,
    },
    Insert {
        at: usize,
        byte: u8,
    },
    Delete {
        at: usize,
    },
    Truncate {
        len: usize,
    },
    /// Replaces the length prefix of the first frame.
    Prefix {
        len: u32,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let len = prop_oneof![0u32..256, Just(u32::MAX), any::<u32>()];
    prop_oneof![
        3 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Overwrite { at, byte }),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        1 => any::<usize>().prop_map(|at| Mutation::Delete { at }),
        1 => any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        1 => len.prop_map(|len| Mutation::Prefix { len }),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let n = bytes.len();
    match *mutation {
        _ if n == 0 => {}
        Mutation::FlipBit { at, bit } => bytes[at % n] ^= 1 << bit,
        Mutation::Overwrite { at, byte } => bytes[at % n] = byte,
        Mutation::Insert { at, byte } => bytes.insert(at % (n + 1), byte),
        Mutation::Delete { at } => {
            bytes.remove(at % n);
        }
        Mutation::Truncate { len } => bytes.truncate(len % n),
        Mutation::Prefix { len } if n >= LENGTH_PREFIX_BYTES => {
            bytes[..LENGTH_PREFIX_BYTES].copy_from_slice(&len.to_be_bytes());
        }
        Mutation::Prefix { .. } => {}
    }
}

/// Chunk sizes: how the stream is split between reads.
fn chunking() -> impl Strategy<Value = Vec<usize>> {
    vec(1usize..80, 1..12)
}

// ---------------------------------------------------------------------------------------------
// The decoder and its model

const ROOMY_MAX: usize = 1 << 20;

fn encode_all(frames: &[Frame]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for frame in frames {
        encode_frame(frame, &mut out, Format::latest(ROOMY_MAX))
            .expect("a generated frame encodes");
    }
    out.to_vec()
}

/// What a correct decoder yields for `stream`: each whole frame in order, stopping at the
/// first error; an incomplete tail yields nothing.
fn model(stream: &[u8], max: usize) -> Vec<Result<Frame, FrameError>> {
    let mut out = Vec::new();
    let mut rest = stream;
    while rest.len() >= LENGTH_PREFIX_BYTES {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len > max {
            out.push(Err(FrameError::Oversized { len, max }));
            break;
        }
        let Some(body) = rest.get(LENGTH_PREFIX_BYTES..LENGTH_PREFIX_BYTES + len) else {
            break;
        };
        let decoded = decode_body(&Bytes::copy_from_slice(body), Format::latest(max));
        let failed = decoded.is_err();
        out.push(decoded);
        if failed {
            break;
        }
        rest = &rest[LENGTH_PREFIX_BYTES + len..];
    }
    out
}

/// Feeds `stream` to a decoder in chunks of the given sizes (cycled), draining frames after
/// each chunk, until the first error.
fn decode_chunked(stream: &[u8], chunks: &[usize], max: usize) -> Vec<Result<Frame, FrameError>> {
    let mut decoder = FrameDecoder::new(Format::latest(max));
    let mut out = Vec::new();
    let mut rest = stream;
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() {
        let size = (*sizes.next().expect("at least one chunk size")).min(rest.len());
        decoder.extend(&rest[..size]);
        rest = &rest[size..];
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => out.push(Ok(frame)),
                Ok(None) => break,
                Err(error) => {
                    out.push(Err(error));
                    return out;
                }
            }
        }
    }
    out
}

fn check_decoder(stream: &[u8], chunks: &[usize], max: usize) -> Result<(), TestCaseError> {
    let decoded = decode_chunked(stream, chunks, max);
    for outcome in &decoded {
        if let Err(FrameError::Oversized { len, max: reported }) = outcome {
            prop_assert!(*len > max && *reported == max, "{len} > {max}");
        }
    }
    prop_assert_eq!(decoded, model(stream, max));
    Ok(())
}

/// Random segments, each a length prefix (usually within the maximum) and random bytes.
fn prefixed_garbage() -> impl Strategy<Value = Vec<u8>> {
    let segment = (prop_oneof![4 => 0u32..96, 1 => any::<u32>()], vec(any::<u8>(), 0..96));
    vec(segment, 1..5).prop_map(|segments| {
        let mut stream = Vec::new();
        for (len, body) in segments {
            stream.extend_from_slice(&len.to_be_bytes());
            stream.extend_from_slice(&body);
        }
        stream
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(30_000))]

    /// Random bytes, in any chunking: no panic, and exactly the model's frames and error.
    #[test]
    fn the_decoder_matches_its_model_on_random_bytes(
        stream in prop_oneof![vec(any::<u8>(), 0..256), prefixed_garbage()],
        chunks in chunking(),
        max in 16usize..512,
    ) {
        check_decoder(&stream, &chunks, max)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(30_000))]

    /// Valid frames, mutated (bits flipped, bytes inserted, deleted or overwritten, the
    /// stream truncated, a length prefix changed), in any chunking: no panic, and exactly the
    /// model's frames and error.
    #[test]
    fn the_decoder_matches_its_model_on_mutated_frames(
        frames in vec(frame(), 1..4),
        mutations in vec(mutation(), 1..4),
        chunks in chunking(),
        max in prop_oneof![Just(ROOMY_MAX), 16usize..1024],
    ) {
        let mut stream = encode_all(&frames);
        for mutation in &mutations {
            mutate(&mut stream, mutation);
        }
        check_decoder(&stream, &chunks, max)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(15_000))]

    /// Valid frames come out of the decoder as they went in, however the bytes are split.
    #[test]
    fn frames_round_trip_in_any_chunking(frames in vec(frame(), 1..5), chunks in chunking()) {
        let stream = encode_all(&frames);
        let decoded: Vec<Frame> = decode_chunked(&stream, &chunks, ROOMY_MAX)
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(|error| TestCaseError::fail(error.to_string()))?;
        prop_assert_eq!(decoded, frames);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    /// A body must be exactly one frame: a valid frame with bytes after it, inside its length
    /// prefix, is refused (a forged length, or two frames run together), whether or not the
    /// frame is one of the hand-read hot ones.
    #[test]
    fn bytes_left_over_inside_a_frame_are_refused(
        frame in frame(),
        extra in vec(any::<u8>(), 1..16),
    ) {
        let mut encoded = BytesMut::new();
        encode_frame(&frame, &mut encoded, Format::latest(ROOMY_MAX)).expect("a valid frame encodes");
        let mut body = encoded[LENGTH_PREFIX_BYTES..].to_vec();
        prop_assert_eq!(decode_body(&Bytes::from(body.clone()), Format::latest(ROOMY_MAX)), Ok(frame));
        body.extend_from_slice(&extra);
        let decoded = decode_body(&Bytes::from(body), Format::latest(ROOMY_MAX));
        prop_assert!(matches!(decoded, Err(FrameError::Malformed(_))), "{:?}", decoded);
    }
}

// ---------------------------------------------------------------------------------------------
// Sealed records

const RECORD_KEY: [u8; 32] = [42; 32];

fn protection() -> impl Strategy<Value = Protection> {
    prop_oneof![Just(Protection::Encrypted), Just(Protection::Authenticated)]
}

/// Seals `pieces` one call each, as a writer's batches would be.
fn seal_all(pieces: &[Vec<u8>], protection: Protection) -> Vec<u8> {
    let mut sealer = Sealer::new(RECORD_KEY, protection);
    let mut out = BytesMut::new();
    for piece in pieces {
        sealer.seal(piece, &mut out).expect("seals");
    }
    out.to_vec()
}

/// Opens `stream` fed in `chunks`: the plaintext opened, the first error, and the bytes left.
fn open_chunked(
    stream: &[u8],
    chunks: &[usize],
    protection: Protection,
) -> (Vec<u8>, Option<RecordError>, usize) {
    let mut opener = Opener::new(RECORD_KEY, protection);
    let (mut sealed, mut plain) = (BytesMut::new(), BytesMut::new());
    let mut rest = stream;
    for &chunk in chunks.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at(chunk.clamp(1, rest.len()));
        rest = later;
        sealed.extend_from_slice(now);
        if let Err(error) = opener.open(&mut sealed, &mut plain) {
            return (plain.to_vec(), Some(error), sealed.len());
        }
    }
    (plain.to_vec(), None, sealed.len())
}

/// What an attacker on the path does to a sealed stream.
#[derive(Clone, Debug)]
enum Tamper {
    FlipBit(usize, u8),
    DropByte(usize),
    InsertBytes(usize, Vec<u8>),
    /// Repeats the bytes `at..at + len` right after them (a replayed record, or part of one).
    Repeat(usize, usize),
    /// Swaps two spans of equal length.
    Swap(usize, usize, usize),
    /// Whole records: one replayed right after itself, one dropped, two swapped.
    ReplayRecord(usize),
    DropRecord(usize),
    SwapRecords(usize, usize),
}

/// The spans of the sealed records in `stream`.
fn record_spans(stream: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut spans = Vec::new();
    let mut at = 0;
    while at + 4 <= stream.len() {
        let len = u32::from_be_bytes(stream[at..at + 4].try_into().unwrap()) as usize;
        let end = at + 4 + len + 16;
        spans.push(at..end);
        at = end;
    }
    spans
}

fn tamper() -> impl Strategy<Value = Tamper> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Tamper::FlipBit(at, bit)),
        any::<usize>().prop_map(Tamper::DropByte),
        (any::<usize>(), vec(any::<u8>(), 1..40))
            .prop_map(|(at, bytes)| Tamper::InsertBytes(at, bytes)),
        (any::<usize>(), 1usize..200).prop_map(|(at, len)| Tamper::Repeat(at, len)),
        (any::<usize>(), any::<usize>(), 1usize..100)
            .prop_map(|(a, b, len)| Tamper::Swap(a, b, len)),
        any::<usize>().prop_map(Tamper::ReplayRecord),
        any::<usize>().prop_map(Tamper::DropRecord),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Tamper::SwapRecords(a, b)),
    ]
}

/// Applies `tamper`; `false` if it left the stream as it was.
fn apply(stream: &mut Vec<u8>, tamper: &Tamper) -> bool {
    let before = stream.clone();
    let n = stream.len();
    // An empty stream (nothing sent) has no byte to flip, drop, repeat or swap.
    if n == 0 && !matches!(tamper, Tamper::InsertBytes(..)) {
        return false;
    }
    match tamper {
        Tamper::FlipBit(at, bit) => stream[at % n] ^= 1 << bit,
        Tamper::DropByte(at) => drop(stream.remove(at % n)),
        Tamper::InsertBytes(at, bytes) => {
            let at = at % (n + 1);
            stream.splice(at..at, bytes.iter().copied());
        }
        Tamper::Repeat(at, len) => {
            let at = at % n;
            let span: Vec<u8> = stream[at..(at + len).min(n)].to_vec();
            let end = at + span.len();
            stream.splice(end..end, span);
        }
        Tamper::Swap(a, b, len) => {
            let len = (*len).min(n / 2).max(1);
            let (a, b) = (a % (n - len + 1), b % (n - len + 1));
            let (a, b) = (a.min(b), a.max(b));
            if b >= a + len {
                let first: Vec<u8> = stream[a..a + len].to_vec();
                let second: Vec<u8> = stream[b..b + len].to_vec();
                stream[a..a + len].copy_from_slice(&second);
                stream[b..b + len].copy_from_slice(&first);
            }
        }
        Tamper::ReplayRecord(i) => {
            let spans = record_spans(stream);
            let span = spans[i % spans.len()].clone();
            let record = stream[span.clone()].to_vec();
            stream.splice(span.end..span.end, record);
        }
        Tamper::DropRecord(i) => {
            let spans = record_spans(stream);
            stream.drain(spans[i % spans.len()].clone());
        }
        Tamper::SwapRecords(a, b) => {
            let spans = record_spans(stream);
            let (a, b) = (a % spans.len(), b % spans.len());
            let (a, b) = (a.min(b), a.max(b));
            if a != b {
                let records: Vec<Vec<u8>> =
                    spans.iter().map(|span| stream[span.clone()].to_vec()).collect();
                let mut reordered = records.clone();
                reordered.swap(a, b);
                *stream = reordered.concat();
            }
        }
    }
    *stream != before
}

fn record_pieces() -> impl Strategy<Value = Vec<Vec<u8>>> {
    vec(prop_oneof![vec(any::<u8>(), 0..300), vec(any::<u8>(), 60_000..140_000)], 1..5)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Sealed records open to exactly what was sealed, however the bytes are split, and
    /// records of up to 64 KiB.
    #[test]
    fn sealed_records_open_to_what_was_sealed(
        pieces in record_pieces(),
        chunks in chunking(),
        protection in protection(),
    ) {
        let stream = seal_all(&pieces, protection);
        let (plain, error, left) = open_chunked(&stream, &chunks, protection);
        prop_assert_eq!(error, None);
        prop_assert_eq!(left, 0);
        prop_assert_eq!(plain, pieces.concat());
    }

    /// Whatever an attacker on the path does to the sealed bytes (a bit flipped, a byte dropped
    /// or inserted, a span repeated or swapped), nothing altered is ever opened: what comes out
    /// is a prefix of what was sealed, and the stream fails or stops short.
    #[test]
    fn tampered_records_never_open_altered(
        pieces in record_pieces(),
        tampering in tamper(),
        chunks in chunking(),
        protection in protection(),
    ) {
        let original = pieces.concat();
        let mut stream = seal_all(&pieces, protection);
        prop_assume!(apply(&mut stream, &tampering));
        let (plain, error, left) = open_chunked(&stream, &chunks, protection);
        prop_assert!(original.starts_with(&plain), "altered plaintext came out");
        prop_assert!(
            error.is_some() || left > 0 || plain.len() < original.len(),
            "a tampered stream opened whole: {:?}", tampering
        );
    }
}

/// Records open only in the order sealed: two swapped, or one replayed, fail at the first
/// record out of place.
#[test]
fn records_open_only_in_their_order() {
    for protection in [Protection::Encrypted, Protection::Authenticated] {
        let stream = seal_all(&[b"first".to_vec(), b"second".to_vec()], protection);
        let spans = record_spans(&stream);
        let swapped = [&stream[spans[1].clone()], &stream[spans[0].clone()]].concat();
        let (plain, error, _) = open_chunked(&swapped, &[usize::MAX], protection);
        assert_eq!((plain.as_slice(), error), (&b""[..], Some(RecordError::Forged(0))));
        let replayed = [&stream[spans[0].clone()], &stream[spans[0].clone()]].concat();
        let (plain, error, _) = open_chunked(&replayed, &[usize::MAX], protection);
        assert_eq!((plain.as_slice(), error), (&b"first"[..], Some(RecordError::Forged(1))));
    }
}

/// Encrypted records hide what they carry; authenticated ones carry it readable, and neither
/// opens under the other's protection.
#[test]
fn only_encrypted_records_hide_their_plaintext() {
    let text = b"a recognisable plaintext".to_vec();
    let contains = |stream: &[u8]| stream.windows(text.len()).any(|window| window == text);
    let encrypted = seal_all(std::slice::from_ref(&text), Protection::Encrypted);
    let authenticated = seal_all(std::slice::from_ref(&text), Protection::Authenticated);
    assert!(!contains(&encrypted));
    assert!(contains(&authenticated));
    let (_, error, _) = open_chunked(&encrypted, &[usize::MAX], Protection::Authenticated);
    assert_eq!(error, Some(RecordError::Forged(0)));
    let (_, error, _) = open_chunked(&authenticated, &[usize::MAX], Protection::Encrypted);
    assert_eq!(error, Some(RecordError::Forged(0)));
}

/// A record sealed under another key does not open, nor does a record longer than the maximum.
#[test]
fn a_record_under_another_key_or_too_long_does_not_open() {
    let stream = seal_all(&[b"hello".to_vec()], Protection::Encrypted);
    let mut opener = Opener::new([1; 32], Protection::Encrypted);
    let (mut sealed, mut plain) = (BytesMut::from(&stream[..]), BytesMut::new());
    assert_eq!(opener.open(&mut sealed, &mut plain), Err(RecordError::Forged(0)));
    assert!(plain.is_empty());
    let mut long = BytesMut::from(&((MAX_RECORD_BYTES + 1) as u32).to_be_bytes()[..]);
    let mut opener = Opener::new(RECORD_KEY, Protection::Encrypted);
    assert_eq!(
        opener.open(&mut long, &mut plain),
        Err(RecordError::Oversized(MAX_RECORD_BYTES + 1))
    );
}

// ---------------------------------------------------------------------------------------------
// The handshake (Noise NNpsk0)

fn cluster_key() -> ClusterKey {
    ClusterKey::from_hex("7d0a5c3e91b24f68a1e9c0d7534b2f86e4197ac35d08b6f21c7e9a4d3b506f18")
        .unwrap()
}

fn other_key() -> ClusterKey {
    ClusterKey::from_hex("d7f31e0a8b158896a9f7f8c4d2cdfa2ea0043e4ed5b3e3b7dcfa6868a87fc0e4")
        .unwrap()
}

/// A simulation's handshakes replay from its seed, each handshake drawing a stream of its own;
/// every other handshake's ephemeral keys come from the operating system, fresh each time.
#[test]
fn seeded_handshakes_replay_and_others_are_fresh() {
    let first = |entropy: &Entropy| {
        let (_, first) = Initiator::start_with(&cluster_key(), &hello((2, 2)), entropy).unwrap();
        first
    };
    let (one, again) = (Entropy::seeded(7), Entropy::seeded(7));
    let (first_of_one, first_of_again) = (first(&one), first(&again));
    assert_eq!(first_of_one, first_of_again, "the same seed, the same first handshake");
    assert_ne!(first(&one), first_of_one, "the next handshake draws another stream");
    assert_ne!(first(&Entropy::seeded(8)), first_of_one, "another seed, another handshake");
    assert_ne!(first(&Entropy::os()), first(&Entropy::os()));
    let (_, reply) = Responder::answer_with(
        &cluster_key(),
        noise(&first_of_one),
        &fake_node("b", 7),
        Protection::Encrypted,
        &Entropy::seeded(9),
    )
    .unwrap();
    let (_, again) = Responder::answer_with(
        &cluster_key(),
        noise(&first_of_one),
        &fake_node("b", 7),
        Protection::Encrypted,
        &Entropy::seeded(9),
    )
    .unwrap();
    assert_eq!(reply, again, "the responder's keys replay too");
}

fn hello(versions: (u32, u32)) -> Hello {
    Hello { versions, ..Hello::new(fake_node("a", 1), "default", 0, Protection::Encrypted) }
}

fn fake_node(name: &str, incarnation: u64) -> NodeSpec {
    NodeSpec { name: name.into(), incarnation, listen_addrs: Vec::new(), channels: BTreeMap::new() }
}

fn noise(message: &Message) -> &[u8] {
    match message {
        Message::Noise(bytes) => bytes,
        Message::Refusal(reason) => panic!("refused: {reason}"),
    }
}

/// The responder's side as `b`, with encrypted records.
fn answer(key: &ClusterKey, first: &Message) -> Result<(Keyed<Hello>, Message), HandshakeError> {
    Responder::answer(key, noise(first), &fake_node("b", 7), Protection::Encrypted)
}

/// Seals `text` with `sealer` and opens it with `opener`.
fn carries(sealer: &mut Sealer, opener: &mut Opener, text: &[u8]) -> bool {
    let (mut sealed, mut plain) = (BytesMut::new(), BytesMut::new());
    sealer.seal(text, &mut sealed).expect("seals");
    opener.open(&mut sealed, &mut plain).is_ok() && plain == text
}

/// A genuine exchange gives both sides each other's specs, the version, the initiator's
/// protection, and record keys that carry data both ways (and not crossed: a side cannot open
/// its own records).
#[test]
fn a_handshake_gives_both_sides_matching_record_keys() {
    for protection in [Protection::Encrypted, Protection::Authenticated] {
        let hello = Hello::new(fake_node("a", 1), "default", 3, protection);
        let (initiator, first) = Initiator::start(&cluster_key(), &hello).unwrap();
        let (mut responder, reply) = answer(&cluster_key(), &first).unwrap();
        let mut initiator: Keyed<Welcome> = initiator.finish(reply).unwrap();
        assert_eq!(responder.peer, hello);
        assert_eq!(initiator.peer.spec, fake_node("b", 7));
        assert_eq!((initiator.version, responder.version), (*VERSIONS.end(), *VERSIONS.end()));
        assert_eq!((initiator.protection, responder.protection), (protection, protection));
        assert!(carries(&mut initiator.sealer, &mut responder.opener, b"to b"));
        assert!(carries(&mut responder.sealer, &mut initiator.opener, b"to a"));
        let mut own = Opener::new([0; 32], protection);
        assert!(!carries(&mut initiator.sealer, &mut own, b"to nobody"));
    }
}

/// Another cluster key: the responder opens nothing (and so says nothing but a refusal); a
/// reply under another key does not open either.
#[test]
fn a_handshake_under_another_key_fails_on_both_sides() {
    let (_, first) = Initiator::start(&other_key(), &hello((2, 2))).unwrap();
    assert!(matches!(answer(&cluster_key(), &first), Err(HandshakeError::Unauthenticated)));
    let (initiator, first) = Initiator::start(&cluster_key(), &hello((2, 2))).unwrap();
    let (_, reply) = answer(&cluster_key(), &first).unwrap();
    let (other_initiator, _) = Initiator::start(&other_key(), &hello((2, 2))).unwrap();
    let other = other_initiator.finish(reply.clone());
    assert!(matches!(other, Err(HandshakeError::Unauthenticated)));
    assert!(initiator.finish(reply).is_ok());
}

/// A replayed first message gets an answer, but under record keys its sender cannot know:
/// the confirmation a replayer could send never opens, and what the replayed session seals
/// the real initiator cannot open.
#[test]
fn a_replayed_first_message_gets_keys_nobody_else_has() {
    let (initiator, first) = Initiator::start(&cluster_key(), &hello((2, 2))).unwrap();
    let (mut genuine, reply) = answer(&cluster_key(), &first).unwrap();
    let (mut replayed, _) = answer(&cluster_key(), &first).unwrap();
    let mut initiator = initiator.finish(reply).unwrap();
    assert!(carries(&mut initiator.sealer, &mut genuine.opener, b"confirm"));
    let mut replayer = Sealer::new([0; 32], Protection::Encrypted);
    assert!(!carries(&mut replayer, &mut replayed.opener, b"confirm"));
    assert!(!carries(&mut replayed.sealer, &mut initiator.opener, b"from the replay"));
}

/// Versions: the highest both speak, so a node one version ahead (offering 2..=3) and this
/// one (2..=2) agree on 2; none in common is refused with both ranges.
#[test]
fn the_handshake_agrees_on_the_highest_common_version() {
    assert_eq!(negotiate((1, 5)), Ok(*VERSIONS.end()));
    assert_eq!(negotiate((*VERSIONS.start(), *VERSIONS.start())), Ok(*VERSIONS.start()));
    let newer = (*VERSIONS.start(), VERSIONS.end() + 1);
    let (initiator, first) = Initiator::start(&cluster_key(), &hello(newer)).unwrap();
    let (responder, reply) = answer(&cluster_key(), &first).unwrap();
    assert_eq!(responder.version, *VERSIONS.end());
    assert_eq!(initiator.finish(reply).map(|keyed| keyed.version).ok(), Some(*VERSIONS.end()));
    let too_new = (VERSIONS.end() + 1, VERSIONS.end() + 3);
    let (_, first) = Initiator::start(&cluster_key(), &hello(too_new)).unwrap();
    let refused = answer(&cluster_key(), &first);
    let ours = (*VERSIONS.start(), *VERSIONS.end());
    assert!(
        matches!(refused, Err(HandshakeError::NoCommonVersion { ours: o, theirs }) if o == ours && theirs == too_new)
    );
}

/// A later version may add fields to its hello: this one skips them.
#[test]
fn a_hello_with_fields_of_a_later_version_still_reads() {
    #[derive(serde::Serialize)]
    struct LaterHello {
        versions: (u32, u32),
        spec: NodeSpec,
        channel: String,
        index: u16,
        protection: Protection,
        trace_context: Option<String>,
    }
    let later = LaterHello {
        versions: (2, 3),
        spec: fake_node("a", 1),
        channel: "default".into(),
        index: 1,
        protection: Protection::Encrypted,
        trace_context: Some("00-abc-def-01".into()),
    };
    let bytes = rmp_serde::to_vec_named(&later).unwrap();
    let read: Hello = rmp_serde::from_slice(&bytes).expect("a later hello reads");
    assert_eq!((read.versions, read.index), ((2, 3), 1));
}

/// A node that claims the responder's own name is refused, as is a responder that answers
/// with the initiator's.
#[test]
fn a_peer_with_this_nodes_name_is_refused() {
    let (_, first) = Initiator::start(&cluster_key(), &hello((2, 2))).unwrap();
    let refused =
        Responder::answer(&cluster_key(), noise(&first), &fake_node("a", 9), Protection::Encrypted);
    assert!(matches!(refused, Err(HandshakeError::SameName(name)) if name == "a"));
}

/// Keys are 64 hexadecimal digits of random bytes; anything else is refused with a reason.
#[test]
fn keys_are_64_hexadecimal_digits_of_random_bytes() {
    let key = ClusterKey::generate();
    assert_eq!(ClusterKey::from_hex(&key.to_hex()), Ok(key.clone()));
    assert_eq!(key.to_hex().parse::<ClusterKey>(), Ok(key.clone()));
    assert_ne!(ClusterKey::generate(), key, "two generated keys differ");
    assert_eq!(ClusterKey::from_hex("secret"), Err(ClusterKeyError::Length(6)));
    assert_eq!(ClusterKey::from_hex(&"g".repeat(64)), Err(ClusterKeyError::NotHex));
    assert_eq!(ClusterKey::from_hex(&"00".repeat(32)), Err(ClusterKeyError::NotRandom(1)));
    assert_eq!(ClusterKey::from_hex(&"0123".repeat(16)), Err(ClusterKeyError::NotRandom(2)));
    assert_eq!(ClusterKey::from_bytes([7; 32]), Err(ClusterKeyError::NotRandom(1)));
    assert!(ClusterKeyError::Length(6).to_string().contains("generate-key"));
    assert_eq!(format!("{key:?}"), "ClusterKey(..)");
}

/// Keys of 8 or more distinct bytes that are still no random key are refused: a count (`00
/// 01 … 1f`, or down, or by another step), a short pattern repeated, and printable text (a
/// password turned into hex). Each rule refuses a random key with a negligible chance: a
/// thousand generated keys all pass.
#[test]
fn counts_patterns_and_text_are_not_keys() {
    let counting: [u8; 32] = std::array::from_fn(|i| i as u8);
    assert_eq!(ClusterKey::from_bytes(counting), Err(ClusterKeyError::Pattern(1)));
    let down: [u8; 32] = std::array::from_fn(|i| 0xf0 - i as u8);
    assert_eq!(ClusterKey::from_bytes(down), Err(ClusterKeyError::Pattern(1)));
    let by_seventeen: [u8; 32] =
        std::array::from_fn(|i| 0xa1_u8.wrapping_add(0x11_u8.wrapping_mul(i as u8)));
    assert_eq!(ClusterKey::from_bytes(by_seventeen), Err(ClusterKeyError::Pattern(1)));
    let repeated = ClusterKey::from_hex(&"0f1e2d3c4b5a6978".repeat(4));
    assert_eq!(repeated, Err(ClusterKeyError::Pattern(2)));
    let phrase = b"correct horse battery staple 42!";
    let hex: String = phrase.iter().map(|byte| format!("{byte:02x}")).collect();
    assert_eq!(ClusterKey::from_hex(&hex), Err(ClusterKeyError::Text));
    assert!(ClusterKeyError::Text.to_string().contains("password"));
    assert!(ClusterKeyError::Pattern(1).to_string().contains("generate-key"));
    for _ in 0..1_000 {
        let key = ClusterKey::generate();
        assert_eq!(ClusterKey::from_hex(&key.to_hex()), Ok(key));
    }
}

/// A message's framing: kind, length, bytes.
#[test]
fn handshake_messages_are_framed_by_kind_and_length() {
    let mut out = BytesMut::new();
    Message::Noise(vec![1, 2, 3]).encode(&mut out);
    Message::Refusal("no".into()).encode(&mut out);
    assert_eq!(&out[..], &[0, 0, 3, 1, 2, 3, 1, 0, 2, b'n', b'o']);
    let mut partial = BytesMut::from(&out[..4]);
    assert_eq!(Message::decode(&mut partial), Ok(None));
    assert_eq!(Message::decode(&mut out), Ok(Some(Message::Noise(vec![1, 2, 3]))));
    assert_eq!(Message::decode(&mut out), Ok(Some(Message::Refusal("no".into()))));
    let mut unknown = BytesMut::from(&[7, 0, 0][..]);
    assert!(matches!(Message::decode(&mut unknown), Err(HandshakeError::Malformed(_))));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// A bit flipped anywhere in either handshake message makes that message fail to open.
    #[test]
    fn a_tampered_handshake_never_opens(flip_first in any::<bool>(), at in any::<usize>(), bit in 0u8..8) {
        let (initiator, first) = Initiator::start(&cluster_key(), &hello((2, 2))).unwrap();
        let mut first = noise(&first).to_vec();
        if flip_first {
            let n = first.len();
            first[at % n] ^= 1 << bit;
            let refused = answer(&cluster_key(), &Message::Noise(first));
            prop_assert!(matches!(refused, Err(HandshakeError::Unauthenticated)));
        } else {
            let (_, reply) = answer(&cluster_key(), &Message::Noise(first)).unwrap();
            let mut reply = noise(&reply).to_vec();
            let n = reply.len();
            reply[at % n] ^= 1 << bit;
            let finished = initiator.finish(Message::Noise(reply));
            prop_assert!(matches!(finished, Err(HandshakeError::Unauthenticated)));
        }
    }

    /// Arbitrary bytes never open as a first message, and never panic the framing.
    #[test]
    fn arbitrary_bytes_never_open_a_handshake(bytes in vec(any::<u8>(), 0..300)) {
        let refused = Responder::answer(&cluster_key(), &bytes, &fake_node("b", 7), Protection::Encrypted);
        prop_assert!(refused.is_err());
        let mut framed = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = Message::decode(&mut framed) {}
    }
}

// ---------------------------------------------------------------------------------------------
// A forged length inside a small frame must not allocate

/// The test binary's allocator: the system's, noting the largest single request made on each
/// thread, so a test can tell whether decoding asked for a forged size.
struct NotingLargest;

thread_local! {
    static LARGEST_ALLOCATION: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation(size: usize) {
    // `try_with`: an allocation during thread teardown is simply not noted.
    let _ = LARGEST_ALLOCATION.try_with(|largest| largest.set(largest.get().max(size)));
}

// SAFETY: every call is forwarded unchanged to the system allocator; noting a size touches
// only a const-initialised thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for NotingLargest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, that is from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation(new_size);
        // SAFETY: as for `dealloc`, and `new_size` is the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: NotingLargest = NotingLargest;

/// Replaces the msgpack header `old` (which must precede `marker` in `body`) with `new`.
fn forge_header(body: &[u8], old: &[u8], marker: &[u8], new: &[u8]) -> Vec<u8> {
    let mut needle = old.to_vec();
    needle.extend_from_slice(marker);
    let at = body.windows(needle.len()).position(|w| w == needle).expect("the header is there");
    let mut forged = body[..at].to_vec();
    forged.extend_from_slice(new);
    forged.extend_from_slice(&body[at + old.len()..]);
    forged
}

/// Decodes `body` (through the decoder, with its length prefix) and returns the outcome and
/// the largest allocation made meanwhile on this thread.
fn decode_noting_allocations(body: &[u8]) -> (Result<Option<Frame>, FrameError>, usize) {
    let mut stream = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    stream.extend_from_slice(body);
    let format = Format::latest(64 * 1024);
    let mut decoder = FrameDecoder::new(format);
    decoder.extend(&stream);
    LARGEST_ALLOCATION.with(|largest| largest.set(0));
    let outcome = decoder.next_frame();
    let direct = decode_body(&Bytes::copy_from_slice(body), format);
    assert!(direct.is_err(), "decode_body accepted a forged length: {direct:?}");
    (outcome, LARGEST_ALLOCATION.with(Cell::get))
}

/// A small frame whose payload announces a 4 GiB `bin` (or `str`) fails to decode, without
/// allocating anything near that size: lengths are checked against the bytes present.
#[test]
fn a_forged_four_gib_length_inside_a_small_frame_is_not_allocated() {
    const FOUR_GIB_BIN: [u8; 5] = [0xc6, 0xff, 0xff, 0xff, 0xff];
    const FOUR_GIB_STR: [u8; 5] = [0xdb, 0xff, 0xff, 0xff, 0xff];
    let cast = Frame::Cast {
        to: Pid::from_parts(NodeId::from_name("a"), 1, 1),
        payload: Bytes::from_static(b"PAYLOAD!"),
    };
    let refused = Frame::Refused { reason: "REASON!!".into() };
    let cases = [
        (cast, [0xc4, 8], &b"PAYLOAD!"[..], FOUR_GIB_BIN),
        (refused, [0xa8, 0], &b"REASON!!"[..], FOUR_GIB_STR),
    ];
    for (frame, header, marker, forged_header) in cases {
        let mut encoded = BytesMut::new();
        encode_frame(&frame, &mut encoded, Format::latest(ROOMY_MAX)).unwrap();
        let body = &encoded[LENGTH_PREFIX_BYTES..];
        let header = if header[0] == 0xa8 { &header[..1] } else { &header[..] };
        let forged = forge_header(body, header, marker, &forged_header);
        assert!(forged.len() < 128, "the forged frame is small");
        let (outcome, largest) = decode_noting_allocations(&forged);
        assert!(matches!(outcome, Err(FrameError::Malformed(_))), "{}: {outcome:?}", frame.kind());
        assert!(largest < 1024 * 1024, "{}: an allocation of {largest} bytes", frame.kind());
    }
}
