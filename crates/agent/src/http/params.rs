//! Query-string parameters as Consul reads them: repeated keys, flags without values.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

/// The decoded query string of a request, and the ACL token it carries.
#[derive(Default, Clone)]
pub struct Params {
    pairs: Vec<(String, String)>,
    /// From `X-Consul-Token` or `Authorization: Bearer`; never printed.
    header_token: Option<String>,
}

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pairs: Vec<(&str, &str)> = self
            .pairs
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    if k == "token" {
                        "<redacted>"
                    } else {
                        v.as_str()
                    },
                )
            })
            .collect();
        f.debug_struct("Params").field("pairs", &pairs).finish()
    }
}

impl Params {
    /// Parses a raw query string.
    pub fn parse(raw: &str) -> Params {
        Params {
            pairs: form_urlencoded::parse(raw.as_bytes())
                .into_owned()
                .collect(),
            header_token: None,
        }
    }

    /// The request's ACL token as Consul reads it (`parseTokenInternal`): `?token=`, else
    /// `X-Consul-Token`, else `Authorization: Bearer`; empty when none was sent. It partitions
    /// cached data.
    pub fn token(&self) -> &str {
        self.get("token")
            .filter(|t| !t.is_empty())
            .or(self.header_token.as_deref())
            .unwrap_or("")
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
        let mut p = Params::parse(parts.uri.query().unwrap_or(""));
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        p.header_token = header("x-consul-token")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .or_else(|| {
                header("authorization")
                    .and_then(|v| {
                        let (scheme, rest) = v.trim().split_once(' ')?;
                        scheme.eq_ignore_ascii_case("bearer").then_some(rest)
                    })
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
            })
            .map(str::to_string);
        Ok(p)
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

    #[test]
    fn the_token_is_never_printed() {
        let p = Params::parse("token=s3cret&index=1");
        assert_eq!(p.token(), "s3cret");
        assert!(!format!("{p:?}").contains("s3cret"));
    }

    async fn from(uri: &str, headers: &[(&str, &str)]) -> Params {
        let mut req = axum::http::Request::builder().uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let (mut parts, ()) = req.body(()).unwrap().into_parts();
        Params::from_request_parts(&mut parts, &()).await.unwrap()
    }

    #[tokio::test]
    async fn the_token_comes_from_the_query_then_the_header_then_bearer() {
        let both = [("x-consul-token", "hdr"), ("authorization", "Bearer brr")];
        assert_eq!(from("/v1/x?token=q", &both).await.token(), "q");
        assert_eq!(from("/v1/x?token=", &both).await.token(), "hdr");
        assert_eq!(from("/v1/x", &both[1..]).await.token(), "brr");
        let lower = [("authorization", "bearer  low ")];
        assert_eq!(from("/v1/x", &lower).await.token(), "low");
        let basic = [("authorization", "Basic abc")];
        assert_eq!(from("/v1/x", &basic).await.token(), "");
    }
}
