//! The overlay policy's rules, each checked by the exact outputs it emits. (HyParView's own
//! rules are checked in `hyparview/tests.rs`; here it is the policy around it.)

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::*;
use crate::core::{HyParViewConfig, Priority};

/// A peer of these tests: node `name` listening on `port` (a restart moves it to another).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Addr {
    name: u8,
    port: u16,
}

impl Peer for Addr {
    type Name = u8;

    fn name(&self) -> &u8 {
        &self.name
    }
}

fn at(name: u8) -> Addr {
    Addr { name, port: 1 }
}

const ME: Addr = Addr { name: 0, port: 1 };
const TICK: Duration = Duration::from_millis(500);
const LINGER: Duration = Duration::from_secs(2);

fn config(mode: ConnectionMode) -> OverlayConfig {
    OverlayConfig { mode, tick: TICK, linger: LINGER, ..OverlayConfig::default() }
}

/// As [`config`], with HyParView's own retries of lost peers off, for the tests of the
/// policy's retries alone.
fn config_without_core_retries(mode: ConnectionMode) -> OverlayConfig {
    let hyparview = HyParViewConfig { max_lost: 0, ..HyParViewConfig::default() };
    OverlayConfig { hyparview, ..config(mode) }
}

fn drain(overlay: &mut Overlay<Addr>) -> Vec<OverlayOutput<Addr>> {
    std::iter::from_fn(|| overlay.poll_output()).collect()
}

fn send(to: Addr, message: HyParViewMessage<Addr>) -> OverlayOutput<Addr> {
    OverlayOutput::Send { to, message }
}

/// A node in `mode` whose active view holds `active` (each connected), outputs drained.
fn node(now: Instant, mode: ConnectionMode, active: &[Addr]) -> Overlay<Addr> {
    node_with(now, config(mode), active)
}

/// As [`node`], with `config`.
fn node_with(now: Instant, config: OverlayConfig, active: &[Addr]) -> Overlay<Addr> {
    let mut overlay = Overlay::new(ME, config, now);
    for peer in active {
        overlay.handle_up(now, *peer);
        overlay.handle_message(now, *peer, HyParViewMessage::ForwardJoinReply).unwrap();
    }
    drain(&mut overlay);
    assert_eq!(overlay.hyparview().active_view().len(), active.len());
    overlay
}

/// Runs ticks from `now` to `until`, returning every output.
fn ticks(overlay: &mut Overlay<Addr>, now: Instant, until: Instant) -> Vec<OverlayOutput<Addr>> {
    let mut outputs = Vec::new();
    let mut time = now;
    while time <= until {
        overlay.handle_timeout(time);
        outputs.extend(drain(overlay));
        time += TICK;
    }
    outputs
}

/// Managed connections follow the active view: the contact of a join is connected to before
/// JOIN goes (the driver holds the message until the connection opens).
#[test]
fn managed_join_asks_for_a_connection_before_join() {
    let now = Instant::now();
    let mut overlay = Overlay::new(ME, config(ConnectionMode::Managed), now);
    overlay.join(now, at(2));
    assert_eq!(
        drain(&mut overlay),
        vec![
            OverlayOutput::NeighbourUp(at(2)),
            OverlayOutput::Connect(at(2)),
            send(at(2), HyParViewMessage::Join),
        ]
    );
    // Once connected, messages go straight out.
    overlay.handle_connect_result(now, &at(2), ConnectResult::Connected);
    overlay.handle_message(now, at(2), HyParViewMessage::JoinReply { nodes: vec![at(3)] }).unwrap();
    assert_eq!(drain(&mut overlay), vec![]);
    assert_eq!(overlay.route(now, &2), Route::Send);
}

/// Lost-peer retry: a neighbour whose connection went down is lost; on a tick it is
/// connected to again and, when it answers, joined through (the way two halves of a healed
/// partition find each other).
#[test]
fn a_lost_peer_is_retried_and_joined_through_when_it_answers() {
    let now = Instant::now();
    let mut overlay = node(now, ConnectionMode::Managed, &[at(2)]);
    overlay.handle_down(now, &2);
    assert_eq!(drain(&mut overlay), vec![OverlayOutput::NeighbourDown(at(2))]);
    assert!(overlay.lost().contains_key(&at(2)));

    let tick = now + TICK;
    overlay.handle_timeout(tick);
    assert_eq!(drain(&mut overlay), vec![OverlayOutput::Connect(at(2))]);
    overlay.handle_connect_result(tick, &at(2), ConnectResult::Connected);
    assert_eq!(
        drain(&mut overlay),
        vec![OverlayOutput::NeighbourUp(at(2)), send(at(2), HyParViewMessage::Join)]
    );
    assert!(overlay.lost().is_empty());
}

/// A retry that finds nobody keeps the peer lost (it is tried again), and a peer lost for
/// longer than `forget_lost_after` is forgotten by the policy (HyParView's own retries off
/// here: see the next test).
#[test]
fn a_failed_retry_keeps_the_peer_lost_until_it_is_forgotten() {
    let now = Instant::now();
    let config = config_without_core_retries(ConnectionMode::Managed);
    let mut overlay = node_with(now, config, &[at(2)]);
    overlay.handle_down(now, &2);
    drain(&mut overlay);
    overlay.handle_timeout(now + TICK);
    assert_eq!(drain(&mut overlay), vec![OverlayOutput::Connect(at(2))]);
    overlay.handle_connect_result(now + TICK, &at(2), ConnectResult::Failed);
    assert_eq!(drain(&mut overlay), vec![]);
    assert!(overlay.lost().contains_key(&at(2)));
    overlay.handle_timeout(now + TICK * 2);
    assert_eq!(drain(&mut overlay), vec![OverlayOutput::Connect(at(2))]);
    overlay.handle_connect_result(now + TICK * 2, &at(2), ConnectResult::Failed);

    let forgotten = now + OverlayConfig::default().forget_lost_after;
    overlay.handle_timeout(forgotten);
    assert_eq!(drain(&mut overlay), vec![]);
    assert!(overlay.lost().is_empty());
}

/// Healing after any partition: past `forget_lost_after`, HyParView still holds the peer as
/// lost and retries it (a high-priority NEIGHBOUR, for which a connection is opened), with
/// waits of at most `max_retry_backoff`. A failed connection is a failed retry. (Before:
/// once forgotten here, the peer was tried by nothing, and halves of a partition longer than
/// `forget_lost_after`, their views full, never linked again.)
#[test]
fn past_forget_lost_after_hyparview_still_retries_the_lost_peer() {
    let now = Instant::now();
    let mut overlay = node(now, ConnectionMode::Managed, &[at(2)]);
    overlay.handle_down(now, &2);
    drain(&mut overlay);
    let retry = send(at(2), HyParViewMessage::Neighbour { priority: Priority::High });
    let mut time = now;
    let mut retries = Vec::new();
    while time <= now + OverlayConfig::default().forget_lost_after * 2 {
        time += TICK;
        overlay.handle_timeout(time);
        let outputs = drain(&mut overlay);
        if outputs.contains(&OverlayOutput::Connect(at(2))) {
            overlay.handle_connect_result(time, &at(2), ConnectResult::Failed);
            drain(&mut overlay);
        }
        if outputs.contains(&retry) {
            retries.push(time);
        }
    }
    let late = retries.iter().filter(|at| **at > now + OverlayConfig::default().forget_lost_after);
    let gaps = retries.windows(2).map(|pair| pair[1] - pair[0]);
    let max_backoff = HyParViewConfig::default().max_retry_backoff;
    assert!(late.count() >= 9, "{retries:?}");
    assert!(gaps.into_iter().all(|gap| gap <= max_backoff + Duration::from_secs(2)), "{retries:?}");
    assert!(overlay.hyparview().lost().any(|peer| *peer == at(2)));
}

/// Lost peers are retried one per tick, round robin, each in turn, also when the one tried
/// last has left the lost set. (Regression: the next one was taken as the second at or
/// after the last one tried, which skipped a peer whenever the last one had left.)
#[test]
fn lost_peers_are_retried_one_per_tick_in_turn() {
    let now = Instant::now();
    let config = config_without_core_retries(ConnectionMode::Managed);
    let mut overlay = node_with(now, config, &[at(2), at(3), at(4)]);
    for name in [2, 3, 4] {
        overlay.handle_down(now, &name);
    }
    drain(&mut overlay);
    overlay.handle_timeout(now + TICK);
    assert_eq!(drain(&mut overlay), vec![OverlayOutput::Connect(at(2))]);
    // 2 answers and is joined through: no longer lost.
    overlay.handle_connect_result(now + TICK, &at(2), ConnectResult::Connected);
    drain(&mut overlay);
    assert!(!overlay.lost().contains_key(&at(2)));
    overlay.handle_timeout(now + TICK * 2);
    assert_eq!(drain(&mut overlay), vec![OverlayOutput::Connect(at(3))]);
    overlay.handle_timeout(now + TICK * 3);
    assert_eq!(drain(&mut overlay), vec![OverlayOutput::Connect(at(4))]);
}

/// Stale-address eviction: a node that connects from another address (it restarted on
/// another port) replaces its old address in the views, and, isolated then, this node joins
/// through the new one.
#[test]
fn a_stale_address_is_evicted_when_its_node_connects_from_another() {
    let now = Instant::now();
    let old = at(2);
    let new = Addr { name: 2, port: 2 };
    let mut overlay = node(now, ConnectionMode::Existing, &[old]);
    overlay.handle_down(now, &2);
    drain(&mut overlay);
    assert!(overlay.lost().contains_key(&old));
    overlay.handle_up(now, new);
    assert_eq!(
        drain(&mut overlay),
        vec![OverlayOutput::NeighbourUp(new), send(new, HyParViewMessage::Join)]
    );
    assert!(overlay.lost().is_empty(), "the old address is no longer lost");
    assert!(!overlay.hyparview().active_view().contains(&old));
}

/// Stale-address eviction: an overlay message from a node's new address drops its old one
/// from the views, and a message HyParView addresses to an old address of a connected node
/// is dropped instead of sent (the new address would answer as another peer).
#[test]
fn a_message_from_a_new_address_evicts_the_old_one() {
    let now = Instant::now();
    let old = at(2);
    let new = Addr { name: 2, port: 2 };
    let mut overlay = node(now, ConnectionMode::Managed, &[old, at(3)]);
    overlay.handle_message(now, new, HyParViewMessage::ForwardJoinReply).unwrap();
    assert_eq!(
        drain(&mut overlay),
        vec![OverlayOutput::NeighbourUp(new)],
        "the old address leaves quietly: the trees keep the node under its name"
    );
    let active: Vec<Addr> = overlay.hyparview().active_view().iter().copied().collect();
    assert_eq!(active, vec![new, at(3)]);

    // Over existing connections, a send to an old address evicts it.
    let mut overlay = node(now, ConnectionMode::Existing, &[at(3)]);
    overlay.handle_up(now, new);
    drain(&mut overlay);
    overlay
        .handle_message(now, at(3), HyParViewMessage::ShuffleReply { nodes: vec![old] })
        .unwrap();
    assert!(overlay.hyparview().passive_view().contains(&old));
    overlay.handle_down(now, &3);
    // The repair asks the only passive peer, `old`: the message is dropped and `old` evicted.
    assert_eq!(drain(&mut overlay), vec![OverlayOutput::NeighbourDown(at(3))]);
    assert!(!overlay.hyparview().passive_view().contains(&old));
}

/// Rejoin when isolated: a node whose every peer failed joins through its first contact on
/// the next tick (managed: connecting to it first).
#[test]
fn an_isolated_node_rejoins_through_its_first_contact() {
    let now = Instant::now();
    let mut overlay =
        Overlay::new(ME, OverlayConfig { max_lost: 0, ..config(ConnectionMode::Managed) }, now);
    overlay.join(now, at(2));
    overlay.handle_connect_result(now, &at(2), ConnectResult::Connected);
    drain(&mut overlay);
    overlay.handle_down(now, &2);
    assert_eq!(drain(&mut overlay), vec![OverlayOutput::NeighbourDown(at(2))]);
    assert!(overlay.hyparview().is_isolated() && overlay.lost().is_empty());

    overlay.handle_timeout(now + TICK);
    assert_eq!(drain(&mut overlay), vec![OverlayOutput::Connect(at(2))]);
    overlay.handle_connect_result(now + TICK, &at(2), ConnectResult::Connected);
    assert_eq!(
        drain(&mut overlay),
        vec![OverlayOutput::NeighbourUp(at(2)), send(at(2), HyParViewMessage::Join)]
    );
}

/// Rejoin on up (existing connections): a lost peer that connects again is joined through
/// at once, not on its turn among the retries; a connected node that is not lost is not.
#[test]
fn over_existing_connections_a_lost_peer_that_connects_is_joined_through() {
    let now = Instant::now();
    let mut overlay = node(now, ConnectionMode::Existing, &[at(2), at(3)]);
    overlay.handle_down(now, &3);
    assert_eq!(drain(&mut overlay), vec![OverlayOutput::NeighbourDown(at(3))]);
    overlay.handle_up(now, at(4));
    assert_eq!(drain(&mut overlay), vec![], "4 was never lost and this node is not isolated");
    overlay.handle_up(now, at(3));
    assert_eq!(
        drain(&mut overlay),
        vec![OverlayOutput::NeighbourUp(at(3)), send(at(3), HyParViewMessage::Join)]
    );
}

/// Offer (existing connections): with room in the active view and nothing in the passive
/// view to fill it, connected nodes outside the views are offered to HyParView on a tick,
/// and its repair asks one to be a neighbour.
#[test]
fn over_existing_connections_connected_nodes_fill_an_empty_passive_view() {
    let now = Instant::now();
    let mut overlay = node(now, ConnectionMode::Existing, &[at(2)]);
    overlay.handle_up(now, at(5));
    drain(&mut overlay);
    assert!(overlay.hyparview().passive_view().is_empty());
    let outputs = ticks(&mut overlay, now + TICK, now + TICK * 4);
    assert!(
        outputs.contains(&send(at(5), HyParViewMessage::Neighbour { priority: Priority::High }))
            || outputs
                .contains(&send(at(5), HyParViewMessage::Neighbour { priority: Priority::Low })),
        "{outputs:?}"
    );
}

/// Idle close (managed): a connection to a node outside the active view closes once it has
/// carried no overlay message for `linger`; a neighbour's never does.
#[test]
fn an_idle_connection_outside_the_active_view_is_closed_after_its_linger() {
    let now = Instant::now();
    let mut overlay = node(now, ConnectionMode::Managed, &[at(2)]);
    overlay.handle_up(now, at(7));
    assert_eq!(drain(&mut overlay), vec![]);
    let before = ticks(&mut overlay, now + TICK, now + LINGER - TICK);
    assert!(!before.iter().any(|o| matches!(o, OverlayOutput::Disconnect(_))), "{before:?}");
    overlay.handle_timeout(now + LINGER);
    assert_eq!(drain(&mut overlay), vec![OverlayOutput::Disconnect(7)]);
    let after = ticks(&mut overlay, now + LINGER + TICK, now + LINGER * 3);
    assert!(!after.contains(&OverlayOutput::Disconnect(2)), "{after:?}");
}

/// Idle close (managed): a peer that drops this node from its active view (DISCONNECT)
/// loses its connection at once; over existing connections the connection stays.
#[test]
fn disconnect_closes_the_connection_only_when_managed() {
    let now = Instant::now();
    let mut overlay = node(now, ConnectionMode::Managed, &[at(2), at(3)]);
    overlay.handle_message(now, at(2), HyParViewMessage::Disconnect).unwrap();
    assert_eq!(
        drain(&mut overlay),
        vec![OverlayOutput::Disconnect(2), OverlayOutput::NeighbourDown(at(2))]
    );
    let mut overlay = node(now, ConnectionMode::Existing, &[at(2), at(3)]);
    overlay.handle_message(now, at(2), HyParViewMessage::Disconnect).unwrap();
    assert_eq!(drain(&mut overlay), vec![OverlayOutput::NeighbourDown(at(2))]);
}

/// No one-sided links (issue 15, point 5): a tree's traffic from a connected node that is
/// not a neighbour (it holds a link to this node alone, say after a NEIGHBOUR acceptance
/// this node never saw) is answered with DISCONNECT, in both modes, so that the peer drops
/// the link and stops sending its tree over it; a neighbour's traffic, or a sender this node
/// asked to be its neighbour, changes nothing. (Before: the tree ignored the message and the
/// peer kept its link for good over a full mesh.)
#[test]
fn tree_traffic_from_a_non_neighbour_is_answered_with_disconnect() {
    let now = Instant::now();
    for mode in [ConnectionMode::Managed, ConnectionMode::Existing] {
        let mut overlay = node(now, mode, &[at(2)]);
        overlay.handle_up(now, at(3));
        drain(&mut overlay);
        overlay.handle_neighbour_traffic(now, &3);
        assert_eq!(
            drain(&mut overlay),
            vec![send(at(3), HyParViewMessage::Disconnect)],
            "{mode:?}"
        );
        overlay.handle_neighbour_traffic(now, &2);
        assert_eq!(drain(&mut overlay), vec![], "{mode:?}: a neighbour's traffic");
        overlay.handle_neighbour_traffic(now, &9);
        assert_eq!(drain(&mut overlay), vec![], "{mode:?}: no connection to answer over");
        assert_eq!(overlay.hyparview().active_view(), &BTreeSet::from([at(2)]), "{mode:?}");
    }
}

/// No silent drops (issue 15, point 7): a HyParView message to a peer with no connection,
/// when none may be opened (past `max_connecting`, managed) or over existing connections
/// (where the peer is failed), is counted for the driver's stats.
#[test]
fn overlay_messages_with_no_connection_are_counted() {
    let now = Instant::now();
    let walk = HyParViewMessage::ForwardJoin { joiner: at(7), ttl: 0 };
    let bounded = OverlayConfig { max_connecting: 0, ..config(ConnectionMode::Managed) };
    let mut overlay = node_with(now, bounded, &[at(2)]);
    overlay.handle_message(now, at(2), walk.clone()).unwrap();
    assert_eq!(drain(&mut overlay), vec![OverlayOutput::NeighbourUp(at(7))]);
    assert_eq!(overlay.dropped_unroutable(), 1, "the FORWARD_JOIN_REPLY to 7");

    let mut overlay = node(now, ConnectionMode::Existing, &[at(2)]);
    overlay.handle_message(now, at(2), walk).unwrap();
    drain(&mut overlay);
    assert_eq!(overlay.dropped_unroutable(), 1, "the FORWARD_JOIN_REPLY to 7");
    assert!(overlay.lost().contains_key(&at(7)), "and 7 failed");

    let mut overlay = node(now, ConnectionMode::Managed, &[at(2)]);
    overlay
        .handle_message(now, at(2), HyParViewMessage::ForwardJoin { joiner: at(7), ttl: 0 })
        .unwrap();
    assert_eq!(overlay.dropped_unroutable(), 0, "a connection is opened for it");
}

/// Routing a tree's message: to a connected node, send; to an unconnected neighbour, connect
/// first (managed) or fail it (existing connections); to an unknown node, drop.
#[test]
fn a_tree_message_is_routed_by_the_connections() {
    let now = Instant::now();
    let mut overlay = node(now, ConnectionMode::Managed, &[at(2)]);
    assert_eq!(overlay.route(now, &2), Route::Send);
    assert_eq!(overlay.route(now, &9), Route::Drop);
    overlay.handle_connections(now, []);
    assert_eq!(drain(&mut overlay), vec![OverlayOutput::NeighbourDown(at(2))]);

    let mut overlay = node(now, ConnectionMode::Managed, &[at(2)]);
    overlay.handle_message(now, at(3), HyParViewMessage::ForwardJoinReply).unwrap();
    drain(&mut overlay);
    assert_eq!(overlay.route(now, &3), Route::Send);
    assert_eq!(drain(&mut overlay), vec![OverlayOutput::Connect(at(3))]);

    let mut overlay = node(now, ConnectionMode::Existing, &[at(2)]);
    overlay.handle_message(now, at(3), HyParViewMessage::ForwardJoinReply).unwrap();
    drain(&mut overlay);
    assert_eq!(overlay.route(now, &3), Route::Drop);
    assert_eq!(drain(&mut overlay), vec![OverlayOutput::NeighbourDown(at(3))]);
    assert!(overlay.lost().contains_key(&at(3)));
}

/// Another node answering at a peer's address: the peer leaves the views (not lost: it is
/// gone from there for good) and the other node's connection closes unless it is a
/// neighbour.
#[test]
fn another_node_at_a_peers_address_removes_the_peer() {
    let now = Instant::now();
    let mut overlay = node(now, ConnectionMode::Managed, &[at(2)]);
    overlay.handle_message(now, at(3), HyParViewMessage::ForwardJoinReply).unwrap();
    overlay.route(now, &3);
    drain(&mut overlay);
    overlay.handle_connect_result(now, &at(3), ConnectResult::OtherNode(8));
    assert_eq!(
        drain(&mut overlay),
        vec![OverlayOutput::Disconnect(8), OverlayOutput::NeighbourDown(at(3))]
    );
    assert!(overlay.lost().is_empty());
}

/// A cluster of managed overlays in a small deterministic simulation: connections open at
/// once unless a partition separates the two nodes, and a partition takes every connection
/// across it down on both sides (as the transport's heartbeats would).
struct Cluster {
    nodes: Vec<Overlay<usize>>,
    connections: std::collections::BTreeSet<(usize, usize)>,
    /// The nodes below this index are cut from the others (0: no partition).
    split: usize,
    now: Instant,
}

impl Cluster {
    fn new(n: usize, seed: u64, now: Instant) -> Cluster {
        let nodes = (0..n)
            .map(|id| {
                let hyparview =
                    HyParViewConfig { seed: seed ^ id as u64, ..HyParViewConfig::default() };
                Overlay::new(
                    id,
                    OverlayConfig { hyparview, ..config(ConnectionMode::Managed) },
                    now,
                )
            })
            .collect();
        Cluster { nodes, connections: std::collections::BTreeSet::new(), split: 0, now }
    }

    fn cut(&self, a: usize, b: usize) -> bool {
        (a < self.split) != (b < self.split)
    }

    fn pair(a: usize, b: usize) -> (usize, usize) {
        (a.min(b), a.max(b))
    }

    /// Moves every output until none is left.
    fn settle(&mut self) {
        let now = self.now;
        let mut quiet = false;
        while !quiet {
            quiet = true;
            for id in 0..self.nodes.len() {
                while let Some(output) = self.nodes[id].poll_output() {
                    quiet = false;
                    match output {
                        OverlayOutput::Send { to, message } => {
                            if self.connections.contains(&Self::pair(id, to)) {
                                let _ = self.nodes[to].handle_message(now, id, message);
                            }
                        }
                        OverlayOutput::Connect(to) if self.cut(id, to) => {
                            self.nodes[id].handle_connect_result(now, &to, ConnectResult::Failed);
                        }
                        OverlayOutput::Connect(to) => {
                            self.connections.insert(Self::pair(id, to));
                            self.nodes[id].handle_connect_result(
                                now,
                                &to,
                                ConnectResult::Connected,
                            );
                            self.nodes[to].handle_up(now, id);
                        }
                        OverlayOutput::Disconnect(to) => {
                            if self.connections.remove(&Self::pair(id, to)) {
                                self.nodes[id].handle_down(now, &to);
                                self.nodes[to].handle_down(now, &id);
                            }
                        }
                        OverlayOutput::NeighbourUp(_) | OverlayOutput::NeighbourDown(_) => {}
                    }
                }
            }
        }
    }

    fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.now += Duration::from_millis(50);
            for node in &mut self.nodes {
                if node.poll_timeout() <= self.now {
                    node.handle_timeout(self.now);
                }
            }
            self.settle();
        }
    }

    fn partition(&mut self, split: usize) {
        self.split = split;
        let across: Vec<(usize, usize)> =
            self.connections.iter().copied().filter(|(a, b)| self.cut(*a, *b)).collect();
        for (a, b) in across {
            self.connections.remove(&(a, b));
            self.nodes[a].handle_down(self.now, &b);
            self.nodes[b].handle_down(self.now, &a);
        }
        self.settle();
    }

    /// The nodes reachable from node 0 over active views.
    fn component_of_first(&self) -> std::collections::BTreeSet<usize> {
        let mut seen = std::collections::BTreeSet::from([0]);
        let mut queue = vec![0];
        while let Some(id) = queue.pop() {
            for peer in self.nodes[id].hyparview().active_view() {
                if seen.insert(*peer) {
                    queue.push(*peer);
                }
            }
        }
        seen
    }
}

/// Lost peers returning, simulated: six managed overlays join through node 0, a partition
/// (within `forget_lost_after`) takes every connection across it down, so each side's views
/// lose the other; once it heals, the lost-peer retries must make one overlay again, for
/// every seed and split tried.
#[test]
fn lost_peers_make_one_overlay_again_after_a_partition_heals() {
    for seed in 0..40 {
        let now = Instant::now();
        let mut cluster = Cluster::new(6, seed, now);
        for id in 1..6 {
            cluster.nodes[id].join(cluster.now, 0);
            cluster.settle();
            cluster.run_for(Duration::from_millis(200));
        }
        cluster.run_for(Duration::from_secs(5));
        assert_eq!(cluster.component_of_first().len(), 6, "seed {seed}: joined");
        let split = 1 + (seed as usize % 5);
        cluster.partition(split);
        cluster.run_for(Duration::from_secs(10));
        for id in 0..6 {
            let across =
                cluster.nodes[id].hyparview().active_view().iter().any(|p| cluster.cut(id, *p));
            assert!(!across, "seed {seed}: node {id} holds a neighbour across the partition");
        }
        cluster.partition(0);
        cluster.run_for(Duration::from_secs(20));
        assert_eq!(cluster.component_of_first().len(), 6, "seed {seed}, split {split}: healed");
    }
}

/// Healing after any partition, with the driver's policy: sixteen managed overlays (halves of
/// eight, whose active views of five fill up) are partitioned for longer than
/// `forget_lost_after`, so the policy has given up on the other half; once the partition
/// heals, HyParView's retries of its lost peers (through connections the policy opens) make
/// one overlay again within 60 s, for every seed tried. (Before HyParView kept lost peers,
/// these seeds stayed two overlays.)
#[test]
fn saturated_halves_link_again_after_a_partition_longer_than_forget_lost_after() {
    for seed in 0..8 {
        let now = Instant::now();
        let mut cluster = Cluster::new(16, seed, now);
        for id in 1..16 {
            cluster.nodes[id].join(cluster.now, id / 2);
            cluster.settle();
            cluster.run_for(Duration::from_millis(200));
        }
        cluster.run_for(Duration::from_secs(20));
        assert_eq!(cluster.component_of_first().len(), 16, "seed {seed}: joined");
        cluster.partition(8);
        cluster.run_for(OverlayConfig::default().forget_lost_after + Duration::from_secs(30));
        assert!(cluster.component_of_first().len() <= 8, "seed {seed}: partitioned");
        cluster.partition(0);
        cluster.run_for(Duration::from_secs(60));
        assert_eq!(cluster.component_of_first().len(), 16, "seed {seed}: healed");
    }
}
