//! `/v1/acl/*` and `/v1/agent/token/<kind>`: Consul's ACL API.
//!
//! Writes become `trellis_rpc::Write`s (IDs, secrets and times are made here, so a write sent
//! twice is the same write); reads run through the backend and are checked against the
//! caller's token (`acl:read`, `acl:write`; a SecretID is shown only with `acl:write`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use trellis_acl::builtin;
use trellis_acl_resolver::{AclError, Identity};
use trellis_api::{AclPolicy, AclRole, AclToken, BOOTSTRAP_TOKEN_DESCRIPTION, HIDDEN_SECRET};
use trellis_rpc::Write;
use trellis_state::{is_uuid, Answer, Query, QueryOutput, TokenFilter};

use super::{decode, json as json_response, query_options, Params};
use crate::error::bad;
use crate::{Agent, AgentError};

type Res = Result<Response, AgentError>;

/// The ACL routes.
pub(crate) fn routes() -> Router<Arc<Agent>> {
    Router::new()
        .route("/v1/acl/bootstrap", put(bootstrap))
        .route("/v1/acl/replication", get(replication))
        .route("/v1/acl/token", put(token_create))
        .route("/v1/acl/token/self", get(token_self))
        .route(
            "/v1/acl/token/{id}",
            get(token_read).put(token_update).delete(token_delete),
        )
        .route("/v1/acl/token/{id}/clone", put(token_clone))
        .route("/v1/acl/tokens", get(token_list))
        .route("/v1/acl/policy", put(object_create::<AclPolicy>))
        .route(
            "/v1/acl/policy/{id}",
            get(object_read::<AclPolicy>)
                .put(object_update::<AclPolicy>)
                .delete(object_delete::<AclPolicy>),
        )
        .route(
            "/v1/acl/policy/name/{name}",
            get(object_read_by_name::<AclPolicy>),
        )
        .route("/v1/acl/policies", get(policy_list))
        .route("/v1/acl/role", put(object_create::<AclRole>))
        .route(
            "/v1/acl/role/{id}",
            get(object_read::<AclRole>)
                .put(object_update::<AclRole>)
                .delete(object_delete::<AclRole>),
        )
        .route(
            "/v1/acl/role/name/{name}",
            get(object_read_by_name::<AclRole>),
        )
        .route("/v1/acl/roles", get(role_list))
        .route("/v1/acl/templated-policies", get(templated_list))
        .route("/v1/acl/templated-policy/name/{*name}", get(templated_read))
        .route(
            "/v1/acl/templated-policy/preview/{*name}",
            post(templated_preview),
        )
        .route("/v1/agent/token/{kind}", put(agent_token))
}

/// The caller's identity, with ACLs on (401 `ACL support disabled` otherwise).
async fn caller(a: &Agent, p: &Params) -> Result<Arc<Identity>, AgentError> {
    if !a.acl().enabled() {
        return Err(AclError::Disabled.into());
    }
    a.check_dc(p)?;
    a.identity(p.token()).await
}

fn need_acl(id: &Identity, write: bool) -> Result<(), AgentError> {
    let authz = id.authorizer();
    Ok(if write {
        id.require(authz.acl_write(), "acl:write", None)
    } else {
        id.require(authz.acl_read(), "acl:read", None)
    }?)
}

/// Reads through the backend; a missing object is Consul's 403 `ACL not found`.
async fn read(a: &Agent, p: &Params, q: Query) -> Result<(Answer, u64), AgentError> {
    let r = a.backend().query(q, query_options(p)?).await?;
    match r.output {
        QueryOutput::Found(answer) => Ok((answer, r.index)),
        QueryOutput::NotFound(_) => Err(AclError::NotFound.into()),
    }
}

fn undecodable(e: trellis_state::AnswerError) -> AgentError {
    AgentError::Unavailable(e.to_string())
}

fn with_index(mut resp: Response, index: u64) -> Response {
    resp.headers_mut().insert(
        "x-consul-index",
        axum::http::HeaderValue::from(index.max(1)),
    );
    resp
}

/// A token as `id` may see it: the SecretID only with `acl:write`.
fn shown(mut t: AclToken, id: &Identity) -> AclToken {
    if !id.authorizer().acl_write().is_allowed() {
        t.secret_id = HIDDEN_SECRET.into();
    }
    t
}

async fn token_answer(a: &Agent, p: &Params, accessor: &str, id: &Identity) -> Res {
    let (answer, index) = read(
        a,
        p,
        Query::AclTokenRead {
            accessor: accessor.to_string(),
        },
    )
    .await?;
    let token = answer.acl_token().map_err(undecodable)?.clone();
    Ok(with_index(json_response(&shown(token, id)), index))
}

/// Commits an ACL write: refusals are 400s (403 for bootstrap), a missing object a 403
/// `ACL not found` as Consul answers.
async fn commit(a: &Agent, w: Write) -> Result<(), AgentError> {
    use trellis_state::Applied;
    let out = a.backend().apply(w).await?.applied;
    // This agent's resolutions may hold what just changed: its callers see the write at once.
    a.acl().clear();
    match out {
        Applied::Done | Applied::Cas(true) => Ok(()),
        Applied::Cas(false) => Err(bad("the object changed meanwhile")),
        Applied::Rejected(msg) => Err(bad(msg)),
        Applied::NotFound(_) => Err(AclError::NotFound.into()),
        Applied::Denied(msg) => Err(AclError::denied(msg).into()),
        other => Err(AgentError::Server(trellis_rpc::Error::Internal(format!(
            "unexpected outcome of an ACL write: {other:?}"
        )))),
    }
}

fn now() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The body of an optional-body request, or the default when it is empty.
fn decode_or_default<T: serde::de::DeserializeOwned + Default>(
    body: &Bytes,
) -> Result<T, AgentError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        decode(body)
    }
}

// ---- bootstrap and replication ----

#[derive(Deserialize, Default)]
struct BootstrapRequest {
    #[serde(rename = "BootstrapSecret", default)]
    bootstrap_secret: String,
}

async fn bootstrap(State(a): State<Arc<Agent>>, p: Params, body: Bytes) -> Res {
    if !a.acl().enabled() {
        return Err(AclError::Disabled.into());
    }
    a.check_dc(&p)?;
    let req: BootstrapRequest = decode_or_default(&body)?;
    let secret = if req.bootstrap_secret.is_empty() {
        new_id()
    } else if is_uuid(&req.bootstrap_secret) {
        req.bootstrap_secret
    } else {
        return Err(bad("BootstrapSecret must be a UUID"));
    };
    let accessor = new_id();
    let token = AclToken {
        accessor_id: accessor.clone(),
        secret_id: secret,
        description: BOOTSTRAP_TOKEN_DESCRIPTION.into(),
        create_time: now(),
        ..Default::default()
    };
    commit(&a, Write::AclBootstrap { token }).await?;
    let (answer, index) = read(&a, &p, Query::AclTokenRead { accessor }).await?;
    let token = answer.acl_token().map_err(undecodable)?;
    let mut out = serde_json::to_value(token).expect("tokens serialise");
    // Consul also echoes the deprecated `ID` (the SecretID).
    out["ID"] = Value::String(token.secret_id.clone());
    Ok(with_index(json_response(&out), index))
}

/// `/v1/acl/replication`: a single datacenter replicates nothing.
async fn replication(State(a): State<Arc<Agent>>, p: Params) -> Res {
    caller(&a, &p).await?;
    const ZERO: &str = "0001-01-01T00:00:00Z";
    Ok(json_response(&json!({
        "Enabled": false,
        "Running": false,
        "SourceDatacenter": "",
        "ReplicationType": "",
        "ReplicatedIndex": 0,
        "ReplicatedRoleIndex": 0,
        "ReplicatedTokenIndex": 0,
        "LastSuccess": ZERO,
        "LastError": ZERO,
        "LastErrorMessage": "",
    })))
}

// ---- tokens ----

/// `ExpirationTTL` (a Go duration or nanoseconds) and `ExpirationTime` checked and turned into
/// the one `ExpirationTime` stored.
fn expiration(t: &mut AclToken) -> Result<(), AgentError> {
    let ttl = match t.expiration_ttl.take() {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(
            trellis_api::parse_go_duration(&s)
                .map_err(|e| bad(format!("Invalid ExpirationTTL {s:?}: {e}")))?,
        ),
        Some(Value::Number(n)) => n.as_u64().map(Duration::from_nanos),
        Some(other) => return Err(bad(format!("Invalid ExpirationTTL {other}"))),
    };
    if let Some(ttl) = ttl.filter(|d| !d.is_zero()) {
        if t.expiration_time.is_some() {
            return Err(bad(
                "Token Expiration TTL and Expiration Time cannot both be set",
            ));
        }
        if ttl < Duration::from_secs(60) || ttl > Duration::from_secs(24 * 3600) {
            return Err(bad("Token Expiration TTL must be between 1m0s and 24h0m0s"));
        }
        t.expiration_time =
            Some(humantime::format_rfc3339_nanos(SystemTime::now() + ttl).to_string());
    } else if let Some(at) = &t.expiration_time {
        let when = humantime::parse_rfc3339_weak(at)
            .map_err(|e| bad(format!("Invalid ExpirationTime {at:?}: {e}")))?;
        if when <= SystemTime::now() {
            return Err(bad("ExpirationTime cannot be in the past"));
        }
    }
    Ok(())
}

async fn token_create(State(a): State<Arc<Agent>>, p: Params, body: Bytes) -> Res {
    let id = caller(&a, &p).await?;
    need_acl(&id, true)?;
    let mut t: AclToken = decode(&body)?;
    if t.accessor_id.is_empty() {
        t.accessor_id = new_id();
    } else if !is_uuid(&t.accessor_id) {
        return Err(bad(format!(
            "Invalid Token: AccessorID {:?} is not a valid UUID",
            t.accessor_id
        )));
    }
    if t.secret_id.is_empty() {
        t.secret_id = new_id();
    } else if !is_uuid(&t.secret_id) {
        return Err(bad(format!(
            "Invalid Token: SecretID {:?} is not a valid UUID",
            t.secret_id
        )));
    }
    expiration(&mut t)?;
    t.create_time = now();
    let accessor = t.accessor_id.clone();
    commit(
        &a,
        Write::AclTokenSet {
            token: t,
            create: true,
        },
    )
    .await?;
    token_answer(&a, &p, &accessor, &id).await
}

async fn token_self(State(a): State<Arc<Agent>>, p: Params) -> Res {
    if !a.acl().enabled() {
        return Err(AclError::Disabled.into());
    }
    a.check_dc(&p)?;
    let secret = match p.token() {
        "" => a.tokens().default.unwrap_or_else(|| "anonymous".into()),
        s => s.to_string(),
    };
    match crate::acl::identity_of(a.backend(), &secret).await? {
        Some(found) if !trellis_acl_resolver::expired(&found) => Ok(json_response(&found.token)),
        _ => Err(AclError::NotFound.into()),
    }
}

async fn token_read(State(a): State<Arc<Agent>>, Path(acc): Path<String>, p: Params) -> Res {
    let id = caller(&a, &p).await?;
    need_acl(&id, false)?;
    token_answer(&a, &p, &acc, &id).await
}

async fn token_update(
    State(a): State<Arc<Agent>>,
    Path(acc): Path<String>,
    p: Params,
    body: Bytes,
) -> Res {
    let id = caller(&a, &p).await?;
    need_acl(&id, true)?;
    let mut t: AclToken = decode(&body)?;
    if t.accessor_id.is_empty() {
        t.accessor_id.clone_from(&acc);
    } else if t.accessor_id != acc {
        return Err(bad("Token Accessor ID in URL and payload do not match"));
    }
    if t.expiration_ttl.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(bad("Cannot change expiration time of a token"));
    }
    commit(
        &a,
        Write::AclTokenSet {
            token: t,
            create: false,
        },
    )
    .await?;
    token_answer(&a, &p, &acc, &id).await
}

async fn token_delete(State(a): State<Arc<Agent>>, Path(acc): Path<String>, p: Params) -> Res {
    let id = caller(&a, &p).await?;
    need_acl(&id, true)?;
    commit(&a, Write::AclTokenDelete { accessor: acc }).await?;
    Ok(json_response(&true))
}

#[derive(Deserialize, Default)]
struct CloneRequest {
    #[serde(rename = "Description", default)]
    description: String,
}

async fn token_clone(
    State(a): State<Arc<Agent>>,
    Path(acc): Path<String>,
    p: Params,
    body: Bytes,
) -> Res {
    let id = caller(&a, &p).await?;
    need_acl(&id, true)?;
    let req: CloneRequest = decode_or_default(&body)?;
    let (answer, _) = read(&a, &p, Query::AclTokenRead { accessor: acc }).await?;
    let original = answer.acl_token().map_err(undecodable)?;
    if !original.auth_method.is_empty() {
        return Err(bad("Cannot clone a token created from an auth method"));
    }
    let accessor = new_id();
    let copy = AclToken {
        accessor_id: accessor.clone(),
        secret_id: new_id(),
        description: if req.description.is_empty() {
            original.description.clone()
        } else {
            req.description
        },
        policies: original.policies.clone(),
        roles: original.roles.clone(),
        service_identities: original.service_identities.clone(),
        node_identities: original.node_identities.clone(),
        templated_policies: original.templated_policies.clone(),
        local: original.local,
        expiration_time: original.expiration_time.clone(),
        create_time: now(),
        ..Default::default()
    };
    commit(
        &a,
        Write::AclTokenSet {
            token: copy,
            create: true,
        },
    )
    .await?;
    token_answer(&a, &p, &accessor, &id).await
}

async fn token_list(State(a): State<Arc<Agent>>, p: Params) -> Res {
    let id = caller(&a, &p).await?;
    need_acl(&id, false)?;
    let filter = TokenFilter {
        policy: p
            .get("policy")
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        role: p.get("role").filter(|s| !s.is_empty()).map(str::to_string),
        auth_method: p
            .get("authmethod")
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    };
    let (answer, index) = read(&a, &p, Query::AclTokenList(filter)).await?;
    let tokens: Vec<AclToken> = answer
        .acl_tokens()
        .map_err(undecodable)?
        .iter()
        .cloned()
        .map(|t| shown(t, &id))
        .collect();
    Ok(with_index(json_response(&tokens), index))
}

// ---- policies and roles ----

/// What the policy and role endpoints share: both are created without an ID (one is made
/// here), updated at their ID, read by ID or name, and deleted by ID.
trait AclObject: serde::de::DeserializeOwned + serde::Serialize + Send + 'static {
    /// `policy` or `role`, as the messages name it.
    const KIND: &'static str;
    /// `Policy` or `Role`, at the start of a message.
    const TITLE: &'static str;
    fn id_mut(&mut self) -> &mut String;
    fn set(self, create: bool) -> Write;
    fn delete(id: String) -> Write;
    fn read(key: String, by_name: bool) -> Query;
    fn of(answer: &Answer) -> Result<&Self, trellis_state::AnswerError>;
}

impl AclObject for AclPolicy {
    const KIND: &'static str = "policy";
    const TITLE: &'static str = "Policy";
    fn id_mut(&mut self) -> &mut String {
        &mut self.id
    }
    fn set(self, create: bool) -> Write {
        Write::AclPolicySet {
            policy: self,
            create,
        }
    }
    fn delete(id: String) -> Write {
        Write::AclPolicyDelete { id }
    }
    fn read(key: String, by_name: bool) -> Query {
        Query::AclPolicyRead { key, by_name }
    }
    fn of(answer: &Answer) -> Result<&Self, trellis_state::AnswerError> {
        answer.acl_policy()
    }
}

impl AclObject for AclRole {
    const KIND: &'static str = "role";
    const TITLE: &'static str = "Role";
    fn id_mut(&mut self) -> &mut String {
        &mut self.id
    }
    fn set(self, create: bool) -> Write {
        Write::AclRoleSet { role: self, create }
    }
    fn delete(id: String) -> Write {
        Write::AclRoleDelete { id }
    }
    fn read(key: String, by_name: bool) -> Query {
        Query::AclRoleRead { key, by_name }
    }
    fn of(answer: &Answer) -> Result<&Self, trellis_state::AnswerError> {
        answer.acl_role()
    }
}

async fn object_answer<T: AclObject>(a: &Agent, p: &Params, key: String, by_name: bool) -> Res {
    let (answer, index) = read(a, p, T::read(key, by_name)).await?;
    Ok(with_index(
        json_response(T::of(&answer).map_err(undecodable)?),
        index,
    ))
}

async fn object_create<T: AclObject>(State(a): State<Arc<Agent>>, p: Params, body: Bytes) -> Res {
    let id = caller(&a, &p).await?;
    need_acl(&id, true)?;
    let mut object: T = decode(&body)?;
    if !object.id_mut().is_empty() {
        return Err(bad(format!(
            "Cannot specify an ID when creating a {}",
            T::KIND
        )));
    }
    let key = new_id();
    object.id_mut().clone_from(&key);
    commit(&a, object.set(true)).await?;
    object_answer::<T>(&a, &p, key, false).await
}

async fn object_update<T: AclObject>(
    State(a): State<Arc<Agent>>,
    Path(key): Path<String>,
    p: Params,
    body: Bytes,
) -> Res {
    let id = caller(&a, &p).await?;
    need_acl(&id, true)?;
    let mut object: T = decode(&body)?;
    let given = object.id_mut();
    if given.is_empty() {
        given.clone_from(&key);
    } else if *given != key {
        return Err(bad(format!(
            "{} ID in URL and payload do not match",
            T::TITLE
        )));
    }
    commit(&a, object.set(false)).await?;
    object_answer::<T>(&a, &p, key, false).await
}

async fn object_read<T: AclObject>(
    State(a): State<Arc<Agent>>,
    Path(key): Path<String>,
    p: Params,
) -> Res {
    let id = caller(&a, &p).await?;
    need_acl(&id, false)?;
    object_answer::<T>(&a, &p, key, false).await
}

async fn object_read_by_name<T: AclObject>(
    State(a): State<Arc<Agent>>,
    Path(name): Path<String>,
    p: Params,
) -> Res {
    let id = caller(&a, &p).await?;
    need_acl(&id, false)?;
    object_answer::<T>(&a, &p, name, true).await
}

async fn object_delete<T: AclObject>(
    State(a): State<Arc<Agent>>,
    Path(key): Path<String>,
    p: Params,
) -> Res {
    let id = caller(&a, &p).await?;
    need_acl(&id, true)?;
    commit(&a, T::delete(key)).await?;
    Ok(json_response(&true))
}

async fn policy_list(State(a): State<Arc<Agent>>, p: Params) -> Res {
    let id = caller(&a, &p).await?;
    need_acl(&id, false)?;
    let (answer, index) = read(&a, &p, Query::AclPolicyList).await?;
    // The list shows each policy without its rules (Consul's `ACLPolicyListStub`).
    let stubs: Vec<Value> = answer
        .acl_policies()
        .map_err(undecodable)?
        .iter()
        .map(|policy| {
            let mut v = serde_json::to_value(policy).expect("policies serialise");
            if let Some(o) = v.as_object_mut() {
                o.remove("Rules");
            }
            v
        })
        .collect();
    Ok(with_index(json_response(&stubs), index))
}

async fn role_list(State(a): State<Arc<Agent>>, p: Params) -> Res {
    let id = caller(&a, &p).await?;
    need_acl(&id, false)?;
    let policy = p
        .get("policy")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let (answer, index) = read(&a, &p, Query::AclRoleList { policy }).await?;
    Ok(with_index(
        json_response(answer.acl_roles().map_err(undecodable)?),
        index,
    ))
}

// ---- templated policies ----

fn template_json(t: &builtin::Template) -> Value {
    json!({
        "TemplateName": t.name,
        "Schema": t.schema,
        "Template": t.template,
        "Description": t.description,
    })
}

fn template_named(name: &str) -> Result<&'static builtin::Template, AgentError> {
    builtin::template(name)
        .ok_or_else(|| AgentError::NotFound(format!("Invalid templated policy Name: {name}")))
}

async fn templated_list(State(a): State<Arc<Agent>>, p: Params) -> Res {
    let id = caller(&a, &p).await?;
    need_acl(&id, false)?;
    let all: serde_json::Map<String, Value> = builtin::TEMPLATES
        .iter()
        .map(|t| (t.name.to_string(), template_json(t)))
        .collect();
    Ok(json_response(&all))
}

async fn templated_read(State(a): State<Arc<Agent>>, Path(name): Path<String>, p: Params) -> Res {
    let id = caller(&a, &p).await?;
    need_acl(&id, false)?;
    Ok(json_response(&template_json(template_named(&name)?)))
}

#[derive(Deserialize, Default)]
struct PreviewRequest {
    #[serde(rename = "Name", default)]
    name: String,
}

async fn templated_preview(
    State(a): State<Arc<Agent>>,
    Path(name): Path<String>,
    p: Params,
    body: Bytes,
) -> Res {
    let id = caller(&a, &p).await?;
    need_acl(&id, false)?;
    let t = template_named(&name)?;
    let vars: PreviewRequest = decode_or_default(&body)?;
    if !t.schema.is_empty() && vars.name.is_empty() {
        return Err(bad(format!(
            "Failed to validate templated policy variables for {name:?}: name is required"
        )));
    }
    let rules = t.render(&vars.name);
    let pid = builtin::synthetic_policy_id(&rules);
    Ok(json_response(&json!({
        "ID": pid,
        "Name": format!("synthetic-policy-{pid}"),
        "Description": format!("synthetic policy generated from templated policy: {name}"),
        "Rules": rules,
        "Datacenters": null,
        "Hash": null,
        "CreateIndex": 0,
        "ModifyIndex": 0,
    })))
}

// ---- the agent's tokens ----

#[derive(Deserialize, Default)]
struct AgentTokenRequest {
    #[serde(rename = "Token", default)]
    token: String,
}

/// `PUT /v1/agent/token/<kind>` (acl:write, as Consul's `set-agent-token` requires).
async fn agent_token(
    State(a): State<Arc<Agent>>,
    Path(kind): Path<String>,
    p: Params,
    body: Bytes,
) -> Res {
    let id = caller(&a, &p).await?;
    need_acl(&id, true)?;
    let req: AgentTokenRequest = decode(&body)?;
    if !a.set_token(&kind, req.token)? {
        return Err(AgentError::NotFound(format!("Token {kind:?} is unknown")));
    }
    tracing::info!(kind, "agent ACL token updated");
    Ok(axum::http::StatusCode::OK.into_response())
}
