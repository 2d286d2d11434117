//! Shoal: distributed processes for Rust — the facade.
//!
//! Re-exports every Shoal crate under one name, each behind a cargo feature that is on by
//! default, plus a [`prelude`]. Today that is the local process runtime
//! ([`process`], always present), supervisors ([`supervisor`], feature `supervisor`), nodes
//! connected over TCP ([`transport`], feature `transport`), epidemic broadcast ([`broadcast`],
//! feature `broadcast`), per-key consensus ([`paxos`], feature `paxos`), and cluster-wide
//! names, locks and process groups ([`registry`], feature `registry`), and the hash-ring
//! distributor of child processes ([`hub`], feature `hub`), with the distributed supervisor
//! built on it (`supervisor::DistributedSupervisor`, features `supervisor` and `hub`). One
//! [`Node`] (feature `transport`) starts them all: a node alone is a cluster of one, nodes
//! join through seeds, and the Paxos acceptor set grows as they do ([`node`] says how). For
//! tests, the feature `testing` (off by default) adds `testing`: whole nodes on a simulated
//! network. The feature `metrics` (off by default) adds `metrics`: every layer's figures
//! published through the `metrics` facade by one sampler task per node, and `prometheus` its
//! Prometheus recorder.
//!
//! The [`guide`] says what holds where under crashes, partitions and clock drift
//! ([`guide::guarantees`]), and maps what you know from Erlang/OTP and Elixir
//! ([`guide::from_erlang`]) and from ractor and kameo ([`guide::from_ractor_kameo`]) to Shoal.
//!
//! The package also holds the `shoal-node` binary (feature `transport`): one node in its own OS
//! process, driven over stdin and stdout. `cargo xtask cluster-test` starts several of them and
//! checks that they form a cluster that survives kills and partitions.
//!
//! ```
//! use shoal::prelude::*;
//!
//! struct Echo;
//!
//! impl Process for Echo {
//!     type Message = ();
//!     type Call = String;
//!     type Reply = String;
//!
//!     async fn handle_cast(&mut self, _: (), _: &mut Context<Self>) {}
//!
//!     async fn handle_call(&mut self, text: String, reply: ReplyTo<String>, _: &mut Context<Self>) {
//!         reply.send(text);
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::new()?;
//! let echo = runtime.spawn(Echo);
//! assert_eq!(echo.call("hello".to_owned()).await?, "hello");
//! # Ok(()) }
//! ```

#[cfg(feature = "dashboard")]
pub mod dashboard;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "transport")]
pub mod node;

#[cfg(feature = "transport")]
pub use node::Node;
#[cfg(feature = "broadcast")]
pub use shoal_broadcast as broadcast;
#[cfg(feature = "hub")]
pub use shoal_hub as hub;
#[cfg(feature = "paxos")]
pub use shoal_paxos as paxos;
pub use shoal_process as process;
#[cfg(feature = "registry")]
pub use shoal_registry as registry;
#[cfg(feature = "supervisor")]
pub use shoal_supervisor as supervisor;
#[cfg(feature = "transport")]
pub use shoal_transport as transport;

/// Whole Shoal nodes on a simulated network, for tests (feature `testing`): real nodes, with
/// their processes, on tokio's paused clock over [`testing::SimNet`], which a test partitions,
/// cuts, heals and resets; a run is replayed by its seed. It lives in `shoal-sim` (feature
/// `nodes`), below every layer, so that the layers' own tests use it from their first line;
/// here it is under the facade's name.
#[cfg(feature = "testing")]
pub mod testing {
    pub use shoal_sim::nodes::{Link, SimNet};
}

/// Guides: what holds where under faults, and Shoal's names for what you know from Erlang/OTP,
/// Elixir and the Rust actor libraries.
pub mod guide {
    #[doc = include_str!("../docs/guarantees.md")]
    pub mod guarantees {}
    #[doc = include_str!("../docs/from-erlang.md")]
    pub mod from_erlang {}
    #[doc = include_str!("../docs/from-ractor-kameo.md")]
    pub mod from_ractor_kameo {}
}

/// The names most programs need, for a glob import.
pub mod prelude {
    #[cfg(feature = "transport")]
    pub use crate::node::{Node, NodeBuilder, NodeError};
    #[cfg(feature = "broadcast")]
    pub use shoal_broadcast::{Broadcast, BroadcastConfig, BroadcastError, Topic};
    #[cfg(feature = "hub")]
    pub use shoal_hub::{
        Handover, Handovers, Hub, HubChild, HubConfig, HubError, HubEvent, Migration, StartOptions,
    };
    #[cfg(feature = "paxos")]
    pub use shoal_paxos::{Paxos, PaxosConfig, PaxosError};
    pub use shoal_process::{
        Addr, CallError, ChildSpec, Codec, Context, Dest, ExitReason, MailboxConfig, Overflow, Pid,
        Process, Ref, ReplyTo, Restart, Runtime, SendError, Shutdown, Signal, SpawnOptions, Target,
    };
    #[cfg(feature = "registry")]
    pub use shoal_registry::{
        Groups, GroupsConfig, GroupsError, LockOptions, LockResult, Name, Registry, RegistryConfig,
        RegistryError,
    };
    #[cfg(feature = "supervisor")]
    pub use shoal_supervisor::{
        Child, DynamicSupervisorRef, DynamicSupervisorSpec, Intensity, Strategy, SupervisorRef,
        SupervisorSpec,
    };
    #[cfg(all(feature = "supervisor", feature = "hub"))]
    pub use shoal_supervisor::{
        DistributedChild, DistributedEvent, DistributedSupervisor, DistributedSupervisorConfig,
        DistributedSupervisorError,
    };
    #[cfg(feature = "transport")]
    pub use shoal_transport::{ClusterKey, DownReason, Membership, NodeEvent, RemoteError};
}
