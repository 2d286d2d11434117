//! The behaviour trait, [`Process`], and what its handlers get: a [`Context`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::cell::{Cell, Envelope};
use crate::dest::Dest;
use crate::timer::TimerRef;
use crate::{
    Addr, Codec, ExitError, ExitKind, ExitReason, LinkError, NodeId, Pid, Ref, ReplyTo, Runtime,
    Signal, SpawnError, SpawnOptions,
};

/// A process's behaviour, in the spirit of OTP's `gen_server`: state plus handlers.
///
/// The process owns its state; handlers run one at a time, in mailbox order. Handlers are
/// `async`: a handler that awaits (a call to another process, a timer) holds up this process's
/// mailbox, not the node. A panic in a handler ends this process with
/// [`ExitReason::Panic`] and nothing else. An exit signal (from a link or `exit`) interrupts a
/// handler at its next await point.
///
/// Implement the handlers with `async fn`:
///
/// ```
/// use shoal_process::{Context, Process, ReplyTo};
///
/// #[derive(Default)]
/// struct Counter(u64);
///
/// impl Process for Counter {
///     type Message = u64;
///     type Call = ();
///     type Reply = u64;
///
///     async fn handle_cast(&mut self, add: u64, _ctx: &mut Context<Self>) {
///         self.0 += add;
///     }
///
///     async fn handle_call(&mut self, _: (), reply: ReplyTo<u64>, _ctx: &mut Context<Self>) {
///         reply.send(self.0);
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let runtime = shoal_process::Runtime::new()?;
/// let counter = runtime.spawn(Counter::default());
/// counter.cast(2).await?;
/// counter.cast(3).await?;
/// assert_eq!(counter.call(()).await?, 5);
/// # Ok(()) }
/// ```
pub trait Process: Sized + Send + 'static {
    /// Messages sent with `cast` (fire and forget).
    type Message: Send + 'static;
    /// Requests sent with `call`.
    type Call: Send + 'static;
    /// Replies to calls.
    type Reply: Send + 'static;

    /// Runs first, before any message. An error ends the process with that reason (and
    /// `start` returns it); `terminate` is not called then.
    fn init(
        &mut self,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = Result<(), ExitReason>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Handles a cast.
    fn handle_cast(
        &mut self,
        message: Self::Message,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = ()> + Send;

    /// Handles a call. Answer through `reply`, now or later (keep it to defer the answer).
    /// By default the call is dropped unanswered and the caller gets
    /// [`crate::CallError::NoReply`].
    fn handle_call(
        &mut self,
        request: Self::Call,
        reply: ReplyTo<Self::Reply>,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (request, ctx);
        drop(reply);
        async {}
    }

    /// Handles a system signal: a monitor's `Down`, a trapped `Exit`, a timer's `Timeout`.
    /// Ignores them by default.
    fn handle_signal(
        &mut self,
        signal: Signal,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (signal, ctx);
        async {}
    }

    /// Runs last, with the exit reason, unless the process was killed or its `init` failed.
    /// (Ending with the *reason* [`ExitReason::Killed`] without being killed, through a link
    /// say, runs it.) Only a kill interrupts it; a panic in it becomes the exit reason.
    fn terminate(
        &mut self,
        reason: &ExitReason,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (reason, ctx);
        async {}
    }

    /// Opts this behaviour in to messages from other nodes: how its casts, requests and
    /// replies cross the wire (`Some(Codec::msgpack())`). `None`, the default, keeps it local:
    /// what other nodes send it is refused, and no typed handle to it can be made elsewhere.
    fn remote_messages() -> Option<Codec<Self>> {
        None
    }
}

/// What a handler can do besides changing its state: learn its identity, stop, monitor, link,
/// trap exits, spawn, and set timers.
pub struct Context<P: Process> {
    pub(crate) runtime: Runtime,
    pub(crate) cell: Arc<Cell<P>>,
    /// Boxed: set once in a process's life, and 8 bytes in every task rather than 32.
    pub(crate) stop: Option<Box<ExitReason>>,
    /// Monitors this process holds, with their targets: a `Down` for any other reference
    /// (one removed by `demonitor`) is dropped unseen. Boxed and created on first use: the
    /// context lives in the task of every process, and most never monitor, so 8 bytes here
    /// rather than a map's 48 (the extra allocation is paid once, by processes that monitor).
    #[expect(clippy::box_collection, reason = "8 bytes in every task instead of 48")]
    monitors: Option<Box<HashMap<Ref, Pid>>>,
    parent: Option<Pid>,
}

impl<P: Process> Context<P> {
    pub(crate) fn new(runtime: Runtime, cell: Arc<Cell<P>>, parent: Option<Pid>) -> Self {
        Self { runtime, cell, stop: None, monitors: None, parent }
    }

    fn hold_monitor(&mut self, monitor: Ref, target: Pid) {
        self.monitors.get_or_insert_default().insert(monitor, target);
    }

    /// Forgets a monitor this process holds; its target, or `None` if it held no such monitor.
    pub(crate) fn release_monitor(&mut self, monitor: &Ref) -> Option<Pid> {
        self.monitors.as_mut()?.remove(monitor)
    }

    /// Removes every monitor this process holds, on this node and others: it is exiting, and
    /// a watcher that is gone must not stay on its targets until they exit.
    pub(crate) fn demonitor_all(&mut self) {
        let watcher = self.pid();
        for (monitor, target) in self.monitors.take().into_iter().flat_map(|monitors| *monitors) {
            self.runtime.demonitor_on_behalf(watcher, target, monitor);
        }
    }

    /// This process's pid.
    pub fn pid(&self) -> Pid {
        self.cell.control.pid
    }

    /// A typed handle to this process.
    pub fn addr(&self) -> Addr<P> {
        Addr::new(self.runtime.clone(), self.cell.clone())
    }

    /// The runtime this process runs on.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The process that spawned this one linked to it, if any (a supervisor, say).
    pub fn parent(&self) -> Option<Pid> {
        self.parent
    }

    /// Stops this process with `reason` once the current handler returns.
    pub fn stop(&mut self, reason: ExitReason) {
        self.stop = Some(Box::new(reason));
    }

    /// Whether exit signals arrive as [`Signal::Exit`] instead of ending this process. Off by
    /// default. A kill still ends it, and so does an exit signal from its [`Context::parent`]
    /// (after `terminate`), as with OTP's `gen_server`.
    pub fn trap_exits(&self, trap: bool) {
        self.cell.control.set_trapping(trap);
    }

    /// Whether this process traps exits.
    pub fn traps_exits(&self) -> bool {
        self.cell.control.is_trapping()
    }

    /// Monitors `target`: when it exits, this process gets exactly one [`Signal::Down`] with
    /// the returned reference and the exit reason (at once, with `NoProc`, if it is not alive).
    ///
    /// A name is resolved when the monitor is made, as OTP's `monitor(process, Name)` and
    /// `monitor(process, {Name, Node})`: the monitor follows the process the name stood for
    /// then, not the name. For a name, the `Down` is [`ExitReason::NoProc`] if no process has
    /// it, the process's exit reason when it exits, or [`ExitReason::NoConnection`] when its
    /// node is lost; the `Down` for an exit names the process, one with `noproc` or
    /// `noconnection` names [`Pid::name_placeholder`] of the node. A via-name is monitored
    /// through the pid its layer has cached ([`Dest::resolve_now`]); resolve it first
    /// ([`Dest::resolve`]) when it may have none, or the `Down` is `noproc` at once.
    pub fn monitor(&mut self, target: impl Into<Dest>) -> Ref {
        match target.into() {
            Dest::Pid(pid) => self.monitor_pid(pid),
            Dest::Name(name) => self.monitor_name(self.runtime.node(), &name),
            Dest::NameOn { node, name } => self.monitor_name(node, &name),
            Dest::Via(via) => match via.cached() {
                Some(pid) => self.monitor_pid(pid),
                None => self.monitor_pid(Pid::name_placeholder(self.runtime.node())),
            },
        }
    }

    fn monitor_pid(&mut self, target: Pid) -> Ref {
        let monitor = self.runtime.make_ref();
        self.hold_monitor(monitor, target);
        if let Err(reason) = self.runtime.monitor_on_behalf(self.pid(), target, monitor) {
            self.cell
                .mailbox
                .try_push(Envelope::signal(Signal::Down { monitor, pid: target, reason }))
                .ok();
        }
        monitor
    }

    fn monitor_name(&mut self, node: NodeId, name: &str) -> Ref {
        if node == self.runtime.node() {
            let target = self.runtime.whereis(name);
            return self.monitor_pid(target.unwrap_or(Pid::name_placeholder(node)));
        }
        let monitor = self.runtime.make_ref();
        let target = Pid::name_placeholder(node);
        self.hold_monitor(monitor, target);
        if let Err(reason) =
            self.runtime.monitor_name_on_behalf(self.pid(), target, name.to_owned(), monitor)
        {
            self.cell
                .mailbox
                .try_push(Envelope::signal(Signal::Down { monitor, pid: target, reason }))
                .ok();
        }
        monitor
    }

    /// Removes a monitor. Afterwards no `Down` for it is seen, even one already queued.
    /// Returns `false` if it was not active (unknown, or its `Down` was already handled).
    pub fn demonitor(&mut self, monitor: Ref) -> bool {
        match self.release_monitor(&monitor) {
            Some(target) => {
                self.runtime.demonitor_on_behalf(self.pid(), target, monitor);
                true
            }
            None => false,
        }
    }

    /// Links this process with `peer`: when either exits abnormally, the other gets an exit
    /// signal (which ends it unless it traps exits). A name is resolved now, on this node (a
    /// via-name through its layer's cache); a name on another node cannot be linked to
    /// ([`LinkError::Unresolved`]), as in OTP.
    pub fn link(&self, peer: impl Into<Dest>) -> Result<(), LinkError> {
        let peer = peer.into();
        let pid = peer
            .resolve_now(&self.runtime)
            .ok_or_else(|| LinkError::Unresolved(peer.to_string()))?;
        self.runtime.link(self.pid(), pid)
    }

    /// Removes the link with `peer`, if any. An `Exit` from it already queued (when trapping)
    /// may still arrive, as in OTP.
    pub fn unlink(&self, peer: Pid) {
        self.runtime.unlink(self.pid(), peer);
    }

    /// Sends an exit signal from this process to `target` (see [`Runtime::exit`]: `Killed` is
    /// an ordinary, trappable reason; a signal that finds the full mailbox of a process that
    /// traps exits is refused and logged).
    pub fn exit(&self, target: Pid, reason: ExitReason) {
        if let Err(error) = self.try_exit(target, reason) {
            tracing::warn!(from = %self.pid(), to = %target, %error, "an exit signal was refused");
        }
    }

    /// Like [`Context::exit`], but a signal that finds the mailbox of a process that traps
    /// exits full is handed back (see [`Runtime::try_exit`]).
    pub fn try_exit(&self, target: Pid, reason: ExitReason) -> Result<(), ExitError> {
        self.runtime.send_exit(target, self.pid(), reason, ExitKind::Direct)
    }

    /// Kills `target` (see [`Runtime::kill`]); its links get exit signals with reason
    /// [`ExitReason::Killed`].
    pub fn kill(&self, target: Pid) {
        // A kill is never queued, so never refused.
        let _ = self.runtime.send_exit(target, self.pid(), ExitReason::Killed, ExitKind::Kill);
    }

    /// Spawns `process` linked to this one.
    pub fn spawn_link<C: Process>(&self, process: C) -> Result<Addr<C>, SpawnError> {
        self.runtime.spawn_with(process, SpawnOptions::new().link(self.pid()))
    }

    /// Spawns `process` monitored by this one.
    pub fn spawn_monitor<C: Process>(&mut self, process: C) -> Result<(Addr<C>, Ref), SpawnError> {
        let monitor = self.runtime.make_ref();
        let options = SpawnOptions::new().monitored_by(self.pid(), monitor);
        let addr = self.runtime.spawn_with(process, options)?;
        self.hold_monitor(monitor, addr.pid());
        Ok((addr, monitor))
    }

    /// Casts `message` to this process after `delay`. The timer is cancelled if this process
    /// exits first.
    pub fn send_after(&self, delay: Duration, message: P::Message) -> TimerRef {
        self.addr().cast_after(delay, message)
    }

    /// Delivers [`Signal::Timeout`] with the timer's [`TimerRef::id`] after `delay`.
    pub fn start_timer(&self, delay: Duration) -> TimerRef {
        let id = self.runtime.make_ref();
        let cell = self.cell.clone();
        let deliver = async move {
            cell.mailbox.try_push(Envelope::signal(Signal::Timeout { timer: id })).ok();
        };
        let timer = self.runtime.clock().sleep(delay);
        TimerRef::start(self.runtime.tokio(), id, timer, self.cell.clone(), deliver)
            .unwrap_or_else(|| TimerRef::settled(id))
    }
}
