//! How the simulated network treats each message: delay, loss and duplication.

use std::time::Duration;

/// The behaviour of the simulated network, applied to every message independently.
///
/// Each message is delayed by a duration drawn uniformly from `delay_min..=delay_max`, so two
/// messages between the same pair of nodes can arrive in either order. It is lost with
/// `drop_probability`, and (if not lost) delivered a second time, with its own delay, with
/// `duplicate_probability`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Network {
    /// The shortest time a message spends in flight.
    pub delay_min: Duration,
    /// The longest time a message spends in flight (at least `delay_min`).
    pub delay_max: Duration,
    /// The chance, from 0.0 to 1.0, that a message is lost.
    pub drop_probability: f64,
    /// The chance, from 0.0 to 1.0, that a delivered message is delivered twice.
    pub duplicate_probability: f64,
}

impl Network {
    /// No loss and no duplication; delays between 1 and 10 ms, so messages still reorder.
    pub fn reliable() -> Self {
        Network {
            delay_min: Duration::from_millis(1),
            delay_max: Duration::from_millis(10),
            drop_probability: 0.0,
            duplicate_probability: 0.0,
        }
    }

    /// The [`reliable`](Network::reliable) delays with the given chances of loss and
    /// duplication.
    pub fn lossy(drop_probability: f64, duplicate_probability: f64) -> Self {
        Network { drop_probability, duplicate_probability, ..Network::reliable() }
    }

    /// The same network with delays drawn from `min..=max`.
    pub fn with_delay(self, min: Duration, max: Duration) -> Self {
        Network { delay_min: min, delay_max: max, ..self }
    }

    /// Checks that the probabilities are probabilities and the delay range is a range.
    pub(crate) fn validate(&self) {
        let probability = 0.0..=1.0;
        assert!(
            probability.contains(&self.drop_probability),
            "drop_probability must be within 0.0..=1.0, got {}",
            self.drop_probability
        );
        assert!(
            probability.contains(&self.duplicate_probability),
            "duplicate_probability must be within 0.0..=1.0, got {}",
            self.duplicate_probability
        );
        assert!(
            self.delay_min <= self.delay_max,
            "delay_min ({:?}) must not exceed delay_max ({:?})",
            self.delay_min,
            self.delay_max
        );
    }
}

impl Default for Network {
    fn default() -> Self {
        Network::reliable()
    }
}
