//! `cargo xtask chat`: the chat example (`crates/shoal/examples/chat.rs`) as three OS
//! processes on loopback, driven through a conversation and the SIGKILL of a room's node.
//!
//! It builds the example (debug, as `cargo xtask examples` does), makes a cluster key from
//! `/dev/urandom` (passed in `$SHOAL_KEY`), starts node `a` on 127.0.0.1 port 0 and then `b`
//! and `c` joining it (each prints `listening ADDR` once ready), waits until every node sees
//! the three in the rooms' hub, and then, printing each command and its answer:
//!
//! 1. logs a user in on each node, and checks that a second login of one of them elsewhere is
//!    refused, naming the node that holds the name;
//! 2. has them enter rooms and say lines in several rooms (spread over the nodes by the hub),
//!    each `say` acknowledged once both copies of its room hold it;
//! 3. announces from one node, seen by all three;
//! 4. trims a room under the admin lock, with its fencing token;
//! 5. asks where `lobby`'s active copy runs, and SIGKILLs that node;
//! 6. checks from the survivors: `lobby` served by a survivor, every room's history exactly
//!    the lines acknowledged (none lost), the killed node's users gone from the presence
//!    group and their names free again (a login elsewhere succeeds once its lease ended),
//!    announcements still flowing, and `lobby` taking new lines on two copies again;
//! 7. quits the survivors (a graceful shutdown), and prints `chat ok`.
//!
//! The whole run is bounded ([`BOUND`], the build aside); every node is killed on any way out
//! ([`ChatNode`]'s drop), and their logs (stderr) are in `target/chat/`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};

use crate::cluster_test::{forward_lines, wait_until};
use crate::target_dir;

/// How long the run may take, from the first node's start to `chat ok`.
const BOUND: Duration = Duration::from_secs(60);

/// How long one command may take to be answered (the node's own retries last 8 s at most).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// The pause between two looks at something that must come true.
const POLL_PAUSE: Duration = Duration::from_millis(200);

/// The rooms, each with a line from each user.
const ROOMS: [&str; 4] = ["lobby", "rust", "erlang", "tokio"];

pub(crate) fn run(options: &[String]) -> Result<ExitCode> {
    if let Some(unknown) = options.first() {
        bail!("`cargo xtask chat` takes no options, not `{unknown}`");
    }
    let binary = crate::build_programs()?.join("examples").join("chat");
    let logs = target_dir().join("chat");
    fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let began = Instant::now();
    let mut run = Run { binary, logs, key: cluster_key()?, deadline: began + BOUND };
    match run.drive() {
        Ok(()) => {
            println!("chat ok ({:.1?})", began.elapsed());
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("error: chat failed: {error:#}");
            eprintln!("the nodes' logs: {}", run.logs.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// A fresh cluster key: 32 bytes of `/dev/urandom`, in hex.
fn cluster_key() -> Result<String> {
    let mut bytes = [0_u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("reading /dev/urandom for a cluster key")?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// What the run needs to start nodes, and its deadline.
struct Run {
    binary: PathBuf,
    logs: PathBuf,
    key: String,
    deadline: Instant,
}

/// The users: one logged in on each node.
const USERS: [(&str, &str); 3] = [("a", "alice"), ("b", "bob"), ("c", "carol")];

impl Run {
    /// The whole run: each phase prints its commands and answers, and fails on the first
    /// answer that is not what it must be.
    fn drive(&mut self) -> Result<()> {
        let mut cluster = self.start_cluster()?;
        cluster.converse()?;
        cluster.announce("maintenance at noon")?;
        cluster.trim()?;
        let lost = cluster.kill_lobby_node()?;
        cluster.check_survivors(&lost)?;
        cluster.quit()
    }

    /// Node `a`, then `b` and `c` joining it, each seeing the three in the rooms' hub.
    fn start_cluster(&self) -> Result<Cluster> {
        println!("-- three nodes on loopback: a, then b and c joining it");
        let mut nodes = BTreeMap::new();
        let a = ChatNode::start(self, "a", None)?;
        let seed = a.addr;
        nodes.insert("a", a);
        for name in ["b", "c"] {
            nodes.insert(name, ChatNode::start(self, name, Some(seed))?);
        }
        let deadline = self.deadline;
        for node in nodes.values_mut() {
            node.until(deadline, "nodes", |answer| answer.ends_with("rooms: a b c"))?;
        }
        Ok(Cluster { nodes, said: BTreeMap::new(), deadline })
    }
}

/// The nodes alive, and the lines acknowledged in each room.
struct Cluster {
    nodes: BTreeMap<&'static str, ChatNode>,
    said: BTreeMap<&'static str, Vec<String>>,
    deadline: Instant,
}

impl Cluster {
    fn node(&mut self, name: &str) -> Result<&mut ChatNode> {
        self.nodes.get_mut(name).with_context(|| format!("no node {name}"))
    }

    /// `command` on node `name`, which must answer `ok`; its text.
    fn ok(&mut self, name: &str, command: &str) -> Result<String> {
        let deadline = self.deadline;
        self.node(name)?.ok(command, deadline)
    }

    /// `say ROOM USER TEXT` on node `name`, which must be acknowledged on two copies; the line
    /// is then expected in the room's history.
    fn say(&mut self, name: &str, room: &'static str, user: &str, text: &str) -> Result<()> {
        let answer = self.ok(name, &format!("say {room} {user} {text}"))?;
        ensure!(answer.ends_with("on 2 copies"), "`say` answered `{answer}`");
        self.said.entry(room).or_default().push(format!("{user}: {text}"));
        Ok(())
    }

    /// Every room's history, read on node `name`, must be the lines acknowledged.
    fn check_histories(&mut self, name: &str) -> Result<()> {
        ROOMS.iter().try_for_each(|room| self.check_history(name, room))
    }

    /// The history of `room`, read on node `name`, must be the lines acknowledged.
    fn check_history(&mut self, name: &str, room: &str) -> Result<()> {
        let history = self.ok(name, &format!("history {room}"))?;
        let said = self.said.get(room).map_or(&[][..], Vec::as_slice);
        check_history(room, &history, said)
    }

    /// Logins (a second one refused), rooms entered, lines said in each.
    fn converse(&mut self) -> Result<()> {
        println!("-- users log in (registry names user/USER); a second login is refused");
        for (node, user) in USERS {
            self.ok(node, &format!("login {user}"))?;
        }
        let deadline = self.deadline;
        let refusal = self.node("b")?.error("login alice", deadline)?;
        ensure!(refusal.contains("logged in on a"), "the refusal does not name a: `{refusal}`");
        println!("-- they enter rooms (presence groups room/ROOM) and talk (hub children)");
        for room in ROOMS {
            for (node, user) in USERS {
                self.ok(node, &format!("enter {room} {user}"))?;
                self.say(node, room, user, &format!("hi {room} from {user}"))?;
            }
        }
        for room in ROOMS {
            self.ok("a", &format!("where {room}"))?;
        }
        let deadline = self.deadline;
        let everyone =
            |who: &str| USERS.iter().all(|(node, user)| who.contains(&format!("{user}@{node}")));
        self.node("a")?.until(deadline, "who lobby", everyone).map(drop)
    }

    /// An announcement from the first node, seen by every node.
    fn announce(&mut self, text: &str) -> Result<()> {
        println!("-- an announcement (broadcast) reaches every node");
        let from = self.nodes.keys().next().copied().context("no node")?;
        self.ok(from, &format!("announce {text}"))?;
        let deadline = self.deadline;
        for node in self.nodes.values_mut() {
            node.until(deadline, "announcements", |seen| seen.contains(text))?;
        }
        Ok(())
    }

    /// The admin task trims lobby to two lines under its lock.
    fn trim(&mut self) -> Result<()> {
        println!("-- an admin task trims lobby under the lock admin/lobby");
        let trim = self.ok("b", "admin-trim lobby 2")?;
        ensure!(trim.contains("fencing token"), "the trim shows no fencing token: `{trim}`");
        let lobby = self.said.entry("lobby").or_default();
        lobby.drain(..lobby.len().saturating_sub(2));
        self.check_histories("a")
    }

    /// Finds the node of lobby's active copy, has it take one more line, and SIGKILLs it at
    /// once (well within the hub's state stream period): the node's name.
    fn kill_lobby_node(&mut self) -> Result<String> {
        let place = self.ok("a", "where lobby")?;
        let victim = active_node(&place)?;
        let user = user_on(&victim)?;
        self.say(&victim, "lobby", user, "last words")?;
        let mut killed = self.nodes.remove(victim.as_str()).context("lobby's node is not ours")?;
        killed.kill();
        println!("-- SIGKILLed node {victim}, where lobby's active copy ran");
        Ok(victim)
    }

    /// From the survivors: lobby served elsewhere, every acknowledged line there, the lost
    /// node's users out of presence and their names free, broadcast still flowing, and lobby
    /// taking new lines on two copies again.
    fn check_survivors(&mut self, lost: &str) -> Result<()> {
        let killed_at = Instant::now();
        let reader = self.nodes.keys().next().copied().context("no survivor")?;
        let deadline = self.deadline;
        let moved = format!("active {lost} ");
        self.node(reader)?.until(deadline, "where lobby", |place| !place.contains(&moved))?;
        println!("   lobby served again {:.1?} after the kill", killed_at.elapsed());
        self.check_histories(reader)?;
        let survivors: Vec<String> = USERS
            .iter()
            .filter(|(node, _)| *node != lost)
            .map(|(node, user)| format!("{user}@{node}"))
            .collect();
        let only_survivors = |who: &str| who == format!("who lobby: {}", survivors.join(" "));
        self.node(reader)?.until(deadline, "who lobby", only_survivors)?;
        let user = user_on(lost)?;
        self.node(reader)?.until(deadline, &format!("login {user}"), |_| true)?;
        println!("   {user}'s name free again {:.1?} after the kill", killed_at.elapsed());
        self.say(reader, "lobby", user, &format!("back, on {reader}"))?;
        self.announce("still here")?;
        let readers: Vec<&str> = self.nodes.keys().copied().collect();
        for reader in readers {
            self.check_history(reader, "lobby")?;
        }
        Ok(())
    }

    /// The survivors quit one by one, gracefully: the last one still serves every room with
    /// its history after the others left (they handed their rooms over).
    fn quit(&mut self) -> Result<()> {
        println!("-- the survivors quit one by one (graceful: rooms handed over)");
        let deadline = self.deadline;
        while let Some((_, mut node)) = self.nodes.pop_first() {
            node.quit(deadline)?;
            if let Some(&last) = self.nodes.keys().next() {
                self.check_history(last, "lobby")?;
            }
        }
        Ok(())
    }
}

/// The user logged in on node `node` at the start.
fn user_on(node: &str) -> Result<&'static str> {
    let user = USERS.iter().find(|(name, _)| *name == node).map(|(_, user)| *user);
    user.with_context(|| format!("no user on node {node}"))
}

/// `where ROOM: active NODE copies ...` → NODE.
fn active_node(place: &str) -> Result<String> {
    let (_, after) = place.split_once("active ").with_context(|| format!("`{place}`"))?;
    let node = after.split_whitespace().next().with_context(|| format!("`{place}`"))?;
    ensure!(node != "none", "no active copy: `{place}`");
    Ok(node.to_owned())
}

/// Checks `answer` (`history ROOM: LINE | LINE ...`) against the lines acknowledged.
fn check_history(room: &str, answer: &str, said: &[String]) -> Result<()> {
    let prefix = format!("history {room}: ");
    let lines = answer.strip_prefix(&prefix).with_context(|| format!("`{answer}`"))?;
    let lines: Vec<&str> = lines.split(" | ").filter(|line| !line.is_empty()).collect();
    ensure!(lines == said, "room {room} holds {lines:?}, but {said:?} were acknowledged");
    Ok(())
}

/// One chat node process and the pipes to it. Dropping it kills and reaps the process.
struct ChatNode {
    name: String,
    addr: SocketAddr,
    child: Child,
    /// `None` once closed.
    stdin: Option<ChildStdin>,
    /// Lines from the node's stdout, read on a thread of their own.
    lines: mpsc::Receiver<String>,
}

impl ChatNode {
    /// Starts node `name` (joining `seed`, if any) and waits for its `listening ADDR` line.
    fn start(run: &Run, name: &str, seed: Option<SocketAddr>) -> Result<ChatNode> {
        let log_path = run.logs.join(format!("{name}.log"));
        let log = File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut command = Command::new(&run.binary);
        command
            .env("SHOAL_KEY", &run.key)
            .args(["--name", name, "--listen", "127.0.0.1:0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        if let Some(seed) = seed {
            command.args(["--join", &seed.to_string()]);
        }
        let mut child =
            command.spawn().with_context(|| format!("starting {}", path(&run.binary)))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let (sender, lines) = mpsc::channel();
        // From here on, dropping `node` kills the child, whatever fails next.
        let mut node = ChatNode {
            name: name.to_owned(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
            stdin,
            lines,
        };
        forward_lines(stdout.context("stdout was not piped")?, sender);
        let first = node.next_line(run.deadline).context("waiting for its `listening` line")?;
        let addr = first.strip_prefix("listening ").and_then(|addr| addr.parse().ok());
        node.addr =
            addr.with_context(|| format!("{name} printed `{first}`, not `listening ADDR`"))?;
        println!("{name}: listening {}", node.addr);
        Ok(node)
    }

    /// Sends `command` and waits for its answer: `Ok(text)` for `ok TEXT`, `Err(text)` for
    /// `error TEXT`; an error if none comes by `deadline` (or within [`ANSWER_TIMEOUT`]).
    fn ask(&mut self, command: &str, deadline: Instant) -> Result<Result<String, String>> {
        let name = self.name.clone();
        let stdin = self.stdin.as_mut().with_context(|| format!("{name}'s stdin is closed"))?;
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("{name} is not reading commands (it exited?)"))?;
        let line = self
            .next_line(deadline.min(Instant::now() + ANSWER_TIMEOUT))
            .with_context(|| format!("{name}> {command}"))?;
        if let Some(text) = line.strip_prefix("ok ") {
            return Ok(Ok(text.to_owned()));
        }
        match line.strip_prefix("error ") {
            Some(text) => Ok(Err(text.to_owned())),
            None => bail!("{name}> {command}: answered `{line}`, neither ok nor error"),
        }
    }

    /// `command`, which must be answered `ok`; its text. Printed with its answer.
    fn ok(&mut self, command: &str, deadline: Instant) -> Result<String> {
        let answer = self.ask(command, deadline)?;
        self.print(command, &answer);
        answer.map_err(|error| anyhow!("{}> {command}: error {error}", self.name))
    }

    /// `command`, which must be answered `error`; its text. Printed with its answer.
    fn error(&mut self, command: &str, deadline: Instant) -> Result<String> {
        let answer = self.ask(command, deadline)?;
        self.print(command, &answer);
        match answer {
            Err(error) => Ok(error),
            Ok(text) => bail!("{}> {command}: answered ok {text}, not an error", self.name),
        }
    }

    /// `command`, again until it is answered `ok` with a text `done` likes, by `deadline`;
    /// the last answer is printed.
    fn until(
        &mut self,
        deadline: Instant,
        command: &str,
        done: impl Fn(&str) -> bool,
    ) -> Result<String> {
        loop {
            let answer = self.ask(command, deadline)?;
            let finished = answer.as_ref().is_ok_and(|text| done(text));
            if finished || Instant::now() + POLL_PAUSE >= deadline {
                self.print(command, &answer);
                let text = answer.unwrap_or_else(|error| format!("error {error}"));
                ensure!(finished, "{}> {command}: still `{text}` at the deadline", self.name);
                return Ok(text);
            }
            thread::sleep(POLL_PAUSE);
        }
    }

    fn print(&self, command: &str, answer: &Result<String, String>) {
        match answer {
            Ok(text) => println!("{}> {command}  ->  ok {text}", self.name),
            Err(text) => println!("{}> {command}  ->  error {text}", self.name),
        }
    }

    /// `quit`, then waits for the process to exit by itself.
    fn quit(&mut self, deadline: Instant) -> Result<()> {
        let answer = self.ask("quit", deadline)?;
        ensure!(answer.as_deref() == Ok("bye"), "{}> quit: answered {answer:?}", self.name);
        self.stdin = None;
        let status = wait_until(&mut self.child, deadline)?;
        match status {
            Some(status) if status.success() => {
                println!("{}: quit, {status}", self.name);
                Ok(())
            }
            Some(status) => bail!("{} exited with {status}", self.name),
            None => bail!("{} did not exit after `quit` by the deadline", self.name),
        }
    }

    /// The next line on the node's stdout, by `deadline`.
    fn next_line(&mut self, deadline: Instant) -> Result<String> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(timeout) {
            Ok(line) => Ok(line),
            Err(RecvTimeoutError::Timeout) => {
                Err(anyhow!("{} did not answer within {timeout:.1?}", self.name))
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.try_wait().ok().flatten();
                let status = status.map_or("its stdout closed".to_owned(), |s| s.to_string());
                Err(anyhow!("{} is gone ({status})", self.name))
            }
        }
    }

    /// SIGKILL, then reap.
    fn kill(&mut self) {
        // Either it is killed now or it had exited already; `wait` reaps it either way.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChatNode {
    fn drop(&mut self) {
        self.kill();
    }
}

fn path(path: &Path) -> String {
    path.display().to_string()
}
