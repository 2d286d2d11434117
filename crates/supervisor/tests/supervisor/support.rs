//! What the tests share: bounded waiting, a [`Journal`] of what children did, and a scriptable
//! child behaviour, [`Worker`].

use std::future::{Future, pending};
use std::panic::Location;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use shoal_process::{Context, ExitReason, Pid, Process, ReplyTo, Runtime};
use shoal_supervisor::{Child, DynamicSupervisorRef, SupervisorRef};
use tokio::sync::{Notify, watch};

/// How long any single wait may take before the test fails. Generous: nothing here should
/// take more than milliseconds, and a paused clock makes it free.
pub(crate) const BOUND: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test (at the caller's line) if it takes longer than [`BOUND`].
#[track_caller]
pub(crate) fn within<F: Future>(future: F) -> impl Future<Output = F::Output> {
    let caller = Location::caller();
    async move {
        match tokio::time::timeout(BOUND, future).await {
            Ok(output) => output,
            Err(_) => panic!("{caller}: still waiting after {BOUND:?}"),
        }
    }
}

/// A runtime with the default configuration on the current tokio runtime.
pub(crate) fn runtime() -> Runtime {
    Runtime::new().expect("a runtime builds inside tokio")
}

/// What a [`Worker`] did, with its id and pid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// `init` succeeded.
    Started(String, Pid),
    /// `terminate` began, with this reason.
    Terminated(String, Pid, ExitReason),
}

impl Event {
    /// The pid of the worker that did it.
    pub(crate) fn pid(&self) -> Pid {
        match self {
            Self::Started(_, pid) | Self::Terminated(_, pid, _) => *pid,
        }
    }
}

/// `Event::Started`, for expected values.
pub(crate) fn started(id: &str, pid: Pid) -> Event {
    Event::Started(id.to_owned(), pid)
}

/// `Event::Terminated`, for expected values.
pub(crate) fn terminated(id: &str, pid: Pid, reason: ExitReason) -> Event {
    Event::Terminated(id.to_owned(), pid, reason)
}

/// The shared record of what workers did, in the order they did it (a `watch` channel: a
/// mutex-guarded `Vec` that can also be waited on).
#[derive(Clone)]
pub(crate) struct Journal(Arc<watch::Sender<Vec<Event>>>);

impl Journal {
    pub(crate) fn new() -> Self {
        Self(Arc::new(watch::Sender::new(Vec::new())))
    }

    fn record(&self, event: Event) {
        self.0.send_modify(|events| events.push(event));
    }

    /// Everything recorded so far.
    pub(crate) fn events(&self) -> Vec<Event> {
        self.0.borrow().clone()
    }

    /// Waits until at least `count` events are recorded; returns them all.
    #[track_caller]
    pub(crate) fn wait_for(&self, count: usize) -> impl Future<Output = Vec<Event>> + use<> {
        let mut changes = self.0.subscribe();
        within(async move {
            changes
                .wait_for(|events| events.len() >= count)
                .await
                .expect("the journal outlives its subscribers")
                .clone()
        })
    }
}

/// What a test can order a [`Worker`] to do.
#[derive(Clone, Debug)]
pub(crate) enum Order {
    /// `ctx.stop(reason)`.
    Stop(ExitReason),
    /// Panic with this message.
    Panic(&'static str),
    /// Say so through the first channel, then block the thread in the handler (never reaching
    /// an await point, so no kill can end it) until the second one delivers.
    Freeze(Arc<(std::sync::mpsc::Sender<()>, Mutex<std::sync::mpsc::Receiver<()>>)>),
}

/// What a [`Worker`] does in `terminate` after journaling it.
#[derive(Clone)]
pub(crate) enum Hang {
    /// Nothing: it exits at once.
    No,
    /// Awaits forever: only a kill ends it.
    Forever,
    /// Awaits until the test notifies.
    Until(Arc<Notify>),
}

/// A child behaviour that journals its `init` and `terminate`, stops or panics on order, and
/// answers any call with its pid.
#[derive(Clone)]
pub(crate) struct Worker {
    id: String,
    journal: Journal,
    hang: Hang,
    /// Counts `init` attempts; those past the allowance fail.
    starts: Option<(Arc<AtomicUsize>, usize)>,
}

/// The reason a [`Worker`] past its start allowance fails `init` with.
pub(crate) fn init_refused() -> ExitReason {
    ExitReason::custom("init refused")
}

impl Worker {
    pub(crate) fn new(id: &str, journal: &Journal) -> Self {
        Self { id: id.to_owned(), journal: journal.clone(), hang: Hang::No, starts: None }
    }

    /// Hangs in `terminate` as `hang` says.
    pub(crate) fn hanging(mut self, hang: Hang) -> Self {
        self.hang = hang;
        self
    }

    /// Counts its `init` attempts in `starts`; only the first `allowed` succeed.
    pub(crate) fn starts_allowed(mut self, starts: &Arc<AtomicUsize>, allowed: usize) -> Self {
        self.starts = Some((starts.clone(), allowed));
        self
    }

    /// A permanent child that builds a fresh copy of this worker at every start.
    pub(crate) fn child(self) -> Child {
        let id = self.id.clone();
        Child::new(id, move || self.clone())
    }
}

impl Process for Worker {
    type Message = Order;
    type Call = ();
    type Reply = Pid;

    async fn init(&mut self, ctx: &mut Context<Self>) -> Result<(), ExitReason> {
        if let Some((starts, allowed)) = &self.starts
            && starts.fetch_add(1, Ordering::SeqCst) >= *allowed
        {
            return Err(init_refused());
        }
        self.journal.record(Event::Started(self.id.clone(), ctx.pid()));
        Ok(())
    }

    async fn handle_cast(&mut self, order: Order, ctx: &mut Context<Self>) {
        match order {
            Order::Stop(reason) => ctx.stop(reason),
            Order::Panic(message) => panic!("{message}"),
            Order::Freeze(channels) => {
                let (frozen, thaw) = &*channels;
                let _ = frozen.send(());
                // Blocking in place hands this worker's other tasks to another thread.
                tokio::task::block_in_place(|| {
                    let _ = thaw.lock().unwrap_or_else(PoisonError::into_inner).recv();
                });
            }
        }
    }

    async fn handle_call(&mut self, _: (), reply: ReplyTo<Pid>, ctx: &mut Context<Self>) {
        reply.send(ctx.pid());
    }

    async fn terminate(&mut self, reason: &ExitReason, ctx: &mut Context<Self>) {
        self.journal.record(Event::Terminated(self.id.clone(), ctx.pid(), reason.clone()));
        match &self.hang {
            Hang::No => {}
            Hang::Forever => pending::<()>().await,
            Hang::Until(release) => release.notified().await,
        }
    }
}

/// Freezes the worker `pid` in a handler that blocks its thread (on a multi-threaded runtime)
/// and waits until it is frozen; it thaws when the returned sender sends or drops.
pub(crate) async fn freeze(runtime: &Runtime, pid: Pid) -> std::sync::mpsc::Sender<()> {
    let addr = runtime.addr::<Worker>(pid).expect("the worker to freeze is alive");
    let (frozen, is_frozen) = std::sync::mpsc::channel();
    let (thaw, thawed) = std::sync::mpsc::channel();
    addr.cast(Order::Freeze(Arc::new((frozen, Mutex::new(thawed))))).await.expect("it takes it");
    within(async {
        while is_frozen.try_recv().is_err() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    thaw
}

/// A plain permanent [`Worker`] child.
pub(crate) fn worker(id: &str, journal: &Journal) -> Child {
    Worker::new(id, journal).child()
}

/// Orders the worker `pid` to do `order` and waits for it to exit; returns its exit reason.
#[track_caller]
pub(crate) fn crash(runtime: &Runtime, pid: Pid, order: Order) -> impl Future<Output = ExitReason> {
    let addr = runtime.addr::<Worker>(pid).expect("the worker to crash is alive");
    let exited = runtime.watch(pid);
    within(async move {
        addr.cast(order).await.expect("the worker takes the order");
        exited.await
    })
}

/// A supervisor's children as `(id, pid)` pairs, in start order.
pub(crate) type Listing = Vec<(String, Option<Pid>)>;

/// An expected [`Listing`].
pub(crate) fn listing(children: &[(&str, Option<Pid>)]) -> Listing {
    children.iter().map(|(id, pid)| ((*id).to_owned(), *pid)).collect()
}

/// What `which_children` says, as a [`Listing`].
#[track_caller]
pub(crate) fn children(supervisor: &SupervisorRef) -> impl Future<Output = Listing> + '_ {
    within(async move {
        let children = supervisor.which_children().await.expect("the supervisor answers");
        children.into_iter().map(|child| (child.id, child.pid)).collect()
    })
}

/// What a dynamic supervisor's `which_children` says, as a [`Listing`].
#[track_caller]
pub(crate) fn dynamic_children(
    supervisor: &DynamicSupervisorRef,
) -> impl Future<Output = Listing> + '_ {
    within(async move {
        let children = supervisor.which_children().await.expect("the supervisor answers");
        children.into_iter().map(|child| (child.id, child.pid)).collect()
    })
}

/// The pids of a listing whose children all run.
pub(crate) fn running<const N: usize>(listing: &Listing) -> [Pid; N] {
    let pids: Vec<Pid> =
        listing.iter().map(|(id, pid)| pid.unwrap_or_else(|| panic!("{id} runs"))).collect();
    pids.try_into().unwrap_or_else(|pids: Vec<Pid>| panic!("{N} children, not {}", pids.len()))
}

/// Whether the reason is the one a supervisor exits with past its restart intensity: OTP's
/// `shutdown` (the detail goes to the log).
pub(crate) fn is_intensity_exit(reason: &ExitReason) -> bool {
    *reason == ExitReason::Shutdown
}
