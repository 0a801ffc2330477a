//! The edge of Sightline: command line, configuration, the OTLP gRPC and HTTP receivers, the
//! SQL and trace HTTP API, startup and graceful shutdown. The `sightline` binary is `main.rs`.
//!
//! Layering: `api` depends on `ingest` (OTLP decode and mapping) and `query` (SQL), both of which
//! depend on `engine` (storage). Only this crate knows about sockets, axum, tonic and clap.

pub mod auth;
pub mod cli;
pub mod compliance_command;
pub mod config;
pub mod config_file;
pub mod edge_error;
pub mod export_command;
pub mod http_api;
pub mod jaeger;
pub mod lake_files;
pub mod lake_log;
pub mod lake_shipper;
pub mod listener;
pub mod maintenance;
pub mod mcp;
pub mod metrics;
pub mod otlp;
pub mod otlp_grpc;
pub mod pg;
pub mod remote;
pub mod retention_command;
pub mod server;
pub mod sql_command;
pub mod tls;
pub mod trace_command;
pub mod web;

pub use config::ServerConfig;
pub use server::{RunningServer, start};
