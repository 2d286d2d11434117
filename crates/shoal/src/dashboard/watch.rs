//! The recorder: two tasks that keep what the API shows over time, each in a bounded ring.
//!
//! ```text
//!   transport node events ──> record_events ──> changes (last HISTORY_EVENTS, all nodes)
//!   every second ───────────> sample ────────> transport totals, Paxos (last SAMPLES each)
//! ```
//!
//! Both run until the dashboard stops (it aborts them); the first also ends when the node's
//! event stream closes (the node stopped).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use shoal_transport::NodeEvent;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::api::{Change, List, NodeRow, PaxosSample, TransportSample};
use super::views::{self, Shared};
use super::{HISTORY_EVENTS, HISTORY_PER_NODE, SAMPLES};

/// How often the charts' figures are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// The reason given for the nodes found connected when recording begins.
const AT_START: &str = "connected when the dashboard started";

/// The reason given for a change found by reading the state again after missed events.
const RESYNCHRONISED: &str = "resynchronised";

/// One node going up or down, as recorded.
#[derive(Clone, Debug)]
struct Recorded {
    node: String,
    change: Change,
}

/// What the recorder keeps: the latest changes and samples, each ring bounded.
#[derive(Default)]
pub(super) struct Watched {
    changes: VecDeque<Recorded>,
    /// Each node's latest state as recorded (to find changes after missed events).
    up: BTreeMap<String, bool>,
    lagged: u64,
    transport: VecDeque<TransportSample>,
    paxos: VecDeque<PaxosSample>,
}

impl Watched {
    fn record(&mut self, recorded: Recorded) {
        self.up.insert(recorded.node.clone(), recorded.change.up);
        push_bounded(&mut self.changes, recorded, HISTORY_EVENTS);
        // Forget the state of nodes no kept change mentions, so the map stays bounded too.
        if self.up.len() > HISTORY_EVENTS {
            let changes = &self.changes;
            self.up.retain(|node, _| changes.iter().any(|recorded| &recorded.node == node));
        }
    }

    /// After missed events: records every node whose state differs from the one recorded.
    fn resynchronise(&mut self, connected: &[String], now_ms: u64) {
        let went_down: Vec<String> = self
            .up
            .iter()
            .filter(|(node, up)| **up && !connected.contains(node))
            .map(|(node, _)| node.clone())
            .collect();
        for node in went_down {
            self.record(change(node, now_ms, false, None, RESYNCHRONISED));
        }
        for node in connected {
            if self.up.get(node) != Some(&true) {
                self.record(change(node.clone(), now_ms, true, None, RESYNCHRONISED));
            }
        }
    }

    /// Gives each row the latest [`HISTORY_PER_NODE`] changes of its node, oldest first, and
    /// adds a row (down) for each node with a kept change that is not a member any more.
    pub(super) fn fill_histories(&self, rows: &mut BTreeMap<String, NodeRow>) {
        let mut by_node: BTreeMap<&str, Vec<Change>> = BTreeMap::new();
        for recorded in &self.changes {
            by_node.entry(&recorded.node).or_default().push(recorded.change.clone());
        }
        for (node, changes) in by_node {
            let row = rows.entry(node.to_owned()).or_insert_with(|| NodeRow {
                name: views::clip(node),
                this_node: false,
                up: false,
                incarnation: changes.iter().rev().find_map(|change| change.incarnation),
                listen_addr: None,
                history: List::default(),
            });
            let skip = changes.len().saturating_sub(HISTORY_PER_NODE);
            let mut history = List::capped(changes.into_iter().skip(skip), HISTORY_PER_NODE);
            history.set_total(skip + history.items.len());
            row.history = history;
        }
    }

    pub(super) fn lagged(&self) -> u64 {
        self.lagged
    }

    pub(super) fn transport_samples(&self) -> Vec<TransportSample> {
        self.transport.iter().copied().collect()
    }

    pub(super) fn paxos_samples(&self) -> Vec<PaxosSample> {
        self.paxos.iter().copied().collect()
    }
}

fn push_bounded<T>(ring: &mut VecDeque<T>, item: T, max: usize) {
    if ring.len() == max {
        ring.pop_front();
    }
    ring.push_back(item);
}

fn change(node: String, at_ms: u64, up: bool, incarnation: Option<u64>, reason: &str) -> Recorded {
    Recorded { node, change: Change { at_ms, up, incarnation, reason: Some(reason.to_owned()) } }
}

/// Starts the recorder's tasks; the dashboard aborts them when it stops.
pub(super) fn start(shared: &Arc<Shared>) -> Vec<JoinHandle<()>> {
    // Subscribed before the connected nodes are read, so no change falls between the two.
    let events = shared.node.transport().subscribe();
    let now_ms = views::now_ms(&shared.node);
    let connected = shared.node.transport().nodes();
    shared.watched(|watched| {
        for node in connected {
            let incarnation = shared.node.transport().node_spec(&node).map(|s| s.incarnation);
            watched.record(change(node, now_ms, true, incarnation, AT_START));
        }
    });
    vec![tokio::spawn(record_events(shared.clone(), events)), tokio::spawn(sample(shared.clone()))]
}

async fn record_events(
    shared: Arc<Shared>,
    mut events: tokio::sync::broadcast::Receiver<NodeEvent>,
) {
    loop {
        let recorded = match events.recv().await {
            Ok(NodeEvent::Up { node, incarnation }) => Recorded {
                node,
                change: Change {
                    at_ms: views::now_ms(&shared.node),
                    up: true,
                    incarnation: Some(incarnation),
                    reason: None,
                },
            },
            Ok(NodeEvent::Down { node, incarnation, reason }) => {
                let reason = views::clip(&reason.to_string());
                change(node, views::now_ms(&shared.node), false, Some(incarnation), &reason)
            }
            Err(RecvError::Lagged(missed)) => {
                let connected = shared.node.transport().nodes();
                let now_ms = views::now_ms(&shared.node);
                shared.watched(|watched| {
                    watched.lagged = watched.lagged.saturating_add(missed);
                    watched.resynchronise(&connected, now_ms);
                });
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        shared.watched(|watched| watched.record(recorded));
    }
}

async fn sample(shared: Arc<Shared>) {
    let mut every = shared.node.runtime().clock().interval(SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut latencies = views::LastLatencies::default();
    loop {
        every.tick().await;
        let transport = views::transport_totals(&shared.node);
        let paxos = views::paxos_sample(&shared.node, &mut latencies).await;
        shared.watched(|watched| {
            push_bounded(&mut watched.transport, transport, SAMPLES);
            if let Some(paxos) = paxos {
                push_bounded(&mut watched.paxos, paxos, SAMPLES);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(node: &str, at_ms: u64) -> Recorded {
        let change = Change { at_ms, up: true, incarnation: Some(1), reason: None };
        Recorded { node: node.to_owned(), change }
    }

    /// The history is a bounded ring: the oldest changes go first.
    #[test]
    fn the_history_keeps_the_latest_changes_only() {
        let mut watched = Watched::default();
        for at in 0..(HISTORY_EVENTS as u64 + 10) {
            watched.record(up("a", at));
        }
        assert_eq!(watched.changes.len(), HISTORY_EVENTS);
        assert_eq!(watched.changes.front().map(|c| c.change.at_ms), Some(10));
    }

    /// After missed events, a node recorded up and no longer connected is recorded down, and
    /// a connected node not recorded up is recorded up, each once.
    #[test]
    fn resynchronising_records_each_difference_once() {
        let mut watched = Watched::default();
        watched.record(up("a", 1));
        watched.record(up("b", 2));
        watched.resynchronise(&["b".to_owned(), "c".to_owned()], 3);
        let recorded: Vec<(&str, bool)> =
            watched.changes.iter().skip(2).map(|c| (c.node.as_str(), c.change.up)).collect();
        assert_eq!(recorded, vec![("a", false), ("c", true)]);
        watched.resynchronise(&["b".to_owned(), "c".to_owned()], 4);
        assert_eq!(watched.changes.len(), 4);
    }

    /// A node's row shows at most its latest HISTORY_PER_NODE changes, oldest first, and says
    /// how many there were; a node that is no longer a member still gets a row, down.
    #[test]
    fn each_row_shows_the_latest_changes_of_its_node() {
        let mut watched = Watched::default();
        for at in 0..30 {
            watched.record(up("gone", at));
        }
        let mut rows = BTreeMap::new();
        watched.fill_histories(&mut rows);
        let row = rows.get("gone").expect("a row for a node with changes");
        assert!(!row.up);
        let json = serde_json::to_value(&row.history).expect("serialises");
        assert_eq!(json["total"], 30);
        assert_eq!(json["truncated"], true);
        assert_eq!(json["items"].as_array().map(Vec::len), Some(HISTORY_PER_NODE));
        assert_eq!(json["items"][0]["at_ms"], 10);
    }
}
