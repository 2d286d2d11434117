//! The Prometheus recorder (feature `prometheus`): `metrics-exporter-prometheus`'s recorder
//! alone, without its HTTP listener or push gateway; a web server of the program's serves
//! [`Prometheus::render`] (the dashboard's `/metrics`, for one).

#[cfg(feature = "paxos")]
use metrics_exporter_prometheus::Matcher;
use metrics_exporter_prometheus::{
    BuildError, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use thiserror::Error;

/// Why [`prometheus_recorder`] installed nothing, or [`Prometheus::build`] built nothing.
#[derive(Debug, Error)]
pub enum PrometheusError {
    /// The process has a global recorder already (the `metrics` facade takes one, once), or
    /// the exporter refused its configuration. Nothing was installed.
    #[error("the Prometheus recorder could not be installed: {0}")]
    Install(#[from] BuildError),
}

/// A handle to the installed Prometheus recorder (cheap to clone).
#[derive(Clone, Debug)]
pub struct Prometheus {
    handle: PrometheusHandle,
}

impl Prometheus {
    /// Everything recorded, in Prometheus's text exposition format (version 0.0.4): the body
    /// of a `/metrics` response. Runs the recorder's upkeep first (which this module has no
    /// task for: a render is when it matters).
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }

    /// Builds the recorder [`prometheus_recorder`] installs, without installing it, for a
    /// program that composes recorders (metrics-util's `Fanout`, say) and installs the result
    /// itself; the handle renders what this recorder is given.
    ///
    /// # Errors
    ///
    /// [`PrometheusError::Install`] if the exporter refuses the configuration.
    pub fn build() -> Result<(Prometheus, PrometheusRecorder), PrometheusError> {
        let builder = PrometheusBuilder::new();
        #[cfg(feature = "paxos")]
        let builder = builder.set_buckets_for_metric(
            Matcher::Full(super::PAXOS_LATENCY.to_owned()),
            &super::paxos_latency_buckets(),
        )?;
        let recorder = builder.build_recorder();
        Ok((Prometheus { handle: recorder.handle() }, recorder))
    }

    /// The exporter's own handle, for what it offers besides.
    pub fn handle(&self) -> &PrometheusHandle {
        &self.handle
    }
}

/// Installs a Prometheus recorder as the process's global `metrics` recorder, with the Paxos
/// latency histogram's buckets set to Paxos's own (so it renders as a true histogram with
/// exact bucket counts); the samplers of every [`Metrics`](super::Metrics) of the process
/// publish to it.
///
/// # Errors
///
/// [`PrometheusError::Install`] if a recorder is installed already.
pub fn prometheus_recorder() -> Result<Prometheus, PrometheusError> {
    let (prometheus, recorder) = Prometheus::build()?;
    ::metrics::set_global_recorder(recorder).map_err(BuildError::from)?;
    Ok(prometheus)
}

#[cfg(all(test, feature = "paxos"))]
mod tests {
    use std::time::Duration;

    use super::prometheus_recorder;
    use crate::metrics::{Metrics, MetricsConfig};

    /// The recorder renders what a node's sampler publishes in the text format, the Paxos
    /// latency as a true histogram with Paxos's buckets; a second install is refused, typed.
    /// (The only test of this binary that installs a recorder: a process has one.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn renders_a_nodes_figures_with_the_paxos_buckets() {
        let prometheus = prometheus_recorder().expect("the first recorder of this process");
        assert!(prometheus_recorder().is_err(), "a second is refused");
        let node = crate::Node::start("prom").await.expect("starts");
        node.ready().await;
        let paxos = node.paxos().expect("paxos runs");
        paxos.put("k", b"v".to_vec()).await.expect("written");
        let config = MetricsConfig { every: Duration::from_millis(20), ..MetricsConfig::default() };
        let metrics = Metrics::start(&node, config);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let text = loop {
            let text = prometheus.render();
            if text.contains("shoal_paxos_operation_duration_seconds_count") {
                break text;
            }
            assert!(tokio::time::Instant::now() < deadline, "not rendered: {text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(text.contains("# TYPE shoal_paxos_operation_duration_seconds histogram"), "{text}");
        assert!(
            text.contains(
                "shoal_paxos_operation_duration_seconds_bucket{node=\"prom\",le=\"0.0005\"}"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE shoal_paxos_accept_rounds_total counter"), "{text}");
        assert!(text.contains("# HELP shoal_processes Processes alive."), "{text}");
        metrics.stop().await;
        node.shutdown().await;
    }
}
