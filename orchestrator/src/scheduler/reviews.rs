//! `select: judge` in the loop: once a task's attempts have all ended and two or more
//! passed, its judge compares them in verdict jobs, each a read-only job a worker runs like
//! any attempt (see [`crate::judge`] for the tournament and [`braid_worker::read_only`] for
//! the job). A task waits for its verdicts; the task's winner comes from the tournament.

use std::collections::HashMap;
use std::sync::Arc;

use braid_shared::proto::{self as pb, AttemptSpec};

use super::{AttemptPhase, AttemptState, Scheduler, agent_spec, sandbox_spec, units};
use crate::judge::{self, JudgeReport, Judged, Pick, Tournament, VerdictReport};
use crate::progress::Note;
use crate::report::{AttemptKind, AttemptReport, AttemptStatus, Usage};
use crate::select::{self, Verdict};

/// Where a task's judging stands.
pub(super) enum Judging {
    /// Verdicts are still coming.
    Going,
    /// The run was interrupted before the tournament ended.
    Interrupted,
    /// The tournament is over (or was not needed): the winner, if any attempt passed.
    Done(Option<Verdict>),
}

impl Scheduler {
    /// Judging of task `t`, whose current round's attempts `reports` have all ended: starts
    /// the tournament, queues its next round of verdicts, or decides.
    pub(super) fn judged(&mut self, t: usize, reports: &[AttemptReport]) -> Judging {
        let seeds = select::best_order(reports);
        if seeds.len() < 2 {
            return Judging::Done(select::best(reports).map(|mut v| {
                v.reason
                    .push_str("; the judge was not called: one attempt passed");
                v
            }));
        }
        let round = self.tasks[t].round;
        if self.tasks[t].tournament.as_ref().map(|j| j.round) != Some(round) {
            let Some(judge) = self.ctx.plan.tasks[t].judge.clone() else {
                return Judging::Done(select::best(reports));
            };
            let Some(mut diffs) = self.judge_diffs(t, &seeds) else {
                return Judging::Going;
            };
            let mut tournament = Tournament::new(round, seeds.clone(), judge.max_pairs);
            for &n in &seeds {
                let diff = diffs.remove(&n).unwrap_or_default();
                tournament.diffs.insert(n, diff);
            }
            self.tasks[t].tournament = Some(tournament);
            let possible = self.tasks[t]
                .tournament
                .as_ref()
                .map_or(0, Tournament::possible);
            self.note(Note::Info(format!(
                "{}: {} attempts passed; {} compares them ({} pair{}, at most {}, each in both orders)",
                self.ctx.plan.tasks[t].id,
                seeds.len(),
                judge.agent.title(),
                possible,
                if possible == 1 { "" } else { "s" },
                judge.max_pairs
            )));
        }
        let jobs = self.review_jobs(t, round);
        if jobs
            .iter()
            .any(|&i| self.tasks[t].attempts[i].phase != AttemptPhase::Done)
        {
            return Judging::Going;
        }
        if self.cancelling.is_some() {
            return Judging::Interrupted;
        }
        let verdicts = self.verdicts(t, &jobs);
        let next = match self.tasks[t].tournament.as_mut() {
            Some(tournament) => tournament.next_pairs(&verdicts),
            None => Vec::new(),
        };
        if !next.is_empty() {
            for (x, y) in next {
                self.queue_verdict(t, x, y);
                self.queue_verdict(t, y, x);
            }
            return Judging::Going;
        }
        let Some(tournament) = self.tasks[t].tournament.clone() else {
            return Judging::Done(select::best(reports));
        };
        let (verdict, pairs, standings, tie) = judge::decide(&tournament, &verdicts, reports);
        let judge = self.ctx.plan.tasks[t].judge.clone();
        let verdict_reports: Vec<VerdictReport> = jobs
            .iter()
            .map(|&i| {
                let job = &self.tasks[t].attempts[i];
                let (a, b) = job.review.unwrap_or_default();
                let (winner, reason, error) = match &job.verdict {
                    Some(Ok((winner, reason))) => (Some(winner.clone()), reason.clone(), None),
                    Some(Err(why)) => (None, String::new(), Some(why.clone())),
                    None => (
                        None,
                        String::new(),
                        Some(
                            job.report
                                .error
                                .clone()
                                .unwrap_or_else(|| "the job did not run".into()),
                        ),
                    ),
                };
                VerdictReport {
                    a,
                    b,
                    winner,
                    reason,
                    error,
                    duration_ms: job.report.duration_ms,
                    usage: job.report.usage,
                    log: job.report.log.clone(),
                }
            })
            .collect();
        let usage = Usage::sum(verdict_reports.iter().map(|v| &v.usage));
        self.tasks[t].judge_report = Some(JudgeReport {
            agent: judge.as_ref().map(|j| j.agent.title()).unwrap_or_default(),
            criteria: judge
                .as_ref()
                .map(|j| j.criteria.clone())
                .unwrap_or_default(),
            candidates: tournament.seeds.clone(),
            pairs_possible: tournament.possible(),
            pairs_judged: tournament.pairs.len() as u32,
            max_pairs: tournament.max_pairs,
            pairs,
            verdicts: verdict_reports,
            standings,
            tie_broken_by_best: tie,
            usage,
        });
        Judging::Done(verdict)
    }

    /// The verdict jobs of task `t` for `round`, in the order they were queued.
    fn review_jobs(&self, t: usize, round: u32) -> Vec<usize> {
        self.tasks[t]
            .attempts
            .iter()
            .enumerate()
            .filter(|(_, a)| a.report.kind == AttemptKind::Review && a.report.round == round)
            .map(|(i, _)| i)
            .collect()
    }

    /// What the verdict jobs `jobs` of task `t` said, in attempts' numbers.
    fn verdicts(&self, t: usize, jobs: &[usize]) -> Vec<Judged> {
        jobs.iter()
            .filter_map(|&i| {
                let job = &self.tasks[t].attempts[i];
                let (a, b) = job.review?;
                let pick = match &job.verdict {
                    Some(Ok((winner, _))) => Some(match winner.as_str() {
                        "A" => Pick::Attempt(a),
                        "B" => Pick::Attempt(b),
                        _ => Pick::Tie,
                    }),
                    _ => None,
                };
                Some(Judged { a, b, pick })
            })
            .collect()
    }

    /// Queues the verdict job that shows attempt `a` as candidate A and `b` as B.
    fn queue_verdict(&mut self, t: usize, a: u32, b: u32) {
        let state = &mut self.tasks[t];
        let k = state
            .attempts
            .iter()
            .filter(|j| j.report.kind == AttemptKind::Review)
            .count() as u32
            + 1;
        let mut report = AttemptReport::empty(k, "");
        report.kind = AttemptKind::Review;
        report.round = state.round;
        report.base = state
            .attempts
            .iter()
            .position(|j| j.report.kind == AttemptKind::Task && j.report.n == a)
            .and_then(|i| self.measured_from(t, i));
        let mut job = AttemptState::new(report, AttemptPhase::Queued);
        job.review = Some((a, b));
        self.tasks[t].attempts.push(job);
        // Ahead of its height's other attempts: the task's dependents wait for its winner.
        self.queue.push_front((t, self.tasks[t].attempts.len() - 1));
    }

    /// The diffs of attempts `seeds` of task `t` against what each is measured from;
    /// `None` while a unit reads them.
    fn judge_diffs(&mut self, t: usize, seeds: &[u32]) -> Option<HashMap<u32, Arc<String>>> {
        let attempts = self.tasks[t].attempts.len();
        if let Some((read_with, diffs)) = &self.tasks[t].diffs
            && *read_with == attempts
        {
            return Some(diffs.clone());
        }
        if self.unit_running(self.tasks[t].diffing) {
            return None;
        }
        let changes = self.passing_changes(t, |n| seeds.contains(&n));
        let git = braid_shared::git::Git::at(&self.ctx.plan.repo);
        let unit = units::diffs(git, t, attempts, changes);
        self.tasks[t].diffing = Some(self.offload("judge-diffs", unit));
        None
    }

    /// What a worker needs to run verdict job `i` of task `t`.
    pub(super) fn review_spec(&self, t: usize, i: usize) -> AttemptSpec {
        let plan_task = &self.ctx.plan.tasks[t];
        let job = &self.tasks[t].attempts[i];
        let (a, b) = job.review.unwrap_or_default();
        let diff = |n: u32| {
            self.tasks[t]
                .tournament
                .as_ref()
                .and_then(|j| j.diffs.get(&n).cloned())
                .unwrap_or_default()
        };
        let (diff_a, diff_b) = (diff(a), diff(b));
        let judge = plan_task.judge.as_ref();
        let agent = judge.map_or_else(|| plan_task.agent_for(1), |j| &j.agent);
        let input = |env: &str, name: &str, diff: &str| pb::InputFile {
            env: env.to_owned(),
            name: name.to_owned(),
            content: judge::cut_diff(diff, judge::FILE_DIFF_MAX, env).into_bytes(),
        };
        AttemptSpec {
            run_id: self.ctx.run_id.clone(),
            task_id: format!("{}.judge", plan_task.id),
            attempt: job.report.n,
            repository: self.ctx.repo_id.clone(),
            base_commit: job
                .report
                .base
                .clone()
                .or_else(|| self.tasks[t].base.clone())
                .unwrap_or_default(),
            prompt: judge::prompt(
                &plan_task.prompt,
                judge.map_or("", |j| j.criteria.as_str()),
                &diff_a,
                &diff_b,
            ),
            agent: Some(agent_spec(agent)),
            timeout_ms: plan_task.timeout.as_millis() as u64,
            log_cap_bytes: self.config.log_cap,
            sandbox: Some(sandbox_spec(&plan_task.sandbox, Some(agent))),
            grace_ms: plan_task.grace.as_millis() as u64,
            stall_ms: plan_task.stall.map_or(0, |d| d.as_millis() as u64),
            read_only: Some(pb::ReadOnlyJob {
                answer_env: "BRAID_VERDICT_FILE".into(),
                inputs: vec![
                    input("BRAID_CANDIDATE_A", "candidate-a.diff", &diff_a),
                    input("BRAID_CANDIDATE_B", "candidate-b.diff", &diff_b),
                ],
            }),
            ..Default::default()
        }
    }

    /// Takes in the result of verdict job `i` of task `t`.
    pub(super) fn review_done(&mut self, t: usize, i: usize, result: pb::AttemptResult) {
        let finished_ms = self.now_ms();
        let state = &mut self.tasks[t].attempts[i];
        let report = &mut state.report;
        report.duration_ms = result.duration_ms;
        report.usage = Usage::sum([
            &report.usage,
            &result
                .usage
                .as_ref()
                .map(|u| braid_shared::usage::Usage::from(u).into())
                .unwrap_or_default(),
        ]);
        report.agent = (!result.agent.is_empty()).then(|| result.agent.clone());
        report.model = (!result.model.is_empty()).then(|| result.model.clone());
        report.log = (!result.log_path.is_empty()).then(|| result.log_path.clone());
        report.finished_ms = Some(finished_ms);
        let verdict = if result.status() == pb::AttemptStatus::Finished {
            judge::parse_verdict(&result.answer, &result.final_message)
        } else {
            Err(if result.error.is_empty() {
                "the judge did not finish".to_owned()
            } else {
                result.error.clone()
            })
        };
        report.status = if verdict.is_ok() {
            AttemptStatus::Succeeded
        } else {
            AttemptStatus::Failed
        };
        report.error = verdict.as_ref().err().cloned();
        let (a, b) = state.review.unwrap_or_default();
        let said = match &verdict {
            Ok((winner, reason)) => {
                let pick = match winner.as_str() {
                    "A" => format!("#{a}"),
                    "B" => format!("#{b}"),
                    _ => "a tie".to_owned(),
                };
                format!("{pick}: {reason}")
            }
            Err(why) => format!("no verdict: {why}"),
        };
        state.verdict = Some(verdict);
        state.phase = AttemptPhase::Done;
        self.note(Note::Info(format!(
            "{}: judge on #{a} (A) against #{b} (B): {said}",
            self.ctx.plan.tasks[t].id
        )));
        self.dirty.push(t);
    }
}
