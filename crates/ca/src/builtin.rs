//! The built-in (`consul`) provider: the CA key is made here and kept in the replicated state.

use std::collections::BTreeMap;
use std::time::Duration;

use rcgen::KeyPair;
use trellis_identity::TrustDomain;

use crate::cert::CertInfo;
use crate::keyed::{self_signed_root, KeyedCa};
use crate::provider::{CaProvider, IssuedLeaf, RootMaterial};
use crate::{CaConfig, CaError, KeyType, ValidatedCsr};

const STATE_KEY: &str = "PrivateKey";
const STATE_ROOT: &str = "RootCert";

/// The built-in provider.
pub struct BuiltinProvider {
    ca: KeyedCa<KeyPair>,
}

fn generate_key(config: &CaConfig) -> Result<KeyPair, CaError> {
    let key = match (config.private_key_type, config.private_key_bits) {
        (KeyType::Ec, 384) => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?,
        (KeyType::Ec, _) => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
        (KeyType::Rsa, 4096) => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_4096)?
        }
        (KeyType::Rsa, _) => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)?
        }
    };
    Ok(key)
}

impl BuiltinProvider {
    /// Makes a new root for `trust_domain` per `config`: a fresh key, or the operator-supplied
    /// key and root (whose URI SAN must be the trust domain's signing ID).
    pub fn generate(
        trust_domain: &TrustDomain,
        config: &CaConfig,
    ) -> Result<BuiltinProvider, CaError> {
        if let (Some(key), Some(root)) = (&config.private_key, &config.root_cert) {
            // The operator's key and root: anything wrong with them is the request's fault
            // (a 400), never a server error.
            let supplied = |e: CaError| match e {
                CaError::Crypto(m) => CaError::InvalidConfig(format!("invalid RootCert: {m}")),
                other => other,
            };
            let info = CertInfo::from_pem(root).map_err(supplied)?;
            let want = format!("spiffe://{}", trust_domain.as_str());
            if !info.uris.iter().any(|u| u.eq_ignore_ascii_case(&want)) {
                return Err(CaError::InvalidConfig(format!(
                    "RootCert must have the URI SAN {want}"
                )));
            }
            return BuiltinProvider::load(key, root).map_err(supplied);
        }
        let key = generate_key(config)?;
        let root_pem = self_signed_root(trust_domain, &key, config.root_cert_ttl)?;
        BuiltinProvider::load(&key.serialize_pem(), &root_pem)
    }

    /// Rebuilds the provider from the state it keeps in the replicated store.
    pub fn from_state(state: &BTreeMap<String, String>) -> Result<BuiltinProvider, CaError> {
        let key = state
            .get(STATE_KEY)
            .ok_or_else(|| CaError::Crypto("built-in CA state has no key".into()))?;
        let root = state
            .get(STATE_ROOT)
            .ok_or_else(|| CaError::Crypto("built-in CA state has no root".into()))?;
        BuiltinProvider::load(key, root)
    }

    fn load(key_pem: &str, root_pem: &str) -> Result<BuiltinProvider, CaError> {
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| CaError::InvalidConfig(format!("invalid CA private key: {e}")))?;
        let mut ca = KeyedCa::load(key, root_pem, BTreeMap::new())?;
        ca.material.state = BTreeMap::from([
            (STATE_KEY.to_string(), key_pem.to_string()),
            (STATE_ROOT.to_string(), ca.material.root_pem.clone()),
        ]);
        Ok(BuiltinProvider { ca })
    }
}

impl CaProvider for BuiltinProvider {
    fn name(&self) -> &'static str {
        "consul"
    }

    fn root(&self) -> &RootMaterial {
        &self.ca.material
    }

    fn sign_leaf(&self, csr: &ValidatedCsr, ttl: Duration) -> Result<IssuedLeaf, CaError> {
        self.ca.sign_leaf(csr, ttl)
    }

    fn sign_intermediate(&self, csr_pem: &str, ttl: Duration) -> Result<String, CaError> {
        self.ca.sign_intermediate(csr_pem, ttl)
    }

    fn cross_sign(&self, other_root_pem: &str) -> Result<String, CaError> {
        self.ca.cross_sign(other_root_pem)
    }
}
