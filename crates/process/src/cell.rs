//! The shared half of a process: its mailbox and [`Control`], reachable from every handle,
//! the process table and the process's own task.

use std::any::Any;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::control::Control;
use crate::mailbox::{Admitted, Letter, Mailbox, MailboxConfig, PushError};
use crate::remote::Inbound;
use crate::{ExitReason, Pid, Process, RemoteFailure, ReplyTo, Signal};

/// One letter in a process's mailbox.
///
/// Signals and letters from other nodes are boxed: they are much larger than most messages
/// and far rarer, and every slot of a mailbox, and the letter the process is handling (which
/// its task holds), is as large as the largest variant.
pub(crate) enum Envelope<P: Process> {
    Cast(P::Message),
    Call(P::Call, ReplyTo<P::Reply>),
    /// A cast or call from another node, decoded by the process when it gets to it.
    Remote(Box<Inbound>),
    /// A signal bounded by what the process set up (a monitor's `Down`, a link's `Exit`, a
    /// timer's `Timeout`): admitted even when the mailbox is full.
    Signal(Box<Signal>),
    /// An exit signal sent to this process directly (not through a link) while it traps exits:
    /// anyone may send any number of them, so it counts against the bound as a message does.
    DirectExit(Box<Signal>),
    /// Work to run on the state between two letters ([`crate::Runtime::sys`]). Rare, so boxed
    /// like the others; counts against the bound as a message does.
    Sys(SysWork<P>),
}

/// The work of a [`Envelope::Sys`] letter, which hands its result back itself.
pub(crate) type SysWork<P> = Box<dyn FnOnce(&mut P, &mut crate::Context<P>) + Send>;

impl<P: Process> Envelope<P> {
    pub(crate) fn signal(signal: Signal) -> Self {
        Self::Signal(Box::new(signal))
    }
}

impl<P: Process> Letter for Envelope<P> {
    fn is_message(&self) -> bool {
        !matches!(self, Self::Signal(_))
    }
}

/// Laid out in this order (`repr(C)`, as are `Mailbox` and `Control`) so that what senders
/// write for every message (the mailbox's lock and queue, its first 96 bytes) and what the
/// process reads and writes for every letter (the control block's atomics, its last 16 bytes)
/// are more than 64 bytes apart, never on one cache line: otherwise a sender and its process
/// running on two cores take that line from each other at every message.
#[repr(C)]
pub(crate) struct Cell<P: Process> {
    pub(crate) mailbox: Mailbox<Envelope<P>>,
    /// Holds the pid first.
    pub(crate) control: Control,
}

impl<P: Process> Cell<P> {
    pub(crate) fn new(pid: Pid, mailbox: MailboxConfig) -> Self {
        Self { mailbox: Mailbox::new(mailbox), control: Control::new(pid) }
    }
}

/// Why an erased push failed; the payload is handed back.
pub(crate) enum ErasedPush<T> {
    Full(T),
    Closed(T),
    WrongType(T),
}

impl<T> From<PushError<T>> for ErasedPush<T> {
    fn from(error: PushError<T>) -> Self {
        match error {
            PushError::Full(item) => Self::Full(item),
            PushError::Closed(item) => Self::Closed(item),
        }
    }
}

pub(crate) type AnyBox = Box<dyn Any + Send>;

/// A process seen without its behaviour's types: what the process table holds.
pub(crate) trait ProcessCell: Send + Sync + 'static {
    fn pid(&self) -> Pid;
    fn control(&self) -> &Control;
    fn mailbox_config(&self) -> MailboxConfig;
    /// Letters waiting, including the batch the process is working through.
    fn mailbox_len(&self) -> usize;
    fn try_cast_any(&self, message: AnyBox) -> Result<(), ErasedPush<AnyBox>>;
    fn try_call_any(
        &self,
        request: AnyBox,
        reply: oneshot::Sender<AnyBox>,
    ) -> Result<(), ErasedPush<AnyBox>>;
    fn try_push_inbound(
        &self,
        inbound: Inbound,
        overdraft: usize,
    ) -> Result<Admitted, ErasedPush<Inbound>>;
    fn poll_room(&self, cx: &mut Context<'_>) -> Poll<bool>;
    /// Queues a signal (never refused for lack of room); `false` if the process is gone.
    fn push_signal(&self, signal: Signal) -> bool;
    /// Queues a direct exit signal for a process that traps exits, if there is room; the
    /// reason is handed back when the mailbox is full (a process that is gone ignores it).
    fn push_direct_exit(&self, from: Pid, reason: ExitReason) -> Result<(), ExitReason>;
    /// Wakes the process if it sleeps on its mailbox.
    fn wake(&self);
    /// Drops every queued letter (the process has exited with `reason`); remote callers are
    /// told why.
    fn close(&self, reason: &ExitReason);
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
    /// Whether this entry is the forwarder of a process that was handed off
    /// ([`crate::Runtime::hand_off`]) rather than a process.
    fn is_forwarder(&self) -> bool {
        false
    }
}

impl<P: Process> ProcessCell for Cell<P> {
    fn pid(&self) -> Pid {
        self.control.pid
    }

    fn control(&self) -> &Control {
        &self.control
    }

    fn mailbox_config(&self) -> MailboxConfig {
        self.mailbox.config()
    }

    fn mailbox_len(&self) -> usize {
        self.mailbox.len() + self.control.batch_len()
    }

    fn try_cast_any(&self, message: AnyBox) -> Result<(), ErasedPush<AnyBox>> {
        let message = message.downcast::<P::Message>().map_err(ErasedPush::WrongType)?;
        self.mailbox.try_push(Envelope::Cast(*message)).map_err(|error| {
            ErasedPush::from(error).map(|envelope| match envelope {
                Envelope::Cast(message) => Box::new(message) as AnyBox,
                _ => unreachable!("the mailbox hands back the envelope it was given"),
            })
        })
    }

    fn try_call_any(
        &self,
        request: AnyBox,
        reply: oneshot::Sender<AnyBox>,
    ) -> Result<(), ErasedPush<AnyBox>> {
        let request = request.downcast::<P::Call>().map_err(ErasedPush::WrongType)?;
        self.mailbox.try_push(Envelope::Call(*request, ReplyTo::erased(reply))).map_err(|error| {
            ErasedPush::from(error).map(|envelope| match envelope {
                Envelope::Call(request, _) => Box::new(request) as AnyBox,
                _ => unreachable!("the mailbox hands back the envelope it was given"),
            })
        })
    }

    fn try_push_inbound(
        &self,
        inbound: Inbound,
        overdraft: usize,
    ) -> Result<Admitted, ErasedPush<Inbound>> {
        let envelope = Envelope::Remote(Box::new(inbound));
        self.mailbox.try_push_past_bound(envelope, overdraft).map_err(|error| {
            ErasedPush::from(error).map(|envelope| match envelope {
                Envelope::Remote(inbound) => *inbound,
                _ => unreachable!("the mailbox hands back the envelope it was given"),
            })
        })
    }

    fn poll_room(&self, cx: &mut Context<'_>) -> Poll<bool> {
        self.mailbox.poll_room(cx)
    }

    fn push_signal(&self, signal: Signal) -> bool {
        self.mailbox.try_push(Envelope::signal(signal)).is_ok()
    }

    fn push_direct_exit(&self, from: Pid, reason: ExitReason) -> Result<(), ExitReason> {
        let exit = Envelope::DirectExit(Box::new(Signal::Exit { from, reason }));
        match self.mailbox.try_push(exit) {
            Err(PushError::Full(Envelope::DirectExit(signal))) => match *signal {
                Signal::Exit { reason, .. } => Err(reason),
                _ => unreachable!("the mailbox hands back the exit it was given"),
            },
            Ok(()) | Err(_) => Ok(()),
        }
    }

    fn wake(&self) {
        self.mailbox.wake_receiver();
    }

    fn close(&self, reason: &ExitReason) {
        for letter in self.mailbox.close() {
            if let Envelope::Remote(inbound) = letter {
                (*inbound).refuse(RemoteFailure::Exited(reason.clone()));
            }
        }
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

impl<T> ErasedPush<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> ErasedPush<U> {
        match self {
            Self::Full(item) => ErasedPush::Full(f(item)),
            Self::Closed(item) => ErasedPush::Closed(f(item)),
            Self::WrongType(item) => ErasedPush::WrongType(f(item)),
        }
    }
}

impl<P: Process> crate::timer::AsControl for Cell<P> {
    fn as_control(&self) -> &Control {
        &self.control
    }
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use super::*;

    struct Stateless;

    impl Process for Stateless {
        type Message = ();
        type Call = ();
        type Reply = ();

        async fn handle_cast(&mut self, (): (), _: &mut crate::Context<Self>) {}
    }

    /// A sys letter never makes the envelope, and so every mailbox slot, larger: its boxed
    /// work is no larger than the reply handle that every call letter holds.
    #[test]
    fn a_sys_letter_is_no_larger_than_a_call() {
        assert!(std::mem::size_of::<SysWork<Stateless>>() <= std::mem::size_of::<ReplyTo<()>>());
    }

    /// The layout `Cell` documents: what senders write for every message and what the process
    /// touches for every letter are never on one 64-byte cache line, wherever the cell lands.
    #[test]
    fn senders_and_their_process_write_to_different_cache_lines() {
        type Typed = Cell<Stateless>;
        let senders_end = offset_of!(Typed, mailbox) + Mailbox::<Envelope<Stateless>>::LOCKED_BYTES;
        let process_start = offset_of!(Typed, control) + Control::PER_LETTER_OFFSET;
        assert!(process_start >= senders_end + 64, "{senders_end} .. {process_start}");
    }
}
