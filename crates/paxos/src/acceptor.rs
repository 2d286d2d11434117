//! The acceptor: votes on ballots per key, and rejoins after losing its state.
//!
//! ```text
//!  Prepare(k, b) ──► b ≥ promised(k)? ── save slot ──► Promise(k, b, incarnation, accepted)
//!                          └─ no ───────────────────► Rejected(Promised(promised))
//!  Accept(k, b, v, quorum) ──► quorum's incarnations current? b ≥ promised(k)?
//!                          └─ yes: accepted := (b, v), promised := b+1, save ──► Accepted
//! ```
//!
//! Every vote is saved through [`Storage`] before the reply is queued, so a reply that left
//! always describes a durable state. An acceptor whose store has no incarnation rejoins first
//! (see the crate docs, "Losing state"): it queries the others for the incarnation of it they
//! know, picks a higher one, fences a majority of the others with it while copying their slots,
//! saves the merge, and only then votes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use thiserror::Error;

use crate::ballot::{Ballot, Incarnation, NodeId};
use crate::membership::majority;
use crate::message::{Message, Rejection};
use crate::register::Key;
use crate::storage::{Meta, Slot, Storage};

/// The most messages an acceptor holds for the driver; past it the oldest is dropped, which
/// Paxos tolerates like any message loss. A driver that drains after every call never gets there.
pub(crate) const OUTBOX_LIMIT: usize = 4096;

/// How an acceptor is set up.
#[derive(Clone, Debug)]
pub struct AcceptorConfig {
    /// This acceptor.
    pub id: NodeId,
    /// The acceptor set, this one included: whom to rejoin from.
    pub acceptors: Vec<NodeId>,
    /// How long to wait for rejoin answers before asking again.
    pub rejoin_retry: Duration,
    /// Slots per page of the state transfer while rejoining.
    pub rejoin_page_slots: usize,
    /// Seeds the random attempt numbers of rejoins.
    pub seed: u64,
}

impl AcceptorConfig {
    /// Defaults: retry every 100 ms, pages of 256 slots.
    pub fn new(id: NodeId, acceptors: Vec<NodeId>, seed: u64) -> Self {
        AcceptorConfig {
            id,
            acceptors,
            rejoin_retry: Duration::from_millis(100),
            rejoin_page_slots: 256,
            seed,
        }
    }
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
    /// The storage failed to record a fence, so the fence was not answered.
    #[error("storage failed: {0}")]
    Storage(String),
}

/// Where the acceptor is in its life.
#[derive(Debug)]
enum Phase {
    /// Voting, in this incarnation.
    Active(Incarnation),
    /// Rejoin step 1: collecting the incarnations of this acceptor that the others know.
    Querying { attempt: u64, known: BTreeMap<NodeId, Incarnation> },
    /// Rejoin step 2: fencing the others with `incarnation` and copying their slots.
    Fencing {
        attempt: u64,
        incarnation: Incarnation,
        /// Peers still sending pages, with the key to resume after.
        cursors: BTreeMap<NodeId, Option<Key>>,
        /// Peers whose last page arrived.
        done: BTreeSet<NodeId>,
        merged: BTreeMap<Key, Slot>,
    },
}

/// An acceptor over a store `S`. Feed it messages and timeouts; drain
/// [`poll_transmit`](Acceptor::poll_transmit) after each call.
#[derive(Debug)]
pub struct Acceptor<S> {
    config: AcceptorConfig,
    storage: S,
    phase: Phase,
    outbox: VecDeque<(NodeId, Message)>,
    rng: SmallRng,
    retry_at: Option<Instant>,
}

impl<S: Storage> Acceptor<S> {
    /// An acceptor over `storage`. If the store has an incarnation it votes at once; otherwise
    /// it starts rejoining (and its first messages are already queued).
    pub fn new(now: Instant, config: AcceptorConfig, storage: S) -> Self {
        let rng = SmallRng::seed_from_u64(config.seed);
        let mut acceptor = Acceptor {
            phase: Phase::Querying { attempt: 0, known: BTreeMap::new() },
            config,
            storage,
            outbox: VecDeque::new(),
            rng,
            retry_at: None,
        };
        match acceptor.storage.meta().incarnation {
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

    /// The store, e.g. to list keys for the rewrite step of a membership change.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Gives the store back (a simulated crash keeps a durable one).
    pub fn into_storage(self) -> S {
        self.storage
    }

    /// Replaces the acceptor set (see [`membership`](crate::membership)).
    pub fn set_acceptors(&mut self, acceptors: Vec<NodeId>) {
        self.config.acceptors = acceptors;
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<(NodeId, Message)> {
        self.outbox.pop_front()
    }

    /// When [`handle_timeout`](Acceptor::handle_timeout) wants to run (only while rejoining).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Time passed: while rejoining, asks again those that have not answered.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.retry_at.is_none_or(|at| now < at) {
            return;
        }
        self.retry_at = Some(now + self.config.rejoin_retry);
        let others = self.others();
        match &self.phase {
            Phase::Active(_) => self.retry_at = None,
            Phase::Querying { attempt, known } => {
                let (attempt, missing) = (*attempt, missing(&others, |n| known.contains_key(n)));
                for peer in missing {
                    self.send(peer, Message::Query { attempt });
                }
            }
            Phase::Fencing { attempt, incarnation, cursors, done, .. } => {
                let (attempt, incarnation) = (*attempt, *incarnation);
                let pending: Vec<_> = others
                    .iter()
                    .filter(|n| !done.contains(n))
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
            Message::Prepare { key, ballot } => {
                self.on_prepare(from, key, ballot);
                Ok(())
            }
            Message::Accept { key, ballot, register, base, quorum } => {
                self.on_accept(from, key, ballot, (register, base), &quorum);
                Ok(())
            }
            Message::Query { attempt } => self.on_query(from, attempt),
            Message::Fence { attempt, incarnation, after } => {
                self.on_fence(from, attempt, incarnation, after)
            }
            Message::QueryReply { attempt, known } => {
                self.on_query_reply(now, from, attempt, known)
            }
            Message::FenceReply { attempt, slots, next } => {
                self.on_fence_reply(now, from, attempt, slots, next)
            }
            _ => Err(Ignored::NotForAcceptor),
        }
    }

    fn on_prepare(&mut self, from: NodeId, key: Key, ballot: Ballot) {
        let Some(incarnation) = self.check_vote(from, &key, ballot) else { return };
        let mut slot = self.storage.slot(&key).cloned().unwrap_or_default();
        if ballot < slot.promised {
            return self.reject(from, key, ballot, Rejection::Promised(slot.promised));
        }
        if ballot > slot.promised {
            slot.promised = ballot;
            if self.storage.save_slot(&key, &slot).is_err() {
                return self.reject(from, key, ballot, Rejection::Storage);
            }
        }
        let Slot { accepted, register, base, .. } = slot;
        self.send(from, Message::Promise { key, ballot, incarnation, accepted, register, base });
    }

    fn on_accept(
        &mut self,
        from: NodeId,
        key: Key,
        ballot: Ballot,
        (register, base): (crate::Register, Ballot),
        quorum: &[(NodeId, Incarnation)],
    ) {
        let Some(incarnation) = self.check_vote(from, &key, ballot) else { return };
        if !self.quorum_is_current(incarnation, quorum) {
            return self.reject(from, key, ballot, Rejection::StaleIncarnation);
        }
        let slot = self.storage.slot(&key).cloned().unwrap_or_default();
        if ballot < slot.promised && ballot != slot.accepted {
            return self.reject(from, key, ballot, Rejection::Promised(slot.promised));
        }
        if ballot != slot.accepted {
            // Accepting b also promises b's successor: the proposer's next write of this key
            // can skip the prepare (the fast path). `check_vote` refused a ballot without one.
            let promised = ballot.successor().unwrap_or(ballot).max(slot.promised);
            let slot = Slot { promised, accepted: ballot, register, base };
            if self.storage.save_slot(&key, &slot).is_err() {
                return self.reject(from, key, ballot, Rejection::Storage);
            }
        }
        self.send(from, Message::Accepted { key, ballot, incarnation });
    }

    /// The incarnation to vote in, or `None` after queuing the reason for refusing.
    fn check_vote(&mut self, from: NodeId, key: &Key, ballot: Ballot) -> Option<Incarnation> {
        if ballot.proposer.node != from || ballot.successor().is_none() || ballot == Ballot::ZERO {
            self.reject(from, key.clone(), ballot, Rejection::BadBallot);
            return None;
        }
        match self.phase {
            Phase::Active(incarnation) => Some(incarnation),
            _ => {
                self.reject(from, key.clone(), ballot, Rejection::Recovering);
                None
            }
        }
    }

    /// Whether every promise an accept counted comes from an incarnation not since replaced.
    fn quorum_is_current(&self, mine: Incarnation, quorum: &[(NodeId, Incarnation)]) -> bool {
        let fences = &self.storage.meta().fences;
        quorum.iter().all(|(node, incarnation)| {
            if *node == self.config.id {
                *incarnation == mine
            } else {
                fences.get(node).is_none_or(|fence| incarnation >= fence)
            }
        })
    }

    fn on_query(&mut self, from: NodeId, attempt: u64) -> Result<(), Ignored> {
        self.check_peer(from)?;
        let known = self.storage.meta().fences.get(&from).copied().unwrap_or_default();
        self.send(from, Message::QueryReply { attempt, known });
        Ok(())
    }

    /// Records the fence durably, then sends a page of slots. Answered in any phase, so that a
    /// whole cluster starting empty can rejoin from itself.
    fn on_fence(
        &mut self,
        from: NodeId,
        attempt: u64,
        incarnation: Incarnation,
        after: Option<Key>,
    ) -> Result<(), Ignored> {
        self.check_peer(from)?;
        let meta = self.storage.meta();
        if meta.fences.get(&from).is_none_or(|fence| *fence < incarnation) {
            let mut meta = meta.clone();
            meta.fences.insert(from, incarnation);
            self.storage.save_meta(&meta).map_err(|e| Ignored::Storage(e.to_string()))?;
        }
        let limit = self.config.rejoin_page_slots.max(1);
        let slots = self.storage.scan(after.as_ref(), limit);
        let next = if slots.len() == limit { slots.last().map(|(k, _)| k.clone()) } else { None };
        self.send(from, Message::FenceReply { attempt, slots, next });
        Ok(())
    }

    fn on_query_reply(
        &mut self,
        now: Instant,
        from: NodeId,
        answered: u64,
        known_of_me: Incarnation,
    ) -> Result<(), Ignored> {
        self.check_peer(from)?;
        let needed = self.rejoin_quorum();
        let Phase::Querying { attempt, known } = &mut self.phase else {
            return Err(Ignored::StaleAttempt);
        };
        if *attempt != answered {
            return Err(Ignored::StaleAttempt);
        }
        known.insert(from, known_of_me);
        if known.len() >= needed {
            let highest = known.values().max().copied().unwrap_or_default();
            self.start_fencing(now, Incarnation(highest.0 + 1));
        }
        Ok(())
    }

    fn on_fence_reply(
        &mut self,
        now: Instant,
        from: NodeId,
        answered: u64,
        slots: Vec<(Key, Slot)>,
        next: Option<Key>,
    ) -> Result<(), Ignored> {
        self.check_peer(from)?;
        let needed = self.rejoin_quorum();
        let Phase::Fencing { attempt, incarnation, cursors, done, merged } = &mut self.phase else {
            return Err(Ignored::StaleAttempt);
        };
        if *attempt != answered || done.contains(&from) {
            return Err(Ignored::StaleAttempt);
        }
        for (key, slot) in slots {
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
                    self.finish_rejoin(now);
                }
            }
        }
        Ok(())
    }

    fn start_rejoin(&mut self, now: Instant) {
        let attempt = self.rng.random();
        self.phase = Phase::Querying { attempt, known: BTreeMap::new() };
        if self.rejoin_quorum() == 0 {
            return self.start_fencing(now, Incarnation(1));
        }
        for peer in self.others() {
            self.send(peer, Message::Query { attempt });
        }
        self.retry_at = Some(now + self.config.rejoin_retry);
    }

    fn start_fencing(&mut self, now: Instant, incarnation: Incarnation) {
        let attempt = self.rng.random();
        self.phase = Phase::Fencing {
            attempt,
            incarnation,
            cursors: BTreeMap::new(),
            done: BTreeSet::new(),
            merged: BTreeMap::new(),
        };
        if self.rejoin_quorum() == 0 {
            return self.finish_rejoin(now);
        }
        for peer in self.others() {
            self.send(peer, Message::Fence { attempt, incarnation, after: None });
        }
        self.retry_at = Some(now + self.config.rejoin_retry);
    }

    /// Saves the merged slots, then the incarnation (last: see the storage docs), then votes.
    fn finish_rejoin(&mut self, now: Instant) {
        let phase = std::mem::replace(&mut self.phase, Phase::Active(Incarnation(0)));
        let Phase::Fencing { incarnation, merged, .. } = phase else {
            self.phase = phase;
            return;
        };
        match self.save_rejoin(incarnation, merged) {
            Ok(()) => {
                self.phase = Phase::Active(incarnation);
                self.retry_at = None;
            }
            // Still not voting: try the whole rejoin again.
            Err(()) => self.start_rejoin(now),
        }
    }

    fn save_rejoin(
        &mut self,
        incarnation: Incarnation,
        merged: BTreeMap<Key, Slot>,
    ) -> Result<(), ()> {
        for (key, mut slot) in merged {
            if let Some(local) = self.storage.slot(&key) {
                merge_slot(&mut slot, local.clone());
            }
            self.storage.save_slot(&key, &slot).map_err(drop)?;
        }
        let meta = Meta { incarnation: Some(incarnation), ..self.storage.meta().clone() };
        self.storage.save_meta(&meta).map_err(drop)
    }

    /// Answers needed from the others to rejoin: enough to meet every majority of the set
    /// outside this acceptor (a majority of the whole set, capped by how many others there are).
    fn rejoin_quorum(&self) -> usize {
        let others = self.others().len();
        majority(others + 1).min(others)
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

    fn send(&mut self, to: NodeId, message: Message) {
        if self.outbox.len() >= OUTBOX_LIMIT {
            self.outbox.pop_front();
        }
        self.outbox.push_back((to, message));
    }
}

/// The peers in `all` for which `answered` is false.
fn missing(all: &[NodeId], answered: impl Fn(&NodeId) -> bool) -> Vec<NodeId> {
    all.iter().filter(|n| !answered(n)).copied().collect()
}

/// Folds `other` into `into`: the higher promise, and the value with the higher ballot.
fn merge_slot(into: &mut Slot, other: Slot) {
    into.promised = into.promised.max(other.promised);
    if other.accepted > into.accepted {
        into.accepted = other.accepted;
        into.register = other.register;
        into.base = other.base;
    }
}
