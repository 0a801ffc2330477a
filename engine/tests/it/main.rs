//! Engine integration tests: durability, sealing, recovery, pushdown.

mod sessions;
mod store;
