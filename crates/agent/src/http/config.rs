//! `/v1/config`: config entries (`service-defaults`, `proxy-defaults`, `service-intentions`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use bytes::Bytes;
use trellis_api::{config_kind, ConfigEntry};
use trellis_rpc::Write;
use trellis_state::{normalize_config_entry, validate_config_entry, Query};

use trellis_acl_resolver::Identity;

use super::{decode, run_query, run_query_as, write, Params};
use crate::error::bad;
use crate::{Agent, AgentError};

type Res = Result<Response, AgentError>;

fn cas(p: &Params) -> Result<Option<u64>, AgentError> {
    p.get("cas")
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| bad(format!("Invalid cas index {v:?}")))
        })
        .transpose()
}

fn known_kind(kind: &str) -> Result<(), AgentError> {
    if config_kind::ALL.contains(&kind) {
        Ok(())
    } else {
        Err(bad(format!("invalid config entry kind: {kind}")))
    }
}

/// `Ok` when `id` may read (or write) the entry `kind`/`name`, else Consul's 403.
fn need(id: &Identity, kind: &str, name: &str, write: bool) -> Result<(), AgentError> {
    let (decision, permission, on) =
        trellis_acl_resolver::filter::config_entry(id.authorizer(), kind, name, write);
    Ok(id.require(decision, permission, on.as_deref())?)
}

pub(crate) async fn set(State(a): State<Arc<Agent>>, p: Params, body: Bytes) -> Res {
    a.check_dc(&p)?;
    let id = a.identity(p.token()).await?;
    let cas = cas(&p)?;
    let mut entry: ConfigEntry = decode(&body)?;
    entry.create_index = 0;
    entry.modify_index = 0;
    validate_config_entry(&entry).map_err(bad)?;
    need(&id, &entry.kind, &entry.name, true)?;
    normalize_config_entry(&mut entry);
    write(&a, Write::ConfigSet { entry, cas }, serde_json::json!(true)).await
}

pub(crate) async fn list(State(a): State<Arc<Agent>>, Path(kind): Path<String>, p: Params) -> Res {
    known_kind(&kind)?;
    run_query(&a, &p, Query::ConfigList { kind }).await
}

pub(crate) async fn get(
    State(a): State<Arc<Agent>>,
    Path((kind, name)): Path<(String, String)>,
    p: Params,
) -> Res {
    known_kind(&kind)?;
    let id = a.identity(p.token()).await?;
    need(&id, &kind, &name, false)?;
    run_query_as(&a, &p, Query::ConfigGet { kind, name }, &id).await
}

pub(crate) async fn delete(
    State(a): State<Arc<Agent>>,
    Path((kind, name)): Path<(String, String)>,
    p: Params,
) -> Res {
    a.check_dc(&p)?;
    known_kind(&kind)?;
    let id = a.identity(p.token()).await?;
    need(&id, &kind, &name, true)?;
    let cas = cas(&p)?;
    write(
        &a,
        Write::ConfigDelete { kind, name, cas },
        serde_json::json!({}),
    )
    .await
}
