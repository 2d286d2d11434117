//! The checker of the registry scenarios: a line server on 127.0.0.1 in the driver, outside
//! the cluster (no fault cuts it off), that judges what the nodes tell it at the moment it is
//! told, under one lock, in the order the lines arrive.
//!
//! - **Fenced writes** (`write KEY TOKEN NODE STEP`, from a lock holder): the checker is the
//!   storage a lock protects, with a fencing check. A write is taken if its token is at least
//!   the largest taken for that key (equal only from the node that wrote it first), and refused
//!   otherwise (`refused LARGEST`): a refused write is a holder acting after another had the
//!   lock. Taken writes are kept in order.
//! - **Process lives** (`start NAME NODE INCARNATION PID` from a worker's `init`, before it
//!   serves anything; `stop NAME NODE INCARNATION PID REASON` from its node once it ended): the
//!   live processes of each name. A start while another process of the name is live is an
//!   overlap. A node SIGKILLed cannot report its processes' ends: the driver tells the checker
//!   ([`Checker::killed`]) once the process is reaped, and lines from that incarnation that
//!   were still in flight are taken as lives that had already ended.
//!
//! What it cannot see: the instants between a process's real start and its `start` line, and
//! between its end and its `stop` line. The registry leaves far more than that between two
//! lives of one name (a consensus write at least, a lease's claim wait after a lost host), so
//! an overlap here is a real one; a few microseconds of overlap would go unseen.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// A write the checker took.
#[derive(Clone, Debug)]
pub(super) struct FencedWrite {
    pub(super) token: u64,
    pub(super) node: String,
    pub(super) step: u64,
    pub(super) at: Instant,
}

/// One live process of a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Life {
    pub(super) node: String,
    pub(super) incarnation: u64,
    pub(super) pid: String,
}

/// Everything the checker was told, and its verdicts.
#[derive(Default)]
pub(super) struct Ledger {
    /// Taken writes per key, in the order they were taken.
    pub(super) writes: BTreeMap<String, Vec<FencedWrite>>,
    /// Refused writes, described.
    pub(super) refused: Vec<String>,
    /// Live processes per name.
    pub(super) live: BTreeMap<String, Vec<Life>>,
    /// Starts per name, ever.
    pub(super) starts: BTreeMap<String, u64>,
    /// Starts of a name while another process of it was live, described.
    pub(super) overlaps: Vec<String>,
    /// Stops of processes the checker did not know as live, described (a protocol error).
    pub(super) unknown_stops: Vec<String>,
    /// Node incarnations that were SIGKILLed.
    dead: BTreeSet<(String, u64)>,
    /// Lines that made no sense.
    pub(super) bad_lines: Vec<String>,
}

impl Ledger {
    /// Judges one line; the answer to send back.
    fn apply(&mut self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["write", key, token, node, step] => match (token.parse(), step.parse()) {
                (Ok(token), Ok(step)) => self.write(key, token, node, step),
                _ => self.bad(line),
            },
            ["start", name, node, incarnation, pid] => match incarnation.parse() {
                Ok(incarnation) => {
                    let life =
                        Life { node: (*node).to_owned(), incarnation, pid: (*pid).to_owned() };
                    self.start(name, life)
                }
                Err(_) => self.bad(line),
            },
            ["stop", name, node, incarnation, pid, _reason] => match incarnation.parse() {
                Ok(incarnation) => {
                    let life =
                        Life { node: (*node).to_owned(), incarnation, pid: (*pid).to_owned() };
                    self.stop(name, &life)
                }
                Err(_) => self.bad(line),
            },
            _ => self.bad(line),
        }
    }

    fn bad(&mut self, line: &str) -> String {
        self.bad_lines.push(line.to_owned());
        "error unknown line".to_owned()
    }

    fn write(&mut self, key: &str, token: u64, node: &str, step: u64) -> String {
        let writes = self.writes.entry(key.to_owned()).or_default();
        if let Some(last) = writes.last()
            && (token < last.token || (token == last.token && node != last.node))
        {
            self.refused.push(format!(
                "{node} wrote {key} with token {token} (step {step}) after {} wrote with token {}",
                last.node, last.token
            ));
            return format!("refused {}", last.token);
        }
        writes.push(FencedWrite { token, node: node.to_owned(), step, at: Instant::now() });
        "ok".to_owned()
    }

    fn start(&mut self, name: &str, life: Life) -> String {
        *self.starts.entry(name.to_owned()).or_default() += 1;
        if self.dead.contains(&(life.node.clone(), life.incarnation)) {
            // In flight when its node was SIGKILLed: it lived, and ended with its node.
            return "ok".to_owned();
        }
        let live = self.live.entry(name.to_owned()).or_default();
        if let Some(other) = live.first() {
            self.overlaps.push(format!(
                "{name}: {} started on {} while {} lived on {}",
                life.pid, life.node, other.pid, other.node
            ));
        }
        live.push(life);
        "ok".to_owned()
    }

    fn stop(&mut self, name: &str, life: &Life) -> String {
        let live = self.live.entry(name.to_owned()).or_default();
        match live.iter().position(|known| known == life) {
            Some(at) => {
                live.remove(at);
            }
            None if self.dead.contains(&(life.node.clone(), life.incarnation)) => {}
            None => self.unknown_stops.push(format!("{name}: {} on {}", life.pid, life.node)),
        }
        "ok".to_owned()
    }

    /// The live processes of `name`.
    pub(super) fn lives(&self, name: &str) -> &[Life] {
        self.live.get(name).map_or(&[], Vec::as_slice)
    }
}

/// The running checker. Dropping it closes the listener and every connection.
pub(super) struct Checker {
    addr: SocketAddr,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
}

impl Checker {
    /// Listens on 127.0.0.1, port 0, and serves every connection on a thread of its own.
    pub(super) fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("the checker cannot listen")?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (served, stopped, kept) = (ledger.clone(), stop.clone(), connections.clone());
        thread::spawn(move || accept(&listener, &served, &stopped, &kept));
        Ok(Self { addr, ledger, stop, connections })
    }

    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The ledger, to read (the nodes wait while it is held).
    pub(super) fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Node `node`, incarnation `incarnation`, was SIGKILLed and reaped: its processes ended.
    pub(super) fn killed(&self, node: &str, incarnation: u64) {
        let mut ledger = self.ledger();
        ledger.dead.insert((node.to_owned(), incarnation));
        for lives in ledger.live.values_mut() {
            lives.retain(|life| !(life.node == node && life.incarnation == incarnation));
        }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let connections = self.connections.lock().unwrap_or_else(PoisonError::into_inner);
        for connection in connections.iter() {
            let _ = connection.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Accepts connections until `stop`, polling (the listener does not block).
fn accept(
    listener: &TcpListener,
    ledger: &Arc<Mutex<Ledger>>,
    stop: &AtomicBool,
    connections: &Mutex<Vec<TcpStream>>,
) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let Ok(kept) = stream.try_clone() else { continue };
                connections.lock().unwrap_or_else(PoisonError::into_inner).push(kept);
                let ledger = ledger.clone();
                thread::spawn(move || serve(stream, &ledger));
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Answers each line of one connection until it closes.
fn serve(stream: TcpStream, ledger: &Mutex<Ledger>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else { return };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        let answer = ledger.lock().unwrap_or_else(PoisonError::into_inner).apply(&line);
        if writeln!(writer, "{answer}").is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fencing rule: a token below the largest taken is refused, and so is the largest
    /// from another node.
    #[test]
    fn stale_tokens_are_refused() {
        let mut ledger = Ledger::default();
        assert_eq!(ledger.apply("write k 3 a 1"), "ok");
        assert_eq!(ledger.apply("write k 3 a 2"), "ok");
        assert_eq!(ledger.apply("write k 4 b 1"), "ok");
        assert_eq!(ledger.apply("write k 3 a 3"), "refused 4");
        assert_eq!(ledger.apply("write k 4 c 1"), "refused 4");
        assert_eq!(ledger.apply("write other 1 a 1"), "ok");
        assert_eq!(ledger.writes["k"].len(), 3);
        assert_eq!(ledger.refused.len(), 2);
    }

    /// Two live processes of one name is an overlap; a killed node's processes are not live,
    /// even when their start arrives after the kill.
    #[test]
    fn overlapping_lives_are_flagged_and_kills_end_lives() {
        let mut ledger = Ledger::default();
        ledger.apply("start p b 7 <1.1.7>");
        ledger.apply("start p c 9 <2.1.9>");
        assert_eq!(ledger.overlaps.len(), 1);
        ledger.apply("stop p c 9 <2.1.9> normal");
        ledger.dead.insert(("b".into(), 7));
        ledger.live.clear();
        ledger.apply("start p b 7 <1.2.7>");
        assert!(ledger.lives("p").is_empty());
        ledger.apply("start p d 3 <3.1.3>");
        assert_eq!(ledger.lives("p").len(), 1);
        assert_eq!(ledger.overlaps.len(), 1);
        ledger.apply("stop q d 3 <3.9.3> normal");
        assert_eq!(ledger.unknown_stops.len(), 1);
        ledger.apply("nonsense");
        assert_eq!(ledger.bad_lines, ["nonsense"]);
    }
}
