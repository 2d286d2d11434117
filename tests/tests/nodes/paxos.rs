//! The Paxos driver on whole simulated nodes: a register written and read from every node
//! stays linearisable under seeded schedules of random faults.

use std::net::IpAddr;
use std::time::Duration;

use shoal_sim::SimNet;
use shoal_transport::Node;
use tokio::time::Instant;

use crate::support::{BOUND, ip, on, run_schedules};

// ---------------------------------------------------------------------------------------------
// The Paxos driver under random faults: a register written and read from every node while
// nodes are partitioned, crashed (their acceptor's state lost) and restarted, checked for
// linearisability.

/// Paxos schedules run per test run; `SHOAL_SIM_PAXOS_SCHEDULES` runs more.
const PAXOS_SCHEDULES: u64 = 500;

/// A register of bytes: `Some(v)` writes `v`, `None` reads.
struct Register;

impl shoal_sim::linearizability::Model for Register {
    type State = Option<Vec<u8>>;
    type Op = Option<Vec<u8>>;
    type Ret = Option<Vec<u8>>;

    fn init(&self) -> Self::State {
        None
    }

    fn step(
        &self,
        state: &Self::State,
        op: &Self::Op,
        ret: Option<&Self::Ret>,
    ) -> Option<Self::State> {
        match op {
            Some(value) => Some(Some(value.clone())),
            None => ret.is_none_or(|read| read == state).then(|| state.clone()),
        }
    }
}

type History = Vec<shoal_sim::linearizability::Operation<Option<Vec<u8>>, Option<Vec<u8>>>>;

/// One life of a Paxos node: the node (its wall clock simulated, so run ids and epochs are
/// the seed's) and its service.
async fn paxos_life(net: &SimNet, host: u8, life: u64, seed: u64) -> (Node, shoal_paxos::Paxos) {
    let name = format!("p{host}");
    let clock = shoal_process::Clock::simulated(1.0, 1_000_000_000 * (life + 1))
        .expect("a rate within bounds");
    let runtime = shoal_process::Runtime::builder()
        .node_name(name.as_str())
        .clock(clock)
        .incarnation(u64::from(host) * 1_000 + life)
        .build()
        .expect("a runtime");
    let node = on(net, &name, host + 1).runtime(runtime).seed(seed).start().await.unwrap();
    let acceptors = (0..3).map(|host| format!("p{host}")).collect();
    let config = shoal_paxos::PaxosConfig {
        seed,
        round_timeout: Duration::from_millis(50),
        // A fresh cluster's acceptors, all without state, found the first epoch themselves;
        // one restarted without its state rejoins from the two that kept theirs.
        recovery: shoal_paxos::Recovery::NewEpoch,
        ..shoal_paxos::PaxosConfig::new(acceptors)
    };
    let paxos = shoal_paxos::Paxos::start(&node, config).await.expect("Paxos starts");
    (node, paxos)
}

async fn run_paxos_schedule(seed: u64) -> Result<(), String> {
    use rand::rngs::SmallRng;
    use rand::{RngExt, SeedableRng};

    let mut rng = SmallRng::seed_from_u64(seed);
    let net = SimNet::new(seed, Duration::from_millis(1), Duration::from_millis(10));
    let mut lives = Vec::new();
    for host in 0..3 {
        lives.push(paxos_life(&net, host, 0, seed).await);
    }
    for (node, _) in &lives[1..] {
        node.join(lives[0].0.listen_addr()).await.map_err(|error| error.to_string())?;
    }
    let started = Instant::now();
    while !lives.iter().all(|(_, paxos)| paxos.is_voting()) {
        if started.elapsed() > BOUND {
            return Err("the acceptors never all voted".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let history = std::sync::Arc::new(std::sync::Mutex::new(History::new()));
    let ips: Vec<IpAddr> = (0..3).map(|host| ip(host + 1)).collect();
    let mut generation = [0u64; 3];
    for round in 0..6u64 {
        // Clients on every live node: a write of a value of their own, then a read.
        let mut clients = Vec::new();
        for (host, (_, paxos)) in lives.iter().enumerate() {
            let (paxos, history) = (paxos.clone(), history.clone());
            let value = format!("{round}.{host}").into_bytes();
            clients.push(tokio::spawn(async move {
                for op in [Some(value), None] {
                    let call = Instant::now().into_std();
                    let outcome = match &op {
                        Some(value) => paxos.put("k", value.clone()).await.map(|_| None),
                        None => paxos.get("k").await.map(|entry| entry.map(|entry| entry.data)),
                    };
                    let response = match outcome {
                        Ok(read) => Some((Instant::now().into_std(), read)),
                        Err(error) if error.maybe_applied() => None,
                        Err(_) => continue,
                    };
                    let done = response.is_some();
                    history.lock().unwrap().push(shoal_sim::linearizability::Operation {
                        op,
                        call,
                        response,
                    });
                    if !done {
                        break;
                    }
                }
            }));
        }
        // A fault while they run.
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        match rng.random_range(0..3) {
            0 => {
                let alone = rng.random_range(0..ips.len());
                let rest: Vec<IpAddr> =
                    ips.iter().copied().filter(|ip| *ip != ips[alone]).collect();
                net.partition(&[ips[alone]], &rest);
            }
            1 => {
                let host = rng.random_range(0..3);
                let (node, paxos) = &lives[host];
                paxos.stop().await;
                node.shutdown();
                net.reset(ips[host]);
                generation[host] += 1;
                let fresh = paxos_life(&net, host as u8, generation[host], seed).await;
                let contact = lives[(host + 1) % 3].0.listen_addr();
                let joining = fresh.0.clone();
                tokio::spawn(async move {
                    while joining.join(contact).await.is_err() {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                });
                lives[host] = fresh;
            }
            _ => net.heal(),
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..1_500))).await;
        for client in clients {
            client.await.map_err(|error| error.to_string())?;
        }
        net.heal();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let history = history.lock().unwrap().clone();
    let answered = history.iter().filter(|operation| operation.response.is_some()).count();
    if answered == 0 {
        return Err("no operation completed".into());
    }
    if std::env::var("SHOAL_SIM_VERBOSE").is_ok() {
        let writes = history.iter().filter(|operation| operation.op.is_some()).count();
        eprintln!(
            "seed {seed}: {} operations, {answered} answered, {writes} writes",
            history.len()
        );
    }
    shoal_sim::linearizability::check(&Register, &history)
        .map_err(|error| format!("not linearisable: {error:?}\n{history:#?}"))?;
    for (node, paxos) in lives {
        paxos.stop().await;
        node.shutdown();
    }
    Ok(())
}

/// Under seeded schedules of partitions that isolate one node, crashes that lose an
/// acceptor's state, restarts and heals, a Paxos register written and read from every node
/// stays linearisable. A failure prints its seed, and the command that replays it.
#[test]
fn a_paxos_register_stays_linearisable_under_random_faults() {
    run_schedules(
        "SHOAL_SIM_PAXOS_SCHEDULES",
        PAXOS_SCHEDULES,
        "a_paxos_register",
        run_paxos_schedule,
    );
}
