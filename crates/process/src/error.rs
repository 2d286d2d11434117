//! The error enums, one per family of operations.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::dest::ResolveError;
use crate::{ExitReason, Pid};

/// A cast that was not queued. Every variant hands the message back.
pub enum SendError<M> {
    /// The mailbox is full: returned by `try_` senders, and by every sender when the target's
    /// overflow policy is `Reject`.
    Full(M),
    /// No such process is alive.
    NoProc(M),
    /// The process takes messages of another type.
    WrongType(M),
    /// The process lives on a node that cannot be reached (or no transport is installed).
    NoConnection(M),
    /// The message could not be serialised for another node.
    Encode(M, EncodeError),
    /// The destination's name did not resolve to a process (its layer failed, or had no
    /// answer yet for a sender that does not wait).
    Unresolved(M, ResolveError),
}

impl<M> SendError<M> {
    /// The message that was not sent.
    pub fn into_inner(self) -> M {
        match self {
            Self::Full(m)
            | Self::NoProc(m)
            | Self::WrongType(m)
            | Self::NoConnection(m)
            | Self::Encode(m, _)
            | Self::Unresolved(m, _) => m,
        }
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("the mailbox is full"),
            Self::NoProc(_) => f.write_str("no such process"),
            Self::WrongType(_) => write!(
                f,
                "the process does not take messages of type {}",
                std::any::type_name::<M>()
            ),
            Self::NoConnection(_) => f.write_str("the process's node cannot be reached"),
            Self::Encode(_, error) => write!(f, "the message could not be encoded: {error}"),
            Self::Unresolved(_, error) => write!(f, "{error}"),
        }
    }
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SendError({self})")
    }
}

impl<M> std::error::Error for SendError<M> {}

/// A call that got no reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// A process called itself: only it could answer, and it would be waiting. Refused at
    /// once; nothing was queued.
    #[error("a process cannot call itself")]
    CallingSelf,
    /// No reply came within the timeout; a late reply is discarded.
    #[error("no reply within the timeout")]
    Timeout,
    /// No such process was alive when the call was made.
    #[error("no such process")]
    NoProc,
    /// The process exited before it replied.
    #[error("the process exited before replying: {0}")]
    Exited(ExitReason),
    /// The process dropped the reply handle without replying.
    #[error("the process dropped the call without replying")]
    NoReply,
    /// The mailbox was full and the target's overflow policy is `Reject`.
    #[error("the mailbox is full")]
    Full,
    /// The process takes requests of another type.
    #[error("the process does not take requests of type {0}")]
    WrongType(&'static str),
    /// The process replied with a value of another type than the caller expected.
    #[error("the reply is not of the expected type {0}")]
    ReplyType(&'static str),
    /// The process lives on a node that cannot be reached (or no transport is installed).
    #[error("the process's node cannot be reached")]
    NoConnection,
    /// The request could not be serialised.
    #[error("the request could not be encoded: {0}")]
    Encode(EncodeError),
    /// The reply from another node could not be decoded.
    #[error("the reply could not be decoded: {0}")]
    Decode(DecodeError),
    /// The remote side refused or failed the call.
    #[error("the remote call failed: {0}")]
    Remote(RemoteFailure),
    /// The destination's name did not resolve to a process (its layer failed).
    #[error(transparent)]
    Unresolved(ResolveError),
}

/// A [`crate::Runtime::sys`] whose work did not hand back its result. Unless the variant says
/// otherwise, the work did not run and never will: the process's state is as it was.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SysError {
    /// No such process was alive on this node when the work was to be queued (or it exited
    /// after, and why is not known).
    #[error("no such process on this node: {0}")]
    NoProc(Pid),
    /// The process lives on another node: work is a closure, and closures do not cross nodes.
    #[error("{0} lives on another node: sys work runs only in processes of this node")]
    Remote(Pid),
    /// The process runs another behaviour than the work was written for.
    #[error("{0} runs another behaviour than the sys work expects")]
    WrongBehaviour(Pid),
    /// A process asked to run work in itself: the work would wait for the very handler that
    /// waits for it. Refused at once; nothing was queued.
    #[error("{0} cannot run sys work in itself from its own handler")]
    ToSelf(Pid),
    /// A hand-off ([`crate::Runtime::hand_off`]) to a process of another node, for a behaviour
    /// that takes no messages from other nodes ([`crate::Process::remote_messages`] is `None`):
    /// its letters could not be sent there. Refused at once; nothing was queued.
    #[error("{pid} cannot hand off to {to}, on another node: its behaviour has no codec")]
    NoCodec {
        /// The process to hand off.
        pid: Pid,
        /// Its successor, on another node.
        to: Pid,
    },
    /// A hand-off whose successor is the process itself: its letters would go round for the
    /// whole window. Refused at once; nothing was queued.
    #[error("{0} cannot hand off to itself")]
    HandOffToItself(Pid),
    /// The work had not begun within the timeout. It was withdrawn: it will not run later.
    #[error("the sys work did not run within the timeout")]
    Timeout,
    /// The process exited after the work was queued and before it ran, or because the work
    /// panicked (the reason is then that panic, and the process's state is gone either way).
    #[error("{pid} exited before the sys work completed: {reason}")]
    Exited {
        /// The process.
        pid: Pid,
        /// Why it exited.
        reason: ExitReason,
    },
}

/// Why a call from another node failed on the node of the process that was called; travels
/// back to the caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteFailure {
    /// No such process was alive.
    #[error("no such process")]
    NoProc,
    /// The process exited before it replied.
    #[error("the process exited before replying: {0}")]
    Exited(ExitReason),
    /// The process dropped the call without replying.
    #[error("the process dropped the call without replying")]
    NoReply,
    /// The process's mailbox was full and its overflow policy is `Reject`.
    #[error("the mailbox is full")]
    Full,
    /// The process does not take messages from other nodes (its behaviour has no codec).
    #[error("the process does not take messages from other nodes")]
    NotRemote,
    /// The request did not decode as the process's request type.
    #[error("the request did not decode: {0}")]
    BadRequest(String),
    /// The reply could not be encoded.
    #[error("the reply could not be encoded: {0}")]
    BadReply(String),
}

/// A spawn that did not happen. Nothing was started.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpawnError {
    /// The requested name is registered to another process.
    #[error("the name {name:?} is already registered to {holder}")]
    NameTaken {
        /// The name asked for.
        name: String,
        /// The process that holds it.
        holder: Pid,
    },
    /// The requested name is not acceptable.
    #[error("invalid process name {0:?}: names are 1 to 255 bytes long")]
    InvalidName(String),
    /// The process to link to is not alive.
    #[error("cannot link to {0}: no such process")]
    LinkNoProc(Pid),
    /// The mailbox configuration is not acceptable.
    #[error("invalid mailbox: capacity must be at least 1")]
    InvalidMailbox,
    /// No factory is registered under that name.
    #[error("no process factory is registered as {0:?}")]
    UnknownFactory(String),
    /// The start arguments did not decode as the factory's argument type.
    #[error("bad start arguments for factory {factory:?}: {error}")]
    BadArgs {
        /// The factory's name.
        factory: String,
        /// What was wrong.
        error: DecodeError,
    },
    /// The code that builds the behaviour (a factory's build function, a supervisor's child
    /// closure) panicked; the panic's message.
    #[error("building the process panicked: {0}")]
    BuildPanicked(String),
}

impl SpawnError {
    /// The error for a build that panicked with `payload` (as caught by
    /// [`std::panic::catch_unwind`]).
    pub fn build_panicked(payload: &(dyn std::any::Any + Send)) -> Self {
        Self::BuildPanicked(crate::guard::panic_message(payload))
    }
}

/// An exit signal that was not sent; nothing changed at its target.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExitError {
    /// The target traps exits, so the signal would be a letter in its mailbox, and the mailbox
    /// is full. The reason is handed back.
    #[error("the process traps exits and its mailbox is full (exit reason {0})")]
    Full(ExitReason),
}

/// A start (spawn, then wait for the process's `init`) that failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// The process was never spawned.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// The process was spawned but its `init` failed, panicked or was interrupted; it has
    /// exited with this reason.
    #[error("init failed: {0}")]
    Init(ExitReason),
}

/// A link that could not be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The process to link to is not alive.
    #[error("cannot link to {0}: no such process")]
    NoProc(Pid),
    /// The process's node cannot be reached.
    #[error("cannot link to {0}: its node cannot be reached")]
    NoConnection(Pid),
    /// The destination does not stand for a pid here and now (a name not registered, a name on
    /// another node, a via-name not resolved yet): links are made to pids.
    #[error("cannot link to {0}: it does not resolve to a process here and now")]
    Unresolved(String),
}

/// A name registration that was refused. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The name is registered to another process.
    #[error("the name {name:?} is already registered to {holder}")]
    NameTaken {
        /// The name asked for.
        name: String,
        /// The process that holds it.
        holder: Pid,
    },
    /// The process already has a name (a process has at most one).
    #[error("{pid} is already registered as {name:?}")]
    AlreadyNamed {
        /// The process.
        pid: Pid,
        /// Its current name.
        name: String,
    },
    /// The process is not alive on this node.
    #[error("no such process on this node: {0}")]
    NoProc(Pid),
    /// The name is not acceptable.
    #[error("invalid process name {0:?}: names are 1 to 255 bytes long")]
    InvalidName(String),
}

/// A factory registration that was refused. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FactoryError {
    /// A factory is already registered under that name.
    #[error("a process factory is already registered as {0:?}")]
    Taken(String),
    /// The name is not acceptable.
    #[error("invalid factory name {0:?}: names are 1 to 255 bytes long")]
    InvalidName(String),
}

/// A value that could not be serialised to msgpack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{0}")]
pub struct EncodeError(pub String);

/// Bytes that did not decode as the expected type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// A runtime that could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// `build` was called outside a tokio runtime.
    #[error("a Shoal runtime must be built inside a tokio runtime (with time enabled)")]
    NoTokio,
    /// The node name is not acceptable.
    #[error("invalid node name {0:?}: names are 1 to 255 bytes long")]
    InvalidNodeName(String),
    /// The default mailbox configuration is not acceptable.
    #[error("invalid mailbox: capacity must be at least 1")]
    InvalidMailbox,
}

/// Checks a process or node name: 1 to 255 bytes.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=255).contains(&name.len())
}
