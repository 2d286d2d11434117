//! Trace context for calls that cross nodes: which trace a remote call belongs to, carried in
//! its frame so that the callee's span joins the caller's trace.
//!
//! The ids follow W3C Trace Context (`traceparent`): a 128-bit trace id, the 64-bit id of the
//! caller's span, and a sampled flag. Without OpenTelemetry they are this crate's own: a root
//! call draws a fresh trace id from its runtime ([`Runtime::fresh_trace_id`]: unique per node
//! and run, and the same in every replay of a simulation), and a call made while a traced call
//! is being handled ([`TraceContext::current`]) continues that trace. A transport with an
//! OpenTelemetry bridge supplies OpenTelemetry's ids instead
//! ([`crate::remote::Remote::trace_context`]), so that both agree.
//!
//! ```text
//!  node a: call{to, trace_id, span_id} ──TracedCall(trace_id, span_id)──▶ node b:
//!          handle_call{trace_id, parent_span_id, span_id} ── a call from here continues
//!          trace_id with span_id as its parent
//! ```

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::Runtime;

/// A trace's id (W3C: 16 bytes, big-endian, shown as 32 lowercase hex digits); all zeros is
/// invalid. Kept as bytes, as W3C and OpenTelemetry do (and so that a context in a message
/// needs no 16-byte alignment).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(pub [u8; 16]);

impl TraceId {
    /// The id of the number `id`.
    pub const fn from_u128(id: u128) -> Self {
        Self(id.to_be_bytes())
    }

    /// The id as a number.
    pub const fn as_u128(self) -> u128 {
        u128::from_be_bytes(self.0)
    }
}

/// A span's id (W3C: 8 bytes, shown as 16 lowercase hex digits); 0 is invalid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(pub u64);

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.as_u128())
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Where a span stands in a trace, as W3C Trace Context's `traceparent` carries it: the trace,
/// the span (the parent of whatever this context is handed to), and whether the trace is
/// sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace.
    pub trace_id: TraceId,
    /// The span this context stands for.
    pub span_id: SpanId,
    /// Whether the trace is recorded (W3C's `sampled` flag).
    pub sampled: bool,
}

thread_local! {
    /// The context of the traced call being handled on this thread, set for each poll of its
    /// handler.
    static CURRENT: Cell<Option<TraceContext>> = const { Cell::new(None) };
}

impl TraceContext {
    /// Whether both ids are non-zero, as W3C requires; a context from another node that is
    /// not is ignored.
    pub fn is_valid(&self) -> bool {
        self.trace_id.as_u128() != 0 && self.span_id.0 != 0
    }

    /// The same trace and flag, for the span `span_id` (a child of this one).
    pub fn child(&self, span_id: SpanId) -> Self {
        Self { span_id, ..*self }
    }

    /// The context of the traced remote call whose handler runs on this thread now, if any:
    /// a call made from it continues its trace.
    pub fn current() -> Option<Self> {
        CURRENT.with(Cell::get)
    }

    /// A context for a call about to leave from here: the current trace continued, or a fresh
    /// one from `runtime`, with a fresh span id either way.
    pub(crate) fn for_call(runtime: &Runtime) -> Self {
        let span_id = runtime.fresh_span_id();
        match Self::current() {
            Some(current) => current.child(span_id),
            None => Self { trace_id: runtime.fresh_trace_id(), span_id, sampled: true },
        }
    }
}

/// The callee's span of a traced call from another node, made where its handler runs (inside
/// the `process` span, so that the handler's log lines show both): `handle_call`, with the
/// caller's trace id, the caller's span as parent, and a span id of its own (the transport's
/// bridge's, or a fresh one). `None` when no subscriber records it.
pub(crate) fn handle_call_span(
    runtime: &Runtime,
    caller: TraceContext,
) -> Option<(tracing::Span, TraceContext)> {
    let span = tracing::info_span!(
        "handle_call",
        trace_id = %caller.trace_id,
        parent_span_id = %caller.span_id,
        span_id = tracing::field::Empty,
    );
    if span.is_disabled() {
        return None;
    }
    let bridged = runtime.remote().and_then(|remote| remote.join_trace(&span, caller));
    let span_id = bridged.unwrap_or_else(|| runtime.fresh_span_id());
    span.record("span_id", tracing::field::display(span_id));
    Some((span, caller.child(span_id)))
}

/// Runs `inner`, a call's handler, inside the call's `handle_call` span with its context
/// current, for each poll, when it has one; as it is otherwise.
pub(crate) struct Traced<F> {
    trace: Option<Box<(tracing::Span, TraceContext)>>,
    inner: F,
}

impl<F: Future + Unpin> Traced<F> {
    pub(crate) fn new(trace: Option<Box<(tracing::Span, TraceContext)>>, inner: F) -> Self {
        Self { trace, inner }
    }
}

impl<F: Future + Unpin> Future for Traced<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let Some(trace) = &this.trace else { return Pin::new(&mut this.inner).poll(cx) };
        let (span, context) = &**trace;
        let _entered = span.enter();
        let previous = CURRENT.with(|current| current.replace(Some(*context)));
        // Restored however the poll ends (a panic in the handler is caught inside `inner`).
        let _restore = Restore(previous);
        Pin::new(&mut this.inner).poll(cx)
    }
}

struct Restore(Option<TraceContext>);

impl Drop for Restore {
    fn drop(&mut self) {
        CURRENT.with(|current| current.set(self.0));
    }
}

/// splitmix64's finaliser: spreads a counter's bits over the whole word.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
