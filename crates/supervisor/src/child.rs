//! Children: how to start one ([`Child`]), and how a supervisor stops one.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_process::{
    ChildSpec, Context, ExitReason, Pid, Process, Restart, Runtime, Shutdown, SpawnOptions,
    StartError,
};

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
    /// A permanent worker built on this node by `build`, called anew at every (re)start.
    pub fn new<P, F>(id: impl Into<String>, build: F) -> Self
    where
        P: Process,
        F: Fn() -> P + Send + Sync + 'static,
    {
        let start = move |runtime: Runtime, options: SpawnOptions| -> StartFuture {
            let process = build();
            Box::pin(
                async move { runtime.start_with(process, options).await.map(|addr| addr.pid()) },
            )
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

    /// Stops the running child `pid` as its shutdown policy says; returns its exit reason.
    pub(crate) async fn stop<S: Process>(&self, ctx: &Context<S>, pid: Pid) -> ExitReason {
        stop(ctx, pid, self.shutdown).await
    }
}

/// Stops `pid`, a child of the supervisor running `ctx`, as OTP does: unlink (so no stray
/// exit signal comes back), then ask it to shut down and wait up to the policy's timeout,
/// then kill it.
pub(crate) async fn stop<S: Process>(ctx: &Context<S>, pid: Pid, shutdown: Shutdown) -> ExitReason {
    let runtime = ctx.runtime();
    ctx.unlink(pid);
    let mut exited = runtime.watch(pid);
    let grace = match shutdown {
        Shutdown::BrutalKill => Duration::ZERO,
        Shutdown::Timeout(grace) => grace,
        Shutdown::Infinity => {
            ctx.exit(pid, ExitReason::Shutdown);
            return exited.await;
        }
    };
    if !grace.is_zero() {
        ctx.exit(pid, ExitReason::Shutdown);
        if let Ok(reason) = tokio::time::timeout(grace, &mut exited).await {
            return reason;
        }
        tracing::warn!(%pid, ?grace, "child did not shut down in time: killing it");
    }
    runtime.kill(pid);
    exited.await
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
