//! Who the members are: the table of known peers and of tombstones (nodes that left), and the
//! rules that decide who is admitted and what a peer's gossip changes.
//!
//! The rules are pure functions over plain data ([`admission`], [`gossip_changes`],
//! [`tombstone_covers`]): they decide, the node acts (connects, takes a peer down, tells its
//! processes). So they are tested without sockets, one case per rule.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use shoal_process::NodeId;

use crate::config::Membership;
use crate::directory::Directory;
use crate::peer::{NodeIdHash, Peer, lock};
use crate::spec::NodeSpec;

/// The known peers, by id, and the tombstones of nodes that left, by name.
#[derive(Default)]
pub(crate) struct Members {
    peers: RwLock<HashMap<NodeId, Arc<Peer>, NodeIdHash>>,
    /// The last incarnation of each node that left.
    left: Mutex<HashMap<String, u64>>,
    /// Where members listen, connected or not (used in managed mode only).
    directory: Directory,
}

impl Members {
    pub(crate) fn get(&self, id: NodeId) -> Option<Arc<Peer>> {
        self.peers.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&id).cloned()
    }

    pub(crate) fn by_name(&self, name: &str) -> Option<Arc<Peer>> {
        self.get(NodeId::from_name(name)).filter(|peer| peer.name() == name)
    }

    /// Where members listen, connected or not ([`Membership::Managed`] mode).
    pub(crate) fn directory(&self) -> &Directory {
        &self.directory
    }

    pub(crate) fn list(&self) -> Vec<Arc<Peer>> {
        let peers = self.peers.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        peers.values().cloned().collect()
    }

    /// Adds `peer` unless a peer of its id was added meanwhile; returns the one that is in.
    pub(crate) fn insert(&self, peer: Arc<Peer>) -> (Arc<Peer>, bool) {
        let mut peers = self.peers.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        match peers.get(&peer.id) {
            Some(known) => (known.clone(), false),
            None => {
                peers.insert(peer.id, peer.clone());
                (peer, true)
            }
        }
    }

    /// Removes `peer`, and only that one: a later peer of the same id stays.
    pub(crate) fn remove(&self, peer: &Arc<Peer>) {
        let mut peers = self.peers.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if peers.get(&peer.id).is_some_and(|known| Arc::ptr_eq(known, peer)) {
            peers.remove(&peer.id);
        }
    }

    /// The incarnation of `name` that left last, if any did.
    pub(crate) fn left_incarnation(&self, name: &str) -> Option<u64> {
        lock(&self.left).get(name).copied()
    }

    /// Records that `name`'s incarnation `incarnation` left (a later one than recorded wins).
    pub(crate) fn record_left(&self, name: &str, incarnation: u64) {
        let mut left = lock(&self.left);
        let entry = left.entry(name.to_owned()).or_insert(incarnation);
        *entry = (*entry).max(incarnation);
        drop(left);
        self.directory.forget(name, incarnation);
    }

    /// Every tombstone, for gossip.
    pub(crate) fn tombstones(&self) -> Vec<(String, u64)> {
        lock(&self.left).iter().map(|(name, incarnation)| (name.clone(), *incarnation)).collect()
    }
}

/// What to do with a node that authenticated, or that gossip named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Not a member; why (logged, and told to the node when it is connecting).
    Refuse(String),
    /// Already a member, this very incarnation.
    Known,
    /// A member restarted: the new incarnation replaces the old one.
    Restarted,
    /// A new member.
    New,
}

/// Decides whether `candidate` may be a member of the cluster of `this`, given the member of
/// the same id known here, the tombstone of its name, and whether fault injection cuts it off.
pub(crate) fn admission(
    this: &NodeSpec,
    candidate: &NodeSpec,
    known: Option<&NodeSpec>,
    left: Option<u64>,
    cut: bool,
) -> Admission {
    if candidate.name == this.name || candidate.id() == this.id() {
        return Admission::Refuse(format!("name clash: {:?} is this node's name", candidate.name));
    }
    if cut {
        return Admission::Refuse("traffic with this node is cut by fault injection".into());
    }
    if left.is_some_and(|left| tombstone_covers(left, candidate.incarnation)) {
        return Admission::Refuse(format!(
            "incarnation {} of {} left the cluster",
            candidate.incarnation, candidate.name
        ));
    }
    let Some(known) = known else { return Admission::New };
    if known.name != candidate.name {
        return Admission::Refuse(format!(
            "name clash: {:?} and {:?} hash to the same node id",
            candidate.name, known.name
        ));
    }
    match candidate.incarnation.cmp(&known.incarnation) {
        std::cmp::Ordering::Less => Admission::Refuse(format!(
            "stale incarnation {} of {} (incarnation {} is running)",
            candidate.incarnation, candidate.name, known.incarnation
        )),
        std::cmp::Ordering::Equal => Admission::Known,
        std::cmp::Ordering::Greater => Admission::Restarted,
    }
}

/// Whether a tombstone for incarnation `left` covers `incarnation`: it, and every earlier one,
/// left for good; a later incarnation is a new start.
pub(crate) fn tombstone_covers(left: u64, incarnation: u64) -> bool {
    incarnation <= left
}

/// One change a peer's gossip asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum GossipChange {
    /// This incarnation of this node left: record it, and forget the node if it runs no later
    /// incarnation.
    Tombstone {
        /// The node.
        name: String,
        /// The incarnation that left.
        incarnation: u64,
    },
    /// A member this node does not know, or knows in an earlier incarnation: admit it (which
    /// [`admission`] may still refuse).
    Admit(NodeSpec),
}

/// What gossip from a peer changes on node `this`, in `mode`, given the incarnation known here
/// of each node by name (`known`). Tombstones come first, so that a member gossiped in the same
/// breath as its departure is not admitted again. A tombstone counts only for a node known here
/// in that incarnation or a later one: gossip cannot ban a name in advance (a forged tombstone at
/// incarnation `u64::MAX` would keep it out of the cluster for good). Only a full mesh learns
/// members by gossip; every mode honours tombstones.
pub(crate) fn gossip_changes(
    this: &str,
    mode: &Membership,
    members: Vec<NodeSpec>,
    left: Vec<(String, u64)>,
    known: impl Fn(&str) -> Option<u64>,
) -> Vec<GossipChange> {
    let mut changes: Vec<GossipChange> = left
        .into_iter()
        .filter(|(name, incarnation)| {
            name != this && known(name).is_some_and(|known| *incarnation <= known)
        })
        .map(|(name, incarnation)| GossipChange::Tombstone { name, incarnation })
        .collect();
    if *mode == Membership::FullMesh {
        let newer =
            |spec: &NodeSpec| known(&spec.name).is_none_or(|known| known < spec.incarnation);
        changes.extend(
            members
                .into_iter()
                .filter(|spec| spec.name != this && newer(spec))
                .map(GossipChange::Admit),
        );
    }
    changes
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn spec(name: &str, incarnation: u64) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            incarnation,
            listen_addrs: Vec::new(),
            channels: BTreeMap::new(),
        }
    }

    fn refused(admission: &Admission) -> bool {
        matches!(admission, Admission::Refuse(_))
    }

    #[test]
    fn a_node_is_never_its_own_member() {
        let this = spec("a", 5);
        assert!(refused(&admission(&this, &spec("a", 9), None, None, false)));
    }

    #[test]
    fn a_cut_node_is_refused() {
        let this = spec("a", 1);
        assert!(refused(&admission(&this, &spec("b", 1), None, None, true)));
    }

    #[test]
    fn a_tombstone_refuses_its_incarnation_and_earlier_ones_but_not_later_ones() {
        let this = spec("a", 1);
        assert!(refused(&admission(&this, &spec("b", 7), None, Some(7), false)));
        assert!(refused(&admission(&this, &spec("b", 3), None, Some(7), false)));
        assert_eq!(admission(&this, &spec("b", 8), None, Some(7), false), Admission::New);
    }

    #[test]
    fn incarnations_order_restarts() {
        let this = spec("a", 1);
        let known = spec("b", 5);
        let with =
            |incarnation| admission(&this, &spec("b", incarnation), Some(&known), None, false);
        assert!(refused(&with(4)), "an older incarnation is stale");
        assert_eq!(with(5), Admission::Known);
        assert_eq!(with(6), Admission::Restarted);
    }

    #[test]
    fn two_names_with_one_id_clash() {
        let this = spec("a", 1);
        let known = spec("other", 1);
        assert!(refused(&admission(&this, &spec("b", 1), Some(&known), None, false)));
    }

    #[test]
    fn gossip_tombstones_come_first_and_never_name_this_node() {
        let members = vec![spec("b", 2), spec("c", 1)];
        let left = vec![("b".to_owned(), 2), ("a".to_owned(), 9)];
        let known = |name: &str| (name == "b").then_some(2);
        let changes = gossip_changes("a", &Membership::FullMesh, members, left, known);
        assert_eq!(changes[0], GossipChange::Tombstone { name: "b".into(), incarnation: 2 });
        assert!(!changes.iter().any(|change| matches!(
            change,
            GossipChange::Tombstone { name, .. } if name == "a"
        )));
    }

    #[test]
    fn a_gossiped_tombstone_counts_only_up_to_the_incarnation_known_here() {
        let known = |name: &str| (name == "b").then_some(5);
        let tombstones = |left: Vec<(&str, u64)>| {
            let left = left.into_iter().map(|(name, incarnation)| (name.to_owned(), incarnation));
            gossip_changes("a", &Membership::FullMesh, vec![], left.collect(), known)
        };
        assert_eq!(tombstones(vec![("b", 5)]).len(), 1, "the running incarnation left");
        assert_eq!(tombstones(vec![("b", 4)]).len(), 1, "an earlier one left");
        assert!(tombstones(vec![("b", u64::MAX)]).is_empty(), "a later one cannot be banned");
        assert!(tombstones(vec![("c", 1)]).is_empty(), "nor a node not known here");
    }

    #[test]
    fn gossip_admits_only_unknown_or_restarted_members_and_only_in_a_full_mesh() {
        let members = vec![spec("a", 1), spec("b", 2), spec("c", 3), spec("d", 1)];
        let known = |name: &str| match name {
            "b" => Some(2),
            "c" => Some(2),
            _ => None,
        };
        let changes = gossip_changes("a", &Membership::FullMesh, members.clone(), vec![], known);
        assert_eq!(
            changes,
            vec![GossipChange::Admit(spec("c", 3)), GossipChange::Admit(spec("d", 1))]
        );
        for mode in [Membership::Static(Vec::new()), Membership::Managed] {
            assert!(gossip_changes("a", &mode, members.clone(), vec![], known).is_empty());
        }
    }
}
