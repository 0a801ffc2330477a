//! Integration tests for `ingest`: round trips through the engine and through OTLP/JSON, golden
//! payloads, and whole-request rejection.

mod dialects;
mod golden;
mod logs;
mod reject;
mod round_trip;
mod strategies;
