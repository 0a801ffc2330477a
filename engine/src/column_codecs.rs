//! How leaves of the Parquet files are encoded: which are written without zstd (most of this
//! module), without a dictionary, or delta-encoded.
//!
//! parquet-rs 59 makes a zstd codec, with a compression and a decompression context, for every
//! column chunk it reads, and making a context runs `cpuid`, which a virtual machine traps
//! (4 us a call on the bench VM, ~24 us a column chunk). A point read (one trace, one session)
//! touches every leaf of every segment it reads, so a compressed leaf that zstd barely shrinks
//! costs more than it saves. Written plain: the bounded leaves listed here (for span segments
//! and agent-table files), and every leaf of a column that holds no value in the file being
//! written.
//!
//! Invariant: only leaves where zstd saves at most ~0.1 B/row (measured per leaf on the 10M
//! bench store, benches/BENCHMARKS.md) or nothing at all are written plain; the test checks that
//! every listed leaf names a real column of the file.

use std::collections::BTreeSet;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use parquet::arrow::ArrowSchemaConverter;
use parquet::basic::Compression;
use parquet::file::properties::WriterPropertiesBuilder;
use parquet::schema::types::ColumnPath;

/// Leaves of the span schema written without zstd: bounded sets of values (kinds, codes,
/// names, models, small counters, per-request scope fields) that dictionary and run-length
/// encoding already make a fraction of a byte per row; zstd saves at most ~0.1 B/row on each
/// (measured on the 10M bench store), while reading a zstd column chunk costs parquet-rs a
/// fresh pair of zstd contexts, and making a context runs `cpuid`, which a virtual machine
/// traps (4 us a call here, ~24 us a column chunk). A point read (one trace, one session)
/// touches every leaf of every segment it reads. Free text, ids, times, token counts,
/// attributes, resources and the OTLP blobs stay compressed.
pub(crate) const UNCOMPRESSED_SPAN_LEAVES: &[&str] = &[
    "flags",
    "trace_state",
    "span_kind",
    "status_code",
    "service_name",
    "operation",
    "provider",
    "request_model",
    "response_model",
    "agent_name",
    "workflow_name",
    "tool_name",
    "tool_type",
    "tool_risk",
    "finish_reasons.list.item",
    "error_type",
    "retry_attempt",
    "decision_verdict",
    "dialect",
    "retention_tier",
    "resource_schema_url",
    "scope_name",
    "scope_version",
    "scope_attributes.entries.keys",
    "scope_attributes.entries.values",
    "scope_schema_url",
    "dropped_attributes_count",
    "events.list.item.name",
    "events.list.item.dropped_attributes_count",
    "dropped_events_count",
    "links.list.item.trace_state",
    "links.list.item.flags",
    "links.list.item.dropped_attributes_count",
    "dropped_links_count",
    "log.event_name",
    "log.severity_number",
    "log.severity_text",
    // Few distinct values a row group (a write's arrival, a deployment's agents, its
    // instrumentation scopes, cached-token counts): 0.006, 0.03, -0.008 and 0.013 B/row from
    // zstd. (`resource_otlp` saves 0.02 here but stays compressed: real resources carry
    // kilobytes of host and k8s attributes.)
    "arrival_time",
    "agent_id",
    "scope_otlp",
    "cache_read_tokens",
];

/// Nested leaves written without a dictionary. Attribute values are mostly distinct per row
/// (ids, arguments, texts): their dictionary grew to its 1 MiB limit in every row group (2 MB of
/// a 13 MB segment on the 10M bench store) and a read of one trace or one session had to fetch
/// and decode the whole of it, for each row group it touched, before its few rows.
pub(crate) const NO_DICTIONARY_SPAN_LEAVES: &[&str] = &[
    "attributes.entries.values",
    "events.list.item.attributes.entries.values",
    "events.list.item.time",
];

/// Time leaves of the span schema written delta-encoded and bit-packed, without a dictionary
/// and without zstd: within a trace, start and end times rise by small steps, and durations
/// need ~34 bits, so `DELTA_BINARY_PACKED` alone is as small as plain + zstd (start +2%, end
/// -4%, duration +0.3%, event times -6% on the 1M bench store) and a read of them makes no
/// zstd contexts. `arrival_time` stays with zstd: a few distinct values in session order,
/// which zstd shrinks 28x more than deltas do.
pub(crate) const DELTA_SPAN_LEAVES: &[&str] = &[
    "start_time",
    "end_time",
    "duration_ns",
    "events.list.item.time",
];

/// Time leaves of the agent tables' stored forms written delta-encoded and bit-packed, without
/// a dictionary or zstd, as [`DELTA_SPAN_LEAVES`] (see the measurements in benches/BENCHMARKS.md).
pub(crate) const DELTA_SIDECAR_LEAVES: &[&str] = &[
    "start_time",
    "duration_ns",
    "time",
    "first_seen",
    "last_seen",
];

/// `properties` with each of `leaves` (INT64 leaves) written `DELTA_BINARY_PACKED`, without a
/// dictionary and without compression.
pub(crate) fn delta_encoded(
    mut properties: WriterPropertiesBuilder,
    leaves: &[&str],
) -> WriterPropertiesBuilder {
    for leaf in leaves {
        let path = leaf_path(leaf);
        properties = properties
            .set_column_dictionary_enabled(path.clone(), false)
            .set_column_encoding(path.clone(), parquet::basic::Encoding::DELTA_BINARY_PACKED)
            .set_column_compression(path, Compression::UNCOMPRESSED);
    }
    properties
}

/// Leaves of the agent tables' stored forms written without zstd (names and bounded codes;
/// ids, times, tokens and free text such as `reasoning` stay compressed).
pub(crate) const UNCOMPRESSED_SIDECAR_LEAVES: &[&str] = &[
    // Small counters: zstd saves 0.07-0.14 B/row on each (1M bench store).
    "denials",
    "errors",
    "escalations",
    "llm_calls",
    "retries",
    "tool_calls",
    "runs",
    "spans",
    "forms",
    "cache_read_tokens",
    "agent_name",
    "tool_name",
    "status_code",
    "error_type",
    "verdict",
    "risk",
    "retry_source",
    "is_retry",
    "attempt",
    "retry_attempt",
    "provider",
    "request_model",
    "response_model",
    "finish_reasons.list.item",
    "kind",
    "policy_id",
    "approval_status",
    "outcome",
];

/// The Parquet column path of a dotted leaf name.
pub(crate) fn leaf_path(leaf: &str) -> ColumnPath {
    ColumnPath::new(leaf.split('.').map(str::to_owned).collect())
}

/// `properties` with every leaf of `uncompressed`, and every leaf of a top-level column of
/// `batch` that holds no value (all NULL, or only empty lists), written without compression:
/// an empty column is a few bytes of levels either way, while a compressed column chunk costs
/// each read two zstd contexts (see [`UNCOMPRESSED_SPAN_LEAVES`]).
pub(crate) fn without_needless_zstd(
    mut properties: WriterPropertiesBuilder,
    batch: &RecordBatch,
    uncompressed: &[&str],
) -> WriterPropertiesBuilder {
    for leaf in uncompressed {
        properties = properties.set_column_compression(leaf_path(leaf), Compression::UNCOMPRESSED);
    }
    let schema = batch.schema();
    let empty: BTreeSet<&str> = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .filter(|(_, column)| holds_no_value(column.as_ref()))
        .map(|(field, _)| field.name().as_str())
        .collect();
    if empty.is_empty() {
        return properties;
    }
    // The leaves as the writer will name them.
    let Ok(descriptor) = ArrowSchemaConverter::new().convert(&schema) else {
        return properties;
    };
    for leaf in descriptor.columns() {
        let top = leaf.path().parts().first().map(String::as_str);
        if top.is_some_and(|top| empty.contains(top)) {
            properties =
                properties.set_column_compression(leaf.path().clone(), Compression::UNCOMPRESSED);
        }
    }
    properties
}

/// True when `column` holds no value: every row NULL, or every row an empty list or map.
fn holds_no_value(column: &dyn Array) -> bool {
    if column.null_count() == column.len() {
        return true;
    }
    match column.data_type() {
        DataType::List(_) => column.as_list::<i32>().values().is_empty(),
        DataType::LargeList(_) => column.as_list::<i64>().values().is_empty(),
        DataType::Map(_, _) => column.as_map().entries().is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::path::Path;

    use super::*;

    /// Leaf path -> codec of every column chunk of a Parquet file.
    fn leaf_codecs(path: &Path) -> Codecs {
        leaf_columns(path)
            .into_iter()
            .map(|(leaf, (codec, _))| (leaf, codec))
            .collect()
    }

    /// Leaf path -> codec and data page encodings of every column chunk of a Parquet file.
    fn leaf_columns(
        path: &Path,
    ) -> std::collections::BTreeMap<String, (Compression, Vec<parquet::basic::Encoding>)> {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let reader = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
        let mut columns = std::collections::BTreeMap::new();
        for group in reader.metadata().row_groups() {
            for column in group.columns() {
                columns.insert(
                    column.column_path().string(),
                    (column.compression(), column.encodings().collect()),
                );
            }
        }
        columns
    }

    type Codecs = std::collections::BTreeMap<String, Compression>;

    fn assert_plain(codecs: &Codecs, leaves: &[&str]) {
        for leaf in leaves {
            assert_eq!(
                codecs.get(*leaf),
                Some(&Compression::UNCOMPRESSED),
                "{leaf}"
            );
        }
    }

    fn assert_zstd(codecs: &Codecs, leaves: &[&str]) {
        for leaf in leaves {
            assert!(
                matches!(codecs.get(*leaf), Some(Compression::ZSTD(_))),
                "{leaf}: {codecs:?}"
            );
        }
    }

    #[test]
    fn bounded_and_empty_leaves_are_written_uncompressed_and_the_rest_with_zstd() {
        use crate::batch::AgentFields;
        use crate::batch::{SpanBatchBuilder, SpanRecord};
        use crate::ids::{SpanId, TraceId};
        use std::borrow::Cow;
        // A run: the agent span, a model call, and a tool call a policy denied, so that every
        // agent table has a row.
        let decision: Vec<crate::batch::AttributePair<'_>> = vec![
            ("agent.decision.verdict", Cow::Borrowed("deny")),
            ("agent.decision.policy_id", Cow::Borrowed("no-rm")),
            ("agent.decision.reasoning", Cow::Borrowed("destructive")),
        ];
        let agent = |operation: &'static str| AgentFields {
            session_id: Some("s".into()),
            operation: Some(operation.into()),
            agent_name: Some("planner".into()),
            ..AgentFields::default()
        };
        let events = [crate::batch::EventRecord {
            time_unix_nano: 5,
            name: "gen_ai.choice",
            attributes: vec![("finish_reason", Cow::Borrowed("stop"))],
            dropped_attributes_count: 0,
        }];
        let mut builder = SpanBatchBuilder::new();
        builder.append(&SpanRecord {
            trace_id: TraceId([7; 16]),
            span_id: SpanId([1; 8]),
            agent: agent("invoke_agent"),
            events: &events,
            ..SpanRecord::default()
        });
        builder.append(&SpanRecord {
            trace_id: TraceId([7; 16]),
            span_id: SpanId([2; 8]),
            parent_span_id: Some(SpanId([1; 8])),
            agent: AgentFields {
                request_model: Some("m".into()),
                input_tokens: Some(5),
                ..agent("chat")
            },
            ..SpanRecord::default()
        });
        builder.append(&SpanRecord {
            trace_id: TraceId([7; 16]),
            span_id: SpanId([3; 8]),
            parent_span_id: Some(SpanId([1; 8])),
            agent: AgentFields {
                tool_name: Some("rm".into()),
                ..agent("execute_tool")
            },
            attributes: &decision,
            ..SpanRecord::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let options = crate::segment::SegmentWriteOptions {
            row_group_rows: 1024,
            zstd_level: 3,
        };
        let batch = builder.finish();
        let meta =
            crate::segment::write_segment(dir.path(), 1, "standard", "2026-12-06", &batch, options)
                .unwrap();
        let codecs = leaf_codecs(&dir.path().join(&meta.path));
        // Every listed leaf names a real column (a renamed column would silently compress).
        assert_plain(&codecs, UNCOMPRESSED_SPAN_LEAVES);
        let columns = leaf_columns(&dir.path().join(&meta.path));
        // Attribute values: no dictionary.
        for leaf in NO_DICTIONARY_SPAN_LEAVES {
            let encodings = &columns[*leaf].1;
            assert!(
                !encodings.contains(&parquet::basic::Encoding::RLE_DICTIONARY),
                "{leaf}: {encodings:?}"
            );
        }
        // The time leaves: delta-encoded, no dictionary, no zstd.
        assert_plain(&codecs, DELTA_SPAN_LEAVES);
        for leaf in DELTA_SPAN_LEAVES {
            let encodings = &columns[*leaf].1;
            assert!(
                encodings.contains(&parquet::basic::Encoding::DELTA_BINARY_PACKED)
                    && !encodings.contains(&parquet::basic::Encoding::RLE_DICTIONARY)
                    && !encodings.contains(&parquet::basic::Encoding::PLAIN_DICTIONARY),
                "{leaf}: {encodings:?}"
            );
        }
        // Columns with values keep zstd, lists among them.
        assert_zstd(
            &codecs,
            &[
                "trace_id",
                "span_otlp",
                "attributes.entries.keys",
                "attributes.entries.values",
                "resource_otlp",
                "input_tokens",
                "events.list.item.attributes.entries.values",
            ],
        );
        // Columns without a value in this batch (no links, no log record, no content, no
        // output tokens) are written plain, whatever their type.
        assert_plain(
            &codecs,
            &[
                "links.list.item.trace_id",
                "links.list.item.attributes.entries.values",
                "log.body",
                "log.otlp",
                "log.observed_time",
                "content_refs",
                "output_tokens",
            ],
        );

        // The agent tables' files of the same segment.
        crate::agent::write_sidecars(dir.path(), 1, &meta.path, &[batch], 3).unwrap();
        let sidecars: Vec<std::path::PathBuf> = crate::agent::sidecar_paths(&meta.path)
            .map(|path| dir.path().join(path))
            .collect();
        let mut sidecar_codecs = Codecs::new();
        for path in &sidecars {
            sidecar_codecs.extend(leaf_codecs(path));
        }
        assert_plain(&sidecar_codecs, UNCOMPRESSED_SIDECAR_LEAVES);
        assert_plain(&sidecar_codecs, DELTA_SIDECAR_LEAVES);
        let mut sidecar_columns = std::collections::BTreeMap::new();
        for path in &sidecars {
            sidecar_columns.extend(leaf_columns(path));
        }
        for leaf in DELTA_SIDECAR_LEAVES {
            let encodings = &sidecar_columns[*leaf].1;
            assert!(
                encodings.contains(&parquet::basic::Encoding::DELTA_BINARY_PACKED)
                    && !encodings.contains(&parquet::basic::Encoding::RLE_DICTIONARY),
                "{leaf}: {encodings:?}"
            );
        }
        assert_zstd(
            &sidecar_codecs,
            &[
                "trace_id",
                "span_id",
                "session_id",
                "input_tokens",
                "reasoning",
            ],
        );
    }
}
