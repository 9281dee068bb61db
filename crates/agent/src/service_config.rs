//! Keeps each local proxy's configuration resolved from config entries: Consul's service
//! config watch (`enable_central_service_config`).
//!
//! For every `connect-proxy` registered on this agent, one task blocks on the agent cache's
//! [`ResolvedServiceConfig`] entry for the proxy's destination and upstreams, and hands each
//! new answer to [`LocalState::set_resolved`]. Reads of the proxy (`/v1/agent/service/:id`,
//! the catalog sync) then see `service-defaults`/`proxy-defaults` merged under the
//! registration, so a proxy learns its protocol (L4 or L7) and its upstreams' from the agent,
//! and follows changes to them with a blocking query on its own registration.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::task::AbortHandle;
use trellis_api::{kind, AgentService};

use crate::cache::{Cache, Key, ResolvedServiceConfig, ServiceConfigRequest};
use crate::local::LocalState;

/// The pause after a failed first fetch before asking again (the cache serves the last value
/// once there is one, so this only delays a proxy registered while the servers are away).
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(2);

/// The request a proxy's resolved configuration is fetched with; `None` for anything that is
/// not a `connect-proxy`.
pub fn request_for(svc: &AgentService) -> Option<ServiceConfigRequest> {
    if svc.kind != kind::CONNECT_PROXY {
        return None;
    }
    let proxy = svc.proxy.as_ref()?;
    if proxy.destination_service_name.is_empty() {
        return None;
    }
    let upstreams = proxy
        .upstreams
        .iter()
        .filter(|u| u.destination_type.is_empty() || u.destination_type == "service")
        .map(|u| u.destination_name.clone());
    Some(ServiceConfigRequest::new(
        proxy.destination_service_name.clone(),
        upstreams,
    ))
}

/// One watch task per local proxy, by service ID.
pub struct ServiceConfigs {
    cache: Arc<Cache<ResolvedServiceConfig>>,
    local: Arc<LocalState>,
    datacenter: String,
    watches: Mutex<HashMap<String, (ServiceConfigRequest, AbortHandle)>>,
}

impl ServiceConfigs {
    /// Watches for the proxies of `local`, fetching through `cache` in `datacenter`.
    pub fn new(
        cache: Arc<Cache<ResolvedServiceConfig>>,
        local: Arc<LocalState>,
        datacenter: String,
    ) -> ServiceConfigs {
        ServiceConfigs {
            cache,
            local,
            datacenter,
            watches: Mutex::new(HashMap::new()),
        }
    }

    /// Starts, restarts (its upstreams changed) or stops the watch for `svc` as its
    /// registration now requires. Needs a tokio runtime.
    pub fn track(&self, svc: &AgentService) {
        let Some(request) = request_for(svc) else {
            self.untrack(&svc.id);
            return;
        };
        let mut watches = self.watches.lock();
        if watches.get(&svc.id).is_some_and(|(r, _)| *r == request) {
            return;
        }
        let task = tokio::spawn(watch(
            self.cache.clone(),
            self.local.clone(),
            svc.id.clone(),
            Key::new(self.datacenter.clone(), "", request.clone()),
        ));
        if let Some((_, old)) = watches.insert(svc.id.clone(), (request, task.abort_handle())) {
            old.abort();
        }
    }

    /// Stops the watch for the service `id` and forgets what it resolved.
    pub fn untrack(&self, id: &str) {
        if let Some((_, task)) = self.watches.lock().remove(id) {
            task.abort();
        }
        self.local.set_resolved(id, None);
    }

    /// How many proxies are watched.
    pub fn len(&self) -> usize {
        self.watches.lock().len()
    }

    /// Whether no proxy is watched.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for ServiceConfigs {
    fn drop(&mut self) {
        for (_, (_, task)) in self.watches.get_mut().drain() {
            task.abort();
        }
    }
}

/// Follows one proxy's resolved configuration until aborted.
async fn watch(
    cache: Arc<Cache<ResolvedServiceConfig>>,
    local: Arc<LocalState>,
    id: String,
    key: Key<ServiceConfigRequest>,
) {
    let mut index = 0;
    loop {
        match cache
            .get(key.clone(), index, cache.options().query_timeout)
            .await
        {
            Ok(hit) => {
                index = hit.index;
                local.set_resolved(&id, Some(hit.value));
            }
            Err(e) => {
                tracing::warn!(service = %id, error = %e, "cannot resolve the proxy's service configuration yet");
                tokio::time::sleep(RETRY_AFTER_ERROR).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_proxies_with_a_destination_are_watched() {
        let plain = AgentService {
            id: "web".into(),
            service: "web".into(),
            ..Default::default()
        };
        assert_eq!(request_for(&plain), None);
        let proxy: AgentService = serde_json::from_value(serde_json::json!({
            "ID": "web-sidecar-proxy", "Service": "web-sidecar-proxy", "Kind": "connect-proxy",
            "Proxy": {"DestinationServiceName": "web", "Upstreams": [
                {"DestinationName": "db", "LocalBindPort": 1},
                {"DestinationName": "api", "LocalBindPort": 2},
                {"DestinationName": "db", "Datacenter": "dc2", "LocalBindPort": 3},
                {"DestinationName": "q", "DestinationType": "prepared_query", "LocalBindPort": 4}
            ]}
        }))
        .expect("a proxy");
        assert_eq!(
            request_for(&proxy),
            Some(ServiceConfigRequest {
                name: "web".into(),
                upstreams: vec!["api".into(), "db".into()],
            })
        );
    }
}
