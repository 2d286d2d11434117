//! Integration tests of the broadcast crate: Plumtree on HyParView in the deterministic
//! simulator, measured as in the Plumtree paper (§4), and the [`Broadcast`] service over real
//! TCP. Every simulation failure message carries the seed and the whole report;
//! `Scenario::new(seed)` with that seed replays the run exactly.
//!
//! [`Broadcast`]: shoal_broadcast::Broadcast

mod broadcast {
    mod delivery;
    mod driver;
    mod healing;
    mod simulation;
}
