//! `shoal-node`: one Shoal node in its own OS process, driven over stdin and stdout.
//!
//! `cargo xtask cluster-test` starts several of these on distinct loopback addresses and
//! drives them; a person can drive one by hand just as well.
//!
//! ```text
//! shoal-node --name NAME [--key-file PATH] [--listen ADDR] [--join ADDR]...
//!            [--heartbeat-ms MS] [--failure-timeout-ms MS] [--seed N]
//!            [--acceptors NAME,NAME,...] [--data-dir DIR] [--lease-ms MS]
//!            [--quorum-hub-size N] [--dashboard ADDR [--dashboard-token-file PATH]]
//! shoal-node generate-key
//! ```
//!
//! - `generate-key`: prints a new random cluster key (64 hexadecimal digits) on stdout and
//!   exits. Every node of a cluster is given the same one.
//! - `--key-file PATH`: the file holding the cluster key (its 64 hexadecimal digits; whitespace
//!   around them is ignored), else the key itself in `$SHOAL_KEY`. One of the two is required,
//!   and a key that is not 64 hexadecimal digits of a random key is refused. There is no flag
//!   for the key itself: a command line is visible to every user of the machine, a process's
//!   environment and a file of mode 0600 only to its owner.
//! - `--listen` defaults to `127.0.0.1:0`; port 0 picks a free port.
//! - `--join ADDR` (repeatable): seed nodes, joined in the background until one answers.
//! - `--heartbeat-ms` (default 250) and `--failure-timeout-ms` (default 2000): how often peers
//!   are pinged and how long a silent one stays up.
//! - `--seed`: seeds the node's randomness (reconnect jitter, fault injection's drops).
//! - `--acceptors`: the Paxos acceptor set, node names separated by commas (default: this node
//!   alone); every node of a cluster must be given the same set.
//! - `--data-dir`: where this node's Paxos acceptor keeps its votes, fsynced, so that a
//!   restarted node comes back with them (default: in memory, and a restarted acceptor rejoins
//!   from the others before it votes).
//! - `--lease-ms`: the registry's host lease `D` (default 5000, the registry's own default),
//!   renewed every third of it; its drift and stop margins stay at their defaults. A node
//!   cut off from the majority stops its names' processes within `D`, and the others take its
//!   names and locks over after the claim wait (about `1.05·(D/0.95 + 0.5 s)`).
//! - `--quorum-hub-size`: the cluster size of hub `cluster-test-quorum`'s majority quorum: a
//!   node runs its children while it sees more than half of `N` nodes of that hub (default:
//!   the number of acceptors).
//! - `--dashboard ADDR`: serves `shoal::dashboard`'s web view and JSON API on `ADDR`; port 0
//!   picks a free port. Only in a build with the facade's `dashboard` feature
//!   (`cargo build -p shoal --bin shoal-node --features dashboard`; `cargo xtask browser`
//!   builds it so). In such a build every node answers the dashboard's RPC, with or without
//!   the flag, so that a dashboard's cluster view shows it: its layers are gathered into a
//!   `shoal::Node` (`Node::from_parts`), which lists both hubs and the supervisor for the
//!   page (not `cluster-test-handover`, which opens and closes by command). In a build with
//!   the `prometheus` feature too, the dashboard also serves `GET /metrics`: the node's
//!   figures (`shoal::metrics`, sampled every second) in Prometheus's text format.
//! - `--dashboard-token-file PATH`: the file holding the dashboard's access token (whitespace
//!   around it is ignored), else the token in `$SHOAL_DASHBOARD_TOKEN`; every request must
//!   then carry it. A dashboard on an address other than loopback needs one (at least 16
//!   characters). As for the cluster key, there is no flag for the token itself.
//!
//! Every node runs the registry (`shoal-registry`) over its Paxos service, with the factory
//! `cluster-test-worker` registered for the names the `names` commands use (see
//! `registry.rs`), and the default scope of process groups, with its default configuration,
//! for the `groups` commands (see `groups.rs`), and two hubs (`shoal-hub`) with short knobs
//! (a node gone 500 ms has its children started elsewhere; see `hub.rs`), each with the
//! factory of its children registered: `cluster-test`, under the default divergence strategy,
//! for the `hub` commands, and `cluster-test-quorum`, under a majority quorum
//! (`--quorum-hub-size`), for the `quorum-hub` commands. A third hub,
//! `cluster-test-handover`, with hot migration and counter children whose count moves with
//! them, is only opened and closed by its `handover-hub` commands (see `handover.rs`); its
//! factory is registered from the start. With the facade's `supervisor` feature (a default
//! one), every node also runs the distributed supervisor `cluster-test` (`shoal-supervisor`'s
//! `DistributedSupervisor`, hub `dsup/cluster-test`, with the hubs' short knobs), with the
//! factory of its named children registered, for the `dsup` commands (see `dsup.rs`).
//!
//! Logs go to stderr, at the level `$SHOAL_LOG` names (`error`, `warn`, `info`, `debug`,
//! `trace` or `off`; default `warn`, which includes every refused or closed connection, with
//! its reason).
//!
//! # The control protocol
//!
//! The first line on stdout is `listening ADDR incarnation N`, once the node listens (the
//! address carries the port actually bound). With `--dashboard`, the second is
//! `dashboard ADDR`, once the dashboard serves on `ADDR` (its port the one bound). Then each
//! line on stdin is one command, and each
//! command gets exactly one line on stdout, in order: `ok [DATA]` or `error MESSAGE`. A command
//! may start with a number, its id, which its answer then starts with too (`7 nodes` →
//! `7 ok b:1 c:2`), so a driver that gave up waiting for one answer never mistakes it for the
//! next. Nothing else is printed on stdout; diagnostics go to stderr.
//!
//! | command | answer data |
//! |---|---|
//! | `nodes` | the connected nodes, sorted: `NAME:INCARNATION` separated by spaces |
//! | `join ADDR` | the name of the node at `ADDR`, once it is up |
//! | `fault cut NAME DIR` | (none); `DIR` is `in`, `out` or `both` |
//! | `fault drop NAME DIR P` | (none); each frame is dropped with probability `P` |
//! | `fault delay NAME DIR MS` | (none); each frame waits `MS` ms |
//! | `heal NAME`, `heal-all` | (none) |
//! | `storm start M` | `peers=N`: `M` numbered casts (1..=M) are on their way to the `storm` receiver of each of the `N` connected nodes, from one sender task per peer |
//! | `storm report` | `sent=S/T errors=E recv=NAME:COUNT:LAST:ANOMALIES,...`: this node's senders sent `S` of `T` casts and `E` of them gave up on an error; the receiver got `COUNT` casts from `NAME`, the last numbered `LAST`, and `ANOMALIES` of them were not numbered one more than the one before (a gap, a duplicate or a reordering) |
//! | `storm reset` | (none); forgets what the receiver counted (refused while senders run) |
//! | `events` | every node up and down event since start: `up:NAME:INCARNATION:UNIX_MS` and `down:NAME:INCARNATION:UNIX_MS:REASON`, oldest first; `UNIX_MS` is the wall-clock time the event was seen, `REASON` one of `heartbeat-timeout`, `connection-lost`, `disconnected`, `left`, `restarted`, `not-connected`, `other` |
//! | `stats` | for diagnosis: `mailbox=N` (the storm receiver's queue), then per known peer `NAME:sent=F,received=F,queued=Q,reconnects=R,dropped=D` (frames written, frames read, casts and calls waiting to go, reconnections, frames discarded by faults) |
//! | `counter incr KEY WRITER SEQ` | the count after `WRITER`'s increment number `SEQ` of the Paxos counter `KEY` (applied once however often it is retried; a writer numbers its increments 1, 2, ...) |
//! | `counter get KEY` | the count of the Paxos counter `KEY` (a linearisable read) |
//! | `bcast send N` | (none); broadcasts the number `N` through `shoal-broadcast` (Plumtree over this node's connections) |
//! | `bcast seen` | every number this node has delivered, sorted, as ranges: `1-3,5` |
//! | `bcast views` | `active=NAMES passive=NAMES`: the broadcast overlay's views |
//! | `names call RESTART CHECKER NAME...` | `NAME=NODE/PID ...`: each name (`RESTART` is `permanent` or `temporary`) called through the registry at once, its worker started on first use, reporting to the checker at `CHECKER`; `NAME=!` for a call that failed |
//! | `lock run KEY CHECKER HOLD_MS` | (none); starts the lock loop: acquire `KEY`, write to the checker at `CHECKER` while holding it for `HOLD_MS`, release, again |
//! | `lock hold-next MS` | (none); the loop's next hold lasts `MS` |
//! | `lock report` | `acquired=A writes=W refused=R lost=L timeouts=T errors=E holding=TOKEN`: the loop's acquisitions, writes taken and refused by the checker, holds cut short by a lost guard, acquisitions given up, errors, and the token it holds now (0: none) |
//! | `lock stop` | the report, once the loop has stopped |
//! | `lock info KEY` | `free`, or `holder=PID host=NODE token=T count=C waiters=W`: the lock as the cluster has it now |
//! | `groups join GROUP N` | `PID ...`: `N` new idle processes, joined to the group `GROUP` of the default scope at once |
//! | `groups leave GROUP N` | `PID ...`: the `N` lowest members of `GROUP` on this node, which left it (and still live) |
//! | `groups exit GROUP N` | `PID ...`: the `N` lowest members of `GROUP` on this node, killed (their memberships go as they exit) |
//! | `groups members [GROUP...]` | `GROUP=PID,PID,... ...`: the named groups (all, if none is named) as this node sees them now, in name order, each pid once per join, in pid order; groups without members are left out |
//! | `hub nodes` | `NAME,NAME,...`: the hub's nodes as this node sees them, itself included, sorted |
//! | `hub start FROM COUNT` | `started=S failed=F [first=CHILD:_ERROR]`: children `c/FROM` to `c/(FROM+COUNT-1)` started through the hub in one awaited batch (each on its owner); `error no-quorum` if this node is without its quorum |
//! | `hub stop FROM COUNT` | `stopped=S failed=F [first=CHILD:_ERROR]`: children `c/FROM` to `c/(FROM+COUNT-1)` terminated where they run, in one awaited batch |
//! | `hub report` | `nodes=NAME,... quorum=Q partitioned=P live=L rows=R own=O suspended=S doubled=D foreign=F mismatch=M ids=N,N,...`: the hub's nodes as `hub nodes` gives them; whether this node has its quorum and whether the hub is partitioned (`yes` or `no`); the hub's child processes alive on this node by their own records (`L`; `ids`: their numbers, sorted); the children the hub lists as running here (`R`), all it lists here (`O`), those suspended here for want of quorum (`S`), those with two live processes here (`D`), those this node's ring does not give to it (`F`), and those live but not listed as running or listed but not live (`M`) |
//! | `hub listing` | `rows=G suspended=S digest=HEX`: the hub's whole listing as this node sees it: its rows (a row per copy of a child, or per child no node runs), those suspended, and a digest of it all (each row's child, node, status and pid), the same on nodes that agree |
//! | `quorum-hub nodes`, `quorum-hub start FROM COUNT`, `quorum-hub stop FROM COUNT`, `quorum-hub report`, `quorum-hub listing` | as the `hub` commands, for hub `cluster-test-quorum` and its own children |
//! | `handover-hub open` | (none); starts hub `cluster-test-handover` here (hot migration; its children are counters) |
//! | `handover-hub close` | `handed=H failed=F ms=T`: stops that hub here on purpose, which first hands each counter it runs to its new owner, hot; the hand-overs made meanwhile (`HandedOver`, `HandOverFailed`) and how long the stop took |
//! | `handover-hub nodes`, `handover-hub start FROM COUNT`, `handover-hub stop FROM COUNT`, `handover-hub report`, `handover-hub listing` | as the `hub` commands, for hub `cluster-test-handover` and its counters (an error while it is not open here) |
//! | `handover-hub write LANES COUNTERS` | (none); starts `LANES` writers, each incrementing counters `c/0` to `c/(COUNTERS-1)` in turn by child id, one call at a time, an increment retried with its (writer, sequence) until answered or given up after 3 s |
//! | `handover-hub writes` | `acked=A failed=F retries=R slowest_ms=S`: the writers' increments acknowledged and given up (timed out) so far, their retries, and the longest an acknowledged one took |
//! | `handover-hub write-stop` | the same, once the writers have stopped, then `counters=N:A:F,...`: per counter written to, the increments acknowledged and timed out |
//! | `handover-hub counts FROM COUNT` | `N:COUNT,...`: counters `c/FROM` to `c/(FROM+COUNT-1)` read by child id, all at once; `N:!` for a read that failed |
//! | `handover-hub moves` | `handed=H failed=F windows=W forwarded=X unforwarded=Y lagged=L`: this node's hot moves as a mover since it started: hand-overs made and failed, the old copies' retention windows ended and the letters forwarded and not forwarded in them, and events its tally missed |
//! | `dsup nodes` | `NAME,NAME,...`: the distributed supervisor's nodes as this node sees them, itself included, sorted |
//! | `dsup start FROM COUNT` | `started=S failed=F taken=T [first=CHILD:_ERROR]`: the children named `c/FROM` to `c/(FROM+COUNT-1)` started by name (`start_child`), all at once, each on the owner of its name; `T` of the failures were names taken already |
//! | `dsup stop FROM COUNT` | `stopped=S failed=F [first=CHILD:_ERROR]`: those children terminated by name (`terminate_child`), all at once |
//! | `dsup call FROM COUNT` | `answered=A wrong=W failed=F [first=CHILD:_ERROR]`: those children called by name (`call`), all at once; `W` answers came from a child of another number |
//! | `dsup report` | as `hub report` (without `quorum`, `partitioned` and `suspended`), for the supervisor's children: its nodes, the child processes alive here by their own records, those it lists as running here, and `mismatch`: the live processes here whose pid is not the one listed as running here under their name, and the names listed so without a live process of that pid |
//! | `dsup children` | `count=N copies=C digest=HEX`: the supervisor's `children()` as this node sees it: how many names, and a digest of every name and pid, the same on nodes that agree; and the running copies of its children in this node's listing of the whole supervisor (one per name once none runs twice as this node sees it) |
//! | `dsup inits` | how many of the supervisor's child processes this node has started since it started |
//! | `incarnation` | this node's incarnation |
//! | `addr` | the address this node listens on |
//! | `quit` | `bye`; the node then leaves the cluster and exits |
//!
//! Node names may not contain `:`, `,` or whitespace, which the answers use as separators.
//!
//! **The node exits when its stdin closes.** A driver that dies, however it dies, closes the
//! pipe, so a node never outlives the program that started it.

use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal::paxos::{Paxos, PaxosConfig, Recovery, StorageConfig};
use shoal::prelude::*;
use shoal::transport::Node;
use shoal::transport::{ClusterKey, Direction, Fault};
use tokio::sync::{broadcast, mpsc};

mod bcast;
mod counter;
mod dsup;
mod groups;
mod handover;
mod hub;
mod registry;
mod storm;

use bcast::Broadcasts;
use dsup::DsupCommands;
use groups::GroupCommands;
use handover::HandoverHub;
use hub::{FACTORY, HUB, HubCommands, QUORUM_FACTORY, QUORUM_HUB};
use registry::{Checkers, LockLoop};
use shoal_registry::Registry;
use storm::{StormReceiver, StormSenders, Tally, send_storm};

/// The name the storm receiver is registered under on every node.
const STORM: &str = "storm";

/// How many casts a storm sender queues between two yields to the scheduler.
const SENDS_PER_YIELD: u64 = 64;

/// How long the commands still queued when stdin closes may take before the process exits.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// How long to keep trying the `--join` seed nodes before giving up on them.
const SEED_JOIN_PERSISTENCE: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    if let Err(message) = install_logs() {
        eprintln!("shoal-node: {message}");
        return ExitCode::from(2);
    }
    // Not `env::var(..).ok()`: a key that is not Unicode is a bad key, not a missing one.
    let key_var = std::env::var_os("SHOAL_KEY").map(|key| key.to_string_lossy().into_owned());
    let mut options = match Invocation::parse(std::env::args().skip(1), key_var) {
        Ok(Invocation::Run(options)) => *options,
        Ok(Invocation::GenerateKey) => {
            println!("{}", ClusterKey::generate().to_hex());
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("shoal-node: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if options.dashboard_token.is_none() {
        options.dashboard_token =
            std::env::var("SHOAL_DASHBOARD_TOKEN").ok().filter(|token| !token.trim().is_empty());
    }
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(runtime) => runtime,
            Err(error) => {
                eprintln!("shoal-node: cannot start tokio: {error}");
                return ExitCode::FAILURE;
            }
        };
    match runtime.block_on(serve(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("shoal-node: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr at the level `$SHOAL_LOG` names (default `warn`).
fn install_logs() -> Result<(), String> {
    use tracing_subscriber::filter::LevelFilter;
    let level = match std::env::var("SHOAL_LOG") {
        Ok(level) => level.parse::<LevelFilter>().map_err(|_| {
            format!("SHOAL_LOG={level:?} is not a level (error, warn, info, debug, trace, off)")
        })?,
        Err(_) => LevelFilter::WARN,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    Ok(())
}

const USAGE: &str = "\
usage: shoal-node --name NAME [--key-file PATH] [--listen ADDR] [--join ADDR]...
                  [--heartbeat-ms MS] [--failure-timeout-ms MS] [--seed N]
                  [--acceptors NAME,NAME,...] [--data-dir DIR] [--lease-ms MS]
                  [--quorum-hub-size N] [--dashboard ADDR [--dashboard-token-file PATH]]
       shoal-node generate-key
The cluster key (64 hexadecimal digits, from `shoal-node generate-key`) is read from the file
that `--key-file` names, else from $SHOAL_KEY.
Commands are read from stdin, one per line; see the source's module docs.";

/// What the command line asked for.
#[derive(Debug, PartialEq)]
enum Invocation {
    /// `generate-key`: print a new cluster key and exit.
    GenerateKey,
    /// Run a node (boxed: the options are large beside the other variant).
    Run(Box<Options>),
}

impl Invocation {
    /// Parses the arguments after the program's name. `key_var` is `$SHOAL_KEY`, passed in so
    /// that the tests do not depend on the environment.
    fn parse(
        args: impl IntoIterator<Item = String>,
        key_var: Option<String>,
    ) -> Result<Self, String> {
        let mut args = args.into_iter().peekable();
        if args.peek().is_some_and(|first| first == "generate-key") {
            return match args.nth(1) {
                None => Ok(Self::GenerateKey),
                Some(extra) => Err(format!("`generate-key` takes no arguments, not `{extra}`")),
            };
        }
        Options::parse(args, key_var).map(|options| Self::Run(Box::new(options)))
    }
}

/// How to run a node.
#[derive(Debug, PartialEq)]
struct Options {
    name: String,
    listen: SocketAddr,
    seeds: Vec<SocketAddr>,
    key: ClusterKey,
    heartbeat_ms: u64,
    failure_timeout_ms: u64,
    seed: u64,
    acceptors: Vec<String>,
    data_dir: Option<PathBuf>,
    lease_ms: u64,
    /// The cluster size of the quorum hub's majority.
    quorum_hub_size: usize,
    /// Where to serve the dashboard, if anywhere.
    dashboard: Option<SocketAddr>,
    /// The token every request to the dashboard must carry, if any.
    dashboard_token: Option<String>,
}

impl Options {
    fn parse(
        args: impl IntoIterator<Item = String>,
        key_var: Option<String>,
    ) -> Result<Self, String> {
        let mut name = None;
        let mut key_file = None;
        let mut listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut seeds = Vec::new();
        let mut heartbeat_ms = 250;
        let mut failure_timeout_ms = 2000;
        let mut seed = 0;
        let mut acceptors = Vec::new();
        let mut data_dir = None;
        let mut lease_ms = 5_000;
        let mut quorum_hub_size = None;
        let mut dashboard = None;
        let mut dashboard_token_file = None;
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("`{flag}` needs a value"));
            match flag.as_str() {
                "--name" => name = Some(value()?),
                "--key-file" => key_file = Some(PathBuf::from(value()?)),
                "--listen" => listen = parse_value(&flag, &value()?)?,
                "--join" => seeds.push(parse_value(&flag, &value()?)?),
                "--heartbeat-ms" => heartbeat_ms = parse_value(&flag, &value()?)?,
                "--failure-timeout-ms" => failure_timeout_ms = parse_value(&flag, &value()?)?,
                "--seed" => seed = parse_value(&flag, &value()?)?,
                "--acceptors" => acceptors = value()?.split(',').map(str::to_owned).collect(),
                "--data-dir" => data_dir = Some(PathBuf::from(value()?)),
                "--lease-ms" => lease_ms = parse_value(&flag, &value()?)?,
                "--quorum-hub-size" => quorum_hub_size = Some(parse_value(&flag, &value()?)?),
                "--dashboard" => dashboard = Some(parse_value(&flag, &value()?)?),
                "--dashboard-token-file" => dashboard_token_file = Some(PathBuf::from(value()?)),
                other => return Err(format!("unknown argument `{other}`")),
            }
        }
        let name: String = name.ok_or("`--name` is required")?;
        if name.is_empty() || name.contains(|c: char| c == ':' || c == ',' || c.is_whitespace()) {
            return Err(format!("the name {name:?} is empty or holds `:`, `,` or whitespace"));
        }
        if acceptors.is_empty() {
            acceptors.push(name.clone());
        }
        if lease_ms == 0 {
            return Err("`--lease-ms` must be above zero".to_owned());
        }
        if acceptors.iter().any(String::is_empty) {
            return Err("`--acceptors` holds an empty name".to_owned());
        }
        if dashboard.is_some() && cfg!(not(feature = "dashboard")) {
            return Err(
                "`--dashboard` needs a shoal-node built with the `dashboard` feature".to_owned()
            );
        }
        let dashboard_token = dashboard_token_file.as_deref().map(read_token_file).transpose()?;
        if dashboard_token.is_some() && dashboard.is_none() {
            return Err("`--dashboard-token-file` needs `--dashboard ADDR`".to_owned());
        }
        let quorum_hub_size = quorum_hub_size.unwrap_or(acceptors.len());
        if quorum_hub_size == 0 {
            return Err("`--quorum-hub-size` must be above zero".to_owned());
        }
        // The file wins over the variable, as a flag does over the environment.
        let key = match (key_file, key_var) {
            (Some(path), _) => read_key_file(&path)?,
            (None, Some(hex)) => hex.parse().map_err(|error| format!("$SHOAL_KEY: {error}"))?,
            (None, None) => {
                return Err("no cluster key: give `--key-file PATH` or set $SHOAL_KEY \
                            (`shoal-node generate-key` makes a key)"
                    .to_owned());
            }
        };
        Ok(Options {
            name,
            listen,
            seeds,
            key,
            heartbeat_ms,
            failure_timeout_ms,
            seed,
            acceptors,
            data_dir,
            lease_ms,
            quorum_hub_size,
            dashboard,
            dashboard_token,
        })
    }
}

/// The dashboard's token in the file at `path`. The error names the file, never its contents.
fn read_token_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        format!("cannot read the dashboard's token file {}: {error}", path.display())
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("the dashboard's token file {} is empty", path.display()));
    }
    Ok(token.to_owned())
}

/// The key in the file at `path`. The error names the file, never its contents.
fn read_key_file(path: &Path) -> Result<ClusterKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read the key file {}: {error}", path.display()))?;
    text.trim().parse().map_err(|error| format!("the key file {}: {error}", path.display()))
}

fn parse_value<T: FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value.parse().map_err(|_| format!("`{flag}` cannot take `{value}`"))
}

/// Starts the node, announces it, and serves commands until `quit` or the end of stdin.
async fn serve(options: Options) -> Result<(), String> {
    let node = Node::builder(options.name.clone(), options.key.clone())
        .listen(options.listen)
        .heartbeat(
            Duration::from_millis(options.heartbeat_ms),
            Duration::from_millis(options.failure_timeout_ms),
        )
        .seed(options.seed)
        .start()
        .await
        .map_err(|error| format!("cannot start the node: {error}"))?;
    // Subscribed before anything can connect, so the record starts with the first node up.
    let events = record_events(node.subscribe());
    let tally = Arc::new(Mutex::new(Tally::default()));
    let receiver = node.runtime().spawn(StormReceiver { tally: tally.clone() });
    node.runtime()
        .register(STORM, receiver.pid())
        .map_err(|error| format!("cannot register the storm receiver: {error}"))?;
    // The services are open before anything connects, so no peer's first message is missed.
    let broadcasts = Broadcasts::start(&node).await?;
    let paxos = start_paxos(&node, &options).await?;
    let checkers = Checkers::default();
    registry::register_worker(&node, &checkers)?;
    let registry = Registry::start(&paxos, registry::config(options.lease_ms))
        .await
        .map_err(|error| format!("cannot start the registry: {error}"))?;
    let groups = GroupCommands::start(&node).await?;
    let hub = HubCommands::start(&node, HUB, FACTORY, hub::config()).await?;
    let quorum_hub = HubCommands::start(
        &node,
        QUORUM_HUB,
        QUORUM_FACTORY,
        hub::quorum_config(options.quorum_hub_size),
    )
    .await?;
    let handover_hub = HandoverHub::register(&node)?;
    let dsup = DsupCommands::start(&node).await?;
    eprintln!("{}: listening on {}", node.name(), node.listen_addr());
    write_line(&format!("listening {} incarnation {}", node.listen_addr(), node.incarnation()));
    #[cfg(feature = "dashboard")]
    let _dashboard = {
        let parts = shoal::node::NodeParts::new(node.clone(), options.key.clone())
            .paxos(paxos.clone())
            .broadcast(broadcasts.service().clone())
            .registry(registry.clone())
            .groups(groups.groups().clone())
            .hub(hub.hub().clone())
            .hub(quorum_hub.hub().clone())
            .supervisor(dsup.supervisor().clone());
        let node = shoal::Node::from_parts(parts);
        Dashboard::serve(node, options.dashboard, options.dashboard_token.clone()).await?
    };
    for seed in options.seeds {
        tokio::spawn(join_seed(node.clone(), seed));
    }
    let storm = Arc::new(StormSenders::default());
    let mut control = Control {
        node,
        events,
        tally,
        storm,
        broadcasts,
        paxos,
        registry,
        checkers,
        lock_loop: LockLoop::default(),
        groups,
        hub,
        quorum_hub,
        handover_hub,
        dsup,
    };
    let mut commands = read_stdin_lines();
    while let Some(line) = commands.recv().await {
        let (id, command) = split_id(&line);
        if command.trim().is_empty() {
            continue;
        }
        let quitting = command.trim() == "quit";
        let answer = match control.handle(command).await {
            Ok(data) if data.is_empty() => "ok".to_owned(),
            Ok(data) => format!("ok {data}"),
            Err(message) => format!("error {message}"),
        };
        write_line(&match id {
            Some(id) => format!("{id} {answer}"),
            None => answer,
        });
        if quitting {
            control.node.leave().await;
            return Ok(());
        }
    }
    Ok(())
}

/// The facade's view of this node's layers, which answers the dashboard's RPC while it is
/// held, and the dashboard it serves, if asked for (with the metrics sampler behind its
/// `/metrics`, in a `prometheus` build).
#[cfg(feature = "dashboard")]
struct Dashboard {
    _node: shoal::Node,
    _serving: Option<shoal::dashboard::Dashboard>,
    #[cfg(feature = "prometheus")]
    _metrics: Option<shoal::metrics::Metrics>,
}

#[cfg(feature = "dashboard")]
impl Dashboard {
    /// Serves `node`'s dashboard on `listen`, if given, requiring `token` if given, and
    /// announces its address.
    async fn serve(
        node: shoal::Node,
        listen: Option<SocketAddr>,
        token: Option<String>,
    ) -> Result<Self, String> {
        use shoal::dashboard::DashboardConfig;

        let mut dashboard = Dashboard {
            _node: node.clone(),
            _serving: None,
            #[cfg(feature = "prometheus")]
            _metrics: None,
        };
        let Some(listen) = listen else { return Ok(dashboard) };
        let mut config = DashboardConfig::default().listen(listen);
        if let Some(token) = token {
            config = config.token(token);
        }
        #[cfg(feature = "prometheus")]
        {
            use shoal::metrics::{Metrics, MetricsConfig, prometheus_recorder};

            let prometheus =
                prometheus_recorder().map_err(|error| format!("cannot serve /metrics: {error}"))?;
            let sampled = MetricsConfig {
                hubs: node.hub_ids(),
                supervisors: node.supervisor_names(),
                ..MetricsConfig::default()
            };
            dashboard._metrics = Some(Metrics::start(&node, sampled));
            config = config.prometheus(prometheus);
        }
        let serving = shoal::dashboard::Dashboard::start(&node, config)
            .await
            .map_err(|error| format!("cannot start the dashboard: {error}"))?;
        eprintln!("{}: dashboard on http://{}/", node.name(), serving.addr());
        write_line(&format!("dashboard {}", serving.addr()));
        dashboard._serving = Some(serving);
        Ok(dashboard)
    }
}

/// Starts this node's Paxos service: its proposer always, its acceptor if it is in the set,
/// with a file store in `--data-dir` if one was given.
async fn start_paxos(node: &Node, options: &Options) -> Result<Paxos, String> {
    let mut config = PaxosConfig::new(options.acceptors.clone());
    config.seed = options.seed;
    // The cluster test starts every acceptor empty: they found the first epoch themselves.
    // Their file stores keep it across restarts, so a restarted node rejoins it.
    config.recovery = Recovery::NewEpoch;
    if let Some(dir) = &options.data_dir {
        config.storage = StorageConfig::File(dir.clone());
    }
    Paxos::start(node, config).await.map_err(|error| format!("cannot start Paxos: {error}"))
}

/// Reads stdin on a thread of its own, a line at a time.
///
/// When stdin closes (the driver is gone), the commands already read are still answered and
/// then [`serve`] returns; if that takes longer than [`EXIT_GRACE`] (a command is stuck), the
/// process exits anyway, whatever the node is doing.
fn read_stdin_lines() -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel(64);
    std::thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if sender.blocking_send(line).is_err() {
                return;
            }
        }
        drop(sender);
        eprintln!("shoal-node: stdin closed; exiting");
        std::thread::sleep(EXIT_GRACE);
        std::process::exit(0);
    });
    receiver
}

/// Writes one line to stdout. If stdout is gone, so is the driver: exit.
fn write_line(line: &str) {
    let mut stdout = io::stdout().lock();
    if writeln!(stdout, "{line}").and_then(|()| stdout.flush()).is_err() {
        std::process::exit(0);
    }
}

/// `"7 nodes"` → `(Some("7"), "nodes")`; a line without a leading number has no id.
fn split_id(line: &str) -> (Option<&str>, &str) {
    let line = line.trim_start();
    match line.split_once(char::is_whitespace) {
        Some((first, rest)) if first.bytes().all(|b| b.is_ascii_digit()) => (Some(first), rest),
        None if !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit()) => (Some(line), ""),
        _ => (None, line),
    }
}

/// Joins a seed node, retrying until it answers or [`SEED_JOIN_PERSISTENCE`] has passed.
async fn join_seed(node: Node, seed: SocketAddr) {
    let give_up = tokio::time::Instant::now() + SEED_JOIN_PERSISTENCE;
    loop {
        match node.join(seed).await {
            Ok(name) => {
                eprintln!("{}: joined {name} at {seed}", node.name());
                return;
            }
            Err(error) if tokio::time::Instant::now() < give_up => {
                eprintln!("{}: cannot join {seed} yet: {error}", node.name());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => {
                eprintln!("{}: giving up on joining {seed}: {error}", node.name());
                return;
            }
        }
    }
}

/// A node up or down event and the wall-clock time it was seen.
struct Seen {
    at_unix_ms: u64,
    event: NodeEvent,
}

/// Keeps every node event from `events`, stamped with the time it arrived.
fn record_events(mut events: broadcast::Receiver<NodeEvent>) -> Arc<Mutex<Vec<Seen>>> {
    let record = Arc::new(Mutex::new(Vec::new()));
    let kept = record.clone();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => {
                    let seen = Seen { at_unix_ms: unix_ms(), event };
                    eprintln!("{} {}", seen.at_unix_ms, describe_event(&seen));
                    lock(&kept).push(seen);
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    // The record is the test's evidence, so a gap in it must not pass silently.
                    eprintln!("shoal-node: missed {missed} node events");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    record
}

fn describe_event(seen: &Seen) -> String {
    match &seen.event {
        NodeEvent::Up { node, incarnation } => {
            format!("up:{node}:{incarnation}:{}", seen.at_unix_ms)
        }
        NodeEvent::Down { node, incarnation, reason } => {
            let reason = match reason {
                DownReason::HeartbeatTimeout(_) => "heartbeat-timeout",
                DownReason::ConnectionLost(_) => "connection-lost",
                DownReason::Disconnected => "disconnected",
                DownReason::Left => "left",
                DownReason::Restarted => "restarted",
                DownReason::NotConnected => "not-connected",
                _ => "other",
            };
            format!("down:{node}:{incarnation}:{}:{reason}", seen.at_unix_ms)
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The node and what the commands read and change.
struct Control {
    node: Node,
    events: Arc<Mutex<Vec<Seen>>>,
    tally: Arc<Mutex<Tally>>,
    storm: Arc<StormSenders>,
    broadcasts: Broadcasts,
    paxos: Paxos,
    registry: Registry,
    checkers: Checkers,
    lock_loop: LockLoop,
    groups: GroupCommands,
    /// Hub `cluster-test`, under the divergence strategy.
    hub: HubCommands,
    /// Hub `cluster-test-quorum`, under a majority quorum.
    quorum_hub: HubCommands,
    /// Hub `cluster-test-handover`, with hot migration, opened and closed by command.
    handover_hub: HandoverHub,
    /// Distributed supervisor `cluster-test` (hub `dsup/cluster-test`).
    dsup: DsupCommands,
}

impl Control {
    /// Runs one command; the answer's data, or why it failed.
    async fn handle(&mut self, command: &str) -> Result<String, String> {
        let words: Vec<&str> = command.split_whitespace().collect();
        match words.as_slice() {
            ["nodes"] => Ok(self.nodes()),
            ["join", addr] => {
                let addr: SocketAddr = parse_value("join", addr)?;
                self.node.join(addr).await.map_err(|error| format!("cannot join {addr}: {error}"))
            }
            ["fault", kind, peer, direction, rest @ ..] => {
                let fault = parse_fault(kind, rest)?;
                self.node.inject_fault(peer, parse_direction(direction)?, fault);
                Ok(String::new())
            }
            ["heal", peer] => {
                self.node.heal(peer);
                Ok(String::new())
            }
            ["heal-all"] => {
                self.node.heal_all();
                Ok(String::new())
            }
            ["storm", "start", messages] => self.start_storm(parse_value("storm start", messages)?),
            ["storm", "report"] => Ok(self.storm_report()),
            ["storm", "reset"] => self.reset_storm(),
            ["events"] => {
                let events = lock(&self.events);
                Ok(events.iter().map(describe_event).collect::<Vec<_>>().join(" "))
            }
            ["stats"] => Ok(self.stats()),
            ["counter", "incr", key, writer, seq] => {
                counter::increment(&self.paxos, key, writer, parse_value("counter incr", seq)?)
                    .await
            }
            ["counter", "get", key] => counter::get(&self.paxos, key).await,
            ["bcast", "send", number] => {
                self.broadcasts.send(parse_value("bcast send", number)?).await
            }
            ["bcast", "seen"] => Ok(self.broadcasts.seen()),
            ["bcast", "views"] => self.broadcasts.views().await,
            ["names", "call", restart, checker, names @ ..] => {
                registry::call_names(&self.registry, restart, checker, names).await
            }
            ["lock", "run", key, checker, hold_ms] => {
                self.lock_loop.run(&self.registry, key, checker, hold_ms, &self.checkers)
            }
            ["lock", "hold-next", ms] => self.lock_loop.hold_next(ms),
            ["lock", "report"] => self.lock_loop.report(),
            ["lock", "info", key] => registry::lock_info(&self.registry, key).await,
            ["lock", "stop"] => self.lock_loop.stop().await,
            ["groups", "join", group, count] => self.groups.join(&self.node, group, count),
            ["groups", "leave", group, count] => self.groups.leave(group, count),
            ["groups", "exit", group, count] => self.groups.exit(&self.node, group, count),
            ["groups", "members", names @ ..] => Ok(self.groups.members(names)),
            ["hub", words @ ..] => self.hub.handle(words).await,
            ["quorum-hub", words @ ..] => self.quorum_hub.handle(words).await,
            ["handover-hub", words @ ..] => self.handover_hub.handle(words).await,
            ["dsup", words @ ..] => self.dsup.handle(words).await,
            ["incarnation"] => Ok(self.node.incarnation().to_string()),
            ["addr"] => Ok(self.node.listen_addr().to_string()),
            ["quit"] => Ok("bye".to_owned()),
            _ => Err(format!("unknown command `{command}`")),
        }
    }

    fn nodes(&self) -> String {
        let mut up: Vec<String> = self
            .node
            .members()
            .into_iter()
            .filter(|spec| self.node.is_connected(&spec.name))
            .map(|spec| format!("{}:{}", spec.name, spec.incarnation))
            .collect();
        up.sort();
        up.join(" ")
    }

    fn stats(&self) -> String {
        let mailbox = self
            .node
            .runtime()
            .whereis(STORM)
            .and_then(|pid| self.node.runtime().mailbox_len(pid))
            .unwrap_or(0);
        let mut peers: Vec<String> = self
            .node
            .members()
            .into_iter()
            .filter_map(|spec| {
                let stats = self.node.peer_stats(&spec.name)?;
                Some(format!(
                    "{}:sent={},received={},queued={},reconnects={},dropped={}",
                    spec.name,
                    stats.frames_sent,
                    stats.frames_received,
                    stats.queued,
                    stats.reconnects,
                    stats.dropped_by_faults
                ))
            })
            .collect();
        peers.sort();
        format!("mailbox={mailbox} {}", peers.join(" "))
    }

    /// Starts one sender task per connected peer, each casting `1..=messages` in order.
    fn start_storm(&mut self, messages: u64) -> Result<String, String> {
        if self.storm.running.swap(true, Ordering::AcqRel) {
            return Err("a storm is running".to_owned());
        }
        let peers = self.node.nodes();
        let storm = &self.storm;
        storm.sent.store(0, Ordering::Relaxed);
        storm.errors.store(0, Ordering::Relaxed);
        storm.target.store(messages * peers.len() as u64, Ordering::Relaxed);
        storm.active.store(peers.len() as u64, Ordering::Relaxed);
        if peers.is_empty() {
            storm.running.store(false, Ordering::Release);
        }
        for peer in &peers {
            tokio::spawn(send_storm(self.node.clone(), peer.clone(), messages, storm.clone()));
        }
        Ok(format!("peers={}", peers.len()))
    }

    fn storm_report(&self) -> String {
        let storm = &self.storm;
        let received: Vec<String> = lock(&self.tally)
            .senders
            .iter()
            .map(|(name, t)| format!("{name}:{}:{}:{}", t.count, t.last, t.anomalies))
            .collect();
        format!(
            "sent={}/{} errors={} recv={}",
            storm.sent.load(Ordering::Relaxed),
            storm.target.load(Ordering::Relaxed),
            storm.errors.load(Ordering::Relaxed),
            received.join(",")
        )
    }

    fn reset_storm(&mut self) -> Result<String, String> {
        if self.storm.running.load(Ordering::Acquire) {
            return Err("a storm is running".to_owned());
        }
        lock(&self.tally).senders.clear();
        Ok(String::new())
    }
}

fn parse_direction(direction: &str) -> Result<Direction, String> {
    match direction {
        "in" => Ok(Direction::Inbound),
        "out" => Ok(Direction::Outbound),
        "both" => Ok(Direction::Both),
        other => Err(format!("direction `{other}` is not `in`, `out` or `both`")),
    }
}

fn parse_fault(kind: &str, args: &[&str]) -> Result<Fault, String> {
    match (kind, args) {
        ("cut", []) => Ok(Fault::Cut),
        ("drop", [probability]) => {
            let probability: f64 = parse_value("fault drop", probability)?;
            if !(0.0..=1.0).contains(&probability) {
                return Err(format!("probability {probability} is not within 0..=1"));
            }
            Ok(Fault::Drop(probability))
        }
        ("delay", [ms]) => Ok(Fault::Delay(Duration::from_millis(parse_value("fault delay", ms)?))),
        _ => Err(format!(
            "fault `{kind}` with {} arguments: use `cut`, `drop P` or `delay MS`",
            args.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use shoal::transport::ClusterKeyError;

    use super::*;

    /// A valid cluster key, as `$SHOAL_KEY` would hold it.
    const KEY_HEX: &str = "3d8f0b6a91c24e75a0f3d9182b6c4e07f5a19d3c62b8e04f7d1a95c3e6082bf4";

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    fn key() -> ClusterKey {
        KEY_HEX.parse().unwrap()
    }

    /// Options parsed with the test key in `$SHOAL_KEY`.
    fn parse(line: &str) -> Result<Options, String> {
        Options::parse(args(line), Some(KEY_HEX.to_owned()))
    }

    /// A file of this test process holding `contents`; `name` keeps tests that run in
    /// parallel apart.
    fn key_file(name: &str, contents: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("shoal-node-test-{}-{name}.key", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn options_take_every_flag() {
        let path = key_file("every-flag", &format!("  {KEY_HEX}\n"));
        let options = Options::parse(
            args(&format!(
                "--name a --listen 127.0.0.2:0 --join 127.0.0.3:4000 --join 127.0.0.4:4001 \
                 --key-file {} --heartbeat-ms 100 --failure-timeout-ms 900 --seed 7 \
                 --acceptors a,b --data-dir /tmp/a --lease-ms 900 --quorum-hub-size 5",
                path.display()
            )),
            None,
        );
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            options.unwrap(),
            Options {
                name: "a".to_owned(),
                listen: "127.0.0.2:0".parse().unwrap(),
                seeds: vec!["127.0.0.3:4000".parse().unwrap(), "127.0.0.4:4001".parse().unwrap()],
                key: key(),
                heartbeat_ms: 100,
                failure_timeout_ms: 900,
                seed: 7,
                acceptors: vec!["a".to_owned(), "b".to_owned()],
                data_dir: Some(PathBuf::from("/tmp/a")),
                lease_ms: 900,
                quorum_hub_size: 5,
                dashboard: None,
                dashboard_token: None,
            }
        );
    }

    /// `--dashboard` takes an address, in a build that can serve one, and is refused in
    /// another.
    #[test]
    fn the_dashboard_flag_needs_the_feature() {
        let parsed = parse("--name a --dashboard 127.0.0.1:0");
        if cfg!(feature = "dashboard") {
            assert_eq!(parsed.unwrap().dashboard, Some("127.0.0.1:0".parse().unwrap()));
        } else {
            assert!(parsed.unwrap_err().contains("`dashboard` feature"));
        }
        assert!(parse("--name a --dashboard nowhere").is_err());
        assert_eq!(parse("--name a").unwrap().dashboard, None);
    }

    /// `--dashboard-token-file` reads the token, trimmed, from its file; it needs
    /// `--dashboard`, and an empty or missing file is refused without showing its contents.
    #[test]
    fn the_dashboard_token_comes_from_its_file() {
        let path = key_file("dashboard-token", "  a-token-of-twenty-chars \n");
        let file = path.display();
        if cfg!(feature = "dashboard") {
            let parsed =
                parse(&format!("--name a --dashboard 127.0.0.1:0 --dashboard-token-file {file}"));
            assert_eq!(parsed.unwrap().dashboard_token.as_deref(), Some("a-token-of-twenty-chars"));
        }
        let alone = parse(&format!("--name a --dashboard-token-file {file}")).unwrap_err();
        assert!(alone.contains("needs `--dashboard ADDR`"), "{alone}");
        std::fs::write(&path, "\n").unwrap();
        let empty =
            parse(&format!("--name a --dashboard 127.0.0.1:0 --dashboard-token-file {file}"));
        std::fs::remove_file(&path).unwrap();
        let missing =
            parse(&format!("--name a --dashboard 127.0.0.1:0 --dashboard-token-file {file}"));
        if cfg!(feature = "dashboard") {
            assert!(empty.unwrap_err().contains("is empty"));
            assert!(missing.unwrap_err().contains("cannot read the dashboard's token file"));
        }
    }

    #[test]
    fn the_acceptor_set_defaults_to_this_node_alone() {
        let options = parse("--name a").unwrap();
        assert_eq!(options.acceptors, ["a"]);
        assert_eq!(options.data_dir, None);
        assert!(parse("--name a --acceptors a,,b").is_err());
    }

    #[test]
    fn the_quorum_hub_size_defaults_to_the_acceptor_count() {
        assert_eq!(parse("--name a").unwrap().quorum_hub_size, 1);
        assert_eq!(parse("--name a --acceptors a,b,c").unwrap().quorum_hub_size, 3);
        assert_eq!(
            parse("--name a --acceptors a,b --quorum-hub-size 5").unwrap().quorum_hub_size,
            5
        );
        assert!(parse("--name a --quorum-hub-size 0").is_err());
    }

    #[test]
    fn options_refuse_separators_in_names_and_bad_values() {
        assert!(parse("--name a:b").is_err());
        assert!(parse("--name a,").is_err());
        assert!(parse("--name a --listen nowhere").is_err());
        assert!(parse("--name a --heartbeat-ms").is_err());
        assert!(parse("--name a --lease-ms 0").is_err());
        assert!(parse("").is_err(), "no name");
    }

    #[test]
    fn generate_key_is_a_subcommand_of_its_own() {
        assert_eq!(Invocation::parse(args("generate-key"), None), Ok(Invocation::GenerateKey));
        // It needs no key, and ignores one in the environment.
        assert_eq!(
            Invocation::parse(args("generate-key"), Some("not a key".to_owned())),
            Ok(Invocation::GenerateKey)
        );
        assert!(Invocation::parse(args("generate-key --name a"), None).is_err());
        // Only in first place; elsewhere it is an unknown argument.
        assert!(
            Invocation::parse(args("--name a generate-key"), Some(KEY_HEX.to_owned())).is_err()
        );
        assert_eq!(
            Invocation::parse(args("--name a"), Some(KEY_HEX.to_owned())).map(|run| match run {
                Invocation::Run(options) => options.key,
                Invocation::GenerateKey => panic!("not asked for"),
            }),
            Ok(key())
        );
    }

    #[test]
    fn a_node_needs_a_key() {
        let error = Options::parse(args("--name a"), None).unwrap_err();
        assert!(error.contains("--key-file") && error.contains("$SHOAL_KEY"), "{error}");
    }

    /// A bad key is refused with the transport's reason, and never echoed back.
    #[test]
    fn a_bad_key_is_refused_with_its_reason() {
        let short = "0123abcd";
        let error = Options::parse(args("--name a"), Some(short.to_owned())).unwrap_err();
        assert_eq!(error, format!("$SHOAL_KEY: {}", ClusterKeyError::Length(8)));
        let not_random = "ab".repeat(32);
        let error = Options::parse(args("--name a"), Some(not_random.clone())).unwrap_err();
        assert_eq!(error, format!("$SHOAL_KEY: {}", ClusterKeyError::NotRandom(1)));
        assert!(!error.contains(&not_random));

        let path = key_file("bad-key", &format!("{}zz\n", &KEY_HEX[..62]));
        let error = Options::parse(args(&format!("--name a --key-file {}", path.display())), None)
            .unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(error, format!("the key file {}: {}", path.display(), ClusterKeyError::NotHex));
        assert!(!error.contains(&KEY_HEX[..62]));
    }

    #[test]
    fn the_key_file_wins_over_the_variable_and_must_exist() {
        let other = ClusterKey::generate();
        let path = key_file("wins", &other.to_hex());
        let options = parse(&format!("--name a --key-file {}", path.display()));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(options.unwrap().key, other);

        let error = parse(&format!("--name a --key-file {}", path.display())).unwrap_err();
        assert!(
            error.starts_with(&format!("cannot read the key file {}", path.display())),
            "{error}"
        );
    }

    #[test]
    fn a_leading_number_is_the_id() {
        assert_eq!(split_id("7 nodes"), (Some("7"), "nodes"));
        assert_eq!(split_id("12 storm start 5"), (Some("12"), "storm start 5"));
        assert_eq!(split_id("nodes"), (None, "nodes"));
        assert_eq!(split_id("3"), (Some("3"), ""));
    }

    #[test]
    fn faults_parse() {
        assert_eq!(parse_fault("cut", &[]), Ok(Fault::Cut));
        assert_eq!(parse_fault("drop", &["0.5"]), Ok(Fault::Drop(0.5)));
        assert_eq!(parse_fault("delay", &["20"]), Ok(Fault::Delay(Duration::from_millis(20))));
        assert!(parse_fault("drop", &["2"]).is_err());
        assert!(parse_fault("cut", &["1"]).is_err());
        assert_eq!(parse_direction("both"), Ok(Direction::Both));
        assert!(parse_direction("sideways").is_err());
    }
}
