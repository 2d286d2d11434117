//! Integration tests of `shoal-process`: the OTP semantics of processes, checked from outside
//! the crate through its public API only.
//!
//! One test binary (each file under `tests/` is a binary of its own, and we build on two
//! cores); the modules below split it by subject. Every test names, in the comment above it,
//! the rule it checks. No test sleeps to synchronise: processes report what they see through
//! channels ([`support::Inbox`]), tests wait on those, on calls and on `Runtime::watch`, and
//! every wait is bounded ([`support::within`]) so that a broken rule fails instead of hanging.
//! Timer tests run on tokio's paused clock.
//!
//! (A crate root looks for its modules beside it, hence the `#[path]`s into `process/`.)

#[path = "process/support.rs"]
mod support;

#[path = "process/calls.rs"]
mod calls;
#[path = "process/dests.rs"]
mod dests;
#[path = "process/factories.rs"]
mod factories;
#[path = "process/hand_off.rs"]
mod hand_off;
#[path = "process/itself.rs"]
mod itself;
#[path = "process/lifecycle.rs"]
mod lifecycle;
#[path = "process/links.rs"]
mod links;
#[path = "process/mailboxes.rs"]
mod mailboxes;
#[path = "process/model.rs"]
mod model;
#[path = "process/monitors.rs"]
mod monitors;
#[path = "process/names.rs"]
mod names;
#[path = "process/remote.rs"]
mod remote;
#[path = "process/stats.rs"]
mod stats;
#[path = "process/sys.rs"]
mod sys;
#[path = "process/timers.rs"]
mod timers;
