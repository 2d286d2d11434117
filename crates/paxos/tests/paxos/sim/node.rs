//! A Paxos node (an acceptor, and a proposer on some nodes) as a simulated `shoal_sim::SimNode`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::RngExt;
use shoal_paxos::core::membership::Configuration;
use shoal_paxos::core::{
    Acceptor, AcceptorConfig, Message, NodeId, Proposer, ProposerConfig, ProposerId, RequestId,
    Storage,
};
use shoal_paxos::{Change, Key, MemoryStorage, Outcome, PaxosError, Recovery};
use shoal_sim::{Ctx, SimNode};

/// How the nodes of a schedule are set up.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Setup {
    /// Nodes `0..acceptors` are acceptors.
    pub(crate) acceptors: usize,
    /// Nodes `0..proposers` also run a proposer (clients talk to them).
    pub(crate) proposers: usize,
    /// Whether an acceptor's store survives a crash (a disk) or is lost with it (memory).
    pub(crate) durable: bool,
    /// Whether contended changes are forwarded to the key's designated proposer.
    pub(crate) forwarding: bool,
    /// Whether the schedule changes the acceptor set while it runs: it adds a spare node
    /// (`acceptors`) and then removes acceptor 1, one step at a time with a rewrite after each.
    pub(crate) membership: bool,
}

/// What a node reports to the test: the client operation it finished, and how.
#[derive(Clone, Debug)]
pub(crate) struct Done {
    pub(crate) op: usize,
    pub(crate) result: Result<Outcome, PaxosError>,
}

/// One simulated node.
#[derive(Debug)]
pub(crate) struct PaxosNode {
    setup: Setup,
    acceptor: Option<Acceptor>,
    /// The acceptor's store: every batch it asks for is written here before its replies
    /// leave (kept across a crash only if durable).
    disk: MemoryStorage,
    proposer: Option<Proposer>,
    /// Which client operation each running request is.
    ops: BTreeMap<RequestId, usize>,
    timer_at: Option<Instant>,
    started: bool,
    /// The acceptor set this node was last told (kept across crashes, like a config file).
    members: Vec<NodeId>,
    /// Its configuration version.
    version: u64,
}

/// The acceptor set a schedule starts with: nodes `0..acceptors`.
pub(crate) fn acceptor_ids(setup: &Setup) -> Vec<NodeId> {
    (0..setup.acceptors).map(|i| NodeId(i as u64)).collect()
}

impl PaxosNode {
    pub(crate) fn new(setup: Setup) -> PaxosNode {
        PaxosNode {
            setup,
            acceptor: None,
            disk: MemoryStorage::new(),
            proposer: None,
            ops: BTreeMap::new(),
            timer_at: None,
            started: false,
            members: acceptor_ids(&setup),
            version: 0,
        }
    }

    /// Whether this node's acceptor votes (has an incarnation).
    /// The epoch this node's acceptor votes in, if it votes.
    pub(crate) fn voting_epoch(&self) -> Option<shoal_paxos::core::Epoch> {
        self.acceptor.as_ref().and_then(|a| a.incarnation()).map(|i| i.epoch)
    }

    pub(crate) fn is_voting(&self) -> bool {
        self.acceptor.as_ref().is_some_and(|a| a.incarnation().is_some())
    }

    /// Brings the node up: its acceptor from its disk, a proposer with a fresh run.
    pub(crate) fn start(&mut self, ctx: &mut Ctx<'_, Self>) {
        let id = ctx.id();
        let now = ctx.now();
        let acceptors = self.members.clone();
        if acceptors.contains(&NodeId(id as u64)) || self.acceptor_store_kept() {
            let config = AcceptorConfig {
                rejoin_retry: Duration::from_millis(40),
                rejoin_page_slots: 2,
                // The cluster starts empty and founds its first epoch itself.
                recovery: Recovery::NewEpoch,
                version: self.version,
                ..AcceptorConfig::new(NodeId(id as u64), acceptors.clone(), ctx.rng().random())
            };
            self.acceptor = Some(Acceptor::new(now, config, &self.disk));
        }
        if id < self.setup.proposers {
            let run: u64 = ctx.rng().random();
            let proposer_id = ProposerId { node: NodeId(id as u64), run };
            let mut config = ProposerConfig::new(proposer_id, acceptors, ctx.rng().random());
            config.version = self.version;
            config.round_timeout = Duration::from_millis(40);
            config.request_timeout = Duration::from_millis(400);
            config.backoff_min = Duration::from_millis(1);
            config.backoff_max = Duration::from_millis(30);
            config.max_requests = 64;
            if self.setup.forwarding {
                config.designated = (0..self.setup.proposers).map(|i| NodeId(i as u64)).collect();
            }
            self.proposer = Some(Proposer::new(config));
        }
        self.started = true;
        self.flush(ctx);
    }

    /// The acceptor set this node was last told.
    pub(crate) fn members(&self) -> &[NodeId] {
        &self.members
    }

    /// Whether this node has been an acceptor (its store holds an incarnation): it keeps
    /// answering after it is removed from the set, as a stopped-late acceptor would.
    fn acceptor_store_kept(&self) -> bool {
        self.disk.meta().incarnation.is_some()
    }

    /// Membership: this node is told the new acceptor set (a new member starts its acceptor,
    /// empty, and rejoins before it votes). For a node that is down, pass no context: it reads
    /// the set when it restarts.
    pub(crate) fn install(&mut self, ctx: Option<&mut Ctx<'_, Self>>, members: Vec<NodeId>) {
        self.members = members.clone();
        // Every node is told every change, so every node numbers it alike.
        self.version += 1;
        let configuration = Configuration { version: self.version, acceptors: members.clone() };
        let Some(ctx) = ctx else { return };
        if !self.started {
            return self.start(ctx);
        }
        let now = ctx.now();
        if let Some(proposer) = &mut self.proposer {
            proposer.set_configuration(now, configuration.clone());
        }
        match &mut self.acceptor {
            Some(acceptor) => {
                acceptor.install(configuration);
            }
            None if members.contains(&NodeId(ctx.id() as u64)) => {
                let config = AcceptorConfig {
                    rejoin_retry: Duration::from_millis(40),
                    rejoin_page_slots: 2,
                    recovery: Recovery::NewEpoch,
                    version: self.version,
                    ..AcceptorConfig::new(NodeId(ctx.id() as u64), members, ctx.rng().random())
                };
                self.acceptor = Some(Acceptor::new(now, config, &self.disk));
            }
            None => {}
        }
        self.flush(ctx);
    }

    /// A client asks this node for `change` on `key`, as operation number `op`. Returns false if
    /// the node has no proposer or refused it (then the change certainly did not happen).
    pub(crate) fn propose(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        op: usize,
        key: Key,
        change: Change,
    ) -> bool {
        let now = ctx.now();
        let Some(proposer) = &mut self.proposer else { return false };
        match proposer.propose(now, key, change) {
            Ok(id) => {
                self.ops.insert(id, op);
                self.flush(ctx);
                true
            }
            Err(_) => false,
        }
    }

    fn flush(&mut self, ctx: &mut Ctx<'_, Self>) {
        let now = ctx.now();
        if let Some(acceptor) = &mut self.acceptor {
            while let Some(batch) = acceptor.poll_persist() {
                self.disk.write(&batch.records).expect("a memory store does not fail");
                acceptor.persisted(batch.id);
            }
            while let Some((to, message)) = acceptor.poll_transmit() {
                ctx.send(to.0 as usize, message);
            }
        }
        let mut next = self.acceptor.as_ref().and_then(|a| a.poll_timeout());
        if let Some(proposer) = &mut self.proposer {
            while let Some((to, message)) = proposer.poll_transmit() {
                ctx.send(to.0 as usize, message);
            }
            while let Some(done) = proposer.poll_completion() {
                if let Some(op) = self.ops.remove(&done.id) {
                    ctx.output(Done { op, result: done.result });
                }
            }
            next = match (next, proposer.poll_timeout()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        if let Some(at) = next
            && self.timer_at.is_none_or(|t| at < t || t <= now)
        {
            ctx.set_timer(at.saturating_duration_since(now), ());
            self.timer_at = Some(at);
        }
    }
}

impl SimNode for PaxosNode {
    type Msg = Message;
    type Timer = ();
    type Output = Done;

    fn on_message(&mut self, ctx: &mut Ctx<'_, Self>, from: usize, msg: Message) {
        if !self.started {
            self.start(ctx);
        }
        let now = ctx.now();
        if tracing() {
            eprintln!("{:?} n{from} -> n{}: {msg:?}", now, ctx.id());
        }
        let from = NodeId(from as u64);
        if msg.to_proposer()
            && let Some(proposer) = &mut self.proposer
        {
            let _ = proposer.handle_message(now, from, msg.clone());
        }
        if msg.to_acceptor()
            && let Some(acceptor) = &mut self.acceptor
        {
            let _ = acceptor.handle_message(now, from, msg);
        }
        self.flush(ctx);
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, _timer: ()) {
        let now = ctx.now();
        if self.timer_at.is_some_and(|t| t <= now) {
            self.timer_at = None;
        }
        if let Some(acceptor) = &mut self.acceptor {
            acceptor.handle_timeout(now);
        }
        if let Some(proposer) = &mut self.proposer {
            proposer.handle_timeout(now);
        }
        self.flush(ctx);
    }

    fn on_crash(&mut self) {
        self.acceptor = None;
        if !self.setup.durable {
            self.disk = MemoryStorage::new();
        }
        self.proposer = None;
        self.ops.clear();
        self.timer_at = None;
        self.started = false;
    }

    fn on_restart(&mut self, ctx: &mut Ctx<'_, Self>) {
        self.start(ctx);
    }
}

/// Whether `SHOAL_PAXOS_TRACE` asks for every delivered message to be printed.
fn tracing() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("SHOAL_PAXOS_TRACE").is_some())
}
