//! What can go wrong starting a [`Node`](super::Node) or reaching one of its layers.

use std::net::SocketAddr;

/// Why a [`Node`](super::Node) did not start. Whatever had started is stopped again.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The transport node did not start (the listen address, the configuration).
    #[error("the transport did not start: {0}")]
    Transport(#[from] shoal_transport::NodeStartError),
    /// No seed could be joined within the join timeout; the last attempt's error.
    #[error("could not join any of {seeds:?}: {last}")]
    Join {
        /// The seeds tried.
        seeds: Vec<SocketAddr>,
        /// Why the last attempt failed.
        last: String,
    },
    /// The facade's service is open on the transport node already (a second `Node` over it).
    #[error("the node's control service is registered already")]
    AlreadyRunning,
    /// No node of the cluster said which Paxos acceptors it runs within the join timeout (none
    /// runs Paxos, or none answered).
    #[cfg(feature = "paxos")]
    #[error("no node of the cluster named its Paxos acceptors within the join timeout")]
    NoAcceptors,
    /// Paxos did not start.
    #[cfg(feature = "paxos")]
    #[error("Paxos did not start: {0}")]
    Paxos(#[from] shoal_paxos::PaxosStartError),
    /// Broadcast did not start.
    #[cfg(feature = "broadcast")]
    #[error("broadcast did not start: {0}")]
    Broadcast(#[from] shoal_broadcast::BroadcastStartError),
    /// The registry did not start.
    #[cfg(feature = "registry")]
    #[error("the registry did not start: {0}")]
    Registry(#[from] shoal_registry::RegistryStartError),
    /// Process groups did not start.
    #[cfg(feature = "registry")]
    #[error("process groups did not start: {0}")]
    Groups(#[from] shoal_registry::GroupsStartError),
    /// A hub given to the builder did not start.
    #[cfg(feature = "hub")]
    #[error("hub {id} did not start: {error}")]
    Hub {
        /// The hub's id.
        id: String,
        /// Why.
        error: shoal_hub::HubStartError,
    },
    /// A distributed supervisor given to the builder did not start.
    #[cfg(all(feature = "hub", feature = "supervisor"))]
    #[error("distributed supervisor {name} did not start: {error}")]
    Supervisor {
        /// The supervisor's name.
        name: String,
        /// Why.
        error: shoal_supervisor::DistributedStartError,
    },
}

/// A layer of a running [`Node`](super::Node) that is not there, or could not be started.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The layer is off on this node: its cargo feature is off, or the builder turned it off.
    #[error("{0} is off on this node (its cargo feature, or a builder setting)")]
    Off(&'static str),
    /// No hub of this id runs on this node.
    #[cfg(feature = "hub")]
    #[error("no hub {0} runs on this node")]
    NoHub(String),
    /// A hub did not start.
    #[cfg(feature = "hub")]
    #[error(transparent)]
    Hub(#[from] shoal_hub::HubStartError),
    /// No distributed supervisor of this name runs on this node.
    #[cfg(all(feature = "hub", feature = "supervisor"))]
    #[error("no distributed supervisor {0} runs on this node")]
    NoSupervisor(String),
    /// A distributed supervisor did not start.
    #[cfg(all(feature = "hub", feature = "supervisor"))]
    #[error(transparent)]
    Supervisor(#[from] shoal_supervisor::DistributedStartError),
    /// The node could not be joined within the join timeout; the last attempt's error.
    #[error("could not join {addr}: {last}")]
    Join {
        /// The address.
        addr: SocketAddr,
        /// Why the last attempt failed.
        last: String,
    },
    /// The node is shutting down.
    #[error("the node is shutting down")]
    Stopping,
}
