//! The queue of frames waiting for one connection's writer.
//!
//! Senders push without waiting (the *peer* bounds how many casts and calls are queued, see
//! `peer.rs`); the connection's writer takes everything queued at once and writes it in one
//! go, which is how writes are coalesced. On a monotonic channel a frame replaces the one
//! still queued from the same sender to the same receiver (the lane's `latest` key): the older
//! frame is dropped in place, so order among the rest is kept.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};

use tokio::sync::Notify;

use crate::wire::Frame;

/// A frame waiting to be written.
pub(crate) struct Queued {
    pub(crate) frame: Frame,
    /// Counted against the peer's bound on queued casts and calls.
    pub(crate) counted: bool,
}

pub(crate) struct OutQueue {
    state: Mutex<State>,
    ready: Notify,
    monotonic: bool,
    /// How far the connection has got, for stall detection (`crate::progress`).
    pub(crate) progress: Progress,
}

/// Bytes written on a connection after its handshake (counted as a write starts, so a write
/// that never ends counts), and how many of them the peer says it has read.
#[derive(Default)]
pub(crate) struct Progress {
    pub(crate) written: AtomicU64,
    pub(crate) read_by_peer: AtomicU64,
}

/// Frames in push order; a superseded frame's slot holds `None`.
pub(crate) type Slots = VecDeque<Option<Queued>>;

#[derive(Default)]
struct State {
    slots: Slots,
    /// How many of the queued frames are counted (so the writer need not count them).
    counted: usize,
    /// Sequence number of `slots[0]`.
    first_seq: u64,
    /// Monotonic channels: the sequence number of the queued frame for each lane's `latest`.
    latest: HashMap<u64, u64>,
    closed: bool,
}

/// What a push did.
pub(crate) enum Pushed {
    /// Queued.
    Queued,
    /// Queued, replacing an older frame for the same receiver; that one was counted or not.
    Superseded { counted: bool },
    /// The connection is gone; the frame is handed back.
    Closed(Queued),
}

impl OutQueue {
    pub(crate) fn new(monotonic: bool) -> Self {
        Self {
            state: Mutex::default(),
            ready: Notify::new(),
            monotonic,
            progress: Progress::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn push(&self, key: u64, queued: Queued) -> Pushed {
        let mut state = self.state();
        if state.closed {
            return Pushed::Closed(queued);
        }
        let seq = state.first_seq + state.slots.len() as u64;
        let mut pushed = Pushed::Queued;
        if self.monotonic
            && let Some(old) = state.latest.insert(key, seq)
            && let index = (old - state.first_seq) as usize
            && let Some(slot) = state.slots.get_mut(index)
            && let Some(superseded) = slot.take()
        {
            pushed = Pushed::Superseded { counted: superseded.counted };
            state.counted -= usize::from(superseded.counted);
        }
        state.counted += usize::from(queued.counted);
        state.slots.push_back(Some(queued));
        drop(state);
        self.ready.notify_one();
        pushed
    }

    /// Waits until a frame is queued (`true`) or the queue is closed and empty (`false`).
    pub(crate) async fn ready(&self) -> bool {
        loop {
            {
                let state = self.state();
                if !state.slots.is_empty() {
                    return true;
                }
                if state.closed {
                    return false;
                }
            }
            self.ready.notified().await;
        }
    }

    /// Waits for frames and takes all of them: `batch`, which must be empty, is swapped with
    /// the queue's slots (no frame is moved; a superseded slot is `None`). Returns how many of
    /// them are counted, or `None` once the queue is closed and empty.
    pub(crate) async fn take_all(&self, batch: &mut Slots) -> Option<usize> {
        debug_assert!(batch.is_empty(), "the writer hands back an empty batch");
        loop {
            {
                let mut state = self.state();
                if !state.slots.is_empty() {
                    let taken = state.slots.len() as u64;
                    std::mem::swap(&mut state.slots, batch);
                    state.first_seq += taken;
                    state.latest.clear();
                    return Some(std::mem::take(&mut state.counted));
                }
                if state.closed {
                    return None;
                }
            }
            self.ready.notified().await;
        }
    }

    /// Refuses further pushes and wakes the writer; frames still queued are handed back.
    pub(crate) fn close(&self) -> Vec<Queued> {
        let mut state = self.state();
        state.closed = true;
        state.latest.clear();
        state.counted = 0;
        let left = state.slots.drain(..).flatten().collect();
        drop(state);
        self.ready.notify_one();
        left
    }
}
