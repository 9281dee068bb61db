//! `trellis-proxy`: the sidecar proxy on its own, for hosts and containers that run only a
//! proxy. Its flags are those of `trellis connect proxy`; being only the proxy, it maps a
//! fraction of the full binary's code, which is most of a proxy's resident memory at rest.

#![forbid(unsafe_code)]

#[path = "../common.rs"]
mod common;
#[path = "../proxy.rs"]
mod proxy;

use std::process::ExitCode;

use clap::Parser;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The Trellis sidecar proxy (the flags of `trellis connect proxy`).
#[derive(Parser, Debug)]
#[command(name = "trellis-proxy", version, about)]
struct Cli {
    #[command(flatten)]
    args: proxy::ProxyArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(common::dash_aliases(std::env::args_os()));
    let runtime = match common::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(proxy::run(cli.args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
