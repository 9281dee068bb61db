//! `/v1/connect/ca/*` and `/v1/agent/connect/ca/*`: roots, CA configuration, leaf certificates.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use trellis_api::{CaConfiguration, IndexedCaRoots};
use trellis_state::{Query, QueryOutput};

use trellis_acl_resolver::Identity;

use super::{decode, query_options, run_query_as, Params};
use crate::definition::validate_name;
use crate::error::bad;
use crate::{Agent, AgentError};

type Res = Result<Response, AgentError>;

/// `GET /v1/connect/ca/roots` (and `?pem=true`: every root and intermediate as one PEM chain).
pub(crate) async fn roots(State(a): State<Arc<Agent>>, p: Params) -> Res {
    if p.get("pem").is_some_and(|v| v == "true" || v.is_empty()) {
        let opts = query_options(&p)?;
        let resp = a.backend().query(Query::CaRoots, opts).await?;
        let QueryOutput::Found(body) = resp.output else {
            return Err(AgentError::NotFound("no CA roots".into()));
        };
        let roots: &IndexedCaRoots = body
            .ca_roots()
            .map_err(|e| AgentError::Unavailable(e.to_string()))?;
        let mut pem = String::new();
        for r in &roots.roots {
            for cert in std::iter::once(&r.root_cert).chain(r.intermediate_certs.iter().flatten()) {
                pem.push_str(cert);
                if !cert.ends_with('\n') {
                    pem.push('\n');
                }
            }
        }
        let mut out =
            ([("content-type", "application/pem-certificate-chain")], pem).into_response();
        out.headers_mut()
            .insert("x-consul-index", HeaderValue::from(resp.index.max(1)));
        return Ok(out);
    }
    // The roots are public: no token is needed (or resolved).
    run_query_as(&a, &p, Query::CaRoots, &Arc::new(Identity::unrestricted())).await
}

/// `GET /v1/agent/connect/ca/roots`: always from the agent's cache, as Consul's agent answers.
pub(crate) async fn agent_roots(State(a): State<Arc<Agent>>, p: Params) -> Res {
    super::run_cached(&a, &p, Query::CaRoots, &Arc::new(Identity::unrestricted())).await
}

/// `GET /v1/connect/ca/configuration` (operator:write, as Consul since 1.8.6).
pub(crate) async fn get_config(State(a): State<Arc<Agent>>, p: Params) -> Res {
    let id = a.identity(p.token()).await?;
    id.require(id.authorizer().operator_write(), "operator:write", None)?;
    run_query_as(&a, &p, Query::CaConfig, &id).await
}

/// `PUT /v1/connect/ca/configuration` (operator:write).
pub(crate) async fn put_config(State(a): State<Arc<Agent>>, p: Params, body: Bytes) -> Res {
    a.check_dc(&p)?;
    let id = a.identity(p.token()).await?;
    id.require(id.authorizer().operator_write(), "operator:write", None)?;
    let cfg: CaConfiguration = decode(&body)?;
    a.backend().set_ca_config(cfg).await?;
    Ok(().into_response())
}

/// `GET /v1/agent/connect/ca/leaf/:service`: a leaf for the service, its key made here.
pub(crate) async fn leaf(
    State(a): State<Arc<Agent>>,
    Path(service): Path<String>,
    p: Params,
) -> Res {
    validate_name("service name", &service).map_err(bad)?;
    crate::leaf::check_leaf_service(&service)?;
    let id = a.identity(p.token()).await?;
    id.require(
        id.authorizer().service_write(&service),
        "service:write",
        Some(&service),
    )?;
    let opts = query_options(&p)?;
    // Held per token: two tokens never share a leaf.
    let key = crate::cache::Key::new(a.config().datacenter.clone(), p.token(), service);
    let (body, index, hit) = a.leafs().get(&key, opts.index, opts.wait).await?;
    let mut out = ([("content-type", "application/json")], body).into_response();
    out.headers_mut()
        .insert("x-consul-index", HeaderValue::from(index.max(1)));
    super::cache_headers(&mut out, hit, Duration::ZERO);
    Ok(out)
}
