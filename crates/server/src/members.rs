//! Agent liveness without gossip. Client agents send their servers a heartbeat; the leader
//! records when it last heard from each node, and a leader-only loop keeps every member's
//! [`serf_check`] in the catalog passing or critical (Consul's Serf health check). Servers are
//! judged by Raft contact instead. A failed node's node-level check fails its services in
//! health queries, as in Consul.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use trellis_api::{serf_check, status, CatalogRegistration, HealthCheck, MemberHealth};
use trellis_rpc::{Heartbeat, MAX_HEARTBEAT};
use trellis_state::Command;

/// Heartbeats a node may miss before it is failed.
pub const MISSED_BEFORE_FAILED: u32 = 3;
/// How often the leader compares what it has heard with the catalog.
const RECONCILE_EVERY: Duration = Duration::from_millis(500);

/// When the leader last heard from a node.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    at: Instant,
    every: Duration,
    address: String,
}

/// How long a client agent's node may stay failed before the leader deregisters it (Consul's
/// `reconnect_timeout`, 72 hours), counted by the leader from when it saw the node failed (or
/// from the start of its leadership).
pub const REAP_AFTER: Duration = Duration::from_secs(72 * 3600);

/// How long the leader remembers that an agent process left, to ignore its late heartbeats.
const LEFT_REMEMBERED: Duration = Duration::from_secs(120);

/// The leader's record of heartbeats, cleared whenever it becomes leader (a record from an
/// earlier term would mark live nodes failed).
#[derive(Default)]
pub(crate) struct Liveness {
    seen: Mutex<HashMap<String, Seen>>,
    /// Agent processes that left lately: node → (incarnation, when).
    left: Mutex<HashMap<String, (u64, Instant)>>,
    /// Since when this leader has seen each failed member failed.
    failed_since: Mutex<HashMap<String, Instant>>,
    /// Held by a reconcile pass and by a leave, so that a pass computed before a leave cannot
    /// write the node back after it.
    pub(crate) pass: tokio::sync::Mutex<()>,
}

impl Liveness {
    /// Records a (validated) heartbeat heard at `now`, unless it comes from an agent process
    /// that has left.
    pub(crate) fn record(&self, hb: &Heartbeat, now: Instant) {
        {
            let mut left = self.left.lock();
            left.retain(|_, (_, at)| now.saturating_duration_since(*at) < LEFT_REMEMBERED);
            if left
                .get(&hb.node)
                .is_some_and(|(inc, _)| *inc == hb.incarnation)
            {
                return;
            }
            left.remove(&hb.node);
        }
        self.seen.lock().insert(
            hb.node.clone(),
            Seen {
                at: now,
                every: Duration::from_millis(hb.interval_ms),
                address: hb.address.clone(),
            },
        );
    }

    /// Records that an agent process left: its record goes and its late heartbeats are
    /// ignored.
    fn record_leave(&self, hb: &Heartbeat, now: Instant) {
        self.seen.lock().remove(&hb.node);
        self.left
            .lock()
            .insert(hb.node.clone(), (hb.incarnation, now));
    }

    /// Forgets everything (on becoming leader).
    pub(crate) fn clear(&self) {
        self.seen.lock().clear();
        self.left.lock().clear();
        self.failed_since.lock().clear();
    }

    fn snapshot(&self) -> HashMap<String, Seen> {
        self.seen.lock().clone()
    }

    /// Drops the records of these nodes (failed and gone from the catalog, or reaped).
    pub(crate) fn forget(&self, nodes: &[String]) {
        let mut seen = self.seen.lock();
        for n in nodes {
            seen.remove(n);
        }
    }
}

/// A voter as the leader sees it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ServerHealth {
    /// Node name.
    pub name: String,
    /// Node address (the server port's host).
    pub address: String,
    /// Whether it answers Raft RPCs.
    pub reachable: bool,
}

/// A member check to write: the node, its address and the status it should have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Change {
    pub node: String,
    pub address: String,
    pub status: &'static str,
}

/// What the leader must change in the catalog, given the voters, the heartbeats it has heard
/// since `leading_since`, and the members' checks as the catalog holds them. A node the
/// catalog shows as a member but this leader has not heard from keeps its status for
/// [`MISSED_BEFORE_FAILED`] × [`MAX_HEARTBEAT`] from the start of its leadership, then fails.
/// A failed node missing from the catalog is not registered again. Also returns heartbeat
/// records that can be forgotten.
pub(crate) fn plan(
    now: Instant,
    leading_since: Instant,
    servers: &[ServerHealth],
    seen: &HashMap<String, Seen>,
    current: &[MemberHealth],
) -> (Vec<Change>, Vec<String>) {
    let alive_since = |at: Instant, every: Duration| {
        now.saturating_duration_since(at) <= every * MISSED_BEFORE_FAILED
    };
    let status_of = |alive: bool| {
        if alive {
            status::PASSING
        } else {
            status::CRITICAL
        }
    };
    let mut want: BTreeMap<&str, (&str, &'static str)> = BTreeMap::new();
    for (node, s) in seen {
        want.insert(node, (&s.address, status_of(alive_since(s.at, s.every))));
    }
    for s in servers {
        want.insert(&s.name, (&s.address, status_of(s.reachable)));
    }
    let held: HashMap<&str, &MemberHealth> = current.iter().map(|m| (m.node.as_str(), m)).collect();
    // Unheard members keep what the catalog holds during the grace, then fail.
    if !alive_since(leading_since, MAX_HEARTBEAT) {
        for m in current {
            want.entry(&m.node)
                .or_insert((&m.address, status::CRITICAL));
        }
    }
    let mut changes = Vec::new();
    let mut forget = Vec::new();
    for (node, (address, status)) in want {
        match held.get(node) {
            Some(m) if m.status == status => {}
            None if status != status::PASSING => forget.push(node.to_string()),
            _ => changes.push(Change {
                node: node.to_string(),
                address: address.to_string(),
                status,
            }),
        }
    }
    (changes, forget)
}

/// On the leader: a node leaving for good is forgotten and deregistered with its services
/// and checks (Consul reaps a member that left the same way).
pub(crate) async fn leave(s: &crate::Server, hb: &Heartbeat) -> Result<(), crate::ServerError> {
    let _pass = s.liveness.pass.lock().await;
    s.liveness.record_leave(hb, Instant::now());
    let cmd = Command::Deregister(trellis_api::CatalogDeregistration {
        node: hb.node.clone(),
        ..Default::default()
    });
    s.apply_as_leader(cmd).await?;
    tracing::info!(node = %hb.node, "member left; its node is deregistered");
    Ok(())
}

/// Client members failed for [`REAP_AFTER`], to deregister. Updates `failed_since` from the
/// catalog's view (`current`, after this pass's changes): a member newly seen failed starts its
/// clock now, one passing again or gone drops it. Voters are never reaped.
pub(crate) fn reapable(
    now: Instant,
    failed_since: &mut HashMap<String, Instant>,
    servers: &[ServerHealth],
    current: &[MemberHealth],
) -> Vec<String> {
    let failed: std::collections::HashSet<&str> = current
        .iter()
        .filter(|m| m.status == status::CRITICAL)
        .map(|m| m.node.as_str())
        .collect();
    failed_since.retain(|node, _| failed.contains(node.as_str()));
    let mut reap = Vec::new();
    for node in failed {
        let since = *failed_since.entry(node.to_string()).or_insert(now);
        let voter = servers.iter().any(|s| s.name == node);
        if !voter && now.saturating_duration_since(since) >= REAP_AFTER {
            reap.push(node.to_string());
        }
    }
    reap.sort();
    reap
}

/// The write that sets a node's member check (creating the node if the catalog lacks it).
pub(crate) fn registration(c: &Change) -> Command {
    let output = if c.status == status::PASSING {
        serf_check::ALIVE
    } else {
        serf_check::FAILED
    };
    Command::Register(Box::new(CatalogRegistration {
        node: c.node.clone(),
        address: c.address.clone(),
        skip_node_update: true,
        check: Some(HealthCheck {
            node: c.node.clone(),
            check_id: serf_check::ID.into(),
            name: serf_check::NAME.into(),
            status: c.status.into(),
            output: output.into(),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

/// Leader-only: every [`RECONCILE_EVERY`], writes the member checks that differ from what the
/// leader knows. Ends when the server is dropped (or the task is aborted on stepping down).
pub(crate) async fn reconcile(server: std::sync::Weak<crate::Server>) {
    let leading_since = Instant::now();
    loop {
        let Some(s) = server.upgrade() else { return };
        if let Err(e) = reconcile_once(&s, leading_since).await {
            tracing::debug!(error = %e, "member health not reconciled; retrying");
        }
        drop(s);
        tokio::time::sleep(RECONCILE_EVERY).await;
    }
}

async fn reconcile_once(
    s: &crate::Server,
    leading_since: Instant,
) -> Result<(), crate::ServerError> {
    let _pass = s.liveness.pass.lock().await;
    let resp = s
        .query(
            trellis_state::Query::Members,
            trellis_rpc::QueryOptions {
                stale: true,
                ..Default::default()
            },
        )
        .await?;
    let current: Vec<MemberHealth> = match resp.output {
        trellis_state::QueryOutput::Found(a) => a
            .members()
            .map_err(|e| crate::ServerError::Raft(format!("members answer: {e}")))?
            .clone(),
        trellis_state::QueryOutput::NotFound(_) => Vec::new(),
    };
    let servers = s.voter_health();
    let (changes, forget) = plan(
        Instant::now(),
        leading_since,
        &servers,
        &s.liveness.snapshot(),
        &current,
    );
    s.liveness.forget(&forget);
    // The catalog's view once these changes are written, for the reaping clock.
    let mut after = current;
    for c in &changes {
        match after.iter_mut().find(|m| m.node == c.node) {
            Some(m) => m.status = c.status.to_string(),
            None => after.push(MemberHealth {
                node: c.node.clone(),
                address: c.address.clone(),
                status: c.status.to_string(),
            }),
        }
    }
    let reap = reapable(
        Instant::now(),
        &mut s.liveness.failed_since.lock(),
        &servers,
        &after,
    );
    if changes.is_empty() && reap.is_empty() {
        return Ok(());
    }
    for c in &changes {
        if c.status == status::PASSING {
            tracing::info!(node = %c.node, "member alive");
        } else {
            tracing::warn!(node = %c.node, "member failed: no heartbeat or Raft contact");
        }
    }
    for node in &reap {
        tracing::warn!(%node, after = ?REAP_AFTER, "member failed for too long; its node is deregistered");
    }
    s.liveness.forget(&reap);
    let mut commands: Vec<Command> = changes.iter().map(registration).collect();
    commands.extend(reap.into_iter().map(|node| {
        Command::Deregister(trellis_api::CatalogDeregistration {
            node,
            ..Default::default()
        })
    }));
    let cmd = if commands.len() == 1 {
        commands.remove(0)
    } else {
        Command::Batch { commands }
    };
    s.apply_as_leader(cmd).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(node: &str, status: &str) -> MemberHealth {
        MemberHealth {
            node: node.into(),
            address: "10.0.0.1".into(),
            status: status.into(),
        }
    }

    fn seen(at: Instant, every_ms: u64) -> Seen {
        Seen {
            at,
            every: Duration::from_millis(every_ms),
            address: "10.0.0.9".into(),
        }
    }

    #[test]
    fn heartbeats_mark_nodes_alive_then_failed_after_three_missed() {
        let t0 = Instant::now();
        let seen = HashMap::from([("c1".to_string(), seen(t0, 1000))]);
        // Heard, not in the catalog: registered passing with its address.
        let (changes, _) = plan(t0, t0, &[], &seen, &[]);
        assert_eq!(
            changes,
            vec![Change {
                node: "c1".into(),
                address: "10.0.0.9".into(),
                status: status::PASSING
            }]
        );
        // Passing and recent: nothing to write, even after two missed heartbeats.
        let current = [member("c1", status::PASSING)];
        let later = t0 + Duration::from_millis(2900);
        assert!(plan(later, t0, &[], &seen, &current).0.is_empty());
        // Three missed: critical.
        let dead = t0 + Duration::from_millis(3100);
        let (changes, _) = plan(dead, t0, &[], &seen, &current);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].status, status::CRITICAL);
        // Back: passing again.
        let back = HashMap::from([("c1".to_string(), seen_at(dead))]);
        let current = [member("c1", status::CRITICAL)];
        let (changes, _) = plan(dead, t0, &[], &back, &current);
        assert_eq!(changes[0].status, status::PASSING);
    }

    fn seen_at(at: Instant) -> Seen {
        seen(at, 1000)
    }

    #[test]
    fn unheard_members_get_grace_from_the_start_of_leadership() {
        let t0 = Instant::now();
        let current = [member("old", status::PASSING)];
        let within = t0 + MAX_HEARTBEAT * MISSED_BEFORE_FAILED;
        assert!(plan(within, t0, &[], &HashMap::new(), &current)
            .0
            .is_empty());
        // A member already failed stays failed through the grace (a new leader does not
        // revive it).
        let failed = [member("dead", status::CRITICAL)];
        assert!(plan(t0, t0, &[], &HashMap::new(), &failed).0.is_empty());
        assert!(plan(within, t0, &[], &HashMap::new(), &failed).0.is_empty());
        let past = within + Duration::from_millis(1);
        let (changes, _) = plan(past, t0, &[], &HashMap::new(), &current);
        assert_eq!(changes[0].node, "old");
        assert_eq!(changes[0].status, status::CRITICAL);
        assert_eq!(changes[0].address, "10.0.0.1");
    }

    #[test]
    fn servers_follow_raft_contact_and_override_heartbeats() {
        let t0 = Instant::now();
        let servers = [
            ServerHealth {
                name: "s1".into(),
                address: "10.0.0.2".into(),
                reachable: true,
            },
            ServerHealth {
                name: "s2".into(),
                address: "10.0.0.3".into(),
                reachable: false,
            },
        ];
        // A stale heartbeat record under a server's name does not fail a reachable server.
        let seen = HashMap::from([("s1".to_string(), seen(t0, 100))]);
        let later = t0 + Duration::from_secs(5);
        let current = [member("s1", status::PASSING), member("s2", status::PASSING)];
        let (changes, _) = plan(later, t0, &servers, &seen, &current);
        assert_eq!(
            changes,
            vec![Change {
                node: "s2".into(),
                address: "10.0.0.3".into(),
                status: status::CRITICAL
            }]
        );
    }

    #[test]
    fn a_failed_node_gone_from_the_catalog_is_not_registered_again_and_is_forgotten() {
        let t0 = Instant::now();
        let seen = HashMap::from([("gone".to_string(), seen_at(t0))]);
        let (changes, forget) = plan(t0 + Duration::from_secs(4), t0, &[], &seen, &[]);
        assert!(changes.is_empty());
        assert_eq!(forget, vec!["gone".to_string()]);
    }

    #[test]
    fn late_heartbeats_of_an_agent_that_left_are_ignored_but_its_next_start_counts() {
        let l = Liveness::default();
        let t0 = Instant::now();
        let hb = Heartbeat {
            node: "c1".into(),
            address: "10.0.0.1".into(),
            interval_ms: 1000,
            forwarded: false,
            leaving: false,
            incarnation: 7,
        };
        l.record(&hb, t0);
        l.record_leave(&hb, t0);
        l.record(&hb, t0 + Duration::from_millis(5));
        assert!(l.snapshot().is_empty());
        let next = Heartbeat {
            incarnation: 8,
            ..hb.clone()
        };
        l.record(&next, t0 + Duration::from_secs(1));
        assert!(l.snapshot().contains_key("c1"));
        // Long after, the same incarnation counts again (the memory is bounded).
        l.record_leave(&hb, t0);
        l.record(&hb, t0 + LEFT_REMEMBERED);
        assert!(l.snapshot().contains_key("c1"));
    }

    #[test]
    fn client_members_failed_for_the_reap_time_are_reaped_voters_never() {
        let t0 = Instant::now();
        let mut since = HashMap::new();
        let servers = [ServerHealth {
            name: "s2".into(),
            address: "10.0.0.2".into(),
            reachable: false,
        }];
        let current = [
            member("c1", status::CRITICAL),
            member("c2", status::PASSING),
            member("s2", status::CRITICAL),
        ];
        assert!(reapable(t0, &mut since, &servers, &current).is_empty());
        let later = t0 + REAP_AFTER;
        assert_eq!(reapable(later, &mut since, &servers, &current), ["c1"]);
        // Passing again in between: the clock starts over when it fails next.
        let back = [member("c1", status::PASSING)];
        assert!(reapable(later, &mut since, &servers, &back).is_empty());
        assert!(reapable(later, &mut since, &servers, &current).is_empty());
        assert!(since.contains_key("c1") && !since.contains_key("c2"));
    }

    #[test]
    fn heartbeats_are_validated() {
        let ok = Heartbeat {
            node: "n".into(),
            address: "10.0.0.1".into(),
            interval_ms: 2000,
            forwarded: false,
            leaving: false,
            incarnation: 1,
        };
        assert!(ok.validate().is_ok());
        for bad in [
            Heartbeat {
                node: String::new(),
                ..ok.clone()
            },
            Heartbeat {
                address: String::new(),
                ..ok.clone()
            },
            Heartbeat {
                interval_ms: 10,
                ..ok.clone()
            },
            Heartbeat {
                interval_ms: 60_000,
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_registration_writes_the_serf_check_without_touching_the_node_row() {
        let Command::Register(reg) = registration(&Change {
            node: "n".into(),
            address: "10.0.0.1".into(),
            status: status::CRITICAL,
        }) else {
            panic!("a registration");
        };
        assert!(reg.skip_node_update);
        let check = reg.check.unwrap();
        assert_eq!(check.check_id, "serfHealth");
        assert_eq!(check.name, "Serf Health Status");
        assert_eq!(check.output, serf_check::FAILED);
    }
}
