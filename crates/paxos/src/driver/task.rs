//! The driver task: one per node, owning the node's proposer and acceptor.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use shoal_transport::{Inbox, Incoming, Node, NodeEvent, Service, ServiceError};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::{BeginEpochError, Command, PaxosClientError, PaxosConfig, QuorumEvent, node_id};
use crate::acceptor::{Acceptor, AcceptorConfig};
use crate::ballot::{NodeId, ProposerId};
use crate::error::ProposeError;
use crate::membership::majority;
use crate::message::{Message, RequestId};
use crate::proposer::{Proposer, ProposerConfig};
use crate::register::Outcome;
use crate::storage::Storage;

/// The most messages one service message carries to a peer.
const MAX_BATCH: usize = 256;

/// The channels between the handle and the task.
pub(crate) struct Plumbing {
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) quorum: watch::Sender<bool>,
    pub(crate) events: broadcast::Sender<QuorumEvent>,
    pub(crate) voting: Arc<AtomicBool>,
}

type Reply = oneshot::Sender<Result<Outcome, PaxosClientError>>;

/// Opens the service and spawns the task; returns the proposer's run.
pub(crate) async fn start<S: Storage + Send + 'static>(
    node: &Node,
    config: PaxosConfig,
    storage: Option<S>,
    plumbing: Plumbing,
) -> Result<u64, ServiceError> {
    let (service, inbox) =
        node.open_service::<Vec<Message>>(&config.service, config.inbox_capacity).await?;
    let me = node_id(node.name());
    let ids: Vec<NodeId> = config.acceptors.iter().map(|name| node_id(name)).collect();
    // Every start of the service is a new run: new ballots, new rejoin attempts and jitter.
    let run = next_run();
    let seed = config.seed ^ me.0 ^ run.rotate_left(32);
    let now = Instant::now();
    let acceptor_config = AcceptorConfig {
        recovery: config.recovery,
        epoch_floor: unix_millis(),
        ..AcceptorConfig::new(me, ids.clone(), seed)
    };
    let acceptor = storage.map(|storage| Acceptor::new(now, acceptor_config, storage));
    let proposer = Proposer::new(ProposerConfig {
        designated: if config.forwarding { ids.clone() } else { Vec::new() },
        round_timeout: config.round_timeout,
        request_timeout: config.request_timeout,
        max_requests: config.max_requests,
        ..ProposerConfig::new(ProposerId { node: me, run }, ids, seed.rotate_left(17))
    });
    let names = config.acceptors.iter().map(|name| (node_id(name), name.clone())).collect();
    let driver = Driver {
        node_events: node.subscribe(),
        node: node.clone(),
        me,
        acceptor_names: config.acceptors,
        names,
        proposer,
        acceptor,
        service,
        inbox,
        peers: HashMap::new(),
        peer_queue: config.peer_queue,
        forwarding: config.forwarding,
        local: VecDeque::new(),
        waiting: HashMap::new(),
        plumbing,
    };
    tokio::spawn(driver.run());
    Ok(run)
}

struct Driver<S> {
    node: Node,
    node_events: broadcast::Receiver<NodeEvent>,
    me: NodeId,
    acceptor_names: Vec<String>,
    /// The name of every node the core may address: the acceptors, and whoever wrote to us.
    names: HashMap<NodeId, String>,
    proposer: Proposer,
    acceptor: Option<Acceptor<S>>,
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
}

impl<S: Storage + Send + 'static> Driver<S> {
    async fn run(mut self) {
        self.update_quorum();
        self.pump();
        let mut events_open = true;
        // One timer, moved only when the cores' next deadline moves.
        let sleep = tokio::time::sleep_until(far_future());
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        let stopped = loop {
            let deadline = self.next_deadline();
            if deadline != armed {
                if let Some(at) = deadline {
                    sleep.as_mut().reset(tokio::time::Instant::from_std(at));
                }
                armed = deadline;
            }
            tokio::select! {
                command = self.plumbing.commands.recv() => match command {
                    Some(Command::Propose { key, change, reply }) => {
                        self.propose(key, change, reply);
                        // Take what else is waiting before sending anything.
                        if let Some(done) = self.take_waiting_commands() {
                            break Some(done);
                        }
                    }
                    Some(Command::BeginEpoch(reply)) => self.begin_epoch(reply),
                    Some(Command::Stop(done)) => break Some(done),
                    None => break None,
                },
                incoming = self.inbox.recv() => match incoming {
                    Some(incoming) => self.deliver(incoming),
                    None => break None,
                },
                event = self.node_events.recv(), if events_open => match event {
                    Ok(NodeEvent::Down { node, .. }) => {
                        self.proposer.peer_down(Instant::now(), node_id(&node));
                        self.update_quorum();
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => self.update_quorum(),
                    Err(broadcast::error::RecvError::Closed) => events_open = false,
                },
                () = &mut sleep, if armed.is_some() => {
                    armed = None;
                    self.timeout();
                }
            }
            self.pump();
        };
        // Callers still waiting are told by their dropped reply senders; the storage closes
        // with the acceptor.
        drop(self.acceptor.take());
        drop(self);
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
                Command::Stop(done) => return Some(done),
            }
        }
        None
    }

    fn propose(&mut self, key: crate::Key, change: crate::Change, reply: Reply) {
        match self.proposer.propose(Instant::now(), key, change) {
            Ok(id) => {
                self.waiting.insert(id, reply);
            }
            Err(ProposeError::Overloaded { .. }) => {
                let _ = reply.send(Err(PaxosClientError::Busy));
            }
        }
    }

    fn begin_epoch(&mut self, reply: oneshot::Sender<Result<(), BeginEpochError>>) {
        let result = match &mut self.acceptor {
            None => Err(BeginEpochError::NotAnAcceptor),
            Some(acceptor) => acceptor.begin_epoch(Instant::now()).map_err(|error| match error {
                crate::acceptor::BeginEpochError::Voting(incarnation) => {
                    BeginEpochError::Voting(incarnation)
                }
            }),
        };
        let _ = reply.send(result);
    }

    fn deliver(&mut self, incoming: Incoming<Vec<Message>>) {
        let from = node_id(&incoming.from);
        self.names.entry(from).or_insert(incoming.from);
        let now = Instant::now();
        for message in incoming.message {
            self.handle(now, from, message);
        }
    }

    /// Hands one message to the core it is for.
    fn handle(&mut self, now: Instant, from: NodeId, message: Message) {
        if message.to_acceptor() {
            if let Some(acceptor) = &mut self.acceptor
                && let Err(ignored) = acceptor.handle_message(now, from, message)
            {
                tracing::trace!(%from, %ignored, "acceptor ignored a message");
            }
        } else if let Err(ignored) = self.proposer.handle_message(now, from, message) {
            tracing::trace!(%from, %ignored, "proposer ignored a message");
        }
    }

    fn timeout(&mut self) {
        let now = Instant::now();
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
                    let _ = reply.send(done.result.map_err(PaxosClientError::from));
                }
            }
            if self.local.is_empty() {
                let voting = self.acceptor.as_ref().is_some_and(|a| a.incarnation().is_some());
                self.plumbing.voting.store(voting, Ordering::Relaxed);
                return;
            }
            let now = Instant::now();
            while let Some(message) = self.local.pop_front() {
                self.handle(now, self.me, message);
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

/// A proposer run never used before on this node: the wall clock in microseconds, kept
/// increasing within the process (the transport numbers node incarnations the same way), so a
/// service stopped and started again, or a restarted node, never reissues a ballot.
fn next_run() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
    let previous = LAST.fetch_max(now, Ordering::Relaxed);
    if previous < now { now } else { LAST.fetch_add(1, Ordering::Relaxed) + 1 }
}

/// The floor for the number of an epoch this node founds: the wall clock in milliseconds, so
/// epoch numbers, and with them fencing tokens, grow across full restarts of the cluster.
fn unix_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + std::time::Duration::from_secs(3600)
}
