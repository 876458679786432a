//! Verification: once the integration is over, the plan's `merge.verify` checks run on the
//! result as a job a worker takes like any other, checks only (a baseline job of the
//! result). Its worker measures the result against the run's base for the checks' `paths`,
//! so a check runs when the integrated change touches one of them. The coordinator runs
//! nothing of the repository's own.

use braid_shared::proto::{self as pb, AttemptSpec};

use super::{AttemptPhase, AttemptState, Scheduler, check_report, check_spec, sandbox_spec};
use crate::progress::Note;
use crate::report::{AttemptKind, AttemptReport, AttemptStatus, CheckReport};

/// What the job is called on the wire: the reserved id no task may take, whose branch is
/// the result's. Its logs are `result.1.check.<name>.log`.
pub(super) const JOB_ID: &str = crate::plan::load::RESERVED_ID;

impl Scheduler {
    /// Queues the verification of the integration's result, when the plan has checks for
    /// it and anything was integrated.
    pub(super) fn start_verification(&mut self) {
        if self.ctx.plan.merge.verify.is_empty() || self.verification.is_some() {
            return;
        }
        let (Some(commit), Some(&last)) = (
            self.integration.commit(),
            self.integration.integrated.last(),
        ) else {
            return;
        };
        let mut report = AttemptReport::empty(1, "");
        report.kind = AttemptKind::Verify;
        report.base = Some(commit);
        let mut job = AttemptState::new(report, AttemptPhase::Queued);
        job.checks_only = self.ctx.plan.merge.verify.clone();
        // It rides with the last task integrated; the task's report never shows it.
        let state = &mut self.tasks[last];
        state.attempts.push(job);
        let index = state.attempts.len() - 1;
        self.queue.push_front((last, index));
        self.verification = Some((last, index));
        self.note(Note::Info("verifying the result".into()));
        self.mark(
            "verification_started",
            None,
            format!(
                "{} check(s) on the result",
                self.ctx.plan.merge.verify.len()
            ),
        );
    }

    /// Whether the verification, if there is one, has ended.
    pub(super) fn verified(&self) -> bool {
        self.verification
            .is_none_or(|(t, i)| self.tasks[t].attempts[i].phase == AttemptPhase::Done)
    }

    /// What a worker needs to run the verification job `i` of task `t`.
    pub(super) fn verify_spec(&self, t: usize, i: usize) -> AttemptSpec {
        let plan = &self.ctx.plan;
        let job = &self.tasks[t].attempts[i];
        AttemptSpec {
            run_id: self.ctx.run_id.clone(),
            task_id: JOB_ID.to_owned(),
            attempt: job.report.n,
            repository: self.ctx.repo_id.clone(),
            base_commit: job.report.base.clone().unwrap_or_default(),
            checks: job.checks_only.iter().map(check_spec).collect(),
            log_cap_bytes: self.config.log_cap,
            baseline: true,
            // The checks' `paths` are matched against what the result changed.
            diff_base: plan.base_commit.clone(),
            sandbox: Some(sandbox_spec(&plan.sandbox, None)),
            grace_ms: crate::plan::DEFAULT_GRACE.as_millis() as u64,
            ..Default::default()
        }
    }

    /// Records what the verification found. A job that could not run its checks (its
    /// worker could not read what the result changed) verified nothing.
    pub(super) fn verification_done(&mut self, t: usize, i: usize, result: &pb::AttemptResult) {
        let job = &mut self.tasks[t].attempts[i];
        job.phase = AttemptPhase::Done;
        if result.status() != pb::AttemptStatus::Finished {
            let why = if result.error.is_empty() {
                format!("the job ended {:?}", result.status()).to_lowercase()
            } else {
                result.error.clone()
            };
            job.report.status = AttemptStatus::Failed;
            job.report.error = Some(why.clone());
            self.mark("verified", None, format!("not verified: {why}"));
            return;
        }
        job.report.status = AttemptStatus::Succeeded;
        self.verified = result.checks.iter().map(check_report).collect();
        let passed = self
            .verified
            .iter()
            .filter(|c| c.status == crate::report::CheckStatus::Passed)
            .count();
        let detail = format!("{passed} of {} check(s) passed", self.verified.len());
        self.mark("verified", None, detail);
    }

    /// The verification's checks for the report; an error when it ended without them.
    pub(super) fn verification_outcome(&mut self) -> Vec<CheckReport> {
        let Some((t, i)) = self.verification else {
            return Vec::new();
        };
        let job = &self.tasks[t].attempts[i].report;
        // Only a job that ran its checks filled `verified`.
        if self.verified.is_empty() && self.cancelling.is_none() && self.error.is_none() {
            let why = job
                .error
                .clone()
                .unwrap_or_else(|| crate::report::word(job.status));
            self.error = Some(format!("could not verify the result: {why}"));
        }
        std::mem::take(&mut self.verified)
    }
}
