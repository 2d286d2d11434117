//! `cargo xtask browser`: the dashboard (`shoal::dashboard`) of a real cluster, loaded in
//! headless Chromium and checked, before and after a node's SIGKILL (issue 22, point 4).
//!
//! It builds `shoal-node` (with the dashboard, as [`crate::build_programs`] builds the facade's
//! programs for CI), starts three of them on 127.0.0.1
//! (port 0 everywhere: `a`, then `b` and `c` joining it, acceptors `a,b,c`, each serving its
//! dashboard and announcing it as `dashboard ADDR`), and through their stdin commands:
//!
//! 1. registers the name [`NAME`] (through `a`), has `b`'s lock loop take [`LOCK`] and hold
//!    it, and starts [`CHILDREN`] children of hub `cluster-test` (through `a`); the name's
//!    worker and the lock loop report to a checker this command runs, which answers `ok`;
//! 2. loads `a`'s page in Chromium (`--dump-dom`, no WebDriver: the DOM once the page's
//!    scripts ran for [`VIRTUAL_TIME_MS`] of virtual time), again until the DOM shows, by the
//!    page's data attributes, the three nodes up and answering, the name on its node, the lock
//!    on `b` with the fencing token `lock info` gives, and the hub's children per node as
//!    each node's `hub report` counts them; saves `before.png`;
//! 3. SIGKILLs `c` and loads the page again until it shows `c` down (`data-state="down"` in
//!    the node list, not answering in the cluster view), within [`DOWN_BOUND`]; saves
//!    `after-kill.png`, and prints both screenshots' paths.
//!
//! Chromium runs with a private profile under `target/browser/`, in a process group of its
//! own, and is killed with its group if it runs past [`CHROMIUM_TIMEOUT`]. Every node is
//! killed on every way out (`NodeProcess`'s drop); their logs are in `target/browser/`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::cluster_test::{NodeProcess, generate_key, wait_until};
use crate::target_dir;

/// How long the run may take, from the first node's start to the last screenshot.
const BOUND: Duration = Duration::from_secs(180);

/// How long one command to a node may take to be answered.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// How long the page may take to show what the cluster holds.
const SHOW_BOUND: Duration = Duration::from_secs(60);

/// How long the page may take to show a killed node down.
const DOWN_BOUND: Duration = Duration::from_secs(15);

/// How long one run of Chromium may take before it is killed.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);

/// The virtual time the page's scripts run for before the DOM is dumped (a poll a second).
const VIRTUAL_TIME_MS: u64 = 3_000;

/// The pause between two looks at something that must come true.
const POLL_PAUSE: Duration = Duration::from_millis(300);

/// The registered name.
const NAME: &str = "billing";

/// The lock, held by `b`'s lock loop for the whole run.
const LOCK: &str = "nightly-report";

/// How many children of hub `cluster-test` start.
const CHILDREN: u32 = 12;

/// The hub they run in (`shoal-node`'s hub for the `hub` commands).
const HUB: &str = "cluster-test";

/// The node whose page is loaded, and the one killed.
const VIEWER: &str = "a";
const VICTIM: &str = "c";

pub(crate) fn run(options: &[String]) -> Result<ExitCode> {
    if let Some(unknown) = options.first() {
        bail!("`cargo xtask browser` takes no options, not `{unknown}`");
    }
    let chromium = find_chromium()?;
    let binary =
        crate::build_programs()?.join(format!("shoal-node{}", std::env::consts::EXE_SUFFIX));
    let dir = target_dir().join("browser");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let began = Instant::now();
    let run = Run { binary, chromium, dir, deadline: began + BOUND };
    match run.drive() {
        Ok(shots) => {
            for (path, shows) in shots {
                println!("screenshot {}: {shows}", path.display());
            }
            println!("browser ok ({:.1?})", began.elapsed());
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("error: browser failed: {error:#}");
            eprintln!("the nodes' logs and the last DOM: {}", run.dir.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `chromium` on `PATH` (`.ci/run` installs Debian's package when it is missing).
fn find_chromium() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromium"))
        .find(|candidate| candidate.is_file())
        .context("no `chromium` on PATH: install Debian's `chromium` package (.ci/run does)")
}

/// What the run needs, and its deadline.
struct Run {
    binary: PathBuf,
    chromium: PathBuf,
    /// Logs, the last DOM, Chromium's profile and the screenshots.
    dir: PathBuf,
    deadline: Instant,
}

/// A node process and its dashboard's address.
struct Node {
    process: NodeProcess,
    dashboard: SocketAddr,
}

impl Run {
    /// The whole run; the screenshots and what each shows.
    fn drive(&self) -> Result<Vec<(PathBuf, String)>> {
        let checker = Checker::start()?;
        let mut nodes = self.start_cluster()?;
        let expected = self.fill(&mut nodes, checker.addr)?;
        let url = format!("http://{}/", nodes[VIEWER].dashboard);
        println!("-- the page at {url}, in Chromium, until it shows the cluster");
        let shown = Instant::now();
        self.until(&url, SHOW_BOUND, |dom| expected.check(&mut nodes, dom))?;
        println!("   shown {:.1?} after the first load", shown.elapsed());
        let before = self.screenshot(&url, "before.png")?;

        println!("-- SIGKILL {VICTIM}, and the page until it shows {VICTIM} down");
        let mut victim = nodes.remove(VICTIM).context("the victim is ours")?;
        victim.process.kill();
        let killed = Instant::now();
        self.until(&url, DOWN_BOUND, |dom| shows_down(dom, VICTIM))?;
        println!("   {VICTIM} shown down {:.1?} after the kill", killed.elapsed());
        let after = self.screenshot(&url, "after-kill.png")?;
        Ok(vec![
            (
                before,
                format!(
                    "{VIEWER}'s dashboard: nodes a, b, c up and answering; name {NAME} on \
                     {}; lock {LOCK} held on b with its fencing token; hub {HUB}'s \
                     {CHILDREN} children per node",
                    expected.host
                ),
            ),
            (
                after,
                format!(
                    "the same page after {VICTIM}'s SIGKILL: {VICTIM} down in the node list, with \
                     a down in its history, and not answering in the cluster view"
                ),
            ),
        ])
    }

    /// `a`, then `b` and `c` joining it, each with its dashboard; waits for the full mesh.
    fn start_cluster(&self) -> Result<BTreeMap<&'static str, Node>> {
        println!("-- three shoal-node processes on 127.0.0.1: a, then b and c joining it");
        let key = generate_key(&self.binary)?;
        let mut nodes = BTreeMap::new();
        let mut seed = None;
        for name in ["a", "b", "c"] {
            let node = self.start_node(name, &key, seed)?;
            println!("   {name} on {}, dashboard on {}", node.process.addr(), node.dashboard);
            seed = seed.or(Some(node.process.addr()));
            nodes.insert(name, node);
        }
        let deadline = self.until_deadline(SHOW_BOUND);
        for (name, node) in &mut nodes {
            let others: Vec<&str> = ["a", "b", "c"].into_iter().filter(|n| n != name).collect();
            loop {
                let view = node.process.request("nodes", self.answer_deadline())?;
                let up: Vec<&str> =
                    view.split_whitespace().filter_map(|n| n.split(':').next()).collect();
                if up == others {
                    break;
                }
                ensure!(Instant::now() < deadline, "{name} sees `{view}`, not {others:?}");
                thread::sleep(POLL_PAUSE);
            }
        }
        Ok(nodes)
    }

    fn start_node(&self, name: &str, key: &str, seed: Option<SocketAddr>) -> Result<Node> {
        let log_path = self.dir.join(format!("{name}.log"));
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let mut command = Command::new(&self.binary);
        command
            .env("SHOAL_KEY", key)
            .args(["--name", name, "--listen", "127.0.0.1:0", "--acceptors", "a,b,c"])
            .args(["--dashboard", "127.0.0.1:0"])
            .stderr(Stdio::from(log));
        if let Some(seed) = seed {
            command.args(["--join", &seed.to_string()]);
        }
        let mut process = NodeProcess::spawn(name, command, self.answer_deadline())?;
        let line = process.next_line(self.answer_deadline()).context("its `dashboard` line")?;
        let dashboard = line
            .strip_prefix("dashboard ")
            .and_then(|addr| addr.parse().ok())
            .with_context(|| format!("{name} printed `{line}`, not `dashboard ADDR`"))?;
        Ok(Node { process, dashboard })
    }

    /// Registers the name, takes the lock, starts the hub's children; what the page must show.
    fn fill(
        &self,
        nodes: &mut BTreeMap<&'static str, Node>,
        checker: SocketAddr,
    ) -> Result<Expected> {
        println!("-- a name, a lock and hub children, through the nodes' commands");
        let deadline = self.answer_deadline();
        let viewer = &mut nodes.get_mut(VIEWER).context("a")?.process;
        let called = viewer.request(&format!("names call permanent {checker} {NAME}"), deadline)?;
        println!("   names call {NAME}: {called}");
        let host = called
            .strip_prefix(&format!("{NAME}="))
            .and_then(|at| at.split_once('/'))
            .map(|(node, _pid)| node.to_owned())
            .with_context(|| format!("`names call` answered `{called}`"))?;
        let started = viewer.request(&format!("hub start 0 {CHILDREN}"), deadline)?;
        println!("   hub start 0 {CHILDREN}: {started}");
        ensure!(started.starts_with(&format!("started={CHILDREN} ")), "not all started");
        let holder = &mut nodes.get_mut("b").context("b")?.process;
        holder.request(&format!("lock run {LOCK} {checker} 600000"), deadline)?;
        let token = loop {
            let info = holder.request(&format!("lock info {LOCK}"), self.answer_deadline())?;
            if info != "free" {
                println!("   lock info {LOCK}: {info}");
                let token = field(&info, "token")?;
                ensure!(field(&info, "host")? == "b", "the lock is not b's: {info}");
                break token.to_owned();
            }
            ensure!(Instant::now() < self.deadline, "the lock is still free");
            thread::sleep(POLL_PAUSE);
        };
        Ok(Expected { host, token })
    }

    /// Loads `url` until `check` passes on its DOM (`Ok(None)`), or `bound` passes: then the
    /// last reason it gave. The last DOM is kept in `last-dom.html`.
    fn until(
        &self,
        url: &str,
        bound: Duration,
        mut check: impl FnMut(&Dom) -> Result<Option<String>>,
    ) -> Result<()> {
        let deadline = self.until_deadline(bound);
        loop {
            let html = self.chromium(&["--dump-dom".to_owned(), url.to_owned()])?;
            let _ = fs::write(self.dir.join("last-dom.html"), &html);
            let dom = Dom::parse(&html);
            let Some(waiting) = check(&dom)? else { return Ok(()) };
            ensure!(Instant::now() < deadline, "not within {bound:?}: {waiting}");
            println!("   not yet: {waiting}");
            thread::sleep(POLL_PAUSE);
        }
    }

    /// Saves a screenshot of `url` as `file` in the run's directory; its path.
    fn screenshot(&self, url: &str, file: &str) -> Result<PathBuf> {
        let path = self.dir.join(file);
        let _ = fs::remove_file(&path);
        self.chromium(&[
            format!("--screenshot={}", path.display()),
            "--window-size=1400,1800".to_owned(),
            "--hide-scrollbars".to_owned(),
            url.to_owned(),
        ])?;
        ensure!(path.is_file(), "Chromium saved no screenshot at {}", path.display());
        Ok(path)
    }

    /// Runs headless Chromium with `args` after the common ones; its stdout. Killed with its
    /// process group past [`CHROMIUM_TIMEOUT`].
    fn chromium(&self, args: &[String]) -> Result<String> {
        let profile = self.dir.join("chromium-profile");
        let mut command = Command::new(&self.chromium);
        command
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
            .args(["--disable-dev-shm-usage", "--disable-extensions"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--virtual-time-budget={VIRTUAL_TIME_MS}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A group of its own, so that its helper processes go with it on a timeout.
            .process_group(0);
        let mut child = command.spawn().context("starting chromium")?;
        let group = child.id();
        let stdout = read_all_on_thread(child.stdout.take().context("stdout piped")?);
        let stderr = read_all_on_thread(child.stderr.take().context("stderr piped")?);
        let status = wait_until(&mut child, Instant::now() + CHROMIUM_TIMEOUT)?;
        // Whatever happened, nothing of this run outlives it.
        kill_group(group);
        let Some(status) = status else {
            let _ = child.wait();
            bail!("chromium ran past {CHROMIUM_TIMEOUT:?} and was killed");
        };
        let stdout = stdout.join().unwrap_or_default();
        if !status.success() {
            let stderr = stderr.join().unwrap_or_default();
            bail!("chromium failed ({status}): {}", stderr.trim());
        }
        Ok(stdout)
    }

    fn answer_deadline(&self) -> Instant {
        self.until_deadline(ANSWER_TIMEOUT)
    }

    /// `timeout` from now, but never past the run's deadline.
    fn until_deadline(&self, timeout: Duration) -> Instant {
        (Instant::now() + timeout).min(self.deadline)
    }
}

/// SIGKILLs process group `group` (Chromium and its helpers), if any of it is left.
fn kill_group(group: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .stderr(Stdio::null())
        .status();
}

/// Reads `pipe` to its end on a thread of its own (so that a full pipe never stalls the child).
fn read_all_on_thread(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// The value of `key=VALUE` among `answer`'s words.
fn field<'a>(answer: &'a str, key: &str) -> Result<&'a str> {
    answer
        .split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
        .with_context(|| format!("no `{key}=` in `{answer}`"))
}

/// What the page must show besides the nodes: where the name runs, and the lock's token.
struct Expected {
    host: String,
    token: String,
}

impl Expected {
    /// `None` if `dom` shows it all, else what it does not show yet. The hub's children per
    /// node are asked of each node (`hub report`'s `rows`: those it lists as running here).
    fn check(&self, nodes: &mut BTreeMap<&'static str, Node>, dom: &Dom) -> Result<Option<String>> {
        if dom.find("body", None, &[]).and_then(|body| body.attr("data-polls")).is_none() {
            return Ok(Some("the page has not polled yet".to_owned()));
        }
        for name in ["a", "b", "c"] {
            if dom.find("tr", Some("nodes"), &[("data-node", name), ("data-state", "up")]).is_none()
            {
                return Ok(Some(format!("node {name} is not shown up")));
            }
            let answering = [("data-node", name), ("data-answering", "true")];
            if dom.find("tr", Some("cluster"), &answering).is_none() {
                return Ok(Some(format!("node {name} is not shown answering")));
            }
        }
        let name = [("data-name", NAME), ("data-node", self.host.as_str())];
        if dom.find("tr", Some("names"), &name).is_none() {
            return Ok(Some(format!("name {NAME} is not shown on {}", self.host)));
        }
        let lock = [("data-lock", LOCK), ("data-node", "b"), ("data-token", self.token.as_str())];
        if dom.find("tr", Some("locks"), &lock).is_none() {
            return Ok(Some(format!("lock {LOCK} is not shown on b with token {}", self.token)));
        }
        let mut listed = BTreeMap::new();
        for (name, node) in nodes.iter_mut() {
            let report = node.process.request("hub report", Instant::now() + ANSWER_TIMEOUT)?;
            listed.insert(name.to_string(), field(&report, "rows")?.parse::<u32>()?);
        }
        let shown = dom.hub_children(HUB);
        ensure!(listed.values().sum::<u32>() <= CHILDREN, "more children than started: {listed:?}");
        let all_listed = listed.values().sum::<u32>() == CHILDREN;
        if !all_listed || shown != listed {
            return Ok(Some(format!(
                "hub {HUB}: the page shows {shown:?}, the nodes list {listed:?}"
            )));
        }
        Ok(None)
    }
}

/// `None` if `dom` shows `node` down in the node list and not answering (or gone) in the
/// cluster view, else what it shows.
fn shows_down(dom: &Dom, node: &str) -> Result<Option<String>> {
    let down = dom.find("tr", Some("nodes"), &[("data-node", node), ("data-state", "down")]);
    if down.is_none() {
        return Ok(Some(format!("{node} is not shown down in the node list")));
    }
    let answering =
        dom.find("tr", Some("cluster"), &[("data-node", node), ("data-answering", "true")]);
    if answering.is_some() {
        return Ok(Some(format!("{node} is still shown answering")));
    }
    Ok(None)
}

/// The start tags of a dumped DOM, each with its attributes and the id of the `<section>` it
/// is in: enough to find the page's rows by their data attributes, without an HTML parser.
struct Dom {
    tags: Vec<Tag>,
}

struct Tag {
    name: String,
    attrs: BTreeMap<String, String>,
    section: Option<String>,
    /// The `data-hub` of the hub block it is in (its own, for the block itself).
    hub: Option<String>,
}

impl Tag {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.get(name).map(String::as_str)
    }
}

impl Dom {
    fn parse(html: &str) -> Dom {
        let mut tags = Vec::new();
        let mut section = None;
        let mut hub = None;
        for piece in html.split('<').skip(1) {
            let Some(end) = piece.find('>') else { continue };
            let inside = &piece[..end];
            if inside.starts_with("/section") {
                section = None;
                continue;
            }
            if !inside.starts_with(|c: char| c.is_ascii_alphabetic()) {
                continue;
            }
            let (name, rest) = inside.split_once(char::is_whitespace).unwrap_or((inside, ""));
            let attrs = parse_attrs(rest);
            if name == "section" {
                section = attrs.get("id").cloned();
                hub = None;
            }
            if name == "div" && attrs.contains_key("data-hub") {
                hub = attrs.get("data-hub").cloned();
            }
            tags.push(Tag {
                name: name.to_ascii_lowercase(),
                attrs,
                section: section.clone(),
                hub: hub.clone(),
            });
        }
        Dom { tags }
    }

    /// The first tag `name` in `section` (anywhere if `None`) with every one of `attrs`.
    fn find(&self, name: &str, section: Option<&str>, attrs: &[(&str, &str)]) -> Option<&Tag> {
        self.tags.iter().find(|tag| {
            tag.name == name
                && section.is_none_or(|id| tag.section.as_deref() == Some(id))
                && attrs.iter().all(|(key, value)| tag.attr(key) == Some(value))
        })
    }

    /// The running children per node that hub `id`'s block shows (nodes with none left out).
    fn hub_children(&self, id: &str) -> BTreeMap<String, u32> {
        self.tags
            .iter()
            .filter(|tag| tag.name == "tr" && tag.hub.as_deref() == Some(id))
            .filter_map(|tag| {
                let running = tag.attr("data-running")?.parse::<u32>().ok()?;
                Some((tag.attr("data-node")?.to_owned(), running))
            })
            .filter(|(_, running)| *running > 0)
            .collect()
    }
}

/// `a="1" b="x &amp; y" c` → {a: 1, b: x & y, c: ""}.
fn parse_attrs(text: &str) -> BTreeMap<String, String> {
    let mut attrs = BTreeMap::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() && !rest.starts_with('/') {
        let name_end = rest.find(|c: char| c == '=' || c.is_whitespace()).unwrap_or(rest.len());
        let name = rest[..name_end].to_ascii_lowercase();
        rest = rest[name_end..].trim_start();
        let value = match rest.strip_prefix("=\"") {
            Some(quoted) => {
                let end = quoted.find('"').unwrap_or(quoted.len());
                rest = quoted.get(end + 1..).unwrap_or("");
                unescape(&quoted[..end])
            }
            None => String::new(),
        };
        attrs.insert(name, value);
        rest = rest.trim_start();
    }
    attrs
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// A line server for the name's worker and the lock loop: answers `ok` to every line, on
/// threads that end with this process.
struct Checker {
    addr: SocketAddr,
}

impl Checker {
    fn start() -> Result<Checker> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the checker")?;
        let addr = listener.local_addr()?;
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                thread::spawn(move || answer_ok(stream));
            }
        });
        Ok(Checker { addr })
    }
}

fn answer_ok(stream: TcpStream) {
    let Ok(mut writer) = stream.try_clone() else { return };
    for line in BufReader::new(stream).lines() {
        if line.is_err() || writer.write_all(b"ok\n").is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows are found by their attributes within their section, and a hub's rows by its block.
    #[test]
    fn the_dom_is_read_by_section_and_attribute() {
        let html = r#"<html><body data-polls="3"><section id="nodes"><table><tbody>
            <tr data-node="a" data-up="true" data-state="up"><td>a</td></tr>
            <tr data-node="c" data-up="false" data-state="down"></tr></tbody></table></section>
            <section id="locks"><tr data-lock="k &amp; l" data-node="b" data-token="7"></tr></section>
            <section id="hubs"><div data-hub="h"><table><tr data-node="a" data-running="5"></tr>
            <tr data-node="b" data-running="0"></tr></table></div>
            <div data-hub="other"><tr data-node="b" data-running="2"></tr></div></section>
            </body></html>"#;
        let dom = Dom::parse(html);
        assert_eq!(dom.find("body", None, &[]).and_then(|b| b.attr("data-polls")), Some("3"));
        assert!(
            dom.find("tr", Some("nodes"), &[("data-node", "c"), ("data-state", "down")]).is_some()
        );
        assert!(dom.find("tr", Some("locks"), &[("data-node", "c")]).is_none());
        assert!(
            dom.find("tr", Some("locks"), &[("data-lock", "k & l"), ("data-token", "7")]).is_some()
        );
        assert_eq!(dom.hub_children("h"), BTreeMap::from([("a".to_owned(), 5)]));
        assert_eq!(shows_down(&dom, "c").unwrap(), None);
        assert!(shows_down(&dom, "a").unwrap().is_some());
    }

    #[test]
    fn fields_are_read_by_key() {
        let info = "holder=<0.1.2> host=b token=42 count=1 waiters=0";
        assert_eq!(field(info, "token").unwrap(), "42");
        assert_eq!(field(info, "host").unwrap(), "b");
        assert!(field(info, "tok").is_err());
    }
}
