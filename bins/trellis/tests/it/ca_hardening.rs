//! The CA's attack surface through real agents, as an attack pass found it: a CA configuration cannot make the
//! agent load a shared library the operator did not allow, a bad operator-supplied CA key or
//! root is the caller's error (400) and changes nothing, and no leaf is issued for the
//! intentions wildcard `*`.

use std::process::Command;

use serde_json::{json, Value};

use crate::support::{client, Agent};

include!("../../../../crates/ca/src/tests/marker_library.rs");

fn pkcs11_config(module: &str) -> Value {
    json!({"Provider": "pkcs11", "Config": {
        "ModulePath": module, "TokenLabel": "t", "Pin": "1234", "KeyLabel": "k"
    }})
}

/// The CA configuration and roots as the API shows them: what a refused request must not
/// change.
async fn ca_snapshot(a: &Agent) -> (Value, Value) {
    let (_, _, config) = a.get("/v1/connect/ca/configuration").await;
    let (_, _, roots) = a.get("/v1/connect/ca/roots").await;
    (config, roots)
}

async fn ready_ca(a: &mut Agent) -> (Value, Value) {
    a.ready().await;
    a.wait_for("/v1/connect/ca/roots", "CA initialised", |v| {
        v["ActiveRootID"].as_str().is_some_and(|s| !s.is_empty())
    })
    .await;
    ca_snapshot(a).await
}

/// POSTs a CA configuration to the server port's CA config RPC (what client agents and
/// followers use), returning (status, body).
async fn put_via_rpc(a: &Agent, body: &Value) -> (u16, String) {
    let r = client()
        .post(format!(
            "http://127.0.0.1:{}/v1/internal/ca/config",
            a.server
        ))
        .json(body)
        .send()
        .await
        .expect("server port answers");
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Issue 13 item 1: `ModulePath` naming any shared library made the agent `dlopen` it. Now a
/// module path comes only from the agent's own configuration: a request naming another is a
/// 400, the library is never loaded (its constructor never runs) and the CA is unchanged.
#[tokio::test]
async fn a_ca_configuration_cannot_load_a_library_off_the_allow_list() {
    let dir = tempfile::tempdir().unwrap();
    let (lib, marker) = marker_library(dir.path());
    let lib_path = lib.display().to_string();
    let attack = pkcs11_config(&lib_path);

    // A default agent allows no module at all.
    let mut a = Agent::dev("hsm-attack", dir.path());
    let before = ready_ca(&mut a).await;
    let (status, text) = a
        .put("/v1/connect/ca/configuration", attack.to_string())
        .await;
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("is not an allowed PKCS#11 module") && text.contains(&lib_path),
        "the refusal names the problem: {text}"
    );
    assert!(!text.contains("1234"), "the PIN is never shown: {text}");
    assert!(!marker.exists(), "the agent loaded the library via the API");
    // The server port's CA config RPC is refused the same way.
    let (status, text) = put_via_rpc(&a, &attack).await;
    assert!((400..500).contains(&status), "{status}: {text}");
    if status == 400 {
        assert!(text.contains("is not an allowed PKCS#11 module"), "{text}");
    }
    assert!(!marker.exists(), "the agent loaded the library via the RPC");
    assert_eq!(ca_snapshot(&a).await, before, "the CA changed");
    assert_eq!(a.get("/v1/agent/connect/ca/leaf/web").await.0, 200);
    drop(a);

    // An agent whose operator allows modules: only the exact path strings listed, from the
    // flag and from the config file's `connect { pkcs11_modules }`.
    let cfg = dir.path().join("hsm.hcl");
    std::fs::write(
        &cfg,
        format!("connect {{\n  pkcs11_modules = [{lib_path:?}]\n}}\n"),
    )
    .unwrap();
    let cfg_path = cfg.display().to_string();
    let mut b = Agent::dev_with(
        "hsm-allowed",
        dir.path(),
        &[
            "-pkcs11-module",
            "/usr/lib/softhsm/libsofthsm2.so",
            "-config-file",
            &cfg_path,
        ],
    );
    let before = ready_ca(&mut b).await;
    let same_file_other_name = format!("{}/./marker.so", dir.path().display());
    for module in [
        same_file_other_name.as_str(),
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
    ] {
        let (status, text) = b
            .put(
                "/v1/connect/ca/configuration",
                pkcs11_config(module).to_string(),
            )
            .await;
        assert_eq!(status, 400, "{module}: {text}");
        assert!(
            text.contains("is not an allowed PKCS#11 module"),
            "{module}: {text}"
        );
        assert!(!marker.exists(), "{module}: the agent loaded the library");
    }
    assert_eq!(ca_snapshot(&b).await, before, "the CA changed");

    // The control: the listed path is loaded (so the marker does detect a load), and being
    // no PKCS#11 module it is refused with a 400 that says so; the CA is still unchanged.
    let (status, text) = b
        .put("/v1/connect/ca/configuration", attack.to_string())
        .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("cannot load the PKCS#11 module"), "{text}");
    assert!(marker.exists(), "the allowed library was not loaded");
    assert_eq!(ca_snapshot(&b).await, before, "the CA changed");
}

/// Issue 13 item 5: a garbage operator-supplied `PrivateKey`/`RootCert` answered 500. It is
/// the request's fault: a 400 naming the problem, and nothing changes.
#[tokio::test]
async fn a_bad_ca_key_or_root_pem_is_a_400_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::dev("bad-pem", dir.path());
    let before = ready_ca(&mut a).await;
    let key = {
        let out = Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let root = before.1["Roots"][0]["RootCert"]
        .as_str()
        .unwrap()
        .to_string();
    let garbage_cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    for (k, r, needle) in [
        ("garbage", "garbage", "RootCert"),
        (key.as_str(), "not a pem", "RootCert"),
        (key.as_str(), garbage_cert, "RootCert"),
        (key.as_str(), key.as_str(), "RootCert"),
        ("garbage", root.as_str(), "private key"),
    ] {
        let body = json!({"Provider": "consul", "Config": {"PrivateKey": k, "RootCert": r}});
        let (status, text) = a
            .put("/v1/connect/ca/configuration", body.to_string())
            .await;
        assert_eq!(status, 400, "{needle}: {text}");
        assert!(text.contains(needle), "{needle:?} not in {text:?}");
        assert!(!text.contains("-----BEGIN"), "no key material: {text}");
    }
    assert_eq!(ca_snapshot(&a).await, before, "the CA changed");
}

/// Issue 13 item 5: `GET /v1/agent/connect/ca/leaf/*` signed `.../svc/*`, the intentions
/// wildcard. The agent refuses it with a 400, and so does the CA for a CSR asking for it.
#[tokio::test]
async fn no_leaf_is_issued_for_the_wildcard_service() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::dev("wild-leaf", dir.path());
    let (_, roots) = ready_ca(&mut a).await;
    for path in [
        "/v1/agent/connect/ca/leaf/*",
        "/v1/agent/connect/ca/leaf/%2A",
    ] {
        let (status, _, body) = a.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body.as_str()
                .is_some_and(|t| t.contains("intentions wildcard")),
            "{path}: {body}"
        );
    }
    // An ordinary name is still served.
    let (status, _, leaf) = a.get("/v1/agent/connect/ca/leaf/web").await;
    assert_eq!(status, 200, "{leaf}");

    // The CA itself: a CSR for svc/* sent straight to the server port's sign RPC.
    let td = roots["TrustDomain"].as_str().unwrap();
    let key = dir.path().join("k.pem");
    let out = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/",
            "-keyout",
        ])
        .arg(&key)
        .arg("-addext")
        .arg(format!(
            "subjectAltName=URI:spiffe://{td}/ns/default/dc/dc1/svc/*"
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csr = String::from_utf8(out.stdout).unwrap();
    let r = client()
        .post(format!("http://127.0.0.1:{}/v1/internal/ca/sign", a.server))
        .json(&json!({"csr": csr}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert!((400..500).contains(&status), "{status}: {text}");
    if status == 400 {
        assert!(text.contains("wildcard"), "{text}");
    }
}
