//! RPC handlers registered by name on a node ([`crate::Node::register_rpc`]), and how a
//! node-level request from a peer is served: a handler run (with an optional follow-up handler
//! that runs right after, as Distribunator's `node_rpc` callback does), a spawn from a factory,
//! or an `is_alive` check.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use shoal_process::codec::encode;
use shoal_process::{Runtime, SpawnOptions};

use crate::net::BoxFuture;
use crate::peer::{lock, pid_key, task_key};
use crate::wire::{Failure, Request};

/// A registered RPC handler: encoded arguments in, encoded result (or an error message) out.
pub(crate) type RpcHandler =
    Arc<dyn Fn(Bytes) -> BoxFuture<'static, Result<Bytes, String>> + Send + Sync>;

/// The handlers of this node, by name.
#[derive(Default)]
pub(crate) struct RpcHandlers {
    handlers: RwLock<HashMap<String, RpcHandler>>,
}

impl RpcHandlers {
    /// Registers `handler` as `name`; `false` (the old one kept) if the name is taken.
    pub(crate) fn register(&self, name: &str, handler: RpcHandler) -> bool {
        let mut handlers = self.handlers.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if handlers.contains_key(name) {
            return false;
        }
        handlers.insert(name.to_owned(), handler);
        true
    }

    /// Removes the handler `name`; `false` if there was none.
    pub(crate) fn unregister(&self, name: &str) -> bool {
        let mut handlers = self.handlers.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        handlers.remove(name).is_some()
    }

    fn get(&self, name: &str) -> Option<RpcHandler> {
        self.handlers.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(name).cloned()
    }
}

/// Serves one node-level request and gives `answer` its outcome, with the ordering key of
/// whoever the answer is from (the process spawned, or the handler's task), so that it travels
/// in order with what that one sends. A spawn is answered before the new process runs: the
/// answer is its first word, and anything it sends comes after.
pub(crate) async fn serve(
    runtime: &Runtime,
    handlers: &RpcHandlers,
    request: Request,
    answer: impl FnOnce(Result<Bytes, Failure>, Option<u64>) + Send + 'static,
) {
    match request {
        Request::IsAlive(pid) => {
            answer(Ok(encode(&runtime.is_alive(pid)).unwrap_or_default()), None)
        }
        Request::Spawn { factory, args } => {
            let answer = Arc::new(Mutex::new(Some(answer)));
            let first_word = answer.clone();
            let options = SpawnOptions::new().before_run(move |pid| {
                if let Some(answer) = lock(&first_word).take() {
                    let encoded = encode(&pid).map_err(|error| Failure::Spawn(error.to_string()));
                    answer(encoded, Some(pid_key(pid)));
                }
            });
            if let Err(error) = runtime.spawn_factory(&factory, &args, options)
                && let Some(answer) = lock(&answer).take()
            {
                answer(Err(Failure::Spawn(error.to_string())), None);
            }
        }
        Request::Rpc { name, args, then } => {
            let (result, from_key) = match run_handler(handlers, &name, args).await {
                Ok((result, key)) => (Ok(result), Some(key)),
                Err(failure) => (Err(failure), None),
            };
            if let (Ok(result), Some(then)) = (&result, then)
                && let Err(failure) = run_handler(handlers, &then, result.clone()).await
            {
                tracing::warn!(handler = %then, %failure, "the follow-up RPC handler failed");
            }
            answer(result, from_key);
        }
    }
}

/// Runs a handler in its own task, so a panic in it is reported, not spread; returns its
/// result and the ordering key of its task.
async fn run_handler(
    handlers: &RpcHandlers,
    name: &str,
    args: Bytes,
) -> Result<(Bytes, u64), Failure> {
    let handler = handlers.get(name).ok_or_else(|| Failure::UnknownHandler(name.to_owned()))?;
    let task = tokio::spawn(handler(args));
    let key = task_key(task.id());
    match task.await {
        Ok(result) => result.map(|bytes| (bytes, key)).map_err(Failure::Handler),
        Err(error) if error.is_panic() => {
            let panic = error.into_panic();
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            Err(Failure::Handler(format!("panicked: {message}")))
        }
        Err(_) => Err(Failure::Handler("cancelled".into())),
    }
}
