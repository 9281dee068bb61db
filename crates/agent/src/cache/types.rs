//! The kinds of data the agent caches, one [`CacheType`] each.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use trellis_api::ServiceConfigResponse;
use trellis_intentions::Engine;
use trellis_rpc::QueryOptions;
use trellis_state::{Query, QueryOutput};

use super::{CacheType, FetchError, Key};
use crate::intentions::engine_from_match;
use crate::Backend;

/// Fetches the intentions that apply to `destination` (blocking past `min_index` for up to
/// `wait`) and builds them into an engine, with the answer's index.
pub(crate) async fn match_engine(
    backend: Backend,
    destination: String,
    min_index: u64,
    wait: Duration,
) -> Result<(Arc<Engine>, u64), FetchError> {
    let query = Query::IntentionMatch {
        by_source: false,
        names: vec![destination.clone()],
    };
    let options = QueryOptions::blocking(min_index, wait);
    let answer = backend.query(query, options).await?;
    let body = match answer.output {
        QueryOutput::Found(body) => body,
        QueryOutput::NotFound(msg) => return Err(FetchError::Invalid(msg)),
    };
    let by_name = body
        .intention_matches()
        .map_err(|e| FetchError::Invalid(format!("intention match: {e}")))?;
    let list = by_name.get(&destination).cloned().unwrap_or_default();
    Ok((Arc::new(engine_from_match(&list)), answer.index))
}

/// The intentions that apply to one destination (its own and the wildcard destination's),
/// as an [`Engine`] ready to decide `/v1/agent/connect/authorize`: Consul's
/// `IntentionMatch` cache type, matched by destination.
///
/// The request is the destination name. The key's token and datacenter partition the
/// entries but are not sent yet: the backend has no ACLs and answers for its own
/// datacenter.
#[derive(Clone)]
pub struct IntentionMatch {
    backend: Backend,
}

impl IntentionMatch {
    /// Fetches through `backend`.
    pub fn new(backend: Backend) -> IntentionMatch {
        IntentionMatch { backend }
    }
}

impl CacheType for IntentionMatch {
    type Request = String;
    type Value = Arc<Engine>;
    const NAME: &'static str = "intention-match";

    fn fetch(
        &self,
        key: &Key<String>,
        min_index: u64,
        wait: Duration,
    ) -> impl Future<Output = Result<(Arc<Engine>, u64), FetchError>> + Send {
        match_engine(self.backend.clone(), key.request.clone(), min_index, wait)
    }
}

/// Any read of the replicated store, answered as the servers answer it: catalog and health
/// reads that `?cached` asks for, health/connect discovery, CA roots. The request is the
/// [`Query`] itself; the value is its answer (a shared body, cheap to clone).
#[derive(Clone)]
pub struct StoreQuery {
    backend: Backend,
}

impl StoreQuery {
    /// Fetches through `backend`.
    pub fn new(backend: Backend) -> StoreQuery {
        StoreQuery { backend }
    }
}

impl CacheType for StoreQuery {
    type Request = Query;
    type Value = QueryOutput;
    const NAME: &'static str = "store-query";

    fn fetch(
        &self,
        key: &Key<Query>,
        min_index: u64,
        wait: Duration,
    ) -> impl Future<Output = Result<(QueryOutput, u64), FetchError>> + Send {
        let backend = self.backend.clone();
        let query = key.request.clone();
        async move {
            let options = QueryOptions::blocking(min_index, wait);
            let answer = backend.query(query, options).await?;
            Ok((answer.output, answer.index))
        }
    }
}

/// What a [`ResolvedServiceConfig`] entry is for: a service and its upstreams' names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceConfigRequest {
    /// The service (a proxy's destination).
    pub name: String,
    /// The upstreams' destination names, sorted and without repeats, so that one set of
    /// upstreams is one entry whatever order a registration lists them in.
    pub upstreams: Vec<String>,
}

impl ServiceConfigRequest {
    /// The request for `name` with `upstreams` in any order.
    pub fn new(name: impl Into<String>, upstreams: impl IntoIterator<Item = String>) -> Self {
        let mut upstreams: Vec<String> = upstreams.into_iter().collect();
        upstreams.sort();
        upstreams.dedup();
        ServiceConfigRequest {
            name: name.into(),
            upstreams,
        }
    }
}

/// A service's configuration resolved from `service-defaults` and `proxy-defaults`, for its
/// proxy: the protocol that decides L4 or L7, and each upstream's. Consul's
/// `ResolvedServiceConfig` cache type.
#[derive(Clone)]
pub struct ResolvedServiceConfig {
    backend: Backend,
}

impl ResolvedServiceConfig {
    /// Fetches through `backend`.
    pub fn new(backend: Backend) -> ResolvedServiceConfig {
        ResolvedServiceConfig { backend }
    }
}

impl CacheType for ResolvedServiceConfig {
    type Request = ServiceConfigRequest;
    type Value = Arc<ServiceConfigResponse>;
    const NAME: &'static str = "resolved-service-config";

    fn fetch(
        &self,
        key: &Key<ServiceConfigRequest>,
        min_index: u64,
        wait: Duration,
    ) -> impl Future<Output = Result<(Self::Value, u64), FetchError>> + Send {
        let backend = self.backend.clone();
        let query = Query::ResolveServiceConfig {
            name: key.request.name.clone(),
            upstreams: key.request.upstreams.clone(),
        };
        async move {
            let options = QueryOptions::blocking(min_index, wait);
            let answer = backend.query(query, options).await?;
            let body = match answer.output {
                QueryOutput::Found(body) => body,
                QueryOutput::NotFound(msg) => return Err(FetchError::Invalid(msg)),
            };
            let resolved: &ServiceConfigResponse = body
                .service_config()
                .map_err(|e| FetchError::Invalid(format!("resolved service config: {e}")))?;
            Ok((Arc::new(resolved.clone()), answer.index))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{Cache, Options};
    use trellis_rpc::Write;

    /// The abstraction fits a real type: a dev server in-process, the cache in front of it,
    /// and a write on the server reaching a getter blocked on the cache.
    #[tokio::test]
    async fn intention_match_through_the_cache() {
        let server = crate::test_server().await;
        let backend = Backend::Local(server);
        let cache = Cache::new(IntentionMatch::new(backend.clone()), Options::default());
        let key = Key::new("dc1", "", "db".to_string());

        let first = cache.get(key.clone(), 0, Duration::ZERO).await.unwrap();
        assert!(!first.cache_hit);
        assert_eq!(first.value.len(), 0);
        assert!(!first.value.decide("web", "db", false).allowed);
        let again = cache.get(key.clone(), 0, Duration::ZERO).await.unwrap();
        assert!(again.cache_hit);
        assert!(Arc::ptr_eq(&first.value, &again.value));

        let source = serde_json::json!({ "Name": "web", "Action": "allow" });
        backend
            .apply(Write::IntentionUpsert {
                destination: "db".into(),
                source: source.as_object().cloned().unwrap_or_default(),
                create_only: false,
                replace_id: None,
            })
            .await
            .unwrap();

        // The background refresher picks the write up and wakes this blocked get.
        let next = cache
            .get(key.clone(), first.index, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(next.index > first.index);
        assert!(next.value.decide("web", "db", false).allowed);
        assert!(!next.value.decide("api", "db", false).allowed);
        assert_eq!(next.age, Duration::ZERO);
        assert_eq!(cache.len(), 1);
    }
}
