//! A deterministic simulator for Shoal's sans-IO protocol cores.
//!
//! This crate will hold a seeded network of simulated nodes with a virtual clock and faults
//! (delay, loss, duplication, reordering, partitions, crash-restart), replayable by seed. The
//! Paxos and broadcast cores are tested with it. It is not published.
//!
//! Nothing is implemented yet: see the Paxos and broadcast issues.
