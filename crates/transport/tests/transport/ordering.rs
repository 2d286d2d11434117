//! Message order across nodes: per sender-receiver pair under load on a channel with parallel
//! connections, and monotonic channels where a newer update supersedes a queued older one.

use std::time::Duration;

use shoal_process::Pid;
use shoal_transport::{ChannelConfig, DEFAULT_CHANNEL, RemoteError};

use super::support::{
    CALL, Numbered, SequenceReport, Sequencer, SlowRecorder, builder, cluster_of, eventually,
    shutdown, within,
};

const SENDERS: u32 = 4;
const RECEIVERS: usize = 8;
/// Messages each sender casts, spread round-robin over the receivers.
const PER_SENDER: u64 = 20_000;
const PER_PAIR: u64 = PER_SENDER / RECEIVERS as u64;

/// Erlang's one ordering guarantee, kept with parallel connections: between one sender and one
/// receiver, messages arrive in the order they were sent, with none missing. Several senders
/// on node a cast numbered messages to several receivers on node b over a channel with four
/// connections; every receiver sees each sender's numbers as 0, 1, 2, ...
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_pair_order_holds_under_load_with_parallel_connections() {
    let parallel =
        |name| builder(name).channel(DEFAULT_CHANNEL, ChannelConfig::new().parallelism(4));
    let nodes = cluster_of(vec![parallel("a"), parallel("b")]).await;
    let (a, b) = (nodes[0].clone(), nodes[1].clone());
    let receivers: Vec<Pid> =
        (0..RECEIVERS).map(|_| b.runtime().spawn(Sequencer::default()).pid()).collect();

    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let (runtime, receivers) = (a.runtime().clone(), receivers.clone());
        senders.push(tokio::spawn(async move {
            for n in 0..PER_SENDER {
                let to = receivers[(n % RECEIVERS as u64) as usize];
                let message: Numbered = (sender, n / RECEIVERS as u64);
                runtime.cast(to, message).await.expect("the cast is queued");
            }
        }));
    }
    for sender in senders {
        within(sender).await.expect("the sender finished");
    }

    let expected = u64::from(SENDERS) * PER_PAIR;
    for &receiver in &receivers {
        eventually("every message arrived", || {
            let a = a.clone();
            async move {
                let report: SequenceReport = a.runtime().call(receiver, (), CALL).await.unwrap();
                report.received >= expected
            }
        })
        .await;
        let report: SequenceReport = a.runtime().call(receiver, (), CALL).await.unwrap();
        assert_eq!(report.received, expected);
        assert!(report.breaks.is_empty(), "out of order at {receiver}: {:?}", report.breaks);
    }
    shutdown(&nodes);
}

/// A monotonic channel: when updates for a receiver pile up, a queued one is superseded by a
/// newer one, never reordered; the receiver sees increasing values and ends with the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monotonic_channel_delivers_increasing_values_ending_with_the_last() {
    const UPDATES: u64 = 3_000;
    let monotonic = |name| builder(name).channel("state", ChannelConfig::new().monotonic(true));
    let nodes = cluster_of(vec![monotonic("a"), monotonic("b")]).await;
    let (a, b) = (nodes[0].clone(), nodes[1].clone());
    let recorder = SlowRecorder { delay: Duration::from_millis(1), seen: Vec::new() };
    let recorder = b.runtime().spawn(recorder);

    for n in 1..=UPDATES {
        within(a.cast_on("state", recorder.pid(), n)).await.expect("queued");
    }
    eventually("the last update arrived", || {
        let recorder = recorder.clone();
        async move { recorder.call(()).await.unwrap().last() == Some(&UPDATES) }
    })
    .await;
    let seen = recorder.call(()).await.unwrap();
    assert!(seen.windows(2).all(|pair| pair[0] < pair[1]), "not increasing: {seen:?}");
    assert!(seen.len() as u64 <= UPDATES);

    let nowhere = a.cast_on("no-such-channel", recorder.pid(), 0u64).await;
    assert_eq!(nowhere, Err(RemoteError::NoSuchChannel("no-such-channel".into())));
    shutdown(&nodes);
}
