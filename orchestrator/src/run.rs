//! Embedded mode: a coordinator and local workers in one process, speaking the real
//! `braid.v1` protocol over a Unix socket; then integration, verification and the report.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_shared::git::Git;
use braid_shared::proto::worker_service_server::WorkerServiceServer;
use braid_shared::task;
use braid_worker::runtime::{WorkerOptions, serve};
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;

use crate::error::{BraidError, EXIT_ENVIRONMENT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK};
use crate::plan::Plan;
use crate::progress::{self, Note};
use crate::report::{Report, ResultReport, RunStatus, TaskStatus};
use crate::scheduler::{Event, Outcome, RunContext, Scheduler, SchedulerConfig};
use crate::service::WorkerApi;
use crate::state;

/// How long workers get to wind down after the scheduler is done.
const WORKER_WIND_DOWN: Duration = Duration::from_secs(30);

/// How an embedded run is set up.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Local workers; 0 when only workers that connect to `listen` serve the run.
    pub workers: u32,
    /// Slots per worker.
    pub slots: u32,
    /// Show the agents' output lines as progress.
    pub verbose: bool,
    /// A Unix socket to serve on, for workers of other processes too; by default a socket
    /// in a private temporary folder that only this process's workers know.
    pub listen: Option<PathBuf>,
    /// The scheduler's timings.
    pub scheduler: SchedulerConfig,
    /// The run's id, when it was chosen before (a planned run keeps its plan in its folder).
    pub run_id: Option<String>,
    /// The planner that made the plan, for `braid run --goal`.
    pub planner: Option<crate::planner::PlannerReport>,
    /// The journal of the run this one resumes (`braid resume`), as read.
    pub resume: Option<ResumeFrom>,
}

/// When a resumed run first started, as this process's clock and as a time: its report's
/// times go on from there.
pub fn started_from(unix_ms: i64, rfc3339: &str) -> (Instant, chrono::DateTime<chrono::Utc>) {
    let ago = chrono::Utc::now().timestamp_millis() - unix_ms;
    let ago = Duration::from_millis(ago.max(0) as u64);
    let started = Instant::now().checked_sub(ago).unwrap_or_else(Instant::now);
    let at = chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(|_| chrono::Utc::now());
    (started, at)
}

/// What `braid resume` read from a run's journal.
#[derive(Debug, Clone)]
pub struct ResumeFrom {
    /// When the run first started (RFC 3339, Unix milliseconds).
    pub started_at: String,
    pub started_unix_ms: i64,
    /// What it had done.
    pub resume: crate::journal::Resume,
}

impl RunOptions {
    /// `workers` local workers of `slots` slots each, quiet, on a private socket.
    pub fn local(workers: u32, slots: u32) -> Self {
        RunOptions {
            workers,
            slots,
            verbose: false,
            listen: None,
            scheduler: SchedulerConfig::default(),
            run_id: None,
            planner: None,
            resume: None,
        }
    }
}

/// A finished run.
#[derive(Debug)]
pub struct Finished {
    /// The report, as written.
    pub report: Report,
    /// Where report.json is.
    pub report_path: PathBuf,
    /// The exit code for the contract.
    pub exit_code: i32,
}

/// Runs `plan` to the end with local workers and writes its report.
pub async fn run_embedded(plan: Plan, options: RunOptions) -> Result<Finished, BraidError> {
    let mut recovered = state::recover(&plan.git_dir);
    // The run being resumed is not news.
    recovered.retain(|r| options.resume.is_none() || options.run_id.as_deref() != Some(&r.run));
    state::tell_recovered(&recovered);
    let contained = !plan.sandbox.off || plan.tasks.iter().any(|t| !t.sandbox.off);
    if contained {
        match braid_worker::sandbox::available().await {
            Ok(braid_worker::sandbox::Kind::Bubblewrap) => {}
            Ok(braid_worker::sandbox::Kind::Landlock) => eprintln!(
                "braid: no bubblewrap sandbox here; Landlock keeps agents and checks from \
                 writing outside their worktrees, but cannot hide other worktrees or stop a \
                 process that leaves its group and drops braid's variables"
            ),
            Err(why) => {
                return Err(BraidError::Environment(format!(
                    "{why}. braid runs every agent and check in a sandbox; to run them \
                     without one, put `sandbox: off` in the plan"
                )));
            }
        }
    }
    // A resumed run goes on from when it first started.
    let (started, started_at) = match &options.resume {
        Some(from) => started_from(from.started_unix_ms, &from.started_at),
        None => (Instant::now(), chrono::Utc::now()),
    };
    let run_id = options.run_id.clone().unwrap_or_else(state::new_run_id);
    let cache = braid_worker::cache::root();
    let cache_dir = braid_worker::cache::run_dir(&cache, &run_id);
    let run_dir = state::run_dir(&plan.git_dir, &run_id);
    let lock = state::Lock::new(
        &run_id,
        cache_dir.clone(),
        plan.repo.clone(),
        plan.base_commit.clone(),
        plan.path.clone(),
    );
    // The coordinator's server, on a Unix socket: by default one in the run's cache folder,
    // which the sandboxes hide (an agent must not reach the coordinator). Bound first, so
    // an address in use changes nothing.
    state::own_cache_dir(&lock)
        .map_err(BraidError::io(format!("creating {}", cache_dir.display())))?;
    let own_socket = cache_dir.join("coordinator.sock");
    // A socket's path has room for 107 bytes.
    let socket_dir = (own_socket.as_os_str().len() > 100)
        .then(|| {
            tempfile::Builder::new()
                .prefix("braid-")
                .tempdir_in(&cache)
                .or_else(|_| tempfile::Builder::new().prefix("braid-").tempdir())
        })
        .transpose()
        .map_err(BraidError::io("creating the socket folder"))?;
    let socket = match (&options.listen, &socket_dir) {
        (Some(path), _) => path.clone(),
        (None, Some(dir)) => dir.path().join("coordinator.sock"),
        (None, None) => own_socket,
    };
    let listener = match UnixListener::bind(&socket) {
        Ok(listener) => listener,
        Err(err) => {
            state::remove_cache_dir(&cache_dir);
            return Err(BraidError::io(format!("binding {}", socket.display()))(err));
        }
    };
    let _unlink = options.listen.as_ref().map(|path| Unlink(path.clone()));
    let log_dir = run_dir.join("logs");
    std::fs::create_dir_all(&log_dir)
        .map_err(BraidError::io(format!("creating {}", log_dir.display())))?;
    lock.write(&run_dir).map_err(BraidError::io(format!(
        "writing the run's lock in {}",
        run_dir.display()
    )))?;
    // From here on, however this function returns, the run's cache folder and lock go.
    let held = state::Held::new(run_dir.clone(), lock);
    // Workers fetch the repository's objects by its id; local workers borrow them where
    // they are.
    let repo_id = state::repo_id(&plan.git_dir).map_err(BraidError::io(format!(
        "writing the repository's id in {}",
        plan.git_dir.display()
    )))?;
    let common = Git::at(&plan.repo)
        .common_dir()
        .await
        .map_err(|e| BraidError::Environment(e.to_string()))?;
    let repositories = crate::service::Repositories::default();
    repositories.insert(repo_id.clone(), plan.repo.clone());
    let plan = Arc::new(plan);
    let config = options.scheduler.clone();

    let (events_tx, events_rx) = mpsc::channel::<Event>(4096);
    let (notes_tx, notes_rx) = mpsc::unbounded_channel::<Note>();
    let ctx = RunContext {
        run_id: run_id.clone(),
        plan: Arc::clone(&plan),
        log_dir: log_dir.clone(),
        repo_id: repo_id.clone(),
        started,
    };
    let scheduler = Scheduler::new(ctx, config.clone(), events_tx.clone(), notes_tx.clone())
        .map_err(|e| BraidError::Internal(format!("cannot start the coordinator: {e}")))?;
    let journal_path = run_dir.join(crate::journal::FILE);
    let journal = match &options.resume {
        Some(from) => crate::journal::Journal::reopen(&journal_path, &run_id, from.resume.epoch),
        None => crate::journal::Journal::create(
            &journal_path,
            &crate::journal::RunRecord {
                run: run_id.clone(),
                plan: (*plan).clone(),
                started: crate::journal::Started {
                    workers: options.workers,
                    slots: options.slots,
                    planner: options.planner.clone(),
                },
                started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                started_unix_ms: started_at.timestamp_millis(),
                epoch: 1,
                status: None,
            },
        ),
    };
    let mut first_worker = 1;
    let scheduler = match journal {
        Ok(journal) => {
            let resume = options.resume.as_ref().map(|from| from.resume.clone());
            if let Some(resume) = &resume {
                first_worker += resume
                    .workers
                    .iter()
                    .filter_map(|w| w.id.strip_prefix('w')?.parse::<u64>().ok())
                    .max()
                    .unwrap_or(0);
            }
            scheduler.with_journal(journal, resume)
        }
        Err(why) => {
            let _ = notes_tx.send(Note::Info(format!(
                "warning: the run keeps no journal ({why}); it cannot be resumed if it stops"
            )));
            scheduler
        }
    };
    let renderer = task::spawn("progress", progress::render(notes_rx, options.verbose));
    let _ = notes_tx.send(Note::Info(format!(
        "run {run_id}: {} task(s) on {} local worker(s); state in {}",
        plan.tasks.len(),
        options.workers,
        run_dir.display()
    )));

    let server_stop = CancellationToken::new();
    let api = WorkerApi::new(events_tx.clone(), config.heartbeat_interval, repositories)
        .first_id(first_worker);
    let server = task::spawn(
        "grpc-server",
        tonic::transport::Server::builder()
            .add_service(WorkerServiceServer::new(api))
            .serve_with_incoming_shutdown(
                UnixListenerStream::new(listener),
                server_stop.clone().cancelled_owned(),
            ),
    );

    // Local workers, over the same protocol any remote worker speaks.
    let url = format!("unix:{}", socket.display());
    let worker_stop = CancellationToken::new();
    let workers: Vec<_> = (1..=options.workers)
        .map(|i| {
            let url = url.clone();
            let stop = worker_stop.child_token();
            let worker_options = WorkerOptions {
                name: format!("local-{i}"),
                slots: options.slots.max(1),
                labels: Default::default(),
                cache: cache.clone(),
                borrow: [(repo_id.clone(), common.clone())].into(),
                auth: Default::default(),
                reconnect: false,
                drain: tokio_util::sync::CancellationToken::new(),
                // The plan is this user's own.
                trust: braid_worker::sandbox::Trust::Plan,
            };
            task::spawn("worker", async move {
                if let Err(err) = serve(&url, worker_options, stop).await {
                    tracing::error!(%err, "local worker ended with an error");
                }
            })
        })
        .collect();

    // SIGINT, SIGTERM and SIGHUP alike: cancel the scheduler's work and anything after
    // it; the exit code names the first signal.
    let interrupted = CancellationToken::new();
    let signalled = Arc::new(std::sync::atomic::AtomicI32::new(0));
    let signals = {
        let events = events_tx.clone();
        let interrupted = interrupted.clone();
        let signalled = Arc::clone(&signalled);
        let mut streams = signal_streams()?;
        task::spawn("signals", async move {
            loop {
                let number = tokio::select! {
                    _ = streams.0.recv() => libc::SIGINT,
                    _ = streams.1.recv() => libc::SIGTERM,
                    _ = streams.2.recv() => libc::SIGHUP,
                };
                let _ = signalled.compare_exchange(
                    0,
                    number,
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                );
                interrupted.cancel();
                let _ = events.send(Event::Interrupt).await;
            }
        })
    };

    drop(events_tx);
    let outcome = scheduler.run(events_rx).await;

    // Workers were told to shut down; give them time to remove their worktrees.
    for worker in workers {
        let abort = worker.abort_handle();
        if tokio::time::timeout(WORKER_WIND_DOWN, worker)
            .await
            .is_err()
        {
            worker_stop.cancel();
            abort.abort();
        }
    }
    server_stop.cancel();
    let _ = server.await;

    let concluding = Concluding {
        id: run_id.clone(),
        dir: run_dir.clone(),
        log_dir: log_dir.clone(),
        log_cap: config.log_cap,
        started,
        started_at,
        planner: options.planner.clone(),
    };
    let (report, error) = conclude(&plan, &concluding, outcome, &interrupted).await;
    signals.abort();
    let status = report.status;
    let written = report.write(&run_dir);
    // A run that ended is not resumed; one that was interrupted may be.
    if status != RunStatus::Cancelled {
        crate::journal::end(&journal_path, &report.run, &crate::report::word(status));
    }
    // Whatever the run left in the cache goes, and its lock with it: the report is written
    // (or could not be), so no later command needs to clean up after this run.
    drop(held);
    drop(socket_dir);
    let report_path = written.map_err(BraidError::io(format!(
        "writing the report in {}",
        run_dir.display()
    )))?;
    if let Some(error) = &error {
        let _ = notes_tx.send(Note::Info(format!("error: {error}")));
    }
    drop(notes_tx);
    let _ = renderer.await;
    let exit_code = match (status, &error) {
        (RunStatus::Cancelled, _) => match signalled.load(std::sync::atomic::Ordering::SeqCst) {
            0 | libc::SIGINT => EXIT_INTERRUPTED,
            number => 128 + number,
        },
        (_, Some(_)) => EXIT_ENVIRONMENT,
        (RunStatus::Succeeded, None) => EXIT_OK,
        (RunStatus::Failed | RunStatus::Crashed, None) => EXIT_FAILED,
    };
    Ok(Finished {
        report,
        report_path,
        exit_code,
    })
}

type Signals = (
    tokio::signal::unix::Signal,
    tokio::signal::unix::Signal,
    tokio::signal::unix::Signal,
);

/// Streams of SIGINT, SIGTERM and SIGHUP, taken before the run starts so none is missed.
fn signal_streams() -> Result<Signals, BraidError> {
    use tokio::signal::unix::{SignalKind, signal};
    let take = |kind| signal(kind).map_err(BraidError::io("listening for signals"));
    Ok((
        take(SignalKind::interrupt())?,
        take(SignalKind::terminate())?,
        take(SignalKind::hangup())?,
    ))
}

/// Removes a socket file this run bound, when the run ends.
struct Unlink(PathBuf);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What [`conclude`] needs to know of a run besides its plan and outcome.
#[derive(Debug, Clone)]
pub struct Concluding {
    /// The run's id, folder, log folder and log cap.
    pub id: String,
    pub dir: PathBuf,
    pub log_dir: PathBuf,
    pub log_cap: u64,
    /// When the run started.
    pub started: Instant,
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// The planner that made the plan.
    pub planner: Option<crate::planner::PlannerReport>,
}

/// After the loop: the result branch recorded, the report made (not written), and an
/// error that stopped the run, if one did.
pub async fn conclude(
    plan: &Plan,
    run: &Concluding,
    outcome: Outcome,
    interrupted: &CancellationToken,
) -> (Report, Option<String>) {
    // The scheduler integrated the winners (and a worker verified them); record the result.
    let git = Git::at(&plan.repo);
    let cancelled = outcome.cancelled || interrupted.is_cancelled();
    let run_id = run.id.clone();
    let (started, started_at) = (run.started, run.started_at);
    let mut error = outcome.error.clone();
    let mut result = ResultReport {
        branch: format!("braid/{run_id}/result"),
        conflicts: outcome.conflicts.clone(),
        predicted: outcome.predicted.clone(),
        integrated: outcome.integrated.clone(),
        steps: outcome.steps.clone(),
        ..Default::default()
    };
    if let Some(commit) = outcome.result.as_ref().filter(|_| !cancelled) {
        match git
            .create_ref(&format!("refs/heads/{}", result.branch), commit)
            .await
        {
            Ok(()) => result.commit = Some(commit.clone()),
            Err(e) => error = Some(format!("could not record the result branch: {e}")),
        }
    }
    // A worker verified the result in the loop.
    result.verify = outcome.verify.clone();
    let mut outcome = outcome;
    if plan.per_target
        && !cancelled
        && error.is_none()
        && let Err(why) = crate::batch::own_branches(plan, &run_id, &mut outcome.tasks).await
    {
        error = Some(format!("could not make the targets' own branches: {why}"));
    }
    let cancelled = cancelled || interrupted.is_cancelled();

    let all_won = outcome
        .tasks
        .iter()
        .all(|t| t.status == TaskStatus::Succeeded);
    let verified = result.verify.iter().all(|c| {
        matches!(
            c.status,
            crate::report::CheckStatus::Passed | crate::report::CheckStatus::Skipped
        )
    });
    let settled = result.conflicts.iter().all(|c| c.settled());
    let status = if cancelled {
        RunStatus::Cancelled
    } else if error.is_none() && all_won && settled && verified {
        RunStatus::Succeeded
    } else {
        RunStatus::Failed
    };
    let report = Report {
        run: run_id,
        name: plan.name.clone(),
        status,
        repo: plan.repo.to_string_lossy().into_owned(),
        base: plan.base_commit.clone(),
        base_rev: plan.base_rev.clone(),
        plan: plan.path.to_string_lossy().into_owned(),
        started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        duration_ms: started.elapsed().as_millis() as u64,
        result,
        usage: crate::report::Usage::sum(
            // A carried task's attempts were spent on in the run that won it.
            outcome
                .tasks
                .iter()
                .filter(|t| t.carried_from.is_none())
                .map(|t| &t.usage)
                .chain(run.planner.as_ref().map(|p| &p.usage)),
        ),
        planner: run.planner.clone(),
        rerun_of: plan.rerun_of.clone(),
        publish: plan.publish,
        repos: Vec::new(),
        targets: crate::report::burndown(plan, &outcome.tasks),
        tasks: outcome.tasks,
        workers: outcome.workers,
        timeline: outcome.timeline,
        state_dir: run.dir.to_string_lossy().into_owned(),
        stopped: outcome.stopped,
        overlaps: plan.overlaps.clone(),
        warnings: plan
            .warnings
            .iter()
            .chain(&outcome.warnings)
            .cloned()
            .collect(),
    };
    (report, error)
}
