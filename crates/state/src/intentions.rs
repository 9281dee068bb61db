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
use trellis_api::lenient::Lenient;
use trellis_api::{
    config_kind, ActionSpec, ConfigEntry, Intention, ProxyDefaults, ServiceDefaults,
    ServiceIntentions, SourceSpec, ZERO_TIME,
};

use crate::command::{normalize_config_entry, validate_config_entry, Applied};
use crate::tables::Tables;
use crate::watch::WatchKey;

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

/// Validates a `service-intentions` entry (`view` is its typed view) completely: the shape of
/// each source, then every rule of the intentions engine. All problems are reported together.
pub(crate) fn validate(entry: &ConfigEntry, view: &ServiceIntentions) -> Result<(), String> {
    let mut problems = Vec::new();
    for (i, src) in view.sources.get().into_iter().flatten().enumerate() {
        let at = format!("Sources[{i}]");
        let Lenient::Set(src) = src else {
            problems.push(format!("{at} must be an object"));
            continue;
        };
        for key in src.raw.keys() {
            if !SourceSpec::FIELDS.contains(&key.as_str()) {
                problems.push(format!("{at}: unknown field {key:?}"));
            }
        }
        for (k, v) in [("Namespace", &src.namespace), ("Partition", &src.partition)] {
            if !matches!(v.text(), "" | "default") {
                problems.push(format!(
                    "{at}.{k}: namespaces and partitions are not supported by this \
                     edition (only \"default\")"
                ));
            }
        }
        for (k, v) in [("Peer", &src.peer), ("SamenessGroup", &src.sameness_group)] {
            if !v.text().is_empty() {
                problems.push(format!(
                    "{at}.{k}: cluster peering is not supported by this version"
                ));
            }
        }
        let ty = src.source_type.text();
        if !matches!(ty, "" | "consul") {
            problems.push(format!("{at}.Type must be \"consul\", not {ty:?}"));
        }
        src.problems(&at, &mut problems);
    }
    if let Err(more) = trellis_intentions::parse_intentions(&entry.name, view) {
        problems.extend(more);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Legacy fields may only be echoed back unchanged by a config-entry write (a read-modify-write
/// of an entry the legacy API wrote); setting or changing them is the legacy API's job. They
/// are compared as given, so a `null` one counts as set.
pub(crate) fn check_legacy_fields(
    entry: &ConfigEntry,
    existing: Option<&ConfigEntry>,
) -> Result<(), String> {
    let view = entry.service_intentions();
    let stored_view = existing.map(ConfigEntry::service_intentions);
    // The stored entry's sources by name (the first of a name, as `find_source` finds it),
    // indexed once and only when a source carries a legacy field: a lookup per source rather
    // than a scan of the stored entry each.
    let mut stored_by_name: Option<HashMap<&str, &SourceSpec>> = None;
    for (i, src) in view.source_specs() {
        let legacy = SourceSpec::LEGACY_FIELDS;
        if legacy.iter().all(|field| src.raw.get(*field).is_none()) {
            continue;
        }
        let stored = stored_by_name
            .get_or_insert_with(|| stored_view.as_ref().map(by_name).unwrap_or_default())
            .get(src.name.text())
            .copied();
        for field in legacy {
            let Some(v) = src.raw.get(field) else {
                continue;
            };
            if stored.and_then(|s| s.raw.get(field)) != Some(v) {
                return Err(format!(
                    "Sources[{i}].{field} cannot be set: it is managed by the legacy \
                     /v1/connect/intentions API"
                ));
            }
        }
    }
    Ok(())
}

/// An entry's sources by name; the first wins, as [`find_source`] finds it.
fn by_name(view: &ServiceIntentions) -> HashMap<&str, &SourceSpec> {
    let mut out = HashMap::new();
    for (_, src) in view.source_specs() {
        if let Some(name) = src.name.get() {
            out.entry(name.as_str()).or_insert(src);
        }
    }
    out
}

/// The first source of `entry` named `name`.
fn find_source(entry: &ConfigEntry, name: &str) -> Option<SourceSpec> {
    let view = entry.service_intentions();
    let found = view
        .source_specs()
        .find(|(_, s)| s.name.get().map(String::as_str) == Some(name))
        .map(|(_, s)| s.clone());
    found
}

/// The intentions one entry holds, flattened as the legacy API shows them.
pub(crate) fn flatten(entry: &ConfigEntry) -> impl Iterator<Item = Intention> + '_ {
    let view = entry.service_intentions();
    let entry_meta = view.meta.get().cloned().unwrap_or_default();
    let sources = match view.sources {
        Lenient::Set(list) => list,
        _ => Vec::new(),
    };
    sources.into_iter().filter_map(move |src| {
        let Lenient::Set(src) = src else { return None };
        let time = |t: &Lenient<String>| match t.get() {
            Some(t) => t.clone(),
            None => ZERO_TIME.to_string(),
        };
        // A source's own `LegacyMeta`, when it has the key at all, wins over the entry's.
        let meta = if src.raw.contains_key("LegacyMeta") {
            src.legacy_meta.get().cloned().unwrap_or_default()
        } else {
            entry_meta.clone()
        };
        let meta = meta
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_str()?.to_string())))
            .collect();
        let permissions = match &src.permissions {
            Lenient::Set(list) => list
                .iter()
                .map(|p| match p {
                    Lenient::Set(p) => p.raw.clone(),
                    Lenient::Invalid(v) => v.clone(),
                    Lenient::Absent => Value::Null,
                })
                .collect(),
            _ => Vec::new(),
        };
        Some(Intention {
            id: src.legacy_id.text().to_string(),
            description: src.description.text().to_string(),
            source_ns: "default".into(),
            source_name: src.name.text().to_string(),
            destination_ns: "default".into(),
            destination_name: entry.name.clone(),
            source_partition: "default".into(),
            destination_partition: "default".into(),
            source_type: "consul".into(),
            action: match &src.action {
                Lenient::Set(ActionSpec::Allow) => "allow".into(),
                Lenient::Set(ActionSpec::Deny) => "deny".into(),
                Lenient::Invalid(Value::String(s)) => s.clone(),
                _ => String::new(),
            },
            permissions,
            meta,
            precedence: src.precedence.get().copied().unwrap_or(0) as u32,
            created_at: time(&src.legacy_create_time),
            updated_at: time(&src.legacy_update_time),
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
    let name = Lenient::<String>::field(&source, "Name").text().to_string();
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
        .find(|s| named(s).as_deref() == Some(name.as_str()))
    {
        Some(slot) => *slot = Value::Object(source),
        None => list.push(Value::Object(source)),
    }
    normalize_config_entry(&mut entry);
    entry
}

/// A source's name, when it is an object with one.
fn named(source: &Value) -> Option<String> {
    let obj = source.as_object()?;
    Lenient::<String>::field(obj, "Name").get().cloned()
}

/// The entry without `source`, or `None` when it was the last one.
fn without_source(existing: &ConfigEntry, source: &str) -> Option<ConfigEntry> {
    let mut entry = existing.clone();
    if let Some(Value::Array(list)) = entry.body.get_mut("Sources") {
        list.retain(|s| named(s).as_deref() != Some(source));
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
        let name = Lenient::<String>::field(&source, "Name").text().to_string();
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
                    if let Some(v) = stored.raw.get(field) {
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
    entry
        .service_intentions()
        .source_specs()
        .any(|(_, s)| s.permissions.get().is_some_and(|p| !p.is_empty()))
}

impl Tables {
    fn config_entry(&self, kind: &str, name: &str) -> Option<&ConfigEntry> {
        self.config.get(&(kind.to_string(), name.to_string()))
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
        let proxy_now = self
            .config_entry(config_kind::PROXY_DEFAULTS, "global")
            .map(ConfigEntry::proxy_defaults);
        let defaults_now = |service: &str| {
            self.config_entry(config_kind::SERVICE_DEFAULTS, service)
                .map(ConfigEntry::service_defaults)
        };
        let check = |service: &str,
                     service_defaults: Option<ServiceDefaults>,
                     proxy: Option<&ProxyDefaults>| {
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
                Some(e) if name != "*" && has_l7(e) => {
                    check(name, defaults_now(name), proxy_now.as_ref())
                }
                _ => Ok(()),
            },
            config_kind::SERVICE_DEFAULTS => match entry(self, name) {
                Some(ixn) if has_l7(ixn) => check(
                    name,
                    proposed.map(ConfigEntry::service_defaults),
                    proxy_now.as_ref(),
                ),
                _ => Ok(()),
            },
            config_kind::PROXY_DEFAULTS => {
                let proxy = proposed.map(ConfigEntry::proxy_defaults);
                for ixn in entries(self).filter(|e| e.name != "*" && has_l7(e)) {
                    check(&ixn.name, defaults_now(&ixn.name), proxy.as_ref())?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
