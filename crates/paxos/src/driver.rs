//! The driver: [`Paxos`], the handle, and the one tokio task per node that runs the core over
//! a [`shoal_transport::Node`]. With `task.rs`, the only code of the crate allowed tokio.
//!
//! [`Paxos::start`] opens the transport service `paxos` on a node and spawns one tokio task
//! that runs this node's [`Proposer`](crate::core::Proposer) and, if the node is in the
//! acceptor set, its [`Acceptor`](crate::core::Acceptor). [`Paxos`] is a cheap-to-clone handle
//! to that task.
//!
//! ```text
//!  Paxos (handle) ── commands (bounded) ──► driver task ◄── Inbox<Vec<Message>> (service "paxos")
//!                                           │ Proposer ──► completions ──► the callers
//!  Node events (up/down) ─► quorum events ◄─┤ Acceptor (if this node is one)
//!                                           │   poll_persist ──► spawn_blocking: store.write
//!                                           │   persisted ◄──── (one batch, one fsync)
//!                                           │ handle_timeout when poll_timeout is due
//!                                           └─► one sender task per peer ─► Service::send
//! ```
//!
//! The task decides nothing a test of the protocol would need to check: it feeds the cores
//! messages and time, hands completions back to callers, routes what the cores send (a
//! message to this node goes straight to its own proposer or acceptor; one to another node
//! goes to that node's sender task, which batches what waits into one service message), and
//! turns node up and down events into [`QuorumEvent`]s, and has the acceptor's writes made
//! durable off the tokio workers (see `task.rs`: one batch at a time on a blocking thread,
//! with every vote asked for meanwhile in the next one). Messages to a peer whose queue is
//! full, or that is not connected, are dropped, which Paxos tolerates like any loss; the
//! driver never waits on a peer, so two busy nodes cannot block each other. (One exception to
//! remove: the steps of a membership change are sequenced here, in [`Paxos::reconfigure`].)
//!
//! **Node names and core ids.** The core knows nodes as [`NodeId`]s; [`node_id`] is the one
//! place that maps a node name to one (a stable 64-bit hash of the name, so every node
//! computes the same id with no exchange). A proposer's run is new at every start of the
//! service (the wall clock in microseconds, kept increasing within the process), so neither a
//! restarted node nor a service stopped and started again on the same node reuses a ballot.

mod task;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shoal_process::{Clock, Pid};
use shoal_transport::{Node, ServiceError};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::core::NodeId;
use crate::core::acceptor::Recovery;
use crate::core::membership::{Configuration, is_single_step, majority};
use crate::error::{BeginEpochError, PaxosError, StorageError};
use crate::register::{Change, Entry, Key, Outcome, Owner};
use crate::stats::{Counters, PaxosStats};
use crate::storage::{FileStorage, MemoryStorage};

/// The core's id for the node called `name`: the one place names become [`NodeId`]s.
///
/// The transport's own id of the node ([`shoal_process::NodeId::from_name`], a stable hash:
/// the same on every node and every run, and the handshake refuses a second node whose name
/// hashes alike), kept off 0, which the core reserves for "no ballot".
pub(crate) fn node_id(name: &str) -> NodeId {
    NodeId(shoal_process::NodeId::from_name(name).as_u64().max(1))
}

/// Where this node's acceptor keeps its votes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StorageConfig {
    /// In memory: lost when the node stops, so a restarted acceptor rejoins from the others
    /// before it votes (see the crate docs, "Losing state").
    #[default]
    Memory,
    /// A [`FileStorage`] in this directory: survives restarts (every vote is fsynced before
    /// its reply leaves; the driver writes them on a blocking thread, several to one fsync).
    File(PathBuf),
}

/// How the Paxos service of a node is set up. Every node of a cluster must be given the same
/// acceptor set.
#[derive(Clone, Debug)]
pub struct PaxosConfig {
    /// The acceptor set, as node names; this node may or may not be in it.
    pub acceptors: Vec<String>,
    /// The version of that set's configuration: 0 for a cluster's first set; a node that
    /// joins a cluster whose set has changed since gives the set and version it learnt (an
    /// older one is safe too: acceptors refuse it and send the newer one back).
    pub version: u64,
    /// Where this node's acceptor keeps its votes (unused if it is not an acceptor).
    pub storage: StorageConfig,
    /// How long a change may take in all before it fails with a timeout or `NoQuorum`.
    pub request_timeout: Duration,
    /// How long one round waits for a majority before starting over.
    pub round_timeout: Duration,
    /// Whether a change that meets contention is forwarded to the key's designated proposer
    /// (chosen among the acceptors' nodes this node is connected to), rather than only backing
    /// off.
    pub forwarding: bool,
    /// The most changes this node's proposer holds at once; more fail with
    /// [`PaxosError::Overloaded`].
    pub max_requests: usize,
    /// Messages waiting for each peer before further ones are dropped.
    pub peer_queue: usize,
    /// Message batches from peers waiting for the driver task.
    pub inbox_capacity: usize,
    /// Seeds back-off jitter and rejoin attempt numbers (mixed with the node's name and the
    /// service's run).
    pub seed: u64,
    /// What this node's acceptor does, without state, when a majority has none either.
    pub recovery: Recovery,
    /// The name of the transport service; the same on every node.
    pub service: String,
}

impl PaxosConfig {
    /// Defaults for a LAN: in-memory storage, requests of 2 s, rounds of 100 ms, forwarding
    /// on, 4,096 requests at once, 8,192 queued messages per peer, [`Recovery::Manual`].
    pub fn new(acceptors: Vec<String>) -> Self {
        PaxosConfig {
            acceptors,
            version: 0,
            storage: StorageConfig::Memory,
            request_timeout: Duration::from_secs(2),
            round_timeout: Duration::from_millis(100),
            forwarding: true,
            max_requests: 4096,
            peer_queue: 8192,
            inbox_capacity: 1024,
            seed: 0,
            recovery: Recovery::Manual,
            service: "paxos".to_owned(),
        }
    }
}

/// Why the Paxos service did not start on a node ([`Paxos::start`]). Nothing is left running.
#[derive(Debug, thiserror::Error)]
pub enum PaxosStartError {
    /// The acceptor set is empty.
    #[error("the acceptor set is empty")]
    NoAcceptors,
    /// The transport service could not be opened (it is already open on this node).
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The acceptor's file store could not be opened.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Whether a majority of the acceptor set is reachable from this node (connected, or this
/// node itself), as the transport's node events tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuorumEvent {
    /// A majority of the acceptors is reachable again: changes can complete.
    Up,
    /// Fewer than a majority are reachable: changes will fail with [`PaxosError::NoQuorum`].
    Down,
}

/// Who an owned entry is bound to ([`Paxos::put_owned`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// A process of the node that writes the entry.
    Process(Pid),
    /// One run of a node: its name and incarnation ([`Paxos::node_holder`] fills in the
    /// current one), so that clearing the entries of a run that died never clears those the
    /// node's next run wrote.
    Node {
        /// The node's name.
        name: String,
        /// The run of it ([`shoal_transport::NodeSpec::incarnation`]).
        incarnation: u64,
    },
}

impl Holder {
    /// The [`Owner`] an entry bound to this holder carries: `pid:<node>.<incarnation>.<id>` or
    /// `node:<name>.<incarnation>`, so any node can tell whom an entry belongs to.
    pub fn owner(&self) -> Owner {
        let text = match self {
            Holder::Process(pid) => {
                format!("pid:{}.{}.{}", pid.node().as_u64(), pid.incarnation(), pid.local_id())
            }
            Holder::Node { name, incarnation } => format!("node:{name}.{incarnation}"),
        };
        Owner(text.into_bytes())
    }
}

/// Why a change of the acceptor set ([`Paxos::add_acceptor`], [`Paxos::remove_acceptor`]) did
/// not finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReconfigureError {
    /// The new set is not the current one with exactly one acceptor added or removed (or an
    /// acceptor's name is unknown here); nothing was installed.
    #[error("a membership change adds or removes exactly one acceptor; nothing was installed")]
    NotOneStep,
    /// A step did not finish in time; the new configuration may run on some nodes. Running
    /// the same change again finishes it.
    #[error("the membership change did not finish its {step:?} step in time")]
    Timeout {
        /// The step that did not finish.
        step: ReconfigureStep,
    },
    /// The service on this node has stopped.
    #[error("the Paxos service on this node has stopped")]
    Stopped,
}

/// The steps of a membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconfigureStep {
    /// Installing the configuration on majorities of the old and the new set (and the new
    /// acceptor rejoining).
    Install,
    /// Listing the keys of a majority of the old set.
    ListKeys,
    /// Rewriting every key through the new set.
    Rewrite,
}

impl From<PaxosError> for ReconfigureError {
    fn from(_: PaxosError) -> Self {
        ReconfigureError::Stopped
    }
}

/// Why an owned entry was not written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OwnedWriteError {
    /// The holder names a run of a node that is not the one connected now (or a node that is
    /// not connected): nothing was written.
    #[error("{0:?} is not a connected run of that node; nothing was written")]
    StaleNode(Holder),
    /// The holder is a process of another node: only local processes can be watched. Nothing
    /// was written.
    #[error("{0} is not a process of this node; nothing was written")]
    RemoteProcess(Pid),
    /// The holder had already died when the write completed; the entry was written and then
    /// cleared (or is being cleared) by this node.
    #[error("the holder died before the write completed; the entry is being cleared")]
    HolderDied,
    /// The write failed.
    #[error(transparent)]
    Write(#[from] PaxosError),
}

/// A request to the driver task.
pub(crate) enum Command {
    /// Run `change` on `key`, answer on `reply`.
    Propose { key: Key, change: Change, reply: oneshot::Sender<Result<Outcome, PaxosError>> },
    /// The operator's command to found a new epoch ([`Paxos::begin_epoch`]).
    BeginEpoch(oneshot::Sender<Result<(), BeginEpochError>>),
    /// This node's configuration and its acceptors' names.
    Configuration(oneshot::Sender<(Configuration, Vec<String>)>),
    /// Install a configuration here and send it to these nodes; answer with what each node
    /// has answered so far.
    Install {
        configuration: Configuration,
        names: Vec<String>,
        reply: oneshot::Sender<InstallStatus>,
    },
    /// Ask a node's acceptor for a page of its keys.
    ListKeys { node: String, after: Option<Key>, reply: oneshot::Sender<KeyPage> },
    /// Stop the task; answer once the acceptor's storage is closed.
    Stop(oneshot::Sender<()>),
}

/// What each node answered to an installed configuration: by name, the version it runs and
/// whether its acceptor votes.
pub(crate) type InstallStatus = std::collections::BTreeMap<String, (u64, bool)>;

/// A page of an acceptor's keys, and where the next one starts.
pub(crate) type KeyPage = (Vec<Key>, Option<Key>);

/// Changes waiting for the driver task before callers wait.
const COMMAND_QUEUE: usize = 1024;

/// Quorum events buffered for a slow subscriber before it is told it lagged.
const QUORUM_EVENTS: usize = 64;

/// A handle to the Paxos service of one node: linearisable reads and writes of per-key
/// registers, through consensus among a configured set of acceptor nodes. Cheap to clone;
/// every clone is the same service. The crate docs show it at work.
///
/// [`Paxos::start`] runs the service on a node (its proposer, and its acceptor if the node is
/// in the set); it runs until [`Paxos::stop`], or until every handle is dropped. Every node
/// of a cluster is given the same acceptor set ([`PaxosConfig`]).
///
/// **A fresh cluster, and a majority that lost its state.** An acceptor without state votes
/// only after it has rejoined from enough voting acceptors. When a majority has no state (a
/// fresh cluster, or every in-memory acceptor restarted), nobody can rejoin: with the default
/// [`Recovery::Manual`] the service stays without quorum until an operator calls
/// [`Paxos::begin_epoch`] on a node whose acceptor has no state, which founds a new, empty
/// epoch; with [`Recovery::NewEpoch`] (opt-in) that happens on its own. Either way what the
/// acceptors held is given up, and fencing tokens ([`Outcome::epoch`], then the version) keep
/// growing: epochs are numbered from the wall clock in milliseconds.
///
/// **Owned entries** ([`Paxos::put_owned`]): the node that writes an entry bound to a
/// [`Holder`] watches the holder — a local process through the runtime, a node through the
/// transport's node monitor — and when it dies, issues [`Change::ClearIfOwner`], retrying
/// until it completes. Nobody else clears it: if the writing node dies before the holder, the
/// entry stays until someone clears it (the registry above, which knows its keys, clears the
/// entries of nodes that went down). A ClearIfOwner that finds the entry taken by another
/// holder changes nothing.
///
/// **Forwarding.** A change forwarded to a key's designated proposer is acknowledged on
/// receipt and sent again until it is; when the transport reports the designated node down,
/// a forwarded read is taken back and run here, and any other forwarded change fails at once
/// with [`PaxosError::DesignatedDown`] rather than at its deadline.
///
/// **Membership.** [`Paxos::add_acceptor`] and [`Paxos::remove_acceptor`] change the acceptor
/// set one acceptor at a time by the procedure of [`membership`](crate::core::membership): the
/// new, versioned configuration goes to every node; once majorities of the old and the new set
/// run it (and an added acceptor has rejoined), every key is rewritten through the new set. A
/// node added to the set starts its acceptor then. Nodes that missed the change learn it from
/// the first acceptor that refuses them.
///
/// What it does not do: retry a failed change (each [`PaxosError`] says whether it may have
/// taken effect; the caller decides), or detect failures itself (the transport's heartbeats
/// do). A [`FileStorage`] is written off the tokio workers, on a blocking thread.
#[derive(Clone)]
pub struct Paxos {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Paxos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Paxos").field("node", &self.inner.node.name()).finish()
    }
}

struct Inner {
    node: Node,
    commands: mpsc::Sender<Command>,
    quorum: watch::Receiver<bool>,
    events: broadcast::Sender<QuorumEvent>,
    voting: Arc<AtomicBool>,
    retry_every: Duration,
    /// The run of this start's proposer.
    proposer_run: u64,
    /// Its counters.
    counters: Arc<Counters>,
}

impl Paxos {
    /// Starts the Paxos service on `node`: opens the transport service, opens the storage if
    /// the node is an acceptor, and spawns the driver task (on the current tokio runtime).
    ///
    /// # Errors
    ///
    /// [`PaxosStartError::NoAcceptors`] for an empty acceptor set,
    /// [`PaxosStartError::Service`] if the service is already open on this node,
    /// [`PaxosStartError::Storage`] if the file store does not open.
    pub async fn start(node: &Node, config: PaxosConfig) -> Result<Paxos, PaxosStartError> {
        if config.acceptors.is_empty() {
            return Err(PaxosStartError::NoAcceptors);
        }
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
        let (events, _) = broadcast::channel(QUORUM_EVENTS);
        let (quorum_sender, quorum) = watch::channel(false);
        let retry_every = config.round_timeout;
        let voting = Arc::new(AtomicBool::new(false));
        let plumbing = task::Plumbing {
            commands: receiver,
            quorum: quorum_sender,
            events: events.clone(),
            voting: voting.clone(),
        };
        // The store opens at start on an acceptor, or when a configuration adds this node.
        let (proposer_run, counters) = match config.storage.clone() {
            StorageConfig::File(dir) => {
                let open: task::OpenStorage<_> = Box::new(move || FileStorage::open(&dir));
                task::start(node, config, (open, task::Durability::OnDisk), plumbing).await?
            }
            StorageConfig::Memory => {
                let open: task::OpenStorage<_> = Box::new(|| Ok(MemoryStorage::new()));
                task::start(node, config, (open, task::Durability::InMemory), plumbing).await?
            }
        };
        let inner = Inner {
            node: node.clone(),
            commands,
            quorum,
            events,
            voting,
            retry_every,
            proposer_run,
            counters,
        };
        Ok(Paxos { inner: Arc::new(inner) })
    }

    /// Runs `change` on `key` through consensus and returns what it did.
    ///
    /// # Errors
    ///
    /// A [`PaxosError`], saying whether the change may have taken effect.
    pub async fn change(&self, key: impl Into<Key>, change: Change) -> Result<Outcome, PaxosError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Propose { key: key.into(), change, reply };
        if self.inner.commands.send(command).await.is_err() {
            return Err(PaxosError::Stopped { maybe_applied: false });
        }
        answer.await.unwrap_or(Err(PaxosError::Stopped { maybe_applied: true }))
    }

    /// The current entry of `key` (`None`: absent): a linearisable read, one consensus round.
    ///
    /// # Errors
    ///
    /// As for [`Paxos::change`]; a read changes nothing whatever happened.
    pub async fn get(&self, key: impl Into<Key>) -> Result<Option<Entry>, PaxosError> {
        Ok(self.change(key, Change::Read).await?.after.entry)
    }

    /// Sets `key` to `data`, bound to nobody.
    ///
    /// # Errors
    ///
    /// As for [`Paxos::change`].
    pub async fn put(&self, key: impl Into<Key>, data: Vec<u8>) -> Result<Outcome, PaxosError> {
        self.change(key, Change::Set(Entry::new(data))).await
    }

    /// Sets `key` to `new` if it holds `expected` now (`None`: absent, or delete). The
    /// outcome's `applied` says whether it did; its `before` is what the key held.
    ///
    /// # Errors
    ///
    /// As for [`Paxos::change`].
    pub async fn compare_and_set(
        &self,
        key: impl Into<Key>,
        expected: Option<Entry>,
        new: Option<Entry>,
    ) -> Result<Outcome, PaxosError> {
        self.change(key, Change::CompareAndSet { expected, new }).await
    }

    /// Removes `key`.
    ///
    /// # Errors
    ///
    /// As for [`Paxos::change`].
    pub async fn delete(&self, key: impl Into<Key>) -> Result<Outcome, PaxosError> {
        self.change(key, Change::Delete).await
    }

    /// Sets `key` to `data` bound to `holder`, and watches the holder: when it dies, this
    /// node clears the entry with [`Change::ClearIfOwner`] (see the module docs for who clears
    /// what). The watch lasts until the clear completes or the service stops.
    ///
    /// # Errors
    ///
    /// [`OwnedWriteError::RemoteProcess`] for a process of another node (nothing written),
    /// [`OwnedWriteError::HolderDied`] if the holder was already gone once the entry was
    /// written (it is being cleared), [`OwnedWriteError::Write`] if the write failed.
    pub async fn put_owned(
        &self,
        key: impl Into<Key>,
        data: Vec<u8>,
        holder: Holder,
    ) -> Result<Outcome, OwnedWriteError> {
        let key = key.into();
        let runtime = self.inner.node.runtime();
        if let Holder::Process(pid) = holder
            && pid.node() != shoal_process::NodeId::from_name(self.inner.node.name())
        {
            return Err(OwnedWriteError::RemoteProcess(pid));
        }
        // Watch first, so that a death during the write is not missed.
        let death: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = match &holder {
            Holder::Process(pid) => {
                let watch = runtime.watch(*pid);
                Box::pin(async move {
                    watch.await;
                })
            }
            Holder::Node { name, incarnation } if *name == self.inner.node.name() => {
                if *incarnation != self.inner.node.incarnation() {
                    return Err(OwnedWriteError::StaleNode(holder.clone()));
                }
                Box::pin(std::future::pending())
            }
            Holder::Node { name, incarnation } => {
                let current = self.node_holder(name);
                if current.as_ref() != Some(&holder) {
                    return Err(OwnedWriteError::StaleNode(holder.clone()));
                }
                let _ = incarnation;
                let down = self.inner.node.monitor_node(name);
                Box::pin(async move {
                    down.await;
                })
            }
        };
        let owner = holder.owner();
        let outcome =
            self.change(key.clone(), Change::Set(Entry::owned(data, owner.clone()))).await;
        // Even a failed write may have taken effect: watch whenever it may have.
        let written = match &outcome {
            Ok(_) => true,
            Err(error) => error.maybe_applied(),
        };
        if written {
            let weak = self.inner.commands.downgrade();
            let (retry_every, clock) = (self.inner.retry_every, self.inner.node.runtime().clock());
            tokio::spawn(clear_when_dead(death, weak, key, owner, retry_every, clock.clone()));
        }
        let outcome = outcome?;
        let dead = match &holder {
            Holder::Process(pid) => !runtime.is_alive(*pid),
            Holder::Node { name, .. } => {
                name != self.inner.node.name() && !self.inner.node.is_connected(name)
            }
        };
        if dead {
            return Err(OwnedWriteError::HolderDied);
        }
        Ok(outcome)
    }

    /// A [`Holder`] for the current run of node `name` (this node included), or `None` if it
    /// is not connected.
    pub fn node_holder(&self, name: &str) -> Option<Holder> {
        let node = &self.inner.node;
        let incarnation = if name == node.name() {
            node.incarnation()
        } else if node.is_connected(name) {
            node.members().into_iter().find(|spec| spec.name == name)?.incarnation
        } else {
            return None;
        };
        Some(Holder::Node { name: name.to_owned(), incarnation })
    }

    /// The operator's command after a majority of the acceptors lost their state together
    /// (every in-memory acceptor restarted, say), and to start a fresh cluster under
    /// [`Recovery::Manual`]: this node's acceptor, which must be without state, founds a new,
    /// empty epoch as soon as it finds a majority without state. **What the acceptors held
    /// is given up.** While enough acceptors vote, it rejoins them instead and nothing is lost.
    ///
    /// # Errors
    ///
    /// [`BeginEpochError::Voting`] if this node's acceptor votes,
    /// [`BeginEpochError::NotAnAcceptor`] if this node has none, [`BeginEpochError::Stopped`]
    /// if the service has stopped.
    pub async fn begin_epoch(&self) -> Result<(), BeginEpochError> {
        let (reply, answer) = oneshot::channel();
        if self.inner.commands.send(Command::BeginEpoch(reply)).await.is_err() {
            return Err(BeginEpochError::Stopped);
        }
        answer.await.unwrap_or(Err(BeginEpochError::Stopped))
    }

    /// The acceptor set this node runs (its configuration's acceptors, by name) and the
    /// configuration's version.
    ///
    /// # Errors
    ///
    /// [`PaxosError::UnnamedAcceptors`] while this node cannot name every acceptor yet,
    /// [`PaxosError::Stopped`].
    pub async fn acceptors(&self) -> Result<(u64, Vec<String>), PaxosError> {
        let (reply, answer) = oneshot::channel();
        if self.inner.commands.send(Command::Configuration(reply)).await.is_err() {
            return Err(PaxosError::Stopped { maybe_applied: false });
        }
        let (configuration, names) =
            answer.await.map_err(|_| PaxosError::Stopped { maybe_applied: false })?;
        if names.len() != configuration.acceptors.len() {
            let (acceptors, named) = (configuration.acceptors.len(), names.len());
            return Err(PaxosError::UnnamedAcceptors { acceptors, named });
        }
        Ok((configuration.version, names))
    }

    /// Adds acceptor `name` to the set, by the procedure of
    /// [`membership`](crate::core::membership):
    /// the new configuration goes to every node; once a majority of the old set and a majority
    /// of the new one run it and the new acceptor votes (it rejoins first, copying the others'
    /// state — which works with one old acceptor down), every key is rewritten through the new
    /// set. `timeout` bounds the whole change. Run one change at a time, from one node.
    ///
    /// # Errors
    ///
    /// A [`ReconfigureError`] saying which step did not finish (the configuration may be
    /// installed on some nodes: run the same change again to finish it).
    pub async fn add_acceptor(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<u64, ReconfigureError> {
        let (_, mut acceptors) = self.acceptors().await?;
        acceptors.push(name.to_owned());
        self.reconfigure(acceptors, timeout).await
    }

    /// Removes acceptor `name` from the set, by the same procedure as
    /// [`Paxos::add_acceptor`]; the removed acceptor refuses every vote once it runs the new
    /// configuration (stop it after this returns).
    ///
    /// # Errors
    ///
    /// As for [`Paxos::add_acceptor`].
    pub async fn remove_acceptor(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<u64, ReconfigureError> {
        let (_, mut acceptors) = self.acceptors().await?;
        acceptors.retain(|acceptor| acceptor != name);
        self.reconfigure(acceptors, timeout).await
    }

    /// One step of a membership change to the set `acceptors` (the current one with exactly
    /// one acceptor added or removed), as [`Paxos::add_acceptor`] describes; the new
    /// configuration's version. Given the set this node runs already, it finishes the step
    /// that installed it (rewrites every key through it) and returns its version: so a step
    /// cut short after its install is finished by asking for the same set again.
    ///
    /// # Errors
    ///
    /// As for [`Paxos::add_acceptor`].
    pub async fn reconfigure(
        &self,
        acceptors: Vec<String>,
        timeout: Duration,
    ) -> Result<u64, ReconfigureError> {
        let clock = self.inner.node.runtime().clock();
        let deadline = clock.now() + timeout;
        let (reply, answer) = oneshot::channel();
        self.send_command(Command::Configuration(reply)).await?;
        let (current, old) = answer.await.map_err(|_| ReconfigureError::Stopped)?;
        let new_ids: Vec<NodeId> = acceptors.iter().map(|name| node_id(name)).collect();
        if old.len() == current.acceptors.len() && same_set(&current.acceptors, &new_ids) {
            // The step to this set was installed already (its rewrite may not have finished):
            // finish it. The keys a majority of either the set before it or this one holds
            // are all among those of a majority of this one, whether it added or removed one.
            self.rewrite(&old, deadline).await?;
            return Ok(current.version);
        }
        if old.len() != current.acceptors.len() || !is_single_step(&current.acceptors, &new_ids) {
            return Err(ReconfigureError::NotOneStep);
        }
        let configuration = Configuration { version: current.version + 1, acceptors: new_ids };
        let added: Vec<&String> = acceptors.iter().filter(|name| !old.contains(name)).collect();
        let mut everyone = old.clone();
        everyone.extend(acceptors.iter().cloned());
        loop {
            let (reply, answer) = oneshot::channel();
            let names = everyone.clone();
            self.send_command(Command::Install {
                configuration: configuration.clone(),
                names,
                reply,
            })
            .await?;
            let status = answer.await.map_err(|_| ReconfigureError::Stopped)?;
            let runs =
                |name: &String| status.get(name).is_some_and(|(v, _)| *v >= configuration.version);
            let votes = |name: &&String| {
                status.get(*name).is_some_and(|(v, voting)| *v >= configuration.version && *voting)
            };
            let old_done = old.iter().filter(|name| runs(name)).count() >= majority(old.len());
            let new_done =
                acceptors.iter().filter(|name| runs(name)).count() >= majority(acceptors.len());
            if old_done && new_done && added.iter().all(votes) {
                break;
            }
            if clock.now() >= deadline {
                return Err(ReconfigureError::Timeout { step: ReconfigureStep::Install });
            }
            clock.sleep(self.inner.retry_every).await;
        }
        self.rewrite(&old, deadline).await?;
        Ok(configuration.version)
    }

    /// Rewrites every key that a majority of `acceptors` holds through the set this node runs
    /// now (step 3 of the procedure), by `deadline`. A read that fails is tried again a round
    /// later, not at once: some fail without waiting (an overloaded proposer), and a retry
    /// loop that never waits would spin until the deadline, which on a simulation's paused
    /// clock never comes. Once the service stopped, no read can succeed: it ends there.
    async fn rewrite(
        &self,
        acceptors: &[String],
        deadline: tokio::time::Instant,
    ) -> Result<(), ReconfigureError> {
        let clock = self.inner.node.runtime().clock();
        let keys = self.keys_of_a_majority(acceptors, deadline).await?;
        for key in keys {
            loop {
                match self.change(key.clone(), Change::Read).await {
                    Ok(_) => break,
                    Err(PaxosError::Stopped { .. }) => return Err(ReconfigureError::Stopped),
                    Err(_) if clock.now() < deadline => clock.sleep(self.inner.retry_every).await,
                    Err(_) => {
                        return Err(ReconfigureError::Timeout { step: ReconfigureStep::Rewrite });
                    }
                }
            }
        }
        Ok(())
    }

    /// The keys held by a majority of `acceptors`: every key whose value was chosen by a
    /// majority of them is among them.
    async fn keys_of_a_majority(
        &self,
        acceptors: &[String],
        deadline: tokio::time::Instant,
    ) -> Result<std::collections::BTreeSet<Key>, ReconfigureError> {
        let clock = self.inner.node.runtime().clock();
        let mut keys = std::collections::BTreeSet::new();
        let mut answered = 0;
        for node in acceptors {
            let mut after = None;
            let complete = loop {
                let (reply, answer) = oneshot::channel();
                let command = Command::ListKeys { node: node.clone(), after: after.clone(), reply };
                self.send_command(command).await?;
                let wait = self.inner.retry_every * 10;
                match clock.timeout(wait, answer).await {
                    Ok(Ok((page, next))) => {
                        keys.extend(page);
                        match next {
                            Some(key) => after = Some(key),
                            None => break true,
                        }
                    }
                    _ => break false,
                }
                if clock.now() >= deadline {
                    break false;
                }
            };
            answered += usize::from(complete);
            if answered >= majority(acceptors.len()) {
                return Ok(keys);
            }
        }
        Err(ReconfigureError::Timeout { step: ReconfigureStep::ListKeys })
    }

    async fn send_command(&self, command: Command) -> Result<(), ReconfigureError> {
        self.inner.commands.send(command).await.map_err(|_| ReconfigureError::Stopped)
    }

    /// Whether a majority of the acceptor set is reachable from this node now.
    pub fn has_quorum(&self) -> bool {
        *self.inner.quorum.borrow()
    }

    /// Quorum-up and quorum-down events from now on (the current state is
    /// [`Paxos::has_quorum`]).
    pub fn subscribe(&self) -> broadcast::Receiver<QuorumEvent> {
        self.inner.events.subscribe()
    }

    /// Whether this node's acceptor votes: false for a node outside the acceptor set, and
    /// while an acceptor without state rejoins (which, for an in-memory acceptor just started,
    /// needs answers from a majority of the other acceptors too; see the crate docs).
    pub fn is_voting(&self) -> bool {
        self.inner.voting.load(Ordering::Relaxed)
    }

    /// The run of this service's proposer ([`ProposerId::run`](crate::core::ProposerId::run)):
    /// new at every start of the service, and larger than any earlier start's in this process,
    /// so a service stopped and started again on the same node never reuses a ballot.
    pub fn proposer_run(&self) -> u64 {
        self.inner.proposer_run
    }

    /// What this node's proposer counted since the service started: rounds (phase 1 and
    /// phase 2), conflicts, fast-path and slow decisions, and its callers' latencies. Read from
    /// atomics, without asking the driver task (so never held up by a busy service).
    pub fn stats(&self) -> PaxosStats {
        self.inner.counters.snapshot()
    }

    /// The node this service runs on.
    pub fn node(&self) -> &Node {
        &self.inner.node
    }

    /// Stops the service on this node: closes the transport service and the acceptor's
    /// storage; changes still running fail with [`PaxosError::Stopped`]. Returns once
    /// the storage and the transport service are closed (so the same directory can be opened,
    /// and the service started on this node, again).
    pub async fn stop(&self) {
        let (done, stopped) = oneshot::channel();
        if self.inner.commands.send(Command::Stop(done)).await.is_ok() {
            let _ = stopped.await;
        }
    }
}

/// Waits for the holder's death, then clears the entry if it is still the holder's, retrying
/// failed clears until one completes or the service stops.
async fn clear_when_dead(
    death: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    commands: mpsc::WeakSender<Command>,
    key: Key,
    owner: Owner,
    retry_every: Duration,
    clock: Clock,
) {
    death.await;
    loop {
        let Some(commands) = commands.upgrade() else { return };
        let (reply, answer) = oneshot::channel();
        let change = Change::ClearIfOwner(owner.clone());
        if commands.send(Command::Propose { key: key.clone(), change, reply }).await.is_err() {
            return;
        }
        drop(commands);
        match answer.await {
            Ok(Ok(_)) => return,
            Ok(Err(error)) => {
                tracing::debug!(?key, %error, "clearing an owned entry failed; retrying");
                clock.sleep(retry_every).await;
            }
            Err(_) => return,
        }
    }
}

/// Whether `a` and `b` hold the same acceptors, in any order.
fn same_set(a: &[NodeId], b: &[NodeId]) -> bool {
    let a: std::collections::BTreeSet<_> = a.iter().collect();
    let b: std::collections::BTreeSet<_> = b.iter().collect();
    a == b
}
