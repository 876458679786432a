//! Plans: the YAML file ([`file`]), its validation ([`load`]), and the checked plan the
//! coordinator runs ([`Plan`]).
//!
//! Invariant: a [`Plan`] exists only when every check passed; loading writes nothing.

pub mod file;
pub mod load;
pub mod repos;
pub mod targets;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use load::load;

/// Default wall-clock limit of an attempt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Default wall-clock limit of a check.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Most attempts a task may have.
pub const MAX_ATTEMPTS: u32 = 32;
/// How often a task may be re-run on top of the integration, unless the plan says otherwise.
pub const DEFAULT_MAX_REBASES: u32 = 1;
/// Most re-runs on top of the integration a plan may allow per task.
pub const MAX_REBASES: u32 = 8;
/// Most feedback retries a plan may allow after one attempt.
pub const MAX_RETRIES: u32 = 8;
/// How long a stopped agent or check gets between SIGTERM and SIGKILL, unless the plan
/// says otherwise: agents that keep state (sessions, caches) need seconds to flush it.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// How a task's processes are contained.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sandbox {
    /// Not at all: the plan said `sandbox: off`.
    pub off: bool,
    /// What network the processes get.
    pub network: Network,
    /// Folders they may write besides the worktree and its scratch, absolute.
    pub writable: Vec<PathBuf>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            off: false,
            network: Network::Default,
            writable: Vec::new(),
        }
    }
}

/// A checked plan.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    /// The plan file, absolute.
    pub path: PathBuf,
    /// The run's label.
    pub name: Option<String>,
    /// The repository's working tree, absolute.
    pub repo: PathBuf,
    /// The repository's common git directory, absolute.
    pub git_dir: PathBuf,
    /// The base revision as written (or `HEAD`).
    pub base_rev: String,
    /// The commit the base revision names.
    pub base_commit: String,
    /// The tasks, in plan order.
    pub tasks: Vec<Task>,
    /// How the run's processes are contained where no task says otherwise (the
    /// verification checks among them).
    pub sandbox: Sandbox,
    /// How winners are integrated.
    pub merge: MergeConfig,
    /// Limits for the whole run.
    pub budget: Budget,
    /// Tasks the DAG does not order whose `touches` overlap: likely conflicts.
    pub overlaps: Vec<Overlap>,
    /// What may make the plan a poor judge of its attempts, each a sentence.
    pub warnings: Vec<String>,
    /// How `braid publish` paces itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<Publish>,
    /// Each target also gets its own branch from the base (`braid run --per-target`).
    #[serde(default)]
    pub per_target: bool,
    /// The earlier run whose failures this one runs again (`braid run --rerun-failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<String>,
    /// The tasks that run already won, by id, as it reported them: they run nothing, and
    /// their winners go on as they were.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub carried: BTreeMap<String, crate::report::TaskReport>,
}

/// `publish: {per_hour: N}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Publish {
    /// Most branches (and their pull requests) published an hour.
    pub per_hour: u32,
}

/// Two tasks the DAG does not order that expect to change the same paths.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Overlap {
    /// The two tasks, in plan order.
    pub tasks: [String; 2],
    /// Paths of the base that both tasks' `touches` match (or a glob both name), the first
    /// few.
    pub paths: Vec<String>,
}

impl Plan {
    /// Adds the deps that order every overlapping pair: the later task in the DAG's order
    /// waits for the earlier, so no cycle can come of it. A sentence for each dep added.
    pub fn serialize_overlaps(&mut self) -> Vec<String> {
        let order = crate::dag::Dag::new(&self.tasks).order();
        let ids: Vec<String> = self.tasks.iter().map(|t| t.id.clone()).collect();
        let rank = |id: &str| {
            let index = ids.iter().position(|t| t == id).unwrap_or(0);
            order.iter().position(|&t| t == index).unwrap_or(0)
        };
        let mut said = Vec::new();
        for overlap in std::mem::take(&mut self.overlaps) {
            let [a, b] = overlap.tasks.clone();
            let (first, then) = if rank(&a) <= rank(&b) { (a, b) } else { (b, a) };
            if let Some(task) = self.tasks.iter_mut().find(|t| t.id == then)
                && !task.deps.contains(&first)
            {
                task.deps.push(first.clone());
                said.push(format!(
                    "{then} now waits for {first}: both touch {}",
                    overlap.paths.join(", ")
                ));
            }
        }
        said
    }
}

/// A checked task.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Task {
    /// The task's id.
    pub id: String,
    /// The prompt text.
    pub prompt: String,
    /// Ids of the tasks this one starts from.
    pub deps: Vec<String>,
    /// The agents its attempts go to, in turn (one, or several for a bake-off).
    pub agents: Vec<Agent>,
    /// Limits per attempt.
    pub budget: Budget,
    /// No output or event from the agent for this long: the attempt is stopped.
    pub stall: Option<Duration>,
    /// Commands run in the worktree before the agent: each line and its limit.
    pub setup: Vec<(String, Duration)>,
    /// Files from the user's checkout copied into each worktree, read when the plan was.
    pub include: Vec<Included>,
    /// Globs of the paths it expects to change.
    pub touches: Vec<String>,
    /// Independent attempts.
    pub attempts: u32,
    /// Wall-clock limit per attempt.
    pub timeout: Duration,
    /// How the winner is picked.
    pub select: Select,
    /// The reviewing agent of `select: judge`.
    pub judge: Option<Judge>,
    /// Checks run in each attempt's worktree.
    pub checks: Vec<Check>,
    /// A command that rates each attempt; higher is better.
    pub score: Option<Score>,
    /// How many follow-up attempts, one after another, may continue an attempt whose
    /// checks failed, each with the failure as feedback.
    pub retries: u32,
    /// What happens when this task's winner conflicts with the integration so far.
    pub on_conflict: OnConflict,
    /// How its processes are contained.
    pub sandbox: Sandbox,
    /// How long a stopped agent or check gets between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Globs of paths its attempts must not change (the plan's and its own).
    pub protect: Vec<String>,
    /// Labels a worker must have to run its attempts.
    #[serde(default)]
    pub requires: BTreeMap<String, String>,
    /// The fanned task and the target this task is for, when it is one.
    #[serde(default)]
    pub target: Option<TargetOf>,
}

impl Task {
    /// The agent of attempt `n` (1-based): a bake-off's agents take turns.
    pub fn agent_for(&self, n: u32) -> &Agent {
        &self.agents[(n.max(1) as usize - 1) % self.agents.len()]
    }
}

/// A git-ignored file of the user's checkout, copied into every worktree of a task.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Included {
    /// Relative to the repository's root.
    pub path: String,
    /// Its bytes, as they were when the plan was read.
    pub content: std::sync::Arc<Vec<u8>>,
    /// Whether it is executable.
    pub executable: bool,
}

/// The JSON Schema of the plan file, made from the types the loader reads, so the two
/// cannot drift apart. What only the loader can check (ids, deps, cycles, durations, files)
/// is its own, with located errors.
pub fn schema() -> String {
    let mut schema = schemars::schema_for!(file::PlanFile);
    schema.insert(
        "title".into(),
        serde_json::Value::String("braid plan".into()),
    );
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}

/// What network an attempt's processes get.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Network {
    /// The plan said nothing: `model` for presets and the built-in agent, `full` for
    /// command agents.
    #[default]
    Default,
    /// None at all.
    None,
    /// Only the agent's model endpoint, for the agent; none for setup, checks and score.
    Model,
    /// The machine's network.
    Full,
}

/// An agent: a command or a preset.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Agent {
    /// Program and arguments of a command agent; empty for a preset.
    pub command: Vec<String>,
    /// The preset's name; empty for a command agent.
    pub preset: String,
    /// The model a preset asks for; empty: the CLI's default.
    pub model: String,
    /// Extra arguments for a preset's CLI.
    pub args: Vec<String>,
    /// The endpoint; empty: the CLI's default.
    pub base_url: String,
    /// The variable holding the API key; empty: the preset's usual one.
    pub api_key_env: String,
    /// Prices per million tokens (input, cached input, output), overriding braid's table.
    pub price: Option<(f64, f64, f64)>,
    /// For the built-in agent: `responses`, `chat` or `anthropic`.
    pub api: String,
    /// For the built-in agent: the most turns; 0 for its default.
    pub max_turns: u32,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
}

impl Agent {
    /// A command agent.
    pub fn command(command: Vec<String>) -> Self {
        Agent {
            command,
            preset: String::new(),
            model: String::new(),
            args: Vec::new(),
            base_url: String::new(),
            api_key_env: String::new(),
            price: None,
            api: String::new(),
            max_turns: 0,
            env: BTreeMap::new(),
        }
    }

    /// The agent's name in reports: the preset's, or `command`.
    pub fn label(&self) -> &str {
        if self.preset.is_empty() {
            "command"
        } else {
            &self.preset
        }
    }

    /// What names the agent in a summary: `codex`, `codex gpt-5`.
    pub fn title(&self) -> String {
        if self.model.is_empty() {
            self.label().to_owned()
        } else {
            format!("{} {}", self.label(), self.model)
        }
    }
}

/// Limits on spending: per attempt, or for the whole run. Zero means none.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Budget {
    /// US dollars.
    pub usd: f64,
    /// Input plus output tokens.
    pub tokens: u64,
    /// Model turns.
    pub turns: u32,
}

impl Budget {
    /// Whether it limits anything.
    pub fn is_set(&self) -> bool {
        self.usd > 0.0 || self.tokens > 0 || self.turns > 0
    }
}

/// Which fanned task a task is a target of.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TargetOf {
    /// The task as written, with `for_each`.
    pub task: String,
    /// The target's folder, from the repository's root.
    pub dir: String,
}

/// A check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Check {
    /// Its name.
    pub name: String,
    /// The shell command line.
    pub run: String,
    /// Wall-clock limit.
    pub timeout: Duration,
    /// Globs: the check runs only when the change touches a matching path. Empty: always.
    pub paths: Vec<String>,
    /// Whether a failure the base already has is `pre_existing` rather than blamed.
    pub baseline: bool,
    /// The folder it runs in, relative to the worktree's root; empty: the root.
    #[serde(default)]
    pub cwd: String,
    /// `per: package`: once for each workspace package the change affects.
    #[serde(default)]
    pub per_package: bool,
}

/// A score command.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Score {
    /// The shell command line; it prints a number on its last line.
    pub run: String,
    /// Wall-clock limit.
    pub timeout: Duration,
}

/// How a winner is picked among a task's attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Select {
    /// Among attempts whose checks pass: the highest score, then the smallest diff, then
    /// the fastest, then the lowest number.
    Best,
    /// The first attempt whose checks pass wins at once; the others are cancelled.
    FirstPass,
    /// Passing attempts with the same change (whitespace aside) form groups; the largest
    /// group wins.
    Vote,
    /// A reviewing agent compares passing attempts two at a time, in both orders; the most
    /// pairwise wins wins, ties go to `best`'s order.
    Judge,
}

/// Most pairs a judge compares unless the plan says otherwise.
pub const DEFAULT_MAX_PAIRS: u32 = 12;
/// Most pairs a plan may ask a judge to compare: every pair of the most attempts.
pub const MAX_PAIRS: u32 = MAX_ATTEMPTS * (MAX_ATTEMPTS - 1) / 2;

/// The reviewing agent of `select: judge`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Judge {
    /// The agent.
    pub agent: Agent,
    /// What makes one change better than another, in words; may be empty.
    pub criteria: String,
    /// Most pairs compared (each in both orders).
    pub max_pairs: u32,
}

impl Select {
    /// The policy's name, as written in a plan.
    pub fn name(self) -> &'static str {
        match self {
            Select::Best => "best",
            Select::FirstPass => "first-pass",
            Select::Vote => "vote",
            Select::Judge => "judge",
        }
    }
}

/// What happens when a winner conflicts with the integration so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OnConflict {
    /// Leave the later winner out and report the conflict.
    Report,
    /// Run the later task's attempts again on top of the integration so far.
    Rebase,
    /// Give the conflicted merge to the task's agent to resolve.
    Agent,
}

impl OnConflict {
    /// The strategy's name, as written in a plan.
    pub fn name(self) -> &'static str {
        match self {
            OnConflict::Report => "report",
            OnConflict::Rebase => "rebase",
            OnConflict::Agent => "agent",
        }
    }
}

/// The `merge:` settings.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MergeConfig {
    /// What happens on a conflict, unless a task says otherwise.
    pub on_conflict: OnConflict,
    /// How often one task may be re-run on top of the integration under `rebase`.
    pub max_rebases: u32,
    /// Checks run on the integrated result.
    pub verify: Vec<Check>,
}

/// One problem in a plan, with its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line and column, when known.
    pub at: Option<(u64, u64)>,
    /// A plain sentence.
    pub message: String,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some((line, column)) => {
                write!(
                    f,
                    "{}:{line}:{column}: {}",
                    self.file.display(),
                    self.message
                )
            }
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Every problem found in a plan.
#[derive(Debug, Clone, thiserror::Error)]
pub struct PlanErrors(pub Vec<PlanError>);

impl fmt::Display for PlanErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for error in &self.0 {
            writeln!(f, "error: {error}")?;
        }
        let n = self.0.len();
        write!(
            f,
            "{n} error{} in the plan; nothing was run.",
            if n == 1 { "" } else { "s" }
        )
    }
}

/// Parses a duration such as `90s`, `15m`, `2h`, `1h30m` or `500ms`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(unit.checked_mul(u32::try_from(value).ok()?)?)?;
    }
    (total > Duration::ZERO).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        for bad in ["", "15", "m", "15 minutes", "1.5h", "0s", "-3s", "3d"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
