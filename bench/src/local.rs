//! Metrics of one node's process runtime (`shoal-process`), all in this OS process:
//! messaging, calls, spawning, and the memory an idle process costs.
//!
//! Every sample builds a fresh [`Runtime`] with the default configuration (so the default
//! mailbox: 1,024 messages, senders wait when it is full) on a fresh multi-thread tokio
//! runtime with the default worker count, and drives it from a task on those workers (see
//! [`on_workers`]). Processes are started with [`Runtime::start`] before the clock starts,
//! except where spawning is what is measured.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::ensure;
use shoal_process::{Context, ExitReason, Process, ReplyTo, Runtime};
use tokio::sync::{Notify, oneshot};

use crate::harness::{on_workers, resident_bytes};

/// Casts sent by `local_send_msgs_per_s`.
const CASTS: u64 = 2_000_000;
/// Untimed calls before `local_call_rtt_us` starts its clock.
const WARM_UP_CALLS: u32 = 10_000;
/// Timed calls of `local_call_rtt_us`.
const CALLS: u32 = 200_000;
/// Processes spawned by `spawn_ns` and `process_bytes`.
const IDLE_PROCESSES: usize = 200_000;
/// How long `process_bytes` lets the last processes settle before it reads memory.
const SETTLE: Duration = Duration::from_millis(50);

/// `local_send_msgs_per_s`: one sender task casts 2,000,000 `u64`s, one after the other, to
/// one process through a typed [`shoal_process::Addr`] with `cast(..).await` (so it waits
/// whenever the mailbox is full). The process counts them and, on the last one, fires a
/// oneshot. Timed from just before the first cast until the sender has received that oneshot;
/// the value is casts ÷ seconds.
pub(crate) fn send_msgs_per_s() -> anyhow::Result<f64> {
    on_workers(async {
        let runtime = Runtime::new()?;
        send_casts(&runtime).await
    })
}

/// The timed part of `local_send_msgs_per_s`, on `runtime` (also run by
/// [`crate::observed`] with a metrics sampler running).
pub(crate) async fn send_casts(runtime: &Runtime) -> anyhow::Result<f64> {
    let (done, all_handled) = oneshot::channel();
    let counter = runtime.start(Countdown { left: CASTS, done: Some(done) }).await?;
    let started = Instant::now();
    for n in 0..CASTS {
        counter.cast(n).await?;
    }
    all_handled.await?;
    let elapsed = started.elapsed();
    eprintln!("{CASTS} casts handled in {elapsed:?}");
    Ok(CASTS as f64 / elapsed.as_secs_f64())
}

/// `local_call_rtt_us`: one task calls one process with [`shoal_process::Addr::call`] (the
/// default timeout), one call after the other; the process replies at once with the request.
/// After 10,000 untimed calls, times 200,000 calls; the value is the mean, in microseconds.
pub(crate) fn call_rtt_us() -> anyhow::Result<f64> {
    on_workers(async {
        let runtime = Runtime::new()?;
        let echo = runtime.start(Echo).await?;
        for n in 0..WARM_UP_CALLS {
            ensure!(echo.call(n).await? == n, "the echo process answered another request");
        }
        let started = Instant::now();
        for n in 0..CALLS {
            ensure!(echo.call(n).await? == n, "the echo process answered another request");
        }
        let elapsed = started.elapsed();
        eprintln!("{CALLS} calls in {elapsed:?}");
        Ok(elapsed.as_secs_f64() * 1e6 / f64::from(CALLS))
    })
}

/// `spawn_ns`: spawns 200,000 [`Idle`] processes with [`Runtime::spawn`] (dropping each
/// handle), from one task. Timed from just before the first spawn until every process has run
/// `init` (the last `init` to run wakes the spawning task), and divided by 200,000: the cost
/// of creating a process *and* running it to its first wait on the mailbox, not only of the
/// call to `spawn`. That `init` bumps one shared atomic counter. The time of the spawn loop
/// alone goes to stderr.
pub(crate) fn spawn_ns() -> anyhow::Result<f64> {
    on_workers(async {
        let runtime = Runtime::new()?;
        let spawned = spawn_idle(&runtime, IDLE_PROCESSES).await?;
        let per_process_ns =
            |elapsed: Duration| elapsed.as_secs_f64() * 1e9 / IDLE_PROCESSES as f64;
        eprintln!(
            "{IDLE_PROCESSES} spawns: loop {:?} ({:.0} ns each), all initialised after {:?}",
            spawned.loop_done,
            per_process_ns(spawned.loop_done),
            spawned.all_initialised,
        );
        Ok(per_process_ns(spawned.all_initialised))
    })
}

/// `process_bytes`: the resident memory (`VmRSS` from `/proc/self/status`) of this OS process
/// is read once the runtime is up, and again after spawning 200,000 [`Idle`] processes as
/// `spawn_ns` does, waiting until each has run `init`, and then 50 ms more so that the last of
/// them have gone to sleep on their empty mailbox. The value is the growth ÷ 200,000: the
/// process's state, its task, mailbox and control block, and its share of the process table.
/// The handles `spawn` returns are dropped, so they are not counted.
pub(crate) fn process_bytes() -> anyhow::Result<f64> {
    on_workers(async {
        let runtime = Runtime::new()?;
        let before = resident_bytes()?;
        spawn_idle(&runtime, IDLE_PROCESSES).await?;
        tokio::time::sleep(SETTLE).await;
        let after = resident_bytes()?;
        eprintln!("resident: {before} bytes before, {after} bytes after");
        ensure!(after > before, "resident memory did not grow ({before} → {after} bytes)");
        Ok((after - before) as f64 / IDLE_PROCESSES as f64)
    })
}

/// How long [`spawn_idle`] took.
struct Spawned {
    /// Until the last `spawn` returned.
    loop_done: Duration,
    /// Until every process had run `init`.
    all_initialised: Duration,
}

/// Spawns `count` [`Idle`] processes and waits until each has run `init`.
async fn spawn_idle(runtime: &Runtime, count: usize) -> anyhow::Result<Spawned> {
    IDLE_INITS.count.store(0, Ordering::Relaxed);
    IDLE_INITS.target.store(count, Ordering::Relaxed);
    let alive_before = runtime.process_count();
    let started = Instant::now();
    for _ in 0..count {
        drop(runtime.spawn(Idle));
    }
    let loop_done = started.elapsed();
    IDLE_INITS.reached.notified().await;
    let all_initialised = started.elapsed();
    let alive = runtime.process_count() - alive_before;
    ensure!(alive == count, "{alive} of {count} idle processes are alive");
    Ok(Spawned { loop_done, all_initialised })
}

/// Counts down the casts of `local_send_msgs_per_s`.
struct Countdown {
    left: u64,
    done: Option<oneshot::Sender<()>>,
}

impl Process for Countdown {
    type Message = u64;
    type Call = ();
    type Reply = ();

    async fn handle_cast(&mut self, _: u64, _: &mut Context<Self>) {
        self.left -= 1;
        if self.left == 0
            && let Some(done) = self.done.take()
        {
            done.send(()).ok();
        }
    }
}

/// Answers each call with its request, for `local_call_rtt_us`.
struct Echo;

impl Process for Echo {
    type Message = ();
    type Call = u32;
    type Reply = u32;

    async fn handle_cast(&mut self, (): (), _: &mut Context<Self>) {}

    async fn handle_call(&mut self, request: u32, reply: ReplyTo<u32>, _: &mut Context<Self>) {
        reply.send(request);
    }
}

/// A process with no state that does nothing, for `spawn_ns` and `process_bytes`. Its `init`
/// counts itself in [`IDLE_INITS`].
struct Idle;

impl Process for Idle {
    type Message = ();
    type Call = ();
    type Reply = ();

    async fn init(&mut self, _: &mut Context<Self>) -> Result<(), ExitReason> {
        let initialised = IDLE_INITS.count.fetch_add(1, Ordering::Relaxed) + 1;
        if initialised == IDLE_INITS.target.load(Ordering::Relaxed) {
            IDLE_INITS.reached.notify_one();
        }
        Ok(())
    }

    async fn handle_cast(&mut self, (): (), _: &mut Context<Self>) {}
}

/// How many [`Idle`] processes have run `init`; the one that reaches `target` notifies
/// `reached`. A static, so that an idle process carries no state at all (one metric runs per
/// OS process, so nothing else shares it).
struct InitTally {
    count: AtomicUsize,
    target: AtomicUsize,
    reached: Notify,
}

static IDLE_INITS: InitTally = InitTally {
    count: AtomicUsize::new(0),
    target: AtomicUsize::new(usize::MAX),
    reached: Notify::const_new(),
};
