//! Loading a plan: parse, check everything, and report every problem at once.
//!
//! YAML syntax errors, wrong types and unknown keys stop the parse (serde cannot go past
//! them) and are reported with their place. Everything else (ids, deps, cycles, prompts,
//! durations, attempts, repository and base) is checked in full, and every problem found is
//! reported together. Nothing is written.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use braid_shared::git::Git;
use serde_saphyr::{Location, Spanned};

use super::file::{
    AgentFile, BudgetFile, CheckFile, PlanFile, PublishFile, SandboxFile, Scalar, ScoreFile,
    Settings, TaskFile,
};
use super::{
    Agent, Budget, Check, DEFAULT_CHECK_TIMEOUT, DEFAULT_GRACE, DEFAULT_MAX_REBASES,
    DEFAULT_TIMEOUT, Judge, MAX_ATTEMPTS, MAX_REBASES, MAX_RETRIES, MergeConfig, Network,
    OnConflict, Plan, PlanError, PlanErrors, Publish, Sandbox, Score, Select, Task, parse_duration,
};
use crate::dag;

/// What every task inherits from the plan's top level.
struct Common {
    on_conflict: OnConflict,
    sandbox: Sandbox,
    protect: Vec<String>,
}

/// Where a planning agent's plan was planned: braid, not the plan, names the repository
/// and base, and tasks that name no agent run on the one braid was given.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The repository's working tree.
    pub repo: PathBuf,
    /// The base commit.
    pub base: String,
    /// The agent for tasks that name none.
    pub agent: Option<AgentFile>,
}

/// Reads, checks and resolves the plan at `path`.
pub async fn load(path: &Path) -> Result<Plan, PlanErrors> {
    load_with(path, None, None, None).await
}

/// Reads, checks and resolves the plan at `path`, fanned over repositories, for one of
/// them: its clone is the repository and its base the base, and the task is that
/// repository's target alone.
pub async fn load_for_repo(path: &Path, repo: &super::repos::ForRepo) -> Result<Plan, PlanErrors> {
    load_with(path, None, Some(&repo.base), Some(repo)).await
}

/// Reads, checks and resolves the plan at `path` as of the commit `base`, whatever its own
/// `base` says: a re-run of an earlier run's failures starts where that run did (its
/// targets are found there too).
pub async fn load_at(path: &Path, base: &str) -> Result<Plan, PlanErrors> {
    load_with(path, None, Some(base), None).await
}

/// Reads, checks and resolves the plan at `path`, written by a planning agent on `origin`:
/// its own `repo` and `base` are set aside, and `prompt_file` is refused (the plan must
/// hold its prompts wherever it is saved).
pub async fn load_planned(path: &Path, origin: &Origin) -> Result<Plan, PlanErrors> {
    load_with(path, Some(origin), None, None).await
}

/// An agent as `--agent` gives it: a preset's name or an agent in YAML
/// (`{command: [./planner.sh]}`); the agent, and the value as written.
pub fn agent_arg(text: &str) -> Result<(Agent, AgentFile), PlanErrors> {
    let file = PathBuf::from("--agent");
    let one = |at: Option<(u64, u64)>, message: String| {
        PlanErrors(vec![PlanError {
            file: file.clone(),
            at,
            message,
        }])
    };
    let options = serde_saphyr::options! { with_snippet: false };
    let written: AgentFile = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let at = e
            .location()
            .map(|l| (l.line(), l.column()))
            .filter(|(l, _)| *l > 0);
        one(at, serde_message(&e))
    })?;
    let mut v = Validator {
        file: file.clone(),
        errors: Vec::new(),
        origin: None,
        base: None,
        for_repo: None,
    };
    match v.agent(&written, TOP) {
        Some(agent) if v.errors.is_empty() => Ok((agent, written)),
        _ => Err(PlanErrors(v.errors)),
    }
}

async fn load_with(
    path: &Path,
    origin: Option<&Origin>,
    base: Option<&str>,
    for_repo: Option<&super::repos::ForRepo>,
) -> Result<Plan, PlanErrors> {
    let shown = path.to_owned();
    let one = |message: String| {
        PlanErrors(vec![PlanError {
            file: shown.clone(),
            at: None,
            message,
        }])
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| one(format!("cannot read the plan: {e}")))?;
    let absolute = std::path::absolute(path).map_err(|e| one(format!("bad path: {e}")))?;
    let dir = absolute
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("/"));

    let options = serde_saphyr::options! { with_snippet: false };
    let file: PlanFile = serde_saphyr::from_str_with_options(&text, options).map_err(|e| {
        let at = e
            .location()
            .map(|l| (l.line(), l.column()))
            .filter(|(l, _)| *l > 0);
        PlanErrors(vec![PlanError {
            file: shown.clone(),
            at,
            message: serde_message(&e),
        }])
    })?;

    let mut v = Validator {
        file: shown.clone(),
        errors: Vec::new(),
        origin: origin.cloned(),
        base: base.map(str::to_owned),
        for_repo: for_repo.cloned(),
    };
    let plan = v.check(file, &absolute, &dir).await;
    match plan {
        Some(plan) if v.errors.is_empty() => Ok(plan),
        _ => {
            // Settings in `defaults` are checked once per task that inherits them.
            v.errors
                .sort_by(|a, b| (a.at, &a.message).cmp(&(b.at, &b.message)));
            v.errors.dedup();
            Err(PlanErrors(v.errors))
        }
    }
}

/// The text of the workspace manifests among `paths` at `base`, by path.
fn manifests(repo: &Path, base: &str, paths: &[String]) -> HashMap<String, String> {
    const NAMES: &[&str] = &[
        "Cargo.toml",
        "package.json",
        "pnpm-workspace.yaml",
        "go.mod",
        "go.work",
        "pyproject.toml",
    ];
    let Ok(merger) = crate::merge::Merger::open(repo) else {
        return HashMap::new();
    };
    let Ok(tree) = merger.tree_of(base) else {
        return HashMap::new();
    };
    paths
        .iter()
        .filter(|p| NAMES.contains(&p.rsplit('/').next().unwrap_or(p)))
        .filter(|p| !p.split('/').any(|part| part == "node_modules"))
        .filter_map(|p| Some((p.clone(), merger.read_text(&tree, p).ok()??)))
        .collect()
}

/// serde-saphyr's message without the location it would add itself.
fn serde_message(error: &serde_saphyr::Error) -> String {
    let text = error.to_string();
    let first = text.lines().next().unwrap_or_default().trim();
    // Drop a trailing " at line N column M" that repeats the location.
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_owned(),
        None => first.to_owned(),
    }
}

struct Validator {
    file: PathBuf,
    errors: Vec<PlanError>,
    /// Set for a planning agent's plan.
    origin: Option<Origin>,
    /// The commit to start from instead of the plan's `base`.
    base: Option<String>,
    /// The repository of a batch over repositories this plan is loaded for.
    for_repo: Option<super::repos::ForRepo>,
}

/// The task id that would clash with the result branch `braid/<run>/result`.
pub const RESERVED_ID: &str = "result";

/// The start of the document, for problems that have no node of their own.
const TOP: (u64, u64) = (1, 1);

fn place(location: &Location) -> (u64, u64) {
    (location.line().max(1), location.column().max(1))
}

impl Validator {
    fn error(&mut self, at: (u64, u64), message: impl Into<String>) {
        let error = PlanError {
            file: self.file.clone(),
            at: Some(at),
            message: message.into(),
        };
        // A setting of `defaults` is checked for every task that takes it: once is enough.
        if self.errors.contains(&error) {
            return;
        }
        self.errors.push(error);
    }

    async fn check(&mut self, file: PlanFile, plan_path: &Path, dir: &Path) -> Option<Plan> {
        match &file.version {
            None => self.error(TOP, "the plan has no `version`; write `version: 1`"),
            Some(v) if !matches!(v.value, Scalar::Int(1)) => self.error(
                place(&v.referenced),
                "unsupported `version`; this braid reads version 1",
            ),
            Some(_) => {}
        }

        let defaults = file.defaults.unwrap_or_default();
        let mut tasks = Vec::new();
        match &file.tasks {
            None => self.error(TOP, "the plan has no `tasks`"),
            Some(list) if list.value.is_empty() => self.error(
                place(&list.referenced),
                "`tasks` is empty; a plan needs at least one task",
            ),
            Some(_) => {}
        }
        let task_files = file.tasks.map(|t| t.value).unwrap_or_default();
        let mut seen: HashMap<String, (u64, u64)> = HashMap::new();
        for task in &task_files {
            let id = &task.id.value;
            let at = place(&task.id.referenced);
            if !valid_id(id) {
                self.error(at, format!("invalid task id {id:?}: use 1 to 63 characters from a-z, 0-9, `_` and `-`, starting with a letter or digit"));
            } else if id == RESERVED_ID {
                self.error(
                    at,
                    format!(
                        "task id {id:?} is reserved: braid/<run>/{RESERVED_ID} is the result branch"
                    ),
                );
            } else if let Some((line, _)) = seen.get(id) {
                self.error(
                    at,
                    format!("duplicate task id {id:?} (first defined on line {line})"),
                );
            } else {
                seen.insert(id.clone(), at);
            }
        }
        let merge = self.merge(file.merge.as_ref());
        let on_conflict = merge.as_ref().map_or(OnConflict::Report, |m| m.on_conflict);
        let sandbox = match &file.sandbox {
            Some(s) => self.sandbox(s, dir),
            None => Some(Sandbox::default()),
        };
        let protect = match &file.protect {
            Some(globs) => self.protect(globs, "`protect`"),
            None => Some(Vec::new()),
        };
        let run_budget = self.budget(file.budget.as_ref(), "the run");
        let run_wide = Common {
            on_conflict,
            sandbox: sandbox.clone().unwrap_or_default(),
            protect: protect.clone().unwrap_or_default(),
        };
        for task in &task_files {
            if let Some(resolved) = self.task(task, &defaults, &run_wide, &seen, dir) {
                tasks.push(resolved);
            }
        }
        self.cycles(&task_files, &seen);

        let planned = self.origin.clone();
        let repo = match (&planned, &self.for_repo) {
            (_, Some(one)) => {
                let clone = one.clone.clone();
                self.repo(None, &clone).await
            }
            (Some(origin), None) => self.repo(None, &origin.repo).await,
            (None, None) => self.repo(file.repo.as_ref(), dir).await,
        };
        let (repo, git_dir, base_rev, base_commit) = match repo {
            Some((repo, git_dir)) => {
                let rev = match (&planned, &self.base) {
                    (_, Some(base)) => base.clone(),
                    (Some(origin), None) => origin.base.clone(),
                    (None, None) => file
                        .base
                        .as_ref()
                        .map(|b| b.value.clone())
                        .unwrap_or_else(|| "HEAD".to_owned()),
                };
                let at = file
                    .base
                    .as_ref()
                    .map(|b| place(&b.referenced))
                    .unwrap_or(TOP);
                match Git::at(&repo).resolve_commit(&rev).await {
                    Ok(Some(commit)) => (repo, git_dir, rev, commit),
                    Ok(None) => {
                        self.error(
                            at,
                            format!("base {rev:?} does not name a commit in {}", repo.display()),
                        );
                        return None;
                    }
                    Err(e) => {
                        self.error(at, format!("cannot resolve base {rev:?}: {e}"));
                        return None;
                    }
                }
            }
            None => return None,
        };
        if self.errors.is_empty() {
            self.includes(&mut tasks, &task_files, &defaults, &repo)
                .await;
        }
        if self.errors.is_empty() {
            tasks = self.fan_out(tasks, &task_files, &repo, &base_commit).await;
        }
        if !self.errors.is_empty() {
            return None;
        }
        let overlaps = overlaps(&tasks, &repo, &base_commit).await;
        let warnings = tasks
            .iter()
            .filter(|t| t.checks.is_empty() && t.score.is_none())
            .map(|t| {
                format!(
                    "task {:?} has no checks: any attempt that changes something passes, and the smallest diff wins",
                    t.id
                )
            })
            .collect();
        Some(Plan {
            path: plan_path.to_owned(),
            name: file.name.map(|n| n.value),
            repo,
            git_dir,
            base_rev,
            base_commit,
            tasks,
            sandbox: match &defaults.sandbox {
                Some(s) => self.sandbox(s, dir)?,
                None => sandbox?,
            },
            merge: merge?,
            budget: run_budget?,
            overlaps,
            warnings,
            publish: self.publish(file.publish.as_ref())?,
            per_target: false,
            rerun_of: None,
            carried: BTreeMap::new(),
        })
    }

    /// Each task with `for_each` made once for each of its targets at `base`, and the
    /// deps on it made deps on all of them.
    async fn fan_out(
        &mut self,
        tasks: Vec<Task>,
        files: &[TaskFile],
        repo: &Path,
        base: &str,
    ) -> Vec<Task> {
        if files.iter().all(|f| f.for_each.is_none()) {
            return tasks;
        }
        let listed = Git::at(repo)
            .run(&["ls-tree", "-r", "-z", "--name-only", base])
            .await;
        let paths: Vec<String> = match listed {
            Ok(out) => out
                .split('\0')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
            Err(e) => {
                self.error(TOP, format!("cannot list the files of the base: {e}"));
                return tasks;
            }
        };
        // A target's id holds a dot, which no task id as written may: they never clash.
        let mut fanned: HashMap<String, Vec<String>> = HashMap::new();
        let mut out = Vec::new();
        for (task, file) in tasks.into_iter().zip(files) {
            let Some(spec) = &file.for_each else {
                out.push(task);
                continue;
            };
            let at = place(&spec.referenced);
            let found = match (&spec.value.repos, &self.for_repo) {
                (Some(_), Some(one)) => Ok(vec![super::targets::Target {
                    dir: String::new(),
                    name: one.repo.name.clone(),
                    slug: one.repo.slug.clone(),
                    repo: one.repo.text.clone(),
                }]),
                _ if spec.value.workspace == Some(true)
                    && spec.value.dirs.is_none()
                    && spec.value.marker.is_none()
                    && spec.value.repos.is_none() =>
                {
                    let read = manifests(repo, base, &paths);
                    super::targets::members(&paths, &|p: &str| read.get(p).cloned())
                }
                _ => super::targets::find(&spec.value, &paths),
            };
            let mut targets = match found {
                Ok(targets) => targets,
                Err(why) if spec.value.repos.is_some() => {
                    self.error(at, format!("task {:?}: {why}", task.id));
                    continue;
                }
                Err(why) => {
                    self.error(at, format!("task {:?}: {why} at the base", task.id));
                    continue;
                }
            };
            for target in targets.iter_mut().filter(|t| t.repo.is_empty()) {
                target.repo = repo.display().to_string();
            }
            let mut by_slug: HashMap<&str, &str> = HashMap::new();
            let mut ids = Vec::new();
            for target in &targets {
                if let Some(other) = by_slug.insert(&target.slug, &target.dir) {
                    self.error(
                        at,
                        format!(
                            "task {:?}: the folders {other} and {} make the same task id {}.{}; rename one",
                            task.id, target.dir, task.id, target.slug
                        ),
                    );
                    continue;
                }
                let one = super::targets::task_for(&task, target);
                ids.push(one.id.clone());
                out.push(one);
            }
            fanned.insert(task.id.clone(), ids);
        }
        for task in &mut out {
            let deps = std::mem::take(&mut task.deps);
            for dep in deps {
                match fanned.get(&dep) {
                    Some(targets) => task.deps.extend(targets.iter().cloned()),
                    None => task.deps.push(dep),
                }
            }
        }
        out
    }

    /// A `sandbox` as written, resolved: `off`, or its network and writable folders.
    fn sandbox(&mut self, value: &Spanned<SandboxFile>, dir: &Path) -> Option<Sandbox> {
        let at = place(&value.referenced);
        match &value.value {
            SandboxFile::Word(word) if word == "off" => Some(Sandbox {
                off: true,
                ..Sandbox::default()
            }),
            SandboxFile::Word(word) => {
                self.error(
                    at,
                    format!(
                        "`sandbox` is `off` or a map such as {{network: none, writable: [path]}}, not {word:?}"
                    ),
                );
                None
            }
            SandboxFile::Settings(settings) => {
                let before = self.errors.len();
                let network = match settings.network.as_deref() {
                    None => Network::Default,
                    Some("full") => Network::Full,
                    Some("none") => Network::None,
                    Some("model") => Network::Model,
                    Some(other) => {
                        self.error(
                            at,
                            format!("`network` is `none`, `model` or `full`, not {other:?}"),
                        );
                        Network::None
                    }
                };
                let mut writable = Vec::new();
                for path in &settings.writable {
                    let resolved = match path.strip_prefix("~/") {
                        Some(rest) => std::env::var_os("HOME")
                            .map(|home| PathBuf::from(home).join(rest))
                            .unwrap_or_else(|| PathBuf::from(path)),
                        None => dir.join(path),
                    };
                    match resolved.canonicalize() {
                        Ok(real) if real.is_dir() => writable.push(real),
                        _ => self.error(
                            at,
                            format!(
                                "`sandbox.writable`: {} is not an existing folder",
                                resolved.display()
                            ),
                        ),
                    }
                }
                (self.errors.len() == before).then_some(Sandbox {
                    off: false,
                    network,
                    writable,
                })
            }
        }
    }

    /// The globs of a `protect` list.
    fn protect(&mut self, globs: &Spanned<Vec<String>>, owner: &str) -> Option<Vec<String>> {
        let at = place(&globs.referenced);
        let before = self.errors.len();
        for text in &globs.value {
            if let Err(err) = braid_shared::paths::glob(text) {
                self.error(at, format!("{owner}: {err}"));
            }
        }
        (self.errors.len() == before).then(|| globs.value.clone())
    }

    fn task(
        &mut self,
        task: &TaskFile,
        defaults: &Settings,
        run_wide: &Common,
        ids: &HashMap<String, (u64, u64)>,
        dir: &Path,
    ) -> Option<Task> {
        let id = task.id.value.clone();
        let at = place(&task.id.referenced);
        let errors_before = self.errors.len();

        let prompt = match (&task.prompt, &task.prompt_file) {
            (Some(_), Some(file)) => {
                self.error(
                    place(&file.referenced),
                    format!("task {id:?} has both `prompt` and `prompt_file`; keep one"),
                );
                None
            }
            (None, None) => {
                self.error(
                    at,
                    format!("task {id:?} has no prompt; add `prompt` or `prompt_file`"),
                );
                None
            }
            (Some(prompt), None) => {
                if prompt.value.trim().is_empty() {
                    self.error(
                        place(&prompt.referenced),
                        format!("task {id:?} has an empty prompt"),
                    );
                }
                Some(prompt.value.clone())
            }
            (None, Some(file)) if self.origin.is_some() => {
                self.error(
                    place(&file.referenced),
                    format!("task {id:?}: write the prompt inline with `prompt:`; a planned plan holds its prompts, and `prompt_file` would not be found where the plan is saved"),
                );
                None
            }
            (None, Some(file)) => self.prompt_file(&id, file, dir),
        };

        let mut deps = Vec::new();
        for dep in task.deps.iter().flatten() {
            let name = &dep.value;
            let dep_at = place(&dep.referenced);
            if name == &id {
                self.error(dep_at, format!("task {id:?} depends on itself"));
            } else if !ids.contains_key(name) {
                self.error(
                    dep_at,
                    format!("task {id:?} depends on unknown task {name:?}"),
                );
            } else if deps.contains(name) {
                self.error(
                    dep_at,
                    format!("task {id:?} lists dependency {name:?} twice"),
                );
            } else {
                deps.push(name.clone());
            }
        }

        let agents = self.agents(&id, at, task, defaults);
        let mut setup = Vec::new();
        for step in task
            .setup
            .as_ref()
            .or(defaults.setup.as_ref())
            .into_iter()
            .flatten()
        {
            if step.run.value.trim().is_empty() {
                self.error(
                    place(&step.run.referenced),
                    format!("task {id:?}: a `setup` command is empty"),
                );
            }
            if let Some(timeout) = self.duration(step.timeout.as_ref(), DEFAULT_CHECK_TIMEOUT) {
                setup.push((step.run.value.clone(), timeout));
            }
        }
        if let Some(include) = task.include.as_ref().or(defaults.include.as_ref()) {
            for path in &include.value {
                let p = Path::new(path);
                if path.trim().is_empty()
                    || p.is_absolute()
                    || p.components().any(|c| {
                        matches!(
                            c,
                            std::path::Component::ParentDir | std::path::Component::CurDir
                        )
                    })
                    || p.components().next() == Some(std::path::Component::Normal(".git".as_ref()))
                {
                    self.error(
                        place(&include.referenced),
                        format!(
                            "task {id:?}: `include` path {path:?} must be relative to the repository's root, inside it and outside .git"
                        ),
                    );
                }
            }
        }
        let budget = self.budget(
            task.budget.as_ref().or(defaults.budget.as_ref()),
            &format!("task {id:?}"),
        );
        let requires = task
            .requires
            .as_ref()
            .or(defaults.requires.as_ref())
            .map_or(Some(BTreeMap::new()), |r| self.requires(r, &id));
        let stall = match task.stall.as_ref().or(defaults.stall.as_ref()) {
            Some(v) => self.duration(Some(v), Duration::ZERO).map(Some),
            None => Some(None),
        };
        let attempts = self.attempts(task.attempts.as_ref().or(defaults.attempts.as_ref()));
        let timeout = self.duration(
            task.timeout.as_ref().or(defaults.timeout.as_ref()),
            DEFAULT_TIMEOUT,
        );
        let select_written = task.select.as_ref().or(defaults.select.as_ref());
        let select = self.select(select_written);
        let judge = match (select, task.judge.as_ref().or(defaults.judge.as_ref())) {
            (Some(Select::Judge), None) => {
                self.error(
                    select_written.map_or(at, |s| place(&s.referenced)),
                    format!("task {id:?}: `select: judge` needs a reviewing agent; add `judge: {{agent: codex, criteria: \"...\"}}`"),
                );
                None
            }
            (Some(Select::Judge), Some(judge)) => self.judge(&id, judge).map(Some),
            (_, Some(judge)) if task.judge.is_some() => {
                self.error(
                    place(&judge.referenced),
                    format!("task {id:?} has a `judge` but picks its winner by `{}`; write `select: judge` to use it", select.map_or("best", Select::name)),
                );
                None
            }
            _ => Some(None),
        };
        let checks = self.checks(
            task.checks.as_ref().or(defaults.checks.as_ref()),
            &format!("task {id:?}"),
        );
        let score = match task.score.as_ref().or(defaults.score.as_ref()) {
            Some(score) => self.score(&score.value).map(Some),
            None => Some(None),
        };
        let retries = self.retries(task.retries.as_ref().or(defaults.retries.as_ref()));
        let on_conflict = match &task.on_conflict {
            Some(v) => self.on_conflict(v),
            None => Some(run_wide.on_conflict),
        };
        let sandbox = match task.sandbox.as_ref().or(defaults.sandbox.as_ref()) {
            Some(s) => self.sandbox(s, dir),
            None => Some(run_wide.sandbox.clone()),
        };
        let grace = self.duration(
            task.grace.as_ref().or(defaults.grace.as_ref()),
            DEFAULT_GRACE,
        );
        let touches = match &task.touches {
            Some(globs) if globs.value.is_empty() => {
                self.error(
                    place(&globs.referenced),
                    format!("task {id:?}: `touches` lists no glob; leave it out if the task does not know"),
                );
                None
            }
            Some(globs) => self.globs(globs, &format!("task {id:?}: `touches`")),
            None => Some(Vec::new()),
        };
        let mut protect = run_wide.protect.clone();
        if let Some(globs) = &task.protect
            && let Some(own) = self.protect(globs, &format!("task {id:?}: `protect`"))
        {
            protect.extend(own);
        }
        if let (Some(sandbox), Some(agents)) = (&sandbox, &agents)
            && sandbox.network == Network::Model
            && agents.iter().any(|a| a.preset.is_empty())
        {
            let place_of = task
                .sandbox
                .as_ref()
                .or(defaults.sandbox.as_ref())
                .map(|s| place(&s.referenced))
                .unwrap_or(at);
            self.error(
                place_of,
                format!(
                    "task {id:?}: `network: model` lets through only an agent's model endpoint, and a command agent names none; use `none` or `full`"
                ),
            );
        }
        if self.errors.len() > errors_before {
            return None;
        }
        Some(Task {
            target: None,
            on_conflict: on_conflict?,
            id,
            prompt: prompt?,
            deps,
            agents: agents?,
            budget: budget?,
            stall: stall?,
            setup,
            // Read once the repository is known ([`Checker::includes`]).
            include: Vec::new(),
            touches: touches?,
            attempts: attempts?,
            timeout: timeout?,
            select: select?,
            judge: judge?,
            checks: checks?,
            score: score?,
            retries: retries?,
            sandbox: sandbox?,
            grace: grace?,
            protect,
            requires: requires?,
        })
    }

    /// A `requires` map: labels as `braid worker --label` takes them.
    fn requires(
        &mut self,
        labels: &Spanned<BTreeMap<String, String>>,
        id: &str,
    ) -> Option<BTreeMap<String, String>> {
        let at = place(&labels.referenced);
        let fine = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/'))
        };
        let mut ok = true;
        for (key, value) in &labels.value {
            if !fine(key) || !fine(value) {
                self.error(
                    at,
                    format!(
                        "task {id:?}: `requires` label {key}={value} is not a label: use 1 to 63 \
                         characters from letters, digits, `.`, `-`, `_` and `/` on each side"
                    ),
                );
                ok = false;
            }
        }
        ok.then(|| labels.value.clone())
    }

    fn prompt_file(&mut self, id: &str, file: &Spanned<String>, dir: &Path) -> Option<String> {
        let at = place(&file.referenced);
        let joined = dir.join(&file.value);
        let Ok(real) = joined.canonicalize() else {
            self.error(
                at,
                format!("task {id:?}: prompt file {:?} does not exist", file.value),
            );
            return None;
        };
        let root = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
        if !real.starts_with(&root) {
            self.error(
                at,
                format!(
                    "task {id:?}: prompt file {:?} lies outside the plan's folder {}",
                    file.value,
                    root.display()
                ),
            );
            return None;
        }
        match std::fs::read_to_string(&real) {
            Ok(text) if text.trim().is_empty() => {
                self.error(
                    at,
                    format!("task {id:?}: prompt file {:?} is empty", file.value),
                );
                None
            }
            Ok(text) => Some(text),
            Err(e) => {
                self.error(
                    at,
                    format!("task {id:?}: cannot read prompt file {:?}: {e}", file.value),
                );
                None
            }
        }
    }

    /// The agents of a task: its own `agents` or `agent`, else the defaults'.
    fn agents(
        &mut self,
        id: &str,
        task_at: (u64, u64),
        task: &TaskFile,
        defaults: &Settings,
    ) -> Option<Vec<Agent>> {
        let (one, many) = if task.agent.is_some() || task.agents.is_some() {
            (task.agent.as_ref(), task.agents.as_ref())
        } else {
            (defaults.agent.as_ref(), defaults.agents.as_ref())
        };
        match (one, many) {
            (Some(one), Some(many)) => {
                self.error(
                    place(&many.referenced),
                    format!(
                        "task {id:?} sets both `agent` (line {}) and `agents`; keep one: `agents` is a bake-off over several",
                        place(&one.referenced).0
                    ),
                );
                None
            }
            (Some(one), None) => self
                .agent(&one.value, place(&one.referenced))
                .map(|a| vec![a]),
            (None, Some(many)) if many.value.is_empty() => {
                self.error(
                    place(&many.referenced),
                    format!("task {id:?}: `agents` is empty; name at least one agent"),
                );
                None
            }
            (None, Some(many)) => {
                let at = place(&many.referenced);
                let before = self.errors.len();
                let agents: Vec<Agent> = many
                    .value
                    .iter()
                    .filter_map(|a| self.agent(a, at))
                    .collect();
                (self.errors.len() == before).then_some(agents)
            }
            (None, None) => match self.origin.as_ref().and_then(|o| o.agent.clone()) {
                Some(agent) => self.agent(&agent, TOP).map(|a| vec![a]),
                None => {
                    self.error(
                        task_at,
                        format!(
                            "task {id:?} has no agent; set `agent` on the task or in `defaults`"
                        ),
                    );
                    None
                }
            },
        }
    }

    fn agent(&mut self, agent: &AgentFile, at: (u64, u64)) -> Option<Agent> {
        let presets: Vec<&str> = braid_worker::presets::all()
            .iter()
            .map(|p| p.name())
            .collect();
        let known = |name: &str| presets.contains(&name);
        let unknown = |name: &str| {
            format!(
                "unknown agent preset {name:?}; braid has {}, the built-in agent (`{{builtin: {{api: responses, model: NAME}}}}`) and any command (`{{command: [...]}}`)",
                presets.join(", ")
            )
        };
        match agent {
            AgentFile::Preset(name) if known(name) => Some(Agent {
                preset: name.clone(),
                ..Agent::command(Vec::new())
            }),
            AgentFile::Preset(name) => {
                self.error(at, unknown(name));
                None
            }
            AgentFile::Map(map) => {
                let before = self.errors.len();
                let argv: Vec<String> = map.command.iter().flatten().map(Scalar::text).collect();
                let kinds = [
                    map.command.is_some(),
                    map.preset.is_some(),
                    map.builtin.is_some(),
                ];
                match kinds.iter().filter(|k| **k).count() {
                    0 => self.error(
                        at,
                        "the agent names none of `command`, `preset` and `builtin`",
                    ),
                    1 => {}
                    _ => self.error(
                        at,
                        "an agent is one of `command`, `preset` and `builtin`, not several",
                    ),
                }
                if map.command.is_some() {
                    if argv.first().is_none_or(|p| p.trim().is_empty()) {
                        self.error(
                            at,
                            "the agent's `command` is empty; give the program and its arguments",
                        );
                    }
                    for key in preset_keys(map) {
                        self.error(
                            at,
                            format!(
                                "`{key}` is for presets; a command agent takes its arguments in `command`"
                            ),
                        );
                    }
                }
                if let Some(name) = &map.preset
                    && !known(name)
                {
                    self.error(at, unknown(name));
                }
                let builtin = map.builtin.as_ref();
                if let Some(b) = builtin {
                    if braid_worker::builtin::wire::Api::named(&b.api).is_none() {
                        self.error(
                            at,
                            format!(
                                "`builtin.api` is `responses`, `chat` or `anthropic`, not {:?}",
                                b.api
                            ),
                        );
                    }
                    if b.model.trim().is_empty() {
                        self.error(at, "`builtin.model` is empty; name the model");
                    }
                    for key in preset_keys(map) {
                        self.error(
                            at,
                            format!("`{key}` goes inside `builtin:` for the built-in agent"),
                        );
                    }
                }
                let base_url = builtin
                    .and_then(|b| b.base_url.clone())
                    .or(map.base_url.clone());
                let key_env = builtin
                    .and_then(|b| b.api_key_env.clone())
                    .or(map.api_key_env.clone());
                let price = builtin.and_then(|b| b.price.clone()).or(map.price.clone());
                if let Some(url) = &base_url
                    && !(url.starts_with("http://") || url.starts_with("https://"))
                {
                    self.error(
                        at,
                        format!("`base_url` {url:?} is not an http:// or https:// address"),
                    );
                }
                if let Some(var) = &key_env
                    && (var.is_empty()
                        || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                {
                    self.error(
                        at,
                        format!("`api_key_env` {var:?} is not the name of an environment variable"),
                    );
                }
                if let Some(price) = &price
                    && (price.input < 0.0
                        || price.output < 0.0
                        || price.cached_input.is_some_and(|c| c < 0.0))
                {
                    self.error(
                        at,
                        "`price` values are dollars per million tokens, not negative",
                    );
                }
                if self.errors.len() > before {
                    return None;
                }
                Some(Agent {
                    command: argv,
                    preset: match builtin {
                        Some(_) => "builtin".to_owned(),
                        None => map.preset.clone().unwrap_or_default(),
                    },
                    model: builtin
                        .map(|b| b.model.clone())
                        .or(map.model.clone())
                        .unwrap_or_default(),
                    args: map.args.iter().map(Scalar::text).collect(),
                    base_url: base_url.unwrap_or_default(),
                    api_key_env: key_env.unwrap_or_default(),
                    price: price.map(|p| (p.input, p.cached_input.unwrap_or(p.input), p.output)),
                    api: builtin.map(|b| b.api.clone()).unwrap_or_default(),
                    max_turns: builtin.and_then(|b| b.max_turns).unwrap_or(0),
                    env: map.env.clone(),
                })
            }
        }
    }

    /// Reads each task's `include` files from the user's checkout: each must exist, be a
    /// file, and be ignored by git (a tracked file is in every worktree already).
    async fn includes(
        &mut self,
        tasks: &mut [Task],
        files: &[TaskFile],
        defaults: &Settings,
        repo: &Path,
    ) {
        /// Most bytes a task may copy into each worktree.
        const INCLUDE_MAX: u64 = 16 << 20;
        let git = Git::at(repo);
        for (task, file) in tasks.iter_mut().zip(files) {
            let Some(list) = file.include.as_ref().or(defaults.include.as_ref()) else {
                continue;
            };
            let at = place(&list.referenced);
            let mut total = 0;
            for path in &list.value {
                let full = repo.join(path);
                let meta = match std::fs::symlink_metadata(&full) {
                    Ok(meta) if meta.is_file() => meta,
                    Ok(_) => {
                        self.error(
                            at,
                            format!(
                                "task {:?}: `include` {path:?} is not a plain file in {}",
                                task.id,
                                repo.display()
                            ),
                        );
                        continue;
                    }
                    Err(_) => {
                        self.error(
                            at,
                            format!(
                                "task {:?}: `include` {path:?} does not exist in {}",
                                task.id,
                                repo.display()
                            ),
                        );
                        continue;
                    }
                };
                let tracked = git
                    .run(&["ls-files", "--", path])
                    .await
                    .map(|out| !out.trim().is_empty())
                    .unwrap_or(false);
                if tracked {
                    self.error(at, format!("task {:?}: `include` {path:?} is tracked by git, so every worktree has it already", task.id));
                    continue;
                }
                total += meta.len();
                if total > INCLUDE_MAX {
                    self.error(
                        at,
                        format!(
                            "task {:?}: `include` files come to more than 16 MiB",
                            task.id
                        ),
                    );
                    break;
                }
                match std::fs::read(&full) {
                    Ok(content) => {
                        use std::os::unix::fs::PermissionsExt;
                        task.include.push(super::Included {
                            path: path.clone(),
                            content: std::sync::Arc::new(content),
                            executable: meta.permissions().mode() & 0o111 != 0,
                        });
                    }
                    Err(e) => self.error(
                        at,
                        format!("task {:?}: cannot read `include` {path:?}: {e}", task.id),
                    ),
                }
            }
        }
    }

    /// `publish: {per_hour: N}`; `Some(None)` when it is not there, `None` when it is wrong.
    fn publish(&mut self, value: Option<&Spanned<PublishFile>>) -> Option<Option<Publish>> {
        let Some(value) = value else {
            return Some(None);
        };
        let Some(per_hour) = &value.value.per_hour else {
            self.error(
                place(&value.referenced),
                "`publish` has nothing to say: give `per_hour: N`, or leave it out".to_owned(),
            );
            return None;
        };
        match per_hour.value {
            Scalar::Int(n) if (1..=u32::MAX as i64).contains(&n) => {
                Some(Some(Publish { per_hour: n as u32 }))
            }
            _ => {
                self.error(
                    place(&per_hour.referenced),
                    format!(
                        "`publish.per_hour` must be a whole number of branches an hour, at least 1, not {}",
                        shown(&per_hour.value)
                    ),
                );
                None
            }
        }
    }

    /// A `budget` as written; `owner` says whose it is in errors.
    fn budget(&mut self, value: Option<&Spanned<BudgetFile>>, owner: &str) -> Option<Budget> {
        let Some(value) = value else {
            return Some(Budget::default());
        };
        let at = place(&value.referenced);
        let before = self.errors.len();
        let b = &value.value;
        let number = |v: &Spanned<Scalar>| match v.value {
            Scalar::Int(n) if n > 0 => Some(n as f64),
            Scalar::Float(x) if x > 0.0 => Some(x),
            _ => None,
        };
        let mut budget = Budget::default();
        if let Some(usd) = &b.usd {
            match number(usd) {
                Some(x) => budget.usd = x,
                None => self.error(
                    place(&usd.referenced),
                    format!(
                        "{owner}: `budget.usd` must be a positive number of dollars, not {}",
                        shown(&usd.value)
                    ),
                ),
            }
        }
        for (key, field) in [("tokens", &b.tokens), ("turns", &b.turns)] {
            if let Some(v) = field {
                match v.value {
                    Scalar::Int(n) if n > 0 => {
                        if key == "tokens" {
                            budget.tokens = n as u64;
                        } else {
                            budget.turns = n.min(i64::from(u32::MAX)) as u32;
                        }
                    }
                    _ => self.error(
                        place(&v.referenced),
                        format!(
                            "{owner}: `budget.{key}` must be a positive whole number, not {}",
                            shown(&v.value)
                        ),
                    ),
                }
            }
        }
        if self.errors.len() == before && !budget.is_set() {
            self.error(
                at,
                format!("{owner}: `budget` sets no limit; give `usd`, `tokens` or `turns`"),
            );
        }
        (self.errors.len() == before).then_some(budget)
    }

    fn attempts(&mut self, value: Option<&Spanned<Scalar>>) -> Option<u32> {
        let Some(value) = value else { return Some(1) };
        match value.value {
            Scalar::Int(n) if (1..=i64::from(MAX_ATTEMPTS)).contains(&n) => Some(n as u32),
            _ => {
                self.error(
                    place(&value.referenced),
                    format!(
                        "`attempts` must be a whole number from 1 to {MAX_ATTEMPTS}, not {}",
                        shown(&value.value)
                    ),
                );
                None
            }
        }
    }

    fn duration(&mut self, value: Option<&Spanned<Scalar>>, default: Duration) -> Option<Duration> {
        let Some(value) = value else {
            return Some(default);
        };
        match &value.value {
            Scalar::Str(text) => parse_duration(text).or_else(|| {
                self.error(place(&value.referenced), format!("bad duration {text:?}: write a number and a unit, such as `90s`, `15m` or `2h`"));
                None
            }),
            other => {
                self.error(place(&value.referenced), format!("bad duration {}: write a number and a unit, such as `90s`, `15m` or `2h`", shown(other)));
                None
            }
        }
    }

    /// `judge:` of task `id`, checked.
    fn judge(&mut self, id: &str, judge: &Spanned<super::file::JudgeFile>) -> Option<Judge> {
        let at = place(&judge.referenced);
        let before = self.errors.len();
        let agent = match &judge.value.agent {
            Some(agent) => self.agent(agent, at),
            None => {
                self.error(
                    at,
                    format!("task {id:?}: `judge` names no `agent`; give the reviewing agent, such as `agent: claude`"),
                );
                None
            }
        };
        let max_pairs = match &judge.value.max_pairs {
            None => super::DEFAULT_MAX_PAIRS,
            Some(v) => match v.value {
                Scalar::Int(n) if (1..=i64::from(super::MAX_PAIRS)).contains(&n) => n as u32,
                _ => {
                    self.error(
                        place(&v.referenced),
                        format!(
                            "`judge.max_pairs` must be a whole number from 1 to {}, not {}",
                            super::MAX_PAIRS,
                            shown(&v.value)
                        ),
                    );
                    0
                }
            },
        };
        (self.errors.len() == before).then(|| Judge {
            agent: agent.expect("no error, so an agent"),
            criteria: judge
                .value
                .criteria
                .clone()
                .unwrap_or_default()
                .trim()
                .to_owned(),
            max_pairs,
        })
    }

    fn select(&mut self, value: Option<&Spanned<String>>) -> Option<Select> {
        let Some(value) = value else {
            return Some(Select::Best);
        };
        match value.value.as_str() {
            "best" => Some(Select::Best),
            "first-pass" => Some(Select::FirstPass),
            "vote" => Some(Select::Vote),
            "judge" => Some(Select::Judge),
            other => {
                self.error(
                    place(&value.referenced),
                    format!(
                        "unknown `select` {other:?}; use `best`, `first-pass`, `vote` or `judge`"
                    ),
                );
                None
            }
        }
    }

    fn checks(&mut self, checks: Option<&Vec<CheckFile>>, owner: &str) -> Option<Vec<Check>> {
        let verify = owner == "merge.verify";
        let mut out = Vec::new();
        let mut names = HashSet::new();
        let before = self.errors.len();
        for check in checks.into_iter().flatten() {
            let at = place(&check.name.referenced);
            let name = check.name.value.clone();
            if !valid_id(&name) {
                self.error(
                    at,
                    format!("{owner}: invalid check name {name:?}: use a-z, 0-9, `_` and `-`"),
                );
            } else if !names.insert(name.clone()) {
                self.error(at, format!("{owner}: duplicate check name {name:?}"));
            }
            if check.run.value.trim().is_empty() {
                self.error(
                    place(&check.run.referenced),
                    format!("{owner}: check {name:?} has an empty `run`"),
                );
            }
            let paths = check
                .paths
                .as_ref()
                .map(|p| self.globs(p, &format!("{owner}: check {name:?}")));
            let baseline = match &check.baseline {
                Some(b) if verify => {
                    self.error(
                        place(&b.referenced),
                        format!(
                            "{owner}: `baseline` does not apply to merge.verify: the result is judged as it is"
                        ),
                    );
                    false
                }
                Some(b) => b.value,
                None => !verify,
            };
            let cwd = match &check.cwd {
                Some(cwd) if !braid_shared::paths::plain_relative(&cwd.value) => {
                    self.error(
                        place(&cwd.referenced),
                        format!(
                            "{owner}: check {name:?}: `cwd` {:?} must be a folder inside the repository, written from its root (no `..`, not absolute)",
                            cwd.value
                        ),
                    );
                    String::new()
                }
                Some(cwd) => cwd.value.trim_end_matches('/').to_owned(),
                None => String::new(),
            };
            let per_package = match &check.per {
                Some(per) if per.value == "package" => true,
                Some(per) => {
                    self.error(
                        place(&per.referenced),
                        format!(
                            "{owner}: check {name:?}: `per: {}` is not known; use `per: package`",
                            per.value
                        ),
                    );
                    false
                }
                None => false,
            };
            let names_package = [&check.run.value, &cwd]
                .iter()
                .any(|t| t.contains("{{package}}") || t.contains("{{package_dir}}"));
            if names_package && !per_package {
                self.error(
                    place(&check.run.referenced),
                    format!(
                        "{owner}: check {name:?} names `{{{{package}}}}` or `{{{{package_dir}}}}`, which only a check with `per: package` has"
                    ),
                );
            }
            if let Some(timeout) = self.duration(check.timeout.as_ref(), DEFAULT_CHECK_TIMEOUT) {
                out.push(Check {
                    name,
                    run: check.run.value.clone(),
                    timeout,
                    paths: paths.flatten().unwrap_or_default(),
                    baseline,
                    cwd,
                    per_package,
                });
            }
        }
        (self.errors.len() == before).then_some(out)
    }

    fn globs(&mut self, paths: &Spanned<Vec<String>>, owner: &str) -> Option<Vec<String>> {
        let at = place(&paths.referenced);
        if paths.value.is_empty() {
            self.error(
                at,
                format!("{owner}: `paths` lists no glob; leave it out to run the check always"),
            );
            return None;
        }
        let before = self.errors.len();
        for text in &paths.value {
            if let Err(err) = braid_shared::paths::glob(text) {
                self.error(at, format!("{owner}: {err}"));
            }
        }
        (self.errors.len() == before).then(|| paths.value.clone())
    }

    fn score(&mut self, score: &ScoreFile) -> Option<Score> {
        if score.run.value.trim().is_empty() {
            self.error(place(&score.run.referenced), "`score` has an empty `run`");
            return None;
        }
        let timeout = self.duration(score.timeout.as_ref(), DEFAULT_CHECK_TIMEOUT)?;
        Some(Score {
            run: score.run.value.clone(),
            timeout,
        })
    }

    fn retries(&mut self, value: Option<&Spanned<Scalar>>) -> Option<u32> {
        let Some(value) = value else { return Some(0) };
        match value.value {
            Scalar::Int(n) if (0..=i64::from(MAX_RETRIES)).contains(&n) => Some(n as u32),
            _ => {
                self.error(
                    place(&value.referenced),
                    format!(
                        "`retries` must be a whole number from 0 to {MAX_RETRIES}, not {}",
                        shown(&value.value)
                    ),
                );
                None
            }
        }
    }

    fn merge(&mut self, merge: Option<&super::file::MergeFile>) -> Option<MergeConfig> {
        let Some(merge) = merge else {
            return Some(MergeConfig {
                on_conflict: OnConflict::Report,
                max_rebases: DEFAULT_MAX_REBASES,
                verify: Vec::new(),
            });
        };
        let on_conflict = match &merge.on_conflict {
            None => Some(OnConflict::Report),
            Some(v) => self.on_conflict(v),
        };
        let max_rebases = match &merge.max_rebases {
            None => Some(DEFAULT_MAX_REBASES),
            Some(v) => match v.value {
                Scalar::Int(n) if (0..=MAX_REBASES as i64).contains(&n) => Some(n as u32),
                _ => {
                    self.error(
                        place(&v.referenced),
                        format!(
                            "`max_rebases` must be a whole number from 0 to {MAX_REBASES}, not {}",
                            shown(&v.value)
                        ),
                    );
                    None
                }
            },
        };
        let verify = self.checks(merge.verify.as_ref(), "merge.verify");
        Some(MergeConfig {
            on_conflict: on_conflict?,
            max_rebases: max_rebases?,
            verify: verify?,
        })
    }

    fn on_conflict(&mut self, value: &Spanned<String>) -> Option<OnConflict> {
        match value.value.as_str() {
            "report" => Some(OnConflict::Report),
            "rebase" => Some(OnConflict::Rebase),
            "agent" => Some(OnConflict::Agent),
            other => {
                self.error(
                    place(&value.referenced),
                    format!("unknown `on_conflict` {other:?}; use `report`, `rebase` or `agent`"),
                );
                None
            }
        }
    }

    async fn repo(
        &mut self,
        repo: Option<&Spanned<String>>,
        dir: &Path,
    ) -> Option<(PathBuf, PathBuf)> {
        let (path, at) = match repo {
            Some(r) => {
                let text = r.value.trim();
                if super::repos::is_url(text) {
                    self.error(place(&r.referenced), format!("repo {text:?} is a URL; this version of braid runs on a local repository: clone it and set `repo` to the clone's path"));
                    return None;
                }
                (dir.join(text), place(&r.referenced))
            }
            None => (dir.to_owned(), TOP),
        };
        if !path.is_dir() {
            self.error(at, format!("repo {} is not a folder", path.display()));
            return None;
        }
        let git = Git::at(&path);
        let (Ok(top), Ok(common)) = (git.toplevel().await, git.common_dir().await) else {
            self.error(
                at,
                format!(
                    "{} is not inside a git repository with a working tree",
                    path.display()
                ),
            );
            return None;
        };
        Some((top, common))
    }

    fn cycles(&mut self, tasks: &[TaskFile], ids: &HashMap<String, (u64, u64)>) {
        let order: Vec<&str> = tasks.iter().map(|t| t.id.value.as_str()).collect();
        let edges: BTreeMap<&str, Vec<&str>> = tasks
            .iter()
            .map(|t| {
                let deps = t
                    .deps
                    .iter()
                    .flatten()
                    .map(|d| d.value.as_str())
                    .filter(|d| *d != t.id.value && ids.contains_key(*d))
                    .collect();
                (t.id.value.as_str(), deps)
            })
            .collect();
        for cycle in dag::find_cycles(&order, &edges) {
            let at = ids.get(cycle[0]).copied().unwrap_or(TOP);
            let mut path: Vec<&str> = cycle.clone();
            path.push(cycle[0]);
            self.error(
                at,
                format!(
                    "dependency cycle: {} (each task depends on the next)",
                    path.join(" → ")
                ),
            );
        }
    }
}

fn shown(value: &Scalar) -> String {
    match value {
        Scalar::Int(n) => n.to_string(),
        Scalar::Float(x) => x.to_string(),
        Scalar::Bool(b) => b.to_string(),
        Scalar::Str(s) => format!("{s:?}"),
    }
}

/// Whether `id` is a valid task or check id: `[a-z0-9][a-z0-9_-]{0,62}`.
pub fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && id.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// The keys of an agent map that only a preset takes, that `map` sets.
fn preset_keys(map: &super::file::AgentMapFile) -> Vec<&'static str> {
    [
        ("model", map.model.is_some()),
        ("args", !map.args.is_empty()),
        ("base_url", map.base_url.is_some()),
        ("api_key_env", map.api_key_env.is_some()),
        ("price", map.price.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, set)| set.then_some(key))
    .collect()
}

/// Most paths an overlap names.
const OVERLAP_PATHS: usize = 10;

/// The pairs of tasks the DAG does not order whose `touches` match a common path of the
/// base (or name the same new path or glob).
async fn overlaps(tasks: &[Task], repo: &Path, base: &str) -> Vec<super::Overlap> {
    let with: Vec<usize> = (0..tasks.len())
        .filter(|&t| !tasks[t].touches.is_empty())
        .collect();
    if with.len() < 2 {
        return Vec::new();
    }
    let listed = Git::at(repo)
        .run(&["ls-tree", "-r", "--name-only", base])
        .await
        .unwrap_or_default();
    let mut candidates: Vec<String> = listed.lines().map(str::to_owned).collect();
    let mut known: HashSet<String> = candidates.iter().cloned().collect();
    for &t in &with {
        for glob in &tasks[t].touches {
            if !glob.contains(['*', '?', '[', '{']) && known.insert(glob.clone()) {
                candidates.push(glob.clone());
            }
        }
    }
    // One pass over the paths with every task's globs at once, not one per pair of tasks:
    // a fanned task's thousands of targets each touch their own folder.
    let index = braid_shared::paths::GlobIndex::new(
        with.iter()
            .enumerate()
            .flat_map(|(k, &t)| tasks[t].touches.iter().map(move |g| (k, g.as_str()))),
    );
    let dag = crate::dag::Dag::new(tasks);
    let mut related: HashMap<usize, Vec<bool>> = HashMap::new();
    let mut unordered = |a: usize, b: usize| !related.entry(a).or_insert_with(|| dag.related(a))[b];
    let mut shared: BTreeMap<(usize, usize), Vec<String>> = BTreeMap::new();
    for path in &candidates {
        let hit = index.owners_of(path);
        for (i, &x) in hit.iter().enumerate() {
            for &y in &hit[i + 1..] {
                let (a, b) = (with[x], with[y]);
                if unordered(a, b) {
                    shared.entry((x, y)).or_default().push(path.clone());
                }
            }
        }
    }
    // Two tasks naming the same glob overlap there, whatever the base holds.
    let mut by_glob: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (k, &t) in with.iter().enumerate() {
        for glob in &tasks[t].touches {
            let owners = by_glob.entry(glob.as_str()).or_default();
            if owners.last() != Some(&k) {
                owners.push(k);
            }
        }
    }
    for (glob, owners) in by_glob {
        for (i, &x) in owners.iter().enumerate() {
            for &y in &owners[i + 1..] {
                if unordered(with[x], with[y]) {
                    let paths = shared.entry((x, y)).or_default();
                    if !paths.iter().any(|p| p == glob) {
                        paths.push(glob.to_owned());
                    }
                }
            }
        }
    }
    shared
        .into_iter()
        .map(|((x, y), mut paths)| {
            paths.truncate(OVERLAP_PATHS);
            super::Overlap {
                tasks: [tasks[with[x]].id.clone(), tasks[with[y]].id.clone()],
                paths,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::valid_id;

    #[test]
    fn ids() {
        for good in ["a", "parser", "0x", "a-b_c", &"a".repeat(63)] {
            assert!(valid_id(good), "{good}");
        }
        for bad in ["", "-a", "_a", "A", "a b", "a.b", &"a".repeat(64), "é"] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}
