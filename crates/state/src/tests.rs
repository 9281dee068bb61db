//! Store tests: indexes, blocking wake-ups, snapshot round trips.

use std::time::Duration;

use trellis_api::{
    AgentService, CatalogDeregistration, CatalogRegistration, ConfigEntry, ConnectProxyConfig,
    HealthCheck,
};

use crate::{Applied, Command, Query, QueryOutput, Store};

fn reg(node: &str, svc: Option<(&str, &str)>) -> Command {
    Command::Register(Box::new(CatalogRegistration {
        node: node.into(),
        address: "10.0.0.1".into(),
        service: svc.map(|(id, name)| AgentService {
            id: id.into(),
            service: name.into(),
            port: 8080,
            ..Default::default()
        }),
        ..Default::default()
    }))
}

fn proxy(node: &str, id: &str, dest: &str) -> Command {
    Command::Register(Box::new(CatalogRegistration {
        node: node.into(),
        address: "10.0.0.1".into(),
        service: Some(AgentService {
            kind: "connect-proxy".into(),
            id: id.into(),
            service: format!("{dest}-sidecar-proxy"),
            port: 21000,
            proxy: Some(ConnectProxyConfig {
                destination_service_name: dest.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

fn body(out: QueryOutput) -> serde_json::Value {
    match out {
        QueryOutput::Found(b) => serde_json::from_slice(&b.json()).unwrap(),
        QueryOutput::NotFound(m) => panic!("not found: {m}"),
    }
}

fn health(name: &str, connect: bool) -> Query {
    Query::HealthService {
        name: name.into(),
        tags: vec![],
        passing: false,
        connect,
    }
}

mod watch_registry;

#[test]
fn indexes_follow_the_keys_a_query_reads() {
    let s = Store::new("dc1");
    assert_eq!(s.apply(5, reg("n1", Some(("web1", "web")))), Applied::Done);
    assert_eq!(s.apply(6, reg("n1", Some(("db1", "db")))), Applied::Done);
    assert_eq!(s.query(&health("web", false)).1, 5);
    assert_eq!(s.query(&health("db", false)).1, 6);
    // Never-written keys answer with index 1, never 0.
    assert_eq!(s.query(&health("nothing", false)).1, 1);
    // An identical re-registration changes nothing and moves no index.
    assert_eq!(s.apply(7, reg("n1", Some(("web1", "web")))), Applied::Done);
    assert_eq!(s.query(&health("web", false)).1, 5);
    let v = body(s.query(&health("web", false)).0);
    assert_eq!(v[0]["Service"]["ID"], "web1");
    assert_eq!(v[0]["Service"]["CreateIndex"], 5);
    assert_eq!(v[0]["Node"]["Datacenter"], "dc1");
}

#[test]
fn connect_index_finds_proxies_by_destination() {
    let s = Store::new("dc1");
    s.apply(3, reg("n1", Some(("web1", "web"))));
    s.apply(4, proxy("n1", "web1-sidecar-proxy", "web"));
    let v = body(s.query(&health("web", true)).0);
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["Service"]["Kind"], "connect-proxy");
    assert_eq!(s.query(&health("web", true)).1, 4);
    s.apply(
        5,
        Command::Deregister(CatalogDeregistration {
            node: "n1".into(),
            service_id: "web1-sidecar-proxy".into(),
            ..Default::default()
        }),
    );
    assert_eq!(body(s.query(&health("web", true)).0), serde_json::json!([]));
    assert_eq!(
        s.query(&health("web", true)).1,
        5,
        "a delete advances the index"
    );
}

#[test]
fn passing_filter_and_node_checks() {
    let s = Store::new("dc1");
    s.apply(2, reg("n1", Some(("web1", "web"))));
    let check = |id: &str, svc: &str, status: &str| HealthCheck {
        check_id: id.into(),
        name: id.into(),
        service_id: svc.into(),
        status: status.into(),
        ..Default::default()
    };
    let cmd = Command::Register(Box::new(CatalogRegistration {
        node: "n1".into(),
        skip_node_update: true,
        checks: vec![
            check("svc-check", "web1", "passing"),
            check("node-check", "", "critical"),
        ],
        ..Default::default()
    }));
    assert_eq!(s.apply(3, cmd), Applied::Done);
    let q = Query::HealthService {
        name: "web".into(),
        tags: vec![],
        passing: true,
        connect: false,
    };
    assert_eq!(
        body(s.query(&q).0),
        serde_json::json!([]),
        "a critical node check fails the instance"
    );
    let all = body(s.query(&health("web", false)).0);
    assert_eq!(all[0]["Checks"].as_array().unwrap().len(), 2);
    assert_eq!(
        all[0]["Checks"][0]["ServiceName"], "",
        "node check has no service"
    );
}

#[test]
fn rejected_registration_changes_nothing() {
    let s = Store::new("dc1");
    s.apply(2, reg("n1", None));
    let before = s.snapshot();
    let bad = Command::Register(Box::new(CatalogRegistration {
        node: "n1".into(),
        address: "10.9.9.9".into(),
        service: Some(AgentService {
            id: "x".into(),
            service: "x".into(),
            ..Default::default()
        }),
        checks: vec![HealthCheck {
            check_id: "c".into(),
            service_id: "missing".into(),
            ..Default::default()
        }],
        ..Default::default()
    }));
    assert!(matches!(s.apply(3, bad), Applied::Rejected(m) if m.contains("Unknown service ID")));
    let mut after = s.snapshot();
    assert_eq!(after.index, 3);
    after.index = before.index;
    assert_eq!(after, before);
}

#[test]
fn config_cas() {
    let s = Store::new("dc1");
    let entry: ConfigEntry =
        serde_json::from_str(r#"{"Kind":"service-defaults","Name":"web","Protocol":"http"}"#)
            .unwrap();
    assert_eq!(
        s.apply(
            2,
            Command::ConfigSet {
                entry: entry.clone(),
                cas: Some(0)
            }
        ),
        Applied::Cas(true)
    );
    assert_eq!(
        s.apply(
            3,
            Command::ConfigSet {
                entry: entry.clone(),
                cas: Some(0)
            }
        ),
        Applied::Cas(false)
    );
    assert_eq!(
        s.apply(
            4,
            Command::ConfigSet {
                entry,
                cas: Some(2)
            }
        ),
        Applied::Cas(true)
    );
    let got = body(
        s.query(&Query::ConfigGet {
            kind: "service-defaults".into(),
            name: "web".into(),
        })
        .0,
    );
    assert_eq!(got["CreateIndex"], 2);
    assert_eq!(got["ModifyIndex"], 4);
    assert_eq!(got["Protocol"], "http");
    assert_eq!(
        s.apply(
            5,
            Command::ConfigDelete {
                kind: "service-defaults".into(),
                name: "web".into(),
                cas: Some(3)
            }
        ),
        Applied::Cas(false)
    );
    assert_eq!(
        s.apply(
            6,
            Command::ConfigDelete {
                kind: "service-defaults".into(),
                name: "web".into(),
                cas: None
            }
        ),
        Applied::Done
    );
    assert!(matches!(
        s.query(&Query::ConfigGet {
            kind: "service-defaults".into(),
            name: "web".into()
        })
        .0,
        QueryOutput::NotFound(_)
    ));
}

#[test]
fn snapshot_round_trip_keeps_rows_indexes_and_secondary_indexes() {
    let s = Store::new("dc1");
    s.apply(2, reg("n1", Some(("web1", "web"))));
    s.apply(3, proxy("n1", "web1-sidecar-proxy", "web"));
    s.apply(4, reg("n2", Some(("db1", "db"))));
    let bytes = s.snapshot_bytes();
    let t = Store::new("dc1");
    t.restore_bytes(&bytes).unwrap();
    assert_eq!(t.snapshot(), s.snapshot());
    for q in [
        health("web", false),
        health("web", true),
        health("db", false),
        Query::CatalogServices,
        Query::CatalogNodes,
    ] {
        assert_eq!(t.query(&q), s.query(&q), "{q:?}");
    }
    assert!(t.restore_bytes(b"{not json").is_err());
}

/// The many-keys wait answers at once for keys whose index differs from the caller's, waits
/// otherwise, wakes on a write to any of its keys (only), and reports each moved key's index
/// at its position.
#[tokio::test(start_paused = true)]
async fn waiting_on_many_keys_reports_the_ones_that_moved() {
    let s = Store::new("dc1");
    s.apply(2, reg("n1", Some(("web1", "web"))));
    s.apply(3, reg("n1", Some(("api1", "api"))));
    let web = health("web", false).key();
    let api = health("api", false).key();
    let (_, web_idx) = s.query(&health("web", false));
    let (_, api_idx) = s.query(&health("api", false));

    // Unknown (0) and stale indexes answer at once.
    let now = s
        .wait_for_keys(
            &[(web.clone(), 0), (api.clone(), api_idx)],
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(now, vec![(0, web_idx)]);

    let keys = vec![(web.clone(), web_idx), (api.clone(), api_idx)];
    let waiter = {
        let s = s.clone();
        let keys = keys.clone();
        tokio::spawn(async move {
            s.wait_for_keys(&keys, Duration::from_secs(60))
                .await
                .unwrap()
        })
    };
    tokio::task::yield_now().await;
    s.apply(4, reg("n2", Some(("db1", "db"))));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!waiter.is_finished(), "woken by a key it does not watch");
    s.apply(5, reg("n2", Some(("api2", "api"))));
    let changed = tokio::time::timeout(Duration::from_secs(1), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(changed, vec![(1, 5)]);

    // Nothing moves: the wait passes and the answer is empty.
    let keys = vec![(web, web_idx), (api, 5)];
    let start = tokio::time::Instant::now();
    assert!(s
        .wait_for_keys(&keys, Duration::from_secs(30))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(start.elapsed(), Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn blocking_query_wakes_on_its_key_only() {
    let s = Store::new("dc1");
    s.apply(2, reg("n1", Some(("web1", "web"))));
    let (_, idx) = s.query(&health("web", false));
    let waiter = {
        let s = s.clone();
        tokio::spawn(async move {
            s.blocking_query(&health("web", false), idx, Duration::from_secs(60))
                .await
        })
    };
    tokio::task::yield_now().await;
    // Writes to other services and to config entries must not wake it.
    s.apply(3, reg("n2", Some(("db1", "db"))));
    let entry: ConfigEntry =
        serde_json::from_str(r#"{"Kind":"proxy-defaults","Name":"global"}"#).unwrap();
    s.apply(4, Command::ConfigSet { entry, cas: None });
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(!waiter.is_finished(), "woken by an unrelated write");
    s.apply(5, reg("n1", Some(("web2", "web"))));
    let (out, new_idx) = tokio::time::timeout(Duration::from_secs(1), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(new_idx, 5);
    assert_eq!(body(out).as_array().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn blocking_query_times_out_with_the_same_index() {
    let s = Store::new("dc1");
    s.apply(2, reg("n1", Some(("web1", "web"))));
    let started = tokio::time::Instant::now();
    let (_, idx) = s
        .blocking_query(&health("web", false), 2, Duration::from_secs(10))
        .await;
    assert_eq!(idx, 2);
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    // The waiter left, and with it the key's sender.
    assert_eq!(s.watched_keys(), 0);
}

#[tokio::test(start_paused = true)]
async fn restore_wakes_every_waiter() {
    let s = Store::new("dc1");
    s.apply(2, reg("n1", Some(("web1", "web"))));
    let snap = s.snapshot();
    let waiter = {
        let s = s.clone();
        tokio::spawn(async move {
            s.blocking_query(&Query::CatalogNodes, 2, Duration::from_secs(60))
                .await
        })
    };
    tokio::task::yield_now().await;
    s.restore(snap);
    // The restored index equals the old one, so the waiter re-blocks; it must have re-run
    // rather than slept through: a write after restore still wakes it.
    s.apply(3, reg("n9", None));
    let (_, idx) = tokio::time::timeout(Duration::from_secs(1), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(idx, 3);
}

mod properties {
    use proptest::prelude::*;

    use crate::{Applied, Command, Store};

    fn node() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("n1".to_string()),
            Just("n2".to_string()),
            Just(String::new())
        ]
    }

    fn command() -> impl Strategy<Value = serde_json::Value> {
        let svc = prop_oneof![Just("web"), Just("db"), Just("")];
        let check_svc = prop_oneof![Just(""), Just("web"), Just("db"), Just("ghost")];
        let status = prop_oneof![
            Just(""),
            Just("passing"),
            Just("critical"),
            Just("warning"),
            Just("bogus")
        ];
        let tags = prop::collection::vec(prop_oneof![Just("a"), Just("b")], 0..2);
        let check_id = prop_oneof![Just("c1"), Just("c2"), Just("serfHealth")];
        prop_oneof![
            (node(), svc.clone(), check_svc, status, any::<bool>(), tags, check_id.clone(), any::<bool>()).prop_map(
                |(n, s, cs, st, skip, tags, cid, proxy)| {
                    let service = if s.is_empty() {
                        serde_json::Value::Null
                    } else if proxy {
                        serde_json::json!({"ID": format!("{s}-proxy"), "Service": format!("{s}-proxy"), "Kind": "connect-proxy",
                            "Port": 2, "Proxy": {"DestinationServiceName": s}, "Tags": tags})
                    } else {
                        serde_json::json!({"ID": s, "Service": s, "Port": 1, "Tags": tags})
                    };
                    serde_json::json!({
                        "Type": "Register", "Node": n, "Address": if skip { "" } else { "10.0.0.1" },
                        "SkipNodeUpdate": skip, "Service": service,
                        "Checks": [{"CheckID": cid, "ServiceID": cs, "Status": st}],
                    })
                }
            ),
            (node(), svc.clone()).prop_map(|(n, s)| serde_json::json!({"Type": "Deregister", "Node": n, "ServiceID": s})),
            (node(), check_id).prop_map(|(n, c)| serde_json::json!({"Type": "Deregister", "Node": n, "CheckID": c})),
            (svc, prop_oneof![Just("http"), Just("tcp")]).prop_map(|(s, p)| serde_json::json!({
                "Type": "ConfigSet", "entry": {"Kind": "service-defaults", "Name": if s.is_empty() { "x" } else { s }, "Protocol": p}, "cas": null
            })),
            prop_oneof![Just("http"), Just("grpc"), Just("tcp")].prop_map(|p| serde_json::json!({
                "Type": "ConfigSet", "entry": {"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": p}}, "cas": null
            })),
            Just(serde_json::json!({"Type": "ConfigDelete", "kind": "proxy-defaults", "name": "global", "cas": null})),
            (intention_name(), intention_name(), prop_oneof![Just("allow"), Just("deny"), Just("bogus")], any::<bool>(), prop::option::of(legacy_id()))
                .prop_map(|(src, dst, action, create_only, id)| {
                    let mut source = serde_json::json!({"Name": src, "Action": action});
                    if let Some(id) = &id {
                        source["LegacyID"] = id.clone().into();
                    }
                    serde_json::json!({"Type": "IntentionUpsert", "destination": dst, "source": source,
                        "create_only": create_only, "replace_id": if create_only { serde_json::Value::Null } else { id.into() }})
                }),
            (intention_name(), intention_name()).prop_map(|(src, dst)| serde_json::json!({
                "Type": "IntentionDelete", "target": {"Exact": {"source": src, "destination": dst}}
            })),
            legacy_id().prop_map(|id| serde_json::json!({"Type": "IntentionDelete", "target": {"Id": id}})),
            (intention_name(), intention_name(), any::<bool>()).prop_map(|(src, dst, l7)| {
                let source = if l7 {
                    serde_json::json!({"Name": src, "Permissions": [{"Action": "deny", "HTTP": {"PathPrefix": "/admin"}}]})
                } else {
                    serde_json::json!({"Name": src, "Action": "allow"})
                };
                serde_json::json!({"Type": "ConfigSet", "entry": {"Kind": "service-intentions", "Name": dst, "Sources": [source]}, "cas": null})
            }),
        ]
    }

    fn intention_name() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just("web"), Just("db"), Just("*"), Just("web*")]
    }

    fn legacy_id() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("00000000-0000-0000-0000-000000000001".to_string()),
            Just("00000000-0000-0000-0000-000000000002".to_string())
        ]
    }

    fn queries() -> Vec<crate::Query> {
        use crate::Query::*;
        let mut qs = vec![
            CatalogNodes,
            CatalogServices,
            HealthState {
                state: "any".into(),
            },
            HealthState {
                state: "passing".into(),
            },
        ];
        for n in ["n1", "n2"] {
            qs.extend([
                CatalogNode { node: n.into() },
                HealthNode { node: n.into() },
                NodeState { node: n.into() },
            ]);
        }
        for s in ["web", "db", "web-proxy"] {
            qs.push(HealthChecks { service: s.into() });
            qs.push(ConfigGet {
                kind: "service-defaults".into(),
                name: s.into(),
            });
            for connect in [false, true] {
                qs.push(CatalogService {
                    name: s.into(),
                    tags: vec!["a".into()],
                    connect,
                });
                for passing in [false, true] {
                    qs.push(HealthService {
                        name: s.into(),
                        tags: vec![],
                        passing,
                        connect,
                    });
                }
            }
        }
        qs.push(ConfigList {
            kind: "service-defaults".into(),
        });
        qs.push(ConfigList {
            kind: "service-intentions".into(),
        });
        qs.push(IntentionList);
        for id in [
            "00000000-0000-0000-0000-000000000001",
            "00000000-0000-0000-0000-000000000002",
        ] {
            qs.push(IntentionGet { id: id.into() });
        }
        for by_source in [false, true] {
            qs.push(IntentionMatch {
                by_source,
                names: vec!["web".into(), "db".into()],
            });
        }
        qs.push(Members);
        qs.push(ResolveServiceConfig {
            name: "web".into(),
            upstreams: vec!["db".into(), "api".into()],
        });
        for src in ["web", "*"] {
            for dst in ["db", "*"] {
                qs.push(IntentionExact {
                    source: src.into(),
                    destination: dst.into(),
                });
            }
        }
        qs
    }

    proptest! {
        /// Any sequence of registrations either applies or is rejected; a rejection changes
        /// nothing, and every query still answers.
        #[test]
        fn random_commands_reject_cleanly_and_cached_answers_stay_fresh(cmds in prop::collection::vec(command(), 1..20)) {
            let store = Store::new("dc1");
            for (i, raw) in cmds.into_iter().enumerate() {
                let cmd: Command = serde_json::from_value(raw).unwrap();
                let before = store.snapshot();
                let outcome = store.apply(i as u64 + 1, cmd);
                if let Applied::Rejected(_) | Applied::NotFound(_) = outcome {
                    let mut after = store.snapshot();
                    after.index = before.index;
                    prop_assert_eq!(after, before);
                }
                // Cached answers equal a fresh evaluation: every change that can alter an answer
                // bumps the answer's key.
                for q in queries() {
                    let cached = store.query(&q);
                    let fresh = store.read_at(&[q.key()], |t, _| q.run(t, "dc1"));
                    prop_assert_eq!(&cached, &fresh, "{:?} after command {}", q, i);
                }
            }
        }
    }
}

#[test]
fn batch_applies_each_command_on_its_own_at_one_index() {
    let s = Store::new("dc1");
    let bad = Command::Deregister(CatalogDeregistration::default());
    let out = s.apply(
        7,
        Command::Batch {
            commands: vec![
                reg("n1", Some(("web1", "web"))),
                bad,
                reg("n2", Some(("db1", "db"))),
            ],
        },
    );
    let Applied::Batch(results) = out else {
        panic!("{out:?}")
    };
    assert_eq!(results[0], Applied::Done);
    assert!(matches!(results[1], Applied::Rejected(_)));
    assert_eq!(results[2], Applied::Done);
    assert_eq!(s.query(&health("web", false)).1, 7);
    assert_eq!(s.query(&health("db", false)).1, 7);
    let nested = s.apply(
        8,
        Command::Batch {
            commands: vec![Command::Batch { commands: vec![] }],
        },
    );
    assert!(matches!(nested, Applied::Batch(r) if matches!(r[0], Applied::Rejected(_))));
}

#[test]
fn every_command_round_trips_through_json() {
    let entry: ConfigEntry =
        serde_json::from_str(r#"{"Kind":"service-defaults","Name":"web"}"#).unwrap();
    let all = vec![
        reg("n1", Some(("web1", "web"))),
        Command::Deregister(CatalogDeregistration {
            node: "n1".into(),
            ..Default::default()
        }),
        Command::ConfigSet {
            entry,
            cas: Some(3),
        },
        Command::ConfigDelete {
            kind: "service-defaults".into(),
            name: "web".into(),
            cas: None,
        },
    ];
    let batch = Command::Batch {
        commands: all.clone(),
    };
    for cmd in all.into_iter().chain([batch]) {
        let bytes = serde_json::to_vec(&cmd).unwrap();
        assert_eq!(serde_json::from_slice::<Command>(&bytes).unwrap(), cmd);
    }
    for applied in [
        Applied::Done,
        Applied::Cas(true),
        Applied::Rejected("no".into()),
        Applied::Batch(vec![Applied::Done]),
    ] {
        let bytes = serde_json::to_vec(&applied).unwrap();
        assert_eq!(serde_json::from_slice::<Applied>(&bytes).unwrap(), applied);
    }
}

mod intentions {
    use serde_json::json;
    use trellis_api::{config_kind, ConfigEntry};

    use crate::{Applied, Command, IntentionRef, Query, QueryOutput, Store};

    const ID: &str = "00000000-0000-0000-0000-0000000000aa";

    fn upsert(src: &str, dst: &str, action: &str, create_only: bool, id: Option<&str>) -> Command {
        let mut source = json!({"Name": src, "Action": action});
        if let Some(id) = id {
            source["LegacyID"] = id.into();
            source["LegacyCreateTime"] = "2026-01-01T00:00:00Z".into();
        }
        Command::IntentionUpsert {
            destination: dst.into(),
            source: source.as_object().unwrap().clone(),
            create_only,
            replace_id: None,
        }
    }

    fn body(s: &Store, q: Query) -> serde_json::Value {
        match s.query(&q).0 {
            QueryOutput::Found(b) => serde_json::from_slice(&b.json()).unwrap(),
            QueryOutput::NotFound(m) => json!({ "NotFound": m }),
        }
    }

    fn entry(s: &Store, name: &str) -> serde_json::Value {
        body(
            s,
            Query::ConfigGet {
                kind: config_kind::SERVICE_INTENTIONS.into(),
                name: name.into(),
            },
        )
    }

    #[test]
    fn legacy_create_refuses_a_duplicate_pair_and_changes_nothing() {
        let s = Store::new("dc1");
        assert_eq!(
            s.apply(1, upsert("web", "db", "allow", true, Some(ID))),
            Applied::Done
        );
        let before = s.snapshot();
        let out = s.apply(2, upsert("web", "db", "deny", true, None));
        assert!(matches!(out, Applied::Rejected(m) if m.contains("duplicate intention")));
        let mut after = s.snapshot();
        after.index = before.index;
        assert_eq!(after, before);
    }

    #[test]
    fn exact_upsert_replaces_in_place_and_keeps_the_legacy_identity() {
        let s = Store::new("dc1");
        s.apply(1, upsert("web", "db", "allow", true, Some(ID)));
        s.apply(2, upsert("*", "db", "deny", false, None));
        s.apply(3, upsert("web", "db", "deny", false, None));
        let e = entry(&s, "db");
        let sources = e["Sources"].as_array().unwrap();
        assert_eq!(sources.len(), 2);
        // Precedence order: exact source (9) before the wildcard (8).
        assert_eq!(sources[0]["Name"], "web");
        assert_eq!(sources[0]["Action"], "deny");
        assert_eq!(sources[0]["LegacyID"], ID);
        assert_eq!(sources[0]["LegacyCreateTime"], "2026-01-01T00:00:00Z");
        assert_eq!(sources[1]["Precedence"], 8);
        let got = body(&s, Query::IntentionGet { id: ID.into() });
        assert_eq!(got["Action"], "deny");
        assert_eq!(got["CreatedAt"], "2026-01-01T00:00:00Z");
    }

    #[test]
    fn update_by_id_moves_the_intention_and_delete_by_id_removes_the_entry() {
        let s = Store::new("dc1");
        s.apply(1, upsert("web", "db", "allow", true, Some(ID)));
        let moved = Command::IntentionUpsert {
            destination: "cache".into(),
            source: json!({"Name": "api", "Action": "deny", "LegacyID": ID})
                .as_object()
                .unwrap()
                .clone(),
            create_only: false,
            replace_id: Some(ID.into()),
        };
        assert_eq!(s.apply(2, moved), Applied::Done);
        assert!(
            entry(&s, "db")["NotFound"].is_string(),
            "{}",
            entry(&s, "db")
        );
        let got = body(&s, Query::IntentionGet { id: ID.into() });
        assert_eq!(got["SourceName"], "api");
        assert_eq!(got["DestinationName"], "cache");
        assert_eq!(got["CreatedAt"], "2026-01-01T00:00:00Z");
        let gone = Command::IntentionDelete {
            target: IntentionRef::Id(ID.into()),
        };
        assert_eq!(s.apply(3, gone.clone()), Applied::Done);
        assert!(entry(&s, "cache")["NotFound"].is_string());
        assert!(matches!(s.apply(4, gone), Applied::NotFound(_)));
    }

    #[test]
    fn a_refused_move_leaves_the_intention_where_it_was() {
        let s = Store::new("dc1");
        s.apply(1, upsert("web", "db", "allow", true, Some(ID)));
        let before = s.snapshot();
        // L7 permissions on a destination that speaks tcp: refused by the final write's
        // protocol rule, which must be checked before the intention leaves `db`.
        let moved = Command::IntentionUpsert {
            destination: "cache".into(),
            source: json!({"Name": "api", "LegacyID": ID,
                "Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/"}}]})
            .as_object()
            .unwrap()
            .clone(),
            create_only: false,
            replace_id: Some(ID.into()),
        };
        let out = s.apply(2, moved);
        assert!(matches!(out, Applied::Rejected(m) if m.contains("L7")));
        let mut after = s.snapshot();
        after.index = before.index;
        assert_eq!(after, before);
    }

    #[test]
    fn config_writes_may_echo_legacy_fields_but_not_set_them() {
        let s = Store::new("dc1");
        s.apply(1, upsert("web", "db", "allow", true, Some(ID)));
        let mut e: ConfigEntry = serde_json::from_value(entry(&s, "db")).unwrap();
        // Read-modify-write keeps the legacy fields as they are: accepted.
        e.body["Sources"][0]["Action"] = "deny".into();
        let set = |e: &ConfigEntry| Command::ConfigSet {
            entry: e.clone(),
            cas: None,
        };
        assert_eq!(s.apply(2, set(&e)), Applied::Done);
        e.body["Sources"][0]["LegacyID"] = "00000000-0000-0000-0000-0000000000bb".into();
        assert!(matches!(s.apply(3, set(&e)), Applied::Rejected(m) if m.contains("LegacyID")));
    }

    #[test]
    fn full_validation_reports_every_problem() {
        let s = Store::new("dc1");
        let e: ConfigEntry = serde_json::from_value(json!({
            "Kind": "service-intentions", "Name": "*",
            "Sources": [
                {"Name": "web*", "Action": "allow"},
                {"Name": "api", "Permissions": [{"Action": "allow", "HTTP": {"PathExact": "/x"}}]},
                {"Name": "db", "Action": "allow", "Peer": "other", "Bogus": 1}
            ]
        }))
        .unwrap();
        let out = s.apply(
            1,
            Command::ConfigSet {
                entry: e,
                cas: None,
            },
        );
        let Applied::Rejected(msg) = out else {
            panic!("accepted: {out:?}")
        };
        for want in ["web*", "wildcard destination", "Peer", "Bogus"] {
            assert!(msg.contains(want), "{want:?} missing from {msg}");
        }
    }

    #[test]
    fn match_orders_by_precedence_and_covers_wildcards() {
        let s = Store::new("dc1");
        s.apply(1, upsert("*", "*", "deny", false, None));
        s.apply(2, upsert("web", "*", "allow", false, None));
        s.apply(3, upsert("*", "db", "deny", false, None));
        s.apply(4, upsert("web", "db", "allow", false, None));
        s.apply(5, upsert("web", "other", "allow", false, None));
        let m = body(
            &s,
            Query::IntentionMatch {
                by_source: false,
                names: vec!["db".into()],
            },
        );
        let got: Vec<(String, String)> = m["db"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["SourceName"].as_str().unwrap().to_string(),
                    i["DestinationName"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let want = [("web", "db"), ("*", "db"), ("web", "*"), ("*", "*")];
        assert_eq!(
            got,
            want.map(|(a, b)| (a.to_string(), b.to_string())).to_vec()
        );
        let by_src = body(
            &s,
            Query::IntentionMatch {
                by_source: true,
                names: vec!["web".into()],
            },
        );
        assert_eq!(by_src["web"].as_array().unwrap().len(), 5);
    }
}
