//! A minimal HTTP/1.1 client: one `GET` per connection, enough to read a dashboard's JSON API
//! and nothing more (no TLS, no redirects, no proxies, no keep-alive).
//!
//! ```text
//!   Url::parse ──> request_head ──> TcpStream ──> bytes ──> parse_response ──> Response
//!                                     (get: the one part that does I/O, under a timeout)
//! ```
//!
//! [`parse_response`] is a pure function of the bytes read so far, called after every read:
//! it says whether the answer is whole (by `Content-Length`, by the last chunk of a
//! `Transfer-Encoding: chunked` body, or, with neither, by the end of the connection), so the
//! client stops reading as soon as it has the answer even from a server that keeps the
//! connection open. The dashboard answers with `Content-Length`; chunks are read all the same,
//! so that a proxy in front of it may re-encode its answers.

use std::fmt;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest answer read, head and body together; a larger one is an error, not a
/// truncated answer. The dashboard's largest (the registry's 500 names and 500 locks of user
/// text cut to 200 characters) is well under it.
pub(crate) const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// The largest head (status line and headers).
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Where a dashboard is: `http://HOST[:PORT][/PREFIX]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Url {
    /// A name, an IPv4 address, or an IPv6 address without its brackets.
    host: String,
    port: u16,
    /// The path the API's paths go under (empty, or starting with `/` and without a trailing
    /// one), for a dashboard behind a proxy that serves it under a prefix.
    prefix: String,
}

/// A URL the client cannot use.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UrlError {
    /// It does not start with `http://`.
    #[error("{0:?} is not an http:// URL (for example http://127.0.0.1:8080)")]
    NotHttp(String),
    /// It starts with `https://`: this client does not speak TLS.
    #[error(
        "{0:?}: this client speaks plain HTTP only; reach a dashboard behind TLS through a \
         tunnel to its plain port"
    )]
    Https(String),
    /// It names no host.
    #[error("{0:?} names no host")]
    NoHost(String),
    /// Its port is not a number from 1 to 65535.
    #[error("{0:?} has a bad port")]
    BadPort(String),
    /// It carries a user name, a query or a fragment, which the client would not send.
    #[error("{0:?}: give only http://HOST:PORT and a path prefix (no user, query or fragment)")]
    Unsupported(String),
}

impl Url {
    /// Reads `http://HOST[:PORT][/PREFIX]` (port 80 if absent; IPv6 hosts in brackets).
    pub(crate) fn parse(text: &str) -> Result<Url, UrlError> {
        let trimmed = text.trim();
        let lower = trimmed.to_ascii_lowercase();
        if lower.starts_with("https://") {
            return Err(UrlError::Https(text.to_owned()));
        }
        if !lower.starts_with("http://") {
            return Err(UrlError::NotHttp(text.to_owned()));
        }
        let rest = &trimmed["http://".len()..];
        if rest.contains(['?', '#', '@']) {
            return Err(UrlError::Unsupported(text.to_owned()));
        }
        let (authority, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        let (host, port) = split_authority(authority).ok_or_else(|| bad_port(text))?;
        if host.is_empty() {
            return Err(UrlError::NoHost(text.to_owned()));
        }
        let port = match port {
            None => 80,
            Some(port) => {
                port.parse::<u16>().ok().filter(|&port| port != 0).ok_or_else(|| bad_port(text))?
            }
        };
        let prefix = path.trim_end_matches('/').to_owned();
        Ok(Url { host: host.to_owned(), port, prefix })
    }

    /// The request target of `path` (which starts with `/`).
    pub(crate) fn target(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }

    /// What the `Host` header says: the host (in brackets if IPv6) and the port.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.prefix)
    }
}

fn bad_port(text: &str) -> UrlError {
    UrlError::BadPort(text.to_owned())
}

/// `HOST[:PORT]` or `[V6][:PORT]` as host and port text; `None` if the brackets are not
/// closed or something follows them other than a port.
fn split_authority(authority: &str) -> Option<(&str, Option<&str>)> {
    if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    Some(match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

/// The head of `GET path` to `url`, with the token as `Authorization: Bearer` if there is one.
pub(crate) fn request_head(url: &Url, path: &str, token: Option<&str>) -> String {
    let mut head = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nUser-Agent: shoal/{}\r\n\
         Connection: close\r\n",
        url.target(path),
        url.authority(),
        env!("CARGO_PKG_VERSION"),
    );
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// A whole answer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Response {
    /// The status code.
    pub(crate) status: u16,
    /// The headers, names in lower case, in the order sent.
    pub(crate) headers: Vec<(String, String)>,
    /// The body, its chunks joined if it came in chunks.
    pub(crate) body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (lower case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}

/// An answer that is not HTTP/1.x as this client reads it.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ResponseError {
    /// The connection ended before the answer was whole.
    #[error("the connection closed before the whole answer came ({0})")]
    Incomplete(&'static str),
    /// It is not an HTTP/1.x answer, or not one this client reads.
    #[error("not an HTTP/1.1 answer: {0}")]
    Malformed(String),
    /// Its head alone is larger than the client takes.
    #[error("the answer's head is larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
}

/// Whether `raw` (what was read so far; `at_eof` once the server closed the connection) holds
/// a whole answer: `Ok(None)` while more is to come.
pub(crate) fn parse_response(raw: &[u8], at_eof: bool) -> Result<Option<Response>, ResponseError> {
    let Some(head_end) = raw.windows(4).position(|window| window == b"\r\n\r\n") else {
        if raw.len() > MAX_HEAD_BYTES {
            return Err(ResponseError::HeadTooLarge);
        }
        return if at_eof { Err(ResponseError::Incomplete("no whole head")) } else { Ok(None) };
    };
    if head_end > MAX_HEAD_BYTES {
        return Err(ResponseError::HeadTooLarge);
    }
    let head = std::str::from_utf8(&raw[..head_end])
        .map_err(|_| ResponseError::Malformed("a head that is not text".to_owned()))?;
    let mut lines = head.split("\r\n");
    let status = parse_status_line(lines.next().unwrap_or_default())?;
    let headers = lines.map(parse_header).collect::<Result<Vec<_>, _>>()?;
    let rest = &raw[head_end + 4..];
    let mut response = Response { status, headers, body: Vec::new() };
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|coding| coding.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        dechunk(rest, at_eof)?
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| ResponseError::Malformed(format!("Content-Length {length:?}")))?;
        match rest.get(..length) {
            Some(body) => Some(body.to_vec()),
            None if at_eof => {
                return Err(ResponseError::Incomplete("a body shorter than its length"));
            }
            None => None,
        }
    } else {
        // Neither: the body is whatever comes before the server closes the connection.
        at_eof.then(|| rest.to_vec())
    };
    Ok(body.map(|body| {
        response.body = body;
        response
    }))
}

/// `HTTP/1.x NNN reason` → `NNN`.
fn parse_status_line(line: &str) -> Result<u16, ResponseError> {
    let malformed = || ResponseError::Malformed(format!("status line {:?}", clip(line)));
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(malformed());
    }
    let code = parts.next().unwrap_or_default();
    match code.parse::<u16>() {
        Ok(status) if code.len() == 3 && (100..=599).contains(&status) => Ok(status),
        _ => Err(malformed()),
    }
}

/// `Name: value` → `("name", "value")`.
fn parse_header(line: &str) -> Result<(String, String), ResponseError> {
    let (name, value) = line
        .split_once(':')
        .ok_or_else(|| ResponseError::Malformed(format!("header line {:?}", clip(line))))?;
    Ok((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
}

/// A chunked body's data, once its last chunk (size 0) and the trailers after it are in.
fn dechunk(mut rest: &[u8], at_eof: bool) -> Result<Option<Vec<u8>>, ResponseError> {
    let incomplete = |what| if at_eof { Err(ResponseError::Incomplete(what)) } else { Ok(None) };
    let mut body = Vec::new();
    loop {
        let Some(line_end) = rest.windows(2).position(|window| window == b"\r\n") else {
            return incomplete("a chunk's size line");
        };
        let line = std::str::from_utf8(&rest[..line_end]).unwrap_or_default();
        // A size may be followed by `;extension`, which nothing here needs.
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| ResponseError::Malformed(format!("chunk size {:?}", clip(line))))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            // Trailers, each a line, end with an empty line: the body is whole at the first.
            return match rest.windows(2).position(|window| window == b"\r\n") {
                Some(_) => Ok(Some(body)),
                None => incomplete("the trailers after the last chunk"),
            };
        }
        let Some(data) = rest.get(..size) else { return incomplete("a chunk's data") };
        body.extend_from_slice(data);
        rest = &rest[size..];
        match rest.get(..2) {
            Some(b"\r\n") => rest = &rest[2..],
            Some(_) => return Err(ResponseError::Malformed("a chunk without its CRLF".to_owned())),
            None => return incomplete("a chunk's CRLF"),
        }
    }
}

/// At most 80 characters of `text`, for messages.
fn clip(text: &str) -> String {
    text.chars().take(80).collect()
}

/// A `GET` that did not bring back an answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    /// The connection could not be opened (nothing listens there, or the name does not
    /// resolve).
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// Where.
        url: String,
        /// Why.
        source: io::Error,
    },
    /// The whole exchange did not finish within the timeout.
    #[error("no whole answer from {url} within {timeout:?}")]
    Timeout {
        /// Where.
        url: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The connection failed while the request was sent or the answer read.
    #[error("the connection to {url} failed: {source}")]
    Io {
        /// Where.
        url: String,
        /// Why.
        source: io::Error,
    },
    /// The answer is larger than [`MAX_RESPONSE_BYTES`].
    #[error("the answer from {url} is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge {
        /// Where.
        url: String,
    },
    /// The answer is not HTTP/1.x as this client reads it.
    #[error("{url} did not answer in HTTP/1.1: {source}")]
    Malformed {
        /// Where.
        url: String,
        /// What is wrong with it.
        source: ResponseError,
    },
}

/// `GET path` from `url`, sending `token` if there is one; the whole exchange, connecting
/// included, within `timeout`.
pub(crate) async fn get(
    url: &Url,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let target = format!("{url}{path}");
    match tokio::time::timeout(timeout, exchange(url, path, token, &target)).await {
        Ok(result) => result,
        Err(_) => Err(HttpError::Timeout { url: target, timeout }),
    }
}

async fn exchange(
    url: &Url,
    path: &str,
    token: Option<&str>,
    target: &str,
) -> Result<Response, HttpError> {
    let mut stream = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|source| HttpError::Connect { url: url.to_string(), source })?;
    let io = |source| HttpError::Io { url: target.to_owned(), source };
    stream.write_all(request_head(url, path, token).as_bytes()).await.map_err(io)?;
    let mut raw = Vec::new();
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = stream.read(&mut buffer).await.map_err(io)?;
        raw.extend_from_slice(&buffer[..read]);
        if raw.len() > MAX_RESPONSE_BYTES {
            return Err(HttpError::TooLarge { url: target.to_owned() });
        }
        let parsed = parse_response(&raw, read == 0)
            .map_err(|source| HttpError::Malformed { url: target.to_owned(), source })?;
        if let Some(response) = parsed {
            return Ok(response);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).expect("a good URL")
    }

    /// Host, port and prefix are read as written; the port is 80 when absent; IPv6 goes in
    /// brackets in `Host`.
    #[test]
    fn urls_are_read_as_written() {
        let plain = url("http://127.0.0.1:8080");
        assert_eq!(plain.target("/api/node"), "/api/node");
        assert_eq!(plain.to_string(), "http://127.0.0.1:8080");
        let prefixed = url("HTTP://dash.example/shoal/");
        assert_eq!(prefixed.port, 80);
        assert_eq!(prefixed.target("/api/node"), "/shoal/api/node");
        let v6 = url("http://[::1]:9000/");
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.authority(), "[::1]:9000");
    }

    /// Anything the client would not send as given is refused with a reason.
    #[test]
    fn urls_it_cannot_use_are_refused() {
        type Refusal = fn(String) -> UrlError;
        let cases: [(&str, Refusal); 8] = [
            ("127.0.0.1:8080", UrlError::NotHttp),
            ("https://a:1", UrlError::Https),
            ("http://:8080", UrlError::NoHost),
            ("http://a:0", UrlError::BadPort),
            ("http://a:65536", UrlError::BadPort),
            ("http://a:x", UrlError::BadPort),
            ("http://[::1:80", UrlError::BadPort),
            ("http://u@a:1/?token=x", UrlError::Unsupported),
        ];
        for (text, error) in cases {
            assert_eq!(Url::parse(text), Err(error(text.to_owned())), "{text}");
        }
    }

    /// The request closes the connection, names the host, and carries the token only if
    /// there is one.
    #[test]
    fn the_request_head_is_http_1_1_with_close() {
        let head = request_head(&url("http://127.0.0.1:1/p"), "/api/node", Some("secret"));
        assert!(head.starts_with("GET /p/api/node HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"), "{head}");
        assert!(head.contains("\r\nConnection: close\r\n"));
        assert!(head.contains("\r\nAuthorization: Bearer secret\r\n"));
        assert!(head.ends_with("\r\n\r\n"));
        let without = request_head(&url("http://127.0.0.1:1"), "/api/node", None);
        assert!(!without.contains("Authorization"));
    }

    /// A `Content-Length` body is whole when that many bytes are in, not before.
    #[test]
    fn a_content_length_body_is_whole_at_its_length() {
        let raw =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        for cut in 0..raw.len() {
            assert_eq!(parse_response(&raw[..cut], false), Ok(None), "cut at {cut}");
            assert!(parse_response(&raw[..cut], true).is_err(), "cut at {cut}");
        }
        let whole = parse_response(raw, false).expect("good").expect("whole");
        assert_eq!(whole.status, 200);
        assert_eq!(whole.header("content-type"), Some("application/json"));
        assert_eq!(whole.body, b"{}");
    }

    /// A chunked body is its chunks joined, whole at the last chunk's empty line; chunk
    /// extensions and trailers are skipped.
    #[test]
    fn a_chunked_body_is_joined() {
        let raw = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n\
                    3;x=y\r\n{\"a\r\nA\r\n\": [1, 2]}\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let whole = parse_response(raw, false).expect("good").expect("whole");
        assert_eq!(whole.status, 404);
        assert_eq!(whole.body, b"{\"a\": [1, 2]}");
        let end = raw.len() - b"X-Trailer: 1\r\n\r\n".len() - 2;
        for cut in 0..end {
            assert_eq!(parse_response(&raw[..cut], false), Ok(None), "cut at {cut}");
        }
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(matches!(parse_response(bad, false), Err(ResponseError::Malformed(_))));
    }

    /// Without a length or chunks, the body ends with the connection.
    #[test]
    fn a_body_without_a_length_ends_at_the_close() {
        let raw = b"HTTP/1.0 200 OK\r\n\r\nhello";
        assert_eq!(parse_response(raw, false), Ok(None));
        assert_eq!(parse_response(raw, true).expect("good").expect("whole").body, b"hello");
    }

    /// What is not HTTP/1.x is an error, not a panic.
    #[test]
    fn what_is_not_http_is_an_error() {
        for raw in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 \xff\r\n\r\n",
        ] {
            assert!(
                matches!(parse_response(raw, true), Err(ResponseError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        let endless = vec![b'x'; MAX_HEAD_BYTES + 1];
        assert_eq!(parse_response(&endless, false), Err(ResponseError::HeadTooLarge));
    }
}
