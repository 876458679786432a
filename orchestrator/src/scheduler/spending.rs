//! What the run's agents spend and how their providers answer: the run's budget, and the
//! wall a provider puts up for good (quota exhausted, key refused). Past either, no attempt
//! starts: braid never sends a hundred more attempts into the same wall.

use braid_shared::proto::{self as pb, ProviderFault};

use super::{AttemptPhase, Scheduler};
use crate::plan::Agent;
use crate::report::AttemptStatus;

/// What stops attempts from starting.
#[derive(Debug, Default)]
pub(super) struct Spending {
    /// What every attempt's result reported so far.
    pub spent: braid_shared::usage::Usage,
    /// Agents whose provider refused for good, with the sentence that says so.
    pub walls: Vec<(AgentKey, String)>,
    /// Why the run's budget stops new attempts, once it does.
    pub over: Option<String>,
    /// Sentences for the report, in order.
    pub stopped: Vec<String>,
}

/// Names an agent as its provider sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AgentKey {
    preset: String,
    base_url: String,
    api_key_env: String,
}

impl AgentKey {
    fn of(agent: &Agent) -> Self {
        AgentKey {
            preset: agent.preset.clone(),
            base_url: agent.base_url.clone(),
            api_key_env: agent.api_key_env.clone(),
        }
    }
}

impl Scheduler {
    /// Takes in what a result says about spending and the provider.
    pub(super) fn spent(&mut self, task: usize, attempt: usize, result: &pb::AttemptResult) {
        if let Some(usage) = &result.usage {
            self.spending.spent = self.spending.spent.plus(usage.into());
        }
        let agent = super::agent_of(
            &self.ctx.plan.tasks[task],
            &self.tasks[task].attempts[attempt].report,
        )
        .clone();
        if result.provider_fault() == ProviderFault::Terminal {
            let key = AgentKey::of(&agent);
            if !self.spending.walls.iter().any(|(k, _)| *k == key) {
                let said = result.error.lines().next().unwrap_or_default();
                // The provider's words, without braid's "the agent exited with code 1: ".
                let said = match said.split_once(": ") {
                    Some((head, rest)) if head.starts_with("the agent") => rest,
                    _ => said,
                };
                let why = format!(
                    "the provider of agent {} refused for good: {}; braid started no more attempts on it",
                    agent.title(),
                    braid_worker::presets::cut(said, 200)
                );
                self.note(crate::progress::Note::Info(why.clone()));
                self.spending.stopped.push(why);
                self.spending.walls.push((
                    key,
                    format!("the provider of agent {} refused for good", agent.title()),
                ));
                self.sweep_queue();
            }
        }
        let budget = self.ctx.plan.budget;
        if self.spending.over.is_none() && budget.is_set() {
            let budget = pb::Budget {
                usd: budget.usd,
                tokens: budget.tokens,
                turns: budget.turns,
            };
            if let Some(why) = braid_worker::agent::over_budget(&self.spending.spent, &budget) {
                let why = why
                    .replace("the agent", "the run's attempts")
                    .replace("the attempt's budget", "the run's budget");
                self.note(crate::progress::Note::Info(format!(
                    "{why}; braid started no more attempts"
                )));
                self.spending
                    .stopped
                    .push(format!("{why}; braid started no more attempts"));
                self.spending.over = Some("the run's budget was spent".to_owned());
                self.sweep_queue();
            }
        }
    }

    /// Why attempt `attempt` of `task` must not start, if it must not. Baseline jobs always
    /// may: they run no agent, and judging attempts that already ran waits for them.
    pub(super) fn refused(&self, task: usize, attempt: usize) -> Option<(AttemptStatus, String)> {
        refusal(&self.tasks, &self.ctx.plan, &self.spending, task, attempt)
    }

    /// Ends every queued attempt that must not start.
    fn sweep_queue(&mut self) {
        let mut ended = Vec::new();
        let (tasks, plan, spending) = (&self.tasks, &self.ctx.plan, &self.spending);
        self.queue.retain(|&(t, a)| {
            let stop = refusal(tasks, plan, spending, t, a).is_some();
            if stop {
                ended.push((t, a));
            }
            !stop
        });
        for (t, a) in ended {
            self.end_unstarted(t, a);
        }
    }

    /// Marks an attempt that never ran as ended, for the reason [`Scheduler::refused`] gives.
    pub(super) fn end_unstarted(&mut self, task: usize, attempt: usize) {
        let Some((status, why)) = self.refused(task, attempt) else {
            return;
        };
        let state = &mut self.tasks[task].attempts[attempt];
        state.phase = AttemptPhase::Done;
        state.report.status = status;
        state.report.error = Some(why);
        self.dirty.push(task);
    }
}

fn refusal(
    tasks: &[super::TaskState],
    plan: &crate::plan::Plan,
    spending: &Spending,
    task: usize,
    attempt: usize,
) -> Option<(AttemptStatus, String)> {
    let report = &tasks[task].attempts[attempt].report;
    if report.kind.runs_no_agent() {
        return None;
    }
    if let Some(why) = &spending.over {
        return Some((AttemptStatus::Cancelled, format!("not started: {why}")));
    }
    let key = AgentKey::of(super::agent_of(&plan.tasks[task], report));
    spending
        .walls
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, why)| (AttemptStatus::Failed, format!("not started: {why}")))
}
