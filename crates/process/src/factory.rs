//! Process factories: behaviours registered under a stable name, built from serialised start
//! arguments. Closures cannot cross nodes; a factory name and encoded arguments can, so every
//! layer that starts processes elsewhere (remote spawn, supervisors, the registry, the hub)
//! starts them from a factory.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, PoisonError, RwLock};

use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use crate::codec::decode;
use crate::error::valid_name;
use crate::run::InitAck;
use crate::{
    ExitReason, FactoryError, Pid, Process, Runtime, SpawnError, SpawnOptions, StartError,
};

type Build =
    dyn Fn(&Runtime, &[u8], SpawnOptions, Option<InitAck>) -> Result<Pid, SpawnError> + Send + Sync;

/// The factories registered on one runtime.
#[derive(Default)]
pub(crate) struct Factories(RwLock<HashMap<String, Arc<Build>>>);

impl Factories {
    fn get(&self, name: &str) -> Option<Arc<Build>> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).get(name).cloned()
    }
}

impl Runtime {
    /// Registers `build` as the factory `name`: it makes a `P` from start arguments of type
    /// `A`, which arrive msgpack-encoded (see [`crate::codec::encode`]).
    ///
    /// ```
    /// # use shoal_process::{Context, Process, Runtime, SpawnOptions, codec};
    /// struct Greeter(String);
    /// impl Process for Greeter {
    ///     type Message = ();
    ///     type Call = ();
    ///     type Reply = String;
    ///     async fn handle_cast(&mut self, _: (), _: &mut Context<Self>) {}
    ///     async fn handle_call(&mut self, _: (), reply: shoal_process::ReplyTo<String>, _: &mut Context<Self>) {
    ///         reply.send(format!("hello, {}", self.0));
    ///     }
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let runtime = Runtime::new()?;
    /// runtime.register_factory("greeter", |name: String| Greeter(name))?;
    /// let args = codec::encode("shoal")?;
    /// let pid = runtime.start_factory("greeter", &args, SpawnOptions::new()).await?;
    /// let greeting: String = runtime.call(pid, (), std::time::Duration::from_secs(1)).await?;
    /// assert_eq!(greeting, "hello, shoal");
    /// # Ok(()) }
    /// ```
    pub fn register_factory<A, P, F>(&self, name: &str, build: F) -> Result<(), FactoryError>
    where
        A: DeserializeOwned + 'static,
        P: Process,
        F: Fn(A) -> P + Send + Sync + 'static,
    {
        if !valid_name(name) {
            return Err(FactoryError::InvalidName(name.to_owned()));
        }
        let factory = name.to_owned();
        let erased: Arc<Build> = Arc::new(move |runtime, args, options, ack| {
            let args = decode::<A>(args)
                .map_err(|error| SpawnError::BadArgs { factory: factory.clone(), error })?;
            // A build that panics (a configuration that does not load, say) is a failed spawn
            // for whoever asked, a supervisor or a transport serving a remote spawn; it must
            // not take that caller down.
            let process = catch_unwind(AssertUnwindSafe(|| build(args)))
                .map_err(|payload| SpawnError::build_panicked(payload.as_ref()))?;
            runtime.spawn_inner(process, options, ack).map(|addr| addr.pid())
        });
        let mut factories = self.factories().0.write().unwrap_or_else(PoisonError::into_inner);
        match factories.entry(name.to_owned()) {
            Entry::Occupied(_) => Err(FactoryError::Taken(name.to_owned())),
            Entry::Vacant(slot) => {
                slot.insert(erased);
                Ok(())
            }
        }
    }

    /// Spawns a process from the factory `factory` with encoded start arguments `args`.
    pub fn spawn_factory(
        &self,
        factory: &str,
        args: &[u8],
        options: SpawnOptions,
    ) -> Result<Pid, SpawnError> {
        let build = self
            .factories()
            .get(factory)
            .ok_or_else(|| SpawnError::UnknownFactory(factory.to_owned()))?;
        build(self, args, options, None)
    }

    /// Like [`Runtime::spawn_factory`], then waits until the process's `init` has succeeded.
    pub async fn start_factory(
        &self,
        factory: &str,
        args: &[u8],
        options: SpawnOptions,
    ) -> Result<Pid, StartError> {
        let build = self
            .factories()
            .get(factory)
            .ok_or_else(|| SpawnError::UnknownFactory(factory.to_owned()))?;
        let (ack, started) = oneshot::channel();
        let pid = build(self, args, options, Some(ack))?;
        match started.await {
            Ok(Ok(())) => Ok(pid),
            Ok(Err(reason)) => Err(StartError::Init(reason)),
            Err(_) => Err(StartError::Init(ExitReason::Killed)),
        }
    }

    /// The names of the registered factories, sorted.
    pub fn factory_names(&self) -> Vec<String> {
        let factories = self.factories().0.read().unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<String> = factories.keys().cloned().collect();
        names.sort();
        names
    }
}
