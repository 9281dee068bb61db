//! Integration tests: real `trellis` processes on free loopback ports, driven over HTTP.

mod api;
mod blocking;
mod cache;
mod cluster;
mod connect_ca;
mod intentions_api;
mod intentions_cli;
mod proxy;
mod raft_cluster;
mod support;
