//! Identifiers: [`NodeId`], [`Pid`] and [`Ref`].
//!
//! All three are small, `Copy`, serialisable and comparable, so they can travel in messages
//! between nodes. A pid carries its node's *incarnation* (a number that changes every time the
//! node starts), so a pid minted by a previous run of a node never matches a process of the
//! current run.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Identifies a node cluster-wide: a stable 64-bit hash (FNV-1a) of the node's name.
///
/// Two nodes whose names hash alike cannot join one cluster; the transport's handshake refuses
/// the second one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(u64);

impl NodeId {
    /// The id of the node called `name`; the same on every machine and in every run.
    pub fn from_name(name: &str) -> Self {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let hash =
            name.bytes().fold(OFFSET, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(PRIME));
        Self(hash)
    }

    /// Rebuilds an id from [`NodeId::as_u64`].
    pub const fn from_u64(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw 64-bit value.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The low 32 bits are enough for a person to tell nodes apart in a log.
        write!(f, "{:08x}", self.0 as u32)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// A process identifier, valid across the cluster: node, incarnation of that node, local id.
///
/// Prints as `<node.id.incarnation>` with the node and incarnation shortened to hex, for
/// example `<3fa2c1d0.42.7f3a>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Pid {
    node: NodeId,
    incarnation: u64,
    id: u64,
}

impl Pid {
    /// The pid that stands for a process on `node` not known yet: the `Down` of a monitor by
    /// name (`Context::monitor` of a [`crate::Dest`] name) carries it when no process had the name. It names no
    /// process (local id 0 and incarnation 0 match no run of any node).
    pub const fn name_placeholder(node: NodeId) -> Self {
        Self { node, incarnation: 0, id: 0 }
    }

    /// Assembles a pid from its parts. Transports use this to rebuild pids read off the wire;
    /// a pid made up by hand names no process unless those parts match a live one.
    pub const fn from_parts(node: NodeId, incarnation: u64, id: u64) -> Self {
        Self { node, incarnation, id }
    }

    /// The node the process runs on.
    pub const fn node(&self) -> NodeId {
        self.node
    }

    /// The incarnation of that node when the process was spawned.
    pub const fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The process's number on its node, unique within one incarnation.
    pub const fn local_id(&self) -> u64 {
        self.id
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}.{}.{:04x}>", self.node, self.id, self.incarnation as u16)
    }
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A reference unique across the cluster and across restarts of a node: names a monitor, a
/// timer or a call.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ref {
    node: NodeId,
    incarnation: u64,
    n: u64,
}

impl Ref {
    pub(crate) const fn new(node: NodeId, incarnation: u64, n: u64) -> Self {
        Self { node, incarnation, n }
    }

    /// The node that made this reference.
    pub const fn node(&self) -> NodeId {
        self.node
    }

    /// Its number among the references its runtime made in this incarnation (from 0, one
    /// more each time): unique with the node and the incarnation, and the same in every
    /// replay of a simulation.
    pub const fn number(&self) -> u64 {
        self.n
    }
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#Ref<{}.{}.{:04x}>", self.node, self.n, self.incarnation as u16)
    }
}

impl fmt::Debug for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A fresh incarnation number: `now_us` (microseconds since the Unix epoch, on the node's
/// clock), and strictly greater than every incarnation handed out before in this OS process
/// (two runtimes started within the same microsecond still differ).
pub(crate) fn next_incarnation(now_us: u64) -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now_us.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_stable_hashes_of_the_name() {
        // FNV-1a 64 of "a" is a published test vector.
        assert_eq!(NodeId::from_name("a").as_u64(), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(NodeId::from_name("node-1"), NodeId::from_name("node-2"));
    }

    #[test]
    fn incarnations_strictly_increase() {
        let first = next_incarnation(5);
        let second = next_incarnation(5);
        assert!(second > first);
    }

    #[test]
    fn pids_print_readably() {
        let pid = Pid::from_parts(NodeId::from_u64(0x1234_5678_9abc_def0), 0x1_0007, 42);
        assert_eq!(pid.to_string(), "<9abcdef0.42.0007>");
    }
}
