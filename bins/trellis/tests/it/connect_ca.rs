//! The Connect CA through real processes: roots, leafs checked by openssl, configuration,
//! rotation, client agents, persistence.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::Agent;

fn openssl_verify(
    dir: &Path,
    trusted: &str,
    untrusted: Option<&str>,
    leaf: &str,
) -> Result<(), String> {
    std::fs::write(dir.join("trusted.pem"), trusted).unwrap();
    std::fs::write(dir.join("leaf.pem"), leaf).unwrap();
    let mut cmd = Command::new("openssl");
    cmd.arg("verify")
        .arg("-CAfile")
        .arg(dir.join("trusted.pem"));
    if let Some(u) = untrusted {
        std::fs::write(dir.join("untrusted.pem"), u).unwrap();
        cmd.arg("-untrusted").arg(dir.join("untrusted.pem"));
    }
    let out = cmd.arg(dir.join("leaf.pem")).output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout))
    }
}

/// The public key of a certificate or a private key, as openssl prints it.
fn public_key(dir: &Path, pem: &str, of_private_key: bool) -> String {
    let f = dir.join("in.pem");
    std::fs::write(&f, pem).unwrap();
    let out = if of_private_key {
        Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&f)
            .output()
            .unwrap()
    } else {
        Command::new("openssl")
            .args(["x509", "-noout", "-pubkey", "-in"])
            .arg(&f)
            .output()
            .unwrap()
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn roots_pem(a: &Agent) -> String {
    crate::support::client()
        .get(a.url("/v1/connect/ca/roots?pem=true"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn wait_ca(a: &Agent) -> Value {
    a.wait_for("/v1/connect/ca/roots", "CA initialised", |v| {
        v["ActiveRootID"].as_str().is_some_and(|s| !s.is_empty())
    })
    .await
}

#[tokio::test]
async fn dev_agent_issues_leafs_that_openssl_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::dev("ca-node", dir.path());
    a.ready().await;
    let roots = wait_ca(&a).await;
    let td = roots["TrustDomain"].as_str().unwrap().to_string();
    assert!(td.ends_with(".consul") && td.len() == 36 + 7, "{td}");
    assert_eq!(roots["Roots"].as_array().unwrap().len(), 1);

    let (status, index, leaf) = a.get("/v1/agent/connect/ca/leaf/web").await;
    assert_eq!(status, 200, "{leaf}");
    assert!(index >= 1);
    assert_eq!(
        leaf["ServiceURI"],
        format!("spiffe://{td}/ns/default/dc/dc1/svc/web")
    );
    assert_eq!(leaf["Service"], "web");
    let cert = leaf["CertPEM"].as_str().unwrap();
    let key = leaf["PrivateKeyPEM"].as_str().unwrap();
    assert!(key.starts_with("-----BEGIN EC PRIVATE KEY-----"));
    openssl_verify(dir.path(), &roots_pem(&a).await, None, cert).unwrap();
    assert_eq!(
        public_key(dir.path(), cert, false),
        public_key(dir.path(), key, true),
        "key matches certificate"
    );

    // The agent keeps the leaf: a second request gets the same certificate.
    let (_, index2, again) = a.get("/v1/agent/connect/ca/leaf/web").await;
    assert_eq!(again["SerialNumber"], leaf["SerialNumber"]);
    assert_eq!(index2, index);
    // A blocking request with its index waits out `wait` and returns the same certificate.
    let started = Instant::now();
    let (_, _, blocked) = a
        .get(&format!(
            "/v1/agent/connect/ca/leaf/web?index={index}&wait=1s"
        ))
        .await;
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(blocked["SerialNumber"], leaf["SerialNumber"]);
    // Another service gets its own identity.
    let (_, _, db) = a.get("/v1/agent/connect/ca/leaf/db").await;
    assert_eq!(
        db["ServiceURI"],
        format!("spiffe://{td}/ns/default/dc/dc1/svc/db")
    );
    assert_eq!(a.get("/v1/agent/connect/ca/leaf/a%2Fb").await.0, 400);
    // `*` is the intentions wildcard: no identity for it.
    assert_eq!(a.get("/v1/agent/connect/ca/leaf/*").await.0, 400);
}

#[tokio::test]
async fn configuration_rules_and_rotation_keep_every_leaf_verifiable() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::dev_with(
        "rotate-node",
        dir.path(),
        &["--leaf-root-change-jitter", "3s"],
    );
    a.ready().await;
    let before = wait_ca(&a).await;
    let old_root = before["Roots"][0]["RootCert"].as_str().unwrap().to_string();
    let (_, _, cfg) = a.get("/v1/connect/ca/configuration").await;
    assert_eq!(cfg["Provider"], "consul");
    assert_eq!(cfg["Config"]["LeafCertTTL"], "72h");
    assert_eq!(cfg["Config"]["PrivateKeyType"], "ec");

    // Invalid configurations are refused and change nothing.
    for bad in [
        json!({"Provider": "consul", "Config": {"LeafCertTTL": "30m"}}),
        json!({"Provider": "consul", "Config": {"PrivateKeyType": "dsa"}}),
        json!({"Provider": "consul", "Config": {"RootCert": "x"}}),
        json!({"Provider": "consul", "Config": {"PrivateKey": "x", "RootCert": "y"}}),
        json!({"Provider": "pkcs11", "Config": {
            "ModulePath": "/usr/lib/softhsm/libsofthsm2.so", "TokenLabel": "t", "Pin": "1", "KeyLabel": "k"
        }}),
        json!({"Provider": "vault", "Config": {}}),
        json!({"Provider": "consul", "Config": {}, "State": {"x": "y"}}),
    ] {
        let (status, text) = a.put("/v1/connect/ca/configuration", bad.to_string()).await;
        assert_eq!(status, 400, "{bad}: {text}");
    }
    let (_, _, unchanged) = a.get("/v1/connect/ca/configuration").await;
    assert_eq!(unchanged, cfg);

    let (_, old_index, old_leaf) = a.get("/v1/agent/connect/ca/leaf/web").await;
    let old_cert = old_leaf["CertPEM"].as_str().unwrap().to_string();
    // A blocking leaf request wakes when the root rotates.
    let waiter = {
        let url = a.url(&format!(
            "/v1/agent/connect/ca/leaf/web?index={old_index}&wait=30s"
        ));
        tokio::spawn(async move {
            let started = Instant::now();
            let v: Value = crate::support::client()
                .get(url)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (started.elapsed(), v)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rotate = json!({"Provider": "consul", "Config": {"PrivateKeyType": "rsa", "PrivateKeyBits": 2048, "LeafCertTTL": "24h"}});
    let (status, text) = a
        .put("/v1/connect/ca/configuration", rotate.to_string())
        .await;
    assert_eq!(status, 200, "{text}");
    let (took, new_leaf) = waiter.await.unwrap();
    assert!(
        took < Duration::from_secs(10),
        "the leaf request woke after {took:?}"
    );
    assert_ne!(new_leaf["SerialNumber"], old_leaf["SerialNumber"]);

    let (_, _, after) = a.get("/v1/connect/ca/roots").await;
    let roots = after["Roots"].as_array().unwrap();
    assert_eq!(roots.len(), 2);
    let old = roots.iter().find(|r| r["Active"] == false).unwrap();
    let new = roots.iter().find(|r| r["Active"] == true).unwrap();
    assert_eq!(old["RootCert"], old_root.as_str());
    assert_eq!(new["PrivateKeyType"], "rsa");
    assert_eq!(after["ActiveRootID"], new["ID"]);
    let cross = new["IntermediateCerts"][0].as_str().unwrap();
    let new_cert = new_leaf["CertPEM"].as_str().unwrap();
    assert!(
        new_cert.contains(cross.trim_end()),
        "CertPEM carries the cross-signed certificate"
    );

    // Old leafs stay trusted by the bundle; new leafs chain to the old root through the
    // cross-signed certificate and to the new root directly.
    let bundle = roots_pem(&a).await;
    openssl_verify(dir.path(), &bundle, None, &old_cert).unwrap();
    let leaf_only = &new_cert[..new_cert.find("-----END CERTIFICATE-----").unwrap() + 26];
    openssl_verify(dir.path(), &old_root, Some(cross), leaf_only).unwrap();
    openssl_verify(
        dir.path(),
        new["RootCert"].as_str().unwrap(),
        None,
        leaf_only,
    )
    .unwrap();
    assert!(
        openssl_verify(dir.path(), &old_root, None, leaf_only).is_err(),
        "not without the cross-signed cert"
    );
    let (_, _, cfg) = a.get("/v1/connect/ca/configuration").await;
    assert_eq!(cfg["Config"]["LeafCertTTL"], "24h");
    // The same configuration again is a no-op.
    assert_eq!(
        a.put("/v1/connect/ca/configuration", rotate.to_string())
            .await
            .0,
        200
    );
    let (_, _, same) = a.get("/v1/connect/ca/roots").await;
    assert_eq!(same["Roots"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn client_agents_get_leafs_and_the_ca_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Agent::server("ca-srv", &dir.path().join("srv"), &[]);
    server.ready().await;
    let before = wait_ca(&server).await;
    let mut client = Agent::client("ca-cli", &dir.path().join("cli"), server.server, &[]);
    client.ready().await;
    let (status, _, leaf) = client.get("/v1/agent/connect/ca/leaf/api").await;
    assert_eq!(status, 200, "{leaf}");
    openssl_verify(
        dir.path(),
        &roots_pem(&client).await,
        None,
        leaf["CertPEM"].as_str().unwrap(),
    )
    .unwrap();
    let bad = json!({"Provider": "consul", "Config": {"LeafCertTTL": "30m"}});
    let (status, text) = client
        .put("/v1/connect/ca/configuration", bad.to_string())
        .await;
    assert_eq!(
        status, 400,
        "a refusal keeps its status through the client agent: {text}"
    );
    assert!(text.contains("1h"), "{text}");

    server.restart();
    server.ready().await;
    let after = wait_ca(&server).await;
    assert_eq!(
        after["ActiveRootID"], before["ActiveRootID"],
        "the root comes back from disk"
    );
    assert_eq!(after["TrustDomain"], before["TrustDomain"]);
}

#[tokio::test]
async fn ca_cli_reads_and_sets_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::dev("ca-cli-node", dir.path());
    a.ready().await;
    wait_ca(&a).await;
    let addr = format!("127.0.0.1:{}", a.http);
    let trellis = env!("CARGO_BIN_EXE_trellis");
    let out = Command::new(trellis)
        .args(["connect", "ca", "get-config", "-http-addr", &addr])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cfg["Config"]["LeafCertTTL"], "72h");

    let file = dir.path().join("ca.json");
    std::fs::write(
        &file,
        json!({"Provider": "consul", "Config": {"LeafCertTTL": "48h"}}).to_string(),
    )
    .unwrap();
    let out = Command::new(trellis)
        .args([
            "connect",
            "ca",
            "set-config",
            "-http-addr",
            &addr,
            "-config-file",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, _, cfg) = a.get("/v1/connect/ca/configuration").await;
    assert_eq!(cfg["Config"]["LeafCertTTL"], "48h");

    std::fs::write(
        &file,
        json!({"Provider": "consul", "Config": {"LeafCertTTL": "1m"}}).to_string(),
    )
    .unwrap();
    let out = Command::new(trellis)
        .args([
            "connect",
            "ca",
            "set-config",
            "-http-addr",
            &addr,
            "-config-file",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("400"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The CA moves into an HSM (SoftHSM2) through the HTTP API, like any other rotation.
#[tokio::test]
async fn rotation_into_a_softhsm_token() {
    const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
    if !Path::new(MODULE).exists() {
        assert!(
            std::env::var("TRELLIS_SKIP_HSM").is_ok(),
            "SoftHSM2 is missing: apt-get install softhsm2 (or set TRELLIS_SKIP_HSM=1)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\n",
            tokens.display()
        ),
    )
    .unwrap();
    let init = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args([
            "--init-token",
            "--free",
            "--label",
            "trellis-ca",
            "--pin",
            "1234",
            "--so-pin",
            "5678",
        ])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );

    let env = vec![("SOFTHSM2_CONF".to_string(), conf.display().to_string())];
    let to_hsm = json!({"Provider": "pkcs11", "Config": {
        "ModulePath": MODULE, "TokenLabel": "trellis-ca", "Pin": "1234", "KeyLabel": "trellis-root"
    }});

    // Without SoftHSM on the agent's allow-list, the same request is refused.
    {
        let mut a = Agent::dev_env("hsm-not-allowed", dir.path(), env.clone());
        a.ready().await;
        let before = wait_ca(&a).await;
        let (status, text) = a
            .put("/v1/connect/ca/configuration", to_hsm.to_string())
            .await;
        assert_eq!(status, 400, "{text}");
        assert!(text.contains("is not an allowed PKCS#11 module"), "{text}");
        let (_, _, cfg) = a.get("/v1/connect/ca/configuration").await;
        assert_eq!(cfg["Provider"], "consul");
        assert_eq!(a.get("/v1/connect/ca/roots").await.2, before);
    }

    // The operator allows the module in the agent's configuration.
    let mut a = Agent::dev_env_with("hsm-node", dir.path(), &["-pkcs11-module", MODULE], env);
    a.ready().await;
    let before = wait_ca(&a).await;
    let old_root = before["Roots"][0]["RootCert"].as_str().unwrap().to_string();
    let (_, _, old_leaf) = a.get("/v1/agent/connect/ca/leaf/web").await;

    let (status, text) = a
        .put("/v1/connect/ca/configuration", to_hsm.to_string())
        .await;
    assert_eq!(status, 200, "{text}");
    let (_, _, cfg) = a.get("/v1/connect/ca/configuration").await;
    assert_eq!(cfg["Provider"], "pkcs11");
    assert!(
        cfg["Config"].get("Pin").is_none(),
        "the PIN is never shown: {cfg}"
    );
    let after = a
        .wait_for("/v1/connect/ca/roots", "two roots", |v| {
            v["Roots"].as_array().is_some_and(|r| r.len() == 2)
        })
        .await;
    let new = after["Roots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["Active"] == true)
        .unwrap()
        .clone();
    let cross = new["IntermediateCerts"][0].as_str().unwrap().to_string();

    // A leaf signed by the HSM key chains to the old root through the cross-signed cert.
    let deadline = Instant::now() + Duration::from_secs(10);
    let new_leaf = loop {
        let (_, _, leaf) = a.get("/v1/agent/connect/ca/leaf/web").await;
        if leaf["SerialNumber"] != old_leaf["SerialNumber"] {
            break leaf;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never re-issued after the rotation"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let cert = new_leaf["CertPEM"].as_str().unwrap();
    let leaf_only = &cert[..cert.find("-----END CERTIFICATE-----").unwrap() + 26];
    openssl_verify(dir.path(), &old_root, Some(&cross), leaf_only).unwrap();
    openssl_verify(
        dir.path(),
        new["RootCert"].as_str().unwrap(),
        None,
        leaf_only,
    )
    .unwrap();
    openssl_verify(
        dir.path(),
        &roots_pem(&a).await,
        None,
        old_leaf["CertPEM"].as_str().unwrap(),
    )
    .unwrap();
    // The agent log never carries the PIN.
    assert!(!a.log().contains("1234"), "PIN in the log:\n{}", a.log());
}

/// `CSRMaxPerSecond` is a policy the server enforces with Consul's error text.
#[tokio::test]
async fn csr_rate_limit_answers_rate_limit_reached() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::dev("limit-node", dir.path());
    a.ready().await;
    wait_ca(&a).await;
    let slow = json!({"Provider": "consul", "Config": {"CSRMaxPerSecond": 1}});
    assert_eq!(
        a.put("/v1/connect/ca/configuration", slow.to_string())
            .await
            .0,
        200
    );
    // Ten different services at once: one signature per second, a wait of at most 500 ms.
    let http = crate::support::client();
    let calls = (0..10).map(|i| {
        let http = http.clone();
        let url = a.url(&format!("/v1/agent/connect/ca/leaf/svc{i}"));
        tokio::spawn(async move {
            let r = http.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    });
    let mut limited = 0;
    let mut signed = 0;
    for c in calls.collect::<Vec<_>>() {
        let (status, text) = c.await.unwrap();
        match status {
            200 => signed += 1,
            429 => {
                assert!(
                    text.contains("Rate limit reached, try again later"),
                    "{text}"
                );
                limited += 1;
            }
            other => panic!("{other}: {text}"),
        }
    }
    assert!(
        signed >= 1 && limited >= 5,
        "signed {signed}, limited {limited}"
    );
}

/// With short lifetimes (Consul's test-only `SkipValidate`), a rotated-out root leaves the
/// bundle once twice the leaf TTL has passed, and not before.
#[tokio::test]
async fn rotated_out_root_is_pruned_after_twice_the_leaf_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::dev_with(
        "prune-node",
        dir.path(),
        &["--leaf-root-change-jitter", "0s"],
    );
    a.ready().await;
    let before = wait_ca(&a).await;
    let short = |ty: &str| {
        json!({"Provider": "consul", "Config": {
            "SkipValidate": true, "LeafCertTTL": "2s", "IntermediateCertTTL": "6s", "PrivateKeyType": ty,
            "PrivateKeyBits": if ty == "ec" { 256 } else { 2048 }
        }})
    };
    // First shorten the lifetimes (same key: no rotation), then rotate.
    assert_eq!(
        a.put("/v1/connect/ca/configuration", short("ec").to_string())
            .await
            .0,
        200
    );
    let (_, _, same) = a.get("/v1/connect/ca/roots").await;
    assert_eq!(same["ActiveRootID"], before["ActiveRootID"]);
    let (status, text) = a
        .put("/v1/connect/ca/configuration", short("rsa").to_string())
        .await;
    assert_eq!(status, 200, "{text}");
    let rotated_at = Instant::now();
    let (_, _, both) = a.get("/v1/connect/ca/roots").await;
    assert_eq!(
        both["Roots"].as_array().unwrap().len(),
        2,
        "both roots trusted right after the rotation"
    );
    let pruned = a
        .wait_for("/v1/connect/ca/roots", "old root pruned", |v| {
            v["Roots"].as_array().is_some_and(|r| r.len() == 1)
        })
        .await;
    assert!(
        rotated_at.elapsed() >= Duration::from_secs(3),
        "pruned too early: {:?}",
        rotated_at.elapsed()
    );
    assert_ne!(pruned["ActiveRootID"], before["ActiveRootID"]);
    assert_eq!(pruned["Roots"][0]["Active"], true);
}

/// A watcher whose re-issue hits the CSR rate limit waits and retries instead of failing.
#[tokio::test]
async fn leaf_watchers_back_off_from_the_rate_limit_and_retry() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::dev_with(
        "backoff-node",
        dir.path(),
        &["--leaf-root-change-jitter", "1s"],
    );
    a.ready().await;
    wait_ca(&a).await;
    let slow = |ty: &str| {
        json!({"Provider": "consul", "Config": {
            "CSRMaxPerSecond": 0.5, "PrivateKeyType": ty, "PrivateKeyBits": if ty == "ec" { 256 } else { 2048 }
        }})
    };
    assert_eq!(
        a.put("/v1/connect/ca/configuration", slow("ec").to_string())
            .await
            .0,
        200
    );
    let (_, index, first) = a.get("/v1/agent/connect/ca/leaf/web").await;
    let url = a.url(&format!(
        "/v1/agent/connect/ca/leaf/web?index={index}&wait=30s"
    ));
    let watcher = tokio::spawn(async move {
        let r = crate::support::client().get(url).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Rotate, then take the signing slots with first fetches of other services.
    assert_eq!(
        a.put("/v1/connect/ca/configuration", slow("rsa").to_string())
            .await
            .0,
        200
    );
    let mut limited = 0;
    for i in 0..6 {
        let (status, _, _) = a.get(&format!("/v1/agent/connect/ca/leaf/other{i}")).await;
        if status == 429 {
            limited += 1;
        }
    }
    assert!(limited > 0, "the limit never bit");
    let (status, text) = tokio::time::timeout(Duration::from_secs(40), watcher)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 200, "{text}");
    let renewed: Value = serde_json::from_str(&text).unwrap();
    assert_ne!(
        renewed["SerialNumber"], first["SerialNumber"],
        "the watcher got the new root's leaf"
    );
}
