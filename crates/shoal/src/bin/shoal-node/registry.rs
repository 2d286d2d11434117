//! The registry commands: `shoal-registry` on this node, the worker processes its names start,
//! and a lock loop, each reporting to a *checker*: a line server outside the cluster (the
//! cluster test runs one in its driver) that judges what it is told at the moment it is told.
//!
//! - A **worker** (factory [`WORKER`], arguments `(NAME, CHECKER)`) reports
//!   `start NAME NODE INCARNATION PID` from its `init` and waits for the answer before it
//!   serves anything, and this node reports `stop NAME NODE INCARNATION PID REASON` once the
//!   process has ended (a watch on it). A worker whose start the checker did not take stops at
//!   once: a process the checker does not know of would make its verdict worthless. A call
//!   answers `NODE/PID`.
//! - The **lock loop** acquires one lock again and again, and while it holds it writes
//!   `write KEY TOKEN NODE STEP` to the checker a few times, each only while its guard is not
//!   lost, then releases it. The checker answers `ok`, or `refused ...` for a stale token.
//!
//! The checker's connection is one per node and checker address, opened on first use and
//! opened again after an error; each line waits for its answer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal::prelude::*;
use shoal::transport::Node;
use shoal_registry::core::LeaseConfig;
use shoal_registry::{LockOptions, LockResult, Registry, RegistryConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::{lock, parse_value};

/// The factory of the cluster test's registry names, on every node.
pub(crate) const WORKER: &str = "cluster-test-worker";

/// How long one call through a name may take (resolution and start included).
const CALL_TIMEOUT: Duration = Duration::from_secs(4);

/// How long the checker may take to answer one line.
const CHECKER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one acquisition of the lock loop waits before it looks at its stop flag again.
const LOCK_WAIT: Duration = Duration::from_millis(1_500);

/// Writes to the checker per hold of the lock.
const WRITES_PER_HOLD: u64 = 5;

/// The registry's configuration with a host lease of `lease_ms` (renewed every third of it;
/// the drift and stop margins at their defaults).
pub(crate) fn config(lease_ms: u64) -> RegistryConfig {
    let duration = Duration::from_millis(lease_ms);
    let lease = LeaseConfig { duration, renew_every: duration / 3, ..LeaseConfig::default() };
    RegistryConfig { lease, ..RegistryConfig::default() }
}

/// The connections to checkers, shared by the workers and the lock loop of this node.
#[derive(Clone, Default)]
pub(crate) struct Checkers {
    by_addr: Arc<Mutex<HashMap<SocketAddr, Arc<Checker>>>>,
}

impl Checkers {
    fn get(&self, addr: SocketAddr) -> Arc<Checker> {
        lock(&self.by_addr)
            .entry(addr)
            .or_insert_with(|| Arc::new(Checker { addr, stream: tokio::sync::Mutex::new(None) }))
            .clone()
    }
}

/// One checker's connection.
struct Checker {
    addr: SocketAddr,
    stream: tokio::sync::Mutex<Option<BufReader<TcpStream>>>,
}

impl Checker {
    /// Sends `line` and waits for the checker's answer.
    async fn ask(&self, line: &str) -> Result<String, String> {
        let mut stream = self.stream.lock().await;
        let asked = tokio::time::timeout(CHECKER_TIMEOUT, async {
            if stream.is_none() {
                let connected = TcpStream::connect(self.addr).await?;
                connected.set_nodelay(true)?;
                *stream = Some(BufReader::new(connected));
            }
            let connection = stream.as_mut().expect("connected above");
            connection.get_mut().write_all(format!("{line}\n").as_bytes()).await?;
            let mut answer = String::new();
            if connection.read_line(&mut answer).await? == 0 {
                return Err(std::io::Error::other("the checker closed the connection"));
            }
            Ok(answer.trim_end().to_owned())
        })
        .await;
        match asked {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => {
                *stream = None;
                Err(format!("checker {}: {error}", self.addr))
            }
            Err(_) => {
                *stream = None;
                Err(format!("checker {}: no answer within {CHECKER_TIMEOUT:?}", self.addr))
            }
        }
    }
}

/// A registry name's process: reports its start and (through its node) its stop to the
/// checker, and answers a call with its node and pid.
struct Worker {
    name: String,
    node: String,
    checker: Arc<Checker>,
}

impl Process for Worker {
    type Message = ();
    type Call = ();
    type Reply = String;

    async fn init(&mut self, ctx: &mut Context<Self>) -> Result<(), ExitReason> {
        let pid = ctx.pid();
        let runtime = ctx.runtime().clone();
        let node = self.node.clone();
        let incarnation = runtime.incarnation();
        let who = format!("{} {node} {incarnation} {pid}", self.name);
        // Watched before the start is reported, so no end goes unreported.
        let ended = runtime.watch(pid);
        if let Err(error) = self.checker.ask(&format!("start {who}")).await {
            eprintln!("{node}: worker {} not started: {error}", self.name);
            return Err(ExitReason::custom("the checker did not take its start"));
        }
        let checker = self.checker.clone();
        tokio::spawn(async move {
            let reason = ended.await.to_string().replace(char::is_whitespace, "_");
            if let Err(error) = checker.ask(&format!("stop {who} {reason}")).await {
                eprintln!("{node}: the stop of {who} was not reported: {error}");
            }
        });
        Ok(())
    }

    async fn handle_cast(&mut self, (): (), _: &mut Context<Self>) {}

    async fn handle_call(&mut self, (): (), reply: ReplyTo<String>, ctx: &mut Context<Self>) {
        reply.send(format!("{}/{}", self.node, ctx.pid()));
    }

    fn remote_messages() -> Option<Codec<Self>> {
        Some(Codec::msgpack())
    }
}

/// Registers the [`WORKER`] factory on `node`.
pub(crate) fn register_worker(node: &Node, checkers: &Checkers) -> Result<(), String> {
    let (checkers, node_name) = (checkers.clone(), node.name().to_owned());
    node.runtime()
        .register_factory(WORKER, move |(name, checker): (String, SocketAddr)| Worker {
            name,
            node: node_name.clone(),
            checker: checkers.get(checker),
        })
        .map_err(|error| format!("cannot register the worker factory: {error}"))
}

/// `names call RESTART CHECKER NAME...`: calls every name (started on first use), all at
/// once; answers `NAME=NODE/PID` for each, or `NAME=!` for one whose call failed (the reason
/// goes to stderr).
pub(crate) async fn call_names(
    registry: &Registry,
    restart: &str,
    checker: &str,
    names: &[&str],
) -> Result<String, String> {
    let restart = match restart {
        "permanent" => Restart::Permanent,
        "temporary" => Restart::Temporary,
        other => return Err(format!("restart `{other}` is not `permanent` or `temporary`")),
    };
    let checker: SocketAddr = parse_value("names call", checker)?;
    let mut calls = Vec::with_capacity(names.len());
    for &name in names {
        let spec = ChildSpec::new(name, WORKER, &(name, checker))
            .map_err(|error| format!("the spec of {name}: {error}"))?;
        let handle = registry.name(name, &spec, restart).map_err(|error| error.to_string())?;
        calls.push(tokio::spawn(async move {
            let called = tokio::time::timeout(CALL_TIMEOUT, handle.call((), CALL_TIMEOUT)).await;
            match called {
                Ok(Ok(answer)) => Ok::<String, String>(answer),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
            }
        }));
    }
    let mut answers = Vec::with_capacity(names.len());
    for (name, call) in names.iter().zip(calls) {
        match call.await {
            Ok(Ok(answer)) => answers.push(format!("{name}={answer}")),
            Ok(Err(error)) => {
                eprintln!("names call {name}: {error}");
                answers.push(format!("{name}=!"));
            }
            Err(error) => {
                eprintln!("names call {name}: {error}");
                answers.push(format!("{name}=!"));
            }
        }
    }
    Ok(answers.join(" "))
}

/// `lock info KEY`: `free`, or `holder=PID host=NODE token=T count=C waiters=W` as the
/// cluster has the lock now (one consensus read).
pub(crate) async fn lock_info(registry: &Registry, key: &str) -> Result<String, String> {
    match registry.lock_info(key).await.map_err(|error| error.to_string())? {
        None => Ok("free".to_owned()),
        Some(info) => Ok(format!(
            "holder={} host={} token={} count={} waiters={}",
            info.holder, info.host, info.token, info.count, info.waiters
        )),
    }
}

/// What the lock loop has done.
#[derive(Default)]
struct LockStats {
    acquired: AtomicU64,
    writes: AtomicU64,
    refused: AtomicU64,
    /// Holds cut short because the guard was lost.
    lost: AtomicU64,
    /// Acquisitions that gave up waiting.
    timeouts: AtomicU64,
    errors: AtomicU64,
    /// The token held now (0: none).
    holding: AtomicU64,
    /// How long the next hold lasts, once, instead of the loop's own (0: the loop's own).
    hold_next_ms: AtomicU64,
    stop: AtomicBool,
}

/// The lock loop of this node, if one runs.
#[derive(Default)]
pub(crate) struct LockLoop {
    running: Option<(Arc<LockStats>, tokio::task::JoinHandle<()>)>,
}

impl LockLoop {
    /// `lock run KEY CHECKER HOLD_MS`: starts the loop.
    pub(crate) fn run(
        &mut self,
        registry: &Registry,
        key: &str,
        checker: &str,
        hold_ms: &str,
        checkers: &Checkers,
    ) -> Result<String, String> {
        if self.running.as_ref().is_some_and(|(_, task)| !task.is_finished()) {
            return Err("a lock loop runs".to_owned());
        }
        let checker = checkers.get(parse_value("lock run", checker)?);
        let hold = Duration::from_millis(parse_value("lock run", hold_ms)?);
        let stats = Arc::new(LockStats::default());
        let task =
            tokio::spawn(lock_loop(registry.clone(), key.to_owned(), checker, hold, stats.clone()));
        self.running = Some((stats, task));
        Ok(String::new())
    }

    /// `lock hold-next MS`: the next hold lasts `MS`.
    pub(crate) fn hold_next(&self, ms: &str) -> Result<String, String> {
        let (stats, _) = self.running.as_ref().ok_or("no lock loop runs")?;
        stats.hold_next_ms.store(parse_value("lock hold-next", ms)?, Ordering::Relaxed);
        Ok(String::new())
    }

    /// `lock report`: `acquired=A writes=W refused=R lost=L timeouts=T errors=E holding=TOKEN`.
    pub(crate) fn report(&self) -> Result<String, String> {
        let (stats, _) = self.running.as_ref().ok_or("no lock loop ran")?;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Ok(format!(
            "acquired={} writes={} refused={} lost={} timeouts={} errors={} holding={}",
            load(&stats.acquired),
            load(&stats.writes),
            load(&stats.refused),
            load(&stats.lost),
            load(&stats.timeouts),
            load(&stats.errors),
            load(&stats.holding),
        ))
    }

    /// `lock stop`: stops the loop after its current acquisition; answers its report.
    pub(crate) async fn stop(&mut self) -> Result<String, String> {
        let (stats, task) = self.running.as_mut().ok_or("no lock loop ran")?;
        stats.stop.store(true, Ordering::Relaxed);
        let bound =
            LOCK_WAIT * 4 + Duration::from_millis(stats.hold_next_ms.load(Ordering::Relaxed));
        if tokio::time::timeout(bound, task).await.is_err() {
            return Err(format!("the lock loop did not stop within {bound:?}"));
        }
        self.report()
    }
}

/// Acquires `key`, writes to the checker while holding it, releases it; until stopped.
async fn lock_loop(
    registry: Registry,
    key: String,
    checker: Arc<Checker>,
    hold: Duration,
    stats: Arc<LockStats>,
) {
    let node = registry.node().name().to_owned();
    let count = |counter: &AtomicU64| counter.fetch_add(1, Ordering::Relaxed);
    while !stats.stop.load(Ordering::Relaxed) {
        // Never cancelled from outside: a waiter given up by dropping its future could stay
        // queued; the timeout leaves the queue as the registry documents.
        let acquired = registry.lock(&key, LockOptions::default().timeout(LOCK_WAIT)).await;
        let guard = match acquired {
            Ok(LockResult::Acquired(guard)) => guard,
            Ok(LockResult::HeldBy { .. } | LockResult::NoQuorum) => {
                count(&stats.timeouts);
                continue;
            }
            Err(error) => {
                eprintln!("{node}: lock {key}: {error}");
                count(&stats.errors);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        count(&stats.acquired);
        let token = guard.token();
        stats.holding.store(token, Ordering::Relaxed);
        let this_hold = match stats.hold_next_ms.swap(0, Ordering::Relaxed) {
            0 => hold,
            ms => Duration::from_millis(ms),
        };
        // Long holds (asked for with `hold-next`) write every 20 ms, short ones a few times.
        let writes = (this_hold.as_millis() as u64 / 20).max(WRITES_PER_HOLD);
        for step in 1..=writes {
            if guard.is_lost() {
                eprintln!("{node}: lock {key} token {token} lost after {} writes", step - 1);
                count(&stats.lost);
                break;
            }
            match checker.ask(&format!("write {key} {token} {node} {step}")).await {
                Ok(answer) if answer == "ok" => count(&stats.writes),
                Ok(answer) => {
                    eprintln!("{node}: write {key} {token} {step}: {answer}");
                    count(&stats.refused)
                }
                Err(error) => {
                    eprintln!("{node}: write {key} {token} {step}: {error}");
                    count(&stats.errors)
                }
            };
            tokio::time::sleep(this_hold / writes as u32).await;
        }
        stats.holding.store(0, Ordering::Relaxed);
        if let Err(error) = guard.unlock().await {
            eprintln!("{node}: unlock {key} token {token}: {error}");
        }
    }
}
