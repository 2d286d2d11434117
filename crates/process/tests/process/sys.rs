//! Sys work (`Runtime::sys`, `Addr::sys`): a closure run inside a process, on its state, at its
//! place in the mailbox order, as OTP's `sys:get_state` and `sys:replace_state`.

use std::pin::pin;
use std::time::Duration;

use shoal_process::{
    Addr, Context, ExitReason, MailboxConfig, NodeId, Overflow, Pid, Process, ReplyTo,
    SpawnOptions, SysError,
};
use tokio::sync::oneshot;

use crate::support::{
    Ask, BOUND, Calc, Cmd, Event, Events, Probe, block, park, poll_once, reports, runtime,
    start_probe, within,
};

/// Longer than the test's bound: a caller that waited this long would fail the test rather
/// than time out.
const FOREVER: Duration = Duration::from_secs(3_600);

/// A running total: casts add to it, a call reads it.
#[derive(Debug, PartialEq, Eq)]
struct Tally(u64);

impl Process for Tally {
    type Message = u64;
    type Call = ();
    type Reply = u64;

    async fn handle_cast(&mut self, n: u64, _: &mut Context<Self>) {
        self.0 += n;
    }

    async fn handle_call(&mut self, (): (), reply: ReplyTo<u64>, _: &mut Context<Self>) {
        reply.send(self.0);
    }
}

/// Sys work for a probe that reports `Event::Note(n)` (tagged with the pid it runs in) and
/// returns `n`.
fn note(
    events: &Events,
    n: u64,
) -> impl FnOnce(&mut Probe, &mut Context<Probe>) -> u64 + Send + use<> {
    let events = events.clone();
    move |_, ctx| {
        let _ = events.send(Event::Note(ctx.pid(), n));
        n
    }
}

// sys:get_state: the work runs inside the process (its pid is the context's), on its state,
// after the letters queued before it; by handle and by pid alike.
#[tokio::test]
async fn sys_work_reads_the_state_after_the_letters_before_it() {
    let runtime = runtime();
    let tally = runtime.spawn(Tally(0));
    tally.cast(1).await.unwrap();
    tally.cast(2).await.unwrap();
    let read = within(tally.sys(|state, ctx| (state.0, ctx.pid()), BOUND)).await;
    assert_eq!(read, Ok((3, tally.pid())));
    tally.cast(4).await.unwrap();
    let read = within(runtime.sys::<Tally, _>(tally.pid(), |state, _| state.0, BOUND)).await;
    assert_eq!(read, Ok(7));
}

// sys:replace_state: the work may replace the whole state, and the next letter sees the new one.
#[tokio::test]
async fn sys_work_replaces_the_state_and_the_next_letter_sees_it() {
    let runtime = runtime();
    let tally = runtime.spawn(Tally(3));
    let replaced = within(tally.sys(|state, _| std::mem::replace(state, Tally(100)), BOUND)).await;
    assert_eq!(replaced, Ok(Tally(3)));
    tally.cast(1).await.unwrap();
    assert_eq!(within(tally.call(())).await, Ok(101));
}

// Mailbox order: letters queued before the work are handled before it, letters queued after
// it are handled after it.
#[tokio::test]
async fn sys_work_runs_at_its_place_in_the_mailbox_order() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let probe = start_probe(&runtime, &events, false).await;
    let gate = block(&probe).await;
    probe.cast(Cmd::Note(1)).await.unwrap();
    probe.cast(Cmd::Note(2)).await.unwrap();
    let mut sys = pin!(probe.sys(note(&events, 100), BOUND));
    assert!(poll_once(&mut sys).await.is_pending(), "the work is queued");
    probe.cast(Cmd::Note(3)).await.unwrap();
    gate.open();
    assert_eq!(within(sys).await, Ok(100));
    let pid = probe.pid();
    let seen =
        [Event::Note(pid, 1), Event::Note(pid, 2), Event::Note(pid, 100), Event::Note(pid, 3)];
    assert_eq!(inbox.take(4).await, seen);
}

// A pid that names no live process of this node is NoProc: one never spawned, one that has
// exited (by pid, and through a handle kept from when it was alive).
#[tokio::test]
async fn sys_work_for_a_process_that_is_not_alive_is_no_proc() {
    let runtime = runtime();
    let never = Pid::from_parts(runtime.node(), runtime.incarnation(), 999_999);
    let outcome = within(runtime.sys::<Tally, _>(never, |_, _| (), BOUND)).await;
    assert_eq!(outcome, Err(SysError::NoProc(never)));

    let tally = runtime.spawn(Tally(0));
    let pid = tally.pid();
    runtime.kill(pid);
    within(runtime.watch(pid)).await;
    let outcome = within(runtime.sys::<Tally, _>(pid, |_, _| (), BOUND)).await;
    assert_eq!(outcome, Err(SysError::NoProc(pid)));
    assert_eq!(within(tally.sys(|_, _| (), BOUND)).await, Err(SysError::NoProc(pid)));
}

// A closure cannot cross nodes: work for a process of another node is refused, by pid and
// through a typed handle to it.
#[tokio::test]
async fn sys_work_for_a_process_of_another_node_is_refused() {
    let runtime = runtime();
    let elsewhere = Pid::from_parts(NodeId::from_name("elsewhere@test"), 1, 1);
    let outcome = within(runtime.sys::<Calc, _>(elsewhere, |_, _| (), BOUND)).await;
    assert_eq!(outcome, Err(SysError::Remote(elsewhere)));
    let remote: Addr<Calc> = runtime.addr(elsewhere).expect("Calc takes remote messages");
    assert_eq!(within(remote.sys(|_, _| (), BOUND)).await, Err(SysError::Remote(elsewhere)));
}

// Work written for one behaviour is refused by a process of another; the process is untouched.
#[tokio::test]
async fn sys_work_for_another_behaviour_is_refused() {
    let runtime = runtime();
    let tally = runtime.spawn(Tally(5));
    let outcome = within(runtime.sys::<Calc, _>(tally.pid(), |_, _| (), BOUND)).await;
    assert_eq!(outcome, Err(SysError::WrongBehaviour(tally.pid())));
    assert_eq!(within(tally.call(())).await, Ok(5));
}

// A timeout withdraws the work: a caller told Timeout can rely on its work never running, even
// once the process gets to it (here, after a long handler).
#[tokio::test(start_paused = true)]
async fn sys_work_not_begun_within_its_timeout_is_withdrawn() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let probe = start_probe(&runtime, &events, false).await;
    let gate = block(&probe).await;
    let asked = tokio::time::Instant::now();
    let outcome = within(probe.sys(note(&events, 1), Duration::from_secs(1))).await;
    assert_eq!(outcome, Err(SysError::Timeout));
    assert_eq!(asked.elapsed(), Duration::from_secs(1));
    gate.open();
    // Queued after the withdrawn work: once it is answered, the work has been passed over.
    assert_eq!(within(probe.call(Ask::Echo(2))).await, Ok(2));
    inbox.assert_empty();
}

// Sys work counts against the mailbox's bound as a message does. A full mailbox makes it wait
// for room, whatever the overflow policy (as a timer's message does), for no longer than its
// timeout: work that found no room in time was never queued.
#[tokio::test(start_paused = true)]
async fn sys_work_waits_for_room_in_a_full_mailbox_whatever_its_policy() {
    for overflow in [Overflow::Wait, Overflow::Reject] {
        let runtime = runtime();
        let (events, mut inbox) = reports();
        let options = SpawnOptions::new().mailbox(MailboxConfig { capacity: 1, overflow });
        let probe = within(runtime.start_with(Probe::new(&events), options)).await.unwrap();
        let gate = block(&probe).await;
        probe.try_cast(Cmd::Note(1)).unwrap();
        let outcome = within(probe.sys(note(&events, 2), Duration::from_secs(1))).await;
        assert_eq!(outcome, Err(SysError::Timeout));
        assert_eq!(probe.mailbox_len(), Some(1), "the work found no room, so was not queued");

        let mut sys = pin!(probe.sys(note(&events, 3), BOUND));
        assert!(poll_once(&mut sys).await.is_pending(), "the work waits for room");
        assert!(matches!(probe.try_cast(Cmd::Note(4)), Err(shoal_process::SendError::Full(_))));
        gate.open();
        assert_eq!(within(sys).await, Ok(3));
        let pid = probe.pid();
        assert_eq!(inbox.take(2).await, [Event::Note(pid, 1), Event::Note(pid, 3)]);
    }
}

// A panic in sys work is a panic in a handler: it ends that process only, with the panic as
// its reason (terminate runs), and the caller learns it at once; the runtime lives on.
#[tokio::test]
async fn a_panic_in_sys_work_ends_only_its_process() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let probe = start_probe(&runtime, &events, false).await;
    let bystander = runtime.spawn(Tally(1));
    let pid = probe.pid();
    let exit = runtime.watch(pid);
    let outcome = within(probe.sys(|_, _| -> u64 { panic!("sys work failed") }, FOREVER)).await;
    let panic = ExitReason::Panic("sys work failed".to_owned());
    assert_eq!(outcome, Err(SysError::Exited { pid, reason: panic.clone() }));
    assert_eq!(within(exit).await, panic);
    assert_eq!(inbox.next().await, Event::Terminated(pid, panic));
    assert!(!runtime.is_alive(pid));

    assert_eq!(within(bystander.sys(|state, _| state.0, BOUND)).await, Ok(1));
    let probe = start_probe(&runtime, &events, false).await;
    assert_eq!(within(probe.call(Ask::Echo(7))).await, Ok(7));
}

// A process that exits drops the work still queued, unrun, and its callers are told why at
// once (not at their timeout): whether the process stops on a letter of the batch that holds
// the work, or is killed while the work waits in its mailbox.
#[tokio::test]
async fn sys_work_queued_when_its_process_exits_is_dropped_and_its_callers_told() {
    let runtime = runtime();
    let (events, mut inbox) = reports();

    let probe = start_probe(&runtime, &events, false).await;
    let pid = probe.pid();
    let gate = block(&probe).await;
    let bye = ExitReason::custom("bye");
    let stop = bye.clone();
    probe.cast(Cmd::Run(Box::new(move |_, ctx| ctx.stop(stop)))).await.unwrap();
    let mut first = pin!(probe.sys(note(&events, 1), FOREVER));
    let mut second = pin!(runtime.sys::<Probe, _>(pid, note(&events, 2), FOREVER));
    assert!(poll_once(&mut first).await.is_pending(), "the first work is queued");
    assert!(poll_once(&mut second).await.is_pending(), "the second work is queued");
    gate.open();
    assert_eq!(within(first).await, Err(SysError::Exited { pid, reason: bye.clone() }));
    assert_eq!(within(second).await, Err(SysError::Exited { pid, reason: bye.clone() }));
    assert_eq!(inbox.next().await, Event::Terminated(pid, bye));

    let probe = start_probe(&runtime, &events, false).await;
    let pid = probe.pid();
    let _gate = block(&probe).await;
    let mut queued = pin!(probe.sys(note(&events, 3), FOREVER));
    assert!(poll_once(&mut queued).await.is_pending(), "the work is queued");
    runtime.kill(pid);
    assert_eq!(within(queued).await, Err(SysError::Exited { pid, reason: ExitReason::Killed }));
    inbox.assert_empty();
}

// A process never waits on itself: work it asks of itself, from its own handler, by handle or
// by pid, would wait for the very handler that waits for it, so it is refused at once (here
// with an hour's timeout). The process carries on.
#[tokio::test]
async fn sys_work_a_process_asks_of_itself_is_refused_at_once() {
    let runtime = runtime();
    let (events, _inbox) = reports();
    let probe = start_probe(&runtime, &events, false).await;
    let (report, reported) = oneshot::channel();
    let (me, node) = (probe.clone(), runtime.clone());
    park(&probe, async move {
        let by_handle = me.sys(|_, _| (), FOREVER).await;
        let by_pid = node.sys::<Probe, _>(me.pid(), |_, _| (), FOREVER).await;
        let _ = report.send((by_handle, by_pid));
        None
    })
    .await;
    let pid = probe.pid();
    let refused = Err(SysError::ToSelf(pid));
    assert_eq!(within(reported).await.unwrap(), (refused.clone(), refused));
    assert_eq!(within(probe.call(Ask::Echo(1))).await, Ok(1));
}
