//! Shoal: distributed processes for Rust — the facade.
//!
//! Re-exports every Shoal crate under one name, each behind a cargo feature that is on by
//! default, plus a [`prelude`]. Today that is the local process runtime
//! ([`process`], always present) and supervisors ([`supervisor`], feature `supervisor`); the
//! transport, broadcast, consensus, registry and hub crates join as they land, together with
//! a `Node` that starts them all.
//!
//! ```
//! use shoal::prelude::*;
//!
//! struct Echo;
//!
//! impl Process for Echo {
//!     type Message = ();
//!     type Call = String;
//!     type Reply = String;
//!
//!     async fn handle_cast(&mut self, _: (), _: &mut Context<Self>) {}
//!
//!     async fn handle_call(&mut self, text: String, reply: ReplyTo<String>, _: &mut Context<Self>) {
//!         reply.send(text);
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::new()?;
//! let echo = runtime.spawn(Echo);
//! assert_eq!(echo.call("hello".to_owned()).await?, "hello");
//! # Ok(()) }
//! ```

pub use shoal_process as process;
#[cfg(feature = "supervisor")]
pub use shoal_supervisor as supervisor;

/// The names most programs need, for a glob import.
pub mod prelude {
    pub use shoal_process::{
        Addr, CallError, ChildSpec, Context, ExitReason, MailboxConfig, Overflow, Pid, Process,
        Ref, ReplyTo, Restart, Runtime, SendError, Shutdown, Signal, SpawnOptions,
    };
    #[cfg(feature = "supervisor")]
    pub use shoal_supervisor::{
        Child, DynamicSupervisorRef, DynamicSupervisorSpec, Intensity, Strategy, SupervisorRef,
        SupervisorSpec,
    };
}
