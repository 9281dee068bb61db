//! What every Trellis binary shares: Consul's single-dash flags and the log set-up.

use std::ffi::OsString;

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
