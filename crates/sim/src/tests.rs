//! The simulator's own rules: determinism by seed, the network's faults, partitions, crashes.

use std::time::Duration;

use crate::{Ctx, Network, Sim, SimNode, SimNodeId};

/// Records what it receives; `Send(to, n)` asks it to send `n` numbered messages to `to`.
#[derive(Default)]
struct Recorder {
    received: Vec<(SimNodeId, u32)>,
    restarts: u32,
    volatile: u32,
}

#[derive(Clone, Debug)]
enum Msg {
    Number(u32),
}

impl SimNode for Recorder {
    type Msg = Msg;
    type Timer = u32;
    type Output = u32;

    fn on_message(&mut self, _: &mut Ctx<'_, Self>, from: SimNodeId, msg: Msg) {
        let Msg::Number(n) = msg;
        self.received.push((from, n));
        self.volatile += 1;
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, timer: u32) {
        ctx.output(timer);
    }

    fn on_crash(&mut self) {
        self.volatile = 0;
    }

    fn on_restart(&mut self, ctx: &mut Ctx<'_, Self>) {
        self.restarts += 1;
        ctx.set_timer(Duration::from_millis(5), 1000 + self.restarts);
    }
}

fn recorders(n: usize) -> Vec<Recorder> {
    (0..n).map(|_| Recorder::default()).collect()
}

fn send_numbers(sim: &mut Sim<Recorder>, from: SimNodeId, to: SimNodeId, count: u32) {
    sim.invoke(from, |_, ctx| {
        for n in 0..count {
            ctx.send(to, Msg::Number(n));
        }
    });
}

/// Determinism: the same seed and the same calls give the same run, event for event.
#[test]
fn the_same_seed_replays_the_same_run() {
    let run = |seed| {
        let mut sim = Sim::new(seed, Network::lossy(0.2, 0.2), recorders(3));
        send_numbers(&mut sim, 0, 1, 100);
        send_numbers(&mut sim, 2, 1, 100);
        sim.run_for(Duration::from_secs(1));
        (sim.trace_hash(), sim.node(1).received.clone(), sim.stats())
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42).0, run(43).0, "different seeds should give different runs");
}

/// Random delays within the range reorder messages between one pair of nodes.
#[test]
fn random_delays_reorder_messages() {
    let mut sim = Sim::new(1, Network::reliable(), recorders(2));
    send_numbers(&mut sim, 0, 1, 50);
    sim.run_for(Duration::from_millis(9));
    assert!(sim.node(1).received.len() < 50, "the longest delay is 10 ms");
    sim.run_for(Duration::from_millis(2));
    let numbers: Vec<u32> = sim.node(1).received.iter().map(|&(_, n)| n).collect();
    assert_eq!(numbers.len(), 50, "no loss on a reliable network");
    assert!(numbers.windows(2).any(|pair| pair[0] > pair[1]), "expected some reordering");
}

/// A fixed delay keeps order (ties break by send order) and takes exactly that long.
#[test]
fn a_fixed_delay_keeps_send_order() {
    let delay = Duration::from_millis(3);
    let network = Network::reliable().with_delay(delay, delay);
    let mut sim = Sim::new(1, network, recorders(2));
    let start = sim.now();
    send_numbers(&mut sim, 0, 1, 20);
    assert_eq!(sim.next_event_at(), Some(start + delay));
    sim.run_for(Duration::from_secs(1));
    let numbers: Vec<u32> = sim.node(1).received.iter().map(|&(_, n)| n).collect();
    assert_eq!(numbers, (0..20).collect::<Vec<_>>());
}

/// Loss and duplication happen at about the configured rates, and are counted.
#[test]
fn loss_and_duplication_follow_their_probabilities() {
    let mut sim = Sim::new(9, Network::lossy(0.3, 0.1), recorders(2));
    send_numbers(&mut sim, 0, 1, 10_000);
    sim.run_for(Duration::from_secs(1));
    let stats = sim.stats();
    assert_eq!(stats.sent, 10_000);
    assert!((2_700..3_300).contains(&stats.dropped), "dropped {}", stats.dropped);
    assert!((500..900).contains(&stats.duplicated), "duplicated {}", stats.duplicated);
    assert_eq!(stats.delivered, stats.sent - stats.dropped + stats.duplicated);
    assert_eq!(sim.node(1).received.len() as u64, stats.delivered);
}

/// A partition loses messages between groups, both at send and in flight; heal ends it.
#[test]
fn partitions_cut_between_groups_until_healed() {
    let mut sim = Sim::new(3, Network::reliable(), recorders(5));
    send_numbers(&mut sim, 0, 3, 1); // in flight when the partition starts
    sim.partition(&[&[0, 1], &[2, 3, 4]]);
    send_numbers(&mut sim, 0, 4, 1);
    send_numbers(&mut sim, 0, 1, 1);
    send_numbers(&mut sim, 2, 3, 1);
    sim.run_for(Duration::from_millis(20));
    assert!(sim.node(3).received == vec![(2, 0)]);
    assert!(sim.node(4).received.is_empty());
    assert_eq!(sim.node(1).received, vec![(0, 0)]);
    assert_eq!(sim.stats().cut, 2);
    assert!(!sim.can_reach(1, 2));

    sim.heal();
    send_numbers(&mut sim, 0, 4, 1);
    sim.run_for(Duration::from_millis(20));
    assert_eq!(sim.node(4).received, vec![(0, 0)]);
}

/// Nodes not named in a partition form one group of their own.
#[test]
fn unlisted_nodes_form_their_own_group() {
    let mut sim = Sim::new(3, Network::reliable(), recorders(4));
    sim.partition(&[&[0]]);
    assert!(sim.can_reach(1, 2) && sim.can_reach(3, 1));
    assert!(!sim.can_reach(0, 1) && !sim.can_reach(2, 0));
}

/// A cut is one way.
#[test]
fn a_cut_link_is_one_way() {
    let mut sim = Sim::new(3, Network::reliable(), recorders(2));
    sim.cut(0, 1);
    send_numbers(&mut sim, 0, 1, 1);
    send_numbers(&mut sim, 1, 0, 1);
    sim.run_for(Duration::from_millis(20));
    assert!(sim.node(1).received.is_empty());
    assert_eq!(sim.node(0).received, vec![(1, 0)]);
}

/// A crash loses the node's timers and the messages that reach it while down, and its
/// volatile state; a restart runs `on_restart`, whose timers fire.
#[test]
fn a_crash_loses_timers_messages_and_volatile_state() {
    let mut sim = Sim::new(5, Network::reliable(), recorders(2));
    sim.invoke(1, |_, ctx| ctx.set_timer(Duration::from_millis(50), 7));
    send_numbers(&mut sim, 0, 1, 3);
    sim.run_for(Duration::from_millis(20));
    assert_eq!(sim.node(1).volatile, 3);

    sim.crash(1);
    assert!(!sim.is_up(1));
    assert_eq!(sim.node(1).volatile, 0, "on_crash drops volatile state");
    assert!(sim.invoke(1, |_, _| ()).is_none(), "a down node runs nothing");
    send_numbers(&mut sim, 0, 1, 2);
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.node(1).received.len(), 3);
    assert_eq!(sim.stats().undeliverable, 2);
    assert_eq!(sim.stats().timers_discarded, 1);
    assert!(sim.take_outputs().is_empty(), "the timer set before the crash never fires");

    sim.restart(1);
    sim.run_for(Duration::from_millis(10));
    let outputs = sim.take_outputs();
    assert_eq!(outputs.len(), 1);
    assert_eq!((outputs[0].node, outputs[0].output), (1, 1001));
    assert_eq!(sim.up_nodes().collect::<Vec<_>>(), vec![0, 1]);
}

/// A restart brings the node back up, and any timer set before its crash stays discarded
/// even when it falls due after the restart.
#[test]
fn timers_from_before_a_crash_stay_dead_after_restart() {
    let mut sim = Sim::new(5, Network::reliable(), recorders(1));
    sim.invoke(0, |_, ctx| ctx.set_timer(Duration::from_millis(50), 7));
    sim.crash(0);
    sim.restart(0);
    sim.run_for(Duration::from_millis(100));
    let outputs: Vec<u32> = sim.take_outputs().into_iter().map(|record| record.output).collect();
    assert_eq!(outputs, vec![1001]);
}

/// Outputs carry the virtual time and the node that reported them; the clock only moves
/// forward, and `run_until_condition` stops as soon as the condition holds.
#[test]
fn outputs_are_stamped_and_conditions_stop_runs() {
    let mut sim = Sim::new(5, Network::reliable(), recorders(2));
    let start = sim.now();
    sim.invoke(1, |_, ctx| ctx.set_timer(Duration::from_millis(30), 9));
    let reached = sim.run_until_condition(Duration::from_secs(1), |sim| sim.pending_events() == 0);
    assert!(reached);
    assert_eq!(sim.now(), start + Duration::from_millis(30));
    let outputs = sim.take_outputs();
    assert_eq!(outputs[0].at, start + Duration::from_millis(30));
    assert_eq!(outputs[0].node, 1);
    assert!(!sim.run_until_condition(Duration::from_millis(5), |_| false));
    assert_eq!(sim.elapsed(), Duration::from_millis(35));
}

/// The event queue is bounded: a storm fails loudly, naming the seed.
#[test]
#[should_panic(expected = "seed 11")]
fn the_event_queue_is_bounded() {
    let mut sim = Sim::new(11, Network::reliable(), recorders(2));
    sim.set_event_limit(100);
    send_numbers(&mut sim, 0, 1, 101);
}

/// Messages to a node that does not exist are counted, not a panic.
#[test]
fn messages_to_unknown_nodes_are_undeliverable() {
    let mut sim = Sim::new(5, Network::reliable(), recorders(1));
    send_numbers(&mut sim, 0, 9, 1);
    assert_eq!(sim.stats().undeliverable, 1);
    assert!(!sim.can_reach(0, 9));
}

/// An invalid network is refused with the reason.
#[test]
#[should_panic(expected = "drop_probability must be within 0.0..=1.0")]
fn an_invalid_network_is_refused() {
    Sim::new(1, Network::lossy(1.5, 0.0), recorders(1));
}

/// The long tail is off unless asked for, and a tail of probability zero draws nothing: runs
/// without one are the same, event for event, as before the tail existed.
#[test]
fn the_long_tail_is_off_by_default_and_costs_no_draws() {
    let run = |network: Network| {
        let mut sim = Sim::new(42, network, recorders(3));
        send_numbers(&mut sim, 0, 1, 200);
        send_numbers(&mut sim, 2, 1, 200);
        sim.run_for(Duration::from_millis(10));
        (sim.trace_hash(), sim.stats())
    };
    let plain = Network::lossy(0.2, 0.2);
    let (hash, stats) = run(plain);
    assert_eq!(stats.long_delayed, 0);
    assert_eq!(stats.delivered, stats.sent - stats.dropped + stats.duplicated, "all in 10 ms");
    assert_eq!(run(plain.with_long_tail(0.0, Duration::from_secs(5))).0, hash);
}

/// A long tail holds back about its share of messages, for delays spread over every doubling
/// from `delay_max` to `long_tail_max` (as many take over a second as take under 100 ms), and
/// none for longer; the same seed replays it.
#[test]
fn a_long_tail_holds_messages_up_to_its_maximum() {
    let network = Network::reliable().with_long_tail(0.1, Duration::from_secs(4));
    let run = || {
        let mut sim = Sim::new(17, network, recorders(2));
        let start = sim.now();
        send_numbers(&mut sim, 0, 1, 10_000);
        let mut arrived = Vec::new();
        for until_ms in [10, 100, 1_000, 2_000, 4_000] {
            sim.run_until(start + Duration::from_millis(until_ms));
            arrived.push(sim.node(1).received.len() as u64);
        }
        (arrived, sim.stats(), sim.trace_hash())
    };
    let (arrived, stats, hash) = run();
    let held = stats.long_delayed;
    assert!((850..1_150).contains(&held), "held back {held}");
    let [by_10ms, by_100ms, by_1s, by_2s, by_4s] = arrived[..] else { unreachable!() };
    assert!(by_10ms >= 10_000 - held && by_10ms < 10_000, "by 10 ms: {by_10ms}");
    let short = by_100ms - (10_000 - held);
    let long = by_4s - by_1s;
    assert!(short * 100 >= held * 25, "{short} of {held} held ones took at most 100 ms");
    assert!(long * 100 >= held * 18, "{long} of {held} held ones took over a second");
    assert!(by_2s < by_4s, "the last doubling reaches towards the maximum");
    assert_eq!(by_4s, 10_000, "nothing is held longer than long_tail_max");
    assert_eq!(run().2, hash, "the same seed replays the tail");
}

/// A held-back message outlives a crash and restart of its receiver and is delivered to the
/// new life (those that land while it is down are lost): what a bounded delay never shows a
/// protocol.
#[test]
fn a_held_back_message_outlives_a_restart_of_its_receiver() {
    let network = Network::reliable().with_long_tail(1.0, Duration::from_secs(5));
    let mut sim = Sim::new(3, network, recorders(2));
    send_numbers(&mut sim, 0, 1, 50);
    sim.run_for(Duration::from_millis(100));
    let before_crash = sim.node(1).received.len();
    sim.crash(1);
    sim.run_for(Duration::from_millis(100));
    sim.restart(1);
    sim.run_for(Duration::from_secs(5));
    let after_restart = sim.node(1).received.len() - before_crash;
    assert!(after_restart > 0, "no message outlived the restart");
    assert_eq!(sim.stats().long_delayed, 50);
    assert_eq!(before_crash as u64 + after_restart as u64 + sim.stats().undeliverable, 50);
}

/// A tail shorter than the ordinary delays is refused with the reason.
#[test]
fn a_long_tail_below_the_ordinary_delays_is_refused() {
    let network = Network::reliable().with_long_tail(0.1, Duration::from_millis(5));
    let refused = std::panic::catch_unwind(|| Sim::new(1, network, recorders(1))).err();
    let reason = refused.as_ref().and_then(|payload| payload.downcast_ref::<String>());
    assert!(
        reason.is_some_and(|r| r.contains("must not exceed long_tail_max")),
        "expected a refusal, got {reason:?}"
    );
}
