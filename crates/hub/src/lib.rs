//! A hash-ring distributor of child processes for Shoal (the ideas of ProcessHub).
//!
//! This crate will hold the placement logic as a sans-IO core (consistent hashing with virtual
//! nodes, guided placement, replication), batched idempotent child starts and stops, migration
//! with state hand-over, and partition strategies, driven over `shoal-transport`.
//!
//! Nothing is implemented yet: see the hub issue.
