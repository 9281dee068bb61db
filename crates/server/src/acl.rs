//! The servers' side of ACLs: the leader's initialisation, the bootstrap reset file, and
//! token resolution for client agents.

use std::path::Path;
use std::sync::Weak;
use std::time::Duration;

use trellis_api::AclToken;
use trellis_state::Command;

use crate::Server;

/// ACLs on a server (Consul's `acl { enabled tokens { initial_management } }`).
#[derive(Clone, Default)]
pub struct ServerAcl {
    /// `acl.tokens.initial_management`: a management token the leader makes when missing
    /// (which also ends bootstrapping).
    pub initial_management: Option<String>,
}

impl std::fmt::Debug for ServerAcl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerAcl")
            .field(
                "initial_management",
                &self.initial_management.as_ref().map(|_| "<hidden>"),
            )
            .finish()
    }
}

/// The file whose content (an index) allows bootstrapping again (Consul's).
pub const BOOTSTRAP_RESET_FILE: &str = "acl-bootstrap-reset";

/// Where the reset file is: in the agent's data dir, as Consul has it, which holds the server's
/// (`<data_dir>/raft`, the `raft_dir` given here).
fn reset_file(raft_dir: &Path) -> std::path::PathBuf {
    raft_dir
        .parent()
        .unwrap_or(raft_dir)
        .join(BOOTSTRAP_RESET_FILE)
}

/// The reset index in `<data_dir>/acl-bootstrap-reset`, if the file is there and holds one.
pub(crate) fn reset_index(data_dir: Option<&Path>) -> Option<u64> {
    let text = std::fs::read_to_string(reset_file(data_dir?)).ok()?;
    match text.trim().parse() {
        Ok(i) => Some(i),
        Err(_) => {
            tracing::warn!(
                file = BOOTSTRAP_RESET_FILE,
                "the ACL bootstrap reset file does not hold an index; ignored"
            );
            None
        }
    }
}

/// Removes the reset file once a reset bootstrap took, so it serves once.
pub(crate) fn reset_used(data_dir: Option<&Path>) {
    if let Some(dir) = data_dir {
        let _ = std::fs::remove_file(reset_file(dir));
    }
}

/// How often the leader deletes expired tokens.
pub const REAP_INTERVAL: Duration = Duration::from_secs(5);

/// Leader-only ACL work, while ACLs are on: initialise the ACL system, then delete expired
/// tokens every [`REAP_INTERVAL`] (they are refused from the moment they expire; this takes
/// them out of the state). Aborted when leadership ends.
pub(crate) async fn run(server: Weak<Server>) {
    if server.upgrade().is_none_or(|s| s.config().acl.is_none()) {
        return;
    }
    initialise(server.clone()).await;
    loop {
        tokio::time::sleep(REAP_INTERVAL).await;
        let Some(s) = server.upgrade() else { return };
        let now = std::time::SystemTime::now();
        let expired: Vec<String> = s
            .store()
            .acl_expiring_tokens()
            .into_iter()
            .filter(|(_, at)| {
                // One that does not read is refused already; it goes too.
                humantime::parse_rfc3339_weak(at).map_or(true, |t| t <= now)
            })
            .map(|(accessor, _)| accessor)
            .collect();
        for accessor in expired {
            match s
                .apply_as_leader(Command::AclTokenDelete {
                    accessor: accessor.clone(),
                })
                .await
            {
                Ok(_) => tracing::info!(%accessor, "expired ACL token deleted"),
                Err(e) => {
                    tracing::warn!(%accessor, error = %e, "deleting an expired ACL token");
                    break;
                }
            }
        }
    }
}

/// Leader-only: writes the built-in policy and anonymous token, and the initial management
/// token when configured, tried again until it is committed (or leadership ends, which aborts
/// this task).
async fn initialise(server: Weak<Server>) {
    let mut pause = Duration::from_millis(100);
    loop {
        let Some(s) = server.upgrade() else { return };
        let Some(acl) = s.config().acl.clone() else {
            return;
        };
        let create_time = now_rfc3339();
        let initial_management = acl.initial_management.map(|secret| AclToken {
            accessor_id: uuid::Uuid::new_v4().to_string(),
            secret_id: secret,
            description: trellis_api::INITIAL_MANAGEMENT_DESCRIPTION.into(),
            create_time: create_time.clone(),
            ..Default::default()
        });
        match s
            .apply_as_leader(Command::AclInit {
                initial_management,
                create_time,
            })
            .await
        {
            Ok(_) => {
                tracing::debug!("ACL system initialised");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "initialising the ACL system; trying again");
            }
        }
        drop(s);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// Now as RFC 3339 in UTC, as Consul writes `CreateTime`.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reset_file_is_read_from_the_agents_data_dir_and_used_once() {
        let dir = tempfile::tempdir().unwrap();
        let raft = dir.path().join("raft");
        std::fs::create_dir_all(&raft).unwrap();
        assert_eq!(reset_index(Some(&raft)), None);
        std::fs::write(dir.path().join(BOOTSTRAP_RESET_FILE), "12\n").unwrap();
        assert_eq!(reset_index(Some(&raft)), Some(12));
        reset_used(Some(&raft));
        assert_eq!(reset_index(Some(&raft)), None);
        std::fs::write(dir.path().join(BOOTSTRAP_RESET_FILE), "twelve").unwrap();
        assert_eq!(reset_index(Some(&raft)), None);
        assert_eq!(reset_index(None), None);
    }
}
