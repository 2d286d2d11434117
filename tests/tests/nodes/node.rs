//! The facade's `shoal::Node` on whole simulated nodes, under seeded schedules of faults: five
//! nodes join a founder one after another, through random nodes already up, while links lose
//! messages, the network splits in two for a while and a node crashes and restarts; the Paxos
//! acceptor set grows to its target meanwhile.
//!
//! Checked, for every schedule:
//! 1. **One set per version**: no two nodes ever run different acceptor sets under one
//!    configuration version (sampled every 25 ms of simulated time on every live node).
//! 2. **One acceptor at a time**: each version's set differs from the one before by one
//!    acceptor added, and none is removed.
//! 3. **Growth**: once the faults heal, every live node runs the same set of three.
//! 4. **No acknowledged write lost**: every write a node acknowledged while the set grew reads
//!    back afterwards.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use shoal::Node;
use shoal::node::NodeBuilder;
use shoal_sim::SimNet;
use tokio::time::Instant;

use crate::support::{ip, key, run_schedules};

/// Schedules run per test run; `SHOAL_SIM_NODE_SCHEDULES` runs more.
const SCHEDULES: u64 = 60;

/// Nodes in every schedule: `f0` founds, the others join.
const NODES: u8 = 5;

/// The acceptor set's target.
const TARGET: usize = 3;

/// How long the schedule's faults last, in simulated time, before they heal.
const FAULTS_FOR: Duration = Duration::from_secs(8);

/// How long after the heal the set must have grown and every node agree.
const SETTLE: Duration = Duration::from_secs(60);

/// Node `f{host}` at `10.0.0.{host + 1}` in its `life`-th start, listening on `port` (0: any;
/// a restart takes its old port back, as a configured service does), joining `seed` if any; with
/// `data`, its acceptor's votes are kept in `data/f{host}` across its restarts (the node that
/// crashes: a restarted acceptor that lost its votes while the set grows can leave a majority
/// without state, which only an operator's new epoch ends, by design). The others keep theirs
/// in memory, which is quicker to simulate.
fn node(
    net: &SimNet,
    data: Option<&Path>,
    (host, life, port): (u8, u64, u16),
    seed: u64,
    join: Option<SocketAddr>,
) -> NodeBuilder {
    let name = format!("f{host}");
    let runtime = shoal_process::Runtime::builder()
        .node_name(name.as_str())
        .incarnation(u64::from(host) * 1_000 + life)
        .build()
        .expect("a runtime");
    let network = net.host(ip(host + 1));
    let builder = Node::builder(name.as_str())
        .key(key())
        .listen(SocketAddr::new(ip(host + 1), port))
        .join_timeout(Duration::from_secs(20))
        .transport(move |transport| {
            transport
                .network(network)
                .runtime(runtime)
                .seed(seed ^ u64::from(host))
                .heartbeat(Duration::from_millis(100), Duration::from_secs(1))
                .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
                .gossip_interval(Duration::from_millis(200))
        });
    let builder = match data {
        Some(data) => builder.data_dir(data.join(&name)),
        None => builder,
    };
    match join {
        Some(seed) => builder.join(seed),
        None => builder,
    }
}

/// Every acceptor set seen, by configuration version, with a node that ran it.
#[derive(Default)]
struct Seen {
    sets: BTreeMap<u64, (Vec<String>, String)>,
    problems: Vec<String>,
}

impl Seen {
    fn record(&mut self, node: &str, version: u64, mut set: Vec<String>) {
        set.sort();
        match self.sets.get(&version) {
            Some((known, by)) if *known != set => self.problems.push(format!(
                "version {version}: {by} runs {known:?}, {node} runs {set:?} (check 1)"
            )),
            Some(_) => {}
            None => {
                self.sets.insert(version, (set, node.to_owned()));
            }
        }
    }
}

/// Samples every live node's acceptor set until `done`.
async fn sample(
    nodes: Arc<Mutex<Vec<Option<Node>>>>,
    seen: Arc<Mutex<Seen>>,
    done: Arc<AtomicBool>,
) {
    while !done.load(Ordering::Relaxed) {
        let live: Vec<Node> = nodes.lock().expect("nodes").iter().flatten().cloned().collect();
        for node in live {
            let Ok(paxos) = node.paxos() else { continue };
            if let Ok((version, set)) = paxos.acceptors().await {
                seen.lock().expect("seen").record(node.name(), version, set);
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn schedule(seed: u64) -> Result<(), String> {
    let data = std::env::temp_dir().join(format!("shoal-sim-node-{}-{seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let result = run(seed, &data).await;
    let _ = std::fs::remove_dir_all(&data);
    result
}

async fn run(seed: u64, data: &Path) -> Result<(), String> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let net = SimNet::new(seed, Duration::from_millis(1), Duration::from_millis(8));
    let ips: Vec<_> = (0..NODES).map(|host| ip(host + 1)).collect();
    let nodes: Arc<Mutex<Vec<Option<Node>>>> = Arc::new(Mutex::new(vec![None; NODES.into()]));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let started = Instant::now();
    let faults_end = started + FAULTS_FOR;
    let done = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample(nodes.clone(), seen.clone(), done.clone()));

    let founder =
        node(&net, None, (0, 0, 0), seed, None).start().await.map_err(|e| e.to_string())?;
    let mut addrs = vec![founder.listen_addr()];
    nodes.lock().expect("nodes")[0] = Some(founder);

    // Faults, drawn now, applied as the joins go: lossy links, a split in two for a while.
    let lossy: Vec<(usize, usize)> = (0..rng.random_range(0..4))
        .filter_map(|_| crate::support::random_way(&mut rng, NODES.into()))
        .collect();
    for &(from, to) in &lossy {
        net.lose(ips[from], ips[to], 0.2);
    }
    // Every fault heals at `faults_end`, whatever the joins are doing (one may be waiting on
    // a node cut off).
    let healer = {
        let net = net.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(faults_end).await;
            net.heal();
        })
    };
    let split_at = Duration::from_millis(rng.random_range(500..4_000));
    let crashed = rng.random_range(1..NODES);
    let crash_at = Duration::from_millis(rng.random_range(500..5_000));

    // Writes from the founder, one every 100 ms while the set grows: each acknowledged one
    // must read back at the end.
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (nodes, acknowledged) = (nodes.clone(), acknowledged.clone());
        tokio::spawn(async move {
            for n in 0..60u32 {
                let founder = nodes.lock().expect("nodes")[0].clone();
                let Some(founder) = founder else { return };
                let key = format!("w{n}");
                if let Ok(paxos) = founder.paxos()
                    && paxos.put(key.as_str(), n.to_be_bytes().to_vec()).await.is_ok()
                {
                    acknowledged.lock().expect("acks").push((key, n));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let mut split_done = false;
    let mut crash_done = false;
    for host in 1..NODES {
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..1_500))).await;
        let through = addrs[rng.random_range(0..addrs.len())];
        let joined =
            node(&net, (host == crashed).then_some(data), (host, 0, 0), seed, Some(through))
                .start()
                .await;
        let joined = joined.map_err(|e| format!("f{host} did not start: {e}"))?;
        addrs.push(joined.listen_addr());
        nodes.lock().expect("nodes")[usize::from(host)] = Some(joined);
        // The split is made only while the faults are in force: joins slowed by the lossy
        // ways can bring this point past `faults_end`, and a cut made after the heal would
        // never heal (nodes would stay apart through checks 3 and 4). Each side may hold an
        // acceptor and a node to add: only consensus on the next step keeps them from growing
        // the set two ways.
        if !split_done && started.elapsed() >= split_at {
            if Instant::now() < faults_end {
                let mut order = ips.clone();
                for i in (1..order.len()).rev() {
                    order.swap(i, rng.random_range(0..=i));
                }
                let at = rng.random_range(1..order.len());
                net.partition(&order[..at], &order[at..]);
            }
            split_done = true;
        }
        if !crash_done && started.elapsed() >= crash_at && usize::from(crashed) < addrs.len() {
            let victim = nodes.lock().expect("nodes")[usize::from(crashed)].take();
            if let Some(victim) = victim {
                victim.abort().await;
                net.reset(ips[usize::from(crashed)]);
                // It comes back a little later, a new incarnation, through the founder.
                tokio::time::sleep(Duration::from_millis(rng.random_range(100..1_000))).await;
                let back = node(
                    &net,
                    Some(data),
                    (crashed, 1, addrs[usize::from(crashed)].port()),
                    seed,
                    Some(addrs[0]),
                )
                .start()
                .await;
                let back = back.map_err(|e| format!("f{crashed} did not restart: {e}"))?;
                addrs[usize::from(crashed)] = back.listen_addr();
                nodes.lock().expect("nodes")[usize::from(crashed)] = Some(back);
            }
            crash_done = true;
        }
    }
    healer.await.map_err(|e| e.to_string())?;
    writer.await.map_err(|e| e.to_string())?;

    // Check 3: growth, and every node agreeing.
    let mut problems = Vec::new();
    let settle_by = Instant::now() + SETTLE;
    loop {
        let live: Vec<Node> = nodes.lock().expect("nodes").iter().flatten().cloned().collect();
        let mut sets = Vec::new();
        for node in &live {
            let paxos = node.paxos().map_err(|e| e.to_string())?;
            sets.push(paxos.acceptors().await.map(|(version, mut set)| {
                set.sort();
                (version, set)
            }));
        }
        let agreed = sets.windows(2).all(|pair| pair[0] == pair[1]);
        if agreed && sets.first().is_some_and(|set| set.as_ref().is_ok_and(|s| s.1.len() == TARGET))
        {
            break;
        }
        if Instant::now() >= settle_by {
            problems.push(format!("{SETTLE:?} after the heal the nodes run {sets:?} (check 3)"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Check 4: every acknowledged write reads back (once the nodes agree).
    if problems.is_empty() {
        let reader = nodes.lock().expect("nodes")[usize::from(NODES) - 1].clone().ok_or("f4")?;
        let paxos = reader.paxos().map_err(|e| e.to_string())?;
        let acknowledged = acknowledged.lock().expect("acks").clone();
        for (key, n) in acknowledged {
            let read = paxos.get(key.as_str()).await.map_err(|e| format!("reading {key}: {e}"))?;
            if read.map(|entry| entry.data) != Some(n.to_be_bytes().to_vec()) {
                problems.push(format!("acknowledged write {key} = {n} is lost (check 4)"));
            }
        }
    }

    // Checks 1 and 2, over every set seen.
    done.store(true, Ordering::Relaxed);
    sampler.await.map_err(|e| e.to_string())?;
    {
        let seen = seen.lock().expect("seen");
        problems.extend(seen.problems.iter().cloned());
        let mut previous: Option<(u64, &Vec<String>)> = None;
        for (&version, (set, _)) in &seen.sets {
            // Only versions seen one after the other (a sample may miss one).
            if let Some((_, before)) = previous.filter(|(before, _)| before + 1 == version) {
                let added = set.iter().filter(|name| !before.contains(name)).count();
                let removed = before.iter().filter(|name| !set.contains(name)).count();
                if (added, removed) != (1, 0) {
                    problems.push(format!("version {version}: {before:?} to {set:?} (check 2)"));
                }
            }
            previous = Some((version, set));
        }
    }
    let live: Vec<Node> =
        nodes.lock().expect("nodes").iter_mut().filter_map(Option::take).collect();
    for node in live {
        node.abort().await;
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(problems.join("; ")),
    }
}

/// Checks 1–4 over [`SCHEDULES`] seeded schedules.
#[test]
fn the_acceptor_set_grows_safely_under_faults() {
    run_schedules("SHOAL_SIM_NODE_SCHEDULES", SCHEDULES, "the_acceptor_set_grows_safely", schedule);
}
