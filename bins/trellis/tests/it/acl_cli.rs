//! `trellis acl ...` as a real process against a dev agent that enforces ACLs (default deny),
//! with the token given each way Consul's CLI takes one: `-token`, `-token-file`,
//! `CONSUL_HTTP_TOKEN` and `CONSUL_HTTP_TOKEN_FILE`.

use serde_json::Value;

use crate::support::Agent;

/// The initial management token of the agent under test.
const MANAGEMENT: &str = "6d1e3a4b-8c2f-4e5a-9b7d-0f1e2d3c4b5a";

/// What a `trellis` run left behind.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `trellis acl <args>` against `addr` with exactly the token variables in `env` set.
async fn acl(addr: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
        .arg("acl")
        .args(args)
        .env("CONSUL_HTTP_ADDR", addr)
        .env_remove("CONSUL_HTTP_TOKEN")
        .env_remove("CONSUL_HTTP_TOKEN_FILE")
        .envs(env.iter().copied())
        .output()
        .await
        .expect("trellis runs");
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

#[track_caller]
fn ok(run: &Run) -> &str {
    assert_eq!(run.code, 0, "{run:?}");
    &run.stdout
}

#[tokio::test]
async fn policies_and_tokens_through_the_cli_with_each_token_source() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("acl.hcl");
    std::fs::write(
        &config,
        format!(
            "acl {{\n  enabled = true\n  default_policy = \"deny\"\n  tokens {{\n    \
             initial_management = \"{MANAGEMENT}\"\n  }}\n}}\n"
        ),
    )
    .unwrap();
    let mut agent = Agent::dev_with(
        "acl-cli",
        dir.path(),
        &["--config-file", config.to_str().unwrap()],
    );
    agent.ready().await;
    let at = format!("127.0.0.1:{}", agent.http);

    // A policy from a rules file, with the management token as -token.
    let rules = dir.path().join("web.hcl");
    std::fs::write(
        &rules,
        "service_prefix \"web\" {\n  policy = \"write\"\n}\n",
    )
    .unwrap();
    let run = acl(
        &at,
        &[
            "policy",
            "create",
            "-name",
            "web-w",
            "-description",
            "web writes",
            &format!("-rules=@{}", rules.display()),
            "-token",
            MANAGEMENT,
        ],
        &[],
    )
    .await;
    let out = ok(&run);
    let policy_id = out
        .lines()
        .find_map(|l| l.strip_prefix("ID:           "))
        .expect("an ID line")
        .to_string();
    assert!(
        out.contains("Name:         web-w\nDescription:  web writes\nDatacenters:  \nRules:\nservice_prefix \"web\" {\n  policy = \"write\"\n}\n"),
        "{out}"
    );

    // A token linked to it by name, as JSON, with the token from CONSUL_HTTP_TOKEN.
    let run = acl(
        &at,
        &[
            "token",
            "create",
            "-description",
            "web",
            "-policy-name",
            "web-w",
            "-format",
            "json",
        ],
        &[("CONSUL_HTTP_TOKEN", MANAGEMENT)],
    )
    .await;
    let made: Value = serde_json::from_str(ok(&run)).expect("JSON");
    let accessor = made["AccessorID"].as_str().unwrap().to_string();
    let secret = made["SecretID"].as_str().unwrap().to_string();
    assert_eq!(made["Policies"][0]["ID"], policy_id.as_str(), "{made}");
    assert_eq!(made["Policies"][0]["Name"], "web-w");

    // Read back by a prefix of its AccessorID, with the token in a file (-token-file); the
    // flag wins over a wrong CONSUL_HTTP_TOKEN.
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{MANAGEMENT}\n")).unwrap();
    let run = acl(
        &at,
        &[
            "token",
            "read",
            "-id",
            &accessor[..8],
            "-token-file",
            token_file.to_str().unwrap(),
        ],
        &[("CONSUL_HTTP_TOKEN", "00000000-0000-0000-0000-00000000dead")],
    )
    .await;
    let out = ok(&run);
    for line in [
        format!("AccessorID:       {accessor}\n"),
        format!("SecretID:         {secret}\n"),
        "Description:      web\n".to_string(),
        "Local:            false\n".to_string(),
        format!("Policies:\n   {policy_id} - web-w\n"),
    ] {
        assert!(out.contains(&line), "{line:?} in\n{out}");
    }
    assert!(out.contains("Create Time:      20"), "{out}");

    // The new token reads itself (-self), the file named by CONSUL_HTTP_TOKEN_FILE holding it.
    let own_file = dir.path().join("own");
    std::fs::write(&own_file, &secret).unwrap();
    let run = acl(
        &at,
        &["token", "read", "-self"],
        &[("CONSUL_HTTP_TOKEN_FILE", own_file.to_str().unwrap())],
    )
    .await;
    assert!(
        ok(&run).contains(&format!("AccessorID:       {accessor}\n")),
        "{run:?}"
    );

    // Every token: the management token and the new one, blocks apart.
    let run = acl(&at, &["token", "list", "-token", MANAGEMENT], &[]).await;
    let out = ok(&run);
    assert!(
        out.contains(&format!("AccessorID:       {accessor}\n")),
        "{out}"
    );
    assert!(
        out.contains(&format!("SecretID:         {MANAGEMENT}\n")),
        "{out}"
    );
    assert!(out.contains("\n\nAccessorID:       "), "{out}");

    // The new token may not list tokens: Consul's message and exit code 1.
    let run = acl(&at, &["token", "list", "-token", &secret], &[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.starts_with(
            "Failed to retrieve the token list: Unexpected response code: 403 (Permission denied"
        ),
        "{run:?}"
    );

    // The agent's token.
    let run = acl(
        &at,
        &["set-agent-token", "-token", MANAGEMENT, "agent", &secret],
        &[],
    )
    .await;
    assert_eq!(ok(&run), "ACL token \"agent\" set successfully\n");

    // Delete by a prefix; then it is gone.
    let run = acl(
        &at,
        &["token", "delete", "-id", &accessor[..13]],
        &[("CONSUL_HTTP_TOKEN", MANAGEMENT)],
    )
    .await;
    assert_eq!(
        ok(&run),
        format!("Token \"{accessor}\" deleted successfully\n")
    );
    let run = acl(
        &at,
        &["token", "read", "-id", &accessor, "-token", MANAGEMENT],
        &[],
    )
    .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("ACL not found"), "{run:?}");

    // Without a token, the anonymous token may not list tokens.
    let run = acl(&at, &["token", "list"], &[]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("Permission denied"), "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");

    // A token file that is not there is an error before any request.
    let run = acl(
        &at,
        &[
            "policy",
            "list",
            "-token-file",
            dir.path().join("none").to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("Error loading token file"), "{run:?}");
    drop(agent);
}
