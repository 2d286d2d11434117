//! Metrics of epidemic broadcast (`shoal-broadcast`): the latency of a broadcast over real
//! TCP between in-process nodes, and what the Plumtree paper measures (§4: relative message
//! redundancy, reliability, last delivery hop) from the 1,000-node simulation.
//!
//! The simulation metrics are deterministic: they run [`Scenario::new`] with [`SEED`] (the
//! seed of the broadcast crate's own 1,000-node tests), so every sample of one build gives
//! the same value.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use shoal_broadcast::simulation::{Scenario, run};
use shoal_broadcast::{Broadcast, BroadcastConfig, Log, Topic};
use shoal_transport::{Membership, Node};

use crate::harness::{key, on_workers};

/// Nodes of `broadcast_p99_us`.
const NODES: usize = 16;
/// Untimed broadcasts of `broadcast_p99_us`, per root, before its clock starts: the first
/// broadcast from a root shapes that root's tree (duplicates prune links), the second runs
/// on the shaped tree.
const WARM_UP_PER_ROOT: usize = 2;
/// Timed broadcasts of `broadcast_p99_us`.
const BROADCASTS: usize = 1_000;
/// The longest `broadcast_p99_us` waits for any one thing (joins, a delivery) before it
/// gives up: a bound against hangs, not a measure.
const BOUND: Duration = Duration::from_secs(30);
/// The topic the nodes of `broadcast_p99_us` register a [`Log`] for.
const TOPIC: Topic<u64> = Topic::new("bench");
/// The seed of the simulation metrics.
const SEED: u64 = 1;

/// `broadcast_p99_us`: 16 in-process nodes on loopback (one OS process, one multi-thread
/// tokio runtime with a worker per core), each a transport node in managed membership with a
/// [`Broadcast`] service in its default configuration (HyParView active view 5) and a
/// [`Log`] handler. Node `i` joins through node `i / 2`; then each node broadcasts twice,
/// untimed, and every node must deliver every broadcast. Then 1,000 broadcasts of a `u64`,
/// one after the other, from the nodes in turn (node `k % 16`): each is timed from just
/// before [`Broadcast::broadcast`] until all 16 nodes (the root included) have delivered it
/// (each log's delivery count, awaited). The value is the 99th percentile, in microseconds.
pub(crate) fn broadcast_p99_us() -> anyhow::Result<f64> {
    on_workers(async {
        let (nodes, drivers, logs) = overlay().await?;
        let mut sent = 0usize;
        for _ in 0..WARM_UP_PER_ROOT {
            for root in &drivers {
                broadcast_to_all(root, &logs, sent as u64, sent + 1).await?;
                sent += 1;
            }
        }
        let mut latencies = Vec::with_capacity(BROADCASTS);
        for k in 0..BROADCASTS {
            let started = Instant::now();
            broadcast_to_all(&drivers[k % NODES], &logs, sent as u64, sent + 1).await?;
            latencies.push(started.elapsed());
            sent += 1;
        }
        for node in &nodes {
            node.shutdown();
        }
        latencies.sort();
        let p50 = latencies[latencies.len() / 2];
        let p99 = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];
        let max = latencies[latencies.len() - 1];
        eprintln!(
            "{BROADCASTS} broadcasts to {NODES} nodes: p50 {p50:?}, p99 {p99:?}, max {max:?}"
        );
        Ok(p99.as_secs_f64() * 1e6)
    })
}

/// The nodes of `broadcast_p99_us`, joined into one overlay.
async fn overlay() -> anyhow::Result<(Vec<Node>, Vec<Broadcast>, Vec<Log<u64>>)> {
    let (mut nodes, mut drivers, mut logs) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..NODES {
        let node = Node::builder(format!("b{i:02}"), key())
            .membership(Membership::Managed)
            .start()
            .await?;
        let driver = Broadcast::start(&node, BroadcastConfig::default()).await?;
        let log = Log::new(&node, BROADCASTS * 2);
        driver.register(TOPIC, log.clone()).await?;
        if i > 0 {
            let contact: &Node = &nodes[i / 2];
            tokio::time::timeout(BOUND, driver.join(contact.listen_addr()))
                .await
                .context("joining timed out")??;
        }
        nodes.push(node);
        drivers.push(driver);
        logs.push(log);
    }
    Ok((nodes, drivers, logs))
}

/// Broadcasts `message` from `driver` and waits until every log has delivered `total`
/// messages.
async fn broadcast_to_all(
    driver: &Broadcast,
    logs: &[Log<u64>],
    message: u64,
    total: usize,
) -> anyhow::Result<()> {
    driver.broadcast(TOPIC, message).await?;
    for log in logs {
        let mut deliveries = log.deliveries();
        tokio::time::timeout(BOUND, deliveries.wait_for(|count| *count >= total))
            .await
            .with_context(|| format!("broadcast {message} did not reach every node"))??;
    }
    Ok(())
}

/// `plumtree_rmr`: relative message redundancy (`m / (n - 1) - 1`, payload messages `m` for
/// `n` nodes reached; 0 for a perfect tree) of a broadcast on a settled tree, in the
/// broadcast crate's 1,000-node simulation ([`Scenario::new`] with [`SEED`]: joins, 10 s to
/// settle, three broadcasts from one root, the third measured; anti-entropy off).
pub(crate) fn plumtree_rmr() -> anyhow::Result<f64> {
    let report = run(&Scenario::new(SEED));
    eprintln!("stable broadcast: {:?}", report.stable);
    Ok(report.stable.rmr)
}

/// `plumtree_reliability_pct_20_crashed`: in the same 1,000-node simulation, 20% of the
/// nodes (never the root) crash at once after the warm-up broadcasts, and the root
/// broadcasts right after, before any failure is detected: the share of live nodes that
/// deliver that first broadcast through the tree, in percent.
pub(crate) fn plumtree_reliability_pct_20_crashed() -> anyhow::Result<f64> {
    let report =
        run(&Scenario { crash_fraction: 0.2, broadcasts_after_crash: 1, ..Scenario::new(SEED) });
    let first = report.after_crash.first().context("no broadcast after the crash")?;
    ensure!(report.crashed == 200, "{} nodes crashed, not 200", report.crashed);
    eprintln!("first broadcast after the crash: {first:?}");
    Ok(first.reliability * 100.0)
}

/// `plumtree_ldh`: last delivery hop (the most hops from the root to any node) of the
/// settled-tree broadcast of `plumtree_rmr`.
pub(crate) fn plumtree_ldh() -> anyhow::Result<f64> {
    let report = run(&Scenario::new(SEED));
    Ok(f64::from(report.stable.ldh))
}
