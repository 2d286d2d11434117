//! Destinations: a typed handle that works on a process of another node as on a local one,
//! names (here and on another node) wherever a pid goes, typed targets, and via-names resolved
//! by a layer above (a test directory standing in for the registry).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_process::{
    Addr, CallError, Dest, ExitReason, LinkError, Pid, Ref, Resolve, ResolveError, Resolving,
    SendError, Signal, SpawnOptions, Target, Via,
};

use crate::remote::two_nodes;
use crate::support::{
    Calc, CalcMsg, CalcReq, Event, Inbox, Probe, reports, run, start_probe, within,
};

const TIMEOUT: Duration = Duration::from_secs(5);

/// A typed handle to a process of another node casts and calls it as a local one does, with
/// the behaviour's types; what only a local process can tell (its mailbox) it does not claim.
#[tokio::test]
async fn a_typed_handle_reaches_a_process_on_another_node() {
    let (a, b) = two_nodes();
    let calc = b.spawn(Calc::new(1));
    let remote: Addr<Calc> = a.addr(calc.pid()).expect("Calc takes messages from other nodes");
    assert!(!remote.is_local() && calc.is_local());
    assert_eq!(remote.pid(), calc.pid());
    within(remote.cast(CalcMsg::Add(4))).await.unwrap();
    remote.try_cast(CalcMsg::Add(1)).unwrap();
    assert_eq!(within(remote.call(CalcReq::Get)).await, Ok(6));
    assert_eq!(remote.mailbox_len(), None);
    assert!(remote.is_alive(), "its node is connected");
    within(remote.cast(CalcMsg::Stop(ExitReason::Normal))).await.unwrap();
    within(b.watch(calc.pid())).await;
    assert_eq!(within(remote.call(CalcReq::Get)).await, Err(CallError::NoProc));
}

/// No typed handle is made to a process of another node whose behaviour takes nothing from
/// other nodes; a local one is made only for the behaviour it runs.
#[tokio::test]
async fn a_typed_handle_needs_the_behaviour_to_match_or_to_take_remote_messages() {
    let (a, b) = two_nodes();
    let (events, _inbox) = reports();
    let probe = start_probe(&b, &events, false).await;
    assert!(a.addr::<crate::support::Probe>(probe.pid()).is_none(), "Probe stays local");
    assert!(b.addr::<Calc>(probe.pid()).is_none(), "a probe is not a calc");
    assert!(b.addr::<crate::support::Probe>(probe.pid()).is_some());
}

/// A timer on a handle to another node's process delivers there after its delay, unless it
/// is cancelled first.
#[tokio::test(start_paused = true)]
async fn a_timer_on_a_remote_handle_delivers_unless_cancelled() {
    let (a, b) = two_nodes();
    let calc = b.spawn(Calc::new(0));
    let remote: Addr<Calc> = a.addr(calc.pid()).unwrap();
    let _fires = remote.cast_after(Duration::from_millis(50), CalcMsg::Add(3));
    let cancelled = remote.cast_after(Duration::from_millis(50), CalcMsg::Add(100));
    assert!(cancelled.cancel());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(within(remote.call(CalcReq::Get)).await, Ok(3));
}

/// A name is a destination: on this node (`&str`), and on another (`Dest::name_on`), for casts
/// and calls alike; a name that no process has is `NoProc`.
#[tokio::test]
async fn names_here_and_on_another_node_are_destinations() {
    let (a, b) = two_nodes();
    let options = SpawnOptions::new().name("calc");
    let calc = b.spawn_with(Calc::new(1), options).unwrap();
    let there = Dest::name_on("b@test", "calc");
    within(a.cast(there.clone(), CalcMsg::Add(2))).await.unwrap();
    a.try_cast(there.clone(), CalcMsg::Add(3)).unwrap();
    assert_eq!(within(a.call::<_, u64>(there, CalcReq::Get, TIMEOUT)).await, Ok(6));
    assert_eq!(within(b.call::<_, u64>("calc", CalcReq::Get, TIMEOUT)).await, Ok(6));
    assert_eq!(within(b.call::<_, u64>(&calc, CalcReq::Get, TIMEOUT)).await, Ok(6));

    let nobody = within(b.cast("nobody", CalcMsg::Add(1))).await;
    assert!(matches!(nobody, Err(SendError::NoProc(CalcMsg::Add(1)))), "{nobody:?}");
    let nobody: Result<u64, _> = within(b.call("nobody", CalcReq::Get, TIMEOUT)).await;
    assert_eq!(nobody, Err(CallError::NoProc));
    let far = Dest::name_on("b@test", "nobody");
    let nobody: Result<u64, _> = within(a.call(far, CalcReq::Get, TIMEOUT)).await;
    assert_eq!(nobody, Err(CallError::NoProc));
}

/// A typed target resolves its name at each operation: it follows the name to the process
/// registered under it now, here or on another node.
#[tokio::test]
async fn a_typed_target_follows_its_name() {
    let (a, b) = two_nodes();
    let first = b.spawn_with(Calc::new(1), SpawnOptions::new().name("calc")).unwrap();
    let target: Target<Calc> = a.target(Dest::name_on("b@test", "calc"));
    within(target.cast(CalcMsg::Add(1))).await.unwrap();
    assert_eq!(within(target.call(CalcReq::Get)).await, Ok(2));

    within(first.cast(CalcMsg::Stop(ExitReason::Normal))).await.unwrap();
    within(b.watch(first.pid())).await;
    assert_eq!(within(target.call(CalcReq::Get)).await, Err(CallError::NoProc));
    b.spawn_with(Calc::new(100), SpawnOptions::new().name("calc")).unwrap();
    assert_eq!(within(target.call(CalcReq::Get)).await, Ok(100));

    // A name on another node resolves there, at each operation; one here resolves here.
    assert!(matches!(target.resolve().await, Err(ResolveError::Remote(_))));
    let here: Target<Calc> = b.target("calc");
    let addr = within(here.resolve()).await.expect("registered here");
    assert_eq!(within(addr.call(CalcReq::Get)).await, Ok(100));
}

/// A directory standing in for a layer above: it names one process, caches what it resolved
/// (until told that process is gone), and counts its resolutions.
#[derive(Default)]
struct Directory {
    current: Mutex<Option<Pid>>,
    cached: Mutex<Option<Pid>>,
    resolutions: AtomicUsize,
}

impl Directory {
    fn point_to(&self, pid: Pid) {
        *self.current.lock().unwrap() = Some(pid);
    }
}

struct ByDirectory(Arc<Directory>);

impl Resolve for ByDirectory {
    fn describe(&self) -> String {
        "directory \"calc\"".into()
    }

    fn cached(&self) -> Option<Pid> {
        *self.0.cached.lock().unwrap()
    }

    fn resolve(&self) -> Resolving<'_> {
        Box::pin(async move {
            self.0.resolutions.fetch_add(1, Ordering::Relaxed);
            let mut cached = self.0.cached.lock().unwrap();
            if cached.is_none() {
                *cached = *self.0.current.lock().unwrap();
            }
            cached.ok_or_else(|| ResolveError::NoProc(self.describe()))
        })
    }

    fn forget(&self, pid: Pid) {
        let mut cached = self.0.cached.lock().unwrap();
        if *cached == Some(pid) {
            *cached = None;
        }
    }
}

/// A via-name is resolved by its layer: a waiting cast resolves it, a cast that does not wait
/// uses the layer's cache; a process found gone is forgotten and the name resolved once more,
/// so the cast reaches the process the layer names now.
#[tokio::test]
async fn a_via_name_is_resolved_by_its_layer_and_again_when_its_process_is_gone() {
    let (a, _b) = two_nodes();
    let directory = Arc::new(Directory::default());
    let via = Dest::Via(Via::new(ByDirectory(directory.clone())));
    assert_eq!(via.to_string(), "directory \"calc\"");

    let unresolved = a.try_cast(via.clone(), CalcMsg::Add(1));
    assert!(matches!(unresolved, Err(SendError::Unresolved(..))), "{unresolved:?}");
    let nothing: Result<u64, _> = within(a.call(via.clone(), CalcReq::Get, TIMEOUT)).await;
    assert_eq!(nothing, Err(CallError::NoProc));

    let first = a.spawn(Calc::new(1));
    directory.point_to(first.pid());
    within(a.cast(via.clone(), CalcMsg::Add(1))).await.unwrap();
    a.try_cast(via.clone(), CalcMsg::Add(1)).expect("cached by the cast before");
    assert_eq!(within(a.call::<_, u64>(via.clone(), CalcReq::Get, TIMEOUT)).await, Ok(3));

    within(first.cast(CalcMsg::Stop(ExitReason::Normal))).await.unwrap();
    within(a.watch(first.pid())).await;
    let second = a.spawn(Calc::new(10));
    directory.point_to(second.pid());
    let before = directory.resolutions.load(Ordering::Relaxed);
    within(a.cast(via.clone(), CalcMsg::Add(5))).await.expect("resolved once more");
    assert_eq!(directory.resolutions.load(Ordering::Relaxed), before + 2);
    assert_eq!(within(second.call(CalcReq::Get)).await, Ok(15));

    let typed: Target<Calc> = via.typed(&a);
    assert_eq!(within(typed.call(CalcReq::Get)).await, Ok(15));
}

/// A process monitors and links by name: the monitor follows the process the name stood for
/// then; an unregistered name is `noproc` at once; a name on another node cannot be linked to.
#[tokio::test]
async fn monitors_and_links_take_names() {
    let (a, _b) = two_nodes();
    let (events, mut inbox) = reports();
    let probe = start_probe(&a, &events, true).await;
    let calc = a.spawn_with(Calc::new(0), SpawnOptions::new().name("calc")).unwrap();

    let monitor = run(&probe, |_, ctx| ctx.monitor("calc")).await;
    let missing = run(&probe, |_, ctx| ctx.monitor("nobody")).await;
    let placeholder = Pid::name_placeholder(a.node());
    let down = inbox.next().await;
    let expected = Signal::Down { monitor: missing, pid: placeholder, reason: ExitReason::NoProc };
    assert_eq!(down, Event::Signal(probe.pid(), expected));

    run(&probe, |_, ctx| ctx.link("calc")).await.expect("linked by name");
    let far = run(&probe, |_, ctx| ctx.link(Dest::name_on("b@test", "calc"))).await;
    assert!(matches!(far, Err(LinkError::Unresolved(_))), "{far:?}");

    stop_and_expect_down_and_exit(&calc, &probe, &mut inbox, monitor).await;
}

/// A process monitors and links through a via-name: through the pid its layer has cached
/// (the `Down` and the exit signal name that process); with nothing cached, the monitor is
/// `noproc` at once and the link is refused as unresolved, until the name is resolved.
#[tokio::test]
async fn monitors_and_links_take_via_names() {
    let (a, _b) = two_nodes();
    let (events, mut inbox) = reports();
    let probe = start_probe(&a, &events, true).await;
    let directory = Arc::new(Directory::default());
    let via = Dest::Via(Via::new(ByDirectory(directory.clone())));

    let unresolved = run(&probe, {
        let via = via.clone();
        move |_, ctx| ctx.monitor(via)
    })
    .await;
    let placeholder = Pid::name_placeholder(a.node());
    let down = Signal::Down { monitor: unresolved, pid: placeholder, reason: ExitReason::NoProc };
    assert_eq!(inbox.next().await, Event::Signal(probe.pid(), down));
    let refused = run(&probe, {
        let via = via.clone();
        move |_, ctx| ctx.link(via)
    })
    .await;
    assert!(matches!(refused, Err(LinkError::Unresolved(_))), "{refused:?}");

    let calc = a.spawn(Calc::new(0));
    directory.point_to(calc.pid());
    assert_eq!(within(via.resolve(&a)).await, Ok(calc.pid()));
    let monitor = run(&probe, {
        let via = via.clone();
        move |_, ctx| ctx.monitor(via)
    })
    .await;
    run(&probe, move |_, ctx| ctx.link(via)).await.expect("linked through the cache");

    stop_and_expect_down_and_exit(&calc, &probe, &mut inbox, monitor).await;
}

/// Stops `calc`, and expects `probe` (monitoring it with `monitor`, linked to it, trapping
/// exits) to get both the `Down` and the exit signal, in either order.
async fn stop_and_expect_down_and_exit(
    calc: &Addr<Calc>,
    probe: &Addr<Probe>,
    inbox: &mut Inbox,
    monitor: Ref,
) {
    let reason = ExitReason::custom("done");
    within(calc.cast(CalcMsg::Stop(reason.clone()))).await.unwrap();
    let mut seen = vec![inbox.next().await, inbox.next().await];
    seen.sort_by_key(|event| format!("{event:?}"));
    let down = Signal::Down { monitor, pid: calc.pid(), reason: reason.clone() };
    let exit = Signal::Exit { from: calc.pid(), reason };
    assert!(seen.contains(&Event::Signal(probe.pid(), down)), "{seen:?}");
    assert!(seen.contains(&Event::Signal(probe.pid(), exit)), "{seen:?}");
}
