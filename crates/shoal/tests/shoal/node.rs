//! `shoal::Node` over real TCP on loopback (port 0): a node alone is a working cluster of one;
//! a node joins through a seed with retries; the Paxos acceptor set grows to its target one
//! acceptor at a time as nodes join and no further; readiness follows the quorum; `shutdown`
//! leaves and `abort` crashes.
//!
//! Every wait is bounded ([`BOUND`]): a condition is polled until it holds, never a fixed
//! sleep.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use shoal::broadcast::BroadcastConfig;
use shoal::hub::{HubChild, HubConfig, StartOptions};
use shoal::node::{NodeBuilder, StartError};
use shoal::prelude::*;
use shoal::registry::LockOptions;
use shoal::transport::DownReason;

/// Every wait in these tests (and the dashboard's) is bounded by this.
pub(super) const BOUND: Duration = Duration::from_secs(30);

/// Quick failure detection, for tests.
pub(super) fn builder(name: &str, key: &ClusterKey) -> NodeBuilder {
    Node::builder(name).key(key.clone()).transport(|transport| {
        transport
            .heartbeat(Duration::from_millis(100), Duration::from_millis(1_000))
            .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300))
            .gossip_interval(Duration::from_millis(200))
    })
}

pub(super) async fn within<T>(work: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, work).await.expect("finished within the bound")
}

/// Polls `check` until it holds, at most [`BOUND`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + BOUND;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "not within {BOUND:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The acceptor set `node` runs, sorted, and its version.
async fn acceptors(node: &Node) -> (u64, Vec<String>) {
    let (version, mut names) = node.paxos().expect("paxos runs").acceptors().await.expect("runs");
    names.sort();
    (version, names)
}

/// Answers calls with its argument; a hub child and a registered process.
pub(super) struct Echo;

impl Process for Echo {
    type Message = ();
    type Call = String;
    type Reply = String;

    async fn handle_cast(&mut self, (): (), _: &mut Context<Self>) {}

    async fn handle_call(&mut self, text: String, reply: ReplyTo<String>, _: &mut Context<Self>) {
        reply.send(text);
    }

    fn remote_messages() -> Option<Codec<Self>> {
        Some(Codec::msgpack())
    }
}

/// A node with no peers and nothing configured is a working cluster of one: it becomes ready,
/// and names, locks, groups, broadcast, a hub and a distributed supervisor all work on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_alone_is_a_working_cluster_of_one() {
    let node = within(Node::builder("solo").hub("jobs", HubConfig::default()).start())
        .await
        .expect("starts");
    within(node.ready()).await;
    assert!(node.is_ready());
    assert_eq!(acceptors(&node).await, (0, vec!["solo".to_owned()]));

    let echo = node.runtime().spawn(Echo);
    let registry = node.registry().expect("the registry runs");
    within(registry.register("echo", echo.pid(), Vec::new())).await.expect("registered");
    assert_eq!(within(registry.lookup("echo")).await.expect("looked up"), Some(echo.pid()));
    let locked = within(registry.lock("nightly", LockOptions::default())).await.expect("lock");
    assert!(matches!(locked, LockResult::Acquired(_)), "{locked:?}");

    let groups = node.groups().expect("groups run");
    groups.join("room", echo.pid()).expect("joined");
    assert_eq!(&*groups.members("room"), &[echo.pid()]);

    node.runtime().register_factory("echo", |(): ()| Echo).expect("a fresh factory");
    let hub = node.hub("jobs").expect("the hub runs");
    let spec = ChildSpec::new("job-1", "echo", &()).expect("encodes");
    let started =
        within(hub.init_children(vec![HubChild::new(spec.clone())], StartOptions::default()))
            .await
            .expect("the hub takes the batch");
    assert!(started.iter().all(|(_, result)| result.is_ok()), "{started:?}");
    assert!(matches!(node.hub("nope"), Err(NodeError::NoHub(_))));

    let supervisor = within(node.start_supervisor("workers", Default::default()))
        .await
        .expect("a distributed supervisor starts");
    let spec = ChildSpec::new("worker", "echo", &()).expect("encodes");
    let started = within(supervisor.start_child(spec)).await.expect("starts a child");
    assert_eq!(started.node, "solo");
    assert_eq!(node.supervisor("workers").expect("found").name(), "workers");

    within(node.shutdown()).await;
}

/// Joining retries until a seed answers: a node started before its seed joins once the seed
/// is up; one whose seed never comes fails with `StartError::Join` after its join timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_with_retries_and_says_when_it_cannot() {
    let key = ClusterKey::generate();
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let seed: SocketAddr = free.local_addr().expect("its address");
    drop(free);
    let joiner = tokio::spawn(builder("late", &key).join(seed).start());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!joiner.is_finished(), "it keeps trying while the seed is down");
    let first = within(builder("first", &key).listen(seed).start()).await.expect("starts");
    let late = within(joiner).await.expect("no panic").expect("joins once the seed is up");
    assert_eq!(late.transport().nodes(), vec!["first".to_owned()]);
    within(late.ready()).await;

    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let nobody = free.local_addr().expect("its address");
    drop(free);
    let refused = within(
        builder("alone", &key).join(nobody).join_timeout(Duration::from_millis(300)).start(),
    )
    .await;
    assert!(matches!(refused, Err(StartError::Join { .. })), "{refused:?}");
    within(late.shutdown()).await;
    within(first.shutdown()).await;
}

/// The acceptor set grows from the founder to the target (3) one acceptor at a time as nodes
/// join (version 0 to 2, every node running the same set), never past it (a fourth node
/// joins as a proposer only); names written before each step are kept; and a node's
/// readiness drops when a majority of the acceptors is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acceptor_set_grows_to_its_target_one_at_a_time() {
    let key = ClusterKey::generate();
    let a = within(builder("a", &key).start()).await.expect("a starts");
    within(a.ready()).await;
    let echo = a.runtime().spawn(Echo);
    let registry = a.registry().expect("runs");
    within(registry.register("before-growth", echo.pid(), Vec::new())).await.expect("registered");

    let mut nodes = vec![a];
    for name in ["b", "c", "d"] {
        let seed = nodes[0].listen_addr();
        let node = within(builder(name, &key).join(seed).start()).await.expect("joins");
        within(node.ready()).await;
        nodes.push(node);
    }
    let everyone = nodes.clone();
    eventually("every node runs acceptors {a, b, c}, version 2", || {
        let everyone = everyone.clone();
        async move {
            for node in &everyone {
                if acceptors(node).await != (2, vec!["a".into(), "b".into(), "c".into()]) {
                    return false;
                }
            }
            true
        }
    })
    .await;
    // Not past the target, however long it runs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for node in &nodes {
        assert_eq!(acceptors(node).await, (2, vec!["a".into(), "b".into(), "c".into()]));
    }
    // The name written when a was the only acceptor is there for everyone.
    let on_d = within(nodes[3].registry().expect("runs").lookup("before-growth")).await;
    assert_eq!(on_d.expect("looked up"), Some(echo.pid()));

    // b and c crash: d keeps a and itself, no majority of {a, b, c}: not ready.
    let mut readiness = nodes[3].readiness();
    assert!(*readiness.borrow_and_update());
    let d = nodes.pop().expect("d");
    let c = nodes.pop().expect("c");
    let b = nodes.pop().expect("b");
    within(b.abort()).await;
    within(c.abort()).await;
    within(readiness.wait_for(|ready| !*ready)).await.expect("told");
    assert!(!d.is_ready());
    within(d.shutdown()).await;
    within(nodes.pop().expect("a").shutdown()).await;
}

/// `shutdown` says goodbye (the others see it leave at once); `abort` is a crash (the others
/// find out by failure detection, as the connection is lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_and_abort_crashes() {
    let key = ClusterKey::generate();
    let a = within(builder("a", &key).start()).await.expect("a starts");
    let b = within(builder("b", &key).join(a.listen_addr()).start()).await.expect("b joins");
    let c = within(builder("c", &key).join(a.listen_addr()).start()).await.expect("c joins");
    eventually("a sees b and c", || {
        let seen = a.transport().nodes().len() == 2;
        async move { seen }
    })
    .await;
    let left = a.transport().monitor_node("b");
    within(b.shutdown()).await;
    assert_eq!(within(left).await, DownReason::Left);
    let crashed = a.transport().monitor_node("c");
    within(c.abort()).await;
    let reason = within(crashed).await;
    assert_ne!(reason, DownReason::Left, "an abort says no goodbye");
    within(a.shutdown()).await;
}

/// Over managed membership (HyParView's active view of two owns the overlay's connections),
/// the facade's layers still reach every member: the acceptor set grows to three, a name
/// registered on the last node is found from the first, and a process on the first calls one
/// on the last, wherever the overlay put them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_cluster_grows_its_acceptors_and_reaches_every_member() {
    let key = ClusterKey::generate();
    let managed = |name: &str| {
        builder(name, &key).membership(Membership::Managed).broadcast(Some(BroadcastConfig {
            active_view_capacity: 2,
            ..BroadcastConfig::default()
        }))
    };
    let first = within(managed("m0").start()).await.expect("m0 starts");
    let mut nodes = vec![first];
    for name in ["m1", "m2", "m3", "m4"] {
        let seed = nodes[nodes.len() - 1].listen_addr();
        let node = within(managed(name).join(seed).start()).await.expect("joins");
        nodes.push(node);
    }
    for node in &nodes {
        within(node.ready()).await;
    }
    let everyone = nodes.clone();
    // A node the new configuration was not sent to (outside every acceptor's active view)
    // learns it from the acceptors when it next proposes: a read brings it.
    eventually("every node runs three acceptors", || {
        let everyone = everyone.clone();
        async move {
            for node in &everyone {
                let _ = node.paxos().expect("runs").get("probe").await;
                if acceptors(node).await.1.len() != 3 {
                    return false;
                }
            }
            true
        }
    })
    .await;

    let last = &nodes[4];
    last.runtime().register_factory("echo", |(): ()| Echo).expect("a fresh factory");
    let echo = last.runtime().spawn(Echo);
    let registry = last.registry().expect("runs");
    within(registry.register("far-echo", echo.pid(), Vec::new())).await.expect("registered");
    let found = within(nodes[0].registry().expect("runs").lookup("far-echo")).await;
    assert_eq!(found.expect("looked up"), Some(echo.pid()));
    let far = nodes[0].runtime().addr::<Echo>(echo.pid()).expect("an address");
    assert_eq!(within(far.call("across".to_owned())).await.expect("answered"), "across");
    for node in nodes {
        within(node.shutdown()).await;
    }
}
