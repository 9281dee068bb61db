//! `/v1/catalog/*` and `/v1/health/*`: reads and writes of the datacenter's catalog.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use bytes::Bytes;
use trellis_api::{status, CatalogDeregistration, CatalogRegistration};
use trellis_rpc::Write;
use trellis_state::{validate_registration, Query};

use serde_json::json;

use trellis_acl_resolver::Identity;

use super::{decode, json as json_response, run_query, write, Params};
use crate::error::bad;
use crate::{Agent, AgentError};

type Res = Result<Response, AgentError>;

fn need(
    id: &Identity,
    decision: trellis_acl::Decision,
    permission: &str,
    name: &str,
) -> Result<(), AgentError> {
    Ok(id.require(decision, permission, Some(name))?)
}

/// What the catalog holds for `node` (its row, services and checks), read with the request's
/// options.
async fn node_state(
    a: &Agent,
    p: &Params,
    node: &str,
) -> Result<trellis_api::NodeState, AgentError> {
    let (r, _) = super::fetch(
        a,
        p,
        Query::NodeState {
            node: node.to_string(),
        },
    )
    .await?;
    match r.output {
        trellis_state::QueryOutput::Found(answer) => answer
            .node_state()
            .cloned()
            .map_err(|e| AgentError::Unavailable(e.to_string())),
        trellis_state::QueryOutput::NotFound(_) => Ok(trellis_api::NodeState::default()),
    }
}

/// What a catalog registration needs (Consul's `vetRegisterWithACL`), judged against what the
/// catalog holds: node:write on the node unless `SkipNodeUpdate` names one that exists;
/// service:write on the service, a proxy's destination, and a service it replaces by ID; for
/// each check, service:write on the service it belongs to (by ID, as stored) or node:write,
/// and the same for a check it replaces.
async fn vet_register(
    a: &Agent,
    p: &Params,
    id: &Identity,
    reg: &CatalogRegistration,
) -> Result<(), AgentError> {
    if !id.enabled() {
        return Ok(());
    }
    let state = node_state(a, p, &reg.node).await?;
    let authz = id.authorizer();
    let node_write = || need(id, authz.node_write(&reg.node), "node:write", &reg.node);
    if !reg.skip_node_update || state.node.is_none() {
        node_write()?;
    }
    let stored = |sid: &str| state.services.iter().find(|s| s.id == sid);
    if let Some(svc) = &reg.service {
        need(
            id,
            authz.service_write(&svc.service),
            "service:write",
            &svc.service,
        )?;
        if let Some(dest) = svc.connect_destination().filter(|d| *d != svc.service) {
            need(id, authz.service_write(dest), "service:write", dest)?;
        }
        let sid = if svc.id.is_empty() {
            &svc.service
        } else {
            &svc.id
        };
        if let Some(old) = stored(sid).filter(|old| old.service != svc.service) {
            need(
                id,
                authz.service_write(&old.service),
                "service:write",
                &old.service,
            )?;
        }
    }
    // The service a check belongs to: the one registered with it, else the stored one.
    let service_of = |sid: &str| {
        reg.service
            .as_ref()
            .filter(|s| s.id == sid || (s.id.is_empty() && s.service == sid))
            .map(|s| s.service.clone())
            .or_else(|| stored(sid).map(|s| s.service.clone()))
    };
    for check in reg.check.iter().chain(reg.checks.iter()) {
        match service_of(&check.service_id).filter(|_| !check.service_id.is_empty()) {
            Some(name) => need(id, authz.service_write(&name), "service:write", &name)?,
            None => node_write()?,
        }
        if let Some(old) = state.checks.iter().find(|c| c.check_id == check.check_id) {
            if old.service_id.is_empty() {
                node_write()?;
            } else {
                need(
                    id,
                    authz.service_write(&old.service_name),
                    "service:write",
                    &old.service_name,
                )?;
            }
        }
    }
    Ok(())
}

pub(crate) async fn register(State(a): State<Arc<Agent>>, p: Params, body: Bytes) -> Res {
    a.check_dc(&p)?;
    let who = a.identity(p.token()).await?;
    let mut reg: CatalogRegistration = decode(&body)?;
    a.check_dc_name(&reg.datacenter)?;
    reg.datacenter.clear();
    validate_registration(&reg).map_err(bad)?;
    validate_meta(&reg)?;
    let proxy = reg
        .service
        .as_ref()
        .filter(|s| s.kind == trellis_api::kind::CONNECT_PROXY)
        .and_then(|s| s.proxy.as_ref());
    if proxy.is_some_and(|p| p.destination_service_name == "*") {
        return Err(bad(crate::definition::WILDCARD_DESTINATION));
    }
    vet_register(&a, &p, &who, &reg).await?;
    write(&a, Write::Register(Box::new(reg)), json!(true)).await
}

/// Consul's metadata rules (pairs, key and value sizes, key characters) on the node and the
/// service. Consul's catalog endpoint checks neither, so the `consul-` prefix stays allowed here
/// (Consul's agents write `consul-*` node meta through it); the sizes bound what one
/// registration may store.
fn validate_meta(reg: &CatalogRegistration) -> Result<(), AgentError> {
    trellis_api::validate_node_meta(&reg.node_meta, true)
        .map_err(|e| bad(format!("Invalid Node Meta: {e}")))?;
    if let Some(svc) = &reg.service {
        trellis_api::validate_service_meta(&svc.kind, &svc.meta, true)
            .map_err(|e| bad(format!("Invalid Service Meta: {e}")))?;
    }
    Ok(())
}

pub(crate) async fn deregister(State(a): State<Arc<Agent>>, p: Params, body: Bytes) -> Res {
    a.check_dc(&p)?;
    let mut d: CatalogDeregistration = decode(&body)?;
    a.check_dc_name(&d.datacenter)?;
    d.datacenter.clear();
    if d.node.is_empty() {
        return Err(bad("Must provide node"));
    }
    let who = a.identity(p.token()).await?;
    if who.enabled() {
        vet_deregister(&a, &p, &who, &d).await?;
    }
    write(&a, Write::Deregister(d), json!(true)).await
}

/// What a catalog deregistration needs: service:write on the service it removes and on the
/// service of the check it removes, node:write for a node check or the node itself (also when
/// the catalog does not hold the node, so that the answer says nothing of what exists).
async fn vet_deregister(
    a: &Agent,
    p: &Params,
    who: &Identity,
    d: &CatalogDeregistration,
) -> Result<(), AgentError> {
    let state = node_state(a, p, &d.node).await?;
    let authz = who.authorizer();
    let node_write = || need(who, authz.node_write(&d.node), "node:write", &d.node);
    if state.node.is_none() || (d.service_id.is_empty() && d.check_id.is_empty()) {
        return node_write();
    }
    if !d.service_id.is_empty() {
        match state.services.iter().find(|s| s.id == d.service_id) {
            Some(s) => need(
                who,
                authz.service_write(&s.service),
                "service:write",
                &s.service,
            )?,
            None => node_write()?,
        }
    }
    if !d.check_id.is_empty() {
        match state.checks.iter().find(|c| c.check_id == d.check_id) {
            Some(c) if !c.service_id.is_empty() => need(
                who,
                authz.service_write(&c.service_name),
                "service:write",
                &c.service_name,
            )?,
            _ => node_write()?,
        }
    }
    Ok(())
}

pub(crate) async fn datacenters(State(a): State<Arc<Agent>>) -> Res {
    Ok(json_response(&[a.config().datacenter.as_str()]))
}

pub(crate) async fn nodes(State(a): State<Arc<Agent>>, p: Params) -> Res {
    run_query(&a, &p, Query::CatalogNodes).await
}

pub(crate) async fn services(State(a): State<Arc<Agent>>, p: Params) -> Res {
    run_query(&a, &p, Query::CatalogServices).await
}

pub(crate) async fn node(State(a): State<Arc<Agent>>, Path(node): Path<String>, p: Params) -> Res {
    run_query(&a, &p, Query::CatalogNode { node }).await
}

pub(crate) async fn service(
    State(a): State<Arc<Agent>>,
    Path(name): Path<String>,
    p: Params,
) -> Res {
    run_query(
        &a,
        &p,
        Query::CatalogService {
            name,
            tags: p.all("tag"),
            connect: false,
        },
    )
    .await
}

pub(crate) async fn connect(
    State(a): State<Arc<Agent>>,
    Path(name): Path<String>,
    p: Params,
) -> Res {
    run_query(
        &a,
        &p,
        Query::CatalogService {
            name,
            tags: p.all("tag"),
            connect: true,
        },
    )
    .await
}

pub(crate) async fn health_node(
    State(a): State<Arc<Agent>>,
    Path(node): Path<String>,
    p: Params,
) -> Res {
    run_query(&a, &p, Query::HealthNode { node }).await
}

pub(crate) async fn health_checks(
    State(a): State<Arc<Agent>>,
    Path(service): Path<String>,
    p: Params,
) -> Res {
    run_query(&a, &p, Query::HealthChecks { service }).await
}

pub(crate) async fn health_service(
    State(a): State<Arc<Agent>>,
    Path(name): Path<String>,
    p: Params,
) -> Res {
    let passing = p.has("passing");
    run_query(
        &a,
        &p,
        Query::HealthService {
            name,
            tags: p.all("tag"),
            passing,
            connect: false,
        },
    )
    .await
}

pub(crate) async fn health_connect(
    State(a): State<Arc<Agent>>,
    Path(name): Path<String>,
    p: Params,
) -> Res {
    let passing = p.has("passing");
    run_query(
        &a,
        &p,
        Query::HealthService {
            name,
            tags: p.all("tag"),
            passing,
            connect: true,
        },
    )
    .await
}

pub(crate) async fn health_state(
    State(a): State<Arc<Agent>>,
    Path(state): Path<String>,
    p: Params,
) -> Res {
    if state != status::ANY && !status::is_valid(&state) {
        return Err(bad(format!(
            "Invalid state {state:?}; must be any, passing, warning or critical"
        )));
    }
    run_query(&a, &p, Query::HealthState { state }).await
}
