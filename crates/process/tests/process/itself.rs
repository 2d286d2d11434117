//! A process never waits on itself: a call to itself is refused at once, and a cast to itself
//! never waits for room that only it could make.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_process::{
    CallError, Context, ExitReason, MailboxConfig, Overflow, Process, ReplyTo, SendError,
    SpawnOptions,
};
use tokio::sync::{mpsc, oneshot};

use crate::support::{runtime, within};

/// What [`Loner`] is told.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Order {
    /// Waits at its gate, then sends itself a cast and a call both ways (by handle and by pid),
    /// and reports what came of them.
    Test,
    /// Nothing.
    Filler,
}

/// What a [`Loner`] got from sending to itself.
#[derive(Debug)]
struct Outcomes {
    cast: Result<(), SendError<Order>>,
    cast_by_pid: Result<(), SendError<Order>>,
    call: Result<u64, CallError>,
    call_by_pid: Result<u64, CallError>,
}

/// A behaviour that sends to itself, from `init` and from a handler.
struct Loner {
    /// Told when `Order::Test` is being handled.
    entered: Option<oneshot::Sender<()>>,
    /// Opened by the test once it has filled the mailbox.
    gate: Option<oneshot::Receiver<()>>,
    report: mpsc::UnboundedSender<Report>,
}

/// What `init` got from calling itself, then what `Order::Test` got.
#[derive(Debug)]
enum Report {
    Init(Result<u64, CallError>),
    Test(Outcomes),
}

impl Loner {
    async fn send_to_itself(ctx: &Context<Self>) -> Outcomes {
        let (me, runtime) = (ctx.addr(), ctx.runtime());
        // Longer than the test's bound: a call that waited would fail the test, not time out.
        let forever = Duration::from_secs(3_600);
        Outcomes {
            cast: me.cast(Order::Filler).await,
            cast_by_pid: runtime.cast(me.pid(), Order::Filler).await,
            call: me.call_timeout(1, forever).await,
            call_by_pid: runtime.call(me.pid(), 1_u64, forever).await,
        }
    }
}

impl Process for Loner {
    type Message = Order;
    type Call = u64;
    type Reply = u64;

    async fn init(&mut self, ctx: &mut Context<Self>) -> Result<(), ExitReason> {
        let forever = Duration::from_secs(3_600);
        let _ = self.report.send(Report::Init(ctx.addr().call_timeout(0, forever).await));
        Ok(())
    }

    async fn handle_cast(&mut self, order: Order, ctx: &mut Context<Self>) {
        if order == Order::Test {
            let _ = self.entered.take().expect("one test").send(());
            let _ = self.gate.take().expect("one test").await;
            let _ = self.report.send(Report::Test(Self::send_to_itself(ctx).await));
        }
    }

    async fn handle_call(&mut self, n: u64, reply: ReplyTo<u64>, _: &mut Context<Self>) {
        reply.send(n);
    }
}

/// Starts a [`Loner`] with a mailbox of one message under `overflow`, takes the report of its
/// `init`, and has it send to itself from a handler while its mailbox is full; returns both.
async fn send_to_itself(overflow: Overflow) -> (Result<u64, CallError>, Outcomes) {
    let runtime = runtime();
    let (entered, handling) = oneshot::channel();
    let (open, gate) = oneshot::channel();
    let (report, mut reports) = mpsc::unbounded_channel();
    let loner = Loner { entered: Some(entered), gate: Some(gate), report };
    let options = SpawnOptions::new().mailbox(MailboxConfig { capacity: 1, overflow });
    let loner = within(runtime.start_with(loner, options)).await.expect("it starts");
    let Some(Report::Init(init)) = within(reports.recv()).await else { panic!("no init report") };
    loner.cast(Order::Test).await.expect("room for the test");
    within(handling).await.expect("the test is handled");
    loner.try_cast(Order::Filler).expect("room for one");
    open.send(()).expect("the loner waits at its gate");
    let Some(Report::Test(outcomes)) = within(reports.recv()).await else {
        panic!("no test report")
    };
    (init, outcomes)
}

// OTP gen_server:call to self exits with `calling_self` at once: a call to itself, by handle
// or by pid, from `init` or a handler, is refused with CallingSelf rather than left to wait
// for a reply only the caller could give (here with an hour's timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_itself_is_refused_at_once() {
    for overflow in [Overflow::Wait, Overflow::Reject] {
        let (init, outcomes) = send_to_itself(overflow).await;
        assert_eq!(init, Err(CallError::CallingSelf));
        assert_eq!(outcomes.call, Err(CallError::CallingSelf));
        assert_eq!(outcomes.call_by_pid, Err(CallError::CallingSelf));
    }
}

// A cast to itself never waits: into its own full mailbox it fails with Full (the message
// handed back), as a try_cast does, whatever the overflow policy; with `Wait` it would wait for
// room that only its own handler, the one waiting, could make.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cast_to_itself_never_waits_on_its_full_mailbox() {
    for overflow in [Overflow::Wait, Overflow::Reject] {
        let (_, outcomes) = send_to_itself(overflow).await;
        assert!(matches!(outcomes.cast, Err(SendError::Full(Order::Filler))), "{outcomes:?}");
        assert!(
            matches!(outcomes.cast_by_pid, Err(SendError::Full(Order::Filler))),
            "{outcomes:?}"
        );
    }
}
