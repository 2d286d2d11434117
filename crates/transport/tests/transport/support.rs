//! Shared helpers: nodes with short timeouts, waiting with a bound, test processes.

use std::future::Future;
use std::time::Duration;

use shoal_process::{Codec, Context, Process, ReplyTo};
use shoal_transport::{Node, NodeBuilder};

pub(crate) const SECRET: &str = "test secret";

/// Every wait in these tests is bounded by this.
pub(crate) const BOUND: Duration = Duration::from_secs(20);

/// A node builder with timeouts short enough for tests.
pub(crate) fn builder(name: &str) -> NodeBuilder {
    Node::builder(name, SECRET)
        .heartbeat(Duration::from_millis(100), Duration::from_millis(800))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300))
        .gossip_interval(Duration::from_millis(200))
}

pub(crate) async fn start(name: &str) -> Node {
    builder(name).start().await.expect("node starts")
}

/// Polls `check` until it holds, or panics after [`BOUND`] with `what`.
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + BOUND;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `n` nodes joined into one cluster, waited until full mesh.
pub(crate) async fn cluster(names: &[&str]) -> Vec<Node> {
    let mut nodes = Vec::new();
    for name in names {
        nodes.push(start(name).await);
    }
    for node in &nodes[1..] {
        node.join(nodes[0].listen_addr()).await.expect("join");
    }
    let expected = names.len() - 1;
    eventually("full mesh", || {
        let nodes = nodes.clone();
        async move { nodes.iter().all(|node| node.nodes().len() == expected) }
    })
    .await;
    nodes
}

/// Answers calls with the request, upper-cased; records casts.
pub(crate) struct Echo;

impl Process for Echo {
    type Message = String;
    type Call = String;
    type Reply = String;

    async fn handle_cast(&mut self, _: String, _: &mut Context<Self>) {}

    async fn handle_call(&mut self, text: String, reply: ReplyTo<String>, _: &mut Context<Self>) {
        reply.send(text.to_uppercase());
    }

    fn codec() -> Option<Codec<Self>> {
        Some(Codec::msgpack())
    }
}
