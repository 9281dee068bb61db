//! `trellis acl ...`: Consul's `consul acl` commands (`bootstrap`, `token`, `policy`, `role`,
//! `set-agent-token`) with its flags, output, error messages and exit codes (0, or 1 with the
//! message on stderr), over the typed ACL calls of `trellis-client`.
//!
//! What can be tested without an agent is pure: flag parsing (`-service-identity`,
//! `-node-identity`, `-rules @file`), unique-prefix matching, merging an update into what
//! exists, and the pretty printers. The commands only glue those to the client.

use std::fmt::Write as _;
use std::io::Read;
use std::process::ExitCode;

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use trellis_api::{
    AclLink, AclNodeIdentity, AclPolicy, AclRole, AclServiceIdentity, AclTemplatedPolicy, AclToken,
};
use trellis_client::AgentClient;

use crate::cli::HttpArgs;

/// `trellis acl ...`.
#[derive(Subcommand, Debug)]
pub enum AclCommand {
    /// Bootstrap the ACL system: create the initial management token and print it.
    Bootstrap(BootstrapArgs),
    /// ACL tokens: create, read, update, delete, list, clone.
    #[command(subcommand)]
    Token(TokenCommand),
    /// ACL policies: create, read, update, delete, list.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// ACL roles: create, read, update, delete, list.
    #[command(subcommand)]
    Role(RoleCommand),
    /// Set one of the agent's tokens: `TYPE TOKEN` (TYPE: default, agent, recovery,
    /// replication, config_file_service_registration, dns; TOKEN may be `@file` or `-` for
    /// stdin). Not persisted unless the agent persists tokens.
    SetAgentToken(SetAgentTokenArgs),
}

/// Output format of the commands that print objects.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Consul's text form.
    #[default]
    Pretty,
    /// The API's JSON, indented.
    Json,
}

/// Flags of `trellis acl bootstrap`.
#[derive(Args, Debug)]
pub struct BootstrapArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Links to policies (`-policy-id`, `-policy-name`).
#[derive(Args, Debug, Default)]
pub struct PolicyLinks {
    /// ID of a policy to link (repeatable; a unique ID prefix will do).
    #[arg(long = "policy-id", value_name = "ID")]
    pub policy_id: Vec<String>,
    /// Name of a policy to link (repeatable).
    #[arg(long = "policy-name", value_name = "NAME")]
    pub policy_name: Vec<String>,
}

/// Links to roles (`-role-id`, `-role-name`).
#[derive(Args, Debug, Default)]
pub struct RoleLinks {
    /// ID of a role to link (repeatable; a unique ID prefix will do).
    #[arg(long = "role-id", value_name = "ID")]
    pub role_id: Vec<String>,
    /// Name of a role to link (repeatable).
    #[arg(long = "role-name", value_name = "NAME")]
    pub role_name: Vec<String>,
}

/// Service and node identities.
#[derive(Args, Debug, Default)]
pub struct IdentityFlags {
    /// A service identity, `NAME` or `NAME:DC1,DC2` (repeatable).
    #[arg(long = "service-identity", value_name = "NAME[:DCS]")]
    pub service_identity: Vec<String>,
    /// A node identity, `NODE:DC` (repeatable).
    #[arg(long = "node-identity", value_name = "NODE:DC")]
    pub node_identity: Vec<String>,
}

/// `trellis acl token ...`.
#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token linked to policies, roles or identities (at least one).
    Create(TokenCreateArgs),
    /// Show a token (`-id`, or `-self` for the token this command sends).
    Read(TokenReadArgs),
    /// Change a token's description and links.
    Update(Box<TokenUpdateArgs>),
    /// Delete a token.
    Delete(TokenIdArgs),
    /// List every token.
    List(ListArgs),
    /// Copy a token, with new IDs.
    Clone(TokenCloneArgs),
}

/// Flags of `trellis acl token create`.
#[derive(Args, Debug)]
pub struct TokenCreateArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    /// The new token's AccessorID (a UUID; generated when absent).
    #[arg(long)]
    pub accessor: Option<String>,
    /// The new token's SecretID (a UUID; generated when absent).
    #[arg(long)]
    pub secret: Option<String>,
    /// A description of the token.
    #[arg(long)]
    pub description: Option<String>,
    #[command(flatten)]
    pub policies: PolicyLinks,
    #[command(flatten)]
    pub roles: RoleLinks,
    #[command(flatten)]
    pub identities: IdentityFlags,
    /// Valid in this datacenter only.
    #[arg(long)]
    pub local: bool,
    /// How long the token is valid (a duration such as `1h`; 1m to 24h).
    #[arg(long = "expires-ttl", value_name = "DURATION")]
    pub expires_ttl: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Flags of `trellis acl token read`.
#[derive(Args, Debug)]
pub struct TokenReadArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    /// The token's AccessorID, or a unique prefix of it (`anonymous` for the anonymous token).
    #[arg(long, visible_alias = "accessor-id")]
    pub id: Option<String>,
    /// Read the token this command sends, by its secret.
    #[arg(long = "self")]
    pub self_: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Flags of `trellis acl token update`.
#[derive(Args, Debug)]
pub struct TokenUpdateArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    /// The token's AccessorID, or a unique prefix of it.
    #[arg(long, visible_alias = "accessor-id")]
    pub id: Option<String>,
    /// A new description (the old one is kept when absent).
    #[arg(long)]
    pub description: Option<String>,
    /// Policies replacing the token's (added to them with -merge-policies).
    #[command(flatten)]
    pub policies: PolicyLinks,
    /// Roles replacing the token's (added to them with -merge-roles).
    #[command(flatten)]
    pub roles: RoleLinks,
    /// Identities replacing the token's (added with -merge-service-identities and
    /// -merge-node-identities).
    #[command(flatten)]
    pub identities: IdentityFlags,
    /// A policy ID to add to the token's policies (repeatable).
    #[arg(long = "append-policy-id", value_name = "ID")]
    pub append_policy_id: Vec<String>,
    /// A policy name to add to the token's policies (repeatable).
    #[arg(long = "append-policy-name", value_name = "NAME")]
    pub append_policy_name: Vec<String>,
    /// A role ID to add to the token's roles (repeatable).
    #[arg(long = "append-role-id", value_name = "ID")]
    pub append_role_id: Vec<String>,
    /// A role name to add to the token's roles (repeatable).
    #[arg(long = "append-role-name", value_name = "NAME")]
    pub append_role_name: Vec<String>,
    /// A service identity to add to the token's (repeatable).
    #[arg(long = "append-service-identity", value_name = "NAME[:DCS]")]
    pub append_service_identity: Vec<String>,
    /// A node identity to add to the token's (repeatable).
    #[arg(long = "append-node-identity", value_name = "NODE:DC")]
    pub append_node_identity: Vec<String>,
    /// Keep the token's policies and add the given ones.
    #[arg(long = "merge-policies")]
    pub merge_policies: bool,
    /// Keep the token's roles and add the given ones.
    #[arg(long = "merge-roles")]
    pub merge_roles: bool,
    /// Keep the token's service identities and add (or replace by name) the given ones.
    #[arg(long = "merge-service-identities")]
    pub merge_service_identities: bool,
    /// Keep the token's node identities and add the given ones.
    #[arg(long = "merge-node-identities")]
    pub merge_node_identities: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Flags of `trellis acl token delete`.
#[derive(Args, Debug)]
pub struct TokenIdArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    /// The token's AccessorID, or a unique prefix of it.
    #[arg(long, visible_alias = "accessor-id")]
    pub id: Option<String>,
}

/// Flags of `trellis acl token clone`.
#[derive(Args, Debug)]
pub struct TokenCloneArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    /// The AccessorID of the token to copy, or a unique prefix of it.
    #[arg(long, visible_alias = "accessor-id")]
    pub id: Option<String>,
    /// The copy's description (the original's when absent).
    #[arg(long)]
    pub description: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Flags of the `list` commands.
#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// `trellis acl policy ...`.
#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Create a policy.
    Create(PolicyCreateArgs),
    /// Show a policy (`-id` or `-name`).
    Read(ObjectArgs),
    /// Change a policy (`-id`, or `-name` when no `-id`); what is not given is kept unless
    /// -no-merge.
    Update(PolicyUpdateArgs),
    /// Delete a policy (`-id` or `-name`).
    Delete(ObjectArgs),
    /// List every policy.
    List(ListArgs),
}

/// Flags of `trellis acl policy create`.
#[derive(Args, Debug)]
pub struct PolicyCreateArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    /// The policy's name (required).
    #[arg(long)]
    pub name: Option<String>,
    /// A description of the policy.
    #[arg(long)]
    pub description: Option<String>,
    /// The rules (HCL or JSON): the text, `@FILE` to read a file, or `-` to read stdin.
    #[arg(long)]
    pub rules: Option<String>,
    /// A datacenter the policy is valid in (repeatable; all when none).
    #[arg(
        long = "valid-datacenter",
        visible_alias = "datacenter",
        value_name = "DC"
    )]
    pub datacenters: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Flags of `trellis acl policy update`.
#[derive(Args, Debug)]
pub struct PolicyUpdateArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    /// The policy's ID, or a unique prefix of it.
    #[arg(long)]
    pub id: Option<String>,
    /// With -id, the new name; without, the name of the policy to update.
    #[arg(long)]
    pub name: Option<String>,
    /// A new description.
    #[arg(long)]
    pub description: Option<String>,
    /// New rules: the text, `@FILE` to read a file, or `-` to read stdin.
    #[arg(long)]
    pub rules: Option<String>,
    /// A datacenter the policy is valid in (repeatable; replaces the list).
    #[arg(
        long = "valid-datacenter",
        visible_alias = "datacenter",
        value_name = "DC"
    )]
    pub datacenters: Vec<String>,
    /// Replace every field with what is given instead of merging into the policy.
    #[arg(long = "no-merge")]
    pub no_merge: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Flags naming a policy or role by `-id` (or a unique prefix) or `-name`.
#[derive(Args, Debug)]
pub struct ObjectArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    /// The ID, or a unique prefix of it.
    #[arg(long)]
    pub id: Option<String>,
    /// The name.
    #[arg(long)]
    pub name: Option<String>,
    /// Output format (`read`).
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// `trellis acl role ...`.
#[derive(Subcommand, Debug)]
pub enum RoleCommand {
    /// Create a role linked to policies or identities (at least one).
    Create(RoleCreateArgs),
    /// Show a role (`-id` or `-name`).
    Read(ObjectArgs),
    /// Change a role (`-id`): links are added to its own unless -no-merge.
    Update(RoleUpdateArgs),
    /// Delete a role (`-id` or `-name`).
    Delete(ObjectArgs),
    /// List every role.
    List(ListArgs),
}

/// Flags of `trellis acl role create`.
#[derive(Args, Debug)]
pub struct RoleCreateArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    /// The role's name (required).
    #[arg(long)]
    pub name: Option<String>,
    /// A description of the role.
    #[arg(long)]
    pub description: Option<String>,
    #[command(flatten)]
    pub policies: PolicyLinks,
    #[command(flatten)]
    pub identities: IdentityFlags,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Flags of `trellis acl role update`.
#[derive(Args, Debug)]
pub struct RoleUpdateArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    /// The role's ID, or a unique prefix of it.
    #[arg(long)]
    pub id: Option<String>,
    /// A new name.
    #[arg(long)]
    pub name: Option<String>,
    /// A new description.
    #[arg(long)]
    pub description: Option<String>,
    #[command(flatten)]
    pub policies: PolicyLinks,
    #[command(flatten)]
    pub identities: IdentityFlags,
    /// Replace every field with what is given instead of merging into the role.
    #[arg(long = "no-merge")]
    pub no_merge: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Flags and arguments of `trellis acl set-agent-token`.
#[derive(Args, Debug)]
pub struct SetAgentTokenArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    /// `TYPE TOKEN`.
    #[arg(value_name = "TYPE TOKEN")]
    pub args: Vec<String>,
}

/// Runs one `trellis acl` command; errors go to stderr and make the exit code 1.
pub async fn run(cmd: AclCommand) -> ExitCode {
    let outcome = match cmd {
        AclCommand::Bootstrap(a) => bootstrap(a).await,
        AclCommand::Token(c) => match c {
            TokenCommand::Create(a) => token_create(a).await,
            TokenCommand::Read(a) => token_read(a).await,
            TokenCommand::Update(a) => token_update(*a).await,
            TokenCommand::Delete(a) => token_delete(a).await,
            TokenCommand::List(a) => token_list(a).await,
            TokenCommand::Clone(a) => token_clone(a).await,
        },
        AclCommand::Policy(c) => match c {
            PolicyCommand::Create(a) => policy_create(a).await,
            PolicyCommand::Read(a) => policy_read(a).await,
            PolicyCommand::Update(a) => policy_update(a).await,
            PolicyCommand::Delete(a) => policy_delete(a).await,
            PolicyCommand::List(a) => policy_list(a).await,
        },
        AclCommand::Role(c) => match c {
            RoleCommand::Create(a) => role_create(a).await,
            RoleCommand::Read(a) => role_read(a).await,
            RoleCommand::Update(a) => role_update(a).await,
            RoleCommand::Delete(a) => role_delete(a).await,
            RoleCommand::List(a) => role_list(a).await,
        },
        AclCommand::SetAgentToken(a) => set_agent_token(a).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---- pure parts ----

/// `-service-identity` values: `NAME` (all datacenters) or `NAME:DC1,DC2`.
pub fn parse_service_identities(values: &[String]) -> anyhow::Result<Vec<AclServiceIdentity>> {
    values
        .iter()
        .map(|raw| {
            let parts: Vec<&str> = raw.split(':').collect();
            match parts.as_slice() {
                [name] => Ok(AclServiceIdentity {
                    service_name: name.to_string(),
                    datacenters: Vec::new(),
                }),
                [name, dcs] => Ok(AclServiceIdentity {
                    service_name: name.to_string(),
                    datacenters: dcs
                        .split(',')
                        .filter(|dc| !dc.is_empty())
                        .map(str::to_string)
                        .collect(),
                }),
                _ => Err(anyhow!("Malformed -service-identity argument: {raw:?}")),
            }
        })
        .collect()
}

/// `-node-identity` values: `NODE:DC`.
pub fn parse_node_identities(values: &[String]) -> anyhow::Result<Vec<AclNodeIdentity>> {
    values
        .iter()
        .map(|raw| match raw.split(':').collect::<Vec<_>>().as_slice() {
            [node, dc] => Ok(AclNodeIdentity {
                node_name: node.to_string(),
                datacenter: dc.to_string(),
            }),
            _ => Err(anyhow!("Malformed -node-identity argument: {raw:?}")),
        })
        .collect()
}

/// A flag value that may name its data elsewhere, as Consul reads `-rules` and the token of
/// `set-agent-token`: `@FILE` is the file's content, `-` is stdin, anything else itself.
pub fn load_data_source(value: &str, stdin: &mut dyn Read) -> anyhow::Result<String> {
    if let Some(path) = value.strip_prefix('@') {
        return std::fs::read_to_string(path).map_err(|e| anyhow!("Failed to read file: {e}"));
    }
    if value == "-" {
        let mut text = String::new();
        stdin
            .read_to_string(&mut text)
            .map_err(|e| anyhow!("Failed to read stdin: {e}"))?;
        return Ok(text);
    }
    Ok(value.to_string())
}

/// The one ID among `ids` that starts with `prefix` (`kind` names them in errors).
pub fn unique_prefix<'a>(
    ids: impl IntoIterator<Item = &'a str>,
    prefix: &str,
    kind: &str,
) -> anyhow::Result<String> {
    let mut found: Option<&str> = None;
    for id in ids {
        if id.starts_with(prefix) {
            if found.is_some() {
                bail!("Partial {kind} ID is not unique");
            }
            found = Some(id);
        }
    }
    found
        .map(str::to_string)
        .ok_or_else(|| anyhow!("No such {kind} ID with prefix: {prefix}"))
}

/// Adds each of `items` to `existing` unless an equal one (`same`) is there; with `replace`,
/// an equal one is replaced instead.
fn add_all<T>(existing: &mut Vec<T>, items: Vec<T>, same: impl Fn(&T, &T) -> bool, replace: bool) {
    for item in items {
        match existing.iter().position(|e| same(e, &item)) {
            Some(i) if replace => existing[i] = item,
            Some(_) => {}
            None => existing.push(item),
        }
    }
}

/// How `token update` changes one list of a token: with `merge` (a `-merge-*` flag) or
/// `-append-*` values, the given items are added to the existing ones; otherwise the given
/// items replace the existing ones, which are kept when none are given.
fn update_list<T>(
    existing: &mut Vec<T>,
    given: Vec<T>,
    appended: Vec<T>,
    merge: bool,
    same: impl Fn(&T, &T) -> bool,
    replace_same: bool,
) {
    if merge || !appended.is_empty() {
        add_all(
            existing,
            given.into_iter().chain(appended).collect(),
            same,
            replace_same,
        );
    } else if !given.is_empty() {
        *existing = given;
    }
}

/// A link given by ID matches the existing link with that ID; one given by name, the existing
/// link with that name.
fn same_link(existing: &AclLink, given: &AclLink) -> bool {
    if given.id.is_empty() {
        existing.name == given.name
    } else {
        existing.id == given.id
    }
}

fn same_service(a: &AclServiceIdentity, b: &AclServiceIdentity) -> bool {
    a.service_name == b.service_name
}

fn same_node(a: &AclNodeIdentity, b: &AclNodeIdentity) -> bool {
    a.node_name == b.node_name && a.datacenter == b.datacenter
}

fn by_name(names: &[String]) -> Vec<AclLink> {
    names
        .iter()
        .map(|n| AclLink {
            id: String::new(),
            name: n.clone(),
        })
        .collect()
}

fn by_id(ids: Vec<String>) -> Vec<AclLink> {
    ids.into_iter()
        .map(|id| AclLink {
            id,
            name: String::new(),
        })
        .collect()
}

/// A time as Go prints one (`2024-05-01 10:11:12.5 +0000 UTC`), from the API's RFC 3339 form;
/// anything else is shown as it is.
pub fn go_time(rfc3339: &str) -> String {
    if rfc3339.is_empty() {
        return "0001-01-01 00:00:00 +0000 UTC".to_string();
    }
    let Some((date, rest)) = rfc3339.split_once('T') else {
        return rfc3339.to_string();
    };
    let (clock, zone) = if let Some(clock) = rest.strip_suffix(['Z', 'z']) {
        (clock, "+0000 UTC".to_string())
    } else {
        match rest.rfind(['+', '-']) {
            Some(i) if i >= 8 => {
                let offset = rest[i..].replace(':', "");
                (&rest[..i], format!("{offset} {offset}"))
            }
            _ => return rfc3339.to_string(),
        }
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    if date.len() != 10 || hms.len() != 8 {
        return rfc3339.to_string();
    }
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{date} {hms} {zone}")
    } else {
        format!("{date} {hms}.{frac} {zone}")
    }
}

fn service_identity_line(indent: &str, s: &AclServiceIdentity) -> String {
    let dcs = if s.datacenters.is_empty() {
        "all".to_string()
    } else {
        s.datacenters.join(", ")
    };
    format!("{indent}{} (Datacenters: {dcs})\n", s.service_name)
}

/// The links and identities part of a token or role (`indent` before each heading; items are
/// indented three more spaces).
fn links_pretty(
    out: &mut String,
    indent: &str,
    policies: &[AclLink],
    roles: &[AclLink],
    services: &[AclServiceIdentity],
    nodes: &[AclNodeIdentity],
    templated: &[AclTemplatedPolicy],
) {
    let item = format!("{indent}   ");
    let links = |out: &mut String, heading: &str, links: &[AclLink]| {
        if !links.is_empty() {
            let _ = writeln!(out, "{indent}{heading}:");
            for l in links {
                let _ = writeln!(out, "{item}{} - {}", l.id, l.name);
            }
        }
    };
    links(out, "Policies", policies);
    links(out, "Roles", roles);
    if !services.is_empty() {
        let _ = writeln!(out, "{indent}Service Identities:");
        for s in services {
            out.push_str(&service_identity_line(&item, s));
        }
    }
    if !nodes.is_empty() {
        let _ = writeln!(out, "{indent}Node Identities:");
        for n in nodes {
            let _ = writeln!(out, "{item}{} (Datacenter: {})", n.node_name, n.datacenter);
        }
    }
    if !templated.is_empty() {
        let _ = writeln!(out, "{indent}Templated Policies:");
        for t in templated {
            let _ = writeln!(out, "{item}{}", t.template_name);
            if let Some(name) = t
                .template_variables
                .as_ref()
                .map(|v| v.name.as_str())
                .filter(|n| !n.is_empty())
            {
                let _ = writeln!(out, "{item}   Name: {name}");
            }
            let dcs = if t.datacenters.is_empty() {
                "all".to_string()
            } else {
                t.datacenters.join(", ")
            };
            let _ = writeln!(out, "{item}   Datacenters: {dcs}");
        }
    }
}

/// A token as Consul's CLI prints it.
pub fn token_pretty(t: &AclToken) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "AccessorID:       {}", t.accessor_id);
    let _ = writeln!(out, "SecretID:         {}", t.secret_id);
    let _ = writeln!(out, "Description:      {}", t.description);
    let _ = writeln!(out, "Local:            {}", t.local);
    if !t.auth_method.is_empty() {
        let _ = writeln!(out, "Auth Method:      {} (Namespace: )", t.auth_method);
    }
    let _ = writeln!(out, "Create Time:      {}", go_time(&t.create_time));
    if let Some(at) = t.expiration_time.as_deref().filter(|s| !s.is_empty()) {
        let _ = writeln!(out, "Expiration Time:  {}", go_time(at));
    }
    links_pretty(
        &mut out,
        "",
        &t.policies,
        &t.roles,
        &t.service_identities,
        &t.node_identities,
        &t.templated_policies,
    );
    out
}

/// Tokens as `consul acl token list` prints them: blocks separated by a blank line.
pub fn token_list_pretty(tokens: &[AclToken]) -> String {
    tokens
        .iter()
        .map(token_pretty)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A policy as Consul's CLI prints it (the rules last, as they are).
pub fn policy_pretty(p: &AclPolicy) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "ID:           {}", p.id);
    let _ = writeln!(out, "Name:         {}", p.name);
    let _ = writeln!(out, "Description:  {}", p.description);
    let _ = writeln!(out, "Datacenters:  {}", p.datacenters.join(", "));
    out.push_str("Rules:\n");
    out.push_str(&p.rules);
    out
}

/// Policies as `consul acl policy list` prints them.
pub fn policy_list_pretty(policies: &[AclPolicy]) -> String {
    let mut out = String::new();
    for p in policies {
        let _ = writeln!(out, "{}:", p.name);
        let _ = writeln!(out, "   ID:           {}", p.id);
        let _ = writeln!(out, "   Description:  {}", p.description);
        let _ = writeln!(out, "   Datacenters:  {}", p.datacenters.join(", "));
    }
    out
}

/// A role as Consul's CLI prints it.
pub fn role_pretty(r: &AclRole) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "ID:           {}", r.id);
    let _ = writeln!(out, "Name:         {}", r.name);
    let _ = writeln!(out, "Description:  {}", r.description);
    links_pretty(
        &mut out,
        "",
        &r.policies,
        &[],
        &r.service_identities,
        &r.node_identities,
        &r.templated_policies,
    );
    out
}

/// Roles as `consul acl role list` prints them.
pub fn role_list_pretty(roles: &[AclRole]) -> String {
    let mut out = String::new();
    for r in roles {
        let _ = writeln!(out, "{}:", r.name);
        let _ = writeln!(out, "   ID:           {}", r.id);
        let _ = writeln!(out, "   Description:  {}", r.description);
        links_pretty(
            &mut out,
            "   ",
            &r.policies,
            &[],
            &r.service_identities,
            &r.node_identities,
            &r.templated_policies,
        );
    }
    out
}

/// JSON indented by four spaces, as Consul's CLI prints it.
pub fn json_pretty(value: &impl Serialize) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut buf,
        serde_json::ser::PrettyFormatter::with_indent(b"    "),
    );
    value.serialize(&mut ser)?;
    Ok(String::from_utf8(buf)?)
}

/// `value` in `format` (`pretty` by `pretty`).
fn render<T: Serialize + ?Sized>(
    value: &T,
    format: Format,
    pretty: impl Fn(&T) -> String,
) -> anyhow::Result<String> {
    match format {
        Format::Pretty => Ok(pretty(value)),
        Format::Json => json_pretty(&value),
    }
}

/// Prints a command's output as Consul's CLI does (with a newline after it), if any.
fn emit(out: &str) {
    if !out.is_empty() {
        println!("{out}");
    }
}

// ---- the commands ----

fn client(http: &HttpArgs) -> anyhow::Result<AgentClient> {
    crate::cli::agent(http).map_err(|e| anyhow!("Error connecting to Consul agent: {e:#}"))
}

/// Whether `s` is as long as a UUID (Consul takes such a value as a whole ID).
fn whole_id(s: &str) -> bool {
    s.len() == 36
}

/// The AccessorID a `-id` value names: `anonymous`, a whole ID, or a unique prefix.
async fn token_accessor(c: &AgentClient, partial: &str) -> anyhow::Result<String> {
    if partial == "anonymous" {
        return Ok(trellis_api::ANONYMOUS_TOKEN_ID.to_string());
    }
    if whole_id(partial) {
        return Ok(partial.to_string());
    }
    let tokens = c.acl_token_list().await?;
    unique_prefix(
        tokens.iter().map(|t| t.accessor_id.as_str()),
        partial,
        "token",
    )
}

/// The policy ID a `-id` or `-policy-id` value names.
async fn policy_id(c: &AgentClient, partial: &str) -> anyhow::Result<String> {
    if partial == "global-management" {
        return Ok(trellis_acl::builtin::GLOBAL_MANAGEMENT_POLICY_ID.to_string());
    }
    if whole_id(partial) {
        return Ok(partial.to_string());
    }
    let policies = c.acl_policy_list().await?;
    unique_prefix(policies.iter().map(|p| p.id.as_str()), partial, "policy")
}

/// The role ID a `-id` or `-role-id` value names.
async fn role_id(c: &AgentClient, partial: &str) -> anyhow::Result<String> {
    if whole_id(partial) {
        return Ok(partial.to_string());
    }
    let roles = c.acl_role_list().await?;
    unique_prefix(roles.iter().map(|r| r.id.as_str()), partial, "role")
}

async fn policy_links_by_id(c: &AgentClient, ids: &[String]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for id in ids {
        out.push(
            policy_id(c, id)
                .await
                .map_err(|e| anyhow!("Error resolving policy ID {id}: {e:#}"))?,
        );
    }
    Ok(out)
}

async fn role_links_by_id(c: &AgentClient, ids: &[String]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for id in ids {
        out.push(
            role_id(c, id)
                .await
                .map_err(|e| anyhow!("Error resolving role ID {id}: {e:#}"))?,
        );
    }
    Ok(out)
}

/// Links named by names and by (resolved) IDs, names first as Consul sends them.
async fn policy_links(
    c: &AgentClient,
    names: &[String],
    ids: &[String],
) -> anyhow::Result<Vec<AclLink>> {
    let mut links = by_name(names);
    links.extend(by_id(policy_links_by_id(c, ids).await?));
    Ok(links)
}

async fn role_links(
    c: &AgentClient,
    names: &[String],
    ids: &[String],
) -> anyhow::Result<Vec<AclLink>> {
    let mut links = by_name(names);
    links.extend(by_id(role_links_by_id(c, ids).await?));
    Ok(links)
}

fn read_flag_data(value: &str) -> anyhow::Result<String> {
    load_data_source(value, &mut std::io::stdin().lock())
}

async fn bootstrap(a: BootstrapArgs) -> anyhow::Result<()> {
    let c = client(&a.http)?;
    let token = c
        .acl_bootstrap()
        .await
        .map_err(|e| anyhow!("Failed ACL bootstrapping: {e}"))?;
    emit(&render(&token, a.format, token_pretty)?);
    Ok(())
}

async fn token_create(a: TokenCreateArgs) -> anyhow::Result<()> {
    let (p, r, i) = (&a.policies, &a.roles, &a.identities);
    if p.policy_id.is_empty()
        && p.policy_name.is_empty()
        && r.role_id.is_empty()
        && r.role_name.is_empty()
        && i.service_identity.is_empty()
        && i.node_identity.is_empty()
    {
        bail!(
            "Cannot create a token without specifying -policy-name, -policy-id, -role-name, \
             -role-id, -service-identity, or -node-identity at least once"
        );
    }
    let service_identities = parse_service_identities(&i.service_identity)?;
    let node_identities = parse_node_identities(&i.node_identity)?;
    let expiration_ttl = match a.expires_ttl.as_deref() {
        None => None,
        Some(s) => {
            let d = trellis_api::parse_go_duration(s)
                .map_err(|e| anyhow!("invalid value {s:?} for flag -expires-ttl: {e}"))?;
            (!d.is_zero())
                .then(|| serde_json::Value::from(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
        }
    };
    let c = client(&a.http)?;
    let token = AclToken {
        accessor_id: a.accessor.unwrap_or_default(),
        secret_id: a.secret.unwrap_or_default(),
        description: a.description.unwrap_or_default(),
        local: a.local,
        expiration_ttl,
        service_identities,
        node_identities,
        policies: policy_links(&c, &p.policy_name, &p.policy_id).await?,
        roles: role_links(&c, &r.role_name, &r.role_id).await?,
        ..Default::default()
    };
    let made = c
        .acl_token_create(&token)
        .await
        .map_err(|e| anyhow!("Failed to create new token: {e}"))?;
    emit(&render(&made, a.format, token_pretty)?);
    Ok(())
}

async fn token_read(a: TokenReadArgs) -> anyhow::Result<()> {
    let id = a.id.filter(|s| !s.is_empty());
    if id.is_none() && !a.self_ {
        bail!("Must specify the -id parameter");
    }
    let c = client(&a.http)?;
    let token = match id {
        Some(partial) if !a.self_ => {
            let accessor = token_accessor(&c, &partial)
                .await
                .map_err(|e| anyhow!("Error determining token ID: {e:#}"))?;
            c.acl_token_read(&accessor)
                .await
                .map_err(|e| anyhow!("Error reading token {accessor:?}: {e}"))?
        }
        _ => c
            .acl_token_read_self()
            .await
            .map_err(|e| anyhow!("Error reading token: {e}"))?,
    };
    emit(&render(&token, a.format, token_pretty)?);
    Ok(())
}

/// Refuses `-x` together with `-append-x`, as Consul does.
fn check_not_both(
    set: bool,
    append: bool,
    what: &str,
    set_flags: &str,
    append_flags: &str,
) -> anyhow::Result<()> {
    if set && append {
        bail!(
            "Cannot combine the use of {set_flags} flags with append- variants. To set or \
             overwrite existing {what}, use {set_flags}. To append to existing {what}, use \
             {append_flags}."
        );
    }
    Ok(())
}

async fn token_update(a: TokenUpdateArgs) -> anyhow::Result<()> {
    let Some(partial) = a.id.clone().filter(|s| !s.is_empty()) else {
        bail!("Cannot update a token without specifying the -id parameter");
    };
    let (p, r, i) = (&a.policies, &a.roles, &a.identities);
    check_not_both(
        !p.policy_id.is_empty() || !p.policy_name.is_empty(),
        !a.append_policy_id.is_empty() || !a.append_policy_name.is_empty(),
        "policies",
        "-policy-id/-policy-name",
        "-append-policy-id or -append-policy-name",
    )?;
    check_not_both(
        !r.role_id.is_empty() || !r.role_name.is_empty(),
        !a.append_role_id.is_empty() || !a.append_role_name.is_empty(),
        "roles",
        "-role-id/-role-name",
        "-append-role-id or -append-role-name",
    )?;
    check_not_both(
        !i.service_identity.is_empty(),
        !a.append_service_identity.is_empty(),
        "service identities",
        "-service-identity",
        "-append-service-identity",
    )?;
    check_not_both(
        !i.node_identity.is_empty(),
        !a.append_node_identity.is_empty(),
        "node identities",
        "-node-identity",
        "-append-node-identity",
    )?;
    let services = parse_service_identities(&i.service_identity)?;
    let append_services = parse_service_identities(&a.append_service_identity)?;
    let nodes = parse_node_identities(&i.node_identity)?;
    let append_nodes = parse_node_identities(&a.append_node_identity)?;

    let c = client(&a.http)?;
    let accessor = token_accessor(&c, &partial)
        .await
        .map_err(|e| anyhow!("Error determining token ID: {e:#}"))?;
    let mut token = c
        .acl_token_read(&accessor)
        .await
        .map_err(|e| anyhow!("Error when retrieving current token: {e}"))?;
    if let Some(d) = a.description.clone().filter(|d| !d.is_empty()) {
        token.description = d;
    }
    let policies = policy_links(&c, &p.policy_name, &p.policy_id).await?;
    let append_policies = policy_links(&c, &a.append_policy_name, &a.append_policy_id).await?;
    let roles = role_links(&c, &r.role_name, &r.role_id).await?;
    let append_roles = role_links(&c, &a.append_role_name, &a.append_role_id).await?;
    update_list(
        &mut token.policies,
        policies,
        append_policies,
        a.merge_policies,
        same_link,
        false,
    );
    update_list(
        &mut token.roles,
        roles,
        append_roles,
        a.merge_roles,
        same_link,
        false,
    );
    update_list(
        &mut token.service_identities,
        services,
        append_services,
        a.merge_service_identities,
        same_service,
        true,
    );
    update_list(
        &mut token.node_identities,
        nodes,
        append_nodes,
        a.merge_node_identities,
        same_node,
        false,
    );
    let updated = c
        .acl_token_update(&token)
        .await
        .map_err(|e| anyhow!("Failed to update token {accessor}: {e}"))?;
    emit(&render(&updated, a.format, token_pretty)?);
    Ok(())
}

async fn token_delete(a: TokenIdArgs) -> anyhow::Result<()> {
    let Some(partial) = a.id.filter(|s| !s.is_empty()) else {
        bail!("Must specify the -id parameter");
    };
    let c = client(&a.http)?;
    let accessor = token_accessor(&c, &partial)
        .await
        .map_err(|e| anyhow!("Error determining token ID: {e:#}"))?;
    c.acl_token_delete(&accessor)
        .await
        .map_err(|e| anyhow!("Error deleting token {accessor:?}: {e}"))?;
    println!("Token {accessor:?} deleted successfully");
    Ok(())
}

async fn token_list(a: ListArgs) -> anyhow::Result<()> {
    let c = client(&a.http)?;
    let tokens = c
        .acl_token_list()
        .await
        .map_err(|e| anyhow!("Failed to retrieve the token list: {e}"))?;
    emit(&render(tokens.as_slice(), a.format, token_list_pretty)?);
    Ok(())
}

async fn token_clone(a: TokenCloneArgs) -> anyhow::Result<()> {
    let Some(partial) = a.id.filter(|s| !s.is_empty()) else {
        bail!("Cannot clone a token without specifying the -id parameter");
    };
    let c = client(&a.http)?;
    let accessor = token_accessor(&c, &partial)
        .await
        .map_err(|e| anyhow!("Error determining token Accessor ID: {e:#}"))?;
    let copy = c
        .acl_token_clone(&accessor, a.description.as_deref().unwrap_or(""))
        .await
        .map_err(|e| anyhow!("Error cloning token: {e}"))?;
    emit(&render(&copy, a.format, token_pretty)?);
    Ok(())
}

/// The policy ID `-id` (a unique prefix) or else `-name` names.
async fn named_policy(
    c: &AgentClient,
    id: Option<&str>,
    name: Option<&str>,
) -> anyhow::Result<String> {
    let found = async {
        match (id, name) {
            (Some(id), _) => policy_id(c, id).await,
            (None, Some(name)) => Ok(c
                .acl_policy_read_by_name(name)
                .await
                .map_err(|e| anyhow!("Failed to find policy with name {name}: {e}"))?
                .id),
            (None, None) => Err(anyhow!("No name specified")),
        }
    };
    found
        .await
        .map_err(|e| anyhow!("Error determining policy ID: {e:#}"))
}

/// The role ID `-id` (a unique prefix) or else `-name` names.
async fn named_role(
    c: &AgentClient,
    id: Option<&str>,
    name: Option<&str>,
) -> anyhow::Result<String> {
    let found = async {
        match (id, name) {
            (Some(id), _) => role_id(c, id).await,
            (None, Some(name)) => c
                .acl_role_list()
                .await?
                .into_iter()
                .find(|r| r.name == name)
                .map(|r| r.id)
                .ok_or_else(|| anyhow!("No such role with name {name}")),
            (None, None) => Err(anyhow!("No name specified")),
        }
    };
    found
        .await
        .map_err(|e| anyhow!("Error determining role ID: {e:#}"))
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

async fn policy_create(a: PolicyCreateArgs) -> anyhow::Result<()> {
    let Some(name) = nonempty(&a.name) else {
        bail!("Missing require '-name' flag");
    };
    let c = client(&a.http)?;
    let rules = read_flag_data(a.rules.as_deref().unwrap_or(""))
        .map_err(|e| anyhow!("Error loading rules: {e:#}"))?;
    let policy = AclPolicy {
        name: name.to_string(),
        description: a.description.clone().unwrap_or_default(),
        datacenters: a.datacenters.clone(),
        rules,
        ..Default::default()
    };
    let made = c
        .acl_policy_create(&policy)
        .await
        .map_err(|e| anyhow!("Failed to create new policy: {e}"))?;
    emit(&render(&made, a.format, policy_pretty)?);
    Ok(())
}

async fn policy_read(a: ObjectArgs) -> anyhow::Result<()> {
    let (id, name) = (nonempty(&a.id), nonempty(&a.name));
    if id.is_none() && name.is_none() {
        bail!("Must specify either the -id or -name parameters");
    }
    let c = client(&a.http)?;
    let policy = match id {
        Some(partial) => {
            let id = named_policy(&c, Some(partial), None).await?;
            c.acl_policy_read(&id)
                .await
                .map_err(|e| anyhow!("Error reading policy {id:?}: {e}"))?
        }
        None => {
            let name = name.unwrap_or_default();
            c.acl_policy_read_by_name(name)
                .await
                .map_err(|e| anyhow!("Error reading policy {name:?}: {e}"))?
        }
    };
    emit(&render(&policy, a.format, policy_pretty)?);
    Ok(())
}

async fn policy_update(a: PolicyUpdateArgs) -> anyhow::Result<()> {
    let (id, name) = (nonempty(&a.id), nonempty(&a.name));
    if id.is_none() && name.is_none() {
        bail!("Must specify either the -id or -name parameters");
    }
    let c = client(&a.http)?;
    let pid = named_policy(&c, id, name).await?;
    let rules = match a.rules.as_deref() {
        Some(r) => Some(read_flag_data(r).map_err(|e| anyhow!("Error loading rules: {e:#}"))?),
        None => None,
    };
    let updated = if a.no_merge {
        AclPolicy {
            id: pid.clone(),
            name: a.name.clone().unwrap_or_default(),
            description: a.description.clone().unwrap_or_default(),
            datacenters: a.datacenters.clone(),
            rules: rules.unwrap_or_default(),
            ..Default::default()
        }
    } else {
        let current = c
            .acl_policy_read(&pid)
            .await
            .map_err(|e| anyhow!("Error reading policy {pid:?}: {e}"))?;
        AclPolicy {
            id: pid.clone(),
            name: a.name.clone().unwrap_or(current.name),
            description: a.description.clone().unwrap_or(current.description),
            datacenters: if a.datacenters.is_empty() {
                current.datacenters
            } else {
                a.datacenters.clone()
            },
            rules: rules.unwrap_or(current.rules),
            ..Default::default()
        }
    };
    let policy = c
        .acl_policy_update(&updated)
        .await
        .map_err(|e| anyhow!("Error updating policy {pid:?}: {e}"))?;
    emit(&render(&policy, a.format, policy_pretty)?);
    Ok(())
}

async fn policy_delete(a: ObjectArgs) -> anyhow::Result<()> {
    let (id, name) = (nonempty(&a.id), nonempty(&a.name));
    if id.is_none() && name.is_none() {
        bail!("Must specify either the -id or -name parameters");
    }
    let c = client(&a.http)?;
    let pid = named_policy(&c, id, name).await?;
    c.acl_policy_delete(&pid)
        .await
        .map_err(|e| anyhow!("Error deleting policy {pid:?}: {e}"))?;
    println!("Policy {pid:?} deleted successfully");
    Ok(())
}

async fn policy_list(a: ListArgs) -> anyhow::Result<()> {
    let c = client(&a.http)?;
    let policies = c
        .acl_policy_list()
        .await
        .map_err(|e| anyhow!("Failed to retrieve the policy list: {e}"))?;
    let out = match a.format {
        Format::Pretty => policy_list_pretty(&policies),
        Format::Json => {
            // The list's entries carry no rules (Consul's `ACLPolicyListEntry`).
            let mut v = serde_json::to_value(&policies)?;
            for p in v.as_array_mut().into_iter().flatten() {
                if let Some(o) = p.as_object_mut() {
                    o.remove("Rules");
                }
            }
            json_pretty(&v)?
        }
    };
    emit(&out);
    Ok(())
}

async fn role_create(a: RoleCreateArgs) -> anyhow::Result<()> {
    let Some(name) = nonempty(&a.name) else {
        bail!("Missing require '-name' flag");
    };
    let (p, i) = (&a.policies, &a.identities);
    if p.policy_id.is_empty()
        && p.policy_name.is_empty()
        && i.service_identity.is_empty()
        && i.node_identity.is_empty()
    {
        bail!(
            "Cannot create a role without specifying -policy-name, -policy-id, \
             -service-identity, or -node-identity at least once"
        );
    }
    let service_identities = parse_service_identities(&i.service_identity)?;
    let node_identities = parse_node_identities(&i.node_identity)?;
    let c = client(&a.http)?;
    let role = AclRole {
        name: name.to_string(),
        description: a.description.clone().unwrap_or_default(),
        policies: policy_links(&c, &p.policy_name, &p.policy_id).await?,
        service_identities,
        node_identities,
        ..Default::default()
    };
    let made = c
        .acl_role_create(&role)
        .await
        .map_err(|e| anyhow!("Failed to create new role: {e}"))?;
    emit(&render(&made, a.format, role_pretty)?);
    Ok(())
}

async fn role_read(a: ObjectArgs) -> anyhow::Result<()> {
    let (id, name) = (nonempty(&a.id), nonempty(&a.name));
    if id.is_none() && name.is_none() {
        bail!("Must specify either the -id or -name parameters");
    }
    let c = client(&a.http)?;
    let role = match id {
        Some(partial) => {
            let id = named_role(&c, Some(partial), None).await?;
            c.acl_role_read(&id)
                .await
                .map_err(|e| anyhow!("Error reading role {id:?}: {e}"))?
        }
        None => {
            let name = name.unwrap_or_default();
            c.acl_role_read_by_name(name)
                .await
                .map_err(|e| anyhow!("Error reading role {name:?}: {e}"))?
        }
    };
    emit(&render(&role, a.format, role_pretty)?);
    Ok(())
}

async fn role_update(a: RoleUpdateArgs) -> anyhow::Result<()> {
    let Some(partial) = nonempty(&a.id) else {
        bail!("Cannot update a role without specifying the -id parameter");
    };
    let services = parse_service_identities(&a.identities.service_identity)?;
    let nodes = parse_node_identities(&a.identities.node_identity)?;
    let c = client(&a.http)?;
    let rid = named_role(&c, Some(partial), None).await?;
    let current = c
        .acl_role_read(&rid)
        .await
        .map_err(|e| anyhow!("Error when retrieving current role: {e}"))?;
    let policies = policy_links(&c, &a.policies.policy_name, &a.policies.policy_id).await?;
    let role = if a.no_merge {
        AclRole {
            id: rid.clone(),
            name: a.name.clone().unwrap_or_default(),
            description: a.description.clone().unwrap_or_default(),
            policies,
            service_identities: services,
            node_identities: nodes,
            ..Default::default()
        }
    } else {
        let mut role = current;
        if let Some(n) = nonempty(&a.name) {
            role.name = n.to_string();
        }
        if let Some(d) = nonempty(&a.description) {
            role.description = d.to_string();
        }
        add_all(&mut role.policies, policies, same_link, false);
        add_all(&mut role.service_identities, services, same_service, true);
        add_all(&mut role.node_identities, nodes, same_node, false);
        role
    };
    let updated = c
        .acl_role_update(&role)
        .await
        .map_err(|e| anyhow!("Error updating role {rid:?}: {e}"))?;
    emit(&render(&updated, a.format, role_pretty)?);
    Ok(())
}

async fn role_delete(a: ObjectArgs) -> anyhow::Result<()> {
    let (id, name) = (nonempty(&a.id), nonempty(&a.name));
    if id.is_none() && name.is_none() {
        bail!("Must specify the -id or -name parameters");
    }
    let c = client(&a.http)?;
    let rid = named_role(&c, id, name).await?;
    c.acl_role_delete(&rid)
        .await
        .map_err(|e| anyhow!("Error deleting role {rid:?}: {e}"))?;
    println!("Role {rid:?} deleted successfully");
    Ok(())
}

async fn role_list(a: ListArgs) -> anyhow::Result<()> {
    let c = client(&a.http)?;
    let roles = c
        .acl_role_list()
        .await
        .map_err(|e| anyhow!("Failed to retrieve the role list: {e}"))?;
    emit(&render(roles.as_slice(), a.format, role_list_pretty)?);
    Ok(())
}

/// The HTTP API's name of an agent token type as `set-agent-token` takes it.
pub fn agent_token_kind(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "default" => "default",
        "agent" => "agent",
        "recovery" | "agent_recovery" | "master" => "agent_recovery",
        "replication" => "replication",
        "config_file_service_registration" => "config_file_service_registration",
        "dns" => "dns",
        _ => return None,
    })
}

async fn set_agent_token(a: SetAgentTokenArgs) -> anyhow::Result<()> {
    let (kind, token) = match a.args.as_slice() {
        [] => bail!("Error! Missing TYPE and TOKEN arguments"),
        [kind] if agent_token_kind(kind).is_some() => bail!("Error! Missing TOKEN argument"),
        [_] => bail!("Error! Missing TYPE argument"),
        [kind, token] => (
            kind.as_str(),
            read_flag_data(token).map_err(|e| anyhow!("Error! {e:#}"))?,
        ),
        more => bail!("Error! Too many arguments: expected 2 got {}", more.len()),
    };
    let c = client(&a.http)?;
    let Some(endpoint) = agent_token_kind(kind) else {
        bail!("Unknown token type");
    };
    c.set_agent_token(endpoint, token.trim())
        .await
        .map_err(|e| anyhow!("Failed to set ACL token {kind:?}: {e}"))?;
    println!("ACL token {kind:?} set successfully");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn service_and_node_identities_parse_as_consul_reads_them() {
        let s = parse_service_identities(&strings(&["web:dc1,dc2", "db"])).unwrap();
        assert_eq!(s[0].service_name, "web");
        assert_eq!(s[0].datacenters, ["dc1", "dc2"]);
        assert_eq!(
            (s[1].service_name.as_str(), s[1].datacenters.len()),
            ("db", 0)
        );
        let e = parse_service_identities(&strings(&["a:b:c"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Malformed -service-identity argument: \"a:b:c\""
        );

        let n = parse_node_identities(&strings(&["n1:dc1"])).unwrap();
        assert_eq!(
            (n[0].node_name.as_str(), n[0].datacenter.as_str()),
            ("n1", "dc1")
        );
        for bad in ["n1", "n1:dc1:x"] {
            let e = parse_node_identities(&strings(&[bad])).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("Malformed -node-identity argument: {bad:?}")
            );
        }
    }

    #[test]
    fn rules_come_from_a_file_stdin_or_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rules.hcl");
        std::fs::write(&file, "service \"web\" { policy = \"write\" }\n").unwrap();
        let mut stdin = "key_prefix \"\" { policy = \"read\" }".as_bytes();
        let at = format!("@{}", file.display());
        assert_eq!(
            load_data_source(&at, &mut stdin).unwrap(),
            "service \"web\" { policy = \"write\" }\n"
        );
        assert_eq!(
            load_data_source("-", &mut stdin).unwrap(),
            "key_prefix \"\" { policy = \"read\" }"
        );
        assert_eq!(
            load_data_source("node \"n\" {}", &mut "".as_bytes()).unwrap(),
            "node \"n\" {}"
        );
        assert_eq!(load_data_source("", &mut "x".as_bytes()).unwrap(), "");
        let missing = format!("@{}", dir.path().join("nope").display());
        let e = load_data_source(&missing, &mut "".as_bytes()).unwrap_err();
        assert!(e.to_string().starts_with("Failed to read file: "), "{e}");
    }

    #[test]
    fn prefixes_name_one_id() {
        let ids = ["abc-1", "abd-2", "xyz-3"];
        assert_eq!(unique_prefix(ids, "abc", "token").unwrap(), "abc-1");
        assert_eq!(
            unique_prefix(ids, "ab", "token").unwrap_err().to_string(),
            "Partial token ID is not unique"
        );
        assert_eq!(
            unique_prefix(ids, "q", "policy").unwrap_err().to_string(),
            "No such policy ID with prefix: q"
        );
    }

    fn link(id: &str, name: &str) -> AclLink {
        AclLink {
            id: id.into(),
            name: name.into(),
        }
    }

    #[test]
    fn updates_replace_merge_or_keep() {
        let existing = vec![link("p1", "one"), link("p2", "two")];
        // Nothing given: kept.
        let mut l = existing.clone();
        update_list(&mut l, vec![], vec![], false, same_link, false);
        assert_eq!(l, existing);
        // Given without merging: replaced.
        let mut l = existing.clone();
        update_list(
            &mut l,
            vec![link("", "three")],
            vec![],
            false,
            same_link,
            false,
        );
        assert_eq!(l, [link("", "three")]);
        // Merged: added unless there already (by name or by ID).
        let mut l = existing.clone();
        update_list(
            &mut l,
            vec![link("", "one"), link("p2", ""), link("", "three")],
            vec![],
            true,
            same_link,
            false,
        );
        assert_eq!(l, [link("p1", "one"), link("p2", "two"), link("", "three")]);
        // Appended: the same as merging.
        let mut l = existing.clone();
        update_list(
            &mut l,
            vec![],
            vec![link("p4", "")],
            false,
            same_link,
            false,
        );
        assert_eq!(l.len(), 3);
        // A merged service identity replaces the one of the same name.
        let mut s = parse_service_identities(&strings(&["web", "db"])).unwrap();
        let given = parse_service_identities(&strings(&["web:dc2"])).unwrap();
        update_list(&mut s, given, vec![], true, same_service, true);
        assert_eq!(s[0].datacenters, ["dc2"]);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn go_times() {
        assert_eq!(
            go_time("2024-05-01T10:11:12.123450000Z"),
            "2024-05-01 10:11:12.12345 +0000 UTC"
        );
        assert_eq!(
            go_time("2024-05-01T10:11:12Z"),
            "2024-05-01 10:11:12 +0000 UTC"
        );
        assert_eq!(
            go_time("2024-05-01T10:11:12.5+02:00"),
            "2024-05-01 10:11:12.5 +0200 +0200"
        );
        assert_eq!(go_time("yesterday"), "yesterday");
    }

    fn token() -> AclToken {
        AclToken {
            accessor_id: "a-1".into(),
            secret_id: "s-1".into(),
            description: "web token".into(),
            create_time: "2024-05-01T10:11:12Z".into(),
            policies: vec![link(
                "00000000-0000-0000-0000-000000000001",
                "global-management",
            )],
            roles: vec![link("r-1", "ops")],
            service_identities: parse_service_identities(&strings(&["web", "db:dc1,dc2"])).unwrap(),
            node_identities: parse_node_identities(&strings(&["n1:dc1"])).unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn tokens_print_as_consul_prints_them() {
        assert_eq!(
            token_pretty(&token()),
            "AccessorID:       a-1\n\
             SecretID:         s-1\n\
             Description:      web token\n\
             Local:            false\n\
             Create Time:      2024-05-01 10:11:12 +0000 UTC\n\
             Policies:\n\
             \x20  00000000-0000-0000-0000-000000000001 - global-management\n\
             Roles:\n\
             \x20  r-1 - ops\n\
             Service Identities:\n\
             \x20  web (Datacenters: all)\n\
             \x20  db (Datacenters: dc1, dc2)\n\
             Node Identities:\n\
             \x20  n1 (Datacenter: dc1)\n"
        );
        let bare = AclToken {
            accessor_id: "a-2".into(),
            secret_id: "s-2".into(),
            create_time: "2024-05-01T10:11:12Z".into(),
            expiration_time: Some("2024-05-02T10:11:12Z".into()),
            ..Default::default()
        };
        let list = token_list_pretty(&[token(), bare]);
        assert!(
            list.contains("   n1 (Datacenter: dc1)\n\nAccessorID:       a-2\n"),
            "{list}"
        );
        assert!(
            list.ends_with("Expiration Time:  2024-05-02 10:11:12 +0000 UTC\n"),
            "{list}"
        );
        let json = json_pretty(&token()).unwrap();
        assert!(
            json.starts_with("{\n    \"AccessorID\": \"a-1\",\n"),
            "{json}"
        );
    }

    #[test]
    fn policies_and_roles_print_as_consul_prints_them() {
        let p = AclPolicy {
            id: "p-1".into(),
            name: "web-w".into(),
            description: "web writes".into(),
            datacenters: strings(&["dc1", "dc2"]),
            rules: "service \"web\" { policy = \"write\" }".into(),
            ..Default::default()
        };
        assert_eq!(
            policy_pretty(&p),
            "ID:           p-1\n\
             Name:         web-w\n\
             Description:  web writes\n\
             Datacenters:  dc1, dc2\n\
             Rules:\n\
             service \"web\" { policy = \"write\" }"
        );
        assert_eq!(
            policy_list_pretty(&[p]),
            "web-w:\n   ID:           p-1\n   Description:  web writes\n   Datacenters:  dc1, dc2\n"
        );
        let r = AclRole {
            id: "r-1".into(),
            name: "ops".into(),
            policies: vec![link("p-1", "web-w")],
            node_identities: parse_node_identities(&strings(&["n1:dc1"])).unwrap(),
            ..Default::default()
        };
        assert_eq!(
            role_pretty(&r),
            "ID:           r-1\nName:         ops\nDescription:  \nPolicies:\n   p-1 - web-w\n\
             Node Identities:\n   n1 (Datacenter: dc1)\n"
        );
        assert_eq!(
            role_list_pretty(&[r]),
            "ops:\n   ID:           r-1\n   Description:  \n   Policies:\n      p-1 - web-w\n\
             \x20  Node Identities:\n      n1 (Datacenter: dc1)\n"
        );
    }

    /// Parses `trellis <argv>` as the binary does (single-dash flags included).
    fn parse(argv: &[&str]) -> AclCommand {
        use clap::Parser;
        let args = std::iter::once("trellis")
            .chain(argv.iter().copied())
            .map(std::ffi::OsString::from);
        match crate::cli::Cli::try_parse_from(crate::common::dash_aliases(args))
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
            .command
        {
            crate::cli::Command::Acl(c) => c,
            other => panic!("not acl: {other:?}"),
        }
    }

    #[test]
    fn consuls_flags_parse() {
        let AclCommand::Token(TokenCommand::Create(c)) = parse(&[
            "acl",
            "token",
            "create",
            "-policy-name",
            "a",
            "-policy-name=b",
            "-service-identity",
            "web:dc1",
            "-node-identity",
            "n1:dc1",
            "-local",
            "-expires-ttl",
            "1h",
            "-format=json",
            "-token",
            "tok",
            "-token-file",
            "/f",
        ]) else {
            panic!("token create");
        };
        assert_eq!(c.policies.policy_name, ["a", "b"]);
        assert!(c.local && c.format == Format::Json);
        assert_eq!(c.http.token.as_ref().map(|t| t.expose()), Some("tok"));
        assert!(
            !format!("{c:?}").contains("tok\""),
            "the token is never shown"
        );
        assert_eq!(
            c.http.token_file.as_deref(),
            Some(std::path::Path::new("/f"))
        );
        let AclCommand::Token(TokenCommand::Read(r)) =
            parse(&["acl", "token", "read", "-accessor-id", "ab", "-self"])
        else {
            panic!("token read");
        };
        assert_eq!((r.id.as_deref(), r.self_), (Some("ab"), true));
        let AclCommand::Policy(PolicyCommand::Create(p)) = parse(&[
            "acl",
            "policy",
            "create",
            "-name",
            "p",
            "-rules",
            "-",
            "-valid-datacenter",
            "dc1",
            "-datacenter",
            "dc2",
        ]) else {
            panic!("policy create");
        };
        assert_eq!(p.rules.as_deref(), Some("-"));
        assert_eq!(p.datacenters, ["dc1", "dc2"]);
        let AclCommand::SetAgentToken(t) = parse(&["acl", "set-agent-token", "agent", "s"]) else {
            panic!("set-agent-token");
        };
        assert_eq!(t.args, ["agent", "s"]);
        assert!(matches!(
            parse(&["acl", "token", "update", "-id", "x", "-merge-policies"]),
            AclCommand::Token(TokenCommand::Update(u)) if u.merge_policies
        ));
    }

    #[test]
    fn agent_token_types() {
        assert_eq!(agent_token_kind("recovery"), Some("agent_recovery"));
        assert_eq!(agent_token_kind("agent"), Some("agent"));
        assert_eq!(agent_token_kind("dns"), Some("dns"));
        assert_eq!(agent_token_kind("acl_token"), None);
    }
}
