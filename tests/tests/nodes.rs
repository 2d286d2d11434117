//! Whole Shoal nodes on a simulated network (`shoal_sim::SimNet`), on tokio's paused clock:
//! the real runtime and transport, with time that only moves when every task waits, so that
//! seconds of a cluster's life (joins, heartbeats, failure detection, reconnection) take
//! milliseconds, and the network's latency is drawn from a seed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use shoal_process::{Codec, Context, Process, ReplyTo};
use shoal_sim::SimNet;
use shoal_transport::{ClusterKey, Node, NodeBuilder};
use tokio::time::Instant;

/// How long, in simulated time, any wait of these tests may take.
const BOUND: Duration = Duration::from_secs(60);

fn key() -> ClusterKey {
    ClusterKey::from_hex("5be0c1a7f2d94e36b8a0175c3e9f42d6a1c8b07e53f9d24168ae3b7c05d9f21e")
        .expect("a key")
}

fn ip(host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, host))
}

/// A node called `name` at `10.0.0.host` on `net`: heartbeats every 100 ms, down after 1 s.
fn on(net: &SimNet, name: &str, host: u8) -> NodeBuilder {
    Node::builder(name, key())
        .network(net.host(ip(host)))
        .listen(SocketAddr::new(ip(host), 0))
        .heartbeat(Duration::from_millis(100), Duration::from_secs(1))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
}

/// Waits (in simulated time) until `check` holds; panics with `what` after [`BOUND`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < BOUND, "{what}: not after {BOUND:?} of simulated time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

fn sees(node: &Node, others: &[&str]) -> bool {
    let mut nodes = node.nodes();
    nodes.sort();
    nodes == others
}

struct Echo;

impl Process for Echo {
    type Message = ();
    type Call = String;
    type Reply = String;

    async fn handle_cast(&mut self, (): (), _: &mut Context<Self>) {}

    async fn handle_call(&mut self, text: String, reply: ReplyTo<String>, _: &mut Context<Self>) {
        reply.send(text.to_uppercase());
    }

    fn remote_messages() -> Option<Codec<Self>> {
        Some(Codec::msgpack())
    }
}

/// Three nodes join into a full mesh and call each other; a partition cuts one off, and both
/// sides see it down within the failure timeout (plus a heartbeat); once the partition heals
/// the mesh is whole again and calls go through.
#[tokio::test(start_paused = true)]
async fn nodes_on_a_simulated_network_form_a_mesh_notice_a_partition_and_heal() {
    let net = SimNet::new(7, Duration::from_millis(1), Duration::from_millis(5));
    let a = on(&net, "a", 1).start().await.expect("a starts");
    let b = on(&net, "b", 2).start().await.expect("b starts");
    let c = on(&net, "c", 3).start().await.expect("c starts");
    b.join(a.listen_addr()).await.expect("b joins");
    c.join(a.listen_addr()).await.expect("c joins");
    eventually("a full mesh", || {
        sees(&a, &["b", "c"]) && sees(&b, &["a", "c"]) && sees(&c, &["a", "b"])
    })
    .await;

    let echo = c.runtime().spawn(Echo);
    let remote = a.runtime().addr::<Echo>(echo.pid()).expect("Echo takes remote messages");
    assert_eq!(
        remote.call("over the simulated network".into()).await.unwrap(),
        "OVER THE SIMULATED NETWORK"
    );

    net.partition(&[ip(1)], &[ip(2), ip(3)]);
    let noticed = eventually("the partition is noticed on both sides", || {
        sees(&a, &[]) && sees(&b, &["c"]) && sees(&c, &["b"])
    })
    .await;
    assert!(
        noticed <= Duration::from_millis(1_500),
        "down after {noticed:?}, not within the failure timeout"
    );

    net.heal();
    eventually("the mesh heals", || {
        sees(&a, &["b", "c"]) && sees(&b, &["a", "c"]) && sees(&c, &["a", "b"])
    })
    .await;
    assert_eq!(remote.call("again".into()).await.unwrap(), "AGAIN");
    for node in [a, b, c] {
        node.shutdown();
    }
}

/// A node whose machine crashes (every connection reset) is seen down at once by the others,
/// not after the failure timeout, and a new incarnation at the same address joins in its place.
#[tokio::test(start_paused = true)]
async fn a_crashed_node_is_down_at_once_and_its_restart_rejoins() {
    let net = SimNet::new(11, Duration::from_millis(1), Duration::from_millis(3));
    let a = on(&net, "a", 1).start().await.expect("a starts");
    let b = on(&net, "b", 2).start().await.expect("b starts");
    b.join(a.listen_addr()).await.expect("b joins");
    eventually("a and b connected", || sees(&a, &["b"]) && sees(&b, &["a"])).await;
    let first = b.incarnation();

    b.shutdown();
    net.reset(ip(2));
    let noticed = eventually("a sees b down", || sees(&a, &[])).await;
    assert!(noticed < Duration::from_secs(1), "down after {noticed:?}: not at once");

    let b = on(&net, "b", 2).start().await.expect("b restarts");
    assert_ne!(b.incarnation(), first);
    b.join(a.listen_addr()).await.expect("b joins again");
    eventually("a sees the new b", || sees(&a, &["b"])).await;
    let member = a.node_spec("b").expect("b is a member");
    assert_eq!(member.incarnation, b.incarnation());
    for node in [a, b] {
        node.shutdown();
    }
}

/// What a run saw: every node event of `a`, `b` and `c`, with the simulated time it came at,
/// for three nodes (incarnations fixed) that join, are partitioned {a} | {b, c} for 3 s, and
/// heal.
fn scenario_trace(seed: u64) -> Vec<String> {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    tokio.block_on(async move {
        let net = SimNet::new(seed, Duration::from_millis(1), Duration::from_millis(5));
        let start = Instant::now();
        let mut nodes = Vec::new();
        for (host, name) in [(1, "a"), (2, "b"), (3, "c")] {
            let runtime = shoal_process::Runtime::builder()
                .node_name(name)
                .incarnation(u64::from(host))
                .build()
                .expect("a runtime");
            nodes.push(on(&net, name, host).runtime(runtime).seed(seed).start().await.unwrap());
        }
        let trace = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        for node in &nodes {
            let (mut events, name, trace) =
                (node.subscribe(), node.name().to_owned(), trace.clone());
            tokio::spawn(async move {
                while let Ok(event) = events.recv().await {
                    let at = start.elapsed();
                    trace.lock().unwrap().push(format!("{at:?} {name} {event:?}"));
                }
            });
        }
        nodes[1].join(nodes[0].listen_addr()).await.unwrap();
        nodes[2].join(nodes[0].listen_addr()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        net.partition(&[ip(1)], &[ip(2), ip(3)]);
        tokio::time::sleep(Duration::from_secs(3)).await;
        net.heal();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut trace = std::mem::take(&mut *trace.lock().unwrap());
        trace.push(format!("ended at {:?}", start.elapsed()));
        for node in nodes {
            node.shutdown();
        }
        trace
    })
}

/// A run of real nodes on the simulated network is a function of its seed: the same seed
/// twice gives the same node events at the same simulated instants (joins, a partition seen
/// through heartbeats, the heal), for every seed tried; two seeds give two runs.
#[test]
fn a_run_of_whole_nodes_is_a_function_of_its_seed() {
    for seed in 1..=10 {
        let (first, second) = (scenario_trace(seed), scenario_trace(seed));
        assert_eq!(first, second, "seed {seed} ran twice differently");
        assert_eq!(first.iter().filter(|line| line.contains(" Down {")).count(), 4, "{first:#?}");
    }
    assert_ne!(scenario_trace(1), scenario_trace(2), "the seed decides the run");
}
