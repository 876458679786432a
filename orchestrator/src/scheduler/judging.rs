//! Judging attempts: checks against the task's base, feedback retries, and the end of a
//! task's other attempts once `first-pass` has a winner.
//!
//! A result from a worker holds the checks as they ran; the worker does not judge them.
//! Here a failing check becomes `pre_existing` when the same check fails on the task's base
//! too. Each check runs on a base once: the first task that needs it queues a baseline job
//! (an `AttemptSpec` with `baseline` set, run by a worker like any attempt), and every
//! attempt measured from that base reads the cached result. An attempt waits in
//! [`AttemptPhase::Judging`] only while a baseline it needs is still running, and only
//! when one of its checks failed: an attempt whose checks pass never waits.

use std::collections::HashMap;
use std::fmt::Write as _;

use braid_shared::proto::coordinator_message::Kind as Down;
use braid_shared::proto::{self as pb, Cancel};

use super::{AttemptPhase, AttemptState, Scheduler, TaskPhase, check_report, units};
use crate::plan::Check;
use crate::progress::Note;
use crate::report::{AttemptKind, AttemptReport, AttemptStatus, CheckReport, CheckStatus, word};
use crate::select;

/// Most bytes of feedback a retry gets.
const FEEDBACK_CAP: usize = 16 << 10;

/// What is known of one check on one base.
#[derive(Debug, Clone)]
pub(super) enum BaselineEntry {
    /// The baseline job `(task, attempt)` will tell.
    Pending(usize, usize),
    /// How the check ended on the base.
    Known(CheckReport),
}

/// The cache key of `check` on `base`: a check is the same check when its name, its
/// command line and the folder it runs in are (the targets of a fanned task each run
/// `cargo test` in their own folder), and whether it runs per package.
pub(super) fn key(base: &str, check: &Check) -> (String, String) {
    (
        base.to_owned(),
        format!(
            "{}\0{}\0{}\0{}",
            check.name, check.run, check.cwd, check.per_package
        ),
    )
}

/// The cache key of a `per: package` check's run for one package on `base`.
fn package_key(base: &str, check: &Check, package: &str) -> (String, String) {
    let (base, whole) = key(base, check);
    (base, format!("{whole}\0{package}"))
}

fn failing(status: CheckStatus) -> bool {
    matches!(status, CheckStatus::Failed | CheckStatus::TimedOut)
}

impl Scheduler {
    /// The number the next attempt of task `t` gets.
    pub(super) fn next_n(&self, t: usize) -> u32 {
        self.tasks[t]
            .attempts
            .iter()
            .map(|a| a.report.n)
            .max()
            .unwrap_or(0)
            + 1
    }

    /// The commit attempt `i` of task `t` is measured against: its diff, its path-scoped
    /// checks and its baseline.
    pub(super) fn measured_from(&self, t: usize, i: usize) -> Option<String> {
        let state = &self.tasks[t].attempts[i];
        state
            .diff_base
            .clone()
            .or_else(|| state.report.base.clone())
            .or_else(|| self.tasks[t].base.clone())
    }

    /// Queues a baseline job for the checks of task `t` on `base` that nobody has run or
    /// is running there yet. Checks with `baseline: false` run there too, though no
    /// attempt waits for them: one that passes on the base cannot tell attempts apart, and
    /// the run says so.
    pub(super) fn ensure_baseline(&mut self, t: usize, base: &str) {
        let checks: Vec<Check> = self.ctx.plan.tasks[t]
            .checks
            .iter()
            .filter(|c| match self.baselines.get(&key(base, c)) {
                None => true,
                Some(BaselineEntry::Pending(task, attempt)) => {
                    self.tasks[*task].attempts[*attempt].phase == AttemptPhase::Done
                }
                Some(BaselineEntry::Known(_)) => false,
            })
            .cloned()
            .collect();
        if checks.is_empty() {
            return;
        }
        let state = &mut self.tasks[t];
        let index = state.attempts.len();
        let mut report = AttemptReport::empty(0, "");
        report.kind = AttemptKind::Baseline;
        report.base = Some(base.to_owned());
        let mut job = AttemptState::new(report, AttemptPhase::Queued);
        for check in &checks {
            self.baselines
                .insert(key(base, check), BaselineEntry::Pending(t, index));
        }
        job.checks_only = checks;
        state.attempts.push(job);
        // First in line: attempts that fail a check wait for it.
        self.queue.push_front((t, index));
        self.baseline_jobs.push((t, index));
    }

    /// Records what a baseline job found, and lets the attempts waiting for it be judged.
    pub(super) fn baseline_done(&mut self, t: usize, i: usize, checks: &[pb::CheckResult]) {
        let base = self.measured_from(t, i).unwrap_or_default();
        let job = &self.tasks[t].attempts[i];
        let mut found = Vec::new();
        for result in checks {
            let report = check_report(result);
            if report.status == CheckStatus::Skipped {
                continue;
            }
            if let Some(check) = job.checks_only.iter().find(|c| c.name == result.name) {
                found.push(format!("{} {}", check.name, word(report.status)));
                if !check.baseline && report.status == CheckStatus::Passed {
                    let warning = format!(
                        "check {:?} of task {:?} passes on the base {} and has `baseline: false`: it cannot tell attempts apart (every attempt that keeps it passing passes it)",
                        check.name,
                        self.ctx.plan.tasks[t].id,
                        crate::report::short(&base)
                    );
                    if !self.warnings.contains(&warning) {
                        self.note(Note::Info(format!("warning: {warning}")));
                        self.warnings.push(warning);
                    }
                }
                if let Some(package) = &report.package {
                    self.baselines.insert(
                        package_key(&base, check, package),
                        BaselineEntry::Known(report.clone()),
                    );
                }
                self.baselines
                    .insert(key(&base, check), BaselineEntry::Known(report));
            }
        }
        self.tasks[t].attempts[i].phase = AttemptPhase::Done;
        if !found.is_empty() {
            self.note(Note::Info(format!(
                "{}: checks on the base {}: {}",
                self.ctx.plan.tasks[t].id,
                crate::report::short(&base),
                found.join(", ")
            )));
        }
    }

    /// Judges every attempt whose result is in and whose baselines are known.
    pub(super) fn judge_all(&mut self) {
        let tasks: Vec<usize> = self.judging.iter().copied().collect();
        for t in tasks {
            let mut waiting = false;
            for i in 0..self.tasks[t].attempts.len() {
                if self.tasks[t].attempts[i].phase != AttemptPhase::Judging {
                    continue;
                }
                match self.pre_existing(t, i) {
                    Some(found) => self.conclude(t, i, found),
                    None => waiting = true,
                }
            }
            if !waiting {
                self.judging.remove(&t);
            }
        }
    }

    /// The failing checks of attempt `i` that fail on its base too, with a note each;
    /// `None` while a baseline it needs is still running.
    fn pre_existing(&self, t: usize, i: usize) -> Option<Vec<(usize, String)>> {
        let state = &self.tasks[t].attempts[i];
        let mut found = Vec::new();
        if state.report.kind != AttemptKind::Task {
            return Some(found);
        }
        let Some(base) = self.measured_from(t, i) else {
            return Some(found);
        };
        for (index, check) in state.report.checks.iter().enumerate() {
            if !failing(check.status) {
                continue;
            }
            let Some(planned) = self.ctx.plan.tasks[t]
                .checks
                .iter()
                .find(|c| c.name == check.name && c.baseline)
            else {
                continue;
            };
            let entry = match (self.baselines.get(&key(&base, planned)), &check.package) {
                // A package's own run on the base, once the baseline job is done.
                (Some(BaselineEntry::Known(_)), Some(package)) => {
                    self.baselines.get(&package_key(&base, planned, package))
                }
                (entry, _) => entry,
            };
            match entry {
                Some(BaselineEntry::Known(on_base)) if failing(on_base.status) => {
                    let how = match on_base.exit_code {
                        Some(code) => format!("exit code {code}"),
                        None => word(on_base.status).replace('_', " "),
                    };
                    found.push((
                        index,
                        format!(
                            "fails on the base {} too ({how}), so it is not blamed on this attempt",
                            crate::report::short(&base)
                        ),
                    ));
                }
                Some(BaselineEntry::Pending(task, attempt))
                    if self.tasks[*task].attempts[*attempt].phase != AttemptPhase::Done =>
                {
                    return None;
                }
                _ => {}
            }
        }
        Some(found)
    }

    /// Settles attempt `i`'s status from its checks, and starts a retry when one is due.
    fn conclude(&mut self, t: usize, i: usize, pre_existing: Vec<(usize, String)>) {
        let state = &mut self.tasks[t].attempts[i];
        let report = &mut state.report;
        for (index, note) in pre_existing {
            report.checks[index].status = CheckStatus::PreExisting;
            report.checks[index].note = Some(note);
        }
        if report.status == AttemptStatus::Succeeded {
            let failed: Vec<String> = report
                .checks
                .iter()
                .filter(|c| failing(c.status))
                .map(|c| c.label())
                .collect();
            if !failed.is_empty() {
                let why = format!("check {} did not pass", failed.join(", "));
                report.status = AttemptStatus::Failed;
                report.error = Some(why);
            }
        }
        state.phase = AttemptPhase::Done;
        let note = Note::AttemptDone {
            task: self.ctx.plan.tasks[t].id.clone(),
            n: report.n,
            status: word(report.status),
            detail: report.error.clone().unwrap_or_default(),
            spent: if report.usage == crate::report::Usage::default() {
                String::new()
            } else {
                report.usage.text()
            },
        };
        self.note(note);
        self.dirty.push(t);
        self.retry(t, i);
    }

    /// Queues a feedback retry of attempt `i` when its checks failed and its chain has
    /// retries left.
    fn retry(&mut self, t: usize, i: usize) {
        let plan_task = &self.ctx.plan.tasks[t];
        let state = &self.tasks[t];
        let failed = &state.attempts[i].report;
        let checks_failed = failed.checks.iter().any(|c| failing(c.status));
        if plan_task.retries == 0
            || self.cancelling.is_some()
            || state.phase != TaskPhase::Running
            || failed.kind != AttemptKind::Task
            || failed.round != state.round
            || failed.status != AttemptStatus::Failed
            || failed.commit.is_none()
            || !checks_failed
        {
            return;
        }
        let mut depth = 0;
        let mut link = failed.continues;
        while let Some(parent) = link {
            depth += 1;
            link = state
                .attempts
                .iter()
                .find(|a| a.report.n == parent)
                .and_then(|a| a.report.continues);
        }
        if depth >= plan_task.retries {
            return;
        }
        let n = self.next_n(t);
        let mut report = AttemptReport::empty(
            n,
            &format!("braid/{}/{}/{n}", self.ctx.run_id, plan_task.id),
        );
        report.round = failed.round;
        report.base = failed.commit.clone();
        report.continues = Some(failed.n);
        let mut retry = AttemptState::new(report, AttemptPhase::Queued);
        retry.diff_base = self.measured_from(t, i);
        retry.feedback = Some(feedback(
            &plan_task.id,
            &self.tasks[t].attempts[i],
            &plan_task.checks,
        ));
        let parent = failed.n;
        let id = plan_task.id.clone();
        self.tasks[t].attempts.push(retry);
        self.queue.push_back((t, self.tasks[t].attempts.len() - 1));
        self.note(Note::Info(format!(
            "{id}#{n} continues #{parent} with its failing checks as feedback"
        )));
        self.mark(
            "retry",
            Some(t),
            format!("attempt {n} continues attempt {parent}"),
        );
    }

    /// Keys of the passing attempts' changes, for `vote`; `None` while a unit reads them.
    pub(super) fn change_keys(&mut self, t: usize) -> Option<HashMap<u32, u64>> {
        let attempts = self.tasks[t].attempts.len();
        if let Some((read_with, keys)) = &self.tasks[t].votes
            && *read_with == attempts
        {
            return Some(keys.clone());
        }
        if self.unit_running(self.tasks[t].voting) {
            return None;
        }
        let changes = self.passing_changes(t, |_| true);
        if changes.is_empty() {
            return Some(HashMap::new());
        }
        let unit = units::votes(self.merger.clone(), t, attempts, changes);
        self.tasks[t].voting = Some(self.offload("vote-reads", unit));
        None
    }

    /// The changes of task `t`'s passing attempts that `pick` picks by number: what each
    /// is measured from, and its commit.
    pub(super) fn passing_changes(
        &self,
        t: usize,
        pick: impl Fn(u32) -> bool,
    ) -> Vec<units::Change> {
        self.tasks[t]
            .attempts
            .iter()
            .enumerate()
            .filter_map(|(i, state)| {
                let report = &state.report;
                let (true, Some(commit), Some(base)) = (
                    report.kind == AttemptKind::Task
                        && select::passes(report)
                        && state.phase == AttemptPhase::Done
                        && pick(report.n),
                    &report.commit,
                    self.measured_from(t, i),
                ) else {
                    return None;
                };
                Some((report.n, base, commit.clone()))
            })
            .collect()
    }

    /// After `first-pass` found its winner: stops the task's other attempts. Queued ones
    /// never start; running ones are cancelled and report back as `cancelled`.
    pub(super) fn cancel_rest(&mut self, t: usize, winner: u32) {
        let why = format!("cancelled: attempt {winner} passed first");
        for i in 0..self.tasks[t].attempts.len() {
            let state = &self.tasks[t].attempts[i];
            if state.report.kind != AttemptKind::Task {
                continue;
            }
            match state.phase {
                AttemptPhase::Queued | AttemptPhase::Idle | AttemptPhase::Retrying => {
                    self.drop_queued(t, i, &why)
                }
                AttemptPhase::Leased => self.cancel_lease(t, i, &why),
                AttemptPhase::Importing | AttemptPhase::Judging | AttemptPhase::Done => {}
            }
        }
    }

    /// Takes attempt `i` of task `t` out of the queue before it ever ran.
    fn drop_queued(&mut self, t: usize, i: usize, why: &str) {
        self.queue.retain(|&(task, a)| (task, a) != (t, i));
        let state = &mut self.tasks[t].attempts[i];
        state.phase = AttemptPhase::Done;
        state.report.status = AttemptStatus::Cancelled;
        state.report.error = Some(why.to_owned());
    }

    /// Asks the worker running attempt `i` of task `t` to stop it.
    fn cancel_lease(&mut self, t: usize, i: usize, why: &str) {
        self.tasks[t].attempts[i].cancel_reason = Some(why.to_owned());
        let lease = self
            .leases
            .iter()
            .find(|(_, l)| (l.task, l.attempt) == (t, i))
            .map(|(id, l)| (id.clone(), l.worker.clone()));
        if let Some((lease_id, worker)) = lease {
            self.send(
                &worker,
                Down::Cancel(Cancel {
                    lease_id,
                    reason: why.to_owned(),
                }),
            );
        }
    }

    /// Stops baseline jobs that no running task measures from any more, so a task that
    /// ended without needing them does not hold the run open.
    pub(super) fn drop_unneeded_baselines(&mut self) {
        let jobs = std::mem::take(&mut self.baseline_jobs);
        for (t, i) in jobs {
            let phase = self.tasks[t].attempts[i].phase;
            if phase == AttemptPhase::Done {
                continue;
            }
            let base = self.measured_from(t, i);
            let needed = self.tasks.iter().enumerate().any(|(o, s)| {
                s.phase == TaskPhase::Running
                    && s.attempts.iter().enumerate().any(|(j, a)| {
                        a.report.kind == AttemptKind::Task
                            && a.phase != AttemptPhase::Done
                            && self.measured_from(o, j) == base
                    })
            });
            if needed {
                self.baseline_jobs.push((t, i));
                continue;
            }
            let why = "cancelled: no attempt waits for the checks on this base any more";
            if phase == AttemptPhase::Leased {
                self.cancel_lease(t, i, why);
                self.baseline_jobs.push((t, i));
            } else {
                self.drop_queued(t, i, why);
            }
        }
    }
}

/// What a retry is told about the attempt it continues.
fn feedback(task: &str, failed: &AttemptState, checks: &[Check]) -> String {
    let report = &failed.report;
    let mut text = format!(
        "# Feedback from braid\n\nAttempt {} of task `{task}` finished, but checks failed. \
         This attempt starts from its commit: fix what the checks report.\n",
        report.n
    );
    for check in report.checks.iter().filter(|c| failing(c.status)) {
        let how = match (check.status, check.exit_code) {
            (CheckStatus::TimedOut, _) => "ran past its timeout".to_owned(),
            (_, Some(code)) => format!("failed with exit code {code}"),
            (_, None) => "failed".to_owned(),
        };
        let label = check.label();
        let _ = write!(text, "\n## Check `{label}`: {how}\n\n");
        if let Some(planned) = checks.iter().find(|c| c.name == check.name) {
            let _ = writeln!(text, "Command: `{}`\n", planned.run);
        }
        if let (Some(dir), Some(why)) = (&check.package_dir, &check.affected) {
            let place = match dir.as_str() {
                "" => "at the repository's root".to_owned(),
                dir => format!("in `{dir}/`"),
            };
            let _ = writeln!(text, "It ran for the package {place}: {why}.\n");
        }
        let tail = failed
            .tails
            .iter()
            .find(|(name, _)| *name == label)
            .map(|(_, tail)| tail.as_str())
            .unwrap_or("");
        if tail.is_empty() {
            text.push_str("It printed nothing.\n");
        } else {
            let _ = write!(text, "Last lines of its output:\n\n```\n{tail}\n```\n");
        }
    }
    if text.len() > FEEDBACK_CAP {
        let mut cut = FEEDBACK_CAP;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("\n… (feedback cut at 16 KiB)\n");
    }
    text
}
