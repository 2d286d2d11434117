//! The seam to a transport (`shoal_process::remote`), exercised with two runtimes in one tokio
//! runtime joined by an in-test loopback transport.

use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use shoal_process::remote::{
    DeliverError, Inbound, Outbound, Remote, RemoteReply, ReplySink, RouteError, Unreachable,
};
use shoal_process::{
    CallError, ExitKind, ExitReason, LinkError, MailboxConfig, NodeId, Overflow, Pid,
    RemoteFailure, Runtime, SendError, Signal, SpawnOptions,
};
use tokio::sync::mpsc;

use crate::support::{
    Ask, Calc, CalcMsg, CalcReq, Event, Probe, poll_once, reports, run, runtime, start_probe,
    within,
};

const TIMEOUT: Duration = Duration::from_secs(5);

/// One direction of the loopback: operations queue here in order and a task carries them to
/// the peer runtime, as a transport would over one connection.
struct Loopback {
    queue: mpsc::UnboundedSender<Outbound>,
}

impl Remote for Loopback {
    fn try_route(&self, outbound: Outbound) -> Result<(), RouteError> {
        self.queue.send(outbound).map_err(|closed| RouteError::NoConnection(closed.0))
    }

    fn poll_ready(&self, _: &Outbound, _: &mut Context<'_>) -> Poll<Result<(), Unreachable>> {
        Poll::Ready(Ok(()))
    }
}

/// Answers an incoming call on the calling node.
struct Answer(RemoteReply);

impl ReplySink for Answer {
    fn reply(self: Box<Self>, outcome: Result<Bytes, RemoteFailure>) {
        self.0.send(outcome);
    }
}

/// Installs on `origin` a transport to `peer`.
fn connect(origin: &Runtime, peer: &Runtime) {
    let (queue, mut queued) = mpsc::unbounded_channel();
    assert!(origin.set_remote(Arc::new(Loopback { queue })).is_ok(), "one transport per runtime");
    let (origin, peer) = (origin.clone(), peer.clone());
    tokio::spawn(async move {
        while let Some(outbound) = queued.recv().await {
            carry(&origin, &peer, outbound).await;
        }
    });
}

/// What the receiving transport does with each operation.
async fn carry(origin: &Runtime, peer: &Runtime, outbound: Outbound) {
    match outbound {
        Outbound::Cast { to, payload } => {
            // As a transport does: wait for room (holding back this connection) unless the
            // mailbox refuses; a cast to a missing process is dropped.
            let _ = peer.deliver(to, Inbound::cast(payload)).await;
        }
        Outbound::Call { to, payload, reply, .. } => {
            match peer.deliver(to, Inbound::call(payload, Box::new(Answer(reply)))).await {
                Ok(()) => {}
                Err(DeliverError::NoProc(inbound)) => inbound.refuse(RemoteFailure::NoProc),
                Err(DeliverError::Full(inbound)) => inbound.refuse(RemoteFailure::Full),
            }
        }
        Outbound::Exit { to, from, reason, kind } => peer.deliver_exit(to, from, reason, kind),
        Outbound::Down { to, monitor, pid, reason } => peer.deliver_down(to, monitor, pid, reason),
        Outbound::Monitor { target, watcher, monitor } => {
            if let Err(reason) = peer.remote_monitor(target, watcher, monitor) {
                origin.deliver_down(watcher, monitor, target, reason);
            }
        }
        Outbound::Demonitor { target, monitor, .. } => peer.remote_demonitor(target, monitor),
        Outbound::Link { to, from } => {
            if peer.remote_link(to, from).is_err() {
                origin.deliver_exit(from, to, ExitReason::NoProc, ExitKind::Link);
            }
        }
        Outbound::Unlink { to, from } => peer.remote_unlink(to, from),
        Outbound::CastNamed { name, payload, .. } => {
            if let Some(to) = peer.whereis(&name) {
                let _ = peer.deliver(to, Inbound::cast(payload)).await;
            }
        }
        Outbound::CallNamed { name, payload, reply, .. } => {
            let inbound = Inbound::call(payload, Box::new(Answer(reply)));
            match peer.whereis(&name) {
                Some(to) => match peer.deliver(to, inbound).await {
                    Ok(()) => {}
                    Err(DeliverError::NoProc(inbound)) => inbound.refuse(RemoteFailure::NoProc),
                    Err(DeliverError::Full(inbound)) => inbound.refuse(RemoteFailure::Full),
                },
                None => inbound.refuse(RemoteFailure::NoProc),
            }
        }
        other => panic!("the loopback does not carry {other:?}"),
    }
}

/// Two connected runtimes, nodes `a@test` and `b@test`.
pub(crate) fn two_nodes() -> (Runtime, Runtime) {
    let a = Runtime::builder().node_name("a@test").build().unwrap();
    let b = Runtime::builder().node_name("b@test").build().unwrap();
    connect(&a, &b);
    connect(&b, &a);
    (a, b)
}

/// Waits until everything `from` routed to `pid`'s node before now has been carried there (the
/// loopback keeps order, and a call's answer comes back only after it was delivered).
async fn flush(from: &Runtime, pid: Pid) {
    let _: Result<u64, _> = within(from.call(pid, CalcReq::Get, TIMEOUT)).await;
}

// Location transparency: cast and call by pid reach another node's process, decoded there.
#[tokio::test]
async fn casts_and_calls_cross_nodes() {
    let (a, b) = two_nodes();
    let calc = b.spawn(Calc::new(1));
    assert!(!a.is_local(calc.pid()));
    within(a.cast(calc.pid(), CalcMsg::Add(5))).await.unwrap();
    a.try_cast(calc.pid(), CalcMsg::Add(10)).unwrap();
    let total: u64 = within(a.call(calc.pid(), CalcReq::Get, TIMEOUT)).await.unwrap();
    assert_eq!(total, 16);
    // And back: a process of node a called from node b.
    let back = a.spawn(Calc::new(2));
    let total: u64 = within(b.call(back.pid(), CalcReq::Get, TIMEOUT)).await.unwrap();
    assert_eq!(total, 2);
}

// A behaviour without a codec refuses remote calls (NotRemote) and casts; it carries on.
#[tokio::test]
async fn a_behaviour_without_codec_refuses_remote_messages() {
    let (a, b) = two_nodes();
    let (events, mut inbox) = reports();
    let probe = b.spawn(Probe::new(&events));
    within(a.cast(probe.pid(), 1u64)).await.unwrap();
    let refused: Result<u64, _> = within(a.call(probe.pid(), 1u64, TIMEOUT)).await;
    assert_eq!(refused, Err(CallError::Remote(RemoteFailure::NotRemote)));
    assert_eq!(within(probe.call(Ask::Echo(1))).await, Ok(1));
    inbox.assert_empty();
}

// A remote payload that does not decode: the call gets BadRequest; the process keeps running.
#[tokio::test]
async fn a_payload_that_does_not_decode_is_refused_and_the_process_lives() {
    let (a, b) = two_nodes();
    let calc = b.spawn(Calc::new(3));
    within(a.cast(calc.pid(), "not a CalcMsg")).await.unwrap();
    let refused: Result<u64, _> = within(a.call(calc.pid(), 12.5f64, TIMEOUT)).await;
    match refused {
        Err(CallError::Remote(RemoteFailure::BadRequest(_))) => {}
        other => panic!("expected BadRequest, got {other:?}"),
    }
    let total: u64 = within(a.call(calc.pid(), CalcReq::Get, TIMEOUT)).await.unwrap();
    assert_eq!(total, 3);
    assert!(b.is_alive(calc.pid()));
}

// A call to a process of another node that is not alive is NoProc.
#[tokio::test]
async fn a_remote_call_to_a_dead_process_is_no_proc() {
    let (a, b) = two_nodes();
    let calc = b.spawn(Calc::new(0));
    b.kill(calc.pid());
    within(b.watch(calc.pid())).await;
    let outcome: Result<u64, _> = within(a.call(calc.pid(), CalcReq::Get, TIMEOUT)).await;
    assert_eq!(outcome, Err(CallError::NoProc));
}

// A remote call still queued when the process exits is refused with Exited(reason).
#[tokio::test]
async fn a_remote_call_queued_when_the_process_exits_gets_the_exit_reason() {
    let (a, b) = two_nodes();
    let (calc, parked, release) = Calc::parkable();
    let calc = b.spawn(calc);
    let pid = calc.pid();
    calc.cast(CalcMsg::Park).await.unwrap();
    within(parked).await.unwrap();
    within(a.cast(pid, CalcMsg::Stop(ExitReason::custom("closing")))).await.unwrap();
    let mut call = pin!(a.call::<_, u64>(pid, CalcReq::Get, TIMEOUT));
    assert!(poll_once(&mut call).await.is_pending());
    // Both have crossed once the parked process's mailbox holds them.
    within(async {
        while b.mailbox_len(pid) != Some(2) {
            tokio::task::yield_now().await;
        }
    })
    .await;
    release.send(()).unwrap();
    assert_eq!(within(call).await, Err(CallError::Exited(ExitReason::custom("closing"))));
}

// A remote monitor's Down crosses back with the exit reason (noproc if not alive).
#[tokio::test]
async fn a_remote_monitor_fires_down_with_the_reason() {
    let (a, b) = two_nodes();
    let (events, mut inbox) = reports();
    let watcher = a.spawn(Probe::new(&events));
    let calc = b.spawn(Calc::new(0));
    let target = calc.pid();
    let monitor = run(&watcher, move |_, ctx| ctx.monitor(target)).await;
    flush(&a, target).await;
    assert_eq!(b.process_info(target).unwrap().monitored_by, 1);
    within(a.cast(target, CalcMsg::Stop(ExitReason::custom("remote bye")))).await.unwrap();
    let down = Signal::Down { monitor, pid: target, reason: ExitReason::custom("remote bye") };
    assert_eq!(inbox.next().await, Event::Signal(watcher.pid(), down));

    let monitor = run(&watcher, move |_, ctx| ctx.monitor(target)).await;
    let down = Signal::Down { monitor, pid: target, reason: ExitReason::NoProc };
    assert_eq!(inbox.next().await, Event::Signal(watcher.pid(), down));
}

// A remote demonitor removes the monitor on the other node.
#[tokio::test]
async fn a_remote_demonitor_removes_the_monitor_there() {
    let (a, b) = two_nodes();
    let (events, mut inbox) = reports();
    let watcher = a.spawn(Probe::new(&events));
    let calc = b.spawn(Calc::new(0));
    let target = calc.pid();
    let monitor = run(&watcher, move |_, ctx| ctx.monitor(target)).await;
    assert!(run(&watcher, move |_, ctx| ctx.demonitor(monitor)).await);
    flush(&a, target).await;
    assert_eq!(b.process_info(target).unwrap().monitored_by, 0);
    b.kill(target);
    within(b.watch(target)).await;
    assert_eq!(within(watcher.call(Ask::Echo(0))).await, Ok(0));
    inbox.assert_empty();
}

// Remote links carry abnormal exits both ways; unlink removes both ends; a dead peer is noproc.
#[tokio::test]
async fn a_remote_link_propagates_an_exit() {
    let (a, b) = two_nodes();
    let (events, _inbox) = reports();

    // b's process exits: a's linked process exits with the same reason.
    let local = a.spawn(Probe::new(&events));
    let calc = b.spawn(Calc::new(0));
    let remote_pid = calc.pid();
    assert_eq!(run(&local, move |_, ctx| ctx.link(remote_pid)).await, Ok(()));
    flush(&a, remote_pid).await;
    assert_eq!(b.process_info(remote_pid).unwrap().links, [local.pid()]);
    let exited = a.watch(local.pid());
    within(a.cast(remote_pid, CalcMsg::Stop(ExitReason::custom("remote crash")))).await.unwrap();
    assert_eq!(within(exited).await, ExitReason::custom("remote crash"));

    // a's process exits: b's linked process exits with the same reason.
    let local = a.spawn(Probe::new(&events));
    let calc = b.spawn(Calc::new(0));
    let remote_pid = calc.pid();
    run(&local, move |_, ctx| ctx.link(remote_pid)).await.unwrap();
    flush(&a, remote_pid).await;
    let exited = b.watch(remote_pid);
    a.exit(local.pid(), ExitReason::custom("local crash"));
    assert_eq!(within(exited).await, ExitReason::custom("local crash"));

    // Unlinked, nothing crosses.
    let local = a.spawn(Probe::new(&events));
    let calc = b.spawn(Calc::new(0));
    let remote_pid = calc.pid();
    run(&local, move |_, ctx| ctx.link(remote_pid)).await.unwrap();
    run(&local, move |_, ctx| ctx.unlink(remote_pid)).await;
    flush(&a, remote_pid).await;
    assert_eq!(b.process_info(remote_pid).unwrap().links, []);
    b.exit(remote_pid, ExitReason::custom("alone"));
    within(b.watch(remote_pid)).await;
    // Anything b sent to a before this call's answer has arrived.
    let answer: Result<u64, _> = within(b.call(local.pid(), 0u64, TIMEOUT)).await;
    assert_eq!(answer, Err(CallError::Remote(RemoteFailure::NotRemote)));
    assert_eq!(within(local.call(Ask::Echo(1))).await, Ok(1));

    // A link to a process of the other node that is not alive ends in a noproc exit signal
    // (here trapped), sent back by the other node.
    let (trap_events, mut trap_inbox) = reports();
    let trapper = start_probe(&a, &trap_events, true).await;
    assert_eq!(run(&trapper, move |_, ctx| ctx.link(remote_pid)).await, Ok(()));
    let exit = Signal::Exit { from: remote_pid, reason: ExitReason::NoProc };
    assert_eq!(trap_inbox.next().await, Event::Signal(trapper.pid(), exit));
    assert_eq!(a.process_info(trapper.pid()).unwrap().links, []);
}

// Without a transport: cast/call NoConnection, link refused, monitor fires Down noconnection.
#[tokio::test]
async fn without_a_transport_remote_operations_fail_with_no_connection() {
    let runtime = runtime();
    let (events, mut inbox) = reports();
    let elsewhere = Pid::from_parts(NodeId::from_name("elsewhere@test"), 1, 1);
    match within(runtime.cast(elsewhere, 1u64)).await {
        Err(SendError::NoConnection(1)) => {}
        other => panic!("expected NoConnection, got {other:?}"),
    }
    assert!(matches!(runtime.try_cast(elsewhere, 2u64), Err(SendError::NoConnection(2))));
    let called: Result<u64, _> = within(runtime.call(elsewhere, 3u64, TIMEOUT)).await;
    assert_eq!(called, Err(CallError::NoConnection));
    let probe = runtime.spawn(Probe::new(&events));
    let linked = run(&probe, move |_, ctx| ctx.link(elsewhere)).await;
    assert_eq!(linked, Err(LinkError::NoConnection(elsewhere)));
    assert_eq!(runtime.process_info(probe.pid()).unwrap().links, []);
    let monitor = run(&probe, move |_, ctx| ctx.monitor(elsewhere)).await;
    let down = Signal::Down { monitor, pid: elsewhere, reason: ExitReason::NoConnection };
    assert_eq!(inbox.next().await, Event::Signal(probe.pid(), down));
}

// A pid of an earlier incarnation of this node names no process: not alive, NoProc.
#[tokio::test]
async fn a_pid_of_an_earlier_incarnation_is_dead() {
    let earlier = Runtime::builder().node_name("a@test").build().unwrap();
    let old = earlier.spawn(Calc::new(0)).pid();
    let later = Runtime::builder().node_name("a@test").build().unwrap();
    assert_eq!(later.node(), earlier.node());
    assert_ne!(later.incarnation(), earlier.incarnation());
    // The same local id exists in the new run, but it is another process.
    let new = later.spawn(Calc::new(0)).pid();
    assert_eq!(new.local_id(), old.local_id());
    assert_ne!(new, old);
    assert!(!later.is_local(old));
    assert!(!later.is_alive(old));
    match within(later.cast(old, CalcMsg::Add(1))).await {
        Err(SendError::NoProc(CalcMsg::Add(1))) => {}
        other => panic!("expected NoProc, got {other:?}"),
    }
    assert!(matches!(later.try_cast(old, CalcMsg::Add(1)), Err(SendError::NoProc(_))));
    let called: Result<u64, _> = within(later.call(old, CalcReq::Get, TIMEOUT)).await;
    assert_eq!(called, Err(CallError::NoProc));
    assert_eq!(within(later.watch(old)).await, ExitReason::NoProc);
    let (events, mut inbox) = reports();
    let probe = later.spawn(Probe::new(&events));
    let monitor = run(&probe, move |_, ctx| ctx.monitor(old)).await;
    let down = Signal::Down { monitor, pid: old, reason: ExitReason::NoProc };
    assert_eq!(inbox.next().await, Event::Signal(probe.pid(), down));
}

// Monitors die with their watcher on other nodes too: a watcher that exits sends a demonitor
// for each monitor it held there, so the target holds none of them.
#[tokio::test]
async fn a_watcher_that_exits_removes_its_monitors_on_other_nodes() {
    let (a, b) = two_nodes();
    let (events, _inbox) = reports();
    let calc = b.spawn(Calc::new(0));
    let target = calc.pid();
    for stop in [ExitReason::Normal, ExitReason::Killed] {
        let watcher = a.spawn(Probe::new(&events));
        run(&watcher, move |_, ctx| ctx.monitor(target)).await;
        run(&watcher, move |_, ctx| ctx.monitor(target)).await;
        flush(&a, target).await;
        assert_eq!(b.process_info(target).unwrap().monitored_by, 2);
        let exited = a.watch(watcher.pid());
        if stop == ExitReason::Killed {
            a.kill(watcher.pid());
        } else {
            run(&watcher, move |_, ctx| ctx.stop(stop)).await;
        }
        within(exited).await;
        flush(&a, target).await;
        assert_eq!(b.process_info(target).unwrap().monitored_by, 0);
    }
}

// Nothing is dropped silently: a cast from another node refused by a full mailbox whose policy
// is Reject is counted (and logged) on the receiving node; one that waits is never refused.
#[tokio::test]
async fn a_remote_cast_refused_by_a_full_reject_mailbox_is_counted() {
    let (a, b) = two_nodes();
    let (calc, parked, release) = Calc::parkable();
    let reject = MailboxConfig { capacity: 1, overflow: Overflow::Reject };
    let calc = b.spawn_with(calc, SpawnOptions::new().mailbox(reject)).unwrap();
    calc.cast(CalcMsg::Park).await.unwrap();
    within(parked).await.unwrap();
    within(a.cast(calc.pid(), CalcMsg::Add(1))).await.unwrap();
    within(a.cast(calc.pid(), CalcMsg::Add(2))).await.unwrap();
    within(a.cast(calc.pid(), CalcMsg::Add(4))).await.unwrap();
    // The call is refused too (its caller is told), after the casts: they have been carried.
    let refused: Result<u64, _> = within(a.call(calc.pid(), CalcReq::Get, TIMEOUT)).await;
    assert_eq!(refused, Err(CallError::Full));
    assert_eq!(b.refused_remote_casts(), 2);
    release.send(()).unwrap();
    within(std::future::poll_fn(|cx| b.poll_room(calc.pid(), cx))).await;
    assert_eq!(within(calc.call(CalcReq::Get)).await, Ok(1));
    assert_eq!(a.refused_remote_casts(), 0);
}

// `kill` is its own signal kind across nodes too: a kill from another node ends a trapping
// process without `terminate`; an exit with the reason `Killed` from there is trapped.
#[tokio::test]
async fn a_kill_from_another_node_is_a_kill_and_an_exit_killed_is_trapped() {
    let (a, b) = two_nodes();
    let (events, mut inbox) = reports();
    let trapper = start_probe(&b, &events, true).await;
    let sender = a.spawn(Probe::new(&events));
    let target = trapper.pid();
    run(&sender, move |_, ctx| ctx.exit(target, ExitReason::Killed)).await;
    let exit = Signal::Exit { from: sender.pid(), reason: ExitReason::Killed };
    assert_eq!(inbox.next().await, Event::Signal(trapper.pid(), exit));
    let exited = b.watch(target);
    run(&sender, move |_, ctx| ctx.kill(target)).await;
    assert_eq!(within(exited).await, ExitReason::Killed);
    assert_eq!(within(sender.call(crate::support::Ask::Echo(1))).await, Ok(1));
    inbox.assert_empty();
}

// A caller on another node whose call handler panicked gets the panic (Exited), not NoReply:
// the reply handle dropped while the handler unwound is answered once the panic is recorded.
#[tokio::test]
async fn a_remote_caller_whose_handler_panics_gets_the_panic() {
    let (a, b) = two_nodes();
    let calc = b.spawn(Calc::new(0));
    let outcome: Result<u64, _> = within(a.call(calc.pid(), CalcReq::Panic, TIMEOUT)).await;
    assert_eq!(outcome, Err(CallError::Exited(ExitReason::Panic("calc failed".to_owned()))));
}
