//! `trellis connect proxy`: the sidecar proxy, configured from the local agent (Consul's
//! `consul connect proxy` flags).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use trellis_client::AgentClient;
use trellis_proxy::config::{
    parse_upstream_flag, ProxySpec, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_LOCAL_CONNECT_TIMEOUT,
};
use trellis_proxy::run::{Options, Source};

/// Flags of `trellis connect proxy`.
#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// ID of a connect-proxy registered on the local agent; its registration configures the
    /// proxy.
    #[arg(long = "proxy-id", env = "CONNECT_PROXY_ID")]
    pub proxy_id: Option<String>,
    /// Service ID whose sidecar registration configures the proxy.
    #[arg(long = "sidecar-for", env = "CONNECT_SIDECAR_FOR")]
    pub sidecar_for: Option<String>,
    /// Service the proxy stands for, when it is not registered.
    #[arg(long)]
    pub service: Option<String>,
    /// Upstream `NAME:PORT` or `NAME:HOST:PORT` (repeatable), when not registered.
    #[arg(long = "upstream")]
    pub upstreams: Vec<String>,
    /// Public mTLS listener `HOST:PORT`, when not registered (needs --service-addr).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The local application `HOST:PORT` behind --listen.
    #[arg(long = "service-addr")]
    pub service_addr: Option<String>,
    /// What the local application speaks behind --listen: tcp, http, http2 or grpc.
    #[arg(long, default_value = "tcp")]
    pub protocol: String,
    /// The agent's HTTP address (also from TRELLIS_HTTP_ADDR, then CONSUL_HTTP_ADDR).
    #[arg(long = "http-addr", env = "TRELLIS_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// ACL token sent to the agent (else CONSUL_HTTP_TOKEN). A token file (-token-file, else
    /// CONSUL_HTTP_TOKEN_FILE) holding a token wins over it, as in Consul.
    #[arg(long)]
    pub token: Option<crate::common::Secret>,
    /// File holding the ACL token sent to the agent (surrounding whitespace is trimmed).
    #[arg(long = "token-file", value_name = "PATH")]
    pub token_file: Option<std::path::PathBuf>,
    /// Connections open at once, inbound and outbound together.
    #[arg(long = "max-connections", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Serve Prometheus metrics on `HOST:PORT` (`GET /metrics`); not served when absent.
    #[arg(long = "metrics-addr")]
    pub metrics_addr: Option<SocketAddr>,
    /// Close a connection after this long with no byte either way (and, for HTTP, no request
    /// in flight), e.g. `1h`, `90s`; `0` never closes one.
    #[arg(long = "idle-timeout", default_value = "1h", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// TLS cipher suites to offer and accept, most preferred first, comma-separated (IANA
    /// names, e.g. `TLS_AES_128_GCM_SHA256`); the default is rustls' list, AES-256-GCM first.
    #[arg(long = "tls-cipher-suites", value_delimiter = ',')]
    pub tls_cipher_suites: Vec<String>,
    /// TLS key exchange groups, most preferred first, comma-separated (`X25519MLKEM768`,
    /// `X25519`, `secp256r1`, `secp384r1`); the default puts the post-quantum hybrid first.
    #[arg(long = "tls-groups", value_delimiter = ',')]
    pub tls_groups: Vec<String>,
    /// Log level (trace, debug, info, warn, error). The access log (target `trellis::access`)
    /// writes denials and refused handshakes at info, allowed connections and requests at
    /// debug: `RUST_LOG=info,trellis::access=debug` shows all of it.
    #[arg(long = "log-level", default_value = "info")]
    pub log_level: String,
    /// Log JSON lines.
    #[arg(long = "log-json")]
    pub log_json: bool,
}

/// The configuration source the flags name, in Consul's order of precedence.
fn source(args: &ProxyArgs) -> anyhow::Result<Source> {
    if let Some(id) = args.proxy_id.as_ref().filter(|s| !s.is_empty()) {
        return Ok(Source::ProxyId(id.clone()));
    }
    if let Some(id) = args.sidecar_for.as_ref().filter(|s| !s.is_empty()) {
        return Ok(Source::SidecarFor(id.clone()));
    }
    let Some(service) = args.service.clone().filter(|s| !s.is_empty()) else {
        bail!("one of -proxy-id, -sidecar-for or -service is required");
    };
    let upstreams = args
        .upstreams
        .iter()
        .map(|u| parse_upstream_flag(u))
        .collect::<Result<Vec<_>, _>>()?;
    let local_app = match (&args.listen, &args.service_addr) {
        (Some(_), Some(addr)) => addr.clone(),
        (Some(_), None) => bail!("-service-addr is required with -listen"),
        (None, _) => String::new(),
    };
    let protocol = trellis_intentions::Protocol::parse(&args.protocol)
        .with_context(|| format!("unknown -protocol {:?}", args.protocol))?;
    Ok(Source::Flags(ProxySpec {
        service,
        public_listener: args.listen,
        local_app,
        protocol,
        local_connect_timeout: DEFAULT_LOCAL_CONNECT_TIMEOUT,
        handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        upstreams,
    }))
}

/// Runs the proxy until SIGINT or SIGTERM, then drains.
pub async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    crate::common::init_logging(&args.log_level, args.log_json)?;
    let source = source(&args)?;
    trellis_tls::set_crypto_policy(&trellis_tls::CryptoPolicy {
        cipher_suites: args.tls_cipher_suites.clone(),
        kx_groups: args.tls_groups.clone(),
    })
    .context("invalid -tls-cipher-suites or -tls-groups")?;
    let addr = args
        .http_addr
        .clone()
        .or_else(|| std::env::var("CONSUL_HTTP_ADDR").ok())
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "127.0.0.1:8500".to_string());
    let token =
        crate::common::resolve_token(args.token.as_ref(), args.token_file.as_deref(), |k| {
            std::env::var(k).ok()
        })?;
    let api = AgentClient::multiplexed(&addr, token)?;
    let options = Options {
        max_connections: args.max_connections.max(1),
        idle_timeout: Some(args.idle_timeout).filter(|d| !d.is_zero()),
        metrics_addr: args.metrics_addr,
        ..Options::default()
    };
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the proxy");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    trellis_proxy::run::run(api, source, options, shutdown).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        args: ProxyArgs,
    }

    fn parse(argv: &[&str]) -> ProxyArgs {
        T::parse_from(std::iter::once("proxy").chain(argv.iter().copied())).args
    }

    #[test]
    fn flags_pick_the_source_as_consul_does() {
        assert!(
            matches!(source(&parse(&["--proxy-id", "p", "--sidecar-for", "web"])).unwrap(), Source::ProxyId(id) if id == "p")
        );
        assert!(
            matches!(source(&parse(&["--sidecar-for", "web"])).unwrap(), Source::SidecarFor(id) if id == "web")
        );
        let Source::Flags(spec) = source(&parse(&[
            "--service",
            "web",
            "--upstream",
            "db:9191",
            "--listen",
            "127.0.0.1:21000",
            "--service-addr",
            "127.0.0.1:8080",
            "--protocol",
            "http",
        ]))
        .unwrap() else {
            panic!("flags");
        };
        assert_eq!(spec.service, "web");
        assert_eq!(spec.upstreams[0].name, "db");
        assert_eq!(spec.local_app, "127.0.0.1:8080");
        assert!(source(&parse(&[]))
            .unwrap_err()
            .to_string()
            .contains("-sidecar-for"));
        assert!(
            source(&parse(&["--service", "web", "--listen", "127.0.0.1:1"]))
                .unwrap_err()
                .to_string()
                .contains("-service-addr")
        );
        assert!(source(&parse(&["--service", "web", "--protocol", "smtp"])).is_err());
    }

    #[test]
    fn metrics_and_idle_timeout_flags() {
        let a = parse(&["--sidecar-for", "web"]);
        assert_eq!(a.metrics_addr, None, "metrics are off unless asked for");
        assert_eq!(a.idle_timeout, trellis_proxy::run::DEFAULT_IDLE_TIMEOUT);
        let a = parse(&[
            "--sidecar-for",
            "web",
            "--metrics-addr",
            "127.0.0.1:9102",
            "--idle-timeout",
            "90s",
        ]);
        assert_eq!(a.metrics_addr, Some("127.0.0.1:9102".parse().unwrap()));
        assert_eq!(a.idle_timeout, Duration::from_secs(90));
        assert_eq!(parse(&["--idle-timeout", "0"]).idle_timeout, Duration::ZERO);
        assert!(T::try_parse_from(["proxy", "--metrics-addr", "nowhere"]).is_err());
    }

    #[test]
    fn tls_policy_flags() {
        let a = parse(&["--sidecar-for", "web"]);
        assert!(a.tls_cipher_suites.is_empty() && a.tls_groups.is_empty());
        let a = parse(&[
            "--sidecar-for",
            "web",
            "--tls-cipher-suites",
            "TLS_AES_128_GCM_SHA256,TLS_AES_256_GCM_SHA384",
            "--tls-groups",
            "X25519",
        ]);
        assert_eq!(
            a.tls_cipher_suites,
            ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"]
        );
        assert_eq!(a.tls_groups, ["X25519"]);
    }
}
