//! [`ExplodeExec`]: one output row per element of a list column, with the owning row's
//! columns repeated beside the element's struct fields (the `span_events` / `span_links`
//! tables). Done with Arrow `take`, batch by batch; partitioning is the input's.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{
    DataFusionError, Result as DfResult, internal_datafusion_err, internal_err,
};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use futures::StreamExt;

/// Where one output column comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutputColumn {
    /// Input column at this position, repeated for each element of its row.
    Span(usize),
    /// Field at this index of the list's element struct.
    Element(usize),
}

/// Explodes the list column of its input.
#[derive(Debug)]
pub(crate) struct ExplodeExec {
    name: &'static str,
    input: Arc<dyn ExecutionPlan>,
    plan: Arc<ExplodePlan>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

#[derive(Debug)]
struct ExplodePlan {
    list_position: usize,
    outputs: Vec<OutputColumn>,
    schema: SchemaRef,
}

impl ExplodeExec {
    pub(crate) fn try_new(
        name: &'static str,
        input: Arc<dyn ExecutionPlan>,
        list_position: usize,
        outputs: Vec<OutputColumn>,
        schema: SchemaRef,
    ) -> DfResult<Self> {
        if outputs.len() != schema.fields().len() {
            return internal_err!(
                "{name}: {} outputs for {} fields",
                outputs.len(),
                schema.fields().len()
            );
        }
        let properties = Self::properties_for(&input, &schema);
        Ok(ExplodeExec {
            name,
            input,
            plan: Arc::new(ExplodePlan {
                list_position,
                outputs,
                schema,
            }),
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    fn properties_for(input: &Arc<dyn ExecutionPlan>, schema: &SchemaRef) -> PlanProperties {
        PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(schema)),
            Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        )
    }
}

impl ExplodePlan {
    fn explode(&self, batch: &RecordBatch) -> DfResult<RecordBatch> {
        let list = batch
            .column(self.list_position)
            .as_list_opt::<i32>()
            .ok_or_else(|| internal_datafusion_err!("explode input column is not a list"))?;
        let elements = list
            .values()
            .as_struct_opt()
            .ok_or_else(|| internal_datafusion_err!("list elements are not structs"))?;
        let offsets = list.value_offsets();
        let total = offsets
            .last()
            .zip(offsets.first())
            .map_or(0, |(last, first)| {
                usize::try_from(last - first).unwrap_or(0)
            });
        let mut rows = Vec::with_capacity(total);
        let mut children = Vec::with_capacity(total);
        for row in 0..list.len() {
            if list.is_null(row) {
                continue;
            }
            let row_index = index(row)?;
            for child in offsets[row]..offsets[row + 1] {
                rows.push(row_index);
                children.push(index(usize::try_from(child).map_err(internal)?)?);
            }
        }
        let rows = UInt32Array::from(rows);
        let children = UInt32Array::from(children);
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.outputs.len());
        for output in &self.outputs {
            let column = match output {
                OutputColumn::Span(position) => take(batch.column(*position), &rows, None)?,
                OutputColumn::Element(field) => take(elements.column(*field), &children, None)?,
            };
            columns.push(column);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(children.len()));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &options,
        )?)
    }
}

fn index(value: usize) -> DfResult<u32> {
    u32::try_from(value).map_err(internal)
}

fn internal(error: impl fmt::Display) -> DataFusionError {
    internal_datafusion_err!("explode index out of range: {error}")
}

impl DisplayAs for ExplodeExec {
    fn fmt_as(&self, format: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self
            .plan
            .schema
            .fields()
            .iter()
            .map(|field| field.name().as_str())
            .collect();
        match format {
            DisplayFormatType::Default | DisplayFormatType::Verbose => {
                write!(f, "{}: columns=[{}]", self.name, names.join(", "))
            }
            DisplayFormatType::TreeRender => write!(f, "columns=[{}]", names.join(", ")),
        }
    }
}

impl ExecutionPlan for ExplodeExec {
    fn name(&self) -> &str {
        self.name
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("{} takes one child, got {}", self.name, children.len());
        }
        let input = children.swap_remove(0);
        let properties = Self::properties_for(&input, &self.plan.schema);
        Ok(Arc::new(ExplodeExec {
            name: self.name,
            input,
            plan: Arc::clone(&self.plan),
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let plan = Arc::clone(&self.plan);
        let output_rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let exploded = input.map(move |batch| {
            let exploded = plan.explode(&batch?)?;
            output_rows.add(exploded.num_rows());
            Ok(exploded)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.plan.schema),
            exploded,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}
