//! Starting, stopping and moving children: the batch API of [`Hub`], the hub's RPC (one per
//! hub id, `shoal.hub.ID`: start, terminate, redistribute), this node's processes and their
//! restarts, and the reconcile task that carries out what the [`Table`] decides.
//!
//! **A start** goes to the child's owner as the caller sees the ring; the owner checks again
//! and forwards a child it does not own (at most [`HubConfig::max_hops`] times). The owner
//! starts the process, publishes the child's entry, and answers once another node has
//! acknowledged holding it (so the loss of one node right after the answer loses no child).
//!
//! **This node's children** are supervised here: a child that exits is restarted as its
//! spec's restart policy says, at most [`HubConfig::max_restarts`] times per
//! [`HubConfig::restart_window`], counted across the nodes it ran on (its entry carries its
//! recent restarts; a failover start that fails counts too); a child that ends for good (a
//! temporary one that exits, a permanent one past that intensity, then marked failed) leaves
//! a tombstone, so no other node starts it again.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shoal_process::{ExitReason, Pid, Restart, Shutdown, SpawnOptions};
use tokio::task::JoinSet;

use super::error::{ChildError, HubError, MAX_CHILD_ID, RedistError, TerminateError};
use super::handover;
use super::hub::{
    CONFLICT, ChildData, Conflict, Hub, HubChild, HubEvent, HubInner, MOVED, QUORUM_LOST,
};
use super::migrate::{self, Migration};
use super::stats::Counters;
use crate::core::{Action, Entry, Load, Placement, Redundancy, State, StopReason, Table};

/// A child started: where, and as which pid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// The node it runs on.
    pub node: String,
    /// Its pid there.
    pub pid: Pid,
}

/// The outcome of a batch, child by child, in the order given.
pub type StartResults = Vec<(String, Result<Started, ChildError>)>;

/// A batch's entries, by the node each goes to.
type ByOwner = BTreeMap<String, Vec<(String, Entry<ChildData>)>>;

/// The outcome of a batch of terminations, child by child, in the order given.
pub type StopResults = Vec<(String, Result<(), TerminateError>)>;

/// How [`Hub::init_children`] starts a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartOptions {
    /// Report a child that runs already as [`ChildError::AlreadyStarted`] (by default it
    /// counts as started).
    pub check_existing: bool,
    /// How long to wait for the whole batch (5 s by default).
    pub timeout: Duration,
    /// If any child fails, stop those that started ([`ChildError::RolledBack`]).
    pub rollback: bool,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions { check_existing: false, timeout: Duration::from_secs(5), rollback: false }
    }
}

/// One of this node's children.
pub(crate) struct Local {
    /// Its process (none while it starts or restarts).
    pid: Option<Pid>,
    /// Being stopped on purpose: its exit is not a crash.
    stopping: bool,
    /// Started for a hot move and not yet published: the entry to publish, and the mover.
    prepared: Option<(Box<Entry<ChildData>>, String)>,
    /// For a hot move's new copy: whether the window for the old copy's state is closed (it
    /// was restored, or the mover gave up on it), held while a restore is under way.
    restore: Option<Arc<tokio::sync::Mutex<bool>>>,
    /// For a hot move's new copy: the mover froze the old copy (its state came), so this one
    /// is the child's only copy until the mover publishes it.
    frozen: bool,
}

impl Local {
    fn claim() -> Self {
        Local { pid: None, stopping: false, prepared: None, restore: None, frozen: false }
    }
}

/// How a start treats a child known already.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Mode {
    /// A caller's start: a terminated child starts again (a newer version).
    Fresh { check: bool },
    /// A failover, a move or a hand-over from node `from`: a child terminated since is not
    /// started, and a copy on `from` (a mover's, which this node may still see running) does
    /// not count as running.
    Adopt { from: String },
    /// One more copy of a child of several ([`crate::core::TableConfig::replicas`]): started
    /// beside the running copies, unless this node runs one or it was terminated since.
    Copy,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    Start {
        children: Vec<(String, Entry<ChildData>)>,
        mode: Mode,
        hops: u8,
        timeout_ms: u64,
    },
    Terminate {
        children: Vec<String>,
        timeout_ms: u64,
    },
    Redistribute {
        child: String,
        to: String,
        timeout_ms: u64,
    },
    /// Snapshots of active copies, for this node's passive copies.
    States {
        states: Vec<(String, serde_bytes::ByteBuf)>,
    },
    /// A hot move from `from`: start the new copy, unpublished.
    Prepare {
        child: String,
        entry: Entry<ChildData>,
        from: String,
        timeout_ms: u64,
    },
    /// A hot move: the old copy's state, for the new one.
    Restore {
        child: String,
        state: serde_bytes::ByteBuf,
    },
    /// A hot move: the old copy's state will not come (a restore not answered in time is
    /// ignored if it comes after this).
    Abandon {
        child: String,
    },
    /// A hot move: publish the new copy (the old one's mail is forwarded).
    Publish {
        child: String,
        from: String,
        timeout_ms: u64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    Started(StartResults),
    Terminated(StopResults),
    Redistributed(Result<(), RedistError>),
    /// How many of the states were restored.
    Restored(usize),
    /// The new copy of a hot move, unpublished.
    Prepared(Result<Pid, ChildError>),
    /// The new copy of a hot move, published.
    Published(Result<Started, ChildError>),
    /// The hub is stopped on that node.
    Stopped,
}

impl Hub {
    /// Starts `children`, each on its owner, and waits for the outcome of each (see the
    /// module docs): started where as which pid, or why not.
    ///
    /// # Errors
    ///
    /// The batch as a whole: [`HubError::NoChildren`], [`HubError::BadId`],
    /// [`HubError::Duplicate`], [`HubError::Placement`], [`HubError::Stopped`]; nothing
    /// started then.
    pub async fn init_children(
        &self,
        children: Vec<HubChild>,
        options: StartOptions,
    ) -> Result<StartResults, HubError> {
        let inner = &self.inner;
        let deadline = inner.clock.now().into_std() + options.timeout;
        let owners = place(inner, children)?;
        let order: Vec<String> =
            owners.values().flatten().map(|(child, _)| child.clone()).collect();
        let mode = Mode::Fresh { check: options.check_existing };
        let mut results = dispatch(inner, owners, mode, 0, deadline).await;
        if options.rollback && results.iter().any(|(_, result)| result.is_err()) {
            // Terminated where each started: this node may not have heard of it yet.
            let mut started: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (child, result) in &results {
                if let Ok(Started { node, .. }) = result {
                    started.entry(node.clone()).or_default().push(child.clone());
                }
            }
            terminate(inner, started, options.timeout).await;
            for (_, result) in &mut results {
                if result.is_ok() {
                    *result = Err(ChildError::RolledBack);
                }
            }
        }
        Ok(in_order(&order, results))
    }

    /// Starts `children` like [`Hub::init_children`], without waiting for the outcome.
    ///
    /// # Errors
    ///
    /// As [`Hub::init_children`], for the batch as a whole.
    pub fn init_children_detached(
        &self,
        children: Vec<HubChild>,
        options: StartOptions,
    ) -> Result<(), HubError> {
        let inner = self.inner.clone();
        let deadline = inner.clock.now().into_std() + options.timeout;
        let owners = place(&inner, children)?;
        let mode = Mode::Fresh { check: options.check_existing };
        tokio::spawn(async move { dispatch(&inner, owners, mode, 0, deadline).await });
        Ok(())
    }

    /// Terminates `children` where they run, each within `timeout`: each leaves a tombstone,
    /// so no node starts it again (unless started anew). A child this node knows but sees no
    /// copy of running (after a heal, its running copy may not have been heard of yet) is
    /// waited for, within `timeout`.
    pub async fn stop_children(&self, children: Vec<String>, timeout: Duration) -> StopResults {
        let inner = &self.inner;
        let mut answers = Vec::new();
        let mut batches: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut waiting: Vec<String> = Vec::new();
        for child in &children {
            match holder(inner, child, &[]) {
                Ok(node) => batches.entry(node).or_default().push(child.clone()),
                // Known, and no copy seen running: one may be on its way (see below).
                Err(_) if live(inner, child) => {
                    waiting.push(child.clone());
                }
                Err(error) => answers.push((child.clone(), Err(error))),
            }
        }
        // A copy that stopped before this node heard of it (the loser of a conflict, which its
        // own node resolved first) answers `NotFound` while another copy runs, which this node
        // may not have heard of yet either: the other copies are asked as this node learns of
        // them, within `timeout`.
        let deadline = inner.clock.now().into_std() + timeout;
        let mut asked: BTreeMap<String, Vec<String>> = BTreeMap::new();
        loop {
            for (node, batch) in &batches {
                for child in batch {
                    asked.entry(child.clone()).or_default().push(node.clone());
                }
            }
            let mut not_found = std::mem::take(&mut waiting);
            // Each round within what is left of `timeout`, so the whole call keeps to it.
            let left = deadline.saturating_duration_since(inner.clock.now().into_std());
            for (child, result) in terminate(inner, std::mem::take(&mut batches), left).await {
                match result {
                    Err(TerminateError::NotFound(_)) => not_found.push(child),
                    result => answers.push((child, result)),
                }
            }
            if not_found.is_empty() {
                break;
            }
            let late = inner.clock.now().into_std() >= deadline;
            for child in not_found {
                let tried: Vec<&str> =
                    asked.get(&child).into_iter().flatten().map(|n| n.as_str()).collect();
                match holder(inner, &child, &tried) {
                    Ok(node) if !late => batches.entry(node).or_default().push(child),
                    _ if !late && live(inner, &child) => waiting.push(child),
                    _ => answers.push((child.clone(), Err(TerminateError::NotFound(child)))),
                }
            }
            if batches.is_empty() {
                if waiting.is_empty() {
                    break;
                }
                inner.clock.sleep(inner.config.tick).await;
            }
        }
        in_order(&children, answers)
    }

    /// Terminates one child (see [`Hub::stop_children`]).
    ///
    /// # Errors
    ///
    /// [`TerminateError::NotFound`], [`TerminateError::Restarting`],
    /// [`TerminateError::Running`] (still running after `timeout`),
    /// [`TerminateError::Unreachable`].
    pub async fn child_terminate(
        &self,
        child: &str,
        timeout: Duration,
    ) -> Result<(), TerminateError> {
        let mut results = self.stop_children(vec![child.to_owned()], timeout).await;
        results.pop().map_or_else(|| Err(TerminateError::NotFound(child.to_owned())), |(_, r)| r)
    }

    /// Moves `child` to `node` (cold: stopped where it runs, then started there) and keeps it
    /// there: its placement becomes that node (it follows the ring again only if that node
    /// leaves the hub).
    ///
    /// # Errors
    ///
    /// [`RedistError::NotFound`], [`RedistError::NotInHub`], [`RedistError::Start`] (it runs
    /// where it ran), [`RedistError::Unreachable`].
    pub async fn child_redist_init(
        &self,
        child: &str,
        node: &str,
        timeout: Duration,
    ) -> Result<(), RedistError> {
        let inner = &self.inner;
        if !inner.table(|table| table.ring().contains(node)) {
            return Err(RedistError::NotInHub(node.to_owned()));
        }
        let from =
            holder(inner, child, &[]).map_err(|_| RedistError::NotFound(child.to_owned()))?;
        if from == inner.me() {
            return redistribute_here(inner, child, node, timeout).await;
        }
        let request = Request::Redistribute {
            child: child.to_owned(),
            to: node.to_owned(),
            timeout_ms: millis(timeout),
        };
        match call(inner, &from, &request, timeout + Duration::from_secs(1)).await {
            Ok(Reply::Redistributed(result)) => result,
            Ok(_) => Err(RedistError::Unreachable { node: from, error: "hub stopped".into() }),
            Err(error) => Err(RedistError::Unreachable { node: from, error }),
        }
    }
}

/// Terminates each batch of children on the node that holds it.
async fn terminate(
    inner: &Arc<HubInner>,
    holders: BTreeMap<String, Vec<String>>,
    timeout: Duration,
) -> StopResults {
    let mut calls = JoinSet::new();
    for (node, batch) in holders {
        let inner = inner.clone();
        calls.spawn(async move {
            if node == inner.me() {
                return terminate_here(&inner, batch, timeout).await;
            }
            let request =
                Request::Terminate { children: batch.clone(), timeout_ms: millis(timeout) };
            match call(&inner, &node, &request, timeout + Duration::from_secs(1)).await {
                Ok(Reply::Terminated(results)) => results,
                Ok(_) => unreachable_all(batch, &node, "the hub is stopped there"),
                Err(error) => unreachable_all(batch, &node, &error),
            }
        });
    }
    let mut results = Vec::new();
    while let Some(batch) = calls.join_next().await {
        results.extend(batch.unwrap_or_default());
    }
    results
}

/// Checks a batch and places each child: the batch's entries, by owner.
fn place(inner: &HubInner, children: Vec<HubChild>) -> Result<ByOwner, HubError> {
    if inner.is_stopped() {
        return Err(HubError::Stopped);
    }
    if children.is_empty() {
        return Err(HubError::NoChildren);
    }
    if !inner.table(Table::has_quorum) {
        return Err(HubError::NoQuorum);
    }
    let mut seen = std::collections::BTreeSet::new();
    for child in &children {
        let id = &child.spec.id;
        if id.is_empty() || id.len() > MAX_CHILD_ID {
            return Err(HubError::BadId(id.clone()));
        }
        if !seen.insert(id.as_str()) {
            return Err(HubError::Duplicate(id.clone()));
        }
    }
    let strategy = inner.config.strategy.clone();
    inner.table(|table| {
        let load = if strategy.needs_load() { table.load() } else { BTreeMap::new() };
        let load = Load { ring: table.ring(), children: &load };
        let mut owners: BTreeMap<String, Vec<(String, Entry<ChildData>)>> = BTreeMap::new();
        for child in children {
            let id = child.spec.id.clone();
            let placement = strategy.place(&id, child.nodes.as_deref(), &load)?;
            let owner = placement.owner(table.ring(), &id).unwrap_or(table.me()).to_owned();
            let data = ChildData {
                spec: Arc::new(child.spec),
                meta: Arc::new(serde_bytes::ByteBuf::from(child.meta)),
                tags: Arc::new(child.tags),
                pid: None,
                restarts: Arc::default(),
                failed: false,
            };
            let entry = Entry { version: 0, state: State::Running, placement, data };
            owners.entry(owner).or_default().push((id, entry));
        }
        Ok(owners)
    })
}

/// Sends each owner its part of a batch (this node's part straight to [`start_owned`]).
/// Boxed, as [`start_owned`] calls it back to forward.
fn dispatch<'a>(
    inner: &'a Arc<HubInner>,
    owners: BTreeMap<String, Vec<(String, Entry<ChildData>)>>,
    mode: Mode,
    hops: u8,
    deadline: Instant,
) -> Pin<Box<dyn Future<Output = StartResults> + Send + 'a>> {
    Box::pin(dispatch_now(inner, owners, mode, hops, deadline))
}

async fn dispatch_now(
    inner: &Arc<HubInner>,
    owners: BTreeMap<String, Vec<(String, Entry<ChildData>)>>,
    mode: Mode,
    hops: u8,
    deadline: Instant,
) -> StartResults {
    let mut calls: JoinSet<StartResults> = JoinSet::new();
    for (owner, batch) in owners {
        let inner = inner.clone();
        let mode = mode.clone();
        calls.spawn(async move {
            if owner == inner.me() {
                return start_owned(&inner, batch, mode, hops, deadline).await;
            }
            let ids: Vec<String> = batch.iter().map(|(child, _)| child.clone()).collect();
            let left = deadline.saturating_duration_since(inner.clock.now().into_std());
            let request = Request::Start { children: batch, mode, hops, timeout_ms: millis(left) };
            match call(&inner, &owner, &request, left).await {
                Ok(Reply::Started(results)) => results,
                Ok(_) => unreachable_start(ids, &owner, "the hub is stopped there"),
                Err(error) if error == TIMED_OUT => {
                    ids.into_iter().map(|child| (child, Err(ChildError::Timeout))).collect()
                }
                Err(error) => unreachable_start(ids, &owner, &error),
            }
        });
    }
    let mut results = Vec::new();
    while let Some(batch) = calls.join_next().await {
        results.extend(batch.unwrap_or_default());
    }
    results
}

/// A batch sent to this node as the owner: the children it owns start here, the others go
/// on to their owners as this node sees them (one hop more).
async fn start_owned(
    inner: &Arc<HubInner>,
    batch: Vec<(String, Entry<ChildData>)>,
    mode: Mode,
    hops: u8,
    deadline: Instant,
) -> StartResults {
    let me = inner.me().to_owned();
    let mut mine = Vec::new();
    let mut others: BTreeMap<String, Vec<(String, Entry<ChildData>)>> = BTreeMap::new();
    // A hand-over names this node as the owner: it starts here, whatever this node's view
    // (a newcomer may not see every node yet); a later reconcile moves it if need be.
    let adopt = matches!(mode, Mode::Adopt { .. });
    inner.table(|table| {
        for (child, entry) in batch {
            match table.owner(&child, &entry.placement) {
                Some(owner) if owner != me && !adopt => {
                    others.entry(owner.to_owned()).or_default().push((child, entry));
                }
                _ => mine.push((child, entry)),
            }
        }
    });
    let mut results = Vec::new();
    if !others.is_empty() {
        if hops >= inner.config.max_hops {
            for (child, _) in others.into_values().flatten() {
                results.push((child, Err(ChildError::TooManyHops(inner.config.max_hops))));
            }
        } else {
            results.extend(dispatch(inner, others, mode.clone(), hops + 1, deadline).await);
        }
    }
    results.extend(start_here(inner, mine, mode, deadline).await);
    results
}

/// What to do about a child asked to start here.
enum Verdict {
    /// It runs (or is starting) somewhere already.
    Runs { node: String, pid: Option<Pid> },
    /// A newer tombstone: not started (hand-overs only).
    Ended(u64),
    /// Start it, at this version.
    Start(u64),
}

fn verdict(
    table: &Table<ChildData>,
    child: &str,
    entry: &Entry<ChildData>,
    mode: &Mode,
) -> Verdict {
    let Some(known) = table.child(child) else { return Verdict::Start(entry.version) };
    if *mode == Mode::Copy {
        let me = table.me();
        if known.running().any(|node| node == me) {
            let pid = known.holders.get(me).and_then(|entry| entry.data.pid);
            return Verdict::Runs { node: me.to_owned(), pid };
        }
        return match known.newest.version {
            newest if known.is_ended() => Verdict::Ended(newest),
            newest => Verdict::Start(newest.max(entry.version)),
        };
    }
    let from = match mode {
        Mode::Adopt { from } => Some(from.as_str()),
        Mode::Fresh { .. } | Mode::Copy => None,
    };
    if let Some(node) = known.running().find(|node| Some(*node) != from) {
        let pid = known.holders.get(node).and_then(|entry| entry.data.pid);
        return Verdict::Runs { node: node.to_owned(), pid };
    }
    let newest = known.newest.version;
    match (known.is_ended(), mode) {
        (true, Mode::Adopt { .. } | Mode::Copy) if newest >= entry.version => {
            Verdict::Ended(newest)
        }
        (true, _) => Verdict::Start(newest.max(entry.version) + 1),
        (false, _) => Verdict::Start(newest.max(entry.version)),
    }
}

/// Starts here the children of a batch this node owns, publishes them, and waits until
/// another node holds them.
async fn start_here(
    inner: &Arc<HubInner>,
    batch: Vec<(String, Entry<ChildData>)>,
    mode: Mode,
    deadline: Instant,
) -> StartResults {
    let mut results = Vec::new();
    let Some(verdicts) = inner.table(|table| {
        table.has_quorum().then(|| {
            batch
                .iter()
                .map(|(child, entry)| verdict(table, child, entry, &mode))
                .collect::<Vec<Verdict>>()
        })
    }) else {
        let refused = ChildError::NoQuorum(inner.me().to_owned());
        return batch.into_iter().map(|(child, _)| (child, Err(refused.clone()))).collect();
    };
    let mut to_start = Vec::new();
    {
        let mut local = lock(inner);
        for ((child, mut entry), verdict) in batch.into_iter().zip(verdicts) {
            let refused = match verdict {
                Verdict::Runs { node, pid: Some(pid) } => match mode {
                    Mode::Fresh { check: true } => Err(ChildError::AlreadyStarted { node, pid }),
                    _ => Ok(Started { node, pid }),
                },
                Verdict::Runs { node, pid: None } => Err(ChildError::Starting { node }),
                Verdict::Ended(version) => Err(ChildError::Terminated(version)),
                // Claimed here already, by a start under way.
                Verdict::Start(_) if local.contains_key(&child) => {
                    Err(ChildError::Starting { node: inner.me().to_owned() })
                }
                Verdict::Start(version) => {
                    entry.version = version;
                    local.insert(child.clone(), Local::claim());
                    to_start.push((child, entry));
                    continue;
                }
            };
            results.push((child, refused));
        }
    }
    let failover = match &mode {
        Mode::Copy => true,
        Mode::Adopt { from } => from == inner.me(),
        Mode::Fresh { .. } => false,
    };
    let mut started = Vec::with_capacity(to_start.len());
    let mut publish = Vec::with_capacity(to_start.len());
    for (child, mut entry) in to_start {
        match spawn(inner, &entry.data.spec).await {
            Ok(pid) => {
                entry.state = up_state(inner, &child, &entry);
                entry.data.pid = Some(pid);
                if temporary(&entry) && entry.placement == Placement::Ring {
                    // Never started again: it stays where it started (see `temporary`).
                    entry.placement = Placement::Nodes(vec![inner.me().to_owned()]);
                }
                started.push((child.clone(), pid));
                publish.push((child, Some(entry)));
            }
            // A failover this node decided on: the child's restart intensity decides whether
            // it is tried again here (a child that fails wherever it runs fails once).
            Err(error) if failover => {
                let inner = inner.clone();
                let child_id = child.clone();
                tokio::spawn(async move { recover(&inner, child_id, entry).await });
                results.push((child, Err(error)));
            }
            Err(error) => {
                lock(inner).remove(&child);
                results.push((child, Err(error)));
            }
        }
    }
    if started.is_empty() {
        return results;
    }
    {
        let mut local = lock(inner);
        for (child, pid) in &started {
            if let Some(this) = local.get_mut(child) {
                this.pid = Some(*pid);
            }
        }
    }
    let seq = inner.map.set(publish);
    for (child, pid) in &started {
        supervise(inner, child.clone(), *pid);
    }
    let left = deadline.saturating_duration_since(inner.clock.now().into_std());
    let held = inner.map.held(seq, 2, left).await;
    let node = inner.me().to_owned();
    for (child, pid) in started {
        let result = if held {
            Ok(Started { node: node.clone(), pid })
        } else {
            Err(ChildError::NotHeld { node: node.clone(), pid })
        };
        results.push((child, result));
    }
    results
}

async fn spawn(inner: &HubInner, spec: &shoal_process::ChildSpec) -> Result<Pid, ChildError> {
    inner
        .runtime
        .start_factory(&spec.factory, &spec.args, SpawnOptions::new())
        .await
        .map_err(|error| ChildError::Start(error.to_string()))
}

fn lock(inner: &HubInner) -> std::sync::MutexGuard<'_, BTreeMap<String, Local>> {
    inner.local.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts the new copy of a hot move from `from`, claimed here but not published.
pub(crate) async fn start_unpublished(
    inner: &Arc<HubInner>,
    child: &str,
    entry: &Entry<ChildData>,
    from: &str,
    deadline: Instant,
) -> Result<Pid, ChildError> {
    let mode = Mode::Adopt { from: from.to_owned() };
    let check =
        || inner.table(|table| table.has_quorum().then(|| verdict(table, child, entry, &mode)));
    let mut verdict = check();
    // Another node seen running it may be a view not yet caught up (the mover took it from
    // that node, whose entry's removal is still on its way here): waited out, within the
    // deadline.
    while matches!(verdict, Some(Verdict::Runs { .. })) && inner.clock.now().into_std() < deadline {
        inner.clock.sleep(Duration::from_millis(10)).await;
        verdict = check();
    }
    let version = match verdict {
        None => return Err(ChildError::NoQuorum(inner.me().to_owned())),
        Some(Verdict::Runs { node, pid: Some(pid) }) => {
            return Err(ChildError::AlreadyStarted { node, pid });
        }
        Some(Verdict::Runs { node, pid: None }) => return Err(ChildError::Starting { node }),
        Some(Verdict::Ended(version)) => return Err(ChildError::Terminated(version)),
        Some(Verdict::Start(version)) => version,
    };
    // A copy prepared for an earlier move of the child that its mover gave up on before the
    // freeze (its `Prepare` answer came too late: it runs on there, and moves again now) is
    // replaced; one that has taken a state is not. One still starting is waited for first.
    let starting = || lock(inner).get(child).is_some_and(|this| this.pid.is_none());
    while starting() && inner.clock.now().into_std() < deadline {
        inner.clock.sleep(Duration::from_millis(5)).await;
    }
    let stale = lock(inner).get(child).and_then(|this| {
        this.prepared.as_ref().filter(|(_, mover)| mover == from)?;
        let window = this.restore.as_ref()?;
        let untouched = window.try_lock().is_ok_and(|closed| !*closed);
        untouched.then_some(this.pid).flatten()
    });
    if let Some(pid) = stale {
        drop_unpublished(inner, child, pid);
    }
    if !reserve(inner, child) {
        return Err(ChildError::Starting { node: inner.me().to_owned() });
    }
    match spawn(inner, &entry.data.spec).await {
        Ok(pid) => {
            let mut prepared = entry.clone();
            prepared.version = version;
            if let Some(this) = lock(inner).get_mut(child) {
                this.pid = Some(pid);
                this.prepared = Some((Box::new(prepared), from.to_owned()));
                this.restore = Some(Arc::new(tokio::sync::Mutex::new(false)));
            }
            Ok(pid)
        }
        Err(error) => {
            lock(inner).remove(child);
            Err(error)
        }
    }
}

/// The new copy of a hot move, unpublished: its pid and factory.
pub(crate) fn prepared(inner: &HubInner, child: &str) -> Option<(Pid, String)> {
    let local = lock(inner);
    let this = local.get(child)?;
    Some((this.pid?, this.prepared.as_ref()?.0.data.spec.factory.clone()))
}

/// The restore window of the new copy of a hot move (see [`Local::restore`]).
pub(crate) fn restore_window(
    inner: &HubInner,
    child: &str,
) -> Option<Arc<tokio::sync::Mutex<bool>>> {
    lock(inner).get(child)?.restore.clone()
}

/// The old copy of the hot move that prepared `pid` here froze: its state came.
pub(crate) fn mark_frozen(inner: &HubInner, child: &str, pid: Pid) {
    if let Some(this) = lock(inner).get_mut(child).filter(|this| this.pid == Some(pid)) {
        this.frozen = true;
    }
}

/// Whether `pid`, a hot move's new copy here, is still unpublished and its old copy froze.
pub(crate) fn frozen_unpublished(inner: &HubInner, child: &str, pid: Pid) -> bool {
    lock(inner)
        .get(child)
        .is_some_and(|this| this.pid == Some(pid) && this.prepared.is_some() && this.frozen)
}

/// Whether a child of this node is on its way to another (its entry says moving).
pub(crate) fn any_moving_out(inner: &HubInner) -> bool {
    inner.map.with(|state| {
        state.replica.own().values().any(|entry| matches!(entry.state, State::Moving { .. }))
    })
}

/// Whether a new copy of a hot move is waiting here to be published.
pub(crate) fn any_prepared(inner: &HubInner) -> bool {
    lock(inner).values().any(|this| this.prepared.is_some())
}

/// Publishes the new copy of a hot move and supervises it; answers once another node holds
/// it, as a start does.
///
/// Not before this node has seen the mover's copy as moving (its entry comes by the
/// replication, the request by the RPC: either may come first): two running copies would be
/// a conflict, which the mover, still the owner when its hub is stopping, would win.
async fn publish_prepared(
    inner: &Arc<HubInner>,
    child: &str,
    from: &str,
    timeout: Duration,
) -> Result<Started, ChildError> {
    let seen = || {
        inner.table(|table| {
            let held = table.child(child).and_then(|known| known.holders.get(from));
            held.is_none_or(|entry| !entry.state.is_live())
        })
    };
    let until = inner.clock.now().into_std() + timeout.min(PUBLISH_WAIT);
    while !seen() && inner.clock.now().into_std() < until {
        inner.clock.sleep(Duration::from_millis(5)).await;
    }
    let taken = {
        let mut local = lock(inner);
        local.get_mut(child).and_then(|this| Some((this.prepared.take()?.0, this.pid?)))
    };
    let Some((mut entry, pid)) = taken else {
        return Err(ChildError::Start(format!("no copy of {child} prepared here")));
    };
    entry.state = State::Running;
    entry.data.pid = Some(pid);
    let seq = inner.map.set(vec![(child.to_owned(), Some(*entry))]);
    supervise(inner, child.to_owned(), pid);
    let node = inner.me().to_owned();
    if inner.map.held(seq, 2, timeout).await {
        Ok(Started { node, pid })
    } else {
        Err(ChildError::NotHeld { node, pid })
    }
}

/// Stops the new copy of a hot move that was never published.
pub(crate) fn drop_unpublished(inner: &HubInner, child: &str, pid: Pid) {
    let mut local = lock(inner);
    if local.get(child).is_some_and(|this| this.pid == Some(pid) && this.prepared.is_some()) {
        local.remove(child);
        drop(local);
        tracing::debug!(hub = %inner.id, %child, "a hot move's new copy was never published");
        inner.runtime.kill(pid);
    }
}

/// Whether `child`'s exit is on purpose from now on (a hot move freezes it), or not again.
pub(crate) fn mark_stopping(inner: &HubInner, child: &str, stopping: bool) {
    if let Some(this) = lock(inner).get_mut(child) {
        this.stopping = stopping;
    }
}

/// `child` no longer runs here.
pub(crate) fn forget_local(inner: &HubInner, child: &str) {
    lock(inner).remove(child);
}

/// Changes this node's entry for `child` with `change` (which says whether to publish it),
/// if the copy there is still `pid` and not being stopped: checked and published under the
/// lock of this node's children, so no stop falls in between.
pub(crate) fn republish(
    inner: &HubInner,
    child: &str,
    pid: Pid,
    change: impl FnOnce(&mut Entry<ChildData>) -> bool,
) {
    let local = lock(inner);
    if !local.get(child).is_some_and(|this| this.pid == Some(pid) && !this.stopping) {
        return;
    }
    if let Some(mut entry) = inner.own(child).filter(|entry| entry.data.pid == Some(pid))
        && change(&mut entry)
    {
        inner.map.set(vec![(child.to_owned(), Some(entry))]);
    }
    drop(local);
}

/// Claims `child` for a start here; false if it is here already.
fn reserve(inner: &HubInner, child: &str) -> bool {
    let mut local = lock(inner);
    if local.contains_key(child) {
        return false;
    }
    local.insert(child.to_owned(), Local::claim());
    true
}

fn set_pid(inner: &HubInner, child: &str, pid: Pid) {
    if let Some(local) = lock(inner).get_mut(child) {
        local.pid = Some(pid);
    }
}

/// Watches a child of this node: restarts it, or ends it for good, when it exits.
fn supervise(inner: &Arc<HubInner>, child: String, pid: Pid) {
    let watch = inner.runtime.watch(pid);
    let inner = Arc::downgrade(inner);
    tokio::spawn(async move {
        let reason = watch.await;
        if let Some(inner) = inner.upgrade() {
            exited(&inner, child, pid, reason).await;
        }
    });
}

async fn exited(inner: &Arc<HubInner>, child: String, pid: Pid, reason: ExitReason) {
    let Some(entry) = inner.own(&child) else { return };
    {
        let mut local = lock(inner);
        let Some(this) = local.get_mut(&child) else { return };
        if this.pid != Some(pid) || this.stopping {
            return;
        }
        this.pid = None;
    }
    if inner.is_stopped() || !entry.data.spec.restart.restarts_after(&reason) {
        tracing::debug!(hub = %inner.id, %child, %reason, "a hub child ended for good");
        lock(inner).remove(&child);
        end(inner, &child, entry);
        return;
    }
    recover(inner, child, entry).await;
}

/// Restarts this node's `child` (claimed here, with no process): its process exited, or
/// did not start on this node as a failover. Each attempt counts toward its restart
/// intensity, which its entry carries from node to node ([`ChildData::restarts`]); past
/// [`HubConfig::max_restarts`] within [`HubConfig::restart_window`] it ends for good,
/// marked failed. An attempt whose process does not start is followed by the next at once,
/// as a supervisor's are.
async fn recover(inner: &Arc<HubInner>, child: String, mut entry: Entry<ChildData>) {
    let window = u64::try_from(inner.config.restart_window.as_millis()).unwrap_or(u64::MAX);
    loop {
        let now = inner.clock.wall_millis();
        let mut restarts: Vec<u64> = entry
            .data
            .restarts
            .iter()
            .copied()
            .filter(|&at| now.saturating_sub(at) <= window)
            .collect();
        let failed = restarts.len() >= inner.config.max_restarts as usize;
        if !failed {
            restarts.push(now);
        }
        entry.data.restarts = Arc::new(restarts);
        let claimed = lock(inner).get(&child).is_some_and(|this| !this.stopping);
        if !claimed {
            return;
        }
        if failed || inner.is_stopped() {
            tracing::warn!(
                hub = %inner.id, %child, restarts = entry.data.restarts.len(),
                "a hub child failed: past its restart intensity, it ends for good"
            );
            lock(inner).remove(&child);
            entry.data.failed = failed;
            end(inner, &child, entry);
            return;
        }
        if !inner.table(Table::has_quorum) {
            // Not restarted without the quorum: suspended, as the table would have it.
            lock(inner).remove(&child);
            inner.map.set(vec![(child, Some(suspended(entry)))]);
            return;
        }
        let mut restarting = entry.clone();
        restarting.state = State::Restarting;
        restarting.data.pid = None;
        inner.map.set(vec![(child.clone(), Some(restarting))]);
        match spawn(inner, &entry.data.spec).await {
            Ok(new) => {
                let keep = {
                    let mut local = lock(inner);
                    match local.get_mut(&child) {
                        Some(this) if !this.stopping => {
                            this.pid = Some(new);
                            true
                        }
                        _ => false,
                    }
                };
                if !keep {
                    inner.runtime.kill(new);
                    return;
                }
                // For the node's figures (`Runtime::stats`): a child started again here.
                inner.runtime.note_restart();
                let mut running = entry;
                running.state = up_state(inner, &child, &running);
                running.data.pid = Some(new);
                inner.map.set(vec![(child.clone(), Some(running))]);
                supervise(inner, child, new);
                return;
            }
            Err(error) => {
                tracing::debug!(hub = %inner.id, %child, %error, "a hub child did not restart");
            }
        }
    }
}

/// How a copy of `child` just started here is published: [`State::Syncing`] when it has
/// state to take from another copy that runs with it (several copies, active/passive, a
/// [`super::Handover`]), else [`State::Running`].
fn up_state(inner: &HubInner, child: &str, entry: &Entry<ChildData>) -> State {
    let config = &inner.config;
    let stateful = config.table.replicas > 1
        && config.table.redundancy == Redundancy::ActivePassive
        && config.handovers.knows(&entry.data.spec.factory);
    let me = inner.me();
    let beside = stateful
        && inner.table(|table| {
            table.child(child).is_some_and(|known| {
                known
                    .holders
                    .iter()
                    .any(|(node, entry)| node != me && entry.state == State::Running)
            })
        });
    if beside { State::Syncing } else { State::Running }
}

/// Publishes a tombstone for `child`, which this node ran.
fn end(inner: &HubInner, child: &str, mut entry: Entry<ChildData>) {
    entry.version += 1;
    entry.state = State::Ended;
    entry.data.pid = None;
    inner.map.set(vec![(child.to_owned(), Some(entry))]);
}

/// Stops this node's copy of `child` with `reason`, giving it up to its spec's shutdown time
/// (at most `cap`). Returns whether it exited.
async fn stop_local(inner: &HubInner, child: &str, reason: ExitReason, cap: Duration) -> bool {
    let pid = {
        let mut local = lock(inner);
        let Some(this) = local.get_mut(child) else { return true };
        this.stopping = true;
        this.pid
    };
    let exited = match pid {
        Some(pid) => {
            let shutdown = inner.own(child).map_or(Shutdown::default(), |e| e.data.spec.shutdown);
            stop_process(inner, pid, reason, shutdown, cap).await
        }
        None => true,
    };
    if exited {
        lock(inner).remove(child);
    }
    exited
}

async fn stop_process(
    inner: &HubInner,
    pid: Pid,
    reason: ExitReason,
    shutdown: Shutdown,
    cap: Duration,
) -> bool {
    let watch = inner.runtime.watch(pid);
    tokio::pin!(watch);
    let grace = match shutdown {
        Shutdown::BrutalKill => {
            inner.runtime.kill(pid);
            None
        }
        Shutdown::Timeout(grace) => {
            inner.runtime.exit(pid, reason);
            Some(grace)
        }
        Shutdown::Infinity => {
            inner.runtime.exit(pid, reason);
            None
        }
    };
    let start = inner.clock.now();
    if let Some(grace) = grace.filter(|grace| *grace < cap)
        && inner.clock.timeout(grace, &mut watch).await.is_err()
    {
        inner.runtime.kill(pid);
    }
    let left = cap.saturating_sub(inner.clock.since(start));
    inner.clock.timeout(left, &mut watch).await.is_ok()
}

/// Terminates children of this node (a [`Request::Terminate`]).
async fn terminate_here(
    inner: &Arc<HubInner>,
    batch: Vec<String>,
    timeout: Duration,
) -> StopResults {
    let mut results = Vec::new();
    let mut ended = Vec::new();
    for child in batch {
        let state = lock(inner).get(&child).map(|local| local.pid.is_some());
        let result = match state {
            None => Err(TerminateError::NotFound(child.clone())),
            Some(false) => Err(TerminateError::Restarting(child.clone())),
            Some(true) => {
                if stop_local(inner, &child, ExitReason::Shutdown, timeout).await {
                    match inner.own(&child) {
                        Some(mut entry) => {
                            entry.version += 1;
                            entry.state = State::Ended;
                            entry.data.pid = None;
                            ended.push((child.clone(), Some(entry)));
                            Ok(())
                        }
                        // Stopped for another reason meanwhile (a conflict's loser, a move)
                        // and its entry gone: no tombstone here; the caller asks the copy
                        // that runs on.
                        None => Err(TerminateError::NotFound(child.clone())),
                    }
                } else {
                    // Given up: it stays under supervision (if it exits later, as it was
                    // asked to, its restart policy applies).
                    if let Some(this) = lock(inner).get_mut(&child) {
                        this.stopping = false;
                    }
                    Err(TerminateError::Running(child.clone()))
                }
            }
        };
        results.push((child, result));
    }
    if !ended.is_empty() {
        inner.map.set(ended);
    }
    results
}

/// Moves a child of this node to `to`, pinned there (a [`Request::Redistribute`]).
async fn redistribute_here(
    inner: &Arc<HubInner>,
    child: &str,
    to: &str,
    timeout: Duration,
) -> Result<(), RedistError> {
    if lock(inner).get(child).is_none_or(|local| local.pid.is_none()) {
        return Err(RedistError::NotFound(child.to_owned()));
    }
    if to == inner.me() {
        let Some(mut entry) = inner.own(child) else {
            return Err(RedistError::NotFound(child.to_owned()));
        };
        entry.placement = Placement::Nodes(vec![to.to_owned()]);
        inner.map.set(vec![(child.to_owned(), Some(entry))]);
        return Ok(());
    }
    let pin = Placement::Nodes(vec![to.to_owned()]);
    let deadline = inner.clock.now().into_std() + timeout;
    let hot = vec![child.to_owned()];
    let cold = match inner.config.migration {
        Migration::Cold => hot,
        Migration::Hot { retention } => {
            match migrate::move_hot(inner, child, to, Some(pin.clone()), retention, deadline).await
            {
                Ok(true) => return Ok(()),
                Ok(false) => hot,
                Err(error) => return Err(RedistError::Start(error)),
            }
        }
    };
    let mut results = move_out(inner, cold, to, Some(pin), deadline).await;
    match results.pop() {
        Some((_, Ok(_))) => Ok(()),
        Some((_, Err(error))) => Err(RedistError::Start(error)),
        None => Err(RedistError::NotFound(child.to_owned())),
    }
}

/// Moves children of this node to `to` hot, as [`super::HubConfig::migration`] says, one at
/// a time; returns those to move cold (no hot migration, or no [`super::Handover`]). One
/// whose hot move failed before it froze runs on here, and the move waits a while.
async fn move_hot(
    inner: &Arc<HubInner>,
    children: Vec<String>,
    to: &str,
    pin: Option<Placement>,
    deadline: Instant,
) -> Vec<String> {
    let Migration::Hot { retention } = inner.config.migration else { return children };
    let mut cold = Vec::new();
    for child in children {
        match migrate::move_hot(inner, &child, to, pin.clone(), retention, deadline).await {
            Ok(true) => {}
            Ok(false) => cold.push(child),
            Err(error) => {
                tracing::debug!(hub = %inner.id, %child, %to, %error, "a hot move failed");
                let now = inner.clock.now().into_std();
                inner.table_mut(|table| table.retry_later(&child, now));
            }
        }
    }
    cold
}

/// Moves children of this node to `to`, cold: each is published as moving, stopped, started
/// there, then its entry here goes. One that does not start there starts here again.
async fn move_out(
    inner: &Arc<HubInner>,
    children: Vec<String>,
    to: &str,
    pin: Option<Placement>,
    deadline: Instant,
) -> StartResults {
    let mut moving = Vec::new();
    for child in children {
        let Some(mut entry) = inner.own(&child) else { continue };
        if entry.state != State::Running {
            continue;
        }
        if let Some(pin) = &pin {
            entry.placement = pin.clone();
        }
        entry.state = State::Moving { to: to.to_owned() };
        entry.data.pid = None;
        moving.push((child, entry));
    }
    if moving.is_empty() {
        return Vec::new();
    }
    Counters::add(&inner.counters.moves, moving.len() as u64);
    inner.map.set(moving.iter().map(|(c, e)| (c.clone(), Some(e.clone()))).collect());
    let cap = deadline.saturating_duration_since(inner.clock.now().into_std());
    for (child, _) in &moving {
        stop_local(inner, child, ExitReason::Custom(MOVED.to_owned()), cap).await;
    }
    let handed: Vec<(String, Entry<ChildData>)> = moving
        .iter()
        .map(|(child, entry)| {
            let mut entry = entry.clone();
            entry.state = State::Running;
            (child.clone(), entry)
        })
        .collect();
    let ids: Vec<String> = handed.iter().map(|(child, _)| child.clone()).collect();
    let left = deadline.saturating_duration_since(inner.clock.now().into_std());
    let request = Request::Start {
        children: handed,
        mode: Mode::Adopt { from: inner.me().to_owned() },
        hops: 0,
        timeout_ms: millis(left),
    };
    let results = match call(inner, to, &request, left).await {
        Ok(Reply::Started(results)) => results,
        Ok(_) => unreachable_start(ids, to, "the hub is stopped there"),
        Err(error) => unreachable_start(ids, to, &error),
    };
    let mut gone = Vec::new();
    let mut back = Vec::new();
    for (child, result) in &results {
        match result {
            // It runs here again (started anew by another start meanwhile): it stays.
            Ok(Started { node, .. }) if node == inner.me() => {}
            Ok(_) | Err(ChildError::NotHeld { .. } | ChildError::Terminated(_)) => {
                gone.push((child.clone(), None));
            }
            Err(_) => back.push(child.clone()),
        }
    }
    inner.map.set(gone);
    for child in back {
        restart_here(inner, &child).await;
    }
    results
}

/// A move that failed: the child starts here again, and the move waits a while.
async fn restart_here(inner: &Arc<HubInner>, child: &str) {
    let Some(mut entry) = inner.own(child) else { return };
    let now = inner.clock.now().into_std();
    if reserve(inner, child) {
        match spawn(inner, &entry.data.spec).await {
            Ok(pid) => {
                set_pid(inner, child, pid);
                entry.state = State::Running;
                entry.data.pid = Some(pid);
                inner.map.set(vec![(child.to_owned(), Some(entry))]);
                supervise(inner, child.to_owned(), pid);
            }
            Err(error) => {
                tracing::warn!(hub = %inner.id, %child, %error, "a child that did not move did not restart");
                lock(inner).remove(child);
                end(inner, child, entry);
            }
        }
    }
    inner.table_mut(|table| table.retry_later(child, now));
}

/// Stops every child of this node (the hub stops here), killing one still running after
/// five seconds.
pub(crate) async fn stop_all(inner: &Arc<HubInner>) {
    let children: Vec<String> = lock(inner).keys().cloned().collect();
    let single = inner.config.table.replicas == 1;
    for child in children {
        if !stop_local(inner, &child, ExitReason::Shutdown, Duration::from_secs(5)).await {
            // Still running after five seconds: the hub stops here, so it is killed.
            let pid = lock(inner).remove(&child).and_then(|local| local.pid);
            if let Some(pid) = pid {
                inner.runtime.kill(pid);
            }
        }
        // A temporary child is not started again elsewhere: it ends with its node's hub.
        if let Some(entry) = inner.own(&child).filter(|entry| single && temporary(entry)) {
            end(inner, &child, entry);
        }
    }
}

/// Whether `entry` is a temporary child's: as under a local supervisor, it is never started
/// again, here or elsewhere. With one copy per child, it stays on the node it started on
/// (pinned there, so a join does not move it), and ends when that node is lost or its hub
/// stops (a tombstone, so no node starts it again); it is not handed over.
fn temporary(entry: &Entry<ChildData>) -> bool {
    entry.data.spec.restart == Restart::Temporary
}

/// Serves the hub's RPC on this node.
pub(crate) fn serve(inner: &Arc<HubInner>) {
    let weak = Arc::downgrade(inner);
    inner.node.register_rpc(&inner.rpc, move |request: Request| {
        let inner = weak.upgrade();
        async move {
            // A hub that is stopping still finishes the hot moves into it (it then hands
            // their children on, as its own).
            let finishing = matches!(
                request,
                Request::Restore { .. } | Request::Abandon { .. } | Request::Publish { .. }
            );
            let Some(inner) = inner.filter(|inner| finishing || !inner.is_stopped()) else {
                return Reply::Stopped;
            };
            match request {
                Request::Start { children, mode, hops, timeout_ms } => {
                    let deadline = inner.clock.now().into_std() + Duration::from_millis(timeout_ms);
                    Reply::Started(start_owned(&inner, children, mode, hops, deadline).await)
                }
                Request::Terminate { children, timeout_ms } => {
                    let timeout = Duration::from_millis(timeout_ms);
                    Reply::Terminated(terminate_here(&inner, children, timeout).await)
                }
                Request::Redistribute { child, to, timeout_ms } => {
                    let timeout = Duration::from_millis(timeout_ms);
                    Reply::Redistributed(redistribute_here(&inner, &child, &to, timeout).await)
                }
                Request::Prepare { child, entry, from, timeout_ms } => {
                    let deadline = inner.clock.now().into_std() + Duration::from_millis(timeout_ms);
                    Reply::Prepared(migrate::prepare(&inner, child, entry, from, deadline).await)
                }
                Request::Restore { child, state } => {
                    let restored = handover::restore_prepared(&inner, &child, state).await;
                    Reply::Restored(usize::from(restored))
                }
                Request::Abandon { child } => {
                    handover::close_restore(&inner, &child).await;
                    Reply::Restored(0)
                }
                Request::Publish { child, from, timeout_ms } => {
                    let timeout = Duration::from_millis(timeout_ms);
                    Reply::Published(publish_prepared(&inner, &child, &from, timeout).await)
                }
                Request::States { states } => {
                    let mut restored = 0;
                    for (child, state) in states {
                        restored += usize::from(handover::restore(&inner, &child, state).await);
                    }
                    Reply::Restored(restored)
                }
            }
        }
    });
}

/// Carries out what the table decides, whenever something changed or a timer is due.
pub(crate) async fn reconcile_task(inner: Arc<HubInner>) {
    let mut stop = inner.stop.subscribe();
    let mut quorum = inner.table(Table::has_quorum);
    loop {
        if *stop.borrow() {
            return;
        }
        let now = inner.clock.now().into_std();
        let (actions, next, now_quorum) = inner
            .table_mut(|table| (table.reconcile(now), table.poll_timeout(), table.has_quorum()));
        if now_quorum != quorum {
            quorum = now_quorum;
            let event = if quorum { HubEvent::QuorumRegained } else { HubEvent::QuorumLost };
            tracing::info!(hub = %inner.id, ?event, "the hub's quorum changed");
            let _ = inner.events.send(event);
        }
        if !actions.is_empty() {
            carry_out(&inner, actions);
        }
        let tick = inner.clock.now().into_std() + inner.config.tick;
        // A deadline already past was seen by this reconcile (an orphan due that waits for
        // `adopt_after`, or whose start is in flight): wait for the tick rather than spin
        // (a busy core in real time, a livelock on a paused clock).
        let wake = next.filter(|&next| next > now).map_or(tick, |next| next.min(tick));
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            () = inner.wake.notified() => {}
            () = inner.clock.sleep_until(wake.into()) => {}
        }
    }
}

fn carry_out(inner: &Arc<HubInner>, actions: Vec<Action<ChildData>>) {
    let single = inner.config.table.replicas == 1;
    let mut starts = Vec::new();
    let mut moves: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut publish = Vec::new();
    for action in actions {
        match action {
            // A temporary child is not started again when its node is lost: it ends.
            Action::Start { child, entry } if temporary(&entry) && single => {
                end(inner, &child, entry);
            }
            Action::Start { child, entry } => starts.push((child, entry)),
            Action::Move { child, to } => moves.entry(to).or_default().push(child),
            Action::Keep { child, entry } => publish.push((child, Some(entry))),
            Action::Place { child, placement } => match inner.own(&child) {
                Some(mut entry) => {
                    entry.placement = placement;
                    publish.push((child, Some(entry)));
                }
                None => inner.table_mut(|table| table.done([child.as_str()])),
            },
            Action::Forget { child } => {
                let gone = |entry: Entry<ChildData>| {
                    matches!(entry.state, State::Ended | State::Suspended)
                };
                if inner.own(&child).is_some_and(gone) {
                    publish.push((child, None));
                }
            }
            Action::Stop { child, reason } => {
                let inner = inner.clone();
                tokio::spawn(async move { resolve(&inner, child, reason).await });
            }
            Action::Role { child, role } => {
                if inner.subscribed.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = inner.events.send(HubEvent::Role { child: child.clone(), role });
                }
                let inner = inner.clone();
                tokio::spawn(async move { handover::tell_role(&inner, &child, role).await });
            }
            Action::Adopt { to, children } => {
                let (ended, children): (Vec<_>, Vec<_>) =
                    children.into_iter().partition(|(_, entry)| temporary(entry) && single);
                for (child, entry) in ended {
                    end(inner, &child, entry);
                }
                if children.is_empty() {
                    continue;
                }
                let inner = inner.clone();
                tokio::spawn(async move {
                    let left = inner.config.table.retry_after;
                    let request = Request::Start {
                        children,
                        mode: Mode::Adopt { from: inner.me().to_owned() },
                        hops: 0,
                        timeout_ms: millis(left),
                    };
                    if let Err(error) = call(&inner, &to, &request, left).await {
                        tracing::debug!(hub = %inner.id, %to, %error, "orphans not handed over");
                    }
                });
            }
        }
    }
    if !publish.is_empty() {
        inner.map.set(publish);
    }
    if !starts.is_empty() {
        let inner = inner.clone();
        tokio::spawn(async move {
            let deadline = inner.clock.now().into_std() + inner.config.table.retry_after;
            let mode = if inner.config.table.replicas > 1 {
                Mode::Copy
            } else {
                Mode::Adopt { from: inner.me().to_owned() }
            };
            let results = start_here(&inner, starts, mode, deadline).await;
            for (child, result) in results {
                if let Err(error) = result {
                    tracing::debug!(hub = %inner.id, %child, %error, "a failover start failed");
                }
            }
        });
    }
    for (to, children) in moves {
        let inner = inner.clone();
        tokio::spawn(async move {
            let deadline = inner.clock.now().into_std() + inner.config.table.retry_after;
            let cold = move_hot(&inner, children, &to, None, deadline).await;
            move_out(&inner, cold, &to, None, deadline).await;
        });
    }
}

/// Stops this node's copy of a child that lost a conflict or was superseded.
async fn resolve(inner: &Arc<HubInner>, child: String, reason: StopReason) {
    let pid = lock(inner).get(&child).and_then(|local| local.pid);
    let exit = match &reason {
        StopReason::Conflict { winner } => {
            if let (Some(hook), Some(loser)) = (&inner.config.on_conflict, pid) {
                let winner_pid =
                    inner.table(|table| table.child(&child)?.holders.get(winner)?.data.pid);
                let conflict =
                    Conflict { child: child.clone(), loser, winner: winner.clone(), winner_pid };
                let _ = inner.clock.timeout(inner.config.conflict_timeout, hook(conflict)).await;
            }
            ExitReason::Custom(CONFLICT.to_owned())
        }
        StopReason::Superseded { .. } => ExitReason::Shutdown,
        StopReason::QuorumLost => ExitReason::Custom(QUORUM_LOST.to_owned()),
        StopReason::Surplus => ExitReason::Custom(MOVED.to_owned()),
    };
    tracing::debug!(hub = %inner.id, %child, ?reason, "stopping a copy");
    stop_local(inner, &child, exit, Duration::from_secs(5)).await;
    let own = inner.own(&child);
    if own.as_ref().is_some_and(|entry| entry.state == State::Ended) {
        // Terminated while it stopped: the tombstone stays, to end the other copies too.
        return;
    }
    let kept = match reason {
        StopReason::QuorumLost => own.map(suspended),
        _ => None,
    };
    inner.map.set(vec![(child, kept)]);
}

/// `entry`, suspended: stopped until this node has its quorum again.
fn suspended(mut entry: Entry<ChildData>) -> Entry<ChildData> {
    entry.state = State::Suspended;
    entry.data.pid = None;
    entry
}

/// Whether this node knows `child`, not terminated.
fn live(inner: &HubInner, child: &str) -> bool {
    inner.table(|table| table.child(child).is_some_and(|known| !known.is_ended()))
}

/// The node running (or restarting) `child`, as this node sees it, other than those in
/// `asked`: the serving copy's first ([`Table::active`]: while two copies of a conflict run,
/// the one that wins).
fn holder(inner: &HubInner, child: &str, asked: &[&str]) -> Result<String, TerminateError> {
    inner.table(|table| {
        let known = table.child(child).filter(|known| !known.is_ended());
        let Some(known) = known else { return Err(TerminateError::NotFound(child.to_owned())) };
        let serving = table.active(child).filter(|node| !asked.contains(node));
        let node = serving.or_else(|| known.running().find(|node| !asked.contains(node)));
        node.map(str::to_owned).ok_or_else(|| TerminateError::NotFound(child.to_owned()))
    })
}

/// Sends snapshots of this node's active copies to `node`, for its passive copies; whether
/// it answered.
pub(crate) async fn send_states(
    inner: &HubInner,
    node: &str,
    states: Vec<(String, serde_bytes::ByteBuf)>,
) -> bool {
    let request = Request::States { states };
    match call(inner, node, &request, inner.config.stream_every.max(Duration::from_secs(1))).await {
        Ok(Reply::Restored(_)) => true,
        Ok(_) => false,
        Err(error) => {
            tracing::debug!(hub = %inner.id, %node, %error, "states not streamed");
            false
        }
    }
}

const TIMED_OUT: &str = "timed out";

/// How long the new owner of a hot move waits, at most, to see the mover's copy as moving.
const PUBLISH_WAIT: Duration = Duration::from_secs(2);

/// The hub's RPC to `node`; the error as text ([`TIMED_OUT`] for a timeout).
pub(crate) async fn call(
    inner: &HubInner,
    node: &str,
    request: &Request,
    timeout: Duration,
) -> Result<Reply, String> {
    match inner.node.rpc(node, &inner.rpc, request, timeout).await {
        Ok(reply) => Ok(reply),
        Err(shoal_transport::RemoteError::Timeout) => Err(TIMED_OUT.to_owned()),
        Err(error) => Err(error.to_string()),
    }
}

fn unreachable_start(children: Vec<String>, node: &str, error: &str) -> StartResults {
    let error = ChildError::Unreachable { node: node.to_owned(), error: error.to_owned() };
    children.into_iter().map(|child| (child, Err(error.clone()))).collect()
}

fn unreachable_all(children: Vec<String>, node: &str, error: &str) -> StopResults {
    let error = TerminateError::Unreachable { node: node.to_owned(), error: error.to_owned() };
    children.into_iter().map(|child| (child, Err(error.clone()))).collect()
}

/// `results` in the order of `order`.
fn in_order<T>(order: &[String], results: Vec<(String, T)>) -> Vec<(String, T)> {
    let mut by_child: BTreeMap<String, T> = results.into_iter().collect();
    order.iter().filter_map(|child| by_child.remove(child).map(|r| (child.clone(), r))).collect()
}

pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
