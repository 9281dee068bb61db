//! ACL tokens, policies and roles: their tables, the writes that change them (bootstrap, the
//! leader's initialisation, token/policy/role set and delete) and the reads over them.
//!
//! Links from tokens and roles to policies and roles are stored by ID (a name given on write is
//! resolved then); a link to something since deleted is left out when read, as Consul does.
//! Nothing here uses the clock or randomness: IDs, secrets and times come with the write.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use trellis_acl::builtin::{
    GLOBAL_MANAGEMENT_POLICY_ID, GLOBAL_MANAGEMENT_POLICY_NAME, GLOBAL_MANAGEMENT_RULES,
    RESERVED_POLICY_ID_PREFIX,
};
use trellis_api::{
    AclIdentity, AclLink, AclNodeIdentity, AclPolicy, AclRole, AclServiceIdentity,
    AclTemplatedPolicy, AclToken, ANONYMOUS_TOKEN_ID, ANONYMOUS_TOKEN_SECRET,
};

use crate::command::Applied;
use crate::tables::Tables;
use crate::WatchKey;

/// The ACL tables, as a snapshot holds them.
#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq)]
pub struct AclTables {
    /// Tokens by AccessorID.
    pub tokens: BTreeMap<String, AclToken>,
    /// Policies by ID.
    pub policies: BTreeMap<String, AclPolicy>,
    /// Roles by ID.
    pub roles: BTreeMap<String, AclRole>,
    /// The index the ACL system was bootstrapped at (0: not yet).
    pub bootstrap_index: u64,
    /// SecretID -> AccessorID (derived).
    #[serde(skip)]
    secrets: HashMap<String, String>,
}

impl AclTables {
    /// Rebuilds the derived index after a restore.
    pub(crate) fn reindex(&mut self) {
        self.secrets = self
            .tokens
            .values()
            .map(|t| (t.secret_id.clone(), t.accessor_id.clone()))
            .collect();
    }

    fn policy_named(&self, name: &str) -> Option<&AclPolicy> {
        self.policies.values().find(|p| p.name == name)
    }

    fn role_named(&self, name: &str) -> Option<&AclRole> {
        self.roles.values().find(|r| r.name == name)
    }

    /// The token with this secret.
    pub(crate) fn token_by_secret(&self, secret: &str) -> Option<&AclToken> {
        self.tokens.get(self.secrets.get(secret)?)
    }

    /// A token as read: its links named as the linked objects are now, dangling ones left out.
    pub(crate) fn token_view(&self, token: &AclToken) -> AclToken {
        let mut t = token.clone();
        t.policies = self.policy_links(&t.policies);
        t.roles = self.role_links(&t.roles);
        t
    }

    /// A role as read (see [`AclTables::token_view`]).
    pub(crate) fn role_view(&self, role: &AclRole) -> AclRole {
        let mut r = role.clone();
        r.policies = self.policy_links(&r.policies);
        r
    }

    fn policy_links(&self, links: &[AclLink]) -> Vec<AclLink> {
        links
            .iter()
            .filter_map(|l| {
                self.policies.get(&l.id).map(|p| AclLink {
                    id: p.id.clone(),
                    name: p.name.clone(),
                })
            })
            .collect()
    }

    fn role_links(&self, links: &[AclLink]) -> Vec<AclLink> {
        links
            .iter()
            .filter_map(|l| {
                self.roles.get(&l.id).map(|r| AclLink {
                    id: r.id.clone(),
                    name: r.name.clone(),
                })
            })
            .collect()
    }

    /// A token with its policies and roles, as an agent compiles it: every policy once, those
    /// of its roles included.
    pub(crate) fn identity(&self, token: &AclToken) -> AclIdentity {
        let token = self.token_view(token);
        let roles: Vec<AclRole> = token
            .roles
            .iter()
            .filter_map(|l| self.roles.get(&l.id))
            .map(|r| self.role_view(r))
            .collect();
        let mut ids: Vec<&str> = token.policies.iter().map(|l| l.id.as_str()).collect();
        for r in &roles {
            ids.extend(r.policies.iter().map(|l| l.id.as_str()));
        }
        ids.sort_unstable();
        ids.dedup();
        let policies = ids
            .into_iter()
            .filter_map(|id| self.policies.get(id).cloned())
            .collect();
        AclIdentity {
            token,
            policies,
            roles,
        }
    }

    /// Resolves links given by ID or name into links by ID; an unknown one is an error.
    fn resolve_policy_links(&self, links: &[AclLink]) -> Result<Vec<AclLink>, String> {
        let mut out: Vec<AclLink> = Vec::with_capacity(links.len());
        for l in links {
            let p = if !l.id.is_empty() {
                self.policies
                    .get(&l.id)
                    .ok_or_else(|| format!("ACL policy with ID {:?} not found", l.id))?
            } else if !l.name.is_empty() {
                self.policy_named(&l.name)
                    .ok_or_else(|| format!("ACL policy with name {:?} not found", l.name))?
            } else {
                return Err("Policy link has neither an ID nor a Name".into());
            };
            if !out.iter().any(|o| o.id == p.id) {
                out.push(AclLink {
                    id: p.id.clone(),
                    name: p.name.clone(),
                });
            }
        }
        Ok(out)
    }

    fn resolve_role_links(&self, links: &[AclLink]) -> Result<Vec<AclLink>, String> {
        let mut out: Vec<AclLink> = Vec::with_capacity(links.len());
        for l in links {
            let r = if !l.id.is_empty() {
                self.roles
                    .get(&l.id)
                    .ok_or_else(|| format!("ACL role with ID {:?} not found", l.id))?
            } else if !l.name.is_empty() {
                self.role_named(&l.name)
                    .ok_or_else(|| format!("ACL role with name {:?} not found", l.name))?
            } else {
                return Err("Role link has neither an ID nor a Name".into());
            };
            if !out.iter().any(|o| o.id == r.id) {
                out.push(AclLink {
                    id: r.id.clone(),
                    name: r.name.clone(),
                });
            }
        }
        Ok(out)
    }

    fn put_token(&mut self, token: AclToken) {
        if let Some(old) = self.tokens.get(&token.accessor_id) {
            self.secrets.remove(&old.secret_id);
        }
        self.secrets
            .insert(token.secret_id.clone(), token.accessor_id.clone());
        self.tokens.insert(token.accessor_id.clone(), token);
    }

    /// Makes the built-in policy and the anonymous token when missing.
    fn ensure_builtins(&mut self, index: u64, create_time: &str) {
        if !self.policies.contains_key(GLOBAL_MANAGEMENT_POLICY_ID) {
            let mut p = AclPolicy {
                id: GLOBAL_MANAGEMENT_POLICY_ID.into(),
                name: GLOBAL_MANAGEMENT_POLICY_NAME.into(),
                description: "Builtin Policy that grants unlimited access".into(),
                rules: GLOBAL_MANAGEMENT_RULES.into(),
                create_index: index,
                modify_index: index,
                ..Default::default()
            };
            p.hash = policy_hash(&p);
            self.policies.insert(p.id.clone(), p);
        }
        if !self.tokens.contains_key(ANONYMOUS_TOKEN_ID)
            && !self.secrets.contains_key(ANONYMOUS_TOKEN_SECRET)
        {
            let mut t = AclToken {
                accessor_id: ANONYMOUS_TOKEN_ID.into(),
                secret_id: ANONYMOUS_TOKEN_SECRET.into(),
                description: "Anonymous Token".into(),
                create_time: create_time.to_string(),
                create_index: index,
                modify_index: index,
                ..Default::default()
            };
            t.hash = token_hash(&t);
            self.put_token(t);
        }
    }
}

/// Whether `s` has the shape of a UUID (8-4-4-4-12 hex digits).
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Consul's policy and role names: letters, digits, `-` and `_`, at most `max` of them.
fn valid_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// The checks a policy or a role (`kind`) shares: a UUID ID, a valid name of at most `max`
/// characters, and no other object (`holder`, the ID of the one with that name) holding it.
fn check_named(
    kind: &str,
    id: &str,
    name: &str,
    max: usize,
    holder: Option<&str>,
) -> Result<(), String> {
    if !is_uuid(id) {
        return Err(format!("Invalid {kind}: ID {id:?} is not a valid UUID"));
    }
    if !valid_name(name, max) {
        return Err(format!(
            "Invalid {kind}: invalid Name. Only alphanumeric characters, '-' and '_' are allowed"
        ));
    }
    match holder {
        Some(other) if other != id => Err(format!(
            "Invalid {kind}: A {kind} with Name {name:?} already exists"
        )),
        _ => Ok(()),
    }
}

/// Consul's service identity names: lower-case letters, digits, `-` and `_`, starting and
/// ending with a letter or digit.
fn valid_service_identity_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 256
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// The templated policies Trellis knows and whether each needs a `Name` variable.
pub const TEMPLATED_POLICIES: &[(&str, bool)] = &[
    ("builtin/service", true),
    ("builtin/node", true),
    ("builtin/dns", false),
];

fn check_identities(
    services: &[AclServiceIdentity],
    nodes: &[AclNodeIdentity],
    templated: &[AclTemplatedPolicy],
    what: &str,
) -> Result<(), String> {
    for s in services {
        if !valid_service_identity_name(&s.service_name) {
            return Err(format!(
                "Service identity {:?} has an invalid name. Only lowercase alphanumeric characters, '-' and '_' are allowed",
                s.service_name
            ));
        }
    }
    for n in nodes {
        if n.node_name.is_empty() {
            return Err(format!(
                "Node identity is missing the node name field on this {what}"
            ));
        }
        if n.datacenter.is_empty() {
            return Err(format!(
                "Node identity is missing the datacenter field on this {what}"
            ));
        }
    }
    for t in templated {
        let Some((_, needs_name)) = TEMPLATED_POLICIES
            .iter()
            .find(|(n, _)| *n == t.template_name)
        else {
            return Err(format!(
                "templated policy {:?} does not exist",
                t.template_name
            ));
        };
        let name = t.template_variables.as_ref().map(|v| v.name.as_str());
        if *needs_name && name.unwrap_or("").is_empty() {
            return Err(format!(
                "Failed to validate templated policy variables for {:?}: name is required",
                t.template_name
            ));
        }
    }
    Ok(())
}

/// A short digest of a value's JSON (FNV-1a, 64 bits), base64 as Consul's `Hash` fields are.
fn digest<T: Serialize>(v: &T) -> String {
    let bytes = serde_json::to_vec(v).expect("ACL objects serialise");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    base64(&h.to_be_bytes())
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn token_hash(t: &AclToken) -> String {
    digest(&(
        &t.description,
        &t.policies,
        &t.roles,
        &t.service_identities,
        &t.node_identities,
        &t.templated_policies,
        t.local,
    ))
}

fn policy_hash(p: &AclPolicy) -> String {
    digest(&(&p.name, &p.description, &p.rules, &p.datacenters))
}

fn role_hash(r: &AclRole) -> String {
    digest(&(
        &r.name,
        &r.description,
        &r.policies,
        &r.service_identities,
        &r.node_identities,
        &r.templated_policies,
    ))
}

/// Which objects a token list keeps (`/v1/acl/tokens?policy=&role=&authmethod=`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TokenFilter {
    /// Only tokens linking this policy ID.
    pub policy: Option<String>,
    /// Only tokens linking this role ID.
    pub role: Option<String>,
    /// Only tokens made by this auth method.
    pub auth_method: Option<String>,
}

impl TokenFilter {
    pub(crate) fn keeps(&self, t: &AclToken) -> bool {
        self.policy
            .as_ref()
            .is_none_or(|p| t.policies.iter().any(|l| &l.id == p))
            && self
                .role
                .as_ref()
                .is_none_or(|r| t.roles.iter().any(|l| &l.id == r))
            && self
                .auth_method
                .as_ref()
                .is_none_or(|m| &t.auth_method == m)
    }
}

impl Tables {
    /// Bootstraps the ACL system with `token` as its first management token: once, or again
    /// when `reset_index` names the index it was bootstrapped at.
    pub(crate) fn acl_bootstrap(
        &mut self,
        index: u64,
        mut token: AclToken,
        reset_index: Option<u64>,
        keys: &mut Vec<WatchKey>,
    ) -> Applied {
        let done = self.acl.bootstrap_index;
        if done != 0 {
            match reset_index {
                Some(r) if r == done => {}
                Some(r) => {
                    return Applied::Rejected(format!(
                        "Invalid bootstrap reset index (specified {r}, reset index: {done})"
                    ))
                }
                None => {
                    return Applied::Denied(format!(
                        "ACL bootstrap no longer allowed (reset index: {done})"
                    ))
                }
            }
        }
        if !is_uuid(&token.accessor_id) || !is_uuid(&token.secret_id) {
            return Applied::Rejected(
                "Invalid Token: AccessorID and SecretID must be UUIDs".into(),
            );
        }
        if self.acl.tokens.contains_key(&token.accessor_id)
            || self.acl.secrets.contains_key(&token.secret_id)
        {
            return Applied::Rejected(
                "Invalid Token: AccessorID or SecretID already in use".into(),
            );
        }
        self.acl.ensure_builtins(index, &token.create_time);
        token.policies = vec![AclLink {
            id: GLOBAL_MANAGEMENT_POLICY_ID.into(),
            name: GLOBAL_MANAGEMENT_POLICY_NAME.into(),
        }];
        token.create_index = index;
        token.modify_index = index;
        token.hash = token_hash(&token);
        self.acl.put_token(token);
        self.acl.bootstrap_index = index;
        keys.push(WatchKey::Acl);
        Applied::Done
    }

    /// The leader's initialisation when ACLs are enabled: the built-ins, and the
    /// `initial_management` token when configured and missing (which also ends bootstrapping).
    pub(crate) fn acl_init(
        &mut self,
        index: u64,
        initial_management: Option<AclToken>,
        create_time: &str,
        keys: &mut Vec<WatchKey>,
    ) -> Applied {
        let before = (self.acl.policies.len(), self.acl.tokens.len());
        self.acl.ensure_builtins(index, create_time);
        if let Some(mut token) = initial_management {
            if !self.acl.secrets.contains_key(&token.secret_id)
                && !self.acl.tokens.contains_key(&token.accessor_id)
            {
                token.policies = vec![AclLink {
                    id: GLOBAL_MANAGEMENT_POLICY_ID.into(),
                    name: GLOBAL_MANAGEMENT_POLICY_NAME.into(),
                }];
                token.create_index = index;
                token.modify_index = index;
                token.hash = token_hash(&token);
                self.acl.put_token(token);
                if self.acl.bootstrap_index == 0 {
                    self.acl.bootstrap_index = index;
                }
            }
        }
        if before != (self.acl.policies.len(), self.acl.tokens.len()) {
            keys.push(WatchKey::Acl);
        }
        Applied::Done
    }

    pub(crate) fn acl_token_set(
        &mut self,
        index: u64,
        mut token: AclToken,
        create: bool,
        keys: &mut Vec<WatchKey>,
    ) -> Applied {
        if !is_uuid(&token.accessor_id) {
            return Applied::Rejected(format!(
                "Invalid Token: AccessorID {:?} is not a valid UUID",
                token.accessor_id
            ));
        }
        if let Err(e) = check_identities(
            &token.service_identities,
            &token.node_identities,
            &token.templated_policies,
            "token",
        ) {
            return Applied::Rejected(e);
        }
        match self.acl.tokens.get(&token.accessor_id) {
            Some(_) if create => {
                return Applied::Rejected("Invalid Token: AccessorID is already in use".into())
            }
            None if !create => {
                return Applied::NotFound(format!("Cannot find token {:?}", token.accessor_id))
            }
            None => {
                if token.accessor_id == ANONYMOUS_TOKEN_ID {
                    return Applied::Rejected(
                        "Invalid Token: the anonymous token's AccessorID is reserved".into(),
                    );
                }
                if !token.auth_method.is_empty() {
                    return Applied::Rejected(
                        "AuthMethod field is disallowed outside of login".into(),
                    );
                }
                if !is_uuid(&token.secret_id) {
                    return Applied::Rejected(format!(
                        "Invalid Token: SecretID {:?} is not a valid UUID",
                        token.secret_id
                    ));
                }
                if self.acl.secrets.contains_key(&token.secret_id) {
                    return Applied::Rejected("Invalid Token: SecretID is already in use".into());
                }
                token.create_index = index;
            }
            Some(old) => {
                if !token.secret_id.is_empty() && token.secret_id != old.secret_id {
                    return Applied::Rejected(
                        "Changing a token's SecretID is not permitted".into(),
                    );
                }
                if token.local != old.local {
                    return Applied::Rejected(format!(
                        "Cannot toggle local mode of {}",
                        token.accessor_id
                    ));
                }
                if !token.auth_method.is_empty() && token.auth_method != old.auth_method {
                    return Applied::Rejected(format!(
                        "Cannot change AuthMethod of {}",
                        token.accessor_id
                    ));
                }
                if token.expiration_time.is_some() && token.expiration_time != old.expiration_time {
                    return Applied::Rejected(format!(
                        "Cannot change expiration time of {}",
                        token.accessor_id
                    ));
                }
                token.secret_id = old.secret_id.clone();
                token.auth_method = old.auth_method.clone();
                token.expiration_time = old.expiration_time.clone();
                token.create_time = old.create_time.clone();
                token.create_index = old.create_index;
            }
        }
        token.policies = match self.acl.resolve_policy_links(&token.policies) {
            Ok(l) => l,
            Err(e) => return Applied::Rejected(e),
        };
        token.roles = match self.acl.resolve_role_links(&token.roles) {
            Ok(l) => l,
            Err(e) => return Applied::Rejected(e),
        };
        token.expiration_ttl = None;
        token.modify_index = index;
        token.hash = token_hash(&token);
        self.acl.put_token(token);
        keys.push(WatchKey::Acl);
        Applied::Done
    }

    pub(crate) fn acl_token_delete(&mut self, accessor: &str, keys: &mut Vec<WatchKey>) -> Applied {
        if accessor == ANONYMOUS_TOKEN_ID {
            return Applied::Rejected(
                "Delete operation not permitted on the anonymous token".into(),
            );
        }
        if let Some(old) = self.acl.tokens.remove(accessor) {
            self.acl.secrets.remove(&old.secret_id);
            keys.push(WatchKey::Acl);
        }
        Applied::Done
    }

    pub(crate) fn acl_policy_set(
        &mut self,
        index: u64,
        mut policy: AclPolicy,
        create: bool,
        keys: &mut Vec<WatchKey>,
    ) -> Applied {
        let holder = self.acl.policy_named(&policy.name).map(|p| p.id.as_str());
        if let Err(e) = check_named("Policy", &policy.id, &policy.name, 128, holder) {
            return Applied::Rejected(e);
        }
        if let Err(e) = trellis_acl::Rules::parse(&policy.rules) {
            return Applied::Rejected(format!("Failed to parse policy rules: {e}"));
        }
        match self.acl.policies.get(&policy.id) {
            Some(_) if create => {
                return Applied::Rejected("Invalid Policy: ID is already in use".into())
            }
            None if !create => {
                return Applied::NotFound(format!("Cannot find policy {:?}", policy.id))
            }
            None => {
                if policy.id.starts_with(RESERVED_POLICY_ID_PREFIX) {
                    return Applied::Rejected(
                        "Invalid Policy: the ID is in the range reserved for built-in policies"
                            .into(),
                    );
                }
                policy.create_index = index;
            }
            Some(old) => {
                if old.id == GLOBAL_MANAGEMENT_POLICY_ID {
                    if policy.rules != old.rules {
                        return Applied::Rejected(
                            "Changing the Rules for the builtin global-management policy is not permitted"
                                .into(),
                        );
                    }
                    if policy.datacenters != old.datacenters {
                        return Applied::Rejected(
                            "Changing the Datacenters of the builtin global-management policy is not permitted"
                                .into(),
                        );
                    }
                }
                policy.create_index = old.create_index;
            }
        }
        policy.modify_index = index;
        policy.hash = policy_hash(&policy);
        self.acl.policies.insert(policy.id.clone(), policy);
        keys.push(WatchKey::Acl);
        Applied::Done
    }

    pub(crate) fn acl_policy_delete(&mut self, id: &str, keys: &mut Vec<WatchKey>) -> Applied {
        if id == GLOBAL_MANAGEMENT_POLICY_ID {
            return Applied::Rejected(
                "Delete operation not permitted on the builtin global-management policy".into(),
            );
        }
        if self.acl.policies.remove(id).is_some() {
            keys.push(WatchKey::Acl);
        }
        Applied::Done
    }

    pub(crate) fn acl_role_set(
        &mut self,
        index: u64,
        mut role: AclRole,
        create: bool,
        keys: &mut Vec<WatchKey>,
    ) -> Applied {
        let holder = self.acl.role_named(&role.name).map(|r| r.id.as_str());
        if let Err(e) = check_named("Role", &role.id, &role.name, 256, holder) {
            return Applied::Rejected(e);
        }
        if let Err(e) = check_identities(
            &role.service_identities,
            &role.node_identities,
            &role.templated_policies,
            "role",
        ) {
            return Applied::Rejected(e);
        }
        match self.acl.roles.get(&role.id) {
            Some(_) if create => {
                return Applied::Rejected("Invalid Role: ID is already in use".into())
            }
            None if !create => return Applied::NotFound(format!("Cannot find role {:?}", role.id)),
            None => role.create_index = index,
            Some(old) => role.create_index = old.create_index,
        }
        role.policies = match self.acl.resolve_policy_links(&role.policies) {
            Ok(l) => l,
            Err(e) => return Applied::Rejected(e),
        };
        role.modify_index = index;
        role.hash = role_hash(&role);
        self.acl.roles.insert(role.id.clone(), role);
        keys.push(WatchKey::Acl);
        Applied::Done
    }

    pub(crate) fn acl_role_delete(&mut self, id: &str, keys: &mut Vec<WatchKey>) -> Applied {
        if self.acl.roles.remove(id).is_some() {
            keys.push(WatchKey::Acl);
        }
        Applied::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_with_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn uuid_shape() {
        assert!(is_uuid("00000000-0000-0000-0000-000000000002"));
        assert!(is_uuid("6a1253d2-1785-24fd-91c2-f8e78c745511"));
        assert!(!is_uuid("6a1253d2-1785-24fd-91c2-f8e78c74551"));
        assert!(!is_uuid("6a1253d2x1785-24fd-91c2-f8e78c745511"));
        assert!(!is_uuid("anonymous"));
    }
}

#[cfg(test)]
mod store_tests {
    use trellis_api::{AclLink, AclPolicy, AclRole, AclServiceIdentity, AclToken};

    use crate::{Applied, Command, Query, QueryOutput, Store, TokenFilter};

    const A1: &str = "11111111-1111-1111-1111-111111111111";
    const S1: &str = "aaaaaaaa-1111-1111-1111-111111111111";
    const A2: &str = "22222222-2222-2222-2222-222222222222";
    const S2: &str = "bbbbbbbb-2222-2222-2222-222222222222";
    const P1: &str = "33333333-3333-3333-3333-333333333333";
    const R1: &str = "44444444-4444-4444-4444-444444444444";

    fn token(accessor: &str, secret: &str) -> AclToken {
        AclToken {
            accessor_id: accessor.into(),
            secret_id: secret.into(),
            ..Default::default()
        }
    }

    fn policy(id: &str, name: &str, rules: &str) -> AclPolicy {
        AclPolicy {
            id: id.into(),
            name: name.into(),
            rules: rules.into(),
            ..Default::default()
        }
    }

    fn by_name(name: &str) -> AclLink {
        AclLink {
            id: String::new(),
            name: name.into(),
        }
    }

    #[test]
    fn bootstrap_happens_once_unless_reset_with_its_index() {
        let s = Store::new("dc1");
        let boot = |reset| Command::AclBootstrap {
            token: token(A1, S1),
            reset_index: reset,
        };
        assert_eq!(s.apply(5, boot(None)), Applied::Done);
        assert_eq!(s.acl_bootstrap_index(), 5);
        let (id, _) = s.acl_identity(S1);
        let id = id.unwrap();
        assert_eq!(id.policies.len(), 1);
        assert_eq!(id.policies[0].name, "global-management");
        // The anonymous token exists now.
        assert!(s.acl_identity("anonymous").0.is_some());
        assert_eq!(
            s.apply(6, boot(None)),
            Applied::Denied("ACL bootstrap no longer allowed (reset index: 5)".into())
        );
        assert!(matches!(s.apply(7, boot(Some(4))), Applied::Rejected(_)));
        // With the right reset index a new token may be made (a fresh one: the first stays).
        let again = Command::AclBootstrap {
            token: token(A2, S2),
            reset_index: Some(5),
        };
        assert_eq!(s.apply(8, again), Applied::Done);
        assert_eq!(s.acl_bootstrap_index(), 8);
    }

    #[test]
    fn tokens_link_policies_and_roles_by_name_and_read_back_by_id() {
        let s = Store::new("dc1");
        s.apply(
            1,
            Command::AclPolicySet {
                policy: policy(P1, "web-read", r#"service "web" { policy = "read" }"#),
                create: true,
            },
        );
        let role = AclRole {
            id: R1.into(),
            name: "ops".into(),
            policies: vec![by_name("web-read")],
            ..Default::default()
        };
        assert_eq!(
            s.apply(2, Command::AclRoleSet { role, create: true }),
            Applied::Done
        );
        let mut t = token(A1, S1);
        t.policies = vec![by_name("web-read")];
        t.roles = vec![by_name("ops")];
        t.service_identities = vec![AclServiceIdentity {
            service_name: "web".into(),
            datacenters: vec![],
        }];
        assert_eq!(
            s.apply(
                3,
                Command::AclTokenSet {
                    token: t,
                    create: true
                }
            ),
            Applied::Done
        );
        let (id, idx) = s.acl_identity(S1);
        let id = id.unwrap();
        assert_eq!(idx, 3);
        assert_eq!(id.token.policies[0].id, P1);
        assert_eq!(id.roles[0].id, R1);
        // The role's policy and the token's are the same policy: listed once.
        assert_eq!(id.policies.len(), 1);
        // A dangling link is left out when read.
        s.apply(4, Command::AclPolicyDelete { id: P1.into() });
        let (out, _) = s.query(&Query::AclTokenRead {
            accessor: A1.into(),
        });
        let QueryOutput::Found(a) = out else { panic!() };
        assert!(a.acl_token().unwrap().policies.is_empty());
        let (out, _) = s.query(&Query::AclTokenList(TokenFilter {
            policy: Some(P1.into()),
            ..Default::default()
        }));
        let QueryOutput::Found(a) = out else { panic!() };
        assert!(a.acl_tokens().unwrap().is_empty());
    }

    #[test]
    fn refusals_change_nothing() {
        let s = Store::new("dc1");
        s.apply(
            1,
            Command::AclInit {
                initial_management: None,
                create_time: String::new(),
            },
        );
        let before = s.snapshot();
        let mut t = token(A1, S1);
        t.policies = vec![by_name("missing")];
        let cases = vec![
            Command::AclTokenSet {
                token: t,
                create: true,
            },
            Command::AclTokenSet {
                token: token("not-a-uuid", S1),
                create: true,
            },
            Command::AclTokenSet {
                token: token(A2, S2),
                create: false,
            },
            Command::AclPolicySet {
                policy: policy(P1, "bad name!", ""),
                create: true,
            },
            Command::AclPolicySet {
                policy: policy(P1, "p", "service \"web\" { policy = \"sometimes\" }"),
                create: true,
            },
            Command::AclPolicySet {
                policy: policy(
                    trellis_acl::builtin::GLOBAL_MANAGEMENT_POLICY_ID,
                    "global-management",
                    "acl = \"read\"",
                ),
                create: false,
            },
            Command::AclPolicyDelete {
                id: trellis_acl::builtin::GLOBAL_MANAGEMENT_POLICY_ID.into(),
            },
            Command::AclTokenDelete {
                accessor: trellis_api::ANONYMOUS_TOKEN_ID.into(),
            },
            // The anonymous token's IDs are its own, and AuthMethod is for login only.
            Command::AclTokenSet {
                token: token(trellis_api::ANONYMOUS_TOKEN_ID, S2),
                create: true,
            },
            Command::AclTokenSet {
                token: token(A2, "anonymous"),
                create: true,
            },
            Command::AclTokenSet {
                token: AclToken {
                    auth_method: "jwt".into(),
                    ..token(A2, S2)
                },
                create: true,
            },
        ];
        for (i, c) in cases.into_iter().enumerate() {
            let out = s.apply(2 + i as u64, c);
            assert!(
                matches!(out, Applied::Rejected(_) | Applied::NotFound(_)),
                "case {i}: {out:?}"
            );
        }
        let mut after = s.snapshot();
        after.index = before.index;
        assert_eq!(after, before);
    }

    #[test]
    fn a_token_update_keeps_its_secret_and_a_new_secret_is_refused() {
        let s = Store::new("dc1");
        s.apply(
            1,
            Command::AclTokenSet {
                token: token(A1, S1),
                create: true,
            },
        );
        let mut upd = token(A1, "");
        upd.description = "renamed".into();
        assert_eq!(
            s.apply(
                2,
                Command::AclTokenSet {
                    token: upd,
                    create: false
                }
            ),
            Applied::Done
        );
        assert_eq!(s.acl_identity(S1).0.unwrap().token.description, "renamed");
        let upd = token(A1, S2);
        assert!(matches!(
            s.apply(
                3,
                Command::AclTokenSet {
                    token: upd,
                    create: false
                }
            ),
            Applied::Rejected(_)
        ));
        // A second token may not take a secret in use.
        assert!(matches!(
            s.apply(
                4,
                Command::AclTokenSet {
                    token: token(A2, S1),
                    create: true
                }
            ),
            Applied::Rejected(_)
        ));
    }

    #[test]
    fn the_acl_tables_survive_a_snapshot_and_the_secret_index_is_rebuilt() {
        let s = Store::new("dc1");
        s.apply(
            1,
            Command::AclInit {
                initial_management: Some(token(A1, S1)),
                create_time: String::new(),
            },
        );
        assert_eq!(s.acl_bootstrap_index(), 1);
        let bytes = s.snapshot_bytes();
        let t = Store::new("dc1");
        t.restore_bytes(&bytes).unwrap();
        assert_eq!(t.snapshot(), s.snapshot());
        assert!(t.acl_identity(S1).0.is_some());
        assert!(t.acl_identity("anonymous").0.is_some());
        // The secret never shows in a token's Debug form.
        let dbg = format!("{:?}", t.acl_identity(S1).0.unwrap().token);
        assert!(!dbg.contains(S1), "{dbg}");
    }
}
