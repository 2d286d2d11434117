//! The node's part in its cluster: it admits peers (by the rules of `crate::membership`),
//! keeps each one connected, detects failures, gossips, and takes control frames; process
//! frames go on to [`Processes`].
//!
//! ```text
//!            accept loop ──handshake──▶ admit(peer) ──▶ read_loop ──▶ dispatch ──▶ Processes
//!                                          │ unknown peer: add + connector
//!  connector (one task per peer):          ▼
//!     connect every channel × parallelism ─▶ Session (one OutQueue + writer per connection)
//!     heartbeat: ping and read counts on control; down when silent or a connection stalls
//!     session lost ─▶ down(reason): monitors, links, calls told; NodeDown; backoff; again
//! ```
//!
//! Each node sends on connections it opened itself and reads on connections others opened
//! to it, so two nodes connecting to each other at once never race over one socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use shoal_process::{ExitKind, ExitReason, Runtime};
use tokio::sync::{broadcast, mpsc, watch};

use crate::admission::{Gate, Limits, Ticket};
use crate::answers::PendingAnswers;
use crate::config::{Membership, NodeConfig};
use crate::conn::{self, ConnError, Dispatch, Wiring};
use crate::entropy::Entropy;
use crate::fault::Faults;
use crate::handshake::{Hello, VERSIONS};
use crate::keep::Keeps;
use crate::membership::{
    Admission, GossipChange, Members, admission, gossip_changes, tombstone_covers,
};
use crate::net::{BoxFuture, Connection, Listener};
use crate::node_watchers::NodeWatchers;
use crate::peer::{Peer, Session, lock};
use crate::progress::StallWatch;
use crate::remote::{Processes, Reach, Transport};
use crate::tasks::Tasks;
use crate::wire::{Format, Frame};
use crate::{DownReason, NodeEvent, NodeSpec, NodeStartError};

/// Heartbeat ticks between two traces of a peer's counters.
const STATS_EVERY_TICKS: u64 = 40;

/// Events buffered for a slow subscriber before it is told it lagged.
const EVENT_BUFFER: usize = 1024;

/// Heartbeat ticks between two reminders to a peer of whether this node keeps their
/// connection (managed mode; see `crate::keep`).
const KEEP_EVERY_TICKS: u64 = 8;

/// The most directory entries one round of address gossip carries (managed mode): rounds go
/// around the directory, so a large one spreads over several.
const GOSSIP_WINDOW: usize = 256;

pub(crate) struct Cluster {
    pub(crate) config: NodeConfig,
    /// What the connection layer sees of this node.
    pub(crate) wiring: Arc<Wiring>,
    pub(crate) members: Arc<Members>,
    /// The keeps this node's layers hold on connections (`crate::keep`).
    pub(crate) keeps: Arc<Keeps>,
    pub(crate) answers: Arc<PendingAnswers>,
    pub(crate) processes: Arc<Processes>,
    pub(crate) events: broadcast::Sender<NodeEvent>,
    /// Local processes that get node events in their mailboxes.
    pub(crate) node_watchers: Arc<NodeWatchers>,
    pub(crate) tasks: Arc<Tasks>,
    /// The number of the last connection attempt to a peer (see [`crate::handshake::Hello`]).
    attempts: AtomicU64,
}

impl Cluster {
    /// Builds the node on `runtime`, listens, and starts its loops.
    pub(crate) async fn start(
        mut config: NodeConfig,
        runtime: Runtime,
    ) -> Result<Arc<Self>, NodeStartError> {
        let listener = config
            .network
            .bind(config.listen)
            .await
            .map_err(|error| NodeStartError::Bind(config.listen, error.to_string()))?;
        let listen_addr = listener
            .local_addr()
            .map_err(|error| NodeStartError::Bind(config.listen, error.to_string()))?;
        let spec = NodeSpec {
            name: config.name.clone(),
            incarnation: runtime.incarnation(),
            listen_addrs: vec![listen_addr],
            channels: config.channels.clone(),
        };
        let wiring = Arc::new(Wiring {
            key: config.key.clone(),
            protection: config.protection,
            spec,
            network: config.network.clone(),
            connect_timeout: config.connect_timeout,
            max_frame_bytes: config.max_frame_bytes,
            faults: Faults::new(config.seed ^ runtime.incarnation()),
            entropy: if config.network.deterministic() {
                Entropy::seeded(config.seed ^ runtime.incarnation().rotate_left(32))
            } else {
                Entropy::os()
            },
            origin: runtime.clock().now(),
            clock: runtime.clock().clone(),
        });
        config.runtime = None;
        let (members, answers, tasks) = (Arc::default(), Arc::default(), Arc::default());
        let managed = config.membership == Membership::Managed;
        let keeps = Arc::new(Keeps::new(Arc::clone(&members), managed));
        let processes = Arc::new(Processes::new(
            runtime,
            Arc::clone(&members),
            Arc::clone(&answers),
            Arc::clone(&tasks),
            config.peer_queue_frames,
        ));
        let cluster = Arc::new(Self {
            config,
            wiring,
            members,
            keeps,
            answers,
            processes,
            events: broadcast::Sender::new(EVENT_BUFFER),
            node_watchers: Arc::default(),
            tasks,
            attempts: AtomicU64::new(0),
        });
        if managed {
            let reach: std::sync::Weak<dyn Reach> = Arc::downgrade(&cluster) as _;
            cluster.processes.set_reach(reach);
        }
        let transport = Transport::new(&cluster.processes);
        if cluster.runtime().set_remote(Arc::new(transport)).is_err() {
            return Err(NodeStartError::InvalidConfig(
                "the runtime already has a transport".into(),
            ));
        }
        cluster.tasks.spawn(accept_loop(cluster.clone(), listener));
        match &cluster.config.membership {
            // Managed: the address gossip that feeds the directories.
            Membership::FullMesh | Membership::Managed => {
                cluster.tasks.spawn(gossip_loop(cluster.clone()));
            }
            Membership::Static(addrs) => {
                for addr in addrs.clone() {
                    cluster.tasks.spawn(join_static(cluster.clone(), addr));
                }
            }
        }
        tracing::info!(node = %cluster.spec().name, addr = %listen_addr, "node started");
        Ok(cluster)
    }

    pub(crate) fn runtime(&self) -> &Runtime {
        &self.processes.runtime
    }

    pub(crate) fn spec(&self) -> &NodeSpec {
        &self.wiring.spec
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.wiring.millis()
    }

    fn is_managed(&self) -> bool {
        self.config.membership == Membership::Managed
    }

    /// The peer called `name` to send to: up or connecting, or (managed) opened on demand now
    /// from the directory. `None`: not reachable.
    pub(crate) fn reach_name(&self, name: &str) -> Option<Arc<Peer>> {
        let peer = self.processes.reach(shoal_process::NodeId::from_name(name))?;
        (peer.name() == name).then_some(peer)
    }

    /// Whether anything holds the connection to `peer` open (managed mode): a keep on either
    /// node, a monitor or link across it, a call or request awaiting its answer, or frames
    /// waiting to go.
    fn is_held(&self, peer: &Peer) -> bool {
        self.keeps.is_kept(&peer.name())
            || peer.remote_keeps()
            || peer.has_ties()
            || peer.queued_frames() > 0
            || self.answers.awaits_from(peer.id)
    }

    /// Stops the node: its tasks end, its peers are dropped.
    pub(crate) fn stop(&self) {
        self.tasks.stop();
        for peer in self.members.list() {
            peer.remove();
        }
    }

    /// Tells the subscribed processes and the event stream's receivers of a node event.
    fn publish(&self, event: NodeEvent) {
        self.node_watchers.notify(self.runtime(), &event);
        let _ = self.events.send(event);
    }

    /// Decides whether a node that authenticated (or was learnt of) may be a member; adds it,
    /// or updates it when it restarted. The reason is logged and sent to a refused peer.
    pub(crate) fn admit(self: &Arc<Self>, spec: &NodeSpec) -> Result<Arc<Peer>, String> {
        if self.tasks.is_stopped() {
            return Err("this node is stopping".into());
        }
        let known = self.members.get(spec.id());
        let decision = admission(
            self.spec(),
            spec,
            known.as_ref().map(|peer| peer.spec()).as_ref(),
            self.members.left_incarnation(&spec.name),
            self.wiring.faults.is_cut(spec.id()),
        );
        if self.is_managed() && !matches!(decision, Admission::Refuse(_)) {
            self.members.directory().learn(spec);
        }
        match (decision, known) {
            (Admission::Refuse(reason), _) => Err(reason),
            (Admission::Known, Some(peer)) => {
                if !peer.is_up() {
                    // It connects while this node's own connections to it are down (this side
                    // noticed the loss later, or is in its backoff): connect back now, and
                    // queue what goes to it meanwhile (a reply to its first call) rather than
                    // lose it.
                    peer.connecting(&self.config.channels);
                    peer.kick.notify_one();
                }
                Ok(peer)
            }
            (Admission::Restarted, Some(peer)) => {
                tracing::info!(peer = %spec.name, "the peer restarted with a new incarnation");
                self.down(&peer, DownReason::Restarted);
                if self.config.membership != Membership::Managed {
                    peer.set_spec(spec.clone());
                    peer.connecting(&self.config.channels);
                    peer.kick.notify_one();
                    return Ok(peer);
                }
                // Managed: the old incarnation's connector forgets its peer when its session
                // ends; the new incarnation is a new member with a connector of its own.
                self.forget_peer(&peer);
                Ok(self.add_peer(spec))
            }
            // Known or restarted with no peer: it was forgotten meanwhile.
            (Admission::New | Admission::Known | Admission::Restarted, _) => {
                Ok(self.add_peer(spec))
            }
        }
    }

    /// Adds a new member and starts its connector, unless one of its id was added meanwhile
    /// (by a concurrent connection): that one is returned.
    fn add_peer(self: &Arc<Self>, spec: &NodeSpec) -> Arc<Peer> {
        let peer = Arc::new(Peer::new(spec.clone(), self.config.peer_queue_frames));
        peer.connecting(&self.config.channels);
        let (peer, added) = self.members.insert(peer);
        if added {
            tracing::debug!(node = %self.spec().name, peer = %spec.name, "new member");
            self.tasks.spawn(connector(self.clone(), peer.clone()));
        }
        peer
    }

    /// Skips the reconnect backoff of `node`'s connector.
    pub(crate) fn kick(&self, node: &str) {
        if let Some(peer) = self.members.by_name(node) {
            peer.kick.notify_one();
        }
    }

    /// Takes `peer` down here: its session ends, and every local process that depends on it
    /// learns why (monitors fire, links exit, pending calls fail). Returns whether it was up.
    pub(crate) fn down(&self, peer: &Peer, reason: DownReason) -> bool {
        let was_up = peer.end();
        self.notify_down(peer, was_up, reason);
        was_up
    }

    /// Takes `peer` down here if `session` is still its session (it was not ended from
    /// elsewhere meanwhile).
    fn session_down(&self, peer: &Peer, session: &Arc<Session>, reason: DownReason) {
        if let Some(was_up) = peer.end_session(session) {
            self.notify_down(peer, was_up, reason);
        }
    }

    /// Tells every local process that depends on `peer` that its session ended, and the
    /// event's subscribers if it was up.
    fn notify_down(&self, peer: &Peer, was_up: bool, reason: DownReason) {
        self.answers.fail_from(peer.id);
        let runtime = self.runtime();
        let ties = std::mem::take(&mut *lock(&peer.ties));
        for (monitor, (watcher, target)) in ties.watching {
            runtime.deliver_down(watcher, monitor, target, ExitReason::NoConnection);
        }
        for (monitor, target) in ties.watched {
            runtime.remote_demonitor(target, monitor);
        }
        for (local, remote) in ties.links {
            runtime.deliver_exit(local, remote, ExitReason::NoConnection, ExitKind::Link);
        }
        if was_up {
            let (node, incarnation) = (peer.name(), peer.incarnation());
            tracing::info!(node = %self.spec().name, peer = %node, %reason, "node down");
            self.publish(NodeEvent::Down { node, incarnation, reason });
        }
    }

    /// Records that `name`'s incarnation `incarnation` left, and forgets it.
    pub(crate) fn tombstone(&self, name: &str, incarnation: u64) {
        self.members.record_left(name, incarnation);
        let Some(peer) = self.members.by_name(name) else { return };
        if tombstone_covers(incarnation, peer.incarnation()) {
            self.down(&peer, DownReason::Left);
            self.forget_peer(&peer);
        }
    }

    /// Drops `peer` from the members (it must be down already) and stops its connector. A
    /// later peer of the same id is not affected.
    pub(crate) fn forget_peer(&self, peer: &Arc<Peer>) {
        peer.remove();
        self.members.remove(peer);
    }

    /// Applies a peer's gossip.
    fn merge_gossip(self: &Arc<Self>, members: Vec<NodeSpec>, left: Vec<(String, u64)>) {
        if self.is_managed() {
            self.learn_addresses(&members);
        }
        let known = |name: &str| self.members.by_name(name).map(|peer| peer.incarnation());
        let changes =
            gossip_changes(&self.spec().name, &self.config.membership, members, left, known);
        for change in changes {
            match change {
                GossipChange::Tombstone { name, incarnation } => self.tombstone(&name, incarnation),
                GossipChange::Admit(spec) => {
                    if let Err(reason) = self.admit(&spec) {
                        tracing::debug!(peer = %spec.name, %reason, "gossiped member not admitted");
                    }
                }
            }
        }
    }

    /// Managed mode: records where the gossiped members listen (never connecting to them),
    /// and connects to those of them that a layer here keeps and that are not members yet.
    fn learn_addresses(self: &Arc<Self>, members: &[NodeSpec]) {
        let me = &self.spec().name;
        for spec in members.iter().filter(|spec| spec.name != *me) {
            let left = self.members.left_incarnation(&spec.name);
            if left.is_some_and(|left| tombstone_covers(left, spec.incarnation)) {
                continue;
            }
            self.members.directory().learn(spec);
            if self.keeps.is_kept(&spec.name) && self.members.by_name(&spec.name).is_none() {
                self.reach_name(&spec.name);
            }
        }
    }

    fn gossip_frame(&self) -> Frame {
        if self.is_managed() {
            // The directory, a window at a time: where members listen, for sends on demand.
            let mut members = self.members.directory().window(GOSSIP_WINDOW);
            members.push(self.spec().clone());
            return Frame::Gossip { members, left: self.members.tombstones() };
        }
        let mut members: Vec<NodeSpec> =
            self.members.list().iter().filter(|p| p.is_up()).map(|p| p.spec()).collect();
        members.push(self.spec().clone());
        Frame::Gossip { members, left: self.members.tombstones() }
    }
}

/// Connections on demand: a node the directory knows is admitted as a new member, which
/// starts its connector; what is sent to it meanwhile waits in its queue.
impl Reach for Cluster {
    fn open_on_demand(self: Arc<Self>, node: shoal_process::NodeId) -> Option<Arc<Peer>> {
        if !self.is_managed() {
            return None;
        }
        let spec = self.members.directory().get(node)?;
        match self.admit(&spec) {
            Ok(peer) => {
                tracing::debug!(node = %self.spec().name, peer = %spec.name, "connecting on demand");
                peer.is_reachable().then_some(peer)
            }
            Err(reason) => {
                tracing::debug!(peer = %spec.name, %reason, "no connection on demand");
                None
            }
        }
    }
}

/// The node takes what its connections read: control frames here, the rest to its processes.
impl Dispatch for Cluster {
    fn admit(self: &Arc<Self>, spec: &NodeSpec) -> Result<Arc<Peer>, String> {
        Cluster::admit(self, spec)
    }

    /// A peer that connects after closing the connections of the session this node is up on
    /// took this node down on its side (a stall, a timeout) and connects again before this
    /// node noticed. This node takes the peer down now, before the new connection joins its
    /// side of the session: noticing later would close the new connection with the old ones
    /// and take the peer down a second time. A session that ends (here or from elsewhere)
    /// while the connection is taken ends wholly before or wholly after
    /// ([`Peer::take_inbound`]): it closes, and counts as released to the peer, the new
    /// connection only if it ends after.
    fn accepting(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        hello: &Hello,
        version: u32,
    ) -> watch::Receiver<u64> {
        peer.set_version(version);
        let (ended, epoch) = peer.take_inbound(hello.attempt, hello.released);
        if let Some(was_up) = ended {
            let reason = "it closed this node's connections and connected again";
            self.notify_down(peer, was_up, DownReason::ConnectionLost(reason.into()));
            peer.connecting(&self.config.channels);
            peer.kick.notify_one();
        }
        epoch
    }

    fn dispatch(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        frame: Frame,
    ) -> Option<BoxFuture<'static, ()>> {
        match frame {
            Frame::Ping { id } => {
                peer.push_control(Frame::Pong { id });
            }
            Frame::Pong { id } => {
                if !peer.note_pong(id, self.wiring.micros()) {
                    self.answers.settle(id, Ok(Bytes::new()));
                }
            }
            Frame::Received { counts } => peer.note_read_by_peer(&counts),
            Frame::Gossip { members, left } => self.merge_gossip(members, left),
            // A node leaves only as itself, in the incarnation it runs.
            Frame::Leave { incarnation } if incarnation == peer.incarnation() => {
                self.tombstone(&peer.name(), incarnation);
            }
            Frame::Leave { incarnation } => {
                tracing::warn!(peer = %peer.name(), incarnation, "a leave for another incarnation ignored");
            }
            Frame::Keep { keep } => peer.set_remote_keeps(keep),
            frame => {
                peer.note_data();
                return self.processes.dispatch(peer, frame);
            }
        }
        None
    }
}

/// Accepts connections: each takes a slot of the node's admission gate (`crate::admission`)
/// for its handshake, or is closed at once when it is over the gate's bounds, so a flood of
/// connections cannot pile up tasks nor keep members and new nodes out.
async fn accept_loop(cluster: Arc<Cluster>, listener: Box<dyn Listener>) {
    let members = cluster.members.clone();
    let limits = Limits::of(&cluster.config);
    let (name, clock) = (cluster.spec().name.clone(), cluster.wiring.clock.clone());
    let gate = Gate::new(name, limits, clock, move |name| members.by_name(name).is_some());
    loop {
        match listener.accept().await {
            Ok(conn) => {
                // Over a bound: dropped, so closed, at once.
                let Some(ticket) = gate.enter(conn.peer_addr) else { continue };
                cluster.tasks.spawn(handshake_and_read(cluster.clone(), conn, ticket));
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                cluster.wiring.clock.sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Runs the handshake of an incoming connection, holding `ticket` until its peer
/// authenticates, then reads what the peer sends.
async fn handshake_and_read(cluster: Arc<Cluster>, conn: Connection, ticket: Ticket) {
    let addr = conn.peer_addr;
    match conn::accept(&cluster.wiring, &cluster, conn, &ticket).await {
        Ok(None) => {
            tracing::debug!(node = %cluster.spec().name, %addr, "a joining node introduced itself");
        }
        Ok(Some((accepted, track))) => {
            drop(ticket);
            let (channel, index) = (&accepted.channel, accepted.index);
            tracing::debug!(node = %cluster.spec().name, peer = %accepted.peer.name(), %addr, channel, index, "connection accepted");
            let wiring = cluster.wiring.clone();
            conn::read_loop(wiring, cluster, accepted, track).await;
        }
        Err(error) => ticket.failed(addr, &error),
    }
}

async fn gossip_loop(cluster: Arc<Cluster>) {
    let mut ticks = cluster.wiring.clock.interval(cluster.config.gossip_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let frame = cluster.gossip_frame();
        for peer in cluster.members.list().iter().filter(|peer| peer.is_up()) {
            peer.push_control(frame.clone());
        }
    }
}

/// Static membership: keeps trying to reach `addr` until its node is known.
async fn join_static(cluster: Arc<Cluster>, addr: SocketAddr) {
    let mut backoff = cluster.config.backoff_min;
    loop {
        match conn::probe(&cluster.wiring, addr).await {
            Ok(peer) => match cluster.admit(&peer) {
                Ok(_) => return,
                Err(reason) => tracing::warn!(%addr, %reason, "static peer not admitted"),
            },
            Err(error) => tracing::debug!(%addr, %error, "static peer not reachable"),
        }
        cluster.wiring.clock.sleep(cluster.wiring.faults.jitter(backoff)).await;
        backoff = (backoff * 2).min(cluster.config.backoff_max);
    }
}

/// Managed mode: connects again to `last` (as it was last known), which a layer here keeps,
/// after its session ended; at the address the directory has for it now, through a handshake
/// that tells its current incarnation. Ends once it is a member again (this way or another)
/// or no longer kept.
async fn reconnect_kept(cluster: Arc<Cluster>, last: NodeSpec) {
    let mut backoff = cluster.config.backoff_min;
    loop {
        cluster.wiring.clock.sleep(cluster.wiring.faults.jitter(backoff)).await;
        backoff = (backoff * 2).min(cluster.config.backoff_max);
        let name = &last.name;
        if !cluster.keeps.is_kept(name) || cluster.members.by_name(name).is_some() {
            return;
        }
        let spec = cluster.members.directory().by_name(name).unwrap_or_else(|| last.clone());
        for addr in &spec.listen_addrs {
            match conn::probe(&cluster.wiring, *addr).await {
                Ok(found) if found.name == *name => match cluster.admit(&found) {
                    Ok(_) => return,
                    Err(reason) => tracing::debug!(peer = %name, %reason, "kept peer not admitted"),
                },
                Ok(found) => {
                    tracing::debug!(peer = %name, other = %found.name, %addr, "another node listens there");
                }
                Err(error) => {
                    tracing::debug!(peer = %name, %addr, %error, "kept peer not reachable")
                }
            }
        }
    }
}

/// Keeps one peer connected: opens every connection, watches the session, takes the peer
/// down when it fails, and tries again with backoff. Ends when the peer is removed.
async fn connector(cluster: Arc<Cluster>, peer: Arc<Peer>) {
    let mut removed = peer.removed();
    let mut backoff = cluster.config.backoff_min;
    let mut sessions = 0u64;
    while !peer.is_removed() {
        match open_session(&cluster, &peer).await {
            Ok((started, failures)) => {
                if sessions > 0 {
                    peer.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                sessions += 1;
                backoff = cluster.config.backoff_min;
                run_session(&cluster, &peer, started, failures, &mut removed).await;
            }
            Err(error) => {
                tracing::debug!(node = %cluster.spec().name, peer = %peer.name(), %error, "connect failed");
                if cluster.is_managed() {
                    // What was sent on demand meanwhile fails: calls, monitors and links.
                    let reason = DownReason::ConnectionLost(error.to_string());
                    cluster.notify_down(&peer, false, reason);
                }
            }
        }
        if peer.is_removed() {
            break;
        }
        if cluster.is_managed() {
            // Managed: connections follow use. A peer no layer keeps is forgotten, and a send
            // opens its connections again; one that is kept is connected to again, at where it
            // listens now (it may have restarted elsewhere).
            cluster.forget_peer(&peer);
            if cluster.keeps.is_kept(&peer.name()) {
                cluster.tasks.spawn(reconnect_kept(cluster.clone(), peer.spec()));
            }
            break;
        }
        let wait = cluster.wiring.faults.jitter(backoff);
        backoff = (backoff * 2).min(cluster.config.backoff_max);
        // Every select here is biased, in the order written: which branch wins when several
        // are ready is then a function of the run, not of tokio's random pick, so that a
        // simulated run replays from its seed.
        tokio::select! {
            biased;
            _ = removed.changed() => {}
            () = peer.kick.notified() => {}
            () = cluster.wiring.clock.sleep(wait) => {}
        }
    }
}

/// A session whose connections are open, and the attempt that opened them.
struct Started {
    session: Arc<Session>,
    attempt: u64,
}

/// Opens every connection to `peer` (all at once) and starts their writers on the
/// session's queues.
async fn open_session(
    cluster: &Arc<Cluster>,
    peer: &Arc<Peer>,
) -> Result<(Started, mpsc::Receiver<DownReason>), ConnError> {
    let session = peer.connecting(&cluster.config.channels);
    let attempt = cluster.attempts.fetch_add(1, Ordering::Relaxed) + 1;
    let opened = open_connections(cluster, peer, attempt).await;
    match opened.and_then(|opened| Ok((session_format(cluster, &opened)?, opened))) {
        Ok((format, opened)) => {
            peer.set_version(format.version());
            let (failed, failures) = mpsc::channel(1);
            for (channel, index, conn) in opened {
                let Some(queue) = session.queue(&channel, index) else { continue };
                let ended = session.ended();
                let writer = conn::write_loop(
                    cluster.wiring.clone(),
                    peer.clone(),
                    queue,
                    conn.conn.write,
                    (conn.sealer, format),
                    failed.clone(),
                );
                cluster.tasks.spawn(until_ended(ended.clone(), writer));
                let watch = conn::watch_closed(conn.conn.read, failed.clone());
                cluster.tasks.spawn(until_ended(ended, watch));
            }
            Ok((Started { session, attempt }, failures))
        }
        Err(error) => {
            peer.abandon(&session);
            Err(error)
        }
    }
}

/// The format of a session's frames: the version every one of its connections negotiated
/// (the same on each, since both nodes offer the same versions on all of them; a session whose
/// connections disagree is not started).
fn session_format(
    cluster: &Cluster,
    opened: &[(String, u16, conn::Opened)],
) -> Result<Format, ConnError> {
    let mut versions = opened.iter().map(|(_, _, opened)| opened.version);
    let version = versions.next().unwrap_or(*VERSIONS.end());
    if let Some(other) = versions.find(|other| *other != version) {
        let why = format!("the connections negotiated versions {version} and {other}");
        return Err(ConnError::Refused(why));
    }
    Ok(Format::new(version, cluster.wiring.max_frame_bytes)?)
}

/// Opens every connection to `peer` in connection attempt `attempt`, all at once (each is a
/// handshake of its own, so the session comes up in about one handshake's time); if one
/// fails, they all do.
async fn open_connections(
    cluster: &Cluster,
    peer: &Arc<Peer>,
    attempt: u64,
) -> Result<Vec<(String, u16, conn::Opened)>, ConnError> {
    if cluster.wiring.faults.is_cut(peer.id) {
        return Err(ConnError::Refused("traffic is cut by fault injection".into()));
    }
    let spec = Arc::new(peer.spec());
    // Dropped when this connector ends: the handshakes still running are aborted.
    let mut handshakes = tokio::task::JoinSet::new();
    for (channel, config) in &cluster.config.channels {
        for index in 0..config.parallelism {
            let (wiring, spec, channel) = (cluster.wiring.clone(), spec.clone(), channel.clone());
            let peer = peer.clone();
            handshakes.spawn(async move {
                let released = peer.released_attempt();
                let slot = conn::Slot { channel: &channel, index, attempt, released };
                let opened = connect_any(&wiring, &spec, &slot).await?;
                Ok((channel, index, opened))
            });
        }
    }
    // Every handshake is waited for, even once one has failed: a connection dropped in the
    // middle of its handshake may still be taken by the peer, after the same connection of
    // the next attempt, and replace it there (the peer keeps the last one of each channel
    // and index it took).
    let mut opened = Vec::with_capacity(handshakes.len());
    let mut failure = None;
    while let Some(handshake) = handshakes.join_next().await {
        match handshake {
            Ok(Ok(connection)) => opened.push(connection),
            Ok(Err(error)) => {
                failure.get_or_insert(error);
            }
            Err(error) => {
                let error = ConnError::Refused(format!("a connection attempt failed: {error}"));
                failure.get_or_insert(error);
            }
        }
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(opened),
    }
}

/// Connects one connection of `channel` to the first of the peer's addresses that answers,
/// and checks that it is still the same node.
async fn connect_any(
    wiring: &Wiring,
    spec: &NodeSpec,
    slot: &conn::Slot<'_>,
) -> Result<conn::Opened, ConnError> {
    let mut last = ConnError::Refused(format!("{} has no listen address", spec.name));
    for addr in &spec.listen_addrs {
        match conn::connect(wiring, *addr, slot).await {
            Ok(opened) if opened.peer.name != spec.name => {
                last = ConnError::Refused(format!(
                    "{addr} is now {}, not {}",
                    opened.peer.name, spec.name
                ));
            }
            Ok(opened) if opened.peer.incarnation != spec.incarnation => {
                last = ConnError::Refused(format!(
                    "{} runs incarnation {}, not {}",
                    spec.name, opened.peer.incarnation, spec.incarnation
                ));
            }
            Ok(opened) => return Ok(opened),
            Err(error) => last = error,
        }
    }
    Err(last)
}

async fn until_ended(mut ended: watch::Receiver<bool>, task: impl Future<Output = ()>) {
    tokio::select! {
        biased;
        _ = ended.wait_for(|ended| *ended) => {}
        () = task => {}
    }
}

/// Runs a session until it fails, the peer falls silent, a connection stalls, or it is ended
/// from elsewhere (disconnect, leave, restart); then takes the peer down.
async fn run_session(
    cluster: &Arc<Cluster>,
    peer: &Arc<Peer>,
    Started { session, attempt }: Started,
    mut failures: mpsc::Receiver<DownReason>,
    removed: &mut watch::Receiver<bool>,
) {
    let mut ended = session.ended();
    if !peer.begin(&session, attempt, cluster.now_ms()) {
        return;
    }
    let (node, incarnation) = (peer.name(), peer.incarnation());
    tracing::info!(node = %cluster.spec().name, peer = %node, "node up");
    let managed = cluster.is_managed();
    if managed {
        peer.push_keep(cluster.keeps.is_kept(&node));
    }
    cluster.publish(NodeEvent::Up { node, incarnation });
    peer.push_control(cluster.gossip_frame());
    let mut activity = Activity { frames: peer.data_frames(), since_ms: cluster.now_ms() };
    let idle_ms = cluster.config.idle_close.as_millis() as u64;
    let interval = cluster.config.heartbeat_interval;
    let timeout_ms = cluster.config.failure_timeout.as_millis() as u64;
    let stall_ms = cluster.config.stall_timeout().as_millis() as u64;
    let mut stalls: Vec<StallWatch> =
        session.connections().map(|_| StallWatch::default()).collect();
    let mut ticks = cluster.wiring.clock.interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks_seen = 0u64;
    let interval_ms = interval.as_millis() as u64;
    let mut last_tick_ms = cluster.now_ms();
    // The time last heard from the peer for which a late tick gave one more tick.
    let mut graced: Option<u64> = None;
    let reason = loop {
        tokio::select! {
            biased;
            _ = ended.wait_for(|ended| *ended) => return,
            _ = removed.changed() => return,
            reason = failures.recv() => {
                break reason.unwrap_or(DownReason::ConnectionLost("connection tasks ended".into()));
            }
            _ = ticks.tick() => {
                let now_ms = cluster.now_ms();
                let late = now_ms.saturating_sub(last_tick_ms) > 2 * interval_ms;
                last_tick_ms = now_ms;
                let heard_ms = peer.last_heard_ms();
                let silent_ms = now_ms.saturating_sub(heard_ms);
                if silent_ms > timeout_ms {
                    // A tick this late says this node stalled (its runtime too busy to run
                    // it), and its readers may have stalled as long: what the peer sent
                    // meanwhile waits unread. So the silence gets one more tick to be heard
                    // through, once per silence (a dead peer is found a tick later).
                    if late && graced != Some(heard_ms) {
                        graced = Some(heard_ms);
                    } else {
                        break DownReason::HeartbeatTimeout(Duration::from_millis(silent_ms));
                    }
                }
                if let Some(stalled) = stalled_connection(&session, &mut stalls, now_ms, stall_ms) {
                    break stalled;
                }
                if managed && activity.is_idle(cluster, peer, now_ms, idle_ms) {
                    break DownReason::Idle;
                }
                if managed && ticks_seen.is_multiple_of(KEEP_EVERY_TICKS) {
                    peer.push_keep(cluster.keeps.is_kept(&peer.name()));
                }
                let ping = cluster.answers.fresh_id();
                peer.note_heartbeat_ping(ping, cluster.wiring.micros());
                peer.push_control(Frame::Ping { id: ping });
                peer.push_control(Frame::Received { counts: peer.inbound_counts() });
                cluster.answers.sweep_abandoned();
                ticks_seen += 1;
                if ticks_seen.is_multiple_of(STATS_EVERY_TICKS) {
                    tracing::debug!(node = %cluster.spec().name, peer = %peer.name(), stats = ?peer.stats(), "peer counters");
                }
            }
        }
    };
    cluster.session_down(peer, &session, reason);
}

/// When frames (the control channel's aside) last moved on a session, for the idle close.
struct Activity {
    /// The peer's count of such frames when last seen to move.
    frames: u64,
    since_ms: u64,
}

impl Activity {
    /// Whether the session is to close as idle (managed mode): nothing holds it, and no frame
    /// moved for `idle_ms`, or none since its last keep here was let go.
    fn is_idle(&mut self, cluster: &Cluster, peer: &Peer, now_ms: u64, idle_ms: u64) -> bool {
        let frames = peer.data_frames();
        if frames != self.frames {
            self.frames = frames;
            self.since_ms = now_ms;
        }
        if cluster.is_held(peer) {
            return false;
        }
        now_ms.saturating_sub(self.since_ms) >= idle_ms || peer.quiet_since_let_go(frames)
    }
}

/// The first of the session's connections that stalled, as a reason to take the peer down.
fn stalled_connection(
    session: &Session,
    stalls: &mut [StallWatch],
    now_ms: u64,
    limit_ms: u64,
) -> Option<DownReason> {
    for ((channel, index, queue), watch) in session.connections().zip(stalls.iter_mut()) {
        let written = queue.progress.written.load(Ordering::Relaxed);
        let read = queue.progress.read_by_peer.load(Ordering::Relaxed);
        if let Some(stall) = watch.observe(now_ms, written, read, limit_ms) {
            return Some(DownReason::ConnectionLost(format!(
                "connection {index} of channel {channel:?} stalled: {} bytes waiting, {} read in {} ms",
                stall.waiting, stall.moved, stall.for_ms
            )));
        }
    }
    None
}
