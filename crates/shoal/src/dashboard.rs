//! A live web view of the cluster, and the JSON API under it (feature `dashboard`).
//!
//! A [`Dashboard`] serves one self-contained HTML page and a read-only JSON API over HTTP/1
//! from a running [`Node`]: the nodes and their up/down history, the processes with the
//! largest mailboxes, registry names and lock holders with their fencing tokens, process
//! groups, each hub's children per node, and Paxos and transport figures as small charts
//! that update every second. Other tools (a command-line inspector, a monitoring probe) read
//! the same JSON.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use shoal::dashboard::{Dashboard, DashboardConfig};
//!
//! let node = shoal::Node::start("a").await?;
//! // Loopback and a free port by default: no token needed.
//! let dashboard = Dashboard::start(&node, DashboardConfig::default()).await?;
//! println!("open http://{}/", dashboard.addr());
//!
//! // Elsewhere than loopback, a token is required, and every request must carry it.
//! let listen = "0.0.0.0:8080".parse()?;
//! let config = DashboardConfig::default().listen(listen).token("a-long-random-secret-of-ours");
//! let open = Dashboard::start(&node, config).await?;
//! # let _ = open;
//! dashboard.stop().await;
//! # Ok(()) }
//! ```
//!
//! **What it is not.** It changes nothing in the cluster (every endpoint is a `GET`), it keeps
//! no state on disk, and it is not a metrics store: its charts show the figures the layers
//! keep (`PeerStats`, `Paxos::stats`, the quorum and the acceptor set) as sampled once a
//! second over the last minute. For history, give it a Prometheus recorder
//! ([`DashboardConfig::prometheus`], feature `prometheus`) and scrape `GET /metrics`, the text
//! of every figure [`crate::metrics`] publishes. It speaks HTTP/1.1 only, without TLS: bound elsewhere than loopback, put it behind a proxy that
//! terminates TLS, or the token crosses the network in the clear.
//!
//! # Access
//!
//! The dashboard listens on [`DashboardConfig::listen`], `127.0.0.1:0` by default (loopback,
//! a free port: [`Dashboard::addr`] says which). Bound to any other address it refuses to start
//! without a [token](DashboardConfig::token) ([`DashboardError::TokenRequired`]), and then every
//! request must carry it, as `Authorization: Bearer TOKEN` or as `?token=TOKEN` in the query
//! (for opening the page in a browser; the page passes it on to the API in the header). The
//! comparison takes the same time wherever the given token differs. A request without the
//! token gets `401`. Without a token (loopback), a request must name a loopback host in its
//! `Host` header (`localhost`, `127.x.y.z`, `[::1]`), so that a web page elsewhere cannot read
//! the API through a host name that resolves to loopback (DNS rebinding): others get `403`.
//!
//! # Limits
//!
//! A slow client holds the server for a bounded time: it serves at most
//! [`max_connections`](DashboardConfig::max_connections) connections at once (64 by default;
//! connections past them wait, unaccepted, in the listener's backlog until one closes); a
//! connection that has not sent a whole request head within
//! [`header_read_timeout`](DashboardConfig::header_read_timeout) (5 s by default; the same
//! bound runs again between the requests of a kept-alive connection) is closed; and a request
//! not answered within [`request_timeout`](DashboardConfig::request_timeout) (10 s by default)
//! gets `503` with `{"error": "..."}`. A connection whose answer has waited
//! [`write_timeout`](DashboardConfig::write_timeout) (10 s by default) for the client to read
//! what was sent before is closed. Every answer is bounded (see below). Not bounded: many
//! clients together can keep every place taken, each for at most one of those timeouts at a
//! time.
//!
//! # The cluster view
//!
//! `GET /api/cluster` gathers every node's summary ([`/api/node`](#get-apinode) and its
//! processes) through the transport RPC `shoal.dashboard` (see [`RPC`]). Every [`Node`] of a
//! build with this feature answers it from its start until it stops, whether it serves a page
//! or not (the handler holds the node weakly: it does not keep the node alive). A node of a
//! build without the feature shows as not answering.
//!
//! # The JSON API
//!
//! Every answer is a JSON object, of the type in [`api`] named after its path
//! ([`api::NodeView`] for `/api/node`, ...): a client in Rust reads them with `serde_json`, as
//! the `shoal` inspector does. Lists are bounded: each is an object
//! `{"items": [...], "total": N, "truncated": bool}`, with at most a fixed number of items
//! (said below), `total` the number there were and `truncated` true when some were left out.
//! Text that comes from users (names, keys, group and child ids) is cut to
//! [`MAX_TEXT_CHARS`] characters. Pids are written as `"<node.id.incarnation>"`, times as
//! milliseconds since the Unix epoch (`at_ms`). A bad query parameter gets `400` with
//! `{"error": "..."}`; an unknown path `404`.
//!
//! ## `GET /api/node`
//!
//! This node: `name`, `incarnation` (larger at every start), `started_at_ms` (when its
//! `shoal::Node` was made, on its clock), `listen_addr` (the transport's),
//! `ready` ([`Node::is_ready`]), `membership` (`"full_mesh"`, `"static"` or `"managed"`),
//! `connected` (a list of the names of the nodes it is connected to, at most
//! [`MAX_LIST_ITEMS`]), `members` (how many members it knows, connected or not),
//! `processes` (how many live here), and `layers`, an object of booleans saying which layers
//! run here: `paxos`, `broadcast`, `registry`, `groups`.
//!
//! ## `GET /api/nodes`
//!
//! The nodes this one knows and their history: `node` (this node's name), `events_lagged`
//! (node events missed because the recorder fell behind; after a miss the state is read again
//! and a change found is recorded with reason `"resynchronised"`), and `nodes`, a list (at most
//! [`MAX_LIST_ITEMS`]) of objects sorted by name: `name`, `this_node` (true for this node),
//! `up` (connected now; this node is always up), `incarnation` (the latest seen, `null` if
//! none), `listen_addr` (`null` if unknown), and `history`, a list of the latest
//! [`HISTORY_PER_NODE`] changes, oldest first: `at_ms`, `up`, `incarnation` and `reason` (why
//! it went down, or `"connected when the dashboard started"`; `null` for a plain up). The
//! history starts when the dashboard starts, and keeps the latest [`HISTORY_EVENTS`] changes
//! of all nodes together (a node that left shows here while a change of it is kept).
//!
//! ## `GET /api/processes?top=N`
//!
//! `node`, `count` (live processes) and `top`, the `N` processes with the longest mailboxes,
//! longest first (`N` from 1 to [`MAX_TOP`], 10 by default; anything else is a `400`), each
//! `pid`, `name` (its local registered name, or `null`) and `mailbox_len`.
//!
//! ## `GET /api/registry`
//!
//! `running` (false if the registry is off here, then the rest is empty), `error` (`null`,
//! or why the listing did not finish within its bound), `names`: a list of `name`, `host`,
//! `pid` (`null` while it starts), `token` (its fencing token) and `restart`
//! (`"temporary"` or `"permanent"`); `locks`: a list of `key`, `holder` (the pid), `host` (the
//! holder's node), `token` (the fencing token), `count` (acquisitions not yet released) and
//! `waiters`; `unreachable`: a list of the members that did not answer. Each list holds at
//! most [`MAX_LIST_ITEMS`]. The listing asks every member, so it is taken at most once a
//! second and shared by the requests of that second.
//!
//! ## `GET /api/groups`
//!
//! `running` and `groups`, a list (at most [`MAX_LIST_ITEMS`]) of `name`, `nodes` (a list of
//! the nodes with members) and `members`, a list (at most [`MAX_GROUP_MEMBERS`]) of `pid` and
//! `node` (`null` if that node is not known here).
//!
//! ## `GET /api/hubs`
//!
//! `hubs`, a list of the hubs this node runs ([`Node::hub_ids`], in id order, at most
//! [`MAX_HUBS`]), each `id`, `running` (false if it stopped since it was listed), `nodes` (the
//! ring's nodes as this node sees them), `has_quorum`, `partitioned`, `children` (how many children it knows),
//! `per_node`, a list of `node`, `running` (copies running there) and `other` (copies
//! restarting, moving or suspended there), one per ring node and any other node that holds a
//! copy; `unplaced` (children no node runs now), and `sample`, a list (at most
//! [`MAX_HUB_CHILDREN`]) of `child`, `node` (`null` if unplaced) and `status` (`"running"`,
//! `"restarting"`, `"moving"`, `"unknown"` or `"suspended"`). `supervisors`: the same for the
//! distributed supervisors this node runs (`Node::supervisor_names`, in name order, at most
//! [`MAX_HUBS`]), each row its supervisor's hub with `supervisor` (the supervisor's name)
//! added; `id` is then the hub's id. `total_hubs` and `total_supervisors` say how many there
//! were before the cap.
//!
//! ## `GET /api/paxos`
//!
//! `running`, `error` (`null`, or why the acceptor set could not be read), `acceptors` (a
//! list of names), `version` (of the acceptor configuration), `has_quorum`, `voting` (whether
//! this node's acceptor votes), `figures` (`null` when Paxos does not run: this node's
//! proposer since it started, `Paxos::stats`): `rounds` (phase 1 and phase 2), `conflicts`
//! (rounds lost to a higher ballot), `round_timeouts`, `fast_decisions`, `slow_decisions`,
//! `operations` (changes timed), `latency_p50_us` and `latency_p99_us` (the upper bound of the
//! latency bucket that holds the quantile, `null` with no change or above the largest bound);
//! and `samples`, a list of the latest [`SAMPLES`] once-a-second samples, oldest first:
//! `at_ms`, `has_quorum`, `acceptors` (how many), `rounds` and `conflicts` (since Paxos
//! started: a chart shows their differences), and `latency_p99_us` of the changes since the
//! sample before.
//!
//! ## `GET /metrics`
//!
//! With a recorder given ([`DashboardConfig::prometheus`]), its text in Prometheus's
//! exposition format 0.0.4 (`text/plain`); without one, `404`.
//!
//! ## `GET /api/transport`
//!
//! `node`; `peers`, a list (at most [`MAX_LIST_ITEMS`]) sorted by name of `node`, `up`,
//! `protocol_version` (`null` before a handshake), and the peer's counters: `frames_sent`,
//! `bytes_sent`, `frames_received`, `bytes_received`, `queued` (casts and calls waiting now),
//! `reconnects` and `dropped_by_faults`; `totals`, the same counters summed over the peers (no
//! `node`, `up`, `protocol_version`); and `samples`, the latest [`SAMPLES`] once-a-second
//! totals, oldest first, each with its `at_ms` (a chart shows the differences between them).
//!
//! ## `GET /api/cluster?top=N`
//!
//! `node` (the node that asked) and `nodes`, a list (at most [`MAX_CLUSTER_NODES`]) sorted by
//! name of this node and every member, each `name`, `answering` (whether it answered within
//! [`CLUSTER_TIMEOUT`]), `error` (why not, or `null`) and `summary` (`null` if not
//! answering): `node` (its [`/api/node`](#get-apinode)) and `processes` (its
//! [`/api/processes?top=N`](#get-apiprocessestopn), `N` from 1 to [`MAX_TOP`], 5 by default;
//! anything else is a `400`). Taken at most once a second for a given `N`.
//!
//! ## `GET /`
//!
//! The page: one HTML document with its CSS and JavaScript inline (no external fetch), which
//! polls the API every second. Its parts have stable ids (`node`, `nodes`, `cluster`,
//! `processes`, `names`, `locks`, `groups`, `hubs`, `paxos`, `transport`, and `ready` and
//! `status` in the header), its rows data attributes (`data-node`, `data-up`,
//! `data-answering` in the cluster view, `data-state` (`"up"` or `"down"`) on the rows of the
//! node list, `data-pid`, `data-name`, `data-lock` with `data-token`, `data-group`,
//! `data-hub` (and `data-supervisor` for a supervisor's hub) with a row per node carrying
//! `data-running`), its
//! charts (`chart-quorum`, `chart-acceptors`, `chart-bytes-out`, `chart-bytes-in`,
//! `chart-queued`) their latest value in `data-last`, and `<body>` counts its polls in
//! `data-polls`, for a browser test to find and wait on.

pub mod api;
mod http;
mod page;
mod views;
mod watch;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch as signal;
use tokio::task::JoinHandle;

use crate::Node;

// The handles go between tasks and threads (a build error otherwise).
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Dashboard>();
    send_and_sync::<DashboardConfig>();
    send_and_sync::<DashboardError>();
};

/// The transport RPC through which a dashboard asks each node for its summary (`GET
/// /api/cluster`); every [`Node`] registers it as it starts.
pub const RPC: &str = "shoal.dashboard";

/// The most items in one list of an answer.
pub const MAX_LIST_ITEMS: usize = 500;

/// The most characters of one piece of text that came from users (a name, a key, an id).
pub const MAX_TEXT_CHARS: usize = 200;

/// The largest `top` of `GET /api/processes`.
pub const MAX_TOP: usize = 100;

/// The most members listed for one process group.
pub const MAX_GROUP_MEMBERS: usize = 50;

/// The most children listed for one hub (`sample`); the counts cover them all.
pub const MAX_HUB_CHILDREN: usize = 200;

/// The most hubs a dashboard shows, and the most distributed supervisors.
pub const MAX_HUBS: usize = 32;

/// The most nodes asked for their summary by `GET /api/cluster`.
pub const MAX_CLUSTER_NODES: usize = 64;

/// How long `GET /api/cluster` waits for a node's summary.
pub const CLUSTER_TIMEOUT: Duration = Duration::from_secs(1);

/// Node up/down changes kept, all nodes together.
pub const HISTORY_EVENTS: usize = 512;

/// Changes shown per node in `GET /api/nodes`.
pub const HISTORY_PER_NODE: usize = 20;

/// Once-a-second samples kept for the charts.
pub const SAMPLES: usize = 120;

/// The shortest token accepted, in bytes.
pub const MIN_TOKEN_LEN: usize = 16;

/// The most connections served at once, by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// How long a client may take to send a request's head, by default.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a request may take to be answered, by default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an answer may wait for a client that does not read it, by default.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`Dashboard::stop`] lets open connections finish.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// How a [`Dashboard`] is served. Built from [`DashboardConfig::default`].
#[derive(Clone)]
pub struct DashboardConfig {
    listen: SocketAddr,
    token: Option<String>,
    limits: Limits,
    #[cfg(feature = "prometheus")]
    prometheus: Option<crate::metrics::Prometheus>,
}

/// What one client may take of the server (module docs, "Limits").
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) header_read_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) write_timeout: Duration,
}

impl Default for DashboardConfig {
    /// Loopback, a free port, no token, the default limits.
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            token: None,
            limits: Limits {
                max_connections: DEFAULT_MAX_CONNECTIONS,
                header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
                request_timeout: DEFAULT_REQUEST_TIMEOUT,
                write_timeout: DEFAULT_WRITE_TIMEOUT,
            },
            #[cfg(feature = "prometheus")]
            prometheus: None,
        }
    }
}

impl fmt::Debug for DashboardConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is a secret: say only whether there is one.
        f.debug_struct("DashboardConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("limits", &self.limits)
            .finish()
    }
}

impl DashboardConfig {
    /// Where to listen (`127.0.0.1:0` by default). Any address but a loopback one needs a
    /// [token](DashboardConfig::token).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// The token every request must carry (at least [`MIN_TOKEN_LEN`] bytes of visible
    /// ASCII, no spaces). With it, loopback requests need it too.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The most connections served at once ([`DEFAULT_MAX_CONNECTIONS`] by default, at least
    /// 1): the next wait in the listener's backlog, not accepted, until one closes.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.limits.max_connections = max;
        self
    }

    /// How long a connection may take to send a whole request head, from when it opens or
    /// its previous answer was sent, before it is closed ([`DEFAULT_HEADER_READ_TIMEOUT`] by
    /// default; above zero).
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.limits.header_read_timeout = timeout;
        self
    }

    /// How long a request may take to be answered before it gets `503`
    /// ([`DEFAULT_REQUEST_TIMEOUT`] by default; above zero).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.limits.request_timeout = timeout;
        self
    }

    /// How long a write of an answer may wait for the client to read what was sent before,
    /// before its connection is closed ([`DEFAULT_WRITE_TIMEOUT`] by default; above zero): a
    /// client that asks and never reads holds its connection for at most this long.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.limits.write_timeout = timeout;
        self
    }

    /// Serves `prometheus`'s text at `GET /metrics` (feature `prometheus`), behind the same
    /// access rules as the rest; without it, `/metrics` is `404`.
    ///
    /// ```no_run
    /// # async fn run(node: shoal::Node) -> Result<(), Box<dyn std::error::Error>> {
    /// use shoal::dashboard::{Dashboard, DashboardConfig};
    /// use shoal::metrics::{Metrics, MetricsConfig, prometheus_recorder};
    ///
    /// let prometheus = prometheus_recorder()?;
    /// let _metrics = Metrics::start(&node, MetricsConfig::default());
    /// let dashboard = Dashboard::start(&node, DashboardConfig::default().prometheus(prometheus)).await?;
    /// println!("scrape http://{}/metrics", dashboard.addr());
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "prometheus")]
    pub fn prometheus(mut self, prometheus: crate::metrics::Prometheus) -> Self {
        self.prometheus = Some(prometheus);
        self
    }

    fn validate(&self) -> Result<(), DashboardError> {
        match &self.token {
            None if !self.listen.ip().is_loopback() => {
                Err(DashboardError::TokenRequired(self.listen))
            }
            Some(token) if token.len() < MIN_TOKEN_LEN => {
                Err(DashboardError::InvalidToken("shorter than 16 bytes"))
            }
            Some(token) if !token.bytes().all(|byte| byte.is_ascii_graphic()) => {
                Err(DashboardError::InvalidToken("not visible ASCII without spaces"))
            }
            _ if self.limits.max_connections == 0 => {
                Err(DashboardError::InvalidConfig("max_connections is 0".to_owned()))
            }
            _ if self.limits.header_read_timeout.is_zero() => {
                Err(DashboardError::InvalidConfig("header_read_timeout is 0".to_owned()))
            }
            _ if self.limits.request_timeout.is_zero() => {
                Err(DashboardError::InvalidConfig("request_timeout is 0".to_owned()))
            }
            _ if self.limits.write_timeout.is_zero() => {
                Err(DashboardError::InvalidConfig("write_timeout is 0".to_owned()))
            }
            _ => Ok(()),
        }
    }
}

/// A dashboard that did not start. Nothing was left running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DashboardError {
    /// It was to listen on an address other than loopback without a token.
    #[error("a dashboard on {0}, which is not a loopback address, needs a token")]
    TokenRequired(SocketAddr),
    /// The token is not one it accepts.
    #[error("the dashboard's token is {0}")]
    InvalidToken(&'static str),
    /// The configuration is inconsistent.
    #[error("invalid dashboard configuration: {0}")]
    InvalidConfig(String),
    /// The address could not be bound.
    #[error("the dashboard cannot listen on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// The web view of one node, served until [`Dashboard::stop`] or until it is dropped. See the
/// [module docs](self).
pub struct Dashboard {
    addr: SocketAddr,
    shared: Arc<views::Shared>,
    stop: signal::Sender<bool>,
    server: Option<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dashboard")
            .field("addr", &self.addr)
            .field("node", &self.shared.node.name())
            .finish_non_exhaustive()
    }
}

impl Dashboard {
    /// Starts serving the web view of `node` on `config`'s address.
    ///
    /// # Errors
    ///
    /// [`DashboardError::TokenRequired`], [`DashboardError::InvalidToken`] or
    /// [`DashboardError::InvalidConfig`] for a configuration it refuses, and
    /// [`DashboardError::Bind`] if the address cannot be bound.
    pub async fn start(node: &Node, config: DashboardConfig) -> Result<Dashboard, DashboardError> {
        config.validate()?;
        let listener = tokio::net::TcpListener::bind(config.listen).await.map_err(|error| {
            DashboardError::Bind { addr: config.listen, reason: error.to_string() }
        })?;
        let addr = listener.local_addr().map_err(|error| DashboardError::Bind {
            addr: config.listen,
            reason: error.to_string(),
        })?;
        #[cfg_attr(not(feature = "prometheus"), expect(unused_mut, reason = "set with prometheus"))]
        let mut shared = views::Shared::new(node.clone(), config.token);
        #[cfg(feature = "prometheus")]
        {
            shared.prometheus = config.prometheus;
        }
        let shared = Arc::new(shared);
        let tasks = watch::start(&shared);
        let (stop, stopped) = signal::channel(false);
        let server = tokio::spawn(http::serve(listener, shared.clone(), config.limits, stopped));
        tracing::info!(node = %node.name(), %addr, "dashboard serving");
        Ok(Dashboard { addr, shared, stop, server: Some(server), tasks })
    }

    /// The address it serves on (with the port picked when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving: no new connection is taken, open ones get a second to
    /// finish and are then closed; the recorder of node events stops. The node goes on
    /// answering [`RPC`].
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(mut server) = self.server.take()
            && self.shared.node.runtime().clock().timeout(STOP_GRACE, &mut server).await.is_err()
        {
            server.abort();
        }
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(server) = self.server.take() {
            server.abort();
        }
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Has `node` answer [`RPC`] until it stops. The handler lives in the transport, which the
/// node holds: it holds the node weakly, so that the node does not hold itself.
pub(crate) fn answer_summaries(node: &Node) {
    let weak = node.downgrade();
    let registered = node.transport().register_rpc(RPC, move |request: views::SummaryRequest| {
        let node = weak.upgrade();
        async move { node.map(|node| views::summary(&node, request.top)) }
    });
    // Only a second node made of the same transport's parts finds it taken; the first answers
    // for both, with the same figures.
    if !registered {
        tracing::debug!(node = %node.name(), "the dashboard's RPC is answered here already");
    }
}
