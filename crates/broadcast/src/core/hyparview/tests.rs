//! HyParView's rules, each checked by the exact messages it emits. "§4.x" are sections of the
//! HyParView paper (Leitão, Pereira, Rodrigues, DSN 2007).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

type Core = HyParView<u8>;

fn config() -> HyParViewConfig {
    HyParViewConfig { active_capacity: 3, passive_capacity: 4, ..HyParViewConfig::default() }
}

fn drain(core: &mut Core) -> Vec<HyParViewOutput<u8>> {
    std::iter::from_fn(|| core.poll_output()).collect()
}

fn send(to: u8, message: HyParViewMessage<u8>) -> HyParViewOutput<u8> {
    HyParViewOutput::Send { to, message }
}

fn set(peers: &[u8]) -> BTreeSet<u8> {
    peers.iter().copied().collect()
}

/// Node 0 with the given active and passive views, outputs drained.
fn node(now: Instant, config: HyParViewConfig, active: &[u8], passive: &[u8]) -> Core {
    let mut core = HyParView::new(0, config, now);
    for peer in active {
        core.handle_message(now, *peer, HyParViewMessage::ForwardJoinReply).unwrap();
    }
    core.handle_message(now, 99, HyParViewMessage::ShuffleReply { nodes: passive.to_vec() })
        .unwrap();
    drain(&mut core);
    assert_eq!(core.active_view(), &set(active));
    assert_eq!(core.passive_view(), &set(passive));
    core
}

/// §4.2: the joiner takes its contact as a neighbour at once and sends it JOIN.
#[test]
fn joiner_adds_its_contact_and_sends_join() {
    let now = Instant::now();
    let mut core = HyParView::new(0u8, config(), now);
    assert_eq!(core.join(now, 0), Err(HyParViewError::ContactIsSelf));
    assert_eq!(core.join(now, 5), Ok(()));
    assert_eq!(
        drain(&mut core),
        vec![HyParViewOutput::NeighbourUp(5), send(5, HyParViewMessage::Join)]
    );
}

/// §4.2 JOIN at the contact: the joiner enters the active view and a FORWARD_JOIN walk of
/// length ARWL starts through every other active peer; then (beyond the paper) JOIN_REPLY
/// gives the joiner samples of both views. A contact that knows no other peer sends none.
#[test]
fn contact_takes_the_joiner_and_starts_a_walk_per_neighbour() {
    let now = Instant::now();
    let mut core = node(now, config(), &[1, 2], &[3]);
    core.handle_message(now, 7, HyParViewMessage::Join).unwrap();
    let walk = HyParViewMessage::ForwardJoin { joiner: 7, ttl: 6 };
    let mut outputs = drain(&mut core);
    let Some(HyParViewOutput::Send { to: 7, message: HyParViewMessage::JoinReply { nodes } }) =
        outputs.pop()
    else {
        panic!("no JOIN_REPLY last: {outputs:?}");
    };
    assert_eq!(
        outputs,
        vec![HyParViewOutput::NeighbourUp(7), send(1, walk.clone()), send(2, walk)]
    );
    assert_eq!(nodes.into_iter().collect::<BTreeSet<_>>(), set(&[1, 2, 3]));

    let mut alone = HyParView::new(0u8, config(), now);
    alone.handle_message(now, 7, HyParViewMessage::Join).unwrap();
    assert_eq!(drain(&mut alone), vec![HyParViewOutput::NeighbourUp(7)]);
}

/// §4.2 FORWARD_JOIN with time-to-live 0: the walk ends here; the joiner enters the active
/// view and is told so (FORWARD_JOIN_REPLY), which makes the link symmetric.
#[test]
fn walk_ends_in_the_active_view_when_its_ttl_is_spent() {
    let now = Instant::now();
    let mut core = node(now, config(), &[1, 2], &[]);
    core.handle_message(now, 1, HyParViewMessage::ForwardJoin { joiner: 7, ttl: 0 }).unwrap();
    assert_eq!(
        drain(&mut core),
        vec![HyParViewOutput::NeighbourUp(7), send(7, HyParViewMessage::ForwardJoinReply)]
    );
}

/// §4.2: a walk also ends where the active view holds only the sender: nowhere to go on.
#[test]
fn walk_ends_where_it_cannot_go_on() {
    let now = Instant::now();
    let mut core = node(now, config(), &[1], &[]);
    core.handle_message(now, 1, HyParViewMessage::ForwardJoin { joiner: 7, ttl: 5 }).unwrap();
    assert_eq!(
        drain(&mut core),
        vec![HyParViewOutput::NeighbourUp(7), send(7, HyParViewMessage::ForwardJoinReply)]
    );
}

/// JOIN_REPLY (beyond the paper): the contact answers a JOIN with samples of its views, which
/// the joiner keeps as passive. Without it a joiner's passive view stays empty until its first
/// shuffle, and a node whose contact and walk ends fail together before then knows no live
/// peer: it stays alone for good, and so does a group of such nodes (the driver test
/// `broadcasts_after_four_nodes_crash_reach_every_live_node` failed about one run in twenty
/// that way). With it, the joiner repairs through its contact's neighbours (§4.3: high
/// priority, as its active view is empty, so they cannot refuse).
#[test]
fn a_joiner_whose_contact_fails_at_once_repairs_through_the_contacts_neighbours() {
    let now = Instant::now();
    let mut contact = node(now, config(), &[1, 2], &[3]);
    let mut joiner = HyParView::new(7u8, config(), now);
    joiner.join(now, 0).unwrap();
    drain(&mut joiner);
    contact.handle_message(now, 7, HyParViewMessage::Join).unwrap();
    for output in drain(&mut contact) {
        if let HyParViewOutput::Send { to: 7, message } = output {
            joiner.handle_message(now, 0, message).unwrap();
        }
    }
    drain(&mut joiner);
    assert_eq!(joiner.passive_view(), &set(&[1, 2, 3]), "the contact's active and passive peers");

    // The contact crashes before any walk ends at the joiner, and before its first shuffle.
    joiner.peer_failed(now, &0);
    let high = HyParViewMessage::Neighbour { priority: Priority::High };
    let outputs = drain(&mut joiner);
    assert_eq!(outputs.len(), 4, "{outputs:?}");
    assert_eq!(outputs[0], HyParViewOutput::NeighbourDown(0));
    for peer in [1, 2, 3] {
        assert!(outputs.contains(&send(peer, high.clone())), "{outputs:?}");
    }
}

/// §4.2: at hop PRWL the joiner is dropped into the passive view, and the walk goes on with
/// one hop less to an active peer other than the sender.
#[test]
fn walk_drops_the_joiner_into_the_passive_view_at_prwl() {
    let now = Instant::now();
    let mut core = node(now, config(), &[1, 2], &[]);
    core.handle_message(now, 1, HyParViewMessage::ForwardJoin { joiner: 7, ttl: 3 }).unwrap();
    assert_eq!(
        drain(&mut core),
        vec![send(2, HyParViewMessage::ForwardJoin { joiner: 7, ttl: 2 })]
    );
    assert_eq!(core.passive_view(), &set(&[7]));
    core.handle_message(now, 1, HyParViewMessage::ForwardJoin { joiner: 8, ttl: 4 }).unwrap();
    assert_eq!(
        drain(&mut core),
        vec![send(2, HyParViewMessage::ForwardJoin { joiner: 8, ttl: 3 })]
    );
    assert_eq!(core.passive_view(), &set(&[7]), "not at PRWL: not kept");
}

/// §4.2 `addNodeActiveView`: a full active view drops a random peer to make room, sending it
/// DISCONNECT and keeping it as passive.
#[test]
fn full_active_view_makes_room_by_disconnecting_a_peer() {
    let now = Instant::now();
    let mut core = node(now, HyParViewConfig { active_capacity: 1, ..config() }, &[1], &[]);
    core.handle_message(now, 7, HyParViewMessage::Join).unwrap();
    assert_eq!(
        drain(&mut core),
        vec![
            HyParViewOutput::NeighbourDown(1),
            send(1, HyParViewMessage::Disconnect),
            HyParViewOutput::NeighbourUp(7),
            // The dropped peer is passive now, and so among the samples for the joiner.
            send(7, HyParViewMessage::JoinReply { nodes: vec![1] }),
        ]
    );
    assert_eq!(core.active_view(), &set(&[7]));
    assert_eq!(core.passive_view(), &set(&[1]));
}

/// §4.3 DISCONNECT: the peer leaves the active view for the passive one.
#[test]
fn disconnect_moves_the_peer_to_the_passive_view() {
    let now = Instant::now();
    let mut core = node(now, config(), &[1, 2], &[]);
    core.handle_message(now, 1, HyParViewMessage::Disconnect).unwrap();
    assert_eq!(drain(&mut core), vec![HyParViewOutput::NeighbourDown(1)]);
    assert_eq!(core.active_view(), &set(&[2]));
    assert_eq!(core.passive_view(), &set(&[1]));
    core.handle_message(now, 5, HyParViewMessage::Disconnect).unwrap();
    assert_eq!(drain(&mut core), vec![], "not a neighbour: nothing to do");
}

/// §4.3 NEIGHBOUR: a low-priority request is accepted only with room; a high-priority one
/// always, making room if needed.
#[test]
fn neighbour_request_priority_decides_acceptance_when_full() {
    let now = Instant::now();
    let mut core = node(now, HyParViewConfig { active_capacity: 1, ..config() }, &[1], &[]);
    core.handle_message(now, 7, HyParViewMessage::Neighbour { priority: Priority::Low }).unwrap();
    let refusal = HyParViewMessage::NeighbourReply { accepted: false, nodes: vec![1] };
    let walk = HyParViewMessage::FindNeighbour { requester: 7, ttl: 6 };
    assert_eq!(drain(&mut core), vec![send(1, walk), send(7, refusal)]);
    core.handle_message(now, 7, HyParViewMessage::Neighbour { priority: Priority::High }).unwrap();
    assert_eq!(
        drain(&mut core),
        vec![
            HyParViewOutput::NeighbourDown(1),
            send(1, HyParViewMessage::Disconnect),
            HyParViewOutput::NeighbourUp(7),
            send(7, HyParViewMessage::NeighbourReply { accepted: true, nodes: vec![] }),
        ]
    );
    let mut roomy = node(now, config(), &[1], &[]);
    roomy.handle_message(now, 7, HyParViewMessage::Neighbour { priority: Priority::Low }).unwrap();
    assert_eq!(
        drain(&mut roomy),
        vec![
            HyParViewOutput::NeighbourUp(7),
            send(7, HyParViewMessage::NeighbourReply { accepted: true, nodes: vec![] })
        ]
    );
}

/// Beyond the paper, FIND_NEIGHBOUR: a node with room that the walk reaches asks the
/// requester to be its neighbour (keeping it as passive meanwhile); a full one passes the walk
/// on, to a peer other than the sender and the requester, until its time-to-live is spent.
#[test]
fn find_neighbour_walk_ends_at_a_node_with_room() {
    let now = Instant::now();
    let mut roomy = node(now, config(), &[1, 2], &[]);
    roomy.handle_message(now, 1, HyParViewMessage::FindNeighbour { requester: 9, ttl: 3 }).unwrap();
    // Two peers, fewer than `high_priority_below`: a high-priority request.
    assert_eq!(
        drain(&mut roomy),
        vec![send(9, HyParViewMessage::Neighbour { priority: Priority::High })]
    );
    assert_eq!(roomy.passive_view(), &set(&[9]));

    let mut full = node(now, config(), &[1, 2, 3], &[]);
    full.handle_message(now, 1, HyParViewMessage::FindNeighbour { requester: 3, ttl: 3 }).unwrap();
    assert_eq!(drain(&mut full), vec![], "the requester is a neighbour already");
    full.handle_message(now, 1, HyParViewMessage::FindNeighbour { requester: 9, ttl: 3 }).unwrap();
    let outputs = drain(&mut full);
    let [
        HyParViewOutput::Send {
            to,
            message: HyParViewMessage::FindNeighbour { requester: 9, ttl: 2 },
        },
    ] = outputs[..]
    else {
        panic!("expected the walk passed on, got {outputs:?}");
    };
    assert!(to == 2 || to == 3);
    full.handle_message(now, 1, HyParViewMessage::FindNeighbour { requester: 9, ttl: 0 }).unwrap();
    assert_eq!(drain(&mut full), vec![], "walk over");
}

/// §4.3: a failed active peer is replaced from the passive view; with the active view empty
/// the NEIGHBOUR request is high priority. An accepting reply makes the candidate a
/// neighbour.
#[test]
fn failed_peer_is_replaced_from_the_passive_view() {
    let now = Instant::now();
    let mut core = node(now, HyParViewConfig { active_capacity: 1, ..config() }, &[1], &[4]);
    core.peer_failed(now, &1);
    assert_eq!(
        drain(&mut core),
        vec![
            HyParViewOutput::NeighbourDown(1),
            send(4, HyParViewMessage::Neighbour { priority: Priority::High })
        ]
    );
    assert_eq!(core.passive_view(), &set(&[4]), "kept until it answers");
    core.handle_message(now, 4, HyParViewMessage::NeighbourReply { accepted: true, nodes: vec![] })
        .unwrap();
    assert_eq!(drain(&mut core), vec![HyParViewOutput::NeighbourUp(4)]);
    assert_eq!(core.active_view(), &set(&[4]));
    assert_eq!(core.passive_view(), &set(&[]));
}

/// §4.3: a candidate that refuses stays passive, and (beyond the paper) its refusal brings
/// samples of its views, which join the passive view; the next repair tick asks again. A
/// candidate that does not answer within `neighbour_timeout` counts as failed: it leaves the
/// passive view and another is asked at once.
#[test]
fn refused_or_silent_candidates_make_way_for_others() {
    let now = Instant::now();
    let config = HyParViewConfig { active_capacity: 2, high_priority_below: 1, ..config() };
    let mut core = node(now, config.clone(), &[1], &[4]);
    let tick = now + config.repair_interval;
    core.handle_timeout(tick);
    assert_eq!(
        drain(&mut core),
        vec![send(4, HyParViewMessage::Neighbour { priority: Priority::Low })]
    );
    let refusal = HyParViewMessage::NeighbourReply { accepted: false, nodes: vec![6, 0, 1] };
    core.handle_message(tick, 4, refusal).unwrap();
    assert_eq!(drain(&mut core), vec![], "no retry before the next tick");
    assert_eq!(core.passive_view(), &set(&[4, 6]), "this node and its neighbours are not kept");

    let next_tick = tick + config.repair_interval;
    core.handle_timeout(next_tick);
    let outputs = drain(&mut core);
    let [
        HyParViewOutput::Send {
            to: asked,
            message: HyParViewMessage::Neighbour { priority: Priority::Low },
        },
    ] = outputs[..]
    else {
        panic!("expected one low-priority NEIGHBOUR, got {outputs:?}");
    };
    assert!(asked == 4 || asked == 6);

    core.handle_timeout(next_tick + config.neighbour_timeout);
    let other = if asked == 4 { 6 } else { 4 };
    assert_eq!(
        drain(&mut core),
        vec![send(other, HyParViewMessage::Neighbour { priority: Priority::Low })]
    );
    assert_eq!(core.passive_view(), &set(&[other]), "the silent one is dropped");
    assert_eq!(core.lost().copied().collect::<Vec<_>>(), vec![asked], "and kept as lost");
    let late = HyParViewMessage::NeighbourReply { accepted: false, nodes: vec![] };
    assert_eq!(core.handle_message(now, asked, late), Err(HyParViewError::UnsolicitedReply));
    assert_eq!(core.active_view(), &set(&[1]));
}

/// No one-sided links (beyond the paper): an acceptance that arrives after this node gave up
/// on its request means the peer holds this node as a neighbour. With room, this node takes
/// it (and it is no longer lost); with a full view, it answers DISCONNECT, which undoes the
/// peer's side. (Before: the late acceptance was ignored, and the peer kept a link this node
/// did not hold.)
#[test]
fn a_late_acceptance_is_taken_with_room_and_undone_without() {
    let now = Instant::now();
    let accept = HyParViewMessage::NeighbourReply { accepted: true, nodes: vec![] };
    let mut roomy = node(now, config(), &[1], &[]);
    roomy.handle_message(now, 7, accept.clone()).unwrap();
    assert_eq!(drain(&mut roomy), vec![HyParViewOutput::NeighbourUp(7)]);
    assert_eq!(roomy.active_view(), &set(&[1, 7]));
    roomy.handle_message(now, 7, accept.clone()).unwrap();
    assert_eq!(drain(&mut roomy), vec![], "a neighbour already: nothing to do");

    let mut full = node(now, config(), &[1, 2, 3], &[]);
    full.handle_message(now, 7, accept).unwrap();
    assert_eq!(drain(&mut full), vec![send(7, HyParViewMessage::Disconnect)]);
    assert_eq!(full.active_view(), &set(&[1, 2, 3]));
}

/// No one-sided links (beyond the paper): walks and shuffles travel only over active links,
/// so one from a peer that is not a neighbour (nor a candidate this node asked) comes from a
/// peer holding a link this node does not: it is answered with DISCONNECT, and still handled.
/// A shuffle reply, which goes straight to the origin, is not.
#[test]
fn walks_and_shuffles_from_a_non_neighbour_are_answered_with_disconnect() {
    let now = Instant::now();
    let mut core = node(now, config(), &[1, 2], &[]);
    core.handle_message(now, 5, HyParViewMessage::ForwardJoin { joiner: 7, ttl: 0 }).unwrap();
    assert_eq!(
        drain(&mut core),
        vec![
            send(5, HyParViewMessage::Disconnect),
            HyParViewOutput::NeighbourUp(7),
            send(7, HyParViewMessage::ForwardJoinReply),
        ]
    );
    core.handle_message(now, 5, HyParViewMessage::Shuffle { origin: 9, ttl: 1, nodes: vec![9] })
        .unwrap();
    let outputs = drain(&mut core);
    assert_eq!(outputs[0], send(5, HyParViewMessage::Disconnect), "{outputs:?}");
    core.handle_message(now, 5, HyParViewMessage::FindNeighbour { requester: 9, ttl: 0 }).unwrap();
    assert_eq!(drain(&mut core)[0], send(5, HyParViewMessage::Disconnect));
    core.handle_message(now, 5, HyParViewMessage::ShuffleReply { nodes: vec![] }).unwrap();
    assert_eq!(drain(&mut core), vec![]);
    core.handle_message(now, 1, HyParViewMessage::FindNeighbour { requester: 9, ttl: 0 }).unwrap();
    assert!(
        !drain(&mut core).contains(&send(1, HyParViewMessage::Disconnect)),
        "a neighbour's walk is not answered so"
    );
}

/// Healing (beyond the paper): a failed neighbour is kept as lost, not forgotten, and retried
/// with a high-priority NEIGHBOUR after `repair_interval`, then after waits that double up to
/// `max_retry_backoff` and stay there, however long it stays away. When it answers, it is taken
/// back even into a full active view (a random peer makes room), as the other side took this
/// node: two halves of a healed partition, their views full, link again. (Before: the failed
/// peer was dropped from both views at once, and full views never asked anyone again.)
#[test]
fn a_lost_neighbour_is_retried_with_backoff_and_taken_back_into_a_full_view() {
    let now = Instant::now();
    let config = HyParViewConfig {
        active_capacity: 1,
        passive_capacity: 0,
        neighbour_timeout: Duration::from_secs(1),
        repair_interval: Duration::from_secs(1),
        max_retry_backoff: Duration::from_secs(4),
        ..config()
    };
    let mut core = node(now, config, &[1], &[]);
    core.peer_failed(now, &1);
    assert_eq!(drain(&mut core), vec![HyParViewOutput::NeighbourDown(1)]);
    assert_eq!(core.lost().copied().collect::<Vec<_>>(), vec![1]);
    // Meanwhile another peer fills the only active slot.
    core.handle_message(now, 2, HyParViewMessage::ForwardJoinReply).unwrap();
    drain(&mut core);

    let high = send(1, HyParViewMessage::Neighbour { priority: Priority::High });
    let mut retries = Vec::new();
    let mut time = now;
    while time <= now + Duration::from_secs(29) {
        core.handle_timeout(time);
        if drain(&mut core).contains(&high) {
            retries.push(time.duration_since(now).as_secs());
        }
        time += Duration::from_millis(500);
    }
    // Retried at 1 s; unanswered at 2 s, so next at 2 + 2; then 4 s waits (the bound).
    assert_eq!(retries, vec![1, 4, 9, 14, 19, 24, 29]);
    assert_eq!(core.lost().copied().collect::<Vec<_>>(), vec![1], "never forgotten");

    // Back: its acceptance of the last retry (in flight) displaces the random peer (2, the only one).
    let accept = HyParViewMessage::NeighbourReply { accepted: true, nodes: vec![] };
    core.handle_message(time, 1, accept).unwrap();
    assert_eq!(
        drain(&mut core),
        vec![
            HyParViewOutput::NeighbourDown(2),
            send(2, HyParViewMessage::Disconnect),
            HyParViewOutput::NeighbourUp(1),
        ]
    );
    assert_eq!(core.lost().count(), 0);
}

/// Lost peers are bounded: past `max_lost`, the one lost longest ago is dropped.
#[test]
fn lost_peers_are_bounded_dropping_the_oldest() {
    let start = Instant::now();
    let config = HyParViewConfig { active_capacity: 3, max_lost: 2, ..config() };
    let mut core = node(start, config, &[1, 2, 3], &[]);
    for (second, peer) in [(0, 1), (1, 2), (2, 3)] {
        core.peer_failed(start + Duration::from_secs(second), &peer);
    }
    assert_eq!(core.lost().copied().collect::<BTreeSet<_>>(), set(&[2, 3]));
}

/// No islands (beyond the paper): a node whose active view has room that its passive view
/// cannot fill (none left to ask) joins through its first contact again on the repair tick,
/// at most once a shuffle interval; one whose passive view can fill it does not. (Before: a
/// pair of nodes holding only each other, with empty passive views, stayed apart for good.)
#[test]
fn the_contact_is_joined_again_while_the_passive_view_cannot_fill_the_active_one() {
    let now = Instant::now();
    let config = config();
    let mut core = HyParView::new(0u8, config.clone(), now);
    core.join(now, 5).unwrap();
    core.handle_message(now, 6, HyParViewMessage::ForwardJoinReply).unwrap();
    drain(&mut core);
    let join = send(5, HyParViewMessage::Join);
    let mut joins = Vec::new();
    let mut time = now;
    while time <= now + config.shuffle_interval * 2 {
        core.handle_timeout(time);
        if drain(&mut core).contains(&join) {
            joins.push(time.duration_since(now).as_secs());
        }
        time += config.repair_interval;
    }
    assert_eq!(joins, vec![10, 20], "one JOIN a shuffle interval, the first one after joining");

    let mut with_passive = HyParView::new(0u8, config.clone(), now);
    with_passive.join(now, 5).unwrap();
    let nodes = vec![8, 9];
    with_passive.handle_message(now, 5, HyParViewMessage::JoinReply { nodes }).unwrap();
    drain(&mut with_passive);
    with_passive.handle_timeout(now + config.shuffle_interval);
    assert!(!drain(&mut with_passive).contains(&join));
}

/// Beyond the paper: a node with room keeps filling its active view from the passive one on
/// the repair tick, with low priority once it has `high_priority_below` peers.
#[test]
fn repair_tick_fills_a_view_with_room() {
    let now = Instant::now();
    let config = HyParViewConfig { active_capacity: 4, high_priority_below: 3, ..config() };
    let mut core = node(now, config.clone(), &[1, 2, 3], &[4]);
    let tick = now + config.repair_interval;
    assert_eq!(core.poll_timeout(), Some(tick));
    core.handle_timeout(tick);
    assert_eq!(
        drain(&mut core),
        vec![send(4, HyParViewMessage::Neighbour { priority: Priority::Low })]
    );
}

/// §4.4 SHUFFLE, started on its period: to a random active peer, with the origin itself,
/// `k_a` active and `k_p` passive peers, and a walk length.
#[test]
fn shuffle_carries_samples_of_both_views() {
    let now = Instant::now();
    // A full active view, so that the repair tick has nothing to add.
    let config =
        HyParViewConfig { active_capacity: 1, shuffle_active: 1, shuffle_passive: 1, ..config() };
    let mut core = node(now, config.clone(), &[1], &[5]);
    let due = now + config.shuffle_interval;
    core.handle_timeout(due);
    let shuffle = HyParViewMessage::Shuffle { origin: 0, ttl: 6, nodes: vec![0, 5] };
    assert_eq!(drain(&mut core), vec![send(1, shuffle)]);
}

/// §4.4: a shuffle walks on while its time-to-live lasts; where it ends, the node answers
/// the origin directly with as many passive peers as it received, and keeps what it
/// received (evicting first what it sent back, as the passive view is full).
#[test]
fn shuffle_walks_on_then_swaps_passive_peers() {
    let now = Instant::now();
    let mut core = node(now, config(), &[1, 2], &[10, 11, 12, 13]);
    core.handle_message(now, 1, HyParViewMessage::Shuffle { origin: 9, ttl: 3, nodes: vec![9] })
        .unwrap();
    assert_eq!(
        drain(&mut core),
        vec![send(2, HyParViewMessage::Shuffle { origin: 9, ttl: 2, nodes: vec![9] })]
    );

    core.handle_message(
        now,
        1,
        HyParViewMessage::Shuffle { origin: 9, ttl: 1, nodes: vec![9, 20] },
    )
    .unwrap();
    let outputs = drain(&mut core);
    let [HyParViewOutput::Send { to: 9, message: HyParViewMessage::ShuffleReply { nodes: reply } }] =
        &outputs[..]
    else {
        panic!("expected one SHUFFLE_REPLY to the origin, got {outputs:?}");
    };
    assert_eq!(reply.len(), 2);
    let mut expected: BTreeSet<u8> = set(&[10, 11, 12, 13, 9, 20]);
    for sent in reply {
        expected.remove(sent);
    }
    assert_eq!(core.passive_view(), &expected);
}

/// Bad input: a message "from" this node itself is refused; a walk announcing this node or a
/// peer already active is dropped; an oversized shuffle is cut to what a correct node sends.
#[test]
fn bad_input_is_refused_or_bounded() {
    let now = Instant::now();
    let mut core = node(now, config(), &[1], &[]);
    assert_eq!(core.handle_message(now, 0, HyParViewMessage::Join), Err(HyParViewError::FromSelf));
    core.handle_message(now, 1, HyParViewMessage::ForwardJoin { joiner: 0, ttl: 0 }).unwrap();
    core.handle_message(now, 1, HyParViewMessage::ForwardJoin { joiner: 1, ttl: 0 }).unwrap();
    assert_eq!(drain(&mut core), vec![]);
    let flood: Vec<u8> = (20..60).collect();
    core.handle_message(now, 1, HyParViewMessage::ShuffleReply { nodes: flood }).unwrap();
    assert!(core.passive_view().len() <= config().passive_capacity);
}

/// One input to a core, for the property test.
#[derive(Clone, Debug)]
enum Input {
    Receive(u8, HyParViewMessage<u8>),
    Failed(u8),
    Advance(u64),
}

fn input() -> impl Strategy<Value = Input> {
    let peer = 0u8..10;
    let message = prop_oneof![
        Just(HyParViewMessage::Join),
        proptest::collection::vec(peer.clone(), 0..12)
            .prop_map(|nodes| HyParViewMessage::JoinReply { nodes }),
        (peer.clone(), 0u32..7)
            .prop_map(|(joiner, ttl)| HyParViewMessage::ForwardJoin { joiner, ttl }),
        Just(HyParViewMessage::ForwardJoinReply),
        prop_oneof![Just(Priority::High), Just(Priority::Low)]
            .prop_map(|priority| HyParViewMessage::Neighbour { priority }),
        (any::<bool>(), proptest::collection::vec(peer.clone(), 0..12))
            .prop_map(|(accepted, nodes)| HyParViewMessage::NeighbourReply { accepted, nodes }),
        Just(HyParViewMessage::Disconnect),
        (peer.clone(), 0u32..7)
            .prop_map(|(requester, ttl)| HyParViewMessage::FindNeighbour { requester, ttl }),
        (peer.clone(), 0u32..7, proptest::collection::vec(peer.clone(), 0..12))
            .prop_map(|(origin, ttl, nodes)| HyParViewMessage::Shuffle { origin, ttl, nodes }),
        proptest::collection::vec(peer.clone(), 0..12)
            .prop_map(|nodes| HyParViewMessage::ShuffleReply { nodes }),
    ];
    prop_oneof![
        (peer.clone(), message).prop_map(|(from, message)| Input::Receive(from, message)),
        peer.prop_map(Input::Failed),
        (0u64..3000).prop_map(Input::Advance),
    ]
}

proptest! {
    /// Whatever arrives in whatever order: no panic; the views stay within their capacities,
    /// disjoint, and without this node; the NEIGHBOUR_UP/DOWN events, replayed, give exactly
    /// the active view (so Plumtree's neighbours always match it).
    #[test]
    fn views_stay_bounded_and_events_track_the_active_view(
        inputs in proptest::collection::vec(input(), 0..100),
    ) {
        let mut now = Instant::now();
        let config = config();
        let mut core = HyParView::new(0u8, config.clone(), now);
        let mut tracked = BTreeSet::new();
        for input in inputs {
            match input {
                Input::Receive(from, message) => { let _ = core.handle_message(now, from, message); }
                Input::Failed(peer) => core.peer_failed(now, &peer),
                Input::Advance(millis) => {
                    now += Duration::from_millis(millis);
                    core.handle_timeout(now);
                }
            }
            for output in drain(&mut core) {
                match output {
                    HyParViewOutput::NeighbourUp(peer) => prop_assert!(tracked.insert(peer)),
                    HyParViewOutput::NeighbourDown(peer) => prop_assert!(tracked.remove(&peer)),
                    HyParViewOutput::Send { to, .. } => prop_assert_ne!(to, 0),
                }
            }
            prop_assert_eq!(&tracked, core.active_view());
            prop_assert!(core.active_view().len() <= config.active_capacity);
            prop_assert!(core.passive_view().len() <= config.passive_capacity);
            prop_assert!(core.active_view().is_disjoint(core.passive_view()));
            prop_assert!(core.lost().all(|peer| !core.active_view().contains(peer)));
            prop_assert!(core.lost().count() <= config.max_lost);
            prop_assert!(!core.active_view().contains(&0) && !core.passive_view().contains(&0));
        }
    }
}

/// Offered peers (beyond the paper): they enter the passive view only while the active view
/// has room that the passive view cannot fill, at most as many as there are free slots, never
/// this node or a peer already in a view; the repair tick then asks them.
#[test]
fn offered_peers_fill_only_what_the_passive_view_cannot() {
    let now = Instant::now();
    let mut full = node(now, config(), &[1, 2, 3], &[]);
    full.offer(&[0, 4, 5]);
    assert_eq!(full.passive_view(), &set(&[]));

    let mut with_candidates = node(now, config(), &[1], &[2]);
    with_candidates.offer(&[3, 4]);
    assert_eq!(with_candidates.passive_view(), &set(&[2]));

    let mut short = node(now, config(), &[1], &[]);
    short.offer(&[0, 1, 4, 5, 6]);
    let passive = short.passive_view().clone();
    assert_eq!(passive.len(), 2, "two free slots: {passive:?}");
    assert!(passive.is_subset(&set(&[4, 5, 6])), "{passive:?}");
    short.handle_timeout(now + Duration::from_secs(1));
    let asked: BTreeSet<u8> = drain(&mut short)
        .into_iter()
        .filter_map(|output| match output {
            HyParViewOutput::Send { to, message: HyParViewMessage::Neighbour { .. } } => Some(to),
            _ => None,
        })
        .collect();
    assert_eq!(asked, passive);
}
