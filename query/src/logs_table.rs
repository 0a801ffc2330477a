//! `logs`: one row per stored OTLP log record (the engine's log rows, see
//! `engine::schema::columns::LOG`), and the `evaluations` view over it.
//!
//! The table is a projection of the engine's log rows: `time` is the row's `start_time`, the
//! log fields come out of the `log` struct, and the all-zero ids a record without a trace or
//! span is stored with read as NULL. Filters on `time`, `trace_id`, `service_name`,
//! `session_id` and `conversation_id` push down exactly as on `spans` (session and
//! conversation resolved from the trace).

use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, Result as DfResult, internal_err, plan_err};
use datafusion::execution::SessionState;
use datafusion::functions::core::expr_fn::{get_field, nullif};
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::{
    Expr, ExprSchemable, TableProviderFilterPushDown, TableType, col, lit,
};
use datafusion::logical_expr::{LogicalPlanBuilder, and};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;
use engine::schema::{column_index, columns};
use engine::{Engine, RowFamily, TraceId, span_schema};

use crate::pushdown::{PushColumn, pushdown_support, scan_request};
use crate::scan::SpansScanExec;

/// Name of the log table.
pub(crate) const LOGS: &str = "logs";
/// Name of the evaluation view.
pub(crate) const EVALUATIONS: &str = "evaluations";

const NO_TRACE: &str = "00000000000000000000000000000000";
const NO_SPAN: &str = "0000000000000000";

/// Where a `logs` column comes from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// A span-schema column as is.
    Column(&'static str),
    /// A span-schema id column, NULL when all zeros.
    Id(&'static str, &'static str),
    /// A field of the `log` struct.
    Log(&'static str),
}

/// The columns of `logs`, in order.
const LOG_COLUMNS: [(&str, Source); 20] = [
    ("time", Source::Column(columns::START_TIME)),
    ("observed_time", Source::Log(columns::log::OBSERVED_TIME)),
    ("trace_id", Source::Id(columns::TRACE_ID, NO_TRACE)),
    ("span_id", Source::Id(columns::SPAN_ID, NO_SPAN)),
    ("flags", Source::Column(columns::FLAGS)),
    (
        "severity_number",
        Source::Log(columns::log::SEVERITY_NUMBER),
    ),
    ("severity_text", Source::Log(columns::log::SEVERITY_TEXT)),
    ("event_name", Source::Log(columns::log::EVENT_NAME)),
    ("body", Source::Log(columns::log::BODY)),
    ("attributes", Source::Column(columns::ATTRIBUTES)),
    (
        "dropped_attributes_count",
        Source::Column(columns::DROPPED_ATTRIBUTES_COUNT),
    ),
    ("service_name", Source::Column(columns::SERVICE_NAME)),
    ("session_id", Source::Column(columns::SESSION_ID)),
    ("conversation_id", Source::Column(columns::CONVERSATION_ID)),
    ("user_id", Source::Column(columns::USER_ID)),
    ("retention_tier", Source::Column(columns::RETENTION_TIER)),
    (
        "resource_attributes",
        Source::Column(columns::RESOURCE_ATTRIBUTES),
    ),
    ("scope_name", Source::Column(columns::SCOPE_NAME)),
    ("scope_version", Source::Column(columns::SCOPE_VERSION)),
    (
        "scope_attributes",
        Source::Column(columns::SCOPE_ATTRIBUTES),
    ),
];

impl Source {
    /// The span-schema column it reads.
    fn column(self) -> &'static str {
        match self {
            Source::Column(name) | Source::Id(name, _) => name,
            Source::Log(_) => columns::LOG,
        }
    }

    /// Its expression over the scan's columns, named `name`.
    fn expr(self, name: &str) -> Expr {
        match self {
            Source::Column(column) => col(column),
            Source::Id(column, zero) => nullif(col(column), lit(zero)),
            Source::Log(field) => get_field(col(columns::LOG), field),
        }
        .alias(name)
    }
}

fn resolve_log_column(name: &str) -> Option<PushColumn> {
    match name {
        "time" => Some(PushColumn::StartTime),
        "trace_id" => Some(PushColumn::TraceId),
        "service_name" => Some(PushColumn::ServiceName),
        "session_id" => Some(PushColumn::SessionId),
        "conversation_id" => Some(PushColumn::ConversationId),
        _ => None,
    }
}

/// `logs`.
#[derive(Debug)]
pub(crate) struct LogsTable {
    engine: Arc<Engine>,
    schema: SchemaRef,
}

/// The span-schema columns `outputs` read, in first-use order.
fn source_columns(outputs: &[usize]) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    for index in outputs {
        let column = column_index(LOG_COLUMNS[*index].1.column());
        if !out.contains(&column) {
            out.push(column);
        }
    }
    out
}

/// The DataFusion schema of a scan of `columns`.
fn scan_schema(columns: &[usize]) -> DfResult<DFSchema> {
    DFSchema::try_from(span_schema().project(columns)?)
}

impl LogsTable {
    pub(crate) fn new(engine: Arc<Engine>) -> DfResult<Self> {
        let all: Vec<usize> = (0..LOG_COLUMNS.len()).collect();
        let input = scan_schema(&source_columns(&all))?;
        let mut fields = Vec::with_capacity(LOG_COLUMNS.len());
        for (name, source) in LOG_COLUMNS {
            let (_, field) = source.expr(name).to_field(&input)?;
            fields.push(Field::new(
                name,
                field.data_type().clone(),
                field.is_nullable(),
            ));
        }
        Ok(LogsTable {
            engine,
            schema: Arc::new(Schema::new(fields)),
        })
    }
}

#[async_trait]
impl TableProvider for LogsTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(pushdown_support(filters, &resolve_log_column))
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let outputs: Vec<usize> = match projection {
            Some(indices) => indices.clone(),
            None => (0..LOG_COLUMNS.len()).collect(),
        };
        if let Some(index) = outputs.iter().find(|index| **index >= LOG_COLUMNS.len()) {
            return plan_err!("logs has no column {index}");
        }
        let mut request = scan_request(filters, &resolve_log_column);
        request.family = RowFamily::Logs;
        // A record without a trace is stored under the all-zero id but reads NULL, which no
        // `trace_id = '0…0'` matches.
        if let Some(ids) = request.trace_ids.as_mut() {
            ids.retain(|id| *id != TraceId([0; 16]));
        }
        let columns = source_columns(&outputs);
        // Every filter DataFusion passes was answered Exact, so a limit it passes is safe.
        let scan: Arc<dyn ExecutionPlan> = Arc::new(SpansScanExec::new(
            Arc::clone(&self.engine),
            request,
            columns.clone(),
            limit,
            state.config().target_partitions(),
        )?);
        if outputs.is_empty() {
            return Ok(scan);
        }
        let input = scan_schema(&columns)?;
        let mut exprs = Vec::with_capacity(outputs.len());
        for index in outputs {
            let (name, source) = LOG_COLUMNS[index];
            let physical = state.create_physical_expr(source.expr(name), &input)?;
            exprs.push((physical, name.to_owned()));
        }
        Ok(Arc::new(ProjectionExec::try_new(exprs, scan)?))
    }
}

/// `evaluations`: one row per `gen_ai.evaluation.result` log record (copies of a resent record
/// once). A record without a span id is matched to the span of its trace (any trace, when it has
/// none) whose `gen_ai.response.id` it names. `explanation` is content: it reads as the content
/// reference ingest left (`sightline-content:v1:…`); the `content` table holds its text under the
/// key `logs.<time ns>.gen_ai.evaluation.result.gen_ai.evaluation.explanation`.
///
/// The records with a span id.
const EVALUATIONS_WITH_SPAN: &str = "\
SELECT time, trace_id, span_id, \
  attributes['gen_ai.evaluation.name'] AS name, \
  TRY_CAST(attributes['gen_ai.evaluation.score.value'] AS DOUBLE) AS score_value, \
  attributes['gen_ai.evaluation.score.label'] AS score_label, \
  attributes['gen_ai.evaluation.explanation'] AS explanation, \
  attributes['error.type'] AS error_type, \
  attributes['gen_ai.response.id'] AS response_id, \
  session_id, conversation_id, service_name \
FROM logs WHERE event_name = 'gen_ai.evaluation.result' AND span_id IS NOT NULL";

/// The records without one, matched by response id; `{traces}` narrows the spans read.
const EVALUATIONS_BY_RESPONSE: &str = "\
SELECT l.time, l.trace_id, s.span_id, \
  l.attributes['gen_ai.evaluation.name'], \
  TRY_CAST(l.attributes['gen_ai.evaluation.score.value'] AS DOUBLE), \
  l.attributes['gen_ai.evaluation.score.label'], \
  l.attributes['gen_ai.evaluation.explanation'], \
  l.attributes['error.type'], \
  l.attributes['gen_ai.response.id'], \
  l.session_id, l.conversation_id, l.service_name \
FROM logs l \
LEFT JOIN ( \
  SELECT DISTINCT trace_id, span_id, attributes['gen_ai.response.id'] AS response_id \
  FROM spans WHERE attributes['gen_ai.response.id'] IS NOT NULL{traces} \
) s ON s.response_id = l.attributes['gen_ai.response.id'] \
  AND (l.trace_id IS NULL OR s.trace_id = l.trace_id) \
WHERE l.event_name = 'gen_ai.evaluation.result' AND l.span_id IS NULL";

/// The traces of the records without a span id, when there are no more than this many.
const MAX_NARROWED_TRACES: usize = 1000;

/// The `evaluations` query: the records with a span id, and, unless `unmatched` says there are
/// none, those without, reading the spans of the traces it names (every span with a response
/// id when `None`: too many traces, or a record without a trace).
fn evaluations_sql(unmatched: Option<&[TraceId]>) -> String {
    let by_response = match unmatched {
        Some([]) => return format!("SELECT DISTINCT * FROM ({EVALUATIONS_WITH_SPAN})"),
        Some(traces) => {
            let list: Vec<String> = traces.iter().map(|trace| format!("'{trace}'")).collect();
            EVALUATIONS_BY_RESPONSE.replace(
                "{traces}",
                &format!(" AND trace_id IN ({})", list.join(", ")),
            )
        }
        None => EVALUATIONS_BY_RESPONSE.replace("{traces}", ""),
    };
    format!("SELECT DISTINCT * FROM ({EVALUATIONS_WITH_SPAN} UNION ALL {by_response})")
}

/// The traces of the evaluation records without a span id (`Some([])`: none), or `None` when
/// one has no trace or there are more than [`MAX_NARROWED_TRACES`].
async fn unmatched_evaluation_traces(state: &SessionState) -> DfResult<Option<Vec<TraceId>>> {
    let plan = state
        .create_logical_plan(
            "SELECT DISTINCT trace_id FROM logs \
             WHERE event_name = 'gen_ai.evaluation.result' AND span_id IS NULL",
        )
        .await?;
    let batches = datafusion::physical_plan::collect(
        state.create_physical_plan(&plan).await?,
        state.task_ctx(),
    )
    .await?;
    let mut traces = Vec::new();
    for batch in &batches {
        let Some(ids) = batch.column(0).as_string_opt::<i32>() else {
            return internal_err!("logs.trace_id is not Utf8");
        };
        for id in ids {
            // Stored ids are lowercase hex: anything else (or NULL) reads every span.
            match id.map(TraceId::from_hex) {
                Some(Ok(trace)) if traces.len() < MAX_NARROWED_TRACES => traces.push(trace),
                _ => return Ok(None),
            }
        }
    }
    Ok(Some(traces))
}
/// The `evaluations` view ([`evaluations_sql`]), planned when a query reads it, after one look
/// at which records need their span found by response id, so the spans read are those of their
/// traces only (or none). Filters on it are handed to the planned query, where they push down
/// into its scans; DataFusion applies them again above.
#[derive(Debug)]
pub(crate) struct EvaluationsView {
    definition: String,
    schema: SchemaRef,
}

impl EvaluationsView {
    pub(crate) fn new() -> Self {
        let text = |name: &str| Field::new(name, DataType::Utf8, true);
        EvaluationsView {
            definition: evaluations_sql(None),
            schema: Arc::new(Schema::new(vec![
                Field::new(
                    "time",
                    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                    false,
                ),
                text("trace_id"),
                text("span_id"),
                text("name"),
                Field::new("score_value", DataType::Float64, true),
                text("score_label"),
                text("explanation"),
                text("error_type"),
                text("response_id"),
                text("session_id"),
                text("conversation_id"),
                text("service_name"),
            ])),
        }
    }
}

#[async_trait]
impl TableProvider for EvaluationsView {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn get_table_definition(&self) -> Option<&str> {
        Some(&self.definition)
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let Some(state) = state.as_any().downcast_ref::<SessionState>() else {
            return internal_err!("a view needs a SessionState to plan its query");
        };
        let unmatched = unmatched_evaluation_traces(state).await?;
        let sql = evaluations_sql(unmatched.as_deref());
        let mut plan = LogicalPlanBuilder::from(state.create_logical_plan(&sql).await?);
        if let Some(filter) = filters.iter().cloned().map(unnormalize_col).reduce(and) {
            plan = plan.filter(filter)?;
        }
        if let Some(indices) = projection {
            plan = plan.project(
                indices
                    .iter()
                    .map(|index| col(self.schema.field(*index).name())),
            )?;
        }
        if let Some(limit) = limit {
            plan = plan.limit(0, Some(limit))?;
        }
        state.create_physical_plan(&plan.build()?).await
    }
}
