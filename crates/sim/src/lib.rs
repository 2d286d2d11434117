//! A deterministic simulator for Shoal's sans-IO protocol cores.
//!
//! A [`Sim`] holds a set of nodes, each a value implementing [`SimNode`], and one queue of events
//! ordered by a virtual clock: messages in flight and timers. [`Sim::step`] takes the earliest
//! event, hands it to its node through a [`Ctx`], and queues what the node did in answer
//! (messages, timers). Nothing runs concurrently and nothing reads the real clock or the
//! operating system's randomness, so a run is a pure function of its seed, its nodes and the
//! calls the test makes: the same seed replays the same run, event for event
//! ([`Sim::trace_hash`] fingerprints it).
//!
//! The network between the nodes is unreliable on purpose ([`Network`]): every message gets a
//! random delay within a range (so messages overtake one another), and may be lost or
//! delivered twice; optionally a few are held back in a long tail of up to seconds, so that a
//! message can outlive a crash and restart of its receiver and arrive in a later round. Tests
//! add partitions ([`Sim::partition`], [`Sim::cut`]) and crash and restart nodes
//! ([`Sim::crash`], [`Sim::restart`]); a crashed node loses its timers and every message that
//! arrives while it is down, and is told to drop its volatile state ([`SimNode::on_crash`]). A
//! message still in flight when its receiver restarts is delivered to the new life.
//!
//! ```
//! use shoal_sim::{Ctx, Network, SimNode, SimNodeId, Sim};
//! use std::time::Duration;
//!
//! /// Answers every ping with a pong and counts the pongs it gets back.
//! struct Pinger { pongs: u32 }
//!
//! #[derive(Clone, Debug)]
//! enum Msg { Ping, Pong }
//!
//! impl SimNode for Pinger {
//!     type Msg = Msg;
//!     type Timer = ();
//!     type Output = u32;
//!     fn on_message(&mut self, ctx: &mut Ctx<'_, Self>, from: SimNodeId, msg: Msg) {
//!         match msg {
//!             Msg::Ping => ctx.send(from, Msg::Pong),
//!             Msg::Pong => {
//!                 self.pongs += 1;
//!                 ctx.output(self.pongs);
//!             }
//!         }
//!     }
//!     fn on_timer(&mut self, _: &mut Ctx<'_, Self>, _: ()) {}
//! }
//!
//! let nodes = vec![Pinger { pongs: 0 }, Pinger { pongs: 0 }];
//! let mut sim = Sim::new(7, Network::reliable(), nodes);
//! sim.invoke(0, |_, ctx| ctx.send(1, Msg::Ping));
//! sim.run_for(Duration::from_secs(1));
//! assert_eq!(sim.node(0).pongs, 1);
//! assert_eq!(sim.take_outputs().len(), 1);
//! ```
//!
//! What it is not: a model of TCP (there are no connections; a lost message is simply gone,
//! and detecting a dead peer is the business of the protocol under test or of its adapter), and
//! not a scheduler for async code (cores are plain state machines). For whole nodes (the
//! runtime, the transport and the drivers, async), the `nodes` feature gives `SimNet`: a
//! simulated network under the transport, for nodes on tokio's paused clock.

mod network;
#[cfg(feature = "nodes")]
pub mod nodes;
mod sim;

pub mod linearizability;

pub use network::Network;
#[cfg(feature = "nodes")]
pub use nodes::SimNet;
pub use sim::{Ctx, Record, Sim, SimNode, SimNodeId, SimStats};

#[cfg(test)]
mod tests;
