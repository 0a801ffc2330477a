//! Engine integration tests: durability, sealing, recovery, pushdown.

mod chain;
mod compaction;
mod content;
mod erase;
mod faults;
mod purge;
mod retention;
mod sessions;
mod store;
mod wal;
