//! Locks: the record a lock's register holds, and what acquiring and releasing write to it.
//!
//! A lock's register keeps its [`LockState`] for good, held or free, so that its fencing token
//! only ever grows: every acquisition by a new holder writes the last token plus one, and an
//! effect guarded by the token (a write that carries it, refused by its target when an
//! earlier token than one already seen arrives) is exact under any timing. A holder acquiring
//! again re-enters: the count grows and the token stays.
//!
//! **Waiters, first come first served.** A blocking acquisition of a held lock joins the
//! record's queue (a compare-and-set like any other write, so the queue's order is the order
//! in which the cluster agreed on the joins). The release that frees the lock hands it to the
//! head of the queue in the same write, with the next token: no waiter polls, no node can
//! overtake a waiter by acquiring between a release and the waiter's retry, and every waiter
//! is served after exactly those ahead of it. A waiter that gives up leaves the queue
//! ([`LockState::cancel`]); one that exited, or whose host lost its lease, is taken out by
//! [`LockState::clear`], which also hands the lock on if it held it. The queue is bounded by
//! [`MAX_WAITERS`]. Telling a new holder that it was handed the lock is the driver's business.
//!
//! ```
//! use shoal_registry::core::{Acquire, LockState, Release};
//!
//! let Acquire::Write(held) = LockState::acquire(None, &"a", true) else { panic!() };
//! assert_eq!(held.token, 1);
//! assert!(matches!(LockState::acquire(Some(&held), &"b", false), Acquire::HeldBy { token: 1, .. }));
//! let Acquire::Queued { record: waiting, position: 0 } = LockState::acquire(Some(&held), &"b", true)
//! else { panic!() };
//! let Ok(Release::Write(handed)) = LockState::release(Some(&waiting), &"a") else { panic!() };
//! assert_eq!(handed.held.as_ref().map(|h| h.holder), Some("b"));
//! assert_eq!(handed.token, 2);
//! ```

use serde::{Deserialize, Serialize};

/// The most waiters one lock queues; a blocking acquisition past it is told the lock is held
/// (and may try again).
pub const MAX_WAITERS: usize = 1024;

/// A lock's record: the last fencing token given out, the holder if any, and the waiters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockState<H> {
    /// The token of the latest acquisition (0 before the first).
    pub token: u64,
    /// Who holds the lock now; `None` when it is free (and then nobody waits).
    pub held: Option<Held<H>>,
    /// Who waits for it, first served first.
    pub queue: Vec<H>,
}

/// A lock's holder, and how many times it acquired the lock without releasing it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held<H> {
    /// The holder (a process, identified as the driver chooses).
    pub holder: H,
    /// Acquisitions not yet released (at least 1).
    pub count: u32,
}

/// What an acquisition decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acquire<H> {
    /// Write this record (by compare-and-set on the version read); once written, the caller
    /// holds the lock with its `token`.
    Write(LockState<H>),
    /// Write this record: the caller waits in the queue, `position` others ahead of it.
    Queued {
        /// The record to write.
        record: LockState<H>,
        /// Waiters ahead of the caller.
        position: usize,
    },
    /// The caller waits already, `position` others ahead of it: nothing to write.
    Waiting {
        /// Waiters ahead of the caller.
        position: usize,
    },
    /// Another holder has it, with this token (a non-blocking acquisition, or a full queue).
    HeldBy {
        /// The holder.
        holder: H,
        /// Its token.
        token: u64,
    },
}

/// What a release decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Release<H> {
    /// Write this record: the lock is free, handed to the first waiter, or held with one
    /// acquisition fewer.
    Write(LockState<H>),
}

/// Why a release was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LockError<H: std::fmt::Debug> {
    /// The lock is free: there is nothing to release.
    #[error("the lock is not held")]
    NotHeld,
    /// Another holder has the lock.
    #[error("the lock is held by {holder:?}, not by the releaser")]
    NotHolder {
        /// The holder.
        holder: H,
    },
}

impl<H: Clone + PartialEq + std::fmt::Debug> LockState<H> {
    /// `who` asks for the lock whose register holds `current` (`None`: never written); if it
    /// is held by another and `block` is set, `who` joins the queue.
    pub fn acquire(current: Option<&Self>, who: &H, block: bool) -> Acquire<H> {
        let token = current.map_or(0, |state| state.token);
        let queue = current.map_or(&[][..], |state| &state.queue[..]);
        match current.and_then(|state| state.held.as_ref()) {
            None => Acquire::Write(LockState {
                token: token + 1,
                held: Some(Held { holder: who.clone(), count: 1 }),
                queue: Vec::new(),
            }),
            Some(held) if held.holder == *who => Acquire::Write(LockState {
                token,
                held: Some(Held { holder: who.clone(), count: held.count.saturating_add(1) }),
                queue: queue.to_vec(),
            }),
            Some(_) if block && queue.contains(who) => {
                Acquire::Waiting { position: queue.iter().position(|w| w == who).unwrap_or(0) }
            }
            Some(held) if block && queue.len() < MAX_WAITERS => {
                let mut queued = queue.to_vec();
                queued.push(who.clone());
                let record = LockState { token, held: Some(held.clone()), queue: queued };
                Acquire::Queued { record, position: queue.len() }
            }
            Some(held) => Acquire::HeldBy { holder: held.holder.clone(), token },
        }
    }

    /// `who` releases one acquisition of the lock whose register holds `current`; the last
    /// one hands the lock to the first waiter, if any.
    pub fn release(current: Option<&Self>, who: &H) -> Result<Release<H>, LockError<H>> {
        let Some(state) = current else { return Err(LockError::NotHeld) };
        let Some(held) = &state.held else { return Err(LockError::NotHeld) };
        if held.holder != *who {
            return Err(LockError::NotHolder { holder: held.holder.clone() });
        }
        if held.count > 1 {
            let held = Some(Held { holder: who.clone(), count: held.count - 1 });
            return Ok(Release::Write(LockState { held, ..state.clone() }));
        }
        Ok(Release::Write(Self::hand_on(state.token, &state.queue)))
    }

    /// `who` gave up waiting: the record to write without it, or `None` if it was not
    /// waiting.
    pub fn cancel(current: Option<&Self>, who: &H) -> Option<Self> {
        let state = current?;
        let at = state.queue.iter().position(|w| w == who)?;
        let mut queue = state.queue.clone();
        queue.remove(at);
        Some(LockState { queue, ..state.clone() })
    }

    /// `gone` exited, or its host's lease ended: the lock is taken from it whatever its count
    /// (and handed to the first waiter), and it leaves the queue. `None` if it neither holds
    /// nor waits (nothing to do).
    pub fn clear(current: Option<&Self>, gone: &H) -> Option<Self> {
        let state = current?;
        let queue: Vec<H> = state.queue.iter().filter(|w| *w != gone).cloned().collect();
        match &state.held {
            Some(held) if held.holder == *gone => Some(Self::hand_on(state.token, &queue)),
            _ if queue.len() != state.queue.len() => Some(LockState { queue, ..state.clone() }),
            _ => None,
        }
    }

    /// The record after the holder's last release: held by the first waiter with the next
    /// token, or free.
    fn hand_on(token: u64, queue: &[H]) -> Self {
        match queue.split_first() {
            Some((next, rest)) => LockState {
                token: token + 1,
                held: Some(Held { holder: next.clone(), count: 1 }),
                queue: rest.to_vec(),
            },
            None => LockState { token, held: None, queue: Vec::new() },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Step {
        Acquire(u8, bool),
        Release(u8),
        Cancel(u8),
        Clear(u8),
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        let holder = 0u8..5;
        let step = prop_oneof![
            (holder.clone(), any::<bool>()).prop_map(|(who, block)| Step::Acquire(who, block)),
            holder.clone().prop_map(Step::Release),
            holder.clone().prop_map(Step::Cancel),
            holder.prop_map(Step::Clear),
        ];
        proptest::collection::vec(step, 0..80)
    }

    /// The model: the holder and its count, the waiters in order, the highest token.
    #[derive(Debug, Default)]
    struct Model {
        held: Option<(u8, u32)>,
        queue: VecDeque<u8>,
        token: u64,
    }

    impl Model {
        /// The holder's last release, or its removal: the first waiter gets the lock.
        fn hand_on(&mut self) {
            self.held = self.queue.pop_front().map(|next| (next, 1));
            if self.held.is_some() {
                self.token += 1;
            }
        }

        fn matches(&self, record: &LockState<u8>) -> bool {
            record.token == self.token
                && record.held.as_ref().map(|h| (h.holder, h.count)) == self.held
                && record.queue.iter().copied().eq(self.queue.iter().copied())
        }
    }

    proptest! {
        /// Applied one after another to one register (as compare-and-set makes them), any
        /// steps keep the rules and match the model: one holder at most, tokens that grow
        /// with every new holder and stay on re-entry, waiters served first come first
        /// served by the release that frees the lock, only the holder releasing, and a free
        /// lock with nobody waiting.
        #[test]
        fn waiters_are_served_in_order_and_tokens_grow(steps in steps()) {
            let mut record: Option<LockState<u8>> = None;
            let mut model = Model::default();
            for step in steps {
                match step {
                    Step::Acquire(who, block) => match LockState::acquire(record.as_ref(), &who, block) {
                        Acquire::Write(next) => {
                            match model.held {
                                Some((holder, count)) => {
                                    prop_assert_eq!(holder, who);
                                    model.held = Some((who, count + 1));
                                }
                                None => {
                                    model.token += 1;
                                    model.held = Some((who, 1));
                                }
                            }
                            record = Some(next);
                        }
                        Acquire::Queued { record: next, position } => {
                            prop_assert!(block);
                            prop_assert!(model.held.is_some_and(|(h, _)| h != who));
                            prop_assert!(!model.queue.contains(&who));
                            prop_assert_eq!(position, model.queue.len());
                            model.queue.push_back(who);
                            record = Some(next);
                        }
                        Acquire::Waiting { position } => {
                            prop_assert!(block);
                            prop_assert_eq!(model.queue.iter().position(|w| *w == who), Some(position));
                        }
                        Acquire::HeldBy { holder, token } => {
                            prop_assert!(!block);
                            prop_assert_eq!(model.held.map(|(h, _)| h), Some(holder));
                            prop_assert_ne!(holder, who);
                            prop_assert_eq!(token, model.token);
                        }
                    },
                    Step::Release(who) => match LockState::release(record.as_ref(), &who) {
                        Ok(Release::Write(next)) => {
                            let Some((holder, count)) = model.held else {
                                return Err(TestCaseError::fail("released a free lock"));
                            };
                            prop_assert_eq!(holder, who);
                            if count > 1 {
                                model.held = Some((who, count - 1));
                            } else {
                                model.hand_on();
                            }
                            record = Some(next);
                        }
                        Err(LockError::NotHeld) => prop_assert_eq!(model.held, None),
                        Err(LockError::NotHolder { holder }) => {
                            prop_assert_eq!(model.held.map(|(h, _)| h), Some(holder));
                            prop_assert_ne!(holder, who);
                        }
                    },
                    Step::Cancel(who) => match LockState::cancel(record.as_ref(), &who) {
                        Some(next) => {
                            let at = model.queue.iter().position(|w| *w == who);
                            prop_assert!(at.is_some());
                            model.queue.retain(|w| *w != who);
                            record = Some(next);
                        }
                        None => prop_assert!(!model.queue.contains(&who)),
                    },
                    Step::Clear(who) => match LockState::clear(record.as_ref(), &who) {
                        Some(next) => {
                            let holds = model.held.is_some_and(|(h, _)| h == who);
                            prop_assert!(holds || model.queue.contains(&who));
                            model.queue.retain(|w| *w != who);
                            if holds {
                                model.hand_on();
                            }
                            record = Some(next);
                        }
                        None => {
                            prop_assert!(model.held.is_none_or(|(h, _)| h != who));
                            prop_assert!(!model.queue.contains(&who));
                        }
                    },
                }
                if let Some(state) = &record {
                    prop_assert!(model.matches(state), "record {state:?}, model {model:?}");
                    prop_assert!(state.held.is_some() || state.queue.is_empty(), "a free lock has no waiters");
                }
            }
        }
    }

    #[test]
    fn a_release_by_anyone_but_the_holder_is_refused() {
        let Acquire::Write(held) = LockState::acquire(None, &1u8, true) else { panic!("free") };
        assert_eq!(LockState::release(Some(&held), &2), Err(LockError::NotHolder { holder: 1 }));
        assert_eq!(LockState::<u8>::release(None, &1), Err(LockError::NotHeld));
        let Ok(Release::Write(free)) = LockState::release(Some(&held), &1) else { panic!() };
        assert_eq!(LockState::release(Some(&free), &1), Err(LockError::NotHeld));
        assert_eq!(free.token, 1, "a free lock keeps its last token");
    }

    #[test]
    fn the_queue_is_bounded() {
        let Acquire::Write(mut record) = LockState::acquire(None, &0u32, true) else { panic!() };
        for who in 1..=MAX_WAITERS as u32 {
            let Acquire::Queued { record: next, .. } =
                LockState::acquire(Some(&record), &who, true)
            else {
                panic!("room for {who}")
            };
            record = next;
        }
        let past = LockState::acquire(Some(&record), &(MAX_WAITERS as u32 + 1), true);
        assert_eq!(past, Acquire::HeldBy { holder: 0, token: 1 });
    }
}
