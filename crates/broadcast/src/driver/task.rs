//! The driver task: one per node, owning the cores. It waits for the next input (a message,
//! a request from a handle, a node event, a connection opened, a core's timer), feeds it to
//! the cores, then drains their outputs (the crate's driver contract), and repeats.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use shoal_transport::{Inbox, Incoming, Node, NodeEvent, RemoteError, Service};
use tokio::sync::{broadcast, mpsc};

use super::erased::{Erased, Prepare};
use super::{BroadcastConfig, BroadcastError, Command, Contact, Mode, Views};
use crate::core::{
    Handler, HyParView, HyParViewMessage, HyParViewOutput, Plumtree, PlumtreeMessage,
    PlumtreeOutput,
};

/// Everything the driver sends, on the service, tagged by the transport with the sender.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Wire {
    /// A HyParView message; `from` is the sender's contact (its name checked against the
    /// transport's tag), so that views learn addresses.
    Overlay { from: Contact, message: HyParViewMessage<Contact> },
    /// A Plumtree message for the topic named `topic`.
    Tree { topic: String, message: PlumtreeMessage<String, ByteBuf, ByteBuf> },
    /// Anti-entropy: the sender's digest; answered with [`Wire::Items`].
    Digest { topic: String, digest: ByteBuf },
    /// Anti-entropy: messages the receiver's digest lacked.
    Items { topic: String, items: Vec<(ByteBuf, ByteBuf)> },
}

/// A connection being opened ([`Mode::Managed`]), and what waits for it.
struct Connecting {
    contact: Contact,
    unsent: VecDeque<Wire>,
    /// Opened to retry a lost peer: on success, join the overlay through it.
    rejoin: bool,
}

/// The outcome of one connection attempt.
struct Opened {
    contact: Contact,
    /// The name of the node that answered at the contact's address.
    result: Result<String, String>,
}

/// What woke the task.
enum Wake {
    Incoming(Option<Incoming<Wire>>),
    Command(Option<Command>),
    Node(Result<NodeEvent, broadcast::error::RecvError>),
    Opened(Option<Opened>),
    Timer,
}

pub(super) struct Task {
    node: Node,
    config: BroadcastConfig,
    mode: Mode,
    me: Contact,
    service: Service<Wire>,
    inbox: Inbox<Wire>,
    commands: mpsc::Receiver<Command>,
    events: broadcast::Receiver<NodeEvent>,
    opened_sender: mpsc::Sender<Opened>,
    opened: mpsc::Receiver<Opened>,
    overlay: HyParView<Contact>,
    /// A Plumtree core per registered topic, by the topic's name.
    trees: BTreeMap<String, Plumtree<String, Erased>>,
    connecting: HashMap<String, Connecting>,
    /// When each connected peer last exchanged an overlay message with this node (or left
    /// the active view), for closing idle connections.
    last_traffic: HashMap<String, Instant>,
    /// The contact this node first joined through, to rejoin when isolated.
    first_contact: Option<Contact>,
    /// Peers lost to a failure, with when; retried one per tick.
    lost: BTreeMap<Contact, Instant>,
    /// The last lost peer retried (round robin).
    last_retried: Option<Contact>,
    tick_at: Instant,
}

/// A stable hash of a name (FNV-1a), to give each topic's core its own seed.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Task {
    pub(super) fn new(
        node: Node,
        config: BroadcastConfig,
        mode: Mode,
        service: Service<Wire>,
        inbox: Inbox<Wire>,
        commands: mpsc::Receiver<Command>,
    ) -> Self {
        let now = node.runtime().clock().now().into_std();
        let me = Contact { name: node.name().to_owned(), addr: node.listen_addr() };
        let overlay =
            HyParView::new(me.clone(), config.hyparview(config.seed ^ node.incarnation()), now);
        let (opened_sender, opened) = mpsc::channel(config.max_connecting.max(1));
        Task {
            events: node.subscribe(),
            node,
            me,
            service,
            inbox,
            commands,
            opened_sender,
            opened,
            overlay,
            trees: BTreeMap::new(),
            connecting: HashMap::new(),
            last_traffic: HashMap::new(),
            first_contact: None,
            lost: BTreeMap::new(),
            last_retried: None,
            tick_at: now + config.tick,
            config,
            mode,
        }
    }

    pub(super) async fn run(mut self) {
        tracing::debug!(node = %self.me, "broadcast driver started");
        let clock = self.node.runtime().clock().clone();
        if self.mode == Mode::Existing {
            let now = clock.now().into_std();
            if let Some(contact) = self.node.nodes().first().and_then(|name| self.contact_of(name))
            {
                self.join(now, contact);
            }
            self.drain(now).await;
        }
        loop {
            let deadline = tokio::time::Instant::from_std(self.next_deadline());
            let wake = tokio::select! {
                incoming = self.inbox.recv() => Wake::Incoming(incoming),
                command = self.commands.recv() => Wake::Command(command),
                event = self.events.recv() => Wake::Node(event),
                opened = self.opened.recv() => Wake::Opened(opened),
                () = clock.sleep_until(deadline) => Wake::Timer,
            };
            let now = clock.now().into_std();
            match wake {
                Wake::Incoming(None) | Wake::Command(None | Some(Command::Stop)) => break,
                Wake::Incoming(Some(incoming)) => self.on_incoming(now, incoming).await,
                Wake::Command(Some(command)) => self.on_command(now, command),
                Wake::Node(event) => self.on_node_event(now, event),
                Wake::Opened(Some(opened)) => self.on_opened(now, opened).await,
                Wake::Opened(None) => {}
                Wake::Timer => self.on_timer(now).await,
            }
            if self.node.is_stopped() {
                break;
            }
            self.drain(now).await;
        }
        tracing::debug!(node = %self.me, "broadcast driver stopped");
    }

    fn next_deadline(&self) -> Instant {
        let trees = self.trees.values().filter_map(Plumtree::poll_timeout);
        trees.chain(self.overlay.poll_timeout()).fold(self.tick_at, Instant::min)
    }

    fn is_active(&self, name: &str) -> bool {
        self.overlay.active_view().iter().any(|contact| contact.name == name)
    }

    fn active_contact(&self, name: &str) -> Option<Contact> {
        self.overlay.active_view().iter().find(|contact| contact.name == name).cloned()
    }

    /// The contact of a connected node, from the spec it sent in its handshake.
    fn contact_of(&self, name: &str) -> Option<Contact> {
        let spec = self.node.members().into_iter().find(|spec| spec.name == name)?;
        let addr = *spec.listen_addrs.first()?;
        Some(Contact { name: spec.name, addr })
    }

    async fn on_incoming(&mut self, now: Instant, incoming: Incoming<Wire>) {
        let Incoming { from, message } = incoming;
        match message {
            Wire::Overlay { from: contact, message } => {
                if contact.name != from {
                    tracing::warn!(%from, claimed = %contact, "an overlay message names another sender: ignored");
                    return;
                }
                self.last_traffic.insert(from.clone(), now);
                self.forget_stale(now, &contact);
                let disconnect = matches!(message, HyParViewMessage::Disconnect);
                if let Err(error) = self.overlay.handle_message(now, contact, message) {
                    tracing::debug!(%from, %error, "overlay message ignored");
                }
                // The peer dropped this node from its active view: the connection goes too,
                // so that connections stay those of the active view.
                if disconnect && self.mode == Mode::Managed && !self.is_active(&from) {
                    self.node.disconnect_node(&from);
                    self.last_traffic.remove(&from);
                }
            }
            Wire::Tree { topic, message } => match self.trees.get_mut(&topic) {
                Some(tree) => {
                    if let Err(error) = tree.handle_message(now, from.clone(), message) {
                        tracing::debug!(%from, %topic, %error, "tree message ignored");
                    }
                }
                None => tracing::debug!(%from, %topic, "a tree message for no topic here: dropped"),
            },
            Wire::Digest { topic, digest } => {
                let Some(tree) = self.trees.get_mut(&topic) else { return };
                let items = tree.handler_mut().missing(&digest, self.config.max_exchange_items);
                if !items.is_empty() {
                    self.send_to_name(now, &from, Wire::Items { topic, items }).await;
                }
            }
            Wire::Items { topic, items } => {
                let Some(tree) = self.trees.get_mut(&topic) else { return };
                for (id, payload) in items.into_iter().take(self.config.max_exchange_items) {
                    // Merged by the handler only: the tree already carried it elsewhere.
                    Handler::merge(tree.handler_mut(), &id, payload);
                }
            }
        }
    }

    fn on_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Join(contact) => {
                let contact = match self.mode {
                    Mode::Managed => contact,
                    Mode::Existing => self.contact_of(&contact.name).unwrap_or(contact),
                };
                self.first_contact.get_or_insert_with(|| contact.clone());
                self.join(now, contact);
            }
            Command::Register { topic, handler, reply } => {
                let registered = !self.trees.contains_key(topic);
                if registered {
                    let seed = self.config.seed ^ self.node.incarnation() ^ name_hash(topic);
                    let config = self.config.plumtree(seed);
                    let mut tree = Plumtree::new(self.me.name.clone(), config, handler, now);
                    for peer in self.overlay.active_view() {
                        tree.neighbour_up(now, peer.name.clone());
                    }
                    self.trees.insert(topic.to_owned(), tree);
                }
                let _ = reply.send(registered);
            }
            Command::Broadcast { topic, message, reply } => {
                let _ = reply.send(self.broadcast(now, topic, message));
            }
            Command::Views(reply) => {
                let views = Views {
                    active: self.overlay.active_view().clone(),
                    passive: self.overlay.passive_view().clone(),
                };
                let _ = reply.send(views);
            }
            Command::Stop => {}
        }
    }

    fn broadcast(
        &mut self,
        now: Instant,
        topic: &str,
        message: Box<dyn std::any::Any + Send>,
    ) -> Result<(), BroadcastError> {
        let unknown = || BroadcastError::UnknownTopic(topic.to_owned());
        let tree = self.trees.get_mut(topic).ok_or_else(unknown)?;
        let prepared = tree.handler_mut().prepare(message).map_err(|error| match error {
            // Registered under this name for another message type: not this topic.
            Prepare::WrongType => unknown(),
            Prepare::Encode(why) => BroadcastError::Encode(why),
        })?;
        tree.broadcast(now, prepared).map_err(|_| BroadcastError::NotNew)?;
        Ok(())
    }

    fn join(&mut self, now: Instant, contact: Contact) {
        self.lost.remove(&contact);
        if let Err(error) = self.overlay.join(now, contact) {
            tracing::debug!(%error, "join ignored");
        }
    }

    fn on_node_event(
        &mut self,
        now: Instant,
        event: Result<NodeEvent, broadcast::error::RecvError>,
    ) {
        match event {
            Ok(NodeEvent::Up { node, .. }) => match self.mode {
                Mode::Managed => {
                    self.last_traffic.entry(node).or_insert(now);
                }
                Mode::Existing => self.on_existing_up(now, &node),
            },
            Ok(NodeEvent::Down { node, .. }) => {
                if let Some(contact) = self.active_contact(&node) {
                    self.fail(now, contact);
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Events were missed: check every neighbour's connection instead.
                let gone: Vec<Contact> = self
                    .overlay
                    .active_view()
                    .iter()
                    .filter(|c| {
                        !self.node.is_connected(&c.name) && !self.connecting.contains_key(&c.name)
                    })
                    .cloned()
                    .collect();
                for contact in gone {
                    self.fail(now, contact);
                }
            }
            Err(broadcast::error::RecvError::Closed) => {}
        }
    }

    /// [`Mode::Existing`]: `name` connected. Any contact of that name at another address (the
    /// node restarted on a new port) is dropped first. Then this node joins through it if it
    /// is isolated, or if it is a lost peer that is not a neighbour: the transport reconnects
    /// a healed partition's halves, and this is the moment to reconnect the overlay's halves
    /// too. Waiting for the lost peer's turn in [`Task::retry_lost`] is not enough: if every
    /// node of one half had already forgotten or dropped the other half (its passive view
    /// lost it when its failures were detected), nothing else would bring them together.
    fn on_existing_up(&mut self, now: Instant, name: &str) {
        let Some(contact) = self.contact_of(name) else { return };
        self.forget_stale(now, &contact);
        let lost = self.lost.keys().any(|c| c.name == name);
        if self.overlay.is_isolated() || (lost && !self.is_active(name)) {
            tracing::debug!(node = %self.me, peer = %contact, "a lost peer is back: rejoining through it");
            self.join(now, contact);
        }
    }

    /// Drops every contact named like `current` but at another address, from the views and
    /// the lost set: that node restarted on another port, and its old address is gone for
    /// good. Left in place, an old contact would take an active slot under a name that is
    /// still connected (messages go by name, so nothing would ever fail it), and a join or
    /// repair through it would be answered from the new address, leaving one-sided links.
    fn forget_stale(&mut self, now: Instant, current: &Contact) {
        let is_stale = |c: &Contact| c.name == current.name && c.addr != current.addr;
        self.lost.retain(|c, _| !is_stale(c));
        let views = self.overlay.active_view().iter().chain(self.overlay.passive_view());
        let stale: Vec<Contact> = views.filter(|c| is_stale(c)).cloned().collect();
        for contact in stale {
            tracing::debug!(node = %self.me, peer = %contact, %current, "dropping an old address");
            self.overlay.peer_failed(now, &contact);
        }
    }

    /// `contact` failed: HyParView repairs its views, and the peer is remembered as lost.
    fn fail(&mut self, now: Instant, contact: Contact) {
        tracing::debug!(node = %self.me, peer = %contact, "peer failed");
        self.overlay.peer_failed(now, &contact);
        if contact == self.me || self.config.max_lost == 0 {
            return;
        }
        self.lost.insert(contact, now);
        while self.lost.len() > self.config.max_lost {
            let oldest = self.lost.iter().min_by_key(|(_, at)| **at).map(|(c, _)| c.clone());
            if let Some(oldest) = oldest {
                self.lost.remove(&oldest);
            }
        }
    }

    async fn on_opened(&mut self, now: Instant, opened: Opened) {
        let Opened { contact, result } = opened;
        let Some(connecting) = self.connecting.remove(&contact.name) else { return };
        match result {
            Ok(name) if name == contact.name => {
                self.last_traffic.insert(name.clone(), now);
                if connecting.rejoin {
                    tracing::debug!(node = %self.me, peer = %contact, "a lost peer answers: rejoining through it");
                    self.join(now, contact);
                }
                for wire in connecting.unsent {
                    self.send_now(now, &name, wire).await;
                }
            }
            Ok(other) => {
                tracing::debug!(peer = %contact, %other, "another node listens at the address");
                if !self.is_active(&other) {
                    self.node.disconnect_node(&other);
                }
                self.lost.remove(&contact);
                self.overlay.peer_failed(now, &contact);
            }
            Err(error) => {
                tracing::debug!(node = %self.me, peer = %contact, %error, "cannot connect");
                if !connecting.rejoin {
                    self.fail(now, contact);
                }
            }
        }
    }

    async fn on_timer(&mut self, now: Instant) {
        if self.overlay.poll_timeout().is_some_and(|at| at <= now) {
            self.overlay.handle_timeout(now);
        }
        for tree in self.trees.values_mut() {
            if tree.poll_timeout().is_some_and(|at| at <= now) {
                tree.handle_timeout(now);
            }
        }
        if self.tick_at <= now {
            self.tick_at = now + self.config.tick;
            self.close_idle_connections(now);
            self.connect_active_view();
            self.offer_connected_nodes();
            self.retry_lost(now).await;
        }
    }

    /// [`Mode::Managed`]: closes connections to peers outside the active view that have been
    /// quiet for [`BroadcastConfig::linger`].
    fn close_idle_connections(&mut self, now: Instant) {
        if self.mode != Mode::Managed {
            return;
        }
        let connected = self.node.nodes();
        for name in &connected {
            if self.is_active(name) || self.connecting.contains_key(name) {
                continue;
            }
            let last = *self.last_traffic.entry(name.clone()).or_insert(now);
            if now.saturating_duration_since(last) >= self.config.linger {
                tracing::debug!(node = %self.me, peer = %name, "closing an idle connection");
                self.node.disconnect_node(name);
                self.last_traffic.remove(name);
            }
        }
        self.last_traffic.retain(|name, _| connected.contains(name));
    }

    /// [`Mode::Managed`]: opens a connection to every active neighbour that has none (one
    /// that became a neighbour through a message handled after its connection's down event).
    /// If it cannot be reached it fails; if it does not hold this node as a neighbour, it
    /// closes the idle connection after its linger and the down event fails it here, so a
    /// one-sided link does not outlive a linger.
    fn connect_active_view(&mut self) {
        if self.mode != Mode::Managed {
            return;
        }
        let unconnected: Vec<Contact> = self
            .overlay
            .active_view()
            .iter()
            .filter(|c| !self.node.is_connected(&c.name) && !self.connecting.contains_key(&c.name))
            .cloned()
            .collect();
        for contact in unconnected {
            self.connect(contact, None, false);
        }
    }

    /// [`Mode::Existing`]: offers HyParView the connected nodes (at their current addresses),
    /// which takes some into its passive view when that cannot fill the active view's free
    /// slots ([`HyParView::offer`]): every connected node can be a neighbour, so the overlay
    /// does not stay split in components that each know only themselves.
    fn offer_connected_nodes(&mut self) {
        if self.mode != Mode::Existing {
            return;
        }
        let connected: Vec<Contact> =
            self.node.nodes().iter().filter_map(|name| self.contact_of(name)).collect();
        self.overlay.offer(&connected);
    }

    /// Rejoins through the first contact when isolated, and tries one lost peer (the next
    /// after the last one tried).
    async fn retry_lost(&mut self, now: Instant) {
        let forget_after = self.config.forget_lost_after;
        self.lost.retain(|_, at| now.saturating_duration_since(*at) < forget_after);
        if self.overlay.is_isolated()
            && let Some(contact) = self.first_contact.clone()
        {
            self.retry(now, contact).await;
        }
        let next = match &self.last_retried {
            Some(last) => self.lost.range(last.clone()..).nth(1).map(|(c, _)| c.clone()),
            None => None,
        }
        .or_else(|| self.lost.keys().next().cloned());
        self.last_retried.clone_from(&next);
        if let Some(contact) = next {
            if self.is_active(&contact.name) {
                self.lost.remove(&contact);
            } else {
                self.retry(now, contact).await;
            }
        }
    }

    async fn retry(&mut self, now: Instant, contact: Contact) {
        if self.node.is_connected(&contact.name) {
            // Through the address it has now (it may have restarted on another port).
            let current = self.contact_of(&contact.name).unwrap_or(contact);
            self.forget_stale(now, &current);
            self.join(now, current);
        } else if self.mode == Mode::Managed {
            self.connect(contact, None, true);
        }
    }

    /// Drains both cores until neither has output (the driver contract's step 2).
    async fn drain(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(output) = self.overlay.poll_output() {
                progressed = true;
                match output {
                    HyParViewOutput::Send { to, message } => {
                        self.send_overlay(now, to, message).await;
                    }
                    HyParViewOutput::NeighbourUp(peer) => {
                        for tree in self.trees.values_mut() {
                            tree.neighbour_up(now, peer.name.clone());
                        }
                    }
                    HyParViewOutput::NeighbourDown(peer) => {
                        // Trees know peers by name: an old address of a neighbour going
                        // leaves the neighbour in them.
                        if !self.is_active(&peer.name) {
                            for tree in self.trees.values_mut() {
                                tree.neighbour_down(&peer.name);
                            }
                        }
                        // Its connection lingers from now, so a DISCONNECT can still go out.
                        self.last_traffic.insert(peer.name, now);
                    }
                }
            }
            let mut sends = Vec::new();
            for (topic, tree) in &mut self.trees {
                while let Some(output) = tree.poll_output() {
                    match output {
                        PlumtreeOutput::Send { to, message } => {
                            sends.push((to, Wire::Tree { topic: topic.clone(), message }));
                        }
                        PlumtreeOutput::Exchange { peer } => {
                            let digest = Handler::exchange(tree.handler_mut(), &peer)
                                .and_then(|()| tree.handler().digest());
                            match digest {
                                Ok(digest) => sends
                                    .push((peer, Wire::Digest { topic: topic.clone(), digest })),
                                Err(error) => {
                                    tracing::debug!(%topic, %peer, %error, "no exchange");
                                }
                            }
                        }
                    }
                }
            }
            progressed |= !sends.is_empty();
            for (to, wire) in sends {
                self.send_to_name(now, &to, wire).await;
            }
            if !progressed {
                break;
            }
        }
    }

    async fn send_overlay(
        &mut self,
        now: Instant,
        to: Contact,
        message: HyParViewMessage<Contact>,
    ) {
        if self.mode == Mode::Existing
            && let Some(current) = self.contact_of(&to.name)
            && current.addr != to.addr
        {
            // An old address (from a shuffle or a walk that started before the restart): the
            // message would reach the node at its new one, which would answer as another
            // contact. The old one is dropped instead, and HyParView picks another peer.
            self.forget_stale(now, &current);
            return;
        }
        let wire = Wire::Overlay { from: self.me.clone(), message };
        self.last_traffic.insert(to.name.clone(), now);
        if self.node.is_connected(&to.name) {
            self.send_now(now, &to.name, wire).await;
        } else if self.mode == Mode::Managed {
            self.connect(to, Some(wire), false);
        } else {
            self.fail(now, to);
        }
    }

    /// Sends to a peer known by name only (a tree neighbour, an exchange peer).
    async fn send_to_name(&mut self, now: Instant, to: &str, wire: Wire) {
        if self.node.is_connected(to) {
            self.send_now(now, to, wire).await;
            return;
        }
        let contact = self
            .connecting
            .get(to)
            .map(|connecting| connecting.contact.clone())
            .or_else(|| self.active_contact(to));
        match (self.mode, contact) {
            (Mode::Managed, Some(contact)) => self.connect(contact, Some(wire), false),
            (Mode::Existing, Some(contact)) => self.fail(now, contact),
            (_, None) => {
                tracing::debug!(peer = %to, "a message for a peer no longer known: dropped")
            }
        }
    }

    async fn send_now(&mut self, now: Instant, to: &str, wire: Wire) {
        match self.service.send(to, &wire).await {
            Ok(()) => {}
            Err(RemoteError::NoConnection(_)) => {
                if let Some(contact) = self.active_contact(to) {
                    self.fail(now, contact);
                }
            }
            Err(error) => tracing::warn!(peer = %to, %error, "a broadcast message was not sent"),
        }
    }

    /// [`Mode::Managed`]: queues `wire` (if any) for `contact`, opening a connection to it
    /// unless one is being opened already.
    fn connect(&mut self, contact: Contact, wire: Option<Wire>, rejoin: bool) {
        if let Some(connecting) = self.connecting.get_mut(&contact.name) {
            if let Some(wire) = wire
                && connecting.unsent.len() < self.config.max_unsent_per_peer
            {
                connecting.unsent.push_back(wire);
            }
            return;
        }
        if self.connecting.len() >= self.config.max_connecting {
            tracing::debug!(peer = %contact, "too many connections being opened: message dropped");
            return;
        }
        let node = self.node.clone();
        let sender = self.opened_sender.clone();
        let target = contact.clone();
        tokio::spawn(async move {
            let result = node.join(target.addr).await.map_err(|error| error.to_string());
            let _ = sender.send(Opened { contact: target, result }).await;
        });
        let unsent = wire.into_iter().collect();
        self.connecting.insert(contact.name.clone(), Connecting { contact, unsent, rejoin });
    }
}
