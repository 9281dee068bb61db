//! Consul's HTTP API on the agent.
//!
//! Handlers parse the request (path, query parameters, body) into a typed call, run it against
//! local state or the [`crate::Backend`], and answer with Consul's status codes, JSON and
//! `X-Consul-*` headers. Every parse failure is a 400 naming the problem; nothing is changed
//! by a rejected request.

mod acl;
mod agent;
mod catalog;
mod config;
mod connect;
mod intentions;
mod params;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use trellis_rpc::{QueryOptions, QueryResponse};
use trellis_state::{Query, QueryOutput};

pub use params::Params;
use trellis_acl_resolver::Identity;

use crate::error::bad;
use crate::{Agent, AgentError};

/// Largest request body accepted; the listener refuses a larger one before the router sees it
/// (see [`trellis_server::listen::Limits::HTTP`]).
pub const MAX_BODY: usize = trellis_server::listen::Limits::HTTP.max_body;

/// The agent's HTTP router.
pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/v1/status/leader", get(agent::status_leader))
        .route("/v1/status/peers", get(agent::status_peers))
        .route(
            "/v1/operator/raft/configuration",
            get(agent::raft_configuration),
        )
        .route("/v1/operator/raft/peer", delete(agent::raft_remove_peer))
        .route("/v1/agent/self", get(agent::agent_self))
        .route("/v1/agent/members", get(agent::members))
        .route("/v1/agent/leave", put(agent::leave))
        .route("/v1/agent/services", get(agent::services))
        .route("/v1/agent/service/{id}", get(agent::service))
        .route("/v1/agent/service/register", put(agent::register_service))
        .route(
            "/v1/agent/service/deregister/{id}",
            put(agent::deregister_service),
        )
        .route("/v1/agent/checks", get(agent::checks))
        .route("/v1/agent/check/register", put(agent::register_check))
        .route(
            "/v1/agent/check/deregister/{id}",
            put(agent::deregister_check),
        )
        .route("/v1/agent/check/pass/{id}", put(agent::check_pass))
        .route("/v1/agent/check/warn/{id}", put(agent::check_warn))
        .route("/v1/agent/check/fail/{id}", put(agent::check_fail))
        .route("/v1/agent/check/update/{id}", put(agent::check_update))
        .route("/v1/catalog/register", put(catalog::register))
        .route("/v1/catalog/deregister", put(catalog::deregister))
        .route("/v1/catalog/datacenters", get(catalog::datacenters))
        .route("/v1/catalog/nodes", get(catalog::nodes))
        .route("/v1/catalog/services", get(catalog::services))
        .route("/v1/catalog/node/{node}", get(catalog::node))
        .route("/v1/catalog/service/{name}", get(catalog::service))
        .route("/v1/catalog/connect/{name}", get(catalog::connect))
        .route("/v1/health/node/{node}", get(catalog::health_node))
        .route("/v1/health/checks/{service}", get(catalog::health_checks))
        .route("/v1/health/service/{name}", get(catalog::health_service))
        .route("/v1/health/connect/{name}", get(catalog::health_connect))
        .route("/v1/health/state/{state}", get(catalog::health_state))
        .route("/v1/connect/ca/roots", get(connect::roots))
        .route("/v1/agent/connect/ca/roots", get(connect::agent_roots))
        .route(
            "/v1/connect/ca/configuration",
            get(connect::get_config).put(connect::put_config),
        )
        .route("/v1/agent/connect/ca/leaf/{service}", get(connect::leaf))
        .route(
            "/v1/connect/intentions",
            get(intentions::list).post(intentions::create),
        )
        .route(
            "/v1/connect/intentions/exact",
            get(intentions::get_exact)
                .put(intentions::put_exact)
                .delete(intentions::delete_exact),
        )
        .route("/v1/connect/intentions/match", get(intentions::matches))
        .route("/v1/connect/intentions/check", get(intentions::check))
        .route(
            "/v1/connect/intentions/{id}",
            get(intentions::get_id)
                .put(intentions::update_id)
                .delete(intentions::delete_id),
        )
        .route(
            "/v1/agent/connect/authorize",
            post(intentions::authorize).put(intentions::authorize),
        )
        .route("/v1/config", put(config::set))
        .route("/v1/config/{kind}", get(config::list))
        .route(
            "/v1/config/{kind}/{name}",
            get(config::get).delete(config::delete),
        )
        .merge(acl::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response_with_state(
            agent.clone(),
            default_acl_policy,
        ))
        .with_state(agent)
}

/// Every response carries `X-Consul-Default-ACL-Policy`, as Consul's do: the ACL default
/// policy (`allow` while ACLs are off), which is also the default intention action.
async fn default_acl_policy(State(agent): State<Arc<Agent>>, mut r: Response) -> Response {
    r.headers_mut().insert(
        "x-consul-default-acl-policy",
        HeaderValue::from_static(agent.acl().default_policy_name()),
    );
    r
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "404 page not found\n").into_response()
}

async fn method_not_allowed() -> Response {
    (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n").into_response()
}

/// Decodes a JSON body the way Consul does: keys matched without regard to case or
/// underscores, then typed. Any failure is a 400 naming the problem.
pub(crate) fn decode<T: DeserializeOwned>(body: &Bytes) -> Result<T, AgentError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(bad("Request decode failed: empty body"));
    }
    let mut value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("Request decode failed: {e}")))?;
    if !value.is_object() {
        return Err(bad("Request decode failed: body must be a JSON object"));
    }
    trellis_api::canonicalize_keys(&mut value);
    serde_json::from_value(value).map_err(|e| bad(format!("Request decode failed: {e}")))
}

/// Commits a write and answers as Consul does: a refusal is a 400 with its reason, a
/// check-and-set write answers `true`/`false`, any other write answers `done`.
pub(crate) async fn write(
    agent: &Agent,
    write: trellis_rpc::Write,
    done: serde_json::Value,
) -> Result<Response, AgentError> {
    use trellis_state::Applied;
    match agent.backend().apply(write).await?.applied {
        Applied::Rejected(msg) => Err(bad(msg)),
        Applied::NotFound(msg) => Err(AgentError::NotFound(msg)),
        Applied::Denied(msg) => Err(trellis_acl_resolver::AclError::denied(msg).into()),
        Applied::Cas(ok) => Ok(json(&ok)),
        Applied::Done => Ok(json(&done)),
        Applied::Batch(_) => Err(AgentError::Server(trellis_rpc::Error::Internal(
            "a single write answered as a batch".into(),
        ))),
        // Only a newer server's command can be skipped, and this agent wrote this one.
        Applied::Skipped(ty) => Err(AgentError::Server(trellis_rpc::Error::Internal(format!(
            "the leader skipped a {ty} command as unknown"
        )))),
    }
}

/// Consul's cache headers: `X-Cache: HIT|MISS`, and on a hit `Age` in seconds.
pub(crate) fn cache_headers(resp: &mut Response, hit: bool, age: Duration) {
    let h = resp.headers_mut();
    h.insert(
        "x-cache",
        HeaderValue::from_static(if hit { "HIT" } else { "MISS" }),
    );
    if hit {
        h.insert("age", HeaderValue::from(age.as_secs()));
    }
}

/// A JSON response with status 200.
pub(crate) fn json<T: Serialize>(v: &T) -> Response {
    let body = serde_json::to_vec(v).expect("responses serialise");
    ([("content-type", "application/json")], body).into_response()
}

/// Read options from `?index`, `?wait`, `?stale`, `?consistent`, with Consul's defaults,
/// limits and jitter.
pub(crate) fn query_options(p: &Params) -> Result<QueryOptions, AgentError> {
    const DEFAULT_WAIT: Duration = Duration::from_secs(300);
    const MAX_WAIT: Duration = Duration::from_secs(600);
    let index = match p.get("index") {
        None | Some("") => 0,
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| bad(format!("Invalid index {v:?}")))?,
    };
    let mut wait = match p.get("wait") {
        None | Some("") => DEFAULT_WAIT,
        Some(v) => trellis_api::parse_go_duration(v)
            .map_err(|_| bad(format!("Invalid wait time {v:?}")))?,
    };
    if wait.is_zero() {
        wait = DEFAULT_WAIT;
    }
    wait = wait.min(MAX_WAIT);
    wait += wait.mul_f64(rand::random::<f64>() / 16.0);
    let stale = p.has("stale");
    let consistent = p.has("consistent");
    if stale && consistent {
        return Err(bad(
            "Cannot specify ?stale with ?consistent, conflicting semantics.",
        ));
    }
    if p.has("cached") && consistent {
        return Err(bad(
            "Cannot specify ?cached with ?consistent, conflicting semantics.",
        ));
    }
    Ok(QueryOptions {
        index,
        wait,
        stale,
        consistent,
    })
}

/// Runs a catalog read through the backend and answers with its body and Consul's headers;
/// with `?cached`, on the reads Consul's agent cache serves, from the agent's cache. The
/// answer holds only what the request's token may read.
pub(crate) async fn run_query(agent: &Agent, p: &Params, q: Query) -> Result<Response, AgentError> {
    let id = agent.identity(p.token()).await?;
    run_query_as(agent, p, q, &id).await
}

/// [`run_query`] for a caller already resolved.
pub(crate) async fn run_query_as(
    agent: &Agent,
    p: &Params,
    q: Query,
    id: &Arc<Identity>,
) -> Result<Response, AgentError> {
    for unsupported in ["filter", "node-meta"] {
        if p.get(unsupported).is_some_and(|v| !v.is_empty()) {
            return Err(bad(format!(
                "?{unsupported} is not supported on this endpoint by this version of Trellis"
            )));
        }
    }
    let cacheable = matches!(
        q,
        Query::CatalogServices
            | Query::CatalogService { .. }
            | Query::HealthService { .. }
            | Query::CaRoots
            | Query::IntentionMatch { .. }
    );
    if cacheable && p.has("cached") {
        return run_cached(agent, p, q, id).await;
    }
    // The query is kept (a copy) only to key a filtered answer: not with ACLs off.
    let kept = id.enabled().then(|| q.clone());
    let (r, consistency) = fetch(agent, p, q).await?;
    Ok(visible(
        agent,
        query_response,
        r,
        Some(consistency),
        id,
        kept.as_ref(),
    ))
}

/// The answer as `id` may see it (`X-Consul-Results-Filtered-By-ACLs: true` when rows were
/// left out and the caller sent a token), made into a response by `respond`. With `query`, the
/// answer is the store's answer to it at its index, and the filtered answer is kept for the
/// next read of the same identity.
pub(crate) fn visible(
    agent: &Agent,
    respond: fn(QueryResponse, Option<&'static str>) -> Response,
    mut r: QueryResponse,
    consistency: Option<&'static str>,
    id: &Arc<Identity>,
    query: Option<&Query>,
) -> Response {
    let mut filtered = false;
    if id.enabled() {
        if let QueryOutput::Found(answer) = &r.output {
            let less = match query {
                Some(q) => agent.filtered().visible(id, q, r.index, answer),
                None => answer.typed().map(|typed| {
                    trellis_acl_resolver::filter::answer(id.authorizer(), typed)
                        .map(trellis_state::Answer::new)
                }),
            };
            match less {
                Ok(Some(less)) => {
                    r.output = QueryOutput::Found(less);
                    filtered = true;
                }
                Ok(None) => {}
                // What cannot be read cannot be filtered: nothing is shown.
                Err(e) => {
                    return AgentError::Unavailable(format!("answer not filtered by ACLs: {e}"))
                        .into_response()
                }
            }
        }
    }
    let mut resp = respond(r, consistency);
    if filtered && id.given() {
        resp.headers_mut().insert(
            "x-consul-results-filtered-by-acls",
            HeaderValue::from_static("true"),
        );
    }
    resp
}

/// Answers a read from the agent's cache (`?cached`): a blocking `?index` waits on the cache
/// entry, not on the servers; `X-Cache` and `Age` say where the answer came from.
pub(crate) async fn run_cached(
    agent: &Agent,
    p: &Params,
    q: Query,
    id: &Arc<Identity>,
) -> Result<Response, AgentError> {
    agent.check_dc(p)?;
    let opts = query_options(p)?;
    let kept = id.enabled().then(|| q.clone());
    let key = crate::cache::Key::new(agent.config().datacenter.clone(), p.token(), q);
    let hit = agent.queries().get(key, opts.index, opts.wait).await?;
    let mut resp = visible(
        agent,
        query_response,
        QueryResponse {
            output: hit.value,
            index: hit.index,
            known_leader: hit.age.is_zero(),
            last_contact_ms: hit.age.as_millis() as u64,
        },
        None,
        id,
        kept.as_ref(),
    );
    cache_headers(&mut resp, hit.cache_hit, hit.age);
    Ok(resp)
}

/// Runs a read through the backend with the request's options; returns the answer and the
/// consistency mode it was served with.
pub(crate) async fn fetch(
    agent: &Agent,
    p: &Params,
    q: Query,
) -> Result<(QueryResponse, &'static str), AgentError> {
    agent.check_dc(p)?;
    let opts = query_options(p)?;
    let consistency = if opts.stale {
        "stale"
    } else if opts.consistent {
        "consistent"
    } else {
        "leader"
    };
    let r = agent.backend().query(q, opts).await?;
    Ok((r, consistency))
}

/// A read's answer with Consul's `X-Consul-*` headers; `consistency` is the mode a server read
/// was served with (`None` for an answer from the agent's cache).
pub(crate) fn query_response(r: QueryResponse, consistency: Option<&'static str>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert("x-consul-index", HeaderValue::from(r.index.max(1)));
    headers.insert(
        "x-consul-knownleader",
        HeaderValue::from_static(if r.known_leader { "true" } else { "false" }),
    );
    headers.insert("x-consul-lastcontact", HeaderValue::from(r.last_contact_ms));
    if let Some(c) = consistency {
        headers.insert(
            "x-consul-effective-consistency",
            HeaderValue::from_static(c),
        );
    }
    match r.output {
        QueryOutput::Found(body) => {
            headers.insert("content-type", HeaderValue::from_static("application/json"));
            (StatusCode::OK, headers, body.json()).into_response()
        }
        QueryOutput::NotFound(msg) => (StatusCode::NOT_FOUND, headers, msg + "\n").into_response(),
    }
}
