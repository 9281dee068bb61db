//! The agent's ACLs: its settings, its own tokens (`acl.tokens`, changed at run time through
//! `/v1/agent/token/<kind>` and kept in the data dir with `enable_token_persistence`), and
//! where it resolves tokens from (its server's store, or a server over the server port).

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use trellis_acl_resolver::{AclConfig, IdentitySource, SourceError};
use trellis_api::AclIdentity;

use crate::backend::Backend;

/// The agent's tokens (`acl.tokens`). Never printed.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentTokens {
    /// `default`: used for requests that carry no token (else the anonymous token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// `agent`: the agent's own operations (anti-entropy, its node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// `agent_recovery`: agent endpoints when the servers cannot be reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_recovery: Option<String>,
    /// `replication`: a secondary's replication (federation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<String>,
    /// `config_file_service_registration`: services from config files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_file_service_registration: Option<String>,
    /// `dns`: DNS lookups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
}

impl std::fmt::Debug for AgentTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |t: &Option<String>| t.as_ref().map(|_| "<hidden>");
        f.debug_struct("AgentTokens")
            .field("default", &set(&self.default))
            .field("agent", &set(&self.agent))
            .field("agent_recovery", &set(&self.agent_recovery))
            .field("replication", &set(&self.replication))
            .finish_non_exhaustive()
    }
}

/// The kinds `/v1/agent/token/<kind>` sets, with Consul's legacy names.
pub fn token_slot<'a>(tokens: &'a mut AgentTokens, kind: &str) -> Option<&'a mut Option<String>> {
    Some(match kind {
        "default" | "acl_token" => &mut tokens.default,
        "agent" | "acl_agent_token" => &mut tokens.agent,
        "agent_recovery" | "agent_master" | "acl_agent_master_token" => &mut tokens.agent_recovery,
        "replication" | "acl_replication_token" => &mut tokens.replication,
        "config_file_service_registration" => &mut tokens.config_file_service_registration,
        "dns" => &mut tokens.dns,
        _ => return None,
    })
}

/// The agent's ACL settings.
#[derive(Clone, Debug)]
pub struct AgentAcl {
    /// How tokens are resolved (enabled, default and down policy, TTL).
    pub resolver: AclConfig,
    /// The tokens from the configuration.
    pub tokens: AgentTokens,
    /// `enable_token_persistence`: tokens set through the API are kept in the data dir and
    /// win over the configuration's at the next start.
    pub persist_tokens: bool,
}

impl AgentAcl {
    /// ACLs off.
    pub fn disabled(datacenter: &str) -> AgentAcl {
        AgentAcl {
            resolver: AclConfig::disabled(datacenter),
            tokens: AgentTokens::default(),
            persist_tokens: false,
        }
    }
}

/// The file in the data dir that keeps tokens set through the API.
pub const TOKENS_FILE: &str = "acl-tokens.json";

/// The agent's tokens as they are now, and where they are kept.
pub(crate) struct Tokens {
    current: RwLock<AgentTokens>,
    file: Option<PathBuf>,
}

impl Tokens {
    /// The configuration's tokens, overlaid with those kept from the API when persistence is
    /// on.
    pub(crate) fn load(acl: &AgentAcl, data_dir: Option<&PathBuf>) -> Tokens {
        let file = data_dir
            .filter(|_| acl.persist_tokens)
            .map(|d| d.join(TOKENS_FILE));
        let mut current = acl.tokens.clone();
        if let Some(path) = &file {
            match std::fs::read(path) {
                Ok(bytes) => match serde_json::from_slice::<AgentTokens>(&bytes) {
                    Ok(kept) => {
                        let over = |slot: &mut Option<String>, v: Option<String>| {
                            if v.is_some() {
                                *slot = v;
                            }
                        };
                        over(&mut current.default, kept.default);
                        over(&mut current.agent, kept.agent);
                        over(&mut current.agent_recovery, kept.agent_recovery);
                        over(&mut current.replication, kept.replication);
                        over(
                            &mut current.config_file_service_registration,
                            kept.config_file_service_registration,
                        );
                        over(&mut current.dns, kept.dns);
                    }
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "kept ACL tokens do not decode; ignored")
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read kept ACL tokens")
                }
            }
        }
        Tokens {
            current: RwLock::new(current),
            file,
        }
    }

    /// A copy of the tokens.
    pub(crate) fn get(&self) -> AgentTokens {
        self.current.read().clone()
    }

    /// Sets the token of `kind`; `false` when there is no such kind. Kept in the data dir when
    /// persistence is on (a failure to keep it is an error: the caller asked for it to last).
    pub(crate) fn set(&self, kind: &str, token: String) -> Result<bool, std::io::Error> {
        let mut current = self.current.write();
        let Some(slot) = token_slot(&mut current, kind) else {
            return Ok(false);
        };
        *slot = Some(token).filter(|t| !t.is_empty());
        if let Some(path) = &self.file {
            let bytes = serde_json::to_vec(&*current).expect("tokens serialise");
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, path)?;
        }
        Ok(true)
    }
}

/// Token identities from the agent's backend: its own server's store, or any server over the
/// server port (each answers from its own copy, as Consul's agents resolve with stale reads).
pub(crate) struct BackendSource(pub(crate) Backend);

impl IdentitySource for BackendSource {
    fn identity<'a>(
        &'a self,
        secret: &'a str,
    ) -> BoxFuture<'a, Result<Option<AclIdentity>, SourceError>> {
        Box::pin(async move {
            identity_of(&self.0, secret)
                .await
                .map_err(|e| SourceError(e.to_string()))
        })
    }
}

/// The token with `secret` and what it is made of, from the agent's backend.
pub(crate) async fn identity_of(
    backend: &Backend,
    secret: &str,
) -> Result<Option<AclIdentity>, crate::AgentError> {
    match backend {
        Backend::Local(server) => Ok(server.store().acl_identity(secret).0),
        Backend::Remote(r) => Ok(r
            .with_failover(|addr| async move { r.client().acl_identity(&addr, secret).await })
            .await?),
    }
}

/// A resolver over the agent's backend.
pub(crate) fn resolver(acl: &AgentAcl, backend: Backend) -> Arc<trellis_acl_resolver::Resolver> {
    Arc::new(trellis_acl_resolver::Resolver::new(
        acl.resolver.clone(),
        Arc::new(BackendSource(backend)),
    ))
}
