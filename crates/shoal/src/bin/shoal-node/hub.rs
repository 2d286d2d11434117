//! The `hub` commands: hub [`HUB`] (`shoal-hub`) on this node, with short knobs
//! ([`config`]) so the cluster test's failovers and moves take well under a second, and its
//! children: processes of the factory [`FACTORY`], registered on every node, each keyed by a
//! number (child id `c/N`, the factory's argument `N`).
//!
//! Every child process records itself, while it lives, in this node's [`Live`] tally (from its
//! `init` until the process is gone, killed included), so `hub report` tells which children
//! really run here, from the processes themselves, besides what the hub lists
//! ([`Hub::which_children_local`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal::hub::core::{Ring, TableConfig};
use shoal::hub::{ChildStatus, Hub, HubChild, HubConfig, StartOptions};
use shoal::prelude::*;

use crate::{lock, parse_value};

/// The hub id every node runs.
pub(crate) const HUB: &str = "cluster-test";

/// The factory of the hub's children, on every node.
pub(crate) const FACTORY: &str = "cluster-test-hub-child";

/// Ring entries per node (fewer than the default 2,048: quicker rings in the debug build).
const VNODES: u32 = 128;

/// How long one `hub start` batch may take.
const START_TIMEOUT: Duration = Duration::from_secs(8);

/// The hub's configuration on every node: a node must be gone 500 ms before its children
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

/// The children that run on this node, by number, as their processes report themselves: how
/// many processes of each (more than one is a child doubled on this node).
type Live = Arc<Mutex<BTreeMap<u32, u32>>>;

/// A hub child: does nothing but live, and records that it does.
struct Tenant {
    number: u32,
    live: Live,
    /// Whether `init` recorded it (so that only a recorded process is taken out again).
    recorded: bool,
}

impl Process for Tenant {
    type Message = ();
    type Call = ();
    type Reply = ();

    async fn init(&mut self, _: &mut Context<Self>) -> Result<(), ExitReason> {
        *lock(&self.live).entry(self.number).or_default() += 1;
        self.recorded = true;
        Ok(())
    }

    async fn handle_cast(&mut self, (): (), _: &mut Context<Self>) {}
}

impl Drop for Tenant {
    fn drop(&mut self) {
        if !self.recorded {
            return;
        }
        let mut live = lock(&self.live);
        if let Some(count) = live.get_mut(&self.number) {
            *count -= 1;
            if *count == 0 {
                live.remove(&self.number);
            }
        }
    }
}

/// Hub [`HUB`] on this node and its children's tally.
pub(crate) struct HubCommands {
    hub: Hub,
    /// This node's name.
    name: String,
    live: Live,
}

impl HubCommands {
    /// Registers [`FACTORY`] and starts hub [`HUB`] with [`config`].
    pub(crate) async fn start(node: &Node) -> Result<Self, String> {
        let live = Live::default();
        let tally = live.clone();
        node.runtime()
            .register_factory(FACTORY, move |number: u32| Tenant {
                number,
                live: tally.clone(),
                recorded: false,
            })
            .map_err(|error| format!("cannot register the hub's factory: {error}"))?;
        let hub = Hub::start(node, HUB, config())
            .await
            .map_err(|error| format!("cannot start the hub: {error}"))?;
        Ok(HubCommands { hub, name: node.name().to_owned(), live })
    }

    /// `hub nodes`: the hub's nodes as this node sees them, `NAME,NAME,...`.
    pub(crate) fn nodes(&self) -> String {
        self.hub.nodes().join(",")
    }

    /// `hub start FROM COUNT`: starts children `c/FROM` .. `c/(FROM+COUNT-1)` in one awaited
    /// batch; `started=S failed=F`, and the first failure if any.
    pub(crate) async fn start_children(&self, from: &str, count: &str) -> Result<String, String> {
        let from: u32 = parse_value("hub start", from)?;
        let count: u32 = parse_value("hub start", count)?;
        let batch = (from..from.saturating_add(count))
            .map(|number| {
                let spec = ChildSpec::new(format!("c/{number}"), FACTORY, &number)
                    .map_err(|error| error.to_string())?;
                Ok(HubChild::new(spec))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let options = StartOptions { timeout: START_TIMEOUT, ..StartOptions::default() };
        let results =
            self.hub.init_children(batch, options).await.map_err(|error| error.to_string())?;
        let failed: Vec<String> = results
            .iter()
            .filter_map(|(child, result)| result.as_ref().err().map(|e| format!("{child}: {e}")))
            .collect();
        let mut answer =
            format!("started={} failed={}", results.len() - failed.len(), failed.len());
        if let Some(first) = failed.first() {
            answer.push_str(&format!(" first={}", first.replace(char::is_whitespace, "_")));
        }
        Ok(answer)
    }

    /// `hub report`: `nodes=NAME,... live=L rows=R doubled=D foreign=F mismatch=M
    /// ids=N,N,...`: the hub's nodes as this node sees them (as `hub nodes`), `L` child
    /// processes alive here (by their own records), `R` children the hub lists as running
    /// here, `D` children with more than one live process here, `F` live children this node's
    /// ring does not make this node the owner of, `M` children live here but not listed as
    /// running, or listed but not live; then the numbers of the live children, sorted.
    pub(crate) fn report(&self) -> String {
        let nodes = self.hub.nodes();
        let ring = Ring::with_vnodes(nodes.iter().map(String::as_str), VNODES);
        let rows: BTreeSet<String> = self
            .hub
            .which_children_local()
            .into_iter()
            .filter(|row| matches!(row.status, ChildStatus::Running(_)))
            .map(|row| row.child)
            .collect();
        let live = lock(&self.live).clone();
        let doubled = live.values().filter(|&&count| count > 1).count();
        let ids: BTreeSet<String> = live.keys().map(|number| format!("c/{number}")).collect();
        let foreign = ids.iter().filter(|id| ring.owner(id) != Some(self.name.as_str())).count();
        let mismatch = ids.symmetric_difference(&rows).count();
        let numbers: Vec<String> = live.keys().map(u32::to_string).collect();
        format!(
            "nodes={} live={} rows={} doubled={doubled} foreign={foreign} mismatch={mismatch} \
             ids={}",
            nodes.join(","),
            live.len(),
            rows.len(),
            numbers.join(",")
        )
    }
}
