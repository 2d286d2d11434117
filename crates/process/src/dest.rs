//! [`Dest`]: where a message, a call, a monitor or a link goes — a pid, a name on this node, a
//! name on another node, or a name a layer above resolves ([`Via`], OTP's `{via, Module,
//! Name}`). [`Target`] is its typed twin, for one behaviour.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::addr::DEFAULT_CALL_TIMEOUT;
use crate::{Addr, CallError, NodeId, Pid, Process, Runtime, SendError};

/// Where a message, a call, a monitor or a link goes. Every operation of Shoal that sends,
/// calls, monitors or links takes `impl Into<Dest>`, so a [`Pid`], an [`Addr`] or a name (`&str`,
/// `String`: a name on this node) is given as it is.
///
/// | destination | resolved |
/// |---|---|
/// | [`Dest::Pid`] | already: one process, wherever it runs |
/// | [`Dest::Name`] | on this node, at each operation (a table lookup) |
/// | [`Dest::NameOn`] | by the node the name is on, at each operation (nothing is cached: the name may move) |
/// | [`Dest::Via`] | by the layer that made it (registry, groups, hub), which caches what it may |
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Dest {
    /// A process, wherever it runs.
    Pid(Pid),
    /// The process registered under this name on this node.
    Name(String),
    /// The process registered under `name` on `node` (OTP's `{Name, Node}`); this node too.
    NameOn {
        /// The node the name is registered on.
        node: NodeId,
        /// The registered name.
        name: String,
    },
    /// A name that a layer above resolves: a registry name, a group, a hub child id, a
    /// distributed supervisor's child.
    Via(Via),
}

impl Dest {
    /// The process registered as `name` on this node.
    pub fn name(name: impl Into<String>) -> Self {
        Self::Name(name.into())
    }

    /// The process registered as `name` on the node called `node`.
    pub fn name_on(node: &str, name: impl Into<String>) -> Self {
        Self::NameOn { node: NodeId::from_name(node), name: name.into() }
    }

    /// The pid this destination stands for without waiting: a pid, a local name registered
    /// now, a via-name whose layer has it cached; `None` otherwise.
    pub fn resolve_now(&self, runtime: &Runtime) -> Option<Pid> {
        match self {
            Self::Pid(pid) => Some(*pid),
            Self::Name(name) => runtime.whereis(name),
            Self::NameOn { node, name } if *node == runtime.node() => runtime.whereis(name),
            Self::NameOn { .. } => None,
            Self::Via(via) => via.cached(),
        }
    }

    /// The pid this destination stands for now, waiting for the layer of a via-name if it
    /// must (which may start the process). A name on another node is not resolved here: its
    /// node does that at each operation ([`ResolveError::Remote`]).
    pub async fn resolve(&self, runtime: &Runtime) -> Result<Pid, ResolveError> {
        match self {
            Self::Pid(pid) => Ok(*pid),
            Self::Name(name) => {
                runtime.whereis(name).ok_or_else(|| ResolveError::NoProc(self.to_string()))
            }
            Self::NameOn { node, name } if *node == runtime.node() => {
                runtime.whereis(name).ok_or_else(|| ResolveError::NoProc(self.to_string()))
            }
            Self::NameOn { .. } => Err(ResolveError::Remote(self.to_string())),
            Self::Via(via) => via.resolve().await,
        }
    }

    /// The typed form of this destination, for a process of behaviour `P`.
    pub fn typed<P: Process>(self, runtime: &Runtime) -> Target<P> {
        Target { runtime: runtime.clone(), dest: self, behaviour: PhantomData }
    }
}

impl From<Pid> for Dest {
    fn from(pid: Pid) -> Self {
        Self::Pid(pid)
    }
}

impl<P: Process> From<&Addr<P>> for Dest {
    fn from(addr: &Addr<P>) -> Self {
        Self::Pid(addr.pid())
    }
}

impl From<&str> for Dest {
    fn from(name: &str) -> Self {
        Self::Name(name.to_owned())
    }
}

impl From<String> for Dest {
    fn from(name: String) -> Self {
        Self::Name(name)
    }
}

impl From<Via> for Dest {
    fn from(via: Via) -> Self {
        Self::Via(via)
    }
}

impl fmt::Display for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pid(pid) => write!(f, "{pid}"),
            Self::Name(name) => write!(f, "{name:?}"),
            Self::NameOn { node, name } => write!(f, "{name:?} on {node}"),
            Self::Via(via) => write!(f, "{}", via.describe()),
        }
    }
}

impl fmt::Debug for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dest({self})")
    }
}

/// A future a [`Resolve`] returns.
pub type Resolving<'a> = Pin<Box<dyn Future<Output = Result<Pid, ResolveError>> + Send + 'a>>;

/// How a layer above the runtime resolves its names (a registry name, a hub child id, ...):
/// implemented by that layer, wrapped in a [`Via`].
pub trait Resolve: Send + Sync + 'static {
    /// What the name is, for messages and logs (`registry "orders"`). Two resolvers that
    /// describe themselves alike are the same destination.
    fn describe(&self) -> String;

    /// The pid it names, if known without waiting (a cache); `None` by default.
    fn cached(&self) -> Option<Pid> {
        None
    }

    /// The pid it names now, waiting for the layer if it must (which may start a process).
    fn resolve(&self) -> Resolving<'_>;

    /// An operation on `pid`, which this resolver gave, found it gone: forget it, so that the
    /// next resolution asks again. Nothing by default.
    fn forget(&self, pid: Pid) {
        let _ = pid;
    }
}

/// A name resolved by a layer above the runtime (OTP's `{via, Module, Name}`): a [`Resolve`]
/// shared. Equal when they describe the same name.
#[derive(Clone)]
pub struct Via(Arc<dyn Resolve>);

impl Via {
    /// A via-name resolved by `resolver`.
    pub fn new(resolver: impl Resolve) -> Self {
        Self(Arc::new(resolver))
    }

    /// What it names.
    pub fn describe(&self) -> String {
        self.0.describe()
    }

    /// The pid it names, if known without waiting.
    pub fn cached(&self) -> Option<Pid> {
        self.0.cached()
    }

    /// The pid it names now.
    pub async fn resolve(&self) -> Result<Pid, ResolveError> {
        self.0.resolve().await
    }

    /// Tells the resolver that `pid` is gone.
    pub fn forget(&self, pid: Pid) {
        self.0.forget(pid);
    }
}

impl PartialEq for Via {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.describe() == other.describe()
    }
}

impl Eq for Via {}

impl std::hash::Hash for Via {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.describe().hash(state);
    }
}

impl fmt::Debug for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Via({})", self.describe())
    }
}

/// A destination that did not resolve to a pid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// Nothing is registered under the name (and its layer started nothing).
    #[error("no process is registered as {0}")]
    NoProc(String),
    /// The layer that resolves the name cannot reach the node that knows it.
    #[error("{0} cannot be resolved: its node cannot be reached")]
    NoConnection(String),
    /// A name on another node is resolved by that node at each operation, not here.
    #[error("{0} is resolved by its own node, at each operation")]
    Remote(String),
    /// The layer failed to resolve it, and why.
    #[error("{what} cannot be resolved: {reason}")]
    Failed {
        /// The destination.
        what: String,
        /// What went wrong.
        reason: String,
    },
}

/// A typed destination: a [`Dest`] for a process of behaviour `P`, with the behaviour's casts
/// and calls checked at compile time wherever the process runs. Made with [`Dest::typed`] or
/// [`Runtime::target`]; cheap to clone.
pub struct Target<P: Process> {
    runtime: Runtime,
    dest: Dest,
    behaviour: PhantomData<fn() -> P>,
}

impl<P: Process> Clone for Target<P> {
    fn clone(&self) -> Self {
        Self { runtime: self.runtime.clone(), dest: self.dest.clone(), behaviour: PhantomData }
    }
}

impl<P: Process> fmt::Debug for Target<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Target<{}>({})", std::any::type_name::<P>(), self.dest)
    }
}

impl<P: Process> Target<P> {
    /// The destination.
    pub fn dest(&self) -> &Dest {
        &self.dest
    }

    /// The process it stands for now, as a typed handle: resolved as [`Dest::resolve`] does;
    /// `None` in the error when it resolves to a process that does not run `P` here or takes
    /// no messages from other nodes there.
    pub async fn resolve(&self) -> Result<Addr<P>, ResolveError> {
        let pid = self.dest.resolve(&self.runtime).await?;
        self.runtime.addr::<P>(pid).ok_or_else(|| ResolveError::Failed {
            what: self.dest.to_string(),
            reason: format!("{pid} is not a process of behaviour {}", std::any::type_name::<P>()),
        })
    }

    /// Casts `message`, waiting for room, as [`Runtime::cast`] does.
    pub async fn cast(&self, message: P::Message) -> Result<(), SendError<P::Message>> {
        self.runtime.cast_typed::<P>(&self.dest, message).await
    }

    /// Calls with `request` and waits up to [`DEFAULT_CALL_TIMEOUT`] for the reply.
    pub async fn call(&self, request: P::Call) -> Result<P::Reply, CallError> {
        self.call_timeout(request, DEFAULT_CALL_TIMEOUT).await
    }

    /// Calls with `request` and waits up to `timeout` for the reply.
    pub async fn call_timeout(
        &self,
        request: P::Call,
        timeout: Duration,
    ) -> Result<P::Reply, CallError> {
        self.runtime.call_typed::<P>(&self.dest, request, timeout).await
    }
}
