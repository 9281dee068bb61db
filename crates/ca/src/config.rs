//! The CA configuration (`/v1/connect/ca/configuration`), with Consul's keys, defaults and rules.

use std::time::Duration;

use serde_json::{Map, Value};
use trellis_api::parse_go_duration;

use crate::CaError;

/// CA key algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA.
    Ec,
    /// RSA.
    Rsa,
}

impl KeyType {
    /// Consul's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Ec => "ec",
            KeyType::Rsa => "rsa",
        }
    }
}

/// A validated CA configuration: the typed values Trellis acts on, plus the `Config` map as it
/// will be stored and shown (defaults filled in, the private key never shown).
#[derive(Debug, Clone, PartialEq)]
pub struct CaConfig {
    /// Provider name (`consul`).
    pub provider: String,
    /// How long a leaf certificate is valid.
    pub leaf_cert_ttl: Duration,
    /// How long an intermediate is valid.
    pub intermediate_cert_ttl: Duration,
    /// How long a generated root is valid.
    pub root_cert_ttl: Duration,
    /// Key type of generated CA keys.
    pub private_key_type: KeyType,
    /// Key size of generated CA keys.
    pub private_key_bits: u32,
    /// Signing rate limit per server; 0 disables it.
    pub csr_max_per_second: f64,
    /// Concurrent signing limit, used only when the rate limit is 0; 0 disables it.
    pub csr_max_concurrent: u32,
    /// Operator-supplied CA key (PEM).
    pub private_key: Option<String>,
    /// Operator-supplied root certificate (PEM).
    pub root_cert: Option<String>,
    /// Rotate without cross-signing (`ForceWithoutCrossSigning`).
    pub force_without_cross_signing: bool,
    /// HSM settings, for the `pkcs11` provider.
    pub pkcs11: Option<Pkcs11Config>,
    /// The `Config` map as stored, with defaults filled in.
    pub raw: Map<String, Value>,
}

/// Where the `pkcs11` provider finds its HSM and key. The PIN is a secret: it is kept in the
/// replicated configuration (as Consul keeps a Vault token) and never shown by the API.
#[derive(Clone, PartialEq, Eq)]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module (`/usr/lib/softhsm/libsofthsm2.so`).
    pub module_path: String,
    /// Label of the token holding the CA key.
    pub token_label: String,
    /// The token's user PIN.
    pub pin: String,
    /// Label of the CA key pair inside the token.
    pub key_label: String,
}

impl std::fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("module_path", &self.module_path)
            .field("token_label", &self.token_label)
            .field("key_label", &self.key_label)
            .finish_non_exhaustive()
    }
}

/// Providers this version knows.
pub const PROVIDERS: &[&str] = &["consul", "pkcs11"];

/// Config keys that are secrets: stored, never shown.
const SECRET_KEYS: &[&str] = &["PrivateKey", "Pin"];

/// Default leaf lifetime (72h).
pub const DEFAULT_LEAF_TTL: Duration = Duration::from_secs(72 * 3600);
const HOUR: Duration = Duration::from_secs(3600);

/// Consul's key names, matched without regard to case or underscores (API and agent-file style).
const KEYS: &[&str] = &[
    "LeafCertTTL",
    "IntermediateCertTTL",
    "RootCertTTL",
    "PrivateKeyType",
    "PrivateKeyBits",
    "CSRMaxPerSecond",
    "CSRMaxConcurrent",
    "PrivateKey",
    "RootCert",
    "RotationPeriod",
    "SkipValidate",
    "DisableCrossSigning",
    "ModulePath",
    "TokenLabel",
    "Pin",
    "KeyLabel",
];

fn fold(k: &str) -> String {
    k.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

impl CaConfig {
    /// The configuration a fresh datacenter starts with.
    pub fn default_consul() -> CaConfig {
        CaConfig::parse("consul", &Map::new(), false).expect("defaults are valid")
    }

    /// Parses and validates a provider name and its `Config` map (weakly typed, as Consul:
    /// durations as strings, numbers as numbers or numeric strings).
    pub fn parse(
        provider: &str,
        config: &Map<String, Value>,
        force_without_cross_signing: bool,
    ) -> Result<CaConfig, CaError> {
        let bad = |m: String| CaError::InvalidConfig(m);
        if !PROVIDERS.contains(&provider) {
            return Err(bad(format!(
                "unknown CA provider {provider:?}; this version supports \"consul\" and \"pkcs11\""
            )));
        }
        let mut raw = Map::new();
        for (k, v) in config {
            let canonical = KEYS.iter().find(|c| fold(c) == fold(k)).copied();
            match canonical {
                Some(c) => {
                    raw.insert(c.to_string(), v.clone());
                }
                None => return Err(bad(format!("unknown CA config key {k:?}"))),
            }
        }
        let duration = |key: &str, default: Duration| -> Result<Duration, CaError> {
            match raw.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::String(s)) if s.is_empty() => Ok(default),
                Some(Value::String(s)) => {
                    parse_go_duration(s).map_err(|e| bad(format!("{key}: {e}")))
                }
                Some(Value::Number(n)) => n
                    .as_u64()
                    .map(Duration::from_nanos)
                    .ok_or_else(|| bad(format!("{key}: not a duration"))),
                Some(_) => Err(bad(format!("{key}: not a duration"))),
            }
        };
        let number = |key: &str, default: f64| -> Result<f64, CaError> {
            match raw.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Number(n)) => n
                    .as_f64()
                    .ok_or_else(|| bad(format!("{key}: not a number"))),
                Some(Value::String(s)) => s
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| bad(format!("{key}: not a number: {s:?}"))),
                Some(_) => Err(bad(format!("{key}: not a number"))),
            }
        };
        let text = |key: &str| -> Result<Option<String>, CaError> {
            match raw.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(bad(format!("{key}: must be a string"))),
            }
        };

        let leaf = duration("LeafCertTTL", DEFAULT_LEAF_TTL)?;
        let intermediate = duration("IntermediateCertTTL", 8760 * HOUR)?;
        let root = duration("RootCertTTL", 87600 * HOUR)?;
        // Consul's test-only `SkipValidate` lifts the lifetime rules (short-lived CAs in tests).
        let skip_validate = matches!(raw.get("SkipValidate"), Some(Value::Bool(true)));
        if leaf.is_zero() {
            return Err(bad("leaf cert TTL must be greater than zero".into()));
        }
        // Only the lifetime rules are skipped; key and limit rules below still apply.
        if !skip_validate && leaf < HOUR {
            return Err(bad(
                "leaf cert TTL must be greater or equal than 1h0m0s".into()
            ));
        }
        if leaf > 8760 * HOUR {
            return Err(bad("leaf cert TTL must be less than 8760h0m0s".into()));
        }
        if !skip_validate && intermediate < 3 * HOUR {
            return Err(bad(
                "Intermediate Cert TTL must be greater or equal than 3h".into(),
            ));
        }
        if !skip_validate && intermediate < 3 * leaf {
            return Err(bad(format!(
                "Intermediate Cert TTL must be greater or equal than 3 * LeafCertTTL (>={})",
                fmt_duration(3 * leaf)
            )));
        }
        if !skip_validate && root < intermediate {
            return Err(bad(format!(
                "root cert TTL is set and is not greater than intermediate cert ttl. root cert ttl: {}, intermediate cert ttl: {}",
                fmt_duration(root),
                fmt_duration(intermediate)
            )));
        }
        let key_type = match text("PrivateKeyType")?.as_deref().unwrap_or("ec") {
            "ec" => KeyType::Ec,
            "rsa" => KeyType::Rsa,
            other => {
                return Err(bad(format!(
                    "private key type must be either 'ec' or 'rsa', got {other:?}"
                )))
            }
        };
        let default_bits = if key_type == KeyType::Ec {
            256.0
        } else {
            2048.0
        };
        let bits_f = number("PrivateKeyBits", default_bits)?;
        let bits = bits_f as u32;
        match (key_type, bits) {
            (KeyType::Ec, 256 | 384) | (KeyType::Rsa, 2048 | 4096) if f64::from(bits) == bits_f => {}
            (KeyType::Ec, 224 | 521) => {
                return Err(bad(format!("EC private key bits {bits} are valid in Consul but not supported by Trellis; use 256 or 384")))
            }
            (KeyType::Ec, _) => return Err(bad(format!("EC key length must be one of (224, 256, 384, 521) bits, got {bits_f}"))),
            (KeyType::Rsa, _) => return Err(bad(format!("RSA key length must be at least 2048 bits and one of (2048, 4096), got {bits_f}"))),
        }
        let per_second = number("CSRMaxPerSecond", 50.0)?;
        if per_second < 0.0 || !per_second.is_finite() {
            return Err(bad("CSRMaxPerSecond must be zero or positive".into()));
        }
        let concurrent = number("CSRMaxConcurrent", 0.0)?;
        if concurrent < 0.0 || concurrent.fract() != 0.0 || concurrent > f64::from(u32::MAX) {
            return Err(bad(
                "CSRMaxConcurrent must be a whole number, zero or positive".into(),
            ));
        }
        let private_key = text("PrivateKey")?;
        let root_cert = text("RootCert")?;
        if root_cert.is_some() && private_key.is_none() {
            return Err(bad(
                "must provide a private key when providing a root cert".into()
            ));
        }
        if private_key.is_some() && root_cert.is_none() {
            return Err(bad(
                "must provide a root cert when providing a private key".into()
            ));
        }

        let pkcs11 = if provider == "pkcs11" {
            if private_key.is_some() {
                return Err(bad("PrivateKey and RootCert are for the consul provider; the pkcs11 key stays in the HSM".into()));
            }
            let need = |key: &str| -> Result<String, CaError> {
                text(key)?.ok_or_else(|| bad(format!("the pkcs11 provider needs {key}")))
            };
            Some(Pkcs11Config {
                module_path: need("ModulePath")?,
                token_label: need("TokenLabel")?,
                pin: need("Pin")?,
                key_label: need("KeyLabel")?,
            })
        } else {
            for key in ["ModulePath", "TokenLabel", "Pin", "KeyLabel"] {
                if raw.contains_key(key) {
                    return Err(bad(format!("{key} is a pkcs11 provider setting")));
                }
            }
            None
        };
        raw.insert("LeafCertTTL".into(), fmt_duration(leaf).into());
        raw.insert(
            "IntermediateCertTTL".into(),
            fmt_duration(intermediate).into(),
        );
        raw.insert("RootCertTTL".into(), fmt_duration(root).into());
        raw.insert("PrivateKeyType".into(), key_type.as_str().into());
        raw.insert("PrivateKeyBits".into(), bits.into());
        raw.insert("CSRMaxPerSecond".into(), per_second.into());
        raw.insert("CSRMaxConcurrent".into(), (concurrent as u64).into());
        Ok(CaConfig {
            provider: provider.to_string(),
            leaf_cert_ttl: leaf,
            intermediate_cert_ttl: intermediate,
            root_cert_ttl: root,
            private_key_type: key_type,
            private_key_bits: bits,
            csr_max_per_second: per_second,
            csr_max_concurrent: concurrent as u32,
            private_key,
            root_cert,
            force_without_cross_signing,
            pkcs11,
            raw,
        })
    }

    /// The `Config` map as the API shows it: secrets (a private key, an HSM PIN) are never
    /// returned.
    pub fn public_config(&self) -> Map<String, Value> {
        let mut m = self.raw.clone();
        Self::strip_secrets(&mut m);
        m
    }

    /// Removes secrets from a stored `Config` map (for the API).
    pub fn strip_secrets(config: &mut Map<String, Value>) {
        for key in SECRET_KEYS {
            config.remove(*key);
        }
    }

    /// Whether moving from `self` to `next` needs a new root (the key or the provider changes).
    pub fn needs_new_root(&self, next: &CaConfig) -> bool {
        self.provider != next.provider
            || self.private_key_type != next.private_key_type
            || self.private_key_bits != next.private_key_bits
            || self.private_key != next.private_key
            || self.root_cert != next.root_cert
            || self
                .pkcs11
                .as_ref()
                .map(|p| (&p.module_path, &p.token_label, &p.key_label))
                != next
                    .pkcs11
                    .as_ref()
                    .map(|p| (&p.module_path, &p.token_label, &p.key_label))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<CaConfig, CaError> {
        CaConfig::parse("consul", v.as_object().unwrap(), false)
    }

    #[test]
    fn defaults_match_consul() {
        let c = CaConfig::default_consul();
        assert_eq!(c.leaf_cert_ttl, DEFAULT_LEAF_TTL);
        assert_eq!(c.intermediate_cert_ttl, 8760 * HOUR);
        assert_eq!(c.root_cert_ttl, 87600 * HOUR);
        assert_eq!((c.private_key_type, c.private_key_bits), (KeyType::Ec, 256));
        assert_eq!(c.csr_max_per_second, 50.0);
        assert_eq!(c.raw["LeafCertTTL"], "72h");
        assert_eq!(c.raw["IntermediateCertTTL"], "8760h");
    }

    #[test]
    fn snake_case_keys_and_weak_typing() {
        let c = parse(json!({"leaf_cert_ttl": "24h", "private_key_type": "rsa", "private_key_bits": "4096", "csr_max_per_second": 0, "csr_max_concurrent": 4})).unwrap();
        assert_eq!(c.leaf_cert_ttl, 24 * HOUR);
        assert_eq!(
            (c.private_key_type, c.private_key_bits),
            (KeyType::Rsa, 4096)
        );
        assert_eq!(c.csr_max_concurrent, 4);
    }

    #[test]
    fn every_rule_has_a_clear_refusal() {
        for (cfg, needle) in [
            (json!({"LeafCertTTL": "30m"}), "greater or equal than 1h"),
            (json!({"LeafCertTTL": "9000h"}), "less than 8760h"),
            (
                json!({"IntermediateCertTTL": "2h"}),
                "greater or equal than 3h",
            ),
            (
                json!({"LeafCertTTL": "24h", "IntermediateCertTTL": "48h"}),
                "3 * LeafCertTTL (>=72h)",
            ),
            (json!({"RootCertTTL": "100h"}), "root cert TTL"),
            (json!({"PrivateKeyType": "dsa"}), "either 'ec' or 'rsa'"),
            (
                json!({"PrivateKeyBits": 1024, "PrivateKeyType": "rsa"}),
                "RSA key length",
            ),
            (json!({"PrivateKeyBits": 255}), "EC key length"),
            (json!({"PrivateKeyBits": 224}), "not supported by Trellis"),
            (json!({"CSRMaxPerSecond": -1}), "zero or positive"),
            (json!({"RootCert": "x"}), "must provide a private key"),
            (json!({"LeafCertTTL": "soon"}), "LeafCertTTL"),
            (json!({"Bogus": 1}), "unknown CA config key"),
            (
                json!({"LeafCertTTL": "0s", "SkipValidate": true}),
                "greater than zero",
            ),
        ] {
            let err = parse(cfg.clone()).unwrap_err().to_string();
            assert!(err.contains(needle), "{cfg}: {err}");
        }
        assert!(CaConfig::parse("vault", &Map::new(), false).is_err());
        let pkcs = |v: Value| CaConfig::parse("pkcs11", v.as_object().unwrap(), false);
        let missing = json!({"ModulePath": "/m.so", "TokenLabel": "t", "KeyLabel": "k"});
        assert!(pkcs(missing).unwrap_err().to_string().contains("needs Pin"));
        assert!(parse(json!({"Pin": "1234"}))
            .unwrap_err()
            .to_string()
            .contains("pkcs11 provider setting"));
        let ok =
            pkcs(json!({"ModulePath": "/m.so", "TokenLabel": "t", "KeyLabel": "k", "Pin": "1234"}))
                .unwrap();
        assert!(!ok.public_config().contains_key("Pin"));
        assert!(!format!("{:?}", ok.pkcs11).contains("1234"));
    }

    #[test]
    fn skip_validate_lifts_only_the_lifetime_rules() {
        let c = parse(json!({"LeafCertTTL": "2s", "SkipValidate": true})).unwrap();
        assert_eq!(c.leaf_cert_ttl, Duration::from_secs(2));
        assert!(
            parse(json!({"LeafCertTTL": "2s", "SkipValidate": true, "PrivateKeyType": "dsa"}))
                .is_err()
        );
    }

    #[test]
    fn the_private_key_is_never_shown() {
        let c = parse(json!({"PrivateKey": "secret", "RootCert": "cert"})).unwrap();
        assert!(!c.public_config().contains_key("PrivateKey"));
        assert_eq!(c.public_config()["RootCert"], "cert");
    }
}
