//! The simulation: nodes, the event queue on a virtual clock, and faults.

use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap};
use std::fmt::Debug;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::network::Network;

/// A node's place in the simulation: its index, in the order nodes were added.
pub type SimNodeId = usize;

/// A state machine under simulation: a sans-IO protocol core, or a test adapter around one.
///
/// The simulator calls these methods one at a time; whatever the node wants done (send a
/// message, set a timer, report an output) it asks of the [`Ctx`] it is handed.
pub trait SimNode {
    /// What nodes send each other. Cloned when the network duplicates a message.
    type Msg: Clone + Debug;
    /// What a node attaches to a timer, to know which one fired.
    type Timer: Debug;
    /// What a node reports to the test (a delivered broadcast, a completed request, ...).
    type Output: Debug;

    /// A message from `from` arrives.
    fn on_message(&mut self, ctx: &mut Ctx<'_, Self>, from: SimNodeId, msg: Self::Msg)
    where
        Self: Sized;

    /// A timer this node set fires.
    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, timer: Self::Timer)
    where
        Self: Sized;

    /// The node crashes: drop everything that would not survive a process crash (in-memory
    /// state, writes not yet made durable). Its timers and the messages addressed to it are
    /// discarded by the simulator.
    fn on_crash(&mut self) {}

    /// The node starts again after a crash, from what it made durable. It may send messages
    /// and set timers.
    fn on_restart(&mut self, _ctx: &mut Ctx<'_, Self>)
    where
        Self: Sized,
    {
    }
}

/// What a node can do while it handles an event: read the virtual clock and its own seeded
/// randomness, send messages, set timers, report outputs.
pub struct Ctx<'a, N: SimNode> {
    now: Instant,
    id: SimNodeId,
    rng: &'a mut SmallRng,
    effects: &'a mut Effects<N>,
}

impl<N: SimNode> Ctx<'_, N> {
    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The node being run.
    pub fn id(&self) -> SimNodeId {
        self.id
    }

    /// Sends `msg` to `to` through the simulated network (to itself too, with a delay).
    pub fn send(&mut self, to: SimNodeId, msg: N::Msg) {
        self.effects.sends.push((to, msg));
    }

    /// Fires `timer` at this node after `after`, unless the node crashes first. Timers are not
    /// cancelled: a node that no longer wants one ignores it when it fires.
    pub fn set_timer(&mut self, after: Duration, timer: N::Timer) {
        self.effects.timers.push((after, timer));
    }

    /// Reports `output` to the test, stamped with the current time and this node
    /// ([`Sim::take_outputs`]).
    pub fn output(&mut self, output: N::Output) {
        self.effects.outputs.push(output);
    }

    /// This node's randomness, seeded from the simulation's seed and the node's id.
    pub fn rng(&mut self) -> &mut SmallRng {
        self.rng
    }
}

/// An output reported by a node.
#[derive(Clone, Debug, PartialEq)]
pub struct Record<O> {
    /// When it was reported (virtual time).
    pub at: Instant,
    /// Which node reported it.
    pub node: SimNodeId,
    /// What it reported.
    pub output: O,
}

/// Counts of what happened to messages and timers so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Messages nodes sent.
    pub sent: u64,
    /// Messages handed to a live node (duplicates included).
    pub delivered: u64,
    /// Messages lost by the network's `drop_probability`.
    pub dropped: u64,
    /// Extra copies made by the network's `duplicate_probability`.
    pub duplicated: u64,
    /// Messages (copies counted apart) held back in the network's long tail.
    pub long_delayed: u64,
    /// Messages lost to a partition or a cut link (at send or at arrival).
    pub cut: u64,
    /// Messages lost because their receiver was down when they arrived, or does not exist.
    pub undeliverable: u64,
    /// Timers that fired at a live node.
    pub timers_fired: u64,
    /// Timers discarded because their node crashed after setting them.
    pub timers_discarded: u64,
}

/// The default bound on events in the queue ([`Sim::set_event_limit`]).
const DEFAULT_EVENT_LIMIT: usize = 10_000_000;

/// A seeded, deterministic simulation of `N` nodes on an unreliable network.
pub struct Sim<N: SimNode> {
    seed: u64,
    origin: Instant,
    now: Instant,
    network: Network,
    network_rng: SmallRng,
    slots: Vec<Slot<N>>,
    queue: BinaryHeap<Scheduled<N>>,
    next_seq: u64,
    event_limit: usize,
    cut_links: BTreeSet<(SimNodeId, SimNodeId)>,
    effects: Effects<N>,
    outputs: Vec<Record<N::Output>>,
    stats: SimStats,
    trace: u64,
}

struct Slot<N> {
    node: N,
    up: bool,
    /// Bumped at every crash, so that timers set before it are recognised and discarded.
    incarnation: u64,
    /// Nodes talk only to nodes of the same group ([`Sim::partition`]).
    group: usize,
    rng: SmallRng,
}

/// What a node asked for while handling one event; applied by the simulator right after.
struct Effects<N: SimNode> {
    sends: Vec<(SimNodeId, N::Msg)>,
    timers: Vec<(Duration, N::Timer)>,
    outputs: Vec<N::Output>,
}

impl<N: SimNode> Effects<N> {
    fn new() -> Self {
        Effects { sends: Vec::new(), timers: Vec::new(), outputs: Vec::new() }
    }
}

enum Event<N: SimNode> {
    Deliver { from: SimNodeId, to: SimNodeId, msg: N::Msg },
    Timer { node: SimNodeId, incarnation: u64, timer: N::Timer },
}

/// An event and when it happens; `seq` orders events due at the same instant by when they
/// were scheduled, so ties break the same way in every run.
struct Scheduled<N: SimNode> {
    at: Instant,
    seq: u64,
    event: Event<N>,
}

impl<N: SimNode> PartialEq for Scheduled<N> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<N: SimNode> Eq for Scheduled<N> {}

impl<N: SimNode> PartialOrd for Scheduled<N> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<N: SimNode> Ord for Scheduled<N> {
    /// Reversed, so that the max-heap `BinaryHeap` pops the earliest event first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl<N: SimNode> Sim<N> {
    /// A simulation of `nodes` (ids 0, 1, ...), all up, at virtual time zero.
    ///
    /// # Panics
    ///
    /// If `network` has a probability outside 0.0..=1.0 or an empty delay range.
    pub fn new(seed: u64, network: Network, nodes: Vec<N>) -> Self {
        network.validate();
        // The one read of the real clock: every later time is this origin plus virtual time.
        let origin = Instant::now(); // tidy-allow: the origin only, never read again
        let mut sim = Sim {
            seed,
            origin,
            now: origin,
            network,
            network_rng: SmallRng::seed_from_u64(seed),
            slots: Vec::with_capacity(nodes.len()),
            queue: BinaryHeap::new(),
            next_seq: 0,
            event_limit: DEFAULT_EVENT_LIMIT,
            cut_links: BTreeSet::new(),
            effects: Effects::new(),
            outputs: Vec::new(),
            stats: SimStats::default(),
            trace: FNV_OFFSET,
        };
        for node in nodes {
            sim.add_node(node);
        }
        sim
    }

    /// Adds a node, up, in no partition group's way (group 0), and returns its id.
    pub fn add_node(&mut self, node: N) -> SimNodeId {
        let id = self.slots.len();
        let rng = SmallRng::seed_from_u64(mix(self.seed, id as u64));
        self.slots.push(Slot { node, up: true, incarnation: 0, group: 0, rng });
        id
    }

    /// The seed this simulation was made with: print it when a test fails.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time elapsed since the simulation started.
    pub fn elapsed(&self) -> Duration {
        self.now - self.origin
    }

    /// How many nodes there are, up or down.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the simulation has no nodes.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Node `id`, to inspect.
    ///
    /// # Panics
    ///
    /// If there is no node `id`.
    pub fn node(&self, id: SimNodeId) -> &N {
        &self.slots[id].node
    }

    /// Node `id`, to change directly (for a test's setup; state changes that should send
    /// messages go through [`Sim::invoke`]).
    ///
    /// # Panics
    ///
    /// If there is no node `id`.
    pub fn node_mut(&mut self, id: SimNodeId) -> &mut N {
        &mut self.slots[id].node
    }

    /// Whether node `id` is up.
    pub fn is_up(&self, id: SimNodeId) -> bool {
        self.slots.get(id).is_some_and(|slot| slot.up)
    }

    /// The ids of the nodes that are up.
    pub fn up_nodes(&self) -> impl Iterator<Item = SimNodeId> + '_ {
        (0..self.slots.len()).filter(|&id| self.slots[id].up)
    }

    /// Replaces the network's behaviour for messages sent from now on.
    ///
    /// # Panics
    ///
    /// As [`Sim::new`], on an invalid network.
    pub fn set_network(&mut self, network: Network) {
        network.validate();
        self.network = network;
    }

    /// Bounds the event queue: a run that would hold more events in flight than `limit`
    /// panics, naming the seed, rather than eating all memory (a message storm is a bug in
    /// the protocol under test).
    pub fn set_event_limit(&mut self, limit: usize) {
        self.event_limit = limit;
    }

    /// Runs `f` on node `id` now, as a call from outside (a client request, a test's
    /// injection), and applies what it asked of its context. `None` if the node is down.
    pub fn invoke<R>(
        &mut self,
        id: SimNodeId,
        f: impl FnOnce(&mut N, &mut Ctx<'_, N>) -> R,
    ) -> Option<R> {
        if !self.is_up(id) {
            return None;
        }
        let result = self.run_node(id, f);
        Some(result)
    }

    /// Crashes node `id`: its pending timers and every message that arrives while it is down
    /// are lost, and it is told to drop its volatile state. Does nothing if it is down already.
    pub fn crash(&mut self, id: SimNodeId) {
        let Some(slot) = self.slots.get_mut(id) else { return };
        if !slot.up {
            return;
        }
        slot.up = false;
        slot.incarnation += 1;
        slot.node.on_crash();
        self.record_trace(&[TRACE_CRASH, id as u64]);
    }

    /// Starts node `id` again after a crash ([`SimNode::on_restart`]). Does nothing if it is up.
    pub fn restart(&mut self, id: SimNodeId) {
        if self.slots.get(id).is_none_or(|slot| slot.up) {
            return;
        }
        self.slots[id].up = true;
        self.record_trace(&[TRACE_RESTART, id as u64]);
        self.run_node(id, |node, ctx| node.on_restart(ctx));
    }

    /// Splits the network: nodes talk only to nodes in the same group. Nodes not listed form
    /// one more group together. Replaces any earlier partition; [`Sim::heal`] ends it.
    pub fn partition(&mut self, groups: &[&[SimNodeId]]) {
        for slot in &mut self.slots {
            slot.group = 0;
        }
        for (index, group) in groups.iter().enumerate() {
            for &id in group.iter() {
                if let Some(slot) = self.slots.get_mut(id) {
                    slot.group = index + 1;
                }
            }
        }
    }

    /// Cuts the link from `from` to `to`, one way: messages that way are lost until
    /// [`Sim::heal`].
    pub fn cut(&mut self, from: SimNodeId, to: SimNodeId) {
        self.cut_links.insert((from, to));
    }

    /// Ends every partition and cut.
    pub fn heal(&mut self) {
        for slot in &mut self.slots {
            slot.group = 0;
        }
        self.cut_links.clear();
    }

    /// Whether a message from `from` would reach `to` now (partitions and cuts only; loss and
    /// crashes aside).
    pub fn can_reach(&self, from: SimNodeId, to: SimNodeId) -> bool {
        match (self.slots.get(from), self.slots.get(to)) {
            (Some(a), Some(b)) => a.group == b.group && !self.cut_links.contains(&(from, to)),
            _ => false,
        }
    }

    /// When the next event is due, if any.
    pub fn next_event_at(&self) -> Option<Instant> {
        self.queue.peek().map(|scheduled| scheduled.at)
    }

    /// How many events (messages in flight and timers) are queued.
    pub fn pending_events(&self) -> usize {
        self.queue.len()
    }

    /// Runs the earliest event, advancing the clock to it. `false` if there was none.
    pub fn step(&mut self) -> bool {
        let Some(Scheduled { at, event, .. }) = self.queue.pop() else {
            return false;
        };
        self.now = at;
        match event {
            Event::Deliver { from, to, msg } => self.deliver(from, to, msg),
            Event::Timer { node, incarnation, timer } => self.fire(node, incarnation, timer),
        }
        true
    }

    /// Runs every event due up to `deadline`, then sets the clock to it.
    pub fn run_until(&mut self, deadline: Instant) {
        while self.next_event_at().is_some_and(|at| at <= deadline) {
            self.step();
        }
        self.now = self.now.max(deadline);
    }

    /// Runs the simulation for `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) {
        self.run_until(self.now + duration);
    }

    /// Runs until `done` holds (checked before each event) or `limit` of virtual time has
    /// passed; returns whether `done` held.
    pub fn run_until_condition(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Self) -> bool,
    ) -> bool {
        let deadline = self.now + limit;
        loop {
            if done(self) {
                return true;
            }
            match self.next_event_at() {
                Some(at) if at <= deadline => {
                    self.step();
                }
                _ => {
                    self.now = self.now.max(deadline);
                    return done(self);
                }
            }
        }
    }

    /// Takes the outputs reported so far, oldest first.
    pub fn take_outputs(&mut self) -> Vec<Record<N::Output>> {
        std::mem::take(&mut self.outputs)
    }

    /// What happened to messages and timers so far.
    pub fn stats(&self) -> SimStats {
        self.stats
    }

    /// A fingerprint of the run so far: every event's time, kind and nodes, and every crash
    /// and restart. Two runs with the same seed and the same test calls have the same hash.
    pub fn trace_hash(&self) -> u64 {
        self.trace
    }

    fn deliver(&mut self, from: SimNodeId, to: SimNodeId, msg: N::Msg) {
        if !self.is_up(to) {
            self.stats.undeliverable += 1;
            return;
        }
        if !self.can_reach(from, to) {
            self.stats.cut += 1;
            return;
        }
        self.stats.delivered += 1;
        self.record_trace(&[TRACE_DELIVER, self.elapsed_nanos(), from as u64, to as u64]);
        self.run_node(to, |node, ctx| node.on_message(ctx, from, msg));
    }

    fn fire(&mut self, id: SimNodeId, incarnation: u64, timer: N::Timer) {
        let slot = &self.slots[id];
        if !slot.up || slot.incarnation != incarnation {
            self.stats.timers_discarded += 1;
            return;
        }
        self.stats.timers_fired += 1;
        self.record_trace(&[TRACE_TIMER, self.elapsed_nanos(), id as u64]);
        self.run_node(id, |node, ctx| node.on_timer(ctx, timer));
    }

    /// Runs `f` on node `id` with a context, then applies the effects it asked for.
    fn run_node<R>(&mut self, id: SimNodeId, f: impl FnOnce(&mut N, &mut Ctx<'_, N>) -> R) -> R {
        let slot = &mut self.slots[id];
        let mut ctx = Ctx { now: self.now, id, rng: &mut slot.rng, effects: &mut self.effects };
        let result = f(&mut slot.node, &mut ctx);
        self.apply_effects(id);
        result
    }

    fn apply_effects(&mut self, id: SimNodeId) {
        let mut effects = std::mem::replace(&mut self.effects, Effects::new());
        for (to, msg) in effects.sends.drain(..) {
            self.transmit(id, to, msg);
        }
        let incarnation = self.slots[id].incarnation;
        for (after, timer) in effects.timers.drain(..) {
            self.schedule(self.now + after, Event::Timer { node: id, incarnation, timer });
        }
        for output in effects.outputs.drain(..) {
            self.outputs.push(Record { at: self.now, node: id, output });
        }
        // Hand the (now empty) buffers back, keeping their capacity for the next event.
        self.effects = effects;
    }

    /// Puts one message on the network: lost, delivered once, or delivered twice.
    fn transmit(&mut self, from: SimNodeId, to: SimNodeId, msg: N::Msg) {
        self.stats.sent += 1;
        if to >= self.slots.len() {
            self.stats.undeliverable += 1;
            return;
        }
        if !self.can_reach(from, to) {
            self.stats.cut += 1;
            return;
        }
        if self.chance(self.network.drop_probability) {
            self.stats.dropped += 1;
            return;
        }
        if self.chance(self.network.duplicate_probability) {
            self.stats.duplicated += 1;
            let at = self.now + self.delay();
            self.schedule(at, Event::Deliver { from, to, msg: msg.clone() });
        }
        let at = self.now + self.delay();
        self.schedule(at, Event::Deliver { from, to, msg });
    }

    fn chance(&mut self, probability: f64) -> bool {
        probability > 0.0 && self.network_rng.random::<f64>() < probability
    }

    /// A message's time in flight: from the long tail with its probability, otherwise uniform
    /// within the delay range. Nothing is drawn for a tail that is off, so runs without one are
    /// the same as before it existed.
    fn delay(&mut self) -> Duration {
        let Network { delay_min, delay_max, .. } = self.network;
        if self.chance(self.network.long_tail_probability) {
            self.stats.long_delayed += 1;
            return self.long_tail_delay();
        }
        if delay_min == delay_max {
            return delay_min;
        }
        let nanos = self
            .network_rng
            .random_range(delay_min.as_nanos() as u64..=delay_max.as_nanos() as u64);
        Duration::from_nanos(nanos)
    }

    /// A delay from `delay_max..=long_tail_max` with every doubling equally likely: a doubling
    /// `k` is drawn uniformly, then a delay uniformly within `[low << k, low << (k + 1)]`,
    /// capped at the maximum. Integers only, so the draw is the same on every platform.
    fn long_tail_delay(&mut self) -> Duration {
        let low = (self.network.delay_max.as_nanos() as u64).max(1);
        let high = (self.network.long_tail_max.as_nanos() as u64).max(low);
        // How many doublings of `low` it takes to pass `high`: floor(log2(high / low)) + 1.
        let doublings = u64::BITS - (high / low).leading_zeros();
        let k = self.network_rng.random_range(0..doublings);
        let from = low << k;
        let to = from.saturating_mul(2).min(high);
        Duration::from_nanos(self.network_rng.random_range(from..=to))
    }

    fn schedule(&mut self, at: Instant, event: Event<N>) {
        assert!(
            self.queue.len() < self.event_limit,
            "simulation (seed {}) exceeded its bound of {} queued events: a message storm?",
            self.seed,
            self.event_limit
        );
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push(Scheduled { at, seq, event });
    }

    fn elapsed_nanos(&self) -> u64 {
        self.elapsed().as_nanos() as u64
    }

    fn record_trace(&mut self, words: &[u64]) {
        for &word in words {
            self.trace = (self.trace ^ word).wrapping_mul(FNV_PRIME);
        }
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const TRACE_DELIVER: u64 = 1;
const TRACE_TIMER: u64 = 2;
const TRACE_CRASH: u64 = 3;
const TRACE_RESTART: u64 = 4;

/// Derives a node's seed from the simulation's seed and its id (splitmix64), so that nodes'
/// random streams are independent of each other and of the network's.
fn mix(seed: u64, id: u64) -> u64 {
    let mut z = seed ^ id.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
