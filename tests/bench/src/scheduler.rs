//! Scheduler: 10,000 no-op attempts through the real gRPC path. `braid run --workers 0
//! --listen` is the coordinator, in its own process; the benchmark's workers connect to it
//! over `braid.v1` and finish every attempt the moment they get it, reporting the commit
//! made in advance for its task (each task adds a file of its own). So what is measured is
//! the coordinator: its stream handling, leases, judging, selection, branch records and
//! trial merges.
//!
//! Ready to assigned: every attempt is queued long before a slot frees up for it, so it is
//! ready for assignment the moment a slot frees. A worker notes when it sends a result (its
//! slot is free from then on) and when the next assignment arrives; the difference is the
//! latency from ready to assigned, across the socket both ways.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use braid_shared::proto::coordinator_message::Kind as Down;
use braid_shared::proto::worker_message::Kind as Up;
use braid_shared::proto::worker_service_client::WorkerServiceClient;
use braid_shared::proto::{
    AssignAck, AttemptResult, AttemptStatus, DiffStat, Heartbeat, Register, WorkerMessage,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::repo::{SMALL_TASKS, SmallRepo};
use crate::table::{Goal, Row, Unit, quantile, secs};
use crate::{braid, say};

const TASKS: usize = SMALL_TASKS;
const ATTEMPTS: usize = 25;
const WORKERS: usize = 4;
const SLOTS: u32 = 8;

/// What one worker saw.
#[derive(Debug, Default)]
pub struct Seen {
    done: usize,
    first_assign: Option<Instant>,
    last_result: Option<Instant>,
    latencies: Vec<f64>,
}

/// How many attempts the workers of a round are to finish in all: a server does not tell
/// its workers that a run is over.
#[derive(Debug)]
pub struct Quota {
    done: std::sync::atomic::AtomicUsize,
    total: usize,
    over: tokio_util::sync::CancellationToken,
}

impl Quota {
    pub fn new(total: usize) -> Arc<Self> {
        Arc::new(Quota {
            done: Default::default(),
            total,
            over: Default::default(),
        })
    }

    fn one_done(&self) {
        let done = self.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if done >= self.total {
            self.over.cancel();
        }
    }
}

/// A worker that finishes each attempt at once with its task's change from `changes`,
/// presenting `token` when it has one, until its coordinator shuts it down or the
/// workers' quota is met.
pub async fn noop_worker(
    url: String,
    name: String,
    changes: Arc<HashMap<String, String>>,
    token: Option<String>,
    quota: Arc<Quota>,
) -> Result<Seen> {
    let channel = braid_worker::runtime::channel(&url).await?;
    let bearer = braid_shared::auth::Bearer::new(token.as_deref()).map_err(anyhow::Error::msg)?;
    let (up, rx) = mpsc::channel::<WorkerMessage>(1024);
    let send = |kind: Up| {
        let up = up.clone();
        async move {
            let _ = up.send(WorkerMessage { kind: Some(kind) }).await;
        }
    };
    send(Up::Register(Register {
        name,
        slots: SLOTS,
        labels: Default::default(),
        version: braid_shared::VERSION.to_owned(),
        running: Vec::new(),
    }))
    .await;
    let mut down = WorkerServiceClient::with_interceptor(channel, bearer)
        .attach(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut seen = Seen::default();
    // When each free slot became free.
    let mut free: VecDeque<Instant> = VecDeque::new();
    let mut heartbeat = tokio::time::interval(Duration::from_millis(500));
    // Results the coordinator has not answered yet: a worker that goes before they are
    // answered may take them along.
    let mut unanswered = 0usize;
    loop {
        if quota.over.is_cancelled() && unanswered == 0 {
            break;
        }
        tokio::select! {
            msg = down.message() => {
                let Some(msg) = msg? else { break };
                match msg.kind {
                    Some(Down::Registered(_)) => {
                        free = (0..SLOTS).map(|_| Instant::now()).collect();
                    }
                    Some(Down::Assign(assign)) => {
                        let now = Instant::now();
                        let task = assign.attempt.as_ref().map(|a| a.task_id.as_str()).unwrap_or_default();
                        let commit = changes.get(task).cloned().unwrap_or_default();
                        seen.first_assign.get_or_insert(now);
                        match free.pop_front() {
                            Some(since) => seen.latencies.push(secs(now - since)),
                            None => bail!("assigned past the worker's free slots"),
                        }
                        send(Up::AssignAck(AssignAck { lease_id: assign.lease_id.clone() })).await;
                        send(Up::Result(AttemptResult {
                            lease_id: assign.lease_id,
                            status: AttemptStatus::Finished as i32,
                            commit,
                            diff: Some(DiffStat { files: 1, insertions: 2, deletions: 0 }),
                            duration_ms: 0,
                            ..Default::default()
                        })).await;
                        let sent = Instant::now();
                        free.push_back(sent);
                        seen.last_result = Some(sent);
                        seen.done += 1;
                        unanswered += 1;
                        quota.one_done();
                    }
                    Some(Down::ResultAck(_)) => unanswered = unanswered.saturating_sub(1),
                    Some(Down::Shutdown(_)) => break,
                    _ => {}
                }
            }
            () = quota.over.cancelled(), if unanswered == 0 => break,
            _ = heartbeat.tick() => {
                send(Up::Heartbeat(Heartbeat { free_slots: free.len() as u32, running: Vec::new() })).await;
            }
        }
    }
    Ok(seen)
}

/// The plan of [`TASKS`] tasks of [`ATTEMPTS`] no-op attempts each on `repo`.
pub fn plan(repo: &SmallRepo) -> String {
    let mut plan = format!(
        "version: 1\nname: bench-scheduler\nrepo: {}\nbase: main\ndefaults:\n  agent:\n    command: [\"true\"]\n  attempts: {ATTEMPTS}\ntasks:\n",
        repo.path.display()
    );
    for t in 0..TASKS {
        let _ = writeln!(plan, "  - id: t{t}\n    prompt: nothing");
    }
    plan
}

/// Runs [`WORKERS`] no-op workers against the coordinator at `url` until they have done
/// every attempt of the plan; what they saw, together.
pub async fn noop_fleet(
    url: &str,
    token: Option<&str>,
    changes: &Arc<HashMap<String, String>>,
) -> Result<Seen> {
    let quota = Quota::new(TASKS * ATTEMPTS);
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (url, changes) = (url.to_owned(), Arc::clone(changes));
            let (token, quota) = (token.map(str::to_owned), Arc::clone(&quota));
            braid_shared::task::spawn(
                "bench-worker",
                noop_worker(url, format!("noop-{w}"), changes, token, quota),
            )
        })
        .collect();
    let mut all = Seen::default();
    for worker in workers {
        let seen = worker.await.context("a worker panicked")??;
        all.done += seen.done;
        all.latencies.extend(seen.latencies);
        all.first_assign = match (all.first_assign, seen.first_assign) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        all.last_result = all.last_result.max(seen.last_result);
    }
    Ok(all)
}

/// Throughput and ready-to-assigned latency of what the workers saw: attempts/s, p50 and
/// p99 in seconds.
pub fn measured(all: &Seen) -> Result<(f64, f64, f64)> {
    if all.done != TASKS * ATTEMPTS {
        bail!("{} attempts were done, not {}", all.done, TASKS * ATTEMPTS);
    }
    let (Some(first), Some(last)) = (all.first_assign, all.last_result) else {
        bail!("no attempt was assigned");
    };
    Ok((
        all.done as f64 / secs(last - first),
        quantile(&all.latencies, 0.5),
        quantile(&all.latencies, 0.99),
    ))
}

/// Runs the scenario `rounds` times.
pub async fn run(repo: &SmallRepo, scratch: &Path, rounds: usize) -> Result<Vec<Row>> {
    let plan_path = scratch.join("scheduler.yaml");
    std::fs::write(&plan_path, plan(repo))?;
    let changes = Arc::new(repo.changes.clone());
    let (mut rates, mut p50s, mut p99s) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let socket = scratch.join(format!("coordinator-{round}.sock"));
        let mut coordinator = braid()?
            .args(["run", "--workers", "0", "--listen"])
            .arg(format!("unix:{}", socket.display()))
            .arg(&plan_path)
            .stdout(std::fs::File::create(scratch.join("coordinator.txt"))?)
            .stderr(std::fs::File::create(scratch.join("coordinator-err.txt"))?)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            if Instant::now() > deadline {
                let _ = coordinator.kill();
                bail!("the coordinator did not listen on {}", socket.display());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let url = format!("unix:{}", socket.display());
        let all = noop_fleet(&url, None, &changes).await?;
        let status = tokio::task::spawn_blocking(move || coordinator.wait()).await??;
        if !status.success() {
            bail!(
                "the coordinator failed ({status}); see {}",
                scratch.display()
            );
        }
        let (rate, p50, p99) = measured(&all)?;
        say(format!(
            "  {rate:.0} attempts/s, ready to assigned p50 {:.2} ms, p99 {:.2} ms",
            p50 * 1e3,
            p99 * 1e3
        ));
        rates.push(rate);
        p50s.push(p50);
        p99s.push(p99);
    }
    let row = |measure: &str, unit, samples, goal| Row {
        scenario: "scheduler".into(),
        measure: measure.into(),
        unit,
        samples,
        baseline: None,
        goal,
        note: format!(
            "{TASKS} tasks x {ATTEMPTS} attempts, {WORKERS} gRPC workers x {SLOTS} slots on a Unix socket"
        ),
    };
    Ok(vec![
        row(
            "10,000 no-op attempts: throughput",
            Unit::PerSecond,
            rates,
            Goal::AtLeast(1000.0),
        ),
        row("ready to assigned, p50", Unit::Seconds, p50s, Goal::None),
        row(
            "ready to assigned, p99",
            Unit::Seconds,
            p99s,
            Goal::AtMost(0.005),
        ),
    ])
}
