//! One connection's life: the handshake on either side, the writer that drains a queue in
//! coalesced writes, and the readers.
//!
//! The layer knows its node only through a narrow environment ([`Wiring`]: the secret, the
//! node's spec, the network, limits, faults) and a callback ([`Dispatch`]) that admits peers
//! and takes the frames read; it never reaches into membership or the runtime itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use crate::admission::Ticket;
use crate::fault::{Faults, Flow, Verdict};
use crate::handshake::{
    Acceptor, AcceptorStep, Connector, ConnectorStep, HandshakeError, NONCE_BYTES, Secret,
};
use crate::net::{BoxFuture, Connection, Network, ReadHalf, WriteHalf};
use crate::peer::{InboundTrack, Peer, millis_since};
use crate::queue::{OutQueue, Slots};
use crate::wire::{Frame, FrameDecoder, FrameError, Hello, encode_frame, encode_frame_head};
use crate::{DownReason, NodeSpec};

/// What the connection layer needs from its node.
pub(crate) struct Wiring {
    pub(crate) secret: Secret,
    /// This node, as it introduces itself.
    pub(crate) spec: NodeSpec,
    pub(crate) network: Arc<dyn Network>,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_frame_bytes: usize,
    pub(crate) faults: Faults,
    /// When the node started: the clock of `Peer::heard`.
    pub(crate) origin: Instant,
}

/// Where the connection layer hands what it learns: implemented by the node.
pub(crate) trait Dispatch: Send + Sync + 'static {
    /// Decides whether a node that authenticated on an incoming connection may be a member;
    /// its peer, or why not (told to the node).
    fn admit(self: &Arc<Self>, spec: &NodeSpec) -> Result<Arc<Peer>, String>;

    /// Takes one frame read from `peer`. Returns a future to finish before the connection's
    /// next frame only when delivery must wait (never in the usual case).
    fn dispatch(self: &Arc<Self>, peer: &Arc<Peer>, frame: Frame)
    -> Option<BoxFuture<'static, ()>>;
}

/// Why a connection ended or never opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer closed the connection")]
    Closed,
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Refused(String),
}

/// Handshake frames are small: a peer cannot make this node buffer much before it has
/// proved it knows the secret.
const HANDSHAKE_MAX_FRAME_BYTES: usize = 64 * 1024;

/// Bytes gathered before a write; larger batches are written in several goes.
const WRITE_CHUNK_BYTES: usize = 256 * 1024;

/// A payload this large is written from its own buffer, not copied into the writer's.
const LARGE_PAYLOAD_BYTES: usize = 64 * 1024;

/// The most bytes one read or write of a large frame moves before the connection's task lets
/// the other tasks of its worker run (about 100 µs of copying).
const LARGE_IO_BYTES: usize = 1024 * 1024;

pub(crate) fn nonce() -> [u8; NONCE_BYTES] {
    let mut nonce = [0; NONCE_BYTES];
    // Without OS randomness a handshake cannot be made safe; every platform tokio runs on
    // has it, so its absence is a broken machine, not bad input.
    getrandom::fill(&mut nonce).expect("the operating system's random number generator failed");
    nonce
}

/// The next frame from `read` (handshakes read one frame at a time).
pub(crate) async fn read_frame(
    read: &mut ReadHalf,
    decoder: &mut FrameDecoder,
) -> Result<Frame, ConnError> {
    loop {
        if let Some(frame) = decoder.next_frame()? {
            return Ok(frame);
        }
        if read.read_buf(decoder.buffer_mut()).await? == 0 {
            return Err(ConnError::Closed);
        }
    }
}

async fn write_one(write: &mut WriteHalf, frame: &Frame, max: usize) -> Result<(), ConnError> {
    let mut buf = BytesMut::new();
    encode_frame(frame, &mut buf, max)?;
    write.write_all(&buf).await?;
    Ok(())
}

/// An open outgoing connection: its halves and the peer's spec.
pub(crate) struct Opened {
    pub(crate) conn: Connection,
    pub(crate) peer: NodeSpec,
}

/// Connects to `addr` and runs the connecting side of the handshake.
pub(crate) async fn connect(
    wiring: &Wiring,
    addr: SocketAddr,
    channel: &str,
    index: u16,
) -> Result<Opened, ConnError> {
    let attempt = async {
        let mut conn = wiring.network.connect(addr).await?;
        let (mut handshake, hello) =
            Connector::new(wiring.secret.clone(), wiring.spec.clone(), channel, index, nonce());
        let mut decoder = FrameDecoder::new(HANDSHAKE_MAX_FRAME_BYTES);
        write_one(&mut conn.write, &hello, HANDSHAKE_MAX_FRAME_BYTES).await?;
        loop {
            let frame = read_frame(&mut conn.read, &mut decoder).await?;
            match handshake.on_frame(frame) {
                Ok(ConnectorStep::Send(frame)) => {
                    write_one(&mut conn.write, &frame, HANDSHAKE_MAX_FRAME_BYTES).await?;
                }
                Ok(ConnectorStep::Open { peer }) => return Ok(Opened { conn, peer }),
                Err(error) => {
                    if error.tell_peer() {
                        let refusal = Frame::Refused { reason: error.to_string() };
                        let _ =
                            write_one(&mut conn.write, &refusal, HANDSHAKE_MAX_FRAME_BYTES).await;
                    }
                    return Err(error.into());
                }
            }
        }
    };
    tokio::time::timeout(wiring.connect_timeout, attempt).await.unwrap_or(Err(ConnError::Timeout))
}

/// An incoming connection, authenticated and admitted: the peer's, for reading.
pub(crate) struct Accepted {
    pub(crate) peer: Arc<Peer>,
    pub(crate) conn: Connection,
    pub(crate) decoder: FrameDecoder,
    /// The channel it carries, and which of the channel's connections it is.
    pub(crate) channel: String,
    pub(crate) index: u16,
}

/// Runs the accepting side of the handshake on a new connection, which holds `ticket`'s slot
/// of the node's admission gate until its peer authenticates; `dispatch` admits or refuses the
/// peer. The first frame (the peer's `Hello`, which tells the ticket whom it claims to be) must
/// come within the ticket's hello timeout, the whole handshake within the connect timeout, and
/// the gate may close the connection meanwhile to make room (see `crate::admission`).
///
/// An admitted connection is taken as its channel and index's connection from the peer (its
/// track, returned) before the peer is told: a connection the peer opens once it has heard
/// is taken after this one, never before (a join's connection, dropped once open, must not
/// replace the connector's that follows it).
pub(crate) async fn accept(
    wiring: &Wiring,
    dispatch: &Arc<impl Dispatch>,
    mut conn: Connection,
    ticket: &Ticket,
) -> Result<(Accepted, InboundTrack), ConnError> {
    let hello_timeout = ticket.hello_timeout();
    let attempt = async {
        let mut handshake = Acceptor::new(wiring.secret.clone(), wiring.spec.clone(), nonce());
        let mut decoder = FrameDecoder::new(HANDSHAKE_MAX_FRAME_BYTES);
        let first = tokio::time::timeout(hello_timeout, read_frame(&mut conn.read, &mut decoder))
            .await
            .map_err(|_| ConnError::Refused(format!("no hello within {hello_timeout:?}")))??;
        if let Frame::Hello(hello) = &first {
            ticket.hello(&hello.spec.name);
        }
        let mut next = Some(first);
        let hello: Hello = loop {
            let frame = match next.take() {
                Some(frame) => frame,
                None => read_frame(&mut conn.read, &mut decoder).await?,
            };
            match handshake.on_frame(frame) {
                Ok(AcceptorStep::Send(frame)) => {
                    write_one(&mut conn.write, &frame, HANDSHAKE_MAX_FRAME_BYTES).await?;
                }
                Ok(AcceptorStep::Authenticated { hello }) => break hello,
                Err(error) => {
                    if error.tell_peer() {
                        let refusal = Frame::Refused { reason: error.to_string() };
                        let _ =
                            write_one(&mut conn.write, &refusal, HANDSHAKE_MAX_FRAME_BYTES).await;
                    }
                    return Err(ConnError::from(error));
                }
            }
        };
        ticket.authenticated();
        match dispatch.admit(&hello.spec) {
            Ok(peer) => {
                let track = peer.track_inbound(&hello.channel, hello.index);
                write_one(&mut conn.write, &Frame::Accepted, HANDSHAKE_MAX_FRAME_BYTES).await?;
                Ok((peer, hello, track))
            }
            Err(reason) => {
                let refusal = Frame::Refused { reason: reason.clone() };
                let _ = write_one(&mut conn.write, &refusal, HANDSHAKE_MAX_FRAME_BYTES).await;
                Err(ConnError::Refused(format!("refused {}: {reason}", hello.spec.name)))
            }
        }
    };
    let (peer, hello, track) = tokio::select! {
        outcome = tokio::time::timeout(wiring.connect_timeout, attempt) => {
            outcome.unwrap_or(Err(ConnError::Timeout))?
        }
        () = ticket.evicted() => {
            return Err(ConnError::Refused("closed to make room for another address".into()));
        }
    };
    // The connector sends nothing after its proof until it reads `Accepted`, so the handshake
    // decoder holds no data frames: the data decoder starts empty.
    let decoder = FrameDecoder::new(wiring.max_frame_bytes);
    let accepted = Accepted { peer, conn, decoder, channel: hello.channel, index: hello.index };
    Ok((accepted, track))
}

/// Writes everything queued for one connection, batch by batch, until the queue closes or a
/// write fails (reported on `failed`).
pub(crate) async fn write_loop(
    wiring: Arc<Wiring>,
    peer: Arc<Peer>,
    queue: Arc<OutQueue>,
    mut write: WriteHalf,
    failed: mpsc::Sender<DownReason>,
) {
    let mut batch = Slots::new();
    let mut out = Output { buf: BytesMut::with_capacity(WRITE_CHUNK_BYTES), frames: 0, bounded: 0 };
    let mut pace = Pace::default();
    while queue.ready().await {
        // Frames are waiting. While traffic is brisk, tasks that are runnable right now
        // (callers woken by the same read, a process working through its batch) are about to
        // queue more: let them run first, so that they share this write instead of costing a
        // system call each. Not when traffic is sparse (one call at a time): the yield would
        // wake an idle worker for nothing, on the round trip's critical path.
        if pace.brisk() {
            behind_runnable_tasks().await;
        }
        let Some(bounded) = queue.take_all(&mut batch).await else {
            break;
        };
        pace.batch(batch.len());
        // Released as the batch is written, the rest when it is done or when this task is
        // dropped mid-write (the session ended): the peer's count of queued casts and calls
        // must never leak.
        let mut bounded = Release { peer: &peer, count: bounded };
        apply_faults(&wiring, &peer, Flow::Outbound, &mut batch).await;
        let outcome = out.write_batch(&wiring, &queue, &mut bounded, &mut write, &mut batch).await;
        batch.clear();
        drop(bounded);
        if let Err(error) = outcome {
            let _ = failed.try_send(DownReason::ConnectionLost(error.to_string()));
            return;
        }
    }
    let _ = write.shutdown().await;
}

/// How brisk a writer's traffic is: whether its last batch held several frames or its last
/// write is recent.
#[derive(Default)]
struct Pace {
    last_batch_frames: usize,
    last_batch_at: Option<Instant>,
}

/// Batches closer together than this mean frames come faster than one write each.
const BRISK_WITHIN: Duration = Duration::from_micros(20);

impl Pace {
    fn brisk(&self) -> bool {
        self.last_batch_frames > 1
            || self.last_batch_at.is_some_and(|at| at.elapsed() < BRISK_WITHIN)
    }

    fn batch(&mut self, frames: usize) {
        self.last_batch_frames = frames;
        self.last_batch_at = Some(Instant::now());
    }
}

/// Puts the current task behind the tasks already runnable on this worker, once.
///
/// Not `tokio::task::yield_now`: that one defers the task until the worker next polls the
/// I/O driver (a system call, and measurably slower remote calls when the worker has nothing
/// else to do). A task that wakes itself is simply queued again at the back, and runs at
/// once when nothing else is runnable.
fn behind_runnable_tasks() -> impl Future<Output = ()> {
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
}

/// A writer's buffer: frames encoded and not yet written.
struct Output {
    buf: BytesMut,
    frames: u64,
    /// Of those, casts and calls (counted against the peer's bound).
    bounded: usize,
}

impl Output {
    /// Encodes and writes every frame of `batch`, in order, in chunks of about
    /// `WRITE_CHUNK_BYTES`. A large payload is written from where it lies rather than copied
    /// into the buffer first. The casts and calls written are given back to the peer's
    /// bound chunk by chunk, so that senders waiting for room go on while the rest is written.
    async fn write_batch(
        &mut self,
        wiring: &Wiring,
        queue: &OutQueue,
        release: &mut Release<'_>,
        write: &mut WriteHalf,
        batch: &mut Slots,
    ) -> std::io::Result<()> {
        let max = wiring.max_frame_bytes;
        let written = &queue.progress.written;
        let peer = release.peer;
        for queued in batch.drain(..).flatten() {
            let encoded = encode_frame_head(&queued.frame, &mut self.buf, max, LARGE_PAYLOAD_BYTES);
            if encoded.is_ok() {
                self.frames += 1;
                self.bounded += usize::from(queued.counted);
            }
            match encoded {
                Ok(None) => {}
                Ok(Some(payload)) => {
                    self.flush(release, written, write).await?;
                    // Piece by piece, letting the worker poll the I/O driver and run its other
                    // tasks in between: a socket with room would otherwise take the whole
                    // payload in one poll. `yield_now`, not `behind_runnable_tasks`: a task
                    // that only re-queues itself keeps the worker busy, and the worker then
                    // looks for I/O events (a heartbeat on another connection) only every
                    // few dozen polls.
                    for piece in payload.chunks(LARGE_IO_BYTES) {
                        written.fetch_add(piece.len() as u64, Relaxed);
                        write.write_all(piece).await?;
                        peer.counters.bytes_sent.fetch_add(piece.len() as u64, Relaxed);
                        tokio::task::yield_now().await;
                    }
                }
                Err(error) => tracing::error!(
                    peer = %peer.name(), %error, kind = queued.frame.kind(),
                    "a frame was not sent"
                ),
            }
            if self.buf.len() >= WRITE_CHUNK_BYTES {
                self.flush(release, written, write).await?;
            }
        }
        self.flush(release, written, write).await?;
        if self.buf.capacity() > 4 * WRITE_CHUNK_BYTES {
            self.buf = BytesMut::with_capacity(WRITE_CHUNK_BYTES);
        }
        Ok(())
    }

    async fn flush(
        &mut self,
        release: &mut Release<'_>,
        written: &AtomicU64,
        write: &mut WriteHalf,
    ) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        // Counted before the write: bytes stuck in a write that never ends are waiting too.
        written.fetch_add(self.buf.len() as u64, Relaxed);
        write.write_all(&self.buf).await?;
        let counters = &release.peer.counters;
        counters.frames_sent.fetch_add(self.frames, Relaxed);
        counters.bytes_sent.fetch_add(self.buf.len() as u64, Relaxed);
        release.give_back(self.bounded);
        self.buf.clear();
        self.frames = 0;
        self.bounded = 0;
        Ok(())
    }
}

/// Gives back a batch's share of the peer's bound on queued frames: as it is written, and
/// what is left when dropped.
struct Release<'a> {
    peer: &'a Peer,
    count: usize,
}

impl Release<'_> {
    fn give_back(&mut self, count: usize) {
        let count = count.min(self.count);
        self.count -= count;
        self.peer.release(count);
    }
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.peer.release(self.count);
    }
}

/// A batch of frames: queued frames (`Slots`) on the way out, decoded ones on the way in.
pub(crate) trait Batch {
    /// How many frames.
    fn frames(&self) -> usize;
    /// Keeps only the frames for which `keep` (called once per frame, in order) says so.
    fn retain_frames(&mut self, keep: impl FnMut() -> bool);
    /// Drops every frame.
    fn clear_frames(&mut self);
}

impl Batch for Slots {
    fn frames(&self) -> usize {
        self.iter().flatten().count()
    }

    fn retain_frames(&mut self, mut keep: impl FnMut() -> bool) {
        for slot in self.iter_mut().filter(|slot| slot.is_some()) {
            if !keep() {
                *slot = None;
            }
        }
    }

    fn clear_frames(&mut self) {
        self.clear();
    }
}

impl Batch for Vec<Frame> {
    fn frames(&self) -> usize {
        self.len()
    }

    fn retain_frames(&mut self, mut keep: impl FnMut() -> bool) {
        self.retain(|_| keep());
    }

    fn clear_frames(&mut self) {
        self.clear();
    }
}

/// Discards or delays a batch as the faults in force say.
async fn apply_faults(wiring: &Wiring, peer: &Peer, flow: Flow, batch: &mut impl Batch) {
    let faults = &wiring.faults;
    let verdict = faults.verdict(peer.id, flow);
    if let Verdict::Pass = verdict {
        return;
    }
    let before = batch.frames();
    match verdict {
        Verdict::Pass => {}
        Verdict::Discard => batch.clear_frames(),
        Verdict::DropEach(probability) => {
            batch.retain_frames(|| !faults.draw(probability));
        }
        Verdict::Delay(delay) => tokio::time::sleep(delay).await,
    }
    let dropped = (before - batch.frames()) as u64;
    peer.counters.dropped_by_faults.fetch_add(dropped, Relaxed);
}

/// Watches the reading half of an outgoing connection: the acceptor sends nothing after the
/// handshake, so anything but more silence means the connection is gone.
pub(crate) async fn watch_closed(mut read: ReadHalf, failed: mpsc::Sender<DownReason>) {
    let mut scratch = [0u8; 64];
    let reason = loop {
        match read.read(&mut scratch).await {
            Ok(0) => break DownReason::ConnectionLost("the peer closed the connection".into()),
            Ok(_) => continue,
            Err(error) => break DownReason::ConnectionLost(error.to_string()),
        }
    };
    let _ = failed.try_send(reason);
}

/// Dispatches every whole frame in `decoder`, in order; the error of a bad one, after those
/// before it.
async fn dispatch_decoded(
    wiring: &Wiring,
    dispatch: &Arc<impl Dispatch>,
    peer: &Arc<Peer>,
    decoder: &mut FrameDecoder,
) -> Option<ConnError> {
    let mut frames = 0;
    let failure = loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => {
                if frames == 0 {
                    // One clock read per read, not per frame.
                    peer.heard(millis_since(wiring.origin));
                }
                frames += 1;
                if let Some(wait) = dispatch.dispatch(peer, frame) {
                    wait.await;
                }
            }
            Ok(None) => break None,
            Err(error) => break Some(ConnError::from(error)),
        }
    };
    peer.counters.frames_received.fetch_add(frames, Relaxed);
    failure
}

/// Reads frames from a peer's connection and dispatches them, until the connection fails,
/// sends a bad frame, or the peer goes down here (`epoch` changes). Every frame already read
/// is dispatched before a bad one closes the connection. Bytes read are counted on `track`,
/// which also says when a newer connection of the peer replaced this one (it then ends too).
pub(crate) async fn read_loop(
    wiring: Arc<Wiring>,
    dispatch: Arc<impl Dispatch>,
    accepted: Accepted,
    track: InboundTrack,
    mut epoch: watch::Receiver<u64>,
) {
    let Accepted { peer, mut conn, mut decoder, .. } = accepted;
    let InboundTrack { read, mut superseded } = track;
    epoch.mark_unchanged();
    let name = peer.name();
    let mut batch = Vec::new();
    loop {
        if wiring.faults.verdict(peer.id, Flow::Inbound) == Verdict::Pass {
            // No inbound fault (the usual case): each frame is dispatched as it is decoded.
            if let Some(error) = dispatch_decoded(&wiring, &dispatch, &peer, &mut decoder).await {
                tracing::warn!(peer = %name, addr = %conn.peer_addr, %error, "closing a connection");
                return;
            }
        }
        let failure = loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => batch.push(frame),
                Ok(None) => break None,
                Err(error) => break Some(ConnError::from(error)),
            }
        };
        if !batch.is_empty() {
            let frames = batch.len() as u64;
            peer.counters.frames_received.fetch_add(frames, Relaxed);
            apply_faults(&wiring, &peer, Flow::Inbound, &mut batch).await;
            // Only frames that pass the inbound faults count as heard (a cut peer falls
            // silent); one clock read per read, not per frame.
            if !batch.is_empty() {
                peer.heard(millis_since(wiring.origin));
            }
            for frame in batch.drain(..) {
                if let Some(wait) = dispatch.dispatch(&peer, frame) {
                    wait.await;
                }
            }
        }
        if let Some(error) = failure {
            tracing::warn!(peer = %name, addr = %conn.peer_addr, %error, "closing a connection");
            return;
        }
        let mut room = decoder.buffer_mut().limit(LARGE_IO_BYTES);
        let outcome = tokio::select! {
            biased;
            _ = epoch.changed() => return,
            _ = superseded.wait_for(|superseded| *superseded) => return,
            outcome = conn.read.read_buf(&mut room) => outcome,
        };
        match outcome {
            Ok(0) => {
                tracing::debug!(peer = %name, "connection closed by the peer");
                return;
            }
            Ok(bytes) => {
                peer.counters.bytes_received.fetch_add(bytes as u64, Relaxed);
                read.fetch_add(bytes as u64, Relaxed);
                if bytes >= LARGE_IO_BYTES / 4 {
                    // A large frame streams in: let the worker poll the I/O driver and run
                    // its other tasks (another connection's reader, a heartbeat) between
                    // reads, as it would if this one waited for the socket (see the writer
                    // on why `yield_now`).
                    tokio::task::yield_now().await;
                }
            }
            Err(error) => {
                tracing::debug!(peer = %name, %error, "connection failed");
                return;
            }
        }
    }
}
