//! End-to-end tests of the sightline server and binary.

mod auth;
mod binary;
mod compliance;
mod content;
mod exporters;
mod http;
mod jaeger;
mod lake;
mod logs;
mod mcp;
mod pg;
mod retention;
mod support;
mod tls;
mod trace;
mod web;
