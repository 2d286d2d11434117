//! Epidemic broadcast for Shoal: Plumtree on a HyParView partial-view overlay.
//!
//! This crate will hold both protocols as sans-IO state machines (inputs and the current time
//! in, messages out; no tokio, no clock, no global randomness), simulated at 1,000+ nodes with
//! `shoal-sim`, plus a thin driver that runs them over `shoal-transport`.
//!
//! Nothing is implemented yet: see the broadcast issue.
