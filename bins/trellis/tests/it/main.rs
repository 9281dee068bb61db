//! Integration tests: real `trellis` processes on free loopback ports, driven over HTTP.

mod acl;
mod acl_cli;
mod api;
mod auto_encrypt;
mod blocking;
mod ca_hardening;
mod cache;
mod cluster;
mod connect_ca;
mod corrupt_raft_db;
mod intentions_api;
mod intentions_cli;
mod limits;
mod proxy;
mod raft_cluster;
mod rpc_tls;
mod support;
mod tls_cli;
mod watch_memory;
