//! Restart intensity: at most `max_restarts` restarts within `period`, or the supervisor gives
//! up and exits (and its own supervisor decides what happens next).

use std::collections::VecDeque;
use std::time::Duration;

use shoal_process::{ExitReason, Pid, Runtime};
use tokio::time::Instant;

use crate::Child;

/// The restart budget of a supervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed within `period`; one more makes the supervisor exit.
    pub max_restarts: u32,
    /// The sliding window.
    pub period: Duration,
}

impl Default for Intensity {
    /// Three restarts in five seconds.
    fn default() -> Self {
        Self { max_restarts: 3, period: Duration::from_secs(5) }
    }
}

/// The restarts made within the current window.
#[derive(Debug, Default)]
pub(crate) struct RestartLog {
    restarts: VecDeque<Instant>,
}

impl RestartLog {
    /// Records a restart at `now`. Returns the reason the supervisor must exit with if this
    /// restart goes past the budget.
    pub(crate) fn record(&mut self, intensity: Intensity, now: Instant) -> Result<(), ExitReason> {
        while self.restarts.front().is_some_and(|at| now.duration_since(*at) >= intensity.period) {
            self.restarts.pop_front();
        }
        self.restarts.push_back(now);
        if self.restarts.len() > intensity.max_restarts as usize {
            return Err(ExitReason::custom(format!(
                "shutdown: reached max restart intensity ({} restarts in {:?})",
                intensity.max_restarts, intensity.period
            )));
        }
        Ok(())
    }
}

/// Restarts `child` under `supervisor`, retrying while its start fails. The restart itself has
/// been recorded by the caller (one failure is one restart, however many children it
/// restarts); each failed attempt is recorded again, so a child that cannot start exhausts
/// the budget instead of looping. `Err` carries the reason the supervisor must exit with.
pub(crate) async fn restart(
    log: &mut RestartLog,
    intensity: Intensity,
    child: &Child,
    runtime: &Runtime,
    supervisor: Pid,
) -> Result<Pid, ExitReason> {
    loop {
        match child.start(runtime, supervisor).await {
            Ok(pid) => return Ok(pid),
            Err(error) => {
                tracing::warn!(%supervisor, child = child.id(), %error, "restart failed");
                log.record(intensity, Instant::now())?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restart_past_the_budget_is_refused_and_old_ones_expire() {
        let intensity = Intensity { max_restarts: 2, period: Duration::from_secs(10) };
        let start = Instant::now();
        let mut log = RestartLog::default();
        assert!(log.record(intensity, start).is_ok());
        assert!(log.record(intensity, start + Duration::from_secs(1)).is_ok());
        assert!(log.record(intensity, start + Duration::from_secs(2)).is_err());
        // Ten seconds after the first two, they no longer count.
        let mut log = RestartLog::default();
        log.record(intensity, start).ok();
        log.record(intensity, start + Duration::from_secs(1)).ok();
        assert!(log.record(intensity, start + Duration::from_secs(11)).is_ok());
    }

    #[test]
    fn zero_max_restarts_refuses_the_first_restart() {
        let intensity = Intensity { max_restarts: 0, period: Duration::from_secs(1) };
        assert!(RestartLog::default().record(intensity, Instant::now()).is_err());
    }
}
