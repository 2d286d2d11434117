//! The lease register's record, and a contender's side of a takeover.
//!
//! A host's lease register holds a [`LeaseRecord`]: the host's current epoch, how many times it
//! was renewed, and whether it ended. The host starts an epoch ([`LeaseRecord::begin`]) and
//! renews it by writing the record with its count of renewals one higher, so every renewal
//! changes what the register holds, and a compare-and-set against the record a contender read
//! fails once the host renewed after that read. A contender that finds the
//! host unreachable watches the register with a [`Takeover`]: it notes the version it read and
//! when its read completed, and once [`LeaseConfig::claim_wait`] has passed on its own clock
//! with no newer version seen, it may end the epoch ([`LeaseRecord::end`]) by compare-and-set
//! on that version. The names that ran under the ended epoch are then free (see
//! [`NameState::lease_ended`](super::NameState::lease_ended)).

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::LeaseConfig;

/// A host's lease register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The host's current epoch (each start of the host's registry begins a new one).
    pub epoch: u64,
    /// Renewals of this epoch so far: the record's version, as far as a contender is
    /// concerned ([`Takeover::observe`]).
    pub renewals: u64,
    /// The epoch was ended by a contender: nothing runs under it any more.
    pub ended: bool,
}

/// Why a renewal was refused: the host must stop its names' processes at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("lease epoch {epoch} is over: the register holds epoch {current}{}", if *ended { " (ended)" } else { "" })]
pub struct LeaseLost {
    /// The epoch the host renews.
    pub epoch: u64,
    /// The register's epoch.
    pub current: u64,
    /// Whether the register's epoch ended.
    pub ended: bool,
}

impl LeaseRecord {
    /// A host starts hosting: the record of its next epoch (above any before, ended or not).
    pub fn begin(current: Option<&Self>) -> Self {
        LeaseRecord {
            epoch: current.map_or(1, |record| record.epoch + 1),
            renewals: 0,
            ended: false,
        }
    }

    /// The host renews `epoch`: the record to write again, or why it may not.
    pub fn renew(current: Option<&Self>, epoch: u64) -> Result<Self, LeaseLost> {
        match current {
            Some(record) if record.epoch == epoch && !record.ended => {
                Ok(LeaseRecord { renewals: record.renewals + 1, ..*record })
            }
            Some(record) => Err(LeaseLost { epoch, current: record.epoch, ended: record.ended }),
            None => Err(LeaseLost { epoch, current: 0, ended: false }),
        }
    }

    /// A contender ends the epoch in `current` (after its wait): the record to write, or
    /// `None` if it has ended already.
    pub fn end(current: &Self) -> Option<Self> {
        (!current.ended).then_some(LeaseRecord { ended: true, ..*current })
    }
}

/// A contender's watch over the leases of hosts it cannot reach: for each, the register
/// version `V` it read and when the first read of that version completed, on its own clock.
/// A version must differ from every earlier one of the same register (the driver uses the
/// whole record: epoch and renewals).
#[derive(Clone, Debug)]
pub struct Takeover<N, V = u64> {
    config: LeaseConfig,
    watched: BTreeMap<N, (V, Instant)>,
}

impl<N: Ord + Clone, V: Clone + PartialEq> Takeover<N, V> {
    /// Watching nothing yet.
    pub fn new(config: LeaseConfig) -> Self {
        Takeover { config, watched: BTreeMap::new() }
    }

    /// A read of `host`'s lease register completed at `completed` and saw `version`. A new
    /// version (the host renewed) starts the wait again; the same version keeps the first
    /// read's time.
    pub fn observe(&mut self, host: N, version: V, completed: Instant) {
        match self.watched.get(&host) {
            Some((seen, _)) if *seen == version => {}
            _ => {
                self.watched.insert(host, (version, completed));
            }
        }
    }

    /// `host` is reachable again, or its epoch was ended: stop watching it.
    pub fn forget(&mut self, host: &N) {
        self.watched.remove(host);
    }

    /// The version of `host`'s register this contender may end by compare-and-set at `now`,
    /// if its wait is over.
    pub fn claimable(&self, host: &N, now: Instant) -> Option<V> {
        let (version, completed) = self.watched.get(host)?;
        (now >= self.config.claimable_at(*completed)).then(|| version.clone())
    }

    /// When the next wait ends, for the driver's timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.watched.values().map(|(_, completed)| self.config.claimable_at(*completed)).min()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_host_renews_only_its_own_live_epoch() {
        let first = LeaseRecord::begin(None);
        assert_eq!(first, LeaseRecord { epoch: 1, renewals: 0, ended: false });
        let renewed = LeaseRecord::renew(Some(&first), 1).expect("live");
        assert_eq!(
            renewed,
            LeaseRecord { renewals: 1, ..first },
            "every renewal changes the record"
        );
        let ended = LeaseRecord::end(&first).expect("live");
        assert_eq!(LeaseRecord::end(&ended), None, "ended once");
        assert_eq!(
            LeaseRecord::renew(Some(&ended), 1),
            Err(LeaseLost { epoch: 1, current: 1, ended: true })
        );
        let second = LeaseRecord::begin(Some(&ended));
        assert_eq!(second.epoch, 2);
        assert!(LeaseRecord::renew(Some(&second), 1).is_err(), "an old epoch renews nothing");
        assert_eq!(LeaseRecord::renew(None, 1).map_err(|lost| lost.current), Err(0));
    }

    #[test]
    fn a_contender_waits_from_its_first_read_of_a_version() {
        let lease = LeaseConfig::default();
        let t0 = Instant::now();
        let mut takeover = Takeover::new(lease);
        takeover.observe("a", 5, t0);
        takeover.observe("a", 5, t0 + Duration::from_secs(2));
        assert_eq!(takeover.poll_timeout(), Some(t0 + lease.claim_wait()));
        assert_eq!(
            takeover.claimable(&"a", t0 + lease.claim_wait() - Duration::from_millis(1)),
            None
        );
        assert_eq!(takeover.claimable(&"a", t0 + lease.claim_wait()), Some(5));

        // The host renewed: the wait starts again from the read that saw the new version.
        let t1 = t0 + Duration::from_secs(3);
        takeover.observe("a", 6, t1);
        assert_eq!(takeover.claimable(&"a", t0 + lease.claim_wait()), None);
        assert_eq!(takeover.claimable(&"a", t1 + lease.claim_wait()), Some(6));
        takeover.forget(&"a");
        assert_eq!(takeover.claimable(&"a", t1 + lease.claim_wait()), None);
        assert_eq!(takeover.poll_timeout(), None);
    }
}
