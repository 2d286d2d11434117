//! How the simulated network treats each message: delay, loss and duplication.

use std::time::Duration;

/// The behaviour of the simulated network, applied to every message independently.
///
/// Each message is delayed by a duration drawn uniformly from `delay_min..=delay_max`, so two
/// messages between the same pair of nodes can arrive in either order. It is lost with
/// `drop_probability`, and (if not lost) delivered a second time, with its own delay, with
/// `duplicate_probability`.
///
/// **The long tail.** With `long_tail_probability` (0.0 unless set, e.g. with
/// [`with_long_tail`](Network::with_long_tail)) a message, or one copy of a duplicated one,
/// is instead held back for a delay between `delay_max` and `long_tail_max`, drawn so that
/// every doubling of the delay is as likely as the next: with a tail from 8 ms to 4 s, a held
/// message is as likely to take 8–16 ms as 2–4 s. Such a message can outlive its sender, a
/// crash and restart of its receiver, and whole rounds of the protocol under test, and still
/// arrive — which a bounded delay hides: a protocol that only breaks when a message from an
/// earlier life of a node lands late is never broken by a network whose every message is
/// faster than a restart. The draw uses integer arithmetic only, so a run is the same on
/// every platform.
///
/// ```
/// use std::time::Duration;
/// use shoal_sim::Network;
///
/// // One message in twenty takes up to 5 s instead of at most 10 ms.
/// let network = Network::lossy(0.05, 0.05).with_long_tail(0.05, Duration::from_secs(5));
/// assert_eq!(network.long_tail_max, Duration::from_secs(5));
/// assert_eq!(Network::reliable().long_tail_probability, 0.0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Network {
    /// The shortest time a message spends in flight.
    pub delay_min: Duration,
    /// The longest time a message spends in flight (at least `delay_min`), outside the tail.
    pub delay_max: Duration,
    /// The chance, from 0.0 to 1.0, that a message is lost.
    pub drop_probability: f64,
    /// The chance, from 0.0 to 1.0, that a delivered message is delivered twice.
    pub duplicate_probability: f64,
    /// The chance, from 0.0 to 1.0, that a message (each copy on its own) is held back in the
    /// long tail instead: its delay is drawn from `delay_max..=long_tail_max`, each doubling
    /// equally likely.
    pub long_tail_probability: f64,
    /// The longest time a held-back message spends in flight (at least `delay_max` when the
    /// tail is on).
    pub long_tail_max: Duration,
}

impl Network {
    /// No loss, no duplication and no long tail; delays between 1 and 10 ms, so messages still
    /// reorder.
    pub fn reliable() -> Self {
        Network {
            delay_min: Duration::from_millis(1),
            delay_max: Duration::from_millis(10),
            drop_probability: 0.0,
            duplicate_probability: 0.0,
            long_tail_probability: 0.0,
            long_tail_max: Duration::from_millis(10),
        }
    }

    /// The [`reliable`](Network::reliable) delays with the given chances of loss and
    /// duplication.
    pub fn lossy(drop_probability: f64, duplicate_probability: f64) -> Self {
        Network { drop_probability, duplicate_probability, ..Network::reliable() }
    }

    /// The same network with delays drawn from `min..=max` (outside the long tail).
    pub fn with_delay(self, min: Duration, max: Duration) -> Self {
        Network { delay_min: min, delay_max: max, ..self }
    }

    /// The same network with a long tail: each message is held back with `probability`, for a
    /// delay between `delay_max` and `max` (see the type's docs).
    pub fn with_long_tail(self, probability: f64, max: Duration) -> Self {
        Network { long_tail_probability: probability, long_tail_max: max, ..self }
    }

    /// Checks that the probabilities are probabilities and the delay ranges are ranges.
    pub(crate) fn validate(&self) {
        let probability = 0.0..=1.0;
        for (name, value) in [
            ("drop_probability", self.drop_probability),
            ("duplicate_probability", self.duplicate_probability),
            ("long_tail_probability", self.long_tail_probability),
        ] {
            assert!(probability.contains(&value), "{name} must be within 0.0..=1.0, got {value}");
        }
        assert!(
            self.delay_min <= self.delay_max,
            "delay_min ({:?}) must not exceed delay_max ({:?})",
            self.delay_min,
            self.delay_max
        );
        assert!(
            self.long_tail_probability == 0.0 || self.delay_max <= self.long_tail_max,
            "delay_max ({:?}) must not exceed long_tail_max ({:?}) when the long tail is on",
            self.delay_max,
            self.long_tail_max
        );
    }
}

impl Default for Network {
    fn default() -> Self {
        Network::reliable()
    }
}
