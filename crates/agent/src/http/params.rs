//! Query-string parameters as Consul reads them: repeated keys, flags without values.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

/// The decoded query string of a request.
#[derive(Debug, Default, Clone)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses a raw query string.
    pub fn parse(raw: &str) -> Params {
        Params {
            pairs: form_urlencoded::parse(raw.as_bytes())
                .into_owned()
                .collect(),
        }
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether `key` is present, as a flag (`?stale`) or with a value other than `false`.
    pub fn has(&self, key: &str) -> bool {
        self.pairs
            .iter()
            .any(|(k, v)| k == key && v != "false" && v != "0")
    }

    /// Every value of a repeated key (`?tag=a&tag=b`).
    pub fn all(&self, key: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Params::parse(parts.uri.query().unwrap_or("")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_repeats_and_escapes() {
        let p = Params::parse("stale&tag=a&tag=b%20c&passing=false&index=12");
        assert!(p.has("stale"));
        assert!(!p.has("passing"));
        assert!(!p.has("consistent"));
        assert_eq!(p.all("tag"), ["a", "b c"]);
        assert_eq!(p.get("index"), Some("12"));
    }
}
