//! Point reads decoded by column groups on parallel threads.
//!
//! A read of a few rows (one session, one trace) with many columns costs mostly per-column
//! work: page reads, decompression, dictionaries, definition levels. One Parquet reader does
//! that column after column on one thread. Here the read columns are split into groups of
//! about equal cost, each group is read by its own reader on its own thread, and the groups'
//! batches are joined side by side.
//!
//! Invariants: the row filters run once, before any group is read, and narrow the row
//! selection ([`filtered_selection`]) as a Parquet reader's own row filter does; every group's
//! reader then has the same row groups, that selection and the same batch size, and no filter,
//! so each yields the same rows in the same order (a filter whose answer changed between two
//! calls could not misalign them). The joined batch holds the read columns in schema order,
//! exactly what one reader of all of them yields. Groups that disagree on their row counts are
//! an error, never a misaligned batch.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use arrow::array::{Array, BooleanArray, RecordBatch};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::error::ArrowError;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowPredicate, ParquetRecordBatchReader, RowSelection};

use crate::error::Error;

/// Reads of at most this many selected rows are split. A split read holds its whole result
/// at once; this bound is one batch of the unsplit reader, so it holds no more than that one.
pub(crate) const MAX_ROWS: u64 = crate::segment::READ_BATCH_ROWS as u64;
/// Reads of fewer root columns are not worth a thread.
pub(crate) const MIN_ROOTS: usize = 8;
/// Cost of a leaf column beyond its bytes: its page reader, codec and level decoding.
pub(crate) const LEAF_COST: u64 = 8 * 1024;
/// Most groups one read is split into.
const MAX_GROUPS: usize = 4;

/// How many groups a point read is split into here (1: not split).
pub(crate) fn groups() -> usize {
    // Asked once: `available_parallelism` reads the cgroup files on every call.
    static GROUPS: OnceLock<usize> = OnceLock::new();
    *GROUPS.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(MAX_GROUPS)
    })
}

/// Splits `roots` (ascending) into at most `groups` non-empty groups of near-equal total
/// `cost`, each ascending: the costliest root goes to the cheapest group, in turn.
pub(crate) fn split(
    roots: &[usize],
    cost: impl Fn(usize) -> u64,
    groups: usize,
) -> Vec<Vec<usize>> {
    let groups = groups.clamp(1, roots.len().max(1));
    let mut by_cost: Vec<(u64, usize)> = roots.iter().map(|root| (cost(*root), *root)).collect();
    by_cost.sort_unstable_by(|a, b| b.cmp(a));
    let mut split: Vec<(u64, Vec<usize>)> = vec![(0, Vec::new()); groups];
    for (cost, root) in by_cost {
        if let Some(cheapest) = split.iter_mut().min_by_key(|(total, _)| *total) {
            cheapest.0 = cheapest.0.saturating_add(cost);
            cheapest.1.push(root);
        }
    }
    split
        .into_iter()
        .filter_map(|(_, mut roots)| {
            roots.sort_unstable();
            (!roots.is_empty()).then_some(roots)
        })
        .collect()
}

/// The rows of `selection` that every filter keeps. Each filter runs once, in turn, over the
/// rows the ones before it kept, handed its own columns of them (`read(projection, rows)`),
/// as a Parquet reader runs its row filter; a NULL answer drops the row.
pub(crate) fn filtered_selection(
    mut selection: RowSelection,
    filters: Vec<Box<dyn ArrowPredicate>>,
    mut read: impl FnMut(&ProjectionMask, &RowSelection) -> crate::Result<ParquetRecordBatchReader>,
    filter_error: impl Fn(ArrowError) -> Error,
) -> crate::Result<RowSelection> {
    for mut filter in filters {
        if !selection.selects_any() {
            break;
        }
        let reader = read(filter.projection(), &selection)?;
        let mut masks: Vec<BooleanArray> = Vec::new();
        let mut rows = 0usize;
        for batch in reader {
            let batch = batch.map_err(&filter_error)?;
            let batch_rows = batch.num_rows();
            let mask = filter.evaluate(batch).map_err(&filter_error)?;
            if mask.len() != batch_rows {
                return Err(filter_error(ArrowError::ComputeError(format!(
                    "a row filter answered {} rows of {batch_rows}",
                    mask.len()
                ))));
            }
            rows += batch_rows;
            masks.push(if mask.null_count() == 0 {
                mask
            } else {
                arrow::compute::prep_null_mask_filter(&mask)
            });
        }
        if rows != selection.row_count() {
            return Err(filter_error(ArrowError::ComputeError(format!(
                "a row filter was handed {rows} rows of {}",
                selection.row_count()
            ))));
        }
        selection = selection.and_then(&RowSelection::from_filters(&masks));
    }
    Ok(selection)
}

/// Reads every reader to its end (the first on this thread, the others each on its own, or
/// here when a thread cannot be started) and joins their batches column-wise: reader `g` reads
/// the roots `groups[g]`, and the joined batches hold all the roots in ascending order.
pub(crate) fn read_joined(
    readers: Vec<ParquetRecordBatchReader>,
    groups: &[Vec<usize>],
) -> Result<Vec<RecordBatch>, ArrowError> {
    let panicked = || ArrowError::ComputeError("a segment column reader panicked".to_owned());
    let slots: Vec<Mutex<Option<ParquetRecordBatchReader>>> = readers
        .into_iter()
        .map(|reader| Mutex::new(Some(reader)))
        .collect();
    let read = |slot: &Mutex<Option<ParquetRecordBatchReader>>| {
        let reader = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
        reader.map_or_else(
            || {
                Err(ArrowError::ComputeError(
                    "a segment column reader was read twice".to_owned(),
                ))
            },
            |reader| reader.collect::<Result<Vec<_>, _>>(),
        )
    };
    let read_here = |slot| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(slot)))
            .unwrap_or_else(|_| Err(panicked()))
    };
    let Some((first, others)) = slots.split_first() else {
        return Ok(Vec::new());
    };
    let parts: Vec<Result<Vec<RecordBatch>, ArrowError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = others
            .iter()
            .map(|slot| {
                std::thread::Builder::new()
                    .spawn_scoped(scope, move || read(slot))
                    .ok()
            })
            .collect();
        let first = read_here(first);
        std::iter::once(first)
            .chain(
                others
                    .iter()
                    .zip(handles)
                    .map(|(slot, handle)| match handle {
                        Some(handle) => handle.join().unwrap_or_else(|_| Err(panicked())),
                        None => read_here(slot),
                    }),
            )
            .collect()
    });
    let parts = parts.into_iter().collect::<Result<Vec<_>, _>>()?;
    join(parts, groups)
}

/// Joins each group's batches column-wise (see [`read_joined`]).
fn join(
    parts: Vec<Vec<RecordBatch>>,
    groups: &[Vec<usize>],
) -> Result<Vec<RecordBatch>, ArrowError> {
    if parts.len() != groups.len() {
        return Err(ArrowError::ComputeError(format!(
            "{} column groups read, {} planned",
            parts.len(),
            groups.len()
        )));
    }
    let counts = |batches: &[RecordBatch]| -> Vec<usize> {
        batches
            .iter()
            .map(RecordBatch::num_rows)
            .filter(|rows| *rows > 0)
            .collect()
    };
    let first_counts = parts
        .first()
        .map(|batches| counts(batches))
        .unwrap_or_default();
    // Readers of the same rows with the same batch size cut the same batches; if not, each
    // group is joined whole.
    let parts: Vec<Vec<RecordBatch>> =
        if parts.iter().all(|batches| counts(batches) == first_counts) {
            parts
                .into_iter()
                .map(|batches| {
                    batches
                        .into_iter()
                        .filter(|batch| batch.num_rows() > 0)
                        .collect()
                })
                .collect()
        } else {
            parts
                .into_iter()
                .map(|batches| {
                    let Some(schema) = batches.first().map(RecordBatch::schema) else {
                        return Ok(Vec::new());
                    };
                    Ok(vec![arrow::compute::concat_batches(&schema, &batches)?])
                })
                .collect::<Result<_, ArrowError>>()?
        };
    // Where each output column comes from: (root, group, position in the group).
    let mut sources: Vec<(usize, usize, usize)> = groups
        .iter()
        .enumerate()
        .flat_map(|(group, roots)| {
            roots
                .iter()
                .enumerate()
                .map(move |(position, root)| (*root, group, position))
        })
        .collect();
    sources.sort_unstable();
    let batches = parts.first().map_or(0, Vec::len);
    let mut schema: Option<SchemaRef> = None;
    let mut joined = Vec::with_capacity(batches);
    for index in 0..batches {
        let pieces: Vec<&RecordBatch> = parts
            .iter()
            .map(|batches| {
                batches.get(index).ok_or_else(|| {
                    ArrowError::ComputeError(
                        "column groups of one segment read returned different rows".to_owned(),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        let rows = pieces.first().map_or(0, |batch| batch.num_rows());
        if pieces.iter().any(|batch| batch.num_rows() != rows) {
            return Err(ArrowError::ComputeError(format!(
                "column groups of one segment read returned different rows ({})",
                pieces
                    .iter()
                    .map(|batch| batch.num_rows().to_string())
                    .collect::<Vec<_>>()
                    .join(" vs ")
            )));
        }
        let schema = Arc::clone(schema.get_or_insert_with(|| {
            let fields: Vec<_> = sources
                .iter()
                .map(|(_, group, position)| {
                    Arc::clone(&pieces[*group].schema().fields()[*position])
                })
                .collect();
            let metadata = pieces[0].schema().metadata().clone();
            Arc::new(Schema::new_with_metadata(fields, metadata))
        }));
        let columns = sources
            .iter()
            .map(|(_, group, position)| Arc::clone(pieces[*group].column(*position)))
            .collect();
        joined.push(RecordBatch::try_new(schema, columns)?);
    }
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field};

    fn batch(names: &[&str], rows: std::ops::Range<i64>) -> RecordBatch {
        let fields: Vec<Field> = names
            .iter()
            .map(|name| Field::new(*name, DataType::Int64, false))
            .collect();
        let columns: Vec<ArrayRef> = names
            .iter()
            .enumerate()
            .map(|(column, _)| {
                Arc::new(Int64Array::from_iter_values(
                    rows.clone().map(|row| row * 10 + column as i64),
                )) as ArrayRef
            })
            .collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    #[test]
    fn split_balances_cost_and_keeps_each_group_ascending() {
        let roots = [0, 1, 2, 3, 4, 5];
        let cost = |root: usize| [100, 1, 1, 50, 50, 1][root];
        let groups = split(&roots, cost, 2);
        // 100 to one group, both 50s to the other, then the 1s alternate.
        assert_eq!(groups, vec![vec![0, 1, 5], vec![2, 3, 4]]);
        let totals: Vec<u64> = groups
            .iter()
            .map(|g| g.iter().map(|r| cost(*r)).sum())
            .collect();
        assert_eq!(totals, vec![102, 101]);
        // Never more groups than roots, never an empty one.
        assert_eq!(split(&[7], cost_one, 4), vec![vec![7]]);
        assert!(split(&[], cost_one, 2).is_empty());
    }

    fn cost_one(_: usize) -> u64 {
        1
    }

    #[test]
    fn join_puts_columns_in_root_order_across_groups_and_batches() {
        // Roots 0 and 2 in one group, 1 in the other; two batches each.
        let a = vec![batch(&["r0", "r2"], 0..3), batch(&["r0", "r2"], 3..5)];
        let b = vec![batch(&["r1"], 0..3), batch(&["r1"], 3..5)];
        let joined = join(vec![a, b], &[vec![0, 2], vec![1]]).unwrap();
        assert_eq!(joined.len(), 2);
        let names: Vec<&str> = joined[0]
            .schema_ref()
            .fields()
            .iter()
            .map(|field| field.name().as_str())
            .collect();
        assert_eq!(names, ["r0", "r1", "r2"]);
        assert_eq!(joined[1].num_rows(), 2);
        let r1 = joined[1]
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        // Row 3 of group b's only column (column 0 there): 3 * 10 + 0.
        assert_eq!(r1.value(0), 30);
    }

    #[test]
    fn join_realigns_differently_cut_batches_and_rejects_different_rows() {
        let a = vec![batch(&["r0"], 0..5)];
        let b = vec![batch(&["r1"], 0..2), batch(&["r1"], 2..5)];
        let joined = join(vec![a, b], &[vec![0], vec![1]]).unwrap();
        assert_eq!(joined.len(), 1);
        assert_eq!(joined[0].num_rows(), 5);
        let a = vec![batch(&["r0"], 0..5)];
        let b = vec![batch(&["r1"], 0..4)];
        let error = join(vec![a, b], &[vec![0], vec![1]]).unwrap_err();
        assert!(error.to_string().contains("different rows"), "{error}");
        // A string column joins the same way.
        let names = Arc::new(StringArray::from(vec!["x"])) as ArrayRef;
        let strings = RecordBatch::try_from_iter([("s", names)]).unwrap();
        let joined = join(
            vec![vec![batch(&["r0"], 0..1)], vec![strings]],
            &[vec![3], vec![1]],
        )
        .unwrap();
        assert_eq!(joined[0].schema_ref().field(0).name(), "s");
    }
}
