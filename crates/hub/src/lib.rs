//! A hash-ring distributor of child processes for Shoal (the ideas of ProcessHub's
//! distributor): many keyed processes (a game room, a device, a tenant) spread evenly over
//! the nodes that run a hub, found by id from any node without the network, moved on their
//! own when nodes come and go.
//!
//! - **Hubs.** [`Hub::start`] runs hub `id` on a node; the hub's nodes are the nodes running
//!   the same id, found as they start and stop. A node may run several hubs, independently.
//! - **Placement** ([`core`], sans-IO): consistent hashing with virtual nodes
//!   ([`core::Ring`]); a [`core::Strategy`] places each child when it first starts
//!   ([`core::Consistent`] by default, [`core::Guided`] for an explicit node list per child,
//!   [`core::LeastLoaded`] as a load-aware example), recorded with the child as a
//!   [`core::Placement`] that every node applies the same way.
//! - **Batches**: [`Hub::init_children`] (awaited, a result per child: started where as which
//!   pid, or why not; idempotent, or refusing a running child when asked; a timeout; rollback
//!   on failure when asked; metadata and tags per child) and [`Hub::init_children_detached`];
//!   [`Hub::stop_children`], [`Hub::child_terminate`], [`Hub::child_redist_init`]. The node
//!   that receives a start checks that it owns the child and forwards it if not, with a hop
//!   limit.
//! - **Queries without network**: [`Hub::pid`], [`Hub::child`] (spec, metadata, copies),
//!   [`Hub::which_children_local`], [`Hub::which_children_global`] (running, restarting,
//!   moving, unknown), [`Hub::children_by_tag`], [`Hub::nodes`], [`Hub::is_partitioned`].
//! - **Synchronisation.** Each node is the authority for the children it runs and replicates
//!   them to the hub's other nodes with the registry's node-authority replication
//!   ([`shoal_registry::Replicated`]: a delta per change, a full exchange when a node comes
//!   up and an anti-entropy digest periodically). An awaited start answers once another node
//!   holds the child (when the hub has one), so losing one node right after loses no child.
//!   A terminated child leaves a versioned tombstone, so a copy on the other side of a
//!   partition does not bring it back.
//! - **Supervision**: a child that exits is restarted where it runs, as its spec's restart
//!   policy says; its restart intensity ([`HubConfig::max_restarts`] within
//!   [`HubConfig::restart_window`]) is counted across the nodes it runs on, so a child that
//!   crashes wherever it runs (or whose `init` fails on each new node) fails once, cluster-wide
//!   ([`HubEvent::Failed`]), instead of being restarted on one node after another. A
//!   temporary child is never started again, as under a local supervisor: with one copy per
//!   child it stays on the node it started on (a join does not move it) and ends with that
//!   node, lost or leaving (a tombstone); it is not handed over.
//! - **Redistribution and failover** ([`core::Table`]): a node that joins gets the children
//!   it now owns (cold moves, at most [`core::TableConfig::moves_per_sec`], or none with
//!   [`core::OnJoin::Stay`]); the children of a node lost for
//!   [`core::TableConfig::down_after`] (at once if it left on purpose) start on their new
//!   owners from the entries the survivors hold; two copies of a child after a partition are
//!   resolved the same way on every node (the owner's copy wins; the other stops with
//!   [`CONFLICT`] after [`HubConfig::on_conflict`]).
//! - **Partition strategies** ([`core::Partition`], per hub): divergence by default (each side
//!   runs everything; the heal resolves the copies), or a static, majority or dynamic quorum:
//!   a node without its quorum stops its children (exit reason [`QUORUM_LOST`]; listed as
//!   [`ChildStatus::Suspended`]) and starts none ([`HubError::NoQuorum`]); with its quorum
//!   back, a suspended child that no other node took over meanwhile starts again on its
//!   owner, at once. [`Hub::has_quorum`].
//! - **Replication** ([`core::TableConfig::replicas`]): N copies of each child, on its owner
//!   and the next distinct nodes of the ring ([`core::Ring::owners`]); a node that becomes an
//!   owner starts its copy beside the running ones, and a copy off the owners stops once
//!   every owner runs one. Active/active (every copy serves) or active/passive
//!   ([`core::Redundancy`]): one copy is active, decided alike on every node
//!   ([`Hub::active`]), the others passive, each told its role when it changes
//!   ([`Handover::role`]); the active copy's state is streamed to the passive ones every
//!   [`HubConfig::stream_every`] ([`Handover::snapshot`], [`Handover::restore`]), so a
//!   passive copy promoted when the active one is lost starts from recent state. Calls by
//!   child id go to the serving copy ([`Hub::via`]: a destination for any send or call);
//!   [`Hub::cast_all`] reaches every copy.
//! - **Migration** ([`Migration`]): cold by default (stopped, then started on the new owner
//!   from its spec); hot for children whose behaviour has a [`Handover`]: the new copy starts
//!   first, the old one freezes at a snapshot of its state, which the new one takes over, and
//!   the mail queued for the old copy, and sent to it within a retention window, is forwarded
//!   to the new one. A hub stopped on purpose ([`Hub::stop`]) hands each child with state to
//!   its new owner this way first, within [`HubConfig::handover_deadline`], so a rolling
//!   restart loses no state.
//! - **Events**: [`Hub::subscribe`], or [`Hub::subscribe_with_snapshot`] for the children as
//!   they stand when the events start ([`HubEvent`], in the order this node sees them:
//!   children started, stopped, moved and migrated; states handed over, or not; roles; nodes
//!   up and down; quorum lost and regained).
//!
//! Children are started from [`shoal_process::ChildSpec`]s through factories registered on
//! every node (`Runtime::register_factory`); a child with state to hand over also has its
//! behaviour registered with the hub ([`Handovers::with`]).
//!
//! The guarantee, and its assumptions: once the hub's nodes agree on who is in the hub, and
//! for as long as they do, each child known to a live node and not terminated runs exactly
//! once, on its owner, within about [`core::TableConfig::down_after`] plus a reconcile tick.
//! While views disagree (a partition) a child may run on both sides under the divergence
//! strategy (the heal resolves it); under a quorum strategy only on the side with its quorum,
//! once the other side has noticed its loss (a reconcile tick after it sees its peers down,
//! which is sooner than the quorum side's [`core::TableConfig::down_after`] when both detect
//! the cut alike).
//! A child whose every holder is lost before another node held it is lost.

pub mod core;
#[cfg(feature = "driver")]
mod driver;

#[cfg(feature = "driver")]
pub use crate::driver::{
    CONFLICT, ChildData, ChildError, ChildRow, ChildStatus, Conflict, ConflictHook, Handover,
    Handovers, Hub, HubChild, HubChildInfo, HubConfig, HubError, HubEvent, HubStartError, HubStats,
    MAX_CHILD_ID, MOVED, Migration, QUORUM_LOST, RedistError, StartOptions, StartResults, Started,
    StopResults, TerminateError,
};

// Every handle a user shares across tasks and threads is `Send` and `Sync`: checked when the
// crate builds, so a change that breaks it does not compile.
#[cfg(feature = "driver")]
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Hub>();
    send_and_sync::<HubConfig>();
    send_and_sync::<Handovers>();
    send_and_sync::<HubChild>();
};
