//! Why a process ended: [`ExitReason`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// The reason a process exited, carried by monitors' `Down` signals and links' exit signals.
///
/// The variants follow OTP. [`ExitReason::Normal`] and [`ExitReason::Shutdown`] are the
/// *normal* reasons: a link does not propagate `Normal` to a process that does not trap exits,
/// and a transient child is not restarted after either.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExitReason {
    /// The process finished its work.
    Normal,
    /// The process was asked to stop, usually by its supervisor.
    Shutdown,
    /// The process was killed (by `kill`), or followed a linked process that was, or got an
    /// exit signal with this reason. Only the first skips `terminate`.
    Killed,
    /// A handler panicked; the panic's message.
    Panic(String),
    /// The process did not exist (for example, when monitoring a pid that had already exited).
    NoProc,
    /// The node the process ran on could not be reached.
    NoConnection,
    /// A reason defined by the application.
    Custom(String),
}

impl ExitReason {
    /// A reason defined by the application, from anything printable.
    pub fn custom(reason: impl fmt::Display) -> Self {
        Self::Custom(reason.to_string())
    }

    /// Whether this is `Normal` or `Shutdown`: an orderly end, not a failure.
    pub fn is_normal(&self) -> bool {
        matches!(self, Self::Normal | Self::Shutdown)
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Normal => f.write_str("normal"),
            Self::Shutdown => f.write_str("shutdown"),
            Self::Killed => f.write_str("killed"),
            Self::Panic(message) => write!(f, "panic: {message}"),
            Self::NoProc => f.write_str("noproc"),
            Self::NoConnection => f.write_str("noconnection"),
            Self::Custom(reason) => f.write_str(reason),
        }
    }
}
