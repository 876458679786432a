//! The planner: a planning agent turns a goal into a plan.
//!
//! The agent (any preset, the built-in agent or a command) runs as a read-only job of the
//! worker runtime, in a worktree of the base that its processes cannot write. Its prompt
//! holds the goal, the plan format as JSON Schema and guidance on slicing work; it writes a
//! plan to `$BRAID_PLAN_FILE` (or ends its reply with one in a fenced block). braid checks
//! the plan with the loader every plan goes through; when it has errors, the located
//! messages go back to the agent in `$BRAID_FEEDBACK_FILE` (and in its next prompt) for
//! another round. The plan that passes is written out as a plan file like any other,
//! naming the repository and base it was planned on, so it runs from wherever it is saved.
//!
//! Invariant: planning changes nothing of the user's repository; what it leaves is in
//! braid's cache folder, and that goes when planning ends.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use braid_shared::proto::{self as pb, AttemptSpec};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::dag::Dag;
use crate::error::BraidError;
use crate::plan::load::Origin;
use crate::plan::{self, Agent, Plan, PlanErrors};
use crate::report::Usage;

/// Rounds a planner gets unless `--rounds` says otherwise.
pub const DEFAULT_ROUNDS: u32 = 3;

/// What to plan, and with what.
#[derive(Debug, Clone)]
pub struct Request {
    /// The goal, as the person wrote it.
    pub goal: String,
    /// The planning agent.
    pub agent: Agent,
    /// The agent as `--agent` wrote it, for the plan's tasks that name none.
    pub agent_written: plan::file::AgentFile,
    /// The repository's working tree and common git folder.
    pub repo: PathBuf,
    pub git_dir: PathBuf,
    /// The base as given, and its commit.
    pub base_rev: String,
    pub base_commit: String,
    /// Most rounds.
    pub rounds: u32,
    /// Names the planning's folder in the cache (a run's id for `braid run --goal`).
    pub id: String,
    /// Where the agent's logs go; `None`: a folder of the cache, removed at the end.
    pub log_dir: Option<PathBuf>,
    /// Show the agent's output as it comes.
    pub verbose: bool,
}

/// A plan the planner made.
#[derive(Debug)]
pub struct Planned {
    /// The plan file's text, as written out.
    pub text: String,
    /// The rounds it took, and what the agent spent over all of them.
    pub record: PlannerReport,
}

/// The planner, as a run's report keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannerReport {
    /// The goal.
    pub goal: String,
    /// The planning agent.
    pub agent: String,
    /// Rounds run.
    pub rounds: u32,
    /// What the planning agent spent over all rounds.
    pub usage: Usage,
    /// The plan file kept in the run's folder.
    #[serde(default)]
    pub plan: String,
}

/// Plans `request`'s goal. Fails with every round's errors when no round gave a valid
/// plan, as bad input (exit 2); nothing is written.
pub async fn plan(request: &Request) -> Result<Planned, BraidError> {
    if let Err(why) = braid_worker::sandbox::available().await {
        return Err(BraidError::Environment(format!(
            "{why}. braid runs the planning agent in a read-only sandbox and cannot make one here"
        )));
    }
    let cache = braid_worker::cache::root();
    let work = braid_worker::cache::run_dir(&cache, &request.id);
    let lock = crate::state::Lock::new(
        &request.id,
        work.clone(),
        request.repo.clone(),
        request.base_commit.clone(),
        PathBuf::from("(planning)"),
    );
    crate::state::own_cache_dir(&lock)
        .map_err(BraidError::io(format!("creating {}", work.display())))?;
    let _gone = Remove(work.clone());
    // Not under the cache's `work/`: sandboxes hide that, and the agent reads its prompt
    // and feedback from here.
    let logs = cache.join("plans").join(&request.id);
    let _logs_gone = Remove(logs.clone());
    let log_dir = request.log_dir.clone().unwrap_or(logs);
    std::fs::create_dir_all(&log_dir)
        .map_err(BraidError::io(format!("creating {}", log_dir.display())))?;
    let pool = braid_worker::worktree_pool::WorktreePool::new("planner", &cache);
    let outcome = rounds(request, &pool, &work, &log_dir).await;
    pool.close().await;
    outcome
}

/// Removes a folder when dropped.
struct Remove(PathBuf);

impl Drop for Remove {
    fn drop(&mut self) {
        crate::state::remove_cache_dir(&self.0);
    }
}

async fn rounds(
    request: &Request,
    pool: &braid_worker::worktree_pool::WorktreePool,
    work: &Path,
    log_dir: &Path,
) -> Result<Planned, BraidError> {
    let origin = Origin {
        repo: request.repo.clone(),
        base: request.base_commit.clone(),
        agent: Some(request.agent_written.clone()),
    };
    let cancel = CancellationToken::new();
    // The planner runs in this process, beside the repository: its worktrees borrow the
    // repository's objects where they are.
    let common = braid_shared::git::Git::at(&request.repo)
        .common_dir()
        .await
        .map_err(|e| BraidError::Environment(e.to_string()))?;
    let place = braid_worker::attempt::Place {
        source: braid_worker::cache::Source { common },
        logs: log_dir.to_owned(),
    };
    let stop = cancel.clone();
    let signals = braid_shared::task::spawn("planner-signals", async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
        stop.cancel();
    });
    let mut usage = Usage::default();
    let mut feedback = String::new();
    let mut said: Vec<String> = Vec::new();
    let title = request.agent.title();
    for round in 1..=request.rounds {
        eprintln!(
            "planning with {title}: round {round} of {} …",
            request.rounds
        );
        let spec = spec(request, round, &feedback);
        let (updates, mut incoming) = mpsc::channel(64);
        let verbose = request.verbose;
        let shown = braid_shared::task::spawn("planner-output", async move {
            while let Some(update) = incoming.recv().await {
                if let (true, braid_worker::attempt::Update::Lines(lines)) = (verbose, update) {
                    for line in lines {
                        eprintln!("  plan: {line}");
                    }
                }
            }
        });
        let result = braid_worker::attempt::run_attempt(
            &spec,
            &format!("{}-{round}", request.id),
            pool,
            &place,
            cancel.clone(),
            updates,
        )
        .await;
        let _ = shown.await;
        if let Some(u) = &result.usage {
            usage = Usage::sum([&usage, &braid_shared::usage::Usage::from(u).into()]);
        }
        if cancel.is_cancelled() {
            signals.abort();
            return Err(BraidError::Interrupted(
                "planning was interrupted; nothing was written".into(),
            ));
        }
        if result.provider_fault() == pb::ProviderFault::Terminal {
            signals.abort();
            return Err(BraidError::Environment(format!(
                "the planning agent's provider refused: {}",
                result.error
            )));
        }
        let problems = match answer(&result) {
            Err(why) => {
                let mut text = why;
                if let Some(tail) = tail(&log_dir.join(&result.log_path), 12) {
                    let _ = write!(text, "\nIts last lines:\n{tail}");
                }
                text
            }
            Ok(text) => {
                let round_dir = work.join(format!("round-{round}"));
                let path = round_dir.join("plan.yaml");
                std::fs::create_dir_all(&round_dir)
                    .and_then(|()| std::fs::write(&path, &text))
                    .map_err(BraidError::io(format!("writing {}", path.display())))?;
                match plan::load::load_planned(&path, &origin).await {
                    Ok(_) => {
                        let out = written(&text, request)?;
                        signals.abort();
                        return Ok(Planned {
                            text: out,
                            record: PlannerReport {
                                goal: request.goal.clone(),
                                agent: title,
                                rounds: round,
                                usage,
                                plan: String::new(),
                            },
                        });
                    }
                    Err(errors) => located(&errors, &path),
                }
            }
        };
        eprintln!(
            "round {round}: the plan is not valid:\n{}",
            indent(&problems)
        );
        said.push(format!("round {round}:\n{}", indent(&problems)));
        feedback = format!(
            "# Feedback from braid\n\nThe plan of your round {round} cannot run. Fix every problem below and write the whole plan again.\n\n{problems}\n"
        );
    }
    signals.abort();
    Err(BraidError::Usage(format!(
        "the planning agent gave no valid plan in {} round{}; nothing was run or written.\n{}",
        request.rounds,
        if request.rounds == 1 { "" } else { "s" },
        said.join("\n")
    )))
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The located errors as the agent sees its file: `plan.yaml:LINE:COLUMN: message`.
fn located(errors: &PlanErrors, path: &Path) -> String {
    errors
        .0
        .iter()
        .map(|e| {
            let file = if e.file == path {
                "plan.yaml".to_owned()
            } else {
                e.file.display().to_string()
            };
            match e.at {
                Some((line, column)) => format!("{file}:{line}:{column}: {}", e.message),
                None => format!("{file}: {}", e.message),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The last `n` lines of the file at `path`, if it has any.
fn tail(path: &Path, n: usize) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return None;
    }
    Some(
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| format!("  | {}", braid_worker::presets::cut(l, 300)))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// The plan the agent gave: its answer file, else the last fenced YAML block of its final
/// message; or why there is none.
fn answer(result: &pb::AttemptResult) -> Result<String, String> {
    if result.status() != pb::AttemptStatus::Finished {
        return Err(format!(
            "the planning agent failed: {}",
            if result.error.is_empty() {
                "it did not finish"
            } else {
                &result.error
            }
        ));
    }
    let text = String::from_utf8_lossy(&result.answer).into_owned();
    if !text.trim().is_empty() {
        return Ok(text);
    }
    last_block(&result.final_message).ok_or_else(|| {
        "the planning agent wrote no plan to $BRAID_PLAN_FILE, and its reply ends with no ```yaml block".to_owned()
    })
}

/// The last fenced block (```yaml, ```yml or bare ```) of `text`.
fn last_block(text: &str) -> Option<String> {
    let mut blocks = Vec::new();
    // The open block: whether its language can be a plan, and its lines.
    let mut current: Option<(bool, Vec<&str>)> = None;
    for line in text.lines() {
        let fence = line.trim_start().starts_with("```");
        match (&mut current, fence) {
            (None, true) => {
                let lang = line.trim_start().trim_start_matches('`').trim();
                let plan = matches!(lang, "" | "yaml" | "yml" | "json");
                current = Some((plan, Vec::new()));
            }
            (Some((plan, lines)), true) => {
                if *plan {
                    blocks.push(lines.join("\n"));
                }
                current = None;
            }
            (Some((_, lines)), false) => lines.push(line),
            (None, false) => {}
        }
    }
    blocks
        .into_iter()
        .rev()
        .find(|b| b.contains("tasks"))
        .map(|b| format!("{b}\n"))
}

/// What a worker needs to run round `round` of the planning agent.
fn spec(request: &Request, round: u32, feedback: &str) -> AttemptSpec {
    let sandbox = crate::scheduler::sandbox_spec(&plan::Sandbox::default(), Some(&request.agent));
    AttemptSpec {
        run_id: request.id.clone(),
        task_id: "plan".into(),
        attempt: round,
        base_commit: request.base_commit.clone(),
        prompt: prompt(request, feedback),
        agent: Some(crate::scheduler::agent_spec(&request.agent)),
        timeout_ms: plan::DEFAULT_TIMEOUT.as_millis() as u64,
        log_cap_bytes: 8 << 20,
        feedback: feedback.to_owned(),
        sandbox: Some(sandbox),
        grace_ms: plan::DEFAULT_GRACE.as_millis() as u64,
        read_only: Some(pb::ReadOnlyJob {
            answer_env: "BRAID_PLAN_FILE".into(),
            inputs: Vec::new(),
        }),
        ..Default::default()
    }
}

/// The planning agent's prompt.
pub fn prompt(request: &Request, feedback: &str) -> String {
    let mut text = format!(
        "# Plan this goal for braid\n\n## The goal\n\n{}\n\n",
        request.goal.trim()
    );
    let _ = write!(
        text,
        "## Your job\n\n\
You are braid's planning agent. braid runs coding agents in parallel: each task of a plan gets \
its own git worktree and its own attempts, braid runs the task's checks on every attempt, picks \
a winner, and merges the winners into one result. Your job is the plan, not the code. The \
current folder is the repository at commit {} ({}); it is read-only. Read what you need to \
understand the code, its layout and its tests; change nothing.\n\n\
Write the plan, in YAML, to the file named by $BRAID_PLAN_FILE. If you cannot write that file, \
end your reply with the whole plan in one ```yaml block instead.\n\n\
## How to slice the work\n\n\
- Independent units of similar size, each small enough for one agent in one go (well under 90 \
minutes of a person's work) and each mergeable on its own. Usually 1 to 12 tasks.\n\
- Slice by ownership: a task owns a folder, a module or a set of files. Two tasks that `deps` \
does not order must not change the same files. List the paths each task expects to change in \
`touches` (globs such as `src/parser/**`); braid reports overlapping `touches` of unordered \
tasks before anything runs.\n\
- Every task gets `checks` that decide it: shell commands that fail on the code as it is now and \
pass once the task is done. This is the validation contract, written before any code: prefer \
the project's own test commands, narrowed to the task, and tests the task's prompt tells the \
agent to add. A check that must fail now needs `baseline: false`, or braid counts its failure \
as the base's.\n\
- `deps` only where a task needs another's result: a task with deps starts from its deps' \
merged winners. Keep the DAG shallow.\n\
- Each `prompt` says in full what to change, where, and how it will be checked; write it \
inline with `prompt:` (not `prompt_file`). Task ids: lowercase letters, digits, `-` and `_`.\n\
- Leave out `repo` and `base` (braid sets them) and `agent` (tasks that name none run on the \
agent braid was given), unless the goal asks for something else.\n\n\
## The plan format\n\nOnly these keys, as JSON Schema:\n\n```json\n{}\n```\n\n\
## An example\n\n```yaml\n{}```\n",
        request.base_commit,
        request.base_rev,
        plan::schema(),
        EXAMPLE
    );
    if !feedback.is_empty() {
        let _ = write!(
            text,
            "\n## Your previous plan had problems\n\n{feedback}\n(The same is in the file named by $BRAID_FEEDBACK_FILE.)\n"
        );
    }
    text
}

const EXAMPLE: &str = "version: 1
name: reject-unknown-keys
tasks:
  - id: parser
    prompt: |
      Make the config parser in src/config/parse.rs reject unknown keys with an error that
      names the key and its line. Add tests in tests/config_unknown.rs.
    touches: [\"src/config/**\", \"tests/config_unknown.rs\"]
    checks:
      - {name: unknown-keys, run: \"cargo test --test config_unknown\", baseline: false}
  - id: docs
    deps: [parser]
    prompt: |
      Document in docs/config.md that unknown keys are now an error, with an example.
    touches: [\"docs/config.md\"]
    checks:
      - {name: mentions, run: \"grep -qi 'unknown key' docs/config.md\", baseline: false}
";

/// The plan file braid writes for the agent's valid `text`: a header, then the plan with
/// the repository and base it was planned on, and the planner's agent for tasks that name
/// none. Keys keep the plan format's order; comments of the agent's are not kept.
fn written(text: &str, request: &Request) -> Result<String, BraidError> {
    let internal = |e: String| BraidError::Internal(format!("writing the planned plan: {e}"));
    let options = serde_saphyr::options! { with_snippet: false };
    let mut value: serde_json::Value =
        serde_saphyr::from_str_with_options(text, options).map_err(|e| internal(e.to_string()))?;
    let map = value
        .as_object_mut()
        .ok_or_else(|| internal("the plan is not a map".into()))?;
    map.insert(
        "repo".into(),
        serde_json::Value::String(request.repo.to_string_lossy().into_owned()),
    );
    map.insert(
        "base".into(),
        serde_json::Value::String(request.base_commit.clone()),
    );
    let names_agent = |v: &serde_json::Value| v.get("agent").is_some() || v.get("agents").is_some();
    let defaults_agent = map.get("defaults").is_some_and(names_agent);
    let every_task = map
        .get("tasks")
        .and_then(|t| t.as_array())
        .is_some_and(|tasks| tasks.iter().all(names_agent));
    if !defaults_agent && !every_task {
        let agent = agent_value(&request.agent_written);
        let defaults = map
            .entry("defaults")
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        if let Some(defaults) = defaults.as_object_mut() {
            defaults.insert("agent".into(), agent);
        }
    }
    let body = serde_saphyr::to_string(&Ordered(&value, Keys::Top))
        .map_err(|e| internal(e.to_string()))?;
    let mut out = String::new();
    out.push_str("# A braid plan, planned from the goal:\n");
    for line in request.goal.trim().lines() {
        let _ = writeln!(out, "#   {line}");
    }
    let _ = writeln!(
        out,
        "# on {} at {} ({}) by {}. Edit it freely; run it with `braid run FILE`.",
        request.repo.display(),
        crate::report::short(&request.base_commit),
        request.base_rev,
        request.agent.title()
    );
    out.push_str(&body);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

/// The agent as written, as a plan value.
fn agent_value(agent: &plan::file::AgentFile) -> serde_json::Value {
    match agent {
        plan::file::AgentFile::Preset(name) => serde_json::Value::String(name.clone()),
        plan::file::AgentFile::Map(map) => {
            let mut out = serde_json::Map::new();
            let text = |s: &plan::file::Scalar| serde_json::Value::String(s.text());
            if let Some(command) = &map.command {
                out.insert("command".into(), command.iter().map(text).collect());
            }
            if let Some(preset) = &map.preset {
                out.insert("preset".into(), preset.clone().into());
            }
            if let Some(b) = &map.builtin {
                let mut builtin = serde_json::Map::new();
                builtin.insert("api".into(), b.api.clone().into());
                builtin.insert("model".into(), b.model.clone().into());
                if let Some(url) = &b.base_url {
                    builtin.insert("base_url".into(), url.clone().into());
                }
                if let Some(key) = &b.api_key_env {
                    builtin.insert("api_key_env".into(), key.clone().into());
                }
                if let Some(turns) = b.max_turns {
                    builtin.insert("max_turns".into(), turns.into());
                }
                if let Some(p) = &b.price {
                    builtin.insert("price".into(), price_value(p));
                }
                out.insert("builtin".into(), builtin.into());
            }
            if let Some(model) = &map.model {
                out.insert("model".into(), model.clone().into());
            }
            if !map.args.is_empty() {
                out.insert("args".into(), map.args.iter().map(text).collect());
            }
            if let Some(url) = &map.base_url {
                out.insert("base_url".into(), url.clone().into());
            }
            if let Some(key) = &map.api_key_env {
                out.insert("api_key_env".into(), key.clone().into());
            }
            if let Some(p) = &map.price {
                out.insert("price".into(), price_value(p));
            }
            if !map.env.is_empty() {
                out.insert(
                    "env".into(),
                    map.env
                        .iter()
                        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                        .collect::<serde_json::Map<_, _>>()
                        .into(),
                );
            }
            out.into()
        }
    }
}

fn price_value(p: &plan::file::PriceFile) -> serde_json::Value {
    let mut price = serde_json::Map::new();
    price.insert("input".into(), p.input.into());
    if let Some(c) = p.cached_input {
        price.insert("cached_input".into(), c.into());
    }
    price.insert("output".into(), p.output.into());
    price.into()
}

/// Which keys come first in a map of the plan.
#[derive(Debug, Clone, Copy)]
enum Keys {
    Top,
    Task,
    Check,
    Other,
}

impl Keys {
    fn order(self) -> &'static [&'static str] {
        match self {
            Keys::Top => &[
                "version", "name", "repo", "base", "sandbox", "protect", "budget", "defaults",
                "tasks", "merge",
            ],
            Keys::Task => &[
                "id", "deps", "prompt", "agent", "agents", "attempts", "select", "judge",
                "touches", "checks", "score",
            ],
            Keys::Check => &["name", "run", "cwd", "timeout", "paths", "baseline"],
            Keys::Other => &["command", "preset", "builtin", "api", "model"],
        }
    }

    fn child(self, key: &str) -> Keys {
        match (self, key) {
            (Keys::Top, "tasks" | "defaults") => Keys::Task,
            (Keys::Task, "checks") | (Keys::Other, "verify") => Keys::Check,
            _ => Keys::Other,
        }
    }
}

/// A plan value serialised with its keys in the plan format's order.
struct Ordered<'a>(&'a serde_json::Value, Keys);

impl Serialize for Ordered<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            serde_json::Value::Object(map) => {
                let order = self.1.order();
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort_by_key(|k| order.iter().position(|o| o == k).unwrap_or(order.len()));
                let mut out = s.serialize_map(Some(keys.len()))?;
                for key in keys {
                    out.serialize_entry(key, &Ordered(&map[key], self.1.child(key)))?;
                }
                out.end()
            }
            serde_json::Value::Array(items) => {
                // A task list's items are tasks; a checks list's are checks.
                let mut out = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    out.serialize_element(&Ordered(item, self.1))?;
                }
                out.end()
            }
            other => other.serialize(s),
        }
    }
}

/// The planned plan as braid shows it before running it: its DAG in layers, and for each
/// task its prompt's first line, its checks and its `touches`.
pub fn describe(plan: &Plan) -> String {
    let mut out = String::new();
    let dag = Dag::new(&plan.tasks);
    let layers = dag.layers();
    let _ = write!(
        out,
        "the plan: {} task(s) in {} layer(s), on {} at {}",
        plan.tasks.len(),
        layers.len(),
        plan.repo.display(),
        crate::report::short(&plan.base_commit),
    );
    if plan.base_rev != plan.base_commit {
        let _ = write!(out, " ({})", plan.base_rev);
    }
    out.push('\n');
    for (i, layer) in layers.iter().enumerate() {
        let _ = writeln!(out, "  layer {}:", i + 1);
        for &t in layer {
            let task = &plan.tasks[t];
            let summary = task
                .prompt
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or_default();
            let mut head = format!("    {} ×{}", task.id, task.attempts);
            if !task.deps.is_empty() {
                let _ = write!(head, " (after {})", task.deps.join(", "));
            }
            let _ = writeln!(out, "{head}: {}", braid_worker::presets::cut(summary, 100));
            if task.checks.is_empty() {
                let _ = writeln!(out, "      checks: none");
            }
            for check in &task.checks {
                let _ = writeln!(
                    out,
                    "      check {}: {}{}",
                    check.name,
                    braid_worker::presets::cut(&check.run, 100),
                    if check.baseline {
                        ""
                    } else {
                        " (baseline: false)"
                    }
                );
            }
            if !task.touches.is_empty() {
                let _ = writeln!(out, "      touches: {}", task.touches.join(", "));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_yaml_block_of_a_reply_is_its_plan() {
        let reply = "Here is a sketch:\n```sh\nls\n```\nAnd the plan:\n```yaml\nversion: 1\ntasks: []\n```\nDone.";
        assert_eq!(
            last_block(reply).as_deref(),
            Some("version: 1\ntasks: []\n")
        );
        assert_eq!(last_block("no plan"), None);
        assert_eq!(
            last_block("```yaml\nname: x\n```"),
            None,
            "no tasks: no plan"
        );
    }

    #[test]
    fn keys_come_in_the_plan_formats_order() {
        let value = serde_json::json!({
            "tasks": [{"checks": [{"run": "true", "name": "c"}], "prompt": "p", "id": "a"}],
            "version": 1,
        });
        let text = serde_saphyr::to_string(&Ordered(&value, Keys::Top)).unwrap();
        let at = |needle: &str| text.find(needle).unwrap();
        assert!(at("version") < at("tasks"), "{text}");
        assert!(
            at("id:") < at("prompt:") && at("prompt:") < at("checks:"),
            "{text}"
        );
        assert!(at("name: c") < at("run:"), "{text}");
    }
}
