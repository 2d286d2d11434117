//! [`NodeBuilder`]: the settings of a [`Node`] and the order its layers start in.

#[cfg(feature = "hub")]
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
#[cfg(feature = "paxos")]
use std::path::PathBuf;
#[cfg(feature = "paxos")]
use std::sync::Arc;
#[cfg(feature = "hub")]
use std::sync::Mutex;
use std::time::Duration;

#[cfg(feature = "broadcast")]
use shoal_broadcast::{Broadcast, BroadcastConfig};
#[cfg(feature = "hub")]
use shoal_hub::HubConfig;
#[cfg(feature = "paxos")]
use shoal_paxos::{Paxos, PaxosConfig, Recovery, StorageConfig};
use shoal_process::Runtime;
#[cfg(feature = "registry")]
use shoal_registry::{Groups, GroupsConfig, Registry, RegistryConfig};
#[cfg(all(feature = "hub", feature = "supervisor"))]
use shoal_supervisor::DistributedSupervisorConfig;
use shoal_transport::{ClusterKey, Membership};
use tokio::sync::watch;

#[cfg(feature = "paxos")]
use super::acceptors;
use super::{Inner, Node, StartError, join_any};

/// The transport builder's settings beyond those [`NodeBuilder`] has, applied last.
type TransportSettings =
    Box<dyn FnOnce(shoal_transport::NodeBuilder) -> shoal_transport::NodeBuilder + Send>;

/// The settings of a [`Node`], from [`Node::builder`]; [`NodeBuilder::start`] starts it.
/// Every layer is on by default, as far as the cargo features go.
#[must_use = "a builder does nothing until it is started"]
pub struct NodeBuilder {
    name: String,
    key: Option<ClusterKey>,
    listen: SocketAddr,
    seeds: Vec<SocketAddr>,
    join_timeout: Duration,
    membership: Membership,
    transport: Option<TransportSettings>,
    runtime: Option<Runtime>,
    #[cfg(feature = "paxos")]
    acceptors: usize,
    layers: Layers,
}

impl fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("name", &self.name)
            .field("listen", &self.listen)
            .field("seeds", &self.seeds)
            .field("membership", &self.membership)
            .finish_non_exhaustive()
    }
}

impl NodeBuilder {
    pub(super) fn new(name: String) -> Self {
        NodeBuilder {
            name,
            key: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seeds: Vec::new(),
            join_timeout: Duration::from_secs(30),
            membership: Membership::FullMesh,
            transport: None,
            runtime: None,
            #[cfg(feature = "paxos")]
            acceptors: 3,
            layers: Layers {
                #[cfg(feature = "paxos")]
                paxos: Some(PaxosConfig::new(Vec::new())),
                #[cfg(feature = "broadcast")]
                broadcast: Some(BroadcastConfig::default()),
                #[cfg(feature = "registry")]
                registry: Some(RegistryConfig::default()),
                #[cfg(feature = "registry")]
                groups: Some(GroupsConfig::default()),
                #[cfg(feature = "hub")]
                hubs: Vec::new(),
                #[cfg(all(feature = "hub", feature = "supervisor"))]
                supervisors: Vec::new(),
            },
        }
    }

    /// The cluster key: only nodes with the same key connect. Default: a fresh one, which
    /// does for a cluster of one and for nodes that get it from the first
    /// ([`Node::key`]).
    pub fn key(mut self, key: ClusterKey) -> Self {
        self.key = Some(key);
        self
    }

    /// The address to listen on (default `127.0.0.1:0`, a free loopback port).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// A seed: a node of the cluster to join through. Several may be given; the first that
    /// answers is joined. With none, the node founds a cluster of its own.
    pub fn join(mut self, seed: SocketAddr) -> Self {
        self.seeds.push(seed);
        self
    }

    /// How long [`NodeBuilder::start`] (and [`Node::join`]) keeps trying to join, with a
    /// growing backoff (default 30 s).
    pub fn join_timeout(mut self, timeout: Duration) -> Self {
        self.join_timeout = timeout;
        self
    }

    /// How the node finds its peers (default: full mesh). Broadcast follows it: over
    /// [`Membership::Managed`] its HyParView overlay claims the connections it needs, other
    /// layers claim theirs, and the rest open on demand and close when idle.
    pub fn membership(mut self, membership: Membership) -> Self {
        self.membership = membership;
        self
    }

    /// The local process runtime the node runs on (default: a fresh one), built with the
    /// node's name (`Runtime::builder().node_name(name).build()`). Build it first to
    /// register the factories of hub and supervisor children on it
    /// ([`Runtime::register_factory`]) before the node starts, so that a child sent here as
    /// soon as the hubs run finds its factory.
    pub fn runtime(mut self, runtime: Runtime) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Any other transport setting (heartbeats, channels, limits), applied to the transport's
    /// builder last.
    pub fn transport(
        mut self,
        settings: impl FnOnce(shoal_transport::NodeBuilder) -> shoal_transport::NodeBuilder
        + Send
        + 'static,
    ) -> Self {
        self.transport = Some(Box::new(settings));
        self
    }

    /// Paxos's settings (its acceptors are the cluster's: the list given here is ignored);
    /// `None` turns Paxos off, and with it the registry.
    #[cfg(feature = "paxos")]
    pub fn paxos(mut self, config: Option<PaxosConfig>) -> Self {
        self.layers.paxos = config;
        self
    }

    /// How many Paxos acceptors the cluster grows to as nodes join (default 3; 5 rides out
    /// two lost acceptors). Each node may say; a node adds acceptors only while the set is
    /// smaller than its own target.
    #[cfg(feature = "paxos")]
    pub fn acceptors(mut self, target: usize) -> Self {
        self.acceptors = target.max(1);
        self
    }

    /// Keeps this node's Paxos acceptor state in `dir` (fsynced), so that it restarts with its
    /// votes; by default it keeps them in memory and rejoins from the others after a restart.
    /// Recommended while the acceptor set is small (1 or 2) or growing: an in-memory acceptor
    /// that restarts empty can leave a majority without its state (see the Guarantees page).
    #[cfg(feature = "paxos")]
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        if let Some(paxos) = &mut self.layers.paxos {
            paxos.storage = StorageConfig::File(dir.into());
        }
        self
    }

    /// Broadcast's settings; `None` turns it off.
    #[cfg(feature = "broadcast")]
    pub fn broadcast(mut self, config: Option<BroadcastConfig>) -> Self {
        self.layers.broadcast = config;
        self
    }

    /// The registry's settings; `None` turns it off.
    #[cfg(feature = "registry")]
    pub fn registry(mut self, config: Option<RegistryConfig>) -> Self {
        self.layers.registry = config;
        self
    }

    /// Process groups' settings; `None` turns them off.
    #[cfg(feature = "registry")]
    pub fn groups(mut self, config: Option<GroupsConfig>) -> Self {
        self.layers.groups = config;
        self
    }

    /// A hub to start with the node (its children's factories must be registered on the
    /// runtime before a child starts; [`Node::start_hub`] starts one later).
    #[cfg(feature = "hub")]
    pub fn hub(mut self, id: impl Into<String>, config: HubConfig) -> Self {
        self.layers.hubs.push((id.into(), config));
        self
    }

    /// A distributed supervisor to start with the node.
    #[cfg(all(feature = "hub", feature = "supervisor"))]
    pub fn supervisor(
        mut self,
        name: impl Into<String>,
        config: DistributedSupervisorConfig,
    ) -> Self {
        self.layers.supervisors.push((name.into(), config));
        self
    }

    /// Starts the node: the transport, then (with seeds) joins one, then Paxos over the
    /// cluster's acceptors, broadcast, the registry and groups, the hubs and supervisors;
    /// returns once all run. The node may not be [ready](Node::ready) yet.
    ///
    /// # Errors
    ///
    /// A [`StartError`] saying which step failed; what had started is stopped.
    pub async fn start(self) -> Result<Node, StartError> {
        let key = self.key.clone().unwrap_or_else(ClusterKey::generate);
        let mut transport = shoal_transport::Node::builder(self.name.clone(), key.clone())
            .listen(self.listen)
            .membership(self.membership.clone());
        if let Some(runtime) = self.runtime {
            transport = transport.runtime(runtime);
        }
        if let Some(settings) = self.transport {
            transport = settings(transport);
        }
        let transport = transport.start().await?;
        let (ready_sender, ready) = watch::channel(false);
        let mut inner = Inner {
            transport: transport.clone(),
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
            hubs: Mutex::new(BTreeMap::new()),
            #[cfg(all(feature = "hub", feature = "supervisor"))]
            supervisors: Mutex::new(BTreeMap::new()),
            join_timeout: self.join_timeout,
            started_at_ms: transport.runtime().clock().wall_millis(),
            ready,
            stopping: watch::Sender::new(false),
        };
        // The control service answers before anything else starts, so that a node joining
        // this one early learns the acceptors as soon as Paxos runs here.
        #[cfg(feature = "paxos")]
        let control = Arc::new(std::sync::OnceLock::<Paxos>::new());
        #[cfg(feature = "paxos")]
        if !transport.register_rpc(acceptors::CONTROL, {
            let control = control.clone();
            move |acceptors::Ask::Status| acceptors::status(control.get().cloned())
        }) {
            return Err(inner.undo(StartError::AlreadyRunning).await);
        }
        let joined = if self.seeds.is_empty() {
            None
        } else {
            match join_any(&transport, &self.seeds, self.join_timeout).await {
                Ok(name) => Some(name),
                Err(last) => {
                    let error = StartError::Join { seeds: self.seeds.clone(), last };
                    return Err(inner.undo(error).await);
                }
            }
        };
        if let Err(error) = start_layers(&mut inner, self.layers, joined.as_deref()).await {
            return Err(inner.undo(error).await);
        }
        #[cfg(feature = "paxos")]
        if let Some(paxos) = &inner.paxos {
            let _ = control.set(paxos.clone());
            let stop = inner.stopping.subscribe();
            tokio::spawn(acceptors::grow(paxos.clone(), self.acceptors, stop));
        }
        #[cfg(feature = "broadcast")]
        if let (Some(broadcast), Some(&seed)) = (&inner.broadcast, self.seeds.first()) {
            super::join_overlay(broadcast, seed).await;
        }
        if !self.seeds.is_empty() {
            let stop = inner.stopping.subscribe();
            tokio::spawn(super::rejoin(transport.clone(), self.seeds.clone(), stop));
        }
        Ok(Node::from_inner(inner, ready_sender))
    }
}

/// The settings of the layers above the transport.
struct Layers {
    #[cfg(feature = "paxos")]
    paxos: Option<PaxosConfig>,
    #[cfg(feature = "broadcast")]
    broadcast: Option<BroadcastConfig>,
    #[cfg(feature = "registry")]
    registry: Option<RegistryConfig>,
    #[cfg(feature = "registry")]
    groups: Option<GroupsConfig>,
    #[cfg(feature = "hub")]
    hubs: Vec<(String, HubConfig)>,
    #[cfg(all(feature = "hub", feature = "supervisor"))]
    supervisors: Vec<(String, DistributedSupervisorConfig)>,
}

/// Starts the layers above the transport into `inner`, in order; `joined` is the node joined
/// (none: this node founds the cluster). On an error, what started is in `inner`, to stop.
#[cfg_attr(not(feature = "paxos"), allow(unused_variables))]
async fn start_layers(
    inner: &mut Inner,
    layers: Layers,
    joined: Option<&str>,
) -> Result<(), StartError> {
    let transport = inner.transport.clone();
    #[cfg(feature = "paxos")]
    if let Some(mut config) = layers.paxos {
        match joined {
            // The founder: its own only acceptor, in a first epoch it founds itself.
            None => {
                config.acceptors = vec![transport.name().to_owned()];
                config.recovery = Recovery::NewEpoch;
            }
            // A joining node runs over the cluster's set (an acceptor among them that restarts
            // without its state rejoins from the others before it votes).
            Some(joined) => {
                (config.version, config.acceptors) =
                    cluster_acceptors(&transport, joined, inner.join_timeout)
                        .await
                        .ok_or(StartError::NoAcceptors)?;
            }
        }
        inner.paxos = Some(Paxos::start(&transport, config).await?);
    }
    #[cfg(feature = "broadcast")]
    if let Some(config) = layers.broadcast {
        inner.broadcast = Some(Broadcast::start(&transport, config).await?);
    }
    #[cfg(feature = "registry")]
    if let (Some(config), Some(paxos)) = (layers.registry, &inner.paxos) {
        inner.registry = Some(Registry::start(paxos, config).await?);
    }
    #[cfg(feature = "registry")]
    if let Some(config) = layers.groups {
        inner.groups = Some(Groups::start(&transport, config).await?);
    }
    #[cfg(feature = "hub")]
    for (id, config) in layers.hubs {
        let hub = shoal_hub::Hub::start(&transport, &id, config).await;
        let hub = hub.map_err(|error| StartError::Hub { id: id.clone(), error })?;
        inner.hubs.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(id, hub);
    }
    #[cfg(all(feature = "hub", feature = "supervisor"))]
    for (name, config) in layers.supervisors {
        let supervisor = shoal_supervisor::DistributedSupervisor::start(&transport, &name, config);
        let supervisor = supervisor
            .await
            .map_err(|error| StartError::Supervisor { name: name.clone(), error })?;
        let supervisors =
            inner.supervisors.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        supervisors.insert(name, supervisor);
    }
    Ok(())
}

/// The acceptor set the cluster runs and its version, asked of `joined` and then of any
/// connected node, until one names it or `timeout` passes.
#[cfg(feature = "paxos")]
async fn cluster_acceptors(
    transport: &shoal_transport::Node,
    joined: &str,
    timeout: Duration,
) -> Option<(u64, Vec<String>)> {
    let clock = transport.runtime().clock().clone();
    let deadline = clock.now() + timeout;
    loop {
        let mut nodes = vec![joined.to_owned()];
        nodes.extend(transport.nodes().into_iter().filter(|node| node != joined));
        for node in &nodes {
            if let Some(set) = acceptors::ask(transport, node).await {
                return Some(set);
            }
        }
        if clock.now() >= deadline {
            return None;
        }
        clock.sleep(Duration::from_millis(100)).await;
    }
}
