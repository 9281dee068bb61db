//! `trellis tls ca create` and `trellis tls cert create`: the agent TLS CA and the server,
//! client and CLI certificates for the server port, with `consul tls`'s file names, SANs, key
//! types and validity (Consul's `command/tls` and `tlsutil/generate.go`).
//!
//! The certificates are built by pure functions of their inputs ([`generate_ca`], [`plan`],
//! [`sign_cert`], [`free_file_names`]); [`run`] only reads and writes files in the current
//! directory, as Consul's commands do.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use clap::{Args, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, NameConstraints,
    PublicKeyData, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};
use x509_parser::extensions::GeneralName;

/// `trellis tls ...` (Consul's `consul tls`).
#[derive(Subcommand, Debug)]
pub enum TlsCommand {
    /// The agent TLS certificate authority.
    #[command(subcommand)]
    Ca(TlsCaCommand),
    /// Agent TLS certificates.
    #[command(subcommand)]
    Cert(TlsCertCommand),
}

/// `trellis tls ca ...`.
#[derive(Subcommand, Debug)]
pub enum TlsCaCommand {
    /// Create a self-signed CA for the server port's TLS: writes `<domain>-agent-ca.pem` and
    /// `<domain>-agent-ca-key.pem` (EC P-256, SEC1) in the current directory, never over
    /// existing files. Its subject is `CN=Trellis Agent CA <serial>` (Consul writes
    /// `Consul Agent CA <serial>` and HashiCorp's address); file names, extensions and key
    /// type are Consul's.
    Create(CaCreateArgs),
}

/// `trellis tls cert ...`.
#[derive(Subcommand, Debug)]
pub enum TlsCertCommand {
    /// Create a certificate signed by the agent CA for a server (`-server`), a client agent
    /// (`-client`) or the CLI (`-cli`): writes `<dc>-<kind>-<domain>-<n>.pem` and
    /// `<dc>-<kind>-<domain>-<n>-key.pem` in the current directory, `<n>` the first free index.
    Create(CertCreateArgs),
}

/// Flags of `trellis tls ca create`, named as Consul's.
#[derive(Args, Debug)]
pub struct CaCreateArgs {
    /// Number of days the CA is valid for.
    #[arg(long, default_value_t = 1825, value_parser = clap::value_parser!(u32).range(1..))]
    pub days: u32,
    /// The DNS domain of the cluster; names the files, and is permitted by `-name-constraint`.
    #[arg(long, default_value = "consul")]
    pub domain: String,
    /// Add a critical name constraint: the CA signs only for `localhost`, `-domain` and
    /// `-additional-name-constraint` DNS names.
    #[arg(long = "name-constraint")]
    pub name_constraint: bool,
    /// Another DNS name the CA may sign for (repeatable; only with `-name-constraint`).
    #[arg(long = "additional-name-constraint", value_name = "DNS")]
    pub additional_name_constraint: Vec<String>,
    /// The CA's common name (default `Trellis Agent CA <serial>`).
    #[arg(long = "common-name")]
    pub common_name: Option<String>,
}

/// Flags of `trellis tls cert create`, named as Consul's.
#[derive(Args, Debug)]
pub struct CertCreateArgs {
    /// Generate a server certificate (`server.<dc>.<domain>`).
    #[arg(long)]
    pub server: bool,
    /// Generate a client agent certificate (`client.<dc>.<domain>`).
    #[arg(long)]
    pub client: bool,
    /// Generate a CLI certificate (`cli.<dc>.<domain>`).
    #[arg(long)]
    pub cli: bool,
    /// With `-server`: also name `<node>.server.<dc>.<domain>`.
    #[arg(long)]
    pub node: Option<String>,
    /// The datacenter.
    #[arg(long, default_value = "dc1")]
    pub dc: String,
    /// The DNS domain of the cluster.
    #[arg(long, default_value = "consul")]
    pub domain: String,
    /// The CA certificate (default `<domain>-agent-ca.pem`).
    #[arg(long)]
    pub ca: Option<String>,
    /// The CA's private key (default `<domain>-agent-ca-key.pem`).
    #[arg(long)]
    pub key: Option<String>,
    /// Number of days the certificate is valid for, from now.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..))]
    pub days: u32,
    /// Another DNS name for the SANs (repeatable; `localhost` is always included).
    #[arg(long = "additional-dnsname", value_name = "DNS")]
    pub additional_dnsname: Vec<String>,
    /// Another IP address for the SANs (repeatable; `127.0.0.1` is always included).
    #[arg(long = "additional-ipaddress", value_name = "IP")]
    pub additional_ipaddress: Vec<IpAddr>,
}

/// A PEM certificate and its PEM private key.
pub struct Generated {
    pub cert_pem: String,
    /// SEC1 (`EC PRIVATE KEY`), as Consul writes it.
    pub key_pem: String,
}

/// What a CA is made from.
#[derive(Debug, Clone)]
pub struct CaOptions {
    pub days: u32,
    /// Permitted DNS subtrees (critical), or none.
    pub permitted_dns: Vec<String>,
    pub common_name: Option<String>,
}

/// Which kind of certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Server { node: Option<String> },
    Client,
    Cli,
}

/// What `tls cert create` will put in a certificate, decided from the flags alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPlan {
    /// The common name, and the name the certificate is checked against.
    pub name: String,
    /// File name prefix: `<dc>-<kind>-<domain>`.
    pub prefix: String,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub eku: Vec<ExtendedKeyUsagePurpose>,
}

/// The SANs, name and file prefix of a certificate, as Consul's `tls cert create` builds them:
/// the extra DNS names first, then (server) `<node>.server.<dc>.<domain>`,
/// `server.<dc>.<domain>`, `localhost`; the extra IPs then `127.0.0.1`. A CLI certificate
/// names only `cli.<dc>.<domain>` and `localhost`, with no `127.0.0.1` and no EKU.
pub fn plan(
    kind: &Kind,
    dc: &str,
    domain: &str,
    extra_dns: &[String],
    extra_ips: &[IpAddr],
) -> CertPlan {
    let mut dns_names: Vec<String> = extra_dns
        .iter()
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
        .collect();
    let mut ip_addresses = extra_ips.to_vec();
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let (label, eku) = match kind {
        Kind::Server { node } => {
            if let Some(node) = node {
                dns_names.push(format!("{node}.server.{dc}.{domain}"));
            }
            (
                "server",
                vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ],
            )
        }
        Kind::Client => (
            "client",
            vec![
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth,
            ],
        ),
        Kind::Cli => {
            dns_names.clear();
            ("cli", vec![])
        }
    };
    let name = format!("{label}.{dc}.{domain}");
    dns_names.push(name.clone());
    dns_names.push("localhost".to_string());
    if *kind != Kind::Cli {
        ip_addresses.push(localhost);
    }
    CertPlan {
        name,
        prefix: format!("{dc}-{label}-{domain}"),
        dns_names,
        ip_addresses,
        eku,
    }
}

/// Consul's key identifier: the ASCII of the colon-separated lower-case hex SHA-256 of the
/// DER SubjectPublicKeyInfo (`tlsutil.keyID`).
fn key_id(key: &impl PublicKeyData) -> Vec<u8> {
    let digest =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &key.subject_public_key_info());
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
        .into_bytes()
}

/// A random serial number below 2^128 (never zero), as Consul's `GenerateSerialNumber`.
fn random_serial() -> anyhow::Result<u128> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| anyhow!("no random bytes"))?;
    Ok(u128::from_be_bytes(bytes).max(1))
}

fn serial_number(serial: u128) -> SerialNumber {
    let bytes = serial.to_be_bytes();
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(15);
    SerialNumber::from_slice(&bytes[first..])
}

/// A fresh EC P-256 key: rcgen's signer and the SEC1 PEM Consul writes.
fn fresh_key() -> anyhow::Result<(KeyPair, String)> {
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING)
        .map_err(|e| anyhow!("generating a key: {e}"))?;
    let sec1 = key
        .private_key()
        .as_der()
        .map_err(|e| anyhow!("encoding a key: {e}"))?;
    let pkcs8 = key
        .to_pkcs8v1()
        .map_err(|e| anyhow!("encoding a key: {e}"))?;
    let signer = KeyPair::try_from(pkcs8.as_ref()).context("loading the generated key")?;
    let pem = pem_encode("EC PRIVATE KEY", sec1.as_ref());
    Ok((signer, pem))
}

fn pem_encode(tag: &str, der: &[u8]) -> String {
    let config = ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF);
    ::pem::encode_config(&::pem::Pem::new(tag, der.to_vec()), config)
}

fn validity(params: &mut CertificateParams, now: OffsetDateTime, days: u32) {
    let now = now.replace_nanosecond(0).unwrap_or(now);
    params.not_before = now;
    params.not_after = now + Duration::days(i64::from(days));
}

/// A self-signed CA valid from `now` for `opts.days`: EC P-256, IsCA, key usage certificate
/// signing, CRL signing and digital signature, Consul's key identifiers, and with
/// `permitted_dns` a critical name constraint.
pub fn generate_ca(opts: &CaOptions, now: OffsetDateTime) -> anyhow::Result<Generated> {
    let (key, key_pem) = fresh_key()?;
    let serial = random_serial()?;
    let mut params = CertificateParams::default();
    params.serial_number = Some(serial_number(serial));
    let mut dn = DistinguishedName::new();
    let cn = opts
        .common_name
        .clone()
        .unwrap_or_else(|| format!("Trellis Agent CA {serial}"));
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    validity(&mut params, now, opts.days);
    params.key_identifier_method = KeyIdMethod::PreSpecified(key_id(&key));
    params.use_authority_key_identifier_extension = true;
    if !opts.permitted_dns.is_empty() {
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: opts
                .permitted_dns
                .iter()
                .map(|d| GeneralSubtree::DnsName(d.clone()))
                .collect(),
            excluded_subtrees: vec![],
        });
    }
    let cert = params.self_signed(&key)?;
    Ok(Generated {
        cert_pem: cert.pem().replace("\r\n", "\n"),
        key_pem,
    })
}

/// Whether `name` is within the permitted DNS subtree `constraint` (Go's rules: equal, or a
/// subdomain; a constraint with a leading dot permits only subdomains).
fn dns_permitted(name: &str, constraint: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let c = constraint.to_ascii_lowercase();
    if c.is_empty() {
        return true;
    }
    if let Some(suffix) = c.strip_prefix('.') {
        return name.ends_with(&format!(".{suffix}"));
    }
    name == c || name.ends_with(&format!(".{c}"))
}

/// Signs a certificate for `plan` with the CA, valid from `now` for `days`, after checking
/// what Consul's `tlsutil.Verify` would refuse: the CA certificate is a CA, valid now, its
/// key is `ca_key_pem`, and its name constraints permit every DNS name.
pub fn sign_cert(
    plan: &CertPlan,
    ca_cert_pem: &str,
    ca_key_pem: &str,
    days: u32,
    now: OffsetDateTime,
) -> anyhow::Result<Generated> {
    let ca_pem =
        ::pem::parse(ca_cert_pem).map_err(|e| anyhow!("the CA certificate is not PEM: {e}"))?;
    if ca_pem.tag() != "CERTIFICATE" {
        bail!(
            "the CA certificate's first PEM block is {:?}, not CERTIFICATE",
            ca_pem.tag()
        );
    }
    let (_, ca) = x509_parser::parse_x509_certificate(ca_pem.contents())
        .map_err(|e| anyhow!("the CA certificate cannot be parsed: {e}"))?;
    if !ca.is_ca() {
        bail!("the CA certificate is not a CA (no basic constraints with CA:TRUE)");
    }
    if !ca
        .validity()
        .is_valid_at(x509_parser::time::ASN1Time::from(now))
    {
        bail!(
            "the CA certificate is not valid now (valid from {} to {})",
            ca.validity().not_before,
            ca.validity().not_after
        );
    }
    let ca_key = KeyPair::from_pem(ca_key_pem)
        .map_err(|e| anyhow!("the CA key cannot be read as a private key: {e}"))?;
    if ca.public_key().subject_public_key.data.as_ref() != ca_key.public_key_raw() {
        bail!("the CA key does not match the CA certificate");
    }
    if let Ok(Some(nc)) = ca.name_constraints() {
        fn dns_names<'a>(
            subtrees: &Option<Vec<x509_parser::extensions::GeneralSubtree<'a>>>,
        ) -> Vec<&'a str> {
            subtrees
                .iter()
                .flatten()
                .filter_map(|s| match s.base {
                    GeneralName::DNSName(d) => Some(d),
                    _ => None,
                })
                .collect()
        }
        let permitted = dns_names(&nc.value.permitted_subtrees);
        let excluded = dns_names(&nc.value.excluded_subtrees);
        for name in &plan.dns_names {
            let allowed = permitted.is_empty() || permitted.iter().any(|c| dns_permitted(name, c));
            if !allowed || excluded.iter().any(|c| dns_permitted(name, c)) {
                bail!("the CA's name constraints do not allow the DNS name {name:?}");
            }
        }
    }
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, &ca_key)
        .context("using the CA certificate as issuer")?;

    let (key, key_pem) = fresh_key()?;
    let mut params = CertificateParams::default();
    params.serial_number = Some(serial_number(random_serial()?));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, plan.name.clone());
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = plan.eku.clone();
    validity(&mut params, now, days);
    params.key_identifier_method = KeyIdMethod::PreSpecified(key_id(&key));
    params.use_authority_key_identifier_extension = true;
    params.subject_alt_names = plan
        .dns_names
        .iter()
        .map(|d| {
            Ok(SanType::DnsName(
                d.clone()
                    .try_into()
                    .map_err(|_| anyhow!("{d:?} is not a valid DNS name"))?,
            ))
        })
        .chain(
            plan.ip_addresses
                .iter()
                .map(|ip| Ok(SanType::IpAddress(*ip))),
        )
        .collect::<anyhow::Result<_>>()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Generated {
        cert_pem: cert.pem().replace("\r\n", "\n"),
        key_pem,
    })
}

/// The first `<prefix>-<n>.pem` / `<prefix>-<n>-key.pem` pair (n in 0..=10000) of which
/// neither file exists, as Consul picks it.
pub fn free_file_names(prefix: &str, exists: impl Fn(&str) -> bool) -> Option<(String, String)> {
    (0..=10_000).find_map(|i| {
        let cert = format!("{prefix}-{i}.pem");
        let key = format!("{prefix}-{i}-key.pem");
        (!exists(&cert) && !exists(&key)).then_some((cert, key))
    })
}

/// Writes a new file (never over an existing one) with `mode` (before the umask).
fn write_new(path: &str, contents: &str, mode: u32) -> anyhow::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {path}"))?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {path}"))?;
    println!("==> Saved {path}");
    Ok(())
}

fn exists(path: &str) -> bool {
    Path::new(path).symlink_metadata().is_ok()
}

/// Runs `trellis tls ...` in the current directory.
pub fn run(cmd: TlsCommand) -> anyhow::Result<()> {
    match cmd {
        TlsCommand::Ca(TlsCaCommand::Create(args)) => ca_create(args),
        TlsCommand::Cert(TlsCertCommand::Create(args)) => cert_create(args),
    }
}

fn ca_create(args: CaCreateArgs) -> anyhow::Result<()> {
    let cert_file = format!("{}-agent-ca.pem", args.domain);
    let key_file = format!("{}-agent-ca-key.pem", args.domain);
    for f in [&cert_file, &key_file] {
        if exists(f) {
            bail!("{f} already exists");
        }
    }
    let permitted_dns = if args.name_constraint {
        let mut c: Vec<String> = args
            .additional_name_constraint
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        c.push(args.domain.clone());
        c.push("localhost".to_string());
        c
    } else {
        if !args.additional_name_constraint.is_empty() {
            eprintln!("==> -additional-name-constraint ignored: it needs -name-constraint");
        }
        vec![]
    };
    let ca = generate_ca(
        &CaOptions {
            days: args.days,
            permitted_dns,
            common_name: args.common_name,
        },
        OffsetDateTime::now_utc(),
    )?;
    write_new(&cert_file, &ca.cert_pem, 0o666)?;
    write_new(&key_file, &ca.key_pem, 0o600)?;
    Ok(())
}

fn cert_create(args: CertCreateArgs) -> anyhow::Result<()> {
    let kind = match (args.server, args.client, args.cli) {
        (true, false, false) => Kind::Server {
            node: args.node.clone().filter(|n| !n.is_empty()),
        },
        (false, true, false) => Kind::Client,
        (false, false, true) => Kind::Cli,
        _ => bail!("Please provide either -server, -client, or -cli"),
    };
    if args.node.as_deref().is_some_and(|n| !n.is_empty()) && !args.server {
        bail!("-node requires -server");
    }
    let plan = plan(
        &kind,
        &args.dc,
        &args.domain,
        &args.additional_dnsname,
        &args.additional_ipaddress,
    );
    let (cert_file, key_file) = free_file_names(&plan.prefix, exists)
        .context("Could not find a filename that doesn't already exist")?;
    let ca_file = args
        .ca
        .unwrap_or_else(|| format!("{}-agent-ca.pem", args.domain));
    let ca_key_file = args
        .key
        .unwrap_or_else(|| format!("{}-agent-ca-key.pem", args.domain));
    let ca_pem = std::fs::read_to_string(&ca_file)
        .with_context(|| format!("cannot read the CA certificate {ca_file}"))?;
    let ca_key_pem = std::fs::read_to_string(&ca_key_file)
        .with_context(|| format!("cannot read the CA key {ca_key_file}"))?;
    if args.server {
        println!(
            "==> WARNING: Server Certificates grants authority to become a\n    \
             server and access all state in the cluster including root keys\n    \
             and all ACL tokens. Do not distribute them to production hosts\n    \
             that are not server nodes. Store them as securely as CA keys."
        );
    }
    println!("==> Using {ca_file} and {ca_key_file}");
    let cert = sign_cert(
        &plan,
        &ca_pem,
        &ca_key_pem,
        args.days,
        OffsetDateTime::now_utc(),
    )
    .with_context(|| format!("cannot sign with {ca_file} and {ca_key_file}"))?;
    write_new(&cert_file, &cert.cert_pem, 0o666)?;
    write_new(&key_file, &cert.key_pem, 0o600)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::certificate::X509Certificate;
    use x509_parser::extensions::ParsedExtension;

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc().replace_nanosecond(0).unwrap()
    }

    fn der(pem: &str) -> Vec<u8> {
        ::pem::parse(pem).unwrap().into_contents()
    }

    fn ca(permitted: &[&str]) -> Generated {
        generate_ca(
            &CaOptions {
                days: 1825,
                permitted_dns: permitted.iter().map(|s| s.to_string()).collect(),
                common_name: None,
            },
            now(),
        )
        .unwrap()
    }

    fn sans(cert: &X509Certificate<'_>) -> (Vec<String>, Vec<String>) {
        let mut dns = vec![];
        let mut ips = vec![];
        if let Some(san) = cert.subject_alternative_name().unwrap() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(d) => dns.push(d.to_string()),
                    GeneralName::IPAddress(b) => {
                        let ip: IpAddr = match b.len() {
                            4 => <[u8; 4]>::try_from(*b).unwrap().into(),
                            _ => <[u8; 16]>::try_from(*b).unwrap().into(),
                        };
                        ips.push(ip.to_string());
                    }
                    other => panic!("unexpected SAN {other:?}"),
                }
            }
        }
        (dns, ips)
    }

    fn skid<'a>(cert: &'a X509Certificate<'_>) -> &'a [u8] {
        cert.extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0),
                _ => None,
            })
            .expect("SKID")
    }

    fn akid<'a>(cert: &'a X509Certificate<'_>) -> &'a [u8] {
        cert.extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(k) => {
                    k.key_identifier.as_ref().map(|k| k.0)
                }
                _ => None,
            })
            .expect("AKID")
    }

    /// Checks `cert`'s signature with `ca`'s P-256 public key.
    fn assert_signed_by(cert: &X509Certificate<'_>, ca: &X509Certificate<'_>) {
        let key = aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
            ca.public_key().subject_public_key.data.as_ref(),
        );
        key.verify(
            cert.tbs_certificate.as_ref(),
            cert.signature_value.data.as_ref(),
        )
        .expect("signed by the CA");
        assert_eq!(cert.issuer(), ca.subject());
        assert_eq!(akid(cert), skid(ca));
    }

    #[test]
    fn ca_has_consuls_extensions_key_ids_and_validity() {
        let start = now();
        let g = ca(&[]);
        assert!(g.key_pem.starts_with("-----BEGIN EC PRIVATE KEY-----\n"));
        assert!(g.cert_pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        let der = der(&g.cert_pem);
        let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(c.is_ca());
        let bc = c.basic_constraints().unwrap().unwrap();
        assert!(bc.critical && bc.value.ca);
        let ku = c.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign() && ku.digital_signature());
        assert!(!ku.key_encipherment());
        assert!(c.extended_key_usage().unwrap().is_none());
        assert!(c.name_constraints().unwrap().is_none());
        let cn = c
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap();
        let serial = cn.strip_prefix("Trellis Agent CA ").expect(cn);
        assert_eq!(
            serial,
            c.serial.to_string(),
            "CN carries the decimal serial"
        );
        assert!(c.serial.bits() <= 128);
        assert_eq!(c.subject(), c.issuer());
        assert_signed_by(&c, &c);
        // Consul's key ID: ASCII colon-hex of SHA-256 over the SPKI.
        let want = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, c.public_key().raw);
        let want: Vec<String> = want.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(skid(&c), want.join(":").as_bytes());
        let v = c.validity();
        assert_eq!(v.not_before.to_datetime(), start);
        assert_eq!(
            v.not_after.to_datetime() - v.not_before.to_datetime(),
            Duration::days(1825)
        );
        // The key is P-256 and the certificate's.
        let key = KeyPair::from_pem(&g.key_pem).unwrap();
        assert_eq!(key.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(
            key.public_key_raw(),
            c.public_key().subject_public_key.data.as_ref()
        );
    }

    #[test]
    fn ca_name_constraint_is_critical_and_permits_the_listed_dns_names() {
        let g = ca(&["example.org", "consul", "localhost"]);
        let der = der(&g.cert_pem);
        let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
        let nc = c.name_constraints().unwrap().unwrap();
        assert!(nc.critical);
        let permitted: Vec<String> = nc
            .value
            .permitted_subtrees
            .as_ref()
            .unwrap()
            .iter()
            .map(|s| match s.base {
                GeneralName::DNSName(d) => d.to_string(),
                ref other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(permitted, ["example.org", "consul", "localhost"]);
        assert!(nc.value.excluded_subtrees.is_none());
    }

    #[test]
    fn server_plan_and_certificate() {
        let extra_ip: IpAddr = "10.0.0.5".parse().unwrap();
        let p = plan(
            &Kind::Server {
                node: Some("s1".into()),
            },
            "dc2",
            "example",
            &[" extra.example ".into(), "".into()],
            &[extra_ip],
        );
        assert_eq!(p.name, "server.dc2.example");
        assert_eq!(p.prefix, "dc2-server-example");
        let g_ca = ca(&[]);
        let start = now();
        let g = sign_cert(&p, &g_ca.cert_pem, &g_ca.key_pem, 30, start).unwrap();
        assert!(g.key_pem.starts_with("-----BEGIN EC PRIVATE KEY-----\n"));
        let (ca_der, der) = (der(&g_ca.cert_pem), der(&g.cert_pem));
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_signed_by(&c, &ca);
        assert_eq!(
            sans(&c),
            (
                vec![
                    "extra.example".to_string(),
                    "s1.server.dc2.example".into(),
                    "server.dc2.example".into(),
                    "localhost".into()
                ],
                vec!["10.0.0.5".to_string(), "127.0.0.1".into()]
            )
        );
        let cn = c.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "server.dc2.example");
        let eku = c.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth && eku.other.is_empty());
        let ku = c.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && ku.key_encipherment());
        assert!(!ku.key_cert_sign() && !ku.crl_sign());
        assert!(!c.is_ca());
        assert!(c.basic_constraints().unwrap().is_some(), "CA:FALSE present");
        assert!(c.serial.bits() <= 128);
        let v = c.validity();
        assert_eq!(v.not_before.to_datetime(), start);
        assert_eq!(v.not_after.to_datetime() - start, Duration::days(30));
        let key = KeyPair::from_pem(&g.key_pem).unwrap();
        assert_eq!(
            key.public_key_raw(),
            c.public_key().subject_public_key.data.as_ref()
        );
        assert_ne!(c.public_key().raw, ca.public_key().raw, "a fresh key");
    }

    #[test]
    fn client_and_cli_plans() {
        let p = plan(&Kind::Client, "dc1", "consul", &["x.consul".into()], &[]);
        assert_eq!(p.name, "client.dc1.consul");
        assert_eq!(p.prefix, "dc1-client-consul");
        assert_eq!(p.dns_names, ["x.consul", "client.dc1.consul", "localhost"]);
        assert_eq!(p.ip_addresses, [IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        assert_eq!(
            p.eku,
            [
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth
            ]
        );
        let p = plan(&Kind::Cli, "dc1", "consul", &["x.consul".into()], &[]);
        assert_eq!(p.name, "cli.dc1.consul");
        assert_eq!(p.prefix, "dc1-cli-consul");
        assert_eq!(p.dns_names, ["cli.dc1.consul", "localhost"]);
        assert!(p.ip_addresses.is_empty() && p.eku.is_empty());

        let g_ca = ca(&[]);
        let g = sign_cert(&p, &g_ca.cert_pem, &g_ca.key_pem, 365, now()).unwrap();
        let der = der(&g.cert_pem);
        let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(
            sans(&c),
            (vec!["cli.dc1.consul".into(), "localhost".into()], vec![])
        );
        assert!(c.extended_key_usage().unwrap().is_none());
    }

    #[test]
    fn refuses_a_key_that_is_not_the_cas_and_a_non_ca_certificate() {
        let (a, b) = (ca(&[]), ca(&[]));
        let p = plan(&Kind::Client, "dc1", "consul", &[], &[]);
        let err = sign_cert(&p, &a.cert_pem, &b.key_pem, 365, now())
            .err()
            .unwrap();
        assert!(err.to_string().contains("does not match"), "{err}");
        let leaf = sign_cert(&p, &a.cert_pem, &a.key_pem, 365, now()).unwrap();
        let err = sign_cert(&p, &leaf.cert_pem, &leaf.key_pem, 365, now())
            .err()
            .unwrap();
        assert!(err.to_string().contains("not a CA"), "{err}");
        let err = sign_cert(&p, &a.key_pem, &a.key_pem, 365, now())
            .err()
            .unwrap();
        assert!(err.to_string().contains("not CERTIFICATE"), "{err}");
        let late = now() + Duration::days(1826);
        let err = sign_cert(&p, &a.cert_pem, &a.key_pem, 365, late)
            .err()
            .unwrap();
        assert!(err.to_string().contains("not valid now"), "{err}");
    }

    #[test]
    fn name_constraints_are_enforced_when_signing() {
        let g = ca(&["consul", "localhost"]);
        let ok = plan(&Kind::Server { node: None }, "dc1", "consul", &[], &[]);
        sign_cert(&ok, &g.cert_pem, &g.key_pem, 365, now()).unwrap();
        let bad = plan(
            &Kind::Server { node: None },
            "dc1",
            "consul",
            &["evil.org".into()],
            &[],
        );
        let err = sign_cert(&bad, &g.cert_pem, &g.key_pem, 365, now())
            .err()
            .unwrap();
        assert!(err.to_string().contains("evil.org"), "{err}");
        assert!(dns_permitted("a.b.consul", "consul"));
        assert!(dns_permitted("consul", "consul"));
        assert!(!dns_permitted("notconsul", "consul"));
        assert!(!dns_permitted("consul", ".consul"));
        assert!(dns_permitted("x.consul", ".consul"));
    }

    #[test]
    fn file_names_take_the_first_free_index() {
        let taken = ["dc1-server-consul-0.pem", "dc1-server-consul-1-key.pem"];
        let names = free_file_names("dc1-server-consul", |f| taken.contains(&f)).unwrap();
        assert_eq!(
            names,
            (
                "dc1-server-consul-2.pem".to_string(),
                "dc1-server-consul-2-key.pem".to_string()
            )
        );
        assert_eq!(free_file_names("p", |_| true), None);
    }

    #[test]
    fn serial_numbers_are_minimal_positive_integers() {
        assert_eq!(serial_number(1).to_bytes(), [1]);
        assert_eq!(serial_number(0x80_00).to_bytes(), [0x80, 0]);
        assert_eq!(serial_number(u128::MAX).len(), 16);
    }
}
