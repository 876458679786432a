//! Leases: attempts go to workers into their free slots, under a lease each; results,
//! lost workers, silent workers and interrupts come back through here. A result counts
//! only under the lease it was assigned with.

use std::time::Instant;

use braid_shared::proto::coordinator_message::Kind as Down;
use braid_shared::proto::worker_message::Kind as Up;
use braid_shared::proto::{
    self as pb, AgentSpec, Assign, AttemptSpec, Cancel, CheckSpec, ResultAck, SandboxSpec,
    ScoreSpec, progress,
};

use super::{
    AttemptPhase, Event, Lease, Scheduler, TaskPhase, check_report, check_spec, down, logs,
};
use crate::progress::Note;
use crate::report::{AttemptKind, AttemptStatus, DiffReport, TaskStatus};
use braid_shared::task;

/// How long an attempt lost for the `lost`-th time waits before it is queued again:
/// `base` doubled each time, capped at 32 times `base`, then jittered to 50%-150%.
pub fn retry_delay(base: std::time::Duration, lost: u32) -> std::time::Duration {
    let doubled = base * 2u32.pow(lost.saturating_sub(1).min(5));
    doubled.mul_f64(0.5 + fastrand::f64())
}

/// A plan's sandbox, as the wire carries it, for the processes of `agent` (`None`: commands
/// only, such as `merge.verify`). Unset, the network is the model's alone for presets and
/// the built-in agent, and the machine's for commands.
pub fn sandbox_spec(
    sandbox: &crate::plan::Sandbox,
    agent: Option<&crate::plan::Agent>,
) -> SandboxSpec {
    use crate::plan::Network;
    let preset = agent.is_some_and(|a| !a.preset.is_empty());
    let (network, model_only) = match sandbox.network {
        Network::Full => (true, false),
        Network::None => (false, false),
        Network::Model => (false, preset),
        Network::Default => (!preset, preset),
    };
    SandboxSpec {
        off: sandbox.off,
        network,
        model_only,
        writable: sandbox
            .writable
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
    }
}

impl Scheduler {
    pub(super) async fn on_worker_message(&mut self, worker: String, kind: Up, at: Instant) {
        if !self.workers.contains_key(&worker) {
            self.on_silent_message(&worker, kind, at);
            return;
        }
        let Some(state) = self.workers.get_mut(&worker) else {
            return;
        };
        state.last_seen = state.last_seen.max(at);
        match kind {
            // The service puts a lease's pack into its result.
            Up::Register(_) | Up::Heartbeat(_) | Up::AssignAck(_) | Up::Pack(_) => {}
            Up::Draining(_) => {
                state.draining = true;
                self.note(Note::Info(format!(
                    "worker {worker} is draining: it finishes what it runs and takes nothing new"
                )));
            }
            Up::Log(chunk) => {
                let Some(lease) = self
                    .leases
                    .get(&chunk.lease_id)
                    .filter(|l| l.worker == worker)
                else {
                    return;
                };
                if logs::name_ok(&chunk.name, &lease.stem) {
                    self.logs
                        .send(&self.ctx.log_dir, &chunk.name, chunk.offset, chunk.data);
                } else {
                    tracing::warn!(%worker, name = %chunk.name, "refused a log file name");
                }
            }
            Up::Progress(p) => {
                let Some(lease) = self.leases.get(&p.lease_id) else {
                    return;
                };
                if let Some(progress::Kind::Logs(batch)) = p.kind {
                    let job = &self.tasks[lease.task].attempts[lease.attempt].report;
                    let id = &self.ctx.plan.tasks[lease.task].id;
                    let task = match job.kind {
                        AttemptKind::Review => format!("{id}.judge"),
                        AttemptKind::Verify => super::verification::JOB_ID.to_owned(),
                        _ => id.clone(),
                    };
                    let n = job.n;
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

    pub(super) async fn on_result(&mut self, worker: &str, mut result: pb::AttemptResult) {
        let current = self
            .leases
            .get(&result.lease_id)
            .is_some_and(|l| l.worker == worker);
        // Taken out before the answer goes: sending it may find the worker gone, and
        // dropping the worker then must not see this lease as lost.
        let lease = current.then(|| self.release(&result.lease_id)).flatten();
        let Some(lease) = lease else {
            self.send(
                worker,
                Down::ResultAck(ResultAck {
                    lease_id: result.lease_id.clone(),
                    accepted: false,
                    reason: "stale lease: the attempt was reassigned or has ended".into(),
                }),
            );
            tracing::warn!(lease = %result.lease_id, %worker, "refused a result under a stale lease");
            return;
        };
        // Taken: the worker keeps its copy until the result is in the journal (the answer
        // goes when the loop's turn is committed; a result with a commit, once its objects
        // are in and it is journaled).
        let ack = (worker.to_owned(), result.lease_id.clone());
        if self.journal.is_none() {
            self.send_ack(&ack);
        } else if result.commit.is_empty()
            || result.infrastructure
            || result.provider_fault() == pb::ProviderFault::Transient
        {
            self.acks.push(ack);
        } else {
            self.tasks[lease.task].attempts[lease.attempt].ack = Some(ack);
        }
        // The worker named its log files; the report names them in the run's log folder.
        let dir = &self.ctx.log_dir;
        let local = |name: &str| logs::path_of(dir, name, &lease.stem).unwrap_or_default();
        result.log_path = local(&result.log_path);
        result.events_path = local(&result.events_path);
        for check in &mut result.checks {
            check.log_path = local(&check.log_path);
        }
        if !self.tasks[lease.task].attempts[lease.attempt]
            .report
            .kind
            .runs_no_agent()
        {
            self.spent(lease.task, lease.attempt, &result);
        }
        // A provider that refused for now (a rate limit, a server error) costs no attempt:
        // the attempt runs again after a backoff, like one whose worker was lost.
        let transient = result.provider_fault() == pb::ProviderFault::Transient
            && result.status() != pb::AttemptStatus::Finished;
        if transient {
            // What the refused try spent still counts, in the attempt's report too.
            if let Some(usage) = &result.usage {
                let report = &mut self.tasks[lease.task].attempts[lease.attempt].report;
                report.usage = crate::report::Usage::sum([
                    &report.usage,
                    &braid_shared::usage::Usage::from(usage).into(),
                ]);
            }
            self.refused_for_now(lease.task, lease.attempt, &result.error);
            return;
        }
        if result.infrastructure {
            self.lost(lease.task, lease.attempt, &result.error);
            return;
        }
        let (task, attempt) = (lease.task, lease.attempt);
        let kind = self.tasks[task].attempts[attempt].report.kind;
        if !matches!(kind, AttemptKind::Task | AttemptKind::Resolution) || result.commit.is_empty()
        {
            self.journal_result(task, attempt, &result, &Ok(Vec::new()));
        }
        match kind {
            AttemptKind::Baseline => {
                self.baseline_done(task, attempt, &result.checks);
                return;
            }
            AttemptKind::Verify => {
                self.verification_done(task, attempt, &result);
                return;
            }
            AttemptKind::Review => {
                self.review_done(task, attempt, result);
                return;
            }
            AttemptKind::Task | AttemptKind::Resolution => {}
        }
        if result.commit.is_empty() {
            self.record_result(task, attempt, result, Ok(Vec::new()));
            return;
        }
        // The worker's objects are checked and taken into the repository off the loop;
        // the result is recorded when they are in.
        let pack = std::mem::take(&mut result.pack);
        let base = self.tasks[task].attempts[attempt]
            .report
            .base
            .clone()
            .or_else(|| self.tasks[task].base.clone())
            .unwrap_or_default();
        self.tasks[task].attempts[attempt].phase = AttemptPhase::Importing;
        self.importing += 1;
        if !self.dag.dependents(task).is_empty() {
            self.queue.hold(task);
        }
        let merger = self.merger.clone();
        let events = self.events.clone();
        task::spawn("import", async move {
            let clock = Instant::now();
            let bytes = pack.len();
            let outcome = merger
                .import(pack, &base, &result.commit)
                .await
                .map_err(|e| e.to_string());
            tracing::debug!(
                commit = %result.commit,
                bytes,
                ms = clock.elapsed().as_secs_f64() * 1e3,
                "objects imported"
            );
            let _ = events
                .send(Event::Imported {
                    task,
                    attempt,
                    result: Box::new(result),
                    outcome,
                })
                .await;
        });
    }

    /// Records an attempt's result once its objects are in the repository (`imported`: the
    /// problems found in its commit that fail it, or why its objects were refused).
    pub(super) fn record_result(
        &mut self,
        task: usize,
        attempt: usize,
        result: pb::AttemptResult,
        imported: Result<Vec<String>, String>,
    ) {
        let finished_ms = self.now_ms();
        let state = &mut self.tasks[task].attempts[attempt];
        state.tails = result
            .checks
            .iter()
            .filter(|c| !c.output_tail.is_empty())
            .map(|c| (check_report(c).label(), c.output_tail.clone()))
            .collect();
        let report = &mut state.report;
        report.status = match result.status() {
            // Provisional: the checks are judged against the baseline next.
            pb::AttemptStatus::Finished => AttemptStatus::Succeeded,
            pb::AttemptStatus::TimedOut => AttemptStatus::TimedOut,
            pb::AttemptStatus::Cancelled => AttemptStatus::Cancelled,
            pb::AttemptStatus::Stalled => AttemptStatus::Stalled,
            pb::AttemptStatus::OverBudget => AttemptStatus::OverBudget,
            pb::AttemptStatus::Failed | pb::AttemptStatus::Unspecified => AttemptStatus::Failed,
        };
        // Added to what earlier tries of the attempt spent (a provider refused them for now).
        let this: crate::report::Usage = result
            .usage
            .as_ref()
            .map(|u| braid_shared::usage::Usage::from(u).into())
            .unwrap_or_default();
        report.usage = crate::report::Usage::sum([&report.usage, &this]);
        report.agent = (!result.agent.is_empty()).then(|| result.agent.clone());
        report.model = (!result.model.is_empty()).then(|| result.model.clone());
        report.final_message =
            (!result.final_message.is_empty()).then(|| result.final_message.clone());
        report.events = (!result.events_path.is_empty()).then(|| result.events_path.clone());
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
        report.fetch_ms = result.fetch_ms;
        report.error = (!result.error.is_empty()).then(|| result.error.clone());
        if report.status == AttemptStatus::Cancelled
            && let Some(why) = &state.cancel_reason
        {
            report.error = Some(why.clone());
        }
        report.score = result.score;
        report.score_error = (!result.score_error.is_empty()).then(|| result.score_error.clone());
        report.log = (!result.log_path.is_empty()).then(|| result.log_path.clone());
        report.agent_exit_code = result.agent_exit_code;
        report.finished_ms = Some(finished_ms);
        report.contained = result.contained.clone();
        match imported {
            Ok(problems) if !problems.is_empty() => {
                report.status = AttemptStatus::Failed;
                report.error = Some(problems.join("; "));
                for check in &mut report.checks {
                    check.status = crate::report::CheckStatus::Skipped;
                }
            }
            Ok(_) => {}
            Err(why) => {
                report.status = AttemptStatus::Failed;
                report.error = Some(format!("braid refused the attempt's commit: {why}"));
                report.commit = None;
            }
        }
        let recording = report
            .commit
            .clone()
            .map(|commit| (format!("refs/heads/{}", report.branch), commit));
        state.phase = AttemptPhase::Judging;
        self.judging.insert(task);
        if let Some((refname, commit)) = recording {
            let branch_move = self.branch_move(refname, commit.clone(), None);
            let recorded = if self.merger.has_commit(&commit) {
                self.refs.send(&self.merger, branch_move)
            } else {
                Err(format!("its commit {commit} is not in the repository"))
            };
            if let Err(err) = recorded {
                let report = &mut self.tasks[task].attempts[attempt].report;
                report.status = AttemptStatus::Failed;
                report.error = Some(err);
                report.commit = None;
            }
        }
    }

    /// Tells a worker its result is taken.
    pub(super) fn send_ack(&mut self, (worker, lease_id): &(String, String)) {
        self.send(
            worker,
            Down::ResultAck(ResultAck {
                lease_id: lease_id.clone(),
                accepted: true,
                reason: String::new(),
            }),
        );
    }

    /// A block of ports no running attempt has.
    fn port_block(&mut self) -> u32 {
        if let Some(block) = self.free_ports.pop_first() {
            return block;
        }
        let block = self.next_ports % super::PORT_BLOCKS;
        self.next_ports += 1;
        block
    }

    /// Forgets a lease; returns it.
    pub(super) fn release(&mut self, lease_id: &str) -> Option<Lease> {
        let lease = self.leases.remove(lease_id)?;
        self.free_ports.insert(lease.ports);
        if let Some(worker) = self.workers.get_mut(&lease.worker) {
            worker.leases.remove(lease_id);
            if let Some(pool) = &worker.link.pool {
                pool.give();
            }
        }
        Some(lease)
    }

    /// An attempt whose worker was lost: run it again, or give up on it.
    pub(super) fn lost(&mut self, task: usize, attempt: usize, why: &str) {
        self.run_again(task, attempt, why, self.config.retry_backoff, None);
    }

    /// An attempt the model's provider refused for now (a rate limit the agent could not
    /// wait out, a server error): like a lost one, after a longer backoff.
    fn refused_for_now(&mut self, task: usize, attempt: usize, why: &str) {
        let said = format!(
            "the model's provider refused for now ({})",
            braid_worker::presets::cut(why, 200)
        );
        self.run_again(
            task,
            attempt,
            why,
            self.config.retry_backoff * 20,
            Some(said),
        );
    }

    fn run_again(
        &mut self,
        task: usize,
        attempt: usize,
        why: &str,
        backoff: std::time::Duration,
        told: Option<String>,
    ) {
        let retry = self.cancelling.is_none();
        let state = &mut self.tasks[task].attempts[attempt];
        state.report.lost += 1;
        let n = state.report.n;
        if retry && state.report.lost <= self.config.max_lost_retries {
            // Not at once: what lost it (a worker's disk, a flaky machine) may still be
            // there, and several attempts lost together would all come back together.
            state.phase = AttemptPhase::Retrying;
            let delay = retry_delay(backoff, state.report.lost);
            let events = self.events.clone();
            task::spawn("retry-backoff", async move {
                tokio::time::sleep(delay).await;
                let _ = events.send(Event::Requeue { task, attempt }).await;
            });
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
            retried: retry && self.tasks[task].attempts[attempt].phase == AttemptPhase::Retrying,
            why: told,
        });
        self.dirty.push(task);
    }

    /// An attempt whose backoff is over goes back to the front of the queue.
    pub(super) fn requeue(&mut self, task: usize, attempt: usize) {
        let state = &mut self.tasks[task].attempts[attempt];
        if state.phase == AttemptPhase::Retrying {
            state.phase = AttemptPhase::Queued;
            self.queue.push_front((task, attempt));
        }
    }

    /// Takes back queued attempts that a worker still runs under a lease of an earlier
    /// epoch (it attached again after its stream broke, or after a restart).
    fn adopt_running(&mut self) {
        for (task, attempt) in self.queue.items() {
            let spec = self.attempt_spec(task, attempt);
            let key = crate::journal::spec_key(&spec);
            let Some((worker, lease_id)) = self.adoptable.remove(&key) else {
                continue;
            };
            let Some(state) = self.workers.get_mut(&worker) else {
                continue;
            };
            if let Some(pool) = &state.link.pool
                && !pool.take()
            {
                continue;
            }
            state.leases.insert(lease_id.clone());
            self.queue.retain(|item| *item != (task, attempt));
            let ports = self.port_block();
            let spec_task = spec.task_id;
            let now = self.now_ms();
            let this = &mut self.tasks[task].attempts[attempt];
            this.phase = AttemptPhase::Leased;
            this.key = Some(key);
            this.report.worker = Some(worker.clone());
            this.report.started_ms = Some(now);
            let n = this.report.n;
            self.leases.insert(
                lease_id.clone(),
                Lease {
                    task,
                    attempt,
                    worker: worker.clone(),
                    ports,
                    stem: format!("{spec_task}.{n}"),
                },
            );
            let detail =
                format!("attempt {n}, still running on worker {worker} under lease {lease_id}");
            self.journal_event("adopted", Some(task), &detail);
            self.note(Note::Info(format!(
                "{}#{n} taken back: worker {worker} still runs it",
                self.ctx.plan.tasks[task].id
            )));
        }
        // Outside a resumed run's grace, what matched nothing now never will: its attempt
        // runs elsewhere already, and the worker's result will be refused.
        if self.hold_until.is_none() {
            self.adoptable.clear();
        }
    }

    /// A message from a worker this run dropped for silence: a late result is refused
    /// (its lease was given to another); once it runs nothing, it is taken back.
    fn on_silent_message(&mut self, worker: &str, kind: Up, at: Instant) {
        let Some(link) = self.silent.get(worker) else {
            return;
        };
        match kind {
            Up::Result(result) => {
                tracing::warn!(lease = %result.lease_id, %worker, "refused a late result of a worker that went silent");
                let _ = link.tx.try_send(Ok(down(Down::ResultAck(ResultAck {
                    lease_id: result.lease_id,
                    accepted: false,
                    reason:
                        "stale lease: the worker went silent and the attempt was given to another"
                            .into(),
                }))));
            }
            // Back for good: it speaks now (not a message that waited in line) and runs
            // nothing of before.
            Up::Heartbeat(beat)
                if beat.running.is_empty() && at.elapsed() < self.config.heartbeat_timeout =>
            {
                let Some(link) = self.silent.remove(worker) else {
                    return;
                };
                self.note(Note::Info(format!(
                    "worker {worker} ({}) is back",
                    link.name
                )));
                self.no_worker_since = None;
                self.workers.insert(
                    worker.to_owned(),
                    super::WorkerState {
                        link,
                        leases: std::collections::HashSet::new(),
                        last_seen: Instant::now(),
                        draining: false,
                    },
                );
            }
            _ => {}
        }
    }

    pub(super) fn drop_worker(&mut self, worker: &str, reason: &str) {
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
                if let Some(pool) = &state.link.pool {
                    pool.give();
                }
                self.free_ports.insert(lease.ports);
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

    pub(super) async fn on_tick(&mut self) {
        // Workers that did not attach again in time: their attempts are lost.
        let now = Instant::now();
        let expired: Vec<String> = self
            .detached
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for worker in expired {
            if let Some((state, _)) = self.detached.remove(&worker) {
                self.workers.insert(worker.clone(), state);
                self.drop_worker(&worker, "its stream broke and it did not attach again");
            }
        }
        let silent: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, w)| w.last_seen.elapsed() > self.config.heartbeat_timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for worker in silent {
            let reason = format!("no heartbeat for {:?}", self.config.heartbeat_timeout);
            if let Some(state) = self.workers.get(&worker) {
                let link = super::WorkerLink {
                    id: state.link.id.clone(),
                    name: state.link.name.clone(),
                    slots: state.link.slots,
                    tx: state.link.tx.clone(),
                    pool: state.link.pool.clone(),
                    running: Vec::new(),
                    labels: state.link.labels.clone(),
                };
                self.silent.insert(worker.clone(), link);
            }
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

    pub(super) fn give_up_leases(&mut self, why: &str) {
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

    pub(super) fn interrupt(&mut self) {
        if self.cancelling.is_some() {
            self.give_up_leases("the run was interrupted twice");
            return;
        }
        self.note(Note::Info("interrupted: stopping running attempts".into()));
        self.cancelling = Some(Instant::now() + self.config.cancel_grace);
        // Nothing waits for the merges and reads in flight any more.
        self.abort_units();
        self.queue.withdraw_all();
        while let Some((t, a)) = self.queue.pop_front() {
            let state = &mut self.tasks[t].attempts[a];
            state.phase = AttemptPhase::Done;
            state.report.status = AttemptStatus::Cancelled;
        }
        for (t, task) in self.tasks.iter_mut().enumerate() {
            for state in &mut task.attempts {
                if state.phase == AttemptPhase::Retrying {
                    state.phase = AttemptPhase::Done;
                    state.report.status = AttemptStatus::Cancelled;
                    self.dirty.push(t);
                }
            }
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

    /// Fills free slots from the queue, most free worker first.
    pub(super) fn dispatch(&mut self) {
        if !self.memo.is_empty() {
            self.give_back_journaled();
        }
        if !self.adoptable.is_empty() {
            self.adopt_running();
        }
        if let Some(until) = self.hold_until {
            if Instant::now() < until {
                return;
            }
            self.hold_until = None;
        }
        if let Some(fair) = &self.fairness {
            fair.set_demand(&self.ctx.run_id, self.queue.len() + self.leases.len());
        }
        // Attempts whose labels only busy workers have: they wait, the rest go on.
        let mut waiting = Vec::new();
        while self.cancelling.is_none() && !self.queue.is_empty() {
            if let Some(fair) = &self.fairness
                && self.leases.len() >= fair.cap(&self.ctx.run_id)
            {
                break;
            }
            let free: usize = self.workers.values().map(super::WorkerState::free).sum();
            if !self.queue.may_take(free) {
                break;
            }
            let (task, attempt) = self.queue.pop_front().expect("not empty");
            if self.refused(task, attempt).is_some() {
                self.end_unstarted(task, attempt);
                continue;
            }
            let no_requirements = Default::default();
            let requires = if self.tasks[task].attempts[attempt].report.kind == AttemptKind::Verify
            {
                &no_requirements
            } else {
                &self.ctx.plan.tasks[task].requires
            };
            let fits = |w: &super::WorkerState| {
                requires
                    .iter()
                    .all(|(k, v)| w.link.labels.get(k) == Some(v))
            };
            if !self.workers.is_empty() && !self.workers.values().any(fits) {
                self.end_unplaceable(task, attempt);
                continue;
            }
            let Some(worker) = self
                .workers
                .iter()
                .filter(|(_, w)| fits(w))
                .map(|(id, w)| (w.free(), id))
                .filter(|(free, _)| *free > 0)
                .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
                .map(|(_, id)| id.clone())
            else {
                waiting.push((task, attempt));
                continue;
            };
            // Another run's loop may have taken the worker's last slot meanwhile.
            if let Some(pool) = &self.workers[&worker].link.pool
                && !pool.take()
            {
                self.queue.push_front((task, attempt));
                break;
            }
            let lease_id = format!("{}-{}-{}", self.ctx.run_id, self.epoch, self.next_lease);
            self.next_lease += 1;
            let ports = self.port_block();
            let mut spec = self.attempt_spec(task, attempt);
            let stem = format!("{}.{}", spec.task_id, spec.attempt);
            let key = self
                .journal
                .is_some()
                .then(|| crate::journal::spec_key(&spec));
            spec.port_base = super::PORT_START + ports * super::PORT_BLOCK;
            spec.port_count = super::PORT_BLOCK;
            let message = down(Down::Assign(Assign {
                lease_id: lease_id.clone(),
                attempt: Some(spec),
                spec_key: key.clone().unwrap_or_default(),
            }));
            if self.journal.is_some() {
                let n = self.tasks[task].attempts[attempt].report.n;
                let detail = format!("attempt {n} to worker {worker} under lease {lease_id}");
                self.journal_event("assigned", Some(task), &detail);
            }
            let sent = self.workers[&worker].link.tx.try_send(Ok(message)).is_ok();
            if !sent {
                if let Some(pool) = &self.workers[&worker].link.pool {
                    pool.give();
                }
                self.free_ports.insert(ports);
                self.queue.push_front((task, attempt));
                self.drop_worker(&worker, "it is not reading its stream");
                continue;
            }
            let started_ms = self.now_ms();
            let state = &mut self.tasks[task].attempts[attempt];
            state.key = key;
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
                    ports,
                    stem,
                },
            );
            if !matches!(
                self.tasks[task].attempts[attempt].report.kind,
                AttemptKind::Review | AttemptKind::Verify
            ) {
                self.note(Note::Assigned {
                    task: self.ctx.plan.tasks[task].id.clone(),
                    n,
                    worker,
                });
            }
        }
        for item in waiting.into_iter().rev() {
            self.queue.push_front(item);
        }
    }

    /// Ends an attempt no worker here can take: its task `requires` labels none has.
    fn end_unplaceable(&mut self, task: usize, attempt: usize) {
        let requires = &self.ctx.plan.tasks[task].requires;
        let wanted: Vec<String> = requires.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let here: Vec<String> = self
            .workers
            .values()
            .map(|w| {
                let labels: Vec<String> = w
                    .link
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                format!("{} ({}) {{{}}}", w.link.id, w.link.name, labels.join(", "))
            })
            .collect();
        let why = format!(
            "no worker can take it: none has the labels {} (workers: {})",
            wanted.join(", "),
            here.join("; ")
        );
        let state = &mut self.tasks[task].attempts[attempt];
        state.phase = AttemptPhase::Done;
        state.report.status = AttemptStatus::Failed;
        state.report.error = Some(why);
        self.dirty.push(task);
    }

    pub(super) fn attempt_spec(&self, task: usize, attempt: usize) -> AttemptSpec {
        let plan_task = &self.ctx.plan.tasks[task];
        let state = &self.tasks[task];
        let this = &state.attempts[attempt];
        let kind = this.report.kind;
        match kind {
            AttemptKind::Review => return self.review_spec(task, attempt),
            AttemptKind::Verify => return self.verify_spec(task, attempt),
            _ => {}
        }
        let checks: Vec<CheckSpec> = if kind == AttemptKind::Baseline {
            this.checks_only.iter().map(check_spec).collect()
        } else {
            plan_task
                .checks
                .iter()
                .chain(&this.extra_checks)
                .map(check_spec)
                .collect()
        };
        let score = plan_task
            .score
            .as_ref()
            .filter(|_| kind == AttemptKind::Task)
            .map(|s| ScoreSpec {
                run: s.run.clone(),
                timeout_ms: s.timeout.as_millis() as u64,
            });
        AttemptSpec {
            run_id: self.ctx.run_id.clone(),
            task_id: plan_task.id.clone(),
            attempt: this.report.n,
            repository: self.ctx.repo_id.clone(),
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
            agent: (kind != AttemptKind::Baseline)
                .then(|| agent_spec(plan_task.agent_for(this.report.n))),
            timeout_ms: plan_task.timeout.as_millis() as u64,
            checks,
            log_cap_bytes: self.config.log_cap,
            baseline: kind == AttemptKind::Baseline,
            diff_base: this.diff_base.clone().unwrap_or_default(),
            score,
            feedback: this.feedback.clone().unwrap_or_default(),
            protect: if kind == AttemptKind::Baseline {
                Vec::new()
            } else {
                plan_task.protect.clone()
            },
            sandbox: Some(sandbox_spec(
                &plan_task.sandbox,
                Some(plan_task.agent_for(this.report.n)),
            )),
            grace_ms: plan_task.grace.as_millis() as u64,
            budget: plan_task.budget.is_set().then_some(pb::Budget {
                usd: plan_task.budget.usd,
                tokens: plan_task.budget.tokens,
                turns: plan_task.budget.turns,
            }),
            stall_ms: plan_task.stall.map_or(0, |d| d.as_millis() as u64),
            // The baseline's checks need what the attempts' checks get.
            setup: plan_task
                .setup
                .iter()
                .map(|(run, timeout)| pb::SetupSpec {
                    run: run.clone(),
                    timeout_ms: timeout.as_millis() as u64,
                })
                .collect(),
            include: plan_task
                .include
                .iter()
                .map(|f| pb::IncludeFile {
                    path: f.path.clone(),
                    content: f.content.as_ref().clone(),
                    executable: f.executable,
                })
                .collect(),
            port_base: 0,
            port_count: 0,
            read_only: None,
        }
    }

    pub(super) fn send(&mut self, worker: &str, kind: Down) {
        let failed = self
            .workers
            .get(worker)
            .is_some_and(|w| w.link.tx.try_send(Ok(down(kind))).is_err());
        if failed {
            self.drop_worker(worker, "it is not reading its stream");
        }
    }
}

/// What a worker needs to know of an agent. The API key stays behind: only the name of
/// the variable that holds it goes over the wire.
pub fn agent_spec(agent: &crate::plan::Agent) -> AgentSpec {
    AgentSpec {
        command: agent.command.clone(),
        env: agent.env.clone().into_iter().collect(),
        preset: agent.preset.clone(),
        model: agent.model.clone(),
        args: agent.args.clone(),
        base_url: agent.base_url.clone(),
        api_key_env: agent.api_key_env.clone(),
        api: agent.api.clone(),
        max_turns: agent.max_turns,
        price: agent.price.map(|(input, cached_input, output)| pb::Price {
            input,
            cached_input,
            output,
        }),
    }
}
