//! The one forgiving decoder of config entry fields.
//!
//! A config entry's fields are read the way Consul's decoder reads them, but without ever
//! failing: a field is [`Lenient::Absent`] when it is missing or `null` (and, for a string,
//! when it is `""`, Go's zero value), [`Lenient::Set`] when it has the expected type, and
//! [`Lenient::Invalid`] (keeping what was given) otherwise. Decoding goes through serde, so a
//! typed view of an entry is an ordinary `#[derive(Deserialize)]` struct of `Lenient` fields;
//! whether a mistyped field is a problem is for the caller to decide, and
//! [`Lenient::problem`] words it the one way every reader reports it.

use serde::de::{DeserializeOwned, Deserializer};
use serde::Deserialize;
use serde_json::{Map, Value};

/// A field read without failing: absent, set to a value of the expected type, or set to
/// something else.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Lenient<T> {
    /// Missing, `null`, or the type's zero value that counts as not set (`""`).
    #[default]
    Absent,
    /// A value of the expected type.
    Set(T),
    /// A value of another type, as given.
    Invalid(Value),
}

/// A type a [`Lenient`] field can hold: how it is decoded and how a mistyped value is worded.
pub trait Field: DeserializeOwned {
    /// What a value must be, completing "`X` must be ...".
    const EXPECTED: &'static str;
    /// Only a JSON object decodes to it (a struct: a list must not fill fields by position).
    const OBJECT: bool = false;

    /// Whether this value is Go's zero value that counts as not set (`""` for strings).
    fn is_blank(&self) -> bool {
        false
    }

    /// The problem a mistyped `value` at `at` is: "`at` must be `EXPECTED`".
    fn problem(at: &str, _value: &Value) -> String {
        format!("{at} must be {}", Self::EXPECTED)
    }

    /// Decodes a value of the expected type (the hook a view uses to keep what it was read
    /// from); `None` for a value of another type.
    fn decode(value: &Value) -> Option<Self> {
        Self::deserialize(value).ok()
    }
}

/// A string where `""` is a value, not Go's zero value (an HTTP method, whose `""` is refused
/// as such).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(transparent)]
pub struct Text(pub String);

impl Field for Text {
    const EXPECTED: &'static str = "a string";
}

impl Field for String {
    const EXPECTED: &'static str = "a string";
    fn is_blank(&self) -> bool {
        self.is_empty()
    }
}

impl Field for bool {
    const EXPECTED: &'static str = "true or false";
}

impl Field for u64 {
    const EXPECTED: &'static str = "a non-negative integer";
}

impl<T: DeserializeOwned> Field for Vec<T> {
    const EXPECTED: &'static str = "a list";
}

impl Field for Map<String, Value> {
    const EXPECTED: &'static str = "an object";
    const OBJECT: bool = true;
}

impl<T: Field> Lenient<T> {
    /// Reads `value` as a `T`; never fails.
    pub fn from_value(value: Value) -> Lenient<T> {
        if value.is_null() {
            return Lenient::Absent;
        }
        if T::OBJECT && !value.is_object() {
            return Lenient::Invalid(value);
        }
        match T::decode(&value) {
            Some(v) if v.is_blank() => Lenient::Absent,
            Some(v) => Lenient::Set(v),
            None => Lenient::Invalid(value),
        }
    }

    /// Reads the field `key` of `obj` (absent when it is not there).
    pub fn field(obj: &Map<String, Value>, key: &str) -> Lenient<T> {
        obj.get(key)
            .map_or(Lenient::Absent, |v| Lenient::from_value(v.clone()))
    }

    /// The problem this field is at `at` (`Sources[0].Name`), if it is mistyped.
    pub fn problem(&self, at: &str) -> Option<String> {
        match self {
            Lenient::Invalid(v) => Some(T::problem(at, v)),
            _ => None,
        }
    }

    /// Pushes [`Lenient::problem`] for the field `key` under `at` (`at` empty: no prefix).
    pub fn check(&self, at: &str, key: &str, problems: &mut Vec<String>) {
        if let Lenient::Invalid(_) = self {
            problems.push(
                self.problem(&join(at, key))
                    .expect("an invalid field has a problem"),
            );
        }
    }
}

impl<T> Lenient<T> {
    /// The value when set.
    pub fn get(&self) -> Option<&T> {
        match self {
            Lenient::Set(v) => Some(v),
            _ => None,
        }
    }

    /// Whether the field is missing, `null` or blank.
    pub fn is_absent(&self) -> bool {
        matches!(self, Lenient::Absent)
    }

    /// Whether the field is set to a value of the expected type.
    pub fn is_set(&self) -> bool {
        matches!(self, Lenient::Set(_))
    }

    /// Whether the field is set to a value of another type.
    pub fn is_invalid(&self) -> bool {
        matches!(self, Lenient::Invalid(_))
    }
}

impl Lenient<String> {
    /// The string when set, else `""`.
    pub fn text(&self) -> &str {
        self.get().map_or("", String::as_str)
    }
}

impl<'de, T: Field> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Lenient::from_value(Value::deserialize(d)?))
    }
}

/// `at.key`, or `key` when `at` is empty.
pub fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

/// Decodes a typed view from an object, keeping the object: the struct `T`'s fields are
/// [`Lenient`], so decoding an object never fails; anything but an object decodes to `None`.
pub fn decode_object<T: DeserializeOwned + Default>(value: &Value) -> Option<T> {
    if !value.is_object() {
        return None;
    }
    Some(T::deserialize(value).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Deserialize, Default, Debug)]
    #[serde(rename_all = "PascalCase", default)]
    struct Probe {
        name: Lenient<String>,
        flag: Lenient<bool>,
        list: Lenient<Vec<Lenient<String>>>,
        meta: Lenient<Map<String, Value>>,
        count: Lenient<u64>,
    }

    fn probe(v: Value) -> Probe {
        decode_object(&v).expect("an object")
    }

    #[test]
    fn absent_null_and_empty_are_not_set() {
        for v in [json!({}), json!({"Name": null}), json!({"Name": ""})] {
            assert_eq!(probe(v.clone()).name, Lenient::Absent, "{v}");
        }
        assert_eq!(probe(json!({"Name": "web"})).name.text(), "web");
        // A false or an empty list is a value, not Go's zero value here.
        let p = probe(json!({"Flag": false, "List": [], "Meta": {}}));
        assert_eq!(p.flag, Lenient::Set(false));
        assert_eq!(p.list, Lenient::Set(vec![]));
        assert_eq!(p.meta, Lenient::Set(Map::new()));
    }

    #[test]
    fn a_wrong_type_is_kept_and_worded() {
        let p = probe(json!({
            "Name": 7, "Flag": "yes", "List": "a", "Meta": [1], "Count": -1
        }));
        assert_eq!(p.name, Lenient::Invalid(json!(7)));
        assert_eq!(p.name.text(), "");
        let mut problems = Vec::new();
        p.name.check("Sources[0]", "Name", &mut problems);
        p.flag.check("Sources[0]", "Flag", &mut problems);
        p.list.check("Sources[0]", "List", &mut problems);
        p.meta.check("", "Meta", &mut problems);
        p.count.check("", "Count", &mut problems);
        assert_eq!(
            problems,
            vec![
                "Sources[0].Name must be a string",
                "Sources[0].Flag must be true or false",
                "Sources[0].List must be a list",
                "Meta must be an object",
                "Count must be a non-negative integer",
            ]
        );
        // Elements are read one by one: one bad element does not spoil the list.
        let p = probe(json!({"List": ["a", 1, null, ""]}));
        assert_eq!(
            p.list,
            Lenient::Set(vec![
                Lenient::Set("a".into()),
                Lenient::Invalid(json!(1)),
                Lenient::Absent,
                Lenient::Absent
            ])
        );
    }

    #[test]
    fn structs_decode_only_from_objects() {
        #[derive(Deserialize, Default, Debug, PartialEq)]
        #[serde(rename_all = "PascalCase", default)]
        struct Inner {
            mode: Lenient<String>,
        }
        impl Field for Inner {
            const EXPECTED: &'static str = "an object";
            const OBJECT: bool = true;
        }
        assert_eq!(
            Lenient::<Inner>::from_value(json!(["local"])),
            Lenient::Invalid(json!(["local"])),
            "a list does not fill fields by position"
        );
        assert_eq!(
            Lenient::<Inner>::from_value(json!({"Mode": 1})),
            Lenient::Set(Inner {
                mode: Lenient::Invalid(json!(1))
            })
        );
        assert!(decode_object::<Probe>(&json!("x")).is_none());
    }
}
