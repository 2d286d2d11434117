//! The broadcast scenario: Plumtree broadcasts while a node is SIGKILLed and restarted.
//!
//! Each node runs `shoal-broadcast` with a handler that keeps the numbers it is sent. The
//! scenario broadcasts numbered messages from random live nodes (`bcast send N`) in three
//! phases: all up; one node SIGKILLed; that node restarted, empty, and rejoined. After each
//! phase every live node must hold every number broadcast so far (`bcast seen`): the
//! restarted node gets what it missed, from before its crash too, through anti-entropy.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{Cluster, Poll, Profile};

/// How long every live node may take to hold every broadcast of a phase.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);

pub(super) fn broadcast(cluster: &mut Cluster, profile: &Profile) -> Result<String> {
    cluster.wait_for_full_mesh().context("before the broadcasts")?;
    let started = Instant::now();
    let all: Vec<usize> = (0..cluster.size).collect();
    let per_phase = profile.broadcasts_per_phase;
    let mut sent = 0u64;
    let mut report = Vec::new();

    sent = send(cluster, &all, sent, per_phase)?;
    let took = wait_for_all(cluster, &all, sent)?;
    report.push(format!("all up: {per_phase} everywhere in {} ms", took.as_millis()));

    let victim = cluster.rng.below(cluster.size);
    let victim_name = cluster.nodes[victim].name.clone();
    cluster.progress.line(&format!("    SIGKILL {victim_name}"));
    cluster.nodes[victim].kill();
    let survivors: Vec<usize> = all.iter().copied().filter(|&index| index != victim).collect();
    sent = send(cluster, &survivors, sent, per_phase)?;
    let took = wait_for_all(cluster, &survivors, sent)?;
    report.push(format!(
        "{victim_name} killed: {per_phase} more on every survivor in {} ms",
        took.as_millis()
    ));

    let incarnation = cluster.start_node(victim, &[], true)?.incarnation;
    cluster
        .progress
        .line(&format!("    restarted {victim_name} as incarnation {incarnation}, empty"));
    let via = survivors[cluster.rng.below(survivors.len())];
    let via_addr = cluster.nodes[via].addr;
    cluster.ask(victim, &format!("join {via_addr}"))?;
    cluster.wait_for_full_mesh().context("after the restart")?;
    sent = send(cluster, &all, sent, per_phase)?;
    let took = wait_for_all(cluster, &all, sent)?;
    report.push(format!(
        "{victim_name} restarted: all {sent} on every node, the ones it missed too, in {} ms",
        took.as_millis()
    ));
    Ok(format!(
        "{sent} broadcasts; {} (in {} ms)",
        report.join("; "),
        started.elapsed().as_millis()
    ))
}

/// Broadcasts `count` numbers after `sent` (`sent + 1 ..`), each from a random node of
/// `from`; returns the new total.
fn send(cluster: &mut Cluster, from: &[usize], sent: u64, count: u64) -> Result<u64> {
    for number in sent + 1..=sent + count {
        let node = from[cluster.rng.below(from.len())];
        cluster.ask(node, &format!("bcast send {number}"))?;
    }
    Ok(sent + count)
}

/// Waits until each of `nodes` holds exactly the numbers `1..=sent`; returns how long that
/// took. On failure, prints each node's overlay views and what it holds.
fn wait_for_all(cluster: &mut Cluster, nodes: &[usize], sent: u64) -> Result<Duration> {
    let started = Instant::now();
    let delivered = wait_for_delivery(cluster, nodes, sent);
    if delivered.is_err() {
        for &index in nodes {
            let views =
                cluster.ask(index, "bcast views").unwrap_or_else(|error| format!("{error:#}"));
            let seen =
                cluster.ask(index, "bcast seen").unwrap_or_else(|error| format!("{error:#}"));
            let name = &cluster.nodes[index].name;
            cluster.progress.line(&format!("    {name}: {views} seen={seen}"));
        }
    }
    delivered?;
    Ok(started.elapsed())
}

fn wait_for_delivery(cluster: &mut Cluster, nodes: &[usize], sent: u64) -> Result<()> {
    let expected: BTreeSet<u64> = (1..=sent).collect();
    cluster.wait_for(DELIVERY_TIMEOUT, "broadcasts delivered", |cluster| {
        let answers = cluster.ask_all(nodes, "bcast seen")?;
        let mut missing = Vec::new();
        for (&index, answer) in nodes.iter().zip(&answers) {
            let seen = parse_ranges(answer)
                .with_context(|| format!("{} answered `{answer}`", cluster.nodes[index].name))?;
            anyhow::ensure!(
                seen.is_subset(&expected),
                "{} holds numbers never broadcast: {answer}",
                cluster.nodes[index].name
            );
            let lacking = expected.len() - seen.len();
            if lacking > 0 {
                missing.push(format!("{} lacks {lacking}", cluster.nodes[index].name));
            }
        }
        Ok(if missing.is_empty() { Poll::Done(()) } else { Poll::Pending(missing.join(", ")) })
    })
}

/// `1-3,5,7-8` → {1, 2, 3, 5, 7, 8}; empty → {}.
pub(super) fn parse_ranges(text: &str) -> Result<BTreeSet<u64>> {
    let mut numbers = BTreeSet::new();
    for part in text.split(',').filter(|part| !part.is_empty()) {
        let (low, high) = part.split_once('-').unwrap_or((part, part));
        let (low, high): (u64, u64) = (low.parse()?, high.parse()?);
        anyhow::ensure!(low <= high, "`{part}` is not a range");
        numbers.extend(low..=high);
    }
    Ok(numbers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_ranges("1-3,5,7-8").unwrap(), BTreeSet::from([1, 2, 3, 5, 7, 8]));
        assert!(parse_ranges("").unwrap().is_empty());
        assert!(parse_ranges("3-1").is_err());
        assert!(parse_ranges("x").is_err());
    }
}
