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

use trellis_acl_resolver::Identity;

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

/// `GET /v1/operator/raft/configuration` (operator:read): Consul's shape, from the servers.
pub(crate) async fn raft_configuration(State(a): State<Arc<Agent>>, p: Params) -> Res {
    let id = a.identity(p.token()).await?;
    id.require(id.authorizer().operator_read(), "operator:read", None)?;
    Ok(json(&a.backend().raft_configuration().await?))
}

fn need_service_write(id: &Identity, name: &str) -> Result<(), AgentError> {
    Ok(id.require(
        id.authorizer().service_write(name),
        "service:write",
        Some(name),
    )?)
}

/// What registering `def` needs (Consul's `vetServiceRegister`): service:write on the service,
/// on a proxy's destination, on the sidecar it declares, and on any local service it replaces
/// by ID (its own or its sidecar's).
fn vet_service(a: &Agent, id: &Identity, def: &ServiceDefinition) -> Result<(), AgentError> {
    if !id.enabled() {
        return Ok(());
    }
    need_service_write(id, &def.name)?;
    let own_id = if def.id.is_empty() {
        &def.name
    } else {
        &def.id
    };
    let replaced = |sid: &str| -> Result<(), AgentError> {
        match a.local().service(sid) {
            Some(old) => need_service_write(id, &old.service),
            None => Ok(()),
        }
    };
    replaced(own_id)?;
    if let Some(dest) = def
        .proxy
        .as_ref()
        .map(|p| p.destination_service_name.as_str())
        .filter(|d| !d.is_empty())
    {
        need_service_write(id, dest)?;
    }
    if let Some(sidecar) = def
        .connect
        .as_ref()
        .and_then(|c| c.sidecar_service.as_ref())
    {
        let name = if sidecar.name.is_empty() {
            format!("{}-sidecar-proxy", def.name)
        } else {
            sidecar.name.clone()
        };
        need_service_write(id, &name)?;
        if sidecar.id.is_empty() {
            replaced(&format!("{own_id}-sidecar-proxy"))?;
        } else {
            replaced(&sidecar.id)?;
        }
    }
    Ok(())
}

/// What changing a check of this agent needs: service:write on its service, or node:write on
/// this node for a node check (Consul's `vetCheckRegister`/`vetCheckUpdate`).
fn vet_check(a: &Agent, id: &Identity, service_id: &str) -> Result<(), AgentError> {
    if service_id.is_empty() {
        let node = &a.config().node_name;
        return Ok(id.require(id.authorizer().node_write(node), "node:write", Some(node))?);
    }
    match a.local().service(service_id) {
        Some(svc) => need_service_write(id, &svc.service),
        // Unknown: registering it fails with its own 404.
        None => Ok(()),
    }
}

/// `DELETE /v1/operator/raft/peer?id=` or `?address=`: removes a server from the cluster.
pub(crate) async fn raft_remove_peer(
    State(a): State<Arc<Agent>>,
    p: Params,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Res {
    let id = a.identity(p.token()).await?;
    id.require(id.authorizer().operator_write(), "operator:write", None)?;
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

pub(crate) async fn agent_self(State(a): State<Arc<Agent>>, p: Params) -> Res {
    let cfg = a.config();
    let id = a.identity(p.token()).await?;
    id.require(
        id.authorizer().agent_read(&cfg.node_name),
        "agent:read",
        Some(&cfg.node_name),
    )?;
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

/// `GET /v1/agent/members`: the members whose node the token may read.
pub(crate) async fn members(State(a): State<Arc<Agent>>, p: Params) -> Res {
    let id = a.identity(p.token()).await?;
    let mut members = a.members().await?;
    members.retain(|m| {
        let name = m.get("Name").and_then(|n| n.as_str()).unwrap_or("");
        id.authorizer().node_read(name).is_allowed() || !id.enabled()
    });
    Ok(json(&members))
}

/// `PUT /v1/agent/leave` (agent:write on this node): a client agent leaves gracefully, then
/// its process exits.
pub(crate) async fn leave(State(a): State<Arc<Agent>>, p: Params) -> Res {
    let id = a.identity(p.token()).await?;
    let node = a.config().node_name.clone();
    id.require(
        id.authorizer().agent_write(&node),
        "agent:write",
        Some(&node),
    )?;
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

/// `GET /v1/agent/services`: the local services the token may read.
pub(crate) async fn services(State(a): State<Arc<Agent>>, p: Params) -> Res {
    let who = a.identity(p.token()).await?;
    local_blocking(&a, &p, || {
        Ok(a.local()
            .services()
            .into_iter()
            .filter(|(_, s)| {
                who.authorizer().service_read(&s.service).is_allowed() || !who.enabled()
            })
            .map(|(k, s)| (k, with_dc(&a, s)))
            .collect::<BTreeMap<_, _>>())
    })
    .await
}

/// `GET /v1/agent/service/:id` (service:read).
pub(crate) async fn service(State(a): State<Arc<Agent>>, Path(id): Path<String>, p: Params) -> Res {
    let who = a.identity(p.token()).await?;
    local_blocking(&a, &p, || {
        let svc = a
            .local()
            .service(&id)
            .ok_or_else(|| AgentError::NotFound(format!("unknown service ID: {id}")))?;
        who.require(
            who.authorizer().service_read(&svc.service),
            "service:read",
            Some(&svc.service),
        )?;
        Ok(with_dc(&a, svc))
    })
    .await
}

pub(crate) async fn register_service(State(a): State<Arc<Agent>>, p: Params, body: Bytes) -> Res {
    let who = a.identity(p.token()).await?;
    let def: ServiceDefinition = decode(&body)?;
    vet_service(&a, &who, &def)?;
    a.register_service(def, p.has("replace-existing-checks"))?;
    Ok(().into_response())
}

pub(crate) async fn deregister_service(
    State(a): State<Arc<Agent>>,
    Path(id): Path<String>,
    p: Params,
) -> Res {
    let who = a.identity(p.token()).await?;
    if let Some(svc) = a.local().service(&id) {
        need_service_write(&who, &svc.service)?;
    }
    a.deregister_service(&id)?;
    Ok(().into_response())
}

/// `GET /v1/agent/checks`: the local checks the token may read (node:read on this node for a
/// node check, service:read on its service otherwise).
pub(crate) async fn checks(State(a): State<Arc<Agent>>, p: Params) -> Res {
    let who = a.identity(p.token()).await?;
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
            .filter(|(_, c)| {
                let authz = who.authorizer();
                !who.enabled()
                    || if c.service_name.is_empty() {
                        authz.node_read(&c.node).is_allowed()
                    } else {
                        authz.service_read(&c.service_name).is_allowed()
                    }
            })
            .collect::<BTreeMap<_, _>>())
    })
    .await
}

pub(crate) async fn register_check(State(a): State<Arc<Agent>>, p: Params, body: Bytes) -> Res {
    let who = a.identity(p.token()).await?;
    let def: CheckDefinition = decode(&body)?;
    vet_check(&a, &who, &def.service_id)?;
    // A check it replaces by ID is vetted as that check.
    let check_id = if def.id.is_empty() {
        &def.name
    } else {
        &def.id
    };
    if let Some(service_id) = check_service(&a, check_id) {
        vet_check(&a, &who, &service_id)?;
    }
    a.register_check(def)?;
    Ok(().into_response())
}

/// The service ID a local check belongs to ("" for a node check), if the check exists.
fn check_service(a: &Agent, id: &str) -> Option<String> {
    a.local().check(id).map(|c| c.check.service_id)
}

pub(crate) async fn deregister_check(
    State(a): State<Arc<Agent>>,
    Path(id): Path<String>,
    p: Params,
) -> Res {
    let who = a.identity(p.token()).await?;
    if let Some(service_id) = check_service(&a, &id) {
        vet_check(&a, &who, &service_id)?;
    }
    a.deregister_check(&id)?;
    Ok(().into_response())
}

/// A TTL check's update; an output over 4 KiB is kept truncated, as Consul keeps it
/// ([`crate::checks::truncate_output`]).
async fn ttl_update(a: &Agent, p: &Params, id: &str, st: &str, output: &str) -> Res {
    let who = a.identity(p.token()).await?;
    if let Some(service_id) = check_service(a, id) {
        vet_check(a, &who, &service_id)?;
    }
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
    ttl_update(&a, &p, &id, status::PASSING, p.get("note").unwrap_or("")).await
}

pub(crate) async fn check_warn(
    State(a): State<Arc<Agent>>,
    Path(id): Path<String>,
    p: Params,
) -> Res {
    ttl_update(&a, &p, &id, status::WARNING, p.get("note").unwrap_or("")).await
}

pub(crate) async fn check_fail(
    State(a): State<Arc<Agent>>,
    Path(id): Path<String>,
    p: Params,
) -> Res {
    ttl_update(&a, &p, &id, status::CRITICAL, p.get("note").unwrap_or("")).await
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
    p: Params,
    body: Bytes,
) -> Res {
    let u: CheckUpdate = decode(&body)?;
    if !status::is_valid(&u.status) {
        return Err(bad(format!("Invalid status: {:?}", u.status)));
    }
    ttl_update(&a, &p, &id, &u.status, &u.output).await
}
