//! The broadcast service's errors: [`BroadcastError`] for operations on a running
//! [`Broadcast`](super::Broadcast), [`BroadcastStartError`] for starting one (which fails in
//! ways no operation can, and an operation in ways starting cannot).

/// Why an operation on a [`Broadcast`](super::Broadcast) did nothing. Each variant says which
/// operations return it; in every case the overlay and the topics are unchanged, and a
/// message that was not broadcast is dropped.
#[derive(Debug, thiserror::Error)]
pub enum BroadcastError {
    /// [`join`](super::Broadcast::join): the transport could not connect to the contact (its
    /// cause inside).
    #[error(transparent)]
    Transport(#[from] shoal_transport::JoinError),
    /// [`join`](super::Broadcast::join): the contact is this node.
    #[error("a node cannot join through itself")]
    ContactIsSelf,
    /// [`register`](super::Broadcast::register): a handler is registered for a topic of that
    /// name already; it is kept.
    #[error("a handler is registered for topic {0:?} already")]
    TopicTaken(String),
    /// [`broadcast`](super::Broadcast::broadcast): no handler is registered on this node for
    /// the topic (its name with its message type: a handler registered under the same name
    /// for another type does not count).
    #[error("no handler is registered for topic {0:?} with this message type")]
    UnknownTopic(String),
    /// [`broadcast`](super::Broadcast::broadcast): the handler's id or payload did not encode.
    #[error("cannot encode: {0}")]
    Encode(String),
    /// [`broadcast`](super::Broadcast::broadcast): the handler's `merge` said the produced
    /// message is not new; nothing was sent.
    #[error("the handler already knew the produced message; nothing was sent")]
    NotNew,
    /// Any operation: the broadcast driver has stopped (the node stopped, or
    /// [`stop`](super::Broadcast::stop) was called).
    #[error("the broadcast driver has stopped")]
    Stopped,
}

/// Why [`Broadcast::start`](super::Broadcast::start) did not start; nothing was left running.
#[derive(Debug, thiserror::Error)]
pub enum BroadcastStartError {
    /// The transport service could not be opened (it is open already on this node).
    #[error(transparent)]
    Service(#[from] shoal_transport::ServiceError),
    /// A setting in the configuration is zero that must not be.
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
}
