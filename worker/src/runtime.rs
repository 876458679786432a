//! The worker's side of the stream: register, take assignments into slots, report progress,
//! heartbeats and results, and release everything at the end.
//!
//! Invariant: the worker never runs more attempts than it registered slots for, never
//! touches the user's checkout, and removes every worktree it made before it returns.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use braid_shared::proto::coordinator_message::Kind as Down;
use braid_shared::proto::worker_message::Kind as Up;
use braid_shared::proto::worker_service_client::WorkerServiceClient;
use braid_shared::proto::{
    AttemptResult, AttemptStatus, Heartbeat, LogBatch, Progress, Register, WorkerMessage, progress,
};
use braid_shared::task;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::attempt::{Update, run_attempt};
use crate::worktree_pool::WorktreePool;

/// How long a worker that is told to stop waits for its attempts to wind down.
const WIND_DOWN: Duration = Duration::from_secs(15);

/// Errors that end a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The coordinator's address is not usable.
    #[error("bad coordinator address {url}: {detail}")]
    Address {
        /// The address as given.
        url: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The coordinator could not be reached.
    #[error("could not connect to the coordinator at {url}: {source}")]
    Connect {
        /// The address.
        url: String,
        /// The transport's error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The coordinator refused or broke the stream.
    #[error("the coordinator ended the stream: {0}")]
    Rpc(#[from] tonic::Status),
    /// The coordinator broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// How a worker presents itself.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// A name for reports.
    pub name: String,
    /// Attempts run at once.
    pub slots: u32,
    /// Labels for placement.
    pub labels: HashMap<String, String>,
    /// braid's cache folder, where the worker's worktrees go (see [`crate::cache::root`]).
    pub cache: PathBuf,
}

/// Opens a channel to a coordinator at `url`: `unix:/path/to.sock` or `http://host:port`.
pub async fn channel(url: &str) -> Result<Channel, WorkerError> {
    if let Some(path) = url.strip_prefix("unix:") {
        let path = PathBuf::from(format!("/{}", path.trim_start_matches('/')));
        let connector = tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        });
        // The authority is not used for a Unix socket, but the URI must be well formed.
        return Endpoint::from_static("http://braid.local")
            .connect_with_connector(connector)
            .await
            .map_err(|source| WorkerError::Connect {
                url: url.to_owned(),
                source,
            });
    }
    let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|e| WorkerError::Address {
        url: url.to_owned(),
        detail: e.to_string(),
    })?;
    endpoint
        .connect()
        .await
        .map_err(|source| WorkerError::Connect {
            url: url.to_owned(),
            source,
        })
}

/// Serves the coordinator at `url` until it says shut down, the stream ends, or `stop` fires.
pub async fn serve(
    url: &str,
    options: WorkerOptions,
    stop: CancellationToken,
) -> Result<(), WorkerError> {
    let channel = channel(url).await?;
    let (up, up_rx) = mpsc::channel::<WorkerMessage>(256);
    send(
        &up,
        Up::Register(Register {
            name: options.name.clone(),
            slots: options.slots.max(1),
            labels: options.labels.clone(),
            version: braid_shared::VERSION.to_owned(),
        }),
    )
    .await;
    let mut client = WorkerServiceClient::new(channel);
    let mut down = client
        .attach(ReceiverStream::new(up_rx))
        .await?
        .into_inner();
    let registered = match down.message().await? {
        Some(msg) => match msg.kind {
            Some(Down::Registered(registered)) => registered,
            other => {
                return Err(WorkerError::Protocol(format!(
                    "expected Registered, got {other:?}"
                )));
            }
        },
        None => {
            return Err(WorkerError::Protocol(
                "stream closed before Registered".into(),
            ));
        }
    };
    let worker_id = registered.worker_id.clone();
    tracing::info!(%worker_id, slots = options.slots, "worker registered");

    let pool = Arc::new(WorktreePool::new(worker_id.clone(), options.cache.clone()));
    let mut running: HashMap<String, CancellationToken> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::channel::<AttemptResult>(64);
    let every = Duration::from_millis(registered.heartbeat_interval_ms.max(50));
    let mut heartbeat = tokio::time::interval(every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let ended = loop {
        tokio::select! {
            msg = down.message() => match msg {
                Ok(Some(msg)) => match msg.kind {
                    Some(Down::Assign(assign)) => {
                        let Some(spec) = assign.attempt else {
                            tracing::warn!(lease = %assign.lease_id, "assignment without an attempt");
                            continue;
                        };
                        if running.contains_key(&assign.lease_id) {
                            continue;
                        }
                        if running.len() >= options.slots as usize {
                            tracing::warn!(lease = %assign.lease_id, "assignment past the free slots");
                        }
                        send(&up, Up::AssignAck(braid_shared::proto::AssignAck {
                            lease_id: assign.lease_id.clone(),
                        })).await;
                        let token = stop.child_token();
                        running.insert(assign.lease_id.clone(), token.clone());
                        start_attempt(spec, assign.lease_id, Arc::clone(&pool), token, up.clone(), done_tx.clone());
                    }
                    Some(Down::Cancel(cancel)) => {
                        if let Some(token) = running.get(&cancel.lease_id) {
                            tracing::info!(lease = %cancel.lease_id, reason = %cancel.reason, "cancelling");
                            token.cancel();
                        }
                    }
                    Some(Down::ResultAck(ack)) => {
                        if !ack.accepted {
                            tracing::warn!(lease = %ack.lease_id, reason = %ack.reason, "result refused");
                        }
                    }
                    Some(Down::Shutdown(shutdown)) => {
                        tracing::info!(reason = %shutdown.reason, "shutting down");
                        break Ok(());
                    }
                    Some(Down::Registered(_)) | None => {}
                },
                Ok(None) => break Ok(()),
                Err(status) => break Err(WorkerError::Rpc(status)),
            },
            Some(result) = done_rx.recv() => {
                running.remove(&result.lease_id);
                send(&up, Up::Result(result)).await;
            }
            _ = heartbeat.tick() => {
                let free = (options.slots as usize).saturating_sub(running.len()) as u32;
                send(&up, Up::Heartbeat(Heartbeat {
                    free_slots: free,
                    running: running.keys().cloned().collect(),
                })).await;
            }
            () = stop.cancelled() => break Ok(()),
        }
    };

    // Wind down: stop what runs, still report it, then remove every worktree.
    for token in running.values() {
        token.cancel();
    }
    let deadline = tokio::time::Instant::now() + WIND_DOWN;
    while !running.is_empty() {
        match tokio::time::timeout_at(deadline, done_rx.recv()).await {
            Ok(Some(result)) => {
                running.remove(&result.lease_id);
                send(&up, Up::Result(result)).await;
            }
            _ => break,
        }
    }
    pool.close().await;
    drop(up);
    ended
}

fn start_attempt(
    spec: braid_shared::proto::AttemptSpec,
    lease: String,
    pool: Arc<WorktreePool>,
    cancel: CancellationToken,
    up: mpsc::Sender<WorkerMessage>,
    done: mpsc::Sender<AttemptResult>,
) {
    task::spawn("attempt", async move {
        let (updates, mut update_rx) = mpsc::channel::<Update>(64);
        let forward = {
            let up = up.clone();
            let lease = lease.clone();
            task::spawn("progress", async move {
                while let Some(update) = update_rx.recv().await {
                    let kind = match update {
                        Update::Phase(phase) => progress::Kind::Phase(phase as i32),
                        Update::Lines(lines) => {
                            progress::Kind::Logs(LogBatch { lines, dropped: 0 })
                        }
                    };
                    send(
                        &up,
                        Up::Progress(Progress {
                            lease_id: lease.clone(),
                            kind: Some(kind),
                        }),
                    )
                    .await;
                }
            })
        };
        let result = run_attempt(&spec, &lease, &pool, cancel, updates).await;
        let _ = forward.await;
        tracing::debug!(task = %spec.task_id, attempt = spec.attempt, status = ?AttemptStatus::try_from(result.status), "attempt done");
        let _ = done.send(result).await;
    });
}

async fn send(up: &mpsc::Sender<WorkerMessage>, kind: Up) {
    // A closed stream is noticed by the receiving side of the loop.
    let _ = up.send(WorkerMessage { kind: Some(kind) }).await;
}
