//! [`NodeParts`]: layers started one by one, handed over to be one [`Node`]
//! ([`Node::from_parts`]).

#[cfg(feature = "hub")]
use std::collections::BTreeMap;
use std::fmt;
#[cfg(feature = "hub")]
use std::sync::Mutex;
use std::time::Duration;

#[cfg(feature = "broadcast")]
use shoal_broadcast::Broadcast;
#[cfg(feature = "hub")]
use shoal_hub::Hub;
#[cfg(feature = "paxos")]
use shoal_paxos::Paxos;
#[cfg(feature = "registry")]
use shoal_registry::{Groups, Registry};
#[cfg(all(feature = "hub", feature = "supervisor"))]
use shoal_supervisor::DistributedSupervisor;
use shoal_transport::ClusterKey;
use tokio::sync::watch;

use super::Inner;
#[cfg(doc)]
use super::Node;

/// How long [`Node::join`] keeps trying on a node of parts (as the builder's default).
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The layers of a node that were started one by one over one transport, for
/// [`Node::from_parts`]: what the builder would have started, with settings it does not offer
/// (the `shoal-node` binary runs a fixed acceptor set this way). Each layer is optional; a
/// node of parts has what it was given, and only that.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use shoal::node::NodeParts;
/// use shoal::paxos::{Paxos, PaxosConfig};
/// use shoal::transport::ClusterKey;
///
/// let key = ClusterKey::generate();
/// let transport = shoal::transport::Node::builder("a", key.clone()).start().await?;
/// let paxos = Paxos::start(&transport, PaxosConfig::new(vec!["a".to_owned()])).await?;
/// let node = shoal::Node::from_parts(NodeParts::new(transport, key).paxos(paxos));
/// assert!(node.paxos().is_ok());
/// # Ok(()) }
/// ```
#[must_use = "parts do nothing until they are made a node"]
pub struct NodeParts {
    transport: shoal_transport::Node,
    key: ClusterKey,
    #[cfg(feature = "paxos")]
    paxos: Option<Paxos>,
    #[cfg(feature = "broadcast")]
    broadcast: Option<Broadcast>,
    #[cfg(feature = "registry")]
    registry: Option<Registry>,
    #[cfg(feature = "registry")]
    groups: Option<Groups>,
    #[cfg(feature = "hub")]
    hubs: BTreeMap<String, Hub>,
    #[cfg(all(feature = "hub", feature = "supervisor"))]
    supervisors: BTreeMap<String, DistributedSupervisor>,
}

impl fmt::Debug for NodeParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeParts").field("node", &self.transport.name()).finish_non_exhaustive()
    }
}

impl NodeParts {
    /// The transport node every other part runs over, and its cluster key.
    pub fn new(transport: shoal_transport::Node, key: ClusterKey) -> Self {
        NodeParts {
            transport,
            key,
            #[cfg(feature = "paxos")]
            paxos: None,
            #[cfg(feature = "broadcast")]
            broadcast: None,
            #[cfg(feature = "registry")]
            registry: None,
            #[cfg(feature = "registry")]
            groups: None,
            #[cfg(feature = "hub")]
            hubs: BTreeMap::new(),
            #[cfg(all(feature = "hub", feature = "supervisor"))]
            supervisors: BTreeMap::new(),
        }
    }

    /// Its Paxos service.
    #[cfg(feature = "paxos")]
    pub fn paxos(mut self, paxos: Paxos) -> Self {
        self.paxos = Some(paxos);
        self
    }

    /// Its broadcast service.
    #[cfg(feature = "broadcast")]
    pub fn broadcast(mut self, broadcast: Broadcast) -> Self {
        self.broadcast = Some(broadcast);
        self
    }

    /// Its registry (names and locks).
    #[cfg(feature = "registry")]
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Its process groups.
    #[cfg(feature = "registry")]
    pub fn groups(mut self, groups: Groups) -> Self {
        self.groups = Some(groups);
        self
    }

    /// A hub it runs, found by its id ([`Node::hub`], [`Node::hub_ids`]).
    #[cfg(feature = "hub")]
    pub fn hub(mut self, hub: Hub) -> Self {
        self.hubs.insert(hub.id().to_owned(), hub);
        self
    }

    /// A distributed supervisor it runs, found by its name ([`Node::supervisor`],
    /// [`Node::supervisor_names`]).
    #[cfg(all(feature = "hub", feature = "supervisor"))]
    pub fn supervisor(mut self, supervisor: DistributedSupervisor) -> Self {
        self.supervisors.insert(supervisor.name().to_owned(), supervisor);
        self
    }

    /// The node's state, its readiness read through `ready`.
    pub(super) fn into_inner(self, ready: watch::Receiver<bool>) -> Inner {
        Inner {
            started_at_ms: self.transport.runtime().clock().wall_millis(),
            transport: self.transport,
            key: self.key,
            #[cfg(feature = "paxos")]
            paxos: self.paxos,
            #[cfg(feature = "broadcast")]
            broadcast: self.broadcast,
            #[cfg(feature = "registry")]
            registry: self.registry,
            #[cfg(feature = "registry")]
            groups: self.groups,
            #[cfg(feature = "hub")]
            hubs: Mutex::new(self.hubs),
            #[cfg(all(feature = "hub", feature = "supervisor"))]
            supervisors: Mutex::new(self.supervisors),
            join_timeout: JOIN_TIMEOUT,
            ready,
            stopping: watch::Sender::new(false),
        }
    }
}
