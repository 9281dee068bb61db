//! The one client of server ports: client agents, followers forwarding to the leader, and
//! servers forming a cluster all call through it.

use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use trellis_state::QueryOutput;

use crate::error::Error;
use crate::wire::*;

const H_INDEX: &str = "x-consul-index";
const H_KNOWN_LEADER: &str = "x-consul-knownleader";
const H_LAST_CONTACT: &str = "x-consul-lastcontact";

/// How long a call that is not a blocking wait may take, unless the caller says otherwise.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// What a blocking read or wait may take beyond its own wait before it counts as lost.
const WAIT_SLACK: Duration = Duration::from_secs(10);

/// A typed client of server ports, over one HTTP connection pool (HTTP/2 where the builder
/// says so; TLS as the server port's configuration says). Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: trellis_raft::RpcClient,
}

impl Client {
    /// A client from `builder`, dialling over TLS with `tls`'s client configuration when it
    /// has one (outgoing TLS on), plaintext otherwise.
    pub fn new(builder: reqwest::ClientBuilder, tls: Option<&trellis_tls::rpc::RpcTls>) -> Client {
        Client::with_config(builder, tls.and_then(|t| t.client_config()))
    }

    /// [`Client::new`] presenting no client certificate (auto-encrypt's requests, which must
    /// not depend on the certificate they renew).
    pub fn anonymous(
        builder: reqwest::ClientBuilder,
        tls: Option<&trellis_tls::rpc::RpcTls>,
    ) -> Client {
        Client::with_config(builder, tls.and_then(|t| t.anonymous_client_config()))
    }

    fn with_config(
        builder: reqwest::ClientBuilder,
        config: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> Client {
        let http = match config {
            Some(config) => trellis_raft::RpcClient::new(
                builder
                    .use_preconfigured_tls((*config).clone())
                    .build()
                    .expect("HTTP client builds"),
                true,
            ),
            None => {
                trellis_raft::RpcClient::new(builder.build().expect("HTTP client builds"), false)
            }
        };
        Client { http }
    }

    /// The HTTP client underneath (the Raft transport sends openraft's own messages over it).
    pub fn http(&self) -> &trellis_raft::RpcClient {
        &self.http
    }

    /// Sends a write to the server at `addr`.
    pub async fn apply(&self, addr: &str, write: &Write) -> Result<ApplyResponse, Error> {
        self.post(addr, RPC_APPLY, write, CALL_TIMEOUT).await
    }

    /// Has the server at `addr` sign a leaf CSR.
    pub async fn sign(
        &self,
        addr: &str,
        req: &SignRequest,
    ) -> Result<trellis_api::IssuedCert, Error> {
        self.post(addr, RPC_CA_SIGN, req, CALL_TIMEOUT).await
    }

    /// Asks the server at `addr` to sign this client agent's certificate (auto-encrypt).
    pub async fn auto_encrypt_sign(
        &self,
        addr: &str,
        req: &AutoEncryptSignRequest,
    ) -> Result<AutoEncryptSignResponse, Error> {
        self.post(addr, RPC_AUTO_ENCRYPT_SIGN, req, CALL_TIMEOUT)
            .await
    }

    /// Changes the CA configuration through the server at `addr`.
    pub async fn set_ca_config(
        &self,
        addr: &str,
        config: &trellis_api::CaConfiguration,
    ) -> Result<(), Error> {
        self.post::<_, bool>(addr, RPC_CA_CONFIG, config, CALL_TIMEOUT)
            .await
            .map(|_| ())
    }

    /// The token with `secret`, its policies and roles, as the server at `addr` has them.
    pub async fn acl_identity(
        &self,
        addr: &str,
        secret: &str,
    ) -> Result<Option<trellis_api::AclIdentity>, Error> {
        let req = AclIdentityRequest {
            secret: secret.to_string(),
        };
        self.post(addr, RPC_ACL_IDENTITY, &req, CALL_TIMEOUT).await
    }

    /// The server's view of leader and voters.
    pub async fn status(&self, addr: &str) -> Result<StatusResponse, Error> {
        self.get(addr, RPC_STATUS, Duration::from_secs(5)).await
    }

    /// Sends a heartbeat (or a leave) within `limit`.
    pub async fn heartbeat(
        &self,
        addr: &str,
        hb: &Heartbeat,
        limit: Duration,
    ) -> Result<StatusResponse, Error> {
        self.post(addr, RPC_HEARTBEAT, hb, limit).await
    }

    /// The Raft configuration: the leader's view, or with `local` the server's own.
    pub async fn raft_configuration(
        &self,
        addr: &str,
        local: bool,
        limit: Duration,
    ) -> Result<RaftConfiguration, Error> {
        let path = if local {
            format!("{RPC_CONFIGURATION}?local")
        } else {
            RPC_CONFIGURATION.to_string()
        };
        self.get(addr, &path, limit).await
    }

    /// Asks the cluster (through the server at `addr`) to remove a server.
    pub async fn remove_peer(&self, addr: &str, req: &RemoveRequest) -> Result<(), Error> {
        self.post::<_, bool>(addr, RPC_REMOVE, req, CALL_TIMEOUT)
            .await
            .map(|_| ())
    }

    /// Greets the server at `addr`.
    pub async fn hello(&self, addr: &str, limit: Duration) -> Result<Hello, Error> {
        self.get(addr, RPC_HELLO, limit).await
    }

    /// Asks the cluster (through the server at `addr`) to add this server.
    pub async fn join(&self, addr: &str, req: &JoinRequest, limit: Duration) -> Result<(), Error> {
        self.post::<_, bool>(addr, RPC_JOIN, req, limit)
            .await
            .map(|_| ())
    }

    /// Waits at the server at `addr` until one of the keys moves, or the wait passes.
    pub async fn watch(&self, addr: &str, req: &WatchRequest) -> Result<WatchResponse, Error> {
        let wait = Duration::from_millis(req.wait_ms).min(MAX_WATCH_WAIT);
        self.post(addr, RPC_WATCH, req, wait + WAIT_SLACK).await
    }

    /// Runs a read at the server at `addr` (blocking when the options say so).
    pub async fn query(&self, addr: &str, req: &QueryRequest) -> Result<QueryResponse, Error> {
        let resp = self
            .http
            .post(addr, RPC_QUERY)
            .timeout(req.options.wait + WAIT_SLACK)
            .json(req)
            .send()
            .await
            .map_err(|e| send_error(addr, e))?;
        let status = resp.status().as_u16();
        let header = |name: &str| -> u64 {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let index = header(H_INDEX).max(1);
        let last_contact_ms = header(H_LAST_CONTACT);
        let known_leader = resp
            .headers()
            .get(H_KNOWN_LEADER)
            .is_some_and(|v| v == "true");
        let body: Bytes = resp.bytes().await.map_err(|e| transport(addr, e))?;
        let output = match status {
            200 => QueryOutput::Found(trellis_state::Answer::from_json(&req.query, body)),
            404 => QueryOutput::NotFound(String::from_utf8_lossy(&body).into_owned()),
            other => return Err(Error::from_answer(other, &body)),
        };
        Ok(QueryResponse {
            output,
            index,
            known_leader,
            last_contact_ms,
        })
    }

    async fn post<Req, Resp>(
        &self,
        addr: &str,
        path: &str,
        body: &Req,
        limit: Duration,
    ) -> Result<Resp, Error>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let resp = self
            .http
            .post(addr, path)
            .timeout(limit)
            .json(body)
            .send()
            .await
            .map_err(|e| send_error(addr, e))?;
        answer(addr, resp).await
    }

    async fn get<Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        limit: Duration,
    ) -> Result<Resp, Error> {
        let resp = self
            .http
            .get(addr, path)
            .timeout(limit)
            .send()
            .await
            .map_err(|e| send_error(addr, e))?;
        answer(addr, resp).await
    }
}

/// Decodes a server port's answer: the JSON on 200, the typed error otherwise.
async fn answer<Resp: DeserializeOwned>(
    addr: &str,
    resp: reqwest::Response,
) -> Result<Resp, Error> {
    let status = resp.status().as_u16();
    let body = resp.bytes().await.map_err(|e| transport(addr, e))?;
    if status == 200 {
        serde_json::from_slice(&body).map_err(|e| Error::Transport {
            addr: addr.to_string(),
            message: format!("undecodable answer: {e}"),
        })
    } else {
        Err(Error::from_answer(status, &body))
    }
}

/// A failure to send a request to `addr`: [`Error::Unreachable`] when no connection could be
/// made (nothing was delivered), [`Error::Transport`] otherwise.
fn send_error(addr: &str, e: reqwest::Error) -> Error {
    if e.is_connect() {
        Error::Unreachable {
            addr: addr.to_string(),
            message: e.to_string(),
        }
    } else {
        transport(addr, e)
    }
}

fn transport(addr: &str, e: reqwest::Error) -> Error {
    Error::Transport {
        addr: addr.to_string(),
        message: e.to_string(),
    }
}
