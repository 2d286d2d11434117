//! The lock scenario: every node loops on one registry lock (acquire, write to a fenced
//! checker while holding it, release) while the holder is SIGKILLed and, later, a holder is
//! cut off from the majority by a partition.
//!
//! The checker ([`Checker`]) is the storage the lock protects: it takes a write only if its
//! fencing token is at least the largest it has taken (the largest only from the node that
//! wrote it first), judged when the write arrives. The nodes write only while their guard is
//! not lost (their lease holds). Two holders at once would show as a refused write; so would a
//! holder that kept writing after its lease ended and another node took the lock.
//!
//! The phases:
//!
//! 1. **all up**: the loops run until the checker has taken [`WARM_UP_HOLDS`] holds.
//! 2. **holder killed**: one node is asked to hold its next acquisition for a long time; once
//!    the checker sees it writing, it is SIGKILLed mid-hold. Another node must take the lock
//!    with a larger token (after the lease's claim wait); the node is restarted and rejoins.
//! 3. **holder cut off**: again one node holds for long (longer than the lease), and the
//!    cluster is partitioned with it in the minority. It must stop writing once its guard is
//!    lost, and the majority must take the lock with a larger token; then the partition heals.
//! 4. **healed**: every node must take the lock again.
//!
//! Passes when no write was refused (by the checker, or as the nodes counted), the tokens the
//! checker took strictly increase from hold to hold, the cut-off holder learnt it lost the
//! lock, and every phase made progress.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::checker::{Checker, FencedWrite};
use super::{Cluster, Poll, Profile};

/// The lock every node takes.
const KEY: &str = "cluster-test-lock";

/// How long an ordinary hold lasts (the node writes a few times during it).
const HOLD_MS: u64 = 50;

/// Writes of an ordinary hold (as the node makes them): a write with a later step is from a
/// long hold.
const WRITES_PER_HOLD: u64 = 5;

/// Holds taken before the first fault.
const WARM_UP_HOLDS: usize = 10;

/// Holds the majority must take while the cut-off holder's side is apart.
const MAJORITY_HOLDS: usize = 3;

/// How long a phase may take to show its progress (a lease's claim wait is the longest part).
const PHASE_TIMEOUT: Duration = Duration::from_secs(25);

pub(super) fn lock(cluster: &mut Cluster, profile: &Profile) -> Result<String> {
    cluster.wait_for_full_mesh().context("before the lock loops")?;
    let checker = Checker::start()?;
    let run = format!("lock run {KEY} {} {HOLD_MS}", checker.addr());
    let all: Vec<usize> = (0..cluster.size).collect();
    cluster.ask_all(&all, &run)?;
    let phases = run_phases(cluster, profile, &checker, &run);
    if phases.is_err() {
        print_diagnostics(cluster);
    }
    // The loops stop whatever happened, so that the scenarios after this one find idle nodes.
    let reports = cluster.ask_all(&all, "lock stop");
    let phases = phases?;
    let reports = reports.context("stopping the lock loops")?;
    let mut refused_by_nodes = 0;
    let mut acquired = 0;
    for (index, report) in reports.iter().enumerate() {
        let refused = field(report, "refused")?;
        ensure!(refused == 0, "{}: {refused} writes refused ({report})", cluster.nodes[index].name);
        refused_by_nodes += refused;
        acquired += field(report, "acquired")?;
    }
    let ledger = checker.ledger();
    ensure!(ledger.refused.is_empty(), "writes refused: {}", ledger.refused.join("; "));
    ensure!(
        ledger.bad_lines.is_empty(),
        "lines the checker could not read: {:?}",
        ledger.bad_lines
    );
    let writes = ledger.writes.get(KEY).map_or(&[][..], Vec::as_slice);
    let tokens = hold_tokens(writes);
    ensure!(
        tokens.windows(2).all(|pair| pair[0] < pair[1]),
        "the tokens of successive holds do not strictly increase: {tokens:?}"
    );
    Ok(format!(
        "{} holds, {} fenced writes, none refused ({refused_by_nodes} by the nodes' count), \
         tokens strictly increasing {}..{} ({acquired} acquisitions counted by the loops, a \
         restarted node's since its restart); {phases}",
        tokens.len(),
        writes.len(),
        tokens.first().copied().unwrap_or(0),
        tokens.last().copied().unwrap_or(0),
    ))
}

/// Prints what every node that answers says about the lock, for a failure's reader.
fn print_diagnostics(cluster: &mut Cluster) {
    for index in 0..cluster.nodes.len() {
        for command in ["lock report".to_owned(), format!("lock info {KEY}")] {
            let answer = cluster.ask(index, &command).unwrap_or_else(|error| format!("{error:#}"));
            let name = &cluster.nodes[index].name;
            cluster.progress.line(&format!("    {name} {command}: {answer}"));
        }
    }
}

/// The four phases; what they measured.
fn run_phases(
    cluster: &mut Cluster,
    profile: &Profile,
    checker: &Checker,
    run: &str,
) -> Result<String> {
    let mut report = Vec::new();
    let long_hold_ms = 3 * profile.lease.as_millis() as u64;
    cluster.wait_for(PHASE_TIMEOUT, "holds with every node up", |_| {
        let holds = hold_tokens(&writes(checker)).len();
        Ok(if holds >= WARM_UP_HOLDS {
            Poll::Done(())
        } else {
            Poll::Pending(format!("{holds} of {WARM_UP_HOLDS} holds"))
        })
    })?;

    // The holder SIGKILLed mid-hold.
    let victim = cluster.rng.below(cluster.size);
    let name = cluster.nodes[victim].name.clone();
    let held = hold_long(cluster, checker, victim, long_hold_ms)?;
    let killed_at = Instant::now();
    cluster.nodes[victim].kill();
    cluster.progress.line(&format!("    SIGKILL {name} while it holds token {held}"));
    let next = next_hold(cluster, checker, held, "the lock taken after the kill")?;
    report.push(format!(
        "{name} SIGKILLed holding token {held}: {} took token {} {} ms later",
        next.node,
        next.token,
        (next.at - killed_at).as_millis()
    ));
    let incarnation = cluster.restart_and_rejoin(victim)?;
    cluster.progress.line(&format!("    restarted {name} as incarnation {incarnation}"));
    cluster.ask(victim, run)?;

    // A holder cut off by a partition.
    let cut_off = cluster.rng.below(cluster.size);
    let cut_name = cluster.nodes[cut_off].name.clone();
    let (minority, majority) = split_with(cluster, cut_off);
    let sides = format!("{} | {}", cluster.names(&minority), cluster.names(&majority));
    let held = hold_long(cluster, checker, cut_off, long_hold_ms)?;
    let cut_at = Instant::now();
    cluster.progress.line(&format!("    partition {sides} while {cut_name} holds token {held}"));
    let partitioned = cut_off_holder(cluster, checker, &minority, &majority, held, cut_at);
    let all: Vec<usize> = (0..cluster.size).collect();
    let healed = cluster.ask_all(&all, "heal-all");
    let partitioned = partitioned?;
    healed.context("healing")?;
    let healed_at = Instant::now();
    cluster.wait_for_full_mesh().context("after healing")?;
    let lost = field(&cluster.ask(cut_off, "lock report")?, "lost")?;
    ensure!(lost >= 1, "{cut_name} was cut off holding the lock but never saw its guard lost");
    report.push(format!("partition {sides}: {partitioned}; {cut_name} saw its guard lost"));

    // Every node takes the lock again.
    let names: BTreeSet<String> = cluster.nodes.iter().map(|node| node.name.clone()).collect();
    cluster.wait_for(PHASE_TIMEOUT, "every node holds the lock after the heal", |_| {
        let took: BTreeSet<String> = writes(checker)
            .iter()
            .filter(|write| write.at >= healed_at)
            .map(|write| write.node.clone())
            .collect();
        let missing: Vec<&String> = names.difference(&took).collect();
        Ok(if missing.is_empty() {
            Poll::Done(())
        } else {
            Poll::Pending(format!("not yet: {missing:?}"))
        })
    })?;
    report.push("after the heal every node took the lock".to_owned());
    Ok(report.join("; "))
}

/// The cut-off phase: the majority must take the lock from the cut-off holder, and take it
/// [`MAJORITY_HOLDS`] times while the sides are apart.
fn cut_off_holder(
    cluster: &mut Cluster,
    checker: &Checker,
    minority: &[usize],
    majority: &[usize],
    held: u64,
    cut_at: Instant,
) -> Result<String> {
    cluster.cut(minority, majority)?;
    let next = next_hold(cluster, checker, held, "the majority takes the lock")?;
    let majority_names: BTreeSet<String> =
        majority.iter().map(|&index| cluster.nodes[index].name.clone()).collect();
    ensure!(
        majority_names.contains(&next.node),
        "{} took the lock from the minority side of the partition",
        next.node
    );
    let holder = cluster.nodes[minority[0]].name.clone();
    let last_write_ms = writes(checker)
        .iter()
        .filter(|write| write.token == held)
        .map(|write| write.at.saturating_duration_since(cut_at).as_millis())
        .max()
        .unwrap_or(0);
    cluster.wait_for(PHASE_TIMEOUT, "the majority's holds while apart", |_| {
        let holds = hold_tokens(&writes(checker)).iter().filter(|&&token| token > held).count();
        Ok(if holds >= MAJORITY_HOLDS {
            Poll::Done(())
        } else {
            Poll::Pending(format!("{holds} of {MAJORITY_HOLDS} holds"))
        })
    })?;
    let minority_names: BTreeSet<String> =
        minority.iter().map(|&index| cluster.nodes[index].name.clone()).collect();
    if let Some(write) = writes(checker)
        .iter()
        .find(|write| write.token > held && minority_names.contains(&write.node))
    {
        bail!("{} wrote with token {} from the minority side", write.node, write.token);
    }
    Ok(format!(
        "{holder}'s last write {last_write_ms} ms after the cuts began, {} took token {} {} ms \
         after them",
        next.node,
        next.token,
        (next.at - cut_at).as_millis()
    ))
}

/// Asks node `index` to hold its next acquisition for `hold_ms` and waits until the checker
/// sees it writing in that hold; the token it holds.
fn hold_long(cluster: &mut Cluster, checker: &Checker, index: usize, hold_ms: u64) -> Result<u64> {
    cluster.ask(index, &format!("lock hold-next {hold_ms}"))?;
    let name = cluster.nodes[index].name.clone();
    cluster.wait_for(PHASE_TIMEOUT, &format!("{name} holds the lock"), |_| {
        Ok(match writes(checker).last() {
            Some(last) if last.node == name && last.step > WRITES_PER_HOLD => {
                Poll::Done(last.token)
            }
            Some(last) => Poll::Pending(format!("the last write is {}'s", last.node)),
            None => Poll::Pending("no write yet".to_owned()),
        })
    })
}

/// Waits for the first write with a token above `held`.
fn next_hold(
    cluster: &mut Cluster,
    checker: &Checker,
    held: u64,
    what: &str,
) -> Result<FencedWrite> {
    cluster.wait_for(PHASE_TIMEOUT, what, |_| {
        Ok(match writes(checker).iter().find(|write| write.token > held) {
            Some(write) => Poll::Done(write.clone()),
            None => Poll::Pending(format!("token {held} is still the last")),
        })
    })
}

/// Splits the nodes into a minority holding `index` (plus others at random, two of five in
/// all) and a majority, each sorted.
fn split_with(cluster: &mut Cluster, index: usize) -> (Vec<usize>, Vec<usize>) {
    let mut others: Vec<usize> = (0..cluster.size).filter(|&other| other != index).collect();
    cluster.rng.shuffle(&mut others);
    let minority_size = (cluster.size * 2 / 5).max(1);
    let mut minority = vec![index];
    minority.extend_from_slice(&others[..minority_size - 1]);
    let mut majority = others[minority_size - 1..].to_vec();
    // The holder first: the report names it.
    minority[1..].sort_unstable();
    majority.sort_unstable();
    (minority, majority)
}

/// The checker's taken writes of the lock, copied out (the nodes wait while it is read).
fn writes(checker: &Checker) -> Vec<FencedWrite> {
    checker.ledger().writes.get(KEY).cloned().unwrap_or_default()
}

/// The token of each hold, in the order the holds wrote first.
fn hold_tokens(writes: &[FencedWrite]) -> Vec<u64> {
    let mut tokens: Vec<u64> = Vec::new();
    for write in writes {
        if tokens.last() != Some(&write.token) {
            tokens.push(write.token);
        }
    }
    tokens
}

/// The number after `NAME=` in a `lock report`.
fn field(report: &str, name: &str) -> Result<u64> {
    report
        .split_whitespace()
        .find_map(|field| field.strip_prefix(name)?.strip_prefix('='))
        .and_then(|value| value.parse().ok())
        .with_context(|| format!("no `{name}=N` in the lock report `{report}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_are_runs_of_one_token() {
        let at = Instant::now();
        let write = |token, step| FencedWrite { token, node: "a".into(), step, at };
        let writes = [write(1, 1), write(1, 2), write(3, 1), write(4, 1), write(4, 2)];
        assert_eq!(hold_tokens(&writes), [1, 3, 4]);
    }

    #[test]
    fn report_fields() {
        let report = "acquired=4 writes=20 refused=0 lost=1 timeouts=2 errors=0 holding=0";
        assert_eq!(field(report, "lost").unwrap(), 1);
        assert_eq!(field(report, "acquired").unwrap(), 4);
        assert!(field(report, "missing").is_err());
    }
}
