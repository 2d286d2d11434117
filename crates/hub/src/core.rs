//! The hub's decisions, sans-IO: no I/O, no clock, no randomness, so they are tested
//! exhaustively and simulated deterministically. So far: placement on a hash ring ([`Ring`]).

mod ring;

pub use ring::{DEFAULT_VNODES, Move, Ring};
