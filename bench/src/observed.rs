//! What the metrics cost: `local_send_msgs_per_s` and `remote_send_msgs_per_s` again, with
//! the measuring node run as a [`shoal::Node`] whose [`Metrics`] sampler publishes every
//! figure to a Prometheus recorder (`shoal::metrics`, features `metrics` and `prometheus`).
//!
//! The sampler ticks every [`TICK`], a hundred times as often as its default, so that its
//! cost shows if it has one. Compared with the plain metrics in one `cargo xtask bench` run,
//! the difference is what a node with metrics on pays on those paths (the counters the layers
//! keep are always on; the sampler and the recorder are what turning metrics on adds).

use std::time::Duration;

use anyhow::Context as _;
use shoal::metrics::{Metrics, MetricsConfig, Prometheus, prometheus_recorder};
use shoal_transport::NodeBuilder;

use crate::harness::key;

/// How often the sampler reads and publishes the node's figures.
const TICK: Duration = Duration::from_millis(10);

/// A node with its metrics sampled, and the recorder they go to.
pub(crate) struct Observed {
    /// The node whose runtime and transport the metric uses.
    pub(crate) node: shoal::Node,
    metrics: Metrics,
    prometheus: Prometheus,
}

impl Observed {
    /// Starts node `name` (the transport alone: every other layer turned off),
    /// with `settings` applied to its transport, installs the Prometheus recorder and starts
    /// the sampler.
    pub(crate) async fn start(
        name: &str,
        settings: impl FnOnce(NodeBuilder) -> NodeBuilder + Send + 'static,
    ) -> anyhow::Result<Observed> {
        let prometheus = prometheus_recorder().context("installing the Prometheus recorder")?;
        let node = shoal::Node::builder(name)
            .key(key())
            .transport(settings)
            .paxos(None)
            .broadcast(None)
            .groups(None)
            .start()
            .await
            .context("starting the observed node")?;
        let config = MetricsConfig { every: TICK, ..MetricsConfig::default() };
        let metrics = Metrics::start(&node, config);
        Ok(Observed { node, metrics, prometheus })
    }

    /// Stops the sampler and the node; the size of the last render goes to stderr, as proof
    /// that the figures were published.
    pub(crate) async fn stop(self) {
        self.metrics.stop().await;
        eprintln!("metrics: {} bytes of Prometheus text", self.prometheus.render().len());
        self.node.shutdown().await;
    }
}

/// `local_send_msgs_per_s_metrics`: `local_send_msgs_per_s` on an observed node's runtime.
pub(crate) fn local_send_msgs_per_s() -> anyhow::Result<f64> {
    crate::harness::on_workers(async {
        let observed = Observed::start("main", |builder| builder).await?;
        let value = crate::local::send_casts(observed.node.runtime()).await;
        observed.stop().await;
        value
    })
}
