//! `service-intentions` entries: full validation, the flattened view the legacy intentions API
//! serves, and that API's single-intention writes.
//!
//! The entries are the source of truth; an intention is one source of one entry. The legacy
//! API's writes ([`Command::IntentionUpsert`], [`Command::IntentionDelete`]) are applied here
//! as a change to the entries around the one intention, through the same validation as a
//! config-entry write.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use trellis_api::{config_kind, ConfigEntry, Intention, ZERO_TIME};

use crate::command::{normalize_config_entry, validate_config_entry, Applied};
use crate::tables::Tables;
use crate::watch::WatchKey;

/// The fields only the legacy intentions API writes.
const LEGACY_FIELDS: [&str; 4] = [
    "LegacyID",
    "LegacyMeta",
    "LegacyCreateTime",
    "LegacyUpdateTime",
];

/// Every field a source may carry.
const SOURCE_FIELDS: [&str; 14] = [
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

/// Which intention a legacy delete removes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum IntentionRef {
    /// The intention from `source` to `destination`.
    Exact {
        /// Source name or `*`.
        source: String,
        /// Destination name or `*`.
        destination: String,
    },
    /// The intention with this legacy ID.
    Id(String),
}

/// Validates a `service-intentions` entry completely: the shape of each source, then every
/// rule of the intentions engine. All problems are reported together.
pub(crate) fn validate(entry: &ConfigEntry) -> Result<(), String> {
    let mut problems = Vec::new();
    let sources = entry.body.get("Sources").unwrap_or(&Value::Null);
    for (i, src) in sources.as_array().into_iter().flatten().enumerate() {
        let Some(obj) = src.as_object() else {
            problems.push(format!("Sources[{i}] must be an object"));
            continue;
        };
        for key in obj.keys() {
            if !SOURCE_FIELDS.contains(&key.as_str()) {
                problems.push(format!("Sources[{i}]: unknown field {key:?}"));
            }
        }
        let text = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("");
        for k in ["Namespace", "Partition"] {
            if !matches!(text(k), "" | "default") {
                problems.push(format!(
                    "Sources[{i}].{k}: namespaces and partitions are not supported by this \
                     edition (only \"default\")"
                ));
            }
        }
        for k in ["Peer", "SamenessGroup"] {
            if !text(k).is_empty() {
                problems.push(format!(
                    "Sources[{i}].{k}: cluster peering is not supported by this version"
                ));
            }
        }
        if !matches!(text("Type"), "" | "consul") {
            problems.push(format!(
                "Sources[{i}].Type must be \"consul\", not {:?}",
                text("Type")
            ));
        }
        for k in ["Name", "Action", "Description", "Type"] {
            if obj.get(k).is_some_and(|v| !v.is_string() && !v.is_null()) {
                problems.push(format!("Sources[{i}].{k} must be a string"));
            }
        }
    }
    if let Err(more) = trellis_intentions::parse_entry(&entry.name, sources) {
        problems.extend(more);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Legacy fields may only be echoed back unchanged by a config-entry write (a read-modify-write
/// of an entry the legacy API wrote); setting or changing them is the legacy API's job.
pub(crate) fn check_legacy_fields(
    entry: &ConfigEntry,
    existing: Option<&ConfigEntry>,
) -> Result<(), String> {
    // The stored entry's sources by name (the first of a name, as `find_source` finds it),
    // indexed once and only when a source carries a legacy field: a lookup per source rather
    // than a scan of the stored entry each.
    let mut stored_by_name: Option<HashMap<&str, &Map<String, Value>>> = None;
    for (i, src) in sources(entry).iter().enumerate() {
        if LEGACY_FIELDS.iter().all(|field| src.get(field).is_none()) {
            continue;
        }
        let name = src.get("Name").and_then(Value::as_str).unwrap_or("");
        let stored = stored_by_name
            .get_or_insert_with(|| existing.map(sources_by_name).unwrap_or_default())
            .get(name)
            .copied();
        for field in LEGACY_FIELDS {
            let Some(v) = src.get(field) else { continue };
            if stored.and_then(|s| s.get(field)) != Some(v) {
                return Err(format!(
                    "Sources[{i}].{field} cannot be set: it is managed by the legacy \
                     /v1/connect/intentions API"
                ));
            }
        }
    }
    Ok(())
}

fn sources(entry: &ConfigEntry) -> &[Value] {
    entry
        .body
        .get("Sources")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// An entry's sources by name; the first wins, as [`find_source`] finds it.
fn sources_by_name(entry: &ConfigEntry) -> HashMap<&str, &Map<String, Value>> {
    let mut out = HashMap::new();
    for obj in sources(entry).iter().filter_map(Value::as_object) {
        if let Some(name) = obj.get("Name").and_then(Value::as_str) {
            out.entry(name).or_insert(obj);
        }
    }
    out
}

fn find_source<'a>(entry: &'a ConfigEntry, name: &str) -> Option<(usize, &'a Map<String, Value>)> {
    sources(entry).iter().enumerate().find_map(|(i, s)| {
        let obj = s.as_object()?;
        (obj.get("Name").and_then(Value::as_str) == Some(name)).then_some((i, obj))
    })
}

/// The intentions one entry holds, flattened as the legacy API shows them.
pub(crate) fn flatten(entry: &ConfigEntry) -> impl Iterator<Item = Intention> + '_ {
    let entry_meta = entry.body.get("Meta");
    sources(entry).iter().filter_map(move |src| {
        let obj = src.as_object()?;
        let text = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let time = |k: &str| {
            let t = text(k);
            if t.is_empty() {
                ZERO_TIME.to_string()
            } else {
                t
            }
        };
        let meta = obj
            .get("LegacyMeta")
            .or(entry_meta)
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Some(Intention {
            id: text("LegacyID"),
            description: text("Description"),
            source_ns: "default".into(),
            source_name: text("Name"),
            destination_ns: "default".into(),
            destination_name: entry.name.clone(),
            source_partition: "default".into(),
            destination_partition: "default".into(),
            source_type: "consul".into(),
            action: text("Action"),
            permissions: obj
                .get("Permissions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            meta,
            precedence: obj.get("Precedence").and_then(Value::as_u64).unwrap_or(0) as u32,
            created_at: time("LegacyCreateTime"),
            updated_at: time("LegacyUpdateTime"),
            create_index: entry.create_index,
            modify_index: entry.modify_index,
        })
    })
}

/// Consul's legacy order: precedence descending, then source and destination names.
pub(crate) fn sort(list: &mut [Intention]) {
    list.sort_by(|a, b| {
        b.precedence
            .cmp(&a.precedence)
            .then_with(|| a.source_name.cmp(&b.source_name))
            .then_with(|| a.destination_name.cmp(&b.destination_name))
    });
}

/// Every intention, in Consul's legacy order.
pub(crate) fn list(t: &Tables) -> Vec<Intention> {
    let mut out: Vec<Intention> = entries(t).flat_map(flatten).collect();
    sort(&mut out);
    out
}

/// The intention that applies when `name` is the destination (`by_source` false) or the
/// source, for each name: exact and wildcard matches, in evaluation order.
pub(crate) fn matches(
    t: &Tables,
    by_source: bool,
    names: &[String],
) -> BTreeMap<String, Vec<Intention>> {
    names
        .iter()
        .map(|name| {
            let mut found: Vec<Intention> = if by_source {
                entries(t)
                    .flat_map(flatten)
                    .filter(|i| i.source_name == *name || i.source_name == "*")
                    .collect()
            } else {
                [name.as_str(), "*"]
                    .into_iter()
                    .filter_map(|d| entry(t, d))
                    .flat_map(flatten)
                    .collect()
            };
            sort(&mut found);
            (name.clone(), found)
        })
        .collect()
}

/// The intention from `source` to `destination`, if any.
pub(crate) fn exact(t: &Tables, source: &str, destination: &str) -> Option<Intention> {
    entry(t, destination).and_then(|e| flatten(e).find(|i| i.source_name == source))
}

/// The intention with this legacy ID, if any.
pub(crate) fn by_id(t: &Tables, id: &str) -> Option<Intention> {
    entries(t).flat_map(flatten).find(|i| i.id == id)
}

fn entries(t: &Tables) -> impl Iterator<Item = &ConfigEntry> {
    let kind = config_kind::SERVICE_INTENTIONS.to_string();
    t.config
        .range((kind.clone(), String::new())..)
        .take_while(move |(k, _)| k.0 == kind)
        .map(|(_, e)| e)
}

fn entry<'a>(t: &'a Tables, name: &str) -> Option<&'a ConfigEntry> {
    t.config.get(&(
        config_kind::SERVICE_INTENTIONS.to_string(),
        name.to_string(),
    ))
}

fn describe(source: &str, destination: &str) -> String {
    format!("{source} => {destination}")
}

/// An entry with `source` set (replacing one of the same name), or a new entry.
fn with_source(
    existing: Option<&ConfigEntry>,
    destination: &str,
    source: Map<String, Value>,
) -> ConfigEntry {
    let mut entry = existing.cloned().unwrap_or_else(|| ConfigEntry {
        kind: config_kind::SERVICE_INTENTIONS.into(),
        name: destination.into(),
        ..Default::default()
    });
    let name = source
        .get("Name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let list = entry
        .body
        .entry("Sources")
        .or_insert_with(|| Value::Array(Vec::new()));
    if !list.is_array() {
        *list = Value::Array(Vec::new());
    }
    let list = list.as_array_mut().expect("made an array above");
    match list
        .iter_mut()
        .find(|s| s.get("Name").and_then(Value::as_str) == Some(name.as_str()))
    {
        Some(slot) => *slot = Value::Object(source),
        None => list.push(Value::Object(source)),
    }
    normalize_config_entry(&mut entry);
    entry
}

/// The entry without `source`, or `None` when it was the last one.
fn without_source(existing: &ConfigEntry, source: &str) -> Option<ConfigEntry> {
    let mut entry = existing.clone();
    if let Some(Value::Array(list)) = entry.body.get_mut("Sources") {
        list.retain(|s| s.get("Name").and_then(Value::as_str) != Some(source));
        if list.is_empty() {
            return None;
        }
    }
    Some(entry)
}

impl Tables {
    /// Applies [`crate::Command::IntentionUpsert`]: validation first, so a refusal changes
    /// nothing.
    pub(crate) fn intention_upsert(
        &mut self,
        index: u64,
        destination: String,
        mut source: Map<String, Value>,
        create_only: bool,
        replace_id: Option<String>,
        keys: &mut Vec<WatchKey>,
    ) -> Applied {
        let name = source
            .get("Name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let current = exact(self, &name, &destination);
        // The intention being replaced, if this write names one by legacy ID.
        let old = match &replace_id {
            None => None,
            Some(id) => match by_id(self, id) {
                Some(i) => Some(i),
                None => return Applied::NotFound("Intention not found".into()),
            },
        };
        if let Some(cur) = &current {
            let same = old.as_ref().is_some_and(|o| o.id == cur.id);
            if create_only || (old.is_some() && !same) {
                return Applied::Rejected(format!(
                    "duplicate intention found: {}",
                    describe(&name, &destination)
                ));
            }
        }
        // Keep the legacy identity and creation time of what is replaced.
        let kept = old.as_ref().or(current.as_ref());
        if let Some(stored) = kept.and_then(|k| {
            entry(self, &k.destination_name).and_then(|e| find_source(e, &k.source_name))
        }) {
            for field in ["LegacyID", "LegacyCreateTime", "LegacyMeta"] {
                if !source.contains_key(field) {
                    if let Some(v) = stored.1.get(field) {
                        source.insert(field.into(), v.clone());
                    }
                }
            }
        }
        // Everything the final write checks is checked before the first change, so that a
        // refused move leaves the old intention where it was.
        let new_entry = with_source(entry(self, &destination), &destination, source.clone());
        if let Err(e) = validate_config_entry(&new_entry).and_then(|()| {
            self.check_l7_protocols(
                config_kind::SERVICE_INTENTIONS,
                &destination,
                Some(&new_entry),
            )
        }) {
            return Applied::Rejected(e);
        }
        // A legacy update may move the intention to another pair: drop it from where it was.
        if let Some(o) = old {
            if (o.source_name.as_str(), o.destination_name.as_str())
                != (name.as_str(), destination.as_str())
            {
                if let Err(e) =
                    self.remove_intention(index, &o.source_name, &o.destination_name, keys)
                {
                    return Applied::Rejected(e);
                }
            }
        }
        // Built again: the removal above may have changed this destination's entry.
        let new_entry = with_source(entry(self, &destination), &destination, source);
        match self.config_set(index, new_entry, None, true, keys) {
            Ok(a) => a,
            Err(e) => Applied::Rejected(e),
        }
    }

    /// Applies [`crate::Command::IntentionDelete`].
    pub(crate) fn intention_delete(
        &mut self,
        index: u64,
        target: IntentionRef,
        keys: &mut Vec<WatchKey>,
    ) -> Applied {
        let (source, destination) = match target {
            IntentionRef::Exact {
                source,
                destination,
            } => (source, destination),
            IntentionRef::Id(id) => match by_id(self, &id) {
                Some(i) => (i.source_name, i.destination_name),
                None => return Applied::NotFound("Intention not found".into()),
            },
        };
        match self.remove_intention(index, &source, &destination, keys) {
            Ok(()) => Applied::Done,
            Err(e) => Applied::Rejected(e),
        }
    }

    /// Removes one intention (and its entry with its last source). Refused, changing nothing,
    /// when what remains would break a rule.
    fn remove_intention(
        &mut self,
        index: u64,
        source: &str,
        destination: &str,
        keys: &mut Vec<WatchKey>,
    ) -> Result<(), String> {
        let Some(existing) = entry(self, destination) else {
            return Ok(());
        };
        if find_source(existing, source).is_none() {
            return Ok(());
        }
        match without_source(existing, source) {
            Some(e) => self.config_set(index, e, None, true, keys).map(|_| ()),
            None => match self.config_delete(
                config_kind::SERVICE_INTENTIONS.into(),
                destination.into(),
                None,
                keys,
            ) {
                Applied::Rejected(e) => Err(e),
                _ => Ok(()),
            },
        }
    }
}

fn has_l7(entry: &ConfigEntry) -> bool {
    sources(entry).iter().any(|s| {
        s.get("Permissions")
            .and_then(Value::as_array)
            .is_some_and(|p| !p.is_empty())
    })
}

impl Tables {
    fn config_body(&self, kind: &str, name: &str) -> Option<Value> {
        self.config
            .get(&(kind.to_string(), name.to_string()))
            .map(|e| serde_json::to_value(e).expect("config entries serialise"))
    }

    /// Consul's service-graph rule: L7 permissions need a destination that speaks an
    /// HTTP-based protocol. Checked for a proposed `service-intentions`, `service-defaults` or
    /// `proxy-defaults` write (`proposed`), or the deletion of one (`proposed` is `None`).
    pub(crate) fn check_l7_protocols(
        &self,
        kind: &str,
        name: &str,
        proposed: Option<&ConfigEntry>,
    ) -> Result<(), String> {
        let as_value = |e: &ConfigEntry| serde_json::to_value(e).expect("config entries serialise");
        let proxy_now = self.config_body(config_kind::PROXY_DEFAULTS, "global");
        let check = |service: &str, service_defaults: Option<Value>, proxy: Option<&Value>| {
            let p = trellis_intentions::resolve_protocol(service_defaults.as_ref(), proxy);
            if p.is_l7() {
                Ok(())
            } else {
                Err(format!(
                    "service {service:?} has protocol {:?}, which is incompatible with L7 \
                     intentions permissions",
                    p.as_str()
                ))
            }
        };
        match kind {
            config_kind::SERVICE_INTENTIONS => match proposed {
                Some(e) if name != "*" && has_l7(e) => check(
                    name,
                    self.config_body(config_kind::SERVICE_DEFAULTS, name),
                    proxy_now.as_ref(),
                ),
                _ => Ok(()),
            },
            config_kind::SERVICE_DEFAULTS => match entry(self, name) {
                Some(ixn) if has_l7(ixn) => check(name, proposed.map(as_value), proxy_now.as_ref()),
                _ => Ok(()),
            },
            config_kind::PROXY_DEFAULTS => {
                let proxy = proposed.map(as_value);
                for ixn in entries(self).filter(|e| e.name != "*" && has_l7(e)) {
                    check(
                        &ixn.name,
                        self.config_body(config_kind::SERVICE_DEFAULTS, &ixn.name),
                        proxy.as_ref(),
                    )?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
