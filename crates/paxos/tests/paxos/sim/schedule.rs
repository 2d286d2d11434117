//! Randomised schedules: a seed picks the cluster, the client operations and the faults, the
//! simulator runs them, and every key's history is checked for linearisability.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use shoal_paxos::core::NodeId;
use shoal_paxos::{Change, Entry, Key, Outcome, Owner, Register};
use shoal_sim::linearizability::{Model, Operation, check};
use shoal_sim::{Network, Sim};

use super::node::{Done, PaxosNode, Setup};

/// The register as a sequential object: a change applied to the current register must give
/// exactly the outcome the proposer reported (value before, value after, whether it applied).
pub(crate) struct RegisterModel;

impl Model for RegisterModel {
    type State = Register;
    type Op = Change;
    type Ret = Outcome;

    fn init(&self) -> Register {
        Register::default()
    }

    fn step(&self, state: &Register, op: &Change, ret: Option<&Outcome>) -> Option<Register> {
        let (after, applied) = op.apply(state);
        let fits =
            ret.is_none_or(|r| r.before == *state && r.after == after && r.applied == applied);
        fits.then_some(after)
    }
}

/// What a schedule does besides client operations, and over how long.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Faults {
    pub(crate) crashes: Crashes,
    pub(crate) partitions: bool,
    /// The network's loss and duplication probabilities.
    pub(crate) drop: f64,
    pub(crate) duplicate: f64,
    /// The chance that a message is held back in the network's long tail, for up to
    /// [`LONG_TAIL_MAX`] (0.0: every message within the ordinary 1–8 ms).
    pub(crate) long_tail: f64,
    /// How many client operations the schedule starts.
    pub(crate) ops: usize,
    /// The virtual time, in ms, over which client operations and planned faults are spread.
    pub(crate) span_ms: u64,
}

impl Faults {
    /// The shape of the original schedules: a dozen operations in 300 ms, 1–3 crashes each
    /// restarting 10–150 ms later, a partition in seven schedules of ten, no long tail.
    pub(crate) const ORIGINAL: Faults = Faults {
        crashes: Crashes::Random { count: (1, 4), restart_ms: (10, 150) },
        partitions: true,
        drop: 0.05,
        duplicate: 0.05,
        long_tail: 0.0,
        ops: 12,
        span_ms: 300,
    };
}

/// How nodes crash in a schedule. Ranges are half-open, `(low, high)` for `low..high`. With
/// memory stores a crash loses the acceptor's state, and a schedule crashes an acceptor only
/// while every acceptor votes (at most a minority without state at once, as the crate docs,
/// "Losing state", require); `TwoAtOnce` takes exactly that minority of five.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Crashes {
    /// No node crashes.
    Never,
    /// `count` crashes of random nodes at random times within the span, each node restarting
    /// `restart_ms` later.
    Random { count: (usize, usize), restart_ms: (u64, u64) },
    /// `restarts` crashes of acceptors one after another, each a different acceptor from the
    /// one before, each restarting `restart_ms` after its crash; the next crash waits until
    /// the previous acceptor has rejoined (every acceptor votes) and then `gap_ms`. With memory
    /// stores every acceptor forgets, one at a time, what the others told it — the fences of
    /// the others' earlier lives among it — so incarnations would repeat if rejoins did not
    /// carry what they must.
    Rolling { restarts: (usize, usize), restart_ms: (u64, u64), gap_ms: (u64, u64) },
    /// `times` times, two acceptors crash at the same instant (with memory stores, both lose
    /// their state: a stateless minority of five), each restarting `restart_ms` later.
    TwoAtOnce { times: (usize, usize), restart_ms: (u64, u64) },
}

/// The longest a message is held back in the long tail: longer than any restart and rejoin
/// of a schedule, and than a request's whole deadline (400 ms), so a held message can land in
/// a later life of its receiver and a later round of its key.
pub(crate) const LONG_TAIL_MAX: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
enum Event {
    Op {
        node: usize,
        key: Key,
        change: Change,
    },
    Crash(usize),
    /// Two acceptors crash at the same instant.
    CrashTogether(usize, usize),
    Restart(usize),
    Partition(Vec<usize>),
    Heal,
    /// Runs the membership procedure: add the spare node, rewrite, remove acceptor 1, rewrite.
    Reconfigure,
}

/// One client operation as the test saw it.
#[derive(Clone, Debug)]
struct Invoked {
    key: Key,
    change: Change,
    at: Instant,
    result: Option<(Instant, Done)>,
}

/// What one schedule did, for the summary and for a failure report.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) ops: usize,
    pub(crate) completed: usize,
    pub(crate) violation: Option<String>,
    /// Failed operations by error (its `Debug` text), and operations with no answer at all.
    pub(crate) failures: BTreeMap<String, usize>,
    /// Membership steps completed (with their rewrites): 0, 1 or 2.
    pub(crate) membership_steps: usize,
    /// The simulator's fingerprint of the run.
    pub(crate) trace_hash: u64,
    /// Crashes that happened (a crash of two at once counts once).
    pub(crate) crashes: usize,
    /// Messages the network held back in its long tail.
    pub(crate) long_delayed: u64,
}

/// Runs the schedule of `seed` on `setup` with `faults`, and checks each key's history.
pub(crate) fn run(seed: u64, setup: Setup, faults: Faults) -> Report {
    let mut rng = SmallRng::seed_from_u64(seed);
    let network = Network::lossy(faults.drop, faults.duplicate)
        .with_delay(Duration::from_millis(1), Duration::from_millis(8))
        .with_long_tail(faults.long_tail, LONG_TAIL_MAX);
    let nodes = (0..node_count(setup)).map(|_| PaxosNode::new(setup)).collect();
    let mut sim = Sim::new(seed, network, nodes);
    for id in 0..node_count(setup) {
        sim.invoke(id, |node, ctx| node.start(ctx));
    }
    // The acceptors start empty and found the cluster's first epoch; the schedule begins once
    // they all vote in it (or after a second), so its faults hit a formed cluster.
    sim.run_until_condition(Duration::from_secs(1), |sim| all_voting(sim, setup));
    let start = sim.now();
    let events = plan(&mut rng, setup, faults, start);
    let mut invoked: Vec<Invoked> = Vec::new();
    let mut crashes = 0;
    let mut rolling = Rolling::new(&mut rng, faults.crashes);
    for (at, event) in events {
        crashes += rolling.run_until(&mut sim, &mut rng, setup, at, &mut invoked);
        collect(&mut sim, &mut invoked);
        crashes += apply(&mut sim, setup, event, &mut invoked);
    }
    // A rolling restart finishes (or gives up) before the end.
    let roll_deadline = sim.now() + Duration::from_secs(3);
    crashes += rolling.run_until(&mut sim, &mut rng, setup, roll_deadline, &mut invoked);
    // Let everything finish (every message held in the long tail lands), then read every key
    // once more from a healthy cluster.
    sim.heal();
    for id in 0..node_count(setup) {
        if !sim.is_up(id) {
            sim.restart(id);
        }
    }
    let tail = if faults.long_tail > 0.0 { LONG_TAIL_MAX } else { Duration::ZERO };
    let settle = sim.now() + Duration::from_millis(500) + tail;
    sim.run_until(settle);
    collect(&mut sim, &mut invoked);
    for key in keys() {
        apply(&mut sim, setup, Event::Op { node: 0, key, change: Change::Read }, &mut invoked);
    }
    let end = sim.now() + Duration::from_millis(600);
    sim.run_until(end);
    collect(&mut sim, &mut invoked);
    let members = sim.node(0).members();
    if std::env::var_os("SHOAL_PAXOS_TRACE").is_some() {
        eprintln!("members at the end: {members:?}");
    }
    let membership_steps = if !members.contains(&NodeId(1)) {
        2
    } else {
        usize::from(members.len() > setup.acceptors)
    };
    let long_delayed = sim.stats().long_delayed;
    let trace_hash = sim.trace_hash();
    Report { trace_hash, membership_steps, crashes, long_delayed, ..judge(invoked, start) }
}

/// A rolling restart in progress ([`Crashes::Rolling`]): which acceptor is down or rejoining,
/// and how many restarts are left.
struct Rolling {
    left: usize,
    restart_ms: (u64, u64),
    gap_ms: (u64, u64),
    last: Option<usize>,
    phase: Roll,
}

enum Roll {
    /// Waiting until `at` before crashing the next acceptor (once every acceptor votes).
    Gap { at: Instant },
    /// `node` is down until `at`.
    Down { node: usize, at: Instant },
    /// `node` restarted and rejoins; the gap starts once every acceptor votes.
    Rejoining,
}

impl Rolling {
    /// The roll `crashes` asks for, if any (none left to do otherwise).
    fn new(rng: &mut SmallRng, crashes: Crashes) -> Rolling {
        let (left, restart_ms, gap_ms) = match crashes {
            Crashes::Rolling { restarts, restart_ms, gap_ms } => {
                (rng.random_range(restarts.0..restarts.1), restart_ms, gap_ms)
            }
            _ => (0, (0, 1), (0, 1)),
        };
        let phase = Roll::Rejoining;
        Rolling { left, restart_ms, gap_ms, last: None, phase }
    }

    /// Runs the simulation until `deadline`, a millisecond at a time while restarts are left,
    /// crashing and restarting acceptors in turn; returns how many crashed.
    fn run_until(
        &mut self,
        sim: &mut Sim<PaxosNode>,
        rng: &mut SmallRng,
        setup: Setup,
        deadline: Instant,
        invoked: &mut [Invoked],
    ) -> usize {
        let mut crashed = 0;
        while self.left > 0 && sim.now() < deadline {
            let next = (sim.now() + Duration::from_millis(1)).min(deadline);
            sim.run_until(next);
            collect(sim, invoked);
            crashed += self.poll(sim, rng, setup);
        }
        sim.run_until(deadline);
        crashed
    }

    fn poll(&mut self, sim: &mut Sim<PaxosNode>, rng: &mut SmallRng, setup: Setup) -> usize {
        let now = sim.now();
        let ms = |(low, high): (u64, u64), rng: &mut SmallRng| {
            Duration::from_millis(rng.random_range(low..high))
        };
        match self.phase {
            Roll::Rejoining if all_voting(sim, setup) => {
                self.phase = Roll::Gap { at: now + ms(self.gap_ms, rng) };
                0
            }
            Roll::Gap { at } if at <= now && all_voting(sim, setup) => {
                let others = |n: &usize| Some(*n) != self.last;
                let candidates: Vec<usize> = (0..setup.acceptors).filter(others).collect();
                let node = candidates[rng.random_range(0..candidates.len())];
                sim.crash(node);
                self.last = Some(node);
                self.left -= 1;
                self.phase = Roll::Down { node, at: now + ms(self.restart_ms, rng) };
                1
            }
            Roll::Down { node, at } if at <= now => {
                sim.restart(node);
                self.phase = Roll::Rejoining;
                0
            }
            _ => 0,
        }
    }
}

/// Whether every acceptor is up and votes, all in one epoch: only then may one more lose its
/// state. (Right after a fresh cluster founds its first epoch, a founder that lost the race
/// may vote alone in an epoch of its own until a message of the real one reaches it.)
fn all_voting(sim: &Sim<PaxosNode>, setup: Setup) -> bool {
    let epochs: std::collections::BTreeSet<_> =
        (0..setup.acceptors).map(|i| sim.is_up(i).then(|| sim.node(i).voting_epoch())).collect();
    epochs.len() == 1 && epochs.iter().all(|epoch| matches!(epoch, Some(Some(_))))
}

/// The acceptors, and the spare node when the schedule changes membership.
fn node_count(setup: Setup) -> usize {
    setup.acceptors + usize::from(setup.membership)
}

fn keys() -> Vec<Key> {
    vec!["x".into(), "y".into()]
}

/// The schedule: client operations over the span and faults among them (a rolling restart is
/// not planned: it follows the acceptors' rejoins, see [`Rolling`]).
fn plan(rng: &mut SmallRng, setup: Setup, faults: Faults, start: Instant) -> Vec<(Instant, Event)> {
    let ms = |n: u64| start + Duration::from_millis(n);
    let span = faults.span_ms;
    let mut events = Vec::new();
    for _ in 0..faults.ops {
        let node = rng.random_range(0..setup.proposers);
        let key = keys()[rng.random_range(0..keys().len())].clone();
        events.push((ms(rng.random_range(0..span)), Event::Op { node, key, change: change(rng) }));
    }
    if setup.membership {
        events.push((ms(rng.random_range(20..150)), Event::Reconfigure));
    }
    match faults.crashes {
        Crashes::Random { count, restart_ms } => {
            for _ in 0..rng.random_range(count.0..count.1) {
                let node = rng.random_range(0..node_count(setup));
                let at = rng.random_range(0..span);
                events.push((ms(at), Event::Crash(node)));
                let back = at + rng.random_range(restart_ms.0..restart_ms.1);
                events.push((ms(back), Event::Restart(node)));
            }
        }
        Crashes::TwoAtOnce { times, restart_ms } => {
            for _ in 0..rng.random_range(times.0..times.1) {
                let a = rng.random_range(0..setup.acceptors);
                let b = (a + rng.random_range(1..setup.acceptors)) % setup.acceptors;
                let at = rng.random_range(0..span);
                events.push((ms(at), Event::CrashTogether(a, b)));
                for node in [a, b] {
                    let back = at + rng.random_range(restart_ms.0..restart_ms.1);
                    events.push((ms(back), Event::Restart(node)));
                }
            }
        }
        Crashes::Never | Crashes::Rolling { .. } => {}
    }
    if faults.partitions && rng.random_bool(0.7) {
        let at = rng.random_range(0..span);
        let side: Vec<usize> = (0..setup.acceptors).filter(|_| rng.random_bool(0.5)).collect();
        events.push((ms(at), Event::Partition(side)));
        events.push((ms(at + rng.random_range(20..200)), Event::Heal));
    }
    events.sort_by_key(|(at, _)| *at);
    events
}

/// A random client change: reads, sets, compare-and-sets, deletes, owned entries and their
/// clears, increments.
pub(crate) fn change(rng: &mut SmallRng) -> Change {
    let value = |rng: &mut SmallRng| -> Option<Entry> {
        match rng.random_range(0..4) {
            0 => None,
            1 => Some(Entry::new("a")),
            2 => Some(Entry::new("b")),
            _ => Some(Entry::owned("c", Owner(b"p".to_vec()))),
        }
    };
    match rng.random_range(0..7) {
        0 | 1 => Change::Read,
        2 => Change::Set(value(rng).unwrap_or_else(|| Entry::new("d"))),
        3 => Change::CompareAndSet { expected: value(rng), new: value(rng) },
        4 => Change::Delete,
        5 => Change::ClearIfOwner(Owner(b"p".to_vec())),
        _ => Change::Add(1),
    }
}

/// Applies one event; returns how many crashes happened (0 or 1).
fn apply(
    sim: &mut Sim<PaxosNode>,
    setup: Setup,
    event: Event,
    invoked: &mut Vec<Invoked>,
) -> usize {
    match event {
        Event::Op { node, key, change } => {
            let op = invoked.len();
            let at = sim.now();
            let (k, c) = (key.clone(), change.clone());
            let taken = sim.invoke(node, move |n, ctx| n.propose(ctx, op, k, c));
            if taken == Some(true) {
                invoked.push(Invoked { key, change, at, result: None });
            }
        }
        Event::Crash(node) => {
            // A store in memory is lost with its node: only a minority may be without state at
            // once (see the crate docs), so crash only while every acceptor votes.
            if sim.is_up(node) && (setup.durable || all_voting(sim, setup)) {
                sim.crash(node);
                return 1;
            }
        }
        Event::CrashTogether(a, b) => {
            // Two of five: still a minority, so both may lose their state together.
            if setup.durable || all_voting(sim, setup) {
                sim.crash(a);
                sim.crash(b);
                return 1;
            }
        }
        Event::Restart(node) => {
            if !sim.is_up(node) {
                sim.restart(node);
            }
        }
        Event::Partition(side) => {
            let other: Vec<usize> = (0..node_count(setup)).filter(|i| !side.contains(i)).collect();
            sim.partition(&[&side, &other]);
        }
        Event::Heal => sim.heal(),
        Event::Reconfigure => reconfigure(sim, setup, invoked),
    }
    0
}

/// The membership procedure of `shoal_paxos::core::membership`, while clients keep going: one
/// acceptor at a time, the new set given to the nodes one after another (so old and new sets
/// are in use together for a while), then every key rewritten through the new set before the
/// next step. A step whose rewrite does not succeed stops the procedure there.
fn reconfigure(sim: &mut Sim<PaxosNode>, setup: Setup, invoked: &mut Vec<Invoked>) {
    let spare = setup.acceptors;
    let mut members: Vec<NodeId> = (0..=spare).map(|i| NodeId(i as u64)).collect();
    if !install(sim, setup, invoked, &members) {
        return;
    }
    members.retain(|n| *n != NodeId(1));
    install(sim, setup, invoked, &members);
}

/// Gives every node `members`, a few milliseconds apart, waits for the new members to vote, and
/// rewrites every key; whether the rewrite succeeded.
fn install(
    sim: &mut Sim<PaxosNode>,
    setup: Setup,
    invoked: &mut Vec<Invoked>,
    members: &[NodeId],
) -> bool {
    for id in 0..node_count(setup) {
        let set = members.to_vec();
        if sim.is_up(id) {
            sim.invoke(id, move |node, ctx| node.install(Some(ctx), set));
        } else {
            sim.node_mut(id).install(None, set);
        }
        let next = sim.now() + Duration::from_millis(3);
        sim.run_until(next);
    }
    let voting = |sim: &Sim<PaxosNode>| {
        members.iter().all(|n| !sim.is_up(n.0 as usize) || sim.node(n.0 as usize).is_voting())
    };
    sim.run_until_condition(Duration::from_millis(500), voting);
    keys().into_iter().all(|key| rewrite(sim, setup, invoked, key))
}

/// An identity change of `key` through an up proposer, retried a few times; whether one
/// completed. These reads are client operations like the others, checked with them.
fn rewrite(sim: &mut Sim<PaxosNode>, setup: Setup, invoked: &mut Vec<Invoked>, key: Key) -> bool {
    for _ in 0..5 {
        let Some(node) = (0..setup.proposers).find(|&n| sim.is_up(n)) else { return false };
        let op = invoked.len();
        apply(sim, setup, Event::Op { node, key: key.clone(), change: Change::Read }, invoked);
        if invoked.len() == op {
            return false;
        }
        let deadline = sim.now() + Duration::from_millis(450);
        while sim.now() < deadline && invoked[op].result.is_none() {
            let next = sim.now() + Duration::from_millis(10);
            sim.run_until(next);
            collect(sim, invoked);
        }
        if matches!(invoked[op].result, Some((_, Done { result: Ok(_), .. }))) {
            return true;
        }
    }
    false
}

fn collect(sim: &mut Sim<PaxosNode>, invoked: &mut [Invoked]) {
    for record in sim.take_outputs() {
        let done: Done = record.output;
        if let Some(op) = invoked.get_mut(done.op) {
            op.result = Some((record.at, done));
        }
    }
}

/// Splits the history by key and checks each. An operation that failed without effect is left
/// out; one that failed maybe-applied, or never answered, is indeterminate.
fn judge(invoked: Vec<Invoked>, start: Instant) -> Report {
    let mut report = Report { ops: invoked.len(), ..Report::default() };
    let mut history = Vec::new();
    for op in &invoked {
        let kind = match &op.result {
            None => "no answer".to_string(),
            Some((_, Done { result: Err(e), .. })) => format!("{e:?}"),
            Some(_) => continue,
        };
        *report.failures.entry(kind).or_default() += 1;
    }
    for op in invoked {
        let response = match op.result {
            Some((at, Done { result: Ok(outcome), .. })) => {
                report.completed += 1;
                Some((at, outcome))
            }
            Some((_, Done { result: Err(e), .. })) if !e.maybe_applied() => continue,
            _ => None,
        };
        history.push((op.key, Operation { op: op.change, call: op.at, response }));
    }
    report.violation = check_per_key(history, start);
    report
}

/// Splits a history by key and checks each key's for linearisability against
/// [`RegisterModel`]: the first violation, with that key's history one line per operation
/// (times in ms from `start`), if there is one.
pub(crate) fn check_per_key(
    history: Vec<(Key, Operation<Change, Outcome>)>,
    start: Instant,
) -> Option<String> {
    let mut by_key: BTreeMap<Key, Vec<Operation<Change, Outcome>>> = BTreeMap::new();
    for (key, op) in history {
        by_key.entry(key).or_default().push(op);
    }
    by_key.into_iter().find_map(|(key, history)| {
        let violation = check(&RegisterModel, &history).err()?;
        let lines: Vec<String> =
            history.iter().enumerate().map(|(i, op)| describe(i, op, start)).collect();
        Some(format!("key {key:?}: {violation}\n{}", lines.join("\n")))
    })
}

/// One line per operation: index, change, invocation and response times (ms), outcome.
fn describe(index: usize, op: &Operation<Change, Outcome>, start: Instant) -> String {
    let ms = |at: Instant| at.duration_since(start).as_secs_f64() * 1000.0;
    let show = |r: &Register| match &r.entry {
        None => format!("v{}:-", r.version),
        Some(e) => format!("v{}:{}", r.version, String::from_utf8_lossy(&e.data)),
    };
    let response = match &op.response {
        None => "maybe".to_string(),
        Some((at, o)) => {
            format!(
                "{:.1}ms {} -> {} applied={}",
                ms(*at),
                show(&o.before),
                show(&o.after),
                o.applied
            )
        }
    };
    format!("  {index}: {:?} at {:.1}ms => {response}", op.op, ms(op.call))
}
