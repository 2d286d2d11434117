//! The supervisor scenario: distributed supervisor `cluster-test` (`shoal-supervisor`'s
//! `DistributedSupervisor`, hub `dsup/cluster-test` under it, on every node, with the hubs'
//! short knobs; see `shoal-node`'s `dsup.rs`), its children started, terminated and called
//! by name through the supervisor's API, through a SIGKILL, a restart and a partition.
//!
//! What runs where is judged as in the hub scenario ([`super::hub`]), from every node's own
//! report (`dsup report`): the child processes alive there, as they record themselves (with
//! their pids), against what the node's supervisor lists as running there (name and pid) and
//! against its ring. A child counts as placed when, on the nodes asked, exactly one process
//! of it is alive, on the owner of its name by that node's ring, listed there as running
//! under its pid, and every one of those nodes sees the same supervisor nodes.
//!
//! 1. **start**: [`Profile::supervisor_children`] children named `c/0` .. started by name
//!    (`start_child`), every node its share, all of a node's at once; every child must be
//!    placed on the five nodes. A second `start_child` of names already running, from a node
//!    that does not run them, must be refused as taken (`AlreadyStarted`), and every child
//!    must answer a call by name.
//! 2. **kill**: a node is SIGKILLed; every child must be placed
//!    again on the survivors within [`Profile::nodedown_bound`] plus the hub's `down_after`
//!    plus [`FAILOVER_ALLOWANCE`] (the time is reported), the survivors' own children
//!    unmoved, and the survivors must have started exactly as many child processes as the
//!    killed node ran (each of its children ran again under its name exactly once); every
//!    child must answer a call by name from a survivor.
//! 3. **restart**: the node is restarted (it starts the supervisor again) and rejoins; every
//!    child must be placed on all the nodes again.
//! 4. **partition**: a minority and a majority are cut apart; each side must place every
//!    child on its own nodes (the supervisor's hub runs every child on each side: its
//!    documented behaviour under a partition); then the cluster heals, and every child must be
//!    placed exactly once on all the nodes again (one live child per name), every node's
//!    `children()` must list every name, the same pid for each on every node (equal digests),
//!    every node's listing of the whole supervisor must hold one running copy per name (no
//!    copy of a name stopped as the sides met still listed as running anywhere), and every
//!    child must answer a call by name.
//! 5. **clean-up**: every child is terminated by name (`terminate_child`), from every node;
//!    no node may run or list one, and every node's `children()` must be empty, so that the
//!    scenarios after this one have the nodes to themselves. A failed run cleans up as well as
//!    it can.
//!
//! Each round of calls by name waits first until every live node's `children()` lists every
//! child alike: a name resolves through the caller's own replicated view.
//!
//! During each wait the largest number of children seen with two live processes at once
//! (across the nodes asked) is kept and reported; only the end of each wait is judged.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::hub::{
    Batch, DOWN_AFTER, FAILOVER_ALLOWANCE, PLACE_TIMEOUT, Placement, in_batches, per_node, placed,
    reports, wait_hub_nodes, wait_placed, wait_placed_counting,
};
use super::{Cluster, Poll, Profile};

/// The word the node's commands for supervisor `cluster-test` start with.
const DSUP: &str = "dsup";

/// Names started a second time, to be refused as taken.
const TAKEN_CHECK: usize = 10;

pub(super) fn supervisor(cluster: &mut Cluster, profile: &Profile) -> Result<String> {
    cluster.wait_for_full_mesh().context("before the supervisor")?;
    let children = profile.supervisor_children;
    let result = run(cluster, profile, children);
    if result.is_err() {
        // Best effort, so that a failure here does not leave children in the way of the
        // scenarios after this one (a node still dead fails its share; the others go on).
        let _ = in_batches(cluster, DSUP, Batch::Stop, children);
    }
    result
}

fn run(cluster: &mut Cluster, profile: &Profile, children: usize) -> Result<String> {
    let all: Vec<usize> = (0..cluster.size).collect();
    let mut report = Vec::new();

    // 1. Start the children by name, every node its share.
    let started = Instant::now();
    wait_hub_nodes(cluster, DSUP, &all)?;
    in_batches(cluster, DSUP, Batch::Start, children)?;
    let batches_done = started.elapsed();
    let placement =
        wait_placed(cluster, DSUP, &all, children, PLACE_TIMEOUT, "every child placed")?;
    let placed_ms = started.elapsed().as_millis();
    let taken = taken_refused(cluster, &placement, children)?;
    let asker = cluster.rng.below(cluster.size);
    call_all(cluster, &all, asker, children)?;
    report.push(format!(
        "{children} children started by name from {} nodes in {} ms, each running once on the \
         owner of its name ({}) within {placed_ms} ms; {taken}; all answered a call by name \
         from {}",
        cluster.size,
        batches_done.as_millis(),
        per_node(cluster, &placement),
        cluster.nodes[asker].name
    ));

    // 2. SIGKILL a node.
    let victim = cluster.rng.below(cluster.size);
    let name = cluster.nodes[victim].name.clone();
    let survivors: Vec<usize> = all.iter().copied().filter(|&index| index != victim).collect();
    let lost = placement.values().filter(|&&node| node == victim).count();
    let inits_before = inits(cluster, &survivors)?;
    let bound = profile.nodedown_bound() + DOWN_AFTER + FAILOVER_ALLOWANCE;
    cluster.progress.line(&format!("    SIGKILL {name}, which runs {lost} children"));
    let killed_at = Instant::now();
    cluster.nodes[victim].kill();
    let mut doubled = 0;
    let after_kill = wait_placed_counting(
        cluster,
        DSUP,
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
    let restarts = inits(cluster, &survivors)? - inits_before;
    ensure!(
        restarts == lost as u64,
        "the survivors started {restarts} child processes for the {lost} children of {name}: \
         not each exactly once"
    );
    let asker = survivors[cluster.rng.below(survivors.len())];
    call_all(cluster, &survivors, asker, children)?;
    report.push(format!(
        "{name} SIGKILLed: its {lost} children running again under their names on the {} \
         survivors, each started exactly once ({restarts} starts), all {children} exactly once \
         after {} ms (bound {} ms; at most {doubled} seen doubled meanwhile), the survivors' \
         own {kept} unmoved, all answering a call by name from {}",
        survivors.len(),
        failover.as_millis(),
        bound.as_millis(),
        cluster.nodes[asker].name
    ));

    // 3. Restart it: it runs the supervisor again, and the children it owns move back to it.
    let incarnation = cluster.restart_and_rejoin(victim)?;
    cluster.progress.line(&format!("    restarted {name} as incarnation {incarnation}"));
    let rejoined = Instant::now();
    wait_hub_nodes(cluster, DSUP, &all)?;
    let mut doubled = 0;
    let after_restart = wait_placed_counting(
        cluster,
        DSUP,
        &all,
        children,
        PLACE_TIMEOUT,
        "children on the restarted node",
        &mut doubled,
    )?;
    let to_victim = after_restart.values().filter(|&&node| node == victim).count();
    report.push(format!(
        "restarted: {to_victim} children moved to it, all {children} exactly once within {} ms \
         of the full mesh (at most {doubled} seen doubled meanwhile)",
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
    let after_heal = cluster.wait_for(
        PLACE_TIMEOUT,
        "one live child per name after the heal, children() alike on every node",
        |cluster| agreed(cluster, &all, children, &mut doubled),
    )?;
    let heal_ms = healed_at.elapsed().as_millis();
    let asker = cluster.rng.below(cluster.size);
    call_all(cluster, &all, asker, children)?;
    report.push(format!(
        "partition {sides}: {apart}; healed: one live child per name, all {children} on their \
         owners ({}), every node's children() listing all {children} with the same pids and its \
         listing one running copy of each, within {heal_ms} ms (up to {doubled} seen doubled as the sides met); all answering a \
         call by name from {}",
        per_node(cluster, &after_heal),
        cluster.nodes[asker].name
    ));

    // 5. Terminate every child by name.
    let stopping = Instant::now();
    in_batches(cluster, DSUP, Batch::Stop, children)?;
    cluster.wait_for(PLACE_TIMEOUT, "every child terminated", |cluster| {
        let reports = reports(cluster, DSUP, &all)?;
        let listed = listed(cluster, &all)?;
        let left: Vec<String> = all
            .iter()
            .zip(&reports)
            .zip(&listed)
            .filter(|((_, report), listed)| {
                !report.ids.is_empty() || report.own > 0 || listed.count > 0 || listed.copies > 0
            })
            .map(|((&index, report), listed)| {
                format!(
                    "{} runs {}, lists {} here, {} in children()",
                    cluster.nodes[index].name,
                    report.ids.len(),
                    report.own,
                    listed.count
                )
            })
            .collect();
        Ok(if left.is_empty() { Poll::Done(()) } else { Poll::Pending(left.join("; ")) })
    })?;
    report.push(format!(
        "then all {children} terminated by name, run and listed nowhere, within {} ms",
        stopping.elapsed().as_millis()
    ));
    Ok(report.join("; "))
}

/// Starts [`TAKEN_CHECK`] running children again, from a node that runs none of them: every
/// start must be refused as taken.
fn taken_refused(cluster: &mut Cluster, placement: &Placement, children: usize) -> Result<String> {
    let count = TAKEN_CHECK.min(children);
    let starter = (0..cluster.size)
        .find(|index| (0..count as u32).all(|child| placement.get(&child) != Some(index)))
        .unwrap_or(0);
    let command = format!("{DSUP} start 0 {count}");
    let answer = cluster.ask(starter, &command)?;
    ensure!(
        answer.starts_with(&format!("started=0 failed={count} taken={count}")),
        "{}: `{command}` of running children answered `{answer}`, not every one taken",
        cluster.nodes[starter].name
    );
    Ok(format!("{count} started again from {}: refused, taken", cluster.nodes[starter].name))
}

/// Node `asker` calls every child by name; every one must answer, itself.
///
/// A name resolves through the asker's own view of the supervisor, which the owners'
/// replication reaches a moment after the children are placed; so the calls wait until
/// every one of `nodes` (the asker among them) lists every child, alike.
fn call_all(cluster: &mut Cluster, nodes: &[usize], asker: usize, children: usize) -> Result<()> {
    cluster.wait_for(PLACE_TIMEOUT, "every child listed alike before the calls", |cluster| {
        let listed = listed(cluster, nodes)?;
        let digests: BTreeSet<&str> = listed.iter().map(|listed| listed.digest.as_str()).collect();
        let short: Vec<String> = nodes
            .iter()
            .zip(&listed)
            .filter(|(_, listed)| listed.count != children)
            .map(|(&index, listed)| format!("{} lists {}", cluster.nodes[index].name, listed.count))
            .collect();
        Ok(if short.is_empty() && digests.len() == 1 {
            Poll::Done(())
        } else {
            Poll::Pending(format!("{}; {} different children()", short.join("; "), digests.len()))
        })
    })?;
    let command = format!("{DSUP} call 0 {children}");
    let answer = cluster.ask(asker, &command)?;
    ensure!(
        answer.starts_with(&format!("answered={children} wrong=0 failed=0")),
        "{}: `{command}` answered `{answer}`",
        cluster.nodes[asker].name
    );
    Ok(())
}

/// The child processes each of `nodes` has started since it started, summed.
fn inits(cluster: &mut Cluster, nodes: &[usize]) -> Result<u64> {
    let answers = cluster.ask_all(nodes, &format!("{DSUP} inits"))?;
    answers
        .iter()
        .map(|answer| answer.parse::<u64>().with_context(|| format!("`{DSUP} inits`: `{answer}`")))
        .sum()
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
    let mut last = Duration::ZERO;
    for side in [minority, majority] {
        let what = format!("every child running once on {}", cluster.names(side));
        wait_placed_counting(
            cluster,
            DSUP,
            side,
            children,
            bound + Duration::from_secs(5),
            &what,
            &mut 0,
        )?;
        last = last.max(cut_at.elapsed());
    }
    ensure!(
        last <= bound,
        "the sides ran every child only after {} ms (bound {} ms)",
        last.as_millis(),
        bound.as_millis()
    );
    Ok(format!(
        "each side ran all {children} children once on its own nodes within {} ms of the cuts \
         (bound {} ms)",
        last.as_millis(),
        bound.as_millis()
    ))
}

/// One look after the heal: `Done` with the placement once every child is placed on `all`
/// and every node's `children()` lists every one of them, alike.
fn agreed(
    cluster: &mut Cluster,
    all: &[usize],
    children: usize,
    doubled: &mut usize,
) -> Result<Poll<Placement>> {
    let reports = reports(cluster, DSUP, all)?;
    let listed = listed(cluster, all)?;
    let mut problems = Vec::new();
    for (&index, listed) in all.iter().zip(&listed) {
        if listed.count != children || listed.copies != children {
            problems.push(format!(
                "{}'s children() lists {} names, its listing {} running copies",
                cluster.nodes[index].name, listed.count, listed.copies
            ));
        }
    }
    let digests: BTreeSet<&str> = listed.iter().map(|listed| listed.digest.as_str()).collect();
    if digests.len() > 1 {
        problems.push(format!("{} different children() across the nodes", digests.len()));
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

/// One node's `dsup children`: its supervisor's `children()`.
#[derive(Debug, PartialEq)]
struct Listed {
    /// How many names.
    count: usize,
    /// Running copies in the node's listing of the whole supervisor.
    copies: usize,
    /// Of every name and pid: equal on nodes that agree.
    digest: String,
}

/// Each of `nodes`' `children()`, in the order of `nodes`.
fn listed(cluster: &mut Cluster, nodes: &[usize]) -> Result<Vec<Listed>> {
    let answers = cluster.ask_all(nodes, &format!("{DSUP} children"))?;
    answers.iter().map(|answer| parse_listed(answer)).collect()
}

/// `count=9 copies=9 digest=00ff` → the listing.
fn parse_listed(answer: &str) -> Result<Listed> {
    let field = |key: &str| super::field(answer, key);
    let number = |key: &str| -> Result<usize> {
        let value = field(key)?;
        let Ok(number) = value.parse() else { bail!("`{key}={value}` is not a number") };
        Ok(number)
    };
    Ok(Listed {
        count: number("count")?,
        copies: number("copies")?,
        digest: field("digest")?.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_parse() {
        let listed = parse_listed("count=9 copies=10 digest=00ff").unwrap();
        assert_eq!(listed, Listed { count: 9, copies: 10, digest: "00ff".to_owned() });
        assert!(parse_listed("copies=9 digest=00ff").is_err(), "no count");
        assert!(parse_listed("count=9 digest=00ff").is_err(), "no copies");
        assert!(parse_listed("count=x copies=9 digest=00ff").is_err());
        assert!(parse_listed("count=1 copies=1").is_err(), "no digest");
    }
}
