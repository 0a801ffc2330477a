//! Sizes of arrays whose strings are views (`Utf8View`, `BinaryView`: the agent tables' string
//! columns, and what DataFusion makes of them).
//!
//! A view array's buffers are shared: a filtered, joined or sliced array still points into the
//! buffers of the pages it was decoded from (or of a whole join side), and
//! `get_array_memory_size` counts all of them for every array that shares them. Budgets built
//! on that count would refuse work that fits. So:
//! - [`array_size`] counts what an array's values need: 16 bytes per view plus the bytes of the
//!   values too long to be inline, as a compacted copy would hold;
//! - [`compact`] makes a batch that is kept (a query's result) hold only that.
//!
//! Invariant: for every other type both are `get_array_memory_size` and the batch itself.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::DataType;

/// Values at most this long live inside their view.
const INLINE: u32 = 12;

/// Bytes `array`'s values need (for view arrays, not the shared buffers they point into).
pub(crate) fn array_size(array: &dyn Array) -> usize {
    match array.data_type() {
        DataType::Utf8View => view_size(array.as_string_view().views(), array),
        DataType::BinaryView => view_size(array.as_binary_view().views(), array),
        _ => array.get_array_memory_size(),
    }
}

fn view_size(views: &[u128], array: &dyn Array) -> usize {
    let long: usize = views
        .iter()
        .map(|view| {
            // The low 32 bits of a view are the value's length.
            let length = *view as u32;
            if length > INLINE { length as usize } else { 0 }
        })
        .sum();
    let nulls = array.nulls().map_or(0, |nulls| nulls.len().div_ceil(8));
    std::mem::size_of_val(views) + long + nulls
}

/// `batch` with each view column copied into buffers of its own values when its buffers
/// hold more than twice what it points at; other columns are kept as they are.
pub(crate) fn compact(batch: RecordBatch) -> RecordBatch {
    let oversized = |array: &ArrayRef| {
        matches!(array.data_type(), DataType::Utf8View | DataType::BinaryView)
            && array.get_array_memory_size() > 2 * array_size(array.as_ref())
    };
    if !batch.columns().iter().any(oversized) {
        return batch;
    }
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|array| {
            if !oversized(array) {
                return Arc::clone(array);
            }
            match array.data_type() {
                DataType::Utf8View => Arc::new(array.as_string_view().gc()) as ArrayRef,
                _ => Arc::new(array.as_binary_view().gc()) as ArrayRef,
            }
        })
        .collect();
    // Same schema, same types, same lengths: only the buffers changed.
    RecordBatch::try_new(batch.schema(), columns).unwrap_or(batch)
}

#[cfg(test)]
mod tests {
    use arrow::array::StringViewArray;
    use arrow::datatypes::{Field, Schema};

    use super::*;

    #[test]
    fn a_slice_counts_its_own_values_and_compacts_to_them() {
        let long = "x".repeat(1000);
        let values: Vec<Option<&str>> = (0..1000)
            .map(|row| match row % 3 {
                0 => Some(long.as_str()),
                1 => Some("short"),
                _ => None,
            })
            .collect();
        let array: ArrayRef = Arc::new(StringViewArray::from(values));
        let slice = array.slice(0, 4); // rows 0..4: two long values, one short, one NULL
        assert!(slice.get_array_memory_size() > 300_000);
        let size = array_size(slice.as_ref());
        assert_eq!(size, 4 * 16 + 2 * 1000 + 1);

        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8View, true)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::clone(&slice)]).unwrap();
        let compacted = compact(batch);
        assert!(compacted.get_array_memory_size() < 4_000);
        assert_eq!(compacted.column(0).as_ref(), slice.as_ref());
        // A compact batch is kept as it is.
        let again = compact(compacted.clone());
        assert!(Arc::ptr_eq(again.column(0), compacted.column(0)));
    }

    #[test]
    fn other_types_keep_their_memory_size() {
        let array: ArrayRef = Arc::new(arrow::array::StringArray::from(vec!["a", "bb"]));
        assert_eq!(array_size(array.as_ref()), array.get_array_memory_size());
    }
}
