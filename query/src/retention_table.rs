//! `retention`: a system table with one row per retention tier (spans by their resolved tier,
//! sealed or not, of which unsealed; bytes, oldest row, next expiry) and one row `content` for
//! the content store (messages, references, bytes, when the least recently referenced message
//! was last referenced), read from the engine when the query runs.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampNanosecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::memory::MemorySourceConfig;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result as DfResult;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use engine::Engine;
use engine::schema::timestamp_type;

use crate::error::engine_error;

/// Name of the table.
pub(crate) const RETENTION: &str = "retention";

/// The `retention` table.
#[derive(Debug)]
pub(crate) struct RetentionTable {
    engine: Arc<Engine>,
    schema: SchemaRef,
}

impl RetentionTable {
    pub(crate) fn new(engine: Arc<Engine>) -> Self {
        let schema = Arc::new(Schema::new(vec![
            Field::new("tier", DataType::Utf8, false),
            Field::new("keep_seconds", DataType::UInt64, true),
            Field::new("segments", DataType::UInt64, true),
            Field::new("spans", DataType::UInt64, true),
            Field::new("bytes", DataType::UInt64, false),
            Field::new("oldest", timestamp_type(), true),
            Field::new("next_expiry", timestamp_type(), true),
            Field::new("messages", DataType::UInt64, true),
            Field::new("references", DataType::UInt64, true),
            Field::new("unsealed_spans", DataType::UInt64, true),
        ]));
        RetentionTable { engine, schema }
    }

    fn batch(&self) -> DfResult<RecordBatch> {
        let tiers = self.engine.retention_status().map_err(engine_error)?;
        let content = self.engine.content_stats().map_err(engine_error)?;
        let mut name: Vec<String> = tiers.iter().map(|tier| tier.tier.clone()).collect();
        name.push("content".to_owned());
        // The content keep is the server's setting, not the engine's.
        let mut keep: Vec<Option<u64>> = tiers
            .iter()
            .map(|tier| tier.configured.then_some(tier.keep.as_secs()))
            .collect();
        keep.push(None);
        let mut segments: Vec<Option<u64>> = tiers.iter().map(|tier| Some(tier.segments)).collect();
        segments.push(None);
        let mut spans: Vec<Option<u64>> = tiers.iter().map(|tier| Some(tier.spans)).collect();
        spans.push(None);
        let mut bytes: Vec<u64> = tiers.iter().map(|tier| tier.bytes).collect();
        bytes.push(content.bytes);
        let mut oldest: Vec<Option<i64>> = tiers.iter().map(|tier| tier.oldest).collect();
        // For content: when the least recently referenced message was last referenced.
        oldest.push(
            content
                .oldest_seen
                .and_then(|seen| i64::try_from(seen).ok()),
        );
        let mut next: Vec<Option<i64>> = tiers.iter().map(|tier| tier.next_expiry).collect();
        next.push(None);
        let mut messages: Vec<Option<u64>> = vec![None; tiers.len()];
        messages.push(Some(content.messages));
        let mut references: Vec<Option<u64>> = vec![None; tiers.len()];
        references.push(Some(content.references));
        let mut unsealed: Vec<Option<u64>> = tiers.iter().map(|tier| Some(tier.unsealed)).collect();
        unsealed.push(None);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(name)),
            Arc::new(UInt64Array::from(keep)),
            Arc::new(UInt64Array::from(segments)),
            Arc::new(UInt64Array::from(spans)),
            Arc::new(UInt64Array::from(bytes)),
            Arc::new(TimestampNanosecondArray::from(oldest).with_timezone("UTC")),
            Arc::new(TimestampNanosecondArray::from(next).with_timezone("UTC")),
            Arc::new(UInt64Array::from(messages)),
            Arc::new(UInt64Array::from(references)),
            Arc::new(UInt64Array::from(unsealed)),
        ];
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

#[async_trait]
impl TableProvider for RetentionTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batch = self.batch()?;
        let exec: Arc<dyn ExecutionPlan> = MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            Arc::clone(&self.schema),
            projection.cloned(),
        )?;
        Ok(exec)
    }
}
