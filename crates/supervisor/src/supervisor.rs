//! [`SupervisorRef`]: a supervisor with a fixed strategy over an ordered list of children.

use std::collections::HashSet;
use std::convert::Infallible;
use std::time::Duration;

use shoal_process::{
    Addr, Context, ExitReason, Pid, Process, ReplyTo, Restart, Runtime, Signal, SpawnOptions,
    StartError,
};

use crate::child::{DEFAULT_KILL_TIMEOUT, StillAlive};
use crate::intensity::{self, RestartLog};
use crate::{Child, ChildCounts, ChildInfo, Intensity, SupervisorError};

/// How long a caller waits for a supervisor's answer; starting and stopping children can take
/// their own `init` and shutdown time.
pub const SUPERVISOR_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// What a supervisor does when a child exits and must be restarted, as in OTP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Restart only that child.
    #[default]
    OneForOne,
    /// Stop all other children (in reverse start order), then restart them all in order.
    OneForAll,
    /// Stop the children started after it (in reverse order), then restart it and them.
    RestForOne,
}

/// A supervisor's configuration: strategy, restart budget, and children in start order.
#[derive(Clone, Debug)]
pub struct SupervisorSpec {
    strategy: Strategy,
    intensity: Intensity,
    kill_timeout: Duration,
    children: Vec<Child>,
}

impl Default for SupervisorSpec {
    /// One for one, the default intensity and kill timeout, no children.
    fn default() -> Self {
        Self {
            strategy: Strategy::default(),
            intensity: Intensity::default(),
            kill_timeout: DEFAULT_KILL_TIMEOUT,
            children: Vec::new(),
        }
    }
}

impl SupervisorSpec {
    /// A supervisor with `strategy`, the default intensity and no children yet.
    pub fn new(strategy: Strategy) -> Self {
        Self { strategy, ..Self::default() }
    }

    /// With restart budget `intensity`.
    pub fn intensity(mut self, intensity: Intensity) -> Self {
        self.intensity = intensity;
        self
    }

    /// How long to wait for a child that was killed (past its shutdown time) to exit before
    /// reporting it and going on (default [`DEFAULT_KILL_TIMEOUT`]): a kill takes effect only
    /// where the child's handler awaits.
    pub fn kill_timeout(mut self, kill_timeout: Duration) -> Self {
        self.kill_timeout = kill_timeout;
        self
    }

    /// Adds a child, started after those added before.
    pub fn child(mut self, child: Child) -> Self {
        self.children.push(child);
        self
    }
}

/// A handle to a running supervisor.
///
/// ```
/// use shoal_process::{Context, Process, Runtime};
/// use shoal_supervisor::{Child, Strategy, SupervisorRef, SupervisorSpec};
///
/// struct Worker;
/// impl Process for Worker {
///     type Message = ();
///     type Call = ();
///     type Reply = ();
///     async fn handle_cast(&mut self, _: (), _: &mut Context<Self>) {}
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let runtime = Runtime::new()?;
/// let spec = SupervisorSpec::new(Strategy::OneForOne)
///     .child(Child::new("a", || Worker))
///     .child(Child::new("b", || Worker));
/// let supervisor = SupervisorRef::start(&runtime, spec).await?;
/// let counts = supervisor.count_children().await?;
/// assert_eq!((counts.specs, counts.active), (2, 2));
/// supervisor.stop().await;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SupervisorRef {
    addr: Addr<Supervisor>,
}

impl SupervisorRef {
    /// Starts a supervisor and its children (in order); fails if any child fails to start,
    /// after stopping those already started.
    pub async fn start(runtime: &Runtime, spec: SupervisorSpec) -> Result<Self, StartError> {
        Self::start_with(runtime, spec, SpawnOptions::new()).await
    }

    /// Like [`SupervisorRef::start`], with spawn options (a link to a parent, a name).
    pub async fn start_with(
        runtime: &Runtime,
        spec: SupervisorSpec,
        options: SpawnOptions,
    ) -> Result<Self, StartError> {
        let addr = runtime.start_with(Supervisor::new(spec), options).await?;
        Ok(Self { addr })
    }

    /// The handle of the supervisor running as `pid` on `runtime`, if it is one.
    pub fn from_pid(runtime: &Runtime, pid: Pid) -> Option<Self> {
        runtime.addr::<Supervisor>(pid).map(|addr| Self { addr })
    }

    /// The supervisor's pid.
    pub fn pid(&self) -> Pid {
        self.addr.pid()
    }

    /// Starts and adds a child (the last in start order).
    pub async fn start_child(&self, child: Child) -> Result<Pid, SupervisorError> {
        match self.request(Request::StartChild(child)).await? {
            Response::Started(started) => started,
            _ => unreachable!("a supervisor answers StartChild with Started"),
        }
    }

    /// Stops the child `id` as its shutdown policy says; it stays known (unless temporary) and
    /// can be restarted with [`SupervisorRef::restart_child`]. A child still alive after it
    /// was killed and the kill timeout passed is [`SupervisorError::StillAlive`].
    pub async fn terminate_child(&self, id: &str) -> Result<(), SupervisorError> {
        self.done(Request::TerminateChild(id.to_owned())).await
    }

    /// Starts again the known, stopped child `id`.
    pub async fn restart_child(&self, id: &str) -> Result<Pid, SupervisorError> {
        match self.request(Request::RestartChild(id.to_owned())).await? {
            Response::Started(started) => started,
            _ => unreachable!("a supervisor answers RestartChild with Started"),
        }
    }

    /// Forgets the stopped child `id`.
    pub async fn delete_child(&self, id: &str) -> Result<(), SupervisorError> {
        self.done(Request::DeleteChild(id.to_owned())).await
    }

    /// The children, in start order.
    pub async fn which_children(&self) -> Result<Vec<ChildInfo>, SupervisorError> {
        match self.request(Request::WhichChildren).await? {
            Response::Children(children) => Ok(children),
            _ => unreachable!("a supervisor answers WhichChildren with Children"),
        }
    }

    /// How many children, running, workers and supervisors.
    pub async fn count_children(&self) -> Result<ChildCounts, SupervisorError> {
        match self.request(Request::CountChildren).await? {
            Response::Counts(counts) => Ok(counts),
            _ => unreachable!("a supervisor answers CountChildren with Counts"),
        }
    }

    /// Stops the supervisor: its children stop in reverse start order, then it exits with
    /// `Shutdown`. Returns its exit reason.
    pub async fn stop(&self) -> ExitReason {
        let runtime = self.addr_runtime();
        let exited = runtime.watch(self.pid());
        runtime.exit(self.pid(), ExitReason::Shutdown);
        exited.await
    }

    fn addr_runtime(&self) -> Runtime {
        self.addr.runtime().clone()
    }

    async fn request(&self, request: Request) -> Result<Response, SupervisorError> {
        Ok(self.addr.call_timeout(request, SUPERVISOR_CALL_TIMEOUT).await?)
    }

    async fn done(&self, request: Request) -> Result<(), SupervisorError> {
        match self.request(request).await? {
            Response::Done(done) => done,
            _ => unreachable!("a supervisor answers with Done"),
        }
    }
}

pub(crate) enum Request {
    StartChild(Child),
    TerminateChild(String),
    RestartChild(String),
    DeleteChild(String),
    WhichChildren,
    CountChildren,
}

pub(crate) enum Response {
    Started(Result<Pid, SupervisorError>),
    Done(Result<(), SupervisorError>),
    Children(Vec<ChildInfo>),
    Counts(ChildCounts),
}

/// The supervisor's state: the children in start order, each running or not.
pub(crate) struct Supervisor {
    strategy: Strategy,
    intensity: Intensity,
    kill_timeout: Duration,
    children: Vec<Slot>,
    restarts: RestartLog,
}

struct Slot {
    child: Child,
    pid: Option<Pid>,
}

impl Supervisor {
    pub(crate) fn new(spec: SupervisorSpec) -> Self {
        let children = spec.children.into_iter().map(|child| Slot { child, pid: None }).collect();
        Self {
            strategy: spec.strategy,
            intensity: spec.intensity,
            kill_timeout: spec.kill_timeout,
            children,
            restarts: RestartLog::default(),
        }
    }

    fn position(&self, id: &str) -> Option<usize> {
        self.children.iter().position(|slot| slot.child.id() == id)
    }

    /// Stops the running children among `indices`, one at a time, last first (as OTP's
    /// supervisors do); returns those still alive after they were killed (logged).
    async fn stop_children(
        &mut self,
        ctx: &Context<Self>,
        indices: std::ops::Range<usize>,
    ) -> Vec<StillAlive> {
        let mut alive = Vec::new();
        for slot in self.children[indices].iter_mut().rev() {
            if let Some(pid) = slot.pid.take()
                && let Err(still) = slot.child.stop(ctx, pid, self.kill_timeout).await
            {
                alive.push(still);
            }
        }
        alive
    }

    /// A child exited with `reason`: apply its restart policy and the strategy.
    async fn child_exited(&mut self, index: usize, reason: ExitReason, ctx: &mut Context<Self>) {
        let slot = &mut self.children[index];
        slot.pid = None;
        let restart = slot.child.restart_policy();
        if !restart.restarts_after(&reason) {
            if restart == Restart::Temporary {
                self.children.remove(index);
            }
            return;
        }
        tracing::info!(supervisor = %ctx.pid(), child = slot.child.id(), %reason, "restarting");
        if let Err(exhausted) = self.restarts.record(self.intensity, ctx.runtime().clock().now()) {
            exhausted.give_up(ctx);
            return;
        }
        let affected = match self.strategy {
            Strategy::OneForOne => index..index + 1,
            Strategy::OneForAll => 0..self.children.len(),
            Strategy::RestForOne => index..self.children.len(),
        };
        // The failed child, and the others of the range that were running, come back; a
        // temporary child stopped because of a sibling is forgotten, as in OTP.
        let comeback: HashSet<String> = self.children[affected.clone()]
            .iter()
            .enumerate()
            .filter(|(offset, slot)| affected.start + offset == index || slot.pid.is_some())
            .map(|(_, slot)| slot.child.id().to_owned())
            .collect();
        self.stop_children(ctx, affected).await;
        self.children.retain(|slot| {
            !(comeback.contains(slot.child.id())
                && slot.child.restart_policy() == Restart::Temporary)
        });
        let supervisor = ctx.pid();
        for slot in self.children.iter_mut().filter(|slot| comeback.contains(slot.child.id())) {
            match intensity::restart(
                &mut self.restarts,
                self.intensity,
                &slot.child,
                ctx.runtime(),
                supervisor,
            )
            .await
            {
                Ok(pid) => slot.pid = Some(pid),
                Err(exhausted) => {
                    exhausted.give_up(ctx);
                    return;
                }
            }
        }
    }

    async fn start_child(
        &mut self,
        child: Child,
        ctx: &Context<Self>,
    ) -> Result<Pid, SupervisorError> {
        if let Some(index) = self.position(child.id()) {
            let id = child.id().to_owned();
            return Err(match self.children[index].pid {
                Some(pid) => SupervisorError::AlreadyStarted { id, pid },
                None => SupervisorError::AlreadyPresent(id),
            });
        }
        let pid = child
            .start(ctx.runtime(), ctx.pid())
            .await
            .map_err(|error| SupervisorError::Start { id: child.id().to_owned(), error })?;
        self.children.push(Slot { child, pid: Some(pid) });
        Ok(pid)
    }

    async fn terminate_child(
        &mut self,
        id: &str,
        ctx: &Context<Self>,
    ) -> Result<(), SupervisorError> {
        let index = self.position(id).ok_or_else(|| SupervisorError::NotFound(id.to_owned()))?;
        let alive = self.stop_children(ctx, index..index + 1).await;
        if self.children[index].child.restart_policy() == Restart::Temporary {
            self.children.remove(index);
        }
        match alive.first() {
            Some(StillAlive(pid)) => {
                Err(SupervisorError::StillAlive { id: id.to_owned(), pid: *pid })
            }
            None => Ok(()),
        }
    }

    async fn restart_child(
        &mut self,
        id: &str,
        ctx: &Context<Self>,
    ) -> Result<Pid, SupervisorError> {
        let index = self.position(id).ok_or_else(|| SupervisorError::NotFound(id.to_owned()))?;
        let slot = &mut self.children[index];
        if let Some(pid) = slot.pid {
            return Err(SupervisorError::AlreadyStarted { id: id.to_owned(), pid });
        }
        let pid = slot
            .child
            .start(ctx.runtime(), ctx.pid())
            .await
            .map_err(|error| SupervisorError::Start { id: id.to_owned(), error })?;
        slot.pid = Some(pid);
        Ok(pid)
    }

    fn delete_child(&mut self, id: &str) -> Result<(), SupervisorError> {
        let index = self.position(id).ok_or_else(|| SupervisorError::NotFound(id.to_owned()))?;
        if self.children[index].pid.is_some() {
            return Err(SupervisorError::Running(id.to_owned()));
        }
        self.children.remove(index);
        Ok(())
    }

    fn which_children(&self) -> Vec<ChildInfo> {
        self.children
            .iter()
            .map(|slot| ChildInfo {
                id: slot.child.id().to_owned(),
                pid: slot.pid,
                kind: slot.child.child_kind(),
                restart: slot.child.restart_policy(),
            })
            .collect()
    }

    fn count_children(&self) -> ChildCounts {
        let mut counts = ChildCounts::default();
        for slot in &self.children {
            counts.add(slot.child.child_kind(), slot.pid.is_some());
        }
        counts
    }
}

impl Process for Supervisor {
    type Message = Infallible;
    type Call = Request;
    type Reply = Response;

    async fn init(&mut self, ctx: &mut Context<Self>) -> Result<(), ExitReason> {
        ctx.trap_exits(true);
        let mut ids = HashSet::new();
        if let Some(slot) =
            self.children.iter().find(|slot| !ids.insert(slot.child.id().to_owned()))
        {
            return Err(ExitReason::custom(format!("duplicate child id {:?}", slot.child.id())));
        }
        for index in 0..self.children.len() {
            let slot = &mut self.children[index];
            match slot.child.start(ctx.runtime(), ctx.pid()).await {
                Ok(pid) => slot.pid = Some(pid),
                Err(error) => {
                    let reason = ExitReason::custom(format!(
                        "child {:?} did not start: {error}",
                        slot.child.id()
                    ));
                    self.stop_children(ctx, 0..index).await;
                    return Err(reason);
                }
            }
        }
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
            Request::TerminateChild(id) => Response::Done(self.terminate_child(&id, ctx).await),
            Request::RestartChild(id) => Response::Started(self.restart_child(&id, ctx).await),
            Request::DeleteChild(id) => Response::Done(self.delete_child(&id)),
            Request::WhichChildren => Response::Children(self.which_children()),
            Request::CountChildren => Response::Counts(self.count_children()),
        };
        reply.send(response);
    }

    async fn handle_signal(&mut self, signal: Signal, ctx: &mut Context<Self>) {
        let Signal::Exit { from, reason } = signal else { return };
        if let Some(index) = self.children.iter().position(|slot| slot.pid == Some(from)) {
            self.child_exited(index, reason, ctx).await;
        } else if from == ctx.runtime().system_pid() {
            // `Runtime::exit` on the supervisor: an order to stop (the parent's exit is
            // handled by the runtime). Exits from former children need nothing done.
            ctx.stop(reason);
        }
    }

    async fn terminate(&mut self, _reason: &ExitReason, ctx: &mut Context<Self>) {
        self.stop_children(ctx, 0..self.children.len()).await;
    }
}
