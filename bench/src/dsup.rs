//! Metrics of the distributed supervisor (`shoal-supervisor`'s `DistributedSupervisor`, a hub
//! whose child ids are the children's names): `dsup_start_child_us`, one named child started
//! at a time across three nodes in this OS process, and `dsup_failover_ms`, a node lost in
//! three OS processes until every child answers by name again.
//!
//! **`dsup_start_child_us`.** Three nodes in this OS process, joined over loopback TCP, each
//! running supervisor `bench` in its default configuration
//! ([`DistributedSupervisorConfig::default`]: the hub's defaults, 2,048 ring entries per node,
//! a start answered once the child runs on the owner of its name and a second node holds
//! it). See [`dsup_start_child_us`].
//!
//! **`dsup_failover_ms`.** The measuring process runs node `a`; it starts this same binary
//! twice more (`shoal-bench dsup-node b` and `... c`), which run nodes `b` and `c`, print
//! their address, and exit when their stdin closes. Every node runs supervisor `failover`
//! with the default configuration **except the hub's `table.down_after` = 0**, as
//! `failover_ms` does ([`crate::hub_failover`]): the figure is the mechanics of failover; the
//! production default waits 3 s on purpose before moving anything. Every transport setting
//! is at its default. See [`dsup_failover_ms`].

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use shoal_hub::core::TableConfig;
use shoal_process::ChildSpec;
use shoal_supervisor::{DistributedChild, DistributedSupervisor, DistributedSupervisorConfig};
use shoal_transport::Node;
use tokio::task::JoinSet;

use crate::harness::{
    Idle, NodeName, NodeProcess, key, on_workers, serve_until_stdin_closes, spawn_node,
};

/// Starts before the timed ones, to warm the nodes' connections and tables.
const WARMUP: usize = 200;

/// Timed starts of `dsup_start_child_us`.
const STARTS: usize = 2_000;

/// How long the nodes may take to meet, and the supervisors to see each other.
const SETTLE: Duration = Duration::from_secs(20);

/// The nodes of `dsup_failover_ms`, the measuring one first.
const NODES: [&str; 3] = ["a", "b", "c"];

/// The node that is lost.
const VICTIM: &str = "b";

/// The survivor other than the measuring node.
const OTHER: &str = "c";

/// The supervisor of `dsup_failover_ms`, on every node.
const SUPERVISOR: &str = "failover";

/// The factory of `dsup_failover_ms`'s children, on every node.
const FACTORY: &str = "bench-dsup-echo";

/// Children started before the loss.
const CHILDREN: usize = 1_000;

/// The RPC by which node `c` answers how many children its supervisor lists.
const COUNT: &str = "bench.dsup.count";

/// How long the cluster may take to form and the children to start, and every child to
/// answer again.
const BOUND: Duration = Duration::from_secs(60);

/// How long one ask of `c`'s count may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one call by name may wait. A call sent to a lost child's old pid just before its
/// new one is known makes the figure late by up to this much.
const CALL_TIMEOUT: Duration = Duration::from_millis(25);

/// The pause between two rounds of calls.
const ROUND_PAUSE: Duration = Duration::from_millis(2);

/// `n` nodes in a full mesh, each with the `idle` factory and supervisor `bench` running
/// with its default configuration, once every supervisor sees the `n`.
async fn supervisors(n: usize) -> anyhow::Result<(Vec<Node>, Vec<DistributedSupervisor>)> {
    let mut nodes = Vec::new();
    for i in 0..n {
        let node = Node::builder(format!("d{i}"), key()).start().await?;
        node.runtime().register_factory("idle", |(): ()| Idle)?;
        nodes.push(node);
    }
    for node in &nodes[1..] {
        node.join(nodes[0].listen_addr()).await?;
    }
    let deadline = Instant::now() + SETTLE;
    while !nodes.iter().all(|node| node.nodes().len() == n - 1) {
        ensure!(Instant::now() < deadline, "the nodes did not meet within {SETTLE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut sups = Vec::new();
    for node in &nodes {
        let config = DistributedSupervisorConfig::default();
        sups.push(DistributedSupervisor::start(node, "bench", config).await?);
    }
    while !sups.iter().all(|sup| sup.nodes().len() == n) {
        ensure!(Instant::now() < deadline, "the supervisors did not meet within {SETTLE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok((nodes, sups))
}

/// Child `name` from the `idle` factory.
fn idle(name: String) -> anyhow::Result<DistributedChild> {
    Ok(DistributedChild::new(ChildSpec::new(name.clone(), "idle", &())?).name(name))
}

/// `dsup_start_child_us`: three nodes (see the module docs); node `d0` starts
/// [`WARMUP`] named children, then [`STARTS`] more, one after the other, each
/// [`DistributedSupervisor::start_child`] awaited (the child running on the owner of its name,
/// two times in three another node, and held by a second node) and timed on its own.
/// Microseconds; the median of the timed starts. SPEC.md's target: ≤ 300 us.
pub(crate) fn dsup_start_child_us() -> anyhow::Result<f64> {
    on_workers(async {
        let (nodes, sups) = supervisors(3).await?;
        for i in 0..WARMUP {
            sups[0].start_child(idle(format!("warm-{i}"))?).await?;
        }
        let children: Vec<DistributedChild> =
            (0..STARTS).map(|i| idle(format!("child-{i}"))).collect::<Result<_, _>>()?;
        let mut times = Vec::with_capacity(STARTS);
        let mut remote = 0;
        for child in children {
            let started = Instant::now();
            let child = sups[0].start_child(child).await?;
            times.push(started.elapsed());
            remote += usize::from(child.node != nodes[0].name());
        }
        times.sort_unstable();
        let median = times[times.len() / 2];
        let p99 = times[times.len() * 99 / 100];
        eprintln!(
            "{STARTS} starts ({remote} on another node): median {median:?}, p99 {p99:?}, \
             slowest {:?}",
            times[times.len() - 1]
        );
        for sup in &sups {
            sup.stop().await;
        }
        for node in &nodes {
            node.shutdown();
        }
        Ok(median.as_secs_f64() * 1e6)
    })
}

/// The configuration of supervisor [`SUPERVISOR`] on every node: the default, but the hub's
/// `down_after` = 0 (see the module docs).
fn failover_config() -> DistributedSupervisorConfig {
    let mut config = DistributedSupervisorConfig::default();
    config.hub.table = TableConfig { down_after: Duration::ZERO, ..config.hub.table };
    config
}

/// Node `name` of `dsup_failover_ms`, default transport settings, with the [`NodeName`] factory
/// and supervisor [`SUPERVISOR`].
async fn start_node(name: &str) -> anyhow::Result<(Node, DistributedSupervisor)> {
    let node = Node::builder(name, key()).start().await?;
    let here = name.to_owned();
    node.runtime().register_factory(FACTORY, move |(): ()| NodeName { node: here.clone() })?;
    let sup = DistributedSupervisor::start(&node, SUPERVISOR, failover_config()).await?;
    Ok((node, sup))
}

/// `shoal-bench dsup-node NAME`: node `b` or `c` of `dsup_failover_ms`. Prints
/// `listening <addr>`, serves until stdin closes.
pub(crate) fn serve_node(name: &str) -> anyhow::Result<()> {
    ensure!(NODES[1..].contains(&name), "dsup-node takes b or c, not {name:?}");
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    tokio.block_on(async {
        let (node, sup) = start_node(name).await?;
        let serving = sup.clone();
        node.register_rpc(COUNT, move |(): ()| {
            let count = serving.children().len();
            async move { count }
        });
        serve_until_stdin_closes(&node).await?;
        drop(sup);
        node.shutdown();
        Ok(())
    })
}

/// `dsup_failover_ms`: three nodes in three OS processes (see the module docs). Node `a`
/// starts [`CHILDREN`] named children (`child-N`, each on the owner of its name) and waits
/// until `a` and `c` each list all of them in `children()`; then node `b` is SIGKILLed. The
/// clock runs from just before the kill until every child has answered a call by name made
/// after it: `a` calls, by name ([`DistributedSupervisor::target`], looked up at each call),
/// every child that has not answered yet, all at once, each call waiting at most
/// [`CALL_TIMEOUT`], round after round, [`ROUND_PAUSE`] apart. No answer may come from `b`.
/// Milliseconds; SPEC.md's target: ≤ 1,000 ms.
pub(crate) fn dsup_failover_ms() -> anyhow::Result<f64> {
    let mut victim = spawn_node("dsup-node", VICTIM)?;
    let other = spawn_node("dsup-node", OTHER)?;
    let addrs = [victim.1, other.1];
    let value = on_workers(async move { failover(&mut victim.0, addrs).await });
    drop(other);
    value
}

async fn failover(victim: &mut NodeProcess, addrs: [SocketAddr; 2]) -> anyhow::Result<f64> {
    let (node, sup) = start_node(NODES[0]).await?;
    for addr in addrs {
        node.join(addr).await.with_context(|| format!("joining {addr}"))?;
    }
    let deadline = Instant::now() + BOUND;
    while sup.nodes().len() < NODES.len() {
        ensure!(Instant::now() < deadline, "the supervisor did not form: {:?}", sup.nodes());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let names: Vec<String> = (0..CHILDREN).map(|i| format!("child-{i}")).collect();
    let mut starts = JoinSet::new();
    for name in &names {
        let (sup, name) = (sup.clone(), name.clone());
        starts.spawn(async move {
            let spec = ChildSpec::new(name.clone(), FACTORY, &())?;
            let started = sup.start_child(DistributedChild::new(spec).name(name)).await?;
            anyhow::Ok(started.node)
        });
    }
    let mut on_victim = 0;
    while let Some(started) = starts.join_next().await {
        on_victim += usize::from(started?? == VICTIM);
    }
    // Every survivor must list every child before the loss.
    loop {
        let seen_by_a = sup.children().len();
        let seen_by_c: usize = node
            .rpc(OTHER, COUNT, &(), ASK_TIMEOUT)
            .await
            .with_context(|| format!("asking {OTHER} for its count"))?;
        if seen_by_a == CHILDREN && seen_by_c == CHILDREN {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "not every child listed: {seen_by_a} by a, {seen_by_c} by c"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let started = Instant::now();
    let _ = victim.0.kill();
    let _ = victim.0.wait();
    let mut pending: BTreeSet<String> = names.into_iter().collect();
    let mut rounds = 0u32;
    let elapsed = loop {
        rounds += 1;
        let mut calls = JoinSet::new();
        for name in &pending {
            let target = sup.target::<NodeName>(name);
            let name = name.clone();
            calls.spawn(async move { (name, target.call_timeout((), CALL_TIMEOUT).await) });
        }
        while let Some(call) = calls.join_next().await {
            let (name, answer) = call?;
            if let Ok(at) = answer {
                if at == VICTIM {
                    bail!("{name} answered from {VICTIM}, which was killed");
                }
                pending.remove(&name);
            }
        }
        if pending.is_empty() {
            break started.elapsed();
        }
        ensure!(
            started.elapsed() < BOUND,
            "{} of {CHILDREN} children did not answer by name within {BOUND:?}",
            pending.len()
        );
        tokio::time::sleep(ROUND_PAUSE).await;
    };
    eprintln!(
        "{CHILDREN} children, {on_victim} on {VICTIM}; {VICTIM} killed: every child answered by \
         name after {elapsed:?} ({rounds} rounds of calls)"
    );
    drop(sup);
    node.shutdown();
    Ok(elapsed.as_secs_f64() * 1e3)
}
