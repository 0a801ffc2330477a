//! `content`: one row per content reference (trace_id, span_id, key, value, status), read from
//! the engine's content store when the query runs. `trace_id = '<hex>'` (and `IN (...)`) narrow
//! the read to those traces; the filter is answered `Inexact`, so DataFusion still applies it.
//! A `LIMIT` with no filter left above the scan reads only the first rows; a query without the
//! `value` column reads no text (statuses come from the content index); text read is bounded by
//! the query's memory limit (a clear error past it, never the whole store in memory).

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::memory::MemorySourceConfig;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Result as DfResult, ScalarValue};
use datafusion::execution::memory_pool::MemoryLimit;
use datafusion::logical_expr::{
    BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType,
};
use datafusion::physical_plan::ExecutionPlan;
use engine::{ContentScan, ContentValue, Engine, TraceId};

use crate::error::engine_error;

/// Name of the table.
pub(crate) const CONTENT: &str = "content";

/// The `content` table.
#[derive(Debug)]
pub(crate) struct ContentTable {
    engine: Arc<Engine>,
    schema: SchemaRef,
}

impl ContentTable {
    pub(crate) fn new(engine: Arc<Engine>) -> Self {
        let schema = Arc::new(Schema::new(vec![
            Field::new("trace_id", DataType::Utf8, false),
            Field::new("span_id", DataType::Utf8, false),
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Utf8, true),
            Field::new("status", DataType::Utf8, false),
            Field::new("digest", DataType::Utf8, false),
        ]));
        ContentTable { engine, schema }
    }

    fn batch(&self, scan: &ContentScan) -> DfResult<RecordBatch> {
        let rows = self.engine.scan_content_with(scan).map_err(engine_error)?;
        let mut trace_ids = Vec::with_capacity(rows.len());
        let mut span_ids = Vec::with_capacity(rows.len());
        let mut keys = Vec::with_capacity(rows.len());
        let mut values = Vec::with_capacity(rows.len());
        let mut statuses = Vec::with_capacity(rows.len());
        let mut digests = Vec::with_capacity(rows.len());
        for row in rows {
            trace_ids.push(row.trace_id.to_string());
            span_ids.push(row.span_id.to_string());
            keys.push(row.key);
            let (value, status) = match row.value {
                ContentValue::Present(text) => (Some(text), "present"),
                ContentValue::Expired { .. } => (None, "expired"),
                ContentValue::NotCaptured { .. } => (None, "not_captured"),
            };
            values.push(value);
            statuses.push(status);
            // The same digest as the span's reference, for every status.
            digests.push(hex::encode(row.digest));
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(trace_ids)),
            Arc::new(StringArray::from(span_ids)),
            Arc::new(StringArray::from(keys)),
            Arc::new(StringArray::from(values)),
            Arc::new(StringArray::from(statuses)),
            Arc::new(StringArray::from(digests)),
        ];
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

/// Trace ids named by `trace_id = '<hex>'` or `trace_id IN (...)`; `None` for other filters.
fn trace_ids_of(filter: &Expr) -> Option<Vec<TraceId>> {
    let literal = |expr: &Expr| match expr {
        Expr::Literal(ScalarValue::Utf8(Some(text)), _)
        | Expr::Literal(ScalarValue::Utf8View(Some(text)), _)
        | Expr::Literal(ScalarValue::LargeUtf8(Some(text)), _) => TraceId::from_hex(text).ok(),
        _ => None,
    };
    let is_trace_column =
        |expr: &Expr| matches!(expr, Expr::Column(column) if column.name == "trace_id");
    match filter {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => {
            if is_trace_column(left) {
                literal(right).map(|id| vec![id])
            } else if is_trace_column(right) {
                literal(left).map(|id| vec![id])
            } else {
                None
            }
        }
        Expr::InList(list) if !list.negated && is_trace_column(&list.expr) => {
            list.list.iter().map(literal).collect()
        }
        _ => None,
    }
}

#[async_trait]
impl TableProvider for ContentTable {
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
        Ok(filters
            .iter()
            .map(|filter| match trace_ids_of(filter) {
                Some(_) => TableProviderFilterPushDown::Inexact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // Filters are ANDed: the first trace-id filter bounds the read. A limit comes only
        // when no filter is left to apply above the scan: the first rows are then the answer.
        let mut scan = ContentScan::new();
        if let Some(traces) = filters.iter().find_map(trace_ids_of) {
            scan = scan.traces(traces);
        }
        if let Some(limit) = limit {
            scan = scan.limit(limit);
        }
        // Without the value column (a count, a GROUP BY status) no content segment is read.
        // With it, the text read is bounded by the query's memory limit: the rows are held
        // whole until the plan runs.
        let value = self.schema.index_of("value")?;
        if projection.is_some_and(|columns| !columns.contains(&value)) {
            scan = scan.status_only();
        } else if let MemoryLimit::Finite(bytes) = state.runtime_env().memory_pool.memory_limit() {
            scan = scan.max_text_bytes(bytes);
        }
        let batch = self.batch(&scan)?;
        let exec: Arc<dyn ExecutionPlan> = MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            Arc::clone(&self.schema),
            projection.cloned(),
        )?;
        Ok(exec)
    }
}
