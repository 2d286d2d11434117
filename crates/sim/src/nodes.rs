//! Whole nodes on a simulated network: [`SimNet`], an in-memory stand-in for TCP behind the
//! transport's `Network` seam, so that real Shoal nodes (runtime, transport, drivers, user
//! processes) run in one OS process on tokio's paused clock, connected through links whose
//! latency is drawn from a seed and which a test cuts and heals.
//!
//! Each node gets the network as seen from its own address ([`SimNet::host`]). A connection is
//! two pipes, one per direction; each carries what one side writes, in order and whole, to the
//! other after a latency drawn for the connection (as TCP would: nothing is lost or reordered
//! on one connection). A cut ([`SimNet::cut`], [`SimNet::partition`]) holds everything on the
//! pipes from one address to another, and refuses new connections, until it heals
//! ([`SimNet::heal`]), as a network that drops every packet until it comes back would to TCP:
//! the nodes notice through their heartbeats and stall watch, not through an error.
//! [`SimNet::reset`] breaks every connection of an address at once (a crashed machine).
//!
//! Run the nodes on a current-thread tokio runtime with its clock paused
//! (`#[tokio::test(start_paused = true)]`): simulated time then moves whenever every task
//! waits, so a test of seconds of cluster life runs in milliseconds.
//!
//! A run is a function of its seed when the nodes' incarnations are fixed too
//! (`RuntimeBuilder::incarnation`, given to the node with `NodeBuilder::runtime`) and each
//! node is given a seed (`NodeBuilder::seed`): the same seed gives the same node events at the
//! same simulated instants, and the same bytes on the network ([`SimNet::trace_hash`]; nodes
//! on a `SimNet` draw their handshakes' keys from their seed, see `Network::deterministic`).
//! The workspace's `tests/tests/nodes/` checks it.
//!
//! A test of your own processes on simulated nodes, with a partition:
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr, SocketAddr};
//! use std::time::Duration;
//! use shoal_sim::SimNet;
//! use shoal_transport::{ClusterKey, Node};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let net = SimNet::new(42, Duration::from_millis(1), Duration::from_millis(10));
//! let key = ClusterKey::generate();
//! let ip = |host| IpAddr::V4(Ipv4Addr::new(10, 0, 0, host));
//! let node = |name: &str, host| {
//!     Node::builder(name, key.clone())
//!         .network(net.host(ip(host)))
//!         .listen(SocketAddr::new(ip(host), 0))
//!         .heartbeat(Duration::from_millis(100), Duration::from_secs(1))
//!         .start()
//! };
//! let (a, b) = (node("a", 1).await?, node("b", 2).await?);
//! b.join(a.listen_addr()).await?;
//!
//! net.partition(&[ip(1)], &[ip(2)]);
//! tokio::time::sleep(Duration::from_secs(2)).await; // simulated: over in an instant
//! assert!(a.nodes().is_empty() && b.nodes().is_empty());
//!
//! net.heal();
//! tokio::time::sleep(Duration::from_secs(3)).await;
//! assert_eq!(a.nodes(), ["b"]);
//! # a.shutdown(); b.shutdown();
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use shoal_transport::net::{BoxFuture, Connection, Listener, Network};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

/// Bytes written to a pipe and not yet read, at most: a writer waits for room beyond it, as a
/// TCP sender whose window is full does.
const WINDOW_BYTES: usize = 4 * 1024 * 1024;

/// FNV-1a, 64 bits, for [`SimNet::trace_hash`].
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A simulated network between nodes, each at an address of its own. Cheap to clone.
#[derive(Clone)]
pub struct SimNet {
    world: Arc<Mutex<World>>,
}

struct World {
    rng: SmallRng,
    latency: (Duration, Duration),
    listeners: BTreeMap<SocketAddr, mpsc::UnboundedSender<Connection>>,
    next_port: BTreeMap<IpAddr, u16>,
    /// Directed cuts: nothing goes from the first address to the second.
    cuts: BTreeSet<(IpAddr, IpAddr)>,
    /// Lossy ways: the share of writes from the first address to the second that are lost
    /// and resent, arriving late.
    lossy: BTreeMap<(IpAddr, IpAddr), f64>,
    /// Readers waiting for a cut to heal.
    waiting_for_heal: Vec<Waker>,
    /// Every pipe still open, by the addresses of its ends, to break when an address resets.
    pipes: Vec<Arc<Pipe>>,
    /// A running hash of every write: see [`SimNet::trace_hash`].
    trace: u64,
}

impl SimNet {
    /// A network whose links each take a latency between `min` and `max` (drawn per
    /// connection from `seed`).
    pub fn new(seed: u64, min: Duration, max: Duration) -> Self {
        let world = World {
            rng: SmallRng::seed_from_u64(seed),
            latency: (min, max.max(min)),
            listeners: BTreeMap::new(),
            next_port: BTreeMap::new(),
            cuts: BTreeSet::new(),
            lossy: BTreeMap::new(),
            waiting_for_heal: Vec::new(),
            pipes: Vec::new(),
            trace: FNV_OFFSET,
        };
        Self { world: Arc::new(Mutex::new(world)) }
    }

    /// The network as seen from `ip`: give it to a node (`NodeBuilder::network`) that listens
    /// on `ip`.
    pub fn host(&self, ip: IpAddr) -> Arc<dyn Network> {
        Arc::new(Host { net: self.clone(), ip })
    }

    /// Holds everything from `from` to `to` (one way) until [`SimNet::heal`].
    pub fn cut(&self, from: IpAddr, to: IpAddr) {
        self.lock().cuts.insert((from, to));
    }

    /// Cuts both ways between every address of `one` and every address of `other`.
    pub fn partition(&self, one: &[IpAddr], other: &[IpAddr]) {
        let mut world = self.lock();
        for &a in one {
            for &b in other {
                world.cuts.insert((a, b));
                world.cuts.insert((b, a));
            }
        }
    }

    /// Makes the way from `from` to `to` lossy until [`SimNet::heal`]: each write is lost with
    /// `probability` and resent after a retransmission timeout (200 ms to 1 s, drawn from the
    /// seed), arriving that much later, with everything written after it behind it, as TCP
    /// over a lossy link delivers.
    pub fn lose(&self, from: IpAddr, to: IpAddr, probability: f64) {
        self.lock().lossy.insert((from, to), probability.clamp(0.0, 1.0));
    }

    /// The connections open from `from` to `to`, oldest first, each as the way that carries
    /// what `from` writes: hold one ([`Link::hold`]) to stall that connection alone while the
    /// others between the same addresses go on.
    pub fn links(&self, from: IpAddr, to: IpAddr) -> Vec<Link> {
        let world = self.lock();
        let open = |pipe: &&Arc<Pipe>| {
            let state = pipe.lock();
            pipe.from == from && pipe.to == to && !(state.finished || state.unread || state.broken)
        };
        world.pipes.iter().filter(open).map(|pipe| Link { pipe: pipe.clone() }).collect()
    }

    /// Heals every cut and lossy way: what the cuts held is delivered.
    pub fn heal(&self) {
        let waiting = {
            let mut world = self.lock();
            world.cuts.clear();
            world.lossy.clear();
            std::mem::take(&mut world.waiting_for_heal)
        };
        waiting.into_iter().for_each(Waker::wake);
    }

    /// Breaks every connection to or from `ip` at once, as a machine that crashed would: both
    /// ends see a reset.
    pub fn reset(&self, ip: IpAddr) {
        let broken: Vec<Arc<Pipe>> = {
            let mut world = self.lock();
            let (broken, kept) =
                world.pipes.drain(..).partition(|pipe| pipe.from == ip || pipe.to == ip);
            world.pipes = kept;
            broken
        };
        for pipe in broken {
            pipe.break_off();
        }
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A hash of everything written on the network so far, each write with its sender and
    /// receiver, in the order written (FNV-1a). Two runs of one seed write the same bytes in
    /// the same order, handshakes and sealed records included, so they end with the same
    /// hash: compare it to check that a run replays.
    pub fn trace_hash(&self) -> u64 {
        self.lock().trace
    }

    fn record(&self, from: IpAddr, to: IpAddr, bytes: &[u8]) {
        let mut world = self.lock();
        let (from, to) = (from.to_string(), to.to_string());
        let length = (bytes.len() as u64).to_le_bytes();
        let parts = [from.as_bytes(), b">", to.as_bytes(), &length, bytes];
        world.trace = parts
            .iter()
            .flat_map(|part| part.iter())
            .fold(world.trace, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(FNV_PRIME));
    }

    fn is_cut(&self, from: IpAddr, to: IpAddr) -> bool {
        self.lock().cuts.contains(&(from, to))
    }

    /// The extra delay of a write from `from` to `to`: a retransmission timeout if it is lost.
    fn retransmission(&self, from: IpAddr, to: IpAddr) -> Duration {
        let mut world = self.lock();
        let Some(&probability) = world.lossy.get(&(from, to)) else { return Duration::ZERO };
        if !world.rng.random_bool(probability) {
            return Duration::ZERO;
        }
        Duration::from_millis(world.rng.random_range(200..=1_000))
    }

    /// Opens a connection from `from` to the listener at `to`: the connecting side's halves.
    fn open(&self, from: IpAddr, to: SocketAddr) -> io::Result<Connection> {
        let mut world = self.lock();
        let Some(listener) = world.listeners.get(&to).cloned() else {
            return Err(io::ErrorKind::ConnectionRefused.into());
        };
        let (min, max) = world.latency;
        let nanos = world.rng.random_range(min.as_nanos() as u64..=max.as_nanos() as u64);
        let latency = Duration::from_nanos(nanos);
        // Pipes no half holds any more are forgotten.
        world.pipes.retain(|pipe| Arc::strong_count(pipe) > 1);
        let port = allocate(&mut world.next_port, from);
        let local = SocketAddr::new(from, port);
        let outbound = Arc::new(Pipe::new(from, to.ip(), latency));
        let inbound = Arc::new(Pipe::new(to.ip(), from, latency));
        world.pipes.push(outbound.clone());
        world.pipes.push(inbound.clone());
        drop(world);
        let accepted = Connection {
            read: Box::new(PipeReader::new(self.clone(), outbound.clone())),
            write: Box::new(PipeWriter::new(self.clone(), inbound.clone())),
            peer_addr: local,
        };
        listener.send(accepted).map_err(|_| io::Error::from(io::ErrorKind::ConnectionRefused))?;
        Ok(Connection {
            read: Box::new(PipeReader::new(self.clone(), inbound)),
            write: Box::new(PipeWriter::new(self.clone(), outbound)),
            peer_addr: to,
        })
    }
}

/// The next free port of `ip`, from 40,000 up, in order.
fn allocate(next_port: &mut BTreeMap<IpAddr, u16>, ip: IpAddr) -> u16 {
    let port = next_port.entry(ip).or_insert(40_000);
    *port = port.wrapping_add(1).max(40_000);
    *port
}

/// The network as one address sees it.
struct Host {
    net: SimNet,
    ip: IpAddr,
}

impl Network for Host {
    fn bind(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            if addr.ip() != self.ip {
                return Err(io::ErrorKind::AddrNotAvailable.into());
            }
            let mut world = self.net.lock();
            let port = if addr.port() == 0 {
                allocate(&mut world.next_port, self.ip)
            } else {
                addr.port()
            };
            let local = SocketAddr::new(self.ip, port);
            if world.listeners.get(&local).is_some_and(|open| !open.is_closed()) {
                return Err(io::ErrorKind::AddrInUse.into());
            }
            let (connections, incoming) = mpsc::unbounded_channel();
            world.listeners.insert(local, connections);
            Ok(Box::new(SimListener { local, incoming: tokio::sync::Mutex::new(incoming) })
                as Box<dyn Listener>)
        })
    }

    fn connect(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Connection>> {
        Box::pin(async move {
            // A connection to an address cut off either way never completes (the caller's
            // connect timeout ends it), as a SYN into a black hole would not.
            while self.net.is_cut(self.ip, addr.ip()) || self.net.is_cut(addr.ip(), self.ip) {
                std::future::poll_fn(|cx| {
                    let mut world = self.net.lock();
                    if world.cuts.contains(&(self.ip, addr.ip()))
                        || world.cuts.contains(&(addr.ip(), self.ip))
                    {
                        world.waiting_for_heal.push(cx.waker().clone());
                        Poll::Pending
                    } else {
                        Poll::Ready(())
                    }
                })
                .await;
            }
            self.net.open(self.ip, addr)
        })
    }

    /// The network is this process's simulation: nodes on it draw their handshakes' keys
    /// from their seed, so that a run replays.
    fn deterministic(&self) -> bool {
        true
    }
}

struct SimListener {
    local: SocketAddr,
    incoming: tokio::sync::Mutex<mpsc::UnboundedReceiver<Connection>>,
}

impl Listener for SimListener {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn accept(&self) -> BoxFuture<'_, io::Result<Connection>> {
        Box::pin(async move {
            let mut incoming = self.incoming.lock().await;
            incoming.recv().await.ok_or_else(|| io::ErrorKind::NotConnected.into())
        })
    }
}

/// One direction of a connection.
/// One way of an open connection (see [`SimNet::links`]).
#[derive(Clone)]
pub struct Link {
    pipe: Arc<Pipe>,
}

impl Link {
    /// Holds what is written on this way, and its end, from now until [`Link::release`]: the
    /// connection stalls as one whose packets a middlebox sits on would, while the writer may
    /// go on writing until its window is full. A held link outlives the connection's close:
    /// its bytes are delivered on release if the reader is still there.
    pub fn hold(&self) {
        self.pipe.lock().held = true;
    }

    /// Delivers what the hold kept, and lets the way flow again.
    pub fn release(&self) {
        let mut state = self.pipe.lock();
        state.held = false;
        let reader = state.reader.take();
        drop(state);
        if let Some(reader) = reader {
            reader.wake();
        }
    }
}

struct Pipe {
    from: IpAddr,
    to: IpAddr,
    latency: Duration,
    state: Mutex<PipeState>,
}

#[derive(Default)]
struct PipeState {
    /// What was written, each with when it reaches the reader.
    chunks: VecDeque<(Instant, Vec<u8>)>,
    /// Bytes written and not yet read.
    in_flight: usize,
    /// The writer shut down or went away: the reader sees the end once it has read the rest.
    finished: bool,
    /// The reader went away: the writer's next write fails.
    unread: bool,
    /// Broken off (a reset): both sides fail at once.
    broken: bool,
    /// Held ([`Link::hold`]): nothing reaches the reader, not even the end.
    held: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl Pipe {
    fn new(from: IpAddr, to: IpAddr, latency: Duration) -> Self {
        Self { from, to, latency, state: Mutex::default() }
    }

    fn lock(&self) -> MutexGuard<'_, PipeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn break_off(&self) {
        let mut state = self.lock();
        state.broken = true;
        let wakers = [state.reader.take(), state.writer.take()];
        drop(state);
        wakers.into_iter().flatten().for_each(Waker::wake);
    }
}

struct PipeReader {
    net: SimNet,
    pipe: Arc<Pipe>,
    /// The timer until the next chunk arrives.
    arrival: Option<Pin<Box<Sleep>>>,
}

impl PipeReader {
    fn new(net: SimNet, pipe: Arc<Pipe>) -> Self {
        Self { net, pipe, arrival: None }
    }
}

impl PipeReader {
    /// Whether the pipe's way is cut (the reader is then woken when it heals).
    fn wait_for_heal(&self, cx: &mut Context<'_>) -> bool {
        let mut world = self.net.lock();
        let cut = world.cuts.contains(&(self.pipe.from, self.pipe.to));
        if cut {
            world.waiting_for_heal.push(cx.waker().clone());
        }
        cut
    }
}

impl AsyncRead for PipeReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            let mut state = this.pipe.lock();
            if state.broken {
                return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
            }
            if state.held {
                state.reader = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let Some((at, _)) = state.chunks.front() else {
                if !state.finished {
                    state.reader = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                // The end of the stream crosses the network too: a cut holds it.
                drop(state);
                if this.wait_for_heal(cx) {
                    return Poll::Pending;
                }
                return Poll::Ready(Ok(()));
            };
            let at = *at;
            if Instant::now() < at {
                drop(state);
                let arrival =
                    this.arrival.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                arrival.as_mut().reset(at);
                if arrival.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                continue;
            }
            if this.net.is_cut(this.pipe.from, this.pipe.to) {
                drop(state);
                if this.wait_for_heal(cx) {
                    return Poll::Pending;
                }
                continue;
            }
            let (_, chunk) = state.chunks.front_mut().expect("a chunk is at the front");
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..n]);
            chunk.drain(..n);
            if chunk.is_empty() {
                state.chunks.pop_front();
            }
            state.in_flight -= n;
            let writer = state.writer.take();
            drop(state);
            if let Some(writer) = writer {
                writer.wake();
            }
            return Poll::Ready(Ok(()));
        }
    }
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        let mut state = self.pipe.lock();
        state.unread = true;
        let writer = state.writer.take();
        drop(state);
        if let Some(writer) = writer {
            writer.wake();
        }
    }
}

struct PipeWriter {
    net: SimNet,
    pipe: Arc<Pipe>,
}

impl PipeWriter {
    fn new(net: SimNet, pipe: Arc<Pipe>) -> Self {
        Self { net, pipe }
    }

    fn finish(&self) {
        let mut state = self.pipe.lock();
        state.finished = true;
        let reader = state.reader.take();
        drop(state);
        if let Some(reader) = reader {
            reader.wake();
        }
    }
}

impl AsyncWrite for PipeWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let pipe = &self.pipe;
        let mut state = pipe.lock();
        if state.broken {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        if state.finished {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if state.unread {
            // The reader is gone; the writer learns it from the reset that comes back, which a
            // cut the other way holds: until then what it writes goes nowhere.
            if self.net.is_cut(pipe.to, pipe.from) {
                return Poll::Ready(Ok(bytes.len()));
            }
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let room = WINDOW_BYTES.saturating_sub(state.in_flight);
        if room == 0 {
            state.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = room.min(bytes.len());
        // In order: never before what was written earlier.
        let earliest = state.chunks.back().map_or(Instant::now(), |(at, _)| *at);
        let resent = self.net.retransmission(pipe.from, pipe.to);
        let at = (Instant::now() + pipe.latency + resent).max(earliest);
        state.chunks.push_back((at, bytes[..n].to_vec()));
        state.in_flight += n;
        let reader = state.reader.take();
        drop(state);
        self.net.record(pipe.from, pipe.to, &bytes[..n]);
        if let Some(reader) = reader {
            reader.wake();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.finish();
        Poll::Ready(Ok(()))
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        self.finish();
    }
}
