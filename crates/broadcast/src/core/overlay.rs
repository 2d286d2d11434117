//! The overlay core: [`Overlay`], a [`HyParView`] core plus the policy that keeps it joined
//! to the rest of the cluster over a transport's connections. The policy's rules are
//! described on [`Overlay`].

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::ops::Bound;
use std::time::{Duration, Instant};

use super::{HyParView, HyParViewConfig, HyParViewError, HyParViewMessage, HyParViewOutput};

#[cfg(test)]
mod tests;

/// A peer as the overlay knows it: a stable name (the node) and an address that may change
/// when the node restarts. Two peers with the same name and different values are the same
/// node at two addresses, the older of which is stale.
pub trait Peer: Clone + Ord + Debug {
    /// What stays the same across the node's restarts.
    type Name: Clone + Ord + Debug;

    /// This peer's name.
    fn name(&self) -> &Self::Name;
}

/// A simulated node's id is its own name: it never moves.
impl Peer for usize {
    type Name = usize;

    fn name(&self) -> &usize {
        self
    }
}

/// Who owns the node's connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionMode {
    /// The overlay does: connections follow HyParView's active view, opened by
    /// [`OverlayOutput::Connect`] and closed by [`OverlayOutput::Disconnect`].
    Managed,
    /// The transport does (a full mesh, or static membership): the cores run over the
    /// connections it keeps, and the overlay asks for none to be opened or closed.
    Existing,
}

/// Settings of an [`Overlay`]: HyParView's, and the policy's periods and bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverlayConfig {
    /// Who owns the connections.
    pub mode: ConnectionMode,
    /// The HyParView core's (its seed seeds every random choice of the overlay).
    pub hyparview: HyParViewConfig,
    /// Housekeeping period: idle connections closed, the active view's connections opened,
    /// connected nodes offered, one lost peer retried (default 500 ms).
    pub tick: Duration,
    /// How long a connection to a peer outside the active view stays open after its last
    /// overlay message ([`ConnectionMode::Managed`] only; default 5 s).
    pub linger: Duration,
    /// How long a peer lost to a failure is remembered and retried (default 300 s).
    pub forget_lost_after: Duration,
    /// The most lost peers remembered, the oldest forgotten first (default 64).
    pub max_lost: usize,
    /// The most connections being opened at once (default 64): a message to one more
    /// unconnected peer is dropped.
    pub max_connecting: usize,
}

impl Default for OverlayConfig {
    fn default() -> Self {
        OverlayConfig {
            mode: ConnectionMode::Managed,
            hyparview: HyParViewConfig::default(),
            tick: Duration::from_millis(500),
            linger: Duration::from_secs(5),
            forget_lost_after: Duration::from_secs(300),
            max_lost: 64,
            max_connecting: 64,
        }
    }
}

/// What the overlay asks its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OverlayOutput<P: Peer> {
    /// Send `message` to `to`'s name: now if connected, or once the connection asked for by
    /// an earlier [`OverlayOutput::Connect`] opens.
    Send {
        /// The receiver.
        to: P,
        /// The message.
        message: HyParViewMessage<P>,
    },
    /// `peer` entered the active view: tell every tree.
    NeighbourUp(P),
    /// `peer` left the active view and no other address of its node is in it: tell every
    /// tree.
    NeighbourDown(P),
    /// Open a connection to `peer` ([`ConnectionMode::Managed`]); report how it went with
    /// [`Overlay::handle_connect_result`]. Messages for its name wait for it.
    Connect(P),
    /// Close the connection to the node of this name ([`ConnectionMode::Managed`]).
    Disconnect(P::Name),
}

/// How a connection asked for by [`OverlayOutput::Connect`] turned out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectResult<N> {
    /// The peer answered under its name: connected.
    Connected,
    /// Another node (this name) answered at the peer's address: the peer is gone from it.
    OtherNode(N),
    /// No connection.
    Failed,
}

/// Where a message for a peer known by name only (a tree neighbour, an exchange peer) goes,
/// from [`Overlay::route`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Send it: now if connected, or once the connection being opened opens.
    Send,
    /// Drop it: the peer is unknown or unreachable (the protocols' timers and anti-entropy
    /// cover the loss).
    Drop,
}

/// A connection being opened.
#[derive(Clone, Debug)]
struct Connecting<P> {
    peer: P,
    /// Opened to retry a lost peer: on success, join the overlay through it.
    rejoin: bool,
}

/// HyParView plus the policy that keeps a node in the overlay over real connections: the
/// sans-IO core of the `Broadcast` driver's overlay. Inputs carry `now`;
/// outputs come out of [`poll_output`](Self::poll_output); [`poll_timeout`](Self::poll_timeout)
/// says when [`handle_timeout`](Self::handle_timeout) is due. No tokio, no clock, no global
/// randomness (the seed is HyParView's).
///
/// The driver reports the connections the transport has ([`handle_up`](Self::handle_up),
/// [`handle_down`](Self::handle_down), [`handle_connections`](Self::handle_connections)),
/// the results of the connections it was asked to open, and failed sends. The rules:
///
/// - **Lost peers are retried.** A peer that failed (a down event, a connection that could
///   not be opened, a send with no connection) is remembered for
///   [`forget_lost_after`](OverlayConfig::forget_lost_after) (at most
///   [`max_lost`](OverlayConfig::max_lost), the oldest forgotten first). Every tick one of
///   them, round robin, is tried: joined through at its current address if connected, else
///   (managed) connected to and, if it answers, joined through: the quick way back after a
///   short outage. HyParView keeps its own lost peers ([`HyParView::lost`]) for as long as
///   they stay away, and retries them with backoff into full views; through this core, such
///   a retry opens a connection (managed) or finds none (existing connections: the peer is
///   still lost). That is how the halves of a partition of any length find each other once
///   it heals.
/// - **Stale addresses are evicted.** A peer named like a connected node or an overlay
///   message's sender but at another address (the node restarted on another port) leaves
///   the views and the lost set; a message for it is dropped rather than answered from the
///   new address, which would leave one-sided links.
/// - **Rejoin when isolated or when a lost peer is back.** A node that knows no peer rejoins
///   through the contact it first joined, every tick. Over an existing mesh, a connected
///   node is joined through if this node is isolated or the node is a lost peer (of either
///   set) outside the active view.
/// - **Offer connected nodes** (existing connections): every tick HyParView is offered the
///   connected nodes ([`HyParView::offer`]), so that components whose passive views emptied
///   do not stay apart though every node is connected to every other.
/// - **Connections follow the active view** (managed): a message for an unconnected peer
///   asks for a connection; every tick an active neighbour without one gets one; a connection
///   to a peer outside the active view closes once idle for
///   [`linger`](OverlayConfig::linger), and at once when the peer sends DISCONNECT. A
///   connection that fails to open fails the peer, unless it was a retry.
///
/// ```
/// use std::time::{Duration, Instant};
/// use shoal_broadcast::core::{Overlay, OverlayConfig, OverlayOutput};
///
/// let now = Instant::now();
/// let mut overlay = Overlay::new(1usize, OverlayConfig::default(), now);
/// overlay.join(now, 2);
/// // Managed connections: the contact must be connected before JOIN can go.
/// assert_eq!(overlay.poll_output(), Some(OverlayOutput::NeighbourUp(2)));
/// assert_eq!(overlay.poll_output(), Some(OverlayOutput::Connect(2)));
/// // It could not be: the contact failed and is lost, and is tried again on a tick.
/// overlay.handle_connect_result(now, &2, shoal_broadcast::core::ConnectResult::Failed);
/// let later = now + Duration::from_secs(1);
/// overlay.handle_timeout(later);
/// let outputs: Vec<_> = std::iter::from_fn(|| overlay.poll_output()).collect();
/// assert!(outputs.contains(&OverlayOutput::Connect(2)));
/// ```
pub struct Overlay<P: Peer> {
    config: OverlayConfig,
    hyparview: HyParView<P>,
    /// The connected nodes, each at its current address.
    connected: BTreeMap<P::Name, P>,
    connecting: BTreeMap<P::Name, Connecting<P>>,
    /// When each connected peer last exchanged an overlay message with this node (or left
    /// the active view), for closing idle connections.
    last_traffic: BTreeMap<P::Name, Instant>,
    /// The contact this node first joined through, to rejoin when isolated.
    first_contact: Option<P>,
    /// Peers lost to a failure, with when.
    lost: BTreeMap<P, Instant>,
    /// The last lost peer retried (round robin).
    last_retried: Option<P>,
    tick_at: Instant,
    /// HyParView messages dropped for want of a connection, for the driver's counters.
    dropped_unroutable: u64,
    outputs: VecDeque<OverlayOutput<P>>,
}

impl<P: Peer> Overlay<P> {
    /// A node `me`, alone; its first tick is one [`tick`](OverlayConfig::tick) after `now`.
    pub fn new(me: P, config: OverlayConfig, now: Instant) -> Self {
        Overlay {
            hyparview: HyParView::new(me, config.hyparview.clone(), now),
            connected: BTreeMap::new(),
            connecting: BTreeMap::new(),
            last_traffic: BTreeMap::new(),
            first_contact: None,
            lost: BTreeMap::new(),
            last_retried: None,
            tick_at: now + config.tick,
            dropped_unroutable: 0,
            outputs: VecDeque::new(),
            config,
        }
    }

    /// The HyParView core (its views).
    pub fn hyparview(&self) -> &HyParView<P> {
        &self.hyparview
    }

    /// The peers lost to a failure and not yet forgotten, with when they were lost.
    pub fn lost(&self) -> &BTreeMap<P, Instant> {
        &self.lost
    }

    /// How many HyParView messages were dropped since the overlay started because their peer
    /// had no connection and none could be opened (past
    /// [`max_connecting`](OverlayConfig::max_connecting) when managed; not connected over
    /// existing connections, where the peer is then failed). HyParView's timers cover each:
    /// a request unanswered is retried elsewhere.
    pub fn dropped_unroutable(&self) -> u64 {
        self.dropped_unroutable
    }

    /// The next output to act on, oldest first. Drain after every call.
    pub fn poll_output(&mut self) -> Option<OverlayOutput<P>> {
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due: HyParView's next timer or
    /// the next tick.
    pub fn poll_timeout(&self) -> Instant {
        self.hyparview.poll_timeout().map_or(self.tick_at, |at| at.min(self.tick_at))
    }

    /// The application joins through `contact` (remembered, the first time, for rejoining).
    /// Over existing connections the contact is taken at the address its node is connected
    /// from.
    pub fn join(&mut self, now: Instant, contact: P) {
        let contact = match self.config.mode {
            ConnectionMode::Managed => contact,
            ConnectionMode::Existing => {
                self.connected.get(contact.name()).cloned().unwrap_or(contact)
            }
        };
        self.first_contact.get_or_insert_with(|| contact.clone());
        self.join_through(now, contact);
        self.pump(now);
    }

    /// An overlay message from `from` (whose name the driver checked against the transport's
    /// sender). An error means HyParView ignored it; the policy's bookkeeping ran anyway.
    pub fn handle_message(
        &mut self,
        now: Instant,
        from: P,
        message: HyParViewMessage<P>,
    ) -> Result<(), HyParViewError> {
        let name = from.name().clone();
        self.last_traffic.insert(name.clone(), now);
        self.forget_stale(now, &from);
        let disconnect = matches!(message, HyParViewMessage::Disconnect);
        let result = self.hyparview.handle_message(now, from, message);
        // The peer dropped this node from its active view: the connection goes too, so that
        // connections stay those of the active view.
        if disconnect && self.config.mode == ConnectionMode::Managed && !self.is_active(&name) {
            self.disconnect(name);
        }
        self.pump(now);
        result
    }

    /// Traffic that only a neighbour sends (a tree's GOSSIP, IHAVE, GRAFT or PRUNE) came
    /// from the node of this name over its connection: if it is not in the active view, it
    /// is told DISCONNECT ([`HyParView::handle_neighbour_traffic`]), so that a link it holds
    /// alone does not carry its trees into this node for good.
    pub fn handle_neighbour_traffic(&mut self, now: Instant, name: &P::Name) {
        let Some(peer) = self.connected.get(name).cloned() else { return };
        self.hyparview.handle_neighbour_traffic(&peer);
        self.pump(now);
    }

    /// The node of `peer`'s name connected, at `peer`'s address.
    pub fn handle_up(&mut self, now: Instant, peer: P) {
        let name = peer.name().clone();
        self.connected.insert(name.clone(), peer.clone());
        match self.config.mode {
            ConnectionMode::Managed => {
                self.last_traffic.entry(name).or_insert(now);
            }
            ConnectionMode::Existing => self.on_existing_up(now, peer),
        }
        self.pump(now);
    }

    /// The node of this name is no longer connected: if it is a neighbour, it failed.
    pub fn handle_down(&mut self, now: Instant, name: &P::Name) {
        self.connected.remove(name);
        if let Some(peer) = self.active_peer(name) {
            self.fail(now, peer);
        }
        self.pump(now);
    }

    /// Every node connected now (after the driver missed connection events): the view of
    /// connections is replaced, and every neighbour without a connection (or one being
    /// opened) failed.
    pub fn handle_connections(&mut self, now: Instant, connected: impl IntoIterator<Item = P>) {
        self.connected = connected.into_iter().map(|peer| (peer.name().clone(), peer)).collect();
        for peer in self.unconnected_neighbours() {
            self.fail(now, peer);
        }
        self.pump(now);
    }

    /// How the connection to `peer` asked for by [`OverlayOutput::Connect`] turned out.
    pub fn handle_connect_result(
        &mut self,
        now: Instant,
        peer: &P,
        result: ConnectResult<P::Name>,
    ) {
        let Some(connecting) = self.connecting.remove(peer.name()) else { return };
        let peer = connecting.peer;
        match result {
            ConnectResult::Connected => {
                let name = peer.name().clone();
                self.last_traffic.insert(name.clone(), now);
                self.connected.insert(name, peer.clone());
                if connecting.rejoin {
                    self.join_through(now, peer);
                }
            }
            ConnectResult::OtherNode(other) => {
                if !self.is_active(&other) {
                    self.disconnect(other);
                }
                self.lost.remove(&peer);
                self.hyparview.forget_peer(now, &peer);
            }
            ConnectResult::Failed => {
                if !connecting.rejoin {
                    self.fail(now, peer);
                }
            }
        }
        self.pump(now);
    }

    /// A message for the node of this name found no connection: a neighbour failed.
    pub fn handle_send_failed(&mut self, now: Instant, name: &P::Name) {
        if let Some(peer) = self.active_peer(name) {
            self.fail(now, peer);
        }
        self.pump(now);
    }

    /// Where a message for the node of this name (a tree neighbour, an exchange peer) goes.
    /// Managed, an unconnected neighbour is asked to be connected to; over existing
    /// connections, an unconnected neighbour failed.
    pub fn route(&mut self, now: Instant, name: &P::Name) -> Route {
        if self.connected.contains_key(name) {
            return Route::Send;
        }
        let peer = self
            .connecting
            .get(name)
            .map(|connecting| connecting.peer.clone())
            .or_else(|| self.active_peer(name));
        let route = match (self.config.mode, peer) {
            (ConnectionMode::Managed, Some(peer)) => {
                if self.connect(peer, false) {
                    Route::Send
                } else {
                    Route::Drop
                }
            }
            (ConnectionMode::Existing, Some(peer)) => {
                self.fail(now, peer);
                Route::Drop
            }
            _ => Route::Drop,
        };
        self.pump(now);
        route
    }

    /// Time has come to `now`: HyParView's timers, and on each tick the policy's
    /// housekeeping (idle connections closed, the active view connected, connected nodes
    /// offered, lost peers retried).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.hyparview.poll_timeout().is_some_and(|at| at <= now) {
            self.hyparview.handle_timeout(now);
            self.pump(now);
        }
        if self.tick_at <= now {
            self.tick_at = now + self.config.tick;
            self.close_idle_connections(now);
            self.connect_active_view();
            self.offer_connected_nodes();
            self.retry_lost(now);
        }
        self.pump(now);
    }

    fn is_active(&self, name: &P::Name) -> bool {
        self.hyparview.active_view().iter().any(|peer| peer.name() == name)
    }

    fn active_peer(&self, name: &P::Name) -> Option<P> {
        self.hyparview.active_view().iter().find(|peer| peer.name() == name).cloned()
    }

    fn join_through(&mut self, now: Instant, contact: P) {
        self.lost.remove(&contact);
        // Only `ContactIsSelf` can fail, and then there is nothing to join.
        let _ = self.hyparview.join(now, contact);
    }

    fn disconnect(&mut self, name: P::Name) {
        self.last_traffic.remove(&name);
        self.connected.remove(&name);
        self.outputs.push_back(OverlayOutput::Disconnect(name));
    }

    /// [`ConnectionMode::Existing`]: `peer` connected. Any peer of that name at another
    /// address is dropped first. Then this node joins through it if it is isolated, or if it
    /// is a lost peer that is not a neighbour: the transport reconnects a healed partition's
    /// halves, and this is the moment to reconnect the overlay's halves too. Waiting for the
    /// lost peer's turn in the retries is not enough: if every node of one half had already
    /// forgotten or dropped the other half, nothing else would bring them together.
    fn on_existing_up(&mut self, now: Instant, peer: P) {
        self.forget_stale(now, &peer);
        let name = peer.name();
        let lost = self.lost.keys().chain(self.hyparview.lost()).any(|p| p.name() == name);
        if self.hyparview.is_isolated() || (lost && !self.is_active(name)) {
            self.join_through(now, peer);
        }
    }

    /// Drops every peer named like `current` but at another address, from the views and the
    /// lost set: that node restarted on another port, and its old address is gone for good.
    /// Left in place, an old address would take an active slot under a name that is still
    /// connected (messages go by name, so nothing would ever fail it), and a join or repair
    /// through it would be answered from the new address, leaving one-sided links.
    fn forget_stale(&mut self, now: Instant, current: &P) {
        let is_stale = |p: &P| p.name() == current.name() && p != current;
        self.lost.retain(|p, _| !is_stale(p));
        let views = self.hyparview.active_view().iter().chain(self.hyparview.passive_view());
        let stale: Vec<P> =
            views.chain(self.hyparview.lost()).filter(|p| is_stale(p)).cloned().collect();
        for peer in stale {
            self.hyparview.forget_peer(now, &peer);
        }
    }

    /// `peer` failed: HyParView repairs its views, and the peer is remembered as lost.
    fn fail(&mut self, now: Instant, peer: P) {
        self.hyparview.peer_failed(now, &peer);
        if &peer == self.hyparview.id() || self.config.max_lost == 0 {
            return;
        }
        // A peer failing again keeps the time it was first lost: the policy's quick retries
        // end `forget_lost_after` from then, and HyParView's slower ones go on.
        self.lost.entry(peer).or_insert(now);
        while self.lost.len() > self.config.max_lost {
            let oldest = self.lost.iter().min_by_key(|(_, at)| **at).map(|(p, _)| p.clone());
            if let Some(oldest) = oldest {
                self.lost.remove(&oldest);
            }
        }
    }

    /// Asks for a connection to `peer` unless one is being opened already; whether one is
    /// (false past [`max_connecting`](OverlayConfig::max_connecting)).
    fn connect(&mut self, peer: P, rejoin: bool) -> bool {
        if self.connecting.contains_key(peer.name()) {
            return true;
        }
        if self.connecting.len() >= self.config.max_connecting {
            return false;
        }
        self.outputs.push_back(OverlayOutput::Connect(peer.clone()));
        self.connecting.insert(peer.name().clone(), Connecting { peer, rejoin });
        true
    }

    /// Moves HyParView's outputs to this core's, applying the policy to each.
    fn pump(&mut self, now: Instant) {
        while let Some(output) = self.hyparview.poll_output() {
            match output {
                HyParViewOutput::Send { to, message } => self.send(now, to, message),
                HyParViewOutput::NeighbourUp(peer) => {
                    self.outputs.push_back(OverlayOutput::NeighbourUp(peer));
                }
                HyParViewOutput::NeighbourDown(peer) => {
                    // Trees know peers by name: an old address of a neighbour going leaves
                    // the neighbour in them.
                    let name = peer.name().clone();
                    if !self.is_active(&name) {
                        self.outputs.push_back(OverlayOutput::NeighbourDown(peer));
                    }
                    // Its connection lingers from now, so a DISCONNECT can still go out.
                    self.last_traffic.insert(name, now);
                }
            }
        }
    }

    fn send(&mut self, now: Instant, to: P, message: HyParViewMessage<P>) {
        let name = to.name().clone();
        if self.config.mode == ConnectionMode::Existing
            && let Some(current) = self.connected.get(&name)
            && *current != to
        {
            // An old address (from a shuffle or a walk that started before the restart): the
            // message would reach the node at its new one, which would answer as another
            // peer. The old one is dropped instead, and HyParView picks another peer.
            let current = current.clone();
            self.forget_stale(now, &current);
            return;
        }
        self.last_traffic.insert(name.clone(), now);
        if self.connected.contains_key(&name) {
            self.outputs.push_back(OverlayOutput::Send { to, message });
        } else if self.config.mode == ConnectionMode::Managed {
            if self.connect(to.clone(), false) {
                self.outputs.push_back(OverlayOutput::Send { to, message });
            } else {
                self.dropped_unroutable += 1;
            }
        } else {
            self.dropped_unroutable += 1;
            self.fail(now, to);
        }
    }

    /// [`ConnectionMode::Managed`]: closes connections to peers outside the active view that
    /// have been quiet for [`linger`](OverlayConfig::linger).
    fn close_idle_connections(&mut self, now: Instant) {
        if self.config.mode != ConnectionMode::Managed {
            return;
        }
        let connected: Vec<P::Name> = self.connected.keys().cloned().collect();
        for name in connected {
            if self.is_active(&name) || self.connecting.contains_key(&name) {
                continue;
            }
            let last = *self.last_traffic.entry(name.clone()).or_insert(now);
            if now.saturating_duration_since(last) >= self.config.linger {
                self.disconnect(name);
            }
        }
        let connected = &self.connected;
        self.last_traffic.retain(|name, _| connected.contains_key(name));
    }

    /// [`ConnectionMode::Managed`]: asks for a connection to every active neighbour that has
    /// none (one that became a neighbour through a message handled after its connection's
    /// down event). If it cannot be reached it fails; if it does not hold this node as a
    /// neighbour, it closes the idle connection after its linger and the down event fails it
    /// here, so a one-sided link does not outlive a linger.
    fn connect_active_view(&mut self) {
        if self.config.mode != ConnectionMode::Managed {
            return;
        }
        for peer in self.unconnected_neighbours() {
            self.connect(peer, false);
        }
    }

    /// The active view's peers with no connection, open or being opened.
    fn unconnected_neighbours(&self) -> Vec<P> {
        let unconnected = |p: &&P| {
            !self.connected.contains_key(p.name()) && !self.connecting.contains_key(p.name())
        };
        self.hyparview.active_view().iter().filter(unconnected).cloned().collect()
    }

    /// [`ConnectionMode::Existing`]: offers HyParView the connected nodes (at their current
    /// addresses).
    fn offer_connected_nodes(&mut self) {
        if self.config.mode != ConnectionMode::Existing {
            return;
        }
        let connected: Vec<P> = self.connected.values().cloned().collect();
        self.hyparview.offer(&connected);
    }

    /// Forgets lost peers past [`forget_lost_after`](OverlayConfig::forget_lost_after),
    /// rejoins through the first contact when isolated, and tries one lost peer (the next
    /// after the last one tried).
    fn retry_lost(&mut self, now: Instant) {
        let forget_after = self.config.forget_lost_after;
        self.lost.retain(|_, at| now.saturating_duration_since(*at) < forget_after);
        if self.hyparview.is_isolated()
            && let Some(contact) = self.first_contact.clone()
        {
            self.retry(now, contact);
        }
        // The first lost peer after the last one tried, whether or not that one is still lost
        // (`range(last..).nth(1)` skipped a peer whenever the last one tried had left).
        let after_last = self.last_retried.as_ref().and_then(|last| {
            self.lost.range((Bound::Excluded(last), Bound::Unbounded)).next().map(|(p, _)| p)
        });
        let next = after_last.or_else(|| self.lost.keys().next()).cloned();
        self.last_retried.clone_from(&next);
        if let Some(peer) = next {
            if self.is_active(peer.name()) {
                self.lost.remove(&peer);
            } else {
                self.retry(now, peer);
            }
        }
    }

    fn retry(&mut self, now: Instant, peer: P) {
        if let Some(current) = self.connected.get(peer.name()).cloned() {
            // Through the address it has now (it may have restarted on another port).
            self.forget_stale(now, &current);
            self.join_through(now, current);
        } else if self.config.mode == ConnectionMode::Managed {
            self.connect(peer, true);
        }
    }
}
