//! Timers, on tokio's paused clock: time only moves when every task waits. Delays stay well
//! under the bound every wait has (`support::BOUND`), which runs on the same clock.

use std::time::Duration;

use shoal_process::{CallError, Clock, ExitReason, Runtime, Signal};

use crate::support::{Calc, CalcReq, Cmd, Event, Probe, reports, run, runtime, within};

const SECOND: Duration = Duration::from_secs(1);

// send_after: the message arrives after the delay, as an ordinary cast.
#[tokio::test(start_paused = true)]
async fn send_after_delivers_the_message() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let probe = runtime.spawn(Probe::new(&events));
    run(&probe, |_, ctx| drop(ctx.send_after(5 * SECOND, Cmd::Note(1)))).await;
    assert_eq!(inbox.next().await, Event::Note(probe.pid(), 1));
    // From outside the process, through its handle, likewise.
    drop(probe.cast_after(5 * SECOND, Cmd::Note(2)));
    assert_eq!(inbox.next().await, Event::Note(probe.pid(), 2));
}

// cancel_timer before firing returns true, and the message never arrives.
#[tokio::test(start_paused = true)]
async fn a_timer_cancelled_before_it_fires_delivers_nothing() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let probe = runtime.spawn(Probe::new(&events));
    let cancelled = run(&probe, |_, ctx| ctx.send_after(SECOND, Cmd::Note(1))).await;
    // A later timer as a sentinel: it must arrive first, and alone.
    let sentinel = probe.cast_after(2 * SECOND, Cmd::Note(2));
    assert!(cancelled.cancel());
    assert!(!cancelled.cancel(), "a timer is cancelled once");
    assert_eq!(inbox.next().await, Event::Note(probe.pid(), 2));
    assert!(!sentinel.cancel());
    inbox.assert_empty();
}

// cancel_timer after the timer fired returns false.
#[tokio::test(start_paused = true)]
async fn cancelling_a_fired_timer_returns_false() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let probe = runtime.spawn(Probe::new(&events));
    let timer = probe.cast_after(SECOND, Cmd::Note(1));
    assert_eq!(inbox.next().await, Event::Note(probe.pid(), 1));
    assert!(!timer.cancel());
}

// start_timer: the process gets Signal::Timeout carrying the timer's reference.
#[tokio::test(start_paused = true)]
async fn start_timer_delivers_a_timeout_with_the_timer_id() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let probe = runtime.spawn(Probe::new(&events));
    let timer = run(&probe, |_, ctx| ctx.start_timer(3 * SECOND)).await;
    let timeout = Signal::Timeout { timer: timer.id() };
    assert_eq!(inbox.next().await, Event::Signal(probe.pid(), timeout));
    assert!(!timer.cancel());
}

// Timers aimed at a process are cancelled when it exits.
#[tokio::test(start_paused = true)]
async fn timers_are_cancelled_when_the_process_exits() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let probe = runtime.spawn(Probe::new(&events));
    let (own, signal) = run(&probe, |_, ctx| {
        (ctx.send_after(5 * SECOND, Cmd::Note(1)), ctx.start_timer(5 * SECOND))
    })
    .await;
    let outside = probe.cast_after(5 * SECOND, Cmd::Note(2));
    // Cancelling reports whether the timer was still pending: after the exit, none is.
    let exited = runtime.watch(probe.pid());
    run(&probe, |_, ctx| ctx.stop(ExitReason::Normal)).await;
    within(exited).await;
    assert!(!own.cancel());
    assert!(!signal.cancel());
    assert!(!outside.cancel());
    let late = probe.cast_after(SECOND, Cmd::Note(3));
    assert!(!late.cancel());
    drop(events);
    assert_eq!(inbox.next().await, Event::Terminated(probe.pid(), ExitReason::Normal));
    inbox.closed().await;
}

// cancel_timer frees the timer (OTP keeps nothing of a cancelled timer): the idle-timeout
// pattern, re-arming a timer at every message, leaves the process one record, not one per
// message, whether the timer is cancelled from inside the process or outside it.
#[tokio::test(start_paused = true)]
async fn a_cancelled_timer_leaves_nothing_in_the_process() {
    const REARMS: u64 = 10_000;
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let probe = runtime.spawn(Probe::new(&events));
    let timers = |probe: &shoal_process::Addr<Probe>| {
        runtime.process_info(probe.pid()).expect("the probe is alive").timers
    };
    let rearmed = run(&probe, |_, ctx| {
        let mut idle = ctx.start_timer(60 * SECOND);
        for _ in 0..REARMS {
            assert!(idle.cancel());
            idle = ctx.send_after(60 * SECOND, Cmd::Note(0));
        }
        idle
    })
    .await;
    assert_eq!(timers(&probe), 1);
    for n in 0..REARMS {
        assert!(probe.cast_after(60 * SECOND, Cmd::Note(n)).cancel());
    }
    assert_eq!(timers(&probe), 1);
    assert!(rearmed.cancel());
    assert_eq!(timers(&probe), 0);
    // One that fires leaves nothing either.
    drop(probe.cast_after(SECOND, Cmd::Note(7)));
    assert_eq!(inbox.next().await, Event::Note(probe.pid(), 7));
    assert_eq!(timers(&probe), 0);
}

// A node whose clock runs fast (a simulation's drifting clock) runs its timers and its call
// timeouts on that clock: twice as fast, they end in half of tokio's time.
#[tokio::test(start_paused = true)]
async fn timers_and_call_timeouts_run_on_the_nodes_clock() {
    let clock = Clock::simulated(2.0, 0).expect("a rate within bounds");
    let runtime = Runtime::builder().clock(clock.clone()).build().expect("builds");
    let (events, mut inbox) = reports();
    let probe = runtime.spawn(Probe::new(&events));
    let started = tokio::time::Instant::now();
    drop(probe.cast_after(4 * SECOND, Cmd::Note(1)));
    assert_eq!(inbox.next().await, Event::Note(probe.pid(), 1));
    assert_eq!(started.elapsed(), 2 * SECOND, "4 s of the node's clock, 2 s of tokio's");

    let started = tokio::time::Instant::now();
    let silent = runtime.spawn(Calc::new(0));
    let never: Result<u64, _> = silent.call_timeout(CalcReq::Never, 6 * SECOND).await;
    assert_eq!(never, Err(CallError::Timeout));
    assert_eq!(started.elapsed(), 3 * SECOND);
    assert_eq!(runtime.clock().rate(), 2.0);
}

// A simulation may fix the incarnation; by default a fresh one is taken from the node's wall
// clock, and stays above every earlier one of this OS process even when that clock is behind.
#[tokio::test]
async fn the_incarnation_is_fixed_or_fresh() {
    let fixed = Runtime::builder().incarnation(42).build().expect("builds");
    assert_eq!(fixed.incarnation(), 42);
    let earlier = Runtime::new().expect("builds").incarnation();
    let behind = Clock::simulated(1.0, 1_000).expect("a rate within bounds");
    let later = Runtime::builder().clock(behind).build().expect("builds");
    assert!(later.incarnation() > earlier);
}
