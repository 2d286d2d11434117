//! The handover scenario: hub `cluster-test-handover` (`shoal-hub` with hot migration, the
//! hub scenario's short knobs, counters whose count moves with them; see `shoal-node`'s
//! `handover.rs`), opened on all nodes but one, through a join and a graceful leave while
//! counters are incremented by child id from several nodes.
//!
//! 1. **start**: the hub is opened on every node but the *joiner*; [`Profile::handover_children`]
//!    counters (`c/0` ..) are started in batches from those nodes; each must run once on its
//!    owner ([`super::hub`]'s judgement from every node's report of its live processes).
//! 2. **writers**: every node but the joiner and the *leaver* starts [`LANES`] writers, each
//!    incrementing the counters in turn by child id, one call at a time, retrying a failed
//!    one with the same (writer, sequence), which a counter applies once, until it is answered
//!    (acknowledged) or given up (timed out).
//! 3. **join**: the joiner opens the hub; the counters it now owns must move to it, and only
//!    those, every one of them hot (a `HandedOver` event on its mover, none `HandOverFailed`),
//!    and each must run once on its owner over all the nodes.
//! 4. **leave**: the leaver closes its hub on purpose (`Hub::stop`), which hands every
//!    counter it runs to its new owner, hot, before it stops; each of them, and only those,
//!    must move, and each counter run once on its owner over the nodes left.
//! 5. **counts**: the writers stop; every counter is read by child id, and each count must be
//!    at least the increments acknowledged for it and at most those plus the ones that timed
//!    out. Increments must have been acknowledged during the join and during the leave.
//! 6. **clean-up**: the counters are terminated and the hub closed on every node, so the
//!    scenarios after this one find the nodes as they were (the hub runs only here). A failed
//!    run cleans up as well as it can.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::hub::{
    Batch, PLACE_TIMEOUT, Placement, in_batches_on, per_node, reports, wait_hub_nodes, wait_placed,
};
use super::{Cluster, Poll, Profile};
use crate::progress::Progress;

/// The word the node's commands for hub `cluster-test-handover` start with.
const HANDOVER_HUB: &str = "handover-hub";

/// Writers per writing node.
const LANES: usize = 4;

/// How long the writers go on after the leave before they stop.
const WRITE_AFTER: Duration = Duration::from_millis(300);

/// How long the hand-over events may take to be counted once the children are placed.
const EVENTS_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) fn handover(cluster: &mut Cluster, profile: &Profile) -> Result<String> {
    cluster.wait_for_full_mesh().context("before the handover hub")?;
    let children = profile.handover_children;
    let joiner = cluster.rng.below(cluster.size);
    let leaver = (joiner + 1 + cluster.rng.below(cluster.size - 1)) % cluster.size;
    let roles = Roles::new(cluster.size, joiner, leaver);
    let result = run(cluster, children, &roles);
    let cleaned = clean_up(cluster, children);
    let report = match (result, cleaned) {
        (Ok(report), Ok(cleaned)) => [report, vec![cleaned]].concat(),
        (Ok(_), Err(error)) => return Err(error.context("cleaning up")),
        (Err(error), Ok(_)) => return Err(error),
        (Err(error), Err(cleaning)) => bail!("{error:#} (then cleaning up: {cleaning:#})"),
    };
    Ok(report.join("; "))
}

/// Which nodes do what.
struct Roles {
    /// Opens the hub during the writes.
    joiner: usize,
    /// Closes its hub during the writes.
    leaver: usize,
    /// The hub's nodes before the join: all but the joiner.
    before: Vec<usize>,
    /// The writers' nodes: all but the joiner and the leaver.
    writers: Vec<usize>,
    /// Every node: the hub's nodes after the join.
    all: Vec<usize>,
    /// The hub's nodes after the leave: all but the leaver.
    after: Vec<usize>,
}

impl Roles {
    fn new(size: usize, joiner: usize, leaver: usize) -> Self {
        let all: Vec<usize> = (0..size).collect();
        let but = |out: &[usize]| all.iter().copied().filter(|i| !out.contains(i)).collect();
        Roles {
            joiner,
            leaver,
            before: but(&[joiner]),
            writers: but(&[joiner, leaver]),
            after: but(&[leaver]),
            all: all.clone(),
        }
    }
}

fn run(cluster: &mut Cluster, children: usize, roles: &Roles) -> Result<Vec<String>> {
    let mut report = Report::default();
    let joiner = cluster.nodes[roles.joiner].name.clone();
    let leaver = cluster.nodes[roles.leaver].name.clone();

    // 1. The hub on all but the joiner, and the counters.
    let started = Instant::now();
    cluster.ask_all(&roles.before, &format!("{HANDOVER_HUB} open"))?;
    wait_hub_nodes(cluster, HANDOVER_HUB, &roles.before)?;
    in_batches_on(cluster, HANDOVER_HUB, &roles.before, Batch::Start, children)?;
    let placement = wait_placed(
        cluster,
        HANDOVER_HUB,
        &roles.before,
        children,
        PLACE_TIMEOUT,
        "every counter placed",
    )?;
    let phase = format!(
        "{children} counters running once on their owners ({}) within {} ms",
        per_node(cluster, &placement),
        started.elapsed().as_millis()
    );
    report.push(&cluster.progress, phase);

    // 2. The writers, until they are under way.
    let writing = Instant::now();
    let command = format!("{HANDOVER_HUB} write {LANES} {children}");
    cluster.ask_all(&roles.writers, &command)?;
    cluster.wait_for(PLACE_TIMEOUT, "every writer acknowledged", |cluster| {
        let writes = writes(cluster, &roles.writers)?;
        let idle = writes.iter().filter(|writes| writes.acked == 0).count();
        Ok(if idle == 0 { Poll::Done(()) } else { Poll::Pending(format!("{idle} idle")) })
    })?;

    // 3. The joiner opens the hub: the counters it owns now move to it, hot.
    cluster.progress.line(&format!("    {joiner} opens the hub"));
    let acked_before = total(&writes(cluster, &roles.writers)?).acked;
    let moves_before = moves(cluster, &roles.before)?;
    let joined_at = Instant::now();
    cluster.ask(roles.joiner, &format!("{HANDOVER_HUB} open"))?;
    let after_join = wait_placed(
        cluster,
        HANDOVER_HUB,
        &roles.all,
        children,
        PLACE_TIMEOUT,
        "counters moved to the joiner",
    )?;
    let join_ms = joined_at.elapsed().as_millis();
    let moved = moved_between(&placement, &after_join);
    let to_joiner = after_join.values().filter(|&&node| node == roles.joiner).count();
    ensure!(
        moved == to_joiner && to_joiner > 0,
        "{moved} counters moved, {to_joiner} of them to {joiner}: others moved, or none did"
    );
    let handed = wait_handed(cluster, &roles.before, &moves_before, to_joiner)?;
    let acked_join = total(&writes(cluster, &roles.writers)?).acked;
    ensure!(acked_join > acked_before, "no increment acknowledged during the join");
    let phase = format!(
        "{joiner} joined: {to_joiner} counters moved to it, all hot ({handed} handed over, \
         none failed), no other moved, all {children} once on their owners within {join_ms} ms \
         ({} increments acknowledged meanwhile)",
        acked_join - acked_before
    );
    report.push(&cluster.progress, phase);

    // 4. The leaver closes its hub: it hands its counters over, hot, before it stops.
    cluster.progress.line(&format!("    {leaver} closes its hub"));
    let on_leaver = after_join.values().filter(|&&node| node == roles.leaver).count();
    let left_at = Instant::now();
    let closed = cluster.ask(roles.leaver, &format!("{HANDOVER_HUB} close"))?;
    let close = fields(&closed);
    let (handed, failed) = (number(&close, "handed")?, number(&close, "failed")?);
    let after_leave = wait_placed(
        cluster,
        HANDOVER_HUB,
        &roles.after,
        children,
        PLACE_TIMEOUT,
        "the leaver's counters on the others",
    )?;
    let leave_ms = left_at.elapsed().as_millis();
    let moved = moved_between(&after_join, &after_leave);
    ensure!(
        moved == on_leaver && handed == on_leaver as u64 && failed == 0,
        "{leaver} ran {on_leaver} counters and handed {handed} over hot ({failed} failed) as \
         it closed; {moved} moved"
    );
    thread::sleep(WRITE_AFTER);
    let acked_leave = total(&writes(cluster, &roles.writers)?).acked;
    ensure!(acked_leave > acked_join, "no increment acknowledged during the leave");
    let phase = format!(
        "{leaver} left: its {on_leaver} counters handed over hot as it closed (in {} ms), no \
         other moved, all {children} once on their owners within {leave_ms} ms ({} \
         increments acknowledged meanwhile)",
        number(&close, "ms")?,
        acked_leave - acked_join
    );
    report.push(&cluster.progress, phase);

    // 5. The writers stop; every count within its bounds.
    let stopped = cluster.ask_all(&roles.writers, &format!("{HANDOVER_HUB} write-stop"))?;
    let writing_ms = writing.elapsed().as_millis();
    let tallies: Vec<Writes> =
        stopped.iter().map(|answer| parse_writes(answer)).collect::<Result<_>>()?;
    let all = total(&tallies);
    let reader = roles.writers[0];
    let counts = cluster.ask(reader, &format!("{HANDOVER_HUB} counts 0 {children}"))?;
    let path = |number: u32| {
        let placements = [&placement, &after_join, &after_leave];
        let nodes = placements.map(|placed| {
            placed.get(&number).map_or("-", |&index| cluster.nodes[index].name.as_str())
        });
        nodes.join(">")
    };
    let exact = check_counts(&parse_counts(&counts, children)?, &all.counters, path)?;
    wait_placed(cluster, HANDOVER_HUB, &roles.after, children, PLACE_TIMEOUT, "still placed")?;
    let forwards = wait_windows(cluster, &roles.all)?;
    let phase = format!(
        "{} writers on {} for {writing_ms} ms: {} increments acknowledged, {} timed out ({} \
         retries, slowest acknowledged after {} ms); every counter read by child id between \
         its acknowledged and those plus its timed out ({exact} of {children} exactly at \
         acknowledged), each running once; {} letters for the old copies forwarded to the new \
         ones in their windows ({} not)",
        LANES * roles.writers.len(),
        cluster.names(&roles.writers),
        all.acked,
        all.failed,
        all.retries,
        all.slowest_ms,
        forwards.forwarded,
        forwards.unforwarded
    );
    report.push(&cluster.progress, phase);
    Ok(report.0)
}

/// The scenario's figures, phase by phase; each is printed as it is known, so that a run
/// that fails later still shows them.
#[derive(Default)]
struct Report(Vec<String>);

impl Report {
    fn push(&mut self, progress: &Progress, phase: String) {
        progress.line(&format!("    {phase}"));
        self.0.push(phase);
    }
}

/// Waits until the hand-overs counted on `movers` since `before` reach `expected`; fails at
/// once on a failed one, or on more than expected.
fn wait_handed(
    cluster: &mut Cluster,
    movers: &[usize],
    before: &[Moves],
    expected: usize,
) -> Result<u64> {
    let before = total_moves(before);
    cluster.wait_for(EVENTS_TIMEOUT, "every move seen as a hand-over", |cluster| {
        let now = total_moves(&moves(cluster, movers)?);
        let (handed, failed) = (now.handed - before.handed, now.failed - before.failed);
        ensure!(
            failed == 0 && now.lagged == 0,
            "{failed} hand-overs failed ({} lagged)",
            now.lagged
        );
        ensure!(handed <= expected as u64, "{handed} hand-overs for {expected} moves");
        Ok(if handed == expected as u64 {
            Poll::Done(handed)
        } else {
            Poll::Pending(format!("{handed} of {expected} handed over"))
        })
    })
}

/// Waits until every hot move's retention window has ended (one `ForwardingEnded` per
/// hand-over, on the movers among `nodes`); the moves then.
fn wait_windows(cluster: &mut Cluster, nodes: &[usize]) -> Result<Moves> {
    cluster.wait_for(EVENTS_TIMEOUT, "every forwarding window ended", |cluster| {
        let moves = total_moves(&moves(cluster, nodes)?);
        Ok(if moves.windows >= moves.handed {
            Poll::Done(moves)
        } else {
            Poll::Pending(format!("{} of {} ended", moves.windows, moves.handed))
        })
    })
}

/// How many children run elsewhere in `after` than in `before`.
fn moved_between(before: &Placement, after: &Placement) -> usize {
    after.iter().filter(|(child, node)| before.get(child) != Some(node)).count()
}

/// Checks every count against the writers' tallies (acknowledged, timed out); how many are
/// exactly at acknowledged. A counter out of bounds is shown with `path`, where it ran.
fn check_counts(
    counts: &[u64],
    tallies: &BTreeMap<u32, (u64, u64)>,
    path: impl Fn(u32) -> String,
) -> Result<usize> {
    let mut exact = 0;
    let mut wrong = Vec::new();
    for (number, &count) in counts.iter().enumerate() {
        let number = number as u32;
        let (acked, failed) = tallies.get(&number).copied().unwrap_or_default();
        if count < acked || count > acked + failed {
            wrong.push(format!(
                "c/{number}: {count} (acknowledged {acked}, timed out {failed}; on {})",
                path(number)
            ));
        }
        exact += usize::from(count == acked);
    }
    if !wrong.is_empty() {
        let shown: Vec<&str> = wrong.iter().take(8).map(String::as_str).collect();
        bail!(
            "{} counters out of bounds (where each ran: at the start > after the join > after \
             the leave): {}",
            wrong.len(),
            shown.join(", ")
        );
    }
    Ok(exact)
}

/// Terminates the counters and closes the hub on every node that has it open.
fn clean_up(cluster: &mut Cluster, children: usize) -> Result<String> {
    let started = Instant::now();
    let everyone: Vec<(usize, String)> =
        (0..cluster.size).map(|index| (index, format!("{HANDOVER_HUB} write-stop"))).collect();
    // Writers left running by a failure; `no writers run` elsewhere.
    cluster.ask_each_outcomes(&everyone)?;
    let asked: Vec<(usize, String)> =
        (0..cluster.size).map(|index| (index, format!("{HANDOVER_HUB} nodes"))).collect();
    let open: Vec<usize> = cluster
        .ask_each_outcomes(&asked)?
        .iter()
        .enumerate()
        .filter(|(_, answer)| answer.is_ok())
        .map(|(index, _)| index)
        .collect();
    if open.is_empty() {
        return Ok("nothing to clean up".to_owned());
    }
    in_batches_on(cluster, HANDOVER_HUB, &open, Batch::Stop, children)?;
    cluster.wait_for(PLACE_TIMEOUT, "every counter terminated", |cluster| {
        let reports = reports(cluster, HANDOVER_HUB, &open)?;
        let left: Vec<String> = open
            .iter()
            .zip(&reports)
            .filter(|(_, report)| !report.ids.is_empty() || report.own > 0)
            .map(|(&index, report)| {
                let name = &cluster.nodes[index].name;
                format!("{name} runs {}, lists {}", report.ids.len(), report.own)
            })
            .collect();
        Ok(if left.is_empty() { Poll::Done(()) } else { Poll::Pending(left.join("; ")) })
    })?;
    for answer in cluster.ask_all(&open, &format!("{HANDOVER_HUB} close"))? {
        let close = fields(&answer);
        ensure!(number(&close, "handed")? == 0, "a hub with no counter handed `{answer}`");
    }
    Ok(format!(
        "then all {children} terminated and the hub closed on {} within {} ms",
        cluster.names(&open),
        started.elapsed().as_millis()
    ))
}

/// The hand-overs a node made as a mover since it started (`handover-hub moves`).
#[derive(Clone, Copy, Default)]
struct Moves {
    handed: u64,
    failed: u64,
    windows: u64,
    forwarded: u64,
    unforwarded: u64,
    lagged: u64,
}

fn moves(cluster: &mut Cluster, nodes: &[usize]) -> Result<Vec<Moves>> {
    let answers = cluster.ask_all(nodes, &format!("{HANDOVER_HUB} moves"))?;
    answers
        .iter()
        .map(|answer| {
            let fields = fields(answer);
            Ok(Moves {
                handed: number(&fields, "handed")?,
                failed: number(&fields, "failed")?,
                windows: number(&fields, "windows")?,
                forwarded: number(&fields, "forwarded")?,
                unforwarded: number(&fields, "unforwarded")?,
                lagged: number(&fields, "lagged")?,
            })
        })
        .collect()
}

fn total_moves(moves: &[Moves]) -> Moves {
    moves.iter().fold(Moves::default(), |sum, one| Moves {
        handed: sum.handed + one.handed,
        failed: sum.failed + one.failed,
        windows: sum.windows + one.windows,
        forwarded: sum.forwarded + one.forwarded,
        unforwarded: sum.unforwarded + one.unforwarded,
        lagged: sum.lagged + one.lagged,
    })
}

/// What a node's writers did (`handover-hub writes`, or `write-stop` with the counters).
#[derive(Default)]
struct Writes {
    acked: u64,
    failed: u64,
    retries: u64,
    slowest_ms: u64,
    /// Per counter: increments acknowledged, and those that timed out.
    counters: BTreeMap<u32, (u64, u64)>,
}

fn writes(cluster: &mut Cluster, nodes: &[usize]) -> Result<Vec<Writes>> {
    let answers = cluster.ask_all(nodes, &format!("{HANDOVER_HUB} writes"))?;
    answers.iter().map(|answer| parse_writes(answer)).collect()
}

/// The writers of several nodes as one.
fn total(writes: &[Writes]) -> Writes {
    let mut sum = Writes::default();
    for one in writes {
        sum.acked += one.acked;
        sum.failed += one.failed;
        sum.retries += one.retries;
        sum.slowest_ms = sum.slowest_ms.max(one.slowest_ms);
        for (&counter, &(acked, failed)) in &one.counters {
            let entry = sum.counters.entry(counter).or_default();
            entry.0 += acked;
            entry.1 += failed;
        }
    }
    sum
}

/// `acked=A failed=F retries=R slowest_ms=S [counters=N:A:F,...]` → the writes.
fn parse_writes(answer: &str) -> Result<Writes> {
    let fields = fields(answer);
    let mut counters = BTreeMap::new();
    for counter in fields.get("counters").copied().unwrap_or("").split(',') {
        if counter.is_empty() {
            continue;
        }
        let [number, acked, failed] = counter.split(':').collect::<Vec<_>>()[..] else {
            bail!("`{counter}` is not N:ACKED:FAILED in `{answer}`");
        };
        let parsed = (acked.parse()?, failed.parse()?);
        counters.insert(number.parse().with_context(|| format!("in `{answer}`"))?, parsed);
    }
    Ok(Writes {
        acked: number(&fields, "acked")?,
        failed: number(&fields, "failed")?,
        retries: number(&fields, "retries")?,
        slowest_ms: number(&fields, "slowest_ms")?,
        counters,
    })
}

/// `0:5,1:7,...` → each counter's count, by number; every one of `children` must be there,
/// read.
fn parse_counts(answer: &str, children: usize) -> Result<Vec<u64>> {
    let counts: Vec<u64> = answer
        .split(',')
        .filter(|count| !count.is_empty())
        .enumerate()
        .map(|(index, count)| {
            let (number, count) = count.split_once(':').context("no `:`")?;
            ensure!(number.parse::<usize>()? == index, "counter {number} out of order");
            count.parse().with_context(|| format!("counter {number} not read: `{count}`"))
        })
        .collect::<Result<_>>()
        .with_context(|| {
            let shown: String = answer.chars().take(120).collect();
            format!("cannot read the counts `{shown}...`")
        })?;
    ensure!(counts.len() == children, "{} counts for {children} counters", counts.len());
    Ok(counts)
}

/// `key=value key=value` → the values by key.
fn fields(answer: &str) -> BTreeMap<&str, &str> {
    answer.split_whitespace().filter_map(|field| field.split_once('=')).collect()
}

/// The number in field `key` of `fields`.
fn number(fields: &BTreeMap<&str, &str>, key: &str) -> Result<u64> {
    let value = fields.get(key).with_context(|| format!("no `{key}=`"))?;
    value.parse().with_context(|| format!("`{key}={value}` is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_parse() {
        let writes =
            parse_writes("acked=9 failed=1 retries=3 slowest_ms=40 counters=0:4:0,7:5:1").unwrap();
        assert_eq!((writes.acked, writes.failed, writes.retries, writes.slowest_ms), (9, 1, 3, 40));
        assert_eq!(writes.counters, BTreeMap::from([(0, (4, 0)), (7, (5, 1))]));
        assert!(
            parse_writes("acked=1 failed=0 retries=0 slowest_ms=1").unwrap().counters.is_empty()
        );
        assert!(parse_writes("acked=1").is_err(), "fields missing");
        assert!(parse_writes("acked=1 failed=0 retries=0 slowest_ms=1 counters=0:1").is_err());
    }

    #[test]
    fn counts_parse_and_are_checked_against_their_bounds() {
        assert_eq!(parse_counts("0:5,1:7", 2).unwrap(), [5, 7]);
        assert!(parse_counts("0:5,1:!", 2).is_err(), "a read that failed");
        assert!(parse_counts("0:5", 2).is_err(), "a counter missing");
        assert!(parse_counts("1:5,0:7", 2).is_err(), "out of order");
        let tallies = BTreeMap::from([(0, (5, 0)), (1, (6, 2))]);
        let path = |_| "a>b>b".to_owned();
        assert_eq!(check_counts(&[5, 7], &tallies, path).unwrap(), 1);
        assert!(check_counts(&[4, 7], &tallies, path).is_err(), "below acknowledged");
        assert!(check_counts(&[5, 9], &tallies, path).is_err(), "above acknowledged and timed out");
    }

    #[test]
    fn the_roles_leave_out_the_joiner_and_the_leaver() {
        let roles = Roles::new(5, 1, 3);
        assert_eq!(roles.before, [0, 2, 3, 4]);
        assert_eq!(roles.writers, [0, 2, 4]);
        assert_eq!(roles.after, [0, 1, 2, 4]);
        assert_eq!(roles.all, [0, 1, 2, 3, 4]);
    }
}
