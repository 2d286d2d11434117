//! A linearisability checker for histories of operations on one object.
//!
//! A history is the operations clients ran, each with the time it was invoked and, if it
//! answered, the time and value of its answer. It is *linearisable* when the operations can be
//! put in one order that respects real time (an operation that answered before another was
//! invoked comes first) and in which each answer is what the sequential [`Model`] gives.
//!
//! An operation that never answered, or failed in a way that leaves open whether it took
//! effect (a timeout, a lost quorum, a crashed client), is *indeterminate*: give it
//! `response: None`. It may then take effect at any point after its invocation, or never; the
//! checker tries both. An operation that failed *without* effect should simply be left out.
//!
//! The search is the Wing–Gong algorithm with Lowe's memoisation: depth first over which
//! operation to linearise next, remembering every (set of linearised operations, model state)
//! already explored. It is exponential in the worst case, so keep histories per object small
//! (tens of operations), as a per-key register history in a simulation is.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use shoal_sim::linearizability::{check, Model, Operation};
//!
//! /// A register of one number: `Some(v)` writes v, `None` reads.
//! struct Register;
//! impl Model for Register {
//!     type State = u32;
//!     type Op = Option<u32>;
//!     type Ret = u32;
//!     fn init(&self) -> u32 { 0 }
//!     fn step(&self, state: &u32, op: &Option<u32>, ret: Option<&u32>) -> Option<u32> {
//!         match op {
//!             Some(v) => Some(*v),
//!             None => (ret.is_none_or(|r| r == state)).then_some(*state),
//!         }
//!     }
//! }
//!
//! let t0 = Instant::now();
//! let at = |ms: u64| t0 + Duration::from_millis(ms);
//! let write = Operation { op: Some(1), call: at(0), response: Some((at(10), 1)) };
//! let stale_read = Operation { op: None, call: at(20), response: Some((at(30), 0)) };
//! assert!(check(&Register, &[write.clone()]).is_ok());
//! assert!(check(&Register, &[write, stale_read]).is_err());
//! ```

use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;
use std::time::Instant;

/// The sequential specification of an object.
pub trait Model {
    /// The object's state; compared and hashed to prune the search.
    type State: Clone + Eq + Hash + Debug;
    /// An operation (with its arguments).
    type Op: Debug;
    /// What an operation answers.
    type Ret: Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The state after `op` runs on `state`, if it could have answered `ret` (`None`: the answer
    /// is unknown, so any answer goes); `None` if it could not.
    fn step(
        &self,
        state: &Self::State,
        op: &Self::Op,
        ret: Option<&Self::Ret>,
    ) -> Option<Self::State>;
}

/// One operation of a history.
#[derive(Clone, Debug)]
pub struct Operation<Op, Ret> {
    /// What was asked.
    pub op: Op,
    /// When it was invoked.
    pub call: Instant,
    /// When and what it answered; `None` if it is indeterminate (see the module docs).
    pub response: Option<(Instant, Ret)>,
}

/// A history that no order explains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The most operations any explored order managed to linearise (a hint for debugging:
    /// the first operation after such a prefix is where things went wrong).
    pub longest_prefix: usize,
    /// The operations that order linearised, by index into the history, in order.
    pub best_order: Vec<usize>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "not linearisable: at most {} operations fit one order ({:?})",
            self.longest_prefix, self.best_order
        )
    }
}

impl std::error::Error for Violation {}

/// Checks that `history` is linearisable with respect to `model`.
pub fn check<M: Model>(model: &M, history: &[Operation<M::Op, M::Ret>]) -> Result<(), Violation> {
    let mut search = Search {
        model,
        history,
        done: vec![false; history.len()],
        order: Vec::new(),
        seen: HashSet::new(),
        best: Vec::new(),
    };
    let required = history.iter().filter(|op| op.response.is_some()).count();
    if search.explore(model.init(), required) {
        Ok(())
    } else {
        Err(Violation { longest_prefix: search.best.len(), best_order: search.best })
    }
}

struct Search<'h, M: Model> {
    model: &'h M,
    history: &'h [Operation<M::Op, M::Ret>],
    /// Which operations the current order has linearised.
    done: Vec<bool>,
    order: Vec<usize>,
    /// (linearised set, state) pairs already explored without success.
    seen: HashSet<(Vec<bool>, M::State)>,
    best: Vec<usize>,
}

impl<M: Model> Search<'_, M> {
    /// Whether the operations not yet linearised can follow from `state`, given that
    /// `required` completed operations are still to place.
    fn explore(&mut self, state: M::State, required: usize) -> bool {
        if required == 0 {
            return true;
        }
        if !self.seen.insert((self.done.clone(), state.clone())) {
            return false;
        }
        // An operation can go next only if no pending completed operation answered before it
        // was invoked (that one must come first).
        let horizon = self
            .history
            .iter()
            .zip(&self.done)
            .filter(|(_, done)| !**done)
            .filter_map(|(op, _)| op.response.as_ref().map(|(at, _)| *at))
            .min();
        for index in 0..self.history.len() {
            let op = &self.history[index];
            if self.done[index] || horizon.is_some_and(|h| h < op.call) {
                continue;
            }
            let ret = op.response.as_ref().map(|(_, ret)| ret);
            let Some(next) = self.model.step(&state, &op.op, ret) else { continue };
            self.done[index] = true;
            self.order.push(index);
            if self.order.len() > self.best.len() {
                self.best = self.order.clone();
            }
            let left = required - usize::from(op.response.is_some());
            if self.explore(next, left) {
                return true;
            }
            self.order.pop();
            self.done[index] = false;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A register of one number: `Some(v)` writes v, `None` reads.
    struct Register;

    impl Model for Register {
        type State = u32;
        type Op = Option<u32>;
        type Ret = u32;
        fn init(&self) -> u32 {
            0
        }
        fn step(&self, state: &u32, op: &Option<u32>, ret: Option<&u32>) -> Option<u32> {
            match op {
                Some(v) => Some(*v),
                None => ret.is_none_or(|r| r == state).then_some(*state),
            }
        }
    }

    fn op(op: Option<u32>, call: u64, response: Option<(u64, u32)>) -> Operation<Option<u32>, u32> {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        Operation { op, call: at(call), response: response.map(|(t, r)| (at(t), r)) }
    }

    /// Real time: a read that starts after a write answered must see it (or a later write).
    #[test]
    fn a_read_after_a_write_sees_it() {
        let write = op(Some(1), 0, Some((10, 1)));
        assert!(check(&Register, &[write.clone(), op(None, 20, Some((30, 1)))]).is_ok());
        let violation = check(&Register, &[write, op(None, 20, Some((30, 0)))]).unwrap_err();
        assert_eq!(violation.longest_prefix, 1);
    }

    /// Concurrency: overlapping operations may take effect in either order.
    #[test]
    fn overlapping_operations_may_go_either_way() {
        let write = op(Some(1), 0, Some((50, 1)));
        assert!(check(&Register, &[write.clone(), op(None, 10, Some((20, 0)))]).is_ok());
        assert!(check(&Register, &[write, op(None, 10, Some((20, 1)))]).is_ok());
    }

    /// Indeterminate operations may take effect at any time after their invocation, or never.
    #[test]
    fn indeterminate_operations_may_or_may_not_happen() {
        let lost_write = op(Some(7), 0, None);
        assert!(check(&Register, &[lost_write.clone(), op(None, 100, Some((110, 0)))]).is_ok());
        assert!(check(&Register, &[lost_write.clone(), op(None, 100, Some((110, 7)))]).is_ok());
        // ...but not before it was invoked.
        let late_write = op(Some(7), 200, None);
        assert!(check(&Register, &[late_write, op(None, 100, Some((110, 7)))]).is_err());
        // ...and once seen, it cannot be unseen.
        let seen_then_gone =
            [lost_write, op(None, 100, Some((110, 7))), op(None, 120, Some((130, 0)))];
        assert!(check(&Register, &seen_then_gone).is_err());
    }
}
