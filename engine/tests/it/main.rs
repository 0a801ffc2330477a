//! Engine integration tests: durability, sealing, recovery, pushdown.

mod chain;
mod content;
mod erase;
mod retention;
mod sessions;
mod store;
