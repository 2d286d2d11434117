//! The driver over real TCP: in-process nodes on 127.0.0.1 port 0, each running the Paxos
//! service. These check the glue (messages, timers, node events, storage, owned entries), not
//! the protocol, which the simulations check.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::Location;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_paxos::{
    Change, Entry, Holder, Paxos, PaxosConfig, PaxosError, QuorumEvent, ReconfigureError, Recovery,
    StorageConfig,
};
use shoal_process::{Context, ExitReason, Process, ReplyTo};
use shoal_transport::{ClusterKey, Direction, Fault, Node, NodeBuilder};
use tokio::sync::broadcast;

/// The cluster key every node in these tests holds (any valid key would do; a fixed one keeps
/// the tests' configuration in one place).
const KEY_HEX: &str = "5f0c9a3e71d24b86e9a05c1f38d7b26ae40f9c5d1b83726f0ad94e6b3c5a8217";

/// Every wait in these tests is bounded by this.
const BOUND: Duration = Duration::from_secs(20);

/// The deadline of a change in these tests: short, so that `NoQuorum` comes soon.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

const NAMES: [&str; 3] = ["a", "b", "c"];

fn builder(name: &str) -> NodeBuilder {
    Node::builder(name, ClusterKey::from_hex(KEY_HEX).expect("the test key is valid"))
        .heartbeat(Duration::from_millis(100), Duration::from_millis(2_000))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300))
        .gossip_interval(Duration::from_millis(200))
}

fn config(storage: StorageConfig) -> PaxosConfig {
    let mut config = PaxosConfig::new(NAMES.iter().map(|name| name.to_string()).collect());
    config.storage = storage;
    config.request_timeout = REQUEST_TIMEOUT;
    config.round_timeout = Duration::from_millis(50);
    config.seed = 7;
    // A fresh cluster: its acceptors, all without state, found the first epoch themselves.
    config.recovery = Recovery::NewEpoch;
    config
}

/// Awaits `future`, failing the test (at the caller's line) if it takes longer than [`BOUND`].
#[track_caller]
fn within<F: Future>(future: F) -> impl Future<Output = F::Output> {
    let caller = Location::caller();
    async move {
        match tokio::time::timeout(BOUND, future).await {
            Ok(output) => output,
            Err(_) => panic!("{caller}: still waiting after {BOUND:?}"),
        }
    }
}

/// Polls `check` until it holds, or panics after [`BOUND`] with `what`.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + BOUND;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Puts `data` at `key`, retrying failures until one succeeds (bounded by [`BOUND`]). Used
/// right after a node dies or a partition heals: a change that was, say, forwarded to a node
/// that has just gone down fails by its deadline, and its caller tries again.
async fn put_until_ok(paxos: &Paxos, key: &str, data: &[u8]) {
    let deadline = tokio::time::Instant::now() + BOUND;
    while let Err(error) = paxos.put(key, data.to_vec()).await {
        assert!(tokio::time::Instant::now() < deadline, "no put succeeded: {error}");
    }
}

/// The next quorum event; fails after [`BOUND`].
#[track_caller]
fn next_quorum_event(
    events: &mut broadcast::Receiver<QuorumEvent>,
) -> impl Future<Output = QuorumEvent> {
    within(async move {
        loop {
            match events.recv().await {
                Ok(event) => return event,
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("the quorum events closed"),
            }
        }
    })
}

/// Nodes named `names`, joined through the first, waited until full mesh.
async fn nodes(names: &[&str]) -> Vec<Node> {
    let mut nodes = Vec::new();
    for name in names {
        nodes.push(builder(name).start().await.expect("node starts"));
    }
    for node in &nodes[1..] {
        node.join(nodes[0].listen_addr()).await.expect("join");
    }
    let expected = nodes.len() - 1;
    eventually("full mesh", || {
        let nodes = nodes.clone();
        async move { nodes.iter().all(|node| node.nodes().len() == expected) }
    })
    .await;
    nodes
}

/// Three nodes, every one an acceptor, each with the Paxos service (storage from `storage`).
async fn cluster(storage: impl Fn(&str) -> StorageConfig) -> (Vec<Node>, Vec<Paxos>) {
    let nodes = nodes(&NAMES).await;
    let mut services = Vec::new();
    for node in &nodes {
        services.push(Paxos::start(node, config(storage(node.name()))).await.expect("starts"));
    }
    all_voting(&services).await;
    (nodes, services)
}

/// Waits until every acceptor votes: in-memory acceptors that just started rejoin from each
/// other first, and one that has not rejoined when another dies may wait for it.
async fn all_voting(services: &[Paxos]) {
    eventually("every acceptor votes", || {
        let voting = services.iter().all(Paxos::is_voting);
        async move { voting }
    })
    .await;
}

async fn stop(nodes: &[Node], services: &[Paxos]) {
    for service in services {
        within(service.stop()).await;
    }
    for node in nodes {
        node.shutdown();
    }
}

/// A counter that remembers, for each writer, the last increment it applied: an increment
/// retried after an error whose outcome is unknown is applied at most once. This is how a
/// caller deduplicates by (writer, sequence) with compare-and-set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Counter {
    total: u64,
    last: BTreeMap<String, u64>,
}

impl Counter {
    fn decode(entry: Option<&Entry>) -> Counter {
        entry.map_or_else(Counter::default, |entry| {
            rmp_serde::from_slice(&entry.data).expect("a counter entry")
        })
    }

    fn encode(&self) -> Entry {
        Entry::new(rmp_serde::to_vec(self).expect("a counter encodes"))
    }
}

/// Applies increment `seq` of `writer` exactly once, retrying conflicts and errors.
async fn increment(paxos: &Paxos, key: &str, writer: &str, seq: u64) {
    let mut current: Option<Entry> = None;
    loop {
        let counter = Counter::decode(current.as_ref());
        if counter.last.get(writer).is_some_and(|&last| last >= seq) {
            return;
        }
        let mut next = counter.clone();
        next.total += 1;
        next.last.insert(writer.to_owned(), seq);
        match paxos.compare_and_set(key, current.clone(), Some(next.encode())).await {
            Ok(outcome) if outcome.applied => return,
            Ok(outcome) => current = outcome.before.entry,
            // Unknown outcome (or none): read the key again and decide from what it holds.
            Err(_) => current = paxos.get(key).await.ok().flatten(),
        }
    }
}

/// Rule (linearisable per-key registers): concurrent writers on every node increment one key;
/// the final value counts every acknowledged increment exactly once, and every node reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_from_every_node_are_all_counted_once() {
    let (nodes, services) = cluster(|_| StorageConfig::Memory).await;
    const PER_WRITER: u64 = 20;
    let mut writers = Vec::new();
    for (index, paxos) in services.iter().enumerate() {
        for lane in 0..2 {
            let paxos = paxos.clone();
            let writer = format!("{}-{lane}", NAMES[index]);
            writers.push(tokio::spawn(async move {
                for seq in 1..=PER_WRITER {
                    increment(&paxos, "counter", &writer, seq).await;
                }
            }));
        }
    }
    let count = writers.len() as u64;
    for writer in writers {
        within(writer).await.expect("the writer finishes");
    }
    for paxos in &services {
        let read = within(paxos.get("counter")).await.expect("a quorum is up");
        let counter = Counter::decode(read.as_ref());
        assert_eq!(counter.total, count * PER_WRITER, "read on {}", paxos.node().name());
        assert!(counter.last.values().all(|&last| last == PER_WRITER));
    }
    // The handles read the proposers' counters: every acknowledged change was decided by a
    // proposer (its own or the designated one it was forwarded to), and each node's callers'
    // waits are in its histogram (the reads just done included).
    let stats: Vec<_> = services.iter().map(Paxos::stats).collect();
    let decided: u64 = stats.iter().map(|s| s.fast_decisions + s.slow_decisions).sum();
    assert!(decided >= count * PER_WRITER, "{stats:?}");
    for stats in &stats {
        assert!(stats.latency.count() > 2 * PER_WRITER, "{stats:?}");
        assert!(stats.accept_rounds >= stats.fast_decisions + stats.slow_decisions);
    }

    // `Add` counts too, and `put`, `compare_and_set` and `delete` do what they say.
    for paxos in &services {
        within(paxos.change("adds", Change::Add(2))).await.expect("adds");
    }
    let adds = within(services[1].get("adds")).await.expect("reads");
    assert_eq!(adds.map(|entry| entry.data), Some(6i64.to_be_bytes().to_vec()));
    within(services[0].put("k", b"one".to_vec())).await.expect("puts");
    let refused = within(services[1].compare_and_set("k", None, Some(Entry::new("two"))))
        .await
        .expect("runs");
    assert!(!refused.applied);
    assert_eq!(refused.before.entry, Some(Entry::new("one")));
    let swapped =
        within(services[2].compare_and_set("k", Some(Entry::new("one")), Some(Entry::new("two"))))
            .await
            .expect("runs");
    assert!(swapped.applied);
    within(services[2].delete("k")).await.expect("deletes");
    assert_eq!(within(services[1].get("k")).await.expect("reads"), None);
    stop(&nodes, &services).await;
}

/// Rule (quorum = majority of the acceptor set): with one of three acceptors killed, the two
/// left still complete changes; with two killed, a change fails with a typed `NoQuorum` by its
/// deadline, and the survivor publishes quorum-down (and quorum-up when the peers return).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_down_is_writable_two_down_is_no_quorum() {
    let (nodes, services) = cluster(|_| StorageConfig::Memory).await;
    within(services[0].put("k", b"before".to_vec())).await.expect("all up");
    assert!(services[0].has_quorum());
    let mut events = services[0].subscribe();

    nodes[2].shutdown();
    put_until_ok(&services[0], "k", b"one down").await;
    let read = within(services[1].get("k")).await.expect("a majority is up");
    assert_eq!(read, Some(Entry::new("one down")));

    nodes[1].shutdown();
    let failed = within(services[0].put("k", b"two down".to_vec())).await;
    assert!(matches!(failed, Err(PaxosError::NoQuorum { .. })), "{failed:?}");
    let failed = within(services[0].get("other")).await;
    assert_eq!(failed, Err(PaxosError::NoQuorum { maybe_applied: false }));
    assert_eq!(next_quorum_event(&mut events).await, QuorumEvent::Down);
    assert!(!services[0].has_quorum());
    stop(&nodes, &services).await;
}

/// A directory under the system's temp dir, unique to this test run, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        let dir = std::env::temp_dir()
            .join(format!("shoal-paxos-{what}-{}-{unique}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the temp dir is writable");
        TempDir(dir)
    }

    fn storage(&self, node: &str) -> StorageConfig {
        StorageConfig::File(self.0.join(node))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Rule (durable acceptors): acceptors on `FileStorage` restarted — one alone, then the
/// whole cluster at once — come back with every chosen value (an in-memory cluster restarted
/// whole would start empty).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptors_restarted_from_file_storage_lose_nothing() {
    let dir = TempDir::new("restart");
    let (mut nodes, mut services) = cluster(|name| dir.storage(name)).await;
    for n in 0..20u32 {
        let key = format!("key-{n}");
        let paxos = &services[n as usize % 3];
        within(paxos.put(key.as_str(), n.to_be_bytes().to_vec())).await.expect("all up");
    }

    // c restarts on its own: a new incarnation of the node, the same directory.
    within(services[2].stop()).await;
    nodes[2].shutdown();
    let c = builder("c").start().await.expect("c restarts");
    c.join(nodes[0].listen_addr()).await.expect("c rejoins");
    services[2] = Paxos::start(&c, config(dir.storage("c"))).await.expect("c's service starts");
    nodes[2] = c;
    within(services[2].put("key-20", 20u32.to_be_bytes().to_vec())).await.expect("c writes");

    // The whole cluster restarts.
    stop(&nodes, &services).await;
    let restarted = self::nodes(&NAMES).await;
    services.clear();
    for node in &restarted {
        services.push(Paxos::start(node, config(dir.storage(node.name()))).await.expect("starts"));
    }
    all_voting(&services).await;
    for n in 0..=20u32 {
        let key = format!("key-{n}");
        let read = within(services[(n as usize + 1) % 3].get(key.as_str())).await.expect("reads");
        assert_eq!(read, Some(Entry::new(n.to_be_bytes())), "{key}");
    }
    stop(&restarted, &services).await;
}

/// Cuts `node` off from every other node of `nodes`, both ways, on both sides.
fn isolate(nodes: &[Node], node: usize) {
    for (index, other) in nodes.iter().enumerate() {
        if index != node {
            other.inject_fault(nodes[node].name(), Direction::Both, Fault::Cut);
            nodes[node].inject_fault(other.name(), Direction::Both, Fault::Cut);
        }
    }
}

/// Rule (a minority cannot decide): a node cut off from the other two cannot complete a
/// change and sees quorum-down; the majority goes on writing; once healed, the minority node
/// sees quorum-up and reads what the majority wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_minority_cannot_write_and_agrees_after_healing() {
    let (nodes, services) = cluster(|_| StorageConfig::Memory).await;
    within(services[2].put("k", b"before".to_vec())).await.expect("all up");
    let mut events = services[2].subscribe();

    isolate(&nodes, 2);
    let failed = within(services[2].put("k", b"minority".to_vec())).await;
    assert!(matches!(failed, Err(PaxosError::NoQuorum { .. })), "{failed:?}");
    assert_eq!(next_quorum_event(&mut events).await, QuorumEvent::Down);
    // A change from a that meets c's minority write may be forwarded to c (its designated
    // proposer) before a sees c down, and time out: a tries again.
    put_until_ok(&services[0], "k", b"majority").await;

    for node in &nodes {
        node.heal_all();
    }
    assert_eq!(next_quorum_event(&mut events).await, QuorumEvent::Up);
    eventually("full mesh again", || {
        let nodes = nodes.clone();
        async move { nodes.iter().all(|node| node.nodes().len() == 2) }
    })
    .await;
    for paxos in &services {
        let paxos = paxos.clone();
        eventually("every node reads the majority's write", || {
            let paxos = paxos.clone();
            async move { paxos.get("k").await == Ok(Some(Entry::new("majority"))) }
        })
        .await;
    }
    stop(&nodes, &services).await;
}

/// Idles until it is stopped: a holder for owned entries.
struct Idle;

impl Process for Idle {
    type Message = ();
    type Call = ();
    type Reply = ();

    async fn handle_cast(&mut self, (): (), _: &mut Context<Self>) {}

    async fn handle_call(&mut self, (): (), reply: ReplyTo<()>, _: &mut Context<Self>) {
        reply.send(());
    }
}

/// Rule (owned entries are cleared by a consensus write): an entry bound to a process is
/// cleared by the writing node when that process exits, and one bound to a node when that
/// node goes down; a process of another node cannot hold an entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_entries_are_cleared_when_their_holder_dies() {
    let (nodes, services) = cluster(|_| StorageConfig::Memory).await;
    let pid = nodes[0].runtime().spawn(Idle).pid();
    within(services[0].put_owned("lock", b"held".to_vec(), Holder::Process(pid)))
        .await
        .expect("written");
    let held = within(services[1].get("lock")).await.expect("reads");
    assert_eq!(held, Some(Entry::owned("held", Holder::Process(pid).owner())));
    let remote = within(services[1].put_owned("x", Vec::new(), Holder::Process(pid))).await;
    assert!(remote.is_err(), "{remote:?}");

    nodes[0].runtime().exit(pid, ExitReason::Shutdown);
    let reader = services[1].clone();
    eventually("the process's entry is cleared", || {
        let reader = reader.clone();
        async move { reader.get("lock").await == Ok(None) }
    })
    .await;

    let on_c = services[0].node_holder("c").expect("c is connected");
    within(services[0].put_owned("singleton", b"on c".to_vec(), on_c)).await.expect("written");
    nodes[2].shutdown();
    let reader = services[1].clone();
    eventually("the node's entry is cleared", || {
        let reader = reader.clone();
        async move { reader.get("singleton").await == Ok(None) }
    })
    .await;
    stop(&nodes, &services).await;
}

/// Membership changes through the driver (issue 9, point 7, and the procedure of the
/// `membership` docs): with acceptor c down, a fourth node d is added as an acceptor (it
/// rejoins from a and b, n - majority + 1 = 2 of the three others), every key is rewritten, and
/// c, still down, is removed; every value written before survives, every node runs the new set,
/// and writes go on through {a, b, d}.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptors_are_added_and_removed_one_at_a_time_with_one_down() {
    let mut nodes = nodes(&["a", "b", "c", "d"]).await;
    let mut services = Vec::new();
    for node in &nodes {
        services.push(Paxos::start(node, config(StorageConfig::Memory)).await.expect("starts"));
    }
    all_voting(&services[..3]).await;
    for n in 0..10u32 {
        within(services[n as usize % 4].put(format!("key-{n}").as_str(), n.to_be_bytes().to_vec()))
            .await
            .expect("written");
    }
    // c goes down for good.
    let c = services.remove(2);
    within(c.stop()).await;
    nodes.remove(2).shutdown();

    let change = Duration::from_secs(15);
    let version = within(services[0].add_acceptor("d", change)).await.expect("d is added");
    assert_eq!(version, 1);
    assert!(services[2].is_voting(), "d rejoined before the change completed");
    let version = within(services[1].remove_acceptor("c", change)).await.expect("c is removed");
    assert_eq!(version, 2);
    for service in &services {
        let (version, mut acceptors) = within(service.acceptors()).await.expect("running");
        acceptors.sort();
        assert_eq!((version, acceptors), (2, vec!["a".into(), "b".into(), "d".into()]));
    }
    for n in 0..10u32 {
        let read = within(services[2].get(format!("key-{n}").as_str())).await.expect("reads");
        assert_eq!(read, Some(Entry::new(n.to_be_bytes())), "key-{n}");
    }
    within(services[2].put("after", b"d".to_vec())).await.expect("{a, b, d} decide");
    // A change of two acceptors at once is refused, and nothing is installed.
    let two = within(services[0].reconfigure(vec!["a".into()], change)).await;
    assert_eq!(two, Err(ReconfigureError::NotOneStep));
    // Asking for the set that runs already finishes its step (rewrites every key through it)
    // and installs nothing new.
    let again = within(services[1].reconfigure(vec!["d".into(), "a".into(), "b".into()], change));
    assert_eq!(again.await, Ok(2));
    assert_eq!(within(services[0].acceptors()).await.expect("running").0, 2);
    stop(&nodes, &services).await;
}

/// Rule: a membership change ends as soon as the service on its node stops, whatever step it
/// is in (`ReconfigureError::Stopped`). The rewrite step used to retry each read at once, with
/// no pause, until the step's deadline, also against a stopped service whose reads all fail at
/// once: a busy loop for the rest of the step's timeout, which froze a simulation's paused
/// clock for good (tests/tests/nodes/node.rs, seed 21, a node aborted mid-growth).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_membership_change_ends_when_the_service_stops_during_its_rewrite() {
    let (nodes, services) = cluster(|_| StorageConfig::Memory).await;
    for n in 0..20u32 {
        within(services[0].put(format!("key-{n}").as_str(), n.to_be_bytes().to_vec()))
            .await
            .expect("written");
    }
    // What a sends to b and c now takes 200 ms: each read of a's rewrite takes that long at
    // least, and listing b's keys still answers within its wait (10 rounds, 500 ms).
    for other in &NAMES[1..] {
        nodes[0].inject_fault(other, Direction::Outbound, Fault::Delay(Duration::from_millis(200)));
    }
    let change = Duration::from_secs(10);
    let paxos = services[0].clone();
    let same_set = NAMES.iter().map(|name| name.to_string()).collect();
    // The set that runs already: the change lists the keys and rewrites them all (20 keys,
    // some seconds at this pace).
    let reconfigure = tokio::spawn(async move { paxos.reconfigure(same_set, change).await });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!reconfigure.is_finished(), "the rewrite is still under way");
    within(services[0].stop()).await;
    let stopped = tokio::time::Instant::now();
    let outcome = within(reconfigure).await.expect("the change's task");
    assert_eq!(outcome, Err(ReconfigureError::Stopped));
    assert!(stopped.elapsed() < Duration::from_secs(1), "ended {:?} after", stopped.elapsed());
    nodes[0].heal_all();
    stop(&nodes, &services[1..]).await;
}

/// Issue 9, point 4. Rule: one ballot, one value — every start of the service is a new
/// proposer run, also when the service is stopped and started again on the same node (the
/// node's incarnation stays the same), so the new proposer never reissues a ballot of the old
/// one; a write after the restart is read back by the other nodes. An owned entry's holder
/// names the node's run ([`Paxos::node_holder`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_restarted_on_the_same_node_proposes_in_a_new_run() {
    let (nodes, mut services) = cluster(|_| StorageConfig::Memory).await;
    let holder = Holder::Node { name: "a".to_owned(), incarnation: nodes[0].incarnation() };
    assert_eq!(services[0].node_holder("a"), Some(holder.clone()));
    within(services[0].put("k", b"before".to_vec())).await.expect("all up");
    let before = services[0].proposer_run();

    within(services[0].stop()).await;
    services[0] = Paxos::start(&nodes[0], config(StorageConfig::Memory)).await.expect("restarts");
    let after = services[0].proposer_run();
    assert!(after > before, "a new, larger run: {before} -> {after}");
    assert_eq!(services[0].node_holder("a"), Some(holder), "the node itself did not restart");

    all_voting(&services).await;
    put_until_ok(&services[0], "k", b"after").await;
    for paxos in &services[1..] {
        let read = within(paxos.get("k")).await.expect("reads");
        assert_eq!(read, Some(Entry::new("after")), "read on {}", paxos.node().name());
    }
    stop(&nodes, &services).await;
}
