//! Upstream listeners: a local port per upstream whose connections go, over mutual TLS, to an
//! instance of the destination service chosen by the balancer; the instance must prove it is
//! that service (its SPIFFE ID), and a failed dial tries another instance.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use trellis_api::ServiceEntry;
use trellis_identity::ServiceId;
use trellis_tls::{ExpectedService, TlsSnapshot};

use crate::balance::{Balancer, Endpoint, Policy};
use crate::config::UpstreamSpec;
use crate::metrics::{HandshakeFailure, Metrics};
use crate::{millis, ACCESS_LOG};

/// Turns a discovery answer into endpoints: each instance's address (its service address, else
/// its node's) and port, and its datacenter (`local_dc` when the node does not say).
pub fn endpoints(entries: &[ServiceEntry], local_dc: &str) -> Vec<Arc<Endpoint>> {
    entries
        .iter()
        .filter_map(|e| {
            let host = if e.service.address.is_empty() {
                e.node.address.as_str()
            } else {
                e.service.address.as_str()
            };
            let ip = host.parse().ok()?;
            let dc = if e.node.datacenter.is_empty() {
                local_dc
            } else {
                e.node.datacenter.as_str()
            };
            Some(Arc::new(Endpoint::new(
                SocketAddr::new(ip, e.service.port),
                dc,
            )))
        })
        .collect()
}

/// Everything one upstream listener reads per connection.
pub struct Upstream {
    /// The upstream's configuration.
    pub spec: UpstreamSpec,
    /// The instances, as last discovered.
    pub balancer: watch::Receiver<Option<Arc<Balancer>>>,
    /// The proxy's TLS configuration.
    pub tls: watch::Receiver<Option<Arc<TlsSnapshot>>>,
    /// Connections allowed at once (shared by all listeners of the proxy).
    pub connections: Arc<Semaphore>,
    /// Where connections, handshakes and bytes are counted.
    pub metrics: Arc<Metrics>,
    /// This upstream's failed dials (from [`Metrics::upstream_dial_failures`]).
    pub dial_failures: Counter,
    /// A connection with no byte either way for this long is closed; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// For `http`, `http2` and `grpc` upstreams: the pooled client requests go through.
    pub http: Option<crate::outbound_http::MeshClient>,
}

impl Upstream {
    /// A fresh balancer for a discovery answer, with this upstream's policy.
    pub fn balancer_for(policy: Policy, entries: &[ServiceEntry], local_dc: &str) -> Balancer {
        Balancer::new(policy, endpoints(entries, local_dc))
    }
}

/// Accepts local connections until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    upstream: Arc<Upstream>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (local, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(upstream = %upstream.spec.name, error = %e, "upstream listener accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = crate::stopped(&mut stop) => return,
        };
        let Ok(permit) = upstream.connections.clone().try_acquire_owned() else {
            upstream.metrics.outbound().rejected();
            tracing::warn!(%peer, "connection limit reached; refusing a connection");
            continue;
        };
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _open = upstream.metrics.outbound().open();
            let started = Instant::now();
            if let Err(why) = connection(local, peer, &upstream, started).await {
                tracing::info!(upstream = %upstream.spec.name, %peer, %why, duration_ms = millis(started.elapsed()), "upstream connection failed");
            }
        });
    }
}

/// One local connection: dial an instance over mutual TLS (trying others on failure), then
/// splice until either side closes or the connection idles out.
async fn connection(
    local: TcpStream,
    peer: SocketAddr,
    upstream: &Upstream,
    started: Instant,
) -> Result<(), String> {
    let _ = local.set_nodelay(true);
    if let Some(client) = &upstream.http {
        return crate::outbound_http::serve(
            local,
            client.clone(),
            upstream.balancer.clone(),
            upstream.spec.protocol,
            upstream.spec.name.as_str().into(),
            upstream.dial_failures.clone(),
        )
        .await;
    }
    let Some(tls) = upstream.tls.borrow().clone() else {
        return Err("no certificate yet".into());
    };
    let Some(balancer) = upstream.balancer.borrow().clone() else {
        return Err("instances not discovered yet".into());
    };
    let mut tried = Vec::new();
    let mut last = String::from("no healthy instances found");
    loop {
        let Some((i, in_flight)) = balancer.pick(&tried, |n| rand::random_range(0..n)) else {
            return Err(last);
        };
        tried.push(i);
        let endpoint = in_flight.endpoint().clone();
        match dial(&endpoint, upstream, &tls).await {
            Ok(remote) => {
                let s = crate::traffic::splice(
                    local,
                    remote,
                    upstream.idle_timeout,
                    upstream.metrics.outbound(),
                )
                .await;
                tracing::debug!(target: ACCESS_LOG, %peer, upstream = %upstream.spec.name, instance = %endpoint.addr, rx_bytes = s.rx, tx_bytes = s.tx, duration_ms = millis(started.elapsed()), end = %s.end, "connection closed");
                return Ok(());
            }
            Err(e) => {
                upstream.dial_failures.inc();
                tracing::debug!(upstream = %upstream.spec.name, addr = %endpoint.addr, error = %e, "dial failed; trying another instance");
                last = e;
            }
        }
    }
}

/// Connects to one instance and completes the handshake, checking its identity.
async fn dial(
    endpoint: &Endpoint,
    upstream: &Upstream,
    tls: &TlsSnapshot,
) -> Result<crate::pipe::OutboundTls, String> {
    let own = tls.identity();
    let expected = ExpectedService::new(ServiceId::new(
        own.trust_domain.clone(),
        endpoint.datacenter.clone(),
        upstream.spec.name.clone(),
    ));
    let config = tls
        .client_config(&expected, &[])
        .map_err(|e| e.to_string())?;
    let name = expected.server_name().map_err(|e| e.to_string())?;
    // One deadline for the connect and the handshake together.
    let deadline = tokio::time::Instant::now() + upstream.spec.connect_timeout;
    let tcp = match tokio::time::timeout_at(deadline, TcpStream::connect(endpoint.addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(format!("dialling {}: {e}", endpoint.addr)),
        Err(_) => return Err(format!("dialling {} timed out", endpoint.addr)),
    };
    let _ = tcp.set_nodelay(true);
    let handshake =
        tokio_rustls::TlsConnector::from(config).connect(name, crate::pipe::BufferedRead::new(tcp));
    let failed = |reason: HandshakeFailure| {
        upstream.metrics.outbound().handshake_failed(reason);
        reason.as_str()
    };
    match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!(
            "handshake with {} ({}): {e}",
            endpoint.addr,
            failed(HandshakeFailure::from_io(&e))
        )),
        Err(_) => Err(format!(
            "handshake with {} timed out ({})",
            endpoint.addr,
            failed(HandshakeFailure::Timeout)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn endpoints_from_discovery() {
        let entries: Vec<ServiceEntry> = serde_json::from_value(json!([
            {"Node": {"Node": "n1", "Address": "10.0.0.1", "Datacenter": "dc1"},
             "Service": {"ID": "db-sidecar-proxy", "Service": "db-sidecar-proxy", "Port": 21000}, "Checks": []},
            {"Node": {"Node": "n2", "Address": "10.0.0.2"},
             "Service": {"ID": "db2", "Service": "db-sidecar-proxy", "Address": "10.9.9.9", "Port": 21001}, "Checks": []},
            {"Node": {"Node": "n3", "Address": "not-an-ip"},
             "Service": {"ID": "db3", "Service": "db-sidecar-proxy", "Port": 21002}, "Checks": []}
        ]))
        .expect("entries");
        let e = endpoints(&entries, "dc9");
        assert_eq!(e.len(), 2, "an address that is not an IP is skipped");
        assert_eq!(e[0].addr, "10.0.0.1:21000".parse().unwrap());
        assert_eq!(e[0].datacenter, "dc1");
        assert_eq!(e[1].addr, "10.9.9.9:21001".parse().unwrap());
        assert_eq!(e[1].datacenter, "dc9");
    }
}
