//! The trust domain: the host part shared by every SPIFFE ID of one cluster.

use std::fmt;
use std::str::FromStr;

use crate::IdError;

/// The fixed top-level label of Consul trust domains (`<cluster-id>.consul`).
///
/// Consul deliberately does not tie this to the DNS `domain` setting, so that changing the
/// DNS domain cannot invalidate every certificate.
pub const CONSUL_TLD: &str = "consul";

/// The longest trust domain accepted, in bytes (the DNS host name limit).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// A SPIFFE trust domain such as `11111111-2222-3333-4444-555555555555.consul`.
///
/// Always lower-case and a valid DNS-style host: letters, digits, `-` and `.`, at least two
/// non-empty labels, at most [`MAX_TRUST_DOMAIN_LEN`] bytes. Upper-case input is accepted
/// and lower-cased, as Consul compares hosts case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses and validates a trust domain, lower-casing it.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let invalid = |reason| IdError::InvalidTrustDomain {
            domain: s.to_owned(),
            reason,
        };
        if s.is_empty() {
            return Err(invalid("is empty"));
        }
        if s.len() > MAX_TRUST_DOMAIN_LEN {
            return Err(invalid("is longer than 255 bytes"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(invalid("may contain only letters, digits, '-' and '.'"));
        }
        if !s.contains('.') {
            return Err(invalid("must contain a '.'"));
        }
        if s.split('.').any(str::is_empty) {
            return Err(invalid("has an empty label"));
        }
        Ok(TrustDomain(s.to_ascii_lowercase()))
    }

    /// The trust domain Consul uses for a cluster: `<cluster_id>.consul`, lower-cased.
    ///
    /// The cluster ID is normally the UUID Consul generates when the CA is first configured;
    /// any single DNS label (letters, digits, `-`) is accepted.
    pub fn for_cluster(cluster_id: &str) -> Result<Self, IdError> {
        if cluster_id.contains('.') {
            return Err(IdError::InvalidTrustDomain {
                domain: format!("{cluster_id}.{CONSUL_TLD}"),
                reason: "the cluster ID must be a single label, without '.'",
            });
        }
        Self::parse(&format!("{cluster_id}.{CONSUL_TLD}"))
    }

    /// The cluster ID: the part before the first `.`.
    pub fn cluster_id(&self) -> &str {
        self.0.split('.').next().unwrap_or_default()
    }

    /// The trust domain as a (lower-case) string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for TrustDomain {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = "11111111-2222-3333-4444-555555555555";

    #[test]
    fn for_cluster_appends_consul() {
        let td = TrustDomain::for_cluster(CLUSTER).unwrap();
        assert_eq!(td.as_str(), format!("{CLUSTER}.consul"));
        assert_eq!(td.cluster_id(), CLUSTER);
        assert_eq!(td.to_string(), td.as_str());
    }

    #[test]
    fn for_cluster_lower_cases() {
        let td = TrustDomain::for_cluster("ABCDEF01-2222-3333-4444-555555555555").unwrap();
        assert_eq!(td.as_str(), "abcdef01-2222-3333-4444-555555555555.consul");
        assert_eq!(td.cluster_id(), "abcdef01-2222-3333-4444-555555555555");
    }

    #[test]
    fn for_cluster_rejects_bad_ids() {
        let err = TrustDomain::for_cluster("a.b").unwrap_err();
        assert!(err.to_string().contains("single label"), "{err}");
        let err = TrustDomain::for_cluster("").unwrap_err();
        assert!(err.to_string().contains("empty label"), "{err}");
        let err = TrustDomain::for_cluster("a b").unwrap_err();
        assert!(err.to_string().contains("only letters"), "{err}");
    }

    #[test]
    fn parse_lower_cases() {
        let td: TrustDomain = "Foo.CONSUL".parse().unwrap();
        assert_eq!(td.as_str(), "foo.consul");
        assert_eq!(td, TrustDomain::parse("foo.consul").unwrap());
    }

    #[test]
    fn cluster_id_is_before_first_dot() {
        let td = TrustDomain::parse("a-b.c.d").unwrap();
        assert_eq!(td.cluster_id(), "a-b");
    }

    #[test]
    fn parse_rejects_each_problem() {
        let cases = [
            ("", "invalid trust domain \"\": is empty"),
            ("consul", "invalid trust domain \"consul\": must contain a '.'"),
            ("a..consul", "invalid trust domain \"a..consul\": has an empty label"),
            (".consul", "invalid trust domain \".consul\": has an empty label"),
            ("a.consul.", "invalid trust domain \"a.consul.\": has an empty label"),
            (
                "a_b.consul",
                "invalid trust domain \"a_b.consul\": may contain only letters, digits, '-' and '.'",
            ),
            (
                "é.consul",
                "invalid trust domain \"é.consul\": may contain only letters, digits, '-' and '.'",
            ),
        ];
        for (input, message) in cases {
            let err = TrustDomain::parse(input).unwrap_err();
            assert_eq!(err.to_string(), message, "{input}");
        }
    }

    #[test]
    fn length_limit_is_255_bytes() {
        let ok = format!("{}.consul", "a".repeat(MAX_TRUST_DOMAIN_LEN - 7));
        assert_eq!(ok.len(), MAX_TRUST_DOMAIN_LEN);
        assert!(TrustDomain::parse(&ok).is_ok());
        let long = format!("a{ok}");
        let err = TrustDomain::parse(&long).unwrap_err();
        assert!(
            err.to_string().ends_with("is longer than 255 bytes"),
            "{err}"
        );
    }
}
