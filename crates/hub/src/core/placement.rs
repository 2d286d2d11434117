//! How a child is placed: decided once, when it is first started, by the hub's [`Strategy`],
//! and recorded with the child as a [`Placement`] that every node then applies the same way.
//!
//! A placement is data, not code, so that every node computes the same owner for a child
//! without asking anyone: [`Placement::Ring`] follows the hash ring over the hub's nodes;
//! [`Placement::Nodes`] names the nodes to run on, best first (the guided strategy, a child
//! moved to a chosen node, or a load-aware strategy's pick), and falls back to the ring when
//! none of them is in the hub, so that a child is never left without an owner.
//!
//! ```
//! use std::collections::BTreeMap;
//! use shoal_hub::core::{Consistent, Guided, Load, Placement, Ring, Strategy};
//!
//! let ring = Ring::new(["a", "b", "c"]);
//! let load = Load { children: &BTreeMap::new(), ring: &ring };
//! let pinned = Guided.place("room/1", Some(&["c".to_owned()]), &load).unwrap();
//! assert_eq!(pinned.owner(&ring, "room/1"), Some("c"));
//! assert_eq!(Consistent.place("room/1", None, &load).unwrap(), Placement::Ring);
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Ring;

/// Where a child runs, as every node computes it. Ordered (`Ring` first, then node lists),
/// so that every node picks the same of two copies placed differently.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Placement {
    /// On the child's owner on the hash ring over the hub's nodes.
    #[default]
    Ring,
    /// On the first of these nodes that is in the hub; on the ring's owner when none is.
    Nodes(Vec<String>),
}

impl Placement {
    /// The node that owns `child` on `ring` (the hub's nodes), or `None` when the ring is
    /// empty.
    pub fn owner<'r>(&'r self, ring: &'r Ring, child: &str) -> Option<&'r str> {
        match self {
            Placement::Ring => ring.owner(child),
            Placement::Nodes(nodes) => nodes
                .iter()
                .find(|node| ring.contains(node))
                .map(String::as_str)
                .or_else(|| ring.owner(child)),
        }
    }

    /// The `count` nodes that hold `child` when it has that many copies, first
    /// [`Placement::owner`]: the listed nodes in the hub, in their order, then the ring's
    /// ([`Ring::owners`]) for the rest.
    pub fn owners<'r>(&'r self, ring: &'r Ring, child: &str, count: usize) -> Vec<&'r str> {
        let Placement::Nodes(nodes) = self else { return ring.owners(child, count) };
        let mut owners: Vec<&str> = Vec::with_capacity(count);
        let listed = nodes.iter().map(String::as_str).filter(|node| ring.contains(node));
        for node in listed.chain(ring.owners(child, count.saturating_add(nodes.len()))) {
            if owners.len() == count {
                break;
            }
            if !owners.contains(&node) {
                owners.push(node);
            }
        }
        owners
    }
}

/// What a [`Strategy`] may look at when it places a child: the hub's nodes (on the ring) and
/// how many children each runs now, as this node sees it.
#[derive(Clone, Copy, Debug)]
pub struct Load<'a> {
    /// The hub's nodes.
    pub ring: &'a Ring,
    /// Running children per node (nodes with none may be missing).
    pub children: &'a BTreeMap<String, usize>,
}

/// Why a strategy refused to place a child.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// The guided strategy places only children given a node list.
    #[error("child {0:?} has no node list, and the guided strategy needs one")]
    NoGuide(String),
    /// A node list given for a child is empty.
    #[error("child {0:?} was given an empty node list")]
    EmptyGuide(String),
}

/// Decides, when a child is first started, how it is placed from then on. The decision is
/// recorded with the child, so a strategy may use what only this node knows (its view of the
/// load, say): the other nodes apply the recorded [`Placement`], not the strategy.
pub trait Strategy: Send + Sync + 'static {
    /// The placement of `child`, given the node list the caller asked for (`guide`, if any).
    ///
    /// # Errors
    ///
    /// When the strategy cannot place the child (a guided strategy given no list, say).
    fn place(
        &self,
        child: &str,
        guide: Option<&[String]>,
        load: &Load<'_>,
    ) -> Result<Placement, PlacementError>;

    /// Whether [`Strategy::place`] reads [`Load::children`] (counting costs a pass over the
    /// hub's children, so it is skipped for strategies that do not).
    fn needs_load(&self) -> bool {
        false
    }
}

/// The default: consistent hashing on the ring; a child given a node list is guided by it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Consistent;

impl Strategy for Consistent {
    fn place(
        &self,
        child: &str,
        guide: Option<&[String]>,
        _: &Load<'_>,
    ) -> Result<Placement, PlacementError> {
        match guide {
            None => Ok(Placement::Ring),
            Some([]) => Err(PlacementError::EmptyGuide(child.to_owned())),
            Some(nodes) => Ok(Placement::Nodes(nodes.to_vec())),
        }
    }
}

/// Guided placement: every child comes with its node list, and runs on the first of them
/// that is in the hub (ProcessHub's guided strategy).
#[derive(Clone, Copy, Debug, Default)]
pub struct Guided;

impl Strategy for Guided {
    fn place(
        &self,
        child: &str,
        guide: Option<&[String]>,
        load: &Load<'_>,
    ) -> Result<Placement, PlacementError> {
        match guide {
            None => Err(PlacementError::NoGuide(child.to_owned())),
            Some(_) => Consistent.place(child, guide, load),
        }
    }
}

/// Load-aware placement: a child goes to the node that runs the fewest children as this
/// node sees it when the child starts (ties to the lowest name), and stays there; it follows
/// the ring only when that node leaves. A child given a node list is guided by it.
#[derive(Clone, Copy, Debug, Default)]
pub struct LeastLoaded;

impl Strategy for LeastLoaded {
    fn needs_load(&self) -> bool {
        true
    }

    fn place(
        &self,
        child: &str,
        guide: Option<&[String]>,
        load: &Load<'_>,
    ) -> Result<Placement, PlacementError> {
        if guide.is_some() {
            return Consistent.place(child, guide, load);
        }
        let lightest = load
            .ring
            .nodes()
            .iter()
            .min_by_key(|node| (load.children.get(*node).copied().unwrap_or(0), *node));
        Ok(lightest.map_or(Placement::Ring, |node| Placement::Nodes(vec![node.clone()])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn a_guided_child_runs_on_its_first_node_in_the_hub_and_falls_back_to_the_ring() {
        let ring = Ring::new(["a", "b", "c"]);
        let placement = Placement::Nodes(nodes(&["x", "c", "b"]));
        assert_eq!(placement.owner(&ring, "k"), Some("c"));
        let ring = Ring::new(["a", "b"]);
        assert_eq!(placement.owner(&ring, "k"), Some("b"));
        let ring = Ring::new(["a"]);
        assert_eq!(placement.owner(&ring, "k"), Some("a"), "no listed node: the ring's owner");
        assert_eq!(placement.owner(&Ring::new([]), "k"), None);
    }

    #[test]
    fn the_strategies_place_as_documented() {
        let ring = Ring::new(["a", "b", "c"]);
        let counts: BTreeMap<String, usize> = [("a".to_owned(), 5), ("c".to_owned(), 2)].into();
        let load = Load { ring: &ring, children: &counts };
        let guide = nodes(&["b"]);
        assert_eq!(Consistent.place("k", None, &load), Ok(Placement::Ring));
        assert_eq!(Consistent.place("k", Some(&guide), &load), Ok(Placement::Nodes(guide.clone())));
        assert_eq!(Guided.place("k", None, &load), Err(PlacementError::NoGuide("k".to_owned())));
        assert_eq!(
            Guided.place("k", Some(&[]), &load),
            Err(PlacementError::EmptyGuide("k".into()))
        );
        // b runs none (it is missing from the counts), so it is the lightest.
        assert_eq!(LeastLoaded.place("k", None, &load), Ok(Placement::Nodes(nodes(&["b"]))));
        let counts: BTreeMap<String, usize> =
            [("a".to_owned(), 1), ("b".to_owned(), 1), ("c".to_owned(), 1)].into();
        let load = Load { ring: &ring, children: &counts };
        assert_eq!(LeastLoaded.place("k", None, &load), Ok(Placement::Nodes(nodes(&["a"]))));
    }
}
