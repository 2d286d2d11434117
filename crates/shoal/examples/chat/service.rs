//! The chat service on one node: every command of the line protocol, over the node's layers.
//!
//! | command | layer |
//! |---|---|
//! | `login USER` | registry: a session process named `user/USER`, cluster-wide |
//! | `enter ROOM USER`, `who ROOM` | process groups: presence in `room/ROOM` |
//! | `say ROOM USER TEXT`, `history ROOM`, `where ROOM` | hub: the room, a child with state |
//! | `announce TEXT`, `announcements` | broadcast: topic `announcements` |
//! | `admin-trim ROOM N` | registry: the lock `admin/ROOM`, its fencing token kept by the room |
//! | `nodes` | transport and hub: the nodes this one sees |

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use shoal::broadcast::{Log, Topic};
use shoal::hub::core::{Redundancy, TableConfig};
use shoal::hub::{ChildStatus, Hub, HubChild, HubConfig, Migration, StartOptions};
use shoal::prelude::*;

use crate::room::{self, History, PASSIVE, Request, Room};

/// The hub of rooms.
pub(crate) const ROOMS: &str = "rooms";

/// Copies of each room: the active one and a passive one on another node.
const REPLICAS: usize = 2;

/// Announcements, to every node.
const ANNOUNCEMENTS: Topic<String> = Topic::new("announcements");

/// Announcements a node keeps.
const KEPT_ANNOUNCEMENTS: usize = 1_000;

/// How long one call to a process may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a command may keep trying (a room being failed over, a copy being started).
const COMMAND_DEADLINE: Duration = Duration::from_secs(8);

/// The pause between two tries.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The rooms' hub: two copies of each room, active/passive with its state streamed, moved hot
/// (a node that leaves hands its rooms over with their history).
pub(crate) fn rooms_config() -> HubConfig {
    HubConfig {
        table: TableConfig {
            replicas: REPLICAS,
            redundancy: Redundancy::ActivePassive,
            // A lost node's rooms get their second copy back soon.
            down_after: Duration::from_secs(1),
            ..TableConfig::default()
        },
        handovers: Room::handovers(),
        stream_every: Duration::from_millis(200),
        migration: Migration::Hot { retention: Duration::from_secs(1) },
        handover_deadline: Duration::from_secs(5),
        ..HubConfig::default()
    }
}

/// A logged-in user: a process on the node the user logged in on, named `user/USER`.
pub(crate) struct Session {
    user: String,
}

impl Process for Session {
    type Message = ();
    type Call = ();
    type Reply = String;

    async fn handle_cast(&mut self, (): (), _ctx: &mut Context<Self>) {}

    /// Who this session is, for `who`.
    async fn handle_call(&mut self, (): (), reply: ReplyTo<String>, ctx: &mut Context<Self>) {
        reply.send(format!("{}@{}", self.user, ctx.runtime().node_name()));
    }

    fn remote_messages() -> Option<Codec<Self>> {
        Some(Codec::msgpack())
    }
}

/// The chat service of one node.
pub(crate) struct Chat {
    node: shoal::Node,
    rooms: Hub,
    announcements: Log<String>,
    /// The users logged in here.
    sessions: Mutex<BTreeMap<String, Pid>>,
}

impl Chat {
    /// Starts the chat service on `node`: the room factory, then the rooms' hub (so that no
    /// room is sent here before this node can build it), and the announcements' topic.
    pub(crate) async fn start(node: shoal::Node) -> anyhow::Result<Chat> {
        node.runtime().register_factory(room::FACTORY, Room::new)?;
        let rooms = node.start_hub(ROOMS, rooms_config()).await?;
        let announcements = Log::new(node.transport(), KEPT_ANNOUNCEMENTS);
        node.broadcast()?.register(ANNOUNCEMENTS, announcements.clone()).await?;
        print_announcements(&announcements);
        node.ready().await;
        Ok(Chat { node, rooms, announcements, sessions: Mutex::new(BTreeMap::new()) })
    }

    pub(crate) fn node(&self) -> &shoal::Node {
        &self.node
    }

    /// Stops the node gracefully: its rooms are handed over with their history.
    pub(crate) async fn shutdown(self) {
        self.node.shutdown().await;
    }

    /// Stops the node as a crash would.
    pub(crate) async fn abort(self) {
        self.node.abort().await;
    }

    /// Runs one command line; the answer's text (`ok` or `error` is the caller's to add).
    pub(crate) async fn command(&self, line: &str) -> Result<String, String> {
        let (command, rest) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
        let words: Vec<&str> = rest.split_whitespace().collect();
        match (command, words.as_slice()) {
            ("login", [user]) => self.login(user).await,
            ("enter", [room, user]) => self.enter(room, user).await,
            ("say", [room, user, ..]) => {
                let text = rest.trim().splitn(3, ' ').nth(2).unwrap_or("").trim();
                self.say(room, user, text).await
            }
            ("history", [room]) => self.history(room).await,
            ("who", [room]) => self.who(room).await,
            ("where", [room]) => self.where_is(room),
            ("announce", [_, ..]) => self.announce(rest.trim()).await,
            ("announcements", []) => Ok(self.announcements()),
            ("admin-trim", [room, keep]) => {
                let keep = keep.parse().map_err(|_| format!("not a line count: {keep}"))?;
                self.admin_trim(room, keep).await
            }
            ("nodes", []) => Ok(self.nodes()),
            _ => Err(format!("unknown command or arguments: {line}")),
        }
    }

    /// Registers `user/USER` for a new session process here; refused, with who holds it, if
    /// the user is logged in anywhere.
    async fn login(&self, user: &str) -> Result<String, String> {
        let runtime = self.node.runtime();
        let session = runtime.spawn(Session { user: user.to_owned() }).pid();
        let registry = self.node.registry().map_err(|error| error.to_string())?;
        let (me, name) = (self.node.name(), format!("user/{user}"));
        // A name whose holder's node was lost is free again once that node's lease is over.
        match registry.register(&name, session, me.as_bytes()).await {
            Ok(()) => {
                lock(&self.sessions).insert(user.to_owned(), session);
                Ok(format!("{user} logged in on {me}"))
            }
            Err(error) => {
                runtime.kill(session);
                Err(match error {
                    RegistryError::Taken { name, host, .. } => {
                        format!("{name} is taken: {user} is logged in on {host}")
                    }
                    error => error.to_string(),
                })
            }
        }
    }

    /// The session of `user` here.
    fn session(&self, user: &str) -> Result<Pid, String> {
        let pid = lock(&self.sessions).get(user).copied();
        pid.filter(|pid| self.node.runtime().is_alive(*pid))
            .ok_or_else(|| format!("{user} is not logged in on {}", self.node.name()))
    }

    /// Starts room `room` if it runs nowhere (each copy on its owner).
    async fn open(&self, room: &str) -> Result<(), String> {
        if self.rooms.child(room).is_some() {
            return Ok(());
        }
        let spec = ChildSpec::new(room, room::FACTORY, room)
            .map_err(|error| error.to_string())?
            .restart(Restart::Permanent);
        let started = self
            .rooms
            .init_children(vec![HubChild::new(spec)], StartOptions::default())
            .await
            .map_err(|error| error.to_string())?;
        match started.into_iter().next() {
            Some((_, Ok(_))) => Ok(()),
            Some((_, Err(error))) => Err(format!("room {room} did not start: {error}")),
            None => Err(format!("room {room} did not start")),
        }
    }

    /// Joins `user`'s session to the presence group of `room`.
    async fn enter(&self, room: &str, user: &str) -> Result<String, String> {
        let session = self.session(user)?;
        self.open(room).await?;
        let groups = self.node.groups().map_err(|error| error.to_string())?;
        groups.join(&format!("room/{room}"), session).map_err(|error| error.to_string())?;
        Ok(format!("{user} entered {room}"))
    }

    /// Appends `USER: TEXT` to the room; answered once the room's copies hold it.
    async fn say(&self, room: &str, user: &str, text: &str) -> Result<String, String> {
        self.session(user)?;
        self.open(room).await?;
        let history =
            self.ask_active(room, Request::Say { line: format!("{user}: {text}") }).await?;
        let copies = self.replicate(room, &history).await?;
        Ok(format!("said in {room} (version {}), on {copies} copies", history.version))
    }

    /// Asks the active copy of `room` for `request`. Tried again while the answer says it
    /// was not applied (a passive copy's refusal: a failover this node has not seen whole
    /// yet; no copy known; a full mailbox); after any other failure, a read is tried again but
    /// a change is not (it may have been applied: the caller is told so).
    async fn ask_active(&self, room: &str, request: Request) -> Result<History, String> {
        let clock = self.node.runtime().clock();
        let deadline = clock.now() + COMMAND_DEADLINE;
        loop {
            let target = self.node.runtime().target::<Room>(self.rooms.via(room));
            let failure = match target.call_timeout(request.clone().into(), CALL_TIMEOUT).await {
                Ok(Ok(history)) => return Ok(history.into()),
                Ok(Err(refusal)) if refusal == PASSIVE => refusal,
                Ok(Err(refusal)) => return Err(refusal),
                Err(error @ (CallError::NoProc | CallError::Unresolved(_) | CallError::Full)) => {
                    error.to_string()
                }
                Err(error) if request.is_change() => {
                    return Err(format!("room {room}: {error} (it may have been applied)"));
                }
                Err(error) => error.to_string(),
            };
            if clock.now() >= deadline {
                return Err(format!("room {room}: {failure}"));
            }
            clock.sleep(RETRY_PAUSE).await;
        }
    }

    /// Pushes `history` to every copy of `room` until as many hold it as the room should have
    /// ([`REPLICAS`], or fewer while the hub has fewer nodes); how many hold it.
    async fn replicate(&self, room: &str, history: &History) -> Result<usize, String> {
        let clock = self.node.runtime().clock();
        let deadline = clock.now() + COMMAND_DEADLINE;
        loop {
            let wanted = REPLICAS.min(self.rooms.nodes().len());
            let mut held = 0;
            for pid in self.copies(room) {
                let target = self.node.runtime().target::<Room>(pid);
                let push = Request::Replicate(history.clone()).into();
                if let Ok(Ok((version, ..))) = target.call_timeout(push, CALL_TIMEOUT).await
                    && version >= history.version
                {
                    held += 1;
                }
            }
            if held >= wanted {
                return Ok(held);
            }
            if clock.now() >= deadline {
                return Err(format!(
                    "room {room} took it, but only {held} of {wanted} copies hold it: it is lost if \
                     its node is"
                ));
            }
            clock.sleep(RETRY_PAUSE).await;
        }
    }

    /// The running copies of `room`, as this node sees them.
    fn copies(&self, room: &str) -> Vec<Pid> {
        let Some(info) = self.rooms.child(room) else { return Vec::new() };
        info.copies
            .into_iter()
            .filter_map(|(_, status)| match status {
                ChildStatus::Running(pid) => Some(pid),
                _ => None,
            })
            .collect()
    }

    /// The room's lines, as its active copy has them.
    async fn history(&self, room: &str) -> Result<String, String> {
        if self.rooms.child(room).is_none() {
            return Err(format!("no room {room}"));
        }
        let history = self.ask_active(room, Request::History).await?;
        Ok(format!("history {room}: {}", history.lines.join(" | ")))
    }

    /// The members of the presence group of `room`, each asked who it is.
    async fn who(&self, room: &str) -> Result<String, String> {
        let groups = self.node.groups().map_err(|error| error.to_string())?;
        let mut names = Vec::new();
        for pid in groups.members(&format!("room/{room}")).iter() {
            let session = self.node.runtime().target::<Session>(*pid);
            match session.call_timeout((), CALL_TIMEOUT).await {
                Ok(name) => names.push(name),
                Err(error) => names.push(format!("{pid}?({error})")),
            }
        }
        names.sort();
        Ok(format!("who {room}: {}", names.join(" ")))
    }

    /// Where `room` runs: its active copy's node, and every copy's.
    fn where_is(&self, room: &str) -> Result<String, String> {
        let info = self.rooms.child(room).ok_or_else(|| format!("no room {room}"))?;
        let active = self.rooms.active(room).unwrap_or_else(|| "none".to_owned());
        let copies: Vec<String> = info.copies.into_iter().map(|(node, _)| node).collect();
        Ok(format!("where {room}: active {active} copies {}", copies.join(" ")))
    }

    /// Broadcasts `text` to every node.
    async fn announce(&self, text: &str) -> Result<String, String> {
        let broadcast = self.node.broadcast().map_err(|error| error.to_string())?;
        let message = format!("{} (from {})", text, self.node.name());
        broadcast.broadcast(ANNOUNCEMENTS, message).await.map_err(|error| error.to_string())?;
        Ok("announced".to_owned())
    }

    /// The announcements this node received, oldest first.
    fn announcements(&self) -> String {
        let texts: Vec<String> =
            self.announcements.messages().into_iter().map(|(_, text)| text).collect();
        format!("announcements: {}", texts.join(" | "))
    }

    /// The admin task: takes the cluster-wide lock `admin/ROOM`, trims the room to its last
    /// `keep` lines with the lock's fencing token (the room refuses a token lower than one it
    /// has seen: a holder whose lock lapsed cannot trim after a newer one), and releases it.
    async fn admin_trim(&self, room: &str, keep: u64) -> Result<String, String> {
        let registry = self.node.registry().map_err(|error| error.to_string())?;
        let key = format!("admin/{room}");
        let options = LockOptions::default().timeout(COMMAND_DEADLINE);
        let guard = match registry.lock(&key, options).await.map_err(|error| error.to_string())? {
            LockResult::Acquired(guard) => guard,
            LockResult::HeldBy { holder, token } => {
                return Err(format!("{key} is held by {holder} with token {token}"));
            }
            LockResult::NoQuorum => return Err(format!("{key}: no quorum")),
        };
        let token = guard.token();
        let trimmed = self.ask_active(room, Request::Trim { keep, token }).await;
        let released = guard.unlock().await;
        let history = trimmed?;
        let copies = self.replicate(room, &history).await?;
        released.map_err(|error| error.to_string())?;
        Ok(format!(
            "trimmed {room} to {} lines under lock {key}, fencing token {token}, on {copies} copies",
            history.lines.len()
        ))
    }

    /// The nodes this node sees, and those of the rooms' hub.
    fn nodes(&self) -> String {
        let mut nodes = self.node.transport().nodes();
        let me = self.node.name().to_owned();
        if !nodes.contains(&me) {
            nodes.push(me);
            nodes.sort();
        }
        format!("nodes: {}; hub {ROOMS}: {}", nodes.join(" "), self.rooms.nodes().join(" "))
    }
}

/// Prints each announcement this node receives to stderr, as it comes (stdout is for the
/// answers).
fn print_announcements(log: &Log<String>) {
    let log = log.clone();
    let mut deliveries = log.deliveries();
    tokio::spawn(async move {
        let mut printed = 0;
        while deliveries.changed().await.is_ok() {
            let messages = log.messages();
            for (_, text) in messages.iter().skip(printed) {
                eprintln!("announcement: {text}");
            }
            printed = messages.len();
        }
    });
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
