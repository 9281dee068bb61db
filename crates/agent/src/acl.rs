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

/// The agent's tokens as they are now, and where those set through the API are kept.
pub(crate) struct Tokens {
    current: RwLock<AgentTokens>,
    /// The tokens set through the API (what the file holds): only these are kept, so a token
    /// changed in the configuration is not overridden by a copy of its old value.
    set: parking_lot::Mutex<AgentTokens>,
    file: Option<PathBuf>,
}

/// Every slot of `from` that holds a token replaces the same slot of `into`.
fn overlay(into: &mut AgentTokens, from: &AgentTokens) {
    let pairs: [(&mut Option<String>, &Option<String>); 6] = [
        (&mut into.default, &from.default),
        (&mut into.agent, &from.agent),
        (&mut into.agent_recovery, &from.agent_recovery),
        (&mut into.replication, &from.replication),
        (
            &mut into.config_file_service_registration,
            &from.config_file_service_registration,
        ),
        (&mut into.dns, &from.dns),
    ];
    for (slot, value) in pairs {
        if value.is_some() {
            slot.clone_from(value);
        }
    }
}

impl Tokens {
    /// The configuration's tokens, overlaid with those set through the API and kept, when
    /// persistence is on.
    pub(crate) fn load(acl: &AgentAcl, data_dir: Option<&PathBuf>) -> Tokens {
        let file = data_dir
            .filter(|_| acl.persist_tokens)
            .map(|d| d.join(TOKENS_FILE));
        let mut current = acl.tokens.clone();
        let mut set = AgentTokens::default();
        if let Some(path) = &file {
            match std::fs::read(path) {
                Ok(bytes) => match serde_json::from_slice::<AgentTokens>(&bytes) {
                    Ok(kept) => {
                        overlay(&mut current, &kept);
                        set = kept;
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
            set: parking_lot::Mutex::new(set),
            file,
        }
    }

    /// A copy of the tokens.
    pub(crate) fn get(&self) -> AgentTokens {
        self.current.read().clone()
    }

    /// Sets the token of `kind`; `false` when there is no such kind. Kept in the data dir (only
    /// the owner may read the file) when persistence is on: a failure to keep it is an error,
    /// as the caller asked for it to last.
    pub(crate) fn set(&self, kind: &str, token: String) -> Result<bool, std::io::Error> {
        let token = Some(token).filter(|t| !t.is_empty());
        let mut set = self.set.lock();
        let Some(slot) = token_slot(&mut set, kind) else {
            return Ok(false);
        };
        *slot = token.clone();
        if let Some(path) = &self.file {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let bytes = serde_json::to_vec(&*set).expect("tokens serialise");
            let tmp = path.with_extension("tmp");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
        }
        let mut current = self.current.write();
        if let Some(slot) = token_slot(&mut current, kind) {
            *slot = token;
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

/// Whether two secrets are equal, in time that does not depend on where they differ.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The identity of `acl.tokens.agent_recovery` (Consul's agent recovery token): write on this
/// agent, read on every node, nothing else whatever the default policy; resolved by the agent
/// itself, so it works while no server answers.
pub(crate) fn agent_recovery_identity(node: &str) -> trellis_acl_resolver::Identity {
    use trellis_acl::{Access, Resource, Rule, Rules};
    let rules = Rules {
        rules: vec![
            Rule::exact(Resource::Agent, node, Access::Write),
            Rule::prefix(Resource::Node, "", Access::Read),
        ],
        single: Default::default(),
    };
    trellis_acl_resolver::Identity::new(
        "agent-recovery",
        trellis_acl::Authorizer::new([&rules], trellis_acl::DefaultPolicy::Deny),
    )
}

/// A resolver over the agent's backend.
pub(crate) fn resolver(acl: &AgentAcl, backend: Backend) -> Arc<trellis_acl_resolver::Resolver> {
    Arc::new(trellis_acl_resolver::Resolver::new(
        acl.resolver.clone(),
        Arc::new(BackendSource(backend)),
    ))
}

/// The most filtered answers kept; past it the store starts again empty.
const FILTERED_MAX: usize = 4096;

/// Answers as an identity may see them, kept per (identity, query, index): a token repeating a
/// read pays for the filter once per change of what it reads. An entry holds its identity, so
/// the identity's address (the key) is not reused while the entry lives; a token resolved anew
/// (after `token_ttl`, with perhaps other policies) is another identity.
#[derive(Default)]
pub(crate) struct FilteredAnswers {
    map: parking_lot::Mutex<std::collections::HashMap<FilterKey, FilteredEntry>>,
}

#[derive(PartialEq, Eq, Hash)]
struct FilterKey {
    identity: usize,
    query: trellis_state::Query,
    index: u64,
}

struct FilteredEntry {
    _identity: Arc<trellis_acl_resolver::Identity>,
    answer: Option<trellis_state::Answer>,
}

impl FilteredAnswers {
    /// What `id` may see of `answer`, the answer to `query` at `index`: `None` when all of it.
    pub(crate) fn visible(
        &self,
        id: &Arc<trellis_acl_resolver::Identity>,
        query: &trellis_state::Query,
        index: u64,
        answer: &trellis_state::Answer,
    ) -> Result<Option<trellis_state::Answer>, trellis_state::AnswerError> {
        let key = FilterKey {
            identity: Arc::as_ptr(id) as usize,
            query: query.clone(),
            index,
        };
        if let Some(e) = self.map.lock().get(&key) {
            return Ok(e.answer.clone());
        }
        let less = trellis_acl_resolver::filter::answer(id.authorizer(), answer.typed()?)
            .map(trellis_state::Answer::new);
        if let Some(a) = &less {
            // Its JSON is made once, here, and shared by every hit.
            a.json();
        }
        let mut map = self.map.lock();
        if map.len() >= FILTERED_MAX {
            map.clear();
        }
        map.insert(
            key,
            FilteredEntry {
                _identity: id.clone(),
                answer: less.clone(),
            },
        );
        Ok(less)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tokens_set_through_the_api_are_kept_and_only_the_owner_reads_them() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_path_buf();
        let mut acl = AgentAcl::disabled("dc1");
        acl.persist_tokens = true;
        acl.tokens.agent = Some("from-config".into());
        acl.tokens.default = Some("default-from-config".into());
        let t = Tokens::load(&acl, Some(&data));
        assert!(t.set("acl_token", "from-api".into()).unwrap());
        assert!(!t.set("nope", "x".into()).unwrap());
        assert_eq!(t.get().default.as_deref(), Some("from-api"));
        let file = data.join(TOKENS_FILE);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let kept = std::fs::read_to_string(&file).unwrap();
        assert!(!kept.contains("from-config"), "{kept}");
        // A restart with a changed configuration: the API's token wins where it was set, the
        // configuration's new value where it was not.
        acl.tokens.agent = Some("rotated-in-config".into());
        let t = Tokens::load(&acl, Some(&data));
        assert_eq!(t.get().default.as_deref(), Some("from-api"));
        assert_eq!(t.get().agent.as_deref(), Some("rotated-in-config"));
        assert!(!format!("{:?}", t.get()).contains("from-api"));
    }

    #[test]
    fn the_agent_recovery_token_reaches_this_agent_and_reads_nodes_only() {
        let id = agent_recovery_identity("n1");
        let a = id.authorizer();
        assert!(a.agent_write("n1").is_allowed());
        assert!(!a.agent_write("n2").is_allowed());
        assert!(a.node_read("anything").is_allowed());
        assert!(!a.node_write("n1").is_allowed());
        assert!(!a.service_read("web").is_allowed());
        assert!(!a.acl_read().is_allowed());
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("a", "ab"));
    }
}
