//! The groups scenario: process groups (`shoal-registry`'s `Groups`, the default scope on
//! every node) through joins, leaves, exits, a SIGKILL and a partition.
//!
//! Every `groups join` on a node spawns fresh member processes there and answers their pids,
//! so the driver knows which node is the authority for which member, and so what every node
//! should see: the members of the nodes it can reach, no more and no fewer. Each node's view
//! (`groups members`) is compared exactly with that, pid for pid.
//!
//! 1. **join**: every node joins [`PLAN`] (several processes to each of three shared groups);
//!    every node must see every member.
//! 2. **leave and exit**: a member on one node leaves its group (and lives on), a member on
//!    another is killed; both must be gone from every view.
//! 3. **kill**: a node is SIGKILLed; its members must be gone from every survivor's view, the
//!    survivors' own members kept, within [`Profile::nodedown_bound`] of the kill (the failure
//!    timeout, one heartbeat interval and the scheduling allowance: a node's members go when
//!    its nodedown is seen). It is restarted (a new incarnation, no members), rejoins, and
//!    joins [`PLAN`] again: its new members must appear on every node, the old ones never
//!    again.
//! 4. **partition**: the cluster is cut in a minority and a majority; each side must see only
//!    the members of its own nodes within the same bound of the cuts. While apart, a node on
//!    each side joins new members and one node of the majority leaves one; each side must see
//!    its own changes and none of the other's. Then the partition heals, and every node must
//!    report the same members: those of every node, the changes made apart included.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::{Cluster, Poll, Profile};

/// Members each node joins to each shared group, at the start and after its restart.
const PLAN: [(&str, usize); 3] = [("g0", 4), ("g1", 2), ("g2", 1)];

/// How long the views may take to agree after joins, leaves or a heal.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(15);

/// Slack past the nodedown bound before a wait for a lost node's members gives up (the bound
/// itself is checked on the latencies measured, for a clearer failure).
const LOSS_WAIT_SLACK: Duration = Duration::from_secs(3);

/// What a node reports or should report: group → pids, sorted, each once per join.
type View = BTreeMap<String, Vec<String>>;

/// The members each node is the authority for, as the driver knows them from the nodes'
/// answers: per node (by index), group → pids.
struct Ledger {
    joined: Vec<BTreeMap<String, BTreeSet<String>>>,
    /// Every pid ever joined, with the node (and its run: `b`, `b'`, ...) that joined it, to
    /// name the owners of missing or extra members in a failure.
    owners: BTreeMap<String, String>,
    /// Restarts of each node so far, for the owners' names.
    runs: Vec<usize>,
}

impl Ledger {
    fn new(nodes: usize) -> Self {
        Ledger {
            joined: vec![BTreeMap::new(); nodes],
            owners: BTreeMap::new(),
            runs: vec![0; nodes],
        }
    }

    /// What a node that reaches exactly `side` should see.
    fn view_of(&self, side: &[usize]) -> View {
        let mut view: View = BTreeMap::new();
        for &index in side {
            for (group, pids) in &self.joined[index] {
                view.entry(group.clone()).or_default().extend(pids.iter().cloned());
            }
        }
        view.retain(|_, pids| !pids.is_empty());
        for pids in view.values_mut() {
            pids.sort_unstable();
        }
        view
    }

    fn members(&self) -> usize {
        self.joined.iter().flat_map(BTreeMap::values).map(BTreeSet::len).sum()
    }

    fn record_joins(&mut self, cluster: &Cluster, index: usize, group: &str, pids: &[String]) {
        let owner = format!("{}{}", cluster.nodes[index].name, "'".repeat(self.runs[index]));
        for pid in pids {
            self.owners.insert(pid.clone(), owner.clone());
        }
        self.joined[index].entry(group.to_owned()).or_default().extend(pids.iter().cloned());
    }

    fn record_leaves(&mut self, index: usize, group: &str, pids: &[String]) {
        if let Some(members) = self.joined[index].get_mut(group) {
            for pid in pids {
                members.remove(pid);
            }
        }
    }

    /// Node `index` is lost with its members; its next run starts with none.
    fn restarted(&mut self, index: usize) {
        self.joined[index].clear();
        self.runs[index] += 1;
    }

    /// How `seen` differs from `expected`: `lacks 3 (c:3) has 2 extra (a:2) in g0`.
    fn describe(&self, seen: &View, expected: &View) -> String {
        let mut groups: BTreeSet<&String> = seen.keys().collect();
        groups.extend(expected.keys());
        let mut differences = Vec::new();
        for group in groups {
            let seen_pids = seen.get(group).map_or(&[][..], Vec::as_slice);
            let wanted_pids = expected.get(group).map_or(&[][..], Vec::as_slice);
            let seen: BTreeSet<&String> = seen_pids.iter().collect();
            let want: BTreeSet<&String> = wanted_pids.iter().collect();
            let lacks: Vec<&String> = want.difference(&seen).copied().collect();
            let extra: Vec<&String> = seen.difference(&want).copied().collect();
            let mut parts = Vec::new();
            if !lacks.is_empty() {
                parts.push(format!("lacks {} ({})", lacks.len(), self.owners_of(&lacks)));
            }
            if !extra.is_empty() {
                parts.push(format!("has {} extra ({})", extra.len(), self.owners_of(&extra)));
            }
            if parts.is_empty() && seen_pids.len() != wanted_pids.len() {
                parts.push("a pid more than once".to_owned());
            }
            if !parts.is_empty() {
                differences.push(format!("{} in {group}", parts.join(" and ")));
            }
        }
        if differences.is_empty() {
            // Only a listed group without members can make the views differ here.
            return format!("reports {seen:?}");
        }
        differences.join(", ")
    }

    /// `a:2 c:1`: how many of `pids` each owner joined.
    fn owners_of(&self, pids: &[&String]) -> String {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for pid in pids {
            let owner = self.owners.get(*pid).map_or("unknown", String::as_str);
            *counts.entry(owner).or_default() += 1;
        }
        let counts: Vec<String> = counts.iter().map(|(owner, n)| format!("{owner}:{n}")).collect();
        counts.join(" ")
    }
}

pub(super) fn groups(cluster: &mut Cluster, profile: &Profile) -> Result<String> {
    cluster.wait_for_full_mesh().context("before the groups")?;
    let all: Vec<usize> = (0..cluster.size).collect();
    let mut ledger = Ledger::new(cluster.size);
    let mut report = Vec::new();

    // 1. Every node joins several processes to the shared groups.
    let started = Instant::now();
    let commands: Vec<(usize, String, usize)> = all
        .iter()
        .flat_map(|&index| PLAN.map(|(group, count)| (index, group.to_owned(), count)))
        .collect();
    join(cluster, &mut ledger, &commands)?;
    converge(cluster, &ledger, &[&all], started, "every join seen everywhere")?;
    report.push(format!(
        "{} members of {} groups joined on {} nodes, seen alike everywhere within {} ms",
        ledger.members(),
        PLAN.len(),
        cluster.size,
        started.elapsed().as_millis()
    ));

    // 2. A member leaves, another exits.
    let leaver = cluster.rng.below(cluster.size);
    let exiter = cluster.rng.below(cluster.size);
    let started = Instant::now();
    let answers = cluster.ask_each(&[
        (leaver, "groups leave g0 1".to_owned()),
        (exiter, "groups exit g1 1".to_owned()),
    ])?;
    ledger.record_leaves(leaver, "g0", &pids(&answers[0]));
    ledger.record_leaves(exiter, "g1", &pids(&answers[1]));
    converge(cluster, &ledger, &[&all], started, "a leave and an exit seen everywhere")?;
    report.push(format!(
        "{}'s member left g0 and {}'s member of g1 exited: gone everywhere within {} ms",
        cluster.nodes[leaver].name,
        cluster.nodes[exiter].name,
        started.elapsed().as_millis()
    ));

    // 3. A node SIGKILLed, then restarted with new members.
    report.push(kill_and_restart(cluster, profile, &mut ledger)?);

    // 4. A partition, changes on both sides, the heal.
    let (minority, majority) = cluster.split();
    let sides = format!("{} | {}", cluster.names(&minority), cluster.names(&majority));
    cluster.progress.line(&format!("    partition {sides}"));
    let apart = apart(cluster, profile, &mut ledger, &minority, &majority);
    let healed_at = Instant::now();
    let healed = cluster.ask_all(&all, "heal-all");
    let apart = apart?;
    healed.context("healing")?;
    cluster.wait_for_full_mesh().context("after healing")?;
    converge(cluster, &ledger, &[&all], healed_at, "the same members everywhere after the heal")?;
    report.push(format!(
        "partition {sides}: {apart}; healed: all {} nodes report the same {} members within {} ms",
        cluster.size,
        ledger.members(),
        healed_at.elapsed().as_millis()
    ));
    Ok(report.join("; "))
}

/// Phase 3: a node SIGKILLed (its members gone from every survivor within the nodedown bound),
/// restarted, and joining new members (seen everywhere).
fn kill_and_restart(
    cluster: &mut Cluster,
    profile: &Profile,
    ledger: &mut Ledger,
) -> Result<String> {
    let victim = cluster.rng.below(cluster.size);
    let name = cluster.nodes[victim].name.clone();
    let survivors: Vec<usize> = (0..cluster.size).filter(|&index| index != victim).collect();
    let lost = ledger.joined[victim].values().map(BTreeSet::len).sum::<usize>();
    let bound = profile.nodedown_bound();
    cluster.progress.line(&format!("    SIGKILL {name}, the authority for {lost} members"));
    let killed_at = Instant::now();
    cluster.nodes[victim].kill();
    ledger.restarted(victim);
    let latencies = converge_within(
        cluster,
        ledger,
        &[&survivors],
        killed_at,
        bound + LOSS_WAIT_SLACK,
        "the killed node's members gone from every survivor",
    )?;
    check_bound(cluster, &latencies, bound, "after the kill")?;

    let incarnation = cluster.restart_and_rejoin(victim)?;
    cluster.progress.line(&format!("    restarted {name} as incarnation {incarnation}"));
    let started = Instant::now();
    let commands: Vec<(usize, String, usize)> =
        PLAN.iter().map(|&(group, count)| (victim, group.to_owned(), count)).collect();
    join(cluster, ledger, &commands)?;
    let all: Vec<usize> = (0..cluster.size).collect();
    converge(cluster, ledger, &[&all], started, "the restarted node's new members everywhere")?;
    Ok(format!(
        "{name} SIGKILLed: its {lost} members gone from {} survivors' views after {} ms (bound \
         {} ms), theirs kept; restarted, its {} new members seen everywhere within {} ms, the old \
         ones nowhere",
        survivors.len(),
        span_ms(&latencies),
        bound.as_millis(),
        PLAN.iter().map(|(_, count)| count).sum::<usize>(),
        started.elapsed().as_millis()
    ))
}

/// Phase 4 while the sides are apart: each side sees only its own nodes' members, within the
/// nodedown bound of the cuts, and then only its own changes.
fn apart(
    cluster: &mut Cluster,
    profile: &Profile,
    ledger: &mut Ledger,
    minority: &[usize],
    majority: &[usize],
) -> Result<String> {
    cluster.cut(minority, majority)?;
    let cut_at = Instant::now();
    let bound = profile.nodedown_bound();
    let latencies = converge_within(
        cluster,
        ledger,
        &[minority, majority],
        cut_at,
        bound + LOSS_WAIT_SLACK,
        "each side sees only its own members",
    )?;
    check_bound(cluster, &latencies, bound, "after the cuts")?;

    let started = Instant::now();
    let (minority_joiner, majority_joiner) = (minority[0], majority[0]);
    let majority_leaver = majority[majority.len() - 1];
    let answers = cluster.ask_each(&[
        (minority_joiner, "groups join g0 2".to_owned()),
        (majority_joiner, "groups join g0 2".to_owned()),
        (majority_leaver, "groups leave g2 1".to_owned()),
    ])?;
    ledger.record_joins(cluster, minority_joiner, "g0", &pids(&answers[0]));
    ledger.record_joins(cluster, majority_joiner, "g0", &pids(&answers[1]));
    ledger.record_leaves(majority_leaver, "g2", &pids(&answers[2]));
    converge(cluster, ledger, &[minority, majority], started, "each side sees its own changes")?;
    Ok(format!(
        "each side saw only its own nodes' members after {} ms (bound {} ms); joins on {} and \
         {} and a leave on {} seen on their own side only within {} ms",
        span_ms(&latencies),
        bound.as_millis(),
        cluster.nodes[minority_joiner].name,
        cluster.nodes[majority_joiner].name,
        cluster.nodes[majority_leaver].name,
        started.elapsed().as_millis()
    ))
}

/// Sends each `(node, group, count)` join at once and records the members each answered.
fn join(
    cluster: &mut Cluster,
    ledger: &mut Ledger,
    joins: &[(usize, String, usize)],
) -> Result<()> {
    let commands: Vec<(usize, String)> = joins
        .iter()
        .map(|(index, group, count)| (*index, format!("groups join {group} {count}")))
        .collect();
    let answers = cluster.ask_each(&commands)?;
    for ((index, group, count), answer) in joins.iter().zip(&answers) {
        let pids = pids(answer);
        ensure!(
            pids.len() == *count,
            "{}: `groups join {group} {count}` answered {} pids",
            cluster.nodes[*index].name,
            pids.len()
        );
        ledger.record_joins(cluster, *index, group, &pids);
    }
    Ok(())
}

/// As [`converge_within`], with [`CONVERGE_TIMEOUT`].
fn converge(
    cluster: &mut Cluster,
    ledger: &Ledger,
    sides: &[&[usize]],
    from: Instant,
    what: &str,
) -> Result<Vec<(usize, Duration)>> {
    converge_within(cluster, ledger, sides, from, CONVERGE_TIMEOUT, what)
}

/// Waits until every node of each side reports exactly the members of its side's nodes, all
/// at once; for each node, when (since `from`) its view first matched.
fn converge_within(
    cluster: &mut Cluster,
    ledger: &Ledger,
    sides: &[&[usize]],
    from: Instant,
    timeout: Duration,
    what: &str,
) -> Result<Vec<(usize, Duration)>> {
    let expected: Vec<(usize, View)> = sides
        .iter()
        .flat_map(|side| side.iter().map(|&index| (index, ledger.view_of(side))))
        .collect();
    let indexes: Vec<usize> = expected.iter().map(|(index, _)| *index).collect();
    let mut matched: BTreeMap<usize, Duration> = BTreeMap::new();
    cluster.wait_for(timeout, what, |cluster| {
        let answers = cluster.ask_all(&indexes, "groups members")?;
        let mut differences = Vec::new();
        for ((index, expected), answer) in expected.iter().zip(&answers) {
            let seen = parse_members(answer)?;
            if &seen == expected {
                matched.entry(*index).or_insert_with(|| from.elapsed());
            } else {
                let name = &cluster.nodes[*index].name;
                differences.push(format!("{name} {}", ledger.describe(&seen, expected)));
            }
        }
        Ok(if differences.is_empty() {
            Poll::Done(indexes.iter().map(|index| (*index, matched[index])).collect())
        } else {
            Poll::Pending(differences.join("; "))
        })
    })
}

/// Fails if a node's view matched later than `bound`.
fn check_bound(
    cluster: &Cluster,
    latencies: &[(usize, Duration)],
    bound: Duration,
    when: &str,
) -> Result<()> {
    let late: Vec<String> = latencies
        .iter()
        .filter(|(_, latency)| *latency > bound)
        .map(|(index, latency)| {
            format!("{} after {} ms", cluster.nodes[*index].name, latency.as_millis())
        })
        .collect();
    if !late.is_empty() {
        bail!(
            "views right {when} only past the bound of {} ms: {}",
            bound.as_millis(),
            late.join(", ")
        );
    }
    Ok(())
}

/// `312..1402`: the least and the greatest latency, in ms.
fn span_ms(latencies: &[(usize, Duration)]) -> String {
    let ms: Vec<u64> = latencies.iter().map(|(_, latency)| latency.as_millis() as u64).collect();
    super::span(&ms)
}

/// `<1.2.3> <1.2.4>` → the pids.
fn pids(answer: &str) -> Vec<String> {
    answer.split_whitespace().map(str::to_owned).collect()
}

/// `g0=<1.2.3>,<1.2.4> g1=<1.3.1>` → each group's pids, sorted.
fn parse_members(answer: &str) -> Result<View> {
    answer
        .split_whitespace()
        .map(|group| {
            let (name, pids) = group.split_once('=').context("no `=`")?;
            let mut pids: Vec<String> =
                pids.split(',').filter(|pid| !pid.is_empty()).map(str::to_owned).collect();
            pids.sort_unstable();
            Ok((name.to_owned(), pids))
        })
        .collect::<Result<_>>()
        .with_context(|| format!("`groups members` answered `{answer}`, not `GROUP=PID,... ...`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(groups: &[(&str, &[&str])]) -> View {
        groups
            .iter()
            .map(|(group, pids)| (group.to_string(), pids.iter().map(|p| p.to_string()).collect()))
            .collect()
    }

    #[test]
    fn members_parse_sorted() {
        let parsed = parse_members("g0=<2.1.1>,<1.1.1> g1=<3.1.1>").unwrap();
        assert_eq!(parsed, view(&[("g0", &["<1.1.1>", "<2.1.1>"]), ("g1", &["<3.1.1>"])]));
        assert!(parse_members("").unwrap().is_empty());
        assert!(parse_members("g0").is_err());
    }

    /// A node reaching `side` should see exactly the members of `side`'s nodes.
    #[test]
    fn a_side_sees_its_own_nodes_members() {
        let mut ledger = Ledger::new(3);
        ledger.joined[0].insert("g0".into(), ["<a1>".to_owned(), "<a2>".to_owned()].into());
        ledger.joined[1].insert("g0".into(), ["<b1>".to_owned()].into());
        ledger.joined[1].insert("g1".into(), BTreeSet::new());
        ledger.joined[2].insert("g1".into(), ["<c1>".to_owned()].into());
        assert_eq!(ledger.view_of(&[0, 1]), view(&[("g0", &["<a1>", "<a2>", "<b1>"])]));
        assert_eq!(ledger.view_of(&[2]), view(&[("g1", &["<c1>"])]));
        assert_eq!(ledger.members(), 4);
        ledger.restarted(0);
        assert_eq!(ledger.view_of(&[0, 1]), view(&[("g0", &["<b1>"])]));
    }

    #[test]
    fn differences_name_the_owners() {
        let mut ledger = Ledger::new(2);
        ledger.owners.insert("<a1>".into(), "a".into());
        ledger.owners.insert("<b1>".into(), "b'".into());
        let seen = view(&[("g0", &["<a1>"])]);
        let expected = view(&[("g0", &["<b1>"])]);
        assert_eq!(ledger.describe(&seen, &expected), "lacks 1 (b':1) and has 1 extra (a:1) in g0");
        let twice = view(&[("g0", &["<a1>", "<a1>"])]);
        assert_eq!(
            ledger.describe(&twice, &view(&[("g0", &["<a1>"])])),
            "a pid more than once in g0"
        );
    }
}
