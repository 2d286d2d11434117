//! The directory of a node in [`Membership::Managed`](crate::Membership::Managed) mode: where
//! each member it has heard of listens, so that a send to a node it is not connected to can
//! open a connection on demand.
//!
//! It learns from every handshake (the peer's [`NodeSpec`]) and from the address gossip of the
//! nodes it is connected to, and never connects by itself. It is bounded
//! ([`DIRECTORY_ENTRIES`]): past the bound, the entry learnt or refreshed longest ago goes. A
//! node that left (its tombstone) is dropped from it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use shoal_process::NodeId;

use crate::peer::{NodeIdHash, lock};
use crate::spec::NodeSpec;

/// The most nodes a directory holds.
pub(crate) const DIRECTORY_ENTRIES: usize = 4096;

/// Name → (listen addresses, incarnation), as a [`NodeSpec`] each, by node id.
#[derive(Default)]
pub(crate) struct Directory {
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    /// Each known node's spec and when it was learnt (a number that grows with each update).
    by_id: HashMap<NodeId, (NodeSpec, u64), NodeIdHash>,
    /// The same nodes by when they were learnt, oldest first, for the bound.
    by_age: BTreeMap<u64, NodeId>,
    /// The next update's number.
    next: u64,
    /// Where the last gossip window ended (see [`Directory::window`]).
    cursor: u64,
}

impl Directory {
    /// Records `spec` unless a later incarnation of its node is known; an entry learnt again
    /// counts as new for the bound. Returns whether anything changed.
    pub(crate) fn learn(&self, spec: &NodeSpec) -> bool {
        let mut entries = lock(&self.inner);
        let id = spec.id();
        if let Some((known, age)) = entries.by_id.get(&id) {
            if known.name != spec.name || known.incarnation > spec.incarnation {
                return false;
            }
            if known == spec {
                return false;
            }
            let age = *age;
            entries.by_age.remove(&age);
        }
        let age = entries.next;
        entries.next += 1;
        entries.by_id.insert(id, (spec.clone(), age));
        entries.by_age.insert(age, id);
        while entries.by_id.len() > DIRECTORY_ENTRIES {
            let Some((_, oldest)) = entries.by_age.pop_first() else { break };
            entries.by_id.remove(&oldest);
        }
        true
    }

    /// The spec of the node of id `id`, if known.
    pub(crate) fn get(&self, id: NodeId) -> Option<NodeSpec> {
        lock(&self.inner).by_id.get(&id).map(|(spec, _)| spec.clone())
    }

    /// The spec of the node called `name`, if known.
    pub(crate) fn by_name(&self, name: &str) -> Option<NodeSpec> {
        self.get(NodeId::from_name(name)).filter(|spec| spec.name == name)
    }

    /// Forgets `name` up to incarnation `incarnation` (it left).
    pub(crate) fn forget(&self, name: &str, incarnation: u64) {
        let mut entries = lock(&self.inner);
        let id = NodeId::from_name(name);
        let covered = entries
            .by_id
            .get(&id)
            .is_some_and(|(spec, _)| spec.name == name && spec.incarnation <= incarnation);
        if covered && let Some((_, age)) = entries.by_id.remove(&id) {
            entries.by_age.remove(&age);
        }
    }

    /// How many nodes it holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.inner).by_id.len()
    }

    /// Up to `max` entries for one round of gossip, after those of the last round (so that
    /// rounds go around the whole directory), oldest first.
    pub(crate) fn window(&self, max: usize) -> Vec<NodeSpec> {
        let mut entries = lock(&self.inner);
        let Entries { by_id, by_age, cursor, .. } = &mut *entries;
        let mut taken: Vec<(u64, NodeSpec)> = by_age
            .range(*cursor..)
            .chain(by_age.range(..*cursor))
            .take(max)
            .filter_map(|(age, id)| Some((*age, by_id.get(id)?.0.clone())))
            .collect();
        if let Some((age, _)) = taken.last() {
            *cursor = age + 1;
        }
        taken.drain(..).map(|(_, spec)| spec).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn spec(name: &str, incarnation: u64) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            incarnation,
            listen_addrs: vec![([127, 0, 0, 1], 4000).into()],
            channels: BTreeMap::new(),
        }
    }

    #[test]
    fn a_later_incarnation_replaces_an_earlier_one_and_never_the_reverse() {
        let directory = Directory::default();
        assert!(directory.learn(&spec("b", 2)));
        assert!(!directory.learn(&spec("b", 1)), "an older incarnation is stale");
        assert!(!directory.learn(&spec("b", 2)), "nothing new");
        assert!(directory.learn(&spec("b", 3)));
        assert_eq!(directory.by_name("b").map(|s| s.incarnation), Some(3));
    }

    #[test]
    fn the_directory_is_bounded_and_drops_the_entry_learnt_longest_ago() {
        let directory = Directory::default();
        for i in 0..DIRECTORY_ENTRIES + 10 {
            directory.learn(&spec(&format!("n{i}"), 1));
        }
        assert_eq!(directory.len(), DIRECTORY_ENTRIES);
        assert!(directory.by_name("n0").is_none());
        assert!(directory.by_name("n9").is_none());
        assert!(directory.by_name("n10").is_some());
    }

    #[test]
    fn a_tombstone_forgets_its_incarnation_and_earlier_ones_only() {
        let directory = Directory::default();
        directory.learn(&spec("b", 5));
        directory.forget("b", 4);
        assert!(directory.by_name("b").is_some());
        directory.forget("b", 5);
        assert!(directory.by_name("b").is_none());
    }

    #[test]
    fn gossip_windows_go_around_the_whole_directory() {
        let directory = Directory::default();
        for name in ["a", "b", "c", "d", "e"] {
            directory.learn(&spec(name, 1));
        }
        let names = |specs: Vec<NodeSpec>| specs.into_iter().map(|s| s.name).collect::<Vec<_>>();
        assert_eq!(names(directory.window(2)), ["a", "b"]);
        assert_eq!(names(directory.window(2)), ["c", "d"]);
        assert_eq!(names(directory.window(2)), ["e", "a"]);
    }
}
