//! The singleton scenario: registry names whose processes must run once in the cluster, used
//! from every node while the host of several is SIGKILLed and the cluster is partitioned.
//!
//! There are [`PERMANENT`] permanent names (`p00`, ...) and [`TEMPORARY`] temporary ones
//! (`t00`, ...). Every node calls every name (`names call`), which starts its process on
//! first use; the process answers with its node and pid, and reports its start and its end to
//! the checker ([`Checker`]), which keeps the live processes of each name and flags a start
//! while another process of the name lives.
//!
//! 1. **first use**: every node calls every name; all must answer, every node must reach the
//!    same process for a name, and the checker must know exactly that one live.
//! 2. **host killed**: the node hosting the most names is SIGKILLed. Its permanent names must
//!    run again on other nodes without anyone using them (the registry's takeover of the lost
//!    host's lease); its temporary names must not (nothing restarts them until they are
//!    used). It is restarted and rejoins; every node uses every name again.
//! 3. **partition**: the cluster is cut in a minority and a majority. The minority's processes
//!    must stop (its lease cannot be renewed), every permanent name must run on the majority,
//!    and the majority's nodes must reach every name. Then the partition heals.
//! 4. **healed**: every node uses every name again: exactly one live process per name, the one
//!    every node reaches, and never two at once in the whole run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::checker::Checker;
use super::{Cluster, Poll, Profile};

/// Permanent names, `p00`...
const PERMANENT: usize = 20;

/// Temporary names, `t00`...
const TEMPORARY: usize = 20;

/// How long the names may take to answer alike from every node, and the permanent ones to
/// run again after their host was lost (a lease's claim wait is the longest part).
const PHASE_TIMEOUT: Duration = Duration::from_secs(25);

/// Where a name's process runs: its node and pid, as the process answered.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Placement {
    node: String,
    pid: String,
}

fn permanent_names() -> Vec<String> {
    (0..PERMANENT).map(|i| format!("p{i:02}")).collect()
}

fn temporary_names() -> Vec<String> {
    (0..TEMPORARY).map(|i| format!("t{i:02}")).collect()
}

pub(super) fn singleton(cluster: &mut Cluster, profile: &Profile) -> Result<String> {
    let _ = profile;
    cluster.wait_for_full_mesh().context("before the names")?;
    let checker = Checker::start()?;
    let all: Vec<usize> = (0..cluster.size).collect();
    let mut report = Vec::new();

    // 1. First use.
    let placed = use_names(cluster, &checker, &all, "first use")?;
    report.push(format!("{} names placed on {}", placed.len(), spread(&placed)));

    // 2. The host of the most names SIGKILLed.
    let victim = busiest(cluster, &placed);
    let name = cluster.nodes[victim].name.clone();
    let incarnation = cluster.nodes[victim].incarnation;
    let hosted: Vec<&String> =
        placed.iter().filter(|(_, at)| at.node == name).map(|(key, _)| key).collect();
    let moved: Vec<String> =
        hosted.iter().filter(|key| key.starts_with('p')).map(|key| (*key).clone()).collect();
    let dropped: Vec<String> =
        hosted.iter().filter(|key| key.starts_with('t')).map(|key| (*key).clone()).collect();
    cluster.progress.line(&format!(
        "    SIGKILL {name}, host of {} permanent and {} temporary names",
        moved.len(),
        dropped.len()
    ));
    let killed_at = Instant::now();
    cluster.nodes[victim].kill();
    checker.killed(&name, incarnation);
    cluster.wait_for(PHASE_TIMEOUT, "the lost host's permanent names run again", |_| {
        let ledger = checker.ledger();
        let waiting: Vec<&String> = moved
            .iter()
            .filter(|key| {
                let lives = ledger.lives(key);
                lives.len() != 1 || lives[0].node == name
            })
            .collect();
        Ok(if waiting.is_empty() {
            Poll::Done(())
        } else {
            Poll::Pending(format!("{} not yet running elsewhere", waiting.len()))
        })
    })?;
    let moved_ms = killed_at.elapsed().as_millis();
    {
        let ledger = checker.ledger();
        let restarted: Vec<&String> =
            dropped.iter().filter(|key| !ledger.lives(key).is_empty()).collect();
        ensure!(restarted.is_empty(), "temporary names restarted without a use: {restarted:?}");
    }
    let incarnation = cluster.restart_and_rejoin(victim)?;
    cluster.progress.line(&format!("    restarted {name} as incarnation {incarnation}"));
    let placed = use_names(cluster, &checker, &all, "use after the kill")?;
    report.push(format!(
        "{name} SIGKILLed: its {} permanent names ran elsewhere within {moved_ms} ms, unused; \
         its {} temporary ones started afresh on their next use; then {}",
        moved.len(),
        dropped.len(),
        spread(&placed)
    ));

    // 3. A partition.
    let (minority, majority) = cluster.split();
    let sides = format!("{} | {}", cluster.names(&minority), cluster.names(&majority));
    let on_minority =
        placed.values().filter(|at| minority.iter().any(|&i| cluster.nodes[i].name == at.node));
    let on_minority = on_minority.count();
    cluster
        .progress
        .line(&format!("    partition {sides}, the minority hosting {on_minority} names"));
    let cut_at = Instant::now();
    let apart = apart(cluster, &checker, &minority, &majority);
    let healed = cluster.ask_all(&all, "heal-all");
    let apart = apart?;
    healed.context("healing")?;
    cluster.wait_for_full_mesh().context("after healing")?;
    report.push(format!(
        "partition {sides} ({on_minority} names on the minority): {apart} within {} ms",
        cut_at.elapsed().as_millis()
    ));

    // 4. Healed.
    let placed = use_names(cluster, &checker, &all, "use after the heal")?;
    let ledger = checker.ledger();
    ensure!(
        ledger.overlaps.is_empty(),
        "two live processes at once: {}",
        ledger.overlaps.join("; ")
    );
    ensure!(
        ledger.unknown_stops.is_empty() && ledger.bad_lines.is_empty(),
        "the checker was told of ends it did not know ({:?}) or lines it could not read ({:?})",
        ledger.unknown_stops,
        ledger.bad_lines
    );
    let starts: u64 = ledger.starts.values().sum();
    Ok(format!(
        "{}; healed: exactly one live process per name, reached alike from all {} nodes ({}); \
         {starts} starts in all, never two processes of a name at once",
        report.join("; "),
        cluster.size,
        spread(&placed)
    ))
}

/// The partitioned phase: the minority's processes stop, the permanent names run on the
/// majority, and the majority's nodes reach every name.
fn apart(
    cluster: &mut Cluster,
    checker: &Checker,
    minority: &[usize],
    majority: &[usize],
) -> Result<String> {
    let cut_at = Instant::now();
    cluster.cut(minority, majority)?;
    let minority_names: BTreeSet<String> =
        minority.iter().map(|&i| cluster.nodes[i].name.clone()).collect();
    let permanent = permanent_names();
    let stopped_ms = cluster.wait_for(PHASE_TIMEOUT, "the minority's processes stop", |_| {
        let ledger = checker.ledger();
        let left = ledger
            .live
            .values()
            .flatten()
            .filter(|life| minority_names.contains(&life.node))
            .count();
        Ok(if left == 0 {
            Poll::Done(cut_at.elapsed().as_millis())
        } else {
            Poll::Pending(format!("{left} still live on the minority"))
        })
    })?;
    let moved_ms =
        cluster.wait_for(PHASE_TIMEOUT, "every permanent name on the majority", |_| {
            let ledger = checker.ledger();
            let waiting = permanent
                .iter()
                .filter(|key| {
                    let lives = ledger.lives(key);
                    lives.len() != 1 || minority_names.contains(&lives[0].node)
                })
                .count();
            Ok(if waiting == 0 {
                Poll::Done(cut_at.elapsed().as_millis())
            } else {
                Poll::Pending(format!("{waiting} permanent names not yet on the majority"))
            })
        })?;
    let placed = use_names(cluster, checker, majority, "use from the majority")?;
    if let Some((key, at)) = placed.iter().find(|(_, at)| minority_names.contains(&at.node)) {
        bail!("{key} answered from {} on the minority side", at.node);
    }
    Ok(format!(
        "the minority's processes stopped within {stopped_ms} ms, every permanent name ran on \
         the majority within {moved_ms} ms, and the majority reached all {} names",
        placed.len()
    ))
}

/// Every node of `from` calls every name until all answer and agree, and the checker knows
/// exactly that process live for each: where each name runs.
fn use_names(
    cluster: &mut Cluster,
    checker: &Checker,
    from: &[usize],
    what: &str,
) -> Result<BTreeMap<String, Placement>> {
    let addr = checker.addr();
    let groups = [("permanent", permanent_names()), ("temporary", temporary_names())];
    let mut commands = Vec::new();
    for &index in from {
        for (restart, names) in &groups {
            commands.push((index, format!("names call {restart} {addr} {}", names.join(" "))));
        }
    }
    cluster.wait_for(PHASE_TIMEOUT, what, |cluster| {
        let answers = cluster.ask_each(&commands)?;
        let mut placed: BTreeMap<String, Placement> = BTreeMap::new();
        let mut failed = 0;
        let mut disagreements = Vec::new();
        for ((index, _), answer) in commands.iter().zip(&answers) {
            for (key, at) in parse_calls(answer)? {
                let Some(at) = at else {
                    failed += 1;
                    continue;
                };
                match placed.get(&key) {
                    Some(first) if *first != at => disagreements.push(format!(
                        "{key}: {} reached {}/{}, another node {}/{}",
                        cluster.nodes[*index].name, at.node, at.pid, first.node, first.pid
                    )),
                    Some(_) => {}
                    None => {
                        placed.insert(key, at);
                    }
                }
            }
        }
        if failed > 0 {
            return Ok(Poll::Pending(format!("{failed} calls failed")));
        }
        if !disagreements.is_empty() {
            return Ok(Poll::Pending(disagreements.join("; ")));
        }
        let ledger = checker.ledger();
        let mut unlike = Vec::new();
        for (key, at) in &placed {
            let lives = ledger.lives(key);
            if lives.len() != 1 || lives[0].pid != at.pid || lives[0].node != at.node {
                let lives: Vec<String> =
                    lives.iter().map(|life| format!("{}/{}", life.node, life.pid)).collect();
                unlike.push(format!("{key}: reached {}/{}, live {lives:?}", at.node, at.pid));
            }
        }
        Ok(if unlike.is_empty() {
            Poll::Done(placed)
        } else {
            Poll::Pending(format!("the checker's live processes differ: {}", unlike.join("; ")))
        })
    })
}

/// `p00=b/<1.2.3> p01=!` → each name and where it answered from (`None`: its call failed).
fn parse_calls(answer: &str) -> Result<Vec<(String, Option<Placement>)>> {
    answer
        .split_whitespace()
        .map(|call| {
            let (key, at) = call.split_once('=').context("no `=`")?;
            if at == "!" {
                return Ok((key.to_owned(), None));
            }
            let (node, pid) = at.split_once('/').context("no `/`")?;
            Ok((key.to_owned(), Some(Placement { node: node.to_owned(), pid: pid.to_owned() })))
        })
        .collect::<Result<_>>()
        .with_context(|| format!("`names call` answered `{answer}`, not `NAME=NODE/PID ...`"))
}

/// The node hosting the most names (the first of those, by index).
fn busiest(cluster: &Cluster, placed: &BTreeMap<String, Placement>) -> usize {
    let hosted =
        |index: usize| placed.values().filter(|at| at.node == cluster.nodes[index].name).count();
    (0..cluster.size).max_by_key(|&index| (hosted(index), std::cmp::Reverse(index))).unwrap_or(0)
}

/// How many names each node hosts: `a:8 b:9 ...`.
fn spread(placed: &BTreeMap<String, Placement>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for at in placed.values() {
        *counts.entry(at.node.as_str()).or_default() += 1;
    }
    let counts: Vec<String> = counts.iter().map(|(node, n)| format!("{node}:{n}")).collect();
    format!("hosts {}", counts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_parse() {
        let calls = parse_calls("p00=b/<1.2.3> p01=!").unwrap();
        let placed = Placement { node: "b".into(), pid: "<1.2.3>".into() };
        assert_eq!(calls, [("p00".to_owned(), Some(placed)), ("p01".to_owned(), None)]);
        assert!(parse_calls("p00").is_err());
        assert!(parse_calls("p00=b").is_err());
        assert!(parse_calls("").unwrap().is_empty());
    }
}
