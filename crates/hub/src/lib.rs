//! A hash-ring distributor of child processes for Shoal (the ideas of ProcessHub).
//!
//! This crate will hold the placement logic as a sans-IO core (consistent hashing with virtual
//! nodes, guided placement, replication), batched idempotent child starts and stops, migration
//! with state hand-over, and partition strategies, driven over `shoal-transport`.
//!
//! What exists so far is the placement core ([`core::Ring`]: consistent hashing with virtual
//! nodes, and the exact set of children a change of membership moves); the rest comes with
//! the hub issue.

pub mod core;
