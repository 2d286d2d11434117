//! Child specifications as data: what to start (a factory and its encoded arguments), when to
//! restart it and how to stop it. Serialisable, so a spec can be sent to the node that will
//! run the child.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec::encode;
use crate::{EncodeError, ExitReason};

/// When a supervisor restarts a child that exited, as in OTP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Restart {
    /// Always.
    #[default]
    Permanent,
    /// Only after an abnormal exit (not `Normal`, not `Shutdown`).
    Transient,
    /// Never; the child is forgotten when it exits.
    Temporary,
}

impl Restart {
    /// Whether a child with this policy is restarted after exiting with `reason`.
    pub fn restarts_after(self, reason: &ExitReason) -> bool {
        match self {
            Self::Permanent => true,
            Self::Transient => !reason.is_normal(),
            Self::Temporary => false,
        }
    }
}

/// How a supervisor stops a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Shutdown {
    /// Send `Shutdown`, wait this long for the child to exit, then kill it.
    Timeout(Duration),
    /// Kill it at once.
    BrutalKill,
    /// Send `Shutdown` and wait as long as it takes (for children that are supervisors).
    Infinity,
}

impl Default for Shutdown {
    /// Five seconds, as OTP's default for workers.
    fn default() -> Self {
        Self::Timeout(Duration::from_secs(5))
    }
}

/// A child as data: an id unique among its siblings, a factory name with encoded start
/// arguments, a restart policy and a shutdown policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildSpec {
    /// Unique among the children of one supervisor.
    pub id: String,
    /// The factory that builds the child (see [`crate::Runtime::register_factory`]).
    pub factory: String,
    /// The factory's start arguments, msgpack-encoded.
    #[serde(with = "serde_bytes")]
    pub args: Vec<u8>,
    /// When to restart it.
    pub restart: Restart,
    /// How to stop it.
    pub shutdown: Shutdown,
}

impl ChildSpec {
    /// A permanent child built by `factory` from `args`, with the default shutdown.
    pub fn new<A: Serialize + ?Sized>(
        id: impl Into<String>,
        factory: impl Into<String>,
        args: &A,
    ) -> Result<Self, EncodeError> {
        Ok(Self {
            id: id.into(),
            factory: factory.into(),
            args: encode(args)?.to_vec(),
            restart: Restart::default(),
            shutdown: Shutdown::default(),
        })
    }

    /// With restart policy `restart`.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// With shutdown policy `shutdown`.
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }
}
