//! [`HubStats`]: what a hub counted on this node and holds here now, read with
//! [`Hub::stats`](crate::Hub::stats).
//!
//! Counters are plain atomics, counted per move and per hand-over (never per message, never
//! through a metrics library); a sampler such as the facade's `shoal::metrics` reads them on
//! a tick.

use std::sync::atomic::{AtomicU64, Ordering};

/// A hub's figures on this node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubStats {
    /// This node's children now: those it runs, starts or moves away (not those ended).
    pub children: u64,
    /// Children this node moved away since the hub started here (cold moves, hot moves and
    /// the hand-overs of a stop), one per child.
    pub moves: u64,
    /// Hot moves whose state this node handed over to the child's new copy.
    pub handovers_done: u64,
    /// Hot moves whose state could not be handed over (the child runs on its new node as after
    /// a cold move, its state lost).
    pub handovers_failed: u64,
}

/// The hub's counters (the child count is read from its state).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) moves: AtomicU64,
    pub(crate) handovers_done: AtomicU64,
    pub(crate) handovers_failed: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters, with the child count left at 0 for the caller to fill.
    pub(crate) fn snapshot(&self) -> HubStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        HubStats {
            children: 0,
            moves: load(&self.moves),
            handovers_done: load(&self.handovers_done),
            handovers_failed: load(&self.handovers_failed),
        }
    }
}
