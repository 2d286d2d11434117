//! Integration tests of `shoal-supervisor`: OTP's supervisor rules, checked from outside the
//! crate through its public API only.
//!
//! One test binary (each file under `tests/` is a binary of its own, and we build on two
//! cores); the modules below split it by subject. Every test names, in the comment above it,
//! the OTP rule it checks, and asserts exact outcomes: which children run under which pids,
//! and the order in which they started and stopped (children write both into a shared
//! [`support::Journal`]).
//!
//! No test sleeps to synchronise. Tests wait on the journal, on calls and on
//! `Runtime::watch`, and every wait is bounded ([`support::within`]) so that a broken rule
//! fails instead of hanging. A supervisor handles one message at a time, so a call made after
//! a restarted child's `init` has been journaled is answered after the restart is complete.
//! Checks that a child was *not* restarted run on a current-thread runtime, where an exiting
//! child queues its exit signal to the supervisor before the test can run again. Shutdown
//! timeouts run on tokio's paused clock.
//!
//! The distributed supervisor's tests (`distributed`, feature `distributed`) run three nodes
//! over real TCP on loopback instead, and poll, bounded, for the cluster to converge.
//!
//! (A crate root looks for its modules beside it, hence the `#[path]`s into `supervisor/`.)

#[path = "supervisor/support.rs"]
mod support;

#[path = "supervisor/children.rs"]
mod children;
#[cfg(feature = "distributed")]
#[path = "supervisor/distributed.rs"]
mod distributed;
#[path = "supervisor/dynamic.rs"]
mod dynamic;
#[path = "supervisor/factories.rs"]
mod factories;
#[path = "supervisor/intensity.rs"]
mod intensity;
#[path = "supervisor/model.rs"]
mod model;
#[path = "supervisor/nested.rs"]
mod nested;
#[path = "supervisor/policies.rs"]
mod policies;
#[path = "supervisor/shutdown.rs"]
mod shutdown;
#[path = "supervisor/strategies.rs"]
mod strategies;
