//! [`Replicated`]: the [`Replica`] core run over a transport service — node-authority
//! replication of a map, without consensus. Process groups keep their members in one per
//! scope; the hub will keep its children in one per hub.
//!
//! The core sits in a mutex shared by the handle and the driver's tasks, so a change to this
//! node's own entries is applied (and seen by local reads) before [`Replicated::set`] returns,
//! with no hop through a task; what the core asks to send goes to a bounded queue per node,
//! each drained by a task of its own, so a peer slow to read holds back only what is for it
//! (a message that finds its queue full is dropped and counted: the core repairs any loss
//! through its digests, and a lost hello is said again). What waits in a queue goes out as
//! fewer messages: following deltas merged, superseded acknowledgements dropped. Another task feeds the core what
//! the service receives, the transport's node events, and its anti-entropy timer.
//!
//! **Peers** are the connected nodes that run the same service: each node says hello on the
//! service to every node that connects (and to every connected node when it starts), and
//! takes a node as a peer when that node's hello arrives. A hello is always answered: with a
//! hello of its own by a node that did not know the sender, else with a welcome, which makes
//! the greeter take the answering node as a peer too. A connected node that is not a peer is
//! greeted again, after `sync_every`, then twice as long each time up to 16 periods
//! (`GREET_BACKOFF_MAX`), until it answers: so a hello lost (a full send queue, a
//! connection that failed and came back between the messages and the events that tell of
//! it) delays a peer by a period or two, and never leaves two connected nodes apart for good,
//! while a node that does not run the service is asked rarely.
//!
//! Every change the core reports ([`ReplicaOutput::Changed`]) is handed, in order and under
//! the lock, to the [`ReplicaObserver`] given at start: an index kept for reads, subscriptions.
//! So is every change of peers ([`PeerEvent`]), before the changes it brings.
//!
//! **Acknowledgements**, when configured ([`ReplicatedConfig::acks`]): a node tells the origin
//! of every delta or full state it applies how far its view of the origin now stands, so the
//! origin can wait until a change is held by other nodes ([`Replicated::held`]): the hub
//! acknowledges a start only once another node holds the child's spec.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shoal_process::Clock;
use shoal_transport::{Node, NodeEvent, Service, ServiceError};
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::core::{Replica, ReplicaMessage, ReplicaOutput};

/// A change of a [`Replicated`] map's peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    /// The peer runs the map and is connected: its entries follow.
    Up,
    /// The peer is no longer connected: its entries go.
    Down,
    /// The peer stopped the map on purpose: its entries go.
    Left,
}

/// What a [`Replicated`] map tells of each change it sees, under its lock.
pub trait ReplicaObserver<K, V>: Send + 'static {
    /// `origin`'s entry `key` is now `value` (`None`: it went).
    fn changed(&mut self, origin: &str, key: &K, value: Option<&V>);

    /// `peer` came or went (told before the changes of its entries that follow).
    fn peer(&mut self, peer: &str, event: PeerEvent) {
        let _ = (peer, event);
    }
}

/// How a replicated map runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicatedConfig {
    /// Anti-entropy period: how often each node tells its peers where its entries stand.
    pub sync_every: Duration,
    /// Messages waiting to be sent to one node, before further ones to it are dropped.
    pub send_queue: usize,
    /// Messages received waiting for the driver.
    pub inbox: usize,
    /// Whether peers acknowledge what they apply (see [`Replicated::held`]).
    pub acks: bool,
}

impl Default for ReplicatedConfig {
    fn default() -> Self {
        ReplicatedConfig {
            sync_every: Duration::from_secs(2),
            send_queue: 65_536,
            inbox: 4_096,
            acks: false,
        }
    }
}

/// A run number for a replicated map started now on a node of incarnation `incarnation`:
/// larger than every run handed out before in this process, and at least the incarnation
/// (which grows with every start of the node).
pub fn next_run(incarnation: u64) -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let mut run = 0;
    let _ = LAST.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
        run = incarnation.max(last + 1);
        Some(run)
    });
    run
}

/// How many periods (`sync_every`) apart, at most, a connected node that does not answer is
/// greeted again (see the module docs).
const GREET_BACKOFF_MAX: u32 = 16;

/// A message on the service: a hello, a goodbye, an acknowledgement, or one of the core's.
/// (New variants go at the end: a node of an earlier build cannot read them, and answers a
/// hello from a node it does not know with a hello.)
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Wire<K, V> {
    /// "I run the service: take me as a peer, and answer."
    Hello,
    /// The sender stopped the service: its entries go.
    Bye,
    /// "My view of your entries stands at change `seq` of your run `run`."
    Ack {
        run: u64,
        seq: u64,
    },
    Replica(ReplicaMessage<K, V>),
    /// The answer to a hello from a node already a peer here: "I have you; take me too".
    Welcome,
}

/// The core and the observer, as [`Replicated::with`] and [`Replicated::with_mut`] show them
/// (under the map's lock).
pub struct ReplicaState<K, V, O> {
    /// The core.
    pub replica: Replica<String, K, V>,
    /// The observer.
    pub observer: O,
}

/// What the handle and the driver's task share.
struct Inner<K, V, O> {
    state: Mutex<ReplicaState<K, V, O>>,
    outbound: Outbound<K, V>,
    dropped: AtomicU64,
    /// How far each peer has acknowledged this node's entries (in this run).
    acks: Mutex<BTreeMap<String, u64>>,
    acked: Notify,
    config: ReplicatedConfig,
    clock: Clock,
}

/// A map replicated by node authority over a transport service of a node (see the module
/// docs of `replicated.rs`, summarised in the crate docs): each node writes only its own
/// entries ([`Replicated::set`]) and reads everyone's through its observer.
pub struct Replicated<K, V, O> {
    inner: Arc<Inner<K, V, O>>,
    stop: watch::Sender<bool>,
    service: Service<Wire<K, V>>,
    /// Told once the service has closed on this node.
    closed: Mutex<Option<oneshot::Receiver<()>>>,
}

impl<K, V, O> Replicated<K, V, O>
where
    K: Ord + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Clone + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static,
    O: ReplicaObserver<K, V>,
{
    /// Opens the service `name` on `node` and starts replicating, with `observer` told of
    /// every change. `run` must grow with every start of this service on this node (the
    /// node's incarnation does, for one start per run of the node).
    ///
    /// # Errors
    ///
    /// The service's, if it is open on this node already.
    pub async fn start(
        node: &Node,
        name: &str,
        run: u64,
        config: ReplicatedConfig,
        observer: O,
    ) -> Result<Self, ServiceError> {
        let (service, mut inbox) = node.open_service::<Wire<K, V>>(name, config.inbox).await?;
        let clock = node.runtime().clock().clone();
        let now = clock.now().into_std();
        let replica = Replica::new(node.name().to_owned(), run, config.sync_every, now);
        let stop = watch::Sender::new(false);
        let outbound = Outbound {
            service: service.clone(),
            capacity: config.send_queue,
            stop: stop.subscribe(),
            queues: Mutex::default(),
        };
        let inner = Arc::new(Inner {
            state: Mutex::new(ReplicaState { replica, observer }),
            outbound,
            dropped: AtomicU64::new(0),
            acks: Mutex::new(BTreeMap::new()),
            acked: Notify::new(),
            config,
            clock: clock.clone(),
        });
        let events = node.subscribe();
        let (tell_closed, closed) = oneshot::channel();
        let task = Task {
            inner: inner.clone(),
            node: node.clone(),
            clock,
            keeps: Mutex::default(),
            greetings: Mutex::new(Greetings::new(config.sync_every)),
        };
        let mut stopped = stop.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                biased;
                _ = stopped.changed() => {}
                () = task.run(&mut inbox, events) => {}
            }
            inbox.close().await;
            let _ = tell_closed.send(());
        });
        Ok(Replicated { inner, stop, service, closed: Mutex::new(Some(closed)) })
    }

    /// Changes this node's own entries, in order (`None` removes): applied (and seen by the
    /// observer) before it returns, then sent to the peers. Returns the number of this
    /// node's last change, for [`Replicated::held`].
    pub fn set(&self, changes: Vec<(K, Option<V>)>) -> u64 {
        let (outputs, seq) = {
            let mut state = self.inner.lock();
            let outputs = state.replica.set(changes);
            observe(&mut state, &outputs);
            (outputs, state.replica.seq())
        };
        self.inner.send(outputs);
        seq
    }

    /// Waits until this node's changes up to `seq` are held by `copies` nodes, this one
    /// included, or by every peer if there are fewer (with [`ReplicatedConfig::acks`] only:
    /// without, it returns at once). Returns whether they are, when `timeout` passes first.
    pub async fn held(&self, seq: u64, copies: usize, timeout: Duration) -> bool {
        if !self.inner.config.acks {
            return true;
        }
        let enough = || {
            let peers: Vec<String> = self.inner.lock().replica.peers().iter().cloned().collect();
            let acks = self.inner.acks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let holding = peers.iter().filter(|peer| acks.get(*peer) >= Some(&seq)).count();
            holding + 1 >= copies.min(peers.len() + 1)
        };
        let wait = async {
            loop {
                let acked = self.inner.acked.notified();
                if enough() {
                    return;
                }
                acked.await;
            }
        };
        let clock = self.inner.clock.clone();
        clock.timeout(timeout, wait).await.is_ok()
    }

    /// Reads the core and the observer under the lock.
    pub fn with<R>(&self, read: impl FnOnce(&ReplicaState<K, V, O>) -> R) -> R {
        read(&self.inner.lock())
    }

    /// Works on the observer (and reads the core) under the lock.
    pub fn with_mut<R>(&self, work: impl FnOnce(&mut ReplicaState<K, V, O>) -> R) -> R {
        work(&mut self.inner.lock())
    }

    /// Messages dropped because their node's send queue was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Stops replicating: the peers are told (they drop this node's entries at once), and the
    /// service closes on this node; returns once it has (so it can be started again).
    ///
    /// What is queued is sent first, and the goodbye last, to every connected node:
    /// a node that took this one as a peer from a hello this one never heard the answer to is
    /// told too, and none is greeted after it (which would make it a peer again, of a node
    /// no longer running the map).
    pub async fn stop(&self) {
        if !self.stop.send_replace(true) {
            self.inner.outbound.drained().await;
            for node in self.service.node().nodes() {
                // A peer out of reach drops this node's entries when it sees this node down.
                let _ = self.service.send(&node, &Wire::Bye).await;
            }
        }
        let closed = self.closed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(closed) = closed {
            let _ = closed.await;
        }
    }
}

impl<K, V, O> Drop for Replicated<K, V, O> {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl<K, V, O> Inner<K, V, O>
where
    K: Ord + Clone + Serialize + Send + Sync + 'static,
    V: Clone + PartialEq + Serialize + Send + Sync + 'static,
    O: ReplicaObserver<K, V>,
{
    fn lock(&self) -> MutexGuard<'_, ReplicaState<K, V, O>> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `step` on the core, hands its changes to the observer and sends what it asks.
    fn apply(
        &self,
        step: impl FnOnce(&mut ReplicaState<K, V, O>) -> Vec<ReplicaOutput<String, K, V>>,
    ) {
        let outputs = {
            let mut state = self.lock();
            let outputs = step(&mut state);
            observe(&mut state, &outputs);
            outputs
        };
        self.send(outputs);
    }

    fn send(&self, outputs: Vec<ReplicaOutput<String, K, V>>) {
        for output in outputs {
            if let ReplicaOutput::Send { to, message } = output {
                self.queue(to, Wire::Replica(message));
            }
        }
    }

    fn queue(&self, to: String, message: Wire<K, V>) {
        if !self.outbound.queue(to, message) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `peer` is gone (`event`: how): the observer is told, then the core drops its view.
    fn peer_gone(&self, peer: &str, event: PeerEvent) {
        self.apply(|state| {
            if !state.replica.peers().contains(peer) {
                return Vec::new();
            }
            state.observer.peer(peer, event);
            state.replica.peer_down(&peer.to_owned())
        });
        self.acks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(peer);
    }
}

/// Hands the core's changes to the observer.
fn observe<K, V, O: ReplicaObserver<K, V>>(
    state: &mut ReplicaState<K, V, O>,
    outputs: &[ReplicaOutput<String, K, V>],
) {
    for output in outputs {
        if let ReplicaOutput::Changed { origin, key, value } = output {
            state.observer.changed(origin, key, value.as_ref());
        }
    }
}

/// The send queues, one per node, each drained by a task of its own (see the module docs).
struct Outbound<K, V> {
    service: Service<Wire<K, V>>,
    /// Messages per node.
    capacity: usize,
    stop: watch::Receiver<bool>,
    /// Node → its queue and the task that drains it.
    queues: Mutex<BTreeMap<String, Queue<K, V>>>,
}

/// One node's send queue and the task that drains it.
struct Queue<K, V> {
    messages: mpsc::Sender<Wire<K, V>>,
    task: tokio::task::JoinHandle<()>,
}

impl<K, V> Outbound<K, V>
where
    K: Serialize + Send + Sync + 'static,
    V: Serialize + Send + Sync + 'static,
{
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Queue<K, V>>> {
        self.queues.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `message` for `to`; false if its queue is full (or the map has stopped).
    fn queue(&self, to: String, message: Wire<K, V>) -> bool {
        let mut queues = self.lock();
        // Checked under the lock: once the map stops, nothing is queued behind the drain.
        if *self.stop.borrow() {
            return false;
        }
        let queue = queues.entry(to.clone()).or_insert_with(|| {
            let (messages, queued) = mpsc::channel(self.capacity);
            let task = send_task(self.service.clone(), to, queued, self.stop.clone());
            Queue { messages, task: tokio::spawn(task) }
        });
        queue.messages.try_send(message).is_ok()
    }

    /// `node` went down: its queue goes, with what it holds (the core repairs it when the
    /// node is back), so none of it can follow what is queued for the node's next session.
    fn forget(&self, node: &str) {
        if let Some(queue) = self.lock().remove(node) {
            queue.task.abort();
        }
    }

    /// Waits until every queue's task has sent what it held when the map stopped, and ended.
    async fn drained(&self) {
        let queues = std::mem::take(&mut *self.lock());
        for Queue { messages, task } in queues.into_values() {
            drop(messages);
            let _ = task.await;
        }
    }
}

/// Sends what is queued for `to`, in order, waiting while its connection's queue is full;
/// ends once its queue is dropped and empty, or once told to stop and what is queued by then
/// is sent.
async fn send_task<K, V>(
    service: Service<Wire<K, V>>,
    to: String,
    mut queued: mpsc::Receiver<Wire<K, V>>,
    mut stop: watch::Receiver<bool>,
) where
    K: Serialize,
    V: Serialize,
{
    loop {
        let next = tokio::select! {
            biased;
            _ = stop.changed() => {
                let mut rest = Vec::new();
                while let Ok(message) = queued.try_recv() {
                    rest.push(message);
                }
                for message in coalesce(rest) {
                    let _ = service.send(&to, &message).await;
                }
                return;
            }
            next = queued.recv() => next,
        };
        let Some(first) = next else { return };
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX
            && let Ok(message) = queued.try_recv()
        {
            batch.push(message);
        }
        for message in coalesce(batch) {
            // A peer that went away loses what was for it; the core repairs it when it is back.
            let _ = service.send(&to, &message).await;
        }
    }
}

/// Messages taken from a node's queue at once, to be coalesced.
const BATCH_MAX: usize = 256;

/// Changes, at most, in one delta made of several queued ones.
const MERGED_CHANGES_MAX: usize = 512;

/// What is queued for one node, in fewer messages that tell it the same: deltas that follow
/// one another (the same run, each starting where the one before ended) become one, of up to
/// [`MERGED_CHANGES_MAX`] changes, across acknowledgements between them (which the node
/// handles apart from its view of this one); an acknowledgement followed by a later one of
/// the same run goes. Nothing else moves, and no delta crosses anything else: a hello, a
/// welcome, a full state, a digest or a pull keeps its place among the deltas.
fn coalesce<K, V>(batch: Vec<Wire<K, V>>) -> Vec<Wire<K, V>> {
    let mut out: Vec<Wire<K, V>> = Vec::with_capacity(batch.len());
    // The delta in `out` that the next one may join: nothing but acknowledgements since.
    let mut open: Option<usize> = None;
    for message in batch {
        match message {
            Wire::Replica(ReplicaMessage::Delta { run, first, changes }) => {
                if let Some(Wire::Replica(ReplicaMessage::Delta {
                    run: open_run,
                    first: open_first,
                    changes: joined,
                })) = open.map(|index| &mut out[index])
                    && *open_run == run
                    && *open_first + joined.len() as u64 == first
                    && joined.len() + changes.len() <= MERGED_CHANGES_MAX
                {
                    joined.extend(changes);
                    continue;
                }
                open = Some(out.len());
                out.push(Wire::Replica(ReplicaMessage::Delta { run, first, changes }));
            }
            ack @ Wire::Ack { .. } => out.push(ack),
            other => {
                open = None;
                out.push(other);
            }
        }
    }
    // Of each run's acknowledgements, the last one (the furthest) stays.
    let mut last_ack: BTreeMap<u64, usize> = BTreeMap::new();
    for (index, message) in out.iter().enumerate() {
        if let Wire::Ack { run, .. } = message {
            last_ack.insert(*run, index);
        }
    }
    let mut index = 0;
    out.retain(|message| {
        let keep = match message {
            Wire::Ack { run, .. } => last_ack.get(run) == Some(&index),
            _ => true,
        };
        index += 1;
        keep
    });
    out
}

/// The driver's receiving side: messages, node events, the anti-entropy timer.
struct Task<K, V, O> {
    inner: Arc<Inner<K, V, O>>,
    node: Node,
    clock: Clock,
    /// Claims on the peers' connections, so that a transport that closes idle connections
    /// (managed membership) keeps them while they are peers: a peer goes only by a failure
    /// or its goodbye.
    keeps: Mutex<BTreeMap<String, shoal_transport::KeepConnection>>,
    /// The connected nodes greeted that are not yet peers.
    greetings: Mutex<Greetings>,
}

/// When each connected node that is not a peer is greeted next (see the module docs).
struct Greetings {
    period: Duration,
    /// Node → when it is greeted again, and how many periods after that.
    due: BTreeMap<String, (Instant, u32)>,
}

impl Greetings {
    fn new(period: Duration) -> Self {
        Greetings { period, due: BTreeMap::new() }
    }

    /// `node` was greeted at `now`: again a period later unless it answers.
    fn greeted(&mut self, node: String, now: Instant) {
        self.due.insert(node, (now + self.period, 2));
    }

    /// `node` answered, went down or left: it is not greeted again.
    fn forget(&mut self, node: &str) {
        self.due.remove(node);
    }

    /// The nodes due a greeting at `now`, each then due again after twice the wait (up to
    /// [`GREET_BACKOFF_MAX`] periods).
    fn due(&mut self, now: Instant) -> Vec<String> {
        let mut due = Vec::new();
        for (node, (at, next)) in &mut self.due {
            if *at <= now {
                due.push(node.clone());
                *at = now + self.period * *next;
                *next = (*next * 2).min(GREET_BACKOFF_MAX);
            }
        }
        due
    }

    /// When the next greeting is due, if any is.
    fn next(&self) -> Option<Instant> {
        self.due.values().map(|(at, _)| *at).min()
    }
}

impl<K, V, O> Task<K, V, O> {
    fn keep(&self, peer: &str) {
        let mut keeps = self.keeps.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        keeps.entry(peer.to_owned()).or_insert_with(|| self.node.keep(peer));
    }

    fn let_go(&self, peer: &str) {
        self.keeps.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(peer);
    }
}

impl<K, V, O> Task<K, V, O>
where
    K: Ord + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Clone + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static,
    O: ReplicaObserver<K, V>,
{
    async fn run(
        &self,
        inbox: &mut shoal_transport::Inbox<Wire<K, V>>,
        mut events: tokio::sync::broadcast::Receiver<NodeEvent>,
    ) {
        for node in self.node.nodes() {
            self.greet(node);
        }
        loop {
            let sync = self.inner.lock().replica.poll_timeout();
            let wake = self.greetings().next().map_or(sync, |greet| greet.min(sync));
            tokio::select! {
                biased;
                incoming = inbox.recv() => {
                    let Some(incoming) = incoming else { return };
                    self.receive(incoming.from, incoming.message);
                }
                event = events.recv() => match event {
                    Ok(NodeEvent::Up { node, .. }) => self.greet(node),
                    Ok(NodeEvent::Down { node, .. }) => self.gone(&node, PeerEvent::Down),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // Events were missed: drop the peers no longer connected, greet the rest.
                        let connected = self.node.nodes();
                        let peers: Vec<String> =
                            self.inner.lock().replica.peers().iter().cloned().collect();
                        for peer in peers.iter().filter(|peer| !connected.contains(peer)) {
                            self.gone(peer, PeerEvent::Down);
                        }
                        for node in connected {
                            self.greet(node);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                () = self.clock.sleep_until(wake.into()) => {
                    let now = self.clock.now().into_std();
                    self.inner.apply(|state| state.replica.tick(now));
                    self.greet_again(now);
                }
            }
        }
    }

    fn greetings(&self) -> MutexGuard<'_, Greetings> {
        self.greetings.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Says hello to `node`, and again later until it answers.
    fn greet(&self, node: String) {
        self.greetings().greeted(node.clone(), self.clock.now().into_std());
        self.inner.queue(node, Wire::Hello);
    }

    /// Greets again the connected nodes due it that are still not peers.
    fn greet_again(&self, now: Instant) {
        let due = self.greetings().due(now);
        for node in due {
            let peer = self.inner.lock().replica.peers().contains(&node);
            if peer || !self.node.is_connected(&node) {
                self.greetings().forget(&node);
            } else {
                self.inner.queue(node, Wire::Hello);
            }
        }
    }

    /// `node` is no longer a peer (`event`: how it went).
    fn gone(&self, node: &str, event: PeerEvent) {
        self.greetings().forget(node);
        if event == PeerEvent::Down {
            self.inner.outbound.forget(node);
        }
        self.let_go(node);
        self.inner.peer_gone(node, event);
    }

    /// Takes `from` as a peer if it is not one; returns whether it was one already.
    fn take(&self, from: &str) -> bool {
        self.greetings().forget(from);
        if self.inner.lock().replica.peers().contains(from) {
            return true;
        }
        self.keep(from);
        self.inner.apply(|state| {
            state.observer.peer(from, PeerEvent::Up);
            state.replica.peer_up(from.to_owned())
        });
        false
    }

    fn receive(&self, from: String, message: Wire<K, V>) {
        match message {
            Wire::Hello => {
                if !self.node.is_connected(&from) {
                    return;
                }
                // A node that did not know the greeter answers with a hello (as builds before
                // the welcome do), which the greeter answers with a welcome.
                let answer = if self.take(&from) { Wire::Welcome } else { Wire::Hello };
                self.inner.queue(from, answer);
            }
            Wire::Welcome => {
                if self.node.is_connected(&from) {
                    self.take(&from);
                }
            }
            Wire::Bye => self.gone(&from, PeerEvent::Left),
            Wire::Ack { run, seq } => {
                let mine = self.inner.lock().replica.run();
                if run == mine {
                    let mut acks =
                        self.inner.acks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let at = acks.entry(from).or_insert(0);
                    *at = (*at).max(seq);
                    drop(acks);
                    self.inner.acked.notify_waiters();
                }
            }
            Wire::Replica(message) => {
                let applied =
                    matches!(message, ReplicaMessage::Delta { .. } | ReplicaMessage::Full { .. });
                let mut seen = None;
                self.inner.apply(|state| {
                    let outputs = state.replica.receive(&from, message);
                    seen = state.replica.seen(&from);
                    outputs
                });
                if self.inner.config.acks
                    && applied
                    && let Some((run, seq)) = seen
                {
                    self.inner.queue(from, Wire::Ack { run, seq });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Message = Wire<String, u32>;

    fn delta(run: u64, first: u64, values: &[u32]) -> Message {
        let changes = values.iter().map(|value| (format!("k{value}"), Some(*value))).collect();
        Wire::Replica(ReplicaMessage::Delta { run, first, changes })
    }

    fn shape(messages: &[Message]) -> Vec<String> {
        messages
            .iter()
            .map(|message| match message {
                Wire::Hello => "hello".to_owned(),
                Wire::Welcome => "welcome".to_owned(),
                Wire::Bye => "bye".to_owned(),
                Wire::Ack { run, seq } => format!("ack {run}/{seq}"),
                Wire::Replica(ReplicaMessage::Delta { run, first, changes }) => {
                    format!("delta {run}/{first}+{}", changes.len())
                }
                Wire::Replica(ReplicaMessage::Full { run, seq, .. }) => format!("full {run}/{seq}"),
                Wire::Replica(ReplicaMessage::Pull) => "pull".to_owned(),
                Wire::Replica(ReplicaMessage::Digest { run, seq }) => format!("digest {run}/{seq}"),
            })
            .collect()
    }

    #[test]
    fn following_deltas_merge_across_acks_and_only_the_last_ack_of_a_run_stays() {
        let batch = vec![
            Wire::Hello,
            delta(7, 1, &[1, 2]),
            Wire::Ack { run: 3, seq: 10 },
            delta(7, 3, &[3]),
            Wire::Ack { run: 3, seq: 12 },
            delta(7, 4, &[4, 5, 6]),
        ];
        let out = coalesce(batch);
        assert_eq!(shape(&out), ["hello", "delta 7/1+6", "ack 3/12"]);
        let Wire::Replica(ReplicaMessage::Delta { changes, .. }) = &out[1] else { panic!() };
        let values: Vec<u32> = changes.iter().filter_map(|(_, value)| *value).collect();
        assert_eq!(values, [1, 2, 3, 4, 5, 6], "in order");
    }

    #[test]
    fn deltas_with_a_gap_another_run_or_anything_else_between_stay_apart() {
        let batch = vec![
            delta(7, 1, &[1]),
            delta(7, 3, &[3]),
            delta(8, 4, &[4]),
            Wire::Replica(ReplicaMessage::Digest { run: 8, seq: 4 }),
            delta(8, 5, &[5]),
            Wire::Welcome,
            delta(8, 6, &[6]),
            Wire::Ack { run: 3, seq: 1 },
            Wire::Ack { run: 4, seq: 1 },
        ];
        assert_eq!(
            shape(&coalesce(batch)),
            [
                "delta 7/1+1",
                "delta 7/3+1",
                "delta 8/4+1",
                "digest 8/4",
                "delta 8/5+1",
                "welcome",
                "delta 8/6+1",
                "ack 3/1",
                "ack 4/1",
            ]
        );
    }

    #[test]
    fn a_merged_delta_stays_within_its_bound() {
        let values: Vec<u32> = (0..MERGED_CHANGES_MAX as u32 + 10).collect();
        let batch = values.iter().map(|&value| delta(1, u64::from(value) + 1, &[value])).collect();
        let out = coalesce(batch);
        assert_eq!(
            shape(&out),
            [
                format!("delta 1/1+{MERGED_CHANGES_MAX}"),
                format!("delta 1/{}+10", MERGED_CHANGES_MAX + 1)
            ]
        );
    }
}
