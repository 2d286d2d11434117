//! Whole Shoal nodes on a simulated network (`shoal_sim::SimNet`), on tokio's paused clock:
//! the real runtime and transport, with time that only moves when every task waits, so that
//! seconds of a cluster's life (joins, heartbeats, failure detection, reconnection) take
//! milliseconds, and the network's latency is drawn from a seed.
//!
//! One module per layer under test; `support` holds what they share. Every seeded test runs
//! a fixed range of seeds in CI (`SHOAL_SIM_SEED` and each test's count variable pick others:
//! `cargo xtask explore-nodes`).

mod broadcast;
mod broadcast_soak;
mod determinism;
mod dsup;
mod groups;
mod hub;
mod hub_handover;
mod hub_quorum;
mod hub_replicas;
mod managed;
mod node;
mod paxos;
mod registry;
mod support;
mod transport;
