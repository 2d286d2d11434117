//! [`Runtime`]: one node's processes, and everything done to them by pid.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::task::{Context as TaskContext, Poll};

use tokio::sync::oneshot;

use crate::cell::{Cell, ProcessCell};
use crate::clock::Clock;
use crate::control::Watcher;
use crate::error::valid_name;
use crate::factory::Factories;
use crate::mailbox::{MailboxConfig, Overflow};
use crate::pid::next_incarnation;
use crate::remote::{Outbound, Remote};
use crate::run::{InitAck, run};
use crate::stats::{Counters, DEFAULT_MAILBOX_THRESHOLD, RuntimeStats};
use crate::table::ProcessTable;
use crate::trace::{SpanId, TraceId, mix};
use crate::{
    Addr, BuildError, Context, Dest, ExitError, ExitKind, ExitReason, LinkError, NodeId, Pid,
    Process, Ref, Signal, SpawnError, StartError, Target,
};

/// A node's process runtime: spawns processes and operates on them by pid. Cheap to clone
/// (all clones are the same runtime).
///
/// Processes are tokio tasks on the tokio runtime the `Runtime` was built in. Build one per
/// node; several may live in one OS process (tests run whole clusters that way).
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    node: NodeId,
    node_name: String,
    incarnation: u64,
    next_id: AtomicU64,
    next_ref: AtomicU64,
    /// The last number [`Runtime::fresh_above`] handed out.
    last_fresh: AtomicU64,
    table: ProcessTable,
    names: RwLock<HashMap<String, Pid>>,
    factories: Factories,
    remote: OnceLock<Arc<dyn Remote>>,
    mailbox: MailboxConfig,
    tokio: tokio::runtime::Handle,
    clock: Clock,
    /// Casts from other nodes refused by a full mailbox whose policy is `Reject`.
    refused_remote_casts: AtomicU64,
    /// Exits by class and supervisors' restarts, for [`Runtime::stats`].
    counters: Counters,
    /// The mailbox length above which [`RuntimeStats::mailboxes_over_threshold`] counts.
    mailbox_threshold: usize,
    /// Trace and span ids handed out ([`Runtime::fresh_trace_id`]).
    trace_ids: AtomicU64,
}

/// Configures a [`Runtime`].
#[derive(Clone, Debug)]
pub struct RuntimeBuilder {
    node_name: String,
    mailbox: MailboxConfig,
    clock: Clock,
    incarnation: Option<u64>,
    mailbox_threshold: usize,
}

impl RuntimeBuilder {
    /// The node's name (default `nonode@nohost`, as in Erlang); its [`NodeId`] is a hash of it.
    pub fn node_name(mut self, name: impl Into<String>) -> Self {
        self.node_name = name.into();
        self
    }

    /// The mailbox of processes spawned without one of their own (default
    /// [`MailboxConfig::DEFAULT`]).
    pub fn mailbox(mut self, mailbox: MailboxConfig) -> Self {
        self.mailbox = mailbox;
        self
    }

    /// The node's clock (default tokio's: [`Clock::tokio`]); a simulation gives each node one
    /// of its own ([`Clock::simulated`]).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The node's incarnation, for a simulation that fixes every number by its seed; it must
    /// grow with every start of the node. By default a fresh one is taken from the node's
    /// clock (microseconds since the Unix epoch, above any other of this OS process).
    pub fn incarnation(mut self, incarnation: u64) -> Self {
        self.incarnation = Some(incarnation);
        self
    }

    /// The mailbox length above which [`Runtime::stats`] counts a process's mailbox as over
    /// the threshold (default [`DEFAULT_MAILBOX_THRESHOLD`]).
    pub fn mailbox_threshold(mut self, letters: usize) -> Self {
        self.mailbox_threshold = letters;
        self
    }

    /// Builds the runtime on the current tokio runtime, with a fresh incarnation.
    pub fn build(self) -> Result<Runtime, BuildError> {
        if !valid_name(&self.node_name) {
            return Err(BuildError::InvalidNodeName(self.node_name));
        }
        if self.mailbox.capacity == 0 {
            return Err(BuildError::InvalidMailbox);
        }
        let tokio = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoTokio)?;
        let inner = Inner {
            node: NodeId::from_name(&self.node_name),
            node_name: self.node_name,
            incarnation: self
                .incarnation
                .unwrap_or_else(|| next_incarnation(self.clock.wall_micros())),
            // Local id 0 is the runtime itself (see `Runtime::system_pid`).
            next_id: AtomicU64::new(1),
            next_ref: AtomicU64::new(1),
            last_fresh: AtomicU64::new(0),
            table: ProcessTable::new(),
            names: RwLock::default(),
            factories: Factories::default(),
            remote: OnceLock::new(),
            mailbox: self.mailbox,
            tokio,
            clock: self.clock,
            refused_remote_casts: AtomicU64::new(0),
            counters: Counters::default(),
            mailbox_threshold: self.mailbox_threshold,
            trace_ids: AtomicU64::new(1),
        };
        Ok(Runtime { inner: Arc::new(inner) })
    }
}

/// How to spawn a process: linked, named, with its own mailbox.
#[derive(Clone, Debug, Default)]
pub struct SpawnOptions {
    pub(crate) link: Option<Pid>,
    pub(crate) monitor: Option<(Pid, Ref)>,
    pub(crate) name: Option<String>,
    pub(crate) mailbox: Option<MailboxConfig>,
    pub(crate) before_run: Option<BeforeRun>,
}

/// A hook that runs with a new process's pid before the process does.
#[derive(Clone)]
pub(crate) struct BeforeRun(Arc<dyn Fn(Pid) + Send + Sync>);

impl std::fmt::Debug for BeforeRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeforeRun")
    }
}

impl SpawnOptions {
    /// No link, no name, the runtime's default mailbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Links the new process to `parent` before it runs (`parent` becomes its
    /// [`Context::parent`]).
    pub fn link(mut self, parent: Pid) -> Self {
        self.link = Some(parent);
        self
    }

    /// Registers the new process under `name` before it runs.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Gives the new process its own mailbox configuration.
    pub fn mailbox(mut self, mailbox: MailboxConfig) -> Self {
        self.mailbox = Some(mailbox);
        self
    }

    /// Calls `hook` with the new process's pid once the process exists (in the table, named,
    /// linked) and before any of its code runs, so that what `hook` sends is sent before
    /// anything the process sends: a transport answers a remote spawn with it, the answer
    /// being the new process's first word, as in OTP. Not called if the spawn fails.
    pub fn before_run(mut self, hook: impl Fn(Pid) + Send + Sync + 'static) -> Self {
        self.before_run = Some(BeforeRun(Arc::new(hook)));
        self
    }

    pub(crate) fn monitored_by(mut self, watcher: Pid, monitor: Ref) -> Self {
        self.monitor = Some((watcher, monitor));
        self
    }
}

/// A snapshot of one process, for introspection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The process.
    pub pid: Pid,
    /// Its registered name.
    pub name: Option<String>,
    /// Letters waiting in its mailbox.
    pub mailbox_len: usize,
    /// The processes it is linked to.
    pub links: Vec<Pid>,
    /// How many monitors watch it.
    pub monitored_by: usize,
    /// Timers aimed at it that have neither fired nor been cancelled.
    pub timers: usize,
    /// Whether it traps exits.
    pub traps_exits: bool,
}

impl Runtime {
    /// A runtime with the default configuration, on the current tokio runtime.
    pub fn new() -> Result<Self, BuildError> {
        Self::builder().build()
    }

    /// Configures a runtime.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder {
            node_name: "nonode@nohost".to_owned(),
            mailbox: MailboxConfig::DEFAULT,
            clock: Clock::tokio(),
            incarnation: None,
            mailbox_threshold: DEFAULT_MAILBOX_THRESHOLD,
        }
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.inner.node
    }

    /// This node's name.
    pub fn node_name(&self) -> &str {
        &self.inner.node_name
    }

    /// This run's incarnation: different at every start of the node.
    pub fn incarnation(&self) -> u64 {
        self.inner.incarnation
    }

    /// A number greater than `floor` and than every number this runtime handed out here
    /// before: for an identifier a service must never reuse across its own restarts on this
    /// node (the Paxos driver's proposer runs, with the node's wall clock as the floor). It is
    /// the runtime's own, not the OS process's, so that two simulated nodes, or two runs of one
    /// seed in one process, draw the same numbers from the same history.
    pub fn fresh_above(&self, floor: u64) -> u64 {
        let next = |last: u64| floor.max(last).saturating_add(1);
        let previous = self
            .inner
            .last_fresh
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| Some(next(last)))
            .unwrap_or_else(|last| last);
        next(previous)
    }

    /// A trace id no other trace of this node's run has (for a remote call that starts a
    /// trace: see [`crate::TraceContext`]). Drawn from a counter mixed with the node's id and
    /// incarnation, not from an RNG, so that a simulation replays it.
    pub fn fresh_trace_id(&self) -> TraceId {
        let n = self.inner.trace_ids.fetch_add(1, Ordering::Relaxed);
        let high = mix(self.inner.node.as_u64() ^ mix(self.inner.incarnation));
        // `mix` is a bijection: distinct counts give distinct low halves.
        let low = mix(n ^ high);
        TraceId::from_u128((u128::from(high) << 64 | u128::from(low)).max(1))
    }

    /// A span id for a span of this node's (the caller's `call` span, the callee's
    /// `handle_call` span), drawn as [`Runtime::fresh_trace_id`] draws trace ids.
    pub fn fresh_span_id(&self) -> SpanId {
        let n = self.inner.trace_ids.fetch_add(1, Ordering::Relaxed);
        let salt = mix(self.inner.node.as_u64().rotate_left(17) ^ self.inner.incarnation);
        SpanId(mix(n.wrapping_add(salt)).max(1))
    }

    /// The pid that stands for the runtime itself, as the sender of [`Runtime::exit`] signals.
    pub fn system_pid(&self) -> Pid {
        Pid::from_parts(self.inner.node, self.inner.incarnation, 0)
    }

    /// Whether `pid` belongs to this run of this node.
    pub fn is_local(&self, pid: Pid) -> bool {
        pid.node() == self.inner.node && pid.incarnation() == self.inner.incarnation
    }

    /// Whether `pid` names a process of *another* node (rather than a dead one of this node,
    /// or one of a previous run of this node).
    fn is_remote(&self, pid: Pid) -> bool {
        pid.node() != self.inner.node
    }

    /// A fresh, cluster-unique reference.
    pub fn make_ref(&self) -> Ref {
        let n = self.inner.next_ref.fetch_add(1, Ordering::Relaxed);
        Ref::new(self.inner.node, self.inner.incarnation, n)
    }

    /// Installs the transport that reaches other nodes; refused (handed back) if one is
    /// installed already.
    pub fn set_remote(&self, remote: Arc<dyn Remote>) -> Result<(), Arc<dyn Remote>> {
        self.inner.remote.set(remote)
    }

    /// Casts from other nodes that were refused (and logged) because the receiving process's
    /// mailbox was full and its policy is [`Overflow::Reject`]. A cast to a full mailbox that
    /// waits is never refused: the transport holds back that connection instead.
    pub fn refused_remote_casts(&self) -> u64 {
        self.inner.refused_remote_casts.load(Ordering::Relaxed)
    }

    /// Counts a refused remote cast; returns the count so far.
    pub(crate) fn count_refused_remote_cast(&self) -> u64 {
        self.inner.refused_remote_casts.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn remote(&self) -> Option<&Arc<dyn Remote>> {
        self.inner.remote.get()
    }

    /// The node's clock: what every timer and timeout of this node, and of the layers on it,
    /// runs on.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    pub(crate) fn tokio(&self) -> &tokio::runtime::Handle {
        &self.inner.tokio
    }

    pub(crate) fn names(&self) -> &RwLock<HashMap<String, Pid>> {
        &self.inner.names
    }

    pub(crate) fn factories(&self) -> &Factories {
        &self.inner.factories
    }

    pub(crate) fn lookup(&self, pid: Pid) -> Option<Arc<dyn ProcessCell>> {
        if self.is_local(pid) { self.inner.table.get(pid.local_id()) } else { None }
    }

    /// The process `pid` names, if it is alive here: unlike [`Runtime::lookup`] (what sends
    /// use), not the forwarder of a process that was handed off.
    pub(crate) fn lookup_process(&self, pid: Pid) -> Option<Arc<dyn ProcessCell>> {
        self.lookup(pid).filter(|cell| !cell.is_forwarder())
    }

    pub(crate) fn waits_when_full(&self, pid: Pid) -> bool {
        self.lookup(pid).is_some_and(|cell| cell.mailbox_config().overflow == Overflow::Wait)
    }

    /// Spawns `process` and returns a typed handle at once; `init` runs in the new process.
    pub fn spawn<P: Process>(&self, process: P) -> Addr<P> {
        match self.spawn_inner(process, SpawnOptions::new(), None) {
            Ok(addr) => addr,
            // Without link, name or mailbox options there is nothing to refuse.
            Err(error) => unreachable!("a spawn without options failed: {error}"),
        }
    }

    /// Spawns `process` with `options`.
    pub fn spawn_with<P: Process>(
        &self,
        process: P,
        options: SpawnOptions,
    ) -> Result<Addr<P>, SpawnError> {
        self.spawn_inner(process, options, None)
    }

    /// Spawns `process` and waits until its `init` has succeeded.
    pub async fn start<P: Process>(&self, process: P) -> Result<Addr<P>, StartError> {
        self.start_with(process, SpawnOptions::new()).await
    }

    /// Spawns `process` with `options` and waits until its `init` has succeeded.
    pub async fn start_with<P: Process>(
        &self,
        process: P,
        options: SpawnOptions,
    ) -> Result<Addr<P>, StartError> {
        let (ack, started) = oneshot::channel();
        let addr = self.spawn_inner(process, options, Some(ack))?;
        match started.await {
            Ok(Ok(())) => Ok(addr),
            Ok(Err(reason)) => Err(StartError::Init(reason)),
            Err(_) => Err(StartError::Init(ExitReason::Killed)),
        }
    }

    pub(crate) fn spawn_inner<P: Process>(
        &self,
        process: P,
        options: SpawnOptions,
        ack: Option<InitAck>,
    ) -> Result<Addr<P>, SpawnError> {
        let mailbox = options.mailbox.unwrap_or(self.inner.mailbox);
        if mailbox.capacity == 0 {
            return Err(SpawnError::InvalidMailbox);
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let pid = Pid::from_parts(self.inner.node, self.inner.incarnation, id);
        let cell = Arc::new(Cell::<P>::new(pid, mailbox));
        if let Some((watcher, monitor)) = options.monitor {
            cell.control.add_monitor(monitor, Watcher::Process(watcher)).ok();
        }
        // Into the table before any link or name points at it, so that an exit signal or a
        // lookup never misses it; a failure below ends it like any exit would.
        self.inner.table.insert(id, cell.clone());
        if let Some(name) = &options.name
            && let Err(error) = self.register(name, pid)
        {
            self.finish(cell, ExitReason::NoProc);
            return Err(match error {
                crate::RegisterError::NameTaken { name, holder } => {
                    SpawnError::NameTaken { name, holder }
                }
                _ => SpawnError::InvalidName(name.clone()),
            });
        }
        if let Some(parent) = options.link
            && self.link(pid, parent).is_err()
        {
            self.finish(cell, ExitReason::NoProc);
            return Err(SpawnError::LinkNoProc(parent));
        }
        if let Some(BeforeRun(hook)) = &options.before_run {
            hook(pid);
        }
        let ctx = Context::new(self.clone(), cell.clone(), options.link);
        let task = run(process, ctx, ack);
        // The span is created per spawn and costs nothing per message; without a subscriber
        // that wants it, the task is spawned as it is, no larger.
        let span = tracing::info_span!("process", node = %self.inner.node_name, pid = %pid);
        if span.is_disabled() {
            self.inner.tokio.spawn(task);
        } else {
            self.inner.tokio.spawn(tracing::Instrument::instrument(task, span));
        }
        Ok(Addr::new(self.clone(), cell))
    }

    /// Sends an exit signal from the runtime itself to `pid`, as OTP's `exit(Pid, Reason)`:
    /// a process that traps exits gets [`Signal::Exit`], one that does not exits with `reason`
    /// (and ignores `Normal`). `Killed` is a reason like any other here, trappable, as OTP's
    /// `killed`; [`Runtime::kill`] kills.
    ///
    /// For a process that traps exits the signal is a letter in its mailbox and counts
    /// against its bound, as a message does. This never waits: a signal that finds that
    /// mailbox full is refused and logged. [`Runtime::try_exit`] hands the refusal back.
    pub fn exit(&self, pid: Pid, reason: ExitReason) {
        if let Err(error) = self.try_exit(pid, reason) {
            tracing::warn!(%pid, %error, "an exit signal was refused");
        }
    }

    /// Like [`Runtime::exit`], but a signal that finds the mailbox of a process that traps
    /// exits full is handed back ([`ExitError::Full`]): wait for room with
    /// [`Runtime::poll_room`] and try again.
    pub fn try_exit(&self, pid: Pid, reason: ExitReason) -> Result<(), ExitError> {
        self.send_exit(pid, self.system_pid(), reason, ExitKind::Direct)
    }

    /// Kills `pid`, as OTP's `exit(Pid, kill)`: it exits with [`ExitReason::Killed`] at its
    /// next await point, without running `terminate`, whether or not it traps exits. (Code
    /// that never awaits cannot be interrupted: see the crate's limits.)
    pub fn kill(&self, pid: Pid) {
        // A kill is never queued, so never refused.
        let _ = self.send_exit(pid, self.system_pid(), ExitReason::Killed, ExitKind::Kill);
    }

    /// Sends an exit signal of `kind`. Only a direct signal for a process that traps exits,
    /// whose mailbox is full, is refused: kills and exits that end the process are never
    /// queued, and a link's signal is bounded by the process's links.
    pub(crate) fn send_exit(
        &self,
        to: Pid,
        from: Pid,
        reason: ExitReason,
        kind: ExitKind,
    ) -> Result<(), ExitError> {
        if self.is_remote(to) {
            self.route_signal(Outbound::Exit { to, from, reason, kind });
            return Ok(());
        }
        let Some(cell) = self.lookup(to) else { return Ok(()) };
        let control = cell.control();
        match kind {
            ExitKind::Kill => kill(cell.as_ref()),
            // Unlinked meanwhile.
            ExitKind::Link if !control.remove_link(from) => {}
            ExitKind::Link if control.is_trapping() => {
                cell.push_signal(Signal::Exit { from, reason });
            }
            ExitKind::Direct if control.is_trapping() => {
                cell.push_direct_exit(from, reason).map_err(ExitError::Full)?;
            }
            ExitKind::Link | ExitKind::Direct => {
                if reason != ExitReason::Normal {
                    interrupt(cell.as_ref(), reason);
                }
            }
        }
        Ok(())
    }

    pub(crate) fn send_down(&self, to: Pid, monitor: Ref, pid: Pid, reason: ExitReason) {
        if self.is_remote(to) {
            self.route_signal(Outbound::Down { to, monitor, pid, reason });
        } else if let Some(cell) = self.lookup(to) {
            cell.push_signal(Signal::Down { monitor, pid, reason });
        }
    }

    /// Hands a signal to the transport. Signals to an unreachable node are dropped: the other
    /// side learns of the lost connection through its own monitors and links.
    fn route_signal(&self, outbound: Outbound) {
        match self.remote() {
            Some(remote) => {
                if let Err(error) = remote.try_route(outbound) {
                    tracing::debug!(?error, "a signal for another node was not routed");
                }
            }
            None => tracing::debug!(?outbound, "no transport: a signal for another node dropped"),
        }
    }

    /// Sets up a monitor for `watcher`; on failure, the reason for an immediate `Down`.
    pub(crate) fn monitor_on_behalf(
        &self,
        watcher: Pid,
        target: Pid,
        monitor: Ref,
    ) -> Result<(), ExitReason> {
        if !self.is_remote(target) {
            return self.add_monitor(target, monitor, Watcher::Process(watcher));
        }
        let remote = self.remote().ok_or(ExitReason::NoConnection)?;
        remote
            .try_route(Outbound::Monitor { target, watcher, monitor })
            .map_err(|_| ExitReason::NoConnection)
    }

    /// Hands a monitor by name on another node to the transport; on failure, the reason for
    /// an immediate `Down` (a local name is resolved by the caller, never here).
    pub(crate) fn monitor_name_on_behalf(
        &self,
        watcher: Pid,
        target: Pid,
        name: String,
        monitor: Ref,
    ) -> Result<(), ExitReason> {
        if !self.is_remote(target) {
            return Err(ExitReason::NoProc);
        }
        let remote = self.remote().ok_or(ExitReason::NoConnection)?;
        remote
            .try_route(Outbound::MonitorName { target, name, watcher, monitor })
            .map_err(|_| ExitReason::NoConnection)
    }

    pub(crate) fn add_monitor(
        &self,
        target: Pid,
        monitor: Ref,
        watcher: Watcher,
    ) -> Result<(), ExitReason> {
        let cell = self.lookup(target).ok_or(ExitReason::NoProc)?;
        cell.control().add_monitor(monitor, watcher).map_err(|_| ExitReason::NoProc)
    }

    pub(crate) fn demonitor_on_behalf(&self, watcher: Pid, target: Pid, monitor: Ref) {
        if self.is_remote(target) {
            self.route_signal(Outbound::Demonitor { target, watcher, monitor });
        } else if let Some(cell) = self.lookup(target) {
            cell.control().remove_monitor(monitor);
        }
    }

    /// A future that resolves to `pid`'s exit reason when it exits (at once with `NoProc` if
    /// it is not alive on this node). For code outside processes: tests, shutdown sequences.
    /// Local pids only; processes monitor remote pids with [`Context::monitor`]. Dropping the
    /// future removes its monitor.
    pub fn watch(&self, pid: Pid) -> ExitWatch {
        let Some(cell) = self.lookup(pid) else { return ExitWatch(None) };
        let (sender, receiver) = oneshot::channel();
        let monitor = self.make_ref();
        match cell.control().add_monitor(monitor, Watcher::Future(sender)) {
            Ok(()) => {
                ExitWatch(Some(Watching { receiver, target: Arc::downgrade(&cell), monitor }))
            }
            Err(_) => ExitWatch(None),
        }
    }

    /// Links local process `from` with `to` (local or remote).
    pub(crate) fn link(&self, from: Pid, to: Pid) -> Result<(), LinkError> {
        if from == to {
            return Ok(());
        }
        let cell = self.lookup(from).ok_or(LinkError::NoProc(from))?;
        // `from` first: if `to` exits right after learning of the link, its exit signal must
        // find the link on this side.
        cell.control().add_link(to).map_err(|_| LinkError::NoProc(from))?;
        let linked = if self.is_remote(to) {
            match self.remote() {
                Some(remote) => remote
                    .try_route(Outbound::Link { to, from })
                    .map_err(|_| LinkError::NoConnection(to)),
                None => Err(LinkError::NoConnection(to)),
            }
        } else {
            match self.lookup(to) {
                Some(peer) => peer.control().add_link(from).map_err(|_| LinkError::NoProc(to)),
                None => Err(LinkError::NoProc(to)),
            }
        };
        if linked.is_err() {
            cell.control().remove_link(to);
        }
        linked
    }

    pub(crate) fn unlink(&self, from: Pid, to: Pid) {
        if let Some(cell) = self.lookup(from) {
            cell.control().remove_link(to);
        }
        if self.is_remote(to) {
            self.route_signal(Outbound::Unlink { to, from });
        } else if let Some(peer) = self.lookup(to) {
            peer.control().remove_link(from);
        }
    }

    /// Everything that happens when a process has exited: it leaves the table and its name,
    /// its timers are cancelled, letters left in its mailbox are dropped (their callers are
    /// told), and its monitors and links are notified.
    pub(crate) fn finish(&self, cell: Arc<dyn ProcessCell>, reason: ExitReason) {
        self.finish_in_place_of(cell, reason, None);
    }

    /// As [`Runtime::finish`], for a process that was handed off: `forwarder` takes its place in
    /// the table, and the letters left in its mailbox stay there, for the forwarder to send on.
    pub(crate) fn finish_handed_off(
        &self,
        cell: Arc<dyn ProcessCell>,
        reason: ExitReason,
        forwarder: Arc<dyn ProcessCell>,
    ) {
        self.finish_in_place_of(cell, reason, Some(forwarder));
    }

    /// The forwarder of a process that was handed off leaves the table: its window is over.
    pub(crate) fn end_forwarding(&self, forwarder: &Arc<dyn ProcessCell>) {
        self.inner.table.remove_forwarder(forwarder.pid().local_id(), forwarder);
    }

    fn finish_in_place_of(
        &self,
        cell: Arc<dyn ProcessCell>,
        reason: ExitReason,
        forwarder: Option<Arc<dyn ProcessCell>>,
    ) {
        let pid = cell.pid();
        self.inner.counters.count_exit(&reason);
        let remains = cell.control().finish(reason.clone());
        match forwarder {
            None => {
                self.inner.table.remove(pid.local_id());
                cell.close(&reason);
            }
            Some(forwarder) => self.inner.table.hand_over(pid.local_id(), forwarder),
        }
        if let Some(name) = remains.name {
            self.forget_name(&name, pid);
        }
        for timer in remains.timers.into_values() {
            timer.cancel();
        }
        let mut monitors: Vec<(Ref, Watcher)> = remains.monitors.into_iter().collect();
        // The references of one node grow with time: watchers hear in the order they began.
        monitors.sort_unstable_by_key(|(monitor, _)| *monitor);
        for (monitor, watcher) in monitors {
            match watcher {
                Watcher::Process(to) => self.send_down(to, monitor, pid, reason.clone()),
                Watcher::Future(sender) => drop(sender.send(reason.clone())),
            }
        }
        for peer in remains.links {
            // A link's signal is never refused.
            let _ = self.send_exit(peer, pid, reason.clone(), ExitKind::Link);
        }
        tracing::trace!(%pid, %reason, "process exited");
    }

    /// Whether `pid` is a live process of this node.
    pub fn is_alive(&self, pid: Pid) -> bool {
        self.is_local(pid) && self.inner.table.contains_process(pid.local_id())
    }

    /// The live processes of this node, in spawn order.
    pub fn processes(&self) -> Vec<Pid> {
        let node = self.inner.node;
        let incarnation = self.inner.incarnation;
        self.inner
            .table
            .ids()
            .into_iter()
            .map(|id| Pid::from_parts(node, incarnation, id))
            .collect()
    }

    /// How many processes are alive on this node.
    pub fn process_count(&self) -> usize {
        self.inner.table.len()
    }

    /// A snapshot of this node's processes: how many are alive, spawned and exited (by
    /// reason), restarted by supervisors, and how many mailboxes are over the runtime's
    /// threshold ([`RuntimeBuilder::mailbox_threshold`]). The counters are read without
    /// locks; the mailboxes are counted by a walk over the process table, so call this on a
    /// tick (a metrics sampler's), not per message.
    pub fn stats(&self) -> RuntimeStats {
        let threshold = self.inner.mailbox_threshold;
        RuntimeStats {
            processes: self.inner.table.len(),
            // Every spawn takes the next local id, and nothing else does; ids start at 1.
            spawned_total: self.inner.next_id.load(Ordering::Relaxed) - 1,
            exits: self.inner.counters.exits(),
            restarts_total: self.inner.counters.restarts(),
            mailboxes_over_threshold: self
                .inner
                .table
                .count_processes(|cell| cell.mailbox_len() > threshold),
            mailbox_threshold: threshold,
        }
    }

    /// Counts one restart of a child by a supervisor on this node, for
    /// [`RuntimeStats::restarts_total`]: supervisors call it each time they start a child
    /// again after it exited (not for the first start).
    pub fn note_restart(&self) {
        self.inner.counters.count_restart();
    }

    /// Letters waiting in `pid`'s mailbox, if it is alive here.
    pub fn mailbox_len(&self, pid: Pid) -> Option<usize> {
        self.lookup_process(pid).map(|cell| cell.mailbox_len())
    }

    /// A snapshot of `pid`, if it is alive here.
    pub fn process_info(&self, pid: Pid) -> Option<ProcessInfo> {
        let cell = self.lookup_process(pid)?;
        let control = cell.control();
        Some(ProcessInfo {
            pid,
            name: control.name(),
            mailbox_len: cell.mailbox_len(),
            links: control.links(),
            monitored_by: control.monitor_count(),
            timers: control.timer_count(),
            traps_exits: control.is_trapping(),
        })
    }

    /// A typed handle to `pid`: for a pid of this node, if it is alive and runs behaviour
    /// `P`; for one of another node, if `P` takes messages from other nodes
    /// ([`Process::remote_messages`]), trusting that the process there runs `P` (what it does
    /// not decode, it refuses).
    pub fn addr<P: Process>(&self, pid: Pid) -> Option<Addr<P>> {
        if pid.node() != self.node() {
            return P::remote_messages().map(|_| Addr::remote(self.clone(), pid));
        }
        let cell = self.lookup(pid)?.into_any().downcast::<Cell<P>>().ok()?;
        Some(Addr::new(self.clone(), cell))
    }

    /// A typed destination for a process of behaviour `P`: `to` (a pid, a name, a name on
    /// another node, a via-name) resolved at each cast or call.
    pub fn target<P: Process>(&self, to: impl Into<Dest>) -> Target<P> {
        to.into().typed(self)
    }

    /// Whether `node` is connected now, as the transport says (`true` for this node; `false`
    /// for another without a transport).
    pub(crate) fn is_connected(&self, node: NodeId) -> bool {
        node == self.node() || self.remote().is_some_and(|remote| remote.is_connected(node))
    }
}

/// Asks a process to exit and wakes it wherever it waits.
fn interrupt(cell: &dyn ProcessCell, reason: ExitReason) {
    if let Some(handler) = cell.control().request_exit(reason) {
        handler.wake();
    }
    cell.wake();
}

/// Kills a process and wakes it wherever it waits.
fn kill(cell: &dyn ProcessCell) {
    if let Some(handler) = cell.control().request_kill() {
        handler.wake();
    }
    cell.wake();
}

/// Resolves to a process's exit reason; see [`Runtime::watch`]. Dropped before it resolves,
/// it removes its monitor.
pub struct ExitWatch(Option<Watching>);

/// A watch whose process had not exited when it was last polled.
struct Watching {
    receiver: oneshot::Receiver<ExitReason>,
    /// Weak: a watch does not keep an exited process's cell alive.
    target: Weak<dyn ProcessCell>,
    monitor: Ref,
}

impl Future for ExitWatch {
    type Output = ExitReason;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<ExitReason> {
        let Some(watching) = &mut self.0 else { return Poll::Ready(ExitReason::NoProc) };
        let reason = std::task::ready!(Pin::new(&mut watching.receiver).poll(cx));
        // The exit took the monitor with it: nothing to remove on drop.
        self.0 = None;
        Poll::Ready(reason.unwrap_or(ExitReason::Killed))
    }
}

impl Drop for ExitWatch {
    fn drop(&mut self) {
        if let Some(watching) = self.0.take()
            && let Some(target) = watching.target.upgrade()
        {
            target.control().remove_monitor(watching.monitor);
        }
    }
}

impl std::fmt::Debug for ExitWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let monitor = self.0.as_ref().map(|watching| watching.monitor);
        f.debug_tuple("ExitWatch").field(&monitor).finish()
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("node", &self.inner.node_name)
            .field("incarnation", &self.inner.incarnation)
            .field("processes", &self.inner.table.len())
            .finish()
    }
}
