//! TLS SNI names Consul gives to services' mesh listeners.

use crate::{TrustDomain, DEFAULT_NAMESPACE, DEFAULT_PARTITION};

/// The SNI name a downstream proxy sends to reach `service` (Consul's `ServiceSNI`, without
/// a subset): `<service>.<ns>.<dc>.internal.<td>` in the default partition and
/// `<service>.<ns>.<ap>.<dc>.internal-v1.<td>` in any other.
///
/// An empty namespace or partition means `default`. As in Consul, nothing is lower-cased or
/// escaped: the partition is compared with `default` exactly.
pub fn service_sni(
    service: &str,
    namespace: &str,
    partition: &str,
    datacenter: &str,
    trust_domain: &TrustDomain,
) -> String {
    let namespace = if namespace.is_empty() {
        DEFAULT_NAMESPACE
    } else {
        namespace
    };
    let partition = if partition.is_empty() {
        DEFAULT_PARTITION
    } else {
        partition
    };
    if partition == DEFAULT_PARTITION {
        format!("{service}.{namespace}.{datacenter}.internal.{trust_domain}")
    } else {
        format!("{service}.{namespace}.{partition}.{datacenter}.internal-v1.{trust_domain}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td() -> TrustDomain {
        TrustDomain::parse("11111111-2222-3333-4444-555555555555.consul").unwrap()
    }

    #[test]
    fn default_partition() {
        assert_eq!(
            service_sni("web", "default", "default", "dc1", &td()),
            "web.default.dc1.internal.11111111-2222-3333-4444-555555555555.consul"
        );
        assert_eq!(
            service_sni("web", "", "", "dc1", &td()),
            "web.default.dc1.internal.11111111-2222-3333-4444-555555555555.consul"
        );
        assert_eq!(
            service_sni("api", "team-a", "", "dc2", &td()),
            "api.team-a.dc2.internal.11111111-2222-3333-4444-555555555555.consul"
        );
    }

    #[test]
    fn other_partition() {
        assert_eq!(
            service_sni("web", "default", "part1", "dc1", &td()),
            "web.default.part1.dc1.internal-v1.11111111-2222-3333-4444-555555555555.consul"
        );
        assert_eq!(
            service_sni("web", "", "part1", "dc1", &td()),
            "web.default.part1.dc1.internal-v1.11111111-2222-3333-4444-555555555555.consul"
        );
    }
}
