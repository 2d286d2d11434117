//! The driver task: one per node, owning the node's proposer and acceptor, and the acceptor's
//! store.
//!
//! **Persistence.** The acceptor asks for its writes as batches ([`Acceptor::poll_persist`])
//! and holds the replies that follow them. An in-memory acceptor's batches are acknowledged at
//! once (its state dies with the service: there is nothing to write). A file-backed one's go to
//! its store on a blocking thread ([`tokio::task::spawn_blocking`], which takes the store and
//! gives it back), one batch at a time, so the driver's task never waits for an fsync: it
//! goes on taking messages, and every vote asked for while a write is out goes into the next
//! batch, one append and one fsync for all of them (group commit). When a batch is done the
//! task reports it ([`Acceptor::persisted`]) and sends the replies it released.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use shoal_transport::{Inbox, Incoming, KeepConnection, Node, NodeEvent, Service};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::{JoinError, JoinHandle};

use super::{Command, InstallStatus, KeyPage, PaxosConfig, PaxosStartError, QuorumEvent, node_id};
use crate::core::membership::{Configuration, majority};
use crate::core::{
    Acceptor, AcceptorConfig, Message, NodeId, Persist, Proposer, ProposerConfig, ProposerId,
    RequestId,
};
use crate::error::{BeginEpochError, PaxosError, ProposeError, StorageError};
use crate::register::{Change, Key, Outcome};
use crate::stats::Counters;
use crate::storage::Storage;

/// Opens this node's acceptor store: at start if the node is an acceptor, or when a
/// configuration installed later adds it.
pub(crate) type OpenStorage<S> = Box<dyn FnMut() -> Result<S, StorageError> + Send>;

/// Where the acceptor's writes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Nowhere: the store is in memory and dies with the service, so a batch is durable as
    /// soon as it is asked for.
    InMemory,
    /// To the store, on a blocking thread.
    OnDisk,
}

/// A batch written on the blocking thread: the store back, the batch, and how it went.
type Written<S> = (S, Persist, Result<(), StorageError>);

/// The most messages one service message carries to a peer.
const MAX_BATCH: usize = 256;

/// The channels between the handle and the task.
pub(crate) struct Plumbing {
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) quorum: watch::Sender<bool>,
    pub(crate) events: broadcast::Sender<QuorumEvent>,
    pub(crate) voting: Arc<AtomicBool>,
}

type Reply = oneshot::Sender<Result<Outcome, PaxosError>>;

/// Opens the service and spawns the task; returns the proposer's run and its counters.
pub(crate) async fn start<S: Storage + Send + 'static>(
    node: &Node,
    config: PaxosConfig,
    (mut open_storage, durability): (OpenStorage<S>, Durability),
    plumbing: Plumbing,
) -> Result<(u64, Arc<Counters>), PaxosStartError> {
    let is_acceptor = config.acceptors.iter().any(|name| name == node.name());
    let storage = if is_acceptor { Some(open_storage()?) } else { None };
    let (service, inbox) =
        node.open_service::<Vec<Message>>(&config.service, config.inbox_capacity).await?;
    let me = node_id(node.name());
    let ids: Vec<NodeId> = config.acceptors.iter().map(|name| node_id(name)).collect();
    // Every start of the service is a new run: new ballots, new rejoin attempts and jitter.
    // Above the node's wall clock, and its incarnation (a restarted node's is larger, in
    // microseconds too unless a test chose it), and above every run of this node's runtime.
    let runtime = node.runtime();
    let run = runtime.fresh_above(runtime.clock().wall_micros().max(runtime.incarnation()));
    let seed = config.seed ^ me.0 ^ run.rotate_left(32);
    let clock = node.runtime().clock();
    let now = clock.now().into_std();
    let acceptor_config = AcceptorConfig {
        recovery: config.recovery,
        // The floor for the number of an epoch this node founds: the wall clock in ms, so
        // epoch numbers, and with them fencing tokens, grow across full restarts.
        epoch_floor: clock.wall_millis(),
        version: config.version,
        ..AcceptorConfig::new(me, ids.clone(), seed)
    };
    let acceptor = storage.as_ref().map(|store| Acceptor::new(now, acceptor_config.clone(), store));
    let proposer = Proposer::new(ProposerConfig {
        designated: if config.forwarding { ids.clone() } else { Vec::new() },
        round_timeout: config.round_timeout,
        request_timeout: config.request_timeout,
        max_requests: config.max_requests,
        version: config.version,
        ..ProposerConfig::new(ProposerId { node: me, run }, ids, seed.rotate_left(17))
    });
    let mut names: HashMap<NodeId, String> =
        config.acceptors.iter().map(|name| (node_id(name), name.clone())).collect();
    names.insert(me, node.name().to_owned());
    let driver = Driver {
        node_events: node.subscribe(),
        node: node.clone(),
        me,
        acceptor_names: config.acceptors,
        names,
        proposer,
        acceptor,
        store: storage,
        durability,
        writing: None,
        acceptor_config,
        open_storage,
        configured: BTreeMap::new(),
        key_pages: HashMap::new(),
        service,
        inbox,
        peers: HashMap::new(),
        peer_queue: config.peer_queue,
        forwarding: config.forwarding,
        local: VecDeque::new(),
        waiting: HashMap::new(),
        plumbing,
        keeps: BTreeMap::new(),
    };
    let counters = driver.proposer.counters();
    tokio::spawn(driver.run());
    Ok((run, counters))
}

struct Driver<S> {
    node: Node,
    node_events: broadcast::Receiver<NodeEvent>,
    me: NodeId,
    acceptor_names: Vec<String>,
    /// The name of every node the core may address: the acceptors, and whoever wrote to us.
    names: HashMap<NodeId, String>,
    proposer: Proposer,
    acceptor: Option<Acceptor>,
    /// The acceptor's store, while no batch is being written to it.
    store: Option<S>,
    durability: Durability,
    /// The batch being written on the blocking thread, which holds the store meanwhile.
    writing: Option<JoinHandle<Written<S>>>,
    /// How this node's acceptor is set up, for one that a new configuration adds.
    acceptor_config: AcceptorConfig,
    open_storage: OpenStorage<S>,
    /// What each node answered to the configurations this node installed: the version it runs
    /// and whether its acceptor votes.
    configured: BTreeMap<NodeId, (u64, bool)>,
    /// Callers waiting for a page of a node's keys.
    key_pages: HashMap<NodeId, oneshot::Sender<KeyPage>>,
    service: Service<Vec<Message>>,
    inbox: Inbox<Vec<Message>>,
    /// The queue to each peer's sender task.
    peers: HashMap<NodeId, mpsc::Sender<Message>>,
    peer_queue: usize,
    /// Whether changes are forwarded: then the designated proposers follow the reachable
    /// acceptors.
    forwarding: bool,
    /// Messages from this node's cores to this node's cores.
    local: VecDeque<Message>,
    waiting: HashMap<RequestId, Reply>,
    plumbing: Plumbing,
    /// This node's claims on the connections to the acceptors of its configuration
    /// ([`Node::keep`]): whatever the node's membership, no other layer closes them (the
    /// broadcast overlay of a managed node lets go of the connections it no longer needs).
    keeps: BTreeMap<String, KeepConnection>,
}

impl<S: Storage + Send + 'static> Driver<S> {
    /// Now, on the node's clock, as the cores take it.
    fn now(&self) -> Instant {
        self.node.runtime().clock().now().into_std()
    }

    async fn run(mut self) {
        self.keep_acceptors();
        self.update_quorum();
        self.pump();
        let mut events_open = true;
        // One timer, moved only when the cores' next deadline moves.
        let clock = self.node.runtime().clock().clone();
        let sleep = clock.sleep(std::time::Duration::from_secs(3600));
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        let stopped = loop {
            let deadline = self.next_deadline();
            if deadline != armed {
                if let Some(at) = deadline {
                    clock.reset(sleep.as_mut(), tokio::time::Instant::from_std(at));
                }
                armed = deadline;
            }
            // Biased, so that which input wins when several are ready is a function of the
            // run (a simulation replays it), in this order: a finished write (it releases the
            // replies that waited for it), a due timer, node events, what peers sent, and last
            // the handles' commands, which wait while the service is busy with its peers
            // (back-pressure on new changes rather than on the rounds of running ones).
            tokio::select! {
                biased;
                written = written(&mut self.writing), if self.writing.is_some() => {
                    self.writing = None;
                    self.written(written);
                }
                () = &mut sleep, if armed.is_some() => {
                    armed = None;
                    self.timeout();
                }
                event = self.node_events.recv(), if events_open => match event {
                    Ok(NodeEvent::Down { node, .. }) => {
                        self.proposer.peer_down(self.now(), node_id(&node));
                        self.update_quorum();
                    }
                    Ok(NodeEvent::Up { node, .. }) => {
                        self.tell_configuration(node);
                        self.update_quorum();
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => self.update_quorum(),
                    Err(broadcast::error::RecvError::Closed) => events_open = false,
                },
                incoming = self.inbox.recv() => match incoming {
                    Some(incoming) => self.deliver(incoming),
                    None => break None,
                },
                command = self.plumbing.commands.recv() => match command {
                    Some(Command::Propose { key, change, reply }) => {
                        self.propose(key, change, reply);
                        // Take what else is waiting before sending anything.
                        if let Some(done) = self.take_waiting_commands() {
                            break Some(done);
                        }
                    }
                    Some(Command::BeginEpoch(reply)) => self.begin_epoch(reply),
                    Some(Command::Configuration(reply)) => {
                        let _ = reply.send(self.configuration());
                    }
                    Some(Command::Install { configuration, names, reply }) => {
                        let status = self.install(configuration, names);
                        let _ = reply.send(status);
                    }
                    Some(Command::ListKeys { node, after, reply }) => {
                        self.list_keys(&node, after, reply);
                    }
                    Some(Command::Stop(done)) => break Some(done),
                    None => break None,
                },
            }
            self.pump();
        };
        self.keeps.clear();
        // Callers still waiting are told by their dropped reply senders. Writes not begun are
        // dropped with the acceptor, and the replies waiting for them (as in a crash); a write
        // under way is let finish, so that the store is closed when `stop` returns.
        drop(self.acceptor.take());
        if let Some(writing) = self.writing.take() {
            let _ = writing.await;
        }
        drop(self.store.take());
        let Driver { inbox, .. } = self;
        if stopped.is_some() {
            // `stop` returns once the service could be started again on this node.
            inbox.close().await;
        }
        if let Some(done) = stopped {
            let _ = done.send(());
        }
    }

    /// Proposes every change already waiting; returns a stop request if one came.
    fn take_waiting_commands(&mut self) -> Option<oneshot::Sender<()>> {
        while let Ok(command) = self.plumbing.commands.try_recv() {
            match command {
                Command::Propose { key, change, reply } => self.propose(key, change, reply),
                Command::BeginEpoch(reply) => self.begin_epoch(reply),
                Command::Configuration(reply) => {
                    let _ = reply.send(self.configuration());
                }
                Command::Install { configuration, names, reply } => {
                    let status = self.install(configuration, names);
                    let _ = reply.send(status);
                }
                Command::ListKeys { node, after, reply } => self.list_keys(&node, after, reply),
                Command::Stop(done) => return Some(done),
            }
        }
        None
    }

    fn propose(&mut self, key: Key, change: Change, reply: Reply) {
        match self.proposer.propose(self.now(), key, change) {
            Ok(id) => {
                self.waiting.insert(id, reply);
            }
            Err(ProposeError::Overloaded { .. }) => {
                let _ = reply.send(Err(PaxosError::Overloaded));
            }
        }
    }

    fn begin_epoch(&mut self, reply: oneshot::Sender<Result<(), BeginEpochError>>) {
        let now = self.now();
        let result = match &mut self.acceptor {
            None => Err(BeginEpochError::NotAnAcceptor),
            Some(acceptor) => acceptor.begin_epoch(now),
        };
        let _ = reply.send(result);
    }

    fn deliver(&mut self, incoming: Incoming<Vec<Message>>) {
        let from = node_id(&incoming.from);
        self.names.entry(from).or_insert(incoming.from);
        let now = self.now();
        for message in incoming.message {
            self.handle(now, from, message);
        }
    }

    /// Hands one message to the core it is for (a configuration to both), or to the caller
    /// of a membership change that waits for it.
    fn handle(&mut self, now: Instant, from: NodeId, message: Message) {
        match message {
            Message::Configured { version, voting } => {
                self.configured.insert(from, (version, voting));
                return;
            }
            Message::Keys { keys, next } => {
                if let Some(reply) = self.key_pages.remove(&from) {
                    let _ = reply.send((keys, next));
                }
                return;
            }
            Message::Configure { ref configuration } => {
                self.adopt(now, configuration.clone());
            }
            _ => {}
        }
        if message.to_proposer()
            && let Err(ignored) = self.proposer.handle_message(now, from, message.clone())
        {
            tracing::trace!(%from, %ignored, "proposer ignored a message");
        }
        if message.to_acceptor()
            && let Some(acceptor) = &mut self.acceptor
            && let Err(ignored) = acceptor.handle_message(now, from, message)
        {
            tracing::trace!(%from, %ignored, "acceptor ignored a message");
        }
    }

    /// This node's configuration, with the names of its acceptors.
    fn configuration(&mut self) -> (Configuration, Vec<String>) {
        let configuration = self.proposer.configuration();
        let names = self.names_of(&configuration.acceptors);
        (configuration, names)
    }

    /// The names of `ids`, as far as known (from the configuration, the nodes that wrote to
    /// this one, and the nodes the transport knows: connected, members, or in managed mode
    /// its directory, so that a node outside an acceptor's overlay neighbours still learns
    /// its name and reaches it).
    fn names_of(&mut self, ids: &[NodeId]) -> Vec<String> {
        for id in ids {
            if !self.names.contains_key(id)
                && let Some(name) = self.node.name_of(shoal_process::NodeId::from_u64(id.0))
                && node_id(&name) == *id
            {
                self.names.insert(*id, name);
            }
        }
        if ids.iter().any(|id| !self.names.contains_key(id)) {
            for name in self.node.nodes() {
                self.names.entry(node_id(&name)).or_insert(name);
            }
        }
        ids.iter().filter_map(|id| self.names.get(id).cloned()).collect()
    }

    /// A newer configuration reached this node: the acceptor names follow it, and if it adds
    /// this node, its acceptor starts (empty: it rejoins before it votes). The cores install
    /// it themselves when the message reaches them.
    fn adopt(&mut self, now: Instant, configuration: Configuration) {
        if configuration.version <= self.proposer.configuration().version {
            return;
        }
        let names = self.names_of(&configuration.acceptors);
        if names.len() == configuration.acceptors.len() {
            self.acceptor_names = names;
            self.keep_acceptors();
        }
        if self.acceptor.is_none() && configuration.acceptors.contains(&self.me) {
            match (self.open_storage)() {
                Ok(store) => {
                    let config = AcceptorConfig {
                        acceptors: configuration.acceptors.clone(),
                        version: configuration.version,
                        ..self.acceptor_config.clone()
                    };
                    self.acceptor = Some(Acceptor::new(now, config, &store));
                    self.store = Some(store);
                }
                Err(error) => {
                    tracing::error!(%error, "cannot open the store of an added acceptor");
                }
            }
        }
        self.update_quorum();
    }

    /// An acceptor tells a node that connects (again) its configuration once the set has
    /// changed, so that a node that missed the change (cut off or down while it was installed)
    /// runs the current set before it next proposes, and its quorum reads true.
    fn tell_configuration(&mut self, node: String) {
        let configuration = self.proposer.configuration();
        if self.acceptor.is_none() || configuration.version == 0 {
            return;
        }
        let id = node_id(&node);
        self.names.entry(id).or_insert(node);
        self.route(id, Message::Configure { configuration });
    }

    /// Installs a configuration here and sends it to `names` (the old and new acceptors, and
    /// every connected node); returns what each node has answered so far.
    fn install(&mut self, configuration: Configuration, names: Vec<String>) -> InstallStatus {
        let now = self.now();
        for name in &names {
            self.names.entry(node_id(name)).or_insert_with(|| name.clone());
        }
        let message = Message::Configure { configuration: configuration.clone() };
        self.handle(now, self.me, message.clone());
        let mut targets: Vec<String> = names;
        targets.extend(self.node.nodes());
        targets.sort();
        targets.dedup();
        let me = self.node.name().to_owned();
        for name in targets.iter().filter(|name| **name != me) {
            self.route(node_id(name), message.clone());
        }
        let local =
            self.acceptor.as_ref().map(|a| (a.configuration().version, a.incarnation().is_some()));
        let mut status: InstallStatus = self
            .configured
            .iter()
            .filter_map(|(id, answer)| Some((self.names.get(id)?.clone(), *answer)))
            .collect();
        if let Some(local) = local {
            status.insert(self.node.name().to_owned(), local);
        }
        status
    }

    /// Asks `node`'s acceptor for a page of its keys after `after`; the answer goes to `reply`.
    fn list_keys(&mut self, node: &str, after: Option<Key>, reply: oneshot::Sender<KeyPage>) {
        let id = node_id(node);
        self.names.entry(id).or_insert_with(|| node.to_owned());
        self.key_pages.insert(id, reply);
        self.route(id, Message::ListKeys { after });
    }

    fn timeout(&mut self) {
        let now = self.now();
        self.proposer.handle_timeout(now);
        if let Some(acceptor) = &mut self.acceptor {
            acceptor.handle_timeout(now);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let acceptor = self.acceptor.as_ref().and_then(Acceptor::poll_timeout);
        self.proposer.poll_timeout().into_iter().chain(acceptor).min()
    }

    /// Moves everything the cores produced until they are quiet: messages out (or, for this
    /// node, back in), completions to their callers.
    fn pump(&mut self) {
        loop {
            while let Some((to, message)) = self.proposer.poll_transmit() {
                self.route(to, message);
            }
            self.persist();
            if let Some(acceptor) = &mut self.acceptor {
                while let Some((to, message)) = acceptor.poll_transmit() {
                    if to == self.me {
                        self.local.push_back(message);
                    } else {
                        send(
                            &mut self.peers,
                            &self.names,
                            &self.service,
                            self.peer_queue,
                            to,
                            message,
                        );
                    }
                }
            }
            while let Some(done) = self.proposer.poll_completion() {
                if let Some(reply) = self.waiting.remove(&done.id) {
                    let _ = reply.send(done.result);
                }
            }
            if self.local.is_empty() {
                let voting = self.acceptor.as_ref().is_some_and(|a| a.incarnation().is_some());
                self.plumbing.voting.store(voting, Ordering::Relaxed);
                return;
            }
            let now = self.now();
            while let Some(message) = self.local.pop_front() {
                self.handle(now, self.me, message);
            }
        }
    }

    /// Hands the acceptor's next batch of writes to the store, if none is being written: in
    /// memory, acknowledged at once; on disk, written on a blocking thread.
    fn persist(&mut self) {
        let Some(acceptor) = &mut self.acceptor else { return };
        while self.writing.is_none()
            && let Some(batch) = acceptor.poll_persist()
        {
            match (self.durability, self.store.take()) {
                (Durability::OnDisk, Some(mut store)) => {
                    self.writing = Some(tokio::task::spawn_blocking(move || {
                        let result = store.write(&batch.records);
                        (store, batch, result)
                    }));
                }
                (_, store) => {
                    self.store = store;
                    acceptor.persisted(batch.id);
                }
            }
        }
    }

    /// A batch is written (or failed): the acceptor hears of it, and gets its store back.
    fn written(&mut self, written: Result<Written<S>, JoinError>) {
        let (store, batch, result) = match written {
            Ok(written) => written,
            // The store panicked on the blocking thread: the driver cannot go on without it.
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        };
        self.store = Some(store);
        let now = self.now();
        let Some(acceptor) = &mut self.acceptor else { return };
        match result {
            Ok(()) => acceptor.persisted(batch.id),
            Err(error) => {
                tracing::error!(%error, "the acceptor's store failed a write; retrying");
                acceptor.persist_failed(now, batch);
            }
        }
    }

    fn route(&mut self, to: NodeId, message: Message) {
        if to == self.me {
            self.local.push_back(message);
        } else {
            send(&mut self.peers, &self.names, &self.service, self.peer_queue, to, message);
        }
    }

    /// Claims the connections to the acceptors of the current configuration, and lets go of
    /// those to nodes that are acceptors no more.
    fn keep_acceptors(&mut self) {
        let me = self.node.name();
        let wanted: Vec<&String> = self.acceptor_names.iter().filter(|name| *name != me).collect();
        self.keeps.retain(|name, _| wanted.contains(&name));
        for name in wanted {
            if !self.keeps.contains_key(name) {
                self.keeps.insert(name.clone(), self.node.keep(name));
            }
        }
    }

    /// After a node event: designates only reachable acceptors' proposers, and publishes a
    /// quorum event if the reachable acceptors crossed a majority.
    fn update_quorum(&mut self) {
        let reachable = self
            .acceptor_names
            .iter()
            .filter(|name| *name == self.node.name() || self.node.is_connected(name))
            .count();
        let up = reachable >= majority(self.acceptor_names.len());
        if self.forwarding {
            let designated = self
                .acceptor_names
                .iter()
                .filter(|name| *name == self.node.name() || self.node.is_connected(name))
                .map(|name| node_id(name))
                .collect();
            self.proposer.set_designated(designated);
        }
        if *self.plumbing.quorum.borrow() != up {
            self.plumbing.quorum.send_replace(up);
            let event = if up { QuorumEvent::Up } else { QuorumEvent::Down };
            tracing::info!(node = %self.node.name(), ?event, reachable, "quorum");
            let _ = self.plumbing.events.send(event);
        }
    }
}

/// The next batch written on the blocking thread (pending while none is out).
async fn written<S>(writing: &mut Option<JoinHandle<Written<S>>>) -> Result<Written<S>, JoinError> {
    match writing {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}

/// Queues `message` for peer `to`, starting its sender task on first use; drops it if the
/// peer is unknown or its queue is full (Paxos treats that as loss).
fn send(
    peers: &mut HashMap<NodeId, mpsc::Sender<Message>>,
    names: &HashMap<NodeId, String>,
    service: &Service<Vec<Message>>,
    capacity: usize,
    to: NodeId,
    message: Message,
) {
    let queue = match peers.get(&to) {
        Some(queue) => queue,
        None => {
            let Some(name) = names.get(&to) else {
                tracing::trace!(%to, "message to an unknown node dropped");
                return;
            };
            let (queue, receiver) = mpsc::channel(capacity.max(1));
            tokio::spawn(send_loop(service.clone(), name.clone(), receiver));
            peers.entry(to).or_insert(queue)
        }
    };
    if queue.try_send(message).is_err() {
        tracing::trace!(%to, "peer queue full; message dropped");
    }
}

/// Sends what waits for one peer, as batches of up to [`MAX_BATCH`] messages.
async fn send_loop(
    service: Service<Vec<Message>>,
    peer: String,
    mut queue: mpsc::Receiver<Message>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if let Err(error) = service.send(&peer, &batch).await {
            tracing::trace!(%peer, %error, "batch to peer dropped");
        }
        batch.clear();
    }
}
