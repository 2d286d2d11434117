//! Hosting: this node's lease (won, renewed, lapsed, lost), the names it runs under it, and the
//! takeover of the leases of hosts that went away.
//!
//! **The lease task** begins an epoch in this node's lease register, then renews it as
//! [`HostLease`] says, racing each renewal against the lease's end: at the end, every process
//! of a name hosted here is stopped (exit reason [`LEASE_ENDED`]), before any contender may
//! claim. If a later renewal of the same epoch succeeds, the names stopped are freed
//! (temporary) or started again here (permanent). If the register shows the epoch ended, the
//! names are the contender's now: this node forgets them and begins a new epoch.
//!
//! **The takeover task** watches the lease register of every member that went away, with a
//! [`Takeover`]: once the claim wait has passed on this node's clock with no renewal seen, it
//! ends that epoch by compare-and-set. Whoever learns that an epoch ended (by ending it, or by
//! reading it) recovers the host's permanent names: the host listed them, before claiming
//! each, in its index register for the epoch; each is freed from the old run and started
//! again on the first candidate that accepts it. Temporary names and locks of an ended epoch
//! need no one: the next node to use them sees the epoch over and frees them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_paxos::Entry;
use shoal_process::{ExitReason, Pid, SpawnError, SpawnOptions, StartError};

use crate::RegistryError;
use crate::core::{
    Exited, HostLease, LeaseLost, LeaseRecord, NameRestart, NameState, RegistryKey, Start, Takeover,
};
use crate::driver::records::{NameRecord, SpecRecord, Step, index_key, lease_key, name_key};
use crate::driver::registry::{Hosted, Hosting, Inner, LeaseView};

/// The exit reason (as [`ExitReason::Custom`]) of a process stopped because its host's lease
/// ended: the host could not renew it in time, or the registry stopped.
pub const LEASE_ENDED: &str = "shoal.registry: lease ended";

/// A renewal in flight: when it began, and how it ended.
type RenewalFuture = std::pin::Pin<Box<dyn Future<Output = (Instant, Renewal)> + Send>>;

/// How a renewal ended.
enum Renewal {
    Renewed,
    Failed,
    Lost(LeaseLost),
}

pub(crate) async fn lease_task(inner: Arc<Inner>) {
    let mut stop = inner.stop.subscribe();
    let config = inner.config.lease;
    'epochs: loop {
        // Begin an epoch above every one before (retrying while there is no quorum).
        let epoch = loop {
            if *stop.borrow() {
                return;
            }
            let key = lease_key(&inner.me);
            let begun = inner
                .store
                .update(&key, None, |current: Option<&LeaseRecord>| {
                    let next = LeaseRecord::begin(current);
                    Ok(Step::Write(next, next.epoch))
                })
                .await;
            match begun {
                Ok((epoch, _)) => break epoch,
                Err(_) => {
                    tokio::select! {
                        biased;
                        _ = stop.changed() => return,
                        () = inner.clock.sleep(config.renew_every / 4) => {}
                    }
                }
            }
        };
        // This node's earlier run (a crash, a restart) held names under the epoch before:
        // its permanent names start again now, rather than never (nobody takes over a lease
        // that is already over).
        recover_once(&inner, &inner.me.clone(), epoch - 1);
        let mut lease = HostLease::new(config, epoch, inner.now());
        inner.lease.send_replace(LeaseView { epoch, valid_until: None });
        let mut renewal: Option<RenewalFuture> = None;
        loop {
            let now = inner.now();
            if renewal.is_none()
                && let Some(began) = lease.poll_renewal(now)
            {
                renewal = Some(Box::pin(renew(inner.clone(), epoch, began)));
            }
            if !lease.is_valid(now) {
                lapse(&inner);
            }
            let wake = match lease.poll_timeout() {
                Some(at) if at > now => at,
                // The lease's end has passed (its names are stopped): it is no timeout any
                // more, and sleeping until it would spin without yielding while a renewal is
                // in flight. Look again a quarter of a renewal period later.
                Some(_) => now + config.renew_every / 4,
                None => now + config.duration,
            };
            tokio::select! {
                biased;
                _ = stop.changed() => return,
                (began, result) = async { renewal.as_mut().expect("guarded").await }, if renewal.is_some() => {
                    renewal = None;
                    match result {
                        Renewal::Renewed => {
                            let was_valid = lease.is_valid(inner.now());
                            lease.renewed(began);
                            inner.lease.send_replace(LeaseView { epoch, valid_until: lease.valid_until() });
                            if !was_valid {
                                revive(&inner);
                            }
                        }
                        Renewal::Failed => lease.failed(began, inner.now()),
                        Renewal::Lost(lost) => {
                            tracing::warn!(node = %inner.me, %lost, "this node's registry lease was taken over");
                            lease.lost();
                            inner.lease.send_replace(LeaseView { epoch, valid_until: None });
                            stop_hosting(&inner, "lease lost").await;
                            continue 'epochs;
                        }
                    }
                }
                () = inner.sleep_until(wake) => {}
            }
        }
    }
}

/// One renewal of `epoch`, begun at `began`.
async fn renew(inner: Arc<Inner>, epoch: u64, began: Instant) -> (Instant, Renewal) {
    let key = lease_key(&inner.me);
    let renewed = inner
        .store
        .update(&key, None, |current: Option<&LeaseRecord>| {
            Ok(match LeaseRecord::renew(current, epoch) {
                Ok(next) => Step::Write(next, Ok(())),
                Err(lost) => Step::Keep(Err(lost)),
            })
        })
        .await;
    let result = match renewed {
        Ok((Ok(()), _)) => Renewal::Renewed,
        Ok((Err(lost), _)) => Renewal::Lost(lost),
        Err(_) => Renewal::Failed,
    };
    (began, result)
}

/// The lease has lapsed: stop every process hosted under it, now.
pub(crate) fn lapse(inner: &Inner) {
    let stopping: Vec<Pid> = {
        let mut state = inner.lock_state();
        state
            .hosted
            .values_mut()
            .filter(|hosted| !hosted.lapsed)
            .filter_map(|hosted| {
                hosted.lapsed = true;
                hosted.pid.take()
            })
            .collect()
    };
    for pid in stopping {
        stop_process(inner, pid);
    }
}

/// Stops `pid` with [`LEASE_ENDED`], and kills it if it is still alive after half of the
/// stop allowance (a process that traps exits would otherwise outlive its lease).
fn stop_process(inner: &Inner, pid: Pid) {
    inner.runtime.exit(pid, ExitReason::Custom(LEASE_ENDED.to_owned()));
    let (runtime, clock, grace) =
        (inner.runtime.clone(), inner.clock.clone(), inner.config.lease.stop_within / 2);
    tokio::spawn(async move {
        clock.sleep(grace).await;
        if runtime.is_alive(pid) {
            runtime.kill(pid);
        }
    });
}

/// The lease is valid again (the same epoch renewed after lapsing): the names stopped are
/// freed or started again.
fn revive(inner: &Arc<Inner>) {
    let lapsed: Vec<(RegistryKey, u64)> = inner
        .lock_state()
        .hosted
        .iter()
        .filter(|(_, hosted)| hosted.lapsed)
        .map(|(name, hosted)| (name.clone(), hosted.token))
        .collect();
    for (name, token) in lapsed {
        tokio::spawn(after_exit(inner.clone(), name, token));
    }
}

/// Stops every hosted process and forgets the names and the locks held under this lease;
/// returns once they have exited (or after the stop allowance `δ`, logged).
pub(crate) async fn stop_hosting(inner: &Inner, why: &str) {
    let (pids, holders) = {
        let mut state = inner.lock_state();
        let pids: Vec<Pid> = std::mem::take(&mut state.hosted)
            .into_values()
            .filter_map(|hosted| hosted.pid)
            .collect();
        state.indexed = (0, Default::default());
        let holders: Vec<Pid> =
            std::mem::take(&mut state.held).into_iter().map(|((_, pid), _)| pid).collect();
        for (_, watch) in std::mem::take(&mut state.watched) {
            watch.abort();
        }
        (pids, holders)
    };
    if !pids.is_empty() || !holders.is_empty() {
        tracing::info!(node = %inner.me, names = pids.len(), locks = holders.len(), why, "stopping what this node hosts");
    }
    for pid in &pids {
        stop_process(inner, *pid);
    }
    let deadline = inner.clock.now() + inner.config.lease.stop_within;
    for pid in pids {
        if inner.clock.timeout_at(deadline, inner.runtime.watch(pid)).await.is_err() {
            tracing::error!(node = %inner.me, %pid, "a hosted process outlived the stop allowance");
        }
    }
}

/// Ends this node's own lease epoch (when the registry stops): its processes are stopped, so
/// other nodes may take its names over at once.
/// The epoch, once it is written as ended.
pub(crate) async fn end_own_lease(inner: &Inner) -> Option<u64> {
    let epoch = inner.lease.borrow().epoch;
    inner.lease.send_replace(LeaseView { epoch, valid_until: None });
    if epoch == 0 {
        return None;
    }
    let key = lease_key(&inner.me);
    let ended = inner
        .store
        .update(&key, None, |current: Option<&LeaseRecord>| {
            Ok(match current {
                Some(record) if record.epoch == epoch => match LeaseRecord::end(record) {
                    Some(ended) => Step::Write(ended, ()),
                    None => Step::Keep(()),
                },
                _ => Step::Keep(()),
            })
        })
        .await;
    ended.ok().map(|_| epoch)
}

// ---------------------------------------------------------------------------------------------
// Starting names here.

/// What one pass of [`Inner::host_start`] decided.
enum Decision {
    /// Look again (an old run was cleared, or a start is finishing).
    Again,
    /// Wait a little, then look again.
    Wait,
    Running(Pid),
    Elsewhere(String),
    /// This node claimed the name with this token: start it from this spec.
    Claimed(u64, Vec<u8>, NameRestart),
}

impl Inner {
    /// Hosts `name` here unless it runs: the name's process, started here if need be, or the
    /// host that has the name.
    /// `seen` is what the asking node read in the name's register, if it did: the first
    /// compare-and-set is made against it rather than after a read of its own.
    pub(crate) async fn host_start(
        self: &Arc<Self>,
        name: &RegistryKey,
        spec: &[u8],
        restart: NameRestart,
        seen: Option<Option<Entry>>,
    ) -> Result<Hosting, RegistryError> {
        let gate = self.lock_state().starting.entry(name.clone()).or_default().clone();
        let started = {
            let _one_at_a_time = gate.lock().await;
            self.host_start_gated(name, spec, restart, seen).await
        };
        let mut state = self.lock_state();
        if state.starting.get(name).is_some_and(|gate| Arc::strong_count(gate) == 2) {
            state.starting.remove(name);
        }
        started
    }

    async fn host_start_gated(
        self: &Arc<Self>,
        name: &RegistryKey,
        spec: &[u8],
        restart: NameRestart,
        seen: Option<Option<Entry>>,
    ) -> Result<Hosting, RegistryError> {
        let until = self.now() + self.config.ask_timeout;
        let key = name_key(name);
        let mut guess = seen;
        loop {
            let epoch = self.wait_lease(until).await?;
            if self.now() >= until {
                return Err(RegistryError::Timeout);
            }
            if restart == NameRestart::Permanent {
                self.index(name, epoch).await?;
            }
            let me = self.me.clone();
            let mine = self.lock_state().hosted.get(name).cloned();
            let runtime = self.runtime.clone();
            let (decision, entry) = self
                .store
                .update(&key, guess.take(), |current: Option<&NameRecord>| {
                    let Some(run) = current.and_then(|state| state.run.as_ref()) else {
                        return Ok(
                            match NameState::start(current, spec, restart, me.clone(), epoch) {
                                Start::Claimed(claim) => {
                                    let decision = Decision::Claimed(
                                        claim.token,
                                        claim.spec.clone(),
                                        claim.restart,
                                    );
                                    Step::Write(claim, decision)
                                }
                                Start::Running(_) => Step::Keep(Decision::Again),
                            },
                        );
                    };
                    let token = current.map_or(0, |state| state.token);
                    Ok(if run.host != me {
                        Step::Keep(Decision::Elsewhere(run.host.clone()))
                    } else if run.epoch != epoch {
                        // A run of an earlier epoch of this node: its process is gone.
                        match NameState::lease_ended(current, &me, run.epoch) {
                            Some(freed) => Step::Write(freed, Decision::Again),
                            None => Step::Keep(Decision::Again),
                        }
                    } else if let Some(pid) = run.pid {
                        if runtime.is_alive(pid) {
                            Step::Keep(Decision::Running(pid))
                        } else {
                            // It exited: its watch is writing that.
                            Step::Keep(Decision::Wait)
                        }
                    } else {
                        // A start of this node that did not finish recording its pid.
                        match mine.as_ref() {
                            Some(Hosted { token: t, pid: Some(pid), lapsed: false, .. })
                                if *t == token && runtime.is_alive(*pid) =>
                            {
                                match NameState::started(current, &me, token, *pid) {
                                    Some(recorded) => {
                                        Step::Write(recorded, Decision::Running(*pid))
                                    }
                                    None => Step::Keep(Decision::Again),
                                }
                            }
                            Some(Hosted { token: t, pid: None, lapsed: false, .. })
                                if *t == token =>
                            {
                                Step::Keep(Decision::Wait)
                            }
                            _ => match NameState::abandon(current, token) {
                                Some(freed) => Step::Write(freed, Decision::Again),
                                None => Step::Keep(Decision::Again),
                            },
                        }
                    })
                })
                .await?;
            match decision {
                Decision::Again => guess = Some(entry),
                Decision::Wait => self.clock.sleep(self.config.retry_every).await,
                Decision::Running(pid) => return Ok(Hosting::Running(pid)),
                Decision::Elsewhere(host) => return Ok(Hosting::Elsewhere(host)),
                Decision::Claimed(token, spec, restart) => {
                    match self.launch(name, token, &spec, restart, epoch, entry).await? {
                        Some(pid) => return Ok(Hosting::Running(pid)),
                        None => guess = None,
                    }
                }
            }
        }
    }

    /// Lists permanent `name` in this node's index register for `epoch`, before claiming it,
    /// so that whoever ends the epoch finds it.
    async fn index(&self, name: &RegistryKey, epoch: u64) -> Result<(), RegistryError> {
        {
            let state = self.lock_state();
            if state.indexed.0 == epoch && state.indexed.1.contains(name) {
                return Ok(());
            }
        }
        let key = index_key(&self.me, epoch);
        self.store
            .update(&key, None, |current: Option<&Vec<RegistryKey>>| {
                let mut names = current.cloned().unwrap_or_default();
                Ok(if names.contains(name) {
                    Step::Keep(())
                } else {
                    names.push(name.clone());
                    Step::Write(names, ())
                })
            })
            .await?;
        let mut state = self.lock_state();
        if state.indexed.0 != epoch {
            state.indexed = (epoch, Default::default());
        }
        state.indexed.1.insert(name.clone());
        Ok(())
    }

    /// Starts the process of the claim `token` of `name` and records its pid: the pid, or
    /// `None` if the claim was overtaken meanwhile (the process is stopped).
    async fn launch(
        self: &Arc<Self>,
        name: &RegistryKey,
        token: u64,
        spec: &[u8],
        restart: NameRestart,
        epoch: u64,
        claimed: Option<Entry>,
    ) -> Result<Option<Pid>, RegistryError> {
        let key = name_key(name);
        let spec: SpecRecord =
            rmp_serde::from_slice(spec).map_err(|error| RegistryError::Corrupt {
                register: String::from_utf8_lossy(&key.0).into_owned(),
                error: error.to_string(),
            })?;
        let superseded = self.lock_state().hosted.insert(
            name.clone(),
            Hosted { token, pid: None, restart, meta: spec.meta.clone(), lapsed: false },
        );
        // A process of an earlier claim of this name still runs here (two starts raced, say a
        // restart after an exit and a start that abandoned the unrecorded restart): its claim
        // is overtaken by this one, so it is stopped, and gone, before this one starts.
        if let Some(Hosted { token: earlier, pid: Some(pid), .. }) = superseded
            && earlier != token
        {
            stop_process(self, pid);
            self.runtime.watch(pid).await;
        }
        // Entered before this check, so a lapse from now on marks it; a lapse before it (while
        // the claim was written) is seen here, and nothing starts.
        let lapsed = self.valid_epoch() != Some(epoch);
        let started = if lapsed {
            Err(StartError::Init(ExitReason::Custom(LEASE_ENDED.to_owned())))
        } else {
            self.runtime.start_factory(&spec.factory, &spec.args, SpawnOptions::new()).await
        };
        let pid = match started {
            Ok(pid) => pid,
            Err(error) => {
                self.lock_state().hosted.remove(name);
                let _ = self
                    .store
                    .update(&key, Some(claimed), |current: Option<&NameRecord>| {
                        Ok(match NameState::abandon(current, token) {
                            Some(freed) => Step::Write(freed, ()),
                            None => Step::Keep(()),
                        })
                    })
                    .await;
                return Err(if lapsed {
                    RegistryError::NoLease
                } else {
                    self.start_error(&spec.factory, error)
                });
            }
        };
        let still_ours = {
            let mut state = self.lock_state();
            match state.hosted.get_mut(name) {
                Some(hosted) if hosted.token == token && !hosted.lapsed => {
                    hosted.pid = Some(pid);
                    true
                }
                _ => false,
            }
        };
        if !still_ours {
            // The lease lapsed while it started.
            stop_process(self, pid);
            return Ok(None);
        }
        tokio::spawn(watch_hosted(self.clone(), name.clone(), token, pid));
        // The claim decided it: this process is the name's, with this token. Its pid is
        // published in the background, so the caller has it one consensus round sooner; a
        // claim overtaken meanwhile (its host's lease ended) has the process stopped there.
        tokio::spawn(record_pid(self.clone(), name.clone(), token, pid, claimed));
        Ok(Some(pid))
    }

    fn start_error(&self, factory: &str, error: StartError) -> RegistryError {
        let node = self.me.clone();
        match error {
            StartError::Spawn(SpawnError::UnknownFactory(factory)) => {
                RegistryError::UnknownFactory { node, factory }
            }
            StartError::Spawn(SpawnError::BadArgs { factory, error }) => {
                RegistryError::BadArgs { node, factory, error: error.to_string() }
            }
            other => {
                RegistryError::StartFailed { node, reason: format!("factory {factory:?}: {other}") }
            }
        }
    }
}

/// Publishes `pid` as the process of `name`'s start `token` in its register (retrying while
/// the lease holds), or stops it if the start was overtaken.
async fn record_pid(
    inner: Arc<Inner>,
    name: RegistryKey,
    token: u64,
    pid: Pid,
    claimed: Option<Entry>,
) {
    let key = name_key(&name);
    let me = inner.me.clone();
    let mut guess = Some(claimed);
    loop {
        let recorded = inner
            .store
            .update(&key, guess.take(), |current: Option<&NameRecord>| {
                Ok(match NameState::started(current, &me, token, pid) {
                    Some(recorded) => Step::Write(recorded, true),
                    // Recorded already (by a start request that came meanwhile), or not ours.
                    None => Step::Keep(current.is_some_and(|state| {
                        state.token == token
                            && state
                                .run
                                .as_ref()
                                .is_some_and(|run| run.host == me && run.pid == Some(pid))
                    })),
                })
            })
            .await;
        match recorded {
            Ok((true, _)) => return,
            Ok((false, _)) => {
                {
                    let mut state = inner.lock_state();
                    if state.hosted.get(&name).is_some_and(|hosted| hosted.token == token) {
                        state.hosted.remove(&name);
                    }
                }
                stop_process(&inner, pid);
                return;
            }
            // Until it is written, a start request here writes it too (see `host_start`).
            Err(_) if inner.valid_epoch().is_some() && !*inner.stop.borrow() => {
                inner.clock.sleep(inner.config.retry_every).await;
            }
            // The lease lapsed: the lapse stops the process.
            Err(_) => return,
        }
    }
}

/// Watches hosted process `pid` of `name`'s start `token`; when it exits, frees or restarts
/// the name.
pub(crate) async fn watch_hosted(inner: Arc<Inner>, name: RegistryKey, token: u64, pid: Pid) {
    let started = inner.now();
    inner.runtime.watch(pid).await;
    inner.forget(&name, pid);
    let restart = match inner.lock_state().hosted.get(&name) {
        Some(hosted) if hosted.token == token && hosted.pid == Some(pid) && !hosted.lapsed => {
            hosted.restart
        }
        // Stopped by the registry: whoever stopped it decides what comes next.
        _ => return,
    };
    // A permanent process that keeps failing at once is restarted no faster than this.
    let lived = inner.now().saturating_duration_since(started);
    if restart == NameRestart::Permanent && lived < Duration::from_millis(100) {
        inner.clock.sleep(Duration::from_millis(100) - lived).await;
    }
    after_exit(inner, name, token).await;
}

/// The process of `name`'s start `token` is gone: free the name, or start it again here.
///
/// Boxed: it starts the process again through [`Inner::launch`], which spawns the watch that
/// comes back here.
fn after_exit(
    inner: Arc<Inner>,
    name: RegistryKey,
    token: u64,
) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(after_exit_inner(inner, name, token))
}

async fn after_exit_inner(inner: Arc<Inner>, name: RegistryKey, token: u64) {
    let key = name_key(&name);
    loop {
        if *inner.stop.borrow() {
            return;
        }
        let Some(epoch) = inner.valid_epoch() else {
            // Not while the lease has lapsed: revived when it is valid again.
            if let Some(hosted) = inner.lock_state().hosted.get_mut(&name)
                && hosted.token == token
            {
                hosted.lapsed = true;
                hosted.pid = None;
            }
            return;
        };
        let decided = inner
            .store
            .update(&key, None, |current: Option<&NameRecord>| {
                Ok(match NameState::exited(current, token) {
                    None => Step::Keep(None),
                    Some(Exited::Freed(freed)) => Step::Write(freed, None),
                    Some(Exited::Restart(mut again)) => {
                        if let Some(run) = again.run.as_mut() {
                            run.epoch = epoch;
                        }
                        let next = (again.token, again.spec.clone());
                        Step::Write(again, Some(next))
                    }
                })
            })
            .await;
        match decided {
            Ok((None, _)) => {
                let mut state = inner.lock_state();
                if state.hosted.get(&name).is_some_and(|hosted| hosted.token == token) {
                    state.hosted.remove(&name);
                }
                return;
            }
            Ok((Some((next, spec)), entry)) => {
                if let Err(error) =
                    inner.launch(&name, next, &spec, NameRestart::Permanent, epoch, entry).await
                {
                    tracing::warn!(%name, %error, "a permanent name could not be started again");
                }
                return;
            }
            Err(_) => inner.clock.sleep(inner.config.lease.renew_every / 4).await,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Takeovers.

pub(crate) async fn takeover_task(inner: Arc<Inner>) {
    let mut stop = inner.stop.subscribe();
    let mut suspected = inner.suspected.subscribe();
    let config = inner.config.lease;
    // A version is the whole record: a host that restarted (a new epoch) may reach the same
    // count of renewals as the epoch first read, and must not be taken for it.
    let mut takeover: Takeover<String, LeaseRecord> = Takeover::new(config);
    loop {
        let suspects: Vec<String> = inner.lock_state().suspects.iter().cloned().collect();
        for host in suspects {
            if inner.reachable(&host) {
                inner.lock_state().suspects.remove(&host);
                takeover.forget(&host);
                continue;
            }
            let key = lease_key(&host);
            let Ok((_, record)) = inner.store.read::<LeaseRecord>(&key).await else { continue };
            let Some(record) = record else {
                inner.lock_state().suspects.remove(&host);
                takeover.forget(&host);
                continue;
            };
            if record.ended {
                takeover.forget(&host);
                ended(&inner, &host, record.epoch);
                continue;
            }
            takeover.observe(host.clone(), record, inner.now());
            let Some(version) = takeover.claimable(&host, inner.now()) else { continue };
            let claimed = inner
                .store
                .update(&key, None, |current: Option<&LeaseRecord>| {
                    Ok(match current {
                        Some(now) if *now == version => match LeaseRecord::end(now) {
                            Some(ended) => Step::Write(ended, true),
                            None => Step::Keep(true),
                        },
                        _ => Step::Keep(false),
                    })
                })
                .await;
            if let Ok((true, _)) = claimed {
                tracing::info!(node = %inner.me, %host, epoch = record.epoch, "took over a lost host's lease");
                takeover.forget(&host);
                ended(&inner, &host, record.epoch);
            }
        }
        // Look again at the end of the next wait, and at least every renewal period (a host
        // that renews is seen to, and its wait starts again).
        let now = inner.now();
        let next = takeover
            .poll_timeout()
            .map_or(now + config.renew_every, |at| at.min(now + config.renew_every));
        let idle = inner.lock_state().suspects.is_empty();
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            _ = suspected.changed() => {}
            () = inner.sleep_until(next), if !idle => {}
        }
    }
}

/// `host`'s lease `epoch` is over: recover its permanent names, and have the waiters for
/// locks look again.
pub(crate) fn ended(inner: &Arc<Inner>, host: &str, epoch: u64) {
    inner.learn_lease(host, epoch, true);
    inner.lock_state().suspects.remove(host);
    inner.locks_changed.send_modify(|n| *n += 1);
    recover_once(inner, host, epoch);
}

/// Recovers `host`'s permanent names of `epoch`, once per epoch on this node.
pub(crate) fn recover_once(inner: &Arc<Inner>, host: &str, epoch: u64) {
    if epoch == 0 || !inner.lock_state().recovered.insert((host.to_owned(), epoch)) {
        return;
    }
    tokio::spawn(recover(inner.clone(), host.to_owned(), epoch));
}

/// Frees and starts again the permanent names `host` ran under `epoch`.
async fn recover(inner: Arc<Inner>, host: String, epoch: u64) {
    let index = index_key(&host, epoch);
    let names = loop {
        if *inner.stop.borrow() {
            return;
        }
        match inner.store.read::<Vec<RegistryKey>>(&index).await {
            Ok((_, names)) => break names.unwrap_or_default(),
            Err(_) => inner.clock.sleep(inner.config.lease.renew_every / 4).await,
        }
    };
    for name in names {
        let key = name_key(&name);
        let freed = inner
            .store
            .update(&key, None, |current: Option<&NameRecord>| {
                Ok(match NameState::lease_ended(current, &host, epoch) {
                    Some(freed) => {
                        let again = (freed.spec.clone(), freed.restart);
                        Step::Write(freed, Some(again))
                    }
                    // Freed already (by a node that found the lease over while resolving it,
                    // which does not start it): started again here all the same.
                    None => match current {
                        Some(state) if state.run.is_none() => {
                            Step::Keep(Some((state.spec.clone(), state.restart)))
                        }
                        _ => Step::Keep(None),
                    },
                })
            })
            .await;
        if let Ok((Some((spec, NameRestart::Permanent)), _)) = freed {
            let slot = inner.slot(&name);
            if let Err(error) =
                inner.resolve(&name, &spec, NameRestart::Permanent, &slot, true).await
            {
                tracing::warn!(%name, %error, %host, "a permanent name of a lost host did not start again");
            }
        }
    }
    let _ =
        inner.store.update(&index, None, |_: Option<&Vec<RegistryKey>>| Ok(Step::Delete(()))).await;
}
