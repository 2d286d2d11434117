//! What the whole-node simulations share: the cluster key, addresses on the simulated
//! network, node builders, waiting in simulated time, and the seeded-schedule runner.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use rand::RngExt;
use rand::rngs::SmallRng;
use shoal_process::{Codec, Context, Process, ReplyTo};
use shoal_sim::SimNet;
use shoal_transport::{ClusterKey, Node, NodeBuilder};
use tokio::time::Instant;

/// How long, in simulated time, any wait of these tests may take.
pub(crate) const BOUND: Duration = Duration::from_secs(60);

pub(crate) fn key() -> ClusterKey {
    ClusterKey::from_hex("5be0c1a7f2d94e36b8a0175c3e9f42d6a1c8b07e53f9d24168ae3b7c05d9f21e")
        .expect("a key")
}

pub(crate) fn ip(host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, host))
}

/// A node called `name` at `10.0.0.host` on `net`: heartbeats every 100 ms, down after 1 s.
pub(crate) fn on(net: &SimNet, name: &str, host: u8) -> NodeBuilder {
    Node::builder(name, key())
        .network(net.host(ip(host)))
        .listen(SocketAddr::new(ip(host), 0))
        .heartbeat(Duration::from_millis(100), Duration::from_secs(1))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
}

/// Waits (in simulated time) until `check` holds; panics with `what` after [`BOUND`].
pub(crate) async fn eventually(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < BOUND, "{what}: not after {BOUND:?} of simulated time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

pub(crate) fn sees(node: &Node, others: &[&str]) -> bool {
    let mut nodes = node.nodes();
    nodes.sort();
    nodes == others
}

/// A current-thread tokio runtime on the paused clock, for one simulated run.
pub(crate) fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime")
}

/// Runs `schedule` for the seeds `$SHOAL_SIM_SEED..` (from 0 by default), as many as
/// `$count_var` says (`default` otherwise), each on a fresh paused runtime; a failure panics
/// with its seed and the command that replays it (`test`: the test's name, or a prefix).
pub(crate) fn run_schedules<F>(
    count_var: &str,
    default: u64,
    test: &str,
    schedule: impl Fn(u64) -> F,
) where
    F: std::future::Future<Output = Result<(), String>>,
{
    let number = |var: &str| std::env::var(var).ok().and_then(|value| value.parse().ok());
    let (first, count) =
        (number("SHOAL_SIM_SEED").unwrap_or(0), number(count_var).unwrap_or(default));
    for seed in first..first + count {
        if let Err(error) = paused_runtime().block_on(schedule(seed)) {
            panic!(
                "seed {seed}: {error}\nreplay: SHOAL_SIM_SEED={seed} {count_var}=1 \
                 cargo nextest run -p shoal-tests {test}"
            );
        }
    }
}

/// Two distinct hosts of `hosts`, drawn from `rng`: `None` when the draw names one twice (a
/// schedule then skips that fault).
pub(crate) fn random_way(rng: &mut SmallRng, hosts: usize) -> Option<(usize, usize)> {
    let (from, to) = (rng.random_range(0..hosts), rng.random_range(0..hosts));
    (from != to).then_some((from, to))
}

/// Partitions `ips` in two at a point drawn from `rng` (each side holds one at least).
pub(crate) fn random_partition(net: &SimNet, ips: &[IpAddr], rng: &mut SmallRng) {
    let split = rng.random_range(1..ips.len());
    net.partition(&ips[..split], &ips[split..]);
}

/// Crashes `node` (at `ip` on `net`): it stops without a goodbye, its connections reset and its
/// processes die at this instant (their exits are kills).
pub(crate) fn crash_node(net: &SimNet, node: &Node, ip: IpAddr) {
    node.shutdown();
    net.reset(ip);
    let runtime = node.runtime().clone();
    for pid in runtime.processes() {
        runtime.kill(pid);
    }
}

/// Node `n{host}` at `10.0.0.{host + 1}` in its `life`-th start: its incarnation grows with
/// each life, so a restart replaces the one before.
pub(crate) fn life(net: &SimNet, host: u8, life: u64) -> NodeBuilder {
    let name = format!("n{host}");
    let runtime = shoal_process::Runtime::builder()
        .node_name(name.as_str())
        .incarnation(u64::from(host) * 1_000 + life)
        .build()
        .expect("a runtime");
    on(net, &name, host + 1).runtime(runtime)
}

/// Node `n{host}`'s `life`-th life, started with the simulations' gossip interval and `seed`.
pub(crate) async fn start_node(net: &SimNet, host: u8, life: u64, seed: u64) -> Node {
    self::life(net, host, life)
        .seed(seed)
        .gossip_interval(Duration::from_millis(200))
        .start()
        .await
        .expect("the node starts")
}

/// Has `node` join through `contact` (if any) in the background, trying again until the
/// network lets it or the node stops.
pub(crate) fn join_in_background(node: &Node, contact: Option<SocketAddr>) {
    if let Some(contact) = contact {
        let node = node.clone();
        tokio::spawn(async move {
            while node.join(contact).await.is_err() && !node.is_stopped() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
}

/// The broadcast driver's settings in the whole-node simulations: the protocol timers scaled
/// down as in the crate's driver tests, the policy's (`forget_lost_after`, `max_lost`) left at
/// their defaults, seeded by the schedule.
pub(crate) fn broadcast_config(seed: u64) -> shoal_broadcast::BroadcastConfig {
    shoal_broadcast::BroadcastConfig {
        shuffle_interval: Duration::from_millis(500),
        neighbour_timeout: Duration::from_millis(1_000),
        repair_interval: Duration::from_millis(200),
        lazy_tick: Duration::from_millis(50),
        graft_timeout: Duration::from_millis(300),
        second_graft_timeout: Duration::from_millis(200),
        exchange_interval: Some(Duration::from_millis(300)),
        linger: Duration::from_millis(1_000),
        tick: Duration::from_millis(100),
        seed,
        ..shoal_broadcast::BroadcastConfig::default()
    }
}

/// Answers calls with the request, upper-cased; it takes remote messages, so a test calls it
/// from another node.
pub(crate) struct Upper;

impl Process for Upper {
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
