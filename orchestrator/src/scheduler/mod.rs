//! The scheduler: one event loop that owns every piece of run state.
//!
//! Design note: `docs/design/scheduler.md`. In short: worker streams, base merges, timers
//! and interrupts all become [`Event`]s on one channel; the loop handles one event at a time
//! and then fills free worker slots from the queue. No locks, no shared state: workers are
//! reached only through their stream's sender, and every assignment carries a lease that the
//! loop checks when the result comes back.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_shared::git::Git;
use braid_shared::proto::coordinator_message::Kind as Down;
use braid_shared::proto::worker_message::Kind as Up;
use braid_shared::proto::{
    self as pb, AgentSpec, Assign, AttemptSpec, Cancel, CheckSpec, CoordinatorMessage, ResultAck,
    Shutdown, progress,
};
use braid_shared::task;
use tokio::sync::mpsc;
use tonic::Status;

mod integration;

use crate::dag::Dag;
use crate::merge::{self, DepWinner, MergeError, Merged, Merger};
use crate::plan::{Check, Plan};
use crate::progress::Note;
use crate::report::{
    AttemptKind, AttemptReport, AttemptStatus, CheckReport, CheckStatus, ConflictReport,
    DiffReport, Prediction, Resolution, StepReport, TaskReport, TaskStatus, TimelineEntry,
    WorkerReport, word,
};
use crate::select;

/// A worker's end of its stream, as the service hands it over.
#[derive(Debug)]
pub struct WorkerLink {
    /// The worker's id, unique in this coordinator.
    pub id: String,
    /// The name it gave.
    pub name: String,
    /// Its slots.
    pub slots: u32,
    /// Messages to the worker.
    pub tx: mpsc::Sender<Result<CoordinatorMessage, Status>>,
}

/// Everything the loop reacts to.
#[derive(Debug)]
pub enum Event {
    /// A worker registered.
    WorkerJoined(WorkerLink),
    /// A worker sent a message.
    FromWorker {
        /// The worker's id.
        worker: String,
        /// The message.
        kind: Up,
    },
    /// A worker's stream ended.
    WorkerLeft {
        /// The worker's id.
        worker: String,
        /// Why, in a sentence.
        reason: String,
    },
    /// The merge of a task's deps' winners is done.
    BaseReady {
        /// The task.
        task: usize,
        /// The base commit, a conflict, or what went wrong.
        outcome: Result<Merged, String>,
    },
    /// The person pressed Ctrl-C (twice: stop at once).
    Interrupt,
}

/// Timings and limits of the loop.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// How often workers send heartbeats, and how often the loop checks them.
    pub heartbeat_interval: Duration,
    /// Silence after which a worker counts as lost.
    pub heartbeat_timeout: Duration,
    /// How often a lost attempt is run again before it counts as lost for good.
    pub max_lost_retries: u32,
    /// Largest size of one log file.
    pub log_cap: u64,
    /// Give up when work is waiting and no worker has been connected for this long.
    pub no_worker_timeout: Option<Duration>,
    /// How long cancelled attempts get to report before they are given up.
    pub cancel_grace: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            heartbeat_interval: Duration::from_millis(500),
            heartbeat_timeout: Duration::from_secs(5),
            max_lost_retries: 2,
            log_cap: 8 << 20,
            no_worker_timeout: Some(Duration::from_secs(30)),
            cancel_grace: Duration::from_secs(20),
        }
    }
}

/// What the run is, for the loop.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// The run id.
    pub run_id: String,
    /// The checked plan.
    pub plan: Arc<Plan>,
    /// Folder for log files.
    pub log_dir: PathBuf,
    /// When the run started.
    pub started: Instant,
}

/// What the loop leaves behind.
#[derive(Debug)]
pub struct Outcome {
    /// Every task, in plan order.
    pub tasks: Vec<TaskReport>,
    /// Conflicts between deps' winners and in the integration.
    pub conflicts: Vec<ConflictReport>,
    /// Conflicts foreseen by trial merges.
    pub predicted: Vec<Prediction>,
    /// The integration's commit; `None` when nothing was integrated.
    pub result: Option<String>,
    /// Tasks integrated, in order.
    pub integrated: Vec<String>,
    /// How each went in.
    pub steps: Vec<StepReport>,
    /// What happened when.
    pub timeline: Vec<TimelineEntry>,
    /// Every worker that joined.
    pub workers: Vec<WorkerReport>,
    /// Whether the run was interrupted.
    pub cancelled: bool,
    /// Why the loop gave up, when it did.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskPhase {
    /// Deps not done.
    Waiting,
    /// Merging the deps' winners into a base.
    Resolving,
    /// Attempts queued or running.
    Running,
    /// Ended.
    Done(TaskStatus),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttemptPhase {
    Idle,
    Queued,
    Leased,
    Done,
}

#[derive(Debug)]
struct TaskState {
    phase: TaskPhase,
    base: Option<String>,
    attempts: Vec<AttemptState>,
    winner: Option<u32>,
    reason: Option<String>,
    /// Re-runs on top of the integration so far; attempts of this round are the current ones.
    round: u32,
    /// The latest re-run found no passing attempt (the earlier winner stands).
    rebase_failed: bool,
}

#[derive(Debug)]
struct AttemptState {
    report: AttemptReport,
    phase: AttemptPhase,
    /// The prompt, when not the task's own (a resolution attempt).
    prompt: Option<String>,
    /// Checks run after the task's own (a resolution also runs the verify checks).
    extra_checks: Vec<Check>,
}

impl AttemptState {
    fn new(report: AttemptReport, phase: AttemptPhase) -> Self {
        AttemptState {
            report,
            phase,
            prompt: None,
            extra_checks: Vec::new(),
        }
    }
}

#[derive(Debug)]
struct WorkerState {
    link: WorkerLink,
    leases: HashSet<String>,
    last_seen: Instant,
}

#[derive(Debug, Clone)]
struct Lease {
    task: usize,
    attempt: usize,
    worker: String,
}

/// The event loop's state.
#[derive(Debug)]
pub struct Scheduler {
    ctx: RunContext,
    config: SchedulerConfig,
    dag: Dag,
    git: Git,
    merger: Merger,
    tasks: Vec<TaskState>,
    queue: VecDeque<(usize, usize)>,
    workers: BTreeMap<String, WorkerState>,
    joined: Vec<WorkerReport>,
    leases: HashMap<String, Lease>,
    next_lease: u64,
    conflicts: Vec<ConflictReport>,
    events: mpsc::Sender<Event>,
    notes: mpsc::UnboundedSender<Note>,
    cancelling: Option<Instant>,
    no_worker_since: Option<Instant>,
    error: Option<String>,
    /// Tasks one of whose attempts ended outside a result, to settle after the event.
    dirty: Vec<usize>,
    integration: integration::Integration,
    predicted: Vec<Prediction>,
    timeline: Vec<TimelineEntry>,
}

impl Scheduler {
    /// A scheduler for `ctx`'s plan. `events` must be the sender of the channel the loop
    /// will read; it is used to report merges back into the loop. Fails when the
    /// repository's objects cannot be opened.
    pub fn new(
        ctx: RunContext,
        config: SchedulerConfig,
        events: mpsc::Sender<Event>,
        notes: mpsc::UnboundedSender<Note>,
    ) -> Result<Self, MergeError> {
        let plan = Arc::clone(&ctx.plan);
        let merger = Merger::open(&plan.repo)?;
        let tasks = plan
            .tasks
            .iter()
            .map(|t| TaskState {
                phase: TaskPhase::Waiting,
                base: None,
                attempts: (1..=t.attempts)
                    .map(|n| {
                        let branch = format!("braid/{}/{}/{n}", ctx.run_id, t.id);
                        AttemptState::new(AttemptReport::empty(n, &branch), AttemptPhase::Idle)
                    })
                    .collect(),
                winner: None,
                reason: None,
                round: 0,
                rebase_failed: false,
            })
            .collect();
        Ok(Scheduler {
            dag: Dag::new(&plan.tasks),
            git: Git::at(&plan.repo),
            merger,
            ctx,
            config,
            tasks,
            queue: VecDeque::new(),
            workers: BTreeMap::new(),
            joined: Vec::new(),
            leases: HashMap::new(),
            next_lease: 1,
            conflicts: Vec::new(),
            events,
            notes,
            cancelling: None,
            no_worker_since: Some(Instant::now()),
            error: None,
            dirty: Vec::new(),
            integration: Default::default(),
            predicted: Vec::new(),
            timeline: Vec::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.ctx.started.elapsed().as_millis() as u64
    }

    /// Runs the loop until every task has ended (or the run is cancelled), then tells every
    /// worker to shut down.
    pub async fn run(mut self, mut events: mpsc::Receiver<Event>) -> Outcome {
        for t in 0..self.tasks.len() {
            self.try_start(t);
        }
        self.settle().await;
        let mut tick = tokio::time::interval(self.config.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.finished() {
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => self.handle(event).await,
                    None => break,
                },
                _ = tick.tick() => self.on_tick().await,
            }
            self.settle().await;
            self.dispatch();
        }
        for worker in self.workers.values() {
            let _ = worker.link.tx.try_send(Ok(down(Down::Shutdown(Shutdown {
                reason: "the run is over".into(),
            }))));
        }
        self.outcome()
    }

    /// Ends the tasks whose attempts all ended since the last event, and moves the
    /// integration on once every task has ended.
    async fn settle(&mut self) {
        while let Some(task) = self.dirty.pop() {
            self.finish_task_if_done(task).await;
        }
        self.advance_integration().await;
    }

    fn finished(&self) -> bool {
        if self.error.is_some() {
            return true;
        }
        let all_done = self
            .tasks
            .iter()
            .all(|t| matches!(t.phase, TaskPhase::Done(_)));
        let over = all_done && self.integration.finished;
        (over || self.cancelling.is_some()) && self.leases.is_empty()
    }

    async fn handle(&mut self, event: Event) {
        match event {
            Event::WorkerJoined(link) => {
                self.note(Note::WorkerJoined {
                    id: link.id.clone(),
                    name: link.name.clone(),
                    slots: link.slots,
                });
                self.joined.push(WorkerReport {
                    id: link.id.clone(),
                    name: link.name.clone(),
                    slots: link.slots,
                });
                self.no_worker_since = None;
                self.workers.insert(
                    link.id.clone(),
                    WorkerState {
                        link,
                        leases: HashSet::new(),
                        last_seen: Instant::now(),
                    },
                );
            }
            Event::FromWorker { worker, kind } => self.on_worker_message(worker, kind).await,
            Event::WorkerLeft { worker, reason } => self.drop_worker(&worker, &reason),
            Event::BaseReady { task, outcome } => self.base_ready(task, outcome),
            Event::Interrupt => self.interrupt(),
        }
    }

    async fn on_worker_message(&mut self, worker: String, kind: Up) {
        let Some(state) = self.workers.get_mut(&worker) else {
            return;
        };
        state.last_seen = Instant::now();
        match kind {
            Up::Register(_) | Up::Heartbeat(_) | Up::AssignAck(_) => {}
            Up::Progress(p) => {
                let Some(lease) = self.leases.get(&p.lease_id) else {
                    return;
                };
                if let Some(progress::Kind::Logs(batch)) = p.kind {
                    let task = self.ctx.plan.tasks[lease.task].id.clone();
                    let n = self.tasks[lease.task].attempts[lease.attempt].report.n;
                    for line in batch.lines {
                        self.note(Note::Output {
                            task: task.clone(),
                            n,
                            line,
                        });
                    }
                }
            }
            Up::Result(result) => self.on_result(&worker, result).await,
        }
    }

    async fn on_result(&mut self, worker: &str, result: pb::AttemptResult) {
        let current = self
            .leases
            .get(&result.lease_id)
            .is_some_and(|l| l.worker == worker);
        self.send(
            worker,
            Down::ResultAck(ResultAck {
                lease_id: result.lease_id.clone(),
                accepted: current,
                reason: if current {
                    String::new()
                } else {
                    "stale lease: the attempt was reassigned or has ended".into()
                },
            }),
        );
        if !current {
            tracing::warn!(lease = %result.lease_id, %worker, "refused a result under a stale lease");
            return;
        }
        let lease = self.release(&result.lease_id).expect("checked above");
        if result.infrastructure {
            self.lost(lease.task, lease.attempt, &result.error);
            return;
        }
        let finished_ms = self.ctx.started.elapsed().as_millis() as u64;
        let report = &mut self.tasks[lease.task].attempts[lease.attempt].report;
        report.status = match result.status() {
            pb::AttemptStatus::Succeeded => AttemptStatus::Succeeded,
            pb::AttemptStatus::TimedOut => AttemptStatus::TimedOut,
            pb::AttemptStatus::Cancelled => AttemptStatus::Cancelled,
            pb::AttemptStatus::Failed | pb::AttemptStatus::Unspecified => AttemptStatus::Failed,
        };
        report.commit = (!result.commit.is_empty()).then(|| result.commit.clone());
        report.diff = result
            .diff
            .map(|d| DiffReport {
                files: d.files,
                insertions: d.insertions,
                deletions: d.deletions,
            })
            .unwrap_or_default();
        report.checks = result.checks.iter().map(check_report).collect();
        report.duration_ms = result.duration_ms;
        report.error = (!result.error.is_empty()).then(|| result.error.clone());
        report.log = (!result.log_path.is_empty()).then(|| result.log_path.clone());
        report.agent_exit_code = result.agent_exit_code;
        report.finished_ms = Some(finished_ms);
        if let Some(commit) = &report.commit {
            let refname = format!("refs/heads/{}", report.branch);
            if let Err(err) = self.git.create_ref(&refname, commit).await {
                report.status = AttemptStatus::Failed;
                report.error = Some(format!("could not record branch {}: {err}", report.branch));
            }
        }
        self.tasks[lease.task].attempts[lease.attempt].phase = AttemptPhase::Done;
        let report = &self.tasks[lease.task].attempts[lease.attempt].report;
        let note = Note::AttemptDone {
            task: self.ctx.plan.tasks[lease.task].id.clone(),
            n: report.n,
            status: word(report.status),
            detail: report.error.clone().unwrap_or_default(),
        };
        self.note(note);
        self.finish_task_if_done(lease.task).await;
    }

    /// Forgets a lease; returns it.
    fn release(&mut self, lease_id: &str) -> Option<Lease> {
        let lease = self.leases.remove(lease_id)?;
        if let Some(worker) = self.workers.get_mut(&lease.worker) {
            worker.leases.remove(lease_id);
        }
        Some(lease)
    }

    /// An attempt whose worker was lost: run it again, or give up on it.
    fn lost(&mut self, task: usize, attempt: usize, why: &str) {
        let retry = self.cancelling.is_none();
        let state = &mut self.tasks[task].attempts[attempt];
        state.report.lost += 1;
        let n = state.report.n;
        if retry && state.report.lost <= self.config.max_lost_retries {
            state.phase = AttemptPhase::Queued;
            self.queue.push_front((task, attempt));
        } else {
            state.phase = AttemptPhase::Done;
            state.report.status = if retry {
                AttemptStatus::Lost
            } else {
                AttemptStatus::Cancelled
            };
            state.report.error = Some(why.to_owned());
        }
        let task_id = self.ctx.plan.tasks[task].id.clone();
        self.note(Note::AttemptLost {
            task: task_id,
            n,
            retried: retry && self.tasks[task].attempts[attempt].phase == AttemptPhase::Queued,
        });
        self.dirty.push(task);
    }

    fn drop_worker(&mut self, worker: &str, reason: &str) {
        let Some(state) = self.workers.remove(worker) else {
            return;
        };
        self.note(Note::WorkerLost {
            id: worker.to_owned(),
            reason: reason.to_owned(),
        });
        let mut leases: Vec<String> = state.leases.into_iter().collect();
        leases.sort();
        for lease_id in leases {
            if let Some(lease) = self.leases.remove(&lease_id) {
                self.lost(
                    lease.task,
                    lease.attempt,
                    &format!("worker {worker} was lost: {reason}"),
                );
            }
        }
        if self.workers.is_empty() {
            self.no_worker_since = Some(Instant::now());
        }
    }

    async fn on_tick(&mut self) {
        let silent: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, w)| w.last_seen.elapsed() > self.config.heartbeat_timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for worker in silent {
            let reason = format!("no heartbeat for {:?}", self.config.heartbeat_timeout);
            self.drop_worker(&worker, &reason);
        }
        if let (Some(since), Some(limit)) = (self.no_worker_since, self.config.no_worker_timeout) {
            let waiting = !self.queue.is_empty() || !self.leases.is_empty();
            if waiting && since.elapsed() > limit {
                self.error = Some(format!(
                    "no worker connected for {limit:?} while attempts were waiting"
                ));
            }
        }
        if let Some(deadline) = self.cancelling
            && Instant::now() > deadline
        {
            self.give_up_leases("it did not stop within the grace period");
        }
    }

    fn give_up_leases(&mut self, why: &str) {
        let leases: Vec<String> = self.leases.keys().cloned().collect();
        for lease_id in leases {
            if let Some(lease) = self.release(&lease_id) {
                let state = &mut self.tasks[lease.task].attempts[lease.attempt];
                state.phase = AttemptPhase::Done;
                state.report.status = AttemptStatus::Cancelled;
                state.report.error = Some(format!("cancelled; {why}"));
                self.dirty.push(lease.task);
            }
        }
    }

    fn interrupt(&mut self) {
        if self.cancelling.is_some() {
            self.give_up_leases("the run was interrupted twice");
            return;
        }
        self.note(Note::Info("interrupted: stopping running attempts".into()));
        self.cancelling = Some(Instant::now() + self.config.cancel_grace);
        while let Some((t, a)) = self.queue.pop_front() {
            let state = &mut self.tasks[t].attempts[a];
            state.phase = AttemptPhase::Done;
            state.report.status = AttemptStatus::Cancelled;
        }
        for task in &mut self.tasks {
            if matches!(task.phase, TaskPhase::Waiting | TaskPhase::Resolving) {
                task.phase = TaskPhase::Done(TaskStatus::Cancelled);
                task.reason = Some("the run was interrupted before it started".into());
            }
            for state in &mut task.attempts {
                if state.phase == AttemptPhase::Idle {
                    state.phase = AttemptPhase::Done;
                }
            }
        }
        self.dirty.extend(0..self.tasks.len());
        let leases: Vec<(String, String)> = self
            .leases
            .iter()
            .map(|(id, l)| (id.clone(), l.worker.clone()))
            .collect();
        for (lease_id, worker) in leases {
            self.send(
                &worker,
                Down::Cancel(Cancel {
                    lease_id,
                    reason: "the run was interrupted".into(),
                }),
            );
        }
    }

    /// Starts `task` if it waits and all its deps have winners.
    fn try_start(&mut self, task: usize) {
        if self.tasks[task].phase != TaskPhase::Waiting || self.cancelling.is_some() {
            return;
        }
        let deps = self.dag.deps(task);
        if !deps
            .iter()
            .all(|&d| self.tasks[d].phase == TaskPhase::Done(TaskStatus::Succeeded))
        {
            return;
        }
        if deps.is_empty() {
            let base = self.ctx.plan.base_commit.clone();
            self.begin(task, base);
            return;
        }
        self.tasks[task].phase = TaskPhase::Resolving;
        let winners: Vec<DepWinner> = deps
            .iter()
            .map(|&d| {
                let state = &self.tasks[d];
                let commit = state
                    .winner
                    .and_then(|n| state.attempts.iter().find(|a| a.report.n == n))
                    .and_then(|a| a.report.commit.clone())
                    .unwrap_or_default();
                DepWinner {
                    id: self.ctx.plan.tasks[d].id.clone(),
                    base: state.base.clone().unwrap_or_default(),
                    commit,
                }
            })
            .collect();
        let merger = self.merger.clone();
        let events = self.events.clone();
        let id = self.ctx.plan.tasks[task].id.clone();
        task::spawn("base-merge", async move {
            let outcome = merge::task_base(&merger, &id, &winners)
                .await
                .map_err(|e| e.to_string());
            let _ = events.send(Event::BaseReady { task, outcome }).await;
        });
    }

    fn base_ready(&mut self, task: usize, outcome: Result<Merged, String>) {
        if self.tasks[task].phase != TaskPhase::Resolving {
            return;
        }
        match outcome {
            Ok(Merged::Commit(base)) => self.begin(task, base),
            Ok(Merged::Conflict { tasks, conflicts }) => {
                let paths: Vec<String> = conflicts.iter().map(|c| c.path.clone()).collect();
                let reason = format!(
                    "the winners of its deps {} conflict in {}",
                    tasks.join(" and "),
                    paths.join(", ")
                );
                self.mark("conflict", Some(task), reason.clone());
                self.conflicts.push(ConflictReport {
                    tasks,
                    paths,
                    stage: "dependencies".into(),
                    outcome: format!("task {} blocked", self.ctx.plan.tasks[task].id),
                    resolution: Resolution::Blocked,
                    details: conflicts,
                    at_ms: self.now_ms(),
                });
                self.end_task(task, TaskStatus::Blocked, reason);
            }
            Err(err) => {
                self.end_task(
                    task,
                    TaskStatus::Failed,
                    format!("could not merge its deps: {err}"),
                );
            }
        }
    }

    fn begin(&mut self, task: usize, base: String) {
        let state = &mut self.tasks[task];
        state.phase = TaskPhase::Running;
        state.base = Some(base.clone());
        for (i, attempt) in state.attempts.iter_mut().enumerate() {
            attempt.phase = AttemptPhase::Queued;
            self.queue.push_back((task, i));
        }
        let attempts = state.attempts.len() as u32;
        self.mark(
            "task_started",
            Some(task),
            format!("{attempts} attempt(s) from {}", crate::report::short(&base)),
        );
        self.note(Note::TaskStarted {
            task: self.ctx.plan.tasks[task].id.clone(),
            base,
            attempts,
        });
    }

    /// Ends a task whose attempts have all ended: picks the winner and moves the DAG on.
    async fn finish_task_if_done(&mut self, task: usize) {
        let state = &self.tasks[task];
        let round: Vec<&AttemptState> = state
            .attempts
            .iter()
            .filter(|a| a.report.kind == AttemptKind::Task && a.report.round == state.round)
            .collect();
        if state.phase != TaskPhase::Running || round.iter().any(|a| a.phase != AttemptPhase::Done)
        {
            return;
        }
        let reports: Vec<AttemptReport> = round.iter().map(|a| a.report.clone()).collect();
        if self.cancelling.is_some() && reports.iter().any(|a| a.status == AttemptStatus::Cancelled)
        {
            self.end_task(
                task,
                TaskStatus::Cancelled,
                "the run was interrupted".into(),
            );
            return;
        }
        let verdict = select::best(&reports);
        if verdict.is_none() && self.tasks[task].winner.is_some() {
            // A re-run found nothing better: the earlier winner stands, and the
            // integration leaves it out as before.
            let state = &mut self.tasks[task];
            state.phase = TaskPhase::Done(TaskStatus::Succeeded);
            state.rebase_failed = true;
            let round = state.round;
            self.mark(
                "winner",
                Some(task),
                format!("re-run {round} found no passing attempt"),
            );
            self.start_dependents(task);
            return;
        }
        let Some(verdict) = verdict else {
            let why = reports
                .iter()
                .map(|a| format!("#{} {}", a.n, a.error.as_deref().unwrap_or(&word(a.status))))
                .collect::<Vec<_>>()
                .join("; ");
            self.end_task(
                task,
                TaskStatus::Failed,
                format!("no attempt passed ({why})"),
            );
            return;
        };
        let id = self.ctx.plan.tasks[task].id.clone();
        let branch = winner_branch(&self.ctx.run_id, &id);
        let commit = reports
            .iter()
            .find(|a| a.n == verdict.winner)
            .and_then(|a| a.commit.clone())
            .unwrap_or_default();
        let refname = format!("refs/heads/{branch}");
        let recorded = match self.winner_commit(task) {
            Some(old) => self.git.move_ref(&refname, &commit, &old).await,
            None => self.git.create_ref(&refname, &commit).await,
        };
        if let Err(err) = recorded {
            self.end_task(
                task,
                TaskStatus::Failed,
                format!("could not record branch {branch}: {err}"),
            );
            return;
        }
        let state = &mut self.tasks[task];
        state.winner = Some(verdict.winner);
        state.phase = TaskPhase::Done(TaskStatus::Succeeded);
        state.reason = Some(verdict.reason.clone());
        let detail = format!("winner #{}: {}", verdict.winner, verdict.reason);
        self.mark("winner", Some(task), detail.clone());
        self.note(Note::TaskDone {
            task: id,
            status: "succeeded".into(),
            detail,
        });
        self.trial_merges(task).await;
        self.start_dependents(task);
    }

    /// Starts the dependents of `task`, once it has ended with a winner.
    fn start_dependents(&mut self, task: usize) {
        if self.tasks[task].phase != TaskPhase::Done(TaskStatus::Succeeded) {
            return;
        }
        for next in self.dag.dependents(task) {
            self.try_start(next);
        }
    }

    /// Ends a task without a winner and blocks everything downstream.
    fn end_task(&mut self, task: usize, status: TaskStatus, reason: String) {
        let id = self.ctx.plan.tasks[task].id.clone();
        self.tasks[task].phase = TaskPhase::Done(status);
        self.tasks[task].reason = Some(reason.clone());
        self.note(Note::TaskDone {
            task: id.clone(),
            status: word(status),
            detail: reason,
        });
        for next in self.dag.downstream(task) {
            if matches!(self.tasks[next].phase, TaskPhase::Waiting) {
                let next_id = self.ctx.plan.tasks[next].id.clone();
                let reason = format!("blocked: it depends on {id}, which did not succeed");
                self.tasks[next].phase = TaskPhase::Done(TaskStatus::Blocked);
                self.tasks[next].reason = Some(reason.clone());
                for attempt in &mut self.tasks[next].attempts {
                    attempt.phase = AttemptPhase::Done;
                }
                self.note(Note::TaskDone {
                    task: next_id,
                    status: "blocked".into(),
                    detail: reason,
                });
            }
        }
    }

    /// Fills free slots from the queue, most free worker first.
    fn dispatch(&mut self) {
        while self.cancelling.is_none() && !self.queue.is_empty() {
            let Some(worker) = self
                .workers
                .iter()
                .map(|(id, w)| ((w.link.slots as usize).saturating_sub(w.leases.len()), id))
                .filter(|(free, _)| *free > 0)
                .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
                .map(|(_, id)| id.clone())
            else {
                return;
            };
            let (task, attempt) = self.queue.pop_front().expect("not empty");
            let lease_id = format!("{}-{}", self.ctx.run_id, self.next_lease);
            self.next_lease += 1;
            let spec = self.attempt_spec(task, attempt);
            let message = down(Down::Assign(Assign {
                lease_id: lease_id.clone(),
                attempt: Some(spec),
            }));
            let sent = self.workers[&worker].link.tx.try_send(Ok(message)).is_ok();
            if !sent {
                self.queue.push_front((task, attempt));
                self.drop_worker(&worker, "it is not reading its stream");
                continue;
            }
            let started_ms = self.ctx.started.elapsed().as_millis() as u64;
            let state = &mut self.tasks[task].attempts[attempt];
            state.phase = AttemptPhase::Leased;
            state.report.worker = Some(worker.clone());
            state.report.started_ms = Some(started_ms);
            let n = state.report.n;
            self.workers
                .get_mut(&worker)
                .expect("picked above")
                .leases
                .insert(lease_id.clone());
            self.leases.insert(
                lease_id,
                Lease {
                    task,
                    attempt,
                    worker: worker.clone(),
                },
            );
            self.note(Note::Assigned {
                task: self.ctx.plan.tasks[task].id.clone(),
                n,
                worker,
            });
        }
    }

    fn attempt_spec(&self, task: usize, attempt: usize) -> AttemptSpec {
        let plan_task = &self.ctx.plan.tasks[task];
        let state = &self.tasks[task];
        let this = &state.attempts[attempt];
        AttemptSpec {
            run_id: self.ctx.run_id.clone(),
            task_id: plan_task.id.clone(),
            attempt: this.report.n,
            repo: self.ctx.plan.repo.to_string_lossy().into_owned(),
            base_commit: this
                .report
                .base
                .clone()
                .or_else(|| state.base.clone())
                .unwrap_or_default(),
            branch: this.report.branch.clone(),
            prompt: this
                .prompt
                .clone()
                .unwrap_or_else(|| plan_task.prompt.clone()),
            agent: Some(AgentSpec {
                command: plan_task.agent.command.clone(),
                env: plan_task.agent.env.clone().into_iter().collect(),
            }),
            timeout_ms: plan_task.timeout.as_millis() as u64,
            checks: plan_task
                .checks
                .iter()
                .chain(&this.extra_checks)
                .map(check_spec)
                .collect(),
            log_dir: self.ctx.log_dir.to_string_lossy().into_owned(),
            log_cap_bytes: self.config.log_cap,
        }
    }

    fn send(&mut self, worker: &str, kind: Down) {
        let failed = self
            .workers
            .get(worker)
            .is_some_and(|w| w.link.tx.try_send(Ok(down(kind))).is_err());
        if failed {
            self.drop_worker(worker, "it is not reading its stream");
        }
    }

    fn note(&self, note: Note) {
        let _ = self.notes.send(note);
    }

    fn outcome(self) -> Outcome {
        let cancelled = self.cancelling.is_some();
        let result = self.integration.commit();
        let integrated = self
            .integration
            .integrated
            .iter()
            .map(|&t| self.ctx.plan.tasks[t].id.clone())
            .collect();
        let tasks = self
            .tasks
            .into_iter()
            .zip(self.ctx.plan.tasks.iter())
            .map(|(state, task)| {
                let status = match state.phase {
                    TaskPhase::Done(status) => status,
                    _ => TaskStatus::Cancelled,
                };
                let attempts = if state.base.is_some() {
                    state.attempts.into_iter().map(|a| a.report).collect()
                } else {
                    Vec::new()
                };
                TaskReport {
                    id: task.id.clone(),
                    status,
                    deps: task.deps.clone(),
                    base: state.base,
                    branch: state
                        .winner
                        .map(|_| winner_branch(&self.ctx.run_id, &task.id)),
                    winner: state.winner,
                    reason: state.reason,
                    attempts,
                }
            })
            .collect();
        Outcome {
            tasks,
            conflicts: self.conflicts,
            predicted: self.predicted,
            result,
            integrated,
            steps: self.integration.steps,
            timeline: self.timeline,
            workers: self.joined,
            cancelled,
            error: self.error,
        }
    }
}

/// The branch of a task's winner. Git cannot hold `braid/<run>/<task>` beside the attempt
/// branches `braid/<run>/<task>/<n>` (a ref cannot be a file and a folder at once), so the
/// winner sits beside its attempts.
pub fn winner_branch(run: &str, task: &str) -> String {
    format!("braid/{run}/{task}/winner")
}

fn down(kind: Down) -> CoordinatorMessage {
    CoordinatorMessage { kind: Some(kind) }
}

/// A check as the protocol carries it.
pub fn check_spec(check: &Check) -> CheckSpec {
    CheckSpec {
        name: check.name.clone(),
        run: check.run.clone(),
        timeout_ms: check.timeout.as_millis() as u64,
    }
}

/// A check result as the report records it.
pub fn check_report(check: &pb::CheckResult) -> CheckReport {
    CheckReport {
        name: check.name.clone(),
        status: match check.status() {
            pb::CheckStatus::Passed => CheckStatus::Passed,
            pb::CheckStatus::TimedOut => CheckStatus::TimedOut,
            pb::CheckStatus::Skipped | pb::CheckStatus::Unspecified => CheckStatus::Skipped,
            pb::CheckStatus::Failed => CheckStatus::Failed,
        },
        exit_code: check.exit_code,
        duration_ms: check.duration_ms,
        log: (!check.log_path.is_empty()).then(|| check.log_path.clone()),
    }
}
