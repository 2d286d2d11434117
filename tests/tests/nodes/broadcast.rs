//! The broadcast driver on whole simulated nodes: seeded schedules of partitions, one-way cuts,
//! lossy links, heals, crashes and restarts while nodes broadcast, in both membership modes
//! (even seeds a full mesh, odd seeds managed connections), after which every live node holds
//! every broadcast (the tree's, or anti-entropy's).
//!
//! **Bounds.** Five nodes, so no node's active view (5 by default) is ever full, and every
//! fault lasts at most the schedule (eight steps of at most 2 s), within the driver's
//! `forget_lost_after` (300 s). Saturated halves and partitions longer than that are covered
//! by the broadcast crate's own healing tests (`crates/broadcast/tests/broadcast/healing.rs`),
//! in the deterministic simulation of the cores.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use shoal_broadcast::{Broadcast, Log, Topic};
use shoal_sim::SimNet;
use shoal_transport::{Membership, Node};
use tokio::time::Instant;

use crate::support::{broadcast_config as config, ip, random_partition, random_way, run_schedules};

/// Schedules run per test run; `SHOAL_SIM_BROADCAST_SCHEDULES` runs more (exploration).
const SCHEDULES: u64 = 250;

/// The nodes of a schedule: `n0` is everyone's contact and never crashes; the others may.
const NODES: u8 = 5;

/// The topic every node registers a [`Log`] for.
const TOPIC: Topic<String> = Topic::new("sim");

/// How long after the last heal every live node must hold every broadcast.
const DELIVERY_BOUND: Duration = Duration::from_secs(60);

/// One life of a node: the node, its driver and its log.
struct Life {
    node: Node,
    driver: Broadcast,
    log: Log<String>,
    /// The broadcasts this life sent that its driver took.
    sent: Vec<String>,
}

/// Starts node `n{host}`'s `life`-th life (its incarnation grows with it) with its driver and
/// log, and joins it through `contact` (if any) in the background, retrying until the network
/// lets it: through the transport over a full mesh, through the driver when managed.
async fn start_life(
    net: &SimNet,
    membership: &Membership,
    host: u8,
    life: u64,
    seed: u64,
    contact: Option<SocketAddr>,
) -> Life {
    let node = crate::support::life(net, host, life)
        .seed(seed)
        .gossip_interval(Duration::from_millis(200))
        .membership(membership.clone())
        .start()
        .await
        .expect("the node starts");
    let driver = Broadcast::start(&node, config(seed)).await.expect("the driver starts");
    let log = Log::new(&node, 10_000);
    driver.register(TOPIC, log.clone()).await.expect("registers");
    if let Some(contact) = contact {
        let (node, driver, managed) =
            (node.clone(), driver.clone(), *membership == Membership::Managed);
        tokio::spawn(async move {
            loop {
                let joined = if managed {
                    driver.join(contact).await.is_ok()
                } else {
                    node.join(contact).await.is_ok()
                };
                if joined || node.is_stopped() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
    Life { node, driver, log, sent: Vec::new() }
}

/// What each live node lacks of what it should hold, or `None` when every one holds it all.
fn missing(lives: &[Life], expected: &BTreeSet<String>) -> Option<Vec<String>> {
    let lacking: Vec<String> = lives
        .iter()
        .filter_map(|life| {
            let held: BTreeSet<String> =
                life.log.messages().into_iter().map(|(_, text)| text).collect();
            let lacks: Vec<&String> = expected.difference(&held).collect();
            (!lacks.is_empty()).then(|| format!("{} lacks {lacks:?}", life.node.name()))
        })
        .collect();
    (!lacking.is_empty()).then_some(lacking)
}

/// What went wrong in a schedule, if anything.
async fn run_schedule(seed: u64) -> Result<(), String> {
    use rand::rngs::SmallRng;
    use rand::{RngExt, SeedableRng};

    let membership =
        if seed.is_multiple_of(2) { Membership::FullMesh } else { Membership::Managed };
    let mut rng = SmallRng::seed_from_u64(seed);
    let net = SimNet::new(seed, Duration::from_millis(1), Duration::from_millis(20));
    let mut lives: Vec<Life> = Vec::new();
    let mut generation = vec![0u64; usize::from(NODES)];
    let first = start_life(&net, &membership, 0, 0, seed, None).await;
    let contact = first.node.listen_addr();
    lives.push(first);
    for host in 1..NODES {
        lives.push(start_life(&net, &membership, host, 0, seed, Some(contact)).await);
    }
    // Broadcasts that went nowhere with a crashed sender are nobody's to deliver.
    let mut lost_with_a_crash: Vec<String> = Vec::new();

    let ips: Vec<IpAddr> = (0..NODES).map(|host| ip(host + 1)).collect();
    let mut count = 0;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..2_000))).await;
        for _ in 0..rng.random_range(1..3) {
            let from = rng.random_range(0..lives.len());
            let text = format!("b{count} from n{from}");
            count += 1;
            if lives[from].driver.broadcast(TOPIC, text.clone()).await.is_ok() {
                lives[from].sent.push(text);
            }
        }
        match rng.random_range(0..5) {
            0 => {
                random_partition(&net, &ips, &mut rng);
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
                let old = &mut lives[usize::from(host)];
                old.node.shutdown();
                net.reset(ips[usize::from(host)]);
                lost_with_a_crash.append(&mut old.sent);
                tokio::time::sleep(Duration::from_millis(rng.random_range(100..2_000))).await;
                generation[usize::from(host)] += 1;
                let life = generation[usize::from(host)];
                lives[usize::from(host)] =
                    start_life(&net, &membership, host, life, seed, Some(contact)).await;
            }
        }
    }
    net.heal();

    // Every live node ends with every broadcast of a live sender, and with anything any live
    // node holds (a crashed sender's broadcast that got out).
    let healed = Instant::now();
    if lives.iter().all(|life| life.sent.is_empty()) {
        return Err("no live node sent a broadcast: nothing was tested".to_owned());
    }
    let mut expected: BTreeSet<String> = lives.iter().flat_map(|life| life.sent.clone()).collect();
    for life in &lives {
        expected.extend(life.log.messages().into_iter().map(|(_, text)| text));
    }
    while let Some(lacking) = missing(&lives, &expected) {
        if healed.elapsed() > DELIVERY_BOUND {
            let mut report = Vec::new();
            for life in &lives {
                let views = life.driver.views().await.unwrap_or_default();
                let active: Vec<&str> = views.active.iter().map(|c| c.name.as_str()).collect();
                let passive: Vec<&str> = views.passive.iter().map(|c| c.name.as_str()).collect();
                report.push(format!(
                    "{}: connected {:?}, active {active:?}, passive {passive:?}",
                    life.node.name(),
                    life.node.nodes()
                ));
            }
            return Err(format!(
                "{membership:?}: not every broadcast everywhere {DELIVERY_BOUND:?} after the \
                 heal: {lacking:?}\n{}\n(sent by crashed lives: {lost_with_a_crash:?})",
                report.join("\n")
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for life in lives {
        life.node.shutdown();
    }
    Ok(())
}

/// Under seeded schedules of partitions, one-way cuts, lossy links, heals, crashes and
/// restarts (a restarted node listens on a new port), with broadcasts from every node in
/// between, every live node ends with every broadcast once the network heals, in both
/// membership modes: the tree's repairs, the overlay policy's retries and rejoins, and
/// anti-entropy together. A failure prints its seed and the command that replays it.
#[test]
fn every_live_node_gets_every_broadcast_after_random_faults() {
    run_schedules(
        "SHOAL_SIM_BROADCAST_SCHEDULES",
        SCHEDULES,
        "every_live_node_gets_every_broadcast",
        run_schedule,
    );
}
