//! `shoal`: a command-line inspector of a running Shoal cluster (feature `cli`).
//!
//! It reads the cluster through the JSON API of one node's dashboard ([`shoal::dashboard`],
//! which that node must serve), and shows it as tables, or as the API's own JSON with
//! `--json`:
//!
//! ```text
//! shoal [--url URL] [--token TOKEN] [--json] [--timeout SECONDS] COMMAND
//!
//!   status              the cluster in a few lines: nodes up and down, readiness, Paxos
//!                       quorum and acceptors, how many names, locks and groups, each hub
//!   nodes               each node: up or down, since when, incarnation, address
//!   names               registered names: process, node, fencing token
//!   locks               held locks: holder, node, fencing token, waiters
//!   groups              process groups and their members
//!   hub ID              hub ID's ring: its children per node
//!   top [--interval S] [--once] [--limit N]
//!                       the processes with the longest mailboxes over the cluster,
//!                       redrawn every S seconds (2 by default) until Ctrl-C
//! ```
//!
//! - `--url` (or `$SHOAL_URL`): where the dashboard is, `http://HOST:PORT` (a path after it is
//!   a prefix the API is served under, for a dashboard behind a proxy). Plain HTTP only.
//! - `--token` (or `$SHOAL_TOKEN`): the dashboard's token, sent as `Authorization: Bearer`.
//!   Prefer the variable: a command line is visible to every user of the machine.
//! - `--json`: prints the answer of the API (pretty): `names` and `locks` print
//!   `/api/registry`, `hub ID` that hub's object of `/api/hubs`, `top` one `/api/cluster` per
//!   refresh, and `status` an object of the answers it read, keyed by their paths' last part
//!   (`node`, `nodes`, `paxos`, `registry`, `groups`, `hubs`).
//! - `--timeout` (10 seconds by default): the most each request to the API may take.
//!
//! For example, against a node whose dashboard listens on port 8080:
//!
//! ```text
//! $ export SHOAL_URL=http://127.0.0.1:8080
//! $ shoal status
//! node    a at 127.0.0.1:7000 (ready, full_mesh membership, 14 processes)
//! nodes   3 up, 0 down
//! paxos   quorum; acceptors a, b, c (3, version 3)
//! names   1
//! locks   1
//! groups  1
//! hubs    jobs: 12 children on 3 of 3 nodes
//! $ shoal locks
//! LOCK     HOLDER             NODE  TOKEN  HELD  WAITERS
//! nightly  <8601ec8c.6.beb2>  a         7     1        0
//! $ shoal hub jobs
//! jobs: 12 children on 3 of 3 nodes
//! NODE  IN RING  RUNNING  OTHER
//! a     yes            4      0
//! b     yes            5      0
//! c     yes            3      0
//! (OTHER: copies restarting, moving or suspended there)
//! $ shoal hub jobs --json | jq '.per_node.items[] | {node, running}'
//! ```
//!
//! **What it is not.** It changes nothing (every request is a `GET`), joins no cluster and
//! holds no connection between requests; it sees what the node behind `--url` sees (names,
//! locks and the cluster view ask every member; nodes, groups and hubs are that node's view),
//! and `top` sees the longest mailboxes each node reports (at most 100 each).
//!
//! Exit status: 0 when the answer was shown, 1 when it could not be (the message on stderr
//! says why: nothing listens at the URL, a token is needed or refused, an unknown hub, an
//! answer that is not the API's), 2 for a command line it does not understand.

mod api;
mod http;
mod render;

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use serde_json::Value;
use shoal::dashboard::MAX_TOP;
use shoal::dashboard::api::HubsView;

use crate::api::{ApiError, Client};
use crate::http::{Url, UrlError};

/// Inspects a running Shoal cluster through a node's dashboard JSON API.
#[derive(Debug, Parser)]
#[command(name = "shoal", version)]
struct Cli {
    /// The dashboard: http://HOST:PORT.
    #[arg(long, env = "SHOAL_URL", global = true, value_name = "URL")]
    url: Option<String>,
    /// The dashboard's token, sent as `Authorization: Bearer` (prefer $SHOAL_TOKEN: a command
    /// line is visible to other users).
    #[arg(long, env = "SHOAL_TOKEN", global = true, hide_env_values = true, value_name = "TOKEN")]
    token: Option<String>,
    /// Prints the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// The most one request may take, in seconds.
    #[arg(long, global = true, default_value = "10", value_parser = seconds, value_name = "SECONDS")]
    timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The cluster in a few lines: nodes, readiness, quorum, acceptors, names, groups, hubs.
    Status,
    /// Each node: up or down, since when, incarnation, address.
    Nodes,
    /// Registered names: process, node, fencing token.
    Names,
    /// Held locks: holder, node, fencing token.
    Locks,
    /// Process groups and their members.
    Groups,
    /// A hub's ring: its children per node.
    Hub {
        /// The hub's id.
        id: String,
    },
    /// The processes with the longest mailboxes over the cluster, redrawn until Ctrl-C.
    Top {
        /// Seconds between refreshes.
        #[arg(long, default_value = "2", value_parser = seconds, value_name = "SECONDS")]
        interval: Duration,
        /// Shows the list once and exits.
        #[arg(long)]
        once: bool,
        /// The most processes listed.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

/// A number of seconds, at least a tenth and at most a day.
fn seconds(text: &str) -> Result<Duration, String> {
    let value: f64 = text.parse().map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(0.1..=86_400.0).contains(&value) {
        return Err(format!("{value} seconds is not between 0.1 and 86400"));
    }
    Ok(Duration::from_secs_f64(value))
}

/// What stopped a command before it showed its answer.
#[derive(Debug, thiserror::Error)]
enum CliError {
    /// No `--url` and no `$SHOAL_URL`.
    #[error("which dashboard? pass --url http://HOST:PORT or set SHOAL_URL")]
    NoUrl,
    /// The URL is not one the client can use.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// The API gave no answer to show.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The runtime could not start.
    #[error("cannot start: {0}")]
    Runtime(io::Error),
    /// Standard output failed (other than closed by its reader, which ends the command
    /// quietly).
    #[error("cannot write the answer: {0}")]
    Output(io::Error),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Output(error)) if error.kind() == io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("shoal: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    let url = Url::parse(cli.url.as_deref().ok_or(CliError::NoUrl)?)?;
    let client = Client::new(url, cli.token.clone(), cli.timeout);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    runtime.block_on(command(&client, &cli))
}

/// Runs `cli`'s command against `client`'s dashboard.
async fn command(client: &Client, cli: &Cli) -> Result<(), CliError> {
    let output = if cli.json { Output::Json } else { Output::Table };
    match &cli.command {
        Command::Status => status(client, output).await,
        Command::Nodes => {
            let json = client.get("/api/nodes").await?;
            show(output, &json, || Ok(render::nodes(&client.parse(NODES, &json)?, now_ms())))
        }
        Command::Names => {
            let json = client.get(REGISTRY).await?;
            show(output, &json, || Ok(render::names(&client.parse(REGISTRY, &json)?)))
        }
        Command::Locks => {
            let json = client.get(REGISTRY).await?;
            show(output, &json, || Ok(render::locks(&client.parse(REGISTRY, &json)?)))
        }
        Command::Groups => {
            let json = client.get("/api/groups").await?;
            show(output, &json, || Ok(render::groups(&client.parse("/api/groups", &json)?)))
        }
        Command::Hub { id } => hub(client, output, id).await,
        Command::Top { interval, once, limit } => {
            let refresh = if *once { Refresh::Once } else { Refresh::Every(*interval) };
            top(client, output, refresh, *limit).await
        }
    }
}

const NODES: &str = "/api/nodes";
const REGISTRY: &str = "/api/registry";
const CLUSTER: &str = "/api/cluster";

/// A table, or the API's JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Table,
    Json,
}

/// Prints `json` as it is, or the table `render` makes of it.
fn show(
    output: Output,
    json: &Value,
    render: impl FnOnce() -> Result<String, ApiError>,
) -> Result<(), CliError> {
    let text = match output {
        Output::Json => pretty(json),
        Output::Table => render()?,
    };
    print(&text)
}

fn pretty(json: &Value) -> String {
    // A `Value` always serialises; the fallback is its compact form, never a panic.
    let mut text = serde_json::to_string_pretty(json).unwrap_or_else(|_| json.to_string());
    text.push('\n');
    text
}

fn print(text: &str) -> Result<(), CliError> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).map_err(CliError::Output)
}

/// Milliseconds since the Unix epoch, now (0 on a clock before it).
fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// `shoal status`: six answers, read one after the other, shown as one.
async fn status(client: &Client, output: Output) -> Result<(), CliError> {
    let paths = ["/api/node", NODES, "/api/paxos", REGISTRY, "/api/groups", "/api/hubs"];
    let mut answers = serde_json::Map::new();
    for path in paths {
        let key = path.rsplit('/').next().unwrap_or(path);
        answers.insert(key.to_owned(), client.get(path).await?);
    }
    let all = Value::Object(answers);
    show(output, &all, || {
        let node = client.parse(paths[0], &all["node"])?;
        let nodes = client.parse(paths[1], &all["nodes"])?;
        let paxos = client.parse(paths[2], &all["paxos"])?;
        let registry = client.parse(paths[3], &all["registry"])?;
        let groups = client.parse(paths[4], &all["groups"])?;
        let hubs = client.parse(paths[5], &all["hubs"])?;
        let parts = render::StatusParts {
            node: &node,
            nodes: &nodes,
            paxos: &paxos,
            registry: &registry,
            groups: &groups,
            hubs: &hubs,
            now_ms: now_ms(),
        };
        Ok(render::status(&parts))
    })
}

/// `shoal hub ID`.
async fn hub(client: &Client, output: Output, id: &str) -> Result<(), CliError> {
    let path = "/api/hubs";
    let json = client.get(path).await?;
    let hubs: HubsView = client.parse(path, &json)?;
    let Some(hub) = hubs.find(id) else {
        let known = hubs.all().map(|hub| hub.id.clone()).collect();
        return Err(ApiError::UnknownHub { id: id.to_owned(), known }.into());
    };
    // The hub's own object as the dashboard wrote it, among the hubs or the supervisors'.
    let row = ["hubs", "supervisors"]
        .into_iter()
        .filter_map(|list| json[list].as_array())
        .flatten()
        .find(|row| row["id"] == id)
        .unwrap_or(&Value::Null);
    show(output, row, || Ok(render::hub(hub)))
}

/// How often `top` shows the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refresh {
    Once,
    Every(Duration),
}

/// `shoal top`: the first failure ends it; once it has shown the list, a failure is shown in
/// its place and the next refresh tries again (a node that restarts does not end it).
async fn top(
    client: &Client,
    output: Output,
    refresh: Refresh,
    limit: usize,
) -> Result<(), CliError> {
    let redraw = output == Output::Table && io::stdout().is_terminal();
    let mut shown = false;
    // Each node's `limit` longest (as many as a dashboard lists) hold the cluster's `limit`
    // longest.
    let path = format!("{CLUSTER}?top={}", limit.clamp(1, MAX_TOP));
    loop {
        let answer = client.get(&path).await;
        let text = match answer {
            Ok(json) => {
                let table = || Ok(render::top(&client.parse(&path, &json)?, limit));
                match output {
                    Output::Json => pretty(&json),
                    Output::Table => table().map_err(CliError::Api)?,
                }
            }
            Err(error) if shown => format!("shoal: {error} (trying again)\n"),
            Err(error) => return Err(error.into()),
        };
        let Refresh::Every(interval) = refresh else { return print(&text) };
        let stamp = format!("{} (every {:?}; Ctrl-C ends)\n", render::utc_time(now_ms()), interval);
        if redraw {
            // Clear the screen, cursor home: the list is redrawn in place.
            print(&format!("\x1b[2J\x1b[H{stamp}{text}"))?;
        } else if output == Output::Table {
            print(&format!("{stamp}{text}\n"))?;
        } else {
            print(&text)?;
        }
        shown = true;
        tokio::time::sleep(interval).await;
    }
}
