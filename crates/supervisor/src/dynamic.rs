//! [`DynamicSupervisorRef`]: a one-for-one supervisor whose children are all added at run
//! time and known by pid (OTP's `DynamicSupervisor`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use shoal_process::{
    Addr, Context, ExitReason, Pid, Process, ReplyTo, Runtime, Shutdown, Signal, SpawnOptions,
    StartError,
};

use crate::child::{DEFAULT_KILL_TIMEOUT, StillAlive, stop_together};
use crate::intensity::{self, RestartLog};
use crate::supervisor::SUPERVISOR_CALL_TIMEOUT;
use crate::{Child, ChildCounts, ChildInfo, Intensity, SupervisorError};

/// A dynamic supervisor's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DynamicSupervisorSpec {
    /// The restart budget.
    pub intensity: Intensity,
    /// At most this many children at once (`None`: no limit but memory).
    pub max_children: Option<usize>,
    /// How long to wait for a child that was killed (past its shutdown time) to exit before
    /// reporting it and going on: a kill takes effect only where the child's handler awaits.
    pub kill_timeout: Duration,
}

impl Default for DynamicSupervisorSpec {
    /// The default intensity and kill timeout ([`DEFAULT_KILL_TIMEOUT`]), no maximum.
    fn default() -> Self {
        Self {
            intensity: Intensity::default(),
            max_children: None,
            kill_timeout: DEFAULT_KILL_TIMEOUT,
        }
    }
}

/// A handle to a running dynamic supervisor.
#[derive(Clone, Debug)]
pub struct DynamicSupervisorRef {
    addr: Addr<DynamicSupervisor>,
}

impl DynamicSupervisorRef {
    /// Starts a dynamic supervisor with no children.
    pub async fn start(runtime: &Runtime, spec: DynamicSupervisorSpec) -> Result<Self, StartError> {
        Self::start_with(runtime, spec, SpawnOptions::new()).await
    }

    /// Like [`DynamicSupervisorRef::start`], with spawn options (a link to a parent, a name).
    pub async fn start_with(
        runtime: &Runtime,
        spec: DynamicSupervisorSpec,
        options: SpawnOptions,
    ) -> Result<Self, StartError> {
        let addr = runtime.start_with(DynamicSupervisor::new(spec), options).await?;
        Ok(Self { addr })
    }

    /// The handle of the dynamic supervisor running as `pid` on `runtime`, if it is one.
    pub fn from_pid(runtime: &Runtime, pid: Pid) -> Option<Self> {
        runtime.addr::<DynamicSupervisor>(pid).map(|addr| Self { addr })
    }

    /// The supervisor's pid.
    pub fn pid(&self) -> Pid {
        self.addr.pid()
    }

    /// Starts a child under the supervisor and waits for its `init`.
    pub async fn start_child(&self, child: Child) -> Result<Pid, SupervisorError> {
        match self.request(Request::StartChild(child)).await? {
            Response::Started(started) => started,
            _ => unreachable!("a dynamic supervisor answers StartChild with Started"),
        }
    }

    /// Stops the child `pid` as its shutdown policy says, and forgets it. A child still alive
    /// after it was killed and the kill timeout passed is [`SupervisorError::StillAlive`].
    pub async fn terminate_child(&self, pid: Pid) -> Result<(), SupervisorError> {
        match self.request(Request::TerminateChild(pid)).await? {
            Response::Done(done) => done,
            _ => unreachable!("a dynamic supervisor answers TerminateChild with Done"),
        }
    }

    /// The running children, in start order.
    pub async fn which_children(&self) -> Result<Vec<ChildInfo>, SupervisorError> {
        match self.request(Request::WhichChildren).await? {
            Response::Children(children) => Ok(children),
            _ => unreachable!("a dynamic supervisor answers WhichChildren with Children"),
        }
    }

    /// How many children, workers and supervisors.
    pub async fn count_children(&self) -> Result<ChildCounts, SupervisorError> {
        match self.request(Request::CountChildren).await? {
            Response::Counts(counts) => Ok(counts),
            _ => unreachable!("a dynamic supervisor answers CountChildren with Counts"),
        }
    }

    /// Stops the supervisor: its children stop together (all are told at once, and each gets
    /// its own shutdown time from then, as OTP's dynamic supervisors do), then it exits with
    /// `Shutdown`. Returns its exit reason.
    pub async fn stop(&self) -> ExitReason {
        let runtime = self.addr.runtime();
        let exited = runtime.watch(self.pid());
        runtime.exit(self.pid(), ExitReason::Shutdown);
        exited.await
    }

    async fn request(&self, request: Request) -> Result<Response, SupervisorError> {
        Ok(self.addr.call_timeout(request, SUPERVISOR_CALL_TIMEOUT).await?)
    }
}

pub(crate) enum Request {
    StartChild(Child),
    TerminateChild(Pid),
    WhichChildren,
    CountChildren,
}

pub(crate) enum Response {
    Started(Result<Pid, SupervisorError>),
    Done(Result<(), SupervisorError>),
    Children(Vec<ChildInfo>),
    Counts(ChildCounts),
}

pub(crate) struct DynamicSupervisor {
    spec: DynamicSupervisorSpec,
    /// Running children with their start sequence number (for shutdown order).
    children: HashMap<Pid, (u64, Child)>,
    next_sequence: u64,
    restarts: RestartLog,
}

impl DynamicSupervisor {
    fn new(spec: DynamicSupervisorSpec) -> Self {
        Self { spec, children: HashMap::new(), next_sequence: 0, restarts: RestartLog::default() }
    }

    fn insert(&mut self, pid: Pid, child: Child) {
        self.children.insert(pid, (self.next_sequence, child));
        self.next_sequence += 1;
    }

    /// The running children, oldest first.
    fn in_start_order(&self) -> Vec<(Pid, &Child)> {
        let mut children: Vec<_> =
            self.children.iter().map(|(pid, (sequence, child))| (*sequence, *pid, child)).collect();
        children.sort_by_key(|(sequence, _, _)| *sequence);
        children.into_iter().map(|(_, pid, child)| (pid, child)).collect()
    }

    async fn start_child(
        &mut self,
        child: Child,
        ctx: &Context<Self>,
    ) -> Result<Pid, SupervisorError> {
        if let Some(max) = self.spec.max_children
            && self.children.len() >= max
        {
            return Err(SupervisorError::MaxChildren(max));
        }
        let pid = child
            .start(ctx.runtime(), ctx.pid())
            .await
            .map_err(|error| SupervisorError::Start { id: child.id().to_owned(), error })?;
        self.insert(pid, child);
        Ok(pid)
    }

    async fn child_exited(&mut self, pid: Pid, reason: ExitReason, ctx: &mut Context<Self>) {
        let Some((_, child)) = self.children.remove(&pid) else { return };
        if !child.restart_policy().restarts_after(&reason) {
            return;
        }
        tracing::info!(supervisor = %ctx.pid(), child = child.id(), %reason, "restarting");
        let supervisor = ctx.pid();
        let restarted = match self.restarts.record(self.spec.intensity, ctx.runtime().clock().now())
        {
            Ok(()) => {
                intensity::restart(
                    &mut self.restarts,
                    self.spec.intensity,
                    &child,
                    ctx.runtime(),
                    supervisor,
                )
                .await
            }
            Err(exhausted) => Err(exhausted),
        };
        match restarted {
            Ok(pid) => self.insert(pid, child),
            Err(exhausted) => exhausted.give_up(ctx),
        }
    }
}

impl Process for DynamicSupervisor {
    type Message = Infallible;
    type Call = Request;
    type Reply = Response;

    async fn init(&mut self, ctx: &mut Context<Self>) -> Result<(), ExitReason> {
        ctx.trap_exits(true);
        Ok(())
    }

    async fn handle_cast(&mut self, message: Infallible, _ctx: &mut Context<Self>) {
        match message {}
    }

    async fn handle_call(
        &mut self,
        request: Request,
        reply: ReplyTo<Response>,
        ctx: &mut Context<Self>,
    ) {
        let response = match request {
            Request::StartChild(child) => Response::Started(self.start_child(child, ctx).await),
            Request::TerminateChild(pid) => Response::Done(match self.children.remove(&pid) {
                Some((_, child)) => match child.stop(ctx, pid, self.spec.kill_timeout).await {
                    Ok(()) => Ok(()),
                    Err(StillAlive(pid)) => {
                        Err(SupervisorError::StillAlive { id: child.id().to_owned(), pid })
                    }
                },
                None => Err(SupervisorError::NoSuchPid(pid)),
            }),
            Request::WhichChildren => Response::Children(
                self.in_start_order()
                    .into_iter()
                    .map(|(pid, child)| ChildInfo {
                        id: child.id().to_owned(),
                        pid: Some(pid),
                        kind: child.child_kind(),
                        restart: child.restart_policy(),
                    })
                    .collect(),
            ),
            Request::CountChildren => {
                let mut counts = ChildCounts::default();
                for (_, child) in self.children.values() {
                    counts.add(child.child_kind(), true);
                }
                Response::Counts(counts)
            }
        };
        reply.send(response);
    }

    async fn handle_signal(&mut self, signal: Signal, ctx: &mut Context<Self>) {
        let Signal::Exit { from, reason } = signal else { return };
        if from == ctx.runtime().system_pid() {
            // `Runtime::exit` on the supervisor: an order to stop.
            ctx.stop(reason);
        } else {
            self.child_exited(from, reason, ctx).await;
        }
    }

    /// Stops every child at once (OTP's dynamic supervisors do not stop their children one
    /// by one): ten children that take a second each take a second, not ten.
    async fn terminate(&mut self, _reason: &ExitReason, ctx: &mut Context<Self>) {
        let children: Vec<(Pid, Shutdown)> = self
            .in_start_order()
            .into_iter()
            .rev()
            .map(|(pid, child)| (pid, child.shutdown_policy()))
            .collect();
        // Those still alive after their kill are logged; the supervisor exits regardless.
        stop_together(ctx, &children, self.spec.kill_timeout).await;
        self.children.clear();
    }
}
