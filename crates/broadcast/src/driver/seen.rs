//! [`Seen`]: which [`MessageId`]s were delivered, kept apart from their payloads and in
//! bounded memory, and [`Summary`], the bounded anti-entropy digest made from it.
//!
//! Per origin and incarnation a [`Seen`] keeps a contiguous *watermark* (every number below it
//! was delivered) and a sparse set of the numbers delivered above it. Messages from one origin
//! mostly arrive in order, so the sparse set stays small and the watermark moves up; a lost
//! message holds the watermark back until a GRAFT or an exchange brings it. Memory per origin
//! is one watermark plus at most [`Seen::MAX_SPARSE`] numbers, and at most
//! [`Seen::MAX_INCARNATIONS`] incarnations are kept per origin: memory grows with the number of
//! origins (the nodes that broadcast), never with the number of messages.
//!
//! Past the bounds the set errs towards *at most once*: when the sparse set of an origin
//! overflows, the watermark jumps to its lowest number, so the messages still missing below it
//! count as seen and are never delivered (they are counted, [`Seen::skipped`]); a message from
//! an incarnation older than every one kept counts as seen too.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::MessageId;

/// The delivered numbers of one origin's incarnation.
#[derive(Clone, Debug, Default)]
struct Runs {
    /// Every number below this was delivered.
    watermark: u64,
    /// Numbers above the watermark that were delivered (never `watermark` itself).
    sparse: BTreeSet<u64>,
}

impl Runs {
    fn contains(&self, seq: u64) -> bool {
        seq < self.watermark || self.sparse.contains(&seq)
    }

    /// Records `seq`; returns how many numbers were given up to keep the sparse set bounded.
    fn insert(&mut self, seq: u64) -> u64 {
        let mut skipped = 0;
        self.sparse.insert(seq);
        if self.sparse.len() > Seen::MAX_SPARSE
            && let Some(&lowest) = self.sparse.first()
        {
            // Overflow: the gap below the lowest sparse number is given up.
            skipped = lowest - self.watermark;
            self.watermark = lowest;
        }
        while self.sparse.first() == Some(&self.watermark) {
            self.sparse.pop_first();
            self.watermark += 1;
        }
        skipped
    }

    /// The sparse numbers as inclusive ranges, at most `max` of them (the lowest).
    fn ranges(&self, max: usize) -> Vec<(u64, u64)> {
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for &seq in &self.sparse {
            let full = ranges.len() >= max;
            match ranges.last_mut() {
                Some((_, end)) if *end + 1 == seq => *end = seq,
                _ if full => break,
                _ => ranges.push((seq, seq)),
            }
        }
        ranges
    }
}

/// The ids of the messages delivered, by origin and incarnation, in bounded memory (see the
/// module docs): what makes a handler deliver each message once, however few payloads it
/// keeps. [`Log`](super::Log) holds one; a handler of [`MessageId`]s of its own can too.
///
/// ```
/// use shoal_broadcast::{MessageId, Seen};
///
/// let mut seen = Seen::default();
/// let id = |seq| MessageId { origin: "a".into(), incarnation: 1, seq };
/// assert!(seen.insert(&id(1)));
/// assert!(!seen.insert(&id(1)), "a duplicate is not new");
/// assert!(seen.insert(&id(0)));
/// assert!(seen.contains(&id(0)) && !seen.contains(&id(2)));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Seen {
    origins: BTreeMap<String, BTreeMap<u64, Runs>>,
    skipped: u64,
}

impl Seen {
    /// The most numbers kept above an incarnation's watermark; past it the watermark jumps
    /// up and the gap below is given up.
    pub const MAX_SPARSE: usize = 4096;
    /// The most incarnations kept per origin (the newest); messages of older ones count as
    /// seen.
    pub const MAX_INCARNATIONS: usize = 4;
    /// The most sparse ranges per incarnation in a [`Summary`].
    pub const MAX_SUMMARY_RANGES: usize = 32;

    /// Whether `id` was delivered (or is given up, or from a forgotten incarnation).
    pub fn contains(&self, id: &MessageId) -> bool {
        let Some(incarnations) = self.origins.get(&id.origin) else { return false };
        match incarnations.get(&id.incarnation) {
            Some(runs) => runs.contains(id.seq),
            None => {
                incarnations.len() >= Self::MAX_INCARNATIONS
                    && incarnations.keys().next().is_some_and(|&oldest| id.incarnation < oldest)
            }
        }
    }

    /// Records `id` as delivered; `true` if it was not already.
    pub fn insert(&mut self, id: &MessageId) -> bool {
        if self.contains(id) {
            return false;
        }
        let incarnations = self.origins.entry(id.origin.clone()).or_default();
        let runs = incarnations.entry(id.incarnation).or_default();
        self.skipped += runs.insert(id.seq);
        while incarnations.len() > Self::MAX_INCARNATIONS {
            incarnations.pop_first();
        }
        true
    }

    /// How many messages were given up (counted as seen without being delivered) to keep the
    /// sparse sets bounded.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// A bounded summary of what was delivered, for an anti-entropy digest: per origin and
    /// incarnation, the watermark and at most [`Seen::MAX_SUMMARY_RANGES`] ranges above it.
    pub fn summary(&self) -> Summary {
        let mut entries = Vec::new();
        for (origin, incarnations) in &self.origins {
            for (&incarnation, runs) in incarnations {
                entries.push(SummaryEntry {
                    origin: origin.clone(),
                    incarnation,
                    watermark: runs.watermark,
                    ranges: runs.ranges(Self::MAX_SUMMARY_RANGES),
                });
            }
        }
        Summary { entries }
    }
}

/// An anti-entropy digest: what a node delivered, as watermarks and ranges (see
/// [`Seen::summary`]). Its size grows with the origins and incarnations, never with the
/// messages: about 40 bytes per incarnation plus its name and at most
/// [`Seen::MAX_SUMMARY_RANGES`] ranges. Ranges left out make the peer send messages the node
/// has, which it merges as duplicates (not delivered again).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    entries: Vec<SummaryEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SummaryEntry {
    origin: String,
    incarnation: u64,
    watermark: u64,
    /// Inclusive ranges above the watermark, ascending.
    ranges: Vec<(u64, u64)>,
}

impl Summary {
    /// Whether the summary says `id` was delivered.
    pub fn covers(&self, id: &MessageId) -> bool {
        self.entries
            .iter()
            .find(|entry| entry.origin == id.origin && entry.incarnation == id.incarnation)
            .is_some_and(|entry| {
                id.seq < entry.watermark
                    || entry.ranges.iter().any(|&(start, end)| (start..=end).contains(&id.seq))
            })
    }

    /// The origin-incarnation pairs the summary holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the summary holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(origin: &str, incarnation: u64, seq: u64) -> MessageId {
        MessageId { origin: origin.to_owned(), incarnation, seq }
    }

    /// In-order numbers keep only a watermark; gaps fill in and the watermark catches up.
    #[test]
    fn the_watermark_absorbs_contiguous_numbers() {
        let mut seen = Seen::default();
        for seq in [0, 1, 3, 4] {
            assert!(seen.insert(&id("a", 1, seq)));
        }
        let runs = &seen.origins["a"][&1];
        assert_eq!((runs.watermark, runs.sparse.len()), (2, 2));
        assert!(seen.insert(&id("a", 1, 2)));
        let runs = &seen.origins["a"][&1];
        assert_eq!((runs.watermark, runs.sparse.len()), (5, 0));
        assert!(!seen.insert(&id("a", 1, 3)));
        assert!(!seen.contains(&id("a", 2, 0)), "another incarnation is another sequence");
    }

    /// Past the sparse bound the watermark jumps: memory stays bounded, the gap is given up
    /// (counted), and nothing is ever new twice.
    #[test]
    fn past_the_sparse_bound_the_gap_is_given_up() {
        let mut seen = Seen::default();
        let total = Seen::MAX_SPARSE as u64 + 10;
        for seq in 1..=total {
            assert!(seen.insert(&id("a", 1, seq)));
        }
        let runs = &seen.origins["a"][&1];
        assert!(runs.sparse.len() <= Seen::MAX_SPARSE);
        assert_eq!(seen.skipped(), 1);
        assert!(seen.contains(&id("a", 1, 0)), "the given-up message is never delivered");
        assert!((1..=total).all(|seq| !seen.insert(&id("a", 1, seq))));
    }

    /// Only the newest incarnations are kept; an older one's messages count as seen.
    #[test]
    fn old_incarnations_are_forgotten_as_seen() {
        let mut seen = Seen::default();
        for incarnation in 1..=5 {
            assert!(seen.insert(&id("a", incarnation, 0)));
        }
        assert_eq!(seen.origins["a"].len(), Seen::MAX_INCARNATIONS);
        assert!(seen.contains(&id("a", 1, 7)));
        assert!(!seen.contains(&id("a", 5, 7)));
    }

    /// A summary covers exactly what was delivered (within its range bound).
    #[test]
    fn a_summary_covers_what_was_delivered() {
        let mut seen = Seen::default();
        for seq in [0, 1, 5, 6, 9] {
            seen.insert(&id("a", 1, seq));
        }
        let summary = seen.summary();
        let covered: Vec<u64> = (0..12).filter(|&seq| summary.covers(&id("a", 1, seq))).collect();
        assert_eq!(covered, [0, 1, 5, 6, 9]);
        assert!(!summary.covers(&id("b", 1, 0)));
        for seq in (20..400).step_by(2) {
            seen.insert(&id("a", 1, seq));
        }
        let bounded = seen.summary();
        assert_eq!(bounded.entries[0].ranges.len(), Seen::MAX_SUMMARY_RANGES);
    }
}
