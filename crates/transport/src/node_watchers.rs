//! Local processes subscribed to node up and down events ([`crate::Node::monitor_nodes`], as
//! OTP's `net_kernel:monitor_nodes`): each gets every [`NodeEvent`] as a signal in its
//! mailbox ([`shoal_process::Signal::NodeUp`], [`shoal_process::Signal::NodeDown`]), in the
//! order the node saw them, and is unsubscribed when it exits.
//!
//! Bounds: one subscription per process (subscribing again changes nothing), removed when
//! the process exits. Events are signals, admitted like a monitor's `Down`; a node emits at
//! most one `Up` and one `Down` per session with each peer, and a new session takes a
//! handshake and, after a failure, the reconnect backoff, so what a subscriber that does not
//! drain its mailbox accumulates grows only with the sessions made meanwhile.

use std::collections::HashMap;
use std::sync::{Mutex, Weak};

use shoal_process::{Pid, Runtime};
use tokio::task::AbortHandle;

use crate::NodeEvent;
use crate::peer::lock;

/// The subscribers, each with the task that unsubscribes it when it exits.
#[derive(Default)]
pub(crate) struct NodeWatchers {
    subscribed: Mutex<HashMap<Pid, AbortHandle>>,
}

impl NodeWatchers {
    /// Subscribes the local process `pid`; `watchers` is this set, held weakly by the task
    /// that unsubscribes `pid` when it exits. Returns `false` if `pid` is not a live local
    /// process or is subscribed already.
    pub(crate) fn subscribe(&self, runtime: &Runtime, watchers: Weak<Self>, pid: Pid) -> bool {
        let mut subscribed = lock(&self.subscribed);
        if subscribed.contains_key(&pid) || !runtime.is_alive(pid) {
            return false;
        }
        let exited = runtime.watch(pid);
        let cleanup = tokio::spawn(async move {
            exited.await;
            if let Some(watchers) = watchers.upgrade() {
                lock(&watchers.subscribed).remove(&pid);
            }
        });
        subscribed.insert(pid, cleanup.abort_handle());
        true
    }

    /// Unsubscribes `pid`; returns whether it was subscribed.
    pub(crate) fn unsubscribe(&self, pid: Pid) -> bool {
        let removed = lock(&self.subscribed).remove(&pid);
        removed.inspect(AbortHandle::abort).is_some()
    }

    /// The subscribers, sorted.
    pub(crate) fn subscribers(&self) -> Vec<Pid> {
        let mut pids: Vec<Pid> = lock(&self.subscribed).keys().copied().collect();
        pids.sort();
        pids
    }

    /// Delivers `event` to every subscriber.
    pub(crate) fn notify(&self, runtime: &Runtime, event: &NodeEvent) {
        let pids: Vec<Pid> = lock(&self.subscribed).keys().copied().collect();
        for pid in pids {
            match event.clone() {
                NodeEvent::Up { node, incarnation } => {
                    runtime.deliver_node_up(pid, node, incarnation);
                }
                NodeEvent::Down { node, incarnation, reason } => {
                    runtime.deliver_node_down(pid, node, incarnation, reason.to_string());
                }
            }
        }
    }
}

impl Drop for NodeWatchers {
    fn drop(&mut self) {
        for cleanup in lock(&self.subscribed).values() {
            cleanup.abort();
        }
    }
}
