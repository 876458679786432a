//! The merger's side of the loop: trial merges while tasks run, then the integration of
//! the winners in dependency order, with each task's conflict strategy.
//!
//! Integration runs inside the loop because two strategies need workers: `rebase` queues
//! the task's attempts again on top of the integration so far, and `agent` queues a
//! resolution attempt whose worktree holds the conflicted merge. The integration waits for
//! them and goes on where it stopped. Its merges, and the trial merges, run as units off
//! the loop ([`super::units`]): a long one holds up neither results nor heartbeats.

use std::collections::{HashSet, VecDeque};

use super::units::{self, Found, Rebased, Side, StepDone, Trials};
use super::{AttemptPhase, AttemptState, Scheduler, TaskPhase};
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
    /// The merge of task `task`'s step runs.
    Step { task: usize },
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
    /// against it, in a unit off the loop; the task's dependents wait for it. A foreseen
    /// conflict is shown at once; under `rebase` it starts the later task again on top of
    /// the earlier one's winner, when nothing has started from the later task's winner yet.
    pub(super) fn trial_merges(&mut self, task: usize) {
        if self.integration.started {
            return;
        }
        let Some(mine) = self.side(task) else {
            return;
        };
        let related = self.dag.related(task);
        let others: Vec<(Side, bool)> = related
            .iter()
            .enumerate()
            .filter(|&(o, &ordered)| {
                o != task
                    && !ordered
                    && self.tasks[o].phase == TaskPhase::Done(TaskStatus::Succeeded)
            })
            .filter_map(|(o, _)| Some((self.side(o)?, self.positions[o] < self.positions[task])))
            .collect();
        if others.is_empty() {
            return;
        }
        self.hold(task);
        let merger = self.merger.clone();
        self.offload("trial-merges", units::trials(merger, mine, others));
    }

    /// Task `t`'s winner as a side of a trial merge.
    fn side(&self, t: usize) -> Option<Side> {
        Some(Side {
            task: t,
            base: self.tasks[t].base.clone()?,
            commit: self.winner_commit(t)?,
            footprint: self.tasks[t].footprint.clone(),
        })
    }

    /// Keeps the dependents of `t` waiting for a unit, and keeps a slot for them meanwhile:
    /// otherwise the slot `t`'s attempt just freed goes to a lower task while the trial
    /// merges run, and the next task of the longest chain waits for another slot to free
    /// up (measured on `braid-bench makespan`: 50-120 ms per task of the chain while the
    /// slots were full).
    fn hold(&mut self, t: usize) {
        self.tasks[t].holds += 1;
        if !self.dag.dependents(t).is_empty() {
            self.queue.hold(t);
        }
    }

    /// Lets the dependents of `t` start once nothing holds it any more.
    pub(super) fn unhold(&mut self, t: usize) {
        if !self.dag.dependents(t).is_empty() {
            self.queue.unhold(t);
        }
        let holds = &mut self.tasks[t].holds;
        *holds = holds.saturating_sub(1);
        if *holds == 0 {
            self.start_dependents(t);
        }
    }

    /// The trial merges of a new winner are done: keeps what was read and tells the
    /// conflicts, those of winners that have since changed aside.
    pub(super) fn trials_done(&mut self, trials: Trials) {
        for (t, commit, footprint) in trials.footprints {
            if self.winner_commit(t).as_ref() == Some(&commit) {
                self.tasks[t].footprint = Some(footprint);
            }
        }
        let found = trials
            .found
            .into_iter()
            .filter(|f| self.stands(&f.first) && self.stands(&f.second))
            .collect();
        self.tell_conflicts(trials.task, found);
    }

    /// Whether the winner of a task is still the one a unit read.
    fn stands(&self, (t, commit): &(usize, String)) -> bool {
        self.tasks[*t].phase == TaskPhase::Done(TaskStatus::Succeeded)
            && self.winner_commit(*t).as_ref() == Some(commit)
    }

    /// Tells the foreseen conflicts of `task`'s trial merges in order; one whose later
    /// task can start again from the earlier's winner waits for that base's merge, in a
    /// unit, and the rest after it. Releases `task` once all are told.
    fn tell_conflicts(&mut self, task: usize, mut found: VecDeque<Found>) {
        while let Some(f) = found.pop_front() {
            match self.rebase_plan(f.first.0, f.second.0) {
                Ok((base, message)) => {
                    let later = f.second.0;
                    self.hold(later);
                    let merger = self.merger.clone();
                    let unit = units::rebase_base(merger, task, f, found, base, message);
                    self.offload("rebase-base", unit);
                    return;
                }
                Err(why) => self.predicted(&f, format!("left to the integration ({why})")),
            }
        }
        self.unhold(task);
    }

    /// The new base of a later task is merged (or not): starts the task again from it,
    /// tells the conflict, and goes on with the rest.
    pub(super) fn rebased(&mut self, rebased: Rebased) {
        let Rebased {
            task,
            found,
            rest,
            base,
            outcome,
        } = rebased;
        let ((earlier, _), (later, _)) = (&found.first, &found.second);
        let (earlier, later) = (*earlier, *later);
        let (e, l) = (
            self.ctx.plan.tasks[earlier].id.clone(),
            self.ctx.plan.tasks[later].id.clone(),
        );
        let moved = !(self.stands(&found.first)
            && self.stands(&found.second)
            && self.tasks[later].base.as_ref() == Some(&base));
        let action = match outcome {
            _ if moved => Err(format!("the winners of {e} and {l} changed meanwhile")),
            Ok(Step::Merged(new_base)) => {
                let why = format!("re-running {l} on top of the winner of {e}");
                self.rerun(later, new_base, &why);
                Ok(why)
            }
            Ok(Step::Conflict { .. }) => {
                Err(format!("the winner of {e} conflicts with the base of {l}"))
            }
            Err(err) => Err(format!("could not merge a new base for {l}: {err}")),
        };
        let rerun = action.is_ok();
        let action = action.unwrap_or_else(|why| format!("left to the integration ({why})"));
        self.predicted(&found, action);
        self.unhold(later);
        if rerun && later == task {
            self.unhold(task);
            return;
        }
        self.tell_conflicts(task, rest);
    }

    /// Records a conflict a trial merge foresaw, and what was done about it.
    fn predicted(&mut self, found: &Found, action: String) {
        let (a, b) = (
            self.ctx.plan.tasks[found.first.0].id.clone(),
            self.ctx.plan.tasks[found.second.0].id.clone(),
        );
        let paths: Vec<String> = found.conflicts.iter().map(|c| c.path.clone()).collect();
        self.note(Note::Info(format!(
            "predicted conflict: {a} × {b} in {}; {action}",
            paths.join(", ")
        )));
        self.mark(
            "predicted_conflict",
            Some(found.second.0),
            format!(
                "trial merge of {a} and {b} conflicts in {}; {action}",
                paths.join(", ")
            ),
        );
        self.predicted.push(Prediction {
            tasks: vec![a, b],
            paths,
            details: found.conflicts.clone(),
            at_ms: self.now_ms(),
            action,
        });
    }

    /// Under `rebase`, the base to start `later` again from and the message of its merge
    /// with `earlier`'s winner; or why it does not start again.
    fn rebase_plan(&self, earlier: usize, later: usize) -> Result<(String, String), String> {
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
        let Some(base) = self.tasks[later].base.clone() else {
            return Err(format!("{l} has no base to start again from"));
        };
        Ok((
            base,
            format!("braid: start {l} again from its base and the winner of {e}"),
        ))
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

    /// Moves the integration on as far as it can go without waiting for a worker or for
    /// the merge of a step.
    pub(super) fn advance_integration(&mut self) {
        if self.cancelling.is_some() || self.error.is_some() || self.integration.finished {
            return;
        }
        if !self
            .tasks
            .iter()
            .all(|t| matches!(t.phase, TaskPhase::Done(_)) && t.holds == 0)
        {
            return;
        }
        if let Err(err) = self.integrate() {
            self.fail_integration(err);
        }
    }

    fn fail_integration(&mut self, err: merge::MergeError) {
        self.error = Some(format!("could not integrate the winners: {err}"));
    }

    fn integrate(&mut self) -> Result<(), merge::MergeError> {
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
            Some(waiting @ Waiting::Step { .. }) => {
                self.integration.waiting = Some(waiting);
                return Ok(());
            }
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
            if self.merger.tree_of(&base)? != self.merger.tree_of(&current)? {
                // The merge itself runs off the loop; the step goes on when it is done.
                self.integration.waiting = Some(Waiting::Step { task: t });
                let message = format!("braid: integrate {id}");
                let merger = self.merger.clone();
                let unit = units::step(merger, t, rebased_for, current, winner, message);
                self.offload("integration-step", unit);
                return Ok(());
            }
            if self.apply_step(t, rebased_for, Step::Merged(winner), Route::FastForward)? {
                return Ok(());
            }
        }
        self.integration.finished = true;
        self.start_verification();
        Ok(())
    }

    /// The merge of an integration step is done: takes it in, and the integration goes
    /// on at the loop's next settling.
    pub(super) fn step_done(&mut self, done: StepDone) {
        if !matches!(self.integration.waiting, Some(Waiting::Step { task }) if task == done.task) {
            return;
        }
        self.integration.waiting = None;
        let applied = done
            .outcome
            .and_then(|(step, route)| self.apply_step(done.task, done.rebased_for, step, route));
        if let Err(err) = applied {
            self.fail_integration(err);
        }
    }

    /// Takes the step of task `t` into the integration. Returns whether the integration
    /// now waits for workers.
    fn apply_step(
        &mut self,
        t: usize,
        rebased_for: Option<usize>,
        step: Step,
        route: Route,
    ) -> Result<bool, merge::MergeError> {
        let id = self.ctx.plan.tasks[t].id.clone();
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
                Ok(false)
            }
            Step::Conflict { tree, conflicts } => {
                if let Some(c) = rebased_for {
                    let conflict = &mut self.conflicts[c];
                    conflict.resolution = Resolution::LeftOut;
                    conflict.outcome =
                        format!("re-ran {id} on top of the integration, and it conflicted again");
                }
                if self.on_integration_conflict(t, tree, conflicts)? {
                    return Ok(true);
                }
                self.integration.next += 1;
                Ok(false)
            }
        }
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
