//! The agent tables `llm_calls`, `tool_calls`, `decisions`, `agent_runs` and `sessions` as
//! DataFusion tables: one span scan (with pushdown) below an [`AgentDeriveExec`] that runs the
//! engine's derivation ([`engine::agent`]), the one definition of the agent semantics.
//!
//! Pushdown. The derivation needs every span of a trace (and, for `sessions`, of a session),
//! so only filters that select whole traces reach the span scan:
//! - `trace_id` and `session_id` (`=`, `IN`, OR of equalities) are answered `Exact` and pushed
//!   into the scan as they are (every row's trace, or session, is read whole; the derivation
//!   joins spans only within a session);
//! - `conversation_id`, and `start_time` on `llm_calls`, `tool_calls` and `agent_runs`, are
//!   answered `Inexact`: at planning, the traces with a matching span are looked up (a scan of
//!   the `trace_id` column through the indexes), and the derivation reads those traces whole.
//!   DataFusion applies the filter again on the derived rows. When more than
//!   [`MAX_TRACE_LOOKUP`] traces match, the scan reads without the trace list (still right,
//!   since the filter is applied above).
//! - on a whole-store read of a stored table (not `sessions`), simple comparisons of a column
//!   with literals are answered `Inexact` and evaluated while the stored files are read
//!   (`stored_filter.rs`): the other columns are decoded only for the rows they keep.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use arrow::array::{RecordBatch, RecordBatchOptions};
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result as DfResult, internal_err};
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use engine::agent::{AgentTable, derive_agent_table, fold_session_parts};
use engine::schema::columns;
use engine::{Engine, ScanRequest, TraceId};
use futures::StreamExt as _;

use crate::error::engine_error;
use crate::pushdown::{PushColumn, is_exact, matches_nothing, scan_request};
use crate::scan::SpansScanExec;
use crate::stored_agent::{StoredAgentExec, read_schema};

/// An agent table's schema in SQL: the derivation's ([`AgentTable::schema`]) with its
/// top-level string columns as `Utf8View`, the form stored files are read in (no copy of each
/// value, and cheaper grouping on the low-cardinality ones: model, tool, verdict, ...).
pub(crate) fn table_schema(table: AgentTable) -> SchemaRef {
    engine::agent::with_string_views(&table.schema())
}

/// `batch` with each column cast to the type `schema` gives it (derived `Utf8` strings to
/// the tables' `Utf8View`); columns already of that type are kept as they are.
pub(crate) fn with_types_of(schema: &SchemaRef, batch: &RecordBatch) -> DfResult<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(array, field)| {
            if array.data_type() == field.data_type() {
                Ok(Arc::clone(array))
            } else {
                arrow::compute::cast(array, field.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &options,
    )?)
}

/// At most this many traces are looked up for an `Inexact` filter; above it the scan reads
/// without a trace list.
const MAX_TRACE_LOOKUP: usize = 20_000;

/// One agent table.
#[derive(Debug)]
pub(crate) struct AgentTableProvider {
    engine: Arc<Engine>,
    table: AgentTable,
}

impl AgentTableProvider {
    pub(crate) fn new(engine: Arc<Engine>, table: AgentTable) -> Self {
        AgentTableProvider { engine, table }
    }

    /// Columns whose filters select whole traces or sessions: pushed as they are.
    fn exact_column(&self, name: &str) -> Option<PushColumn> {
        match (self.table, name) {
            (AgentTable::Sessions, "session_id") => Some(PushColumn::SessionId),
            (AgentTable::Sessions, _) => None,
            (_, "trace_id") => Some(PushColumn::TraceId),
            (_, "session_id") => Some(PushColumn::SessionId),
            _ => None,
        }
    }

    /// The schema row filters of stored reads are checked against: the stored one, except
    /// for `sessions`, whose stored rows are parts folded later (no row filter).
    fn row_filter_column_types(&self) -> Option<SchemaRef> {
        (self.table != AgentTable::Sessions).then(|| read_schema(self.table))
    }

    /// Columns whose filters pick the traces to read, applied again above.
    fn lookup_column(&self, name: &str) -> Option<PushColumn> {
        match (self.table, name) {
            (AgentTable::Sessions, _) => None,
            (_, "conversation_id") => Some(PushColumn::ConversationId),
            (
                AgentTable::LlmCalls | AgentTable::ToolCalls | AgentTable::AgentRuns,
                "start_time",
            ) => Some(PushColumn::StartTime),
            _ => None,
        }
    }
}

#[async_trait]
impl TableProvider for AgentTableProvider {
    fn schema(&self) -> SchemaRef {
        table_schema(self.table)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|filter| {
                if is_exact(filter, &|name| self.exact_column(name)) {
                    TableProviderFilterPushDown::Exact
                } else if is_exact(filter, &|name| self.lookup_column(name))
                    || self
                        .row_filter_column_types()
                        .is_some_and(|schema| crate::stored_filter::pushable(filter, &schema))
                {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let exact_column = |name: &str| self.exact_column(name);
        let any_column = |name: &str| self.exact_column(name).or(self.lookup_column(name));
        let (exact, rest): (Vec<Expr>, Vec<Expr>) = filters
            .iter()
            .cloned()
            .partition(|filter| is_exact(filter, &exact_column));
        // The filters that pick traces by a lookup (the others DataFusion applies above; row
        // filters serve only whole-store reads).
        let lookup: Vec<Expr> = rest
            .into_iter()
            .filter(|filter| is_exact(filter, &|name| self.lookup_column(name)))
            .collect();
        let mut request = scan_request(&exact, &exact_column);
        let find = scan_request(filters, &any_column);
        let whole_store = find.trace_ids.is_none()
            && find.session_ids.is_none()
            && find.conversation_ids.is_none()
            && find.sessions_or_conversations.is_empty();
        if whole_store {
            // No filter picks traces: read the stored tables (time bounds skip segments).
            let partitions = state.config().target_partitions();
            return match self.table {
                AgentTable::Sessions => Ok(Arc::new(AgentDeriveExec::new(
                    Step::FoldSessions,
                    Arc::new(StoredAgentExec::new(
                        Arc::clone(&self.engine),
                        self.table,
                        None,
                        find.start_time,
                        None,
                        partitions,
                    )?),
                    projection.cloned(),
                )?)),
                _ => Ok(Arc::new(StoredAgentExec::new(
                    Arc::clone(&self.engine),
                    self.table,
                    projection.cloned(),
                    find.start_time,
                    crate::stored_filter::row_predicate(state, &read_schema(self.table), filters)?,
                    partitions,
                )?)),
            };
        }
        if !lookup.is_empty() && !matches_nothing(&request) {
            // The traces with a span matching every filter, the lookup ones included.
            let engine = Arc::clone(&self.engine);
            let traces = tokio::task::spawn_blocking(move || matching_traces(&engine, find))
                .await
                .map_err(|error| DataFusionError::External(Box::new(error)))??;
            if let Some(traces) = traces {
                request.trace_ids = Some(traces.into_iter().collect());
            }
        }
        // The traces' log records too: the derivation reads them as events of their spans.
        request.family = engine::RowFamily::All;
        let input = Arc::new(SpansScanExec::new(
            Arc::clone(&self.engine),
            request,
            self.table.input_columns(),
            None,
            state.config().target_partitions(),
        )?);
        Ok(Arc::new(AgentDeriveExec::new(
            Step::Derive(self.table),
            input,
            projection.cloned(),
        )?))
    }
}

/// The trace ids of the spans `request` matches, or `None` when there are more than
/// [`MAX_TRACE_LOOKUP`].
fn matching_traces(
    engine: &Engine,
    mut request: ScanRequest,
) -> DfResult<Option<BTreeSet<TraceId>>> {
    if matches_nothing(&request) {
        return Ok(Some(BTreeSet::new()));
    }
    request.projection = Some(vec![engine::schema::column_index(columns::TRACE_ID)]);
    let mut traces = BTreeSet::new();
    for unit in engine
        .plan_scan(&request)
        .map_err(engine_error)?
        .into_units()
    {
        for batch in unit.execute().map_err(engine_error)? {
            let batch = batch.map_err(engine_error)?;
            let ids = batch
                .column(0)
                .as_any()
                .downcast_ref::<arrow::array::StringArray>();
            let Some(ids) = ids else {
                return internal_err!("trace_id column is not Utf8");
            };
            for id in ids.iter().flatten() {
                match TraceId::from_hex(id) {
                    Ok(id) => traces.insert(id),
                    Err(_) => return internal_err!("stored trace_id {id:?} is not 32 hex digits"),
                };
            }
            if traces.len() > MAX_TRACE_LOOKUP {
                return Ok(None);
            }
        }
    }
    Ok(Some(traces))
}

/// What [`AgentDeriveExec`] computes from all the rows of its input.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step {
    /// The table's rows from span rows.
    Derive(AgentTable),
    /// `sessions` rows from session parts (read from the stored tables).
    FoldSessions,
}

impl Step {
    fn table(self) -> AgentTable {
        match self {
            Step::Derive(table) => table,
            Step::FoldSessions => AgentTable::Sessions,
        }
    }

    fn run(self, input: &[RecordBatch]) -> engine::Result<RecordBatch> {
        match self {
            Step::Derive(table) => derive_agent_table(table, input),
            Step::FoldSessions => fold_session_parts(input),
        }
    }
}

/// Derives an agent table from all the rows of its input (span rows, or session parts), as
/// one batch; the input is counted against the query's memory pool.
#[derive(Debug)]
pub(crate) struct AgentDeriveExec {
    step: Step,
    input: Arc<dyn ExecutionPlan>,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl AgentDeriveExec {
    pub(crate) fn new(
        step: Step,
        input: Arc<dyn ExecutionPlan>,
        projection: Option<Vec<usize>>,
    ) -> DfResult<Self> {
        let table = table_schema(step.table());
        let schema = match &projection {
            Some(indices) => Arc::new(table.project(indices)?),
            None => table,
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Ok(AgentDeriveExec {
            step,
            input,
            projection,
            schema,
            properties: Arc::new(properties),
        })
    }
}

impl DisplayAs for AgentDeriveExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.step {
            Step::Derive(table) => write!(f, "AgentDeriveExec: table={}", table.name()),
            Step::FoldSessions => write!(f, "SessionsFoldExec"),
        }
    }
}

impl ExecutionPlan for AgentDeriveExec {
    fn name(&self) -> &str {
        match self.step {
            Step::Derive(_) => "AgentDeriveExec",
            Step::FoldSessions => "SessionsFoldExec",
        }
    }

    fn apply_expressions(
        &self,
        _visit: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        match children.as_slice() {
            [input] => Ok(Arc::new(AgentDeriveExec::new(
                self.step,
                Arc::clone(input),
                self.projection.clone(),
            )?)),
            _ => internal_err!("{} takes one input", self.name()),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("{} has one partition, asked for {partition}", self.name());
        }
        let partitions = self.input.properties().partitioning.partition_count();
        let inputs = (0..partitions)
            .map(|partition| self.input.execute(partition, Arc::clone(&context)))
            .collect::<DfResult<Vec<_>>>()?;
        let step = self.step;
        let projection = self.projection.clone();
        let schema = Arc::clone(&self.schema);
        let reservation = MemoryConsumer::new(format!("{}[{}]", self.name(), step.table().name()))
            .register(context.memory_pool());
        let output = async move {
            let mut batches: Vec<RecordBatch> = Vec::new();
            let mut merged = futures::stream::select_all(inputs);
            while let Some(batch) = merged.next().await {
                let batch = batch?;
                // The step holds every input row: count it against the query's budget.
                reservation.try_grow(batch.get_array_memory_size())?;
                batches.push(batch);
            }
            let derived =
                tokio::task::spawn_blocking(move || step.run(&batches).map_err(engine_error))
                    .await
                    .map_err(|error| DataFusionError::External(Box::new(error)))??;
            drop(reservation);
            let derived = match projection {
                Some(indices) => derived.project(&indices)?,
                None => derived,
            };
            with_types_of(&schema, &derived)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            futures::stream::once(output),
        )))
    }
}
