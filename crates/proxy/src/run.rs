//! Running a proxy: find its configuration, follow everything it needs from the agent, open
//! its listeners, follow changes to them, and drain on shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use trellis_api::kind;
use trellis_intentions::Engine;
use trellis_tls::{Credentials, TlsSnapshot, TlsState};

use crate::config::{ProxySpec, UpstreamSpec};
use crate::follow::{follow_hash, follow_index};
use crate::inbound::Inbound;
use crate::metrics::Metrics;
use crate::outbound::Upstream;
use crate::ProxyError;
use trellis_client::{AgentClient, Answer};

/// ALPN the public listener offers (HTTP-based services are served as HTTP/2 or HTTP/1.1).
const SERVER_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Where a proxy's configuration comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A `connect-proxy` registered on the agent under this ID (`-proxy-id`).
    ProxyId(String),
    /// The sidecar registered for this service ID (`-sidecar-for`).
    SidecarFor(String),
    /// Flags alone: not registered (`-service`, `-listen`, `-service-addr`, `-upstream`).
    Flags(ProxySpec),
}

/// Knobs that are not part of the registration.
#[derive(Clone, Debug)]
pub struct Options {
    /// Connections (inbound and outbound together) at once.
    pub max_connections: usize,
    /// How long to wait for open connections after shutdown is asked.
    pub drain_timeout: Duration,
    /// A connection (spliced, or HTTP with no request in flight) with no byte either way for
    /// this long is closed; `None`: never. Envoy's TCP proxy default, an hour.
    pub idle_timeout: Option<Duration>,
    /// Where to serve Prometheus metrics (`GET /metrics`); `None`: not served.
    pub metrics_addr: Option<SocketAddr>,
}

/// The default idle timeout (Envoy's TCP proxy and HTTP connection manager default).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

impl Default for Options {
    fn default() -> Options {
        Options {
            max_connections: 10_000,
            drain_timeout: Duration::from_secs(15),
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            metrics_addr: None,
        }
    }
}

/// Finds the ID of the sidecar registered for `service_id` (Consul's rules: one match, compared
/// without regard to case).
pub async fn sidecar_for(api: &AgentClient, service_id: &str) -> Result<String, ProxyError> {
    let services = api.services().await?;
    let mut found: Vec<&String> = services
        .iter()
        .filter(|(_, s)| {
            s.kind == kind::CONNECT_PROXY
                && s.proxy
                    .as_ref()
                    .is_some_and(|p| p.destination_service_id.eq_ignore_ascii_case(service_id))
        })
        .map(|(id, _)| id)
        .collect();
    match found.len() {
        0 => Err(ProxyError::Config(format!(
            "No sidecar proxy registered for {service_id}"
        ))),
        1 => Ok(found.remove(0).clone()),
        _ => Err(ProxyError::Config(format!(
            "More than one sidecar proxy registered for {service_id}.\n    Start proxy with -proxy-id and one of the following IDs: {}",
            found.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Waits for the first value on a channel.
async fn first<T: ?Sized>(rx: &mut watch::Receiver<Option<Arc<T>>>) -> Result<Arc<T>, ProxyError> {
    let v = rx
        .wait_for(|v| v.is_some())
        .await
        .map_err(|_| ProxyError::Agent("stopped before the first answer".into()))?;
    Ok(v.clone().expect("waited for Some"))
}

/// Keeps the TLS state in step with the leaf and the roots; publishes snapshots (and the
/// leaf's expiry to the metrics).
fn follow_tls(
    api: &AgentClient,
    service: &str,
    metrics: Arc<Metrics>,
) -> watch::Receiver<Option<Arc<TlsSnapshot>>> {
    let (tx, rx) = watch::channel(None);
    let mut leaf = {
        let (api, service) = (api.clone(), service.to_string());
        follow_index("leaf", move |i| {
            let (api, service) = (api.clone(), service.clone());
            async move { Ok(api.leaf(&service, i).await?) }
        })
    };
    let mut roots = {
        let api = api.clone();
        follow_index("roots", move |i| {
            let api = api.clone();
            async move { Ok(api.roots(i).await?) }
        })
    };
    tokio::spawn(async move {
        let mut state: Option<TlsState> = None;
        loop {
            let (l, r) = (
                leaf.borrow_and_update().clone(),
                roots.borrow_and_update().clone(),
            );
            if let (Some(l), Some(r)) = (l, r) {
                match Credentials::from_issued(&l, &r) {
                    Ok(creds) => {
                        let applied = match &state {
                            Some(s) => s.update(creds).map(|_| ()),
                            None => TlsState::new(creds, SERVER_ALPN).map(|s| {
                                state = Some(s);
                            }),
                        };
                        match applied {
                            Ok(()) => {
                                if let Some(s) = &state {
                                    // TlsState logs the identity and expiry it loads.
                                    metrics.set_leaf_expiry(s.not_after());
                                    tx.send_replace(Some(s.current()));
                                }
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "the new TLS credentials are unusable; keeping the old ones")
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the leaf or roots from the agent are unusable; keeping the old ones")
                    }
                }
            }
            tokio::select! {
                r = leaf.changed() => if r.is_err() { return },
                r = roots.changed() => if r.is_err() { return },
                () = tx.closed() => return,
            }
        }
    });
    rx
}

/// Keeps an engine of the intentions for `service`; the ACL default rides along.
fn follow_intentions(
    api: &AgentClient,
    service: &str,
    acl_default_allow: Arc<AtomicBool>,
) -> watch::Receiver<Option<Arc<Engine>>> {
    let (api, service) = (api.clone(), service.to_string());
    follow_index("intentions", move |i| {
        let (api, service, acl) = (api.clone(), service.clone(), acl_default_allow.clone());
        async move {
            let a = api.intentions(&service, i).await?;
            acl.store(a.acl_default_allow, Ordering::Relaxed);
            let (engine, refused) = Engine::from_intentions(&a.value);
            for (destination, problems) in refused {
                tracing::warn!(%destination, problems = %problems.join("; "), "intentions that do not validate here are left out");
            }
            Ok(Answer {
                value: engine,
                index: a.index,
                hash: a.hash,
                acl_default_allow: a.acl_default_allow,
            })
        }
    })
}

/// A running upstream listener.
struct RunningUpstream {
    spec: UpstreamSpec,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Starts an upstream listener with its discovery.
async fn start_upstream(
    api: &AgentClient,
    spec: UpstreamSpec,
    local_dc: &str,
    tls: &watch::Receiver<Option<Arc<TlsSnapshot>>>,
    connections: &Arc<Semaphore>,
    metrics: &Arc<Metrics>,
    idle_timeout: Option<Duration>,
) -> Result<RunningUpstream, ProxyError> {
    let listener = TcpListener::bind(spec.bind).await.map_err(|e| {
        ProxyError::Config(format!(
            "upstream {}: cannot listen on {}: {e}",
            spec.name, spec.bind
        ))
    })?;
    let balancer = {
        let (api, name, dc, local_dc, policy) = (
            api.clone(),
            spec.name.clone(),
            spec.datacenter.clone(),
            local_dc.to_string(),
            spec.policy,
        );
        follow_index("discovery", move |i| {
            let (api, name, dc, local_dc) =
                (api.clone(), name.clone(), dc.clone(), local_dc.clone());
            async move {
                let a = api.connect_instances(&name, &dc, i).await?;
                let balancer = Upstream::balancer_for(policy, &a.value, &local_dc);
                Ok(Answer {
                    value: balancer,
                    index: a.index,
                    hash: a.hash,
                    acl_default_allow: a.acl_default_allow,
                })
            }
        })
    };
    let (stop, stop_rx) = watch::channel(false);
    let http = spec.protocol.is_l7().then(|| {
        crate::outbound_http::client(
            &spec.name,
            spec.protocol,
            tls.clone(),
            balancer.clone(),
            spec.connect_timeout,
        )
    });
    let upstream = Arc::new(Upstream {
        spec: spec.clone(),
        balancer,
        tls: tls.clone(),
        connections: connections.clone(),
        metrics: metrics.clone(),
        dial_failures: metrics.upstream_dial_failures(&spec.name),
        idle_timeout,
        http,
    });
    tracing::info!(upstream = %spec.name, listen = %spec.bind, "upstream listener open");
    let task = tokio::spawn(crate::outbound::serve(listener, upstream, stop_rx));
    Ok(RunningUpstream { spec, stop, task })
}

/// Runs a proxy until `shutdown` resolves, then stops accepting and waits (up to
/// [`Options::drain_timeout`]) for open connections to finish.
pub async fn run(
    api: AgentClient,
    source: Source,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProxyError> {
    let metrics = Arc::new(Metrics::new());
    // Served from the start (a proxy waiting on the agent can be scraped) until `run` returns.
    let (_metrics_stop, metrics_stop_rx) = watch::channel(false);
    if let Some(addr) = options.metrics_addr {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| ProxyError::Config(format!("metrics: cannot listen on {addr}: {e}")))?;
        tracing::info!(%addr, "metrics listener open (GET /metrics)");
        tokio::spawn(crate::metrics::serve(
            listener,
            metrics.clone(),
            metrics_stop_rx,
        ));
    }
    let local_dc = api.datacenter().await?;
    // A configuration from flags never changes, but its sender is kept for as long as the
    // proxy runs: the loop below takes a closed channel for the end, so dropping the sender
    // here would make a flags-only proxy drain and exit as soon as its listeners open.
    let (_fixed_spec, mut spec_rx): (_, watch::Receiver<Option<Arc<ProxySpec>>>) = match source {
        Source::Flags(spec) => {
            let (tx, rx) = watch::channel(Some(Arc::new(spec)));
            (Some(tx), rx)
        }
        Source::ProxyId(id) => (None, follow_spec(&api, id)),
        Source::SidecarFor(service) => {
            let id = sidecar_for(&api, &service).await?;
            (None, follow_spec(&api, id))
        }
    };
    let spec = first(&mut spec_rx).await?;
    let service = spec.service.clone();
    tracing::info!(%service, "proxy starting");

    let default_intention = api.default_intention_policy().await?;
    let acl_default = Arc::new(AtomicBool::new(true));
    let mut engine = follow_intentions(&api, &service, acl_default.clone());
    let mut tls = follow_tls(&api, &service, metrics.clone());
    first(&mut tls).await?;
    first(&mut engine).await?;
    // The decision when nothing matches: the agent's default_intention_policy, else the ACL
    // default the agent reports.
    let default_allow = match default_intention {
        Some(allow) => Arc::new(AtomicBool::new(allow)),
        None => acl_default,
    };

    let connections = Arc::new(Semaphore::new(options.max_connections));
    let (spec_tx, spec_for_inbound) = watch::channel(spec.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let inbound = Arc::new(Inbound::new(
        spec_for_inbound,
        tls.clone(),
        engine.clone(),
        default_allow,
        connections.clone(),
        metrics.clone(),
        options.idle_timeout,
    ));
    let mut public: Option<(SocketAddr, JoinHandle<()>, watch::Sender<bool>)> = None;
    let mut upstreams: HashMap<SocketAddr, RunningUpstream> = HashMap::new();
    let mut current = spec;
    let mut first_round = true;
    tokio::pin!(shutdown);
    loop {
        // Listeners as the current configuration wants them.
        if first_round || public.as_ref().map(|p| p.0) != current.public_listener {
            if let Some((addr, task, stop)) = public.take() {
                tracing::info!(%addr, "public listener moving");
                let _ = stop.send(true);
                let _ = task.await;
            }
            if let Some(addr) = current.public_listener {
                let listener = TcpListener::bind(addr).await.map_err(|e| {
                    ProxyError::Config(format!("public listener: cannot listen on {addr}: {e}"))
                })?;
                let (stop, stop_one) = watch::channel(false);
                let mut stop_all = stop_rx.clone();
                let stop_fwd = stop.clone();
                tokio::spawn(async move {
                    crate::stopped(&mut stop_all).await;
                    let _ = stop_fwd.send(true);
                });
                tracing::info!(%addr, protocol = %current.protocol, "public listener open");
                let task = tokio::spawn(crate::inbound::serve(listener, inbound.clone(), stop_one));
                public = Some((addr, task, stop));
            }
        }
        let wanted: HashMap<SocketAddr, &UpstreamSpec> =
            current.upstreams.iter().map(|u| (u.bind, u)).collect();
        let stale: Vec<SocketAddr> = upstreams
            .iter()
            .filter(|(addr, running)| wanted.get(*addr).is_none_or(|w| **w != running.spec))
            .map(|(addr, _)| *addr)
            .collect();
        for addr in stale {
            if let Some(running) = upstreams.remove(&addr) {
                let _ = running.stop.send(true);
                let _ = running.task.await;
            }
        }
        for (addr, spec) in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) = upstreams.entry(addr) {
                slot.insert(
                    start_upstream(
                        &api,
                        spec.clone(),
                        &local_dc,
                        &tls,
                        &connections,
                        &metrics,
                        options.idle_timeout,
                    )
                    .await?,
                );
            }
        }
        first_round = false;

        tokio::select! {
            () = &mut shutdown => break,
            r = spec_rx.changed() => {
                if r.is_err() {
                    break;
                }
                let Some(next) = spec_rx.borrow_and_update().clone() else { continue };
                if next.service != current.service {
                    tracing::warn!(from = %current.service, to = %next.service, "the proxied service changed; restart the proxy to follow it");
                }
                current = next;
                spec_tx.send_replace(current.clone());
            }
        }
    }

    tracing::info!("draining");
    let _ = stop_tx.send(true);
    for running in upstreams.values() {
        let _ = running.stop.send(true);
    }
    let deadline = tokio::time::Instant::now() + options.drain_timeout;
    while connections.available_permits() < options.max_connections
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Follows the proxy's registration, read into a [`ProxySpec`]; an unusable registration
/// keeps the previous configuration.
fn follow_spec(api: &AgentClient, id: String) -> watch::Receiver<Option<Arc<ProxySpec>>> {
    let raw = {
        let api = api.clone();
        follow_hash("registration", move |hash| {
            let (api, id) = (api.clone(), id.clone());
            async move { Ok(api.service(&id, &hash).await?) }
        })
    };
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut raw = raw;
        loop {
            if let Some(svc) = raw.borrow_and_update().clone() {
                match ProxySpec::from_registration(&svc) {
                    Ok(spec) => {
                        let changed = tx.borrow().as_deref() != Some(&spec);
                        if changed {
                            tx.send_replace(Some(Arc::new(spec)));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the proxy's registration is unusable; keeping the last good one")
                    }
                }
            }
            tokio::select! {
                r = raw.changed() => if r.is_err() { return },
                () = tx.closed() => return,
            }
        }
    });
    rx
}
