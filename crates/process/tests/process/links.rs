//! Links and trapped exits.

use shoal_process::{ExitReason, LinkError, Signal, SpawnError, SpawnOptions};

use crate::support::{Ask, Cmd, Event, Probe, reports, run, runtime, start_probe, within};

/// Spawns a probe linked to `parent`.
fn spawn_linked(
    runtime: &shoal_process::Runtime,
    events: &crate::support::Events,
    parent: shoal_process::Pid,
) -> shoal_process::Addr<Probe> {
    runtime.spawn_with(Probe::new(events), SpawnOptions::new().link(parent)).expect("linked")
}

// Links: an abnormal exit propagates along a chain of non-trapping processes, same reason.
#[tokio::test]
async fn an_abnormal_exit_propagates_along_a_chain_of_links() {
    let runtime = runtime();
    let (events, _inbox) = reports();
    let first = runtime.spawn(Probe::new(&events));
    let second = spawn_linked(&runtime, &events, first.pid());
    let third = spawn_linked(&runtime, &events, second.pid());
    let watches = [&first, &second, &third].map(|probe| runtime.watch(probe.pid()));
    first.cast(Cmd::Run(Box::new(|_, _| panic!("crash")))).await.unwrap();
    for exited in watches {
        assert_eq!(within(exited).await, ExitReason::Panic("crash".to_owned()));
    }
    assert_eq!(runtime.process_count(), 0);
}

// Links: a normal exit does not kill a linked non-trapping process; the link is removed.
#[tokio::test]
async fn a_normal_exit_does_not_kill_a_linked_process_that_does_not_trap() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let first = runtime.spawn(Probe::new(&events));
    let second = spawn_linked(&runtime, &events, first.pid());
    let exited = runtime.watch(first.pid());
    run(&first, |_, ctx| ctx.stop(ExitReason::Normal)).await;
    assert_eq!(within(exited).await, ExitReason::Normal);
    assert_eq!(inbox.next().await, Event::Terminated(first.pid(), ExitReason::Normal));
    assert_eq!(within(second.call(Ask::Echo(1))).await, Ok(1));
    assert_eq!(runtime.process_info(second.pid()).unwrap().links, []);
    inbox.assert_empty();
}

// trap_exit: exit signals (normal ones too) arrive as Signal::Exit{from, reason} messages.
#[tokio::test]
async fn a_trapping_process_gets_exit_signals_as_messages() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let trapper = start_probe(&runtime, &events, true).await;
    for reason in [ExitReason::custom("crash"), ExitReason::Normal, ExitReason::Killed] {
        let linked = spawn_linked(&runtime, &events, trapper.pid());
        let stop_reason = reason.clone();
        run(&linked, move |_, ctx| ctx.stop(stop_reason)).await;
        // Stopping with the reason `Killed` is no kill: `terminate` runs.
        let terminated = Event::Terminated(linked.pid(), reason.clone());
        assert_eq!(inbox.next().await, terminated);
        let exit = Signal::Exit { from: linked.pid(), reason };
        assert_eq!(inbox.next().await, Event::Signal(trapper.pid(), exit));
    }
    // An exit signal sent directly is trapped too; it comes from the runtime's pid.
    runtime.exit(trapper.pid(), ExitReason::Shutdown);
    let exit = Signal::Exit { from: runtime.system_pid(), reason: ExitReason::Shutdown };
    assert_eq!(inbox.next().await, Event::Signal(trapper.pid(), exit));
    assert_eq!(within(trapper.call(Ask::Echo(1))).await, Ok(1));
}

// exit(Pid, kill) is untrappable: even a trapping process exits Killed, without terminate,
// whether the kill comes from the runtime or from a process.
#[tokio::test]
async fn kill_ends_a_trapping_process_without_terminate() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let trapper = start_probe(&runtime, &events, true).await;
    let exited = runtime.watch(trapper.pid());
    runtime.kill(trapper.pid());
    assert_eq!(within(exited).await, ExitReason::Killed);

    let trapper = start_probe(&runtime, &events, true).await;
    let exited = runtime.watch(trapper.pid());
    let (killer_events, _killer_inbox) = reports();
    let killer = runtime.spawn(Probe::new(&killer_events));
    let target = trapper.pid();
    run(&killer, move |_, ctx| ctx.kill(target)).await;
    assert_eq!(within(exited).await, ExitReason::Killed);
    // Both trappers are gone and neither reported a terminate.
    drop(events);
    inbox.closed().await;
}

// A process killed through a link exits Killed, and that signal is trappable by its links.
// Only the killed process skips `terminate`: one that follows it through a link with the
// reason `Killed` was not killed, so it runs `terminate`.
#[tokio::test]
async fn killed_through_a_link_propagates_as_killed_and_is_trappable() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let trapper = start_probe(&runtime, &events, true).await;
    let middle = spawn_linked(&runtime, &events, trapper.pid());
    let doomed = spawn_linked(&runtime, &events, middle.pid());
    let exited = runtime.watch(middle.pid());
    runtime.kill(doomed.pid());
    assert_eq!(within(exited).await, ExitReason::Killed);
    assert_eq!(inbox.next().await, Event::Terminated(middle.pid(), ExitReason::Killed));
    let exit = Signal::Exit { from: middle.pid(), reason: ExitReason::Killed };
    assert_eq!(inbox.next().await, Event::Signal(trapper.pid(), exit));
    assert_eq!(within(trapper.call(Ask::Echo(1))).await, Ok(1));
    assert_eq!(runtime.processes(), [trapper.pid()]);
}

// unlink removes the link at both ends: no exit signal crosses it afterwards.
#[tokio::test]
async fn unlink_stops_propagation() {
    let runtime = runtime();
    let (events, _inbox) = reports();
    let survivor = runtime.spawn(Probe::new(&events));
    let crasher = spawn_linked(&runtime, &events, survivor.pid());
    let crasher_pid = crasher.pid();
    run(&survivor, move |_, ctx| ctx.unlink(crasher_pid)).await;
    assert_eq!(runtime.process_info(survivor.pid()).unwrap().links, []);
    assert_eq!(runtime.process_info(crasher_pid).unwrap().links, []);
    let exited = runtime.watch(crasher_pid);
    runtime.exit(crasher_pid, ExitReason::custom("crash"));
    assert_eq!(within(exited).await, ExitReason::custom("crash"));
    assert_eq!(within(survivor.call(Ask::Echo(1))).await, Ok(1));
}

// link to a process that is not alive is LinkError::NoProc, leaving no half link.
#[tokio::test]
async fn linking_to_a_dead_process_is_no_proc() {
    let runtime = runtime();
    let (events, _inbox) = reports();
    let probe = runtime.spawn(Probe::new(&events));
    let gone = runtime.spawn(Probe::new(&events)).pid();
    runtime.kill(gone);
    within(runtime.watch(gone)).await;
    let linked = run(&probe, move |_, ctx| ctx.link(gone)).await;
    assert_eq!(linked, Err(LinkError::NoProc(gone)));
    assert_eq!(runtime.process_info(probe.pid()).unwrap().links, []);
}

// spawn_link with a dead parent is SpawnError::LinkNoProc: no process, no name left.
#[tokio::test]
async fn spawn_link_to_a_dead_parent_fails() {
    let runtime = runtime();
    let (events, _inbox) = reports();
    let gone = runtime.spawn(Probe::new(&events)).pid();
    runtime.kill(gone);
    within(runtime.watch(gone)).await;
    let options = SpawnOptions::new().link(gone).name("orphan");
    let spawned = runtime.spawn_with(Probe::new(&events), options);
    assert_eq!(spawned.unwrap_err(), SpawnError::LinkNoProc(gone));
    assert_eq!(runtime.process_count(), 0);
    assert_eq!(runtime.whereis("orphan"), None);
}

// Context::spawn_link links both ways and sets the child's parent.
#[tokio::test]
async fn spawn_link_from_a_process_links_both_ways() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let parent = start_probe(&runtime, &events, true).await;
    let child_events = events.clone();
    let child =
        run(&parent, move |_, ctx| ctx.spawn_link(Probe::new(&child_events)).unwrap()).await;
    let parent_pid = run(&child, |_, ctx| ctx.parent()).await;
    assert_eq!(parent_pid, Some(parent.pid()));
    assert_eq!(runtime.process_info(parent.pid()).unwrap().links, [child.pid()]);
    assert_eq!(runtime.process_info(child.pid()).unwrap().links, [parent.pid()]);
    runtime.kill(child.pid());
    let exit = Signal::Exit { from: child.pid(), reason: ExitReason::Killed };
    assert_eq!(inbox.next().await, Event::Signal(parent.pid(), exit));
}

// gen_server: a trapping process still exits when its parent does, with the parent's reason.
#[tokio::test]
async fn a_trapping_process_follows_its_parent() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    for reason in [ExitReason::Normal, ExitReason::custom("crash"), ExitReason::Killed] {
        let parent = runtime.spawn(Probe::new(&events));
        let options = SpawnOptions::new().link(parent.pid());
        let child = within(runtime.start_with(Probe::trapping(&events), options)).await.unwrap();
        let grandchild = spawn_linked(&runtime, &events, child.pid());
        let exited = runtime.watch(child.pid());
        let stop_reason = reason.clone();
        run(&parent, move |_, ctx| ctx.stop(stop_reason)).await;
        assert_eq!(within(exited).await, reason);
        // The reason `Killed` is no kill: every `terminate` runs.
        let mut expected = vec![
            Event::Terminated(parent.pid(), reason.clone()),
            Event::Terminated(child.pid(), reason.clone()),
        ];
        if reason != ExitReason::Normal {
            // The grandchild does not trap: it follows the abnormal exit.
            expected.push(Event::Terminated(grandchild.pid(), reason.clone()));
        }
        assert_eq!(inbox.take(expected.len()).await, expected);
        if reason == ExitReason::Normal {
            assert_eq!(within(grandchild.call(Ask::Echo(1))).await, Ok(1));
            runtime.kill(grandchild.pid());
        }
        within(runtime.watch(grandchild.pid())).await;
    }
    inbox.assert_empty();
}
