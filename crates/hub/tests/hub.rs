//! The hub over real TCP on loopback: batches, queries, terminations, moves, failover,
//! redistribution on a join, restarts, events and bad input, with three or four nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::panic::Location;
use std::time::Duration;

use shoal_hub::core::{OnJoin, Partition, Redundancy, Ring, Role, TableConfig};
use shoal_hub::{
    ChildError, ChildStatus, Handover, Handovers, Hub, HubChild, HubConfig, HubError, HubEvent,
    Migration, StartOptions, TerminateError,
};
use shoal_process::{ChildSpec, Context, ExitReason, Pid, Process, ReplyTo, Restart};
use shoal_transport::{ClusterKey, Node, NodeBuilder};

const KEY_HEX: &str = "5f0c9a3e71d24b86e9a05c1f38d7b26ae40f9c5d1b83726f0ad94e6b3c5a8217";

/// Every wait in these tests is bounded by this.
const BOUND: Duration = Duration::from_secs(30);

/// Ring entries per node in these tests (fewer than the default: quicker rings).
const VNODES: u32 = 128;

fn builder(name: &str) -> NodeBuilder {
    Node::builder(name, ClusterKey::from_hex(KEY_HEX).expect("the test key is valid"))
        .heartbeat(Duration::from_millis(100), Duration::from_millis(1_000))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300))
        .gossip_interval(Duration::from_millis(200))
}

fn config() -> HubConfig {
    HubConfig {
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

/// Polls `check` until it holds, or panics after [`BOUND`].
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + BOUND;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A child: answers a call with its node's name; a cast "crash" makes it crash.
struct Room {
    node: String,
}

impl Process for Room {
    type Message = String;
    type Call = ();
    type Reply = String;

    async fn handle_cast(&mut self, message: String, ctx: &mut Context<Self>) {
        if message == "crash" {
            ctx.stop(ExitReason::custom("asked to crash"));
        }
    }

    async fn handle_call(&mut self, (): (), reply: ReplyTo<String>, _: &mut Context<Self>) {
        reply.send(self.node.clone());
    }

    fn remote_messages() -> Option<shoal_process::Codec<Self>> {
        Some(shoal_process::Codec::msgpack())
    }
}

fn room(id: &str) -> HubChild {
    HubChild::new(ChildSpec::new(id, "room", &()).expect("spec"))
}

fn rooms(count: usize) -> Vec<HubChild> {
    (0..count).map(|i| room(&format!("room/{i}"))).collect()
}

struct Cluster {
    nodes: Vec<Node>,
    hubs: Vec<Option<Hub>>,
}

impl Cluster {
    /// `n` nodes in a full mesh, each with the `room` factory and hub `rooms` running.
    async fn start(n: usize, config: HubConfig) -> Cluster {
        let mut nodes = Vec::new();
        for i in 0..n {
            let node = builder(&format!("h{i}")).start().await.expect("node starts");
            let name = node.name().to_owned();
            node.runtime()
                .register_factory("room", move |(): ()| Room { node: name.clone() })
                .expect("factory");
            node.runtime()
                .register_factory("counter", |(): ()| Counter { count: 0, role: None })
                .expect("factory");
            nodes.push(node);
        }
        for node in &nodes[1..] {
            node.join(nodes[0].listen_addr()).await.expect("join");
        }
        until("a full mesh", || nodes.iter().all(|node| node.nodes().len() == n - 1)).await;
        let mut hubs = Vec::new();
        for node in &nodes {
            hubs.push(Some(Hub::start(node, "rooms", config.clone()).await.expect("hub starts")));
        }
        let cluster = Cluster { nodes, hubs };
        cluster.until_nodes(n).await;
        cluster
    }

    fn hub(&self, i: usize) -> &Hub {
        self.hubs[i].as_ref().expect("a running hub")
    }

    fn live(&self) -> impl Iterator<Item = &Hub> {
        self.hubs.iter().flatten()
    }

    async fn until_nodes(&self, n: usize) {
        until("every hub sees every node", || self.live().all(|hub| hub.nodes().len() == n)).await;
    }

    /// Where each child runs, from the live nodes' own lists: child → nodes.
    fn placement(&self) -> BTreeMap<String, Vec<String>> {
        let mut placement: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for hub in self.live() {
            for row in hub.which_children_local() {
                if matches!(row.status, ChildStatus::Running(_)) {
                    placement.entry(row.child).or_default().push(row.node.expect("a node"));
                }
            }
        }
        placement
    }

    /// Waits until each of `children` runs exactly once, on its owner among the live hubs,
    /// and every live hub sees it there.
    async fn until_placed(&self, children: &BTreeSet<String>) {
        let live: Vec<String> = self.live().map(|hub| hub.nodes()).next().unwrap_or_default();
        let ring = Ring::with_vnodes(live.iter().map(String::as_str), VNODES);
        until("every child runs once, on its owner, seen everywhere", || {
            let placement = self.placement();
            children.iter().all(|child| {
                let Some(nodes) = placement.get(child) else { return false };
                nodes.len() == 1
                    && ring.owner(child) == Some(nodes[0].as_str())
                    && self.live().all(|hub| {
                        hub.child(child).is_some_and(|info| {
                            info.copies.len() == 1 && info.copies[0].0 == nodes[0]
                        })
                    })
            }) && placement.keys().all(|child| children.contains(child))
        })
        .await;
    }

    async fn stop(self) {
        for hub in self.hubs.iter().flatten() {
            within(hub.stop()).await;
        }
        for node in &self.nodes {
            node.shutdown();
        }
    }
}

fn ids(count: usize) -> BTreeSet<String> {
    (0..count).map(|i| format!("room/{i}")).collect()
}

/// A batch from one node starts each child once, on its owner; every node finds it, its
/// metadata and tags without the network; starting again is idempotent, or an error when
/// the caller checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_starts_each_child_once_on_its_owner_and_every_node_finds_it() {
    let cluster = Cluster::start(3, config()).await;
    let batch: Vec<HubChild> = rooms(300)
        .into_iter()
        .enumerate()
        .map(|(i, child)| child.meta(vec![i as u8]).tag(if i % 2 == 0 { "even" } else { "odd" }))
        .collect();
    let results = within(cluster.hub(0).init_children(batch, StartOptions::default()))
        .await
        .expect("the batch is accepted");
    assert_eq!(results.len(), 300);
    let ring = Ring::with_vnodes(["h0", "h1", "h2"], VNODES);
    let mut started: BTreeMap<String, Pid> = BTreeMap::new();
    for (child, result) in &results {
        let started_at = result.as_ref().unwrap_or_else(|e| panic!("{child}: {e}"));
        assert_eq!(Some(started_at.node.as_str()), ring.owner(child), "{child} not on its owner");
        started.insert(child.clone(), started_at.pid);
    }
    let per_node: BTreeMap<String, usize> = cluster
        .live()
        .map(|hub| (hub.nodes()[0].clone(), hub.which_children_local().len()))
        .collect();
    assert_eq!(
        cluster.live().map(|hub| hub.which_children_local().len()).sum::<usize>(),
        300,
        "{per_node:?}"
    );
    cluster.until_placed(&ids(300)).await;
    for hub in cluster.live() {
        assert_eq!(hub.pid("room/7"), Some(started["room/7"]));
        let info = hub.child("room/7").expect("known everywhere");
        assert_eq!(info.meta, vec![7]);
        assert_eq!(info.tags, vec!["odd".to_owned()]);
        assert_eq!(hub.children_by_tag("even").len(), 150);
        assert_eq!(hub.which_children_global().len(), 300);
        assert!(!hub.is_partitioned());
    }
    // A call to a child reaches the node it runs on.
    let pid = cluster.hub(0).pid("room/7").expect("a pid");
    let node: String = within(cluster.nodes[0].runtime().call(pid, (), Duration::from_secs(5)))
        .await
        .expect("the child answers");
    assert_eq!(Some(node.as_str()), ring.owner("room/7"));
    // Again: idempotent, the same pids; checked: each an error naming where it runs.
    let again = within(cluster.hub(1).init_children(rooms(300), StartOptions::default()))
        .await
        .expect("accepted");
    assert!(
        again.iter().all(|(child, result)| result.as_ref().is_ok_and(|s| s.pid == started[child]))
    );
    let checked = StartOptions { check_existing: true, ..StartOptions::default() };
    let again = within(cluster.hub(2).init_children(rooms(10), checked)).await.expect("accepted");
    for (child, result) in again {
        assert!(
            matches!(result, Err(ChildError::AlreadyStarted { pid, .. }) if pid == started[&child])
        );
    }
    cluster.stop().await;
}

/// Bad batches are refused whole; a child that cannot start says why; a rollback stops the
/// rest of its batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_a_failed_batch_rolls_back_when_asked() {
    let cluster = Cluster::start(3, config()).await;
    let hub = cluster.hub(0);
    assert_eq!(
        hub.init_children(Vec::new(), StartOptions::default()).await,
        Err(HubError::NoChildren)
    );
    assert_eq!(
        hub.init_children(vec![room("a"), room("a")], StartOptions::default()).await,
        Err(HubError::Duplicate("a".into()))
    );
    assert_eq!(
        hub.init_children(vec![room("")], StartOptions::default()).await,
        Err(HubError::BadId(String::new()))
    );
    let long = "x".repeat(shoal_hub::MAX_CHILD_ID + 1);
    assert!(matches!(
        hub.init_children(vec![room(&long)], StartOptions::default()).await,
        Err(HubError::BadId(_))
    ));
    let mut batch = rooms(20);
    batch.push(HubChild::new(ChildSpec::new("broken", "no-such-factory", &()).expect("spec")));
    let rollback = StartOptions { rollback: true, ..StartOptions::default() };
    let results = within(hub.init_children(batch, rollback)).await.expect("accepted");
    let broken = results.iter().find(|(child, _)| child == "broken").expect("reported");
    assert!(
        matches!(&broken.1, Err(ChildError::Start(why)) if why.contains("no-such-factory")),
        "{broken:?}"
    );
    assert!(
        results
            .iter()
            .filter(|(c, _)| c != "broken")
            .all(|(_, r)| r == &Err(ChildError::RolledBack))
    );
    until("the rolled-back children are gone", || cluster.placement().is_empty()).await;
    assert_eq!(
        hub.child_terminate("nobody", Duration::from_secs(1)).await,
        Err(TerminateError::NotFound("nobody".into()))
    );
    cluster.stop().await;
}

/// A terminated child is gone everywhere and stays gone; it may be started anew; a child
/// moved to a named node runs there and stays there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_and_redistribute_one_child() {
    let cluster = Cluster::start(3, config()).await;
    let results =
        within(cluster.hub(0).init_children(rooms(30), StartOptions::default())).await.expect("ok");
    assert!(results.iter().all(|(_, r)| r.is_ok()));
    cluster.until_placed(&ids(30)).await;
    within(cluster.hub(1).child_terminate("room/3", Duration::from_secs(5)))
        .await
        .expect("terminated");
    until("room/3 is gone everywhere", || cluster.live().all(|hub| hub.child("room/3").is_none()))
        .await;
    assert_eq!(
        cluster.hub(2).child_terminate("room/3", Duration::from_secs(1)).await,
        Err(TerminateError::NotFound("room/3".into()))
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!cluster.placement().contains_key("room/3"), "a terminated child came back");
    let again = within(cluster.hub(2).init_children(vec![room("room/3")], StartOptions::default()))
        .await
        .expect("ok");
    assert!(again[0].1.is_ok(), "{again:?}");
    // Move room/5 to a node that does not own it.
    let owner = cluster.placement()["room/5"][0].clone();
    let target = ["h0", "h1", "h2"].into_iter().find(|n| *n != owner).expect("another node");
    within(cluster.hub(0).child_redist_init("room/5", target, Duration::from_secs(5)))
        .await
        .expect("moved");
    until("room/5 runs on the target only", || {
        cluster.placement().get("room/5") == Some(&vec![target.to_owned()])
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        cluster.placement()["room/5"],
        vec![target.to_owned()],
        "it stays where it was moved"
    );
    // Stats: the one move was counted by the node that moved the child away, and the nodes'
    // own children add up to the thirty.
    let stats: Vec<_> = cluster.live().map(Hub::stats).collect();
    assert_eq!(stats.iter().map(|s| s.moves).sum::<u64>(), 1, "{stats:?}");
    assert_eq!(stats.iter().map(|s| s.children).sum::<u64>(), 30, "{stats:?}");
    assert_eq!(stats.iter().map(|s| s.handovers_done + s.handovers_failed).sum::<u64>(), 0);
    cluster.stop().await;
}

/// A node that stops its hub on purpose has its children started on their new owners at
/// once; one that is shut down (no goodbye) after the grace; nothing is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_children_of_a_node_that_leaves_or_dies_start_on_their_new_owners() {
    let mut cluster = Cluster::start(4, config()).await;
    let mut events = cluster.hub(0).subscribe();
    let results = within(cluster.hub(0).init_children(rooms(400), StartOptions::default()))
        .await
        .expect("ok");
    assert!(results.iter().all(|(_, r)| r.is_ok()));
    cluster.until_placed(&ids(400)).await;
    let hub = cluster.hubs[3].take().expect("h3");
    within(hub.stop()).await;
    drop(hub);
    cluster.until_nodes(3).await;
    cluster.until_placed(&ids(400)).await;
    // h2 dies: no goodbye.
    cluster.hubs[2] = None;
    cluster.nodes[2].shutdown();
    cluster.until_nodes(2).await;
    assert!(cluster.hub(0).is_partitioned(), "a node lost without leaving");
    cluster.until_placed(&ids(400)).await;
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event);
    }
    assert!(
        seen.contains(&HubEvent::NodeDown { node: "h3".into(), left: true }),
        "{:?}",
        &seen[..5.min(seen.len())]
    );
    assert!(seen.contains(&HubEvent::NodeDown { node: "h2".into(), left: false }));
    assert!(seen.iter().any(|e| matches!(e, HubEvent::Started { node, .. } if node == "h0")));
    cluster.stop().await;
}

/// A node that joins gets the children it now owns, about 1/N of them, moved (not
/// restarted where they were); with `OnJoin::Stay` none move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_receives_the_children_it_owns() {
    let mut cluster = Cluster::start(3, config()).await;
    let hub = cluster.hubs[2].take().expect("h2");
    within(hub.stop()).await;
    drop(hub);
    cluster.until_nodes(2).await;
    let results = within(cluster.hub(0).init_children(rooms(600), StartOptions::default()))
        .await
        .expect("ok");
    assert!(results.iter().all(|(_, r)| r.is_ok()));
    cluster.until_placed(&ids(600)).await;
    let before = cluster.placement();
    let mut events = cluster.hub(0).subscribe();
    cluster.hubs[2] = Some(Hub::start(&cluster.nodes[2], "rooms", config()).await.expect("hub"));
    cluster.until_nodes(3).await;
    cluster.until_placed(&ids(600)).await;
    let after = cluster.placement();
    let moved = before.iter().filter(|(child, nodes)| after[*child] != **nodes).count();
    assert!(after.iter().filter(|(_, nodes)| nodes[0] == "h2").count() == moved);
    assert!((120..=280).contains(&moved), "{moved} of 600 moved to the newcomer");
    let mut moves = 0;
    while let Ok(event) = events.try_recv() {
        if matches!(event, HubEvent::Moved { ref to, .. } if to == "h2") {
            moves += 1;
        }
    }
    assert_eq!(moves, moved);
    cluster.stop().await;

    let stay =
        HubConfig { table: TableConfig { on_join: OnJoin::Stay, ..config().table }, ..config() };
    let mut cluster = Cluster::start(2, stay.clone()).await;
    let hub = cluster.hubs[1].take().expect("h1");
    within(hub.stop()).await;
    drop(hub);
    cluster.until_nodes(1).await;
    within(cluster.hub(0).init_children(rooms(50), StartOptions::default())).await.expect("ok");
    cluster.hubs[1] = Some(Hub::start(&cluster.nodes[1], "rooms", stay).await.expect("hub"));
    cluster.until_nodes(2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        cluster.placement().values().all(|nodes| nodes == &vec!["h0".to_owned()]),
        "none moved"
    );
    cluster.stop().await;
}

/// A crashed child restarts where it ran; a temporary one that exits ends for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_child_restarts_and_a_temporary_one_ends() {
    let cluster = Cluster::start(2, config()).await;
    let temporary = HubChild::new(
        ChildSpec::new("temp", "room", &()).expect("spec").restart(Restart::Temporary),
    );
    let results = within(
        cluster.hub(0).init_children(vec![room("perm"), temporary], StartOptions::default()),
    )
    .await
    .expect("ok");
    assert!(results.iter().all(|(_, r)| r.is_ok()), "{results:?}");
    cluster.until_placed(&["perm".to_owned(), "temp".to_owned()].into()).await;
    let first = cluster.hub(0).pid("perm").expect("pid");
    cluster.nodes[0].runtime().cast(first, "crash".to_owned()).await.expect("cast");
    until("perm restarted", || {
        cluster.live().all(|hub| hub.pid("perm").is_some_and(|pid| pid != first))
    })
    .await;
    // The runtime's figures count the restart on the node that ran it.
    let host = cluster.nodes.iter().find(|node| node.id() == first.node()).expect("its node");
    assert_eq!(host.runtime().stats().restarts_total, 1);
    let temp = cluster.hub(1).pid("temp").expect("pid");
    cluster.nodes[0].runtime().cast(temp, "crash".to_owned()).await.expect("cast");
    until("temp gone everywhere", || cluster.live().all(|hub| hub.child("temp").is_none())).await;
    cluster.stop().await;
}

/// A child whose `init` fails while `failing` is set (see the intensity test).
struct Fragile {
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Process for Fragile {
    type Message = String;
    type Call = ();
    type Reply = ();

    async fn init(&mut self, _: &mut Context<Self>) -> Result<(), ExitReason> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ExitReason::custom("init fails"));
        }
        Ok(())
    }

    async fn handle_cast(&mut self, message: String, ctx: &mut Context<Self>) {
        if message == "crash" {
            ctx.stop(ExitReason::custom("asked to crash"));
        }
    }

    fn remote_messages() -> Option<shoal_process::Codec<Self>> {
        Some(shoal_process::Codec::msgpack())
    }
}

/// Restart intensity is counted per child across the cluster: a child that crashed twice
/// on one node and goes on crashing on the next fails there at the third restart of the
/// three allowed, not after three more; a failover start whose `init` fails is retried at
/// once and fails the same way. Each failure is told once ([`HubEvent::Failed`]), and no
/// node starts the child again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_crashes_wherever_it_runs_fails_once_across_the_cluster() {
    let intensity =
        HubConfig { max_restarts: 3, restart_window: Duration::from_secs(60), ..config() };
    let mut cluster = Cluster::start(3, intensity).await;
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for node in &cluster.nodes {
        let failing = failing.clone();
        node.runtime()
            .register_factory("fragile", move |(): ()| Fragile { failing: failing.clone() })
            .expect("factory");
    }
    let fragile = |id: &str| HubChild::new(ChildSpec::new(id, "fragile", &()).expect("spec"));
    let results = within(
        cluster.hub(0).init_children(vec![fragile("f"), fragile("g")], StartOptions::default()),
    )
    .await
    .expect("ok");
    assert!(results.iter().all(|(_, r)| r.is_ok()), "{results:?}");
    let children: BTreeSet<String> = ["f".to_owned(), "g".to_owned()].into();
    cluster.until_placed(&children).await;
    let host = |cluster: &Cluster, child: &str| -> usize {
        let node = cluster.placement()[child][0].clone();
        cluster.nodes.iter().position(|n| n.name() == node).expect("a node")
    };
    let crash = |cluster: &Cluster, child: &str| {
        let pid = cluster.live().next().and_then(|hub| hub.pid(child)).expect("a pid");
        let runtime = cluster.nodes[0].runtime().clone();
        async move {
            runtime.cast(pid, "crash".to_owned()).await.expect("cast");
            pid
        }
    };
    // `f` crashes twice where it runs: restarted there, both restarts known everywhere.
    for restarts in 1..=2 {
        let old = crash(&cluster, "f").await;
        until("f restarted, its restarts known everywhere", || {
            cluster.live().all(|hub| {
                hub.pid("f").is_some_and(|pid| pid != old)
                    && hub.child("f").is_some_and(|info| info.restarts == restarts)
            })
        })
        .await;
    }
    // Its node leaves: `f` moves to its new owner with its two restarts.
    let first = host(&cluster, "f");
    let hub = cluster.hubs[first].take().expect("f's hub");
    within(hub.stop()).await;
    drop(hub);
    cluster.until_nodes(2).await;
    cluster.until_placed(&children).await;
    let watcher = cluster.live().next().expect("a live hub").clone();
    let mut events = watcher.subscribe();
    assert!(cluster.live().all(|hub| hub.child("f").is_some_and(|info| info.restarts == 2)));
    // One more crash there is its third restart; the next is past the intensity.
    let old = crash(&cluster, "f").await;
    until("f restarted once more", || {
        cluster.live().all(|hub| hub.pid("f").is_some_and(|pid| pid != old))
    })
    .await;
    crash(&cluster, "f").await;
    until("f gone everywhere", || cluster.live().all(|hub| hub.child("f").is_none())).await;
    // `g`'s node dies while `init` fails everywhere: the failover start is retried at once,
    // three times, and `g` fails.
    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    let second = host(&cluster, "g");
    cluster.hubs[second] = None;
    cluster.nodes[second].shutdown();
    cluster.until_nodes(1).await;
    until("g gone", || cluster.live().all(|hub| hub.child("g").is_none())).await;
    let mut failed = Vec::new();
    let deadline = tokio::time::Instant::now() + BOUND;
    while failed.len() < 2 && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(100), events.recv()).await {
            Ok(Ok(HubEvent::Failed { child, restarts, .. })) => failed.push((child, restarts)),
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(error)) => panic!("events: {error}"),
        }
    }
    assert_eq!(failed, vec![("f".to_owned(), 3), ("g".to_owned(), 3)]);
    // Nobody starts either again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(cluster.placement().is_empty(), "{:?}", cluster.placement());
    cluster.stop().await;
}

/// A temporary child is never started again, as under a local supervisor: it stays where it
/// started when a node joins, and ends, for good, with its node, lost or leaving on purpose;
/// a permanent one beside it moves and fails over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_child_stays_where_it_started_and_ends_with_its_node() {
    let mut cluster = Cluster::start(4, config()).await;
    // h3 joins later: some children will be its own on the ring.
    let hub = cluster.hubs[3].take().expect("h3");
    within(hub.stop()).await;
    drop(hub);
    cluster.until_nodes(3).await;
    let temporary = |id: &str| {
        HubChild::new(ChildSpec::new(id, "room", &()).expect("spec").restart(Restart::Temporary))
    };
    let batch: Vec<HubChild> = (0..60).map(|i| temporary(&format!("temp/{i}"))).collect();
    let results =
        within(cluster.hub(0).init_children(batch, StartOptions::default())).await.expect("ok");
    assert!(results.iter().all(|(_, r)| r.is_ok()), "{results:?}");
    let temps: BTreeSet<String> = (0..60).map(|i| format!("temp/{i}")).collect();
    until("every temporary child seen everywhere", || {
        temps.iter().all(|child| cluster.live().all(|hub| hub.pid(child).is_some()))
    })
    .await;
    let before = cluster.placement();
    let pids: BTreeMap<String, shoal_process::Pid> = temps
        .iter()
        .map(|child| (child.clone(), cluster.hub(0).pid(child).expect("pid")))
        .collect();
    // A join moves none of them.
    cluster.hubs[3] = Some(Hub::start(&cluster.nodes[3], "rooms", config()).await.expect("hub"));
    cluster.until_nodes(4).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(cluster.placement(), before, "a temporary child moved");
    assert!(temps.iter().all(|child| cluster.hub(3).pid(child) == Some(pids[child])));
    // h2 leaves on purpose, h1 is lost: their temporary children end, everywhere.
    let on = |node: &str| -> Vec<String> {
        before.iter().filter(|(_, nodes)| nodes[0] == node).map(|(c, _)| c.clone()).collect()
    };
    let (on_h1, on_h2) = (on("h1"), on("h2"));
    assert!(!on_h1.is_empty() && !on_h2.is_empty(), "{before:?}");
    let hub = cluster.hubs[2].take().expect("h2");
    within(hub.stop()).await;
    drop(hub);
    cluster.hubs[1] = None;
    cluster.nodes[1].shutdown();
    cluster.until_nodes(2).await;
    until("the temporary children of h1 and h2 gone everywhere", || {
        on_h1.iter().chain(&on_h2).all(|child| cluster.live().all(|hub| hub.child(child).is_none()))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let after = cluster.placement();
    for child in on_h1.iter().chain(&on_h2) {
        assert!(!after.contains_key(child), "{child} was started again: {after:?}");
    }
    for child in temps.iter().filter(|child| !on_h1.contains(child) && !on_h2.contains(child)) {
        assert_eq!(cluster.hub(0).pid(child), Some(pids[child]), "{child} restarted");
    }
    cluster.stop().await;
}

/// A partition: each side runs every child (the other side's after the grace), and a child
/// terminated on one side stays terminated; after the heal each child runs once, on its
/// owner, the losing copies stopped after the conflict hook, and the terminated child gone.
/// A second hub on the same nodes is untouched by the first's children.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_partition_heals_each_child_runs_once_and_a_terminated_one_stays_gone() {
    let conflicts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = conflicts.clone();
    let hook: shoal_hub::ConflictHook = std::sync::Arc::new(move |conflict| {
        let counted = counted.clone();
        Box::pin(async move {
            assert_ne!(conflict.loser.node(), shoal_process::NodeId::from_name(&conflict.winner));
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
    });
    let config = HubConfig { on_conflict: Some(hook), ..config() };
    let cluster = Cluster::start(3, config).await;
    let other: Vec<Hub> = {
        let mut other = Vec::new();
        for node in &cluster.nodes {
            other.push(within(Hub::start(node, "other", self::config())).await.expect("hub"));
        }
        other
    };
    let results = within(cluster.hub(0).init_children(rooms(200), StartOptions::default()))
        .await
        .expect("ok");
    assert!(results.iter().all(|(_, r)| r.is_ok()));
    cluster.until_placed(&ids(200)).await;
    // room/N run by h2, to terminate on the majority side during the partition.
    let doomed =
        cluster.placement().into_iter().find(|(_, nodes)| nodes == &["h2"]).expect("one on h2").0;
    for peer in ["h0", "h1"] {
        cluster.nodes[2].inject_fault(
            peer,
            shoal_transport::Direction::Both,
            shoal_transport::Fault::Cut,
        );
    }
    until("both sides run every child, and h0 sees where the doomed one runs", || {
        let local = |i: usize| cluster.hub(i).which_children_local().len();
        let seen = cluster.hub(0).child(&doomed).is_some_and(|info| !info.copies.is_empty());
        local(0) + local(1) == 200 && local(2) == 200 && seen
    })
    .await;
    assert!(cluster.hub(0).is_partitioned() && cluster.hub(2).is_partitioned());
    within(cluster.hub(0).child_terminate(&doomed, Duration::from_secs(5)))
        .await
        .expect("terminated");
    cluster.nodes[2].heal_all();
    cluster.until_nodes(3).await;
    // Terminated as soon as the heal is seen, while two copies of each may still be listed
    // (one of them stopping, or stopped, as the conflict's loser): each is found and ends.
    let ended: Vec<String> = ids(200).into_iter().filter(|id| *id != doomed).take(40).collect();
    let results = within(cluster.hub(1).stop_children(ended.clone(), Duration::from_secs(5))).await;
    assert!(results.iter().all(|(_, result)| result.is_ok()), "{results:?}");
    let alive: BTreeSet<String> =
        ids(200).into_iter().filter(|id| *id != doomed && !ended.contains(id)).collect();
    cluster.until_placed(&alive).await;
    until("the terminated ones gone everywhere", || {
        ended.iter().all(|child| cluster.live().all(|hub| hub.child(child).is_none()))
    })
    .await;
    assert!(conflicts.load(std::sync::atomic::Ordering::Relaxed) > 0, "the hook ran");
    assert!(other.iter().all(|hub| hub.which_children_local().is_empty()));
    for hub in &other {
        within(hub.stop()).await;
    }
    cluster.stop().await;
}

/// A majority quorum, partitioned 1|2: the minority stops its children (suspended, with the
/// quorum-lost reason) and starts none, the majority runs every child; after the heal each
/// runs once, on its owner, and the minority has nothing suspended left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_without_its_quorum_stops_its_children_until_the_heal() {
    let table =
        TableConfig { partition: Partition::Majority { cluster_size: 3 }, ..config().table };
    let cluster = Cluster::start(3, HubConfig { table, ..config() }).await;
    until("every node has its quorum", || cluster.live().all(Hub::has_quorum)).await;
    let mut events = cluster.hub(2).subscribe();
    let results = within(cluster.hub(0).init_children(rooms(200), StartOptions::default()))
        .await
        .expect("ok");
    assert!(results.iter().all(|(_, r)| r.is_ok()));
    cluster.until_placed(&ids(200)).await;
    let on_h2: Vec<Pid> = cluster
        .hub(2)
        .which_children_local()
        .into_iter()
        .filter_map(|row| match row.status {
            ChildStatus::Running(pid) => Some(pid),
            _ => None,
        })
        .collect();
    assert!(!on_h2.is_empty());
    let watches: Vec<_> = on_h2.iter().map(|&pid| cluster.nodes[2].runtime().watch(pid)).collect();
    for peer in ["h0", "h1"] {
        cluster.nodes[2].inject_fault(
            peer,
            shoal_transport::Direction::Both,
            shoal_transport::Fault::Cut,
        );
    }
    let running = |i: usize| {
        cluster
            .hub(i)
            .which_children_local()
            .iter()
            .filter(|row| matches!(row.status, ChildStatus::Running(_)))
            .count()
    };
    until("the majority runs every child, the minority none", || {
        running(0) + running(1) == 200 && running(2) == 0
    })
    .await;
    for watch in watches {
        assert_eq!(within(watch).await, ExitReason::Custom(shoal_hub::QUORUM_LOST.to_owned()));
    }
    let h2 = cluster.hub(2);
    assert!(!h2.has_quorum() && h2.is_partitioned());
    assert!(cluster.hub(0).has_quorum());
    assert!(
        h2.which_children_local().iter().all(|row| row.status == ChildStatus::Suspended),
        "the minority keeps its children, suspended"
    );
    let refused = h2.init_children(vec![room("late")], StartOptions::default()).await;
    assert_eq!(refused, Err(HubError::NoQuorum));
    // Some time past `down_after`: still nothing started on the minority side.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(running(2), 0);

    cluster.nodes[2].heal_all();
    let mut doubled = BTreeSet::new();
    until("each child runs once again", || {
        let placement = cluster.placement();
        doubled
            .extend(placement.iter().filter(|(_, nodes)| nodes.len() > 1).map(|(c, _)| c.clone()));
        placement.len() == 200 && placement.values().all(|nodes| nodes.len() == 1)
    })
    .await;
    assert!(doubled.is_empty(), "restarted while the other side ran them: {doubled:?}");
    cluster.until_nodes(3).await;
    cluster.until_placed(&ids(200)).await;
    until("nothing suspended is left", || {
        cluster.live().all(|hub| {
            hub.which_children_global().iter().all(|row| row.status != ChildStatus::Suspended)
        })
    })
    .await;
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        if matches!(event, HubEvent::QuorumLost | HubEvent::QuorumRegained) {
            seen.push(event);
        }
    }
    assert_eq!(seen, [HubEvent::QuorumLost, HubEvent::QuorumRegained]);
    cluster.stop().await;
}

/// A replicated child with state: adds what it is cast, answers its count and role.
struct Counter {
    count: u64,
    role: Option<Role>,
}

impl Process for Counter {
    type Message = u64;
    type Call = ();
    type Reply = (u64, Option<Role>);

    async fn handle_cast(&mut self, by: u64, _: &mut Context<Self>) {
        self.count += by;
    }

    async fn handle_call(
        &mut self,
        (): (),
        reply: ReplyTo<(u64, Option<Role>)>,
        _: &mut Context<Self>,
    ) {
        reply.send((self.count, self.role));
    }

    fn remote_messages() -> Option<shoal_process::Codec<Self>> {
        Some(shoal_process::Codec::msgpack())
    }
}

impl Handover for Counter {
    type State = u64;

    fn snapshot(&self) -> u64 {
        self.count
    }

    fn restore(&mut self, count: u64, _: &mut Context<Self>) {
        self.count = count;
    }

    fn role(&mut self, role: Role, _: &mut Context<Self>) {
        self.role = Some(role);
    }
}

/// Counters with two copies each, active/passive, their state streamed every `stream_every`.
fn two_copies(stream_every: Duration) -> HubConfig {
    let table =
        TableConfig { replicas: 2, redundancy: Redundancy::ActivePassive, ..config().table };
    HubConfig {
        table,
        handovers: Handovers::default().with::<Counter>("counter"),
        stream_every,
        ..config()
    }
}

fn counter(id: &str) -> HubChild {
    HubChild::new(ChildSpec::new(id, "counter", &()).expect("spec"))
}

/// Two copies of each child, active/passive: each runs on its two owners, the first active
/// and told so, the other told passive; a call by child id reaches the active copy, whose
/// state reaches the passive one; when the active copy's node dies, the passive copy is
/// promoted, with the state streamed to it, and a third node starts a new passive copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_copies_one_active_and_the_passive_one_promoted_with_its_state() {
    let config = two_copies(Duration::from_millis(50));
    let mut cluster = Cluster::start(3, config).await;
    let counters: Vec<HubChild> = (0..20).map(|i| counter(&format!("counter/{i}"))).collect();
    let results =
        within(cluster.hub(0).init_children(counters, StartOptions::default())).await.expect("ok");
    assert!(results.iter().all(|(_, r)| r.is_ok()), "{results:?}");
    let ids: Vec<String> = (0..20).map(|i| format!("counter/{i}")).collect();
    let copies = |cluster: &Cluster, child: &str| -> BTreeMap<String, Pid> {
        let mut copies = BTreeMap::new();
        for hub in cluster.live() {
            for row in hub.which_children_local() {
                if let (true, ChildStatus::Running(pid)) = (row.child == child, &row.status) {
                    copies.insert(row.node.clone().expect("a node"), *pid);
                }
            }
        }
        copies
    };
    let ring = Ring::with_vnodes(["h0", "h1", "h2"], VNODES);
    until("each child runs on its two owners", || {
        ids.iter().all(|child| {
            let owners: BTreeSet<String> =
                ring.owners(child, 2).into_iter().map(str::to_owned).collect();
            copies(&cluster, child).keys().cloned().collect::<BTreeSet<_>>() == owners
        })
    })
    .await;
    let runtime = cluster.nodes[2].runtime().clone();
    let ask = |pid: Pid| {
        let runtime = runtime.clone();
        async move { within(runtime.target::<Counter>(pid).call(())).await.expect("answers") }
    };
    // Roles: the first owner's copy is active, told so; the other passive.
    for child in &ids {
        let owners = ring.owners(child, 2);
        let copies = copies(&cluster, child);
        let mut told = BTreeMap::new();
        for _ in 0..100 {
            told.clear();
            for (node, pid) in &copies {
                told.insert(node.clone(), ask(*pid).await.1);
            }
            if told.values().all(Option::is_some) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(told[owners[0]], Some(Role::Active), "{child}: {told:?}");
        assert_eq!(told[owners[1]], Some(Role::Passive), "{child}: {told:?}");
        for hub in cluster.live() {
            assert_eq!(hub.active(child).as_deref(), Some(owners[0]));
        }
    }
    // Casts by child id go to the active copy; its state reaches the passive one.
    let child =
        ids.iter().find(|child| ring.owners(child, 2)[0] == "h1").expect("one on h1").clone();
    let by_id = runtime.target::<Counter>(cluster.hub(2).via(&child));
    for _ in 0..10 {
        by_id.cast(3).await.expect("cast");
    }
    assert_eq!(within(by_id.call(())).await.expect("answers"), (30, Some(Role::Active)));
    let passive_node = ring.owners(&child, 2)[1].to_owned();
    let passive = copies(&cluster, &child)[&passive_node];
    let deadline = tokio::time::Instant::now() + BOUND;
    while ask(passive).await.0 != 30 {
        assert!(tokio::time::Instant::now() < deadline, "the state never reached the passive copy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cluster.hub(0).cast_all::<Counter>(&child, 1).await, 2, "both copies");

    // h1 dies: every child it ran as active is promoted on its passive copy, at once.
    let promoted: Vec<(String, Pid)> = ids
        .iter()
        .filter(|child| ring.owners(child, 2)[0] == "h1")
        .map(|child| {
            let node = ring.owners(child, 2)[1];
            (child.clone(), copies(&cluster, child)[node])
        })
        .collect();
    cluster.hubs[1] = None;
    cluster.nodes[1].shutdown();
    cluster.until_nodes(2).await;
    for (child, pid) in &promoted {
        let deadline = tokio::time::Instant::now() + BOUND;
        while ask(*pid).await.1 != Some(Role::Active) {
            assert!(tokio::time::Instant::now() < deadline, "{child} never promoted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(cluster.hub(2).pid(child), Some(*pid), "found by id on its new active copy");
    }
    let (count, role) = within(by_id.call(())).await.expect("the promoted copy answers");
    assert_eq!((count, role), (31, Some(Role::Active)), "with the state streamed to it");
    let survivors = Ring::with_vnodes(["h0", "h2"], VNODES);
    until("each child runs on both survivors", || {
        ids.iter().all(|child| {
            let owners: BTreeSet<String> =
                survivors.owners(child, 2).into_iter().map(str::to_owned).collect();
            copies(&cluster, child).keys().cloned().collect::<BTreeSet<_>>() == owners
        })
    })
    .await;
    cluster.stop().await;
}

/// Hot migration: a counter moved while a writer casts to it by child id loses and doubles
/// nothing (the casts queued for the old copy, and those sent to it during the move, are
/// forwarded after its state); the move is reported as a hand-over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_move_hands_the_state_and_the_mail_over() {
    let config = HubConfig {
        handovers: Handovers::default().with::<Counter>("counter"),
        migration: Migration::Hot { retention: Duration::from_secs(1) },
        ..config()
    };
    let cluster = Cluster::start(2, config).await;
    let mut events = cluster.hub(1).subscribe();
    let ring = Ring::with_vnodes(["h0", "h1"], VNODES);
    let id =
        (0..).map(|i| format!("counter/{i}")).find(|c| ring.owner(c) == Some("h0")).expect("one");
    let results = within(cluster.hub(0).init_children(vec![counter(&id)], StartOptions::default()))
        .await
        .expect("ok");
    let old = match &results[0].1 {
        Ok(started) => started.pid,
        Err(error) => panic!("{error}"),
    };
    until("h1 sees it", || cluster.hub(1).pid(&id) == Some(old)).await;
    let mut mover = cluster.hub(0).subscribe();
    let by_id = cluster.nodes[1].runtime().target::<Counter>(cluster.hub(1).via(&id));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = {
        let (by_id, sent) = (by_id.clone(), sent.clone());
        tokio::spawn(async move {
            for _ in 0..2_000 {
                by_id.cast(1).await.expect("cast by child id");
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        })
    };
    until("the writer is under way", || sent.load(std::sync::atomic::Ordering::Relaxed) > 100)
        .await;
    within(cluster.hub(0).child_redist_init(&id, "h1", Duration::from_secs(5)))
        .await
        .expect("moved");
    let during = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(during < 2_000, "the move happened while the writer wrote ({during} sent)");
    within(writer).await.expect("the writer");
    let handed = std::iter::from_fn(|| mover.try_recv().ok()).find_map(|event| match event {
        HubEvent::HandedOver { child, to, bytes } if child == id => Some((to, bytes)),
        _ => None,
    });
    assert!(matches!(handed, Some((ref to, bytes)) if to == "h1" && bytes > 0), "{handed:?}");
    let stats = cluster.hub(0).stats();
    assert_eq!((stats.moves, stats.handovers_done, stats.handovers_failed), (1, 1, 0));
    assert_eq!(stats.children, 0, "{stats:?}");
    assert_eq!(cluster.hub(1).stats().children, 1);
    let ended = within(async {
        loop {
            match mover.recv().await.expect("events") {
                HubEvent::ForwardingEnded { child, forwarded, failed } if child == id => {
                    break (forwarded, failed);
                }
                _ => {}
            }
        }
    })
    .await;
    assert_eq!(ended.1, 0, "no letter lost in the window: {ended:?}");
    let new = cluster.hub(1).pid(&id).expect("runs");
    assert_ne!(new, old);
    assert_eq!(new.node(), shoal_process::NodeId::from_name("h1"));
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let (count, _) = within(by_id.call(())).await.expect("answers");
        if count == 2_000 {
            break;
        }
        assert!(count < 2_000, "doubled: {count}");
        assert!(tokio::time::Instant::now() < deadline, "lost: {count} of 2000");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut handed = false;
    while let Ok(event) = events.try_recv() {
        handed |= matches!(event, HubEvent::Migrated { ref child, ref from, ref to } if *child == id && from == "h0" && to == "h1");
    }
    assert!(handed, "a Migrated event");
    cluster.stop().await;
}

/// A node whose hub stops on purpose hands each counter, with its count, to its new owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_that_stops_hands_its_children_over_with_their_state() {
    let config =
        HubConfig { handovers: Handovers::default().with::<Counter>("counter"), ..config() };
    let mut cluster = Cluster::start(3, config).await;
    let ids: Vec<String> = (0..30).map(|i| format!("counter/{i}")).collect();
    let results = within(
        cluster
            .hub(0)
            .init_children(ids.iter().map(|id| counter(id)).collect(), StartOptions::default()),
    )
    .await
    .expect("ok");
    assert!(results.iter().all(|(_, r)| r.is_ok()));
    cluster.until_placed(&ids.iter().cloned().collect()).await;
    let runtime = cluster.nodes[0].runtime().clone();
    for (i, id) in ids.iter().enumerate() {
        let by_id = runtime.target::<Counter>(cluster.hub(0).via(id));
        by_id.cast(i as u64 + 1).await.expect("cast");
        assert_eq!(within(by_id.call(())).await.expect("answers").0, i as u64 + 1);
    }
    let leaving = cluster.hubs[2].take().expect("h2");
    within(leaving.stop()).await;
    drop(leaving);
    cluster.until_nodes(2).await;
    cluster.until_placed(&ids.iter().cloned().collect()).await;
    for (i, id) in ids.iter().enumerate() {
        let by_id = runtime.target::<Counter>(cluster.hub(0).via(id));
        assert_eq!(within(by_id.call(())).await.expect("answers").0, i as u64 + 1, "{id}");
    }
    cluster.stop().await;
}

/// A hub of two copies per child that stops on purpose sends the state of its active copies
/// to their passive copies first, which are promoted with it (the periodic stream is too slow
/// to have done it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_of_two_copies_that_stops_leaves_its_state_to_the_passive_copies() {
    let config = two_copies(Duration::from_secs(600));
    let mut cluster = Cluster::start(3, config).await;
    let ring = Ring::with_vnodes(["h0", "h1", "h2"], VNODES);
    let ids: Vec<String> = (0..)
        .map(|i| format!("counter/{i}"))
        .filter(|child| ring.owners(child, 2)[0] == "h2")
        .take(5)
        .collect();
    let results = within(
        cluster
            .hub(0)
            .init_children(ids.iter().map(|id| counter(id)).collect(), StartOptions::default()),
    )
    .await
    .expect("ok");
    assert!(results.iter().all(|(_, r)| r.is_ok()));
    until("both copies of each run", || {
        ids.iter().all(|id| {
            cluster.hub(0).child(id).is_some_and(|info| {
                info.copies
                    .iter()
                    .filter(|(_, status)| matches!(status, ChildStatus::Running(_)))
                    .count()
                    == 2
            })
        })
    })
    .await;
    let runtime = cluster.nodes[0].runtime().clone();
    for (i, id) in ids.iter().enumerate() {
        let by_id = runtime.target::<Counter>(cluster.hub(0).via(id));
        by_id.cast(i as u64 + 1).await.expect("cast");
        assert_eq!(
            within(by_id.call(())).await.expect("answers"),
            (i as u64 + 1, Some(Role::Active))
        );
    }
    let leaving = cluster.hubs[2].take().expect("h2");
    within(leaving.stop()).await;
    drop(leaving);
    cluster.until_nodes(2).await;
    for (i, id) in ids.iter().enumerate() {
        let by_id = runtime.target::<Counter>(cluster.hub(0).via(id));
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            if let Ok((count, Some(Role::Active))) = by_id.call(()).await {
                assert_eq!(count, i as u64 + 1, "{id}: the state left to it");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{id} not promoted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    cluster.stop().await;
}

/// A child that traps exits and ignores them: only a kill stops it.
struct Stubborn;

impl Process for Stubborn {
    type Message = ();
    type Call = ();
    type Reply = ();

    async fn init(&mut self, ctx: &mut Context<Self>) -> Result<(), ExitReason> {
        ctx.trap_exits(true);
        Ok(())
    }

    async fn handle_cast(&mut self, (): (), _: &mut Context<Self>) {}
}

/// A child that does not exit when told is reported as still running after the timeout,
/// and keeps running under the hub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_will_not_stop_is_reported_still_running() {
    let cluster = Cluster::start(2, config()).await;
    for node in &cluster.nodes {
        node.runtime().register_factory("stubborn", |(): ()| Stubborn).expect("factory");
    }
    let spec = ChildSpec::new("stubborn", "stubborn", &()).expect("spec");
    let spec = spec.shutdown(shoal_process::Shutdown::Infinity).restart(Restart::Temporary);
    let results =
        within(cluster.hub(0).init_children(vec![HubChild::new(spec)], StartOptions::default()))
            .await
            .expect("ok");
    let pid = results[0].1.as_ref().expect("started").pid;
    until("seen everywhere", || cluster.live().all(|hub| hub.pid("stubborn") == Some(pid))).await;
    let refused =
        within(cluster.hub(1).child_terminate("stubborn", Duration::from_millis(200))).await;
    assert_eq!(refused, Err(TerminateError::Running("stubborn".into())));
    let host = cluster.nodes.iter().find(|node| node.runtime().is_alive(pid)).expect("it runs");
    assert!(host.runtime().is_alive(pid));
    assert!(cluster.live().all(|hub| hub.pid("stubborn") == Some(pid)), "still listed");
    // Killed, it ends for good (temporary), so the hubs stop without waiting for it.
    host.runtime().kill(pid);
    until("gone everywhere", || cluster.live().all(|hub| hub.child("stubborn").is_none())).await;
    cluster.stop().await;
}

/// Nodes whose rings disagree (here: different ring sizes, which a real hub must not have, so
/// that every node's owner differs for many children): a start is forwarded by the node that
/// receives it to the owner it sees, and refused with `TooManyHops` past the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_is_forwarded_to_the_owner_the_receiver_sees_within_the_hop_limit() {
    let cluster = Cluster::start(3, config()).await;
    for (max_hops, id) in [(0u8, "hops-0"), (3, "hops-3")] {
        let mut hubs = Vec::new();
        for (node, vnodes) in cluster.nodes.iter().zip([8u32, 64, 512]) {
            let table = TableConfig { vnodes, on_join: OnJoin::Stay, ..config().table };
            let config = HubConfig { table, max_hops, ..config() };
            hubs.push(within(Hub::start(node, id, config)).await.expect("hub"));
        }
        until("the hubs meet", || hubs.iter().all(|hub| hub.nodes().len() == 3)).await;
        let ring = Ring::with_vnodes(["h0", "h1", "h2"], 8);
        let results = within(hubs[0].init_children(rooms(200), StartOptions::default()))
            .await
            .expect("accepted");
        let forwarded = results
            .iter()
            .filter(|(child, result)| {
                result.as_ref().is_ok_and(|s| Some(s.node.as_str()) != ring.owner(child))
            })
            .count();
        let refused =
            results.iter().filter(|(_, r)| matches!(r, Err(ChildError::TooManyHops(_)))).count();
        assert!(
            results.iter().all(|(_, r)| r.is_ok() || matches!(r, Err(ChildError::TooManyHops(_))))
        );
        if max_hops == 0 {
            assert_eq!(forwarded, 0, "nothing forwarded with no hops allowed");
            assert!(refused > 0, "some children owned elsewhere in the receiver's view");
        } else {
            assert!(forwarded > 0, "some children started where the receiver saw their owner");
        }
        for hub in &hubs {
            within(hub.stop()).await;
        }
    }
    cluster.stop().await;
}

/// Starts of [`SlowRestart`] processes, in this test binary.
static SLOW_STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A child whose every start after the first takes a second in `init`; a cast crashes it.
struct SlowRestart;

impl Process for SlowRestart {
    type Message = ();
    type Call = ();
    type Reply = ();

    async fn init(&mut self, _: &mut Context<Self>) -> Result<(), ExitReason> {
        if SLOW_STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Ok(())
    }

    async fn handle_cast(&mut self, (): (), ctx: &mut Context<Self>) {
        ctx.stop(ExitReason::custom("asked to crash"));
    }
}

/// A child being restarted is listed as restarting everywhere, and a terminate meanwhile is
/// refused with `Restarting`; once it runs again, a terminate succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_being_restarted_cannot_be_terminated_until_it_runs() {
    let cluster = Cluster::start(2, config()).await;
    for node in &cluster.nodes {
        node.runtime().register_factory("slow-restart", |(): ()| SlowRestart).expect("factory");
    }
    let spec = ChildSpec::new("slow", "slow-restart", &()).expect("spec");
    let results =
        within(cluster.hub(0).init_children(vec![HubChild::new(spec)], StartOptions::default()))
            .await
            .expect("ok");
    let pid = results[0].1.as_ref().expect("started").pid;
    let host = cluster.nodes.iter().find(|node| node.runtime().is_alive(pid)).expect("host");
    host.runtime().cast(pid, ()).await.expect("cast");
    until("restarting, seen everywhere", || {
        cluster.live().all(|hub| {
            hub.child("slow")
                .is_some_and(|info| info.copies.iter().any(|(_, s)| *s == ChildStatus::Restarting))
        })
    })
    .await;
    assert_eq!(
        cluster.hub(1).child_terminate("slow", Duration::from_secs(1)).await,
        Err(TerminateError::Restarting("slow".into()))
    );
    until("running again", || cluster.live().all(|hub| hub.pid("slow").is_some_and(|p| p != pid)))
        .await;
    within(cluster.hub(1).child_terminate("slow", Duration::from_secs(5)))
        .await
        .expect("terminated");
    cluster.stop().await;
}
