//! Cluster-wide names, locks, lazily started singletons and process groups for Shoal.
//!
//! This crate will hold names that resolve lazily and start their process on a node chosen by
//! consensus (the ideas of Paxtor), locks with fencing tokens, and eventually consistent process
//! groups (the ideas of Distribunator and Erlang's `pg`), built on `shoal-paxos` and
//! `shoal-transport`.
//!
//! What exists so far is the sans-IO core ([`core`]): the decisions the registry makes on the
//! records it keeps in Paxos registers, as plain functions of a record read and a request,
//! with no I/O, no clock and no randomness:
//!
//! - [`core::LeaseConfig`]: the timing of host leases, and the argument that at most one
//!   process per name holds an unexpired lease at any instant; [`core::HostLease`], a host's
//!   side of it (when to renew, until when its names may run); [`core::LeaseRecord`] and
//!   [`core::Takeover`], the lease register and a contender's wait before it ends an epoch.
//! - [`core::LockState`]: locks with fencing tokens that increase per key with every
//!   acquisition, re-entrant for their holder, with waiters served first come first served
//!   (the release hands the lock to the first waiter).
//! - [`core::NameState`]: names whose every start (first use, restart, takeover) is a claim
//!   with a fencing token, a pid recorded only for the current start, `temporary` and
//!   `permanent` restarts, and runs that end with their host's lease.
//! - [`core::candidates`]: the hosts a name's process may start on, preferred first, the same
//!   on every node (rendezvous hashing over the members).
//!
//! The service (`Registry`, over the Paxos driver), names and singletons, and groups come next
//! (see the registry issue).

pub mod core;
mod error;
mod host;
mod locks;
mod names;
mod records;
mod registry;

pub use crate::error::{RegistryError, RegistryStartError};
pub use crate::host::LEASE_ENDED;
pub use crate::locks::{LockGuard, LockOptions, LockResult, OnNoQuorum};
pub use crate::names::Name;
pub use crate::registry::{Listing, LockInfo, NameInfo, Registry, RegistryConfig};
