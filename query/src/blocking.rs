//! [`blocking_stream`]: a record-batch stream fed by a blocking thread, for leaves that read
//! files synchronously (the engine's scans, the stored agent tables).
//!
//! The thread sends batches through a small bounded channel; the async side only waits on the
//! channel, which takes part in tokio's task budget. Dropping the stream closes the channel, so
//! the thread stops at its next send (`Sender::is_closed` lets it stop earlier).

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
    drop(runtime.spawn_blocking(move || read(&sender)));
    let batches = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|batch| (batch, receiver))
    });
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
}
