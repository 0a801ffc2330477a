//! Integration tests of the query crate: one binary, modules by topic. Every test builds the
//! fixture store of `fixture.rs` in its own temp dir.

mod agent_tables;
mod errors;
mod fixture;
mod formats;
mod guard;
mod id_joins;
mod limits;
mod monitoring;
mod monitoring_catalog;
mod monitoring_fixture;
mod pushdown;
mod sessions;
mod stored_agent_tables;
mod tables;
mod trace_search;
mod views;
