//! Engine integration tests: durability, sealing, recovery, pushdown.

mod store;
mod sessions;
