//! What the metrics share: the tokio runtime they run on, the cluster key of their nodes, the
//! process's resident memory, an idle process, and the second and third nodes of the
//! failover metrics (this same binary, started again).

use std::future::Future;

use anyhow::Context as _;
use shoal_transport::ClusterKey;

/// The cluster key of every benchmark node, as 64 hexadecimal digits. Fixed, so that the peer
/// of the two-process metrics (this same binary) holds it without being told; every node
/// listens on loopback only.
const KEY_HEX: &str = "c47e1a9d05f3b862e19c4d7a30b8f56e2d0a9c18b74e63f5a2d19e07c4b85f31";

/// The cluster key of every benchmark node.
pub(crate) fn key() -> ClusterKey {
    ClusterKey::from_hex(KEY_HEX)
        .expect("the benchmark key is 64 hexadecimal digits of a random key")
}

/// Runs `measure` as a task on a fresh multi-thread tokio runtime with the default worker
/// count (one per core), and returns its result once the runtime has shut down.
///
/// The measuring code runs on a worker, as a process's code would, not on the thread that
/// blocks on the runtime: that thread would be one more thread than there are cores.
pub(crate) fn on_workers<F>(measure: F) -> anyhow::Result<f64>
where
    F: Future<Output = anyhow::Result<f64>> + Send + 'static,
{
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let value = tokio.block_on(tokio.spawn(measure)).context("the measuring task")??;
    Ok(value)
}

/// This OS process's resident set size, in bytes (`VmRSS` in `/proc/self/status`).
pub(crate) fn resident_bytes() -> anyhow::Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .context("no VmRSS line in /proc/self/status")?;
    let kib: u64 = line
        .trim()
        .strip_suffix("kB")
        .context("VmRSS is not in kB")?
        .trim()
        .parse()
        .context("VmRSS is not a number")?;
    Ok(kib * 1024)
}

/// A process that does nothing: the child of the registry's names and of the hubs.
pub(crate) struct Idle;

impl shoal_process::Process for Idle {
    type Message = ();
    type Call = ();
    type Reply = ();

    async fn handle_cast(&mut self, (): (), _ctx: &mut shoal_process::Context<Self>) {}
}

/// A process that answers a call with its node's name: the child the failover benchmarks call
/// until it answers from its new node.
pub(crate) struct NodeName {
    /// The node it runs on.
    pub(crate) node: String,
}

impl shoal_process::Process for NodeName {
    type Message = ();
    type Call = ();
    type Reply = String;

    async fn handle_cast(&mut self, (): (), _ctx: &mut shoal_process::Context<Self>) {}

    async fn handle_call(
        &mut self,
        (): (),
        reply: shoal_process::ReplyTo<String>,
        _ctx: &mut shoal_process::Context<Self>,
    ) {
        reply.send(self.node.clone());
    }

    fn remote_messages() -> Option<shoal_process::Codec<Self>> {
        Some(shoal_process::Codec::msgpack())
    }
}

/// A node in a process of its own (this binary, started again); killed (SIGKILL) and reaped
/// when dropped, if it still runs (a stopped one too: SIGKILL ends a process stopped by
/// SIGSTOP).
pub(crate) struct NodeProcess(pub(crate) std::process::Child);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `shoal-bench SUBCOMMAND NAME`, which prints `listening ADDR` once its node is up;
/// the process and that address.
pub(crate) fn spawn_node(
    subcommand: &str,
    name: &str,
) -> anyhow::Result<(NodeProcess, std::net::SocketAddr)> {
    use std::io::BufRead as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new(std::env::current_exe()?)
        .args([subcommand, name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting node {name}"))?;
    let stdout = child.stdout.take().context("the node's stdout")?;
    let process = NodeProcess(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let Some(addr) = line.trim().strip_prefix("listening ") else {
        anyhow::bail!("node {name} said {line:?} instead of its address");
    };
    Ok((process, addr.parse().with_context(|| format!("node {name}'s address"))?))
}

/// For a node process ([`spawn_node`]): prints `listening ADDR`, then waits until stdin
/// closes (the measuring process dropped its [`NodeProcess`] or ended).
pub(crate) async fn serve_until_stdin_closes(node: &shoal_transport::Node) -> anyhow::Result<()> {
    use std::io::Write as _;
    println!("listening {}", node.listen_addr());
    std::io::stdout().flush()?;
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {}
    })
    .await?;
    Ok(())
}
