//! The provider seam: what a CA back end must do, split by role.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{CaError, ValidatedCsr};

/// A root a provider made or loaded: its certificate, the certificates between it and the
/// leaf-signing key (empty when the root signs leafs itself), and the provider's state to keep
/// in the replicated store.
#[derive(Clone, PartialEq, Eq)]
pub struct RootMaterial {
    /// The root certificate (PEM).
    pub root_pem: String,
    /// Intermediates from the root down to the leaf signer (PEM), if any.
    pub intermediates: Vec<String>,
    /// Provider state for the replicated store (the built-in provider's key lives here).
    pub state: BTreeMap<String, String>,
}

impl std::fmt::Debug for RootMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // State may hold a private key: show only its keys.
        f.debug_struct("RootMaterial")
            .field("root_pem", &self.root_pem)
            .field("intermediates", &self.intermediates.len())
            .field("state_keys", &self.state.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A signed leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedLeaf {
    /// The leaf certificate alone (PEM).
    pub cert_pem: String,
    /// Serial, colon-hex.
    pub serial_hex: String,
    /// RFC 3339 validity start (now − 1 minute).
    pub valid_after: String,
    /// RFC 3339 validity end.
    pub valid_before: String,
}

/// A CA back end. The primary datacenter's provider makes and holds the root and signs leafs,
/// intermediates for secondaries, and cross-signs a successor root; a secondary's provider
/// makes its intermediate's key and CSR and signs leafs with the intermediate the primary
/// signed. Every signing method runs on the leader only.
pub trait CaProvider: Send + Sync {
    /// Provider name as the configuration spells it (`consul`, `pkcs11`).
    fn name(&self) -> &'static str;

    /// The root this provider holds.
    fn root(&self) -> &RootMaterial;

    /// Signs a validated leaf CSR for `ttl`.
    fn sign_leaf(&self, csr: &ValidatedCsr, ttl: Duration) -> Result<IssuedLeaf, CaError>;

    /// Signs a secondary datacenter's intermediate CSR (PEM) for `ttl`; returns the
    /// intermediate (PEM). Primary role.
    fn sign_intermediate(&self, csr_pem: &str, ttl: Duration) -> Result<String, CaError>;

    /// Cross-signs another root's public key with this provider's key, so that peers holding
    /// only this root accept chains through the other. Primary role.
    fn cross_sign(&self, other_root_pem: &str) -> Result<String, CaError>;

    /// Makes a new intermediate key and returns its CSR (PEM). Secondary role.
    fn generate_intermediate_csr(&self) -> Result<String, CaError> {
        Err(CaError::Crypto(format!(
            "the {} provider does not act as a secondary yet",
            self.name()
        )))
    }

    /// Installs the intermediate the primary signed for this provider's key. Secondary role.
    fn set_intermediate(&self, _intermediate_pem: &str) -> Result<(), CaError> {
        Err(CaError::Crypto(format!(
            "the {} provider does not act as a secondary yet",
            self.name()
        )))
    }
}

/// Makes a new root with the provider `config` names. A `pkcs11` configuration may name only
/// a module on `modules`.
pub fn generate_provider(
    trust_domain: &trellis_identity::TrustDomain,
    config: &crate::CaConfig,
    modules: &crate::Pkcs11Modules,
) -> Result<std::sync::Arc<dyn CaProvider>, CaError> {
    match config.provider.as_str() {
        "consul" => Ok(std::sync::Arc::new(crate::BuiltinProvider::generate(
            trust_domain,
            config,
        )?)),
        "pkcs11" => Ok(std::sync::Arc::new(crate::Pkcs11Provider::generate(
            trust_domain,
            config,
            modules,
        )?)),
        other => Err(CaError::InvalidConfig(format!(
            "the {other:?} CA provider is not available in this build"
        ))),
    }
}

/// Rebuilds the provider that made the active root, from the state it keeps in the replicated
/// store and the stored configuration. A `pkcs11` configuration may name only a module on
/// `modules`: the replicated state is no reason to load a module this server does not allow.
pub fn provider_from_state(
    config: &crate::CaConfig,
    state: &BTreeMap<String, String>,
    modules: &crate::Pkcs11Modules,
) -> Result<std::sync::Arc<dyn CaProvider>, CaError> {
    match config.provider.as_str() {
        "consul" => Ok(std::sync::Arc::new(crate::BuiltinProvider::from_state(
            state,
        )?)),
        "pkcs11" => Ok(std::sync::Arc::new(crate::Pkcs11Provider::from_state(
            state, config, modules,
        )?)),
        other => Err(CaError::InvalidConfig(format!(
            "the {other:?} CA provider is not available in this build"
        ))),
    }
}
