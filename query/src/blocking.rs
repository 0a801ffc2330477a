//! [`blocking_stream`]: a record-batch stream fed by a blocking thread, for leaves that read
//! files synchronously (the engine's scans, the stored agent tables).
//!
//! The thread sends batches through a small bounded channel; the async side only waits on the
//! channel, which takes part in tokio's task budget. Dropping the stream closes the channel, so
//! the thread stops at its next send (`Sender::is_closed` lets it stop earlier). A thread that
//! panics ends the stream with an error: a query never reads a reader's failure as its end.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use tokio::sync::mpsc;

/// Batches buffered between the blocking reader and the consumer.
const CHANNEL_BATCHES: usize = 2;

/// Where a blocking reader sends its batches.
pub(crate) type BatchSender = mpsc::Sender<DfResult<RecordBatch>>;

/// Runs `read` on a blocking thread (detached: it ends when done or when the stream is
/// dropped) and streams what it sends, with `schema`.
pub(crate) fn blocking_stream(
    schema: SchemaRef,
    read: impl FnOnce(&BatchSender) + Send + 'static,
) -> DfResult<SendableRecordBatchStream> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|error| DataFusionError::External(Box::new(error)))?;
    let (sender, receiver) = mpsc::channel(CHANNEL_BATCHES);
    drop(runtime.spawn_blocking(move || {
        // A reader that panics ends the stream with an error, never as if its rows were all.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(&sender)));
        if let Err(panic) = outcome {
            let cause = panic
                .downcast_ref::<&str>()
                .map(|text| (*text).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_owned());
            let _ = sender.blocking_send(Err(DataFusionError::Internal(format!(
                "a table reader failed: {cause}"
            ))));
        }
    }));
    let batches = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|batch| (batch, receiver))
    });
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::Schema;
    use futures::StreamExt as _;

    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_reader_that_panics_ends_its_stream_with_an_error() {
        let schema = Arc::new(Schema::empty());
        let mut stream = blocking_stream(schema, |_sender| panic!("bad page")).unwrap();
        let first = stream.next().await.expect("an error, not the end");
        let error = first.unwrap_err().to_string();
        assert!(error.contains("a table reader failed: bad page"), "{error}");
        assert!(stream.next().await.is_none());
    }
}
