//! Metrics of the registry (`shoal-registry`): locks, the hand-over of a lock to a waiter, a
//! name's first start, and a cached resolution; process groups: a join seen cluster-wide, a
//! local read, and a restarted node's convergence.
//!
//! Every sample starts the three nodes of the Paxos metrics ([`crate::paxos`]: `a`, `b`, `c`
//! in this one OS process, joined over loopback TCP, in-memory acceptors, the default
//! configurations) and a registry on each with [`RegistryConfig::default`] (a 5 s lease),
//! and measures once every registry holds its lease and sees the other two.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use shoal_paxos::Paxos;
use shoal_process::{ChildSpec, Restart};
use shoal_registry::{Groups, GroupsConfig, LockOptions, LockResult, Registry, RegistryConfig};
use shoal_transport::Node;

use crate::harness::{Idle, on_workers};
use crate::paxos::{Acceptors, cluster, stop};

/// Untimed operations before timing starts.
const WARM_UP: usize = 200;
/// Timed lock acquisitions and releases.
const LOCKS: usize = 5_000;
/// Timed hand-overs.
const HANDOFFS: usize = 1_000;
/// Timed first starts of fresh names.
const NAMES: usize = 3_000;
/// Timed cached resolutions.
const RESOLUTIONS: u32 = 10_000_000;
/// How long the registries may take to win their leases and meet.
const SETTLE: Duration = Duration::from_secs(20);

/// `lock_acquire_release_us`: one task on node `a` acquires an uncontended lock with the
/// default options (a holder process started for the guard) and releases it with
/// `LockGuard::unlock`, one after the other: each acquisition and each release is one
/// compare-and-set through consensus (after a read, as the registry does not guess a lock's
/// record). After 200 untimed rounds, times 5,000; the value is the median of one acquisition
/// plus its release, in microseconds.
pub(crate) fn lock_acquire_release_us() -> anyhow::Result<f64> {
    on_workers(async {
        let (nodes, services, registries) = registries().await?;
        let registry = &registries[0];
        let mut latencies = Vec::with_capacity(LOCKS);
        for round in 0..WARM_UP + LOCKS {
            let started = Instant::now();
            let guard = acquire(registry, "bench-lock", LockOptions::default()).await?;
            guard.unlock().await?;
            if round >= WARM_UP {
                latencies.push(started.elapsed());
            }
        }
        shut_down(&nodes, &services, &registries).await;
        Ok(median_us("acquire and release", &mut latencies))
    })
}

/// `lock_handoff_us`: node `a` holds a lock; a task on node `b` waits for it (queued in the
/// lock's record); `a` releases it. Timed from just before `a`'s release until `b`'s
/// acquisition returns (the release's write, which hands the lock to `b` with the next token,
/// and the notice that reaches `b`'s node). 1,000 hand-overs after 200 untimed; the median,
/// in microseconds.
pub(crate) fn lock_handoff_us() -> anyhow::Result<f64> {
    on_workers(async {
        let (nodes, services, registries) = registries().await?;
        let (a, b) = (registries[0].clone(), registries[1].clone());
        let mut latencies = Vec::with_capacity(HANDOFFS);
        for round in 0..WARM_UP + HANDOFFS {
            let held = acquire(&a, "bench-handoff", LockOptions::default()).await?;
            let waiter = {
                let b = b.clone();
                tokio::spawn(async move {
                    let guard = acquire(&b, "bench-handoff", LockOptions::default()).await?;
                    let acquired = Instant::now();
                    guard.unlock().await?;
                    anyhow::Ok(acquired)
                })
            };
            // Until `b` waits in the lock's queue.
            wait_queued(&a, held.key()).await?;
            let released = Instant::now();
            held.unlock().await?;
            let acquired = waiter.await.context("the waiter task")??;
            if round >= WARM_UP {
                latencies.push(acquired.duration_since(released));
            }
        }
        shut_down(&nodes, &services, &registries).await;
        Ok(median_us("hand-overs", &mut latencies))
    })
}

/// `name_register_us`: one task on node `a` resolves 3,000 fresh temporary names
/// (`Name::whereis` on a name never used), one after the other. Each is spread by its hash
/// over the three nodes: a read of its register, then on its host (asked over the transport
/// when it is not `a`) a claim by compare-and-set, the process started, and its pid recorded
/// by compare-and-set. The median, in microseconds.
pub(crate) fn name_register_us() -> anyhow::Result<f64> {
    on_workers(async {
        let (nodes, services, registries) = registries().await?;
        let registry = &registries[0];
        let spec = ChildSpec::new("idle", "idle", &())?;
        let mut latencies = Vec::with_capacity(NAMES);
        for round in 0..WARM_UP + NAMES {
            let name = registry.name(format!("bench-name-{round}"), &spec, Restart::Temporary)?;
            let started = Instant::now();
            name.whereis().await?;
            if round >= WARM_UP {
                latencies.push(started.elapsed());
            }
        }
        shut_down(&nodes, &services, &registries).await;
        Ok(median_us("first starts", &mut latencies))
    })
}

/// `whereis_cached_ns`: `Name::whereis` of a name whose pid node `a` has cached (it resolved
/// it once), 10,000,000 times in one task; the mean, in nanoseconds.
pub(crate) fn whereis_cached_ns() -> anyhow::Result<f64> {
    on_workers(async {
        let (nodes, services, registries) = registries().await?;
        let spec = ChildSpec::new("idle", "idle", &())?;
        let name = registries[0].name("bench-cached", &spec, Restart::Temporary)?;
        let pid = name.whereis().await?;
        let started = Instant::now();
        for _ in 0..RESOLUTIONS {
            let resolved = std::hint::black_box(&name).whereis().await?;
            if resolved != pid {
                bail!("the cached pid changed: {resolved} after {pid}");
            }
        }
        let elapsed = started.elapsed();
        shut_down(&nodes, &services, &registries).await;
        eprintln!("{RESOLUTIONS} cached resolutions in {elapsed:?}");
        Ok(elapsed.as_secs_f64() * 1e9 / f64::from(RESOLUTIONS))
    })
}

/// The three nodes of the Paxos metrics, each with a registry (and the `idle` factory),
/// every registry holding its lease and meeting the other two.
async fn registries() -> anyhow::Result<(Vec<Node>, Vec<Paxos>, Vec<Registry>)> {
    let (nodes, services) = cluster(&Acceptors::InMemory).await?;
    let mut registries = Vec::new();
    for (node, service) in nodes.iter().zip(&services) {
        node.runtime().register_factory("idle", |(): ()| Idle)?;
        registries.push(Registry::start(service, RegistryConfig::default()).await?);
    }
    let deadline = Instant::now() + SETTLE;
    while !registries.iter().all(|registry| registry.holds_lease() && registry.members().len() == 2)
    {
        if Instant::now() > deadline {
            bail!("the registries did not win their leases and meet within {SETTLE:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok((nodes, services, registries))
}

async fn acquire(
    registry: &Registry,
    key: &str,
    options: LockOptions,
) -> anyhow::Result<shoal_registry::LockGuard> {
    match registry.lock(key, options).await? {
        LockResult::Acquired(guard) => Ok(guard),
        other => bail!("lock {key} not acquired: {other:?}"),
    }
}

/// Waits until somebody waits for lock `key` (reading its record through consensus every 5 ms:
/// reads of the key in a tight loop would contend with the waiter's write in consensus).
async fn wait_queued(registry: &Registry, key: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE;
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if registry.lock_info(key).await?.is_some_and(|lock| lock.waiters > 0) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nobody queued for {key} within {SETTLE:?}");
        }
    }
}

async fn shut_down(nodes: &[Node], services: &[Paxos], registries: &[Registry]) {
    for registry in registries {
        registry.stop().await;
    }
    stop(nodes, services).await;
}

/// The median of `latencies` in microseconds (the mean and p99 go to stderr).
fn median_us(what: &str, latencies: &mut [Duration]) -> f64 {
    latencies.sort();
    let count = latencies.len();
    let total: Duration = latencies.iter().sum();
    let median = latencies[count / 2];
    eprintln!(
        "{count} {what}: mean {:?}, median {median:?}, p99 {:?}",
        total / count as u32,
        latencies[count * 99 / 100],
    );
    median.as_secs_f64() * 1e6
}

// ---------------------------------------------------------------------------------------------
// Process groups (no consensus).

/// Timed joins of `group_join_us`.
const GROUP_JOINS: usize = 2_000;
/// Members of the group `group_members_ns` reads.
const GROUP_SIZE: usize = 100;
/// Reads of `group_members_ns`.
const GROUP_READS: u32 = 10_000_000;
/// Members of `group_converge_ms`, spread over four nodes.
const CONVERGE_MEMBERS: usize = 10_000;

/// `n` nodes named `g0`..., joined in a full mesh over loopback, each running the default
/// scope of groups with the default configuration.
async fn group_nodes(n: usize) -> anyhow::Result<(Vec<Node>, Vec<Groups>)> {
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(Node::builder(format!("g{i}"), crate::harness::key()).start().await?);
    }
    for node in &nodes[1..] {
        node.join(nodes[0].listen_addr()).await?;
    }
    let deadline = Instant::now() + SETTLE;
    while !nodes.iter().all(|node| node.nodes().len() == n - 1) {
        if Instant::now() > deadline {
            bail!("the nodes did not form a full mesh within {SETTLE:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut groups = Vec::new();
    for node in &nodes {
        groups.push(Groups::start(node, GroupsConfig::default()).await?);
    }
    Ok((nodes, groups))
}

/// `group_join_us`: three nodes; a process of node `g0` joins a group, and the time runs until
/// `g1` and `g2` both list it as a member (their reads polled in a loop). One join after the
/// other, each of a fresh group; 2,000 after 200 untimed; the median, in microseconds.
pub(crate) fn group_join_us() -> anyhow::Result<f64> {
    on_workers(async {
        let (nodes, groups) = group_nodes(3).await?;
        let pid = nodes[0].runtime().spawn(Idle).pid();
        let mut latencies = Vec::with_capacity(GROUP_JOINS);
        for round in 0..WARM_UP + GROUP_JOINS {
            let group = format!("join-{round}");
            let started = Instant::now();
            groups[0].join(&group, pid)?;
            let deadline = started + SETTLE;
            while !groups[1..].iter().all(|scope| !scope.members(&group).is_empty()) {
                if Instant::now() > deadline {
                    bail!("a join was not seen within {SETTLE:?}");
                }
                tokio::task::yield_now().await;
            }
            if round >= WARM_UP {
                latencies.push(started.elapsed());
            }
        }
        for node in &nodes {
            node.shutdown();
        }
        Ok(median_us("joins seen on three nodes", &mut latencies))
    })
}

/// `group_members_ns`: `Groups::members` of a 100-member group (members on all three nodes,
/// read on `g0` once it sees them all), 10,000,000 times in one task; the mean, in
/// nanoseconds.
pub(crate) fn group_members_ns() -> anyhow::Result<f64> {
    on_workers(async {
        let (nodes, groups) = group_nodes(3).await?;
        for (i, (node, scope)) in nodes.iter().zip(&groups).enumerate() {
            let share = GROUP_SIZE / 3 + usize::from(i < GROUP_SIZE % 3);
            let pids: Vec<_> = (0..share).map(|_| node.runtime().spawn(Idle).pid()).collect();
            scope.join_many("read", &pids)?;
        }
        let deadline = Instant::now() + SETTLE;
        while groups[0].members("read").len() < GROUP_SIZE {
            if Instant::now() > deadline {
                bail!("g0 did not see the {GROUP_SIZE} members within {SETTLE:?}");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let started = Instant::now();
        for _ in 0..GROUP_READS {
            let members = std::hint::black_box(&groups[0]).members("read");
            std::hint::black_box(members);
        }
        let elapsed = started.elapsed();
        for node in &nodes {
            node.shutdown();
        }
        eprintln!("{GROUP_READS} reads of {GROUP_SIZE} members in {elapsed:?}");
        Ok(elapsed.as_secs_f64() * 1e9 / f64::from(GROUP_READS))
    })
}

/// `group_converge_ms`: five nodes; 10,000 processes, 2,500 on each of `g0`..`g3`, join one
/// group; then `g4` starts its scope afresh (as a restarted node does), and the time runs from
/// that start until `g4` lists all 10,000 members. In milliseconds.
pub(crate) fn group_converge_ms() -> anyhow::Result<f64> {
    on_workers(async {
        let (nodes, mut groups) = group_nodes(5).await?;
        let late = groups.pop().context("five scopes")?;
        late.stop().await;
        drop(late);
        let per_node = CONVERGE_MEMBERS / 4;
        for (node, scope) in nodes.iter().zip(&groups) {
            let pids: Vec<_> = (0..per_node).map(|_| node.runtime().spawn(Idle).pid()).collect();
            scope.join_many("big", &pids)?;
        }
        // The four see each other's members first.
        let deadline = Instant::now() + SETTLE;
        while !groups.iter().all(|scope| scope.members("big").len() == CONVERGE_MEMBERS) {
            if Instant::now() > deadline {
                bail!("the four did not converge within {SETTLE:?}");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let started = Instant::now();
        let restarted = Groups::start(&nodes[4], GroupsConfig::default()).await?;
        while restarted.members("big").len() < CONVERGE_MEMBERS {
            if Instant::now() > started + SETTLE {
                bail!("the restarted node did not converge within {SETTLE:?}");
            }
            tokio::task::yield_now().await;
        }
        let elapsed = started.elapsed();
        for node in &nodes {
            node.shutdown();
        }
        Ok(elapsed.as_secs_f64() * 1e3)
    })
}
