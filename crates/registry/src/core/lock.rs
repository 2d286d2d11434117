//! Locks: the record a lock's register holds, and what acquiring and releasing write to it.
//!
//! A lock's register keeps its [`LockState`] for good, held or free, so that its fencing token
//! only ever grows: every acquisition by a new holder writes the last token plus one, and an
//! effect guarded by the token (a write that carries it, refused by its target when an
//! earlier token than one already seen arrives) is exact under any timing. A holder acquiring
//! again re-enters: the count grows and the token stays. Waiting, and who is woken in which
//! order, is the driver's business; the record holds only who holds the lock now.
//!
//! ```
//! use shoal_registry::core::{Acquire, LockState, Release};
//!
//! let free: Option<LockState<&str>> = None;
//! let Acquire::Write(held) = LockState::acquire(free.as_ref(), &"a") else { panic!() };
//! assert_eq!(held.token, 1);
//! assert!(matches!(LockState::acquire(Some(&held), &"b"), Acquire::HeldBy { token: 1, .. }));
//! let Ok(Release::Write(free)) = LockState::release(Some(&held), &"a") else { panic!() };
//! let Acquire::Write(again) = LockState::acquire(Some(&free), &"b") else { panic!() };
//! assert_eq!(again.token, 2);
//! ```

use serde::{Deserialize, Serialize};

/// A lock's record: the last fencing token given out, and the holder, if any.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockState<H> {
    /// The token of the latest acquisition (0 before the first).
    pub token: u64,
    /// Who holds the lock now; `None` when it is free.
    pub held: Option<Held<H>>,
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
    /// Another holder has it, with this token.
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
    /// Write this record: the lock is free, or held with one acquisition fewer.
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
    /// `who` asks for the lock whose register holds `current` (`None`: never written).
    pub fn acquire(current: Option<&Self>, who: &H) -> Acquire<H> {
        let token = current.map_or(0, |state| state.token);
        match current.and_then(|state| state.held.as_ref()) {
            None => Acquire::Write(LockState {
                token: token + 1,
                held: Some(Held { holder: who.clone(), count: 1 }),
            }),
            Some(held) if held.holder == *who => Acquire::Write(LockState {
                token,
                held: Some(Held { holder: who.clone(), count: held.count.saturating_add(1) }),
            }),
            Some(held) => Acquire::HeldBy { holder: held.holder.clone(), token },
        }
    }

    /// `who` releases one acquisition of the lock whose register holds `current`.
    pub fn release(current: Option<&Self>, who: &H) -> Result<Release<H>, LockError<H>> {
        let Some(state) = current else { return Err(LockError::NotHeld) };
        let Some(held) = &state.held else { return Err(LockError::NotHeld) };
        if held.holder != *who {
            return Err(LockError::NotHolder { holder: held.holder.clone() });
        }
        let held = (held.count > 1).then(|| Held { holder: who.clone(), count: held.count - 1 });
        Ok(Release::Write(LockState { token: state.token, held }))
    }

    /// The lock is taken from `holder` whatever its count (it exited, or its host's lease
    /// ended): the record to write, or `None` if `holder` does not hold it (nothing to do).
    pub fn clear(current: Option<&Self>, holder: &H) -> Option<Self> {
        let state = current?;
        let held = state.held.as_ref()?;
        (held.holder == *holder).then(|| LockState { token: state.token, held: None })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Step {
        Acquire(u8),
        Release(u8),
        Clear(u8),
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        let holder = 0u8..4;
        let step = prop_oneof![
            holder.clone().prop_map(Step::Acquire),
            holder.clone().prop_map(Step::Release),
            holder.prop_map(Step::Clear),
        ];
        proptest::collection::vec(step, 0..60)
    }

    proptest! {
        /// Applied one after another to one register (as compare-and-set makes them), any
        /// steps keep the rules: one holder at most, with a count of at least one; a new
        /// holder gets a token above every token given before, a re-entry the same one; a
        /// holder is free of the lock after as many releases as acquisitions; only the holder
        /// releases.
        #[test]
        fn tokens_grow_and_the_lock_has_one_holder(steps in steps()) {
            let mut record: Option<LockState<u8>> = None;
            let mut highest = 0u64;
            // The model: who holds it and how many times.
            let mut model: Option<(u8, u32)> = None;
            for step in steps {
                match step {
                    Step::Acquire(who) => match LockState::acquire(record.as_ref(), &who) {
                        Acquire::Write(next) => {
                            let held = next.held.clone().expect("written held");
                            prop_assert_eq!(held.holder, who);
                            match model {
                                Some((holder, count)) if holder == who => {
                                    prop_assert_eq!(next.token, highest, "re-entry keeps the token");
                                    model = Some((who, count + 1));
                                }
                                None => {
                                    prop_assert!(next.token > highest, "a new holder's token grows");
                                    highest = next.token;
                                    model = Some((who, 1));
                                }
                                Some(other) => prop_assert!(false, "taken from {other:?}"),
                            }
                            prop_assert_eq!(Some(held.count), model.map(|(_, count)| count));
                            record = Some(next);
                        }
                        Acquire::HeldBy { holder, token } => {
                            prop_assert_eq!(model.map(|(h, _)| h), Some(holder));
                            prop_assert_ne!(holder, who);
                            prop_assert_eq!(token, highest);
                        }
                    },
                    Step::Release(who) => match LockState::release(record.as_ref(), &who) {
                        Ok(Release::Write(next)) => {
                            let Some((holder, count)) = model else {
                                return Err(TestCaseError::fail("released a free lock"));
                            };
                            prop_assert_eq!(holder, who);
                            model = (count > 1).then_some((who, count - 1));
                            prop_assert_eq!(next.held.as_ref().map(|h| (h.holder, h.count)), model);
                            prop_assert_eq!(next.token, highest);
                            record = Some(next);
                        }
                        Err(LockError::NotHeld) => prop_assert_eq!(model, None),
                        Err(LockError::NotHolder { holder }) => {
                            prop_assert_eq!(model.map(|(h, _)| h), Some(holder));
                            prop_assert_ne!(holder, who);
                        }
                    },
                    Step::Clear(who) => match LockState::clear(record.as_ref(), &who) {
                        Some(next) => {
                            prop_assert_eq!(model.map(|(h, _)| h), Some(who));
                            prop_assert_eq!(&next.held, &None);
                            prop_assert_eq!(next.token, highest);
                            model = None;
                            record = Some(next);
                        }
                        None => prop_assert_ne!(model.map(|(h, _)| h), Some(who)),
                    },
                }
            }
        }
    }

    #[test]
    fn a_release_by_anyone_but_the_holder_is_refused() {
        let Acquire::Write(held) = LockState::acquire(None, &1u8) else { panic!("free") };
        assert_eq!(LockState::release(Some(&held), &2), Err(LockError::NotHolder { holder: 1 }));
        assert_eq!(LockState::<u8>::release(None, &1), Err(LockError::NotHeld));
        let Ok(Release::Write(free)) = LockState::release(Some(&held), &1) else { panic!() };
        assert_eq!(LockState::release(Some(&free), &1), Err(LockError::NotHeld));
        assert_eq!(free.token, 1, "a free lock keeps its last token");
    }
}
