//! The one client of a Trellis agent's HTTP API (Consul's API as the agent serves it on
//! loopback), shared by the sidecar proxy and the CLI.
//!
//! [`AgentClient`] sends each request with the ACL token (never shown by `Debug`); a caller
//! that parks many blocking queries (the proxy) uses h2c ([`AgentClient::multiplexed`]), so
//! that they are streams of one connection. Answers come back typed ([`Answer`] with `X-Consul-Index`, the content hash
//! and the ACL default), or raw ([`Raw`]) for callers that read the status themselves (the
//! CLI reproduces Consul's messages for some of them). The ACL API (`/v1/acl/*`,
//! `/v1/agent/token/<kind>`) has typed calls too (`acl_token_create`, `acl_policy_list`, ...).
//! Failures are an [`Error`]: the agent
//! unreachable, a non-2xx answer (status and the agent's message, in Consul's API client's
//! wording), or an answer that does not decode.

#![forbid(unsafe_code)]

mod acl;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use trellis_api::{
    AgentService, IndexedCaRoots, Intention, IssuedCert, RaftConfiguration, ServiceEntry,
};

/// How long one blocking query waits (Consul's ceiling).
pub const BLOCKING_WAIT: Duration = Duration::from_secs(600);
/// How long a call that is not a blocking query may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The agent address is not usable.
    #[error("invalid agent address {addr:?}: {reason}")]
    Address {
        /// The address given.
        addr: String,
        /// Why.
        reason: String,
    },
    /// No answer: the agent could not be reached, or the connection failed.
    #[error("cannot reach the agent at {base}: {message}")]
    Unreachable {
        /// The agent's base URL.
        base: String,
        /// What went wrong.
        message: String,
    },
    /// The agent answered with an error status (Consul's API client's wording).
    #[error("Unexpected response code: {status} ({message})")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The agent's message.
        message: String,
    },
    /// The answer is not what the call expects.
    #[error("{what}: the agent's answer is not what was expected: {message}")]
    Decode {
        /// The request.
        what: String,
        /// Why it does not decode.
        message: String,
    },
}

impl Error {
    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A decoded answer and the headers a caller blocks on next.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer<T> {
    /// The value.
    pub value: T,
    /// `X-Consul-Index` (0 when absent).
    pub index: u64,
    /// `X-Consul-ContentHash` (agent-local endpoints).
    pub hash: String,
    /// `X-Consul-Default-ACL-Policy` is `allow` (true when absent).
    pub acl_default_allow: bool,
}

/// An answer as it came: status, headers the callers read, and the body.
#[derive(Clone, Debug, PartialEq)]
pub struct Raw {
    /// The HTTP status.
    pub status: u16,
    /// `X-Consul-Index` (0 when absent).
    pub index: u64,
    /// `X-Consul-ContentHash`.
    pub hash: String,
    /// `X-Consul-Default-ACL-Policy` is `allow` (true when absent).
    pub acl_default_allow: bool,
    /// The body.
    pub body: Bytes,
}

impl Raw {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text (lossy), trimmed.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).trim().to_string()
    }

    /// [`Error::Status`] for this answer.
    pub fn error(&self) -> Error {
        Error::Status {
            status: self.status,
            message: self.text(),
        }
    }

    /// The body as JSON of type `T` (`what` names the request in the error).
    pub fn json<T: DeserializeOwned>(&self, what: &str) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Decode {
            what: what.to_string(),
            message: e.to_string(),
        })
    }

    /// The body decoded, once the status says it is a success.
    fn into_answer<T: DeserializeOwned>(self, what: &str) -> Result<Answer<T>, Error> {
        if !self.is_success() {
            return Err(self.error());
        }
        Ok(Answer {
            value: self.json(what)?,
            index: self.index,
            hash: self.hash,
            acl_default_allow: self.acl_default_allow,
        })
    }
}

/// A request body.
#[derive(Clone, Copy, Debug)]
pub enum Body<'a> {
    /// None.
    Empty,
    /// JSON.
    Json(&'a serde_json::Value),
    /// Text sent as it is (a file the user gave).
    Text(&'a str),
}

/// The local agent's HTTP API. Cheap to clone.
#[derive(Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("AgentClient")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// The agent's base URL from `host:port` or an `http(s)://` URL.
fn base_url(addr: &str) -> Result<Url, Error> {
    let text = if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let bad = |reason: String| Error::Address {
        addr: addr.to_string(),
        reason,
    };
    let url = Url::parse(&text).map_err(|e| bad(e.to_string()))?;
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(bad("not an address".into()));
    }
    Ok(url)
}

impl AgentClient {
    /// The agent at `addr` (`host:port` or an `http://` URL), sending `token` if given, over
    /// HTTP/1.1 (what any agent, or anything in front of one, speaks: the CLI's choice).
    pub fn new(addr: &str, token: Option<String>) -> Result<AgentClient, Error> {
        AgentClient::build(addr, token, false)
    }

    /// [`AgentClient::new`] over h2c to an `http://` agent (a Trellis agent serves it beside
    /// HTTP/1.1): every blocking query a caller parks is a stream of one connection, so a
    /// caller that follows many things (the sidecar proxy) holds one place of the agent's
    /// per-client connection limit.
    pub fn multiplexed(addr: &str, token: Option<String>) -> Result<AgentClient, Error> {
        AgentClient::build(addr, token, true)
    }

    fn build(addr: &str, token: Option<String>, h2c: bool) -> Result<AgentClient, Error> {
        let base = base_url(addr)?;
        let mut http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5));
        if h2c && base.scheme() == "http" {
            http = http.http2_prior_knowledge();
        }
        let http = http.build().map_err(|e| Error::Address {
            addr: addr.to_string(),
            reason: format!("building the HTTP client: {e}"),
        })?;
        Ok(AgentClient {
            http,
            base,
            token: token.filter(|t| !t.is_empty()),
        })
    }

    /// The agent's base URL.
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The URL of `/v1/<segments...>?<query>` (each segment escaped).
    pub fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push("v1").extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Sends a request and returns the answer as it came, whatever its status.
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Body<'_>,
        timeout: Duration,
    ) -> Result<Raw, Error> {
        let url = self.url(segments, query);
        let mut req = self.http.request(method, url).timeout(timeout);
        if let Some(t) = &self.token {
            req = req.header("x-consul-token", t);
        }
        req = match body {
            Body::Empty => req,
            Body::Json(v) => req.json(v),
            Body::Text(t) => req.body(t.to_string()),
        };
        let unreachable = |e: reqwest::Error| Error::Unreachable {
            base: self.base().to_string(),
            message: e.to_string(),
        };
        let resp = req.send().await.map_err(unreachable)?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let status = resp.status().as_u16();
        let index = header("x-consul-index").parse().unwrap_or(0);
        let hash = header("x-consul-contenthash");
        let acl_default_allow = header("x-consul-default-acl-policy") != "deny";
        let body = resp.bytes().await.map_err(unreachable)?;
        Ok(Raw {
            status,
            index,
            hash,
            acl_default_allow,
            body,
        })
    }

    /// GETs and decodes a 2xx answer; `blocking` allows for a blocking query's wait.
    pub async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
        blocking: bool,
    ) -> Result<Answer<T>, Error> {
        let timeout = if blocking {
            BLOCKING_WAIT + CALL_TIMEOUT
        } else {
            CALL_TIMEOUT
        };
        let what = format!("GET /v1/{}", segments.join("/"));
        self.call(Method::GET, segments, query, Body::Empty, timeout)
            .await?
            .into_answer(&what)
    }

    /// Sends a write (`PUT`, `POST`, `DELETE`) and returns its 2xx answer's body.
    pub async fn send(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Body<'_>,
    ) -> Result<Raw, Error> {
        let raw = self
            .call(method, segments, query, body, CALL_TIMEOUT)
            .await?;
        if raw.is_success() {
            Ok(raw)
        } else {
            Err(raw.error())
        }
    }

    /// `?index=&wait=` of a blocking query past `index` (none when 0: answered at once).
    fn blocking(index: u64, wait: &str) -> Vec<(&'static str, String)> {
        if index == 0 {
            Vec::new()
        } else {
            vec![("index", index.to_string()), ("wait", wait.to_string())]
        }
    }

    async fn get_blocking<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        mut query: Vec<(&str, String)>,
        index: u64,
    ) -> Result<Answer<T>, Error> {
        let wait = format!("{}s", BLOCKING_WAIT.as_secs());
        query.extend(Self::blocking(index, &wait));
        let pairs: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.get(segments, &pairs, index > 0).await
    }

    /// A service registered on the agent; with `hash`, blocks until its content changes.
    pub async fn service(&self, id: &str, hash: &str) -> Result<Answer<AgentService>, Error> {
        let wait = format!("{}s", BLOCKING_WAIT.as_secs());
        let query: Vec<(&str, &str)> = if hash.is_empty() {
            Vec::new()
        } else {
            vec![("hash", hash), ("wait", &wait)]
        };
        self.get(&["agent", "service", id], &query, !hash.is_empty())
            .await
    }

    /// Every service registered on the agent.
    pub async fn services(&self) -> Result<BTreeMap<String, AgentService>, Error> {
        Ok(self.get(&["agent", "services"], &[], false).await?.value)
    }

    /// The leaf certificate for `service`; with `index`, blocks until a newer one is issued.
    pub async fn leaf(&self, service: &str, index: u64) -> Result<Answer<IssuedCert>, Error> {
        self.get_blocking(
            &["agent", "connect", "ca", "leaf", service],
            Vec::new(),
            index,
        )
        .await
    }

    /// The CA roots; with `index`, blocks until they change.
    pub async fn roots(&self, index: u64) -> Result<Answer<IndexedCaRoots>, Error> {
        self.get_blocking(&["agent", "connect", "ca", "roots"], Vec::new(), index)
            .await
    }

    /// The intentions that apply to `destination`, from the agent's cache; with `index`,
    /// blocks until they change.
    pub async fn intentions(
        &self,
        destination: &str,
        index: u64,
    ) -> Result<Answer<Vec<Intention>>, Error> {
        let query = vec![
            ("by", "destination".to_string()),
            ("name", destination.to_string()),
            ("cached", String::new()),
        ];
        let answer: Answer<HashMap<String, Vec<Intention>>> = self
            .get_blocking(&["connect", "intentions", "match"], query, index)
            .await?;
        let Answer {
            mut value,
            index,
            hash,
            acl_default_allow,
        } = answer;
        Ok(Answer {
            value: value.remove(destination).unwrap_or_default(),
            index,
            hash,
            acl_default_allow,
        })
    }

    /// `/v1/agent/self`, as JSON.
    pub async fn agent_self(&self) -> Result<serde_json::Value, Error> {
        Ok(self.get(&["agent", "self"], &[], false).await?.value)
    }

    /// The agent's datacenter: from `/v1/agent/self`, or, when the token may not read the
    /// agent (`agent:read`, which a service identity does not grant), the first of
    /// `/v1/catalog/datacenters` (the agent's own, and readable without a token).
    pub async fn datacenter(&self) -> Result<String, Error> {
        let me = match self.agent_self().await {
            Ok(me) => me,
            Err(Error::Status { status: 403, .. }) => {
                let dcs: Vec<String> = self
                    .get(&["catalog", "datacenters"], &[], false)
                    .await?
                    .value;
                return dcs.into_iter().next().ok_or_else(|| Error::Decode {
                    what: "GET /v1/catalog/datacenters".into(),
                    message: "names no datacenter".into(),
                });
            }
            Err(e) => return Err(e),
        };
        me.pointer("/Config/Datacenter")
            .and_then(|v| v.as_str())
            .filter(|dc| !dc.is_empty())
            .map(str::to_string)
            .ok_or_else(|| Error::Decode {
                what: "GET /v1/agent/self".into(),
                message: "names no datacenter".into(),
            })
    }

    /// The agent's `default_intention_policy`: `Some(true)` allow, `Some(false)` deny, `None`
    /// when unset (the ACL default then decides), or when the token may not read the agent
    /// (`agent:read`).
    pub async fn default_intention_policy(&self) -> Result<Option<bool>, Error> {
        let me = match self.agent_self().await {
            Ok(me) => me,
            Err(Error::Status { status: 403, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(
            match me
                .pointer("/DebugConfig/DefaultIntentionPolicy")
                .and_then(|v| v.as_str())
            {
                Some("allow") => Some(true),
                Some("deny") => Some(false),
                _ => None,
            },
        )
    }

    /// The passing Connect-capable instances of `service` (in `datacenter`, empty for the
    /// agent's), from the agent's cache; with `index`, blocks until they change.
    pub async fn connect_instances(
        &self,
        service: &str,
        datacenter: &str,
        index: u64,
    ) -> Result<Answer<Vec<ServiceEntry>>, Error> {
        let mut query = vec![("passing", String::new()), ("cached", String::new())];
        if !datacenter.is_empty() {
            query.push(("dc", datacenter.to_string()));
        }
        self.get_blocking(&["health", "connect", service], query, index)
            .await
    }

    /// The members the agent knows (`/v1/agent/members`), as JSON objects.
    pub async fn members(&self) -> Result<Vec<serde_json::Value>, Error> {
        Ok(self.get(&["agent", "members"], &[], false).await?.value)
    }

    /// Has the agent leave the datacenter gracefully (`PUT /v1/agent/leave`).
    pub async fn leave(&self) -> Result<(), Error> {
        self.send(Method::PUT, &["agent", "leave"], &[], Body::Empty)
            .await
            .map(|_| ())
    }

    /// The Raft configuration (`/v1/operator/raft/configuration`).
    pub async fn raft_configuration(&self) -> Result<RaftConfiguration, Error> {
        Ok(self
            .get(&["operator", "raft", "configuration"], &[], false)
            .await?
            .value)
    }

    /// Removes a server from the Raft configuration by `id` or `address` (the key).
    pub async fn remove_peer(&self, key: &str, value: &str) -> Result<(), Error> {
        self.send(
            Method::DELETE,
            &["operator", "raft", "peer"],
            &[(key, value)],
            Body::Empty,
        )
        .await
        .map(|_| ())
    }

    /// The CA configuration (`/v1/connect/ca/configuration`), as JSON.
    pub async fn ca_configuration(&self) -> Result<serde_json::Value, Error> {
        Ok(self
            .get(&["connect", "ca", "configuration"], &[], false)
            .await?
            .value)
    }

    /// Sets the CA configuration from its JSON text, sent as it is.
    pub async fn set_ca_configuration(&self, json_text: &str) -> Result<(), Error> {
        self.send(
            Method::PUT,
            &["connect", "ca", "configuration"],
            &[],
            Body::Text(json_text),
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_paths() {
        let c = AgentClient::new("127.0.0.1:8500", Some("secret".into())).unwrap();
        assert_eq!(c.base(), "http://127.0.0.1:8500");
        assert!(
            !format!("{c:?}").contains("secret"),
            "the token is never shown"
        );
        let u = c.url(&["agent", "service", "a b/c"], &[("hash", "x&y")]);
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:8500/v1/agent/service/a%20b%2Fc?hash=x%26y"
        );
        let c = AgentClient::new("http://localhost:9/", None).unwrap();
        assert_eq!(
            c.url(&["status", "leader"], &[]).as_str(),
            "http://localhost:9/v1/status/leader"
        );
        assert!(AgentClient::new("http://", None).is_err());
        let e = AgentClient::new("::not an address", None).unwrap_err();
        assert!(e.to_string().contains("invalid agent address"), "{e}");
    }

    /// Against a real HTTP server: the token and blocking parameters are sent, headers read,
    /// an error status becomes [`Error::Status`] with the agent's message, and an agent that
    /// is not there is [`Error::Unreachable`].
    #[tokio::test]
    async fn answers_errors_and_headers() {
        use axum::http::HeaderMap;
        use axum::routing::get;
        let app = axum::Router::new()
            .route(
                "/v1/agent/connect/ca/roots",
                get(
                    |headers: HeaderMap, q: axum::extract::RawQuery| async move {
                        let token = headers
                            .get("x-consul-token")
                            .map(|v| v.to_str().unwrap().to_string())
                            .unwrap_or_default();
                        (
                            [
                                ("x-consul-index", "42"),
                                ("x-consul-default-acl-policy", "deny"),
                            ],
                            serde_json::json!({
                                "ActiveRootID": format!("{token}|{}", q.0.unwrap_or_default()),
                                "TrustDomain": "t.consul",
                                "Roots": [],
                            })
                            .to_string(),
                        )
                    },
                ),
            )
            .route(
                "/v1/agent/members",
                get(|| async { (axum::http::StatusCode::FORBIDDEN, "Permission denied\n") }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let c = AgentClient::multiplexed(&addr.to_string(), Some("tok".into())).unwrap();
        let roots = c.roots(7).await.unwrap();
        let c1 = AgentClient::new(&addr.to_string(), Some("tok".into())).unwrap();
        assert_eq!(c1.roots(0).await.unwrap().value.active_root_id, "tok|");
        assert_eq!(roots.index, 42);
        assert!(!roots.acl_default_allow);
        assert_eq!(roots.value.active_root_id, "tok|index=7&wait=600s");
        let e = c.members().await.unwrap_err();
        assert_eq!(e.status(), Some(403));
        assert_eq!(
            e.to_string(),
            "Unexpected response code: 403 (Permission denied)"
        );
        drop(c);
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let gone = AgentClient::new(&format!("127.0.0.1:{port}"), None).unwrap();
        assert!(matches!(
            gone.members().await.unwrap_err(),
            Error::Unreachable { .. }
        ));
    }
}
