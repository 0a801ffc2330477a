//! The agent tables — `llm_calls`, `tool_calls`, `decisions`, `agent_runs`, `sessions` —
//! derived from span rows in one place.
//!
//! [`derive_agent_table`] takes span batches (any projection holding
//! [`AgentTable::input_columns`]) and returns the table's rows. The semantics are those of
//! docs/sql.md and docs/conventions.md; this module is the only definition of them.
//!
//! Invariants:
//! - **Counted once.** Copies of one span (same trace id, span id, start, end and attributes,
//!   as a re-sent export produces) are one logical span in every table; the raw span rows keep
//!   every copy.
//! - **One decision, one row.** The attribute form and the event form of a decision on one span
//!   are one row (the rule is in `decisions.rs` and docs/conventions.md §6).
//! - **Per trace.** Every row of `llm_calls`, `tool_calls`, `decisions` and `agent_runs` depends
//!   only on the spans of its own trace, so deriving from a trace-complete subset of spans (all
//!   spans of some traces) gives exactly those traces' rows. `sessions` rows depend on every
//!   trace of the session.

mod decisions;
mod output;
mod spans;
mod stored;
mod trace;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::error::Result;
use crate::schema::column_index;

pub use output::{
    agent_table_schema, fold_session_parts, merge_session_parts, session_parts_schema,
};
pub use stored::{
    KeepRows, RowPredicate, SidecarFile, Strings, derive_stored, read_sidecar, stored_schema,
    with_string_views,
};
pub(crate) use stored::{SIDECAR_VERSION, sidecar_path, sidecar_paths, write_sidecars};

/// One of the derived agent tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentTable {
    /// One row per model-call span.
    LlmCalls,
    /// One row per tool execution, with attempts and retries.
    ToolCalls,
    /// One row per decision.
    Decisions,
    /// One row per top-level agent run.
    AgentRuns,
    /// One row per session.
    Sessions,
}

impl AgentTable {
    /// Every agent table, in the order a table may build on the ones before it.
    pub const ALL: [AgentTable; 5] = [
        AgentTable::LlmCalls,
        AgentTable::ToolCalls,
        AgentTable::Decisions,
        AgentTable::AgentRuns,
        AgentTable::Sessions,
    ];

    /// This table's place in [`AgentTable::ALL`].
    pub fn position(self) -> usize {
        match self {
            AgentTable::LlmCalls => 0,
            AgentTable::ToolCalls => 1,
            AgentTable::Decisions => 2,
            AgentTable::AgentRuns => 3,
            AgentTable::Sessions => 4,
        }
    }

    /// The SQL name.
    pub fn name(self) -> &'static str {
        match self {
            AgentTable::LlmCalls => "llm_calls",
            AgentTable::ToolCalls => "tool_calls",
            AgentTable::Decisions => "decisions",
            AgentTable::AgentRuns => "agent_runs",
            AgentTable::Sessions => "sessions",
        }
    }

    /// The table's Arrow schema.
    pub fn schema(self) -> SchemaRef {
        agent_table_schema(self)
    }

    /// Whether the derivation reads the span events (decisions and approvals live there;
    /// model and tool calls need none).
    pub fn reads_events(self) -> bool {
        !matches!(self, AgentTable::LlmCalls | AgentTable::ToolCalls)
    }

    /// The span-schema indices of the columns the derivation reads, ascending.
    pub fn input_columns(self) -> Vec<usize> {
        spans::INPUT_COLUMNS
            .iter()
            .filter(|name| self.reads_events() || **name != crate::schema::columns::EVENTS)
            .map(|name| column_index(name))
            .collect()
    }
}

/// Derives `table` from `spans`, which must hold every span of each trace they hold (and, for
/// `sessions`, every trace of each session). Rows come out trace by trace in order of first
/// appearance (sessions by first appearance too).
pub fn derive_agent_table(table: AgentTable, spans: &[RecordBatch]) -> Result<RecordBatch> {
    let rows = spans::SpanRows::new(spans, table.reads_events())?;
    output::build(table, &rows)
}
