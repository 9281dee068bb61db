//! The proxy's view of the local agent: the HTTP API calls it configures itself from, each a
//! blocking query so the proxy follows changes as they happen.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::de::DeserializeOwned;
use trellis_api::{AgentService, IndexedCaRoots, Intention, IssuedCert, ServiceEntry};

use crate::ProxyError;

/// How long one blocking query waits (Consul's ceiling).
pub const BLOCKING_WAIT: Duration = Duration::from_secs(600);

/// The local agent's HTTP API.
#[derive(Clone)]
pub struct AgentApi {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl std::fmt::Debug for AgentApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("AgentApi")
            .field("base", &self.base)
            .finish()
    }
}

/// What a blocking read answered and the index (or content hash) to block on next.
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

fn escape(segment: &str) -> String {
    form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

impl AgentApi {
    /// The agent at `addr` (`host:port` or an `http://` URL), sending `token` if given.
    pub fn new(addr: &str, token: Option<String>) -> Result<AgentApi, ProxyError> {
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{addr}")
        };
        let mut http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5));
        // The agent serves h2c beside HTTP/1.1: every blocking query this proxy parks is a
        // stream of one connection, so the proxy holds one place of the agent's per-client
        // connection limit however many things it follows.
        if base.starts_with("http://") {
            http = http.http2_prior_knowledge();
        }
        let http = http
            .build()
            .map_err(|e| ProxyError::Agent(format!("building the HTTP client: {e}")))?;
        Ok(AgentApi {
            http,
            base,
            token: token.filter(|t| !t.is_empty()),
        })
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        blocking: bool,
    ) -> Result<Answer<T>, ProxyError> {
        let url = format!("{}{path}", self.base);
        let timeout = if blocking {
            BLOCKING_WAIT + Duration::from_secs(30)
        } else {
            Duration::from_secs(30)
        };
        let mut req = self.http.get(&url).timeout(timeout);
        if let Some(t) = &self.token {
            req = req.header("x-consul-token", t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ProxyError::Agent(format!("GET {path}: {e}")))?;
        let status = resp.status();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let index = header("x-consul-index").parse().unwrap_or(0);
        let hash = header("x-consul-contenthash");
        let acl_default_allow = header("x-consul-default-acl-policy") != "deny";
        let body = resp
            .bytes()
            .await
            .map_err(|e| ProxyError::Agent(format!("GET {path}: {e}")))?;
        if !status.is_success() {
            return Err(ProxyError::Agent(format!(
                "GET {path}: {status}: {}",
                String::from_utf8_lossy(&body).trim()
            )));
        }
        let value = serde_json::from_slice(&body)
            .map_err(|e| ProxyError::Agent(format!("GET {path}: undecodable answer: {e}")))?;
        Ok(Answer {
            value,
            index,
            hash,
            acl_default_allow,
        })
    }

    fn blocking_index(index: u64) -> String {
        if index == 0 {
            String::new()
        } else {
            format!("index={index}&wait={}s", BLOCKING_WAIT.as_secs())
        }
    }

    /// A service registered on the agent; with `hash`, blocks until its content changes.
    pub async fn service(&self, id: &str, hash: &str) -> Result<Answer<AgentService>, ProxyError> {
        let wait = if hash.is_empty() {
            String::new()
        } else {
            format!("?hash={}&wait={}s", escape(hash), BLOCKING_WAIT.as_secs())
        };
        self.get(
            &format!("/v1/agent/service/{}{wait}", escape(id)),
            !hash.is_empty(),
        )
        .await
    }

    /// Every service registered on the agent.
    pub async fn services(&self) -> Result<BTreeMap<String, AgentService>, ProxyError> {
        Ok(self.get("/v1/agent/services", false).await?.value)
    }

    /// The leaf certificate for `service`; with `index`, blocks until a newer one is issued.
    pub async fn leaf(&self, service: &str, index: u64) -> Result<Answer<IssuedCert>, ProxyError> {
        let q = Self::blocking_index(index);
        self.get(
            &format!("/v1/agent/connect/ca/leaf/{}?{q}", escape(service)),
            index > 0,
        )
        .await
    }

    /// The CA roots; with `index`, blocks until they change.
    pub async fn roots(&self, index: u64) -> Result<Answer<IndexedCaRoots>, ProxyError> {
        let q = Self::blocking_index(index);
        self.get(&format!("/v1/agent/connect/ca/roots?{q}"), index > 0)
            .await
    }

    /// The intentions that apply to `destination`, from the agent's cache; with `index`,
    /// blocks until they change.
    pub async fn intentions(
        &self,
        destination: &str,
        index: u64,
    ) -> Result<Answer<Vec<Intention>>, ProxyError> {
        let q = Self::blocking_index(index);
        let answer: Answer<HashMap<String, Vec<Intention>>> = self
            .get(
                &format!(
                    "/v1/connect/intentions/match?by=destination&name={}&cached&{q}",
                    escape(destination)
                ),
                index > 0,
            )
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

    /// The agent's datacenter.
    pub async fn datacenter(&self) -> Result<String, ProxyError> {
        let me: serde_json::Value = self.get("/v1/agent/self", false).await?.value;
        me.pointer("/Config/Datacenter")
            .and_then(|v| v.as_str())
            .filter(|dc| !dc.is_empty())
            .map(str::to_string)
            .ok_or_else(|| ProxyError::Agent("/v1/agent/self names no datacenter".into()))
    }

    /// The agent's `default_intention_policy`: `Some(true)` allow, `Some(false)` deny, `None`
    /// when unset (the ACL default then decides).
    pub async fn default_intention_policy(&self) -> Result<Option<bool>, ProxyError> {
        let me: serde_json::Value = self.get("/v1/agent/self", false).await?.value;
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
    ) -> Result<Answer<Vec<ServiceEntry>>, ProxyError> {
        let q = Self::blocking_index(index);
        let dc = if datacenter.is_empty() {
            String::new()
        } else {
            format!("&dc={}", escape(datacenter))
        };
        self.get(
            &format!(
                "/v1/health/connect/{}?passing&cached{dc}&{q}",
                escape(service)
            ),
            index > 0,
        )
        .await
    }
}
