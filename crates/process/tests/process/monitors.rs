//! Monitors: one `Down` per monitor, with the exit reason; demonitor; spawn_monitor.

use shoal_process::{Addr, Context, ExitReason, Process, Signal};

use crate::support::{Ask, Cmd, Event, Probe, block, reports, run, runtime, start_probe, within};

/// Monitors `target` from `watcher` and returns the monitor's reference.
async fn monitor(watcher: &Addr<Probe>, target: &Addr<Probe>) -> shoal_process::Ref {
    let target = target.pid();
    run(watcher, move |_, ctx| ctx.monitor(target)).await
}

/// How a target ends itself, from inside a handler.
type Ending = fn(&mut Probe, &mut Context<Probe>);

// monitor: the Down carries the exact exit reason (normal, custom, panic message, killed).
#[tokio::test]
async fn down_carries_the_exit_reason() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let watcher = runtime.spawn(Probe::new(&events));
    let endings: [(Ending, ExitReason); 4] = [
        (|_, ctx| ctx.stop(ExitReason::Normal), ExitReason::Normal),
        (|_, ctx| ctx.stop(ExitReason::custom("gave up")), ExitReason::custom("gave up")),
        (|_, _| panic!("bad state"), ExitReason::Panic("bad state".to_owned())),
        (|_, ctx| ctx.kill(ctx.pid()), ExitReason::Killed),
    ];
    for (end, reason) in endings {
        let target = runtime.spawn(Probe::new(&events));
        let monitor = monitor(&watcher, &target).await;
        target.cast(Cmd::Run(Box::new(end))).await.unwrap();
        if reason != ExitReason::Killed {
            assert_eq!(inbox.next().await, Event::Terminated(target.pid(), reason.clone()));
        }
        let down = Signal::Down { monitor, pid: target.pid(), reason };
        assert_eq!(inbox.next().await, Event::Signal(watcher.pid(), down));
    }
    // Runtime::kill as well.
    let target = runtime.spawn(Probe::new(&events));
    let monitor = monitor(&watcher, &target).await;
    runtime.kill(target.pid());
    let down = Signal::Down { monitor, pid: target.pid(), reason: ExitReason::Killed };
    assert_eq!(inbox.next().await, Event::Signal(watcher.pid(), down));
}

// monitor on a process that is not alive: a Down with noproc, at once.
#[tokio::test]
async fn monitoring_a_dead_process_gives_down_noproc() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let watcher = runtime.spawn(Probe::new(&events));
    let gone = runtime.spawn(Probe::new(&events));
    runtime.kill(gone.pid());
    within(runtime.watch(gone.pid())).await;
    let monitor = monitor(&watcher, &gone).await;
    let down = Signal::Down { monitor, pid: gone.pid(), reason: ExitReason::NoProc };
    assert_eq!(inbox.next().await, Event::Signal(watcher.pid(), down));
    assert_eq!(within(runtime.watch(gone.pid())).await, ExitReason::NoProc);
}

// demonitor: no Down is seen after it returns, even one already queued in the mailbox.
#[tokio::test]
async fn demonitor_drops_a_down_already_queued() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let watcher = runtime.spawn(Probe::new(&events));
    let target = runtime.spawn(Probe::new(&events));
    let monitor = monitor(&watcher, &target).await;
    let gate = block(&watcher).await;
    runtime.kill(target.pid());
    // On this single-threaded runtime the target has fully exited once its watch resolves:
    // its Down waits in the parked watcher's mailbox.
    within(runtime.watch(target.pid())).await;
    assert_eq!(runtime.mailbox_len(watcher.pid()), Some(1));
    // Still in the handler that was parked, before the Down is handled.
    let demonitored = gate.open_and_run(move |_, ctx| ctx.demonitor(monitor));
    assert!(within(demonitored).await.unwrap(), "the monitor was still active");
    assert_eq!(within(watcher.call(Ask::Echo(0))).await, Ok(0));
    assert_eq!(runtime.mailbox_len(watcher.pid()), Some(0));
    inbox.assert_empty();
}

// Each monitor fires exactly once, even several on one target; then it is no longer active.
#[tokio::test]
async fn each_monitor_fires_exactly_once() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let watcher = runtime.spawn(Probe::new(&events));
    let target = runtime.spawn(Probe::new(&events));
    let first = monitor(&watcher, &target).await;
    let second = monitor(&watcher, &target).await;
    assert_ne!(first, second);
    assert_eq!(runtime.process_info(target.pid()).unwrap().monitored_by, 2);
    runtime.kill(target.pid());
    let mut downs = inbox.take(2).await;
    let down = |monitor| {
        let reason = ExitReason::Killed;
        Event::Signal(watcher.pid(), Signal::Down { monitor, pid: target.pid(), reason })
    };
    // One each, in whichever order the monitors are notified.
    if downs[0] != down(first) {
        downs.swap(0, 1);
    }
    assert_eq!(downs, [down(first), down(second)]);
    let still_active = run(&watcher, move |_, ctx| ctx.demonitor(first)).await;
    assert!(!still_active);
    assert_eq!(within(watcher.call(Ask::Echo(0))).await, Ok(0));
    inbox.assert_empty();
}

/// A behaviour whose init fails at once.
struct Stillborn;

impl Process for Stillborn {
    type Message = ();
    type Call = ();
    type Reply = ();

    async fn init(&mut self, _: &mut Context<Self>) -> Result<(), ExitReason> {
        Err(ExitReason::custom("stillborn"))
    }

    async fn handle_cast(&mut self, _: (), _: &mut Context<Self>) {}
}

// spawn_monitor: the monitor exists before the child runs, so even an init failure is seen.
#[tokio::test]
async fn spawn_monitor_watches_the_child_from_its_birth() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let parent = start_probe(&runtime, &events, false).await;

    let (child_pid, monitor) = run(&parent, |_, ctx| {
        let (child, monitor) = ctx.spawn_monitor(Stillborn).expect("spawned");
        (child.pid(), monitor)
    })
    .await;
    let reason = ExitReason::custom("stillborn");
    let down = Signal::Down { monitor, pid: child_pid, reason };
    assert_eq!(inbox.next().await, Event::Signal(parent.pid(), down));

    let child_events = events.clone();
    let (child, monitor) = run(&parent, move |_, ctx| {
        let (child, monitor) = ctx.spawn_monitor(Probe::new(&child_events)).expect("spawned");
        (child, monitor)
    })
    .await;
    run(&child, |_, ctx| ctx.stop(ExitReason::custom("done"))).await;
    let done = ExitReason::custom("done");
    assert_eq!(inbox.next().await, Event::Terminated(child.pid(), done.clone()));
    let down = Signal::Down { monitor, pid: child.pid(), reason: done };
    assert_eq!(inbox.next().await, Event::Signal(parent.pid(), down));
    // Monitored, not linked: the parent lives on.
    assert_eq!(within(parent.call(Ask::Echo(1))).await, Ok(1));
}

// Monitors die with their watcher (OTP: a process's monitors are removed when it exits): a
// server watched by many short-lived clients holds no monitor once they have all exited,
// however they ended.
#[tokio::test]
async fn a_watcher_that_exits_leaves_no_monitor_on_its_target() {
    const CLIENTS: usize = 200;
    let runtime = runtime();
    let (events, _inbox) = reports();
    let server = runtime.spawn(Probe::new(&events));
    let server_pid = server.pid();
    for n in 0..CLIENTS {
        let client = runtime.spawn(Probe::new(&events));
        run(&client, move |_, ctx| ctx.monitor(server_pid)).await;
        run(&client, move |_, ctx| ctx.monitor(server_pid)).await;
        let exited = runtime.watch(client.pid());
        match n % 3 {
            0 => run(&client, |_, ctx| ctx.stop(ExitReason::Normal)).await,
            1 => runtime.kill(client.pid()),
            _ => client.cast(Cmd::Run(Box::new(|_, _| panic!("client failed")))).await.unwrap(),
        }
        within(exited).await;
    }
    assert_eq!(runtime.process_info(server_pid).unwrap().monitored_by, 0);
    // A monitor that was demonitored, or whose Down was handled, is not removed twice.
    let (target_events, _target_inbox) = reports();
    let target = runtime.spawn(Probe::new(&target_events));
    let target_pid = target.pid();
    let watcher = runtime.spawn(Probe::new(&events));
    let monitor = run(&watcher, move |_, ctx| ctx.monitor(target_pid)).await;
    assert!(run(&watcher, move |_, ctx| ctx.demonitor(monitor)).await);
    run(&watcher, move |_, ctx| ctx.monitor(server_pid)).await;
    assert_eq!(runtime.process_info(server_pid).unwrap().monitored_by, 1);
    runtime.kill(watcher.pid());
    within(runtime.watch(watcher.pid())).await;
    assert_eq!(runtime.process_info(server_pid).unwrap().monitored_by, 0);
    assert_eq!(runtime.process_info(target_pid).unwrap().monitored_by, 0);
}

// A dropped `Runtime::watch` removes its monitor, polled or not.
#[tokio::test]
async fn a_dropped_watch_removes_its_monitor() {
    let runtime = runtime();
    let (events, _inbox) = reports();
    let target = runtime.spawn(Probe::new(&events));
    for _ in 0..1_000 {
        drop(runtime.watch(target.pid()));
    }
    let mut polled = runtime.watch(target.pid());
    assert!(crate::support::poll_once(&mut polled).await.is_pending());
    assert_eq!(runtime.process_info(target.pid()).unwrap().monitored_by, 1);
    drop(polled);
    assert_eq!(runtime.process_info(target.pid()).unwrap().monitored_by, 0);
    // A watch kept to the end still resolves.
    let exited = runtime.watch(target.pid());
    runtime.kill(target.pid());
    assert_eq!(within(exited).await, ExitReason::Killed);
}
