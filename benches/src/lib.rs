//! Sightline benchmarks.
//!
//! - `src/bin/loadgen/`: the end-to-end load generator. It replays seeded agent traces from
//!   `testdata` against a running server over OTLP/gRPC, OTLP/HTTP protobuf or OTLP/HTTP JSON,
//!   or runs the bare protobuf decode loop that bounds what any OTLP receiver can reach on the
//!   machine. See `BENCHMARKS.md` for the commands and the recorded figures.
//! - Criterion benches (`benches/*.rs`, one file per area) come once the ingest and query APIs
//!   settle.
