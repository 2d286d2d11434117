//! The driver task: one per node, owning the cores. It waits for the next input (a message,
//! a request from a handle, a node event, a connection opened, a core's timer), feeds it to
//! the cores, then drains their outputs (the crate's driver contract), and repeats. Which
//! peer to connect to, retry, evict or close is the [`Overlay`] core's decision; the task
//! opens the connections it names and holds the messages that wait for one.
//!
//! **Connections are shared** ([`ConnectionMode::Managed`]): other layers (Paxos to its
//! acceptors, processes sending to pids on other nodes) use the same connections. The task
//! never closes one: it holds a claim ([`KeepConnection`]) on each connection the overlay
//! asked for and on each active neighbour's, and lets it go when the overlay would close the
//! connection; the transport closes it only if no layer on either node claims it and nothing
//! uses it. A connection that outlives the overlay's use of it changes nothing in the
//! overlay: its neighbours come and go by HyParView's messages (NEIGHBOUR, DISCONNECT) and by
//! node down events, never by a connection's staying open. A peer that holds this node as a
//! neighbour when this node no longer does (a one-sided link) keeps its claim, so the
//! connection stays; the link ends as over a full mesh, when the peer's tree traffic here is
//! answered with DISCONNECT ([`Overlay::handle_neighbour_traffic`]), rather than by the
//! connection's closing.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use shoal_transport::{Inbox, Incoming, KeepConnection, Node, NodeEvent, RemoteError, Service};
use tokio::sync::{broadcast, mpsc};

use super::erased::{Erased, Prepare};
use super::{BroadcastConfig, BroadcastError, Command, Contact, Stats, Views};
use crate::core::{
    ConnectResult, ConnectionMode, Handler, HyParViewMessage, Overlay, OverlayOutput, Plumtree,
    PlumtreeMessage, PlumtreeOutput, Route,
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

/// The messages waiting for a connection the overlay asked for ([`ConnectionMode::Managed`]).
struct Connecting {
    contact: Contact,
    unsent: VecDeque<Wire>,
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
    me: Contact,
    service: Service<Wire>,
    inbox: Inbox<Wire>,
    commands: mpsc::Receiver<Command>,
    events: broadcast::Receiver<NodeEvent>,
    opened_sender: mpsc::Sender<Opened>,
    opened: mpsc::Receiver<Opened>,
    overlay: Overlay<Contact>,
    /// A Plumtree core per registered topic, by the topic's name.
    trees: BTreeMap<String, Plumtree<String, Erased>>,
    connecting: HashMap<String, Connecting>,
    /// Who owns the connections: in managed mode, the task's claims on them follow the
    /// overlay (see the module's docs).
    mode: ConnectionMode,
    /// The overlay's claims on connections, by node: those it asked to open and its active
    /// neighbours'.
    keeps: HashMap<String, KeepConnection>,
    /// The driver's own counters (the trees count their dropped announcements).
    stats: Stats,
}

/// Counts the bytes written to it: a message's encoded size, without keeping the bytes.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `wire`'s size encoded as the transport encodes a service message (msgpack), less the
/// envelope (the sender's name and the service's), which
/// [`BroadcastConfig::max_message_bytes`] leaves room for.
fn encoded_len(wire: &Wire) -> usize {
    let mut counter = ByteCounter(0);
    match rmp_serde::encode::write(&mut counter, wire) {
        Ok(()) => counter.0,
        // Not encodable at all: the transport would refuse it too.
        Err(_) => usize::MAX,
    }
}

impl Wire {
    /// The message's kind, for logs.
    fn kind(&self) -> &'static str {
        match self {
            Wire::Overlay { .. } => "overlay",
            Wire::Tree { .. } => "tree",
            Wire::Digest { .. } => "anti-entropy digest",
            Wire::Items { .. } => "anti-entropy answer",
        }
    }
}

/// A stable hash of a name (FNV-1a), to give each topic's core its own seed.
/// Splits an IHAVE of several announcements in two: `wire` keeps the first half, the second
/// is returned. `None` (and `wire` unchanged) for anything else.
fn split_announcements(wire: &mut Wire) -> Option<Wire> {
    let Wire::Tree { topic, message: PlumtreeMessage::IHave { announcements } } = wire else {
        return None;
    };
    if announcements.len() < 2 {
        return None;
    }
    let second = announcements.split_off(announcements.len() / 2);
    Some(Wire::Tree {
        topic: topic.clone(),
        message: PlumtreeMessage::IHave { announcements: second },
    })
}

fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Task {
    pub(super) fn new(
        node: Node,
        config: BroadcastConfig,
        mode: ConnectionMode,
        service: Service<Wire>,
        inbox: Inbox<Wire>,
        commands: mpsc::Receiver<Command>,
    ) -> Self {
        let now = node.runtime().clock().now().into_std();
        let me = Contact { name: node.name().to_owned(), addr: node.listen_addr() };
        let overlay_config = config.overlay(mode, config.seed ^ node.incarnation());
        let overlay = Overlay::new(me.clone(), overlay_config, now);
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
            mode,
            keeps: HashMap::new(),
            stats: Stats::default(),
            config,
        }
    }

    pub(super) async fn run(mut self) {
        tracing::debug!(node = %self.me, "broadcast driver started");
        let clock = self.node.runtime().clock().clone();
        // The nodes connected before the driver started (over a full mesh, the first one
        // is joined through).
        let now = clock.now().into_std();
        for name in self.node.nodes() {
            if let Some(contact) = self.contact_of(&name) {
                self.overlay.handle_up(now, contact);
            }
        }
        self.drain(now).await;
        loop {
            let deadline = tokio::time::Instant::from_std(self.next_deadline());
            // Biased, so that which input wins when several are ready is a function of the
            // run (a simulation replays it), in this order: a due timer (handling it moves the
            // deadline on, so it never starves the rest), the rare node events and opened
            // connections, what other nodes sent, and last the handles' commands, which wait
            // while this node is busy with its peers' traffic (back-pressure on new
            // broadcasts rather than on the repairs of old ones).
            let wake = tokio::select! {
                biased;
                () = clock.sleep_until(deadline) => Wake::Timer,
                event = self.events.recv() => Wake::Node(event),
                opened = self.opened.recv() => Wake::Opened(opened),
                incoming = self.inbox.recv() => Wake::Incoming(incoming),
                command = self.commands.recv() => Wake::Command(command),
            };
            let now = clock.now().into_std();
            match wake {
                Wake::Incoming(None) | Wake::Command(None | Some(Command::Stop)) => break,
                Wake::Incoming(Some(incoming)) => self.on_incoming(now, incoming).await,
                Wake::Command(Some(command)) => self.on_command(now, command),
                Wake::Node(event) => self.on_node_event(now, event),
                Wake::Opened(Some(opened)) => self.on_opened(now, opened).await,
                Wake::Opened(None) => {}
                Wake::Timer => self.on_timer(now),
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
        trees.fold(self.overlay.poll_timeout(), Instant::min)
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
                if let Err(error) = self.overlay.handle_message(now, contact, message) {
                    tracing::debug!(%from, %error, "overlay message ignored");
                }
            }
            Wire::Tree { topic, message } => match self.trees.get_mut(&topic) {
                Some(tree) => {
                    // A tree's links are the overlay's: a sender that is no neighbour holds
                    // a link to this node alone, and is told so.
                    if !tree.neighbours().contains(&from) {
                        self.overlay.handle_neighbour_traffic(now, &from);
                    }
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
                    let answer = self.fit(Wire::Items { topic, items });
                    self.send_to_name(now, &from, answer).await;
                }
            }
            Wire::Items { topic, items } => {
                let Some(tree) = self.trees.get_mut(&topic) else { return };
                for (id, payload) in items.into_iter().take(self.config.max_exchange_items) {
                    // Merged by the handler only: the tree already carried it elsewhere.
                    if Handler::merge(tree.handler_mut(), &id, payload) {
                        self.stats.delivered_by_exchange += 1;
                    }
                }
            }
        }
    }

    fn on_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Join(contact) => self.overlay.join(now, contact),
            Command::Register { topic, handler, reply } => {
                let registered = !self.trees.contains_key(topic);
                if registered {
                    let seed = self.config.seed ^ self.node.incarnation() ^ name_hash(topic);
                    let config = self.config.plumtree(seed);
                    let mut tree = Plumtree::new(self.me.name.clone(), config, handler, now);
                    for peer in self.overlay.hyparview().active_view() {
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
                let hyparview = self.overlay.hyparview();
                let views = Views {
                    active: hyparview.active_view().clone(),
                    passive: hyparview.passive_view().clone(),
                };
                let _ = reply.send(views);
            }
            Command::Stats(reply) => {
                let mut stats = self.stats;
                stats.dropped_announcements =
                    self.trees.values().map(Plumtree::dropped_announcements).sum();
                stats.duplicates = self.trees.values().map(Plumtree::duplicates).sum();
                stats.dropped_unroutable += self.overlay.dropped_unroutable();
                let _ = reply.send(stats);
            }
            Command::Stop => {}
        }
    }

    /// An anti-entropy answer with as many of its items as fit in
    /// [`BroadcastConfig::max_message_bytes`] (the first ones; the next exchange brings the
    /// rest).
    fn fit(&self, mut answer: Wire) -> Wire {
        while encoded_len(&answer) > self.config.max_message_bytes {
            let Wire::Items { items, .. } = &mut answer else { break };
            if items.len() <= 1 {
                break;
            }
            items.truncate(items.len() / 2);
        }
        answer
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

    fn on_node_event(
        &mut self,
        now: Instant,
        event: Result<NodeEvent, broadcast::error::RecvError>,
    ) {
        match event {
            Ok(NodeEvent::Up { node, .. }) => {
                if let Some(contact) = self.contact_of(&node) {
                    self.overlay.handle_up(now, contact);
                }
            }
            Ok(NodeEvent::Down { node, .. }) => {
                // The overlay connects again if it wants to; the transport need not.
                self.keeps.remove(&node);
                self.overlay.handle_down(now, &node);
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Events were missed: the connections as they are now instead.
                let connected: Vec<Contact> =
                    self.node.nodes().iter().filter_map(|name| self.contact_of(name)).collect();
                self.overlay.handle_connections(now, connected);
            }
            Err(broadcast::error::RecvError::Closed) => {}
        }
    }

    async fn on_opened(&mut self, now: Instant, opened: Opened) {
        let Opened { contact, result } = opened;
        let Some(connecting) = self.connecting.remove(&contact.name) else { return };
        let result = match result {
            Ok(name) if name == contact.name => ConnectResult::Connected,
            Ok(other) => {
                tracing::debug!(peer = %contact, %other, "another node listens at the address");
                ConnectResult::OtherNode(other)
            }
            Err(error) => {
                tracing::debug!(node = %self.me, peer = %contact, %error, "cannot connect");
                ConnectResult::Failed
            }
        };
        let connected = result == ConnectResult::Connected;
        if !connected {
            self.keeps.remove(&contact.name);
        }
        self.overlay.handle_connect_result(now, &contact, result);
        if connected {
            for wire in connecting.unsent {
                self.send_now(now, &contact.name, wire).await;
            }
        }
    }

    fn on_timer(&mut self, now: Instant) {
        if self.overlay.poll_timeout() <= now {
            self.overlay.handle_timeout(now);
        }
        for tree in self.trees.values_mut() {
            if tree.poll_timeout().is_some_and(|at| at <= now) {
                tree.handle_timeout(now);
            }
        }
    }

    /// Drains the cores until none has output (the driver contract's step 2).
    async fn drain(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(output) = self.overlay.poll_output() {
                progressed = true;
                match output {
                    OverlayOutput::Send { to, message } => {
                        let wire = Wire::Overlay { from: self.me.clone(), message };
                        self.deliver(now, &to.name, wire).await;
                    }
                    OverlayOutput::NeighbourUp(peer) => {
                        self.keep(&peer.name);
                        for tree in self.trees.values_mut() {
                            tree.neighbour_up(now, peer.name.clone());
                        }
                    }
                    OverlayOutput::NeighbourDown(peer) => {
                        // A connection that is open lingers, until the overlay lets it go;
                        // a claim on one that is not would only have the transport retry it.
                        if !self.node.is_connected(&peer.name) {
                            self.keeps.remove(&peer.name);
                        }
                        for tree in self.trees.values_mut() {
                            tree.neighbour_down(&peer.name);
                        }
                    }
                    OverlayOutput::Connect(contact) => self.connect(contact),
                    OverlayOutput::Disconnect(name) => {
                        // The overlay is done with the connection; other layers may not be.
                        tracing::debug!(node = %self.me, peer = %name, "letting a connection go");
                        if let Some(keep) = self.keeps.remove(&name) {
                            keep.let_go();
                        }
                    }
                }
            }
            let mut sends = Vec::new();
            for (topic, tree) in &mut self.trees {
                while let Some(output) = tree.poll_output() {
                    match output {
                        PlumtreeOutput::Send { to, message } => {
                            self.stats.count_tree_send(&message);
                            sends.push((to, Wire::Tree { topic: topic.clone(), message }));
                        }
                        PlumtreeOutput::Exchange { peer } => {
                            let digest = Handler::exchange(tree.handler_mut(), &peer)
                                .and_then(|()| tree.handler().digest());
                            match digest {
                                Ok(digest) => {
                                    self.stats.digests_sent += 1;
                                    sends.push((
                                        peer,
                                        Wire::Digest { topic: topic.clone(), digest },
                                    ));
                                }
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

    /// Sends to a peer known by name only (a tree neighbour, an exchange peer), where the
    /// overlay routes it.
    async fn send_to_name(&mut self, now: Instant, to: &str, wire: Wire) {
        match self.overlay.route(now, &to.to_owned()) {
            Route::Send => self.deliver(now, to, wire).await,
            Route::Drop => {
                self.stats.dropped_unroutable += 1;
                tracing::debug!(peer = %to, kind = wire.kind(), "no connection to the peer: dropped");
            }
        }
    }

    /// Sends `wire` now if `to` is connected, else queues it (bounded) on the connection
    /// being opened to it, else tries (and reports a send with no connection).
    async fn deliver(&mut self, now: Instant, to: &str, wire: Wire) {
        if !self.node.is_connected(to)
            && let Some(connecting) = self.connecting.get_mut(to)
        {
            if connecting.unsent.len() < self.config.max_unsent_per_peer {
                connecting.unsent.push_back(wire);
            } else {
                self.stats.dropped_unsent += 1;
                tracing::debug!(peer = %to, kind = wire.kind(), "the peer's queue is full: dropped");
            }
            return;
        }
        self.send_now(now, to, wire).await;
    }

    /// Sends `wire` to `to` unless it is too large for the transport: an IHAVE too large (a
    /// new neighbour's catch-up announcements, or long ids) goes as IHAVEs of fewer
    /// announcements; anything else is counted and logged as an error (the transport would
    /// drop it with no error to the sender).
    async fn send_now(&mut self, now: Instant, to: &str, mut wire: Wire) {
        let len = encoded_len(&wire);
        if len > self.config.max_message_bytes {
            match split_announcements(&mut wire) {
                Some(second) => {
                    Box::pin(self.send_now(now, to, wire)).await;
                    Box::pin(self.send_now(now, to, second)).await;
                }
                None => {
                    self.stats.oversized += 1;
                    let (kind, max) = (wire.kind(), self.config.max_message_bytes);
                    tracing::error!(peer = %to, kind, len, max, "a broadcast message too large to send");
                }
            }
            return;
        }
        match self.service.send(to, &wire).await {
            Ok(()) => {}
            Err(RemoteError::NoConnection(_)) => {
                self.overlay.handle_send_failed(now, &to.to_owned());
            }
            Err(error) => {
                self.stats.send_failures += 1;
                tracing::warn!(peer = %to, %error, "a broadcast message was not sent");
            }
        }
    }

    /// Claims the connection to `name` for the overlay ([`ConnectionMode::Managed`]).
    fn keep(&mut self, name: &str) {
        if self.mode == ConnectionMode::Managed && !self.keeps.contains_key(name) {
            self.keeps.insert(name.to_owned(), self.node.keep(name));
        }
    }

    /// Opens a connection to `contact`, as the overlay asked ([`ConnectionMode::Managed`]),
    /// and claims it; one that another layer opened already is the overlay's at once.
    fn connect(&mut self, contact: Contact) {
        self.keep(&contact.name);
        let node = self.node.clone();
        let sender = self.opened_sender.clone();
        let target = contact.clone();
        tokio::spawn(async move {
            let result = if node.is_connected(&target.name)
                && node
                    .node_spec(&target.name)
                    .is_some_and(|s| s.listen_addrs.contains(&target.addr))
            {
                Ok(target.name.clone())
            } else {
                node.join(target.addr).await.map_err(|error| error.to_string())
            };
            let _ = sender.send(Opened { contact: target, result }).await;
        });
        let connecting = Connecting { contact, unsent: VecDeque::new() };
        self.connecting.insert(connecting.contact.name.clone(), connecting);
    }
}
