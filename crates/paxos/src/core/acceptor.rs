//! The acceptor: votes on ballots per key, and rejoins after losing its state.
//!
//! ```text
//!  Prepare(k, b) ──► b ≥ promised(k)? ── write slot ──► Promise(k, b, incarnation, accepted)
//!                          └─ no ────────────────────► Rejected(Promised(promised))
//!  Accept(k, b, v, quorum) ──► quorum's incarnations current? b ≥ promised(k)?
//!                          └─ yes: accepted := (b, v), promised := b+1, write ──► Accepted
//! ```
//!
//! **Persist, then reply.** The acceptor keeps its state in memory and changes it at once; each
//! change is also a [`Record`] to write, and every message queued after it waits until the
//! caller reports it durable:
//!
//! ```text
//!  handle_message ──► state changed in memory ──► records ──► poll_persist() → Persist batch
//!                     reply queued, held behind them           caller writes it (one fsync)
//!  persisted(batch) ──► replies queued up to then released ──► poll_transmit() → (to, Message)
//!  persist_failed(now, batch) ──► held replies dropped; the batch is asked for again later
//! ```
//!
//! Replies leave in the order they were queued, each only once every write asked for before
//! it is durable, so a reply that left always describes a durable state. One batch is out at
//! a time; whatever is asked for meanwhile goes in the next one (group commit). An acceptor
//! whose store has no incarnation rejoins first (see the crate docs, "Losing state"):
//!
//! ```text
//!  no incarnation ──► Query all ──► enough *voting* answers (same newest epoch)?
//!        ▲                 │  yes ──► Fence them with a new life, copy their slots and fences
//!        │                 │          ──► save the merge, then the incarnation ──► votes
//!        │                 └ no: a majority without state, and founding allowed?
//!        │                     yes ──► ProposeEpoch to those without state; a majority
//!        │                             promised ──► StartEpoch: the promisers vote, empty
//!        └──── a message from a newer epoch (this acceptor's epoch is over: forget it all)
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use thiserror::Error;

use crate::core::membership::{Configuration, majority};
use crate::core::mutants::{Mutant, mutated};
use crate::core::{Ballot, Epoch, Incarnation, Lineage, Message, NodeId, Rejection, Standing};
use crate::error::BeginEpochError;
use crate::register::Key;
use crate::storage::{MemoryStorage, Meta, Record, Slot, Storage};

/// The most messages an acceptor holds for the driver; past it the oldest is dropped, which
/// Paxos tolerates like any message loss. A driver that drains after every call never gets there.
pub(crate) const OUTBOX_LIMIT: usize = 4096;

/// What an acceptor without state may do when a majority of the set has no state either (a
/// fresh cluster, or a full restart of in-memory acceptors), so that nobody can rejoin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Recovery {
    /// Wait: it votes for nothing until an operator calls
    /// [`Paxos::begin_epoch`](crate::Paxos::begin_epoch) ([`Acceptor::begin_epoch`] in the
    /// core), which founds a new, empty epoch. A fresh cluster needs that call once.
    #[default]
    Manual,
    /// Found a new, empty epoch at once. **Opt-in: whatever the acceptors held is lost** when a
    /// majority loses its state together. Fencing tokens stay increasing across epochs (see
    /// [`Outcome::epoch`](crate::Outcome::epoch)).
    NewEpoch,
}

/// How an acceptor is set up.
#[derive(Clone, Debug)]
pub struct AcceptorConfig {
    /// This acceptor.
    pub id: NodeId,
    /// The acceptor set, this one included: whom to rejoin from. A newer one installed at run
    /// time ([`Acceptor::install`]) is kept in the store and wins over it.
    pub acceptors: Vec<NodeId>,
    /// The version of that set's configuration (see [`Configuration`]).
    pub version: u64,
    /// How long to wait for rejoin answers before asking again.
    pub rejoin_retry: Duration,
    /// Slots per page of the state transfer while rejoining.
    pub rejoin_page_slots: usize,
    /// Seeds the random attempt numbers of rejoins and the nonces of epochs.
    pub seed: u64,
    /// What to do when a majority has no state.
    pub recovery: Recovery,
    /// The lowest number an epoch this acceptor founds may take (the driver passes the wall
    /// clock in milliseconds, so that epochs grow across full restarts).
    pub epoch_floor: u64,
}

impl AcceptorConfig {
    /// Defaults: configuration version 0, retry every 100 ms, pages of 256 slots,
    /// [`Recovery::Manual`], floor 0.
    pub fn new(id: NodeId, acceptors: Vec<NodeId>, seed: u64) -> Self {
        AcceptorConfig {
            id,
            acceptors,
            rejoin_retry: Duration::from_millis(100),
            rejoin_page_slots: 256,
            seed,
            version: 0,
            recovery: Recovery::Manual,
            epoch_floor: 0,
        }
    }
}

/// A batch of writes the acceptor asks for ([`Acceptor::poll_persist`]): write `records` in
/// order, as one write ([`Storage::write`]), then report it with [`Acceptor::persisted`] (or
/// hand it back with [`Acceptor::persist_failed`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Persist {
    /// Which batch this is: the number of the last write in it (writes are numbered from 1).
    pub id: u64,
    /// The records to write, in order.
    pub records: Vec<Record>,
}

/// Why a message changed nothing and got no answer. The driver may log it; nothing else to do.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Ignored {
    /// Rejoin traffic from a node outside the acceptor set.
    #[error("{0} is not in the acceptor set")]
    NotAnAcceptor(NodeId),
    /// An answer to a rejoin attempt that is over (or that this acceptor never made).
    #[error("answer to a rejoin attempt that is not running")]
    StaleAttempt,
    /// A message meant for a proposer.
    #[error("message meant for a proposer")]
    NotForAcceptor,
}

/// Where the acceptor is in its life.
#[derive(Debug)]
enum Phase {
    /// Voting, in this incarnation.
    Active(Incarnation),
    /// Rejoin step 1: asking the others whether they vote and which incarnation of this
    /// acceptor they know.
    Querying { attempt: u64, answers: BTreeMap<NodeId, (Incarnation, Standing)> },
    /// A majority has no state: asking those without state to promise `epoch`.
    Founding { attempt: u64, epoch: Epoch, promised: BTreeMap<NodeId, u64> },
    /// Rejoin step 2: fencing the voting others with `incarnation` and copying their slots
    /// and fences.
    Fencing {
        attempt: u64,
        incarnation: Incarnation,
        /// Peers still sending pages, with the key to resume after.
        cursors: BTreeMap<NodeId, Option<Key>>,
        /// Voting peers whose last page arrived.
        done: BTreeSet<NodeId>,
        /// Peers that answered without a vote in this epoch: not counted, not asked again.
        excluded: BTreeSet<NodeId>,
        merged: BTreeMap<Key, Slot>,
        fences: BTreeMap<NodeId, Incarnation>,
    },
}

/// An acceptor. Feed it messages and timeouts; after each call, write what
/// [`poll_persist`](Acceptor::poll_persist) asks for and drain
/// [`poll_transmit`](Acceptor::poll_transmit).
#[derive(Debug)]
pub struct Acceptor {
    config: AcceptorConfig,
    /// The state it votes with: every write asked for, durable or not.
    state: MemoryStorage,
    phase: Phase,
    /// Messages to send, each with the number of the last write it waits for.
    outbox: VecDeque<(u64, NodeId, Message)>,
    /// Writes asked for and not handed out yet (or handed back failed), with their numbers.
    unwritten: VecDeque<(u64, Record)>,
    /// The number of the last write asked for.
    last_write: u64,
    /// The number of the last write known durable.
    durable: u64,
    /// The batch handed out and not yet reported (its id).
    writing: Option<u64>,
    /// After a failed write: when to ask for it again.
    persist_retry_at: Option<Instant>,
    rng: SmallRng,
    retry_at: Option<Instant>,
    /// An operator allowed this acceptor to found an epoch ([`Acceptor::begin_epoch`]).
    may_found: bool,
    /// While without state: the epoch it promised to join, and the number it drew for that
    /// promise (a [`Message::StartEpoch`] must name it). Not durable: a restart forgets it,
    /// and the acceptor then joins no epoch by founding, only by rejoining.
    promise: Option<(Epoch, u64)>,
    /// Whether a retry has passed since the promise: until then this acceptor leaves the
    /// founding to the one it promised, rather than competing with a founding of its own.
    promise_aged: bool,
}

impl Acceptor {
    /// An acceptor with the state held in `store` (read now; the acceptor keeps its own copy
    /// and asks for writes through [`poll_persist`](Acceptor::poll_persist)). If the store has
    /// an incarnation it votes at once; otherwise it starts rejoining (and its first messages
    /// are already queued).
    pub fn new(now: Instant, config: AcceptorConfig, store: &impl Storage) -> Self {
        let rng = SmallRng::seed_from_u64(config.seed);
        let mut state = MemoryStorage::new();
        let mut loaded = vec![Record::Meta(store.meta().clone())];
        loaded.extend(store.scan(None, usize::MAX).into_iter().map(|(k, s)| Record::Slot(k, s)));
        // Applying to memory cannot fail.
        let _ = state.write(&loaded);
        let mut acceptor = Acceptor {
            phase: Phase::Querying { attempt: 0, answers: BTreeMap::new() },
            config,
            state,
            outbox: VecDeque::new(),
            unwritten: VecDeque::new(),
            last_write: 0,
            durable: 0,
            writing: None,
            persist_retry_at: None,
            rng,
            retry_at: None,
            may_found: false,
            promise: None,
            promise_aged: false,
        };
        if let Some(installed) = acceptor.state.meta().configuration.clone()
            && installed.version > acceptor.config.version
        {
            acceptor.config.version = installed.version;
            acceptor.config.acceptors = installed.acceptors;
        }
        match acceptor.state.meta().incarnation {
            Some(incarnation) => acceptor.phase = Phase::Active(incarnation),
            None => acceptor.start_rejoin(now),
        }
        acceptor
    }

    /// This acceptor's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// The incarnation it votes in, or `None` while it rejoins (and does not vote).
    pub fn incarnation(&self) -> Option<Incarnation> {
        match self.phase {
            Phase::Active(incarnation) => Some(incarnation),
            _ => None,
        }
    }

    /// The epoch it votes in, or the newest it knows while it rejoins.
    pub fn epoch(&self) -> Epoch {
        match self.phase {
            Phase::Active(incarnation) => incarnation.epoch,
            _ => self.state.meta().epoch,
        }
    }

    /// The state it votes with now: every write it asked for, whether or not it is durable
    /// yet (what a store holds is what [`persisted`](Acceptor::persisted) batches put there).
    pub fn state(&self) -> &MemoryStorage {
        &self.state
    }

    /// The configuration it runs.
    pub fn configuration(&self) -> Configuration {
        Configuration { version: self.config.version, acceptors: self.config.acceptors.clone() }
    }

    /// Installs `configuration` if it is newer than the one this acceptor runs, durably (see
    /// [`membership`](super::membership)); whether it did. From then on it refuses prepares and
    /// accepts of older configurations, and, if it is no longer in the set, every vote.
    pub fn install(&mut self, configuration: Configuration) -> bool {
        if configuration.version <= self.config.version {
            return false;
        }
        let meta = Meta { configuration: Some(configuration.clone()), ..self.state.meta().clone() };
        self.write(Record::Meta(meta));
        self.config.version = configuration.version;
        self.config.acceptors = configuration.acceptors;
        true
    }

    /// The operator's command after a majority of the acceptors lost their state: found a new,
    /// empty epoch (everything the acceptors held is given up) as soon as this acceptor, still
    /// without state, finds a majority without state. Until then it keeps trying to rejoin, so
    /// calling this while enough acceptors vote changes nothing.
    ///
    /// # Errors
    ///
    /// [`BeginEpochError::Voting`] if this acceptor votes (ask one without state).
    pub fn begin_epoch(&mut self, now: Instant) -> Result<(), BeginEpochError> {
        if let Phase::Active(incarnation) = self.phase {
            return Err(BeginEpochError::Voting(incarnation));
        }
        self.may_found = true;
        if let Phase::Querying { .. } = self.phase {
            self.decide_rejoin(now);
        }
        Ok(())
    }

    /// The next message to send: only once every write asked for before it is durable.
    pub fn poll_transmit(&mut self) -> Option<(NodeId, Message)> {
        let (waits_for, _, _) = self.outbox.front()?;
        if *waits_for > self.durable && !mutated(Mutant::ReplyBeforePersist) {
            return None;
        }
        self.outbox.pop_front().map(|(_, to, message)| (to, message))
    }

    /// The next batch of writes to make durable, if none is out: every write asked for since
    /// the last batch. Write it, then call [`persisted`](Acceptor::persisted) (or
    /// [`persist_failed`](Acceptor::persist_failed)); until then the replies that wait for it
    /// stay queued, and this returns `None`.
    pub fn poll_persist(&mut self) -> Option<Persist> {
        if self.writing.is_some() || self.persist_retry_at.is_some() {
            return None;
        }
        let (id, _) = *self.unwritten.back()?;
        let records = self.unwritten.drain(..).map(|(_, record)| record).collect();
        self.writing = Some(id);
        Some(Persist { id, records })
    }

    /// The batch `id` is durable: the replies that waited for it may leave.
    pub fn persisted(&mut self, id: u64) {
        debug_assert_eq!(self.writing, Some(id), "persisted a batch that was not out");
        if self.writing == Some(id) {
            self.writing = None;
            self.durable = id;
        }
    }

    /// Writing `batch` failed (the store may hold a prefix of it): the replies waiting for it
    /// are dropped (Paxos takes that as message loss), and the same records are asked for
    /// again after the rejoin retry interval, before anything asked for since.
    pub fn persist_failed(&mut self, now: Instant, batch: Persist) {
        debug_assert_eq!(self.writing, Some(batch.id), "a failed batch that was not out");
        if self.writing != Some(batch.id) {
            return;
        }
        self.writing = None;
        let durable = self.durable;
        self.outbox.retain(|(waits_for, _, _)| *waits_for <= durable);
        let first = batch.id + 1 - batch.records.len() as u64;
        let mut unwritten: VecDeque<_> = (first..).zip(batch.records).collect();
        unwritten.append(&mut self.unwritten);
        self.unwritten = unwritten;
        self.persist_retry_at = Some(now + self.config.rejoin_retry);
    }

    /// When [`handle_timeout`](Acceptor::handle_timeout) wants to run: while rejoining, and
    /// after a failed write.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.retry_at.into_iter().chain(self.persist_retry_at).min()
    }

    /// Time passed: while rejoining, asks again those that have not answered; after a failed
    /// write, asks for it again.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.persist_retry_at.is_some_and(|at| at <= now) {
            self.persist_retry_at = None;
        }
        if self.retry_at.is_none_or(|at| now < at) {
            return;
        }
        self.retry_at = Some(now + self.config.rejoin_retry);
        let others = self.others();
        match &mut self.phase {
            Phase::Active(_) => self.retry_at = None,
            Phase::Querying { attempt, answers } => {
                // Ask everyone again: an acceptor that was without state may vote by now.
                let attempt = *attempt;
                answers.clear();
                self.promise_aged = true;
                for peer in others {
                    self.send(peer, Message::Query { attempt });
                }
            }
            Phase::Founding { .. } => {
                // A founding that has not gathered its majority within a retry starts over
                // from the question, which may now find voters.
                self.start_rejoin(now);
            }
            Phase::Fencing { attempt, incarnation, cursors, done, excluded, .. } => {
                let (attempt, incarnation) = (*attempt, *incarnation);
                let pending: Vec<_> = others
                    .iter()
                    .filter(|n| !done.contains(n) && !excluded.contains(n))
                    .map(|n| (*n, cursors.get(n).cloned().flatten()))
                    .collect();
                for (peer, after) in pending {
                    self.send(peer, Message::Fence { attempt, incarnation, after });
                }
            }
        }
    }

    /// A message arrived from `from`. Answers are queued; `Err` says why nothing happened.
    pub fn handle_message(
        &mut self,
        now: Instant,
        from: NodeId,
        message: Message,
    ) -> Result<(), Ignored> {
        match message {
            Message::Prepare { key, ballot, epoch, configuration } => {
                self.learn_epoch(now, epoch);
                if self.configuration_is_current(from, &key, ballot, configuration) {
                    self.on_prepare(from, key, ballot);
                }
                Ok(())
            }
            Message::Accept { key, ballot, register, lineage, quorum, configuration } => {
                if let Some(newest) = quorum.iter().map(|(_, i)| i.epoch).max() {
                    self.learn_epoch(now, newest);
                }
                if self.configuration_is_current(from, &key, ballot, configuration) {
                    self.on_accept(from, key, ballot, (register, lineage), &quorum);
                }
                Ok(())
            }
            Message::Configure { configuration } => {
                self.install(configuration);
                let version = self.config.version;
                let voting = self.incarnation().is_some();
                self.send(from, Message::Configured { version, voting });
                Ok(())
            }
            Message::ListKeys { after } => {
                let (slots, next) = self.page(after.as_ref());
                let keys = slots.into_iter().map(|(key, _)| key).collect();
                self.send(from, Message::Keys { keys, next });
                Ok(())
            }
            Message::Query { attempt } => self.on_query(from, attempt),
            Message::Fence { attempt, incarnation, after } => {
                self.check_peer(from)?;
                self.learn_epoch(now, incarnation.epoch);
                self.on_fence(from, attempt, incarnation, after)
            }
            Message::ProposeEpoch { attempt, epoch } => self.on_propose_epoch(from, attempt, epoch),
            Message::StartEpoch { epoch, members } => self.on_start_epoch(now, epoch, &members),
            Message::QueryReply { attempt, known, standing } => {
                self.on_query_reply(now, from, attempt, known, standing)
            }
            Message::FenceReply { attempt, slots, next, standing, fences } => {
                self.on_fence_reply(now, from, attempt, (slots, next), standing, fences)
            }
            Message::EpochReply { attempt, epoch, promised_in, standing } => {
                self.on_epoch_reply(now, from, attempt, epoch, promised_in, standing)
            }
            _ => Err(Ignored::NotForAcceptor),
        }
    }

    fn on_prepare(&mut self, from: NodeId, key: Key, ballot: Ballot) {
        let Some(incarnation) = self.check_vote(from, &key, ballot) else { return };
        let mut slot = self.state.slot(&key).cloned().unwrap_or_default();
        if ballot < slot.promised && !mutated(Mutant::PrepareBelowPromise) {
            return self.reject(from, key, ballot, Rejection::Promised(slot.promised));
        }
        if ballot > slot.promised && !mutated(Mutant::PromiseNotSaved) {
            slot.promised = ballot;
            self.write(Record::Slot(key.clone(), slot.clone()));
        }
        let Slot { accepted, register, lineage, .. } = slot;
        let promise = Message::Promise { key, ballot, incarnation, accepted, register, lineage };
        self.send(from, promise);
    }

    fn on_accept(
        &mut self,
        from: NodeId,
        key: Key,
        ballot: Ballot,
        (register, lineage): (crate::Register, Lineage),
        quorum: &[(NodeId, Incarnation)],
    ) {
        let Some(incarnation) = self.check_vote(from, &key, ballot) else { return };
        if !self.quorum_is_current(incarnation, quorum) {
            return self.reject(from, key, ballot, Rejection::StaleIncarnation);
        }
        let slot = self.state.slot(&key).cloned().unwrap_or_default();
        if ballot < slot.promised && ballot != slot.accepted && !mutated(Mutant::AcceptBelowPromise)
        {
            return self.reject(from, key, ballot, Rejection::Promised(slot.promised));
        }
        if ballot != slot.accepted && !mutated(Mutant::AcceptNotSaved) {
            // Accepting b also promises b's successor: the proposer's next write of this key
            // can skip the prepare (the fast path). `check_vote` refused a ballot without one.
            let successor = ballot.successor().filter(|_| !mutated(Mutant::NoSuccessorPromise));
            let promised = successor.unwrap_or(ballot).max(slot.promised);
            let slot = Slot { promised, accepted: ballot, register, lineage };
            self.write(Record::Slot(key.clone(), slot));
        }
        let fences = self.fence_list();
        self.send(from, Message::Accepted { key, ballot, incarnation, fences });
    }

    /// Whether a prepare or accept of configuration `version` may be voted on here: not if this
    /// acceptor runs a newer configuration, or is not in its own (it was removed). Otherwise
    /// the refusal and this acceptor's configuration are queued for the proposer.
    fn configuration_is_current(
        &mut self,
        from: NodeId,
        key: &Key,
        ballot: Ballot,
        version: u64,
    ) -> bool {
        let member = self.config.acceptors.contains(&self.config.id);
        if (version >= self.config.version || mutated(Mutant::StaleConfigurationVoted)) && member {
            return true;
        }
        let current = self.config.version;
        self.reject(from, key.clone(), ballot, Rejection::StaleConfiguration(current));
        self.send(from, Message::Configure { configuration: self.configuration() });
        false
    }

    /// The incarnation to vote in, or `None` after queuing the reason for refusing.
    fn check_vote(&mut self, from: NodeId, key: &Key, ballot: Ballot) -> Option<Incarnation> {
        if ballot.proposer.node != from || ballot.successor().is_none() || ballot == Ballot::ZERO {
            self.reject(from, key.clone(), ballot, Rejection::BadBallot);
            return None;
        }
        match self.phase {
            Phase::Active(incarnation) => Some(incarnation),
            _ if mutated(Mutant::RecoveringVotes) => Some(Incarnation::default()),
            _ => {
                self.reject(from, key.clone(), ballot, Rejection::Recovering);
                None
            }
        }
    }

    /// Whether every promise an accept counted comes from this epoch and from an incarnation
    /// not since replaced.
    fn quorum_is_current(&self, mine: Incarnation, quorum: &[(NodeId, Incarnation)]) -> bool {
        let fences = &self.state.meta().fences;
        let fences = if mutated(Mutant::FenceCheckOff) { &BTreeMap::new() } else { fences };
        quorum.iter().all(|(node, incarnation)| {
            if *node == self.config.id {
                *incarnation == mine || mutated(Mutant::OwnIncarnationUnchecked)
            } else {
                incarnation.epoch == mine.epoch
                    && fences.get(node).is_none_or(|fence| incarnation >= fence)
            }
        })
    }

    /// A message shows an epoch newer than this acceptor's: its own is over (a majority found
    /// itself without state and founded a new one). A voting acceptor forgets everything and
    /// rejoins the new epoch; one without state only raises the epoch it will accept.
    fn learn_epoch(&mut self, now: Instant, epoch: Epoch) {
        if epoch <= self.epoch() || mutated(Mutant::NewerEpochIgnored) {
            return;
        }
        let meta = Meta { epoch, ..self.state.meta().clone() };
        if let Phase::Active(incarnation) = self.phase {
            tracing::info!(acceptor = %self.config.id, %incarnation, %epoch, "a newer epoch: rejoining it");
            let meta = Meta {
                incarnation: None,
                fences: BTreeMap::new(),
                epoch,
                configuration: self.state.meta().configuration.clone(),
            };
            // Not voting from here on: the old epoch is over, and the rejoin writes the
            // incarnation only after a clean copy.
            self.write(Record::Meta(meta));
            self.start_rejoin(now);
        } else {
            self.write(Record::Meta(meta));
            self.promise = self.promise.filter(|(promised, _)| *promised >= epoch);
            if matches!(self.phase, Phase::Founding { epoch: founding, .. } if founding < epoch) {
                self.start_rejoin(now);
            }
        }
    }

    fn on_query(&mut self, from: NodeId, attempt: u64) -> Result<(), Ignored> {
        self.check_peer(from)?;
        let known = self.state.meta().fences.get(&from).copied().unwrap_or_default();
        let standing = self.standing();
        self.send(from, Message::QueryReply { attempt, known, standing });
        Ok(())
    }

    /// Records the fence durably, then sends a page of slots with this acceptor's fences and
    /// standing. Answered in any phase (fences must stick everywhere they land), but the
    /// rejoining acceptor copies only the pages of voting acceptors.
    fn on_fence(
        &mut self,
        from: NodeId,
        attempt: u64,
        incarnation: Incarnation,
        after: Option<Key>,
    ) -> Result<(), Ignored> {
        let meta = self.state.meta();
        let newer = meta.fences.get(&from).is_none_or(|fence| *fence < incarnation);
        if newer && !mutated(Mutant::FenceNotSaved) {
            let mut meta = meta.clone();
            meta.fences.insert(from, incarnation);
            self.write(Record::Meta(meta));
        }
        let (slots, next) = self.page(after.as_ref());
        let (standing, fences) = (self.standing(), self.fence_list());
        self.send(from, Message::FenceReply { attempt, slots, next, standing, fences });
        Ok(())
    }

    /// Founding, step 1, at another acceptor: one without state promises an epoch newer than
    /// any it knows (a founder only one that beats its own), durably, and draws the number a
    /// start must name.
    fn on_propose_epoch(
        &mut self,
        from: NodeId,
        attempt: u64,
        epoch: Epoch,
    ) -> Result<(), Ignored> {
        self.check_peer(from)?;
        let willing = match &self.phase {
            Phase::Active(_) => mutated(Mutant::VoterPromisesEpoch),
            Phase::Founding { epoch: own, .. } => (epoch, from) > (*own, self.config.id),
            Phase::Querying { .. } | Phase::Fencing { .. } => epoch > self.state.meta().epoch,
        };
        let mut promised_in = None;
        if willing {
            let meta = Meta { epoch, ..self.state.meta().clone() };
            self.write(Record::Meta(meta));
            let number: u64 = self.rng.random();
            self.promise = Some((epoch, number));
            self.promise_aged = false;
            promised_in = Some(number);
            if !matches!(self.phase, Phase::Querying { .. }) {
                // A founding or a rejoin into an older epoch is over; keep asking meanwhile.
                let attempt = self.rng.random();
                self.phase = Phase::Querying { attempt, answers: BTreeMap::new() };
            }
        }
        let standing = self.standing();
        self.send(from, Message::EpochReply { attempt, epoch, promised_in, standing });
        Ok(())
    }

    /// Founding, step 2, at another acceptor: it joins, empty, if this is the promise it holds.
    fn on_start_epoch(
        &mut self,
        now: Instant,
        epoch: Epoch,
        members: &[(NodeId, u64)],
    ) -> Result<(), Ignored> {
        let mine = members.iter().find(|(node, _)| *node == self.config.id).map(|(_, n)| *n);
        let holds = matches!(self.phase, Phase::Querying { .. })
            && mine.is_some()
            && self.promise == mine.map(|number| (epoch, number))
            && epoch >= self.state.meta().epoch;
        if !holds {
            self.learn_epoch(now, epoch);
            if matches!(self.phase, Phase::Querying { .. }) {
                // An epoch was founded without this acceptor: ask again now, to rejoin it.
                self.start_rejoin(now);
            }
            return Err(Ignored::StaleAttempt);
        }
        self.found(epoch);
        Ok(())
    }

    fn on_query_reply(
        &mut self,
        now: Instant,
        from: NodeId,
        answered: u64,
        known_of_me: Incarnation,
        standing: Standing,
    ) -> Result<(), Ignored> {
        self.check_peer(from)?;
        let Phase::Querying { attempt, answers } = &mut self.phase else {
            return Err(Ignored::StaleAttempt);
        };
        if *attempt != answered {
            return Err(Ignored::StaleAttempt);
        }
        answers.insert(from, (known_of_me, standing));
        self.decide_rejoin(now);
        Ok(())
    }

    /// With the answers so far: rejoin from enough voting acceptors of the newest epoch, or,
    /// if a majority has no state and founding is allowed, found a new epoch.
    fn decide_rejoin(&mut self, now: Instant) {
        let Phase::Querying { answers, .. } = &self.phase else { return };
        let answers = answers.clone();
        let floor = self.state.meta().epoch;
        let mut voters_by_epoch: BTreeMap<Epoch, usize> = BTreeMap::new();
        for (_, standing) in answers.values() {
            if let Standing::Voting(incarnation) = standing {
                *voters_by_epoch.entry(incarnation.epoch).or_default() += 1;
            }
        }
        // An epoch a majority votes in is the cluster's, whatever this acceptor promised: no
        // epoch it promised can still be founded (a founding needs a majority without state,
        // and a voter never promises). Otherwise, the newest epoch not below its promises.
        let majority_of_set = majority(self.set_size());
        let established = voters_by_epoch.iter().find(|(_, n)| **n >= majority_of_set);
        let newest = voters_by_epoch.keys().next_back().filter(|epoch| **epoch >= floor);
        if let Some(&epoch) = established.map(|(epoch, _)| epoch).or(newest) {
            // Voters of an older epoch (a founder that lost the race) learn of the newer one,
            // or nobody might ever tell them before a proposer writes.
            let stale: Vec<NodeId> = answers
                .iter()
                .filter(|(_, (_, s))| matches!(s, Standing::Voting(i) if i.epoch < epoch))
                .map(|(node, _)| *node)
                .collect();
            for node in stale {
                self.send(node, Message::StartEpoch { epoch, members: Vec::new() });
            }
            let voters = answers
                .values()
                .filter(|(_, s)| matches!(s, Standing::Voting(i) if i.epoch == epoch))
                .count();
            let voters =
                if mutated(Mutant::NonVotersCountForRejoin) { answers.len() } else { voters };
            if voters >= self.rejoin_quorum() {
                let life = answers
                    .values()
                    .map(|(known, _)| *known)
                    .filter(|known| known.epoch == epoch)
                    .map(|known| known.life)
                    .max()
                    .unwrap_or(0);
                let life = if mutated(Mutant::IncarnationsNeverGrow) { 0 } else { life };
                return self.start_fencing(now, Incarnation::new(epoch, life + 1));
            }
        }
        let without_state =
            1 + answers.values().filter(|(_, s)| matches!(s, Standing::Recovering { .. })).count();
        let may_found = self.may_found || self.config.recovery == Recovery::NewEpoch;
        let waiting_on_founder = self.promise.is_some() && !self.promise_aged;
        if may_found && !waiting_on_founder && without_state >= majority(self.set_size()) {
            let seen = answers.values().map(|(_, s)| s.epoch().number).max().unwrap_or(0);
            let number = seen.max(floor.number).saturating_add(1).max(self.config.epoch_floor);
            let epoch = Epoch { number, nonce: self.rng.random() };
            self.start_founding(now, epoch);
        }
    }

    fn start_founding(&mut self, now: Instant, epoch: Epoch) {
        let meta = Meta { epoch, ..self.state.meta().clone() };
        self.write(Record::Meta(meta));
        let attempt = self.rng.random();
        self.promise = None;
        self.phase = Phase::Founding { attempt, epoch, promised: BTreeMap::new() };
        if majority(self.set_size()) <= 1 {
            return self.found_with_promisers(epoch, BTreeMap::new());
        }
        for peer in self.others() {
            self.send(peer, Message::ProposeEpoch { attempt, epoch });
        }
        self.retry_at = Some(now + self.config.rejoin_retry);
    }

    fn on_epoch_reply(
        &mut self,
        now: Instant,
        from: NodeId,
        answered: u64,
        epoch: Epoch,
        promised_in: Option<u64>,
        standing: Standing,
    ) -> Result<(), Ignored> {
        self.check_peer(from)?;
        let needed = majority(self.set_size());
        let Phase::Founding { attempt, epoch: founding, promised } = &mut self.phase else {
            return Err(Ignored::StaleAttempt);
        };
        if *attempt != answered || *founding != epoch {
            return Err(Ignored::StaleAttempt);
        }
        match promised_in {
            Some(number) => {
                promised.insert(from, number);
                let founder = 1 + usize::from(mutated(Mutant::FoundingWithoutMajority));
                if promised.len() + founder >= needed {
                    let promised = std::mem::take(promised);
                    self.found_with_promisers(epoch, promised);
                }
            }
            // A voting acceptor, or a newer promise: founding this epoch may fail; the retry
            // asks again and sees what is there then. Only an epoch someone votes in is news.
            None => {
                if let Standing::Voting(theirs) = standing {
                    self.learn_epoch(now, theirs.epoch);
                }
            }
        }
        Ok(())
    }

    /// The founder's majority promised: it joins the epoch and tells the promisers to. The
    /// other acceptors hear of it too: one that founded an older epoch alone (its promisers
    /// went on to this one) forgets it at once, rather than vote in it until a proposer tells.
    fn found_with_promisers(&mut self, epoch: Epoch, promised: BTreeMap<NodeId, u64>) {
        let members: Vec<(NodeId, u64)> = promised.into_iter().collect();
        if !self.found(epoch) {
            return;
        }
        for peer in self.others() {
            let members = if members.iter().any(|(node, _)| *node == peer) {
                members.clone()
            } else {
                Vec::new()
            };
            self.send(peer, Message::StartEpoch { epoch, members });
        }
    }

    /// Joins `epoch` as one of its founders: empty, life 0, no fences. Whether it did (not if
    /// it knows a newer epoch).
    fn found(&mut self, epoch: Epoch) -> bool {
        if epoch < self.state.meta().epoch {
            return false; // a newer epoch is known: this one can no longer be the cluster's
        }
        let incarnation = Incarnation::new(epoch, 0);
        let meta = Meta {
            incarnation: Some(incarnation),
            fences: BTreeMap::new(),
            epoch,
            configuration: self.state.meta().configuration.clone(),
        };
        self.write(Record::ClearSlots);
        self.write(Record::Meta(meta));
        tracing::info!(acceptor = %self.config.id, %incarnation, "founded a new epoch");
        self.phase = Phase::Active(incarnation);
        self.promise = None;
        self.may_found = false;
        self.retry_at = None;
        true
    }

    fn on_fence_reply(
        &mut self,
        now: Instant,
        from: NodeId,
        answered: u64,
        (slots, next): (Vec<(Key, Slot)>, Option<Key>),
        standing: Standing,
        their_fences: Vec<(NodeId, Incarnation)>,
    ) -> Result<(), Ignored> {
        self.check_peer(from)?;
        let needed = self.rejoin_quorum();
        let others = self.others().len();
        let me = self.config.id;
        let Phase::Fencing { attempt, incarnation, cursors, done, excluded, merged, fences } =
            &mut self.phase
        else {
            return Err(Ignored::StaleAttempt);
        };
        if *attempt != answered || done.contains(&from) || excluded.contains(&from) {
            return Err(Ignored::StaleAttempt);
        }
        match standing {
            Standing::Voting(theirs) if theirs.epoch == incarnation.epoch => {
                raise(fences, from, theirs);
            }
            Standing::Recovering { .. } if mutated(Mutant::NonVoterPagesCopied) => {}
            // Of a newer epoch: this rejoin's epoch is over; start over from the question.
            Standing::Voting(theirs) if theirs.epoch > incarnation.epoch => {
                self.learn_epoch(now, theirs.epoch);
                if !matches!(self.phase, Phase::Querying { .. }) {
                    self.start_rejoin(now);
                }
                return Err(Ignored::StaleAttempt);
            }
            // Without state (it may be rejoining too), or of an older epoch: its pages do not
            // count. The rejoin goes on while enough others may still answer as voters.
            _ => {
                cursors.remove(&from);
                excluded.insert(from);
                if others - excluded.len() < needed {
                    self.start_rejoin(now);
                }
                return Err(Ignored::StaleAttempt);
            }
        }
        let their_fences =
            their_fences.into_iter().filter(|_| !mutated(Mutant::RejoinCopiesNoFences));
        for (node, fence) in their_fences {
            if node != me {
                raise(fences, node, fence);
            }
        }
        for (key, slot) in slots.into_iter().filter(|_| !mutated(Mutant::RejoinCopiesNoSlots)) {
            merge_slot(merged.entry(key).or_default(), slot);
        }
        let (attempt, incarnation) = (*attempt, *incarnation);
        match next {
            Some(after) => {
                cursors.insert(from, Some(after.clone()));
                self.send(from, Message::Fence { attempt, incarnation, after: Some(after) });
            }
            None => {
                done.insert(from);
                if done.len() >= needed {
                    self.finish_rejoin();
                }
            }
        }
        Ok(())
    }

    fn start_rejoin(&mut self, now: Instant) {
        let attempt = self.rng.random();
        self.phase = Phase::Querying { attempt, answers: BTreeMap::new() };
        for peer in self.others() {
            self.send(peer, Message::Query { attempt });
        }
        self.retry_at = Some(now + self.config.rejoin_retry);
        // With nobody to ask (a set of one), only founding can help.
        self.decide_rejoin(now);
    }

    fn start_fencing(&mut self, now: Instant, incarnation: Incarnation) {
        let attempt = self.rng.random();
        self.promise = None;
        self.phase = Phase::Fencing {
            attempt,
            incarnation,
            cursors: BTreeMap::new(),
            done: BTreeSet::new(),
            excluded: BTreeSet::new(),
            merged: BTreeMap::new(),
            fences: BTreeMap::new(),
        };
        for peer in self.others() {
            self.send(peer, Message::Fence { attempt, incarnation, after: None });
        }
        self.retry_at = Some(now + self.config.rejoin_retry);
    }

    /// Writes the copied slots and fences, then the incarnation (last: see the storage docs),
    /// then votes (its votes' replies wait for those writes).
    fn finish_rejoin(&mut self) {
        let phase = std::mem::replace(&mut self.phase, Phase::Active(Incarnation::default()));
        let Phase::Fencing { incarnation, merged, fences, .. } = phase else {
            self.phase = phase;
            return;
        };
        self.write_rejoin(incarnation, merged, fences);
        self.phase = Phase::Active(incarnation);
        self.retry_at = None;
        self.may_found = false;
    }

    fn write_rejoin(
        &mut self,
        incarnation: Incarnation,
        merged: BTreeMap<Key, Slot>,
        copied_fences: BTreeMap<NodeId, Incarnation>,
    ) {
        // Whatever this store still holds is from an earlier life: only the copy counts.
        self.write(Record::ClearSlots);
        for (key, slot) in merged {
            self.write(Record::Slot(key, slot));
        }
        let mut fences = self.state.meta().fences.clone();
        fences.retain(|_, fence| fence.epoch == incarnation.epoch);
        for (node, fence) in copied_fences {
            raise(&mut fences, node, fence);
        }
        let configuration = self.state.meta().configuration.clone();
        let meta = Meta {
            incarnation: Some(incarnation),
            fences,
            epoch: incarnation.epoch,
            configuration,
        };
        self.write(Record::Meta(meta));
    }

    /// Voting answers needed from the others to rejoin: enough to meet, among the others,
    /// every majority that counted this acceptor (`n - majority + 1` of the `n - 1` others),
    /// and so also every earlier rejoin's fences. Never 0: an acceptor alone cannot rejoin.
    fn rejoin_quorum(&self) -> usize {
        let n = self.set_size();
        let needed = n + 1 - majority(n) - usize::from(mutated(Mutant::RejoinQuorumTooSmall));
        needed.clamp(1, self.others().len().max(1))
    }

    /// The size of the acceptor set.
    fn set_size(&self) -> usize {
        let mut all = self.config.acceptors.clone();
        all.sort();
        all.dedup();
        all.len().max(1)
    }

    /// A page of this acceptor's slots after `after`, and where the next page starts.
    fn page(&self, after: Option<&Key>) -> (Vec<(Key, Slot)>, Option<Key>) {
        let limit = self.config.rejoin_page_slots.max(1);
        let slots = self.state.scan(after, limit);
        let next = if slots.len() == limit { slots.last().map(|(k, _)| k.clone()) } else { None };
        (slots, next)
    }

    fn standing(&self) -> Standing {
        match self.phase {
            Phase::Active(incarnation) => Standing::Voting(incarnation),
            _ => Standing::Recovering { epoch: self.state.meta().epoch },
        }
    }

    fn fence_list(&self) -> Vec<(NodeId, Incarnation)> {
        self.state.meta().fences.iter().map(|(node, fence)| (*node, *fence)).collect()
    }

    fn others(&self) -> Vec<NodeId> {
        let mut others: Vec<_> =
            self.config.acceptors.iter().copied().filter(|n| *n != self.config.id).collect();
        others.sort();
        others.dedup();
        others
    }

    fn check_peer(&self, from: NodeId) -> Result<(), Ignored> {
        if from != self.config.id && self.config.acceptors.contains(&from) {
            Ok(())
        } else {
            Err(Ignored::NotAnAcceptor(from))
        }
    }

    fn reject(&mut self, to: NodeId, key: Key, ballot: Ballot, reason: Rejection) {
        self.send(to, Message::Rejected { key, ballot, reason });
    }

    /// Queues `message`, behind every write asked for so far.
    fn send(&mut self, to: NodeId, message: Message) {
        if self.outbox.len() >= OUTBOX_LIMIT {
            self.outbox.pop_front();
        }
        self.outbox.push_back((self.last_write, to, message));
    }

    /// Changes the state in memory now, and asks for the write ([`Acceptor::poll_persist`]).
    fn write(&mut self, record: Record) {
        // Applying to memory cannot fail.
        let _ = self.state.write(std::slice::from_ref(&record));
        self.last_write += 1;
        self.unwritten.push_back((self.last_write, record));
    }
}

/// Records `incarnation` for `node` unless a newer one is known.
fn raise(fences: &mut BTreeMap<NodeId, Incarnation>, node: NodeId, incarnation: Incarnation) {
    let fence = fences.entry(node).or_default();
    *fence = (*fence).max(incarnation);
}

/// Folds `other` into `into`: the higher promise, and the value with the higher ballot.
fn merge_slot(into: &mut Slot, other: Slot) {
    let merge = if mutated(Mutant::MergedPromiseMin) { Ballot::min } else { Ballot::max };
    into.promised = merge(into.promised, other.promised);
    if other.accepted > into.accepted || mutated(Mutant::MergedValueNotHighest) {
        into.accepted = other.accepted;
        into.register = other.register;
        into.lineage = other.lineage;
    }
}
