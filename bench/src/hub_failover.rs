//! `failover_ms`, `failover_silent_ms` and `replica_promote_ms`: a hub node lost, until every
//! one of its children runs on a survivor, or until the passive copy of a replicated child
//! answers as the active one. Three nodes in three OS processes on loopback.
//!
//! The measuring process runs node `a`; it starts this same binary twice more, which run
//! nodes `b` and `c`, print their address, and exit when their stdin closes (`shoal-bench
//! hub-node b` and `... c` for the failover metrics, `hub-replica-node` for
//! `replica_promote_ms`: a [`Setup`] each). Node `b` is the one lost. Every transport setting
//! is at its default (a heartbeat every 250 ms, a peer silent for 2 s is down).
//!
//! **The failover metrics.** Every node runs hub `failover` with the default configuration
//! ([`HubConfig::default`]: 2,048 ring entries per node, a reconcile tick of 100 ms)
//! **except `table.down_after` = 0**: the figure is the mechanics of failover (the nodedown,
//! the table's decision, the starts on the new owners and their records); the production
//! default waits 3 s on purpose before moving anything, so that a brief disconnect moves
//! nothing, and a deployment's failover takes that much longer.
//!
//! Node `a` starts [`CHILDREN`] children (ids `child-N`, each on its owner), waits until every
//! node lists every child as running (so each survivor holds the victim's entries), then node
//! `b` is lost. The clock runs from just before the signal until the survivors' own lists
//! ([`Hub::which_children_local`], `a`'s read in place and `c`'s through an RPC, asked again
//! and again, [`LOOK_PAUSE`] apart) together hold all [`CHILDREN`] children as running, each
//! exactly once. With `$HUB_FAILOVER_TRACE` set, each look's counts, `a`'s node events and
//! its hub's node events go to stderr, timed from the loss.
//!
//! **The replica metric.** Every node runs hub `replica`: two copies of each child,
//! active/passive, with the same short detection as the failover metrics (`down_after` = 0,
//! the rest default: a reconcile tick of 100 ms, the active copy's state streamed every
//! 200 ms). See [`replica_promote_ms`].

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use shoal_hub::core::{Redundancy, Ring, Role, TableConfig};
use shoal_hub::{
    ChildStatus, Handover, Handovers, Hub, HubChild, HubConfig, HubEvent, StartOptions,
};
use shoal_process::{ChildSpec, Codec, Context, Process, ReplyTo, Target};
use shoal_transport::Node;

use crate::harness::{Idle, NodeProcess, key, on_workers, serve_until_stdin_closes, spawn_node};

/// The nodes, the measuring one first.
const NODES: [&str; 3] = ["a", "b", "c"];

/// The node that is lost.
const VICTIM: &str = "b";

/// The survivor other than the measuring node.
const OTHER: &str = "c";

/// The factory of the failover metrics' children, on every node.
const FACTORY: &str = "bench-hub-idle";

/// The factory of the replica metric's children, on every node.
const REPLICA_FACTORY: &str = "bench-hub-replica";

/// Children started before the loss.
const CHILDREN: usize = 10_000;

/// The RPC by which node `c` answers its hub's view: its running children, and (if asked:
/// the argument `true`) how many children run anywhere as it sees them.
const LOCAL: &str = "bench.hub.local";

/// How long the cluster may take to form and the children to start, and the survivors to
/// run every child again.
const BOUND: Duration = Duration::from_secs(60);

/// How long one ask of `c`'s list may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// The pause between two looks at the survivors' lists, or two calls to the replicated child.
const LOOK_PAUSE: Duration = Duration::from_millis(2);

/// How long one call to the replicated child may wait. A call sent to the lost copy just
/// before the promotion makes the figure late by up to this much.
const CALL_TIMEOUT: Duration = Duration::from_millis(25);

/// What the replicated child is cast (one each) before the loss: the state its passive copy
/// must have when promoted.
const REPLICA_CASTS: u64 = 5;

/// What the three nodes run: a metric's hub and the factory of its children.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Setup {
    /// Hub `failover`, one copy of each child, [`Idle`] (`failover_ms`, `failover_silent_ms`).
    Failover,
    /// Hub `replica`, two copies of each child, active/passive, [`Replica`]
    /// (`replica_promote_ms`).
    Replica,
}

impl Setup {
    /// The subcommand that runs node `b` or `c` of this setup.
    fn subcommand(self) -> &'static str {
        match self {
            Setup::Failover => "hub-node",
            Setup::Replica => "hub-replica-node",
        }
    }

    /// The hub's id.
    fn hub(self) -> &'static str {
        match self {
            Setup::Failover => "failover",
            Setup::Replica => "replica",
        }
    }

    /// The hub's configuration on every node: the default but `down_after` = 0 (see the
    /// module docs), and for the replicas, two copies of each child, active/passive.
    fn config(self) -> HubConfig {
        let table = TableConfig { down_after: Duration::ZERO, ..TableConfig::default() };
        match self {
            Setup::Failover => HubConfig { table, ..HubConfig::default() },
            Setup::Replica => HubConfig {
                table: TableConfig { replicas: 2, redundancy: Redundancy::ActivePassive, ..table },
                handovers: Handovers::default().with::<Replica>(REPLICA_FACTORY),
                ..HubConfig::default()
            },
        }
    }

    /// Node `name`, default transport settings, with this setup's factory and hub.
    async fn start_node(self, name: &str) -> anyhow::Result<(Node, Hub)> {
        let node = Node::builder(name, key()).start().await?;
        let runtime = node.runtime();
        match self {
            Setup::Failover => runtime.register_factory(FACTORY, |(): ()| Idle)?,
            Setup::Replica => {
                let here = name.to_owned();
                runtime.register_factory(REPLICA_FACTORY, move |(): ()| Replica::on(&here))?;
            }
        }
        let hub = Hub::start(&node, self.hub(), self.config()).await?;
        Ok((node, hub))
    }
}

/// The replicated child of `replica_promote_ms`: counts what it is cast and hands the count
/// over; answers a call with its role, its node and its count.
struct Replica {
    node: String,
    count: u64,
    role: Option<Role>,
}

impl Replica {
    fn on(node: &str) -> Self {
        Replica { node: node.to_owned(), count: 0, role: None }
    }
}

impl Process for Replica {
    type Message = u64;
    type Call = ();
    type Reply = (Option<Role>, String, u64);

    async fn handle_cast(&mut self, by: u64, _: &mut Context<Self>) {
        self.count += by;
    }

    async fn handle_call(&mut self, (): (), reply: ReplyTo<Self::Reply>, _: &mut Context<Self>) {
        reply.send((self.role, self.node.clone(), self.count));
    }

    fn remote_messages() -> Option<Codec<Self>> {
        Some(Codec::msgpack())
    }
}

impl Handover for Replica {
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

/// The numbers of the children `hub` runs here (`child-N` → N), and, if `global`, how many
/// children run anywhere as it sees them (else 0).
fn view(hub: &Hub, global: bool) -> (Vec<u32>, usize) {
    let local = hub
        .which_children_local()
        .into_iter()
        .filter(|row| matches!(row.status, ChildStatus::Running(_)))
        .filter_map(|row| row.child.strip_prefix("child-")?.parse().ok())
        .collect();
    if !global {
        return (local, 0);
    }
    let running = hub
        .which_children_global()
        .iter()
        .filter(|row| matches!(row.status, ChildStatus::Running(_)))
        .count();
    (local, running)
}

/// `shoal-bench hub-node NAME` or `hub-replica-node NAME`: node `b` or `c` of `setup`.
/// Prints `listening <addr>`, serves until stdin closes.
pub(crate) fn serve_node(setup: Setup, name: &str) -> anyhow::Result<()> {
    ensure!(NODES[1..].contains(&name), "{} takes b or c, not {name:?}", setup.subcommand());
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    tokio.block_on(async {
        let (node, hub) = setup.start_node(name).await?;
        let serving = hub.clone();
        node.register_rpc(LOCAL, move |global: bool| {
            let answer = view(&serving, global);
            async move { answer }
        });
        serve_until_stdin_closes(&node).await?;
        drop(hub);
        node.shutdown();
        Ok(())
    })
}

/// Nodes `b` and `c` of `setup`, each in a process of its own, with their addresses.
fn spawn_others(setup: Setup) -> anyhow::Result<[(NodeProcess, SocketAddr); 2]> {
    Ok([spawn_node(setup.subcommand(), VICTIM)?, spawn_node(setup.subcommand(), OTHER)?])
}

/// Node `a` of `setup`, joined to `b` and `c` at `addrs`, once its hub sees all three.
async fn join_others(setup: Setup, addrs: [SocketAddr; 2]) -> anyhow::Result<(Node, Hub)> {
    let (node, hub) = setup.start_node(NODES[0]).await?;
    for addr in addrs {
        node.join(addr).await.with_context(|| format!("joining {addr}"))?;
    }
    let deadline = Instant::now() + BOUND;
    while hub.nodes().len() < NODES.len() {
        ensure!(Instant::now() < deadline, "the hub did not form: {:?}", hub.nodes());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok((node, hub))
}

/// How the victim is lost.
#[derive(Clone, Copy, Debug)]
enum Loss {
    /// SIGKILL: the kernel closes its sockets, so the survivors see it go at once.
    Kill,
    /// SIGSTOP: its sockets stay open and silent, so the survivors see it go only when their
    /// failure detection (the heartbeat's failure timeout) does.
    Stop,
}

/// Loses `victim` by `loss`; returns once the signal is sent (and, for a kill, the process
/// reaped).
fn lose(victim: &mut NodeProcess, loss: Loss) -> anyhow::Result<()> {
    match loss {
        Loss::Kill => {
            let _ = victim.0.kill();
            let _ = victim.0.wait();
        }
        Loss::Stop => {
            let pid = victim.0.id();
            let status = Command::new("kill").args(["-STOP", &pid.to_string()]).status()?;
            ensure!(status.success(), "`kill -STOP {pid}` failed ({status})");
        }
    }
    Ok(())
}

/// `failover_ms`: node `b` SIGKILLed (see the module docs); milliseconds from just before
/// the kill until the survivors run every child, each once. SPEC.md's target: ≤ 1,000 ms.
pub(crate) fn failover_ms() -> anyhow::Result<f64> {
    failover(Loss::Kill)
}

/// `failover_silent_ms`: node `b` stopped with SIGSTOP instead (see the module docs): no
/// socket closes, so the figure includes the default failure detection (a peer silent for
/// 2 s is down, noticed at a heartbeat tick of 250 ms); milliseconds from the moment `b` is
/// stopped until the survivors run every child, each once.
pub(crate) fn failover_silent_ms() -> anyhow::Result<f64> {
    failover(Loss::Stop)
}

fn failover(loss: Loss) -> anyhow::Result<f64> {
    let [(mut victim, b_addr), (other, c_addr)] = spawn_others(Setup::Failover)?;
    let value = on_workers(async move {
        let (node, hub) = join_others(Setup::Failover, [b_addr, c_addr]).await?;
        let deadline = Instant::now() + BOUND;
        let children: Vec<HubChild> = (0..CHILDREN)
            .map(|i| Ok(HubChild::new(ChildSpec::new(format!("child-{i}"), FACTORY, &())?)))
            .collect::<anyhow::Result<_>>()?;
        let options = StartOptions { timeout: BOUND, ..StartOptions::default() };
        let results = hub.init_children(children, options).await?;
        if let Some((child, Err(error))) = results.iter().find(|(_, result)| result.is_err()) {
            bail!("{child} did not start: {error}");
        }
        let on_victim = results
            .iter()
            .filter(|(_, result)| result.as_ref().is_ok_and(|started| started.node == VICTIM))
            .count();
        // Every survivor must hold every child before the loss.
        loop {
            let (_, seen_by_a) = view(&hub, true);
            let (_, seen_by_c) = ask_other(&node, true).await?;
            if seen_by_a == CHILDREN && seen_by_c == CHILDREN {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "not every child seen running: {seen_by_a} by a, {seen_by_c} by c"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let mut node_events = node.subscribe();
        let mut hub_events = hub.subscribe();
        let started = Instant::now();
        if std::env::var_os("HUB_FAILOVER_TRACE").is_some() {
            tokio::spawn(async move {
                while let Ok(event) = node_events.recv().await {
                    eprintln!("{:?} node event {event:?}", started.elapsed());
                }
            });
            tokio::spawn(async move {
                while let Ok(event) = hub_events.recv().await {
                    if !matches!(event, HubEvent::Started { .. } | HubEvent::Stopped { .. }) {
                        eprintln!("{:?} hub event {event:?}", started.elapsed());
                    }
                }
            });
        }
        lose(&mut victim, loss)?;
        let mut asks = 0u32;
        let (elapsed, on_a) = loop {
            let (mut on_a, _) = view(&hub, false);
            let (on_c, _) = ask_other(&node, false).await?;
            asks += 1;
            if std::env::var_os("HUB_FAILOVER_TRACE").is_some() {
                eprintln!("{:?} a={} c={}", started.elapsed(), on_a.len(), on_c.len());
            }
            let total = on_a.len() + on_c.len();
            let count = on_a.len();
            on_a.extend(on_c);
            let distinct: BTreeSet<u32> = on_a.into_iter().collect();
            if total == CHILDREN
                && distinct.len() == CHILDREN
                && distinct.iter().all(|&n| (n as usize) < CHILDREN)
            {
                break (started.elapsed(), count);
            }
            // A short pause between looks, so that asking does not compete with the failover
            // for the survivors' cores more than it must (the figure is late by up to this).
            tokio::time::sleep(LOOK_PAUSE).await;
            ensure!(
                started.elapsed() < BOUND,
                "the survivors ran {} distinct of {CHILDREN} children ({total} in all) after \
                 {BOUND:?}",
                distinct.len()
            );
        };
        eprintln!(
            "{CHILDREN} children, {on_victim} on {VICTIM}; {VICTIM} lost by {loss:?}: all run on \
             a ({on_a}) and c ({}) after {elapsed:?} ({asks} looks)",
            CHILDREN - on_a
        );
        drop(hub);
        node.shutdown();
        Ok(elapsed.as_secs_f64() * 1e3)
    });
    drop(other);
    value
}

/// Node `c`'s view (see [`LOCAL`]).
async fn ask_other(node: &Node, global: bool) -> anyhow::Result<(Vec<u32>, usize)> {
    node.rpc::<bool, (Vec<u32>, usize)>(OTHER, LOCAL, &global, ASK_TIMEOUT)
        .await
        .with_context(|| format!("asking {OTHER} for its children"))
}

/// `replica_promote_ms`: one child with two copies, active/passive (hub `replica`; see the
/// module docs: `down_after` = 0, a reconcile tick of 100 ms, the active copy's state
/// streamed every 200 ms, every transport setting at its default), its active copy on node
/// `b` and its passive one on `c` ([`replicated_child`]). Node `a` casts it
/// [`REPLICA_CASTS`] increments by child id ([`Hub::via`]), and waits until the copy on `b`
/// answers as active with that count and the copy on `c`, called by its pid, as passive with
/// the count streamed to it. Then `b` is SIGKILLed. The clock runs from just before the kill
/// until a call through `a`'s [`Hub::via`] (calls one after the other, [`LOOK_PAUSE`] apart,
/// each waiting at most [`CALL_TIMEOUT`]) is answered by a copy that says it is active and
/// is not on `b`; that copy must be `c`'s, with the count. Milliseconds; SPEC.md's target:
/// ≤ 500 ms.
pub(crate) fn replica_promote_ms() -> anyhow::Result<f64> {
    let [(mut victim, b_addr), (other, c_addr)] = spawn_others(Setup::Replica)?;
    let value = on_workers(async move {
        let (node, hub) = join_others(Setup::Replica, [b_addr, c_addr]).await?;
        let child = replicated_child()?;
        let spec = ChildSpec::new(child.clone(), REPLICA_FACTORY, &())?;
        let options = StartOptions { timeout: BOUND, ..StartOptions::default() };
        let results = hub.init_children(vec![HubChild::new(spec)], options).await?;
        if let Some((child, Err(error))) = results.iter().find(|(_, result)| result.is_err()) {
            bail!("{child} did not start: {error}");
        }
        let runtime = node.runtime().clone();
        let by_id = &runtime.target::<Replica>(hub.via(&child));
        let deadline = Instant::now() + BOUND;
        until(deadline, "b's copy answers as active", || async move {
            answer(by_id)
                .await
                .is_some_and(|(role, at, _)| role == Some(Role::Active) && at == VICTIM)
        })
        .await?;
        for _ in 0..REPLICA_CASTS {
            by_id.cast(1).await.context("casting to the child by id")?;
        }
        let ready = (Some(Role::Active), VICTIM.to_owned(), REPLICA_CASTS);
        until(deadline, "b's copy has every cast", || {
            let ready = ready.clone();
            async move { answer(by_id).await == Some(ready) }
        })
        .await?;
        let passive = loop {
            let on_other = hub
                .which_children_global()
                .into_iter()
                .filter(|row| row.child == child && row.node.as_deref() == Some(OTHER))
                .find_map(|row| match row.status {
                    ChildStatus::Running(pid) => Some(pid),
                    _ => None,
                });
            if let Some(pid) = on_other {
                break runtime.target::<Replica>(pid);
            }
            ensure!(Instant::now() < deadline, "a never saw a copy of {child} run on {OTHER}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let passive = &passive;
        let streamed = (Some(Role::Passive), OTHER.to_owned(), REPLICA_CASTS);
        until(deadline, "c's copy is passive with the count streamed to it", || {
            let streamed = streamed.clone();
            async move { answer(passive).await == Some(streamed) }
        })
        .await?;
        ensure!(hub.active(&child).as_deref() == Some(VICTIM), "a sees {child} active elsewhere");

        let started = Instant::now();
        lose(&mut victim, Loss::Kill)?;
        let mut calls = 0u32;
        let mut last = None;
        let (elapsed, at, count) = loop {
            calls += 1;
            match by_id.call_timeout((), CALL_TIMEOUT).await {
                Ok((Some(Role::Active), at, count)) if at != VICTIM => {
                    break (started.elapsed(), at, count);
                }
                answer => last = Some(answer),
            }
            ensure!(
                started.elapsed() < BOUND,
                "no copy of {child} answered as active within {BOUND:?}; last: {last:?}; a sees \
                 it active on {:?}, its copies {:?}",
                hub.active(&child),
                copies(&hub, &child)
            );
            tokio::time::sleep(LOOK_PAUSE).await;
        };
        ensure!(
            at == OTHER && count == REPLICA_CASTS,
            "the copy that answered as active is {at}'s with count {count}, not {OTHER}'s with \
             {REPLICA_CASTS}"
        );
        eprintln!(
            "{child}: active on {VICTIM}, passive on {OTHER}; {VICTIM} killed: {OTHER}'s copy \
             answered as active, count {count}, after {elapsed:?} ({calls} calls; last other \
             answer {last:?})"
        );
        drop(hub);
        node.shutdown();
        Ok(elapsed.as_secs_f64() * 1e3)
    });
    drop(other);
    value
}

/// A child id whose two owners on the ring of `a`, `b` and `c` are `b` then `c`: its active
/// copy on the node lost, its passive one on the other survivor, which owns it once `b` is
/// gone (so the promoted copy stays the active one when the replacement passive copy starts
/// on `a`).
fn replicated_child() -> anyhow::Result<String> {
    let ring = Ring::with_vnodes(NODES, Setup::Replica.config().table.vnodes);
    (0..1_000)
        .map(|i| format!("replica-{i}"))
        .find(|child| ring.owners(child, 2) == [VICTIM, OTHER])
        .context("no child id of 1,000 has the owners b then c")
}

/// The copies of `child` as `hub` sees them: node and status.
fn copies(hub: &Hub, child: &str) -> Vec<(Option<String>, ChildStatus)> {
    let rows = hub.which_children_global().into_iter().filter(|row| row.child == child);
    rows.map(|row| (row.node, row.status)).collect()
}

/// What `copy` answers a call (role, node, count), if it answers within [`CALL_TIMEOUT`].
async fn answer(copy: &Target<Replica>) -> Option<(Option<Role>, String, u64)> {
    copy.call_timeout((), CALL_TIMEOUT).await.ok()
}

/// Asks `check` again and again, 10 ms apart, until it holds; an error naming `what` once
/// `deadline` passes.
async fn until<F, Fut>(deadline: Instant, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    while !check().await {
        ensure!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
