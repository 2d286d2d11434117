//! The counter scenario: one Paxos register, incremented from every node while nodes are
//! SIGKILLed, restarted and partitioned.
//!
//! There is one writer per node (`w0`, `w1`, ...). Each round, every writer asks a node (its
//! own while that one is up) to apply its next increment, `counter incr KEY WRITER SEQ`; the
//! node answers `ok COUNT` once the increment is in the register, or an error. A writer moves
//! to its next sequence number only on `ok`, and retries the same one otherwise, so an
//! increment whose fate was unknown (a timeout, a node killed under it) is sent again; the
//! register remembers each writer's last applied sequence number, so a retry of an increment
//! that did land is recognised and not applied a second time.
//!
//! The phases: all up; one node SIGKILLed (its writer moves to another node); the node
//! restarted (its acceptor comes back from its file store) and rejoined; the cluster cut in
//! a minority and a majority (the minority's nodes must not manage a single increment); healed.
//! Then every writer's last increment is retried until it lands, and every node must read the
//! counter as exactly the number of acknowledged increments: none lost, none applied twice.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::{Cluster, Profile};

/// The register every writer increments.
const KEY: &str = "cluster-test-counter";

/// How long the last increments may take to land once the cluster is whole again.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// One writer: which node it prefers and where its sequence is.
struct Writer {
    name: String,
    home: usize,
    /// The sequence number of its next (or unacknowledged) increment; 1 first.
    next_seq: u64,
}

/// What happened in one phase, for the report.
#[derive(Default)]
struct Tally {
    acknowledged: u64,
    failed: u64,
}

pub(super) fn counter(cluster: &mut Cluster, profile: &Profile) -> Result<String> {
    cluster.wait_for_full_mesh().context("before the counter")?;
    let started = Instant::now();
    let all: Vec<usize> = (0..cluster.size).collect();
    let mut writers: Vec<Writer> =
        all.iter().map(|&home| Writer { name: format!("w{home}"), home, next_seq: 1 }).collect();
    let rounds = profile.counter_rounds;
    let mut up = all.clone();
    let mut report = Vec::new();

    let tally = run_rounds(cluster, &mut writers, &up, &[], rounds)?;
    report.push(format!("all up {}/{}", tally.acknowledged, tally.failed));

    let victim = cluster.rng.below(cluster.size);
    let victim_name = cluster.nodes[victim].name.clone();
    cluster.progress.line(&format!("    SIGKILL {victim_name} while incrementing"));
    cluster.nodes[victim].kill();
    up.retain(|&index| index != victim);
    let tally = run_rounds(cluster, &mut writers, &up, &[], rounds)?;
    report.push(format!("{victim_name} killed {}/{}", tally.acknowledged, tally.failed));

    let incarnation = cluster.start_node(victim, &[], true)?.incarnation;
    cluster.progress.line(&format!("    restarted {victim_name} as incarnation {incarnation}"));
    let via = up[cluster.rng.below(up.len())];
    let via_addr = cluster.nodes[via].addr;
    cluster.ask(victim, &format!("join {via_addr}"))?;
    cluster.wait_for_full_mesh().context("after the restart")?;
    up = all.clone();
    let tally = run_rounds(cluster, &mut writers, &up, &[], rounds)?;
    report.push(format!("{victim_name} restarted {}/{}", tally.acknowledged, tally.failed));

    let (minority, majority) = cluster.split();
    let sides = format!("{} | {}", cluster.names(&minority), cluster.names(&majority));
    cluster.progress.line(&format!("    partition {sides} while incrementing"));
    cluster.cut(&minority, &majority)?;
    let partitioned = run_rounds(cluster, &mut writers, &up, &minority, rounds);
    cluster.ask_all(&all, "heal-all").context("healing")?;
    let tally = partitioned?;
    report.push(format!("partitioned {sides} {}/{}", tally.acknowledged, tally.failed));
    cluster.wait_for_full_mesh().context("after healing")?;

    let tally = run_rounds(cluster, &mut writers, &up, &[], rounds)?;
    report.push(format!("healed {}/{}", tally.acknowledged, tally.failed));

    drain(cluster, &mut writers)?;
    let acknowledged: u64 = writers.iter().map(|writer| writer.next_seq - 1).sum();
    let answers = cluster.ask_all(&all, &format!("counter get {KEY}"))?;
    for (&index, answer) in all.iter().zip(&answers) {
        let count: u64 = answer.parse().with_context(|| {
            format!("{} read the counter as `{answer}`", cluster.nodes[index].name)
        })?;
        ensure!(
            count == acknowledged,
            "{} reads the counter as {count}, but {acknowledged} increments were acknowledged \
             ({})",
            cluster.nodes[index].name,
            if count > acknowledged { "one was applied twice" } else { "one was lost" }
        );
    }
    Ok(format!(
        "{acknowledged} increments acknowledged, the counter reads {acknowledged} on all {} \
         nodes, in {} ms (per phase, acknowledged/failed and retried: {})",
        cluster.size,
        started.elapsed().as_millis(),
        report.join(", ")
    ))
}

/// Runs `rounds` rounds: every writer sends its next increment to a node that is up (its own
/// when it is), all at once, and the answers are collected. Nodes in `cut_off` are in a
/// minority: none of their increments may be acknowledged.
fn run_rounds(
    cluster: &mut Cluster,
    writers: &mut [Writer],
    up: &[usize],
    cut_off: &[usize],
    rounds: usize,
) -> Result<Tally> {
    let mut tally = Tally::default();
    for _ in 0..rounds {
        let targets: Vec<usize> = writers
            .iter()
            .map(|writer| {
                if up.contains(&writer.home) {
                    writer.home
                } else {
                    up[writer.next_seq as usize % up.len()]
                }
            })
            .collect();
        let commands: Vec<(usize, String)> = writers
            .iter()
            .zip(&targets)
            .map(|(writer, &node)| {
                (node, format!("counter incr {KEY} {} {}", writer.name, writer.next_seq))
            })
            .collect();
        let outcomes = cluster.ask_each_outcomes(&commands)?;
        for ((writer, &node), outcome) in writers.iter_mut().zip(&targets).zip(outcomes) {
            match outcome {
                Ok(_) if cut_off.contains(&node) => bail!(
                    "{} acknowledged increment {} of {} from the minority side of a partition",
                    cluster.nodes[node].name,
                    writer.next_seq,
                    writer.name
                ),
                Ok(_) => {
                    writer.next_seq += 1;
                    tally.acknowledged += 1;
                }
                Err(_) => tally.failed += 1,
            }
        }
    }
    Ok(tally)
}

/// Sends every writer's current increment again, until each has been acknowledged once more
/// (a writer whose last attempt failed gets it in; one whose last attempt succeeded adds one
/// more, which is as good a check).
fn drain(cluster: &mut Cluster, writers: &mut [Writer]) -> Result<()> {
    let mut pending: Vec<usize> = (0..writers.len()).collect();
    cluster.wait_for(DRAIN_TIMEOUT, "last increments acknowledged", |cluster| {
        let commands: Vec<(usize, String)> = pending
            .iter()
            .map(|&w| {
                let writer = &writers[w];
                (writer.home, format!("counter incr {KEY} {} {}", writer.name, writer.next_seq))
            })
            .collect();
        let outcomes = cluster.ask_each_outcomes(&commands)?;
        let mut still = Vec::new();
        let mut errors = Vec::new();
        for (&w, outcome) in pending.iter().zip(outcomes) {
            match outcome {
                Ok(_) => writers[w].next_seq += 1,
                Err(error) => {
                    errors.push(format!("{}: {error}", writers[w].name));
                    still.push(w);
                }
            }
        }
        pending = still;
        Ok(if pending.is_empty() {
            super::Poll::Done(())
        } else {
            super::Poll::Pending(errors.join("; "))
        })
    })
}
