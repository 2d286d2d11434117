//! Integration tests of shoal-transport: in-process nodes over real TCP on loopback, port 0,
//! and property tests of the sans-IO cores (frame decoder, handshake).
//!
//! One test binary; each module covers one capability. Every wait is bounded
//! ([`transport::support::BOUND`]); nothing sleeps to synchronise or asserts on timing; every
//! test shuts its nodes down.

mod transport {
    pub(crate) mod support;

    mod admission;
    mod bad_frames;
    mod calls;
    mod cluster;
    mod faults;
    mod fuzz;
    mod head_of_line;
    mod managed;
    mod named_monitors;
    mod node_queries;
    mod ordering;
    mod protection;
    mod service;
    mod signals;
    mod stalls;
    mod traces;
    mod versions;
}
