//! Built-in fault injection: drop, delay or cut the traffic between this node and chosen
//! peers, per direction, and heal.
//!
//! Faults apply where frames are written (outbound) and read (inbound), after the handshake;
//! a cut in either direction also refuses new connections with that peer, so a cut pair
//! stays apart until healed. When no fault is set, the cost is one relaxed atomic load per
//! batch of frames.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use shoal_process::NodeId;

use crate::peer::lock;

/// Which traffic a fault affects, seen from this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Frames this node sends to the peer.
    Outbound,
    /// Frames this node receives from the peer.
    Inbound,
    /// Both.
    Both,
}

/// What happens to the affected frames.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// All of them are discarded, and no new connection is made.
    Cut,
    /// Each is discarded with this probability (0.0 to 1.0).
    Drop(f64),
    /// Each waits this long first (order is kept).
    Delay(Duration),
}

/// One way of the traffic with a peer (a [`Direction`] names one or both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Flow {
    /// Frames this node writes to the peer.
    Outbound,
    /// Frames this node reads from the peer.
    Inbound,
}

/// What to do with one batch of frames.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Verdict {
    Pass,
    Discard,
    DropEach(f64),
    Delay(Duration),
}

/// The faults in force on a node.
pub(crate) struct Faults {
    active: AtomicBool,
    rules: RwLock<HashMap<(NodeId, Flow), Fault>>,
    rng: Mutex<SmallRng>,
}

impl Faults {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            active: AtomicBool::new(false),
            rules: RwLock::default(),
            rng: Mutex::new(SmallRng::seed_from_u64(seed)),
        }
    }

    pub(crate) fn set(&self, peer: NodeId, direction: Direction, fault: Fault) {
        let mut rules = self.rules.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        for flow in flows(direction) {
            rules.insert((peer, *flow), fault);
        }
        self.active.store(true, Ordering::Release);
    }

    pub(crate) fn heal(&self, peer: Option<NodeId>) {
        let mut rules = self.rules.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        match peer {
            Some(peer) => rules.retain(|(node, _), _| *node != peer),
            None => rules.clear(),
        }
        self.active.store(!rules.is_empty(), Ordering::Release);
    }

    /// The verdict for frames of `flow` with `peer`.
    pub(crate) fn verdict(&self, peer: NodeId, flow: Flow) -> Verdict {
        if !self.active.load(Ordering::Relaxed) {
            return Verdict::Pass;
        }
        let rules = self.rules.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        match rules.get(&(peer, flow)) {
            None => Verdict::Pass,
            Some(Fault::Cut) => Verdict::Discard,
            Some(Fault::Drop(probability)) => Verdict::DropEach(*probability),
            Some(Fault::Delay(delay)) => Verdict::Delay(*delay),
        }
    }

    /// Whether traffic with `peer` is cut in either direction.
    pub(crate) fn is_cut(&self, peer: NodeId) -> bool {
        flows(Direction::Both).iter().any(|flow| self.verdict(peer, *flow) == Verdict::Discard)
    }

    /// Draws whether one frame is dropped with `probability`.
    pub(crate) fn draw(&self, probability: f64) -> bool {
        lock(&self.rng).random::<f64>() < probability
    }

    /// A jittered duration in `[base / 2, base]`, from the seeded generator.
    pub(crate) fn jitter(&self, base: Duration) -> Duration {
        let factor = 0.5 + lock(&self.rng).random::<f64>() / 2.0;
        base.mul_f64(factor)
    }
}

fn flows(direction: Direction) -> &'static [Flow] {
    match direction {
        Direction::Outbound => &[Flow::Outbound],
        Direction::Inbound => &[Flow::Inbound],
        Direction::Both => &[Flow::Outbound, Flow::Inbound],
    }
}
