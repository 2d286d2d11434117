//! The registry's driver: [`Registry`] over the node's Paxos service and transport, on tokio
//! (see the crate docs). `registry.rs` holds the handle and the state the parts share,
//! `host.rs` the lease, hosting and takeovers, `names.rs` names, `locks.rs` locks,
//! `records.rs` the registers and the compare-and-set loop, `error.rs` the errors;
//! `groups.rs` process groups, over `replicated.rs` (the `Replica` core over a transport
//! service).

mod error;
mod groups;
mod host;
mod locks;
mod names;
mod records;
mod registry;
mod replicated;
mod stats;

pub use self::error::{RegistryError, RegistryStartError};
pub use self::groups::{
    DEFAULT_SCOPE, GroupCall, GroupEvent, Groups, GroupsConfig, GroupsError, GroupsStartError,
    Subscription,
};
pub use self::host::LEASE_ENDED;
pub use self::locks::{LockGuard, LockOptions, LockResult, OnNoQuorum};
pub use self::names::Name;
pub use self::registry::{Listing, LockInfo, NameInfo, Registry, RegistryConfig};
pub use self::replicated::{
    PeerEvent, ReplicaObserver, ReplicaState, Replicated, ReplicatedConfig, next_run,
};
pub use self::stats::{GroupsStats, RegistryStats};
