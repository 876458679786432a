//! The record of a run: report.json (the contract's fields and more), report.md, and the
//! summary table printed at the end.
//!
//! Invariant: rendering is pure; writing touches only the run's state directory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::merge::PathConflict;

pub mod compare;
mod conflicts;
mod html;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every task has a winner, the integration is clean and its verification passed.
    Succeeded,
    /// The run finished but something failed.
    Failed,
    /// The run was interrupted.
    Cancelled,
    /// The run's process died without ending it (SIGKILL, a crash); a later braid command
    /// found it and cleaned up after it.
    Crashed,
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// It has a winner.
    Succeeded,
    /// No attempt qualified.
    Failed,
    /// It never ran: a dependency failed or its dependencies' winners conflict.
    Blocked,
    /// The run was interrupted before it finished.
    Cancelled,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptStatus {
    /// The agent finished with a change and every check passed.
    Succeeded,
    /// The agent failed or changed nothing, or a check failed.
    Failed,
    /// The agent ran past its timeout.
    TimedOut,
    /// The run was interrupted.
    Cancelled,
    /// Its worker was lost more often than braid retries.
    Lost,
    /// The agent printed nothing for the stall limit and was stopped.
    Stalled,
    /// The agent spent past the attempt's budget and was stopped.
    OverBudget,
}

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Exit code 0.
    Passed,
    /// Any other ending.
    Failed,
    /// Not run.
    Skipped,
    /// Ran past its timeout.
    TimedOut,
    /// Already failing on the base, so not blamed on the attempt.
    PreExisting,
}

/// A whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The run id.
    pub run: String,
    /// The plan's label.
    pub name: Option<String>,
    /// How the run ended.
    pub status: RunStatus,
    /// The repository's working tree.
    pub repo: String,
    /// The base commit.
    pub base: String,
    /// The base revision as written in the plan.
    pub base_rev: String,
    /// The plan file.
    pub plan: String,
    /// When the run started (RFC 3339, UTC).
    pub started_at: String,
    /// Wall-clock time of the whole run.
    pub duration_ms: u64,
    /// The integration of all winners.
    pub result: ResultReport,
    /// The tasks, in plan order.
    pub tasks: Vec<TaskReport>,
    /// The workers that served the run.
    pub workers: Vec<WorkerReport>,
    /// What happened when, in order: tasks starting, winners, predicted conflicts,
    /// re-runs and integration steps.
    #[serde(default)]
    pub timeline: Vec<TimelineEntry>,
    /// The run's state directory (reports and logs).
    pub state_dir: String,
    /// What the whole run's attempts spent.
    #[serde(default)]
    pub usage: Usage,
    /// Why braid stopped starting attempts before the plan was done: a provider's terminal
    /// refusal of an agent, the run's budget spent. Each a sentence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stopped: Vec<String>,
    /// Tasks the DAG did not order whose `touches` overlap, found before anything ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overlaps: Vec<crate::plan::Overlap>,
    /// What made the plan a poor judge of its attempts, found before anything ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The planning agent that made the plan from a goal (`braid run --goal`); its usage
    /// is in the run's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planner: Option<crate::planner::PlannerReport>,
    /// Each fanned task's burndown: its targets counted by how they ended, and the ones
    /// that did not succeed, with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<Burndown>,
    /// The earlier run whose failures this one ran again (`braid run --rerun-failed`);
    /// the tasks it had won say `carried_from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<String>,
    /// How `braid publish` paces itself, as the plan said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<crate::plan::Publish>,
    /// A batch over repositories: each repository's run and result. Such a run belongs to
    /// no one repository; its report is in braid's cache (`$BRAID_CACHE/runs/<run>/`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repos: Vec<RepoResult>,
}

/// One repository of a batch over repositories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepoResult {
    /// As the plan names it.
    pub repo: String,
    /// Its target's task.
    pub task: String,
    /// braid's clone of it, in the cache, where the run's branches are.
    pub clone: String,
    /// The run in that clone (`<run>-<slug>`); its report is in the clone's state folder.
    pub run: Option<String>,
    pub status: TaskStatus,
    /// The commit its run started from.
    pub base: Option<String>,
    /// Its result branch in the clone, and commit.
    pub branch: Option<String>,
    pub commit: Option<String>,
    /// Why it did not run or did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The earlier run whose result this one carries over (`--rerun-failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carried_from: Option<String>,
}

/// The integration of the winners.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResultReport {
    /// The result branch.
    pub branch: String,
    /// Its commit; `null` when nothing was integrated.
    pub commit: Option<String>,
    /// Tasks whose winners are in the result, in the order they were integrated.
    pub integrated: Vec<String>,
    /// Conflicts met while starting tasks from their deps or integrating winners.
    pub conflicts: Vec<ConflictReport>,
    /// Conflicts foreseen by trial merges while tasks were still running.
    #[serde(default)]
    pub predicted: Vec<Prediction>,
    /// How each winner went into the result, in order.
    #[serde(default)]
    pub steps: Vec<StepReport>,
    /// The `merge.verify` checks run on the result.
    pub verify: Vec<CheckReport>,
}

/// A merge conflict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictReport {
    /// The tasks whose changes conflict.
    pub tasks: Vec<String>,
    /// The conflicted paths.
    pub paths: Vec<String>,
    /// Where it was met: `dependencies` (starting a task) or `integration`.
    pub stage: String,
    /// What braid did about it, in a sentence.
    pub outcome: String,
    /// How it ended.
    pub resolution: Resolution,
    /// Each conflicted path with its kind, and for text conflicts the hunks.
    #[serde(default)]
    pub details: Vec<PathConflict>,
    /// When it was met, in milliseconds after the run started.
    #[serde(default)]
    pub at_ms: u64,
}

impl ConflictReport {
    /// Whether braid got past it: the later task was re-run or an agent resolved it.
    pub fn settled(&self) -> bool {
        matches!(self.resolution, Resolution::Rebased | Resolution::Resolved)
    }
}

/// How a conflict ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// The later winner was left out of the result.
    LeftOut,
    /// The task that needed both sides could not start.
    Blocked,
    /// The later task was re-run on top of the integration and its new winner went in.
    Rebased,
    /// The task's agent resolved the conflict and its resolution went in.
    Resolved,
}

/// A conflict a trial merge foresaw while tasks were running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prediction {
    /// The two tasks, in integration order.
    pub tasks: Vec<String>,
    /// The conflicted paths.
    pub paths: Vec<String>,
    /// Each path's kind and hunks.
    pub details: Vec<PathConflict>,
    /// When it was foreseen, in milliseconds after the run started.
    pub at_ms: u64,
    /// What braid did about it.
    pub action: String,
}

/// One winner going into the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepReport {
    /// The task.
    pub task: String,
    /// How: `composed` (disjoint changes, trees edited), `merge-ort` (a full merge),
    /// `fast-forward`, `up-to-date`, or `resolved` (an agent's resolution).
    pub route: String,
    /// The integration's commit after the step.
    pub commit: String,
}

/// Something that happened during a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// Milliseconds after the run started.
    pub at_ms: u64,
    /// What: `task_started`, `winner`, `predicted_conflict`, `rebase`, `integration_started`,
    /// `integrated`, `conflict`, `resolution_started`, `resolution`.
    pub event: String,
    /// The task it concerns, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// A sentence.
    pub detail: String,
}

/// One task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskReport {
    /// The task's id.
    pub id: String,
    /// How it ended.
    pub status: TaskStatus,
    /// Its deps.
    pub deps: Vec<String>,
    /// The commit its attempts started from; `null` when it never started.
    pub base: Option<String>,
    /// The winner's branch.
    pub branch: Option<String>,
    /// The winning attempt's number.
    pub winner: Option<u32>,
    /// Why the winner won, or why the task failed or was blocked.
    pub reason: Option<String>,
    /// How the winner was picked: `best`, `first-pass` or `vote`.
    #[serde(default)]
    pub select: String,
    /// The checks as they ran on the task's base, to tell failures the base already had
    /// (`pre_existing`) from failures an attempt caused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baseline: Vec<CheckReport>,
    /// The attempts, by number.
    pub attempts: Vec<AttemptReport>,
    /// What the task's attempts spent together, and its judge.
    #[serde(default)]
    pub usage: Usage,
    /// The judge's tournament, for `select: judge` with two passing attempts or more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<crate::judge::JudgeReport>,
    /// The earlier run whose winner this task carries over (`braid run --rerun-failed`):
    /// its attempts are that run's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carried_from: Option<String>,
    /// A target's own branch from the run's base (`braid run --per-target`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own_branch: Option<OwnBranch>,
}

/// A target's change alone, on the run's base.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnBranch {
    /// `braid/<run>/<task>/target`.
    pub branch: String,
    /// Its commit; `null` when the change does not apply to the base without its deps'.
    pub commit: Option<String>,
    /// Where it conflicts with the base then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
}

/// One attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptReport {
    /// The attempt's number, 1-based.
    pub n: u32,
    /// How it ended.
    pub status: AttemptStatus,
    /// Its branch.
    pub branch: String,
    /// Its commit; `null` when it produced none.
    pub commit: Option<String>,
    /// The worker that ran it last.
    pub worker: Option<String>,
    /// Wall-clock time on the worker.
    pub duration_ms: u64,
    /// Time the worker took, before the attempt, to fetch what it lacked of the
    /// repository; left out when it had it all.
    #[serde(default, skip_serializing_if = "is_zero_ms")]
    pub fetch_ms: u64,
    /// The change against the task's base.
    pub diff: DiffReport,
    /// The checks, in plan order.
    pub checks: Vec<CheckReport>,
    /// The agent: a preset's name, `command`.
    #[serde(default)]
    pub agent: Option<String>,
    /// The model it asked for; `null` when the plan named none.
    #[serde(default)]
    pub model: Option<String>,
    /// Tokens, turns and cost, where the agent reports them.
    pub usage: Usage,
    /// The agent's final message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_message: Option<String>,
    /// The agent's events, normalised (`logs/<task>.<n>.events.jsonl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<String>,
    /// Why it failed, in a sentence.
    pub error: Option<String>,
    /// The agent's log file.
    pub log: Option<String>,
    /// The agent's exit code, when it exited by itself.
    pub agent_exit_code: Option<i32>,
    /// How often its worker was lost and it was run again.
    pub lost: u32,
    /// When it was assigned, in milliseconds after the run started.
    pub started_ms: Option<u64>,
    /// When its result arrived, in milliseconds after the run started.
    pub finished_ms: Option<u64>,
    /// What the attempt was for.
    #[serde(default, skip_serializing_if = "AttemptKind::is_task")]
    pub kind: AttemptKind,
    /// Which re-run on top of the integration it belongs to; 0 for the first round.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub round: u32,
    /// The commit it started from, when not the task's first base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// What its score command printed; `null` when there is none.
    #[serde(default)]
    pub score: Option<f64>,
    /// Why its score command gave no score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_error: Option<String>,
    /// What braid undid after the attempt's processes: changes to its git folder or `.git`
    /// file, branches it made, processes that outlived it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contained: Vec<String>,
    /// The attempt this one continues, as a feedback retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continues: Option<u32>,
}

fn is_zero_ms(n: &u64) -> bool {
    *n == 0
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How the targets of one fanned task ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Burndown {
    /// The task as written, with `for_each`.
    pub task: String,
    /// Its targets.
    pub total: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub blocked: u32,
    pub cancelled: u32,
    /// The targets that did not succeed, in plan order.
    pub unfinished: Vec<UnfinishedTarget>,
}

impl Burndown {
    /// Counts one more target, `task` in `dir` (a folder or a repository), that ended so.
    pub fn count(&mut self, task: &str, dir: &str, status: TaskStatus, reason: Option<&str>) {
        self.total += 1;
        match status {
            TaskStatus::Succeeded => self.succeeded += 1,
            TaskStatus::Failed => self.failed += 1,
            TaskStatus::Blocked => self.blocked += 1,
            TaskStatus::Cancelled => self.cancelled += 1,
        }
        if status != TaskStatus::Succeeded {
            self.unfinished.push(UnfinishedTarget {
                task: task.to_owned(),
                dir: dir.to_owned(),
                status,
                reason: reason.map(str::to_owned),
            });
        }
    }
}

/// A target that did not succeed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnfinishedTarget {
    /// Its task's id.
    pub task: String,
    /// Its folder.
    pub dir: String,
    pub status: TaskStatus,
    /// Why, in a sentence.
    pub reason: Option<String>,
}

/// The burndown of each fanned task of `plan`, from how its targets' tasks ended.
pub fn burndown(plan: &crate::plan::Plan, tasks: &[TaskReport]) -> Vec<Burndown> {
    let mut out: Vec<Burndown> = Vec::new();
    for (planned, ended) in plan.tasks.iter().zip(tasks) {
        let Some(target) = &planned.target else {
            continue;
        };
        let at = match out.iter().position(|b| b.task == target.task) {
            Some(at) => at,
            None => {
                out.push(Burndown {
                    task: target.task.clone(),
                    ..Default::default()
                });
                out.len() - 1
            }
        };
        out[at].count(
            &ended.id,
            &target.dir,
            ended.status,
            ended.reason.as_deref(),
        );
    }
    out
}

/// What an attempt was for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptKind {
    /// The task itself.
    #[default]
    Task,
    /// Resolving a conflict between the task's winner and the integration.
    Resolution,
    /// The task's checks on its base commit; never in a report's attempts.
    Baseline,
    /// A judge's verdict on two passing attempts; in the task's `judge`, not its attempts.
    Review,
    /// The `merge.verify` checks on the integrated result; in the result's `verify`, never
    /// in a report's attempts.
    Verify,
}

impl AttemptKind {
    fn is_task(&self) -> bool {
        *self == AttemptKind::Task
    }

    /// Whether the job runs checks only, no agent: it spends nothing.
    pub fn runs_no_agent(&self) -> bool {
        matches!(self, AttemptKind::Baseline | AttemptKind::Verify)
    }
}

impl AttemptReport {
    /// An attempt that has not run yet.
    pub fn empty(n: u32, branch: &str) -> Self {
        AttemptReport {
            n,
            status: AttemptStatus::Cancelled,
            branch: branch.to_owned(),
            commit: None,
            worker: None,
            duration_ms: 0,
            fetch_ms: 0,
            diff: DiffReport::default(),
            checks: Vec::new(),
            agent: None,
            model: None,
            usage: Usage::default(),
            final_message: None,
            events: None,
            error: None,
            log: None,
            agent_exit_code: None,
            lost: 0,
            started_ms: None,
            finished_ms: None,
            kind: AttemptKind::Task,
            round: 0,
            base: None,
            score: None,
            score_error: None,
            continues: None,
            contained: Vec::new(),
        }
    }
}

/// Files and lines changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffReport {
    /// Files changed.
    pub files: u32,
    /// Lines added.
    pub insertions: u64,
    /// Lines removed.
    pub deletions: u64,
}

/// One check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckReport {
    /// The check's name.
    pub name: String,
    /// How it ended.
    pub status: CheckStatus,
    /// Its exit code, when it exited by itself.
    pub exit_code: Option<i32>,
    /// Wall-clock time.
    pub duration_ms: u64,
    /// Its log file.
    pub log: Option<String>,
    /// Why it was skipped or counts as `pre_existing`, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// A `per: package` check: the package it ran for, its folder, and why the change
    /// affects it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affected: Option<String>,
}

/// Tokens, turns and cost; `null` where unknown. Cached input tokens are part of the input
/// tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens, cached ones included.
    pub input_tokens: Option<u64>,
    /// Of those, read from the provider's cache.
    #[serde(default)]
    pub cached_input_tokens: Option<u64>,
    /// Output tokens.
    pub output_tokens: Option<u64>,
    /// Cost in US dollars: the agent's own figure, or braid's from its price table.
    pub cost_usd: Option<f64>,
    /// Model turns.
    #[serde(default)]
    pub turns: Option<u32>,
}

impl From<braid_shared::usage::Usage> for Usage {
    fn from(u: braid_shared::usage::Usage) -> Self {
        Usage {
            input_tokens: u.input,
            cached_input_tokens: u.cached,
            output_tokens: u.output,
            cost_usd: u.cost,
            turns: u.turns,
        }
    }
}

impl From<Usage> for braid_shared::usage::Usage {
    fn from(u: Usage) -> Self {
        braid_shared::usage::Usage {
            input: u.input_tokens,
            cached: u.cached_input_tokens,
            output: u.output_tokens,
            cost: u.cost_usd,
            turns: u.turns,
        }
    }
}

impl Usage {
    /// The sum of `usages`; a count none of them knows stays `null`.
    pub fn sum<'a>(usages: impl IntoIterator<Item = &'a Usage>) -> Usage {
        usages
            .into_iter()
            .fold(braid_shared::usage::Usage::default(), |acc, u| {
                acc.plus((*u).into())
            })
            .into()
    }

    /// Input plus output tokens, where known.
    pub fn tokens(&self) -> Option<u64> {
        braid_shared::usage::Usage::from(*self).tokens()
    }
}

/// A worker that served the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Its id for the run.
    pub id: String,
    /// The name it gave.
    pub name: String,
    /// Its slots.
    pub slots: u32,
}

impl Report {
    /// Writes report.json and report.md into `dir`; returns the JSON file's path.
    pub fn write(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let json = dir.join("report.json");
        let mut text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        text.push('\n');
        write_atomically(&json, text.as_bytes())?;
        write_atomically(&dir.join("report.md"), self.markdown().as_bytes())?;
        Ok(json)
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let title = self.name.as_deref().unwrap_or("run");
        let _ = writeln!(
            md,
            "# braid {title} `{}`: {}\n",
            self.run,
            word(self.status)
        );
        if self.repos.is_empty() {
            let _ = writeln!(md, "- Repository: `{}`", self.repo);
        } else {
            let _ = writeln!(md, "- Repositories: {}", self.repos.len());
            for r in &self.repos {
                let _ = writeln!(
                    md,
                    "  - `{}`: {}{}{}",
                    r.repo,
                    word(r.status),
                    match (&r.branch, &r.commit) {
                        (Some(b), Some(c)) => format!(", `{b}` at {} in `{}`", short(c), r.clone),
                        _ => String::new(),
                    },
                    r.error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                );
            }
        }
        if self.repos.is_empty() {
            let _ = writeln!(md, "- Base: `{}` ({})", short(&self.base), self.base_rev);
        }
        let _ = writeln!(md, "- Plan: `{}`", self.plan);
        let _ = writeln!(
            md,
            "- Started: {}; took {}",
            self.started_at,
            seconds(self.duration_ms)
        );
        if self.repos.is_empty() {
            let _ = writeln!(
                md,
                "- Result: `{}` at {}",
                self.result.branch,
                self.result.commit.as_deref().map(short).unwrap_or("(none)")
            );
        }
        if self.usage != Usage::default() {
            let _ = writeln!(md, "- Spent: {}", self.usage.text());
        }
        for why in &self.stopped {
            let _ = writeln!(md, "- **Stopped early**: {why}");
        }
        if let Some(p) = &self.planner {
            let _ = writeln!(
                md,
                "- Planned by {} in {} round(s) from the goal: {}",
                p.agent,
                p.rounds,
                p.goal.lines().next().unwrap_or_default()
            );
        }
        for warning in &self.warnings {
            let _ = writeln!(md, "- Warning: {warning}");
        }
        if let Some(run) = &self.rerun_of {
            let carried = self
                .tasks
                .iter()
                .filter(|t| t.carried_from.is_some())
                .count();
            let _ = writeln!(
                md,
                "- Re-ran what run `{run}` did not win, from its base; {carried} of {} task(s) carried over its winners",
                self.tasks.len()
            );
        }
        md.push('\n');
        for b in &self.targets {
            let _ = writeln!(
                md,
                "## Targets of `{}`: {} of {} succeeded\n",
                b.task, b.succeeded, b.total
            );
            let _ = writeln!(
                md,
                "{} failed, {} blocked, {} cancelled.\n",
                b.failed, b.blocked, b.cancelled
            );
            for t in &b.unfinished {
                let _ = writeln!(
                    md,
                    "- `{}` (`{}`): {}{}",
                    t.task,
                    t.dir,
                    word(t.status),
                    t.reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                );
            }
            if !b.unfinished.is_empty() {
                md.push('\n');
            }
        }
        for task in &self.tasks {
            let _ = writeln!(md, "## Task `{}`: {}\n", task.id, word(task.status));
            if !task.deps.is_empty() {
                let _ = writeln!(md, "Depends on: {}.", task.deps.join(", "));
            }
            if let Some(base) = &task.base {
                let _ = writeln!(md, "Started from `{}`.", short(base));
            }
            if let Some(run) = &task.carried_from {
                let _ = writeln!(
                    md,
                    "Carried over from run `{run}`: its attempts below ran there."
                );
            }
            match (task.winner, &task.reason) {
                (Some(n), Some(reason)) => {
                    let _ = writeln!(
                        md,
                        "Winner: attempt {n} ({reason}), branch `{}`.",
                        task.branch.as_deref().unwrap_or("")
                    );
                }
                (None, Some(reason)) => {
                    let _ = writeln!(md, "No winner: {reason}.");
                }
                _ => {}
            }
            if !task.baseline.is_empty() {
                let _ = writeln!(md, "Checks on the base: {}.", checks_text(&task.baseline));
            }
            if !task.attempts.is_empty() {
                let _ = writeln!(
                    md,
                    "\n| attempt | status | agent | checks | score | diff | spent | duration | worker | note |"
                );
                let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|");
                for a in &task.attempts {
                    let mark = if task.winner == Some(a.n) { " ★" } else { "" };
                    let mut note: Vec<String> = Vec::new();
                    if let Some(p) = a.continues {
                        note.push(format!("continues {p}"));
                    }
                    note.extend(a.error.clone());
                    note.extend(a.score_error.clone());
                    let _ = writeln!(
                        md,
                        "| {}{mark} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                        a.n,
                        word(a.status),
                        agent_text(a),
                        checks_text(&a.checks),
                        a.score.map_or("-".into(), |s| s.to_string()),
                        diff_text(&a.diff, a.commit.is_some()),
                        a.usage.text(),
                        seconds(a.duration_ms),
                        a.worker.as_deref().unwrap_or("-"),
                        note.join("; ").replace('|', "\\|"),
                    );
                }
                let mut affected = String::new();
                for a in &task.attempts {
                    let mut by_check: Vec<(&str, Vec<String>)> = Vec::new();
                    for c in a.checks.iter().filter(|c| c.package.is_some()) {
                        let line = format!(
                            "{} {} ({})",
                            c.package.as_deref().unwrap_or_default(),
                            word(c.status),
                            c.affected.as_deref().unwrap_or_default()
                        );
                        match by_check.iter_mut().find(|(name, _)| *name == c.name) {
                            Some((_, lines)) => lines.push(line),
                            None => by_check.push((&c.name, vec![line])),
                        }
                    }
                    for (name, lines) in by_check {
                        let _ = writeln!(
                            affected,
                            "- Attempt {}, check `{name}`, per package: {}",
                            a.n,
                            lines.join("; ")
                        );
                    }
                }
                if !affected.is_empty() {
                    let _ = write!(md, "\nPackages the change affected:\n\n{affected}");
                }
            }
            md.push('\n');
        }
        let _ = writeln!(md, "## Integration\n");
        if self.result.integrated.is_empty() {
            let _ = writeln!(md, "Nothing was integrated.");
        } else {
            let _ = writeln!(
                md,
                "Integrated in order: {}.\n",
                self.result.integrated.join(", ")
            );
        }
        for step in &self.result.steps {
            let _ = writeln!(
                md,
                "- {}: {} → `{}`",
                step.task,
                step.route,
                short(&step.commit)
            );
        }
        self.conflicts_markdown(&mut md);
        if !self.result.verify.is_empty() {
            let _ = writeln!(md, "\n### Verification\n");
            for check in &self.result.verify {
                let _ = writeln!(
                    md,
                    "- {}: {} ({})",
                    check.name,
                    word(check.status),
                    seconds(check.duration_ms)
                );
            }
        }
        md
    }

    /// The table printed at the end of a run.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        // What stopped the run early comes first: it explains every row below.
        for why in &self.stopped {
            let _ = writeln!(out, "stopped: {why}");
        }
        for warning in &self.warnings {
            let _ = writeln!(out, "warning: {warning}");
        }
        let width = self
            .tasks
            .iter()
            .map(|t| t.id.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let _ = writeln!(
            out,
            "{:<width$}  {:<9}  {:<8}  {:<10}  attempts",
            "task", "status", "winner", "diff"
        );
        for task in &self.tasks {
            let winner = task
                .winner
                .and_then(|n| task.attempts.iter().find(|a| a.n == n));
            let attempts: Vec<String> = task
                .attempts
                .iter()
                .map(|a| format!("{}:{}", a.n, abbreviation(a.status)))
                .collect();
            let _ = writeln!(
                out,
                "{:<width$}  {:<9}  {:<8}  {:<10}  {}",
                task.id,
                word(task.status),
                task.winner
                    .map(|n| format!("#{n}"))
                    .unwrap_or_else(|| "-".into()),
                winner
                    .map(|a| diff_text(&a.diff, true))
                    .unwrap_or_else(|| "-".into()),
                attempts.join(" "),
            );
        }
        for task in &self.tasks {
            match (&task.carried_from, &task.reason) {
                (Some(run), _) => {
                    let _ = writeln!(out, "  {}: carried over from run {run}", task.id);
                }
                (None, Some(reason)) => {
                    let _ = writeln!(out, "  {}: {reason}", task.id);
                }
                (None, None) => {}
            }
        }
        for p in &self.result.predicted {
            let _ = writeln!(
                out,
                "predicted conflict at {}: {} in {} ({})",
                seconds(p.at_ms),
                p.tasks.join(" × "),
                p.paths.join(", "),
                p.action
            );
        }
        for c in &self.result.conflicts {
            let _ = writeln!(
                out,
                "conflict: {} in {} ({})",
                c.tasks.join(" × "),
                c.paths.join(", "),
                c.outcome
            );
        }
        for check in &self.result.verify {
            let _ = writeln!(out, "verify {}: {}", check.name, word(check.status));
        }
        if self.usage != Usage::default() {
            let _ = writeln!(out, "spent: {}", self.usage.text());
        }
        for r in &self.repos {
            match (&r.branch, &r.commit) {
                (Some(branch), Some(commit)) => {
                    let _ = writeln!(
                        out,
                        "{}: result {branch} at {} in {}",
                        r.repo,
                        short(commit),
                        r.clone
                    );
                }
                _ => {
                    let _ = writeln!(out, "{}: {}, no result", r.repo, word(r.status));
                }
            }
        }
        if self.repos.is_empty() {
            let _ = writeln!(
                out,
                "run {} {} in {}; result {} at {}",
                self.run,
                word(self.status),
                seconds(self.duration_ms),
                self.result.branch,
                self.result.commit.as_deref().map(short).unwrap_or("(none)")
            );
        } else {
            let done = self.repos.iter().filter(|r| r.commit.is_some()).count();
            let _ = writeln!(
                out,
                "run {} {} in {}; {done} of {} repositories have a result (publish them with `braid publish {}`)",
                self.run,
                word(self.status),
                seconds(self.duration_ms),
                self.repos.len(),
                self.run
            );
        }
        let _ = writeln!(out, "report: {}/report.md", self.state_dir);
        out
    }
}

/// The agent of an attempt, with its model: `codex gpt-5`.
pub fn agent_text(a: &AttemptReport) -> String {
    match (&a.agent, &a.model) {
        (Some(agent), Some(model)) => format!("{agent} {model}"),
        (Some(agent), None) => agent.clone(),
        _ => "-".into(),
    }
}

impl Usage {
    /// In a few words: `2,270 tokens (1,100 cached), $0.0078, 2 turns`; `-` when unknown.
    pub fn text(&self) -> String {
        let mut parts = Vec::new();
        if let Some(tokens) = self.tokens() {
            let mut t = format!("{} tokens", thousands(tokens));
            if let Some(cached) = self.cached_input_tokens.filter(|c| *c > 0) {
                t.push_str(&format!(" ({} cached)", thousands(cached)));
            }
            parts.push(t);
        }
        if let Some(cost) = self.cost_usd {
            parts.push(format!("${cost:.4}"));
        }
        if let Some(turns) = self.turns {
            parts.push(format!("{turns} turn{}", if turns == 1 { "" } else { "s" }));
        }
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join(", ")
        }
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Writes `path` through a temporary file, so a reader never sees half of it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// The lower-case word serde uses for a status.
pub fn word<T: Serialize>(status: T) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn abbreviation(status: AttemptStatus) -> &'static str {
    match status {
        AttemptStatus::Succeeded => "ok",
        AttemptStatus::Failed => "fail",
        AttemptStatus::TimedOut => "timeout",
        AttemptStatus::Cancelled => "cancel",
        AttemptStatus::Lost => "lost",
        AttemptStatus::Stalled => "stall",
        AttemptStatus::OverBudget => "budget",
    }
}

fn checks_text(checks: &[CheckReport]) -> String {
    if checks.is_empty() {
        return "-".into();
    }
    checks
        .iter()
        .map(|c| format!("{} {}", c.label(), word(c.status)))
        .collect::<Vec<_>>()
        .join(", ")
}

impl CheckReport {
    /// Its name, and the package it ran for: `unit[auth]`.
    pub fn label(&self) -> String {
        match &self.package {
            Some(package) => format!("{}[{package}]", self.name),
            None => self.name.clone(),
        }
    }
}

fn diff_text(diff: &DiffReport, has_commit: bool) -> String {
    if !has_commit {
        return "-".into();
    }
    format!("{}f +{} -{}", diff.files, diff.insertions, diff.deletions)
}

/// Milliseconds as seconds with one decimal.
pub fn seconds(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// The first 10 characters of a commit id.
pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(10)]
}
