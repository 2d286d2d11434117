//! Message order across nodes: per sender-receiver pair under load on a channel with parallel
//! connections, for every kind of send (casts and calls by pid and by registered name, exits
//! seen as `Down`s and trapped link exits, remote spawn's answer, a call's reply) and on each
//! named channel; and monotonic channels where a newer update supersedes a queued older one.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use serde::{Deserialize, Serialize};
use shoal_process::{
    Addr, Codec, Context, Dest, ExitReason, Pid, Process, ReplyTo, Signal, SpawnOptions,
};
use shoal_transport::{ChannelConfig, DEFAULT_CHANNEL, Node, RemoteError};
use tokio::sync::{mpsc, oneshot};

use super::support::{
    BOUND, CALL, Job, Numbered, Script, SequenceReport, Sequencer, SlowRecorder, answer_or_letter,
    builder, cluster_of, eventually, job, parallel, parallel_pair, shutdown, within,
};

const SENDERS: u32 = 4;
const RECEIVERS: usize = 8;
/// Messages each sender casts, spread round-robin over the receivers.
const PER_SENDER: u64 = 20_000;
const PER_PAIR: u64 = PER_SENDER / RECEIVERS as u64;

/// Erlang's one ordering guarantee, kept with parallel connections: between one sender and one
/// receiver, messages arrive in the order they were sent, with none missing. Several senders
/// on node a cast numbered messages to several receivers on node b over a channel with four
/// connections; every receiver sees each sender's numbers as 0, 1, 2, ...
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_pair_order_holds_under_load_with_parallel_connections() {
    let parallel =
        |name| builder(name).channel(DEFAULT_CHANNEL, ChannelConfig::new().parallelism(4));
    let nodes = cluster_of(vec![parallel("a"), parallel("b")]).await;
    let (a, b) = (nodes[0].clone(), nodes[1].clone());
    let receivers: Vec<Pid> =
        (0..RECEIVERS).map(|_| b.runtime().spawn(Sequencer::default()).pid()).collect();

    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let (runtime, receivers) = (a.runtime().clone(), receivers.clone());
        senders.push(tokio::spawn(async move {
            for n in 0..PER_SENDER {
                let to = receivers[(n % RECEIVERS as u64) as usize];
                let message: Numbered = (sender, n / RECEIVERS as u64);
                runtime.cast(to, message).await.expect("the cast is queued");
            }
        }));
    }
    for sender in senders {
        within(sender).await.expect("the sender finished");
    }

    let expected = u64::from(SENDERS) * PER_PAIR;
    for &receiver in &receivers {
        eventually("every message arrived", || {
            let a = a.clone();
            async move {
                let report: SequenceReport = a.runtime().call(receiver, (), CALL).await.unwrap();
                report.received >= expected
            }
        })
        .await;
        let report: SequenceReport = a.runtime().call(receiver, (), CALL).await.unwrap();
        assert_eq!(report.received, expected);
        assert!(report.breaks.is_empty(), "out of order at {receiver}: {:?}", report.breaks);
    }
    shutdown(&nodes);
}

/// A monotonic channel: when updates for a receiver pile up, a queued one is superseded by a
/// newer one, never reordered; the receiver sees increasing values and ends with the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monotonic_channel_delivers_increasing_values_ending_with_the_last() {
    const UPDATES: u64 = 3_000;
    let monotonic = |name| builder(name).channel("state", ChannelConfig::new().monotonic(true));
    let nodes = cluster_of(vec![monotonic("a"), monotonic("b")]).await;
    let (a, b) = (nodes[0].clone(), nodes[1].clone());
    let recorder = SlowRecorder { delay: Duration::from_millis(1), seen: Vec::new() };
    let recorder = b.runtime().spawn(recorder);

    for n in 1..=UPDATES {
        within(a.cast_on("state", recorder.pid(), n)).await.expect("queued");
    }
    eventually("the last update arrived", || {
        let recorder = recorder.clone();
        async move { recorder.call(()).await.unwrap().last() == Some(&UPDATES) }
    })
    .await;
    let seen = recorder.call(()).await.unwrap();
    assert!(seen.windows(2).all(|pair| pair[0] < pair[1]), "not increasing: {seen:?}");
    assert!(seen.len() as u64 <= UPDATES);

    let nowhere = a.cast_on("no-such-channel", recorder.pid(), 0u64).await;
    assert_eq!(nowhere, Err(RemoteError::NoSuchChannel("no-such-channel".into())));
    shutdown(&nodes);
}

// ---------------------------------------------------------------------------------------------
// Every kind of send, in order per pair (OTP: signals from one process to another arrive in
// the order sent, whatever their kind and however the receiver is addressed). Both nodes open
// four connections on the default channel, so a transport that spread one pair's frames over
// them by different keys (pid, name, request id) would let them overtake each other.

/// Connections per peer on the default channel in the tests below.
const PARALLELISM: u16 = 4;

/// How a sender reaches a receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Via {
    /// `Runtime::cast` to its pid.
    CastPid,
    /// A cast to its registered name on its node (`Dest::name_on`).
    CastName,
    /// `Runtime::call` to its pid.
    CallPid,
    /// A call to its registered name on its node (`Dest::name_on`).
    CallName,
}

/// How a receiver learns that a sender exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Farewell {
    /// It monitors the sender: a `Down`.
    Down,
    /// It is linked to the sender and traps exits: an `Exit`.
    LinkExit,
}

/// A message of the mixed test: (sender, its number in the pair's sequence, how it was sent).
type Tagged = (u32, u64, Via);

/// What a [`MixedReceiver`] saw, in order.
#[derive(Clone, Copy, Debug)]
enum Seen {
    Message(Tagged),
    Farewell(u32),
}

/// Receives [`Tagged`] casts and calls; monitors or links to each sender (trapping exits) as
/// told, in `init`; reports everything it sees, in order, as (its index, what).
struct MixedReceiver {
    index: usize,
    senders: Vec<(Pid, Farewell)>,
    seen: mpsc::UnboundedSender<(usize, Seen)>,
}

impl MixedReceiver {
    fn sender_index(&self, pid: Pid) -> Option<u32> {
        self.senders.iter().position(|(sender, _)| *sender == pid).map(|i| i as u32)
    }
}

impl Process for MixedReceiver {
    type Message = Tagged;
    type Call = Tagged;
    type Reply = ();

    async fn init(&mut self, ctx: &mut Context<Self>) -> Result<(), ExitReason> {
        ctx.trap_exits(true);
        for &(sender, farewell) in &self.senders {
            match farewell {
                Farewell::Down => {
                    ctx.monitor(sender);
                }
                Farewell::LinkExit => ctx.link(sender).map_err(ExitReason::custom)?,
            }
        }
        Ok(())
    }

    async fn handle_cast(&mut self, message: Tagged, _: &mut Context<Self>) {
        let _ = self.seen.send((self.index, Seen::Message(message)));
    }

    async fn handle_call(&mut self, message: Tagged, reply: ReplyTo<()>, _: &mut Context<Self>) {
        let _ = self.seen.send((self.index, Seen::Message(message)));
        reply.send(());
    }

    async fn handle_signal(&mut self, signal: Signal, _: &mut Context<Self>) {
        let from = match signal {
            Signal::Down { pid, .. } => pid,
            Signal::Exit { from, .. } => from,
            _ => return,
        };
        if let Some(sender) = self.sender_index(from) {
            let _ = self.seen.send((self.index, Seen::Farewell(sender)));
        }
    }

    fn remote_messages() -> Option<Codec<Self>> {
        Some(Codec::msgpack())
    }
}

/// What one sender does: its sends in order, as (how, to which receiver), then it exits; and
/// how each receiver learns of that exit.
#[derive(Clone)]
struct SenderPlan {
    sends: Vec<(Via, usize)>,
    farewells: Vec<Farewell>,
}

/// On one line (a failing case prints its input).
impl fmt::Debug for SenderPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sends: Vec<String> =
            self.sends.iter().map(|(via, to)| format!("{via:?}→{to}")).collect();
        write!(f, "sends [{}], exit seen as {:?}", sends.join(" "), self.farewells)
    }
}

const MIXED_SENDERS: usize = 3;
const MIXED_RECEIVERS: usize = 3;

fn sender_plan() -> impl Strategy<Value = SenderPlan> {
    // Casts are what can be overtaken (a call waits for its reply), so they come more often.
    let via = prop_oneof![
        3 => Just(Via::CastPid),
        3 => Just(Via::CastName),
        1 => Just(Via::CallPid),
        1 => Just(Via::CallName),
    ];
    let farewell = prop_oneof![Just(Farewell::Down), Just(Farewell::LinkExit)];
    (vec((via, 0..MIXED_RECEIVERS), 20..80), vec(farewell, MIXED_RECEIVERS))
        .prop_map(|(sends, farewells)| SenderPlan { sends, farewells })
}

/// The job of sender `index`: `plan`'s sends, numbered per receiver, one after another; tells
/// `done` how it went, and exits.
fn mixed_sends(
    node: Node,
    index: u32,
    plan: SenderPlan,
    receivers: Vec<(Pid, String)>,
    done: mpsc::UnboundedSender<Result<(), String>>,
) -> Job {
    job(async move {
        let runtime = node.runtime().clone();
        let mut next = vec![0u64; receivers.len()];
        let mut outcome = Ok(());
        for (via, to) in plan.sends {
            let (pid, name) = &receivers[to];
            let message: Tagged = (index, next[to], via);
            next[to] += 1;
            let sent = match via {
                Via::CastPid => runtime.cast(*pid, message).await.map_err(|e| e.to_string()),
                Via::CastName => runtime
                    .cast(Dest::name_on("b", name.as_str()), message)
                    .await
                    .map_err(|e| e.to_string()),
                Via::CallPid => {
                    runtime.call::<_, ()>(*pid, message, CALL).await.map_err(|e| e.to_string())
                }
                Via::CallName => runtime
                    .call::<_, ()>(Dest::name_on("b", name.as_str()), message, CALL)
                    .await
                    .map_err(|e| e.to_string()),
            };
            if let Err(error) = sent {
                outcome = Err(format!("sender {index}: {via:?} to receiver {to} failed: {error}"));
                break;
            }
        }
        let _ = done.send(outcome);
        ExitReason::custom("sent everything")
    })
}

/// Checks what each receiver saw against the plans: per sender, numbers 0, 1, 2, ... with none
/// missing, then exactly one farewell, after the last message. Returns the violations: each
/// message that arrived after one sent later than it (it was overtaken), or after the
/// farewell; missing messages; a farewell missing or repeated.
fn order_violations(plans: &[SenderPlan], seen: &[Vec<Seen>]) -> Vec<String> {
    let mut violations = Vec::new();
    for (receiver, seen) in seen.iter().enumerate() {
        for (sender, plan) in plans.iter().enumerate() {
            let pair = format!("sender {sender} → receiver {receiver}");
            let expected = plan.sends.iter().filter(|(_, to)| *to == receiver).count() as u64;
            // The latest-sent message seen so far.
            let mut latest: Option<(u64, Via)> = None;
            let mut received = 0u64;
            let mut farewells = 0;
            for item in seen {
                match *item {
                    Seen::Message((s, seq, via)) if s as usize == sender => {
                        received += 1;
                        if farewells > 0 {
                            violations.push(format!(
                                "{pair}: #{seq} ({via:?}) arrived after the sender's exit"
                            ));
                        }
                        match latest {
                            Some((newer, newer_via)) if newer > seq => violations.push(format!(
                                "{pair}: #{seq} ({via:?}) was overtaken by #{newer} ({newer_via:?})"
                            )),
                            _ => latest = Some((seq, via)),
                        }
                    }
                    Seen::Farewell(s) if s as usize == sender => farewells += 1,
                    _ => {}
                }
            }
            if received != expected {
                violations.push(format!("{pair}: {received} of {expected} messages arrived"));
            }
            if farewells != 1 {
                violations.push(format!("{pair}: {farewells} exits seen, not 1"));
            }
        }
    }
    violations
}

/// One case of the mixed test on nodes `a` and `b`: receivers on b (names unique to `case`),
/// senders on a, each sending its plan and exiting.
async fn run_mixed(a: &Node, b: &Node, plans: &[SenderPlan], case: usize) -> Result<(), String> {
    let senders: Vec<Addr<Script>> = plans.iter().map(|_| a.runtime().spawn(Script)).collect();
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let mut receivers = Vec::new();
    for index in 0..MIXED_RECEIVERS {
        let watch = senders.iter().zip(plans).map(|(s, plan)| (s.pid(), plan.farewells[index]));
        let receiver = MixedReceiver { index, senders: watch.collect(), seen: seen_tx.clone() };
        let name = format!("mixed-{case}-{index}");
        let options = SpawnOptions::new().name(name.clone());
        let receiver = within(b.runtime().start_with(receiver, options)).await.expect("starts");
        receivers.push((receiver.pid(), name));
    }
    // Every monitor and link must be in place on a before the senders exit.
    for (sender, plan) in senders.iter().zip(plans) {
        let downs = plan.farewells.iter().filter(|f| **f == Farewell::Down).count();
        let links: Vec<Pid> = (receivers.iter().zip(&plan.farewells))
            .filter(|(_, f)| **f == Farewell::LinkExit)
            .map(|((pid, _), _)| *pid)
            .collect();
        eventually("the receivers monitor and link to the sender", || {
            let info = a.runtime().process_info(sender.pid());
            let ready = info.is_some_and(|info| {
                info.monitored_by == downs && links.iter().all(|pid| info.links.contains(pid))
            });
            async move { ready }
        })
        .await;
    }

    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    for (index, (sender, plan)) in senders.iter().zip(plans).enumerate() {
        let sends =
            mixed_sends(a.clone(), index as u32, plan.clone(), receivers.clone(), done_tx.clone());
        sender.cast(sends).await.expect("the sender is alive");
    }
    let mut failures = Vec::new();
    for _ in plans {
        if let Err(failure) = within(done_rx.recv()).await.expect("every sender reports") {
            failures.push(failure);
        }
    }

    let messages: usize = plans.iter().map(|plan| plan.sends.len()).sum();
    let expected = messages + plans.len() * MIXED_RECEIVERS;
    let mut seen = vec![Vec::new(); MIXED_RECEIVERS];
    let deadline = tokio::time::Instant::now() + BOUND;
    for _ in 0..expected {
        match tokio::time::timeout_at(deadline, seen_rx.recv()).await {
            Ok(Some((receiver, item))) => seen[receiver].push(item),
            // What is missing is reported below.
            Ok(None) | Err(_) => break,
        }
    }
    for (pid, _) in &receivers {
        b.runtime().kill(*pid);
    }
    failures.extend(order_violations(plans, &seen));
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{} violations in case {case}:\n{}", failures.len(), failures.join("\n")))
    }
}

/// Per-pair order for every kind of send at once (OTP's guarantee): several sender processes
/// on a, each mixing casts and calls by pid and by registered name to several receivers on b,
/// then exiting; each receiver monitors or links to each sender. Every receiver sees each
/// sender's messages numbered 0, 1, 2, ... with none missing, and its `Down` or `Exit` after
/// the last of them. The generated input is each sender's sequence of (kind, receiver).
///
/// A case takes a few tens of milliseconds, so 32 of them. Each case is a race on real
/// connections, so a failing case is not shrunk (a smaller input would not fail reliably) nor
/// persisted; the failure lists every violation.
#[test]
fn every_kind_of_send_keeps_per_pair_order() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let nodes = tokio.block_on(parallel_pair(PARALLELISM));
    let config = ProptestConfig {
        cases: 32,
        max_shrink_iters: 0,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let case = AtomicUsize::new(0);
    let outcome = runner.run(&vec(sender_plan(), MIXED_SENDERS), |plans| {
        let case = case.fetch_add(1, AtomicOrdering::Relaxed);
        tokio.block_on(run_mixed(&nodes[0], &nodes[1], &plans, case)).map_err(TestCaseError::fail)
    });
    shutdown(&nodes);
    if let Err(error) = outcome {
        panic!("{error}");
    }
}

/// Counts the casts it is sent; a call answers how many it has handled so far.
#[derive(Default)]
struct Counter(u64);

impl Process for Counter {
    type Message = u64;
    type Call = ();
    type Reply = u64;

    async fn handle_cast(&mut self, _: u64, _: &mut Context<Self>) {
        self.0 += 1;
    }

    async fn handle_call(&mut self, (): (), reply: ReplyTo<u64>, _: &mut Context<Self>) {
        reply.send(self.0);
    }

    fn remote_messages() -> Option<Codec<Self>> {
        Some(Codec::msgpack())
    }
}

/// Runs the job that `job_of` makes (given where to report) in a new [`Script`] process on
/// `node`, and returns what the job reports.
async fn in_a_process<T: Send + 'static>(
    node: &Node,
    job_of: impl FnOnce(oneshot::Sender<T>) -> Job,
) -> T {
    let (report, reported) = oneshot::channel();
    let script = node.runtime().spawn(Script);
    script.cast(job_of(report)).await.expect("the script is alive");
    within(reported).await.expect("the script reports")
}

/// A call by registered name is handled after a cast by pid that the same process sent to the
/// same receiver before it: the receiver's count, which the call returns, includes the cast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_by_name_is_handled_after_a_cast_by_pid_sent_before_it() {
    const TRIES: u64 = 4_000;
    const COUNTERS: usize = 4;
    let nodes = parallel_pair(PARALLELISM).await;
    let (a, b) = (nodes[0].clone(), nodes[1].clone());
    let mut counters = Vec::new();
    for index in 0..COUNTERS {
        let name = format!("counter-{index}");
        let counter = b.runtime().spawn_with(Counter::default(), SpawnOptions::new().name(&name));
        counters.push((counter.expect("spawned").pid(), name));
    }
    let node = a.clone();
    let early: Vec<String> = in_a_process(&a, move |report| {
        job(async move {
            let mut early = Vec::new();
            let mut casts = [0u64; COUNTERS];
            for n in 0..TRIES {
                let to = (n % COUNTERS as u64) as usize;
                let (pid, name) = &counters[to];
                node.runtime().cast(*pid, n).await.expect("the cast is queued");
                casts[to] += 1;
                let to_name = Dest::name_on("b", name.as_str());
                let counted: u64 = node.runtime().call(to_name, (), CALL).await.expect("answered");
                if counted < casts[to] {
                    early.push(format!("call #{n} counted {counted} of {} casts", casts[to]));
                }
            }
            let _ = report.send(early);
            ExitReason::Normal
        })
    })
    .await;
    assert!(
        early.is_empty(),
        "{} of {TRIES} calls by name overtook the cast by pid before them, e.g. {:?}",
        early.len(),
        &early[..early.len().min(5)]
    );
    shutdown(&nodes);
}

/// Casts to one receiver alternating between its pid and its registered name keep their
/// order: each of several receivers sees the sender's numbers as 0, 1, 2, ...
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn casts_alternating_by_pid_and_by_name_keep_their_order() {
    const RECEIVERS: usize = 8;
    const PER_RECEIVER: u64 = 1_250;
    let nodes = parallel_pair(PARALLELISM).await;
    let (a, b) = (nodes[0].clone(), nodes[1].clone());
    let mut receivers = Vec::new();
    for index in 0..RECEIVERS {
        let name = format!("sequencer-{index}");
        let sequencer =
            b.runtime().spawn_with(Sequencer::default(), SpawnOptions::new().name(&name));
        receivers.push((sequencer.expect("spawned"), name));
    }
    let node = a.clone();
    let targets: Vec<(Pid, String)> =
        receivers.iter().map(|(sequencer, name)| (sequencer.pid(), name.clone())).collect();
    in_a_process(&a, move |report| {
        job(async move {
            for n in 0..PER_RECEIVER * RECEIVERS as u64 {
                let (pid, name) = &targets[(n % RECEIVERS as u64) as usize];
                let seq = n / RECEIVERS as u64;
                let message: Numbered = (0, seq);
                if seq.is_multiple_of(2) {
                    node.runtime().cast(*pid, message).await.expect("the cast is queued");
                } else {
                    let to_name = Dest::name_on("b", name.as_str());
                    node.runtime().cast(to_name, message).await.expect("the cast is queued");
                }
            }
            let _ = report.send(());
            ExitReason::Normal
        })
    })
    .await;

    let mut breaks = Vec::new();
    for (sequencer, name) in &receivers {
        eventually("every cast arrived", || {
            let sequencer = sequencer.clone();
            async move { sequencer.call(()).await.unwrap().received >= PER_RECEIVER }
        })
        .await;
        let report = sequencer.call(()).await.unwrap();
        assert_eq!(report.received, PER_RECEIVER, "{name}");
        breaks.extend(report.breaks.iter().map(|b| format!("{name}: {b:?}")));
    }
    assert!(
        breaks.is_empty(),
        "{} breaks in order (sender, expected, got) over {} casts, e.g. {:?}",
        breaks.len(),
        PER_RECEIVER * RECEIVERS as u64,
        &breaks[..breaks.len().min(5)]
    );
    shutdown(&nodes);
}

/// What a [`Watcher`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Watched {
    Message(u64),
    Down(Pid),
}

/// Monitors the processes it is called with (and then pings each through the same pair, so
/// the monitor is in place when the call returns); reports the casts and `Down`s it gets.
struct Watcher {
    seen: mpsc::UnboundedSender<Watched>,
}

impl Process for Watcher {
    type Message = u64;
    type Call = Pid;
    type Reply = ();

    async fn handle_cast(&mut self, message: u64, _: &mut Context<Self>) {
        let _ = self.seen.send(Watched::Message(message));
    }

    async fn handle_call(&mut self, target: Pid, reply: ReplyTo<()>, ctx: &mut Context<Self>) {
        ctx.monitor(target);
        // The monitor and this call go from this process to `target`, in that order.
        let pinged: Result<(), _> = ctx.runtime().call(target, (), CALL).await;
        pinged.expect("the watched process answers");
        reply.send(());
    }

    async fn handle_signal(&mut self, signal: Signal, _: &mut Context<Self>) {
        if let Signal::Down { pid, .. } = signal {
            let _ = self.seen.send(Watched::Down(pid));
        }
    }

    fn remote_messages() -> Option<Codec<Self>> {
        Some(Codec::msgpack())
    }
}

/// Casts `message` to the process registered as `name` on b when told to, then exits;
/// answers pings.
struct LastWord {
    node: Node,
    name: String,
    message: u64,
}

impl Process for LastWord {
    type Message = ();
    type Call = ();
    type Reply = ();

    async fn handle_cast(&mut self, (): (), ctx: &mut Context<Self>) {
        let to = Dest::name_on("b", self.name.as_str());
        self.node.runtime().cast(to, self.message).await.expect("the cast is queued");
        ctx.stop(ExitReason::custom("said my last word"));
    }

    async fn handle_call(&mut self, (): (), reply: ReplyTo<()>, _: &mut Context<Self>) {
        reply.send(());
    }

    fn remote_messages() -> Option<Codec<Self>> {
        Some(Codec::msgpack())
    }
}

/// A process's `Down` comes after a message it sent by registered name just before exiting:
/// the monitoring receiver sees the message first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_comes_after_a_named_cast_sent_before_the_exit() {
    const TRIES: u64 = 5_000;
    const WATCHERS: u64 = 4;
    let nodes = parallel_pair(PARALLELISM).await;
    let (a, b) = (nodes[0].clone(), nodes[1].clone());
    let mut watchers = Vec::new();
    for index in 0..WATCHERS {
        let (seen, events) = mpsc::unbounded_channel();
        let name = format!("watcher-{index}");
        let watcher = b.runtime().spawn_with(Watcher { seen }, SpawnOptions::new().name(&name));
        watchers.push((watcher.expect("spawned"), name, events));
    }
    let mut late = Vec::new();
    for n in 0..TRIES {
        let (watcher, name, events) = &mut watchers[(n % WATCHERS) as usize];
        let sender =
            a.runtime().spawn(LastWord { node: a.clone(), name: name.clone(), message: n });
        within(watcher.call_timeout(sender.pid(), CALL)).await.expect("the watcher monitors");
        sender.cast(()).await.expect("the sender is alive");
        let first = within(events.recv()).await.expect("the watcher reports");
        let second = within(events.recv()).await.expect("the watcher reports");
        match (first, second) {
            (Watched::Message(m), Watched::Down(pid)) if m == n && pid == sender.pid() => {}
            (Watched::Down(pid), Watched::Message(m)) if m == n && pid == sender.pid() => {
                late.push(n);
            }
            other => panic!("try {n}: unexpected {other:?}"),
        }
    }
    assert!(
        late.is_empty(),
        "in {} of {TRIES} tries the Down overtook the named cast sent before the exit, e.g. {:?}",
        late.len(),
        &late[..late.len().min(5)]
    );
    shutdown(&nodes);
}

/// What a [`Requester`] is cast: an order to make its request, or a hello from a process.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
enum Note {
    Go,
    Hello(Pid),
}

/// The request a [`Requester`] makes.
#[derive(Clone, Copy, Debug)]
enum Request {
    /// `Node::spawn_remote` of the factory "greeter" on b, which says hello as its first act.
    Spawn,
    /// `Runtime::call` of a [`Replier`], which replies and then says hello.
    Call(Pid),
}

/// What a [`Requester`] reports: for each request, whether a hello reached it before the
/// answer; and each hello, once handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Heard {
    Answered { hello_first: bool },
    Hello(Pid),
}

/// On `Go`, makes its request and watches, while it waits for the answer, for a hello that
/// overtakes it ([`answer_or_letter`]).
struct Requester {
    node: Node,
    request: Request,
    heard: mpsc::UnboundedSender<Heard>,
}

impl Process for Requester {
    type Message = Note;
    type Call = ();
    type Reply = ();

    async fn handle_cast(&mut self, note: Note, ctx: &mut Context<Self>) {
        let me = ctx.pid();
        let runtime = ctx.runtime().clone();
        let heard = match note {
            Note::Hello(pid) => Heard::Hello(pid),
            Note::Go => {
                let hello_first = match self.request {
                    Request::Spawn => {
                        let spawn = self.node.spawn_remote("b", "greeter", &me, CALL);
                        let (spawned, hello_first) = answer_or_letter(&runtime, me, spawn).await;
                        spawned.expect("the spawn is answered");
                        hello_first
                    }
                    Request::Call(replier) => {
                        let call = runtime.call::<_, ()>(replier, me, CALL);
                        let (answered, hello_first) = answer_or_letter(&runtime, me, call).await;
                        answered.expect("the call is answered");
                        hello_first
                    }
                };
                Heard::Answered { hello_first }
            }
        };
        let _ = self.heard.send(heard);
    }

    fn remote_messages() -> Option<Codec<Self>> {
        Some(Codec::msgpack())
    }
}

/// Says hello to its parent (on another node) as its first act, in `init`.
struct Greeter {
    parent: Pid,
}

impl Process for Greeter {
    type Message = ();
    type Call = ();
    type Reply = ();

    async fn init(&mut self, ctx: &mut Context<Self>) -> Result<(), ExitReason> {
        let hello = Note::Hello(ctx.pid());
        ctx.runtime().cast(self.parent, hello).await.map_err(ExitReason::custom)
    }

    async fn handle_cast(&mut self, (): (), _: &mut Context<Self>) {}
}

/// Replies to a call and then says hello to the caller.
struct Replier;

impl Process for Replier {
    type Message = ();
    type Call = Pid;
    type Reply = ();

    async fn handle_cast(&mut self, (): (), _: &mut Context<Self>) {}

    async fn handle_call(&mut self, caller: Pid, reply: ReplyTo<()>, ctx: &mut Context<Self>) {
        reply.send(());
        ctx.runtime().cast(caller, Note::Hello(ctx.pid())).await.expect("the hello is queued");
    }

    fn remote_messages() -> Option<Codec<Self>> {
        Some(Codec::msgpack())
    }
}

/// Runs `tries` requests of `request` from a [`Requester`] on a, one after another, each
/// answered and its hello handled before the next; returns the tries whose hello overtook the
/// answer.
async fn hellos_before_answers(a: &Node, request: Request, tries: u64) -> Vec<u64> {
    let (heard, mut hearing) = mpsc::unbounded_channel();
    let requester = a.runtime().spawn(Requester { node: a.clone(), request, heard });
    let mut overtaken = Vec::new();
    for n in 0..tries {
        requester.cast(Note::Go).await.expect("the requester is alive");
        match within(hearing.recv()).await.expect("the requester reports") {
            Heard::Answered { hello_first } => {
                if hello_first {
                    overtaken.push(n);
                }
            }
            other => panic!("try {n}: expected the answer first, got {other:?}"),
        }
        let hello = within(hearing.recv()).await.expect("the requester reports");
        assert!(matches!(hello, Heard::Hello(_)), "try {n}: expected a hello, got {hello:?}");
    }
    overtaken
}

/// A process spawned with `spawn_remote` is heard from only after the spawn's answer: the
/// requesting process gets the answer (the new pid) before the cast that the new process
/// sends it as its first act (OTP sends the spawn reply from the new process itself, before
/// anything else it sends).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawned_process_is_heard_from_only_after_the_spawn_answer() {
    const TRIES: u64 = 10_000;
    let nodes = parallel_pair(PARALLELISM).await;
    let (a, b) = (nodes[0].clone(), nodes[1].clone());
    b.runtime().register_factory("greeter", |parent: Pid| Greeter { parent }).unwrap();
    let overtaken = hellos_before_answers(&a, Request::Spawn, TRIES).await;
    assert!(
        overtaken.is_empty(),
        "in {} of {TRIES} tries the new process's cast overtook the spawn answer, e.g. {:?}",
        overtaken.len(),
        &overtaken[..overtaken.len().min(5)]
    );
    shutdown(&nodes);
}

/// A reply comes before a cast that the callee sends the caller after replying (OTP: the reply
/// is a message from the callee to the caller like any other). The caller, waiting in its
/// call, looks at its mailbox between polls of the reply ([`answer_or_letter`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_comes_before_a_cast_the_callee_sends_after_replying() {
    const TRIES: u64 = 5_000;
    let nodes = parallel_pair(PARALLELISM).await;
    let (a, b) = (nodes[0].clone(), nodes[1].clone());
    let replier = b.runtime().spawn(Replier).pid();
    let overtaken = hellos_before_answers(&a, Request::Call(replier), TRIES).await;
    assert!(
        overtaken.is_empty(),
        "in {} of {TRIES} tries the callee's cast overtook its reply, e.g. {:?}",
        overtaken.len(),
        &overtaken[..overtaken.len().min(5)]
    );
    shutdown(&nodes);
}

/// Named channels: between one sender and one receiver, order holds on each channel (here
/// the default channel and "bulk", both with four connections); nothing is promised across
/// channels, and this test does not look. Each (sender, channel) numbers its casts to each
/// receiver on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cast_on_keeps_order_per_channel() {
    const SENDERS: u32 = 2;
    const RECEIVERS: usize = 4;
    const PER_PAIR: u64 = 2_000;
    const CHANNELS: [&str; 2] = [DEFAULT_CHANNEL, "bulk"];
    let with_bulk = |name| {
        parallel(name, PARALLELISM).channel("bulk", ChannelConfig::new().parallelism(PARALLELISM))
    };
    let nodes = cluster_of(vec![with_bulk("a"), with_bulk("b")]).await;
    let (a, b) = (nodes[0].clone(), nodes[1].clone());
    let receivers: Vec<Addr<Sequencer>> =
        (0..RECEIVERS).map(|_| b.runtime().spawn(Sequencer::default())).collect();
    let pids: Vec<Pid> = receivers.iter().map(Addr::pid).collect();

    let (done, mut finished) = mpsc::unbounded_channel();
    for sender in 0..SENDERS {
        let (node, pids, done) = (a.clone(), pids.clone(), done.clone());
        let script = a.runtime().spawn(Script);
        let casts = job(async move {
            let mut next = vec![[0u64; 2]; pids.len()];
            for n in 0..PER_PAIR * 2 * pids.len() as u64 {
                let to = (n % pids.len() as u64) as usize;
                let channel = ((n / pids.len() as u64) % 2) as usize;
                // The sequencer tells apart (sender, channel) pairs.
                let message: Numbered = (sender * 2 + channel as u32, next[to][channel]);
                next[to][channel] += 1;
                node.cast_on(CHANNELS[channel], pids[to], message).await.expect("queued");
            }
            let _ = done.send(());
            ExitReason::Normal
        });
        script.cast(casts).await.expect("the sender is alive");
    }
    for _ in 0..SENDERS {
        within(finished.recv()).await.expect("every sender finished");
    }

    let expected = u64::from(SENDERS) * 2 * PER_PAIR;
    for receiver in &receivers {
        eventually("every cast arrived", || {
            let receiver = receiver.clone();
            async move { receiver.call(()).await.unwrap().received >= expected }
        })
        .await;
        let report = receiver.call(()).await.unwrap();
        assert_eq!(report.received, expected);
        assert!(report.breaks.is_empty(), "out of order on a channel: {:?}", report.breaks);
    }
    shutdown(&nodes);
}
