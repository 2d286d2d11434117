//! [`DistributedSupervisor`]: a dynamic supervisor across the cluster, whose children are
//! known by name (the ideas of Elixir's `DistributedSupervisor`), built on `shoal-hub`.
//!
//! A distributed supervisor **is a hub whose child ids are the children's names**: supervisor
//! `NAME` runs hub `dsup/NAME` on each node that starts it, and the hub does the work —
//! placement on the hash ring of the name over those nodes, replication of every child's spec
//! to every node, restarts by the spec's policy on the node that runs it, failover of the
//! children of a lost node to the nodes that now own their names, one live copy per name
//! after a partition heals. This module adds names (given, or generated unique
//! cluster-wide), lookups both ways, messages by name, and listeners that speak of children
//! and nodes rather than hub entries.
//!
//! ```text
//!   DistributedSupervisor ──── names, whereis/whois, call/cast/send, listeners
//!            │ (one hub per supervisor name: hub id "dsup/NAME", child id = child name)
//!            ▼
//!   shoal_hub::Hub ─────────── placement, replication, restarts, failover, conflicts
//!            ▼
//!   shoal_transport::Node ──── the wire;  shoal_process::Runtime ── the processes
//! ```
//!
//! | Elixir's `DistributedSupervisor` | here |
//! |---|---|
//! | `start_link(name: n)` | [`DistributedSupervisor::start`] on each node (same name) |
//! | `child_spec/1` | [`DistributedSupervisor::child_spec`], [`DistributedSupervisor::find`] |
//! | `start_child(n, spec)` | [`DistributedSupervisor::start_child`] |
//! | `children(n)` | [`DistributedSupervisor::children`] |
//! | `whereis_name(n, key)` | [`DistributedSupervisor::whereis`], and [`DistributedSupervisor::whois`] |
//! | `call/3`, `cast/2`, `send/3` | [`DistributedSupervisor::call`], [`DistributedSupervisor::cast`], [`DistributedSupervisor::send`] |
//! | `via_name(n, key)` | [`DistributedSupervisor::via`] (a [`Dest`]) |
//! | `terminate_child` | [`DistributedSupervisor::terminate_child`] |
//! | listeners | [`DistributedSupervisor::subscribe`] |
//!
//! Restart intensity is the hub's, counted per child across the nodes it runs on
//! ([`HubConfig::max_restarts`] within [`HubConfig::restart_window`]): a child that keeps
//! crashing wherever it runs fails once, cluster-wide ([`DistributedEvent::ChildFailed`]),
//! instead of taking one node's supervisor down after another; there is no intensity for the
//! supervisor as a whole. What it does not do: tell, in its events, a terminated child from
//! one that ended, or a conflict's loser from a copy that stopped on a live node for another
//! reason while a second copy ran — the hub's events do not say; [`StopCause`] names what
//! can be told from them. Children are started from factories registered on every node
//! (`Runtime::register_factory`), as any hub child.

mod error;
mod events;
mod managed;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use shoal_hub::{
    ChildError, ChildStatus, Hub, HubChild, HubConfig, MAX_CHILD_ID, StartOptions, TerminateError,
};
use shoal_process::{
    CallError, ChildSpec, DEFAULT_CALL_TIMEOUT, Dest, Pid, Process, SendError, Target,
};
use shoal_transport::Node;

pub use self::error::{DistributedStartError, DistributedSupervisorError};
pub use self::events::{DistributedEvent, DistributedEvents, StopCause};

/// The prefix of a distributed supervisor's hub id: supervisor `NAME` is hub `dsup/NAME`.
const HUB_PREFIX: &str = "dsup/";

/// How a distributed supervisor runs. Every node of a supervisor should use the same.
#[derive(Clone, Debug)]
pub struct DistributedSupervisorConfig {
    /// The hub's knobs: how long a node must be down before its children start elsewhere,
    /// restarts per child across the cluster ([`HubConfig::max_restarts`]), the partition
    /// strategy.
    /// One copy per child ([`shoal_hub::core::TableConfig::replicas`] of 1): a distributed
    /// supervisor runs one live child per name.
    pub hub: HubConfig,
    /// How long [`DistributedSupervisor::start_child`] waits for the child to start, and
    /// [`DistributedSupervisor::terminate_child`] for it to exit.
    pub timeout: Duration,
    /// How long [`DistributedSupervisor::call`] waits for a reply.
    pub call_timeout: Duration,
}

impl Default for DistributedSupervisorConfig {
    /// The hub's defaults, five seconds to start or stop a child, and the runtime's call
    /// timeout.
    fn default() -> Self {
        DistributedSupervisorConfig {
            hub: HubConfig::default(),
            timeout: Duration::from_secs(5),
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }
}

/// A child to start under a distributed supervisor: its spec, and optionally its name and
/// the node to run on. A [`ChildSpec`] alone is a child with a generated name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistributedChild {
    spec: ChildSpec,
    name: Option<String>,
    node: Option<String>,
}

impl DistributedChild {
    /// A child started from `spec` (its factory, arguments, restart and shutdown policies;
    /// its id is replaced by the child's name), with a generated name, placed by the ring.
    pub fn new(spec: ChildSpec) -> Self {
        DistributedChild { spec, name: None, node: None }
    }

    /// Named `name`: one live child of that name in the cluster.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// To run on `node` rather than on the owner of its name, and to stay there; if `node`
    /// is lost, it runs on the owner of its name.
    pub fn on_node(mut self, node: impl Into<String>) -> Self {
        self.node = Some(node.into());
        self
    }
}

impl From<ChildSpec> for DistributedChild {
    fn from(spec: ChildSpec) -> Self {
        DistributedChild::new(spec)
    }
}

/// A child started by [`DistributedSupervisor::start_child`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartedChild {
    /// Its name (the one given, or the one generated).
    pub name: String,
    /// The node it runs on.
    pub node: String,
    /// Its pid there.
    pub pid: Pid,
}

/// A distributed supervisor on one node: its children across the cluster, started, found
/// and reached by name from here (see the module docs). Cheap to clone. Stop it with
/// [`DistributedSupervisor::stop`]: dropping its last handle only stops the hub's tasks here,
/// without the orderly stop that hands its children to the other nodes at once.
#[derive(Clone, Debug)]
pub struct DistributedSupervisor {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    name: String,
    node: Node,
    pub(crate) hub: Hub,
    config: DistributedSupervisorConfig,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DistributedSupervisor")
            .field("name", &self.name)
            .field("node", &self.node.name())
            .finish_non_exhaustive()
    }
}

impl DistributedSupervisor {
    /// Starts distributed supervisor `name` on `node` (Elixir's `start_link`): this node joins
    /// the supervisor's other nodes, those that started the same name, found as they start
    /// and stop. Start it on every node that should run its children.
    ///
    /// # Errors
    ///
    /// [`DistributedStartError::BadName`], [`DistributedStartError::BadConfig`] (more than one
    /// copy per child), [`DistributedStartError::Hub`] (it runs on this node already, or the
    /// hub refuses its configuration).
    pub async fn start(
        node: &Node,
        name: &str,
        config: DistributedSupervisorConfig,
    ) -> Result<DistributedSupervisor, DistributedStartError> {
        let hub_id = format!("{HUB_PREFIX}{name}");
        if name.is_empty() || hub_id.len() > MAX_CHILD_ID {
            return Err(DistributedStartError::BadName(name.to_owned()));
        }
        if config.hub.table.replicas != 1 {
            let replicas = config.hub.table.replicas;
            return Err(DistributedStartError::BadConfig(format!(
                "{replicas} copies per child: a distributed supervisor runs one per name"
            )));
        }
        let hub = Hub::start(node, &hub_id, config.hub.clone()).await?;
        let inner = Inner { name: name.to_owned(), node: node.clone(), hub, config };
        Ok(DistributedSupervisor { inner: Arc::new(inner) })
    }

    /// The supervisor's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The hub under it (hub id `dsup/NAME`), for what the hub offers besides: a child's
    /// spec and copies ([`Hub::child`]), moves ([`Hub::child_redist_init`]), quorum.
    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// The nodes running this supervisor as this node sees them (itself included), sorted.
    pub fn nodes(&self) -> Vec<String> {
        self.inner.hub.nodes()
    }

    /// Starts a child: `child` is a [`ChildSpec`] (a generated name) or a
    /// [`DistributedChild`] (a name, a node). It runs on the node that owns its name among
    /// the supervisor's nodes (or the node asked for), and answers once a second node holds
    /// its spec (when there is one), so losing its node right after loses no child.
    ///
    /// # Errors
    ///
    /// [`DistributedSupervisorError::AlreadyStarted`] (the running child's node and pid),
    /// [`DistributedSupervisorError::BadName`], [`DistributedSupervisorError::NotInSupervisor`],
    /// [`DistributedSupervisorError::Refused`], [`DistributedSupervisorError::Start`].
    pub async fn start_child(
        &self,
        child: impl Into<DistributedChild>,
    ) -> Result<StartedChild, DistributedSupervisorError> {
        let DistributedChild { mut spec, name, node } = child.into();
        let name = match name {
            Some(name) => name,
            None => generated_name(&self.inner.node),
        };
        if name.is_empty() || name.len() > MAX_CHILD_ID {
            return Err(DistributedSupervisorError::BadName(name));
        }
        spec.id.clone_from(&name);
        let mut hub_child = HubChild::new(spec);
        if let Some(node) = node {
            if !self.inner.hub.nodes().contains(&node) {
                return Err(DistributedSupervisorError::NotInSupervisor(node));
            }
            hub_child = hub_child.on_nodes([node]);
        }
        let options = StartOptions {
            check_existing: true,
            timeout: self.inner.config.timeout,
            rollback: false,
        };
        let results = self
            .inner
            .hub
            .init_children(vec![hub_child], options)
            .await
            .map_err(DistributedSupervisorError::Refused)?;
        let result = results.into_iter().next().map_or(Err(ChildError::Timeout), |(_, r)| r);
        match result {
            Ok(started) => Ok(StartedChild { name, node: started.node, pid: started.pid }),
            Err(ChildError::AlreadyStarted { node, pid }) => {
                Err(DistributedSupervisorError::AlreadyStarted { name, node, pid })
            }
            Err(error) => Err(DistributedSupervisorError::Start { name, error }),
        }
    }

    /// Every running child across the cluster, by name, as this node sees it (no network).
    /// While two copies of a name run (a partition, before its heal), the serving one's pid.
    pub fn children(&self) -> BTreeMap<String, Pid> {
        let hub = &self.inner.hub;
        let mut children = BTreeMap::new();
        for row in hub.which_children_global() {
            if let ChildStatus::Running(pid) = row.status {
                let pid = hub.pid(&row.child).unwrap_or(pid);
                children.entry(row.child).or_insert(pid);
            }
        }
        children
    }

    /// The pid of the child named `name`, as this node sees it (no network).
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        self.inner.hub.pid(name)
    }

    /// The name of the child running as `pid`, as this node sees it (no network).
    pub fn whois(&self, pid: Pid) -> Option<String> {
        self.inner
            .hub
            .which_children_global()
            .into_iter()
            .find(|row| row.status == ChildStatus::Running(pid))
            .map(|row| row.child)
    }

    /// The child named `name` as a destination for any send, call, monitor or link
    /// (Elixir's `via_name`): looked up at each operation, so it follows the child when it
    /// restarts elsewhere.
    pub fn via(&self, name: &str) -> Dest {
        self.inner.hub.via(name)
    }

    /// The child named `name` as a typed destination, for a behaviour `P`.
    pub fn target<P: Process>(&self, name: &str) -> Target<P> {
        self.inner.node.runtime().target::<P>(self.via(name))
    }

    /// Calls the child named `name` with `request`, waiting up to
    /// [`DistributedSupervisorConfig::call_timeout`] for the reply (Elixir's `call/3`).
    ///
    /// # Errors
    ///
    /// As any call: no such child ([`CallError::NoProc`]), a timeout, its node unreachable.
    pub async fn call<P: Process>(
        &self,
        name: &str,
        request: P::Call,
    ) -> Result<P::Reply, CallError> {
        self.target::<P>(name).call_timeout(request, self.inner.config.call_timeout).await
    }

    /// Casts `message` to the child named `name` (Elixir's `cast/2`).
    ///
    /// # Errors
    ///
    /// As any cast; the error hands the message back.
    pub async fn cast<P: Process>(
        &self,
        name: &str,
        message: P::Message,
    ) -> Result<(), SendError<P::Message>> {
        self.target::<P>(name).cast(message).await
    }

    /// Sends `message` to the child named `name`, untyped (Elixir's `send/3`): the child's
    /// behaviour must take messages of this type (encoded alike when it runs elsewhere).
    ///
    /// # Errors
    ///
    /// As any cast; the error hands the message back.
    pub async fn send<M>(&self, name: &str, message: M) -> Result<(), SendError<M>>
    where
        M: Serialize + Send + 'static,
    {
        self.inner.node.runtime().cast(self.via(name), message).await
    }

    /// Terminates the child named `name` wherever it runs: it stops as its spec's shutdown
    /// says and is gone for good on every node (a later [`DistributedSupervisor::start_child`]
    /// of the name starts it anew).
    ///
    /// # Errors
    ///
    /// [`DistributedSupervisorError::NotFound`], [`DistributedSupervisorError::Terminate`].
    pub async fn terminate_child(&self, name: &str) -> Result<(), DistributedSupervisorError> {
        match self.inner.hub.child_terminate(name, self.inner.config.timeout).await {
            Ok(()) => Ok(()),
            Err(TerminateError::NotFound(_)) => {
                Err(DistributedSupervisorError::NotFound(name.to_owned()))
            }
            Err(error) => {
                Err(DistributedSupervisorError::Terminate { name: name.to_owned(), error })
            }
        }
    }

    /// A listener: this supervisor's events from now on, as this node sees them
    /// ([`DistributedEvent`]: children started, stopped, restarted elsewhere; nodes up and
    /// down), for every node's children.
    pub fn subscribe(&self) -> DistributedEvents {
        let (rows, receiver) = self.inner.hub.subscribe_with_snapshot();
        DistributedEvents::new(Arc::downgrade(&self.inner), &rows, receiver)
    }

    /// Stops the supervisor on this node, on purpose: its children here stop, and the other
    /// nodes start them on their new owners at once (children with state are handed over
    /// first, see [`Hub::stop`]).
    pub async fn stop(&self) {
        self.inner.hub.stop().await;
    }
}

/// A name no other child of any supervisor gets: this node's name and incarnation (a node
/// restarted is a new incarnation), and the number of a fresh reference of its runtime
/// (counted per runtime, so a simulation replays the same names).
fn generated_name(node: &Node) -> String {
    let n = node.runtime().make_ref().number();
    format!("{}:{:x}:{n}", node.name(), node.incarnation())
}
