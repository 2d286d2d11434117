//! The `shoal` binary (feature `cli`) as an operator meets it: two `shoal::Node`s on loopback
//! with a name, a lock, a group, a hub's children and a backed-up mailbox, one serving its
//! dashboard, read back by the real binary for each command, as tables and as `--json`; and
//! what it says when it cannot answer (nothing listening, a token missing or refused, an
//! unknown hub, an answer that is not the API's), always with a non-zero exit.
//!
//! Each run of the binary is bounded ([`BOUND`]) and killed past it; conditions that take
//! time (the registry's listing, the hub's placement) are polled through the binary itself.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal::dashboard::{Dashboard, DashboardConfig};
use shoal::hub::ChildStatus;
use shoal::prelude::*;

use super::dashboard::{HUB, Shown, builder, show};
use super::node::{BOUND, within};

/// A token of the test's token-protected dashboard.
const TOKEN: &str = "0123456789abcdef-cli-secret";

/// What one run of the binary left.
#[derive(Debug)]
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The run succeeded; its stdout.
    fn ok(self) -> String {
        assert!(self.status.success(), "{self:?}");
        assert!(self.stderr.is_empty(), "{self:?}");
        self.stdout
    }

    /// The run succeeded; its stdout as JSON.
    fn json(self) -> Value {
        let stdout = self.ok();
        serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{error}: {stdout}"))
    }

    /// The run failed with status 1, saying nothing on stdout; its stderr.
    fn failed(self) -> String {
        assert_eq!(self.status.code(), Some(1), "{self:?}");
        assert!(self.stdout.is_empty(), "{self:?}");
        assert!(self.stderr.starts_with("shoal: "), "{self:?}");
        self.stderr
    }
}

/// The binary, with neither `$SHOAL_URL` nor `$SHOAL_TOKEN` from the test's environment.
fn shoal() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
    command.env_remove("SHOAL_URL").env_remove("SHOAL_TOKEN");
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

/// Reads all of `from` on a thread of its own (so a full pipe never blocks the child).
fn drain(mut from: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = from.read_to_string(&mut text);
        text
    })
}

/// Kills the child when dropped, so a failed assertion leaves no process behind.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `command` to its end, at most [`BOUND`] (blocking: call it off the async workers).
fn run_blocking(mut command: Command) -> Run {
    let mut child = Killed(command.spawn().expect("the shoal binary starts"));
    let stdout = drain(child.0.stdout.take().expect("its stdout"));
    let stderr = drain(child.0.stderr.take().expect("its stderr"));
    let deadline = Instant::now() + BOUND;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("waits") {
            break status;
        }
        assert!(Instant::now() < deadline, "shoal did not exit within {BOUND:?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = stdout.join().expect("stdout read");
    let stderr = stderr.join().expect("stderr read");
    Run { status, stdout, stderr }
}

/// `shoal --url URL ARGS...`, at most [`BOUND`].
async fn run(url: &str, args: &[&str]) -> Run {
    let mut command = shoal();
    command.arg("--url").arg(url).args(args);
    tokio::task::spawn_blocking(move || run_blocking(command)).await.expect("the run finished")
}

/// Runs `shoal --url URL ARGS... --json` until `check` finds what it looks for in the
/// answer, at most [`BOUND`].
async fn until_json<T>(
    url: &str,
    args: &[&str],
    what: &str,
    check: impl Fn(&Value) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + BOUND;
    let mut args = args.to_vec();
    args.push("--json");
    loop {
        let json = run(url, &args).await.json();
        if let Some(found) = check(&json) {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "not within {BOUND:?}: {what}: {json}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The items of the bounded list at `list`.
fn items(list: &Value) -> &[Value] {
    list["items"].as_array().map_or(&[], Vec::as_slice)
}

/// Whether some line of `table` holds every one of `cells` as a whole word, in that order.
fn has_row(table: &str, cells: &[&str]) -> bool {
    table.lines().any(|line| {
        let mut words = line.split_whitespace();
        cells.iter().all(|cell| words.any(|word| word == *cell))
    })
}

/// Holds its first cast for [`BOUND`]: the casts after it wait in its mailbox.
struct Stuck;

impl Process for Stuck {
    type Message = ();
    type Call = ();
    type Reply = ();

    async fn handle_cast(&mut self, (): (), _: &mut Context<Self>) {
        tokio::time::sleep(BOUND).await;
    }
}

/// Every command shows what the cluster holds: the name with its pid, node and fencing
/// token; the lock with its holder and fencing token; the group's member; the hub's children
/// per node, as the hub counts them; both nodes up; the backed-up process first in `top`,
/// which redraws until stopped; each as a table and as the API's JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_shows_the_cluster_as_a_table_and_as_json() {
    let key = ClusterKey::generate();
    let a = within(builder("a", &key).start()).await.expect("a starts");
    within(a.ready()).await;
    let b = within(builder("b", &key).join(a.listen_addr()).start()).await.expect("b joins");
    within(b.ready()).await;

    let Shown { echo, lock } = show(&a).await;
    let pid = echo.pid().to_string();
    let token = lock.token().to_string();
    let hub = a.hub(HUB).expect("the hub runs");
    let stuck = b.runtime().spawn(Stuck);
    for _ in 0..30 {
        within(stuck.cast(())).await.expect("queued");
    }

    let dashboard = within(Dashboard::start(&a, DashboardConfig::default())).await.expect("starts");
    let url = format!("http://{}", dashboard.addr());

    // names and locks: the registry's listing asks every member; wait until it has both.
    let listing = until_json(&url, &["names"], "the name and the lock are listed", |json| {
        let named = items(&json["names"]).iter().any(|name| name["name"] == "billing");
        let locked = items(&json["locks"]).iter().any(|lock| lock["key"] == "nightly");
        (named && locked).then(|| json.clone())
    })
    .await;
    let locked = items(&listing["locks"]).iter().find(|lock| lock["key"] == "nightly");
    assert_eq!(locked.expect("listed")["token"], lock.token());
    assert_eq!(run(&url, &["locks", "--json"]).await.json()["locks"], listing["locks"]);
    let names = run(&url, &["names"]).await.ok();
    assert!(has_row(&names, &["NAME", "PID", "NODE", "TOKEN", "RESTART"]), "{names}");
    assert!(has_row(&names, &["billing", &pid, "a"]), "{names}");
    let locks = run(&url, &["locks"]).await.ok();
    assert!(has_row(&locks, &["nightly", &pid, "a", &token, "1", "0"]), "{locks}");

    let groups = run(&url, &["groups"]).await.ok();
    assert!(has_row(&groups, &["room", &pid, "a"]), "{groups}");
    let groups_json = run(&url, &["groups", "--json"]).await.json();
    let room = items(&groups_json["groups"]).iter().find(|group| group["name"] == "room");
    assert_eq!(items(&room.expect("listed")["members"])[0]["pid"], pid.as_str());

    // hub: the children per node, as the hub on a counts them itself.
    let per_node = until_json(&url, &["hub", HUB], "all 12 children run as the hub says", |row| {
        let mut expected: BTreeMap<String, u64> = BTreeMap::new();
        for child in hub.which_children_global() {
            if let (Some(node), ChildStatus::Running(_)) = (child.node, child.status) {
                *expected.entry(node).or_default() += 1;
            }
        }
        let shown: BTreeMap<String, u64> = items(&row["per_node"])
            .iter()
            .filter_map(|share| {
                Some((share["node"].as_str()?.to_owned(), share["running"].as_u64()?))
            })
            .filter(|(_, running)| *running > 0)
            .collect();
        let done =
            row["children"] == 12 && expected.values().sum::<u64>() == 12 && shown == expected;
        done.then_some(shown)
    })
    .await;
    assert!(per_node.len() == 2, "both nodes run children: {per_node:?}");
    let ring = run(&url, &["hub", HUB]).await.ok();
    assert!(ring.starts_with(&format!("{HUB}: 12 children on 2 of 2 nodes")), "{ring}");
    for (node, running) in &per_node {
        assert!(has_row(&ring, &[node, "yes", &running.to_string(), "0"]), "{ring}");
    }
    let unknown = run(&url, &["hub", "nope"]).await.failed();
    assert!(unknown.contains("no hub \"nope\"") && unknown.contains(HUB), "{unknown}");

    let nodes = run(&url, &["nodes"]).await.ok();
    assert!(has_row(&nodes, &["a", "(this)", "up"]), "{nodes}");
    assert!(has_row(&nodes, &["b", "up"]), "{nodes}");
    assert!(nodes.contains(&a.listen_addr().to_string()), "{nodes}");
    let nodes_json = run(&url, &["nodes", "--json"]).await.json();
    assert_eq!(items(&nodes_json["nodes"]).len(), 2, "{nodes_json}");

    let status = run(&url, &["status"]).await.ok();
    for row in [
        &["nodes", "2", "up,", "0", "down"][..],
        &["names", "1"],
        &["locks", "1"],
        &["groups", "1"],
    ] {
        assert!(has_row(&status, row), "{row:?}: {status}");
    }
    assert!(has_row(&status, &["node", "a", "(ready,", "up"]), "{status}");
    assert!(has_row(&status, &["paxos", "quorum;"]), "{status}");
    assert!(status.contains(&format!("{HUB}: 12 children on 2 of 2 nodes")), "{status}");
    let status_json = run(&url, &["status", "--json"]).await.json();
    for part in ["node", "nodes", "paxos", "registry", "groups", "hubs"] {
        assert!(status_json[part].is_object(), "{part}: {status_json}");
    }
    assert_eq!(status_json["node"]["name"], "a");
    let started = status_json["node"]["started_at_ms"].as_u64().expect("a start time");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    assert!(started > 0 && u128::from(started) <= now.as_millis(), "{status_json}");

    // top: the stuck process's backlog (29 or more) puts it first, across the cluster.
    let stuck_pid = stuck.pid().to_string();
    let top = until_json(&url, &["top", "--once"], "both nodes answer", |json| {
        let answering =
            items(&json["nodes"]).iter().filter(|node| node["answering"] == true).count();
        (answering == 2).then(|| json.clone())
    })
    .await;
    assert_eq!(top["nodes"]["total"], 2);
    let table = run(&url, &["top", "--once"]).await.ok();
    assert!(table.starts_with("2 nodes, 2 answering, "), "{table}");
    let first = table.lines().nth(2).unwrap_or_default();
    let first: Vec<&str> = first.split_whitespace().collect();
    assert_eq!(first.get(1..3), Some(&[stuck_pid.as_str(), "b"][..]), "{table}");
    assert!(first[0].parse::<u64>().is_ok_and(|len| len >= 29), "{table}");

    // Without --once, it redraws every interval until stopped.
    let mut command = shoal();
    command.args(["--url", &url, "top", "--interval", "0.2"]);
    let redraws = tokio::task::spawn_blocking(move || {
        let mut child = Killed(command.spawn().expect("starts"));
        let mut stdout = child.0.stdout.take().expect("its stdout");
        let deadline = Instant::now() + BOUND;
        let mut seen = Vec::new();
        let mut buffer = [0; 4096];
        while String::from_utf8_lossy(&seen).matches("answering").count() < 3 {
            assert!(
                Instant::now() < deadline,
                "no three redraws: {}",
                String::from_utf8_lossy(&seen)
            );
            match stdout.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => seen.extend_from_slice(&buffer[..read]),
            }
        }
        assert!(child.0.try_wait().expect("waits").is_none(), "still running");
        String::from_utf8_lossy(&seen).into_owned()
    })
    .await
    .expect("read");
    assert!(redraws.matches("(every 200ms; Ctrl-C ends)").count() >= 3, "{redraws}");
    assert!(!redraws.contains('\u{1b}'), "no screen control when stdout is not a terminal");

    within(dashboard.stop()).await;
    drop(lock);
    within(b.shutdown()).await;
    within(a.shutdown()).await;
}

/// A port with nothing listening on it (bound, then let go).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
    listener.local_addr().expect("an address").port()
}

/// A one-connection server that answers whatever request it gets with `answer`, or with
/// nothing (holding the connection open until the test ends) if `answer` is `None`.
fn fake_server(answer: Option<&'static [u8]>) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    let server = std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else { return };
        let mut head = Vec::new();
        let mut byte = [0];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|read| read == 1) {
            head.push(byte[0]);
        }
        match answer {
            Some(answer) => {
                let _ = stream.write_all(answer);
            }
            None => std::thread::sleep(Duration::from_secs(3)),
        }
    });
    (url, server)
}

/// When it cannot answer, it says why on stderr, names what to do where it can, and exits
/// with status 1 (2 for a command line it does not understand), never with a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_says_why_it_cannot_answer_and_exits_non_zero() {
    let nothing = format!("http://127.0.0.1:{}", free_port());
    let refused = run(&nothing, &["status"]).await.failed();
    assert!(refused.contains(&format!("cannot connect to {nothing}")), "{refused}");

    let no_url = run_blocking({
        let mut command = shoal();
        command.arg("names");
        command
    })
    .failed();
    assert!(no_url.contains("pass --url"), "{no_url}");
    let tls = run("https://127.0.0.1:1", &["names"]).await.failed();
    assert!(tls.contains("plain HTTP only"), "{tls}");
    let usage = run(&nothing, &["frobnicate"]).await;
    assert_eq!(usage.status.code(), Some(2), "{usage:?}");
    assert!(usage.stderr.contains("frobnicate"), "{usage:?}");

    // A dashboard with a token: without it, the hint to pass it; with a wrong one, that it
    // was refused; with the right one in $SHOAL_TOKEN or --token, the answer.
    let key = ClusterKey::generate();
    let node = within(builder("solo", &key).start()).await.expect("starts");
    within(node.ready()).await;
    let config = DashboardConfig::default().token(TOKEN);
    let dashboard = within(Dashboard::start(&node, config)).await.expect("starts");
    let url = format!("http://{}", dashboard.addr());
    let missing = run(&url, &["names"]).await.failed();
    assert!(
        missing.contains("401") && missing.contains("pass --token TOKEN or set SHOAL_TOKEN"),
        "{missing}"
    );
    let wrong = run(&url, &["--token", "0123456789abcdef-not-it", "names"]).await.failed();
    assert!(wrong.contains("refused the token given"), "{wrong}");
    let mut with_env = shoal();
    with_env.args(["--url", &url, "nodes", "--json"]).env("SHOAL_TOKEN", TOKEN);
    let nodes =
        tokio::task::spawn_blocking(move || run_blocking(with_env)).await.expect("ran").json();
    assert_eq!(items(&nodes["nodes"]).len(), 1, "{nodes}");
    let status = run(&url, &["--token", TOKEN, "status"]).await.ok();
    assert!(has_row(&status, &["nodes", "1", "up,", "0", "down"]), "{status}");
    assert!(has_row(&status, &["hubs", &format!("{HUB}:")]), "{status}");
    // A path under the dashboard that is not the API: 404, said as such.
    let prefixed = format!("{url}/elsewhere");
    let not_found = run(&prefixed, &["--token", TOKEN, "groups"]).await.failed();
    assert!(not_found.contains("has no /api/groups (404"), "{not_found}");
    within(dashboard.stop()).await;
    within(node.shutdown()).await;

    // Servers that are not a dashboard: not HTTP, not JSON, silent past the timeout.
    let (url, server) = fake_server(Some(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"));
    let not_http = run(&url, &["nodes"]).await.failed();
    assert!(not_http.contains("did not answer in HTTP/1.1"), "{not_http}");
    server.join().expect("served");
    let (url, server) =
        fake_server(Some(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n<html/>\r\n"));
    let not_json = run(&url, &["nodes"]).await.failed();
    assert!(not_json.contains("JSON this inspector cannot read"), "{not_json}");
    server.join().expect("served");
    let (url, server) = fake_server(Some(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n{\"a\": \r\n2\r\n1}\r\n0\r\n\r\n",
    ));
    let other_shape = run(&url, &["nodes"]).await.failed();
    assert!(other_shape.contains("missing field `node`"), "read through the chunks: {other_shape}");
    server.join().expect("served");
    let (url, server) = fake_server(None);
    let silent = run(&url, &["--timeout", "0.5", "nodes"]).await.failed();
    assert!(silent.contains("no whole answer") && silent.contains("within 500ms"), "{silent}");
    server.join().expect("served");
}
