//! The sans-IO core: the protocol as state machines, for a driver of your own, a simulation or a
//! test. [`Paxos`](crate::Paxos) runs it over the transport; most programs need nothing here.
//!
//! [`Acceptor`] and [`Proposer`] are state machines. Events go in as method calls carrying
//! `now` (`handle_message`, `handle_timeout`, `propose`); messages come out of
//! `poll_transmit`, deadlines out of `poll_timeout`, finished changes out of
//! [`Proposer::poll_completion`]. The core does not do I/O, read a clock, spawn tasks or use
//! global randomness (back-off jitter comes from a `SmallRng` seeded by the config). It does
//! not know the transport: a [`NodeId`] is whatever number the driver gives a node (the handle
//! hashes node names), and [`Message`]s are serde types the driver encodes. Nor does it write
//! its votes: the acceptor asks for writes ([`Acceptor::poll_persist`], a [`Persist`] batch of
//! [`Record`]s for a [`Storage`]) and holds every reply queued after them until the caller
//! reports them durable ([`Acceptor::persisted`]) — persist, then reply.
//!
//! ```text
//!  propose(now, key, change) ──┐                ┌──► poll_transmit()   → (to, Message)
//!  handle_message(now, from, m)┼──► Proposer ───┼──► poll_completion() → Completion
//!  handle_timeout(now) ────────┘                └──► poll_timeout()    → next deadline
//!
//!  handle_message(now, from, m)┐                ┌──► poll_persist()    → Persist (write it)
//!  handle_timeout(now) ────────┼──► Acceptor ───┼──► poll_transmit()   → (to, Message), once
//!  persisted(id) ──────────────┘                │    the writes before it are durable
//!                                               └──► poll_timeout()    → next deadline
//! ```
//!
//! The values a key holds and the changes to it ([`Change`](crate::Change),
//! [`Register`](crate::Register), [`Outcome`](crate::Outcome)), the error a change fails with
//! ([`PaxosError`](crate::PaxosError)) and [`Recovery`](crate::Recovery) are the handle's too,
//! at the crate root.
//!
//! # Example
//!
//! Three acceptors and a proposer, with the network played by a loop that delivers every
//! message at once:
//!
//! ```
//! use std::time::Instant;
//! use shoal_paxos::core::{
//!     Acceptor, AcceptorConfig, Message, NodeId, Proposer, ProposerConfig, ProposerId, Storage,
//! };
//! use shoal_paxos::{Change, Entry, MemoryStorage, Recovery};
//!
//! /// Delivers messages until none is left; each acceptor's writes go to its store first.
//! fn pump(acceptors: &mut [(Acceptor, MemoryStorage)], proposer: &mut Proposer, now: Instant) {
//!     let mut wire = Vec::new();
//!     loop {
//!         for (a, store) in acceptors.iter_mut() {
//!             while let Some(batch) = a.poll_persist() {
//!                 store.write(&batch.records).unwrap();
//!                 a.persisted(batch.id);
//!             }
//!             while let Some((to, m)) = a.poll_transmit() { wire.push((a.id(), to, m)); }
//!         }
//!         while let Some((to, m)) = proposer.poll_transmit() {
//!             wire.push((proposer.id().node, to, m));
//!         }
//!         if wire.is_empty() { return; }
//!         for (from, to, m) in wire.drain(..) {
//!             if to == proposer.id().node {
//!                 let _ = proposer.handle_message(now, from, m);
//!             } else if let Some((a, _)) = acceptors.iter_mut().find(|(a, _)| a.id() == to) {
//!                 let _ = a.handle_message(now, from, m);
//!             }
//!         }
//!     }
//! }
//!
//! let now = Instant::now();
//! let ids = vec![NodeId(1), NodeId(2), NodeId(3)];
//! let mut acceptors: Vec<_> = ids
//!     .iter()
//!     .map(|&id| {
//!         // A fresh cluster: the acceptors found its first epoch themselves.
//!         let config = AcceptorConfig {
//!             recovery: Recovery::NewEpoch,
//!             ..AcceptorConfig::new(id, ids.clone(), id.0)
//!         };
//!         let store = MemoryStorage::new();
//!         (Acceptor::new(now, config, &store), store)
//!     })
//!     .collect();
//! let me = ProposerId { node: NodeId(9), run: 1 };
//! let mut proposer = Proposer::new(ProposerConfig::new(me, ids.clone(), 7));
//!
//! // Empty acceptors found an epoch; one that was not needed for the majority rejoins the
//! // others on its next retry.
//! pump(&mut acceptors, &mut proposer, now);
//! let later = now + std::time::Duration::from_secs(1);
//! acceptors.iter_mut().for_each(|(a, _)| a.handle_timeout(later));
//! pump(&mut acceptors, &mut proposer, later);
//! assert!(acceptors.iter().all(|(a, _)| a.incarnation().is_some()));
//!
//! let id = proposer.propose(now, "k".into(), Change::Set(Entry::new("v"))).unwrap();
//! pump(&mut acceptors, &mut proposer, now);
//! let done = proposer.poll_completion().unwrap();
//! assert_eq!(done.id, id);
//! assert_eq!(done.result.unwrap().after.entry, Some(Entry::new("v")));
//!
//! // The second write of the key takes the fast path: accepts only, no prepare.
//! proposer.propose(now, "k".into(), Change::Read).unwrap();
//! let (_, first) = proposer.poll_transmit().unwrap();
//! assert!(matches!(first, Message::Accept { .. }));
//! ```

// `pub(crate)`: the crate root re-exports `Recovery`, which an acceptor's config holds.
pub(crate) mod acceptor;
mod ballot;
pub mod membership;
mod message;
// Test-only (feature `mutants`): public for the test binary, which switches mutants on.
#[cfg(feature = "mutants")]
#[doc(hidden)]
pub mod mutants;
#[cfg(not(feature = "mutants"))]
mod mutants;
mod proposer;

pub use self::acceptor::{Acceptor, AcceptorConfig, Ignored as AcceptorIgnored, Persist};
pub use self::ballot::{Ballot, Epoch, Incarnation, Lineage, NodeId, ProposerId};
pub use self::message::{Message, Rejection, RequestId, Standing};
pub use self::proposer::{
    Completion, Ignored as ProposerIgnored, Proposer, ProposerConfig, designated,
};
pub use crate::error::ProposeError;
pub use crate::storage::{Meta, Record, Slot, Storage};
