//! The facade's tests: one binary (the crates' rule), a module per area.
//!
//! - `node`: `shoal::Node` over real TCP on loopback: a cluster of one, joining with retries,
//!   the acceptor set growing as nodes join, readiness, shutdown and abort.
//! - `shoal_node`: the `shoal-node` binary as an operator meets it.
//! - `dashboard` (feature `dashboard`): the web view's JSON API and its access rules.
//! - `cli` (feature `cli`): the `shoal` inspector binary against a real cluster's dashboard.
//! - `metrics` (feature `metrics`): a node's sampler read back through a debugging recorder.

mod shoal {
    #[cfg(feature = "cli")]
    mod cli;
    #[cfg(feature = "dashboard")]
    mod dashboard;
    #[cfg(feature = "metrics")]
    mod metrics;
    mod node;
    mod shoal_node;
}
