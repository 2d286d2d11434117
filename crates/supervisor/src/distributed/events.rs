//! Listeners: the hub's events told as a supervisor's ([`DistributedEvent`]), through
//! [`DistributedEvents`].
//!
//! The translation is sans-IO ([`Tracker`]): it keeps, per child name, the nodes whose copy
//! runs and the node it last ran on, and from that alone tells a restart elsewhere from a
//! first start and names why a copy stopped:
//!
//! ```text
//!  HubEvent::Started  ── another node ran it last, none runs it now ──► ChildRestartedElsewhere
//!                     └─ otherwise ─────────────────────────────────► ChildStarted
//!  HubEvent::Stopped  ── ended (a tombstone) ───────────────────────► ChildStopped { Ended }
//!                     ── another copy still runs ───────────────────► ChildStopped { Conflict }
//!                     └─ otherwise ─────────────────────────────────► ChildStopped { Exited }
//!  HubEvent::Moved ─────────────────────────────────────────────────► ChildStopped { Moved }
//!  HubEvent::Failed ────────────────────────────────────────────────► ChildFailed
//!  HubEvent::NodeDown ──► NodeDown, then ChildStopped { Lost } for each child it still ran
//!  HubEvent::NodeUp ────► NodeUp                 (the hub's other events are not told)
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::sync::Weak;

use shoal_hub::{ChildRow, ChildStatus, HubEvent};
use shoal_process::Pid;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use super::Inner;

/// What happened to a distributed supervisor, as this node sees it (every node of the
/// supervisor sees every child, not only its own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DistributedEvent {
    /// A child runs on `node`: its first start, a restart in place after it exited, or a
    /// second copy seen after a partition heals.
    ChildStarted {
        /// The child's name.
        name: String,
        /// Where it runs.
        node: String,
        /// Its pid.
        pid: Pid,
    },
    /// A child runs on `node` after it last ran on `from`: a failover (its node was lost or
    /// left) or a move to a node that joined.
    ChildRestartedElsewhere {
        /// The child's name.
        name: String,
        /// Where it ran.
        from: String,
        /// Where it runs now.
        node: String,
        /// Its new pid.
        pid: Pid,
    },
    /// A child's copy on `node` no longer runs.
    ChildStopped {
        /// The child's name.
        name: String,
        /// Where it ran.
        node: String,
        /// Why, as far as the hub's events tell.
        cause: StopCause,
    },
    /// A child failed: past its restart intensity ([`shoal_hub::HubConfig::max_restarts`],
    /// counted across the nodes it ran on), it ended for good on `node` (told after its
    /// [`StopCause::Ended`] when it was running); no node starts it again unless it is
    /// started anew.
    ChildFailed {
        /// The child's name.
        name: String,
        /// Where it last ran.
        node: String,
        /// Its restarts within the hub's restart window.
        restarts: usize,
    },
    /// A node started this supervisor, or came back.
    NodeUp {
        /// The node.
        node: String,
    },
    /// A node is out of this supervisor.
    NodeDown {
        /// The node.
        node: String,
        /// Whether it left on purpose (it stopped the supervisor), or was lost.
        left: bool,
    },
    /// This listener fell behind and missed this many of the hub's events; it starts again
    /// from the supervisor as it stands now, so the events that follow are sound, but what
    /// happened in between is not told.
    Missed(u64),
}

/// Why a child's copy stopped ([`DistributedEvent::ChildStopped`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopCause {
    /// Gone for good: terminated ([`super::DistributedSupervisor::terminate_child`]), or
    /// ended (a temporary child that exited, a transient one that exited normally, or one
    /// past its restart intensity, which [`DistributedEvent::ChildFailed`] follows). The
    /// hub's events do not tell a termination from an end.
    Ended,
    /// Its node went down or left the supervisor while it ran there; a permanent or transient
    /// child starts again on the node that now owns its name.
    Lost,
    /// It is moving to `to` (a node that joined owns its name now).
    Moved {
        /// The new node.
        to: String,
    },
    /// It ran on both sides of a partition and this copy lost (stopped with
    /// [`shoal_hub::CONFLICT`]): the copy on the name's owner runs on.
    Conflict,
    /// It stopped on a live node and is not gone: it crashed and is being restarted there,
    /// or its node lost its quorum.
    Exited,
}

/// The translation from hub events to [`DistributedEvent`]s (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    /// The copies running, by child name, then node.
    running: BTreeMap<String, BTreeMap<String, Pid>>,
    /// The node each child last ran on (forgotten when it ends).
    last: BTreeMap<String, String>,
}

impl Tracker {
    /// A tracker that starts from `rows` ([`shoal_hub::Hub::which_children_global`]).
    pub(crate) fn new(rows: &[ChildRow]) -> Self {
        let mut tracker = Tracker::default();
        for row in rows {
            if let (ChildStatus::Running(pid), Some(node)) = (&row.status, &row.node) {
                tracker.running.entry(row.child.clone()).or_default().insert(node.clone(), *pid);
                tracker.last.insert(row.child.clone(), node.clone());
            }
        }
        tracker
    }

    /// Translates `event`, pushing what it tells to `out`.
    pub(crate) fn handle(&mut self, event: HubEvent, out: &mut VecDeque<DistributedEvent>) {
        match event {
            HubEvent::Started { child, node, pid } => out.push_back(self.started(child, node, pid)),
            HubEvent::Stopped { child, node, ended } => {
                out.extend(self.stopped(child, node, ended));
            }
            HubEvent::Moved { child, from, to } => out.extend(self.moved(child, from, to)),
            HubEvent::Failed { child, node, restarts } => {
                self.forget(&child);
                out.push_back(DistributedEvent::ChildFailed { name: child, node, restarts });
            }
            HubEvent::NodeUp(node) => out.push_back(DistributedEvent::NodeUp { node }),
            HubEvent::NodeDown { node, left } => self.node_down(node, left, out),
            // Moves' ends, hand-overs, roles, quorum: the hub's, not a supervisor's (a move's
            // end was told by its start on the new node).
            HubEvent::Migrated { .. }
            | HubEvent::HandedOver { .. }
            | HubEvent::HandOverFailed { .. }
            | HubEvent::ForwardingEnded { .. }
            | HubEvent::Role { .. }
            | HubEvent::QuorumLost
            | HubEvent::QuorumRegained => {}
        }
    }

    fn started(&mut self, name: String, node: String, pid: Pid) -> DistributedEvent {
        let copies = self.running.entry(name.clone()).or_default();
        let others_run = copies.keys().any(|other| *other != node);
        copies.insert(node.clone(), pid);
        match self.last.insert(name.clone(), node.clone()) {
            Some(from) if from != node && !others_run => {
                DistributedEvent::ChildRestartedElsewhere { name, from, node, pid }
            }
            _ => DistributedEvent::ChildStarted { name, node, pid },
        }
    }

    fn stopped(&mut self, name: String, node: String, ended: bool) -> Option<DistributedEvent> {
        if !self.forget_copy(&name, &node) {
            // Told already (lost with its node), or never seen running.
            return None;
        }
        let cause = if ended {
            self.last.remove(&name);
            StopCause::Ended
        } else if self.running.contains_key(&name) {
            StopCause::Conflict
        } else {
            StopCause::Exited
        };
        Some(DistributedEvent::ChildStopped { name, node, cause })
    }

    fn moved(&mut self, name: String, from: String, to: String) -> Option<DistributedEvent> {
        let known = self.forget_copy(&name, &from);
        known.then(|| {
            let cause = StopCause::Moved { to };
            DistributedEvent::ChildStopped { name, node: from, cause }
        })
    }

    fn node_down(&mut self, node: String, left: bool, out: &mut VecDeque<DistributedEvent>) {
        let lost: Vec<String> = self
            .running
            .iter()
            .filter(|(_, copies)| copies.contains_key(&node))
            .map(|(name, _)| name.clone())
            .collect();
        out.push_back(DistributedEvent::NodeDown { node: node.clone(), left });
        for name in lost {
            self.forget_copy(&name, &node);
            let cause = StopCause::Lost;
            out.push_back(DistributedEvent::ChildStopped { name, node: node.clone(), cause });
        }
    }

    /// Forgets `name` altogether (it ended for good).
    fn forget(&mut self, name: &str) {
        self.running.remove(name);
        self.last.remove(name);
    }

    /// Forgets `node`'s running copy of `name`; whether there was one.
    fn forget_copy(&mut self, name: &str, node: &str) -> bool {
        let Some(copies) = self.running.get_mut(name) else { return false };
        let known = copies.remove(node).is_some();
        if copies.is_empty() {
            self.running.remove(name);
        }
        known
    }
}

/// A listener of one distributed supervisor on this node
/// ([`super::DistributedSupervisor::subscribe`]): its [`DistributedEvent`]s, in the order
/// this node sees them. It does not keep the supervisor running.
#[derive(Debug)]
pub struct DistributedEvents {
    supervisor: Weak<Inner>,
    receiver: broadcast::Receiver<HubEvent>,
    tracker: Tracker,
    ready: VecDeque<DistributedEvent>,
}

impl DistributedEvents {
    pub(crate) fn new(
        supervisor: Weak<Inner>,
        rows: &[ChildRow],
        receiver: broadcast::Receiver<HubEvent>,
    ) -> Self {
        DistributedEvents {
            supervisor,
            receiver,
            tracker: Tracker::new(rows),
            ready: VecDeque::new(),
        }
    }

    /// The next event, waiting for it; `None` once the supervisor is stopped here and every
    /// event was told.
    pub async fn recv(&mut self) -> Option<DistributedEvent> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            match self.receiver.recv().await {
                Ok(event) => self.tracker.handle(event, &mut self.ready),
                Err(RecvError::Lagged(missed)) => return self.missed(missed),
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// The next event if one is waiting; `None` if none is (or the supervisor is stopped).
    pub fn try_recv(&mut self) -> Option<DistributedEvent> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            match self.receiver.try_recv() {
                Ok(event) => self.tracker.handle(event, &mut self.ready),
                Err(TryRecvError::Lagged(missed)) => return self.missed(missed),
                Err(TryRecvError::Empty | TryRecvError::Closed) => return None,
            }
        }
    }

    /// Starts again from the supervisor as it stands, after missing `missed` events.
    fn missed(&mut self, missed: u64) -> Option<DistributedEvent> {
        if let Some(supervisor) = self.supervisor.upgrade() {
            let (rows, receiver) = supervisor.hub.subscribe_with_snapshot();
            self.tracker = Tracker::new(&rows);
            self.receiver = receiver;
        }
        Some(DistributedEvent::Missed(missed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_process::NodeId;

    fn pid(n: u64) -> Pid {
        Pid::from_parts(NodeId::from_u64(7), 1, n)
    }

    fn run(tracker: &mut Tracker, events: Vec<HubEvent>) -> Vec<DistributedEvent> {
        let mut out = VecDeque::new();
        for event in events {
            tracker.handle(event, &mut out);
        }
        out.into()
    }

    fn started(child: &str, node: &str, n: u64) -> HubEvent {
        HubEvent::Started { child: child.into(), node: node.into(), pid: pid(n) }
    }

    fn stopped(child: &str, node: &str, ended: bool) -> HubEvent {
        HubEvent::Stopped { child: child.into(), node: node.into(), ended }
    }

    fn child_stopped(name: &str, node: &str, cause: StopCause) -> DistributedEvent {
        DistributedEvent::ChildStopped { name: name.into(), node: node.into(), cause }
    }

    /// Failover: a child lost with its node and started on another is a restart elsewhere,
    /// told after the node's loss; a later hub event for the lost copy is not told twice.
    #[test]
    fn a_child_lost_with_its_node_and_started_on_another_restarted_elsewhere() {
        let mut tracker = Tracker::default();
        let told = run(
            &mut tracker,
            vec![
                started("a", "n1", 1),
                started("b", "n2", 2),
                HubEvent::NodeDown { node: "n1".into(), left: false },
                stopped("a", "n1", false),
                started("a", "n2", 3),
            ],
        );
        assert_eq!(
            told,
            vec![
                DistributedEvent::ChildStarted { name: "a".into(), node: "n1".into(), pid: pid(1) },
                DistributedEvent::ChildStarted { name: "b".into(), node: "n2".into(), pid: pid(2) },
                DistributedEvent::NodeDown { node: "n1".into(), left: false },
                child_stopped("a", "n1", StopCause::Lost),
                DistributedEvent::ChildRestartedElsewhere {
                    name: "a".into(),
                    from: "n1".into(),
                    node: "n2".into(),
                    pid: pid(3),
                },
            ]
        );
    }

    /// A copy stopped while another copy of its name runs lost a conflict; a crash and a
    /// restart in place are an exit and a start; an ended child starts afresh.
    #[test]
    fn stop_causes_conflict_exit_end_and_move() {
        let mut tracker = Tracker::new(&[ChildRow {
            child: "a".into(),
            node: Some("n1".into()),
            status: ChildStatus::Running(pid(1)),
        }]);
        let told = run(
            &mut tracker,
            vec![
                // The heal: the other side's copy is seen, then this one loses.
                started("a", "n2", 2),
                stopped("a", "n1", false),
                // A crash, and the restart in place.
                stopped("a", "n2", false),
                started("a", "n2", 3),
                // Moved to a node that joined, then terminated there.
                HubEvent::Moved { child: "a".into(), from: "n2".into(), to: "n3".into() },
                started("a", "n3", 4),
                stopped("a", "n3", true),
                // Started anew elsewhere: a first start, not a restart elsewhere.
                started("a", "n1", 5),
            ],
        );
        let start = |node: &str, n| DistributedEvent::ChildStarted {
            name: "a".into(),
            node: node.into(),
            pid: pid(n),
        };
        assert_eq!(
            told,
            vec![
                start("n2", 2),
                child_stopped("a", "n1", StopCause::Conflict),
                child_stopped("a", "n2", StopCause::Exited),
                start("n2", 3),
                child_stopped("a", "n2", StopCause::Moved { to: "n3".into() }),
                DistributedEvent::ChildRestartedElsewhere {
                    name: "a".into(),
                    from: "n2".into(),
                    node: "n3".into(),
                    pid: pid(4),
                },
                child_stopped("a", "n3", StopCause::Ended),
                start("n1", 5),
            ]
        );
    }

    /// A child past its restart intensity: its end, then its failure; it is forgotten, so
    /// a start anew elsewhere is a first start.
    #[test]
    fn a_failed_child_is_told_after_its_end_and_forgotten() {
        let mut tracker = Tracker::default();
        let told = run(
            &mut tracker,
            vec![
                started("a", "n1", 1),
                stopped("a", "n1", true),
                HubEvent::Failed { child: "a".into(), node: "n1".into(), restarts: 3 },
                started("a", "n2", 2),
            ],
        );
        assert_eq!(
            told,
            vec![
                DistributedEvent::ChildStarted { name: "a".into(), node: "n1".into(), pid: pid(1) },
                child_stopped("a", "n1", StopCause::Ended),
                DistributedEvent::ChildFailed { name: "a".into(), node: "n1".into(), restarts: 3 },
                DistributedEvent::ChildStarted { name: "a".into(), node: "n2".into(), pid: pid(2) },
            ]
        );
    }

    /// The hub's events that are not a supervisor's are not told.
    #[test]
    fn hub_only_events_are_not_told() {
        let mut tracker = Tracker::default();
        let told = run(
            &mut tracker,
            vec![
                HubEvent::QuorumLost,
                HubEvent::QuorumRegained,
                HubEvent::NodeUp("n2".into()),
                stopped("never-seen", "n2", true),
            ],
        );
        assert_eq!(told, vec![DistributedEvent::NodeUp { node: "n2".into() }]);
    }
}
