//! The quorum scenario: hub `cluster-test-quorum` (`shoal-hub` under a majority quorum of
//! the run's node count, on every node, with the hub scenario's short knobs; see
//! `shoal-node`'s `hub.rs`) through a partition of a minority and a majority. What runs where
//! is judged from every node's own report (`quorum-hub report`) as in the hub scenario
//! ([`super::hub`]): the child processes alive on each node, as the processes record
//! themselves, against what the node's hub lists and its ring.
//!
//! 1. **start**: [`Profile::quorum_children`] children (`c/0` ..) started in batches from
//!    every node; each must run exactly once, on its owner.
//! 2. **partition**: the nodes are cut into a minority (two of five) and a majority, both
//!    directions. Within [`Profile::nodedown_bound`] plus the hub's `down_after` plus
//!    [`FAILOVER_ALLOWANCE`] of the cuts, every minority node must report itself without its
//!    quorum, see only the minority's nodes, run no child process, list no child as running
//!    and list every child it ran as suspended (and, once so, stay so); every majority node
//!    must have its quorum and nothing suspended, and the majority must run every child
//!    exactly once, on its owner by the majority's ring. Then a start asked of each minority
//!    node must be refused with `no-quorum`, and one asked of a majority node must run.
//! 3. **heal**: within [`PLACE_TIMEOUT`], every node must have its quorum again; every child,
//!    the one started apart included, must run exactly once on its owner over all the nodes
//!    (the first ones back where they ran before the partition, the refused ones nowhere);
//!    nothing may be suspended, in any node's own rows or in its listing of the whole hub; and
//!    every node's listing of the whole hub must be the same (equal digests).
//! 4. **clean-up**: every child is terminated, from every node, and no node may list or run
//!    one, so that the hub scenario after this one has the nodes to itself.
//!
//! The most children seen alive on both sides at once during the partition is reported, not
//! judged: the majority may start a child before the minority has seen the cut and stopped
//! its copy (the hub's guarantee holds once both sides have seen it).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::hub::{
    Batch, DOWN_AFTER, FAILOVER_ALLOWANCE, PLACE_TIMEOUT, Placement, Report, in_batches, per_node,
    placed, reports, sorted_names, wait_hub_nodes, wait_placed,
};
use super::{Cluster, Poll, Profile};

/// The word the node's commands for hub `cluster-test-quorum` start with.
const QUORUM_HUB: &str = "quorum-hub";

pub(super) fn quorum(cluster: &mut Cluster, profile: &Profile) -> Result<String> {
    cluster.wait_for_full_mesh().context("before the quorum hub")?;
    let children = profile.quorum_children;
    let result = run(cluster, profile, children);
    if result.is_err() {
        // Best effort, so that a failure here does not leave thousands of children in the way
        // of the scenarios after this one; a child started apart is `c/children`.
        let _ = in_batches(cluster, QUORUM_HUB, Batch::Stop, children + 1);
    }
    result
}

fn run(cluster: &mut Cluster, profile: &Profile, children: usize) -> Result<String> {
    let all: Vec<usize> = (0..cluster.size).collect();
    let mut report = Vec::new();

    // 1. Start the children, every node its share, in batches.
    let started = Instant::now();
    wait_hub_nodes(cluster, QUORUM_HUB, &all)?;
    // A node decides on its quorum at its next reconcile tick after it sees the nodes.
    cluster.wait_for(PLACE_TIMEOUT, "every node with its quorum", |cluster| {
        let reports = reports(cluster, QUORUM_HUB, &all)?;
        let without: Vec<&str> = all
            .iter()
            .zip(&reports)
            .filter(|(_, report)| !report.quorum)
            .map(|(&index, _)| cluster.nodes[index].name.as_str())
            .collect();
        Ok(match without[..] {
            [] => Poll::Done(()),
            _ => Poll::Pending(format!("without: {}", without.join(","))),
        })
    })?;
    in_batches(cluster, QUORUM_HUB, Batch::Start, children)?;
    let before =
        wait_placed(cluster, QUORUM_HUB, &all, children, PLACE_TIMEOUT, "every child placed")?;
    report.push(format!(
        "{children} children running once on their owners ({}) within {} ms",
        per_node(cluster, &before),
        started.elapsed().as_millis()
    ));

    // 2. A partition, then 3. the heal, whatever happened apart.
    let (minority, majority) = cluster.split();
    let sides = format!("{} | {}", cluster.names(&minority), cluster.names(&majority));
    cluster.progress.line(&format!("    partition {sides}"));
    let sides_apart = Sides { minority: &minority, majority: &majority, before: &before };
    let apart = apart(cluster, profile, children, &sides_apart);
    let healed_at = Instant::now();
    let healed = cluster.ask_all(&all, "heal-all");
    let apart = apart?;
    healed.context("healing")?;
    report.push(format!("partition {sides}: {apart}"));
    report.push(heal(cluster, children + 1, &before, healed_at)?);

    // 4. Terminate every child.
    let stopping = Instant::now();
    in_batches(cluster, QUORUM_HUB, Batch::Stop, children + 1)?;
    cluster.wait_for(PLACE_TIMEOUT, "every child terminated", |cluster| {
        let reports = reports(cluster, QUORUM_HUB, &all)?;
        let left: Vec<String> = all
            .iter()
            .zip(&reports)
            .zip(listings(cluster, &all)?)
            .filter(|((_, report), listing)| {
                !report.ids.is_empty() || report.own > 0 || listing.rows > 0
            })
            .map(|((&index, report), listing)| {
                format!(
                    "{} runs {}, lists {} ({} in all)",
                    cluster.nodes[index].name,
                    report.ids.len(),
                    report.own,
                    listing.rows
                )
            })
            .collect();
        Ok(if left.is_empty() { Poll::Done(()) } else { Poll::Pending(left.join("; ")) })
    })?;
    report.push(format!(
        "then all {} terminated, listed and run nowhere, within {} ms",
        children + 1,
        stopping.elapsed().as_millis()
    ));
    Ok(report.join("; "))
}

/// The two sides of the partition, and where each child ran before it.
struct Sides<'a> {
    minority: &'a [usize],
    majority: &'a [usize],
    before: &'a Placement,
}

/// Phase 2: cuts the sides apart and checks each, then the starts asked of each side.
fn apart(
    cluster: &mut Cluster,
    profile: &Profile,
    children: usize,
    sides: &Sides<'_>,
) -> Result<String> {
    cluster.cut(sides.minority, sides.majority)?;
    let cut_at = Instant::now();
    let bound = profile.nodedown_bound() + DOWN_AFTER + FAILOVER_ALLOWANCE;
    let mut watch = Watch { minority_at: None, majority_at: None, across: 0 };
    cluster.wait_for(
        bound + Duration::from_secs(5),
        "the minority stopped, the majority running all",
        |cluster| watch.look(cluster, sides, children, cut_at),
    )?;
    let (Some(minority_at), Some(majority_at)) = (watch.minority_at, watch.majority_at) else {
        bail!("the wait ended before both sides were seen as they must be");
    };
    let last = minority_at.max(majority_at);
    ensure!(
        last <= bound,
        "the minority stopped after {} ms and the majority ran every child after {} ms (bound \
         {} ms)",
        minority_at.as_millis(),
        majority_at.as_millis(),
        bound.as_millis()
    );
    let suspended = sides.minority.iter().map(|&index| ran_on(sides.before, index)).sum::<usize>();

    // A start asked of each minority node is refused; one asked of a majority node runs, as
    // child `c/children` (so the refused ones, `c/(children+1)` .., must run nowhere later).
    let refused: Vec<(usize, String)> = sides
        .minority
        .iter()
        .enumerate()
        .map(|(i, &index)| (index, format!("{QUORUM_HUB} start {} 1", children + 1 + i)))
        .collect();
    let answers = cluster.ask_each_outcomes(&refused)?;
    for ((index, command), answer) in refused.iter().zip(&answers) {
        ensure!(
            answer.as_ref().err().map(String::as_str) == Some("error no-quorum"),
            "{}: `{command}` answered {answer:?}, not `error no-quorum`",
            cluster.nodes[*index].name
        );
    }
    let starter = sides.majority[cluster.rng.below(sides.majority.len())];
    let command = format!("{QUORUM_HUB} start {children} 1");
    let answer = cluster.ask(starter, &command)?;
    ensure!(
        answer.starts_with("started=1 failed=0"),
        "{}: `{command}` answered `{answer}`",
        cluster.nodes[starter].name
    );
    cluster.wait_for(
        PLACE_TIMEOUT,
        "the child started apart running on the majority",
        |cluster| watch.look(cluster, sides, children + 1, cut_at),
    )?;
    Ok(format!(
        "the minority without its quorum, running none and its {suspended} children suspended, \
         within {} ms of the cuts; the majority with its quorum running all {children} once \
         within {} ms (bound {} ms; at most {} seen alive on both sides at once); a start \
         refused with no-quorum on {}, one on {} ran",
        minority_at.as_millis(),
        majority_at.as_millis(),
        bound.as_millis(),
        watch.across,
        cluster.names(sides.minority),
        cluster.nodes[starter].name
    ))
}

/// What the partition's waits have seen: since when each side was as it must be, and the
/// most children alive on both sides at once.
struct Watch {
    minority_at: Option<Duration>,
    majority_at: Option<Duration>,
    across: usize,
}

impl Watch {
    /// One look at every node's report: `Done` once the minority has stopped and the
    /// majority runs all `children`; an error if a minority node that had stopped runs a
    /// child or has its quorum again.
    fn look(
        &mut self,
        cluster: &mut Cluster,
        sides: &Sides<'_>,
        children: usize,
        cut_at: Instant,
    ) -> Result<Poll<()>> {
        let nodes: Vec<usize> = sides.minority.iter().chain(sides.majority).copied().collect();
        let all = reports(cluster, QUORUM_HUB, &nodes)?;
        let (minority, majority) = all.split_at(sides.minority.len());
        let stopped = minority_problems(cluster, sides, minority);
        match (&self.minority_at, stopped.is_empty()) {
            (None, true) => self.minority_at = Some(cut_at.elapsed()),
            (Some(_), false) => bail!("the minority had stopped, but now: {}", stopped.join("; ")),
            _ => {}
        }
        let mut running = majority_problems(cluster, sides.majority, majority);
        if let Poll::Pending(problem) = placed(cluster, sides.majority, majority, children, &mut 0)
        {
            running.push(problem);
        }
        if running.is_empty() && self.majority_at.is_none() {
            self.majority_at = Some(cut_at.elapsed());
        }
        let on_minority: BTreeSet<u32> = minority.iter().flat_map(|r| r.ids.clone()).collect();
        let both = majority.iter().flat_map(|r| &r.ids).filter(|id| on_minority.contains(id));
        self.across = self.across.max(both.count());
        let pending: Vec<String> = stopped.into_iter().chain(running).collect();
        Ok(if pending.is_empty() { Poll::Done(()) } else { Poll::Pending(pending.join("; ")) })
    }
}

/// What keeps the minority's `reports` from being as they must be apart.
fn minority_problems(cluster: &Cluster, sides: &Sides<'_>, reports: &[Report]) -> Vec<String> {
    let names = sorted_names(cluster, sides.minority);
    let mut problems = Vec::new();
    for (&index, report) in sides.minority.iter().zip(reports) {
        let name = &cluster.nodes[index].name;
        let ran = ran_on(sides.before, index);
        if report.quorum || !report.partitioned {
            problems.push(format!(
                "{name}: quorum {}, partitioned {}",
                report.quorum, report.partitioned
            ));
        }
        if report.nodes != names {
            problems.push(format!("{name} sees the hub as [{}]", report.nodes.join(",")));
        }
        if !report.ids.is_empty() || report.rows > 0 {
            problems.push(format!(
                "{name} runs {} children ({} listed as running)",
                report.ids.len(),
                report.rows
            ));
        }
        if report.own != ran || report.suspended != ran {
            problems.push(format!(
                "{name} lists {} children, {} of them suspended, not the {ran} it ran, all \
                 suspended",
                report.own, report.suspended
            ));
        }
    }
    problems
}

/// What keeps the majority's `reports` from having their quorum and nothing suspended.
fn majority_problems(cluster: &Cluster, majority: &[usize], reports: &[Report]) -> Vec<String> {
    majority
        .iter()
        .zip(reports)
        .filter(|(_, report)| !report.quorum || report.suspended > 0)
        .map(|(&index, report)| {
            format!(
                "{}: quorum {}, {} suspended",
                cluster.nodes[index].name, report.quorum, report.suspended
            )
        })
        .collect()
}

/// Phase 3: waits until the healed cluster runs each of `children` once, on its owner, with
/// every node's quorum, nothing suspended and one listing everywhere.
fn heal(
    cluster: &mut Cluster,
    children: usize,
    before: &Placement,
    healed_at: Instant,
) -> Result<String> {
    cluster.wait_for_full_mesh().context("after healing")?;
    let all: Vec<usize> = (0..cluster.size).collect();
    let mut doubled = 0;
    let after = cluster.wait_for(
        PLACE_TIMEOUT,
        "healed: every child once, nothing suspended",
        |cluster| healed(cluster, &all, children, &mut doubled),
    )?;
    let elapsed = healed_at.elapsed();
    let moved = before.iter().filter(|(child, node)| after.get(child) != Some(node)).count();
    ensure!(moved == 0, "{moved} children run elsewhere than before the partition");
    Ok(format!(
        "healed: every node with its quorum, all {children} exactly once on their owners ({}), \
         the first {} where they ran before, nothing suspended, one listing on all {} nodes, \
         within {} ms (at most {doubled} seen doubled meanwhile)",
        per_node(cluster, &after),
        before.len(),
        cluster.size,
        elapsed.as_millis()
    ))
}

/// One look at every node's report after the heal: `Done` with the placement once every one
/// of `children` runs once on its owner, every node has its quorum, nothing is suspended and
/// every node lists the whole hub alike (one row per child, the same digest).
fn healed(
    cluster: &mut Cluster,
    all: &[usize],
    children: usize,
    doubled: &mut usize,
) -> Result<Poll<Placement>> {
    let reports = reports(cluster, QUORUM_HUB, all)?;
    let listings = listings(cluster, all)?;
    let mut problems = Vec::new();
    for ((&index, report), listing) in all.iter().zip(&reports).zip(&listings) {
        if !report.quorum
            || report.suspended > 0
            || listing.suspended > 0
            || listing.rows != children
        {
            problems.push(format!(
                "{}: quorum {}, {} suspended here, {} in {} rows of the hub",
                cluster.nodes[index].name,
                report.quorum,
                report.suspended,
                listing.suspended,
                listing.rows
            ));
        }
    }
    let digests: BTreeSet<&str> = listings.iter().map(|listing| listing.digest.as_str()).collect();
    if digests.len() > 1 {
        problems.push(format!("{} different listings of the hub", digests.len()));
    }
    Ok(match placed(cluster, all, &reports, children, doubled) {
        Poll::Done(placement) if problems.is_empty() => Poll::Done(placement),
        Poll::Done(_) => Poll::Pending(problems.join("; ")),
        Poll::Pending(problem) => {
            problems.insert(0, problem);
            Poll::Pending(problems.join("; "))
        }
    })
}

/// One node's `quorum-hub listing`: the whole hub as that node lists it.
#[derive(Debug, PartialEq)]
struct Listing {
    /// A row per copy of a child, or per child no node runs.
    rows: usize,
    /// Of those, the suspended copies.
    suspended: usize,
    /// Of the whole listing: equal on nodes that list the hub alike.
    digest: String,
}

/// Each of `nodes`' listing of the quorum hub, in the order of `nodes`.
fn listings(cluster: &mut Cluster, nodes: &[usize]) -> Result<Vec<Listing>> {
    let answers = cluster.ask_all(nodes, &format!("{QUORUM_HUB} listing"))?;
    answers.iter().map(|answer| parse_listing(answer)).collect()
}

/// `rows=9 suspended=3 digest=00ff` → the listing.
fn parse_listing(answer: &str) -> Result<Listing> {
    let field = |key: &str| super::field(answer, key);
    Ok(Listing {
        rows: field("rows")?.parse().with_context(|| format!("in `{answer}`"))?,
        suspended: field("suspended")?.parse().with_context(|| format!("in `{answer}`"))?,
        digest: field("digest")?.to_owned(),
    })
}

/// How many children ran on node `index` before the partition.
fn ran_on(before: &Placement, index: usize) -> usize {
    before.values().filter(|&&node| node == index).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_parse() {
        let listing = parse_listing("rows=9 suspended=3 digest=00ff").unwrap();
        assert_eq!(listing, Listing { rows: 9, suspended: 3, digest: "00ff".to_owned() });
        assert!(parse_listing("rows=9 digest=00ff").is_err(), "no suspended count");
        assert!(parse_listing("rows=x suspended=0 digest=00ff").is_err());
    }
}
