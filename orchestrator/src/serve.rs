//! `braid serve`: a coordinator for many runs at once, for workers and clients on other
//! machines, durable across restarts.
//!
//! Each run has a loop of its own (the same [`Scheduler`] as `braid run`), and every worker
//! attached serves every run, the runs sharing its slots fairly
//! ([`crate::scheduler::share`]). A client pushes its base's objects into the server's
//! copy of its repository (`<state>/repos/<id>.git`) and submits a checked plan; workers
//! fetch from that copy. A run's reports, logs and journal live in `<state>/runs/<run>/`;
//! when the server starts, it resumes every run whose journal says it has not ended.
//!
//! Invariant: no path, run id or repository id from the wire names a file before it is
//! checked; a run's branches are written only in the server's copy of its repository.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use braid_shared::git::Git;
use braid_shared::proto::client_service_server::ClientService;
use braid_shared::proto::{
    self as pb, CancelReply, CancelRequest, FetchRunChunk, FetchRunRequest, HaveReply, HaveRequest,
    PushChunk, PushReply, RunRef, StatusReply, StatusRequest, SubmitReply, SubmitRequest,
    WatchEvent, WatchRequest,
};
use braid_shared::task;
use dashmap::DashMap;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::journal::{self, Journal, Resume};
use crate::plan::Plan;
use crate::progress::Note;
use crate::report::RunStatus;
use crate::run::{Concluding, conclude};
use crate::scheduler::{Event, RunContext, Scheduler, SchedulerConfig};
use crate::service::{Fleet, Repositories};

/// Largest push a client may send.
const MAX_PUSH: usize = 4 << 30;

/// Lines of progress a run keeps for watchers that come late.
const KEPT_LINES: usize = 20_000;

/// Largest piece of a pack in one message.
const CHUNK: usize = 1 << 20;

/// How long a resumed run waits for workers to attach again before it assigns anything.
const ADOPTION_GRACE: Duration = Duration::from_secs(3);

/// A server's state: its folder, workers, repositories and runs.
#[derive(Debug)]
pub struct Server {
    state: PathBuf,
    fleet: Arc<Fleet>,
    repositories: Repositories,
    runs: DashMap<String, Arc<RunEntry>>,
    config: SchedulerConfig,
}

/// What a progress watcher is sent.
#[derive(Debug, Clone)]
enum Told {
    Line(usize, String),
    Ended(String),
}

/// A run the server knows.
#[derive(Debug)]
pub struct RunEntry {
    id: String,
    name: Option<String>,
    started_at: String,
    tasks: u32,
    /// The server's copy of the run's repository.
    repo: PathBuf,
    events: mpsc::Sender<Event>,
    interrupted: CancellationToken,
    lines: Mutex<Vec<String>>,
    told: broadcast::Sender<Told>,
    progress: Mutex<Progress>,
}

#[derive(Debug, Default)]
struct Progress {
    tasks_done: u32,
    running: u32,
    /// How the run ended, and its report; `None` while it runs.
    ended: Option<(String, String)>,
    result: Option<String>,
}

impl RunEntry {
    fn tell(&self, line: String) {
        let mut lines = held(&self.lines);
        if lines.len() < KEPT_LINES {
            lines.push(line.clone());
        }
        let _ = self.told.send(Told::Line(lines.len() - 1, line));
    }

    fn status(&self) -> pb::RunStatus {
        let progress = held(&self.progress);
        pb::RunStatus {
            run: self.id.clone(),
            name: self.name.clone().unwrap_or_default(),
            status: progress
                .ended
                .as_ref()
                .map_or_else(|| "running".to_owned(), |(s, _)| s.clone()),
            started_at: self.started_at.clone(),
            tasks: self.tasks,
            tasks_done: progress.tasks_done,
            running: progress.running,
            result: progress.result.clone().unwrap_or_default(),
        }
    }
}

impl Server {
    /// A server whose state is in `state`, scheduling with `config`.
    pub fn new(state: PathBuf, config: SchedulerConfig) -> std::io::Result<Arc<Server>> {
        for dir in ["repos", "runs", "cache"] {
            std::fs::create_dir_all(state.join(dir))?;
        }
        let config = SchedulerConfig {
            // A server's runs wait for workers, and its workers serve the next run.
            no_worker_timeout: None,
            release_workers: false,
            // A worker that falls silent is given up within 3 s (half-second checks).
            heartbeat_timeout: Duration::from_millis(2500),
            // One whose stream broke attaches again within a second or two.
            reattach_grace: Duration::from_secs(5),
            ..config
        };
        Ok(Arc::new(Server {
            state,
            fleet: Arc::new(Fleet::default()),
            repositories: Repositories::default(),
            runs: DashMap::new(),
            config,
        }))
    }

    /// The workers and runs, for the worker service.
    pub fn fleet(&self) -> Arc<Fleet> {
        Arc::clone(&self.fleet)
    }

    /// The repositories workers may fetch from.
    pub fn repositories(&self) -> Repositories {
        Arc::clone(&self.repositories)
    }

    /// The scheduler's timings.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    fn mirror(&self, repository: &str) -> Result<PathBuf, Status> {
        if !braid_worker::mirror::is_repository_id(repository) {
            return Err(Status::invalid_argument(format!(
                "{repository:?} is not a repository id"
            )));
        }
        Ok(self.state.join("repos").join(format!("{repository}.git")))
    }

    fn run(&self, run: &str) -> Result<Arc<RunEntry>, Status> {
        self.runs
            .get(run)
            .map(|r| Arc::clone(r.value()))
            .ok_or_else(|| Status::not_found(format!("no run {run:?}")))
    }

    /// Resumes every run in the state folder whose journal says it has not ended;
    /// returns how many.
    pub async fn resume_all(self: &Arc<Self>) -> usize {
        let Ok(entries) = std::fs::read_dir(self.state.join("runs")) else {
            return 0;
        };
        let mut resumed = 0;
        let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        dirs.sort();
        for dir in dirs {
            let path = dir.join(journal::FILE);
            let Ok((record, resume)) = Journal::read(&path) else {
                continue;
            };
            if record.status.is_some() {
                continue;
            }
            let repository = record
                .plan
                .repo
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            self.repositories
                .insert(repository, record.plan.repo.clone());
            let from = Resuming {
                started_at: record.started_at,
                started_unix_ms: record.started_unix_ms,
                resume,
            };
            match self
                .start(record.plan, Some((record.run.clone(), from)))
                .await
            {
                Ok(_) => resumed += 1,
                Err(err) => tracing::warn!(run = %record.run, %err, "could not resume a run"),
            }
        }
        resumed
    }

    /// Starts a run of `plan` (whose repository is the server's copy), or resumes one.
    async fn start(
        self: &Arc<Self>,
        plan: Plan,
        resuming: Option<(String, Resuming)>,
    ) -> Result<Arc<RunEntry>, String> {
        let run_id = resuming
            .as_ref()
            .map_or_else(crate::state::new_run_id, |(id, _)| id.clone());
        let dir = self.state.join("runs").join(&run_id);
        let log_dir = dir.join("logs");
        std::fs::create_dir_all(&log_dir)
            .map_err(|e| format!("creating {}: {e}", log_dir.display()))?;
        let (started, started_at) = match &resuming {
            Some((_, from)) => crate::run::started_from(from.started_unix_ms, &from.started_at),
            None => (Instant::now(), chrono::Utc::now()),
        };
        let started_text = started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let path = dir.join(journal::FILE);
        let resumed = resuming.is_some();
        let (journal, resume): (Journal, Option<Resume>) = match resuming {
            Some((_, from)) => (
                Journal::reopen(&path, &run_id, from.resume.epoch)?,
                Some(from.resume),
            ),
            None => (
                Journal::create(
                    &path,
                    &journal::RunRecord {
                        run: run_id.clone(),
                        plan: plan.clone(),
                        started: journal::Started::default(),
                        started_at: started_text.clone(),
                        started_unix_ms: started_at.timestamp_millis(),
                        epoch: 1,
                        status: None,
                    },
                )?,
                None,
            ),
        };
        let repo_id = plan
            .repo
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let plan = Arc::new(plan);
        let (events_tx, events_rx) = mpsc::channel::<Event>(4096);
        let (notes_tx, mut notes_rx) = mpsc::unbounded_channel::<Note>();
        let ctx = RunContext {
            run_id: run_id.clone(),
            plan: Arc::clone(&plan),
            log_dir: log_dir.clone(),
            repo_id,
            started,
        };
        let scheduler = Scheduler::new(
            ctx,
            self.config.clone(),
            events_tx.clone(),
            notes_tx.clone(),
        )
        .map_err(|e| format!("cannot start the run: {e}"))?
        .with_journal(journal, resume)
        .with_fairness(Arc::clone(&self.fleet.fairness));
        // Workers that ran its attempts attach again within a second or two.
        let scheduler = if resumed {
            scheduler.with_adoption_grace(ADOPTION_GRACE)
        } else {
            scheduler
        };
        let entry = Arc::new(RunEntry {
            id: run_id.clone(),
            name: plan.name.clone(),
            started_at: started_text,
            tasks: plan.tasks.len() as u32,
            repo: plan.repo.clone(),
            events: events_tx.clone(),
            interrupted: CancellationToken::new(),
            lines: Mutex::new(Vec::new()),
            told: broadcast::channel(1024).0,
            progress: Mutex::new(Progress::default()),
        });
        self.runs.insert(run_id.clone(), Arc::clone(&entry));
        self.fleet.add_run(&run_id, events_tx.clone()).await;
        entry.tell(format!(
            "run {run_id}: {} task(s) on {} worker(s); state in {}",
            plan.tasks.len(),
            self.fleet.workers(),
            dir.display()
        ));
        // Progress, as lines for watchers.
        let lines = {
            let entry = Arc::clone(&entry);
            task::spawn("run-progress", async move {
                while let Some(note) = notes_rx.recv().await {
                    {
                        let mut progress = held(&entry.progress);
                        match &note {
                            Note::TaskDone { .. } => progress.tasks_done += 1,
                            Note::Assigned { .. } => progress.running += 1,
                            Note::AttemptDone { .. } | Note::AttemptLost { .. } => {
                                progress.running = progress.running.saturating_sub(1);
                            }
                            _ => {}
                        }
                    }
                    if let Some(line) = crate::progress::line(&note, false) {
                        let now = chrono::Utc::now().format("%H:%M:%S%.3f");
                        entry.tell(format!("{now} {line}"));
                    }
                }
            })
        };
        let server = Arc::clone(self);
        let running = Arc::clone(&entry);
        let concluding = Concluding {
            id: run_id.clone(),
            dir: dir.clone(),
            log_dir,
            log_cap: self.config.log_cap,
            started,
            started_at,
            planner: None,
        };
        drop(events_tx);
        task::spawn("run", async move {
            let outcome = scheduler.run(events_rx).await;
            server.fleet.remove_run(&concluding.id);
            let (report, error) = conclude(&plan, &concluding, outcome, &running.interrupted).await;
            let status = report.status;
            let text = match report.write(&concluding.dir) {
                Ok(_) => serde_json::to_string_pretty(&report).unwrap_or_default(),
                Err(err) => {
                    tracing::warn!(%err, run = %concluding.id, "could not write the report");
                    String::new()
                }
            };
            if status != RunStatus::Cancelled || running.interrupted.is_cancelled() {
                journal::end(
                    &concluding.dir.join(journal::FILE),
                    &concluding.id,
                    &crate::report::word(status),
                );
            }
            if let Some(error) = error {
                let _ = notes_tx.send(Note::Info(format!("error: {error}")));
            }
            drop(notes_tx);
            let _ = lines.await;
            running.tell(format!(
                "run {} {}; result {}",
                concluding.id,
                crate::report::word(status),
                report.result.commit.as_deref().map_or("none", |c| c)
            ));
            {
                let mut progress = held(&running.progress);
                progress.result = report.result.commit.clone();
                progress.ended = Some((crate::report::word(status), text));
                progress.running = 0;
            }
            let _ = running.told.send(Told::Ended(crate::report::word(status)));
        });
        Ok(entry)
    }
}

/// What a resumed run goes on from.
#[derive(Debug)]
struct Resuming {
    started_at: String,
    started_unix_ms: i64,
    resume: Resume,
}

/// Checks a plan a client sent, which its own braid checked already: what the server
/// relies on holds (ids, deps, no cycle).
fn recheck(plan: &Plan) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for task in &plan.tasks {
        let valid = crate::plan::load::valid_id(&task.id)
            || crate::plan::targets::valid_target_id(&task.id);
        if !valid || task.id == "result" {
            return Err(format!("invalid task id {:?}", task.id));
        }
        if !seen.insert(task.id.as_str()) {
            return Err(format!("duplicate task id {:?}", task.id));
        }
    }
    let order: Vec<&str> = plan.tasks.iter().map(|t| t.id.as_str()).collect();
    let mut deps = std::collections::BTreeMap::new();
    for task in &plan.tasks {
        if let Some(dep) = task.deps.iter().find(|d| !seen.contains(d.as_str())) {
            return Err(format!(
                "task {:?} depends on unknown task {dep:?}",
                task.id
            ));
        }
        deps.insert(
            task.id.as_str(),
            task.deps.iter().map(String::as_str).collect(),
        );
    }
    if let Some(cycle) = crate::dag::find_cycles(&order, &deps).first() {
        return Err(format!("a dependency cycle: {}", cycle.join(" -> ")));
    }
    if !braid_worker::cache::is_object_id(&plan.base_commit) {
        return Err("the plan's base is not a commit id".into());
    }
    Ok(())
}

/// The `braid.v1.ClientService` of a server.
#[derive(Debug, Clone)]
pub struct ClientApi {
    server: Arc<Server>,
}

impl ClientApi {
    /// The service of `server`.
    pub fn new(server: Arc<Server>) -> Self {
        ClientApi { server }
    }
}

/// A mutex's value, even after a thread that held it panicked.
fn held<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Refuses a list from the wire that holds something other than commit ids.
fn commit_ids(ids: &[String]) -> Result<(), Status> {
    match ids.iter().find(|c| !braid_worker::cache::is_object_id(c)) {
        Some(bad) => Err(Status::invalid_argument(format!(
            "{bad:?} is not a commit id"
        ))),
        None => Ok(()),
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

#[tonic::async_trait]
impl ClientService for ClientApi {
    async fn have(&self, request: Request<HaveRequest>) -> Result<Response<HaveReply>, Status> {
        let request = request.into_inner();
        let mirror = self.server.mirror(&request.repository)?;
        commit_ids(&request.commits)?;
        if !mirror.join("HEAD").is_file() {
            return Ok(Response::new(HaveReply { known: Vec::new() }));
        }
        let known = Git::at(&mirror)
            .known_commits(&request.commits)
            .await
            .map_err(internal)?;
        Ok(Response::new(HaveReply { known }))
    }

    async fn push(
        &self,
        request: Request<Streaming<PushChunk>>,
    ) -> Result<Response<PushReply>, Status> {
        let mut stream = request.into_inner();
        let mut repository = None;
        let mut pack = Vec::new();
        while let Some(chunk) = stream.message().await? {
            if repository.is_none() {
                repository = Some(chunk.repository.clone());
            }
            if pack.len() + chunk.data.len() > MAX_PUSH {
                return Err(Status::resource_exhausted(format!(
                    "a push may hold at most {} GiB",
                    MAX_PUSH >> 30
                )));
            }
            pack.extend_from_slice(&chunk.data);
        }
        let repository = repository.ok_or_else(|| Status::invalid_argument("an empty push"))?;
        let mirror = self.server.mirror(&repository)?;
        braid_worker::mirror::init_bare(&mirror, None).map_err(internal)?;
        if !pack.is_empty() {
            Git::at(&mirror)
                .unpack(pack)
                .await
                .map_err(|e| Status::invalid_argument(format!("the objects were refused: {e}")))?;
        }
        Ok(Response::new(PushReply {}))
    }

    async fn submit(
        &self,
        request: Request<SubmitRequest>,
    ) -> Result<Response<SubmitReply>, Status> {
        let request = request.into_inner();
        let mirror = self.server.mirror(&request.repository)?;
        let mut plan: Plan = serde_json::from_str(&request.plan).map_err(|e| {
            Status::invalid_argument(format!(
                "the plan could not be read (is the client's braid the server's version?): {e}"
            ))
        })?;
        recheck(&plan).map_err(Status::invalid_argument)?;
        let known = if mirror.join("HEAD").is_file() {
            Git::at(&mirror)
                .known_commits(std::slice::from_ref(&plan.base_commit))
                .await
                .map_err(internal)?
        } else {
            Vec::new()
        };
        if known.is_empty() {
            return Err(Status::failed_precondition(format!(
                "the server does not have the base {}: push it first",
                plan.base_commit
            )));
        }
        plan.repo = mirror.clone();
        plan.git_dir = mirror.clone();
        plan.path = PathBuf::from(&request.plan_name);
        self.server
            .repositories
            .insert(request.repository.clone(), mirror);
        let entry = self.server.start(plan, None).await.map_err(internal)?;
        Ok(Response::new(SubmitReply {
            run: entry.id.clone(),
        }))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        let request = request.into_inner();
        if request.run.is_empty() {
            let mut runs: Vec<pb::RunStatus> = self
                .server
                .runs
                .iter()
                .map(|r| r.value().status())
                .collect();
            runs.sort_by(|a, b| a.run.cmp(&b.run));
            return Ok(Response::new(StatusReply {
                runs,
                report: String::new(),
            }));
        }
        let entry = self.server.run(&request.run)?;
        let report = held(&entry.progress)
            .ended
            .as_ref()
            .map(|(_, report)| report.clone())
            .unwrap_or_default();
        Ok(Response::new(StatusReply {
            runs: vec![entry.status()],
            report,
        }))
    }

    type WatchStream = ReceiverStream<Result<WatchEvent, Status>>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let entry = self.server.run(&request.into_inner().run)?;
        // Subscribed before the lines so far are read: nothing falls between them.
        let mut told = entry.told.subscribe();
        let so_far = held(&entry.lines).clone();
        let ended = held(&entry.progress).ended.as_ref().map(|(s, _)| s.clone());
        let (tx, rx) = mpsc::channel(256);
        task::spawn("watch", async move {
            let line = |line: String| WatchEvent {
                line,
                ended: String::new(),
            };
            for text in so_far.iter().cloned() {
                if tx.send(Ok(line(text))).await.is_err() {
                    return;
                }
            }
            let mut ended = ended;
            while ended.is_none() {
                match told.recv().await {
                    Ok(Told::Line(seq, text)) if seq >= so_far.len() => {
                        if tx.send(Ok(line(text))).await.is_err() {
                            return;
                        }
                    }
                    Ok(Told::Line(..)) => {}
                    Ok(Told::Ended(status)) => ended = Some(status),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx.send(Ok(line(format!("({n} lines skipped)")))).await;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
            let _ = tx
                .send(Ok(WatchEvent {
                    line: String::new(),
                    ended: ended.unwrap_or_else(|| "failed".into()),
                }))
                .await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn cancel(
        &self,
        request: Request<CancelRequest>,
    ) -> Result<Response<CancelReply>, Status> {
        let entry = self.server.run(&request.into_inner().run)?;
        let ended = held(&entry.progress).ended.is_some();
        if !ended {
            entry.interrupted.cancel();
            let _ = entry.events.send(Event::Interrupt).await;
        }
        Ok(Response::new(CancelReply { cancelled: !ended }))
    }

    type FetchStream = ReceiverStream<Result<FetchRunChunk, Status>>;

    async fn fetch(
        &self,
        request: Request<FetchRunRequest>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        let request = request.into_inner();
        let entry = self.server.run(&request.run)?;
        commit_ids(&request.have)?;
        let prefix = format!("refs/heads/braid/{}/", entry.id);
        let refs = crate::merge::Merger::open(&entry.repo)
            .and_then(|m| m.refs_under(&prefix))
            .map_err(internal)?;
        let git = Git::at(&entry.repo);
        let have = git.known_commits(&request.have).await.map_err(internal)?;
        let mut want: Vec<String> = refs.iter().map(|(_, c)| c.clone()).collect();
        want.sort();
        want.dedup();
        let pack = if want.is_empty() {
            Vec::new()
        } else {
            git.pack_wanted(&want, &have).await.map_err(internal)?
        };
        let report = held(&entry.progress)
            .ended
            .as_ref()
            .map(|(_, r)| r.clone())
            .unwrap_or_default();
        let refs: Vec<RunRef> = refs
            .into_iter()
            .map(|(name, commit)| RunRef {
                name: name.trim_start_matches("refs/heads/").to_owned(),
                commit,
            })
            .collect();
        let (tx, rx) = mpsc::channel(4);
        task::spawn("fetch-run", async move {
            let mut first = Some((refs, report));
            let mut pieces: Vec<&[u8]> = pack.chunks(CHUNK).collect();
            if pieces.is_empty() {
                pieces.push(&[]);
            }
            for piece in pieces {
                let (refs, report) = first.take().unwrap_or_default();
                let chunk = FetchRunChunk {
                    refs,
                    report,
                    data: piece.to_vec(),
                };
                if tx.send(Ok(chunk)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The state folder of `braid serve` when none is given: `$XDG_STATE_HOME/braid/server`,
/// else `~/.local/state/braid/server`.
pub fn default_state() -> PathBuf {
    let set = |key| {
        std::env::var_os(key)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = set("XDG_STATE_HOME") {
        return dir.join("braid/server");
    }
    set("HOME")
        .unwrap_or_else(std::env::temp_dir)
        .join(".local/state/braid/server")
}

/// How `braid serve` was asked to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// `host:port` or `unix:/path`.
    pub listen: String,
    /// The state folder.
    pub state: PathBuf,
    /// The file holding the tokens (`worker TOKEN` and `client TOKEN` lines); `None`: the
    /// state folder's own, made on first use.
    pub token_file: Option<PathBuf>,
    /// The scheduler's timings.
    pub scheduler: SchedulerConfig,
    /// Serve TLS with this certificate chain and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// The worker and client tokens in `path`: lines `worker TOKEN` and `client TOKEN`.
pub fn read_tokens(path: &std::path::Path) -> Result<(String, String), String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let (mut worker, mut client) = (None, None);
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once(char::is_whitespace) {
            Some(("worker", token)) if !token.trim().is_empty() => {
                worker = Some(token.trim().to_owned())
            }
            Some(("client", token)) if !token.trim().is_empty() => {
                client = Some(token.trim().to_owned())
            }
            _ => {
                return Err(format!(
                    "{}:{}: write `worker TOKEN` or `client TOKEN`",
                    path.display(),
                    n + 1
                ));
            }
        }
    }
    match (worker, client) {
        (Some(w), Some(c)) if w != c => Ok((w, c)),
        (Some(_), Some(_)) => Err(format!(
            "{}: the worker and client tokens must differ",
            path.display()
        )),
        _ => Err(format!(
            "{}: it needs a `worker TOKEN` line and a `client TOKEN` line",
            path.display()
        )),
    }
}

/// The state folder's own tokens, made (readable by its owner only) when missing.
fn own_tokens(state: &std::path::Path) -> Result<PathBuf, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = state.join("tokens");
    if path.is_file() {
        return Ok(path);
    }
    let made = |e: std::io::Error| format!("making {}: {e}", path.display());
    let worker = braid_shared::auth::new_token().map_err(made)?;
    let client = braid_shared::auth::new_token().map_err(made)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(made)?;
    file.write_all(
        format!(
            "# braid serve: the token workers give (braid worker --token-file) and the token\n\
             # clients give ($BRAID_TOKEN).\nworker {worker}\nclient {client}\n"
        )
        .as_bytes(),
    )
    .map_err(made)?;
    Ok(path)
}

/// Runs `braid serve` until SIGINT or SIGTERM; returns the exit code.
pub async fn serve_main(options: ServeOptions) -> Result<i32, crate::error::BraidError> {
    use crate::error::BraidError;
    use braid_shared::proto::client_service_server::ClientServiceServer;
    use braid_shared::proto::worker_service_server::WorkerServiceServer;
    let server =
        Server::new(options.state.clone(), options.scheduler.clone()).map_err(BraidError::io(
            format!("making the state folder {}", options.state.display()),
        ))?;
    let token_file = match &options.token_file {
        Some(file) => file.clone(),
        None => own_tokens(&options.state).map_err(BraidError::Environment)?,
    };
    let (worker_token, client_token) = read_tokens(&token_file).map_err(BraidError::Usage)?;
    use tonic::service::interceptor::InterceptedService;
    let workers = InterceptedService::new(
        WorkerServiceServer::new(crate::service::WorkerApi::fleet(
            server.fleet(),
            server.config().heartbeat_interval,
            server.repositories(),
        ))
        .max_decoding_message_size(64 << 20),
        braid_shared::auth::Check::new(&worker_token, "worker"),
    );
    let clients = InterceptedService::new(
        ClientServiceServer::new(ClientApi::new(Arc::clone(&server)))
            .max_decoding_message_size(64 << 20),
        braid_shared::auth::Check::new(&client_token, "client"),
    );
    let stop = CancellationToken::new();
    {
        use tokio::signal::unix::{SignalKind, signal};
        let stop = stop.clone();
        let mut term =
            signal(SignalKind::terminate()).map_err(BraidError::io("listening for signals"))?;
        let mut int =
            signal(SignalKind::interrupt()).map_err(BraidError::io("listening for signals"))?;
        task::spawn("signals", async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            stop.cancel();
        });
    }
    let mut builder = tonic::transport::Server::builder();
    if let Some((cert, key)) = &options.tls {
        let read = |path: &PathBuf| {
            std::fs::read(path)
                .map_err(|e| BraidError::Usage(format!("cannot read {}: {e}", path.display())))
        };
        let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| {
                BraidError::Usage(format!("the TLS certificate or key is not usable: {e}"))
            })?;
    }
    let resumed = server.resume_all().await;
    let router = builder.add_service(workers).add_service(clients);
    let said = |at: String| {
        eprintln!(
            "braid serve: listening on {at}; state in {}; tokens in {}{}",
            options.state.display(),
            token_file.display(),
            if resumed > 0 {
                format!("; resumed {resumed} run(s)")
            } else {
                String::new()
            }
        );
    };
    if let Some(path) = options.listen.strip_prefix("unix:") {
        let path = PathBuf::from(path);
        let listener = tokio::net::UnixListener::bind(&path)
            .map_err(BraidError::io(format!("binding {}", path.display())))?;
        said(format!("unix:{}", path.display()));
        let served = router
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                stop.cancelled_owned(),
            )
            .await;
        let _ = std::fs::remove_file(&path);
        served.map_err(|e| BraidError::Environment(format!("serving: {e}")))?;
    } else {
        let listener = tokio::net::TcpListener::bind(&options.listen)
            .await
            .map_err(|e| BraidError::Usage(format!("cannot listen on {}: {e}", options.listen)))?;
        let at = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| options.listen.clone());
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        said(format!("{scheme}://{at}"));
        // Each message goes out as it is written: with Nagle's algorithm on, a result
        // and its answer wait out the peer's delayed acknowledgement (40 ms).
        let incoming = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            |accepted| {
                accepted.inspect(|stream| {
                    if let Err(err) = stream.set_nodelay(true) {
                        tracing::warn!(%err, "could not set TCP_NODELAY");
                    }
                })
            },
        );
        router
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
            .await
            .map_err(|e| BraidError::Environment(format!("serving: {e}")))?;
    }
    Ok(crate::error::EXIT_OK)
}
