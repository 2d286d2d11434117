//! Metrics of the hub (`shoal-hub`): batched starts across three nodes, a local lookup, and
//! the placement's balance and movement on the ring with the default virtual nodes.
//!
//! The nodes run in this one OS process, joined over loopback TCP, each with hub `bench` in
//! its default configuration ([`HubConfig::default`]: 2,048 ring entries per node, an
//! awaited start answered once a second node holds the child).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use shoal_hub::core::Ring;
use shoal_hub::{Hub, HubChild, HubConfig, StartOptions};
use shoal_process::ChildSpec;
use shoal_transport::Node;

use crate::harness::{Idle, on_workers};

/// Children started in the timed batches of `hub_start_children_per_s`.
const STARTS: usize = 60_000;
/// Children per batch.
const BATCH: usize = 10_000;
/// Children of the lookup metric.
const LOOKUP_CHILDREN: usize = 10_000;
/// Timed lookups.
const LOOKUPS: u32 = 10_000_000;
/// Children placed by the ring metrics.
const RING_CHILDREN: usize = 320_000;
/// How long the nodes may take to meet.
const SETTLE: Duration = Duration::from_secs(20);

/// `n` nodes in a full mesh, each with the `idle` factory and hub `bench` running with
/// `config`, once every hub sees the `n`.
pub(crate) async fn hubs(n: usize, config: &HubConfig) -> anyhow::Result<(Vec<Node>, Vec<Hub>)> {
    let mut nodes = Vec::new();
    for i in 0..n {
        let node = Node::builder(format!("h{i}"), crate::harness::key()).start().await?;
        node.runtime().register_factory("idle", |(): ()| Idle)?;
        nodes.push(node);
    }
    for node in &nodes[1..] {
        node.join(nodes[0].listen_addr()).await?;
    }
    let deadline = Instant::now() + SETTLE;
    let mut hubs = Vec::new();
    while !nodes.iter().all(|node| node.nodes().len() == n - 1) {
        ensure!(Instant::now() < deadline, "the nodes did not meet within {SETTLE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for node in &nodes {
        hubs.push(Hub::start(node, "bench", config.clone()).await?);
    }
    while !hubs.iter().all(|hub| hub.nodes().len() == n) {
        ensure!(Instant::now() < deadline, "the hubs did not meet within {SETTLE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok((nodes, hubs))
}

fn children(from: usize, count: usize) -> anyhow::Result<Vec<HubChild>> {
    (from..from + count)
        .map(|i| Ok(HubChild::new(ChildSpec::new(format!("child-{i}"), "idle", &())?)))
        .collect()
}

async fn start(hub: &Hub, batch: Vec<HubChild>) -> anyhow::Result<()> {
    let options = StartOptions { timeout: Duration::from_secs(60), ..StartOptions::default() };
    let results = hub.init_children(batch, options).await?;
    if let Some((child, Err(error))) = results.iter().find(|(_, result)| result.is_err()) {
        bail!("{child} did not start: {error}");
    }
    Ok(())
}

pub(crate) async fn shut_down(nodes: &[Node], hubs: &[Hub]) {
    for hub in hubs {
        hub.stop().await;
    }
    for node in nodes {
        node.shutdown();
    }
}

/// `hub_start_children_per_s`: three nodes; node `h0` starts 60,000 children in batches of
/// 10,000, one batch after the other, each awaited (every child started on its owner, and
/// held by a second node, before the batch returns). Timed from the first call until the
/// last batch returns; children per second.
pub(crate) fn hub_start_children_per_s() -> anyhow::Result<f64> {
    on_workers(async {
        let (nodes, hubs) = hubs(3, &HubConfig::default()).await?;
        start(&hubs[0], children(1_000_000, 1_000)?).await?;
        let batches: Vec<Vec<HubChild>> =
            (0..STARTS / BATCH).map(|b| children(b * BATCH, BATCH)).collect::<Result<_, _>>()?;
        let started = Instant::now();
        for batch in batches {
            start(&hubs[0], batch).await?;
        }
        let elapsed = started.elapsed();
        let local: Vec<usize> = hubs.iter().map(|hub| hub.which_children_local().len()).collect();
        eprintln!("{STARTS} children in {elapsed:?}; per node {local:?}");
        shut_down(&nodes, &hubs).await;
        Ok(STARTS as f64 / elapsed.as_secs_f64())
    })
}

/// `hub_lookup_ns`: three nodes, 10,000 children; node `h0` looks up the pid of one child
/// after another ([`Hub::pid`]: its own table, no network), 10,000,000 times; nanoseconds
/// per lookup.
pub(crate) fn hub_lookup_ns() -> anyhow::Result<f64> {
    on_workers(async {
        let (nodes, hubs) = hubs(3, &HubConfig::default()).await?;
        start(&hubs[0], children(0, LOOKUP_CHILDREN)?).await?;
        let ids: Vec<String> = (0..LOOKUP_CHILDREN).map(|i| format!("child-{i}")).collect();
        let deadline = Instant::now() + SETTLE;
        while ids.iter().any(|id| hubs[0].pid(id).is_none()) {
            ensure!(Instant::now() < deadline, "h0 did not see every child within {SETTLE:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let hub = std::hint::black_box(&hubs[0]);
        let started = Instant::now();
        for i in 0..LOOKUPS {
            let id = &ids[i as usize % ids.len()];
            std::hint::black_box(hub.pid(std::hint::black_box(id)));
        }
        let elapsed = started.elapsed();
        eprintln!("{LOOKUPS} lookups in {elapsed:?}");
        shut_down(&nodes, &hubs).await;
        Ok(elapsed.as_secs_f64() * 1e9 / f64::from(LOOKUPS))
    })
}

fn node_names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("node-{i}")).collect()
}

fn shares(ring: &Ring) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut shares = BTreeMap::new();
    for child in 0..RING_CHILDREN {
        let owner = ring.owner(&format!("child-{child}")).context("an owner")?;
        *shares.entry(owner.to_owned()).or_insert(0) += 1;
    }
    Ok(shares)
}

/// `ring_max_over_mean`: 32 nodes on the ring with the default virtual nodes; 320,000 child
/// ids placed; the largest node's share over the mean share.
pub(crate) fn ring_max_over_mean() -> anyhow::Result<f64> {
    let nodes = node_names(0..32);
    let ring = Ring::new(nodes.iter().map(String::as_str));
    let shares = shares(&ring)?;
    let max = *shares.values().max().context("shares")? as f64;
    let min = *shares.values().min().context("shares")? as f64;
    let mean = RING_CHILDREN as f64 / 32.0;
    eprintln!("32 nodes, {RING_CHILDREN} children: min {min}, max {max}, mean {mean}");
    Ok(max / mean)
}

/// `hub_moved_on_join_ratio`: 31 nodes on the ring, 320,000 child ids; a 32nd node joins,
/// and the children whose owner changes are counted (exactly what the hub moves: the real-TCP
/// tests check that it moves those and no others). Over eight different newcomers, the mean
/// count over the ideal share (1/32 of the children).
pub(crate) fn hub_moved_on_join_ratio() -> anyhow::Result<f64> {
    let nodes = node_names(0..31);
    let before = Ring::new(nodes.iter().map(String::as_str));
    let ids: Vec<String> = (0..RING_CHILDREN).map(|i| format!("child-{i}")).collect();
    let ideal = RING_CHILDREN as f64 / 32.0;
    let mut ratios = Vec::new();
    for newcomer in node_names(100..108) {
        let mut after = Ring::new(nodes.iter().map(String::as_str));
        after.add(&newcomer);
        let moves = before.moves(&after, ids.iter().map(String::as_str));
        ensure!(
            moves.iter().all(|m| m.to == newcomer),
            "a child moved elsewhere than the newcomer"
        );
        ratios.push(moves.len() as f64 / ideal);
    }
    let worst = ratios.iter().copied().fold(0.0, f64::max);
    eprintln!("moved over ideal, per newcomer: {ratios:.3?} (worst {worst:.3})");
    Ok(ratios.iter().sum::<f64>() / ratios.len() as f64)
}
