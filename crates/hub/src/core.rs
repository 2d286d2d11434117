//! The hub's decisions, sans-IO: no I/O, no clock, no randomness, so they are tested
//! exhaustively and simulated deterministically: placement on a hash ring ([`Ring`]) by a
//! [`Strategy`] recorded as a [`Placement`]; and the [`Table`] of a hub's children, which
//! decides failover, redistribution, conflict resolution and tombstones.

mod placement;
mod ring;
mod table;

pub use placement::{Consistent, Guided, LeastLoaded, Load, Placement, PlacementError, Strategy};
pub use ring::{DEFAULT_VNODES, Move, Ring};
pub use table::{
    Action, Entry, Known, OnJoin, Partition, Redundancy, Role, State, StopReason, Table,
    TableConfig,
};
