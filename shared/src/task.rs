//! The one way braid spawns a task: named, and inside a tracing span of that name, so every
//! log line says which task wrote it.

use std::future::Future;

use tokio::task::JoinHandle;
use tracing::Instrument;

/// Spawns `future` on the current runtime as a task called `name`.
pub fn spawn<F>(name: &'static str, future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    #[allow(clippy::disallowed_methods)] // this is the one helper
    tokio::spawn(future.instrument(tracing::debug_span!("task", name)))
}
