//! ACL tokens, policies and roles as Consul's API reads and writes them (`/v1/acl/*`).
//!
//! Links to policies and roles may name them by `ID` or by `Name`; the store resolves names
//! and keeps IDs. `Hash`, `CreateIndex` and `ModifyIndex` are set by the store.

use serde::{Deserialize, Serialize};

/// The anonymous token's AccessorID (Consul's fixed value).
pub const ANONYMOUS_TOKEN_ID: &str = "00000000-0000-0000-0000-000000000002";
/// The anonymous token's SecretID (Consul's fixed value).
pub const ANONYMOUS_TOKEN_SECRET: &str = "anonymous";
/// The description the bootstrap token gets.
pub const BOOTSTRAP_TOKEN_DESCRIPTION: &str = "Bootstrap Token (Global Management)";
/// The description of the token made from `acl.tokens.initial_management`.
pub const INITIAL_MANAGEMENT_DESCRIPTION: &str = "Initial Management Token";
/// What a caller without `acl:write` sees in place of a SecretID.
pub const HIDDEN_SECRET: &str = "<hidden>";

/// A link from a token or role to a policy or role: by ID, by name, or both.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AclLink {
    /// The linked object's ID.
    #[serde(rename = "ID", default)]
    pub id: String,
    /// The linked object's name.
    #[serde(rename = "Name", default)]
    pub name: String,
}

/// A service identity: the synthetic policy of a service and its sidecar.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct AclServiceIdentity {
    /// The service's name.
    #[serde(rename = "ServiceName", default)]
    pub service_name: String,
    /// Datacenters where the identity applies (empty: all).
    #[serde(
        rename = "Datacenters",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::null_as_default"
    )]
    pub datacenters: Vec<String>,
}

/// A node identity: the synthetic policy of a node, valid in one datacenter.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct AclNodeIdentity {
    /// The node's name.
    #[serde(rename = "NodeName", default)]
    pub node_name: String,
    /// The datacenter it applies in.
    #[serde(rename = "Datacenter", default)]
    pub datacenter: String,
}

/// The variables of a templated policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct AclTemplateVariables {
    /// The name the template is instantiated for.
    #[serde(rename = "Name", default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// A templated policy attached to a token or role.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct AclTemplatedPolicy {
    /// `builtin/service`, `builtin/node`, `builtin/dns`, ...
    #[serde(rename = "TemplateName", default)]
    pub template_name: String,
    /// The template's variables.
    #[serde(
        rename = "TemplateVariables",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub template_variables: Option<AclTemplateVariables>,
    /// Datacenters where the policy applies (empty: all).
    #[serde(
        rename = "Datacenters",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::null_as_default"
    )]
    pub datacenters: Vec<String>,
}

/// An ACL token. Its `Debug` form leaves the SecretID out, so a token never reaches a log.
#[derive(Serialize, Deserialize, Clone, Default, PartialEq, Eq)]
pub struct AclToken {
    /// The public identifier.
    #[serde(rename = "AccessorID", default)]
    pub accessor_id: String,
    /// The secret a caller presents.
    #[serde(rename = "SecretID", default)]
    pub secret_id: String,
    /// Free text.
    #[serde(rename = "Description", default)]
    pub description: String,
    /// Policies, by ID or name.
    #[serde(
        rename = "Policies",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::null_as_default"
    )]
    pub policies: Vec<AclLink>,
    /// Roles, by ID or name.
    #[serde(
        rename = "Roles",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::null_as_default"
    )]
    pub roles: Vec<AclLink>,
    /// Service identities.
    #[serde(
        rename = "ServiceIdentities",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::null_as_default"
    )]
    pub service_identities: Vec<AclServiceIdentity>,
    /// Node identities.
    #[serde(
        rename = "NodeIdentities",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::null_as_default"
    )]
    pub node_identities: Vec<AclNodeIdentity>,
    /// Templated policies.
    #[serde(
        rename = "TemplatedPolicies",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::null_as_default"
    )]
    pub templated_policies: Vec<AclTemplatedPolicy>,
    /// Valid in this datacenter only.
    #[serde(rename = "Local", default)]
    pub local: bool,
    /// The auth method that made it (login).
    #[serde(
        rename = "AuthMethod",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub auth_method: String,
    /// When it stops being valid (RFC 3339), if ever.
    #[serde(
        rename = "ExpirationTime",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub expiration_time: Option<String>,
    /// Create only: how long until it expires (a Go duration, 1m..24h).
    #[serde(
        rename = "ExpirationTTL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub expiration_ttl: Option<serde_json::Value>,
    /// When it was made (RFC 3339).
    #[serde(rename = "CreateTime", default)]
    pub create_time: String,
    /// A digest of its permissions (base64).
    #[serde(rename = "Hash", default)]
    pub hash: String,
    /// Index of its creation.
    #[serde(rename = "CreateIndex", default)]
    pub create_index: u64,
    /// Index of its last change.
    #[serde(rename = "ModifyIndex", default)]
    pub modify_index: u64,
}

impl std::fmt::Debug for AclToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AclToken")
            .field("accessor_id", &self.accessor_id)
            .field("secret_id", &"<hidden>")
            .field("description", &self.description)
            .field("policies", &self.policies)
            .field("roles", &self.roles)
            .field("service_identities", &self.service_identities)
            .field("node_identities", &self.node_identities)
            .field("templated_policies", &self.templated_policies)
            .field("local", &self.local)
            .field("expiration_time", &self.expiration_time)
            .field("modify_index", &self.modify_index)
            .finish_non_exhaustive()
    }
}

/// An ACL policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct AclPolicy {
    /// Its ID (a UUID).
    #[serde(rename = "ID", default)]
    pub id: String,
    /// Its unique name.
    #[serde(rename = "Name", default)]
    pub name: String,
    /// Free text.
    #[serde(rename = "Description", default)]
    pub description: String,
    /// The rules, in HCL or JSON.
    #[serde(rename = "Rules", default)]
    pub rules: String,
    /// Datacenters where it applies (empty: all).
    #[serde(
        rename = "Datacenters",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::null_as_default"
    )]
    pub datacenters: Vec<String>,
    /// A digest of its rules (base64).
    #[serde(rename = "Hash", default)]
    pub hash: String,
    /// Index of its creation.
    #[serde(rename = "CreateIndex", default)]
    pub create_index: u64,
    /// Index of its last change.
    #[serde(rename = "ModifyIndex", default)]
    pub modify_index: u64,
}

/// An ACL role: policies and identities shared by tokens.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct AclRole {
    /// Its ID (a UUID).
    #[serde(rename = "ID", default)]
    pub id: String,
    /// Its unique name.
    #[serde(rename = "Name", default)]
    pub name: String,
    /// Free text.
    #[serde(rename = "Description", default)]
    pub description: String,
    /// Policies, by ID or name.
    #[serde(
        rename = "Policies",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::null_as_default"
    )]
    pub policies: Vec<AclLink>,
    /// Service identities.
    #[serde(
        rename = "ServiceIdentities",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::null_as_default"
    )]
    pub service_identities: Vec<AclServiceIdentity>,
    /// Node identities.
    #[serde(
        rename = "NodeIdentities",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::null_as_default"
    )]
    pub node_identities: Vec<AclNodeIdentity>,
    /// Templated policies.
    #[serde(
        rename = "TemplatedPolicies",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::null_as_default"
    )]
    pub templated_policies: Vec<AclTemplatedPolicy>,
    /// A digest of its contents (base64).
    #[serde(rename = "Hash", default)]
    pub hash: String,
    /// Index of its creation.
    #[serde(rename = "CreateIndex", default)]
    pub create_index: u64,
    /// Index of its last change.
    #[serde(rename = "ModifyIndex", default)]
    pub modify_index: u64,
}

/// What a token is made of, with its policies and roles read at one index: what an agent needs
/// to compile the token's authorizer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct AclIdentity {
    /// The token.
    #[serde(rename = "Token")]
    pub token: AclToken,
    /// Its policies and its roles' policies, each once.
    #[serde(rename = "Policies", default)]
    pub policies: Vec<AclPolicy>,
    /// Its roles.
    #[serde(rename = "Roles", default)]
    pub roles: Vec<AclRole>,
}
