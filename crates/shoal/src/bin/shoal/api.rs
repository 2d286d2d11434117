//! The dashboard's JSON API as this binary reads it: a [`Client`] that gets one path and
//! says, as an [`ApiError`], why it could not, and the answers as types (only the fields the
//! tables show; `shoal::dashboard`'s module docs describe every field).
//!
//! An answer is kept both ways: as the JSON that came (printed as it is by `--json`) and as
//! these types (for the tables), read from it with [`parse`].

use std::time::Duration;

use serde::Deserialize;
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

/// A bounded list: some `items` of the `total` there were.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct List<T> {
    pub(crate) items: Vec<T>,
    pub(crate) total: usize,
}

impl<T> List<T> {
    /// Whether some items were left out.
    pub(crate) fn truncated(&self) -> bool {
        self.total > self.items.len()
    }
}

/// `GET /api/node`.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct NodeInfo {
    pub(crate) name: String,
    pub(crate) listen_addr: String,
    pub(crate) ready: bool,
    pub(crate) membership: String,
    pub(crate) processes: usize,
}

/// `GET /api/nodes`.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Nodes {
    pub(crate) nodes: List<NodeRow>,
}

/// A node of `GET /api/nodes`.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct NodeRow {
    pub(crate) name: String,
    pub(crate) this_node: bool,
    pub(crate) up: bool,
    pub(crate) incarnation: Option<u64>,
    pub(crate) listen_addr: Option<String>,
    pub(crate) history: List<Change>,
}

/// A node's going up or down.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Change {
    pub(crate) at_ms: u64,
    pub(crate) up: bool,
    pub(crate) reason: Option<String>,
}

/// `GET /api/paxos`.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Paxos {
    pub(crate) running: bool,
    pub(crate) error: Option<String>,
    pub(crate) acceptors: Vec<String>,
    pub(crate) version: Option<u64>,
    pub(crate) has_quorum: bool,
}

/// `GET /api/registry`.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Registry {
    pub(crate) running: bool,
    pub(crate) error: Option<String>,
    pub(crate) names: List<Name>,
    pub(crate) locks: List<Lock>,
    pub(crate) unreachable: List<String>,
}

/// A registered name.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Name {
    pub(crate) name: String,
    pub(crate) host: String,
    pub(crate) pid: Option<String>,
    pub(crate) token: u64,
    pub(crate) restart: String,
}

/// A held lock.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Lock {
    pub(crate) key: String,
    pub(crate) holder: String,
    pub(crate) host: String,
    pub(crate) token: u64,
    pub(crate) count: u32,
    pub(crate) waiters: usize,
}

/// `GET /api/groups`.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Groups {
    pub(crate) running: bool,
    pub(crate) groups: List<Group>,
}

/// A process group.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Group {
    pub(crate) name: String,
    pub(crate) members: List<Member>,
}

/// A member of a group.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Member {
    pub(crate) pid: String,
    pub(crate) node: Option<String>,
}

/// `GET /api/hubs`: the hubs, and the distributed supervisors' hubs (absent from dashboards
/// that do not list them).
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Hubs {
    pub(crate) hubs: Vec<Hub>,
    #[serde(default)]
    pub(crate) supervisors: Vec<Hub>,
}

impl Hubs {
    /// Every hub, the supervisors' after the others.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Hub> {
        self.hubs.iter().chain(&self.supervisors)
    }

    /// The hub `id` and where in the answer it is (`("hubs", 2)`), if listed.
    pub(crate) fn find(&self, id: &str) -> Option<(&'static str, usize)> {
        let position = |hubs: &[Hub]| hubs.iter().position(|hub| hub.id == id);
        match position(&self.hubs) {
            Some(index) => Some(("hubs", index)),
            None => position(&self.supervisors).map(|index| ("supervisors", index)),
        }
    }
}

/// A hub's ring.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Hub {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) supervisor: Option<String>,
    pub(crate) running: bool,
    pub(crate) nodes: List<String>,
    pub(crate) has_quorum: bool,
    pub(crate) partitioned: bool,
    pub(crate) children: usize,
    pub(crate) per_node: List<Share>,
    pub(crate) unplaced: usize,
}

/// A hub's children on one node.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Share {
    pub(crate) node: String,
    pub(crate) running: usize,
    pub(crate) other: usize,
}

/// `GET /api/cluster`.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Cluster {
    pub(crate) nodes: List<ClusterRow>,
}

/// A node of the cluster view.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct ClusterRow {
    pub(crate) name: String,
    pub(crate) answering: bool,
    pub(crate) error: Option<String>,
    pub(crate) summary: Option<Summary>,
}

/// What a node says of itself in the cluster view.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Summary {
    pub(crate) processes: Processes,
}

/// A node's processes with the longest mailboxes.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Processes {
    pub(crate) count: usize,
    pub(crate) top: Vec<Process>,
}

/// A process and its mailbox.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Process {
    pub(crate) pid: String,
    pub(crate) name: Option<String>,
    pub(crate) mailbox_len: usize,
}

#[cfg(test)]
mod tests {
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
        let error = parse::<Nodes>("http://x:1", "/api/nodes", &json).expect_err("bad");
        assert!(error.to_string().contains("missing field"), "{error}");
    }

    /// A hub is found among the hubs, then among the supervisors' hubs.
    #[test]
    fn hubs_are_found_by_id() {
        let hub = |id: &str| {
            serde_json::json!({
                "id": id, "running": true, "nodes": { "items": [], "total": 0 },
                "has_quorum": true, "partitioned": false, "children": 0,
                "per_node": { "items": [], "total": 0 }, "unplaced": 0
            })
        };
        let json = serde_json::json!({ "hubs": [hub("a"), hub("b")], "supervisors": [hub("s")] });
        let hubs: Hubs = parse("u", "/api/hubs", &json).expect("good");
        assert_eq!(hubs.find("b"), Some(("hubs", 1)));
        assert_eq!(hubs.find("s"), Some(("supervisors", 0)));
        assert_eq!(hubs.find("z"), None);
        let older: Hubs = parse("u", "/api/hubs", &serde_json::json!({ "hubs": [] })).expect("ok");
        assert!(older.supervisors.is_empty());
    }
}
