//! The registry's decisions, sans-IO. Each record the registry keeps lives in one Paxos register
//! (one key each: a lock, a name, a host's lease); the driver reads a record, asks this core what
//! to write, and writes it with a compare-and-set on the version it read, so two nodes deciding
//! at once cannot both win. [`Replica`] is the other kind: node-authority replication without
//! consensus, for process groups (and the hub). Nothing here does I/O, reads a clock or draws randomness: times come
//! in as values, so the rules are tested exhaustively and simulated deterministically.

mod key;
mod lease;
mod lock;
mod name;
mod placement;
mod replica;
mod takeover;

pub use key::{KeyError, MAX_KEY_BYTES, RegistryKey};
pub use lease::{HostLease, LeaseConfig, LeaseConfigError};
pub use lock::{Acquire, Held, LockError, LockState, MAX_WAITERS, Release};
pub use name::{Exited, NameRestart, NameState, Run, Start};
pub use placement::candidates;
pub use replica::{Replica, ReplicaMessage, ReplicaOutput};
pub use takeover::{LeaseLost, LeaseRecord, Takeover};
