//! Per-key consensus registers for Shoal, in the style of CASPaxos.
//!
//! Each key is a register changed by a function of its current value: a proposer reads the
//! highest accepted value from a majority of acceptors (prepare/promise), applies a [`Change`]
//! to it, and has a majority accept the result (accept/accepted). There is no leader and no
//! log; each key is its own consensus instance. Reads are linearisable because they are
//! changes too ([`Change::Read`], a full round that writes the value back).
//!
//! Apart from its [`driver`], this crate is the **sans-IO core**: [`Acceptor`] and [`Proposer`]
//! are state machines. Events go in as method calls carrying `now` (`handle_message`,
//! `handle_timeout`, `propose`); messages come out of `poll_transmit`, deadlines out of
//! `poll_timeout`, finished changes out of [`Proposer::poll_completion`]. It does not do I/O,
//! read a clock, spawn tasks or use global randomness (back-off jitter comes from a `SmallRng`
//! seeded by the config). It does not know the transport: a [`NodeId`] is whatever number the
//! driver gives a node ([`driver::node_id`]), and [`Message`]s are serde types the driver
//! encodes. Storage is the one synchronous boundary ([`Storage`]): a vote is
//! written, and for [`FileStorage`] fsynced, before its reply is queued.
//!
//! # The protocol in brief
//!
//! - **Ballots** are `(counter, proposer)`, the proposer being a node *and a run of it*
//!   ([`ProposerId`]), so a restarted proposer never reuses a ballot with a different value.
//! - **Quorum** is a majority of the explicit acceptor set ([`membership`], which also documents
//!   the safe procedure to add and remove acceptors).
//! - **Fast path**: an acceptor that accepts ballot `b` also promises `b`'s successor, so the
//!   proposer that just wrote a key holds a majority of promises for its next ballot and writes
//!   the key again in one round trip (accept only). Anyone else's prepare takes the promise away.
//! - **Contention**: a proposer refused for a higher ballot backs off for a random, growing time
//!   from its seeded RNG, or, if it has sent no accept for that change yet, forwards the change
//!   (it is data) to the key's designated proposer ([`designated`]), which runs it and sends the
//!   result back.
//! - **Owned entries**: an [`Entry`] may carry an [`Owner`] (a pid, a node: opaque bytes). It is
//!   removed only by an ordinary write, [`Change::ClearIfOwner`], which does nothing if the entry
//!   has since been taken by someone else.
//! - **At most once**: every accepted value carries the ballot of the value it was computed
//!   from (its *base*), so a key's values form a history. A round retried after an unconfirmed
//!   accept reads the highest value and its base: if the value is one the change proposed, it
//!   is proposed again; if it or its base is older than the change's first proposal, the
//!   change is applied to it; if it was computed from one of the change's proposals, it is
//!   written back unchanged and the change reported done; otherwise the change fails with
//!   [`PaxosError::Indeterminate`]. A change is never applied twice.
//! - **Failure**: a change that cannot finish by its deadline fails with [`PaxosError::NoQuorum`]
//!   (fewer than a majority answered) or [`PaxosError::Timeout`] (contention), each saying
//!   whether the change may still have taken effect.
//!
//! # Losing state
//!
//! An acceptor that forgets a promise it made can let two different values be chosen: it
//! promised ballot 6 to a proposer that counted it, restarted empty, then accepted ballot 5,
//! completing a majority for a value the ballot-6 proposer never saw. So an acceptor whose store
//! has no incarnation ([`Meta::incarnation`]; an in-memory store after a restart, a lost disk,
//! a new acceptor) does not vote — it answers prepares and accepts with
//! [`Rejection::Recovering`] — until it has **rejoined**:
//!
//! 1. *Query*: it asks the other acceptors which incarnation of it they know, and waits for a
//!    majority of the whole set (all others in a set of three).
//! 2. *Fence*: it takes an incarnation above all of those, and sends it to the others. Each one
//!    saves it as a fence *before* answering with its slots (in pages). It waits until a
//!    majority of the set has answered every page.
//! 3. It merges the slots (per key the higher promise and the value with the higher ballot),
//!    saves them, saves its new incarnation last, and votes from then on.
//!
//! Every promise carries the incarnation that gave it, and every accept lists the promises it
//! counted with their incarnations; an acceptor refuses an accept that counted a promise from
//! an incarnation older than its fence for that acceptor (or, for itself, not its current one).
//!
//! Why this is safe, in the example: the ballot-6 proposer's accept lists the lost incarnation's
//! promise, so every fenced acceptor refuses it, and the fenced ones are a majority, so ballot 6
//! can no longer be chosen with that promise. A value chosen before the loss sits on a majority,
//! which meets the majority the rejoining acceptor copied from, so it comes back. A value being
//! chosen during the rejoin by accepts that do not count the lost promise is ordinary Paxos
//! among acceptors that kept their state. Incarnations grow: any two majorities meet, so the
//! query sees the fence of every earlier rejoin that completed. Step 1 is what needs no durable
//! counter, and the random attempt numbers keep answers to an earlier life's rejoin out.
//!
//! The limit: at most a minority of acceptors may be without state at once. If a majority lose
//! their state together (say, all in-memory acceptors restart), what they forgot is gone; they
//! rejoin from each other so the cluster works again, but it starts from what survived. Use
//! [`FileStorage`] where that matters.
//!
//! # The driver
//!
//! [`driver`] runs a proposer and (on acceptor nodes) an acceptor per node over
//! `shoal-transport`: [`driver::Paxos`] with `get`, `put`, `change`, `compare_and_set`,
//! `delete`, owned entries cleared when their holder dies, typed errors saying whether a change
//! may have applied, and quorum-up/down events. It is the only part of the crate that does I/O.
//!
//! # Not here (yet)
//!
//! Batching several changes of a key into one round, and group commit in the file store (today
//! every vote is its own fsync, on the driver's task). The file store keeps every slot in
//! memory as well as on disk.
//!
//! # Testing
//!
//! Rules are checked message by message in `tests/paxos/{acceptor,proposer,storage,membership}.rs`;
//! `tests/paxos/driver.rs` runs the driver on three in-process nodes over real TCP.
//! `tests/paxos/sim/` runs a node per simulated process on `shoal-sim` and checks every key's
//! history with its linearisability checker: 12,500 seeded schedules per run (lossy,
//! duplicating, reordering network, partitions, crashes with durable or lost state, forwarding,
//! membership changes). A failing schedule prints its seed; `SHOAL_PAXOS_SEED=<seed>` replays
//! it. A planted bug (a store that acknowledges promises without keeping them) is caught.
//!
//! # Example
//!
//! Three acceptors and a proposer, with the network played by a loop that delivers every
//! message at once:
//!
//! ```
//! use std::time::Instant;
//! use shoal_paxos::{
//!     Acceptor, AcceptorConfig, Change, Entry, MemoryStorage, NodeId, Proposer,
//!     ProposerConfig, ProposerId,
//! };
//!
//! /// Delivers messages until none is left.
//! fn pump(acceptors: &mut [Acceptor<MemoryStorage>], proposer: &mut Proposer, now: Instant) {
//!     let mut wire = Vec::new();
//!     loop {
//!         for a in acceptors.iter_mut() {
//!             while let Some((to, m)) = a.poll_transmit() { wire.push((a.id(), to, m)); }
//!         }
//!         while let Some((to, m)) = proposer.poll_transmit() {
//!             wire.push((proposer.id().node, to, m));
//!         }
//!         if wire.is_empty() { return; }
//!         for (from, to, m) in wire.drain(..) {
//!             if to == proposer.id().node {
//!                 let _ = proposer.handle_message(now, from, m);
//!             } else if let Some(a) = acceptors.iter_mut().find(|a| a.id() == to) {
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
//!         let config = AcceptorConfig::new(id, ids.clone(), id.0);
//!         Acceptor::new(now, config, MemoryStorage::new())
//!     })
//!     .collect();
//! let me = ProposerId { node: NodeId(9), run: 1 };
//! let mut proposer = Proposer::new(ProposerConfig::new(me, ids.clone(), 7));
//!
//! // Empty acceptors rejoin from each other before they vote.
//! pump(&mut acceptors, &mut proposer, now);
//! assert!(acceptors.iter().all(|a| a.incarnation().is_some()));
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
//! assert!(matches!(first, shoal_paxos::Message::Accept { .. }));
//! ```

mod acceptor;
mod ballot;
pub mod driver;
mod error;
mod hash;
pub mod membership;
mod message;
mod proposer;
mod register;
mod storage;

pub use crate::acceptor::{
    Acceptor, AcceptorConfig, BeginEpochError, Ignored as AcceptorIgnored, Recovery,
};
pub use crate::ballot::{Ballot, Epoch, Incarnation, NodeId, ProposerId};
pub use crate::error::{PaxosError, ProposeError, StorageError};
pub use crate::message::{Message, Rejection, RequestId, Standing};
pub use crate::proposer::{
    Completion, Ignored as ProposerIgnored, Proposer, ProposerConfig, designated,
};
pub use crate::register::{Change, Entry, Key, Outcome, Owner, Register};
pub use crate::storage::{FileStorage, MemoryStorage, Meta, Slot, Storage};

#[cfg(test)]
mod tests {
    use super::*;

    fn send_and_sync<T: Send + Sync>() {}

    /// The driver moves the cores into tokio tasks and their messages across threads.
    #[test]
    fn core_types_are_send_and_sync() {
        send_and_sync::<Acceptor<MemoryStorage>>();
        send_and_sync::<Acceptor<FileStorage>>();
        send_and_sync::<Proposer>();
        send_and_sync::<Message>();
        send_and_sync::<Completion>();
        send_and_sync::<PaxosError>();
        send_and_sync::<StorageError>();
    }
}
