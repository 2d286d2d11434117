//! The HTTP side: the connections and their limits, the routes, the access check in front of
//! them, and JSON answers.
//!
//! ```text
//!   accept (at most max_connections open) ──> hyper HTTP/1 (header_read_timeout)
//!     request ──> guard (token, or a loopback Host) ──> deadline (request_timeout) ──> route
//!                    └─ 401 / 403                          └─ 503        views::* ──> JSON
//!                                                           400 on a bad query, 404 elsewhere
//! ```
//!
//! Served with hyper directly rather than `axum::serve`, which gives hyper no timer and so
//! no header timeout.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HOST, HeaderValue,
    WWW_AUTHENTICATE, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Sleep;

use super::views::{self, Shared};
use super::{Limits, MAX_TOP, page};

/// How long to wait before accepting again after an error (out of file descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// `top` of `GET /api/processes` when not given.
const DEFAULT_TOP: usize = 10;

/// The page may run its own inline script and style, and fetch from its own origin only.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// Serves `shared`'s node on `listener` within `limits` until `stopped` turns true, then
/// lets the open connections finish their requests.
pub(super) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    limits: Limits,
    mut stopped: watch::Receiver<bool>,
) {
    let router = router(shared, limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        // A permit first: past the cap, connections wait in the backlog, not accepted.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit,
            () = until_stopped(&mut stopped) => break,
        };
        let Ok(permit) = permit else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = until_stopped(&mut stopped) => break,
        };
        match accepted {
            Ok((stream, _)) => {
                let connection = connection(stream, router.clone(), limits, stopped.clone());
                connections.spawn(async move {
                    connection.await;
                    drop(permit);
                });
            }
            Err(error) => {
                tracing::warn!(%error, "the dashboard cannot accept a connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Serves one connection until it closes, or until `stopped` turns true and its request in
/// progress, if any, is answered.
async fn connection(
    stream: TcpStream,
    router: Router,
    limits: Limits,
    mut stopped: watch::Receiver<bool>,
) {
    let service = TowerToHyperService::new(router);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let stream = WriteDeadline::new(stream, limits.write_timeout);
    let mut serving = pin!(http.serve_connection(TokioIo::new(stream), service));
    let ended = tokio::select! {
        ended = serving.as_mut() => ended,
        () = until_stopped(&mut stopped) => {
            serving.as_mut().graceful_shutdown();
            serving.await
        }
    };
    if let Err(error) = ended {
        // A client that went away or was too slow: nothing to do but note it.
        tracing::debug!(%error, "a dashboard connection ended");
    }
}

/// A stream whose write fails with [`io::ErrorKind::TimedOut`] once it has waited `timeout`
/// for the other side to read (the socket's buffers full), which ends the connection: a
/// client that asks and never reads cannot hold its place for longer.
struct WriteDeadline<S> {
    inner: S,
    timeout: Duration,
    /// Armed when a write finds no room, dropped when one goes through.
    waiting: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteDeadline<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        Self { inner, timeout, waiting: None }
    }

    /// What a write that found no room comes to: an error once it has waited too long.
    fn stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.timeout;
        let waiting = self.waiting.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match waiting.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {timeout:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// `written`, with the wait's timer disarmed when it went through.
    fn went<T>(
        &mut self,
        written: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match written {
            Poll::Pending => self.stalled(cx),
            ready => {
                self.waiting = None;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.went(written, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.went(written, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.inner).poll_flush(cx);
        self.went(flushed, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Returns once `stopped` is true (or its sender is gone).
async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stopped| *stopped).await;
}

/// The routes, behind the access check and the request deadline.
fn router(shared: Arc<Shared>, limits: Limits) -> Router {
    let deadline = move |request: Request, next: Next| answer_within(limits, request, next);
    Router::new()
        .route("/", get(page))
        .route("/api/node", get(node))
        .route("/api/nodes", get(nodes))
        .route("/api/processes", get(processes))
        .route("/api/registry", get(registry))
        .route("/api/groups", get(groups))
        .route("/api/hubs", get(hubs))
        .route("/api/paxos", get(paxos))
        .route("/api/transport", get(transport))
        .route("/api/cluster", get(cluster))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(middleware::from_fn(deadline))
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared)
}

/// `GET /metrics`: the Prometheus text of the recorder the dashboard was given, or `404`.
async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    #[cfg(feature = "prometheus")]
    if let Some(prometheus) = &shared.prometheus {
        let text = prometheus.render();
        let kind = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
        return ([(CONTENT_TYPE, kind)], text).into_response();
    }
    let _ = shared;
    error(StatusCode::NOT_FOUND, "this dashboard serves no metrics (DashboardConfig::prometheus)")
}

/// The answer to `request`, or `503` if it takes longer than the limits allow.
async fn answer_within(limits: Limits, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limits.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let message = format!("no answer within {:?}", limits.request_timeout);
            error(StatusCode::SERVICE_UNAVAILABLE, &message)
        }
    }
}

/// Lets a request through if it may be served (see the module docs of
/// [`dashboard`](super), "Access"), and marks every answer as not to be cached or sniffed.
async fn guard(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let refused = match &shared.token {
        Some(token) if !carries_token(request.headers(), request.uri(), token) => {
            let mut refused = error(StatusCode::UNAUTHORIZED, "this dashboard needs its token");
            refused.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Some(refused)
        }
        None if !names_loopback(request.headers()) => Some(error(
            StatusCode::FORBIDDEN,
            "a dashboard without a token answers requests for a loopback host only",
        )),
        _ => None,
    };
    let mut response = match refused {
        Some(refused) => refused,
        None => next.run(request).await,
    };
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// Whether the request carries `token`, in `Authorization: Bearer` or in `?token=`.
fn carries_token(headers: &HeaderMap, uri: &Uri, token: &str) -> bool {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    if let Some(given) = bearer {
        return same_token(given.trim().as_bytes(), token.as_bytes());
    }
    let given = query_param(uri, "token").ok().flatten();
    given.is_some_and(|given| same_token(given.as_bytes(), token.as_bytes()))
}

/// The value of parameter `name` in `uri`'s query (the first, if several), decoded as a form
/// would be (`%XX` escapes, `+` for a space); `Err` for a bad escape or text not in UTF-8.
fn query_param(uri: &Uri, name: &str) -> Result<Option<String>, String> {
    let Some(query) = uri.query() else { return Ok(None) };
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if decode(key)? == name {
            return decode(value).map(Some);
        }
    }
    Ok(None)
}

/// `text` with its `%XX` escapes and `+`s decoded.
fn decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'+' => decoded.push(b' '),
            b'%' => {
                let escape =
                    bytes.get(at + 1..at + 3).filter(|hex| hex.iter().all(u8::is_ascii_hexdigit));
                let hex = escape.and_then(|hex| std::str::from_utf8(hex).ok());
                let value = hex.and_then(|hex| u8::from_str_radix(hex, 16).ok());
                decoded
                    .push(value.ok_or_else(|| format!("a bad escape in {:?}", views::clip(text)))?);
                at += 2;
            }
            other => decoded.push(other),
        }
        at += 1;
    }
    String::from_utf8(decoded).map_err(|_| format!("not UTF-8: {:?}", views::clip(text)))
}

/// Whether `given` is `expected`, in a time that depends on `expected`'s length only (not
/// on where they differ).
fn same_token(given: &[u8], expected: &[u8]) -> bool {
    let mut differ = u8::from(given.len() != expected.len());
    for (index, &byte) in expected.iter().enumerate() {
        differ |= byte ^ given.get(index).copied().unwrap_or(!byte);
    }
    std::hint::black_box(differ) == 0
}

/// Whether the `Host` header names a loopback host (or is absent: no browser sends such a
/// request).
fn names_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(HOST) else { return true };
    let Ok(host) = host.to_str() else { return false };
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|address| address.is_loopback())
}

/// `value` as a JSON answer.
fn json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            ([(CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
        }
        Err(failure) => {
            let message = format!("cannot write the answer: {failure}");
            (StatusCode::INTERNAL_SERVER_ERROR, message).into_response()
        }
    }
}

/// `{"error": message}` with `status`.
fn error(status: StatusCode, message: &str) -> Response {
    let mut response = json(&serde_json::json!({ "error": message }));
    *response.status_mut() = status;
    response
}

async fn page() -> Response {
    let mut response = Html(page::HTML).into_response();
    response.headers_mut().insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    response
}

async fn not_found(uri: Uri) -> Response {
    let path = views::clip(uri.path());
    error(StatusCode::NOT_FOUND, &format!("no such page: {path}"))
}

async fn node(State(shared): State<Arc<Shared>>) -> Response {
    json(&views::node_view(&shared.node))
}

async fn nodes(State(shared): State<Arc<Shared>>) -> Response {
    json(&views::nodes_view(&shared))
}

async fn processes(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    match top(&uri, DEFAULT_TOP) {
        Ok(top) => json(&views::processes_view(&shared.node, top)),
        Err(message) => error(StatusCode::BAD_REQUEST, &message),
    }
}

/// The `top` parameter: a whole number from 1 to [`MAX_TOP`], `default` if absent.
fn top(uri: &Uri, default: usize) -> Result<usize, String> {
    let Some(given) = query_param(uri, "top").map_err(|error| format!("bad query: {error}"))?
    else {
        return Ok(default);
    };
    match given.parse::<usize>() {
        Ok(top) if (1..=MAX_TOP).contains(&top) => Ok(top),
        _ => Err(format!(
            "top must be a whole number from 1 to {MAX_TOP}, not {:?}",
            views::clip(&given)
        )),
    }
}

async fn registry(State(shared): State<Arc<Shared>>) -> Response {
    json(&views::registry_view(&shared).await)
}

async fn groups(State(shared): State<Arc<Shared>>) -> Response {
    json(&views::groups_view(&shared.node))
}

async fn hubs(State(shared): State<Arc<Shared>>) -> Response {
    json(&views::hubs_view(&shared.node))
}

async fn paxos(State(shared): State<Arc<Shared>>) -> Response {
    json(&views::paxos_view(&shared).await)
}

async fn transport(State(shared): State<Arc<Shared>>) -> Response {
    json(&views::transport_view(&shared))
}

async fn cluster(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    match top(&uri, views::SUMMARY_TOP) {
        Ok(top) => json(&views::cluster_view(&shared, top).await),
        Err(message) => error(StatusCode::BAD_REQUEST, &message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens match exactly: not a prefix, not an extension, not empty.
    #[test]
    fn a_token_matches_only_itself() {
        let token = b"0123456789abcdef";
        assert!(same_token(token, token));
        assert!(!same_token(b"0123456789abcde", token));
        assert!(!same_token(b"0123456789abcdefg", token));
        assert!(!same_token(b"0123456789abcdeF", token));
        assert!(!same_token(b"", token));
    }

    /// DNS rebinding: only a loopback name or address in `Host` is served without a token.
    #[test]
    fn only_loopback_hosts_are_served_without_a_token() {
        let with_host = |host: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(HOST, HeaderValue::from_str(host).expect("a header value"));
            names_loopback(&headers)
        };
        for host in ["127.0.0.1:8080", "localhost:1", "LOCALHOST", "[::1]:80", "127.1.2.3"] {
            assert!(with_host(host), "{host}");
        }
        for host in ["evil.example:8080", "10.0.0.1", "[2001:db8::1]:80", "localhost.evil"] {
            assert!(!with_host(host), "{host}");
        }
        assert!(names_loopback(&HeaderMap::new()));
    }

    /// Query parameters are decoded as a form's; a bad escape is an error, not a panic.
    #[test]
    fn query_parameters_are_decoded() {
        let param = |uri: &str, name: &str| query_param(&uri.parse::<Uri>().expect("a uri"), name);
        assert_eq!(param("/?token=a%2Bb+c&x", "token"), Ok(Some("a+b c".to_owned())));
        assert_eq!(param("/?x=1", "token"), Ok(None));
        assert_eq!(param("/", "token"), Ok(None));
        assert_eq!(param("/?flag&token=", "token"), Ok(Some(String::new())));
        for bad in ["/?token=%", "/?token=%g1", "/?token=%+1", "/?token=%ff"] {
            assert!(param(bad, "token").is_err(), "{bad}");
        }
    }

    /// `top` is a whole number in range; anything else is refused with a message.
    #[test]
    fn top_is_checked() {
        let top_of = |uri: &str| top(&uri.parse::<Uri>().expect("a uri"), DEFAULT_TOP);
        assert_eq!(top_of("/api/processes"), Ok(DEFAULT_TOP));
        assert_eq!(top_of("/api/processes?top=3"), Ok(3));
        assert_eq!(top_of("/api/processes?top=100"), Ok(100));
        assert_eq!(top_of("/api/processes?other=1&top=%34"), Ok(4));
        for bad in ["top=0", "top=101", "top=-1", "top=x", "top=99999999999999999999999", "top=%4"]
        {
            assert!(top_of(&format!("/api/processes?{bad}")).is_err(), "{bad}");
        }
    }
}
