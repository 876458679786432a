//! The coordinator's gRPC service: turns each worker's stream into scheduler events.
//!
//! Invariant: this module holds no scheduling state. It checks the handshake, names the
//! worker, and forwards every message as an [`Event`]; the scheduler decides everything.
//! It also serves the objects of the repositories it was given to the workers attached
//! (`FetchObjects`), and puts the pieces of a result's pack back together.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use braid_shared::git::Git;
use dashmap::{DashMap, DashSet};

use braid_shared::proto::coordinator_message::Kind as Down;
use braid_shared::proto::worker_message::Kind as Up;
use braid_shared::proto::worker_service_server::WorkerService;
use braid_shared::proto::{
    CoordinatorMessage, FetchRequest, ObjectChunk, Registered, WorkerMessage,
};
use braid_shared::task;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::scheduler::{Event, WorkerLink};

/// Messages queued towards one worker before it counts as not reading.
pub const WORKER_QUEUE: usize = 1024;

/// Largest pack a result may carry.
pub const MAX_PACK: usize = 1 << 30;

/// Largest piece of a pack `FetchObjects` sends.
const CHUNK: usize = 1 << 20;

/// Most commits one fetch may want, and name as had.
const MAX_WANT: usize = 64;
const MAX_HAVE: usize = 256;

/// The repositories whose objects workers may fetch, by id (see [`crate::state::repo_id`]).
pub type Repositories = Arc<DashMap<String, PathBuf>>;

/// The `braid.v1.WorkerService` implementation.
#[derive(Debug)]
pub struct WorkerApi {
    events: mpsc::Sender<Event>,
    next_id: AtomicU64,
    heartbeat_interval: Duration,
    repositories: Repositories,
    /// Workers whose stream is open: only they may fetch.
    attached: Arc<DashSet<String>>,
}

impl WorkerApi {
    /// Names the next worker `w<n>`: a resumed run's new workers do not take the ids of
    /// those that served it before.
    pub fn first_id(self, n: u64) -> Self {
        self.next_id.store(n.max(1), Ordering::Relaxed);
        self
    }
}

impl WorkerApi {
    /// A service that sends its events to a scheduler, asks workers for heartbeats this
    /// often, and serves the objects of `repositories`.
    pub fn new(
        events: mpsc::Sender<Event>,
        heartbeat_interval: Duration,
        repositories: Repositories,
    ) -> Self {
        WorkerApi {
            events,
            next_id: AtomicU64::new(1),
            heartbeat_interval,
            repositories,
            attached: Arc::new(DashSet::new()),
        }
    }
}

/// Whether `id` is a full object id.
fn is_object_id(id: &str) -> bool {
    id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    type AttachStream = ReceiverStream<Result<CoordinatorMessage, Status>>;
    type FetchObjectsStream = ReceiverStream<Result<ObjectChunk, Status>>;

    async fn fetch_objects(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<Self::FetchObjectsStream>, Status> {
        let request = request.into_inner();
        if !self.attached.contains(&request.worker_id) {
            return Err(Status::permission_denied(
                "only a worker with an open stream may fetch objects",
            ));
        }
        let Some(repo) = self
            .repositories
            .get(&request.repository)
            .map(|r| r.value().clone())
        else {
            return Err(Status::not_found("no such repository"));
        };
        if request.want.is_empty() || request.want.len() > MAX_WANT {
            return Err(Status::invalid_argument(format!(
                "a fetch wants 1 to {MAX_WANT} commits"
            )));
        }
        if let Some(bad) = request
            .want
            .iter()
            .chain(&request.have)
            .find(|id| !is_object_id(id))
        {
            return Err(Status::invalid_argument(format!(
                "{bad:?} is not an object id"
            )));
        }
        let git = Git::at(&repo);
        let internal = |e: braid_shared::git::GitError| Status::internal(e.to_string());
        let known = git.known_commits(&request.want).await.map_err(internal)?;
        if let Some(unknown) = request.want.iter().find(|w| !known.contains(w)) {
            return Err(Status::not_found(format!(
                "the repository has no commit {unknown}"
            )));
        }
        let have: Vec<String> = request.have.into_iter().take(MAX_HAVE).collect();
        let have = git.known_commits(&have).await.map_err(internal)?;
        let pack = git.pack_wanted(&known, &have).await.map_err(internal)?;
        let shallow = git.shallow_commits().await.map_err(internal)?;
        let (tx, rx) = mpsc::channel(4);
        task::spawn("fetch-objects", async move {
            let mut shallow = Some(shallow);
            let mut pieces = pack.chunks(CHUNK).peekable();
            if pieces.peek().is_none() {
                let _ = tx
                    .send(Ok(ObjectChunk {
                        data: Vec::new(),
                        shallow: shallow.take().unwrap_or_default(),
                    }))
                    .await;
            }
            for piece in pieces {
                let chunk = ObjectChunk {
                    data: piece.to_vec(),
                    shallow: shallow.take().unwrap_or_default(),
                };
                if tx.send(Ok(chunk)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn attach(
        &self,
        request: Request<Streaming<WorkerMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the stream closed before Register"))?;
        let Some(Up::Register(register)) = first.kind else {
            return Err(Status::invalid_argument(
                "the first message must be Register",
            ));
        };
        if register.slots == 0 {
            return Err(Status::invalid_argument("a worker needs at least one slot"));
        }
        let worker = format!("w{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::channel(WORKER_QUEUE);
        tx.send(Ok(CoordinatorMessage {
            kind: Some(Down::Registered(Registered {
                worker_id: worker.clone(),
                heartbeat_interval_ms: self.heartbeat_interval.as_millis() as u64,
            })),
        }))
        .await
        .map_err(|_| Status::internal("the stream closed during the handshake"))?;
        let joined = Event::WorkerJoined(WorkerLink {
            id: worker.clone(),
            name: if register.name.is_empty() {
                worker.clone()
            } else {
                register.name
            },
            slots: register.slots,
            tx,
        });
        self.events
            .send(joined)
            .await
            .map_err(|_| Status::unavailable("the coordinator is shutting down"))?;

        let events = self.events.clone();
        let attached = Arc::clone(&self.attached);
        attached.insert(worker.clone());
        task::spawn("worker-stream", async move {
            let mut packs = Packs::default();
            let reason = loop {
                match inbound.message().await {
                    Ok(Some(WorkerMessage { kind: Some(kind) })) => {
                        let Some(kind) = packs.take(kind) else {
                            continue;
                        };
                        let event = Event::FromWorker {
                            worker: worker.clone(),
                            kind: Box::new(kind),
                            at: std::time::Instant::now(),
                        };
                        if events.send(event).await.is_err() {
                            return;
                        }
                    }
                    Ok(Some(WorkerMessage { kind: None })) => {}
                    Ok(None) => break "the worker closed its stream".to_owned(),
                    Err(status) => {
                        break format!("the worker's stream failed: {}", status.message());
                    }
                }
            };
            attached.remove(&worker);
            let _ = events.send(Event::WorkerLeft { worker, reason }).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The pieces of packs a worker's stream sent ahead of their results.
#[derive(Debug, Default)]
struct Packs {
    pending: HashMap<String, Vec<u8>>,
    /// Leases whose pack went past [`MAX_PACK`].
    over: HashSet<String>,
}

impl Packs {
    /// Keeps a pack's piece (`None`: nothing to forward), or puts the pieces into the
    /// result they belong to.
    fn take(&mut self, kind: Up) -> Option<Up> {
        match kind {
            Up::Pack(piece) => {
                if self.over.contains(&piece.lease_id) {
                    return None;
                }
                let pack = self.pending.entry(piece.lease_id.clone()).or_default();
                if pack.len() + piece.data.len() > MAX_PACK {
                    self.pending.remove(&piece.lease_id);
                    self.over.insert(piece.lease_id);
                } else {
                    pack.extend_from_slice(&piece.data);
                }
                None
            }
            Up::Result(mut result) => {
                if self.over.remove(&result.lease_id) {
                    result.pack.clear();
                    result.commit.clear();
                    result.status = braid_shared::proto::AttemptStatus::Failed as i32;
                    result.error = format!(
                        "the attempt's commit needs more than {} MiB of new objects",
                        MAX_PACK >> 20
                    );
                } else if let Some(pack) = self.pending.remove(&result.lease_id) {
                    result.pack = pack;
                }
                Some(Up::Result(result))
            }
            other => Some(other),
        }
    }
}
