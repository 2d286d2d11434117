//! Per-key consensus registers for Shoal, in the style of CASPaxos.
//!
//! This crate will hold the acceptor and proposer as sans-IO state machines (a register per key,
//! changed by a function of its current value; ballots of (counter, node); a majority quorum of
//! an explicit acceptor set), storage behind a trait (in memory and a durable file store), and
//! a driver that runs them over `shoal-transport`.
//!
//! Nothing is implemented yet: see the Paxos issue.
