//! The proxies' mutual TLS seen from outside and under change: an outside TLS client with and
//! without a leaf of the mesh's CA, an instance whose certificate names another service, a CA
//! root rotation and short-lived leafs renewed, the last two under a steady stream of requests.
//!
//! The outside client is Python's `ssl` module (`python3`); the foreign CA is made with the
//! `openssl` command.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{echo_app, echo_through, eventually, logs, metrics_until, register, sample, Proxy};
use crate::support::{client, free_port, Agent};

/// A TLS client: connects, verifies the server against `cafile` (no host name: mesh leafs
/// carry only a SPIFFE ID), presents `certfile`/`keyfile` when given, sends `msg` and reads
/// as many bytes back; prints what happened as JSON. Argument 7 caps the version (`1.2`).
const TLS_CLIENT: &str = r#"
import json, socket, ssl, sys
host, port, cafile, certfile, keyfile, msg, maxver = sys.argv[1:8]
out = {"handshake": False, "error": None, "received": "", "serial": None, "not_after": None}
try:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile)
    if maxver == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if certfile:
        ctx.load_cert_chain(certfile, keyfile)
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        with ctx.wrap_socket(raw) as s:
            out["handshake"] = True
            peer = s.getpeercert()
            out["serial"] = peer.get("serialNumber")
            out["not_after"] = ssl.cert_time_to_seconds(peer["notAfter"])
            data = msg.encode()
            if data:
                s.sendall(data)
                buf = b""
                while len(buf) < len(data):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
                out["received"] = buf.decode("utf-8", "replace")
except Exception as e:
    out["error"] = "%s: %s" % (type(e).__name__, e)
print(json.dumps(out))
"#;

/// What the outside client saw.
#[derive(Debug)]
struct Seen {
    /// The handshake completed on the client's side (in TLS 1.3 that is before the server
    /// has checked the client's certificate).
    handshake: bool,
    /// The first error, if any (a refusal by the server shows as an alert).
    error: Option<String>,
    /// The bytes read back.
    received: String,
    /// The server leaf's serial number, when the handshake completed.
    serial: Option<String>,
    /// The server leaf's notAfter, in Unix seconds, when the handshake completed.
    not_after: Option<u64>,
}

/// A directory of PEM files and the client script, apart from the logs.
struct Files(PathBuf);

impl Files {
    fn new(dir: &Path) -> Files {
        let d = dir.join("tls");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("client.py"), TLS_CLIENT).unwrap();
        Files(d)
    }

    /// Writes `content` to a fresh file and returns its path.
    fn write(&self, name: &str, content: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = self
            .0
            .join(format!("{}-{name}", N.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&p, content).unwrap();
        p
    }

    /// Runs the client against 127.0.0.1:`port`, trusting `ca` and presenting `leaf` (cert
    /// PEM, key PEM).
    async fn client(
        &self,
        port: u16,
        ca: &str,
        leaf: Option<&(String, String)>,
        tls12: bool,
        msg: &str,
    ) -> Seen {
        let ca = self.write("ca.pem", ca);
        let (cert, key) = match leaf {
            Some((cert, key)) => (
                self.write("cert.pem", cert).display().to_string(),
                self.write("key.pem", key).display().to_string(),
            ),
            None => (String::new(), String::new()),
        };
        let out = tokio::process::Command::new("python3")
            .arg(self.0.join("client.py"))
            .args(["127.0.0.1", &port.to_string()])
            .arg(&ca)
            .args([
                cert.as_str(),
                key.as_str(),
                msg,
                if tls12 { "1.2" } else { "" },
            ])
            .output()
            .await
            .expect("python3 runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Value = serde_json::from_str(text.trim()).unwrap_or_else(|_| {
            panic!(
                "the TLS client printed {text:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        Seen {
            handshake: v["handshake"].as_bool().unwrap_or(false),
            error: v["error"].as_str().map(str::to_string),
            received: v["received"].as_str().unwrap_or("").to_string(),
            serial: v["serial"].as_str().map(str::to_string),
            not_after: v["not_after"].as_u64(),
        }
    }

    async fn openssl(&self, args: &[&str]) {
        let out = tokio::process::Command::new("openssl")
            .current_dir(&self.0)
            .args(args)
            .output()
            .await
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A CA of our own making and a leaf it signed for `spiffe_id` (cert PEM, key PEM): a
    /// certificate that is right in every way but its issuer.
    async fn foreign_leaf(&self, spiffe_id: &str) -> (String, String) {
        std::fs::write(
            self.0.join("foreign.cnf"),
            format!(
                "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = Foreign CA\n\
                 [ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
                 subjectKeyIdentifier = hash\n\
                 [leaf]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n\
                 extendedKeyUsage = clientAuth,serverAuth\nsubjectAltName = URI:{spiffe_id}\n\
                 subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n"
            ),
        )
        .unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        self.openssl(
            &[
                &[
                    "req",
                    "-x509",
                    "-config",
                    "foreign.cnf",
                    "-extensions",
                    "ca",
                ][..],
                &ec,
                &["-keyout", "foreign-ca.key", "-out", "foreign-ca.pem"],
                &["-days", "1"],
            ]
            .concat(),
        )
        .await;
        self.openssl(
            &[
                &["req", "-new", "-config", "foreign.cnf", "-subj", "/CN=web"][..],
                &ec,
                &["-keyout", "foreign.key", "-out", "foreign.csr"],
            ]
            .concat(),
        )
        .await;
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            "foreign.csr",
            "-CA",
            "foreign-ca.pem",
            "-CAkey",
            "foreign-ca.key",
            "-set_serial",
            "7",
            "-days",
            "1",
            "-extfile",
            "foreign.cnf",
            "-extensions",
            "leaf",
            "-out",
            "foreign.pem",
        ])
        .await;
        // Sound under its own CA, so the only thing wrong with it is the CA.
        self.openssl(&["verify", "-CAfile", "foreign-ca.pem", "foreign.pem"])
            .await;
        (
            std::fs::read_to_string(self.0.join("foreign.pem")).unwrap(),
            std::fs::read_to_string(self.0.join("foreign.key")).unwrap(),
        )
    }
}

/// The CA roots once the CA is set up.
async fn wait_ca(a: &Agent) -> Value {
    a.wait_for("/v1/connect/ca/roots", "the CA", |v| {
        v["ActiveRootID"].as_str().is_some_and(|s| !s.is_empty())
    })
    .await
}

/// Every root, as PEM.
async fn roots_pem(a: &Agent) -> String {
    client()
        .get(a.url("/v1/connect/ca/roots?pem=true"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The active root's certificate.
fn active_root(roots: &Value) -> String {
    let active = roots["ActiveRootID"].as_str().unwrap();
    roots["Roots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ID"] == active)
        .and_then(|r| r["RootCert"].as_str())
        .unwrap_or_else(|| panic!("no active root in {roots}"))
        .to_string()
}

/// A leaf for `service` from the agent: (CertPEM, PrivateKeyPEM).
async fn leaf(a: &Agent, service: &str) -> (String, String) {
    let (status, _, v) = a.get(&format!("/v1/agent/connect/ca/leaf/{service}")).await;
    assert_eq!(status, 200, "{v}");
    (
        v["CertPEM"].as_str().unwrap().to_string(),
        v["PrivateKeyPEM"].as_str().unwrap().to_string(),
    )
}

async fn put_ca_config(a: &Agent, config: Value) {
    let (status, text) = a
        .put("/v1/connect/ca/configuration", config.to_string())
        .await;
    assert_eq!(status, 200, "{text}");
}

/// An echo server that records, per connection, every byte it received.
async fn recording_app() -> (u16, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let record = record.clone();
            let i = {
                let mut r = record.lock().unwrap();
                r.push(Vec::new());
                r.len() - 1
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    record.lock().unwrap()[i].extend_from_slice(&buf[..n]);
                    if s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, seen)
}

fn received(seen: &Mutex<Vec<Vec<u8>>>) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect()
}

/// Sequential echo requests through an upstream listener from a few workers, each a new
/// connection, until stopped; every reply is checked.
struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    workers: Vec<JoinHandle<()>>,
}

impl Traffic {
    fn start(upstream: u16, workers: usize) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let started = Instant::now();
        let workers = (0..workers)
            .map(|w| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let msg = format!("worker {w} request {n}");
                        let got = echo_through(upstream, msg.as_bytes()).await;
                        if got == msg.as_bytes() {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failures.lock().unwrap().push(format!(
                                "{msg} at {:?}: got {:?}",
                                started.elapsed(),
                                String::from_utf8_lossy(&got)
                            ));
                        }
                        // A steady stream, not a flood: the machine is shared.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            ok,
            failures,
            workers,
        }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits until `n` requests in all have succeeded.
    async fn wait_for(&self, n: u64, dir: &Path) {
        let ok = self.ok.clone();
        let failures = self.failures.clone();
        eventually(20, &format!("{n} requests through"), dir, move || {
            let (ok, failures) = (ok.clone(), failures.clone());
            async move {
                let f = failures.lock().unwrap();
                assert!(f.is_empty(), "requests failed: {f:#?}");
                ok.load(Ordering::Relaxed) >= n
            }
        })
        .await;
    }

    /// Stops the workers; the successes and the failures.
    async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.unwrap();
        }
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

/// `db` (an echo app behind a sidecar) and `web` with `db` as an upstream; both proxies
/// running and bytes going through. Returns (db's public port, web's public port, web's
/// upstream port) and the proxies.
async fn db_and_web(a: &Agent, dir: &Path) -> ((u16, u16, u16), [Proxy; 2]) {
    let (app, web_app) = (echo_app().await, echo_app().await);
    let (db_public, web_public, upstream) = (free_port(), free_port(), free_port());
    register(
        a,
        json!({"Name": "db", "Port": app, "Connect": {"SidecarService": {"Port": db_public}}}),
    )
    .await;
    register(
        a,
        json!({"Name": "web", "Port": web_app, "Connect": {"SidecarService": {"Port": web_public,
            "Proxy": {"Upstreams": [{"DestinationName": "db", "LocalBindPort": upstream}]}}}}),
    )
    .await;
    let proxies = [
        Proxy::sidecar_for(a, "db", dir),
        Proxy::sidecar_for(a, "web", dir),
    ];
    eventually(20, "traffic through the proxies", dir, || async {
        echo_through(upstream, b"hello").await == b"hello"
    })
    .await;
    ((db_public, web_public, upstream), proxies)
}

/// The public listener is plain mutual TLS to anyone holding a leaf of the mesh's CA (here
/// Python's `ssl`, over TLS 1.3 and 1.2); a client without a certificate, or with one from
/// another CA naming a service of the mesh, is refused in the handshake and the application
/// never sees a connection.
#[tokio::test]
async fn outside_tls_clients_need_a_leaf_of_the_mesh_ca() {
    let dir = tempfile::tempdir().unwrap();
    let files = Files::new(dir.path());
    let mut a = Agent::dev("proxy-outside", dir.path());
    a.ready().await;
    let roots = wait_ca(&a).await;
    let (app, seen) = recording_app().await;
    let db_public = free_port();
    register(
        &a,
        json!({"Name": "db", "Port": app, "Connect": {"SidecarService": {"Port": db_public}}}),
    )
    .await;
    let metrics = free_port();
    let _db = Proxy::start(
        &a,
        "db",
        &[
            "-sidecar-for",
            "db",
            "--metrics-addr",
            &format!("127.0.0.1:{metrics}"),
        ],
        dir.path(),
    );

    let ca = roots_pem(&a).await;
    let outside = leaf(&a, "outside").await;
    let (ca, outside, files) = (ca.as_str(), &outside, &files);
    eventually(
        20,
        "the outside client through",
        dir.path(),
        || async move {
            files
                .client(db_public, ca, Some(outside), false, "ok: tls 1.3")
                .await
                .received
                == "ok: tls 1.3"
        },
    )
    .await;
    let seen12 = files
        .client(db_public, ca, Some(outside), true, "ok: tls 1.2")
        .await;
    assert_eq!(seen12.received, "ok: tls 1.2", "{seen12:?}");

    let trust_domain = roots["TrustDomain"].as_str().unwrap();
    let foreign = files
        .foreign_leaf(&format!(
            "spiffe://{trust_domain}/ns/default/dc/dc1/svc/web"
        ))
        .await;
    for (what, cert) in [("no certificate", None), ("a foreign CA", Some(&foreign))] {
        for tls12 in [false, true] {
            let refused = files
                .client(db_public, ca, cert, tls12, "refused: must not arrive")
                .await;
            let error = refused.error.clone().unwrap_or_default();
            assert!(
                refused.received.is_empty() && error.contains("ALERT"),
                "{what} (TLS 1.2 only: {tls12}): {refused:?}"
            );
            // In TLS 1.2 the client's Finished follows the server's verdict.
            if tls12 {
                assert!(!refused.handshake, "{what}: {refused:?}");
            }
        }
    }
    // A last good connection after the refused ones: the application saw only the good ones.
    let last = files
        .client(db_public, ca, Some(outside), false, "ok: last")
        .await;
    assert_eq!(last.received, "ok: last", "{last:?}");
    let got = received(&seen);
    assert!(
        got.iter().all(|m| m.starts_with("ok: ")) && got.iter().any(|m| m == "ok: last"),
        "the application saw {got:?}"
    );
    let log = std::fs::read_to_string(dir.path().join("proxy-db.log")).unwrap();
    assert!(
        log.contains("handshake failed"),
        "the refusals are not in the log:\n{log}"
    );
    // Each refusal counted under its reason (once per TLS version, at least).
    let reason = |r: &str| {
        format!(r#"trellis_proxy_tls_handshake_failures_total{{direction="inbound",reason="{r}"}}"#)
    };
    let (none, foreign) = (reason("no_certificate"), reason("unknown_issuer"));
    let text = metrics_until(metrics, 10, "the refusals counted", dir.path(), |t| {
        sample(t, &none).unwrap_or(0.0) >= 2.0 && sample(t, &foreign).unwrap_or(0.0) >= 2.0
    })
    .await;
    assert_eq!(sample(&text, &reason("bad_identity")), Some(0.0), "{text}");
}

/// An instance of `db` whose public port is served by a proxy for another service: the
/// caller's proxy refuses the server's certificate (valid, same CA, wrong service), the
/// application behind it sees nothing, and the caller's log names both identities.
#[tokio::test]
async fn an_upstream_naming_another_service_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let files = Files::new(dir.path());
    let mut a = Agent::dev("proxy-impostor", dir.path());
    a.ready().await;
    wait_ca(&a).await;
    let (app, seen) = recording_app().await;
    let (impostor, web_public, upstream) = (free_port(), free_port(), free_port());
    let _impostor = Proxy::start(
        &a,
        "impostor",
        &[
            "-service",
            "impostor",
            "-listen",
            &format!("127.0.0.1:{impostor}"),
            "-service-addr",
            &format!("127.0.0.1:{app}"),
        ],
        dir.path(),
    );
    // The impostor is a working proxy: a client that checks only the CA gets through it.
    let ca = roots_pem(&a).await;
    let outside = leaf(&a, "outside").await;
    let (ca, outside, files) = (ca.as_str(), &outside, &files);
    eventually(20, "the impostor to serve", dir.path(), || async move {
        files
            .client(impostor, ca, Some(outside), false, "ok: to the impostor")
            .await
            .received
            == "ok: to the impostor"
    })
    .await;

    // `db`'s sidecar is registered at the impostor's port (where its listening check passes).
    register(
        &a,
        json!({"Name": "db", "Port": app, "Connect": {"SidecarService": {"Port": impostor}}}),
    )
    .await;
    register(
        &a,
        json!({"Name": "web", "Port": 8080, "Connect": {"SidecarService": {"Port": web_public,
            "Proxy": {"Upstreams": [{"DestinationName": "db", "LocalBindPort": upstream}]}}}}),
    )
    .await;
    let _web = Proxy::sidecar_for(&a, "web", dir.path());
    let web_log = dir.path().join("proxy-web.log");
    let web_log = web_log.as_path();
    eventually(20, "the web proxy to dial db", dir.path(), || async move {
        let got = echo_through(upstream, b"for db").await;
        assert!(
            got.is_empty(),
            "the impostor answered for db: {:?}",
            String::from_utf8_lossy(&got)
        );
        std::fs::read_to_string(web_log)
            .unwrap_or_default()
            .contains("peer certificate mismatch")
    })
    .await;
    let log = std::fs::read_to_string(web_log).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("peer certificate mismatch"))
        .unwrap();
    assert!(
        line.contains("got spiffe://") && line.contains("/svc/impostor, want spiffe://"),
        "{line}"
    );
    assert!(line.trim_end().ends_with("/svc/db"), "{line}");
    let got = received(&seen);
    assert!(
        got.iter().all(|m| m == "ok: to the impostor"),
        "the application saw {got:?}"
    );
}

/// A CA root rotation (a new key type) while requests flow through the proxies: the proxies
/// take the new roots, then leafs of the new root, and not one request fails.
#[tokio::test]
async fn a_root_rotation_under_traffic_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let files = Files::new(dir.path());
    let mut a = Agent::dev_with(
        "proxy-rotation",
        dir.path(),
        &["--leaf-root-change-jitter", "2s"],
    );
    a.ready().await;
    let before = wait_ca(&a).await;
    let ((db_public, web_public, upstream), _proxies) = db_and_web(&a, dir.path()).await;

    let traffic = Traffic::start(upstream, 2);
    traffic.wait_for(20, dir.path()).await;
    put_ca_config(
        &a,
        json!({"Provider": "consul", "Config": {"PrivateKeyType": "ec", "PrivateKeyBits": 384}}),
    )
    .await;
    let at_rotation = traffic.ok();
    let (_, _, after) = a.get("/v1/connect/ca/roots").await;
    assert_ne!(after["ActiveRootID"], before["ActiveRootID"], "{after}");
    let new_root = active_root(&after);

    // Each proxy's public listener ends up presenting a leaf that chains to the new root
    // alone (the client trusts nothing else).
    for (name, port) in [("db", db_public), ("web", web_public)] {
        let (a, files, new_root) = (&a, &files, new_root.as_str());
        eventually(
            15,
            &format!("{name}'s proxy to present a leaf of the new root"),
            dir.path(),
            || async move {
                let probe = leaf(a, "probe").await;
                files
                    .client(port, new_root, Some(&probe), false, "")
                    .await
                    .handshake
            },
        )
        .await;
    }
    let swapped = traffic.ok();
    traffic.wait_for(swapped + 20, dir.path()).await;
    let (ok, failures) = traffic.stop().await;
    assert!(failures.is_empty(), "requests failed: {failures:#?}");
    assert!(
        swapped - at_rotation >= 5,
        "only {} requests while the proxies changed over",
        swapped - at_rotation
    );
    eprintln!(
        "{ok} requests, {} while the proxies changed over",
        swapped - at_rotation
    );
}

/// Leafs that live 75 s, backdated a minute as every leaf is (so 15 s from issue, renewed
/// within 7.5 s): both proxies keep renewing while requests flow, and requests keep going
/// through after the leafs the proxies first presented have expired.
///
/// The CA refuses a `LeafCertTTL` under an hour unless Consul's test-only `SkipValidate` is
/// set; it is set here.
#[tokio::test]
async fn short_lived_leafs_renew_under_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let files = Files::new(dir.path());
    let mut a = Agent::dev("proxy-renewal", dir.path());
    a.ready().await;
    wait_ca(&a).await;
    put_ca_config(
        &a,
        json!({"Provider": "consul", "Config": {"LeafCertTTL": "75s", "SkipValidate": true}}),
    )
    .await;
    let ((db_public, web_public, upstream), _proxies) = db_and_web(&a, dir.path()).await;
    let traffic = Traffic::start(upstream, 2);
    let ca = roots_pem(&a).await;

    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    // Per public listener: the serials presented, and the first leaf's notAfter.
    let mut presented: HashMap<u16, (Vec<String>, u64)> = HashMap::new();
    let start = Instant::now();
    loop {
        for port in [db_public, web_public] {
            let probe = leaf(&a, "probe").await;
            let seen = files.client(port, &ca, Some(&probe), false, "").await;
            let (Some(serial), Some(not_after)) = (seen.serial, seen.not_after) else {
                panic!("no certificate from port {port}: {:?}", seen.error);
            };
            assert!(
                not_after < now() + 20,
                "the leaf lives until {not_after}, now is {}: not the short TTL",
                now()
            );
            let (serials, _) = presented
                .entry(port)
                .or_insert_with(|| (Vec::new(), not_after));
            if !serials.contains(&serial) {
                serials.push(serial);
            }
        }
        let renewed = presented.values().all(|(s, _)| s.len() >= 2);
        let first_expired = presented.values().all(|(_, first)| now() > first + 1);
        if renewed && first_expired {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "leafs presented: {presented:?}\n{}",
            logs(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (ok, failures) = traffic.stop().await;
    assert!(failures.is_empty(), "requests failed: {failures:#?}");
    assert!(ok >= 20, "only {ok} requests");
    eprintln!("{ok} requests; leafs presented: {presented:?}");
}
