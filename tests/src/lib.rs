//! Cross-crate integration tests and simulations for Shoal.
//!
//! Tests that need more than one Shoal crate at a time (a transport with the registry, a hub
//! over a real cluster, seeded simulations of several cores together) live in this one
//! package, so the workspace builds a single test binary for them. Single-crate tests stay in
//! their crate's own `tests/` binary. Whole nodes on a simulated network (`shoal_sim::SimNet`,
//! on tokio's paused clock) are tested here: `tests/nodes.rs`.
