//! Integration tests of the benches crate (one binary, as everywhere in the workspace).

mod loadgen;
mod retrybench;
