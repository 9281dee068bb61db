//! `/v1/agent/*` and `/v1/status/*`: the agent's own services, checks and identity.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use trellis_api::{status, AgentService, CheckDefinition, HealthCheck, ServiceDefinition};

use super::{decode, json, query_options, Params};
use crate::error::bad;
use crate::{Agent, AgentError};

type Res = Result<Response, AgentError>;

pub(crate) async fn status_leader(State(a): State<Arc<Agent>>) -> Res {
    Ok(json(&a.backend().status().await?.leader))
}

pub(crate) async fn status_peers(State(a): State<Arc<Agent>>) -> Res {
    Ok(json(&a.backend().status().await?.peers))
}

/// `GET /v1/operator/raft/configuration`: Consul's shape, from the servers.
pub(crate) async fn raft_configuration(State(a): State<Arc<Agent>>) -> Res {
    Ok(json(&a.backend().raft_configuration().await?))
}

/// `DELETE /v1/operator/raft/peer?id=` or `?address=`: removes a server from the cluster.
pub(crate) async fn raft_remove_peer(
    State(a): State<Arc<Agent>>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Res {
    let req = trellis_rpc::RemoveRequest {
        id: q.get("id").filter(|v| !v.is_empty()).cloned(),
        address: q.get("address").filter(|v| !v.is_empty()).cloned(),
    };
    if req.id.is_none() == req.address.is_none() {
        return Err(crate::error::bad(
            "Must specify either ?id with the server's ID or ?address with IP:port of peer to remove",
        ));
    }
    a.backend().remove_peer(req).await?;
    Ok(axum::response::IntoResponse::into_response(
        axum::http::StatusCode::OK,
    ))
}

pub(crate) async fn agent_self(State(a): State<Arc<Agent>>) -> Res {
    let cfg = a.config();
    Ok(json(&json!({
        "Config": {
            "Datacenter": cfg.datacenter,
            "PrimaryDatacenter": cfg.datacenter,
            "NodeName": cfg.node_name,
            "NodeID": a.node_id(),
            "Server": cfg.server.is_some(),
            "Revision": "",
            "Version": env!("CARGO_PKG_VERSION"),
        },
        "Member": a.member_self(),
        "Meta": {},
        "DebugConfig": {
            "Datacenter": cfg.datacenter,
            "NodeName": cfg.node_name,
            // What decides when no intention matches ("" → the ACL default policy, which
            // `X-Consul-Default-ACL-Policy` carries); proxies deciding locally read it here.
            "DefaultIntentionPolicy": cfg.default_intention_policy.map_or("", |a| match a {
                crate::IntentionAction::Allow => "allow",
                crate::IntentionAction::Deny => "deny",
            }),
        },
    })))
}

pub(crate) async fn members(State(a): State<Arc<Agent>>) -> Res {
    Ok(json(&a.members().await?))
}

/// `PUT /v1/agent/leave`: a client agent leaves gracefully, then its process exits.
pub(crate) async fn leave(State(a): State<Arc<Agent>>) -> Res {
    a.leave().await?;
    Ok(json(&serde_json::Value::Null))
}

/// Hash-based blocking for agent-local endpoints: `?hash=` and `?wait=` block until the
/// answer's content hash differs; `X-Consul-ContentHash` carries it.
async fn local_blocking<T, F>(a: &Agent, p: &Params, read: F) -> Result<Response, AgentError>
where
    T: serde::Serialize,
    F: Fn() -> Result<T, AgentError>,
{
    let opts = query_options(p)?;
    let want = p.get("hash").unwrap_or("").to_string();
    let mut changes = a.local().watch();
    let deadline = tokio::time::Instant::now() + opts.wait;
    loop {
        changes.borrow_and_update();
        let value = read()?;
        let body = serde_json::to_vec(&value).expect("responses serialise");
        let mut h = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut h);
        let hash = format!("{:016x}", h.finish());
        if want.is_empty() || want != hash {
            let mut resp = ([("content-type", "application/json")], body).into_response();
            resp.headers_mut().insert(
                "x-consul-contenthash",
                HeaderValue::from_str(&hash).expect("hex"),
            );
            return Ok(resp);
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {
                let mut resp = ([("content-type", "application/json")], body).into_response();
                resp.headers_mut().insert("x-consul-contenthash", HeaderValue::from_str(&hash).expect("hex"));
                return Ok(resp);
            }
        }
    }
}

fn with_dc(a: &Agent, mut s: AgentService) -> AgentService {
    s.datacenter = a.config().datacenter.clone();
    s
}

pub(crate) async fn services(State(a): State<Arc<Agent>>, p: Params) -> Res {
    local_blocking(&a, &p, || {
        Ok(a.local()
            .services()
            .into_iter()
            .map(|(k, s)| (k, with_dc(&a, s)))
            .collect::<BTreeMap<_, _>>())
    })
    .await
}

pub(crate) async fn service(State(a): State<Arc<Agent>>, Path(id): Path<String>, p: Params) -> Res {
    local_blocking(&a, &p, || {
        a.local()
            .service(&id)
            .map(|s| with_dc(&a, s))
            .ok_or_else(|| AgentError::NotFound(format!("unknown service ID: {id}")))
    })
    .await
}

pub(crate) async fn register_service(State(a): State<Arc<Agent>>, p: Params, body: Bytes) -> Res {
    let def: ServiceDefinition = decode(&body)?;
    a.register_service(def, p.has("replace-existing-checks"))?;
    Ok(().into_response())
}

pub(crate) async fn deregister_service(State(a): State<Arc<Agent>>, Path(id): Path<String>) -> Res {
    a.deregister_service(&id)?;
    Ok(().into_response())
}

pub(crate) async fn checks(State(a): State<Arc<Agent>>, p: Params) -> Res {
    let node = a.config().node_name.clone();
    local_blocking(&a, &p, || {
        Ok(a.local()
            .checks()
            .into_iter()
            .map(|(k, c)| {
                let mut check: HealthCheck = c.check;
                check.node = node.clone();
                (k, check)
            })
            .collect::<BTreeMap<_, _>>())
    })
    .await
}

pub(crate) async fn register_check(State(a): State<Arc<Agent>>, body: Bytes) -> Res {
    let def: CheckDefinition = decode(&body)?;
    a.register_check(def)?;
    Ok(().into_response())
}

pub(crate) async fn deregister_check(State(a): State<Arc<Agent>>, Path(id): Path<String>) -> Res {
    a.deregister_check(&id)?;
    Ok(().into_response())
}

/// A TTL check's update; an output over 4 KiB is kept truncated, as Consul keeps it
/// ([`crate::checks::truncate_output`]).
fn ttl_update(a: &Agent, id: &str, st: &str, output: &str) -> Res {
    match a.local().check(id) {
        None => Err(AgentError::NotFound(format!(
            "Unknown check ID {id:?}. Ensure that the check ID is passed, not the check name."
        ))),
        Some(c) if c.definition.ttl.is_empty() => {
            Err(bad(format!("Check {id:?} is not a TTL check")))
        }
        Some(_) => {
            a.checks().update_ttl(id, st, output);
            Ok(().into_response())
        }
    }
}

pub(crate) async fn check_pass(
    State(a): State<Arc<Agent>>,
    Path(id): Path<String>,
    p: Params,
) -> Res {
    ttl_update(&a, &id, status::PASSING, p.get("note").unwrap_or(""))
}

pub(crate) async fn check_warn(
    State(a): State<Arc<Agent>>,
    Path(id): Path<String>,
    p: Params,
) -> Res {
    ttl_update(&a, &id, status::WARNING, p.get("note").unwrap_or(""))
}

pub(crate) async fn check_fail(
    State(a): State<Arc<Agent>>,
    Path(id): Path<String>,
    p: Params,
) -> Res {
    ttl_update(&a, &id, status::CRITICAL, p.get("note").unwrap_or(""))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CheckUpdate {
    #[serde(default)]
    status: String,
    #[serde(default)]
    output: String,
}

pub(crate) async fn check_update(
    State(a): State<Arc<Agent>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Res {
    let u: CheckUpdate = decode(&body)?;
    if !status::is_valid(&u.status) {
        return Err(bad(format!("Invalid status: {:?}", u.status)));
    }
    ttl_update(&a, &id, &u.status, &u.output)
}
