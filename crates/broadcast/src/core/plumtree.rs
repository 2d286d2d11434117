//! The Plumtree core: [`Plumtree`], its handler trait, messages, outputs and configuration.
//! The protocol, and what the core does not do, are described on [`Plumtree`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Debug;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use super::random;

#[cfg(test)]
mod tests;

/// What an application plugs into Plumtree: the roles of Partisan's broadcast handler.
///
/// The core owns the handler and calls it synchronously; a handler keeps the messages (it is
/// the store that GRAFTs are answered from) and decides what is new. `P` identifies a peer: a
/// handler registered for a [`Topic`](crate::Topic) of a [`Broadcast`](crate::Broadcast)
/// implements `Handler<String>` (peers by node name) and [`AntiEntropy`](crate::AntiEntropy).
pub trait Handler<P> {
    /// What the application hands to [`Plumtree::broadcast`].
    type Message;
    /// Identifies a broadcast; ordered so that the core's bookkeeping iterates
    /// deterministically.
    type Id: Clone + Ord + Debug;
    /// What travels in GOSSIP messages.
    type Payload: Clone + Debug;
    /// Why a GRAFT or an exchange could not be served.
    type Error: Debug;

    /// Turns a message to broadcast into its id and payload (Partisan's `broadcast_data`).
    fn produce(&mut self, message: Self::Message) -> (Self::Id, Self::Payload);

    /// Merges a received payload into the application's state; `true` when it was new (and
    /// so is delivered and pushed on), `false` when it was already known (a duplicate, which
    /// prunes the link it came over).
    fn merge(&mut self, id: &Self::Id, payload: Self::Payload) -> bool;

    /// Whether `id` is already known (or superseded), so an IHAVE for it needs no GRAFT.
    fn is_stale(&self, id: &Self::Id) -> bool;

    /// The payload for `id`, asked for by a peer's GRAFT.
    fn graft(&mut self, id: &Self::Id) -> Graft<Self::Payload, Self::Error>;

    /// Starts an anti-entropy exchange with `peer`. Called by the driver when the core emits
    /// [`PlumtreeOutput::Exchange`]; how the exchange runs (digests, Merkle trees, ...) is the
    /// application's business.
    fn exchange(&mut self, peer: &P) -> Result<(), Self::Error>;
}

/// What [`Handler::graft`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Graft<T, E> {
    /// The payload, sent to the grafting peer.
    Payload(T),
    /// The message is superseded or forgotten: nothing is sent.
    Stale,
    /// The handler failed: nothing is sent; the grafting peer will try its next announcer.
    Failed(E),
}

/// One announcement in an IHAVE: message `id` from `root`, `round` hops from it at the
/// announcer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement<P, I> {
    /// The broadcast.
    pub id: I,
    /// Hops from the root to the announcer.
    pub round: u32,
    /// The node the broadcast started from.
    pub root: P,
}

/// A Plumtree protocol message (the paper's GOSSIP, IHAVE, GRAFT and PRUNE).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlumtreeMessage<P, I, T> {
    /// The payload, pushed eagerly (or in answer to a GRAFT). `round` is the sender's
    /// distance from the root, so the receiver is `round + 1` hops from it.
    Gossip {
        /// The broadcast.
        id: I,
        /// Its payload.
        payload: T,
        /// Hops from the root to the sender.
        round: u32,
        /// The node the broadcast started from.
        root: P,
    },
    /// Lazy push: these messages exist, ask if you miss one.
    IHave {
        /// The announcements batched since the last lazy tick.
        announcements: Vec<Announcement<P, I>>,
    },
    /// Make our link eager in `root`'s tree, and send me `id` if one is named. Without an id
    /// it is the §3.8 optimisation's GRAFT: the link is a shortcut, the message is held.
    Graft {
        /// The missing broadcast, if any.
        id: Option<I>,
        /// The round announced for it.
        round: u32,
        /// The node the broadcast started from.
        root: P,
    },
    /// Make our link lazy in `root`'s tree: I received a duplicate over it.
    Prune {
        /// The tree the link leaves.
        root: P,
    },
}

/// What the core asks its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlumtreeOutput<P, I, T> {
    /// Send `message` to `to`.
    Send {
        /// The receiving neighbour.
        to: P,
        /// The message.
        message: PlumtreeMessage<P, I, T>,
    },
    /// Time for an anti-entropy exchange with `peer`: call [`Handler::exchange`].
    Exchange {
        /// A neighbour chosen at random.
        peer: P,
    },
}

/// Timeouts and bounds of a [`Plumtree`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlumtreeConfig {
    /// How often queued IHAVE announcements are flushed, one batch per peer.
    pub lazy_tick: Duration,
    /// How long a message announced by IHAVE may stay missing before the first GRAFT (the
    /// paper's `timeout1`), at least. Longer than the eager path's usual lead over the lazy
    /// one.
    pub graft_timeout: Duration,
    /// Up to how much longer than `graft_timeout` the first GRAFT waits, drawn uniformly for
    /// each missing message (beyond the paper). When a message is lost on a tree link, every
    /// node of the subtree below holds announcements of it from its lazy links, received
    /// within a lazy tick of each other: with one fixed timeout they would all GRAFT at once,
    /// each pulling a copy that its parent, grafting too, is about to push (in the 1,000-node
    /// simulation at 1% loss, half a payload more per node). Spread timers let the first
    /// GRAFTs reach most of the subtree through its eager links first, as SRM spreads its
    /// repair requests. `Duration::ZERO` for the paper's fixed timeout.
    pub graft_jitter: Duration,
    /// How long to wait after a GRAFT before grafting from the next announcer (`timeout2`).
    pub second_graft_timeout: Duration,
    /// How often to ask for an anti-entropy exchange with a random neighbour; `None` for never.
    pub exchange_interval: Option<Duration>,
    /// Bound on announcements queued for one peer between ticks; past it the oldest is
    /// dropped (anti-entropy covers what a lost announcement would have repaired).
    pub max_lazy_queue: usize,
    /// Bound on messages tracked as missing; announcements of more are ignored until some
    /// arrive or are given up (anti-entropy again).
    pub max_missing: usize,
    /// Bound on roots with their own eager/lazy sets; past it the least recently used root
    /// is forgotten (its tree starts again as a new root's on its next broadcast).
    pub max_roots: usize,
    /// The §3.8 optimisation: when an IHAVE shows that a message would have arrived at least
    /// this many hops sooner through its announcer than through the eager link it came over,
    /// the announcer is grafted (without payload) and the eager link pruned, so trees
    /// repaired after failures shrink back towards shortest paths. `None` turns it off.
    pub optimisation_threshold: Option<u32>,
    /// How long a message delivered here is announced to neighbours that come up later
    /// (beyond the paper): a node whose neighbours all failed at once, the root included,
    /// gets new ones from the overlay, and this catch-up IHAVE lets them GRAFT what was lost
    /// with the old links. `Duration::ZERO` turns it off.
    pub catch_up_window: Duration,
    /// Bound on the messages kept for catch-up announcements (the most recent ones).
    pub max_catch_up: usize,
    /// Bound on the messages whose parent and hop count are remembered for the optimisation;
    /// past it the oldest is forgotten (and can no longer trigger it).
    pub max_remembered: usize,
    /// Seeds the choice of exchange peers.
    pub seed: u64,
}

impl Default for PlumtreeConfig {
    fn default() -> Self {
        PlumtreeConfig {
            lazy_tick: Duration::from_millis(200),
            graft_timeout: Duration::from_millis(500),
            graft_jitter: Duration::from_millis(250),
            second_graft_timeout: Duration::from_millis(500),
            exchange_interval: Some(Duration::from_secs(10)),
            max_lazy_queue: 4096,
            max_missing: 4096,
            max_roots: 1024,
            optimisation_threshold: Some(3),
            catch_up_window: Duration::from_secs(10),
            max_catch_up: 256,
            max_remembered: 4096,
            seed: 0,
        }
    }
}

/// Why the [`Plumtree`] core ignored an input ([`Plumtree::broadcast`] or
/// [`Plumtree::handle_message`]). Every variant means the same for state: unchanged, nothing
/// sent; the message is never half-applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlumtreeError {
    /// From [`Plumtree::broadcast`]: the handler's `merge` said the produced message is not
    /// new; nothing was sent and the core's state is unchanged.
    #[error("the handler already knew the produced message; nothing was sent")]
    NotNew,
    /// From [`Plumtree::handle_message`]: an IHAVE, GRAFT or PRUNE from a peer that is not a
    /// neighbour (it raced with a neighbour-down, or is bogus). Tree links exist only between
    /// neighbours, so the message was ignored and state is unchanged; a GRAFTing peer will try
    /// its next announcer.
    #[error("{kind} from a peer that is not a neighbour: ignored, state unchanged")]
    NotNeighbour {
        /// The message's kind.
        kind: &'static str,
    },
    /// From [`Plumtree::handle_message`]: a message that claims to come from this node
    /// itself: ignored, state unchanged.
    #[error("a message from this node itself: ignored, state unchanged")]
    FromSelf,
}

/// A root's spanning tree, as seen from this node.
#[derive(Clone, Debug)]
struct Tree<P> {
    eager: BTreeSet<P>,
    lazy: BTreeSet<P>,
    /// For forgetting the least recently used root past `max_roots`.
    last_used: u64,
}

/// A message announced to us but not received yet.
#[derive(Clone, Debug)]
struct Missing<P> {
    /// When to GRAFT from the next announcer.
    deadline: Instant,
    /// Who announced it, in order of arrival: (announcer, round, root).
    announcers: VecDeque<(P, u32, P)>,
}

/// Plumtree: epidemic broadcast trees (Leitão, Pereira, Rodrigues, SRDS 2007), sans-IO.
///
/// A [`Plumtree`] core spreads each broadcast along a spanning tree embedded in the overlay:
/// payloads go *eagerly* to the peers in a root's eager set, and only announcements (IHAVE,
/// batched per lazy tick) go *lazily* to the rest. A duplicate payload PRUNEs the link it came
/// over into the lazy set; a message announced but not received within a timeout is GRAFTed
/// from an announcer, which also turns that link eager again. The tree thus forms from the
/// first broadcast and heals after failures. Periodic anti-entropy exchanges (run by the
/// application through [`Handler::exchange`]) catch anything the tree lost.
///
/// ```text
///            broadcast / handle_message / neighbour_up|down / handle_timeout (all with `now`)
///                                       │
///                                       ▼
///   Handler ◄── produce, merge, ──  Plumtree  ──► poll_output(): Send { to, message }
///   (the app)    is_stale, graft       │                        Exchange { peer }
///                                      └──────► poll_timeout(): when to call handle_timeout
/// ```
///
/// Eager and lazy sets are kept *per root* (the node a broadcast started from), as Partisan
/// does and as the paper suggests for many senders (§3.7): each root gets its own tree, shaped
/// by the latency from that root, instead of one tree that is good for one sender only. The
/// §3.8 optimisation (swap an eager link for a lazy one that is several hops shorter) is on
/// by default.
///
/// Beyond the paper, for many senders: a root seen for the first time does not start from
/// "every neighbour eager" (the paper's `eagerPushPeers ← neighbours`, which floods the whole
/// overlay once per new root) but from a copy of the tree of the root whose message this node
/// delivered last. Eager links are symmetric (a PRUNE or GRAFT changes both ends), so a
/// settled tree's eager links form a spanning tree of the overlay, which carries a broadcast
/// from any node to every node once: a new root's first broadcast follows it, and its own
/// tree then shortens towards that root through the §3.8 optimisation. Nodes that delivered
/// different roots last (concurrent senders) start the new tree from different copies; what
/// that leaves unreached is grafted from the lazy links, as after a failure. Only a node that
/// has seen no root at all starts from every neighbour eager. And a duplicate that comes over
/// the very link its message first came by (the network's copy, or an answer to a GRAFT sent
/// twice) is not a second path and prunes nothing.
///
/// Beyond the paper: a neighbour that comes up is announced (IHAVE) the messages delivered
/// within [`PlumtreeConfig::catch_up_window`], so that a broadcast in flight when a node lost
/// all its links (even at its root) still spreads through the links the overlay repairs; and
/// the core accepts a payload from a non-neighbour (a race with neighbour-down) without making
/// it a tree link.
///
/// What this core does *not* do: open connections, keep time, or know the membership. The
/// overlay ([`HyParView`](super::HyParView) or a full mesh) reports neighbours going up and
/// down; the driver moves messages and calls [`Plumtree::handle_timeout`] when
/// [`Plumtree::poll_timeout`] says.
///
/// ```
/// use std::time::Instant;
/// use shoal_broadcast::core::{Graft, Handler, Plumtree, PlumtreeConfig, PlumtreeOutput};
///
/// /// Keeps every message, by a sequence number.
/// #[derive(Default)]
/// struct Log(std::collections::BTreeMap<u64, String>);
///
/// impl Handler<&'static str> for Log {
///     type Message = String;
///     type Id = u64;
///     type Payload = String;
///     type Error = std::convert::Infallible;
///     fn produce(&mut self, text: String) -> (u64, String) {
///         (self.0.len() as u64, text)
///     }
///     fn merge(&mut self, id: &u64, text: String) -> bool {
///         self.0.insert(*id, text).is_none()
///     }
///     fn is_stale(&self, id: &u64) -> bool {
///         self.0.contains_key(id)
///     }
///     fn graft(&mut self, id: &u64) -> Graft<String, Self::Error> {
///         self.0.get(id).map_or(Graft::Stale, |text| Graft::Payload(text.clone()))
///     }
///     fn exchange(&mut self, _peer: &&'static str) -> Result<(), Self::Error> {
///         Ok(())
///     }
/// }
///
/// let now = Instant::now();
/// let mut a = Plumtree::new("a", PlumtreeConfig::default(), Log::default(), now);
/// let mut b = Plumtree::new("b", PlumtreeConfig::default(), Log::default(), now);
/// a.neighbour_up(now, "b");
/// b.neighbour_up(now, "a");
///
/// a.broadcast(now, "hello".to_string()).unwrap();
/// while let Some(PlumtreeOutput::Send { to, message }) = a.poll_output() {
///     assert_eq!(to, "b");
///     b.handle_message(now, "a", message).unwrap();
/// }
/// assert_eq!(b.handler().0.get(&0).map(String::as_str), Some("hello"));
/// ```
pub struct Plumtree<P, H: Handler<P>> {
    me: P,
    config: PlumtreeConfig,
    handler: H,
    rng: SmallRng,
    neighbours: BTreeSet<P>,
    trees: BTreeMap<P, Tree<P>>,
    uses: u64,
    lazy_queues: BTreeMap<P, VecDeque<Announcement<P, H::Id>>>,
    flush_at: Option<Instant>,
    missing: BTreeMap<H::Id, Missing<P>>,
    /// For the §3.8 optimisation: who each recent message came from, and after how many hops.
    received: BTreeMap<H::Id, (P, u32)>,
    /// `received`'s ids, oldest first, to forget past `max_remembered`.
    received_order: VecDeque<H::Id>,
    /// The root of the message delivered last (broadcast here or received): a new root's
    /// tree starts as a copy of this root's.
    last_root: Option<P>,
    /// Messages delivered lately, with when they stop being announced to new neighbours.
    recent: VecDeque<(Instant, Announcement<P, H::Id>)>,
    exchange_at: Option<Instant>,
    /// Announcements dropped past `max_lazy_queue`, for the driver's counters.
    dropped_announcements: u64,
    /// Payloads received that were known already (redundant deliveries), for the driver's
    /// counters.
    duplicates: u64,
    outputs: VecDeque<PlumtreeOutput<P, H::Id, H::Payload>>,
}

impl<P, H> Plumtree<P, H>
where
    P: Clone + Ord + Debug,
    H: Handler<P>,
{
    /// A node `me` with no neighbours yet; the first exchange is due one interval after `now`.
    pub fn new(me: P, config: PlumtreeConfig, handler: H, now: Instant) -> Self {
        let rng = SmallRng::seed_from_u64(config.seed);
        let exchange_at = config.exchange_interval.map(|interval| now + interval);
        Plumtree {
            me,
            config,
            handler,
            rng,
            neighbours: BTreeSet::new(),
            trees: BTreeMap::new(),
            uses: 0,
            lazy_queues: BTreeMap::new(),
            flush_at: None,
            missing: BTreeMap::new(),
            received: BTreeMap::new(),
            received_order: VecDeque::new(),
            last_root: None,
            recent: VecDeque::new(),
            exchange_at,
            dropped_announcements: 0,
            duplicates: 0,
            outputs: VecDeque::new(),
        }
    }

    /// This node.
    pub fn id(&self) -> &P {
        &self.me
    }

    /// The application's handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The application's handler, to change (or to start an exchange with).
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// The current neighbours, as reported by the overlay.
    pub fn neighbours(&self) -> &BTreeSet<P> {
        &self.neighbours
    }

    /// The eager and lazy sets of `root`'s tree; `None` if no broadcast from `root` was seen
    /// (its tree would start with every neighbour eager).
    pub fn tree(&self, root: &P) -> Option<(&BTreeSet<P>, &BTreeSet<P>)> {
        self.trees.get(root).map(|tree| (&tree.eager, &tree.lazy))
    }

    /// How many announced messages are awaited (each with a GRAFT timer).
    pub fn missing_len(&self) -> usize {
        self.missing.len()
    }

    /// How many IHAVE announcements were dropped (the oldest first) past
    /// [`PlumtreeConfig::max_lazy_queue`] since the core started. Each was for a message
    /// the peer may lack: another announcer's IHAVE or an anti-entropy exchange covers it.
    pub fn dropped_announcements(&self) -> u64 {
        self.dropped_announcements
    }

    /// How many payloads (GOSSIP) arrived that were known already since the core started:
    /// redundant deliveries, the price of the eager links the trees have not pruned yet (and
    /// of GRAFTs answered by more than one announcer).
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// The next output to act on, oldest first. Drain after every call.
    pub fn poll_output(&mut self) -> Option<PlumtreeOutput<P, H::Id, H::Payload>> {
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due: the lazy tick (only while
    /// announcements are queued), the earliest GRAFT timer, the next exchange.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let graft = self.missing.values().map(|missing| missing.deadline).min();
        [self.flush_at, graft, self.exchange_at].into_iter().flatten().min()
    }

    /// Broadcasts `message` from this node (the paper's `Broadcast(m)`): the handler produces
    /// its id and payload and merges it (so this node can answer GRAFTs for it), then the
    /// payload goes to this root's eager peers and an announcement to its lazy peers.
    pub fn broadcast(&mut self, now: Instant, message: H::Message) -> Result<H::Id, PlumtreeError> {
        let (id, payload) = self.handler.produce(message);
        if !self.handler.merge(&id, payload.clone()) {
            return Err(PlumtreeError::NotNew);
        }
        let root = self.me.clone();
        self.push(now, &id, &payload, 0, &root, None);
        self.last_root = Some(root.clone());
        self.note_recent(now, Announcement { id: id.clone(), round: 0, root });
        Ok(id)
    }

    /// A message from `from` arrives. Errors say what was ignored; the message is never
    /// half-applied.
    pub fn handle_message(
        &mut self,
        now: Instant,
        from: P,
        message: PlumtreeMessage<P, H::Id, H::Payload>,
    ) -> Result<(), PlumtreeError> {
        if from == self.me {
            return Err(PlumtreeError::FromSelf);
        }
        match message {
            PlumtreeMessage::Gossip { id, payload, round, root } => {
                self.on_gossip(now, from, id, payload, round, root);
                Ok(())
            }
            PlumtreeMessage::IHave { announcements } => {
                self.require_neighbour(&from, "IHAVE")?;
                self.on_ihave(now, from, announcements);
                Ok(())
            }
            PlumtreeMessage::Graft { id, round, root } => {
                self.require_neighbour(&from, "GRAFT")?;
                self.on_graft(from, id, round, root);
                Ok(())
            }
            PlumtreeMessage::Prune { root } => {
                self.require_neighbour(&from, "PRUNE")?;
                let tree = self.tree_mut(&root);
                tree.eager.remove(&from);
                tree.lazy.insert(from);
                Ok(())
            }
        }
    }

    /// The overlay reports a new neighbour (the paper's `NeighborUp`): it joins every known
    /// root's eager set, so the trees can use it until a duplicate prunes it, and is sent
    /// (on the next lazy tick) announcements of the messages delivered within
    /// [`PlumtreeConfig::catch_up_window`].
    pub fn neighbour_up(&mut self, now: Instant, peer: P) {
        if peer == self.me || !self.neighbours.insert(peer.clone()) {
            return;
        }
        for tree in self.trees.values_mut() {
            tree.lazy.remove(&peer);
            tree.eager.insert(peer.clone());
        }
        while self.recent.front().is_some_and(|(until, _)| *until <= now) {
            self.recent.pop_front();
        }
        let recent: Vec<Announcement<P, H::Id>> =
            self.recent.iter().map(|(_, announcement)| announcement.clone()).collect();
        for announcement in recent {
            self.queue_announcement(now, peer.clone(), announcement);
        }
    }

    /// The overlay reports a neighbour gone (`NeighborDown`): it leaves every tree, its queued
    /// announcements are dropped, and its announcements no longer count for GRAFTs.
    pub fn neighbour_down(&mut self, peer: &P) {
        if !self.neighbours.remove(peer) {
            return;
        }
        for tree in self.trees.values_mut() {
            tree.eager.remove(peer);
            tree.lazy.remove(peer);
        }
        self.lazy_queues.remove(peer);
        for missing in self.missing.values_mut() {
            missing.announcers.retain(|(announcer, _, _)| announcer != peer);
        }
    }

    /// Time has come to `now`: flush the lazy queues on the tick, GRAFT what is missing past
    /// its timer, and ask for an exchange when one is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.flush_at.is_some_and(|at| at <= now) {
            self.flush_lazy_queues();
        }
        self.expire_missing(now);
        if let (Some(at), Some(interval)) = (self.exchange_at, self.config.exchange_interval)
            && at <= now
        {
            self.exchange_at = Some(now + interval);
            if let Some(peer) = random::choose(&mut self.rng, &self.neighbours, &[]) {
                self.outputs.push_back(PlumtreeOutput::Exchange { peer });
            }
        }
    }

    fn require_neighbour(&self, from: &P, kind: &'static str) -> Result<(), PlumtreeError> {
        if self.neighbours.contains(from) {
            Ok(())
        } else {
            Err(PlumtreeError::NotNeighbour { kind })
        }
    }

    /// `GOSSIP(m, mID, round, sender)`: deliver and push on if new, else PRUNE the sender
    /// (unless the message first came by that very link: a copy, not a second path).
    /// A payload from a non-neighbour (a race with neighbour-down) is still merged and pushed
    /// on, since losing it helps nobody, but changes no tree link.
    fn on_gossip(
        &mut self,
        now: Instant,
        from: P,
        id: H::Id,
        payload: H::Payload,
        round: u32,
        root: P,
    ) {
        let is_neighbour = self.neighbours.contains(&from);
        if self.handler.merge(&id, payload.clone()) {
            self.missing.remove(&id);
            let round = round.saturating_add(1);
            self.push(now, &id, &payload, round, &root, Some(&from));
            self.last_root = Some(root.clone());
            let recent = Announcement { id: id.clone(), round, root: root.clone() };
            self.note_recent(now, recent);
            if is_neighbour {
                let tree = self.tree_mut(&root);
                tree.lazy.remove(&from);
                tree.eager.insert(from.clone());
                self.remember(id, from, round);
            }
        } else {
            self.duplicates += 1;
            if !is_neighbour || self.came_by(&id, &from) {
                return;
            }
            let tree = self.tree_mut(&root);
            tree.eager.remove(&from);
            tree.lazy.insert(from.clone());
            self.send(from, PlumtreeMessage::Prune { root });
        }
    }

    /// `IHAVE(mID, round, sender)`: remember who announced what we lack, and start a GRAFT
    /// timer for it if none runs.
    fn on_ihave(&mut self, now: Instant, from: P, announcements: Vec<Announcement<P, H::Id>>) {
        for Announcement { id, round, root } in announcements {
            if self.handler.is_stale(&id) {
                self.optimise(&from, &id, round, root);
                continue;
            }
            if let Some(missing) = self.missing.get_mut(&id) {
                if !missing.announcers.iter().any(|(announcer, _, _)| *announcer == from) {
                    missing.announcers.push_back((from.clone(), round, root));
                }
            } else if self.missing.len() < self.config.max_missing {
                let deadline = now + self.first_graft_wait();
                let announcers = VecDeque::from([(from.clone(), round, root)]);
                self.missing.insert(id, Missing { deadline, announcers });
            }
        }
    }

    /// `GRAFT(mID, round, sender)`: make the link eager and send the payload if we have it.
    fn on_graft(&mut self, from: P, id: Option<H::Id>, round: u32, root: P) {
        let tree = self.tree_mut(&root);
        tree.lazy.remove(&from);
        tree.eager.insert(from.clone());
        let Some(id) = id else { return };
        match self.handler.graft(&id) {
            Graft::Payload(payload) => {
                self.send(from, PlumtreeMessage::Gossip { id, payload, round, root })
            }
            // Nothing to send: the grafting peer's next timer moves on to another announcer
            // (or anti-entropy settles it).
            Graft::Stale | Graft::Failed(_) => {}
        }
    }

    /// GRAFT timers that fired: ask the first remaining announcer, and wait
    /// `second_graft_timeout` before asking the next (the paper's `Timer(mID)`).
    fn expire_missing(&mut self, now: Instant) {
        let due: Vec<H::Id> = self
            .missing
            .iter()
            .filter(|(_, missing)| missing.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let Some(missing) = self.missing.get_mut(&id) else { continue };
            let next = missing.announcers.pop_front();
            missing.deadline = now + self.config.second_graft_timeout;
            let Some((announcer, round, root)) = next.filter(|_| !self.handler.is_stale(&id))
            else {
                self.missing.remove(&id);
                continue;
            };
            let tree = self.tree_mut(&root);
            tree.lazy.remove(&announcer);
            tree.eager.insert(announcer.clone());
            self.send(announcer, PlumtreeMessage::Graft { id: Some(id), round, root });
        }
    }

    /// §3.8: `from` announced `id`, which we hold, at `round` hops from the root. If it came
    /// to us at least `optimisation_threshold` hops later than it would have through `from`,
    /// swap the links: graft `from` (no payload needed) and prune the eager link it came over.
    fn optimise(&mut self, from: &P, id: &H::Id, round: u32, root: P) {
        let Some(threshold) = self.config.optimisation_threshold else { return };
        let Some((parent, hops)) = self.received.get(id).cloned() else { return };
        let through_announcer = round.saturating_add(1);
        if parent == *from || through_announcer.saturating_add(threshold) > hops {
            return;
        }
        if let Some(remembered) = self.received.get_mut(id) {
            *remembered = (from.clone(), through_announcer);
        }
        let parent_is_neighbour = self.neighbours.contains(&parent);
        let tree = self.tree_mut(&root);
        tree.lazy.remove(from);
        tree.eager.insert(from.clone());
        self.send(from.clone(), PlumtreeMessage::Graft { id: None, round, root: root.clone() });
        // A parent gone from the overlay has left the tree already: nothing to prune.
        if parent_is_neighbour {
            let tree = self.tree_mut(&root);
            tree.eager.remove(&parent);
            tree.lazy.insert(parent.clone());
            self.send(parent, PlumtreeMessage::Prune { root });
        }
    }

    /// Whether `id` was delivered here by a GOSSIP from `from` (as far as `received`
    /// remembers).
    fn came_by(&self, id: &H::Id, from: &P) -> bool {
        self.received.get(id).is_some_and(|(parent, _)| parent == from)
    }

    /// How long a message newly announced stays missing before its first GRAFT:
    /// `graft_timeout` plus a uniformly random share of `graft_jitter`.
    fn first_graft_wait(&mut self) -> Duration {
        let jitter = self.config.graft_jitter;
        if jitter.is_zero() {
            return self.config.graft_timeout;
        }
        let nanos = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX);
        self.config.graft_timeout + Duration::from_nanos(self.rng.random_range(0..=nanos))
    }

    /// Remembers that `id` came from `from` after `hops` hops, forgetting the oldest past
    /// `max_remembered`.
    fn remember(&mut self, id: H::Id, from: P, hops: u32) {
        if self.config.max_remembered == 0 {
            return;
        }
        while self.received_order.len() >= self.config.max_remembered {
            if let Some(oldest) = self.received_order.pop_front() {
                self.received.remove(&oldest);
            }
        }
        self.received_order.push_back(id.clone());
        self.received.insert(id, (from, hops));
    }

    /// `eagerPush` and `lazyPush` of the paper: the payload to `root`'s eager peers, an
    /// announcement (queued for the next tick) to its lazy peers, skipping `sender`.
    fn push(
        &mut self,
        now: Instant,
        id: &H::Id,
        payload: &H::Payload,
        round: u32,
        root: &P,
        sender: Option<&P>,
    ) {
        let tree = self.tree_mut(root);
        let eager: Vec<P> = tree.eager.iter().filter(|p| Some(*p) != sender).cloned().collect();
        let lazy: Vec<P> = tree.lazy.iter().filter(|p| Some(*p) != sender).cloned().collect();
        for to in eager {
            let message = PlumtreeMessage::Gossip {
                id: id.clone(),
                payload: payload.clone(),
                round,
                root: root.clone(),
            };
            self.send(to, message);
        }
        for to in lazy {
            self.queue_announcement(
                now,
                to,
                Announcement { id: id.clone(), round, root: root.clone() },
            );
        }
    }

    /// Queues an announcement for `to`'s next IHAVE, dropping the oldest past the bound.
    fn queue_announcement(&mut self, now: Instant, to: P, announcement: Announcement<P, H::Id>) {
        if self.config.max_lazy_queue == 0 {
            self.dropped_announcements += 1;
            return;
        }
        let queue = self.lazy_queues.entry(to).or_default();
        if queue.len() >= self.config.max_lazy_queue {
            queue.pop_front();
            self.dropped_announcements += 1;
        }
        queue.push_back(announcement);
        self.flush_at.get_or_insert(now + self.config.lazy_tick);
    }

    /// Keeps `announcement` for catch-up announcements to neighbours that come up within the
    /// window.
    fn note_recent(&mut self, now: Instant, announcement: Announcement<P, H::Id>) {
        if self.config.catch_up_window.is_zero() || self.config.max_catch_up == 0 {
            return;
        }
        while self.recent.len() >= self.config.max_catch_up {
            self.recent.pop_front();
        }
        self.recent.push_back((now + self.config.catch_up_window, announcement));
    }

    fn flush_lazy_queues(&mut self) {
        self.flush_at = None;
        for (to, queue) in std::mem::take(&mut self.lazy_queues) {
            if !queue.is_empty() {
                let announcements = Vec::from(queue);
                self.outputs.push_back(PlumtreeOutput::Send {
                    to,
                    message: PlumtreeMessage::IHave { announcements },
                });
            }
        }
    }

    fn send(&mut self, to: P, message: PlumtreeMessage<P, H::Id, H::Payload>) {
        self.outputs.push_back(PlumtreeOutput::Send { to, message });
    }

    /// `root`'s tree. The first time `root` is seen, it is created as a copy of the tree of
    /// the root delivered last, or with every neighbour eager if there is none.
    fn tree_mut(&mut self, root: &P) -> &mut Tree<P> {
        self.uses += 1;
        let uses = self.uses;
        if !self.trees.contains_key(root) {
            if self.trees.len() >= self.config.max_roots.max(1) {
                self.forget_least_recent_root();
            }
            let template = self.last_root.as_ref().and_then(|last| self.trees.get(last));
            let (eager, lazy) = match template {
                Some(template) => (template.eager.clone(), template.lazy.clone()),
                None => (self.neighbours.clone(), BTreeSet::new()),
            };
            self.trees.insert(root.clone(), Tree { eager, lazy, last_used: uses });
        }
        let tree = self.trees.get_mut(root).expect("inserted above if it was missing");
        tree.last_used = uses;
        tree
    }

    fn forget_least_recent_root(&mut self) {
        let oldest =
            self.trees.iter().min_by_key(|(_, tree)| tree.last_used).map(|(root, _)| root.clone());
        if let Some(root) = oldest {
            self.trees.remove(&root);
        }
    }
}
