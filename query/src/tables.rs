//! The SQL tables: `spans` (one row per span) and `span_events` / `span_links` (one row per
//! element of the span's `events` / `links` list, with the owning span's ids beside it).

use std::sync::Arc;

use arrow::datatypes::{Field, Fields, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Result as DfResult, plan_err};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use engine::schema::{HIDDEN_COLUMNS, columns, event_fields, link_fields};
use engine::{Engine, span_schema};

use crate::explode::{ExplodeExec, OutputColumn};
use crate::pushdown::{PushColumn, is_exact, pushdown_support, scan_request};
use crate::scan::SpansScanExec;
use crate::stored_filter::{likely_selective, pushable, row_predicate};

/// Name of the span table.
pub(crate) const SPANS: &str = "spans";
/// Name of the span event table.
pub(crate) const SPAN_EVENTS: &str = "span_events";
/// Name of the span link table.
pub(crate) const SPAN_LINKS: &str = "span_links";

fn resolve_span_column(name: &str) -> Option<PushColumn> {
    match name {
        columns::TRACE_ID => Some(PushColumn::TraceId),
        columns::SERVICE_NAME => Some(PushColumn::ServiceName),
        columns::START_TIME => Some(PushColumn::StartTime),
        columns::SESSION_ID => Some(PushColumn::SessionId),
        columns::CONVERSATION_ID => Some(PushColumn::ConversationId),
        _ => None,
    }
}

/// `spans`: the engine span schema without the hidden protobuf columns.
#[derive(Debug)]
pub(crate) struct SpansTable {
    engine: Arc<Engine>,
    schema: SchemaRef,
    /// For each SQL column, its index in the engine span schema.
    engine_columns: Vec<usize>,
}

impl SpansTable {
    pub(crate) fn new(engine: Arc<Engine>) -> Self {
        let full = span_schema();
        let engine_columns: Vec<usize> = full
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, field)| !HIDDEN_COLUMNS.contains(&field.name().as_str()))
            .map(|(index, _)| index)
            .collect();
        let fields: Vec<Arc<Field>> = engine_columns
            .iter()
            .map(|index| Arc::clone(&full.fields()[*index]))
            .collect();
        SpansTable {
            engine,
            schema: Arc::new(Schema::new(fields)),
            engine_columns,
        }
    }
}

#[async_trait]
impl TableProvider for SpansTable {
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
        Ok(pushdown_support(filters, &resolve_span_column)
            .into_iter()
            .zip(filters)
            .map(|(support, filter)| match support {
                TableProviderFilterPushDown::Unsupported if self.row_filterable(filter) => {
                    TableProviderFilterPushDown::Inexact
                }
                support => support,
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
        // The filters answered `Inexact`: evaluated as segments are read (a Parquet row
        // filter, so other columns are decoded only for the rows kept), and again above.
        let (exact, rest): (Vec<Expr>, Vec<Expr>) = filters
            .iter()
            .cloned()
            .partition(|filter| is_exact(filter, &resolve_span_column));
        let row_filters: Vec<Expr> = rest
            .into_iter()
            .filter(|filter| self.row_filterable(filter))
            .collect();
        let columns = match projection {
            Some(indices) => {
                let mut out = Vec::with_capacity(indices.len());
                for index in indices {
                    match self.engine_columns.get(*index) {
                        Some(column) => out.push(*column),
                        None => return plan_err!("spans has no column {index}"),
                    }
                }
                out
            }
            None => self.engine_columns.clone(),
        };
        let mut request = scan_request(&exact, &resolve_span_column);
        request.row_filter = row_predicate(state, &span_schema(), &row_filters)?;
        // A limit is only safe when every filter is answered exactly (DataFusion passes none
        // otherwise, since it filters above; this holds it to that).
        let limit = limit.filter(|_| request.row_filter.is_none());
        Ok(Arc::new(SpansScanExec::new(
            Arc::clone(&self.engine),
            request,
            columns,
            limit,
            state.config().target_partitions(),
        )?))
    }
}

impl SpansTable {
    /// Whether `filter` runs as the engine reads segments: a simple comparison
    /// (`stored_filter::pushable`) that likely keeps few rows (`likely_selective`), of
    /// columns stored as read, so not the keys a read resolves from the trace
    /// (`engine::KEY_COLUMNS`).
    fn row_filterable(&self, filter: &Expr) -> bool {
        let stored: Vec<Arc<Field>> = span_schema()
            .fields()
            .iter()
            .filter(|field| !engine::KEY_COLUMNS.contains(&field.name().as_str()))
            .filter(|field| !HIDDEN_COLUMNS.contains(&field.name().as_str()))
            .map(Arc::clone)
            .collect();
        likely_selective(filter) && pushable(filter, &Schema::new(stored))
    }
}

/// Which list column a nested table explodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NestedKind {
    /// `span_events`, from `events`.
    Events,
    /// `span_links`, from `links`.
    Links,
}

/// Where a nested table column comes from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// A column of the owning span (engine column name).
    Span(&'static str),
    /// A field of the list element struct.
    Element(&'static str),
}

/// Columns of the nested tables. The owning span's `span_name`, `service_name`, `start_time`
/// (as `span_start_time`) and, for events, `session_id` and `conversation_id` come along so
/// filters on them push down.
const EVENT_COLUMNS: [(&str, Source); 11] = [
    ("trace_id", Source::Span(columns::TRACE_ID)),
    ("span_id", Source::Span(columns::SPAN_ID)),
    ("span_name", Source::Span(columns::SPAN_NAME)),
    ("service_name", Source::Span(columns::SERVICE_NAME)),
    ("time", Source::Element(columns::event::TIME)),
    ("name", Source::Element(columns::event::NAME)),
    ("attributes", Source::Element(columns::event::ATTRIBUTES)),
    (
        "dropped_attributes_count",
        Source::Element(columns::event::DROPPED_ATTRIBUTES_COUNT),
    ),
    ("span_start_time", Source::Span(columns::START_TIME)),
    ("session_id", Source::Span(columns::SESSION_ID)),
    ("conversation_id", Source::Span(columns::CONVERSATION_ID)),
];

const LINK_COLUMNS: [(&str, Source); 11] = [
    ("trace_id", Source::Span(columns::TRACE_ID)),
    ("span_id", Source::Span(columns::SPAN_ID)),
    ("linked_trace_id", Source::Element(columns::link::TRACE_ID)),
    ("linked_span_id", Source::Element(columns::link::SPAN_ID)),
    ("trace_state", Source::Element(columns::link::TRACE_STATE)),
    ("flags", Source::Element(columns::link::FLAGS)),
    ("attributes", Source::Element(columns::link::ATTRIBUTES)),
    (
        "dropped_attributes_count",
        Source::Element(columns::link::DROPPED_ATTRIBUTES_COUNT),
    ),
    ("span_name", Source::Span(columns::SPAN_NAME)),
    ("service_name", Source::Span(columns::SERVICE_NAME)),
    ("span_start_time", Source::Span(columns::START_TIME)),
];

impl NestedKind {
    fn columns(self) -> &'static [(&'static str, Source)] {
        match self {
            NestedKind::Events => &EVENT_COLUMNS,
            NestedKind::Links => &LINK_COLUMNS,
        }
    }

    fn list_column(self) -> &'static str {
        match self {
            NestedKind::Events => columns::EVENTS,
            NestedKind::Links => columns::LINKS,
        }
    }

    fn element_fields(self) -> Fields {
        match self {
            NestedKind::Events => event_fields(),
            NestedKind::Links => link_fields(),
        }
    }

    /// The name of the node that explodes this table, shown by EXPLAIN.
    pub(crate) fn exec_name(self) -> &'static str {
        match self {
            NestedKind::Events => "SpanEventsExec",
            NestedKind::Links => "SpanLinksExec",
        }
    }
}

fn resolve_nested_column(name: &str) -> Option<PushColumn> {
    match name {
        "trace_id" => Some(PushColumn::TraceId),
        "service_name" => Some(PushColumn::ServiceName),
        "span_start_time" => Some(PushColumn::StartTime),
        "session_id" => Some(PushColumn::SessionId),
        "conversation_id" => Some(PushColumn::ConversationId),
        _ => None,
    }
}

/// `span_events` or `span_links`.
#[derive(Debug)]
pub(crate) struct NestedTable {
    engine: Arc<Engine>,
    kind: NestedKind,
    schema: SchemaRef,
    /// Per SQL column: the span schema index, or the element struct field index.
    sources: Vec<OutputSource>,
    list_index: usize,
}

#[derive(Debug, Clone, Copy)]
enum OutputSource {
    Span(usize),
    Element(usize),
}

impl NestedTable {
    pub(crate) fn new(engine: Arc<Engine>, kind: NestedKind) -> DfResult<Self> {
        let spans = span_schema();
        let elements = kind.element_fields();
        let mut fields = Vec::new();
        let mut sources = Vec::new();
        for (name, source) in kind.columns() {
            match source {
                Source::Span(column) => {
                    let index = spans.index_of(column)?;
                    fields.push(spans.field(index).clone().with_name(*name));
                    sources.push(OutputSource::Span(index));
                }
                Source::Element(field) => {
                    let Some((index, field)) = elements.find(field) else {
                        return plan_err!("no field {field} in {}", kind.list_column());
                    };
                    fields.push(field.as_ref().clone().with_name(*name));
                    sources.push(OutputSource::Element(index));
                }
            }
        }
        Ok(NestedTable {
            engine,
            kind,
            schema: Arc::new(Schema::new(fields)),
            sources,
            list_index: spans.index_of(kind.list_column())?,
        })
    }
}

#[async_trait]
impl TableProvider for NestedTable {
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
        Ok(pushdown_support(filters, &resolve_nested_column))
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        // A limit on elements says nothing about how many spans hold them; not pushed.
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let wanted: Vec<usize> = match projection {
            Some(indices) => indices.clone(),
            None => (0..self.sources.len()).collect(),
        };
        // Span columns to read (in first-use order), then the list column last.
        let mut span_columns: Vec<usize> = Vec::new();
        let mut outputs = Vec::with_capacity(wanted.len());
        let mut fields = Vec::with_capacity(wanted.len());
        for index in wanted {
            let Some(source) = self.sources.get(index) else {
                return plan_err!("{} has no column {index}", self.kind.exec_name());
            };
            fields.push(Arc::new(self.schema.field(index).clone()));
            match source {
                OutputSource::Span(column) => {
                    let position = match span_columns.iter().position(|c| c == column) {
                        Some(position) => position,
                        None => {
                            span_columns.push(*column);
                            span_columns.len() - 1
                        }
                    };
                    outputs.push(OutputColumn::Span(position));
                }
                OutputSource::Element(field) => outputs.push(OutputColumn::Element(*field)),
            }
        }
        let list_position = span_columns.len();
        span_columns.push(self.list_index);
        let scan = Arc::new(SpansScanExec::new(
            Arc::clone(&self.engine),
            scan_request(filters, &resolve_nested_column),
            span_columns,
            None,
            state.config().target_partitions(),
        )?);
        Ok(Arc::new(ExplodeExec::try_new(
            self.kind.exec_name(),
            scan,
            list_position,
            outputs,
            Arc::new(Schema::new(fields)),
        )?))
    }
}
