//! Shared helpers: nodes with short timeouts, waiting with a bound, test processes, and a raw
//! peer that speaks the wire protocol from the test itself.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::panic::Location;
use std::time::Duration;

use bytes::BytesMut;
use shoal_process::{Codec, Context, ExitReason, Pid, Process, ReplyTo, Signal};
use shoal_transport::handshake::{Connector, ConnectorStep, NONCE_BYTES};
use shoal_transport::wire::{Frame, FrameDecoder, encode_frame};
use shoal_transport::{
    CONTROL_CHANNEL, ChannelConfig, DEFAULT_CHANNEL, Node, NodeBuilder, NodeEvent, NodeSpec, Secret,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc};

pub(crate) const SECRET: &str = "test secret";

/// Every wait in these tests is bounded by this.
pub(crate) const BOUND: Duration = Duration::from_secs(20);

/// A timeout for calls that are expected to be answered (generous: the machine is shared).
pub(crate) const CALL: Duration = Duration::from_secs(10);

/// A node builder with timeouts short enough for tests, yet a failure timeout long enough that
/// a machine loaded by parallel test runs does not see false node downs.
pub(crate) fn builder(name: &str) -> NodeBuilder {
    Node::builder(name, SECRET)
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

    fn codec() -> Option<Codec<Self>> {
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

    fn codec() -> Option<Codec<Self>> {
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

    fn codec() -> Option<Codec<Self>> {
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

impl Process for Sequencer {
    type Message = Numbered;
    type Call = ();
    type Reply = SequenceReport;

    async fn handle_cast(&mut self, (sender, seq): Numbered, _: &mut Context<Self>) {
        let next = self.next.entry(sender).or_insert(0);
        if seq != *next {
            self.report.breaks.push((sender, *next, seq));
        }
        *next = seq + 1;
        self.report.received += 1;
    }

    async fn handle_call(&mut self, (): (), reply: ReplyTo<SequenceReport>, _: &mut Context<Self>) {
        reply.send(self.report.clone());
    }

    fn codec() -> Option<Codec<Self>> {
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

    fn codec() -> Option<Codec<Self>> {
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

/// A connection from the test to a node, framed by hand.
pub(crate) struct RawPeer {
    pub(crate) stream: TcpStream,
    pub(crate) decoder: FrameDecoder,
}

impl RawPeer {
    pub(crate) async fn connect(addr: SocketAddr) -> Self {
        let stream = within(TcpStream::connect(addr)).await.expect("connects");
        Self { stream, decoder: FrameDecoder::new(1024 * 1024) }
    }

    /// Connects and runs the real connecting side of the handshake as `spec`, with `secret`.
    pub(crate) async fn handshake(addr: SocketAddr, secret: &str, spec: NodeSpec) -> Self {
        let mut raw = Self::connect(addr).await;
        let (mut connector, hello) =
            Connector::new(Secret::new(secret), spec, DEFAULT_CHANNEL, 0, [7; NONCE_BYTES]);
        raw.send(&hello).await;
        loop {
            let frame = raw.recv().await.expect("the node answers the handshake");
            match connector.on_frame(frame).expect("the handshake succeeds") {
                ConnectorStep::Send(frame) => raw.send(&frame).await,
                ConnectorStep::Open { .. } => return raw,
            }
        }
    }

    pub(crate) async fn send(&mut self, frame: &Frame) {
        let mut out = BytesMut::new();
        encode_frame(frame, &mut out, 1024 * 1024).expect("encodes");
        self.send_bytes(&out).await;
    }

    pub(crate) async fn send_bytes(&mut self, bytes: &[u8]) {
        within(self.stream.write_all(bytes)).await.expect("writes");
    }

    /// The next frame, or `None` when the node closed the connection (or reset it).
    pub(crate) async fn recv(&mut self) -> Option<Frame> {
        within(async {
            loop {
                if let Some(frame) = self.decoder.next_frame().expect("a valid frame") {
                    return Some(frame);
                }
                match self.stream.read_buf(self.decoder.buffer_mut()).await {
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
