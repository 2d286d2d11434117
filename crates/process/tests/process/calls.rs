//! Spawn, cast and call, typed (`Addr`) and by pid (`Runtime`).

use std::any::type_name;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use shoal_process::{CallError, ExitReason, Pid, Runtime, SendError};
use tokio::sync::oneshot;

use crate::support::{
    Ask, Calc, CalcMsg, CalcReq, Cmd, Event, Probe, block, poll_once, reports, run, runtime, within,
};

// gen_server: casts are handled in send order and a call gets the handler's reply.
#[tokio::test]
async fn casts_are_handled_in_order_and_a_call_gets_its_reply() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let probe = runtime.spawn(Probe::new(&events));
    probe.cast(Cmd::Note(1)).await.unwrap();
    probe.try_cast(Cmd::Note(2)).unwrap();
    assert_eq!(within(probe.call(Ask::Echo(3))).await, Ok(3));
    let pid = probe.pid();
    assert_eq!(inbox.take(2).await, [Event::Note(pid, 1), Event::Note(pid, 2)]);
}

// gen_server noreply: a handler may keep the ReplyTo and answer on a later message.
#[tokio::test]
async fn a_reply_may_be_deferred_to_a_later_message() {
    let runtime = runtime();
    let (events, _inbox) = reports();
    let probe = runtime.spawn(Probe::new(&events));
    let (held, is_held) = oneshot::channel();
    let caller = tokio::spawn({
        let probe = probe.clone();
        async move { probe.call(Ask::Hold(held)).await }
    });
    within(is_held).await.unwrap();
    // The process keeps serving while the call waits.
    assert_eq!(within(probe.call(Ask::Echo(1))).await, Ok(1));
    let sent = run(&probe, |state, _| state.held.pop().unwrap().send(42)).await;
    assert!(sent);
    assert_eq!(within(caller).await.unwrap(), Ok(42));
}

// gen_server:reply: a kept ReplyTo may be answered from another task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_may_come_from_another_task() {
    let runtime = runtime();
    let (events, _inbox) = reports();
    let probe = runtime.spawn(Probe::new(&events));
    let (answer, answered) = oneshot::channel();
    let caller = tokio::spawn({
        let probe = probe.clone();
        async move { probe.call(Ask::Hand(answered)).await }
    });
    // The handler returned at once: the process answers other calls meanwhile.
    assert_eq!(within(probe.call(Ask::Echo(1))).await, Ok(1));
    answer.send(9).unwrap();
    assert_eq!(within(caller).await.unwrap(), Ok(9));
}

// A ReplyTo dropped unanswered is CallError::NoReply at once; the process lives on.
#[tokio::test]
async fn dropping_the_reply_handle_is_no_reply() {
    let runtime = runtime();
    let (events, _inbox) = reports();
    let probe = runtime.spawn(Probe::new(&events));
    assert_eq!(within(probe.call(Ask::Ignore)).await, Err(CallError::NoReply));
    assert!(probe.is_alive());
    assert_eq!(within(probe.call(Ask::Echo(5))).await, Ok(5));
}

// gen_server:call/3: no reply in time is Timeout; a reply sent later is discarded.
#[tokio::test(start_paused = true)]
async fn a_call_never_answered_times_out_and_a_late_reply_is_discarded() {
    let runtime = runtime();
    let (events, _inbox) = reports();
    let probe = runtime.spawn(Probe::new(&events));
    let (held, _is_held) = oneshot::channel();
    let outcome = within(probe.call_timeout(Ask::Hold(held), Duration::from_secs(1))).await;
    assert_eq!(outcome, Err(CallError::Timeout));
    let (waiting, sent) = run(&probe, |state, _| {
        let reply = state.held.pop().unwrap();
        (reply.is_waiting(), reply.send(7))
    })
    .await;
    assert_eq!((waiting, sent), (false, false));

    // The same by pid.
    let calc = runtime.spawn(Calc::new(0));
    let outcome: Result<u64, _> =
        within(runtime.call(calc.pid(), CalcReq::Never, Duration::from_secs(1))).await;
    assert_eq!(outcome, Err(CallError::Timeout));
}

// The timeout runs from the call itself: the scheduler round a call gets before its timer is
// armed (so that a quick answer needs no timer at all) does not extend it.
#[tokio::test(start_paused = true)]
async fn a_call_times_out_at_its_deadline_counted_from_the_call() {
    let runtime = runtime();
    let (events, _inbox) = reports();
    let probe = runtime.spawn(Probe::new(&events));
    let (held, _is_held) = oneshot::channel();
    let called = tokio::time::Instant::now();
    let outcome = within(probe.call_timeout(Ask::Hold(held), Duration::from_secs(1))).await;
    assert_eq!(outcome, Err(CallError::Timeout));
    assert_eq!(called.elapsed(), Duration::from_secs(1));

    // A timeout beyond what the clock can count is no timeout.
    assert_eq!(within(probe.call_timeout(Ask::Echo(3), Duration::MAX)).await, Ok(3));
}

// Calling (or casting to) a process that is not alive is NoProc, typed or by pid.
#[tokio::test]
async fn a_call_to_a_dead_process_is_no_proc() {
    let runtime = runtime();
    let (events, _inbox) = reports();
    let probe = runtime.spawn(Probe::new(&events));
    let calc = runtime.spawn(Calc::new(0));
    runtime.kill(probe.pid());
    runtime.kill(calc.pid());
    within(runtime.watch(probe.pid())).await;
    within(runtime.watch(calc.pid())).await;
    assert_eq!(within(probe.call(Ask::Echo(1))).await, Err(CallError::NoProc));
    let outcome: Result<u64, _> =
        within(runtime.call(calc.pid(), CalcReq::Get, Duration::from_secs(1))).await;
    assert_eq!(outcome, Err(CallError::NoProc));
    assert!(matches!(probe.cast(Cmd::Note(1)).await, Err(SendError::NoProc(Cmd::Note(1)))));
    assert!(matches!(runtime.try_cast(calc.pid(), CalcMsg::Add(1)), Err(SendError::NoProc(_))));
}

// gen_server:call: a call still queued when the process exits gets Exited(reason).
#[tokio::test]
async fn a_call_queued_when_the_process_exits_gets_the_exit_reason() {
    let runtime = runtime();
    let (events, _inbox) = reports();
    let probe = runtime.spawn(Probe::new(&events));
    let gate = block(&probe).await;
    let mut call = pin!(probe.call(Ask::Echo(1)));
    assert!(poll_once(&mut call).await.is_pending(), "the call is queued");
    gate.open_and_stop(ExitReason::custom("bye"));
    assert_eq!(within(call).await, Err(CallError::Exited(ExitReason::custom("bye"))));
}

// Same for a call already taken into the process's batch but not handled when it stops.
#[tokio::test]
async fn a_call_taken_but_not_handled_when_the_process_exits_gets_the_exit_reason() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let probe = runtime.spawn(Probe::new(&events));
    // terminate lingers, so the caller is looked at before the process has fully exited.
    let (unlinger, linger) = oneshot::channel();
    run(&probe, move |state, _| state.linger = Some(linger)).await;
    let gate = block(&probe).await;
    // Queued behind the parked handler: a stop, then a call. Both go into the next batch.
    probe.cast(Cmd::Run(Box::new(|_, ctx| ctx.stop(ExitReason::custom("bye"))))).await.unwrap();
    let mut call = pin!(probe.call(Ask::Echo(1)));
    assert!(poll_once(&mut call).await.is_pending(), "the call is queued");
    gate.open();
    // The process is in `terminate` now, past the batch that held the call.
    let pid = probe.pid();
    assert_eq!(inbox.next().await, Event::Terminated(pid, ExitReason::custom("bye")));
    // Answered already, or still queued until the exit completes: either way, with the reason.
    let early = poll_once(&mut call).await;
    drop(unlinger);
    let outcome = match early {
        Poll::Ready(outcome) => outcome,
        Poll::Pending => within(call).await,
    };
    assert_eq!(outcome, Err(CallError::Exited(ExitReason::custom("bye"))));
}

/// Calls a probe that lingers in `terminate` with `ask`, ends the process with `end` once
/// `under_way` says the call is being handled, and returns the reason `terminate` got and what
/// the caller got. The call is first looked at while the process is still in `terminate` (so
/// whatever dropped the call's reply handle has done so), then again once the exit completes
/// if it was still waiting.
async fn call_across_an_exit(
    ask: Ask,
    under_way: oneshot::Receiver<()>,
    end: impl FnOnce(&Runtime, Pid),
) -> (ExitReason, Result<u64, CallError>) {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let probe = runtime.spawn(Probe::new(&events));
    let (unlinger, linger) = oneshot::channel();
    run(&probe, move |state, _| state.linger = Some(linger)).await;
    let mut call = pin!(probe.call(ask));
    assert!(poll_once(&mut call).await.is_pending(), "the call is queued");
    within(under_way).await.unwrap();
    end(&runtime, probe.pid());
    let Event::Terminated(_, reason) = inbox.next().await else { panic!("expected terminate") };
    let early = poll_once(&mut call).await;
    drop(unlinger);
    let outcome = match early {
        Poll::Ready(outcome) => outcome,
        Poll::Pending => within(call).await,
    };
    (reason, outcome)
}

// A call held for a deferred reply when the process exits gets Exited(reason), not NoReply.
#[tokio::test]
async fn a_call_held_when_the_process_exits_gets_the_exit_reason() {
    let (held, under_way) = oneshot::channel();
    let (reason, outcome) = call_across_an_exit(Ask::Hold(held), under_way, |runtime, pid| {
        runtime.exit(pid, ExitReason::Shutdown);
    })
    .await;
    assert_eq!(reason, ExitReason::Shutdown);
    assert_eq!(outcome, Err(CallError::Exited(ExitReason::Shutdown)));
}

// A call whose handler is interrupted by an exit signal gets Exited(reason).
#[tokio::test]
async fn a_call_interrupted_by_an_exit_gets_the_exit_reason() {
    let (entered, under_way) = oneshot::channel();
    let (_answer, answer) = oneshot::channel();
    let ask = Ask::Await { entered, answer };
    let (reason, outcome) = call_across_an_exit(ask, under_way, |runtime, pid| {
        runtime.exit(pid, ExitReason::custom("interrupted"));
    })
    .await;
    assert_eq!(reason, ExitReason::custom("interrupted"));
    assert_eq!(outcome, Err(CallError::Exited(reason)));
}

// A call whose handler panics gets Exited(Panic(message)).
#[tokio::test]
async fn a_call_whose_handler_panics_gets_the_panic() {
    let (called, under_way) = oneshot::channel();
    called.send(()).unwrap();
    let (reason, outcome) =
        call_across_an_exit(Ask::Panic("call handler failed"), under_way, |_, _| {}).await;
    assert_eq!(reason, ExitReason::Panic("call handler failed".to_owned()));
    assert_eq!(outcome, Err(CallError::Exited(reason)));
}

// Untyped messaging: cast, try_cast and call by pid reach a process of the right types.
#[tokio::test]
async fn casts_and_calls_by_pid_reach_the_process() {
    let runtime = runtime();
    let calc = runtime.spawn(Calc::new(1));
    within(runtime.cast(calc.pid(), CalcMsg::Add(5))).await.unwrap();
    runtime.try_cast(calc.pid(), CalcMsg::Add(2)).unwrap();
    let total: u64 =
        within(runtime.call(calc.pid(), CalcReq::Get, Duration::from_secs(5))).await.unwrap();
    assert_eq!(total, 8);
}

// By pid, a wrong message/request type is WrongType (handed back), a wrong reply ReplyType.
#[tokio::test]
async fn wrong_types_by_pid_are_refused() {
    let runtime = runtime();
    let calc = runtime.spawn(Calc::new(3));
    let pid = calc.pid();
    match within(runtime.cast(pid, "text")).await {
        Err(SendError::WrongType(message)) => assert_eq!(message, "text"),
        other => panic!("expected WrongType, got {other:?}"),
    }
    match runtime.try_cast(pid, 7u32) {
        Err(SendError::WrongType(message)) => assert_eq!(message, 7),
        other => panic!("expected WrongType, got {other:?}"),
    }
    let wrong_request: Result<u64, _> =
        within(runtime.call(pid, "get".to_owned(), Duration::from_secs(5))).await;
    assert_eq!(wrong_request, Err(CallError::WrongType(type_name::<String>())));
    let wrong_reply: Result<String, _> =
        within(runtime.call(pid, CalcReq::Get, Duration::from_secs(5))).await;
    assert_eq!(wrong_reply, Err(CallError::ReplyType(type_name::<String>())));
    assert_eq!(within(calc.call(CalcReq::Get)).await, Ok(3));
}

// Runtime::addr recovers a typed handle only for the behaviour the process runs.
#[tokio::test]
async fn runtime_addr_downcasts_to_the_behaviour() {
    let runtime = runtime();
    let calc = runtime.spawn(Calc::new(4));
    let found = runtime.addr::<Calc>(calc.pid()).expect("a Calc runs there");
    assert_eq!(found, calc);
    assert_eq!(within(found.call(CalcReq::Get)).await, Ok(4));
    assert!(runtime.addr::<Probe>(calc.pid()).is_none());
    runtime.kill(calc.pid());
    within(runtime.watch(calc.pid())).await;
    assert!(runtime.addr::<Calc>(calc.pid()).is_none());
}

/// Drops slowly: held in a call handler, it keeps the handler unwinding for a while after the
/// reply handle declared after it was dropped.
struct SlowToDrop;

impl Drop for SlowToDrop {
    fn drop(&mut self) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A behaviour whose call handler panics while holding the reply handle, and unwinds slowly.
struct PanicsSlowly;

impl shoal_process::Process for PanicsSlowly {
    type Message = ();
    type Call = ();
    type Reply = ();

    async fn handle_cast(&mut self, (): (), _: &mut shoal_process::Context<Self>) {}

    async fn handle_call(
        &mut self,
        (): (),
        reply: shoal_process::ReplyTo<()>,
        _: &mut shoal_process::Context<Self>,
    ) {
        let _slow = SlowToDrop;
        let _reply = reply;
        panic!("call handler failed");
    }
}

// A caller whose call handler panicked gets the panic, never NoReply, even when it runs on
// another thread while the handler is still unwinding (the reply handle is dropped during the
// unwinding, before the process has recorded why it ends).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_whose_handler_panics_gets_the_panic_while_it_unwinds() {
    let runtime = runtime();
    for _ in 0..3 {
        let process = runtime.spawn(PanicsSlowly);
        let reason = ExitReason::Panic("call handler failed".to_owned());
        assert_eq!(within(process.call(())).await, Err(CallError::Exited(reason.clone())));
        let process = runtime.spawn(PanicsSlowly);
        let by_pid: Result<(), _> =
            within(runtime.call(process.pid(), (), Duration::from_secs(5))).await;
        assert_eq!(by_pid, Err(CallError::Exited(reason)));
    }
}
