//! A full mailbox stalls nobody else. A receiver whose mailbox is full (it never takes a
//! message: it blocks in `init` until released) and that is flooded with casts from another
//! node must not hold up anything else on the connections between the two nodes: calls to
//! other processes (either way, replies included) complete, an exit signal to the flooded
//! receiver takes effect on arrival, and once the receiver drains, it gets every message sent
//! to it, in order per sender.
//!
//! Nothing here sleeps: each test waits (bounded) until the flooded mailbox is full before it
//! looks at anything else.

use shoal_process::{
    Addr, CallError, ExitReason, MailboxConfig, Overflow, Pid, Runtime, Signal, SpawnOptions,
};
use shoal_transport::Node;
use tokio::sync::{mpsc, oneshot};

use super::support::{
    BOUND, CALL, Echo, Flood, Gated, Order, Probe, Script, SequenceReport, cluster, eventually,
    job, parallel_pair, shutdown,
};

/// The flooded receiver's mailbox: small, and senders wait when it is full.
const SMALL: MailboxConfig = MailboxConfig { capacity: 8, overflow: Overflow::Wait };

/// Processes flooding the stuck receiver.
const FLOODERS: u32 = 4;

/// A receiver on `node` that blocks until `release` fires, with a small mailbox; registered as
/// `name`.
fn stuck(node: &Node, name: &str) -> (Addr<Gated>, oneshot::Sender<()>) {
    let (release, gate) = oneshot::channel();
    let options = SpawnOptions::new().mailbox(SMALL).name(name);
    let receiver = node.runtime().spawn_with(Gated::new(gate), options).expect("spawned");
    (receiver, release)
}

/// Waits until the mailbox of `receiver` (on `runtime`) holds at least its capacity.
async fn full(runtime: &Runtime, receiver: Pid) {
    eventually("the flooded mailbox is full", || {
        let letters = runtime.mailbox_len(receiver).unwrap_or(0);
        async move { letters >= SMALL.capacity }
    })
    .await;
}

/// How a batch of calls went.
#[derive(Debug, Default)]
struct Tally {
    completed: usize,
    /// Each caller stops at its first failure: (caller, call number, callee, error).
    failures: Vec<(usize, usize, Pid, CallError)>,
}

/// A caller's outcome: all its calls made, or the first that failed, as (caller, call number,
/// callee, error).
type CallerOutcome = Result<usize, (usize, usize, Pid, CallError)>;

/// Starts `callers` processes on `from`, each making `per_caller` calls one after another,
/// round-robin over `echoes`, each with a timeout of [`CALL`]; a caller stops at its first
/// failure. Returns a receiver of each caller's outcome.
async fn start_callers(
    from: &Node,
    echoes: &[Pid],
    callers: usize,
    per_caller: usize,
) -> mpsc::UnboundedReceiver<CallerOutcome> {
    let (report, outcomes) = mpsc::unbounded_channel();
    for caller in 0..callers {
        let (runtime, echoes, report) = (from.runtime().clone(), echoes.to_vec(), report.clone());
        let calls = job(async move {
            let mut outcome = Ok(per_caller);
            for n in 0..per_caller {
                let echo = echoes[(caller + n) % echoes.len()];
                let call = runtime.call::<_, String>(echo, format!("call {n}"), CALL).await;
                if let Err(error) = call {
                    outcome = Err((caller, n, echo, error));
                    break;
                }
            }
            let _ = report.send(outcome);
            ExitReason::Normal
        });
        from.runtime().spawn(Script).cast(calls).await.expect("the caller is alive");
    }
    outcomes
}

/// Collects the outcomes of `callers` callers (each ends within its calls' timeouts).
async fn tally(callers: usize, outcomes: &mut mpsc::UnboundedReceiver<CallerOutcome>) -> Tally {
    let mut tally = Tally::default();
    for _ in 0..callers {
        // A caller that stops at a failure has waited one call's timeout at most.
        let outcome = tokio::time::timeout(BOUND + CALL, outcomes.recv()).await;
        match outcome.expect("every caller reports").expect("every caller reports") {
            Ok(calls) => tally.completed += calls,
            Err(failure) => {
                tally.completed += failure.1;
                tally.failures.push(failure);
            }
        }
    }
    tally
}

/// Spawns `count` echo processes on `node`.
fn echoes(node: &Node, count: usize) -> Vec<Pid> {
    (0..count).map(|_| node.runtime().spawn(Echo).pid()).collect()
}

async fn calls_complete_while_a_mailbox_is_full(parallelism: u16) {
    const CALLERS: usize = 8;
    const CALLS: usize = 1_000;
    let nodes = parallel_pair(parallelism).await;
    let (a, b) = (nodes[0].clone(), nodes[1].clone());
    let (receiver, _release) = stuck(&b, "stuck");
    let _flood = Flood::start(&a, receiver.pid(), None, FLOODERS).await;
    full(b.runtime(), receiver.pid()).await;

    let echoes = echoes(&b, 16);
    let mut outcomes = start_callers(&a, &echoes, CALLERS, CALLS / CALLERS).await;
    let tally = tally(CALLERS, &mut outcomes).await;
    assert!(
        tally.failures.is_empty(),
        "{} of {CALLS} calls completed; callers stopped at (caller, call, callee, error): {:?}",
        tally.completed,
        tally.failures
    );
    assert_eq!(tally.completed, CALLS);
    shutdown(&nodes);
}

/// Calls from a to other processes on b complete while a receiver on b, flooded from a, has a
/// full mailbox: the connection's reader never waits for that mailbox (one connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_others_complete_while_a_flooded_mailbox_is_full() {
    calls_complete_while_a_mailbox_is_full(1).await;
}

/// As above, with four connections on the default channel: neither the flooded receiver's
/// connection nor the senders' shared queue to b holds up calls to other processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_others_complete_while_a_flooded_mailbox_is_full_on_parallel_connections() {
    calls_complete_while_a_mailbox_is_full(4).await;
}

/// Processes on a and b call each other (both ways at once, so replies travel both ways too)
/// while a receiver on b, flooded from a, has a full mailbox: no call fails or times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_both_ways_complete_while_a_flooded_mailbox_is_full() {
    const CALLERS: usize = 4;
    const CALLS: usize = 1_000;
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (nodes[0].clone(), nodes[1].clone());
    let (receiver, _release) = stuck(&b, "stuck");
    let _flood = Flood::start(&a, receiver.pid(), None, FLOODERS).await;
    full(b.runtime(), receiver.pid()).await;

    let (on_a, on_b) = (echoes(&a, 8), echoes(&b, 8));
    let mut a_to_b = start_callers(&a, &on_b, CALLERS, CALLS / CALLERS).await;
    let mut b_to_a = start_callers(&b, &on_a, CALLERS, CALLS / CALLERS).await;
    let (a_to_b, b_to_a) = tokio::join!(tally(CALLERS, &mut a_to_b), tally(CALLERS, &mut b_to_a));
    assert!(
        a_to_b.failures.is_empty() && b_to_a.failures.is_empty(),
        "a→b: {} of {CALLS} completed, stopped at {:?}; b→a: {} of {CALLS} completed, stopped at {:?}",
        a_to_b.completed,
        a_to_b.failures,
        b_to_a.completed,
        b_to_a.failures
    );
    shutdown(&nodes);
}

/// An exit signal from a to the flooded receiver on b takes effect on arrival, not behind the
/// messages waiting for its mailbox: a kill, and an exit with a reason (the receiver does not
/// trap exits). A monitor on a gets the `Down` with that reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_signal_reaches_a_flooded_receiver_on_arrival() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (nodes[0].clone(), nodes[1].clone());
    for (index, reason) in
        [ExitReason::Killed, ExitReason::custom("told to go")].into_iter().enumerate()
    {
        let (receiver, _release) = stuck(&b, &format!("stuck-{index}"));
        let (signals, mut seen) = mpsc::unbounded_channel();
        let watcher = a.runtime().spawn(Probe { signals });
        watcher.call(Order::Monitor(receiver.pid())).await.unwrap();
        eventually("the monitor is set up", || {
            let info = b.runtime().process_info(receiver.pid());
            async move { info.is_some_and(|info| info.monitored_by == 1) }
        })
        .await;
        let _flood = Flood::start(&a, receiver.pid(), None, FLOODERS).await;
        full(b.runtime(), receiver.pid()).await;

        if reason == ExitReason::Killed {
            a.runtime().kill(receiver.pid());
        } else {
            a.runtime().exit(receiver.pid(), reason.clone());
        }
        let down = tokio::time::timeout(BOUND, seen.recv()).await.unwrap_or_else(|_| {
            panic!("no Down {BOUND:?} after the exit signal ({reason}): it did not take effect")
        });
        match down.expect("the watcher reports") {
            Signal::Down { pid, reason: got, .. } => {
                assert_eq!(pid, receiver.pid());
                assert_eq!(got, reason);
            }
            other => panic!("expected a Down, got {other:?}"),
        }
        assert!(!b.runtime().is_alive(receiver.pid()));
    }
    shutdown(&nodes);
}

async fn nothing_is_lost_once_a_flooded_receiver_drains(parallelism: u16) {
    let nodes = parallel_pair(parallelism).await;
    let (a, b) = (nodes[0].clone(), nodes[1].clone());
    let (receiver, release) = stuck(&b, "stuck");
    let flood = Flood::start(&a, receiver.pid(), Some(("b", "stuck")), FLOODERS).await;
    full(b.runtime(), receiver.pid()).await;

    release.send(()).expect("the receiver waits");
    let sent = flood.stop().await;
    let total: u64 = sent.iter().sum();
    assert!(total >= SMALL.capacity as u64, "the mailbox was full: {sent:?}");
    eventually("every message arrived", || {
        let receiver = receiver.clone();
        async move { receiver.call(()).await.unwrap().received >= total }
    })
    .await;
    let report: SequenceReport = receiver.call(()).await.unwrap();
    assert_eq!(report.received, total, "sent per sender: {sent:?}");
    assert!(
        report.breaks.is_empty(),
        "{} breaks in order (sender, expected, got), e.g. {:?}",
        report.breaks.len(),
        &report.breaks[..report.breaks.len().min(5)]
    );
    shutdown(&nodes);
}

/// Nothing sent to a flooded receiver is lost: once it is released and drains, it has every
/// message each sender sent it (alternately by pid and by registered name), in order per
/// sender. One connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_sent_to_a_flooded_receiver_is_lost_or_reordered() {
    nothing_is_lost_once_a_flooded_receiver_drains(1).await;
}

/// As above, with four connections on the default channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_sent_to_a_flooded_receiver_is_lost_or_reordered_on_parallel_connections() {
    nothing_is_lost_once_a_flooded_receiver_drains(4).await;
}
