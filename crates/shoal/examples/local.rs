//! Local processes, monitors and a supervisor restarting a crashing child.
//!
//! Run with `cargo run -p shoal --example local`.

use std::time::Duration;

use shoal::prelude::*;

/// A counter that panics when asked to divide by zero.
#[derive(Default)]
struct Counter {
    total: i64,
}

enum Op {
    Add(i64),
    DivideBy(i64),
}

impl Process for Counter {
    type Message = Op;
    type Call = ();
    type Reply = i64;

    async fn init(&mut self, ctx: &mut Context<Self>) -> Result<(), ExitReason> {
        println!("  counter {} started", ctx.pid());
        Ok(())
    }

    async fn handle_cast(&mut self, op: Op, _ctx: &mut Context<Self>) {
        match op {
            Op::Add(n) => self.total += n,
            Op::DivideBy(0) => panic!("division by zero"),
            Op::DivideBy(n) => self.total /= n,
        }
    }

    async fn handle_call(&mut self, _: (), reply: ReplyTo<i64>, _ctx: &mut Context<Self>) {
        reply.send(self.total);
    }
}

/// Watches a process and reports how it ended.
struct Watcher;

impl Process for Watcher {
    type Message = Pid;
    type Call = ();
    type Reply = ();

    async fn handle_cast(&mut self, target: Pid, ctx: &mut Context<Self>) {
        ctx.monitor(target);
    }

    async fn handle_signal(&mut self, signal: Signal, _ctx: &mut Context<Self>) {
        if let Signal::Down { pid, reason, .. } = signal {
            println!("  watcher: {pid} went down: {reason}");
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Shoal reports a handler's panic as its process's exit reason; the default hook would
    // also print each one to stderr.
    std::panic::set_hook(Box::new(|_| {}));
    let runtime = Runtime::builder().node_name("example@localhost").build()?;

    println!("1. a process, a cast and a call");
    let counter = runtime.spawn(Counter::default());
    counter.cast(Op::Add(40)).await?;
    counter.cast(Op::Add(2)).await?;
    println!("  total = {}", counter.call(()).await?);

    println!("2. a monitor sees a panic end only that process");
    let watcher = runtime.spawn(Watcher);
    watcher.cast(counter.pid()).await?;
    let exited = runtime.watch(counter.pid());
    counter.cast(Op::DivideBy(0)).await?;
    println!("  exit reason: {}", exited.await);
    watcher.call_timeout((), Duration::from_secs(1)).await.ok(); // let the watcher print

    println!("3. a supervisor restarts a crashing child");
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(Intensity { max_restarts: 3, period: Duration::from_secs(5) })
        .child(Child::new("counter", Counter::default));
    let supervisor = SupervisorRef::start(&runtime, spec).await?;
    let before = child_pid(&supervisor).await?;
    let child: Addr<Counter> =
        runtime.addr(before).ok_or_else(|| anyhow::anyhow!("the child is not a counter"))?;
    let exited = runtime.watch(before);
    child.cast(Op::DivideBy(0)).await?;
    println!("  child {before} exited: {}", exited.await);
    let after = wait_for_restart(&supervisor, before).await?;
    println!("  restarted as {after}");

    println!("4. past its restart intensity, the supervisor gives up");
    let supervisor_exit = runtime.watch(supervisor.pid());
    let mut current = after;
    for _ in 0..4 {
        let Some(child) = runtime.addr::<Counter>(current) else { break };
        child.cast(Op::DivideBy(0)).await.ok();
        match tokio::time::timeout(Duration::from_secs(1), wait_for_restart(&supervisor, current))
            .await
        {
            Ok(Ok(next)) => current = next,
            _ => break,
        }
    }
    println!("  supervisor exited: {}", supervisor_exit.await);
    println!("  processes left: {}", runtime.process_count());
    Ok(())
}

async fn child_pid(supervisor: &SupervisorRef) -> anyhow::Result<Pid> {
    let children = supervisor.which_children().await?;
    children.first().and_then(|child| child.pid).ok_or_else(|| anyhow::anyhow!("no child"))
}

/// Asks the supervisor until its child has a new pid (it restarts right after the exit).
async fn wait_for_restart(supervisor: &SupervisorRef, old: Pid) -> anyhow::Result<Pid> {
    loop {
        let pid = child_pid(supervisor).await?;
        if pid != old {
            return Ok(pid);
        }
        tokio::task::yield_now().await;
    }
}
