//! Consul's ACL API, typed: `/v1/acl/*` (bootstrap, tokens, policies, roles) and the agent's
//! own tokens (`/v1/agent/token/<kind>`). Missing objects and refusals come back as the
//! agent words them (`Unexpected response code: 403 (ACL not found)`).

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use trellis_api::{AclPolicy, AclRole, AclToken};

use crate::{AgentClient, Body, Error};

impl AgentClient {
    /// Sends `method` with `body` (JSON, or none) and decodes the 2xx answer.
    async fn acl_write<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&impl Serialize>,
    ) -> Result<T, Error> {
        let what = format!("{method} /v1/{}", segments.join("/"));
        let json = match body {
            Some(b) => Some(serde_json::to_value(b).map_err(|e| Error::Decode {
                what: what.clone(),
                message: e.to_string(),
            })?),
            None => None,
        };
        let body = json.as_ref().map_or(Body::Empty, Body::Json);
        self.send(method, segments, &[], body).await?.json(&what)
    }

    async fn acl_get<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T, Error> {
        Ok(self.get(segments, &[], false).await?.value)
    }

    async fn acl_delete(&self, segments: &[&str]) -> Result<(), Error> {
        self.send(Method::DELETE, segments, &[], Body::Empty)
            .await
            .map(|_| ())
    }

    /// Bootstraps the ACL system (`PUT /v1/acl/bootstrap`): the new management token.
    pub async fn acl_bootstrap(&self) -> Result<AclToken, Error> {
        self.acl_write(Method::PUT, &["acl", "bootstrap"], None::<&()>)
            .await
    }

    /// Creates a token (`PUT /v1/acl/token`); empty AccessorID and SecretID are generated.
    pub async fn acl_token_create(&self, token: &AclToken) -> Result<AclToken, Error> {
        self.acl_write(Method::PUT, &["acl", "token"], Some(token))
            .await
    }

    /// A token by AccessorID.
    pub async fn acl_token_read(&self, accessor: &str) -> Result<AclToken, Error> {
        self.acl_get(&["acl", "token", accessor]).await
    }

    /// The token this client sends (`GET /v1/acl/token/self`).
    pub async fn acl_token_read_self(&self) -> Result<AclToken, Error> {
        self.acl_get(&["acl", "token", "self"]).await
    }

    /// Replaces the token with `token.accessor_id` (`PUT /v1/acl/token/<accessor>`).
    pub async fn acl_token_update(&self, token: &AclToken) -> Result<AclToken, Error> {
        self.acl_write(
            Method::PUT,
            &["acl", "token", &token.accessor_id],
            Some(token),
        )
        .await
    }

    /// A copy of a token with new IDs, and `description` if not empty.
    pub async fn acl_token_clone(
        &self,
        accessor: &str,
        description: &str,
    ) -> Result<AclToken, Error> {
        let body = serde_json::json!({ "Description": description });
        self.acl_write(
            Method::PUT,
            &["acl", "token", accessor, "clone"],
            Some(&body),
        )
        .await
    }

    /// Deletes a token by AccessorID.
    pub async fn acl_token_delete(&self, accessor: &str) -> Result<(), Error> {
        self.acl_delete(&["acl", "token", accessor]).await
    }

    /// Every token (SecretIDs shown only to a caller with `acl:write`).
    pub async fn acl_token_list(&self) -> Result<Vec<AclToken>, Error> {
        self.acl_get(&["acl", "tokens"]).await
    }

    /// Creates a policy (`PUT /v1/acl/policy`).
    pub async fn acl_policy_create(&self, policy: &AclPolicy) -> Result<AclPolicy, Error> {
        self.acl_write(Method::PUT, &["acl", "policy"], Some(policy))
            .await
    }

    /// A policy by ID.
    pub async fn acl_policy_read(&self, id: &str) -> Result<AclPolicy, Error> {
        self.acl_get(&["acl", "policy", id]).await
    }

    /// A policy by name.
    pub async fn acl_policy_read_by_name(&self, name: &str) -> Result<AclPolicy, Error> {
        self.acl_get(&["acl", "policy", "name", name]).await
    }

    /// Replaces the policy with `policy.id`.
    pub async fn acl_policy_update(&self, policy: &AclPolicy) -> Result<AclPolicy, Error> {
        self.acl_write(Method::PUT, &["acl", "policy", &policy.id], Some(policy))
            .await
    }

    /// Deletes a policy by ID.
    pub async fn acl_policy_delete(&self, id: &str) -> Result<(), Error> {
        self.acl_delete(&["acl", "policy", id]).await
    }

    /// Every policy, without its rules (the list's form).
    pub async fn acl_policy_list(&self) -> Result<Vec<AclPolicy>, Error> {
        self.acl_get(&["acl", "policies"]).await
    }

    /// Creates a role (`PUT /v1/acl/role`).
    pub async fn acl_role_create(&self, role: &AclRole) -> Result<AclRole, Error> {
        self.acl_write(Method::PUT, &["acl", "role"], Some(role))
            .await
    }

    /// A role by ID.
    pub async fn acl_role_read(&self, id: &str) -> Result<AclRole, Error> {
        self.acl_get(&["acl", "role", id]).await
    }

    /// A role by name.
    pub async fn acl_role_read_by_name(&self, name: &str) -> Result<AclRole, Error> {
        self.acl_get(&["acl", "role", "name", name]).await
    }

    /// Replaces the role with `role.id`.
    pub async fn acl_role_update(&self, role: &AclRole) -> Result<AclRole, Error> {
        self.acl_write(Method::PUT, &["acl", "role", &role.id], Some(role))
            .await
    }

    /// Deletes a role by ID.
    pub async fn acl_role_delete(&self, id: &str) -> Result<(), Error> {
        self.acl_delete(&["acl", "role", id]).await
    }

    /// Every role.
    pub async fn acl_role_list(&self) -> Result<Vec<AclRole>, Error> {
        self.acl_get(&["acl", "roles"]).await
    }

    /// Sets one of the agent's own tokens (`PUT /v1/agent/token/<kind>`; `kind` as the HTTP
    /// API names it: `default`, `agent`, `agent_recovery`, `replication`,
    /// `config_file_service_registration`, `dns`, or a legacy name).
    pub async fn set_agent_token(&self, kind: &str, token: &str) -> Result<(), Error> {
        let body = serde_json::json!({ "Token": token });
        self.send(
            Method::PUT,
            &["agent", "token", kind],
            &[],
            Body::Json(&body),
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::extract::{Request, State};
    use axum::http::StatusCode;
    use serde_json::{json, Value};

    use super::*;

    type Seen = Arc<Mutex<Vec<(String, String, Value)>>>;

    /// An agent that records each request (method, path, JSON body) and answers what the
    /// path calls for.
    async fn fake() -> (AgentClient, Seen) {
        let seen: Seen = Arc::default();
        let app = axum::Router::new()
            .fallback(|State(seen): State<Seen>, req: Request| async move {
                let method = req.method().to_string();
                let path = req.uri().path().to_string();
                let token = req
                    .headers()
                    .get("x-consul-token")
                    .map(|v| v.to_str().unwrap().to_string());
                let bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
                    .await
                    .unwrap();
                let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                seen.lock()
                    .unwrap()
                    .push((method.clone(), path.clone(), body.clone()));
                if token.as_deref() != Some("mgmt") {
                    return (StatusCode::FORBIDDEN, "Permission denied: no".to_string());
                }
                let answer = match (method.as_str(), path.as_str()) {
                    ("GET", "/v1/acl/tokens") => json!([{"AccessorID": "a1", "SecretID": "s1"}]),
                    ("GET", "/v1/acl/policy/name/web%20w") => json!({"ID": "p1", "Name": "web w"}),
                    ("DELETE", _) => json!(true),
                    ("PUT", "/v1/agent/token/agent") => return (StatusCode::OK, String::new()),
                    ("PUT", "/v1/acl/token") => {
                        let mut t = body.clone();
                        t["AccessorID"] = json!("new");
                        t
                    }
                    _ => return (StatusCode::FORBIDDEN, "ACL not found".to_string()),
                };
                (StatusCode::OK, answer.to_string())
            })
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let c = AgentClient::new(&addr.to_string(), Some("mgmt".into())).unwrap();
        (c, seen)
    }

    #[tokio::test]
    async fn acl_calls_send_consuls_requests() {
        let (c, seen) = fake().await;
        let tokens = c.acl_token_list().await.unwrap();
        assert_eq!(tokens[0].accessor_id, "a1");
        assert_eq!(c.acl_policy_read_by_name("web w").await.unwrap().id, "p1");
        let new = AclToken {
            description: "d".into(),
            policies: vec![trellis_api::AclLink {
                id: String::new(),
                name: "web-w".into(),
            }],
            ..Default::default()
        };
        let made = c.acl_token_create(&new).await.unwrap();
        assert_eq!(
            (made.accessor_id.as_str(), made.policies[0].name.as_str()),
            ("new", "web-w")
        );
        c.acl_token_delete("a1").await.unwrap();
        c.set_agent_token("agent", "s1").await.unwrap();
        let e = c.acl_role_read("r9").await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "Unexpected response code: 403 (ACL not found)"
        );
        let seen = seen.lock().unwrap().clone();
        let calls: Vec<(&str, &str)> = seen
            .iter()
            .map(|(m, p, _)| (m.as_str(), p.as_str()))
            .collect();
        assert_eq!(
            calls,
            [
                ("GET", "/v1/acl/tokens"),
                ("GET", "/v1/acl/policy/name/web%20w"),
                ("PUT", "/v1/acl/token"),
                ("DELETE", "/v1/acl/token/a1"),
                ("PUT", "/v1/agent/token/agent"),
                ("GET", "/v1/acl/role/r9"),
            ]
        );
        assert_eq!(seen[2].2["Policies"], json!([{"ID": "", "Name": "web-w"}]));
        assert_eq!(seen[4].2, json!({"Token": "s1"}));
        let anon = AgentClient::new(c.base(), None).unwrap();
        let e = anon.acl_token_list().await.unwrap_err();
        assert_eq!(e.status(), Some(403));
        assert!(e.to_string().contains("Permission denied"), "{e}");
    }
}
