//! The plan file as written: YAML deserialised with serde, unknown keys refused, every value
//! that validation may complain about kept with its location.
//!
//! Numbers and durations are read as [`Scalar`] so that a wrong value (`attempts: three`) is
//! reported together with every other error instead of stopping the parse.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

impl Scalar {
    /// The scalar as text, as it would be written.
    pub fn text(&self) -> String {
        match self {
            Scalar::Int(n) => n.to_string(),
            Scalar::Float(x) => x.to_string(),
            Scalar::Bool(b) => b.to_string(),
            Scalar::Str(s) => s.clone(),
        }
    }
}

/// A YAML scalar of any type, for values that validation reads and judges itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    /// A whole number.
    Int(i64),
    /// A number with a fraction.
    Float(f64),
    /// `true` or `false`.
    Bool(bool),
    /// Anything else.
    Str(String),
}

/// The whole plan file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    /// The plan format's version. Required; must be 1.
    pub version: Option<Spanned<Scalar>>,
    /// A label for the run.
    pub name: Option<Spanned<String>>,
    /// The repository: a path relative to the plan file. Default: the git repository that
    /// holds the plan file.
    pub repo: Option<Spanned<String>>,
    /// The revision the run starts from. Default: HEAD of the repository.
    pub base: Option<Spanned<String>>,
    /// Settings every task inherits unless it sets them itself.
    pub defaults: Option<Settings>,
    /// The tasks. Required, at least one.
    pub tasks: Option<Spanned<Vec<TaskFile>>>,
    /// How winners are integrated.
    pub merge: Option<MergeFile>,
    /// How every process of the run is contained: `off`, or `{network, writable}`. A
    /// task's or the defaults' `sandbox` overrides it for the task's attempts.
    pub sandbox: Option<Spanned<SandboxFile>>,
    /// Globs of paths no attempt may change (the tests that define the goal, a score
    /// script, CI files); a task's own `protect` adds to these.
    pub protect: Option<Spanned<Vec<String>>>,
    /// Limits for the whole run: once one is spent no new attempt starts.
    pub budget: Option<Spanned<BudgetFile>>,
}

/// A sandbox as written: `off`, or a map.
#[derive(Debug, Clone)]
pub enum SandboxFile {
    /// A word: only `off` is one.
    Word(String),
    /// The settings.
    Settings(SandboxSettingsFile),
}

impl<'de> Deserialize<'de> for SandboxFile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = SandboxFile;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`off` or a map such as {network: none, writable: [path]}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SandboxFile, E> {
                Ok(SandboxFile::Word(v.to_owned()))
            }
            // YAML 1.1 readers take a bare `off` for false.
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<SandboxFile, E> {
                Ok(SandboxFile::Word(if v { "on" } else { "off" }.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<SandboxFile, A::Error> {
                SandboxSettingsFile::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(SandboxFile::Settings)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// The settings of a sandbox as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSettingsFile {
    /// `none` (no network at all) or `full`. Default: `full` for command agents.
    pub network: Option<String>,
    /// Folders the processes may write besides the worktree and its scratch: absolute,
    /// `~/`, or relative to the plan file. Each must exist.
    #[serde(default)]
    pub writable: Vec<String>,
}

/// Settings a task may take from `defaults` or set itself.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The agent: a preset name or `{command: [...], env: {...}}`.
    pub agent: Option<Spanned<AgentFile>>,
    /// Independent attempts per task (best-of-N), 1 to 32.
    pub attempts: Option<Spanned<Scalar>>,
    /// Wall-clock limit per attempt, such as `90s`, `15m`, `2h`.
    pub timeout: Option<Spanned<Scalar>>,
    /// How a winner is picked among attempts.
    pub select: Option<Spanned<String>>,
    /// Checks run in each attempt's worktree after the agent finished.
    pub checks: Option<Vec<CheckFile>>,
    /// A command that prints a score on its last line; higher is better.
    pub score: Option<Spanned<ScoreFile>>,
    /// Follow-up attempts that start from a failed attempt, with feedback.
    pub retries: Option<Spanned<Scalar>>,
    /// How the task's processes are contained; as the top-level `sandbox`.
    pub sandbox: Option<Spanned<SandboxFile>>,
    /// How long a stopped agent or check gets between SIGTERM and SIGKILL, such as `10s`.
    /// Default: 5 seconds.
    pub grace: Option<Spanned<Scalar>>,
    /// A bake-off: the task's attempts go to these agents in turn.
    pub agents: Option<Spanned<Vec<AgentFile>>>,
    /// Limits per attempt: past one, the attempt is stopped as `over_budget`.
    pub budget: Option<Spanned<BudgetFile>>,
    /// No output or event from the agent for this long, such as `5m`: the attempt is
    /// stopped as `stalled`.
    pub stall: Option<Spanned<Scalar>>,
    /// Commands run in the worktree before the agent.
    pub setup: Option<Vec<SetupFile>>,
    /// Git-ignored files copied from the user's checkout into each worktree.
    pub include: Option<Spanned<Vec<String>>>,
}

/// A setup command as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupFile {
    /// A shell command line.
    pub run: Spanned<String>,
    /// Wall-clock limit, such as `10m`. Default: 10 minutes.
    pub timeout: Option<Spanned<Scalar>>,
}

/// One task.
///
/// The settings fields repeat those of [`Settings`] on purpose: serde's `flatten` cannot be
/// combined with `deny_unknown_fields` and would lose every value's location.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskFile {
    /// The task's id: `[a-z0-9][a-z0-9_-]{0,62}`, unique in the plan.
    pub id: Spanned<String>,
    /// The prompt text. Exactly one of `prompt` and `prompt_file`.
    pub prompt: Option<Spanned<String>>,
    /// A file holding the prompt, relative to the plan file and inside its folder.
    pub prompt_file: Option<Spanned<String>>,
    /// Tasks whose merged winners this task starts from.
    pub deps: Option<Vec<Spanned<String>>>,
    /// As in [`Settings::agent`].
    pub agent: Option<Spanned<AgentFile>>,
    /// As in [`Settings::attempts`].
    pub attempts: Option<Spanned<Scalar>>,
    /// As in [`Settings::timeout`].
    pub timeout: Option<Spanned<Scalar>>,
    /// As in [`Settings::select`].
    pub select: Option<Spanned<String>>,
    /// As in [`Settings::checks`]; replaces the default checks.
    pub checks: Option<Vec<CheckFile>>,
    /// As in [`Settings::score`].
    pub score: Option<Spanned<ScoreFile>>,
    /// As in [`Settings::retries`].
    pub retries: Option<Spanned<Scalar>>,
    /// What to do when this task's winner conflicts; overrides `merge.on_conflict`.
    pub on_conflict: Option<Spanned<String>>,
    /// As in [`Settings::sandbox`].
    pub sandbox: Option<Spanned<SandboxFile>>,
    /// As in [`Settings::grace`].
    pub grace: Option<Spanned<Scalar>>,
    /// As in [`Settings::agents`].
    pub agents: Option<Spanned<Vec<AgentFile>>>,
    /// As in [`Settings::budget`].
    pub budget: Option<Spanned<BudgetFile>>,
    /// As in [`Settings::stall`].
    pub stall: Option<Spanned<Scalar>>,
    /// As in [`Settings::setup`].
    pub setup: Option<Vec<SetupFile>>,
    /// As in [`Settings::include`].
    pub include: Option<Spanned<Vec<String>>>,
    /// Globs of paths this task's attempts must not change, beside the plan's `protect`.
    pub protect: Option<Spanned<Vec<String>>>,
}

/// An agent as written: a preset name, or a map describing a command or a preset.
#[derive(Debug, Clone)]
pub enum AgentFile {
    /// A preset name.
    Preset(String),
    /// A map: `{command: [...]}` or `{preset: codex, model: ...}`.
    Map(Box<AgentMapFile>),
}

impl<'de> Deserialize<'de> for AgentFile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Hand-written rather than `untagged`, so a mistake inside the map (an unknown key)
        // is reported as such, with its place, instead of "did not match any variant".
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = AgentFile;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a preset name or a map such as {command: [program, args...]} or {preset: codex, model: NAME}",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<AgentFile, E> {
                Ok(AgentFile::Preset(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<AgentFile, A::Error> {
                AgentMapFile::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|map| AgentFile::Map(Box::new(map)))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// An agent written as a map: exactly one of `command` and `preset`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentMapFile {
    /// Program and arguments; a relative program path resolves in the attempt's worktree.
    /// Scalars of any type are taken as text, so `[make, 2]` needs no quotes.
    pub command: Option<Vec<Scalar>>,
    /// A preset: `codex`, `claude`, `gemini`, `opencode`, `aider`.
    pub preset: Option<String>,
    /// braid's built-in agent.
    pub builtin: Option<BuiltinFile>,
    /// The model a preset asks for.
    pub model: Option<String>,
    /// Extra arguments for a preset's CLI, after braid's own.
    #[serde(default)]
    pub args: Vec<Scalar>,
    /// An OpenAI-, Anthropic- or Gemini-compatible endpoint for a preset.
    pub base_url: Option<String>,
    /// The variable that holds the API key (read where the attempt runs).
    pub api_key_env: Option<String>,
    /// Prices per million tokens, for a cost the CLI does not report.
    pub price: Option<PriceFile>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// braid's built-in agent as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltinFile {
    /// `responses`, `chat` or `anthropic`.
    pub api: String,
    /// The model.
    pub model: String,
    /// The endpoint. Default: OpenAI's or Anthropic's.
    pub base_url: Option<String>,
    /// The variable holding the key. Default: `OPENAI_API_KEY` or `ANTHROPIC_API_KEY`.
    pub api_key_env: Option<String>,
    /// The most model turns. Default: 50.
    pub max_turns: Option<u32>,
    /// Prices per million tokens, for the cost.
    pub price: Option<PriceFile>,
}

/// Prices in US dollars per million tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceFile {
    /// Input tokens not read from a cache.
    pub input: f64,
    /// Input tokens read from a cache. Default: the input price.
    pub cached_input: Option<f64>,
    /// Output tokens.
    pub output: f64,
}

/// Limits on spending as written: per attempt in `defaults` or a task, for the whole run at
/// the top level.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetFile {
    /// US dollars.
    pub usd: Option<Spanned<Scalar>>,
    /// Input plus output tokens.
    pub tokens: Option<Spanned<Scalar>>,
    /// Model turns.
    pub turns: Option<Spanned<Scalar>>,
}

/// A check as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckFile {
    /// The check's name, unique within a task.
    pub name: Spanned<String>,
    /// A shell command line.
    pub run: Spanned<String>,
    /// Wall-clock limit, such as `10m`. Default: 10 minutes.
    pub timeout: Option<Spanned<Scalar>>,
    /// Run only when the attempt changed a path matching one of these globs.
    pub paths: Option<Spanned<Vec<String>>>,
    /// Whether a check already failing on the base is `pre_existing` instead of blamed.
    pub baseline: Option<Spanned<bool>>,
}

/// A score command as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreFile {
    /// A shell command line that prints a number on its last line.
    pub run: Spanned<String>,
    /// Wall-clock limit, such as `2m`. Default: 10 minutes.
    pub timeout: Option<Spanned<Scalar>>,
}

/// The `merge:` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeFile {
    /// What to do when a winner conflicts: `report`, `rebase` or `agent`.
    pub on_conflict: Option<Spanned<String>>,
    /// How often a task may be re-run on top of the integration.
    pub max_rebases: Option<Spanned<Scalar>>,
    /// Checks run on the integrated result.
    pub verify: Option<Vec<CheckFile>>,
}
