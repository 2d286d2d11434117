//! `shoal::dashboard` over real TCP on loopback: three `shoal::Node`s, a name, a lock, a group
//! and a hub's children, read back through the JSON API with a bare HTTP/1.1 client; a
//! crashed node shown down; the access rules (a token where it is needed, and only there); the
//! server's limits (a silent connection closed, connections past the cap kept waiting).
//!
//! Every wait is bounded ([`BOUND`]): a condition is polled until it holds, never a fixed
//! sleep.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use shoal::dashboard::{Dashboard, DashboardConfig, DashboardError};
use shoal::hub::{ChildStatus, HubChild, HubConfig, StartOptions};
use shoal::node::NodeBuilder;
use shoal::prelude::*;
use shoal::registry::LockOptions;
use shoal::transport::{Direction, Fault};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::node::{BOUND, Echo, within};

/// The hub whose children the dashboard shows.
pub(super) const HUB: &str = "jobs";

/// A `node` test's node, on a runtime that knows the hub children's factory before the hub
/// runs.
pub(super) fn builder(name: &str, key: &ClusterKey) -> NodeBuilder {
    let runtime = Runtime::builder().node_name(name).build().expect("a runtime");
    runtime.register_factory("echo", |(): ()| Echo).expect("a fresh factory");
    super::node::builder(name, key).runtime(runtime).hub(HUB, HubConfig::default())
}

/// What the dashboard tests show, on node `a`: an echo process registered as `billing`,
/// holding the lock `nightly` and a member of group `room`, and 12 children of hub [`HUB`].
pub(super) struct Shown {
    pub(super) echo: Addr<Echo>,
    pub(super) lock: shoal::registry::LockGuard,
}

/// Sets up what [`Shown`] says on `a`.
pub(super) async fn show(a: &Node) -> Shown {
    let echo = a.runtime().spawn(Echo);
    let registry = a.registry().expect("the registry runs");
    within(registry.register("billing", echo.pid(), Vec::new())).await.expect("registered");
    let lock = within(registry.lock("nightly", LockOptions::default().holder(echo.pid())))
        .await
        .expect("locks")
        .acquired()
        .expect("acquired");
    a.groups().expect("groups run").join("room", echo.pid()).expect("joined");
    let children: Vec<HubChild> = (0..12)
        .map(|i| HubChild::new(ChildSpec::new(format!("job-{i}"), "echo", &()).expect("a spec")))
        .collect();
    let hub = a.hub(HUB).expect("the hub runs");
    let started = within(hub.init_children(children, StartOptions::default())).await.expect("ok");
    assert!(started.iter().all(|(_, result)| result.is_ok()), "{started:?}");
    Shown { echo, lock }
}

/// Polls `check` until it gives a value, at most [`BOUND`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "not within {BOUND:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An answer: its status, headers (lower-case names) and body.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) headers: BTreeMap<String, String>,
    pub(super) body: Vec<u8>,
}

impl Answer {
    pub(super) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// `GET path` over one HTTP/1.1 connection, with `extra` header lines; the whole answer
/// (the server closes the connection after it: `Connection: close`).
pub(super) async fn request(addr: SocketAddr, path: &str, extra: &[&str]) -> Answer {
    let mut stream = within(TcpStream::connect(addr)).await.expect("connects");
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for line in extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("sends");
    let mut raw = Vec::new();
    within(stream.read_to_end(&mut raw)).await.expect("reads");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a head and a body");
    let head = String::from_utf8(raw[..split].to_vec()).expect("a text head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("a status line");
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect::<BTreeMap<_, _>>();
    let body = raw[split + 4..].to_vec();
    assert!(!headers.contains_key("transfer-encoding"), "whole bodies, not chunks");
    Answer { status, headers, body }
}

/// `GET path` answered `200` with JSON.
async fn get(addr: SocketAddr, path: &str) -> Value {
    let answer = request(addr, path, &[]).await;
    assert_eq!(answer.status, 200, "{path}: {}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.headers.get("content-type").map(String::as_str), Some("application/json"));
    answer.json()
}

/// The items of the bounded list at `list`.
fn items(list: &Value) -> &Vec<Value> {
    list["items"].as_array().expect("a bounded list has items")
}

/// The item of `list` whose `field` is `value`.
fn find<'a>(list: &'a Value, field: &str, value: &str) -> Option<&'a Value> {
    items(list).iter().find(|item| item[field] == value)
}

/// What the dashboard shows is what the layers hold: the name and where it runs, the lock's
/// holder and fencing token, the group, the hub's children per node (a hub the node runs,
/// found without being named), every node of the cluster answering its summary (each node
/// answers by itself, serving no page); and a crashed node shows down, in the node list with a
/// down in its history and in the cluster view as not answering, within the failure
/// detection's bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_cluster_and_a_crashed_node_down() {
    let key = ClusterKey::generate();
    let a = within(builder("a", &key).start()).await.expect("a starts");
    within(a.ready()).await;
    let b = within(builder("b", &key).join(a.listen_addr()).start()).await.expect("b joins");
    let c = within(builder("c", &key).join(a.listen_addr()).start()).await.expect("c joins");
    within(b.ready()).await;
    within(c.ready()).await;
    assert_eq!(a.hub_ids(), [HUB]);

    let Shown { echo, lock } = show(&a).await;
    let hub = a.hub(HUB).expect("the hub runs");

    let dashboard = within(Dashboard::start(&a, DashboardConfig::default()))
        .await
        .expect("the dashboard starts");
    let addr = dashboard.addr();
    assert!(addr.ip().is_loopback());

    let node = get(addr, "/api/node").await;
    assert_eq!(node["name"], "a");
    assert_eq!(node["ready"], true);
    assert_eq!(node["membership"], "full_mesh");

    let registry_view = eventually("the name and the lock are listed", || async {
        let view = get(addr, "/api/registry").await;
        let listed = find(&view["names"], "name", "billing").is_some()
            && find(&view["locks"], "key", "nightly").is_some();
        listed.then_some(view)
    })
    .await;
    let name = find(&registry_view["names"], "name", "billing").expect("listed");
    assert_eq!(name["host"], "a");
    assert_eq!(name["pid"], echo.pid().to_string());
    let locked = find(&registry_view["locks"], "key", "nightly").expect("listed");
    assert_eq!(locked["holder"], echo.pid().to_string());
    assert_eq!(locked["host"], "a");
    assert_eq!(locked["token"], lock.token());

    let groups = eventually("the group is listed", || async {
        let view = get(addr, "/api/groups").await;
        find(&view["groups"], "name", "room").cloned()
    })
    .await;
    assert_eq!(groups["members"]["total"], 1);
    assert_eq!(items(&groups["members"])[0]["pid"], echo.pid().to_string());
    assert_eq!(items(&groups["nodes"]), &vec![Value::from("a")]);

    // The hub's children per node, as the hub on a counts them itself.
    let hub_row = eventually("all 12 children run, spread as the hub says", || async {
        let mut expected: BTreeMap<String, u64> = BTreeMap::new();
        for row in hub.which_children_global() {
            if let (Some(node), ChildStatus::Running(_)) = (row.node, row.status) {
                *expected.entry(node).or_default() += 1;
            }
        }
        let view = get(addr, "/api/hubs").await;
        let row = view["hubs"].as_array()?.iter().find(|hub| hub["id"] == HUB)?.clone();
        let shown: BTreeMap<String, u64> = items(&row["per_node"])
            .iter()
            .filter(|share| share["running"].as_u64() != Some(0))
            .map(|share| {
                (
                    share["node"].as_str().unwrap_or("").to_owned(),
                    share["running"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        let done =
            row["children"] == 12 && expected.values().sum::<u64>() == 12 && shown == expected;
        done.then_some(row)
    })
    .await;
    assert_eq!(hub_row["running"], true);
    assert!(hub_row.get("supervisor").is_none(), "a hub, not a supervisor's: {hub_row}");
    assert_eq!(items(&hub_row["nodes"]).len(), 3, "{hub_row}");

    let cluster = eventually("every node answers the cluster view", || async {
        let view = get(addr, "/api/cluster").await;
        let answering = items(&view["nodes"])
            .iter()
            .filter(|row| row["answering"] == true)
            .map(|row| row["name"].as_str().unwrap_or("").to_owned())
            .collect::<Vec<_>>();
        (answering == ["a", "b", "c"]).then_some(view)
    })
    .await;
    let on_b = find(&cluster["nodes"], "name", "b").expect("b");
    assert_eq!(on_b["summary"]["node"]["name"], "b");
    assert!(on_b["summary"]["processes"]["count"].as_u64() > Some(0));
    // Each node lists as many processes as asked (5 by default), the others' through the RPC.
    let listed = |view: &Value, node: &str| {
        let row = find(&view["nodes"], "name", node).expect("a row");
        row["summary"]["processes"]["top"].as_array().map_or(0, Vec::len)
    };
    for node in ["a", "b"] {
        assert!((1..=5).contains(&listed(&cluster, node)), "{node}: {cluster}");
        assert_eq!(listed(&get(addr, "/api/cluster?top=1").await, node), 1, "{node}");
    }
    let wide = get(addr, "/api/cluster?top=100").await;
    assert!(listed(&wide, "b") >= listed(&cluster, "b"), "{wide}");
    assert_eq!(request(addr, "/api/cluster?top=0", &[]).await.status, 400);

    let processes = get(addr, "/api/processes?top=3").await;
    assert_eq!(processes["node"], "a");
    assert!(processes["count"].as_u64() >= Some(1));
    assert!(processes["top"].as_array().is_some_and(|top| !top.is_empty() && top.len() <= 3));
    for bad in ["top=0", "top=101", "top=many"] {
        let answer = request(addr, &format!("/api/processes?{bad}"), &[]).await;
        assert_eq!(answer.status, 400, "{bad}");
        assert!(answer.json()["error"].as_str().is_some_and(|e| e.contains("top")), "{bad}");
    }
    assert_eq!(request(addr, "/api/nothing-here", &[]).await.status, 404);

    let paxos = get(addr, "/api/paxos").await;
    assert_eq!(paxos["running"], true);
    assert_eq!(paxos["has_quorum"], true);
    assert!(paxos["acceptors"].as_array().is_some_and(|set| set.contains(&Value::from("a"))));
    // The proposer's figures: the registry's writes were rounds of this node's, timed.
    let figures = &paxos["figures"];
    assert!(figures["rounds"].as_u64() > Some(0), "{figures}");
    assert!(figures["operations"].as_u64() > Some(0), "{figures}");
    assert!(figures["latency_p99_us"].as_u64().is_some(), "{figures}");
    // No recorder given: no metrics served.
    assert_eq!(request(addr, "/metrics", &[]).await.status, 404);

    let transport = get(addr, "/api/transport").await;
    for peer in ["b", "c"] {
        let row = find(&transport["peers"], "node", peer).expect("a peer row");
        assert_eq!(row["up"], true);
        assert!(row["frames_received"].as_u64() > Some(0), "{row}");
    }

    let page = request(addr, "/", &[]).await;
    assert_eq!(page.status, 200);
    let html = String::from_utf8(page.body).expect("text");
    for part in ["id=\"nodes\"", "id=\"locks\"", "id=\"names\"", "id=\"hubs\"", "id=\"cluster\""] {
        assert!(html.contains(part), "the page has {part}");
    }
    assert!(!html.contains("http://") && !html.contains("https://"), "nothing fetched elsewhere");
    assert!(page.headers.contains_key("content-security-policy"));

    // A crash: c is shown down, with a down in its history, and not answering.
    within(c.abort()).await;
    let down = eventually("c shows down", || async {
        let view = get(addr, "/api/nodes").await;
        let row = find(&view["nodes"], "name", "c")?.clone();
        let went_down = items(&row["history"]).iter().any(|change| change["up"] == false);
        (row["up"] == false && went_down).then_some(row)
    })
    .await;
    assert_eq!(down["this_node"], false);
    eventually("c does not answer the cluster view", || async {
        let view = get(addr, "/api/cluster").await;
        let row = find(&view["nodes"], "name", "c");
        // Gone from the members, or listed as not answering.
        row.is_none_or(|row| row["answering"] == false).then_some(())
    })
    .await;
    let view = get(addr, "/api/nodes").await;
    assert_eq!(find(&view["nodes"], "name", "b").expect("b")["up"], true);

    within(dashboard.stop()).await;
    assert!(TcpStream::connect(addr).await.is_err(), "nothing listens after stop");
    drop(lock);
    within(b.shutdown()).await;
    within(a.shutdown()).await;
}

/// Access: a dashboard elsewhere than loopback refuses to start without a token (and with a
/// short one); with a token every request must carry it, in the header or the query; without
/// one, only requests for a loopback host are served (DNS rebinding).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_required_off_loopback_and_checked_on_every_request() {
    let key = ClusterKey::generate();
    let node = within(builder("solo", &key).start()).await.expect("starts");

    let anywhere: SocketAddr = "0.0.0.0:0".parse().expect("an address");
    let refused =
        within(Dashboard::start(&node, DashboardConfig::default().listen(anywhere))).await;
    assert!(matches!(refused, Err(DashboardError::TokenRequired(addr)) if addr == anywhere));
    let short = DashboardConfig::default().listen(anywhere).token("short");
    assert!(matches!(
        within(Dashboard::start(&node, short)).await,
        Err(DashboardError::InvalidToken(_))
    ));
    let spaced = DashboardConfig::default().token("a token with spaces in it");
    assert!(matches!(
        within(Dashboard::start(&node, spaced)).await,
        Err(DashboardError::InvalidToken(_))
    ));

    // Loopback with a token: the token is required all the same (test traffic stays on
    // loopback; the check is the same whatever the address).
    let token = "0123456789abcdef-secret";
    let config = DashboardConfig::default().token(token);
    assert!(!format!("{config:?}").contains(token), "the token is not printed");
    let dashboard = within(Dashboard::start(&node, config)).await.expect("starts");
    let addr = dashboard.addr();
    let without = request(addr, "/api/node", &[]).await;
    assert_eq!(without.status, 401);
    assert_eq!(without.headers.get("www-authenticate").map(String::as_str), Some("Bearer"));
    assert_eq!(request(addr, "/", &[]).await.status, 401);
    let wrong =
        request(addr, "/api/node", &["Authorization: Bearer 0123456789abcdef-secreT"]).await;
    assert_eq!(wrong.status, 401);
    let bearer = format!("Authorization: Bearer {token}");
    let with_header = request(addr, "/api/node", &[&bearer]).await;
    assert_eq!(with_header.status, 200);
    assert_eq!(with_header.json()["name"], "solo");
    assert_eq!(request(addr, &format!("/?token={token}"), &[]).await.status, 200);
    assert_eq!(request(addr, "/?token=nope", &[]).await.status, 401);
    within(dashboard.stop()).await;

    // No token: a request for a host name that is not loopback is refused.
    let dashboard = within(Dashboard::start(&node, DashboardConfig::default())).await.expect("ok");
    let addr = dashboard.addr();
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    let head = "GET /api/node HTTP/1.1\r\nHost: rebound.example:80\r\nConnection: close\r\n\r\n";
    stream.write_all(head.as_bytes()).await.expect("sends");
    let mut raw = Vec::new();
    within(stream.read_to_end(&mut raw)).await.expect("reads");
    assert!(raw.starts_with(b"HTTP/1.1 403"), "{}", String::from_utf8_lossy(&raw));
    assert_eq!(request(addr, "/api/node", &[]).await.status, 200);
    within(dashboard.stop()).await;
    within(node.shutdown()).await;
}

/// A slow client cannot hold the server: a connection that sends no request head within the
/// header timeout is closed, and past the cap of connections the next waits, unaccepted,
/// until one closes (here: until the silent ones are closed by the timeout), and is then
/// served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_and_connections_past_the_cap_wait() {
    const HEADER_TIMEOUT: Duration = Duration::from_millis(800);
    let key = ClusterKey::generate();
    let node = within(builder("solo", &key).start()).await.expect("starts");
    let config = DashboardConfig::default().max_connections(2).header_read_timeout(HEADER_TIMEOUT);
    let dashboard = within(Dashboard::start(&node, config)).await.expect("starts");
    let addr = dashboard.addr();

    // Two connections that never send a byte take both places.
    let opened = tokio::time::Instant::now();
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(within(TcpStream::connect(addr)).await.expect("connects"));
    }
    // A third is only queued: its request is answered once a place is free, when the header
    // timeout has closed a silent one.
    let answer = request(addr, "/api/node", &[]).await;
    let waited = opened.elapsed();
    assert_eq!(answer.status, 200);
    assert!(waited >= HEADER_TIMEOUT - Duration::from_millis(100), "answered after {waited:?}");

    // The silent ones were closed by the server (an end of stream, or a reset), not answered.
    for mut stream in silent {
        let mut raw = Vec::new();
        let read = within(stream.read_to_end(&mut raw)).await;
        assert!(read.is_err() || !raw.starts_with(b"HTTP/1.1 200"), "{raw:?}");
    }
    // Places free again: a request is answered at once.
    let again = tokio::time::Instant::now();
    assert_eq!(request(addr, "/api/node", &[]).await.status, 200);
    assert!(again.elapsed() < HEADER_TIMEOUT, "{:?}", again.elapsed());

    // Limits of zero are refused.
    let zero = DashboardConfig::default().max_connections(0);
    assert!(matches!(
        within(Dashboard::start(&node, zero)).await,
        Err(DashboardError::InvalidConfig(_))
    ));
    within(dashboard.stop()).await;
    within(node.shutdown()).await;
}

/// A client that pipelines requests and never reads the answers is closed once an answer has
/// waited the write timeout for it to read, and its place is free again: with one place, a
/// second client is answered after that, not never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_after_the_write_timeout() {
    const WRITE_TIMEOUT: Duration = Duration::from_millis(500);
    let key = ClusterKey::generate();
    let node = within(builder("solo", &key).start()).await.expect("starts");
    let config = DashboardConfig::default()
        .max_connections(1)
        .header_read_timeout(BOUND)
        .write_timeout(WRITE_TIMEOUT);
    let dashboard = within(Dashboard::start(&node, config)).await.expect("starts");
    let addr = dashboard.addr();

    // A small receive window, so the server's buffers fill after a few answers.
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(4096).expect("a small receive buffer");
    let (mut unread, mut writer) =
        within(socket.connect(addr)).await.expect("connects").into_split();
    let head = format!("GET /api/nodes HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let flood = tokio::spawn(async move {
        // Until the server stops reading (its answers unread), then until it closes.
        for _ in 0..100_000 {
            if writer.write_all(head.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    let asked = tokio::time::Instant::now();
    let answer = request(addr, "/api/node", &[]).await;
    assert_eq!(answer.status, 200);
    assert!(asked.elapsed() >= WRITE_TIMEOUT - Duration::from_millis(100), "{:?}", asked.elapsed());
    within(flood).await.expect("the flood ends: the server closed its connection");
    // What the server sent before it closed, and then the end (or a reset).
    let mut answers = Vec::new();
    let _ = within(unread.read_to_end(&mut answers)).await;
    assert!(answers.starts_with(b"HTTP/1.1 200"), "answered until it stalled");

    let zero = DashboardConfig::default().write_timeout(Duration::ZERO);
    assert!(matches!(
        within(Dashboard::start(&node, zero)).await,
        Err(DashboardError::InvalidConfig(_))
    ));
    within(dashboard.stop()).await;
    within(node.shutdown()).await;
}

/// A node made of parts (`Node::from_parts`) answers the cluster view by itself, and lists
/// the hub it was given; the answer's handler holds the node weakly (no cycle through the
/// transport): once the last handle of that node is dropped, its transport answers that there
/// is no node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_parts_answers_while_it_is_held() {
    let key = ClusterKey::generate();
    let a = within(builder("a", &key).start()).await.expect("a starts");
    let transport = within(shoal::transport::Node::builder("p", key.clone()).start())
        .await
        .expect("p's transport starts");
    let hub = within(shoal::hub::Hub::start(&transport, "parts-hub", HubConfig::default()))
        .await
        .expect("the hub starts");
    let parts = shoal::node::NodeParts::new(transport.clone(), key).hub(hub);
    let p = shoal::Node::from_parts(parts);
    assert_eq!(p.hub_ids(), ["parts-hub"]);
    within(a.join(transport.listen_addr())).await.expect("a joins p");
    let dashboard = within(Dashboard::start(&a, DashboardConfig::default())).await.expect("ok");
    let addr = dashboard.addr();
    let row = eventually("p answers the cluster view", || async {
        let view = get(addr, "/api/cluster").await;
        let row = find(&view["nodes"], "name", "p")?.clone();
        (row["answering"] == true).then_some(row)
    })
    .await;
    assert_eq!(row["summary"]["node"]["name"], "p");

    // Its transport still runs and answers, with nothing: the handler finds no node.
    drop(p);
    let row = eventually("p no longer answers once dropped", || async {
        let view = get(addr, "/api/cluster").await;
        let row = find(&view["nodes"], "name", "p")?.clone();
        (row["answering"] == false).then_some(row)
    })
    .await;
    assert_eq!(row["error"], "it is stopping", "{row}");
    within(dashboard.stop()).await;
    transport.shutdown();
    within(a.shutdown()).await;
}

/// A request not answered within the request timeout gets `503`: the cluster view waits up to
/// a second for a node whose every frame is dropped, past a timeout of 300 ms; once healed,
/// requests are answered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_not_answered_in_time_gets_503() {
    let key = ClusterKey::generate();
    let a = within(builder("a", &key).start()).await.expect("a starts");
    let b = within(builder("b", &key).join(a.listen_addr()).start()).await.expect("b joins");
    let config = DashboardConfig::default().request_timeout(Duration::from_millis(300));
    let dashboard = within(Dashboard::start(&a, config)).await.expect("starts");
    let addr = dashboard.addr();

    a.transport().inject_fault("b", Direction::Outbound, Fault::Drop(1.0));
    let slow = request(addr, "/api/cluster", &[]).await;
    assert_eq!(slow.status, 503, "{}", String::from_utf8_lossy(&slow.body));
    assert!(slow.json()["error"].as_str().is_some_and(|error| error.contains("within")));
    a.transport().heal("b");
    assert_eq!(request(addr, "/api/node", &[]).await.status, 200);

    within(dashboard.stop()).await;
    within(b.shutdown()).await;
    within(a.shutdown()).await;
}
