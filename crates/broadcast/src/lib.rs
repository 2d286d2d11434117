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
//! What this crate does *not* do (yet): move bytes. The driver that runs the cores over
//! `shoal-transport` comes in a later change. With the `sim` feature, the `simulation`
//! module runs both cores together on `shoal-sim`, with a scenario runner that measures
//! reliability, relative message redundancy and last delivery hop.
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

pub mod hyparview;
pub mod plumtree;
mod random;
#[cfg(feature = "sim")]
pub mod simulation;

pub use hyparview::HyParView;
pub use plumtree::{Handler, Plumtree};
