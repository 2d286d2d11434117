//! Trace contexts on the transport's side: a traced call's context checked as it arrives,
//! and, with the `opentelemetry` feature, the bridge that makes a call across nodes one trace
//! in OpenTelemetry (see the crate docs, "Tracing"). The spans themselves are the runtime's
//! (`call` and `handle_call`, see `shoal_process::TraceContext`).

use shoal_process::remote::Inbound;
use shoal_process::{SpanId, TraceContext};

use crate::peer::Peer;
use crate::wire::TraceParent;

/// `inbound`, a call from `peer` whose frame carried `trace`, with the caller's context for
/// its handler's span. A context that is not valid (a zero id) is counted on the peer
/// ([`crate::PeerStats::ignored_trace_contexts`]) and otherwise ignored: the call is handled,
/// untraced.
pub(crate) fn inbound(inbound: Inbound, peer: &Peer, trace: &TraceParent) -> Inbound {
    match trace.context() {
        Some(caller) => inbound.with_trace(caller),
        None => {
            peer.count_ignored_trace_context();
            tracing::debug!(peer = %peer.name(), ?trace, "an invalid trace context ignored");
            inbound
        }
    }
}

/// The caller's side: the context of a `call` span as OpenTelemetry sees it, when the
/// subscriber has an OpenTelemetry layer (`None` otherwise, and without the feature).
pub(crate) fn outbound(span: &tracing::Span) -> Option<TraceContext> {
    bridge::context_of(span)
}

/// The callee's side: the caller's span made the OpenTelemetry parent of `span`; `span`'s own
/// OpenTelemetry span id (`None` without an OpenTelemetry layer, and without the feature).
pub(crate) fn join(span: &tracing::Span, caller: TraceContext) -> Option<SpanId> {
    bridge::adopt(span, caller)
}

#[cfg(feature = "opentelemetry")]
mod bridge {
    use opentelemetry::trace::{
        SpanContext, SpanId as OtelSpanId, TraceContextExt, TraceFlags, TraceId as OtelTraceId,
        TraceState,
    };
    use shoal_process::{SpanId, TraceContext, TraceId};
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    /// The span's OpenTelemetry context, if it has a valid one.
    pub(super) fn context_of(span: &tracing::Span) -> Option<TraceContext> {
        let context = span.context();
        let otel_span = context.span();
        let ids = otel_span.span_context();
        ids.is_valid().then(|| TraceContext {
            trace_id: TraceId(ids.trace_id().to_bytes()),
            span_id: SpanId(u64::from_be_bytes(ids.span_id().to_bytes())),
            sampled: ids.is_sampled(),
        })
    }

    /// Makes the caller's span, on another node, the OpenTelemetry parent of `span`; returns
    /// `span`'s own OpenTelemetry span id, if it has one (an OpenTelemetry layer records it).
    pub(super) fn adopt(span: &tracing::Span, parent: TraceContext) -> Option<SpanId> {
        let flags = if parent.sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
        let remote = SpanContext::new(
            OtelTraceId::from_bytes(parent.trace_id.0),
            OtelSpanId::from_bytes(parent.span_id.0.to_be_bytes()),
            flags,
            true,
            TraceState::default(),
        );
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
        context_of(span).map(|context| context.span_id)
    }
}

#[cfg(not(feature = "opentelemetry"))]
mod bridge {
    use shoal_process::{SpanId, TraceContext};

    pub(super) fn context_of(_: &tracing::Span) -> Option<TraceContext> {
        None
    }

    pub(super) fn adopt(_: &tracing::Span, _: TraceContext) -> Option<SpanId> {
        None
    }
}
