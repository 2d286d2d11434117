//! `shoal::metrics` (feature `metrics`): a sampler on a real node (TCP on loopback, port 0)
//! publishes every layer's figures through the `metrics` facade, read back by metrics-util's
//! debugging recorder: the names and their kinds, the labels (only `node`, `peer`, `hub`,
//! `reason`), and values that follow what the test did.
//!
//! A process has one global recorder, and `cargo test` runs every test of the binary in one:
//! the tests here share one ([`recorders`]), the debugging recorder and, with the feature
//! `prometheus`, the Prometheus one, behind metrics-util's fanout. Each test reads only the
//! series of its own nodes.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::layers::FanoutBuilder;
use shoal::hub::HubConfig;
use shoal::metrics::{Metrics, MetricsConfig};
use shoal::prelude::*;
use shoal::registry::LockOptions;

use super::node::{BOUND, Echo, builder, within};

/// The recorders the process's global one forwards to.
struct Recorders {
    debugging: Snapshotter,
    #[cfg(feature = "prometheus")]
    prometheus: shoal::metrics::Prometheus,
}

/// The process's global recorder, installed by the first test that asks.
fn recorders() -> &'static Recorders {
    static RECORDERS: OnceLock<Recorders> = OnceLock::new();
    RECORDERS.get_or_init(|| {
        let debugging = DebuggingRecorder::new();
        let snapshotter = debugging.snapshotter();
        let fanout = FanoutBuilder::default().add_recorder(debugging);
        #[cfg(feature = "prometheus")]
        let (prometheus, recorder) = shoal::metrics::Prometheus::build().expect("builds");
        #[cfg(feature = "prometheus")]
        let fanout = fanout.add_recorder(recorder);
        ::metrics::set_global_recorder(fanout.build()).expect("the only recorder of the process");
        Recorders {
            debugging: snapshotter,
            #[cfg(feature = "prometheus")]
            prometheus,
        }
    })
}

/// One series: its name and labels (sorted).
type Series = (String, Vec<(String, String)>);

fn labels_of(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect()
}

/// What the recorder holds, by series, accumulated over snapshots: the debugging recorder's
/// snapshot takes what it returns (counters and gauges to 0 until the sampler's next tick sets
/// them, histograms emptied), so counters and gauges keep the largest value seen (the sampler
/// publishes counters as absolute values, and the gauges checked here only rise) and
/// histograms every sample.
#[derive(Default)]
struct Seen(BTreeMap<Series, (MetricKind, DebugValue)>);

impl Seen {
    fn take(&mut self, snapshotter: &Snapshotter) {
        for (key, _unit, _help, value) in snapshotter.snapshot().into_vec() {
            let (kind, key) = key.into_parts();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|label| (label.key().to_owned(), label.value().to_owned()))
                .collect();
            labels.sort();
            let series = (key.name().to_owned(), labels);
            match (self.0.get_mut(&series), value) {
                (Some((_, DebugValue::Counter(seen))), DebugValue::Counter(now)) => {
                    *seen = (*seen).max(now);
                }
                (Some((_, DebugValue::Gauge(seen))), DebugValue::Gauge(now)) => {
                    *seen = (*seen).max(now);
                }
                (Some((_, DebugValue::Histogram(seen))), DebugValue::Histogram(now)) => {
                    seen.extend(now);
                }
                (_, value) => {
                    self.0.insert(series, (kind, value));
                }
            }
        }
    }

    fn get(&self, name: &str, on: &[(&str, &str)]) -> Option<&(MetricKind, DebugValue)> {
        self.0.get(&(name.to_owned(), labels_of(on)))
    }

    fn counter(&self, name: &str, on: &[(&str, &str)]) -> u64 {
        match self.get(name, on) {
            Some((MetricKind::Counter, DebugValue::Counter(value))) => *value,
            other => panic!("no counter {name} {on:?}: {other:?}"),
        }
    }

    fn gauge(&self, name: &str, on: &[(&str, &str)]) -> f64 {
        match self.get(name, on) {
            Some((MetricKind::Gauge, DebugValue::Gauge(value))) => value.into_inner(),
            other => panic!("no gauge {name} {on:?}: {other:?}"),
        }
    }

    fn gauge_is(&self, name: &str, on: &[(&str, &str)], value: f64) -> bool {
        self.get(name, on).map(|(_, seen)| seen) == Some(&DebugValue::Gauge(value.into()))
    }
}

/// Rule (issue 22 point 1): the sampler publishes each layer's snapshot under the documented
/// names, Prometheus's conventions hold (prefix, `_total` on counters and only there), no label
/// but `node`, `peer`, `hub` and `reason` is used, and the values follow the activity: a name
/// registered and looked up, Paxos writes (rounds, decisions, the latency histogram), a group,
/// a lock, traffic to the peer, the hub's children.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sampler_publishes_every_layer_under_prometheus_names() {
    let snapshotter = &recorders().debugging;

    let key = ClusterKey::generate();
    let a = within(builder("ma", &key).hub("jobs", HubConfig::default()).start())
        .await
        .expect("ma starts");
    within(a.ready()).await;
    let b = within(builder("mb", &key).join(a.listen_addr()).start()).await.expect("mb joins");
    within(b.ready()).await;
    let config = MetricsConfig {
        every: Duration::from_millis(50),
        hubs: vec!["jobs".to_owned(), "not-running".to_owned()],
        supervisors: vec!["workers".to_owned()],
    };
    let metrics = Metrics::start(&a, config);
    within(a.start_supervisor("workers", Default::default())).await.expect("supervisor starts");

    let echo = a.runtime().spawn(Echo);
    let registry = a.registry().expect("the registry runs");
    within(registry.register("svc", echo.pid(), Vec::new())).await.expect("registered");
    for _ in 0..3 {
        assert_eq!(within(registry.lookup("svc")).await.expect("looked up"), Some(echo.pid()));
    }
    let lock = within(registry.lock("nightly", LockOptions::default())).await.expect("lock");
    assert!(matches!(lock, LockResult::Acquired(_)), "{lock:?}");
    a.groups().expect("groups run").join("room", echo.pid()).expect("joined");
    let paxos = a.paxos().expect("paxos runs");
    for i in 0..5u8 {
        within(paxos.put("metrics-test", vec![i])).await.expect("written");
    }

    let node = [("node", "ma")];
    let jobs = [("hub", "jobs"), ("node", "ma")];
    let workers = [("hub", "dsup/workers"), ("node", "ma")];
    let deadline = tokio::time::Instant::now() + BOUND;
    let mut seen = Seen::default();
    loop {
        seen.take(snapshotter);
        let fast = seen.get("shoal_paxos_fast_decisions_total", &node);
        let ready = seen.get("shoal_hub_children", &jobs).is_some()
            && seen.get("shoal_hub_children", &workers).is_some()
            && seen.gauge_is("shoal_registry_names", &node, 1.0)
            && seen.gauge_is("shoal_groups", &node, 1.0)
            && matches!(fast, Some((_, DebugValue::Counter(n))) if *n >= 4);
        if ready {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not published within {BOUND:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Two more ticks, so that every series of the latest is in.
    tokio::time::sleep(Duration::from_millis(120)).await;
    seen.take(snapshotter);

    // Conventions, over every series of this test's node (another test's may be there too).
    let user_data = ["svc", "nightly", "room", "metrics-test", "not-running"];
    let ours = seen.0.iter().filter(|((_, labels), _)| labels.contains(&labels_of(&node)[0]));
    for ((name, labels), (kind, _)) in ours {
        assert!(name.starts_with("shoal_"), "{name}");
        assert_eq!(*kind == MetricKind::Counter, name.ends_with("_total"), "{name}: {kind:?}");
        for (label, value) in labels {
            assert!(["node", "peer", "hub", "reason"].contains(&label.as_str()), "{name}: {label}");
            assert!(!user_data.contains(&value.as_str()), "{name}: {label}={value}");
        }
    }

    // Processes.
    assert!(seen.gauge("shoal_processes", &node) >= 1.0);
    assert!(seen.counter("shoal_processes_spawned_total", &node) >= 1);
    seen.counter("shoal_process_exits_total", &[("node", "ma"), ("reason", "normal")]);
    seen.counter("shoal_process_restarts_total", &node);
    seen.gauge("shoal_mailboxes_over_threshold", &node);
    // The peer.
    let peer = [("node", "ma"), ("peer", "mb")];
    assert!(seen.counter("shoal_peer_sent_bytes_total", &peer) > 0);
    assert!(seen.counter("shoal_peer_received_frames_total", &peer) > 0);
    seen.gauge("shoal_peer_queued_messages", &peer);
    // Paxos: the first write prepared, the next four took the fast path.
    assert!(seen.counter("shoal_paxos_prepare_rounds_total", &node) >= 1);
    assert!(seen.counter("shoal_paxos_accept_rounds_total", &node) >= 5);
    let ratio = seen.gauge("shoal_paxos_fast_path_ratio", &node);
    assert!(ratio > 0.0 && ratio < 1.0, "{ratio}");
    let latency = seen.get("shoal_paxos_operation_duration_seconds", &node);
    let Some((MetricKind::Histogram, DebugValue::Histogram(samples))) = latency else {
        panic!("no latency histogram: {latency:?}");
    };
    // At least the five writes, each recorded at its bucket's bound (0.5 ms to 5 s).
    assert!(samples.len() >= 5, "{samples:?}");
    assert!(samples.iter().all(|s| (0.0005..=5.0).contains(&s.into_inner())), "{samples:?}");
    // Broadcast.
    seen.counter("shoal_broadcast_eager_pushes_total", &node);
    seen.counter("shoal_broadcast_dropped_messages_total", &[("node", "ma"), ("reason", "unsent")]);
    // The registry: the name, its lookups, the lock, the group.
    let lookups = seen.counter("shoal_registry_cache_hits_total", &node)
        + seen.counter("shoal_registry_cache_misses_total", &node);
    assert!(lookups >= 3, "{lookups}");
    assert_eq!(seen.counter("shoal_registry_lock_acquisitions_total", &node), 1);
    assert_eq!(seen.gauge("shoal_registry_locks_held", &node), 1.0);
    assert_eq!(seen.gauge("shoal_group_members", &node), 1.0);
    // The hub that runs is published (the one that does not is not: no label names it), and
    // the distributed supervisor through its hub.
    assert_eq!(seen.gauge("shoal_hub_children", &jobs), 0.0);
    assert_eq!(seen.counter("shoal_hub_moves_total", &jobs), 0);
    assert_eq!(seen.counter("shoal_hub_failed_handovers_total", &workers), 0);

    within(metrics.stop()).await;
    within(b.shutdown()).await;
    within(a.shutdown()).await;
}

/// With the Prometheus recorder, a dashboard given it serves the sampler's figures at
/// `/metrics` in Prometheus's text format, behind the dashboard's access rules.
#[cfg(all(feature = "prometheus", feature = "dashboard"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_serves_the_prometheus_text() {
    use shoal::dashboard::{Dashboard, DashboardConfig};

    use super::dashboard::request;

    let prometheus = recorders().prometheus.clone();
    let key = ClusterKey::generate();
    let node = within(builder("pa", &key).start()).await.expect("pa starts");
    within(node.ready()).await;
    let config = MetricsConfig { every: Duration::from_millis(50), ..MetricsConfig::default() };
    let metrics = Metrics::start(&node, config);
    within(node.paxos().expect("paxos runs").put("prometheus-test", vec![1])).await.expect("put");
    let dashboard =
        within(Dashboard::start(&node, DashboardConfig::default().prometheus(prometheus)))
            .await
            .expect("the dashboard starts");

    let deadline = tokio::time::Instant::now() + BOUND;
    let text = loop {
        let answer = request(dashboard.addr(), "/metrics", &[]).await;
        assert_eq!(answer.status, 200);
        let kind = answer.headers.get("content-type").map(String::as_str);
        assert_eq!(kind, Some("text/plain; version=0.0.4; charset=utf-8"));
        let text = String::from_utf8(answer.body).expect("text");
        if text.contains("shoal_paxos_operation_duration_seconds_bucket") {
            break text;
        }
        assert!(tokio::time::Instant::now() < deadline, "not served within {BOUND:?}: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(text.contains("# TYPE shoal_processes gauge"), "{text}");
    assert!(text.contains("shoal_processes{node=\"pa\"}"), "{text}");
    assert!(text.contains("# TYPE shoal_paxos_accept_rounds_total counter"), "{text}");
    assert!(text.contains("shoal_paxos_operation_duration_seconds_count{node=\"pa\"}"), "{text}");

    within(dashboard.stop()).await;
    within(metrics.stop()).await;
    within(node.shutdown()).await;
}
