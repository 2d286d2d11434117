//! Shared helpers: nodes with short timeouts, waiting with a bound, test processes, and a raw
//! peer that speaks the wire protocol from the test itself.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::panic::Location;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use shoal_process::{Codec, Context, Dest, ExitReason, Pid, Process, ReplyTo, Signal};
use shoal_transport::handshake::{Hello, Initiator, Keyed, Message, Welcome};
use shoal_transport::net::{BoxFuture, Connection, Listener, Network, TcpNetwork};
use shoal_transport::wire::{Format, Frame, FrameDecoder, encode_frame};
use shoal_transport::{
    CONTROL_CHANNEL, ChannelConfig, ClusterKey, DEFAULT_CHANNEL, Node, NodeBuilder, NodeEvent,
    NodeSpec, Protection,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot};

/// The cluster key of the tests' nodes.
pub(crate) fn key() -> ClusterKey {
    ClusterKey::from_hex("3f8a61c2d94e07b5a6e1f03c9d2b7a4851e6c0f9a37d2b84e5c16f0a9b3d7e42")
        .expect("a key")
}

/// Another cluster's key.
pub(crate) fn other_key() -> ClusterKey {
    ClusterKey::from_hex("a47aa63016f468383d0372b55d99ea573e8774f66386ffcef85c08465804dfed")
        .expect("a key")
}

/// Every wait in these tests is bounded by this.
pub(crate) const BOUND: Duration = Duration::from_secs(20);

/// A timeout for calls that are expected to be answered (generous: the machine is shared).
pub(crate) const CALL: Duration = Duration::from_secs(10);

/// A node builder with timeouts short enough for tests, yet a failure timeout long enough that
/// a machine loaded by parallel test runs does not see false node downs.
pub(crate) fn builder(name: &str) -> NodeBuilder {
    Node::builder(name, key())
        .heartbeat(Duration::from_millis(100), Duration::from_millis(2_000))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300))
        .gossip_interval(Duration::from_millis(200))
}

pub(crate) async fn start(name: &str) -> Node {
    builder(name).start().await.expect("node starts")
}

/// Stops every node (the in-process "kill": connections close, no goodbye).
pub(crate) fn shutdown(nodes: &[Node]) {
    for node in nodes {
        node.shutdown();
    }
}

/// Polls `check` until it holds, or panics after [`BOUND`] with `what`.
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + BOUND;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Awaits `future`, failing the test (at the caller's line) if it takes longer than [`BOUND`].
#[track_caller]
pub(crate) fn within<F: Future>(future: F) -> impl Future<Output = F::Output> {
    let caller = Location::caller();
    async move {
        match tokio::time::timeout(BOUND, future).await {
            Ok(output) => output,
            Err(_) => panic!("{caller}: still waiting after {BOUND:?}"),
        }
    }
}

/// The next node event that `matches`, skipping others; fails after [`BOUND`].
#[track_caller]
pub(crate) fn next_event(
    events: &mut broadcast::Receiver<NodeEvent>,
    matches: impl Fn(&NodeEvent) -> bool,
) -> impl Future<Output = NodeEvent> {
    within(async move {
        loop {
            match events.recv().await {
                Ok(event) if matches(&event) => return event,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("the event stream closed"),
            }
        }
    })
}

/// Whether `event` is `node` going down.
pub(crate) fn is_down(event: &NodeEvent, node: &str) -> bool {
    matches!(event, NodeEvent::Down { node: down, .. } if down == node)
}

/// Whether `event` is `node` coming up.
pub(crate) fn is_up(event: &NodeEvent, node: &str) -> bool {
    matches!(event, NodeEvent::Up { node: up, .. } if up == node)
}

/// `n` nodes joined into one cluster, waited until full mesh.
pub(crate) async fn cluster(names: &[&str]) -> Vec<Node> {
    let mut builders = Vec::new();
    for name in names {
        builders.push(builder(name));
    }
    cluster_of(builders).await
}

/// Nodes from `builders` joined into one cluster (through the first), waited until full mesh.
pub(crate) async fn cluster_of(builders: Vec<NodeBuilder>) -> Vec<Node> {
    let mut nodes = Vec::new();
    for builder in builders {
        nodes.push(builder.start().await.expect("node starts"));
    }
    for node in &nodes[1..] {
        node.join(nodes[0].listen_addr()).await.expect("join");
    }
    let expected = nodes.len() - 1;
    eventually("full mesh", || {
        let nodes = nodes.clone();
        async move { nodes.iter().all(|node| node.nodes().len() == expected) }
    })
    .await;
    nodes
}

/// Answers calls with the request, upper-cased; records casts.
pub(crate) struct Echo;

impl Process for Echo {
    type Message = String;
    type Call = String;
    type Reply = String;

    async fn handle_cast(&mut self, _: String, _: &mut Context<Self>) {}

    async fn handle_call(&mut self, text: String, reply: ReplyTo<String>, _: &mut Context<Self>) {
        reply.send(text.to_uppercase());
    }

    fn remote_messages() -> Option<Codec<Self>> {
        Some(Codec::msgpack())
    }
}

/// Takes calls and never answers them: it keeps every [`ReplyTo`], and says when one came.
#[derive(Default)]
pub(crate) struct Silent {
    pub(crate) arrived: Option<mpsc::UnboundedSender<()>>,
    pub(crate) held: Vec<ReplyTo<String>>,
}

impl Process for Silent {
    type Message = ();
    type Call = String;
    type Reply = String;

    async fn handle_cast(&mut self, (): (), _: &mut Context<Self>) {}

    async fn handle_call(&mut self, _: String, reply: ReplyTo<String>, _: &mut Context<Self>) {
        self.held.push(reply);
        if let Some(arrived) = &self.arrived {
            let _ = arrived.send(());
        }
    }

    fn remote_messages() -> Option<Codec<Self>> {
        Some(Codec::msgpack())
    }
}

/// Stops with the reason it is sent (from any node); otherwise idles. A target for remote
/// monitors and links.
pub(crate) struct Stopper;

impl Process for Stopper {
    type Message = ExitReason;
    type Call = ();
    type Reply = ();

    async fn handle_cast(&mut self, reason: ExitReason, ctx: &mut Context<Self>) {
        ctx.stop(reason);
    }

    async fn handle_call(&mut self, (): (), reply: ReplyTo<()>, _: &mut Context<Self>) {
        reply.send(());
    }

    fn remote_messages() -> Option<Codec<Self>> {
        Some(Codec::msgpack())
    }
}

/// What a [`Probe`] is told to do; it answers once done.
#[derive(Debug)]
pub(crate) enum Order {
    Monitor(Pid),
    Link(Pid),
    TrapExits,
}

/// Monitors, links and traps on order, and reports every signal it gets; stops with the
/// reason it is cast.
pub(crate) struct Probe {
    pub(crate) signals: mpsc::UnboundedSender<Signal>,
}

impl Process for Probe {
    type Message = ExitReason;
    type Call = Order;
    type Reply = ();

    async fn handle_cast(&mut self, reason: ExitReason, ctx: &mut Context<Self>) {
        ctx.stop(reason);
    }

    async fn handle_call(&mut self, order: Order, reply: ReplyTo<()>, ctx: &mut Context<Self>) {
        match order {
            Order::Monitor(target) => {
                ctx.monitor(target);
            }
            Order::Link(peer) => ctx.link(peer).expect("the probe is alive"),
            Order::TrapExits => ctx.trap_exits(true),
        }
        reply.send(());
    }

    async fn handle_signal(&mut self, signal: Signal, _: &mut Context<Self>) {
        let _ = self.signals.send(signal);
    }
}

/// A numbered message: who sent it, and its place in that sender's sequence to this receiver.
pub(crate) type Numbered = (u32, u64);

/// What a [`Sequencer`] has seen: how many messages, and every break in a sender's sequence as
/// (sender, expected, got).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct SequenceReport {
    pub(crate) received: u64,
    pub(crate) breaks: Vec<(u32, u64, u64)>,
}

/// Checks that each sender's numbers arrive as 0, 1, 2, ... with nothing missing or reordered.
#[derive(Default)]
pub(crate) struct Sequencer {
    next: HashMap<u32, u64>,
    report: SequenceReport,
}

impl Sequencer {
    /// Counts one numbered message, noting a break in its sender's sequence.
    fn note(&mut self, (sender, seq): Numbered) {
        let next = self.next.entry(sender).or_insert(0);
        if seq != *next {
            self.report.breaks.push((sender, *next, seq));
        }
        *next = seq + 1;
        self.report.received += 1;
    }
}

impl Process for Sequencer {
    type Message = Numbered;
    type Call = ();
    type Reply = SequenceReport;

    async fn handle_cast(&mut self, numbered: Numbered, _: &mut Context<Self>) {
        self.note(numbered);
    }

    async fn handle_call(&mut self, (): (), reply: ReplyTo<SequenceReport>, _: &mut Context<Self>) {
        reply.send(self.report.clone());
    }

    fn remote_messages() -> Option<Codec<Self>> {
        Some(Codec::msgpack())
    }
}

/// Records every value it is cast, slowly (it sleeps in each handler), so that casts pile up
/// behind it.
pub(crate) struct SlowRecorder {
    pub(crate) delay: Duration,
    pub(crate) seen: Vec<u64>,
}

impl Process for SlowRecorder {
    type Message = u64;
    type Call = ();
    type Reply = Vec<u64>;

    async fn handle_cast(&mut self, value: u64, _: &mut Context<Self>) {
        tokio::time::sleep(self.delay).await;
        self.seen.push(value);
    }

    async fn handle_call(&mut self, (): (), reply: ReplyTo<Vec<u64>>, _: &mut Context<Self>) {
        reply.send(self.seen.clone());
    }

    fn remote_messages() -> Option<Codec<Self>> {
        Some(Codec::msgpack())
    }
}

/// The spec of a node that exists only in a test: default channels, no listen address.
pub(crate) fn fake_spec(name: &str, incarnation: u64) -> NodeSpec {
    let mut channels = BTreeMap::new();
    channels.insert(CONTROL_CHANNEL.to_owned(), ChannelConfig::new());
    channels.insert(DEFAULT_CHANNEL.to_owned(), ChannelConfig::new());
    NodeSpec { name: name.to_owned(), incarnation, listen_addrs: Vec::new(), channels }
}

/// A connection from the test to a node, spoken by hand: handshake messages, then frames in
/// sealed records once it has the keys.
pub(crate) struct RawPeer {
    pub(crate) stream: TcpStream,
    /// Bytes read and not yet taken.
    read: BytesMut,
    keys: Option<Keyed<Welcome>>,
    decoder: FrameDecoder,
}

impl RawPeer {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            read: BytesMut::new(),
            keys: None,
            decoder: FrameDecoder::new(Format::latest(1024 * 1024)),
        }
    }

    pub(crate) async fn connect(addr: SocketAddr) -> Self {
        Self::new(within(TcpStream::connect(addr)).await.expect("connects"))
    }

    /// Connects and runs the real initiator's side of the handshake as `spec`, until the node
    /// accepts it.
    pub(crate) async fn handshake(addr: SocketAddr, spec: NodeSpec) -> Self {
        let mut raw = Self::connect(addr).await;
        let hello = Hello::new(spec, DEFAULT_CHANNEL, 0, Protection::Encrypted);
        let (initiator, reply) = raw.greet(&key(), &hello).await;
        let answer = raw.confirm(initiator, reply.expect("the node answers")).await;
        assert_eq!(answer, Some(Frame::Accepted), "the node accepts the test's handshake");
        raw
    }

    /// Sends the first message of a handshake under `key`; the node's answer (`None`: closed).
    pub(crate) async fn greet(
        &mut self,
        key: &ClusterKey,
        hello: &Hello,
    ) -> (Initiator, Option<Message>) {
        let (initiator, first) = Initiator::start(key, hello).expect("a first message");
        self.send_message(&first).await;
        (initiator, self.recv_message().await)
    }

    /// Takes the node's answer to [`RawPeer::greet`], sends the confirmation, and returns the
    /// node's verdict (`Accepted` or `Refused`; `None`: closed).
    pub(crate) async fn confirm(&mut self, initiator: Initiator, reply: Message) -> Option<Frame> {
        self.keys = Some(initiator.finish(reply).expect("the node's answer opens"));
        self.send(&Frame::Confirm).await;
        self.recv().await
    }

    /// The protocol version agreed, once the handshake is done.
    pub(crate) fn version(&self) -> Option<u32> {
        self.keys.as_ref().map(|keys| keys.version)
    }

    pub(crate) async fn send_message(&mut self, message: &Message) {
        let mut out = BytesMut::new();
        message.encode(&mut out);
        self.send_raw(&out).await;
    }

    /// The next handshake message, or `None` when the node closed the connection.
    pub(crate) async fn recv_message(&mut self) -> Option<Message> {
        within(async {
            loop {
                if let Some(message) = Message::decode(&mut self.read).expect("a valid message") {
                    return Some(message);
                }
                match self.stream.read_buf(&mut self.read).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
    }

    pub(crate) async fn send(&mut self, frame: &Frame) {
        let mut out = BytesMut::new();
        encode_frame(frame, &mut out, Format::latest(1024 * 1024)).expect("encodes");
        self.send_bytes(&out).await;
    }

    /// Sends `bytes` in sealed records once the connection has its keys.
    pub(crate) async fn send_bytes(&mut self, bytes: &[u8]) {
        let keys = self.keys.as_mut().expect("after the handshake");
        let mut sealed = BytesMut::new();
        keys.sealer.seal(bytes, &mut sealed).expect("seals");
        self.send_raw(&sealed).await;
    }

    /// Sends `bytes` as they are.
    pub(crate) async fn send_raw(&mut self, bytes: &[u8]) {
        within(self.stream.write_all(bytes)).await.expect("writes");
    }

    /// Seals `bytes` as [`RawPeer::send_bytes`] would, without sending them.
    pub(crate) fn seal(&mut self, bytes: &[u8]) -> Vec<u8> {
        let keys = self.keys.as_mut().expect("after the handshake");
        let mut sealed = BytesMut::new();
        keys.sealer.seal(bytes, &mut sealed).expect("seals");
        sealed.to_vec()
    }

    /// The next frame from the node's sealed records, or `None` when the node closed the
    /// connection (or reset it).
    pub(crate) async fn recv(&mut self) -> Option<Frame> {
        within(async {
            loop {
                let keys = self.keys.as_mut().expect("after the handshake");
                let opened = keys.opener.open(&mut self.read, self.decoder.buffer_mut());
                opened.expect("the node's records open");
                if let Some(frame) = self.decoder.next_frame().expect("a valid frame") {
                    return Some(frame);
                }
                match self.stream.read_buf(&mut self.read).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
    }

    /// Waits until the node closes the connection: reads until end of stream (or a reset),
    /// discarding anything the node still sends.
    pub(crate) async fn closed_by_node(&mut self) {
        within(async {
            let mut scratch = [0u8; 1024];
            loop {
                match self.stream.read(&mut scratch).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
}

// ---------------------------------------------------------------------------------------------
// Ordering and head-of-line blocking: nodes with parallel connections, processes that send on
// a script, receivers that block, floods.

/// A node builder whose default channel opens `parallelism` connections to each peer.
pub(crate) fn parallel(name: &str, parallelism: u16) -> NodeBuilder {
    builder(name).channel(DEFAULT_CHANNEL, ChannelConfig::new().parallelism(parallelism))
}

/// Nodes "a" and "b", joined, each with `parallelism` connections on the default channel.
pub(crate) async fn parallel_pair(parallelism: u16) -> Vec<Node> {
    cluster_of(vec![parallel("a", parallelism), parallel("b", parallelism)]).await
}

/// What a [`Script`] runs: a future awaited inside the process's handler, whose output is the
/// reason the process then stops with.
pub(crate) type Job = Pin<Box<dyn Future<Output = ExitReason> + Send>>;

/// Boxes `job` for a [`Script`].
pub(crate) fn job(job: impl Future<Output = ExitReason> + Send + 'static) -> Job {
    Box::pin(job)
}

/// Runs the [`Job`] it is cast inside its handler, so that whatever the job sends (through a
/// `Runtime` or a `Node`) this process sends, one send after another; then stops with the
/// reason the job returns. Spawn it first (its pid can be watched before it sends anything),
/// then cast it the job. Local only: a job does not cross nodes.
pub(crate) struct Script;

impl Process for Script {
    type Message = Job;
    type Call = ();
    type Reply = ();

    async fn handle_cast(&mut self, job: Job, ctx: &mut Context<Self>) {
        let reason = job.await;
        ctx.stop(reason);
    }
}

/// Blocks in `init` until `gate` fires (or its sender is dropped), so that its mailbox fills
/// and stays full; then checks each sender's numbers as a [`Sequencer`] does. Kills and exit
/// signals end it while it blocks, as any await point allows.
pub(crate) struct Gated {
    gate: Option<oneshot::Receiver<()>>,
    sequence: Sequencer,
}

impl Gated {
    pub(crate) fn new(gate: oneshot::Receiver<()>) -> Self {
        Self { gate: Some(gate), sequence: Sequencer::default() }
    }
}

impl Process for Gated {
    type Message = Numbered;
    type Call = ();
    type Reply = SequenceReport;

    async fn init(&mut self, _: &mut Context<Self>) -> Result<(), ExitReason> {
        if let Some(gate) = self.gate.take() {
            let _ = gate.await;
        }
        Ok(())
    }

    async fn handle_cast(&mut self, numbered: Numbered, _: &mut Context<Self>) {
        self.sequence.note(numbered);
    }

    async fn handle_call(&mut self, (): (), reply: ReplyTo<SequenceReport>, _: &mut Context<Self>) {
        reply.send(self.sequence.report.clone());
    }

    fn remote_messages() -> Option<Codec<Self>> {
        Some(Codec::msgpack())
    }
}

/// [`Script`] processes of one node casting numbered messages to one receiver as fast as it
/// takes them (sender `i` sends `(i, 0)`, `(i, 1)`, ...), until stopped. With a name, each
/// sender alternates: even numbers by pid, odd ones by the receiver's registered name.
pub(crate) struct Flood {
    runtime: shoal_process::Runtime,
    senders: Vec<Pid>,
    stop: Arc<AtomicBool>,
    sent: Vec<Arc<AtomicU64>>,
}

impl Flood {
    /// Starts `senders` senders on `from`, casting to `to`, which is registered as
    /// `named = Some((node, name))` if given.
    pub(crate) async fn start(
        from: &Node,
        to: Pid,
        named: Option<(&str, &str)>,
        senders: u32,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let named = named.map(|(node, name)| (node.to_owned(), name.to_owned()));
        let mut flood =
            Self { runtime: from.runtime().clone(), senders: Vec::new(), stop, sent: Vec::new() };
        for sender in 0..senders {
            let script = from.runtime().spawn(Script);
            let (node, stop, named) = (from.clone(), flood.stop.clone(), named.clone());
            let sent = Arc::new(AtomicU64::new(0));
            let counted = sent.clone();
            let casts = async move {
                let mut seq = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let message: Numbered = (sender, seq);
                    let cast = match &named {
                        Some((node_name, name)) if seq % 2 == 1 => {
                            let to = Dest::name_on(node_name, name.as_str());
                            node.runtime().cast(to, message).await.is_ok()
                        }
                        _ => node.runtime().cast(to, message).await.is_ok(),
                    };
                    if !cast {
                        // The node is shutting down.
                        break;
                    }
                    seq += 1;
                    counted.store(seq, Ordering::Release);
                }
                ExitReason::Normal
            };
            script.cast(job(casts)).await.expect("the flood's sender is alive");
            flood.senders.push(script.pid());
            flood.sent.push(sent);
        }
        flood
    }

    /// Stops the senders, waits until each has finished its last cast, and returns how many
    /// each sent.
    pub(crate) async fn stop(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Release);
        for &sender in &self.senders {
            within(self.runtime.watch(sender)).await;
        }
        self.sent.iter().map(|sent| sent.load(Ordering::Acquire)).collect()
    }
}

impl Drop for Flood {
    /// A flood dropped without [`Flood::stop`] stops too (without waiting for its senders).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Polls `future` once, outside the task's cooperative budget (so a ready future is never
/// reported pending because the task has used up its budget).
pub(crate) async fn poll_once<F: Future>(mut future: Pin<&mut F>) -> Poll<F::Output> {
    tokio::task::unconstrained(std::future::poll_fn(move |cx| {
        Poll::Ready(future.as_mut().poll(cx))
    }))
    .await
}

/// Drives `answer`, a request that the process `me` (on `runtime`) made and awaits in its
/// handler, to its end; says besides whether a letter reached `me`'s mailbox while the answer
/// had not arrived (`true`: the letter came first).
///
/// A process waiting for an answer cannot see its mailbox, so this looks at it between polls
/// of the answer, which it polls itself, yielding in between: the mailbox first, then the
/// answer. A letter seen at the first look, with the answer still pending at the second, came
/// first for certain; no interleaving of the two arrivals makes it say so wrongly (it can
/// miss a letter that came first, never invent one).
pub(crate) async fn answer_or_letter<F: Future>(
    runtime: &shoal_process::Runtime,
    me: Pid,
    answer: F,
) -> (F::Output, bool) {
    let letters = |runtime: &shoal_process::Runtime| runtime.mailbox_len(me).unwrap_or(0);
    let before = letters(runtime);
    let mut answer = std::pin::pin!(answer);
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let letter_came = letters(runtime) > before;
        if let Poll::Ready(output) = poll_once(answer.as_mut()).await {
            return (output, false);
        }
        if letter_came {
            return (within(answer).await, true);
        }
        assert!(tokio::time::Instant::now() < deadline, "no answer after {BOUND:?}");
        tokio::task::yield_now().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile peers: floods of connections that never finish their handshake, from loopback
// addresses other than the nodes' 127.0.0.1.

/// The address a flood comes from.
pub(crate) const FLOOD_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// How many connections a flood holds open at most; to open another it closes its oldest.
pub(crate) const FLOOD_HOLD: usize = 1000;

/// Connection attempts a flood keeps in flight at once.
const FLOOD_CONNECTING: usize = 32;

/// A socket bound to `source` (port 0), connected to `target`; closing it resets the
/// connection, so a flood leaves no `TIME_WAIT` behind to hold the machine's ports.
pub(crate) async fn connect_from(
    source: Ipv4Addr,
    target: SocketAddr,
) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_zero_linger()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(target).await
}

/// The bytes of a whole first handshake message under the cluster key from a node called
/// `name`, with default channels: what an attacker who recorded one could replay.
pub(crate) fn hello_bytes(name: &str) -> Vec<u8> {
    let hello = Hello::new(fake_spec(name, 1), DEFAULT_CHANNEL, 0, Protection::Encrypted);
    let (_, first) = Initiator::start(&key(), &hello).expect("a first message");
    let mut out = BytesMut::new();
    first.encode(&mut out);
    out.to_vec()
}

impl RawPeer {
    /// Connects from `source` (a loopback address) rather than 127.0.0.1.
    pub(crate) async fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> Self {
        Self::new(within(connect_from(source, addr)).await.expect("connects"))
    }
}

/// Connections to one node, opened as fast as one thread can from a few loopback addresses
/// in turn, each held open without finishing its handshake: in turn silent, sending all of a
/// first message but its last byte, or replaying a whole first message recorded under the
/// cluster key (of a stranger, or claiming one of the names given), which the node answers,
/// and never confirming it (a replayer cannot). At most [`FLOOD_HOLD`] are held; a connection the
/// node closes is let go. Runs on a thread and runtime of its own (an attacker's CPU, not the
/// nodes' runtime) until [`HandshakeFlood::stop`], or until dropped.
pub(crate) struct HandshakeFlood {
    stop: Arc<AtomicBool>,
    tally: Arc<FloodTally>,
    finished: Option<oneshot::Receiver<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What a flood did.
#[derive(Debug, Default)]
pub(crate) struct FloodTally {
    /// Connections made.
    pub(crate) connected: AtomicU64,
    /// Of those, the ones the node closed.
    pub(crate) closed_by_node: AtomicU64,
    /// Connection attempts that failed or did not finish within a second.
    pub(crate) failed: AtomicU64,
}

impl HandshakeFlood {
    /// Floods `target` from `sources`, in turn; whole first messages claim the names of `claims`
    /// in turn with a stranger's (`claims` empty: strangers only).
    pub(crate) fn start(target: SocketAddr, sources: &[Ipv4Addr], claims: &[&str]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(FloodTally::default());
        let (finish, finished) = oneshot::channel();
        let mut stalls = vec![Vec::new()];
        let stranger = hello_bytes("stranger");
        stalls.push(stranger[..stranger.len() - 1].to_vec());
        stalls.push(stranger);
        stalls.extend(claims.iter().map(|name| hello_bytes(name)));
        let sources = sources.to_vec();
        let (stop_, tally_) = (stop.clone(), tally.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the flood's runtime starts");
            runtime.block_on(flood(target, sources, stalls, stop_, tally_));
            drop(runtime);
            let _ = finish.send(());
        });
        Self { stop, tally, finished: Some(finished), thread: Some(thread) }
    }

    /// How many of its connections the node has closed so far.
    pub(crate) fn closed_by_node(&self) -> u64 {
        self.tally.closed_by_node.load(Ordering::Relaxed)
    }

    /// Waits until the flood is in force: the node has closed `count` of its connections
    /// (over a bound, or for saying nothing in time), so it holds all it may.
    pub(crate) async fn closed_at_least(&self, count: u64) {
        eventually("the node closes the flood's connections", || {
            let closed = self.closed_by_node();
            async move { closed >= count }
        })
        .await;
    }

    /// Stops the flood, closes its connections and waits until its thread is done.
    pub(crate) async fn stop(mut self) -> Arc<FloodTally> {
        self.stop.store(true, Ordering::Release);
        if let Some(finished) = self.finished.take() {
            within(finished).await.expect("the flood's thread reports its end");
        }
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the flood's thread ends cleanly");
        }
        self.tally.clone()
    }
}

impl Drop for HandshakeFlood {
    /// A flood dropped without [`HandshakeFlood::stop`] (a failed test) stops too, without
    /// waiting for its thread.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

async fn flood(
    target: SocketAddr,
    sources: Vec<Ipv4Addr>,
    stalls: Vec<Vec<u8>>,
    stop: Arc<AtomicBool>,
    tally: Arc<FloodTally>,
) {
    let mut connecting = tokio::task::JoinSet::new();
    let mut holders = tokio::task::JoinSet::new();
    let mut held = std::collections::VecDeque::new();
    let mut attempts = 0usize;
    let mut opened = 0usize;
    while !stop.load(Ordering::Acquire) {
        while connecting.len() < FLOOD_CONNECTING {
            let source = sources[attempts % sources.len()];
            attempts += 1;
            connecting.spawn(async move {
                tokio::time::timeout(Duration::from_secs(1), connect_from(source, target)).await
            });
        }
        let Some(attempt) = connecting.join_next().await else { continue };
        let stream = match attempt {
            Ok(Ok(Ok(stream))) => stream,
            _ => {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        tally.connected.fetch_add(1, Ordering::Relaxed);
        let stall = stalls[opened % stalls.len()].clone();
        opened += 1;
        let tally = tally.clone();
        let holder = holders.spawn(async move {
            let mut stream = stream;
            let _ = stream.write_all(&stall).await;
            let mut scratch = [0u8; 1024];
            // Held until the node closes it (or the flood lets it go).
            while let Ok(read) = stream.read(&mut scratch).await {
                if read == 0 {
                    break;
                }
            }
            tally.closed_by_node.fetch_add(1, Ordering::Relaxed);
        });
        held.push_back(holder);
        while holders.try_join_next().is_some() {}
        // Only connections still open count: the oldest open one goes to make room.
        if holders.len() > FLOOD_HOLD {
            while let Some(oldest) = held.pop_front() {
                if !oldest.is_finished() {
                    oldest.abort();
                    break;
                }
            }
        }
        if held.len() > 4 * FLOOD_HOLD {
            held.retain(|holder| !holder.is_finished());
        }
    }
    connecting.shutdown().await;
    holders.shutdown().await;
}

/// TCP whose outgoing connections come from one loopback address, so that a node can have an
/// address of its own (as nodes on separate hosts do), not the 127.0.0.1 every other node
/// shares.
struct FromAddress(Ipv4Addr);

impl Network for FromAddress {
    fn bind(&self, addr: SocketAddr) -> BoxFuture<'_, std::io::Result<Box<dyn Listener>>> {
        TcpNetwork.bind(addr)
    }

    fn connect(&self, addr: SocketAddr) -> BoxFuture<'_, std::io::Result<Connection>> {
        Box::pin(async move {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from((self.0, 0)))?;
            let stream = socket.connect(addr).await?;
            stream.set_nodelay(true)?;
            let peer_addr = stream.peer_addr()?;
            let (read, write) = stream.into_split();
            Ok(Connection { read: Box::new(read), write: Box::new(write), peer_addr })
        })
    }
}

/// A node builder (as [`builder`]) for a node that listens on, and connects from, `address`
/// (a loopback address).
pub(crate) fn builder_on(name: &str, address: Ipv4Addr) -> NodeBuilder {
    builder(name).listen(SocketAddr::from((address, 0))).network(Arc::new(FromAddress(address)))
}
