//! A chat room: a hub child with state. Its history lives in the room process; the hub runs
//! two copies of each room (active/passive), so the room outlives its node.
//!
//! **What an acknowledged line survives.** The hub streams the active copy's state to the
//! passive one every [`shoal::hub::HubConfig::stream_every`], so on its own a promoted copy may
//! miss what the active one took in its last period. A `say` is therefore acknowledged only
//! once the new state is on the room's copies ([`Request::Replicate`], pushed by the node
//! that took the `say`; see `Chat::say`): an acknowledged line is lost only if every node
//! holding a copy is lost. Each copy takes a state only if it is newer than its own
//! ([`History::version`]), so the pushes and the hub's stream may arrive in any order. The
//! cost: a `say` waits for both copies, so the first lines of a new room wait for its second
//! copy to start (about a second), and while a lost node's rooms get their second copy back
//! (the hub's `down_after`, one second here, and a start); a `say` that cannot reach both
//! copies within eight seconds is answered with an error that says the line may be lost with
//! its node. In a cluster of one there is one copy, and nothing survives that node.
//!
//! The room's messages use std types only (tuples, strings, numbers): msgpack encodes them
//! without a serde derive, which this example cannot use (the facade does not depend on
//! serde). With serde, `Request` and `History` would simply derive it.

use shoal::hub::core::Role;
use shoal::hub::{Handover, Handovers};
use shoal::prelude::*;

/// The factory that builds rooms, on every node (its argument: the room's name).
pub(crate) const FACTORY: &str = "chat-room";

/// Lines a room keeps (the oldest go first): a room's state is streamed whole.
const MAX_LINES: usize = 200;

/// A room's state: its lines, how many changes made it, and the highest fencing token of the
/// admin locks that trimmed it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct History {
    /// Grows by one with each change: of two states of a room, the newer one.
    pub(crate) version: u64,
    /// The highest fencing token a trim came with; a trim with a lower one is refused.
    pub(crate) fence: u64,
    /// `USER: TEXT`, oldest first.
    pub(crate) lines: Vec<String>,
}

/// [`History`] as it travels: (version, fence, lines).
pub(crate) type HistoryWire = (u64, u64, Vec<String>);

impl From<HistoryWire> for History {
    fn from((version, fence, lines): HistoryWire) -> Self {
        History { version, fence, lines }
    }
}

impl From<History> for HistoryWire {
    fn from(history: History) -> Self {
        (history.version, history.fence, history.lines)
    }
}

/// What a room is asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// Append `line` (the active copy only).
    Say { line: String },
    /// The history.
    History,
    /// Keep the last `keep` lines, under an admin lock with fencing token `token` (the active
    /// copy only).
    Trim { keep: u64, token: u64 },
    /// Take `history` if it is newer than this copy's (any copy); answers this copy's state.
    Replicate(History),
}

impl Request {
    /// Whether it changes the room (a retry after an unclear failure could apply it twice).
    pub(crate) fn is_change(&self) -> bool {
        matches!(self, Request::Say { .. } | Request::Trim { .. })
    }
}

/// [`Request`] as it travels: a tag, then the fields of each kind (unused ones empty).
pub(crate) type RequestWire = (u8, String, u64, u64, HistoryWire);

impl From<Request> for RequestWire {
    fn from(request: Request) -> Self {
        let none = HistoryWire::default();
        match request {
            Request::Say { line } => (0, line, 0, 0, none),
            Request::History => (1, String::new(), 0, 0, none),
            Request::Trim { keep, token } => (2, String::new(), keep, token, none),
            Request::Replicate(history) => (3, String::new(), 0, 0, history.into()),
        }
    }
}

impl TryFrom<RequestWire> for Request {
    type Error = String;

    fn try_from((tag, line, keep, token, history): RequestWire) -> Result<Self, String> {
        Ok(match tag {
            0 => Request::Say { line },
            1 => Request::History,
            2 => Request::Trim { keep, token },
            3 => Request::Replicate(history.into()),
            other => return Err(format!("unknown room request {other}")),
        })
    }
}

/// The refusal of a passive copy asked to change the room: not applied, so worth a retry
/// (the active copy moved, and this node's view has not caught up yet).
pub(crate) const PASSIVE: &str = "passive copy";

/// One copy of a room.
pub(crate) struct Room {
    name: String,
    history: History,
    /// As the hub told it; `None` until told (a room with one copy may serve).
    role: Option<Role>,
}

impl Room {
    pub(crate) fn new(name: String) -> Self {
        Room { name, history: History::default(), role: None }
    }

    /// The behaviours with state to hand over, for the hub's configuration.
    pub(crate) fn handovers() -> Handovers {
        Handovers::default().with::<Room>(FACTORY)
    }

    fn answer(&mut self, request: Request) -> Result<History, String> {
        let passive = self.role == Some(Role::Passive);
        match request {
            Request::Say { .. } | Request::Trim { .. } if passive => Err(PASSIVE.to_owned()),
            Request::Say { line } => {
                self.history.lines.push(line);
                let excess = self.history.lines.len().saturating_sub(MAX_LINES);
                self.history.lines.drain(..excess);
                self.history.version += 1;
                Ok(self.history.clone())
            }
            Request::History => Ok(self.history.clone()),
            Request::Trim { token, .. } if token < self.history.fence => Err(format!(
                "fencing token {token} refused: room {} has seen {}",
                self.name, self.history.fence
            )),
            Request::Trim { keep, token } => {
                let keep = usize::try_from(keep).unwrap_or(usize::MAX);
                let excess = self.history.lines.len().saturating_sub(keep);
                self.history.lines.drain(..excess);
                self.history.fence = token;
                self.history.version += 1;
                Ok(self.history.clone())
            }
            Request::Replicate(history) => {
                self.take(history);
                Ok(self.history.clone())
            }
        }
    }

    /// Takes `history` if it is newer than this copy's.
    fn take(&mut self, history: History) {
        if history.version > self.history.version {
            self.history = history;
        }
    }
}

impl Process for Room {
    type Message = ();
    type Call = RequestWire;
    type Reply = Result<HistoryWire, String>;

    async fn handle_cast(&mut self, (): (), _ctx: &mut Context<Self>) {}

    async fn handle_call(
        &mut self,
        request: RequestWire,
        reply: ReplyTo<Self::Reply>,
        _ctx: &mut Context<Self>,
    ) {
        let answer = Request::try_from(request).and_then(|request| self.answer(request));
        reply.send(answer.map(HistoryWire::from));
    }

    fn remote_messages() -> Option<Codec<Self>> {
        Some(Codec::msgpack())
    }
}

impl Handover for Room {
    type State = HistoryWire;

    fn snapshot(&self) -> HistoryWire {
        self.history.clone().into()
    }

    fn restore(&mut self, state: HistoryWire, _ctx: &mut Context<Self>) {
        self.take(state.into());
    }

    fn role(&mut self, role: Role, ctx: &mut Context<Self>) {
        if self.role != Some(role) {
            eprintln!("room {} ({}): now {role:?}", self.name, ctx.pid());
        }
        self.role = Some(role);
    }
}
