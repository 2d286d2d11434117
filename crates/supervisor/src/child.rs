//! Children: how to start one ([`Child`]), and how a supervisor stops them.

use std::fmt;
use std::future::{Future, poll_fn, ready};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_process::{
    ChildSpec, Context, ExitError, ExitReason, ExitWatch, Pid, Process, Restart, Runtime, Shutdown,
    SpawnError, SpawnOptions, StartError,
};
use tokio::time::Instant;

type StartFuture = Pin<Box<dyn Future<Output = Result<Pid, StartError>> + Send>>;
type StartFn = dyn Fn(Runtime, SpawnOptions) -> StartFuture + Send + Sync;

/// Whether a child is a worker or a supervisor (OTP's `child_type`); supervisors are given
/// as long as they need to shut down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChildKind {
    /// Does the work.
    Worker,
    /// Supervises other children.
    Supervisor,
}

/// A child of a supervisor: an id, how to start it (a factory spec, or a local closure), when
/// to restart it and how to stop it.
#[derive(Clone)]
pub struct Child {
    id: String,
    start: Start,
    restart: Restart,
    shutdown: Shutdown,
    kind: ChildKind,
}

#[derive(Clone)]
enum Start {
    /// A registered factory with encoded arguments: data, so it can be sent to other nodes.
    Factory { factory: String, args: Arc<[u8]> },
    /// A closure that builds the behaviour on this node.
    Local(Arc<StartFn>),
}

impl Child {
    /// A permanent worker built on this node by `build`, called anew at every (re)start. A
    /// `build` that panics fails that start ([`SpawnError::BuildPanicked`]), as a failing
    /// `init` does; it does not take the supervisor down.
    pub fn new<P, F>(id: impl Into<String>, build: F) -> Self
    where
        P: Process,
        F: Fn() -> P + Send + Sync + 'static,
    {
        let start = move |runtime: Runtime, options: SpawnOptions| -> StartFuture {
            match catch_unwind(AssertUnwindSafe(&build)) {
                Ok(process) => Box::pin(async move {
                    runtime.start_with(process, options).await.map(|addr| addr.pid())
                }),
                Err(payload) => {
                    Box::pin(ready(Err(SpawnError::build_panicked(payload.as_ref()).into())))
                }
            }
        };
        Self::from_start(id.into(), Start::Local(Arc::new(start)), ChildKind::Worker)
    }

    /// A worker started from a factory spec; its restart and shutdown policies come from the
    /// spec.
    pub fn from_spec(spec: ChildSpec) -> Self {
        let start = Start::Factory { factory: spec.factory, args: spec.args.into() };
        Self {
            id: spec.id,
            start,
            restart: spec.restart,
            shutdown: spec.shutdown,
            kind: ChildKind::Worker,
        }
    }

    /// A child that is itself a supervisor, started from `spec` (shut down with
    /// [`Shutdown::Infinity`], so it has time to stop its own children).
    pub fn supervisor(id: impl Into<String>, spec: crate::SupervisorSpec) -> Self {
        let start = move |runtime: Runtime, options: SpawnOptions| -> StartFuture {
            let supervisor = crate::supervisor::Supervisor::new(spec.clone());
            Box::pin(
                async move { runtime.start_with(supervisor, options).await.map(|addr| addr.pid()) },
            )
        };
        let mut child =
            Self::from_start(id.into(), Start::Local(Arc::new(start)), ChildKind::Supervisor);
        child.shutdown = Shutdown::Infinity;
        child
    }

    fn from_start(id: String, start: Start, kind: ChildKind) -> Self {
        Self { id, start, restart: Restart::default(), shutdown: Shutdown::default(), kind }
    }

    /// With restart policy `restart`.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// With shutdown policy `shutdown`.
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Marks the child as a supervisor (for counts, and for OTP-style tooling).
    pub fn kind(mut self, kind: ChildKind) -> Self {
        self.kind = kind;
        self
    }

    /// The child's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn restart_policy(&self) -> Restart {
        self.restart
    }

    pub(crate) fn child_kind(&self) -> ChildKind {
        self.kind
    }

    /// Starts the child linked to `supervisor` and waits for its `init`.
    pub(crate) async fn start(
        &self,
        runtime: &Runtime,
        supervisor: Pid,
    ) -> Result<Pid, StartError> {
        let options = SpawnOptions::new().link(supervisor);
        match &self.start {
            Start::Factory { factory, args } => runtime.start_factory(factory, args, options).await,
            Start::Local(start) => start(runtime.clone(), options).await,
        }
    }

    pub(crate) fn shutdown_policy(&self) -> Shutdown {
        self.shutdown
    }

    /// Stops the running child `pid` as its shutdown policy says (see [`stop_together`]);
    /// `Err` if it was still alive `kill_timeout` after it was killed.
    pub(crate) async fn stop<S: Process>(
        &self,
        ctx: &Context<S>,
        pid: Pid,
        kill_timeout: Duration,
    ) -> Result<(), StillAlive> {
        match stop_together(ctx, &[(pid, self.shutdown)], kill_timeout).await.first() {
            Some(&alive) => Err(alive),
            None => Ok(()),
        }
    }
}

/// How long a supervisor waits, by default, for a child it killed to exit. A kill takes effect
/// where the child's handler awaits; one that never does (a blocking loop) cannot be killed,
/// and the supervisor must not wait for it forever.
pub const DEFAULT_KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// A child that was killed but had not exited within the kill timeout; it is reported (and
/// logged) and forgotten, and may still be running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StillAlive(pub(crate) Pid);

/// One child on its way out.
struct Stopping {
    pid: Pid,
    exited: ExitWatch,
    /// Until when it is waited for: before a kill, its shutdown time (then it is killed);
    /// after, the kill timeout (then it is reported). `None`: as long as it takes.
    deadline: Option<Instant>,
}

/// Stops `children` of the supervisor running `ctx`, as OTP does, all at once: each is
/// unlinked (so no stray exit signal comes back) and sent `Shutdown` (or killed, for
/// [`Shutdown::BrutalKill`]) before any is waited for; then each gets its shutdown time,
/// counted from that moment, and is killed if it has not exited by then; a killed child is
/// waited for at most `kill_timeout`. Returns the children still alive after that (logged).
///
/// A child that traps exits and whose mailbox is full cannot take the `Shutdown` signal yet
/// (it counts against the mailbox's bound): it is sent as soon as there is room, within the
/// child's shutdown time.
pub(crate) async fn stop_together<S: Process>(
    ctx: &Context<S>,
    children: &[(Pid, Shutdown)],
    kill_timeout: Duration,
) -> Vec<StillAlive> {
    let runtime = ctx.runtime();
    let clock = runtime.clock();
    let signalled_at = clock.now();
    let mut unsignalled = Vec::new();
    let mut stopping = Vec::new();
    let mut killed = Vec::new();
    for &(pid, shutdown) in children {
        ctx.unlink(pid);
        let exited = runtime.watch(pid);
        // A deadline further away than the clock can count is none: as long as it takes.
        let deadline = match shutdown {
            Shutdown::BrutalKill => {
                ctx.kill(pid);
                let deadline = signalled_at.checked_add(kill_timeout);
                killed.push(Stopping { pid, exited, deadline });
                continue;
            }
            Shutdown::Timeout(grace) => signalled_at.checked_add(grace),
            Shutdown::Infinity => None,
        };
        signal_shutdown(ctx, pid, &mut unsignalled);
        stopping.push(Stopping { pid, exited, deadline });
    }
    // Waiting for each in the order of their deadlines, which are all counted from the same
    // moment, is waiting for all of them at once, at the cost of one wait per child.
    stopping.sort_by_key(|child| child.deadline.map_or((1, signalled_at), |at| (0, at)));
    for mut child in stopping {
        if shut_down(ctx, &mut child, &mut unsignalled).await.is_none() {
            tracing::warn!(pid = %child.pid, "a child did not shut down in time: killing it");
            unsignalled.retain(|pid| *pid != child.pid);
            ctx.kill(child.pid);
            child.deadline = clock.now().checked_add(kill_timeout);
            killed.push(child);
        }
    }
    let mut alive = Vec::new();
    for mut child in killed {
        if shut_down(ctx, &mut child, &mut unsignalled).await.is_none() {
            tracing::error!(
                pid = %child.pid,
                ?kill_timeout,
                "a killed child has not exited (a handler that never awaits cannot be \
                 killed): forgotten, it may still be running"
            );
            alive.push(StillAlive(child.pid));
        }
    }
    alive
}

/// Sends `Shutdown` to `pid` from the supervisor, or remembers it in `unsignalled` if the
/// child traps exits and its mailbox is full.
fn signal_shutdown<S: Process>(ctx: &Context<S>, pid: Pid, unsignalled: &mut Vec<Pid>) {
    if let Err(ExitError::Full(_)) = ctx.try_exit(pid, ExitReason::Shutdown) {
        unsignalled.push(pid);
    }
}

/// Waits until `child` exits (its reason) or its deadline passes (`None`), meanwhile sending
/// `Shutdown` to the `unsignalled` children as room appears in their mailboxes (none are left
/// once every child has been waited for, or killed, once).
async fn shut_down<S: Process>(
    ctx: &Context<S>,
    child: &mut Stopping,
    unsignalled: &mut Vec<Pid>,
) -> Option<ExitReason> {
    let clock = ctx.runtime().clock();
    let mut deadline = pin!(child.deadline.map(|deadline| clock.sleep_until(deadline)));
    poll_fn(|cx| {
        // Kept while there is no room; room taken by another sender first is waited for again.
        unsignalled.retain(|&pid| {
            loop {
                match ctx.runtime().poll_room(pid, cx) {
                    Poll::Pending => break true,
                    Poll::Ready(()) if ctx.try_exit(pid, ExitReason::Shutdown).is_ok() => {
                        break false;
                    }
                    Poll::Ready(()) => {}
                }
            }
        });
        if let Poll::Ready(reason) = Pin::new(&mut child.exited).poll(cx) {
            return Poll::Ready(Some(reason));
        }
        match deadline.as_mut().as_pin_mut().map(|deadline| deadline.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(None),
            _ => Poll::Pending,
        }
    })
    .await
}

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let start = match &self.start {
            Start::Factory { factory, .. } => format!("factory {factory:?}"),
            Start::Local(_) => "local closure".to_owned(),
        };
        f.debug_struct("Child")
            .field("id", &self.id)
            .field("start", &start)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .field("kind", &self.kind)
            .finish()
    }
}

/// One child as `which_children` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildInfo {
    /// The child's id.
    pub id: String,
    /// Its pid, if it is running.
    pub pid: Option<Pid>,
    /// Worker or supervisor.
    pub kind: ChildKind,
    /// Its restart policy.
    pub restart: Restart,
}

/// What `count_children` reports, as OTP's `count_children`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildCounts {
    /// Children known to the supervisor, running or not.
    pub specs: usize,
    /// Children running.
    pub active: usize,
    /// Children that are supervisors.
    pub supervisors: usize,
    /// Children that are workers.
    pub workers: usize,
}

impl ChildCounts {
    pub(crate) fn add(&mut self, kind: ChildKind, running: bool) {
        self.specs += 1;
        self.active += usize::from(running);
        match kind {
            ChildKind::Worker => self.workers += 1,
            ChildKind::Supervisor => self.supervisors += 1,
        }
    }
}
