//! The HyParView core: [`HyParView`], its messages, outputs and configuration. The
//! protocol, and what the core does not do, are described on [`HyParView`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Debug;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde::{Deserialize, Serialize};

use super::random;

#[cfg(test)]
mod tests;

/// How urgently a NEIGHBOUR request asks to be let into an active view (§4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Priority {
    /// The asking node has no active peer left: the request is always accepted, dropping a
    /// random active peer if the view is full.
    High,
    /// Accepted only if the receiver's active view has room.
    Low,
}

/// A HyParView protocol message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HyParViewMessage<P> {
    /// A new node asks the receiver, its contact, to let it in.
    Join,
    /// The contact's answer to [`HyParViewMessage::Join`] (beyond the paper): samples of its
    /// views (as in a shuffle), which the joiner keeps as passive. Not sent when the contact
    /// knows no other peer.
    JoinReply {
        /// The samples.
        nodes: Vec<P>,
    },
    /// A random walk announcing `joiner`; `ttl` hops are left.
    ForwardJoin {
        /// The node that joined.
        joiner: P,
        /// Hops left in the walk.
        ttl: u32,
    },
    /// The walk for the receiver ended at the sender, which added it to its active view: the
    /// receiver adds the sender too.
    ForwardJoinReply,
    /// Let me into your active view.
    Neighbour {
        /// How urgently.
        priority: Priority,
    },
    /// The answer to [`HyParViewMessage::Neighbour`].
    NeighbourReply {
        /// Whether the sender added the receiver to its active view.
        accepted: bool,
        /// With a refusal, samples of the refuser's views (as in a shuffle), for the asker to
        /// try instead; empty with an acceptance.
        nodes: Vec<P>,
    },
    /// A random walk looking for a node with room for `requester`, started by a full node
    /// that refused the requester's low-priority NEIGHBOUR. A node with room that it reaches
    /// asks `requester` to be its neighbour.
    FindNeighbour {
        /// The node with room in its active view.
        requester: P,
        /// Hops left in the walk.
        ttl: u32,
    },
    /// The sender dropped the receiver from its active view (and keeps it as passive).
    Disconnect,
    /// A shuffle random walk from `origin`, carrying a sample of its views.
    Shuffle {
        /// The node that started the shuffle, which the reply goes to.
        origin: P,
        /// Hops left in the walk.
        ttl: u32,
        /// The origin itself and samples of its active and passive views.
        nodes: Vec<P>,
    },
    /// The end of a shuffle walk answers the origin with a sample of its passive view.
    ShuffleReply {
        /// The sample.
        nodes: Vec<P>,
    },
}

/// What the core asks its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HyParViewOutput<P> {
    /// Send `message` to `to` (opening a connection if needed).
    Send {
        /// The receiver.
        to: P,
        /// The message.
        message: HyParViewMessage<P>,
    },
    /// `peer` entered the active view: keep a connection to it; tell the broadcast layer.
    NeighbourUp(P),
    /// `peer` left the active view: its connection may close; tell the broadcast layer.
    NeighbourDown(P),
}

/// View sizes, walk lengths and periods of a [`HyParView`] node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HyParViewConfig {
    /// Active view size (the paper's `fanout + 1`; default 5).
    pub active_capacity: usize,
    /// Passive view size (default 30).
    pub passive_capacity: usize,
    /// Active random walk length, ARWL (default 6): a FORWARD_JOIN walk ends in an active
    /// view after this many hops.
    pub active_walk_length: u32,
    /// Passive random walk length, PRWL (default 3): the hop at which a FORWARD_JOIN walk
    /// drops the joiner into a passive view.
    pub passive_walk_length: u32,
    /// How often a node starts a SHUFFLE (default 10 s).
    pub shuffle_interval: Duration,
    /// Active peers sent in a shuffle, `k_a` (default 3).
    pub shuffle_active: usize,
    /// Passive peers sent in a shuffle, `k_p` (default 4).
    pub shuffle_passive: usize,
    /// Hops of a shuffle walk (default 6).
    pub shuffle_walk_length: u32,
    /// A NEIGHBOUR request is high priority while the active view holds fewer peers than
    /// this. The paper's rule is 1 (only an empty view); the default, 3, also rescues nodes
    /// left with one or two neighbours in a small group that a mass failure or a run of
    /// DISCONNECTs cut off from the rest, whose low-priority requests every full view would
    /// refuse forever. Accepting one costs a full view one random peer, which loses one
    /// link and asks in turn; the missing link moves on until it reaches a view with room.
    pub high_priority_below: usize,
    /// How long a NEIGHBOUR request may go unanswered before the candidate counts as failed
    /// (dropped from the passive view) and another is tried (default 1 s).
    pub neighbour_timeout: Duration,
    /// How often a node with room in its active view asks a passive peer to fill it
    /// (default 1 s).
    pub repair_interval: Duration,
    /// The most lost peers kept for retrying (default 64): active peers that failed and
    /// candidates that never answered. Past it the one lost longest ago is dropped.
    pub max_lost: usize,
    /// The longest wait between two retries of a lost peer (default 30 s). The first retry
    /// comes a [`repair_interval`](Self::repair_interval) after the loss, each unanswered one
    /// doubles the wait up to this bound; a lost peer is never forgotten for its age, so the
    /// two sides of a partition of any length link again within about this long of its heal.
    pub max_retry_backoff: Duration,
    /// Seeds every random choice.
    pub seed: u64,
}

impl Default for HyParViewConfig {
    fn default() -> Self {
        HyParViewConfig {
            active_capacity: 5,
            passive_capacity: 30,
            active_walk_length: 6,
            passive_walk_length: 3,
            shuffle_interval: Duration::from_secs(10),
            shuffle_active: 3,
            shuffle_passive: 4,
            shuffle_walk_length: 6,
            high_priority_below: 3,
            neighbour_timeout: Duration::from_secs(1),
            repair_interval: Duration::from_secs(1),
            max_lost: 64,
            max_retry_backoff: Duration::from_secs(30),
            seed: 0,
        }
    }
}

/// Why the [`HyParView`] core ignored an input ([`HyParView::join`] or
/// [`HyParView::handle_message`]). Every variant means the same for state: unchanged, nothing
/// sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HyParViewError {
    /// From [`HyParView::join`]: a node cannot join through itself; state unchanged.
    #[error("a node cannot join through itself")]
    ContactIsSelf,
    /// From [`HyParView::handle_message`]: a message that claims to come from this node
    /// itself: ignored, state unchanged.
    #[error("a message from this node itself: ignored, state unchanged")]
    FromSelf,
    /// From [`HyParView::handle_message`]: a refusing NEIGHBOUR_REPLY to no NEIGHBOUR request
    /// of ours (it timed out, or is bogus): ignored, state unchanged. (A late acceptance is
    /// not an error: it is taken, or undone with DISCONNECT.)
    #[error("a refusing NEIGHBOUR_REPLY to no pending request: ignored, state unchanged")]
    UnsolicitedReply,
}

/// HyParView: a hybrid partial-view membership overlay (Leitão, Pereira, Rodrigues, DSN
/// 2007), sans-IO.
///
/// Each node keeps a small symmetric *active view* (default 5: the peers it keeps connections
/// to and broadcasts over) and a larger *passive view* (default 30: addresses held in reserve).
/// A joining node contacts any member (JOIN); the contact spreads FORWARD_JOIN random walks
/// through the active views, which end in active views (after `active_walk_length` hops, §4.2)
/// and drop the joiner into passive views on the way (at `passive_walk_length`). When the
/// driver reports a failed peer, the node promotes a passive peer with NEIGHBOUR (high
/// priority when its active view is (nearly) empty, so it cannot be refused; §4.3). A periodic
/// SHUFFLE random walk swaps samples of both views with a distant node, keeping passive views
/// fresh (§4.4).
///
/// ```text
///   join / handle_message / peer_failed / handle_timeout (all with `now`)
///                         │
///                         ▼
///                     HyParView ──► poll_output(): Send { to, message }
///                         │                       NeighbourUp(peer)   ──► Plumtree::neighbour_up
///                         │                       NeighbourDown(peer) ──► Plumtree::neighbour_down
///                         └──────► poll_timeout(): when to call handle_timeout
/// ```
///
/// What this core does *not* do: detect failures (the driver does, from connection errors
/// or missed heartbeats, and calls [`HyParView::peer_failed`]), open connections, or keep
/// time. Its randomness comes from [`HyParViewConfig::seed`], so a run replays exactly.
///
/// Beyond the paper (each found necessary in simulation, see the broadcast tests):
///
/// - A node whose active view is not full keeps asking passive peers (low priority) on each
///   repair tick, not only right after a failure, so nodes that lost neighbours to
///   DISCONNECT during joins fill up again.
/// - A request is high priority while the active view holds fewer than
///   [`HyParViewConfig::high_priority_below`] peers (the paper: only when it is empty).
/// - A full node that refuses a low-priority request answers with samples of its views and
///   starts a FIND_NEIGHBOUR random walk; the first node with room it reaches asks the
///   requester. Nodes with room thus find each other, and a group cut off by a burst of joins
///   or failures (whose full views would otherwise refuse it forever) is joined back within a
///   few repair ticks.
/// - The contact answers a JOIN with samples of its views (JOIN_REPLY), which the joiner keeps
///   as passive. In the paper a joiner's passive view stays empty until shuffles fill it; a
///   node whose contact and walk ends all failed before then knew no live peer, and no live
///   peer knew it, so it stayed alone for good (as did small groups of such nodes).
/// - A walk ends with a FORWARD_JOIN_REPLY to the joiner, which adds the node where its walk
///   ended: the paper's symmetric active views, made explicit.
/// - **Lost peers are kept and retried** ([`HyParView::lost`]): an active peer that failed,
///   and a candidate that never answered, are kept (at most
///   [`max_lost`](HyParViewConfig::max_lost), the one lost longest ago dropped first), not
///   forgotten for their age, and retried one at a time with a high-priority NEIGHBOUR after
///   a backoff that doubles up to [`max_retry_backoff`](HyParViewConfig::max_retry_backoff).
///   The peer accepts even into a full view, and so does this node on its acceptance, each
///   dropping a random neighbour (the paper's rule for high priority). In the paper, links
///   arise only in free slots and shuffles travel only over active links, so two halves of a
///   healed partition, their views full, never linked again.
/// - **The contact is joined through again** while the active view has room that the passive
///   view cannot fill (at most once a shuffle interval), so a small group whose members hold
///   only one another, their passive views emptied by lost messages, is not cut off for good.
/// - **No one-sided links.** An acceptance that comes after this node gave up on its request
///   is taken if there is room and answered with DISCONNECT otherwise; a walk or shuffle (which
///   travel only over active links) from a peer that is not a neighbour is answered with
///   DISCONNECT, as that peer holds a link this node does not.
///
/// ```
/// use std::time::Instant;
/// use shoal_broadcast::core::{HyParView, HyParViewConfig, HyParViewMessage, HyParViewOutput};
///
/// let now = Instant::now();
/// let mut contact = HyParView::new(1u32, HyParViewConfig::default(), now);
/// let mut joiner = HyParView::new(2u32, HyParViewConfig::default(), now);
/// joiner.join(now, 1).unwrap();
/// assert_eq!(joiner.poll_output(), Some(HyParViewOutput::NeighbourUp(1)));
/// let join = HyParViewOutput::Send { to: 1, message: HyParViewMessage::Join };
/// assert_eq!(joiner.poll_output(), Some(join));
/// contact.handle_message(now, 2, HyParViewMessage::Join).unwrap();
/// assert_eq!(contact.poll_output(), Some(HyParViewOutput::NeighbourUp(2)));
/// assert!(contact.active_view().contains(&2));
/// ```
pub struct HyParView<P> {
    me: P,
    config: HyParViewConfig,
    rng: SmallRng,
    active: BTreeSet<P>,
    passive: BTreeSet<P>,
    /// NEIGHBOUR requests awaiting a reply, with their deadlines.
    pending: BTreeMap<P, Instant>,
    /// What the last shuffle sent, evicted first when the reply fills the passive view.
    last_shuffle: Vec<P>,
    /// Peers lost to a failure or silence, retried with backoff (at most `max_lost`).
    lost: BTreeMap<P, Lost>,
    /// The lost peer asked to be a neighbour now (high priority), with the deadline of its
    /// answer: one at a time.
    retrying: Option<(P, Instant)>,
    /// The contact of the first join, joined through again while the active view has room
    /// that the passive view cannot fill.
    contact: Option<P>,
    /// When the contact may next be joined through again.
    rejoin_at: Instant,
    shuffle_at: Instant,
    repair_at: Instant,
    outputs: VecDeque<HyParViewOutput<P>>,
}

/// A lost peer's retry state.
#[derive(Clone, Copy, Debug)]
struct Lost {
    /// When it was lost (the oldest is dropped first past `max_lost`).
    since: Instant,
    /// Retries it left unanswered since.
    attempts: u32,
    /// When it is next retried.
    retry_at: Instant,
}

impl<P: Clone + Ord + Debug> HyParView<P> {
    /// A node `me` with empty views; its first shuffle is one interval after `now`.
    pub fn new(me: P, config: HyParViewConfig, now: Instant) -> Self {
        let rng = SmallRng::seed_from_u64(config.seed);
        HyParView {
            me,
            rng,
            active: BTreeSet::new(),
            passive: BTreeSet::new(),
            pending: BTreeMap::new(),
            last_shuffle: Vec::new(),
            lost: BTreeMap::new(),
            retrying: None,
            contact: None,
            rejoin_at: now,
            shuffle_at: now + config.shuffle_interval,
            repair_at: now + config.repair_interval,
            config,
            outputs: VecDeque::new(),
        }
    }

    /// This node.
    pub fn id(&self) -> &P {
        &self.me
    }

    /// The active view: the neighbours Plumtree broadcasts over.
    pub fn active_view(&self) -> &BTreeSet<P> {
        &self.active
    }

    /// The passive view: peers held in reserve for repairs.
    pub fn passive_view(&self) -> &BTreeSet<P> {
        &self.passive
    }

    /// The peers lost to a failure or silence and not yet back, each retried with backoff.
    pub fn lost(&self) -> impl Iterator<Item = &P> {
        self.lost.keys()
    }

    /// Whether this node knows no peer at all (both views empty, no request pending): it can
    /// only get back into the overlay by joining again, through a contact the driver knows.
    pub fn is_isolated(&self) -> bool {
        self.active.is_empty() && self.passive.is_empty() && self.pending.is_empty()
    }

    /// The next output to act on, oldest first. Drain after every call.
    pub fn poll_output(&mut self) -> Option<HyParViewOutput<P>> {
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due: the next shuffle, the
    /// earliest NEIGHBOUR deadline, the repair tick while the active view has room (that the
    /// passive view or the contact can fill), and the next retry of a lost peer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let pending = self.pending.values().min().copied();
        let repair = (self.wants_repair() || self.wants_contact()).then_some(self.repair_at);
        let retry = match &self.retrying {
            Some((_, deadline)) => Some(*deadline),
            None => self.lost.values().map(|lost| lost.retry_at).min(),
        };
        [Some(self.shuffle_at), pending, repair, retry].into_iter().flatten().min()
    }

    /// Joins the overlay through `contact` (§4.2): the contact enters the active view at once
    /// (the driver reports [`peer_failed`](Self::peer_failed) if it cannot be reached) and is
    /// sent JOIN. The repair tick waits a full interval from `now`, so that the walks the JOIN
    /// starts fill the active view before this node asks anyone else.
    pub fn join(&mut self, now: Instant, contact: P) -> Result<(), HyParViewError> {
        if contact == self.me {
            return Err(HyParViewError::ContactIsSelf);
        }
        self.repair_at = now + self.config.repair_interval;
        self.rejoin_at = now + self.config.shuffle_interval;
        self.contact.get_or_insert_with(|| contact.clone());
        self.add_active(contact.clone());
        self.send(contact, HyParViewMessage::Join);
        Ok(())
    }

    /// The driver found `peer` unreachable (a connection failed or heartbeats stopped): it
    /// leaves both views and the active view is repaired from the passive view (§4.3). An
    /// active peer, a candidate asked to be one, or a lost peer being retried is kept as
    /// lost, and retried with backoff (beyond the paper: see [`HyParView`]).
    pub fn peer_failed(&mut self, now: Instant, peer: &P) {
        let was_active = self.active.remove(peer);
        if was_active {
            self.outputs.push_back(HyParViewOutput::NeighbourDown(peer.clone()));
        }
        self.passive.remove(peer);
        let was_pending = self.pending.remove(peer).is_some();
        if was_active || was_pending || self.lost.contains_key(peer) {
            self.lose(now, peer.clone());
        }
        self.repair(now);
    }

    /// `peer` is gone for good (another node answers at its address, or its node restarted
    /// elsewhere): it leaves the views and the lost peers, and is not retried.
    pub fn forget_peer(&mut self, now: Instant, peer: &P) {
        if self.active.remove(peer) {
            self.outputs.push_back(HyParViewOutput::NeighbourDown(peer.clone()));
        }
        self.passive.remove(peer);
        self.pending.remove(peer);
        self.lost.remove(peer);
        if self.retrying.as_ref().is_some_and(|(p, _)| p == peer) {
            self.retrying = None;
        }
        self.repair(now);
    }

    /// Peers the driver knows to be reachable outside the protocol (in full-mesh membership,
    /// the nodes the transport connects). Only while the active view has room that the
    /// passive view cannot fill (each passive peer asked already, or none) do a random few of
    /// those in neither view enter the passive view, for the repair tick to ask (beyond the
    /// paper: a small group whose passive views emptied as its members failed one another
    /// would otherwise stay apart from the rest for good, though connected to it).
    pub fn offer(&mut self, peers: &[P]) {
        let free =
            self.config.active_capacity.saturating_sub(self.active.len() + self.pending.len());
        if free == 0 || self.passive.iter().any(|p| !self.pending.contains_key(p)) {
            return;
        }
        let unknown: BTreeSet<P> = peers
            .iter()
            .filter(|p| **p != self.me && !self.active.contains(p) && !self.passive.contains(p))
            .cloned()
            .collect();
        for peer in random::sample(&mut self.rng, &unknown, free, &[]) {
            self.add_passive(peer);
        }
    }

    /// A message from `from` arrives.
    pub fn handle_message(
        &mut self,
        now: Instant,
        from: P,
        message: HyParViewMessage<P>,
    ) -> Result<(), HyParViewError> {
        if from == self.me {
            return Err(HyParViewError::FromSelf);
        }
        if Self::travels_over_active_links(&message) {
            self.handle_neighbour_traffic(&from);
        }
        match message {
            HyParViewMessage::Join => self.on_join(from),
            HyParViewMessage::JoinReply { nodes } => self.integrate(nodes, &[]),
            HyParViewMessage::ForwardJoin { joiner, ttl } => {
                self.on_forward_join(from, joiner, ttl)
            }
            HyParViewMessage::ForwardJoinReply => self.add_active(from),
            HyParViewMessage::Neighbour { priority } => self.on_neighbour(from, priority),
            HyParViewMessage::NeighbourReply { accepted, nodes } => {
                return self.on_neighbour_reply(now, from, accepted, nodes);
            }
            HyParViewMessage::Disconnect => {
                // §4.3: the disconnected peer goes to the passive view; the repair tick
                // fills the free slot.
                if self.active.remove(&from) {
                    self.outputs.push_back(HyParViewOutput::NeighbourDown(from.clone()));
                    self.add_passive(from);
                }
            }
            HyParViewMessage::FindNeighbour { requester, ttl } => {
                self.on_find_neighbour(now, from, requester, ttl);
            }
            HyParViewMessage::Shuffle { origin, ttl, nodes } => {
                self.on_shuffle(from, origin, ttl, nodes)
            }
            HyParViewMessage::ShuffleReply { nodes } => {
                let sent = std::mem::take(&mut self.last_shuffle);
                self.integrate(nodes, &sent);
            }
        }
        Ok(())
    }

    /// Time has come to `now`: shuffle when due, give up on NEIGHBOUR requests past their
    /// deadline, and fill the active view from the passive one on the repair tick.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.shuffle_at <= now {
            self.shuffle_at = now + self.config.shuffle_interval;
            self.start_shuffle();
        }
        let expired: Vec<P> =
            self.pending.iter().filter(|(_, at)| **at <= now).map(|(p, _)| p.clone()).collect();
        for peer in &expired {
            // No answer: as good as failed (§4.3 tries the next passive peer), and kept as
            // lost (the request or its answer may have been lost, or a partition cut it).
            self.pending.remove(peer);
            self.passive.remove(peer);
            self.lose(now, peer.clone());
        }
        if !expired.is_empty() || self.repair_at <= now {
            self.repair_at = now + self.config.repair_interval;
            self.repair(now);
            self.rejoin_if_short(now);
        }
        self.retry_lost(now);
    }

    /// Whether `message` only ever goes to a peer that holds the sender in its active view
    /// (walks and shuffles travel over active links).
    fn travels_over_active_links(message: &HyParViewMessage<P>) -> bool {
        matches!(
            message,
            HyParViewMessage::ForwardJoin { .. }
                | HyParViewMessage::FindNeighbour { .. }
                | HyParViewMessage::Shuffle { .. }
        )
    }

    /// Traffic that only a neighbour sends came from `from`: a walk or a shuffle, or
    /// another protocol's traffic over the overlay's links (Plumtree's GOSSIP, IHAVE, GRAFT
    /// and PRUNE, which the driver reports here). If `from` is none of ours (and not a
    /// candidate we asked), it holds a one-sided link to this node, which DISCONNECT undoes
    /// (beyond the paper: a link one side holds alone would carry that side's walks and
    /// trees into a node that ignores them, for good). A neighbour's traffic changes nothing.
    pub fn handle_neighbour_traffic(&mut self, from: &P) {
        let asked = self.pending.contains_key(from)
            || self.retrying.as_ref().is_some_and(|(peer, _)| peer == from);
        if !self.active.contains(from) && !asked {
            self.send(from.clone(), HyParViewMessage::Disconnect);
        }
    }

    /// Keeps `peer` as lost: retried after a backoff that doubles with each unanswered retry
    /// (from `repair_interval` up to `max_retry_backoff`); past `max_lost`, the peer lost
    /// longest ago is dropped.
    fn lose(&mut self, now: Instant, peer: P) {
        if self.config.max_lost == 0 || peer == self.me || self.active.contains(&peer) {
            return;
        }
        let was_retried = self.retrying.as_ref().is_some_and(|(p, _)| *p == peer);
        if was_retried {
            self.retrying = None;
        }
        let lost = self.lost.entry(peer).or_insert(Lost { since: now, attempts: 0, retry_at: now });
        if was_retried {
            lost.attempts = lost.attempts.saturating_add(1);
        }
        let doublings = 1u32 << lost.attempts.min(16);
        let backoff = self
            .config
            .repair_interval
            .saturating_mul(doublings)
            .min(self.config.max_retry_backoff);
        lost.retry_at = now + backoff;
        while self.lost.len() > self.config.max_lost {
            let oldest =
                self.lost.iter().min_by_key(|(_, lost)| lost.since).map(|(p, _)| p.clone());
            if let Some(oldest) = oldest {
                self.lost.remove(&oldest);
            }
        }
    }

    /// Retries the lost peer due first, if no retry is in flight: a high-priority NEIGHBOUR,
    /// which the peer accepts even with a full active view (dropping a random peer), and
    /// which this node takes even with a full view (likewise). Full views on both sides of a
    /// healed partition thus link again, which low-priority requests and shuffles, which
    /// travel only over active links, never do. An unanswered retry counts as a failure.
    fn retry_lost(&mut self, now: Instant) {
        if let Some((peer, deadline)) = self.retrying.clone() {
            if deadline > now {
                return;
            }
            self.lose(now, peer);
        }
        let due = self
            .lost
            .iter()
            .filter(|(_, lost)| lost.retry_at <= now)
            .min_by_key(|(_, lost)| lost.retry_at)
            .map(|(peer, _)| peer.clone());
        let Some(peer) = due else { return };
        if self.pending.contains_key(&peer) {
            // Back in the passive view and asked already: that request decides; the retry
            // waits its turn again (so that `poll_timeout` never stays in the past).
            self.lose(now, peer);
            return;
        }
        self.retrying = Some((peer.clone(), now + self.config.neighbour_timeout));
        self.send(peer, HyParViewMessage::Neighbour { priority: Priority::High });
    }

    /// Whether the active view has room that neither the passive view nor a request in
    /// flight can fill, and a contact is known to join through again.
    fn wants_contact(&self) -> bool {
        self.contact.is_some()
            && self.active.len() + self.pending.len() < self.config.active_capacity
            && self.passive.iter().all(|p| self.pending.contains_key(p))
    }

    /// Joins through the first contact again (at most once a shuffle interval) while the
    /// active view has room that the passive view cannot fill (beyond the paper): a small
    /// group whose members hold only one another, with empty passive views (left so by lost
    /// messages and failures), is otherwise cut off from the rest for good.
    fn rejoin_if_short(&mut self, now: Instant) {
        if !self.wants_contact() || self.rejoin_at > now {
            return;
        }
        let Some(contact) = self.contact.clone() else { return };
        if self.pending.contains_key(&contact) {
            return;
        }
        self.rejoin_at = now + self.config.shuffle_interval;
        self.add_active(contact.clone());
        self.send(contact, HyParViewMessage::Join);
    }

    /// JOIN at the contact: add the joiner, start a FORWARD_JOIN walk through every other
    /// active peer, and answer with samples of this node's views (JOIN_REPLY, beyond the
    /// paper: otherwise the joiner's passive view stays empty until its first shuffle, and if
    /// this node and the walks' ends fail before then, the joiner knows no live peer and stays
    /// alone for good).
    fn on_join(&mut self, joiner: P) {
        self.add_active(joiner.clone());
        let ttl = self.config.active_walk_length;
        let others: Vec<P> = self.active.iter().filter(|p| **p != joiner).cloned().collect();
        for to in others {
            self.send(to, HyParViewMessage::ForwardJoin { joiner: joiner.clone(), ttl });
        }
        let nodes = self.sample_views(&joiner);
        if !nodes.is_empty() {
            self.send(joiner, HyParViewMessage::JoinReply { nodes });
        }
    }

    /// FORWARD_JOIN: end the walk here (active view) when its time-to-live is spent or there
    /// is nowhere else to go; drop the joiner into the passive view at PRWL; else walk on.
    fn on_forward_join(&mut self, from: P, joiner: P, ttl: u32) {
        if joiner == self.me || self.active.contains(&joiner) {
            return;
        }
        let next = random::choose(&mut self.rng, &self.active, &[&from, &joiner]);
        match next {
            Some(to) if ttl > 0 => {
                if ttl == self.config.passive_walk_length {
                    self.add_passive(joiner.clone());
                }
                self.send(to, HyParViewMessage::ForwardJoin { joiner, ttl: ttl - 1 });
            }
            _ => {
                self.add_active(joiner.clone());
                self.send(joiner, HyParViewMessage::ForwardJoinReply);
            }
        }
    }

    /// NEIGHBOUR: accept if high priority or there is room; a refusal carries samples of
    /// this node's views, so that an asker whose passive view is running dry learns other
    /// candidates (beyond the paper: without it, a small group whose passive views hold only
    /// full nodes could stay cut off for good).
    fn on_neighbour(&mut self, from: P, priority: Priority) {
        let accepted = self.active.contains(&from)
            || priority == Priority::High
            || self.active.len() < self.config.active_capacity;
        let nodes = if accepted {
            self.add_active(from.clone());
            Vec::new()
        } else {
            let nodes = self.sample_views(&from);
            if let Some(to) = random::choose(&mut self.rng, &self.active, &[&from]) {
                let ttl = self.config.active_walk_length;
                self.send(to, HyParViewMessage::FindNeighbour { requester: from.clone(), ttl });
            }
            nodes
        };
        self.send(from, HyParViewMessage::NeighbourReply { accepted, nodes });
    }

    /// FIND_NEIGHBOUR (beyond the paper): a node with room asks the requester (which has
    /// room too) to be its neighbour; a full one passes the walk on while it lasts. Two nodes
    /// with room that do not know each other thus meet, which joins a small group cut off
    /// from the rest as soon as either side has room.
    fn on_find_neighbour(&mut self, now: Instant, from: P, requester: P, ttl: u32) {
        if requester == self.me || self.active.contains(&requester) {
            return;
        }
        if self.active.len() + self.pending.len() < self.config.active_capacity {
            if !self.pending.contains_key(&requester) {
                self.add_passive(requester.clone());
                self.pending.insert(requester.clone(), now + self.config.neighbour_timeout);
                let priority = self.priority();
                self.send(requester, HyParViewMessage::Neighbour { priority });
            }
            return;
        }
        if ttl > 0
            && let Some(to) = random::choose(&mut self.rng, &self.active, &[&from, &requester])
        {
            self.send(to, HyParViewMessage::FindNeighbour { requester, ttl: ttl - 1 });
        }
    }

    fn on_neighbour_reply(
        &mut self,
        now: Instant,
        from: P,
        accepted: bool,
        nodes: Vec<P>,
    ) -> Result<(), HyParViewError> {
        if self.retrying.as_ref().is_some_and(|(peer, _)| *peer == from) {
            self.retrying = None;
            if accepted {
                // A lost peer is back: it made room for this node, and this node makes room
                // for it (`add_active` drops a random peer when full).
                self.lost.remove(&from);
                self.add_active(from);
            } else {
                self.integrate(nodes, &[]);
                self.lose(now, from);
            }
            return Ok(());
        }
        if self.pending.remove(&from).is_none() {
            if !accepted {
                return Err(HyParViewError::UnsolicitedReply);
            }
            // An acceptance that came after this node gave up (beyond the paper): the peer
            // holds this node as a neighbour. Take it if there is room, else undo its side,
            // so that no link is held by one side only.
            if self.active.contains(&from) {
                return Ok(());
            }
            if self.active.len() < self.config.active_capacity {
                self.lost.remove(&from);
                self.add_active(from);
            } else {
                self.send(from, HyParViewMessage::Disconnect);
            }
            return Ok(());
        }
        if !accepted {
            // Refused (a low-priority request, so this node has neighbours): the refuser
            // stays passive, its samples join the passive view, and the repair tick tries
            // again, rather than at once, so that a node with room does not flood full ones.
            self.integrate(nodes, &[]);
        } else if self.active.len() < self.config.active_capacity {
            self.add_active(from);
        } else {
            // The view filled up while we waited: undo the peer's side rather than evict.
            self.send(from, HyParViewMessage::Disconnect);
        }
        Ok(())
    }

    /// Samples of both views for `to` (as many as a shuffle carries, `to` left out): what a
    /// JOIN_REPLY and a refused NEIGHBOUR's reply tell the other side.
    fn sample_views(&mut self, to: &P) -> Vec<P> {
        let active = self.config.shuffle_active;
        let mut nodes = random::sample(&mut self.rng, &self.active, active, &[to]);
        let passive = self.config.shuffle_passive;
        nodes.extend(random::sample(&mut self.rng, &self.passive, passive, &[to]));
        nodes
    }

    /// SHUFFLE: walk on while the time-to-live lasts, else answer the origin with as many
    /// passive peers as it sent and keep what it sent.
    fn on_shuffle(&mut self, from: P, origin: P, ttl: u32, nodes: Vec<P>) {
        if origin == self.me {
            return;
        }
        let mut nodes = nodes;
        nodes.truncate(self.shuffle_len());
        let ttl = ttl.saturating_sub(1);
        if ttl > 0
            && let Some(to) = random::choose(&mut self.rng, &self.active, &[&from, &origin])
        {
            self.send(to, HyParViewMessage::Shuffle { origin, ttl, nodes });
            return;
        }
        let reply = random::sample(&mut self.rng, &self.passive, nodes.len(), &[&origin]);
        self.send(origin, HyParViewMessage::ShuffleReply { nodes: reply.clone() });
        self.integrate(nodes, &reply);
    }

    fn start_shuffle(&mut self) {
        let Some(to) = random::choose(&mut self.rng, &self.active, &[]) else { return };
        let mut nodes = vec![self.me.clone()];
        nodes.extend(random::sample(
            &mut self.rng,
            &self.active,
            self.config.shuffle_active,
            &[&to],
        ));
        nodes.extend(random::sample(
            &mut self.rng,
            &self.passive,
            self.config.shuffle_passive,
            &[],
        ));
        self.last_shuffle = nodes.clone();
        let ttl = self.config.shuffle_walk_length;
        self.send(to, HyParViewMessage::Shuffle { origin: self.me.clone(), ttl, nodes });
    }

    /// The most peers a shuffle may carry: what a well-behaved origin sends. Longer lists are
    /// truncated (bad input costs no more than good input).
    fn shuffle_len(&self) -> usize {
        1 + self.config.shuffle_active + self.config.shuffle_passive
    }

    /// Adds shuffled-in `nodes` to the passive view, evicting first the peers in `sent`
    /// (which the other side now holds), then random ones (§4.4).
    fn integrate(&mut self, mut nodes: Vec<P>, sent: &[P]) {
        nodes.truncate(self.shuffle_len());
        let mut evictable: Vec<P> = sent.to_vec();
        for node in nodes {
            if node == self.me || self.active.contains(&node) || self.passive.contains(&node) {
                continue;
            }
            if self.passive.len() >= self.config.passive_capacity {
                let victim = loop {
                    match evictable.pop() {
                        Some(p) if self.passive.contains(&p) => break Some(p),
                        Some(_) => continue,
                        None => break random::choose(&mut self.rng, &self.passive, &[]),
                    }
                };
                if let Some(victim) = victim {
                    self.passive.remove(&victim);
                }
            }
            if self.config.passive_capacity > 0 {
                self.passive.insert(node);
            }
        }
    }

    /// Asks random passive peers (not already asked) to fill the free active slots: high
    /// priority when the active view is (nearly) empty.
    fn repair(&mut self, now: Instant) {
        while self.active.len() + self.pending.len() < self.config.active_capacity {
            let asked: Vec<&P> = self.pending.keys().collect();
            let Some(candidate) = random::choose(&mut self.rng, &self.passive, &asked) else {
                return;
            };
            let priority = self.priority();
            self.pending.insert(candidate.clone(), now + self.config.neighbour_timeout);
            self.send(candidate, HyParViewMessage::Neighbour { priority });
        }
    }

    fn priority(&self) -> Priority {
        if self.active.len() < self.config.high_priority_below {
            Priority::High
        } else {
            Priority::Low
        }
    }

    fn wants_repair(&self) -> bool {
        self.active.len() + self.pending.len() < self.config.active_capacity
            && self.passive.iter().any(|p| !self.pending.contains_key(p))
    }

    /// `addNodeActiveView`: makes room by dropping a random active peer (DISCONNECT, and into
    /// the passive view) when full. A peer that becomes active is no longer lost.
    fn add_active(&mut self, peer: P) {
        if peer == self.me || self.active.contains(&peer) || self.config.active_capacity == 0 {
            return;
        }
        self.lost.remove(&peer);
        if self.retrying.as_ref().is_some_and(|(p, _)| *p == peer) {
            self.retrying = None;
        }
        if self.active.len() >= self.config.active_capacity
            && let Some(dropped) = random::choose(&mut self.rng, &self.active, &[])
        {
            self.active.remove(&dropped);
            self.outputs.push_back(HyParViewOutput::NeighbourDown(dropped.clone()));
            self.send(dropped.clone(), HyParViewMessage::Disconnect);
            self.add_passive(dropped);
        }
        self.passive.remove(&peer);
        self.pending.remove(&peer);
        self.active.insert(peer.clone());
        self.outputs.push_back(HyParViewOutput::NeighbourUp(peer));
    }

    /// `addNodePassiveView`: makes room by dropping a random passive peer when full.
    fn add_passive(&mut self, peer: P) {
        if peer == self.me
            || self.active.contains(&peer)
            || self.passive.contains(&peer)
            || self.config.passive_capacity == 0
        {
            return;
        }
        if self.passive.len() >= self.config.passive_capacity
            && let Some(dropped) = random::choose(&mut self.rng, &self.passive, &[])
        {
            self.passive.remove(&dropped);
        }
        self.passive.insert(peer);
    }

    fn send(&mut self, to: P, message: HyParViewMessage<P>) {
        self.outputs.push_back(HyParViewOutput::Send { to, message });
    }
}
