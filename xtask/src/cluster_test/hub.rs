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

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::{Cluster, Poll, Profile};

/// Children per `hub start` command.
const BATCH: usize = 1_000;

/// The hub's `down_after` on every node (`shoal-node`'s `hub.rs`).
const DOWN_AFTER: Duration = Duration::from_millis(500);

/// Slack on top of the nodedown bound and `down_after` for a lost node's children to run
/// again: the reconcile tick, thousands of starts and their replication, on a debug build.
const FAILOVER_ALLOWANCE: Duration = Duration::from_secs(3);

/// How long the children may take to be placed after a start, a restart or a heal.
const PLACE_TIMEOUT: Duration = Duration::from_secs(30);

/// One node's `hub report`.
struct Report {
    nodes: Vec<String>,
    rows: usize,
    doubled: usize,
    foreign: usize,
    mismatch: usize,
    ids: Vec<u32>,
}

/// Where each child runs once placed: child number → node index.
type Placement = BTreeMap<u32, usize>;

pub(super) fn hub(cluster: &mut Cluster, profile: &Profile) -> Result<String> {
    cluster.wait_for_full_mesh().context("before the hub")?;
    let all: Vec<usize> = (0..cluster.size).collect();
    let children = profile.hub_children;
    let mut report = Vec::new();

    // 1. Start the children, every node its share, in batches.
    let started = Instant::now();
    let names = cluster.names(&all);
    cluster.wait_for(PLACE_TIMEOUT, "every hub sees every node", |cluster| {
        let views = cluster.ask_all(&all, "hub nodes")?;
        let differ: Vec<String> = all
            .iter()
            .zip(&views)
            .filter(|(_, view)| format!("{{{view}}}") != names)
            .map(|(&index, view)| format!("{} sees [{view}]", cluster.nodes[index].name))
            .collect();
        Ok(if differ.is_empty() { Poll::Done(()) } else { Poll::Pending(differ.join("; ")) })
    })?;
    start_children(cluster, children)?;
    let batches_done = started.elapsed();
    let placement = wait_placed(cluster, &all, children, PLACE_TIMEOUT, "every child placed")?;
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
    println!("    SIGKILL {name}, which runs {lost} children");
    let killed_at = Instant::now();
    cluster.nodes[victim].kill();
    let mut doubled = 0;
    let after_kill = wait_placed_counting(
        cluster,
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
    println!("    restarted {name} as incarnation {incarnation}");
    let rejoined = Instant::now();
    let mut doubled = 0;
    let after_restart = wait_placed_counting(
        cluster,
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
    println!("    partition {sides}");
    let apart = apart(cluster, profile, children, &minority, &majority);
    let healed_at = Instant::now();
    let healed = cluster.ask_all(&all, "heal-all");
    let apart = apart?;
    healed.context("healing")?;
    cluster.wait_for_full_mesh().context("after healing")?;
    let mut doubled = 0;
    let after_heal = wait_placed_counting(
        cluster,
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

/// Sends each node its share of `c/0` .. `c/(children-1)`, [`BATCH`] per command, one
/// command per node at a time; every child must start.
fn start_children(cluster: &mut Cluster, children: usize) -> Result<()> {
    let share = children.div_ceil(cluster.size);
    let mut next: Vec<usize> = (0..cluster.size).map(|index| index * share).collect();
    let end = |index: usize| ((index + 1) * share).min(children);
    loop {
        let commands: Vec<(usize, String, usize)> = (0..cluster.size)
            .filter(|&index| next[index] < end(index))
            .map(|index| {
                let count = BATCH.min(end(index) - next[index]);
                (index, format!("hub start {} {count}", next[index]), count)
            })
            .collect();
        if commands.is_empty() {
            return Ok(());
        }
        let asked: Vec<(usize, String)> =
            commands.iter().map(|(index, command, _)| (*index, command.clone())).collect();
        let answers = cluster.ask_each(&asked)?;
        for ((index, command, count), answer) in commands.iter().zip(&answers) {
            ensure!(
                answer.starts_with(&format!("started={count} failed=0")),
                "{}: `{command}` answered `{answer}`",
                cluster.nodes[*index].name
            );
            next[*index] += count;
        }
    }
}

/// As [`wait_placed_counting`], without the count.
fn wait_placed(
    cluster: &mut Cluster,
    nodes: &[usize],
    children: usize,
    timeout: Duration,
    what: &str,
) -> Result<Placement> {
    wait_placed_counting(cluster, nodes, children, timeout, what, &mut 0)
}

/// Waits until each of the `children` is placed on `nodes` (see the module docs); keeps in
/// `doubled` the most children seen with two live processes across them at once.
fn wait_placed_counting(
    cluster: &mut Cluster,
    nodes: &[usize],
    children: usize,
    timeout: Duration,
    what: &str,
    doubled: &mut usize,
) -> Result<Placement> {
    cluster.wait_for(timeout, what, |cluster| placed(cluster, nodes, children, doubled))
}

/// One look at `nodes`' reports: `Done` with the placement once every child is placed.
fn placed(
    cluster: &mut Cluster,
    nodes: &[usize],
    children: usize,
    doubled: &mut usize,
) -> Result<Poll<Placement>> {
    let answers = cluster.ask_all(nodes, "hub report")?;
    let names: Vec<String> = {
        let mut names: Vec<String> =
            nodes.iter().map(|&index| cluster.nodes[index].name.clone()).collect();
        names.sort();
        names
    };
    let mut problems = Vec::new();
    let mut placement = Placement::new();
    let mut copies: BTreeMap<u32, usize> = BTreeMap::new();
    for (&index, answer) in nodes.iter().zip(&answers) {
        let name = &cluster.nodes[index].name;
        let report = parse_report(answer)?;
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
        for id in report.ids {
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
    Ok(if problems.is_empty() { Poll::Done(placement) } else { Poll::Pending(problems.join("; ")) })
}

/// `a:2012 b:1987 ...`: children per node.
fn per_node(cluster: &Cluster, placement: &Placement) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for &index in placement.values() {
        *counts.entry(cluster.nodes[index].name.as_str()).or_default() += 1;
    }
    let counts: Vec<String> = counts.iter().map(|(name, n)| format!("{name}:{n}")).collect();
    counts.join(" ")
}

/// `nodes=a,b live=2 rows=2 doubled=0 foreign=0 mismatch=0 ids=1,7` → the report.
fn parse_report(answer: &str) -> Result<Report> {
    let parse = || -> Result<Report> {
        let mut report =
            Report { nodes: Vec::new(), rows: 0, doubled: 0, foreign: 0, mismatch: 0, ids: vec![] };
        let mut live = None;
        for field in answer.split_whitespace() {
            let (key, value) = field.split_once('=').context("no `=`")?;
            let list = || value.split(',').filter(|item| !item.is_empty());
            match key {
                "nodes" => report.nodes = list().map(str::to_owned).collect(),
                "live" => live = Some(value.parse::<usize>()?),
                "rows" => report.rows = value.parse()?,
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
    }
}
