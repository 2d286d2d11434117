//! A tiny lossless network for rule tests: acceptors and one proposer, messages delivered in
//! order of sending, time moved only by the test. The acceptors' disks never fail and never
//! crash: every batch of writes is durable as soon as it is asked for (a crash between a write
//! and its reply is `storage.rs`'s).

use std::collections::{BTreeSet, VecDeque};
use std::time::Instant;

use shoal_paxos::core::{
    Acceptor, AcceptorConfig, Completion, Incarnation, Message, NodeId, Proposer, ProposerConfig,
    ProposerId,
};
use shoal_paxos::{MemoryStorage, Recovery};

pub(crate) struct Wire {
    pub(crate) now: Instant,
    pub(crate) acceptors: Vec<Acceptor>,
    pub(crate) proposers: Vec<Proposer>,
    pub(crate) in_flight: VecDeque<(NodeId, NodeId, Message)>,
    /// Nodes cut off: messages to them are lost.
    pub(crate) down: BTreeSet<NodeId>,
}

pub(crate) fn ids(n: u64) -> Vec<NodeId> {
    (1..=n).map(NodeId).collect()
}

/// Reports every batch of writes `acceptor` asks for durable at once (a disk that never fails
/// and that nothing reads back), which releases the replies that waited for them.
pub(crate) fn persist_all(acceptor: &mut Acceptor) {
    while let Some(batch) = acceptor.poll_persist() {
        acceptor.persisted(batch.id);
    }
}

impl Wire {
    /// `n` acceptors (ids 1..=n) that founded an epoch together (they start without state,
    /// under [`Recovery::NewEpoch`]), and proposers on nodes 101, 102, ...
    pub(crate) fn new(n: u64, proposers: u64) -> Wire {
        let now = Instant::now();
        let acceptors = ids(n)
            .into_iter()
            .map(|id| {
                let config = AcceptorConfig {
                    recovery: Recovery::NewEpoch,
                    ..AcceptorConfig::new(id, ids(n), id.0)
                };
                Acceptor::new(now, config, &MemoryStorage::new())
            })
            .collect();
        let proposers = (0..proposers)
            .map(|i| {
                let id = ProposerId { node: NodeId(101 + i), run: 1 };
                Proposer::new(ProposerConfig::new(id, ids(n), i))
            })
            .collect();
        let mut wire =
            Wire { now, acceptors, proposers, in_flight: VecDeque::new(), down: BTreeSet::new() };
        wire.settle();
        assert!(wire.acceptors.iter().all(|a| a.incarnation().is_some()), "acceptors founded");
        wire
    }

    /// Moves every queued output onto the wire.
    pub(crate) fn collect(&mut self) {
        for a in &mut self.acceptors {
            persist_all(a);
            while let Some((to, m)) = a.poll_transmit() {
                self.in_flight.push_back((a.id(), to, m));
            }
        }
        for p in &mut self.proposers {
            while let Some((to, m)) = p.poll_transmit() {
                self.in_flight.push_back((p.id().node, to, m));
            }
        }
    }

    /// Delivers one message; returns it.
    pub(crate) fn deliver_one(&mut self) -> Option<(NodeId, NodeId, Message)> {
        self.collect();
        let (from, to, m) = self.in_flight.pop_front()?;
        let now = self.now;
        if self.down.contains(&to) {
            return Some((from, to, m));
        }
        if let Some(a) = self.acceptors.iter_mut().find(|a| a.id() == to) {
            let _ = a.handle_message(now, from, m.clone());
        } else if let Some(p) = self.proposers.iter_mut().find(|p| p.id().node == to) {
            let _ = p.handle_message(now, from, m.clone());
        }
        self.collect();
        Some((from, to, m))
    }

    /// Delivers everything, and lets the acceptors' retries run (time moves on by their
    /// retry interval) until every acceptor votes; a founder counts only the promises it
    /// needs, so the last acceptor rejoins on its retry.
    pub(crate) fn settle(&mut self) {
        for _ in 0..20 {
            self.deliver_all();
            if self.acceptors.iter().all(|a| a.incarnation().is_some()) {
                return;
            }
            let next = self.acceptors.iter().filter_map(|a| a.poll_timeout()).min();
            let Some(at) = next else { return };
            self.now = self.now.max(at);
            let now = self.now;
            for a in &mut self.acceptors {
                a.handle_timeout(now);
            }
        }
    }

    /// Delivers until nothing is in flight.
    pub(crate) fn deliver_all(&mut self) {
        let mut budget = 100_000;
        while self.deliver_one().is_some() {
            budget -= 1;
            assert!(budget > 0, "messages never stop");
        }
    }

    /// Drains the outputs of proposer `p` without delivering them.
    pub(crate) fn sent_by_proposer(&mut self, p: usize) -> Vec<(NodeId, Message)> {
        std::iter::from_fn(|| self.proposers[p].poll_transmit()).collect()
    }

    /// Drains the outputs of acceptor `a` without delivering them.
    pub(crate) fn sent_by_acceptor(&mut self, a: usize) -> Vec<(NodeId, Message)> {
        persist_all(&mut self.acceptors[a]);
        std::iter::from_fn(|| self.acceptors[a].poll_transmit()).collect()
    }

    /// Results of forwards that went to nodes outside the wire (dropped), counted.
    pub(crate) fn pending_forward_results(&self) -> usize {
        self.in_flight.iter().filter(|(_, _, m)| matches!(m, Message::ForwardResult { .. })).count()
    }

    pub(crate) fn completions(&mut self, p: usize) -> Vec<Completion> {
        std::iter::from_fn(|| self.proposers[p].poll_completion()).collect()
    }

    /// Takes off the wire every message in flight that `pick` selects, in order: to drop it,
    /// or to hold it back and hand it over later with [`Wire::deliver_now`].
    pub(crate) fn take(
        &mut self,
        pick: impl Fn(NodeId, NodeId, &Message) -> bool,
    ) -> Vec<(NodeId, NodeId, Message)> {
        self.collect();
        let (taken, kept): (VecDeque<_>, VecDeque<_>) =
            self.in_flight.drain(..).partition(|(from, to, m)| pick(*from, *to, m));
        self.in_flight = kept;
        taken.into()
    }

    /// Delivers a message held back with [`Wire::take`] before anything else in flight; the
    /// answers it causes queue up behind what is in flight.
    pub(crate) fn deliver_now(&mut self, held: (NodeId, NodeId, Message)) {
        self.collect();
        self.in_flight.push_front(held);
        self.deliver_one();
    }

    /// Rebuilds acceptor `a` with an empty store (it lost its state) and `config`; it starts
    /// rejoining, its queries queued.
    pub(crate) fn lose_state_with(&mut self, a: usize, config: AcceptorConfig) {
        assert_eq!(config.id, self.acceptors[a].id(), "the same acceptor");
        self.acceptors[a] = Acceptor::new(self.now, config, &MemoryStorage::new());
        self.collect();
    }

    /// Rebuilds acceptor `a` with an empty store under the default configuration
    /// ([`Recovery::Manual`]).
    pub(crate) fn lose_state(&mut self, a: usize) {
        let id = self.acceptors[a].id();
        let config = AcceptorConfig::new(id, ids(self.acceptors.len() as u64), 1000 + id.0);
        self.lose_state_with(a, config);
    }

    /// Acceptor `a` loses its state and rejoins from the others; returns its new incarnation.
    pub(crate) fn lose_state_and_rejoin(&mut self, a: usize) -> Incarnation {
        self.lose_state(a);
        self.settle();
        self.acceptors[a].incarnation().expect("rejoined")
    }

    /// Replaces proposer `p` with a new run of it, `run` (it forgets everything), which
    /// forwards changes under contention to `designated`.
    pub(crate) fn restart_proposer(&mut self, p: usize, run: u64, designated: Vec<NodeId>) {
        let id = ProposerId { run, ..self.proposers[p].id() };
        let config = ProposerConfig {
            designated,
            ..ProposerConfig::new(id, ids(self.acceptors.len() as u64), p as u64)
        };
        self.proposers[p] = Proposer::new(config);
    }

    /// Lets time run to `until`: delivers everything, then moves to the next deadline of any
    /// acceptor or proposer and runs their timeouts, and so on. Time stops at the last
    /// deadline reached, not at `until`.
    pub(crate) fn advance_to(&mut self, until: Instant) {
        for _ in 0..100_000 {
            self.deliver_all();
            let acceptors = self.acceptors.iter().filter_map(|a| a.poll_timeout());
            let proposers = self.proposers.iter().filter_map(|p| p.poll_timeout());
            let Some(at) = acceptors.chain(proposers).min().filter(|at| *at <= until) else {
                return;
            };
            self.now = self.now.max(at);
            let now = self.now;
            self.acceptors.iter_mut().for_each(|a| a.handle_timeout(now));
            self.proposers.iter_mut().for_each(|p| p.handle_timeout(now));
        }
        panic!("deadlines never stop");
    }
}
