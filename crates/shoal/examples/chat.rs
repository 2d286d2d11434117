//! A chat service that uses every layer of Shoal, one node per OS process:
//!
//! - **rooms** are hub children with state (`chat/room.rs`): two copies of each, one active
//!   and one passive, on the owner node and the next; a `say` is acknowledged once both copies
//!   hold the line, so a room's acknowledged history survives the SIGKILL of its node;
//! - **user names** are registry names: `login alice` names a session process `user/alice`,
//!   and a second login of alice anywhere in the cluster is refused with who holds the name;
//! - **presence** is a process group per room, `room/ROOM`: the sessions that entered it;
//! - **announcements** are broadcasts that every node receives;
//! - **an admin task** trims a room under the cluster-wide lock `admin/ROOM`, and the room
//!   refuses a trim whose fencing token is below one it has seen.
//!
//! Run with no arguments, it is a tour: three nodes in this one process, a short
//! conversation, the loss of a room's node (aborted as a crash would be) and the room's
//! history read back from another node. `cargo xtask chat` runs the real thing: three OS
//! processes on loopback, one SIGKILLed.
//!
//! ```text
//! chat --name a [--listen 127.0.0.1:0] [--join ADDR]... [--key HEX]
//! ```
//!
//! starts one node: it prints `listening ADDR` on stdout once ready, then reads commands on
//! stdin, one a line, and answers each with one line, `ok ...` or `error ...`:
//!
//! ```text
//! login USER              enter ROOM USER         say ROOM USER TEXT      history ROOM
//! who ROOM                where ROOM              announce TEXT           announcements
//! admin-trim ROOM N       nodes                   quit
//! ```
//!
//! `quit`, or the end of stdin, shuts the node down gracefully: its rooms are handed over,
//! with their history, to the nodes that take them. The cluster key comes from `$SHOAL_KEY`
//! (or `--key`, which others on the machine can read); a node started without one makes a
//! fresh key and prints it on stderr, for the nodes that join it.

// A crate root's modules sit beside it; the example's are in `chat/`.
#[path = "chat/room.rs"]
mod room;
#[path = "chat/service.rs"]
mod service;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use shoal::prelude::ClusterKey;

use crate::service::Chat;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        return tour().await;
    }
    let options = Options::parse(&args)?;
    let mut builder = shoal::Node::builder(options.name.as_str()).listen(options.listen);
    let fresh_key = options.key.is_none();
    match options.key {
        Some(key) => builder = builder.key(key),
        None if options.join.is_empty() => {}
        None => bail!("a node that joins needs the cluster's key: $SHOAL_KEY or --key"),
    }
    for seed in &options.join {
        builder = builder.join(*seed);
    }
    let node = builder.start().await.context("the node did not start")?;
    if fresh_key {
        eprintln!("cluster key (for the nodes that join): {}", node.key().to_hex());
    }
    let chat = Chat::start(node).await?;
    println!("listening {}", chat.node().listen_addr());
    serve(&chat).await;
    chat.shutdown().await;
    Ok(())
}

/// Answers the commands on stdin, one line each, until `quit` or the end of stdin.
async fn serve(chat: &Chat) {
    let mut lines = stdin_lines();
    while let Some(line) = lines.recv().await {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "quit" {
            println!("ok bye");
            return;
        }
        match chat.command(line).await {
            Ok(answer) => println!("ok {answer}"),
            Err(error) => println!("error {error}"),
        }
    }
}

/// The lines of stdin, read on a thread of their own (blocking reads stay off the runtime);
/// the channel closes at the end of stdin.
fn stdin_lines() -> tokio::sync::mpsc::Receiver<String> {
    let (lines, receiver) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { return };
            if lines.blocking_send(line).is_err() {
                return;
            }
        }
    });
    receiver
}

/// The command line of one node.
struct Options {
    name: String,
    listen: SocketAddr,
    join: Vec<SocketAddr>,
    key: Option<ClusterKey>,
}

impl Options {
    fn parse(args: &[String]) -> anyhow::Result<Options> {
        let mut options = Options {
            name: String::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            join: Vec::new(),
            key: match std::env::var("SHOAL_KEY") {
                Ok(hex) => Some(ClusterKey::from_hex(hex.trim()).context("$SHOAL_KEY")?),
                Err(_) => None,
            },
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let value = args.next().with_context(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--name" => options.name.clone_from(value),
                "--listen" => options.listen = value.parse().context("--listen")?,
                "--join" => options.join.push(value.parse().context("--join")?),
                "--key" => options.key = Some(ClusterKey::from_hex(value).context("--key")?),
                other => bail!("unknown option {other}"),
            }
        }
        if options.name.is_empty() {
            bail!("usage: chat --name NAME [--listen ADDR] [--join ADDR]... [--key HEX]");
        }
        Ok(options)
    }
}

/// The tour: three nodes in this process, a conversation, and a room's node lost.
async fn tour() -> anyhow::Result<()> {
    let a = Chat::start(shoal::Node::builder("a").start().await?).await?;
    let key = a.node().key().clone();
    let join = |name: &'static str| {
        let builder = shoal::Node::builder(name).key(key.clone()).join(a.node().listen_addr());
        async move { Chat::start(builder.start().await?).await }
    };
    let b = join("b").await?;
    let c = join("c").await?;
    for (name, chat) in [("a", &a), ("b", &b), ("c", &c)] {
        run(chat, "nodes", |answer| answer.is_ok_and(|nodes| nodes.ends_with("rooms: a b c")))
            .await?;
        let user = format!("user-{name}");
        ok(chat, &format!("login {user}")).await?;
        ok(chat, &format!("enter lobby {user}")).await?;
        ok(chat, &format!("say lobby {user} hello from {name}")).await?;
    }
    run(&b, "login user-a", |answer| answer.is_err()).await?;
    run(&a, "who lobby", |answer| answer.is_ok_and(|who| who.matches('@').count() == 3)).await?;
    ok(&c, "announce the tour is on").await?;
    run(&a, "announcements", |answer| answer.is_ok_and(|seen| seen.contains("tour is on"))).await?;
    ok(&a, "admin-trim lobby 2").await?;
    let history = ok(&a, "history lobby").await?;
    let place = ok(&a, "where lobby").await?;
    let active = place.split_whitespace().nth(3).unwrap_or_default().to_owned();
    let (lost, survivors): (Vec<_>, Vec<_>) =
        [("a", a), ("b", b), ("c", c)].into_iter().partition(|(name, _)| *name == active);
    for (name, chat) in lost {
        println!("-- node {name}, where the lobby's active copy runs, crashes");
        chat.abort().await;
    }
    let (_, reader) = &survivors[0];
    let moved = format!("active {active} ");
    run(reader, "where lobby", |answer| answer.is_ok_and(|place| !place.contains(&moved))).await?;
    run(reader, "history lobby", |answer| answer == Ok(&history)).await?;
    for (_, chat) in survivors {
        chat.shutdown().await;
    }
    println!("-- the lobby kept its history");
    Ok(())
}

/// Runs `command` on `chat` until it is answered `ok`, or twenty seconds have passed.
async fn ok(chat: &Chat, command: &str) -> anyhow::Result<String> {
    run(chat, command, |answer| answer.is_ok()).await
}

/// Runs `command` on `chat`, again until `done` likes its answer, or twenty seconds have
/// passed; prints the last answer and returns its text.
async fn run(
    chat: &Chat,
    command: &str,
    done: impl Fn(Result<&String, &String>) -> bool,
) -> anyhow::Result<String> {
    let clock = chat.node().runtime().clock().clone();
    let deadline = clock.now() + Duration::from_secs(20);
    loop {
        let answer = chat.command(command).await;
        let finished = done(answer.as_ref());
        if finished || clock.now() >= deadline {
            let node = chat.node().name();
            let text = match &answer {
                Ok(text) => format!("ok {text}"),
                Err(text) => format!("error {text}"),
            };
            println!("{node}> {command}\n   {text}");
            if !finished {
                bail!("{node}: `{command}` answered `{text}`");
            }
            return Ok(answer.unwrap_or_else(|error| error));
        }
        clock.sleep(Duration::from_millis(200)).await;
    }
}
