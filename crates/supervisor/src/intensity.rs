//! Restart intensity: at most `max_restarts` restarts within `period`, or the supervisor gives
//! up: it stops its children and exits with `Shutdown`, as OTP's supervisors do (so that a
//! transient supervisor is not restarted by its own supervisor), with the detail logged.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use shoal_process::{Context, ExitReason, Pid, Process, Runtime};
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

/// A restart went past the budget: the supervisor gives up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Exhausted(Intensity);

impl fmt::Display for Exhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Intensity { max_restarts, period } = self.0;
        write!(f, "reached the maximum restart intensity ({max_restarts} restarts in {period:?})")
    }
}

impl Exhausted {
    /// Logs why, then stops the supervisor running `ctx` with `Shutdown` (its `terminate` stops
    /// its children). The reason is `Shutdown` rather than one that says why, as in OTP: an
    /// abnormal reason would make a transient supervisor's own supervisor restart it.
    pub(crate) fn give_up<S: Process>(self, ctx: &mut Context<S>) {
        tracing::error!(supervisor = %ctx.pid(), "{self}: shutting down");
        ctx.stop(ExitReason::Shutdown);
    }
}

impl RestartLog {
    /// Records a restart at `now`; `Err` if this restart goes past the budget.
    pub(crate) fn record(&mut self, intensity: Intensity, now: Instant) -> Result<(), Exhausted> {
        while self.restarts.front().is_some_and(|at| now.duration_since(*at) >= intensity.period) {
            self.restarts.pop_front();
        }
        self.restarts.push_back(now);
        if self.restarts.len() > intensity.max_restarts as usize {
            return Err(Exhausted(intensity));
        }
        Ok(())
    }
}

/// Restarts `child` under `supervisor`, retrying while its start fails. The restart itself has
/// been recorded by the caller (one failure is one restart, however many children it
/// restarts); each failed attempt is recorded again, so a child that cannot start (its
/// `init` fails, or building it panics) exhausts the budget instead of looping.
pub(crate) async fn restart(
    log: &mut RestartLog,
    intensity: Intensity,
    child: &Child,
    runtime: &Runtime,
    supervisor: Pid,
) -> Result<Pid, Exhausted> {
    loop {
        match child.start(runtime, supervisor).await {
            Ok(pid) => {
                // For the node's figures (`Runtime::stats`): one child started again.
                runtime.note_restart();
                return Ok(pid);
            }
            Err(error) => {
                tracing::warn!(%supervisor, child = child.id(), %error, "restart failed");
                log.record(intensity, runtime.clock().now())?;
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
