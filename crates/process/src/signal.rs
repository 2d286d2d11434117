//! System signals a process receives through [`crate::Process::handle_signal`].

use serde::{Deserialize, Serialize};

use crate::{ExitReason, Pid, Ref};

/// A system event for a process, queued in its mailbox in order with its messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Signal {
    /// A monitored process exited (or was not alive when the monitor was set up, with
    /// [`ExitReason::NoProc`], or its node was lost, with [`ExitReason::NoConnection`]).
    /// Delivered exactly once per monitor, and never after `demonitor` returned.
    Down {
        /// The monitor, as returned by `monitor`.
        monitor: Ref,
        /// The process that exited.
        pid: Pid,
        /// Why it exited.
        reason: ExitReason,
    },
    /// An exit signal, delivered as a message because this process traps exits: a linked
    /// process exited, or someone called `exit` on this process.
    Exit {
        /// The process that sent it.
        from: Pid,
        /// Its reason.
        reason: ExitReason,
    },
    /// A timer started with `start_timer` fired.
    Timeout {
        /// The timer's reference, as returned by `start_timer`.
        timer: Ref,
    },
    /// A node connected, for a process that subscribed to node events (as OTP's
    /// `monitor_nodes`; the transport's `Node::monitor_nodes`).
    NodeUp {
        /// The node's name.
        node: String,
        /// Its incarnation.
        incarnation: u64,
    },
    /// A node this one was connected to is no longer connected, for a process that subscribed
    /// to node events.
    NodeDown {
        /// The node's name.
        node: String,
        /// The incarnation that went down.
        incarnation: u64,
        /// Why, in words (the transport's reason, displayed).
        reason: String,
    },
}

/// Where an exit signal comes from; the kinds differ as in OTP: a link's signal is dropped if
/// the link was removed meanwhile, and only a kill (OTP's `exit(Pid, kill)`) ends a process
/// that traps exits, without `terminate`. An exit with the *reason* [`ExitReason::Killed`]
/// (a process relaying why another ended, say) is an ordinary, trappable exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitKind {
    /// The sender was linked to the receiver and exited.
    Link,
    /// The sender called `exit(receiver, reason)`.
    Direct,
    /// The sender killed the receiver (`kill(receiver)`); the reason is always `Killed`.
    Kill,
}
