//! The one integration test binary of shoal-registry: the service over real TCP, in-process
//! nodes on 127.0.0.1 port 0, each running Paxos (in-memory acceptors) and the registry. These
//! check the driver's glue and its promises end to end; the whole-node simulation checks them
//! under seeded faults.

use std::collections::BTreeSet;
use std::future::Future;
use std::panic::Location;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use shoal_paxos::{Paxos, PaxosConfig, Recovery};
use shoal_process::{ChildSpec, Context, ExitReason, Process, ReplyTo, Restart};
use shoal_registry::core::{KeyError, LeaseConfig, MAX_KEY_BYTES};
use shoal_registry::{
    LEASE_ENDED, LockOptions, LockResult, Registry, RegistryConfig, RegistryError,
    RegistryStartError,
};
use shoal_transport::{ClusterKey, Node, NodeBuilder};

const KEY_HEX: &str = "5f0c9a3e71d24b86e9a05c1f38d7b26ae40f9c5d1b83726f0ad94e6b3c5a8217";

/// Every wait in these tests is bounded by this.
const BOUND: Duration = Duration::from_secs(30);

fn builder(name: &str) -> NodeBuilder {
    Node::builder(name, ClusterKey::from_hex(KEY_HEX).expect("the test key is valid"))
        .heartbeat(Duration::from_millis(100), Duration::from_millis(1_000))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300))
        .gossip_interval(Duration::from_millis(200))
}

/// A short lease, so that takeovers happen within a test: `D` = 600 ms, claim wait ≈ 0.9 s.
fn registry_config() -> RegistryConfig {
    let duration = Duration::from_millis(600);
    RegistryConfig {
        lease: LeaseConfig {
            duration,
            renew_every: duration / 3,
            max_drift: 0.05,
            stop_within: Duration::from_millis(200),
        },
        ..RegistryConfig::default()
    }
}

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

/// Polls `check`, which needs no waiting, until it holds, or panics after [`BOUND`].
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    eventually(what, || {
        let holds = check();
        async move { holds }
    })
    .await;
}

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

/// A process that counts its starts and answers a call with its node's name.
struct Worker {
    node: String,
}

impl Process for Worker {
    type Message = String;
    type Call = String;
    type Reply = String;

    async fn handle_cast(&mut self, message: String, ctx: &mut Context<Self>) {
        if message == "crash" {
            ctx.stop(ExitReason::custom("asked to crash"));
        }
    }

    async fn handle_call(&mut self, _: String, reply: ReplyTo<String>, _ctx: &mut Context<Self>) {
        reply.send(self.node.clone());
    }

    fn remote_messages() -> Option<shoal_process::Codec<Self>> {
        Some(shoal_process::Codec::msgpack())
    }
}

struct Cluster {
    nodes: Vec<Node>,
    paxos: Vec<Paxos>,
    registries: Vec<Registry>,
    starts: Arc<AtomicUsize>,
}

impl Cluster {
    /// `n` nodes; the first three are the acceptors.
    async fn start(n: usize) -> Cluster {
        let names: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
        let starts = Arc::new(AtomicUsize::new(0));
        let mut nodes = Vec::new();
        for name in &names {
            let node = builder(name).start().await.expect("node starts");
            let (starts, node_name) = (starts.clone(), name.clone());
            node.runtime()
                .register_factory("worker", move |(): ()| {
                    starts.fetch_add(1, Ordering::SeqCst);
                    Worker { node: node_name.clone() }
                })
                .expect("factory");
            nodes.push(node);
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
        let mut paxos = Vec::new();
        for node in &nodes {
            let mut config = PaxosConfig::new(names[..3].to_vec());
            config.request_timeout = Duration::from_millis(500);
            config.round_timeout = Duration::from_millis(50);
            config.recovery = Recovery::NewEpoch;
            paxos.push(Paxos::start(node, config).await.expect("paxos starts"));
        }
        eventually("every acceptor votes", || {
            let voting = paxos[..3].iter().all(Paxos::is_voting);
            async move { voting }
        })
        .await;
        let mut registries = Vec::new();
        for service in &paxos {
            registries.push(
                within(Registry::start(service, registry_config())).await.expect("registry starts"),
            );
        }
        for registry in &registries {
            within(registry.ready(BOUND)).await.expect("lease");
        }
        let members = n - 1;
        eventually("every registry sees the others", || {
            let all = registries.iter().all(|registry| registry.members().len() == members);
            async move { all }
        })
        .await;
        Cluster { nodes, paxos, registries, starts }
    }

    async fn stop(self) {
        for registry in &self.registries {
            within(registry.stop()).await;
        }
        for service in &self.paxos {
            within(service.stop()).await;
        }
        for node in &self.nodes {
            node.shutdown();
        }
    }
}

fn worker() -> ChildSpec {
    ChildSpec::new("worker", "worker", &()).expect("spec")
}

/// Five nodes, a hundred concurrent `whereis` of one fresh name from all of them: exactly
/// one process starts, and every caller gets its pid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_whereis_from_five_nodes_start_exactly_one_process() {
    let cluster = Cluster::start(5).await;
    let mut calls = Vec::new();
    for i in 0..100 {
        let registry = cluster.registries[i % 5].clone();
        calls.push(tokio::spawn(async move {
            let name = registry.name("fresh", &worker(), Restart::Temporary).expect("name");
            name.whereis().await
        }));
    }
    let mut pids = BTreeSet::new();
    for call in calls {
        pids.insert(within(call).await.expect("joined").expect("whereis"));
    }
    assert_eq!(pids.len(), 1, "one process for the name: {pids:?}");
    assert_eq!(cluster.starts.load(Ordering::SeqCst), 1, "exactly one start");
    // Every node now resolves it from its cache.
    for registry in &cluster.registries {
        let name = registry.name("fresh", &worker(), Restart::Temporary).expect("name");
        assert_eq!(name.cached(), pids.first().copied());
    }
    cluster.stop().await;
}

/// A temporary name whose process exits is free; its next use starts a fresh one. Calls and
/// casts go through the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_name_starts_afresh_on_its_next_use() {
    let cluster = Cluster::start(3).await;
    let name = cluster.registries[1].name("temp", &worker(), Restart::Temporary).expect("name");
    assert_eq!(within(name.lookup()).await.expect("lookup"), None, "nothing starts on lookup");
    assert!(!within(name.alive()).await.expect("alive"));
    let host: String = within(name.call(String::new(), BOUND)).await.expect("call");
    let first = name.cached().expect("cached after use");
    assert_eq!(cluster.nodes.iter().find(|node| node.name() == host).map(|_| ()), Some(()));
    within(name.cast("crash".to_owned())).await.expect("cast");
    eventually("the name is free", || {
        let name = name.clone();
        async move { name.cached().is_none() && name.lookup().await.ok() == Some(None) }
    })
    .await;
    let second = within(name.whereis()).await.expect("whereis");
    assert_ne!(first, second, "a fresh process");
    assert_eq!(cluster.starts.load(Ordering::SeqCst), 2);
    cluster.stop().await;
}

/// A name registered by a process of a host that is lost is free again once that host's lease
/// is over: a `register` on another node takes it (without a lookup to free it first), and a
/// live holder's name stays taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_of_a_lost_host_can_be_registered_again_once_its_lease_is_over() {
    let cluster = Cluster::start(4).await;
    let session = spawn_worker(&cluster.nodes[3]);
    within(cluster.registries[3].register("session/alice", session, Vec::new()))
        .await
        .expect("registered on n3");
    let mine = spawn_worker(&cluster.nodes[0]);
    let taken = within(cluster.registries[0].register("session/alice", mine, Vec::new())).await;
    assert!(matches!(taken, Err(RegistryError::Taken { .. })), "{taken:?}");

    cluster.nodes[3].shutdown();
    let registry = cluster.registries[0].clone();
    eventually("n0 registers the lost host's name", || {
        let registry = registry.clone();
        async move { registry.register("session/alice", mine, Vec::new()).await.is_ok() }
    })
    .await;
    assert_eq!(within(cluster.registries[1].lookup("session/alice")).await.ok(), Some(Some(mine)));
    cluster.stop().await;
}

/// A permanent name is started again when its process exits, and on another node when its
/// host stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_name_restarts_and_moves_when_its_host_stops() {
    let cluster = Cluster::start(3).await;
    let name = cluster.registries[0].name("perm", &worker(), Restart::Permanent).expect("name");
    let first = within(name.whereis()).await.expect("whereis");
    within(name.cast("crash".to_owned())).await.expect("cast");
    eventually("restarted", || {
        let name = name.clone();
        async move { matches!(name.lookup().await, Ok(Some(pid)) if pid != first) }
    })
    .await;
    let second = within(name.whereis()).await.expect("whereis");
    assert_eq!(second.node(), first.node(), "restarted on the same host");

    // Its host stops: the name runs again elsewhere, found from a surviving node.
    let host = cluster.nodes.iter().position(|node| node.id() == second.node()).expect("host");
    let survivor = (host + 1) % 3;
    within(cluster.registries[host].stop()).await;
    let from_survivor =
        cluster.registries[survivor].name("perm", &worker(), Restart::Permanent).expect("name");
    eventually("moved", || {
        let name = from_survivor.clone();
        async move { matches!(name.lookup().await, Ok(Some(pid)) if pid.node() != second.node()) }
    })
    .await;
    let moved: String = within(from_survivor.call(String::new(), BOUND)).await.expect("call");
    assert_ne!(moved, cluster.nodes[host].name());
    cluster.stop().await;
}

/// A host that loses the majority stops its names' processes (reason `LEASE_ENDED`) before
/// the lease can be taken over, and the permanent name runs again on the majority side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_host_stops_its_processes_and_the_majority_takes_over() {
    let cluster = Cluster::start(3).await;
    let name = cluster.registries[0].name("cut", &worker(), Restart::Permanent).expect("name");
    let pid = within(name.whereis()).await.expect("whereis");
    let host = cluster.nodes.iter().position(|node| node.id() == pid.node()).expect("host");
    let watch = cluster.nodes[host].runtime().watch(pid);
    for (i, node) in cluster.nodes.iter().enumerate() {
        if i != host {
            cluster.nodes[host].inject_fault(
                node.name(),
                shoal_transport::Direction::Both,
                shoal_transport::Fault::Cut,
            );
        }
    }
    let reason = within(watch).await;
    assert_eq!(reason, ExitReason::Custom(LEASE_ENDED.to_owned()));
    let survivor = (host + 1) % 3;
    let there =
        cluster.registries[survivor].name("cut", &worker(), Restart::Permanent).expect("name");
    eventually("running on the majority side", || {
        let there = there.clone();
        async move { matches!(there.lookup().await, Ok(Some(p)) if p.node() != pid.node()) }
    })
    .await;
    cluster.nodes[host].heal_all();
    cluster.stop().await;
}

/// Locks: tokens grow with each holder; re-entry is counted; a non-blocking acquisition of a
/// held lock answers the holder; a waiter is handed the lock on release; a holder's exit
/// releases it; a release by a non-holder is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_hand_over_with_growing_tokens() {
    let cluster = Cluster::start(3).await;
    let [a, b, c] = [&cluster.registries[0], &cluster.registries[1], &cluster.registries[2]];
    let first = within(a.lock("res", LockOptions::default()))
        .await
        .expect("lock")
        .acquired()
        .expect("acquired");
    let held = within(b.lock("res", LockOptions::default().non_blocking())).await.expect("lock");
    assert!(
        matches!(held, LockResult::HeldBy { holder, token } if holder == first.holder() && token == first.token())
    );

    // b waits; a's release hands it over with the next token.
    let waiting = {
        let b = b.clone();
        tokio::spawn(async move { b.lock("res", LockOptions::default()).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let first_token = first.token();
    within(first.unlock()).await.expect("unlock");
    let second = within(waiting).await.expect("joined").expect("lock").acquired().expect("handed");
    assert_eq!(second.token(), first_token + 1);
    // Stats: b's non-blocking attempt did not wait; its blocking one queued for the 200 ms a
    // held the lock, and acquired it.
    let (a_stats, b_stats) = (a.stats(), b.stats());
    assert_eq!((a_stats.lock_acquisitions, a_stats.lock_waits), (1, 0), "{a_stats:?}");
    assert_eq!((b_stats.lock_acquisitions, b_stats.lock_waits), (1, 1), "{b_stats:?}");
    assert!(b_stats.lock_wait >= Duration::from_millis(100), "{b_stats:?}");
    assert_eq!((a_stats.locks_held, b_stats.locks_held), (0, 1));

    // A release by a process that does not hold it is refused.
    let stranger = c.node().runtime().spawn(Worker { node: "x".into() }).pid();
    let refused = within(c.unlock("res", stranger)).await;
    assert!(matches!(refused, Err(RegistryError::NotHolder { .. })), "{refused:?}");

    // Re-entry by an explicit holder: counted, same token.
    drop(second);
    let holder = c.node().runtime().spawn(Worker { node: "c".into() }).pid();
    let options = LockOptions::default().holder(holder);
    let once = within(c.lock("res", options)).await.expect("lock").acquired().expect("acquired");
    let twice = within(c.lock("res", options)).await.expect("lock").acquired().expect("re-entered");
    assert_eq!(once.token(), twice.token());
    assert!(once.token() > first_token + 1);
    within(twice.unlock()).await.expect("unlock");
    let still = within(a.lock("res", LockOptions::default().non_blocking())).await.expect("lock");
    assert!(
        matches!(still, LockResult::HeldBy { holder: h, .. } if h == holder),
        "still held once"
    );
    std::mem::forget(once);
    // The holder exits: the lock is free.
    c.node().runtime().kill(holder);
    eventually("freed by the holder's exit", || {
        let a = a.clone();
        async move {
            matches!(
                a.lock("res", LockOptions::default().non_blocking()).await,
                Ok(LockResult::Acquired(_))
            )
        }
    })
    .await;
    cluster.stop().await;
}

/// Registered processes: a name for a running process, refused while taken, listed with its
/// metadata and token, unregistered; bad input gets typed errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_names_listing_and_bad_input() {
    let cluster = Cluster::start(3).await;
    let [a, b] = [&cluster.registries[0], &cluster.registries[1]];
    let pid = a.node().runtime().spawn(Worker { node: "a".into() }).pid();
    within(a.register("svc", pid, b"meta".to_vec())).await.expect("register");
    let other = b.node().runtime().spawn(Worker { node: "b".into() }).pid();
    let taken = within(b.register("svc", other, Vec::new())).await;
    assert!(
        matches!(taken, Err(RegistryError::Taken { holder: Some(h), .. }) if h == pid),
        "{taken:?}"
    );
    assert_eq!(within(b.lookup("svc")).await.expect("lookup"), Some(pid));
    // Stats: that first lookup missed b's cache and cached the pid; the next one hits it.
    let before = b.stats();
    assert!(before.lookup_misses >= 1, "{before:?}");
    assert_eq!(within(b.lookup("svc")).await.expect("lookup"), Some(pid));
    let after = b.stats();
    assert_eq!(after.lookup_hits, before.lookup_hits + 1, "{after:?}");
    assert_eq!(after.lookup_misses, before.lookup_misses, "{after:?}");
    assert_eq!(after.cached_names, 1, "{after:?}");
    assert_eq!((a.stats().names, b.stats().names), (1, 0), "the name is hosted on a");
    assert_eq!(within(b.resolve(pid)).await.expect("resolve a pid"), pid);
    let _lock = within(b.lock("listed", LockOptions::default()))
        .await
        .expect("lock")
        .acquired()
        .expect("acquired");
    let listing = within(b.list()).await;
    let svc = listing.names.iter().find(|info| info.name == "svc").expect("listed");
    assert_eq!((svc.pid, svc.meta.as_slice()), (Some(pid), &b"meta"[..]));
    assert!(listing.locks.iter().any(|info| info.key == "listed" && info.token >= 1));
    within(a.unregister("svc", pid)).await.expect("unregister");
    assert_eq!(within(b.lookup("svc")).await.expect("lookup"), None);
    assert!(a.node().runtime().is_alive(pid), "an unregistered process keeps running");

    // Bad input.
    assert!(matches!(a.name("x", &worker(), Restart::Transient), Err(RegistryError::Transient)));
    assert!(matches!(
        a.name("", &worker(), Restart::Temporary),
        Err(RegistryError::Key(KeyError::Empty))
    ));
    let long = "k".repeat(MAX_KEY_BYTES + 1);
    assert!(matches!(
        a.lock(&long, LockOptions::default()).await,
        Err(RegistryError::Key(KeyError::TooLong { .. }))
    ));
    let unknown = ChildSpec::new("u", "no-such-factory", &()).expect("spec");
    let error =
        within(a.name("unknown", &unknown, Restart::Temporary).expect("name").whereis()).await;
    assert!(matches!(error, Err(RegistryError::UnknownFactory { .. })), "{error:?}");
    let bad = ChildSpec::new("b", "worker", &"not a unit").expect("spec");
    let error = within(a.name("bad", &bad, Restart::Temporary).expect("name").whereis()).await;
    assert!(matches!(error, Err(RegistryError::BadArgs { .. })), "{error:?}");
    assert_eq!(
        within(a.lookup("unknown")).await.expect("lookup"),
        None,
        "a failed start leaves it free"
    );
    let remote = within(a.register("far", other, Vec::new())).await;
    assert!(matches!(remote, Err(RegistryError::NotLocal(_))));
    cluster.stop().await;
}

/// A registry over another acceptor set than its peers' is refused at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_over_other_acceptors_is_refused() {
    let cluster = Cluster::start(3).await;
    let odd = builder("odd").start().await.expect("node");
    odd.join(cluster.nodes[0].listen_addr()).await.expect("join");
    eventually("connected", || {
        let connected = odd.nodes().len() == 3;
        async move { connected }
    })
    .await;
    let mut config = PaxosConfig::new(vec!["n0".into(), "n1".into(), "odd".into()]);
    config.recovery = Recovery::NewEpoch;
    let paxos = Paxos::start(&odd, config).await.expect("paxos");
    let refused = within(Registry::start(&paxos, registry_config())).await;
    assert!(matches!(refused, Err(RegistryStartError::AcceptorMismatch(_))), "{refused:?}");
    paxos.stop().await;
    odd.shutdown();
    cluster.stop().await;
}

/// A lock holder cut off from the majority learns that its hold may be over (`lost`
/// resolves) before a waiter on the majority side is given the lock, with a larger token,
/// once the holder's lease has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_holder_learns_it_lost_the_lock_before_anyone_acquires_it() {
    let cluster = Cluster::start(3).await;
    let (holder_side, waiter_side) = (&cluster.registries[2], cluster.registries[0].clone());
    let guard = within(holder_side.lock("fenced", LockOptions::default()))
        .await
        .expect("lock")
        .acquired()
        .expect("acquired");
    let lost = guard.lost();
    let lost_at = tokio::spawn(async move {
        lost.await;
        tokio::time::Instant::now()
    });
    let waiter = tokio::spawn(async move {
        let result = waiter_side.lock("fenced", LockOptions::default()).await;
        (tokio::time::Instant::now(), result)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let cut = &cluster.nodes[2];
    for node in &cluster.nodes[..2] {
        cut.inject_fault(
            node.name(),
            shoal_transport::Direction::Both,
            shoal_transport::Fault::Cut,
        );
    }
    let lost_at = within(lost_at).await.expect("joined");
    assert!(guard.is_lost());
    let (acquired_at, result) = within(waiter).await.expect("joined");
    let taken = result.expect("lock").acquired().expect("acquired after the lease");
    assert!(lost_at < acquired_at, "the holder knew first");
    assert!(taken.token() > guard.token(), "a larger token");
    cut.heal_all();
    drop(taken);
    std::mem::forget(guard);
    cluster.stop().await;
}

/// Without a quorum, a lock acquisition fails, answers `NoQuorum`, or keeps trying until its
/// timeout, as its options say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_options_say_what_happens_without_a_quorum() {
    use shoal_registry::OnNoQuorum;
    let cluster = Cluster::start(3).await;
    let cut = &cluster.nodes[2];
    for node in &cluster.nodes[..2] {
        cut.inject_fault(
            node.name(),
            shoal_transport::Direction::Both,
            shoal_transport::Fault::Cut,
        );
    }
    let alone = &cluster.registries[2];
    let fail = LockOptions::default().on_no_quorum(OnNoQuorum::Fail);
    let failed = within(alone.lock("q", fail)).await;
    assert!(matches!(failed, Err(RegistryError::NoQuorum { .. })), "{failed:?}");
    let answer = LockOptions::default().on_no_quorum(OnNoQuorum::Return);
    assert!(matches!(within(alone.lock("q", answer)).await, Ok(LockResult::NoQuorum)));
    let retry = LockOptions::default().timeout(Duration::from_millis(800));
    assert!(matches!(within(alone.lock("q", retry)).await, Err(RegistryError::Timeout)));
    cut.heal_all();
    cluster.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Process groups: no consensus, each node the authority for its own members.

use shoal_registry::{GroupEvent, Groups, GroupsConfig, GroupsError};

/// Over managed membership, whose transport closes a connection nobody claims once it is
/// idle, the groups' replication claims its peers' connections: a member stays in the other
/// node's view however long the nodes have nothing to say, and the connection never goes
/// down. (Anti-entropy every 2 s, connections idle-closed after 150 ms.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_groups_peer_is_kept_across_idle_periods_on_managed_membership() {
    let managed = |name: &str| {
        builder(name)
            .membership(shoal_transport::Membership::Managed)
            .idle_close(Duration::from_millis(150))
    };
    let a = managed("ma").start().await.expect("node starts");
    let b = managed("mb").start().await.expect("node starts");
    let downs = a.subscribe();
    within(a.join(b.listen_addr())).await.expect("joins");
    let config = GroupsConfig { sync_every: Duration::from_secs(2), ..GroupsConfig::default() };
    let on_a = within(Groups::start(&a, config)).await.expect("groups");
    let on_b = within(Groups::start(&b, config)).await.expect("groups");
    let member = spawn_worker(&b);
    on_b.join("presence", member).expect("joins");
    eventually("a sees b's member", || {
        let seen = on_a.members("presence").contains(&member);
        async move { seen }
    })
    .await;
    // Well past the idle close, between two rounds of anti-entropy.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert!(on_a.members("presence").contains(&member), "dropped while idle");
    assert!(a.is_connected("mb"));
    let mut downs = downs;
    while let Ok(event) = downs.try_recv() {
        assert!(!matches!(event, shoal_transport::NodeEvent::Down { .. }), "{event:?}");
    }
    within(on_a.stop()).await;
    within(on_b.stop()).await;
    a.shutdown();
    b.shutdown();
}

/// `n` nodes in a full mesh, each running the default scope of groups (anti-entropy every
/// 200 ms).
async fn groups_cluster(n: usize) -> (Vec<Node>, Vec<Groups>) {
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(builder(&format!("g{i}")).start().await.expect("node starts"));
    }
    for node in &nodes[1..] {
        node.join(nodes[0].listen_addr()).await.expect("join");
    }
    let expected = n - 1;
    eventually("full mesh", || {
        let nodes = nodes.clone();
        async move { nodes.iter().all(|node| node.nodes().len() == expected) }
    })
    .await;
    let config = GroupsConfig { sync_every: Duration::from_millis(200), ..GroupsConfig::default() };
    let mut groups = Vec::new();
    for node in &nodes {
        groups.push(Groups::start(node, config).await.expect("groups start"));
    }
    (nodes, groups)
}

fn spawn_worker(node: &Node) -> shoal_process::Pid {
    node.runtime().spawn(Worker { node: node.name().to_owned() }).pid()
}

/// Five nodes: joins from every node are seen everywhere, with the same members in the same
/// order and the same `first`; a node shut down takes its members with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_joins_from_every_node_are_seen_everywhere() {
    let (nodes, groups) = groups_cluster(5).await;
    let mut all = Vec::new();
    for (node, scope) in nodes.iter().zip(&groups) {
        let pids: Vec<_> = (0..3).map(|_| spawn_worker(node)).collect();
        scope.join_many("workers", &pids).expect("join");
        assert_eq!(scope.local_members("workers"), pids, "seen here at once");
        all.extend(pids);
    }
    all.sort();
    until("every node sees 15 members", || {
        groups.iter().all(|scope| scope.members("workers").to_vec() == all)
    })
    .await;
    for scope in &groups {
        let stats = scope.stats();
        assert_eq!((stats.groups, stats.members, stats.local_members), (1, 15, 3), "{stats:?}");
        assert_eq!(scope.member_nodes("workers").len(), 5);
        assert_eq!(scope.first("workers"), all.first().copied());
        assert!(scope.pick("workers").is_some_and(|pid| all.contains(&pid)));
        assert_eq!(scope.groups(), vec!["workers".to_owned()]);
    }
    nodes[4].shutdown();
    let gone: Vec<_> = all.iter().copied().filter(|pid| pid.node() != nodes[4].id()).collect();
    until("the shut-down node's members are gone", || {
        groups[..4].iter().all(|scope| scope.members("workers").to_vec() == gone)
    })
    .await;
    for node in &nodes[..4] {
        node.shutdown();
    }
}

/// Joins count (a pid joined twice leaves twice); an exit removes every membership of the
/// process everywhere; bad input gets typed errors; scopes are independent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_membership_counts_exits_scopes_and_bad_input() {
    let (nodes, groups) = groups_cluster(2).await;
    let (a, b) = (&groups[0], &groups[1]);
    let pid = spawn_worker(&nodes[0]);
    a.join("g", pid).expect("join");
    a.join("g", pid).expect("join again");
    a.join("h", pid).expect("join h");
    until("b sees two joins", || b.members("g").to_vec() == vec![pid, pid]).await;
    a.leave("g", pid).expect("leave once");
    assert_eq!(a.members("g").to_vec(), vec![pid]);
    nodes[0].runtime().kill(pid);
    until("the exit is seen on both nodes", || {
        [a, b].iter().all(|scope| scope.members("g").is_empty() && scope.members("h").is_empty())
    })
    .await;
    assert!(matches!(a.leave("g", pid), Err(GroupsError::NotMember { .. })));
    assert!(matches!(a.join("g", pid), Err(GroupsError::NoProc(_))));
    let remote = spawn_worker(&nodes[1]);
    assert!(matches!(a.join("g", remote), Err(GroupsError::NotLocal(_))));
    assert!(matches!(
        a.join(&"n".repeat(2_000), spawn_worker(&nodes[0])),
        Err(GroupsError::Name(_))
    ));
    assert!(matches!(
        a.call_one::<String, String>("nobody", String::new(), BOUND).await,
        Err(GroupsError::Empty(_))
    ));

    // Another scope is another namespace.
    let other_a =
        Groups::start_scope(&nodes[0], "other", GroupsConfig::default()).await.expect("scope");
    let other_b =
        Groups::start_scope(&nodes[1], "other", GroupsConfig::default()).await.expect("scope");
    let member = spawn_worker(&nodes[0]);
    other_a.join("g", member).expect("join");
    until("seen in its scope", || other_b.members("g").to_vec() == vec![member]).await;
    assert!(b.members("g").is_empty(), "not in the default scope");
    for node in &nodes {
        node.shutdown();
    }
}

/// A hello lost on the way is sent again. While b starts its groups, everything a reads from
/// b is dropped (heartbeats too, under a failure timeout long enough to keep the connection),
/// so b's hello never arrives, and a's own went to b before b ran the service. Once the link
/// heals, a's repeated hello makes them peers within a few periods, and b's member is seen on
/// a. (When a hello was said once, they stayed apart for as long as they were connected.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_hello_is_sent_again() {
    use shoal_transport::{Direction, Fault};
    let patient =
        |name: &str| builder(name).heartbeat(Duration::from_millis(100), Duration::from_secs(20));
    let a = patient("ha").start().await.expect("node starts");
    let b = patient("hb").start().await.expect("node starts");
    within(a.join(b.listen_addr())).await.expect("joins");
    until("connected both ways", || a.is_connected("hb") && b.is_connected("ha")).await;
    let config = GroupsConfig { sync_every: Duration::from_millis(200), ..GroupsConfig::default() };
    let on_a = within(Groups::start(&a, config)).await.expect("groups");
    a.inject_fault("hb", Direction::Inbound, Fault::Drop(1.0));
    let on_b = within(Groups::start(&b, config)).await.expect("groups");
    let member = spawn_worker(&b);
    on_b.join("presence", member).expect("joins");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(on_a.members("presence").is_empty(), "nothing from b arrived while dropped");
    a.heal("hb");
    until("a sees b's member", || on_a.members("presence").contains(&member)).await;
    assert!(a.is_connected("hb"), "the connection stayed up throughout");
    within(on_a.stop()).await;
    within(on_b.stop()).await;
    a.shutdown();
    b.shutdown();
}

/// Messages through a group: to all members, to those on one node, to one, and a call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_messaging_reaches_its_members() {
    let (nodes, groups) = groups_cluster(3).await;
    let mut pids = Vec::new();
    for (node, scope) in nodes.iter().zip(&groups) {
        let pid = spawn_worker(node);
        scope.join("echo", pid).expect("join");
        pids.push(pid);
    }
    until("all three seen on the first node", || groups[0].members("echo").len() == 3).await;
    assert_eq!(groups[0].cast_all("echo", "hello".to_owned()).await, 3);
    assert_eq!(groups[0].cast_on_node("echo", nodes[2].name(), "hello".to_owned()).await, 1);
    let answered: String =
        groups[0].call_one("echo", String::new(), BOUND).await.expect("a member").expect("call");
    assert!(nodes.iter().any(|node| node.name() == answered));
    assert!(groups[0].cast_one("echo", "hello".to_owned()).await.expect("a member").is_ok());
    for node in &nodes {
        node.shutdown();
    }
}

/// A subscription starts from a snapshot and sees every join and leave of its group in
/// order; one that falls behind its queue is given a fresh snapshot, never a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_subscriptions_see_changes_in_order_or_a_fresh_snapshot() {
    let (nodes, groups) = groups_cluster(2).await;
    let (a, b) = (&groups[0], &groups[1]);
    let first = spawn_worker(&nodes[0]);
    a.join("s", first).expect("join");
    until("b sees the first member", || b.members("s").len() == 1).await;
    let mut subscription = b.subscribe(Some("s"));
    assert_eq!(subscription.snapshot(), Some([("s".to_owned(), vec![first])].into()));
    let second = spawn_worker(&nodes[0]);
    a.join("s", second).expect("join");
    a.join("other", second).expect("join another group");
    a.leave("s", first).expect("leave");
    let joined = within(subscription.next()).await;
    assert_eq!(joined, Some(GroupEvent::Joined { group: "s".into(), pid: second, times: 1 }));
    let left = within(subscription.next()).await;
    assert_eq!(left, Some(GroupEvent::Left { group: "s".into(), pid: first, times: 1 }));

    // A subscriber with a queue of 2 that reads nothing while 10 join.
    let small = Groups::start_scope(
        &nodes[1],
        "small",
        GroupsConfig { subscription_queue: 2, ..GroupsConfig::default() },
    )
    .await
    .expect("scope");
    let mut lagging = small.subscribe(None);
    let pids: Vec<_> = (0..10).map(|_| spawn_worker(&nodes[1])).collect();
    for pid in &pids {
        small.join("many", *pid).expect("join");
    }
    let mut events = Vec::new();
    while let Some(event) = within(lagging.next()).await {
        let resync = matches!(event, GroupEvent::Resync(_));
        events.push(event);
        if resync {
            break;
        }
    }
    assert_eq!(events.len(), 3, "two queued, then the resync: {events:?}");
    let mut sorted = pids.clone();
    sorted.sort();
    assert_eq!(events[2], GroupEvent::Resync([("many".to_owned(), sorted)].into()));
    for node in &nodes {
        node.shutdown();
    }
}

/// A process that keeps the group events cast to it.
struct Follower(Arc<std::sync::Mutex<Vec<GroupEvent>>>);

impl Process for Follower {
    type Message = GroupEvent;
    type Call = ();
    type Reply = ();

    async fn handle_cast(&mut self, event: GroupEvent, _ctx: &mut Context<Self>) {
        self.0.lock().expect("events").push(event);
    }
}

/// Distribunator's `node_rpc`: the handler runs on the node of the group's first member with
/// the caller's pid, and its callback runs there before the answer returns; a process
/// subscribed to a group is cast the snapshot, then each change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_node_rpc_and_process_subscriptions() {
    use shoal_registry::GroupCall;
    let (nodes, groups) = groups_cluster(3).await;
    let callbacks = Arc::new(AtomicUsize::new(0));
    for node in &nodes {
        let name = node.name().to_owned();
        node.register_rpc("whoami", move |call: GroupCall<u32>| {
            let name = name.clone();
            async move { (name, call.caller, call.args + 1) }
        });
        let callbacks = callbacks.clone();
        node.register_rpc("after", move |_: (String, Option<shoal_process::Pid>, u32)| {
            callbacks.fetch_add(1, Ordering::SeqCst);
            async {}
        });
    }
    let member = spawn_worker(&nodes[2]);
    groups[2].join("rpc", member).expect("join");
    until("seen on the first node", || groups[0].first("rpc") == Some(member)).await;
    let caller = spawn_worker(&nodes[0]);
    let (ran_on, seen_caller, answer): (String, Option<shoal_process::Pid>, u32) =
        within(groups[0].node_rpc("rpc", "whoami", 41u32, Some("after"), Some(caller), BOUND))
            .await
            .expect("node_rpc");
    assert_eq!((ran_on.as_str(), seen_caller, answer), (nodes[2].name(), Some(caller), 42));
    assert_eq!(callbacks.load(Ordering::SeqCst), 1, "the callback ran before the answer");

    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let follower = nodes[1].runtime().spawn(Follower(events.clone())).pid();
    groups[1].subscribe_process(Some("rpc"), follower).expect("subscribe");
    let second = spawn_worker(&nodes[0]);
    groups[0].join("rpc", second).expect("join");
    eventually("the follower saw the snapshot and the join", || {
        let seen = events.lock().expect("events").clone();
        let ok = seen.len() == 2
            && seen[0] == GroupEvent::Resync([("rpc".to_owned(), vec![member])].into())
            && seen[1] == GroupEvent::Joined { group: "rpc".into(), pid: second, times: 1 };
        async move { ok }
    })
    .await;
    for node in &nodes {
        node.shutdown();
    }
}

/// A waiter that gives up (its acquisition dropped while queued) leaves the queue: the lock
/// is not handed to a holder that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_gives_up_is_not_handed_the_lock() {
    let cluster = Cluster::start(3).await;
    let [a, b, c] = [&cluster.registries[0], &cluster.registries[1], &cluster.registries[2]];
    let held = within(a.lock("q", LockOptions::default()))
        .await
        .expect("lock")
        .acquired()
        .expect("acquired");
    let waiting = {
        let b = b.clone();
        tokio::spawn(async move { b.lock("q", LockOptions::default()).await })
    };
    eventually("b waits in the queue", || {
        let a = a.clone();
        async move { a.lock_info("q").await.ok().flatten().is_some_and(|info| info.waiters == 1) }
    })
    .await;
    waiting.abort();
    eventually("b's waiter left the queue", || {
        let a = a.clone();
        async move { a.lock_info("q").await.ok().flatten().is_some_and(|info| info.waiters == 0) }
    })
    .await;
    within(held.unlock()).await.expect("unlock");
    let free = within(c.lock("q", LockOptions::default().non_blocking())).await.expect("lock");
    assert!(matches!(free, LockResult::Acquired(_)), "{free:?}");
    cluster.stop().await;
}

/// A node that stops a scope while it stays connected: the other nodes drop its members at
/// once, and see them again when it starts the scope afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_stopped_on_a_connected_node_takes_its_members_away() {
    let (nodes, groups) = groups_cluster(2).await;
    let pid = spawn_worker(&nodes[1]);
    groups[1].join("g", pid).expect("join");
    until("a sees b's member", || groups[0].members("g").len() == 1).await;
    within(groups[1].stop()).await;
    until("a dropped b's member", || groups[0].members("g").is_empty()).await;
    assert!(nodes[0].is_connected(nodes[1].name()), "the nodes stay connected");
    let again = Groups::start(&nodes[1], GroupsConfig::default()).await.expect("scope again");
    again.join("g", spawn_worker(&nodes[1])).expect("join");
    until("a sees the new member", || groups[0].members("g").len() == 1).await;
    for node in &nodes {
        node.shutdown();
    }
}
