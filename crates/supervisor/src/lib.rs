//! Supervisors for Shoal, with OTP's semantics, running on the local process runtime.
//!
//! A supervisor is a process that starts children, links to them, traps their exits and
//! restarts them by policy:
//!
//! - [`SupervisorRef`]: a fixed [`Strategy`] (one_for_one, one_for_all, rest_for_one) over
//!   an ordered list of [`Child`]ren, which can also be added, stopped, restarted and
//!   deleted at run time;
//! - [`DynamicSupervisorRef`]: one_for_one over children added at run time, known by pid,
//!   with an optional maximum;
//! - per child: [`Restart`] (permanent, transient, temporary) and [`Shutdown`] (a graceful
//!   timeout then a kill, an immediate kill, or as long as it takes);
//! - restart [`Intensity`]: past `max_restarts` within `period`, the supervisor stops its
//!   children and exits with `Shutdown`, as OTP's do (the detail goes to the log), and its
//!   own supervisor takes over (a transient supervisor that gave up is not restarted);
//! - starting a child is guarded: a child whose `init` fails, or whose builder (a closure, a
//!   factory's build) panics, is a start error, and a failed restart counts toward the
//!   intensity; neither takes the supervisor down;
//! - orderly shutdown: a [`SupervisorRef`]'s children stop one at a time in reverse start
//!   order; a [`DynamicSupervisorRef`]'s are all told at once and each waited for with its
//!   own shutdown time.
//!
//! Children are started from a local closure ([`Child::new`]) or from a factory spec
//! ([`Child::from_spec`], data that could be sent to another node). Supervisors are processes,
//! so supervisors supervise supervisors ([`Child::supervisor`]).
//!
//! A kill takes effect only where a child's handler awaits (see `shoal-process`'s limits): a
//! child still alive after its kill is waited for at most a kill timeout
//! ([`DEFAULT_KILL_TIMEOUT`], [`SupervisorSpec::kill_timeout`],
//! [`DynamicSupervisorSpec::kill_timeout`]), then logged, reported by `terminate_child`
//! ([`SupervisorError::StillAlive`]) and forgotten: it may still be running.
//!
//! # The distributed supervisor (feature `distributed`)
//!
//! `DistributedSupervisor` is a dynamic supervisor across the cluster whose children are
//! known by name (Elixir's `DistributedSupervisor`). It is built on `shoal-hub`: a
//! distributed supervisor is a hub whose child ids are the children's names, started under
//! the same supervisor name on every participating node. Each child runs on the node that
//! owns its name on the hash ring over those nodes (or on a node asked for); its spec is
//! held by every node, so when its node is lost a permanent or transient child starts again
//! on the new owner of its name; a second start of a taken name is refused with the running
//! pid; and after a partition heals, a name that ran on both sides runs once again, the
//! owner's copy winning. Children are found and reached by name from any node, without the
//! network for lookups (`children`, `whereis`, `whois`, `via`,
//! `call`, `cast`, `send`), and listeners hear of children started, stopped and restarted
//! elsewhere and of nodes up and down (`subscribe`).
//!
//! The guarantee is the hub's, with its assumptions: once the supervisor's nodes agree on
//! who runs it, and for as long as they do, each child known to a live node and not
//! terminated runs exactly once, on the owner of its name, within about the hub's
//! `down_after` plus a reconcile tick. While views disagree (a partition) a name may run on
//! both sides under the default divergence strategy, until the heal; a child whose every
//! holder is lost before a second node held it is lost (a start answers only once a second
//! node holds it).
//!
//! Restart intensity is counted per child across the cluster, by the hub: a child that keeps
//! crashing wherever it runs fails once, cluster-wide, instead of taking down one node's
//! supervisor after another. What it does not do: tell apart, in its events, a terminated
//! child from one that ended, or a conflict's loser from a copy that stopped otherwise on a
//! live node, beyond what the hub's events say (`StopCause`). The local supervisors above do not depend on it: without the feature
//! this crate has no network dependency, and `shoal-hub` does not depend on this crate (it
//! supervises its own children).
//!
//! The seed's example — start the supervisor, start a named child, list the children, call
//! the child by name:
//!
//! ```
//! # #[cfg(feature = "distributed")]
//! # mod example {
//! use shoal_process::{ChildSpec, Codec, Context, Process, ReplyTo};
//! use shoal_supervisor::{DistributedChild, DistributedSupervisor, DistributedSupervisorConfig};
//! use shoal_transport::{ClusterKey, Node};
//!
//! /// A greeter: answers a call with a greeting.
//! struct Greeter;
//!
//! impl Process for Greeter {
//!     type Message = ();
//!     type Call = String;
//!     type Reply = String;
//!
//!     async fn handle_cast(&mut self, (): (), _: &mut Context<Self>) {}
//!
//!     async fn handle_call(&mut self, who: String, reply: ReplyTo<String>, _: &mut Context<Self>) {
//!         reply.send(format!("hello, {who}"));
//!     }
//!
//!     fn remote_messages() -> Option<Codec<Self>> {
//!         Some(Codec::msgpack())
//!     }
//! }
//!
//! pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let node = Node::builder("n1", ClusterKey::generate()).start().await?;
//!     node.runtime().register_factory("greeter", |(): ()| Greeter)?;
//!
//!     // On every node that should run its children (here, one).
//!     let ds = DistributedSupervisor::start(&node, "DS", DistributedSupervisorConfig::default())
//!         .await?;
//!
//!     let spec = ChildSpec::new("greeter", "greeter", &())?;
//!     let started = ds.start_child(DistributedChild::new(spec).name("MGS")).await?;
//!     assert_eq!((started.name.as_str(), started.node.as_str()), ("MGS", "n1"));
//!
//!     let children = ds.children();
//!     assert_eq!(children.into_iter().collect::<Vec<_>>(), vec![("MGS".to_owned(), started.pid)]);
//!
//!     let reply = ds.call::<Greeter>("MGS", "world".to_owned()).await?;
//!     assert_eq!(reply, "hello, world");
//!     # ds.stop().await; node.shutdown();
//!     Ok(())
//! }
//! # }
//! # #[cfg(feature = "distributed")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> { example::main().await }
//! # #[cfg(not(feature = "distributed"))]
//! # fn main() {}
//! ```

mod child;
#[cfg(feature = "distributed")]
mod distributed;
mod dynamic;
mod error;
mod intensity;
mod supervisor;

pub use child::{Child, ChildCounts, ChildInfo, ChildKind, DEFAULT_KILL_TIMEOUT};
pub use dynamic::{DynamicSupervisorRef, DynamicSupervisorSpec};
pub use error::SupervisorError;
pub use intensity::Intensity;
pub use shoal_process::{ChildSpec, Restart, Shutdown};
pub use supervisor::{SUPERVISOR_CALL_TIMEOUT, Strategy, SupervisorRef, SupervisorSpec};

// Every handle a user shares across tasks and threads is `Send` and `Sync`: checked when the
// crate builds, so a change that breaks it does not compile.
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<SupervisorRef>();
    send_and_sync::<DynamicSupervisorRef>();
    send_and_sync::<Child>();
    send_and_sync::<SupervisorSpec>();
};

#[cfg(feature = "distributed")]
pub use distributed::{
    DistributedChild, DistributedEvent, DistributedEvents, DistributedStartError,
    DistributedSupervisor, DistributedSupervisorConfig, DistributedSupervisorError, StartedChild,
    StopCause,
};

// Every handle a user shares across tasks and threads is `Send` and `Sync`: checked when the
// crate builds, so a change that breaks it does not compile.
#[cfg(feature = "distributed")]
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<DistributedSupervisor>();
    send_and_sync::<DistributedSupervisorConfig>();
    send_and_sync::<DistributedChild>();
};
