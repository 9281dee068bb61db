//! `trellis-bench`: benchmark drivers for Trellis.
//!
//! - `baseline`: a minimal hyper HTTP/1.1 server answering every GET with a fixed body and the
//!   same `X-Consul-*` header names Trellis sends; the yardstick for the hot-read scenario.
//! - `fanout`: parks N blocking queries on one service, makes one write, and measures how long
//!   the agent takes to answer all of them, and what each parked query costs in memory.
//! - `writes`: catalog registration throughput and latency at a given concurrency.
//! - `populate`: registers N services, each with a connect sidecar, for read benchmarks.
//! - `sign`: leaf signing through a server's signing RPC, per CPU-second of the server.
//! - `rotation`: a root rotation with N leafs on one agent: how the re-issue spreads over
//!   time, and leafs signed per second against the server's CSR limit.
//!
//! Every client command prints one JSON object on stdout; `rotation` prints a text report
//! first, its JSON object on the last line.

#![forbid(unsafe_code)]

mod baseline;
mod cachefill;
mod fanout;
mod http1;
mod rotation;
mod sign;
mod stats;
mod writes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Benchmark drivers for Trellis.
#[derive(Parser, Debug)]
#[command(name = "trellis-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The benchmark commands.
#[derive(Subcommand, Debug)]
enum Command {
    /// Serve a fixed JSON body with Consul's headers: the baseline for read latency.
    Baseline {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
        /// File whose bytes are every response's body.
        #[arg(long = "body-file")]
        body_file: PathBuf,
    },
    /// Park N blocking queries on a service, write once, time how long until all return.
    Fanout(fanout::FanoutArgs),
    /// Catalog registrations with a fixed number in flight.
    Writes(writes::WritesArgs),
    /// Register N services, each with a connect-proxy sidecar.
    Populate(writes::PopulateArgs),
    /// Leaf signing through the server's signing RPC, per server CPU-second.
    Sign(sign::SignArgs),
    /// Fill one agent with N Connect services and report its memory per service.
    Cachefill(cachefill::CachefillArgs),
    /// Rotate the root with N leafs watched on one agent; time the re-issue, check the limit.
    Rotation(rotation::RotationArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The baseline serves like Trellis does (multi-threaded runtime, one worker per core);
    // the clients run on one thread so they take as little CPU from the server as possible.
    let runtime = match &cli.command {
        Command::Baseline { .. } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Baseline { listen, body_file } => baseline::run(listen, &body_file).await,
            Command::Fanout(args) => fanout::run(args).await,
            Command::Writes(args) => writes::run_writes(args).await,
            Command::Populate(args) => writes::run_populate(args).await,
            Command::Sign(args) => sign::run(args).await,
            Command::Cachefill(args) => cachefill::run(args).await,
            Command::Rotation(args) => rotation::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
