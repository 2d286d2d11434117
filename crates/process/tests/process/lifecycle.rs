//! A process's life: `init` and `start`, stopping, exit signals sent to it, panics.

use std::pin::pin;
use std::time::Duration;

use shoal_process::{Context, ExitReason, Process, Signal, StartError};
use tokio::sync::{mpsc, oneshot};

use crate::support::{Ask, Event, Probe, park, poll_once, reports, run, runtime, within};

/// What `Booting::init` does.
enum InitPlan {
    /// Waits for the sender before succeeding.
    WaitFor(oneshot::Receiver<()>),
    Fail(ExitReason),
    Panic,
}

/// A behaviour whose `init` follows a plan, logging `init` and `terminate`.
struct Booting {
    plan: Option<InitPlan>,
    log: mpsc::UnboundedSender<String>,
}

impl Booting {
    fn new(plan: InitPlan) -> (Self, mpsc::UnboundedReceiver<String>) {
        let (log, read) = mpsc::unbounded_channel();
        (Self { plan: Some(plan), log }, read)
    }
}

impl Process for Booting {
    type Message = ();
    type Call = ();
    type Reply = ();

    async fn init(&mut self, _: &mut Context<Self>) -> Result<(), ExitReason> {
        self.log.send("init".to_owned()).unwrap();
        match self.plan.take().unwrap() {
            InitPlan::WaitFor(go) => {
                go.await.unwrap();
                Ok(())
            }
            InitPlan::Fail(reason) => Err(reason),
            InitPlan::Panic => panic!("init exploded"),
        }
    }

    async fn handle_cast(&mut self, _: (), _: &mut Context<Self>) {}

    async fn terminate(&mut self, reason: &ExitReason, _: &mut Context<Self>) {
        self.log.send(format!("terminate: {reason}")).unwrap();
    }
}

// proc_lib:start: start returns only once init has returned successfully.
#[tokio::test]
async fn start_waits_for_init() {
    let runtime = runtime();
    let (go, wait) = oneshot::channel();
    let (booting, mut log) = Booting::new(InitPlan::WaitFor(wait));
    let mut start = pin!(runtime.start(booting));
    assert!(poll_once(&mut start).await.is_pending(), "init has not returned yet");
    assert_eq!(within(log.recv()).await.as_deref(), Some("init"));
    go.send(()).unwrap();
    let addr = within(start).await.expect("init succeeds");
    assert!(addr.is_alive());
    assert!(runtime.is_alive(addr.pid()));
}

// gen_server init {stop, Reason}: start fails with Init(Reason) and terminate is not run.
#[tokio::test]
async fn an_init_error_fails_start_without_terminate() {
    let runtime = runtime();
    let (booting, mut log) = Booting::new(InitPlan::Fail(ExitReason::custom("no config")));
    let outcome = within(runtime.start(booting)).await;
    assert_eq!(outcome.unwrap_err(), StartError::Init(ExitReason::custom("no config")));
    assert_eq!(within(log.recv()).await.as_deref(), Some("init"));
    // The state is gone and it never logged `terminate`.
    assert_eq!(within(log.recv()).await, None);
    assert_eq!(runtime.process_count(), 0);
}

// A panic in init fails start with Init(Panic(message)).
#[tokio::test]
async fn an_init_panic_fails_start_with_the_panic_message() {
    let runtime = runtime();
    let (booting, mut log) = Booting::new(InitPlan::Panic);
    let outcome = within(runtime.start(booting)).await;
    assert_eq!(outcome.unwrap_err(), StartError::Init(ExitReason::Panic("init exploded".into())));
    assert_eq!(within(log.recv()).await.as_deref(), Some("init"));
    assert_eq!(within(log.recv()).await, None);
}

// A spawned (not started) process whose init fails exits with the init's reason.
#[tokio::test]
async fn a_spawned_process_whose_init_fails_exits_with_that_reason() {
    let runtime = runtime();
    let (booting, _log) = Booting::new(InitPlan::Fail(ExitReason::custom("no config")));
    let addr = runtime.spawn(booting);
    let exited = runtime.watch(addr.pid());
    assert_eq!(within(exited).await, ExitReason::custom("no config"));
    assert!(!addr.is_alive());
}

// gen_server {stop, Reason}: terminate(Reason) runs, then the process exits with Reason.
#[tokio::test]
async fn stop_runs_terminate_then_exits_with_the_reason() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let probe = runtime.spawn(Probe::new(&events));
    let exited = runtime.watch(probe.pid());
    run(&probe, |_, ctx| ctx.stop(ExitReason::custom("done"))).await;
    assert_eq!(inbox.next().await, Event::Terminated(probe.pid(), ExitReason::custom("done")));
    assert_eq!(within(exited).await, ExitReason::custom("done"));
    assert!(!runtime.is_alive(probe.pid()));
}

// exit(Pid, shutdown) to a non-trapping process: terminate(shutdown) runs; Down carries it.
#[tokio::test]
async fn exit_shutdown_runs_terminate_and_the_down_carries_shutdown() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let target = runtime.spawn(Probe::new(&events));
    let watcher = runtime.spawn(Probe::new(&events));
    let target_pid = target.pid();
    let monitor = run(&watcher, move |_, ctx| ctx.monitor(target_pid)).await;
    runtime.exit(target_pid, ExitReason::Shutdown);
    assert_eq!(inbox.next().await, Event::Terminated(target_pid, ExitReason::Shutdown));
    let down = Signal::Down { monitor, pid: target_pid, reason: ExitReason::Shutdown };
    assert_eq!(inbox.next().await, Event::Signal(watcher.pid(), down));
}

// exit(Pid, normal) is ignored by a process that does not trap exits.
#[tokio::test]
async fn exit_normal_is_ignored_by_a_process_that_does_not_trap() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let probe = runtime.spawn(Probe::new(&events));
    runtime.exit(probe.pid(), ExitReason::Normal);
    // An exit, had it been taken, would stop the process before this call is handled.
    assert_eq!(within(probe.call(Ask::Echo(1))).await, Ok(1));
    assert!(probe.is_alive());
    inbox.assert_empty();
}

// An exit signal interrupts a handler at its await point; the process ends with that reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_interrupts_a_handler_awaiting_forever() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let probe = runtime.spawn(Probe::new(&events));
    let exited = runtime.watch(probe.pid());
    park(&probe, std::future::pending()).await;
    runtime.exit(probe.pid(), ExitReason::custom("wake up"));
    assert_eq!(within(exited).await, ExitReason::custom("wake up"));
    assert_eq!(inbox.next().await, Event::Terminated(probe.pid(), ExitReason::custom("wake up")));
}

// A kill interrupts a handler in a long sleep: Killed, and terminate does not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_interrupts_a_handler_in_a_long_sleep() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let probe = runtime.spawn(Probe::new(&events));
    drop(events);
    let exited = runtime.watch(probe.pid());
    park(&probe, async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        None
    })
    .await;
    runtime.kill(probe.pid());
    assert_eq!(within(exited).await, ExitReason::Killed);
    inbox.closed().await;
}

// terminate is interrupted only by a kill (the process then exits Killed), not by an exit.
#[tokio::test]
async fn only_a_kill_interrupts_terminate() {
    let runtime = runtime();
    let (events, mut inbox) = reports();

    let patient = runtime.spawn(Probe::new(&events));
    let (unlinger, linger) = oneshot::channel::<()>();
    run(&patient, move |state, _| state.linger = Some(linger)).await;
    let exited = runtime.watch(patient.pid());
    run(&patient, |_, ctx| ctx.stop(ExitReason::custom("done"))).await;
    assert_eq!(inbox.next().await, Event::Terminated(patient.pid(), ExitReason::custom("done")));
    runtime.exit(patient.pid(), ExitReason::Shutdown);
    drop(unlinger);
    assert_eq!(within(exited).await, ExitReason::custom("done"));

    let killed = runtime.spawn(Probe::new(&events));
    let (_unlinger, linger) = oneshot::channel::<()>();
    run(&killed, move |state, _| state.linger = Some(linger)).await;
    let exited = runtime.watch(killed.pid());
    run(&killed, |_, ctx| ctx.stop(ExitReason::custom("done"))).await;
    assert_eq!(inbox.next().await, Event::Terminated(killed.pid(), ExitReason::custom("done")));
    runtime.kill(killed.pid());
    assert_eq!(within(exited).await, ExitReason::Killed);
}

// A handler panic (&str or String payload) ends only that process, with Panic(message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_ends_only_that_process_with_its_message() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let bystander = runtime.spawn(Probe::new(&events));
    let panics: [(fn(), &str); 3] = [
        (|| panic!("static message"), "static message"),
        (|| panic!("formatted {}", 42), "formatted 42"),
        (|| std::panic::panic_any(String::from("owned payload")), "owned payload"),
    ];
    for (panic, message) in panics {
        let victim = runtime.spawn(Probe::new(&events));
        let exited = runtime.watch(victim.pid());
        victim.cast(crate::support::Cmd::Run(Box::new(move |_, _| panic()))).await.unwrap();
        let reason = ExitReason::Panic(message.to_owned());
        assert_eq!(within(exited).await, reason);
        assert_eq!(inbox.next().await, Event::Terminated(victim.pid(), reason));
    }
    assert_eq!(within(bystander.call(Ask::Echo(1))).await, Ok(1));
    let newcomer = runtime.spawn(Probe::new(&events));
    assert_eq!(within(newcomer.call(Ask::Echo(2))).await, Ok(2));
    assert_eq!(runtime.processes(), [bystander.pid(), newcomer.pid()]);
}

// OTP: `kill` is a signal of its own; an exit signal with the *reason* `killed` (a process
// relaying why another ended, say) is an ordinary exit: a trapping process gets it as a
// message and lives on, one that does not trap exits with `Killed` after running `terminate`.
// Only a real kill skips `terminate`.
#[tokio::test]
async fn an_exit_with_the_reason_killed_is_trappable_and_runs_terminate() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let trapper = crate::support::start_probe(&runtime, &events, true).await;
    runtime.exit(trapper.pid(), ExitReason::Killed);
    let exit = Signal::Exit { from: runtime.system_pid(), reason: ExitReason::Killed };
    assert_eq!(inbox.next().await, Event::Signal(trapper.pid(), exit));
    assert_eq!(within(trapper.call(Ask::Echo(1))).await, Ok(1));
    let relayer = runtime.spawn(Probe::new(&events));
    let target = trapper.pid();
    run(&relayer, move |_, ctx| ctx.exit(target, ExitReason::Killed)).await;
    let exit = Signal::Exit { from: relayer.pid(), reason: ExitReason::Killed };
    assert_eq!(inbox.next().await, Event::Signal(trapper.pid(), exit));

    let plain = crate::support::start_probe(&runtime, &events, false).await;
    let exited = runtime.watch(plain.pid());
    runtime.exit(plain.pid(), ExitReason::Killed);
    assert_eq!(within(exited).await, ExitReason::Killed);
    assert_eq!(inbox.next().await, Event::Terminated(plain.pid(), ExitReason::Killed));

    for killed in [trapper.pid(), relayer.pid()] {
        let exited = runtime.watch(killed);
        runtime.kill(killed);
        assert_eq!(within(exited).await, ExitReason::Killed);
    }
    drop(events);
    inbox.closed().await;
}

// A process running `terminate` keeps its reason when a linked process dies with `killed`:
// that is an exit signal with the reason `Killed`, not a kill, so it neither interrupts
// `terminate` nor replaces the reason.
#[tokio::test]
async fn a_link_dying_killed_does_not_rewrite_the_reason_of_a_process_in_terminate() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let ending = runtime.spawn(Probe::new(&events));
    let (quiet, _quiet_inbox) = reports();
    let linked = runtime
        .spawn_with(Probe::new(&quiet), shoal_process::SpawnOptions::new().link(ending.pid()))
        .unwrap();
    let (unlinger, linger) = oneshot::channel::<()>();
    run(&ending, move |state, _| state.linger = Some(linger)).await;
    let exited = runtime.watch(ending.pid());
    run(&ending, |_, ctx| ctx.stop(ExitReason::custom("done"))).await;
    assert_eq!(inbox.next().await, Event::Terminated(ending.pid(), ExitReason::custom("done")));
    runtime.kill(linked.pid());
    assert_eq!(within(runtime.watch(linked.pid())).await, ExitReason::Killed);
    drop(unlinger);
    assert_eq!(within(exited).await, ExitReason::custom("done"));
}

/// A behaviour whose `terminate` panics.
struct FailsToTerminate;

impl Process for FailsToTerminate {
    type Message = ();
    type Call = ();
    type Reply = ();

    async fn handle_cast(&mut self, (): (), ctx: &mut Context<Self>) {
        ctx.stop(ExitReason::Shutdown);
    }

    async fn terminate(&mut self, _: &ExitReason, _: &mut Context<Self>) {
        panic!("terminate failed");
    }
}

// A panic in `terminate` becomes the exit reason (OTP: a crash in terminate is the exit
// reason), not a log line under the original one.
#[tokio::test]
async fn a_panic_in_terminate_becomes_the_exit_reason() {
    let runtime = runtime();
    let process = runtime.spawn(FailsToTerminate);
    let exited = runtime.watch(process.pid());
    process.cast(()).await.unwrap();
    assert_eq!(within(exited).await, ExitReason::Panic("terminate failed".to_owned()));
    let process = within(runtime.start(FailsToTerminate)).await.unwrap();
    let exited = runtime.watch(process.pid());
    runtime.exit(process.pid(), ExitReason::custom("asked"));
    assert_eq!(within(exited).await, ExitReason::Panic("terminate failed".to_owned()));
}

// Limit (crate docs, "Limits"): a kill takes effect only where a handler suspends. A kill
// that arrives while a handler runs code that does not await lets that code run on to its
// next await point that is not ready; there the process ends, and nothing after it runs.
#[tokio::test]
async fn a_kill_takes_effect_where_the_handler_next_awaits() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let probe = runtime.spawn(Probe::new(&events));
    let exited = runtime.watch(probe.pid());
    let (before, ran_before) = oneshot::channel();
    let (after, ran_after) = oneshot::channel();
    let (killer, pid) = (runtime.clone(), probe.pid());
    park(&probe, async move {
        killer.kill(pid);
        let _ = before.send(());
        tokio::task::yield_now().await;
        let _ = after.send(());
        None
    })
    .await;
    assert_eq!(within(exited).await, ExitReason::Killed);
    assert_eq!(ran_before.await, Ok(()), "the code before the await point ran");
    assert!(ran_after.await.is_err(), "the code after the await point did not");
    drop(events);
    inbox.closed().await;
}

// Limit (crate docs, "Limits"): a message a process was blocked on sending when it died is
// lost: it lived in the handler's future, which the kill dropped.
#[tokio::test]
async fn a_message_being_sent_when_the_sender_is_killed_is_lost() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let options = shoal_process::SpawnOptions::new().mailbox(shoal_process::MailboxConfig {
        capacity: 1,
        overflow: shoal_process::Overflow::Wait,
    });
    let receiver = runtime.spawn_with(Probe::new(&events), options).unwrap();
    let gate = crate::support::block(&receiver).await;
    receiver.try_cast(crate::support::Cmd::Note(1)).unwrap();
    let sender = runtime.spawn(Probe::new(&events));
    let to = receiver.clone();
    park(&sender, async move {
        to.cast(crate::support::Cmd::Note(2)).await.unwrap();
        None
    })
    .await;
    let exited = runtime.watch(sender.pid());
    runtime.kill(sender.pid());
    assert_eq!(within(exited).await, ExitReason::Killed);
    gate.open();
    assert_eq!(inbox.next().await, Event::Note(receiver.pid(), 1));
    assert_eq!(within(receiver.call(Ask::Echo(3))).await, Ok(3));
    inbox.assert_empty();
}

// The crate docs state the limits no fix removes (the two tests above pin them down), and the
// A-B case of processes casting to each other with full mailboxes.
#[test]
fn the_crate_docs_state_the_inherent_limits() {
    let docs = include_str!("../../src/lib.rs");
    for promise in [
        "# Limits",
        "A kill takes effect only where a handler suspends.",
        "A message a process was blocked on sending when it died is lost.",
        "Two processes that cast to each other can wait on each other.",
        "A process never waits on itself",
    ] {
        assert!(docs.contains(promise), "the crate docs do not say {promise:?}");
    }
}
