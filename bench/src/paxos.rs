//! Metrics of the Paxos driver (`shoal-paxos`): the latency of one write and the throughput of
//! many writers, with acceptors in memory and on disk.
//!
//! Every sample starts three nodes (`a`, `b`, `c`) **in this one OS process**, each on
//! `127.0.0.1:0` with the default transport configuration, joined into a full mesh over
//! loopback TCP: every message between them is encoded, framed, written to a socket and read
//! back, but the three share one tokio runtime (the default worker count) rather than running
//! as separate OS processes. Each runs the Paxos service with the default configuration and
//! in-memory acceptors (file-backed ones for `paxos_durable_writes_per_s`), all three in the
//! acceptor set; measuring starts once every acceptor votes.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use shoal_paxos::{Paxos, PaxosConfig, Recovery, StorageConfig};
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
/// Writes each writer of `paxos_durable_writes_per_s` makes: fewer, so that a sample stays
/// well within `xtask bench`'s minute when every vote costs an fsync of its own.
const DURABLE_WRITES_PER_WRITER: usize = 25;
/// How long the cluster may take to form and its acceptors to start voting.
const SETTLE: Duration = Duration::from_secs(20);

/// `paxos_write_us`: one task on node `a` writes 8 bytes to one key with [`Paxos::put`], one
/// write after the other (after the first, each takes the fast path: one round trip to the
/// acceptors, of which `a`'s own is local). After 1,000 untimed writes, times 20,000 writes
/// one by one; the value is the median, in microseconds (the mean and p99 go to stderr).
pub(crate) fn paxos_write_us() -> anyhow::Result<f64> {
    on_workers(async {
        let (nodes, services) = cluster(&Acceptors::InMemory).await?;
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
        let (nodes, services) = cluster(&Acceptors::InMemory).await?;
        let rate = concurrent_writes(&services, WRITES_PER_WRITER).await;
        stop(&nodes, &services).await;
        rate
    })
}

/// `paxos_durable_writes_per_s`: `paxos_writes_per_s` with file-backed acceptors
/// ([`StorageConfig::File`], each node's in a directory of its own under a fresh temporary
/// directory, removed afterwards), and 25 writes per writer instead of 500: 384 writers on
/// distinct keys, 9,600 writes. Every acknowledged vote is on disk (fsynced) before its reply
/// leaves, so this measures how many votes the driver commits per fsync.
pub(crate) fn paxos_durable_writes_per_s() -> anyhow::Result<f64> {
    let dir = std::env::temp_dir().join(format!("shoal-bench-paxos-{}", std::process::id()));
    let acceptors = Acceptors::InFiles(dir.clone());
    let result = on_workers(async move {
        let (nodes, services) = cluster(&acceptors).await?;
        let rate = concurrent_writes(&services, DURABLE_WRITES_PER_WRITER).await;
        stop(&nodes, &services).await;
        rate
    });
    std::fs::remove_dir_all(&dir)
        .with_context(|| format!("removing the acceptors' directory {}", dir.display()))?;
    result
}

/// [`WRITERS`] writer tasks spread over `services`, each writing its own key `writes` times,
/// one write after the other; writes per second, timed from just before the writers start
/// until all of them are done. Every write must succeed.
async fn concurrent_writes(services: &[Paxos], writes: usize) -> anyhow::Result<f64> {
    // Each writer's first write of its key prepares; later ones take the fast path.
    let started = Instant::now();
    let mut writers = Vec::with_capacity(WRITERS);
    for writer in 0..WRITERS {
        let paxos = services[writer % services.len()].clone();
        writers.push(tokio::spawn(async move {
            let key = format!("key-{writer}");
            for n in 0..writes {
                paxos.put(key.as_str(), (n as u64).to_be_bytes().to_vec()).await?;
            }
            anyhow::Ok(())
        }));
    }
    for writer in writers {
        writer.await.context("a writer task")??;
    }
    let elapsed = started.elapsed();
    let total = WRITERS * writes;
    eprintln!("{total} writes by {WRITERS} writers in {elapsed:?}");
    Ok(total as f64 / elapsed.as_secs_f64())
}

/// Where the acceptors of a benchmark's cluster keep their votes.
pub(crate) enum Acceptors {
    /// In memory ([`StorageConfig::Memory`]).
    InMemory,
    /// In files: each node's in the subdirectory of this one named after it.
    InFiles(std::path::PathBuf),
}

/// Three nodes in a full mesh, each with the Paxos service, every acceptor voting.
pub(crate) async fn cluster(acceptors: &Acceptors) -> anyhow::Result<(Vec<Node>, Vec<Paxos>)> {
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
        if let Acceptors::InFiles(dir) = acceptors {
            config.storage = StorageConfig::File(dir.join(node.name()));
        }
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

pub(crate) async fn stop(nodes: &[Node], services: &[Paxos]) {
    for service in services {
        service.stop().await;
    }
    for node in nodes {
        node.shutdown();
    }
}
