//! The hub's driver: [`Hub`] over a node's transport and runtime, on tokio (see the crate
//! docs). `hub.rs` holds the handle, its configuration, the queries, the events and the index
//! that feeds the table; `children.rs` starting, stopping, moving and supervising children,
//! the hub's RPC and the reconcile task; `handover.rs` children with state (roles, and the
//! stream of state to passive copies); `migrate.rs` hot moves and the hand-over when the hub
//! stops; `error.rs` the errors.

mod children;
mod error;
mod handover;
mod hub;
mod migrate;
mod stats;

pub use self::children::{StartOptions, StartResults, Started, StopResults};
pub use self::error::{
    ChildError, HubError, HubStartError, MAX_CHILD_ID, RedistError, TerminateError,
};
pub use self::handover::{Handover, Handovers};
pub use self::hub::{
    CONFLICT, ChildData, ChildRow, ChildStatus, Conflict, ConflictHook, Hub, HubChild,
    HubChildInfo, HubConfig, HubEvent, MOVED, QUORUM_LOST,
};
pub use self::migrate::Migration;
pub use self::stats::HubStats;
