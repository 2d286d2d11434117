//! Cluster-wide names, locks, lazily started singletons and process groups for Shoal.
//!
//! This crate will hold names that resolve lazily and start their process on a node chosen by
//! consensus (the ideas of Paxtor), locks with fencing tokens, and eventually consistent process
//! groups (the ideas of Distribunator and Erlang's `pg`), built on `shoal-paxos` and
//! `shoal-transport`.
//!
//! Nothing is implemented yet: see the registry issue.
