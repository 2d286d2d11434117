//! The Paxos driver on whole simulated nodes, under seeded schedules of random faults: a
//! register written and read from every node stays linearisable; and the cluster test's
//! counter, incremented from every node by compare-and-set while nodes crash and restart with
//! their file-backed acceptors, the Paxos service restarts alone and the network partitions,
//! stays linearisable, counts every acknowledged increment once, and answers every request
//! before its deadline while a majority is reachable.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_paxos::{Entry, Paxos, PaxosConfig, StorageConfig};

use shoal_sim::SimNet;
use shoal_transport::Node;
use tokio::time::Instant;

use crate::support::{BOUND, ip, on, run_schedules};

// ---------------------------------------------------------------------------------------------
// The Paxos driver under random faults: a register written and read from every node while
// nodes are partitioned, crashed (their acceptor's state lost) and restarted, checked for
// linearisability.

/// Paxos schedules run per test run; `SHOAL_SIM_PAXOS_SCHEDULES` runs more.
const PAXOS_SCHEDULES: u64 = 250;

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

/// The service's configuration in these schedules: acceptors `p0`, `p1`, `p2`, rounds of
/// 50 ms, and a fresh cluster that founds its first epoch itself.
fn paxos_config(seed: u64) -> PaxosConfig {
    let acceptors = (0..3).map(|host| format!("p{host}")).collect();
    PaxosConfig {
        seed,
        round_timeout: Duration::from_millis(50),
        // A fresh cluster's acceptors, all without state, found the first epoch themselves;
        // one restarted without its state rejoins from the two that kept theirs.
        recovery: shoal_paxos::Recovery::NewEpoch,
        ..PaxosConfig::new(acceptors)
    }
}

/// One life of a Paxos node: the node (its wall clock simulated, so run ids and epochs are
/// the seed's) and its service, with in-memory acceptors.
async fn paxos_life(net: &SimNet, host: u8, life: u64, seed: u64) -> (Node, shoal_paxos::Paxos) {
    paxos_life_with(net, host, life, seed, paxos_config(seed)).await
}

/// One life of a Paxos node with the service configured by `config`.
async fn paxos_life_with(
    net: &SimNet,
    host: u8,
    life: u64,
    seed: u64,
    config: PaxosConfig,
) -> (Node, shoal_paxos::Paxos) {
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

// ---------------------------------------------------------------------------------------------
// The cluster test's counter on whole simulated nodes: every node's writer increments one
// counter by compare-and-set, each increment carrying (writer, sequence) so that a retry is
// applied once, while the schedule crashes nodes (their memory lost, their file-backed
// acceptors kept and reopened), restarts the Paxos service alone on a live node, and cuts,
// partitions and makes lossy the network.

/// Counter schedules run per test run; `SHOAL_SIM_PAXOS_COUNTER_SCHEDULES` runs more.
const COUNTER_SCHEDULES: u64 = 250;

/// The register the writers increment.
const COUNTER_KEY: &str = "counter";

/// How long a pair of nodes must have reached each other (both services running, no cut or
/// lossy way between them) before it counts as connected: the transport's failure detection
/// (1 s), its reconnection backoff (up to 500 ms) and a rejoin, with room to spare.
const SETTLE: Duration = Duration::from_secs(3);

/// Compare-and-sets one increment makes before its writer tries it again from a fresh read.
const MAX_ATTEMPTS: usize = 8;

/// Faults per schedule (each followed by a heal).
const PHASES: usize = 3;

/// A counter's value: its count, and per writer the last sequence number applied
/// (`COUNT;WRITER=SEQ,...`), as the cluster test's `counter incr` keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Counter {
    count: u64,
    applied: BTreeMap<u8, u64>,
}

impl Counter {
    fn decode(data: Option<&[u8]>) -> Counter {
        let Some(data) = data else { return Counter::default() };
        let text = std::str::from_utf8(data).expect("a counter is text");
        let (count, writers) = text.split_once(';').expect("COUNT;WRITERS");
        let applied = writers
            .split(',')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (writer, seq) = pair.split_once('=').expect("WRITER=SEQ");
                (writer.parse().expect("a writer"), seq.parse().expect("a sequence number"))
            })
            .collect();
        Counter { count: count.parse().expect("a count"), applied }
    }

    fn encode(&self) -> Vec<u8> {
        let writers: Vec<String> =
            self.applied.iter().map(|(writer, seq)| format!("{writer}={seq}")).collect();
        format!("{};{}", self.count, writers.join(",")).into_bytes()
    }

    /// The counter after `writer`'s increment `seq`, or `None` if it is already in.
    fn increment(&self, writer: u8, seq: u64) -> Option<Counter> {
        let last = self.applied.get(&writer).copied().unwrap_or(0);
        if seq <= last {
            return None;
        }
        assert_eq!(seq, last + 1, "writer {writer}'s increments come in order");
        let mut next = self.clone();
        next.count += 1;
        next.applied.insert(writer, seq);
        Some(next)
    }
}

/// What a client asks of the counter's register.
#[derive(Clone, Debug)]
enum RegisterOp {
    Read,
    CompareAndSet { expected: Option<Vec<u8>>, new: Vec<u8> },
}

/// What it answers: the value read, or whether the compare-and-set applied.
#[derive(Clone, Debug, PartialEq, Eq)]
enum RegisterAnswer {
    Read(Option<Vec<u8>>),
    Applied(bool),
}

/// A register of bytes changed by compare-and-set.
struct CasRegister;

impl shoal_sim::linearizability::Model for CasRegister {
    type State = Option<Vec<u8>>;
    type Op = RegisterOp;
    type Ret = RegisterAnswer;

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
            RegisterOp::Read => ret
                .is_none_or(|answer| *answer == RegisterAnswer::Read(state.clone()))
                .then(|| state.clone()),
            RegisterOp::CompareAndSet { expected, new } => {
                let applies = expected == state;
                if ret.is_some_and(|answer| *answer != RegisterAnswer::Applied(applies)) {
                    return None;
                }
                Some(if applies { Some(new.clone()) } else { state.clone() })
            }
        }
    }
}

/// One request to a node's service, as the deadline check sees it.
#[derive(Clone, Debug)]
struct Request {
    host: usize,
    call: Instant,
    done: Instant,
    outcome: String,
}

/// Which nodes reach which, over time: after every change, who reaches whom (both ways, both
/// services running, no cut or lossy way).
#[derive(Default)]
struct Reach {
    cut: BTreeSet<(usize, usize)>,
    down: BTreeSet<usize>,
    log: Vec<(Instant, [[bool; 3]; 3])>,
}

impl Reach {
    fn record(&mut self) {
        let mut matrix = [[false; 3]; 3];
        for (a, row) in matrix.iter_mut().enumerate() {
            for (b, reaches) in row.iter_mut().enumerate() {
                *reaches = !self.down.contains(&a)
                    && !self.down.contains(&b)
                    && !self.cut.contains(&(a, b))
                    && !self.cut.contains(&(b, a));
            }
        }
        self.log.push((Instant::now(), matrix));
    }

    /// Whether `a` and `b` reached each other all through `from..=to`.
    fn throughout(&self, a: usize, b: usize, from: Instant, to: Instant) -> bool {
        let Some(first) = self.log.iter().rposition(|(at, _)| *at <= from) else { return false };
        self.log[first..].iter().take_while(|(at, _)| *at <= to).all(|(_, m)| m[a][b])
    }

    /// Whether a majority of the acceptors (`host` and the settled peers it reaches) was
    /// reachable from `host` at every moment from `call` to `done`.
    fn majority_throughout(&self, host: usize, call: Instant, done: Instant) -> bool {
        let mut at = call;
        loop {
            let settled = (0..3)
                .filter(|&peer| peer != host)
                .filter(|&peer| self.throughout(host, peer, at - SETTLE, at))
                .count();
            if 1 + settled < 2 {
                return false;
            }
            if at >= done {
                return true;
            }
            at = (at + Duration::from_millis(10)).min(done);
        }
    }
}

/// What a counter schedule shares between its writers and its faults.
struct CounterSim {
    seed: u64,
    dir: PathBuf,
    net: SimNet,
    /// Each host's node and service; the service is `None` while it is down.
    lives: Mutex<Vec<(Node, Option<Paxos>)>>,
    history: Mutex<Vec<shoal_sim::linearizability::Operation<RegisterOp, RegisterAnswer>>>,
    requests: Mutex<Vec<Request>>,
    reach: Mutex<Reach>,
}

impl CounterSim {
    fn config(&self, host: usize) -> PaxosConfig {
        PaxosConfig {
            storage: StorageConfig::File(self.dir.join(format!("p{host}"))),
            ..paxos_config(self.seed)
        }
    }

    /// The service a writer of `home` uses: its own, or another running one.
    fn service_for(&self, home: usize) -> Option<(usize, Paxos)> {
        let lives = self.lives.lock().unwrap();
        let order = (0..3).map(|i| (home + i) % 3);
        order.filter_map(|host| Some((host, lives[host].1.clone()?))).next()
    }

    fn request(&self, host: usize, call: Instant, outcome: String) {
        let request = Request { host, call, done: Instant::now(), outcome };
        self.requests.lock().unwrap().push(request);
    }

    fn set_down(&self, host: usize, down: bool) {
        let mut reach = self.reach.lock().unwrap();
        if down {
            reach.down.insert(host);
        } else {
            reach.down.remove(&host);
        }
        reach.record();
    }

    /// A linearisable read of the counter's register (`Err`: it failed, and changed nothing).
    async fn read(&self, host: usize, paxos: &Paxos) -> Result<Option<Vec<u8>>, ()> {
        let call = Instant::now();
        let result = paxos.get(COUNTER_KEY).await;
        self.request(host, call, format!("{result:?}"));
        let read = result.map_err(drop)?.map(|entry| entry.data);
        let response = Some((Instant::now().into_std(), RegisterAnswer::Read(read.clone())));
        let operation = shoal_sim::linearizability::Operation {
            op: RegisterOp::Read,
            call: call.into_std(),
            response,
        };
        self.history.lock().unwrap().push(operation);
        Ok(read)
    }

    /// A compare-and-set of the register: whether it applied and what the key held before
    /// (`Err`: it failed, perhaps after taking effect).
    async fn compare_and_set(
        &self,
        host: usize,
        paxos: &Paxos,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> Result<(bool, Option<Vec<u8>>), ()> {
        let call = Instant::now();
        let result = paxos
            .compare_and_set(
                COUNTER_KEY,
                expected.clone().map(Entry::new),
                Some(Entry::new(new.clone())),
            )
            .await;
        self.request(host, call, format!("{:?}", result.as_ref().map(|o| o.applied)));
        let response = match &result {
            Ok(outcome) => {
                Some((Instant::now().into_std(), RegisterAnswer::Applied(outcome.applied)))
            }
            Err(error) if error.maybe_applied() => None,
            Err(_) => return Err(()),
        };
        let op = RegisterOp::CompareAndSet { expected, new };
        let operation =
            shoal_sim::linearizability::Operation { op, call: call.into_std(), response };
        self.history.lock().unwrap().push(operation);
        let outcome = result.map_err(drop)?;
        Ok((outcome.applied, outcome.before.entry.map(|entry| entry.data)))
    }

    /// `writer`'s increment `seq`, as the cluster test's nodes apply it: read, then
    /// compare-and-set from what was read, unless the increment is already in.
    async fn increment(&self, host: usize, paxos: &Paxos, writer: u8, seq: u64) -> Result<(), ()> {
        let mut current = self.read(host, paxos).await?;
        for _ in 0..MAX_ATTEMPTS {
            let counter = Counter::decode(current.as_deref());
            let Some(next) = counter.increment(writer, seq) else { return Ok(()) };
            let (applied, before) =
                self.compare_and_set(host, paxos, current.clone(), next.encode()).await?;
            if applied {
                return Ok(());
            }
            current = before;
        }
        Err(())
    }

    /// A writer: increments until `stop`, moving to its next sequence number only once one
    /// is acknowledged. Returns the last acknowledged number and whether one is unacknowledged.
    async fn writer(
        self: Arc<Self>,
        writer: u8,
        stop: Arc<AtomicBool>,
        pause_ms: u64,
    ) -> (u64, bool) {
        let (mut acknowledged, mut pending) = (0, false);
        while !stop.load(Ordering::Relaxed) {
            if let Some((host, paxos)) = self.service_for(usize::from(writer)) {
                pending = true;
                if self.increment(host, &paxos, writer, acknowledged + 1).await.is_ok() {
                    acknowledged += 1;
                    pending = false;
                }
            }
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        }
        (acknowledged, pending)
    }

    /// Crashes `host` (its node and service gone, its memory lost) and starts it again after
    /// `after`, reopening its acceptor's files.
    async fn crash_and_restart(&self, host: usize, life: u64, after: Duration) {
        let (node, paxos) = {
            let mut lives = self.lives.lock().unwrap();
            (lives[host].0.clone(), lives[host].1.take())
        };
        self.set_down(host, true);
        if let Some(paxos) = paxos {
            paxos.stop().await;
        }
        node.shutdown();
        self.net.reset(ip(host as u8 + 1));
        tokio::time::sleep(after).await;
        let (node, paxos) =
            paxos_life_with(&self.net, host as u8, life, self.seed, self.config(host)).await;
        let contact = self.lives.lock().unwrap()[(host + 1) % 3].0.listen_addr();
        let joining = node.clone();
        tokio::spawn(async move {
            while joining.join(contact).await.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        self.lives.lock().unwrap()[host] = (node, Some(paxos));
        self.set_down(host, false);
    }

    /// Stops the Paxos service of `host`, a live node, and starts it again on the same node
    /// after `after`.
    async fn restart_service(&self, host: usize, after: Duration) {
        let (node, paxos) = {
            let mut lives = self.lives.lock().unwrap();
            (lives[host].0.clone(), lives[host].1.take())
        };
        self.set_down(host, true);
        if let Some(paxos) = paxos {
            paxos.stop().await;
        }
        tokio::time::sleep(after).await;
        let paxos = Paxos::start(&node, self.config(host)).await.expect("the service starts again");
        self.lives.lock().unwrap()[host].1 = Some(paxos);
        self.set_down(host, false);
    }

    fn cut(&self, ways: &[(usize, usize)]) {
        let mut reach = self.reach.lock().unwrap();
        reach.cut.extend(ways.iter().copied());
        reach.record();
    }

    fn heal(&self) {
        self.net.heal();
        let mut reach = self.reach.lock().unwrap();
        reach.cut.clear();
        reach.record();
    }
}

async fn run_counter_schedule(seed: u64) -> Result<(), String> {
    let dir =
        std::env::temp_dir().join(format!("shoal-sim-paxos-counter-{}-{seed}", std::process::id()));
    let result = counter_schedule(seed, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn counter_schedule(seed: u64, dir: &Path) -> Result<(), String> {
    use rand::rngs::SmallRng;
    use rand::{RngExt, SeedableRng};

    let mut rng = SmallRng::seed_from_u64(seed);
    let net = SimNet::new(seed, Duration::from_millis(1), Duration::from_millis(10));
    let sim = Arc::new(CounterSim {
        seed,
        dir: dir.to_path_buf(),
        net: net.clone(),
        lives: Mutex::new(Vec::new()),
        history: Mutex::new(Vec::new()),
        requests: Mutex::new(Vec::new()),
        reach: Mutex::new(Reach::default()),
    });
    for host in 0..3 {
        let (node, paxos) = paxos_life_with(&net, host, 0, seed, sim.config(host.into())).await;
        sim.lives.lock().unwrap().push((node, Some(paxos)));
    }
    let nodes: Vec<Node> = sim.lives.lock().unwrap().iter().map(|(node, _)| node.clone()).collect();
    for node in &nodes[1..] {
        node.join(nodes[0].listen_addr()).await.map_err(|error| error.to_string())?;
    }
    let started = Instant::now();
    let services: Vec<Paxos> =
        sim.lives.lock().unwrap().iter().filter_map(|(_, paxos)| paxos.clone()).collect();
    while !services.iter().all(Paxos::is_voting) {
        if started.elapsed() > BOUND {
            return Err("the acceptors never all voted".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The cluster is formed: who reaches whom counts from here.
    sim.reach.lock().unwrap().record();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3u8)
        .map(|writer| {
            // Paced, so that a schedule's history stays short enough for 500 schedules in
            // about 90 s of wall clock.
            let pause_ms = rng.random_range(300..800);
            tokio::spawn(sim.clone().writer(writer, stop.clone(), pause_ms))
        })
        .collect();
    let mut lives = [0u64; 3];
    for _ in 0..PHASES {
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..500))).await;
        let (a, b) = (rng.random_range(0..3usize), rng.random_range(1..3usize));
        let b = (a + b) % 3;
        let (ip_a, ip_b) = (ip(a as u8 + 1), ip(b as u8 + 1));
        let others: Vec<usize> = (0..3).filter(|&host| host != a).collect();
        let fault = rng.random_range(0..6);
        if std::env::var("SHOAL_SIM_VERBOSE").is_ok() {
            eprintln!("{:?}: fault {fault} on p{a} (and p{b})", Instant::now());
        }
        match fault {
            0 => {
                let rest: Vec<IpAddr> = others.iter().map(|&host| ip(host as u8 + 1)).collect();
                net.partition(&[ip_a], &rest);
                sim.cut(&others.iter().flat_map(|&o| [(a, o), (o, a)]).collect::<Vec<_>>());
            }
            1 => {
                lives[a] += 1;
                let after = Duration::from_millis(rng.random_range(0..1_000));
                sim.crash_and_restart(a, lives[a], after).await;
            }
            2 => {
                let after = Duration::from_millis(rng.random_range(0..300));
                sim.restart_service(a, after).await;
            }
            3 => {
                net.cut(ip_a, ip_b);
                sim.cut(&[(a, b)]);
            }
            4 => {
                net.lose(ip_a, ip_b, 0.3);
                net.lose(ip_b, ip_a, 0.3);
                sim.cut(&[(a, b)]);
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1_500))).await;
        sim.heal();
        // A quiet spell, longer than `SETTLE` now and then: requests with every node
        // reachable, which must all answer in time.
        tokio::time::sleep(Duration::from_millis(rng.random_range(1_500..4_000))).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut tallies = Vec::new();
    for writer in writers {
        tallies.push(writer.await.map_err(|error| error.to_string())?);
    }
    let count = final_count(&sim).await?;
    let result = check_counter(&sim, &tallies, &count);
    let lives: Vec<(Node, Option<Paxos>)> = std::mem::take(&mut *sim.lives.lock().unwrap());
    for (node, paxos) in lives {
        if let Some(paxos) = paxos {
            paxos.stop().await;
        }
        node.shutdown();
    }
    result
}

/// The counter as a read from a running service gives it, once the network has healed.
async fn final_count(sim: &CounterSim) -> Result<Counter, String> {
    let started = Instant::now();
    loop {
        if let Some((host, paxos)) = sim.service_for(0)
            && let Ok(read) = sim.read(host, &paxos).await
        {
            return Ok(Counter::decode(read.as_deref()));
        }
        if started.elapsed() > BOUND {
            return Err("the counter could not be read after the faults healed".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The schedule's checks: the history is linearisable, the counter holds every acknowledged
/// increment once and at most each writer's one unacknowledged increment more, and every
/// request made while a majority was reachable answered before its deadline.
fn check_counter(
    sim: &CounterSim,
    tallies: &[(u64, bool)],
    counter: &Counter,
) -> Result<(), String> {
    let history = sim.history.lock().unwrap().clone();
    shoal_sim::linearizability::check(&CasRegister, &history)
        .map_err(|error| format!("not linearisable: {error:?}\n{history:#?}"))?;
    let acknowledged: u64 = tallies.iter().map(|(acknowledged, _)| acknowledged).sum();
    if acknowledged == 0 {
        return Err("no increment was acknowledged".into());
    }
    for (writer, &(acknowledged, pending)) in tallies.iter().enumerate() {
        let applied = counter.applied.get(&(writer as u8)).copied().unwrap_or(0);
        if applied < acknowledged || applied > acknowledged + u64::from(pending) {
            return Err(format!(
                "writer {writer}: {acknowledged} increments acknowledged (one more pending: \
                 {pending}), {applied} applied: {counter:?}"
            ));
        }
    }
    let pending = tallies.iter().filter(|(_, pending)| *pending).count() as u64;
    if counter.count < acknowledged || counter.count > acknowledged + pending {
        return Err(format!(
            "the count is {}, with {acknowledged} increments acknowledged and {pending} pending",
            counter.count
        ));
    }
    let deadline = PaxosConfig::new(Vec::new()).request_timeout;
    let requests = sim.requests.lock().unwrap().clone();
    let reach = sim.reach.lock().unwrap();
    let covered: Vec<&Request> = requests
        .iter()
        .filter(|request| reach.majority_throughout(request.host, request.call, request.done))
        .collect();
    if std::env::var("SHOAL_SIM_VERBOSE").is_ok() {
        for request in requests.iter().filter(|r| r.done - r.call > Duration::from_millis(500)) {
            eprintln!("slow: {request:?}");
        }
    }
    if let Some(late) = covered.iter().find(|request| request.done - request.call >= deadline) {
        return Err(format!(
            "a request on p{} waited out its whole deadline ({:?}) while a majority was \
             reachable, answered {}",
            late.host,
            late.done - late.call,
            late.outcome
        ));
    }
    if std::env::var("SHOAL_SIM_VERBOSE").is_ok() {
        eprintln!(
            "seed {}: count {}, {acknowledged} acknowledged, {} operations, {} requests of \
             which {} with a majority reachable",
            sim.seed,
            counter.count,
            history.len(),
            requests.len(),
            covered.len()
        );
    }
    Ok(())
}

/// The cluster test's counter on whole nodes (issue 14, point 5): three writers, one per
/// node, increment a counter by compare-and-set (each increment carries its writer and
/// sequence number, so a retry applies once) while the schedule crashes a node and restarts
/// it on its acceptor's files, restarts the Paxos service alone on a live node, partitions
/// a node away, cuts one way, or makes a link lossy, then heals. Checked: the register's
/// history is linearisable; the count holds every acknowledged increment and at most one
/// unacknowledged one per writer; and no request waits out its whole deadline while a
/// majority of the acceptors is reachable from its node (reachable for `SETTLE` before and
/// all through it). A failure prints its seed and the command that replays it.
#[test]
fn a_paxos_counter_survives_crashes_restarts_and_partitions() {
    run_schedules(
        "SHOAL_SIM_PAXOS_COUNTER_SCHEDULES",
        COUNTER_SCHEDULES,
        "a_paxos_counter",
        run_counter_schedule,
    );
}
