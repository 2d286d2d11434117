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
//! This crate does not place children on other nodes; the distributed supervisor that does
//! will live here too, on top of `shoal-registry`.

mod child;
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
