//! [`ReplyTo`]: the handle a call handler uses to answer, now or later.

use std::any::Any;
use std::fmt;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::current::{self, HeldReply};
use crate::remote::ReplySink;
use crate::{EncodeError, ExitReason, RemoteFailure};

/// Where the reply to one call goes. Reply with [`ReplyTo::send`], in the handler or later from
/// anywhere (keep the handle, or move it to another task: a *deferred* reply). Dropping it
/// without replying tells the caller at once ([`crate::CallError::NoReply`]); a caller on this
/// node whose handle is dropped because the process exits gets
/// [`crate::CallError::Exited`] with the reason instead.
#[must_use = "the caller waits until this is answered or dropped"]
pub struct ReplyTo<R: Send + 'static> {
    route: Option<Route<R>>,
}

enum Route<R> {
    /// A caller on this node that knows the reply type.
    Local(oneshot::Sender<R>),
    /// A caller on this node that called by pid (the type is checked on arrival).
    Erased(oneshot::Sender<Box<dyn Any + Send>>),
    /// A caller on another node: the reply is encoded and handed to the transport.
    Remote { sink: Box<dyn ReplySink>, encode: fn(&R) -> Result<Bytes, EncodeError> },
}

impl<R: Send + 'static> ReplyTo<R> {
    pub(crate) fn local(sender: oneshot::Sender<R>) -> Self {
        Self { route: Some(Route::Local(sender)) }
    }

    pub(crate) fn erased(sender: oneshot::Sender<Box<dyn Any + Send>>) -> Self {
        Self { route: Some(Route::Erased(sender)) }
    }

    pub(crate) fn remote(
        sink: Box<dyn ReplySink>,
        encode: fn(&R) -> Result<Bytes, EncodeError>,
    ) -> Self {
        Self { route: Some(Route::Remote { sink, encode }) }
    }

    /// Sends the reply. Returns `false` when it could not reach a waiting caller (the caller
    /// gave up, or the reply could not be encoded for another node; that is logged).
    pub fn send(mut self, reply: R) -> bool {
        match self.route.take() {
            Some(Route::Local(sender)) => sender.send(reply).is_ok(),
            Some(Route::Erased(sender)) => sender.send(Box::new(reply)).is_ok(),
            Some(Route::Remote { sink, encode }) => match encode(&reply) {
                Ok(bytes) => {
                    sink.reply(Ok(bytes));
                    true
                }
                Err(error) => {
                    tracing::warn!(%error, "a reply to a remote call could not be encoded");
                    sink.reply(Err(RemoteFailure::BadReply(error.0)));
                    false
                }
            },
            None => false,
        }
    }

    /// Whether a caller may still be waiting. `false` means a reply would be discarded; a
    /// remote caller is always presumed to wait.
    pub fn is_waiting(&self) -> bool {
        match &self.route {
            Some(Route::Local(sender)) => !sender.is_closed(),
            Some(Route::Erased(sender)) => !sender.is_closed(),
            Some(Route::Remote { .. }) => true,
            None => false,
        }
    }
}

impl<R: Send + 'static> Drop for ReplyTo<R> {
    fn drop(&mut self) {
        let Some(route) = self.route.take() else { return };
        if std::thread::panicking() {
            // A handler is unwinding: its process records the panic as its exit reason only
            // once the unwinding is over, and a caller told before then would read no reason
            // and conclude "no reply". The process releases the handle after recording it.
            if let Err(route) = current::hold_back(Box::new(route)) {
                route.release(None);
            }
            return;
        }
        // A local caller notices the dropped sender by itself; a remote one must be told.
        if let Route::Remote { sink, .. } = route {
            sink.reply(Err(RemoteFailure::NoReply));
        }
    }
}

impl<R: Send + 'static> HeldReply for Route<R> {
    fn release(self: Box<Self>, reason: Option<&ExitReason>) {
        // A local caller reads the reason itself once its sender is dropped (here).
        if let Route::Remote { sink, .. } = *self {
            let failure =
                reason.map_or(RemoteFailure::NoReply, |r| RemoteFailure::Exited(r.clone()));
            sink.reply(Err(failure));
        }
    }
}

impl<R: Send + 'static> fmt::Debug for ReplyTo<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let route = match &self.route {
            Some(Route::Local(_) | Route::Erased(_)) => "local",
            Some(Route::Remote { .. }) => "remote",
            None => "answered",
        };
        f.debug_struct("ReplyTo").field("route", &route).finish()
    }
}
