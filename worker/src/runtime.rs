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
    AttemptResult, AttemptStatus, FetchRequest, Heartbeat, LogBatch, LogChunk, PackChunk, Progress,
    Register, WorkerMessage, progress,
};
use braid_shared::task;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::attempt::{Place, Update, run_attempt};
use crate::mirror::{Fetched, Fetcher, Mirrors};
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
    /// The coordinator refused the worker: a token, or a version, it does not take.
    #[error("the coordinator refused this worker: {0}")]
    Refused(String),
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
    pub labels: std::collections::BTreeMap<String, String>,
    /// braid's cache folder, where the worker's worktrees go (see [`crate::cache::root`]).
    pub cache: PathBuf,
    /// Repositories whose objects are on this machine already: repository id to git
    /// folder. Only a worker started beside its coordinator knows any (embedded mode);
    /// the rest comes over the wire.
    pub borrow: HashMap<String, PathBuf>,
    /// The worker's token, sent with every call.
    pub auth: braid_shared::auth::Bearer,
}

/// Largest piece of a pack or log file in one message.
const CHUNK: usize = 1 << 20;

/// How often a running attempt's new log bytes go to the coordinator.
const LOG_SHIPPING: Duration = Duration::from_millis(250);

/// How serving a coordinator ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The coordinator said the work is over.
    Shutdown,
    /// The coordinator closed the stream (it stopped, or restarts).
    Closed,
    /// The worker was told to stop.
    Stopped,
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
) -> Result<Ended, WorkerError> {
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
    let mut client = WorkerServiceClient::with_interceptor(channel.clone(), options.auth.clone());
    let mut down = client
        .attach(ReceiverStream::new(up_rx))
        .await
        .map_err(|status| match status.code() {
            tonic::Code::Unauthenticated | tonic::Code::FailedPrecondition => {
                WorkerError::Refused(status.message().to_owned())
            }
            _ => WorkerError::Rpc(status),
        })?
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
    let mirrors = Arc::new(Mirrors::new(
        &options.cache,
        options.borrow.clone(),
        fetcher(channel.clone(), options.auth.clone(), worker_id.clone()),
    ));
    let logs = options.cache.join("logs");
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
                        let job = Job {
                            spec,
                            lease: assign.lease_id,
                            pool: Arc::clone(&pool),
                            mirrors: Arc::clone(&mirrors),
                            logs: logs.clone(),
                        };
                        start_attempt(job, token, up.clone(), done_tx.clone());
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
                        break Ok(Ended::Shutdown);
                    }
                    Some(Down::Registered(_)) | None => {}
                },
                Ok(None) => break Ok(Ended::Closed),
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
            () = stop.cancelled() => break Ok(Ended::Stopped),
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

/// An assignment as a slot runs it.
struct Job {
    spec: braid_shared::proto::AttemptSpec,
    lease: String,
    pool: Arc<WorktreePool>,
    mirrors: Arc<Mirrors>,
    /// The folder under which each attempt gets a log folder of its own.
    logs: PathBuf,
}

fn start_attempt(
    job: Job,
    cancel: CancellationToken,
    up: mpsc::Sender<WorkerMessage>,
    done: mpsc::Sender<AttemptResult>,
) {
    task::spawn("attempt", async move {
        let Job {
            spec,
            lease,
            pool,
            mirrors,
            logs,
        } = job;
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
        let mut result = match prepare(&spec, &mirrors, &logs).await {
            Ok((place, folder)) => {
                let shipper =
                    LogShipper::start(folder.path().to_owned(), lease.clone(), up.clone());
                let result = run_attempt(&spec, &lease, &pool, &place, cancel, updates).await;
                shipper.finish().await;
                drop(folder);
                result
            }
            Err(why) => {
                drop(updates);
                AttemptResult {
                    lease_id: lease.clone(),
                    status: AttemptStatus::Failed as i32,
                    error: why,
                    infrastructure: true,
                    ..Default::default()
                }
            }
        };
        let _ = forward.await;
        // The pack goes up in pieces ahead of the result, on the same ordered stream.
        for piece in std::mem::take(&mut result.pack).chunks(CHUNK) {
            send(
                &up,
                Up::Pack(PackChunk {
                    lease_id: lease.clone(),
                    data: piece.to_vec(),
                }),
            )
            .await;
        }
        tracing::debug!(task = %spec.task_id, attempt = spec.attempt, status = ?AttemptStatus::try_from(result.status), "attempt done");
        let _ = done.send(result).await;
    });
}

/// The mirror holding the attempt's commits, and a fresh log folder for it.
async fn prepare(
    spec: &braid_shared::proto::AttemptSpec,
    mirrors: &Mirrors,
    logs: &std::path::Path,
) -> Result<(Place, tempfile::TempDir), String> {
    let commits: Vec<&str> = [spec.base_commit.as_str(), spec.diff_base.as_str()]
        .into_iter()
        .filter(|c| !c.is_empty())
        .collect();
    let source = mirrors
        .ensure(&spec.repository, &commits)
        .await
        .map_err(|e| format!("could not get the repository's objects: {e}"))?;
    let folder = std::fs::create_dir_all(logs)
        .and_then(|()| tempfile::Builder::new().prefix("attempt-").tempdir_in(logs))
        .map_err(|e| format!("could not make a log folder in {}: {e}", logs.display()))?;
    let place = Place {
        source,
        logs: folder.path().to_owned(),
    };
    Ok((place, folder))
}

/// Sends what a running attempt writes to its log folder up the stream as it grows.
struct LogShipper {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl LogShipper {
    fn start(dir: PathBuf, lease: String, up: mpsc::Sender<WorkerMessage>) -> Self {
        let stop = CancellationToken::new();
        let until = stop.clone();
        let task = task::spawn("log-shipping", async move {
            let mut sent: HashMap<String, u64> = HashMap::new();
            let mut every = tokio::time::interval(LOG_SHIPPING);
            loop {
                let last = tokio::select! {
                    _ = every.tick() => false,
                    () = until.cancelled() => true,
                };
                ship_logs(&dir, &lease, &mut sent, &up).await;
                if last {
                    break;
                }
            }
        });
        LogShipper { stop, task }
    }

    /// Ships what is left, once the attempt's processes are gone.
    async fn finish(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// One pass over a log folder: the bytes of each file past what was sent.
async fn ship_logs(
    dir: &std::path::Path,
    lease: &str,
    sent: &mut HashMap<String, u64>,
    up: &mpsc::Sender<WorkerMessage>,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let seen = sent.get(&name).copied();
        let offset = seen.unwrap_or(0);
        let bytes = match read_from(&entry.path(), offset) {
            Ok(bytes) if !bytes.is_empty() => bytes,
            // An empty file is made on the other side too, once.
            Ok(_) if seen.is_none() => {
                send(
                    up,
                    Up::Log(LogChunk {
                        lease_id: lease.to_owned(),
                        name: name.clone(),
                        offset: 0,
                        data: Vec::new(),
                    }),
                )
                .await;
                sent.insert(name, 0);
                continue;
            }
            _ => continue,
        };
        let mut at = offset;
        for piece in bytes.chunks(CHUNK) {
            send(
                up,
                Up::Log(LogChunk {
                    lease_id: lease.to_owned(),
                    name: name.clone(),
                    offset: at,
                    data: piece.to_vec(),
                }),
            )
            .await;
            at += piece.len() as u64;
        }
        sent.insert(name, at);
    }
}

/// A file's bytes from `offset` to its end.
fn read_from(path: &std::path::Path, offset: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    if file.metadata()?.len() <= offset {
        return Ok(Vec::new());
    }
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Fetches objects from the coordinator over `channel`, as the worker `worker`.
fn fetcher(channel: Channel, auth: braid_shared::auth::Bearer, worker: String) -> Fetcher {
    Arc::new(move |repository, want, have| {
        let mut client = WorkerServiceClient::with_interceptor(channel.clone(), auth.clone());
        let request = FetchRequest {
            worker_id: worker.clone(),
            repository,
            want,
            have,
        };
        Box::pin(async move {
            let refused = |status: tonic::Status| {
                format!(
                    "the coordinator did not send the objects: {}",
                    status.message()
                )
            };
            let mut stream = client
                .fetch_objects(request)
                .await
                .map_err(refused)?
                .into_inner();
            let mut fetched = Fetched::default();
            let mut first = true;
            while let Some(chunk) = stream.message().await.map_err(refused)? {
                if std::mem::take(&mut first) {
                    fetched.shallow = chunk.shallow;
                }
                fetched.pack.extend_from_slice(&chunk.data);
            }
            Ok(fetched)
        })
    })
}

async fn send(up: &mpsc::Sender<WorkerMessage>, kind: Up) {
    // A closed stream is noticed by the receiving side of the loop.
    let _ = up.send(WorkerMessage { kind: Some(kind) }).await;
}
