//! `/v1/connect/intentions*` (the legacy API, a view over `service-intentions` entries) and
//! `/v1/agent/connect/authorize`.

use std::sync::Arc;

use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use trellis_api::filter::Filter;
use trellis_api::{AuthorizeRequest, AuthorizeResponse, Intention};
use trellis_identity::SpiffeId;
use trellis_intentions::{Action, Decision, Reason};
use trellis_rpc::Write;
use trellis_state::{IntentionRef, Query, QueryOutput};

use trellis_acl_resolver::Identity;

use super::{
    cache_headers, decode, fetch, json, query_response, run_query_as, visible, write, Params,
};
use crate::cache::Key;
use crate::error::bad;
use crate::{Agent, AgentError};

type Res = Result<Response, AgentError>;

/// The selectors `?filter` may use on `GET /v1/connect/intentions`, as Consul documents.
const LIST_SELECTORS: &[&str] = &[
    "Action",
    "Description",
    "DestinationNS",
    "DestinationName",
    "ID",
    "Meta",
    "Precedence",
    "SourceNS",
    "SourceName",
    "SourceType",
];

/// Reads a service name as the intentions API takes it: `name` or `namespace/name`, with only
/// the `default` namespace in this edition.
fn intention_name(param: &str, value: Option<&str>) -> Result<String, AgentError> {
    let value = value.unwrap_or("");
    if value.is_empty() {
        return Err(bad(format!("required query parameter '{param}' not set")));
    }
    let mut parts = value.split('/');
    let (ns, name) = match (parts.next(), parts.next(), parts.next()) {
        (Some(name), None, None) => ("default", name),
        (Some(ns), Some(name), None) => (ns, name),
        _ => {
            return Err(bad(format!(
                "Invalid {param} {value:?}: expected \"name\" or \"namespace/name\""
            )))
        }
    };
    if ns != "default" && ns != "*" {
        return Err(bad(format!(
            "Invalid {param} {value:?}: Namespaces is a Consul Enterprise feature"
        )));
    }
    if name.is_empty() {
        return Err(bad(format!("Invalid {param} {value:?}: empty name")));
    }
    Ok(name.to_string())
}

/// `GET /v1/connect/intentions` (blocking; `?filter`).
pub(crate) async fn list(State(a): State<Arc<Agent>>, p: Params) -> Res {
    let id = a.identity(p.token()).await?;
    let filter = match p.get("filter").filter(|f| !f.is_empty()) {
        None => None,
        Some(expr) => Some(Filter::parse(expr, LIST_SELECTORS).map_err(|e| bad(e.to_string()))?),
    };
    let (mut r, consistency) = fetch(&a, &p, Query::IntentionList).await?;
    if let (Some(filter), QueryOutput::Found(body)) = (&filter, &r.output) {
        // The filter language runs over JSON values, as Consul's does.
        let items: Vec<Value> = body
            .intentions()
            .map_err(|e| AgentError::Unavailable(format!("intentions: {e}")))?
            .iter()
            .map(|i| serde_json::to_value(i).expect("intentions serialise"))
            .collect();
        // Back through the typed view so the fields keep Consul's order.
        let kept: Vec<Intention> = filter
            .apply(items)
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect();
        r.output = QueryOutput::Found(trellis_state::Answer::new(
            trellis_state::Typed::Intentions(kept),
        ));
    }
    // The answer may be a `?filter`ed one: not the store's, so not kept.
    Ok(visible(&a, query_response, r, Some(consistency), &id, None))
}

/// `Ok` when `id` may read (or write) intentions on `destination`, else Consul's 403.
fn need(id: &Identity, destination: &str, write: bool) -> Result<(), AgentError> {
    let authz = id.authorizer();
    Ok(if write {
        id.require(
            authz.intention_write(destination),
            "intentions:write",
            Some(destination),
        )
    } else {
        id.require(
            authz.intention_read(destination),
            "intentions:read",
            Some(destination),
        )
    }?)
}

/// The destination of the intention with this legacy ID, if there is one.
async fn destination_of(a: &Agent, p: &Params, legacy: &str) -> Result<Option<String>, AgentError> {
    let (r, _) = fetch(
        a,
        p,
        Query::IntentionGet {
            id: legacy.to_string(),
        },
    )
    .await?;
    match r.output {
        QueryOutput::Found(answer) => match answer.typed() {
            Ok(trellis_state::Typed::Intention(i)) => Ok(Some(i.destination_name.clone())),
            Ok(_) => Err(AgentError::Unavailable("not an intention".into())),
            Err(e) => Err(AgentError::Unavailable(e.to_string())),
        },
        QueryOutput::NotFound(_) => Ok(None),
    }
}

/// The fields of a legacy intention body that become the source object of an entry.
fn source_object(i: &Intention, name: &str) -> Map<String, Value> {
    let mut src = Map::new();
    src.insert("Name".into(), name.into());
    if !i.action.is_empty() {
        src.insert("Action".into(), i.action.clone().into());
    }
    if !i.permissions.is_empty() {
        src.insert("Permissions".into(), Value::Array(i.permissions.clone()));
    }
    if !i.description.is_empty() {
        src.insert("Description".into(), i.description.clone().into());
    }
    if !matches!(i.source_type.as_str(), "" | "consul") {
        // Let validation name the problem.
        src.insert("Type".into(), i.source_type.clone().into());
    }
    src
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| trellis_api::ZERO_TIME.to_string())
}

/// Reads a legacy intention body (`POST` or `PUT /v1/connect/intentions/:id`).
fn legacy_body(body: &Bytes) -> Result<(Intention, String, String), AgentError> {
    let i: Intention = decode(body)?;
    let source = intention_name("SourceName", Some(&i.source_name))?;
    let destination = intention_name("DestinationName", Some(&i.destination_name))?;
    for (field, ns) in [
        ("SourceNS", &i.source_ns),
        ("DestinationNS", &i.destination_ns),
    ] {
        if !matches!(ns.as_str(), "" | "default") {
            return Err(bad(format!(
                "{field} {ns:?}: Namespaces is a Consul Enterprise feature"
            )));
        }
    }
    Ok((i, source, destination))
}

/// The source object a legacy write stores: the body's fields, the legacy ID and meta, and
/// `now` as the update time (a create sets the creation time too; an update keeps the stored
/// one, which the server carries over).
fn legacy_source(i: &Intention, source: &str, id: &str, now: &str) -> Map<String, Value> {
    let mut src = source_object(i, source);
    src.insert("LegacyID".into(), id.into());
    src.insert(
        "LegacyMeta".into(),
        serde_json::to_value(&i.meta).expect("a string map serialises"),
    );
    src.insert("LegacyUpdateTime".into(), now.into());
    src
}

/// `POST /v1/connect/intentions`: the legacy create, answering `{"ID": ...}`.
pub(crate) async fn create(State(a): State<Arc<Agent>>, p: Params, body: Bytes) -> Res {
    a.check_dc(&p)?;
    let who = a.identity(p.token()).await?;
    let (i, source, destination) = legacy_body(&body)?;
    if !i.id.is_empty() {
        return Err(bad("ID must be empty when creating a new intention"));
    }
    need(&who, &destination, true)?;
    let id = uuid::Uuid::new_v4().to_string();
    let cmd = Write::IntentionUpsert {
        destination,
        source: {
            let now = now_rfc3339();
            let mut src = legacy_source(&i, &source, &id, &now);
            src.insert("LegacyCreateTime".into(), now.into());
            src
        },
        create_only: true,
        replace_id: None,
    };
    write(&a, cmd, json!({ "ID": id })).await
}

fn legacy_id(id: &str) -> Result<&str, AgentError> {
    uuid::Uuid::parse_str(id)
        .map(|_| id)
        .map_err(|_| bad(format!("Invalid intention ID {id:?}: not a UUID")))
}

/// `GET /v1/connect/intentions/:id`
pub(crate) async fn get_id(State(a): State<Arc<Agent>>, Path(id): Path<String>, p: Params) -> Res {
    let id = legacy_id(&id)?.to_string();
    let who = a.identity(p.token()).await?;
    if let Some(destination) = destination_of(&a, &p, &id).await? {
        need(&who, &destination, false)?;
    }
    run_query_as(&a, &p, Query::IntentionGet { id }, &who).await
}

/// `PUT /v1/connect/intentions/:id`: the legacy update (the pair may change).
pub(crate) async fn update_id(
    State(a): State<Arc<Agent>>,
    Path(id): Path<String>,
    p: Params,
    body: Bytes,
) -> Res {
    a.check_dc(&p)?;
    let who = a.identity(p.token()).await?;
    let id = legacy_id(&id)?.to_string();
    let (i, source, destination) = legacy_body(&body)?;
    need(&who, &destination, true)?;
    if let Some(old) = destination_of(&a, &p, &id).await? {
        need(&who, &old, true)?;
    }
    if !i.id.is_empty() && i.id != id {
        return Err(bad(format!(
            "ID {:?} in the body does not match the ID in the path",
            i.id
        )));
    }
    let src = legacy_source(&i, &source, &id, &now_rfc3339());
    let cmd = Write::IntentionUpsert {
        destination,
        source: src,
        create_only: false,
        replace_id: Some(id),
    };
    write(&a, cmd, json!({})).await
}

/// `DELETE /v1/connect/intentions/:id`
pub(crate) async fn delete_id(
    State(a): State<Arc<Agent>>,
    Path(id): Path<String>,
    p: Params,
) -> Res {
    a.check_dc(&p)?;
    let who = a.identity(p.token()).await?;
    let id = legacy_id(&id)?.to_string();
    if let Some(destination) = destination_of(&a, &p, &id).await? {
        need(&who, &destination, true)?;
    }
    let cmd = Write::IntentionDelete {
        target: IntentionRef::Id(id),
    };
    write(&a, cmd, json!(true)).await
}

fn pair(p: &Params) -> Result<(String, String), AgentError> {
    Ok((
        intention_name("source", p.get("source"))?,
        intention_name("destination", p.get("destination"))?,
    ))
}

/// `GET /v1/connect/intentions/exact?source=&destination=` (blocking).
pub(crate) async fn get_exact(State(a): State<Arc<Agent>>, p: Params) -> Res {
    let who = a.identity(p.token()).await?;
    let (source, destination) = pair(&p)?;
    need(&who, &destination, false)?;
    run_query_as(
        &a,
        &p,
        Query::IntentionExact {
            source,
            destination,
        },
        &who,
    )
    .await
}

/// `PUT /v1/connect/intentions/exact?source=&destination=`: create or replace.
pub(crate) async fn put_exact(State(a): State<Arc<Agent>>, p: Params, body: Bytes) -> Res {
    a.check_dc(&p)?;
    let who = a.identity(p.token()).await?;
    let (source, destination) = pair(&p)?;
    need(&who, &destination, true)?;
    let i: Intention = decode(&body)?;
    if !i.meta.is_empty() {
        return Err(bad(
            "Meta must not be specified: it is only kept for intentions written by the legacy \
             ID-based API",
        ));
    }
    for (field, given, want) in [
        ("SourceName", &i.source_name, &source),
        ("DestinationName", &i.destination_name, &destination),
    ] {
        if !given.is_empty() && given != want {
            return Err(bad(format!(
                "{field} {given:?} in the body does not match the query parameter {want:?}"
            )));
        }
    }
    if !i.id.is_empty() {
        return Err(bad("ID must not be specified"));
    }
    let cmd = Write::IntentionUpsert {
        source: source_object(&i, &source),
        destination,
        create_only: false,
        replace_id: None,
    };
    write(&a, cmd, json!(true)).await
}

/// `DELETE /v1/connect/intentions/exact?source=&destination=`
pub(crate) async fn delete_exact(State(a): State<Arc<Agent>>, p: Params) -> Res {
    a.check_dc(&p)?;
    let who = a.identity(p.token()).await?;
    let (source, destination) = pair(&p)?;
    need(&who, &destination, true)?;
    let cmd = Write::IntentionDelete {
        target: IntentionRef::Exact {
            source,
            destination,
        },
    };
    write(&a, cmd, json!(true)).await
}

/// `GET /v1/connect/intentions/match?by=source|destination&name=...` (blocking).
pub(crate) async fn matches(State(a): State<Arc<Agent>>, p: Params) -> Res {
    let by_source = match p.get("by") {
        Some("source") => true,
        Some("destination") => false,
        Some(other) => {
            return Err(bad(format!(
                "'by' must be \"source\" or \"destination\", not {other:?}"
            )))
        }
        None => return Err(bad("required query parameter 'by' not set")),
    };
    let raw = p.all("name");
    if raw.is_empty() {
        return Err(bad("required query parameter 'name' not set"));
    }
    let names = raw
        .iter()
        .map(|n| intention_name("name", Some(n)))
        .collect::<Result<Vec<_>, _>>()?;
    let who = a.identity(p.token()).await?;
    for name in &names {
        need(&who, name, false)?;
    }
    run_query_as(&a, &p, Query::IntentionMatch { by_source, names }, &who).await
}

/// The default when no intention matches: the agent's `default_intention_policy`, else the
/// ACL default policy (allow while ACLs are off).
fn default_decision(a: &Agent) -> (bool, &'static str) {
    match a.config().default_intention_policy {
        Some(action) => (action == Action::Allow, "Default intention policy"),
        None => (
            a.acl().default_policy_name() == "allow",
            "Default behavior configured by ACLs",
        ),
    }
}

/// `GET /v1/connect/intentions/check?source=&destination=`: `{"Allowed": bool}`; an L7
/// intention counts as deny, as in Consul.
pub(crate) async fn check(State(a): State<Arc<Agent>>, p: Params) -> Res {
    a.check_dc(&p)?;
    let who = a.identity(p.token()).await?;
    let (source, destination) = pair(&p)?;
    need(&who, &destination, false)?;
    if let Some(t) = p.get("source-type") {
        if !t.is_empty() && t != "consul" {
            return Err(bad(format!("unsupported source-type {t:?}")));
        }
    }
    // Straight from the servers, as Consul's check is: not through the agent's cache.
    let (engine, _) =
        crate::cache::match_engine(a.backend().clone(), destination.clone(), 0, Duration::ZERO)
            .await?;
    let (default_allow, _) = default_decision(&a);
    let d = engine.decide(&source, &destination, default_allow);
    Ok(json(&json!({ "Allowed": d.allowed })))
}

/// Consul's text for an intention in a reason:
/// Consul's `Reason` for an authorization decision.
pub(crate) fn reason_text(a: &Agent, d: &Decision) -> String {
    match &d.reason {
        Reason::Intention { intention, .. } => {
            format!("Matched L4 intention: {intention}")
        }
        Reason::L7AtL4 { intention } => format!("Matched L7 intention: {intention}"),
        Reason::Default => default_decision(a).1.to_string(),
    }
}

/// Reads the authorize body: Consul's own spelling straight into the type (what every client
/// sends), any other spelling through the case-insensitive decoder.
fn authorize_body(body: &Bytes) -> Result<AuthorizeRequest, AgentError> {
    match serde_json::from_slice::<AuthorizeRequest>(body) {
        Ok(req) if !req.target.is_empty() && !req.client_cert_uri.is_empty() => Ok(req),
        _ => decode(body),
    }
}

/// `POST /v1/agent/connect/authorize`: may this client certificate's service connect to
/// `Target`? Decided from the agent's intentions view, without a server round trip once the
/// target's intentions are loaded.
pub(crate) async fn authorize(State(a): State<Arc<Agent>>, p: Params, body: Bytes) -> Res {
    a.check_dc(&p)?;
    let req = authorize_body(&body)?;
    if req.target.is_empty() {
        return Err(bad("Target service must be specified"));
    }
    if !matches!(req.namespace.as_str(), "" | "default") {
        return Err(bad("Namespaces is a Consul Enterprise feature"));
    }
    let id = SpiffeId::parse(&req.client_cert_uri)
        .map_err(|_| bad("ClientCertURI not a valid Connect identifier"))?;
    let SpiffeId::Service(svc) = id else {
        return Err(bad("ClientCertURI not a valid Service identifier"));
    };
    if svc.partition != trellis_identity::DEFAULT_PARTITION {
        return Err(bad("Mismatched partitions"));
    }
    let who = a.identity(p.token()).await?;
    who.require(
        who.authorizer().service_write(&req.target),
        "service:write",
        Some(&req.target),
    )?;
    let key = Key::new(a.config().datacenter.clone(), p.token(), req.target.clone());
    let hit = a.intentions().get(key, 0, Duration::ZERO).await?;
    let engine = hit.value;
    let (default_allow, _) = default_decision(&a);
    let d = if svc.namespace == trellis_identity::DEFAULT_NAMESPACE {
        engine.decide(&svc.service, &req.target, default_allow)
    } else {
        // Every intention here is in the default namespace: none can match.
        Decision {
            allowed: default_allow,
            reason: Reason::Default,
        }
    };
    let reason = reason_text(&a, &d);
    tracing::debug!(source = %svc.service, target = %req.target, authorized = d.allowed, %reason, "authorize");
    let mut resp = json(&AuthorizeResponse {
        authorized: d.allowed,
        reason,
    });
    cache_headers(&mut resp, hit.cache_hit, hit.age);
    Ok(resp)
}
