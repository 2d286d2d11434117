//! Locks: [`Registry::lock`] and the [`LockGuard`] it gives (Paxtor's `lock(key, options)`,
//! with fencing tokens, re-entry, waiters served in order, and a holder that learns when its
//! hold may have ended).
//!
//! A lock is held by a process of this node: the one given in [`LockOptions::holder`] (which
//! may then acquire the same lock again: re-entry, counted), or, by default, a small process
//! the registry starts for the guard and stops with it. The lock goes when its holder does:
//! released by the guard (dropped, or [`LockGuard::unlock`]), cleared by this node when the
//! holder exits, and cleared by any node after the holder's node was lost and its lease ended
//! (the waiters' nodes do it, so they are served). A waiter is told by the node that handed it
//! the lock (no polling); it looks again itself whenever a node comes or goes, or a lease
//! ends, in case that notice was lost with its sender.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_process::{Context, ExitReason, Pid, Process};
use tokio::sync::oneshot;

use crate::core::{Acquire, LockState, RegistryKey, Release};
use crate::driver::records::{LockHolder, LockRecord, Step, lock_key};
use crate::driver::registry::{HeldLock, Inner, LockInfo};
use crate::driver::stats::Counters;
use crate::{Registry, RegistryError};

/// What [`Registry::lock`] does when no majority of the acceptors answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnNoQuorum {
    /// Try again until the options' timeout, if any (the default).
    #[default]
    Retry,
    /// Fail with [`RegistryError::NoQuorum`].
    Fail,
    /// Answer [`LockResult::NoQuorum`].
    Return,
}

/// How [`Registry::lock`] acquires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockOptions {
    /// Wait in the lock's queue while another holds it (default), or answer
    /// [`LockResult::HeldBy`] at once.
    pub block: bool,
    /// What to do without a quorum.
    pub on_no_quorum: OnNoQuorum,
    /// The process that holds the lock (of this node; it may re-enter); `None` (default): a
    /// process started for the guard.
    pub holder: Option<Pid>,
    /// How long to wait in all (`None`, the default: as long as it takes). A blocking
    /// acquisition that times out leaves the queue and answers [`LockResult::HeldBy`].
    pub timeout: Option<Duration>,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions { block: true, on_no_quorum: OnNoQuorum::Retry, holder: None, timeout: None }
    }
}

impl LockOptions {
    /// Answer at once if the lock is held.
    pub fn non_blocking(self) -> Self {
        LockOptions { block: false, ..self }
    }

    /// With `holder` as the holding process.
    pub fn holder(self, holder: Pid) -> Self {
        LockOptions { holder: Some(holder), ..self }
    }

    /// With `on_no_quorum`.
    pub fn on_no_quorum(self, on_no_quorum: OnNoQuorum) -> Self {
        LockOptions { on_no_quorum, ..self }
    }

    /// Waiting at most `timeout`.
    pub fn timeout(self, timeout: Duration) -> Self {
        LockOptions { timeout: Some(timeout), ..self }
    }
}

/// What [`Registry::lock`] answers.
#[derive(Debug)]
#[must_use = "dropping the guard releases the lock"]
pub enum LockResult {
    /// The lock is held, until the guard goes.
    Acquired(LockGuard),
    /// Another process holds it, with this fencing token.
    HeldBy {
        /// The holder.
        holder: Pid,
        /// Its token.
        token: u64,
    },
    /// No majority of the acceptors answered (with [`OnNoQuorum::Return`]).
    NoQuorum,
}

impl LockResult {
    /// The guard, if the lock was acquired.
    pub fn acquired(self) -> Option<LockGuard> {
        match self {
            LockResult::Acquired(guard) => Some(guard),
            _ => None,
        }
    }
}

/// A held lock: released when dropped (or by [`LockGuard::unlock`]).
#[must_use = "dropping the guard releases the lock"]
pub struct LockGuard {
    inner: Arc<Inner>,
    key: RegistryKey,
    pid: Pid,
    epoch: u64,
    token: u64,
    own: bool,
    released: bool,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("key", &self.key.as_str())
            .field("holder", &self.pid)
            .field("token", &self.token)
            .finish()
    }
}

impl LockGuard {
    /// The fencing token of this acquisition: larger than every earlier holder's. Give it to
    /// whatever the lock protects, and have that refuse a token below one it has seen.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The lock's key.
    pub fn key(&self) -> &str {
        self.key.as_str()
    }

    /// The holding process.
    pub fn holder(&self) -> Pid {
        self.pid
    }

    /// Whether this node's lease, under which the lock is held, has lapsed or ended: the hold
    /// may be over (another node may take the lock once the lease has ended plus the drift
    /// margin; this is known first, by the lease's end on this node's clock).
    pub fn is_lost(&self) -> bool {
        self.inner.valid_epoch() != Some(self.epoch)
    }

    /// Resolves when this node's lease lapses or ends (see [`LockGuard::is_lost`]): before any
    /// other node can acquire the lock, if clocks keep to the lease's drift bound.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let (inner, epoch) = (self.inner.clone(), self.epoch);
        async move {
            let mut view = inner.lease.subscribe();
            loop {
                let current = *view.borrow_and_update();
                let until = match current.valid_until {
                    Some(until) if current.epoch == epoch && inner.now() < until => until,
                    _ => return,
                };
                tokio::select! {
                    biased;
                    changed = view.changed() => if changed.is_err() { return },
                    () = inner.sleep_until(until) => {}
                }
            }
        }
    }

    /// Releases one acquisition (the last one frees the lock, or hands it to the first
    /// waiter).
    ///
    /// # Errors
    ///
    /// [`RegistryError::NotHolder`] or [`RegistryError::NotHeld`] if the lock was taken from
    /// the holder meanwhile (its lease ended); a consensus failure (the lock is then released
    /// when the holder exits).
    pub async fn unlock(mut self) -> Result<(), RegistryError> {
        self.released = true;
        let released = self.inner.release(&self.key, self.pid).await;
        if self.own {
            self.inner.runtime.exit(self.pid, ExitReason::Shutdown);
        }
        released
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            // No runtime to release it from: the holder's exit (or its lease) releases it.
            if self.own {
                self.inner.runtime.exit(self.pid, ExitReason::Shutdown);
            }
            return;
        };
        let (inner, key, pid, own) = (self.inner.clone(), self.key.clone(), self.pid, self.own);
        handle.spawn(async move {
            if let Err(error) = inner.release(&key, pid).await {
                tracing::debug!(%key, %error, "a dropped lock guard did not release");
            }
            if own {
                inner.runtime.exit(pid, ExitReason::Shutdown);
            }
        });
    }
}

impl Registry {
    /// Acquires the cluster-wide lock `key` (see the module docs of `locks` and
    /// [`LockOptions`]).
    ///
    /// # Errors
    ///
    /// [`RegistryError::Key`] for a bad key; [`RegistryError::NotLocal`] or
    /// [`RegistryError::NoProc`] for a holder that is not a live process of this node;
    /// [`RegistryError::NoQuorum`] with [`OnNoQuorum::Fail`]; [`RegistryError::Timeout`] if
    /// the options' timeout passed without a quorum.
    pub async fn lock(&self, key: &str, options: LockOptions) -> Result<LockResult, RegistryError> {
        let key = RegistryKey::new(key)?;
        self.inner.lock(key, options).await
    }

    /// Lock `key` as the cluster has it now (one consensus read): its holder, token, count of
    /// acquisitions and waiters; `None` while it is free.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Key`] for a bad key, or a consensus failure.
    pub async fn lock_info(&self, key: &str) -> Result<Option<LockInfo>, RegistryError> {
        let key = RegistryKey::new(key)?;
        let (_, record) = self.inner.store.read::<LockRecord>(&lock_key(&key)).await?;
        Ok(record.and_then(|state| {
            let held = state.held?;
            Some(LockInfo {
                key: key.to_string(),
                holder: held.holder.pid,
                host: held.holder.host,
                token: state.token,
                count: held.count,
                waiters: state.queue.len(),
            })
        }))
    }

    /// Releases one acquisition of lock `key` by `holder` (for holders given in
    /// [`LockOptions::holder`] whose guard was forgotten; a guard releases by itself).
    ///
    /// # Errors
    ///
    /// [`RegistryError::NotHeld`], [`RegistryError::NotHolder`], or a consensus failure.
    pub async fn unlock(&self, key: &str, holder: Pid) -> Result<(), RegistryError> {
        let key = RegistryKey::new(key)?;
        self.inner.release(&key, holder).await
    }
}

/// What one pass of an acquisition found.
enum Found {
    Got { token: u64, count: u32, waiters: usize },
    Queued { holder: LockHolder },
    Held { holder: LockHolder, token: u64 },
}

/// The process that holds a lock for a guard made without a holder.
struct GuardHolder;

impl Process for GuardHolder {
    type Message = ();
    type Call = ();
    type Reply = ();

    async fn handle_cast(&mut self, (): (), _ctx: &mut Context<Self>) {}
}

/// Takes the waiter off this node's list when an acquisition ends, however it ends; and
/// stops a guard's own holder if the acquisition did not produce a guard.
/// It also counts the time an acquisition that queued waited, however it ends.
struct Pending<'a> {
    inner: &'a Arc<Inner>,
    key: RegistryKey,
    pid: Pid,
    own: bool,
    done: bool,
    /// When the acquisition was asked for, once it queued.
    waiting_since: Option<Instant>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(since) = self.waiting_since {
            self.inner.counters.add_wait(self.inner.now().saturating_duration_since(since));
        }
        self.inner.lock_state().waiting.remove(&(self.key.clone(), self.pid));
        if !self.done && self.own {
            // Its exit takes it out of the queue (its watch clears it). `Shutdown`, not
            // `Normal`: an exit signal with `Normal` is ignored by a process that does not
            // trap exits (as in OTP), and the waiter would stay queued, to be handed the lock
            // and hold it for ever.
            self.inner.runtime.exit(self.pid, ExitReason::Shutdown);
        }
    }
}

impl Inner {
    async fn lock(
        self: &Arc<Self>,
        key: RegistryKey,
        options: LockOptions,
    ) -> Result<LockResult, RegistryError> {
        let (pid, own) = match options.holder {
            Some(pid) if pid.node() != self.runtime.node() => {
                return Err(RegistryError::NotLocal(pid));
            }
            Some(pid) if !self.runtime.is_alive(pid) => return Err(RegistryError::NoProc(pid)),
            Some(pid) => (pid, false),
            None => (self.runtime.spawn(GuardHolder).pid(), true),
        };
        let asked_at = self.now();
        let mut pending =
            Pending { inner: self, key: key.clone(), pid, own, done: false, waiting_since: None };
        let deadline = options.timeout.map(|timeout| self.now() + timeout);
        let register = lock_key(&key);
        let mut handed: Option<oneshot::Receiver<u64>> = None;
        let mut changed = self.locks_changed.subscribe();
        let mut queued = false;
        loop {
            if deadline.is_some_and(|deadline| self.now() >= deadline) {
                return Err(RegistryError::Timeout);
            }
            let Some(epoch) = self.valid_epoch() else {
                let error = RegistryError::NoQuorum { maybe_applied: false };
                match self.no_quorum(options, error, deadline).await {
                    Some(answer) => return answer,
                    None => continue,
                }
            };
            let me = LockHolder { pid, host: self.me.clone(), epoch };
            if handed.is_none() {
                let (tell, told) = oneshot::channel();
                self.lock_state().waiting.insert((key.clone(), pid), tell);
                handed = Some(told);
            }
            let attempt = self
                .store
                .update(&register, None, |current: Option<&LockRecord>| {
                    Ok(self.decide_acquire(current, &me, options.block, queued))
                })
                .await;
            let ((found, handed_on), _) = match attempt {
                Ok(done) => done,
                // No quorum, or contention that outlasted a consensus request: the record
                // is decided on afresh next time (a join of the queue that took effect is
                // seen as waiting).
                Err(error @ (RegistryError::NoQuorum { .. } | RegistryError::Consensus(_))) => {
                    match self.no_quorum(options, error, deadline).await {
                        Some(answer) => return answer,
                        None => continue,
                    }
                }
                Err(error) => return Err(error),
            };
            if let Some((next, token)) = handed_on {
                self.tell_handed(&key, &next, token);
            }
            match found {
                Found::Got { token, count, waiters } => {
                    pending.done = true;
                    return Ok(LockResult::Acquired(
                        self.acquired(&key, pid, epoch, token, own, count, waiters),
                    ));
                }
                Found::Held { holder, token } => {
                    if self.holder_gone(&holder).await {
                        continue;
                    }
                    return Ok(LockResult::HeldBy { holder: holder.pid, token });
                }
                Found::Queued { holder } => {
                    if !queued {
                        Counters::count(&self.counters.lock_waits);
                        pending.waiting_since = Some(asked_at);
                    }
                    queued = true;
                    self.watch_holder(&key, pid);
                    if self.holder_gone(&holder).await {
                        continue;
                    }
                    let told = handed.as_mut().expect("a waiter is registered above");
                    let timeout = async {
                        match deadline {
                            Some(deadline) => self.sleep_until(deadline).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        biased;
                        token = told => {
                            if let Ok(token) = token {
                                pending.done = true;
                                return Ok(LockResult::Acquired(self.acquired(&key, pid, epoch, token, own, 1, 0)));
                            }
                            handed = None;
                        }
                        _ = changed.changed() => {}
                        () = timeout => {
                            let me_now = me.clone();
                            let left = self
                                .store
                                .update(&register, None, |current: Option<&LockRecord>| {
                                    Ok(match current.and_then(|state| state.held.as_ref()) {
                                        // Handed to it meanwhile: it holds the lock after all.
                                        Some(held) if held.holder == me_now => {
                                            Step::Keep(Ok(current.map_or(0, |state| state.token)))
                                        }
                                        _ => {
                                            let at = (holder.pid, current.map_or(0, |state| state.token));
                                            match LockState::cancel(current, &me_now) {
                                                Some(without) => Step::Write(without, Err(at)),
                                                None => Step::Keep(Err(at)),
                                            }
                                        }
                                    })
                                })
                                .await?;
                            return Ok(match left.0 {
                                Ok(token) => {
                                    pending.done = true;
                                    LockResult::Acquired(self.acquired(&key, pid, epoch, token, own, 1, 0))
                                }
                                Err((holder, token)) => {
                                    self.unwatch(&key, pid);
                                    LockResult::HeldBy { holder, token }
                                }
                            });
                        }
                    }
                }
            }
        }
    }

    /// One decision of an acquisition on the lock's record: first clear holders and waiters
    /// whose lease this node knows is over (telling the new holder, if any), then acquire, or
    /// (once queued) see whether the lock was handed over.
    fn decide_acquire(
        &self,
        current: Option<&LockRecord>,
        me: &LockHolder,
        block: bool,
        queued: bool,
    ) -> Step<LockRecord, (Found, Option<(LockHolder, u64)>)> {
        let mut record = current.cloned();
        let mut cleared = false;
        if let Some(state) = &record {
            let gone: Vec<LockHolder> = state
                .held
                .iter()
                .map(|held| &held.holder)
                .chain(&state.queue)
                .filter(|holder| {
                    // This node's own earlier epochs too: a holder of its earlier life (a
                    // crash, a restart) is cleared by nobody else while the node is reachable.
                    self.known_over(&holder.host, holder.epoch)
                })
                .cloned()
                .collect();
            for holder in gone {
                if let Some(next) = LockState::clear(record.as_ref(), &holder) {
                    record = Some(next);
                    cleared = true;
                }
            }
        }
        let before = current.and_then(|state| state.held.as_ref()).map(|held| held.holder.clone());
        let handed_on = |state: &LockRecord| {
            let after = state.held.as_ref().map(|held| held.holder.clone());
            match after {
                Some(next) if Some(&next) != before.as_ref() && next != *me => {
                    Some((next, state.token))
                }
                _ => None,
            }
        };
        let current = record.as_ref();
        let held = current.and_then(|state| state.held.as_ref());
        // Already handed to this waiter: it holds the lock (not a re-entry).
        if queued && let Some(held) = held.filter(|held| held.holder == *me) {
            let state = current.expect("held");
            let found =
                Found::Got { token: state.token, count: held.count, waiters: state.queue.len() };
            return if cleared {
                Step::Write(state.clone(), (found, handed_on(state)))
            } else {
                Step::Keep((found, None))
            };
        }
        match LockState::acquire(current, me, block) {
            Acquire::Write(state) => {
                let count = state.held.as_ref().map_or(1, |held| held.count);
                let found = Found::Got { token: state.token, count, waiters: state.queue.len() };
                let told = handed_on(&state);
                Step::Write(state, (found, told))
            }
            Acquire::Queued { record: state, .. } => {
                let holder = state.held.as_ref().map(|held| held.holder.clone()).expect("held");
                let told = handed_on(&state);
                Step::Write(state, (Found::Queued { holder }, told))
            }
            Acquire::Waiting { .. } => {
                let state = current.expect("waiting in a record");
                let holder = held.map(|held| held.holder.clone()).expect("held");
                if cleared {
                    let told = handed_on(state);
                    Step::Write(state.clone(), (Found::Queued { holder }, told))
                } else {
                    Step::Keep((Found::Queued { holder }, None))
                }
            }
            Acquire::HeldBy { holder, token } => match current {
                Some(state) if cleared => {
                    let told = handed_on(state);
                    Step::Write(state.clone(), (Found::Held { holder, token }, told))
                }
                _ => Step::Keep((Found::Held { holder, token }, None)),
            },
        }
    }

    /// Whether `holder`'s hold is over for want of its node: unreachable, and its lease
    /// ended (then the next pass clears it); or a process of an earlier life of a node that is
    /// back, once that life's epoch is over. An unreachable holder's node is suspected.
    async fn holder_gone(self: &Arc<Self>, holder: &LockHolder) -> bool {
        if self.reachable(&holder.host) {
            // A holder of an earlier life of a node that is back: gone once that life's lease
            // epoch is over (the node began a new one when it started again).
            return self.stale(&holder.host, holder.pid)
                && self.epoch_over(&holder.host, holder.epoch).await.unwrap_or(false);
        }
        self.suspect(&holder.host);
        self.epoch_over(&holder.host, holder.epoch).await.unwrap_or(false)
    }

    /// What an acquisition does without a quorum: an answer, or `None` to try again.
    async fn no_quorum(
        &self,
        options: LockOptions,
        error: RegistryError,
        deadline: Option<Instant>,
    ) -> Option<Result<LockResult, RegistryError>> {
        match options.on_no_quorum {
            OnNoQuorum::Fail => Some(Err(error)),
            OnNoQuorum::Return => Some(Ok(LockResult::NoQuorum)),
            OnNoQuorum::Retry => {
                let retry = self.now() + self.config.retry_every.max(Duration::from_millis(50));
                let until = deadline.map_or(retry, |deadline| deadline.min(retry));
                let _ = self.wait_lease(until).await;
                None
            }
        }
    }

    /// Records a lock acquired by local `pid` and makes its guard.
    #[allow(clippy::too_many_arguments)]
    fn acquired(
        self: &Arc<Self>,
        key: &RegistryKey,
        pid: Pid,
        epoch: u64,
        token: u64,
        own: bool,
        count: u32,
        waiters: usize,
    ) -> LockGuard {
        Counters::count(&self.counters.lock_acquisitions);
        self.lock_state().held.insert((key.clone(), pid), HeldLock { token, count, waiters });
        self.watch_holder(key, pid);
        LockGuard { inner: self.clone(), key: key.clone(), pid, epoch, token, own, released: false }
    }

    /// Watches local holder or waiter `pid` of lock `key` (once): when it exits, it is cleared
    /// from the lock (which is handed on).
    fn watch_holder(self: &Arc<Self>, key: &RegistryKey, pid: Pid) {
        let mut state = self.lock_state();
        if state.watched.contains_key(&(key.clone(), pid)) {
            return;
        }
        let (inner, watched_key) = (self.clone(), key.clone());
        let task = tokio::spawn(async move {
            inner.runtime.watch(pid).await;
            inner.clear_exited(&watched_key, pid).await;
        });
        state.watched.insert((key.clone(), pid), task.abort_handle());
    }

    /// Stops watching `pid` for lock `key` unless it holds it.
    fn unwatch(&self, key: &RegistryKey, pid: Pid) {
        let mut state = self.lock_state();
        let entry = (key.clone(), pid);
        if !state.held.contains_key(&entry)
            && let Some(watch) = state.watched.remove(&entry)
        {
            watch.abort();
        }
    }

    /// Local process `pid` exited: take it off lock `key` (retrying until it is written, or
    /// the lease under which it held the lock is over, when other nodes clear it).
    async fn clear_exited(self: &Arc<Self>, key: &RegistryKey, pid: Pid) {
        let register = lock_key(key);
        loop {
            let cleared = self
                .store
                .update(&register, None, |current: Option<&LockRecord>| {
                    let gone: Vec<LockHolder> = current
                        .into_iter()
                        .flat_map(|state| {
                            state.held.iter().map(|held| &held.holder).chain(&state.queue)
                        })
                        .filter(|holder| holder.pid == pid)
                        .cloned()
                        .collect();
                    let mut record = current.cloned();
                    for holder in &gone {
                        if let Some(next) = LockState::clear(record.as_ref(), holder) {
                            record = Some(next);
                        }
                    }
                    Ok(match record {
                        Some(state) if !gone.is_empty() => {
                            let next =
                                state.held.as_ref().map(|held| (held.holder.clone(), state.token));
                            Step::Write(state, next)
                        }
                        _ => Step::Keep(None),
                    })
                })
                .await;
            match cleared {
                Ok((next, _)) => {
                    {
                        let mut state = self.lock_state();
                        state.held.remove(&(key.clone(), pid));
                        state.watched.remove(&(key.clone(), pid));
                    }
                    if let Some((next, token)) = next
                        && next.pid != pid
                    {
                        self.tell_handed(key, &next, token);
                    }
                    return;
                }
                Err(_) if self.valid_epoch().is_some() && !*self.stop.borrow() => {
                    self.clock.sleep(self.config.lease.renew_every / 4).await;
                }
                Err(_) => return,
            }
        }
    }

    /// Releases one acquisition of lock `key` by local `pid`.
    pub(crate) async fn release(
        self: &Arc<Self>,
        key: &RegistryKey,
        pid: Pid,
    ) -> Result<(), RegistryError> {
        let register = lock_key(key);
        let name = key.to_string();
        let (released, _) = self
            .store
            .update(&register, None, |current: Option<&LockRecord>| {
                let Some(held) = current.and_then(|state| state.held.as_ref()) else {
                    return Ok(Step::Keep(Err(RegistryError::NotHeld { key: name.clone() })));
                };
                if held.holder.pid != pid {
                    let error = RegistryError::NotHolder {
                        key: name.clone(),
                        holder: held.holder.pid,
                        by: pid,
                    };
                    return Ok(Step::Keep(Err(error)));
                }
                Ok(match LockState::release(current, &held.holder) {
                    Ok(Release::Write(next)) => Step::Write(next.clone(), Ok(next)),
                    Err(_) => Step::Keep(Err(RegistryError::NotHeld { key: name.clone() })),
                })
            })
            .await?;
        let next = released?;
        let mut state = self.lock_state();
        match next.held.as_ref() {
            Some(held) if held.holder.pid == pid => {
                if let Some(local) = state.held.get_mut(&(key.clone(), pid)) {
                    local.count = held.count;
                    local.waiters = next.queue.len();
                }
            }
            other => {
                state.held.remove(&(key.clone(), pid));
                if let Some(watch) = state.watched.remove(&(key.clone(), pid)) {
                    watch.abort();
                }
                let told = other.map(|held| held.holder.clone());
                drop(state);
                if let Some(next_holder) = told {
                    self.tell_handed(key, &next_holder, next.token);
                }
            }
        }
        Ok(())
    }
}
