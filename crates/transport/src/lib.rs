//! Shoal's transport between nodes (the ideas of Erlang's Partisan).
//!
//! This crate will hold the `Node`: a name, an incarnation and listen addresses; the
//! authenticated TCP handshake; length-prefixed msgpack frames; named channels with parallel
//! connections; full-mesh and static membership with failure detection; remote send, call,
//! monitor, link and spawn through the seam that `shoal-process` exposes
//! (`shoal_process::remote`); and built-in fault injection.
//!
//! Nothing is implemented yet: see the transport issue.
