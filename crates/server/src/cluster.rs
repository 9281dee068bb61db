//! Forming and changing the server cluster.
//!
//! A server that is not yet part of a cluster greets the servers it was told to join
//! (`retry_join`) every [`FORM_INTERVAL`]. If one of them already belongs to a cluster, it
//! asks that cluster's leader to add it: the leader adds it as a learner, waits until it has
//! caught up (by log or snapshot), then makes it a voter. Otherwise, once `bootstrap_expect`
//! servers (itself included) answer and none belongs to a cluster, the one with the lowest
//! node ID initialises the cluster with all of them; the others wait to hear from its leader.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use trellis_raft::ServerNode;
use trellis_rpc::{Error, Hello, JoinRequest, RaftConfiguration, RaftServer, RemoveRequest};

use crate::Server;

/// How long the leader waits for a joining server to catch up before giving up on this
/// attempt (the server asks again).
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a join may take: as long as the leader may take to let the server catch up (a
/// shorter wait would abandon the promotion).
const JOIN_LIMIT: Duration = CATCH_UP_TIMEOUT.saturating_add(Duration::from_secs(10));

/// How often a server not yet in a cluster greets the others.
pub const FORM_INTERVAL: Duration = Duration::from_secs(1);

/// How long a member may go without hearing from a leader before it asks the others whether
/// it still belongs to the cluster (a server removed while it was down hears nothing).
pub const REJOIN_AFTER: Duration = Duration::from_secs(10);

impl Server {
    /// This server's greeting.
    pub fn hello(&self) -> Hello {
        let initialized = {
            let m = self.metrics.borrow();
            let any_member = m.membership_config.membership().nodes().next().is_some();
            any_member
        };
        Hello {
            node_id: self.node_id,
            node: self.me(),
            datacenter: self.config.datacenter.clone(),
            initialized,
        }
    }

    /// The Raft configuration as the leader sees it (asked of the leader when this server is
    /// not it; only the leader knows how far each server's log has got), else this server's.
    pub async fn leader_raft_configuration(&self) -> RaftConfiguration {
        if !self.is_leader() {
            if let Some(leader) = self.leader() {
                let limit = Duration::from_secs(2);
                if let Ok(config) = self
                    .http
                    .raft_configuration(&leader.addr, true, limit)
                    .await
                {
                    return config;
                }
            }
        }
        self.raft_configuration()
    }

    /// The current Raft configuration as this server knows it: voters and learners, who
    /// leads, and (on the leader) how far each server's log has got.
    pub fn raft_configuration(&self) -> RaftConfiguration {
        let m = self.metrics.borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let matched = m.replication.clone().unwrap_or_default();
        let servers = membership
            .nodes()
            .map(|(id, node)| RaftServer {
                id: id.to_string(),
                node: node.name.clone(),
                address: node.addr.clone(),
                leader: m.current_leader == Some(*id),
                protocol_version: "3".into(),
                voter: voters.contains(id),
                last_index: if *id == self.node_id {
                    m.last_log_index.unwrap_or(0)
                } else {
                    matched
                        .get(id)
                        .and_then(|l| l.as_ref())
                        .map_or(0, |l| l.index)
                },
            })
            .collect();
        RaftConfiguration {
            servers,
            index: m.membership_config.log_id().as_ref().map_or(0, |l| l.index),
        }
    }

    /// Adds a server to the cluster: as a learner until it has caught up, then as a voter.
    /// Forwarded to the leader. A member at the same address under another node ID (a server
    /// whose data directory was wiped) is replaced.
    pub async fn join(&self, req: JoinRequest) -> Result<(), Error> {
        if req.datacenter != self.config.datacenter {
            return Err(Error::BadRequest(format!(
                "server {} is in datacenter {:?}, not {:?}",
                req.node, req.datacenter, self.config.datacenter
            )));
        }
        if !self.is_leader() {
            let leader = self.leader().ok_or(Error::NoLeader)?;
            return Box::pin(self.http.join(&leader.addr, &req, JOIN_LIMIT)).await;
        }
        let _changing = self.membership_lock.lock().await;
        let m = self.metrics.borrow().clone();
        let membership = m.membership_config.membership();
        let mut voters: BTreeSet<u64> = membership.voter_ids().collect();
        let known = membership.get_node(&req.node_id).cloned();
        if voters.contains(&req.node_id) && known.as_ref() == Some(&req.node) {
            return Ok(());
        }
        if voters.contains(&req.node_id) {
            // A voter back at another address (or under another name): the same server, as
            // its node ID (kept in its data directory) says; its entry is updated in place.
            tracing::info!(node = %req.node, node_id = req.node_id, was = ?known, "updating a voter's address");
            self.raft
                .change_membership(
                    openraft::ChangeMembers::SetNodes(BTreeMap::from([(
                        req.node_id,
                        req.node.clone(),
                    )])),
                    true,
                )
                .await
                .map_err(raft_error)?;
            return Ok(());
        }
        let stale: Vec<u64> = membership
            .nodes()
            .filter(|(id, n)| **id != req.node_id && n.addr == req.node.addr)
            .map(|(id, _)| *id)
            .collect();
        tracing::info!(node = %req.node, node_id = req.node_id, "adding a server as a learner");
        // Waits until the learner has caught up; a server that died meanwhile must not hold the
        // membership lock for ever (it stays a learner, and its next join attempt resumes).
        tokio::time::timeout(
            CATCH_UP_TIMEOUT,
            self.raft.add_learner(req.node_id, req.node.clone(), true),
        )
        .await
        .map_err(|_| {
            Error::Internal(format!(
                "{} did not catch up within {CATCH_UP_TIMEOUT:?}; it stays a non-voter until it asks again",
                req.node
            ))
        })?
        .map_err(raft_error)?;
        for id in &stale {
            voters.remove(id);
        }
        voters.insert(req.node_id);
        tracing::info!(node = %req.node, node_id = req.node_id, replaced = ?stale, "promoting the server to voter");
        self.raft
            .change_membership(voters, false)
            .await
            .map_err(raft_error)?;
        Ok(())
    }

    /// Removes a server (voter or learner) from the cluster, by ID or address. Forwarded to
    /// the leader.
    pub async fn remove_peer(&self, req: RemoveRequest) -> Result<(), Error> {
        if req.id.is_none() == req.address.is_none() {
            return Err(Error::BadRequest(
                "give exactly one of id or address".into(),
            ));
        }
        if !self.is_leader() {
            let leader = self.leader().ok_or(Error::NoLeader)?;
            return Box::pin(self.http.remove_peer(&leader.addr, &req)).await;
        }
        let _changing = self.membership_lock.lock().await;
        let m = self.metrics.borrow().clone();
        let membership = m.membership_config.membership();
        let target = membership
            .nodes()
            .find(|(id, n)| {
                req.id.as_deref() == Some(id.to_string().as_str())
                    || req.address.as_deref() == Some(n.addr.as_str())
            })
            .map(|(id, _)| *id);
        let Some(target) = target else {
            let what = req.id.or(req.address).unwrap_or_default();
            return Err(Error::BadRequest(format!(
                "{what} is not in the Raft configuration"
            )));
        };
        let mut voters: BTreeSet<u64> = membership.voter_ids().collect();
        if voters.contains(&target) {
            if voters.len() == 1 {
                return Err(Error::BadRequest(
                    "cannot remove the only voter of the cluster".into(),
                ));
            }
            voters.remove(&target);
            self.raft
                .change_membership(voters, false)
                .await
                .map_err(raft_error)?;
        } else {
            let learners = BTreeSet::from([target]);
            self.raft
                .change_membership(openraft::ChangeMembers::RemoveNodes(learners), false)
                .await
                .map_err(raft_error)?;
        }
        tracing::info!(node_id = target, "removed a server from the cluster");
        Ok(())
    }
}

/// What a server not yet in a cluster should do, given the greetings it got.
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    /// Ask this server (a member of a cluster) to add us.
    Join(String),
    /// Initialise the cluster with these servers.
    Bootstrap(BTreeMap<u64, ServerNode>),
    /// Not enough servers yet, or another server is to initialise: greet again later.
    Wait,
}

/// The pure decision of [`form`]: join a cluster one of the greeted servers belongs to, else
/// bootstrap when `expect` servers of our datacenter are known and we have the lowest ID.
pub(crate) fn next_step(me: &Hello, expect: u32, greetings: &[Hello]) -> Step {
    let peers: Vec<&Hello> = greetings
        .iter()
        .filter(|h| h.datacenter == me.datacenter && h.node_id != me.node_id)
        .collect();
    if let Some(member) = peers.iter().find(|h| h.initialized) {
        return Step::Join(member.node.addr.clone());
    }
    let mut all: BTreeMap<u64, ServerNode> =
        peers.iter().map(|h| (h.node_id, h.node.clone())).collect();
    all.insert(me.node_id, me.node.clone());
    if all.len() < expect.max(1) as usize {
        return Step::Wait;
    }
    if all.keys().next() == Some(&me.node_id) {
        Step::Bootstrap(all)
    } else {
        Step::Wait
    }
}

/// Runs until this server belongs to a cluster: greets `retry_join` every [`FORM_INTERVAL`]
/// and joins or bootstraps as [`next_step`] says.
pub(crate) async fn form(server: Weak<Server>) {
    let mut logged_wait = false;
    loop {
        let Some(s) = server.upgrade() else { return };
        let me = s.hello();
        if me.initialized {
            return;
        }
        let greetings = greet_all(&s).await;
        match next_step(&me, s.config.bootstrap_expect, &greetings) {
            Step::Join(addr) => match join_via(&s, &addr).await {
                Ok(_) => {
                    tracing::info!(via = %addr, "joined the cluster");
                    return;
                }
                Err(e) => {
                    tracing::warn!(via = %addr, error = %e, "joining the cluster failed; retrying")
                }
            },
            Step::Bootstrap(members) => {
                let names: Vec<String> = members.values().map(|n| n.to_string()).collect();
                match s.raft.initialize(members).await {
                    Ok(()) => {
                        tracing::info!(servers = ?names, "bootstrapped the cluster");
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "bootstrapping failed; retrying"),
                }
            }
            Step::Wait => {
                if !logged_wait {
                    tracing::info!(
                        expect = s.config.bootstrap_expect,
                        seen = greetings.len() + 1,
                        join = ?s.config.retry_join,
                        "waiting for servers to form a cluster"
                    );
                    logged_wait = true;
                }
            }
        }
        drop(s);
        tokio::time::sleep(FORM_INTERVAL).await;
    }
}

/// What a member that has not heard from a leader for [`REJOIN_AFTER`] should do, given the
/// configurations its `retry_join` servers report (each the leader's view): ask to join again
/// through one whose cluster has a leader but lacks this server as a voter at `my_addr` (its
/// address changed while it was down, say), else nothing.
pub(crate) fn rejoin_via(
    my_id: u64,
    my_addr: &str,
    reports: &[(String, RaftConfiguration)],
) -> Option<String> {
    let me = my_id.to_string();
    reports
        .iter()
        .find(|(_, c)| c.servers.iter().any(|s| s.leader))
        .filter(|(_, c)| {
            !c.servers
                .iter()
                .any(|s| s.id == me && s.voter && s.address == my_addr)
        })
        .map(|(addr, _)| addr.clone())
}

/// Runs for the life of a server with `retry_join` servers, once it belongs to a cluster:
/// when it has heard nothing from a leader for [`REJOIN_AFTER`] (removed while it was down,
/// say), or has stayed a non-voter that long (a join cut short), asks its `retry_join`
/// servers for the cluster's configuration and, if the cluster has a leader and this server
/// is not one of its voters, asks to be added again (as a learner until caught up). Consul's
/// leader re-adds a returning server the same way.
pub(crate) async fn stay_member(server: Weak<Server>) {
    let mut learner_checks = 0u32;
    loop {
        tokio::time::sleep(REJOIN_AFTER / 2).await;
        let Some(s) = server.upgrade() else { return };
        if s.config.retry_join.is_empty() {
            return;
        }
        if !s.hello().initialized || s.is_leader() {
            continue;
        }
        let voter = s
            .metrics
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == s.node_id);
        learner_checks = if voter { 0 } else { learner_checks + 1 };
        let silent = s.last_contact.lock().elapsed() >= REJOIN_AFTER;
        if !silent && learner_checks < 2 {
            continue;
        }
        let own = s.config.rpc_addr.to_string();
        let mut reports = Vec::new();
        for addr in s.config.retry_join.iter().filter(|a| **a != own) {
            let limit = Duration::from_secs(2);
            if let Ok(c) = s.http.raft_configuration(addr, false, limit).await {
                reports.push((addr.clone(), c));
            }
        }
        let Some(via) = rejoin_via(s.node_id, &own, &reports) else {
            continue;
        };
        tracing::warn!(%via, "not a voter of the cluster (removed while away?); asking to join again");
        match join_via(&s, &via).await {
            Ok(_) => tracing::info!(%via, "joined the cluster again"),
            Err(e) => tracing::warn!(%via, error = %e, "joining again failed; retrying"),
        }
    }
}

/// Asks the cluster, through the server at `addr`, to add this server; waits as long as the
/// leader may take to let it catch up (a shorter wait would abandon the promotion).
async fn join_via(s: &Server, addr: &str) -> Result<bool, Error> {
    let me = s.hello();
    let req = JoinRequest {
        node_id: me.node_id,
        node: me.node,
        datacenter: me.datacenter,
    };
    s.http.join(addr, &req, JOIN_LIMIT).await?;
    Ok(true)
}

/// A Raft failure as the caller of a membership change sees it.
fn raft_error(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("raft: {e}"))
}

async fn greet_all(s: &Arc<Server>) -> Vec<Hello> {
    let own = s.config.rpc_addr.to_string();
    let calls = s
        .config
        .retry_join
        .iter()
        .filter(|a| **a != own)
        .map(|addr| greet(&s.http, addr));
    futures::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn greet(http: &trellis_rpc::Client, addr: &str) -> Option<Hello> {
    http.hello(addr, Duration::from_secs(1)).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(id: u64, initialized: bool) -> Hello {
        Hello {
            node_id: id,
            node: ServerNode {
                addr: format!("127.0.0.{id}:8300"),
                name: format!("s{id}"),
            },
            datacenter: "dc1".into(),
            initialized,
        }
    }

    #[test]
    fn the_lowest_id_bootstraps_once_enough_servers_answer() {
        let me = hello(2, false);
        assert_eq!(next_step(&me, 3, &[hello(5, false)]), Step::Wait);
        match next_step(&me, 3, &[hello(5, false), hello(9, false)]) {
            Step::Bootstrap(m) => assert_eq!(m.keys().copied().collect::<Vec<_>>(), [2, 5, 9]),
            other => panic!("{other:?}"),
        }
        // Not the lowest: another server initialises.
        assert_eq!(
            next_step(&me, 3, &[hello(1, false), hello(9, false)]),
            Step::Wait
        );
        // One expected: alone.
        assert!(matches!(next_step(&me, 1, &[]), Step::Bootstrap(_)));
    }

    #[test]
    fn a_server_of_an_existing_cluster_is_joined_not_bootstrapped_around() {
        let me = hello(1, false);
        assert_eq!(
            next_step(&me, 3, &[hello(4, false), hello(7, true)]),
            Step::Join("127.0.0.7:8300".into())
        );
        assert_eq!(
            next_step(&me, 1, &[hello(7, true)]),
            Step::Join("127.0.0.7:8300".into())
        );
    }

    fn config(servers: &[(u64, bool, bool)]) -> RaftConfiguration {
        RaftConfiguration {
            servers: servers
                .iter()
                .map(|(id, voter, leader)| RaftServer {
                    id: id.to_string(),
                    node: format!("s{id}"),
                    address: format!("127.0.0.{id}:8300"),
                    leader: *leader,
                    protocol_version: "3".into(),
                    voter: *voter,
                    last_index: 0,
                })
                .collect(),
            index: 1,
        }
    }

    #[test]
    fn a_silent_member_rejoins_only_a_led_cluster_that_lacks_it() {
        let a = "127.0.0.2:8300".to_string();
        let b = "127.0.0.3:8300".to_string();
        // Removed: the cluster has a leader and no voter 9.
        let mine = "127.0.0.9:8300";
        let removed = config(&[(2, true, true), (3, true, false)]);
        assert_eq!(
            rejoin_via(9, mine, &[(a.clone(), removed.clone())]),
            Some(a.clone())
        );
        // Still a voter (an election is under way, say): nothing to do.
        let member = config(&[(2, true, true), (9, true, false)]);
        assert_eq!(rejoin_via(9, mine, &[(a.clone(), member.clone())]), None);
        // A voter listed at another address (this server moved): asks again.
        assert_eq!(
            rejoin_via(9, "127.0.0.10:8300", &[(a.clone(), member)]),
            Some(a.clone())
        );
        // A learner (a join under way) asks again; the leader resumes it.
        let learner = config(&[(2, true, true), (9, false, false)]);
        assert_eq!(
            rejoin_via(9, mine, &[(a.clone(), learner)]),
            Some(a.clone())
        );
        // No leader anywhere: wait; the first report with a leader decides.
        let leaderless = config(&[(2, true, false), (3, true, false)]);
        assert_eq!(
            rejoin_via(9, mine, &[(a.clone(), leaderless.clone())]),
            None
        );
        assert_eq!(
            rejoin_via(9, mine, &[(a, leaderless), (b.clone(), removed)]),
            Some(b)
        );
        assert_eq!(rejoin_via(9, mine, &[]), None);
    }

    #[test]
    fn other_datacenters_and_our_own_echo_do_not_count() {
        let me = hello(1, false);
        let mut other = hello(3, true);
        other.datacenter = "dc2".into();
        assert_eq!(next_step(&me, 2, &[other, hello(1, false)]), Step::Wait);
    }
}
