//! The merger's side of the loop: trial merges while tasks run, then the integration of
//! the winners in dependency order, with each task's conflict strategy.
//!
//! Integration runs inside the loop because two strategies need workers: `rebase` queues
//! the task's attempts again on top of the integration so far, and `agent` queues a
//! resolution attempt whose worktree holds the conflicted merge. The integration waits for
//! them and goes on where it stopped.

use std::collections::HashSet;
use std::sync::Arc;

use super::{AttemptPhase, AttemptState, Scheduler, TaskPhase};
use crate::merge::footprint::Footprint;
use crate::merge::{self, DepWinner, PathConflict, Route, Step, hunks};
use crate::plan::OnConflict;
use crate::progress::Note;
use crate::report::{
    AttemptKind, AttemptReport, AttemptStatus, ConflictReport, Prediction, Resolution, StepReport,
    TaskStatus,
};

/// Where the integration stands.
#[derive(Debug, Default)]
pub(super) struct Integration {
    /// Whether it has begun (every task had ended once).
    pub(super) started: bool,
    /// Whether it is over.
    pub(super) finished: bool,
    /// Tasks in integration order.
    order: Vec<usize>,
    /// The next position in `order`.
    next: usize,
    /// The integration so far.
    current: String,
    /// Tasks whose winners are in it, in order.
    pub(super) integrated: Vec<usize>,
    /// How each went in.
    pub(super) steps: Vec<StepReport>,
    /// What it waits for.
    waiting: Option<Waiting>,
    /// Tasks whose agent was already asked to resolve a conflict.
    resolution_tried: HashSet<usize>,
    /// The conflict each re-run task was re-run for.
    rebased_for: Vec<(usize, usize)>,
}

impl Integration {
    /// The result commit, when anything was integrated.
    pub(super) fn commit(&self) -> Option<String> {
        (!self.integrated.is_empty()).then(|| self.current.clone())
    }
}

#[derive(Debug)]
enum Waiting {
    /// The task's attempts run again on top of the integration.
    Rebase,
    /// A resolution attempt runs.
    Resolution {
        task: usize,
        attempt: usize,
        conflict: usize,
        paths: Vec<String>,
    },
}

impl Scheduler {
    /// The winning commit of task `t`.
    pub(super) fn winner_commit(&self, t: usize) -> Option<String> {
        let state = &self.tasks[t];
        let n = state.winner?;
        state
            .attempts
            .iter()
            .find(|a| a.report.n == n)
            .and_then(|a| a.report.commit.clone())
    }

    /// What the winner of task `t` touched against the task's base; kept until the winner
    /// changes.
    fn footprint(&mut self, t: usize) -> Option<Arc<Footprint>> {
        if let Some(footprint) = &self.tasks[t].footprint {
            return Some(Arc::clone(footprint));
        }
        let (base, commit) = (self.tasks[t].base.clone()?, self.winner_commit(t)?);
        let changes = match self.merger.changes(&base, &commit) {
            Ok(changes) => changes,
            Err(err) => {
                tracing::warn!(%err, "could not list a winner's paths");
                return None;
            }
        };
        let footprint = Arc::new(Footprint::of(&changes));
        self.tasks[t].footprint = Some(Arc::clone(&footprint));
        Some(footprint)
    }

    fn dep_winner(&self, t: usize) -> Option<DepWinner> {
        Some(DepWinner {
            id: self.ctx.plan.tasks[t].id.clone(),
            base: self.tasks[t].base.clone()?,
            commit: self.winner_commit(t)?,
        })
    }

    pub(super) fn mark(&mut self, event: &str, task: Option<usize>, detail: String) {
        self.journal_event(event, task, &detail);
        self.timeline.push(crate::report::TimelineEntry {
            at_ms: self.now_ms(),
            event: event.to_owned(),
            task: task.map(|t| self.ctx.plan.tasks[t].id.clone()),
            detail,
        });
    }

    /// Trial-merges the new winner of `task` with every winner the DAG does not order
    /// against it. A foreseen conflict is shown at once; under `rebase` it starts the later
    /// task again on top of the earlier one's winner, when nothing has started from the
    /// later task's winner yet.
    pub(super) async fn trial_merges(&mut self, task: usize) {
        if self.integration.started {
            return;
        }
        let Some(mine) = self.winner_commit(task) else {
            return;
        };
        let Some(footprint) = self.footprint(task) else {
            return;
        };
        let related = self.dag.related(task);
        let candidates: Vec<usize> = related
            .iter()
            .enumerate()
            .filter(|&(o, &ordered)| {
                o != task
                    && !ordered
                    && self.tasks[o].phase == TaskPhase::Done(TaskStatus::Succeeded)
            })
            .map(|(o, _)| o)
            .collect();
        let mut others = Vec::new();
        for o in candidates {
            if self
                .footprint(o)
                .is_some_and(|theirs| theirs.meets(&footprint))
            {
                others.push(o);
            }
        }
        for other in others {
            let Some(theirs) = self.winner_commit(other) else {
                continue;
            };
            let (first, second, first_commit, second_commit) =
                if self.positions[other] < self.positions[task] {
                    (other, task, &theirs, &mine)
                } else {
                    (task, other, &mine, &theirs)
                };
            let merged = match self.merger.merge(first_commit, second_commit).await {
                Ok(merged) => merged,
                Err(err) => {
                    tracing::warn!(%err, "a trial merge failed");
                    continue;
                }
            };
            let merge::Verdict::Conflicted { conflicts, .. } = merged.verdict else {
                continue;
            };
            let (a, b) = (
                self.ctx.plan.tasks[first].id.clone(),
                self.ctx.plan.tasks[second].id.clone(),
            );
            let paths: Vec<String> = conflicts.iter().map(|c| c.path.clone()).collect();
            let early = self.rebase_early(first, second).await;
            let rerun = early.is_ok();
            let action = early.unwrap_or_else(|why| format!("left to the integration ({why})"));
            self.note(Note::Info(format!(
                "predicted conflict: {a} × {b} in {}; {action}",
                paths.join(", ")
            )));
            self.mark(
                "predicted_conflict",
                Some(second),
                format!(
                    "trial merge of {a} and {b} conflicts in {}; {action}",
                    paths.join(", ")
                ),
            );
            self.predicted.push(Prediction {
                tasks: vec![a, b],
                paths,
                details: conflicts,
                at_ms: self.now_ms(),
                action,
            });
            if rerun && second == task {
                return;
            }
        }
    }

    /// Under `rebase`, starts `later` again from its base merged with `earlier`'s winner;
    /// says what it did, or why it did not.
    async fn rebase_early(&mut self, earlier: usize, later: usize) -> Result<String, String> {
        let plan_task = &self.ctx.plan.tasks[later];
        let (e, l) = (&self.ctx.plan.tasks[earlier].id, &plan_task.id);
        if plan_task.on_conflict != OnConflict::Rebase {
            return Err(format!(
                "{l} has on_conflict: {}",
                plan_task.on_conflict.name()
            ));
        }
        let round = self.tasks[later].round;
        if round >= self.ctx.plan.merge.max_rebases {
            return Err(format!(
                "{l} was re-run {round} time(s), the most max_rebases allows"
            ));
        }
        if self
            .dag
            .dependents(later)
            .iter()
            .any(|&d| self.tasks[d].phase != TaskPhase::Waiting)
        {
            return Err(format!("tasks have started from the winner of {l}"));
        }
        let (Some(base), Some(theirs)) =
            (self.tasks[later].base.clone(), self.winner_commit(earlier))
        else {
            return Err(format!("{l} has no base to start again from"));
        };
        let message = format!("braid: start {l} again from its base and the winner of {e}");
        match self.merger.merge_commits(&base, &theirs, &message).await {
            Ok((Step::Merged(new_base), _)) => {
                let why = format!("re-running {l} on top of the winner of {e}");
                self.rerun(later, new_base, &why);
                Ok(why)
            }
            Ok((Step::Conflict { .. }, _)) => {
                Err(format!("the winner of {e} conflicts with the base of {l}"))
            }
            Err(err) => Err(format!("could not merge a new base for {l}: {err}")),
        }
    }

    /// Queues the attempts of `task` again from `base` (a rebase round).
    pub(super) fn rerun(&mut self, task: usize, base: String, why: &str) {
        let plan_task = &self.ctx.plan.tasks[task];
        let first = self.next_n(task);
        let state = &mut self.tasks[task];
        state.round += 1;
        state.phase = TaskPhase::Running;
        state.base = Some(base.clone());
        for n in first..first + plan_task.attempts {
            let mut report = AttemptReport::empty(
                n,
                &format!("braid/{}/{}/{n}", self.ctx.run_id, plan_task.id),
            );
            report.round = state.round;
            report.base = Some(base.clone());
            state
                .attempts
                .push(AttemptState::new(report, AttemptPhase::Queued));
            self.queue.push_back((task, state.attempts.len() - 1));
        }
        let round = state.round;
        let (id, attempts) = (plan_task.id.clone(), plan_task.attempts);
        self.ensure_baseline(task, &base);
        self.note(Note::TaskStarted {
            task: id,
            base,
            attempts,
        });
        self.mark("rebase", Some(task), format!("round {round}: {why}"));
    }

    /// Moves the integration on as far as it can go without waiting for a worker.
    pub(super) async fn advance_integration(&mut self) {
        if self.cancelling.is_some() || self.error.is_some() || self.integration.finished {
            return;
        }
        if !self
            .tasks
            .iter()
            .all(|t| matches!(t.phase, TaskPhase::Done(_)))
        {
            return;
        }
        if let Err(err) = self.integrate().await {
            self.error = Some(format!("could not integrate the winners: {err}"));
        }
    }

    async fn integrate(&mut self) -> Result<(), merge::MergeError> {
        if !self.integration.started {
            self.integration.started = true;
            self.integration.order = self.dag.order();
            self.integration.current = self.ctx.plan.base_commit.clone();
            let winners = self.tasks.iter().filter(|t| t.winner.is_some()).count();
            if winners > 0 {
                self.note(Note::Info(format!("integrating {winners} winner(s)")));
            }
            self.mark(
                "integration_started",
                None,
                format!("{winners} winner(s) to integrate"),
            );
        }
        match self.integration.waiting.take() {
            None | Some(Waiting::Rebase) => {}
            Some(Waiting::Resolution {
                task,
                attempt,
                conflict,
                paths,
            }) => {
                if self.tasks[task].attempts[attempt].phase != AttemptPhase::Done {
                    self.integration.waiting = Some(Waiting::Resolution {
                        task,
                        attempt,
                        conflict,
                        paths,
                    });
                    return Ok(());
                }
                if !self.judge_resolution(task, attempt, conflict, &paths)? {
                    self.integration.next += 1;
                }
            }
        }
        while let Some(&t) = self.integration.order.get(self.integration.next) {
            let Some(winner) = self.winner_commit(t) else {
                self.integration.next += 1;
                continue;
            };
            let id = self.ctx.plan.tasks[t].id.clone();
            let rebased_for = self
                .integration
                .rebased_for
                .iter()
                .rposition(|(task, _)| *task == t)
                .map(|i| self.integration.rebased_for.remove(i).1);
            if self.tasks[t].rebase_failed {
                self.tasks[t].rebase_failed = false;
                if let Some(c) = rebased_for {
                    let conflict = &mut self.conflicts[c];
                    conflict.resolution = Resolution::LeftOut;
                    conflict.outcome = format!(
                        "re-ran {id} on top of the integration, but no attempt passed; {id} left out of the result"
                    );
                }
                self.integration.next += 1;
                continue;
            }
            let current = self.integration.current.clone();
            let base = self.tasks[t].base.clone().unwrap_or_default();
            // A winner that started from exactly what is integrated so far (a task whose
            // deps were merged just as here) goes in as it is, keeping the history linear.
            let (step, route) = if self.merger.tree_of(&base)? == self.merger.tree_of(&current)? {
                (Step::Merged(winner), Route::FastForward)
            } else {
                let message = format!("braid: integrate {id}");
                self.merger
                    .merge_commits(&current, &winner, &message)
                    .await?
            };
            match step {
                Step::Merged(commit) => {
                    if let Some(c) = rebased_for {
                        let n = self.tasks[t].winner.unwrap_or_default();
                        let conflict = &mut self.conflicts[c];
                        conflict.resolution = Resolution::Rebased;
                        conflict.outcome = format!(
                            "re-ran {id} on top of the integration (round {}); its new winner #{n} went in",
                            self.tasks[t].round
                        );
                    }
                    self.integrated(t, commit, route_name(route));
                }
                Step::Conflict { tree, conflicts } => {
                    if let Some(c) = rebased_for {
                        let conflict = &mut self.conflicts[c];
                        conflict.resolution = Resolution::LeftOut;
                        conflict.outcome = format!(
                            "re-ran {id} on top of the integration, and it conflicted again"
                        );
                    }
                    if self.on_integration_conflict(t, tree, conflicts)? {
                        return Ok(());
                    }
                    self.integration.next += 1;
                }
            }
        }
        self.integration.finished = true;
        Ok(())
    }

    fn integrated(&mut self, t: usize, commit: String, route: &str) {
        let id = self.ctx.plan.tasks[t].id.clone();
        self.mark("integrated", Some(t), format!("{id} went in ({route})"));
        self.integration.steps.push(StepReport {
            task: id,
            route: route.to_owned(),
            commit: commit.clone(),
        });
        self.integration.current = commit;
        self.integration.integrated.push(t);
        self.integration.next += 1;
    }

    /// Records a conflict between task `t`'s winner and the integration, and applies the
    /// task's strategy. Returns whether the integration now waits for workers.
    fn on_integration_conflict(
        &mut self,
        t: usize,
        tree: String,
        conflicts: Vec<PathConflict>,
    ) -> Result<bool, merge::MergeError> {
        let id = self.ctx.plan.tasks[t].id.clone();
        let paths: Vec<String> = conflicts.iter().map(|c| c.path.clone()).collect();
        let done: Vec<DepWinner> = self
            .integration
            .integrated
            .iter()
            .filter_map(|&d| self.dep_winner(d))
            .collect();
        let done_refs: Vec<&DepWinner> = done.iter().collect();
        let mut tasks = merge::culprits(&self.merger, &done_refs, &paths)?;
        tasks.push(id.clone());
        let index = self.conflicts.len();
        self.conflicts.push(ConflictReport {
            tasks: tasks.clone(),
            paths: paths.clone(),
            stage: "integration".into(),
            outcome: format!("{id} left out of the result"),
            resolution: Resolution::LeftOut,
            details: conflicts.clone(),
            at_ms: self.now_ms(),
        });
        self.note(Note::Info(format!(
            "conflict: {} in {}",
            tasks.join(" × "),
            paths.join(", ")
        )));
        self.mark(
            "conflict",
            Some(t),
            format!("{} conflict in {}", tasks.join(" and "), paths.join(", ")),
        );
        let plan_task = &self.ctx.plan.tasks[t];
        match plan_task.on_conflict {
            OnConflict::Rebase if self.tasks[t].round < self.ctx.plan.merge.max_rebases => {
                let current = self.integration.current.clone();
                // Settled only once the re-run's winner has gone in.
                self.conflicts[index].outcome =
                    format!("re-running {id} on top of the integration so far");
                self.integration.rebased_for.push((t, index));
                self.integration.waiting = Some(Waiting::Rebase);
                self.rerun(
                    t,
                    current,
                    "its winner conflicts with the integration so far",
                );
                Ok(true)
            }
            OnConflict::Agent if !self.integration.resolution_tried.contains(&t) => {
                self.start_resolution(t, index, &tree, &conflicts, &tasks)?;
                Ok(true)
            }
            OnConflict::Rebase => {
                self.conflicts[index].outcome = format!(
                    "{id} left out of the result: it was re-run {} time(s), the most `max_rebases` allows",
                    self.tasks[t].round
                );
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    /// Queues an attempt of `t`'s agent on the conflicted merge, markers and all.
    fn start_resolution(
        &mut self,
        t: usize,
        conflict: usize,
        tree: &str,
        conflicts: &[PathConflict],
        tasks: &[String],
    ) -> Result<(), merge::MergeError> {
        let plan = &self.ctx.plan;
        let id = plan.tasks[t].id.clone();
        let winner = self.winner_commit(t).unwrap_or_default();
        let current = self.integration.current.clone();
        // merge-tree labels the sides with commit ids; name them for the agent.
        let mut files = Vec::new();
        for c in conflicts {
            if let Some(text) = self.merger.read_text(tree, &c.path)?
                && hunks::has_markers(&text)
            {
                let relabelled = hunks::relabel(&text, "integration so far", "base", &id);
                files.push((c.path.clone(), relabelled.into_bytes()));
            }
        }
        let tree = self.merger.replace_files(tree, &files)?;
        let message = format!("braid: conflict integrating {id}, left for its agent to resolve");
        let base = self.merger.commit(&tree, &[&current, &winner], &message)?;

        let others: Vec<&str> = tasks
            .iter()
            .map(String::as_str)
            .filter(|o| *o != id)
            .collect();
        let mut prompt = format!(
            "Resolve a merge conflict.\n\n\
             The winner of task {id:?} conflicts with the work already integrated \
             (from {}). This worktree holds the merge with conflict markers \
             (<<<<<<<, |||||||, =======, >>>>>>>) in the conflicted files. Edit them so \
             that both sides' intent is kept, and remove every marker. Do not commit; \
             braid commits what you leave.\n\nConflicted paths:\n",
            if others.is_empty() {
                "earlier tasks".to_owned()
            } else {
                others.join(", ")
            }
        );
        for c in conflicts {
            prompt.push_str(&format!("- {} ({})\n", c.path, c.kind.name()));
        }
        prompt.push_str(&format!(
            "\nIntent of {id} (the incoming side):\n\n{}\n",
            plan.tasks[t].prompt.trim_end()
        ));
        for other in &others {
            if let Some(task) = plan.tasks.iter().find(|p| p.id == *other) {
                prompt.push_str(&format!(
                    "\nIntent of {other} (already integrated):\n\n{}\n",
                    task.prompt.trim_end()
                ));
            }
        }

        let n = self.next_n(t);
        let state = &mut self.tasks[t];
        let mut report = AttemptReport::empty(n, &format!("braid/{}/{id}/{n}", self.ctx.run_id));
        report.kind = AttemptKind::Resolution;
        report.base = Some(base);
        let mut attempt = AttemptState::new(report, AttemptPhase::Queued);
        attempt.prompt = Some(prompt);
        attempt.extra_checks = plan.merge.verify.clone();
        state.attempts.push(attempt);
        let index = state.attempts.len() - 1;
        self.queue.push_back((t, index));
        self.integration.resolution_tried.insert(t);
        self.integration.waiting = Some(Waiting::Resolution {
            task: t,
            attempt: index,
            conflict,
            paths: conflicts.iter().map(|c| c.path.clone()).collect(),
        });
        self.conflicts[conflict].outcome = format!("{id}'s agent is resolving it (attempt {n})");
        self.note(Note::Info(format!(
            "asking {id}'s agent to resolve the conflict (attempt {n})"
        )));
        self.mark(
            "resolution_started",
            Some(t),
            format!("attempt {n} resolves the conflict"),
        );
        Ok(())
    }

    /// Takes or refuses a finished resolution attempt; says whether it was taken.
    fn judge_resolution(
        &mut self,
        t: usize,
        attempt: usize,
        conflict: usize,
        paths: &[String],
    ) -> Result<bool, merge::MergeError> {
        let id = self.ctx.plan.tasks[t].id.clone();
        let report = self.tasks[t].attempts[attempt].report.clone();
        let n = report.n;
        let refused = match (&report.status, &report.commit) {
            (AttemptStatus::Succeeded, Some(commit)) => {
                let tree = self.merger.tree_of(commit)?;
                let mut marked = Vec::new();
                for path in paths {
                    if self
                        .merger
                        .read_text(&tree, path)?
                        .is_some_and(|text| hunks::has_markers(&text))
                    {
                        marked.push(path.clone());
                    }
                }
                (!marked.is_empty())
                    .then(|| format!("conflict markers remain in {}", marked.join(", ")))
            }
            (status, _) => Some(format!(
                "the attempt {}",
                report
                    .error
                    .clone()
                    .unwrap_or_else(|| crate::report::word(status))
            )),
        };
        if let Some(why) = refused {
            let state = &mut self.tasks[t].attempts[attempt].report;
            if state.status == AttemptStatus::Succeeded {
                state.status = AttemptStatus::Failed;
                state.error = Some(format!("resolution refused: {why}"));
            }
            let c = &mut self.conflicts[conflict];
            c.resolution = Resolution::LeftOut;
            c.outcome = format!(
                "{id}'s agent could not resolve it (attempt {n}: {why}); {id} left out of the result"
            );
            self.note(Note::Info(format!("resolution refused: {why}")));
            self.mark("resolution", Some(t), format!("attempt {n} refused: {why}"));
            return Ok(false);
        }
        let commit = report.commit.unwrap_or_default();
        let tree = self.merger.tree_of(&commit)?;
        let current = self.integration.current.clone();
        let winner = self.winner_commit(t).unwrap_or_default();
        let message =
            format!("braid: integrate {id} (conflict resolved by its agent, attempt {n})");
        let merged = self.merger.commit(&tree, &[&current, &winner], &message)?;
        let c = &mut self.conflicts[conflict];
        c.resolution = Resolution::Resolved;
        c.outcome = format!(
            "resolved by {id}'s agent (attempt {n}); its checks and the verify checks passed"
        );
        self.mark(
            "resolution",
            Some(t),
            format!("attempt {n} resolved the conflict"),
        );
        self.integrated(t, merged, "resolved");
        Ok(true)
    }
}

fn route_name(route: Route) -> &'static str {
    match route {
        Route::UpToDate => "up-to-date",
        Route::FastForward => "fast-forward",
        Route::Composed => "composed",
        Route::MergeOrt => "merge-ort",
    }
}
