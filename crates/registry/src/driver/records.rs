//! The registry's records in Paxos registers: which register holds what, how a record is
//! encoded, and [`Store::update`], the one loop every write goes through (decide on the record
//! read, write by compare-and-set on it, decide again on what the failed write found).
//!
//! | register | record | written by |
//! |---|---|---|
//! | `shoal.registry/n/NAME` | [`NameRecord`] | the host that starts, restarts or frees it; a contender after the host's lease ended |
//! | `shoal.registry/l/KEY` | [`LockRecord`] | the holder's and the waiters' nodes; a contender after the holder's lease ended |
//! | `shoal.registry/h/NODE` | [`LeaseRecord`] | the node itself (begin, renew, end on leaving); a contender ends it |
//! | `shoal.registry/p/EPOCH/NODE` | the permanent names a host runs under an epoch | the host, before it claims one |

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shoal_paxos::{Entry, Key, Paxos, PaxosError};
use shoal_process::Pid;

use crate::RegistryError;
use crate::core::{LockState, NameState, RegistryKey};

/// A name's record: hosts by node name, processes by pid.
pub(crate) type NameRecord = NameState<String, Pid>;

/// A lock's record.
pub(crate) type LockRecord = LockState<LockHolder>;

/// Who holds or waits for a lock: a process, its node, and the lease epoch it runs under (when
/// that lease ends, so does its hold).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct LockHolder {
    pub(crate) pid: Pid,
    pub(crate) host: String,
    pub(crate) epoch: u64,
}

/// A name's child spec as the name's record keeps it (`NameState::spec`, encoded): the
/// factory, its encoded arguments, and the name's metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SpecRecord {
    pub(crate) factory: String,
    #[serde(with = "serde_bytes")]
    pub(crate) args: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub(crate) meta: Vec<u8>,
}

const PREFIX: &str = "shoal.registry/";

pub(crate) fn name_key(name: &RegistryKey) -> Key {
    Key(format!("{PREFIX}n/{name}").into_bytes())
}

pub(crate) fn lock_key(key: &RegistryKey) -> Key {
    Key(format!("{PREFIX}l/{key}").into_bytes())
}

pub(crate) fn lease_key(node: &str) -> Key {
    Key(format!("{PREFIX}h/{node}").into_bytes())
}

pub(crate) fn index_key(node: &str, epoch: u64) -> Key {
    Key(format!("{PREFIX}p/{epoch}/{node}").into_bytes())
}

pub(crate) fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    // The records are plain structs of strings, numbers and bytes: they always encode.
    rmp_serde::to_vec(record).unwrap_or_default()
}

pub(crate) fn decode<T: DeserializeOwned>(key: &Key, entry: &Entry) -> Result<T, RegistryError> {
    rmp_serde::from_slice(&entry.data).map_err(|error| RegistryError::Corrupt {
        register: String::from_utf8_lossy(&key.0).into_owned(),
        error: error.to_string(),
    })
}

/// What [`Store::update`]'s decision says to do with the record it was shown.
pub(crate) enum Step<T, R> {
    /// Write this record, then answer `R`.
    Write(T, R),
    /// Remove the record, then answer `R`.
    Delete(R),
    /// Write nothing; answer `R`.
    Keep(R),
}

/// The registers of one registry, over its node's Paxos service.
#[derive(Clone, Debug)]
pub(crate) struct Store {
    paxos: Paxos,
}

/// How many times one update decides again after a compare-and-set lost to another write
/// before it gives up ([`RegistryError::Contended`]).
const MAX_ATTEMPTS: usize = 64;

impl Store {
    pub(crate) fn new(paxos: Paxos) -> Self {
        Store { paxos }
    }

    pub(crate) fn paxos(&self) -> &Paxos {
        &self.paxos
    }

    /// The record at `key`, and the entry it came from (for a later compare-and-set).
    pub(crate) async fn read<T: DeserializeOwned>(
        &self,
        key: &Key,
    ) -> Result<(Option<Entry>, Option<T>), RegistryError> {
        let entry = self.paxos.get(key.clone()).await.map_err(consensus)?;
        let record = entry.as_ref().map(|entry| decode(key, entry)).transpose()?;
        Ok((entry, record))
    }

    /// Decides on the record at `key` and writes what `decide` says by compare-and-set,
    /// deciding again on what a lost compare-and-set found, until one write takes effect or
    /// the decision writes nothing. `guess` is the entry the caller believes the register
    /// holds (skipping the first read; a wrong guess costs one failed write, as a read would).
    /// Returns the answer and the entry the register holds afterwards.
    ///
    /// A write that fails but may have taken effect is settled by a read: if the register
    /// holds what was written, it took effect.
    pub(crate) async fn update<T, R>(
        &self,
        key: &Key,
        guess: Option<Option<Entry>>,
        mut decide: impl FnMut(Option<&T>) -> Result<Step<T, R>, RegistryError>,
    ) -> Result<(R, Option<Entry>), RegistryError>
    where
        T: Serialize + DeserializeOwned,
    {
        let mut current = match guess {
            Some(entry) => entry,
            None => self.paxos.get(key.clone()).await.map_err(consensus)?,
        };
        for _ in 0..MAX_ATTEMPTS {
            let record: Option<T> = current.as_ref().map(|entry| decode(key, entry)).transpose()?;
            let (new, answer) = match decide(record.as_ref())? {
                Step::Keep(answer) => return Ok((answer, current)),
                Step::Write(record, answer) => (Some(Entry::new(encode(&record))), answer),
                Step::Delete(answer) => (None, answer),
            };
            let written =
                self.paxos.compare_and_set(key.clone(), current.clone(), new.clone()).await;
            match written {
                Ok(outcome) if outcome.applied => return Ok((answer, new)),
                Ok(outcome) => current = outcome.before.entry,
                Err(error) if error.maybe_applied() => {
                    let now = self.paxos.get(key.clone()).await.map_err(|_| consensus(error))?;
                    if now == new {
                        return Ok((answer, new));
                    }
                    current = now;
                }
                Err(error) => return Err(consensus(error)),
            }
        }
        Err(RegistryError::Contended { register: String::from_utf8_lossy(&key.0).into_owned() })
    }
}

/// A consensus failure as the registry reports it.
pub(crate) fn consensus(error: PaxosError) -> RegistryError {
    match error {
        PaxosError::NoQuorum { maybe_applied } => RegistryError::NoQuorum { maybe_applied },
        other => RegistryError::Consensus(other),
    }
}
