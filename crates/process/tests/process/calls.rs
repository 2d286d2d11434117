//! Spawn, cast and call, typed (`Addr`) and by pid (`Runtime`).

use std::any::type_name;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use shoal_process::{CallError, ExitReason, SendError};
use tokio::sync::oneshot;

use crate::support::{
    Ask, Calc, CalcMsg, CalcReq, Cmd, Event, Probe, block, reports, poll_once, run, runtime, within,
};

// gen_server: casts are handled in order, then a call is answered with the handler's reply.
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

// gen_server: a handler may keep the reply handle and answer on a later message (noreply).
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

// gen_server: the reply may be sent from another task (gen_server:reply from anywhere).
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

// A reply handle dropped unanswered tells the caller at once: NoReply; the process lives on.
#[tokio::test]
async fn dropping_the_reply_handle_is_no_reply() {
    let runtime = runtime();
    let (events, _inbox) = reports();
    let probe = runtime.spawn(Probe::new(&events));
    assert_eq!(within(probe.call(Ask::Ignore)).await, Err(CallError::NoReply));
    assert!(probe.is_alive());
    assert_eq!(within(probe.call(Ask::Echo(5))).await, Ok(5));
}

// gen_server:call/3: no reply within the timeout is Timeout; a later reply is discarded.
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

// Calling a process that is not alive is NoProc, typed or by pid.
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

// gen_server:call exits with the server's reason when it dies before answering: a call still
// queued in the mailbox when the process exits gets CallError::Exited(reason).
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

// The same rule when the call was already taken from the mailbox (in the batch the process
// was working through) but not handled yet when the process stopped; `terminate` lingers so
// the caller looks before the process has fully exited.
#[tokio::test]
async fn a_call_taken_but_not_handled_when_the_process_exits_gets_the_exit_reason() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let probe = runtime.spawn(Probe::new(&events));
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

// A call held for a deferred reply when the process exits gets the exit reason as well.
#[tokio::test]
async fn a_call_held_when_the_process_exits_gets_the_exit_reason() {
    let runtime = runtime();
    let (events, _inbox) = reports();
    let probe = runtime.spawn(Probe::new(&events));
    let (held, is_held) = oneshot::channel();
    let caller = tokio::spawn({
        let probe = probe.clone();
        async move { probe.call(Ask::Hold(held)).await }
    });
    within(is_held).await.unwrap();
    runtime.exit(probe.pid(), ExitReason::Shutdown);
    assert_eq!(within(caller).await.unwrap(), Err(CallError::Exited(ExitReason::Shutdown)));
}

// Untyped messaging: by pid, a value of the behaviour's message and request types arrives.
#[tokio::test]
async fn casts_and_calls_by_pid_reach_the_process() {
    let runtime = runtime();
    let calc = runtime.spawn(Calc::new(1));
    within(runtime.cast(calc.pid(), CalcMsg::Add(5))).await.unwrap();
    runtime.try_cast(calc.pid(), CalcMsg::Add(2)).unwrap();
    let total: u64 = within(runtime.call(calc.pid(), CalcReq::Get, Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(total, 8);
}

// Untyped messaging checks types on arrival: a wrong message or request type is WrongType (the
// message handed back), a wrong expected reply type is ReplyType; the process lives on.
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
