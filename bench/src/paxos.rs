//! Metrics of the Paxos driver (`shoal-paxos`): the latency of one write and the throughput of
//! many writers.
//!
//! Every sample starts three nodes (`a`, `b`, `c`) **in this one OS process**, each on
//! `127.0.0.1:0` with the default transport configuration, joined into a full mesh over
//! loopback TCP: every message between them is encoded, framed, written to a socket and read
//! back, but the three share one tokio runtime (the default worker count) rather than running
//! as separate OS processes. Each runs the Paxos service with the default configuration and
//! in-memory acceptors, all three in the acceptor set; measuring starts once every acceptor
//! votes.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use shoal_paxos::{Paxos, PaxosConfig, Recovery};
use shoal_transport::Node;

use crate::harness::{key, on_workers};

const NAMES: [&str; 3] = ["a", "b", "c"];
/// Untimed writes before `paxos_write_us` starts timing.
const WARM_UP_WRITES: usize = 1_000;
/// Timed writes of `paxos_write_us`.
const WRITES: usize = 20_000;
/// Writers of `paxos_writes_per_s`, spread evenly over the three nodes.
const WRITERS: usize = 384;
/// Writes each writer of `paxos_writes_per_s` makes.
const WRITES_PER_WRITER: usize = 500;
/// How long the cluster may take to form and its acceptors to start voting.
const SETTLE: Duration = Duration::from_secs(20);

/// `paxos_write_us`: one task on node `a` writes 8 bytes to one key with [`Paxos::put`], one
/// write after the other (after the first, each takes the fast path: one round trip to the
/// acceptors, of which `a`'s own is local). After 1,000 untimed writes, times 20,000 writes
/// one by one; the value is the median, in microseconds (the mean and p99 go to stderr).
pub(crate) fn paxos_write_us() -> anyhow::Result<f64> {
    on_workers(async {
        let (nodes, services) = cluster().await?;
        let paxos = &services[0];
        for n in 0..WARM_UP_WRITES {
            paxos.put("bench", (n as u64).to_be_bytes().to_vec()).await?;
        }
        let mut latencies = Vec::with_capacity(WRITES);
        let started = Instant::now();
        for n in 0..WRITES {
            let write = Instant::now();
            paxos.put("bench", (n as u64).to_be_bytes().to_vec()).await?;
            latencies.push(write.elapsed());
        }
        let elapsed = started.elapsed();
        stop(&nodes, &services).await;
        latencies.sort();
        let median = latencies[WRITES / 2];
        eprintln!(
            "{WRITES} writes in {elapsed:?}: mean {:?}, median {median:?}, p99 {:?}",
            elapsed / WRITES as u32,
            latencies[WRITES * 99 / 100],
        );
        Ok(median.as_secs_f64() * 1e6)
    })
}

/// `paxos_writes_per_s`: 384 writer tasks, 128 on each node, each writing its own key 500
/// times with [`Paxos::put`], one write after the other (so up to 384 writes in flight, on
/// 384 distinct keys). Timed from just before the writers start until all of them are done;
/// the value is writes ÷ seconds. Every write must succeed.
pub(crate) fn paxos_writes_per_s() -> anyhow::Result<f64> {
    on_workers(async {
        let (nodes, services) = cluster().await?;
        // Each writer's first write of its key prepares; later ones take the fast path.
        let started = Instant::now();
        let mut writers = Vec::with_capacity(WRITERS);
        for writer in 0..WRITERS {
            let paxos = services[writer % services.len()].clone();
            writers.push(tokio::spawn(async move {
                let key = format!("key-{writer}");
                for n in 0..WRITES_PER_WRITER {
                    paxos.put(key.as_str(), (n as u64).to_be_bytes().to_vec()).await?;
                }
                anyhow::Ok(())
            }));
        }
        for writer in writers {
            writer.await.context("a writer task")??;
        }
        let elapsed = started.elapsed();
        stop(&nodes, &services).await;
        let writes = WRITERS * WRITES_PER_WRITER;
        eprintln!("{writes} writes by {WRITERS} writers in {elapsed:?}");
        Ok(writes as f64 / elapsed.as_secs_f64())
    })
}

/// Three nodes in a full mesh, each with the Paxos service, every acceptor voting.
async fn cluster() -> anyhow::Result<(Vec<Node>, Vec<Paxos>)> {
    let mut nodes = Vec::new();
    for name in NAMES {
        nodes.push(Node::builder(name, key()).start().await?);
    }
    for node in &nodes[1..] {
        node.join(nodes[0].listen_addr()).await?;
    }
    let mut config = PaxosConfig::new(NAMES.iter().map(|name| name.to_string()).collect());
    // A fresh cluster: its acceptors found the first epoch themselves.
    config.recovery = Recovery::NewEpoch;
    let mut services = Vec::new();
    for node in &nodes {
        services.push(Paxos::start(node, config.clone()).await?);
    }
    let deadline = Instant::now() + SETTLE;
    while !(nodes.iter().all(|node| node.nodes().len() == NAMES.len() - 1)
        && services.iter().all(Paxos::is_voting))
    {
        if Instant::now() > deadline {
            bail!("the three nodes did not form a voting cluster within {SETTLE:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok((nodes, services))
}

async fn stop(nodes: &[Node], services: &[Paxos]) {
    for service in services {
        service.stop().await;
    }
    for node in nodes {
        node.shutdown();
    }
}
