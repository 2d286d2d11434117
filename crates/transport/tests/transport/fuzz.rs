//! Property tests of the sans-IO cores that face the network: the frame decoder and the
//! handshake state machines, fed random, mutated and genuine input.
//!
//! Case counts are set per property (about 105,000 in all, see each `with_cases`); the whole
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
    Acceptor, AcceptorStep, Connector, ConnectorStep, HandshakeError, NONCE_BYTES,
};
use shoal_transport::noise::{
    Hello as NoiseHello, Initiator, Key, KeyError, NoiseError, Responder, VERSIONS, negotiate,
};
use shoal_transport::record::{MAX_RECORD_BYTES, Opener, RecordError, Sealer};
use shoal_transport::wire::{
    Challenge, Frame, FrameDecoder, FrameError, Hello, LENGTH_PREFIX_BYTES, PROTOCOL_VERSION,
    Request, decode_body, encode_frame,
};
use shoal_transport::{ChannelConfig, Failure, NodeSpec, Secret};

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

fn nonce_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => vec(any::<u8>(), NONCE_BYTES),
        1 => vec(any::<u8>(), 0..40),
    ]
}

fn handshake_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (any::<u32>(), spec(), text(), any::<u16>(), nonce_bytes()).prop_map(
            |(version, spec, channel, index, nonce)| {
                Frame::Hello(Hello { version, spec, channel, index, nonce })
            }
        ),
        (any::<u32>(), spec(), nonce_bytes(), vec(any::<u8>(), 0..40)).prop_map(
            |(version, spec, nonce, proof)| {
                Frame::Challenge(Challenge { version, spec, nonce, proof })
            }
        ),
        vec(any::<u8>(), 0..40).prop_map(|proof| Frame::Proof { proof }),
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
    ]
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
        encode_frame(frame, &mut out, ROOMY_MAX).expect("a generated frame encodes");
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
        let decoded = decode_body(&Bytes::copy_from_slice(body));
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
    let mut decoder = FrameDecoder::new(max);
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
        encode_frame(&frame, &mut encoded, ROOMY_MAX).expect("a valid frame encodes");
        let mut body = encoded[LENGTH_PREFIX_BYTES..].to_vec();
        prop_assert_eq!(decode_body(&Bytes::from(body.clone())), Ok(frame));
        body.extend_from_slice(&extra);
        let decoded = decode_body(&Bytes::from(body));
        prop_assert!(matches!(decoded, Err(FrameError::Malformed(_))), "{:?}", decoded);
    }
}

// ---------------------------------------------------------------------------------------------
// Sealed records

const RECORD_KEY: [u8; 32] = [42; 32];

/// Seals `pieces` one call each, as a writer's batches would be.
fn seal_all(pieces: &[Vec<u8>]) -> Vec<u8> {
    let mut sealer = Sealer::new(RECORD_KEY);
    let mut out = BytesMut::new();
    for piece in pieces {
        sealer.seal(piece, &mut out).expect("seals");
    }
    out.to_vec()
}

/// Opens `stream` fed in `chunks`: the plaintext opened, the first error, and the bytes left.
fn open_chunked(stream: &[u8], chunks: &[usize]) -> (Vec<u8>, Option<RecordError>, usize) {
    let mut opener = Opener::new(RECORD_KEY);
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
    fn sealed_records_open_to_what_was_sealed(pieces in record_pieces(), chunks in chunking()) {
        let stream = seal_all(&pieces);
        let (plain, error, left) = open_chunked(&stream, &chunks);
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
    ) {
        let original = pieces.concat();
        let mut stream = seal_all(&pieces);
        prop_assume!(apply(&mut stream, &tampering));
        let (plain, error, left) = open_chunked(&stream, &chunks);
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
    let stream = seal_all(&[b"first".to_vec(), b"second".to_vec()]);
    let spans = record_spans(&stream);
    let swapped = [&stream[spans[1].clone()], &stream[spans[0].clone()]].concat();
    let (plain, error, _) = open_chunked(&swapped, &[usize::MAX]);
    assert_eq!((plain.as_slice(), error), (&b""[..], Some(RecordError::Forged(0))));
    let replayed = [&stream[spans[0].clone()], &stream[spans[0].clone()]].concat();
    let (plain, error, _) = open_chunked(&replayed, &[usize::MAX]);
    assert_eq!((plain.as_slice(), error), (&b"first"[..], Some(RecordError::Forged(1))));
}

/// A record sealed under another key does not open, nor does a record longer than the maximum.
#[test]
fn a_record_under_another_key_or_too_long_does_not_open() {
    let stream = seal_all(&[b"hello".to_vec()]);
    let mut opener = Opener::new([1; 32]);
    let (mut sealed, mut plain) = (BytesMut::from(&stream[..]), BytesMut::new());
    assert_eq!(opener.open(&mut sealed, &mut plain), Err(RecordError::Forged(0)));
    assert!(plain.is_empty());
    let mut long = BytesMut::from(&((MAX_RECORD_BYTES + 1) as u32).to_be_bytes()[..]);
    let mut opener = Opener::new(RECORD_KEY);
    assert_eq!(
        opener.open(&mut long, &mut plain),
        Err(RecordError::Oversized(MAX_RECORD_BYTES + 1))
    );
}

// ---------------------------------------------------------------------------------------------
// The keyed handshake (Noise NNpsk0)

const CLUSTER_KEY: Key = Key::from_bytes([9; 32]);

fn noise_hello(versions: (u32, u32)) -> NoiseHello {
    NoiseHello { versions, spec: fake_node("a", 1), channel: "default".into(), index: 0 }
}

fn fake_node(name: &str, incarnation: u64) -> NodeSpec {
    NodeSpec { name: name.into(), incarnation, listen_addrs: Vec::new(), channels: BTreeMap::new() }
}

/// Seals `text` with `sealer` and opens it with `opener`.
fn carries(sealer: &mut Sealer, opener: &mut Opener, text: &[u8]) -> bool {
    let (mut sealed, mut plain) = (BytesMut::new(), BytesMut::new());
    sealer.seal(text, &mut sealed).expect("seals");
    opener.open(&mut sealed, &mut plain).is_ok() && plain == text
}

/// A genuine exchange gives both sides each other's specs, the version, and record keys that
/// carry data both ways (and not crossed: a side cannot open its own records).
#[test]
fn a_keyed_handshake_gives_both_sides_matching_record_keys() {
    let hello = noise_hello((2, 2));
    let (initiator, first) = Initiator::start(&CLUSTER_KEY, &hello).unwrap();
    let (mut responder, reply) =
        Responder::answer(&CLUSTER_KEY, &first, &fake_node("b", 7)).unwrap();
    let mut initiator = initiator.finish(&reply).unwrap();
    assert_eq!(responder.peer, hello);
    assert_eq!(initiator.peer.spec, fake_node("b", 7));
    assert_eq!((initiator.version, responder.version), (2, 2));
    assert!(carries(&mut initiator.sealer, &mut responder.opener, b"to b"));
    assert!(carries(&mut responder.sealer, &mut initiator.opener, b"to a"));
    let mut own = Opener::new([0; 32]);
    assert!(!carries(&mut initiator.sealer, &mut own, b"to nobody"));
}

/// Another cluster key: the responder opens nothing and says nothing back; a reply under
/// another key does not open either.
#[test]
fn a_keyed_handshake_under_another_key_fails_on_both_sides() {
    let other = Key::from_bytes([8; 32]);
    let (_, first) = Initiator::start(&other, &noise_hello((2, 2))).unwrap();
    let refused = Responder::answer(&CLUSTER_KEY, &first, &fake_node("b", 7));
    assert!(matches!(refused, Err(NoiseError::Unauthenticated)));
    let (initiator, first) = Initiator::start(&CLUSTER_KEY, &noise_hello((2, 2))).unwrap();
    let (_, reply) = Responder::answer(&CLUSTER_KEY, &first, &fake_node("b", 7)).unwrap();
    let (other_initiator, _) = Initiator::start(&other, &noise_hello((2, 2))).unwrap();
    assert!(matches!(other_initiator.finish(&reply), Err(NoiseError::Unauthenticated)));
    assert!(initiator.finish(&reply).is_ok());
}

/// A replayed first message gets an answer, but under record keys its sender cannot know:
/// the real initiator's keys and the replayed session's do not match.
#[test]
fn a_replayed_first_message_gets_keys_nobody_else_has() {
    let (initiator, first) = Initiator::start(&CLUSTER_KEY, &noise_hello((2, 2))).unwrap();
    let (mut genuine, reply) = Responder::answer(&CLUSTER_KEY, &first, &fake_node("b", 7)).unwrap();
    let (mut replayed, _) = Responder::answer(&CLUSTER_KEY, &first, &fake_node("b", 7)).unwrap();
    let mut initiator = initiator.finish(&reply).unwrap();
    assert!(carries(&mut initiator.sealer, &mut genuine.opener, b"first"));
    let mut initiator_again = Sealer::new([0; 32]);
    assert!(!carries(&mut initiator_again, &mut replayed.opener, b"guess"));
    assert!(!carries(&mut replayed.sealer, &mut initiator.opener, b"from the replay"));
}

/// Versions: the highest both speak; none in common is refused with both ranges.
#[test]
fn the_handshake_agrees_on_the_highest_common_version() {
    assert_eq!(negotiate((1, 5)), Ok(*VERSIONS.end()));
    assert_eq!(negotiate((*VERSIONS.start(), *VERSIONS.start())), Ok(*VERSIONS.start()));
    let too_new = (VERSIONS.end() + 1, VERSIONS.end() + 3);
    assert!(matches!(negotiate(too_new), Err(NoiseError::NoCommonVersion { .. })));
    let (_, first) = Initiator::start(&CLUSTER_KEY, &noise_hello(too_new)).unwrap();
    let refused = Responder::answer(&CLUSTER_KEY, &first, &fake_node("b", 7));
    assert!(matches!(refused, Err(NoiseError::NoCommonVersion { .. })));
}

/// Keys are 64 hexadecimal digits; anything else is refused with a reason.
#[test]
fn keys_are_written_as_64_hexadecimal_digits() {
    let key = Key::generate();
    assert_eq!(Key::from_hex(&key.to_hex()), Ok(key.clone()));
    assert_ne!(Key::generate(), key, "two generated keys differ");
    assert_eq!(Key::from_hex("secret"), Err(KeyError::Length(6)));
    assert_eq!(Key::from_hex(&"g".repeat(64)), Err(KeyError::NotHex));
    assert_eq!(format!("{key:?}"), "Key(..)");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// A bit flipped anywhere in either handshake message makes that message fail to open.
    #[test]
    fn a_tampered_keyed_handshake_never_opens(flip_first in any::<bool>(), at in any::<usize>(), bit in 0u8..8) {
        let (initiator, mut first) = Initiator::start(&CLUSTER_KEY, &noise_hello((2, 2))).unwrap();
        if flip_first {
            let n = first.len();
            first[at % n] ^= 1 << bit;
            let refused = Responder::answer(&CLUSTER_KEY, &first, &fake_node("b", 7));
            prop_assert!(matches!(refused, Err(NoiseError::Unauthenticated)));
        } else {
            let (_, mut reply) = Responder::answer(&CLUSTER_KEY, &first, &fake_node("b", 7)).unwrap();
            let n = reply.len();
            reply[at % n] ^= 1 << bit;
            prop_assert!(matches!(initiator.finish(&reply), Err(NoiseError::Unauthenticated)));
        }
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
    let mut decoder = FrameDecoder::new(64 * 1024);
    decoder.extend(&stream);
    LARGEST_ALLOCATION.with(|largest| largest.set(0));
    let outcome = decoder.next_frame();
    let direct = decode_body(&Bytes::copy_from_slice(body));
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
    let proof = Frame::Proof { proof: b"PROOF!!!".to_vec() };
    let cases = [
        (cast, [0xc4, 8], &b"PAYLOAD!"[..], FOUR_GIB_BIN),
        (refused, [0xa8, 0], &b"REASON!!"[..], FOUR_GIB_STR),
        (proof, [0xc4, 8], &b"PROOF!!!"[..], FOUR_GIB_BIN),
    ];
    for (frame, header, marker, forged_header) in cases {
        let mut encoded = BytesMut::new();
        encode_frame(&frame, &mut encoded, ROOMY_MAX).unwrap();
        let body = &encoded[LENGTH_PREFIX_BYTES..];
        let header = if header[0] == 0xa8 { &header[..1] } else { &header[..] };
        let forged = forge_header(body, header, marker, &forged_header);
        assert!(forged.len() < 128, "the forged frame is small");
        let (outcome, largest) = decode_noting_allocations(&forged);
        assert!(matches!(outcome, Err(FrameError::Malformed(_))), "{}: {outcome:?}", frame.kind());
        assert!(largest < 1024 * 1024, "{}: an allocation of {largest} bytes", frame.kind());
    }
}

// ---------------------------------------------------------------------------------------------
// The handshake state machines

/// How far a handshake got on each side.
#[derive(Debug, Default)]
struct Outcome {
    /// The acceptor verified the connector's proof; the hello it believes.
    authenticated: Option<Hello>,
    /// The connector got `Accepted` after verifying the acceptor; the spec it believes.
    opened: Option<NodeSpec>,
    error: Option<HandshakeError>,
}

/// One side of a handshake, for [`drive`].
#[derive(Clone, Debug)]
struct Party {
    key: Vec<u8>,
    spec: NodeSpec,
    nonce: [u8; NONCE_BYTES],
}

impl Party {
    fn secret(&self) -> Secret {
        Secret::new(&self.key)
    }
}

/// Runs a handshake between `connector` and `acceptor`, passing every frame through
/// `tamper(step, frame)` on its way (step 0: hello, 1: challenge, 2: proof, 3: accepted).
/// `tamper` returning `None` drops the connection.
fn drive(
    connector: &Party,
    acceptor: &Party,
    mut tamper: impl FnMut(usize, Frame) -> Option<Frame>,
) -> Outcome {
    let mut outcome = Outcome::default();
    let (mut c, hello) =
        Connector::new(connector.secret(), connector.spec.clone(), "default", 0, connector.nonce);
    let mut a = Acceptor::new(acceptor.secret(), acceptor.spec.clone(), acceptor.nonce);
    let Some(hello) = tamper(0, hello) else { return outcome };
    let challenge = match a.on_frame(hello) {
        Ok(AcceptorStep::Send(challenge)) => challenge,
        Ok(AcceptorStep::Authenticated { .. }) => panic!("authenticated on a hello"),
        Err(error) => return Outcome { error: Some(error), ..outcome },
    };
    let Some(challenge) = tamper(1, challenge) else { return outcome };
    let proof = match c.on_frame(challenge) {
        Ok(ConnectorStep::Send(proof)) => proof,
        Ok(ConnectorStep::Open { .. }) => panic!("open on a challenge"),
        Err(error) => return Outcome { error: Some(error), ..outcome },
    };
    let Some(proof) = tamper(2, proof) else { return outcome };
    match a.on_frame(proof) {
        Ok(AcceptorStep::Authenticated { hello }) => outcome.authenticated = Some(hello),
        Ok(AcceptorStep::Send(frame)) => panic!("the acceptor sent {frame:?} after a proof"),
        Err(error) => return Outcome { error: Some(error), ..outcome },
    }
    let Some(accepted) = tamper(3, Frame::Accepted) else { return outcome };
    match c.on_frame(accepted) {
        Ok(ConnectorStep::Open { peer }) => outcome.opened = Some(peer),
        Ok(ConnectorStep::Send(frame)) => panic!("the connector sent {frame:?} at the end"),
        Err(error) => outcome.error = Some(error),
    }
    outcome
}

/// The frames of a genuine exchange between the two.
fn transcript(connector: &Party, acceptor: &Party) -> Vec<Frame> {
    let mut frames = Vec::new();
    drive(connector, acceptor, |_, frame| {
        frames.push(frame.clone());
        Some(frame)
    });
    frames
}

fn nonce() -> impl Strategy<Value = [u8; NONCE_BYTES]> {
    any::<[u8; NONCE_BYTES]>()
}

fn secret() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..48)
}

/// Two parties with distinct names sharing `secret`.
fn pair() -> impl Strategy<Value = (Party, Party)> {
    (secret(), spec(), spec(), nonce(), nonce()).prop_filter_map(
        "the names must differ",
        |(secret, c_spec, a_spec, c_nonce, a_nonce)| {
            (c_spec.name != a_spec.name).then(|| {
                (
                    Party { key: secret.clone(), spec: c_spec, nonce: c_nonce },
                    Party { key: secret, spec: a_spec, nonce: a_nonce },
                )
            })
        },
    )
}

/// What the transcript authenticates in a frame: versions, nonces, names, incarnations and
/// proofs. (Listen addresses, channel tables and the hello's channel and index are not.)
fn authenticated_part(frame: &Frame) -> String {
    match frame {
        Frame::Hello(h) => {
            format!("hello {} {:?} {} {}", h.version, h.nonce, h.spec.name, h.spec.incarnation)
        }
        Frame::Challenge(c) => format!(
            "challenge {} {:?} {:?} {} {}",
            c.version, c.nonce, c.proof, c.spec.name, c.spec.incarnation
        ),
        Frame::Proof { proof } => format!("proof {proof:?}"),
        other => other.kind().to_owned(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    /// Parties that share the secret always open, each learning the other's real spec.
    #[test]
    fn a_genuine_exchange_always_opens((connector, acceptor) in pair()) {
        let outcome = drive(&connector, &acceptor, |_, frame| Some(frame));
        prop_assert_eq!(outcome.error, None);
        prop_assert_eq!(outcome.authenticated.map(|hello| hello.spec), Some(connector.spec));
        prop_assert_eq!(outcome.opened, Some(acceptor.spec));
    }

    /// Proofs made with another secret never authenticate: not the acceptor's (the connector
    /// refuses the challenge) and not the connector's (the acceptor refuses the proof), even
    /// over the very same transcript.
    #[test]
    fn a_proof_made_with_another_secret_never_authenticates(
        (connector, acceptor) in pair(),
        other in secret(),
    ) {
        let impostor = |party: &Party| Party {
            key: other.clone(),
            spec: party.spec.clone(),
            nonce: party.nonce,
        };
        // The same nonces and specs, the other secret: its frames cover the same transcript.
        let forged = transcript(&impostor(&connector), &impostor(&acceptor));
        let genuine = transcript(&connector, &acceptor);
        prop_assume!(forged.len() == 4 && forged[2] != genuine[2]);

        let outcome = drive(&connector, &acceptor, |step, frame| {
            Some(if step == 1 { forged[1].clone() } else { frame })
        });
        prop_assert_eq!(outcome.error, Some(HandshakeError::BadProof));
        prop_assert!(outcome.opened.is_none() && outcome.authenticated.is_none());

        let outcome = drive(&connector, &acceptor, |step, frame| {
            Some(if step == 2 { forged[2].clone() } else { frame })
        });
        prop_assert_eq!(outcome.error, Some(HandshakeError::BadProof));
        prop_assert!(outcome.opened.is_none() && outcome.authenticated.is_none());

        let outcome = drive(&connector, &impostor(&acceptor), |_, frame| Some(frame));
        prop_assert_eq!(outcome.error, Some(HandshakeError::BadProof));
        let outcome = drive(&impostor(&connector), &acceptor, |_, frame| Some(frame));
        prop_assert_eq!(outcome.error, Some(HandshakeError::BadProof));
    }

    /// A proof or challenge recorded from one exchange is refused in another with a fresh
    /// nonce: proofs bind both nonces.
    #[test]
    fn a_replayed_proof_never_authenticates(
        (connector, acceptor) in pair(),
        (c_nonce, a_nonce) in (nonce(), nonce()),
    ) {
        prop_assume!(c_nonce != connector.nonce && a_nonce != acceptor.nonce);
        let recorded = transcript(&connector, &acceptor);
        let again = |party: &Party, nonce| Party {
            key: party.key.clone(),
            spec: party.spec.clone(),
            nonce,
        };
        let outcome = drive(&connector, &again(&acceptor, a_nonce), |step, frame| {
            Some(if step == 2 { recorded[2].clone() } else { frame })
        });
        prop_assert_eq!(outcome.error, Some(HandshakeError::BadProof));
        prop_assert!(outcome.authenticated.is_none());
        let outcome = drive(&again(&connector, c_nonce), &acceptor, |step, frame| {
            Some(if step == 1 { recorded[1].clone() } else { frame })
        });
        prop_assert_eq!(outcome.error, Some(HandshakeError::BadProof));
        prop_assert!(outcome.opened.is_none());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    /// Arbitrary frames fed to either side: no panic, and never authenticated or open (that
    /// takes a proof under the secret).
    #[test]
    fn arbitrary_frames_never_open_a_handshake(
        (connector, acceptor) in pair(),
        to_connector in vec(frame(), 0..5),
        to_acceptor in vec(prop_oneof![handshake_frame(), frame()], 0..5),
    ) {
        let (mut c, _hello) =
            Connector::new(connector.secret(), connector.spec, "default", 0, connector.nonce);
        for frame in to_connector {
            let step = c.on_frame(frame);
            prop_assert!(!matches!(step, Ok(ConnectorStep::Open { .. })), "{:?}", step);
        }
        let mut a = Acceptor::new(acceptor.secret(), acceptor.spec, acceptor.nonce);
        for frame in to_acceptor {
            let step = a.on_frame(frame);
            prop_assert!(!matches!(step, Ok(AcceptorStep::Authenticated { .. })), "{:?}", step);
        }
    }

    /// A genuine exchange with one frame mutated on the wire: no panic; and if both sides
    /// still complete, the mutation left every authenticated field as it was.
    #[test]
    fn a_tampered_exchange_opens_only_if_nothing_authenticated_changed(
        (connector, acceptor) in pair(),
        step in 0usize..4,
        mutations in vec(mutation(), 1..4),
    ) {
        let mut original = None;
        let mut tampered = None;
        let outcome = drive(&connector, &acceptor, |at, frame| {
            if at != step {
                return Some(frame);
            }
            let mut bytes = BytesMut::new();
            encode_frame(&frame, &mut bytes, ROOMY_MAX).expect("encodes");
            let mut body = bytes[LENGTH_PREFIX_BYTES..].to_vec();
            for mutation in &mutations {
                mutate(&mut body, mutation);
            }
            let changed = decode_body(&Bytes::from(body)).ok()?;
            original = Some(frame);
            tampered = Some(changed.clone());
            Some(changed)
        });
        if let (Some(original), Some(tampered), Some(_), Some(_)) =
            (original, tampered, &outcome.authenticated, &outcome.opened)
        {
            prop_assert_eq!(authenticated_part(&tampered), authenticated_part(&original));
        }
        if let Some(hello) = &outcome.authenticated {
            prop_assert_eq!(&hello.spec.name, &connector.spec.name);
            prop_assert_eq!(hello.spec.incarnation, connector.spec.incarnation);
        }
        if let Some(peer) = &outcome.opened {
            prop_assert_eq!(&peer.name, &acceptor.spec.name);
            prop_assert_eq!(peer.incarnation, acceptor.spec.incarnation);
        }
    }
}

/// The version a hello carries is checked before anything else.
#[test]
fn a_hello_of_another_version_is_refused() {
    let spec = |name: &str| NodeSpec {
        name: name.into(),
        incarnation: 1,
        listen_addrs: Vec::new(),
        channels: BTreeMap::new(),
    };
    let mut acceptor = Acceptor::new(Secret::new("s"), spec("a"), [0; NONCE_BYTES]);
    let hello = Hello {
        version: PROTOCOL_VERSION + 1,
        spec: spec("b"),
        channel: "default".into(),
        index: 0,
        nonce: vec![0; NONCE_BYTES],
    };
    assert_eq!(
        acceptor.on_frame(Frame::Hello(hello)),
        Err(HandshakeError::UnsupportedVersion {
            theirs: PROTOCOL_VERSION + 1,
            ours: PROTOCOL_VERSION
        })
    );
}
