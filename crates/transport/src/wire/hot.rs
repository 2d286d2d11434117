//! The frames of the hot path — [`Frame::Cast`], [`Frame::Call`] and a successful
//! [`Frame::Reply`] — written and read by hand, byte for byte as rmp-serde writes them.
//!
//! rmp-serde spends most of a small frame's time on generic machinery (variant names matched
//! as strings, a thread-local for zero-copy payloads, a bounds check per byte written).
//! These three frames are nearly all the traffic, and their msgpack is fixed:
//!
//! ```text
//! Cast:  81 a4 "Cast"  92 [pid] [bin payload]
//! Call:  81 a4 "Call"  93 [uint id] [pid] [bin payload]
//! Reply: 81 a5 "Reply" 92 [uint id] 81 a2 "Ok" [bin payload]
//! pid:   93 [uint node] [uint incarnation] [uint id]
//! ```
//!
//! with every uint in its shortest form and `bin` as bin8, bin16 or bin32, as rmp-serde
//! chooses. Reading accepts exactly these shapes and leaves anything else (another frame, a
//! longer encoding, a malformed body) to rmp-serde, so what a body decodes to, or why it does
//! not, never depends on which reader took it. The unit tests below hold both directions to
//! rmp-serde.

use std::ops::Range;

use bytes::Bytes;
use shoal_process::{NodeId, Pid};

use super::Frame;

/// The most bytes a hot frame's header takes before its payload: map, variant name, array,
/// id, pid, `Ok` and the bin header, each at its longest.
const MAX_HEADER_BYTES: usize = 1 + 6 + 1 + 9 + (1 + 27) + 3 + 5;

/// A hot frame without its payload.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Head {
    Cast { to: Pid },
    Call { id: u64, to: Pid },
    Reply { id: u64 },
}

impl Head {
    pub(super) fn with_payload(self, payload: Bytes) -> Frame {
        match self {
            Self::Cast { to } => Frame::Cast { to, payload },
            Self::Call { id, to } => Frame::Call { id, to, payload },
            Self::Reply { id } => Frame::Reply { id, outcome: Ok(payload) },
        }
    }
}

/// A hot frame's header and payload, `None` for any other frame.
pub(super) fn split(frame: &Frame) -> Option<(Head, &Bytes)> {
    match frame {
        Frame::Cast { to, payload } => Some((Head::Cast { to: *to }, payload)),
        Frame::Call { id, to, payload } => Some((Head::Call { id: *id, to: *to }, payload)),
        Frame::Reply { id, outcome: Ok(payload) } => Some((Head::Reply { id: *id }, payload)),
        _ => None,
    }
}

/// The msgpack of a hot frame up to its payload, which follows it unchanged.
pub(super) struct Header {
    bytes: [u8; MAX_HEADER_BYTES],
    len: usize,
}

impl Header {
    pub(super) fn new(head: &Head, payload_len: usize) -> Self {
        let mut header = Self { bytes: [0; MAX_HEADER_BYTES], len: 0 };
        match head {
            Head::Cast { to } => {
                header.push(b"\x81\xa4Cast\x92");
                header.pid(*to);
            }
            Head::Call { id, to } => {
                header.push(b"\x81\xa4Call\x93");
                header.uint(*id);
                header.pid(*to);
            }
            Head::Reply { id } => {
                header.push(b"\x81\xa5Reply\x92");
                header.uint(*id);
                header.push(b"\x81\xa2Ok");
            }
        }
        header.bin_header(payload_len);
        header
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    fn push(&mut self, bytes: &[u8]) {
        self.bytes[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn pid(&mut self, pid: Pid) {
        self.push(&[0x93]);
        self.uint(pid.node().as_u64());
        self.uint(pid.incarnation());
        self.uint(pid.local_id());
    }

    /// rmp's `write_uint`: the shortest of positive fixint, uint8, 16, 32 and 64.
    fn uint(&mut self, n: u64) {
        match n {
            0..0x80 => self.push(&[n as u8]),
            0x80..0x100 => self.push(&[0xcc, n as u8]),
            0x100..0x1_0000 => {
                self.push(&[0xcd]);
                self.push(&(n as u16).to_be_bytes());
            }
            0x1_0000..0x1_0000_0000 => {
                self.push(&[0xce]);
                self.push(&(n as u32).to_be_bytes());
            }
            _ => {
                self.push(&[0xcf]);
                self.push(&n.to_be_bytes());
            }
        }
    }

    /// rmp's `write_bin_len`. A payload is bounded by the maximum frame size, which the node
    /// configuration keeps within `u32` (a longer one fails the frame's size check anyway).
    fn bin_header(&mut self, len: usize) {
        match len {
            0..0x100 => self.push(&[0xc4, len as u8]),
            0x100..0x1_0000 => {
                self.push(&[0xc5]);
                self.push(&(len as u16).to_be_bytes());
            }
            _ => {
                self.push(&[0xc6]);
                self.push(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
            }
        }
    }
}

/// Reads a hot frame's header from the start of `body`: the header, and where its payload
/// lies in `body`. `None` when the body is anything else; rmp-serde then decides.
pub(super) fn parse(body: &[u8]) -> Option<(Head, Range<usize>)> {
    let mut reader = Reader { body, at: 0 };
    let head = if reader.tag(b"\x81\xa4Cast\x92") {
        Head::Cast { to: reader.pid()? }
    } else if reader.tag(b"\x81\xa4Call\x93") {
        let id = reader.uint()?;
        Head::Call { id, to: reader.pid()? }
    } else if reader.tag(b"\x81\xa5Reply\x92") {
        let id = reader.uint()?;
        reader.tag(b"\x81\xa2Ok").then_some(())?;
        Head::Reply { id }
    } else {
        return None;
    };
    let len = reader.bin_header()?;
    let start = reader.at;
    // The payload ends the body exactly: bytes left over are left to rmp-serde's reading,
    // which refuses them.
    let end = start.checked_add(len).filter(|end| *end == body.len())?;
    Some((head, start..end))
}

struct Reader<'a> {
    body: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    /// Consumes `tag` if the body continues with it.
    fn tag(&mut self, tag: &[u8]) -> bool {
        let matches = self.body.get(self.at..self.at + tag.len()) == Some(tag);
        if matches {
            self.at += tag.len();
        }
        matches
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let bytes = self.body.get(self.at..self.at + N)?.try_into().ok()?;
        self.at += N;
        Some(bytes)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take::<1>().map(|[byte]| byte)
    }

    /// An unsigned msgpack integer in any width (rmp-serde reads each of them into a `u64`).
    fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            n @ 0..0x80 => Some(u64::from(n)),
            0xcc => self.byte().map(u64::from),
            0xcd => self.take().map(u16::from_be_bytes).map(u64::from),
            0xce => self.take().map(u32::from_be_bytes).map(u64::from),
            0xcf => self.take().map(u64::from_be_bytes),
            _ => None,
        }
    }

    fn pid(&mut self) -> Option<Pid> {
        self.tag(&[0x93]).then_some(())?;
        let node = NodeId::from_u64(self.uint()?);
        let incarnation = self.uint()?;
        let id = self.uint()?;
        Some(Pid::from_parts(node, incarnation, id))
    }

    fn bin_header(&mut self) -> Option<usize> {
        match self.byte()? {
            0xc4 => self.byte().map(usize::from),
            0xc5 => self.take().map(u16::from_be_bytes).map(usize::from),
            0xc6 => self.take().map(u32::from_be_bytes).map(|len| len as usize),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Numbers of every width rmp chooses from.
    fn number() -> impl Strategy<Value = u64> {
        prop_oneof![
            0u64..0x80,
            0x80u64..0x100,
            0x100u64..0x1_0000,
            0x1_0000u64..0x1_0000_0000,
            any::<u64>(),
        ]
    }

    /// Payloads under each of bin8, bin16 and bin32.
    fn payload() -> impl Strategy<Value = Bytes> {
        prop_oneof![
            8 => proptest::collection::vec(any::<u8>(), 0..300),
            1 => (0x100usize..0x1_0100).prop_map(|len| vec![7; len]),
            1 => Just(vec![1; 0x1_0000]),
        ]
        .prop_map(Bytes::from)
    }

    fn pid() -> impl Strategy<Value = Pid> {
        (number(), number(), number())
            .prop_map(|(node, inc, id)| Pid::from_parts(NodeId::from_u64(node), inc, id))
    }

    fn hot_frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            (pid(), payload()).prop_map(|(to, payload)| Frame::Cast { to, payload }),
            (number(), pid(), payload()).prop_map(|(id, to, payload)| Frame::Call {
                id,
                to,
                payload
            }),
            (number(), payload())
                .prop_map(|(id, payload)| Frame::Reply { id, outcome: Ok(payload) }),
        ]
    }

    fn serde_body(frame: &Frame) -> Vec<u8> {
        rmp_serde::to_vec(frame).expect("a hot frame encodes")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// The hand-written encoding is rmp-serde's, byte for byte.
        #[test]
        fn hot_frames_encode_as_rmp_serde_does(frame in hot_frame()) {
            let (head, payload) = split(&frame).expect("a hot frame");
            let mut out = Header::new(&head, payload.len()).bytes().to_vec();
            out.extend_from_slice(payload);
            prop_assert_eq!(out, serde_body(&frame));
        }

        /// Whatever the hand-written reader accepts, rmp-serde reads as the same frame, with
        /// the same payload bytes; and it accepts every hot frame rmp-serde wrote.
        #[test]
        fn the_reader_agrees_with_rmp_serde(
            frame in hot_frame(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut body = serde_body(&frame);
            if edits.is_empty() && !truncate {
                prop_assert!(parse(&body).is_some());
            }
            for (at, byte) in edits {
                let at = at.index(body.len());
                body[at] = byte;
            }
            if truncate {
                body.truncate(cut.index(body.len() + 1));
            }
            if let Some((head, range)) = parse(&body) {
                let fast = head.with_payload(Bytes::copy_from_slice(&body[range]));
                let slow: Frame = rmp_serde::from_slice(&body).expect("rmp-serde reads it too");
                prop_assert_eq!(fast, slow);
            }
        }
    }
}
