//! What the metrics cost: `local_send_msgs_per_s` and `remote_send_msgs_per_s` again, with
//! the measuring node run as a [`shoal::Node`] (the `_node` metrics), and as one whose
//! [`Metrics`] sampler publishes every figure to a Prometheus recorder (`shoal::metrics`,
//! features `metrics` and `prometheus`; the `_metrics` metrics).
//!
//! The sampler ticks as by default (every second), or every `$SHOAL_BENCH_TICK_MS`
//! milliseconds when that is set (a hundred times as often, 10, shows its cost if it has
//! one). `_metrics` against `_node`, in one `cargo xtask bench` run, is what turning metrics
//! on costs on those paths: the sampler and the recorder (the counters the layers keep are
//! always on, in both).

use std::time::Duration;

use anyhow::Context as _;
use shoal::metrics::{Metrics, MetricsConfig, Prometheus, prometheus_recorder};
use shoal_transport::NodeBuilder;

use crate::harness::key;

/// How long a node is left before its metric's clock starts.
const SETTLE: Duration = Duration::from_millis(100);

/// How often the sampler reads and publishes the node's figures: `$SHOAL_BENCH_TICK_MS`, or
/// the sampler's default.
fn tick() -> anyhow::Result<Duration> {
    match std::env::var("SHOAL_BENCH_TICK_MS") {
        Ok(millis) => {
            let millis = millis.parse().context("$SHOAL_BENCH_TICK_MS is not a number")?;
            Ok(Duration::from_millis(millis))
        }
        Err(_) => Ok(MetricsConfig::default().every),
    }
}

/// How the measuring node of a metric runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Main {
    /// A bare `shoal_process::Runtime` or `shoal_transport::Node`, as the plain metrics.
    Bare,
    /// A [`shoal::Node`], its metrics not sampled.
    Node,
    /// A [`shoal::Node`] whose metrics are sampled into a Prometheus recorder.
    Sampled,
}

/// A [`shoal::Node`], its metrics sampled or not.
pub(crate) struct Observed {
    /// The node whose runtime and transport the metric uses.
    pub(crate) node: shoal::Node,
    sampler: Option<(Metrics, Prometheus)>,
}

impl Observed {
    /// Starts node `name` (the transport alone: every other layer turned off), with
    /// `settings` applied to its transport; when `sampled`, installs the Prometheus recorder
    /// and starts the sampler.
    pub(crate) async fn start(
        name: &str,
        settings: impl FnOnce(NodeBuilder) -> NodeBuilder + Send + 'static,
        sampled: bool,
    ) -> anyhow::Result<Observed> {
        let prometheus = match sampled {
            true => Some(prometheus_recorder().context("installing the Prometheus recorder")?),
            false => None,
        };
        let node = shoal::Node::builder(name)
            .key(key())
            .transport(settings)
            .paxos(None)
            .broadcast(None)
            .groups(None)
            .start()
            .await
            .context("starting the observed node")?;
        let every = tick()?;
        let sampler = prometheus.map(|prometheus| {
            let config = MetricsConfig { every, ..MetricsConfig::default() };
            (Metrics::start(&node, config), prometheus)
        });
        // Out of the measurement's way: the node's start, and the sampler's first sample,
        // which it takes at once.
        tokio::time::sleep(SETTLE).await;
        Ok(Observed { node, sampler })
    }

    /// Stops the sampler and the node; the size of the last render goes to stderr, as proof
    /// that the figures were published.
    pub(crate) async fn stop(self) {
        if let Some((metrics, prometheus)) = self.sampler {
            metrics.stop().await;
            eprintln!("metrics: {} bytes of Prometheus text", prometheus.render().len());
        }
        self.node.shutdown().await;
    }
}

/// `local_send_msgs_per_s_node` and `local_send_msgs_per_s_metrics`:
/// `local_send_msgs_per_s` on a [`shoal::Node`]'s runtime, its metrics sampled when `main`
/// is [`Main::Sampled`].
pub(crate) fn local_send_msgs_per_s(main: Main) -> anyhow::Result<f64> {
    crate::harness::on_workers(async move {
        let observed = Observed::start("main", |builder| builder, main == Main::Sampled).await?;
        let value = crate::local::send_casts(observed.node.runtime()).await;
        observed.stop().await;
        value
    })
}
