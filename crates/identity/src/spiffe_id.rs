//! SPIFFE IDs in the shapes Consul issues, with a hand-written parser and formatter.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use crate::escape::{unescape_segment, write_segment};
use crate::{IdError, Segment, TrustDomain};

/// The admin partition an ID belongs to when its path has no `/ap/` prefix.
pub const DEFAULT_PARTITION: &str = "default";

/// The namespace Consul writes for a service that has none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The longest SPIFFE ID accepted, in bytes (the SPIFFE specification's URI limit).
pub const MAX_ID_LEN: usize = 2048;

/// The name Consul's intentions use for "every service" (and every namespace or partition).
/// It names no workload: no certificate may carry it as a service, namespace or partition.
pub const WILDCARD: &str = "*";

/// The identity of a service instance: `spiffe://<td>[/ap/<ap>]/ns/<ns>/dc/<dc>/svc/<name>`.
///
/// The `/ap/` prefix is written only for a partition other than `default`. Values produced by
/// parsing always pass [`ServiceId::validate`]; build values with [`ServiceId::new`] and the
/// `with_*` methods to keep them canonical.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId {
    /// The cluster's trust domain (the URI host).
    pub trust_domain: TrustDomain,
    /// The admin partition, lower-case; `default` unless the ID has an `/ap/` prefix.
    pub partition: String,
    /// The namespace; `default` in Consul CE.
    pub namespace: String,
    /// The datacenter the service instance runs in.
    pub datacenter: String,
    /// The service name.
    pub service: String,
}

impl ServiceId {
    /// A service identity in the default partition and namespace.
    pub fn new(
        trust_domain: TrustDomain,
        datacenter: impl Into<String>,
        service: impl Into<String>,
    ) -> Self {
        ServiceId {
            trust_domain,
            partition: DEFAULT_PARTITION.to_owned(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            datacenter: datacenter.into(),
            service: service.into(),
        }
    }

    /// Sets the namespace; an empty namespace means `default`, as in Consul.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        if self.namespace.is_empty() {
            self.namespace = DEFAULT_NAMESPACE.to_owned();
        }
        self
    }

    /// Sets the admin partition, lower-cased; an empty partition means `default`, as in Consul.
    pub fn with_partition(mut self, partition: impl AsRef<str>) -> Self {
        self.partition = normalize_partition(partition.as_ref());
        self
    }

    /// Checks that the value is canonical — one that parsing could have produced — so that
    /// formatting it and parsing the result gives back an equal value.
    ///
    /// Rejects empty segments, a partition that is not lower-case, and a formatted form over
    /// [`MAX_ID_LEN`] bytes.
    pub fn validate(&self) -> Result<(), IdError> {
        check_partition(&self.partition)?;
        check_nonempty(&self.namespace, Segment::Namespace)?;
        check_nonempty(&self.datacenter, Segment::Datacenter)?;
        check_nonempty(&self.service, Segment::Service)?;
        check_len(self)
    }

    /// The first segment (partition, namespace, service) that is the intentions wildcard
    /// [`WILDCARD`], if any: such an ID names no workload and is never issued.
    pub fn wildcard_segment(&self) -> Option<Segment> {
        [
            (&self.partition, Segment::Partition),
            (&self.namespace, Segment::Namespace),
            (&self.service, Segment::Service),
        ]
        .into_iter()
        .find(|(value, _)| *value == WILDCARD)
        .map(|(_, segment)| segment)
    }

    fn write_path(&self, f: &mut impl fmt::Write) -> fmt::Result {
        write_partition_prefix(f, &self.partition)?;
        let namespace = if self.namespace.is_empty() {
            DEFAULT_NAMESPACE
        } else {
            &self.namespace
        };
        f.write_str("/ns/")?;
        write_segment(f, namespace)?;
        f.write_str("/dc/")?;
        write_segment(f, &self.datacenter)?;
        f.write_str("/svc/")?;
        write_segment(f, &self.service)
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}", self.trust_domain)?;
        self.write_path(f)
    }
}

impl FromStr for ServiceId {
    type Err = IdError;

    /// Parses a SPIFFE ID and requires it to be a service identity.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match SpiffeId::parse(s)? {
            SpiffeId::Service(id) => Ok(id),
            other => Err(IdError::NotAService(other.to_string())),
        }
    }
}

impl From<ServiceId> for SpiffeId {
    fn from(id: ServiceId) -> Self {
        SpiffeId::Service(id)
    }
}

/// A SPIFFE ID of one of the shapes Consul issues and accepts.
///
/// [`FromStr`] and [`Display`](fmt::Display) round-trip: path segments are percent-decoded
/// when parsing and percent-encoded when formatting, the host is lower-cased, and a
/// `default` admin partition is written without the `/ap/` prefix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SpiffeId {
    /// The CA's own identity, `spiffe://<td>` (no path): what a signing certificate carries.
    Signing {
        /// The cluster's trust domain.
        trust_domain: TrustDomain,
    },
    /// A service instance's identity (leaf certificates of sidecars and services).
    Service(ServiceId),
    /// A client agent's identity: `[/ap/<ap>]/agent/client/dc/<dc>/id/<node>`.
    Agent {
        /// The cluster's trust domain.
        trust_domain: TrustDomain,
        /// The admin partition, lower-case; `default` unless the ID has an `/ap/` prefix.
        partition: String,
        /// The agent's datacenter.
        datacenter: String,
        /// The agent's node name.
        node: String,
    },
    /// A server's identity: `/agent/server/dc/<dc>`.
    Server {
        /// The cluster's trust domain.
        trust_domain: TrustDomain,
        /// The server's datacenter.
        datacenter: String,
    },
    /// A mesh gateway's identity: `[/ap/<ap>]/gateway/mesh/dc/<dc>`.
    MeshGateway {
        /// The cluster's trust domain.
        trust_domain: TrustDomain,
        /// The admin partition, lower-case; `default` unless the ID has an `/ap/` prefix.
        partition: String,
        /// The gateway's datacenter.
        datacenter: String,
    },
}

impl SpiffeId {
    /// The signing (CA) identity of a trust domain.
    pub fn signing(trust_domain: TrustDomain) -> Self {
        SpiffeId::Signing { trust_domain }
    }

    /// A service identity in the default partition and namespace.
    pub fn service(
        trust_domain: TrustDomain,
        datacenter: impl Into<String>,
        service: impl Into<String>,
    ) -> Self {
        SpiffeId::Service(ServiceId::new(trust_domain, datacenter, service))
    }

    /// A client agent identity in the default partition.
    pub fn agent(
        trust_domain: TrustDomain,
        datacenter: impl Into<String>,
        node: impl Into<String>,
    ) -> Self {
        SpiffeId::Agent {
            trust_domain,
            partition: DEFAULT_PARTITION.to_owned(),
            datacenter: datacenter.into(),
            node: node.into(),
        }
    }

    /// A server identity.
    pub fn server(trust_domain: TrustDomain, datacenter: impl Into<String>) -> Self {
        SpiffeId::Server {
            trust_domain,
            datacenter: datacenter.into(),
        }
    }

    /// A mesh gateway identity in the default partition.
    pub fn mesh_gateway(trust_domain: TrustDomain, datacenter: impl Into<String>) -> Self {
        SpiffeId::MeshGateway {
            trust_domain,
            partition: DEFAULT_PARTITION.to_owned(),
            datacenter: datacenter.into(),
        }
    }

    /// The trust domain (URI host) of the ID.
    pub fn trust_domain(&self) -> &TrustDomain {
        match self {
            SpiffeId::Signing { trust_domain }
            | SpiffeId::Agent { trust_domain, .. }
            | SpiffeId::Server { trust_domain, .. }
            | SpiffeId::MeshGateway { trust_domain, .. } => trust_domain,
            SpiffeId::Service(id) => &id.trust_domain,
        }
    }

    /// The first segment that is the intentions wildcard [`WILDCARD`] (a service's partition,
    /// namespace or name; an agent's or mesh gateway's partition), if any. Such an ID parses
    /// (it describes a URI faithfully) but names no workload: [`can_sign`](crate::can_sign)
    /// refuses it.
    pub fn wildcard_segment(&self) -> Option<Segment> {
        match self {
            SpiffeId::Service(id) => id.wildcard_segment(),
            SpiffeId::Agent { partition, .. } | SpiffeId::MeshGateway { partition, .. }
                if partition == WILDCARD =>
            {
                Some(Segment::Partition)
            }
            _ => None,
        }
    }

    /// Parses a SPIFFE ID URI (the same as [`FromStr`]).
    ///
    /// The scheme must be `spiffe` (any case); the authority must be a bare trust domain
    /// (no user info, no port); there must be no query or fragment; the path must have one
    /// of the shapes of [`SpiffeId`]'s variants with no empty segment; and the input must not
    /// be longer than [`MAX_ID_LEN`] bytes. Path segments are percent-decoded, the host and the
    /// admin partition lower-cased. Keywords such as `ns` or `svc` are matched as written:
    /// an escaped keyword (`%6Es`) does not match, as in Consul.
    pub fn parse(input: &str) -> Result<Self, IdError> {
        if input.len() > MAX_ID_LEN {
            return Err(IdError::TooLong { len: input.len() });
        }
        if input.bytes().any(|b| b.is_ascii_control()) {
            return Err(IdError::ControlCharacter);
        }
        let (scheme, rest) = input.split_once(':').ok_or(IdError::WrongScheme)?;
        if !scheme.eq_ignore_ascii_case("spiffe") {
            return Err(IdError::WrongScheme);
        }
        let rest = rest.strip_prefix("//").ok_or(IdError::MissingTrustDomain)?;

        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, rest) = rest.split_at(authority_end);
        if authority.contains('@') {
            return Err(IdError::UserInfo);
        }
        if authority.contains(':') {
            return Err(IdError::Port);
        }
        if authority.is_empty() {
            return Err(IdError::MissingTrustDomain);
        }
        let trust_domain = TrustDomain::parse(authority)?;

        let path = match rest.find(['?', '#']) {
            Some(i) if rest.as_bytes()[i] == b'?' => return Err(IdError::Query),
            Some(_) => return Err(IdError::Fragment),
            None => rest,
        };

        let id = if path.is_empty() {
            SpiffeId::Signing { trust_domain }
        } else {
            parse_path(trust_domain, path)?
        };

        // Formatting canonicalises escapes and can make the ID longer than its input; refuse
        // an ID whose canonical form would itself be refused.
        check_len(&id)?;
        Ok(id)
    }

    /// Checks that the value is canonical — one that parsing could have produced — so that
    /// formatting it and parsing the result gives back an equal value.
    ///
    /// Rejects empty segments, a partition that is not lower-case, and a formatted form over
    /// [`MAX_ID_LEN`] bytes.
    pub fn validate(&self) -> Result<(), IdError> {
        match self {
            SpiffeId::Signing { .. } => Ok(()),
            SpiffeId::Service(id) => id.validate(),
            SpiffeId::Agent {
                partition,
                datacenter,
                node,
                ..
            } => {
                check_partition(partition)?;
                check_nonempty(datacenter, Segment::Datacenter)?;
                check_nonempty(node, Segment::Node)?;
                check_len(self)
            }
            SpiffeId::Server { datacenter, .. } => {
                check_nonempty(datacenter, Segment::Datacenter)?;
                check_len(self)
            }
            SpiffeId::MeshGateway {
                partition,
                datacenter,
                ..
            } => {
                check_partition(partition)?;
                check_nonempty(datacenter, Segment::Datacenter)?;
                check_len(self)
            }
        }
    }
}

/// Matches the path against the fixed shapes and decodes the variable segments.
fn parse_path(trust_domain: TrustDomain, path: &str) -> Result<SpiffeId, IdError> {
    let Some(path) = path.strip_prefix('/') else {
        return Err(IdError::UnexpectedFormat);
    };
    // The longest shape has 8 segments; a 9th means no shape matches.
    let segments: Vec<&str> = path.splitn(9, '/').collect();
    let partition = |raw: Option<&str>| match raw {
        None => Ok(DEFAULT_PARTITION.to_owned()),
        Some(raw) => Ok(unescape_segment(raw, Segment::Partition)?.to_lowercase()),
    };
    let id = match segments.as_slice() {
        ["ap", ap, "ns", ns, "dc", dc, "svc", svc] => {
            service(trust_domain, partition(Some(ap))?, ns, dc, svc)?
        }
        ["ns", ns, "dc", dc, "svc", svc] => service(trust_domain, partition(None)?, ns, dc, svc)?,
        ["ap", ap, "agent", "client", "dc", dc, "id", node] => {
            agent(trust_domain, partition(Some(ap))?, dc, node)?
        }
        ["agent", "client", "dc", dc, "id", node] => {
            agent(trust_domain, partition(None)?, dc, node)?
        }
        ["agent", "server", "dc", dc] => SpiffeId::Server {
            trust_domain,
            datacenter: unescape_segment(dc, Segment::Datacenter)?,
        },
        ["ap", ap, "gateway", "mesh", "dc", dc] => SpiffeId::MeshGateway {
            trust_domain,
            partition: partition(Some(ap))?,
            datacenter: unescape_segment(dc, Segment::Datacenter)?,
        },
        ["gateway", "mesh", "dc", dc] => SpiffeId::MeshGateway {
            trust_domain,
            partition: partition(None)?,
            datacenter: unescape_segment(dc, Segment::Datacenter)?,
        },
        _ => return Err(IdError::UnexpectedFormat),
    };
    Ok(id)
}

fn service(
    trust_domain: TrustDomain,
    partition: String,
    ns: &str,
    dc: &str,
    svc: &str,
) -> Result<SpiffeId, IdError> {
    Ok(SpiffeId::Service(ServiceId {
        trust_domain,
        partition,
        namespace: unescape_segment(ns, Segment::Namespace)?,
        datacenter: unescape_segment(dc, Segment::Datacenter)?,
        service: unescape_segment(svc, Segment::Service)?,
    }))
}

fn agent(
    trust_domain: TrustDomain,
    partition: String,
    dc: &str,
    node: &str,
) -> Result<SpiffeId, IdError> {
    Ok(SpiffeId::Agent {
        trust_domain,
        partition,
        datacenter: unescape_segment(dc, Segment::Datacenter)?,
        node: unescape_segment(node, Segment::Node)?,
    })
}

/// Consul's `PartitionOrDefault`: empty means `default`; otherwise lower-cased.
fn normalize_partition(partition: &str) -> String {
    if partition.is_empty() {
        DEFAULT_PARTITION.to_owned()
    } else {
        partition.to_lowercase()
    }
}

/// Writes `/ap/<partition>` unless the partition is empty or `default` (in any case).
fn write_partition_prefix(f: &mut impl fmt::Write, partition: &str) -> fmt::Result {
    let partition = normalize_partition(partition);
    if partition != DEFAULT_PARTITION {
        f.write_str("/ap/")?;
        write_segment(f, &partition)?;
    }
    Ok(())
}

fn check_nonempty(value: &str, segment: Segment) -> Result<(), IdError> {
    if value.is_empty() {
        Err(IdError::EmptySegment(segment))
    } else {
        Ok(())
    }
}

fn check_partition(partition: &str) -> Result<(), IdError> {
    check_nonempty(partition, Segment::Partition)?;
    if partition.to_lowercase() != partition {
        return Err(IdError::PartitionNotLowercase(partition.to_owned()));
    }
    Ok(())
}

fn check_len(id: &impl fmt::Display) -> Result<(), IdError> {
    struct Counter(usize);
    impl fmt::Write for Counter {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut counter = Counter(0);
    write!(counter, "{id}").expect("counting never fails");
    if counter.0 > MAX_ID_LEN {
        return Err(IdError::TooLong { len: counter.0 });
    }
    Ok(())
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}", self.trust_domain())?;
        match self {
            SpiffeId::Signing { .. } => Ok(()),
            SpiffeId::Service(id) => id.write_path(f),
            SpiffeId::Agent {
                partition,
                datacenter,
                node,
                ..
            } => {
                write_partition_prefix(f, partition)?;
                f.write_str("/agent/client/dc/")?;
                write_segment(f, datacenter)?;
                f.write_str("/id/")?;
                write_segment(f, node)
            }
            SpiffeId::Server { datacenter, .. } => {
                f.write_str("/agent/server/dc/")?;
                write_segment(f, datacenter)
            }
            SpiffeId::MeshGateway {
                partition,
                datacenter,
                ..
            } => {
                write_partition_prefix(f, partition)?;
                f.write_str("/gateway/mesh/dc/")?;
                write_segment(f, datacenter)
            }
        }
    }
}

impl FromStr for SpiffeId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = "11111111-2222-3333-4444-555555555555";

    fn td() -> TrustDomain {
        TrustDomain::for_cluster(CLUSTER).unwrap()
    }

    fn parse(s: &str) -> Result<SpiffeId, IdError> {
        s.parse()
    }

    fn err(s: &str) -> String {
        parse(s).unwrap_err().to_string()
    }

    /// Parses, checks the value, and checks it formats back to `canonical`.
    fn round_trip(input: &str, expected: &SpiffeId, canonical: &str) {
        let id = parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(&id, expected, "{input}");
        assert_eq!(id.to_string(), canonical, "{input}");
        assert_eq!(parse(canonical).unwrap(), id, "{canonical}");
        id.validate().unwrap();
    }

    #[test]
    fn consul_documented_example() {
        let input =
            "spiffe://11111111-2222-3333-4444-555555555555.consul/ns/default/dc/dc1/svc/web";
        let expected = SpiffeId::service(td(), "dc1", "web");
        round_trip(input, &expected, input);
        let SpiffeId::Service(svc) = parse(input).unwrap() else {
            panic!("not a service");
        };
        assert_eq!(svc.trust_domain.cluster_id(), CLUSTER);
        assert_eq!(svc.partition, "default");
        assert_eq!(svc.namespace, "default");
        assert_eq!(svc.datacenter, "dc1");
        assert_eq!(svc.service, "web");
        assert_eq!(svc.to_string(), input);
        assert_eq!(input.parse::<ServiceId>().unwrap(), svc);
    }

    #[test]
    fn signing_shape() {
        let input = format!("spiffe://{CLUSTER}.consul");
        round_trip(&input, &SpiffeId::signing(td()), &input);
    }

    #[test]
    fn signing_requires_no_path_at_all() {
        assert_eq!(
            err(&format!("spiffe://{CLUSTER}.consul/")),
            "SPIFFE ID is not in the expected format"
        );
    }

    #[test]
    fn service_shape_with_namespace_and_partition() {
        let expected = SpiffeId::Service(
            ServiceId::new(td(), "dc2", "api")
                .with_namespace("team-a")
                .with_partition("part1"),
        );
        let input = format!("spiffe://{CLUSTER}.consul/ap/part1/ns/team-a/dc/dc2/svc/api");
        round_trip(&input, &expected, &input);
    }

    #[test]
    fn default_partition_prefix_is_dropped() {
        let input = format!("spiffe://{CLUSTER}.consul/ap/default/ns/default/dc/dc1/svc/web");
        let canonical = format!("spiffe://{CLUSTER}.consul/ns/default/dc/dc1/svc/web");
        round_trip(&input, &SpiffeId::service(td(), "dc1", "web"), &canonical);
    }

    #[test]
    fn partition_is_lower_cased() {
        let input = format!("spiffe://{CLUSTER}.consul/ap/Part%31/ns/NS/dc/DC/svc/Web");
        let expected = SpiffeId::Service(ServiceId {
            trust_domain: td(),
            partition: "part1".into(),
            namespace: "NS".into(),
            datacenter: "DC".into(),
            service: "Web".into(),
        });
        let canonical = format!("spiffe://{CLUSTER}.consul/ap/part1/ns/NS/dc/DC/svc/Web");
        round_trip(&input, &expected, &canonical);
        // An upper-case `DEFAULT` partition is the default partition.
        let input = format!("spiffe://{CLUSTER}.consul/ap/DEFAULT/gateway/mesh/dc/dc1");
        let canonical = format!("spiffe://{CLUSTER}.consul/gateway/mesh/dc/dc1");
        round_trip(&input, &SpiffeId::mesh_gateway(td(), "dc1"), &canonical);
    }

    #[test]
    fn agent_shapes() {
        let input = format!("spiffe://{CLUSTER}.consul/agent/client/dc/dc1/id/node-1");
        round_trip(&input, &SpiffeId::agent(td(), "dc1", "node-1"), &input);

        let input = format!("spiffe://{CLUSTER}.consul/ap/ap1/agent/client/dc/dc1/id/node-1");
        let expected = SpiffeId::Agent {
            trust_domain: td(),
            partition: "ap1".into(),
            datacenter: "dc1".into(),
            node: "node-1".into(),
        };
        round_trip(&input, &expected, &input);
    }

    #[test]
    fn server_shape() {
        let input = format!("spiffe://{CLUSTER}.consul/agent/server/dc/dc1");
        round_trip(&input, &SpiffeId::server(td(), "dc1"), &input);
        // Servers have no partition.
        assert_eq!(
            err(&format!(
                "spiffe://{CLUSTER}.consul/ap/ap1/agent/server/dc/dc1"
            )),
            "SPIFFE ID is not in the expected format"
        );
    }

    #[test]
    fn mesh_gateway_shapes() {
        let input = format!("spiffe://{CLUSTER}.consul/gateway/mesh/dc/dc1");
        round_trip(&input, &SpiffeId::mesh_gateway(td(), "dc1"), &input);

        let input = format!("spiffe://{CLUSTER}.consul/ap/ap1/gateway/mesh/dc/dc1");
        let expected = SpiffeId::MeshGateway {
            trust_domain: td(),
            partition: "ap1".into(),
            datacenter: "dc1".into(),
        };
        round_trip(&input, &expected, &input);
    }

    #[test]
    fn trust_domain_accessor() {
        for id in [
            SpiffeId::signing(td()),
            SpiffeId::service(td(), "dc1", "web"),
            SpiffeId::agent(td(), "dc1", "n"),
            SpiffeId::server(td(), "dc1"),
            SpiffeId::mesh_gateway(td(), "dc1"),
        ] {
            assert_eq!(id.trust_domain(), &td());
        }
    }

    #[test]
    fn percent_encoding_round_trips() {
        let expected = SpiffeId::Service(
            ServiceId::new(td(), "dc 1", "a/b%c d?é#")
                .with_namespace("ns/x")
                .with_partition("p q"),
        );
        let canonical = format!(
            "spiffe://{CLUSTER}.consul/ap/p%20q/ns/ns%2Fx/dc/dc%201/svc/a%2Fb%25c%20d%3F%C3%A9%23"
        );
        assert_eq!(expected.to_string(), canonical);
        round_trip(&canonical, &expected, &canonical);
        // Lower-case hex and needless escapes are accepted and canonicalised.
        let sloppy = format!(
            "spiffe://{CLUSTER}.consul/ap/p%20q/ns/ns%2fx/dc/dc%201/svc/a%2fb%25c%20d%3f%c3%a9%23"
        );
        round_trip(&sloppy, &expected, &canonical);
        let needless = format!("spiffe://{CLUSTER}.consul/ns/default/dc/dc1/svc/%77%65%62");
        let canonical = format!("spiffe://{CLUSTER}.consul/ns/default/dc/dc1/svc/web");
        round_trip(
            &needless,
            &SpiffeId::service(td(), "dc1", "web"),
            &canonical,
        );
    }

    #[test]
    fn raw_unescaped_characters_are_accepted_and_escaped_on_output() {
        let input = format!("spiffe://{CLUSTER}.consul/ns/default/dc/dc1/svc/wéb app");
        let canonical = format!("spiffe://{CLUSTER}.consul/ns/default/dc/dc1/svc/w%C3%A9b%20app");
        round_trip(
            &input,
            &SpiffeId::service(td(), "dc1", "wéb app"),
            &canonical,
        );
    }

    #[test]
    fn escaped_keywords_do_not_match() {
        assert_eq!(
            err(&format!(
                "spiffe://{CLUSTER}.consul/%6Es/default/dc/dc1/svc/web"
            )),
            "SPIFFE ID is not in the expected format"
        );
    }

    #[test]
    fn upper_case_scheme_and_host_are_normalised() {
        let input = format!(
            "SPIFFE://{}.CONSUL/ns/default/dc/dc1/svc/web",
            CLUSTER.to_uppercase()
        );
        let canonical = format!("spiffe://{CLUSTER}.consul/ns/default/dc/dc1/svc/web");
        round_trip(&input, &SpiffeId::service(td(), "dc1", "web"), &canonical);
        let input = "Spiffe://ABC-DEF.Consul";
        round_trip(
            input,
            &SpiffeId::signing(TrustDomain::parse("abc-def.consul").unwrap()),
            "spiffe://abc-def.consul",
        );
    }

    #[test]
    fn rejects_wrong_scheme() {
        for input in [
            "https://foo.consul/ns/default/dc/dc1/svc/web",
            "spiffee://foo.consul",
            "foo.consul/ns/default/dc/dc1/svc/web",
            "",
            "://foo.consul",
        ] {
            assert_eq!(
                err(input),
                "SPIFFE ID must have 'spiffe' scheme",
                "{input:?}"
            );
        }
    }

    #[test]
    fn rejects_missing_or_empty_host() {
        for input in [
            "spiffe:",
            "spiffe:foo.consul",
            "spiffe:/foo.consul",
            "spiffe://",
            "spiffe:///ns/default/dc/dc1/svc/web",
            "spiffe://?x",
        ] {
            assert_eq!(
                err(input),
                "SPIFFE ID must have a trust domain: expected 'spiffe://<trust-domain>'",
                "{input:?}"
            );
        }
    }

    #[test]
    fn rejects_userinfo_and_port() {
        assert_eq!(
            err("spiffe://user@foo.consul/ns/default/dc/dc1/svc/web"),
            "SPIFFE ID must not contain user info"
        );
        assert_eq!(
            err("spiffe://user:pw@foo.consul"),
            "SPIFFE ID must not contain user info"
        );
        assert_eq!(
            err("spiffe://foo.consul:8443/ns/default/dc/dc1/svc/web"),
            "SPIFFE ID must not contain a port"
        );
        assert_eq!(
            err("spiffe://foo.consul:"),
            "SPIFFE ID must not contain a port"
        );
    }

    #[test]
    fn rejects_query_and_fragment() {
        let base = "spiffe://foo.consul/ns/default/dc/dc1/svc/web";
        assert_eq!(
            err(&format!("{base}?a=b")),
            "SPIFFE ID must not contain a query"
        );
        assert_eq!(
            err(&format!("{base}?")),
            "SPIFFE ID must not contain a query"
        );
        assert_eq!(
            err("spiffe://foo.consul?a"),
            "SPIFFE ID must not contain a query"
        );
        assert_eq!(
            err(&format!("{base}#frag")),
            "SPIFFE ID must not contain a fragment"
        );
        assert_eq!(
            err(&format!("{base}#")),
            "SPIFFE ID must not contain a fragment"
        );
        assert_eq!(
            err("spiffe://foo.consul#a?b"),
            "SPIFFE ID must not contain a fragment"
        );
    }

    #[test]
    fn rejects_invalid_host() {
        assert_eq!(
            err("spiffe://consul/ns/default/dc/dc1/svc/web"),
            "invalid trust domain \"consul\": must contain a '.'"
        );
        assert_eq!(
            err("spiffe://foo..consul"),
            "invalid trust domain \"foo..consul\": has an empty label"
        );
        assert_eq!(
            err("spiffe://fo%6F.consul"),
            "invalid trust domain \"fo%6F.consul\": may contain only letters, digits, '-' and '.'"
        );
    }

    #[test]
    fn rejects_unknown_shapes() {
        for path in [
            "/",
            "/ns/default/dc/dc1/svc/web/",
            "/ns/default/dc/dc1/svc/web/extra",
            "/ns/default/dc/dc1",
            "/NS/default/dc/dc1/svc/web",
            "/ap/x/ap/y/ns/default/dc/dc1/svc/web",
            "/agent/client/dc/dc1",
            "/agent/dc1",
            "/agent/server/dc/dc1/id/x",
            "/gateway/terminating/dc/dc1",
            "/ap/x",
            "/a/b/c/d/e/f/g/h/i/j/k",
            "//ns/default/dc/dc1/svc/web",
        ] {
            assert_eq!(
                err(&format!("spiffe://foo.consul{path}")),
                "SPIFFE ID is not in the expected format",
                "{path}"
            );
        }
    }

    #[test]
    fn rejects_empty_segments() {
        let cases = [
            ("/ns//dc/dc1/svc/web", "namespace"),
            ("/ns/default/dc//svc/web", "datacenter"),
            ("/ns/default/dc/dc1/svc/", "service"),
            ("/ap//ns/default/dc/dc1/svc/web", "admin partition"),
            ("/agent/client/dc/dc1/id/", "node"),
            ("/agent/server/dc/", "datacenter"),
            ("/gateway/mesh/dc/", "datacenter"),
            ("/ap//gateway/mesh/dc/dc1", "admin partition"),
        ];
        for (path, segment) in cases {
            assert_eq!(
                err(&format!("spiffe://foo.consul{path}")),
                format!("SPIFFE ID has an empty {segment} segment"),
                "{path}"
            );
        }
    }

    #[test]
    fn rejects_invalid_escapes() {
        let cases = [
            ("/ns/default/dc/dc1/svc/we%zzb", "service", "%zz"),
            ("/ns/default/dc/dc%1/svc/web", "datacenter", "%1"),
            ("/ns/%/dc/dc1/svc/web", "namespace", "%"),
            ("/ap/a%g0/gateway/mesh/dc/dc1", "admin partition", "%g0"),
            ("/agent/client/dc/dc1/id/node%", "node", "%"),
        ];
        for (path, segment, escape) in cases {
            let message = err(&format!("spiffe://foo.consul{path}"));
            assert_eq!(
                message,
                format!("invalid {segment} in SPIFFE ID: invalid URL escape \"{escape}\""),
                "{path}"
            );
        }
        assert_eq!(
            err("spiffe://foo.consul/ns/default/dc/dc1/svc/%C3%28"),
            "invalid service in SPIFFE ID: escaped bytes are not valid UTF-8"
        );
    }

    #[test]
    fn rejects_control_characters() {
        assert_eq!(
            err("spiffe://foo.consul/ns/default/dc/dc1/svc/we\nb"),
            "SPIFFE ID contains a control character"
        );
        assert_eq!(
            err("spiffe://foo.consul\0"),
            "SPIFFE ID contains a control character"
        );
    }

    #[test]
    fn length_limit_is_2048_bytes() {
        let prefix = "spiffe://foo.consul/ns/default/dc/dc1/svc/";
        let ok = format!("{prefix}{}", "a".repeat(MAX_ID_LEN - prefix.len()));
        assert_eq!(ok.len(), MAX_ID_LEN);
        assert_eq!(parse(&ok).unwrap().to_string(), ok);

        let long = format!("{ok}a");
        assert_eq!(
            err(&long),
            "SPIFFE ID is 2049 bytes long, over the 2048-byte limit"
        );
        // Over-long input is refused before anything else is looked at.
        assert_eq!(
            err(&format!("http://{}", "x".repeat(MAX_ID_LEN))),
            "SPIFFE ID is 2055 bytes long, over the 2048-byte limit"
        );
    }

    #[test]
    fn canonical_form_must_fit_the_limit_too() {
        // 2048 bytes of input whose canonical form escapes the spaces and so grows.
        let prefix = "spiffe://foo.consul/ns/default/dc/dc1/svc/";
        let input = format!("{prefix}{}", " ".repeat(MAX_ID_LEN - prefix.len()));
        let message = err(&input);
        assert!(
            message.starts_with("SPIFFE ID is ") && message.ends_with("over the 2048-byte limit"),
            "{message}"
        );
    }

    #[test]
    fn validate_catches_hand_built_values_that_would_not_round_trip() {
        let cases = [
            (
                SpiffeId::service(td(), "", "web"),
                "SPIFFE ID has an empty datacenter segment",
            ),
            (
                SpiffeId::service(td(), "dc1", ""),
                "SPIFFE ID has an empty service segment",
            ),
            (
                SpiffeId::agent(td(), "dc1", ""),
                "SPIFFE ID has an empty node segment",
            ),
            (
                SpiffeId::server(td(), ""),
                "SPIFFE ID has an empty datacenter segment",
            ),
            (
                SpiffeId::mesh_gateway(td(), ""),
                "SPIFFE ID has an empty datacenter segment",
            ),
            (
                SpiffeId::Service(ServiceId {
                    namespace: String::new(),
                    ..ServiceId::new(td(), "dc1", "web")
                }),
                "SPIFFE ID has an empty namespace segment",
            ),
            (
                SpiffeId::Service(ServiceId {
                    partition: String::new(),
                    ..ServiceId::new(td(), "dc1", "web")
                }),
                "SPIFFE ID has an empty admin partition segment",
            ),
            (
                SpiffeId::MeshGateway {
                    trust_domain: td(),
                    partition: "Part".into(),
                    datacenter: "dc1".into(),
                },
                "admin partition \"Part\" in SPIFFE ID must be lower-case",
            ),
            (
                SpiffeId::service(td(), "dc1", "x".repeat(MAX_ID_LEN)),
                "SPIFFE ID is 2123 bytes long, over the 2048-byte limit",
            ),
        ];
        for (id, message) in cases {
            assert_eq!(id.validate().unwrap_err().to_string(), message, "{id:?}");
        }
        SpiffeId::signing(td()).validate().unwrap();
    }

    #[test]
    fn with_partition_and_namespace_follow_consul_defaults() {
        let id = ServiceId::new(td(), "dc1", "web")
            .with_partition("")
            .with_namespace("");
        assert_eq!(id.partition, "default");
        assert_eq!(id.namespace, "default");
        let id = ServiceId::new(td(), "dc1", "web").with_partition("Finance");
        assert_eq!(id.partition, "finance");
        id.validate().unwrap();
    }

    #[test]
    fn display_of_hand_built_values_follows_consul() {
        // Consul's PartitionOrDefault / NamespaceOrDefault: an unset partition writes no
        // prefix, an upper-case one is lower-cased, an unset namespace writes `default`.
        let id = ServiceId {
            trust_domain: td(),
            partition: "Finance".into(),
            namespace: String::new(),
            datacenter: "dc1".into(),
            service: "web".into(),
        };
        assert_eq!(
            id.to_string(),
            format!("spiffe://{CLUSTER}.consul/ap/finance/ns/default/dc/dc1/svc/web")
        );
        let id = ServiceId {
            partition: String::new(),
            ..id
        };
        assert_eq!(
            id.to_string(),
            format!("spiffe://{CLUSTER}.consul/ns/default/dc/dc1/svc/web")
        );
    }

    #[test]
    fn service_id_from_str_requires_a_service() {
        let input = format!("spiffe://{CLUSTER}.consul/agent/server/dc/dc1");
        assert_eq!(
            input.parse::<ServiceId>().unwrap_err().to_string(),
            format!("SPIFFE ID {input} is not a service identity")
        );
        assert_eq!(
            "nope".parse::<ServiceId>().unwrap_err(),
            IdError::WrongScheme
        );
    }
}
