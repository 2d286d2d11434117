//! The `opentelemetry` feature: with a tracing-opentelemetry layer in the subscriber, a remote
//! call is one OpenTelemetry trace across nodes. The caller's context travels in the call
//! frame, and the callee's `handle_call` span gets the caller's `call` span as its (remote)
//! parent. Over real TCP on loopback; spans are collected by an in-memory span processor of
//! the OpenTelemetry SDK.
//!
//! A test binary of its own: it installs a global subscriber of its own.

#![cfg(feature = "opentelemetry")]

use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, Span, SpanData, SpanProcessor};
use tracing::Instrument;
use tracing_subscriber::Registry;
use tracing_subscriber::layer::SubscriberExt;

#[path = "transport/support.rs"]
#[allow(dead_code, reason = "the support of the main test binary, of which this uses a part")]
mod support;

use support::{CALL, Echo, cluster, eventually, shutdown};

/// Ended spans, as the SDK hands them to its processors.
fn ended() -> MutexGuard<'static, Vec<SpanData>> {
    static ENDED: Mutex<Vec<SpanData>> = Mutex::new(Vec::new());
    ENDED.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug)]
struct Collect;

impl SpanProcessor for Collect {
    fn on_start(&self, _: &mut Span, _: &Context) {}

    fn on_end(&self, span: SpanData) {
        ended().push(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        Ok(())
    }
}

fn install() {
    static INSTALLED: OnceLock<SdkTracerProvider> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let provider = SdkTracerProvider::builder().with_span_processor(Collect).build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("shoal-test"));
        let subscriber = Registry::default().with(layer);
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        provider
    });
}

fn ended_named(name: &str) -> Vec<SpanData> {
    ended().iter().filter(|span| span.name == name).cloned().collect()
}

/// One trace across two nodes: the user's `request` span on a, shoal's `call` span inside it,
/// and, on b, the `handle_call` span whose parent is that `call` span, marked remote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_across_nodes_is_one_opentelemetry_trace() {
    install();
    let nodes = cluster(&["otel-a", "otel-b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let echo = b.runtime().spawn(Echo).pid();
    let echo_on_a = a.runtime().addr::<Echo>(echo).expect("a remote handle");

    let request = tracing::info_span!("request");
    let answer = tokio::time::timeout(CALL, echo_on_a.call("hi".into()).instrument(request)).await;
    assert_eq!(answer.expect("answered in time").expect("the call succeeds"), "HI");

    eventually("the request, call and handle_call spans ended", || async {
        ["request", "call", "handle_call"].iter().all(|name| !ended_named(name).is_empty())
    })
    .await;
    let [request] = ended_named("request").try_into().expect("one request span");
    let [call] = ended_named("call").try_into().expect("one call span");
    let [handled] = ended_named("handle_call").try_into().expect("one handle_call span");
    let trace_id = request.span_context.trace_id();
    assert_eq!(call.span_context.trace_id(), trace_id);
    assert_eq!(call.parent_span_id, request.span_context.span_id());
    assert_eq!(handled.span_context.trace_id(), trace_id, "b's span is in a's trace");
    assert_eq!(handled.parent_span_id, call.span_context.span_id());
    assert!(handled.parent_span_is_remote);
    // shoal's own field says the same trace id, for logs without OpenTelemetry.
    let recorded = handled.attributes.iter().find(|kv| kv.key.as_str() == "trace_id");
    let recorded = recorded.map(|kv| kv.value.to_string());
    assert_eq!(recorded, Some(format!("{trace_id}")));
    shutdown(&nodes);
}
