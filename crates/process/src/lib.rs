//! Shoal's local process runtime: the ground every other Shoal crate stands on.
//!
//! A *process* is a tokio task that owns its state and a bounded mailbox, and runs a
//! behaviour ([`Process`]) in the spirit of OTP's `gen_server`: `init`, handlers for casts,
//! calls and system signals, and `terminate`. Around it, the OTP toolkit:
//!
//! - identities: [`Pid`] (node, incarnation, local id), [`Ref`], [`NodeId`];
//! - spawn, spawn_link, spawn_monitor ([`Runtime`], [`Context`]); typed handles ([`Addr`])
//!   to a process here (the fast path: moved into its mailbox) or on another node (encoded with
//!   the behaviour's [`Codec`], opted in to by [`Process::remote_messages`]), their types
//!   checked at compile time either way; one destination type, [`Dest`], taken by every send,
//!   call, monitor and link: a pid, a name here, a name on another node, or a name a layer
//!   above resolves ([`Via`]), and its typed twin [`Target`];
//! - cast (back-pressure when the mailbox is full, [`SendError::Full`] for `try_` senders),
//!   call with a timeout and replies that may be deferred ([`ReplyTo`]);
//! - monitors (one [`Signal::Down`] each, with the [`ExitReason`]; by pid, or by registered
//!   name here or on a node), links, trapped exits,
//!   `exit` and `kill` (a kill is its own signal; an exit with the reason `Killed` is an
//!   ordinary, trappable one); a panic in a handler ends only its process, with the panic's
//!   message; a process that exits removes the monitors it held;
//! - timers (`send_after`, `start_timer`, cancel; a cancelled or fired timer leaves nothing
//!   behind), local names, introspection;
//! - work run inside a local process on its state, in its mailbox order ([`Runtime::sys`],
//!   as OTP's `sys:get_state` and `sys:replace_state`), for layers that hand a process's state
//!   over or change its role in place; a hand-off ([`Runtime::hand_off`]): a process ends at
//!   such a snapshot and its pid forwards its mail, in order, to a successor for a retention
//!   window ([`Forwarding`]), for moving a process to another node without losing a letter;
//! - process factories: behaviours registered by name and built from serialised arguments,
//!   and [`ChildSpec`]s that name them — how processes are started on other nodes;
//! - the seam to a transport ([`remote`]): remote messages arrive encoded and are decoded by
//!   the receiving process with its behaviour's [`Codec`].
//!
//! What it does not do: talk to other nodes (that is `shoal-transport`, plugged in through
//! [`remote::Remote`]), or supervise (that is `shoal-supervisor`). Messages between local
//! processes are moved, never serialised.
//!
//! # Tracing
//!
//! Each process's task runs inside a `process` span (level `INFO`) with the fields `node`
//! (the runtime's node name) and `pid`, so every line a process logs, and every span it opens,
//! shows where it runs. The span is made once per spawn, and only when the subscriber records
//! it: without one the task is spawned as it is, and nothing is done per message. A call to a
//! process on another node runs in a `call` span, and its handler there in a `handle_call`
//! span that joins the caller's trace ([`TraceContext`]); `shoal-transport`'s docs
//! ("Tracing") say how the context travels and how to get one OpenTelemetry trace.
//!
//! # Figures
//!
//! [`Runtime::stats`] counts processes alive, spawned and exited (by class of reason),
//! supervisors' restarts, and mailboxes over a threshold: cheap atomics, read on a tick by
//! a metrics sampler.
//!
//! # Bounds
//!
//! Every mailbox is bounded. Messages count toward the bound, and so do exit signals sent
//! directly to a process that traps exits (anyone may send any number of them):
//! [`Runtime::try_exit`] hands one back when the mailbox is full, [`Runtime::exit`] refuses it
//! with a warning. Signals whose number the process itself bounds (a `Down` per monitor, an
//! `Exit` per link, a `Timeout` per timer) are always admitted, and so are the node events
//! ([`Signal::NodeUp`], [`Signal::NodeDown`]) a transport delivers to a process that
//! subscribed to them (the transport bounds those: see its `Node::monitor_nodes`). Sys work
//! ([`Runtime::sys`]) counts as a message. A timer's message, and sys work, wait for room
//! whatever the overflow policy; a cast from another node refused by a full
//! [`Overflow::Reject`] mailbox is counted ([`Runtime::refused_remote_casts`]) and logged.
//! A process that was handed off ([`Runtime::hand_off`]) keeps its mailbox, and its bound, for
//! the forwarding window: its forwarder takes one letter at a time, so no more than the bound
//! wait for it, and what it cannot send on is counted ([`ForwardReport::failed`]).
//!
//! A process never waits on itself: a call to itself is refused at once
//! ([`CallError::CallingSelf`]), and so is sys work asked of itself ([`SysError::ToSelf`]);
//! a cast to its own full mailbox fails with [`SendError::Full`] rather than waiting for room
//! only it could make.
//!
//! # Limits
//!
//! These follow from running processes as tokio tasks, and no fix in this crate removes them:
//!
//! - **A kill takes effect only where a handler suspends.** An exit or a kill is seen when
//!   the process's handler reaches an await point that is not ready (or between two
//!   letters). A handler that blocks its thread, or loops without awaiting, cannot be
//!   interrupted: it ends when it next awaits or returns. Supervisors therefore wait for a
//!   killed child only for a bounded time, then report it as still alive.
//! - **A message a process was blocked on sending when it died is lost.** A handler waiting
//!   for room in a full mailbox (`cast` under [`Overflow::Wait`]) holds the message in its
//!   own future; when the process is killed or exits there, that future is dropped, and the
//!   message with it. The sender is gone, so no one is told.
//! - **Two processes that cast to each other can wait on each other.** When A and B each cast
//!   to the other from a handler and both mailboxes are full under [`Overflow::Wait`], each
//!   waits for room that only the other, itself waiting, would make. Break such cycles with
//!   `try_cast`, an [`Overflow::Reject`] mailbox, or a cast from a task of its own. (Calls
//!   between two processes that call each other wait until their timeout, as in OTP.)
//! - **An exit signal from another node into a full mailbox is refused.** The transport
//!   delivers signals without waiting, so a direct exit signal for a trapping process whose
//!   mailbox is full is refused and logged on the receiving node.
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
mod clock;
pub mod codec;
mod control;
mod current;
mod dest;
mod error;
mod exit;
mod factory;
mod guard;
mod hand_off;
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
mod stats;
mod sys;
mod table;
mod timer;
mod trace;

pub use addr::{Addr, DEFAULT_CALL_TIMEOUT};
pub use clock::{CLOCK_RATES, Clock};
pub use codec::Codec;
pub use dest::{Dest, Resolve, ResolveError, Resolving, Target, Via};
pub use error::{
    BuildError, CallError, DecodeError, EncodeError, ExitError, FactoryError, LinkError,
    RegisterError, RemoteFailure, SendError, SpawnError, StartError, SysError,
};
pub use exit::ExitReason;
pub use hand_off::{ForwardReport, Forwarding};
pub use mailbox::{MailboxConfig, Overflow};
pub use pid::{NodeId, Pid, Ref};
pub use process::{Context, Process};
pub use reply::ReplyTo;
pub use runtime::{ExitWatch, ProcessInfo, Runtime, RuntimeBuilder, SpawnOptions};
pub use signal::{ExitKind, Signal};
pub use spec::{ChildSpec, Restart, Shutdown};
pub use stats::{DEFAULT_MAILBOX_THRESHOLD, ExitCounts, RuntimeStats};
pub use timer::TimerRef;
pub use trace::{SpanId, TraceContext, TraceId};

// Every handle a user shares across tasks and threads is `Send` and `Sync`: checked when the
// crate builds, so a change that breaks it does not compile.
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Runtime>();
    send_and_sync::<Pid>();
    send_and_sync::<Ref>();
    send_and_sync::<NodeId>();
    send_and_sync::<Dest>();
    send_and_sync::<Via>();
    send_and_sync::<ChildSpec>();
    send_and_sync::<ExitReason>();
    send_and_sync::<Clock>();
    send_and_sync::<ExitWatch>();
    send_and_sync::<Forwarding>();
    send_and_sync::<TimerRef>();
    send_and_sync::<RuntimeStats>();
    send_and_sync::<TraceContext>();
};
