//! The scheduler: one event loop that owns every piece of run state.
//!
//! Design note: `docs/design/scheduler.md`. In short: worker streams, base merges, timers
//! and interrupts all become [`Event`]s on one channel; the loop handles one event at a time
//! and then fills free worker slots from the queue. No locks, no shared state: workers are
//! reached only through their stream's sender, and every assignment carries a lease that the
//! loop checks when the result comes back.
//!
//! - [`leases`]: assigning attempts into free slots and taking results, lost workers and
//!   interrupts back.
//! - [`judging`]: checks judged against the task's base, feedback retries, and the end of
//!   a task's other attempts under `first-pass`.
//! - [`integration`]: trial merges while tasks run, then the integration of the winners
//!   with each task's conflict strategy, inside the same loop.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_shared::proto::coordinator_message::Kind as Down;
use braid_shared::proto::worker_message::Kind as Up;
use braid_shared::proto::{self as pb, CheckSpec, CoordinatorMessage, Shutdown};
use braid_shared::task;
use tokio::sync::mpsc;
use tonic::Status;

mod integration;
mod judging;
mod leases;
pub(crate) mod logs;
mod queue;
mod refs;
mod reviews;
pub mod share;
mod spending;
mod units;
mod verification;

use crate::dag::Dag;
use crate::journal::{Journal, Journaled, Resume};
use crate::merge::{self, BranchMove, DepWinner, MergeError, Merged, Merger};
use crate::plan::{Check, Plan, Select};
use crate::progress::Note;
use crate::report::{
    AttemptKind, AttemptReport, AttemptStatus, CheckReport, CheckStatus, ConflictReport,
    Prediction, Resolution, StepReport, TaskReport, TaskStatus, TimelineEntry, WorkerReport, word,
};
use crate::select;
pub use leases::{agent_spec, retry_delay, sandbox_spec};
use logs::LogWriter;
use queue::Queue;
use refs::RefWriter;

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
    /// The worker's slots as every run of a server shares them; `None`: this run's alone.
    pub pool: Option<Arc<share::SlotPool>>,
    /// Attempts the worker still runs from before (its stream broke, or the coordinator
    /// restarted), by lease and spec key.
    pub running: Vec<pb::Running>,
    /// Its labels, for tasks that `requires` some.
    pub labels: BTreeMap<String, String>,
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
        kind: Box<Up>,
        /// When it arrived: a worker is alive as of then, however long the loop took to
        /// get to the message.
        at: Instant,
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
    /// The objects of an attempt's result were checked and taken into the repository, or
    /// refused.
    Imported {
        /// The task.
        task: usize,
        /// The attempt's index in the task.
        attempt: usize,
        /// The result, as the worker sent it.
        result: Box<pb::AttemptResult>,
        /// Problems of the commit that fail the attempt, or why its objects were refused.
        outcome: Result<Vec<String>, String>,
    },
    /// A lost attempt's backoff is over.
    Requeue {
        /// The task.
        task: usize,
        /// The attempt's index in the task.
        attempt: usize,
    },
    /// The person pressed Ctrl-C, or braid got SIGTERM or SIGHUP (twice: stop at once).
    Interrupt,
    /// A unit of slow work the loop handed off is done (see [`units`]).
    Done(Box<units::Done>),
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
    /// How long an attempt lost the first time waits before it runs again (then twice as
    /// long each time, jittered).
    pub retry_backoff: Duration,
    /// Tell every worker to shut down when the run is over: its workers are the run's
    /// alone (embedded mode), not a server's.
    pub release_workers: bool,
    /// How long the leases of a worker whose stream broke wait for it to attach again
    /// (a server's workers do; a run's own local workers do not).
    pub reattach_grace: Duration,
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
            retry_backoff: Duration::from_millis(100),
            release_workers: true,
            reattach_grace: Duration::ZERO,
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
    /// The id workers fetch the repository's objects by (see [`crate::state::repo_id`]).
    pub repo_id: String,
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
    /// Why braid stopped starting attempts early (a provider's terminal refusal, the run's
    /// budget), each a sentence.
    pub stopped: Vec<String>,
    /// What the run found that makes the plan a poor judge of its attempts (a check with
    /// `baseline: false` that passes on the base), each a sentence.
    pub warnings: Vec<String>,
    /// The `merge.verify` checks on the result, as a worker ran them.
    pub verify: Vec<CheckReport>,
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
    /// Lost; waits out its backoff before it is queued again.
    Retrying,
    Leased,
    /// The result is in; its objects are being checked and taken into the repository.
    Importing,
    /// The result is in; a check failed and the baseline that tells whether the base fails
    /// it too is still running.
    Judging,
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
    /// What the winner touched, for trial merges; `None` until asked for.
    footprint: Option<Arc<merge::footprint::Footprint>>,
    /// `select: judge`: the tournament of the current round, once two attempts passed.
    tournament: Option<crate::judge::Tournament>,
    /// The report of the latest tournament that ended.
    judge_report: Option<crate::judge::JudgeReport>,
    /// Units (trial merges, a new base's merge) its dependents wait for.
    holds: u32,
    /// `select: vote`: the keys of its passing changes, read when it had this many
    /// attempts; and the unit that reads them.
    votes: Option<(usize, HashMap<u32, u64>)>,
    voting: Option<u64>,
    /// `select: judge`: the diffs its judge is shown, read when it had this many
    /// attempts; and the unit that reads them.
    diffs: Option<(usize, HashMap<u32, Arc<String>>)>,
    diffing: Option<u64>,
    /// The earlier run whose winner it carries over (`--rerun-failed`).
    carried: Option<String>,
}

#[derive(Debug)]
struct AttemptState {
    report: AttemptReport,
    phase: AttemptPhase,
    /// The prompt, when not the task's own (a resolution attempt).
    prompt: Option<String>,
    /// Checks run after the task's own (a resolution also runs the verify checks).
    extra_checks: Vec<Check>,
    /// A baseline job's checks, instead of the task's.
    checks_only: Vec<Check>,
    /// The commit the attempt is measured against, when not the one it starts from (a
    /// feedback retry starts from the attempt it continues).
    diff_base: Option<String>,
    /// What a feedback retry is told.
    feedback: Option<String>,
    /// The last lines of each failing check's output.
    tails: Vec<(String, String)>,
    /// Why braid cancelled it, when it did.
    cancel_reason: Option<String>,
    /// A verdict job: the attempts shown as candidates A and B.
    review: Option<(u32, u32)>,
    /// A verdict job's answer: `A`, `B` or `tie`, and its reason; or why there is none.
    verdict: Option<Result<(String, String), String>>,
    /// The key of the spec it was last assigned with (see [`crate::journal::spec_key`]),
    /// when the run keeps a journal.
    key: Option<String>,
    /// The answer its worker waits for (worker, lease), sent once the result is journaled.
    ack: Option<(String, String)>,
}

impl AttemptState {
    fn new(report: AttemptReport, phase: AttemptPhase) -> Self {
        AttemptState {
            report,
            phase,
            prompt: None,
            extra_checks: Vec::new(),
            checks_only: Vec::new(),
            diff_base: None,
            feedback: None,
            tails: Vec::new(),
            cancel_reason: None,
            review: None,
            verdict: None,
            key: None,
            ack: None,
        }
    }
}

#[derive(Debug)]
struct WorkerState {
    link: WorkerLink,
    leases: HashSet<String>,
    last_seen: Instant,
    /// It drains: it gets nothing new.
    draining: bool,
}

impl WorkerState {
    /// Slots this run may give the worker now: its own free ones, and no more than the
    /// worker has free across a server's runs.
    fn free(&self) -> usize {
        if self.draining {
            return 0;
        }
        let own = (self.link.slots as usize).saturating_sub(self.leases.len());
        self.link
            .pool
            .as_ref()
            .map_or(own, |pool| own.min(pool.free()))
    }
}

#[derive(Debug, Clone)]
struct Lease {
    task: usize,
    attempt: usize,
    worker: String,
    /// The block of ports the attempt has while it runs (`BRAID_PORT_BASE`).
    ports: u32,
    /// What the names of the attempt's log files start with (`parser.2`).
    stem: String,
}

/// The first port of the blocks handed to running attempts, and each block's size.
pub const PORT_START: u32 = 20_000;
pub const PORT_BLOCK: u32 = 20;
/// How many blocks there are: up to port 60,000.
const PORT_BLOCKS: u32 = (60_000 - PORT_START) / PORT_BLOCK;

/// The event loop's state.
#[derive(Debug)]
pub struct Scheduler {
    ctx: RunContext,
    config: SchedulerConfig,
    dag: Dag,
    /// Each task's place in the DAG's order.
    positions: Vec<usize>,
    merger: Merger,
    /// Writes the branches of attempts and winners off the loop.
    refs: RefWriter,
    /// Writes the log files workers send off the loop.
    logs: LogWriter,
    /// Answers to results, sent once the loop's turn is in the journal.
    acks: Vec<(String, String)>,
    /// The run's journal, when it keeps one.
    journal: Option<Journal>,
    /// A resumed run's results from its journal, by spec key, not given back yet.
    memo: HashMap<String, Journaled>,
    /// While a journaled result is given back: the time it first came, as the loop's clock.
    clock: Option<u64>,
    /// The run's epoch (1, and one more each time it is resumed): lease ids carry it.
    epoch: u32,
    /// Branches of this run a resumed run found: the first move of each goes from there.
    adopted: HashMap<String, String>,
    /// A server's share of slots between its runs; `None`: the workers are this run's.
    fairness: Option<Arc<share::Fairness>>,
    /// Attempts workers still run under leases of an earlier epoch, by spec key: the
    /// worker and the lease. They are taken back rather than run again.
    adoptable: HashMap<String, (String, String)>,
    /// A resumed run assigns nothing before then, so workers that were running its
    /// attempts have time to attach again and have them taken back.
    hold_until: Option<Instant>,
    tasks: Vec<TaskState>,
    queue: Queue,
    workers: BTreeMap<String, WorkerState>,
    /// Workers dropped for silence whose stream is still open: a result they send late is
    /// refused, and one that comes back with nothing running is taken back.
    silent: HashMap<String, WorkerLink>,
    /// Workers whose stream broke while they held leases, until when they may attach
    /// again and keep them.
    detached: HashMap<String, (WorkerState, Instant)>,
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
    /// What each check gave on each base.
    baselines: HashMap<(String, String), judging::BaselineEntry>,
    /// Baseline jobs that have not ended.
    baseline_jobs: Vec<(usize, usize)>,
    /// Tasks with attempts in [`AttemptPhase::Judging`].
    judging: BTreeSet<usize>,
    /// Results whose objects are being imported.
    importing: usize,
    /// Units of slow work running off the loop, by id.
    units: HashMap<u64, tokio::task::AbortHandle>,
    next_unit: u64,
    /// What the run spent, and what stops attempts from starting.
    spending: spending::Spending,
    /// Port blocks given back by attempts that ended, reused lowest first.
    free_ports: BTreeSet<u32>,
    /// Port blocks handed out so far.
    next_ports: u32,
    /// What the run found that makes the plan a poor judge of its attempts.
    warnings: Vec<String>,
    /// The verification job of the result, once queued: its task and index.
    verification: Option<(usize, usize)>,
    /// What it found.
    verified: Vec<CheckReport>,
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
                footprint: None,
                tournament: None,
                judge_report: None,
                holds: 0,
                votes: None,
                voting: None,
                diffs: None,
                diffing: None,
                carried: None,
            })
            .collect();
        let dag = Dag::new(&plan.tasks);
        let queue = Queue::new(dag.heights());
        let refs = RefWriter::start(Merger::open(&plan.repo)?);
        Ok(Scheduler {
            refs,
            logs: LogWriter::start(config.log_cap),
            acks: Vec::new(),
            journal: None,
            memo: HashMap::new(),
            clock: None,
            epoch: 1,
            adopted: HashMap::new(),
            fairness: None,
            adoptable: HashMap::new(),
            hold_until: None,
            positions: dag.positions(),
            dag,
            merger,
            ctx,
            config,
            tasks,
            queue,
            workers: BTreeMap::new(),
            silent: HashMap::new(),
            detached: HashMap::new(),
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
            baselines: HashMap::new(),
            baseline_jobs: Vec::new(),
            judging: BTreeSet::new(),
            importing: 0,
            units: HashMap::new(),
            next_unit: 1,
            spending: Default::default(),
            free_ports: BTreeSet::new(),
            next_ports: 0,
            warnings: Vec::new(),
            verification: None,
            verified: Vec::new(),
        })
    }

    /// What this turn decided goes into the journal before the loop waits again, and
    /// then the workers hear that their results are taken.
    fn commit_turn(&mut self) {
        let acks = std::mem::take(&mut self.acks);
        let Some(journal) = self.journal.as_mut() else {
            for ack in acks {
                self.send_ack(&ack);
            }
            return;
        };
        let after: Vec<crate::journal::AfterCommit> = acks
            .into_iter()
            .filter_map(|(worker, lease_id)| {
                let tx = self.workers.get(&worker)?.link.tx.clone();
                let answer = down(Down::ResultAck(pb::ResultAck {
                    lease_id,
                    accepted: true,
                    reason: String::new(),
                }));
                Some(Box::new(move || {
                    let _ = tx.try_send(Ok(answer));
                }) as crate::journal::AfterCommit)
            })
            .collect();
        journal.commit(after);
    }

    fn now_ms(&self) -> u64 {
        self.clock
            .unwrap_or_else(|| self.ctx.started.elapsed().as_millis() as u64)
    }

    /// Assigns nothing for `grace`, so workers that ran attempts of this resumed run can
    /// attach again and have them taken back.
    pub fn with_adoption_grace(mut self, grace: Duration) -> Self {
        self.hold_until = Some(Instant::now() + grace);
        self
    }

    /// Shares the workers with a server's other runs.
    pub fn with_fairness(mut self, fairness: Arc<share::Fairness>) -> Self {
        self.fairness = Some(fairness);
        self
    }

    /// Keeps a journal of the run's decisions in `journal`; a resumed run gives back the
    /// results `resume` holds rather than running their attempts again.
    pub fn with_journal(mut self, journal: Journal, resume: Option<Resume>) -> Self {
        self.epoch = journal.epoch();
        if let Some(resume) = resume {
            self.joined = resume.workers;
            self.memo = resume
                .results
                .into_iter()
                .map(|j| (j.key.clone(), j))
                .collect();
            let prefix = format!("refs/heads/braid/{}/", self.ctx.run_id);
            match self.merger.refs_under(&prefix) {
                Ok(found) => self.adopted = found.into_iter().collect(),
                Err(err) => tracing::warn!(%err, "could not list the run's branches"),
            }
        }
        self.journal = Some(journal);
        if self.epoch > 1 {
            let detail = format!(
                "resumed from the journal (epoch {}): {} result(s) to give back",
                self.epoch,
                self.memo.len()
            );
            self.mark("resumed", None, detail);
        }
        self
    }

    /// Writes a decision into the journal (not while a journaled result is given back: it
    /// is in there already).
    fn journal_event(&mut self, kind: &str, task: Option<usize>, detail: &str) {
        if self.clock.is_some() {
            return;
        }
        let at = self.now_ms();
        let id = task.map(|t| self.ctx.plan.tasks[t].id.clone());
        if let Some(journal) = self.journal.as_mut() {
            journal.event(at, kind, id.as_deref(), detail);
        }
    }

    /// Writes a result the run accepts into the journal, before the loop acts on it. Not
    /// the attempts an interrupt cancelled: a resumed run runs them.
    fn journal_result(
        &mut self,
        task: usize,
        attempt: usize,
        result: &pb::AttemptResult,
        outcome: &Result<Vec<String>, String>,
    ) {
        let interrupted =
            self.cancelling.is_some() && result.status() == pb::AttemptStatus::Cancelled;
        if self.clock.is_some() || interrupted || self.journal.is_none() {
            return;
        }
        let finished_ms = self.now_ms();
        let state = &self.tasks[task].attempts[attempt];
        let Some(key) = state.key.clone() else {
            return;
        };
        let entry = Journaled {
            seq: 0,
            key,
            task: self.ctx.plan.tasks[task].id.clone(),
            n: state.report.n,
            worker: state.report.worker.clone().unwrap_or_default(),
            started_ms: state.report.started_ms.unwrap_or(0),
            finished_ms,
            outcome: outcome.clone(),
            result: result.clone(),
        };
        if let Some(journal) = self.journal.as_mut() {
            journal.result(entry);
        }
    }

    /// A branch move of this run; in a resumed run, the first move of a branch it found
    /// goes from where that branch is.
    fn branch_move(&mut self, refname: String, commit: String, old: Option<String>) -> BranchMove {
        let old = old.or_else(|| self.adopted.remove(&refname));
        BranchMove {
            refname,
            commit,
            old,
        }
    }

    /// Gives back the journaled results of queued attempts whose specs they answer, in
    /// the order they first came: the attempts do not run again.
    fn give_back_journaled(&mut self) {
        let mut found: Vec<(i64, usize, usize, String)> = Vec::new();
        for (t, a) in self.queue.items() {
            let key = crate::journal::spec_key(&self.attempt_spec(t, a));
            if let Some(entry) = self.memo.get(&key) {
                found.push((entry.seq, t, a, key));
            }
        }
        if found.is_empty() {
            return;
        }
        found.sort();
        self.queue
            .retain(|item| !found.iter().any(|(_, t, a, _)| (*t, *a) == *item));
        for (_, t, a, key) in found {
            let Some(entry) = self.memo.remove(&key) else {
                continue;
            };
            let state = &mut self.tasks[t].attempts[a];
            state.phase = AttemptPhase::Leased;
            state.key = Some(key);
            state.report.worker = Some(entry.worker.clone());
            state.report.started_ms = Some(entry.started_ms);
            let kind = state.report.kind;
            self.clock = Some(entry.finished_ms);
            let result = entry.result;
            if !kind.runs_no_agent() {
                self.spent(t, a, &result);
            }
            match kind {
                AttemptKind::Baseline => self.baseline_done(t, a, &result.checks),
                AttemptKind::Verify => self.verification_done(t, a, &result),
                AttemptKind::Review => self.review_done(t, a, result),
                AttemptKind::Task | AttemptKind::Resolution => {
                    self.record_result(t, a, result, entry.outcome)
                }
            }
            self.clock = None;
        }
    }

    /// Runs the loop until every task has ended (or the run is cancelled), then tells every
    /// worker to shut down.
    pub async fn run(mut self, mut events: mpsc::Receiver<Event>) -> Outcome {
        self.carry_over();
        for t in 0..self.tasks.len() {
            self.try_start(t);
        }
        self.settle();
        let mut tick = tokio::time::interval(self.config.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.finished() {
            tokio::select! {
                // Every event that waits is handled before the silence of workers is judged:
                // their heartbeats may be among them.
                biased;
                event = events.recv() => match event {
                    Some(event) => self.handle(event).await,
                    None => break,
                },
                _ = tick.tick() => self.on_tick().await,
            }
            self.settle();
            self.dispatch();
            self.commit_turn();
        }
        self.commit_turn();
        for worker in self
            .workers
            .values()
            .filter(|_| self.config.release_workers)
        {
            let _ = worker.link.tx.try_send(Ok(down(Down::Shutdown(Shutdown {
                reason: "the run is over".into(),
            }))));
        }
        let failures = self.refs.finish().await;
        self.logs.finish().await;
        if let Some(journal) = self.journal.as_mut() {
            journal.finish().await;
        }
        if !failures.is_empty() && self.error.is_none() {
            self.error = Some(failures.join("; "));
        }
        self.outcome()
    }

    /// Ends the tasks whose attempts all ended since the last event, and moves the
    /// integration on once every task has ended.
    fn settle(&mut self) {
        self.judge_all();
        while let Some(task) = self.dirty.pop() {
            self.finish_task_if_done(task);
        }
        self.drop_unneeded_baselines();
        self.advance_integration();
    }

    fn finished(&self) -> bool {
        if self.error.is_some() {
            return true;
        }
        let all_done = self
            .tasks
            .iter()
            .all(|t| matches!(t.phase, TaskPhase::Done(_)));
        let over = all_done && self.integration.finished && self.verified();
        (over || self.cancelling.is_some())
            && self.leases.is_empty()
            && self.importing == 0
            && self.units.is_empty()
    }

    async fn handle(&mut self, event: Event) {
        match event {
            Event::WorkerJoined(link) => {
                self.note(Note::WorkerJoined {
                    id: link.id.clone(),
                    name: link.name.clone(),
                    slots: link.slots,
                });
                let joined = WorkerReport {
                    id: link.id.clone(),
                    name: link.name.clone(),
                    slots: link.slots,
                };
                if let Some(journal) = self.journal.as_mut() {
                    journal.worker(&joined);
                }
                self.joined.push(joined);
                // Leases it held when its stream broke come back to it as they were.
                let mut reattached = HashSet::new();
                for running in &link.running {
                    let held = self
                        .leases
                        .get(&running.lease_id)
                        .is_some_and(|l| self.detached.contains_key(&l.worker));
                    if held && (link.pool.as_ref().is_none_or(|pool| pool.take())) {
                        let lease = self.leases.get_mut(&running.lease_id).expect("held");
                        if let Some((old, _)) = self.detached.get_mut(&lease.worker) {
                            old.leases.remove(&running.lease_id);
                        }
                        lease.worker = link.id.clone();
                        reattached.insert(running.lease_id.clone());
                    }
                }
                if !reattached.is_empty() {
                    self.note(Note::Info(format!(
                        "worker {} ({}) attached again with {} attempt(s) it still runs",
                        link.id,
                        link.name,
                        reattached.len()
                    )));
                }
                self.detached.retain(|_, (old, _)| !old.leases.is_empty());
                for running in &link.running {
                    let ours = crate::service::run_of_lease(&running.lease_id)
                        == Some(self.ctx.run_id.as_str());
                    if ours
                        && !running.spec_key.is_empty()
                        && !reattached.contains(&running.lease_id)
                    {
                        self.adoptable.insert(
                            running.spec_key.clone(),
                            (link.id.clone(), running.lease_id.clone()),
                        );
                    }
                }
                self.no_worker_since = None;
                self.workers.insert(
                    link.id.clone(),
                    WorkerState {
                        link,
                        leases: reattached,
                        last_seen: Instant::now(),
                        draining: false,
                    },
                );
            }
            Event::FromWorker { worker, kind, at } => {
                self.on_worker_message(worker, *kind, at).await;
            }
            Event::WorkerLeft { worker, reason } => {
                self.silent.remove(&worker);
                let grace = self.config.reattach_grace;
                let holds = self
                    .workers
                    .get(&worker)
                    .is_some_and(|w| !w.leases.is_empty());
                match self.workers.remove(&worker) {
                    // A broken stream need not be a lost worker: its attempts wait a
                    // little for it to attach again with them.
                    Some(state) if holds && !grace.is_zero() => {
                        self.note(Note::Info(format!(
                            "worker {worker}: {reason}; its {} attempt(s) wait {grace:?} for it to attach again",
                            state.leases.len()
                        )));
                        self.detached
                            .insert(worker, (state, Instant::now() + grace));
                    }
                    Some(state) => {
                        self.workers.insert(worker.clone(), state);
                        self.drop_worker(&worker, &reason);
                    }
                    None => {}
                }
            }
            Event::BaseReady { task, outcome } => self.base_ready(task, outcome),
            Event::Imported {
                task,
                attempt,
                result,
                outcome,
            } => {
                self.importing -= 1;
                if !self.dag.dependents(task).is_empty() {
                    self.queue.unhold(task);
                }
                self.journal_result(task, attempt, &result, &outcome);
                if let Some(ack) = self.tasks[task].attempts[attempt].ack.take() {
                    self.acks.push(ack);
                }
                self.record_result(task, attempt, *result, outcome);
            }
            Event::Requeue { task, attempt } => self.requeue(task, attempt),
            Event::Interrupt => self.interrupt(),
            Event::Done(done) => self.on_done(*done),
        }
    }

    /// Ends the tasks an earlier run won (`braid run --rerun-failed`) with that run's
    /// winner: their attempts are that run's, run again by nobody, and their winner branch
    /// in this run names the same commit.
    fn carry_over(&mut self) {
        let plan = Arc::clone(&self.ctx.plan);
        let (Some(run), false) = (&plan.rerun_of, plan.carried.is_empty()) else {
            return;
        };
        for (task, t) in plan.tasks.iter().enumerate() {
            let Some(old) = plan.carried.get(&t.id) else {
                continue;
            };
            let Some((n, commit)) = old.winner.and_then(|n| {
                let attempt = old.attempts.iter().find(|a| a.n == n)?;
                Some((n, attempt.commit.clone()?))
            }) else {
                continue;
            };
            let branch = winner_branch(&self.ctx.run_id, &t.id);
            let branch_move = self.branch_move(format!("refs/heads/{branch}"), commit, None);
            if let Err(err) = self.refs.send(&self.merger, branch_move) {
                self.error = Some(err);
                return;
            }
            let state = &mut self.tasks[task];
            state.attempts = old
                .attempts
                .iter()
                .map(|a| AttemptState::new(a.clone(), AttemptPhase::Done))
                .collect();
            state.round = old.attempts.iter().map(|a| a.round).max().unwrap_or(0);
            state.base = old.base.clone();
            state.winner = Some(n);
            state.phase = TaskPhase::Done(TaskStatus::Succeeded);
            state.reason = old.reason.clone();
            state.carried = Some(run.clone());
            let detail = format!("winner #{n} of run {run}");
            self.mark("carried", Some(task), detail.clone());
            self.note(Note::TaskDone {
                task: t.id.clone(),
                status: "succeeded".into(),
                detail: format!("carried over: {detail}"),
            });
        }
    }

    /// Starts `task` if it waits and all its deps have winners.
    fn try_start(&mut self, task: usize) {
        if self.tasks[task].phase != TaskPhase::Waiting || self.cancelling.is_some() {
            return;
        }
        let deps = self.dag.deps(task);
        if !deps.iter().all(|&d| {
            self.tasks[d].phase == TaskPhase::Done(TaskStatus::Succeeded)
                && self.tasks[d].holds == 0
        }) {
            return;
        }
        if deps.is_empty() {
            let base = self.ctx.plan.base_commit.clone();
            self.begin(task, base);
            return;
        }
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
        // One dep: its winner is the base, and there is nothing to merge.
        if let [only] = winners.as_slice() {
            let base = only.commit.clone();
            self.begin(task, base);
            return;
        }
        self.tasks[task].phase = TaskPhase::Resolving;
        self.queue.promise(task, self.tasks[task].attempts.len());
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
        self.queue.withdraw(task);
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
        self.ensure_baseline(task, &base);
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
    fn finish_task_if_done(&mut self, task: usize) {
        let state = &self.tasks[task];
        let policy = self.ctx.plan.tasks[task].select;
        let round: Vec<&AttemptState> = state
            .attempts
            .iter()
            .filter(|a| a.report.kind == AttemptKind::Task && a.report.round == state.round)
            .collect();
        let all_done = round.iter().all(|a| a.phase == AttemptPhase::Done);
        let passed = round
            .iter()
            .any(|a| a.phase == AttemptPhase::Done && select::passes(&a.report));
        let early = policy == Select::FirstPass && passed && self.cancelling.is_none();
        if state.phase != TaskPhase::Running || !(all_done || early) {
            return;
        }
        let reports: Vec<AttemptReport> = round
            .iter()
            .filter(|a| a.phase == AttemptPhase::Done)
            .map(|a| a.report.clone())
            .collect();
        if self.cancelling.is_some() && reports.iter().any(|a| a.status == AttemptStatus::Cancelled)
        {
            self.end_task(
                task,
                TaskStatus::Cancelled,
                "the run was interrupted".into(),
            );
            return;
        }
        let changes = if policy == Select::Vote {
            match self.change_keys(task) {
                Some(keys) => keys,
                // Read off the loop; the task is settled again once they are in.
                None => return,
            }
        } else {
            HashMap::new()
        };
        let verdict = if policy == Select::Judge {
            match self.judged(task, &reports) {
                reviews::Judging::Going => return,
                reviews::Judging::Interrupted => {
                    self.end_task(
                        task,
                        TaskStatus::Cancelled,
                        "the run was interrupted while the judge compared its attempts".into(),
                    );
                    return;
                }
                reviews::Judging::Done(verdict) => verdict,
            }
        } else {
            select::pick(policy, &reports, &changes)
        };
        if let (Some(verdict), Select::FirstPass) = (&verdict, policy) {
            self.cancel_rest(task, verdict.winner);
        }
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
        let old = self.winner_commit(task);
        let branch_move = self.branch_move(format!("refs/heads/{branch}"), commit, old);
        if let Err(err) = self.refs.send(&self.merger, branch_move) {
            self.end_task(task, TaskStatus::Failed, err);
            return;
        }
        let state = &mut self.tasks[task];
        state.winner = Some(verdict.winner);
        state.footprint = None;
        state.phase = TaskPhase::Done(TaskStatus::Succeeded);
        state.reason = Some(verdict.reason.clone());
        let detail = format!("winner #{}: {}", verdict.winner, verdict.reason);
        self.mark("winner", Some(task), detail.clone());
        self.note(Note::TaskDone {
            task: id,
            status: "succeeded".into(),
            detail,
        });
        self.trial_merges(task);
        self.start_dependents(task);
    }

    /// Starts the dependents of `task`, once it has ended with a winner.
    fn start_dependents(&mut self, task: usize) {
        if self.tasks[task].phase != TaskPhase::Done(TaskStatus::Succeeded)
            || self.tasks[task].holds > 0
        {
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

    fn note(&self, note: Note) {
        let _ = self.notes.send(note);
    }

    fn outcome(mut self) -> Outcome {
        let cancelled = self.cancelling.is_some();
        // A resumed run's replayed decisions carry the times they were first made.
        self.timeline.sort_by_key(|entry| entry.at_ms);
        if let Some(why) = self.journal.as_ref().and_then(Journal::broken) {
            self.warnings.push(format!(
                "{why}; this run could not be resumed had it stopped"
            ));
        }
        let verify = self.verification_outcome();
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
                let baseline = match &state.base {
                    Some(base) => task
                        .checks
                        .iter()
                        .filter_map(|c| match self.baselines.get(&judging::key(base, c)) {
                            Some(judging::BaselineEntry::Known(report)) => Some(report.clone()),
                            _ => None,
                        })
                        .collect(),
                    None => Vec::new(),
                };
                let attempts: Vec<AttemptReport> = if state.base.is_some() {
                    state
                        .attempts
                        .into_iter()
                        .map(|a| a.report)
                        .filter(|r| {
                            !matches!(
                                r.kind,
                                AttemptKind::Baseline | AttemptKind::Review | AttemptKind::Verify
                            )
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                let judge = state.judge_report;
                TaskReport {
                    own_branch: None,
                    carried_from: state.carried,
                    id: task.id.clone(),
                    status,
                    deps: task.deps.clone(),
                    base: state.base,
                    branch: state
                        .winner
                        .map(|_| winner_branch(&self.ctx.run_id, &task.id)),
                    winner: state.winner,
                    reason: state.reason,
                    select: task.select.name().to_owned(),
                    baseline,
                    usage: crate::report::Usage::sum(
                        attempts
                            .iter()
                            .map(|a: &AttemptReport| &a.usage)
                            .chain(judge.as_ref().map(|j| &j.usage)),
                    ),
                    attempts,
                    judge,
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
            stopped: self.spending.stopped,
            warnings: self.warnings,
            verify,
        }
    }
}

/// The agent a job of `task` runs: the judge's for a verdict job, else attempt n's.
pub(super) fn agent_of<'a>(
    task: &'a crate::plan::Task,
    report: &AttemptReport,
) -> &'a crate::plan::Agent {
    match (&task.judge, report.kind) {
        (Some(judge), AttemptKind::Review) => &judge.agent,
        _ => task.agent_for(report.n),
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
        cwd: check.cwd.clone(),
        name: check.name.clone(),
        run: check.run.clone(),
        timeout_ms: check.timeout.as_millis() as u64,
        paths: check.paths.clone(),
        per_package: check.per_package,
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
        note: (!check.note.is_empty()).then(|| check.note.clone()),
        package: (!check.package.is_empty()).then(|| check.package.clone()),
        package_dir: (!check.package.is_empty()).then(|| check.package_dir.clone()),
        affected: (!check.affected.is_empty()).then(|| check.affected.clone()),
    }
}
