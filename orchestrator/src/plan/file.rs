//! The plan file as written: YAML deserialised with serde, unknown keys refused, every value
//! that validation may complain about kept with its location.
//!
//! Numbers and durations are read as [`Scalar`] so that a wrong value (`attempts: three`) is
//! reported together with every other error instead of stopping the parse.

use std::collections::BTreeMap;

use schemars::JsonSchema;
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
#[derive(Debug, Clone, Deserialize, JsonSchema)]
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
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    /// The plan format's version. Required; must be 1.
    #[schemars(with = "Option<Scalar>")]
    pub version: Option<Spanned<Scalar>>,
    /// A label for the run.
    #[schemars(with = "Option<String>")]
    pub name: Option<Spanned<String>>,
    /// The repository: a path relative to the plan file. Default: the git repository that
    /// holds the plan file.
    #[schemars(with = "Option<String>")]
    pub repo: Option<Spanned<String>>,
    /// The revision the run starts from. Default: HEAD of the repository.
    #[schemars(with = "Option<String>")]
    pub base: Option<Spanned<String>>,
    /// Settings every task inherits unless it sets them itself.
    pub defaults: Option<Settings>,
    /// The tasks. Required, at least one.
    #[schemars(with = "Option<Vec<TaskFile>>")]
    pub tasks: Option<Spanned<Vec<TaskFile>>>,
    /// How winners are integrated.
    pub merge: Option<MergeFile>,
    /// How every process of the run is contained: `off`, or `{network, writable}`. A
    /// task's or the defaults' `sandbox` overrides it for the task's attempts.
    #[schemars(with = "Option<SandboxFile>")]
    pub sandbox: Option<Spanned<SandboxFile>>,
    /// Globs of paths no attempt may change (the tests that define the goal, a score
    /// script, CI files); a task's own `protect` adds to these.
    #[schemars(with = "Option<Vec<String>>")]
    pub protect: Option<Spanned<Vec<String>>>,
    /// Limits for the whole run: once one is spent no new attempt starts.
    #[schemars(with = "Option<BudgetFile>")]
    pub budget: Option<Spanned<BudgetFile>>,
    /// How `braid publish` paces itself: `{per_hour: N}` branches (and pull requests) an
    /// hour at most, apart from the forge's own limits.
    #[schemars(with = "Option<PublishFile>")]
    pub publish: Option<Spanned<PublishFile>>,
}

/// `publish:` as written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishFile {
    /// Most branches published an hour.
    #[schemars(with = "Option<Scalar>")]
    pub per_hour: Option<Spanned<Scalar>>,
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

impl JsonSchema for SandboxFile {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Sandbox".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let settings = generator.subschema_for::<SandboxSettingsFile>();
        schemars::json_schema!({
            "description": "`off`, or the sandbox's settings.",
            "anyOf": [
                {"const": "off", "description": "No sandbox at all."},
                {"const": false, "description": "`off`, as YAML 1.1 readers take it."},
                settings
            ]
        })
    }
}

/// The settings of a sandbox as written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
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
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The agent: a preset name or `{command: [...], env: {...}}`.
    #[schemars(with = "Option<AgentFile>")]
    pub agent: Option<Spanned<AgentFile>>,
    /// Independent attempts per task (best-of-N), 1 to 32.
    #[schemars(with = "Option<Scalar>")]
    pub attempts: Option<Spanned<Scalar>>,
    /// Wall-clock limit per attempt, such as `90s`, `15m`, `2h`.
    #[schemars(with = "Option<Scalar>")]
    pub timeout: Option<Spanned<Scalar>>,
    /// How a winner is picked among attempts: `best` (default), `first-pass`, `vote` or
    /// `judge`.
    #[schemars(with = "Option<SelectName>")]
    pub select: Option<Spanned<String>>,
    /// The reviewing agent of `select: judge`.
    #[schemars(with = "Option<JudgeFile>")]
    pub judge: Option<Spanned<JudgeFile>>,
    /// Checks run in each attempt's worktree after the agent finished.
    pub checks: Option<Vec<CheckFile>>,
    /// A command that prints a score on its last line; higher is better.
    #[schemars(with = "Option<ScoreFile>")]
    pub score: Option<Spanned<ScoreFile>>,
    /// Follow-up attempts that start from a failed attempt, with feedback.
    #[schemars(with = "Option<Scalar>")]
    pub retries: Option<Spanned<Scalar>>,
    /// How the task's processes are contained; as the top-level `sandbox`.
    #[schemars(with = "Option<SandboxFile>")]
    pub sandbox: Option<Spanned<SandboxFile>>,
    /// How long a stopped agent or check gets between SIGTERM and SIGKILL, such as `10s`.
    /// Default: 5 seconds.
    #[schemars(with = "Option<Scalar>")]
    pub grace: Option<Spanned<Scalar>>,
    /// A bake-off: the task's attempts go to these agents in turn.
    #[schemars(with = "Option<Vec<AgentFile>>")]
    pub agents: Option<Spanned<Vec<AgentFile>>>,
    /// Limits per attempt: past one, the attempt is stopped as `over_budget`.
    #[schemars(with = "Option<BudgetFile>")]
    pub budget: Option<Spanned<BudgetFile>>,
    /// No output or event from the agent for this long, such as `5m`: the attempt is
    /// stopped as `stalled`.
    #[schemars(with = "Option<Scalar>")]
    pub stall: Option<Spanned<Scalar>>,
    /// Labels a worker must have to run the task's attempts (`{os: linux, gpu: a100}`),
    /// as `braid worker --label key=value` gives them.
    #[schemars(with = "Option<std::collections::BTreeMap<String, String>>")]
    pub requires: Option<Spanned<std::collections::BTreeMap<String, String>>>,
    /// Commands run in the worktree before the agent.
    pub setup: Option<Vec<SetupFile>>,
    /// Git-ignored files copied from the user's checkout into each worktree.
    #[schemars(with = "Option<Vec<String>>")]
    pub include: Option<Spanned<Vec<String>>>,
}

/// The names of the ways a winner is picked.
#[derive(JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[allow(dead_code)]
pub enum SelectName {
    /// Among passing attempts: the fewest checks still failing as on the base, the highest
    /// score, the smallest diff, the fastest.
    Best,
    /// The first attempt to pass wins; the others are stopped.
    FirstPass,
    /// The largest group of passing attempts that made the same change.
    Vote,
    /// A reviewing agent compares the passing attempts two at a time (`judge:`).
    Judge,
}

/// `judge:` as written: the reviewing agent of `select: judge`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JudgeFile {
    /// The reviewing agent: a preset's name or a map, as `agent`. Required.
    pub agent: Option<AgentFile>,
    /// What makes one change better than another, in words, for the reviewing agent.
    pub criteria: Option<String>,
    /// Most pairs of passing attempts judged (each in both orders). Default: 12.
    #[schemars(with = "Option<Scalar>")]
    pub max_pairs: Option<Spanned<Scalar>>,
}

/// A setup command as written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetupFile {
    /// A shell command line.
    #[schemars(with = "String")]
    pub run: Spanned<String>,
    /// Wall-clock limit, such as `10m`. Default: 10 minutes.
    #[schemars(with = "Option<Scalar>")]
    pub timeout: Option<Spanned<Scalar>>,
}

/// One task.
///
/// The settings fields repeat those of [`Settings`] on purpose: serde's `flatten` cannot be
/// combined with `deny_unknown_fields` and would lose every value's location.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskFile {
    /// The task's id: `[a-z0-9][a-z0-9_-]{0,62}`, unique in the plan.
    #[schemars(with = "String")]
    pub id: Spanned<String>,
    /// The prompt text. Exactly one of `prompt` and `prompt_file`.
    #[schemars(with = "Option<String>")]
    pub prompt: Option<Spanned<String>>,
    /// A file holding the prompt, relative to the plan file and inside its folder.
    #[schemars(with = "Option<String>")]
    pub prompt_file: Option<Spanned<String>>,
    /// Tasks whose merged winners this task starts from.
    #[schemars(with = "Option<Vec<String>>")]
    pub deps: Option<Vec<Spanned<String>>>,
    /// As in [`Settings::agent`].
    #[schemars(with = "Option<AgentFile>")]
    pub agent: Option<Spanned<AgentFile>>,
    /// As in [`Settings::attempts`].
    #[schemars(with = "Option<Scalar>")]
    pub attempts: Option<Spanned<Scalar>>,
    /// As in [`Settings::timeout`].
    #[schemars(with = "Option<Scalar>")]
    pub timeout: Option<Spanned<Scalar>>,
    /// As in [`Settings::select`].
    #[schemars(with = "Option<SelectName>")]
    pub select: Option<Spanned<String>>,
    /// As in [`Settings::judge`].
    #[schemars(with = "Option<JudgeFile>")]
    pub judge: Option<Spanned<JudgeFile>>,
    /// As in [`Settings::checks`]; replaces the default checks.
    pub checks: Option<Vec<CheckFile>>,
    /// As in [`Settings::score`].
    #[schemars(with = "Option<ScoreFile>")]
    pub score: Option<Spanned<ScoreFile>>,
    /// As in [`Settings::retries`].
    #[schemars(with = "Option<Scalar>")]
    pub retries: Option<Spanned<Scalar>>,
    /// What to do when this task's winner conflicts; overrides `merge.on_conflict`.
    #[schemars(with = "Option<String>")]
    pub on_conflict: Option<Spanned<String>>,
    /// As in [`Settings::sandbox`].
    #[schemars(with = "Option<SandboxFile>")]
    pub sandbox: Option<Spanned<SandboxFile>>,
    /// As in [`Settings::grace`].
    #[schemars(with = "Option<Scalar>")]
    pub grace: Option<Spanned<Scalar>>,
    /// As in [`Settings::agents`].
    #[schemars(with = "Option<Vec<AgentFile>>")]
    pub agents: Option<Spanned<Vec<AgentFile>>>,
    /// As in [`Settings::budget`].
    #[schemars(with = "Option<BudgetFile>")]
    pub budget: Option<Spanned<BudgetFile>>,
    /// As in [`Settings::stall`].
    #[schemars(with = "Option<Scalar>")]
    pub stall: Option<Spanned<Scalar>>,
    /// As in [`Settings::requires`]; replaces the default.
    #[schemars(with = "Option<std::collections::BTreeMap<String, String>>")]
    pub requires: Option<Spanned<std::collections::BTreeMap<String, String>>>,
    /// As in [`Settings::setup`].
    pub setup: Option<Vec<SetupFile>>,
    /// As in [`Settings::include`].
    #[schemars(with = "Option<Vec<String>>")]
    pub include: Option<Spanned<Vec<String>>>,
    /// Globs of the paths the task expects to change: tasks the DAG does not order whose
    /// `touches` overlap are reported before anything runs.
    #[schemars(with = "Option<Vec<String>>")]
    pub touches: Option<Spanned<Vec<String>>>,
    /// Globs of paths this task's attempts must not change, beside the plan's `protect`.
    #[schemars(with = "Option<Vec<String>>")]
    pub protect: Option<Spanned<Vec<String>>>,
    /// The targets the task is made once for: each becomes a task `<id>.<slug>` of its
    /// own, with `{{dir}}` and `{{name}}` filled in.
    #[schemars(with = "Option<ForEachFile>")]
    pub for_each: Option<Spanned<ForEachFile>>,
}

/// What a task is fanned over: exactly one of its keys.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForEachFile {
    /// The folders matching a glob, at the plan's base (`services/*`).
    pub dirs: Option<String>,
    /// The folders below the root holding a file of this name at the base (`Cargo.toml`).
    pub marker: Option<String>,
    /// Repositories, as paths or clone URLs.
    pub repos: Option<Vec<String>>,
    /// `true`: the packages of the repository's workspaces, as their own member lists
    /// have them (Cargo, npm, pnpm and yarn, Go, Python); `{{name}}` is the package's name.
    pub workspace: Option<bool>,
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

impl JsonSchema for AgentFile {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Agent".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let map = generator.subschema_for::<AgentMapFile>();
        let presets: Vec<&str> = braid_worker::presets::all()
            .iter()
            .map(|p| p.name())
            .collect();
        schemars::json_schema!({
            "description": "A preset's name, or a map: `{command: [...]}`, `{preset: NAME, ...}` or `{builtin: {...}}`.",
            "anyOf": [{"type": "string", "enum": presets}, map]
        })
    }
}

/// An agent written as a map: exactly one of `command` and `preset`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetFile {
    /// US dollars.
    #[schemars(with = "Option<Scalar>")]
    pub usd: Option<Spanned<Scalar>>,
    /// Input plus output tokens.
    #[schemars(with = "Option<Scalar>")]
    pub tokens: Option<Spanned<Scalar>>,
    /// Model turns.
    #[schemars(with = "Option<Scalar>")]
    pub turns: Option<Spanned<Scalar>>,
}

/// A check as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckFile {
    /// The check's name, unique within a task.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// A shell command line.
    #[schemars(with = "String")]
    pub run: Spanned<String>,
    /// Wall-clock limit, such as `10m`. Default: 10 minutes.
    #[schemars(with = "Option<Scalar>")]
    pub timeout: Option<Spanned<Scalar>>,
    /// Run only when the attempt changed a path matching one of these globs.
    #[schemars(with = "Option<Vec<String>>")]
    pub paths: Option<Spanned<Vec<String>>>,
    /// Whether a check already failing on the base is `pre_existing` instead of blamed.
    #[schemars(with = "Option<bool>")]
    pub baseline: Option<Spanned<bool>>,
    /// The folder the check runs in, relative to the worktree's root (`{{dir}}` for a
    /// fanned task's own folder). Default: the root.
    #[schemars(with = "Option<String>")]
    pub cwd: Option<Spanned<String>>,
    /// `package`: run once for each workspace package the attempt's change affects (and
    /// the packages that depend on those), with `{{package}}` and `{{package_dir}}` set and
    /// the package's folder as the default `cwd`.
    #[schemars(with = "Option<String>")]
    pub per: Option<Spanned<String>>,
}

/// A score command as written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoreFile {
    /// A shell command line that prints a number on its last line.
    #[schemars(with = "String")]
    pub run: Spanned<String>,
    /// Wall-clock limit, such as `2m`. Default: 10 minutes.
    #[schemars(with = "Option<Scalar>")]
    pub timeout: Option<Spanned<Scalar>>,
}

/// The `merge:` section.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeFile {
    /// What to do when a winner conflicts: `report`, `rebase` or `agent`.
    #[schemars(with = "Option<String>")]
    pub on_conflict: Option<Spanned<String>>,
    /// How often a task may be re-run on top of the integration.
    #[schemars(with = "Option<Scalar>")]
    pub max_rebases: Option<Spanned<Scalar>>,
    /// Checks run on the integrated result.
    pub verify: Option<Vec<CheckFile>>,
}
