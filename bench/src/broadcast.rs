//! Metrics of epidemic broadcast (`shoal-broadcast`): the latency of a broadcast over real
//! TCP between in-process nodes, and what the Plumtree paper measures (§4: relative message
//! redundancy, reliability, last delivery hop) from the 1,000-node simulation.
//!
//! The simulation metrics are deterministic: they run [`Scenario::new`] with [`SEED`] (the
//! seed of the broadcast crate's own 1,000-node tests), so every sample of one build gives
//! the same value. Besides the paper's case (one long-lived root on a reliable network,
//! crashes before a broadcast) they measure the harder ones: many roots, each broadcasting
//! for the first time; 1% and 5% message loss; 5% duplication; and a crash during a
//! broadcast, measured at 1 s and at 5 s. Each prints its whole report to stderr.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use shoal_broadcast::simulation::{BroadcastReport, Report, Scenario, run};
use shoal_broadcast::{Broadcast, BroadcastConfig, Log, Topic};
use shoal_sim::Network;
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

/// Roots of the `*_many_roots` metrics, each broadcasting once for the first time.
const NEW_ROOTS: usize = 20;

/// When the nodes of the `*_crash_during_*` metrics crash, after the broadcast started: the
/// broadcast is then a few hops into the 1,000 nodes.
const CRASH_DURING: Duration = Duration::from_millis(20);

/// The 1,000-node simulation of `plumtree_rmr` with `scenario` changed by `change`; prints
/// the report's measures.
fn simulate(what: &str, change: impl FnOnce(&mut Scenario)) -> Report {
    let mut scenario = Scenario::new(SEED);
    change(&mut scenario);
    let report = run(&scenario);
    let print = |label: &str, b: &BroadcastReport| {
        eprintln!(
            "{what}, {label}: reliability {:.4} (at 1 s {:.4}), RMR {:.3}, LDH {} ({} of {} live)",
            b.reliability, b.reliability_at_1s, b.rmr, b.ldh, b.delivered, b.live
        );
    };
    print("stable", &report.stable);
    for (index, b) in report.new_roots.iter().enumerate() {
        print(&format!("new root {index}"), b);
    }
    for (index, b) in report.after_crash.iter().enumerate() {
        print(&format!("after crash {index}"), b);
    }
    report
}

/// The mean of `measure` over the first broadcasts of [`NEW_ROOTS`] new roots.
fn many_roots(measure: impl Fn(&BroadcastReport) -> f64) -> anyhow::Result<f64> {
    let report = simulate("many roots", |s| s.new_roots = NEW_ROOTS);
    ensure!(report.new_roots.len() == NEW_ROOTS, "{} new roots", report.new_roots.len());
    let sum: f64 = report.new_roots.iter().map(measure).sum();
    Ok(sum / NEW_ROOTS as f64)
}

/// `plumtree_rmr_many_roots`: in the 1,000-node simulation, after the warm-up broadcasts of
/// one root, [`NEW_ROOTS`] other nodes broadcast once each, in turn (5 s apart): the mean
/// RMR of those first broadcasts. Most broadcasts of a large cluster with many senders are
/// such first ones.
pub(crate) fn plumtree_rmr_many_roots() -> anyhow::Result<f64> {
    many_roots(|b| b.rmr)
}

/// `plumtree_reliability_pct_many_roots`: the mean reliability (delivered through the tree
/// within 5 s) of the first broadcasts of `plumtree_rmr_many_roots`, in percent.
pub(crate) fn plumtree_reliability_pct_many_roots() -> anyhow::Result<f64> {
    many_roots(|b| b.reliability * 100.0)
}

/// The 1,000-node simulation with every message (joins, shuffles, pings, the tree's) lost
/// with probability `loss`, anti-entropy off: its settled-tree broadcast.
fn lossy(loss: f64) -> BroadcastReport {
    let network = Network { drop_probability: loss, ..Network::reliable() };
    simulate(&format!("{}% loss", loss * 100.0), |s| s.network = network).stable
}

/// `plumtree_reliability_pct_1pct_loss`: as `plumtree_rmr`, every message lost with
/// probability 1%: the share of live nodes the settled-tree broadcast reaches through the
/// tree (eager pushes and GRAFTs) within 5 s, in percent.
pub(crate) fn plumtree_reliability_pct_1pct_loss() -> anyhow::Result<f64> {
    Ok(lossy(0.01).reliability * 100.0)
}

/// `plumtree_rmr_1pct_loss`: the RMR of the broadcast of `plumtree_reliability_pct_1pct_loss`
/// (payload messages sent, lost ones included).
pub(crate) fn plumtree_rmr_1pct_loss() -> anyhow::Result<f64> {
    Ok(lossy(0.01).rmr)
}

/// `plumtree_reliability_pct_5pct_loss`: as `plumtree_reliability_pct_1pct_loss`, at 5%.
pub(crate) fn plumtree_reliability_pct_5pct_loss() -> anyhow::Result<f64> {
    Ok(lossy(0.05).reliability * 100.0)
}

/// `plumtree_rmr_5pct_loss`: as `plumtree_rmr_1pct_loss`, at 5%.
pub(crate) fn plumtree_rmr_5pct_loss() -> anyhow::Result<f64> {
    Ok(lossy(0.05).rmr)
}

/// The 1,000-node simulation with every delivered message delivered twice with probability
/// 5%: its settled-tree broadcast.
fn duplicating() -> BroadcastReport {
    let network = Network { duplicate_probability: 0.05, ..Network::reliable() };
    simulate("5% duplication", |s| s.network = network).stable
}

/// `plumtree_rmr_5pct_duplication`: as `plumtree_rmr`, every delivered message delivered
/// twice with probability 5%: the RMR of the settled-tree broadcast (payload messages sent;
/// the network's copies are not counted).
pub(crate) fn plumtree_rmr_5pct_duplication() -> anyhow::Result<f64> {
    Ok(duplicating().rmr)
}

/// `plumtree_reliability_pct_5pct_duplication`: the reliability of the broadcast of
/// `plumtree_rmr_5pct_duplication` within 5 s, in percent.
pub(crate) fn plumtree_reliability_pct_5pct_duplication() -> anyhow::Result<f64> {
    Ok(duplicating().reliability * 100.0)
}

/// The first broadcast after a crash of 20% of the nodes (never the root) that hits
/// [`CRASH_DURING`] after it started, while it spreads.
fn crash_during() -> anyhow::Result<BroadcastReport> {
    let report = simulate("20% crashed during a broadcast", |s| {
        s.crash_fraction = 0.2;
        s.broadcasts_after_crash = 1;
        s.crash_during_broadcast = Some(CRASH_DURING);
    });
    ensure!(report.crashed == 200, "{} nodes crashed, not 200", report.crashed);
    report.after_crash.into_iter().next().context("no broadcast after the crash")
}

/// `plumtree_reliability_pct_crash_during_1s`: in the 1,000-node simulation, 20% of the
/// nodes crash 20 ms into a broadcast on the settled tree: the share of the live nodes that
/// got it through the tree 1 s after it started, in percent.
pub(crate) fn plumtree_reliability_pct_crash_during_1s() -> anyhow::Result<f64> {
    Ok(crash_during()?.reliability_at_1s * 100.0)
}

/// `plumtree_reliability_pct_crash_during_5s`: as `plumtree_reliability_pct_crash_during_1s`,
/// 5 s after the broadcast started.
pub(crate) fn plumtree_reliability_pct_crash_during_5s() -> anyhow::Result<f64> {
    Ok(crash_during()?.reliability * 100.0)
}
