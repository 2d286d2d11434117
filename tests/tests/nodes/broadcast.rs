//! The broadcast driver on whole simulated nodes.
