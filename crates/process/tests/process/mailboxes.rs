//! Bounded mailboxes (back-pressure, rejection, signals) and message ordering.

use std::pin::pin;
use std::time::Duration;

use shoal_process::{
    CallError, ExitError, ExitReason, MailboxConfig, Overflow, SendError, Signal, SpawnOptions,
};

use crate::support::{
    Ask, Calc, CalcMsg, CalcReq, Cmd, Event, Probe, block, poll_once, reports, run, runtime, within,
};

fn mailbox(capacity: usize, overflow: Overflow) -> SpawnOptions {
    SpawnOptions::new().mailbox(MailboxConfig { capacity, overflow })
}

// Bounded mailbox: a try_ send to a full mailbox is SendError::Full, handing the message back.
#[tokio::test]
async fn try_cast_to_a_full_mailbox_hands_the_message_back() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let probe = runtime.spawn_with(Probe::new(&events), mailbox(2, Overflow::Wait)).unwrap();
    let gate = block(&probe).await;
    probe.try_cast(Cmd::Note(1)).unwrap();
    probe.try_cast(Cmd::Note(2)).unwrap();
    assert!(matches!(probe.try_cast(Cmd::Note(3)), Err(SendError::Full(Cmd::Note(3)))));
    gate.open();
    let pid = probe.pid();
    assert_eq!(inbox.take(2).await, [Event::Note(pid, 1), Event::Note(pid, 2)]);

    let (calc, parked, release) = Calc::parkable();
    let calc = runtime.spawn_with(calc, mailbox(1, Overflow::Wait)).unwrap();
    calc.cast(CalcMsg::Park).await.unwrap();
    within(parked).await.unwrap();
    runtime.try_cast(calc.pid(), CalcMsg::Add(1)).unwrap();
    match runtime.try_cast(calc.pid(), CalcMsg::Add(2)) {
        Err(SendError::Full(CalcMsg::Add(2))) => {}
        other => panic!("expected Full(Add(2)), got {other:?}"),
    }
    release.send(()).unwrap();
    assert_eq!(within(calc.call(CalcReq::Get)).await, Ok(1));
}

// Overflow::Wait: an async send to a full mailbox is pending until the process takes letters.
#[tokio::test]
async fn an_async_send_to_a_full_mailbox_waits_for_room() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let probe = runtime.spawn_with(Probe::new(&events), mailbox(1, Overflow::Wait)).unwrap();
    let gate = block(&probe).await;
    probe.cast(Cmd::Note(1)).await.unwrap();
    let mut cast = pin!(probe.cast(Cmd::Note(2)));
    assert!(poll_once(&mut cast).await.is_pending(), "the typed cast waits for room");
    let mut call = pin!(probe.call(Ask::Echo(3)));
    assert!(poll_once(&mut call).await.is_pending(), "the call waits for room");
    gate.open();
    within(cast).await.unwrap();
    assert_eq!(within(call).await, Ok(3));
    let pid = probe.pid();
    assert_eq!(inbox.take(2).await, [Event::Note(pid, 1), Event::Note(pid, 2)]);

    let (calc, parked, release) = Calc::parkable();
    let calc = runtime.spawn_with(calc, mailbox(1, Overflow::Wait)).unwrap();
    calc.cast(CalcMsg::Park).await.unwrap();
    within(parked).await.unwrap();
    runtime.try_cast(calc.pid(), CalcMsg::Add(1)).unwrap();
    let mut cast = pin!(runtime.cast(calc.pid(), CalcMsg::Add(2)));
    assert!(poll_once(&mut cast).await.is_pending(), "the cast by pid waits for room");
    release.send(()).unwrap();
    within(cast).await.unwrap();
    assert_eq!(within(calc.call(CalcReq::Get)).await, Ok(3));
}

// Overflow::Reject: an async send or call to a full mailbox fails at once with Full.
#[tokio::test]
async fn a_reject_mailbox_refuses_async_sends_at_once() {
    let runtime = runtime();
    let (events, _inbox) = reports();
    let probe = runtime.spawn_with(Probe::new(&events), mailbox(1, Overflow::Reject)).unwrap();
    let gate = block(&probe).await;
    probe.cast(Cmd::Note(1)).await.unwrap();
    assert!(matches!(within(probe.cast(Cmd::Note(2))).await, Err(SendError::Full(Cmd::Note(2)))));
    assert_eq!(within(probe.call(Ask::Echo(3))).await, Err(CallError::Full));
    gate.open();

    let (calc, parked, release) = Calc::parkable();
    let calc = runtime.spawn_with(calc, mailbox(1, Overflow::Reject)).unwrap();
    calc.cast(CalcMsg::Park).await.unwrap();
    within(parked).await.unwrap();
    within(runtime.cast(calc.pid(), CalcMsg::Add(1))).await.unwrap();
    match within(runtime.cast(calc.pid(), CalcMsg::Add(2))).await {
        Err(SendError::Full(CalcMsg::Add(2))) => {}
        other => panic!("expected Full(Add(2)), got {other:?}"),
    }
    let refused: Result<u64, _> =
        within(runtime.call(calc.pid(), CalcReq::Get, Duration::from_secs(5))).await;
    assert_eq!(refused, Err(CallError::Full));
    release.send(()).unwrap();
    // Room again once the process has taken its next letter.
    within(std::future::poll_fn(|cx| runtime.poll_room(calc.pid(), cx))).await;
    assert_eq!(within(calc.call(CalcReq::Get)).await, Ok(1));
}

// Only messages count toward capacity: a Down still reaches a full mailbox, after its messages.
#[tokio::test]
async fn signals_reach_a_full_mailbox() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let watcher = runtime.spawn_with(Probe::new(&events), mailbox(1, Overflow::Wait)).unwrap();
    let target = runtime.spawn(Probe::new(&events));
    let target_pid = target.pid();
    let monitor = run(&watcher, move |_, ctx| ctx.monitor(target_pid)).await;
    let gate = block(&watcher).await;
    watcher.try_cast(Cmd::Note(1)).unwrap();
    assert!(matches!(watcher.try_cast(Cmd::Note(2)), Err(SendError::Full(_))));
    runtime.kill(target_pid);
    // Single-threaded: once the watch resolves, the target has fully exited.
    within(runtime.watch(target_pid)).await;
    assert_eq!(runtime.mailbox_len(watcher.pid()), Some(2));
    gate.open();
    let down = Signal::Down { monitor, pid: target_pid, reason: ExitReason::Killed };
    let seen = inbox.take(2).await;
    assert_eq!(seen, [Event::Note(watcher.pid(), 1), Event::Signal(watcher.pid(), down)]);
}

// Nothing is lost under back-pressure: every message arrives, in each sender's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_pressure_loses_nothing_and_keeps_each_senders_order() {
    const PER_SENDER: u64 = 2_000;
    const SENDERS: u64 = 3;
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let probe = runtime.spawn_with(Probe::new(&events), mailbox(4, Overflow::Wait)).unwrap();
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let probe = probe.clone();
            tokio::spawn(async move {
                for n in 0..PER_SENDER {
                    probe.cast(Cmd::Note(sender * PER_SENDER + n)).await.unwrap();
                }
            })
        })
        .collect();
    let seen = inbox.take((SENDERS * PER_SENDER) as usize).await;
    for sender in senders {
        within(sender).await.unwrap();
    }
    let mut next = vec![0; SENDERS as usize];
    for event in seen {
        let Event::Note(_, n) = event else { panic!("unexpected {event:?}") };
        let sender = (n / PER_SENDER) as usize;
        assert_eq!(n % PER_SENDER, next[sender], "sender {sender} out of order");
        next[sender] += 1;
    }
    assert_eq!(next, vec![PER_SENDER; SENDERS as usize]);

    // By pid, too: every addition counts.
    let calc = runtime.spawn_with(Calc::new(0), mailbox(2, Overflow::Wait)).unwrap();
    let pid = calc.pid();
    let adders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let runtime = runtime.clone();
            tokio::spawn(async move {
                for n in 1..=PER_SENDER {
                    runtime.cast(pid, CalcMsg::Add(n)).await.unwrap();
                }
            })
        })
        .collect();
    for adder in adders {
        within(adder).await.unwrap();
    }
    let total = SENDERS * PER_SENDER * (PER_SENDER + 1) / 2;
    assert_eq!(within(calc.call(CalcReq::Get)).await, Ok(total));
}

// Erlang ordering: a message sent just before exiting reaches the monitor before the Down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_words_arrive_before_the_down() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let watcher = runtime.spawn(Probe::new(&events));
    for round in 0..50 {
        let (quiet, _quiet_inbox) = reports();
        let target = runtime.spawn(Probe::new(&quiet));
        let target_pid = target.pid();
        let monitor = run(&watcher, move |_, ctx| ctx.monitor(target_pid)).await;
        let to = watcher.clone();
        let last_words = Cmd::Run(Box::new(move |_, ctx| {
            to.try_cast(Cmd::Note(round)).unwrap();
            ctx.stop(ExitReason::Normal);
        }));
        target.cast(last_words).await.unwrap();
        let down = Signal::Down { monitor, pid: target_pid, reason: ExitReason::Normal };
        let seen = inbox.take(2).await;
        assert_eq!(seen, [Event::Note(watcher.pid(), round), Event::Signal(watcher.pid(), down)]);
    }
}

// Bounded mailboxes hold for exit signals: one sent directly to a process that traps exits is
// a letter anyone may send any number of, so it counts against the bound as a message does.
// Into a full mailbox try_exit hands it back and exit refuses it (logged); a link's exit and a
// Down, bounded by what the process set up, are still admitted; a kill is never queued.
#[tokio::test]
async fn direct_exit_signals_to_a_trapping_process_count_against_its_bound() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let options = mailbox(1, Overflow::Wait);
    let trapper = within(runtime.start_with(Probe::trapping(&events), options)).await.unwrap();
    let (linked_events, _linked_inbox) = reports();
    let linked = runtime
        .spawn_with(Probe::new(&linked_events), SpawnOptions::new().link(trapper.pid()))
        .unwrap();
    let gate = block(&trapper).await;
    let first = ExitReason::custom("first");
    runtime.try_exit(trapper.pid(), first.clone()).unwrap();
    let second = ExitReason::custom("second");
    assert_eq!(runtime.try_exit(trapper.pid(), second.clone()), Err(ExitError::Full(second)));
    for _ in 0..1_000 {
        runtime.exit(trapper.pid(), ExitReason::custom("flood"));
    }
    assert_eq!(runtime.mailbox_len(trapper.pid()), Some(1));
    assert!(matches!(trapper.try_cast(Cmd::Note(1)), Err(SendError::Full(_))));
    // A link's exit still gets in.
    runtime.kill(linked.pid());
    within(runtime.watch(linked.pid())).await;
    assert_eq!(runtime.mailbox_len(trapper.pid()), Some(2));
    gate.open();
    let system = runtime.system_pid();
    assert_eq!(
        inbox.take(2).await,
        [
            Event::Signal(trapper.pid(), Signal::Exit { from: system, reason: first }),
            Event::Signal(
                trapper.pid(),
                Signal::Exit { from: linked.pid(), reason: ExitReason::Killed }
            ),
        ]
    );
    // With room again, exit signals are queued again; a kill needs no room at all.
    runtime.exit(trapper.pid(), ExitReason::custom("again"));
    let again = Signal::Exit { from: system, reason: ExitReason::custom("again") };
    assert_eq!(inbox.next().await, Event::Signal(trapper.pid(), again));
    let gate = block(&trapper).await;
    trapper.try_cast(Cmd::Note(2)).unwrap();
    let exited = runtime.watch(trapper.pid());
    runtime.kill(trapper.pid());
    assert_eq!(within(exited).await, ExitReason::Killed);
    drop(gate);
}

// Nothing is dropped for lack of room: a timer's message waits for room in a full mailbox even
// under Overflow::Reject (the timer is a task of its own, so its waiting holds up no one).
#[tokio::test(start_paused = true)]
async fn a_timer_message_waits_for_room_in_a_full_reject_mailbox() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let probe = runtime.spawn_with(Probe::new(&events), mailbox(1, Overflow::Reject)).unwrap();
    let gate = block(&probe).await;
    probe.try_cast(Cmd::Note(1)).unwrap();
    let timer = probe.cast_after(Duration::from_secs(1), Cmd::Note(2));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!timer.cancel(), "the timer fired");
    assert_eq!(runtime.mailbox_len(probe.pid()), Some(1));
    gate.open();
    let pid = probe.pid();
    assert_eq!(inbox.take(2).await, [Event::Note(pid, 1), Event::Note(pid, 2)]);
}
