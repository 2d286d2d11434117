//! The `hub` and `quorum-hub` commands: this node's two hubs (`shoal-hub`), with short knobs
//! ([`config`]) so the cluster test's failovers and moves take well under a second, and their
//! children, each keyed by a number (child id `c/N`, the factory's argument `N`):
//!
//! - hub [`HUB`], under the default divergence strategy (each side of a partition runs every
//!   child), its children from the factory [`FACTORY`];
//! - hub [`QUORUM_HUB`], under a majority quorum ([`quorum_config`]: more than half of
//!   `--quorum-hub-size` nodes), its children from the factory [`QUORUM_FACTORY`].
//!
//! Every child process records itself, while it lives, in its hub's [`Live`] tally (from its
//! `init` until the process is gone, killed included), so a report tells which children
//! really run here, from the processes themselves, besides what the hub lists
//! ([`Hub::which_children_local`]). The two hubs' factories and tallies are distinct, so
//! neither hub's report counts the other's processes. The third hub, of counters with hot
//! migration (`handover.rs`), uses the same commands ([`HubCommands::open`]) and records its
//! children the same way ([`Presence`]).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal::hub::core::{Partition, Ring, TableConfig};
use shoal::hub::{ChildRow, ChildStatus, Hub, HubChild, HubConfig, HubError, StartOptions};
use shoal::prelude::*;
use shoal::transport::Node;

use crate::{lock, parse_value};

/// The divergence hub every node runs (the `hub` commands).
pub(crate) const HUB: &str = "cluster-test";

/// The factory of [`HUB`]'s children, on every node.
pub(crate) const FACTORY: &str = "cluster-test-hub-child";

/// The majority-quorum hub every node runs (the `quorum-hub` commands).
pub(crate) const QUORUM_HUB: &str = "cluster-test-quorum";

/// The factory of [`QUORUM_HUB`]'s children, on every node.
pub(crate) const QUORUM_FACTORY: &str = "cluster-test-quorum-child";

/// Ring entries per node (fewer than the default 2,048: quicker rings in the debug build).
const VNODES: u32 = 128;

/// How long one `start` or `stop` batch may take.
const BATCH_TIMEOUT: Duration = Duration::from_secs(8);

/// The hubs' configuration on every node: a node must be gone 500 ms before its children
/// start elsewhere (3 s by default), the ring must stay unchanged 300 ms before children move
/// on a join (1 s), 128 ring entries per node, a reconcile tick of 50 ms (100 ms), an
/// anti-entropy exchange every 500 ms (2 s); an orphan is handed over after 250 ms more (1 s),
/// an action not done is issued again after 1 s (5 s).
pub(crate) fn config() -> HubConfig {
    HubConfig {
        table: TableConfig {
            down_after: Duration::from_millis(500),
            adopt_after: Duration::from_millis(250),
            retry_after: Duration::from_secs(1),
            settle: Duration::from_millis(300),
            vnodes: VNODES,
            ..TableConfig::default()
        },
        sync_every: Duration::from_millis(500),
        tick: Duration::from_millis(50),
        ..HubConfig::default()
    }
}

/// [`QUORUM_HUB`]'s configuration: [`config`], with a majority quorum of `cluster_size`
/// nodes, and tombstones kept 2 s (600 s by default), so that the children the quorum
/// scenario terminates at its end leave nothing in the hub's table for the scenarios after
/// it. (A tombstone stops a terminated child's copy from coming back from the other side of a
/// partition; the scenario terminates its children with the cluster whole.)
pub(crate) fn quorum_config(cluster_size: usize) -> HubConfig {
    let base = config();
    let partition = Partition::Majority { cluster_size };
    let tombstone_ttl = Duration::from_secs(2);
    HubConfig { table: TableConfig { partition, tombstone_ttl, ..base.table }, ..base }
}

/// The children that run on this node, by number, as their processes report themselves: how
/// many processes of each (more than one is a child doubled on this node).
pub(crate) type Live = Arc<Mutex<BTreeMap<u32, u32>>>;

/// A child process's record of itself in its hub's [`Live`] tally: taken in the process's
/// `init`, given back when the process is gone (dropped, killed included).
pub(crate) struct Presence {
    number: u32,
    live: Live,
}

impl Presence {
    /// Records child `number` as alive in `live`.
    pub(crate) fn enter(number: u32, live: &Live) -> Self {
        *lock(live).entry(number).or_default() += 1;
        Presence { number, live: live.clone() }
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        let mut live = lock(&self.live);
        if let Some(count) = live.get_mut(&self.number) {
            *count -= 1;
            if *count == 0 {
                live.remove(&self.number);
            }
        }
    }
}

/// A hub child: does nothing but live, and records that it does.
struct Tenant {
    number: u32,
    live: Live,
    /// Taken in `init` (so that only a process that started is recorded).
    presence: Option<Presence>,
}

impl Process for Tenant {
    type Message = ();
    type Call = ();
    type Reply = ();

    async fn init(&mut self, _: &mut Context<Self>) -> Result<(), ExitReason> {
        self.presence = Some(Presence::enter(self.number, &self.live));
        Ok(())
    }

    async fn handle_cast(&mut self, (): (), _: &mut Context<Self>) {}
}

/// One hub on this node, the factory of its children and their tally.
pub(crate) struct HubCommands {
    hub: Hub,
    factory: &'static str,
    /// This node's name.
    name: String,
    live: Live,
}

impl HubCommands {
    /// Registers `factory` (children that record themselves in this hub's tally) and starts
    /// hub `id` with `config`.
    pub(crate) async fn start(
        node: &Node,
        id: &str,
        factory: &'static str,
        config: HubConfig,
    ) -> Result<Self, String> {
        let live = Live::default();
        let tally = live.clone();
        node.runtime()
            .register_factory(factory, move |number: u32| Tenant {
                number,
                live: tally.clone(),
                presence: None,
            })
            .map_err(|error| format!("cannot register the factory of hub {id}: {error}"))?;
        Self::open(node, id, factory, live, config).await
    }

    /// Starts hub `id` with `config`, its children from `factory` (registered already), which
    /// record themselves in `live`.
    pub(crate) async fn open(
        node: &Node,
        id: &str,
        factory: &'static str,
        live: Live,
        config: HubConfig,
    ) -> Result<Self, String> {
        let hub = Hub::start(node, id, config)
            .await
            .map_err(|error| format!("cannot start hub {id}: {error}"))?;
        Ok(HubCommands { hub, factory, name: node.name().to_owned(), live })
    }

    /// The hub.
    pub(crate) fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Runs one of this hub's commands: the words after `hub` or `quorum-hub`.
    pub(crate) async fn handle(&self, words: &[&str]) -> Result<String, String> {
        match words {
            ["nodes"] => Ok(self.nodes()),
            ["start", from, count] => self.start_children(from, count).await,
            ["stop", from, count] => self.stop_children(from, count).await,
            ["report"] => Ok(self.report()),
            ["listing"] => Ok(self.listing()),
            _ => Err(format!("unknown command `{}` for hub {}", words.join(" "), self.hub.id())),
        }
    }

    /// `nodes`: the hub's nodes as this node sees them, `NAME,NAME,...`.
    fn nodes(&self) -> String {
        self.hub.nodes().join(",")
    }

    /// `start FROM COUNT`: starts children `c/FROM` .. `c/(FROM+COUNT-1)` in one awaited
    /// batch; `started=S failed=F`, and the first failure if any; `no-quorum` (an error) if
    /// this node is without its quorum.
    async fn start_children(&self, from: &str, count: &str) -> Result<String, String> {
        let numbers = parse_range("start", from, count)?;
        let batch = numbers
            .map(|number| {
                let spec = ChildSpec::new(format!("c/{number}"), self.factory, &number)
                    .map_err(|error| error.to_string())?;
                Ok(HubChild::new(spec))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let options = StartOptions { timeout: BATCH_TIMEOUT, ..StartOptions::default() };
        let results =
            self.hub.init_children(batch, options).await.map_err(|error| match error {
                HubError::NoQuorum => "no-quorum".to_owned(),
                error => error.to_string(),
            })?;
        Ok(tally_results("started", &results))
    }

    /// `stop FROM COUNT`: terminates children `c/FROM` .. `c/(FROM+COUNT-1)` where they run,
    /// in one awaited batch; `stopped=S failed=F`, and the first failure if any.
    async fn stop_children(&self, from: &str, count: &str) -> Result<String, String> {
        let children: Vec<String> =
            parse_range("stop", from, count)?.map(|number| format!("c/{number}")).collect();
        let results = self.hub.stop_children(children, BATCH_TIMEOUT).await;
        Ok(tally_results("stopped", &results))
    }

    /// `report`: see the table in `main.rs`.
    fn report(&self) -> String {
        let nodes = self.hub.nodes();
        let ring = Ring::with_vnodes(nodes.iter().map(String::as_str), VNODES);
        let own = self.hub.which_children_local();
        let rows: BTreeSet<String> = own
            .iter()
            .filter(|row| matches!(row.status, ChildStatus::Running(_)))
            .map(|row| row.child.clone())
            .collect();
        let suspended = own.iter().filter(|row| row.status == ChildStatus::Suspended).count();
        let live = lock(&self.live).clone();
        let doubled = live.values().filter(|&&count| count > 1).count();
        let ids: BTreeSet<String> = live.keys().map(|number| format!("c/{number}")).collect();
        let foreign = ids.iter().filter(|id| ring.owner(id) != Some(self.name.as_str())).count();
        let mismatch = ids.symmetric_difference(&rows).count();
        let numbers: Vec<String> = live.keys().map(u32::to_string).collect();
        format!(
            "nodes={} quorum={} partitioned={} live={} rows={} own={} suspended={suspended} \
             doubled={doubled} foreign={foreign} mismatch={mismatch} ids={}",
            nodes.join(","),
            yes_no(self.hub.has_quorum()),
            yes_no(self.hub.is_partitioned()),
            live.len(),
            rows.len(),
            own.len(),
            numbers.join(",")
        )
    }

    /// `listing`: see the table in `main.rs`. Apart from `report`, which the hub scenario
    /// polls with 10,000 children: this one reads the whole table.
    fn listing(&self) -> String {
        let rows = self.hub.which_children_global();
        let suspended = rows.iter().filter(|row| row.status == ChildStatus::Suspended).count();
        format!("rows={} suspended={suspended} digest={:016x}", rows.len(), digest(&rows))
    }
}

/// `FROM` and `COUNT` of a `start` or `stop` command, as the range of child numbers.
fn parse_range(command: &str, from: &str, count: &str) -> Result<std::ops::Range<u32>, String> {
    let from: u32 = parse_value(command, from)?;
    let count: u32 = parse_value(command, count)?;
    Ok(from..from.saturating_add(count))
}

/// `VERB=S failed=F [first=CHILD:_ERROR]`: a batch's results, by child.
fn tally_results<T, E: std::fmt::Display>(
    verb: &str,
    results: &[(String, Result<T, E>)],
) -> String {
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(child, result)| result.as_ref().err().map(|e| format!("{child}: {e}")))
        .collect();
    let mut answer = format!("{verb}={} failed={}", results.len() - failed.len(), failed.len());
    if let Some(first) = failed.first() {
        answer.push_str(&format!(" first={}", first.replace(char::is_whitespace, "_")));
    }
    answer
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

/// A digest of a hub's whole listing (every copy of every child: where, how, which pid), so
/// that the driver can tell whether nodes agree without reading thousands of rows from each.
/// `DefaultHasher::new()` hashes alike in every process of one build, which every node is.
fn digest(rows: &[ChildRow]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for row in rows {
        row.child.hash(&mut hasher);
        row.node.hash(&mut hasher);
        match &row.status {
            ChildStatus::Running(pid) => (0u8, pid).hash(&mut hasher),
            ChildStatus::Restarting => 1u8.hash(&mut hasher),
            ChildStatus::Moving { to } => (2u8, to).hash(&mut hasher),
            ChildStatus::Unknown => 3u8.hash(&mut hasher),
            ChildStatus::Suspended => 4u8.hash(&mut hasher),
        }
    }
    hasher.finish()
}
