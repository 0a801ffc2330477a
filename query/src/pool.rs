//! [`QueryPool`]: where queries run, apart from the caller's runtime.
//!
//! Every query (parse, plan, execute, drop) runs as a task on the pool's own multi-thread
//! runtime, whose threads (workers and the blocking threads the scans read on) have a large
//! stack. That keeps the server's runtime (health checks, ingest) responsive while queries
//! burn CPU, and keeps deep-but-allowed plans off small stacks.
//!
//! Invariants:
//! - at most `max_concurrent` queries run at once; others wait for a slot within their own
//!   deadline, and one that never gets a slot fails with [`Error::Busy`] (retry later), not
//!   as a timeout of its own;
//! - when the deadline passes, the task is aborted: its streams are dropped at their next
//!   yield, so scans stop and the CPU returns;
//! - a panic in a query becomes [`Error::Panicked`] with its message, never a torn
//!   connection.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::sync::Semaphore;

use crate::error::{Error, Result};

/// Stack of each query thread. Only touched pages are committed, so this is address space,
/// not memory.
const QUERY_THREAD_STACK: usize = 64 << 20;

/// A runtime for queries plus the slots that bound how many run at once.
pub(crate) struct QueryPool {
    runtime: Option<Runtime>,
    slots: Arc<Semaphore>,
    max_concurrent: usize,
}

impl std::fmt::Debug for QueryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryPool")
            .field("free_slots", &self.slots.available_permits())
            .finish_non_exhaustive()
    }
}

impl QueryPool {
    /// A pool of `threads` workers running at most `max_concurrent` queries.
    pub(crate) fn new(threads: usize, max_concurrent: usize) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .max_blocking_threads(64)
            .thread_stack_size(QUERY_THREAD_STACK)
            .thread_name("sightline-query")
            .enable_all()
            .build()
            .map_err(|error| Error::Internal(format!("cannot start the query threads: {error}")))?;
        Ok(QueryPool {
            runtime: Some(runtime),
            slots: Arc::new(Semaphore::new(max_concurrent.max(1))),
            max_concurrent: max_concurrent.max(1),
        })
    }

    /// Runs `query` on the pool within `timeout` (waiting for a slot included).
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        timeout: Duration,
        query: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let Some(runtime) = &self.runtime else {
            return Err(Error::Internal("the query pool is shut down".to_owned()));
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let slot = match tokio::time::timeout_at(deadline, Arc::clone(&self.slots).acquire_owned())
            .await
        {
            Ok(Ok(slot)) => slot,
            Ok(Err(_closed)) => {
                return Err(Error::Internal("the query pool is shut down".to_owned()));
            }
            Err(_) => {
                return Err(Error::Busy {
                    slots: self.max_concurrent,
                    waited: timeout,
                });
            }
        };
        let mut task = runtime.spawn(async move {
            let result = query.await;
            drop(slot);
            result
        });
        match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) if join.is_panic() => {
                Err(Error::Panicked(panic_message(join.into_panic().as_ref())))
            }
            Ok(Err(join)) => Err(Error::Internal(format!("query task failed: {join}"))),
            Err(_) => {
                // Dropping the task's future drops its streams; the slot is freed with it.
                task.abort();
                Err(Error::Timeout(timeout))
            }
        }
    }
}

impl Drop for QueryPool {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is not allowed inside another runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The text of a panic payload (`&str` or `String`; anything else is named as such).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_panicking_query_is_an_error_with_its_message_and_the_pool_goes_on() {
        let pool = QueryPool::new(1, 1).unwrap();
        let error = pool
            .run(Duration::from_secs(5), async {
                if std::hint::black_box(true) {
                    panic!("index out of bounds: the len is 3 but the index is 7");
                }
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(
            matches!(&error, Error::Panicked(message) if message.contains("index out of bounds")),
            "{error:?}"
        );
        assert_eq!(error.kind(), crate::ErrorKind::Internal);
        // The one slot is free again.
        let answer = pool
            .run(Duration::from_secs(5), async { Ok(42) })
            .await
            .unwrap();
        assert_eq!(answer, 42);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_query_that_never_gets_a_slot_is_busy_not_timed_out() {
        let pool = Arc::new(QueryPool::new(1, 1).unwrap());
        let holder = Arc::clone(&pool);
        let blocker = tokio::spawn(async move {
            holder
                .run(Duration::from_secs(30), async {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    Ok(())
                })
                .await
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let error = pool
            .run(Duration::from_millis(100), async { Ok(()) })
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Busy { slots: 1, .. }), "{error:?}");
        assert_eq!(error.kind(), crate::ErrorKind::Transient);
        blocker.await.unwrap().unwrap();
    }
}
