//! Names: [`Name`], the handle to one cluster-wide name (Paxtor's `name(key, spec, restart)`),
//! how a name resolves from any node, and names for processes that already run.
//!
//! Resolving a name on a node: its cached pid if there is one (no consensus); otherwise the
//! name's record, read through consensus. A running process on a host this node reaches is
//! cached (and watched, so the entry goes with it). A run on a host this node cannot reach
//! stands while that host's lease does: its pid is returned (the process is alive, past a
//! partition: at most one, and it is this one) and its host is suspected, so that its lease is
//! taken over if it does not come back. A run under a lease epoch that is over is cleared. A
//! free name is started on the first of its candidate hosts ([`candidates`]) that accepts it;
//! each host claims the name by compare-and-set before it starts the process, so concurrent
//! resolutions from every node start one.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_paxos::Entry;
use shoal_process::{
    CallError, ChildSpec, Dest, Pid, Process, Resolve, ResolveError, Resolving, Restart, SendError,
    Target, Via,
};

use crate::core::{NameRestart, NameState, RegistryKey, Run, candidates};
use crate::driver::records::{NameRecord, SpecRecord, Step, encode, name_key};
use crate::driver::registry::{Hosted, Hosting, Inner, RPC, Reply, Request, Slot};
use crate::driver::stats::Counters;
use crate::{Registry, RegistryError};

/// A cluster-wide name with the spec of the process it stands for (see the crate docs): cheap
/// to clone, and a destination ([`Name::dest`]) for every send, call, monitor and link.
///
/// Nothing starts until the name is used: [`Name::whereis`], or a cast or call through it.
#[derive(Clone)]
pub struct Name {
    inner: Arc<NameInner>,
}

struct NameInner {
    registry: Arc<Inner>,
    key: RegistryKey,
    spec: Vec<u8>,
    restart: NameRestart,
    slot: Arc<Slot>,
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Name({:?})", self.inner.key.as_str())
    }
}

impl Registry {
    /// The name `name` for the process `spec` describes, restarted as `restart` says:
    /// [`Restart::Temporary`] (when it exits, for any reason, the name is free and its next use
    /// starts a fresh process) or [`Restart::Permanent`] (started again when it exits, and on
    /// another node when its host is lost). The spec's own restart field is ignored; its
    /// factory must be registered on every node that may host the name.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Key`] for an empty or oversized name, [`RegistryError::Transient`]
    /// for [`Restart::Transient`], which registry names do not support (as in Paxtor).
    pub fn name(
        &self,
        name: impl Into<String>,
        spec: &ChildSpec,
        restart: Restart,
    ) -> Result<Name, RegistryError> {
        self.name_with_meta(name, spec, restart, Vec::new())
    }

    /// [`Registry::name`], with metadata shown next to the name in [`Registry::list`].
    ///
    /// # Errors
    ///
    /// As for [`Registry::name`].
    pub fn name_with_meta(
        &self,
        name: impl Into<String>,
        spec: &ChildSpec,
        restart: Restart,
        meta: impl Into<Vec<u8>>,
    ) -> Result<Name, RegistryError> {
        let key = RegistryKey::new(name)?;
        let restart = match restart {
            Restart::Temporary => NameRestart::Temporary,
            Restart::Permanent => NameRestart::Permanent,
            Restart::Transient => return Err(RegistryError::Transient),
        };
        let spec = encode(&SpecRecord {
            factory: spec.factory.clone(),
            args: spec.args.clone(),
            meta: meta.into(),
        });
        let slot = self.inner.slot(&key);
        let inner = NameInner { registry: self.inner.clone(), key, spec, restart, slot };
        Ok(Name { inner: Arc::new(inner) })
    }

    /// The process registered under `name` cluster-wide, if one runs; never starts anything.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Key`] for a bad name; a consensus failure on a cache miss.
    pub async fn lookup(&self, name: &str) -> Result<Option<Pid>, RegistryError> {
        let key = RegistryKey::new(name)?;
        let slot = self.inner.slot(&key);
        if let Some(pid) = self.inner.look_up_cached(&slot) {
            return Ok(Some(pid));
        }
        self.inner.resolve(&key, &[], NameRestart::Temporary, &slot, false).await
    }

    /// Registers the running process `pid` of this node under the cluster-wide `name`, with
    /// `meta` shown in [`Registry::list`]. The name is held as long as the process runs (and
    /// this node holds its lease: a host cut off from the majority stops it, as it stops the
    /// processes it started); when it exits, the name is free.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Taken`] (with the holder) if another process has the name (a process
    /// of a host whose lease is over holds it no more: the name is freed and taken);
    /// [`RegistryError::NotLocal`], [`RegistryError::NoProc`], [`RegistryError::NoLease`],
    /// or a consensus failure.
    pub async fn register(
        &self,
        name: &str,
        pid: Pid,
        meta: impl Into<Vec<u8>>,
    ) -> Result<(), RegistryError> {
        let key = RegistryKey::new(name)?;
        let inner = &self.inner;
        if pid.node() != inner.runtime.node() {
            return Err(RegistryError::NotLocal(pid));
        }
        let until = inner.now() + inner.config.ask_timeout;
        let epoch = inner.wait_lease(until).await?;
        if !inner.runtime.is_alive(pid) {
            return Err(RegistryError::NoProc(pid));
        }
        let meta = meta.into();
        let spec = encode(&SpecRecord { meta: meta.clone(), ..SpecRecord::default() });
        let me = inner.me.clone();
        let mut freed = false;
        let token = loop {
            let (registered, _) = inner
                .store
                .update(&name_key(&key), None, |current: Option<&NameRecord>| {
                    Ok(match NameState::register(current, me.clone(), epoch, pid) {
                        Ok(record) => {
                            let token = record.token;
                            let record = NameState {
                                spec: spec.clone(),
                                restart: NameRestart::Temporary,
                                ..record
                            };
                            Step::Write(record, Ok(token))
                        }
                        Err(run) => Step::Keep(Err(run)),
                    })
                })
                .await?;
            let Run { host, epoch: held, pid: holder } = match registered {
                Ok(token) => break token,
                Err(run) => run,
            };
            // A run under a host's lease that is over holds the name no more (its process was
            // stopped when the lease ended): free it, as a resolve would, and try once more.
            let over = inner.known_over(&host, held)
                || (!inner.reachable(&host) && inner.epoch_over(&host, held).await?);
            if over && !freed {
                inner.clear_run(&key, &host, held).await?;
                freed = true;
                continue;
            }
            return Err(RegistryError::Taken { name: key.to_string(), holder, host });
        };
        inner.lock_state().hosted.insert(
            key.clone(),
            Hosted { token, pid: Some(pid), restart: NameRestart::Temporary, meta, lapsed: false },
        );
        tokio::spawn(crate::driver::host::watch_hosted(inner.clone(), key, token, pid));
        if inner.valid_epoch() != Some(epoch) {
            // The lease lapsed while the name was written (and before the lapse could see
            // this process): it may not run under the name.
            crate::driver::host::lapse(inner);
            return Err(RegistryError::NoLease);
        }
        Ok(())
    }

    /// Takes the name `name` from `pid`, which keeps running.
    ///
    /// # Errors
    ///
    /// [`RegistryError::NotRegistered`] if the name is not `pid`'s, or a consensus failure.
    pub async fn unregister(&self, name: &str, pid: Pid) -> Result<(), RegistryError> {
        let key = RegistryKey::new(name)?;
        let inner = &self.inner;
        let (done, _) = inner
            .store
            .update(&name_key(&key), None, |current: Option<&NameRecord>| {
                let held = current
                    .and_then(|state| state.run.as_ref())
                    .is_some_and(|run| run.pid == Some(pid));
                Ok(match current {
                    Some(state) if held => {
                        Step::Write(NameState { run: None, ..state.clone() }, Ok(()))
                    }
                    _ => {
                        Step::Keep(Err(RegistryError::NotRegistered { name: key.to_string(), pid }))
                    }
                })
            })
            .await?;
        done?;
        {
            let mut state = inner.lock_state();
            if state.hosted.get(&key).is_some_and(|hosted| hosted.pid == Some(pid)) {
                state.hosted.remove(&key);
            }
        }
        inner.forget(&key, pid);
        // The process lives on, so no monitor tells the nodes that cached it.
        inner.tell_members(Request::Forget { name: key, pid }).await;
        Ok(())
    }

    /// Paxtor's `whereis` on any destination: a pid (as it is), a name on this node, a name on
    /// another node (asked of that node), or a via-name such as a [`Name`] (resolved by its
    /// layer, which may start its process).
    ///
    /// # Errors
    ///
    /// [`RegistryError::Remote`] when the destination names nothing, or its node cannot be
    /// asked; a via-name's own failure.
    pub async fn resolve(&self, dest: impl Into<Dest>) -> Result<Pid, RegistryError> {
        let dest = dest.into();
        let inner = &self.inner;
        match &dest {
            Dest::NameOn { node, name } if *node != inner.runtime.node() => {
                let spec = inner.node.members().into_iter().find(|spec| spec.id() == *node);
                let Some(spec) = spec else {
                    return Err(RegistryError::Remote {
                        node: node.to_string(),
                        error: "not connected".into(),
                    });
                };
                let request = Request::Local { name: name.clone() };
                let asked = inner
                    .node
                    .rpc::<Request, Option<Reply>>(
                        &spec.name,
                        RPC,
                        &request,
                        inner.config.ask_timeout,
                    )
                    .await;
                match asked {
                    Ok(Some(Reply::Local(Some(pid)))) => Ok(pid),
                    Ok(_) => Err(RegistryError::Remote {
                        node: spec.name,
                        error: format!("no process is registered as {name:?}"),
                    }),
                    Err(error) => {
                        Err(RegistryError::Remote { node: spec.name, error: error.to_string() })
                    }
                }
            }
            _ => dest.resolve(&inner.runtime).await.map_err(|error| RegistryError::Remote {
                node: inner.me.clone(),
                error: error.to_string(),
            }),
        }
    }
}

impl Name {
    /// The name.
    pub fn key(&self) -> &str {
        self.inner.key.as_str()
    }

    /// The name's process, started (on the first candidate host that accepts it) if none
    /// runs. From the cache when this node has it, without consensus.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Timeout`] after [`RegistryConfig::resolve_timeout`](crate::RegistryConfig::resolve_timeout)
    /// (the name's host was lost and its lease has not ended yet, or no quorum);
    /// [`RegistryError::UnknownFactory`], [`RegistryError::BadArgs`] or
    /// [`RegistryError::StartFailed`] if the process could not start anywhere, or
    /// [`RegistryError::NoHost`] with every host's refusal.
    pub async fn whereis(&self) -> Result<Pid, RegistryError> {
        if let Some(pid) = self.inner.registry.look_up_cached(&self.inner.slot) {
            return Ok(pid);
        }
        let inner = &self.inner;
        let resolved =
            inner.registry.resolve(&inner.key, &inner.spec, inner.restart, &inner.slot, true);
        resolved.await?.ok_or(RegistryError::Timeout)
    }

    /// The name's process if one runs; never starts anything.
    ///
    /// # Errors
    ///
    /// A consensus failure on a cache miss.
    pub async fn lookup(&self) -> Result<Option<Pid>, RegistryError> {
        if let Some(pid) = self.inner.registry.look_up_cached(&self.inner.slot) {
            return Ok(Some(pid));
        }
        let inner = &self.inner;
        inner.registry.resolve(&inner.key, &inner.spec, inner.restart, &inner.slot, false).await
    }

    /// Whether a process runs under the name now (never starts one).
    ///
    /// # Errors
    ///
    /// As for [`Name::lookup`].
    pub async fn alive(&self) -> Result<bool, RegistryError> {
        Ok(self.lookup().await?.is_some())
    }

    /// The pid this node has cached for the name, if any (no waiting, no consensus).
    pub fn cached(&self) -> Option<Pid> {
        self.inner.slot.get()
    }

    /// The name as a destination for every send, call, monitor and link of Shoal: resolved
    /// (and started) on first use, from the cache after that, and resolved again once if the
    /// cached process has died.
    pub fn dest(&self) -> Dest {
        Dest::Via(Via::new(self.clone()))
    }

    /// The name as a typed destination for a process of behaviour `P`.
    pub fn typed<P: Process>(&self) -> Target<P> {
        self.dest().typed(&self.inner.registry.runtime)
    }

    /// Casts `message` to the name's process (started on first use).
    ///
    /// # Errors
    ///
    /// As the runtime's cast to a [`Dest`]; an unresolved name is
    /// [`SendError::Unresolved`] with the registry's reason.
    pub async fn cast<M>(&self, message: M) -> Result<(), SendError<M>>
    where
        M: Serialize + Send + 'static,
    {
        self.inner.registry.runtime.cast(self.dest(), message).await
    }

    /// Calls the name's process (started on first use) and waits up to `timeout`.
    ///
    /// # Errors
    ///
    /// As the runtime's call to a [`Dest`].
    pub async fn call<Q, R>(&self, request: Q, timeout: Duration) -> Result<R, CallError>
    where
        Q: Serialize + Send + 'static,
        R: DeserializeOwned + Send + 'static,
    {
        self.inner.registry.runtime.call(self.dest(), request, timeout).await
    }
}

impl From<&Name> for Dest {
    fn from(name: &Name) -> Self {
        name.dest()
    }
}

impl Resolve for Name {
    fn describe(&self) -> String {
        format!("registry name {:?}", self.inner.key.as_str())
    }

    fn cached(&self) -> Option<Pid> {
        self.inner.slot.get()
    }

    fn resolve(&self) -> Resolving<'_> {
        Box::pin(async move {
            self.whereis().await.map_err(|error| ResolveError::Failed {
                what: Resolve::describe(self),
                reason: error.to_string(),
            })
        })
    }

    fn forget(&self, pid: Pid) {
        self.inner.registry.forget(&self.inner.key, pid);
    }
}

impl Inner {
    /// A caller's lookup of a name in this node's cache, counted as a hit or a miss
    /// ([`Registry::stats`]).
    fn look_up_cached(&self, slot: &Slot) -> Option<Pid> {
        let cached = slot.get();
        match cached {
            Some(_) => self.counters.lookup_hits.add_one(),
            None => Counters::count(&self.counters.lookup_misses),
        }
        cached
    }

    /// Resolves `name` (see the module docs): its process, or `None` if none runs and `start`
    /// is false.
    pub(crate) async fn resolve(
        self: &Arc<Self>,
        name: &RegistryKey,
        spec: &[u8],
        restart: NameRestart,
        slot: &Slot,
        start: bool,
    ) -> Result<Option<Pid>, RegistryError> {
        if let Some(pid) = slot.get() {
            return Ok(Some(pid));
        }
        let until = self.now() + self.config.resolve_timeout;
        let key = name_key(name);
        let mut last_error = None;
        // A use looks first without reading: it takes the name for free and asks its
        // candidates at once, whose compare-and-set against "absent" either claims it (one
        // consensus round for a fresh name) or fails and shows the host what runs.
        let mut optimistic = start;
        'look: loop {
            if self.now() >= until {
                return Err(last_error.unwrap_or(RegistryError::Timeout));
            }
            if *self.stop.borrow() {
                return Err(RegistryError::Stopped);
            }
            let read = if std::mem::take(&mut optimistic) {
                Ok((None, None))
            } else {
                self.store.read::<NameRecord>(&key).await
            };
            let (seen, record) = match read {
                Ok((entry, record)) => (Some(entry), record),
                Err(error) if error.is_transient() => {
                    last_error = Some(error);
                    self.clock.sleep(self.config.retry_every).await;
                    continue;
                }
                Err(error) => return Err(error),
            };
            match record.and_then(|state| state.run) {
                Some(Run { host, epoch, .. }) if self.known_over(&host, epoch) => {
                    self.clear_run(name, &host, epoch).await?;
                }
                Some(Run { host, epoch, pid }) if !self.reachable(&host) => {
                    if self.epoch_over(&host, epoch).await? {
                        self.clear_run(name, &host, epoch).await?;
                        continue;
                    }
                    self.suspect(&host);
                    if let Some(pid) = pid {
                        // It runs past a partition under a live lease: the name's only process.
                        return Ok(Some(pid));
                    }
                    if !start {
                        return Ok(None);
                    }
                    self.clock.sleep(self.config.lease.renew_every / 4).await;
                }
                Some(Run { host, pid: Some(pid), .. }) if !self.stale(&host, pid) => {
                    self.cache(name, slot, pid);
                    return Ok(Some(pid));
                }
                Some(Run { host, .. }) => {
                    if !start {
                        return Ok(None);
                    }
                    // Starting, or a run of the host's earlier life: the host settles it.
                    match self.ask(&host, name, spec, restart, seen).await {
                        Ok(Hosting::Running(pid)) => {
                            self.cache(name, slot, pid);
                            return Ok(Some(pid));
                        }
                        Ok(Hosting::Elsewhere(_)) => {}
                        Err(error) => {
                            last_error = Some(error);
                            self.clock.sleep(self.config.retry_every).await;
                        }
                    }
                }
                None if !start => return Ok(None),
                None => {
                    let hosts = self.hosts();
                    let mut refusals = Vec::new();
                    let mut first_error = None;
                    let mut bad_input = true;
                    for host in candidates(name.as_str(), &hosts) {
                        match self.ask(host, name, spec, restart, seen.clone()).await {
                            Ok(Hosting::Running(pid)) => {
                                self.cache(name, slot, pid);
                                return Ok(Some(pid));
                            }
                            Ok(Hosting::Elsewhere(_)) => continue 'look,
                            Err(error) => {
                                bad_input &= error.is_bad_input();
                                refusals.push((host.clone(), error.to_string()));
                                first_error.get_or_insert(error);
                            }
                        }
                    }
                    // Bad input everywhere is reported as it is; anything else may pass (no
                    // quorum, contention, a host not ready): look again until the deadline.
                    if let Some(error) = first_error.filter(|_| bad_input) {
                        return Err(error);
                    }
                    last_error = Some(RegistryError::NoHost { name: name.to_string(), refusals });
                    self.clock.sleep(self.config.retry_every).await;
                }
            }
        }
    }

    /// Asks `host` (this node too) to host `name`.
    async fn ask(
        self: &Arc<Self>,
        host: &str,
        name: &RegistryKey,
        spec: &[u8],
        restart: NameRestart,
        seen: Option<Option<Entry>>,
    ) -> Result<Hosting, RegistryError> {
        if host == self.me {
            return self.host_start(name, spec, restart, seen).await;
        }
        let request = Request::Start { name: name.clone(), spec: spec.to_vec(), restart, seen };
        let asked = self
            .node
            .rpc::<Request, Option<Reply>>(host, RPC, &request, self.config.ask_timeout)
            .await;
        match asked {
            Ok(Some(Reply::Started(result))) => result.map_err(|error| error.into_error(host)),
            Ok(_) => Err(RegistryError::Remote {
                node: host.to_owned(),
                error: "the registry does not run there".into(),
            }),
            Err(error) => {
                Err(RegistryError::Remote { node: host.to_owned(), error: error.to_string() })
            }
        }
    }

    /// Whether `pid`, recorded as running on `host`, is of an earlier life of that node.
    pub(crate) fn stale(&self, host: &str, pid: Pid) -> bool {
        let current = if host == self.me {
            Some(self.runtime.incarnation())
        } else {
            self.node.node_spec(host).map(|spec| spec.incarnation)
        };
        current.is_some_and(|incarnation| incarnation != pid.incarnation())
    }

    /// Clears `name`'s run on `host` under its ended lease `epoch`.
    async fn clear_run(
        &self,
        name: &RegistryKey,
        host: &str,
        epoch: u64,
    ) -> Result<(), RegistryError> {
        self.store
            .update(&name_key(name), None, |current: Option<&NameRecord>| {
                Ok(match NameState::lease_ended(current, &host.to_owned(), epoch) {
                    Some(freed) => Step::Write(freed, ()),
                    None => Step::Keep(()),
                })
            })
            .await
            .map(|_| ())
    }
}
