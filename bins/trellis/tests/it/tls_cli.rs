//! `trellis tls ca create` and `trellis tls cert create` as real processes in a scratch
//! directory, their files checked with `openssl` as an operator would.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// What a run left behind.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn trellis(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("trellis runs");
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[track_caller]
fn assert_ok(run: &Run) {
    assert_eq!(run.code, 0, "{run:?}");
}

#[track_caller]
fn assert_fails(run: &Run, stderr_has: &str) {
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains(stderr_has), "{run:?}");
}

fn mode(dir: &Path, file: &str) -> u32 {
    std::fs::metadata(dir.join(file))
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

/// Checks `cert` chains to the CA and names exactly `sans` (as openssl prints them).
#[track_caller]
fn assert_cert(dir: &Path, ca: &str, cert: &str, sans: &str, eku: Option<&str>) {
    let verified = openssl(dir, &["verify", "-CAfile", ca, cert]);
    assert_eq!(verified.trim(), format!("{cert}: OK"));
    let ext = openssl(
        dir,
        &["x509", "-in", cert, "-noout", "-ext", "subjectAltName"],
    );
    assert_eq!(ext.lines().nth(1).map(str::trim), Some(sans), "{ext}");
    let ext = openssl(
        dir,
        &["x509", "-in", cert, "-noout", "-ext", "extendedKeyUsage"],
    );
    assert_eq!(ext.lines().nth(1).map(str::trim), eku, "{ext}");
    let key = cert.replace(".pem", "-key.pem");
    assert_eq!(mode(dir, &key), 0o600, "{key}");
    let text = std::fs::read_to_string(dir.join(&key)).unwrap();
    assert!(
        text.starts_with("-----BEGIN EC PRIVATE KEY-----\n"),
        "{text}"
    );
    // The key is the certificate's.
    let from_cert = openssl(dir, &["x509", "-in", cert, "-noout", "-pubkey"]);
    let from_key = openssl(dir, &["pkey", "-in", &key, "-pubout"]);
    assert_eq!(from_cert, from_key);
}

#[test]
fn tls_ca_and_certificates_as_consul_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();

    let run = trellis(dir, &["tls", "ca", "create"]);
    assert_ok(&run);
    assert_eq!(
        run.stdout,
        "==> Saved consul-agent-ca.pem\n==> Saved consul-agent-ca-key.pem\n"
    );
    assert_eq!(mode(dir, "consul-agent-ca-key.pem"), 0o600);
    let ca = openssl(
        dir,
        &[
            "x509",
            "-in",
            "consul-agent-ca.pem",
            "-noout",
            "-subject",
            "-ext",
            "basicConstraints,keyUsage",
        ],
    );
    assert!(ca.contains("subject=CN = Trellis Agent CA "), "{ca}");
    assert!(ca.contains("CA:TRUE"), "{ca}");
    assert!(
        ca.contains("Digital Signature, Certificate Sign, CRL Sign"),
        "{ca}"
    );

    // Never over an existing CA, and the error names the file.
    let before = std::fs::read(dir.join("consul-agent-ca.pem")).unwrap();
    assert_fails(
        &trellis(dir, &["tls", "ca", "create"]),
        "consul-agent-ca.pem already exists",
    );
    assert_eq!(
        std::fs::read(dir.join("consul-agent-ca.pem")).unwrap(),
        before
    );

    let server = [
        "tls", "cert", "create", "-server", "-dc", "dc1", "-node", "s1",
    ];
    for n in 0..2 {
        let run = trellis(dir, &server);
        assert_ok(&run);
        assert!(
            run.stdout.ends_with(&format!(
                "==> Using consul-agent-ca.pem and consul-agent-ca-key.pem\n\
                 ==> Saved dc1-server-consul-{n}.pem\n\
                 ==> Saved dc1-server-consul-{n}-key.pem\n"
            )),
            "{run:?}"
        );
        assert!(
            run.stdout.starts_with("==> WARNING: Server Certificates"),
            "{run:?}"
        );
        assert_cert(
            dir,
            "consul-agent-ca.pem",
            &format!("dc1-server-consul-{n}.pem"),
            "DNS:s1.server.dc1.consul, DNS:server.dc1.consul, DNS:localhost, IP Address:127.0.0.1",
            Some("TLS Web Server Authentication, TLS Web Client Authentication"),
        );
    }

    let run = trellis(dir, &["tls", "cert", "create", "-client"]);
    assert_ok(&run);
    assert!(
        run.stdout
            .ends_with("==> Saved dc1-client-consul-0-key.pem\n"),
        "{run:?}"
    );
    assert_cert(
        dir,
        "consul-agent-ca.pem",
        "dc1-client-consul-0.pem",
        "DNS:client.dc1.consul, DNS:localhost, IP Address:127.0.0.1",
        Some("TLS Web Client Authentication, TLS Web Server Authentication"),
    );

    let run = trellis(dir, &["tls", "cert", "create", "-cli"]);
    assert_ok(&run);
    assert!(
        run.stdout.ends_with("==> Saved dc1-cli-consul-0-key.pem\n"),
        "{run:?}"
    );
    assert_cert(
        dir,
        "consul-agent-ca.pem",
        "dc1-cli-consul-0.pem",
        "DNS:cli.dc1.consul, DNS:localhost",
        None,
    );

    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "consul-agent-ca-key.pem",
            "consul-agent-ca.pem",
            "dc1-cli-consul-0-key.pem",
            "dc1-cli-consul-0.pem",
            "dc1-client-consul-0-key.pem",
            "dc1-client-consul-0.pem",
            "dc1-server-consul-0-key.pem",
            "dc1-server-consul-0.pem",
            "dc1-server-consul-1-key.pem",
            "dc1-server-consul-1.pem",
        ]
    );
}

#[test]
fn tls_cli_usage_errors_and_a_missing_ca() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let which = "Please provide either -server, -client, or -cli";
    assert_fails(&trellis(dir, &["tls", "cert", "create"]), which);
    assert_fails(
        &trellis(dir, &["tls", "cert", "create", "-server", "-cli"]),
        which,
    );
    assert_fails(
        &trellis(dir, &["tls", "cert", "create", "-client", "-node", "n1"]),
        "-node requires -server",
    );
    assert_fails(
        &trellis(dir, &["tls", "cert", "create", "-client"]),
        "consul-agent-ca.pem",
    );
    assert_fails(
        &trellis(
            dir,
            &["tls", "cert", "create", "-client", "-domain", "mesh"],
        ),
        "mesh-agent-ca.pem",
    );

    // A CA for another domain, and a key that is not the CA's.
    assert_ok(&trellis(
        dir,
        &["tls", "ca", "create", "-domain", "mesh", "-days", "10"],
    ));
    std::fs::rename(dir.join("mesh-agent-ca-key.pem"), dir.join("k.pem")).unwrap();
    assert_ok(&trellis(dir, &["tls", "ca", "create", "-domain", "other"]));
    let run = trellis(
        dir,
        &[
            "tls",
            "cert",
            "create",
            "-client",
            "-ca",
            "mesh-agent-ca.pem",
            "-key",
            "other-agent-ca-key.pem",
        ],
    );
    assert_fails(&run, "does not match");
    let run = trellis(
        dir,
        &[
            "tls", "cert", "create", "-client", "-domain", "mesh", "-key", "k.pem",
        ],
    );
    assert_ok(&run);
    assert_cert(
        dir,
        "mesh-agent-ca.pem",
        "dc1-client-mesh-0.pem",
        "DNS:client.dc1.mesh, DNS:localhost, IP Address:127.0.0.1",
        Some("TLS Web Client Authentication, TLS Web Server Authentication"),
    );
}
