//! The hub's view of its children and what this node must do about them, sans-IO.
//!
//! **Entries.** Each node is the authority for the children it runs: it publishes one
//! [`Entry`] per child (its spec as opaque data `S`, its [`Placement`], a version and a
//! [`State`]), replicated to the hub's other nodes by node-authority replication. A [`Table`]
//! is fed every entry of every live node as it changes ([`Table::changed`]), and the hub's
//! membership ([`Table::node_up`], [`Table::node_down`]); [`Table::reconcile`] returns the
//! [`Action`]s this node must take so that, once the nodes' views agree, every child runs
//! exactly once, on its owner:
//!
//! - **Failover.** The table keeps the newest entry it has seen of every child, also after
//!   the node that ran it is lost. A child that no live node runs is an *orphan*; once it has
//!   been one for [`TableConfig::down_after`] (at once when its node left on purpose), its
//!   owner starts it ([`Action::Start`]); a node that knows an orphan and does not own it hands
//!   it to the owner after a further [`TableConfig::adopt_after`] ([`Action::Adopt`]), for an
//!   owner that never knew it (a node that restarted empty). A child last seen moving to a
//!   node whose own entry has not arrived yet (a slower link, a node not heard from) is
//!   presumed to run there: it is an orphan once that node is lost, or after ten times
//!   `down_after`, not before (a copy started meanwhile would be a second one, and a conflict
//!   would drop the state one of them carries).
//! - **Redistribution.** A child running on a node that no longer owns it (a node joined) is
//!   moved to its owner ([`Action::Move`]; cold: stopped, then started there), at most
//!   [`TableConfig::moves_per_sec`] a second, or never with [`OnJoin::Stay`]; and only once
//!   the ring has not changed for [`TableConfig::settle`] (a newcomer that has not yet heard
//!   from every node would move children on a partial ring).
//! - **Conflicts.** Two copies of a child at the same version (started on both sides of a
//!   partition) are resolved the same way on every node that sees both: the owner's copy wins,
//!   or, if neither is on the owner, the copy on the lowest-named node; the other node stops its
//!   copy ([`StopReason::Conflict`]). Its spec is not lost: if both stopped (their views of
//!   the ring differed), the child is an orphan and is started again.
//! - **Tombstones.** Terminating a child leaves an entry in [`State::Ended`] with a higher
//!   version, kept for [`TableConfig::tombstone_ttl`]: a copy with an older version (one
//!   started on the other side of a partition) is stopped when its node sees it, and a table
//!   that still knew the child as running does not bring it back. A partition longer than the
//!   tombstone's life can bring a terminated child back; that is the documented bound. When
//!   the node holding a tombstone is lost, every node that knows it keeps it
//!   ([`Action::Keep`]).
//!
//! An action is not issued again for the same child until the driver reports it done
//! ([`Table::done`]) or [`TableConfig::retry_after`] passes.
//!
//! What it does not do: start or stop anything (the driver does, and publishes its entries),
//! or decide who is in the hub (the driver says, from the replication's peers).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Placement, Ring};

/// Where a node's copy of a child stands.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum State {
    /// Running (or starting) on the entry's node.
    Running,
    /// Exited and being restarted on the entry's node.
    Restarting,
    /// Stopped on the entry's node and being started on `to` (a cold move).
    Moving {
        /// The new owner.
        to: String,
    },
    /// Terminated, or ended for good: a tombstone.
    Ended,
    /// Stopped on the entry's node because it lost its quorum ([`Partition`]); started
    /// again when the quorum is back, unless another node runs it by then.
    Suspended,
    /// Running on the entry's node beside other copies ([`TableConfig::replicas`]), started
    /// (or restarted) without the child's state, which it waits for from the active copy:
    /// it is not made active while a copy with the state runs.
    Syncing,
}

impl State {
    /// Whether the child runs (or is about to run again) on the entry's node.
    pub fn is_live(&self) -> bool {
        matches!(self, State::Running | State::Restarting | State::Syncing)
    }

    /// Whether the child runs on the entry's node, process started (with its state, or
    /// waiting for it).
    pub fn is_up(&self) -> bool {
        matches!(self, State::Running | State::Syncing)
    }
}

/// One node's entry for a child, as it replicates it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry<S> {
    /// Grows each time the child is terminated (and started again after that).
    pub version: u64,
    /// Where it stands.
    pub state: State,
    /// How it is placed.
    pub placement: Placement,
    /// The driver's data: the spec, metadata, the pid.
    pub data: S,
}

/// On a join, whether running children move to the newcomer when it becomes their owner.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnJoin {
    /// They move (cold: stopped, then started on the new owner).
    #[default]
    Move,
    /// They stay where they run; only new starts and failovers follow the new ring.
    Stay,
}

/// What a hub does when it is cut off from part of its nodes (chosen per hub, the same on
/// every node).
///
/// Under a quorum strategy a node that loses its quorum stops its children
/// ([`Action::Stop`] with [`StopReason::QuorumLost`]; their entries stay, as
/// [`State::Suspended`]) and starts none; once it has its quorum again and its ring has not
/// changed for [`TableConfig::settle`] (so the entries of the nodes it sees again have
/// arrived), a suspended child that no other node runs by then starts again on its owner, and
/// one that runs elsewhere (the majority took it over) is forgotten here. So after a partition heals each child runs once,
/// with no conflict to resolve.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Partition {
    /// Each side keeps running what it owns and takes over the rest (after
    /// [`TableConfig::down_after`]); after the heal, conflicting copies are resolved (see the
    /// module docs).
    #[default]
    Divergence,
    /// A node has its quorum while it sees at least `min_nodes` nodes of the hub (itself
    /// included).
    Static {
        /// The smallest number of nodes that keeps running.
        min_nodes: usize,
    },
    /// A node has its quorum while it sees more than half of `cluster_size` nodes (itself
    /// included).
    Majority {
        /// The hub's nodes when all are up.
        cluster_size: usize,
    },
    /// A node has its quorum while the nodes it sees are at least `share` of those it saw
    /// within `window`: those it sees, and those lost (not left on purpose) less than
    /// `window` ago. With a share of one half, two halves of an even split both keep it; a
    /// minority regains it once its lost peers are older than `window`.
    Dynamic {
        /// Of the nodes seen within the window, the share that must be seen now, in (0, 1].
        share: f64,
        /// How long a lost node still counts.
        window: Duration,
    },
}

impl Partition {
    /// Why this strategy cannot work, if it cannot (a zero size, a share outside (0, 1]).
    pub fn check(&self) -> Result<(), String> {
        match *self {
            Partition::Divergence => Ok(()),
            Partition::Static { min_nodes: 0 } => Err("a static quorum of 0 nodes".into()),
            Partition::Majority { cluster_size: 0 } => Err("a cluster size of 0".into()),
            Partition::Dynamic { share, .. } if !(share > 0.0 && share <= 1.0) => {
                Err(format!("a dynamic quorum share of {share}, not in (0, 1]"))
            }
            _ => Ok(()),
        }
    }

    /// Whether a node that sees `live` nodes of the hub (itself included), and lost `lost`
    /// others within the dynamic window, has its quorum.
    pub fn holds(&self, live: usize, lost: usize) -> bool {
        match *self {
            Partition::Divergence => true,
            Partition::Static { min_nodes } => live >= min_nodes,
            Partition::Majority { cluster_size } => live * 2 > cluster_size,
            Partition::Dynamic { share, .. } => {
                // A hair of slack, so that 3 of 5 is a share of 0.6 whatever the rounding.
                to_f64(live) + 1e-9 >= share * to_f64(live + lost)
            }
        }
    }
}

#[expect(clippy::cast_precision_loss, reason = "node counts are far below 2^52")]
fn to_f64(count: usize) -> f64 {
    count as f64
}

/// How the copies of a child serve, when it has more than one ([`TableConfig::replicas`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Redundancy {
    /// Every copy serves; no roles.
    #[default]
    ActiveActive,
    /// One copy is active, the others passive ([`Role`]): the active one is the first of the
    /// child's owners ([`Placement::owners`]) that runs it, else the first running copy by
    /// node name, the same on every node that sees the same copies. A passive copy is
    /// promoted when the active one is lost.
    ActivePassive,
}

/// A copy's role under [`Redundancy::ActivePassive`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// It serves.
    Active,
    /// It stands by, to be promoted when the active copy is lost.
    Passive,
}

/// How a [`Table`] decides.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TableConfig {
    /// How long a node must be gone before its children are started elsewhere (so a brief
    /// disconnect moves nothing). Not waited for a node that left on purpose.
    pub down_after: Duration,
    /// How much longer a node that knows an orphan it does not own waits before handing it
    /// to its owner.
    pub adopt_after: Duration,
    /// After this, an action not reported done is issued again.
    pub retry_after: Duration,
    /// How long a tombstone is kept.
    pub tombstone_ttl: Duration,
    /// Moves issued per second, at most (redistribution is throttled so a join does not stop
    /// the world). Failover starts are not throttled.
    pub moves_per_sec: u32,
    /// Whether children move on a join.
    pub on_join: OnJoin,
    /// How long the ring must stay unchanged before this node moves children (so that a
    /// node that just joined, and has not heard from every node yet, moves nothing on a
    /// partial view).
    pub settle: Duration,
    /// A node that went down without leaving makes the hub partitioned for this long.
    pub partition_window: Duration,
    /// Ring entries per node ([`crate::core::DEFAULT_VNODES`]); the same on every node.
    pub vnodes: u32,
    /// What this node does when cut off from part of the hub.
    pub partition: Partition,
    /// Copies of each child (at least one), on that many distinct nodes: the child's owner
    /// and the next nodes on the ring ([`Placement::owners`]). A node that joins and becomes
    /// an owner starts its copy first; the copy it replaces stops once every owner runs
    /// one.
    pub replicas: usize,
    /// How the copies serve.
    pub redundancy: Redundancy,
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig {
            down_after: Duration::from_secs(3),
            adopt_after: Duration::from_secs(1),
            retry_after: Duration::from_secs(5),
            tombstone_ttl: Duration::from_secs(600),
            moves_per_sec: 10_000,
            on_join: OnJoin::Move,
            settle: Duration::from_secs(1),
            partition_window: Duration::from_secs(60),
            vnodes: super::DEFAULT_VNODES,
            partition: Partition::Divergence,
            replicas: 1,
            redundancy: Redundancy::ActiveActive,
        }
    }
}

/// Why this node must stop its copy of a child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// Another copy at the same version wins (see the module docs).
    Conflict {
        /// The node whose copy wins.
        winner: String,
    },
    /// A newer version of the child exists: a tombstone (it was terminated), or a copy
    /// started again after that.
    Superseded {
        /// The newer version.
        version: u64,
    },
    /// This node lost its quorum ([`Partition`]): the copy stops, and its entry stays as
    /// [`State::Suspended`].
    QuorumLost,
    /// More copies run than [`TableConfig::replicas`], and this node is not among the
    /// child's owners (or, while not every owner runs one, among the copies kept).
    Surplus,
}

/// What this node must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action<S> {
    /// Start the child here, from this entry (its newest known), and publish it.
    Start {
        /// The child.
        child: String,
        /// Its newest entry.
        entry: Entry<S>,
    },
    /// Stop this node's copy and remove its entry.
    Stop {
        /// The child.
        child: String,
        /// Why.
        reason: StopReason,
    },
    /// Move this node's copy to `to`: publish it as [`State::Moving`], stop it, have `to`
    /// start it, then remove the entry.
    Move {
        /// The child.
        child: String,
        /// Its owner.
        to: String,
    },
    /// Hand orphans to their owner `to`, which starts those nobody runs.
    Adopt {
        /// The owner.
        to: String,
        /// The children, with their newest entries.
        children: Vec<(String, Entry<S>)>,
    },
    /// Publish this tombstone as this node's own entry: the node that held it is gone.
    Keep {
        /// The child.
        child: String,
        /// The tombstone.
        entry: Entry<S>,
    },
    /// Remove this node's entry of the child: a tombstone kept long enough, or a suspended
    /// copy that another node runs now.
    Forget {
        /// The child.
        child: String,
    },
    /// Publish this node's entry of the child with this placement, the child's newest: two
    /// copies of one version were placed differently (see [`Known::newest`]), and the
    /// node's own entry, which a move hands on, must not carry the placement the others
    /// have set aside.
    Place {
        /// The child.
        child: String,
        /// Its placement.
        placement: Placement,
    },
    /// Tell this node's copy its role changed ([`Redundancy::ActivePassive`]). Not waited
    /// for: it blocks nothing, and is not issued again unless the role changes again (or
    /// the copy restarts).
    Role {
        /// The child.
        child: String,
        /// Its role now.
        role: Role,
    },
}

impl<S> Action<S> {
    /// The children the action is about.
    pub fn children(&self) -> Vec<&str> {
        match self {
            Action::Start { child, .. }
            | Action::Keep { child, .. }
            | Action::Stop { child, .. }
            | Action::Move { child, .. }
            | Action::Forget { child }
            | Action::Place { child, .. }
            | Action::Role { child, .. } => vec![child.as_str()],
            Action::Adopt { children, .. } => {
                children.iter().map(|(child, _)| child.as_str()).collect()
            }
        }
    }
}

/// What the table knows of one child.
#[derive(Clone, Debug)]
pub struct Known<S> {
    /// The live nodes' entries.
    pub holders: BTreeMap<String, Entry<S>>,
    /// The newest entry seen, kept after its node is lost: the highest version; of that
    /// version, an entry a live node holds before one only remembered, then the greatest
    /// [`Placement`], then the latest. Two copies of one version placed differently (a child
    /// pinned to a node on one side of a partition and started by the ring on the other)
    /// are so told apart the same way on every node, whatever order their entries arrive
    /// in, and every node agrees on the owner.
    pub newest: Entry<S>,
}

impl<S> Known<S> {
    /// Whether a node other than `except` holds an entry of the newest's version and
    /// placement.
    fn newest_held(&self, except: &str) -> bool {
        self.holders.iter().any(|(node, entry)| {
            node != except
                && entry.version == self.newest.version
                && entry.placement == self.newest.placement
        })
    }

    /// The nodes running the child at its newest version.
    pub fn running(&self) -> impl Iterator<Item = &str> {
        self.holders
            .iter()
            .filter(|(_, entry)| entry.version == self.newest.version && entry.state.is_live())
            .map(|(node, _)| node.as_str())
    }

    /// Whether the newest entry is a tombstone.
    pub fn is_ended(&self) -> bool {
        self.newest.state == State::Ended
    }
}

/// One node's table of a hub's children (see the module docs).
#[derive(Debug)]
pub struct Table<S> {
    me: String,
    config: TableConfig,
    ring: Ring,
    /// Hashed with fixed keys: looked up on every change, and iterated only where the order
    /// does not matter or is sorted after, so a replay takes the same decisions.
    children: HashMap<String, Known<S>, Fixed>,
    /// Children to decide on at the next reconcile.
    dirty: HashSet<String, Fixed>,
    /// Every child is to be decided on (the ring changed).
    all_dirty: bool,
    /// Children nobody runs, with when they may be started.
    orphans: BTreeMap<String, Instant>,
    /// Children last seen moving to a node whose own entry has not arrived, by that node: an
    /// orphan's grace starts when the node is lost (see [`PRESUMED_FOR`]).
    presumed: BTreeMap<String, String>,
    /// Children an action was issued for, with when it may be issued again.
    pending: BTreeMap<String, Instant>,
    /// Moves the throttle held back.
    deferred: BTreeSet<String>,
    move_budget: f64,
    refilled: Instant,
    /// When the ring last changed.
    ring_changed: Instant,
    /// Nodes that said they were leaving: their children need no grace.
    leaving: BTreeSet<String>,
    /// Nodes lost without leaving, with when.
    lost: BTreeMap<String, Instant>,
    /// Tombstones, with when this node forgets them.
    ended: BTreeMap<String, Instant>,
    /// Whether this node had its quorum at the last reconcile.
    quorum: bool,
    /// The role each running copy of this node was last told.
    roles: HashMap<String, Role, Fixed>,
}

impl<S: Clone> Table<S> {
    /// The table of node `me`, alone in the hub so far.
    pub fn new(me: &str, config: TableConfig, now: Instant) -> Self {
        Table {
            me: me.to_owned(),
            config,
            ring: Ring::with_vnodes([me], config.vnodes),
            children: HashMap::default(),
            dirty: HashSet::default(),
            all_dirty: false,
            orphans: BTreeMap::new(),
            presumed: BTreeMap::new(),
            pending: BTreeMap::new(),
            deferred: BTreeSet::new(),
            move_budget: f64::from(config.moves_per_sec),
            refilled: now,
            ring_changed: now,
            leaving: BTreeSet::new(),
            lost: BTreeMap::new(),
            ended: BTreeMap::new(),
            quorum: config.partition.holds(1, 0),
            roles: HashMap::default(),
        }
    }

    /// This node.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The hub's nodes on the ring (this node and its live peers).
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The configuration.
    pub fn config(&self) -> &TableConfig {
        &self.config
    }

    /// Everything known of `child`.
    pub fn child(&self, child: &str) -> Option<&Known<S>> {
        self.children.get(child)
    }

    /// Every child known, tombstones included, in no particular order.
    pub fn children(&self) -> impl Iterator<Item = (&String, &Known<S>)> {
        self.children.iter()
    }

    /// The owner of `child` given its placement, on the ring as this node sees it.
    pub fn owner<'a>(&'a self, child: &str, placement: &'a Placement) -> Option<&'a str> {
        placement.owner(&self.ring, child)
    }

    /// Whether a node went down without leaving within [`TableConfig::partition_window`], or
    /// this node is without its quorum.
    pub fn is_partitioned(&self, now: Instant) -> bool {
        !self.quorum || self.lost.values().any(|&since| now < since + self.config.partition_window)
    }

    /// The node whose copy of `child` serves (see [`Redundancy::ActivePassive`]; with one
    /// copy, the node that runs it), if any runs it.
    pub fn active(&self, child: &str) -> Option<&str> {
        let known = self.children.get(child)?;
        let mut running = known.running();
        let first = running.next()?;
        if running.next().is_none() {
            return Some(first);
        }
        // A copy with the child's state first (not one restarting, or waiting for the state),
        // on the first owner that has one, else on the first node by name.
        let owners = known.newest.placement.owners(&self.ring, child, self.config.replicas);
        let ready =
            |node: &str| known.holders.get(node).is_some_and(|entry| entry.state == State::Running);
        let held = |node: &&str| known.running().any(|runner| runner == *node);
        owners
            .iter()
            .copied()
            .find(|node| held(node) && ready(node))
            .or_else(|| known.running().find(|node| ready(node)))
            .or_else(|| owners.iter().copied().find(held))
            .or(Some(first))
    }

    /// Whether this node had its quorum ([`TableConfig::partition`]) at the last
    /// [`Table::reconcile`]: without it, it runs and starts no child.
    pub fn has_quorum(&self) -> bool {
        self.quorum
    }

    /// Whether this node has its quorum at `now`, as the hub's nodes stand.
    fn quorum_at(&self, now: Instant) -> bool {
        let lost = match self.config.partition {
            Partition::Dynamic { window, .. } => {
                self.lost.values().filter(|&&since| now < since + window).count()
            }
            _ => 0,
        };
        self.config.partition.holds(self.ring.nodes().len(), lost)
    }

    /// Running children per node (for load-aware strategies and reports).
    pub fn load(&self) -> BTreeMap<String, usize> {
        let mut load = BTreeMap::new();
        for known in self.children.values() {
            for node in known.running() {
                *load.entry(node.to_owned()).or_insert(0) += 1;
            }
        }
        load
    }

    /// `node` runs the hub now.
    pub fn node_up(&mut self, node: &str, now: Instant) {
        self.leaving.remove(node);
        self.lost.remove(node);
        if !self.ring.contains(node) {
            self.ring.add(node);
            self.all_dirty = true;
            self.ring_changed = now;
        }
    }

    /// `node` left the hub on purpose (before its entries go): its children are started on
    /// their new owners without waiting.
    pub fn node_leaving(&mut self, node: &str) {
        if node != self.me {
            self.leaving.insert(node.to_owned());
        }
    }

    /// `node` is no longer in the hub (its entries are, or will be, reported gone).
    pub fn node_down(&mut self, node: &str, now: Instant) {
        if node == self.me {
            return;
        }
        if !self.leaving.contains(node) {
            self.lost.insert(node.to_owned(), now);
        }
        // Children presumed on it are orphans from now, as those it was seen running are.
        let grace =
            if self.leaving.contains(node) { Duration::ZERO } else { self.config.down_after };
        let presumed: Vec<String> = self
            .presumed
            .iter()
            .filter(|&(_, to)| to == node)
            .map(|(child, _)| child.clone())
            .collect();
        for child in presumed {
            self.presumed.remove(&child);
            self.orphans.insert(child.clone(), now + grace);
            self.dirty.insert(child);
        }
        if self.ring.contains(node) {
            self.ring.remove(node);
            self.all_dirty = true;
            self.ring_changed = now;
        }
    }

    /// `origin`'s entry for `child` is now `entry` (`None`: it went, or its node did).
    pub fn changed(&mut self, origin: &str, child: &str, entry: Option<&Entry<S>>, now: Instant) {
        match entry {
            Some(entry) => {
                // Looked up before inserting: most changes are to children and holders known
                // already, and a lookup allocates no key.
                let known = match self.children.get_mut(child) {
                    Some(known) => known,
                    None => {
                        let known = Known { holders: BTreeMap::new(), newest: entry.clone() };
                        self.children.entry(child.to_owned()).or_insert(known)
                    }
                };
                let newer = match entry.version.cmp(&known.newest.version) {
                    std::cmp::Ordering::Greater => true,
                    std::cmp::Ordering::Equal => {
                        entry.placement >= known.newest.placement || !known.newest_held(origin)
                    }
                    std::cmp::Ordering::Less => false,
                };
                if newer {
                    known.newest = entry.clone();
                }
                match known.holders.get_mut(origin) {
                    Some(held) => *held = entry.clone(),
                    None => {
                        known.holders.insert(origin.to_owned(), entry.clone());
                    }
                }
                if known.is_ended() {
                    self.ended.entry(child.to_owned()).or_insert(now + self.config.tombstone_ttl);
                }
                if !self.presumed.is_empty() && entry.state.is_live() {
                    self.presumed.remove(child);
                }
            }
            None => {
                let Some(known) = self.children.get_mut(child) else { return };
                let held = known.holders.remove(origin).map(|entry| entry.state);
                if !known.newest_held(origin) {
                    // The newest entry's node dropped it: of that version, the entries held
                    // still count before it (see `Known::newest`).
                    let version = known.newest.version;
                    let others = known.holders.values().filter(|entry| entry.version == version);
                    if let Some(entry) = others.max_by(|a, b| a.placement.cmp(&b.placement)) {
                        known.newest = entry.clone();
                    }
                }
                let orphaned = !known.is_ended() && known.running().next().is_none();
                match held {
                    // A move its mover finished (it is still in the hub): the child runs on
                    // the node it moved to, whose entry may come later than the mover's (over
                    // a slower link, or before this node has heard from that node at all). It
                    // is not an orphan until that node is lost, or for PRESUMED_FOR.
                    Some(State::Moving { to })
                        if orphaned
                            && to != self.me
                            && self.ring.contains(origin)
                            && !self.lost.contains_key(&to)
                            && !self.leaving.contains(&to) =>
                    {
                        let until = now + self.config.down_after * PRESUMED_FOR;
                        self.orphans.insert(child.to_owned(), until);
                        self.presumed.insert(child.to_owned(), to);
                    }
                    // Orphaned now: its time to be started runs from here.
                    Some(state) if orphaned && state.is_live() => {
                        let grace = if self.leaving.contains(origin) {
                            Duration::ZERO
                        } else {
                            self.config.down_after
                        };
                        self.orphans.insert(child.to_owned(), now + grace);
                    }
                    _ => {}
                }
            }
        }
        if origin == self.me && !self.pending.is_empty() {
            self.pending.remove(child);
        }
        if !self.all_dirty && !self.dirty.contains(child) {
            self.dirty.insert(child.to_owned());
        }
    }

    /// The action about `children` is done (or failed): they may be decided on again.
    pub fn done<'c>(&mut self, children: impl IntoIterator<Item = &'c str>) {
        for child in children {
            self.pending.remove(child);
            self.dirty.insert(child.to_owned());
        }
    }

    /// The action about `child` failed: it is decided on again after
    /// [`TableConfig::retry_after`], not at once.
    pub fn retry_later(&mut self, child: &str, now: Instant) {
        self.pending.insert(child.to_owned(), now + self.config.retry_after);
    }

    /// When [`Table::reconcile`] has something to do without any new input, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let orphans = self.orphans.values().copied().min();
        let pending = self.pending.values().copied().min();
        let ended = self.ended.values().copied().min();
        // Deferred moves: once the ring has settled, then in steps that let the budget refill.
        let deferred = (!self.deferred.is_empty())
            .then(|| (self.ring_changed + self.config.settle).max(self.refilled + DEFERRED_STEP));
        // Without a dynamic quorum, the quorum may come back as lost nodes age out.
        let aging = match self.config.partition {
            Partition::Dynamic { window, .. } if !self.quorum => {
                self.lost.values().map(|&since| since + window).min()
            }
            _ => None,
        };
        [orphans, pending, ended, deferred, aging].into_iter().flatten().min()
    }

    /// Decides what this node must do about the children that changed, or whose time came.
    pub fn reconcile(&mut self, now: Instant) -> Vec<Action<S>> {
        self.refill(now);
        let quorum = self.quorum_at(now);
        if quorum != self.quorum {
            // Lost: every running child stops; back: every suspended one is decided on.
            self.quorum = quorum;
            self.all_dirty = true;
        }
        let mut check: BTreeSet<String> = std::mem::take(&mut self.dirty).into_iter().collect();
        if std::mem::take(&mut self.all_dirty) {
            check.extend(self.children.keys().cloned());
        }
        check.append(&mut self.deferred);
        check.extend(
            self.orphans.iter().filter(|&(_, &at)| at <= now).map(|(child, _)| child.clone()),
        );
        let expired: Vec<String> =
            self.pending.iter().filter(|&(_, &at)| at <= now).map(|(c, _)| c.clone()).collect();
        for child in expired {
            self.pending.remove(&child);
            check.insert(child);
        }
        let mut actions = Vec::new();
        let mut adopt: BTreeMap<String, Vec<(String, Entry<S>)>> = BTreeMap::new();
        let roles = self.config.replicas > 1 && self.config.redundancy == Redundancy::ActivePassive;
        for child in check {
            if roles && let Some(role) = self.role_changed(&child) {
                actions.push(Action::Role { child: child.clone(), role });
            }
            // An action under way waits for its outcome, except that a node without its quorum
            // stops what it runs at once (a move that failed and restarted the child here,
            // say, must not keep it running past the other side's `down_after`).
            if self.pending.contains_key(&child) && (self.quorum || !self.runs(&child)) {
                continue;
            }
            match self.decide(&child, now) {
                Decision::Nothing => {}
                Decision::Act(action) => {
                    self.pending.insert(child, now + self.config.retry_after);
                    actions.push(action);
                }
                Decision::Adopt { to, entry } => {
                    self.pending.insert(child.clone(), now + self.config.retry_after);
                    adopt.entry(to).or_default().push((child, entry));
                }
            }
        }
        actions.extend(adopt.into_iter().map(|(to, children)| Action::Adopt { to, children }));
        actions.extend(self.forget_tombstones(now));
        actions
    }

    fn decide(&mut self, child: &str, now: Instant) -> Decision<S> {
        let Some(known) = self.children.get(child) else {
            self.orphans.remove(child);
            return Decision::Nothing;
        };
        let mine = known.holders.get(&self.me);
        let newest = known.newest.version;
        if let Some(mine) = mine
            && mine.version < newest
            && mine.state != State::Ended
        {
            let reason = StopReason::Superseded { version: newest };
            return Decision::Act(Action::Stop { child: child.to_owned(), reason });
        }
        if let Some(mine) = mine
            && mine.version == newest
            && mine.placement != known.newest.placement
            && mine.state != State::Ended
        {
            let placement = known.newest.placement.clone();
            return Decision::Act(Action::Place { child: child.to_owned(), placement });
        }
        if known.is_ended() {
            self.orphans.remove(child);
            // The tombstone's node is gone: every node that knows it keeps it (it is small,
            // and which nodes know it is unknown), so that it still reaches a node that knew
            // the child as running.
            let kept = known
                .holders
                .values()
                .any(|entry| entry.state == State::Ended && entry.version == newest);
            let live = self.ended.get(child).is_some_and(|&until| now < until);
            if !kept && live {
                let entry = known.newest.clone();
                return Decision::Act(Action::Keep { child: child.to_owned(), entry });
            }
            return Decision::Nothing;
        }
        if !self.quorum {
            self.orphans.remove(child);
            if mine.is_some_and(|mine| mine.state.is_live()) {
                let reason = StopReason::QuorumLost;
                return Decision::Act(Action::Stop { child: child.to_owned(), reason });
            }
            return Decision::Nothing;
        }
        let suspended = known.holders.values().any(|entry| entry.state == State::Suspended);
        if suspended && known.running().next().is_some() {
            // Taken over elsewhere while this node was without its quorum.
            if mine.is_some_and(|mine| mine.state == State::Suspended) {
                return Decision::Act(Action::Forget { child: child.to_owned() });
            }
        }
        if self.config.replicas > 1 {
            return self.decide_copies(child, suspended, now);
        }
        let (first, second) = {
            let mut running = known.running();
            (running.next(), running.next())
        };
        // The common case, first: one copy, run by another node (which decides about it).
        if let (Some(runner), None) = (first, second)
            && runner != self.me
        {
            if !self.orphans.is_empty() {
                self.orphans.remove(child);
            }
            return Decision::Nothing;
        }
        let owner = known.newest.placement.owner(&self.ring, child).map(str::to_owned);
        let running: Vec<&str> = known.running().collect();
        if running.len() > 1 {
            self.orphans.remove(child);
            if !running.contains(&self.me.as_str()) {
                return Decision::Nothing;
            }
            let winner = match owner.as_deref() {
                Some(owner) if running.contains(&owner) => owner,
                _ => running[0],
            };
            if winner == self.me {
                return Decision::Nothing;
            }
            let reason = StopReason::Conflict { winner: winner.to_owned() };
            return Decision::Act(Action::Stop { child: child.to_owned(), reason });
        }
        if let [runner] = running[..] {
            self.orphans.remove(child);
            let misplaced = runner == self.me
                && self.config.on_join == OnJoin::Move
                && owner.as_deref().is_some_and(|owner| owner != self.me);
            if !misplaced || mine.is_some_and(|mine| mine.state != State::Running) {
                return Decision::Nothing;
            }
            if now < self.ring_changed + self.config.settle || self.move_budget < 1.0 {
                self.deferred.insert(child.to_owned());
                return Decision::Nothing;
            }
            self.move_budget -= 1.0;
            let to = owner.unwrap_or_default();
            return Decision::Act(Action::Move { child: child.to_owned(), to });
        }
        // Nobody runs it. A move under way is its mover's to finish.
        if let Some(Entry { state: State::Moving { to }, .. }) = mine {
            self.orphans.remove(child);
            if self.ring.contains(to) {
                return Decision::Nothing;
            }
            // The node it was moving to is gone: start it here if this node owns it now.
            return match owner {
                Some(owner) if owner == self.me => Decision::Act(Action::Start {
                    child: child.to_owned(),
                    entry: known.newest.clone(),
                }),
                Some(owner) => Decision::Act(Action::Move { child: child.to_owned(), to: owner }),
                None => Decision::Nothing,
            };
        }
        let moving =
            known.holders.values().any(|entry| matches!(entry.state, State::Moving { .. }));
        if moving {
            self.orphans.remove(child);
            return Decision::Nothing;
        }
        self.orphan(child, owner, suspended, now)
    }

    /// [`Table::decide`] for a child of several copies, past the checks they share (newer
    /// versions, tombstones, the quorum): the owners start the copies they lack (the first
    /// one as an orphan's owner does, the others beside the running ones), and a copy on a
    /// node that is not an owner stops once every owner runs one.
    fn decide_copies(&mut self, child: &str, suspended: bool, now: Instant) -> Decision<S> {
        let Some(known) = self.children.get(child) else { return Decision::Nothing };
        let me = self.me.as_str();
        let count = self.config.replicas;
        let owners = known.newest.placement.owners(&self.ring, child, count);
        let running: Vec<&str> = known.running().collect();
        if running.is_empty() {
            let owner = owners.first().map(|owner| (*owner).to_owned());
            return self.orphan(child, owner, suspended, now);
        }
        self.orphans.remove(child);
        let runs_here = running.contains(&me);
        let owned_here = owners.contains(&me);
        if runs_here == owned_here {
            return Decision::Nothing;
        }
        if runs_here {
            // Kept while it is one of the first `count` copies (owners' first) and some
            // owner still lacks its copy; stopped once every owner runs one.
            let every_owner = owners.iter().all(|owner| running.contains(owner));
            let kept = owners
                .iter()
                .copied()
                .filter(|owner| running.contains(owner))
                .chain(running.iter().copied().filter(|node| !owners.contains(node)))
                .take(count)
                .any(|node| node == me);
            if kept && !every_owner {
                return Decision::Nothing;
            }
        } else if running.len() >= count && self.config.on_join == OnJoin::Stay {
            return Decision::Nothing;
        }
        if now < self.ring_changed + self.config.settle || self.move_budget < 1.0 {
            self.deferred.insert(child.to_owned());
            return Decision::Nothing;
        }
        self.move_budget -= 1.0;
        let child = child.to_owned();
        if runs_here {
            return Decision::Act(Action::Stop { child, reason: StopReason::Surplus });
        }
        let entry = known.newest.clone();
        Decision::Act(Action::Start { child, entry })
    }

    /// A child nobody runs: once it has been an orphan for `down_after` (if it was suspended,
    /// once the ring has not changed for `settle`), its owner starts it, and a node that knows it and does not own it hands
    /// it over after `adopt_after` more.
    fn orphan(
        &mut self,
        child: &str,
        owner: Option<String>,
        suspended: bool,
        now: Instant,
    ) -> Decision<S> {
        // A suspended child was stopped on purpose: it starts as soon as the ring has settled
        // (the quorum came back with nodes whose entries, which may show it running there,
        // arrive just after them).
        let at = if suspended {
            now.max(self.ring_changed + self.config.settle)
        } else {
            now + self.config.down_after
        };
        let since = *self.orphans.entry(child.to_owned()).or_insert(at);
        if now < since {
            return Decision::Nothing;
        }
        let Some(known) = self.children.get(child) else { return Decision::Nothing };
        match owner {
            Some(owner) if owner == self.me => Decision::Act(Action::Start {
                child: child.to_owned(),
                entry: known.newest.clone(),
            }),
            Some(owner) if now >= since + self.config.adopt_after => {
                Decision::Adopt { to: owner, entry: known.newest.clone() }
            }
            _ => Decision::Nothing,
        }
    }

    /// Whether this node's copy of `child` runs (or is being restarted).
    fn runs(&self, child: &str) -> bool {
        self.children
            .get(child)
            .and_then(|known| known.holders.get(&self.me))
            .is_some_and(|mine| mine.state.is_live())
    }

    /// This node's role for `child` if it changed since it was last told (its copy runs).
    fn role_changed(&mut self, child: &str) -> Option<Role> {
        let running = self
            .children
            .get(child)
            .and_then(|known| known.holders.get(&self.me))
            .is_some_and(|mine| mine.state.is_up());
        if !running {
            self.roles.remove(child);
            return None;
        }
        let role =
            if self.active(child) == Some(self.me.as_str()) { Role::Active } else { Role::Passive };
        match self.roles.get_mut(child) {
            Some(told) if *told == role => None,
            Some(told) => {
                *told = role;
                Some(role)
            }
            None => {
                self.roles.insert(child.to_owned(), role);
                Some(role)
            }
        }
    }

    fn forget_tombstones(&mut self, now: Instant) -> Vec<Action<S>> {
        let due: Vec<String> =
            self.ended.iter().filter(|&(_, &at)| at <= now).map(|(c, _)| c.clone()).collect();
        let mut actions = Vec::new();
        for child in due {
            self.ended.remove(&child);
            let Some(known) = self.children.get(&child) else { continue };
            if !known.is_ended() {
                continue;
            }
            if known.holders.get(&self.me).is_some_and(|entry| entry.state == State::Ended) {
                actions.push(Action::Forget { child: child.clone() });
            }
            if known.holders.values().all(|entry| entry.state == State::Ended) {
                self.children.remove(&child);
                self.orphans.remove(&child);
            }
        }
        actions
    }

    fn refill(&mut self, now: Instant) {
        let rate = f64::from(self.config.moves_per_sec.max(1));
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.move_budget = (self.move_budget + elapsed * rate).min(rate);
        self.refilled = now;
    }
}

/// SipHash with fixed keys: the same on every run, so the table replays.
type Fixed = BuildHasherDefault<std::hash::DefaultHasher>;

/// How many times [`TableConfig::down_after`] a child last seen moving to a node is presumed
/// to run there while that node's entry has not arrived and the node is not lost (then it is
/// an orphan, as after any loss). Long: another node that sees the node lost hands an orphan
/// to its owner anyway.
const PRESUMED_FOR: u32 = 10;

/// How often deferred moves are looked at again, at most.
const DEFERRED_STEP: Duration = Duration::from_millis(50);

enum Decision<S> {
    Nothing,
    Act(Action<S>),
    Adopt { to: String, entry: Entry<S> },
}

#[cfg(test)]
mod tests;
