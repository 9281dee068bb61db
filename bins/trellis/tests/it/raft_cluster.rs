//! Three servers on 127.0.0.x as one Raft group: forming, forwarding, failover with no
//! acknowledged write lost, restarts from disk, membership changes.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{free_port, Agent};

/// `n` servers, the i-th on 127.0.0.(2+i), each told to join the first `expect` of them.
pub(crate) struct Cluster {
    pub(crate) servers: Vec<Agent>,
    pub(crate) addrs: Vec<String>,
}

impl Cluster {
    fn start(dir: &Path, n: usize, expect: u32) -> Cluster {
        Cluster::start_with(dir, n, expect, &[])
    }

    pub(crate) fn start_with(dir: &Path, n: usize, expect: u32, extra: &[&str]) -> Cluster {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let addrs: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, s))| format!("127.0.0.{}:{s}", i + 2))
            .collect();
        let join = addrs[..expect as usize].to_vec();
        let servers = (0..n)
            .map(|i| {
                Agent::cluster_server(
                    &format!("s{}", i + 1),
                    &dir.join(format!("s{}", i + 1)),
                    &format!("127.0.0.{}", i + 2),
                    ports[i],
                    expect,
                    &join,
                    extra,
                )
            })
            .collect();
        Cluster { servers, addrs }
    }

    /// Waits until every running server names the same leader and sees `voters` voters;
    /// returns the leader's index.
    pub(crate) async fn agreed_leader(&self, voters: usize) -> usize {
        let start = Instant::now();
        loop {
            let mut leaders = Vec::new();
            for s in self.servers.iter().filter(|s| s.running()) {
                let leader = get_json(s, "/v1/status/leader").await;
                let peers = get_json(s, "/v1/status/peers").await;
                let count = peers.as_array().map_or(0, |a| a.len());
                leaders.push((leader.as_str().unwrap_or("").to_string(), count));
            }
            let first = &leaders[0].0;
            if !first.is_empty() && leaders.iter().all(|(l, c)| l == first && *c == voters) {
                return self.addrs.iter().position(|a| a == first).unwrap();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no agreed leader with {voters} voters: {leaders:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) fn logs(&self) -> String {
        self.servers
            .iter()
            .enumerate()
            .map(|(i, s)| format!("--- s{} ---\n{}", i + 1, tail(&s.log(), 40)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn get_json(a: &Agent, path: &str) -> Value {
    match http().get(a.url(path)).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// Writes a service-defaults entry named `name` through `a`; true once acknowledged.
pub(crate) async fn write(a: &Agent, name: &str) -> bool {
    write_to(&a.url("/v1/config"), name).await
}

/// Writes a service-defaults entry named `name` with a PUT to `url`; true once acknowledged.
pub(crate) async fn write_to(url: &str, name: &str) -> bool {
    let body = json!({"Kind": "service-defaults", "Name": name, "Protocol": "tcp"});
    match http().put(url).body(body.to_string()).send().await {
        Ok(r) => r.status().as_u16() == 200,
        Err(_) => false,
    }
}

/// The service-defaults names `a` holds, from its own copy (`?stale`).
pub(crate) async fn names_on(a: &Agent) -> Vec<String> {
    let v = get_json(a, "/v1/config/service-defaults?stale").await;
    let mut names: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["Name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// Waits until `a`'s own copy holds every name in `want`.
pub(crate) async fn wait_holds(a: &Agent, want: &[String], what: &str) {
    let start = Instant::now();
    loop {
        let have = names_on(a).await;
        let missing: Vec<&String> = want.iter().filter(|n| !have.contains(n)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what}: missing {} of {}: {missing:?}\n{}",
            missing.len(),
            want.len(),
            tail(&a.log(), 40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn three_servers_form_one_cluster_forward_writes_restart_and_change_membership() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path(), 3, 3);
    for s in &mut c.servers {
        s.ready().await;
    }
    let leader = c.agreed_leader(3).await;
    let follower = (leader + 1) % 3;

    // A write sent to a follower is forwarded and lands everywhere.
    assert!(write(&c.servers[follower], "via-follower").await);
    let want = vec!["via-follower".to_string()];
    for s in &c.servers {
        wait_holds(s, &want, "the follower's write").await;
    }

    // Reads on a follower: `?stale` from its own copy with the time since it heard from the
    // leader; default and `?consistent` reads answered through the leader.
    for (query, stale) in [("?stale", true), ("", false), ("?consistent", false)] {
        let r = http()
            .get(c.servers[follower].url(&format!("/v1/config/service-defaults{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{query}");
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        assert_eq!(header("x-consul-knownleader"), "true", "{query}");
        let last_contact: u64 = header("x-consul-lastcontact").parse().unwrap();
        if stale {
            assert!(
                last_contact < 2000,
                "{query}: last contact {last_contact} ms"
            );
        } else {
            assert_eq!(last_contact, 0, "{query}: answered by the leader");
        }
        let body: Value = r.json().await.unwrap();
        assert!(body.to_string().contains("via-follower"), "{query}: {body}");
    }

    // The operator view, from a follower: three voters, one leader.
    let config = get_json(&c.servers[follower], "/v1/operator/raft/configuration").await;
    let servers = config["Servers"].as_array().unwrap();
    assert_eq!(servers.len(), 3, "{config}");
    assert!(servers.iter().all(|s| s["Voter"] == true));
    assert_eq!(servers.iter().filter(|s| s["Leader"] == true).count(), 1);
    assert!(
        servers.iter().all(|s| s["LastIndex"].as_u64() > Some(0)),
        "the leader's view of every log, even asked of a follower: {config}"
    );
    assert_eq!(
        servers.iter().find(|s| s["Leader"] == true).unwrap()["Address"],
        json!(c.addrs[leader])
    );

    // All three restarted at once keep their state.
    for s in &mut c.servers {
        s.kill();
    }
    for s in &mut c.servers {
        s.restart();
    }
    for s in &mut c.servers {
        s.ready().await;
    }
    c.agreed_leader(3).await;
    for s in &c.servers {
        wait_holds(s, &want, "after restarting every server").await;
    }

    // A fourth server joins through one member, catches up and becomes a voter.
    let (h4, p4) = (free_port(), free_port());
    let addr4 = format!("127.0.0.5:{p4}");
    let mut s4 = Agent::cluster_server(
        "s4",
        &dir.path().join("s4"),
        "127.0.0.5",
        (h4, p4),
        3,
        &[c.addrs[0].clone()],
        &[],
    );
    s4.ready().await;
    wait_holds(&s4, &want, "the joined server").await;
    c.servers.push(s4);
    c.addrs.push(addr4.clone());
    c.agreed_leader(4).await;

    // It dies: the members list shows it failed (the leader no longer reaches it), the
    // others alive; then the operator removes it with the CLI.
    c.servers[3].kill();
    let start = Instant::now();
    loop {
        let members = get_json(&c.servers[0], "/v1/agent/members").await;
        let status_of = |name: &str| {
            members
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["Name"] == name)
                .map(|m| m["Status"].clone())
        };
        if status_of("s4") == Some(json!(4)) {
            for name in ["s1", "s2", "s3"] {
                assert_eq!(status_of(name), Some(json!(1)), "{members}");
            }
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "s4 never shown failed: {members}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let listed = std::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args([
            "members",
            "-http-addr",
            &format!("127.0.0.1:{}", c.servers[2].http),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listed.stdout);
    let s4_line = text.lines().find(|l| l.starts_with("s4 ")).unwrap_or("");
    assert!(
        s4_line.contains("failed") && s4_line.contains("server"),
        "{text}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args([
            "operator",
            "raft",
            "remove-peer",
            "-address",
            &addr4,
            "-http-addr",
            &format!("127.0.0.1:{}", c.servers[0].http),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "remove-peer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.agreed_leader(3).await;
    let listed = std::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args([
            "operator",
            "raft",
            "list-peers",
            "-http-addr",
            &format!("127.0.0.1:{}", c.servers[1].http),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{text}");
    assert_eq!(
        text.lines().count(),
        4,
        "a header and three servers:\n{text}"
    );
    assert!(!text.contains(&addr4), "{text}");
    assert_eq!(text.matches("leader").count(), 1, "{text}");

    // Bad removals are refused with a message and change nothing.
    let r = http()
        .delete(c.servers[0].url("/v1/operator/raft/peer"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = http()
        .delete(c.servers[0].url("/v1/operator/raft/peer?address=127.0.0.9:1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("not in the Raft configuration"));
    c.agreed_leader(3).await;

    // The removed server comes back: finding that the cluster's leader no longer counts it as
    // a voter, it asks to join again and catches up on what it missed.
    assert!(write(&c.servers[1], "while-s4-was-out").await);
    let mut want = want;
    want.push("while-s4-was-out".to_string());
    want.sort();
    c.servers[3].start();
    c.servers[3].ready().await;
    c.agreed_leader(4).await;
    wait_holds(&c.servers[3], &want, "the server that came back").await;
    assert!(
        c.servers[3].log().contains("asking to join again"),
        "{}",
        tail(&c.servers[3].log(), 40)
    );
    assert!(write(&c.servers[3], "after-s4-is-back").await);

    // It moves: the same data directory on another address. The leader cannot reach it where
    // it was, so it hears nothing, finds itself listed at the old address, and asks again; the
    // cluster updates its address.
    c.servers[3].kill();
    let moved = format!("127.0.0.6:{p4}");
    c.servers[3] = Agent::cluster_server(
        "s4",
        &dir.path().join("s4"),
        "127.0.0.6",
        (h4, p4),
        3,
        &[c.addrs[0].clone()],
        &[],
    );
    c.addrs[3] = moved.clone();
    c.servers[3].ready().await;
    let start = Instant::now();
    loop {
        let config = get_json(&c.servers[0], "/v1/operator/raft/configuration").await;
        let s4 = config["Servers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["Node"] == "s4")
            .cloned()
            .unwrap_or(Value::Null);
        if s4["Address"] == moved.as_str() && s4["Voter"] == true {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "s4 never listed at {moved}: {config}\n{}",
            tail(&c.servers[3].log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.agreed_leader(4).await;
    assert!(write(&c.servers[0], "after-s4-moved").await);
    wait_holds(
        &c.servers[3],
        &["after-s4-moved".to_string()],
        "the server that moved",
    )
    .await;
}

#[tokio::test]
async fn killing_the_leader_during_writes_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    // Snapshots every 16 entries: the paused follower below must catch up from a snapshot,
    // the log it misses having been compacted away.
    let mut c = Cluster::start_with(dir.path(), 3, 3, &["--raft-snapshot-threshold", "16"]);
    for s in &mut c.servers {
        s.ready().await;
    }
    let old = c.agreed_leader(3).await;
    let roots_before = get_json(&c.servers[old], "/v1/connect/ca/roots").await;
    let root_id = roots_before["ActiveRootID"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(!root_id.is_empty(), "{roots_before}");

    let mut acked = Vec::new();
    let mut n = 0;
    let mut killed_at = None;
    let mut new_leader_after = None;
    while acked.len() < 60 {
        if acked.len() == 20 && killed_at.is_none() {
            c.servers[old].kill();
            killed_at = Some(Instant::now());
        }
        // Spread the writes over the live servers.
        let live: Vec<usize> = (0..3).filter(|i| c.servers[*i].running()).collect();
        let target = live[n % live.len()];
        let name = format!("w-{n}");
        n += 1;
        if write(&c.servers[target], &name).await {
            acked.push(name);
        }
        if let (Some(at), None) = (killed_at, new_leader_after) {
            let survivor = &c.servers[live[0]];
            let leader = get_json(survivor, "/v1/status/leader").await;
            if leader
                .as_str()
                .is_some_and(|l| !l.is_empty() && *l != c.addrs[old])
            {
                new_leader_after = Some(at.elapsed());
            }
        }
        assert!(n < 2000, "writes keep failing:\n{}", c.logs());
    }
    let took = new_leader_after.expect("a new leader was seen during the writes");
    eprintln!(
        "failover: new leader {:.0} ms after the kill; {} writes acknowledged of {n} sent",
        took.as_secs_f64() * 1000.0,
        acked.len()
    );
    assert!(took < Duration::from_secs(10), "new leader after {took:?}");

    // The new leader took over the leader-only work: same CA, and it signs.
    let new = c.agreed_leader(3).await;
    assert_ne!(new, old);
    assert!(
        c.servers[new].log().contains("leader-only work started"),
        "{}",
        c.servers[new].log()
    );
    let survivor = (0..3).find(|i| *i != old && *i != new).unwrap();
    let roots_after = get_json(&c.servers[survivor], "/v1/connect/ca/roots").await;
    assert_eq!(roots_after["ActiveRootID"], json!(root_id));
    let leaf = get_json(&c.servers[survivor], "/v1/agent/connect/ca/leaf/web").await;
    assert!(
        leaf["CertPEM"]
            .as_str()
            .is_some_and(|p| p.contains("BEGIN CERTIFICATE")),
        "{leaf}"
    );

    // Every acknowledged write is on the survivors, and on the old leader once it is back.
    for i in (0..3).filter(|i| *i != old) {
        wait_holds(&c.servers[i], &acked, "a survivor").await;
    }
    c.servers[old].restart();
    c.servers[old].ready().await;
    wait_holds(&c.servers[old], &acked, "the old leader, restarted").await;
    let rejoined = c.servers[old].log();
    let restarted_part = &rejoined[rejoined.rfind("starting Trellis agent").unwrap_or(0)..];
    if c.agreed_leader(3).await != old {
        assert!(
            !restarted_part.contains("leader-only work started"),
            "a follower runs no leader-only work:\n{restarted_part}"
        );
    }

    // A paused follower catches up once resumed.
    let leader = c.agreed_leader(3).await;
    let paused = (leader + 1) % 3;
    c.servers[paused].signal("STOP");
    let mut more = Vec::new();
    for k in 0..60 {
        let name = format!("p-{k}");
        assert!(write(&c.servers[leader], &name).await, "write {name}");
        more.push(name);
    }
    c.servers[paused].signal("CONT");
    acked.extend(more);
    for s in &c.servers {
        wait_holds(s, &acked, "after the paused follower resumed").await;
    }
    // The snapshot's rows are served as soon as they are loaded, a moment before it is made
    // durable and logged: wait for the log line rather than expect it at once.
    let start = std::time::Instant::now();
    while !c.servers[paused]
        .log()
        .contains("installed a snapshot from the leader")
    {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "the paused follower caught up from a snapshot:\n{}",
            tail(&c.servers[paused].log(), 30)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_member_whose_raft_state_is_gone_refuses_to_start_empty() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("member");
    let mut member = Agent::server("member", &data, &[]);
    member.ready().await;
    assert!(write(&member, "kept").await);
    member.kill();
    let db = data.join("raft").join("raft.redb");

    // A database that never belonged to a cluster (a server still waiting for its peers).
    let lonely_data = dir.path().join("lonely");
    let mut lonely = Agent::cluster_server(
        "lonely",
        &lonely_data,
        "127.0.0.1",
        (free_port(), free_port()),
        3,
        &[],
        &[],
    );
    let lonely_db = lonely_data.join("raft").join("raft.redb");
    let start = Instant::now();
    while !lonely_db.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{}",
            lonely.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    lonely.kill();

    let saved = std::fs::read(&db).unwrap();
    for (case, replace) in [("missing", None), ("empty", Some(&lonely_db))] {
        let _ = std::fs::remove_file(&db);
        if let Some(other) = replace {
            std::fs::copy(other, &db).unwrap();
        }
        let before = std::fs::read_dir(data.join("raft")).unwrap().count();
        member.restart();
        let start = Instant::now();
        let code = loop {
            if let Some(code) = member.exit_code() {
                break code;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{case}: the server started on a member's data directory without its state:\n{}",
                member.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_ne!(code, 0, "{case}");
        let log = member.log();
        assert!(
            log.contains("refusing to start empty") && log.contains("raft.redb"),
            "{case}: {log}"
        );
        assert_eq!(
            std::fs::read_dir(data.join("raft")).unwrap().count(),
            before,
            "{case}: nothing created"
        );
    }

    // With its file back, it starts with its state.
    std::fs::write(&db, saved).unwrap();
    member.restart();
    member.ready().await;
    assert_eq!(names_on(&member).await, ["kept"]);
}

/// The member status `a` reports for `node` (1 alive, 4 failed), if it lists it.
async fn member_status(a: &Agent, node: &str) -> Option<u64> {
    let members = get_json(a, "/v1/agent/members").await;
    members
        .as_array()?
        .iter()
        .find(|m| m["Name"] == node)
        .and_then(|m| m["Status"].as_u64())
}

/// Waits until `a` reports `node` with member status `want`.
async fn wait_member(a: &Agent, node: &str, want: u64) {
    let start = Instant::now();
    loop {
        let got = member_status(a, node).await;
        if got == Some(want) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{node} never had member status {want} (last {got:?}): {}",
            get_json(a, "/v1/agent/members").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Instances of `service` that `a` answers for `/v1/health/service/:service` (with `query`).
async fn instances(a: &Agent, service: &str, query: &str) -> usize {
    let v = get_json(a, &format!("/v1/health/service/{service}?stale{query}")).await;
    v.as_array().map_or(usize::MAX, |a| a.len())
}

/// Waits until `a` answers one passing instance of `service`.
async fn wait_passing(a: &Agent, service: &str) {
    let start = Instant::now();
    while instances(a, service, "&passing").await != 1 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{service} never passing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_client_agent_learns_the_servers_survives_the_one_it_joined_and_fails_as_a_member() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path(), 3, 3);
    for s in &mut c.servers {
        s.ready().await;
    }
    let leader = c.agreed_leader(3).await;
    // Joined through a follower only.
    let via = (leader + 1) % 3;
    let mut client = Agent::client_via(
        "client",
        &dir.path().join("client"),
        &c.addrs[via],
        &["--heartbeat-interval", "300ms"],
    );
    client.ready().await;
    let start = Instant::now();
    while !client
        .log()
        .contains("server list updated from the cluster")
    {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{}",
            client.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The server it joined through dies: reads and writes through the client go on.
    c.servers[via].kill();
    assert!(write(&client, "after-the-join-server-died").await);
    let (status, _, leader_now) = client.get("/v1/status/leader").await;
    assert_eq!(status, 200);
    assert!(
        leader_now.as_str().is_some_and(|l| !l.is_empty()),
        "{leader_now}"
    );
    for i in (0..3).filter(|i| *i != via) {
        wait_holds(
            &c.servers[i],
            &["after-the-join-server-died".to_string()],
            "the client's write",
        )
        .await;
    }

    // The dead server and the live client as members, seen from a surviving server.
    let other = (0..3).find(|i| *i != via).unwrap();
    let s = &c.servers[other];
    wait_member(s, &format!("s{}", via + 1), 4).await;
    wait_member(s, "client", 1).await;
    let (code, body) = client
        .put(
            "/v1/agent/service/register",
            json!({"Name": "web", "Port": 8080}).to_string(),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    wait_passing(s, "web").await;

    // The client dies without a word: failed within a few heartbeats, its node check is
    // critical, and its service drops out of the passing instances (but is still listed).
    client.kill();
    let killed = Instant::now();
    wait_member(s, "client", 4).await;
    let took = killed.elapsed();
    let checks = get_json(s, "/v1/health/node/client?stale").await;
    let serf = checks
        .as_array()
        .and_then(|a| a.iter().find(|c| c["CheckID"] == "serfHealth").cloned())
        .unwrap_or(Value::Null);
    assert_eq!(serf["Status"], "critical", "{checks}");
    assert_eq!(serf["Output"], "Agent not live or unreachable", "{checks}");
    assert_eq!(instances(s, "web", "&passing").await, 0);
    assert_eq!(instances(s, "web", "").await, 1);
    println!("client marked failed {took:?} after SIGKILL (heartbeat every 300ms)");

    // Back: alive again, and its service passes.
    client.start();
    client.ready().await;
    wait_member(s, "client", 1).await;
    wait_passing(s, "web").await;

    // `trellis leave` on a server is refused with what to do instead.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["leave", "-http-addr", &format!("127.0.0.1:{}", s.http)])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("remove-peer"),
        "{stderr}"
    );
    assert_eq!(member_status(s, &format!("s{}", other + 1)).await, Some(1));

    // SIGTERM: the client leaves gracefully and exits; its node (and service) is gone
    // rather than failed.
    client.signal("TERM");
    let start = Instant::now();
    while client.exit_code().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{}",
            client.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(client.exit_code(), Some(0), "{}", client.log());
    assert!(
        client.log().contains("left the datacenter"),
        "{}",
        client.log()
    );
    assert_eq!(member_status(s, "client").await, None);
    assert_eq!(instances(s, "web", "").await, 0);
    // And it stays gone (no late heartbeat or reconcile brings it back).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(member_status(s, "client").await, None);
    assert_eq!(
        get_json(s, "/v1/catalog/node/client?stale").await,
        Value::Null
    );
}

/// Writes `from..to` (`h-<n>`), each with a PUT to `targets[n % len]` (`/v1/config` URLs),
/// SIGKILLing server `victim` before write `kill_at`; returns the names acknowledged and those
/// that failed.
async fn writes_across_a_kill(
    c: &mut Cluster,
    targets: &[String],
    victim: usize,
    (from, to, kill_at): (usize, usize, usize),
) -> (Vec<String>, Vec<String>) {
    let (mut acked, mut failed) = (Vec::new(), Vec::new());
    for n in from..to {
        if n == kill_at {
            c.servers[victim].kill();
        }
        let name = format!("h-{n}");
        if write_to(&targets[n % targets.len()], &name).await {
            acked.push(name);
        } else {
            failed.push(name);
        }
    }
    (acked, failed)
}

/// 300 writes sent alternately to the two followers, the leader SIGKILLed after the 150th:
/// the followers hold each write through the election (Consul's `rpc_hold_timeout`), so every
/// one is acknowledged and every one is on the survivors. Then the old leader comes back, and
/// 300 more through a client agent, whose servers' leader is killed after the 150th: the same.
#[tokio::test]
async fn writes_are_held_through_a_leader_election_and_none_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path(), 3, 3);
    for s in &mut c.servers {
        s.ready().await;
    }
    let old = c.agreed_leader(3).await;
    let followers: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    let mut client = Agent::client_via(
        "client",
        &dir.path().join("client"),
        &c.addrs[followers[0]],
        &["--heartbeat-interval", "300ms"],
    );
    client.ready().await;

    let started = Instant::now();
    let targets: Vec<String> = followers
        .iter()
        .map(|&i| c.servers[i].url("/v1/config"))
        .collect();
    let (acked, failed) = writes_across_a_kill(&mut c, &targets, old, (0, 300, 150)).await;
    eprintln!(
        "followers: {} of 300 writes acknowledged in {:.1} s across the leader's kill",
        acked.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failed.is_empty(),
        "{} writes failed during the election: {failed:?}\n{}",
        failed.len(),
        c.logs()
    );
    for &i in &followers {
        wait_holds(&c.servers[i], &acked, "a survivor").await;
    }

    // The old leader back, all three voting; then the client agent's writes across the kill
    // of whichever server leads now.
    c.servers[old].restart();
    c.servers[old].ready().await;
    let leader = c.agreed_leader(3).await;
    let started = Instant::now();
    let targets = [client.url("/v1/config")];
    let (acked2, failed) = writes_across_a_kill(&mut c, &targets, leader, (300, 600, 450)).await;
    eprintln!(
        "client agent: {} of 300 writes acknowledged in {:.1} s across the leader's kill",
        acked2.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failed.is_empty(),
        "{} client writes failed during the election: {failed:?}\n{}\n--- client ---\n{}",
        failed.len(),
        c.logs(),
        tail(&client.log(), 40)
    );
    for i in (0..3).filter(|i| *i != leader) {
        wait_holds(&c.servers[i], &acked2, "a survivor, client writes").await;
    }
}

/// With no quorum left, a write is held for `rpc_hold_timeout` and then answered as Consul
/// answers it: 500 "No cluster leader"; nothing is written.
#[tokio::test]
async fn without_a_quorum_a_write_is_held_then_answered_no_cluster_leader() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start_with(dir.path(), 3, 3, &["--rpc-hold-timeout", "1500ms"]);
    for s in &mut c.servers {
        s.ready().await;
    }
    let leader = c.agreed_leader(3).await;
    let survivor = (leader + 1) % 3;
    for i in (0..3).filter(|i| *i != survivor) {
        c.servers[i].kill();
    }
    let started = Instant::now();
    let resp = http()
        .put(c.servers[survivor].url("/v1/config"))
        .body(json!({"Kind": "service-defaults", "Name": "lonely", "Protocol": "tcp"}).to_string())
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 500, "{text}");
    assert_eq!(text.trim(), "No cluster leader");
    assert!(
        took >= Duration::from_millis(1400),
        "answered after {took:?}, before the hold ended"
    );
    assert!(!names_on(&c.servers[survivor])
        .await
        .contains(&"lonely".to_string()));
}

/// A client agent whose only server is down holds a write (`rpc_hold_timeout`) rather than
/// failing it: the server is SIGKILLed, the write sent at once, the server started again a
/// second later; the write is acknowledged once the server leads again, and is there.
#[tokio::test]
async fn a_client_agent_holds_a_write_while_its_server_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Agent::server("solo", &dir.path().join("solo"), &[]);
    server.ready().await;
    let mut client = Agent::client("c1", &dir.path().join("c1"), server.server, &[]);
    client.ready().await;
    assert!(write(&client, "before").await);

    server.kill();
    let url = client.url("/v1/config");
    let started = Instant::now();
    let sent = tokio::spawn(async move { write_to(&url, "while-down").await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.start();
    let acked = sent.await.unwrap();
    eprintln!(
        "write through the client acknowledged: {acked}, after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(acked, "the held write failed\n{}", tail(&client.log(), 30));
    server.ready().await;
    wait_holds(
        &server,
        &["before".into(), "while-down".into()],
        "the server",
    )
    .await;
}
