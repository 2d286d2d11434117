//! What a key holds and how it changes: the register and the changes as data.
//!
//! A change is an enum, not a closure, because it may travel: a proposer under contention
//! forwards it to the key's designated proposer. [`Change::apply`] is the one place that says
//! what each change does; the proposer calls it between the prepare and the accept phase.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The name of a register: any bytes.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:?})", String::from_utf8_lossy(&self.0))
    }
}

impl From<&str> for Key {
    fn from(key: &str) -> Self {
        Key(key.as_bytes().to_vec())
    }
}

impl From<Vec<u8>> for Key {
    fn from(key: Vec<u8>) -> Self {
        Key(key)
    }
}

/// Who an entry is bound to (a pid, a node...), as opaque bytes the layer above chose.
///
/// The core only compares owners for equality: [`Change::ClearIfOwner`] removes an entry when
/// its owner is the one named. Nothing clears an entry on its own.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Owner(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl fmt::Debug for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Owner({:?})", String::from_utf8_lossy(&self.0))
    }
}

/// A present value: bytes, and optionally who the entry is bound to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// The value.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// The owner the entry is bound to, if any.
    pub owner: Option<Owner>,
}

impl Entry {
    /// An entry bound to nobody.
    pub fn new(data: impl Into<Vec<u8>>) -> Self {
        Entry { data: data.into(), owner: None }
    }

    /// An entry bound to `owner`.
    pub fn owned(data: impl Into<Vec<u8>>, owner: Owner) -> Self {
        Entry { data: data.into(), owner: Some(owner) }
    }
}

/// The state of one key: an entry or nothing, and a version.
///
/// The version grows by one with every change that took effect (reads and failed conditions do
/// not count), so it serves as a fencing token: a later holder of a lock always has a larger one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Register {
    /// Changes that took effect on this key so far.
    pub version: u64,
    /// The value, or `None` for an absent key.
    pub entry: Option<Entry>,
}

/// A change to one register, as data. Each one is applied to the value a proposer found to be
/// current, and the result is written back through consensus, so each is atomic.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Change {
    /// Leave the value as it is; a linearisable read (it still takes a full round).
    Read,
    /// Replace the value.
    Set(Entry),
    /// Replace the value with `new` if it is `expected` now (`None`: absent); otherwise leave it.
    CompareAndSet {
        /// The value the register must hold for the change to take effect.
        expected: Option<Entry>,
        /// What to put there; `None` deletes.
        new: Option<Entry>,
    },
    /// Remove the value.
    Delete,
    /// Remove the value if it is bound to this owner; otherwise leave it. This is how an entry is
    /// cleared when its owner dies: an ordinary write, never acceptors forgetting.
    ClearIfOwner(Owner),
    /// Add to a counter held as 8 big-endian bytes (absent counts as 0), keeping the owner;
    /// left unchanged if the value is not 8 bytes long. Wraps on overflow.
    Add(i64),
}

impl Change {
    /// The register after this change, and whether the change took effect (its condition held).
    pub fn apply(&self, current: &Register) -> (Register, bool) {
        let next_entry = match self {
            Change::Read => None,
            Change::Set(entry) => Some(Some(entry.clone())),
            Change::CompareAndSet { expected, new } => {
                (current.entry == *expected).then(|| new.clone())
            }
            Change::Delete => Some(None),
            Change::ClearIfOwner(owner) => {
                let owned = current.entry.as_ref().is_some_and(|e| e.owner.as_ref() == Some(owner));
                owned.then_some(None)
            }
            Change::Add(delta) => add(current.entry.as_ref(), *delta).map(Some),
        };
        match next_entry {
            Some(entry) => (Register { version: current.version.wrapping_add(1), entry }, true),
            None => (current.clone(), false),
        }
    }

    /// Whether this change never alters the value (a read).
    pub fn is_read(&self) -> bool {
        matches!(self, Change::Read)
    }
}

/// The counter after `Add(delta)`, or `None` if the value is not a counter.
fn add(entry: Option<&Entry>, delta: i64) -> Option<Entry> {
    let Some(entry) = entry else {
        return Some(Entry::new(delta.to_be_bytes()));
    };
    let bytes: [u8; 8] = entry.data.as_slice().try_into().ok()?;
    let sum = i64::from_be_bytes(bytes).wrapping_add(delta);
    Some(Entry { data: sum.to_be_bytes().to_vec(), owner: entry.owner.clone() })
}

/// What a completed change did: the register before and after, and whether it took effect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The value the change was applied to (the current one when the round ran).
    pub before: Register,
    /// The value now chosen for the key.
    pub after: Register,
    /// Whether the change's condition held (always true for `Set`, `Delete`, `Read`).
    pub applied: bool,
    /// The number of the epoch the value was chosen in (see the crate docs, "Losing state").
    /// `(epoch, after.version)` is a fencing token that grows across epochs too, where the
    /// version alone starts again from 0.
    pub epoch: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(version: u64, data: Option<&str>) -> Register {
        Register { version, entry: data.map(Entry::new) }
    }

    /// Rule: a change whose condition fails leaves the register, version included, untouched.
    #[test]
    fn failed_conditions_change_nothing() {
        let current = reg(3, Some("a"));
        let cas = Change::CompareAndSet { expected: Some(Entry::new("b")), new: None };
        assert_eq!(cas.apply(&current), (current.clone(), false));
        let clear = Change::ClearIfOwner(Owner(b"p1".to_vec()));
        assert_eq!(clear.apply(&current), (current.clone(), false));
        assert_eq!(Change::Read.apply(&current), (current, false));
    }

    /// Rule: a change that takes effect bumps the version by one (the fencing token grows).
    #[test]
    fn effective_changes_bump_the_version() {
        let current = reg(3, Some("a"));
        let cas =
            Change::CompareAndSet { expected: Some(Entry::new("a")), new: Some(Entry::new("b")) };
        assert_eq!(cas.apply(&current), (reg(4, Some("b")), true));
        assert_eq!(Change::Delete.apply(&current), (reg(4, None), true));
    }

    /// Rule: `ClearIfOwner` removes only an entry bound to that owner.
    #[test]
    fn clear_if_owner_matches_the_owner() {
        let owner = Owner(b"p1".to_vec());
        let current = Register { version: 1, entry: Some(Entry::owned("x", owner.clone())) };
        assert_eq!(Change::ClearIfOwner(owner).apply(&current), (reg(2, None), true));
    }

    /// Rule: `Add` treats absent as zero, keeps the owner, and refuses non-counters.
    #[test]
    fn add_counts_from_zero() {
        let (one, applied) = Change::Add(1).apply(&reg(0, None));
        assert!(applied);
        let (two, _) = Change::Add(1).apply(&one);
        assert_eq!(two.entry.unwrap().data, 2i64.to_be_bytes().to_vec());
        assert!(!Change::Add(1).apply(&reg(0, Some("text"))).1);
    }
}
