//! Per-key consensus registers for Shoal, in the style of CASPaxos.
//!
//! [`Paxos`] is the Paxos service of one node of a `shoal-transport` cluster. Each key is a
//! register changed by a function of its current value: a proposer reads the highest accepted
//! value from a majority of acceptors (prepare/promise), applies a [`Change`] to it, and has a
//! majority accept the result (accept/accepted). There is no leader and no log; each key is
//! its own consensus instance, and reads are linearisable because they are changes too
//! ([`Change::Read`], a full round that writes the value back).
//!
//! - Operations on keys: [`Paxos::get`], [`Paxos::put`], [`Paxos::compare_and_set`],
//!   [`Paxos::delete`], and any [`Change`] with [`Paxos::change`]; each returns an [`Outcome`]
//!   (the [`Register`] before and after, and `(epoch, version)`, a fencing token) or a
//!   [`PaxosError`] saying whether the change may have taken effect.
//! - Owned entries: [`Paxos::put_owned`] binds an [`Entry`] to a [`Holder`] (a process or a run
//!   of a node) and clears it through consensus when the holder dies.
//! - Quorum up and down as [`QuorumEvent`]s ([`Paxos::subscribe`], [`Paxos::has_quorum`]).
//! - The acceptor set changed one acceptor at a time ([`Paxos::add_acceptor`],
//!   [`Paxos::remove_acceptor`]), and recovery after a majority lost its state
//!   ([`Paxos::begin_epoch`], or [`Recovery::NewEpoch`]).
//! - Acceptors in memory or, durable across restarts, in files ([`StorageConfig`]).
//!
//! ```no_run
//! use shoal_paxos::{Entry, Paxos, PaxosConfig, Recovery};
//! use shoal_transport::Node;
//!
//! /// Runs the service on `nodes`, three connected nodes of one cluster called a, b and c.
//! async fn example(nodes: &[Node]) -> Result<(), Box<dyn std::error::Error>> {
//!     let mut config = PaxosConfig::new(vec!["a".into(), "b".into(), "c".into()]);
//!     // A fresh cluster: the first acceptors without state found the first epoch themselves.
//!     config.recovery = Recovery::NewEpoch;
//!     let mut services = Vec::new();
//!     for node in nodes {
//!         services.push(Paxos::start(node, config.clone()).await?);
//!     }
//!     services[0].put("greeting", b"hello".to_vec()).await?;
//!     let read = services[1].get("greeting").await?;
//!     assert_eq!(read, Some(Entry::new("hello")));
//!     // Replaced only if it still holds what was read; `(epoch, version)` fences the write.
//!     let outcome = services[2].compare_and_set("greeting", read, Some(Entry::new("hi"))).await?;
//!     assert!(outcome.applied);
//!     println!("fencing token: ({}, {})", outcome.epoch, outcome.after.version);
//!     Ok(())
//! }
//! ```
//!
//! # What it does not do
//!
//! - Retry a failed change: each [`PaxosError`] says whether the change may have taken effect
//!   (`maybe_applied`), and the caller decides; with no quorum, changes fail with
//!   [`PaxosError::NoQuorum`].
//! - Detect failures or find the acceptors: the transport's heartbeats report nodes down, and
//!   the acceptor set is configured, the same on every node.
//! - Clear an owned entry whose writer died before its holder: only the node that wrote an
//!   entry watches its holder, and the registry above, which knows its keys, clears the rest.
//! - Batch several changes of a key into one round. The file store keeps every slot in
//!   memory as well as on disk, and the acceptor keeps a copy of its own.
//!
//! The protocol itself is a **sans-IO core** in [`core`] (acceptor, proposer, messages,
//! ballots, membership): state machines that take messages and the current time and return
//! messages, deadlines and the writes to make durable, with no I/O, clock, tasks or global
//! randomness. **Persist, then reply**: the acceptor asks for its writes as an output
//! (`Acceptor::poll_persist`) and holds every reply queued after them until they are reported
//! durable. [`Paxos`] is a thin driver that runs the cores over the transport, and the only
//! part of the crate that does I/O: it writes a [`FileStorage`] acceptor's batches on a
//! blocking thread, every vote waiting at that moment in one append and one fsync (group
//! commit), so its tokio task never waits for the disk.
//!
//! **Cargo features.** `driver` (default): [`Paxos`] and its configuration, on tokio and
//! `shoal-transport`. Without it (`--no-default-features`) the crate is the core, the stores
//! and the register types, with no tokio, `shoal-process` or `shoal-transport` in its
//! dependency tree. `mutants` is test-only (see "Testing").
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
//! - **At most once**: every accepted value carries the ballots of the values it descends
//!   from, parent first ([`Lineage`], up to six), so a key's values form a history. A round
//!   retried after an unconfirmed accept reads the highest value and its lineage: if the value
//!   is one the change proposed, it is proposed again; if it is older than the change's first
//!   proposal, or its lineage reaches an older value before any of the change's proposals, the
//!   change is applied to it; if it descends from one of the change's proposals, it is written
//!   back unchanged and the change reported done; only when the lineage is cut short before
//!   either does the change fail with [`PaxosError::Indeterminate`] (0.03% of operations in the
//!   clean-network simulation, from 3.9% when only the parent was kept). A change is never
//!   applied twice.
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
//! 1. *Query*: it asks the other acceptors whether they vote ([`Standing`]) and which
//!    incarnation of it they know. Only **voting** acceptors of the newest epoch count, and it
//!    needs `n - majority + 1` of them (2 of the others in a set of 3 or 4, 3 in a set of 5).
//! 2. *Fence*: it takes a life above every one of those, and sends the new incarnation to the
//!    others. Each one saves it as a fence *before* answering with its slots (in pages) and its
//!    own fences. It waits until enough voting acceptors have answered every page.
//! 3. It drops whatever its store still holds, saves the merged slots (per key the higher
//!    promise and the value with the higher ballot) and the merged fences (so incarnations never
//!    repeat however acceptors restart in turn), saves its new incarnation last, and votes.
//!
//! Every promise carries the incarnation that gave it, and every accept lists the promises it
//! counted with their incarnations; an acceptor refuses an accept that counted a promise from an
//! incarnation older than its fence for that acceptor (or, for itself, not its current one).
//! Every `Accepted` carries the acceptor's fences, and a proposer counts no vote — promise or
//! acceptance — of an incarnation it knows to be replaced: a vote given before a loss does not
//! complete a majority with a vote given after the rejoin that copied from around it.
//!
//! Why this is safe: a value chosen before a loss sits on a majority `Q`; the voting acceptors a
//! rejoin copies from meet `Q` outside the lost acceptor, and each of them either held the value
//! when it was fenced (so the copy has it) or accepted it after (so its `Accepted` carried the
//! fence, and the proposer did not count the lost vote). An accept that counted a lost promise
//! is refused by every fenced acceptor, and the fenced ones leave no majority without one. Any
//! minority of the acceptors may be without state at once.
//!
//! **Epochs.** If a majority loses its state together (every in-memory acceptor restarted, or a
//! fresh cluster that never had any), what it forgot is gone, and nobody can rejoin. The
//! acceptors then **found a new epoch** ([`Epoch`]): one without state that finds a majority
//! without state proposes an epoch numbered above every one it saw (and above a floor, the wall
//! clock in the driver); those without state promise it durably, and once a majority did, they
//! start it empty at life 0 of the epoch. An acceptor promises only epochs newer than any it
//! knows, and joins one only with the number it drew for its current promise, so a message
//! that outlives an acceptor's state never makes it join twice. A voting acceptor that sees a
//! newer epoch forgets its own and rejoins the new one; proposers count votes of the newest
//! epoch only. Founding is the operator's decision ([`Recovery::Manual`], the default:
//! [`Paxos::begin_epoch`]) or automatic ([`Recovery::NewEpoch`], opt-in: the acceptors' state
//! is then lost whenever a majority loses it). `(Outcome::epoch, version)` is a fencing token that
//! keeps growing across epochs.
//!
//! [`ProposerId`]: core::ProposerId
//! [`designated`]: core::designated
//! [`Lineage`]: core::Lineage
//! [`Meta::incarnation`]: core::Meta::incarnation
//! [`Standing`]: core::Standing
//! [`Epoch`]: core::Epoch
//! [`Rejection::Recovering`]: core::Rejection::Recovering
//! [`membership`]: core::membership
//!
//! # Testing
//!
//! Rules are checked message by message in
//! `tests/paxos/{acceptor,proposer,regressions,rejoin,storage,membership}.rs`;
//! `tests/paxos/driver.rs` runs the driver on three in-process nodes over real TCP.
//! `tests/paxos/sim/` runs a node per simulated process on `shoal-sim` and checks every key's
//! history with its linearisability checker: seeded schedule families (lossy, duplicating,
//! reordering network, partitions, crashes with durable or lost state, forwarding, membership
//! changes, messages held past restarts, fast, rolling and double restarts), each bounded by a
//! count and a time budget; `tests/paxos/walk.rs` runs 300,000 message-level random walks of
//! the cores. A failing schedule or walk prints its seed and the command that replays it;
//! `cargo xtask explore-paxos` runs them on seeds CI never ran.
//!
//! What the tests catch is measured: the test binary enables the feature `mutants` (test-only),
//! which compiles one-line mutants of the acceptor's, the proposer's and the rejoin's rules,
//! each off unless selected (`SHOAL_PAXOS_MUTANT=<name>`, or per thread by the test harness).
//! `tests/paxos/mutants.rs` fails if any of them survives the scripted tests and the random
//! walk, and `cargo xtask mutants` runs the whole binary under each.

pub mod core;
#[cfg(feature = "driver")]
mod driver;
mod error;
mod hash;
mod register;
mod stats;
mod storage;

pub use crate::core::acceptor::Recovery;
#[cfg(feature = "driver")]
pub use crate::driver::{
    Holder, OwnedWriteError, Paxos, PaxosConfig, PaxosStartError, QuorumEvent, ReconfigureError,
    ReconfigureStep, StorageConfig,
};
pub use crate::error::{BeginEpochError, PaxosError, StorageError};
pub use crate::register::{Change, Entry, Key, Outcome, Owner, Register};
pub use crate::stats::{LATENCY_BOUNDS_MICROS, LatencyHistogram, PaxosStats};
pub use crate::storage::{FileStorage, MemoryStorage};

#[cfg(all(test, feature = "driver"))]
mod tests {
    use crate::core::{Acceptor, Completion, Message, Persist, Proposer};
    use crate::{FileStorage, MemoryStorage, Paxos, PaxosError, PaxosStartError, StorageError};

    fn send_and_sync<T: Send + Sync>() {}

    /// The driver moves the cores into tokio tasks, the stores and their batches to blocking
    /// threads, and messages across threads; callers share the handle and its errors across
    /// tasks.
    #[test]
    fn public_types_are_send_and_sync() {
        send_and_sync::<Acceptor>();
        send_and_sync::<Persist>();
        send_and_sync::<MemoryStorage>();
        send_and_sync::<FileStorage>();
        send_and_sync::<Proposer>();
        send_and_sync::<Message>();
        send_and_sync::<Completion>();
        send_and_sync::<Paxos>();
        send_and_sync::<PaxosError>();
        send_and_sync::<PaxosStartError>();
        send_and_sync::<StorageError>();
    }
}
