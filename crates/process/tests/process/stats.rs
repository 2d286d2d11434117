//! `Runtime::stats`: what the node's runtime has done, for metrics. Each counter moves with
//! the event it counts, and with nothing else.

use shoal_process::{ExitReason, MailboxConfig, Runtime, RuntimeStats};

use crate::support::{Cmd, block, reports, runtime, start_probe, within};

/// Every exit is counted once, under the class of its reason: normal, shutdown, killed, panic,
/// and every other reason as an error; spawns are counted as they happen, and the processes
/// alive are those spawned and not exited.
#[tokio::test]
async fn spawns_and_exits_are_counted_by_reason_class() {
    let runtime = runtime();
    let (events, _inbox) = reports();
    let before = runtime.stats();
    assert_eq!(before.spawned_total, 0);
    assert_eq!(before.exits.total(), 0);

    let reasons = [
        ExitReason::Normal,
        ExitReason::Shutdown,
        ExitReason::Killed,
        ExitReason::Panic("boom".into()),
        ExitReason::custom("gave up"),
        ExitReason::NoConnection,
    ];
    for reason in reasons {
        let probe = start_probe(&runtime, &events, false).await;
        let exited = runtime.watch(probe.pid());
        let stop = reason.clone();
        probe.cast(Cmd::Run(Box::new(move |_, ctx| ctx.stop(stop)))).await.expect("cast");
        assert_eq!(within(exited).await, reason);
    }
    let killed = start_probe(&runtime, &events, false).await;
    let exited = runtime.watch(killed.pid());
    runtime.kill(killed.pid());
    assert_eq!(within(exited).await, ExitReason::Killed);
    let alive = start_probe(&runtime, &events, false).await;

    let stats = runtime.stats();
    assert_eq!(stats.spawned_total, 8);
    assert_eq!(stats.processes, 1);
    assert!(runtime.is_alive(alive.pid()));
    let exits = stats.exits;
    assert_eq!(
        (exits.normal, exits.shutdown, exits.killed, exits.panic, exits.error),
        (1, 1, 2, 1, 2)
    );
    assert_eq!(exits.total(), stats.spawned_total - stats.processes as u64);
}

/// Restarts are what supervisors report through `note_restart`, nothing else.
#[tokio::test]
async fn restarts_are_what_supervisors_note() {
    let runtime = runtime();
    assert_eq!(runtime.stats().restarts_total, 0);
    runtime.note_restart();
    runtime.note_restart();
    assert_eq!(runtime.stats().restarts_total, 2);
}

/// A mailbox counts as over the threshold when it holds more letters than the threshold, not
/// as many; the count falls back once the process has worked through them.
#[tokio::test]
async fn mailboxes_over_the_threshold_are_counted_when_stats_are_read() {
    let runtime = Runtime::builder()
        .node_name("stats@test")
        .mailbox(MailboxConfig { capacity: 64, ..MailboxConfig::DEFAULT })
        .mailbox_threshold(3)
        .build()
        .expect("a runtime");
    assert_eq!(runtime.stats().mailbox_threshold, 3);
    let (events, mut inbox) = reports();
    let busy = start_probe(&runtime, &events, false).await;
    let _idle = start_probe(&runtime, &events, false).await;
    let gate = block(&busy).await;
    for n in 0..3 {
        busy.cast(Cmd::Note(n)).await.expect("cast");
    }
    assert_eq!(runtime.stats().mailboxes_over_threshold, 0, "3 letters are not over 3");
    busy.cast(Cmd::Note(3)).await.expect("cast");
    assert_eq!(runtime.stats().mailboxes_over_threshold, 1);
    gate.open();
    within(inbox.take(4)).await;
    let RuntimeStats { mailboxes_over_threshold, processes, .. } = runtime.stats();
    assert_eq!((mailboxes_over_threshold, processes), (0, 2));
}
