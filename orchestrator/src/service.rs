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

/// Where worker messages go.
#[derive(Debug, Clone)]
enum Sink {
    /// One run's loop (embedded mode).
    Run(mpsc::Sender<Event>),
    /// A server's runs: each message to the run its lease names.
    Fleet(Arc<Fleet>),
}

/// A server's workers and runs: every worker serves every run, and each message of a
/// worker goes to the run whose lease it names (heartbeats to all of them).
#[derive(Debug, Default)]
pub struct Fleet {
    runs: DashMap<String, mpsc::Sender<Event>>,
    workers: DashMap<String, Attached>,
    /// How the runs share the workers' slots.
    pub fairness: Arc<crate::scheduler::share::Fairness>,
}

#[derive(Debug, Clone)]
struct Attached {
    name: String,
    slots: u32,
    labels: std::collections::BTreeMap<String, String>,
    tx: mpsc::Sender<Result<CoordinatorMessage, Status>>,
    pool: Arc<crate::scheduler::share::SlotPool>,
}

impl Attached {
    fn link(&self, id: &str) -> WorkerLink {
        WorkerLink {
            id: id.to_owned(),
            name: self.name.clone(),
            slots: self.slots,
            tx: self.tx.clone(),
            pool: Some(Arc::clone(&self.pool)),
            running: Vec::new(),
            labels: self.labels.clone(),
        }
    }
}

/// The run a lease id (`<run>-<epoch>-<n>`) belongs to.
pub fn run_of_lease(lease: &str) -> Option<&str> {
    let mut parts = lease.rsplitn(3, '-');
    let (_n, _epoch) = (parts.next()?, parts.next()?);
    parts.next()
}

impl Fleet {
    /// Workers attached now.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Adds a run: every worker attached joins it.
    pub async fn add_run(&self, run: &str, events: mpsc::Sender<Event>) {
        self.runs.insert(run.to_owned(), events.clone());
        let workers: Vec<WorkerLink> = self
            .workers
            .iter()
            .map(|entry| entry.value().link(entry.key()))
            .collect();
        for link in workers {
            let _ = events.send(Event::WorkerJoined(link)).await;
        }
    }

    /// Forgets a run that ended.
    pub fn remove_run(&self, run: &str) {
        self.runs.remove(run);
        self.fairness.forget(run);
    }

    fn senders(&self) -> Vec<mpsc::Sender<Event>> {
        self.runs
            .iter()
            .map(|entry| entry.value().clone())
            .collect()
    }

    async fn join(&self, id: &str, attached: Attached, running: Vec<braid_shared::proto::Running>) {
        self.fairness.add_slots(attached.slots as isize);
        self.workers.insert(id.to_owned(), attached.clone());
        for events in self.senders() {
            let mut link = attached.link(id);
            link.running = running.clone();
            let _ = events.send(Event::WorkerJoined(link)).await;
        }
    }

    async fn route(&self, worker: &str, kind: Up, at: std::time::Instant) {
        let lease = match &kind {
            Up::AssignAck(ack) => Some(ack.lease_id.as_str()),
            Up::Progress(p) => Some(p.lease_id.as_str()),
            Up::Result(r) => Some(r.lease_id.as_str()),
            Up::Log(l) => Some(l.lease_id.as_str()),
            Up::Pack(p) => Some(p.lease_id.as_str()),
            Up::Heartbeat(_) | Up::Register(_) | Up::Draining(_) => None,
        };
        let event = |kind: Up| Event::FromWorker {
            worker: worker.to_owned(),
            kind: Box::new(kind),
            at,
        };
        match lease {
            Some(lease) => {
                let events =
                    run_of_lease(lease).and_then(|run| self.runs.get(run).map(|e| e.clone()));
                match (events, &kind) {
                    (Some(events), _) => {
                        let _ = events.send(event(kind)).await;
                    }
                    // A result for a run that is over (or no run at all) is refused.
                    (None, Up::Result(result)) => {
                        let tx = self.workers.get(worker).map(|w| w.tx.clone());
                        if let Some(tx) = tx {
                            let ack = braid_shared::proto::ResultAck {
                                lease_id: result.lease_id.clone(),
                                accepted: false,
                                reason: "its run is not running on this coordinator".into(),
                            };
                            let _ = tx.try_send(Ok(CoordinatorMessage {
                                kind: Some(Down::ResultAck(ack)),
                            }));
                        }
                    }
                    (None, _) => {}
                }
            }
            None => {
                for events in self.senders() {
                    let _ = events.send(event(kind.clone())).await;
                }
            }
        }
    }

    async fn leave(&self, worker: &str, reason: &str) {
        if let Some((_, attached)) = self.workers.remove(worker) {
            self.fairness.add_slots(-(attached.slots as isize));
        }
        for events in self.senders() {
            let _ = events
                .send(Event::WorkerLeft {
                    worker: worker.to_owned(),
                    reason: reason.to_owned(),
                })
                .await;
        }
    }
}

impl Sink {
    async fn joined(&self, link: WorkerLink) -> Result<(), Status> {
        match self {
            Sink::Run(events) => events
                .send(Event::WorkerJoined(link))
                .await
                .map_err(|_| Status::unavailable("the coordinator is shutting down")),
            Sink::Fleet(fleet) => {
                let attached = Attached {
                    name: link.name,
                    slots: link.slots,
                    labels: link.labels,
                    tx: link.tx,
                    pool: Arc::new(crate::scheduler::share::SlotPool::new(link.slots)),
                };
                fleet.join(&link.id, attached, link.running).await;
                Ok(())
            }
        }
    }

    /// Forwards a message; false once nothing listens any more.
    async fn message(&self, worker: &str, kind: Up) -> bool {
        let at = std::time::Instant::now();
        match self {
            Sink::Run(events) => events
                .send(Event::FromWorker {
                    worker: worker.to_owned(),
                    kind: Box::new(kind),
                    at,
                })
                .await
                .is_ok(),
            Sink::Fleet(fleet) => {
                fleet.route(worker, kind, at).await;
                true
            }
        }
    }

    async fn left(&self, worker: String, reason: String) {
        match self {
            Sink::Run(events) => {
                let _ = events.send(Event::WorkerLeft { worker, reason }).await;
            }
            Sink::Fleet(fleet) => fleet.leave(&worker, &reason).await,
        }
    }
}

/// The `braid.v1.WorkerService` implementation.
#[derive(Debug)]
pub struct WorkerApi {
    sink: Sink,
    next_id: AtomicU64,
    heartbeat_interval: Duration,
    repositories: Repositories,
    /// Workers whose stream is open: only they may fetch.
    attached: Arc<DashSet<String>>,
}

impl WorkerApi {
    /// A server's service: workers serve every run of `fleet`.
    pub fn fleet(
        fleet: Arc<Fleet>,
        heartbeat_interval: Duration,
        repositories: Repositories,
    ) -> Self {
        WorkerApi {
            sink: Sink::Fleet(fleet),
            next_id: AtomicU64::new(1),
            heartbeat_interval,
            repositories,
            attached: Arc::new(DashSet::new()),
        }
    }

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
            sink: Sink::Run(events),
            next_id: AtomicU64::new(1),
            heartbeat_interval,
            repositories,
            attached: Arc::new(DashSet::new()),
        }
    }
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
            .find(|id| !braid_worker::cache::is_object_id(id))
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
        if register.version != braid_shared::VERSION {
            return Err(Status::failed_precondition(format!(
                "this coordinator runs braid {}, the worker braid {}: run the same version of \
                 braid on both",
                braid_shared::VERSION,
                if register.version.is_empty() {
                    "of unknown version"
                } else {
                    &register.version
                }
            )));
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
        let joined = WorkerLink {
            id: worker.clone(),
            name: if register.name.is_empty() {
                worker.clone()
            } else {
                register.name
            },
            slots: register.slots,
            tx,
            pool: None,
            running: register.running,
            labels: register.labels,
        };
        self.sink.joined(joined).await?;

        let sink = self.sink.clone();
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
                        if !sink.message(&worker, kind).await {
                            attached.remove(&worker);
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
            sink.left(worker, reason).await;
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
