//! Process groups on whole simulated nodes: seeded schedules of partitions, one-way cuts,
//! lossy links, heals, crashes and restarts while processes join, leave and exit on every
//! node, after which every live node reports the same members for every group — the members
//! each live node holds itself — within a bound of the last heal; and during a partition, once
//! the sides see each other down, no node shows a member of a node it does not reach.
//!
//! **The bound.** A lost node is seen down within the transport's failure timeout (1 s here),
//! a healed link reconnects within its backoff (at most 500 ms), the whole state is exchanged
//! when nodes meet, and anything a lossy link lost is repaired by the next digest (every
//! 300 ms here): [`CONVERGE_BOUND`], 5 s, leaves room for each of those twice.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use shoal_process::{Context, Pid, Process};
use shoal_registry::{Groups, GroupsConfig};
use shoal_sim::SimNet;
use shoal_transport::Node;
use tokio::time::Instant;

use crate::support::{ip, random_partition, random_way, run_schedules};

/// Schedules run per test run; `SHOAL_SIM_GROUPS_SCHEDULES` runs more (exploration).
const SCHEDULES: u64 = 250;

/// The nodes of a schedule: `n0` is everyone's contact and never crashes; the others may.
const NODES: u8 = 4;

/// The groups members join.
const GROUPS: [&str; 3] = ["a", "b", "c"];

/// How long after the last heal every live node must report the same members (see the module
/// docs).
const CONVERGE_BOUND: Duration = Duration::from_secs(5);

/// A member: a process that does nothing until it is stopped.
struct Member;

impl Process for Member {
    type Message = ();
    type Call = ();
    type Reply = ();

    async fn handle_cast(&mut self, (): (), _ctx: &mut Context<Self>) {}
}

/// One life of a node: the node and its default scope of groups.
struct Life {
    node: Node,
    groups: Groups,
}

/// Starts node `n{host}`'s `life`-th life with the default scope of groups, joining it through
/// `contact` (if any) in the background until the network lets it.
async fn start_life(
    net: &SimNet,
    host: u8,
    life: u64,
    seed: u64,
    contact: Option<SocketAddr>,
) -> Life {
    let node = crate::support::start_node(net, host, life, seed).await;
    let config = GroupsConfig { sync_every: Duration::from_millis(300), ..GroupsConfig::default() };
    let groups = Groups::start(&node, config).await.expect("groups start");
    crate::support::join_in_background(&node, contact);
    Life { node, groups }
}

/// A random change of membership on a live node: a fresh process joins a group (sometimes
/// twice), a member leaves once, or a member exits.
fn churn(life: &Life, rng: &mut SmallRng) {
    let group = GROUPS[rng.random_range(0..GROUPS.len())];
    let local = life.groups.local_members(group);
    match rng.random_range(0..4) {
        0 | 1 => {
            let pid = life.node.runtime().spawn(Member).pid();
            life.groups.join(group, pid).expect("a live local process joins");
            if rng.random_bool(0.3) {
                life.groups.join(group, pid).expect("and joins again");
            }
        }
        2 if !local.is_empty() => {
            let pid = local[rng.random_range(0..local.len())];
            life.groups.leave(group, pid).expect("a member leaves");
        }
        3 if !local.is_empty() => {
            let pid = local[rng.random_range(0..local.len())];
            life.node.runtime().kill(pid);
        }
        _ => {}
    }
}

/// How long into a partition every node must show only the members of nodes it reaches: the
/// failure timeout (1 s), and as much again.
const PARTITION_SEEN: Duration = Duration::from_secs(2);

/// A node that shows a member of a node it is not connected to, if any.
fn beyond_reach(lives: &[Life]) -> Option<String> {
    lives.iter().find_map(|life| {
        let reached: Vec<shoal_process::NodeId> = std::iter::once(life.node.id())
            .chain(life.node.members().iter().map(|spec| spec.id()))
            .filter(|id| {
                *id == life.node.id()
                    || life
                        .node
                        .members()
                        .iter()
                        .any(|spec| spec.id() == *id && life.node.is_connected(&spec.name))
            })
            .collect();
        let stray: Vec<Pid> = life
            .groups
            .all()
            .into_values()
            .flatten()
            .filter(|pid| !reached.contains(&pid.node()))
            .collect();
        (!stray.is_empty())
            .then(|| format!("{} shows {stray:?} of nodes it does not reach", life.node.name()))
    })
}

/// What every node should report: each live node's own members (a process once per join).
fn truth(lives: &[Life]) -> BTreeMap<String, Vec<Pid>> {
    let mut members: BTreeMap<String, Vec<Pid>> = BTreeMap::new();
    for life in lives {
        for group in GROUPS {
            let local = life.groups.local_members(group);
            let live: Vec<Pid> =
                local.into_iter().filter(|pid| life.node.runtime().is_alive(*pid)).collect();
            if !live.is_empty() {
                members.entry(group.to_owned()).or_default().extend(live);
            }
        }
    }
    for pids in members.values_mut() {
        pids.sort();
    }
    members
}

/// The nodes whose report differs from `expected`, with what they report.
fn disagreeing(lives: &[Life], expected: &BTreeMap<String, Vec<Pid>>) -> Vec<String> {
    lives
        .iter()
        .filter_map(|life| {
            let seen = life.groups.all();
            (seen != *expected).then(|| format!("{}: {seen:?}", life.node.name()))
        })
        .collect()
}

async fn run_schedule(seed: u64) -> Result<(), String> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let net = SimNet::new(seed, Duration::from_millis(1), Duration::from_millis(20));
    let first = start_life(&net, 0, 0, seed, None).await;
    let contact = first.node.listen_addr();
    let mut lives = vec![first];
    for host in 1..NODES {
        lives.push(start_life(&net, host, 0, seed, Some(contact)).await);
    }
    let mut generation = vec![0u64; usize::from(NODES)];
    let ips: Vec<IpAddr> = (0..NODES).map(|host| ip(host + 1)).collect();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..1_500))).await;
        for _ in 0..rng.random_range(1..6) {
            let at = rng.random_range(0..lives.len());
            churn(&lives[at], &mut rng);
        }
        match rng.random_range(0..5) {
            0 => {
                random_partition(&net, &ips, &mut rng);
                // Once the sides see each other down, each shows only its own side's members.
                tokio::time::sleep(PARTITION_SEEN).await;
                if let Some(wrong) = beyond_reach(&lives) {
                    return Err(format!("{PARTITION_SEEN:?} into a partition: {wrong}"));
                }
            }
            1 => {
                if let Some((from, to)) = random_way(&mut rng, ips.len()) {
                    net.cut(ips[from], ips[to]);
                }
            }
            2 => net.heal(),
            3 => {
                if let Some((from, to)) = random_way(&mut rng, ips.len()) {
                    net.lose(ips[from], ips[to], 0.3);
                }
            }
            _ => {
                let host = rng.random_range(1..NODES);
                let at = usize::from(host);
                lives[at].node.shutdown();
                net.reset(ips[at]);
                tokio::time::sleep(Duration::from_millis(rng.random_range(100..1_500))).await;
                generation[at] += 1;
                lives[at] = start_life(&net, host, generation[at], seed, Some(contact)).await;
            }
        }
    }
    net.heal();
    // Membership keeps changing after the heal, as it would: a fresh member on every node,
    // and some churn.
    for (at, life) in lives.iter().enumerate() {
        let pid = life.node.runtime().spawn(Member).pid();
        life.groups.join(GROUPS[at % GROUPS.len()], pid).expect("a live local process joins");
    }
    for _ in 0..rng.random_range(0..4) {
        let at = rng.random_range(0..lives.len());
        churn(&lives[at], &mut rng);
    }
    let healed = Instant::now();
    loop {
        let expected = truth(&lives);
        let disagree = disagreeing(&lives, &expected);
        if disagree.is_empty() {
            break;
        }
        if healed.elapsed() > CONVERGE_BOUND {
            return Err(format!(
                "not the same members everywhere {CONVERGE_BOUND:?} after the heal: expected \
                 {expected:?}\n{}",
                disagree.join("\n")
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for life in lives {
        life.node.shutdown();
    }
    Ok(())
}

/// Under seeded schedules of partitions, one-way cuts, lossy links, heals, crashes and
/// restarts, with processes joining, leaving and exiting on every node in between, every live
/// node reports the same members (each live node's own) within the bound of the last heal.
#[test]
fn every_node_reports_the_same_members_after_random_faults() {
    run_schedules(
        "SHOAL_SIM_GROUPS_SCHEDULES",
        SCHEDULES,
        "every_node_reports_the_same_members",
        run_schedule,
    );
}
