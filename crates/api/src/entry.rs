//! Typed views of the config entry kinds Trellis stores, read with the one forgiving decoder
//! ([`Lenient`]). A [`ConfigEntry`] stays what is stored, logged, sent and served; a view is
//! what every reader of its fields works from.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::lenient::{decode_object, Field, Lenient, Text};
use crate::{config_kind, ConfigEntry};

/// A `MeshGateway` block: its `Mode`.
#[derive(Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct MeshGatewaySpec {
    /// `local`, `remote`, `none` or unset.
    pub mode: Lenient<String>,
}

impl Field for MeshGatewaySpec {
    const EXPECTED: &'static str = "an object";
    const OBJECT: bool = true;
}

/// A `service-defaults` entry, as far as Trellis reads it.
#[derive(Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceDefaults {
    /// `tcp`, `http`, `http2` or `grpc`.
    pub protocol: Lenient<String>,
    /// Proxy mode.
    pub mode: Lenient<String>,
    /// Mesh gateway mode.
    pub mesh_gateway: Lenient<MeshGatewaySpec>,
    /// Expose configuration, opaque.
    pub expose: Lenient<Map<String, Value>>,
    /// Free-form metadata.
    pub meta: Lenient<Map<String, Value>>,
}

/// The `proxy-defaults` entry (named `global`), as far as Trellis reads it.
#[derive(Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ProxyDefaults {
    /// The opaque proxy configuration every proxy starts from.
    pub config: Lenient<Map<String, Value>>,
    /// A top-level `Protocol` (validated; the protocol proxies use is `Config.protocol`).
    pub protocol: Lenient<String>,
    /// Proxy mode.
    pub mode: Lenient<String>,
    /// Mesh gateway mode.
    pub mesh_gateway: Lenient<MeshGatewaySpec>,
    /// Expose configuration, opaque.
    pub expose: Lenient<Map<String, Value>>,
}

impl ProxyDefaults {
    /// `Config.protocol`, else `Config.Protocol` (the lower-case key first; an empty or `null`
    /// one is not set), as Consul's case-insensitive decoding of the opaque map finds it.
    pub fn config_protocol(&self) -> Lenient<String> {
        let Some(config) = self.config.get() else {
            return Lenient::Absent;
        };
        match Lenient::field(config, "protocol") {
            Lenient::Absent => Lenient::field(config, "Protocol"),
            found => found,
        }
    }
}

/// The protocol the config entries give a service, as a name; `None` when neither sets one.
///
/// The one rule every reader uses: `service-defaults`' `Protocol` when set, else
/// `proxy-defaults`' `Config.protocol` ([`ProxyDefaults::config_protocol`]). Missing, `null`
/// and `""` are not set and fall through, as Consul's empty string does. A value that is set
/// but not a string wins as `tcp` (writes refuse it, so only old or foreign data has one).
pub fn configured_protocol(
    service_defaults: Option<&ServiceDefaults>,
    proxy_defaults: Option<&ProxyDefaults>,
) -> Option<String> {
    let setting = |p: &Lenient<String>| match p {
        Lenient::Absent => None,
        Lenient::Set(s) => Some(s.clone()),
        Lenient::Invalid(_) => Some("tcp".to_string()),
    };
    service_defaults
        .and_then(|sd| setting(&sd.protocol))
        .or_else(|| proxy_defaults.and_then(|pd| setting(&pd.config_protocol())))
}

/// An intention's or a permission's action.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ActionSpec {
    /// `allow`.
    Allow,
    /// `deny`.
    Deny,
}

impl Field for ActionSpec {
    const EXPECTED: &'static str = "\"allow\" or \"deny\"";
    fn problem(at: &str, value: &Value) -> String {
        format!("{at} must be \"allow\" or \"deny\", not {value}")
    }
}

/// One header condition of an L7 permission.
#[derive(Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct HeaderSpec {
    /// Header name.
    pub name: Lenient<String>,
    /// Present (`true`); `false` is Go's zero value, no test.
    pub present: Lenient<bool>,
    /// Equal to.
    pub exact: Lenient<String>,
    /// Starts with.
    pub prefix: Lenient<String>,
    /// Ends with.
    pub suffix: Lenient<String>,
    /// Matches (a regular expression).
    pub regex: Lenient<String>,
    /// Negates the test.
    pub invert: Lenient<bool>,
}

impl Field for HeaderSpec {
    const EXPECTED: &'static str = "an object";
    const OBJECT: bool = true;
}

/// The HTTP conditions of an L7 permission.
#[derive(Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct HttpSpec {
    /// Path equal to.
    pub path_exact: Lenient<String>,
    /// Path starts with.
    pub path_prefix: Lenient<String>,
    /// Path matches.
    pub path_regex: Lenient<String>,
    /// Methods (any case; `""` is a value, and not a method).
    pub methods: Lenient<Vec<Lenient<Text>>>,
    /// Header conditions.
    pub header: Lenient<Vec<Lenient<HeaderSpec>>>,
}

impl Field for HttpSpec {
    const EXPECTED: &'static str = "an object";
    const OBJECT: bool = true;
}

/// One L7 permission, with the JSON it was read from.
#[derive(Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct PermissionSpec {
    /// What a matching request gets.
    pub action: Lenient<ActionSpec>,
    /// Its HTTP conditions.
    #[serde(rename = "HTTP")]
    pub http: Lenient<HttpSpec>,
    /// The permission as given (what the legacy intentions API shows).
    #[serde(skip)]
    pub raw: Value,
}

impl Field for PermissionSpec {
    const EXPECTED: &'static str = "an object";
    const OBJECT: bool = true;
    fn decode(value: &Value) -> Option<Self> {
        let mut p = decode_object::<PermissionSpec>(value)?;
        p.raw = value.clone();
        Some(p)
    }
}

/// One source of a `service-intentions` entry, with the object it was read from.
#[derive(Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct SourceSpec {
    /// Source service name or `*`.
    pub name: Lenient<String>,
    /// Namespace (only `default` in this edition).
    pub namespace: Lenient<String>,
    /// Partition (only `default` in this edition).
    pub partition: Lenient<String>,
    /// Cluster peer (not supported).
    pub peer: Lenient<String>,
    /// Sameness group (not supported).
    pub sameness_group: Lenient<String>,
    /// L4 action.
    pub action: Lenient<ActionSpec>,
    /// L7 permissions.
    pub permissions: Lenient<Vec<Lenient<PermissionSpec>>>,
    /// Consul's precedence, computed on write.
    pub precedence: Lenient<u64>,
    /// Source type (`consul`).
    #[serde(rename = "Type")]
    pub source_type: Lenient<String>,
    /// Free-form description.
    pub description: Lenient<String>,
    /// The legacy API's UUID.
    #[serde(rename = "LegacyID")]
    pub legacy_id: Lenient<String>,
    /// The legacy API's per-intention metadata.
    pub legacy_meta: Lenient<Map<String, Value>>,
    /// The legacy API's creation time.
    pub legacy_create_time: Lenient<String>,
    /// The legacy API's update time.
    pub legacy_update_time: Lenient<String>,
    /// The source as given (its keys, and the legacy fields exactly as stored).
    #[serde(skip)]
    pub raw: Map<String, Value>,
}

impl Field for SourceSpec {
    const EXPECTED: &'static str = "an object";
    const OBJECT: bool = true;
    fn decode(value: &Value) -> Option<Self> {
        let mut s = decode_object::<SourceSpec>(value)?;
        s.raw = value.as_object().cloned().unwrap_or_default();
        Some(s)
    }
}

/// The fields of a source that must be strings when set (`null` is not set).
const SOURCE_STRING_FIELDS: [&str; 4] = ["Name", "Action", "Description", "Type"];

impl SourceSpec {
    /// Every field a source may carry.
    pub const FIELDS: [&'static str; 14] = [
        "Name",
        "Namespace",
        "Partition",
        "Peer",
        "SamenessGroup",
        "Action",
        "Permissions",
        "Precedence",
        "Type",
        "Description",
        "LegacyID",
        "LegacyMeta",
        "LegacyCreateTime",
        "LegacyUpdateTime",
    ];

    /// The fields only the legacy intentions API writes.
    pub const LEGACY_FIELDS: [&'static str; 4] = [
        "LegacyID",
        "LegacyMeta",
        "LegacyCreateTime",
        "LegacyUpdateTime",
    ];

    /// Type problems of this source at `at` (`Sources[0]`): a string field set to something
    /// else. (Action's value, Permissions and what is inside are the intentions engine's to
    /// word.)
    pub fn problems(&self, at: &str, problems: &mut Vec<String>) {
        for key in SOURCE_STRING_FIELDS {
            let mistyped = match key {
                "Name" => self.name.is_invalid(),
                // Any string reaches the engine, which words a wrong one.
                "Action" => matches!(&self.action, Lenient::Invalid(v) if !v.is_string()),
                "Description" => self.description.is_invalid(),
                _ => self.source_type.is_invalid(),
            };
            if mistyped {
                problems.push(format!("{at}.{key} must be a string"));
            }
        }
    }
}

/// A `service-intentions` entry.
#[derive(Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceIntentions {
    /// Entry metadata (what legacy intentions without their own show).
    pub meta: Lenient<Map<String, Value>>,
    /// The sources, in order.
    pub sources: Lenient<Vec<Lenient<SourceSpec>>>,
}

impl ServiceIntentions {
    /// The sources that are objects, with their positions.
    pub fn source_specs(&self) -> impl Iterator<Item = (usize, &SourceSpec)> {
        self.sources
            .get()
            .into_iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, s)| s.get().map(|s| (i, s)))
    }

    /// Type problems of the sources: one that is not an object, and [`SourceSpec::problems`].
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (i, src) in self.sources.get().into_iter().flatten().enumerate() {
            let at = format!("Sources[{i}]");
            match src {
                Lenient::Set(s) => s.problems(&at, &mut problems),
                _ => problems.push(format!("{at} must be an object")),
            }
        }
        problems
    }
}

/// A config entry read as its kind.
#[derive(Debug, Clone, PartialEq)]
pub enum TypedEntry {
    /// `service-defaults`.
    ServiceDefaults(ServiceDefaults),
    /// `proxy-defaults`.
    ProxyDefaults(ProxyDefaults),
    /// `service-intentions`.
    ServiceIntentions(ServiceIntentions),
}

impl TypedEntry {
    /// The type problems of the fields writes check (a `Protocol` that is not a string; a
    /// source that is not an object or a string field of one that is not a string).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match self {
            TypedEntry::ServiceDefaults(sd) => sd.protocol.check("", "Protocol", &mut problems),
            TypedEntry::ProxyDefaults(pd) => pd.protocol.check("", "Protocol", &mut problems),
            TypedEntry::ServiceIntentions(si) => problems = si.problems(),
        }
        problems
    }
}

fn view<T: serde::de::DeserializeOwned + Default>(body: &Map<String, Value>) -> T {
    T::deserialize(&Value::Object(body.clone())).unwrap_or_default()
}

impl ConfigEntry {
    /// The entry read as its kind, with its type problems ([`TypedEntry::problems`]); `None`
    /// for a kind Trellis does not store.
    pub fn typed(&self) -> Option<(TypedEntry, Vec<String>)> {
        let typed = match self.kind.as_str() {
            config_kind::SERVICE_DEFAULTS => TypedEntry::ServiceDefaults(self.service_defaults()),
            config_kind::PROXY_DEFAULTS => TypedEntry::ProxyDefaults(self.proxy_defaults()),
            config_kind::SERVICE_INTENTIONS => {
                TypedEntry::ServiceIntentions(self.service_intentions())
            }
            _ => return None,
        };
        let problems = typed.problems();
        Some((typed, problems))
    }

    /// The body read as `service-defaults` (whatever the entry's kind).
    pub fn service_defaults(&self) -> ServiceDefaults {
        view(&self.body)
    }

    /// The body read as `proxy-defaults` (whatever the entry's kind).
    pub fn proxy_defaults(&self) -> ProxyDefaults {
        view(&self.body)
    }

    /// The body read as `service-intentions` (whatever the entry's kind).
    pub fn service_intentions(&self) -> ServiceIntentions {
        view(&self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(kind: &str, body: Value) -> ConfigEntry {
        ConfigEntry {
            kind: kind.into(),
            name: "x".into(),
            body: body.as_object().cloned().unwrap_or_default(),
            ..Default::default()
        }
    }

    #[test]
    fn kinds_read_as_views_with_their_problems() {
        let (typed, problems) = entry(
            config_kind::SERVICE_DEFAULTS,
            json!({"Protocol": 7, "Mode": 1, "MeshGateway": {"Mode": "local"}}),
        )
        .typed()
        .unwrap();
        assert_eq!(problems, vec!["Protocol must be a string"]);
        let TypedEntry::ServiceDefaults(sd) = typed else {
            panic!("service-defaults")
        };
        assert!(sd.mode.is_invalid(), "kept, not a problem writes check");
        assert_eq!(sd.mesh_gateway.get().unwrap().mode.text(), "local");

        let (_, problems) = entry(
            config_kind::SERVICE_INTENTIONS,
            json!({"Sources": [7, {"Name": 1, "Action": "maybe", "Type": null}, {"Action": []}]}),
        )
        .typed()
        .unwrap();
        assert_eq!(
            problems,
            vec![
                "Sources[0] must be an object",
                "Sources[1].Name must be a string",
                "Sources[2].Action must be a string",
            ]
        );
        assert!(entry("mesh", json!({})).typed().is_none());
    }

    #[test]
    fn sources_keep_what_they_were_read_from() {
        let si = entry(
            config_kind::SERVICE_INTENTIONS,
            json!({"Sources": [{"Name": "web", "LegacyID": null, "Permissions": [
                {"Action": "allow", "HTTP": {"PathExact": "/"}, "Extra": 1}, "x"]}]}),
        )
        .service_intentions();
        let (_, src) = si.source_specs().next().unwrap();
        assert!(src.legacy_id.is_absent());
        assert_eq!(src.raw.get("LegacyID"), Some(&Value::Null));
        let perms = src.permissions.get().unwrap();
        assert_eq!(perms[0].get().unwrap().raw["Extra"], 1);
        assert_eq!(perms[1], Lenient::Invalid(json!("x")));
    }

    #[test]
    fn protocol_falls_through_on_absent_null_and_empty() {
        let pd = |config: Value| ProxyDefaults {
            config: Lenient::from_value(config),
            ..Default::default()
        };
        let sd = |protocol: Value| ServiceDefaults {
            protocol: Lenient::from_value(protocol),
            ..Default::default()
        };
        let global = pd(json!({"protocol": "http"}));
        for p in [json!(null), json!("")] {
            assert_eq!(
                configured_protocol(Some(&sd(p)), Some(&global)).as_deref(),
                Some("http")
            );
        }
        assert_eq!(
            configured_protocol(Some(&sd(json!("grpc"))), Some(&global)).as_deref(),
            Some("grpc")
        );
        assert_eq!(
            configured_protocol(Some(&sd(json!(7))), Some(&global)).as_deref(),
            Some("tcp"),
            "set but mistyped wins as tcp"
        );
        assert_eq!(
            configured_protocol(
                None,
                Some(&pd(json!({"protocol": "", "Protocol": "http2"})))
            )
            .as_deref(),
            Some("http2")
        );
        assert_eq!(configured_protocol(None, Some(&pd(json!({})))), None);
        assert_eq!(configured_protocol(None, None), None);
    }
}
