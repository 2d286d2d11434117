//! Cluster-wide names, locks and lazily started singletons for Shoal, over per-key Paxos
//! (the ideas of Paxtor, and beyond them: fencing tokens, leases, re-entrant locks served in
//! order); and process groups without consensus ([`Groups`]: Distribunator's model, and
//! Erlang's `pg`).
//!
//! One handle, [`Registry`], per node, started over the node's [`Paxos`](shoal_paxos::Paxos)
//! service with [`Registry::start`]. Every node of a cluster runs it over the same acceptor
//! set (a peer over another set is refused when the nodes meet: [`Registry::mismatched`], and
//! [`RegistryStartError::AcceptorMismatch`] at start). The set may grow or shrink one acceptor
//! at a time (`Paxos::add_acceptor`): while a change rolls out, a peer a version behind or
//! ahead is the same cluster if the two sets share an acceptor.
//!
//! ```no_run
//! # async fn example(registry: shoal_registry::Registry) -> Result<(), Box<dyn std::error::Error>> {
//! use shoal_process::{ChildSpec, Restart};
//! use shoal_registry::{LockOptions, LockResult};
//!
//! // A name: nothing starts until it is used; then one process, on one node, cluster-wide.
//! let spec = ChildSpec::new("room", "room", &42u32)?;
//! let room = registry.name("room/42", &spec, Restart::Permanent)?;
//! let pid = room.whereis().await?;
//! room.cast("hello".to_owned()).await.ok();
//!
//! // A lock, with a fencing token to hand to what it protects.
//! if let LockResult::Acquired(guard) = registry.lock("ledger", LockOptions::default()).await? {
//!     let token = guard.token();
//!     // ... write, with `token`, to something that refuses tokens below one it has seen ...
//!     guard.unlock().await?;
//! }
//! # let _ = pid; Ok(()) }
//! ```
//!
//! # Names
//!
//! [`Registry::name`] gives a [`Name`]: a cluster-wide name with the spec of its process (a
//! factory name and encoded arguments, so any node can start it) and its restart policy,
//! `temporary` (the default in Paxtor: when the process exits, for any reason, the name is
//! free and its next use starts a fresh one) or `permanent` (started again when it exits, and
//! on another node when its host is lost). `transient` is refused
//! ([`RegistryError::Transient`]), as in Paxtor; the spec's own restart field is ignored.
//! [`Name::whereis`] returns the process, starting it if none runs; [`Name::lookup`] never
//! starts anything; [`Name::alive`]. A `Name` is a destination ([`Name::dest`], a
//! [`Via`](shoal_process::Via)) for every send, call, monitor and link of Shoal; its own
//! [`Name::cast`] and [`Name::call`] start it on first use, and resolve once more if the
//! cached process has died. [`Registry::resolve`] is Paxtor's `whereis` on any destination.
//! [`Registry::register`] names a process that already runs; [`Registry::list`] shows every
//! name and lock with its host, holder, fencing token and metadata.
//!
//! **Where a name starts.** Every node orders the members running the registry by rendezvous
//! hashing of the name ([`core::candidates`]): the same order everywhere. The first candidate is
//! asked; if it refuses or fails (no factory there, no lease, unreachable), the next. The host
//! claims the name by compare-and-set on its register (a claim carries the name's next fencing
//! token and the host's lease epoch), then starts the process, then records its pid by
//! compare-and-set (in the background: the asker has the pid as soon as the process runs):
//! concurrent `whereis` calls from every node start exactly one process.
//!
//! **Resolution off the hot path.** Each node caches name → pid for the names it resolved, and
//! watches each cached process (a monitor): the entry goes when the process exits or its node
//! is lost; an unregistered name is dropped from the members' caches before `unregister`
//! returns. Consensus is consulted only on a miss.
//!
//! # At most one live process per name
//!
//! Each host holds one lease over all its names (its register `shoal.registry/h/NODE`, renewed
//! through consensus every `D/3`: the cost does not grow with the names). The guarantee: **at
//! most one process per name runs under an unexpired lease at any instant**, assuming every
//! node's clock rate is within `1 ± ρ` of real time and a host stops its processes within `δ`
//! of its deadline (defaults in [`core::LeaseConfig`]: `D` = 5 s, `ρ` = 0.05, `δ` = 500 ms). A
//! host that cannot renew stops its names' processes at `D` after its last successful renewal
//! *began* (exit reason [`LEASE_ENDED`]). A contender starts timing when its read of the lease
//! completes and ends the lease only by compare-and-set on what it read, after
//! `W = (1 + ρ)·(D/(1 − ρ) + δ)` on its own clock (≈ 6.05 s by default); the argument is in
//! [`core::LeaseConfig`]'s module docs. Every start carries a fencing token, which is exact
//! under any timing (a host paused past `δ` breaks the lease argument, not the tokens).
//!
//! **Who restarts a permanent name whose host is lost, and how it learns what the host held.**
//! Before claiming a permanent name, the host lists it in its index register for its lease
//! epoch (`shoal.registry/p/EPOCH/NODE`). Every member that sees the host go down watches its
//! lease; the first to end it (the compare-and-set decides) and every node that later learns
//! the epoch is over (by reading the lease register) reads that index and, for each name still
//! running under the ended epoch, frees it and starts it again on its first candidate. A host
//! that stops its registry ends its own lease first, so the others take over at once. Temporary
//! names and locks of an ended lease need no one: the next node to use them sees the lease over
//! and frees them. A restarted node recovers the permanent names of its previous epoch itself.
//!
//! # Locks
//!
//! [`Registry::lock`] (Paxtor's `lock(key, options)`): [`LockOptions`] block (default) or not,
//! and on no quorum retry (default), fail or return; [`LockResult`] `Acquired`, `HeldBy`,
//! `NoQuorum`. Beyond Paxtor: a fencing token that grows with every new holder; re-entrant for
//! the same holder process (counted); released by the guard (drop, [`LockGuard::unlock`]),
//! when the holder exits, and after its node's lease ended when the node is lost; a holder
//! learns that its hold may be over from [`LockGuard::lost`], which resolves at its own lease's
//! end, before any other node may take the lock. Waiters are queued first come first served in
//! the lock's record; a release hands the lock to the first waiter with the next token and
//! tells that waiter's node (no polling; a waiter also looks again when a node comes or goes).
//!
//! # Process groups
//!
//! [`Groups`] is one scope of groups on a node ([`Groups::start`] for the default scope,
//! [`Groups::start_scope`] for others: independent namespaces, each replicated on its own).
//! Available on both sides of a partition (AP), as `pg` is: each node is the authority for its
//! own members and replicates them to the nodes running the scope ([`core::Replica`]: a
//! numbered delta on each change, the whole state when a node comes up or a gap is found, and
//! digests every `sync_every` so that a node that missed changes converges). A process joins
//! and leaves as often as it likes (`pg`'s counting), and its memberships go when it exits;
//! a node's members go from every survivor when it is lost and come back when it reconnects.
//! Reads ([`Groups::members`], [`Groups::pick`], [`Groups::first`]: the lowest pid, ...) never
//! wait on the network. Messages through a group: [`Groups::cast_one`], [`Groups::cast_all`],
//! [`Groups::cast_on_node`], [`Groups::call_one`], and Distribunator's
//! [`Groups::node_rpc`]. Subscriptions ([`Groups::subscribe`], [`Groups::subscribe_process`])
//! start from a snapshot and see every change in the order its node made them; one that
//! falls behind its bounded queue gets a fresh snapshot ([`GroupEvent::Resync`]), never a gap.
//!
//! # Not here
//!
//! Names and locks need a majority of the acceptors: without one they
//! fail with [`RegistryError::NoQuorum`] (a cached name still resolves). The registry does
//! not move a running name to a better host when members join (a name stays where it started
//! until it exits or its host is lost).
//!
//! The decisions themselves are a sans-IO core ([`core`]), tested without I/O; the driver
//! (`src/driver/`: `registry.rs`, `host.rs`, `names.rs`, `locks.rs`, `records.rs`, behind the
//! default feature `driver`) reads records, asks the core, and writes by compare-and-set.
//! Without that feature the crate is the core alone, with no tokio, transport or Paxos in its
//! dependency tree.

pub mod core;
#[cfg(feature = "driver")]
mod driver;

#[cfg(feature = "driver")]
pub use crate::driver::{
    DEFAULT_SCOPE, GroupCall, GroupEvent, Groups, GroupsConfig, GroupsError, GroupsStartError,
    GroupsStats, LEASE_ENDED, Listing, LockGuard, LockInfo, LockOptions, LockResult, Name,
    NameInfo, OnNoQuorum, PeerEvent, Registry, RegistryConfig, RegistryError, RegistryStartError,
    RegistryStats, ReplicaObserver, ReplicaState, Replicated, ReplicatedConfig, Subscription,
    next_run,
};

// Every handle a user shares across tasks and threads is `Send` and `Sync`: checked when the
// crate builds, so a change that breaks it does not compile.
#[cfg(feature = "driver")]
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Registry>();
    send_and_sync::<Groups>();
    send_and_sync::<Name>();
    send_and_sync::<LockGuard>();
    send_and_sync::<RegistryConfig>();
    send_and_sync::<GroupsConfig>();
};
