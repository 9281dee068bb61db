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
        if let Some(raw) = cfg.connect_raw.take() {
            cfg.connect.read(raw)?;
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
            default_intention_policy
        );
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
        self.retry_join.extend(other.retry_join);
        self.node_meta.extend(other.node_meta);
        self.services.extend(other.services);
        self.connect
            .pkcs11_modules
            .extend(other.connect.pkcs11_modules);
        self.connect.ignored.extend(other.connect.ignored);
        self.ignored.extend(other.ignored);
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
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
