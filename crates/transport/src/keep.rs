//! Connection owners: a layer that needs the connection to a node holds a [`KeepConnection`]
//! for it ([`crate::Node::keep`]), and in [`Membership::Managed`](crate::Membership::Managed)
//! mode the transport closes a connection only when no layer on either node keeps it and
//! nothing uses it (see [`crate::NodeBuilder::idle_close`]).
//!
//! ```text
//!   Node::keep("b") ──▶ Keeps: "b" → 1 ──first──▶ Frame::Keep { keep: true } to b (b will not
//!   guard dropped   ──▶ Keeps: "b" → 0 ──last───▶ Frame::Keep { keep: false }  close it idle)
//!   guard.let_go()  ──▶ as dropped, and the connection may close at b's next quiet heartbeat
//! ```
//!
//! Each node tells its peer whether it keeps their connection, on the control channel, when
//! that changes, when a session begins and every few heartbeats; the peer's idle check reads
//! it ([`crate::peer::Peer::remote_keeps`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::membership::Members;
use crate::peer::lock;

/// How many keeps this node holds on each node, by name.
pub(crate) struct Keeps {
    counts: Mutex<HashMap<String, usize>>,
    members: Arc<Members>,
    /// Whether keeps change anything here: only managed connections close when idle.
    managed: bool,
}

/// How a keep ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Release {
    /// The keep ends; the connection closes once idle for the idle timeout (if nothing else
    /// holds it).
    Dropped,
    /// The keep ends and its holder judged the connection idle: it closes at the next
    /// heartbeat that finds it unused and quiet since.
    LetGo,
}

impl Keeps {
    pub(crate) fn new(members: Arc<Members>, managed: bool) -> Self {
        Self { counts: Mutex::default(), members, managed }
    }

    /// Whether any layer of this node keeps the connection to `name`.
    pub(crate) fn is_kept(&self, name: &str) -> bool {
        lock(&self.counts).get(name).is_some_and(|count| *count > 0)
    }

    /// One more keep of `name`; whether it is the first.
    pub(crate) fn acquire(&self, name: &str) -> bool {
        let first = {
            let mut counts = lock(&self.counts);
            let count = counts.entry(name.to_owned()).or_insert(0);
            *count += 1;
            *count == 1
        };
        if let Some(peer) = self.members.by_name(name) {
            peer.clear_let_go();
            if first && self.managed {
                peer.push_keep(true);
            }
        }
        first
    }

    fn release(&self, name: &str, how: Release) {
        let last = {
            let mut counts = lock(&self.counts);
            match counts.get_mut(name) {
                Some(count) if *count > 1 => {
                    *count -= 1;
                    false
                }
                Some(_) => {
                    counts.remove(name);
                    true
                }
                None => false,
            }
        };
        if !last || !self.managed {
            return;
        }
        if let Some(peer) = self.members.by_name(name) {
            peer.push_keep(false);
            if how == Release::LetGo {
                peer.mark_let_go();
            }
        }
    }
}

/// A layer's claim on the connection to one node, from [`crate::Node::keep`]: while any claim
/// on a node is held (here or on that node), the transport does not close their connection
/// when it is idle, and in [`Membership::Managed`](crate::Membership::Managed) mode it
/// connects to the node (as soon as it knows where it listens) and connects again after a
/// loss. Dropping it ends the claim. Cheap to hold: one count per node.
///
/// In full-mesh and static membership every connection is kept anyway, and a claim changes
/// nothing.
pub struct KeepConnection {
    keeps: Option<Arc<Keeps>>,
    node: Arc<str>,
}

impl KeepConnection {
    pub(crate) fn new(keeps: Arc<Keeps>, node: &str) -> Self {
        keeps.acquire(node);
        Self { keeps: Some(keeps), node: node.into() }
    }

    /// The node this claim is on.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Ends the claim, as dropping it does, for a holder that judged the connection idle
    /// itself (HyParView, after its linger): if nothing else holds the connection (no claim on
    /// either node, no monitor, link or call across it), it closes at the next heartbeat that
    /// finds no frame sent or received since, rather than after the idle timeout.
    pub fn let_go(mut self) {
        if let Some(keeps) = self.keeps.take() {
            keeps.release(&self.node, Release::LetGo);
        }
    }
}

/// A clone is one more claim on the same node.
impl Clone for KeepConnection {
    fn clone(&self) -> Self {
        match &self.keeps {
            Some(keeps) => Self::new(keeps.clone(), &self.node),
            None => Self { keeps: None, node: self.node.clone() },
        }
    }
}

impl Drop for KeepConnection {
    fn drop(&mut self) {
        if let Some(keeps) = self.keeps.take() {
            keeps.release(&self.node, Release::Dropped);
        }
    }
}

impl fmt::Debug for KeepConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeepConnection").field("node", &self.node).finish()
    }
}
