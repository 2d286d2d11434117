//! Children with state: the [`Handover`] behaviour callbacks, the [`Handovers`] a hub knows
//! them by, the roles of replicated copies, and the stream of the active copy's state to its
//! passive copies.
//!
//! **Roles.** Under [`Redundancy::ActivePassive`](crate::core::Redundancy) the table decides
//! each copy's [`Role`] and says when it changes ([`Action::Role`](crate::core::Action)); the
//! hub tells the process through [`Handover::role`], run inside it between two messages
//! ([`shoal_process::Runtime::sys`]). A copy starts without a role and is told it at once.
//!
//! **State.** Every [`HubConfig::stream_every`](super::HubConfig::stream_every), each active
//! copy of this node whose behaviour is registered ([`Handovers::with`]) is asked for a
//! [`Handover::snapshot`]; when the snapshot differs from the last one sent, or its passive
//! copies changed, it is sent to the nodes of the passive copies, which hand it to theirs
//! ([`Handover::restore`]). So a passive copy is at most `stream_every`, plus the time it
//! takes to snapshot, send and restore, behind the active one when it is promoted (the
//! staleness bound); what the active copy did after its last snapshot is lost with its node.
//! The sends to each node run on their own: a node that is slow to answer (or cut off, not
//! yet seen down) is skipped until its send ends, and holds back only its own copies.
//!
//! **A copy that has no state yet.** A copy started or restarted beside a copy that runs
//! with the state is published as [`State::Syncing`]: the table makes it active only when no
//! copy with the state runs, and once the stream has given it the state (or it was made active
//! anyway: nobody had the state to give) it is published as running. So a node that comes
//! back as a child's first owner does not serve it from nothing, and does not stream nothing
//! over the copy that served meanwhile.
//! Snapshots are whole states, not deltas: keep the state of a replicated child small, or
//! the stream large enough.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;
use shoal_process::{Context, ExitReason, Forwarding, Pid, Process, Runtime, codec};

use super::hub::HubInner;
use crate::core::{Role, State};

/// Runs `work` inside the process `pid` ([`Runtime::sys`]); the error in words.
async fn in_process<P: Process, R: Send + 'static>(
    runtime: &Runtime,
    pid: Pid,
    work: impl FnOnce(&mut P, &mut Context<P>) -> R + Send + 'static,
    timeout: Duration,
) -> Result<R, String> {
    runtime.sys(pid, work, timeout).await.map_err(|error| error.to_string())
}

/// A hub child whose state can be handed over: to a passive copy, to the copy that replaces
/// it on another node. The callbacks run inside the process, between two messages.
pub trait Handover: Process {
    /// The state handed over, encoded with msgpack on the way.
    type State: Serialize + DeserializeOwned + Send + 'static;

    /// A snapshot of this copy's state.
    fn snapshot(&self) -> Self::State;

    /// Takes over `state`, a snapshot of another copy of the same child.
    fn restore(&mut self, state: Self::State, ctx: &mut Context<Self>);

    /// This copy's role changed (active/passive replication); nothing by default.
    fn role(&mut self, role: Role, ctx: &mut Context<Self>) {
        let _ = (role, ctx);
    }
}

/// A future of the erased callbacks.
type Pending<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// A [`Handover`] behaviour with its type erased, as the hub keeps it by factory name.
pub(crate) trait Erased: Send + Sync + 'static {
    fn snapshot<'a>(
        &self,
        runtime: &'a Runtime,
        pid: Pid,
        timeout: Duration,
    ) -> Pending<'a, Vec<u8>>;
    fn restore<'a>(
        &self,
        runtime: &'a Runtime,
        pid: Pid,
        state: Vec<u8>,
        timeout: Duration,
    ) -> Pending<'a, ()>;
    fn role<'a>(
        &self,
        runtime: &'a Runtime,
        pid: Pid,
        role: Role,
        timeout: Duration,
    ) -> Pending<'a, ()>;
    fn hand_off<'a>(
        &self,
        runtime: &'a Runtime,
        pid: Pid,
        to: Pid,
        reason: ExitReason,
        retention: Duration,
        timeout: Duration,
    ) -> Pending<'a, (Vec<u8>, Forwarding)>;
}

struct Typed<P>(PhantomData<fn() -> P>);

impl<P: Handover> Erased for Typed<P> {
    fn snapshot<'a>(
        &self,
        runtime: &'a Runtime,
        pid: Pid,
        timeout: Duration,
    ) -> Pending<'a, Vec<u8>> {
        Box::pin(async move {
            let snapshot = |process: &mut P, _: &mut Context<P>| codec::encode(&process.snapshot());
            let state = in_process(runtime, pid, snapshot, timeout).await?;
            state.map(|bytes| bytes.to_vec()).map_err(|error| error.to_string())
        })
    }

    fn restore<'a>(
        &self,
        runtime: &'a Runtime,
        pid: Pid,
        state: Vec<u8>,
        timeout: Duration,
    ) -> Pending<'a, ()> {
        Box::pin(async move {
            let state: P::State = codec::decode(&state).map_err(|error| error.to_string())?;
            let restore = move |process: &mut P, ctx: &mut Context<P>| process.restore(state, ctx);
            in_process(runtime, pid, restore, timeout).await
        })
    }

    fn role<'a>(
        &self,
        runtime: &'a Runtime,
        pid: Pid,
        role: Role,
        timeout: Duration,
    ) -> Pending<'a, ()> {
        let tell = move |process: &mut P, ctx: &mut Context<P>| process.role(role, ctx);
        Box::pin(in_process(runtime, pid, tell, timeout))
    }

    fn hand_off<'a>(
        &self,
        runtime: &'a Runtime,
        pid: Pid,
        to: Pid,
        reason: ExitReason,
        retention: Duration,
        timeout: Duration,
    ) -> Pending<'a, (Vec<u8>, Forwarding)> {
        Box::pin(async move {
            let snapshot = |process: &mut P, _: &mut Context<P>| codec::encode(&process.snapshot());
            let (state, forwarding) = runtime
                .hand_off(pid, to, snapshot, reason, retention, timeout)
                .await
                .map_err(|error| error.to_string())?;
            let state = state.map_err(|error| error.to_string())?;
            Ok((state.to_vec(), forwarding))
        })
    }
}

/// The behaviours of a hub's children that have state to hand over, by the factory name
/// they are started from (register the factory on every node's runtime as for any child).
///
/// ```
/// use shoal_hub::{Handover, Handovers, core::Role};
/// use shoal_process::{Context, Process};
///
/// struct Counter(u64);
/// impl Process for Counter {
///     type Message = u64;
///     type Call = ();
///     type Reply = u64;
///     async fn handle_cast(&mut self, by: u64, _: &mut Context<Self>) {
///         self.0 += by;
///     }
/// }
/// impl Handover for Counter {
///     type State = u64;
///     fn snapshot(&self) -> u64 {
///         self.0
///     }
///     fn restore(&mut self, state: u64, _: &mut Context<Self>) {
///         self.0 = state;
///     }
/// }
/// let handovers = Handovers::default().with::<Counter>("counter");
/// assert!(handovers.knows("counter"));
/// ```
#[derive(Clone, Default)]
pub struct Handovers(BTreeMap<String, Arc<dyn Erased>>);

impl Handovers {
    /// With the children started from factory `factory` handled as `P`s.
    #[must_use]
    pub fn with<P: Handover>(mut self, factory: &str) -> Self {
        self.0.insert(factory.to_owned(), Arc::new(Typed::<P>(PhantomData)));
        self
    }

    /// Whether children of factory `factory` have state to hand over.
    pub fn knows(&self, factory: &str) -> bool {
        self.0.contains_key(factory)
    }

    pub(crate) fn get(&self, factory: &str) -> Option<&Arc<dyn Erased>> {
        self.0.get(factory)
    }
}

impl fmt::Debug for Handovers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// How long a callback may wait for its process (a process busy with a long message).
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Tells this node's copy of `child` its role (an [`Action::Role`](crate::core::Action)).
pub(crate) async fn tell_role(inner: &HubInner, child: &str, role: Role) {
    let Some((pid, factory)) = local_copy(inner, child) else { return };
    let Some(handover) = inner.config.handovers.get(&factory) else {
        tracing::debug!(hub = %inner.id, %child, %factory, "a role for a child with no Handover");
        return;
    };
    match handover.role(&inner.runtime, pid, role, CALLBACK_TIMEOUT).await {
        // Active while waiting for the state: no copy has it to give.
        Ok(()) if role == Role::Active => synced(inner, child, pid),
        Ok(()) => {}
        Err(error) => tracing::debug!(hub = %inner.id, %child, ?role, %error, "a role not told"),
    }
}

/// Hands `state`, streamed by the active copy, to this node's passive copy of `child`.
pub(crate) async fn restore(inner: &HubInner, child: &str, state: ByteBuf) -> bool {
    let me = inner.me();
    if inner.table(|table| table.active(child) == Some(me)) {
        return false;
    }
    let Some((pid, factory)) = local_copy(inner, child) else { return false };
    let Some(handover) = inner.config.handovers.get(&factory) else { return false };
    match handover.restore(&inner.runtime, pid, state.into_vec(), CALLBACK_TIMEOUT).await {
        Ok(()) => {
            synced(inner, child, pid);
            true
        }
        Err(error) => {
            tracing::debug!(hub = %inner.id, %child, %error, "a streamed state not restored");
            false
        }
    }
}

/// Hands `state`, a hot move's snapshot of the old copy, to the new copy prepared here.
///
/// Once only, and not after the mover gave up on it ([`close_restore`]): the mover starts
/// forwarding the old copy's mail only once the restore is answered or closed, so a restore
/// that came late would land after forwarded letters and undo them.
pub(crate) async fn restore_prepared(inner: &HubInner, child: &str, state: ByteBuf) -> bool {
    let Some(window) = super::children::restore_window(inner, child) else { return false };
    let mut closed = window.lock().await;
    if *closed {
        return false;
    }
    *closed = true;
    let Some((pid, factory)) = super::children::prepared(inner, child) else { return false };
    super::children::mark_frozen(inner, child, pid);
    let Some(handover) = inner.config.handovers.get(&factory) else { return false };
    match handover.restore(&inner.runtime, pid, state.into_vec(), CALLBACK_TIMEOUT).await {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(hub = %inner.id, %child, %error, "a handed-over state not restored");
            false
        }
    }
}

/// The mover of a hot move gave up on handing over the old copy's state: a restore under way
/// finishes first, and one that comes later is ignored.
pub(crate) async fn close_restore(inner: &HubInner, child: &str) {
    if let Some(window) = super::children::restore_window(inner, child) {
        *window.lock().await = true;
    }
}

/// This node's copy `pid` of `child` has the child's state now: published as running (no
/// longer [`State::Syncing`]), so it may be made active.
fn synced(inner: &HubInner, child: &str, pid: Pid) {
    super::children::republish(inner, child, pid, |entry| {
        let syncing = entry.state == State::Syncing;
        entry.state = State::Running;
        syncing
    });
}

/// This node's running copy of `child`: its pid and factory.
fn local_copy(inner: &HubInner, child: &str) -> Option<(Pid, String)> {
    let entry = inner.own(child).filter(|entry| entry.state.is_up())?;
    Some((entry.data.pid?, entry.data.spec.factory.clone()))
}

/// The stream of this node's active copies' state (see the module docs).
#[derive(Default)]
struct Stream {
    /// What each passive copy was last sent: by child and node, the snapshot's hash and the
    /// copy's pid (a copy restarted since is sent the state again).
    sent: HashMap<(String, String), (u64, Option<Pid>)>,
    /// Shared with the sends under way.
    sends: Arc<std::sync::Mutex<Sends>>,
}

/// The sends under way, and what they failed to deliver.
#[derive(Default)]
struct Sends {
    /// Nodes a send to is under way: skipped until it ends, so a slow or unreachable node
    /// holds back only its own copies.
    busy: BTreeSet<String>,
    /// Child and node of the states not delivered: sent again at the next round.
    failed: Vec<(String, String)>,
}

/// An active copy here, its pid and factory, and its passive copies: node and pid.
type Active = (String, Pid, String, Vec<(String, Option<Pid>)>);

/// Streams the state of this node's active copies to their passive copies (see the module
/// docs), until the hub stops.
pub(crate) async fn stream_task(inner: Arc<HubInner>) {
    let mut stop = inner.stop.subscribe();
    let mut stream = Stream::default();
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            () = inner.clock.sleep(inner.config.stream_every) => {}
        }
        stream.round(&inner, false).await;
    }
}

/// Streams the state of every active copy here to its passive copies, changed or not, and
/// waits for the sends (the hub stops here).
pub(crate) async fn stream_last(inner: &Arc<HubInner>) {
    Stream::default().round(inner, true).await;
}

impl Stream {
    async fn round(&mut self, inner: &Arc<HubInner>, wait: bool) {
        let busy = {
            let mut sends = self.sends.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for key in sends.failed.drain(..) {
                self.sent.remove(&key);
            }
            sends.busy.clone()
        };
        let active = active_here(inner);
        self.sent.retain(|(child, _), _| active.iter().any(|(active, ..)| active == child));
        let mut by_node: BTreeMap<String, Vec<(String, ByteBuf)>> = BTreeMap::new();
        for (child, pid, factory, passive) in active {
            let due: Vec<&(String, Option<Pid>)> =
                passive.iter().filter(|(node, _)| !busy.contains(node)).collect();
            if due.is_empty() {
                continue;
            }
            let Some(handover) = inner.config.handovers.get(&factory) else { continue };
            let state = match handover.snapshot(&inner.runtime, pid, CALLBACK_TIMEOUT).await {
                Ok(state) => state,
                Err(error) => {
                    tracing::debug!(hub = %inner.id, %child, %error, "no snapshot to stream");
                    continue;
                }
            };
            let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(&state);
            for (node, copy) in due {
                let key = (child.clone(), node.clone());
                if self.sent.get(&key) == Some(&(hash, *copy)) {
                    continue;
                }
                self.sent.insert(key, (hash, *copy));
                let states = by_node.entry(node.clone()).or_default();
                states.push((child.clone(), ByteBuf::from(state.clone())));
            }
        }
        let mut sends = tokio::task::JoinSet::new();
        for (node, states) in by_node {
            let inner = inner.clone();
            let shared = self.sends.clone();
            lock_sends(&shared).busy.insert(node.clone());
            sends.spawn(async move {
                let children: Vec<String> = states.iter().map(|(child, _)| child.clone()).collect();
                let sent = super::children::send_states(&inner, &node, states).await;
                let mut sends = lock_sends(&shared);
                sends.busy.remove(&node);
                if !sent {
                    sends.failed.extend(children.into_iter().map(|child| (child, node.clone())));
                }
            });
        }
        if wait {
            while sends.join_next().await.is_some() {}
        } else {
            sends.detach_all();
        }
    }
}

fn lock_sends(sends: &std::sync::Mutex<Sends>) -> std::sync::MutexGuard<'_, Sends> {
    sends.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The active copies here of registered behaviours, with their passive copies.
fn active_here(inner: &HubInner) -> Vec<Active> {
    let me = inner.me();
    inner.map.with(|state| {
        let table = &state.observer.table;
        state
            .replica
            .own()
            .iter()
            .filter(|(_, entry)| entry.state.is_up())
            .filter(|(_, entry)| inner.config.handovers.knows(&entry.data.spec.factory))
            .filter(|(child, _)| table.active(child) == Some(me))
            .filter_map(|(child, entry)| {
                let known = table.child(child)?;
                let passive = known
                    .running()
                    .filter(|node| *node != me)
                    .map(|node| {
                        (node.to_owned(), known.holders.get(node).and_then(|entry| entry.data.pid))
                    })
                    .collect();
                let pid = entry.data.pid?;
                Some((child.clone(), pid, entry.data.spec.factory.clone(), passive))
            })
            .collect()
    })
}
