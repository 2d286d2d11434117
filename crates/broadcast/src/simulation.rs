//! Plumtree on HyParView in the deterministic simulator (`shoal-sim`), and a scenario runner
//! that measures what the Plumtree paper measures (§4): reliability, relative message
//! redundancy (RMR) and last delivery hop (LDH). Behind the `sim` feature.
//!
//! [`BroadcastNode`] is one simulated node: a [`HyParView`] core whose neighbour-up and -down
//! outputs feed a [`Plumtree`] core, an application [`handler`](SimHandler) that keeps every
//! message it merged, and a stand-in for the driver's failure detector.
//!
//! **Failure detection.** The simulator drops messages to a crashed node silently, as a real
//! network does; a real driver learns of the crash from a connection error or missed
//! heartbeats. The adapter models the latter: every [`Detector::ping_interval`] a node pings
//! each active peer, and a peer it has heard nothing from (no pong, no message of any kind) for
//! [`Detector::failure_timeout`] is reported with [`HyParView::peer_failed`]. A node answers a
//! ping only from a peer in its own active view, so a one-sided link (left behind by a race of
//! DISCONNECT and NEIGHBOUR) is also torn down this way. NEIGHBOUR requests to a crashed
//! passive peer time out inside HyParView itself.
//!
//! **Restarts and isolation.** A node remembers the contact it first joined through. A
//! crash loses its state (cores and messages); a restart starts it afresh and joins through
//! that contact again, and a node that ends up knowing no peer at all
//! ([`HyParView::is_isolated`]) rejoins through it on its next tick, as the driver's
//! [`Overlay`](crate::core::Overlay) does.
//!
//! **Healing.** What brings an overlay back together after a partition or under loss lives in
//! the HyParView core, which the driver runs inside its `Overlay`, so the simulation runs the
//! same rules: lost peers kept and retried with backoff into full views, the contact joined
//! through again while the passive view cannot fill the active one, no one-sided links. What
//! the `Overlay` adds around it concerns real connections (opening and closing them, stale
//! addresses after a restart, its quicker retries of lost peers over a connection), which
//! this adapter has none of: a message to a reachable node always arrives.
//!
//! **Anti-entropy.** When Plumtree asks for an exchange, [`SimHandler::exchange`] queues a
//! request; the adapter sends the peer a digest of the ids it holds and the peer answers with
//! up to [`MAX_EXCHANGE_ITEMS`] messages the digest lacks. Deliveries by exchange are counted
//! apart from deliveries by the tree, which alone count for reliability.
//!
//! ```
//! use std::time::Duration;
//! use shoal_broadcast::simulation::{Scenario, run};
//!
//! let report = run(&Scenario {
//!     nodes: 30,
//!     join_interval: Duration::from_millis(20),
//!     ..Scenario::new(7)
//! });
//! assert_eq!(report.stable.reliability, 1.0);
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use shoal_sim::{Ctx, Network, Sim, SimNode, SimNodeId, SimStats};

use crate::core::{
    Graft, Handler, HyParView, HyParViewConfig, HyParViewMessage, HyParViewOutput, Plumtree,
    PlumtreeConfig, PlumtreeMessage, PlumtreeOutput,
};

/// The most messages one anti-entropy answer carries.
pub const MAX_EXCHANGE_ITEMS: usize = 64;

/// The most exchange requests a [`SimHandler`] queues before the adapter takes them.
const MAX_EXCHANGE_REQUESTS: usize = 8;

/// A broadcast id in the simulation: the root in the high 32 bits, then the root's
/// incarnation (12 bits), then its sequence number (20 bits).
pub type SimMessageId = u64;

/// What a simulated node sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimMessage {
    /// A HyParView message.
    Overlay(HyParViewMessage<SimNodeId>),
    /// A Plumtree message; the payload is the id again (its content does not matter here).
    Tree(PlumtreeMessage<SimNodeId, SimMessageId, u64>),
    /// The failure detector's probe.
    Ping,
    /// The answer to a probe, from a peer that has the prober in its active view.
    Pong,
    /// Anti-entropy: the ids the sender holds.
    Digest(Vec<SimMessageId>),
    /// Anti-entropy: messages the digest lacked.
    Items(Vec<(SimMessageId, u64)>),
}

/// The adapter's only timer: wake up to run the cores' timeouts and the detector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wake(Instant);

/// The ping-based failure detector's timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Detector {
    /// How often each active peer is pinged.
    pub ping_interval: Duration,
    /// Silence after which an active peer is reported failed.
    pub failure_timeout: Duration,
}

impl Default for Detector {
    fn default() -> Self {
        Detector {
            ping_interval: Duration::from_millis(500),
            failure_timeout: Duration::from_millis(1500),
        }
    }
}

/// How a node came to hold a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// It broadcast it.
    Root,
    /// By the tree (eager push or GRAFT), this many hops from the root.
    Tree {
        /// Hops from the root.
        hops: u32,
    },
    /// By an anti-entropy exchange.
    Exchange,
}

/// The application side in the simulation: keeps every message merged, and queues exchange
/// requests for the adapter.
#[derive(Clone, Debug, Default)]
pub struct SimHandler {
    messages: BTreeMap<SimMessageId, u64>,
    next_sequence: u64,
    root: u64,
    incarnation: u64,
    exchange_requests: Vec<SimNodeId>,
}

impl SimHandler {
    /// The messages held, by id.
    pub fn messages(&self) -> &BTreeMap<SimMessageId, u64> {
        &self.messages
    }
}

impl Handler<SimNodeId> for SimHandler {
    type Message = ();
    type Id = SimMessageId;
    type Payload = u64;
    type Error = std::convert::Infallible;

    fn produce(&mut self, (): ()) -> (SimMessageId, u64) {
        let id = (self.root << 32) | ((self.incarnation & 0xfff) << 20) | self.next_sequence;
        self.next_sequence += 1;
        (id, id)
    }

    fn merge(&mut self, id: &SimMessageId, payload: u64) -> bool {
        self.messages.insert(*id, payload).is_none()
    }

    fn is_stale(&self, id: &SimMessageId) -> bool {
        self.messages.contains_key(id)
    }

    fn graft(&mut self, id: &SimMessageId) -> Graft<u64, Self::Error> {
        self.messages.get(id).map_or(Graft::Stale, |payload| Graft::Payload(*payload))
    }

    fn exchange(&mut self, peer: &SimNodeId) -> Result<(), Self::Error> {
        if self.exchange_requests.len() < MAX_EXCHANGE_REQUESTS {
            self.exchange_requests.push(*peer);
        }
        Ok(())
    }
}

/// The configuration every node of a simulation shares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig {
    /// HyParView's (its seed is replaced by one drawn from the node's simulator RNG).
    pub hyparview: HyParViewConfig,
    /// Plumtree's (its seed likewise).
    pub plumtree: PlumtreeConfig,
    /// The failure detector's.
    pub detector: Detector,
}

/// The two cores of a started node, and the detector's state.
struct Running {
    overlay: HyParView<SimNodeId>,
    tree: Plumtree<SimNodeId, SimHandler>,
    /// When each active peer was last heard from.
    last_heard: BTreeMap<SimNodeId, Instant>,
    ping_at: Instant,
}

/// One simulated node: HyParView feeding Plumtree, plus the failure detector.
pub struct BroadcastNode {
    config: NodeConfig,
    running: Option<Running>,
    /// The contact of the first join, for rejoining after a restart or isolation.
    contact: Option<SimNodeId>,
    /// Bumped at every crash, so a restarted root's message ids are new.
    incarnation: u64,
    /// The earliest wake-up asked of the simulator and not yet fired.
    armed: Option<Instant>,
    deliveries: BTreeMap<SimMessageId, Delivery>,
    payloads_sent: BTreeMap<SimMessageId, u64>,
}

impl BroadcastNode {
    /// A node that does nothing until [`start`](Self::start)ed.
    pub fn new(config: NodeConfig) -> Self {
        BroadcastNode {
            config,
            running: None,
            contact: None,
            incarnation: 0,
            armed: None,
            deliveries: BTreeMap::new(),
            payloads_sent: BTreeMap::new(),
        }
    }

    /// Starts the cores (seeded from the node's simulator RNG) and joins through `contact`,
    /// if any (the first node has none).
    pub fn start(&mut self, ctx: &mut Ctx<'_, Self>, contact: Option<SimNodeId>) {
        let now = ctx.now();
        let me = ctx.id();
        let hyparview =
            HyParViewConfig { seed: ctx.rng().random(), ..self.config.hyparview.clone() };
        let plumtree = PlumtreeConfig { seed: ctx.rng().random(), ..self.config.plumtree.clone() };
        let handler =
            SimHandler { root: me as u64, incarnation: self.incarnation, ..SimHandler::default() };
        let mut running = Running {
            overlay: HyParView::new(me, hyparview, now),
            tree: Plumtree::new(me, plumtree, handler, now),
            last_heard: BTreeMap::new(),
            ping_at: now + self.config.detector.ping_interval,
        };
        self.contact = contact;
        if let Some(contact) = contact {
            // Only `ContactIsSelf` can fail, and then there is nothing to join.
            let _ = running.overlay.join(now, contact);
        }
        self.running = Some(running);
        self.settle(ctx);
    }

    /// Broadcasts a new message from this node; its id, or `None` if the node is not started.
    pub fn broadcast(&mut self, ctx: &mut Ctx<'_, Self>) -> Option<SimMessageId> {
        let running = self.running.as_mut()?;
        let id = running.tree.broadcast(ctx.now(), ()).ok()?;
        self.deliveries.insert(id, Delivery::Root);
        self.settle(ctx);
        Some(id)
    }

    /// How this node got each message it holds.
    pub fn deliveries(&self) -> &BTreeMap<SimMessageId, Delivery> {
        &self.deliveries
    }

    /// How many payload messages (GOSSIP) this node sent for each broadcast.
    pub fn payloads_sent(&self) -> &BTreeMap<SimMessageId, u64> {
        &self.payloads_sent
    }

    /// The HyParView core, once started.
    pub fn overlay(&self) -> Option<&HyParView<SimNodeId>> {
        self.running.as_ref().map(|running| &running.overlay)
    }

    /// The Plumtree core, once started.
    pub fn tree(&self) -> Option<&Plumtree<SimNodeId, SimHandler>> {
        self.running.as_ref().map(|running| &running.tree)
    }

    /// Moves every output of the cores onto the network and into the other core, then makes
    /// sure a wake-up is set for the earliest deadline.
    fn settle(&mut self, ctx: &mut Ctx<'_, Self>) {
        let Some(running) = self.running.as_mut() else { return };
        let now = ctx.now();
        loop {
            let mut progressed = false;
            while let Some(output) = running.overlay.poll_output() {
                progressed = true;
                match output {
                    HyParViewOutput::Send { to, message } => {
                        ctx.send(to, SimMessage::Overlay(message));
                    }
                    HyParViewOutput::NeighbourUp(peer) => {
                        running.last_heard.insert(peer, now);
                        running.tree.neighbour_up(now, peer);
                    }
                    HyParViewOutput::NeighbourDown(peer) => {
                        running.last_heard.remove(&peer);
                        running.tree.neighbour_down(&peer);
                    }
                }
            }
            while let Some(output) = running.tree.poll_output() {
                progressed = true;
                match output {
                    PlumtreeOutput::Send { to, message } => {
                        if let PlumtreeMessage::Gossip { id, .. } = &message {
                            *self.payloads_sent.entry(*id).or_default() += 1;
                        }
                        ctx.send(to, SimMessage::Tree(message));
                    }
                    PlumtreeOutput::Exchange { peer } => {
                        let _ = running.tree.handler_mut().exchange(&peer);
                    }
                }
            }
            for peer in std::mem::take(&mut running.tree.handler_mut().exchange_requests) {
                let digest = running.tree.handler().messages.keys().copied().collect();
                ctx.send(peer, SimMessage::Digest(digest));
            }
            if !progressed {
                break;
            }
        }
        let next =
            [running.overlay.poll_timeout(), running.tree.poll_timeout(), Some(running.ping_at)]
                .into_iter()
                .flatten()
                .min();
        if let Some(next) = next
            && self.armed.is_none_or(|armed| next < armed)
        {
            self.armed = Some(next);
            ctx.set_timer(next.saturating_duration_since(now), Wake(next));
        }
    }

    /// The detector's tick: report silent peers, ping the rest.
    fn probe(running: &mut Running, ctx: &mut Ctx<'_, Self>, detector: Detector) {
        let now = ctx.now();
        if running.ping_at > now {
            return;
        }
        running.ping_at = now + detector.ping_interval;
        let silent: Vec<SimNodeId> = running
            .last_heard
            .iter()
            .filter(|(_, heard)| **heard + detector.failure_timeout <= now)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in &silent {
            running.last_heard.remove(peer);
            running.overlay.peer_failed(now, peer);
        }
        for peer in running.last_heard.keys() {
            ctx.send(*peer, SimMessage::Ping);
        }
    }
}

impl SimNode for BroadcastNode {
    type Msg = SimMessage;
    type Timer = Wake;
    type Output = ();

    fn on_message(&mut self, ctx: &mut Ctx<'_, Self>, from: SimNodeId, message: SimMessage) {
        let Some(running) = self.running.as_mut() else { return };
        let now = ctx.now();
        if let Some(heard) = running.last_heard.get_mut(&from) {
            *heard = now;
        }
        match message {
            SimMessage::Overlay(message) => {
                // Errors mean "ignored, state unchanged": nothing for the adapter to do.
                let _ = running.overlay.handle_message(now, from, message);
            }
            SimMessage::Tree(message) => {
                let gossip = match &message {
                    PlumtreeMessage::Gossip { id, round, .. } => Some((*id, *round)),
                    _ => None,
                };
                // As the driver does: a sender that is no neighbour holds a link alone.
                if !running.tree.neighbours().contains(&from) {
                    running.overlay.handle_neighbour_traffic(&from);
                }
                let _ = running.tree.handle_message(now, from, message);
                if let Some((id, round)) = gossip
                    && !self.deliveries.contains_key(&id)
                    && running.tree.handler().is_stale(&id)
                {
                    self.deliveries.insert(id, Delivery::Tree { hops: round.saturating_add(1) });
                }
            }
            SimMessage::Ping => {
                if running.overlay.active_view().contains(&from) {
                    ctx.send(from, SimMessage::Pong);
                }
            }
            SimMessage::Pong => {}
            SimMessage::Digest(ids) => {
                let known: BTreeSet<SimMessageId> = ids.into_iter().collect();
                let items: Vec<(SimMessageId, u64)> = running
                    .tree
                    .handler()
                    .messages
                    .iter()
                    .filter(|(id, _)| !known.contains(id))
                    .take(MAX_EXCHANGE_ITEMS)
                    .map(|(id, payload)| (*id, *payload))
                    .collect();
                if !items.is_empty() {
                    ctx.send(from, SimMessage::Items(items));
                }
            }
            SimMessage::Items(items) => {
                for (id, payload) in items.into_iter().take(MAX_EXCHANGE_ITEMS) {
                    if running.tree.handler_mut().merge(&id, payload) {
                        self.deliveries.entry(id).or_insert(Delivery::Exchange);
                    }
                }
            }
        }
        self.settle(ctx);
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, Wake(at): Wake) {
        if self.armed == Some(at) {
            self.armed = None;
        }
        let Some(running) = self.running.as_mut() else { return };
        let now = ctx.now();
        running.overlay.handle_timeout(now);
        running.tree.handle_timeout(now);
        Self::probe(running, ctx, self.config.detector);
        if running.overlay.is_isolated()
            && let Some(contact) = self.contact
        {
            let _ = running.overlay.join(now, contact);
        }
        self.settle(ctx);
    }

    fn on_crash(&mut self) {
        // A crash loses everything it held; what it sent stays counted for the report.
        self.running = None;
        self.armed = None;
        self.deliveries.clear();
        self.incarnation += 1;
    }

    fn on_restart(&mut self, ctx: &mut Ctx<'_, Self>) {
        let contact = self.contact;
        self.start(ctx, contact);
    }
}

/// A scenario: build an overlay by joins, let it settle, broadcast from one root, then once
/// from each of several new roots, crash a share of the nodes at once (before a broadcast or
/// during one), broadcast again. Loss and duplication are the [`Network`]'s.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Seeds everything: the simulator, the nodes' RNGs, the choice of contacts, root and
    /// crashed nodes. The same scenario with the same seed replays exactly.
    pub seed: u64,
    /// How many nodes.
    pub nodes: usize,
    /// The simulated network.
    pub network: Network,
    /// Every node's configuration.
    pub node: NodeConfig,
    /// Time between one node's join and the next (each joins through a random earlier node).
    pub join_interval: Duration,
    /// Time to settle after the last join, before the first broadcast.
    pub settle: Duration,
    /// Broadcasts before the crash; the first shapes the root's tree, the last is measured as
    /// the stable one.
    pub warmup_broadcasts: usize,
    /// Time after each broadcast before it is measured (and the next one starts).
    pub broadcast_interval: Duration,
    /// Broadcasts after the warm-up, each from a node that never broadcast before (the
    /// first broadcast of a root, measured in [`Report::new_roots`]): many senders.
    pub new_roots: usize,
    /// Share of the nodes (never the root) crashed at once after the warm-up.
    pub crash_fraction: f64,
    /// When the crash hits: `None` just before the first broadcast after it; `Some(after)`
    /// that long after the first broadcast started, while it spreads.
    pub crash_during_broadcast: Option<Duration>,
    /// Broadcasts after the crash; the first starts right after it.
    pub broadcasts_after_crash: usize,
    /// Restart the crashed nodes after the broadcasts that follow the crash, let them rejoin
    /// for `settle`, and measure one more broadcast ([`Report::after_restart`]).
    pub restart_crashed: bool,
    /// Time after the last broadcast for anti-entropy to catch up, before
    /// [`Report::eventual_reliability`] is measured.
    pub anti_entropy_wait: Duration,
}

impl Scenario {
    /// 1,000 nodes on the simulator's reliable network (1–10 ms delays), no crash, default
    /// protocol configurations except that anti-entropy is off: the paper measures the tree
    /// alone, and an exchange that happens to run between a broadcast and its arrival by the
    /// tree would hide a delivery from the measure. Set
    /// `node.plumtree.exchange_interval` to measure [`Report::eventual_reliability`] with it.
    pub fn new(seed: u64) -> Self {
        let plumtree = PlumtreeConfig { exchange_interval: None, ..PlumtreeConfig::default() };
        Scenario {
            seed,
            nodes: 1000,
            network: Network::reliable(),
            node: NodeConfig { plumtree, ..NodeConfig::default() },
            join_interval: Duration::from_millis(10),
            settle: Duration::from_secs(10),
            warmup_broadcasts: 3,
            broadcast_interval: Duration::from_secs(5),
            new_roots: 0,
            crash_fraction: 0.0,
            crash_during_broadcast: None,
            broadcasts_after_crash: 0,
            restart_crashed: false,
            anti_entropy_wait: Duration::ZERO,
        }
    }
}

/// The measures of one broadcast (as defined in the Plumtree paper's evaluation, §4).
#[derive(Clone, Debug, PartialEq)]
pub struct BroadcastReport {
    /// The broadcast.
    pub id: SimMessageId,
    /// Nodes up when it was measured.
    pub live: usize,
    /// Live nodes that got it through the tree (the root included).
    pub delivered: usize,
    /// `delivered / live`.
    pub reliability: f64,
    /// `delivered / live` [`EARLY_MEASURE`] after the broadcast started (live nodes then),
    /// or at the end if the broadcast interval is shorter.
    pub reliability_at_1s: f64,
    /// Payload (GOSSIP) messages sent for it, `m`.
    pub payload_messages: u64,
    /// Relative message redundancy: `m / (delivered - 1) - 1`; 0 for a perfect tree.
    pub rmr: f64,
    /// Last delivery hop: the most hops from the root to any node that got it.
    pub ldh: u32,
}

/// What a [`Scenario`] measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The scenario's seed, to replay it.
    pub seed: u64,
    /// Nodes in the simulation.
    pub nodes: usize,
    /// Nodes crashed.
    pub crashed: usize,
    /// The last warm-up broadcast, on the settled tree.
    pub stable: BroadcastReport,
    /// The first broadcast of each new root, in order.
    pub new_roots: Vec<BroadcastReport>,
    /// The broadcasts after the crash, in order.
    pub after_crash: Vec<BroadcastReport>,
    /// The broadcast after the crashed nodes restarted and rejoined, if they did.
    pub after_restart: Option<BroadcastReport>,
    /// Share of (live node, broadcast after the crash) pairs delivered by any means, tree or
    /// anti-entropy, at the end; 1.0 when there was no broadcast after the crash.
    pub eventual_reliability: f64,
    /// Live nodes whose active view is empty at the end.
    pub isolated: usize,
    /// Active-view links between live nodes held by one side only at the end (HyParView's
    /// views are symmetric once quiet; a NEIGHBOUR reply in flight is the usual exception).
    pub one_sided_links: usize,
    /// The simulator's message and timer counts.
    pub stats: SimStats,
    /// The simulator's trace fingerprint (equal for equal seeds).
    pub trace_hash: u64,
}

/// When [`BroadcastReport::reliability_at_1s`] is measured.
pub const EARLY_MEASURE: Duration = Duration::from_secs(1);

/// Runs `scenario` and measures it.
pub fn run(scenario: &Scenario) -> Report {
    let mut rng = SmallRng::seed_from_u64(scenario.seed);
    let nodes = (0..scenario.nodes).map(|_| BroadcastNode::new(scenario.node.clone())).collect();
    let mut sim = Sim::new(scenario.seed, scenario.network, nodes);
    for id in 0..scenario.nodes {
        let contact = (id > 0).then(|| rng.random_range(0..id));
        sim.invoke(id, |node, ctx| node.start(ctx, contact));
        sim.run_for(scenario.join_interval);
    }
    sim.run_for(scenario.settle);

    let root = rng.random_range(0..scenario.nodes.max(1));
    let interval = scenario.broadcast_interval;
    let mut stable = None;
    for _ in 0..scenario.warmup_broadcasts.max(1) {
        stable = Some(broadcast_and_measure(&mut sim, root, interval, None));
    }

    let mut others: Vec<SimNodeId> = (0..scenario.nodes).filter(|id| *id != root).collect();
    let new_roots = scenario.new_roots.min(others.len());
    let new_roots: Vec<BroadcastReport> = (0..new_roots)
        .map(|index| {
            let pick = rng.random_range(index..others.len());
            others.swap(index, pick);
            broadcast_and_measure(&mut sim, others[index], interval, None)
        })
        .collect();

    let crashed = ((scenario.nodes as f64 * scenario.crash_fraction) as usize).min(others.len());
    for index in 0..crashed {
        let pick = rng.random_range(index..others.len());
        others.swap(index, pick);
    }
    let mut after_crash = Vec::new();
    match scenario.crash_during_broadcast {
        Some(after) if scenario.broadcasts_after_crash > 0 => {
            let crash = (after, &others[..crashed]);
            after_crash.push(broadcast_and_measure(&mut sim, root, interval, Some(crash)));
        }
        _ => {
            for &id in &others[..crashed] {
                sim.crash(id);
            }
        }
    }
    while after_crash.len() < scenario.broadcasts_after_crash {
        after_crash.push(broadcast_and_measure(&mut sim, root, interval, None));
    }
    let after_restart = scenario.restart_crashed.then(|| {
        for &id in &others[..crashed] {
            sim.restart(id);
        }
        sim.run_for(scenario.settle);
        broadcast_and_measure(&mut sim, root, interval, None)
    });
    sim.run_for(scenario.anti_entropy_wait);

    let live: Vec<SimNodeId> = sim.up_nodes().collect();
    let pairs = live.len() * after_crash.len();
    let held: usize = after_crash
        .iter()
        .map(|b| live.iter().filter(|id| sim.node(**id).deliveries.contains_key(&b.id)).count())
        .sum();
    let isolated = live
        .iter()
        .filter(|id| {
            sim.node(**id).overlay().is_none_or(|overlay| overlay.active_view().is_empty())
        })
        .count();
    let one_sided_links = live
        .iter()
        .filter_map(|id| sim.node(*id).overlay().map(|overlay| (*id, overlay)))
        .map(|(id, overlay)| {
            let one_sided = |peer: &&SimNodeId| {
                sim.is_up(**peer)
                    && sim
                        .node(**peer)
                        .overlay()
                        .is_none_or(|other| !other.active_view().contains(&id))
            };
            overlay.active_view().iter().filter(one_sided).count()
        })
        .sum();
    Report {
        seed: scenario.seed,
        nodes: scenario.nodes,
        crashed,
        stable: stable.expect("at least one warm-up broadcast"),
        new_roots,
        after_crash,
        after_restart,
        eventual_reliability: if pairs == 0 { 1.0 } else { held as f64 / pairs as f64 },
        isolated,
        one_sided_links,
        stats: sim.stats(),
        trace_hash: sim.trace_hash(),
    }
}

/// Broadcasts one message from `root`, runs for `interval`, and measures it (and at
/// [`EARLY_MEASURE`]); `crash`, if given, is `(after, nodes)`: `nodes` crash `after` the
/// broadcast started.
fn broadcast_and_measure(
    sim: &mut Sim<BroadcastNode>,
    root: SimNodeId,
    interval: Duration,
    crash: Option<(Duration, &[SimNodeId])>,
) -> BroadcastReport {
    let id = sim.invoke(root, |node, ctx| node.broadcast(ctx)).flatten();
    let mut elapsed = Duration::ZERO;
    let mut early = None;
    let mut crash = crash;
    while elapsed < interval || crash.is_some() {
        let early_at = EARLY_MEASURE.min(interval);
        let pending_crash = crash.map(|(after, _)| after);
        let pending_early = early.is_none().then_some(early_at);
        let next = [pending_crash, pending_early, Some(interval)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(interval)
            .max(elapsed);
        sim.run_for(next - elapsed);
        elapsed = next;
        if let Some((after, nodes)) = crash
            && after <= elapsed
        {
            for node in nodes {
                sim.crash(*node);
            }
            crash = None;
        }
        if early.is_none() && elapsed >= early_at {
            early = id.map(|id| tree_deliveries(sim, id));
        }
    }
    let Some(id) = id else {
        return BroadcastReport {
            id: 0,
            live: 0,
            delivered: 0,
            reliability: 0.0,
            reliability_at_1s: 0.0,
            payload_messages: 0,
            rmr: 0.0,
            ldh: 0,
        };
    };
    let (live, delivered, ldh) = tree_deliveries(sim, id);
    let (early_live, early_delivered, _) = early.unwrap_or((live, delivered, ldh));
    let payload_messages: u64 = (0..sim.len())
        .map(|node| sim.node(node).payloads_sent.get(&id).copied().unwrap_or(0))
        .sum();
    let rmr =
        if delivered > 1 { payload_messages as f64 / (delivered - 1) as f64 - 1.0 } else { 0.0 };
    BroadcastReport {
        id,
        live,
        delivered,
        reliability: delivered as f64 / live.max(1) as f64,
        reliability_at_1s: early_delivered as f64 / early_live.max(1) as f64,
        payload_messages,
        rmr,
        ldh,
    }
}

/// Now: live nodes, those of them that got `id` through the tree (the root included), and
/// the most hops it took to any of them.
fn tree_deliveries(sim: &Sim<BroadcastNode>, id: SimMessageId) -> (usize, usize, u32) {
    let (mut live, mut delivered, mut ldh) = (0, 0, 0);
    for node in sim.up_nodes() {
        live += 1;
        match sim.node(node).deliveries.get(&id) {
            Some(Delivery::Root) => delivered += 1,
            Some(Delivery::Tree { hops }) => {
                delivered += 1;
                ldh = ldh.max(*hops);
            }
            Some(Delivery::Exchange) | None => {}
        }
    }
    (live, delivered, ldh)
}
