//! The dashboard's JSON API as this binary reads it: a [`Client`] that gets one path and
//! says, as an [`ApiError`], why it could not. The answers' types are the dashboard's own
//! (`shoal::dashboard::api`), so a change to what it writes is a change to what this reads.
//!
//! An answer is kept both ways: as the JSON that came (printed as it is by `--json`) and as
//! those types (for the tables), read from it with [`parse`].

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::http::{self, HttpError, Url};

/// The dashboard's API of one node.
#[derive(Clone, Debug)]
pub(crate) struct Client {
    url: Url,
    token: Option<String>,
    timeout: Duration,
}

/// A request to the API that brought back no answer to show. Nothing in the cluster changed:
/// every request is a `GET`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// No answer: the dashboard could not be reached, or did not answer in HTTP/1.1 within the
    /// timeout.
    #[error("{0}")]
    Http(#[from] HttpError),
    /// `401`: the dashboard has a token, and the request did not carry it.
    #[error(
        "{url} needs the dashboard's token (401 Unauthorized): pass --token TOKEN or set \
         SHOAL_TOKEN"
    )]
    TokenMissing {
        /// The dashboard.
        url: String,
    },
    /// `401` although a token was sent: not the dashboard's.
    #[error("{url} refused the token given (401 Unauthorized): check --token or SHOAL_TOKEN")]
    TokenRefused {
        /// The dashboard.
        url: String,
    },
    /// `403`: a dashboard without a token serves only requests that name a loopback host.
    #[error(
        "{url} refused the request (403 Forbidden: {message}); a dashboard without a token \
         answers only URLs that name a loopback host, such as http://127.0.0.1:PORT"
    )]
    Forbidden {
        /// The dashboard.
        url: String,
        /// What it said.
        message: String,
    },
    /// `404`: no such path; not a dashboard, or one of another version.
    #[error("{url} has no {path} (404 Not Found): is this a Shoal dashboard of this version?")]
    NotFound {
        /// The dashboard.
        url: String,
        /// The path asked for.
        path: String,
    },
    /// Any other status than `200`.
    #[error("{url}{path} answered {status}: {message}")]
    Status {
        /// The dashboard.
        url: String,
        /// The path asked for.
        path: String,
        /// The status code.
        status: u16,
        /// The answer's `error`, or the start of its body.
        message: String,
    },
    /// A `200` whose body is not the JSON expected.
    #[error("{url}{path} answered with JSON this inspector cannot read: {reason}")]
    BadJson {
        /// The dashboard.
        url: String,
        /// The path asked for.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `shoal hub ID` for a hub the node does not run.
    #[error("no hub {id:?} runs on this node; its hubs: {}", list_or_none(known))]
    UnknownHub {
        /// The hub asked for.
        id: String,
        /// The hubs it runs.
        known: Vec<String>,
    },
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() { "none".to_owned() } else { names.join(", ") }
}

impl Client {
    /// A client of the dashboard at `url`, sending `token` with every request, each request
    /// bounded by `timeout`.
    pub(crate) fn new(url: Url, token: Option<String>, timeout: Duration) -> Self {
        Self { url, token, timeout }
    }

    /// `GET path`, answered `200` with JSON.
    pub(crate) async fn get(&self, path: &str) -> Result<Value, ApiError> {
        let response = http::get(&self.url, path, self.token.as_deref(), self.timeout).await?;
        read_answer(
            &self.url.to_string(),
            path,
            self.token.is_some(),
            response.status,
            &response.body,
        )
    }

    /// `json`, this dashboard's answer to `path`, as a `T`.
    pub(crate) fn parse<T: DeserializeOwned>(
        &self,
        path: &str,
        json: &Value,
    ) -> Result<T, ApiError> {
        parse(&self.url.to_string(), path, json)
    }
}

/// What an answer of `status` with `body` to `GET path` means.
pub(crate) fn read_answer(
    url: &str,
    path: &str,
    sent_token: bool,
    status: u16,
    body: &[u8],
) -> Result<Value, ApiError> {
    let url = url.to_owned();
    let path = path.to_owned();
    let json = serde_json::from_slice::<Value>(body);
    match status {
        200 => json.map_err(|error| ApiError::BadJson { url, path, reason: error.to_string() }),
        401 if sent_token => Err(ApiError::TokenRefused { url }),
        401 => Err(ApiError::TokenMissing { url }),
        403 => Err(ApiError::Forbidden { url, message: error_message(json.ok(), body) }),
        404 => Err(ApiError::NotFound { url, path }),
        status => {
            Err(ApiError::Status { url, path, status, message: error_message(json.ok(), body) })
        }
    }
}

/// The `error` of a JSON error answer, or the start of the body.
fn error_message(json: Option<Value>, body: &[u8]) -> String {
    match json.as_ref().and_then(|json| json["error"].as_str()) {
        Some(message) => message.to_owned(),
        None => String::from_utf8_lossy(body).chars().take(200).collect(),
    }
}

/// `json`, the answer to `path`, as a `T`.
pub(crate) fn parse<T: DeserializeOwned>(
    url: &str,
    path: &str,
    json: &Value,
) -> Result<T, ApiError> {
    T::deserialize(json).map_err(|error| ApiError::BadJson {
        url: url.to_owned(),
        path: path.to_owned(),
        reason: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use shoal::dashboard::api::{HubsView, NodesView};

    use super::*;

    /// Each refusal says what to do about it; `401` tells to pass the token, or that the
    /// one given is wrong.
    #[test]
    fn refusals_say_what_to_do() {
        let url = "http://127.0.0.1:1";
        let message = |status, sent_token, body: &str| {
            let answer = read_answer(url, "/api/node", sent_token, status, body.as_bytes());
            answer.expect_err("a refusal").to_string()
        };
        assert!(message(401, false, "{}").contains("pass --token TOKEN or set SHOAL_TOKEN"));
        assert!(message(401, true, "{}").contains("refused the token given"));
        let forbidden = message(403, false, r#"{"error": "loopback only"}"#);
        assert!(forbidden.contains("loopback only") && forbidden.contains("127.0.0.1"));
        assert!(message(404, false, "{}").contains("has no /api/node (404"));
        assert!(message(503, false, r#"{"error": "too slow"}"#).contains("503: too slow"));
        assert!(message(500, false, "plain text").contains("500: plain text"));
        assert!(message(200, false, "{not json").contains("JSON this inspector cannot read"));
    }

    /// A field missing from an answer is a [`ApiError::BadJson`] naming it, not a panic.
    #[test]
    fn an_answer_of_another_shape_is_bad_json() {
        let json = serde_json::json!({ "nodes": { "items": [{ "name": "a" }], "total": 1 } });
        let error = parse::<NodesView>("http://x:1", "/api/nodes", &json).expect_err("bad");
        assert!(error.to_string().contains("missing field"), "{error}");
    }

    /// A hub is found among the hubs, then among the supervisors' hubs.
    #[test]
    fn hubs_are_found_by_id() {
        let hub = |id: &str| {
            serde_json::json!({
                "id": id, "running": true, "nodes": { "items": [], "total": 0, "truncated": false },
                "has_quorum": true, "partitioned": false, "children": 0,
                "per_node": { "items": [], "total": 0, "truncated": false }, "unplaced": 0,
                "sample": { "items": [], "total": 0, "truncated": false }
            })
        };
        let json = serde_json::json!({
            "hubs": [hub("a"), hub("b")], "total_hubs": 2,
            "supervisors": [hub("s")], "total_supervisors": 1
        });
        let hubs: HubsView = parse("u", "/api/hubs", &json).expect("good");
        assert_eq!(hubs.find("b").map(|hub| hub.id.as_str()), Some("b"));
        assert_eq!(hubs.find("s").map(|hub| hub.id.as_str()), Some("s"));
        assert!(hubs.find("z").is_none());
        let alone = serde_json::json!({ "hubs": [], "total_hubs": 0 });
        let alone: HubsView = parse("u", "/api/hubs", &alone).expect("no supervisors: none");
        assert!(alone.supervisors.is_empty());
    }
}
