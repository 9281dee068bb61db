//! The current TLS configurations, swapped whole when the leaf or the roots change.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::{ClientConfig, ServerConfig};
use tokio::sync::watch;
use trellis_identity::ServiceId;

use crate::{client_config, server_config, Credentials, ExpectedService, TlsError};

/// How many client configurations one snapshot caches; past this, configurations for further
/// upstreams are built on every call instead of growing the cache.
pub const MAX_CACHED_CLIENT_CONFIGS: usize = 1024;

/// The TLS configurations built from one version of the credentials.
///
/// Immutable apart from its client-configuration cache. A connection keeps the `Arc` of the
/// configuration it started with, so replacing the snapshot never disturbs it.
pub struct TlsSnapshot {
    generation: u64,
    credentials: Credentials,
    server: Arc<ServerConfig>,
    clients: ClientCache,
}

impl TlsSnapshot {
    fn build(credentials: Credentials, server_alpn: &[Vec<u8>]) -> Result<Self, TlsError> {
        let alpn: Vec<&[u8]> = server_alpn.iter().map(Vec::as_slice).collect();
        let server = server_config(&credentials, &alpn)?;
        Ok(TlsSnapshot {
            generation: 0,
            credentials,
            server,
            clients: ClientCache::default(),
        })
    }

    /// Which version this is: 0 for the first credentials, one more on every update.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The credentials the configurations were built from.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The service the leaf identifies.
    pub fn identity(&self) -> &ServiceId {
        self.credentials.identity()
    }

    /// The leaf's `notAfter`, in Unix seconds.
    pub fn not_after(&self) -> i64 {
        self.credentials.not_after()
    }

    /// The public listener's configuration (see [`server_config`]).
    pub fn server_config(&self) -> &Arc<ServerConfig> {
        &self.server
    }

    /// The configuration for dialling `expected` with `alpn` (see [`client_config`]), built
    /// on first use and cached for the life of this snapshot.
    pub fn client_config(
        &self,
        expected: &ExpectedService,
        alpn: &[&[u8]],
    ) -> Result<Arc<ClientConfig>, TlsError> {
        let hash = self.clients.hasher.hash_one((expected, alpn));
        if let Some(config) = self.clients.get(hash, expected, alpn) {
            return Ok(config);
        }
        let config = client_config(&self.credentials, expected, alpn)?;
        Ok(self.clients.insert(hash, expected, alpn, config))
    }
}

impl std::fmt::Debug for TlsSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSnapshot")
            .field("generation", &self.generation)
            .field("credentials", &self.credentials)
            .field("cached_client_configs", &self.clients.entries.read().len)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct ClientCache {
    hasher: RandomState,
    entries: RwLock<Entries>,
}

#[derive(Default)]
struct Entries {
    by_hash: HashMap<u64, Vec<CachedClient>>,
    len: usize,
}

struct CachedClient {
    expected: ExpectedService,
    alpn: Vec<Vec<u8>>,
    config: Arc<ClientConfig>,
}

impl CachedClient {
    fn is(&self, expected: &ExpectedService, alpn: &[&[u8]]) -> bool {
        &self.expected == expected
            && self.alpn.len() == alpn.len()
            && self.alpn.iter().zip(alpn).all(|(a, b)| a == b)
    }
}

impl ClientCache {
    fn get(
        &self,
        hash: u64,
        expected: &ExpectedService,
        alpn: &[&[u8]],
    ) -> Option<Arc<ClientConfig>> {
        let entries = self.entries.read();
        entries
            .by_hash
            .get(&hash)?
            .iter()
            .find(|c| c.is(expected, alpn))
            .map(|c| c.config.clone())
    }

    /// Caches `config` unless the cache is full or another caller got there first; returns the
    /// configuration to use.
    fn insert(
        &self,
        hash: u64,
        expected: &ExpectedService,
        alpn: &[&[u8]],
        config: Arc<ClientConfig>,
    ) -> Arc<ClientConfig> {
        let mut entries = self.entries.write();
        if let Some(existing) = entries
            .by_hash
            .get(&hash)
            .and_then(|bucket| bucket.iter().find(|c| c.is(expected, alpn)))
        {
            return existing.config.clone();
        }
        if entries.len >= MAX_CACHED_CLIENT_CONFIGS {
            return config;
        }
        entries.len += 1;
        entries.by_hash.entry(hash).or_default().push(CachedClient {
            expected: expected.clone(),
            alpn: alpn.iter().map(|p| p.to_vec()).collect(),
            config: config.clone(),
        });
        config
    }
}

/// The current [`TlsSnapshot`], published through a [`watch`] channel.
///
/// Connection paths call [`TlsState::current`] (or keep a receiver from
/// [`TlsState::subscribe`]) and get an `Arc` to an immutable snapshot; [`TlsState::update`]
/// builds the next snapshot completely and then swaps it in, so a handshake sees either the
/// old credentials and roots or the new ones, never a mix. Connections already established
/// keep the configuration they started with.
pub struct TlsState {
    tx: watch::Sender<Arc<TlsSnapshot>>,
    server_alpn: Vec<Vec<u8>>,
}

impl TlsState {
    /// Builds the first snapshot. `server_alpn` is what the public listener offers, kept for
    /// every later snapshot.
    pub fn new(credentials: Credentials, server_alpn: &[&[u8]]) -> Result<Self, TlsError> {
        let server_alpn: Vec<Vec<u8>> = server_alpn.iter().map(|p| p.to_vec()).collect();
        let snapshot = TlsSnapshot::build(credentials, &server_alpn)?;
        tracing::info!(
            identity = %snapshot.identity(),
            not_after = snapshot.not_after(),
            "TLS credentials loaded"
        );
        let (tx, _) = watch::channel(Arc::new(snapshot));
        Ok(TlsState { tx, server_alpn })
    }

    /// Replaces the snapshot with one built from `credentials` (a renewed leaf, new roots, or
    /// both) and returns its generation. On error the current snapshot stays in place.
    pub fn update(&self, credentials: Credentials) -> Result<u64, TlsError> {
        let mut next = TlsSnapshot::build(credentials, &self.server_alpn)?;
        let mut generation = 0;
        self.tx.send_modify(|current| {
            generation = current.generation + 1;
            next.generation = generation;
            tracing::info!(
                identity = %next.identity(),
                not_after = next.not_after(),
                generation,
                "TLS credentials updated"
            );
            *current = Arc::new(next);
        });
        Ok(generation)
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<TlsSnapshot> {
        self.tx.borrow().clone()
    }

    /// A receiver that sees every later snapshot, for tasks that react to changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<TlsSnapshot>> {
        self.tx.subscribe()
    }

    /// The current leaf's `notAfter`, in Unix seconds.
    pub fn not_after(&self) -> i64 {
        self.tx.borrow().not_after()
    }
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState")
            .field("current", &*self.tx.borrow())
            .finish_non_exhaustive()
    }
}
