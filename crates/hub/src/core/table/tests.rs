//! The table's decisions, tested alone and in a small simulated hub: nodes that exchange
//! their entries directly (no replication protocol, no processes), with joins, crashes,
//! restarts, partitions, starts and terminations, checked after the last heal.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

fn entry(version: u64, state: State) -> Entry<u32> {
    Entry { version, state, placement: Placement::Ring, data: 7 }
}

fn config() -> TableConfig {
    TableConfig {
        down_after: Duration::from_secs(3),
        adopt_after: Duration::from_secs(1),
        retry_after: Duration::from_secs(2),
        tombstone_ttl: Duration::from_secs(60),
        moves_per_sec: 1_000,
        on_join: OnJoin::Move,
        settle: Duration::from_millis(500),
        partition_window: Duration::from_secs(60),
        vnodes: 64,
        partition: Partition::Divergence,
        replicas: 1,
        redundancy: Redundancy::ActiveActive,
    }
}

/// A child whose owner is `node` on the ring over `nodes`.
fn owned_by(node: &str, nodes: &[&str]) -> String {
    let ring = Ring::with_vnodes(nodes.iter().copied(), 64);
    (0..).map(|i| format!("c{i}")).find(|c| ring.owner(c) == Some(node)).expect("a child")
}

#[test]
fn a_lost_nodes_child_is_started_by_its_new_owner_after_the_grace() {
    let t0 = Instant::now();
    let mut a = Table::new("a", config(), t0);
    a.node_up("b", t0);
    let child = owned_by("b", &["a", "b"]);
    a.changed("b", &child, Some(&entry(0, State::Running)), t0);
    assert!(a.reconcile(t0).is_empty(), "b runs it");
    a.node_down("b", t0);
    a.changed("b", &child, None, t0);
    assert!(a.reconcile(t0 + Duration::from_secs(1)).is_empty(), "within the grace");
    assert!(a.is_partitioned(t0));
    let actions = a.reconcile(t0 + Duration::from_secs(3));
    assert_eq!(
        actions,
        vec![Action::Start { child: child.clone(), entry: entry(0, State::Running) }]
    );
    assert!(a.reconcile(t0 + Duration::from_secs(4)).is_empty(), "issued once");
    assert_eq!(a.reconcile(t0 + Duration::from_secs(5)).len(), 1, "again after retry_after");
}

#[test]
fn a_node_that_leaves_on_purpose_has_its_children_started_at_once() {
    let t0 = Instant::now();
    let mut a = Table::new("a", config(), t0);
    a.node_up("b", t0);
    let child = owned_by("b", &["a", "b"]);
    a.changed("b", &child, Some(&entry(0, State::Running)), t0);
    a.node_leaving("b");
    a.changed("b", &child, None, t0);
    a.node_down("b", t0);
    assert!(!a.is_partitioned(t0));
    assert!(matches!(a.reconcile(t0).as_slice(), [Action::Start { .. }]));
}

#[test]
fn a_brief_disconnect_moves_nothing() {
    let t0 = Instant::now();
    let mut a = Table::new("a", config(), t0);
    a.node_up("b", t0);
    let child = owned_by("b", &["a", "b"]);
    a.changed("b", &child, Some(&entry(0, State::Running)), t0);
    a.node_down("b", t0);
    a.changed("b", &child, None, t0);
    assert!(a.reconcile(t0 + Duration::from_secs(1)).is_empty());
    a.node_up("b", t0);
    a.changed("b", &child, Some(&entry(0, State::Running)), t0 + Duration::from_secs(2));
    assert!(a.reconcile(t0 + Duration::from_secs(10)).is_empty());
}

/// A mover's entry can arrive, and go, before the entry of the node it moved the child to
/// (a slower link, or a node not heard from yet): the child is not an orphan then.
#[test]
fn a_child_seen_moving_to_a_node_not_yet_heard_from_is_not_an_orphan() {
    let t0 = Instant::now();
    let secs = Duration::from_secs;
    let mut a = Table::new("a", config(), t0);
    a.node_up("b", t0);
    let child = owned_by("a", &["a", "b"]);
    a.changed("b", &child, Some(&entry(0, State::Moving { to: "c".into() })), t0);
    a.changed("b", &child, None, t0);
    assert!(a.reconcile(t0).is_empty());
    assert!(a.reconcile(t0 + secs(10)).is_empty(), "presumed on c, past down_after");
    // c's entry comes: it runs there; c is then lost, so the child is an orphan after all.
    a.node_up("c", t0 + secs(11));
    a.changed("c", &child, Some(&entry(0, State::Running)), t0 + secs(11));
    a.node_down("c", t0 + secs(12));
    a.changed("c", &child, None, t0 + secs(12));
    assert!(a.reconcile(t0 + secs(14)).is_empty(), "within the grace");
    assert!(matches!(a.reconcile(t0 + secs(15)).as_slice(), [Action::Start { .. }]));

    // Never heard from c: the child is an orphan once c is lost, after the usual grace.
    let mut a = Table::new("a", config(), t0);
    a.node_up("b", t0);
    a.node_up("c", t0);
    a.changed("b", &child, Some(&entry(0, State::Moving { to: "c".into() })), t0);
    a.changed("b", &child, None, t0);
    assert!(a.reconcile(t0 + secs(10)).is_empty());
    a.node_down("c", t0 + secs(10));
    assert!(a.reconcile(t0 + secs(12)).is_empty(), "within the grace");
    assert!(matches!(a.reconcile(t0 + secs(13)).as_slice(), [Action::Start { .. }]));

    // Nor heard of c's loss: the child is an orphan PRESUMED_FOR times down_after on.
    let mut a = Table::new("a", config(), t0);
    a.node_up("b", t0);
    a.changed("b", &child, Some(&entry(0, State::Moving { to: "c".into() })), t0);
    a.changed("b", &child, None, t0);
    let presumed = config().down_after * PRESUMED_FOR;
    assert!(a.reconcile(t0 + presumed - secs(1)).is_empty());
    assert!(matches!(a.reconcile(t0 + presumed).as_slice(), [Action::Start { .. }]));
}

/// Two copies of one version placed differently (pinned to a node on one side of a partition,
/// placed by the ring on the other) are told apart alike whatever order their entries arrive
/// in, so every node agrees on the owner, and so on the copy that wins.
#[test]
fn copies_placed_differently_have_one_newest_entry_on_every_node() {
    let t0 = Instant::now();
    let ring = |child: &str| {
        let mut entry = entry(0, State::Running);
        entry.placement = Placement::Ring;
        (child.to_owned(), entry)
    };
    let pinned = |child: &str| {
        let mut entry = entry(0, State::Running);
        entry.placement = Placement::Nodes(vec!["b".into()]);
        (child.to_owned(), entry)
    };
    let child = owned_by("a", &["a", "b", "c"]);
    let mut tables = Vec::new();
    for first_ring in [true, false] {
        let mut c = Table::new("c", config(), t0);
        c.node_up("a", t0);
        c.node_up("b", t0);
        let (from_a, from_b) = (ring(&child), pinned(&child));
        if first_ring {
            c.changed("a", &from_a.0, Some(&from_a.1), t0);
            c.changed("b", &from_b.0, Some(&from_b.1), t0);
        } else {
            c.changed("b", &from_b.0, Some(&from_b.1), t0);
            c.changed("a", &from_a.0, Some(&from_a.1), t0);
        }
        let newest = c.child(&child).expect("known").newest.placement.clone();
        tables.push((newest, c.active(&child).map(str::to_owned)));
    }
    assert_eq!(tables[0], tables[1]);
    assert_eq!(tables[0].0, Placement::Nodes(vec!["b".into()]));
}

#[test]
fn a_non_owner_hands_an_orphan_to_its_owner() {
    let t0 = Instant::now();
    let mut a = Table::new("a", config(), t0);
    a.node_up("b", t0);
    a.node_up("c", t0);
    let child = owned_by("c", &["a", "c"]);
    a.changed("b", &child, Some(&entry(0, State::Running)), t0);
    a.node_down("b", t0);
    a.changed("b", &child, None, t0);
    assert!(a.reconcile(t0 + Duration::from_secs(3)).is_empty(), "the owner's turn first");
    let actions = a.reconcile(t0 + Duration::from_secs(4));
    assert_eq!(
        actions,
        vec![Action::Adopt { to: "c".into(), children: vec![(child, entry(0, State::Running))] }]
    );
}

#[test]
fn two_copies_resolve_to_the_owners_on_both_sides() {
    let t0 = Instant::now();
    let child = owned_by("b", &["a", "b"]);
    let mut a = Table::new("a", config(), t0);
    let mut b = Table::new("b", config(), t0);
    a.node_up("b", t0);
    b.node_up("a", t0);
    for table in [&mut a, &mut b] {
        table.changed("a", &child, Some(&entry(0, State::Running)), t0);
        table.changed("b", &child, Some(&entry(0, State::Running)), t0);
    }
    let winner = StopReason::Conflict { winner: "b".into() };
    assert_eq!(a.reconcile(t0), vec![Action::Stop { child: child.clone(), reason: winner }]);
    assert!(b.reconcile(t0).is_empty());
}

#[test]
fn a_tombstone_stops_an_older_copy_and_keeps_the_child_from_coming_back() {
    let t0 = Instant::now();
    let child = owned_by("a", &["a", "b"]);
    let mut a = Table::new("a", config(), t0);
    a.node_up("b", t0);
    a.changed("a", &child, Some(&entry(0, State::Running)), t0);
    a.changed("b", &child, Some(&entry(1, State::Ended)), t0);
    let stop = Action::Stop { child: child.clone(), reason: StopReason::Superseded { version: 1 } };
    assert_eq!(a.reconcile(t0), vec![stop]);
    a.changed("a", &child, None, t0);
    a.node_down("b", t0);
    a.changed("b", &child, None, t0);
    let t1 = t0 + Duration::from_secs(30);
    let keep = Action::Keep { child: child.clone(), entry: entry(1, State::Ended) };
    assert_eq!(a.reconcile(t1), vec![keep], "not an orphan; its holder gone, a keeps it");
    a.changed("a", &child, Some(&entry(1, State::Ended)), t1);
    let forget = Action::Forget { child: child.clone() };
    assert_eq!(a.reconcile(t0 + Duration::from_secs(61)), vec![forget]);
    assert!(a.child(&child).is_none(), "forgotten after its ttl");
}

#[test]
fn a_join_moves_only_the_newcomers_children_within_the_cap() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.moves_per_sec = 10;
    let mut a = Table::new("a", cfg, t0);
    let children: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    for child in &children {
        a.changed("a", child, Some(&entry(0, State::Running)), t0);
    }
    assert!(a.reconcile(t0).is_empty());
    a.node_up("b", t0);
    let ring = Ring::with_vnodes(["a", "b"], 64);
    let to_move = children.iter().filter(|c| ring.owner(c) == Some("b")).count();
    let mut moved = BTreeSet::new();
    for second in 0..40 {
        for action in a.reconcile(t0 + Duration::from_secs(second)) {
            let Action::Move { child, to } = action else { panic!("{action:?}") };
            assert_eq!(to, "b");
            let now = t0 + Duration::from_secs(second);
            a.changed("a", &child, None, now);
            a.changed("b", &child, Some(&entry(0, State::Running)), now);
            assert!(moved.insert(child));
        }
        assert!(moved.len() as u64 <= 10 * (second + 1), "throttled");
    }
    assert_eq!(moved.len(), to_move);
}

#[test]
fn a_minority_stops_its_children_starts_none_and_forgets_those_taken_over() {
    let t0 = Instant::now();
    let cfg = TableConfig { partition: Partition::Majority { cluster_size: 3 }, ..config() };
    let mut a = Table::new("a", cfg, t0);
    assert!(!a.has_quorum(), "alone, one of three");
    a.node_up("b", t0);
    a.node_up("c", t0);
    let mine = owned_by("a", &["a", "b", "c"]);
    let theirs = owned_by("b", &["a", "b", "c"]);
    a.changed("a", &mine, Some(&entry(0, State::Running)), t0);
    a.changed("b", &theirs, Some(&entry(0, State::Running)), t0);
    assert!(a.reconcile(t0).is_empty());
    assert!(a.has_quorum() && !a.is_partitioned(t0));

    for node in ["b", "c"] {
        a.node_down(node, t0);
    }
    a.changed("b", &theirs, None, t0);
    let stop = Action::Stop { child: mine.clone(), reason: StopReason::QuorumLost };
    assert_eq!(a.reconcile(t0), vec![stop]);
    assert!(!a.has_quorum() && a.is_partitioned(t0));
    a.changed("a", &mine, Some(&entry(0, State::Suspended)), t0);
    assert!(a.reconcile(t0 + Duration::from_secs(30)).is_empty(), "no failover, no restart");

    // Healed: b took `mine` over meanwhile (it had the majority).
    let t1 = t0 + Duration::from_secs(31);
    a.node_up("b", t1);
    a.changed("b", &mine, Some(&entry(0, State::Running)), t1);
    a.changed("b", &theirs, Some(&entry(0, State::Running)), t1);
    assert_eq!(a.reconcile(t1), vec![Action::Forget { child: mine.clone() }]);
    assert!(a.has_quorum());
}

#[test]
fn a_suspended_child_nobody_took_over_starts_again_once_the_regained_ring_settles() {
    let t0 = Instant::now();
    let cfg = TableConfig { partition: Partition::Static { min_nodes: 2 }, ..config() };
    let mut a = Table::new("a", cfg, t0);
    a.node_up("b", t0);
    let child = owned_by("a", &["a", "b"]);
    a.changed("a", &child, Some(&entry(3, State::Running)), t0);
    assert!(a.reconcile(t0).is_empty());
    a.node_down("b", t0);
    assert!(matches!(
        a.reconcile(t0).as_slice(),
        [Action::Stop { reason: StopReason::QuorumLost, .. }]
    ));
    a.changed("a", &child, Some(&entry(3, State::Suspended)), t0);
    let t1 = t0 + Duration::from_secs(1);
    a.node_up("b", t1);
    assert!(a.reconcile(t1).is_empty(), "b's entries may not have arrived yet");
    let settled = t1 + a.config().settle;
    assert_eq!(a.poll_timeout(), Some(settled));
    assert_eq!(
        a.reconcile(settled),
        vec![Action::Start { child, entry: entry(3, State::Suspended) }],
        "its owner starts it once the ring settled, without waiting for down_after"
    );
}

#[test]
fn a_dynamic_quorum_comes_back_as_lost_nodes_age_out() {
    let t0 = Instant::now();
    let window = Duration::from_secs(10);
    let cfg = TableConfig { partition: Partition::Dynamic { share: 0.6, window }, ..config() };
    let mut a: Table<u32> = Table::new("a", cfg, t0);
    assert!(a.has_quorum(), "a node alone has seen only itself");
    for node in ["b", "c", "d", "e"] {
        a.node_up(node, t0);
    }
    assert!(a.reconcile(t0).is_empty() && a.has_quorum());
    a.node_down("b", t0);
    a.node_down("c", t0);
    a.reconcile(t0);
    assert!(a.has_quorum(), "3 of 5 is 0.6");
    a.node_down("d", t0);
    a.reconcile(t0);
    assert!(!a.has_quorum(), "2 of 5");
    assert_eq!(a.poll_timeout(), Some(t0 + window), "woken when the lost age out");
    a.reconcile(t0 + window - Duration::from_millis(1));
    assert!(!a.has_quorum());
    a.reconcile(t0 + window);
    assert!(a.has_quorum(), "the lost nodes no longer count");
    a.node_leaving("e");
    a.node_down("e", t0 + window);
    a.reconcile(t0 + window);
    assert!(a.has_quorum(), "a node that left on purpose does not count");
}

#[test]
fn partition_strategies_count_as_documented_and_refuse_what_cannot_work() {
    assert!(Partition::Divergence.holds(1, 9));
    assert!(Partition::Majority { cluster_size: 5 }.holds(3, 0));
    assert!(!Partition::Majority { cluster_size: 5 }.holds(2, 0));
    assert!(!Partition::Majority { cluster_size: 4 }.holds(2, 0), "half is not a majority");
    assert!(Partition::Static { min_nodes: 2 }.holds(2, 0));
    assert!(!Partition::Static { min_nodes: 3 }.holds(2, 7));
    assert!(Partition::Dynamic { share: 0.5, window: Duration::ZERO }.holds(2, 2));
    assert!(!Partition::Dynamic { share: 0.51, window: Duration::ZERO }.holds(2, 2));
    assert!(Partition::Static { min_nodes: 0 }.check().is_err());
    assert!(Partition::Majority { cluster_size: 0 }.check().is_err());
    for share in [0.0, -0.5, 1.5, f64::NAN] {
        let strategy = Partition::Dynamic { share, window: Duration::ZERO };
        assert!(strategy.check().is_err(), "{share}");
    }
    assert!(Partition::Dynamic { share: 1.0, window: Duration::ZERO }.check().is_ok());
}

#[test]
fn an_owner_starts_its_copy_and_a_passive_one_is_promoted_when_the_active_is_lost() {
    let t0 = Instant::now();
    let cfg = TableConfig { replicas: 2, redundancy: Redundancy::ActivePassive, ..config() };
    let nodes = ["a", "b", "c"];
    let ring = Ring::with_vnodes(nodes, 64);
    let child = (0..)
        .map(|i| format!("c{i}"))
        .find(|c| ring.owners(c, 2) == ["a", "b"])
        .expect("a child owned by a, then b");
    let mut b = Table::new("b", cfg, t0);
    b.node_up("a", t0);
    b.node_up("c", t0);
    b.changed("a", &child, Some(&entry(0, State::Running)), t0);
    assert!(b.reconcile(t0).is_empty(), "the ring changed: wait for it to settle");
    let t1 = t0 + Duration::from_secs(1);
    let start = Action::Start { child: child.clone(), entry: entry(0, State::Running) };
    assert_eq!(b.reconcile(t1), vec![start], "b is the second owner: it starts its copy");
    b.changed("b", &child, Some(&entry(0, State::Running)), t1);
    let passive = Action::Role { child: child.clone(), role: Role::Passive };
    assert_eq!(b.reconcile(t1), vec![passive]);
    assert_eq!(b.active(&child), Some("a"));
    assert!(b.reconcile(t1).is_empty(), "told once");

    // a is lost: b's copy is promoted at once, without waiting for down_after.
    b.node_down("a", t1);
    b.changed("a", &child, None, t1);
    let active = Action::Role { child: child.clone(), role: Role::Active };
    assert_eq!(b.reconcile(t1), vec![active]);
    assert_eq!(b.active(&child), Some("b"));
}

#[test]
fn a_copy_off_the_owners_stops_once_every_owner_runs_one() {
    let t0 = Instant::now();
    let cfg = TableConfig { replicas: 2, ..config() };
    let ring = Ring::with_vnodes(["a", "b", "c"], 64);
    let before = Ring::with_vnodes(["a", "c"], 64);
    // Owned by b then a on the whole ring, and held by a and c before b joined.
    let child = (0..)
        .map(|i| format!("c{i}"))
        .find(|c| ring.owners(c, 2) == ["b", "a"] && before.owners(c, 2).contains(&"c"))
        .expect("such a child");
    let mut c = Table::new("c", cfg, t0);
    c.node_up("a", t0);
    c.changed("a", &child, Some(&entry(0, State::Running)), t0);
    c.changed("c", &child, Some(&entry(0, State::Running)), t0);
    let t1 = t0 + Duration::from_secs(1);
    assert!(c.reconcile(t1).is_empty());
    c.node_up("b", t1);
    let t2 = t1 + Duration::from_secs(1);
    assert!(c.reconcile(t2).is_empty(), "b runs no copy yet: c's stays");
    c.changed("b", &child, Some(&entry(0, State::Running)), t2);
    let stop = Action::Stop { child: child.clone(), reason: StopReason::Surplus };
    assert_eq!(c.reconcile(t2), vec![stop]);
    assert_eq!(c.active(&child), Some("b"));
}

#[test]
fn a_node_that_loses_its_quorum_stops_a_child_whose_action_is_pending() {
    let t0 = Instant::now();
    let cfg = TableConfig { partition: Partition::Majority { cluster_size: 3 }, ..config() };
    let mut a = Table::new("a", cfg, t0);
    a.node_up("b", t0);
    a.node_up("c", t0);
    let child = owned_by("a", &["a", "b", "c"]);
    a.changed("a", &child, Some(&entry(0, State::Running)), t0);
    a.reconcile(t0);
    // A failed move ran it here again and holds its decisions for `retry_after`.
    a.retry_later(&child, t0);
    for node in ["b", "c"] {
        a.node_down(node, t0);
    }
    let stop = Action::Stop { child, reason: StopReason::QuorumLost };
    assert_eq!(a.reconcile(t0), vec![stop], "at once, not after retry_after");
}

/// A small hub in which entries reach every connected node at once.
struct Hub {
    now: Instant,
    nodes: BTreeMap<String, Member>,
    /// Pairs that cannot talk.
    cut: BTreeSet<(String, String)>,
    /// Nodes whose table ever knew each child.
    knowers: BTreeMap<String, BTreeSet<String>>,
    terminated: BTreeSet<String>,
    config: TableConfig,
    /// The role each node last told its copy of each child.
    roles: BTreeMap<(String, String), Role>,
}

struct Member {
    up: bool,
    table: Table<u32>,
    own: BTreeMap<String, Entry<u32>>,
}

impl Hub {
    fn new(count: usize, config: TableConfig) -> Self {
        let now = Instant::now();
        let mut hub = Hub {
            now,
            nodes: BTreeMap::new(),
            cut: BTreeSet::new(),
            knowers: BTreeMap::new(),
            terminated: BTreeSet::new(),
            config,
            roles: BTreeMap::new(),
        };
        for i in 0..count {
            let name = format!("n{i}");
            hub.nodes.insert(
                name.clone(),
                Member { up: true, table: Table::new(&name, config, now), own: BTreeMap::new() },
            );
        }
        hub.connect_all();
        hub
    }

    fn names(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    fn talk(&self, a: &str, b: &str) -> bool {
        a != b
            && self.nodes[a].up
            && self.nodes[b].up
            && !self.cut.contains(&(a.to_owned(), b.to_owned()))
            && !self.cut.contains(&(b.to_owned(), a.to_owned()))
    }

    /// Brings every pair's membership in line with who can talk to whom.
    fn connect_all(&mut self) {
        let names = self.names();
        for a in &names {
            for b in &names {
                if a == b || !self.nodes[a].up {
                    continue;
                }
                let talk = self.talk(a, b);
                let known = self.nodes[a].table.ring().contains(b);
                if talk && !known {
                    let entries: Vec<(String, Entry<u32>)> =
                        self.nodes[b].own.iter().map(|(c, e)| (c.clone(), e.clone())).collect();
                    let now = self.now;
                    let member = self.nodes.get_mut(a).expect("a");
                    member.table.node_up(b, now);
                    for (child, entry) in entries {
                        member.table.changed(b, &child, Some(&entry), now);
                        self.knowers.entry(child).or_default().insert(a.clone());
                    }
                } else if !talk && known {
                    let now = self.now;
                    let member = self.nodes.get_mut(a).expect("a");
                    member.table.node_down(b, now);
                    let gone: Vec<String> = member
                        .table
                        .children()
                        .filter(|(_, known)| known.holders.contains_key(b))
                        .map(|(child, _)| child.clone())
                        .collect();
                    for child in gone {
                        member.table.changed(b, &child, None, now);
                    }
                }
            }
        }
    }

    /// Node `origin` sets its own entry; every node it talks to sees it.
    fn publish(&mut self, origin: &str, child: &str, entry: Option<Entry<u32>>) {
        let now = self.now;
        let names = self.names();
        match &entry {
            Some(entry) => {
                self.nodes.get_mut(origin).expect("o").own.insert(child.into(), entry.clone())
            }
            None => self.nodes.get_mut(origin).expect("o").own.remove(child),
        };
        for name in names {
            if name == origin || self.talk(origin, &name) {
                let member = self.nodes.get_mut(&name).expect("n");
                member.table.changed(origin, child, entry.as_ref(), now);
                self.knowers.entry(child.to_owned()).or_default().insert(name);
            }
        }
    }

    /// Every up node reconciles once and carries out what it decided.
    fn round(&mut self) -> usize {
        let mut count = 0;
        for name in self.names() {
            if !self.nodes[&name].up {
                continue;
            }
            let now = self.now;
            let actions = self.nodes.get_mut(&name).expect("n").table.reconcile(now);
            count += actions.len();
            for action in actions {
                self.carry_out(&name, action);
            }
        }
        count
    }

    fn carry_out(&mut self, me: &str, action: Action<u32>) {
        match action {
            Action::Start { child, mut entry } => {
                entry.state = State::Running;
                self.publish(me, &child, Some(entry));
            }
            Action::Stop { child, reason: StopReason::QuorumLost } => {
                let Some(mut entry) = self.nodes[me].own.get(&child).cloned() else { return };
                entry.state = State::Suspended;
                self.publish(me, &child, Some(entry));
            }
            Action::Stop { child, .. } | Action::Forget { child } => self.publish(me, &child, None),
            Action::Role { child, role } => {
                self.roles.insert((me.to_owned(), child), role);
            }
            Action::Keep { child, entry } => self.publish(me, &child, Some(entry)),
            Action::Place { child, placement } => {
                let Some(mut entry) = self.nodes[me].own.get(&child).cloned() else { return };
                entry.placement = placement;
                self.publish(me, &child, Some(entry));
            }
            Action::Move { child, to } => {
                let Some(mut entry) = self.nodes[me].own.get(&child).cloned() else { return };
                if !self.talk(me, &to) {
                    self.nodes.get_mut(me).expect("me").table.done([child.as_str()]);
                    return;
                }
                entry.state = State::Moving { to: to.clone() };
                self.publish(me, &child, Some(entry.clone()));
                self.adopt(&to, &child, entry);
                self.publish(me, &child, None);
            }
            Action::Adopt { to, children } => {
                if self.talk(me, &to) {
                    for (child, entry) in children {
                        self.adopt(&to, &child, entry);
                    }
                }
            }
        }
    }

    /// `to` starts `child` unless it runs already there or somewhere it knows of.
    fn adopt(&mut self, to: &str, child: &str, mut entry: Entry<u32>) {
        let table = &self.nodes[to].table;
        if !table.has_quorum() {
            return;
        }
        let running = table.child(child).is_some_and(|known| {
            known.running().any(|_| true) && known.newest.version >= entry.version
        });
        let ended = table
            .child(child)
            .is_some_and(|known| known.is_ended() && known.newest.version >= entry.version);
        if !running && !ended {
            entry.state = State::Running;
            self.publish(to, child, Some(entry));
        }
    }

    fn start(&mut self, via: &str, child: &str) {
        let table = &self.nodes[via].table;
        if table.child(child).is_some() {
            return;
        }
        let owner = Placement::Ring.owner(table.ring(), child).expect("an owner").to_owned();
        if owner != via && !self.talk(via, &owner) || !self.nodes[&owner].table.has_quorum() {
            return;
        }
        self.publish(&owner, child, Some(entry(0, State::Running)));
    }

    fn terminate(&mut self, child: &str) {
        let runner = self
            .nodes
            .iter()
            .find(|(_, m)| m.up && m.own.get(child).is_some_and(|e| e.state.is_live()));
        if let Some((name, member)) = runner {
            let name = name.clone();
            let mut ended = member.own[child].clone();
            ended.version += 1;
            ended.state = State::Ended;
            self.publish(&name, child, Some(ended));
            self.terminated.insert(child.to_owned());
        }
    }

    fn crash(&mut self, name: &str) {
        self.roles.retain(|(node, _), _| node != name);
        let member = self.nodes.get_mut(name).expect("n");
        member.up = false;
        member.own.clear();
        for knowers in self.knowers.values_mut() {
            knowers.remove(name);
        }
        self.connect_all();
    }

    fn restart(&mut self, name: &str) {
        let now = self.now;
        let member = self.nodes.get_mut(name).expect("n");
        member.up = true;
        member.table = Table::new(name, self.config, now);
        self.connect_all();
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// Rounds (time moving on) until nothing more happens.
    fn settle(&mut self) {
        let mut quiet = 0;
        for _ in 0..400 {
            self.advance(Duration::from_millis(500));
            if self.round() == 0 {
                quiet += 1;
                if quiet > 30 {
                    return;
                }
            } else {
                quiet = 0;
            }
        }
        panic!("the hub did not settle");
    }
}

#[derive(Clone, Debug)]
enum Op {
    Start(u8, u8),
    Terminate(u8),
    Crash(u8),
    Restart(u8),
    Cut(u8, u8),
    HealAll,
    Wait(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..5, 0u8..40).prop_map(|(n, c)| Op::Start(n, c)),
        1 => (0u8..40).prop_map(Op::Terminate),
        1 => (0u8..5).prop_map(Op::Crash),
        2 => (0u8..5).prop_map(Op::Restart),
        1 => (0u8..5, 0u8..5).prop_map(|(a, b)| Op::Cut(a, b)),
        1 => Just(Op::HealAll),
        3 => (1u8..10).prop_map(Op::Wait),
    ]
}

/// Every partition strategy, for a hub of five.
fn partition() -> impl Strategy<Value = Partition> {
    prop_oneof![
        2 => Just(Partition::Divergence),
        1 => Just(Partition::Static { min_nodes: 3 }),
        1 => Just(Partition::Majority { cluster_size: 5 }),
        1 => Just(Partition::Dynamic { share: 0.6, window: Duration::from_secs(5) }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    /// After any sequence of starts, terminations, crashes, restarts and partitions, once every
    /// node is back and connected: each child some live node still knows, and that was not
    /// terminated, runs exactly once, on its owner; no terminated child runs.
    #[test]
    fn every_known_child_runs_exactly_once_after_the_last_heal(
        partition in partition(),
        replicas in prop_oneof![2 => Just(1usize), 1 => Just(2), 1 => Just(3)],
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let redundancy = Redundancy::ActivePassive;
        let mut hub = Hub::new(5, TableConfig { partition, replicas, redundancy, ..config() });
        let names = hub.names();
        let mut started = BTreeSet::new();
        for op in ops {
            match op {
                Op::Start(node, child) => {
                    let via = &names[node as usize];
                    if hub.nodes[via].up {
                        let child = format!("c{child}");
                        hub.start(via, &child);
                        started.insert(child);
                    }
                }
                Op::Terminate(child) => hub.terminate(&format!("c{child}")),
                Op::Crash(node) => {
                    // At most one node down at a time.
                    if hub.nodes.values().all(|m| m.up) {
                        hub.crash(&names[node as usize]);
                    }
                }
                Op::Restart(node) => {
                    if !hub.nodes[&names[node as usize]].up {
                        hub.restart(&names[node as usize]);
                    }
                }
                Op::Cut(a, b) => {
                    hub.cut.insert((names[a as usize].clone(), names[b as usize].clone()));
                    hub.connect_all();
                }
                Op::HealAll => {
                    hub.cut.clear();
                    hub.connect_all();
                }
                Op::Wait(tenths) => hub.advance(Duration::from_millis(u64::from(tenths) * 100)),
            }
            hub.round();
            for (name, member) in &hub.nodes {
                let live = member.own.values().any(|e| e.state.is_live());
                prop_assert!(!member.up || member.table.has_quorum() || !live, "{name} runs children without its quorum");
            }
        }
        for name in hub.names() {
            if !hub.nodes[&name].up {
                hub.restart(&name);
            }
        }
        hub.cut.clear();
        hub.connect_all();
        hub.settle();
        let ring = Ring::with_vnodes(names.iter().map(String::as_str), 64);
        for (name, member) in &hub.nodes {
            prop_assert!(member.table.has_quorum(), "{name} without quorum after the heal");
            let suspended: Vec<&String> =
                member.own.iter().filter(|(_, e)| e.state == State::Suspended).map(|(c, _)| c).collect();
            prop_assert!(suspended.is_empty(), "{name} still has {suspended:?} suspended");
        }
        for child in &started {
            let known = hub.knowers.get(child).is_some_and(|k| !k.is_empty());
            let runners: Vec<&String> = hub
                .nodes
                .iter()
                .filter(|(_, m)| m.own.get(child).is_some_and(|e| e.state.is_live()))
                .map(|(name, _)| name)
                .collect();
            if hub.terminated.contains(child) && hub.nodes.values().any(|m| m.table.child(child).is_some_and(Known::is_ended)) {
                prop_assert!(runners.is_empty(), "{child} was terminated and runs on {runners:?}");
                continue;
            }
            if !known {
                continue;
            }
            let owners: Vec<&str> = ring.owners(child, replicas);
            prop_assert_eq!(
                runners.iter().map(|node| node.as_str()).collect::<BTreeSet<_>>(),
                owners.iter().copied().collect::<BTreeSet<_>>(),
                "{} runs on {:?}, not on its owners", child, runners
            );
            if replicas > 1 {
                let active: Vec<&String> = runners
                    .iter()
                    .filter(|node| hub.roles.get(&((**node).clone(), child.clone())) == Some(&Role::Active))
                    .copied()
                    .collect();
                prop_assert_eq!(active.len(), 1, "{} active copies of {}: {:?} ({:?})", active.len(), child, active, hub.roles);
                prop_assert_eq!(active[0].as_str(), owners[0], "{} active off its first owner", child);
                for node in &runners {
                    prop_assert!(hub.roles.contains_key(&((*node).clone(), child.clone())), "{node} never told its role for {child}");
                }
            }
        }
    }
}
