//! Two nodes on loopback: a process started on the other node by its factory, called and
//! monitored from this one exactly as a local process would be, and a `Down` with
//! `noconnection` when its node goes.
//!
//! Run with `cargo run -p shoal --example remote`.

use std::time::Duration;

use shoal::prelude::*;

/// Greets by name; it runs on node `b` and is reached from node `a`.
struct Greeter {
    node: String,
}

impl Process for Greeter {
    type Message = ();
    type Call = String;
    type Reply = String;

    async fn handle_cast(&mut self, (): (), _ctx: &mut Context<Self>) {}

    async fn handle_call(
        &mut self,
        name: String,
        reply: ReplyTo<String>,
        _ctx: &mut Context<Self>,
    ) {
        reply.send(format!("hello, {name}, from {}", self.node));
    }

    /// Calls from other nodes arrive encoded; this says how (the types are still checked
    /// at compile time on both sides).
    fn remote_messages() -> Option<Codec<Self>> {
        Some(Codec::msgpack())
    }
}

/// Tells when the process it watches goes down, and why.
struct Watcher {
    told: tokio::sync::mpsc::Sender<String>,
}

impl Process for Watcher {
    type Message = Pid;
    type Call = ();
    type Reply = ();

    async fn handle_cast(&mut self, target: Pid, ctx: &mut Context<Self>) {
        ctx.monitor(target);
    }

    /// Answered after every cast sent before it (one mailbox, in order): the monitor is set.
    async fn handle_call(&mut self, (): (), reply: ReplyTo<()>, _ctx: &mut Context<Self>) {
        reply.send(());
    }

    async fn handle_signal(&mut self, signal: Signal, _ctx: &mut Context<Self>) {
        if let Signal::Down { pid, reason, .. } = signal {
            let _ = self.told.send(format!("{pid} went down: {reason}")).await;
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // b founds a cluster (port 0: a free loopback port); a joins it with b's cluster key
    // (only holders of the key can connect: generate one per cluster and keep it secret).
    let b = Node::start("b").await?;
    let here = b.name().to_owned();
    b.runtime().register_factory("greeter", move |(): ()| Greeter { node: here.clone() })?;
    let node_a = Node::builder("a").key(b.key().clone()).join(b.listen_addr()).start().await?;
    // The transport of a: remote spawn, node names, members.
    let a = node_a.transport();
    println!("a joined b; a sees {:?}", a.nodes());

    // Started on b from a, by its factory's name and (encoded) arguments.
    let pid = a.spawn_remote("b", "greeter", &(), Duration::from_secs(5)).await?;
    println!("started greeter {pid} on {:?}", a.node_name(pid));

    // Called from a, through the same typed handle a local process has.
    let greeter = a.runtime().addr::<Greeter>(pid).ok_or("no address for the greeter")?;
    let answer = greeter.call("Ada".to_owned()).await?;
    println!("a asked, b answered: {answer}");

    // Monitored from a: b's loss is told as a `Down` with `noconnection`.
    let (told, mut down) = tokio::sync::mpsc::channel(1);
    let watcher = a.runtime().spawn(Watcher { told });
    watcher.cast(pid).await?;
    watcher.call(()).await?;
    b.abort().await;
    let news = tokio::time::timeout(Duration::from_secs(10), down.recv()).await?;
    println!("a's watcher: {}", news.ok_or("the watcher stopped")?);
    node_a.shutdown().await;
    Ok(())
}
