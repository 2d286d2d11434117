//! One connection's life: the handshake on either side (`crate::handshake` over the socket),
//! the writer that drains a queue in coalesced writes, sealed in records (`crate::record`),
//! and the reader that opens them.
//!
//! The layer knows its node only through a narrow environment ([`Wiring`]: the cluster key,
//! the protection of its connections, the node's spec, the network, limits, faults) and a callback ([`Dispatch`]) that admits peers
//! and takes the frames read; it never reaches into membership or the runtime itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use shoal_process::Clock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::admission::Ticket;
use crate::entropy::Entropy;
use crate::fault::{Faults, Flow, Verdict};
use crate::handshake::{
    ClusterKey, HandshakeError, Hello, Initiator, Keyed, Message, Protection, Responder,
};
use crate::net::{BoxFuture, Connection, Network, ReadHalf, WriteHalf};
use crate::peer::{InboundTrack, Peer};
use crate::queue::{OutQueue, Slots};
use crate::record::{MAX_RECORD_BYTES, Opener, RecordError, Sealer};
use crate::wire::{Format, Frame, FrameDecoder, FrameError, encode_frame, encode_frame_head};
use crate::{CONTROL_CHANNEL, DownReason, NodeSpec};

/// What the connection layer needs from its node.
pub(crate) struct Wiring {
    pub(crate) key: ClusterKey,
    /// How the connections this node opens are protected.
    pub(crate) protection: Protection,
    /// This node, as it introduces itself.
    pub(crate) spec: NodeSpec,
    pub(crate) network: Arc<dyn Network>,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_frame_bytes: usize,
    pub(crate) faults: Faults,
    /// Where handshakes draw their keys from.
    pub(crate) entropy: Entropy,
    /// The node's clock, and when the node started on it (the clock of `Peer::heard`).
    pub(crate) clock: Clock,
    pub(crate) origin: Instant,
}

impl Wiring {
    /// Milliseconds since the node started.
    pub(crate) fn millis(&self) -> u64 {
        self.clock.since(self.origin).as_millis() as u64
    }

    /// Microseconds since the node started (for round-trip times).
    pub(crate) fn micros(&self) -> u64 {
        self.clock.since(self.origin).as_micros() as u64
    }
}

/// Where the connection layer hands what it learns: implemented by the node.
pub(crate) trait Dispatch: Send + Sync + 'static {
    /// Decides whether a node that authenticated on an incoming connection may be a member;
    /// its peer, or why not (told to the node).
    fn admit(self: &Arc<Self>, spec: &NodeSpec) -> Result<Arc<Peer>, String>;

    /// Takes a connection `peer` opened with `hello` (admitted, not a probe), whose handshake
    /// negotiated protocol `version`, before its reader starts. Returns what tells the reader
    /// to close: it changes when the peer goes down here after the connection was taken.
    fn accepting(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        hello: &Hello,
        version: u32,
    ) -> watch::Receiver<u64>;

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
    Record(#[from] RecordError),
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Refused(String),
}

/// Frames of the handshake are small: a peer cannot make this node buffer much before it has
/// proved it holds the key.
const HANDSHAKE_MAX_FRAME_BYTES: usize = 64 * 1024;

/// Bytes gathered before a write; larger batches are written in several goes.
const WRITE_CHUNK_BYTES: usize = 256 * 1024;

/// A payload this large is written from its own buffer, not copied into the writer's.
const LARGE_PAYLOAD_BYTES: usize = 64 * 1024;

/// The most bytes one read or write of a large frame moves before the connection's task lets
/// the other tasks of its worker run (about 100 µs of copying).
const LARGE_IO_BYTES: usize = 1024 * 1024;

/// Room kept for one read of sealed bytes.
const READ_BYTES: usize = 2 * MAX_RECORD_BYTES;

/// The next handshake message from `read`, taken off `buffer`.
async fn read_message(read: &mut ReadHalf, buffer: &mut BytesMut) -> Result<Message, ConnError> {
    loop {
        if let Some(message) = Message::decode(buffer)? {
            return Ok(message);
        }
        if read.read_buf(buffer).await? == 0 {
            return Err(ConnError::Closed);
        }
    }
}

async fn write_message(write: &mut WriteHalf, message: &Message) -> Result<(), ConnError> {
    let mut buf = BytesMut::new();
    message.encode(&mut buf);
    write.write_all(&buf).await?;
    Ok(())
}

/// The frames of the handshake's last steps, in the version it negotiated.
fn handshake_format(version: u32) -> Result<Format, FrameError> {
    Format::new(version, HANDSHAKE_MAX_FRAME_BYTES)
}

/// Writes one frame in its own records (the handshake's last frames).
async fn write_sealed(
    write: &mut WriteHalf,
    sealer: &mut Sealer,
    frame: &Frame,
    format: Format,
) -> Result<(), ConnError> {
    let (mut plain, mut sealed) = (BytesMut::new(), BytesMut::new());
    encode_frame(frame, &mut plain, format)?;
    write.write_all(seal(sealer, &plain, &mut sealed)?).await?;
    Ok(())
}

/// What goes on the wire for `plain`: its records, made in `out`, or (unsealed) `plain`.
fn seal<'a>(
    sealer: &mut Sealer,
    plain: &'a [u8],
    out: &'a mut BytesMut,
) -> Result<&'a [u8], RecordError> {
    if !sealer.sealed() {
        return Ok(plain);
    }
    out.clear();
    sealer.seal(plain, out)?;
    Ok(out)
}

/// What comes in on one connection: bytes read and not yet opened, and the frames' decoder.
pub(crate) struct Incoming {
    sealed: BytesMut,
    opener: Opener,
    decoder: FrameDecoder,
    /// A record that did not open: the frames before it are decoded first, then the
    /// connection closes.
    broken: Option<RecordError>,
}

impl Incoming {
    /// After the handshake messages: `read` is what was read past them, frames in `format`.
    fn new(opener: Opener, read: BytesMut, format: Format) -> Self {
        let decoder = FrameDecoder::new(format);
        let mut incoming = Self { sealed: read, opener, decoder, broken: None };
        incoming.open();
        incoming
    }

    /// Opens the whole records read into the decoder (or, unsealed, hands the bytes over).
    fn open(&mut self) {
        if self.broken.is_none()
            && let Err(error) = self.opener.open(&mut self.sealed, self.decoder.buffer_mut())
        {
            self.broken = Some(error);
        }
    }

    /// Reads once, at most `limit` bytes, and opens the whole records read; the bytes read
    /// (0 at the end of the stream). Cancel-safe: the only wait is the read.
    async fn read_some(&mut self, read: &mut ReadHalf, limit: usize) -> std::io::Result<usize> {
        if !self.opener.sealed() {
            return read.read_buf(&mut self.decoder.buffer_mut().limit(limit)).await;
        }
        if self.sealed.capacity() - self.sealed.len() < READ_BYTES / 4 {
            self.sealed.reserve(READ_BYTES);
        }
        let bytes = read.read_buf(&mut (&mut self.sealed).limit(limit)).await?;
        self.open();
        Ok(bytes)
    }

    /// The next whole frame, `None` when more must be read; after the frames of the records
    /// that opened, a record that did not is the error.
    fn next_frame(&mut self) -> Result<Option<Frame>, ConnError> {
        match self.decoder.next_frame()? {
            Some(frame) => Ok(Some(frame)),
            None => self.broken.take().map_or(Ok(None), |error| Err(error.into())),
        }
    }

    /// Reads until the next frame (the handshake reads one at a time).
    async fn read_frame(&mut self, read: &mut ReadHalf) -> Result<Frame, ConnError> {
        loop {
            if let Some(frame) = self.next_frame()? {
                return Ok(frame);
            }
            if self.read_some(read, READ_BYTES).await? == 0 {
                return Err(ConnError::Closed);
            }
        }
    }
}

/// An open outgoing connection: its halves, its sealer, the protocol version its handshake
/// negotiated, and the peer's spec.
pub(crate) struct Opened {
    pub(crate) conn: Connection,
    pub(crate) sealer: Sealer,
    pub(crate) version: u32,
    pub(crate) peer: NodeSpec,
}

/// Which connection to open: `index` of `channel`, in connection attempt `attempt`, when this
/// node has closed the peer's connections up to its attempt `released` (see
/// [`Hello::released`]).
pub(crate) struct Slot<'a> {
    pub(crate) channel: &'a str,
    pub(crate) index: u16,
    pub(crate) attempt: u64,
    pub(crate) released: u64,
}

/// Connects to `addr` and runs the initiator's side of the handshake for the connection `slot`.
pub(crate) async fn connect(
    wiring: &Wiring,
    addr: SocketAddr,
    slot: &Slot<'_>,
) -> Result<Opened, ConnError> {
    let hello = Hello {
        attempt: slot.attempt,
        released: slot.released,
        ..Hello::new(wiring.spec.clone(), slot.channel, slot.index, wiring.protection)
    };
    open(wiring, addr, hello).await
}

/// Introduces this node to the node at `addr` (a join): a handshake on a connection the other
/// side closes once it has admitted this node, and never takes as one of this node's
/// connections. The other node's spec comes back.
pub(crate) async fn probe(wiring: &Wiring, addr: SocketAddr) -> Result<NodeSpec, ConnError> {
    let hello = Hello {
        probe: true,
        ..Hello::new(wiring.spec.clone(), CONTROL_CHANNEL, 0, wiring.protection)
    };
    Ok(open(wiring, addr, hello).await?.peer)
}

async fn open(wiring: &Wiring, addr: SocketAddr, hello: Hello) -> Result<Opened, ConnError> {
    let attempt = async {
        let mut conn = wiring.network.connect(addr).await?;
        let (initiator, first) = Initiator::start_with(&wiring.key, &hello, &wiring.entropy)?;
        write_message(&mut conn.write, &first).await?;
        let mut read = BytesMut::new();
        let reply = read_message(&mut conn.read, &mut read).await?;
        let Keyed { peer, version, mut sealer, opener, .. } = initiator.finish(reply)?;
        let format = handshake_format(version)?;
        write_sealed(&mut conn.write, &mut sealer, &Frame::Confirm, format).await?;
        let mut incoming = Incoming::new(opener, read, format);
        match incoming.read_frame(&mut conn.read).await? {
            Frame::Accepted => Ok(Opened { conn, sealer, version, peer: peer.spec }),
            Frame::Refused { reason } => Err(HandshakeError::Refused(reason).into()),
            other => Err(unexpected("accepted", &other).into()),
        }
    };
    wiring.clock.timeout(wiring.connect_timeout, attempt).await.unwrap_or(Err(ConnError::Timeout))
}

fn unexpected(expected: &'static str, frame: &Frame) -> HandshakeError {
    HandshakeError::Unexpected { expected, got: frame.kind() }
}

/// An incoming connection, authenticated and admitted: the peer's, for reading.
pub(crate) struct Accepted {
    pub(crate) peer: Arc<Peer>,
    pub(crate) conn: Connection,
    pub(crate) incoming: Incoming,
    /// The channel it carries, and which of the channel's connections it is.
    pub(crate) channel: String,
    pub(crate) index: u16,
    /// Changes when the peer goes down here after the connection was taken: it closes.
    pub(crate) epoch: watch::Receiver<u64>,
}

/// Runs the responder's side of the handshake on a new connection, which holds `ticket`'s
/// slot of the node's admission gate until its peer proves it holds the key; `dispatch`
/// admits or refuses the peer. The first message (whose hello tells the ticket whom the peer
/// claims to be) must come within the ticket's hello timeout, and so must the confirmation
/// after the answer; the whole handshake within the connect timeout; and the gate may close
/// the connection meanwhile to make room (see `crate::admission`).
///
/// An admitted connection is taken as its channel and index's connection from the peer (its
/// track, returned) before the peer is told: a connection the peer opens once it has heard
/// is taken after this one, never before. A probe (a join's connection, see [`probe`]) is
/// admitted and answered but taken as nothing: `None`.
pub(crate) async fn accept(
    wiring: &Wiring,
    dispatch: &Arc<impl Dispatch>,
    mut conn: Connection,
    ticket: &Ticket,
) -> Result<Option<(Accepted, InboundTrack)>, ConnError> {
    let hello_timeout = ticket.hello_timeout();
    let within_hello_timeout = |what: &'static str| {
        move |_| ConnError::Refused(format!("no {what} within {hello_timeout:?}"))
    };
    let attempt = async {
        let mut read = BytesMut::new();
        let first = wiring
            .clock
            .timeout(hello_timeout, read_message(&mut conn.read, &mut read))
            .await
            .map_err(within_hello_timeout("hello"))??;
        let Message::Noise(first) = first else {
            let got = first.kind();
            return Err(HandshakeError::Unexpected { expected: "handshake message", got }.into());
        };
        let answer = Responder::answer_with(
            &wiring.key,
            &first,
            &wiring.spec,
            wiring.protection,
            &wiring.entropy,
        );
        let (keyed, reply) = match answer {
            Ok(answer) => answer,
            Err(error) => {
                if error.tell_peer() {
                    let _ =
                        write_message(&mut conn.write, &Message::Refusal(error.to_string())).await;
                }
                return Err(error.into());
            }
        };
        ticket.hello(&keyed.peer.spec.name);
        write_message(&mut conn.write, &reply).await?;
        let Keyed { peer: hello, version, mut sealer, opener, .. } = keyed;
        let format = handshake_format(version)?;
        let mut incoming = Incoming::new(opener, read, format);
        let confirm = wiring
            .clock
            .timeout(hello_timeout, incoming.read_frame(&mut conn.read))
            .await
            .map_err(within_hello_timeout("confirmation"))??;
        if confirm != Frame::Confirm {
            return Err(unexpected("confirm", &confirm).into());
        }
        ticket.authenticated();
        match dispatch.admit(&hello.spec) {
            Ok(_) if hello.probe => {
                write_sealed(&mut conn.write, &mut sealer, &Frame::Accepted, format).await?;
                Ok(None)
            }
            Ok(peer) => {
                let epoch = dispatch.accepting(&peer, &hello, version);
                let track = peer.track_inbound(&hello.channel, hello.index);
                write_sealed(&mut conn.write, &mut sealer, &Frame::Accepted, format).await?;
                Ok(Some((peer, hello, track, epoch, incoming)))
            }
            Err(reason) => {
                let refusal = Frame::Refused { reason: reason.clone() };
                let _ = write_sealed(&mut conn.write, &mut sealer, &refusal, format).await;
                Err(ConnError::Refused(format!("refused {}: {reason}", hello.spec.name)))
            }
        }
    };
    let admitted = tokio::select! {
        biased;
        outcome = wiring.clock.timeout(wiring.connect_timeout, attempt) => {
            outcome.unwrap_or(Err(ConnError::Timeout))?
        }
        () = ticket.evicted() => {
            return Err(ConnError::Refused("closed to make room for another address".into()));
        }
    };
    let Some((peer, hello, track, epoch, mut incoming)) = admitted else { return Ok(None) };
    // Admitted: frames up to the node's maximum from now on. The initiator sends nothing
    // after its confirmation until it reads `Accepted`, so nothing was decoded yet.
    incoming.decoder.set_max_frame_bytes(wiring.max_frame_bytes);
    let (channel, index) = (hello.channel, hello.index);
    let accepted = Accepted { peer, conn, incoming, channel, index, epoch };
    Ok(Some((accepted, track)))
}

/// Writes everything queued for one connection, batch by batch, in frames of `format` sealed
/// by `sealer`, until the queue closes or a write fails (reported on `failed`).
pub(crate) async fn write_loop(
    wiring: Arc<Wiring>,
    peer: Arc<Peer>,
    queue: Arc<OutQueue>,
    mut write: WriteHalf,
    (sealer, format): (Sealer, Format),
    failed: mpsc::Sender<DownReason>,
) {
    let mut batch = Slots::new();
    let mut out = Output {
        buf: BytesMut::with_capacity(WRITE_CHUNK_BYTES),
        sealer,
        format,
        sealed: BytesMut::new(),
        frames: 0,
        bounded: 0,
    };
    let mut pace = Pace::default();
    while queue.ready().await {
        // Frames are waiting. While traffic is brisk, tasks that are runnable right now
        // (callers woken by the same read, a process working through its batch) are about to
        // queue more: let them run first, so that they share this write instead of costing a
        // system call each. Not when traffic is sparse (one call at a time): the yield would
        // wake an idle worker for nothing, on the round trip's critical path.
        if pace.brisk(&wiring.clock) {
            behind_runnable_tasks().await;
        }
        let Some(bounded) = queue.take_all(&mut batch).await else {
            break;
        };
        pace.batch(batch.len(), wiring.clock.now());
        // Released as the batch is written, the rest when it is done or when this task is
        // dropped mid-write (the session ended): the peer's count of queued casts and calls
        // must never leak.
        let mut bounded = Release { peer: &peer, count: bounded };
        apply_faults(&wiring, &peer, Flow::Outbound, &mut batch).await;
        let outcome = out.write_batch(&queue, &mut bounded, &mut write, &mut batch).await;
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
    fn brisk(&self, clock: &Clock) -> bool {
        self.last_batch_frames > 1
            || self.last_batch_at.is_some_and(|at| clock.since(at) < BRISK_WITHIN)
    }

    fn batch(&mut self, frames: usize, now: Instant) {
        self.last_batch_frames = frames;
        self.last_batch_at = Some(now);
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

/// A writer's buffer: frames encoded and not yet written, their format and their sealer.
struct Output {
    buf: BytesMut,
    sealer: Sealer,
    format: Format,
    /// The records of what is being written.
    sealed: BytesMut,
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
        queue: &OutQueue,
        release: &mut Release<'_>,
        write: &mut WriteHalf,
        batch: &mut Slots,
    ) -> std::io::Result<()> {
        let format = self.format;
        let written = &queue.progress.written;
        let peer = release.peer;
        for queued in batch.drain(..).flatten() {
            let encoded =
                encode_frame_head(&queued.frame, &mut self.buf, format, LARGE_PAYLOAD_BYTES);
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
                        let piece = seal(&mut self.sealer, piece, &mut self.sealed)
                            .map_err(std::io::Error::other)?;
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
        if self.sealed.capacity() > 4 * WRITE_CHUNK_BYTES {
            self.sealed = BytesMut::new();
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
        let wire =
            seal(&mut self.sealer, &self.buf, &mut self.sealed).map_err(std::io::Error::other)?;
        // Counted before the write: bytes stuck in a write that never ends are waiting too.
        written.fetch_add(wire.len() as u64, Relaxed);
        write.write_all(wire).await?;
        let counters = &release.peer.counters;
        counters.frames_sent.fetch_add(self.frames, Relaxed);
        counters.bytes_sent.fetch_add(wire.len() as u64, Relaxed);
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
        Verdict::Delay(delay) => wiring.clock.sleep(delay).await,
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
    incoming: &mut Incoming,
) -> Option<ConnError> {
    let mut frames = 0;
    let failure = loop {
        match incoming.next_frame() {
            Ok(Some(frame)) => {
                if frames == 0 {
                    // One clock read per read, not per frame.
                    peer.heard(wiring.millis());
                }
                frames += 1;
                if let Some(wait) = dispatch.dispatch(peer, frame) {
                    wait.await;
                }
            }
            Ok(None) => break None,
            Err(error) => break Some(error),
        }
    };
    peer.counters.frames_received.fetch_add(frames, Relaxed);
    failure
}

/// Reads frames from a peer's connection and dispatches them, until the connection fails,
/// sends a bad frame, or the peer goes down here after the connection was taken (its `epoch`
/// changes; also when that happened before this starts). Every frame already read is
/// dispatched before a bad one closes the connection. Bytes read are counted on `track`,
/// which also says when a newer connection of the peer replaced this one (it then ends too).
pub(crate) async fn read_loop(
    wiring: Arc<Wiring>,
    dispatch: Arc<impl Dispatch>,
    accepted: Accepted,
    track: InboundTrack,
) {
    let Accepted { peer, mut conn, mut incoming, mut epoch, .. } = accepted;
    let InboundTrack { read, mut superseded } = track;
    let name = peer.name();
    let mut batch = Vec::new();
    loop {
        if wiring.faults.verdict(peer.id, Flow::Inbound) == Verdict::Pass {
            // No inbound fault (the usual case): each frame is dispatched as it is decoded.
            if let Some(error) = dispatch_decoded(&wiring, &dispatch, &peer, &mut incoming).await {
                tracing::warn!(peer = %name, addr = %conn.peer_addr, %error, "closing a connection");
                return;
            }
        }
        let failure = loop {
            match incoming.next_frame() {
                Ok(Some(frame)) => batch.push(frame),
                Ok(None) => break None,
                Err(error) => break Some(error),
            }
        };
        if !batch.is_empty() {
            let frames = batch.len() as u64;
            peer.counters.frames_received.fetch_add(frames, Relaxed);
            apply_faults(&wiring, &peer, Flow::Inbound, &mut batch).await;
            // Only frames that pass the inbound faults count as heard (a cut peer falls
            // silent); one clock read per read, not per frame.
            if !batch.is_empty() {
                peer.heard(wiring.millis());
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
        let outcome = tokio::select! {
            biased;
            _ = epoch.changed() => return,
            _ = superseded.wait_for(|superseded| *superseded) => return,
            outcome = incoming.read_some(&mut conn.read, LARGE_IO_BYTES) => outcome,
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
