//! A distributed supervisor run under a local supervisor
//! ([`DistributedSupervisor::child_spec`]): a small process that starts the supervisor's hub
//! on this node in `init`, hands out its handle, and stops the hub in `terminate`.

use std::convert::Infallible;

use shoal_process::{Context, ExitReason, Process, ReplyTo, Runtime, Shutdown};
use shoal_transport::Node;

use super::{DistributedSupervisor, DistributedSupervisorConfig};
use crate::{Child, ChildKind};

impl DistributedSupervisor {
    /// A child for a local supervisor ([`crate::SupervisorRef`],
    /// [`crate::DynamicSupervisorRef`]) that runs distributed supervisor `name` on `node`:
    /// started with its local supervisor, stopped with it (its children then start on the
    /// supervisor's other nodes, as after [`DistributedSupervisor::stop`]). The handle is
    /// [`DistributedSupervisor::find`].
    ///
    /// The child's id is `name`; it is a permanent child of kind
    /// [`ChildKind::Supervisor`], given as long as it needs to stop ([`Shutdown::Infinity`]:
    /// the hub bounds its own hand-over). A start that fails (the supervisor runs on this
    /// node already, say, or `name` is too long for the local name `shoal.dsup.NAME` that
    /// [`DistributedSupervisor::find`] looks up, 255 bytes at most) is a start error of the
    /// child.
    pub fn child_spec(node: &Node, name: &str, config: DistributedSupervisorConfig) -> Child {
        let (node, name) = (node.clone(), name.to_owned());
        Child::new(name.clone(), move || Holder {
            node: node.clone(),
            name: name.clone(),
            config: config.clone(),
            running: None,
        })
        .kind(ChildKind::Supervisor)
        .shutdown(Shutdown::Infinity)
    }

    /// The distributed supervisor `name` that runs on this node under a local supervisor
    /// ([`DistributedSupervisor::child_spec`]), if it runs now.
    pub async fn find(runtime: &Runtime, name: &str) -> Option<DistributedSupervisor> {
        let pid = runtime.whereis(&local_name(name))?;
        runtime.addr::<Holder>(pid)?.call(()).await.ok().flatten()
    }
}

/// The local name of the process that holds distributed supervisor `name`.
fn local_name(name: &str) -> String {
    format!("shoal.dsup.{name}")
}

/// The process that holds a distributed supervisor for a local supervisor.
struct Holder {
    node: Node,
    name: String,
    config: DistributedSupervisorConfig,
    running: Option<DistributedSupervisor>,
}

impl Process for Holder {
    type Message = Infallible;
    type Call = ();
    type Reply = Option<DistributedSupervisor>;

    async fn init(&mut self, ctx: &mut Context<Self>) -> Result<(), ExitReason> {
        let started = DistributedSupervisor::start(&self.node, &self.name, self.config.clone());
        let supervisor = started.await.map_err(|error| ExitReason::custom(error.to_string()))?;
        if let Err(error) = ctx.runtime().register(&local_name(&self.name), ctx.pid()) {
            supervisor.stop().await;
            return Err(ExitReason::custom(error.to_string()));
        }
        self.running = Some(supervisor);
        Ok(())
    }

    async fn handle_cast(&mut self, message: Infallible, _: &mut Context<Self>) {
        match message {}
    }

    async fn handle_call(
        &mut self,
        (): (),
        reply: ReplyTo<Option<DistributedSupervisor>>,
        _: &mut Context<Self>,
    ) {
        reply.send(self.running.clone());
    }

    async fn terminate(&mut self, _: &ExitReason, _: &mut Context<Self>) {
        if let Some(supervisor) = self.running.take() {
            supervisor.stop().await;
        }
    }
}
