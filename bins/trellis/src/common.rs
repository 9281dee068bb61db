//! What every Trellis binary shares: Consul's single-dash flags and the log set-up.

use std::ffi::OsString;
use std::path::Path;

use anyhow::Context;

/// Rewrites Consul's single-dash long flags (`-dev`, `-http-port=1`) to `--` form, so both
/// spellings work. Single-letter flags (`-h`) and values are left alone.
pub fn dash_aliases(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            let Some(s) = a.to_str() else { return a };
            let name = s.strip_prefix('-').unwrap_or("");
            let flag = name.split('=').next().unwrap_or("");
            let is_long = i > 0
                && !name.starts_with('-')
                && flag.len() > 1
                && flag.starts_with(|c: char| c.is_ascii_lowercase())
                && flag
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if is_long {
                OsString::from(format!("-{s}"))
            } else {
                a
            }
        })
        .collect()
}

/// A secret given on the command line (an ACL token): its `Debug` form never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<hidden>")
    }
}

/// The ACL token a command sends, as Consul's CLI and API client find it: a token file (the
/// `-token-file` flag, else `CONSUL_HTTP_TOKEN_FILE`) wins when it holds a token; otherwise the
/// token (`-token`, else `CONSUL_HTTP_TOKEN`). `env` reads the environment. A file's token is its
/// content with surrounding whitespace trimmed; empty values and empty files count as not
/// given; a file that cannot be read is an error.
pub fn resolve_token(
    flag: Option<&Secret>,
    flag_file: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<String>> {
    let file = flag_file
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .or_else(|| {
            env("CONSUL_HTTP_TOKEN_FILE")
                .filter(|p| !p.is_empty())
                .map(std::path::PathBuf::from)
        });
    if let Some(path) = file {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("Error loading token file {}", path.display()))?;
        let t = text.trim();
        if !t.is_empty() {
            return Ok(Some(t.to_string()));
        }
    }
    Ok(flag
        .map(Secret::expose)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .or_else(|| env("CONSUL_HTTP_TOKEN").filter(|t| !t.is_empty())))
}

/// Logs to stderr at `level` (or `RUST_LOG`), as JSON lines when `json`.
pub(crate) fn init_logging(level: &str, json: bool) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| {
            tracing_subscriber::EnvFilter::try_new(format!(
                "{level},openraft=warn,hyper=warn,reqwest=warn"
            ))
        })
        .with_context(|| format!("invalid --log-level {level:?}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

/// The multi-threaded tokio runtime every binary runs on; on failure the error is printed and
/// the exit code to return is given.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, std::process::ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_wins_then_the_flag_then_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("flag-token");
        std::fs::write(&file, "  from-flag-file\n\n").unwrap();
        let env_file = dir.path().join("env-token");
        std::fs::write(&env_file, "from-env-file\n").unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").unwrap();
        let env_file_str = env_file.display().to_string();
        let all = |k: &str| match k {
            "CONSUL_HTTP_TOKEN" => Some("from-env".to_string()),
            "CONSUL_HTTP_TOKEN_FILE" => Some(env_file_str.clone()),
            _ => None,
        };
        let flag: Secret = "from-flag".parse().unwrap();
        let token = |f: Option<&Secret>, p: Option<&Path>, env: &dyn Fn(&str) -> Option<String>| {
            resolve_token(f, p, env).unwrap()
        };
        // A file (the flag's, else the environment's) wins, trimmed.
        assert_eq!(
            token(Some(&flag), Some(&file), &all).as_deref(),
            Some("from-flag-file")
        );
        assert_eq!(
            token(Some(&flag), None, &all).as_deref(),
            Some("from-env-file")
        );
        let no_env_file = |k: &str| all(k).filter(|_| k != "CONSUL_HTTP_TOKEN_FILE");
        assert_eq!(
            token(Some(&flag), None, &no_env_file).as_deref(),
            Some("from-flag")
        );
        assert_eq!(token(None, None, &no_env_file).as_deref(), Some("from-env"));
        assert_eq!(token(None, None, &|_: &str| None), None);
        // An empty file and empty values fall through to the next source.
        let blank: Secret = "".parse().unwrap();
        assert_eq!(
            token(Some(&blank), Some(&empty), &all).as_deref(),
            Some("from-env")
        );
        assert_eq!(
            token(Some(&flag), Some(&empty), &all).as_deref(),
            Some("from-flag")
        );
        let missing = dir.path().join("missing");
        let err = resolve_token(None, Some(&missing), |_: &str| None).unwrap_err();
        assert!(
            format!("{err:#}").contains("Error loading token file"),
            "{err:#}"
        );
        assert_eq!(format!("{flag:?}"), "<hidden>", "never shown");
    }
}
