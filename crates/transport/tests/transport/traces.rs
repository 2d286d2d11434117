//! Tracing across nodes (issue 22, point 2): a process's log lines carry its node and pid, and
//! a remote call is one trace: the caller's `call` span and the callee's `handle_call` span
//! share a trace id, the callee's parent being the caller's span, over real TCP on loopback.
//!
//! The spans are read back through a capturing layer installed once for the whole test binary
//! (a global subscriber: the nodes' tasks run on tokio's worker threads); each test finds its
//! own spans by its nodes' names.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use shoal_process::{Addr, Context, Process, ReplyTo};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, Registry};

use super::support::{CALL, Echo, cluster, eventually, shutdown};

/// A span as the layer saw it: its name and fields (values as displayed).
#[derive(Clone, Debug, Default)]
struct Seen {
    name: &'static str,
    fields: BTreeMap<String, String>,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// An event (a log line): its message and the spans it was logged in, outermost first.
#[derive(Clone, Debug)]
struct Line {
    message: String,
    scope: Vec<Seen>,
}

#[derive(Default)]
struct Captured {
    spans: Vec<Seen>,
    lines: Vec<Line>,
}

fn captured() -> MutexGuard<'static, Captured> {
    static CAPTURED: OnceLock<Mutex<Captured>> = OnceLock::new();
    let captured = CAPTURED.get_or_init(|| {
        let subscriber = Registry::default().with(Capture);
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        Mutex::default()
    });
    captured.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Installs the capturing subscriber, before any node starts.
fn capture() {
    drop(captured());
}

/// Where a span's record lives in `Captured::spans`, kept in the span's extensions.
struct Index(usize);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

struct Capture;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let mut seen = Seen { name: attrs.metadata().name(), fields: BTreeMap::new() };
        attrs.record(&mut Fields(&mut seen.fields));
        let index = {
            let mut captured = captured();
            captured.spans.push(seen);
            captured.spans.len() - 1
        };
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Index(index));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let Some(Index(index)) = span.extensions().get::<Index>().map(|index| Index(index.0))
        else {
            return;
        };
        values.record(&mut Fields(&mut captured().spans[index].fields));
    }

    fn on_event(&self, event: &Event<'_>, ctx: LayerContext<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let indices: Vec<usize> = ctx
            .event_scope(event)
            .map(|scope| {
                let spans = scope.from_root();
                spans.filter_map(|span| span.extensions().get::<Index>().map(|i| i.0)).collect()
            })
            .unwrap_or_default();
        let mut captured = captured();
        let scope = indices.into_iter().map(|index| captured.spans[index].clone()).collect();
        let message = fields.remove("message").unwrap_or_default();
        captured.lines.push(Line { message, scope });
    }
}

/// Logs a line, then calls on: to the process of `next` on another node.
struct Relay {
    next: Addr<Echo>,
}

impl Process for Relay {
    type Message = ();
    type Call = String;
    type Reply = String;

    async fn handle_cast(&mut self, (): (), _: &mut Context<Self>) {}

    async fn handle_call(&mut self, text: String, reply: ReplyTo<String>, _: &mut Context<Self>) {
        tracing::info!("relay: passing it on");
        reply.send(self.next.call(text).await.unwrap_or_else(|error| error.to_string()));
    }

    fn remote_messages() -> Option<shoal_process::Codec<Self>> {
        Some(shoal_process::Codec::msgpack())
    }
}

fn spans_named(name: &str, test: impl Fn(&Seen) -> bool) -> Vec<Seen> {
    captured().spans.iter().filter(|seen| seen.name == name && test(seen)).cloned().collect()
}

/// W3C Trace Context, carried in the call frame (protocol version 4): a call from a to b,
/// whose handler calls c, is one trace. a's `call` span, b's `handle_call` and `call` spans
/// and c's `handle_call` span share the trace id; each `handle_call`'s parent is the `call`
/// span that sent it; and the line b's process logs while handling the call shows its node
/// and pid (the `process` span) and the trace (the `handle_call` span inside it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_across_nodes_is_one_trace_and_a_process_logs_its_node_and_pid() {
    capture();
    let nodes = cluster(&["trace-a", "trace-b", "trace-c"]).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let echo = c.runtime().spawn(Echo).pid();
    let next = b.runtime().addr::<Echo>(echo).expect("a remote handle");
    let relay = b.runtime().spawn(Relay { next }).pid();
    let relay_on_a = a.runtime().addr::<Relay>(relay).expect("a remote handle");

    let answer = tokio::time::timeout(CALL, relay_on_a.call("hello".into())).await;
    assert_eq!(answer.expect("answered in time").expect("the call succeeds"), "HELLO");

    let relay_pid = relay.to_string();
    let call_from_a = spans_named("call", |seen| seen.field("to") == Some(&relay_pid));
    let [call_from_a] = call_from_a.as_slice() else {
        panic!("one call span for the relay: {call_from_a:?}")
    };
    let trace_id = call_from_a.field("trace_id").expect("the call records its trace").to_owned();
    assert_eq!(trace_id.len(), 32, "a W3C trace id: {trace_id}");
    // The callee's spans close after the reply is sent: wait for them, within the bound.
    eventually("both handle_call spans are seen", || async {
        spans_named("handle_call", |seen| seen.field("trace_id") == Some(&trace_id)).len() == 2
    })
    .await;
    let handled = spans_named("handle_call", |seen| seen.field("trace_id") == Some(&trace_id));
    let at_b = handled
        .iter()
        .find(|seen| seen.field("parent_span_id") == call_from_a.field("span_id"))
        .expect("b's handle_call has a's call span as parent");
    let echo_pid = echo.to_string();
    let call_from_b = spans_named("call", |seen| seen.field("to") == Some(&echo_pid));
    let [call_from_b] = call_from_b.as_slice() else {
        panic!("one call span for the echo: {call_from_b:?}")
    };
    assert_eq!(call_from_b.field("trace_id"), Some(trace_id.as_str()), "b continues a's trace");
    assert!(
        handled.iter().any(|seen| seen.field("parent_span_id") == call_from_b.field("span_id")),
        "c's handle_call has b's call span as parent: {handled:?}"
    );

    let lines = captured().lines.clone();
    let line = lines.iter().find(|line| line.message == "relay: passing it on").expect("logged");
    let names: Vec<&str> = line.scope.iter().map(|seen| seen.name).collect();
    assert_eq!(names, ["process", "handle_call"], "{line:?}");
    assert_eq!(line.scope[0].field("node"), Some("trace-b"));
    assert_eq!(line.scope[0].field("pid"), Some(relay_pid.as_str()));
    assert_eq!(line.scope[1].field("span_id"), at_b.field("span_id"));
    shutdown(&nodes);
}
