//! What a node tells others about itself ([`NodeSpec`]) and how its channels are set up
//! ([`ChannelConfig`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use shoal_process::NodeId;

/// The channel for membership, heartbeats and pings, always present, never behind bulk data.
pub const CONTROL_CHANNEL: &str = "control";

/// The channel process messages and signals use unless told otherwise.
pub const DEFAULT_CHANNEL: &str = "default";

/// How a node describes itself to others: everything needed to connect to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// The node's name, unique in the cluster.
    pub name: String,
    /// The current run of the node: larger at every start.
    pub incarnation: u64,
    /// Where it listens.
    pub listen_addrs: Vec<SocketAddr>,
    /// Its channels, by name (the control channel included).
    pub channels: BTreeMap<String, ChannelConfig>,
}

impl NodeSpec {
    /// The node's id, a hash of its name.
    pub fn id(&self) -> NodeId {
        NodeId::from_name(&self.name)
    }
}

/// A named channel: how many connections it opens to each peer, and whether a newer message
/// may replace a queued older one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelConfig {
    /// Parallel TCP connections per peer (at least 1). Everything one sender (a process, or a
    /// task outside processes) sends on this channel takes the same connection, whatever its
    /// kind and however its receivers are addressed, so between a sender and a receiver it
    /// arrives in the order sent. Nothing is ordered across channels.
    pub parallelism: u16,
    /// When true, a message still queued from a sender to a receiver is dropped when a newer
    /// one from the same sender to the same receiver is queued: for state updates where only
    /// the latest matters.
    pub monotonic: bool,
}

impl ChannelConfig {
    /// One connection, nothing superseded.
    pub const fn new() -> Self {
        Self { parallelism: 1, monotonic: false }
    }

    /// With `parallelism` connections per peer.
    pub const fn parallelism(mut self, parallelism: u16) -> Self {
        self.parallelism = parallelism;
        self
    }

    /// Monotonic: a newer message for a receiver supersedes a queued older one.
    pub const fn monotonic(mut self, monotonic: bool) -> Self {
        self.monotonic = monotonic;
        self
    }
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self::new()
    }
}
