//! The CA manager: leader-only work on the datacenter's CA (initialise, sign leafs, change the
//! configuration with root rotation, prune rotated-out roots).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use trellis_api::{CaConfiguration, CaRoot, IssuedCert};
use trellis_ca::{
    generate_provider, provider_from_state, validate_agent_csr, validate_csr, CaConfig, CaError,
    CaProvider, CertInfo, CsrLimiter, Pkcs11Modules, ValidatedCsr,
};
use trellis_identity::{SpiffeId, TrustDomain};
use trellis_state::{Applied, CaState, Command, StoredRoot};

use crate::{Server, ServerError};

/// Leader-side CA state that is not replicated: the provider built from the replicated state
/// (cached by active root), the CSR limiter, and the PKCS#11 modules this server's operator
/// allows (every provider is built through it, so no other module is ever loaded).
pub(crate) struct CaManager {
    signer: Mutex<Option<Arc<Signer>>>,
    limiter: CsrLimiter,
    modules: Pkcs11Modules,
}

/// What signing needs, derived once per version of the CA state rather than per request.
struct Signer {
    version: u64,
    config: CaConfig,
    trust_domain: TrustDomain,
    provider: Arc<dyn CaProvider>,
    /// The active root's intermediates, appended to every leaf.
    chain: String,
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The API form of a provider's root.
fn root_of(provider: &dyn CaProvider, cluster_id: &str) -> Result<CaRoot, CaError> {
    let material = provider.root();
    let info = CertInfo::from_pem(&material.root_pem)?;
    let signer = match material.intermediates.last() {
        Some(pem) => CertInfo::from_pem(pem)?,
        None => info.clone(),
    };
    Ok(CaRoot {
        id: info.id,
        name: "Consul CA Primary Cert".into(),
        serial_number: info.serial_u64,
        signing_key_id: signer.subject_key_id,
        external_trust_domain: cluster_id.to_string(),
        not_before: info.not_before,
        not_after: info.not_after,
        root_cert: material.root_pem.clone(),
        intermediate_certs: (!material.intermediates.is_empty())
            .then(|| material.intermediates.clone()),
        active: true,
        private_key_type: info.key_type,
        private_key_bits: info.key_bits,
        create_index: 0,
        modify_index: 0,
    })
}

fn stored_config(cfg: &CaConfig) -> CaConfiguration {
    CaConfiguration {
        provider: cfg.provider.clone(),
        config: cfg.raw.clone(),
        state: None,
        force_without_cross_signing: cfg.force_without_cross_signing,
        create_index: 0,
        modify_index: 0,
    }
}

fn parse_stored(state: &CaState) -> Result<CaConfig, CaError> {
    CaConfig::parse(
        &state.config.provider,
        &state.config.config,
        state.config.force_without_cross_signing,
    )
}

impl CaManager {
    /// A manager that may load only the PKCS#11 modules on `modules` (from the server's own
    /// configuration).
    pub(crate) fn new(modules: Pkcs11Modules) -> CaManager {
        let defaults = CaConfig::default_consul();
        CaManager {
            signer: Mutex::new(None),
            limiter: CsrLimiter::new(defaults.csr_max_per_second, defaults.csr_max_concurrent),
            modules,
        }
    }

    /// The signer for the current CA state, rebuilt (provider, parsed configuration, limits)
    /// only when the state changed.
    fn signer(&self, server: &Server) -> Result<Arc<Signer>, ServerError> {
        let version = server.store().ca_version().ok_or(CaError::Uninitialized)?;
        if let Some(s) = self.signer.lock().as_ref().filter(|s| s.version == version) {
            return Ok(s.clone());
        }
        let state = server.store().ca_state().ok_or(CaError::Uninitialized)?;
        let config = parse_stored(&state)?;
        let trust_domain = TrustDomain::parse(&state.trust_domain)
            .map_err(|e| ServerError::Raft(e.to_string()))?;
        let provider = provider_from_state(&config, &state.provider_state, &self.modules)?;
        let active = state.active_root().ok_or(CaError::Uninitialized)?;
        let mut chain = String::new();
        for pem in active.intermediate_certs.iter().flatten() {
            chain.push_str(pem);
            if !pem.ends_with('\n') {
                chain.push('\n');
            }
        }
        self.limiter
            .set(config.csr_max_per_second, config.csr_max_concurrent);
        let signer = Arc::new(Signer {
            version: state.modify_index,
            config,
            trust_domain,
            provider,
            chain,
        });
        *self.signer.lock() = Some(signer.clone());
        Ok(signer)
    }

    async fn commit(server: &Server, state: CaState, cas: u64) -> Result<bool, ServerError> {
        match server
            .apply_as_leader(Command::CaSet {
                state: Box::new(state),
                cas,
            })
            .await?
            .applied
        {
            Applied::Cas(ok) => Ok(ok),
            Applied::Rejected(e) => Err(ServerError::Raft(format!("CA state refused: {e}"))),
            other => Err(ServerError::Raft(format!(
                "unexpected CA write outcome {other:?}"
            ))),
        }
    }

    /// Makes the cluster ID, the trust domain and the first root, once, on the first leader.
    pub(crate) async fn ensure_initialized(&self, server: &Server) -> Result<(), ServerError> {
        if server.store().ca_state().is_some() {
            return Ok(());
        }
        let cluster_id = uuid::Uuid::new_v4().to_string();
        let td =
            TrustDomain::for_cluster(&cluster_id).map_err(|e| ServerError::Raft(e.to_string()))?;
        let config = CaConfig::default_consul();
        let provider = generate_provider(&td, &config, &self.modules)?;
        let root = root_of(provider.as_ref(), &cluster_id)?;
        let state = CaState {
            cluster_id,
            trust_domain: td.as_str().to_string(),
            config: stored_config(&config),
            provider_state: provider.root().state.clone(),
            roots: vec![StoredRoot {
                root,
                rotated_out_at: None,
            }],
            modify_index: 0,
        };
        if Self::commit(server, state, 0).await? {
            tracing::info!(trust_domain = %td.as_str(), "CA initialised with a new root");
        }
        Ok(())
    }

    /// Signs a leaf CSR on the leader: rate limit, Consul's validation order, sign, then the
    /// active root's intermediates appended.
    pub(crate) async fn sign(
        &self,
        server: &Server,
        req: &trellis_rpc::SignRequest,
    ) -> Result<IssuedCert, ServerError> {
        let signer = self.signer(server)?;
        let _permit = self.limiter.acquire().await?;
        let csr = validate_csr(&req.csr, &signer.trust_domain, &server.config().datacenter)?;
        if let Some(node) = &req.for_node {
            // A client agent's own request: only for a service its node offers.
            let offered = match &csr.id {
                SpiffeId::Service(s) => server.store().node_offers(node, &s.service),
                _ => false,
            };
            if !offered {
                tracing::warn!(node, uri = %csr.uri, "refused a client agent's CSR for a service its node does not offer");
                return Err(trellis_rpc::Error::Forbidden(format!(
                    "node {node:?} has no instance of the service named by {}",
                    csr.uri
                ))
                .into());
            }
        }
        Self::issue(server, &signer, csr)
    }

    /// Signs a client agent's auto-encrypt CSR on the leader: rate limit, the agent-ID checks
    /// (the placeholder trust domain replaced by this CA's), sign, intermediates appended.
    pub(crate) async fn sign_agent(
        &self,
        server: &Server,
        csr_pem: &str,
    ) -> Result<IssuedCert, ServerError> {
        let signer = self.signer(server)?;
        let _permit = self.limiter.acquire().await?;
        let csr = validate_agent_csr(csr_pem, &signer.trust_domain, &server.config().datacenter)?;
        tracing::info!(uri = %csr.uri, "signing a client agent's auto-encrypt certificate");
        Self::issue(server, &signer, csr)
    }

    /// Signs a validated CSR with the active root for the leaf TTL and appends the root's
    /// intermediates.
    fn issue(
        server: &Server,
        signer: &Signer,
        csr: ValidatedCsr,
    ) -> Result<IssuedCert, ServerError> {
        let issued = signer
            .provider
            .sign_leaf(&csr, signer.config.leaf_cert_ttl)?;
        let mut cert_pem = issued.cert_pem;
        cert_pem.push_str(&signer.chain);
        let service = match &csr.id {
            SpiffeId::Service(s) => s.service.clone(),
            _ => String::new(),
        };
        let index = server.store().last_index();
        Ok(IssuedCert {
            serial_number: issued.serial_hex,
            cert_pem,
            private_key_pem: String::new(),
            service,
            service_uri: csr.uri,
            valid_after: issued.valid_after,
            valid_before: issued.valid_before,
            create_index: index,
            modify_index: index,
        })
    }

    /// Applies a new CA configuration on the leader. A change of key or provider makes a new
    /// root, cross-signed by the old root's key (unless forced without), and keeps the old root
    /// trusted until it is pruned.
    pub(crate) async fn set_config(
        &self,
        server: &Server,
        update: CaConfiguration,
    ) -> Result<(), ServerError> {
        if update.state.as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(CaError::InvalidConfig("CA Provider State is read-only".into()).into());
        }
        let provider_name = if update.provider.is_empty() {
            "consul"
        } else {
            update.provider.as_str()
        };
        let next = CaConfig::parse(
            provider_name,
            &update.config,
            update.force_without_cross_signing,
        )?;
        // A module path comes only from this server's own configuration: a request may name
        // only a module on its allow-list. Refused before anything is loaded or written.
        self.modules.check(&next)?;
        for _attempt in 0..3 {
            let current = server.store().ca_state().ok_or(CaError::Uninitialized)?;
            let cur_cfg = parse_stored(&current)?;
            if cur_cfg.raw == next.raw && cur_cfg.provider == next.provider {
                return Ok(());
            }
            let mut state = current.clone();
            state.config = stored_config(&next);
            if cur_cfg.needs_new_root(&next) {
                let td = TrustDomain::parse(&current.trust_domain)
                    .map_err(|e| ServerError::Raft(e.to_string()))?;
                let new_provider = generate_provider(&td, &next, &self.modules)?;
                let mut new_root = root_of(new_provider.as_ref(), &current.cluster_id)?;
                let active_id = current
                    .active_root()
                    .map(|r| r.id.clone())
                    .unwrap_or_default();
                if new_root.id != active_id {
                    if !next.force_without_cross_signing {
                        let old = self.signer(server)?.provider.clone();
                        let cross = old.cross_sign(&new_provider.root().root_pem)?;
                        let mut chain = vec![cross];
                        chain.extend(new_root.intermediate_certs.take().unwrap_or_default());
                        new_root.intermediate_certs = Some(chain);
                    }
                    let now = now_unix();
                    for r in &mut state.roots {
                        if r.root.active {
                            r.root.active = false;
                            r.rotated_out_at = Some(now);
                        }
                    }
                    state.roots.push(StoredRoot {
                        root: new_root,
                        rotated_out_at: None,
                    });
                    state.provider_state = new_provider.root().state.clone();
                    tracing::info!("CA root rotated");
                }
            }
            if Self::commit(server, state, current.modify_index).await? {
                self.limiter
                    .set(next.csr_max_per_second, next.csr_max_concurrent);
                return Ok(());
            }
        }
        Err(ServerError::Raft(
            "CA configuration changed concurrently; try again".into(),
        ))
    }

    /// Removes roots rotated out longer ago than twice the leaf lifetime: every leaf they
    /// signed has expired by then.
    pub(crate) async fn prune(&self, server: &Server) -> Result<(), ServerError> {
        let Some(current) = server.store().ca_state() else {
            return Ok(());
        };
        let ttl = parse_stored(&current)?.leaf_cert_ttl;
        let now = now_unix();
        let mut state = current.clone();
        state.roots.retain(|r| keep_root(r, now, ttl));
        if state.roots.len() == current.roots.len() {
            return Ok(());
        }
        if Self::commit(server, state, current.modify_index).await? {
            tracing::info!("pruned CA roots that no leaf depends on any more");
        }
        Ok(())
    }
}

/// Whether a root must stay trusted at `now`: while active, and after it was rotated out until
/// twice the leaf lifetime has passed (every leaf it signed has expired by then).
fn keep_root(root: &StoredRoot, now: i64, leaf_ttl: Duration) -> bool {
    root.root.active
        || root
            .rotated_out_at
            .is_none_or(|t| now - t <= 2 * leaf_ttl.as_secs() as i64)
}

/// Leader-only CA work: initialise on becoming leader, then prune periodically. Runs for the
/// server's lifetime; does nothing while this server is not the leader.
pub(crate) async fn run(server: std::sync::Weak<Server>, prune_every: Duration) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut last_prune = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let Some(server) = server.upgrade() else {
            return;
        };
        if !server.is_leader() {
            continue;
        }
        if let Err(e) = server.ca().ensure_initialized(&server).await {
            tracing::warn!(error = %e, "CA initialisation failed; retrying");
            continue;
        }
        // Prune at least as often as leafs expire, so short-lived test CAs prune promptly.
        let every = server
            .ca()
            .signer(&server)
            .map(|s| s.config.leaf_cert_ttl.min(prune_every))
            .unwrap_or(prune_every);
        if last_prune.elapsed() >= every {
            last_prune = tokio::time::Instant::now();
            if let Err(e) = server.ca().prune(&server).await {
                tracing::warn!(error = %e, "CA root pruning failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_roots_stay_until_twice_the_leaf_ttl() {
        let ttl = Duration::from_secs(3600);
        let root = |active: bool, rotated: Option<i64>| StoredRoot {
            root: CaRoot {
                active,
                ..Default::default()
            },
            rotated_out_at: rotated,
        };
        assert!(keep_root(&root(true, None), 1_000_000, ttl));
        assert!(
            keep_root(&root(false, None), 1_000_000, ttl),
            "never rotated out: kept"
        );
        assert!(keep_root(&root(false, Some(1000)), 1000 + 7200, ttl));
        assert!(!keep_root(&root(false, Some(1000)), 1000 + 7201, ttl));
    }
}
