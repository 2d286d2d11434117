//! The proposer: runs changes on keys through rounds of prepare and accept.
//!
//! ```text
//!  propose(k, f) ──► queue of k ──► fast ballot cached? ──yes──────────────┐
//!                                        └─no─► Prepare(k, b) to all       │
//!                     majority of Promise ──► v := f(highest accepted)     │
//!                                             Accept(k, b, v) to all ◄─────┘ (v := f(cached))
//!                     majority of Accepted ──► complete; cache (b+1, v)
//!  Rejected(Promised) ──► back off (seeded, random, growing) or forward to k's designated proposer
//!  round timeout      ──► new round;  deadline ──► NoQuorum / Timeout
//! ```
//!
//! One round runs per key at a time; further changes to the key wait in its queue, in order.
//! A proposer that completed a round on a key holds a majority of promises for the next ballot
//! (every `Accepted` carries one), so its next change to that key skips the prepare: one round
//! trip instead of two, while nobody else writes the key.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use thiserror::Error;

use crate::core::membership::{Configuration, majority};
use crate::core::mutants::{Mutant, mutated};
use crate::core::{
    Ballot, Epoch, Incarnation, Lineage, Message, NodeId, ProposerId, Rejection, RequestId,
};
use crate::error::{PaxosError, ProposeError};
use crate::register::{Change, Key, Outcome, Register};
use crate::stats::{Counters, Event, PaxosStats};

/// The most messages a proposer holds for the driver; past it the oldest is dropped, which
/// Paxos tolerates like any message loss. A driver that drains after every call never gets there.
pub(crate) const OUTBOX_LIMIT: usize = 16_384;

/// How a proposer is set up.
#[derive(Clone, Debug)]
pub struct ProposerConfig {
    /// This proposer (node and run).
    pub id: ProposerId,
    /// The acceptor set; a quorum is a majority of it.
    pub acceptors: Vec<NodeId>,
    /// The version of that set's configuration (see [`Configuration`]).
    pub version: u64,
    /// The proposers a key's designated proposer is chosen from (by a hash of the key). A change
    /// that meets contention is forwarded there. Empty: never forward.
    pub designated: Vec<NodeId>,
    /// How long a round waits for a majority before starting over.
    pub round_timeout: Duration,
    /// How long a change may take in all before it fails.
    pub request_timeout: Duration,
    /// The first back-off after a conflict; it doubles (randomised) with each conflict.
    pub backoff_min: Duration,
    /// The longest back-off.
    pub backoff_max: Duration,
    /// The most changes held at once (queued, running or forwarded); more are refused.
    pub max_requests: usize,
    /// The most keys whose fast-path ballot is remembered.
    pub max_fast_keys: usize,
    /// Seeds the back-off jitter.
    pub seed: u64,
}

impl ProposerConfig {
    /// Defaults for a LAN: rounds of 100 ms, requests of 2 s, back-off 1–50 ms, no forwarding.
    pub fn new(id: ProposerId, acceptors: Vec<NodeId>, seed: u64) -> Self {
        ProposerConfig {
            id,
            acceptors,
            version: 0,
            designated: Vec::new(),
            round_timeout: Duration::from_millis(100),
            request_timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(1),
            backoff_max: Duration::from_millis(50),
            max_requests: 4096,
            max_fast_keys: 65_536,
            seed,
        }
    }
}

/// A finished change: its request, key, and what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The id [`Proposer::propose`] returned.
    pub id: RequestId,
    /// The key.
    pub key: Key,
    /// The outcome, or why there is none.
    pub result: Result<Outcome, PaxosError>,
}

/// Why a message changed nothing. The driver may log it; nothing else to do.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Ignored {
    /// A vote from a node outside the acceptor set.
    #[error("{0} is not in the acceptor set")]
    NotAnAcceptor(NodeId),
    /// A reply for a round that is over, or a ballot that is not this proposer's.
    #[error("reply for a round that is not running")]
    StaleRound,
    /// A forwarded result for a request this proposer does not hold (any more).
    #[error("result for an unknown forwarded request")]
    UnknownRequest,
    /// A message meant for an acceptor.
    #[error("message meant for an acceptor")]
    NotForProposer,
    /// A forward whose origin proposer is not on the node that sent it.
    #[error("forward from {0} names a proposer on another node")]
    ForgedOrigin(NodeId),
    /// A second copy of a forwarded change that is still running (acknowledged again).
    #[error("duplicate of a forwarded change still running")]
    Duplicate,
    /// A vote from an incarnation of the acceptor that has since been replaced, or from an
    /// older epoch: it does not count.
    #[error("vote from a replaced incarnation of {0}")]
    StaleIncarnation(NodeId),
}

/// A change handed to a designated proposer.
#[derive(Debug)]
struct Forwarded {
    to: NodeId,
    /// The run of the designated proposer it is meant for.
    to_run: u64,
    /// Whether the designated proposer acknowledged a copy: then copies go less often, only
    /// to learn whether the run that took it is still there (a run that restarted answers
    /// [`PaxosError::Misdirected`]).
    acked: bool,
    /// Copies sent so far, the first included.
    copies: u32,
    /// When the next copy goes, while unacknowledged.
    resend_at: Option<Instant>,
}

/// Who asked for a change: a local caller, or another proposer that forwarded it.
#[derive(Clone, Copy, Debug)]
enum Origin {
    Local,
    Forwarded { from: ProposerId, id: RequestId },
}

#[derive(Debug)]
struct Request {
    key: Key,
    change: Change,
    origin: Origin,
    deadline: Instant,
    /// The value this change proposed, once an accept for it was sent: from then on it may take
    /// effect, and a later round must not apply the change a second time.
    proposal: Option<Proposal>,
    conflicts: u32,
    /// When it was admitted (its latency is counted from there).
    admitted: Instant,
    /// Whether a round of it sent a prepare (phase 1): a decision then is no fast-path one.
    prepared: bool,
}

/// Every value a change proposed, lowest ballot first.
///
/// A value accepted by even one acceptor may be adopted by any later round (as the highest
/// accepted value) and take effect then, so all of them are remembered, not just the last.
#[derive(Debug, Default)]
struct Proposal {
    attempts: Vec<Attempt>,
}

/// One accept a proposer sent: the value, what it was computed from, and what to report if it
/// is chosen.
#[derive(Clone, Debug)]
struct Attempt {
    ballot: Ballot,
    register: Register,
    lineage: Lineage,
    report: Outcome,
}

/// What a new round does with a change whose accept may already have landed.
enum Retry {
    /// Apply the change to the current value: it cannot hold the change.
    Apply,
    /// Propose `register` (of `lineage`) and report `report` once it is chosen.
    Propose { register: Register, lineage: Lineage, report: Box<Outcome> },
    /// Another proposer's value above this change's first accept, computed from a value this
    /// proposer cannot see: whether it holds the change is unknown.
    Unknown,
}

/// One acceptor's promise: its incarnation and the value it accepted.
#[derive(Clone, Debug)]
struct Vote {
    incarnation: Incarnation,
    accepted: Ballot,
    lineage: Lineage,
    register: Register,
}

#[derive(Debug)]
enum Round {
    Preparing {
        ballot: Ballot,
        promises: BTreeMap<NodeId, Vote>,
    },
    Accepting {
        ballot: Ballot,
        /// The value sent, what it was computed from, and what to report once it is chosen
        /// (boxed: it holds two registers).
        attempt: Box<Attempt>,
        quorum: Vec<(NodeId, Incarnation)>,
        accepted: BTreeMap<NodeId, Incarnation>,
    },
}

impl Round {
    fn ballot(&self) -> Ballot {
        match self {
            Round::Preparing { ballot, .. } | Round::Accepting { ballot, .. } => *ballot,
        }
    }
}

/// The requests of one key, and the round running for the first of them.
#[derive(Debug, Default)]
struct KeyState {
    queue: VecDeque<RequestId>,
    round: Option<Round>,
    /// Acceptors that answered the current round at all.
    responded: BTreeSet<NodeId>,
    /// Acceptors that refused the current phase of the round.
    refused: BTreeSet<NodeId>,
    /// Whether a refusal in the current round named a higher ballot (or a stale incarnation).
    contended: bool,
    /// When the round times out, or the back-off ends.
    wake_at: Option<Instant>,
    /// Whether a majority answered the last round that ended (for NoQuorum versus Timeout).
    quorum_answered: bool,
}

/// The promises a proposer holds for its next ballot on a key: the fast path.
#[derive(Debug)]
struct Fast {
    /// The promised ballot.
    ballot: Ballot,
    /// The value accepted at the ballot before it, and the lineage of a value computed from it.
    register: Register,
    lineage: Lineage,
    quorum: Vec<(NodeId, Incarnation)>,
}

/// A proposer. Feed it changes, messages and timeouts; drain
/// [`poll_transmit`](Proposer::poll_transmit) and [`poll_completion`](Proposer::poll_completion)
/// after each call, and call [`handle_timeout`](Proposer::handle_timeout) at
/// [`poll_timeout`](Proposer::poll_timeout).
#[derive(Debug)]
pub struct Proposer {
    config: ProposerConfig,
    rng: SmallRng,
    counter: u64,
    next_request: u64,
    requests: BTreeMap<RequestId, Request>,
    keys: BTreeMap<Key, KeyState>,
    /// Every key's `wake_at`, in time order, so timeouts cost no scan of all keys.
    wakes: BTreeSet<(Instant, Key)>,
    /// Changes forwarded to a designated proposer, awaiting its result.
    forwarded: BTreeMap<RequestId, Forwarded>,
    /// Their deadlines, in time order.
    forward_deadlines: BTreeSet<(Instant, RequestId)>,
    /// When unacknowledged forwards are sent again, in time order.
    forward_resends: BTreeSet<(Instant, RequestId)>,
    /// The newest incarnation known of each acceptor (from votes and from the fences acceptors
    /// report): a vote of an older one does not count.
    known: BTreeMap<NodeId, Incarnation>,
    /// The newest epoch seen in a vote: votes of older epochs do not count.
    epoch: Epoch,
    /// The current run of other nodes' proposers, as their ballots and forwards show: a change
    /// is forwarded only to a run known here, and names it.
    runs: BTreeMap<NodeId, u64>,
    /// Forwards received from other proposers: running (`None`) or finished, so a duplicated
    /// forward is never run twice. Bounded, oldest finished forgotten first.
    received: BTreeMap<(ProposerId, RequestId), Option<Result<Outcome, PaxosError>>>,
    received_order: VecDeque<(ProposerId, RequestId)>,
    fast: BTreeMap<Key, Fast>,
    outbox: VecDeque<(NodeId, Message)>,
    completions: VecDeque<Completion>,
    /// Rounds, conflicts, decisions and latencies, shared with the driver's handle.
    counters: Arc<Counters>,
}

impl Proposer {
    /// A proposer with nothing running.
    pub fn new(config: ProposerConfig) -> Self {
        Proposer {
            rng: SmallRng::seed_from_u64(config.seed),
            config,
            counter: 0,
            next_request: 0,
            requests: BTreeMap::new(),
            keys: BTreeMap::new(),
            wakes: BTreeSet::new(),
            forwarded: BTreeMap::new(),
            forward_deadlines: BTreeSet::new(),
            forward_resends: BTreeSet::new(),
            known: BTreeMap::new(),
            epoch: Epoch::default(),
            runs: BTreeMap::new(),
            received: BTreeMap::new(),
            received_order: VecDeque::new(),
            fast: BTreeMap::new(),
            outbox: VecDeque::new(),
            completions: VecDeque::new(),
            counters: Arc::default(),
        }
    }

    /// This proposer.
    pub fn id(&self) -> ProposerId {
        self.config.id
    }

    /// What this proposer counted since it was made.
    pub fn stats(&self) -> PaxosStats {
        self.counters.snapshot()
    }

    /// The counters behind [`Proposer::stats`], for a handle that reads them while the
    /// proposer runs elsewhere.
    #[cfg_attr(not(feature = "driver"), allow(dead_code))]
    pub(crate) fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Changes held (queued, running or forwarded).
    pub fn pending(&self) -> usize {
        self.requests.len()
    }

    /// Starts a change of `key`. Its [`Completion`] comes out of
    /// [`poll_completion`](Proposer::poll_completion) with the returned id.
    pub fn propose(
        &mut self,
        now: Instant,
        key: Key,
        change: Change,
    ) -> Result<RequestId, ProposeError> {
        let deadline = now + self.config.request_timeout;
        self.admit(now, key, change, Origin::Local, deadline)
    }

    /// The configuration it runs.
    pub fn configuration(&self) -> Configuration {
        Configuration { version: self.config.version, acceptors: self.config.acceptors.clone() }
    }

    /// Runs `configuration` if it is newer than the one it runs (see
    /// [`membership`](super::membership)); whether it did. Running rounds start over under the
    /// new set and fast-path promises are dropped: they were counted in the old.
    pub fn set_configuration(&mut self, now: Instant, configuration: Configuration) -> bool {
        if configuration.version <= self.config.version {
            return false;
        }
        self.config.version = configuration.version;
        self.config.acceptors = configuration.acceptors;
        self.fast.clear();
        for (key, state) in self.keys.iter_mut() {
            if state.round.take().is_some() {
                set_wake(&mut self.wakes, key, &mut state.wake_at, Some(now));
            }
        }
        true
    }

    /// Replaces the proposers that designated proposers are chosen from (a driver leaves out
    /// the nodes it cannot reach, so that no change is forwarded into silence). Changes already
    /// forwarded are not affected.
    pub fn set_designated(&mut self, designated: Vec<NodeId>) {
        self.config.designated = designated;
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<(NodeId, Message)> {
        self.outbox.pop_front()
    }

    /// The next finished change.
    pub fn poll_completion(&mut self) -> Option<Completion> {
        self.completions.pop_front()
    }

    /// When [`handle_timeout`](Proposer::handle_timeout) wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let key = self.wakes.first().map(|(at, _)| *at);
        let forward = self.forward_deadlines.first().map(|(at, _)| *at);
        let resend = self.forward_resends.first().map(|(at, _)| *at);
        key.into_iter().chain(forward).chain(resend).min()
    }

    /// The transport lost `node` (it may have crashed). Changes forwarded to it stop waiting
    /// for their deadline: a read is taken back and run here (running it twice changes
    /// nothing); any other change fails with [`PaxosError::DesignatedDown`], since the
    /// designated proposer may have run it.
    pub fn peer_down(&mut self, now: Instant, node: NodeId) {
        let lost: Vec<RequestId> = self
            .forwarded
            .iter()
            .filter(|(_, forward)| forward.to == node)
            .map(|(id, _)| *id)
            .collect();
        self.runs.remove(&node);
        for id in lost {
            self.designated_lost(now, id);
        }
    }

    /// The proposer a change was forwarded to is gone, and may have run it: a read is run here
    /// (twice changes nothing); any other change fails as maybe applied.
    fn designated_lost(&mut self, now: Instant, id: RequestId) {
        self.stop_forward(id);
        let read = self.requests.get(&id).is_some_and(|r| r.change.is_read());
        if !read {
            return self.finish(now, id, Err(PaxosError::DesignatedDown));
        }
        let Some(request) = self.requests.get(&id) else { return };
        let key = request.key.clone();
        let state = self.keys.entry(key.clone()).or_default();
        state.queue.push_back(id);
        if state.queue.len() == 1 && state.wake_at.is_none() {
            self.run_key(now, &key);
        }
    }

    /// Time passed: rounds that timed out start over, back-offs end, deadlines fail requests.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<Key> = self
            .wakes
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, key)| key.clone())
            .collect();
        let quorum = majority(self.acceptors());
        for key in due {
            if let Some(state) = self.keys.get_mut(&key) {
                if state.round.take().is_some() {
                    self.counters.count(Event::RoundTimeout);
                    // The round timed out: its fast ballot may be dead, prepare afresh.
                    state.quorum_answered = state.responded.len() >= quorum;
                    self.fast.remove(&key);
                }
                set_wake(&mut self.wakes, &key, &mut state.wake_at, None);
            }
            self.run_key(now, &key);
        }
        let expired: Vec<RequestId> = self
            .forward_deadlines
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, id)| *id)
            .collect();
        for id in expired {
            self.stop_forward(id);
            self.finish(now, id, Err(PaxosError::Timeout { maybe_applied: true }));
        }
        let resends: Vec<RequestId> = self
            .forward_resends
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, id)| *id)
            .collect();
        for id in resends {
            self.send_forward(now, id);
        }
    }

    /// Sends (again) the forward of request `id`, and plans the next copy.
    fn send_forward(&mut self, now: Instant, id: RequestId) {
        let (Some(forward), Some(request)) = (self.forwarded.get_mut(&id), self.requests.get(&id))
        else {
            return;
        };
        if let Some(at) = forward.resend_at.take() {
            self.forward_resends.remove(&(at, id));
        }
        let message = Message::Forward {
            origin: self.config.id,
            id,
            key: request.key.clone(),
            change: request.change.clone(),
            timeout: request.deadline.saturating_duration_since(now),
            to_run: forward.to_run,
            copy: forward.copies,
        };
        forward.copies = forward.copies.saturating_add(1);
        let next = now + resend_interval(forward.acked, self.config.round_timeout);
        if next < request.deadline {
            forward.resend_at = Some(next);
            self.forward_resends.insert((next, id));
        }
        let to = forward.to;
        self.send(to, message);
    }

    /// Forgets that request `id` waits for a forwarded result.
    fn stop_forward(&mut self, id: RequestId) {
        if let Some(forward) = self.forwarded.remove(&id) {
            if let Some(at) = forward.resend_at {
                self.forward_resends.remove(&(at, id));
            }
            if let Some(request) = self.requests.get(&id) {
                self.forward_deadlines.remove(&(request.deadline, id));
            }
        }
    }

    /// A message arrived from `from`. `Err` says why it changed nothing.
    pub fn handle_message(
        &mut self,
        now: Instant,
        from: NodeId,
        message: Message,
    ) -> Result<(), Ignored> {
        match message {
            Message::Promise { key, ballot, incarnation, accepted, register, lineage } => {
                let accepted =
                    if mutated(Mutant::AcceptedBallotsIgnored) { Ballot::ZERO } else { accepted };
                let vote = Vote { incarnation, accepted, lineage, register };
                self.on_promise(now, from, key, ballot, vote)
            }
            Message::Accepted { key, ballot, incarnation, fences } => {
                if !self.config.acceptors.contains(&from) {
                    return Err(Ignored::NotAnAcceptor(from));
                }
                self.learn(from, incarnation);
                let fences = fences.into_iter().filter(|_| !mutated(Mutant::AcceptedFencesIgnored));
                for (node, fence) in fences {
                    self.learn(node, fence);
                }
                self.on_accepted(now, from, key, ballot, incarnation)
            }
            Message::Rejected { key, ballot, reason } => {
                self.on_rejected(now, from, key, ballot, reason)
            }
            Message::Forward { origin, id, key, change, timeout, to_run, copy: _ } => {
                self.on_forward(now, from, (origin, id), (key, change), timeout, to_run)
            }
            Message::Configure { configuration } => {
                // From an acceptor that runs a newer one than this proposer (or an operator).
                self.set_configuration(now, configuration);
                Ok(())
            }
            Message::ForwardAck { origin, id } => {
                let forward = self.forwarded.get_mut(&id);
                let Some(forward) = forward.filter(|f| origin == self.config.id && f.to == from)
                else {
                    return Err(Ignored::UnknownRequest);
                };
                forward.acked = true;
                // Copies go on, less often: the run that took it may restart (its service
                // alone, its node still connected) and lose it, and only a copy tells.
                if let Some(at) = forward.resend_at.take() {
                    self.forward_resends.remove(&(at, id));
                }
                let next = now + resend_interval(true, self.config.round_timeout);
                if self.requests.get(&id).is_some_and(|request| next < request.deadline) {
                    forward.resend_at = Some(next);
                    self.forward_resends.insert((next, id));
                }
                Ok(())
            }
            Message::ForwardResult { origin, id, result } => {
                let ours = self.forwarded.get(&id).is_some_and(|forward| forward.to == from);
                if origin != self.config.id || !ours {
                    return Err(Ignored::UnknownRequest);
                }
                if result == Err(PaxosError::Misdirected) {
                    // The designated node runs another proposer now; the one the forward was
                    // for may have run it before it went.
                    self.runs.remove(&from);
                    self.designated_lost(now, id);
                    return Ok(());
                }
                self.stop_forward(id);
                self.finish(now, id, result);
                Ok(())
            }
            _ => Err(Ignored::NotForProposer),
        }
    }

    /// Runs a change another proposer forwarded, once. Every copy is acknowledged; a copy of a
    /// forward still running changes nothing more, and one of a forward already answered
    /// (run, or refused as overloaded) gets the same answer again.
    ///
    /// A forward meant for another run of this proposer is refused with
    /// [`PaxosError::Misdirected`] and not run: that run may have run it (this one cannot
    /// know), so running it again could apply it twice.
    fn on_forward(
        &mut self,
        now: Instant,
        from: NodeId,
        (origin, id): (ProposerId, RequestId),
        (key, change): (Key, Change),
        timeout: Duration,
        to_run: u64,
    ) -> Result<(), Ignored> {
        if origin.node != from {
            return Err(Ignored::ForgedOrigin(from));
        }
        self.runs.insert(origin.node, origin.run);
        if to_run != self.config.id.run && !mutated(Mutant::ForwardRunUnchecked) {
            let result = Err(PaxosError::Misdirected);
            self.send(from, Message::ForwardResult { origin, id, result });
            return Ok(());
        }
        self.send(from, Message::ForwardAck { origin, id });
        match self.received.get(&(origin, id)).filter(|_| !mutated(Mutant::ForwardDedupeOff)) {
            Some(Some(result)) => {
                let result = result.clone();
                self.send(from, Message::ForwardResult { origin, id, result });
                return Ok(());
            }
            Some(None) => return Err(Ignored::Duplicate),
            None => {}
        }
        let timeout = timeout.min(self.config.request_timeout);
        let deadline = now + timeout;
        match self.admit(now, key, change, Origin::Forwarded { from: origin, id }, deadline) {
            Ok(_) => self.remember_forward(origin, id),
            Err(ProposeError::Overloaded { .. }) => {
                self.answer_forward(origin, id, PaxosError::Overloaded);
            }
        }
        Ok(())
    }

    /// Answers a forward without running it, and remembers the answer, so that a copy arriving
    /// later gets the same one (never a run of a change its sender was told did not apply).
    fn answer_forward(&mut self, origin: ProposerId, id: RequestId, error: PaxosError) {
        self.remember_forward(origin, id);
        self.received.insert((origin, id), Some(Err(error)));
        self.send(origin.node, Message::ForwardResult { origin, id, result: Err(error) });
    }

    /// Records what a vote tells about an acceptor's incarnation and the cluster's epoch.
    fn learn(&mut self, node: NodeId, incarnation: Incarnation) {
        let known = self.known.entry(node).or_default();
        *known = (*known).max(incarnation);
        self.epoch = self.epoch.max(incarnation.epoch);
    }

    /// Whether a vote of `node` in `incarnation` counts (see [`is_current_vote`]).
    fn counts(&self, node: NodeId, incarnation: Incarnation) -> bool {
        is_current_vote(self.epoch, &self.known, node, incarnation)
    }

    /// Remembers a forward (bounded: the oldest finished ones are forgotten first).
    fn remember_forward(&mut self, origin: ProposerId, id: RequestId) {
        let limit = self.config.max_requests.max(1);
        while self.received_order.len() >= 2 * limit {
            let Some(oldest) = self.received_order.pop_front() else { break };
            if matches!(self.received.get(&oldest), Some(None)) {
                self.received_order.push_back(oldest); // still running: keep it
                break;
            }
            self.received.remove(&oldest);
        }
        self.received.insert((origin, id), None);
        self.received_order.push_back((origin, id));
    }

    fn admit(
        &mut self,
        now: Instant,
        key: Key,
        change: Change,
        origin: Origin,
        deadline: Instant,
    ) -> Result<RequestId, ProposeError> {
        if self.requests.len() >= self.config.max_requests {
            let limit = self.config.max_requests;
            return Err(ProposeError::Overloaded { key, change: Box::new(change), limit });
        }
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let request = Request {
            key: key.clone(),
            change,
            origin,
            deadline,
            proposal: None,
            conflicts: 0,
            admitted: now,
            prepared: false,
        };
        self.requests.insert(id, request);
        let state = self.keys.entry(key.clone()).or_default();
        state.queue.push_back(id);
        if state.queue.len() == 1 && state.wake_at.is_none() {
            self.run_key(now, &key);
        }
        Ok(id)
    }

    /// Starts a round for the first request of `key` that is still within its deadline.
    fn run_key(&mut self, now: Instant, key: &Key) {
        loop {
            let Some(state) = self.keys.get_mut(key) else { return };
            let Some(&id) = state.queue.front() else {
                set_wake(&mut self.wakes, key, &mut state.wake_at, None);
                self.keys.remove(key);
                return;
            };
            let quorum_answered = state.quorum_answered;
            let Some(request) = self.requests.get(&id) else {
                state.queue.pop_front();
                continue;
            };
            if request.deadline <= now {
                let maybe_applied = request.proposal.is_some();
                let error = if quorum_answered {
                    PaxosError::Timeout { maybe_applied }
                } else {
                    PaxosError::NoQuorum { maybe_applied }
                };
                state.queue.pop_front();
                self.finish(now, id, Err(error));
                continue;
            }
            return self.start_round(now, key, id);
        }
    }

    fn start_round(&mut self, now: Instant, key: &Key, id: RequestId) {
        let Some(request) = self.requests.get_mut(&id) else { return };
        let wake_at = (now + self.config.round_timeout).min(request.deadline);
        // The fast path is for a change's first round only: a retry must look at what the
        // acceptors hold (see `retry_kind`).
        let fast = self.fast.remove(key).filter(|_| request.proposal.is_none());
        let round = match fast {
            Some(fast) => {
                let (after, applied) = request.change.apply(&fast.register);
                let report =
                    Outcome { before: fast.register, after: after.clone(), applied, epoch: 0 };
                let attempt =
                    Attempt { ballot: fast.ballot, register: after, lineage: fast.lineage, report };
                request.proposal = Some(Proposal { attempts: vec![attempt.clone()] });
                self.counter = self.counter.max(fast.ballot.counter);
                Round::Accepting {
                    ballot: fast.ballot,
                    attempt: Box::new(attempt),
                    quorum: fast.quorum,
                    accepted: BTreeMap::new(),
                }
            }
            None => {
                self.counter = self.counter.saturating_add(1);
                request.prepared = true;
                let ballot = Ballot { counter: self.counter, proposer: self.config.id };
                Round::Preparing { ballot, promises: BTreeMap::new() }
            }
        };
        self.counters.count(match round {
            Round::Preparing { .. } => Event::Prepare,
            Round::Accepting { .. } => Event::Accept,
        });
        let message = match &round {
            Round::Preparing { ballot, .. } => {
                let (epoch, configuration) = (self.epoch, self.config.version);
                Message::Prepare { key: key.clone(), ballot: *ballot, epoch, configuration }
            }
            Round::Accepting { ballot, attempt, quorum, .. } => Message::Accept {
                key: key.clone(),
                ballot: *ballot,
                register: attempt.register.clone(),
                lineage: attempt.lineage.clone(),
                quorum: quorum.clone(),
                configuration: self.config.version,
            },
        };
        self.broadcast(&message);
        let state = self.keys.entry(key.clone()).or_default();
        state.round = Some(round);
        state.responded.clear();
        state.refused.clear();
        state.contended = false;
        set_wake(&mut self.wakes, key, &mut state.wake_at, Some(wake_at));
    }

    /// The running round of `key` if it is at `ballot`, after checking the sender is an
    /// acceptor; the sender is recorded as having answered.
    fn round_for(
        &mut self,
        from: NodeId,
        key: &Key,
        ballot: Ballot,
    ) -> Result<&mut KeyState, Ignored> {
        if !self.config.acceptors.contains(&from) {
            return Err(Ignored::NotAnAcceptor(from));
        }
        round_of(&mut self.keys, from, key, ballot)
    }

    fn on_promise(
        &mut self,
        now: Instant,
        from: NodeId,
        key: Key,
        ballot: Ballot,
        vote: Vote,
    ) -> Result<(), Ignored> {
        let quorum =
            majority(self.acceptors()) - usize::from(mutated(Mutant::PromiseQuorumTooSmall));
        let seen = vote.accepted.counter;
        if !self.config.acceptors.contains(&from) {
            return Err(Ignored::NotAnAcceptor(from));
        }
        self.learn(from, vote.incarnation);
        if !self.counts(from, vote.incarnation) {
            return Err(Ignored::StaleIncarnation(from));
        }
        let (epoch, known) = (self.epoch, &self.known);
        let state = round_of(&mut self.keys, from, &key, ballot)?;
        let Some(Round::Preparing { promises, .. }) = &mut state.round else {
            return Err(Ignored::StaleRound);
        };
        promises.insert(from, vote);
        // A newer epoch or incarnation seen since voids the promises that came before it.
        promises.retain(|node, vote| is_current_vote(epoch, known, *node, vote.incarnation));
        if promises.len() < quorum {
            self.counter = self.counter.max(seen);
            return Ok(());
        }
        let promises = std::mem::take(promises);
        self.counter = self.counter.max(seen);
        self.start_accept(now, key, ballot, promises);
        Ok(())
    }

    /// A majority promised: apply the change to the highest accepted value and send accepts.
    fn start_accept(
        &mut self,
        now: Instant,
        key: Key,
        ballot: Ballot,
        promises: BTreeMap<NodeId, Vote>,
    ) {
        let Some(state) = self.keys.get_mut(&key) else { return };
        let Some(&id) = state.queue.front() else { return };
        let Some(request) = self.requests.get_mut(&id) else { return };
        let highest = promises.values().max_by_key(|vote| vote.accepted).cloned();
        let Vote { accepted: highest, lineage: highest_lineage, register: current, .. } = highest
            .unwrap_or(Vote {
                incarnation: Incarnation::default(),
                accepted: Ballot::ZERO,
                lineage: Lineage::default(),
                register: Register::default(),
            });
        let retry = retry_kind(request.proposal.as_ref(), highest, &highest_lineage, &current);
        let attempt = match retry {
            Retry::Apply => {
                let (after, applied) = request.change.apply(&current);
                let report = Outcome { before: current, after: after.clone(), applied, epoch: 0 };
                let lineage = Lineage::child_of(highest, &highest_lineage);
                Attempt { ballot, register: after, lineage, report }
            }
            Retry::Propose { register, lineage, report } => {
                Attempt { ballot, register, lineage, report: *report }
            }
            Retry::Unknown => {
                state.round = None;
                set_wake(&mut self.wakes, &key, &mut state.wake_at, None);
                state.queue.pop_front();
                self.finish(now, id, Err(PaxosError::Indeterminate));
                return self.run_key(now, &key);
            }
        };
        request.proposal.get_or_insert_default().attempts.push(attempt.clone());
        let quorum: Vec<_> =
            promises.iter().map(|(node, vote)| (*node, vote.incarnation)).collect();
        let message = Message::Accept {
            key: key.clone(),
            ballot,
            register: attempt.register.clone(),
            lineage: attempt.lineage.clone(),
            quorum: quorum.clone(),
            configuration: self.config.version,
        };
        let attempt = Box::new(attempt);
        state.round = Some(Round::Accepting { ballot, attempt, quorum, accepted: BTreeMap::new() });
        state.refused.clear();
        let wake_at = (now + self.config.round_timeout).min(request.deadline);
        set_wake(&mut self.wakes, &key, &mut state.wake_at, Some(wake_at));
        self.counters.count(Event::Accept);
        self.broadcast(&message);
    }

    fn on_accepted(
        &mut self,
        now: Instant,
        from: NodeId,
        key: Key,
        ballot: Ballot,
        incarnation: Incarnation,
    ) -> Result<(), Ignored> {
        let quorum =
            majority(self.acceptors()) - usize::from(mutated(Mutant::AcceptQuorumTooSmall));
        if !self.counts(from, incarnation) {
            return Err(Ignored::StaleIncarnation(from));
        }
        let (epoch, known) = (self.epoch, &self.known);
        let state = round_of(&mut self.keys, from, &key, ballot)?;
        let Some(Round::Accepting { accepted, .. }) = &mut state.round else {
            return Err(Ignored::StaleRound);
        };
        accepted.insert(from, incarnation);
        let known = if mutated(Mutant::ReplacedVotesKept) { &BTreeMap::new() } else { known };
        // An acceptor that accepted after a rejoin fenced it reports the fence: the earlier
        // vote of the replaced incarnation no longer counts, as its value may be gone.
        accepted.retain(|node, incarnation| is_current_vote(epoch, known, *node, *incarnation));
        if accepted.len() < quorum {
            return Ok(());
        }
        let Some(Round::Accepting { mut attempt, accepted, .. }) = state.round.take() else {
            return Err(Ignored::StaleRound);
        };
        attempt.report.epoch = epoch.number;
        let old_wake = state.wake_at.take();
        state.quorum_answered = true;
        let id = state.queue.pop_front();
        if let Some(at) = old_wake {
            self.wakes.remove(&(at, key.clone()));
        }
        // Every acceptor that accepted `ballot` promised its successor: the fast path.
        if let Some(next) = ballot.successor() {
            let next = if mutated(Mutant::FastBallotReused) { ballot } else { next };
            let fast = Fast {
                ballot: next,
                lineage: Lineage::child_of(ballot, &attempt.lineage),
                register: attempt.register,
                quorum: accepted.into_iter().collect(),
            };
            self.remember_fast(&key, fast);
        }
        if let Some(id) = id {
            let prepared = self.requests.get(&id).is_some_and(|request| request.prepared);
            self.counters.count(if prepared { Event::SlowDecision } else { Event::FastDecision });
            self.finish(now, id, Ok(attempt.report));
        }
        self.run_key(now, &key);
        Ok(())
    }

    fn on_rejected(
        &mut self,
        now: Instant,
        from: NodeId,
        key: Key,
        ballot: Ballot,
        reason: Rejection,
    ) -> Result<(), Ignored> {
        let quorum = majority(self.acceptors());
        let acceptors = self.acceptors();
        if let Rejection::Promised(promised) = reason {
            self.counter = self.counter.max(promised.counter);
            if promised.proposer.node != self.config.id.node && promised != Ballot::ZERO {
                self.runs.insert(promised.proposer.node, promised.proposer.run);
            }
        }
        let state = self.round_for(from, &key, ballot)?;
        let voted = match &state.round {
            Some(Round::Preparing { promises, .. }) => promises.contains_key(&from),
            Some(Round::Accepting { accepted, .. }) => accepted.contains_key(&from),
            None => false,
        };
        match reason {
            // A promise at or below our own ballot is no conflict (a duplicate), and a refusal
            // from an acceptor that already voted in this phase changes nothing.
            Rejection::Promised(promised) if promised <= ballot => return Ok(()),
            _ if voted => return Ok(()),
            Rejection::Promised(_) | Rejection::StaleIncarnation => state.contended = true,
            // An acceptor that cannot vote answered, but is no voter: if too few can vote, the
            // change fails with `NoQuorum`, not as if contention had kept a majority busy.
            Rejection::Recovering | Rejection::BadBallot | Rejection::StaleConfiguration(_) => {
                state.responded.remove(&from);
            }
        }
        // One refusal is no defeat: the round goes on while a majority can still vote for it
        // (ending it early would leave its accepts to be adopted by whoever beat it, and the
        // change's fate unknown).
        state.refused.insert(from);
        if acceptors.saturating_sub(state.refused.len()) >= quorum {
            return Ok(());
        }
        let conflict = state.contended;
        state.quorum_answered = state.responded.len() >= quorum;
        state.round = None;
        if conflict {
            self.counters.count(Event::Conflict);
        }
        self.fast.remove(&key);
        self.back_off(now, &key, conflict);
        Ok(())
    }

    /// The round of `key` failed: wait a random, growing time, or, on contention, hand the
    /// change to the key's designated proposer.
    fn back_off(&mut self, now: Instant, key: &Key, conflict: bool) {
        let Some(state) = self.keys.get_mut(key) else { return };
        let Some(&id) = state.queue.front() else { return };
        let Some(request) = self.requests.get_mut(&id) else { return };
        let designated = designated(&self.config.designated, key)
            .filter(|d| *d != self.config.id.node)
            .and_then(|d| Some((d, *self.runs.get(&d)?)));
        let may_forward =
            conflict && request.proposal.is_none() && matches!(request.origin, Origin::Local);
        if let (true, Some((to, to_run))) = (may_forward, designated) {
            // Nothing of this change was sent in an accept, so it is still unapplied and moves
            // whole to the designated proposer. Copies go until one is acknowledged, each
            // naming the run it is for: only that run may run it, once (it remembers the
            // forwards it ran), so a copy that outlives it is refused by its successor and the
            // change comes back here, never run twice.
            state.queue.pop_front();
            let forward = Forwarded { to, to_run, acked: false, copies: 0, resend_at: None };
            self.forwarded.insert(id, forward);
            self.forward_deadlines.insert((request.deadline, id));
            self.send_forward(now, id);
            return self.run_key(now, key);
        }
        request.conflicts = request.conflicts.saturating_add(1);
        let ceiling = self
            .config
            .backoff_min
            .saturating_mul(1u32 << request.conflicts.min(16))
            .min(self.config.backoff_max)
            .max(self.config.backoff_min);
        let wait = self.rng.random_range(self.config.backoff_min..=ceiling);
        let wake_at = (now + wait).min(request.deadline);
        set_wake(&mut self.wakes, key, &mut state.wake_at, Some(wake_at));
    }

    fn remember_fast(&mut self, key: &Key, fast: Fast) {
        if self.fast.len() >= self.config.max_fast_keys && !self.fast.contains_key(key) {
            self.fast.pop_first();
        }
        if self.config.max_fast_keys > 0 {
            self.fast.insert(key.clone(), fast);
        }
    }

    fn finish(&mut self, now: Instant, id: RequestId, result: Result<Outcome, PaxosError>) {
        let Some(request) = self.requests.remove(&id) else { return };
        match request.origin {
            Origin::Local => {
                self.counters.record_latency(now.saturating_duration_since(request.admitted));
                self.completions.push_back(Completion { id, key: request.key, result });
            }
            Origin::Forwarded { from, id } => {
                if let Some(slot) = self.received.get_mut(&(from, id)) {
                    *slot = Some(result.clone());
                }
                self.send(from.node, Message::ForwardResult { origin: from, id, result })
            }
        }
    }

    fn acceptors(&self) -> usize {
        self.config.acceptors.len()
    }

    fn broadcast(&mut self, message: &Message) {
        for i in 0..self.config.acceptors.len() {
            let to = self.config.acceptors[i];
            self.send(to, message.clone());
        }
    }

    fn send(&mut self, to: NodeId, message: Message) {
        if self.outbox.len() >= OUTBOX_LIMIT {
            self.outbox.pop_front();
        }
        self.outbox.push_back((to, message));
    }
}

/// What a round whose promises show `current`, accepted at `highest` and descended from the
/// ancestors in `lineage`, does with a change that may already have proposed values.
///
/// Values form a history per key: each accepted value was computed from its parent, at a lower
/// ballot. A change must hold in the chosen history at most once:
///
/// - the current value is one this change proposed: propose it again (it holds the change);
/// - every value the change proposed left the register as it was (a read, a failed condition):
///   none of them is visible, so apply the change afresh;
/// - the current value is older than the change's first proposal: so is its whole history, so
///   it cannot hold the change; apply the change to it;
/// - going up the lineage, parent first: an ancestor this change proposed means the value holds
///   the change (write it back unchanged, and once that is chosen, report the change's own
///   outcome); an ancestor older than the change's first proposal, met first, means it does
///   not (apply the change);
/// - a lineage cut short before either: unknown.
fn retry_kind(
    proposal: Option<&Proposal>,
    highest: Ballot,
    lineage: &Lineage,
    current: &Register,
) -> Retry {
    let Some(proposal) = proposal.filter(|_| !mutated(Mutant::RetryAppliesAgain)) else {
        return Retry::Apply;
    };
    let mine = |ballot: Ballot| proposal.attempts.iter().find(|a| a.ballot == ballot);
    if let Some(attempt) = mine(highest) {
        let Attempt { register, lineage, report, .. } = attempt.clone();
        return Retry::Propose { register, lineage, report: Box::new(report) };
    }
    let invisible = proposal.attempts.iter().all(|a| a.report.before == a.report.after);
    let first = proposal.attempts.first().map_or(Ballot::ZERO, |a| a.ballot);
    if invisible || highest < first {
        return Retry::Apply;
    }
    for &ancestor in lineage.ancestors() {
        if let Some(attempt) = mine(ancestor).filter(|_| !mutated(Mutant::AncestorsNotMine)) {
            // The value is written back as it is, with the ballot it was accepted at as its
            // parent: it holds the change proposed at an ancestor, and a lineage starting below
            // that change's ballot would tell its proposer the value cannot hold it.
            return Retry::Propose {
                register: current.clone(),
                lineage: Lineage::child_of(highest, lineage),
                report: Box::new(attempt.report.clone()),
            };
        }
        if ancestor < first {
            return Retry::Apply;
        }
    }
    // (A lineage that reaches the empty register ends with `Ballot::ZERO`, older than any
    // proposal: only a lineage cut short gets here.)
    Retry::Unknown
}

/// Whether a vote of `node` in `incarnation` counts: it is of `epoch`, the newest seen, and of
/// the newest incarnation `known` of it (point 1 of the safety rules in the crate docs).
fn is_current_vote(
    epoch: Epoch,
    known: &BTreeMap<NodeId, Incarnation>,
    node: NodeId,
    incarnation: Incarnation,
) -> bool {
    incarnation.epoch == epoch && known.get(&node).is_none_or(|known| incarnation >= *known)
}

/// The state of `key` if its running round is at `ballot`; the sender is recorded as having
/// answered.
fn round_of<'a>(
    keys: &'a mut BTreeMap<Key, KeyState>,
    from: NodeId,
    key: &Key,
    ballot: Ballot,
) -> Result<&'a mut KeyState, Ignored> {
    let state = keys.get_mut(key).ok_or(Ignored::StaleRound)?;
    match &state.round {
        Some(round) if round.ballot() == ballot => {
            state.responded.insert(from);
            Ok(state)
        }
        _ => Err(Ignored::StaleRound),
    }
}

/// How long after a copy of a forward the next one goes: a round while no copy was
/// acknowledged (one may have been lost), four once one was (only to learn that the run that
/// took it is still there).
fn resend_interval(acked: bool, round_timeout: Duration) -> Duration {
    if acked { round_timeout * 4 } else { round_timeout }
}

/// Sets a key's wake-up time, keeping the proposer's time-ordered index of them in step.
fn set_wake(
    wakes: &mut BTreeSet<(Instant, Key)>,
    key: &Key,
    wake_at: &mut Option<Instant>,
    at: Option<Instant>,
) {
    if *wake_at == at {
        return;
    }
    if let Some(old) = wake_at.take() {
        wakes.remove(&(old, key.clone()));
    }
    if let Some(at) = at {
        wakes.insert((at, key.clone()));
    }
    *wake_at = at;
}

/// The proposer that changes to `key` are forwarded to under contention.
pub fn designated(proposers: &[NodeId], key: &Key) -> Option<NodeId> {
    if proposers.is_empty() {
        return None;
    }
    let index = crate::hash::fnv1a(&key.0) % proposers.len() as u64;
    proposers.get(index as usize).copied()
}
