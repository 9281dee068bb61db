//! Agent configuration files in HCL or JSON, with Consul's key names.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::Value;
use trellis_api::ServiceDefinition;

/// `ports { ... }`.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(default)]
pub struct Ports {
    /// HTTP API port.
    pub http: Option<u16>,
    /// Server RPC port.
    pub server: Option<u16>,
}

/// `connect { ... }`: what Trellis reads of Consul's `connect` block.
#[derive(Debug, Default, Clone)]
pub struct Connect {
    /// `pkcs11_modules`: the PKCS#11 modules (absolute paths) the CA's `pkcs11` provider may
    /// load. The only way a module path reaches the agent: a CA configuration set through the
    /// API may name only one of these.
    pub pkcs11_modules: Vec<String>,
    /// Keys of the block this version does not use.
    pub ignored: BTreeMap<String, Value>,
}

impl Connect {
    /// Reads one `connect` block (HCL gives repeated blocks as an array of them).
    fn read(&mut self, raw: Value) -> anyhow::Result<()> {
        let blocks = match raw {
            Value::Array(items) => items,
            other => vec![other],
        };
        for block in blocks {
            let Value::Object(map) = block else {
                bail!("connect must be a block (an object)");
            };
            for (key, value) in map {
                if key == "pkcs11_modules" {
                    let paths: Vec<String> = serde_json::from_value(value).context(
                        "connect.pkcs11_modules must be a list of paths, such as \
                         [\"/usr/lib/softhsm/libsofthsm2.so\"]",
                    )?;
                    self.pkcs11_modules.extend(paths);
                } else {
                    self.ignored.insert(key, value);
                }
            }
        }
        Ok(())
    }
}

/// `acl { tokens { ... } }`. Legacy names are read as Consul reads them (`master` for
/// `initial_management`, `agent_master` for `agent_recovery`).
#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub struct AclTokens {
    #[serde(alias = "master")]
    pub initial_management: Option<String>,
    pub agent: Option<String>,
    #[serde(alias = "agent_master")]
    pub agent_recovery: Option<String>,
    pub default: Option<String>,
    pub replication: Option<String>,
    pub config_file_service_registration: Option<String>,
    pub dns: Option<String>,
    /// Keys of the block this version does not use.
    #[serde(flatten)]
    pub ignored: BTreeMap<String, Value>,
}

impl std::fmt::Debug for AclTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |t: &Option<String>| t.as_ref().map(|_| "<hidden>");
        f.debug_struct("AclTokens")
            .field("initial_management", &set(&self.initial_management))
            .field("agent", &set(&self.agent))
            .field("agent_recovery", &set(&self.agent_recovery))
            .field("default", &set(&self.default))
            .field("replication", &set(&self.replication))
            .finish_non_exhaustive()
    }
}

impl AclTokens {
    fn merge(&mut self, other: AclTokens) {
        macro_rules! over {
            ($($f:ident),*) => { $( if other.$f.is_some() { self.$f = other.$f; } )* };
        }
        over!(
            initial_management,
            agent,
            agent_recovery,
            default,
            replication,
            config_file_service_registration,
            dns
        );
        self.ignored.extend(other.ignored);
    }
}

/// `acl { ... }`: Consul's ACL settings.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(default)]
pub struct Acl {
    pub enabled: Option<bool>,
    pub default_policy: Option<String>,
    pub down_policy: Option<String>,
    pub token_ttl: Option<String>,
    pub policy_ttl: Option<String>,
    pub role_ttl: Option<String>,
    pub enable_token_persistence: Option<bool>,
    pub enable_key_list_policy: Option<bool>,
    pub enable_token_replication: Option<bool>,
    #[serde(skip)]
    pub tokens: AclTokens,
    #[serde(rename = "tokens")]
    tokens_raw: Option<Value>,
    /// Keys of the block this version does not use.
    #[serde(flatten)]
    pub ignored: BTreeMap<String, Value>,
}

/// HCL gives a repeated block as an array of its instances.
fn blocks(raw: Value, what: &str) -> anyhow::Result<Vec<Value>> {
    let items = match raw {
        Value::Array(items) => items,
        other => vec![other],
    };
    for item in &items {
        if !item.is_object() {
            bail!("{what} must be a block (an object)");
        }
    }
    Ok(items)
}

impl Acl {
    /// Reads the `acl` block (or blocks).
    fn read(raw: Value) -> anyhow::Result<Acl> {
        let mut out = Acl::default();
        for block in blocks(raw, "acl")? {
            let mut acl: Acl = serde_json::from_value(block).context("acl")?;
            if let Some(raw) = acl.tokens_raw.take() {
                for t in blocks(raw, "acl.tokens")? {
                    acl.tokens
                        .merge(serde_json::from_value(t).context("acl.tokens")?);
                }
            }
            out.merge(acl);
        }
        Ok(out)
    }

    fn merge(&mut self, other: Acl) {
        macro_rules! over {
            ($($f:ident),*) => { $( if other.$f.is_some() { self.$f = other.$f; } )* };
        }
        over!(
            enabled,
            default_policy,
            down_policy,
            token_ttl,
            policy_ttl,
            role_ttl,
            enable_token_persistence,
            enable_key_list_policy,
            enable_token_replication
        );
        self.tokens.merge(other.tokens);
        self.ignored.extend(other.ignored);
    }
}

/// `limits { ... }`: Consul's per-client connection limits, and Trellis's own request body
/// time limit. Unset keys keep the defaults (`trellis_server::listen::Limits`).
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(default)]
pub struct Limits {
    /// Connections one client IP may hold open to the HTTP API (Consul's default 200; 0: no
    /// limit).
    pub http_max_conns_per_client: Option<usize>,
    /// Connections one client IP may hold open to the server port (Consul's default 100; 0: no
    /// limit).
    pub rpc_max_conns_per_client: Option<usize>,
    /// How long a client may take to send a whole request body to the HTTP API (a Go
    /// duration; default 30s). Trellis's own key.
    pub http_body_read_timeout: Option<String>,
    /// Keys of the block this version does not use.
    #[serde(flatten)]
    pub ignored: BTreeMap<String, Value>,
}

/// `performance { ... }`: Consul's `rpc_hold_timeout` (how long a server holds a request
/// while there is no leader). Other keys of the block are reported and ignored.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(default)]
pub struct Performance {
    /// A Go duration (Consul's default 7s).
    pub rpc_hold_timeout: Option<String>,
    /// Keys of the block this version does not use.
    #[serde(flatten)]
    pub ignored: BTreeMap<String, Value>,
}

/// `auto_encrypt { ... }`: on servers `allow_tls` (sign client agents' server-port
/// certificates from the Connect CA), on client agents `tls` (get this agent's certificate
/// from the servers instead of `cert_file`). Other keys of the block (`dns_san`, `ip_san`:
/// the certificate is used only to dial the servers) are reported and ignored.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(default)]
pub struct AutoEncrypt {
    pub allow_tls: Option<bool>,
    pub tls: Option<bool>,
    /// Keys of the block this version does not use.
    #[serde(flatten)]
    pub ignored: BTreeMap<String, Value>,
}

/// One block of `tls { ... }` (`defaults`, `internal_rpc`): Consul's keys, each unset unless
/// given, so that blocks and files layer key by key.
#[derive(Deserialize, Debug, Default, Clone, PartialEq)]
#[serde(default)]
pub struct TlsKeys {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub verify_incoming: Option<bool>,
    pub verify_outgoing: Option<bool>,
    /// Valid only in `internal_rpc` (reported as ignored in `defaults`).
    pub verify_server_hostname: Option<bool>,
    /// Keys of the block this version does not use.
    #[serde(flatten)]
    pub ignored: BTreeMap<String, Value>,
}

impl TlsKeys {
    /// Layers `other` over `self`: set values win.
    fn merge(&mut self, other: TlsKeys) {
        macro_rules! take {
            ($($f:ident),*) => { $( if other.$f.is_some() { self.$f = other.$f; } )* };
        }
        take!(
            ca_file,
            cert_file,
            key_file,
            verify_incoming,
            verify_outgoing,
            verify_server_hostname
        );
        self.ignored.extend(other.ignored);
    }
}

/// `tls { defaults { ... } internal_rpc { ... } }` (Consul 1.12+). `internal_rpc` (the server
/// port) overrides `defaults` key by key; other blocks (`https`, `grpc`) are reported and
/// ignored.
#[derive(Deserialize, Debug, Default, Clone, PartialEq)]
#[serde(default)]
pub struct Tls {
    pub defaults: TlsKeys,
    pub internal_rpc: TlsKeys,
    /// Keys of the block this version does not use.
    #[serde(flatten)]
    pub ignored: BTreeMap<String, Value>,
}

/// The server port's TLS settings once `tls.internal_rpc`, `tls.defaults` and the legacy
/// top-level keys are layered (in that order of precedence).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RpcTlsSettings {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub verify_incoming: bool,
    pub verify_outgoing: bool,
    pub verify_server_hostname: bool,
}

/// The keys Trellis reads from a config file. Others are reported and ignored.
#[derive(Deserialize, Debug, Default)]
#[serde(default)]
pub struct FileConfig {
    pub datacenter: Option<String>,
    pub node_name: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub server: Option<bool>,
    pub bootstrap: Option<bool>,
    pub bootstrap_expect: Option<u32>,
    pub retry_join: Vec<String>,
    pub bind_addr: Option<IpAddr>,
    pub client_addr: Option<IpAddr>,
    pub advertise_addr: Option<IpAddr>,
    pub ports: Ports,
    pub log_level: Option<String>,
    pub log_json: Option<bool>,
    pub node_meta: BTreeMap<String, String>,
    pub raft_snapshot_threshold: Option<u64>,
    pub default_intention_policy: Option<String>,
    pub limits: Limits,
    pub performance: Performance,
    pub auto_encrypt: AutoEncrypt,
    /// The domain (Consul's `domain`, `consul` by default): servers' TLS certificates name
    /// `server.<datacenter>.<domain>`.
    pub domain: Option<String>,
    pub tls: Tls,
    /// Legacy top-level TLS keys (deprecated in Consul 1.12 for `tls { ... }`, which wins).
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub verify_incoming: Option<bool>,
    pub verify_outgoing: Option<bool>,
    pub verify_incoming_rpc: Option<bool>,
    pub verify_server_hostname: Option<bool>,
    #[serde(skip)]
    pub acl: Acl,
    #[serde(rename = "acl")]
    acl_raw: Option<Value>,
    /// Legacy top-level ACL keys (Consul 1.4's), each read into `acl` unless the block sets it.
    pub acl_datacenter: Option<String>,
    pub acl_default_policy: Option<String>,
    pub acl_down_policy: Option<String>,
    pub acl_ttl: Option<String>,
    pub acl_master_token: Option<String>,
    pub acl_agent_token: Option<String>,
    pub acl_agent_master_token: Option<String>,
    pub acl_token: Option<String>,
    pub acl_replication_token: Option<String>,
    pub primary_datacenter: Option<String>,
    #[serde(skip)]
    pub connect: Connect,
    #[serde(rename = "connect")]
    connect_raw: Option<Value>,
    #[serde(skip)]
    pub services: Vec<ServiceDefinition>,
    service: Option<Value>,
    #[serde(rename = "services")]
    services_raw: Option<Value>,
    /// Keys this version does not use.
    #[serde(flatten)]
    pub ignored: BTreeMap<String, Value>,
}

impl FileConfig {
    /// Loads one file; the format follows the extension (`.json`, otherwise HCL).
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let json = path.extension().is_some_and(|e| e == "json");
        let value: Value = if json {
            serde_json::from_str(&text)
                .with_context(|| format!("config file {} is not valid JSON", path.display()))?
        } else {
            hcl::from_str(&text)
                .with_context(|| format!("config file {} is not valid HCL", path.display()))?
        };
        Self::from_value(value).with_context(|| format!("config file {}", path.display()))
    }

    /// Parses a decoded config document.
    pub fn from_value(value: Value) -> anyhow::Result<FileConfig> {
        if !value.is_object() {
            bail!("the top level must be an object");
        }
        let mut cfg: FileConfig = serde_json::from_value(value)?;
        if let Some(v) = cfg.tls.defaults.verify_server_hostname.take() {
            // Consul has it only in `internal_rpc`.
            cfg.tls
                .defaults
                .ignored
                .insert("verify_server_hostname".into(), Value::Bool(v));
        }
        if let Some(raw) = cfg.connect_raw.take() {
            cfg.connect.read(raw)?;
        }
        if let Some(raw) = cfg.acl_raw.take() {
            cfg.acl = Acl::read(raw)?;
        }
        let mut defs = Vec::new();
        for raw in [cfg.service.take(), cfg.services_raw.take()]
            .into_iter()
            .flatten()
        {
            match raw {
                Value::Array(items) => defs.extend(items),
                other => defs.push(other),
            }
        }
        for mut def in defs {
            trellis_api::canonicalize_keys(&mut def);
            cfg.services
                .push(serde_json::from_value(def).context("invalid service definition")?);
        }
        Ok(cfg)
    }

    /// Loads every `*.json` and `*.hcl` file of a directory, in name order.
    pub fn load_dir(dir: &Path) -> anyhow::Result<FileConfig> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading config dir {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json" || e == "hcl"))
            .collect();
        paths.sort();
        let mut out = FileConfig::default();
        for p in paths {
            out.merge(FileConfig::load(&p)?);
        }
        Ok(out)
    }

    /// Layers `other` over `self`: set values win, lists and maps accumulate.
    pub fn merge(&mut self, other: FileConfig) {
        macro_rules! take {
            ($($f:ident),*) => { $( if other.$f.is_some() { self.$f = other.$f; } )* };
        }
        take!(
            datacenter,
            node_name,
            data_dir,
            server,
            bootstrap,
            bootstrap_expect,
            bind_addr,
            client_addr,
            advertise_addr,
            log_level,
            log_json,
            raft_snapshot_threshold,
            default_intention_policy,
            domain,
            ca_file,
            cert_file,
            key_file,
            verify_incoming,
            verify_outgoing,
            verify_incoming_rpc,
            verify_server_hostname
        );
        self.tls.defaults.merge(other.tls.defaults);
        self.tls.internal_rpc.merge(other.tls.internal_rpc);
        self.tls.ignored.extend(other.tls.ignored);
        if other.ports.http.is_some() {
            self.ports.http = other.ports.http;
        }
        if other.ports.server.is_some() {
            self.ports.server = other.ports.server;
        }
        let limits = other.limits;
        if limits.http_max_conns_per_client.is_some() {
            self.limits.http_max_conns_per_client = limits.http_max_conns_per_client;
        }
        if limits.rpc_max_conns_per_client.is_some() {
            self.limits.rpc_max_conns_per_client = limits.rpc_max_conns_per_client;
        }
        if limits.http_body_read_timeout.is_some() {
            self.limits.http_body_read_timeout = limits.http_body_read_timeout;
        }
        self.limits.ignored.extend(limits.ignored);
        if other.performance.rpc_hold_timeout.is_some() {
            self.performance.rpc_hold_timeout = other.performance.rpc_hold_timeout;
        }
        self.performance.ignored.extend(other.performance.ignored);
        if other.auto_encrypt.allow_tls.is_some() {
            self.auto_encrypt.allow_tls = other.auto_encrypt.allow_tls;
        }
        if other.auto_encrypt.tls.is_some() {
            self.auto_encrypt.tls = other.auto_encrypt.tls;
        }
        self.auto_encrypt.ignored.extend(other.auto_encrypt.ignored);
        self.retry_join.extend(other.retry_join);
        self.node_meta.extend(other.node_meta);
        self.services.extend(other.services);
        self.connect
            .pkcs11_modules
            .extend(other.connect.pkcs11_modules);
        self.connect.ignored.extend(other.connect.ignored);
        self.acl.merge(other.acl);
        macro_rules! over {
            ($($f:ident),*) => { $( if other.$f.is_some() { self.$f = other.$f; } )* };
        }
        over!(
            acl_datacenter,
            acl_default_policy,
            acl_down_policy,
            acl_ttl,
            acl_master_token,
            acl_agent_token,
            acl_agent_master_token,
            acl_token,
            acl_replication_token,
            primary_datacenter
        );
        self.ignored.extend(other.ignored);
    }

    /// The ACL settings with the legacy top-level keys folded in (the block's keys win, as in
    /// Consul's `deprecated.go`; `acl_datacenter` turns ACLs on).
    pub fn acl_settings(&self) -> Acl {
        let mut acl = self.acl.clone();
        let legacy = |block: &mut Option<String>, old: &Option<String>| {
            if block.is_none() {
                block.clone_from(old);
            }
        };
        legacy(&mut acl.default_policy, &self.acl_default_policy);
        legacy(&mut acl.down_policy, &self.acl_down_policy);
        legacy(&mut acl.token_ttl, &self.acl_ttl);
        let t = &mut acl.tokens;
        legacy(&mut t.initial_management, &self.acl_master_token);
        legacy(&mut t.agent, &self.acl_agent_token);
        legacy(&mut t.agent_recovery, &self.acl_agent_master_token);
        legacy(&mut t.default, &self.acl_token);
        legacy(&mut t.replication, &self.acl_replication_token);
        if acl.enabled.is_none()
            && self
                .acl_datacenter
                .as_deref()
                .is_some_and(|d| !d.is_empty())
        {
            acl.enabled = Some(true);
        }
        acl
    }

    /// The keys this version does not use, for the start-up warning (`connect.x` for a key of
    /// the `connect` block).
    pub fn ignored_keys(&self) -> Vec<String> {
        self.ignored
            .keys()
            .cloned()
            .chain(self.connect.ignored.keys().map(|k| format!("connect.{k}")))
            .chain(self.limits.ignored.keys().map(|k| format!("limits.{k}")))
            .chain(
                self.performance
                    .ignored
                    .keys()
                    .map(|k| format!("performance.{k}")),
            )
            .chain(
                self.auto_encrypt
                    .ignored
                    .keys()
                    .map(|k| format!("auto_encrypt.{k}")),
            )
            .chain(self.acl.ignored.keys().map(|k| format!("acl.{k}")))
            .chain(
                self.acl
                    .tokens
                    .ignored
                    .keys()
                    .map(|k| format!("acl.tokens.{k}")),
            )
            .chain(self.tls.ignored.keys().map(|k| format!("tls.{k}")))
            .chain(
                self.tls
                    .defaults
                    .ignored
                    .keys()
                    .map(|k| format!("tls.defaults.{k}")),
            )
            .chain(
                self.tls
                    .internal_rpc
                    .ignored
                    .keys()
                    .map(|k| format!("tls.internal_rpc.{k}")),
            )
            .collect()
    }

    /// The legacy top-level TLS keys given, each with the key that replaces it, for Consul's
    /// warning (`The '<old>' field is deprecated. Use the '<new>' field instead.`).
    pub fn deprecated_keys(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        let mut note = |set: bool, old, new| {
            if set {
                out.push((old, new));
            }
        };
        note(self.ca_file.is_some(), "ca_file", "tls.defaults.ca_file");
        note(
            self.cert_file.is_some(),
            "cert_file",
            "tls.defaults.cert_file",
        );
        note(self.key_file.is_some(), "key_file", "tls.defaults.key_file");
        note(
            self.verify_incoming.is_some(),
            "verify_incoming",
            "tls.defaults.verify_incoming",
        );
        note(
            self.verify_outgoing.is_some(),
            "verify_outgoing",
            "tls.defaults.verify_outgoing",
        );
        note(
            self.verify_incoming_rpc.is_some(),
            "verify_incoming_rpc",
            "tls.internal_rpc.verify_incoming",
        );
        note(
            self.verify_server_hostname.is_some(),
            "verify_server_hostname",
            "tls.internal_rpc.verify_server_hostname",
        );
        note(
            self.acl_datacenter.is_some(),
            "acl_datacenter",
            "primary_datacenter",
        );
        note(
            self.acl_default_policy.is_some(),
            "acl_default_policy",
            "acl.default_policy",
        );
        note(
            self.acl_down_policy.is_some(),
            "acl_down_policy",
            "acl.down_policy",
        );
        note(self.acl_ttl.is_some(), "acl_ttl", "acl.token_ttl");
        note(
            self.acl_master_token.is_some(),
            "acl_master_token",
            "acl.tokens.initial_management",
        );
        note(
            self.acl_agent_token.is_some(),
            "acl_agent_token",
            "acl.tokens.agent",
        );
        note(
            self.acl_agent_master_token.is_some(),
            "acl_agent_master_token",
            "acl.tokens.agent_recovery",
        );
        note(self.acl_token.is_some(), "acl_token", "acl.tokens.default");
        note(
            self.acl_replication_token.is_some(),
            "acl_replication_token",
            "acl.tokens.replication",
        );
        out
    }

    /// The server port's TLS settings: `tls.internal_rpc` over `tls.defaults`, each over its
    /// legacy top-level key (new keys win, as in Consul's `deprecated.go`).
    pub fn rpc_tls(&self) -> RpcTlsSettings {
        let d = &self.tls.defaults;
        let r = &self.tls.internal_rpc;
        let path = |rpc: &Option<PathBuf>, def: &Option<PathBuf>, legacy: &Option<PathBuf>| {
            rpc.clone()
                .or_else(|| def.clone())
                .or_else(|| legacy.clone())
        };
        RpcTlsSettings {
            ca_file: path(&r.ca_file, &d.ca_file, &self.ca_file),
            cert_file: path(&r.cert_file, &d.cert_file, &self.cert_file),
            key_file: path(&r.key_file, &d.key_file, &self.key_file),
            verify_incoming: r
                .verify_incoming
                .or(self.verify_incoming_rpc)
                .or(d.verify_incoming)
                .or(self.verify_incoming)
                .unwrap_or(false),
            verify_outgoing: r
                .verify_outgoing
                .or(d.verify_outgoing)
                .or(self.verify_outgoing)
                .unwrap_or(false),
            verify_server_hostname: r
                .verify_server_hostname
                .or(self.verify_server_hostname)
                .unwrap_or(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_blocks_layer_key_by_key_over_the_legacy_keys() {
        let hcl: Value = hcl::from_str(
            r#"
            domain = "example"
            ca_file = "/legacy/ca.pem"
            cert_file = "/legacy/cert.pem"
            verify_incoming = true
            verify_server_hostname = false
            tls {
              defaults {
                cert_file = "/d/cert.pem"
                key_file = "/d/key.pem"
                verify_outgoing = true
                verify_server_hostname = true
                tls_min_version = "TLSv1_3"
              }
              internal_rpc {
                key_file = "/rpc/key.pem"
                verify_server_hostname = true
              }
              https { verify_incoming = false }
            }
            "#,
        )
        .unwrap();
        let cfg = FileConfig::from_value(hcl).unwrap();
        assert_eq!(
            cfg.rpc_tls(),
            RpcTlsSettings {
                ca_file: Some("/legacy/ca.pem".into()),
                cert_file: Some("/d/cert.pem".into()),
                key_file: Some("/rpc/key.pem".into()),
                verify_incoming: true,
                verify_outgoing: true,
                verify_server_hostname: true,
            },
            "internal_rpc over defaults over legacy keys"
        );
        assert_eq!(cfg.domain.as_deref(), Some("example"));
        let mut ignored = cfg.ignored_keys();
        ignored.sort();
        assert_eq!(
            ignored,
            [
                "tls.defaults.tls_min_version",
                "tls.defaults.verify_server_hostname",
                "tls.https"
            ]
        );
        assert_eq!(
            cfg.deprecated_keys(),
            [
                ("ca_file", "tls.defaults.ca_file"),
                ("cert_file", "tls.defaults.cert_file"),
                ("verify_incoming", "tls.defaults.verify_incoming"),
                (
                    "verify_server_hostname",
                    "tls.internal_rpc.verify_server_hostname"
                ),
            ]
        );
    }

    #[test]
    fn legacy_rpc_keys_and_later_files() {
        let json = serde_json::json!({
            "verify_incoming": false,
            "verify_incoming_rpc": true,
            "verify_outgoing": true,
            "tls": {"defaults": {"verify_incoming": false}}
        });
        let mut cfg = FileConfig::from_value(json).unwrap();
        let s = cfg.rpc_tls();
        assert!(
            s.verify_incoming,
            "verify_incoming_rpc is internal_rpc's, above defaults"
        );
        assert!(s.verify_outgoing);
        assert!(!s.verify_server_hostname);
        assert_eq!(FileConfig::default().rpc_tls(), RpcTlsSettings::default());

        let later = serde_json::json!({"tls": {"internal_rpc": {
            "verify_incoming": false, "ca_file": "/ca.pem"}}});
        cfg.merge(FileConfig::from_value(later).unwrap());
        let s = cfg.rpc_tls();
        assert!(!s.verify_incoming, "a later file's internal_rpc wins");
        assert!(s.verify_outgoing, "kept");
        assert_eq!(s.ca_file, Some("/ca.pem".into()));
        assert!(
            FileConfig::from_value(serde_json::json!({"tls": {"defaults": {
            "verify_incoming": "yes"}}}))
            .is_err()
        );
    }

    #[test]
    fn hcl_and_json_read_the_same_keys() {
        let hcl: Value = hcl::from_str(
            r#"
            datacenter = "east"
            node_name = "n1"
            server = true
            bootstrap_expect = 1
            retry_join = ["127.0.0.2:8300"]
            ports { http = 18500 }
            service {
              name = "web"
              port = 8080
              connect {
                sidecar_service {}
              }
            }
            ui_config { enabled = true }
            "#,
        )
        .unwrap();
        let cfg = FileConfig::from_value(hcl).unwrap();
        assert_eq!(cfg.datacenter.as_deref(), Some("east"));
        assert_eq!(cfg.ports.http, Some(18500));
        assert_eq!(cfg.retry_join, ["127.0.0.2:8300"]);
        assert_eq!(cfg.services.len(), 1);
        assert_eq!(cfg.services[0].name, "web");
        assert!(cfg.services[0]
            .connect
            .as_ref()
            .unwrap()
            .sidecar_service
            .is_some());
        assert!(cfg.ignored.contains_key("ui_config"));

        let json =
            serde_json::json!({"datacenter": "east", "services": [{"name": "a"}, {"name": "b"}]});
        let cfg = FileConfig::from_value(json).unwrap();
        assert_eq!(cfg.services.len(), 2);
        assert!(FileConfig::from_value(serde_json::json!({"ports": {"http": "x"}})).is_err());
    }

    #[test]
    fn limits_are_read_and_layered() {
        let hcl: Value = hcl::from_str(
            r#"
            limits {
              http_max_conns_per_client = 50
              rpc_rate = 100
            }
            "#,
        )
        .unwrap();
        let mut cfg = FileConfig::from_value(hcl).unwrap();
        assert_eq!(cfg.limits.http_max_conns_per_client, Some(50));
        assert_eq!(cfg.limits.rpc_max_conns_per_client, None);
        assert!(cfg.ignored_keys().contains(&"limits.rpc_rate".to_string()));
        let json = serde_json::json!({"limits": {
            "rpc_max_conns_per_client": 0, "http_body_read_timeout": "5s"}});
        cfg.merge(FileConfig::from_value(json).unwrap());
        assert_eq!(cfg.limits.http_max_conns_per_client, Some(50), "kept");
        assert_eq!(cfg.limits.rpc_max_conns_per_client, Some(0));
        assert_eq!(cfg.limits.http_body_read_timeout.as_deref(), Some("5s"));
        let negative = serde_json::json!({"limits": {"http_max_conns_per_client": -1}});
        assert!(FileConfig::from_value(negative).is_err());
    }

    #[test]
    fn acl_settings_read_the_block_and_the_legacy_keys() {
        let on: Value = hcl::from_str(
            "acl {\n  enabled = true\n  default_policy = \"deny\"\n  tokens {\n    master = \"m\"\n    agent = \"a\"\n  }\n}\n",
        )
        .unwrap();
        let acl = FileConfig::from_value(on).unwrap().acl_settings();
        assert_eq!(acl.enabled, Some(true));
        assert_eq!(acl.default_policy.as_deref(), Some("deny"));
        assert_eq!(acl.tokens.initial_management.as_deref(), Some("m"));
        assert_eq!(acl.tokens.agent.as_deref(), Some("a"));
        // The secrets never print.
        assert!(!format!("{acl:?}").contains("\"m\""));
        let legacy = serde_json::json!({
            "acl_datacenter": "dc1",
            "acl_default_policy": "deny",
            "acl_master_token": "root",
            "acl_token": "dflt"
        });
        let acl = FileConfig::from_value(legacy).unwrap().acl_settings();
        assert_eq!(acl.enabled, Some(true));
        assert_eq!(acl.default_policy.as_deref(), Some("deny"));
        assert_eq!(acl.tokens.initial_management.as_deref(), Some("root"));
        assert_eq!(acl.tokens.default.as_deref(), Some("dflt"));
        // The block wins over a legacy key.
        let both =
            serde_json::json!({"acl": {"default_policy": "allow"}, "acl_default_policy": "deny"});
        let acl = FileConfig::from_value(both).unwrap().acl_settings();
        assert_eq!(acl.default_policy.as_deref(), Some("allow"));
        assert_eq!(acl.enabled, None);
        assert_eq!(FileConfig::default().acl_settings().enabled, None);
    }

    #[test]
    fn auto_encrypt_is_read_and_layered() {
        let hcl: Value = hcl::from_str(
            r#"
            auto_encrypt {
              allow_tls = true
              dns_san = ["a.example"]
            }
            "#,
        )
        .unwrap();
        let mut cfg = FileConfig::from_value(hcl).unwrap();
        assert_eq!(cfg.auto_encrypt.allow_tls, Some(true));
        assert_eq!(cfg.auto_encrypt.tls, None);
        assert_eq!(cfg.ignored_keys(), vec!["auto_encrypt.dns_san"]);
        cfg.merge(
            FileConfig::from_value(serde_json::json!({"auto_encrypt": {"tls": true}})).unwrap(),
        );
        assert_eq!(cfg.auto_encrypt.allow_tls, Some(true), "kept");
        assert_eq!(cfg.auto_encrypt.tls, Some(true));
    }

    #[test]
    fn rpc_hold_timeout_is_read_from_the_performance_block() {
        let hcl: Value = hcl::from_str(
            r#"
            performance {
              rpc_hold_timeout = "3s"
              raft_multiplier = 1
            }
            "#,
        )
        .unwrap();
        let mut cfg = FileConfig::from_value(hcl).unwrap();
        assert_eq!(cfg.performance.rpc_hold_timeout.as_deref(), Some("3s"));
        assert_eq!(cfg.ignored_keys(), vec!["performance.raft_multiplier"]);
        cfg.merge(FileConfig::from_value(serde_json::json!({"performance": {}})).unwrap());
        assert_eq!(
            cfg.performance.rpc_hold_timeout.as_deref(),
            Some("3s"),
            "kept"
        );
        let json = serde_json::json!({"performance": {"rpc_hold_timeout": "10s"}});
        cfg.merge(FileConfig::from_value(json).unwrap());
        assert_eq!(cfg.performance.rpc_hold_timeout.as_deref(), Some("10s"));
    }

    #[test]
    fn pkcs11_modules_come_from_the_connect_block() {
        let hcl: Value = hcl::from_str(
            r#"
            connect {
              enabled = true
              pkcs11_modules = ["/usr/lib/softhsm/libsofthsm2.so", "/opt/hsm/lib.so"]
            }
            "#,
        )
        .unwrap();
        let mut cfg = FileConfig::from_value(hcl).unwrap();
        assert_eq!(
            cfg.connect.pkcs11_modules,
            ["/usr/lib/softhsm/libsofthsm2.so", "/opt/hsm/lib.so"]
        );
        assert_eq!(cfg.ignored_keys(), ["connect.enabled"]);
        let json = serde_json::json!({"connect": {"pkcs11_modules": ["/x/y.so"]}});
        cfg.merge(FileConfig::from_value(json).unwrap());
        assert_eq!(cfg.connect.pkcs11_modules.len(), 3, "lists accumulate");
        let err =
            FileConfig::from_value(serde_json::json!({"connect": {"pkcs11_modules": "/x.so"}}))
                .unwrap_err();
        assert!(format!("{err:#}").contains("list of paths"), "{err:#}");
        assert!(FileConfig::from_value(serde_json::json!({"connect": 1})).is_err());
    }
}
