//! The distributed supervisor (feature `distributed`) over real TCP on loopback, three nodes:
//! children named and unnamed, one live child per name, lookups both ways agreeing on every
//! node, messages by name from a node that does not run the child, termination, failover by
//! name when a node is lost, a forced node, listeners, and a distributed supervisor run under
//! a local supervisor.
//!
//! Every wait is bounded ([`BOUND`]): a condition is polled until it holds, or an event
//! waited for, never a fixed sleep.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::Location;
use std::time::Duration;

use shoal_hub::core::{Ring, TableConfig};
use shoal_hub::{ChildError, HubConfig, MAX_CHILD_ID};
use shoal_process::{ChildSpec, Codec, Context, ExitReason, Pid, Process, ReplyTo};
use shoal_supervisor::{
    DistributedChild, DistributedEvent, DistributedEvents, DistributedStartError,
    DistributedSupervisor, DistributedSupervisorConfig, DistributedSupervisorError,
    DynamicSupervisorRef, DynamicSupervisorSpec, StopCause, SupervisorError,
};
use shoal_transport::{ClusterKey, Node, NodeBuilder};

const KEY_HEX: &str = "5f0c9a3e71d24b86e9a05c1f38d7b26ae40f9c5d1b83726f0ad94e6b3c5a8217";

/// Every wait in these tests is bounded by this.
const BOUND: Duration = Duration::from_secs(30);

/// Ring entries per node (fewer than the default: quicker rings).
const VNODES: u32 = 128;

/// The nodes of every test's cluster.
const NODES: [&str; 3] = ["d0", "d1", "d2"];

fn builder(name: &str) -> NodeBuilder {
    Node::builder(name, ClusterKey::from_hex(KEY_HEX).expect("the test key is valid"))
        .heartbeat(Duration::from_millis(100), Duration::from_millis(1_000))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300))
        .gossip_interval(Duration::from_millis(200))
}

/// Quick failover: a node down for 300 ms has its children started elsewhere.
fn config() -> DistributedSupervisorConfig {
    let hub = HubConfig {
        table: TableConfig {
            down_after: Duration::from_millis(300),
            adopt_after: Duration::from_millis(200),
            retry_after: Duration::from_secs(1),
            settle: Duration::from_millis(300),
            vnodes: VNODES,
            ..TableConfig::default()
        },
        sync_every: Duration::from_millis(200),
        tick: Duration::from_millis(20),
        ..HubConfig::default()
    };
    DistributedSupervisorConfig { hub, ..DistributedSupervisorConfig::default() }
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

/// Polls `check` until it holds, or panics after [`BOUND`].
#[track_caller]
fn until(what: &str, mut check: impl FnMut() -> bool) -> impl Future<Output = ()> {
    let caller = Location::caller();
    async move {
        let deadline = tokio::time::Instant::now() + BOUND;
        while !check() {
            assert!(tokio::time::Instant::now() < deadline, "{caller}: timed out until {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Waits for the listener's next event that `wanted` picks, or panics after [`BOUND`];
/// the events before it are returned with it.
#[track_caller]
fn event(
    events: &mut DistributedEvents,
    mut wanted: impl FnMut(&DistributedEvent) -> bool,
) -> impl Future<Output = Vec<DistributedEvent>> {
    within(async move {
        let mut seen = Vec::new();
        loop {
            let event = events.recv().await.expect("the supervisor runs");
            let done = wanted(&event);
            seen.push(event);
            if done {
                return seen;
            }
        }
    })
}

/// Cast to a [`Room`], it crashes.
const CRASH: u64 = u64::MAX;

/// A child: counts what it is cast (or sent); a call answers its node and the count.
struct Room {
    node: String,
    count: u64,
}

impl Process for Room {
    type Message = u64;
    type Call = ();
    type Reply = (String, u64);

    async fn handle_cast(&mut self, add: u64, ctx: &mut Context<Self>) {
        if add == CRASH {
            ctx.stop(ExitReason::custom("asked to crash"));
        }
        self.count += add;
    }

    async fn handle_call(&mut self, (): (), reply: ReplyTo<(String, u64)>, _: &mut Context<Self>) {
        reply.send((self.node.clone(), self.count));
    }

    fn remote_messages() -> Option<Codec<Self>> {
        Some(Codec::msgpack())
    }
}

fn room() -> ChildSpec {
    ChildSpec::new("ignored: the name replaces it", "room", &()).expect("spec")
}

fn named(name: &str) -> DistributedChild {
    DistributedChild::new(room()).name(name)
}

/// The first of `prefix/0`, `prefix/1`... that node `node` does not own among [`NODES`].
fn not_owned_by(node: &str, prefix: &str) -> String {
    let ring = Ring::with_vnodes(NODES, VNODES);
    (0..).map(|i| format!("{prefix}/{i}")).find(|name| ring.owner(name) != Some(node)).expect("one")
}

struct Cluster {
    nodes: Vec<Node>,
    sups: Vec<Option<DistributedSupervisor>>,
    /// Node 0's listener, subscribed before the other nodes started the supervisor.
    events: DistributedEvents,
}

impl Cluster {
    /// Three nodes in a full mesh, each with the `room` factory; supervisor `rooms` on each.
    async fn start() -> Cluster {
        Self::start_with(config()).await
    }

    /// [`Cluster::start`], with the supervisors configured by `config`.
    async fn start_with(config: DistributedSupervisorConfig) -> Cluster {
        let nodes = Self::nodes().await;
        let mut sups = Vec::new();
        let mut events = None;
        for node in &nodes {
            let sup = DistributedSupervisor::start(node, "rooms", config.clone()).await;
            let sup = sup.expect("starts");
            events.get_or_insert_with(|| sup.subscribe());
            sups.push(Some(sup));
        }
        let cluster = Cluster { nodes, sups, events: events.expect("a listener") };
        cluster.until_nodes(NODES.len()).await;
        cluster
    }

    async fn nodes() -> Vec<Node> {
        let mut nodes = Vec::new();
        for name in NODES {
            let node = builder(name).start().await.expect("node starts");
            node.runtime()
                .register_factory("room", move |(): ()| Room { node: name.to_owned(), count: 0 })
                .expect("factory");
            nodes.push(node);
        }
        for node in &nodes[1..] {
            node.join(nodes[0].listen_addr()).await.expect("join");
        }
        until("a full mesh", || nodes.iter().all(|node| node.nodes().len() == NODES.len() - 1))
            .await;
        nodes
    }

    fn sup(&self, i: usize) -> &DistributedSupervisor {
        self.sups[i].as_ref().expect("a running supervisor")
    }

    fn live(&self) -> impl Iterator<Item = &DistributedSupervisor> {
        self.sups.iter().flatten()
    }

    async fn until_nodes(&self, n: usize) {
        until("every node sees every node", || self.live().all(|sup| sup.nodes().len() == n)).await;
    }

    /// Waits until every live node's `children()` is `expected`.
    async fn until_children(&self, expected: &BTreeMap<String, Pid>) {
        until("children() agrees with the expected map on every node", || {
            self.live().all(|sup| sup.children() == *expected)
        })
        .await;
    }

    async fn stop(self) {
        for sup in self.sups.iter().flatten() {
            within(sup.stop()).await;
        }
        for node in &self.nodes {
            node.shutdown();
        }
    }
}

/// A named child and one with a generated name start once and are found by name, and by
/// pid, on every node; a taken name is refused with the running child's node and pid; a
/// forced node is honoured; bad input is refused before anything starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_are_started_by_name_and_found_on_every_node() {
    let cluster = Cluster::start().await;
    let a = within(cluster.sup(0).start_child(named("room/a"))).await.expect("starts");
    assert_eq!(a.name, "room/a");
    assert_eq!(Some(a.node.as_str()), Ring::with_vnodes(NODES, VNODES).owner("room/a"));
    let generated = within(cluster.sup(1).start_child(room())).await.expect("starts");
    assert!(generated.name.starts_with("d1:"), "{generated:?}");
    let again = within(cluster.sup(1).start_child(room())).await.expect("starts");
    assert_ne!(again.name, generated.name, "generated names are unique");

    // One live child per name: the refusal names the running child, from any node.
    assert_eq!(
        within(cluster.sup(2).start_child(named("room/a"))).await,
        Err(DistributedSupervisorError::AlreadyStarted {
            name: "room/a".into(),
            node: a.node.clone(),
            pid: a.pid,
        })
    );

    // A forced node, which the ring would not have chosen.
    let forced_name = not_owned_by("d2", "forced");
    let forced = within(cluster.sup(0).start_child(named(&forced_name).on_node("d2")))
        .await
        .expect("starts");
    assert_eq!(forced.node, "d2");

    let expected: BTreeMap<String, Pid> = [&a, &generated, &again, &forced]
        .into_iter()
        .map(|child| (child.name.clone(), child.pid))
        .collect();
    cluster.until_children(&expected).await;
    for sup in cluster.live() {
        for (name, pid) in &expected {
            assert_eq!(sup.whereis(name), Some(*pid));
            assert_eq!(sup.whois(*pid).as_deref(), Some(name.as_str()));
        }
        assert_eq!(sup.whereis("nobody"), None);
    }
    assert_eq!(cluster.sup(0).whois(cluster.nodes[0].runtime().system_pid()), None);

    // Bad input.
    let sup = cluster.sup(0);
    assert_eq!(
        sup.start_child(named("")).await,
        Err(DistributedSupervisorError::BadName("".into()))
    );
    let long = "x".repeat(MAX_CHILD_ID + 1);
    assert_eq!(sup.start_child(named(&long)).await, Err(DistributedSupervisorError::BadName(long)));
    assert_eq!(
        sup.start_child(named("room/b").on_node("nowhere")).await,
        Err(DistributedSupervisorError::NotInSupervisor("nowhere".into()))
    );
    let broken = ChildSpec::new("x", "no-such-factory", &()).expect("spec");
    let refused = within(sup.start_child(DistributedChild::new(broken).name("broken"))).await;
    assert!(
        matches!(
            &refused,
            Err(DistributedSupervisorError::Start { name, error: ChildError::Start(why) })
                if name == "broken" && why.contains("no-such-factory")
        ),
        "{refused:?}"
    );
    let node = &cluster.nodes[0];
    assert!(matches!(
        DistributedSupervisor::start(node, "", config()).await,
        Err(DistributedStartError::BadName(_))
    ));
    assert!(matches!(
        DistributedSupervisor::start(node, &"x".repeat(MAX_CHILD_ID), config()).await,
        Err(DistributedStartError::BadName(_))
    ));
    let mut two_copies = config();
    two_copies.hub.table.replicas = 2;
    assert!(matches!(
        DistributedSupervisor::start(node, "copies", two_copies).await,
        Err(DistributedStartError::BadConfig(_))
    ));
    assert!(
        DistributedSupervisor::start(&cluster.nodes[0], "rooms", config()).await.is_err(),
        "the supervisor runs on this node already"
    );
    cluster.until_children(&expected).await;
    cluster.stop().await;
}

/// A child is called, cast to and sent to by name from a node that does not run it (in the
/// order sent); terminated from a third node, it is gone everywhere, and its name can be
/// started anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_is_reached_by_name_from_another_node_and_terminated() {
    let cluster = Cluster::start().await;
    let started =
        within(cluster.sup(0).start_child(named("counter").on_node("d0"))).await.expect("starts");
    let sup = cluster.sup(1);
    cluster.until_children(&[("counter".to_owned(), started.pid)].into()).await;
    within(sup.cast::<Room>("counter", 2)).await.expect("cast");
    within(sup.send("counter", 3_u64)).await.expect("sent");
    assert_eq!(within(sup.call::<Room>("counter", ())).await.expect("answers"), ("d0".into(), 5));
    // The `via` form is a destination like any other.
    let by_via = cluster.nodes[2].runtime().target::<Room>(cluster.sup(2).via("counter"));
    assert_eq!(within(by_via.call(())).await.expect("answers"), ("d0".into(), 5));

    let mut events = cluster.sup(1).subscribe();
    within(cluster.sup(2).terminate_child("counter")).await.expect("terminated");
    cluster.until_children(&BTreeMap::new()).await;
    let ended = DistributedEvent::ChildStopped {
        name: "counter".into(),
        node: "d0".into(),
        cause: StopCause::Ended,
    };
    event(&mut events, |event| *event == ended).await;
    assert_eq!(
        within(cluster.sup(1).terminate_child("counter")).await,
        Err(DistributedSupervisorError::NotFound("counter".into()))
    );
    assert!(within(sup.call::<Room>("counter", ())).await.is_err(), "no child answers");
    let anew = within(cluster.sup(1).start_child(named("counter"))).await.expect("starts anew");
    assert_ne!(anew.pid, started.pid);
    cluster.until_children(&[("counter".to_owned(), anew.pid)].into()).await;
    cluster.stop().await;
}

/// A node is lost (shut down, no goodbye): its permanent children, a forced one included,
/// start again under their names on the nodes that own them now, and answer by name; the
/// listener tells the node's loss, each child's loss and its restart elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_children_of_a_lost_node_restart_under_their_names_elsewhere() {
    let mut cluster = Cluster::start().await;
    let on_lost =
        within(cluster.sup(0).start_child(named(&not_owned_by("d2", "forced")).on_node("d2")))
            .await
            .expect("starts");
    let mut children = vec![on_lost.clone()];
    for i in 0..6 {
        let child = within(cluster.sup(1).start_child(named(&format!("room/{i}")))).await;
        children.push(child.expect("starts"));
    }
    let expected: BTreeMap<String, Pid> =
        children.iter().map(|child| (child.name.clone(), child.pid)).collect();
    cluster.until_children(&expected).await;
    let seen = event(&mut cluster.events, |event| {
        *event
            == DistributedEvent::ChildStarted {
                name: on_lost.name.clone(),
                node: "d2".into(),
                pid: on_lost.pid,
            }
    })
    .await;
    for node in ["d1", "d2"] {
        assert!(seen.contains(&DistributedEvent::NodeUp { node: node.into() }), "{seen:?}");
    }

    cluster.sups[2] = None;
    cluster.nodes[2].shutdown();
    cluster.until_nodes(2).await;
    let lost: Vec<&str> =
        children.iter().filter(|c| c.node == "d2").map(|c| c.name.as_str()).collect();
    for name in &lost {
        let moved = until("the child answers by name from a live node", || {
            cluster.sup(0).whereis(name).is_some_and(|pid| pid != expected[*name])
        });
        moved.await;
        let answer = within(cluster.sup(0).call::<Room>(name, ())).await.expect("answers");
        assert_ne!(answer.0, "d2");
    }
    // The others did not move.
    for child in children.iter().filter(|c| c.node != "d2") {
        assert_eq!(cluster.sup(0).whereis(&child.name), Some(child.pid));
    }
    let after = cluster.sup(0).children();
    assert_eq!(after.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    cluster.until_children(&after).await;

    let seen = event(&mut cluster.events, |event| {
        matches!(event, DistributedEvent::ChildRestartedElsewhere { name, from, .. }
            if *name == on_lost.name && from == "d2")
    })
    .await;
    assert!(seen.contains(&DistributedEvent::NodeDown { node: "d2".into(), left: false }));
    assert!(seen.contains(&DistributedEvent::ChildStopped {
        name: on_lost.name.clone(),
        node: "d2".into(),
        cause: StopCause::Lost,
    }));
    cluster.stop().await;
}

/// Restart intensity is counted per child across the cluster (by the hub): a child that
/// keeps crashing is restarted until its budget is spent, then fails once, told to the
/// listener as its end and its failure, and is gone from every node's children; its name
/// can be started anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_keeps_crashing_fails_once_across_the_cluster() {
    let mut config = config();
    config.hub.max_restarts = 2;
    config.hub.restart_window = Duration::from_secs(60);
    let mut cluster = Cluster::start_with(config).await;
    let first =
        within(cluster.sup(0).start_child(named("fragile").on_node("d1"))).await.expect("starts");
    cluster.until_children(&[("fragile".to_owned(), first.pid)].into()).await;
    let mut old = first.pid;
    for restart in 1..=2 {
        within(cluster.sup(2).cast::<Room>("fragile", CRASH)).await.expect("cast");
        until("the child restarted, seen on every node", || {
            cluster.live().all(|sup| sup.whereis("fragile").is_some_and(|pid| pid != old))
        })
        .await;
        old = cluster.sup(2).whereis("fragile").expect("restarted");
        let info = cluster.sup(0).hub().child("fragile").expect("known");
        assert!(info.restarts >= restart, "{info:?}");
    }
    within(cluster.sup(2).cast::<Room>("fragile", CRASH)).await.expect("cast");
    let seen = event(
        &mut cluster.events,
        |event| matches!(event, DistributedEvent::ChildFailed { name, .. } if name == "fragile"),
    )
    .await;
    assert_eq!(
        seen.last(),
        Some(&DistributedEvent::ChildFailed {
            name: "fragile".into(),
            node: "d1".into(),
            restarts: 2
        })
    );
    assert!(seen.contains(&DistributedEvent::ChildStopped {
        name: "fragile".into(),
        node: "d1".into(),
        cause: StopCause::Ended,
    }));
    cluster.until_children(&BTreeMap::new()).await;
    let anew = within(cluster.sup(1).start_child(named("fragile"))).await.expect("starts anew");
    cluster.until_children(&[("fragile".to_owned(), anew.pid)].into()).await;
    cluster.stop().await;
}

/// A distributed supervisor runs as a child of a local supervisor on each node: found there
/// by name, refused a second time on one node, and stopped with its local supervisor, its
/// children then restarting on the other nodes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_supervisor_runs_under_a_local_supervisor() {
    let nodes = Cluster::nodes().await;
    let mut locals = Vec::new();
    for node in &nodes {
        let local = DynamicSupervisorRef::start(node.runtime(), DynamicSupervisorSpec::default())
            .await
            .expect("starts");
        let child = DistributedSupervisor::child_spec(node, "managed", config());
        within(local.start_child(child)).await.expect("the distributed supervisor starts");
        locals.push(local);
    }
    let mut sups = Vec::new();
    for node in &nodes {
        let found = within(DistributedSupervisor::find(node.runtime(), "managed")).await;
        sups.push(found.expect("found by name"));
    }
    until("every node sees every node", || sups.iter().all(|sup| sup.nodes().len() == 3)).await;
    let twice = DistributedSupervisor::child_spec(&nodes[0], "managed", config());
    assert!(
        matches!(within(locals[0].start_child(twice)).await, Err(SupervisorError::Start { .. })),
        "one distributed supervisor of a name per node"
    );

    let child = within(sups[0].start_child(named("held").on_node("d1"))).await.expect("starts");
    assert_eq!(child.node, "d1");
    let mut events = sups[0].subscribe();
    within(locals[1].stop()).await;
    assert!(DistributedSupervisor::find(nodes[1].runtime(), "managed").await.is_none());
    let mut seen = event(&mut events, |event| {
        matches!(event, DistributedEvent::ChildRestartedElsewhere { name, .. } if name == "held")
    })
    .await;
    // The node's departure and the child's restart may be told in either order.
    let left = DistributedEvent::NodeDown { node: "d1".into(), left: true };
    if !seen.contains(&left) {
        seen.extend(event(&mut events, |event| *event == left).await);
    }
    until("d2 sees the restarted child", || {
        sups[2].whereis("held").is_some_and(|pid| pid != child.pid)
    })
    .await;
    let answer = within(sups[2].call::<Room>("held", ())).await.expect("answers by name");
    assert_ne!(answer.0, "d1");
    for local in &locals {
        within(local.stop()).await;
    }
    for node in &nodes {
        node.shutdown();
    }
}
