//! A client agent's side of auto-encrypt (Consul's `auto_encrypt { tls = true }`): the CSR for
//! its agent identity, asking the servers until one signs it, and when to ask again.
//!
//! The key is made here and never leaves the agent; the servers see only the CSR. The
//! certificate is handed to the server port's TLS ([`RpcTls::set_client_identity`]), so every
//! connection opened from then on presents it.

use std::time::{Duration, SystemTime};

use trellis_tls::rpc::RpcTls;

use crate::{AutoEncryptSignRequest, Client, Error};

/// The part of a certificate's lifetime after which it is renewed, at the earliest and the
/// latest (Consul renews a leaf between 60 % and 90 % of its lifetime, spread at random).
const RENEW_BETWEEN: (f64, f64) = (0.6, 0.9);

/// The agent SPIFFE ID a client agent asks for, in the placeholder trust domain the servers
/// replace with theirs: `spiffe://unknown/agent/client/dc/<dc>/id/<node>`.
pub fn agent_uri(datacenter: &str, node: &str) -> Result<String, Error> {
    Ok(trellis_ca::agent_placeholder_uri(datacenter, node)?)
}

/// The least time between two renewals, however short-lived the certificates.
pub const MIN_RENEW_AFTER: Duration = Duration::from_secs(1);

/// When a certificate valid until `valid_before`, received at `received` (its `NotBefore` is
/// backdated, so the lifetime counts from receipt), is renewed: between 60 % and 90 % of its
/// remaining lifetime, at `rand01` (a uniform sample of `[0, 1)`; clamped) of that span, and
/// never sooner than [`MIN_RENEW_AFTER`].
pub fn renew_at(received: SystemTime, valid_before: SystemTime, rand01: f64) -> SystemTime {
    let lifetime = valid_before
        .duration_since(received)
        .unwrap_or(Duration::ZERO);
    let r = if rand01.is_finite() {
        rand01.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let part = RENEW_BETWEEN.0 + (RENEW_BETWEEN.1 - RENEW_BETWEEN.0) * r;
    received + lifetime.mul_f64(part).max(MIN_RENEW_AFTER)
}

/// A certificate obtained: when it was issued for and when to renew it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Obtained {
    /// The SPIFFE ID it certifies (in the cluster's trust domain).
    pub uri: String,
    /// Its `NotAfter`.
    pub valid_before: SystemTime,
    /// When to ask for the next one.
    pub renew_at: SystemTime,
}

/// Asks the servers at `servers`, one after another, to sign a fresh key for this agent
/// (`node` in `datacenter`), and sets the certificate as the one `tls` presents. The first
/// server that signs ends the round; a refusal (wrong datacenter, auto-encrypt off) is
/// returned at once, since every server answers the same. When none answers, the last
/// failure is returned.
pub async fn obtain(
    client: &Client,
    servers: &[String],
    tls: &RpcTls,
    datacenter: &str,
    node: &str,
) -> Result<Obtained, Error> {
    let leaf = trellis_ca::leaf_key_and_csr(&agent_uri(datacenter, node)?)?;
    let req = AutoEncryptSignRequest {
        datacenter: datacenter.to_string(),
        csr: leaf.csr_pem.clone(),
    };
    let mut last = Error::Internal("no auto-encrypt server addresses available for use".into());
    for addr in servers {
        match client.auto_encrypt_sign(addr, &req).await {
            Ok(resp) => {
                let cert = resp.issued_cert;
                tls.set_client_identity(&cert.cert_pem, &leaf.private_key_pem)
                    .map_err(|e| Error::Internal(e.to_string()))?;
                let time = |s: &str| {
                    humantime::parse_rfc3339_weak(s).map_err(|e| {
                        Error::Internal(format!("auto-encrypt certificate validity {s:?}: {e}"))
                    })
                };
                let (after, before) = (time(&cert.valid_after)?, time(&cert.valid_before)?);
                let received = SystemTime::now().max(after);
                return Ok(Obtained {
                    uri: cert.service_uri,
                    valid_before: before,
                    renew_at: renew_at(received, before, rand::random()),
                });
            }
            Err(e @ (Error::BadRequest(_) | Error::Forbidden(_))) => return Err(e),
            Err(e) => {
                tracing::debug!(server = %addr, error = %e, "auto-encrypt: no certificate from this server");
                last = e;
            }
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_asks_for_its_node_in_the_placeholder_trust_domain() {
        assert_eq!(
            agent_uri("dc1", "node-a").unwrap(),
            "spiffe://unknown/agent/client/dc/dc1/id/node-a"
        );
    }

    #[test]
    fn renewal_falls_between_sixty_and_ninety_percent_of_the_lifetime() {
        let after = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let before = after + Duration::from_secs(1_000);
        let at = |r: f64| renew_at(after, before, r).duration_since(after).unwrap();
        assert_eq!(at(0.0), Duration::from_secs(600));
        assert_eq!(at(1.0), Duration::from_secs(900));
        assert_eq!(at(0.5), Duration::from_secs(750));
        // Out-of-range samples are clamped; a certificate already past its end renews at once.
        assert_eq!(at(-3.0), Duration::from_secs(600));
        assert_eq!(at(f64::NAN), Duration::from_secs(600));
        // A certificate already past its end (or about to be) waits the least pause, so a
        // short-lived one cannot make the agent ask in a tight loop.
        assert_eq!(renew_at(before, after, 0.5), before + MIN_RENEW_AFTER);
    }
}
