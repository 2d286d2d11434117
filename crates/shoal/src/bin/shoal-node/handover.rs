//! The `handover-hub` commands: hub [`HANDOVER_HUB`] (`shoal-hub` with hot migration,
//! [`config`]), opened and closed by command (so the cluster test can have a node join it and
//! another leave it on purpose), its counter children ([`Counter`], with a
//! [`Handover`] so their counts move with them), the writers that
//! increment them by child id, and this node's tally of the hand-overs it made.
//!
//! - A counter is child `c/N` from the factory [`FACTORY`] (argument `N`); it records itself
//!   in the hub's [`Live`] tally while it lives, as the other hubs' children do, so `report`
//!   tells which counters really run here.
//! - An increment is a call carrying (writer, sequence): a counter applies writer `W`'s
//!   increment number `S` only if `S` is above the last it applied from `W`, so a retry never
//!   counts twice (each writer numbers its increments 1, 2, ..., across all counters, and has
//!   one call in flight at a time).
//! - A writer retries an increment that failed (no process, a timeout) every
//!   [`RETRY_PAUSE`], with the same number, until it is answered or [`GIVE_UP`] has passed
//!   since its first try: answered, it is *acknowledged*; given up, it *timed out* (it may or
//!   may not have been applied). So a counter's count must be at least the increments
//!   acknowledged for it and at most those plus the ones that timed out.
//! - For a failure's reader, each counter process writes a line to stderr (the node's log)
//!   when it starts, when it restores a count handed over to it, and when it ends (with its
//!   count and exit reason), after the wall-clock time in ms: `MS c/N PID: started`,
//!   `MS c/N PID: restored at COUNT over COUNT`, `MS c/N PID: ended at COUNT (REASON)`.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal::hub::core::TableConfig;
use shoal::hub::{Handover, Handovers, Hub, HubConfig, HubEvent, Migration};
use shoal::prelude::*;
use shoal::transport::Node;
use tokio::sync::broadcast;
use tokio::task::JoinSet;

use crate::hub::{HubCommands, Live, Presence};
use crate::{lock, parse_value, unix_ms};

/// The hub of counters with hot migration (the `handover-hub` commands).
pub(crate) const HANDOVER_HUB: &str = "cluster-test-handover";

/// The factory of [`HANDOVER_HUB`]'s counters, on every node.
pub(crate) const FACTORY: &str = "cluster-test-counter";

/// How long letters for a moved counter's old pid are forwarded to the new one.
const RETENTION: Duration = Duration::from_secs(1);

/// How long a hub that closes here may take to hand its counters over (10 s by default):
/// well within the cluster test's command timeout, so `close` is always answered.
const HANDOVER_DEADLINE: Duration = Duration::from_secs(5);

/// How long one try of an increment, or a read, may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// The pause before an increment that failed is tried again.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// How long after its first try an increment is given up (it timed out).
const GIVE_UP: Duration = Duration::from_secs(3);

/// How long a node's moves to one node may take together (the table's `retry_after`, 1 s in
/// the other hubs' knobs): a node moves its children to a joiner one at a time within it, so
/// 1 s is too short for a debug build's couple of hundred hot moves, and a hot move that runs
/// out of it after the old copy froze loses the state (`HandOverFailed`: "not restored
/// there").
const MOVES_DEADLINE: Duration = Duration::from_secs(5);

/// [`HANDOVER_HUB`]'s configuration: the other hubs' short knobs ([`crate::hub::config`]),
/// but [`MOVES_DEADLINE`]; hot migration with a retention of [`RETENTION`], and the
/// counters' hand-over.
pub(crate) fn config() -> HubConfig {
    let base = crate::hub::config();
    let table = TableConfig { retry_after: MOVES_DEADLINE, ..base.table };
    HubConfig {
        table,
        handovers: Handovers::default().with::<Counter>(FACTORY),
        migration: Migration::Hot { retention: RETENTION },
        handover_deadline: HANDOVER_DEADLINE,
        ..base
    }
}

/// An increment: `Some((writer, sequence))`; a read: `None`.
type CounterCall = Option<(String, u64)>;

/// A counter child: its count, and the last increment applied from each writer.
pub(crate) struct Counter {
    number: u32,
    live: Live,
    /// Taken in `init` (so that only a process that started is recorded).
    presence: Option<Presence>,
    count: u64,
    last: BTreeMap<String, u64>,
}

impl Process for Counter {
    type Message = ();
    type Call = CounterCall;
    type Reply = u64;

    async fn init(&mut self, ctx: &mut Context<Self>) -> Result<(), ExitReason> {
        self.presence = Some(Presence::enter(self.number, &self.live));
        eprintln!("{} c/{} {}: started", unix_ms(), self.number, ctx.pid());
        Ok(())
    }

    async fn terminate(&mut self, reason: &ExitReason, ctx: &mut Context<Self>) {
        let (number, pid, now) = (self.number, ctx.pid(), unix_ms());
        eprintln!("{now} c/{number} {pid}: ended at {} ({reason})", self.count);
    }

    async fn handle_cast(&mut self, (): (), _: &mut Context<Self>) {}

    /// Applies an increment once per (writer, sequence); answers the count.
    async fn handle_call(&mut self, call: CounterCall, reply: ReplyTo<u64>, _: &mut Context<Self>) {
        if let Some((writer, sequence)) = call {
            let last = self.last.entry(writer).or_default();
            if sequence > *last {
                *last = sequence;
                self.count += 1;
            }
        }
        reply.send(self.count);
    }

    fn remote_messages() -> Option<Codec<Self>> {
        Some(Codec::msgpack())
    }
}

impl Handover for Counter {
    type State = (u64, BTreeMap<String, u64>);

    fn snapshot(&self) -> Self::State {
        (self.count, self.last.clone())
    }

    fn restore(&mut self, (count, last): Self::State, ctx: &mut Context<Self>) {
        // For a failure's reader: where each counter's count went.
        let (number, pid, now) = (self.number, ctx.pid(), unix_ms());
        eprintln!("{now} c/{number} {pid}: restored at {count} over {}", self.count);
        self.count = count;
        self.last = last;
    }
}

/// The hub on this node (when open), its counters' tally, the writers and the hand-overs.
pub(crate) struct HandoverHub {
    node: Node,
    live: Live,
    hub: Option<HubCommands>,
    writers: Option<Writers>,
    moves: Arc<Mutex<Moves>>,
}

/// The hand-overs this node made as a mover, since it started (whatever the hub's runs).
#[derive(Default)]
struct Moves {
    /// `HandedOver` events: children moved hot from here.
    handed: u64,
    /// `HandOverFailed` events: moves whose state was lost.
    failed: u64,
    /// `ForwardingEnded` events: retention windows of old copies that ended.
    windows: u64,
    /// Letters forwarded to new copies, and those that could not be, in those windows.
    forwarded: u64,
    unforwarded: u64,
    /// Events missed by the tally (it fell behind): the figures above are then too low.
    lagged: u64,
}

impl HandoverHub {
    /// Registers the counters' factory on `node`; the hub is not open yet.
    pub(crate) fn register(node: &Node) -> Result<Self, String> {
        let live = Live::default();
        let tally = live.clone();
        node.runtime()
            .register_factory(FACTORY, move |number: u32| Counter {
                number,
                live: tally.clone(),
                presence: None,
                count: 0,
                last: BTreeMap::new(),
            })
            .map_err(|error| format!("cannot register the counters' factory: {error}"))?;
        Ok(HandoverHub {
            node: node.clone(),
            live,
            hub: None,
            writers: None,
            moves: Arc::default(),
        })
    }

    /// Runs one of the `handover-hub` commands: the words after it.
    pub(crate) async fn handle(&mut self, words: &[&str]) -> Result<String, String> {
        match words {
            ["open"] => self.open().await,
            ["close"] => self.close().await,
            ["write", lanes, children] => self.write(lanes, children),
            ["writes"] => Ok(self.writes()),
            ["write-stop"] => self.stop_writers().await,
            ["counts", from, count] => self.counts(from, count).await,
            ["moves"] => Ok(self.moves()),
            words => self.commands()?.handle(words).await,
        }
    }

    fn commands(&self) -> Result<&HubCommands, String> {
        self.hub.as_ref().ok_or_else(|| format!("hub {HANDOVER_HUB} is not open here"))
    }

    /// `open`: starts the hub here; from now on this node tallies the hand-overs it makes.
    async fn open(&mut self) -> Result<String, String> {
        if self.hub.is_some() {
            return Err(format!("hub {HANDOVER_HUB} is open here already"));
        }
        let commands =
            HubCommands::open(&self.node, HANDOVER_HUB, FACTORY, self.live.clone(), config())
                .await?;
        tokio::spawn(tally_moves(commands.hub().subscribe(), self.moves.clone()));
        self.hub = Some(commands);
        Ok(String::new())
    }

    /// `close`: stops the hub here on purpose, which hands its counters over to their new
    /// owners first; `handed=H failed=F ms=T`: the hand-overs made meanwhile, and how long it
    /// took.
    async fn close(&mut self) -> Result<String, String> {
        let commands = self.hub.take().ok_or(format!("hub {HANDOVER_HUB} is not open here"))?;
        let mut events = commands.hub().subscribe();
        let started = Instant::now();
        commands.hub().stop().await;
        let took = started.elapsed();
        let (mut handed, mut failed) = (0, 0);
        loop {
            match events.try_recv() {
                Ok(HubEvent::HandedOver { .. }) => handed += 1,
                Ok(HubEvent::HandOverFailed { .. }) => failed += 1,
                Ok(_) => {}
                Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                    return Err(format!("missed {missed} events of the close"));
                }
                Err(_) => break,
            }
        }
        Ok(format!("handed={handed} failed={failed} ms={}", took.as_millis()))
    }

    /// `write LANES CHILDREN`: starts `LANES` writers (`NODE.LANE`), each incrementing
    /// counters `c/0` .. `c/(CHILDREN-1)` in turn from its own starting point, one increment
    /// at a time, until `write-stop`.
    fn write(&mut self, lanes: &str, children: &str) -> Result<String, String> {
        let lanes: u32 = parse_value("handover-hub write", lanes)?;
        let children: u32 = parse_value("handover-hub write", children)?;
        if self.writers.is_some() {
            return Err("the writers run already".to_owned());
        }
        if children == 0 {
            return Err("no counters to write to".to_owned());
        }
        let hub = self.commands()?.hub().clone();
        let mut writers = Writers::default();
        for lane in 0..lanes {
            let writer = format!("{}.{lane}", self.node.name());
            let mut hasher = DefaultHasher::new();
            writer.hash(&mut hasher);
            let lane = Lane {
                hub: hub.clone(),
                runtime: self.node.runtime().clone(),
                writer,
                first: (hasher.finish() % u64::from(children)) as u32,
                children,
            };
            let (stop, tally) = (writers.stop.clone(), writers.tally.clone());
            writers.tasks.push(tokio::spawn(lane.run(stop, tally)));
        }
        self.writers = Some(writers);
        Ok(String::new())
    }

    /// `writes`: `acked=A failed=F retries=R slowest_ms=S` so far.
    fn writes(&self) -> String {
        self.writers.as_ref().map_or_else(
            || WriteTally::default().summary(),
            |writers| lock(&writers.tally).summary(),
        )
    }

    /// `write-stop`: stops the writers (each finishes the increment it is on) and answers
    /// `acked=A failed=F retries=R slowest_ms=S counters=N:A:F,...`: the totals, then for each
    /// counter written to, the increments acknowledged and those that timed out.
    async fn stop_writers(&mut self) -> Result<String, String> {
        let writers = self.writers.take().ok_or("no writers run")?;
        writers.stop.store(true, Ordering::Relaxed);
        for task in writers.tasks {
            task.await.map_err(|error| format!("a writer failed: {error}"))?;
        }
        let tally = lock(&writers.tally);
        let counters: Vec<String> = tally
            .counters
            .iter()
            .map(|(number, (acked, failed))| format!("{number}:{acked}:{failed}"))
            .collect();
        Ok(format!("{} counters={}", tally.summary(), counters.join(",")))
    }

    /// `counts FROM COUNT`: reads counters `c/FROM` .. `c/(FROM+COUNT-1)` by child id, all at
    /// once: `N:COUNT,...` in number order, `N:!` for a read that failed.
    async fn counts(&self, from: &str, count: &str) -> Result<String, String> {
        let from: u32 = parse_value("handover-hub counts", from)?;
        let count: u32 = parse_value("handover-hub counts", count)?;
        let hub = self.commands()?.hub();
        let mut reads = JoinSet::new();
        for number in from..from.saturating_add(count) {
            let target = self.node.runtime().target::<Counter>(hub.via(&format!("c/{number}")));
            reads.spawn(async move { (number, target.call_timeout(None, CALL_TIMEOUT).await) });
        }
        let mut counts = BTreeMap::new();
        while let Some(read) = reads.join_next().await {
            let (number, read) = read.map_err(|error| format!("a read failed: {error}"))?;
            counts.insert(number, read.map_or_else(|_| "!".to_owned(), |n| n.to_string()));
        }
        let counts: Vec<String> = counts.iter().map(|(n, count)| format!("{n}:{count}")).collect();
        Ok(counts.join(","))
    }

    /// `moves`: `handed=H failed=F windows=W forwarded=X unforwarded=Y lagged=L`, this
    /// node's hand-overs as a mover since it started (see [`Moves`]).
    fn moves(&self) -> String {
        let moves = lock(&self.moves);
        format!(
            "handed={} failed={} windows={} forwarded={} unforwarded={} lagged={}",
            moves.handed,
            moves.failed,
            moves.windows,
            moves.forwarded,
            moves.unforwarded,
            moves.lagged
        )
    }
}

/// Counts the hand-overs among a hub's `events` into `moves`, until the hub is gone.
async fn tally_moves(mut events: broadcast::Receiver<HubEvent>, moves: Arc<Mutex<Moves>>) {
    loop {
        let event = events.recv().await;
        let mut moves = lock(&moves);
        match event {
            Ok(HubEvent::HandedOver { .. }) => moves.handed += 1,
            Ok(HubEvent::HandOverFailed { .. }) => moves.failed += 1,
            Ok(HubEvent::ForwardingEnded { forwarded, failed, .. }) => {
                moves.windows += 1;
                moves.forwarded += forwarded;
                moves.unforwarded += failed;
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(missed)) => moves.lagged += missed,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// The writers running on this node.
#[derive(Default)]
struct Writers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    tally: Arc<Mutex<WriteTally>>,
}

/// What this node's writers did.
#[derive(Default)]
struct WriteTally {
    acked: u64,
    failed: u64,
    retries: u64,
    /// The longest an acknowledged increment took, its retries included.
    slowest: Duration,
    /// Per counter: increments acknowledged, and those that timed out.
    counters: BTreeMap<u32, (u64, u64)>,
}

impl WriteTally {
    fn summary(&self) -> String {
        format!(
            "acked={} failed={} retries={} slowest_ms={}",
            self.acked,
            self.failed,
            self.retries,
            self.slowest.as_millis()
        )
    }
}

/// One writer: counters in turn, one increment at a time.
struct Lane {
    hub: Hub,
    runtime: Runtime,
    writer: String,
    /// The counter it starts from.
    first: u32,
    children: u32,
}

impl Lane {
    async fn run(self, stop: Arc<AtomicBool>, tally: Arc<Mutex<WriteTally>>) {
        let mut sequence = 0;
        while !stop.load(Ordering::Relaxed) {
            let number = ((u64::from(self.first) + sequence) % u64::from(self.children)) as u32;
            sequence += 1;
            let (acked, retries, took) = self.increment(number, sequence).await;
            let mut tally = lock(&tally);
            let counter = tally.counters.entry(number).or_default();
            if acked {
                counter.0 += 1;
                tally.acked += 1;
                tally.slowest = tally.slowest.max(took);
            } else {
                counter.1 += 1;
                tally.failed += 1;
            }
            tally.retries += retries;
        }
    }

    /// Increment `sequence` of this writer to counter `c/number`, tried until answered or
    /// [`GIVE_UP`]: whether it was acknowledged, the retries, and how long it took.
    async fn increment(&self, number: u32, sequence: u64) -> (bool, u64, Duration) {
        let started = Instant::now();
        let target = self.runtime.target::<Counter>(self.hub.via(&format!("c/{number}")));
        let mut retries = 0;
        loop {
            let call = Some((self.writer.clone(), sequence));
            if target.call_timeout(call, CALL_TIMEOUT).await.is_ok() {
                return (true, retries, started.elapsed());
            }
            if started.elapsed() + RETRY_PAUSE >= GIVE_UP {
                return (false, retries, started.elapsed());
            }
            retries += 1;
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}
