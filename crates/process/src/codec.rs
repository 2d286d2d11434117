//! Serialisation for messages that cross nodes: msgpack through rmp-serde.
//!
//! Messages between processes of one node are moved, never serialised. A message for another
//! node is encoded once by the sender; the receiving *process* decodes it with its behaviour's
//! [`Codec`], so a payload that does not decode is an error for that one message, logged by the
//! receiver, and never a crash.

use std::cell::RefCell;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{DecodeError, EncodeError, Process};

/// Encodes `value` as msgpack (structs as arrays: compact, order-sensitive).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, EncodeError> {
    // A small message is written into this thread's scratch buffer and copied out into one
    // allocation of exactly its size: no growing, and a `Bytes` that owns a plain boxed slice
    // (from a `Vec` with spare capacity, `Bytes` would allocate a shared header besides). A
    // value whose `Serialize` encodes another one meanwhile gets a buffer of its own.
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut scratch) => {
            scratch.clear();
            let written = write(&mut scratch, value);
            let encoded = written.map(|()| {
                if scratch.len() <= SCRATCH_KEPT_BYTES {
                    Bytes::copy_from_slice(&scratch)
                } else {
                    // A large message keeps its buffer; the scratch starts small again.
                    Bytes::from(std::mem::take(&mut *scratch))
                }
            });
            if scratch.capacity() > SCRATCH_KEPT_BYTES {
                *scratch = Vec::new();
            }
            encoded
        }
        Err(_) => {
            let mut bytes = Vec::new();
            write(&mut bytes, value).map(|()| Bytes::from(bytes))
        }
    })
}

/// The largest scratch buffer a thread keeps between messages.
const SCRATCH_KEPT_BYTES: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), EncodeError> {
    rmp_serde::encode::write(out, value)
        .map_err(|error| EncodeError(format!("{}: {error}", std::any::type_name::<T>())))
}

/// Decodes msgpack produced by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    rmp_serde::from_slice(bytes)
        .map_err(|error| DecodeError(format!("{}: {error}", std::any::type_name::<T>())))
}

/// How a behaviour's messages cross nodes: its casts and requests encoded by the sender and
/// decoded by the receiving process, its replies the other way.
///
/// A behaviour opts in to messages from other nodes by returning `Some(Codec::msgpack())` from
/// [`Process::remote_messages`]; without one, messages from other nodes are refused with
/// [`crate::RemoteFailure::NotRemote`], and a typed handle to such a process on another node
/// cannot be made.
pub struct Codec<P: Process> {
    pub(crate) encode_cast: fn(&P::Message) -> Result<Bytes, EncodeError>,
    pub(crate) decode_cast: fn(&[u8]) -> Result<P::Message, DecodeError>,
    pub(crate) encode_call: fn(&P::Call) -> Result<Bytes, EncodeError>,
    pub(crate) decode_call: fn(&[u8]) -> Result<P::Call, DecodeError>,
    pub(crate) encode_reply: fn(&P::Reply) -> Result<Bytes, EncodeError>,
    pub(crate) decode_reply: fn(&[u8]) -> Result<P::Reply, DecodeError>,
}

impl<P: Process> Codec<P>
where
    P::Message: Serialize + DeserializeOwned,
    P::Call: Serialize + DeserializeOwned,
    P::Reply: Serialize + DeserializeOwned,
{
    /// The msgpack codec, for behaviours whose message, request and reply types implement
    /// serde's traits.
    pub fn msgpack() -> Self {
        Self {
            encode_cast: |message| encode(message),
            decode_cast: decode,
            encode_call: |request| encode(request),
            decode_call: decode,
            encode_reply: |reply| encode(reply),
            decode_reply: decode,
        }
    }
}

impl<P: Process> Clone for Codec<P> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P: Process> Copy for Codec<P> {}
