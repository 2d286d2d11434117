//! Epidemic broadcast for Shoal: Plumtree on a HyParView partial-view overlay.
//!
//! Two sans-IO state machines, after Leitão, Pereira and Rodrigues:
//!
//! - [`Plumtree`] ("Epidemic Broadcast Trees", SRDS 2007): eager push of payloads along a
//!   spanning tree per root, lazy push of IHAVE announcements (batched per tick) to the other
//!   neighbours, GRAFT of missing messages after a timeout, PRUNE of redundant links, and
//!   periodic anti-entropy exchanges run by the application's [`Handler`].
//! - [`HyParView`] ("HyParView", DSN 2007): a small active view of neighbours (default 5) and
//!   a larger passive view (default 30), kept by JOIN / FORWARD_JOIN random walks, NEIGHBOUR
//!   requests with priority, DISCONNECT and periodic SHUFFLE; failures reported by the driver
//!   are repaired from the passive view. Its neighbour-up and -down outputs feed Plumtree.
//!
//! Both take inputs as method calls that carry the current time (`now: Instant`), emit what to
//! send through `poll_output`, and say when they next need `handle_timeout` through
//! `poll_timeout`. They use no tokio, no clock and no global randomness (each has a seed in
//! its config), so a simulation replays exactly.
//!
//! The [`driver`] module runs both cores over a `shoal-transport` node: a tokio task per node,
//! handlers registered by name, HyParView as the node's membership when the transport runs
//! `Membership::Managed`. With the `sim` feature, the `simulation` module runs both cores
//! together on `shoal-sim`, with a scenario runner that measures reliability, relative message
//! redundancy and last delivery hop.
//!
//! What this crate does *not* do: detect failures (the transport's heartbeats do, and the
//! driver reports them), order broadcasts, or keep them across restarts.
//!
//! ```
//! use std::time::Instant;
//! use shoal_broadcast::{HyParView, hyparview};
//!
//! let now = Instant::now();
//! let mut node = HyParView::new("n1", hyparview::Config { seed: 7, ..Default::default() }, now);
//! node.join(now, "n0").unwrap();
//! // The contact is a neighbour at once: tell Plumtree.
//! assert_eq!(node.poll_output(), Some(hyparview::Output::NeighbourUp("n0")));
//! ```
//!
//! # Running the cores (the driver's contract)
//!
//! A driver — the simulation adapter, the transport [`driver`] — does only this:
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
//! Every error a core returns means "ignored, state unchanged"; a driver may log it and goes
//! on. The cores' queues are bounded by their configurations and by the outputs of one input,
//! which the driver drains at once.

pub mod driver;
pub mod hyparview;
pub mod plumtree;
mod random;
#[cfg(feature = "sim")]
pub mod simulation;

pub use driver::Driver;
pub use hyparview::HyParView;
pub use plumtree::{Handler, Plumtree};

#[cfg(test)]
mod tests {
    /// The cores can move between threads (a driver runs each on a tokio task).
    #[test]
    fn cores_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<crate::HyParView<u64>>();
        assert_send_sync::<crate::hyparview::Output<u64>>();
        assert_send_sync::<crate::plumtree::Output<u64, u64, Vec<u8>>>();
        assert_send_sync::<crate::plumtree::MessageError>();
        assert_send_sync::<crate::hyparview::MessageError>();
    }
}
