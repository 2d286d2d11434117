//! The `dsup` commands: distributed supervisor [`SUPERVISOR`] (`shoal-supervisor`'s
//! `DistributedSupervisor`, hub `dsup/cluster-test` under it), started on every node with the
//! other hubs' short knobs ([`config`]), and its named children, child `c/N` from the factory
//! [`FACTORY`] (argument `N`), started, terminated and called **by name** through the
//! supervisor's API (`start_child`, `terminate_child`, `call`), never through the hub.
//!
//! Every child process records itself, with its pid, while it lives (from its `init` until
//! the process is gone, killed included), so a report tells which children really run here,
//! from the processes themselves, besides what the supervisor lists; and this node counts the
//! child processes it ever started (`inits`), so the cluster test can tell that a lost node's
//! children ran again exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal::hub::core::{Ring, TableConfig};
use shoal::hub::{ChildStatus, HubConfig};
use shoal::prelude::*;
use shoal::supervisor::{
    DistributedChild, DistributedSupervisor, DistributedSupervisorConfig,
    DistributedSupervisorError,
};
use shoal::transport::Node;
use tokio::task::JoinSet;

use crate::{lock, parse_value};

/// The distributed supervisor every node runs (the `dsup` commands).
pub(crate) const SUPERVISOR: &str = "cluster-test";

/// The factory of [`SUPERVISOR`]'s children, on every node.
pub(crate) const FACTORY: &str = "cluster-test-dsup-child";

/// How long a `start_child` or a `terminate_child` may take (each of a batch's, at once):
/// within the cluster test's command timeout, so a batch is always answered.
const CHILD_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a call by name may wait for its answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The supervisor's configuration on every node: the other hubs' short knobs
/// ([`crate::hub::config`]: a node gone 500 ms has its children started elsewhere, 128 ring
/// entries per node, ...), one copy per child (a supervisor's rule), and tombstones kept 2 s
/// (600 s by default), so that the children the scenario terminates at its end leave nothing
/// in the tables for the scenarios after it.
pub(crate) fn config() -> DistributedSupervisorConfig {
    let base = crate::hub::config();
    let table = TableConfig { replicas: 1, tombstone_ttl: Duration::from_secs(2), ..base.table };
    DistributedSupervisorConfig {
        hub: HubConfig { table, ..base },
        timeout: CHILD_TIMEOUT,
        call_timeout: CALL_TIMEOUT,
    }
}

/// The children alive on this node, by number, as their processes record themselves: the
/// pids of each (more than one is a child doubled on this node).
type Live = Arc<Mutex<BTreeMap<u32, Vec<Pid>>>>;

/// A child process's record of itself in [`Live`]: taken in its `init`, given back when the
/// process is gone (dropped, killed included).
struct Presence {
    number: u32,
    pid: Pid,
    live: Live,
}

impl Drop for Presence {
    fn drop(&mut self) {
        let mut live = lock(&self.live);
        if let Some(pids) = live.get_mut(&self.number) {
            pids.retain(|pid| *pid != self.pid);
            if pids.is_empty() {
                live.remove(&self.number);
            }
        }
    }
}

/// A named child: lives, records that it does, and answers a call with its number and its
/// node.
struct Named {
    number: u32,
    node: String,
    live: Live,
    inits: Arc<AtomicU64>,
    /// Taken in `init` (so that only a process that started is recorded).
    presence: Option<Presence>,
}

impl Process for Named {
    type Message = ();
    type Call = ();
    type Reply = (u32, String);

    async fn init(&mut self, ctx: &mut Context<Self>) -> Result<(), ExitReason> {
        let pid = ctx.pid();
        lock(&self.live).entry(self.number).or_default().push(pid);
        self.presence = Some(Presence { number: self.number, pid, live: self.live.clone() });
        self.inits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn handle_cast(&mut self, (): (), _: &mut Context<Self>) {}

    async fn handle_call(&mut self, (): (), reply: ReplyTo<(u32, String)>, _: &mut Context<Self>) {
        reply.send((self.number, self.node.clone()));
    }

    fn remote_messages() -> Option<Codec<Self>> {
        Some(Codec::msgpack())
    }
}

/// The supervisor on this node, and its children's tally here.
pub(crate) struct DsupCommands {
    sup: DistributedSupervisor,
    live: Live,
    inits: Arc<AtomicU64>,
    /// This node's name.
    name: String,
    /// The ring entries per node of the supervisor's hub, to judge owners.
    vnodes: u32,
}

impl DsupCommands {
    /// Registers [`FACTORY`] and starts supervisor [`SUPERVISOR`] on `node`.
    pub(crate) async fn start(node: &Node) -> Result<Self, String> {
        let live = Live::default();
        let inits = Arc::new(AtomicU64::new(0));
        let (tally, count, here) = (live.clone(), inits.clone(), node.name().to_owned());
        node.runtime()
            .register_factory(FACTORY, move |number: u32| Named {
                number,
                node: here.clone(),
                live: tally.clone(),
                inits: count.clone(),
                presence: None,
            })
            .map_err(|error| format!("cannot register the supervisor's factory: {error}"))?;
        let config = config();
        let vnodes = config.hub.table.vnodes;
        let sup = DistributedSupervisor::start(node, SUPERVISOR, config)
            .await
            .map_err(|error| format!("cannot start supervisor {SUPERVISOR}: {error}"))?;
        Ok(DsupCommands { sup, live, inits, name: node.name().to_owned(), vnodes })
    }

    /// The supervisor (for the dashboard's view of this node).
    #[cfg(feature = "dashboard")]
    pub(crate) fn supervisor(&self) -> &DistributedSupervisor {
        &self.sup
    }

    /// Runs one of the `dsup` commands: the words after `dsup`.
    pub(crate) async fn handle(&self, words: &[&str]) -> Result<String, String> {
        match words {
            ["nodes"] => Ok(self.sup.nodes().join(",")),
            ["start", from, count] => self.start_children(parse_range("start", from, count)?).await,
            ["stop", from, count] => self.stop_children(parse_range("stop", from, count)?).await,
            ["call", from, count] => self.call_children(parse_range("call", from, count)?).await,
            ["report"] => Ok(self.report()),
            ["children"] => Ok(self.children()),
            ["inits"] => Ok(self.inits.load(Ordering::Relaxed).to_string()),
            _ => Err(format!("unknown command `{}` for supervisor {SUPERVISOR}", words.join(" "))),
        }
    }

    /// `start FROM COUNT`: `start_child` of each of `c/FROM` .. `c/(FROM+COUNT-1)`, by name,
    /// all at once; `started=S failed=F taken=T [first=CHILD:_ERROR]`, `T` of the failures
    /// being names taken already (`AlreadyStarted`).
    async fn start_children(&self, numbers: std::ops::Range<u32>) -> Result<String, String> {
        let mut starts = JoinSet::new();
        for number in numbers {
            let sup = self.sup.clone();
            let spec = ChildSpec::new(format!("c/{number}"), FACTORY, &number)
                .map_err(|error| error.to_string())?;
            let child = DistributedChild::new(spec).name(format!("c/{number}"));
            starts.spawn(async move { (number, sup.start_child(child).await.map(drop)) });
        }
        let results = joined(starts).await?;
        let taken = results
            .iter()
            .filter(|(_, result)| {
                matches!(result, Err(DistributedSupervisorError::AlreadyStarted { .. }))
            })
            .count();
        Ok(format!("{} taken={taken}{}", tally("started", &results), first_failure(&results)))
    }

    /// `stop FROM COUNT`: `terminate_child` of each of `c/FROM` .. `c/(FROM+COUNT-1)`, by
    /// name, all at once; `stopped=S failed=F [first=CHILD:_ERROR]`.
    async fn stop_children(&self, numbers: std::ops::Range<u32>) -> Result<String, String> {
        let mut stops = JoinSet::new();
        for number in numbers {
            let sup = self.sup.clone();
            stops.spawn(async move { (number, sup.terminate_child(&format!("c/{number}")).await) });
        }
        let results = joined(stops).await?;
        Ok(format!("{}{}", tally("stopped", &results), first_failure(&results)))
    }

    /// `call FROM COUNT`: each of `c/FROM` .. `c/(FROM+COUNT-1)` called by name, all at once;
    /// `answered=A wrong=W failed=F [first=CHILD:_ERROR]`: `W` of the answers came from a
    /// child of another number.
    async fn call_children(&self, numbers: std::ops::Range<u32>) -> Result<String, String> {
        let mut calls = JoinSet::new();
        for number in numbers {
            let sup = self.sup.clone();
            calls.spawn(async move {
                (number, sup.call::<Named>(&format!("c/{number}"), ()).await.map(|(n, _)| n))
            });
        }
        let results = joined(calls).await?;
        let wrong = results
            .iter()
            .filter(|(number, result)| result.as_ref().is_ok_and(|answered| answered != number))
            .count();
        let failed = results.iter().filter(|(_, result)| result.is_err()).count();
        Ok(format!(
            "answered={} wrong={wrong} failed={failed}{}",
            results.len() - failed,
            first_failure(&results)
        ))
    }

    /// `report`: as the hubs' (see the table in `main.rs`), the supervisor's nodes, listing
    /// and ring, `mismatch` counting the children live here whose pid is not the one the
    /// supervisor lists as running here under their name, and those it lists so without a
    /// live process of that pid.
    fn report(&self) -> String {
        let nodes = self.sup.nodes();
        let ring = Ring::with_vnodes(nodes.iter().map(String::as_str), self.vnodes);
        let own = self.sup.hub().which_children_local();
        let rows: BTreeSet<(String, Pid)> = own
            .iter()
            .filter_map(|row| match row.status {
                ChildStatus::Running(pid) => Some((row.child.clone(), pid)),
                _ => None,
            })
            .collect();
        let live = lock(&self.live).clone();
        let doubled = live.values().filter(|pids| pids.len() > 1).count();
        let processes: BTreeSet<(String, Pid)> = live
            .iter()
            .flat_map(|(number, pids)| pids.iter().map(move |pid| (format!("c/{number}"), *pid)))
            .collect();
        let foreign = live
            .keys()
            .filter(|number| ring.owner(&format!("c/{number}")) != Some(self.name.as_str()))
            .count();
        let mismatch = processes.symmetric_difference(&rows).count();
        let numbers: Vec<String> = live.keys().map(u32::to_string).collect();
        format!(
            "nodes={} live={} rows={} own={} doubled={doubled} foreign={foreign} \
             mismatch={mismatch} ids={}",
            nodes.join(","),
            live.len(),
            rows.len(),
            own.len(),
            numbers.join(",")
        )
    }

    /// `children`: `count=N copies=C digest=HEX`: the supervisor's `children()` as this node
    /// sees it, how many names and a digest of every (name, pid), the same on nodes that
    /// agree; and how many running copies the whole listing under it holds (one per name
    /// once no name runs twice, as this node sees it).
    fn children(&self) -> String {
        let children = self.sup.children();
        let mut hasher = DefaultHasher::new();
        for (name, pid) in &children {
            (name, pid).hash(&mut hasher);
        }
        let copies = self
            .sup
            .hub()
            .which_children_global()
            .iter()
            .filter(|row| matches!(row.status, ChildStatus::Running(_)))
            .count();
        format!("count={} copies={copies} digest={:016x}", children.len(), hasher.finish())
    }
}

/// `FROM` and `COUNT` of a batch command, as the range of child numbers.
fn parse_range(command: &str, from: &str, count: &str) -> Result<std::ops::Range<u32>, String> {
    let from: u32 = parse_value(command, from)?;
    let count: u32 = parse_value(command, count)?;
    Ok(from..from.saturating_add(count))
}

/// Every result of `set`, by child number.
async fn joined<T: 'static>(mut set: JoinSet<(u32, T)>) -> Result<Vec<(u32, T)>, String> {
    let mut results = Vec::with_capacity(set.len());
    while let Some(result) = set.join_next().await {
        results.push(result.map_err(|error| format!("a task failed: {error}"))?);
    }
    results.sort_by_key(|(number, _)| *number);
    Ok(results)
}

/// `VERB=S failed=F`.
fn tally<T, E>(verb: &str, results: &[(u32, Result<T, E>)]) -> String {
    let failed = results.iter().filter(|(_, result)| result.is_err()).count();
    format!("{verb}={} failed={failed}", results.len() - failed)
}

/// ` first=c/N:_ERROR` for the first failure of `results`, if any.
fn first_failure<T, E: std::fmt::Display>(results: &[(u32, Result<T, E>)]) -> String {
    results
        .iter()
        .find_map(|(number, result)| result.as_ref().err().map(|error| (number, error)))
        .map_or(String::new(), |(number, error)| {
            format!(" first=c/{number}:{}", error.to_string().replace(char::is_whitespace, "_"))
        })
}
