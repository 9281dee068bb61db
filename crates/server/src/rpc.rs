//! The server port: Raft RPCs between servers and the RPCs client agents call.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::{Deserialize, Serialize};
use trellis_raft::{TypeConfig, RPC_APPEND, RPC_SNAPSHOT, RPC_VOTE};
use trellis_state::{Applied, Command, Query, QueryOutput, WatchKey};

use crate::cluster::{self, Hello, JoinRequest, RaftConfiguration, RemoveRequest};
use crate::members::{Heartbeat, RPC_HEARTBEAT};
use crate::{QueryOptions, QueryResponse, Server, ServerError};
use trellis_tls::rpc::Caller;

/// Path of the write RPC: a [`Command`] in, an [`ApplyResponse`] out.
pub const RPC_APPLY: &str = "/v1/internal/apply";
/// Path of the read RPC: a [`QueryRequest`] in, the body and index headers out.
pub const RPC_QUERY: &str = "/v1/internal/query";
/// Path of the status RPC: a [`StatusResponse`] out.
pub const RPC_STATUS: &str = "/v1/internal/status";

/// Path of the leaf-signing RPC: a [`SignRequest`] in, an `IssuedCert` out.
pub const RPC_CA_SIGN: &str = "/v1/internal/ca/sign";
/// Path of the CA configuration RPC: a `CAConfiguration` in, `true` out.
pub const RPC_CA_CONFIG: &str = "/v1/internal/ca/config";
/// Path of the many-keys blocking wait: a [`WatchRequest`] in, a [`WatchResponse`] out.
pub const RPC_WATCH: &str = "/v1/internal/watch";
/// The most keys one [`WatchRequest`] may carry (the store's limit; more is a 400).
pub const MAX_WATCH_KEYS: usize = trellis_state::MAX_WATCH_KEYS;
/// The longest one [`WatchRequest`] waits (Consul's blocking-query ceiling).
pub const MAX_WATCH_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Watch keys and the change index the caller holds for each: answered when any key's index
/// differs, or after the wait.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct WatchRequest {
    /// The keys and the indexes held (0: none yet, answered at once).
    pub keys: Vec<(WatchKey, u64)>,
    /// How long to wait for a change, in milliseconds (capped at [`MAX_WATCH_WAIT`]).
    pub wait_ms: u64,
}

/// The keys of a [`WatchRequest`] whose index moved: (position in the request, index now).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct WatchResponse {
    /// The changed keys; empty when the wait passed without a change.
    pub changed: Vec<(u32, u64)>,
}

/// A leaf CSR sent to a server for signing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SignRequest {
    /// The CSR, PEM.
    pub csr: String,
}

/// The outcome of a write and the log index it was committed at.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ApplyResponse {
    /// What applying the command did.
    pub applied: Applied,
    /// Its Raft log index.
    pub index: u64,
}

/// A read sent to a server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct QueryRequest {
    /// What to read.
    pub query: Query,
    /// How to read it.
    pub options: QueryOptions,
}

/// Leader and voters as a server knows them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct StatusResponse {
    /// Leader server address, empty when none is known.
    pub leader: String,
    /// Voter server addresses.
    pub peers: Vec<String>,
    /// Voter node names, parallel to `peers`.
    pub peer_names: Vec<String>,
    /// Datacenter of the server.
    pub datacenter: String,
}

const H_INDEX: &str = "x-consul-index";
const H_KNOWN_LEADER: &str = "x-consul-knownleader";
const H_LAST_CONTACT: &str = "x-consul-lastcontact";

/// The server-port router.
pub(crate) fn router(server: Arc<Server>) -> Router {
    Router::new()
        .route(RPC_APPEND, post(append))
        .route(RPC_VOTE, post(vote))
        .route(RPC_SNAPSHOT, post(snapshot))
        .route(RPC_APPLY, post(apply))
        .route(RPC_QUERY, post(query))
        .route(RPC_STATUS, get(status))
        .route(RPC_HEARTBEAT, post(heartbeat))
        .route(RPC_CA_SIGN, post(ca_sign))
        .route(RPC_CA_CONFIG, post(ca_config))
        .route(RPC_WATCH, post(watch))
        .route(cluster::RPC_HELLO, get(hello))
        .route(cluster::RPC_JOIN, post(join))
        .route(cluster::RPC_REMOVE, post(remove))
        .route(cluster::RPC_CONFIGURATION, get(configuration))
        .layer(axum::middleware::from_fn(servers_only))
        // The listener reads each body whole within this limit before the router sees it.
        .layer(DefaultBodyLimit::max(crate::listen::Limits::RPC.max_body))
        .with_state(server)
}

/// The server port's RPCs only servers of this datacenter may call: Raft's own and joining
/// the cluster. (Client agents list and remove peers for an operator, so those stay open.)
const SERVERS_ONLY: &[&str] = &[
    RPC_APPEND,
    RPC_VOTE,
    RPC_SNAPSHOT,
    cluster::RPC_HELLO,
    cluster::RPC_JOIN,
];

/// Who called, as the listener put it on the request; a request without it (never served
/// by the listener) is taken for a client agent's.
fn caller_of<B>(req: &axum::http::Request<B>) -> Caller {
    req.extensions()
        .get::<Caller>()
        .copied()
        .unwrap_or(Caller::Client)
}

/// A refusal of what a client agent's certificate may not do: logged, and a 403 naming it.
fn refused(what: &str) -> Response {
    tracing::warn!(what, "server port: refused a client agent's certificate");
    (
        StatusCode::FORBIDDEN,
        format!("Permission denied: {what} is for servers of this datacenter\n"),
    )
        .into_response()
}

/// Refuses [`SERVERS_ONLY`] RPCs to a caller whose certificate is a client agent's (with
/// `verify_server_hostname`: one not naming `server.<dc>.<domain>`).
async fn servers_only(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if caller_of(&req) == Caller::Client && SERVERS_ONLY.contains(&req.uri().path()) {
        return refused(req.uri().path());
    }
    next.run(req).await
}

/// Whether a client agent may send `cmd`: anything its users write through it, but not the
/// CA's state, which only the leader's CA manager writes.
fn client_may_apply(cmd: &Command) -> bool {
    match cmd {
        Command::CaSet { .. } => false,
        Command::Batch { commands } => commands.iter().all(client_may_apply),
        _ => true,
    }
}

async fn append(
    State(s): State<Arc<Server>>,
    Json(req): Json<AppendEntriesRequest<TypeConfig>>,
) -> Response {
    *s.last_contact.lock() = Instant::now();
    Json(s.raft().append_entries(req).await).into_response()
}

async fn vote(State(s): State<Arc<Server>>, Json(req): Json<VoteRequest<u64>>) -> Response {
    Json(s.raft().vote(req).await).into_response()
}

async fn snapshot(
    State(s): State<Arc<Server>>,
    Json(req): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Response {
    *s.last_contact.lock() = Instant::now();
    Json(s.raft().install_snapshot(req).await).into_response()
}

/// The HTTP status a server error answers with, on the server port and the HTTP API alike.
pub fn error_status(e: &ServerError) -> StatusCode {
    use trellis_ca::CaError;
    match e {
        ServerError::NoLeader => StatusCode::SERVICE_UNAVAILABLE,
        ServerError::Ca(CaError::InvalidCsr(_) | CaError::InvalidConfig(_)) => {
            StatusCode::BAD_REQUEST
        }
        ServerError::Ca(CaError::RateLimited) => StatusCode::TOO_MANY_REQUESTS,
        ServerError::Refused(_) => StatusCode::BAD_REQUEST,
        ServerError::Ca(CaError::Uninitialized) => StatusCode::SERVICE_UNAVAILABLE,
        ServerError::Remote { status, .. } if (400..500).contains(status) => {
            StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error_response(e: &ServerError) -> Response {
    let message = match e {
        // A remote server's own message, without the wrapping.
        ServerError::Remote { message, .. } => message.clone(),
        other => other.to_string(),
    };
    (error_status(e), message).into_response()
}

async fn ca_sign(State(s): State<Arc<Server>>, Json(req): Json<SignRequest>) -> Response {
    match s.sign(&req.csr).await {
        Ok(cert) => Json(cert).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn ca_config(
    State(s): State<Arc<Server>>,
    Json(cfg): Json<trellis_api::CaConfiguration>,
) -> Response {
    match s.set_ca_config(cfg).await {
        Ok(()) => Json(true).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn hello(State(s): State<Arc<Server>>) -> Json<Hello> {
    Json(s.hello())
}

async fn join(State(s): State<Arc<Server>>, Json(req): Json<JoinRequest>) -> Response {
    match s.join(req).await {
        Ok(()) => Json(true).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn remove(State(s): State<Arc<Server>>, Json(req): Json<RemoveRequest>) -> Response {
    match s.remove_peer(req).await {
        Ok(()) => Json(true).into_response(),
        Err(e) => error_response(&e),
    }
}

/// Whether a query string carries `local`: answer from this server alone, without asking the
/// leader (what a server asks the leader with, so a leadership change cannot bounce it).
fn asks_local(query: Option<&str>) -> bool {
    query.is_some_and(|q| q.split('&').any(|p| p == "local"))
}

/// The leader's view; `?local` answers from this server alone (what the leader is asked with).
async fn configuration(
    State(s): State<Arc<Server>>,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> Json<RaftConfiguration> {
    if asks_local(q.as_deref()) {
        Json(s.raft_configuration())
    } else {
        Json(s.leader_raft_configuration().await)
    }
}

async fn apply(
    State(s): State<Arc<Server>>,
    caller: Option<axum::Extension<Caller>>,
    Json(cmd): Json<Command>,
) -> Response {
    let caller = caller.map_or(Caller::Client, |c| c.0);
    if caller == Caller::Client && !client_may_apply(&cmd) {
        return refused("writing the CA state");
    }
    match s.apply(cmd).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn query(State(s): State<Arc<Server>>, Json(req): Json<QueryRequest>) -> Response {
    match s.query(req.query, req.options).await {
        Ok(r) => {
            let mut headers = HeaderMap::new();
            headers.insert(H_INDEX, HeaderValue::from(r.index));
            headers.insert(
                H_KNOWN_LEADER,
                HeaderValue::from_static(if r.known_leader { "true" } else { "false" }),
            );
            headers.insert(H_LAST_CONTACT, HeaderValue::from(r.last_contact_ms));
            match r.output {
                QueryOutput::Found(body) => (StatusCode::OK, headers, body).into_response(),
                QueryOutput::NotFound(msg) => (StatusCode::NOT_FOUND, headers, msg).into_response(),
            }
        }
        Err(e) => error_response(&e),
    }
}

/// Answered from this server's own copy (like a stale read): it only tells the caller when
/// to read again, and that read goes where the caller's consistency mode sends it.
async fn watch(State(s): State<Arc<Server>>, Json(req): Json<WatchRequest>) -> Response {
    let wait = std::time::Duration::from_millis(req.wait_ms).min(MAX_WATCH_WAIT);
    match s.store().wait_for_keys(&req.keys, wait).await {
        Ok(changed) => Json(WatchResponse { changed }).into_response(),
        // More keys than one wait may carry: the caller's request is wrong.
        Err(e @ trellis_state::StateError::TooManyWatchKeys { .. }) => {
            (StatusCode::BAD_REQUEST, e.to_string()).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn status(State(s): State<Arc<Server>>) -> Json<StatusResponse> {
    Json(s.status())
}

/// Records a client agent's heartbeat on the leader (a follower passes it on, one hop at
/// most) and answers with this server's view of the cluster, so that the agent learns the
/// servers as it goes.
async fn heartbeat(State(s): State<Arc<Server>>, Json(hb): Json<Heartbeat>) -> Response {
    if let Err(msg) = hb.validate() {
        return (StatusCode::BAD_REQUEST, msg).into_response();
    }
    if s.is_leader() {
        if hb.leaving {
            if let Err(e) = crate::members::leave(&s, &hb).await {
                return error_response(&e);
            }
        } else {
            s.liveness.record(&hb, Instant::now());
        }
    } else {
        let Some(leader) = s.leader().filter(|_| !hb.forwarded) else {
            return error_response(&ServerError::NoLeader);
        };
        let hb = Heartbeat {
            forwarded: true,
            ..hb
        };
        // Within the heartbeat's own period: a leader that does not answer by then is no
        // help, and the agent tries another server.
        let limit = std::time::Duration::from_millis(hb.interval_ms);
        let sent: Result<StatusResponse, _> =
            post_json_within(&s.http, &leader.addr, RPC_HEARTBEAT, &hb, limit).await;
        if let Err(e) = sent {
            return error_response(&e);
        }
    }
    Json(s.status()).into_response()
}

/// A failure to send a request to `addr`: [`ServerError::Unreachable`] when no connection
/// could be made (nothing was delivered), [`ServerError::Rpc`] otherwise.
pub fn send_error(addr: &str, e: reqwest::Error) -> ServerError {
    let (addr, message) = (addr.to_string(), e.to_string());
    if e.is_connect() {
        ServerError::Unreachable { addr, message }
    } else {
        ServerError::Rpc { addr, message }
    }
}

/// Posts a JSON RPC to a server's port and decodes its JSON answer. Transport failures are
/// [`ServerError::Unreachable`] or [`ServerError::Rpc`] (worth trying another server); a 503 is [`ServerError::NoLeader`];
/// other error statuses are [`ServerError::Remote`].
pub async fn post_json<Req, Resp>(
    http: &trellis_raft::RpcClient,
    addr: &str,
    path: &str,
    body: &Req,
) -> Result<Resp, ServerError>
where
    Req: Serialize,
    Resp: serde::de::DeserializeOwned,
{
    post_json_within(http, addr, path, body, std::time::Duration::from_secs(30)).await
}

/// [`post_json`] with its own time limit for the whole call.
pub async fn post_json_within<Req, Resp>(
    http: &trellis_raft::RpcClient,
    addr: &str,
    path: &str,
    body: &Req,
    limit: std::time::Duration,
) -> Result<Resp, ServerError>
where
    Req: Serialize,
    Resp: serde::de::DeserializeOwned,
{
    let err = |message: String| ServerError::Rpc {
        addr: addr.to_string(),
        message,
    };
    let resp = http
        .post(addr, path)
        .timeout(limit)
        .json(body)
        .send()
        .await
        .map_err(|e| send_error(addr, e))?;
    match resp.status() {
        StatusCode::OK => resp.json().await.map_err(|e| err(e.to_string())),
        StatusCode::SERVICE_UNAVAILABLE => Err(ServerError::NoLeader),
        status => Err(ServerError::Remote {
            addr: addr.to_string(),
            status: status.as_u16(),
            message: resp.text().await.unwrap_or_default(),
        }),
    }
}

/// Sends a many-keys wait to a server's port (client agents' cache refreshes).
pub async fn remote_watch(
    http: &trellis_raft::RpcClient,
    addr: &str,
    req: &WatchRequest,
) -> Result<WatchResponse, ServerError> {
    let err = |message: String| ServerError::Rpc {
        addr: addr.to_string(),
        message,
    };
    let wait = std::time::Duration::from_millis(req.wait_ms).min(MAX_WATCH_WAIT);
    let resp = http
        .post(addr, RPC_WATCH)
        .timeout(wait + std::time::Duration::from_secs(10))
        .json(req)
        .send()
        .await
        .map_err(|e| send_error(addr, e))?;
    match resp.status() {
        StatusCode::OK => resp.json().await.map_err(|e| err(e.to_string())),
        StatusCode::SERVICE_UNAVAILABLE => Err(ServerError::NoLeader),
        status => Err(ServerError::Remote {
            addr: addr.to_string(),
            status: status.as_u16(),
            message: resp.text().await.unwrap_or_default(),
        }),
    }
}

/// Sends a read to a server's port and decodes the answer; used for forwarding to the leader
/// and by client agents.
pub async fn remote_query(
    http: &trellis_raft::RpcClient,
    addr: &str,
    req: &QueryRequest,
) -> Result<QueryResponse, ServerError> {
    let err = |message: String| ServerError::Rpc {
        addr: addr.to_string(),
        message,
    };
    // A blocking read may legitimately take the whole wait; allow for it plus slack.
    let timeout = req.options.wait + std::time::Duration::from_secs(10);
    let resp = http
        .post(addr, RPC_QUERY)
        .timeout(timeout)
        .json(req)
        .send()
        .await
        .map_err(|e| send_error(addr, e))?;
    let status = resp.status();
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
    let body: Bytes = resp.bytes().await.map_err(|e| err(e.to_string()))?;
    let output = match status {
        StatusCode::OK => QueryOutput::Found(body),
        StatusCode::NOT_FOUND => QueryOutput::NotFound(String::from_utf8_lossy(&body).into_owned()),
        StatusCode::SERVICE_UNAVAILABLE => return Err(ServerError::NoLeader),
        other => {
            return Err(ServerError::Remote {
                addr: addr.to_string(),
                status: other.as_u16(),
                message: String::from_utf8_lossy(&body).into_owned(),
            })
        }
    };
    Ok(QueryResponse {
        output,
        index,
        known_leader,
        last_contact_ms,
    })
}
