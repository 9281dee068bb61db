//! Secrets to identities, cached, with the down policy; Consul's ACL errors.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use trellis_acl::{Authorizer, Decision, DefaultPolicy};
use trellis_api::{AclIdentity, ANONYMOUS_TOKEN_ID, ANONYMOUS_TOKEN_SECRET};

/// What happens when the servers cannot be reached to resolve a token (`acl.down_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownPolicy {
    /// Everything is allowed.
    Allow,
    /// Everything is denied.
    Deny,
    /// A token resolved before keeps its last authorizer; one never resolved gets the default
    /// policy.
    ExtendCache,
    /// As `ExtendCache` (Consul also refreshes in the background).
    AsyncCache,
}

impl DownPolicy {
    /// Reads Consul's spelling (`allow`, `deny`, `extend-cache`, `async-cache`).
    pub fn parse(s: &str) -> Option<DownPolicy> {
        match s {
            "allow" => Some(DownPolicy::Allow),
            "deny" => Some(DownPolicy::Deny),
            "extend-cache" => Some(DownPolicy::ExtendCache),
            "async-cache" => Some(DownPolicy::AsyncCache),
            _ => None,
        }
    }
}

/// How an agent resolves tokens.
#[derive(Debug, Clone)]
pub struct AclConfig {
    /// `acl.enabled`: without it every request is allowed and `/v1/acl/*` is refused.
    pub enabled: bool,
    /// `acl.default_policy`.
    pub default_policy: DefaultPolicy,
    /// `acl.down_policy`.
    pub down_policy: DownPolicy,
    /// `acl.token_ttl`: how long a resolved token is used before it is resolved again.
    pub token_ttl: Duration,
    /// This agent's datacenter (policies and identities may be limited to some).
    pub datacenter: String,
}

impl AclConfig {
    /// ACLs off: everything allowed.
    pub fn disabled(datacenter: &str) -> AclConfig {
        AclConfig {
            enabled: false,
            default_policy: DefaultPolicy::Allow,
            down_policy: DownPolicy::ExtendCache,
            token_ttl: Duration::from_secs(30),
            datacenter: datacenter.to_string(),
        }
    }
}

/// Why a token could not be resolved from its source.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// Where identities come from: a server's store, or a server asked over the server port.
pub trait IdentitySource: Send + Sync {
    /// The token with this secret, its policies and roles; `None` when there is no such token.
    fn identity<'a>(
        &'a self,
        secret: &'a str,
    ) -> BoxFuture<'a, Result<Option<AclIdentity>, SourceError>>;
}

/// ACL failures, worded as Consul's (clients match on `Permission denied` and `ACL not found`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    /// The secret names no token, or an expired one (403).
    #[error("ACL not found")]
    NotFound,
    /// ACLs are not enabled on this agent (401).
    #[error("ACL support disabled")]
    Disabled,
    /// The token lacks a permission (403); the text is Consul's whole message.
    #[error("{0}")]
    Denied(String),
}

impl AclError {
    /// `Permission denied: <cause>`.
    pub fn denied(cause: impl std::fmt::Display) -> AclError {
        AclError::Denied(format!("Permission denied: {cause}"))
    }

    /// The HTTP status Consul answers with.
    pub fn status(&self) -> u16 {
        match self {
            AclError::Disabled => 401,
            AclError::NotFound | AclError::Denied(_) => 403,
        }
    }
}

/// A resolved token: who it is and what it may do.
#[derive(Debug)]
pub struct Identity {
    accessor: String,
    authorizer: Authorizer,
    enabled: bool,
    /// The secret was given by the caller (not the agent's default or the anonymous token).
    given: bool,
}

impl Identity {
    /// Everything allowed: ACLs are off.
    pub fn unrestricted() -> Identity {
        Identity {
            accessor: String::new(),
            authorizer: Authorizer::default_only(DefaultPolicy::Allow),
            enabled: false,
            given: false,
        }
    }

    /// An identity with this authorizer (tests, and the down policy).
    pub fn new(accessor: &str, authorizer: Authorizer) -> Identity {
        Identity {
            accessor: accessor.to_string(),
            authorizer,
            enabled: true,
            given: true,
        }
    }

    /// The authorizer.
    pub fn authorizer(&self) -> &Authorizer {
        &self.authorizer
    }

    /// The token's AccessorID (empty with ACLs off).
    pub fn accessor(&self) -> &str {
        &self.accessor
    }

    /// Whether ACLs are enforced.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether this is the anonymous token.
    pub fn anonymous(&self) -> bool {
        self.accessor == ANONYMOUS_TOKEN_ID
    }

    /// Whether the caller sent a token (Consul sets `X-Consul-Results-Filtered-By-ACLs` only
    /// then, so the header tells an anonymous caller nothing).
    pub fn given(&self) -> bool {
        self.given
    }

    /// `Ok` when `decision` allows; otherwise Consul's denial naming the permission
    /// (`<resource>:<level>`) and, for a labelled resource, the name.
    pub fn require(
        &self,
        decision: Decision,
        permission: &str,
        name: Option<&str>,
    ) -> Result<(), AclError> {
        if !self.enabled || decision.is_allowed() {
            return Ok(());
        }
        let on = name.map(|n| format!(" on {n:?}")).unwrap_or_default();
        Err(AclError::Denied(if self.anonymous() {
            format!(
                "Permission denied: anonymous token lacks permission '{permission}'{on}. The anonymous token is used implicitly when a request does not specify a token."
            )
        } else {
            format!(
                "Permission denied: token with AccessorID '{}' lacks permission '{permission}'{on}",
                self.accessor
            )
        }))
    }
}

struct Cached {
    identity: Arc<Identity>,
    at: Instant,
    /// The token's `ExpirationTime`: past it the token is not found, cached or not.
    expires: Option<SystemTime>,
}

impl Cached {
    fn expired(&self) -> bool {
        self.expires.is_some_and(|t| t <= SystemTime::now())
    }
}

/// The most resolved tokens kept; past it the oldest go first.
const MAX_CACHED: usize = 16_384;

/// Resolves secrets to identities, each cached for `token_ttl`.
pub struct Resolver {
    config: AclConfig,
    source: Arc<dyn IdentitySource>,
    cache: Mutex<HashMap<String, Cached>>,
    unrestricted: Arc<Identity>,
}

impl Resolver {
    /// A resolver over `source`.
    pub fn new(config: AclConfig, source: Arc<dyn IdentitySource>) -> Resolver {
        Resolver {
            config,
            source,
            cache: Mutex::new(HashMap::new()),
            unrestricted: Arc::new(Identity::unrestricted()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AclConfig {
        &self.config
    }

    /// Whether ACLs are enforced.
    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// The default policy as `X-Consul-Default-ACL-Policy` says it (`allow` with ACLs off).
    pub fn default_policy_name(&self) -> &'static str {
        match (self.config.enabled, self.config.default_policy) {
            (true, DefaultPolicy::Deny) => "deny",
            _ => "allow",
        }
    }

    /// The identity of `secret` (empty: the anonymous token); `given` says whether the caller
    /// sent it. An unknown or expired secret is [`AclError::NotFound`].
    pub async fn resolve(&self, secret: &str, given: bool) -> Result<Arc<Identity>, AclError> {
        if !self.config.enabled {
            return Ok(self.unrestricted.clone());
        }
        let secret = if secret.is_empty() {
            ANONYMOUS_TOKEN_SECRET
        } else {
            secret
        };
        let stale = {
            let mut cache = self.cache.lock();
            match cache.get(secret) {
                Some(c) if c.expired() => {
                    cache.remove(secret);
                    return Err(AclError::NotFound);
                }
                Some(c) if c.at.elapsed() < self.config.token_ttl => {
                    return Ok(with_given(&c.identity, given))
                }
                Some(c) => Some(c.identity.clone()),
                None => None,
            }
        };
        match self.source.identity(secret).await {
            Ok(Some(found)) => {
                let expires = match expiry(&found) {
                    Ok(at) => at,
                    // An expiration time that does not read is taken as past.
                    Err(()) => Some(SystemTime::UNIX_EPOCH),
                };
                if expires.is_some_and(|t| t <= SystemTime::now()) {
                    self.cache.lock().remove(secret);
                    return Err(AclError::NotFound);
                }
                let identity = Arc::new(Identity {
                    accessor: found.token.accessor_id.clone(),
                    authorizer: crate::compile(
                        &found,
                        &self.config.datacenter,
                        self.config.default_policy,
                    ),
                    enabled: true,
                    given,
                });
                self.remember(secret, identity.clone(), expires);
                Ok(identity)
            }
            Ok(None) if secret == ANONYMOUS_TOKEN_SECRET => {
                // Before the ACL system is initialised there is no anonymous token yet: it has
                // no policies, so the default policy decides.
                let identity = Arc::new(Identity {
                    accessor: ANONYMOUS_TOKEN_ID.into(),
                    authorizer: Authorizer::default_only(self.config.default_policy),
                    enabled: true,
                    given,
                });
                Ok(identity)
            }
            Ok(None) => {
                self.cache.lock().remove(secret);
                Err(AclError::NotFound)
            }
            Err(e) => {
                tracing::warn!(error = %e, down_policy = ?self.config.down_policy, "cannot resolve an ACL token: servers unreachable");
                let fallback = |policy: DefaultPolicy| {
                    Arc::new(Identity {
                        accessor: "down-policy".into(),
                        authorizer: Authorizer::default_only(policy),
                        enabled: true,
                        given,
                    })
                };
                Ok(match (self.config.down_policy, stale) {
                    (DownPolicy::Allow, _) => fallback(DefaultPolicy::Allow),
                    (DownPolicy::Deny, _) => fallback(DefaultPolicy::Deny),
                    (DownPolicy::ExtendCache | DownPolicy::AsyncCache, Some(id)) => {
                        with_given(&id, given)
                    }
                    // Nothing cached to extend: Consul falls back to the default policy.
                    (DownPolicy::ExtendCache | DownPolicy::AsyncCache, None) => {
                        fallback(self.config.default_policy)
                    }
                })
            }
        }
    }

    fn remember(&self, secret: &str, identity: Arc<Identity>, expires: Option<SystemTime>) {
        let mut cache = self.cache.lock();
        if cache.len() >= MAX_CACHED && !cache.contains_key(secret) {
            if let Some(oldest) = cache
                .iter()
                .min_by_key(|(_, c)| c.at)
                .map(|(k, _)| k.clone())
            {
                cache.remove(&oldest);
            }
        }
        cache.insert(
            secret.to_string(),
            Cached {
                identity,
                at: Instant::now(),
                expires,
            },
        );
    }

    /// Forgets every resolved token (after this agent changes ACL data, so its own caller
    /// sees the change at once).
    pub fn clear(&self) {
        self.cache.lock().clear();
    }
}

fn with_given(id: &Arc<Identity>, given: bool) -> Arc<Identity> {
    if id.given == given {
        return id.clone();
    }
    Arc::new(Identity {
        accessor: id.accessor.clone(),
        authorizer: id.authorizer.clone(),
        enabled: id.enabled,
        given,
    })
}

/// The token's `ExpirationTime`, if it has one; `Err` when it does not read as RFC 3339.
fn expiry(identity: &AclIdentity) -> Result<Option<SystemTime>, ()> {
    match identity.token.expiration_time.as_deref() {
        None | Some("") => Ok(None),
        Some(t) => humantime::parse_rfc3339_weak(t).map(Some).map_err(|_| ()),
    }
}

/// Whether the token has expired (or its expiration time does not read).
pub fn expired(identity: &AclIdentity) -> bool {
    match expiry(identity) {
        Ok(at) => at.is_some_and(|t| t <= SystemTime::now()),
        Err(()) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use trellis_api::{AclPolicy, AclToken};

    struct Fake {
        down: AtomicBool,
        calls: AtomicUsize,
    }

    impl IdentitySource for Fake {
        fn identity<'a>(
            &'a self,
            secret: &'a str,
        ) -> BoxFuture<'a, Result<Option<AclIdentity>, SourceError>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                if self.down.load(Ordering::SeqCst) {
                    return Err(SourceError("unreachable".into()));
                }
                Ok(match secret {
                    "s1" => Some(AclIdentity {
                        token: AclToken {
                            accessor_id: "a1".into(),
                            ..Default::default()
                        },
                        policies: vec![AclPolicy {
                            rules: r#"service "web" { policy = "write" }"#.into(),
                            ..Default::default()
                        }],
                        roles: vec![],
                    }),
                    "soon" => Some(AclIdentity {
                        token: AclToken {
                            accessor_id: "a3".into(),
                            expiration_time: Some(
                                humantime::format_rfc3339_nanos(
                                    SystemTime::now() + Duration::from_secs(1),
                                )
                                .to_string(),
                            ),
                            ..Default::default()
                        },
                        ..Default::default()
                    }),
                    "garbled" => Some(AclIdentity {
                        token: AclToken {
                            accessor_id: "a4".into(),
                            expiration_time: Some("yesterday".into()),
                            ..Default::default()
                        },
                        ..Default::default()
                    }),
                    "old" => Some(AclIdentity {
                        token: AclToken {
                            accessor_id: "a2".into(),
                            expiration_time: Some("2001-01-01T00:00:00Z".into()),
                            ..Default::default()
                        },
                        ..Default::default()
                    }),
                    _ => None,
                })
            })
        }
    }

    fn resolver(down: DownPolicy) -> (Resolver, Arc<Fake>) {
        let fake = Arc::new(Fake {
            down: AtomicBool::new(false),
            calls: AtomicUsize::new(0),
        });
        let r = Resolver::new(
            AclConfig {
                enabled: true,
                default_policy: DefaultPolicy::Deny,
                down_policy: down,
                token_ttl: Duration::from_secs(30),
                datacenter: "dc1".into(),
            },
            fake.clone(),
        );
        (r, fake)
    }

    #[tokio::test]
    async fn a_token_resolves_once_per_ttl_and_unknown_or_expired_is_not_found() {
        let (r, fake) = resolver(DownPolicy::ExtendCache);
        let id = r.resolve("s1", true).await.unwrap();
        assert!(id.authorizer().service_write("web").is_allowed());
        r.resolve("s1", true).await.unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            r.resolve("nope", true).await.unwrap_err(),
            AclError::NotFound
        );
        assert_eq!(
            r.resolve("old", true).await.unwrap_err(),
            AclError::NotFound
        );
        assert_eq!(
            r.resolve("garbled", true).await.unwrap_err(),
            AclError::NotFound
        );
        // A token cached before its expiration is refused once it passes, within the TTL.
        r.resolve("soon", true).await.unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(
            r.resolve("soon", true).await.unwrap_err(),
            AclError::NotFound
        );
        // No anonymous token stored yet: the default policy decides.
        let anon = r.resolve("", false).await.unwrap();
        assert!(anon.anonymous());
        assert!(!anon.authorizer().service_read("web").is_allowed());
    }

    #[tokio::test]
    async fn the_down_policy_decides_when_the_servers_are_unreachable() {
        let (r, fake) = resolver(DownPolicy::ExtendCache);
        r.resolve("s1", true).await.unwrap();
        r.clear();
        fake.down.store(true, Ordering::SeqCst);
        // Cleared: nothing to extend, so the default policy (deny here) decides.
        let id = r.resolve("s1", true).await.unwrap();
        assert!(!id.authorizer().service_write("web").is_allowed());
        assert_eq!(id.authorizer().default_policy(), DefaultPolicy::Deny);
        let (r, fake) = resolver(DownPolicy::ExtendCache);
        let mut cfg = r.config().clone();
        cfg.token_ttl = Duration::ZERO;
        let r = Resolver::new(cfg, fake.clone());
        r.resolve("s1", true).await.unwrap();
        fake.down.store(true, Ordering::SeqCst);
        let id = r.resolve("s1", true).await.unwrap();
        assert!(
            id.authorizer().service_write("web").is_allowed(),
            "extended"
        );
        let (r, fake) = resolver(DownPolicy::Allow);
        fake.down.store(true, Ordering::SeqCst);
        assert!(r
            .resolve("s1", true)
            .await
            .unwrap()
            .authorizer()
            .operator_write()
            .is_allowed());
    }

    #[test]
    fn denials_read_as_consuls() {
        let a = Authorizer::default_only(DefaultPolicy::Deny);
        let id = Identity::new("acc-1", a.clone());
        let e = id
            .require(a.service_write("web"), "service:write", Some("web"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Permission denied: token with AccessorID 'acc-1' lacks permission 'service:write' on \"web\""
        );
        let anon = Identity::new(ANONYMOUS_TOKEN_ID, a.clone());
        let e = anon
            .require(a.operator_write(), "operator:write", None)
            .unwrap_err();
        assert!(e
            .to_string()
            .starts_with("Permission denied: anonymous token lacks permission 'operator:write'. The anonymous token"));
        assert_eq!(e.status(), 403);
        assert!(Identity::unrestricted()
            .require(a.operator_write(), "operator:write", None)
            .is_ok());
    }
}
