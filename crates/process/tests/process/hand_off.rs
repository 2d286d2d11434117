//! Hand-off (`Runtime::hand_off`): a process ends at a snapshot of its state taken at its place
//! in the mailbox order, and its pid forwards its mail, in order, to a successor for a
//! retention window — the hub's hot migration.

use std::pin::pin;
use std::time::Duration;

use shoal_process::{
    CallError, ExitReason, ForwardReport, MailboxConfig, NodeId, Overflow, Pid, SendError, Signal,
    SpawnOptions, SysError,
};
use tokio::sync::oneshot;

use crate::remote::two_nodes;
use crate::support::{
    Ask, BOUND, Calc, CalcMsg, CalcReq, Cmd, Event, Events, Probe, block, park, poll_once, reports,
    run, runtime, start_probe, within,
};

/// How long the old pid forwards in these tests: shorter than the test's bound, so that a test
/// on tokio's paused clock sees the window end, longer than anything the test does inside it.
const RETENTION: Duration = Duration::from_secs(5);

/// Longer than the test's bound: a caller that waited this long would fail the test rather
/// than time out.
const FOREVER: Duration = Duration::from_secs(3_600);

fn reason() -> ExitReason {
    ExitReason::custom("moved")
}

/// A snapshot for a probe: reports `Event::Note(n)` (tagged with the pid it runs in) and
/// returns `n`.
fn note(
    events: &Events,
    n: u64,
) -> impl FnOnce(&mut Probe, &mut shoal_process::Context<Probe>) -> u64 + Send + use<> {
    let events = events.clone();
    move |_, ctx| {
        let _ = events.send(Event::Note(ctx.pid(), n));
        n
    }
}

/// The events of `pid`, in order.
fn of(pid: Pid, events: &[Event]) -> Vec<Event> {
    events
        .iter()
        .filter(|event| match event {
            Event::Note(of, _) | Event::Signal(of, _) | Event::Terminated(of, _) => *of == pid,
        })
        .cloned()
        .collect()
}

// The snapshot runs at the hand-off's place in the mailbox order: it sees every letter queued
// before it, and the process takes none after it (terminate runs, with the reason). The letters
// queued behind it reach the successor in their order, after what the caller gave the successor
// before starting the forwarding (the restore), and a call among them is answered there.
#[tokio::test(start_paused = true)]
async fn letters_behind_the_snapshot_reach_the_successor_in_order_after_the_restore() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let old = start_probe(&runtime, &events, false).await;
    let new = start_probe(&runtime, &events, false).await;
    let gate = block(&old).await;
    old.cast(Cmd::Note(1)).await.unwrap();
    old.cast(Cmd::Note(2)).await.unwrap();
    let mut hand_off =
        pin!(runtime.hand_off(old.pid(), new.pid(), note(&events, 50), reason(), RETENTION, BOUND));
    assert!(poll_once(&mut hand_off).await.is_pending(), "the snapshot is queued");
    old.cast(Cmd::Note(3)).await.unwrap();
    let (called, answer) = oneshot::channel();
    let caller = old.clone();
    let _call = tokio::spawn(async move { called.send(caller.call(Ask::Echo(7)).await) });
    // The call is queued (behind Note(3)) once the mailbox holds it.
    within(async {
        while old.mailbox_len() != Some(5) {
            tokio::task::yield_now().await;
        }
    })
    .await;
    old.cast(Cmd::Note(4)).await.unwrap();
    gate.open();
    let (snapshot, forwarding) = within(hand_off).await.unwrap();
    assert_eq!(snapshot, 50);
    new.cast(Cmd::Note(100)).await.unwrap();
    forwarding.start();
    assert_eq!(within(answer).await.unwrap(), Ok(7), "answered by the successor");
    within(forwarding.drained()).await;
    let seen = inbox.take(7).await;
    let (o, n) = (old.pid(), new.pid());
    let before = [Event::Note(o, 1), Event::Note(o, 2), Event::Note(o, 50)];
    assert_eq!(of(o, &seen), [&before[..], &[Event::Terminated(o, reason())]].concat());
    assert_eq!(of(n, &seen), [Event::Note(n, 100), Event::Note(n, 3), Event::Note(n, 4)]);
    assert_eq!(forwarding.to(), n);
    assert_eq!(within(forwarding.finished()).await, ForwardReport { forwarded: 3, failed: 0 });
}

// During the window the old pid forwards whatever is sent to it — by pid (a typed target), by a
// handle kept from before, with try_cast, and calls, answered by the successor — though it is
// no longer alive. When the window ends, the forwarder leaves: the pid is gone as any other.
#[tokio::test(start_paused = true)]
async fn the_old_pid_forwards_for_the_window_then_is_gone() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let old = start_probe(&runtime, &events, false).await;
    let new = start_probe(&runtime, &events, false).await;
    let exited = runtime.watch(old.pid());
    let handed =
        runtime.hand_off(old.pid(), new.pid(), |_: &mut Probe, _| (), reason(), RETENTION, BOUND);
    let ((), forwarding) = within(handed).await.unwrap();
    forwarding.start();
    assert_eq!(within(exited).await, reason());
    assert!(!runtime.is_alive(old.pid()));
    assert!(!runtime.processes().contains(&old.pid()));
    assert_eq!(runtime.process_count(), 1);
    assert!(runtime.addr::<Probe>(old.pid()).is_none(), "no new handle to a process that is gone");
    assert_eq!(runtime.process_info(old.pid()), None);

    let by_pid = runtime.target::<Probe>(old.pid());
    by_pid.cast(Cmd::Note(1)).await.unwrap();
    old.cast(Cmd::Note(2)).await.unwrap();
    old.try_cast(Cmd::Note(3)).unwrap();
    assert_eq!(within(by_pid.call(Ask::Echo(4))).await, Ok(4));
    assert_eq!(within(old.call(Ask::Echo(5))).await, Ok(5));
    let n = new.pid();
    assert_eq!(inbox.take(4).await[1..], [Event::Note(n, 1), Event::Note(n, 2), Event::Note(n, 3)]);

    let report = within(forwarding.finished()).await;
    assert_eq!(report, ForwardReport { forwarded: 5, failed: 0 });
    assert!(matches!(old.cast(Cmd::Note(6)).await, Err(SendError::NoProc(_))));
    assert!(matches!(old.try_cast(Cmd::Note(7)), Err(SendError::NoProc(_))));
    assert!(matches!(by_pid.cast(Cmd::Note(8)).await, Err(SendError::NoProc(_))));
    assert_eq!(within(by_pid.call(Ask::Echo(9))).await, Err(CallError::NoProc));
    assert_eq!(within(old.call(Ask::Echo(9))).await, Err(CallError::NoProc));
    inbox.assert_empty();
}

// The process exits as any does: its monitors get Down with the reason, its links their exit
// signal, its name is freed; monitors and links asked of the old pid during the window find it
// gone, and signals sent to it are not forwarded.
#[tokio::test]
async fn the_process_exits_as_any_does_with_the_reason() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let old = start_probe(&runtime, &events, false).await;
    let new = start_probe(&runtime, &events, false).await;
    let watcher = start_probe(&runtime, &events, true).await;
    runtime.register("mover", old.pid()).unwrap();
    let (o, w) = (old.pid(), watcher.pid());
    let monitor = run(&watcher, move |_, ctx| {
        ctx.link(o).unwrap();
        ctx.monitor(o)
    })
    .await;
    let handed =
        runtime.hand_off(old.pid(), new.pid(), |_: &mut Probe, _| (), reason(), RETENTION, BOUND);
    let ((), forwarding) = within(handed).await.unwrap();
    forwarding.start();
    let seen = inbox.take(3).await;
    assert_eq!(seen[0], Event::Terminated(o, reason()));
    let down = Signal::Down { monitor, pid: o, reason: reason() };
    let exit = Signal::Exit { from: o, reason: reason() };
    assert!(seen.contains(&Event::Signal(w, down)), "{seen:?}");
    assert!(seen.contains(&Event::Signal(w, exit)), "{seen:?}");
    assert_eq!(runtime.whereis("mover"), None);

    // The old pid is gone for everything but casts and calls.
    assert_eq!(within(runtime.watch(o)).await, ExitReason::NoProc);
    let late = run(&watcher, move |_, ctx| (ctx.monitor(o), ctx.link(o))).await;
    let down = Signal::Down { monitor: late.0, pid: o, reason: ExitReason::NoProc };
    assert_eq!(inbox.next().await, Event::Signal(w, down));
    assert!(late.1.is_err());
    runtime.exit(o, ExitReason::custom("ignored"));
    old.cast(Cmd::Note(1)).await.unwrap();
    within(forwarding.drained()).await;
    assert_eq!(inbox.next().await, Event::Note(new.pid(), 1));
    inbox.assert_empty();
}

// The forwarder is bounded as the old mailbox was: before the start, it holds at most the
// mailbox's capacity of letters; past it, try_cast gets Full and an asynchronous sender waits
// for room, which the forwarder makes once started. Nothing is lost.
#[tokio::test(start_paused = true)]
async fn the_forwarder_holds_at_most_the_old_mailboxs_bound() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let mailbox = MailboxConfig { capacity: 2, overflow: Overflow::Wait };
    let options = SpawnOptions::new().mailbox(mailbox);
    let old = within(runtime.start_with(Probe::new(&events), options)).await.unwrap();
    let new = start_probe(&runtime, &events, false).await;
    let exited = runtime.watch(old.pid());
    let handed =
        runtime.hand_off(old.pid(), new.pid(), |_: &mut Probe, _| (), reason(), RETENTION, BOUND);
    let ((), forwarding) = within(handed).await.unwrap();
    within(exited).await;
    old.try_cast(Cmd::Note(1)).unwrap();
    old.try_cast(Cmd::Note(2)).unwrap();
    assert!(matches!(old.try_cast(Cmd::Note(3)), Err(SendError::Full(_))));
    let mut waiting = pin!(old.cast(Cmd::Note(3)));
    assert!(poll_once(&mut waiting).await.is_pending(), "the sender waits for room");
    forwarding.start();
    within(waiting).await.unwrap();
    within(forwarding.drained()).await;
    let n = new.pid();
    let seen = inbox.take(4).await;
    assert_eq!(seen[1..], [Event::Note(n, 1), Event::Note(n, 2), Event::Note(n, 3)]);
    assert_eq!(within(forwarding.finished()).await, ForwardReport { forwarded: 3, failed: 0 });
}

// Nothing accepted is lost silently: when the successor is gone, the letters that cannot be sent
// on are counted as failed and a waiting caller gets an error, not a hang; a call the successor
// took but never answered (it exited) fails its caller too.
#[tokio::test(start_paused = true)]
async fn letters_for_a_successor_that_exited_fail_and_callers_are_told() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let old = start_probe(&runtime, &events, false).await;
    let new = start_probe(&runtime, &events, false).await;
    let handed =
        runtime.hand_off(old.pid(), new.pid(), |_: &mut Probe, _| (), reason(), RETENTION, BOUND);
    let ((), forwarding) = within(handed).await.unwrap();
    forwarding.start();
    let (held, holding) = oneshot::channel();
    let caller = old.clone();
    let taken = tokio::spawn(async move { caller.call_timeout(Ask::Hold(held), FOREVER).await });
    within(holding).await.unwrap();
    assert_eq!(inbox.next().await, Event::Terminated(old.pid(), reason()));
    runtime.kill(new.pid());
    within(runtime.watch(new.pid())).await;
    assert!(within(taken).await.unwrap().is_err(), "the successor exited holding the call");

    old.cast(Cmd::Note(1)).await.unwrap();
    let failed = within(old.call_timeout(Ask::Echo(2), FOREVER)).await;
    assert_eq!(failed, Err(CallError::Exited(reason())));
    let report = within(forwarding.finished()).await;
    assert_eq!(report, ForwardReport { forwarded: 1, failed: 2 });
    inbox.assert_empty();
}

// The refusals of sys, and those of a hand-off: a successor on another node for a behaviour
// without a codec, and the process itself as its own successor. Each is refused before anything
// happens: the process carries on.
#[tokio::test]
async fn a_hand_off_is_refused_before_anything_happens() {
    let runtime = runtime();
    let (events, _inbox) = reports();
    let old = start_probe(&runtime, &events, false).await;
    let new = start_probe(&runtime, &events, false).await;
    let o = old.pid();
    let elsewhere = Pid::from_parts(NodeId::from_name("elsewhere@test"), 1, 1);
    let never = Pid::from_parts(runtime.node(), runtime.incarnation(), 999_999);
    let nothing = |_: &mut Probe, _: &mut shoal_process::Context<Probe>| ();
    let hand_off = |pid, to| runtime.hand_off(pid, to, nothing, reason(), RETENTION, BOUND);

    assert_eq!(within(hand_off(never, new.pid())).await.err(), Some(SysError::NoProc(never)));
    assert_eq!(within(hand_off(elsewhere, o)).await.err(), Some(SysError::Remote(elsewhere)));
    let no_codec = SysError::NoCodec { pid: o, to: elsewhere };
    assert_eq!(within(hand_off(o, elsewhere)).await.err(), Some(no_codec));
    assert_eq!(within(hand_off(o, o)).await.err(), Some(SysError::HandOffToItself(o)));
    let calc = runtime.spawn(Calc::new(1));
    let wrong = runtime.hand_off(o, calc.pid(), |_: &mut Calc, _| (), reason(), RETENTION, BOUND);
    assert_eq!(within(wrong).await.err(), Some(SysError::WrongBehaviour(o)));

    let (report, reported) = oneshot::channel();
    let node = runtime.clone();
    let to = new.pid();
    park(&old, async move {
        let asked = node.hand_off(o, to, nothing, reason(), RETENTION, FOREVER).await;
        let _ = report.send(asked.err());
        None
    })
    .await;
    assert_eq!(within(reported).await.unwrap(), Some(SysError::ToSelf(o)));
    assert_eq!(within(old.call(Ask::Echo(1))).await, Ok(1), "the process carries on");
    assert!(runtime.is_alive(o));
}

// A snapshot not begun within the timeout is withdrawn: the process is not ended, and handles
// the letters behind it itself.
#[tokio::test(start_paused = true)]
async fn a_hand_off_not_begun_within_its_timeout_leaves_the_process_running() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let old = start_probe(&runtime, &events, false).await;
    let new = start_probe(&runtime, &events, false).await;
    let gate = block(&old).await;
    let timeout = Duration::from_secs(1);
    let handed =
        runtime.hand_off(old.pid(), new.pid(), note(&events, 1), reason(), RETENTION, timeout);
    assert_eq!(within(handed).await.err(), Some(SysError::Timeout));
    gate.open();
    old.cast(Cmd::Note(2)).await.unwrap();
    assert_eq!(inbox.next().await, Event::Note(old.pid(), 2));
    assert!(runtime.is_alive(old.pid()));
}

// Across nodes: a process of node a handed off to a successor on node b. Typed letters sent to
// the old pid on a go on through the behaviour's codec; letters from node b for the old pid
// arrive on a still encoded and go on to b as they came, a call's answer relayed back to its
// caller on b.
#[tokio::test]
async fn a_hand_off_to_another_node_forwards_typed_and_encoded_letters() {
    let (a, b) = two_nodes();
    let old = a.spawn(Calc::new(1));
    let new = b.spawn(Calc::new(0));
    old.cast(CalcMsg::Add(2)).await.unwrap();
    let handed = a.hand_off(
        old.pid(),
        new.pid(),
        |calc: &mut Calc, _| calc.total(),
        reason(),
        RETENTION,
        BOUND,
    );
    let (snapshot, forwarding) = within(handed).await.unwrap();
    assert_eq!(snapshot, 3);
    new.cast(CalcMsg::Add(snapshot)).await.unwrap();
    forwarding.start();
    old.cast(CalcMsg::Add(10)).await.unwrap();
    within(b.cast(old.pid(), CalcMsg::Add(100))).await.unwrap();
    let total: u64 = within(b.call(old.pid(), CalcReq::Get, BOUND)).await.unwrap();
    assert_eq!(total, 113);
    assert_eq!(within(old.call(CalcReq::Get)).await, Ok(113));
    forwarding.drained().await;
    assert!(!a.is_alive(old.pid()));
}

// Letters from another node for a pid whose successor is on the pid's own node are delivered
// there as they came; once the successor is gone, they fail, and a caller on the other node is
// told (no such process), not left waiting.
#[tokio::test(start_paused = true)]
async fn letters_from_another_node_go_on_to_a_local_successor() {
    let (a, b) = two_nodes();
    let old = a.spawn(Calc::new(0));
    let new = a.spawn(Calc::new(0));
    let handed = a.hand_off(old.pid(), new.pid(), |_: &mut Calc, _| (), reason(), RETENTION, BOUND);
    let ((), forwarding) = within(handed).await.unwrap();
    forwarding.start();
    within(b.cast(old.pid(), CalcMsg::Add(5))).await.unwrap();
    let total: u64 = within(b.call(old.pid(), CalcReq::Get, BOUND)).await.unwrap();
    assert_eq!(total, 5);
    assert_eq!(within(new.call(CalcReq::Get)).await, Ok(5));

    a.kill(new.pid());
    within(a.watch(new.pid())).await;
    within(b.cast(old.pid(), CalcMsg::Add(1))).await.unwrap();
    let failed: Result<u64, _> = within(b.call(old.pid(), CalcReq::Get, BOUND)).await;
    assert_eq!(failed, Err(CallError::NoProc));
    let report = within(forwarding.finished()).await;
    assert_eq!(report, ForwardReport { forwarded: 2, failed: 2 });
}
