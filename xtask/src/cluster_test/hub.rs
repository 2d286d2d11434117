//! The hub scenario: hub `cluster-test` (`shoal-hub`, on every node, with the node's short
//! knobs: a node gone for 500 ms has its children started elsewhere, the ring must be
//! unchanged for 300 ms before children move on a join; see `shoal-node`'s `hub.rs`) through
//! a SIGKILL, a restart and a partition.
//!
//! What runs where is judged from every node's own report (`hub report`): the children whose
//! processes are alive there, as the processes themselves record it, checked against what the
//! node's hub lists as running there and against its ring. A child counts as placed when, on
//! the nodes asked, exactly one process of it is alive, on the node its owner by that node's
//! ring, listed there as running, and every one of those nodes sees the same hub nodes.
//!
//! 1. **start**: [`Profile::hub_children`] children (`c/0` ..) started in batches of
//!    [`BATCH`] through `init_children`, from every node at once (each its share); every child
//!    must be placed on the five nodes.
//! 2. **kill**: a node is SIGKILLed; every child must be placed again on the survivors (its
//!    children running again, exactly once) within [`Profile::nodedown_bound`] plus the hub's
//!    `down_after` plus [`FAILOVER_ALLOWANCE`]; the time is reported.
//! 3. **restart**: it is restarted and rejoins; every child must be placed on all the nodes,
//!    and the children that moved must be exactly those now on the restarted node (consistent
//!    hashing moves nothing else), about 1/N of them; the ratio is reported.
//! 4. **partition**: a minority and a majority are cut apart; each side must place every
//!    child on its own nodes (both sides run every child then: the hub's documented
//!    behaviour under a partition); then the cluster heals, and every child must be placed
//!    exactly once on all the nodes again (the conflicts resolved).
//!
//! During each wait the largest number of children seen with two live processes at once
//! (across the nodes asked) is kept and reported; only the end of each wait is judged.
//!
//! The `quorum` scenario ([`super::quorum`]) drives the node's other hub with the pieces here
//! that take the hub's command word ([`HUB`] here): starting children in batches, the nodes'
//! reports and the judgement of where the children run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};

use super::{Cluster, Poll, Profile};

/// The word the node's commands for hub `cluster-test` start with (`hub start`, ...).
const HUB: &str = "hub";

/// Children per `start` or `stop` command.
const BATCH: usize = 1_000;

/// The hubs' `down_after` on every node (`shoal-node`'s `hub.rs`).
pub(super) const DOWN_AFTER: Duration = Duration::from_millis(500);

/// Slack on top of the nodedown bound and `down_after` for a lost node's children to run
/// again: the reconcile tick, thousands of starts and their replication, on a debug build.
pub(super) const FAILOVER_ALLOWANCE: Duration = Duration::from_secs(3);

/// How long the children may take to be placed after a start, a restart or a heal.
pub(super) const PLACE_TIMEOUT: Duration = Duration::from_secs(30);

/// One node's report on one of its hubs (`hub report`, `quorum-hub report`).
pub(super) struct Report {
    /// The hub's nodes as this node sees them, sorted.
    pub(super) nodes: Vec<String>,
    /// Whether this node has its quorum.
    pub(super) quorum: bool,
    /// Whether the hub is partitioned, as this node sees it.
    pub(super) partitioned: bool,
    /// Children the hub lists as running here.
    pub(super) rows: usize,
    /// Children the hub lists here, however they stand.
    pub(super) own: usize,
    /// Children the hub lists here as suspended (this node is without its quorum).
    pub(super) suspended: usize,
    /// Children with more than one live process here.
    pub(super) doubled: usize,
    /// Live children this node's ring gives to another node.
    pub(super) foreign: usize,
    /// Children live here but not listed as running, or listed but not live.
    pub(super) mismatch: usize,
    /// The numbers of the children whose processes are alive here, sorted.
    pub(super) ids: Vec<u32>,
}

/// Where each child runs once placed: child number → node index.
pub(super) type Placement = BTreeMap<u32, usize>;

/// What a batch command does to its children.
#[derive(Clone, Copy)]
pub(super) enum Batch {
    /// `start FROM COUNT`, answered `started=COUNT failed=0`.
    Start,
    /// `stop FROM COUNT` (terminate), answered `stopped=COUNT failed=0`.
    Stop,
}

impl Batch {
    fn command(self) -> &'static str {
        match self {
            Batch::Start => "start",
            Batch::Stop => "stop",
        }
    }

    fn done(self) -> &'static str {
        match self {
            Batch::Start => "started",
            Batch::Stop => "stopped",
        }
    }
}

pub(super) fn hub(cluster: &mut Cluster, profile: &Profile) -> Result<String> {
    cluster.wait_for_full_mesh().context("before the hub")?;
    let all: Vec<usize> = (0..cluster.size).collect();
    let children = profile.hub_children;
    let mut report = Vec::new();

    // 1. Start the children, every node its share, in batches.
    let started = Instant::now();
    wait_hub_nodes(cluster, HUB, &all)?;
    in_batches(cluster, HUB, Batch::Start, children)?;
    let batches_done = started.elapsed();
    let placement = wait_placed(cluster, HUB, &all, children, PLACE_TIMEOUT, "every child placed")?;
    report.push(format!(
        "{children} children started in batches of {BATCH} from {} nodes in {} ms, each \
         running once on its owner ({}) within {} ms",
        cluster.size,
        batches_done.as_millis(),
        per_node(cluster, &placement),
        started.elapsed().as_millis()
    ));

    // 2. SIGKILL a node.
    let victim = cluster.rng.below(cluster.size);
    let name = cluster.nodes[victim].name.clone();
    let survivors: Vec<usize> = all.iter().copied().filter(|&index| index != victim).collect();
    let lost = placement.values().filter(|&&node| node == victim).count();
    let bound = profile.nodedown_bound() + DOWN_AFTER + FAILOVER_ALLOWANCE;
    cluster.progress.line(&format!("    SIGKILL {name}, which runs {lost} children"));
    let killed_at = Instant::now();
    cluster.nodes[victim].kill();
    let mut doubled = 0;
    let after_kill = wait_placed_counting(
        cluster,
        HUB,
        &survivors,
        children,
        bound + Duration::from_secs(5),
        "the killed node's children running again",
        &mut doubled,
    )?;
    let failover = killed_at.elapsed();
    ensure!(
        failover <= bound,
        "{name}'s children ran again only after {} ms (bound {} ms)",
        failover.as_millis(),
        bound.as_millis()
    );
    let kept = placement
        .iter()
        .filter(|(child, node)| **node != victim && after_kill.get(child) == Some(node))
        .count();
    ensure!(
        kept == children - lost,
        "only {kept} of the survivors' {} children stayed where they were",
        children - lost
    );
    report.push(format!(
        "{name} SIGKILLed: its {lost} children running again on the {} survivors, all \
         {children} exactly once, after {} ms (bound {} ms; at most {doubled} seen doubled \
         meanwhile), the survivors' own {kept} unmoved",
        survivors.len(),
        failover.as_millis(),
        bound.as_millis()
    ));

    // 3. Restart it: about 1/N of the children move to it, and only those.
    let incarnation = cluster.restart_and_rejoin(victim)?;
    cluster.progress.line(&format!("    restarted {name} as incarnation {incarnation}"));
    let rejoined = Instant::now();
    let mut doubled = 0;
    let after_restart = wait_placed_counting(
        cluster,
        HUB,
        &all,
        children,
        PLACE_TIMEOUT,
        "children moved to the restarted node",
        &mut doubled,
    )?;
    let moved: Vec<u32> = after_restart
        .iter()
        .filter(|(child, node)| after_kill.get(child) != Some(node))
        .map(|(child, _)| *child)
        .collect();
    let to_victim = after_restart.values().filter(|&&node| node == victim).count();
    ensure!(
        moved.len() == to_victim,
        "{} children moved, but {to_victim} are on {name}: children moved between survivors",
        moved.len()
    );
    let ratio = to_victim as f64 / children as f64;
    let fair = 1.0 / cluster.size as f64;
    ensure!(
        (0.5 * fair..=1.5 * fair).contains(&ratio),
        "{to_victim} of {children} children moved to {name}: a ratio of {ratio:.3}, not about \
         1/{} ({fair:.3})",
        cluster.size
    );
    report.push(format!(
        "restarted: {to_victim} children moved to it, a ratio of {ratio:.3} (1/{} = {fair:.3}), \
         no other moved, all {children} exactly once within {} ms of the full mesh (at most \
         {doubled} seen doubled meanwhile)",
        cluster.size,
        rejoined.elapsed().as_millis()
    ));

    // 4. A partition, then the heal.
    let (minority, majority) = cluster.split();
    let sides = format!("{} | {}", cluster.names(&minority), cluster.names(&majority));
    cluster.progress.line(&format!("    partition {sides}"));
    let apart = apart(cluster, profile, children, &minority, &majority);
    let healed_at = Instant::now();
    let healed = cluster.ask_all(&all, "heal-all");
    let apart = apart?;
    healed.context("healing")?;
    cluster.wait_for_full_mesh().context("after healing")?;
    let mut doubled = 0;
    let after_heal = wait_placed_counting(
        cluster,
        HUB,
        &all,
        children,
        PLACE_TIMEOUT,
        "exactly one copy of each child after the heal",
        &mut doubled,
    )?;
    report.push(format!(
        "partition {sides}: {apart}; healed: all {children} exactly once on their owners \
         ({}) within {} ms (up to {doubled} seen doubled as the sides met)",
        per_node(cluster, &after_heal),
        healed_at.elapsed().as_millis()
    ));
    Ok(report.join("; "))
}

/// Phase 4 while apart: each side runs every child, once, on its own nodes.
fn apart(
    cluster: &mut Cluster,
    profile: &Profile,
    children: usize,
    minority: &[usize],
    majority: &[usize],
) -> Result<String> {
    cluster.cut(minority, majority)?;
    let cut_at = Instant::now();
    let bound = profile.nodedown_bound() + DOWN_AFTER + FAILOVER_ALLOWANCE;
    let mut times = Vec::new();
    for side in [minority, majority] {
        let mut doubled = 0;
        let what = format!("every child running once on {}", cluster.names(side));
        wait_placed_counting(
            cluster,
            HUB,
            side,
            children,
            bound + Duration::from_secs(5),
            &what,
            &mut doubled,
        )?;
        times.push(cut_at.elapsed());
    }
    let last = times.iter().max().copied().unwrap_or_default();
    ensure!(
        last <= bound,
        "the sides ran every child only after {} ms (bound {} ms)",
        last.as_millis(),
        bound.as_millis()
    );
    Ok(format!(
        "each side ran all {children} children once on its own nodes within {} ms of the \
         cuts (bound {} ms)",
        last.as_millis(),
        bound.as_millis()
    ))
}

/// Waits until every one of `nodes` sees exactly `nodes` in hub `hub` (its command word).
pub(super) fn wait_hub_nodes(cluster: &mut Cluster, hub: &str, nodes: &[usize]) -> Result<()> {
    let names = cluster.names(nodes);
    let command = format!("{hub} nodes");
    cluster.wait_for(PLACE_TIMEOUT, "every hub sees every node", |cluster| {
        let views = cluster.ask_all(nodes, &command)?;
        let differ: Vec<String> = nodes
            .iter()
            .zip(&views)
            .filter(|(_, view)| format!("{{{view}}}") != names)
            .map(|(&index, view)| format!("{} sees [{view}]", cluster.nodes[index].name))
            .collect();
        Ok(if differ.is_empty() { Poll::Done(()) } else { Poll::Pending(differ.join("; ")) })
    })
}

/// Sends each node its share of `c/0` .. `c/(children-1)` in hub `hub` (its command word),
/// [`BATCH`] per command, one command per node at a time; every child must be started (or
/// stopped).
pub(super) fn in_batches(
    cluster: &mut Cluster,
    hub: &str,
    batch: Batch,
    children: usize,
) -> Result<()> {
    let all: Vec<usize> = (0..cluster.size).collect();
    in_batches_on(cluster, hub, &all, batch, children)
}

/// As [`in_batches`], shared among `nodes` only (those that run the hub).
pub(super) fn in_batches_on(
    cluster: &mut Cluster,
    hub: &str,
    nodes: &[usize],
    batch: Batch,
    children: usize,
) -> Result<()> {
    let share = children.div_ceil(nodes.len());
    let mut next: Vec<usize> = (0..nodes.len()).map(|i| i * share).collect();
    let end = |i: usize| ((i + 1) * share).min(children);
    loop {
        let commands: Vec<(usize, String, usize)> = (0..nodes.len())
            .filter(|&i| next[i] < end(i))
            .map(|i| {
                let count = BATCH.min(end(i) - next[i]);
                (i, format!("{hub} {} {} {count}", batch.command(), next[i]), count)
            })
            .collect();
        if commands.is_empty() {
            return Ok(());
        }
        let asked: Vec<(usize, String)> =
            commands.iter().map(|(i, command, _)| (nodes[*i], command.clone())).collect();
        let answers = cluster.ask_each(&asked)?;
        for ((i, command, count), answer) in commands.iter().zip(&answers) {
            ensure!(
                answer.starts_with(&format!("{}={count} failed=0", batch.done())),
                "{}: `{command}` answered `{answer}`",
                cluster.nodes[nodes[*i]].name
            );
            next[*i] += count;
        }
    }
}

/// As [`wait_placed_counting`], without the count.
pub(super) fn wait_placed(
    cluster: &mut Cluster,
    hub: &str,
    nodes: &[usize],
    children: usize,
    timeout: Duration,
    what: &str,
) -> Result<Placement> {
    wait_placed_counting(cluster, hub, nodes, children, timeout, what, &mut 0)
}

/// Waits until each of the `children` of hub `hub` (its command word) is placed on `nodes`
/// (see the module docs); keeps in `doubled` the most children seen with two live processes
/// across them at once.
pub(super) fn wait_placed_counting(
    cluster: &mut Cluster,
    hub: &str,
    nodes: &[usize],
    children: usize,
    timeout: Duration,
    what: &str,
    doubled: &mut usize,
) -> Result<Placement> {
    cluster.wait_for(timeout, what, |cluster| {
        let reports = reports(cluster, hub, nodes)?;
        Ok(placed(cluster, nodes, &reports, children, doubled))
    })
}

/// Each of `nodes`' report on hub `hub` (its command word), in the order of `nodes`.
pub(super) fn reports(cluster: &mut Cluster, hub: &str, nodes: &[usize]) -> Result<Vec<Report>> {
    let answers = cluster.ask_all(nodes, &format!("{hub} report"))?;
    answers.iter().map(|answer| parse_report(answer)).collect()
}

/// Judges `nodes`' `reports` (in their order): `Done` with the placement once every child is
/// placed; keeps in `doubled` the most children seen with two live processes across them.
pub(super) fn placed(
    cluster: &Cluster,
    nodes: &[usize],
    reports: &[Report],
    children: usize,
    doubled: &mut usize,
) -> Poll<Placement> {
    let names = sorted_names(cluster, nodes);
    let mut problems = Vec::new();
    let mut placement = Placement::new();
    let mut copies: BTreeMap<u32, usize> = BTreeMap::new();
    for (&index, report) in nodes.iter().zip(reports) {
        let name = &cluster.nodes[index].name;
        if report.nodes != names {
            problems.push(format!("{name} sees the hub as [{}]", report.nodes.join(",")));
        }
        if report.doubled > 0 || report.foreign > 0 || report.mismatch > 0 {
            problems.push(format!(
                "{name}: {} live, {} listed, {} doubled, {} not its own, {} live xor listed",
                report.ids.len(),
                report.rows,
                report.doubled,
                report.foreign,
                report.mismatch
            ));
        }
        for &id in &report.ids {
            *copies.entry(id).or_default() += 1;
            placement.insert(id, index);
        }
    }
    let twice = copies.values().filter(|&&count| count > 1).count();
    *doubled = (*doubled).max(twice);
    let unknown = copies.keys().filter(|&&id| id as usize >= children).count();
    let missing = children - (copies.len() - unknown);
    if twice > 0 || missing > 0 || unknown > 0 {
        problems.insert(
            0,
            format!("{missing} children not running, {twice} on two nodes, {unknown} unknown"),
        );
    }
    if problems.is_empty() { Poll::Done(placement) } else { Poll::Pending(problems.join("; ")) }
}

/// The names of `nodes`, sorted (as a node reports the hub's nodes).
pub(super) fn sorted_names(cluster: &Cluster, nodes: &[usize]) -> Vec<String> {
    let mut names: Vec<String> =
        nodes.iter().map(|&index| cluster.nodes[index].name.clone()).collect();
    names.sort();
    names
}

/// `a:2012 b:1987 ...`: children per node.
pub(super) fn per_node(cluster: &Cluster, placement: &Placement) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for &index in placement.values() {
        *counts.entry(cluster.nodes[index].name.as_str()).or_default() += 1;
    }
    let counts: Vec<String> = counts.iter().map(|(name, n)| format!("{name}:{n}")).collect();
    counts.join(" ")
}

/// `nodes=a,b quorum=yes partitioned=no live=2 rows=2 own=2 suspended=0 doubled=0 foreign=0
/// mismatch=0 ids=1,7` → the report (the fields in any order; `live` is required, the others
/// are 0, `no` or empty if absent).
fn parse_report(answer: &str) -> Result<Report> {
    let parse = || -> Result<Report> {
        let mut report = Report {
            nodes: Vec::new(),
            quorum: false,
            partitioned: false,
            rows: 0,
            own: 0,
            suspended: 0,
            doubled: 0,
            foreign: 0,
            mismatch: 0,
            ids: vec![],
        };
        let mut live = None;
        for field in answer.split_whitespace() {
            let (key, value) = field.split_once('=').context("no `=`")?;
            let list = || value.split(',').filter(|item| !item.is_empty());
            let yes = || match value {
                "yes" => Ok(true),
                "no" => Ok(false),
                _ => Err(anyhow!("`{field}` is not `yes` or `no`")),
            };
            match key {
                "nodes" => report.nodes = list().map(str::to_owned).collect(),
                "quorum" => report.quorum = yes()?,
                "partitioned" => report.partitioned = yes()?,
                "live" => live = Some(value.parse::<usize>()?),
                "rows" => report.rows = value.parse()?,
                "own" => report.own = value.parse()?,
                "suspended" => report.suspended = value.parse()?,
                "doubled" => report.doubled = value.parse()?,
                "foreign" => report.foreign = value.parse()?,
                "mismatch" => report.mismatch = value.parse()?,
                "ids" => report.ids = list().map(str::parse).collect::<Result<_, _>>()?,
                _ => {}
            }
        }
        let Some(live) = live else { bail!("no `live=`") };
        ensure!(live == report.ids.len(), "live={live} but {} ids", report.ids.len());
        Ok(report)
    };
    parse().with_context(|| {
        let shown: String = answer.chars().take(120).collect();
        format!("cannot read the hub report `{shown}...`")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_parse() {
        let report =
            parse_report("nodes=a,b live=2 rows=2 doubled=0 foreign=1 mismatch=3 ids=1,7").unwrap();
        assert_eq!(report.nodes, ["a", "b"]);
        assert_eq!((report.rows, report.doubled, report.foreign, report.mismatch), (2, 0, 1, 3));
        assert_eq!(report.ids, [1, 7]);
        let empty = parse_report("nodes=a live=0 rows=0 doubled=0 foreign=0 mismatch=0 ids=");
        assert!(empty.unwrap().ids.is_empty());
        assert!(parse_report("nodes=a live=3 ids=1").is_err(), "a count that does not match");
        assert!(parse_report("nodes=a ids=x").is_err());
        assert!(parse_report("nodes=a live=0 quorum=maybe ids=").is_err());
    }

    #[test]
    fn reports_carry_the_quorum_and_the_suspended() {
        let report = parse_report(
            "nodes=a,b quorum=no partitioned=yes live=0 rows=0 own=3 suspended=3 doubled=0 \
             foreign=0 mismatch=0 ids=",
        )
        .unwrap();
        assert!(!report.quorum && report.partitioned);
        assert_eq!((report.own, report.suspended), (3, 3));
    }
}
