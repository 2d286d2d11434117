//! Messaging by pid, wherever the process runs: the message type is checked on arrival at a
//! local process, and a process on another node gets it serialised through the transport.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::addr::within;
use crate::cell::{AnyBox, ErasedPush};
use crate::codec::{decode, encode};
use crate::current;
use crate::mailbox::Overflow;
use crate::remote::{Outbound, Remote, RemoteReply, RouteError};
use crate::{CallError, Pid, RemoteFailure, Runtime, SendError};

/// Why a message for another node could not even be handed to the transport.
enum NotRoutable {
    NoProc,
    NoConnection,
    Encode(crate::EncodeError),
}

impl Runtime {
    /// Casts `message` to `pid`, waiting for room if its mailbox (or the link to its node) is
    /// full. A local process gets the value moved; a remote one gets it encoded. A process
    /// casting to itself never waits: see [`crate::Addr::cast`].
    pub async fn cast<M>(&self, pid: Pid, message: M) -> Result<(), SendError<M>>
    where
        M: Serialize + Send + 'static,
    {
        if !self.is_local(pid) {
            return self.cast_remote(pid, message).await;
        }
        let mut message: AnyBox = Box::new(message);
        loop {
            let Some(cell) = self.lookup(pid) else {
                return Err(SendError::NoProc(unbox(message)));
            };
            match cell.try_cast_any(message) {
                Err(ErasedPush::Full(back))
                    if cell.mailbox_config().overflow == Overflow::Wait
                        && !current::is_running(cell.control()) =>
                {
                    message = back;
                    poll_fn(|cx| cell.poll_room(cx)).await;
                }
                done => return done.map_err(send_error),
            }
        }
    }

    /// Casts `message` to `pid` without waiting: a full mailbox, or a full link to the node,
    /// is [`SendError::Full`].
    pub fn try_cast<M>(&self, pid: Pid, message: M) -> Result<(), SendError<M>>
    where
        M: Serialize + Send + 'static,
    {
        if self.is_local(pid) {
            return match self.lookup(pid) {
                Some(cell) => cell.try_cast_any(Box::new(message)).map_err(send_error),
                None => Err(SendError::NoProc(message)),
            };
        }
        let (remote, payload) = match self.prepare_remote(pid, &message) {
            Ok(prepared) => prepared,
            Err(failure) => return Err(not_routable(failure, message)),
        };
        match remote.try_route(Outbound::Cast { to: pid, payload }) {
            Ok(()) => Ok(()),
            Err(RouteError::Full(_)) => Err(SendError::Full(message)),
            Err(RouteError::NoConnection(_)) => Err(SendError::NoConnection(message)),
        }
    }

    async fn cast_remote<M: Serialize>(&self, pid: Pid, message: M) -> Result<(), SendError<M>> {
        let (remote, payload) = match self.prepare_remote(pid, &message) {
            Ok(prepared) => prepared,
            Err(failure) => return Err(not_routable(failure, message)),
        };
        let mut outbound = Outbound::Cast { to: pid, payload };
        loop {
            match remote.try_route(outbound) {
                Ok(()) => {
                    // A sender with room never waits. Spending coop budget makes a long loop
                    // of casts yield now and then, so that the transport's writer (woken on
                    // this worker, where it waits behind the sender) and heartbeats run, and
                    // the sender and the writer can go on in parallel on two workers.
                    tokio::task::coop::consume_budget().await;
                    return Ok(());
                }
                Err(RouteError::Full(back)) => {
                    outbound = back;
                    if poll_fn(|cx| remote.poll_ready(pid, cx)).await.is_err() {
                        return Err(SendError::NoConnection(message));
                    }
                }
                Err(RouteError::NoConnection(_)) => return Err(SendError::NoConnection(message)),
            }
        }
    }

    fn prepare_remote<M: Serialize>(
        &self,
        pid: Pid,
        message: &M,
    ) -> Result<(Arc<dyn Remote>, Bytes), NotRoutable> {
        if pid.node() == self.node() {
            // A pid of a previous run of this node: that process is gone.
            return Err(NotRoutable::NoProc);
        }
        let remote = self.remote().ok_or(NotRoutable::NoConnection)?.clone();
        let payload = encode(message).map_err(NotRoutable::Encode)?;
        Ok((remote, payload))
    }

    /// Calls `pid` with `request` and waits up to `timeout` for a reply of type `R`. A process
    /// calling itself is refused at once with [`CallError::CallingSelf`].
    pub async fn call<Q, R>(&self, pid: Pid, request: Q, timeout: Duration) -> Result<R, CallError>
    where
        Q: Serialize + Send + 'static,
        R: DeserializeOwned + Send + 'static,
    {
        if self.is_local(pid) {
            within(timeout, self.call_local(pid, request)).await
        } else {
            // An answer from another node never comes within one round of the scheduler, so
            // the timer is armed at once rather than after a yield.
            let deadline = tokio::time::Instant::now().checked_add(timeout);
            let exchange = self.call_remote(pid, request);
            match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, exchange)
                    .await
                    .unwrap_or(Err(CallError::Timeout)),
                // Further away than the clock can count: no deadline at all.
                None => exchange.await,
            }
        }
    }

    async fn call_local<Q, R>(&self, pid: Pid, request: Q) -> Result<R, CallError>
    where
        Q: Send + 'static,
        R: Send + 'static,
    {
        let mut request: AnyBox = Box::new(request);
        let (cell, reply) = loop {
            let cell = self.lookup(pid).ok_or(CallError::NoProc)?;
            if current::is_running(cell.control()) {
                return Err(CallError::CallingSelf);
            }
            let (sender, reply) = tokio::sync::oneshot::channel();
            match cell.try_call_any(request, sender) {
                Ok(()) => break (cell, reply),
                Err(ErasedPush::Full(back)) if cell.mailbox_config().overflow == Overflow::Wait => {
                    request = back;
                    poll_fn(|cx| cell.poll_room(cx)).await;
                }
                Err(ErasedPush::Full(_)) => return Err(CallError::Full),
                Err(ErasedPush::Closed(_)) => return Err(CallError::NoProc),
                Err(ErasedPush::WrongType(_)) => {
                    return Err(CallError::WrongType(std::any::type_name::<Q>()));
                }
            }
        };
        match reply.await {
            Ok(reply) => reply
                .downcast::<R>()
                .map(|reply| *reply)
                .map_err(|_| CallError::ReplyType(std::any::type_name::<R>())),
            Err(_) => Err(cell
                .control()
                .reason_for_callers()
                .map_or(CallError::NoReply, CallError::Exited)),
        }
    }

    async fn call_remote<Q, R>(&self, pid: Pid, request: Q) -> Result<R, CallError>
    where
        Q: Serialize,
        R: DeserializeOwned,
    {
        let (remote, payload) =
            self.prepare_remote(pid, &request).map_err(|failure| match failure {
                NotRoutable::NoProc => CallError::NoProc,
                NotRoutable::NoConnection => CallError::NoConnection,
                NotRoutable::Encode(error) => CallError::Encode(error),
            })?;
        let (reply, answer) = RemoteReply::new();
        let mut outbound = Outbound::Call { to: pid, payload, reply };
        loop {
            match remote.try_route(outbound) {
                Ok(()) => break,
                Err(RouteError::Full(back)) => {
                    outbound = back;
                    if poll_fn(|cx| remote.poll_ready(pid, cx)).await.is_err() {
                        return Err(CallError::NoConnection);
                    }
                }
                Err(RouteError::NoConnection(_)) => return Err(CallError::NoConnection),
            }
        }
        match answer.await {
            Ok(Ok(bytes)) => decode(&bytes).map_err(CallError::Decode),
            Ok(Err(failure)) => Err(match failure {
                RemoteFailure::NoProc => CallError::NoProc,
                RemoteFailure::Exited(reason) => CallError::Exited(reason),
                RemoteFailure::NoReply => CallError::NoReply,
                RemoteFailure::Full => CallError::Full,
                other => CallError::Remote(other),
            }),
            // The transport dropped the call: the connection was lost before an answer.
            Err(_) => Err(CallError::NoConnection),
        }
    }
}

fn unbox<M: 'static>(message: AnyBox) -> M {
    match message.downcast::<M>() {
        Ok(message) => *message,
        Err(_) => unreachable!("only an M boxed by the caller comes back"),
    }
}

fn send_error<M: 'static>(error: ErasedPush<AnyBox>) -> SendError<M> {
    match error {
        ErasedPush::Full(message) => SendError::Full(unbox(message)),
        ErasedPush::Closed(message) => SendError::NoProc(unbox(message)),
        ErasedPush::WrongType(message) => SendError::WrongType(unbox(message)),
    }
}

fn not_routable<M>(failure: NotRoutable, message: M) -> SendError<M> {
    match failure {
        NotRoutable::NoProc => SendError::NoProc(message),
        NotRoutable::NoConnection => SendError::NoConnection(message),
        NotRoutable::Encode(error) => SendError::Encode(message, error),
    }
}
