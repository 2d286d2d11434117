//! Local names and introspection.

use shoal_process::{ExitReason, ProcessInfo, RegisterError, SpawnError, SpawnOptions};

use crate::support::{Cmd, Probe, block, reports, run, runtime, start_probe, within};

// register / whereis / unregister / registered, as in Erlang.
#[tokio::test]
async fn register_whereis_unregister() {
    let runtime = runtime();
    let (events, _inbox) = reports();
    let alpha = runtime.spawn(Probe::new(&events));
    let beta = runtime.spawn(Probe::new(&events));
    runtime.register("beta", beta.pid()).unwrap();
    runtime.register("alpha", alpha.pid()).unwrap();
    assert_eq!(runtime.whereis("alpha"), Some(alpha.pid()));
    assert_eq!(runtime.whereis("nobody"), None);
    let all = [("alpha".to_owned(), alpha.pid()), ("beta".to_owned(), beta.pid())];
    assert_eq!(runtime.registered(), all);
    assert_eq!(runtime.unregister("alpha"), Some(alpha.pid()));
    assert_eq!(runtime.unregister("alpha"), None);
    assert_eq!(runtime.whereis("alpha"), None);
    assert_eq!(runtime.registered(), [("beta".to_owned(), beta.pid())]);
    // Unregistered, the process may take a name again.
    runtime.register("alpha-again", alpha.pid()).unwrap();
    assert_eq!(runtime.process_info(alpha.pid()).unwrap().name.as_deref(), Some("alpha-again"));
}

// register refuses, changing nothing: name taken, already named, noproc, bad name length.
#[tokio::test]
async fn register_refusals() {
    let runtime = runtime();
    let (events, _inbox) = reports();
    let holder = runtime.spawn(Probe::new(&events));
    let other = runtime.spawn(Probe::new(&events));
    runtime.register("taken", holder.pid()).unwrap();
    assert_eq!(
        runtime.register("taken", other.pid()),
        Err(RegisterError::NameTaken { name: "taken".to_owned(), holder: holder.pid() })
    );
    assert_eq!(
        runtime.register("second", holder.pid()),
        Err(RegisterError::AlreadyNamed { pid: holder.pid(), name: "taken".to_owned() })
    );
    let gone = runtime.spawn(Probe::new(&events)).pid();
    runtime.kill(gone);
    within(runtime.watch(gone)).await;
    assert_eq!(runtime.register("ghost", gone), Err(RegisterError::NoProc(gone)));
    assert_eq!(runtime.register("", other.pid()), Err(RegisterError::InvalidName(String::new())));
    let long = "x".repeat(256);
    assert_eq!(runtime.register(&long, other.pid()), Err(RegisterError::InvalidName(long)));
    assert_eq!(runtime.registered(), [("taken".to_owned(), holder.pid())]);
    // 255 bytes is the longest acceptable name.
    runtime.register(&"y".repeat(255), other.pid()).unwrap();
}

// A registered name is freed when its process exits, and can then be taken by another.
#[tokio::test]
async fn a_name_is_freed_when_its_process_exits() {
    let runtime = runtime();
    let (events, _inbox) = reports();
    let first = runtime.spawn(Probe::new(&events));
    runtime.register("service", first.pid()).unwrap();
    let exited = runtime.watch(first.pid());
    run(&first, |_, ctx| ctx.stop(ExitReason::custom("done"))).await;
    within(exited).await;
    assert_eq!(runtime.whereis("service"), None);
    assert_eq!(runtime.registered(), []);
    let second = runtime.spawn(Probe::new(&events));
    runtime.register("service", second.pid()).unwrap();
    assert_eq!(runtime.whereis("service"), Some(second.pid()));
}

// SpawnOptions::name registers before the process runs; a taken or invalid name refuses it.
#[tokio::test]
async fn spawn_with_a_name() {
    let runtime = runtime();
    let (events, _inbox) = reports();
    let named =
        runtime.spawn_with(Probe::new(&events), SpawnOptions::new().name("worker")).unwrap();
    assert_eq!(runtime.whereis("worker"), Some(named.pid()));
    let clash = runtime.spawn_with(Probe::new(&events), SpawnOptions::new().name("worker"));
    assert_eq!(
        clash.unwrap_err(),
        SpawnError::NameTaken { name: "worker".to_owned(), holder: named.pid() }
    );
    let invalid = runtime.spawn_with(Probe::new(&events), SpawnOptions::new().name(""));
    assert_eq!(invalid.unwrap_err(), SpawnError::InvalidName(String::new()));
    assert_eq!(runtime.processes(), [named.pid()]);
}

// is_alive, processes() in spawn order, and process_count follow spawns and exits.
#[tokio::test]
async fn processes_are_listed_in_spawn_order() {
    let runtime = runtime();
    let (events, _inbox) = reports();
    let pids: Vec<_> = (0..40).map(|_| runtime.spawn(Probe::new(&events)).pid()).collect();
    assert_eq!(runtime.processes(), pids);
    assert_eq!(runtime.process_count(), 40);
    for &pid in pids.iter().skip(1).step_by(2) {
        runtime.kill(pid);
        within(runtime.watch(pid)).await;
        assert!(!runtime.is_alive(pid));
    }
    let survivors: Vec<_> = pids.iter().copied().step_by(2).collect();
    assert_eq!(runtime.processes(), survivors);
    assert_eq!(runtime.process_count(), 20);
    assert!(survivors.iter().all(|&pid| runtime.is_alive(pid)));
}

// mailbox_len counts letters waiting, by pid and by handle; none for the dead.
#[tokio::test]
async fn mailbox_len_counts_waiting_letters() {
    let runtime = runtime();
    let (events, _inbox) = reports();
    let probe = runtime.spawn(Probe::new(&events));
    let gate = block(&probe).await;
    for n in 0..3 {
        probe.cast(Cmd::Note(n)).await.unwrap();
    }
    assert_eq!(runtime.mailbox_len(probe.pid()), Some(3));
    assert_eq!(probe.mailbox_len(), Some(3));
    gate.open();
    run(&probe, |_, _| ()).await;
    assert_eq!(runtime.mailbox_len(probe.pid()), Some(0));
    runtime.kill(probe.pid());
    within(runtime.watch(probe.pid())).await;
    assert_eq!(runtime.mailbox_len(probe.pid()), None);
}

// process_info: links, monitors on it, trap flag and name; none for the dead.
#[tokio::test]
async fn process_info_reports_links_monitors_trap_and_name() {
    let runtime = runtime();
    let (events, _inbox) = reports();
    let subject = start_probe(&runtime, &events, true).await;
    let linked = runtime.spawn_with(Probe::new(&events), SpawnOptions::new().link(subject.pid()));
    let linked = linked.unwrap();
    let watcher = runtime.spawn(Probe::new(&events));
    let subject_pid = subject.pid();
    run(&watcher, move |_, ctx| ctx.monitor(subject_pid)).await;
    let _watch = runtime.watch(subject_pid);
    runtime.register("subject", subject_pid).unwrap();
    let _timer = subject.cast_after(std::time::Duration::from_secs(60), Cmd::Note(1));
    let info = runtime.process_info(subject_pid).unwrap();
    let expected = ProcessInfo {
        pid: subject_pid,
        name: Some("subject".to_owned()),
        mailbox_len: 0,
        links: vec![linked.pid()],
        monitored_by: 2,
        timers: 1,
        traps_exits: true,
    };
    assert_eq!(info, expected);
    runtime.kill(subject_pid);
    within(runtime.watch(linked.pid())).await;
    assert_eq!(runtime.process_info(subject_pid), None);
}
