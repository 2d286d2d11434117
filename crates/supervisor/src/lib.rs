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
//!   children and exits with a reason that says so, and its own supervisor takes over;
//! - orderly shutdown: children stop in reverse start order.
//!
//! Children are started from a local closure ([`Child::new`]) or from a factory spec
//! ([`Child::from_spec`], data that could be sent to another node). Supervisors are processes,
//! so supervisors supervise supervisors ([`Child::supervisor`]).
//!
//! This crate does not place children on other nodes; the distributed supervisor that does
//! will live here too, on top of `shoal-registry`.

mod child;
mod dynamic;
mod error;
mod intensity;
mod supervisor;

pub use child::{Child, ChildCounts, ChildInfo, ChildKind};
pub use dynamic::{DynamicSupervisorRef, DynamicSupervisorSpec};
pub use error::SupervisorError;
pub use intensity::Intensity;
pub use shoal_process::{ChildSpec, Restart, Shutdown};
pub use supervisor::{SUPERVISOR_CALL_TIMEOUT, Strategy, SupervisorRef, SupervisorSpec};
