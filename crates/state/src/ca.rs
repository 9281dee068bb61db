//! The CA's replicated state: cluster identity, configuration, provider state and roots.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use trellis_api::{CaConfiguration, CaRoot};

/// A root as stored: its API form and when it stopped being active.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StoredRoot {
    /// The root as the API shows it.
    pub root: CaRoot,
    /// Unix seconds when it was rotated out; `None` while active or never rotated.
    pub rotated_out_at: Option<i64>,
}

/// Everything the CA keeps in the replicated store. The provider state can hold the CA's
/// private key (the built-in provider's), so it never appears in `Debug` output or any API.
#[derive(Serialize, Deserialize, Clone, PartialEq, Default)]
pub struct CaState {
    /// The cluster ID (a UUID) made when the primary datacenter bootstrapped.
    pub cluster_id: String,
    /// `<cluster-id>.consul`.
    pub trust_domain: String,
    /// Provider and its configuration, as stored (secrets included; stripped on the way out).
    pub config: CaConfiguration,
    /// Provider-owned state (the built-in provider's key and root).
    pub provider_state: BTreeMap<String, String>,
    /// Every trusted root; exactly one is active.
    pub roots: Vec<StoredRoot>,
    /// Raft index of the last change (the check-and-set index of `CaSet`).
    pub modify_index: u64,
}

impl std::fmt::Debug for CaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaState")
            .field("cluster_id", &self.cluster_id)
            .field("trust_domain", &self.trust_domain)
            .field("provider", &self.config.provider)
            .field(
                "provider_state_keys",
                &self.provider_state.keys().collect::<Vec<_>>(),
            )
            .field(
                "roots",
                &self.roots.iter().map(|r| &r.root.id).collect::<Vec<_>>(),
            )
            .field("modify_index", &self.modify_index)
            .finish()
    }
}

impl CaState {
    /// The active root, if any.
    pub fn active_root(&self) -> Option<&CaRoot> {
        self.roots.iter().map(|r| &r.root).find(|r| r.active)
    }

    /// Fills create/modify indexes of what changed relative to `previous`, at `index`.
    pub(crate) fn stamp(&mut self, previous: Option<&CaState>, index: u64) {
        self.modify_index = index;
        let prev_cfg = previous.map(|p| &p.config);
        let cfg_changed = prev_cfg.is_none_or(|p| {
            p.provider != self.config.provider
                || p.config != self.config.config
                || p.force_without_cross_signing != self.config.force_without_cross_signing
        });
        self.config.create_index = prev_cfg.map(|p| p.create_index).unwrap_or(index);
        self.config.modify_index = if cfg_changed {
            index
        } else {
            prev_cfg.map(|p| p.modify_index).unwrap_or(index)
        };
        self.config.state = None;
        for stored in &mut self.roots {
            let old = previous.and_then(|p| p.roots.iter().find(|r| r.root.id == stored.root.id));
            match old {
                None => {
                    stored.root.create_index = index;
                    stored.root.modify_index = index;
                }
                Some(old) => {
                    stored.root.create_index = old.root.create_index;
                    let mut probe = stored.root.clone();
                    probe.modify_index = old.root.modify_index;
                    probe.create_index = old.root.create_index;
                    stored.root.modify_index = if probe == old.root {
                        old.root.modify_index
                    } else {
                        index
                    };
                }
            }
        }
    }
}

/// Validates the shape every replica relies on: one active root, a trust domain.
pub(crate) fn validate_ca_state(state: &CaState) -> Result<(), String> {
    if state.cluster_id.is_empty() || state.trust_domain.is_empty() {
        return Err("CA state needs a cluster ID and a trust domain".into());
    }
    if state.roots.iter().filter(|r| r.root.active).count() != 1 {
        return Err("CA state must have exactly one active root".into());
    }
    Ok(())
}
