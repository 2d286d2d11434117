//! Randomised schedules: a seed picks the cluster, the client operations and the faults, the
//! simulator runs them, and every key's history is checked for linearisability.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use shoal_paxos::{Change, Entry, Key, NodeId, Outcome, Owner, Register};
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

/// What a schedule may do besides client operations.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Faults {
    pub(crate) crashes: bool,
    pub(crate) partitions: bool,
    /// The network's loss and duplication probabilities.
    pub(crate) drop: f64,
    pub(crate) duplicate: f64,
}

#[derive(Clone, Debug)]
enum Event {
    Op {
        node: usize,
        key: Key,
        change: Change,
    },
    Crash(usize),
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
}

/// Runs the schedule of `seed` on `setup` with `faults`, and checks each key's history.
pub(crate) fn run(seed: u64, setup: Setup, faults: Faults) -> Report {
    let mut rng = SmallRng::seed_from_u64(seed);
    let network = Network::lossy(faults.drop, faults.duplicate)
        .with_delay(Duration::from_millis(1), Duration::from_millis(8));
    let nodes = (0..node_count(setup)).map(|_| PaxosNode::new(setup)).collect();
    let mut sim = Sim::new(seed, network, nodes);
    let start = sim.now();
    for id in 0..node_count(setup) {
        sim.invoke(id, |node, ctx| node.start(ctx));
    }
    let events = plan(&mut rng, setup, faults, start);
    let mut invoked: Vec<Invoked> = Vec::new();
    for (at, event) in events {
        sim.run_until(at);
        collect(&mut sim, &mut invoked);
        apply(&mut sim, setup, event, &mut invoked);
    }
    // Let everything finish, then read every key once more from a healthy cluster.
    sim.heal();
    for id in 0..node_count(setup) {
        if !sim.is_up(id) {
            sim.restart(id);
        }
    }
    let settle = sim.now() + Duration::from_millis(500);
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
    Report { trace_hash: sim.trace_hash(), membership_steps, ..judge(invoked, start) }
}

/// The acceptors, and the spare node when the schedule changes membership.
fn node_count(setup: Setup) -> usize {
    setup.acceptors + usize::from(setup.membership)
}

fn keys() -> Vec<Key> {
    vec!["x".into(), "y".into()]
}

/// The schedule: a dozen client operations in the first 300 ms and faults among them.
fn plan(rng: &mut SmallRng, setup: Setup, faults: Faults, start: Instant) -> Vec<(Instant, Event)> {
    let ms = |n: u64| start + Duration::from_millis(n);
    let mut events = Vec::new();
    for _ in 0..12 {
        let node = rng.random_range(0..setup.proposers);
        let key = keys()[rng.random_range(0..keys().len())].clone();
        events.push((ms(rng.random_range(0..300)), Event::Op { node, key, change: change(rng) }));
    }
    if setup.membership {
        events.push((ms(rng.random_range(20..150)), Event::Reconfigure));
    }
    if faults.crashes {
        for _ in 0..rng.random_range(1..=3) {
            let node = rng.random_range(0..node_count(setup));
            let at = rng.random_range(0..300);
            events.push((ms(at), Event::Crash(node)));
            events.push((ms(at + rng.random_range(10..150)), Event::Restart(node)));
        }
    }
    if faults.partitions && rng.random_bool(0.7) {
        let at = rng.random_range(0..300);
        let side: Vec<usize> = (0..setup.acceptors).filter(|_| rng.random_bool(0.5)).collect();
        events.push((ms(at), Event::Partition(side)));
        events.push((ms(at + rng.random_range(20..200)), Event::Heal));
    }
    events.sort_by_key(|(at, _)| *at);
    events
}

fn change(rng: &mut SmallRng) -> Change {
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

fn apply(sim: &mut Sim<PaxosNode>, setup: Setup, event: Event, invoked: &mut Vec<Invoked>) {
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
            let all_voting = (0..setup.acceptors).all(|i| sim.is_up(i) && sim.node(i).is_voting());
            if sim.is_up(node) && (setup.durable || all_voting) {
                sim.crash(node);
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
}

/// The membership procedure of `shoal_paxos::membership`, while clients keep going: one
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
    let mut by_key: BTreeMap<Key, Vec<Operation<Change, Outcome>>> = BTreeMap::new();
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
        by_key.entry(op.key).or_default().push(Operation { op: op.change, call: op.at, response });
    }
    for (key, history) in by_key {
        if let Err(violation) = check(&RegisterModel, &history) {
            let lines: Vec<String> =
                history.iter().enumerate().map(|(i, op)| describe(i, op, start)).collect();
            report.violation = Some(format!("key {key:?}: {violation}\n{}", lines.join("\n")));
            break;
        }
    }
    report
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
