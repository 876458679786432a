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
    #[error(
        "could not connect to the coordinator at {url}: {}",
        braid_shared::error_chain(source)
    )]
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
    /// Attach again when the stream breaks or the coordinator restarts (`braid worker`);
    /// otherwise the worker ends with its stream (a run's own local workers).
    pub reconnect: bool,
    /// When it fires, the worker drains: it takes nothing new, hands back what it is still
    /// given, finishes what it runs, and ends.
    pub drain: CancellationToken,
    /// What plans may ask of its sandboxes.
    pub trust: crate::sandbox::Trust,
}

/// Largest piece of a pack or log file in one message.
const CHUNK: usize = 1 << 20;

/// How often a running attempt's new log bytes go to the coordinator.
const LOG_SHIPPING: Duration = Duration::from_millis(250);

/// TLS for an `https:` coordinator: the system's roots, and the authority in the PEM file
/// `$BRAID_TLS_CA` when it is set (a coordinator with a certificate of its own).
fn tls() -> Result<tonic::transport::ClientTlsConfig, WorkerError> {
    let mut config = tonic::transport::ClientTlsConfig::new().with_native_roots();
    if let Some(path) = std::env::var_os("BRAID_TLS_CA").filter(|p| !p.is_empty()) {
        let pem = std::fs::read(&path).map_err(|e| WorkerError::Address {
            url: format!("$BRAID_TLS_CA={}", PathBuf::from(&path).display()),
            detail: format!("cannot read the certificate authority: {e}"),
        })?;
        config = config.ca_certificate(tonic::transport::Certificate::from_pem(pem));
    }
    Ok(config)
}

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

/// Opens a channel to a coordinator at `url`: `unix:/path/to.sock`, `http://host:port`, or
/// `https://host:port` (see [`tls`]).
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
    let mut endpoint = Endpoint::from_shared(url.to_owned()).map_err(|e| WorkerError::Address {
        url: url.to_owned(),
        detail: e.to_string(),
    })?;
    endpoint = endpoint.tcp_nodelay(true);
    if url.starts_with("https:") {
        endpoint = endpoint
            .tls_config(tls()?)
            .map_err(|source| WorkerError::Connect {
                url: url.to_owned(),
                source,
            })?;
    }
    endpoint
        .connect()
        .await
        .map_err(|source| WorkerError::Connect {
            url: url.to_owned(),
            source,
        })
}

/// What a worker keeps from one stream to the next: its worktrees, its copies of
/// repositories, the attempts it runs, and the results the coordinator has not taken yet.
struct Kept {
    pool: Arc<WorktreePool>,
    mirrors: Arc<Mirrors>,
    /// The current connection, for fetches: the channel and the worker's id on it.
    connection: Arc<std::sync::Mutex<Option<(Channel, String)>>>,
    logs: PathBuf,
    running: HashMap<String, Running>,
    /// Results sent and not yet answered, sent again on the next stream.
    unanswered: HashMap<String, (AttemptResult, u32)>,
    done_tx: mpsc::Sender<AttemptResult>,
    done_rx: mpsc::Receiver<AttemptResult>,
    /// What running attempts report (progress, log bytes), for whichever stream is up.
    outbox_tx: mpsc::Sender<WorkerMessage>,
    outbox_rx: mpsc::Receiver<WorkerMessage>,
}

struct Running {
    cancel: CancellationToken,
    spec_key: String,
}

/// Serves the coordinator at `url` until it says shut down, `stop` fires, or (without
/// `reconnect`) the stream ends. With `reconnect`, a stream that breaks or a coordinator
/// that restarts is attached to again after a jittered backoff, and the attempts running
/// meanwhile go on: the worker registers again with them, and the coordinator takes them
/// back under their leases.
pub async fn serve(
    url: &str,
    options: WorkerOptions,
    stop: CancellationToken,
) -> Result<Ended, WorkerError> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let owner = format!(
        "w{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let connection = Arc::new(std::sync::Mutex::new(None));
    let (done_tx, done_rx) = mpsc::channel::<AttemptResult>(64);
    let (outbox_tx, outbox_rx) = mpsc::channel::<WorkerMessage>(256);
    let mut kept = Kept {
        pool: Arc::new(WorktreePool::new(owner, options.cache.clone())),
        mirrors: Arc::new(Mirrors::new(
            &options.cache,
            options.borrow.clone(),
            fetcher(Arc::clone(&connection), options.auth.clone()),
        )),
        connection,
        logs: options.cache.join("logs"),
        running: HashMap::new(),
        unanswered: HashMap::new(),
        done_tx,
        done_rx,
        outbox_tx,
        outbox_rx,
    };
    let mut backoff = Duration::from_millis(500);
    let mut attached_once = false;
    let ended = loop {
        let attached = &mut attached_once;
        let session = session(url, &options, &mut kept, &stop, attached).await;
        let why = match session {
            Ok(ended @ (Ended::Shutdown | Ended::Stopped)) => break Ok(ended),
            Ok(Ended::Closed) if options.reconnect => {
                backoff = Duration::from_millis(500);
                "the coordinator closed the stream".to_owned()
            }
            Err(err @ (WorkerError::Connect { .. } | WorkerError::Rpc(_))) if options.reconnect => {
                err.to_string()
            }
            other => break other,
        };
        let wait = backoff.mul_f64(0.5 + fastrand::f64());
        eprintln!(
            "braid worker: {why}; {} attempt(s) still running; trying again in {:.1}s",
            kept.running.len(),
            wait.as_secs_f64()
        );
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => break Ok(Ended::Stopped),
        }
        backoff = (backoff * 2).min(Duration::from_secs(15));
    };
    // However it ended: stop what still runs (it reports to no one now) and remove every
    // worktree.
    for attempt in kept.running.values() {
        attempt.cancel.cancel();
    }
    let deadline = tokio::time::Instant::now() + WIND_DOWN;
    while !kept.running.is_empty() {
        match tokio::time::timeout_at(deadline, kept.done_rx.recv()).await {
            Ok(Some(result)) => {
                kept.running.remove(&result.lease_id);
            }
            _ => break,
        }
    }
    kept.pool.close().await;
    ended
}

/// One stream: register (with the attempts still running), send the results not yet
/// answered, then serve until the stream ends.
async fn session(
    url: &str,
    options: &WorkerOptions,
    kept: &mut Kept,
    stop: &CancellationToken,
    attached_once: &mut bool,
) -> Result<Ended, WorkerError> {
    let channel = channel(url).await?;
    let (up, up_rx) = mpsc::channel::<WorkerMessage>(256);
    let running = kept
        .running
        .iter()
        .map(|(lease, r)| braid_shared::proto::Running {
            lease_id: lease.clone(),
            spec_key: r.spec_key.clone(),
        })
        .collect();
    send(
        &up,
        Up::Register(Register {
            name: options.name.clone(),
            slots: options.slots.max(1),
            labels: options.labels.clone(),
            version: braid_shared::VERSION.to_owned(),
            running,
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
    if std::mem::replace(attached_once, true) {
        eprintln!(
            "braid worker: attached again as {worker_id}, with {} attempt(s) still running",
            kept.running.len()
        );
    }
    tracing::info!(%worker_id, slots = options.slots, "worker registered");
    *kept
        .connection
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((channel, worker_id));
    // Results the last stream did not get answered go again; twice at most.
    let again: Vec<AttemptResult> = kept
        .unanswered
        .values_mut()
        .filter(|(_, sent)| *sent < 2)
        .map(|(result, sent)| {
            *sent += 1;
            result.clone()
        })
        .collect();
    kept.unanswered.retain(|_, (_, sent)| *sent < 2);
    for result in again {
        send_result(&up, result).await;
    }
    let every = Duration::from_millis(registered.heartbeat_interval_ms.max(50));
    let mut heartbeat = tokio::time::interval(every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut draining = false;
    let ended = loop {
        if draining && kept.running.is_empty() && kept.unanswered.is_empty() {
            break Ended::Stopped;
        }
        tokio::select! {
            () = options.drain.cancelled(), if !draining => {
                draining = true;
                eprintln!(
                    "braid worker: draining: taking nothing new, finishing {} attempt(s)",
                    kept.running.len()
                );
                send(&up, Up::Draining(braid_shared::proto::Draining {})).await;
            }
            msg = down.message() => match msg {
                Ok(Some(msg)) => match msg.kind {
                    Some(Down::Assign(assign)) => {
                        let Some(spec) = assign.attempt else {
                            tracing::warn!(lease = %assign.lease_id, "assignment without an attempt");
                            continue;
                        };
                        if kept.running.contains_key(&assign.lease_id) {
                            continue;
                        }
                        if draining {
                            // Handed back at once: it runs elsewhere, at no attempt's cost.
                            send_result(&up, AttemptResult {
                                lease_id: assign.lease_id,
                                status: AttemptStatus::Failed as i32,
                                error: "handed back: the worker is draining".into(),
                                infrastructure: true,
                                ..Default::default()
                            }).await;
                            continue;
                        }
                        if kept.running.len() >= options.slots as usize {
                            tracing::warn!(lease = %assign.lease_id, "assignment past the free slots");
                        }
                        send(&up, Up::AssignAck(braid_shared::proto::AssignAck {
                            lease_id: assign.lease_id.clone(),
                        })).await;
                        let token = stop.child_token();
                        kept.running.insert(assign.lease_id.clone(), Running {
                            cancel: token.clone(),
                            spec_key: assign.spec_key.clone(),
                        });
                        let job = Job {
                            spec,
                            lease: assign.lease_id,
                            pool: Arc::clone(&kept.pool),
                            mirrors: Arc::clone(&kept.mirrors),
                            logs: kept.logs.clone(),
                            trust: options.trust.clone(),
                        };
                        start_attempt(job, token, kept.outbox_tx.clone(), kept.done_tx.clone());
                    }
                    Some(Down::Cancel(cancel)) => {
                        if let Some(attempt) = kept.running.get(&cancel.lease_id) {
                            tracing::info!(lease = %cancel.lease_id, reason = %cancel.reason, "cancelling");
                            attempt.cancel.cancel();
                        }
                    }
                    Some(Down::ResultAck(ack)) => {
                        kept.unanswered.remove(&ack.lease_id);
                        if !ack.accepted {
                            tracing::warn!(lease = %ack.lease_id, reason = %ack.reason, "result refused");
                        }
                    }
                    Some(Down::Shutdown(shutdown)) => {
                        tracing::info!(reason = %shutdown.reason, "shutting down");
                        break Ended::Shutdown;
                    }
                    Some(Down::Registered(_)) | None => {}
                },
                Ok(None) => break Ended::Closed,
                Err(status) => {
                    *kept.connection.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                    return Err(WorkerError::Rpc(status));
                }
            },
            Some(message) = kept.outbox_rx.recv() => {
                if up.send(message).await.is_err() {
                    break Ended::Closed;
                }
            }
            Some(result) = kept.done_rx.recv() => {
                // What the attempt reported before it ended goes first: its last log bytes
                // are in the outbox already.
                while let Ok(message) = kept.outbox_rx.try_recv() {
                    if up.send(message).await.is_err() {
                        break;
                    }
                }
                kept.running.remove(&result.lease_id);
                kept.unanswered.insert(result.lease_id.clone(), (result.clone(), 1));
                send_result(&up, result).await;
            }
            _ = heartbeat.tick() => {
                let free = (options.slots as usize).saturating_sub(kept.running.len()) as u32;
                send(&up, Up::Heartbeat(Heartbeat {
                    free_slots: free,
                    running: kept.running.keys().cloned().collect(),
                })).await;
            }
            () = stop.cancelled() => break Ended::Stopped,
        }
    };
    *kept
        .connection
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    if ended == Ended::Closed && options.reconnect {
        return Ok(ended);
    }
    // Told to stop, or the work is over: stop what runs and still report it on this
    // stream while it is open.
    for attempt in kept.running.values() {
        attempt.cancel.cancel();
    }
    let deadline = tokio::time::Instant::now() + WIND_DOWN;
    while !kept.running.is_empty() {
        let message = tokio::select! {
            done = tokio::time::timeout_at(deadline, kept.done_rx.recv()) => match done {
                Ok(Some(mut result)) => {
                    while let Ok(message) = kept.outbox_rx.try_recv() {
                        let _ = up.send(message).await;
                    }
                    // A fleet's worker that stops hands its attempts back: they run
                    // elsewhere, at no attempt's cost.
                    if ended == Ended::Stopped
                        && options.reconnect
                        && result.status() == AttemptStatus::Cancelled
                    {
                        result.infrastructure = true;
                        result.error = "handed back: the worker stopped".into();
                    }
                    kept.running.remove(&result.lease_id);
                    send_result(&up, result).await;
                    continue;
                }
                _ => break,
            },
            Some(message) = kept.outbox_rx.recv() => message,
        };
        let _ = up.send(message).await;
    }
    Ok(ended)
}

/// A result's pack in pieces, then the result, on one stream.
async fn send_result(up: &mpsc::Sender<WorkerMessage>, mut result: AttemptResult) {
    for piece in std::mem::take(&mut result.pack).chunks(CHUNK) {
        send(
            up,
            Up::Pack(PackChunk {
                lease_id: result.lease_id.clone(),
                data: piece.to_vec(),
            }),
        )
        .await;
    }
    send(up, Up::Result(result)).await;
}

/// An assignment as a slot runs it.
struct Job {
    spec: braid_shared::proto::AttemptSpec,
    lease: String,
    pool: Arc<WorktreePool>,
    mirrors: Arc<Mirrors>,
    /// The folder under which each attempt gets a log folder of its own.
    logs: PathBuf,
    trust: crate::sandbox::Trust,
}

fn start_attempt(
    job: Job,
    cancel: CancellationToken,
    up: mpsc::Sender<WorkerMessage>,
    done: mpsc::Sender<AttemptResult>,
) {
    task::spawn("attempt", async move {
        let Job {
            mut spec,
            lease,
            pool,
            mirrors,
            logs,
            trust,
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
        let fetching = std::time::Instant::now();
        let prepared = match trust.admit(spec.sandbox.as_mut()) {
            // Every worker like this one would refuse it too: the attempt fails, it is
            // not handed back.
            Err(why) => Err((why, false)),
            Ok(()) => prepare(&spec, &mirrors, &logs)
                .await
                .map_err(|why| (why, true)),
        };
        let result = match prepared {
            Ok((place, folder)) => {
                let fetch_ms = fetching.elapsed().as_millis() as u64;
                let shipper =
                    LogShipper::start(folder.path().to_owned(), lease.clone(), up.clone());
                let mut result = run_attempt(&spec, &lease, &pool, &place, cancel, updates).await;
                result.fetch_ms = fetch_ms;
                shipper.finish().await;
                drop(folder);
                result
            }
            Err((why, infrastructure)) => {
                drop(updates);
                AttemptResult {
                    lease_id: lease.clone(),
                    status: AttemptStatus::Failed as i32,
                    checks: spec
                        .checks
                        .iter()
                        .map(|c| crate::checks::skipped(c, "the attempt did not run"))
                        .collect(),
                    error: why,
                    infrastructure,
                    ..Default::default()
                }
            }
        };
        let _ = forward.await;
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

/// Fetches objects from the coordinator over the current connection.
fn fetcher(
    connection: Arc<std::sync::Mutex<Option<(Channel, String)>>>,
    auth: braid_shared::auth::Bearer,
) -> Fetcher {
    Arc::new(move |repository, want, have| {
        let current = connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let auth = auth.clone();
        Box::pin(async move {
            let (channel, worker) =
                current.ok_or_else(|| "not connected to the coordinator".to_owned())?;
            let mut client = WorkerServiceClient::with_interceptor(channel, auth);
            let request = FetchRequest {
                worker_id: worker,
                repository,
                want,
                have,
            };
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
