//! Which identities a CA may sign: Consul's `SpiffeIDSigning.CanSign`.

use crate::{SpiffeId, TrustDomain};

/// Whether the CA of trust domain `signing` may issue a certificate carrying `id`.
///
/// A whitelist, as Consul's `CanSign`:
/// * a signing ID only if it is the CA's own (same trust domain);
/// * service, mesh gateway and server IDs only if their trust domain is the CA's (compared
///   case-insensitively; both are stored lower-case);
/// * agent IDs never — Consul rewrites agent CSRs itself, and Trellis does not sign agent
///   certificates yet;
/// * no ID with the intentions wildcard `*` as its service, namespace or partition
///   ([`SpiffeId::wildcard_segment`]): `*` means "every service" to intentions, so a
///   certificate carrying it would name no workload, or all of them.
pub fn can_sign(signing: &TrustDomain, id: &SpiffeId) -> bool {
    if id.wildcard_segment().is_some() {
        return false;
    }
    match id {
        SpiffeId::Signing { trust_domain }
        | SpiffeId::Server { trust_domain, .. }
        | SpiffeId::MeshGateway { trust_domain, .. } => trust_domain == signing,
        SpiffeId::Service(service) => &service.trust_domain == signing,
        SpiffeId::Agent { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Segment;

    fn td(s: &str) -> TrustDomain {
        TrustDomain::parse(s).unwrap()
    }

    #[test]
    fn signs_own_trust_domain_only() {
        let ours = td("11111111-2222-3333-4444-555555555555.consul");
        let theirs = td("99999999-2222-3333-4444-555555555555.consul");
        for make in [
            SpiffeId::signing as fn(TrustDomain) -> SpiffeId,
            |t| SpiffeId::service(t, "dc1", "web"),
            |t| SpiffeId::server(t, "dc1"),
            |t| SpiffeId::mesh_gateway(t, "dc1"),
        ] {
            assert!(can_sign(&ours, &make(ours.clone())));
            assert!(!can_sign(&ours, &make(theirs.clone())));
        }
    }

    #[test]
    fn trust_domain_comparison_ignores_case() {
        let ours = td("11111111-2222-3333-4444-555555555555.consul");
        let id: SpiffeId =
            "spiffe://11111111-2222-3333-4444-555555555555.CONSUL/ns/default/dc/dc1/svc/web"
                .parse()
                .unwrap();
        assert!(can_sign(&ours, &id));
        let signing: SpiffeId = "spiffe://11111111-2222-3333-4444-555555555555.Consul"
            .parse()
            .unwrap();
        assert!(can_sign(&ours, &signing));
    }

    #[test]
    fn signing_id_needs_the_whole_host_to_match() {
        let ours = td("abc.consul");
        assert!(!can_sign(
            &ours,
            &SpiffeId::signing(td("abc.consul.example"))
        ));
        assert!(!can_sign(&ours, &SpiffeId::signing(td("abc.other"))));
    }

    #[test]
    fn never_signs_the_intentions_wildcard() {
        let ours = td("abc.consul");
        let svc = |ns: &str, ap: &str, name: &str| {
            SpiffeId::Service(
                crate::ServiceId::new(ours.clone(), "dc1", name)
                    .with_namespace(ns)
                    .with_partition(ap),
            )
        };
        assert!(can_sign(&ours, &svc("default", "default", "web")));
        for (id, segment) in [
            (svc("default", "default", "*"), Segment::Service),
            (svc("*", "default", "web"), Segment::Namespace),
            (svc("default", "*", "web"), Segment::Partition),
        ] {
            assert_eq!(id.wildcard_segment(), Some(segment), "{id}");
            assert!(!can_sign(&ours, &id), "{id}");
        }
        // Parsed from a CSR's URI, as the CA sees it.
        let parsed: SpiffeId = "spiffe://abc.consul/ns/default/dc/dc1/svc/*"
            .parse()
            .unwrap();
        assert!(!can_sign(&ours, &parsed));
        let escaped: SpiffeId = "spiffe://abc.consul/ns/default/dc/dc1/svc/%2A"
            .parse()
            .unwrap();
        assert!(!can_sign(&ours, &escaped));
        // Only the wildcard itself: a name that merely contains '*' is a name.
        assert!(can_sign(&ours, &svc("default", "default", "web*")));
        assert!(can_sign(&ours, &svc("default", "default", "**")));
        let gateway = SpiffeId::MeshGateway {
            trust_domain: ours.clone(),
            partition: "*".into(),
            datacenter: "dc1".into(),
        };
        assert!(!can_sign(&ours, &gateway));
    }

    #[test]
    fn never_signs_agents() {
        let ours = td("abc.consul");
        assert!(!can_sign(
            &ours,
            &SpiffeId::agent(ours.clone(), "dc1", "node-1")
        ));
    }
}
