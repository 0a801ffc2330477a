//! [`SqlEngine`]: the DataFusion session over the engine, with the guard and the per-query
//! bounds (memory, time, result rows).

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::execution::context::SessionState;
use datafusion::execution::disk_manager::DiskManager;
use datafusion::execution::memory_pool::{
    GreedyMemoryPool, MemoryConsumer, MemoryPool, TrackConsumersPool,
};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{FunctionRegistry, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::{SessionConfig, SessionContext};
use engine::{Engine, ScanMetricsSnapshot};
use futures::StreamExt;
use tracing::{debug, info};

use crate::agent_tables::AgentTableProvider;
use crate::error::{Error, Result};
use crate::guard;
use crate::options::Options;
use crate::pool::QueryPool;
use crate::scan::{SpansScanExec, add_metrics};
use crate::tables::{NestedKind, NestedTable, SPAN_EVENTS, SPAN_LINKS, SPANS, SpansTable};
use crate::{bounded_functions, complexity, spill};

/// Memory consumers named in a memory-limit error (3).
const REPORTED_CONSUMERS: NonZeroUsize = NonZeroUsize::MIN.saturating_add(2);

/// The result of one query: its schema, its batches and what its scans read.
#[derive(Debug, Clone)]
pub struct QueryOutput {
    /// Schema of the result.
    pub schema: SchemaRef,
    /// The rows, in result order (empty batches are dropped).
    pub batches: Vec<RecordBatch>,
    /// Engine counters of every table scan the query ran, summed (all zero for `EXPLAIN`
    /// without `ANALYZE`, which reads nothing).
    pub scan_metrics: ScanMetricsSnapshot,
    /// The query had more rows than the cap of [`SqlEngine::execute_capped`], which kept the
    /// first ones and stopped the query (always false for [`SqlEngine::execute`]).
    pub truncated: bool,
}

impl QueryOutput {
    /// A result from parts (scan metrics zero), e.g. to format rows from elsewhere.
    pub fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        QueryOutput {
            schema,
            batches,
            scan_metrics: ScanMetricsSnapshot::default(),
            truncated: false,
        }
    }

    /// Number of result rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Runs read-only SQL over an [`Engine`]: tables `spans`, `span_events` and `span_links`.
///
/// Cheap to share behind an `Arc`; queries run concurrently, each with its own memory budget.
pub struct SqlEngine {
    context: SessionContext,
    options: Options,
    pool: QueryPool,
    /// Where first runs "spill": nowhere.
    no_disk: Arc<DiskManager>,
    /// Where second runs spill (`spill`), shared so that `Options::spill_limit` bounds them
    /// together; `None` when spilling is off.
    spill: Option<Arc<DiskManager>>,
}

impl fmt::Debug for SqlEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlEngine")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl SqlEngine {
    /// Builds the session and registers the tables and the agent tables.
    pub fn new(engine: Arc<Engine>, options: Options) -> Result<Self> {
        let mut config = SessionConfig::new()
            .with_target_partitions(options.target_partitions.max(1))
            .with_information_schema(true);
        // Each sort sets this much aside to merge what it spilled: a sixteenth of a small
        // budget, so that several sorts of one query still fit in it.
        let execution = &mut config.options_mut().execution;
        execution.sort_spill_reservation_bytes = execution
            .sort_spill_reservation_bytes
            .min(options.memory_limit / 16);
        let no_disk = spill::no_disk()?;
        let spill = spill::disk_manager(&options)?;
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime_env(options.memory_limit, Arc::clone(&no_disk))?)
            .with_default_features()
            // No file formats for CREATE EXTERNAL TABLE, even if DDL got past the guard.
            .with_table_factories(Default::default())
            .with_physical_optimizer_rules(crate::join_sides::physical_rules())
            .build();
        let context = SessionContext::new_with_state(state);
        if let Ok(builtin) = FunctionRegistry::udf(&context.state(), "date_trunc") {
            context.register_udf(crate::utc_date_trunc::udf(&builtin));
        }
        if let Ok(builtin) = FunctionRegistry::udf(&context.state(), "coalesce") {
            context.register_udf(crate::coalesce_views::udf(&builtin));
        }
        // Every relation registered below, for the `pg_catalog` tables that list them.
        let mut relations = Vec::new();
        let tables: [(&str, Arc<dyn datafusion::catalog::TableProvider>); 3] = [
            (SPANS, Arc::new(SpansTable::new(Arc::clone(&engine)))),
            (
                SPAN_EVENTS,
                Arc::new(
                    NestedTable::new(Arc::clone(&engine), NestedKind::Events)
                        .map_err(Error::from_datafusion)?,
                ),
            ),
            (
                SPAN_LINKS,
                Arc::new(
                    NestedTable::new(Arc::clone(&engine), NestedKind::Links)
                        .map_err(Error::from_datafusion)?,
                ),
            ),
        ];
        for (name, table) in tables {
            relations.push((name.to_owned(), table.table_type()));
            context
                .register_table(name, table)
                .map_err(Error::from_datafusion)?;
        }
        let mut more: Vec<(&str, Arc<dyn datafusion::catalog::TableProvider>)> = vec![
            (
                crate::retention_table::RETENTION,
                Arc::new(crate::retention_table::RetentionTable::new(Arc::clone(
                    &engine,
                ))),
            ),
            (
                crate::content_table::CONTENT,
                Arc::new(crate::content_table::ContentTable::new(Arc::clone(&engine))),
            ),
        ];
        for table in engine::agent::AgentTable::ALL {
            more.push((
                table.name(),
                Arc::new(AgentTableProvider::new(Arc::clone(&engine), table)),
            ));
        }
        more.push((
            crate::logs_table::LOGS,
            Arc::new(
                crate::logs_table::LogsTable::new(Arc::clone(&engine))
                    .map_err(Error::from_datafusion)?,
            ),
        ));
        for (name, table) in more {
            relations.push((name.to_owned(), table.table_type()));
            context
                .register_table(name, table)
                .map_err(Error::from_datafusion)?;
        }
        relations.push((
            crate::logs_table::EVALUATIONS.to_owned(),
            datafusion::datasource::TableType::View,
        ));
        context
            .register_table(
                crate::logs_table::EVALUATIONS,
                Arc::new(crate::logs_table::EvaluationsView::new()),
            )
            .map_err(Error::from_datafusion)?;
        crate::pg_catalog::install(&context, &relations).map_err(Error::from_datafusion)?;
        let pool = QueryPool::new(options.threads, options.max_concurrent)?;
        Ok(SqlEngine {
            context,
            options,
            pool,
            no_disk,
            spill,
        })
    }

    /// The options this engine was built with.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Runs one read-only statement and collects its result.
    ///
    /// Fails with [`Error::Rejected`] for anything but a query, `EXPLAIN`, `SHOW TABLES`,
    /// `SHOW COLUMNS` or `DESCRIBE`; with [`Error::TooComplex`] for text too large or deep to
    /// plan; with [`Error::Timeout`], [`Error::ResourcesExhausted`], [`Error::TooManyRows`] or
    /// [`Error::TooLarge`] when the query exceeds its [`Options`] bounds; with
    /// [`Error::Panicked`] if DataFusion panics. The query runs on the engine's own threads.
    pub async fn execute(&self, sql: &str) -> Result<QueryOutput> {
        self.execute_with(sql, Access::ALL).await
    }

    /// [`SqlEngine::execute`] for a caller with `access`: without content access, a query
    /// that reads the `content` table (anywhere, subqueries included) fails with
    /// [`Error::Forbidden`] before it runs.
    pub async fn execute_with(&self, sql: &str, access: Access) -> Result<QueryOutput> {
        self.execute_bounded(sql, access, Vec::new(), None).await
    }

    /// [`SqlEngine::execute_with`] for a statement with positional parameters (`$1`, `$2`,
    /// ...): `parameters[i]` is a one-row array holding the value of `$(i+1)`, of the type
    /// [`SqlEngine::prepare`] reported for it (or any type when it reported none).
    pub async fn execute_params(
        &self,
        sql: &str,
        access: Access,
        parameters: Vec<ArrayRef>,
    ) -> Result<QueryOutput> {
        self.execute_bounded(sql, access, parameters, None).await
    }

    /// [`SqlEngine::execute_with`] keeping at most `max_rows` rows: past them the query is
    /// stopped and the output says [`QueryOutput::truncated`] instead of failing with
    /// [`Error::TooManyRows`] (for previews, such as an MCP tool's answer). A `max_rows` above
    /// [`Options::max_result_rows`] is lowered to it.
    pub async fn execute_capped(
        &self,
        sql: &str,
        access: Access,
        max_rows: usize,
    ) -> Result<QueryOutput> {
        self.execute_bounded(sql, access, Vec::new(), Some(max_rows))
            .await
    }

    /// [`SqlEngine::execute_with`], then `then` on the output, on the query's own thread and
    /// within its slot and deadline: a caller that formats the result does so without handing
    /// it to another thread (each hand-off wakes a parked thread, ~0.1 ms on a small VM).
    /// `then`'s time counts toward [`Options::timeout`]; past it the caller gets
    /// [`Error::Timeout`], while `then` (which cannot be interrupted) finishes and frees the
    /// slot.
    pub async fn execute_then<T: Send + 'static>(
        &self,
        sql: &str,
        access: Access,
        then: impl FnOnce(QueryOutput) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.execute_bounded_then(sql, access, Vec::new(), None, then)
            .await
    }

    async fn execute_bounded(
        &self,
        sql: &str,
        access: Access,
        parameters: Vec<ArrayRef>,
        cap: Option<usize>,
    ) -> Result<QueryOutput> {
        self.execute_bounded_then(sql, access, parameters, cap, Ok)
            .await
    }

    async fn execute_bounded_then<T: Send + 'static>(
        &self,
        sql: &str,
        access: Access,
        parameters: Vec<ArrayRef>,
        cap: Option<usize>,
        then: impl FnOnce(QueryOutput) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        complexity::check(sql)?;
        let state = self.query_state()?;
        let sql = sql.to_owned();
        let limits = ResultLimits {
            rows: self.options.max_result_rows,
            bytes: self.options.max_result_bytes,
            cap: cap.map(|cap| cap.min(self.options.max_result_rows)),
        };
        let mut values = Vec::with_capacity(parameters.len());
        for parameter in &parameters {
            values.push(ScalarValue::try_from_array(parameter, 0).map_err(Error::from_datafusion)?);
        }
        let memory_limit = self.options.memory_limit;
        let spill = self.spill.clone();
        self.pool
            .run(self.options.timeout, async move {
                let output = run(state, sql, limits, access, values, memory_limit, spill).await?;
                // `then` may be long CPU work (formatting a large result): the runtime moves
                // its other tasks off this thread meanwhile, so other queries go on.
                tokio::task::block_in_place(|| then(output))
            })
            .await
    }

    /// Checks and plans one statement without running it (through the same guard and access
    /// check as [`SqlEngine::execute_with`]): the types of its parameters `$1`, `$2`, ... (in
    /// order; `None` where nothing in the statement fixes a type) and the schema of its
    /// result.
    pub async fn prepare(&self, sql: &str, access: Access) -> Result<Prepared> {
        complexity::check(sql)?;
        let state = self.query_state()?;
        let sql = sql.to_owned();
        self.pool
            .run(self.options.timeout, async move {
                let plan = plan(&state, &sql, access).await?;
                let types = plan.get_parameter_types().map_err(Error::from_datafusion)?;
                let mut parameters = Vec::new();
                for (name, data_type) in types {
                    let index = name
                        .strip_prefix('$')
                        .and_then(|digits| digits.parse::<usize>().ok())
                        .filter(|index| *index >= 1)
                        .ok_or_else(|| {
                            Error::InvalidQuery(format!(
                                "parameter {name}: only positional parameters $1, $2, ... are \
                                 supported"
                            ))
                        })?;
                    if parameters.len() < index {
                        parameters.resize(index, None);
                    }
                    parameters[index - 1] = data_type;
                }
                Ok(Prepared {
                    parameters,
                    schema: Arc::clone(plan.schema().inner()),
                })
            })
            .await
    }

    /// The shared session with a fresh runtime, so every query gets its own memory budget.
    fn query_state(&self) -> Result<SessionState> {
        with_fresh_runtime(
            self.context.state(),
            self.options.memory_limit,
            Arc::clone(&self.no_disk),
        )
    }
}

/// A checked and planned statement ([`SqlEngine::prepare`]).
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Types of `$1`, `$2`, ... in order; `None` where the statement does not fix one.
    pub parameters: Vec<Option<DataType>>,
    /// Schema of the result.
    pub schema: SchemaRef,
}

/// What a caller may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// May read prompt and completion text (the `content` table).
    pub content: bool,
}

impl Access {
    /// Everything (the CLI, a server without tokens).
    pub const ALL: Access = Access { content: true };
    /// Spans, agent tables and content references, not content text.
    pub const NO_CONTENT: Access = Access { content: false };
}

/// What one result may hold.
#[derive(Debug, Clone, Copy)]
struct ResultLimits {
    rows: usize,
    bytes: usize,
    /// Keep this many rows and stop, instead of failing past `rows`.
    cap: Option<usize>,
}

/// `state` with a runtime of its own: a memory pool of `memory_limit` bytes (which the bounded
/// functions reserve from too) and the engine's shared disk manager.
fn with_fresh_runtime(
    state: SessionState,
    memory_limit: usize,
    disk: Arc<DiskManager>,
) -> Result<SessionState> {
    let runtime = runtime_env(memory_limit, disk)?;
    let pool = Arc::clone(&runtime.memory_pool);
    let mut state = SessionStateBuilder::new_from_existing(state)
        .with_runtime_env(runtime)
        .build();
    bounded_functions::install(&mut state, &pool).map_err(Error::from_datafusion)?;
    crate::bounded_concat::install(&mut state, &pool);
    Ok(state)
}

/// Parses, plans and runs `sql` on `state`, collecting the result within `limits` and the
/// query's memory budget (the result's batches are reserved from it like any operator's). A
/// query whose hash join outgrew the budget runs once more with sort-merge joins, on a fresh
/// budget, spilling to `spill` (module `spill`), when `spill` is given.
async fn run(
    state: SessionState,
    sql: String,
    limits: ResultLimits,
    access: Access,
    parameters: Vec<ScalarValue>,
    memory_limit: usize,
    spill: Option<Arc<DiskManager>>,
) -> Result<QueryOutput> {
    let physical = physical_plan(&state, &sql, access, parameters.clone()).await?;
    match (collect(&state, Arc::clone(&physical), limits).await, spill) {
        (Err(error), Some(disk)) if spill::replan_with_merge_joins(&physical, &error) => {
            drop(physical);
            info!(
                error = %error,
                "a hash join outgrew the query's memory budget; running the query again with \
                 sort-merge joins, which spill"
            );
            let state = with_fresh_runtime(spill::merge_join_state(state), memory_limit, disk)?;
            let physical = physical_plan(&state, &sql, access, parameters).await?;
            collect(&state, physical, limits).await
        }
        (result, _) => result,
    }
}

/// `sql` planned on `state` through the guard, with its parameters bound.
async fn physical_plan(
    state: &SessionState,
    sql: &str,
    access: Access,
    parameters: Vec<ScalarValue>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let mut plan = plan(state, sql, access).await?;
    if !parameters.is_empty() {
        plan = plan
            .with_param_values(parameters)
            .map_err(Error::from_datafusion)?;
    }
    state
        .create_physical_plan(&plan)
        .await
        .map_err(Error::from_datafusion)
}

/// Runs `physical` on `state` and collects its result within `limits`.
async fn collect(
    state: &SessionState,
    physical: Arc<dyn ExecutionPlan>,
    limits: ResultLimits,
) -> Result<QueryOutput> {
    let mut stream =
        execute_stream(Arc::clone(&physical), state.task_ctx()).map_err(Error::from_datafusion)?;
    let reservation =
        MemoryConsumer::new("query result").register(&state.runtime_env().memory_pool);
    let mut batches = Vec::new();
    let mut rows = 0usize;
    let mut truncated = false;
    while let Some(batch) = stream.next().await {
        let mut batch = batch.map_err(Error::from_datafusion)?;
        if let Some(cap) = limits.cap
            && rows.saturating_add(batch.num_rows()) > cap
        {
            // Keep what fits and stop: dropping the stream cancels the rest of the query.
            batch = batch.slice(0, cap - rows);
            truncated = true;
        }
        rows = rows.saturating_add(batch.num_rows());
        if rows > limits.rows {
            return Err(Error::TooManyRows { limit: limits.rows });
        }
        if batch.num_rows() > 0 {
            // Held as a copy of its own values, not of the pages its string views point into.
            let batch = crate::view_sizes::compact(batch);
            let size = batch.get_array_memory_size();
            if reservation.size().saturating_add(size) > limits.bytes {
                return Err(Error::TooLarge {
                    limit: limits.bytes,
                });
            }
            reservation.try_grow(size).map_err(Error::from_datafusion)?;
            batches.push(batch);
        }
        if truncated {
            break;
        }
    }
    drop(stream);
    let scan_metrics = scan_metrics(&physical);
    debug!(
        rows,
        segments_selected = scan_metrics.segments_selected,
        bytes_read = scan_metrics.bytes_read,
        "query finished"
    );
    Ok(QueryOutput {
        schema: physical.schema(),
        batches,
        scan_metrics,
        truncated,
    })
}

/// Parses `sql` through the guard, plans it, checks the plan and the caller's access.
async fn plan(state: &SessionState, sql: &str, access: Access) -> Result<LogicalPlan> {
    let recursion_limit = state.config().options().sql_parser.recursion_limit.get();
    let statement = guard::parse_allowed(sql, recursion_limit)?;
    let plan = state
        .statement_to_plan(statement)
        .await
        .map_err(Error::from_datafusion)?;
    guard::verify_plan(&plan)?;
    if !access.content && guard::reads_table(&plan, crate::content_table::CONTENT) {
        return Err(Error::Forbidden(
            "the content table holds prompt and completion text: it needs content access"
                .to_owned(),
        ));
    }
    Ok(plan)
}

/// A memory pool of `memory_limit` bytes, spilling (if at all) through `disk`. When the query
/// may spill, operators that can spill share the budget fairly (each spills past its share, so
/// that one sort cannot starve the others into failing; `spill`); otherwise the first to ask
/// gets it.
fn runtime_env(memory_limit: usize, disk: Arc<DiskManager>) -> Result<Arc<RuntimeEnv>> {
    let pool: Arc<dyn MemoryPool> = if disk.tmp_files_enabled() {
        Arc::new(TrackConsumersPool::new(
            spill::RepartitionNeverSpills::new(memory_limit),
            REPORTED_CONSUMERS,
        ))
    } else {
        Arc::new(TrackConsumersPool::new(
            GreedyMemoryPool::new(memory_limit),
            REPORTED_CONSUMERS,
        ))
    };
    let mut builder = RuntimeEnvBuilder::new().with_memory_pool(pool);
    builder.disk_manager = Some(disk);
    builder.build_arc().map_err(Error::from_datafusion)
}

/// Sums the engine counters of every span scan in the plan.
fn scan_metrics(plan: &Arc<dyn ExecutionPlan>) -> ScanMetricsSnapshot {
    let mut total = ScanMetricsSnapshot::default();
    let mut stack = vec![Arc::clone(plan)];
    while let Some(node) = stack.pop() {
        if let Some(scan) = node.downcast_ref::<SpansScanExec>() {
            add_metrics(&mut total, &scan.engine_metrics());
        }
        stack.extend(node.children().into_iter().cloned());
    }
    total
}
