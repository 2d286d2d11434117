//! Metrics between two nodes in two OS processes on loopback: casts, calls and the control
//! channel's latency under bulk data.
//!
//! Every sample starts a *peer*: this same binary again (`shoal-bench peer`), which runs a
//! node named `peer` on `127.0.0.1:0` with two processes (a sink that counts casts, and an
//! echo that answers calls), prints its address, and exits when its stdin closes. The
//! measuring node (`main`) joins it, learns the two pids through an RPC, and measures. Both
//! nodes use the default configuration except for a larger maximum frame (for the 64 MiB
//! message) and, in the metrics named `..._unsealed`, `Protection::Unsealed` on both (no
//! records after the handshake: what integrity costs is the difference with the metric of the
//! same name without the suffix; only with the `unsealed` feature).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use serde_bytes::ByteBuf;
use shoal_process::{Codec, Context, Pid, Process, ReplyTo};
use shoal_transport::{Node, NodeBuilder, Protection};

use crate::observed::{Main, Observed};

use crate::harness::{key, on_workers};

/// Room for the 64 MiB message of `control_ping_p99_us_under_bulk` and its envelope.
const MAX_FRAME_BYTES: usize = 80 * 1024 * 1024;
const CASTS: u64 = 1_000_000;
const PAYLOAD_BYTES: usize = 64;
const SEQUENTIAL_CALLS: usize = 20_000;
const PIPELINED_CALLS: usize = 200_000;
const IN_FLIGHT: usize = 64;
const BULK_BYTES: usize = 64 * 1024 * 1024;
const BULK_MESSAGES: usize = 4;
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Counts casts; a call answers the count so far (it arrives after every earlier cast).
struct Sink {
    received: u64,
}

impl Process for Sink {
    type Message = ByteBuf;
    type Call = ();
    type Reply = u64;

    async fn handle_cast(&mut self, _: ByteBuf, _: &mut Context<Self>) {
        self.received += 1;
    }

    async fn handle_call(&mut self, (): (), reply: ReplyTo<u64>, _: &mut Context<Self>) {
        reply.send(self.received);
    }

    fn remote_messages() -> Option<Codec<Self>> {
        Some(Codec::msgpack())
    }
}

/// Answers each call with its request.
struct Echo;

impl Process for Echo {
    type Message = ();
    type Call = u64;
    type Reply = u64;

    async fn handle_cast(&mut self, (): (), _: &mut Context<Self>) {}

    async fn handle_call(&mut self, n: u64, reply: ReplyTo<u64>, _: &mut Context<Self>) {
        reply.send(n);
    }

    fn remote_messages() -> Option<Codec<Self>> {
        Some(Codec::msgpack())
    }
}

/// How both nodes' connections are protected, as `shoal-bench peer` takes it.
pub(crate) fn protection(name: &str) -> anyhow::Result<Protection> {
    match name {
        "encrypted" => Ok(Protection::Encrypted),
        "authenticated" => Ok(Protection::Authenticated),
        #[cfg(feature = "unsealed")]
        "unsealed" => Ok(Protection::Unsealed),
        other => bail!(
            "no protection called {other:?} (encrypted, authenticated{})",
            if cfg!(feature = "unsealed") { ", unsealed" } else { "" }
        ),
    }
}

fn protection_name(protection: Protection) -> &'static str {
    match protection {
        Protection::Authenticated => "authenticated",
        #[cfg(feature = "unsealed")]
        Protection::Unsealed => "unsealed",
        _ => "encrypted",
    }
}

/// A node of these metrics, called `name`.
async fn start_node(name: &str, protection: Protection) -> anyhow::Result<Node> {
    let node = Node::builder(name, key())
        .max_frame_bytes(MAX_FRAME_BYTES)
        .protection(protection)
        .start()
        .await?;
    Ok(node)
}

/// `shoal-bench peer PROTECTION`: the other node. Prints `listening <addr>`, serves until
/// stdin closes.
pub(crate) fn serve_peer(protection: Protection) -> anyhow::Result<()> {
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    tokio.block_on(async {
        let node = start_node("peer", protection).await?;
        let sink = node.runtime().spawn(Sink { received: 0 }).pid();
        let echo = node.runtime().spawn(Echo).pid();
        node.register_rpc("pids", move |(): ()| async move { (sink, echo) });
        println!("listening {}", node.listen_addr());
        std::io::stdout().flush()?;
        // Stdin closing (the measuring process exited or was killed) ends the peer.
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {}
        })
        .await?;
        node.shutdown();
        Ok(())
    })
}

/// The peer process; killed when dropped.
struct PeerProcess(Child);

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the peer, joins it, and runs `measure` with the main node and the peer's sink
/// and echo pids; both nodes protect their connections with `protection`.
fn with_peer<F, Fut>(protection: Protection, measure: F) -> anyhow::Result<f64>
where
    F: FnOnce(Node, Pid, Pid) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<f64>> + Send + 'static,
{
    with_peer_observed(protection, Main::Bare, measure)
}

/// [`with_peer`], the main node run as `main` says.
fn with_peer_observed<F, Fut>(protection: Protection, main: Main, measure: F) -> anyhow::Result<f64>
where
    F: FnOnce(Node, Pid, Pid) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<f64>> + Send + 'static,
{
    let mut child = Command::new(std::env::current_exe()?)
        .args(["peer", protection_name(protection)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the peer process")?;
    let stdout = child.stdout.take().context("the peer's stdout")?;
    let peer = PeerProcess(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let Some(addr) = line.trim().strip_prefix("listening ") else {
        bail!("the peer said {line:?} instead of its address");
    };
    let addr = addr.parse().context("the peer's address")?;
    let value = on_workers(async move {
        let (node, observer) = if main != Main::Bare {
            let settings = move |builder: NodeBuilder| {
                builder.max_frame_bytes(MAX_FRAME_BYTES).protection(protection)
            };
            let observer = Observed::start("main", settings, main == Main::Sampled).await?;
            (observer.node.transport().clone(), Some(observer))
        } else {
            (start_node("main", protection).await?, None)
        };
        node.join(addr).await.context("joining the peer")?;
        let (sink, echo): (Pid, Pid) =
            node.rpc("peer", "pids", &(), CALL_TIMEOUT).await.context("asking the peer's pids")?;
        let value = measure(node.clone(), sink, echo).await;
        match observer {
            Some(observer) => observer.stop().await,
            None => node.shutdown(),
        }
        value
    });
    drop(peer);
    value
}

/// `remote_send_msgs_per_s`: one task casts 1,000,000 messages of 64 payload bytes (a msgpack
/// `bin`) to the peer's sink with `Runtime::cast(..).await` (waiting whenever the peer's queue
/// is full), then calls the sink, which answers after handling every cast before the call.
/// Timed from the first cast to the answer; casts ÷ seconds.
pub(crate) fn send_msgs_per_s(protection: Protection) -> anyhow::Result<f64> {
    send_msgs_per_s_observed(protection, Main::Bare)
}

/// `remote_send_msgs_per_s`, the main node run as `main` says (the metrics
/// `remote_send_msgs_per_s_node` and `_metrics`, see [`crate::observed`]).
pub(crate) fn send_msgs_per_s_observed(protection: Protection, main: Main) -> anyhow::Result<f64> {
    with_peer_observed(protection, main, |node, sink, _| async move {
        let runtime = node.runtime().clone();
        let payload = ByteBuf::from(vec![7u8; PAYLOAD_BYTES]);
        let started = Instant::now();
        for _ in 0..CASTS {
            runtime.cast(sink, payload.clone()).await?;
        }
        let received: u64 =
            runtime.call(sink, (), CALL_TIMEOUT).await.context("the final call to the sink")?;
        let elapsed = started.elapsed();
        ensure!(received == CASTS, "the sink counted {received} of {CASTS} casts");
        eprintln!("{CASTS} casts in {elapsed:?}");
        Ok(CASTS as f64 / elapsed.as_secs_f64())
    })
}

/// `remote_call_rtt_us`: 20,000 sequential calls to the peer's echo (after 1,000 untimed);
/// the median round trip, in microseconds.
pub(crate) fn call_rtt_us(protection: Protection) -> anyhow::Result<f64> {
    with_peer(protection, |node, _, echo| async move {
        let runtime = node.runtime().clone();
        for n in 0..1_000u64 {
            let _: u64 = runtime.call(echo, n, CALL_TIMEOUT).await?;
        }
        let mut rtts = Vec::with_capacity(SEQUENTIAL_CALLS);
        for n in 0..SEQUENTIAL_CALLS as u64 {
            let started = Instant::now();
            let answer: u64 = runtime.call(echo, n, CALL_TIMEOUT).await?;
            rtts.push(started.elapsed());
            ensure!(answer == n, "the echo answered {answer} to {n}");
        }
        rtts.sort();
        let median = rtts[rtts.len() / 2];
        eprintln!("p50 {median:?}, p99 {:?}", rtts[rtts.len() * 99 / 100]);
        Ok(median.as_secs_f64() * 1e6)
    })
}

/// `remote_calls_pipelined_per_s`: 64 tasks each make calls to the peer's echo one after the
/// other, 200,000 calls in all, so 64 are in flight at any time; calls ÷ seconds.
pub(crate) fn calls_pipelined_per_s(protection: Protection) -> anyhow::Result<f64> {
    with_peer(protection, |node, _, echo| async move {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..IN_FLIGHT {
            let runtime = node.runtime().clone();
            tasks.push(tokio::spawn(async move {
                for n in 0..(PIPELINED_CALLS / IN_FLIGHT) as u64 {
                    let _: u64 = runtime.call(echo, n, CALL_TIMEOUT).await?;
                }
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        let elapsed = started.elapsed();
        let calls = (PIPELINED_CALLS / IN_FLIGHT * IN_FLIGHT) as f64;
        eprintln!("{calls} calls in {elapsed:?}");
        Ok(calls / elapsed.as_secs_f64())
    })
}

/// `control_ping_p99_us_under_bulk`: while four 64 MiB messages stream to the peer's sink on
/// the default channel, a task pings the peer over the control channel every millisecond;
/// the 99th percentile of those pings' round trips, in microseconds.
pub(crate) fn control_ping_p99_us_under_bulk(protection: Protection) -> anyhow::Result<f64> {
    with_peer(protection, |node, sink, _| async move {
        let runtime = node.runtime().clone();
        let streaming = Arc::new(AtomicBool::new(true));
        let pinger = {
            let (node, streaming) = (node.clone(), streaming.clone());
            tokio::spawn(async move {
                let mut rtts = Vec::new();
                while streaming.load(Ordering::Relaxed) {
                    rtts.push(node.ping("peer", CALL_TIMEOUT).await?);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                anyhow::Ok(rtts)
            })
        };
        let bulk = ByteBuf::from(vec![1u8; BULK_BYTES]);
        let started = Instant::now();
        for _ in 0..BULK_MESSAGES {
            runtime.cast(sink, bulk.clone()).await?;
        }
        let received: u64 =
            runtime.call(sink, (), CALL_TIMEOUT).await.context("the final call to the sink")?;
        let streamed = started.elapsed();
        streaming.store(false, Ordering::Relaxed);
        let mut rtts = pinger.await??;
        ensure!(received == BULK_MESSAGES as u64, "the sink counted {received} bulk messages");
        ensure!(!rtts.is_empty(), "no ping completed while the bulk data streamed");
        rtts.sort();
        let p99 = rtts[(rtts.len() * 99 / 100).min(rtts.len() - 1)];
        eprintln!(
            "{} pings while {BULK_MESSAGES} x 64 MiB streamed in {streamed:?}; p99 {p99:?}",
            rtts.len()
        );
        Ok(p99.as_secs_f64() * 1e6)
    })
}
