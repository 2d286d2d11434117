//! The bounded mailbox behind every process.
//!
//! One FIFO per process holds, in arrival order, casts, calls, messages from other nodes, sys
//! work and trapped signals (`Down`, `Exit`, timeouts), so that a message sent before a process
//! died is always seen before that process's `Down`. Only messages (sys work among them) count
//! toward the capacity: signals are admitted even when the mailbox is full, and their number is
//! bounded by the monitors, links and timers the process itself set up.
//!
//! The process takes *everything* queued in one lock acquisition (a swap of two `VecDeque`s)
//! and then works through that batch without touching the lock, so a fast sender and its
//! receiver rarely contend. The price: up to `capacity` messages wait in the mailbox while up
//! to `capacity` more sit in the batch being handled.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::mem;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// How many messages a mailbox holds and what a full one does to senders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MailboxConfig {
    /// Messages that may wait in the mailbox; at least 1.
    pub capacity: usize,
    /// What a full mailbox does to asynchronous senders.
    pub overflow: Overflow,
}

impl MailboxConfig {
    /// The default: 1,024 messages, senders wait when full.
    pub const DEFAULT: Self = Self { capacity: 1024, overflow: Overflow::Wait };
}

impl Default for MailboxConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What a full mailbox does to an asynchronous sender (`try_` senders always get an error).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Overflow {
    /// The sender waits until there is room: back-pressure.
    #[default]
    Wait,
    /// The send fails at once with a "full" error that hands the message back.
    Reject,
}

/// Something that can sit in a mailbox.
pub(crate) trait Letter {
    /// Whether it counts toward the mailbox's capacity (messages do, signals do not).
    fn is_message(&self) -> bool;
}

/// Where a message from another node was queued: within the mailbox's capacity, or past it
/// (the transport then asks the senders to hold until the process has made room).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admitted {
    /// Within the capacity.
    WithinBound,
    /// Past the capacity, in the overdraft the transport asked for.
    PastBound,
}

/// Why a letter was not queued; the letter is handed back.
pub(crate) enum PushError<T> {
    Full(T),
    Closed(T),
}

/// `repr(C)`: the lock and state first (see `Cell`).
#[repr(C)]
pub(crate) struct Mailbox<T> {
    state: Mutex<State<T>>,
    config: MailboxConfig,
}

struct State<T> {
    queue: VecDeque<T>,
    /// Messages in `queue` (signals excluded).
    messages: usize,
    /// The process, when it found the mailbox empty and went to sleep.
    receiver: Option<Waker>,
    /// Senders waiting for room.
    senders: Vec<Waker>,
    closed: bool,
}

impl<T> Mailbox<T> {
    /// How far from its start senders write: the lock and the state it guards.
    #[cfg(test)]
    pub(crate) const LOCKED_BYTES: usize = mem::size_of::<Mutex<State<T>>>();
}

impl<T: Letter> Mailbox<T> {
    pub(crate) fn new(config: MailboxConfig) -> Self {
        let state = State {
            queue: VecDeque::new(),
            messages: 0,
            receiver: None,
            senders: Vec::new(),
            closed: false,
        };
        Self { state: Mutex::new(state), config }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing panics while holding this lock, but a poisoned lock must not take the
        // process down with it either.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `letter` if there is room (signals always have room).
    pub(crate) fn try_push(&self, letter: T) -> Result<(), PushError<T>> {
        self.try_push_past_bound(letter, 0).map(|_| ())
    }

    /// Queues `letter` if there is room, or, for a mailbox whose senders wait when it is full,
    /// up to `overdraft` messages past its capacity (for a transport that must not wait, and
    /// holds the senders instead). Says which.
    pub(crate) fn try_push_past_bound(
        &self,
        letter: T,
        overdraft: usize,
    ) -> Result<Admitted, PushError<T>> {
        let mut state = self.lock();
        if state.closed {
            return Err(PushError::Closed(letter));
        }
        let mut admitted = Admitted::WithinBound;
        if letter.is_message() {
            if state.messages >= self.config.capacity {
                let past = state.messages - self.config.capacity;
                if self.config.overflow == Overflow::Reject || past >= overdraft {
                    return Err(PushError::Full(letter));
                }
                admitted = Admitted::PastBound;
            }
            state.messages += 1;
        }
        state.queue.push_back(letter);
        let receiver = state.receiver.take();
        drop(state);
        if let Some(receiver) = receiver {
            receiver.wake();
        }
        Ok(admitted)
    }

    /// Queues `letter`, waiting for room when full if the overflow policy says so.
    pub(crate) async fn push(&self, letter: T) -> Result<(), PushError<T>> {
        // The loop below, which may wait, is a future of its own: most pushes find room at
        // once, and then skip building and dropping its state.
        match self.try_push(letter) {
            Err(PushError::Full(letter)) if self.config.overflow == Overflow::Wait => {
                self.push_when_room(letter).await
            }
            done => done,
        }
    }

    /// Waits for room and queues `letter`, whatever the overflow policy (for senders that are
    /// tasks of their own, such as timers, and for senders that have checked the policy).
    pub(crate) async fn push_when_room(&self, mut letter: T) -> Result<(), PushError<T>> {
        loop {
            if !poll_fn(|cx| self.poll_room(cx)).await {
                return Err(PushError::Closed(letter));
            }
            match self.try_push(letter) {
                // Another sender took the room first.
                Err(PushError::Full(back)) => letter = back,
                done => return done,
            }
        }
    }

    /// Ready(true) when a message would fit now, Ready(false) when the mailbox is closed;
    /// otherwise registers the caller to be woken when the process takes its next batch.
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut state = self.lock();
        if state.closed {
            return Poll::Ready(false);
        }
        if state.messages < self.config.capacity {
            return Poll::Ready(true);
        }
        if !state.senders.iter().any(|waiting| waiting.will_wake(cx.waker())) {
            state.senders.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Moves every queued letter into `batch`, which must be empty; pending when there are
    /// none (the process is woken by the next push or by [`Mailbox::wake_receiver`]).
    pub(crate) fn poll_take(&self, batch: &mut VecDeque<T>, cx: &mut Context<'_>) -> Poll<()> {
        debug_assert!(batch.is_empty());
        let mut state = self.lock();
        if state.queue.is_empty() {
            match &state.receiver {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => state.receiver = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        mem::swap(&mut state.queue, batch);
        state.messages = 0;
        let senders = mem::take(&mut state.senders);
        drop(state);
        senders.into_iter().for_each(Waker::wake);
        Poll::Ready(())
    }

    /// Puts letters taken with [`Mailbox::poll_take`] but not handled back at the front, in
    /// order (the process is exiting; [`Mailbox::close`] then hands them over with the rest).
    pub(crate) fn put_back(&self, mut letters: VecDeque<T>) {
        if letters.is_empty() {
            return;
        }
        let mut state = self.lock();
        state.messages += letters.iter().filter(|letter| letter.is_message()).count();
        letters.append(&mut state.queue);
        state.queue = letters;
    }

    /// Wakes the process if it sleeps on an empty mailbox (used to deliver an exit).
    pub(crate) fn wake_receiver(&self) {
        let receiver = self.lock().receiver.take();
        if let Some(receiver) = receiver {
            receiver.wake();
        }
    }

    /// Refuses every later letter and returns those still queued, to be dropped by the caller
    /// outside the lock (dropping a call's reply handle tells its caller).
    pub(crate) fn close(&self) -> VecDeque<T> {
        let mut state = self.lock();
        state.closed = true;
        state.messages = 0;
        let left = mem::take(&mut state.queue);
        let senders = mem::take(&mut state.senders);
        drop(state);
        senders.into_iter().for_each(Waker::wake);
        left
    }

    /// Refuses every later letter, as [`Mailbox::close`] does, but leaves those queued to be
    /// taken: the retention window of a hand-off's forwarder is over, and what it accepted is
    /// still to be sent on. Senders waiting for room are woken (to be refused), and so is the
    /// receiver (to see the mailbox sealed once it has taken the rest).
    pub(crate) fn seal(&self) {
        let mut state = self.lock();
        state.closed = true;
        let senders = mem::take(&mut state.senders);
        let receiver = state.receiver.take();
        drop(state);
        senders.into_iter().for_each(Waker::wake);
        if let Some(receiver) = receiver {
            receiver.wake();
        }
    }

    /// Takes the first queued letter, making room for one more message (a hand-off's
    /// forwarder takes its letters one at a time, so that no more than the mailbox's bound of
    /// messages wait for it, in the mailbox or in its hands). `None` once the mailbox is sealed
    /// (or closed) and nothing is left in it; pending while it is open and empty.
    pub(crate) fn poll_take_one(&self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = self.lock();
        let Some(letter) = state.queue.pop_front() else {
            if state.closed {
                return Poll::Ready(None);
            }
            match &state.receiver {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => state.receiver = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        };
        if !letter.is_message() {
            return Poll::Ready(Some(letter));
        }
        state.messages = state.messages.saturating_sub(1);
        // Every waiting sender is woken, not one: one that no longer waits would take the
        // wake-up of another with it. (Forwarders are rare; so are their waiting senders.)
        let senders = mem::take(&mut state.senders);
        drop(state);
        senders.into_iter().for_each(Waker::wake);
        Poll::Ready(Some(letter))
    }

    /// Letters waiting (not counting a batch the process has already taken).
    pub(crate) fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub(crate) fn config(&self) -> MailboxConfig {
        self.config
    }
}
