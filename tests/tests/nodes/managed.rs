//! Layers that share connections (issue 21, point 2): five nodes in managed membership run
//! the broadcast overlay (HyParView with an active view of two, so not every node is every
//! other's neighbour) and Paxos with three acceptors on the same connections. The overlay lets
//! go of the connections it no longer needs; that must not close Paxos's (which it keeps) nor
//! stop a process from reaching a pid on a node outside its active view (the connection opens
//! on demand).

use std::net::SocketAddr;
use std::time::Duration;

use shoal_broadcast::{Broadcast, BroadcastConfig, Log, Topic};
use shoal_paxos::{Paxos, PaxosConfig};
use shoal_sim::SimNet;
use shoal_transport::{Membership, Node, NodeEvent};
use tokio::time::Instant;

use crate::support::{BOUND, Upper, broadcast_config, run_schedules};

/// Schedules run per test run; `SHOAL_SIM_MANAGED_SCHEDULES` runs more.
const SCHEDULES: u64 = 4;

const NODES: u8 = 5;

/// The topic every node registers a [`Log`] for.
const TOPIC: Topic<String> = Topic::new("managed");

/// How long the cluster runs idle between the rounds of writes: many times the overlay's
/// linger (1 s) and the transport's idle timeout.
const QUIET: Duration = Duration::from_secs(20);

/// The transport's idle timeout here: short, so that connections nobody holds do close while
/// the schedule runs.
const IDLE_CLOSE: Duration = Duration::from_secs(2);

struct Member {
    node: Node,
    broadcast: Broadcast,
    log: Log<String>,
    paxos: Paxos,
}

fn overlay_config(seed: u64) -> BroadcastConfig {
    BroadcastConfig { active_view_capacity: 2, ..broadcast_config(seed) }
}

fn paxos_config(seed: u64) -> PaxosConfig {
    PaxosConfig {
        seed,
        round_timeout: Duration::from_millis(50),
        recovery: shoal_paxos::Recovery::NewEpoch,
        ..PaxosConfig::new((0..3).map(|host| format!("n{host}")).collect())
    }
}

async fn start_member(net: &SimNet, host: u8, seed: u64) -> Member {
    let node = crate::support::life(net, host, 0)
        .seed(seed)
        .gossip_interval(Duration::from_millis(200))
        .membership(Membership::Managed)
        .idle_close(IDLE_CLOSE)
        .start()
        .await
        .expect("the node starts");
    let broadcast = Broadcast::start(&node, overlay_config(seed)).await.expect("broadcast starts");
    let log = Log::new(&node, 1_000);
    broadcast.register(TOPIC, log.clone()).await.expect("registers");
    let paxos = Paxos::start(&node, paxos_config(seed)).await.expect("Paxos starts");
    Member { node, broadcast, log, paxos }
}

/// Waits (in simulated time) until `check` holds; `Err(what)` after [`BOUND`].
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) -> Result<(), String> {
    let started = Instant::now();
    while !check().await {
        if started.elapsed() > BOUND {
            return Err(format!("{what}: not after {BOUND:?} of simulated time"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Every member writes its own key, and every write is acknowledged.
async fn every_member_writes(members: &[Member], round: u32) -> Result<(), String> {
    for member in members {
        let key = format!("{}/{round}", member.node.name());
        member
            .paxos
            .put(key.as_str(), round.to_be_bytes().to_vec())
            .await
            .map_err(|error| format!("round {round}: {key} not written: {error}"))?;
    }
    Ok(())
}

/// Who each member's active view holds, and who it is connected to, for error messages.
async fn report(members: &[Member]) -> String {
    let mut report = String::new();
    for member in members {
        let views = member.broadcast.views().await.unwrap_or_default();
        let active: Vec<&str> = views.active.iter().map(|c| c.name.as_str()).collect();
        report += &format!(
            "\n{}: active {active:?}, connected {:?}",
            member.node.name(),
            member.node.nodes()
        );
    }
    report
}

async fn schedule(seed: u64) -> Result<(), String> {
    let net = SimNet::new(seed, Duration::from_millis(1), Duration::from_millis(5));
    let mut members = Vec::new();
    for host in 0..NODES {
        members.push(start_member(&net, host, seed).await);
    }
    let contact: SocketAddr = members[0].node.listen_addr();
    for member in &members[1..] {
        let broadcast = member.broadcast.clone();
        tokio::spawn(async move {
            while broadcast.join(contact).await.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
    until("every node has quorum", async || members.iter().all(|m| m.paxos.has_quorum())).await?;
    every_member_writes(&members, 1).await?;

    // Long past the overlay's linger and the transport's idle timeout: the overlay has let go
    // of every connection outside its active views, and Paxos's stayed up throughout.
    let acceptors = ["n0", "n1", "n2"];
    let mut events: Vec<_> = members.iter().map(|m| m.node.subscribe()).collect();
    tokio::time::sleep(QUIET).await;
    for (member, events) in members.iter().zip(&mut events) {
        let node = &member.node;
        while let Ok(event) = events.try_recv() {
            if let NodeEvent::Down { node: down, reason, .. } = event
                && acceptors.contains(&down.as_str())
            {
                let report = report(&members).await;
                return Err(format!(
                    "{}: acceptor {down} went down ({reason}){report}",
                    node.name()
                ));
            }
        }
        let missing: Vec<&&str> =
            acceptors.iter().filter(|a| **a != node.name() && !node.is_connected(a)).collect();
        if !missing.is_empty() {
            let report = report(&members).await;
            return Err(format!("{} lost acceptors {missing:?}{report}", node.name()));
        }
    }
    every_member_writes(&members, 2).await?;

    // A broadcast still reaches everyone, over the small active views.
    members[NODES as usize - 1]
        .broadcast
        .broadcast(TOPIC, "over the overlay".to_owned())
        .await
        .map_err(|error| format!("broadcast refused: {error}"))?;
    let delivered = until("every node delivers the broadcast", async || {
        members.iter().all(|m| m.log.messages().iter().any(|(_, text)| text == "over the overlay"))
    })
    .await;
    if let Err(error) = delivered {
        return Err(format!("{error}{}", report(&members).await));
    }

    // A call from a node to a process on one outside its active view (preferring one it is
    // not connected to: a connection opened on demand).
    let mut pairs = Vec::new();
    for (i, from) in members.iter().enumerate() {
        let active = from.broadcast.views().await.unwrap_or_default().active;
        for (j, to) in members.iter().enumerate() {
            if i != j && !active.iter().any(|c| c.name == to.node.name()) {
                pairs.push((from.node.is_connected(to.node.name()), i, j));
            }
        }
    }
    pairs.sort();
    let Some(&(_, from, to)) = pairs.first() else {
        return Err(format!("every node is every other's neighbour{}", report(&members).await));
    };
    let upper = members[to].node.runtime().spawn(Upper).pid();
    let reply: String = members[from]
        .node
        .runtime()
        .call(upper, "far".to_owned(), Duration::from_secs(5))
        .await
        .map_err(|error| {
            format!(
                "{} cannot call a pid on {}: {error}",
                members[from].node.name(),
                members[to].node.name()
            )
        })?;
    if reply != "FAR" {
        return Err(format!("the call was answered {reply:?}"));
    }
    for member in &members {
        member.node.shutdown();
    }
    Ok(())
}

/// Paxos writes succeed from every node, before and long after the overlay's linger (its
/// acceptors' connections are kept, whatever the overlay lets go); a broadcast reaches every
/// node over active views of two; and a process reaches a pid on a node outside its active
/// view.
#[test]
fn paxos_broadcast_and_calls_share_managed_connections() {
    run_schedules(
        "SHOAL_SIM_MANAGED_SCHEDULES",
        SCHEDULES,
        "paxos_broadcast_and_calls_share_managed_connections",
        schedule,
    );
}
