//! Integration tests of the broadcast crate: Plumtree on HyParView in the deterministic
//! simulator, measured as in the Plumtree paper (§4). Every failure message carries the seed
//! and the whole report; `Scenario::new(seed)` with that seed replays the run exactly.

mod broadcast {
    mod driver;
    mod simulation;
}
