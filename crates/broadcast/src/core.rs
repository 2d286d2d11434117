//! The protocol cores: sans-IO state machines, the two protocols after Leitão, Pereira and
//! Rodrigues and the overlay policy around HyParView. A program that broadcasts through
//! `Broadcast` (feature `driver`) never touches them; they are public for simulations,
//! benchmarks and drivers of other transports.
//!
//! - [`Plumtree`] ("Epidemic Broadcast Trees", SRDS 2007): eager push of payloads along a
//!   spanning tree per root, lazy push of IHAVE announcements (batched per tick) to the other
//!   neighbours, GRAFT of missing messages after a timeout, PRUNE of redundant links, and
//!   periodic anti-entropy exchanges run by the application's [`Handler`].
//! - [`HyParView`] ("HyParView", DSN 2007): a small active view of neighbours (default 5) and
//!   a larger passive view (default 30), kept by JOIN / FORWARD_JOIN random walks, NEIGHBOUR
//!   requests with priority, DISCONNECT and periodic SHUFFLE; failures reported by the driver
//!   are repaired from the passive view, and the peers lost to them are retried with backoff
//!   until they are back (so the overlay heals after a partition of any length). Its
//!   neighbour-up and -down outputs feed Plumtree.
//! - [`Overlay`]: a HyParView core plus the policy that keeps a node in the overlay over a
//!   transport's connections (lost peers retried, stale addresses evicted, rejoin when
//!   isolated, connected nodes offered, connections opened for the active view and idle ones
//!   closed), as outputs such as "connect to", "close the connection to" and "send". The
//!   transport driver runs this one rather than a bare HyParView.
//!
//! All take inputs as method calls that carry the current time (`now: Instant`), emit what to
//! send through `poll_output`, and say when they next need `handle_timeout` through
//! `poll_timeout`. They use no tokio, no clock and no global randomness (each has a seed in
//! its configuration), so a simulation replays exactly; the crate builds them without tokio
//! (`--no-default-features`).
//!
//! ```
//! use std::time::Instant;
//! use shoal_broadcast::core::{HyParView, HyParViewConfig, HyParViewOutput};
//!
//! let now = Instant::now();
//! let mut node = HyParView::new("n1", HyParViewConfig { seed: 7, ..Default::default() }, now);
//! node.join(now, "n0").unwrap();
//! // The contact is a neighbour at once: tell Plumtree.
//! assert_eq!(node.poll_output(), Some(HyParViewOutput::NeighbourUp("n0")));
//! ```
//!
//! # Running the cores (the driver's contract)
//!
//! A driver — the simulation adapter (`simulation`, feature `sim`), the transport driver
//! behind `Broadcast` — does only this:
//!
//! 1. Feed every input to its core with the current time: `handle_message` for a message
//!    from a peer, `HyParView::join` once at start, `HyParView::peer_failed` when a connection
//!    to a peer fails or its heartbeats stop, `Plumtree::broadcast` for the application.
//! 2. After every input, drain both cores' `poll_output` until both are empty: send what
//!    they ask to send; pass HyParView's `NeighbourUp` and `NeighbourDown` to Plumtree's
//!    `neighbour_up` and `neighbour_down`; on Plumtree's `Exchange { peer }`, call the
//!    handler's [`exchange`](Handler::exchange).
//! 3. Call `handle_timeout(now)` on each core when its `poll_timeout` comes due (a value in
//!    the past means "now"), then drain again.
//!
//! A driver of [`Overlay`] feeds it what it would feed HyParView, plus the connections the
//! transport reports (`handle_up`, `handle_down`), the outcome of each connection it was asked
//! to open, and sends that found no connection; it asks [`Overlay::route`] where a tree's
//! message goes, and does what [`OverlayOutput`] says.
//!
//! Every error a core returns ([`PlumtreeError`], [`HyParViewError`]) means "ignored, state
//! unchanged"; a driver may log it and goes on. The cores' queues are bounded by their
//! configurations and by the outputs of one input, which the driver drains at once.

mod hyparview;
mod overlay;
mod plumtree;
mod random;

pub use hyparview::{
    HyParView, HyParViewConfig, HyParViewError, HyParViewMessage, HyParViewOutput, Priority,
};
pub use overlay::{
    ConnectResult, ConnectionMode, Overlay, OverlayConfig, OverlayOutput, Peer, Route,
};
pub use plumtree::{
    Announcement, Graft, Handler, Plumtree, PlumtreeConfig, PlumtreeError, PlumtreeMessage,
    PlumtreeOutput,
};

#[cfg(test)]
mod tests {
    /// The cores can move between threads (a driver runs each on a tokio task).
    #[test]
    fn cores_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<super::HyParView<u64>>();
        assert_send_sync::<super::HyParViewOutput<u64>>();
        assert_send_sync::<super::Overlay<usize>>();
        assert_send_sync::<super::OverlayOutput<usize>>();
        assert_send_sync::<super::PlumtreeOutput<u64, u64, Vec<u8>>>();
        assert_send_sync::<super::PlumtreeError>();
        assert_send_sync::<super::HyParViewError>();
    }
}
