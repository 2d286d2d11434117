//! What the tests share: bounded waiting, a scriptable behaviour that reports what it sees
//! ([`Probe`]), and a serialisable one for untyped and remote messaging ([`Calc`]).

use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_process::{Addr, Codec, Context, ExitReason, Pid, Process, ReplyTo, Runtime, Signal};
use tokio::sync::{mpsc, oneshot};

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

/// Polls `future` exactly once, with the current task's waker.
pub(crate) async fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *future).poll(cx))).await
}

/// A runtime with the default configuration on the current tokio runtime.
pub(crate) fn runtime() -> Runtime {
    Runtime::new().expect("a runtime builds inside tokio")
}

/// What a [`Probe`] saw, tagged with the probe's own pid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// A `Cmd::Note` was handled.
    Note(Pid, u64),
    /// `handle_signal` ran.
    Signal(Pid, Signal),
    /// `terminate` ran with this reason.
    Terminated(Pid, ExitReason),
}

/// The sending half that probes report through.
pub(crate) type Events = mpsc::UnboundedSender<Event>;

/// The test's end of the probes' reports.
pub(crate) struct Inbox(mpsc::UnboundedReceiver<Event>);

/// A fresh report channel.
pub(crate) fn reports() -> (Events, Inbox) {
    let (events, inbox) = mpsc::unbounded_channel();
    (events, Inbox(inbox))
}

impl Inbox {
    /// The next report.
    #[track_caller]
    pub(crate) fn next(&mut self) -> impl Future<Output = Event> + '_ {
        within(async { self.0.recv().await.expect("every probe reporting here is gone") })
    }

    /// The next `count` reports, in arrival order.
    #[track_caller]
    pub(crate) fn take(&mut self, count: usize) -> impl Future<Output = Vec<Event>> + '_ {
        within(async move {
            let mut events = Vec::with_capacity(count);
            while events.len() < count {
                events.push(self.0.recv().await.expect("every probe reporting here is gone"));
            }
            events
        })
    }

    /// Resolves once every probe reporting here is gone, failing on any further report.
    #[track_caller]
    pub(crate) fn closed(&mut self) -> impl Future<Output = ()> + '_ {
        within(async {
            if let Some(event) = self.0.recv().await {
                panic!("expected no more reports, got {event:?}");
            }
        })
    }

    /// Fails if a report is waiting now.
    #[track_caller]
    pub(crate) fn assert_empty(&mut self) {
        if let Ok(event) = self.0.try_recv() {
            panic!("expected no report yet, got {event:?}");
        }
    }
}

/// A job run inside a probe, with its state and context.
pub(crate) type Job = Box<dyn FnOnce(&mut Probe, &mut Context<Probe>) + Send>;

/// A future a probe's handler awaits; the job it may yield then runs in the same handler.
pub(crate) type Parking = Pin<Box<dyn Future<Output = Option<Job>> + Send>>;

/// What a probe is told to do.
pub(crate) enum Cmd {
    /// Report `Event::Note` with this number.
    Note(u64),
    /// Run a job in the handler.
    Run(Job),
    /// Say so through `entered`, then await `until` inside the handler (and run the job it
    /// yields, if any).
    Park { entered: oneshot::Sender<()>, until: Parking },
}

/// What a probe is asked; every answer is a `u64`.
pub(crate) enum Ask {
    /// Answer at once with this number.
    Echo(u64),
    /// Keep the reply handle in `Probe::held` (a deferred reply); say so through the sender.
    Hold(oneshot::Sender<()>),
    /// Drop the reply handle unanswered.
    Ignore,
    /// Hand the reply handle to a new tokio task, which answers with what arrives here.
    Hand(oneshot::Receiver<u64>),
    /// Say so through `entered`, then await `answer` inside the handler and reply with it.
    Await { entered: oneshot::Sender<()>, answer: oneshot::Receiver<u64> },
    /// Panic in the handler, holding the reply handle.
    Panic(&'static str),
}

/// A behaviour driven by the test: it does what [`Cmd`]s say and reports what it sees (notes,
/// signals, its own `terminate`) as [`Event`]s.
pub(crate) struct Probe {
    events: Events,
    trap: bool,
    /// Calls held for a deferred reply.
    pub(crate) held: Vec<ReplyTo<u64>>,
    /// When set, `terminate` awaits it before returning (after dropping the held calls).
    pub(crate) linger: Option<oneshot::Receiver<()>>,
}

impl Probe {
    /// A probe that does not trap exits.
    pub(crate) fn new(events: &Events) -> Self {
        Self { events: events.clone(), trap: false, held: Vec::new(), linger: None }
    }

    /// A probe that traps exits from its `init` on.
    pub(crate) fn trapping(events: &Events) -> Self {
        Self { trap: true, ..Self::new(events) }
    }

    fn report(&self, event: Event) {
        // The test may have stopped listening; that is its business.
        let _ = self.events.send(event);
    }
}

impl Process for Probe {
    type Message = Cmd;
    type Call = Ask;
    type Reply = u64;

    async fn init(&mut self, ctx: &mut Context<Self>) -> Result<(), ExitReason> {
        ctx.trap_exits(self.trap);
        Ok(())
    }

    async fn handle_cast(&mut self, cmd: Cmd, ctx: &mut Context<Self>) {
        match cmd {
            Cmd::Note(n) => self.report(Event::Note(ctx.pid(), n)),
            Cmd::Run(job) => job(self, ctx),
            Cmd::Park { entered, until } => {
                let _ = entered.send(());
                if let Some(job) = until.await {
                    job(self, ctx);
                }
            }
        }
    }

    async fn handle_call(&mut self, ask: Ask, reply: ReplyTo<u64>, _ctx: &mut Context<Self>) {
        match ask {
            Ask::Echo(n) => {
                reply.send(n);
            }
            Ask::Hold(held) => {
                self.held.push(reply);
                let _ = held.send(());
            }
            Ask::Ignore => drop(reply),
            Ask::Hand(answer) => {
                tokio::spawn(async move {
                    if let Ok(n) = answer.await {
                        reply.send(n);
                    }
                });
            }
            Ask::Await { entered, answer } => {
                let _ = entered.send(());
                if let Ok(n) = answer.await {
                    reply.send(n);
                }
            }
            Ask::Panic(message) => {
                let _reply = reply;
                panic!("{message}");
            }
        }
    }

    async fn handle_signal(&mut self, signal: Signal, ctx: &mut Context<Self>) {
        self.report(Event::Signal(ctx.pid(), signal));
    }

    async fn terminate(&mut self, reason: &ExitReason, ctx: &mut Context<Self>) {
        // Calls held for a deferred reply are given up on.
        self.held.clear();
        self.report(Event::Terminated(ctx.pid(), reason.clone()));
        if let Some(linger) = self.linger.take() {
            let _ = linger.await;
        }
    }
}

/// Starts a probe (trapping exits if `trap`) and waits until its `init` has run.
pub(crate) async fn start_probe(runtime: &Runtime, events: &Events, trap: bool) -> Addr<Probe> {
    let probe = if trap { Probe::trapping(events) } else { Probe::new(events) };
    within(runtime.start(probe)).await.expect("a probe's init cannot fail")
}

/// Runs `job` inside the probe and returns what it returned.
#[track_caller]
pub(crate) fn run<T: Send + 'static>(
    probe: &Addr<Probe>,
    job: impl FnOnce(&mut Probe, &mut Context<Probe>) -> T + Send + 'static,
) -> impl Future<Output = T> {
    let probe = probe.clone();
    within(async move {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move |state, ctx| {
            let _ = done.send(job(state, ctx));
        });
        probe.cast(Cmd::Run(job)).await.expect("the probe is alive");
        result.await.expect("the probe ran the job")
    })
}

/// Holds a parked probe inside its handler until opened.
pub(crate) struct Gate(oneshot::Sender<Option<Job>>);

impl Gate {
    /// Lets the handler return.
    pub(crate) fn open(self) {
        let _ = self.0.send(None);
    }

    /// Lets the handler return, stopping the probe with `reason`.
    pub(crate) fn open_and_stop(self, reason: ExitReason) {
        let _ = self.0.send(Some(Box::new(move |_, ctx| ctx.stop(reason))));
    }

    /// Lets the handler run `job` (in the same handler that was parked) and return; the job's
    /// result arrives through the receiver.
    pub(crate) fn open_and_run<T: Send + 'static>(
        self,
        job: impl FnOnce(&mut Probe, &mut Context<Probe>) -> T + Send + 'static,
    ) -> oneshot::Receiver<T> {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move |state, ctx| {
            let _ = done.send(job(state, ctx));
        });
        let _ = self.0.send(Some(job));
        result
    }
}

/// Parks the probe inside a handler until the returned gate is opened, and waits until it is
/// parked (so its mailbox is empty and nothing else is handled meanwhile).
#[track_caller]
pub(crate) fn block(probe: &Addr<Probe>) -> impl Future<Output = Gate> {
    let (gate, opened) = oneshot::channel();
    let parked = park(probe, async move { opened.await.ok().flatten() });
    async move {
        parked.await;
        Gate(gate)
    }
}

/// Parks the probe inside a handler on `until` (then runs the job it yields, if any), and
/// waits until it is parked there.
#[track_caller]
pub(crate) fn park(
    probe: &Addr<Probe>,
    until: impl Future<Output = Option<Job>> + Send + 'static,
) -> impl Future<Output = ()> {
    let probe = probe.clone();
    within(async move {
        let (entered, parked) = oneshot::channel();
        let until: Parking = Box::pin(until);
        probe.cast(Cmd::Park { entered, until }).await.expect("the probe is alive");
        parked.await.expect("the probe parked");
    })
}

/// Casts to a [`Calc`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum CalcMsg {
    /// Adds to the total.
    Add(u64),
    /// Stops with this reason.
    Stop(ExitReason),
    /// Parks the handler on the gate given to [`Calc::parkable`], if any.
    Park,
}

/// Calls to a [`Calc`]; every answer is a `u64`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum CalcReq {
    /// The total.
    Get,
    /// Never answered (the reply handle is kept).
    Never,
    /// Panics in the handler, holding the reply handle.
    Panic,
}

/// A serialisable behaviour with a msgpack codec: a running total.
#[derive(Default)]
pub(crate) struct Calc {
    total: u64,
    parking: Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>,
    held: Vec<ReplyTo<u64>>,
}

impl Calc {
    /// Starting from `total`.
    pub(crate) fn new(total: u64) -> Self {
        Self { total, ..Self::default() }
    }

    /// The running total.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// A calc whose `CalcMsg::Park` reports through the first receiver that it is parked and
    /// stays parked until the sender fires (or is dropped).
    pub(crate) fn parkable() -> (Self, oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (entered, parked) = oneshot::channel();
        let (release, gate) = oneshot::channel();
        (Self { parking: Some((entered, gate)), ..Self::default() }, parked, release)
    }
}

impl Process for Calc {
    type Message = CalcMsg;
    type Call = CalcReq;
    type Reply = u64;

    async fn handle_cast(&mut self, message: CalcMsg, ctx: &mut Context<Self>) {
        match message {
            CalcMsg::Add(n) => self.total += n,
            CalcMsg::Stop(reason) => ctx.stop(reason),
            CalcMsg::Park => {
                if let Some((entered, gate)) = self.parking.take() {
                    let _ = entered.send(());
                    let _ = gate.await;
                }
            }
        }
    }

    async fn handle_call(&mut self, request: CalcReq, reply: ReplyTo<u64>, _: &mut Context<Self>) {
        match request {
            CalcReq::Get => {
                reply.send(self.total);
            }
            CalcReq::Never => self.held.push(reply),
            CalcReq::Panic => {
                let _reply = reply;
                panic!("calc failed");
            }
        }
    }

    fn remote_messages() -> Option<Codec<Self>> {
        Some(Codec::msgpack())
    }
}
