//! The `shoal-node` binary as an operator meets it: a key it generates and insists on, and
//! logs on stderr, at the level `$SHOAL_LOG` names, of every connection it refuses.
//!
//! Each test runs the real binary as an OS process on 127.0.0.1 (port 0), bounded in time,
//! and kills it if the test fails on the way.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use shoal_transport::handshake::{Hello, Initiator, Message};
use shoal_transport::{ChannelConfig, ClusterKey, NodeSpec, Protection};

const BOUND: Duration = Duration::from_secs(20);

fn shoal_node() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shoal-node"))
}

/// A running `shoal-node`, killed when dropped.
struct NodeProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    addr: SocketAddr,
}

impl NodeProcess {
    /// Starts a node called `a` with `key` in `$SHOAL_KEY` and `$SHOAL_LOG` set to `log`;
    /// returns once it listens.
    fn start(key: &str, log: &str) -> Self {
        Self::start_with(key, log, &[], &[]).0
    }

    /// As [`start`](Self::start), with `args` after its name and address and `envs` besides
    /// the key and the log level; returns it and the rest of its stdout.
    fn start_with(
        key: &str,
        log: &str,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> (Self, BufReader<ChildStdout>) {
        let mut child = shoal_node()
            .args(["--name", "a", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("SHOAL_KEY", key)
            .env("SHOAL_LOG", log)
            .envs(envs.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("shoal-node starts");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("its stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("its first line");
        let addr = line
            .split_whitespace()
            .nth(1)
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("`listening ADDR ...` expected, got {line:?}"));
        (Self { child, stdin, addr }, stdout)
    }

    /// Ends its stdin (the node exits), and returns its exit status and stderr.
    fn finish(mut self) -> (ExitStatus, String) {
        drop(self.stdin.take());
        let status = wait(&mut self.child);
        let mut stderr = String::new();
        self.child.stderr.take().expect("its stderr").read_to_string(&mut stderr).unwrap();
        (status, stderr)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for `child` to exit, at most [`BOUND`].
fn wait(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + BOUND;
    loop {
        if let Some(status) = child.try_wait().expect("waits") {
            return status;
        }
        assert!(Instant::now() < deadline, "shoal-node did not exit within {BOUND:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn generate_key() -> String {
    let output = shoal_node().arg("generate-key").output().expect("generate-key runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).expect("text").trim().to_owned()
}

/// Connects to `addr` as a node `x` holding `key`, and returns the node's answer to its first
/// handshake message.
fn greet(addr: SocketAddr, key: &ClusterKey) -> Option<Message> {
    let spec = NodeSpec {
        name: "x".into(),
        incarnation: 1,
        listen_addrs: Vec::new(),
        channels: [("control".to_owned(), ChannelConfig::new())].into(),
    };
    let hello = Hello::new(spec, "control", 0, Protection::Encrypted);
    let (_, first) = Initiator::start(key, &hello).expect("a first message");
    let mut stream = TcpStream::connect(addr).expect("connects");
    stream.set_read_timeout(Some(BOUND)).unwrap();
    let mut out = bytes::BytesMut::new();
    first.encode(&mut out);
    stream.write_all(&out).expect("writes");
    let mut read = bytes::BytesMut::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(message) = Message::decode(&mut read).expect("a valid message") {
            return Some(message);
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => read.extend_from_slice(&buf[..n]),
        }
    }
}

/// `generate-key` prints 64 hexadecimal digits of a fresh key each time.
#[test]
fn generate_key_prints_a_fresh_key() {
    let (first, second) = (generate_key(), generate_key());
    assert!(ClusterKey::from_hex(&first).is_ok(), "{first:?}");
    assert_eq!(first.len(), 64);
    assert_ne!(first, second);
}

/// A connection under another key is refused, and the node says so on stderr with the
/// reason, at the default level and above; with `SHOAL_LOG=off` it says nothing.
#[test]
fn a_refused_connection_is_logged_with_its_reason() {
    let key = generate_key();
    let other = ClusterKey::generate();
    for (level, logged) in [("warn", true), ("info", true), ("off", false)] {
        let node = NodeProcess::start(&key, level);
        match greet(node.addr, &other) {
            Some(Message::Refusal(reason)) => {
                assert!(reason.contains("did not authenticate"), "{reason}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let (status, stderr) = node.finish();
        assert!(status.success(), "{status:?}: {stderr}");
        let said = stderr.contains("did not authenticate") && stderr.contains("127.0.0.1");
        assert_eq!(said, logged, "SHOAL_LOG={level}: {stderr}");
    }
}

/// A key that is not 32 random bytes in hexadecimal, or a log level that does not exist, stop
/// the node before it listens, with the reason.
#[test]
fn a_weak_key_or_an_unknown_log_level_is_refused_at_start() {
    let cases = [
        ("a short key", "c0ffee".to_owned(), "warn", "64 hexadecimal digits"),
        ("a key of zeros", "0".repeat(64), "warn", "not random"),
        ("no such level", generate_key(), "loud", "not a level"),
    ];
    for (what, key, level, says) in cases {
        let output = shoal_node()
            .args(["--name", "a", "--listen", "127.0.0.1:0"])
            .env("SHOAL_KEY", key)
            .env("SHOAL_LOG", level)
            .stdin(Stdio::null())
            .output()
            .expect("shoal-node runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{what}: started");
        assert!(stderr.contains(says), "{what}: {stderr}");
        assert!(output.stdout.is_empty(), "{what}: it listened");
    }
}

/// With `--dashboard` and `--dashboard-token-file`, the dashboard asks every request for the
/// token in the file, and (a `prometheus` build) serves the node's figures at `/metrics`; a
/// token in `$SHOAL_DASHBOARD_TOKEN` does the same, and a token file without a dashboard, or
/// an empty one, is refused at start.
#[cfg(all(feature = "dashboard", feature = "prometheus"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_asks_for_the_token_and_serves_metrics() {
    use super::dashboard::request;

    let key = generate_key();
    let token = "a-token-of-twenty-four-ch";
    let file = std::env::temp_dir().join(format!("shoal-node-token-{}", std::process::id()));
    std::fs::write(&file, format!("{token}\n")).expect("writes the token file");
    let from_file =
        ["--dashboard", "127.0.0.1:0", "--dashboard-token-file", file.to_str().unwrap()];
    let from_env = (&["--dashboard", "127.0.0.1:0"][..], &[("SHOAL_DASHBOARD_TOKEN", token)][..]);
    for (args, envs) in [(&from_file[..], &[][..]), from_env] {
        let (node, mut stdout) = NodeProcess::start_with(&key, "warn", args, envs);
        let mut line = String::new();
        stdout.read_line(&mut line).expect("its second line");
        let dashboard: SocketAddr = line
            .strip_prefix("dashboard ")
            .and_then(|addr| addr.trim().parse().ok())
            .unwrap_or_else(|| panic!("`dashboard ADDR` expected, got {line:?}"));
        assert_eq!(request(dashboard, "/api/node", &[]).await.status, 401);
        let bearer = format!("Authorization: Bearer {token}");
        let answer = request(dashboard, "/api/node", &[&bearer]).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.json()["name"], "a");
        let metrics = request(dashboard, "/metrics", &[&bearer]).await;
        let text = String::from_utf8(metrics.body).expect("text");
        assert_eq!(metrics.status, 200, "{text}");
        assert!(text.contains("shoal_processes{node=\"a\"}"), "{text}");
        let (status, stderr) = node.finish();
        assert!(status.success(), "{stderr}");
    }

    let refused = |args: &[&str]| {
        let output = shoal_node()
            .args(["--name", "a"])
            .args(args)
            .env("SHOAL_KEY", &key)
            .output()
            .expect("shoal-node runs");
        assert_eq!(output.status.code(), Some(2), "{output:?}");
        String::from_utf8(output.stderr).expect("text")
    };
    let alone = refused(&["--dashboard-token-file", file.to_str().unwrap()]);
    assert!(alone.contains("needs `--dashboard ADDR`"), "{alone}");
    std::fs::write(&file, " \n").expect("empties the token file");
    let empty = refused(&from_file);
    assert!(empty.contains("is empty"), "{empty}");
    let _ = std::fs::remove_file(&file);
}
