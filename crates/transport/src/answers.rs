//! The answers this node waits for from its peers: replies to its processes' remote calls and
//! to node-level requests, and pongs, each under an id that travels in the request and comes
//! back in the [`crate::wire::Frame::Reply`] (or `Pong`).
//!
//! An answer is settled once; a caller that stopped waiting (it timed out) is swept away on the
//! next heartbeat; when a peer is lost, everything awaited from it fails at once, a process's
//! call as if the callee had exited with `noconnection`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use shoal_process::remote::RemoteReply;
use shoal_process::{ExitReason, NodeId, RemoteFailure};
use tokio::sync::oneshot;

use crate::peer::lock;
use crate::wire::Failure;

/// Someone waiting for an answer.
pub(crate) enum Waiter {
    /// A process's remote call, through the runtime.
    Runtime(RemoteReply),
    /// A node-level request made through the [`crate::Node`] API.
    Oneshot(oneshot::Sender<Result<Bytes, Failure>>),
}

impl Waiter {
    fn complete(self, outcome: Result<Bytes, Failure>) {
        match self {
            Self::Runtime(reply) => {
                reply.send(outcome.map_err(|failure| match failure {
                    Failure::Process(failure) => failure,
                    // A call by name that no process has there.
                    Failure::NotRegistered(_) => RemoteFailure::NoProc,
                    // A process call is only ever answered with a process failure.
                    other => RemoteFailure::BadReply(other.to_string()),
                }));
            }
            Self::Oneshot(sender) => {
                let _ = sender.send(outcome);
            }
        }
    }

    fn is_abandoned(&self) -> bool {
        match self {
            Self::Runtime(reply) => reply.is_closed(),
            Self::Oneshot(sender) => sender.is_closed(),
        }
    }

    /// Tells the waiter that `node` was lost before answering.
    fn lost(self) {
        match self {
            // A process's call fails as if the process had exited with `noconnection`.
            Self::Runtime(_) => {
                self.complete(Err(RemoteFailure::Exited(ExitReason::NoConnection).into()));
            }
            // A dropped sender tells the requester that the node was lost.
            Self::Oneshot(sender) => drop(sender),
        }
    }
}

/// The table of awaited answers, by id.
pub(crate) struct PendingAnswers {
    next_id: AtomicU64,
    awaited: Mutex<HashMap<u64, (NodeId, Waiter)>>,
}

impl Default for PendingAnswers {
    fn default() -> Self {
        Self { next_id: AtomicU64::new(1), awaited: Mutex::default() }
    }
}

impl PendingAnswers {
    /// An id no answer is awaited under (a heartbeat's ping).
    pub(crate) fn fresh_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Awaits an answer from `node` for `waiter`; returns the id the request carries.
    pub(crate) fn await_from(&self, node: NodeId, waiter: Waiter) -> u64 {
        let id = self.fresh_id();
        lock(&self.awaited).insert(id, (node, waiter));
        id
    }

    /// Awaits an answer from `node` through a oneshot channel.
    pub(crate) fn await_oneshot(
        &self,
        node: NodeId,
    ) -> (u64, oneshot::Receiver<Result<Bytes, Failure>>) {
        let (sender, receiver) = oneshot::channel();
        (self.await_from(node, Waiter::Oneshot(sender)), receiver)
    }

    /// Hands the answer `id` to its waiter, if still awaited.
    pub(crate) fn settle(&self, id: u64, outcome: Result<Bytes, Failure>) {
        let waiter = lock(&self.awaited).remove(&id);
        if let Some((_, waiter)) = waiter {
            waiter.complete(outcome);
        }
    }

    /// Stops awaiting `id` (the request was not sent, or its caller gave up); the waiter is
    /// handed back.
    pub(crate) fn withdraw(&self, id: u64) -> Option<Waiter> {
        lock(&self.awaited).remove(&id).map(|(_, waiter)| waiter)
    }

    /// Whether an answer from `node` is awaited.
    pub(crate) fn awaits_from(&self, node: NodeId) -> bool {
        lock(&self.awaited).values().any(|(from, _)| *from == node)
    }

    /// Fails everything awaited from `node`: it was lost.
    pub(crate) fn fail_from(&self, node: NodeId) {
        let lost: Vec<Waiter> = {
            let mut awaited = lock(&self.awaited);
            let ids: Vec<u64> =
                awaited.iter().filter(|(_, (from, _))| *from == node).map(|(id, _)| *id).collect();
            ids.into_iter().filter_map(|id| awaited.remove(&id)).map(|(_, w)| w).collect()
        };
        lost.into_iter().for_each(Waiter::lost);
    }

    /// Forgets the answers whose callers stopped waiting.
    pub(crate) fn sweep_abandoned(&self) {
        lock(&self.awaited).retain(|_, (_, waiter)| !waiter.is_abandoned());
    }
}
