//! Handlers of any types behind one: ids and payloads as msgpack bytes, so that one driver
//! task runs a Plumtree core per topic whatever each handler's types, and one wire message
//! type carries them all.
//!
//! Encoding is deterministic (the same id always encodes to the same bytes), so the core's
//! bookkeeping by encoded id matches its bookkeeping by id. Bytes from other nodes that do
//! not decode as the handler's types are treated as nothing new: logged, never merged.

use std::any::Any;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;

use super::AntiEntropy;
use crate::core::{Graft, Handler};

/// What the driver needs of a handler, with ids and payloads as bytes.
trait Bytes: Send {
    /// Produces and encodes a broadcast from `message`, if it is the handler's type.
    fn prepare(&mut self, message: Box<dyn Any + Send>) -> Result<(ByteBuf, ByteBuf), Prepare>;
    fn merge(&mut self, id: &ByteBuf, payload: ByteBuf) -> bool;
    fn is_stale(&self, id: &ByteBuf) -> bool;
    fn graft(&mut self, id: &ByteBuf) -> Graft<ByteBuf, String>;
    fn exchange(&mut self, peer: &str) -> Result<(), String>;
    fn digest(&self) -> Result<ByteBuf, String>;
    fn missing(&mut self, digest: &ByteBuf, max: usize) -> Vec<(ByteBuf, ByteBuf)>;
}

/// Why a message could not be prepared for broadcast.
pub(super) enum Prepare {
    WrongType,
    Encode(String),
}

/// A handler of any types, as the driver's Plumtree cores see it.
pub(crate) struct Erased(Box<dyn Bytes>);

impl Erased {
    pub(super) fn new<H>(handler: H) -> Self
    where
        H: AntiEntropy + Send + 'static,
        H::Message: Send + 'static,
        H::Id: Serialize + DeserializeOwned + Send,
        H::Payload: Serialize + DeserializeOwned + Send,
    {
        Erased(Box::new(Typed(handler)))
    }

    /// The id and payload of a broadcast of `message`, encoded; the core's `broadcast` then
    /// merges them like any other message.
    pub(super) fn prepare(
        &mut self,
        message: Box<dyn Any + Send>,
    ) -> Result<(ByteBuf, ByteBuf), Prepare> {
        self.0.prepare(message)
    }

    /// The handler's digest, encoded.
    pub(super) fn digest(&self) -> Result<ByteBuf, String> {
        self.0.digest()
    }

    /// Up to `max` messages a peer's encoded `digest` lacks.
    pub(super) fn missing(&mut self, digest: &ByteBuf, max: usize) -> Vec<(ByteBuf, ByteBuf)> {
        self.0.missing(digest, max)
    }
}

impl Handler<String> for Erased {
    /// Already produced and encoded by [`Erased::prepare`].
    type Message = (ByteBuf, ByteBuf);
    type Id = ByteBuf;
    type Payload = ByteBuf;
    type Error = String;

    fn produce(&mut self, prepared: (ByteBuf, ByteBuf)) -> (ByteBuf, ByteBuf) {
        prepared
    }

    fn merge(&mut self, id: &ByteBuf, payload: ByteBuf) -> bool {
        self.0.merge(id, payload)
    }

    fn is_stale(&self, id: &ByteBuf) -> bool {
        self.0.is_stale(id)
    }

    fn graft(&mut self, id: &ByteBuf) -> Graft<ByteBuf, String> {
        self.0.graft(id)
    }

    fn exchange(&mut self, peer: &String) -> Result<(), String> {
        self.0.exchange(peer)
    }
}

/// A typed handler behind [`Bytes`].
struct Typed<H>(H);

fn encode<T: Serialize>(value: &T) -> Result<ByteBuf, String> {
    rmp_serde::to_vec(value).map(ByteBuf::from).map_err(|error| error.to_string())
}

fn decode<T: DeserializeOwned>(bytes: &ByteBuf, what: &str) -> Option<T> {
    match rmp_serde::from_slice(bytes) {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::warn!(%error, "a broadcast {what} from a peer does not decode: ignored");
            None
        }
    }
}

impl<H> Bytes for Typed<H>
where
    H: AntiEntropy + Send + 'static,
    H::Message: Send + 'static,
    H::Id: Serialize + DeserializeOwned + Send,
    H::Payload: Serialize + DeserializeOwned + Send,
{
    fn prepare(&mut self, message: Box<dyn Any + Send>) -> Result<(ByteBuf, ByteBuf), Prepare> {
        let message = message.downcast::<H::Message>().map_err(|_| Prepare::WrongType)?;
        let (id, payload) = self.0.produce(*message);
        let id = encode(&id).map_err(Prepare::Encode)?;
        let payload = encode(&payload).map_err(Prepare::Encode)?;
        Ok((id, payload))
    }

    fn merge(&mut self, id: &ByteBuf, payload: ByteBuf) -> bool {
        match (decode::<H::Id>(id, "id"), decode::<H::Payload>(&payload, "payload")) {
            (Some(id), Some(payload)) => self.0.merge(&id, payload),
            _ => false,
        }
    }

    fn is_stale(&self, id: &ByteBuf) -> bool {
        // An id that does not decode can never be merged: asking for it would be wasted.
        decode::<H::Id>(id, "id").is_none_or(|id| self.0.is_stale(&id))
    }

    fn graft(&mut self, id: &ByteBuf) -> Graft<ByteBuf, String> {
        let Some(id) = decode::<H::Id>(id, "id") else { return Graft::Stale };
        match self.0.graft(&id) {
            Graft::Payload(payload) => match encode(&payload) {
                Ok(bytes) => Graft::Payload(bytes),
                Err(error) => Graft::Failed(error),
            },
            Graft::Stale => Graft::Stale,
            Graft::Failed(error) => Graft::Failed(format!("{error:?}")),
        }
    }

    fn exchange(&mut self, peer: &str) -> Result<(), String> {
        self.0.exchange(&peer.to_owned()).map_err(|error| format!("{error:?}"))
    }

    fn digest(&self) -> Result<ByteBuf, String> {
        encode(&self.0.digest())
    }

    fn missing(&mut self, digest: &ByteBuf, max: usize) -> Vec<(ByteBuf, ByteBuf)> {
        let Some(digest) = decode::<H::Digest>(digest, "digest") else { return Vec::new() };
        let mut items = Vec::new();
        for (id, payload) in self.0.missing(&digest, max).into_iter().take(max) {
            match (encode(&id), encode(&payload)) {
                (Ok(id), Ok(payload)) => items.push((id, payload)),
                (Err(error), _) | (_, Err(error)) => {
                    tracing::warn!(%error, "a message for anti-entropy does not encode: skipped");
                }
            }
        }
        items
    }
}
