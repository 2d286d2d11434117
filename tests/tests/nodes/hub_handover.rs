//! Hot migration in the hub (issue 19, point 6) on whole simulated nodes: counters are moved
//! hot while writers on other nodes call them by child id, and no acknowledged increment is
//! lost.
//!
//! **The cluster.** Five nodes: `n0` (everyone's contact) and `n1` run the hub throughout and
//! a writer each; `n2` runs the hub from the start and may stop it on purpose ([`Hub::stop`]:
//! every counter it runs is handed over, hot, to its owner on the ring without it) and start
//! it again later (a join); `n3` starts without the hub, and a join step starts it there (with
//! a third writer); `n4` never runs the hub nor a writer (the bystander: only it crashes, and
//! comes back as a new life). The hub moves children hot ([`Migration::Hot`]); the counters'
//! behaviour is its [`Handover`].
//!
//! **A counter** ([`Tally`]) applies an increment `(writer, sequence)` only if the sequence is
//! newer than the highest it applied for that writer, and counts those it applied: a letter
//! forwarded twice, or a call retried after its first attempt got through, cannot inflate the
//! count, so the count measures loss. Its state (the highest sequence per writer, the count)
//! is what a move hands over.
//!
//! **A writer** calls a random counter by child id ([`Hub::via`]) with its next sequence, one
//! call at a time; a call that fails (a timeout, no such process while the child is between
//! copies, its node unreachable) is retried with the *same* sequence, three attempts at most,
//! then the writer moves on to the next sequence. Each sequence is *acknowledged* if one of its
//! attempts returned `Ok`, *timed out* otherwise.
//!
//! **The schedule** (steps 100 to 600 ms apart, while the writers write): each step moves
//! children — `n3` joins (its owners' counters move to it), `n2`'s hub stops on purpose or
//! starts again, or a random counter is moved with `child_redist_init` to a random hub node —
//! and, in some steps, adds a fault: a lossy way between two hub nodes (TCP over a lossy link:
//! late, never lost, with everything behind it), a one-way cut held for up to 300 ms (a
//! delay), or a crash or restart of the bystander. Latencies are drawn per connection, 1 to 20
//! ms.
//!
//! On half the seeds `n2` stops its hub at any time, a move into it perhaps under way (which
//! found the first bug below); on the others only once nothing is on its way (every counter
//! runs once and every hub says so).
//!
//! **Checked once all has settled** (the network healed, the writers stopped, within
//! [`SETTLE_BOUND`]):
//!
//! 1. every counter runs exactly once across the live nodes (the processes that live, as
//!    they record themselves), and every live hub names that copy;
//! 2. for every counter, acknowledged ≤ count ≤ acknowledged + timed out, where count is the
//!    number of (writer, sequence) increments it applied (read from its one copy); and no
//!    attempt was refused by a move: a call that the old copy's forwarder took is sent on, so
//!    its caller never hears that the process exited (`shoal.hub.moved`) or dropped the call
//!    (a timeout, or no such process between the copies, is told and retried: the hub allows
//!    both);
//! 3. over the run, at least 90% of the schedules moved counters hot (`HubEvent::HandedOver`
//!    on the movers): a schedule where nothing moves proves nothing. The totals are printed
//!    at the end (seeds 0..500: 3,731 hot moves, 7.5 per schedule, every schedule with some;
//!    28 sequences timed out in all).
//!
//! A move reported as [`HubEvent::HandOverFailed`] is counted, not failed: check 2 judges what
//! was lost. In seeds 0..500, 2 are reported (a restore that a lossy link made late) and
//! neither lost an increment; past them, such a move did (the second bug below, since fixed).
//!
//! **What a sequential caller cannot see.** A writer waits for each reply, so no two letters
//! of one writer are ever in flight together: the order of one sender's letters across the
//! switch, which the hub guarantees only for letters a forwarding hop apart (the `migrate`
//! module docs), is not tested here, and increments of different writers commute.
//!
//! **Found by it, and fixed** (two hub bugs, each replayed by a seeded regression test below):
//!
//! - A hub that stops on purpose while a hot move into it is under way (the new copy prepared
//!   there, the old one frozen) answers the mover's restore with `Stopped`; the state is
//!   dropped (`HandOverFailed`: "not restored there: Ok(Stopped)") and the counter starts over
//!   from nothing on its next owner, acknowledged increments with it (seed 64 with `n2` free
//!   to stop at any time: `tally/3` ends at count 2 of 7 acknowledged). `Hub::stop` hands over
//!   only the children it runs published; the prepared one is neither handed over nor waited
//!   for. Fixed: a stopping hub still answers the restore and the publication of a move into
//!   it, waits (within its hand-over deadline) for the moves under way, then hands their
//!   children on with its own.
//! - A restore that a lossy link delays (TCP: late, not lost) past the mover's deadline (for a
//!   redistribution, `retry_after`: 600 ms here) is given up on (`HandOverFailed`: "not
//!   restored there: Err(\"timed out\")"), and acknowledged increments are lost though nothing
//!   on the network was: seed 595 (`tally/1` ends at count 0 of 3 acknowledged: the copy that
//!   runs at the end never got the state), seed 1,056 (`tally/0` at 13 of 14: the late restore
//!   overwrote an increment forwarded ahead of it). Not in the fixed range 0..500, which
//!   passes; seen at 2 of 1,000 seeds past it (and at seed 52 with shorter steps). Fixed: the
//!   mover waits at least 5 s for the restore whatever its deadline, and if it gives up it
//!   closes the new copy's restore window before forwarding (a restore under way finishes
//!   first; one that comes later is ignored).
//! - A node that hears a counter's mover say "moving to n3", then "done", before it hears
//!   anything from n3 (here the hub on `n2`, restarted, while the way n3 → n2 is lossy) took
//!   the counter for an orphan after `down_after` and, as its owner, started a fresh copy; the
//!   heal resolved the two copies for the owner's, and the moved count was dropped (seed
//!   1,570: `tally/0` ends at count 3 of 10 acknowledged). Seen at 1 of 250 seeds past the
//!   fixed range. Fixed in the table: a child last seen moving to a node whose entry has not
//!   arrived is presumed to run there until that node is lost (or for ten `down_after`s).
//! - A move whose `Prepare` answer a lossy way (n2 → n3) held past the mover's deadline left
//!   an unpublished copy on the new node, which refused the next `Prepare` of the child as
//!   "being started"; when that next one was the hand-over of `n2`'s hub stopping, the
//!   counter was stopped with its state, and started afresh on n3 (seed 1,850: `tally/2` ends
//!   at count 4 of 11 acknowledged; the first seed past 1,350..1,850, which passed). Fixed: a
//!   copy prepared for the same mover and given no state yet is replaced by the next
//!   `Prepare`; and a hub that stops waits (within its hand-over deadline) for its moves out,
//!   as for those in, before it hands its children over. Two more past that, found by the
//!   next exploration (`SHOAL_SIM_SEED=2350`): the next `Prepare` came while the copy of the
//!   one given up on was still starting (seed 2,522: `tally/2` at 0 of 5), and one came to a
//!   node whose view still had the child running where the mover had taken it from (seed
//!   2,948: `tally/1` at 0 of 3, `tally/3` at 0 of 7; the mover's stopping hub gave up on the
//!   hand-over). Fixed: a `Prepare` waits, within its deadline, for a copy still starting
//!   there, and for a view in which another node still runs the child to catch up.
//! - The new copy of a hot move was stopped a second past its `Prepare`'s deadline if not
//!   yet published, though its old copy had frozen and its state had come: the mover, which
//!   gives a frozen move at least 5 s for the restore and as long for the mail, then asked
//!   to publish a copy that was gone, and the child started over from nothing (seed 2,522
//!   once replication greeted its peers again until they answered, which changed its
//!   interleaving: `n2`'s stopping hub handed `tally/2` to `n3` over the lossy way n2 → n3,
//!   and `tally/2` ended at count 0 of 5 acknowledged). Fixed: a new copy whose state came
//!   waits for its publication up to 18 s past the deadline (`FROZEN_GRACE` in `migrate.rs`).
//!
//! **Planted bugs** (each tried on 100 schedules, then reverted): in `migrate.rs`, the restore
//! skipped (killed at seed 0 by check 2: counts far below the acknowledged), the forwarding
//! never started before the publish (killed by check 3: no move completes hot, the drain
//! waiting out the deadline, and 1,385 sequences timed out); in the process runtime's
//! `hand_off.rs`, the letters queued at the freeze dropped (killed at seed 0 by check 2: a
//! call refused, "the process dropped the call without replying"), and the letters that reach
//! the forwarder after that drain dropped (killed at seed 1, the same way). Not killed: the
//! publish before the forwarding is drained (what it breaks is the order of one sender's
//! letters across the switch, which a sequential caller cannot see; see above).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use shoal_hub::core::TableConfig;
use shoal_hub::{
    ChildStatus, Handover, Handovers, Hub, HubChild, HubConfig, HubEvent, Migration, StartOptions,
};
use shoal_process::{
    CallError, ChildSpec, Codec, Context, ExitReason, Pid, Process, ReplyTo, Target,
};
use shoal_sim::SimNet;
use shoal_transport::Node;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::support::{ip, run_schedules};

/// Schedules run per test run; `SHOAL_SIM_HUB_HANDOVER_SCHEDULES` runs more (exploration).
const SCHEDULES: u64 = 250;

/// Move steps per schedule.
const STEPS: usize = 4;

/// The counters of a schedule.
const COUNTERS: usize = 6;

/// The nodes: `n0`..`n3` may run the hub, `n4` is the bystander.
const NODES: usize = 5;

/// The bystander, the only node that crashes.
const BYSTANDER: usize = 4;

/// Ring entries per node (fewer than the default: cheaper rings; the same on every node).
const VNODES: u32 = 64;

/// The hub id.
const HUB: &str = "tallies";

/// How long one attempt of a writer's call may take.
const CALL_TIMEOUT: Duration = Duration::from_millis(800);

/// Attempts of one sequence before the writer moves on.
const ATTEMPTS: usize = 3;

/// How long after the writers stop the checks must hold (see the module docs): a stopping
/// hub's hand-over deadline, then a failed-over or orphaned child's `down_after` and
/// `adopt_after`, and a retry.
const SETTLE_BOUND: Duration = Duration::from_secs(8);

fn config() -> HubConfig {
    // `hub.rs`'s, with hot migration.
    let base = super::hub::config();
    HubConfig {
        table: TableConfig { vnodes: VNODES, ..base.table },
        handovers: Handovers::default().with::<Tally>("tally"),
        migration: Migration::Hot { retention: Duration::from_secs(1) },
        handover_deadline: Duration::from_secs(3),
        ..base
    }
}

// ---------------------------------------------------------------------------------------------
// The counters.

/// A live process of a counter: where (host, life).
#[derive(Clone, Debug)]
struct Running {
    child: String,
    host: usize,
}

/// The counters' own record of their processes.
#[derive(Default)]
struct Shared {
    live: Mutex<BTreeMap<Pid, Running>>,
}

impl Shared {
    fn live(&self) -> MutexGuard<'_, BTreeMap<Pid, Running>> {
        self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// An increment `(writer, sequence)`, or `None`: a read.
type Increment = Option<(u32, u64)>;

/// A counter (see the module docs): records its process in `init` and watches its exit.
struct Tally {
    child: String,
    host: usize,
    shared: Arc<Shared>,
    /// The highest sequence applied, per writer.
    applied: BTreeMap<u32, u64>,
    /// Increments applied.
    count: u64,
}

impl Process for Tally {
    type Message = ();
    type Call = Increment;
    type Reply = u64;

    async fn init(&mut self, ctx: &mut Context<Self>) -> Result<(), ExitReason> {
        let pid = ctx.pid();
        let running = Running { child: self.child.clone(), host: self.host };
        self.shared.live().insert(pid, running);
        let (exit, shared) = (ctx.runtime().watch(pid), self.shared.clone());
        tokio::spawn(async move {
            exit.await;
            shared.live().remove(&pid);
        });
        Ok(())
    }

    async fn handle_cast(&mut self, (): (), _: &mut Context<Self>) {}

    async fn handle_call(
        &mut self,
        increment: Increment,
        reply: ReplyTo<u64>,
        _: &mut Context<Self>,
    ) {
        if let Some((writer, sequence)) = increment {
            let highest = self.applied.entry(writer).or_default();
            if sequence > *highest {
                *highest = sequence;
                self.count += 1;
            }
        }
        reply.send(self.count);
    }

    fn remote_messages() -> Option<Codec<Self>> {
        Some(Codec::msgpack())
    }
}

impl Handover for Tally {
    type State = (BTreeMap<u32, u64>, u64);

    fn snapshot(&self) -> Self::State {
        (self.applied.clone(), self.count)
    }

    fn restore(&mut self, (applied, count): Self::State, _: &mut Context<Self>) {
        self.applied = applied;
        self.count = count;
    }
}

fn tally(id: &str) -> HubChild {
    HubChild::new(ChildSpec::new(id, "tally", &id.to_owned()).expect("a spec"))
}

fn counter_id(index: usize) -> String {
    format!("tally/{index}")
}

// ---------------------------------------------------------------------------------------------
// The writers.

/// What the writers were told, per counter.
#[derive(Clone, Copy, Debug, Default)]
struct Tallied {
    acknowledged: u64,
    timed_out: u64,
}

#[derive(Default)]
struct Ledger {
    counters: Mutex<BTreeMap<String, Tallied>>,
    /// Attempts refused by a move (see [`spawn_writer`]), with why.
    refused: Mutex<Vec<String>>,
}

impl Ledger {
    fn counters(&self) -> MutexGuard<'_, BTreeMap<String, Tallied>> {
        self.counters.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn refused(&self, refusal: String) {
        self.refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(refusal);
    }

    /// One sequence of a writer to `child`: acknowledged, or timed out.
    fn tally(&self, child: &str, acknowledged: bool) {
        let mut counters = self.counters();
        let tallied = counters.entry(child.to_owned()).or_default();
        if acknowledged {
            tallied.acknowledged += 1;
        } else {
            tallied.timed_out += 1;
        }
    }
}

/// Writer `writer`: calls random counters by child id through `hub` until `stop` (see the
/// module docs); its refusals are timed from `began`.
fn spawn_writer(
    writer: u32,
    node: &Node,
    hub: &Hub,
    seed: u64,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
    began: Instant,
) -> JoinHandle<()> {
    let runtime = node.runtime().clone();
    let targets: Vec<(String, Target<Tally>)> = (0..COUNTERS)
        .map(|index| (counter_id(index), runtime.target::<Tally>(hub.via(&counter_id(index)))))
        .collect();
    let mut rng = SmallRng::seed_from_u64(seed ^ (u64::from(writer) << 40));
    let hub = hub.clone();
    tokio::spawn(async move {
        // A writer on a node that just joined starts once its hub knows the counters.
        while (0..COUNTERS).any(|index| hub.child(&counter_id(index)).is_none()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut sequence = 0;
        while !stop.load(Ordering::Relaxed) {
            let (child, target) = &targets[rng.random_range(0..targets.len())];
            sequence += 1;
            let mut acknowledged = false;
            for _ in 0..ATTEMPTS {
                match target.call_timeout(Some((writer, sequence)), CALL_TIMEOUT).await {
                    Ok(_) => {
                        acknowledged = true;
                        break;
                    }
                    // Refused by the move itself: a letter the old copy's forwarder took and
                    // did not send on (its caller told the process exited, or no reply).
                    Err(error @ (CallError::Exited(_) | CallError::NoReply)) => {
                        ledger.refused(format!(
                            "{:>6} ms: writer {writer}'s call of {child} with {sequence}: {error}",
                            began.elapsed().as_millis()
                        ));
                    }
                    // Not found between copies, or late: the sender is told, and retries.
                    Err(_) => {}
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            ledger.tally(child, acknowledged);
            tokio::time::sleep(Duration::from_millis(rng.random_range(40..120))).await;
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Nodes.

/// One life of a node, and its hub while it runs one.
struct Life {
    node: Node,
    hub: Option<Hub>,
}

fn name(host: usize) -> String {
    format!("n{host}")
}

/// Starts node `n{host}`'s `life`-th life (its hub not yet), joining it through `contact` (if
/// any) in the background until the network lets it.
async fn start_life(
    net: &SimNet,
    shared: &Arc<Shared>,
    host: usize,
    life: u64,
    seed: u64,
    contact: Option<SocketAddr>,
) -> Life {
    let seed = seed ^ (life << 32) ^ host as u64;
    let node = crate::support::start_node(net, host as u8, life, seed).await;
    let factory_shared = shared.clone();
    node.runtime()
        .register_factory("tally", move |child: String| Tally {
            child,
            host,
            shared: factory_shared.clone(),
            applied: BTreeMap::new(),
            count: 0,
        })
        .expect("the factory registers");
    crate::support::join_in_background(&node, contact);
    Life { node, hub: None }
}

// ---------------------------------------------------------------------------------------------
// The schedule.

/// What a schedule saw, for the failure message and the run's summary.
struct Model {
    began: Instant,
    /// Every hub's events, from its start (kept after the hub stops: its hand-overs come
    /// while it stops).
    events: Vec<(usize, broadcast::Receiver<HubEvent>)>,
    /// When `n2` may stop its hub.
    stop_when: StopWhen,
    /// The bystander's lives so far, after the first.
    bystander_lives: u64,
    log: Vec<String>,
}

impl Model {
    fn note(&mut self, line: String) {
        let line = format!("{:>6} ms: {line}", self.began.elapsed().as_millis());
        if std::env::var("SHOAL_SIM_VERBOSE").is_ok() {
            eprintln!("{line}");
        }
        self.log.push(line);
    }

    /// Starts the hub on `life` (host `host`).
    async fn start_hub(&mut self, host: usize, life: &mut Life) -> bool {
        match Hub::start(&life.node, HUB, config()).await {
            Ok(hub) => {
                self.events.push((host, hub.subscribe()));
                life.hub = Some(hub);
                self.note(format!("n{host} starts its hub"));
                true
            }
            Err(error) => {
                self.note(format!("n{host}'s hub does not start: {error}"));
                false
            }
        }
    }
}

/// Live hubs: (host, hub).
fn hubs(lives: &[Option<Life>]) -> impl Iterator<Item = (usize, &Hub)> {
    lives.iter().enumerate().filter_map(|(host, life)| Some((host, life.as_ref()?.hub.as_ref()?)))
}

/// One move step (see the module docs).
async fn move_step(
    lives: &mut [Option<Life>],
    shared: &Shared,
    model: &mut Model,
    rng: &mut SmallRng,
    writers: &mut Vec<JoinHandle<()>>,
    spawn: &dyn Fn(u32, &Life) -> JoinHandle<()>,
) {
    match rng.random_range(0..3) {
        0 if lives[3].as_ref().is_some_and(|life| life.hub.is_none()) => {
            let life = lives[3].as_mut().expect("n3 lives");
            if model.start_hub(3, life).await && writers.len() < 3 {
                writers.push(spawn(2, life));
            }
        }
        0 | 1 => match lives[2].as_mut().expect("n2 lives").hub.clone() {
            Some(hub) => {
                if model.stop_when == StopWhen::Settled {
                    let settling = Instant::now();
                    while placed(lives, shared).is_err() && settling.elapsed() < SETTLE_BOUND {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                model.note("n2 stops its hub".into());
                lives[2].as_mut().expect("n2 lives").hub = None;
                hub.stop().await;
                model.note("n2's hub stopped".into());
            }
            None => {
                model.start_hub(2, lives[2].as_mut().expect("n2 lives")).await;
            }
        },
        _ => {
            let live: Vec<(usize, Hub)> =
                hubs(lives).map(|(host, hub)| (host, hub.clone())).collect();
            let (from, hub) = &live[rng.random_range(0..live.len())];
            let (to, _) = &live[rng.random_range(0..live.len())];
            let child = counter_id(rng.random_range(0..COUNTERS));
            let result = hub.child_redist_init(&child, &name(*to), Duration::from_secs(2)).await;
            model.note(format!("n{from} moves {child} to n{to}: {result:?}"));
        }
    }
}

/// One fault, some of the time (see the module docs).
async fn fault_step(
    net: &SimNet,
    shared: &Arc<Shared>,
    lives: &mut [Option<Life>],
    model: &mut Model,
    rng: &mut SmallRng,
    seed: u64,
    contact: SocketAddr,
) {
    let hub_ips: Vec<IpAddr> = (0..BYSTANDER).map(|host| ip(host as u8 + 1)).collect();
    let from = rng.random_range(0..hub_ips.len());
    let to = (from + rng.random_range(1..hub_ips.len())) % hub_ips.len();
    match rng.random_range(0..5) {
        0 => {
            net.lose(hub_ips[from], hub_ips[to], 0.2);
            model.note(format!("lossy n{from} -> n{to}"));
        }
        1 => {
            let held = Duration::from_millis(rng.random_range(50..300));
            net.cut(hub_ips[from], hub_ips[to]);
            model.note(format!("n{from} -> n{to} held for {held:?}"));
            let net = net.clone();
            tokio::spawn(async move {
                tokio::time::sleep(held).await;
                net.heal();
            });
        }
        2 => match lives[BYSTANDER].take() {
            Some(life) => {
                life.node.shutdown();
                net.reset(ip(BYSTANDER as u8 + 1));
                model.note(format!("n{BYSTANDER} crashes"));
            }
            None => {
                model.bystander_lives += 1;
                let life = model.bystander_lives;
                lives[BYSTANDER] =
                    Some(start_life(net, shared, BYSTANDER, life, seed, Some(contact)).await);
                model.note(format!("n{BYSTANDER} restarts"));
            }
        },
        _ => {}
    }
}

/// What is wrong now with check 1, if anything: child → its one pid otherwise.
fn placed(lives: &[Option<Life>], shared: &Shared) -> Result<BTreeMap<String, Pid>, String> {
    let mut processes: BTreeMap<String, Vec<(usize, Pid)>> = BTreeMap::new();
    for (pid, running) in shared.live().iter() {
        if lives[running.host].is_some() {
            processes.entry(running.child.clone()).or_default().push((running.host, *pid));
        }
    }
    let mut placed = BTreeMap::new();
    for index in 0..COUNTERS {
        let child = counter_id(index);
        let procs = processes.get(&child).map_or(&[][..], Vec::as_slice);
        let [(host, pid)] = procs else {
            return Err(format!("{child} has processes {procs:?}"));
        };
        for (viewer, hub) in hubs(lives) {
            let copies = hub.child(&child).map(|info| info.copies);
            if copies != Some(vec![(name(*host), ChildStatus::Running(*pid))]) {
                return Err(format!("n{viewer} sees {child} as {copies:?}, not on n{host}"));
            }
        }
        placed.insert(child, *pid);
    }
    Ok(placed)
}

/// When `n2` may stop its hub on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopWhen {
    /// Once no child is on its way anywhere (every counter runs once, and every hub says so):
    /// no move into `n2` is under way (see the module docs).
    Settled,
    /// At once, while a child may be on its way to `n2` (the first bug of the module docs).
    AnyTime,
}

impl StopWhen {
    /// Half the seeds each.
    fn of(seed: u64) -> StopWhen {
        if seed.is_multiple_of(2) { StopWhen::AnyTime } else { StopWhen::Settled }
    }
}

/// What one schedule did: hot moves (hand-overs reported by the movers).
struct Outcome {
    handed_over: usize,
    /// Hand-overs reported failed (`HandOverFailed`).
    failed_over: usize,
    /// Sequences timed out (every attempt failed).
    timed_out: u64,
}

async fn run_schedule(seed: u64, stop_when: StopWhen) -> Result<Outcome, String> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let net = SimNet::new(seed, Duration::from_millis(1), Duration::from_millis(20));
    let shared = Arc::new(Shared::default());
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut model = Model {
        began: Instant::now(),
        events: Vec::new(),
        stop_when,
        bystander_lives: 0,
        log: Vec::new(),
    };
    let model_began = model.began;
    let first = start_life(&net, &shared, 0, 0, seed, None).await;
    let contact = first.node.listen_addr();
    let mut lives = vec![Some(first)];
    for host in 1..NODES {
        lives.push(Some(start_life(&net, &shared, host, 0, seed, Some(contact)).await));
    }
    // `n0`..`n2` start with the hub; `n3` joins later.
    for (host, life) in lives.iter_mut().enumerate().take(3) {
        model.start_hub(host, life.as_mut().expect("live")).await;
    }
    let hub0 = lives[0].as_ref().and_then(|life| life.hub.clone()).expect("n0's hub");
    crate::support::eventually("the first hubs see each other", || {
        hubs(&lives).all(|(_, hub)| hub.nodes().len() == 3)
    })
    .await;
    let counters: Vec<HubChild> = (0..COUNTERS).map(|index| tally(&counter_id(index))).collect();
    let results =
        hub0.init_children(counters, StartOptions::default()).await.expect("a valid batch");
    if let Some((child, Err(error))) = results.iter().find(|(_, result)| result.is_err()) {
        return Err(format!("{child} did not start: {error}"));
    }
    crate::support::eventually("the counters are placed", || placed(&lives, &shared).is_ok()).await;
    let spawn = |writer: u32, life: &Life| {
        let hub = life.hub.as_ref().expect("a writer's node runs the hub");
        spawn_writer(writer, &life.node, hub, seed, ledger.clone(), stop.clone(), model_began)
    };
    let mut writers: Vec<JoinHandle<()>> =
        (0..2).map(|host| spawn(host as u32, lives[host].as_ref().expect("live"))).collect();
    tokio::time::sleep(Duration::from_millis(rng.random_range(100..400))).await;
    for _ in 0..STEPS {
        move_step(&mut lives, &shared, &mut model, &mut rng, &mut writers, &spawn).await;
        if rng.random_bool(0.5) {
            fault_step(&net, &shared, &mut lives, &mut model, &mut rng, seed, contact).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..600))).await;
    }
    net.heal();
    model.note("last heal".into());
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.map_err(|error| format!("a writer failed: {error}"))?;
    }
    model.note("the writers stopped".into());
    let stopped = Instant::now();
    let placed = loop {
        match placed(&lives, &shared) {
            Ok(placed) => break placed,
            Err(wrong) if stopped.elapsed() > SETTLE_BOUND => {
                return Err(format!("{SETTLE_BOUND:?} after the writers stopped: {wrong}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    // 2. Nothing acknowledged lost, nothing counted that was not sent.
    let runtime = lives[0].as_ref().expect("n0 lives").node.runtime().clone();
    let tallied = ledger.counters().clone();
    let mut wrong = Vec::new();
    for (child, pid) in &placed {
        let count = runtime
            .target::<Tally>(*pid)
            .call_timeout(None, Duration::from_secs(5))
            .await
            .map_err(|error| format!("{child} ({pid:?}) does not answer: {error}"))?;
        let Tallied { acknowledged, timed_out } = tallied.get(child).copied().unwrap_or_default();
        let line =
            format!("{child}: count {count}, acknowledged {acknowledged}, timed out {timed_out}");
        if count < acknowledged || count > acknowledged + timed_out {
            wrong.push(line.clone());
        }
        model.note(line);
    }
    // 3. The hot moves that happened; a failed hand-over lost a state.
    let (mut handed_over, mut failed_over) = (0, 0);
    let mut events = std::mem::take(&mut model.events);
    for (host, receiver) in &mut events {
        while let Ok(event) = receiver.try_recv() {
            match event {
                HubEvent::HandedOver { child, to, bytes } => {
                    handed_over += 1;
                    model.note(format!("n{host} handed {child} over to {to} ({bytes} bytes)"));
                }
                HubEvent::HandOverFailed { child, to, error } => {
                    failed_over += 1;
                    model.note(format!("n{host} failed to hand {child} over to {to}: {error}"));
                }
                _ => {}
            }
        }
    }
    // 2. No call refused by a move.
    let refused = std::mem::take(
        &mut *ledger.refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    wrong.extend(refused);
    for life in lives.iter().flatten() {
        life.node.shutdown();
    }
    if wrong.is_empty() {
        let timed_out = tallied.values().map(|tallied| tallied.timed_out).sum();
        Ok(Outcome { handed_over, failed_over, timed_out })
    } else {
        Err(format!("{}\nschedule:\n{}", wrong.join("\n"), model.log.join("\n")))
    }
}

/// Under seeded schedules of joins, hubs stopped on purpose and started again, and counters
/// moved by hand, with delays, lossy links and a bystander's crashes, no increment a writer
/// was told applied is lost and none is counted twice; every counter runs once at the end;
/// and most schedules did move counters hot (the module docs).
#[test]
fn a_hot_move_loses_no_acknowledged_increment() {
    let outcomes = Mutex::new(Vec::new());
    run_schedules(
        "SHOAL_SIM_HUB_HANDOVER_SCHEDULES",
        SCHEDULES,
        "a_hot_move_loses_no_acknowledged_increment",
        |seed| {
            let outcomes = &outcomes;
            async move {
                let outcome = run_schedule(seed, StopWhen::of(seed)).await?;
                outcomes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(outcome);
                Ok(())
            }
        },
    );
    let outcomes = outcomes.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    let schedules = outcomes.len();
    let moved = outcomes.iter().filter(|outcome| outcome.handed_over > 0).count();
    let hot: usize = outcomes.iter().map(|outcome| outcome.handed_over).sum();
    let failed: usize = outcomes.iter().map(|outcome| outcome.failed_over).sum();
    let timed_out: u64 = outcomes.iter().map(|outcome| outcome.timed_out).sum();
    let most = outcomes.iter().map(|outcome| outcome.handed_over).max().unwrap_or(0);
    eprintln!(
        "{schedules} schedules, {moved} with hot moves: {hot} hot moves ({:.1} per schedule, at \
         most {most}), {failed} hand-overs reported failed, {timed_out} sequences timed out",
        hot as f64 / schedules.max(1) as f64
    );
    // 3. Most schedules moved counters hot.
    assert!(moved * 10 >= schedules * 9, "hot moves in only {moved} of {schedules} schedules");
}

/// The first bug this simulation found, fixed (see the module docs): `n2`'s hub stops on
/// purpose while a counter is on its way to it (prepared there, not yet restored), and the
/// counter's state was lost (`HandOverFailed`: "not restored there: Ok(Stopped)"),
/// acknowledged increments with it. Seed 64 of the schedules above, with `n2` free to stop at any time.
#[test]
fn a_hub_that_stops_during_a_move_into_it_keeps_the_moved_state() {
    let outcome = crate::support::paused_runtime().block_on(run_schedule(64, StopWhen::AnyTime));
    if let Err(error) = outcome {
        panic!("seed 64: {error}");
    }
}

/// The second bug this simulation found, fixed (see the module docs): a restore that a lossy
/// link delays past the mover's deadline is given up on (`HandOverFailed`: "not restored there:
/// Err(\"timed out\")") though the link only delayed it, and acknowledged increments are lost:
/// seed 595 (`tally/1` ends at count 0 of 3 acknowledged), seed 1,056 (`tally/0` at 13 of 14:
/// the late restore overwrote an increment forwarded before it). Seeds from an exploration
/// past the fixed range (`SHOAL_SIM_SEED=500`, `=1000`).
#[test]
fn a_slow_restore_keeps_the_moved_state() {
    for seed in [595, 1_056] {
        let outcome =
            crate::support::paused_runtime().block_on(run_schedule(seed, StopWhen::Settled));
        if let Err(error) = outcome {
            panic!("seed {seed}: {error}");
        }
    }
}

/// The third bug this simulation found, fixed (see the module docs): the restarted `n2` took
/// a counter it had seen moving to `n3`, from which it had not heard yet, for an orphan, and
/// started a fresh copy that won the conflict (seed 1,570: `tally/0` ends at count 3 of 10
/// acknowledged). From an exploration past the fixed range (`SHOAL_SIM_SEED=1350`).
#[test]
fn a_counter_moving_to_a_node_not_yet_heard_from_is_not_started_again() {
    let outcome =
        crate::support::paused_runtime().block_on(run_schedule(1_570, StopWhen::of(1_570)));
    if let Err(error) = outcome {
        panic!("seed 1570: {error}");
    }
}

/// The fourth bug this simulation found, fixed (see the module docs): a copy prepared for a
/// move its mover had given up on refused the mover's next `Prepare`, the hand-over of its
/// stopping hub, and the counter's state was lost (seed 1,850: `tally/2` ends at count 4 of
/// 11 acknowledged); and two like it (seeds 2,522 and 2,948: a `Prepare` refused while that
/// copy was still starting, and by a view not caught up). From explorations past the fixed
/// range (`SHOAL_SIM_SEED=1850`, `=2350`). Since the replication's greetings changed the
/// interleavings, seed 2,522 plays out otherwise: it now replays the fifth bug (a frozen
/// move's new copy stopped before its mover published it).
#[test]
fn a_move_given_up_on_does_not_block_the_next_one() {
    for seed in [1_850, 2_522, 2_948] {
        let outcome =
            crate::support::paused_runtime().block_on(run_schedule(seed, StopWhen::of(seed)));
        if let Err(error) = outcome {
            panic!("seed {seed}: {error}");
        }
    }
}
