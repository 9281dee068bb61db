//! Connect CA wire types: roots, CA configuration, issued leaf certificates.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One trusted root (`CARoot`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct CaRoot {
    /// Colon-hex SHA-1 of the root certificate's DER.
    #[serde(rename = "ID")]
    pub id: String,
    /// Display name (`Consul CA Primary Cert`).
    pub name: String,
    /// The root's serial number (low 64 bits).
    pub serial_number: u64,
    /// Colon-hex key ID of the certificate that signs leafs.
    #[serde(rename = "SigningKeyID")]
    pub signing_key_id: String,
    /// Cluster ID the root was made for.
    pub external_trust_domain: String,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
    /// The root certificate, PEM.
    pub root_cert: String,
    /// Certificates between the root and the leaf signer, cross-signed ones first; `null` when none.
    pub intermediate_certs: Option<Vec<String>>,
    /// Whether leafs are signed under this root now.
    pub active: bool,
    /// `ec` or `rsa`.
    pub private_key_type: String,
    /// Key size.
    pub private_key_bits: u32,
    /// Raft index that created the root.
    pub create_index: u64,
    /// Raft index that last changed the root.
    pub modify_index: u64,
}

/// Body of `GET /v1/connect/ca/roots` (`IndexedCARoots`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct IndexedCaRoots {
    /// ID of the active root.
    #[serde(rename = "ActiveRootID")]
    pub active_root_id: String,
    /// `<cluster-id>.consul`.
    pub trust_domain: String,
    /// Every trusted root.
    pub roots: Vec<CaRoot>,
}

/// Body of `GET|PUT /v1/connect/ca/configuration` (`CAConfiguration`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct CaConfiguration {
    /// Provider name.
    #[serde(default)]
    pub provider: String,
    /// Provider configuration (Consul's keys).
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub config: Map<String, Value>,
    /// Provider-owned state; read-only to users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Map<String, Value>>,
    /// Rotate without cross-signing.
    #[serde(default, alias = "force_without_cross_signing")]
    pub force_without_cross_signing: bool,
    /// Raft index that created the configuration.
    #[serde(default)]
    pub create_index: u64,
    /// Raft index that last changed it.
    #[serde(default)]
    pub modify_index: u64,
}

/// A signed leaf as `GET /v1/agent/connect/ca/leaf/:service` returns it (`IssuedCert`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct IssuedCert {
    /// Colon-hex serial.
    pub serial_number: String,
    /// The leaf followed by the active root's intermediates, PEM.
    #[serde(rename = "CertPEM")]
    pub cert_pem: String,
    /// The leaf's private key, PEM (only from the agent, which made it).
    #[serde(
        rename = "PrivateKeyPEM",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub private_key_pem: String,
    /// Service name.
    pub service: String,
    /// The SPIFFE ID.
    #[serde(rename = "ServiceURI")]
    pub service_uri: String,
    /// RFC 3339 validity start.
    pub valid_after: String,
    /// RFC 3339 validity end.
    pub valid_before: String,
    /// Index the certificate was issued at.
    pub create_index: u64,
    /// Index the certificate was issued at.
    pub modify_index: u64,
}
