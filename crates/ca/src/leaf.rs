//! The agent side of a leaf: a fresh EC P-256 key and its CSR. The key never leaves the agent.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};

use crate::cert::der_to_pem;
use crate::CaError;

/// A leaf private key and the CSR for it.
pub struct LeafKey {
    /// The private key, SEC1 PEM (`EC PRIVATE KEY`), as Consul's agents return it.
    pub private_key_pem: String,
    /// The CSR (PEM) asking for `uri`.
    pub csr_pem: String,
}

impl std::fmt::Debug for LeafKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafKey")
            .field("csr_pem", &self.csr_pem)
            .finish_non_exhaustive()
    }
}

/// Makes an EC P-256 key and a CSR whose only SAN is `uri` (a SPIFFE ID).
pub fn leaf_key_and_csr(uri: &str) -> Result<LeafKey, CaError> {
    let crypto = |e: &dyn std::fmt::Display| CaError::Crypto(e.to_string());
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).map_err(|e| crypto(&e))?;
    let sec1 = key.private_key().as_der().map_err(|e| crypto(&e))?;
    let pkcs8 = key.to_pkcs8v1().map_err(|e| crypto(&e))?;
    let signer = KeyPair::try_from(pkcs8.as_ref())?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(uri.to_string().try_into()?)];
    let csr = params.serialize_request(&signer)?;
    Ok(LeafKey {
        private_key_pem: der_to_pem("EC PRIVATE KEY", sec1.as_ref()),
        csr_pem: csr.pem()?,
    })
}
