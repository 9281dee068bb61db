//! Command-line interface: flags with Consul's names, and what each command does.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use trellis_agent::{Agent, AgentConfig};
use trellis_server::ServerConfig;

use crate::config::FileConfig;

/// Trellis: a service mesh that speaks Consul's API.
#[derive(Parser, Debug)]
#[command(name = "trellis", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run an agent (dev, server or client).
    Agent(Box<AgentArgs>),
    /// List the members of the datacenter.
    Members(HttpArgs),
    /// Make a client agent leave the datacenter gracefully and exit.
    Leave(HttpArgs),
    /// Service mesh commands.
    #[command(subcommand)]
    Connect(ConnectCommand),
    /// Intentions: which services may connect to which (Consul's `consul intention`).
    #[command(subcommand)]
    Intention(IntentionCommand),
    /// ACL tokens, policies and roles, bootstrap and the agent's tokens (Consul's `consul acl`).
    #[command(subcommand)]
    Acl(crate::acl::AclCommand),
    /// Cluster operator commands.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Agent TLS: create the CA and certificates for the server port (Consul's `consul tls`).
    #[command(subcommand)]
    Tls(crate::tls::TlsCommand),
    /// Print the version.
    Version,
}

/// `trellis operator ...`.
#[derive(Subcommand, Debug)]
pub enum OperatorCommand {
    /// The servers' Raft group.
    #[command(subcommand)]
    Raft(RaftCommand),
}

/// `trellis operator raft ...` (Consul's `consul operator raft`).
#[derive(Subcommand, Debug)]
pub enum RaftCommand {
    /// List the servers of the Raft configuration: node, ID, address, state, voter.
    ListPeers(HttpArgs),
    /// Remove a server from the Raft configuration, by `-id` or `-address`.
    RemovePeer {
        #[command(flatten)]
        http: HttpArgs,
        /// The server's node ID, as `list-peers` shows it.
        #[arg(long)]
        id: Option<String>,
        /// The server's address, `IP:port` of its server port.
        #[arg(long)]
        address: Option<String>,
    },
}

/// `trellis connect ...`.
#[derive(Subcommand, Debug)]
pub enum ConnectCommand {
    /// The Connect certificate authority.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Run a sidecar proxy: mutual TLS in front of a service and to its upstreams.
    Proxy(Box<crate::proxy::ProxyArgs>),
}

/// `trellis connect ca ...`.
#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Print the CA configuration.
    GetConfig(HttpArgs),
    /// Replace the CA configuration with a JSON file's (may rotate the root).
    SetConfig {
        #[command(flatten)]
        http: HttpArgs,
        /// The configuration file (JSON, as `GET /v1/connect/ca/configuration` shows it).
        #[arg(long = "config-file")]
        config_file: std::path::PathBuf,
    },
}

/// Flags of `trellis agent`, named as Consul's.
#[derive(Args, Debug, Default)]
pub struct AgentArgs {
    /// Development mode: server and agent in one process, state in memory, one-voter Raft.
    #[arg(long)]
    pub dev: bool,
    /// Run a server (a Raft voter).
    #[arg(long)]
    pub server: bool,
    /// Servers expected before bootstrapping the cluster.
    #[arg(long = "bootstrap-expect")]
    pub bootstrap_expect: Option<u32>,
    /// Directory for persistent state.
    #[arg(long = "data-dir")]
    pub data_dir: Option<PathBuf>,
    /// Datacenter name.
    #[arg(long)]
    pub datacenter: Option<String>,
    /// Node name (defaults to the host name).
    #[arg(long)]
    pub node: Option<String>,
    /// Address the server port binds and advertises.
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// Address the HTTP API binds.
    #[arg(long)]
    pub client: Option<IpAddr>,
    /// HTTP API port.
    #[arg(long = "http-port")]
    pub http_port: Option<u16>,
    /// Server RPC port.
    #[arg(long = "server-port")]
    pub server_port: Option<u16>,
    /// A server's server-port address to join (repeatable).
    #[arg(long = "retry-join")]
    pub retry_join: Vec<String>,
    /// A configuration file (HCL or JSON; repeatable).
    #[arg(long = "config-file")]
    pub config_file: Vec<PathBuf>,
    /// A directory of configuration files (*.hcl, *.json; repeatable).
    #[arg(long = "config-dir")]
    pub config_dir: Vec<PathBuf>,
    /// Log level: trace, debug, info, warn, error.
    #[arg(long = "log-level")]
    pub log_level: Option<String>,
    /// Log as JSON lines.
    #[arg(long = "log-json")]
    pub log_json: bool,
    /// Period of the full anti-entropy sync with the servers (Go duration).
    #[arg(long = "sync-interval", hide = true)]
    pub sync_interval: Option<String>,
    /// How often a client agent tells the servers it is alive (Go duration, 100ms to 10s;
    /// its node is failed after three missed).
    /// How long a server holds a write or read while the cluster has no leader, and a client
    /// agent a write that no server can take, retrying until one answers (Consul's
    /// `performance { rpc_hold_timeout }`, default 7s).
    #[arg(long = "rpc-hold-timeout")]
    pub rpc_hold_timeout: Option<String>,
    #[arg(long = "heartbeat-interval", hide = true)]
    pub heartbeat_interval: Option<String>,
    /// Window over which leaf watchers re-issue after a CA root change (Go duration).
    #[arg(long = "leaf-root-change-jitter", hide = true)]
    pub leaf_root_change_jitter: Option<String>,
    /// Raft log entries between snapshots (Consul's `raft_snapshot_threshold`).
    #[arg(long = "raft-snapshot-threshold")]
    pub raft_snapshot_threshold: Option<u64>,
    /// A PKCS#11 module (absolute path) the CA's `pkcs11` provider may load (repeatable; adds
    /// to `connect { pkcs11_modules }`). A CA configuration may name only these.
    #[arg(long = "pkcs11-module", value_name = "PATH")]
    pub pkcs11_module: Vec<String>,
}

/// Flags of commands that talk to an agent's HTTP API: its address and the ACL token, as
/// Consul's CLI takes them.
#[derive(Args, Debug)]
pub struct HttpArgs {
    /// The agent's HTTP address.
    #[arg(
        long = "http-addr",
        env = "CONSUL_HTTP_ADDR",
        default_value = "127.0.0.1:8500"
    )]
    pub http_addr: String,
    /// ACL token to use, sent as `X-Consul-Token` (else CONSUL_HTTP_TOKEN). A token file
    /// (-token-file, else CONSUL_HTTP_TOKEN_FILE) holding a token wins over it, as in Consul.
    #[arg(long)]
    pub token: Option<crate::common::Secret>,
    /// File holding the ACL token to use, instead of -token (surrounding whitespace trimmed).
    #[arg(long = "token-file", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

impl HttpArgs {
    /// The ACL token to send, if any (from the flags or the environment).
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        crate::common::resolve_token(self.token.as_ref(), self.token_file.as_deref(), |k| {
            std::env::var(k).ok()
        })
    }
}

/// `trellis intention ...`: the commands, flags, output and exit codes of `consul intention`.
#[derive(Subcommand, Debug)]
pub enum IntentionCommand {
    /// Create intentions for service connections (`SRC DST`, or `-file FILE...`).
    Create(IntentionCreateArgs),
    /// Show information about an intention (`SRC DST`, or a legacy intention `ID`).
    Get(IntentionArgs),
    /// Delete an intention (`SRC DST`, or a legacy intention `ID`).
    Delete(IntentionArgs),
    /// List all intentions.
    List(HttpArgs),
    /// Check whether a connection from SRC to DST is allowed: prints `Allowed` (exit 0) or
    /// `Denied` (exit 1); exit 2 on errors.
    Check(IntentionArgs),
    /// Show the intentions that match a destination (or, with `-source`, a source), in
    /// evaluation order.
    Match(IntentionMatchArgs),
}

/// Flags and arguments of `trellis intention get|delete|check`.
#[derive(Args, Debug)]
pub struct IntentionArgs {
    #[command(flatten)]
    pub api: HttpArgs,
    /// `SRC DST` (`get` and `delete` also take a legacy intention ID).
    #[arg(value_name = "SRC DST")]
    pub args: Vec<String>,
}

/// Flags and arguments of `trellis intention create`.
#[derive(Args, Debug)]
pub struct IntentionCreateArgs {
    #[command(flatten)]
    pub api: HttpArgs,
    /// Create an intention that allows when matched (the default).
    #[arg(long)]
    pub allow: bool,
    /// Create an intention that denies when matched.
    #[arg(long)]
    pub deny: bool,
    /// Replace an existing intention with the same source and destination.
    #[arg(long)]
    pub replace: bool,
    /// Read intentions (JSON, one per file; `-` is stdin) from the files given as arguments.
    #[arg(long)]
    pub file: bool,
    /// Description of the intention (not with `-file`: put `Description` in the file).
    #[arg(long)]
    pub description: Option<String>,
    /// `SRC DST`, or with `-file` one or more files.
    #[arg(value_name = "SRC DST | FILE")]
    pub args: Vec<String>,
}

/// Flags and arguments of `trellis intention match`.
#[derive(Args, Debug)]
pub struct IntentionMatchArgs {
    #[command(flatten)]
    pub api: HttpArgs,
    /// Match intentions with the given source.
    #[arg(long)]
    pub source: bool,
    /// Match intentions with the given destination (the default).
    #[arg(long)]
    pub destination: bool,
    /// The service name to match.
    #[arg(value_name = "SRC|DST")]
    pub args: Vec<String>,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Resolves flags over config files into an agent configuration.
pub fn agent_config(args: &AgentArgs) -> anyhow::Result<(AgentConfig, FileConfig)> {
    let mut file = FileConfig::default();
    for dir in &args.config_dir {
        file.merge(FileConfig::load_dir(dir)?);
    }
    for path in &args.config_file {
        file.merge(FileConfig::load(path)?);
    }
    let dev = args.dev;
    let server = dev || args.server || file.server.unwrap_or(false);
    let datacenter = args
        .datacenter
        .clone()
        .or(file.datacenter.clone())
        .unwrap_or_else(|| "dc1".into());
    if datacenter.is_empty()
        || !datacenter
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("invalid datacenter name {datacenter:?}: use letters, digits, '-' and '_'");
    }
    let node_name = args
        .node
        .clone()
        .or(file.node_name.clone())
        .unwrap_or_else(hostname);
    let data_dir = if dev {
        None
    } else {
        args.data_dir.clone().or(file.data_dir.clone())
    };
    if !dev && data_dir.is_none() {
        bail!("--data-dir is required unless --dev is given");
    }
    let localhost: IpAddr = [127, 0, 0, 1].into();
    let bind = args.bind.or(file.bind_addr).unwrap_or(localhost);
    let client = args.client.or(file.client_addr).unwrap_or(localhost);
    let http_port = args.http_port.or(file.ports.http).unwrap_or(8500);
    let server_port = args.server_port.or(file.ports.server).unwrap_or(8300);
    let mut retry_join = args.retry_join.clone();
    retry_join.extend(file.retry_join.iter().cloned());
    let retry_join: Vec<String> = retry_join
        .into_iter()
        .map(|a| {
            if a.contains(':') {
                a
            } else {
                format!("{a}:8300")
            }
        })
        .collect();
    let bootstrap_expect = if dev {
        1
    } else {
        args.bootstrap_expect
            .or(file.bootstrap_expect)
            .or(file.bootstrap.filter(|b| *b).map(|_| 1))
            .unwrap_or(if server { 1 } else { 0 })
    };
    if server && bootstrap_expect == 0 {
        bail!("--bootstrap-expect must be at least 1");
    }
    if !server && args.bootstrap_expect.is_some() {
        bail!("--bootstrap-expect needs --server");
    }
    let rpc_addr = SocketAddr::new(bind, server_port);
    let pkcs11_modules = trellis_server::Pkcs11Modules::new(
        args.pkcs11_module
            .iter()
            .chain(&file.connect.pkcs11_modules)
            .cloned(),
    )
    .map_err(|e| anyhow::anyhow!("-pkcs11-module / connect.pkcs11_modules: {e}"))?;
    let rpc_hold_timeout = match args
        .rpc_hold_timeout
        .as_ref()
        .or(file.performance.rpc_hold_timeout.as_ref())
    {
        Some(s) => trellis_api::parse_go_duration(s)
            .map_err(|e| anyhow::anyhow!("rpc_hold_timeout: {e}"))?,
        None => trellis_server::RPC_HOLD_TIMEOUT,
    };
    let rpc_tls = rpc_tls(&file, &datacenter, server)?;
    let acl = agent_acl(&file, &datacenter)?;
    let server_config = server.then(|| ServerConfig {
        node_name: node_name.clone(),
        datacenter: datacenter.clone(),
        data_dir: data_dir.as_ref().map(|d| d.join("raft")),
        rpc_addr,
        bootstrap_expect,
        retry_join: retry_join.clone(),
        snapshot_threshold: args
            .raft_snapshot_threshold
            .or(file.raft_snapshot_threshold)
            .unwrap_or(trellis_raft::SNAPSHOT_THRESHOLD),
        pkcs11_modules,
        rpc_max_conns_per_client: file
            .limits
            .rpc_max_conns_per_client
            .unwrap_or(trellis_server::listen::Limits::RPC.max_conns_per_client),
        rpc_hold_timeout,
        tls: rpc_tls.clone(),
        acl: acl
            .resolver
            .enabled
            .then(|| trellis_server::acl::ServerAcl {
                initial_management: file.acl_settings().tokens.initial_management,
            }),
    });
    let sync_interval = match &args.sync_interval {
        Some(s) => trellis_api::parse_go_duration(s)
            .map_err(|e| anyhow::anyhow!("--sync-interval: {e}"))?,
        None => Duration::from_secs(60),
    };
    let heartbeat_interval = match &args.heartbeat_interval {
        Some(s) => {
            let d = trellis_api::parse_go_duration(s)
                .map_err(|e| anyhow::anyhow!("--heartbeat-interval: {e}"))?;
            trellis_rpc::check_interval(d)
                .map_err(|e| anyhow::anyhow!("--heartbeat-interval: {e}"))?;
            d
        }
        None => trellis_rpc::DEFAULT_HEARTBEAT,
    };
    let leaf_root_change_jitter = match &args.leaf_root_change_jitter {
        Some(s) => trellis_api::parse_go_duration(s)
            .map_err(|e| anyhow::anyhow!("--leaf-root-change-jitter: {e}"))?,
        None => trellis_agent::leaf::ROOT_CHANGE_JITTER,
    };
    let http_limits = trellis_server::listen::Limits {
        max_conns_per_client: file
            .limits
            .http_max_conns_per_client
            .unwrap_or(trellis_server::listen::Limits::HTTP.max_conns_per_client),
        body_timeout: match &file.limits.http_body_read_timeout {
            Some(s) => trellis_api::parse_go_duration(s)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "limits.http_body_read_timeout must be a positive duration such as \"30s\", not {s:?}"
                    )
                })?,
            None => trellis_server::listen::Limits::HTTP.body_timeout,
        },
        ..trellis_server::listen::Limits::HTTP
    };
    let advertise = file
        .advertise_addr
        .map(|a| a.to_string())
        .unwrap_or_else(|| bind.to_string());
    Ok((
        AgentConfig {
            node_name,
            datacenter,
            http_addr: SocketAddr::new(client, http_port),
            advertise_addr: advertise,
            data_dir,
            server: server_config,
            retry_join,
            sync_interval,
            heartbeat_interval,
            node_meta: file.node_meta.clone(),
            leaf_root_change_jitter,
            cache_ttl: trellis_agent::cache::DEFAULT_LAST_GET_TTL,
            http_limits,
            rpc_tls,
            rpc_hold_timeout,
            acl,
            default_intention_policy: match file.default_intention_policy.as_deref() {
                None | Some("") => None,
                Some("allow") => Some(trellis_agent::IntentionAction::Allow),
                Some("deny") => Some(trellis_agent::IntentionAction::Deny),
                Some(other) => anyhow::bail!(
                    "default_intention_policy must be \"allow\" or \"deny\", not {other:?}"
                ),
            },
        },
        file,
    ))
}

/// The agent's ACL settings from the config files (`acl { ... }` and the legacy keys).
fn agent_acl(file: &FileConfig, datacenter: &str) -> anyhow::Result<trellis_agent::acl::AgentAcl> {
    use trellis_acl_resolver::{AclConfig, DownPolicy};
    let acl = file.acl_settings();
    let default_policy = match acl.default_policy.as_deref() {
        None | Some("allow") => trellis_acl::DefaultPolicy::Allow,
        Some("deny") => trellis_acl::DefaultPolicy::Deny,
        Some(other) => bail!("acl.default_policy must be \"allow\" or \"deny\", not {other:?}"),
    };
    let down_policy = match acl.down_policy.as_deref() {
        None => DownPolicy::ExtendCache,
        Some(s) => DownPolicy::parse(s).ok_or_else(|| {
            anyhow::anyhow!(
                "acl.down_policy must be one of \"allow\", \"deny\", \"extend-cache\" or \
                 \"async-cache\", not {s:?}"
            )
        })?,
    };
    let token_ttl = match acl.token_ttl.as_deref() {
        None => std::time::Duration::from_secs(30),
        Some(s) => {
            trellis_api::parse_go_duration(s).map_err(|e| anyhow::anyhow!("acl.token_ttl: {e}"))?
        }
    };
    let t = acl.tokens;
    Ok(trellis_agent::acl::AgentAcl {
        resolver: AclConfig {
            enabled: acl.enabled.unwrap_or(false),
            default_policy,
            down_policy,
            token_ttl,
            datacenter: datacenter.to_string(),
        },
        tokens: trellis_agent::acl::AgentTokens {
            default: t.default,
            agent: t.agent,
            agent_recovery: t.agent_recovery,
            replication: t.replication,
            config_file_service_registration: t.config_file_service_registration,
            dns: t.dns,
        },
        persist_tokens: acl.enable_token_persistence.unwrap_or(false),
    })
}

/// The server port's TLS from the config files (`tls { defaults internal_rpc }` and the
/// legacy keys), loaded and checked: `None` when nothing of it is configured.
fn rpc_tls(
    file: &FileConfig,
    datacenter: &str,
    server: bool,
) -> anyhow::Result<Option<std::sync::Arc<trellis_tls::rpc::RpcTls>>> {
    let s = file.rpc_tls();
    let allow_tls = file.auto_encrypt.allow_tls.unwrap_or(false);
    let auto_encrypt_tls = file.auto_encrypt.tls.unwrap_or(false);
    if allow_tls && !server {
        bail!("auto_encrypt.allow_tls can only be used on servers");
    }
    if auto_encrypt_tls && server {
        bail!("auto_encrypt.tls can only be used on client agents (servers sign the certificates)");
    }
    let config = trellis_tls::rpc::RpcTlsConfig {
        ca_file: s.ca_file,
        cert_file: s.cert_file,
        key_file: s.key_file,
        verify_incoming: s.verify_incoming,
        verify_outgoing: s.verify_outgoing,
        verify_server_hostname: s.verify_server_hostname,
        datacenter: datacenter.to_string(),
        domain: file
            .domain
            .clone()
            .unwrap_or_else(|| trellis_tls::rpc::DEFAULT_DOMAIN.to_string()),
        auto_encrypt_allow_tls: allow_tls,
        auto_encrypt_tls,
    };
    if !config.is_configured() {
        return Ok(None);
    }
    let tls = trellis_tls::rpc::RpcTls::load(&config).context("tls.internal_rpc")?;
    Ok(Some(std::sync::Arc::new(tls)))
}

/// `trellis agent`.
pub async fn run_agent(args: Box<AgentArgs>) -> anyhow::Result<()> {
    let (config, file) = agent_config(&args)?;
    let level = args
        .log_level
        .clone()
        .or(file.log_level.clone())
        .unwrap_or_else(|| "info".into());
    crate::common::init_logging(&level, args.log_json || file.log_json.unwrap_or(false))?;
    for key in file.ignored_keys() {
        tracing::warn!(%key, "config key not used by this version of Trellis; ignored");
    }
    for (old, new) in file.deprecated_keys() {
        tracing::warn!("The '{old}' field is deprecated. Use the '{new}' field instead.");
    }
    if let Some(server) = config.server.as_ref().filter(|s| s.acl.is_some()) {
        if !server.tls.as_deref().is_some_and(|t| t.verify_incoming()) {
            tracing::warn!(
                "ACLs are enforced on the HTTP API, but the server port's RPCs do not carry \
                 tokens yet: keep the server port to servers and agents with \
                 tls.internal_rpc.verify_incoming (or on a network only they reach)"
            );
        }
    }
    if let Some(tls) = config.server.as_ref().and_then(|s| s.tls.as_deref()) {
        if tls.verify_incoming() && !tls.verify_outgoing() {
            tracing::warn!(
                "tls: verify_incoming is set but verify_outgoing is not: this server dials \
                 the other servers in plaintext, which servers requiring TLS refuse"
            );
        }
    }
    if let Some(server) = &config.server {
        let modules: Vec<&str> = server.pkcs11_modules.paths().collect();
        if !modules.is_empty() {
            tracing::info!(?modules, "the CA may load these PKCS#11 modules");
        }
    }
    tracing::info!(
        node = %config.node_name,
        datacenter = %config.datacenter,
        http = %config.http_addr,
        server = config.server.as_ref().map(|s| s.rpc_addr.to_string()),
        dev = args.dev,
        "starting Trellis agent"
    );
    let (agent, listener) = Agent::start(config)
        .await
        .context("agent failed to start")?;
    for def in file.services {
        let name = def.name.clone();
        agent
            .register_service(def, false)
            .with_context(|| format!("service {name:?} from the config"))?;
    }
    tracing::info!("agent running");
    tokio::select! {
        () = agent.clone().serve(listener) => anyhow::bail!("HTTP server stopped"),
        () = agent.has_left() => {
            // Give the leave request's answer a moment to reach the caller.
            tokio::time::sleep(Duration::from_millis(200)).await;
            tracing::info!("shutting down after leaving");
            Ok(())
        }
        _ = shutdown_signal() => {
            // A client agent leaves on SIGTERM or Ctrl-C (Consul's leave_on_terminate for
            // clients), so that it is gone from the members rather than failed; a server
            // stays a member and its peers see it failed until it is back or removed.
            if agent.is_client() {
                match tokio::time::timeout(Duration::from_secs(5), agent.leave()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "could not leave gracefully"),
                    Err(_) => tracing::warn!("could not leave gracefully: no server answered in 5s"),
                }
            }
            tracing::info!("shutting down");
            Ok(())
        }
    }
}

/// `trellis leave`.
pub async fn run_leave(args: HttpArgs) -> anyhow::Result<()> {
    agent(&args)?.leave().await.context("Error leaving")?;
    println!("Graceful leave complete");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return ctrl_c.await.unwrap_or(()),
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

/// `trellis members`.
pub async fn run_members(args: HttpArgs) -> anyhow::Result<()> {
    let members = agent(&args)?.members().await?;
    println!(
        "{:<24} {:<22} {:<8} {:<8} DC",
        "Node", "Address", "Status", "Type"
    );
    for m in members {
        let kind = if m["Tags"]["role"] == "consul" {
            "server"
        } else {
            "client"
        };
        let status = if m["Status"] == 1 { "alive" } else { "failed" };
        let addr = format!("{}:{}", m["Addr"].as_str().unwrap_or(""), m["Port"]);
        println!(
            "{:<24} {:<22} {:<8} {:<8} {}",
            m["Name"].as_str().unwrap_or(""),
            addr,
            status,
            kind,
            m["Tags"]["dc"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// Runs `trellis operator raft ...`.
pub async fn run_raft(cmd: RaftCommand) -> anyhow::Result<()> {
    match cmd {
        RaftCommand::ListPeers(http) => {
            let config = agent(&http)?.raft_configuration().await?;
            println!(
                "{:<20} {:<22} {:<22} {:<9} {:<6} {:<12} LastIndex",
                "Node", "ID", "Address", "State", "Voter", "RaftProtocol"
            );
            for s in &config.servers {
                let state = if s.leader {
                    "leader"
                } else if s.voter {
                    "follower"
                } else {
                    "learner"
                };
                println!(
                    "{:<20} {:<22} {:<22} {:<9} {:<6} {:<12} {}",
                    s.node, s.id, s.address, state, s.voter, s.protocol_version, s.last_index
                );
            }
            Ok(())
        }
        RaftCommand::RemovePeer { http, id, address } => {
            let (key, value) = match (
                id.filter(|v| !v.is_empty()),
                address.filter(|v| !v.is_empty()),
            ) {
                (Some(id), None) => ("id", id),
                (None, Some(address)) => ("address", address),
                _ => bail!("give exactly one of -id or -address"),
            };
            agent(&http)?.remove_peer(key, &value).await?;
            println!("Removed peer with {key} \"{value}\"");
            Ok(())
        }
    }
}

/// The agent at `-http-addr`, with the ACL token if one is given, through the one client of
/// its HTTP API.
pub(crate) fn agent(http: &HttpArgs) -> anyhow::Result<trellis_client::AgentClient> {
    Ok(trellis_client::AgentClient::new(
        &http.http_addr,
        http.token()?,
    )?)
}

/// `trellis connect ca get-config|set-config`.
pub async fn run_ca(cmd: CaCommand) -> anyhow::Result<()> {
    match cmd {
        CaCommand::GetConfig(http) => {
            let cfg = agent(&http)?.ca_configuration().await?;
            println!("{}", serde_json::to_string_pretty(&cfg)?);
        }
        CaCommand::SetConfig { http, config_file } => {
            let body = std::fs::read_to_string(&config_file)
                .with_context(|| format!("reading {}", config_file.display()))?;
            serde_json::from_str::<serde_json::Value>(&body)
                .with_context(|| format!("{} is not valid JSON", config_file.display()))?;
            agent(&http)?.set_ca_configuration(&body).await?;
            println!("Configuration updated!");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_dash_long_flags_become_double_dash() {
        let args: Vec<std::ffi::OsString> = [
            "trellis",
            "agent",
            "-dev",
            "-http-port=9",
            "--node",
            "n",
            "-h",
            "-",
            "-5",
            "-pkcs11-module",
            "/m.so",
            "-10s",
        ]
        .iter()
        .map(std::ffi::OsString::from)
        .collect();
        let out: Vec<String> = crate::common::dash_aliases(args)
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        assert_eq!(
            out,
            [
                "trellis",
                "agent",
                "--dev",
                "--http-port=9",
                "--node",
                "n",
                "-h",
                "-",
                "-5",
                "--pkcs11-module",
                "/m.so",
                "-10s",
            ]
        );
    }

    #[test]
    fn flags_override_files_and_non_dev_needs_a_data_dir() {
        let args = AgentArgs {
            server: true,
            ..Default::default()
        };
        assert!(agent_config(&args)
            .unwrap_err()
            .to_string()
            .contains("--data-dir"));
        let args = AgentArgs {
            dev: true,
            node: Some("n1".into()),
            http_port: Some(18500),
            ..Default::default()
        };
        let (cfg, _) = agent_config(&args).unwrap();
        assert_eq!(cfg.node_name, "n1");
        assert_eq!(cfg.http_addr.port(), 18500);
        let server = cfg.server.unwrap();
        assert_eq!(server.bootstrap_expect, 1);
        assert!(
            server.pkcs11_modules.is_empty(),
            "no module allowed by default"
        );
    }

    #[test]
    fn pkcs11_modules_from_flags_and_files_reach_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hsm.hcl");
        std::fs::write(&file, "connect { pkcs11_modules = [\"/from/file.so\"] }\n").unwrap();
        let args = AgentArgs {
            dev: true,
            pkcs11_module: vec!["/from/flag.so".into()],
            config_file: vec![file],
            ..Default::default()
        };
        let (cfg, _) = agent_config(&args).unwrap();
        let modules: Vec<String> = cfg
            .server
            .unwrap()
            .pkcs11_modules
            .paths()
            .map(String::from)
            .collect();
        assert_eq!(modules, ["/from/file.so", "/from/flag.so"]);
        let args = AgentArgs {
            dev: true,
            pkcs11_module: vec!["libsofthsm2.so".into()],
            ..Default::default()
        };
        let err = agent_config(&args).unwrap_err().to_string();
        assert!(err.contains("absolute path"), "{err}");
    }

    #[test]
    fn tls_settings_missing_files_stop_the_start_and_none_means_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tls.hcl");
        std::fs::write(
            &file,
            "tls {\n  defaults {\n    verify_incoming = true\n  }\n}\n",
        )
        .unwrap();
        let args = AgentArgs {
            dev: true,
            config_file: vec![file],
            ..Default::default()
        };
        let err = format!("{:#}", agent_config(&args).unwrap_err());
        assert!(
            err.contains("verify_incoming is set but no ca_file was provided"),
            "{err}"
        );
        let missing = dir.path().join("tls2.hcl");
        std::fs::write(
            &missing,
            "tls {\n  internal_rpc {\n    ca_file = \"/nonexistent/ca.pem\"\n    verify_outgoing = true\n  }\n}\n",
        )
        .unwrap();
        let args = AgentArgs {
            dev: true,
            config_file: vec![missing],
            ..Default::default()
        };
        let err = format!("{:#}", agent_config(&args).unwrap_err());
        assert!(err.contains("ca_file /nonexistent/ca.pem"), "{err}");

        let args = AgentArgs {
            dev: true,
            ..Default::default()
        };
        let (cfg, _) = agent_config(&args).unwrap();
        assert!(cfg.rpc_tls.is_none() && cfg.server.unwrap().tls.is_none());
    }
}
