//! Raft RPCs to peers: JSON over HTTP to their server port.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{ServerNode, TypeConfig};

/// Path of the AppendEntries RPC on a server port.
pub const RPC_APPEND: &str = "/v1/internal/raft/append";
/// Path of the RequestVote RPC on a server port.
pub const RPC_VOTE: &str = "/v1/internal/raft/vote";
/// Path of the InstallSnapshot RPC on a server port.
pub const RPC_SNAPSHOT: &str = "/v1/internal/raft/snapshot";

/// When each peer last answered a Raft RPC, by node ID.
type Contacts = Arc<Mutex<HashMap<u64, Instant>>>;

/// A client of server ports: an HTTP client and whether it speaks TLS to them. Every URL
/// aimed at a server port is built here ([`RpcClient::url`]), so the scheme comes from one
/// place. Cheap to clone (one shared connection pool).
#[derive(Clone, Debug)]
pub struct RpcClient {
    http: reqwest::Client,
    tls: bool,
}

impl RpcClient {
    /// Wraps `http`, which must have been built with the server port's TLS client
    /// configuration when `tls` is set.
    pub fn new(http: reqwest::Client, tls: bool) -> RpcClient {
        RpcClient { http, tls }
    }

    /// Whether server ports are dialled over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The URL of `path` on the server port at `addr` (`host:port`).
    pub fn url(&self, addr: &str, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{addr}{path}")
    }

    /// A GET of `path` on the server port at `addr`.
    pub fn get(&self, addr: &str, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(addr, path))
    }

    /// A POST to `path` on the server port at `addr`.
    pub fn post(&self, addr: &str, path: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(addr, path))
    }
}

/// Makes RPC clients for peers; one shared HTTP connection pool.
#[derive(Clone)]
pub struct Network {
    http: RpcClient,
    contacts: Contacts,
}

impl Network {
    /// A network with its own plaintext connection pool.
    pub fn new() -> Network {
        Network::with_client(RpcClient::new(
            Network::client_builder()
                .build()
                .expect("HTTP client builds"),
            false,
        ))
    }

    /// The settings of the transport's HTTP client, before any TLS is added.
    pub fn client_builder() -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .pool_idle_timeout(Duration::from_secs(30))
    }

    /// A network sending its RPCs through `http` (built from [`Network::client_builder`]).
    pub fn with_client(http: RpcClient) -> Network {
        Network {
            http,
            contacts: Contacts::default(),
        }
    }

    /// How long ago `peer` last answered a Raft RPC from this server; `None` if never.
    pub fn since_contact(&self, peer: u64) -> Option<Duration> {
        self.contacts.lock().get(&peer).map(Instant::elapsed)
    }
}

impl Default for Network {
    fn default() -> Self {
        Network::new()
    }
}

/// The RPC client for one peer.
pub struct Peer {
    http: RpcClient,
    target: u64,
    node: ServerNode,
    contacts: Contacts,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &ServerNode) -> Peer {
        Peer {
            http: self.http.clone(),
            target,
            node: node.clone(),
            contacts: self.contacts.clone(),
        }
    }
}

impl Peer {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<u64, ServerNode, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let url = self.http.url(&self.node.addr, path);
        let resp = self
            .http
            .post(&self.node.addr, path)
            .timeout(timeout)
            .json(req)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        if !resp.status().is_success() {
            let err = std::io::Error::other(format!("{url} answered {}", resp.status()));
            return Err(RPCError::Network(NetworkError::new(&err)));
        }
        let result: Result<Resp, RaftError<u64, E>> = resp
            .json()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.contacts.lock().insert(self.target, Instant::now());
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, ServerNode, RaftError<u64>>> {
        self.call(RPC_APPEND, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, ServerNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.call(RPC_SNAPSHOT, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, ServerNode, RaftError<u64>>> {
        self.call(RPC_VOTE, &rpc, option.hard_ttl()).await
    }
}
