//! Epidemic broadcast for Shoal: Plumtree on a HyParView partial-view overlay, over a
//! `shoal-transport` node.
//!
//! A [`Broadcast`] is a node's broadcast service. Applications share it by [`Topic`]: each
//! registers a handler for its topic on every node, and a message broadcast on the topic
//! reaches the topic's handler on every node of the overlay, along a spanning tree that
//! Plumtree forms and repairs (eager push along the tree, lazy IHAVE announcements to the
//! other neighbours, GRAFT of what is missing, periodic anti-entropy exchanges). A topic fixes
//! its message type, so a broadcast of the wrong type does not compile. The handler decides
//! what a message is and whether it is new ([`Handler`], [`AntiEntropy`]), and so that each
//! message reaches it once; [`Log`] is a ready-made one that keeps the latest messages and
//! delivers each once, however few it keeps ([`Seen`]). The driver counts every message it
//! does not send ([`Broadcast::stats`]).
//!
//! The overlay follows the node's membership: in `Membership::Managed`, HyParView's active
//! view (5 neighbours by default) chooses the node's connections, so a large cluster needs no
//! full mesh; over the transport's full mesh, the same protocols run over the connections the
//! transport keeps. One [`BroadcastConfig`] holds every setting.
//!
//! ```
//! use std::time::Duration;
//! use shoal_broadcast::{Broadcast, BroadcastConfig, Log, Topic};
//! use shoal_transport::{ClusterKey, Node};
//!
//! /// Chat lines, to every node.
//! const CHAT: Topic<String> = Topic::new("chat");
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = ClusterKey::generate();
//! let a = Node::builder("a", key.clone()).start().await?;
//! let b = Node::builder("b", key).start().await?;
//! let broadcast_a = Broadcast::start(&a, BroadcastConfig::default()).await?;
//! let broadcast_b = Broadcast::start(&b, BroadcastConfig::default()).await?;
//! let (log_a, log_b) = (Log::new(&a, 10_000), Log::new(&b, 10_000));
//! broadcast_a.register(CHAT, log_a).await?;
//! broadcast_b.register(CHAT, log_b.clone()).await?;
//! broadcast_b.join(a.listen_addr()).await?;
//!
//! broadcast_a.broadcast(CHAT, "hello".to_owned()).await?;
//! let mut deliveries = log_b.deliveries();
//! tokio::time::timeout(Duration::from_secs(10), deliveries.wait_for(|n| *n == 1)).await??;
//! assert_eq!(log_b.messages()[0].1, "hello");
//! # a.shutdown(); b.shutdown();
//! # Ok(()) }
//! ```
//!
//! What this crate does *not* do: detect failures (the transport's heartbeats do, and the
//! driver reports them), order broadcasts, keep them across restarts, or retry a broadcast
//! (anti-entropy repairs what the tree lost, between handlers that still hold it).
//!
//! # Modules
//!
//! - [`core`]: the protocols as sans-IO state machines ([`core::Plumtree`],
//!   [`core::HyParView`]) and the overlay policy around HyParView ([`core::Overlay`]: which
//!   peer to connect to, retry, evict or disconnect): no tokio, no clock, no global
//!   randomness, so a simulation replays exactly. The [`Broadcast`] driver runs them over the
//!   transport and decides nothing a test of the protocols would need to check; the module's
//!   docs give the contract every driver follows.
//! - The driver (feature `driver`, on by default): [`Broadcast`] and what it is started and
//!   used with. Without it (`--no-default-features`) the crate is the cores alone, and
//!   depends on neither tokio nor `shoal-transport`.
//! - `simulation` (feature `sim`): both cores together on `shoal-sim`, with a scenario runner
//!   that measures reliability, relative message redundancy and last delivery hop at 1,000
//!   nodes and more.

// Without the driver, the crate docs still name its items: their links resolve only with it.
#![cfg_attr(not(feature = "driver"), allow(rustdoc::broken_intra_doc_links))]

pub mod core;
#[cfg(feature = "driver")]
mod driver;
#[cfg(feature = "sim")]
pub mod simulation;

pub use crate::core::{Graft, Handler};
#[cfg(feature = "driver")]
pub use crate::driver::{
    AntiEntropy, Broadcast, BroadcastConfig, BroadcastError, BroadcastStartError, Contact, Log,
    MessageId, Seen, Stats, Summary, Topic, Views,
};
