//! Shoal's local process runtime: the ground every other Shoal crate stands on.
//!
//! A *process* is a tokio task that owns its state and a bounded mailbox, and runs a
//! behaviour ([`Process`]) in the spirit of OTP's `gen_server`: `init`, handlers for casts,
//! calls and system signals, and `terminate`. Around it, the OTP toolkit:
//!
//! - identities: [`Pid`] (node, incarnation, local id), [`Ref`], [`NodeId`];
//! - spawn, spawn_link, spawn_monitor ([`Runtime`], [`Context`]); typed handles ([`Addr`])
//!   for the fast local path, untyped pids for everything;
//! - cast (back-pressure when the mailbox is full, [`SendError::Full`] for `try_` senders),
//!   call with a timeout and replies that may be deferred ([`ReplyTo`]);
//! - monitors (one [`Signal::Down`] each, with the [`ExitReason`]), links, trapped exits,
//!   `exit` and `kill`; a panic in a handler ends only its process, with the panic's message;
//! - timers (`send_after`, `start_timer`, cancel), local names, introspection;
//! - process factories: behaviours registered by name and built from serialised arguments,
//!   and [`ChildSpec`]s that name them — how processes are started on other nodes;
//! - the seam to a transport ([`remote`]): remote messages arrive encoded and are decoded by
//!   the receiving process with its behaviour's [`Codec`].
//!
//! What it does not do: talk to other nodes (that is `shoal-transport`, plugged in through
//! [`remote::Remote`]), or supervise (that is `shoal-supervisor`). Messages between local
//! processes are moved, never serialised.
//!
//! ```
//! use shoal_process::{Context, ExitReason, Process, Runtime, Signal};
//!
//! struct Worker;
//!
//! impl Process for Worker {
//!     type Message = &'static str;
//!     type Call = ();
//!     type Reply = ();
//!
//!     async fn handle_cast(&mut self, order: &'static str, ctx: &mut Context<Self>) {
//!         if order == "quit" {
//!             ctx.stop(ExitReason::custom("asked to quit"));
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::new()?;
//! let worker = runtime.spawn(Worker);
//! let exited = runtime.watch(worker.pid());
//! worker.cast("quit").await?;
//! assert_eq!(exited.await, ExitReason::custom("asked to quit"));
//! assert!(!runtime.is_alive(worker.pid()));
//! # Ok(()) }
//! ```

mod addr;
mod cell;
pub mod codec;
mod control;
mod current;
mod error;
mod exit;
mod factory;
mod guard;
mod mailbox;
mod names;
mod pid;
mod process;
pub mod remote;
mod reply;
mod run;
mod runtime;
mod send;
mod signal;
mod spec;
mod table;
mod timer;

pub use addr::{Addr, DEFAULT_CALL_TIMEOUT};
pub use codec::Codec;
pub use error::{
    BuildError, CallError, DecodeError, EncodeError, ExitError, FactoryError, LinkError,
    RegisterError, RemoteFailure, SendError, SpawnError, StartError,
};
pub use exit::ExitReason;
pub use mailbox::{MailboxConfig, Overflow};
pub use pid::{NodeId, Pid, Ref};
pub use process::{Context, Process};
pub use reply::ReplyTo;
pub use runtime::{ExitWatch, ProcessInfo, Runtime, RuntimeBuilder, SpawnOptions};
pub use signal::{ExitKind, Signal};
pub use spec::{ChildSpec, Restart, Shutdown};
pub use timer::TimerRef;
