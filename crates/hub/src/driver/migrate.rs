//! Hot moves: a child of this node moved to `to` with its state and its mail, and the
//! hand-over of every child with state when the hub stops here on purpose.
//!
//! **A hot move** ([`Migration::Hot`], for children whose behaviour is in
//! [`HubConfig::handovers`](super::HubConfig::handovers); others move cold):
//!
//! 1. This node (the mover) publishes the child as moving, keeping its pid, so that sends by
//!    child id still reach the old copy.
//! 2. `to` starts a new copy and keeps it to itself (not published, so nothing is sent to it
//!    yet) — [`Request::Prepare`](super::children).
//! 3. The mover freezes the old copy at a snapshot of its state ([`Handover::snapshot`]), taken
//!    at its place in the mailbox order; the old copy ends there (exit reason
//!    [`MOVED`](super::MOVED)), and its pid becomes a forwarder to the new copy for
//!    [`Migration::Hot::retention`] ([`shoal_process::Runtime::hand_off`]).
//! 4. `to` restores the snapshot into the new copy ([`Handover::restore`]), ahead of any letter.
//! 5. The forwarder sends on what was queued for the old copy, in order; once that is done,
//!    `to` publishes the new copy and the mover drops its entry. Letters that still arrive for
//!    the old pid within the retention window (sent by pid, or by child id just before the
//!    new copy was published) are forwarded too; past the window, the old pid is gone
//!    (`NoProc`), as after a cold move.
//!
//! A letter sent by child id before the switch may reach the new copy after one the same
//! sender sent by child id after it (the first goes through the forwarder): the order of one
//! sender's letters holds across the switch only for letters at least one forwarding hop
//! apart. If anything fails before the old copy froze, the child keeps running here and the
//! move is tried again later; after, the new copy runs with whatever it got
//! ([`HubEvent::HandOverFailed`](super::HubEvent)).
//!
//! [`Handover::snapshot`]: super::Handover::snapshot
//! [`Handover::restore`]: super::Handover::restore

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_process::{ExitReason, Pid};

use super::children::{self, Reply, Request, Started};
use super::error::ChildError;
use super::handover;
use super::hub::{ChildData, HubEvent, HubInner, MOVED};
use super::stats::Counters;
use crate::core::{Entry, Placement, Redundancy, Ring, State};

/// How long the new owner of a hot move may take to restore the state, or to publish the new
/// copy, at least.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the old copy of a hot move may take to reach its snapshot, at least.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(1);

/// More than the new owner may wait to publish (`PUBLISH_WAIT` in `children.rs`) on top of
/// its acknowledgement.
const PUBLISH_SLACK: Duration = Duration::from_secs(3);

/// How a child moves to another node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Migration {
    /// Stopped here, then started on the new node from its spec (the default).
    #[default]
    Cold,
    /// Started on the new node first, with the old copy's state and mail handed over (see
    /// the module docs), for children whose behaviour has a
    /// [`Handover`](super::Handover); cold for the others.
    Hot {
        /// How long letters for the old copy's pid are forwarded to the new one.
        retention: Duration,
    },
}

/// Moves `child` of this node to `to`, hot (see the module docs). `Ok(true)`: it runs there
/// now; `Ok(false)`: it has no [`Handover`](super::Handover) (move it cold); an error: it still
/// runs here.
pub(crate) async fn move_hot(
    inner: &Arc<HubInner>,
    child: &str,
    to: &str,
    pin: Option<Placement>,
    retention: Duration,
    deadline: Instant,
) -> Result<bool, ChildError> {
    let Some(mut entry) = inner.own(child).filter(|entry| entry.state == State::Running) else {
        return Err(ChildError::Start(format!("{child} does not run here")));
    };
    let Some(handover) = inner.config.handovers.get(&entry.data.spec.factory).cloned() else {
        return Ok(false);
    };
    let Some(old) = entry.data.pid else {
        return Err(ChildError::Starting { node: inner.me().to_owned() });
    };
    let running = entry.clone();
    if let Some(pin) = pin {
        entry.placement = pin;
    }
    entry.state = State::Moving { to: to.to_owned() };
    Counters::add(&inner.counters.moves, 1);
    inner.map.set(vec![(child.to_owned(), Some(entry.clone()))]);
    let left = || deadline.saturating_duration_since(inner.clock.now().into_std());

    // 2. The new copy, kept to itself.
    let mut fresh = entry.clone();
    fresh.state = State::Running;
    fresh.data.pid = None;
    let prepare = Request::Prepare {
        child: child.to_owned(),
        entry: fresh,
        from: inner.me().to_owned(),
        timeout_ms: children::millis(left()),
    };
    let new = match children::call(inner, to, &prepare, left()).await {
        Ok(Reply::Prepared(Ok(pid))) => pid,
        outcome => {
            let error = match outcome {
                Ok(Reply::Prepared(Err(error))) => error,
                Ok(_) => ChildError::Unreachable { node: to.to_owned(), error: "stopped".into() },
                Err(error) => ChildError::Unreachable { node: to.to_owned(), error },
            };
            // Nothing happened to the old copy: it runs on here.
            inner.map.set(vec![(child.to_owned(), Some(running))]);
            return Err(error);
        }
    };

    // 3. Freeze the old copy; its pid forwards to the new one from now on.
    children::mark_stopping(inner, child, true);
    let exit = ExitReason::Custom(MOVED.to_owned());
    let freeze = left().max(FREEZE_TIMEOUT);
    let handed = handover.hand_off(&inner.runtime, old, new, exit, retention, freeze).await;
    if let Err(error) = &handed
        && inner.runtime.is_alive(old)
    {
        // Not frozen (too busy to take the snapshot in time): it runs on here, and the new
        // copy, never published, is stopped there at its deadline.
        children::mark_stopping(inner, child, false);
        inner.map.set(vec![(child.to_owned(), Some(running))]);
        let abandon = Request::Abandon { child: child.to_owned() };
        let _ = children::call(inner, to, &abandon, Duration::from_secs(1)).await;
        return Err(ChildError::Start(format!("not frozen: {error}")));
    }
    children::forget_local(inner, child);
    let (state, forwarding) = match handed {
        Ok(handed) => (Some(handed.0), Some(handed.1)),
        Err(error) => {
            // The old copy was gone already: the new one starts from nothing.
            report_failure(inner, child, to, &format!("no snapshot: {error}"));
            (None, None)
        }
    };

    // 4. The state into the new copy, ahead of the forwarded letters.
    let bytes = state.as_ref().map_or(0, Vec::len);
    if let Some(state) = state {
        let restore =
            Request::Restore { child: child.to_owned(), state: serde_bytes::ByteBuf::from(state) };
        // However little time is left: a state is worth more than the move's deadline.
        let patience = left().max(RESTORE_TIMEOUT);
        match children::call(inner, to, &restore, patience).await {
            Ok(Reply::Restored(1)) => {}
            outcome => {
                let error = format!("not restored there: {outcome:?}");
                report_failure(inner, child, to, &error);
                // A restore still on its way must not land after the forwarded letters.
                let abandon = Request::Abandon { child: child.to_owned() };
                let _ = children::call(inner, to, &abandon, RESTORE_TIMEOUT).await;
            }
        }
    }

    // 5. The mail, then the switch. The old copy is frozen: whatever time is left, the move
    // is finished now (given up, the new copy would be dropped and the state with it).
    let patience = left().max(RESTORE_TIMEOUT);
    if let Some(forwarding) = &forwarding {
        forwarding.start();
        let _ = inner.clock.timeout(patience, forwarding.drained()).await;
    }
    let publish = Request::Publish {
        child: child.to_owned(),
        from: inner.me().to_owned(),
        timeout_ms: children::millis(patience),
    };
    let outcome = children::call(inner, to, &publish, patience + PUBLISH_SLACK).await;
    inner.map.set(vec![(child.to_owned(), None)]);
    if let Some(forwarding) = forwarding {
        let inner = inner.clone();
        let child = child.to_owned();
        tokio::spawn(async move {
            let report = forwarding.finished().await;
            if report.failed > 0 {
                tracing::warn!(hub = %inner.id, %child, ?report, "letters not forwarded");
            }
            let (forwarded, failed) = (report.forwarded, report.failed);
            let _ = inner.events.send(HubEvent::ForwardingEnded { child, forwarded, failed });
        });
    }
    match outcome {
        Ok(Reply::Published(Ok(Started { .. }))) => {
            Counters::add(&inner.counters.handovers_done, 1);
            let event = HubEvent::HandedOver { child: child.to_owned(), to: to.to_owned(), bytes };
            let _ = inner.events.send(event);
            Ok(true)
        }
        Ok(Reply::Published(Err(error))) => Err(error),
        Ok(_) => Err(ChildError::Unreachable { node: to.to_owned(), error: "stopped".into() }),
        Err(error) => Err(ChildError::Unreachable { node: to.to_owned(), error }),
    }
}

fn report_failure(inner: &HubInner, child: &str, to: &str, error: &str) {
    tracing::warn!(hub = %inner.id, %child, %to, %error, "a hand-over failed");
    Counters::add(&inner.counters.handovers_failed, 1);
    let event = HubEvent::HandOverFailed {
        child: child.to_owned(),
        to: to.to_owned(),
        error: error.to_owned(),
    };
    let _ = inner.events.send(event);
}

/// How long after the deadline of its `Prepare` a hot move's new copy whose old copy froze
/// (its state came) waits for its mover to publish it: the mover takes up to
/// [`RESTORE_TIMEOUT`] past its deadline for the restore, as long again for the mail, and
/// its publish is bounded by that plus [`PUBLISH_SLACK`].
const FROZEN_GRACE: Duration =
    Duration::from_secs(3 * RESTORE_TIMEOUT.as_secs() + PUBLISH_SLACK.as_secs());

/// `to` of a hot move: starts the new copy, unpublished (a [`Request::Prepare`]). A copy not
/// published within a second past the deadline is stopped; once its old copy froze (its
/// state came, and it is the child's only copy), within [`FROZEN_GRACE`] past it, for the
/// mover gives a frozen move more time than its deadline.
pub(crate) async fn prepare(
    inner: &Arc<HubInner>,
    child: String,
    entry: Entry<ChildData>,
    from: String,
    deadline: Instant,
) -> Result<Pid, ChildError> {
    let pid = children::start_unpublished(inner, &child, &entry, &from, deadline).await?;
    let clock = inner.clock.clone();
    let wait = deadline.saturating_duration_since(clock.now().into_std());
    let inner = Arc::downgrade(inner);
    tokio::spawn(async move {
        clock.sleep(wait + Duration::from_secs(1)).await;
        let frozen =
            inner.upgrade().is_some_and(|inner| children::frozen_unpublished(&inner, &child, pid));
        if frozen {
            clock.sleep(FROZEN_GRACE).await;
        }
        if let Some(inner) = inner.upgrade() {
            children::drop_unpublished(&inner, &child, pid);
        }
    });
    Ok(pid)
}

/// Hands every child of this node whose behaviour has a [`Handover`](super::Handover) to its
/// owner on the ring without this node, hot, within `deadline` (the hub stops here); with
/// several copies of each child, streams the state of the active copies here to their
/// passive copies instead. The others, and those not handed over in time, are left to
/// [`children::stop_all`].
pub(crate) async fn hand_over_all(inner: &Arc<HubInner>, deadline: Instant) {
    let table = &inner.config.table;
    if table.replicas > 1 {
        // Other copies run already. Under active/passive, the active ones here send their
        // passive copies their state once more, and those are promoted when this node leaves.
        if table.redundancy == Redundancy::ActivePassive {
            let _ = inner.clock.timeout_at(deadline.into(), handover::stream_last(inner)).await;
        }
        return;
    }
    let me = inner.me().to_owned();
    let (ring, mine) = inner.table(|table| {
        let others = table.ring().nodes().iter().filter(|node| **node != me);
        let ring = Ring::with_vnodes(others.map(String::as_str), table.ring().vnodes());
        let mine: Vec<(String, Placement)> = table
            .children()
            .filter_map(|(child, known)| {
                let entry = known.holders.get(&me)?;
                (entry.state == State::Running
                    && entry.data.spec.restart != shoal_process::Restart::Temporary
                    && inner.config.handovers.knows(&entry.data.spec.factory))
                .then(|| (child.clone(), entry.placement.clone()))
            })
            .collect();
        (ring, mine)
    });
    let retention = match inner.config.migration {
        Migration::Hot { retention } => retention,
        Migration::Cold => Duration::from_secs(1),
    };
    let mut moves = tokio::task::JoinSet::new();
    for (child, placement) in mine {
        let Some(to) = placement.owner(&ring, &child).map(str::to_owned) else { continue };
        let inner = inner.clone();
        moves.spawn(async move {
            let moved = move_hot(&inner, &child, &to, None, retention, deadline).await;
            if let Err(error) = &moved {
                tracing::warn!(hub = %inner.id, %child, %to, %error, "not handed over");
            }
        });
    }
    while moves.join_next().await.is_some() {}
}
