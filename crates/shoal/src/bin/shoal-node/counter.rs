//! The counter commands: `shoal-paxos` registers holding counters that every writer can
//! increment at most once per sequence number.
//!
//! A counter's value is its count and, per writer, the last sequence number applied:
//! `COUNT;WRITER=SEQ,WRITER=SEQ`. An increment reads the register and, unless its writer's
//! sequence number is already there (a retry of an increment that landed), writes the next
//! value with a compare-and-set; if another write came first, it tries again from what that
//! one left. So a writer that retries an increment whose outcome it never learnt (a timeout,
//! a node killed under it) cannot apply it twice.

use std::collections::BTreeMap;

use shoal::paxos::{Entry, Paxos, PaxosError};

/// How many compare-and-set attempts one increment makes before giving up (each lost only to
/// another writer's success, so the cluster is making progress meanwhile).
const MAX_ATTEMPTS: usize = 64;

/// A counter and the last sequence number applied for each writer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counter {
    count: u64,
    applied: BTreeMap<String, u64>,
}

impl Counter {
    /// Reads a register's value; an absent register is a zero counter.
    fn decode(entry: Option<&Entry>) -> Result<Self, String> {
        let Some(entry) = entry else { return Ok(Counter::default()) };
        let text = std::str::from_utf8(&entry.data)
            .map_err(|_| "the counter's register does not hold text".to_owned())?;
        let (count, writers) = text.split_once(';').unwrap_or((text, ""));
        let count =
            count.parse().map_err(|_| format!("the counter's value `{text}` is not COUNT;..."))?;
        let mut applied = BTreeMap::new();
        for pair in writers.split(',').filter(|pair| !pair.is_empty()) {
            let (writer, seq) =
                pair.split_once('=').ok_or_else(|| format!("`{pair}` is not WRITER=SEQ"))?;
            let seq = seq.parse().map_err(|_| format!("`{pair}` is not WRITER=SEQ"))?;
            applied.insert(writer.to_owned(), seq);
        }
        Ok(Counter { count, applied })
    }

    fn encode(&self) -> Vec<u8> {
        let writers: Vec<String> =
            self.applied.iter().map(|(writer, seq)| format!("{writer}={seq}")).collect();
        format!("{};{}", self.count, writers.join(",")).into_bytes()
    }

    /// The counter after `writer`'s increment number `seq`, or `None` if that increment is
    /// already in it. Increments of one writer come in order: one that skips a number is an
    /// error in the caller.
    fn increment(&self, writer: &str, seq: u64) -> Result<Option<Counter>, String> {
        let last = self.applied.get(writer).copied().unwrap_or(0);
        if seq <= last {
            return Ok(None);
        }
        if seq != last + 1 {
            return Err(format!("{writer}'s increment {seq} skips from {last}"));
        }
        let mut next = self.clone();
        next.count += 1;
        next.applied.insert(writer.to_owned(), seq);
        Ok(Some(next))
    }
}

/// `counter incr KEY WRITER SEQ`: applies `writer`'s increment `seq` to `key` once; answers the
/// count it left.
pub(crate) async fn increment(
    paxos: &Paxos,
    key: &str,
    writer: &str,
    seq: u64,
) -> Result<String, String> {
    let mut current = paxos.get(key).await.map_err(describe)?;
    for _ in 0..MAX_ATTEMPTS {
        let counter = Counter::decode(current.as_ref())?;
        let Some(next) = counter.increment(writer, seq)? else {
            return Ok(counter.count.to_string());
        };
        let new = Some(Entry::new(next.encode()));
        let outcome = paxos.compare_and_set(key, current, new).await.map_err(describe)?;
        if outcome.applied {
            return Ok(next.count.to_string());
        }
        current = outcome.before.entry;
    }
    Err(format!("contention: {MAX_ATTEMPTS} compare-and-sets on {key} lost to other writers"))
}

/// `counter get KEY`: the count (a linearisable read).
pub(crate) async fn get(paxos: &Paxos, key: &str) -> Result<String, String> {
    let entry = paxos.get(key).await.map_err(describe)?;
    Ok(Counter::decode(entry.as_ref())?.count.to_string())
}

fn describe(error: PaxosError) -> String {
    error.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule that makes retries safe: an increment already applied is not applied again,
    /// and one writer's increments come in order.
    #[test]
    fn an_increment_applies_once_per_writer_and_sequence() {
        let zero = Counter::default();
        let one = zero.increment("w0", 1).unwrap().unwrap();
        assert_eq!(one.count, 1);
        assert_eq!(one.increment("w0", 1).unwrap(), None, "a retry of a landed increment");
        let two = one.increment("w1", 1).unwrap().unwrap();
        assert_eq!(two.count, 2);
        assert!(two.increment("w0", 3).is_err(), "a skipped sequence number");
    }

    #[test]
    fn counters_round_trip_through_their_text() {
        let counter = Counter::default().increment("w0", 1).unwrap().unwrap();
        let counter = counter.increment("w1", 1).unwrap().unwrap();
        let entry = Entry::new(counter.encode());
        assert_eq!(String::from_utf8(entry.data.clone()).unwrap(), "2;w0=1,w1=1");
        assert_eq!(Counter::decode(Some(&entry)).unwrap(), counter);
        assert_eq!(Counter::decode(None).unwrap(), Counter::default());
        assert!(Counter::decode(Some(&Entry::new("x;"))).is_err());
        assert!(Counter::decode(Some(&Entry::new("1;w0"))).is_err());
    }
}
