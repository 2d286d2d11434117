//! The driver over real TCP: in-process nodes on 127.0.0.1 (port 0), in managed membership
//! (HyParView choosing the connections) or full mesh (the cores over the transport's
//! connections). Every wait is bounded by [`BOUND`]; nothing sleeps to synchronise or asserts
//! on timing; every test shuts its nodes down (also when it fails, as
//! the nodes live in the test's tokio runtime, which ends with it).

use std::future::Future;
use std::time::Duration;

use shoal_broadcast::{Broadcast, BroadcastConfig, Contact, Log, Topic};
use shoal_transport::{ClusterKey, Direction, Fault, Membership, Node, NodeEvent};

/// Every wait in these tests is bounded by this.
const BOUND: Duration = Duration::from_secs(30);

/// The topic every test registers a [`Log`] for.
const TOPIC: Topic<String> = Topic::new("test");

/// The cluster key every node in these tests holds (any valid key would do; a fixed one keeps
/// the tests' configuration in one place).
const KEY_HEX: &str = "a3e94c170f5b28d6c1847e2b90fd5a36e81c4f07b29d635a0ec7148bf2d963e5";

pub(super) fn key() -> ClusterKey {
    ClusterKey::from_hex(KEY_HEX).expect("the test key is valid")
}

/// Nodes with short heartbeats (a peer silent for 2 s is down: long enough that a machine
/// loaded by parallel tests sees no false downs) in managed membership.
async fn start_node(name: &str) -> Node {
    start_managed_node(name, Duration::from_millis(2_000)).await
}

/// A node in managed membership, heartbeats every 100 ms, declared down after `failure`
/// without one (also the delivery tests' nodes).
pub(super) async fn start_managed_node(name: &str, failure: Duration) -> Node {
    Node::builder(name, key())
        .heartbeat(Duration::from_millis(100), failure)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300))
        .connect_timeout(Duration::from_secs(5))
        .membership(Membership::Managed)
        .start()
        .await
        .expect("node starts")
}

/// A configuration with protocol timers scaled down for tests, for nodes in managed
/// membership (also the delivery tests', with their own exchange interval).
pub(super) fn config() -> BroadcastConfig {
    BroadcastConfig {
        shuffle_interval: Duration::from_millis(500),
        neighbour_timeout: Duration::from_millis(1_000),
        repair_interval: Duration::from_millis(200),
        lazy_tick: Duration::from_millis(50),
        graft_timeout: Duration::from_millis(300),
        second_graft_timeout: Duration::from_millis(200),
        exchange_interval: Some(Duration::from_millis(300)),
        linger: Duration::from_millis(1_000),
        tick: Duration::from_millis(100),
        ..BroadcastConfig::default()
    }
}

/// [`config`] for nodes in full-mesh membership (the same: the mode follows the node).
fn mesh_config() -> BroadcastConfig {
    config()
}

/// Polls `check` every 20 ms until it holds, or panics after [`BOUND`] with `what` and the
/// state of `cluster`.
async fn eventually<F: FnMut() -> bool>(cluster: &Cluster, what: &str, mut check: F) {
    let deadline = tokio::time::Instant::now() + BOUND;
    while !check() {
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out waiting until {what}:\n{}", cluster.report().await);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// As [`eventually`], for checks that must await.
async fn eventually_async<F, Fut>(cluster: &Cluster, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + BOUND;
    while !check().await {
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out waiting until {what}:\n{}", cluster.report().await);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Awaits `future`, failing the test if it takes longer than [`BOUND`].
async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(BOUND, future).await.expect("finished within the bound")
}

/// `n` nodes, each with a driver and a [`Log`] registered for [`TOPIC`]; node `i` joins
/// through node `i / 2` (so contacts spread over the overlay).
struct Cluster {
    nodes: Vec<Node>,
    drivers: Vec<Broadcast>,
    logs: Vec<Log<String>>,
}

impl Cluster {
    async fn start(n: usize, config: &BroadcastConfig) -> Cluster {
        let mut cluster = Cluster { nodes: Vec::new(), drivers: Vec::new(), logs: Vec::new() };
        for i in 0..n {
            let node = start_node(&format!("n{i:02}")).await;
            let driver = Broadcast::start(&node, config.clone()).await.expect("driver starts");
            let log = Log::new(&node, 10_000);
            driver.register(TOPIC, log.clone()).await.expect("registers");
            if i > 0 {
                let contact = cluster.nodes[i / 2].listen_addr();
                // A join times out on a badly overloaded machine: try again, within the bound.
                within(async {
                    while let Err(error) = driver.join(contact).await {
                        eprintln!("n{i:02} joining again after: {error}");
                    }
                })
                .await;
            }
            cluster.nodes.push(node);
            cluster.drivers.push(driver);
            cluster.logs.push(log);
        }
        cluster
    }

    /// Whether every node in `which` delivered `text`.
    fn delivered(&self, which: &[usize], text: &str) -> bool {
        which.iter().all(|&i| self.logs[i].messages().iter().any(|(_, m)| m == text))
    }

    async fn broadcast(&self, from: usize, text: &str) {
        within(self.drivers[from].broadcast(TOPIC, text.to_owned())).await.expect("broadcasts");
    }

    /// Each node's views, connections and deliveries, for failure messages.
    async fn report(&self) -> String {
        let mut report = String::new();
        for ((node, driver), log) in self.nodes.iter().zip(&self.drivers).zip(&self.logs) {
            let views = driver.views().await.unwrap_or_default();
            let names = |set: &std::collections::BTreeSet<Contact>| {
                set.iter().map(|c| c.name.clone()).collect::<Vec<_>>()
            };
            let texts: Vec<String> = log.messages().into_iter().map(|(_, text)| text).collect();
            report += &format!(
                "{} (stopped: {}): active {:?} passive {:?} connected {:?} delivered {:?}\n",
                node.name(),
                node.is_stopped(),
                names(&views.active),
                names(&views.passive),
                node.nodes(),
                texts
            );
        }
        report
    }

    fn shutdown(&self) {
        for node in &self.nodes {
            node.shutdown();
        }
    }
}

/// Plumtree over HyParView (§3 of the Plumtree paper): once the overlay is built by joins, a
/// broadcast reaches every node, and the driver's connections are the active view's
/// (managed membership: nodeup/nodedown follow the view).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_reaches_all_twelve_nodes() {
    let cluster = Cluster::start(12, &config()).await;
    let all: Vec<usize> = (0..12).collect();
    cluster.broadcast(0, "first").await;
    eventually(&cluster, "all 12 nodes deliver the first broadcast", || {
        cluster.delivered(&all, "first")
    })
    .await;
    cluster.broadcast(7, "second").await;
    eventually(&cluster, "all 12 nodes deliver the second", || cluster.delivered(&all, "second"))
        .await;
    // The views are HyParView's: bounded and disjoint, and each node comes to be connected
    // to its whole active view (managed membership: the driver connects the active view).
    // Checked node by node: views change as shuffles and repairs go on.
    for (node, driver) in cluster.nodes.iter().zip(&cluster.drivers) {
        eventually_async(
            &cluster,
            &format!("{} is connected to its active view", node.name()),
            || {
                let (node, driver) = (node.clone(), driver.clone());
                async move {
                    let Some(views) = driver.views().await else { return false };
                    let bounded = !views.active.is_empty() && views.active.len() <= 5;
                    let disjoint = views.passive.iter().all(|p| !views.active.contains(p));
                    bounded && disjoint && views.active.iter().all(|c| node.is_connected(&c.name))
                }
            },
        )
        .await;
    }
    cluster.shutdown();
}

/// HyParView's failure repair (§4.3 of the HyParView paper) under Plumtree's GRAFT and
/// neighbour-down handling: a third of the nodes crash (their connections close), and the
/// broadcasts made afterwards reach every live node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_after_four_nodes_crash_reach_every_live_node() {
    let cluster = Cluster::start(12, &config()).await;
    let all: Vec<usize> = (0..12).collect();
    cluster.broadcast(0, "before").await;
    eventually(&cluster, "all 12 nodes deliver the broadcast before the crash", || {
        cluster.delivered(&all, "before")
    })
    .await;
    let crashed = [2, 5, 8, 11];
    for &i in &crashed {
        cluster.nodes[i].shutdown();
    }
    let live: Vec<usize> = all.iter().copied().filter(|i| !crashed.contains(i)).collect();
    for (round, from) in [0, 4, 9].into_iter().enumerate() {
        let text = format!("after {round}");
        cluster.broadcast(from, &text).await;
        eventually(&cluster, &format!("the 8 live nodes deliver {text:?}"), || {
            cluster.delivered(&live, &text)
        })
        .await;
    }
    // Failure detection reached HyParView: no live node keeps a crashed one as a neighbour.
    let crashed_names: Vec<String> =
        crashed.iter().map(|&k| cluster.nodes[k].name().to_owned()).collect();
    eventually_async(&cluster, "no active view holds a crashed node", || {
        let drivers: Vec<Broadcast> = live.iter().map(|&i| cluster.drivers[i].clone()).collect();
        let crashed_names = crashed_names.clone();
        async move {
            for driver in drivers {
                let Some(views) = driver.views().await else { return false };
                if views.active.iter().any(|c| crashed_names.contains(&c.name)) {
                    return false;
                }
            }
            true
        }
    })
    .await;
    cluster.shutdown();
}

/// Anti-entropy (the Plumtree paper's §3.9 and Partisan's exchanges): two groups cut apart
/// each broadcast what the other cannot see; once healed, the overlay merges again (lost
/// peers are retried) and exchanges deliver to each side what it missed. Catch-up
/// announcements to new neighbours are off here, so exchanges alone can repair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_partition_heals_anti_entropy_delivers_what_each_side_missed() {
    let mut config = config();
    config.catch_up_window = Duration::ZERO;
    let cluster = Cluster::start(12, &config).await;
    let all: Vec<usize> = (0..12).collect();
    cluster.broadcast(0, "before").await;
    eventually(&cluster, "all 12 nodes deliver the broadcast before the cut", || {
        cluster.delivered(&all, "before")
    })
    .await;

    let (left, right): (Vec<usize>, Vec<usize>) = all.iter().partition(|&&i| i < 6);
    for &l in &left {
        for &r in &right {
            let (a, b) = (&cluster.nodes[l], &cluster.nodes[r]);
            a.inject_fault(b.name(), Direction::Both, Fault::Cut);
            b.inject_fault(a.name(), Direction::Both, Fault::Cut);
        }
    }
    eventually(&cluster, "no connection crosses the cut", || {
        left.iter().all(|&l| {
            right.iter().all(|&r| !cluster.nodes[l].is_connected(cluster.nodes[r].name()))
        })
    })
    .await;
    cluster.broadcast(0, "left only").await;
    cluster.broadcast(6, "right only").await;
    eventually(&cluster, "the left root holds its broadcast", || {
        cluster.delivered(&[0], "left only")
    })
    .await;
    assert!(
        right.iter().all(|&r| !cluster.delivered(&[r], "left only")),
        "a message crossed the cut"
    );
    for node in &cluster.nodes {
        node.heal_all();
    }
    eventually(&cluster, "every node delivers both sides' broadcasts", || {
        cluster.delivered(&all, "left only") && cluster.delivered(&all, "right only")
    })
    .await;
    cluster.shutdown();
}

/// A node in full-mesh membership (the transport connects every member to every other),
/// with the same short heartbeats as [`start_node`].
async fn start_mesh_node(name: &str) -> Node {
    Node::builder(name, key())
        .heartbeat(Duration::from_millis(100), Duration::from_millis(2_000))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300))
        .gossip_interval(Duration::from_millis(200))
        .start()
        .await
        .expect("node starts")
}

impl Cluster {
    /// `n` full-mesh nodes `m0..`, each with a driver and a [`Log`];
    /// every node joins the mesh through `m0`. Returns once the mesh is full.
    async fn start_mesh(n: usize) -> Cluster {
        let config = mesh_config();
        let mut cluster = Cluster { nodes: Vec::new(), drivers: Vec::new(), logs: Vec::new() };
        for i in 0..n {
            let node = start_mesh_node(&format!("m{i}")).await;
            let (driver, log) = cluster.start_driver(&node, &config).await;
            cluster.nodes.push(node);
            cluster.drivers.push(driver);
            cluster.logs.push(log);
        }
        cluster.wait_for_full_mesh().await;
        cluster
    }

    async fn start_driver(
        &self,
        node: &Node,
        config: &BroadcastConfig,
    ) -> (Broadcast, Log<String>) {
        let driver = Broadcast::start(node, config.clone()).await.expect("driver starts");
        let log = Log::new(node, 10_000);
        driver.register(TOPIC, log.clone()).await.expect("registers");
        if let Some(first) = self.nodes.first()
            && first.name() != node.name()
        {
            within(node.join(first.listen_addr())).await.expect("joins");
        }
        (driver, log)
    }

    async fn wait_for_full_mesh(&self) {
        let others = self.nodes.len() - 1;
        eventually(self, "full mesh", || {
            self.nodes.iter().all(|node| node.nodes().len() == others)
        })
        .await;
    }
}

/// Full-mesh membership: the same cores run over the connections the
/// transport keeps (HyParView picks neighbours among connected nodes, and the driver opens
/// or closes none), and a broadcast reaches every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_full_mesh_the_cores_use_the_existing_connections() {
    let cluster = Cluster::start_mesh(6).await;
    let all: Vec<usize> = (0..6).collect();
    cluster.broadcast(3, "mesh").await;
    eventually(&cluster, "all 6 nodes deliver", || cluster.delivered(&all, "mesh")).await;
    // The transport's mesh is untouched: nobody was disconnected by the driver.
    assert!(cluster.nodes.iter().all(|node| node.nodes().len() == 5), "{}", cluster.report().await);
    cluster.shutdown();
}

/// HyParView's rejoin after a partition, over a full mesh: two groups are cut apart (both
/// directions) long enough that every node detects the other side's failures and its active
/// view drops them; once healed, the transport reconnects the mesh, and the overlay must become one
/// again: a broadcast from each side reaches every node. (Regression: the overlay could stay
/// split for good, each half's views holding only its own half, while the mesh was whole.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_full_mesh_a_healed_partition_becomes_one_overlay_again() {
    let cluster = Cluster::start_mesh(5).await;
    let all: Vec<usize> = (0..5).collect();
    let (left, right): (Vec<usize>, Vec<usize>) = all.iter().partition(|&&i| i < 2);
    for &l in &left {
        for &r in &right {
            let (a, b) = (&cluster.nodes[l], &cluster.nodes[r]);
            a.inject_fault(b.name(), Direction::Both, Fault::Cut);
            b.inject_fault(a.name(), Direction::Both, Fault::Cut);
        }
    }
    let other_side = |i: usize| if left.contains(&i) { &right } else { &left };
    eventually_async(&cluster, "no active view holds a node across the cut", || {
        let nodes = &cluster.nodes;
        let drivers = cluster.drivers.clone();
        async move {
            for (i, driver) in drivers.iter().enumerate() {
                let across: Vec<&str> = other_side(i).iter().map(|&k| nodes[k].name()).collect();
                let Some(views) = driver.views().await else { return false };
                let crosses = views.active.iter().any(|c| across.contains(&c.name.as_str()));
                let connected = across.iter().any(|name| nodes[i].is_connected(name));
                if crosses || connected {
                    return false;
                }
            }
            true
        }
    })
    .await;
    for node in &cluster.nodes {
        node.heal_all();
    }
    cluster.wait_for_full_mesh().await;
    cluster.broadcast(left[0], "from the left").await;
    cluster.broadcast(right[0], "from the right").await;
    eventually(&cluster, "every node delivers both sides' broadcasts", || {
        cluster.delivered(&all, "from the left") && cluster.delivered(&all, "from the right")
    })
    .await;
    cluster.shutdown();
}

/// A node that crashes and restarts on a new port (same name, new address) over a full
/// mesh: the overlay takes it back, its old address leaves every view (an old contact of a
/// connected name would hold a view slot that nothing ever fails), and broadcasts from it
/// and to it reach every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_full_mesh_a_node_restarted_on_a_new_port_replaces_its_old_address() {
    let mut cluster = Cluster::start_mesh(4).await;
    let all: Vec<usize> = (0..4).collect();
    cluster.broadcast(0, "before").await;
    eventually(&cluster, "all 4 nodes deliver", || cluster.delivered(&all, "before")).await;

    let old = cluster.nodes[3].clone();
    let old_addr = old.listen_addr();
    old.shutdown();
    eventually(&cluster, "the others see m3 down", || {
        cluster.nodes[..3].iter().all(|node| !node.is_connected("m3"))
    })
    .await;
    let node = start_mesh_node("m3").await;
    assert_ne!(node.listen_addr(), old_addr, "the restarted node listens on a new port");
    let (driver, log) = cluster.start_driver(&node, &mesh_config()).await;
    cluster.nodes[3] = node;
    cluster.drivers[3] = driver;
    cluster.logs[3] = log;
    cluster.wait_for_full_mesh().await;

    cluster.broadcast(3, "from the restarted node").await;
    cluster.broadcast(1, "to the restarted node").await;
    eventually(&cluster, "every node delivers both broadcasts", || {
        cluster.delivered(&all, "from the restarted node")
            && cluster.delivered(&all, "to the restarted node")
    })
    .await;
    eventually_async(&cluster, "no view holds m3's old address", || {
        let drivers = cluster.drivers.clone();
        async move {
            for driver in drivers {
                let Some(views) = driver.views().await else { return false };
                if views.active.iter().chain(&views.passive).any(|c| c.addr == old_addr) {
                    return false;
                }
            }
            true
        }
    })
    .await;
    cluster.shutdown();
}

/// Layers share connections (issue 21, point 2): the overlay lets go of a connection outside
/// its active view once idle for `linger`, and never closes one that another layer of the node
/// keeps (as Paxos keeps its acceptors'): a kept connection to a node outside the active view
/// stays up, without a moment down, long past the linger, and a broadcast still reaches every
/// node. (Before, the driver closed every connection outside the active view.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overlay_never_closes_a_connection_another_layer_keeps() {
    let mut config = config();
    config.active_view_capacity = 2;
    let cluster = Cluster::start(5, &config).await;
    let (a, driver) = (&cluster.nodes[0], &cluster.drivers[0]);
    let views = within(driver.views()).await.expect("the driver runs");
    let Some(b) = cluster.nodes[1..]
        .iter()
        .map(|node| node.name().to_owned())
        .find(|name| !views.active.iter().any(|c| c.name == *name))
    else {
        panic!("every node is n00's neighbour:\n{}", cluster.report().await);
    };
    let keep = a.keep(&b);
    eventually(&cluster, &format!("n00 is connected to {b}, which it keeps"), || {
        a.is_connected(&b)
    })
    .await;
    let mut events = a.subscribe();
    tokio::time::sleep(config.linger * 4).await;
    while let Ok(event) = events.try_recv() {
        if let NodeEvent::Down { node, reason, .. } = event
            && node == b
        {
            panic!("the kept connection to {b} went down ({reason}):\n{}", cluster.report().await);
        }
    }
    assert!(a.is_connected(&b), "{}", cluster.report().await);
    let all: Vec<usize> = (0..5).collect();
    cluster.broadcast(0, "shared").await;
    eventually(&cluster, "all 5 nodes deliver", || cluster.delivered(&all, "shared")).await;
    drop(keep);
    cluster.shutdown();
}
