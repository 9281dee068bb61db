//! The server port's router: Raft RPCs between servers and the intent-level RPCs client agents
//! call ([`trellis_rpc::wire`]). Every error answers with its [`trellis_rpc::Code`] (status and
//! typed body), so that the caller decodes the same [`Error`] the handler had.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, FromRequest, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use trellis_raft::TypeConfig;
use trellis_rpc::wire::*;
use trellis_rpc::Error;
use trellis_state::QueryOutput;
use trellis_tls::rpc::Caller;

use crate::Server;

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
        .route(RPC_AUTO_ENCRYPT_SIGN, post(auto_encrypt_sign))
        .route(RPC_WATCH, post(watch))
        .route(RPC_ACL_IDENTITY, post(acl_identity))
        .route(RPC_HELLO, get(hello))
        .route(RPC_JOIN, post(join))
        .route(RPC_REMOVE, post(remove))
        .route(RPC_CONFIGURATION, get(configuration))
        .layer(axum::middleware::from_fn_with_state(
            server.clone(),
            authorize,
        ))
        // The listener reads each body whole within this limit before the router sees it.
        .layer(DefaultBodyLimit::max(crate::listen::Limits::RPC.max_body))
        .with_state(server)
}

/// The server port's RPCs only servers of this datacenter may call: Raft's own and joining
/// the cluster. (Client agents list and remove peers for an operator, so those stay open.)
const SERVERS_ONLY: &[&str] = &[RPC_APPEND, RPC_VOTE, RPC_SNAPSHOT, RPC_HELLO, RPC_JOIN];

/// Who called, as the listener put it on the request; a request without it (never served
/// by the listener) is taken for a client agent's.
fn caller_of<B>(req: &axum::http::Request<B>) -> Caller {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller::Client)
}

/// An error as the server port answers it: its code's status and the typed body.
fn error_response(e: &Error) -> Response {
    let wire = e.to_wire();
    let status =
        StatusCode::from_u16(wire.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(wire)).into_response()
}

/// A JSON request body; one that does not decode (not JSON, or not the request the path
/// takes: a raw state-machine command among them) is a 400 with the typed body, like every
/// other refusal on the server port.
struct Body<T>(T);

impl<S, T> FromRequest<S> for Body<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Response> {
        let path = req.uri().path().to_string();
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rejection) => {
                let reason = rejection.body_text();
                // Logged like every refusal: a raw state-machine command lands here.
                tracing::warn!(path, %reason, "server port: refused an undecodable request");
                Err(error_response(&Error::BadRequest(reason)))
            }
        }
    }
}

fn answer<T: serde::Serialize>(result: Result<T, Error>) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => error_response(&e),
    }
}

/// What a caller may call, before any handler runs: [`SERVERS_ONLY`] RPCs are refused to a
/// client agent's certificate (with `verify_server_hostname`: one not naming
/// `server.<dc>.<domain>`; or an auto-encrypt agent's); and where `verify_incoming` requires a
/// certificate, a caller that presented none (admitted by auto-encrypt's `allow_tls`) may only
/// ask for one. Each refusal is logged and a 403.
async fn authorize(
    State(s): State<Arc<Server>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path();
    match caller_of(&req) {
        Caller::Client | Caller::Agent(_) if SERVERS_ONLY.contains(&path) => {
            tracing::warn!(path, "server port: refused a client agent's certificate");
            return error_response(&Error::Forbidden(format!(
                "{path} is for servers of this datacenter"
            )));
        }
        Caller::Unverified
            if path != RPC_AUTO_ENCRYPT_SIGN
                && s.config().tls.as_ref().is_some_and(|t| t.verify_incoming()) =>
        {
            tracing::warn!(path, "server port: refused a caller without a certificate");
            return error_response(&Error::Forbidden(format!(
                "{path} needs a client certificate (verify_incoming); without one only \
                 {RPC_AUTO_ENCRYPT_SIGN} may be called"
            )));
        }
        _ => {}
    }
    next.run(req).await
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

/// A write: only the intent-level [`Write`]s decode, so no caller can send the CA's state or
/// any other command the servers keep to themselves.
async fn apply(State(s): State<Arc<Server>>, Body(write): Body<Write>) -> Response {
    answer(s.apply(write).await)
}

/// A leaf CSR. From an auto-encrypt agent's certificate it is signed only for a service that
/// agent's node offers (`for_node` set from the certificate, whatever the request said).
async fn ca_sign(
    State(s): State<Arc<Server>>,
    caller: Option<axum::Extension<Caller>>,
    Body(mut req): Body<SignRequest>,
) -> Response {
    if let Some(axum::Extension(Caller::Agent(agent))) = caller {
        req.for_node = Some(agent.node);
    }
    answer(s.sign(&req).await)
}

async fn auto_encrypt_sign(
    State(s): State<Arc<Server>>,
    Body(req): Body<AutoEncryptSignRequest>,
) -> Response {
    answer(s.auto_encrypt_sign(&req).await)
}

async fn ca_config(
    State(s): State<Arc<Server>>,
    Body(cfg): Body<trellis_api::CaConfiguration>,
) -> Response {
    answer(s.set_ca_config(cfg).await.map(|()| true))
}

/// A token's identity from this server's own copy (Consul's agents resolve tokens with stale
/// reads too). Whoever knows a secret may learn what it grants.
async fn acl_identity(
    State(s): State<Arc<Server>>,
    Body(req): Body<AclIdentityRequest>,
) -> Response {
    Json(s.store().acl_identity(&req.secret).0).into_response()
}

async fn hello(State(s): State<Arc<Server>>) -> Json<Hello> {
    Json(s.hello())
}

async fn join(State(s): State<Arc<Server>>, Body(req): Body<JoinRequest>) -> Response {
    answer(s.join(req).await.map(|()| true))
}

async fn remove(State(s): State<Arc<Server>>, Body(req): Body<RemoveRequest>) -> Response {
    answer(s.remove_peer(req).await.map(|()| true))
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

async fn query(State(s): State<Arc<Server>>, Body(req): Body<QueryRequest>) -> Response {
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
                QueryOutput::Found(answer) => {
                    (StatusCode::OK, headers, answer.json()).into_response()
                }
                QueryOutput::NotFound(msg) => (StatusCode::NOT_FOUND, headers, msg).into_response(),
            }
        }
        Err(e) => error_response(&e),
    }
}

/// Answered from this server's own copy (like a stale read): it only tells the caller when
/// to read again, and that read goes where the caller's consistency mode sends it.
async fn watch(State(s): State<Arc<Server>>, Body(req): Body<WatchRequest>) -> Response {
    let wait = std::time::Duration::from_millis(req.wait_ms).min(MAX_WATCH_WAIT);
    let changed = s.store().wait_for_keys(&req.keys, wait).await;
    answer(
        changed
            .map(|changed| WatchResponse { changed })
            .map_err(|e| match e {
                // More keys than one wait may carry: the caller's request is wrong.
                e @ trellis_state::StateError::TooManyWatchKeys { .. } => {
                    Error::BadRequest(e.to_string())
                }
                e => Error::Internal(e.to_string()),
            }),
    )
}

async fn status(State(s): State<Arc<Server>>) -> Json<StatusResponse> {
    Json(s.status())
}

/// Records a client agent's heartbeat on the leader (a follower passes it on, one hop at
/// most) and answers with this server's view of the cluster, so that the agent learns the
/// servers as it goes.
async fn heartbeat(State(s): State<Arc<Server>>, Body(hb): Body<Heartbeat>) -> Response {
    answer(heartbeat_inner(&s, hb).await)
}

async fn heartbeat_inner(s: &Server, hb: Heartbeat) -> Result<StatusResponse, Error> {
    hb.validate().map_err(Error::BadRequest)?;
    if s.is_leader() {
        if hb.leaving {
            crate::members::leave(s, &hb).await?;
        } else {
            s.liveness.record(&hb, Instant::now());
        }
    } else {
        let leader = s
            .leader()
            .filter(|_| !hb.forwarded)
            .ok_or(Error::NoLeader)?;
        let hb = Heartbeat {
            forwarded: true,
            ..hb
        };
        // Within the heartbeat's own period: a leader that does not answer by then is no
        // help, and the agent tries another server.
        let limit = std::time::Duration::from_millis(hb.interval_ms);
        s.http.heartbeat(&leader.addr, &hb, limit).await?;
    }
    Ok(s.status())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_is_one_parameter_among_others() {
        assert!(asks_local(Some("local")));
        assert!(asks_local(Some("a=1&local")));
        assert!(!asks_local(Some("locality=1")));
        assert!(!asks_local(None));
    }
}
