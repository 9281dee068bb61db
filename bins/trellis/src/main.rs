//! `trellis`: the agent, server and command-line client of the Trellis service mesh.

#![forbid(unsafe_code)]

mod acl;
mod cli;
mod common;
mod config;
mod intention;
mod proxy;
mod tls;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse_from(common::dash_aliases(std::env::args_os()));
    let runtime = match common::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Agent(args) => cli::run_agent(args).await,
            Command::Members(args) => cli::run_members(args).await,
            Command::Leave(args) => cli::run_leave(args).await,
            Command::Connect(cli::ConnectCommand::Ca(cmd)) => cli::run_ca(cmd).await,
            Command::Connect(cli::ConnectCommand::Proxy(args)) => proxy::run(*args).await,
            // These report their own errors: their exit codes are Consul's, per command.
            Command::Intention(cmd) => return Ok(intention::run(cmd).await),
            Command::Acl(cmd) => return Ok(acl::run(cmd).await),
            Command::Operator(cli::OperatorCommand::Raft(cmd)) => cli::run_raft(cmd).await,
            Command::Tls(cmd) => tls::run(cmd),
            Command::Version => {
                println!("Trellis v{}", env!("CARGO_PKG_VERSION"));
                Ok(())
            }
        }
        .map(|()| ExitCode::SUCCESS)
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
