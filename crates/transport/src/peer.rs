//! One known member of the cluster, as this node sees it: its spec, whether it is up, the
//! queues to its connections, what is bounded against it, and what local processes hold on it
//! (monitors and links, so that losing the node can be reported to each of them).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use shoal_process::remote::current_sender;
use shoal_process::{NodeId, Pid, Ref};
use tokio::sync::{Notify, watch};

use crate::queue::{OutQueue, Pushed, Queued};
use crate::wire::{Addressee, Frame, KEEP_SINCE_VERSION};
use crate::{CONTROL_CHANNEL, ChannelConfig, NodeSpec};

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The open connections to a peer while it is up: a queue per connection, by channel.
pub(crate) struct Session {
    /// By channel name; a few channels, so searched in order rather than hashed.
    channels: Vec<(String, Vec<Arc<OutQueue>>)>,
    /// Set to `true` when the session ends; the session's tasks watch it.
    ended: watch::Sender<bool>,
}

impl Session {
    /// Queues for every connection of every channel, before any is open.
    fn new(channels: &BTreeMap<String, ChannelConfig>) -> Self {
        let channels = channels
            .iter()
            .map(|(name, config)| {
                let queues = (0..config.parallelism)
                    .map(|_| Arc::new(OutQueue::new(config.monotonic)))
                    .collect();
                (name.clone(), queues)
            })
            .collect();
        Self { channels, ended: watch::Sender::new(false) }
    }

    /// The queues of `channel`'s connections.
    fn queues(&self, channel: &str) -> Option<&[Arc<OutQueue>]> {
        let found = self.channels.iter().find(|(name, _)| name == channel);
        found.map(|(_, queues)| queues.as_slice())
    }

    /// The queue of connection `index` of `channel`.
    pub(crate) fn queue(&self, channel: &str, index: u16) -> Option<Arc<OutQueue>> {
        self.queues(channel)?.get(usize::from(index)).cloned()
    }

    /// Every connection's queue, with its channel and index.
    pub(crate) fn connections(&self) -> impl Iterator<Item = (&str, u16, &Arc<OutQueue>)> {
        self.channels.iter().flat_map(|(channel, queues)| {
            queues
                .iter()
                .enumerate()
                .map(move |(index, queue)| (channel.as_str(), index as u16, queue))
        })
    }

    pub(crate) fn ended(&self) -> watch::Receiver<bool> {
        self.ended.subscribe()
    }

    fn end(&self) -> Vec<Queued> {
        self.ended.send_replace(true);
        let queues = self.channels.iter().flat_map(|(_, queues)| queues);
        queues.flat_map(|queue| queue.close()).collect()
    }
}

/// Counters for one peer, readable with [`crate::Node::peer_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Frames written to the peer.
    pub frames_sent: u64,
    /// Bytes written to the peer.
    pub bytes_sent: u64,
    /// Frames read from the peer.
    pub frames_received: u64,
    /// Bytes read from the peer.
    pub bytes_received: u64,
    /// Casts and calls queued for the peer right now.
    pub queued: u64,
    /// Times the connections to the peer were set up again after a loss.
    pub reconnects: u64,
    /// Frames discarded by fault injection.
    pub dropped_by_faults: u64,
    /// The round-trip time to the peer, smoothed: from each heartbeat's ping to its pong,
    /// averaged as TCP does (`rtt = 7/8 rtt + 1/8 sample`, RFC 6298). It includes the time
    /// both frames wait behind other control frames. `None` until a first pong came back.
    pub rtt: Option<Duration>,
    /// Traced calls from the peer whose trace context was not valid (a zero id): handled,
    /// untraced.
    pub ignored_trace_contexts: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) frames_sent: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) frames_received: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) dropped_by_faults: AtomicU64,
    pub(crate) ignored_trace_contexts: AtomicU64,
}

/// Monitors and links between local processes and processes of one peer.
#[derive(Default)]
pub(crate) struct Ties {
    /// Local watchers of the peer's processes: monitor → (watcher, target).
    pub(crate) watching: HashMap<Ref, (Pid, Pid)>,
    /// The peer's watchers of local processes: monitor → local target.
    pub(crate) watched: HashMap<Ref, Pid>,
    /// Links: (local, remote).
    pub(crate) links: HashSet<(Pid, Pid)>,
}

pub(crate) struct Peer {
    pub(crate) id: NodeId,
    spec: Mutex<NodeSpec>,
    session: Mutex<Option<Arc<Session>>>,
    up: AtomicBool,
    /// Casts and calls queued across all connections, bounded by `limit`.
    queued: AtomicUsize,
    limit: usize,
    room: Mutex<Vec<Waker>>,
    has_waiting_senders: AtomicBool,
    /// When a frame last came from the peer, in milliseconds since the node started.
    last_heard_ms: AtomicU64,
    pub(crate) counters: Counters,
    /// Round trips of heartbeat pings.
    rtt: RttEstimate,
    pub(crate) ties: Mutex<Ties>,
    /// Set when the peer left or was replaced: its connector stops.
    removed: watch::Sender<bool>,
    /// Bumped when the peer's inbound connections must close (it went down).
    inbound_epoch: watch::Sender<u64>,
    /// Held while a session begins or ends and while one of the peer's connections is taken
    /// ([`Peer::take_inbound`]), so that every connection of the peer's is taken either before
    /// an end, which then closes it and counts its attempt as released, or after, and then is
    /// neither closed nor counted. Taken before `session`, never after.
    gate: Mutex<()>,
    /// Wakes the connector from its backoff (healed, restarted).
    pub(crate) kick: Notify,
    /// Receivers on the peer that asked this node to hold casts and calls to them, as their
    /// senders address them (see `crate::remote`, "Head-of-line").
    held: Mutex<HashSet<Addressee>>,
    any_held: AtomicBool,
    /// Senders waiting for a hold to be lifted.
    unheld: Mutex<Vec<Waker>>,
    /// The connections the peer opened to this node, by channel and index: the bytes read on
    /// each (what this node reports to the peer for its stall detection, `crate::progress`),
    /// and how to tell its reader that a newer connection replaced it.
    inbound: Mutex<Vec<InboundSlot>>,
    /// The connection attempt of this node's that opened the session it is up on.
    session_attempt: AtomicU64,
    /// The latest connection attempt of the peer's that this node took a connection of.
    took_attempt: AtomicU64,
    /// The latest connection attempt of the peer's whose connections this node closed (when
    /// the peer went down here).
    released_attempt: AtomicU64,
    /// The protocol version the latest handshake with the peer negotiated, either way (0:
    /// none yet).
    version: AtomicU32,
    /// Whether the peer says a layer on it keeps the connection (`crate::keep`); cleared when
    /// a session ends.
    remote_keeps: AtomicBool,
    /// Frames other than the control channel's sent or received: what the idle check sees
    /// move (heartbeats and the like do not count as use).
    data_frames: AtomicU64,
    /// One more than `data_frames` when the last keep here was let go
    /// ([`crate::KeepConnection::let_go`]), 0 when none was since the last keep or session.
    let_go_mark: AtomicU64,
}

struct InboundSlot {
    channel: String,
    index: u16,
    read: Arc<AtomicU64>,
    superseded: watch::Sender<bool>,
}

/// What the reader of one of the peer's connections is given: where to count the bytes it
/// reads, and a signal that a newer connection of the same channel and index replaced it.
pub(crate) struct InboundTrack {
    pub(crate) read: Arc<AtomicU64>,
    pub(crate) superseded: watch::Receiver<bool>,
}

/// Which connection of a channel a frame takes (`order`: every frame of one sender takes the
/// same, see `crate::remote`), and which queued frame it supersedes on a monotonic channel
/// (`latest`: the previous one of the same sender to the same receiver).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Lane {
    pub(crate) order: u64,
    pub(crate) latest: u64,
}

impl Lane {
    /// The lane of frames from the sender keyed `sender` to the receiver keyed `receiver`.
    pub(crate) fn new(sender: u64, receiver: u64) -> Self {
        Self { order: sender, latest: sender ^ receiver.rotate_left(29) }
    }
}

/// Whether a frame counts against the peer's bound on queued casts and calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bound {
    /// A cast or a call: refused when the bound is reached (the sender waits).
    Counted,
    /// A signal, a reply or a control frame: always queued (bounded by what causes it).
    Exempt,
}

/// Why a frame for a peer was not queued; the frame is handed back. (Large, but only on the
/// rare error path, and boxing it would cost an allocation on the hot path's return type.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum PushError {
    Full(Frame),
    Down(Frame),
}

impl Peer {
    pub(crate) fn new(spec: NodeSpec, limit: usize) -> Self {
        Self {
            id: spec.id(),
            spec: Mutex::new(spec),
            session: Mutex::new(None),
            up: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            limit,
            room: Mutex::new(Vec::new()),
            has_waiting_senders: AtomicBool::new(false),
            last_heard_ms: AtomicU64::new(0),
            counters: Counters::default(),
            rtt: RttEstimate::default(),
            ties: Mutex::new(Ties::default()),
            removed: watch::Sender::new(false),
            inbound_epoch: watch::Sender::new(0),
            gate: Mutex::new(()),
            session_attempt: AtomicU64::new(0),
            took_attempt: AtomicU64::new(0),
            released_attempt: AtomicU64::new(0),
            version: AtomicU32::new(0),
            remote_keeps: AtomicBool::new(false),
            data_frames: AtomicU64::new(0),
            let_go_mark: AtomicU64::new(0),
            kick: Notify::new(),
            held: Mutex::default(),
            any_held: AtomicBool::new(false),
            unheld: Mutex::default(),
            inbound: Mutex::default(),
        }
    }

    pub(crate) fn spec(&self) -> NodeSpec {
        lock(&self.spec).clone()
    }

    pub(crate) fn name(&self) -> String {
        lock(&self.spec).name.clone()
    }

    pub(crate) fn incarnation(&self) -> u64 {
        lock(&self.spec).incarnation
    }

    pub(crate) fn set_spec(&self, spec: NodeSpec) {
        let mut current = lock(&self.spec);
        if current.incarnation != spec.incarnation {
            // A new incarnation numbers its connection attempts afresh.
            self.took_attempt.store(0, Ordering::Release);
            self.released_attempt.store(0, Ordering::Release);
        }
        *current = spec;
    }

    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Whether frames pushed now are queued: the peer is up, or its session is being set up
    /// (they wait for its connections).
    pub(crate) fn is_reachable(&self) -> bool {
        self.is_up() || lock(&self.session).is_some()
    }

    /// The session being set up, or a new one: frames pushed to it wait in its queues until
    /// its connections open (a reply to a peer that has just connected here must not be lost
    /// while this node connects back).
    pub(crate) fn connecting(&self, channels: &BTreeMap<String, ChannelConfig>) -> Arc<Session> {
        lock(&self.session).get_or_insert_with(|| Arc::new(Session::new(channels))).clone()
    }

    /// A session that could not be set up is dropped with what was queued on it.
    pub(crate) fn abandon(&self, session: &Arc<Session>) {
        let mut current = lock(&self.session);
        if current.as_ref().is_some_and(|current| Arc::ptr_eq(current, session)) {
            *current = None;
            drop(current);
            let left = session.end();
            self.release(left.iter().filter(|queued| queued.counted).count());
            // Senders waiting for room in it hear that it is gone.
            self.wake_senders();
        }
    }

    /// The session's connections, opened by connection attempt `attempt`, are open: the peer
    /// is up, unless the session was ended meanwhile (the peer restarted or left while this
    /// node connected).
    pub(crate) fn begin(&self, session: &Arc<Session>, attempt: u64, now_ms: u64) -> bool {
        let _gate = lock(&self.gate);
        let current = lock(&self.session);
        if !current.as_ref().is_some_and(|current| Arc::ptr_eq(current, session)) {
            return false;
        }
        self.session_attempt.store(attempt, Ordering::Release);
        self.heard(now_ms);
        self.up.store(true, Ordering::Release);
        true
    }

    /// Ends the session, if any: queues close, writers stop, and the readers of the peer's
    /// connections are told to close, so that the peer notices too (frames queued here may
    /// have been lost, and its callers must hear of it). Returns whether the peer was up.
    pub(crate) fn end(&self) -> bool {
        let _gate = lock(&self.gate);
        let session = lock(&self.session).take();
        self.end_taken(session)
    }

    /// Ends `session` as [`Self::end`] does, if it is still the peer's session; whether the
    /// peer was up, or `None` when the session was ended from elsewhere meanwhile.
    pub(crate) fn end_session(&self, session: &Arc<Session>) -> Option<bool> {
        let _gate = lock(&self.gate);
        let mut current = lock(&self.session);
        if !current.as_ref().is_some_and(|current| Arc::ptr_eq(current, session)) {
            return None;
        }
        let taken = current.take();
        drop(current);
        Some(self.end_taken(taken))
    }

    /// Ends `session`, taken off the peer; called with the gate held, so that the peer's
    /// connections taken before (and only those) close and count as released.
    fn end_taken(&self, session: Option<Arc<Session>>) -> bool {
        let was_up = self.up.swap(false, Ordering::AcqRel);
        if let Some(session) = session {
            let left = session.end();
            self.release(left.iter().filter(|queued| queued.counted).count());
        }
        self.inbound_epoch.send_modify(|epoch| *epoch += 1);
        self.released_attempt
            .fetch_max(self.took_attempt.load(Ordering::Acquire), Ordering::AcqRel);
        // Holds and keeps belong to the session: the peer sends its keep again in the next.
        self.remote_keeps.store(false, Ordering::Release);
        self.let_go_mark.store(0, Ordering::Release);
        lock(&self.held).clear();
        self.any_held.store(false, Ordering::Release);
        self.wake_senders();
        self.wake_unheld();
        was_up
    }

    /// The protocol version the latest handshake with the peer negotiated, on a connection
    /// either node opened; `None` before the first.
    pub(crate) fn version(&self) -> Option<u32> {
        Some(self.version.load(Ordering::Acquire)).filter(|version| *version != 0)
    }

    /// A handshake with the peer negotiated `version`.
    pub(crate) fn set_version(&self, version: u32) {
        self.version.store(version, Ordering::Release);
    }

    /// The connection attempt of this node's that opened the session it is up on.
    pub(crate) fn session_attempt(&self) -> u64 {
        self.session_attempt.load(Ordering::Acquire)
    }

    /// Takes a connection the peer opened in its connection attempt `attempt`, after closing
    /// this node's connections of its attempts up to `released` (both from the connection's
    /// [`crate::handshake::Hello`]). If this node is still up on a session of one of those
    /// attempts (the peer took this node down and connected again before this node noticed),
    /// that session ends first, before the connection is taken, which it then does not close:
    /// whether the peer was up is returned, the peer is to be reported down. Also returns what
    /// tells the connection's reader to close: it changes when the peer goes down here after
    /// the connection was taken (never for a down before, even one still being reported).
    pub(crate) fn take_inbound(
        &self,
        attempt: u64,
        released: u64,
    ) -> (Option<bool>, watch::Receiver<u64>) {
        let _gate = lock(&self.gate);
        let ended = (self.is_up() && released >= self.session_attempt()).then(|| {
            let session = lock(&self.session).take();
            self.end_taken(session)
        });
        self.took_attempt.fetch_max(attempt, Ordering::AcqRel);
        (ended, self.inbound_epoch.subscribe())
    }

    /// The latest attempt of the peer's whose connections this node closed (0 when none).
    pub(crate) fn released_attempt(&self) -> u64 {
        self.released_attempt.load(Ordering::Acquire)
    }

    pub(crate) fn remove(&self) {
        self.removed.send_replace(true);
        self.end();
    }

    pub(crate) fn removed(&self) -> watch::Receiver<bool> {
        self.removed.subscribe()
    }

    pub(crate) fn is_removed(&self) -> bool {
        *self.removed.borrow()
    }

    pub(crate) fn heard(&self, now_ms: u64) {
        self.last_heard_ms.store(now_ms, Ordering::Relaxed);
    }

    pub(crate) fn last_heard_ms(&self) -> u64 {
        self.last_heard_ms.load(Ordering::Relaxed)
    }

    /// Queues `frame` on `channel`, on the connection its `lane` picks. A counted frame (a cast
    /// or a call) is refused when the peer's queue is full; others always get in.
    #[allow(clippy::result_large_err)]
    pub(crate) fn push(
        &self,
        channel: &str,
        lane: Lane,
        frame: Frame,
        bound: Bound,
    ) -> Result<(), PushError> {
        let counted = bound == Bound::Counted;
        // The session stays locked while the frame is queued: cheaper than sharing it out
        // (two more atomic operations per frame), and the push is short.
        let session = lock(&self.session);
        let Some(queues) = session.as_deref().and_then(|session| session.queues(channel)) else {
            return Err(PushError::Down(frame));
        };
        if channel != CONTROL_CHANNEL {
            self.note_data();
        }
        if counted && self.queued.fetch_add(1, Ordering::AcqRel) >= self.limit {
            // Through `release`, so a sender that waits meanwhile is not forgotten.
            self.release(1);
            return Err(PushError::Full(frame));
        }
        let queue = &queues[(spread(lane.order) % queues.len() as u64) as usize];
        match queue.push(lane.latest, Queued { frame, counted }) {
            Pushed::Queued => Ok(()),
            Pushed::Superseded { counted: true } => {
                self.release(1);
                Ok(())
            }
            Pushed::Superseded { counted: false } => Ok(()),
            Pushed::Closed(queued) => {
                if counted {
                    self.release(1);
                }
                Err(PushError::Down(queued.frame))
            }
        }
    }

    /// Queues a frame on the control channel.
    pub(crate) fn push_control(&self, frame: Frame) -> bool {
        self.push(CONTROL_CHANNEL, Lane::new(0, 0), frame, Bound::Exempt).is_ok()
    }

    /// Tells the peer whether a layer here keeps their connection (`crate::keep`), if it
    /// speaks a version that knows how ([`KEEP_SINCE_VERSION`]).
    pub(crate) fn push_keep(&self, keep: bool) {
        if self.version().is_some_and(|version| version >= KEEP_SINCE_VERSION) {
            self.push_control(Frame::Keep { keep });
        }
    }

    /// The peer's process addressed as `to` asked this node to hold casts and calls to it.
    pub(crate) fn hold(&self, to: Addressee) {
        lock(&self.held).insert(to);
        self.any_held.store(true, Ordering::Release);
    }

    /// The hold on `to` is lifted.
    pub(crate) fn resume(&self, to: &Addressee) {
        {
            let mut held = lock(&self.held);
            held.remove(to);
            self.any_held.store(!held.is_empty(), Ordering::Release);
        }
        self.wake_unheld();
    }

    /// Whether casts and calls to `to` must wait for a [`Peer::resume`].
    pub(crate) fn is_held(&self, to: &Addressee) -> bool {
        self.any_held.load(Ordering::Acquire) && lock(&self.held).contains(to)
    }

    /// Whether the process registered as `name` is held (see [`Peer::is_held`]).
    pub(crate) fn is_held_name(&self, name: &str) -> bool {
        self.any_held.load(Ordering::Acquire)
            && lock(&self.held)
                .iter()
                .any(|held| matches!(held, Addressee::Name(held) if held == name))
    }

    /// Ready when `to` is not held (or the peer is down, which the next push reports).
    pub(crate) fn poll_unheld(&self, to: &Addressee, cx: &mut Context<'_>) -> Poll<()> {
        if !self.is_held(to) {
            return Poll::Ready(());
        }
        {
            let mut unheld = lock(&self.unheld);
            if !unheld.iter().any(|waker| waker.will_wake(cx.waker())) {
                unheld.push(cx.waker().clone());
            }
        }
        // Check again: the hold may have been lifted before the registration.
        if self.is_held(to) { Poll::Pending } else { Poll::Ready(()) }
    }

    fn wake_unheld(&self) {
        let wakers = std::mem::take(&mut *lock(&self.unheld));
        wakers.into_iter().for_each(Waker::wake);
    }

    /// The counter of bytes read on the peer's connection `index` of `channel`, new for a new
    /// connection.
    pub(crate) fn track_inbound(&self, channel: &str, index: u16) -> InboundTrack {
        let read = Arc::new(AtomicU64::new(0));
        let (superseded, replaced) = watch::channel(false);
        let slot =
            InboundSlot { channel: channel.to_owned(), index, read: read.clone(), superseded };
        let mut inbound = lock(&self.inbound);
        match inbound.iter_mut().find(|slot| slot.channel == channel && slot.index == index) {
            Some(old) => std::mem::replace(old, slot).superseded.send_replace(true),
            None => {
                inbound.push(slot);
                false
            }
        };
        InboundTrack { read, superseded: replaced }
    }

    /// Bytes read so far on each of the peer's connections to this node.
    pub(crate) fn inbound_counts(&self) -> Vec<(String, u16, u64)> {
        let inbound = lock(&self.inbound);
        let count = |slot: &InboundSlot| {
            (slot.channel.clone(), slot.index, slot.read.load(Ordering::Relaxed))
        };
        inbound.iter().map(count).collect()
    }

    /// What the peer says it has read on this node's connections to it.
    pub(crate) fn note_read_by_peer(&self, counts: &[(String, u16, u64)]) {
        let session = lock(&self.session).clone();
        let Some(session) = session else { return };
        for (channel, index, read) in counts {
            if let Some(queue) = session.queue(channel, *index) {
                queue.progress.read_by_peer.fetch_max(*read, Ordering::Relaxed);
            }
        }
    }

    /// `count` bounded frames left the queues.
    pub(crate) fn release(&self, count: usize) {
        if count == 0 {
            return;
        }
        let before = self.queued.fetch_sub(count, Ordering::AcqRel);
        // Wake on any room, not only when crossing the limit: a failed push may have lifted
        // the count above the limit for a moment while a sender registered.
        if before - count < self.limit && self.has_waiting_senders.load(Ordering::Acquire) {
            self.wake_senders();
        }
    }

    fn wake_senders(&self) {
        let mut room = lock(&self.room);
        self.has_waiting_senders.store(false, Ordering::Release);
        for waker in room.drain(..) {
            waker.wake();
        }
    }

    /// Ready when a bounded frame would be queued; an error when the peer is down (also while
    /// its connections are being opened: a sender that finds a connecting peer's queue full
    /// fails rather than waits).
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        if !self.is_up() {
            return Poll::Ready(Err(()));
        }
        if self.queued.load(Ordering::Acquire) < self.limit {
            return Poll::Ready(Ok(()));
        }
        {
            let mut room = lock(&self.room);
            if !room.iter().any(|waker| waker.will_wake(cx.waker())) {
                room.push(cx.waker().clone());
            }
            self.has_waiting_senders.store(true, Ordering::Release);
        }
        // Check again: room may have been made between the load and the registration.
        if self.queued.load(Ordering::Acquire) < self.limit || !self.is_up() {
            return Poll::Ready(if self.is_up() { Ok(()) } else { Err(()) });
        }
        Poll::Pending
    }

    /// A frame other than the control channel's was sent or received.
    pub(crate) fn note_data(&self) {
        self.data_frames.fetch_add(1, Ordering::Relaxed);
    }

    /// How many frames other than the control channel's were sent or received so far.
    pub(crate) fn data_frames(&self) -> u64 {
        self.data_frames.load(Ordering::Relaxed)
    }

    /// The peer says whether a layer on it keeps the connection.
    pub(crate) fn set_remote_keeps(&self, keeps: bool) {
        self.remote_keeps.store(keeps, Ordering::Release);
    }

    /// Whether the peer said a layer on it keeps the connection (in this session).
    pub(crate) fn remote_keeps(&self) -> bool {
        self.remote_keeps.load(Ordering::Acquire)
    }

    /// The last keep here was let go: the connection may close as soon as it is quiet.
    pub(crate) fn mark_let_go(&self) {
        self.let_go_mark.store(self.data_frames() + 1, Ordering::Release);
    }

    /// A keep was taken again: the let-go no longer counts.
    pub(crate) fn clear_let_go(&self) {
        self.let_go_mark.store(0, Ordering::Release);
    }

    /// Whether the last keep was let go and no frame (but the control channel's) moved since,
    /// `data_frames` being the count now.
    pub(crate) fn quiet_since_let_go(&self, data_frames: u64) -> bool {
        self.let_go_mark.load(Ordering::Acquire) == data_frames + 1
    }

    /// Whether monitors or links tie local processes to the peer's.
    pub(crate) fn has_ties(&self) -> bool {
        let ties = lock(&self.ties);
        !ties.watching.is_empty() || !ties.watched.is_empty() || !ties.links.is_empty()
    }

    /// Casts and calls queued for the peer now.
    pub(crate) fn queued_frames(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    pub(crate) fn stats(&self) -> PeerStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        PeerStats {
            frames_sent: read(&self.counters.frames_sent),
            bytes_sent: read(&self.counters.bytes_sent),
            frames_received: read(&self.counters.frames_received),
            bytes_received: read(&self.counters.bytes_received),
            queued: self.queued.load(Ordering::Relaxed) as u64,
            reconnects: read(&self.counters.reconnects),
            dropped_by_faults: read(&self.counters.dropped_by_faults),
            rtt: self.rtt.smoothed(),
            ignored_trace_contexts: read(&self.counters.ignored_trace_contexts),
        }
    }

    /// A traced call from the peer came with a context that is not valid.
    pub(crate) fn count_ignored_trace_context(&self) {
        self.counters.ignored_trace_contexts.fetch_add(1, Ordering::Relaxed);
    }

    /// A heartbeat ping `id` is sent now (`now_us`: microseconds since the node started).
    pub(crate) fn note_heartbeat_ping(&self, id: u64, now_us: u64) {
        self.rtt.sent(id, now_us);
    }

    /// The pong `id` came back now; whether it answered the latest heartbeat ping.
    pub(crate) fn note_pong(&self, id: u64, now_us: u64) -> bool {
        self.rtt.answered(id, now_us)
    }
}

/// The smoothed round-trip time of heartbeat pings. One ping is timed at a time, the latest:
/// a pong for an older one (it came after the next ping left) is not a sample.
#[derive(Default)]
struct RttEstimate {
    /// The id of the latest heartbeat ping, 0 once its pong came back.
    ping_id: AtomicU64,
    ping_sent_us: AtomicU64,
    /// Smoothed round trip in microseconds, 0 before the first sample.
    smoothed_us: AtomicU64,
}

impl RttEstimate {
    fn sent(&self, id: u64, now_us: u64) {
        // The time first, then the id that makes it count: a pong matching the id finds it.
        self.ping_sent_us.store(now_us, Ordering::Relaxed);
        self.ping_id.store(id, Ordering::Release);
    }

    fn answered(&self, id: u64, now_us: u64) -> bool {
        if id == 0
            || self.ping_id.compare_exchange(id, 0, Ordering::Acquire, Ordering::Relaxed).is_err()
        {
            return false;
        }
        // At least a microsecond, so that a sample is never taken for "none yet".
        let sample = now_us.saturating_sub(self.ping_sent_us.load(Ordering::Relaxed)).max(1);
        let smooth = |previous: u64| match previous {
            0 => Some(sample),
            previous => Some((previous.saturating_mul(7).saturating_add(sample) / 8).max(1)),
        };
        let _ = self.smoothed_us.fetch_update(Ordering::Relaxed, Ordering::Relaxed, smooth);
        true
    }

    fn smoothed(&self) -> Option<Duration> {
        match self.smoothed_us.load(Ordering::Relaxed) {
            0 => None,
            micros => Some(Duration::from_micros(micros)),
        }
    }
}

/// Hashes `NodeId`s for the map of peers, which routing reads for every frame: a node id is
/// already a hash of the node's name, so one mixing step does (SipHash would cost more than
/// the rest of the lookup).
#[derive(Clone, Copy, Default)]
pub(crate) struct NodeIdHash;

impl std::hash::BuildHasher for NodeIdHash {
    type Hasher = NodeIdHasher;

    fn build_hasher(&self) -> NodeIdHasher {
        NodeIdHasher(0)
    }
}

/// See [`NodeIdHash`].
pub(crate) struct NodeIdHasher(u64);

impl std::hash::Hasher for NodeIdHasher {
    fn finish(&self) -> u64 {
        spread(self.0)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

/// Mixes a key so that consecutive ids spread over connections.
fn spread(key: u64) -> u64 {
    let mut x = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The ordering key of a process: what it sends takes one connection of a channel (and so
/// does what is sent on its behalf: its `Down`, its exit signals).
pub(crate) fn pid_key(pid: Pid) -> u64 {
    pid.local_id() ^ pid.incarnation().rotate_left(32)
}

/// The ordering key of whatever is sent from here: the process running on this thread, or else
/// the task, so that one sender's frames keep their order.
pub(crate) fn sender_key() -> u64 {
    match current_sender() {
        Some(pid) => pid_key(pid),
        None => tokio::task::try_id().map_or(0, task_key),
    }
}

/// The ordering key of a task that is not a process.
pub(crate) fn task_key(id: tokio::task::Id) -> u64 {
    NodeIdHash.hash_one(id)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::DEFAULT_CHANNEL;

    fn connecting_peer() -> (Peer, Arc<Session>) {
        let spec = NodeSpec {
            name: "b".into(),
            incarnation: 1,
            listen_addrs: Vec::new(),
            channels: BTreeMap::new(),
        };
        let channels = BTreeMap::from([
            (CONTROL_CHANNEL.to_owned(), ChannelConfig::new()),
            (DEFAULT_CHANNEL.to_owned(), ChannelConfig::new()),
        ]);
        let peer = Peer::new(spec, 16);
        let session = peer.connecting(&channels);
        (peer, session)
    }

    fn control_frames(session: &Session) -> Vec<Frame> {
        let queue = session.queue(CONTROL_CHANNEL, 0).expect("a control queue");
        queue.close().into_iter().map(|queued| queued.frame).collect()
    }

    /// The round-trip time is smoothed as RFC 6298 smooths SRTT (alpha = 1/8), from the first
    /// sample on; only the pong of the latest heartbeat ping is a sample, once.
    #[test]
    fn the_round_trip_time_is_an_ewma_of_heartbeat_pongs() {
        let rtt = RttEstimate::default();
        assert_eq!(rtt.smoothed(), None);
        rtt.sent(5, 1_000);
        assert!(!rtt.answered(4, 1_100), "an older ping's pong is no sample");
        assert!(rtt.answered(5, 1_800));
        assert_eq!(rtt.smoothed(), Some(Duration::from_micros(800)));
        assert!(!rtt.answered(5, 1_900), "a pong counts once");
        rtt.sent(6, 2_000);
        assert!(rtt.answered(6, 2_080));
        // (7 * 800 + 80) / 8
        assert_eq!(rtt.smoothed(), Some(Duration::from_micros(710)));
        assert!(!rtt.answered(0, 3_000), "id 0 is no ping");
    }

    /// Rolling upgrades: `Frame::Keep` (version 3) never goes to a peer that speaks version 2,
    /// which would not decode it and would close the connection.
    #[test]
    fn a_keep_goes_only_to_a_peer_of_version_3_or_later() {
        let (peer, session) = connecting_peer();
        peer.push_keep(true);
        peer.set_version(2);
        peer.push_keep(true);
        assert_eq!(control_frames(&session), vec![], "none before a version, none to version 2");
        let (peer, session) = connecting_peer();
        peer.set_version(KEEP_SINCE_VERSION);
        peer.push_keep(false);
        assert_eq!(control_frames(&session), vec![Frame::Keep { keep: false }]);
    }

    /// The idle check's inputs: only frames off the control channel count as use, and a
    /// let-go counts until the next such frame.
    #[test]
    fn only_data_frames_count_as_use_and_a_let_go_lasts_until_the_next() {
        let (peer, _session) = connecting_peer();
        peer.set_version(KEEP_SINCE_VERSION);
        peer.push_control(Frame::Ping { id: 1 });
        assert_eq!(peer.data_frames(), 0, "heartbeats are not use");
        peer.mark_let_go();
        assert!(peer.quiet_since_let_go(peer.data_frames()));
        let lane = Lane::new(1, 2);
        let cast = Frame::Cast {
            to: Pid::name_placeholder(NodeId::from_name("b")),
            payload: Default::default(),
        };
        assert!(peer.push(DEFAULT_CHANNEL, lane, cast, Bound::Counted).is_ok());
        assert_eq!(peer.data_frames(), 1);
        assert!(!peer.quiet_since_let_go(peer.data_frames()), "used since the let-go");
        peer.clear_let_go();
        assert!(!peer.quiet_since_let_go(peer.data_frames()));
    }
}
