//! The command agent: any program, run in the attempt's worktree.
//!
//! It gets the prompt on standard input and in `BRAID_PROMPT_FILE`, the attempt's identity in
//! `BRAID_*` variables, and the worktree as its working directory. Exit code 0 means it
//! finished. Its output goes to the attempt's log file, capped; everything it starts is
//! stopped when it ends or times out.

use std::path::{Path, PathBuf};
use std::time::Duration;

use braid_shared::exec::{Cmd, ExecError, Finished, Output};
use braid_shared::proto::{AgentSpec, AttemptSpec, Budget};
use braid_shared::secret::Secret;
use braid_shared::usage::{Price, Usage, price_of};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::presets::{self, Event, Tally};
use crate::sandbox::Launch;

/// The variable that marks every process of an attempt, so strays can be found and stopped.
pub const LEASE_MARKER: &str = "BRAID_LEASE";

/// Where an attempt's files go, all outside the worktree so nothing of braid's is committed.
#[derive(Debug, Clone)]
pub struct AttemptFiles {
    /// The agent's log.
    pub log: PathBuf,
    /// The prompt, for `BRAID_PROMPT_FILE`.
    pub prompt: PathBuf,
    /// A retry's feedback, for `BRAID_FEEDBACK_FILE`.
    pub feedback: PathBuf,
    /// The agent's events, normalised, one JSON object a line.
    pub events: PathBuf,
    /// The folder for check logs.
    pub dir: PathBuf,
    /// The stem every file of this attempt starts with.
    pub stem: String,
}

impl AttemptFiles {
    /// The files of `spec`'s attempt in the log folder `dir`, which the worker ships to
    /// the coordinator (file names only: see [`AttemptFiles::name`]).
    pub fn of(spec: &AttemptSpec, dir: &Path) -> Self {
        let dir = dir.to_owned();
        let stem = format!("{}.{}", spec.task_id, spec.attempt);
        AttemptFiles {
            log: dir.join(format!("{stem}.agent.log")),
            prompt: dir.join(format!("{stem}.prompt.md")),
            feedback: dir.join(format!("{stem}.feedback.md")),
            events: dir.join(format!("{stem}.events.jsonl")),
            dir,
            stem,
        }
    }

    /// The name of one of these files in the log folder, as results give it.
    pub fn name(path: &Path) -> String {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The log file of the check called `name`.
    pub fn check_log(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{}.check.{name}.log", self.stem))
    }
}

/// How an agent's run ended, with what braid read from it.
#[derive(Debug)]
pub struct AgentRun {
    /// The process's end.
    pub finished: Finished,
    /// What its events add up to (empty for a command agent that reported nothing).
    pub tally: Tally,
    /// Why braid stopped it for spending past its budget.
    pub over_budget: Option<String>,
}

/// Runs the agent of `spec` in `worktree` to its end; `scratch` is the attempt's own
/// writable folder outside the worktree.
pub async fn run_agent(
    spec: &AttemptSpec,
    launch: &Launch,
    worktree: &Path,
    scratch: &Path,
    files: &AttemptFiles,
    cancel: CancellationToken,
    tap: mpsc::Sender<String>,
) -> Result<AgentRun, ExecError> {
    let agent = spec.agent.clone().unwrap_or_default();
    let clock = std::time::Instant::now();
    let log_error = |path: &Path| {
        let path = path.to_owned();
        move |source| ExecError::Log { path, source }
    };
    tokio::fs::create_dir_all(&files.dir)
        .await
        .and(tokio::fs::write(&files.prompt, &spec.prompt).await)
        .map_err(log_error(&files.prompt))?;
    if !spec.feedback.is_empty() {
        tokio::fs::write(&files.feedback, &spec.feedback)
            .await
            .map_err(log_error(&files.feedback))?;
    }
    let timeout = (spec.timeout_ms > 0).then(|| Duration::from_millis(spec.timeout_ms));
    let stall = (spec.stall_ms > 0).then(|| Duration::from_millis(spec.stall_ms));
    let stop = cancel.child_token();
    if agent.preset == "builtin" {
        // Its shell commands see the files a command agent is given.
        let mut launch = launch.clone();
        launch.env.push((
            "BRAID_PROMPT_FILE",
            files.prompt.to_string_lossy().into_owned(),
        ));
        if !spec.feedback.is_empty() {
            launch.env.push((
                "BRAID_FEEDBACK_FILE",
                files.feedback.to_string_lossy().into_owned(),
            ));
        }
        return Ok(crate::builtin::run(spec, &agent, &launch, worktree, files, stop, tap).await);
    }
    let invocation = if agent.preset.is_empty() {
        command_invocation(&agent, &spec.prompt, worktree)?
    } else {
        preset_invocation(spec, &agent, launch, worktree, scratch).map_err(|source| {
            ExecError::Spawn {
                program: agent.preset.clone(),
                cwd: worktree.to_owned(),
                source,
            }
        })?
    };
    let Invocation {
        program,
        mut cmd,
        reader,
        record,
        litter,
        bridge,
    } = invocation;
    cmd = cmd
        .output(Output::Log {
            path: files.log.clone(),
            cap: spec.log_cap_bytes,
        })
        .timeout(timeout)
        .stall(stall)
        .cancel(stop.clone())
        .tap(tap)
        .env("BRAID_PROMPT_FILE", &files.prompt);
    if !spec.feedback.is_empty() {
        cmd = cmd.env("BRAID_FEEDBACK_FILE", &files.feedback);
    }
    // A command agent may say what it spent in a file of its own scratch.
    let usage_file = scratch.join("braid-usage.json");
    let _ = std::fs::remove_file(&usage_file);
    cmd = cmd.env("BRAID_USAGE_FILE", &usage_file);
    for (key, value) in &agent.env {
        cmd = cmd.env(key, value);
    }
    let budget = spec.budget.unwrap_or_default();
    let (lines, mut incoming) = mpsc::channel::<Vec<u8>>(256);
    let watcher = reader.map(|mut reader| {
        let events_path = files.events.clone();
        let stop = stop.clone();
        braid_shared::task::spawn("agent-events", async move {
            let started = std::time::Instant::now();
            let mut events = tokio::fs::File::create(&events_path)
                .await
                .ok()
                .map(tokio::io::BufWriter::new);
            let mut tally = Tally::default();
            let mut over = None;
            let take = |batch: Vec<Event>, tally: &mut Tally, out: &mut Vec<u8>| {
                for event in batch {
                    tally.add(&event);
                    out.extend_from_slice(
                        event
                            .to_json(started.elapsed().as_millis() as u64)
                            .to_string()
                            .as_bytes(),
                    );
                    out.push(b'\n');
                }
            };
            let mut out = Vec::new();
            while let Some(line) = incoming.recv().await {
                let line = String::from_utf8_lossy(&line);
                take(reader.line(&line), &mut tally, &mut out);
                if let Some(events) = events.as_mut() {
                    let _ = events.write_all(&out).await;
                }
                out.clear();
                if over.is_none() {
                    over = over_budget(&tally.usage, &budget);
                    if over.is_some() {
                        stop.cancel();
                    }
                }
            }
            if let Some(record) = record
                && let Ok(content) = tokio::fs::read_to_string(&record).await
            {
                take(reader.record(&content), &mut tally, &mut out);
            }
            if let Some(mut events) = events {
                let _ = events.write_all(&out).await;
                let _ = events.flush().await;
            }
            (tally, over)
        })
    });
    if watcher.is_some() {
        cmd = cmd.lines(lines);
    } else {
        drop(lines);
    }
    let ready = clock.elapsed();
    let finished = launch.prepare(cmd).run().await?;
    let ran = clock.elapsed();
    drop(bridge);
    for path in litter {
        let removed = match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(_) => Ok(()),
        };
        if let Err(err) = removed {
            tracing::warn!(path = %path.display(), "could not remove the agent's cache: {err}");
        }
    }
    let (mut tally, mut over_budget) = match watcher {
        Some(watcher) => watcher.await.unwrap_or_default(),
        None => (Tally::default(), None),
    };
    if let Ok(text) = tokio::fs::read_to_string(&usage_file).await {
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) => tally.usage = tally.usage.plus(usage_from_json(&v)),
            Err(err) => tracing::warn!(%program, "BRAID_USAGE_FILE is not JSON: {err}"),
        }
    }
    tracing::debug!(
        ready_ms = ready.as_secs_f64() * 1e3,
        ran_ms = ran.as_secs_f64() * 1e3,
        read_ms = clock.elapsed().as_secs_f64() * 1e3,
        "agent ended"
    );
    let price = price_for(&agent);
    tally.usage = tally.usage.priced(price);
    if over_budget.is_none() {
        // A command agent's usage is known only at its end; the cost only once priced.
        over_budget = self::over_budget(&tally.usage, &budget);
    }
    Ok(AgentRun {
        finished,
        tally,
        over_budget,
    })
}

/// What to run for an agent, and how to read it.
struct Invocation {
    program: String,
    cmd: Cmd,
    reader: Option<Box<dyn presets::Read>>,
    record: Option<PathBuf>,
    /// The CLI's own files in the worktree that were not there before it ran.
    litter: Vec<PathBuf>,
    /// The bridge to the model's endpoint, for `network: model`, kept while the CLI runs.
    bridge: Option<crate::bridge::Bridge>,
}

fn command_invocation(
    agent: &AgentSpec,
    prompt: &str,
    worktree: &Path,
) -> Result<Invocation, ExecError> {
    let Some((program, args)) = agent.command.split_first() else {
        return Err(ExecError::Spawn {
            program: String::new(),
            cwd: worktree.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the agent has no command",
            ),
        });
    };
    Ok(Invocation {
        program: program.clone(),
        cmd: Cmd::new(program, worktree)
            .args(args)
            .stdin(prompt.as_bytes().to_vec()),
        reader: None,
        record: None,
        litter: Vec::new(),
        bridge: None,
    })
}

/// The invocation of a preset's CLI: a config folder of its own in `scratch`, only the
/// variables it needs, the key from the worker's own environment.
fn preset_invocation(
    spec: &AttemptSpec,
    agent: &AgentSpec,
    launch: &Launch,
    worktree: &Path,
    scratch: &Path,
) -> std::io::Result<Invocation> {
    let refuse = |why: String| std::io::Error::new(std::io::ErrorKind::Unsupported, why);
    let preset = presets::find(&agent.preset).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("braid has no agent preset called {:?}", agent.preset),
        )
    })?;
    if !on_path(preset.program()) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "`{}` is not installed here (install {}; `braid agents` lists what is)",
                preset.program(),
                preset.package()
            ),
        ));
    }
    let home = scratch.join("home");
    if home.exists() {
        std::fs::remove_dir_all(&home)?;
    }
    std::fs::create_dir_all(&home)?;
    let key_env = if agent.api_key_env.is_empty() {
        preset.key_env()
    } else {
        agent.api_key_env.as_str()
    };
    let key = Secret::from_env(key_env);
    // `network: model`: the CLI reaches its endpoint through the bridge, and nothing else.
    let model_only = spec
        .sandbox
        .as_ref()
        .is_some_and(|s| s.model_only && !s.off)
        && !launch.sandbox.is_off();
    let mut bridged = agent.clone();
    let mut bridge = None;
    if model_only {
        let endpoint = match (agent.base_url.as_str(), preset.endpoint()) {
            ("", Some(default)) if key.is_some() => default.to_owned(),
            ("", Some(_)) => {
                return Err(refuse(format!(
                    "`network: model` lets {} reach only its model endpoint, and without an API key in {key_env} braid cannot tell which endpoint your login uses: set {key_env} (or name another variable in `api_key_env`), give a `base_url`, or write `sandbox: {{network: full}}`",
                    preset.name()
                )));
            }
            ("", None) => {
                return Err(refuse(format!(
                    "`network: model` lets {} reach only its model endpoint, and which one depends on the model: give the agent a `base_url`, or write `sandbox: {{network: full}}`",
                    preset.name()
                )));
            }
            (url, _) => url.to_owned(),
        };
        if !launch.sandbox.has_own_network() {
            return Err(refuse(
                "`network: model` needs a network namespace of the sandbox's own, which only bubblewrap makes; install bubblewrap, or write `sandbox: {network: full}`".to_owned(),
            ));
        }
        if crate::bridge::program().is_none() {
            return Err(refuse(
                "`network: model` needs the braid binary to bridge the model's endpoint into the sandbox".to_owned(),
            ));
        }
        let socket = scratch.join("braid-model.sock");
        bridge = Some(crate::bridge::Bridge::start(&socket, &endpoint)?);
        bridged.base_url = crate::bridge::inside_url(&endpoint)
            .ok_or_else(|| refuse(format!("the endpoint {endpoint:?} is not a URL")))?;
    }
    let cx = presets::Context {
        agent: &bridged,
        prompt: &spec.prompt,
        worktree,
        home: &home,
        user_home: std::env::var_os("HOME").map(PathBuf::from),
        key,
        price: price_for(agent),
    };
    let inv = preset.invocation(&cx)?;
    let mut cmd = match (&bridge, crate::bridge::program()) {
        (Some(_), Some(program)) => Cmd::new(program, worktree).args(crate::bridge::wrap(
            &scratch.join("braid-model.sock"),
            preset.program(),
            &inv.args,
        )),
        _ => Cmd::new(preset.program(), worktree).args(&inv.args),
    }
    .clear_env(presets::PASSED_ENV)
    .env("HOME", &home)
    .env("TERM", "dumb")
    .env("NO_COLOR", "1");
    for (key, value) in &inv.env {
        cmd = cmd.env(key, value);
    }
    for (key, secret) in &inv.secrets {
        cmd = cmd.env(key, secret.expose());
    }
    // Whatever the CLI prints, its key is not written down.
    cmd = cmd.redact(
        inv.secrets
            .iter()
            .map(|(_, s)| s.expose().to_owned())
            .collect(),
    );
    if inv.stdin {
        cmd = cmd.stdin(spec.prompt.clone().into_bytes());
    }
    Ok(Invocation {
        program: preset.program().to_owned(),
        cmd,
        reader: Some(preset.reader()),
        record: inv.record,
        litter: preset
            .litter()
            .iter()
            .map(|name| worktree.join(name))
            .filter(|path| std::fs::symlink_metadata(path).is_err())
            .collect(),
        bridge,
    })
}

/// Whether `program` is an executable file in a folder of `PATH`.
fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// The agent's prices: the plan's, else braid's table for its model.
pub fn price_for(agent: &AgentSpec) -> Option<Price> {
    match &agent.price {
        Some(p) => Some(Price {
            input: p.input,
            cached_input: p.cached_input,
            output: p.output,
        }),
        None => price_of(&agent.model),
    }
}

/// Usage as a command agent writes it to `$BRAID_USAGE_FILE` (report.json's keys).
fn usage_from_json(v: &serde_json::Value) -> Usage {
    Usage {
        input: v["input_tokens"].as_u64(),
        cached: v["cached_input_tokens"].as_u64(),
        output: v["output_tokens"].as_u64(),
        cost: v["cost_usd"].as_f64(),
        turns: v["turns"].as_u64().map(|t| t as u32),
    }
}

/// Why `usage` is past `budget`, if it is.
pub fn over_budget(usage: &Usage, budget: &Budget) -> Option<String> {
    if budget.tokens > 0
        && let Some(tokens) = usage.tokens()
        && tokens > budget.tokens
    {
        return Some(format!(
            "the agent used {tokens} tokens, past the attempt's budget of {}",
            budget.tokens
        ));
    }
    if budget.usd > 0.0
        && let Some(cost) = usage.cost
        && cost > budget.usd
    {
        return Some(format!(
            "the agent spent ${cost:.4}, past the attempt's budget of ${}",
            budget.usd
        ));
    }
    if budget.turns > 0
        && let Some(turns) = usage.turns
        && turns > budget.turns
    {
        return Some(format!(
            "the agent took {turns} turns, past the attempt's budget of {}",
            budget.turns
        ));
    }
    None
}

/// The `BRAID_*` variables that tell a process which attempt it serves.
pub fn attempt_env(spec: &AttemptSpec, worktree: &Path) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("BRAID_RUN_ID", spec.run_id.clone()),
        ("BRAID_TASK_ID", spec.task_id.clone()),
        ("BRAID_ATTEMPT", spec.attempt.to_string()),
        ("BRAID_WORKTREE", worktree.to_string_lossy().into_owned()),
        ("BRAID_BASE_COMMIT", spec.base_commit.clone()),
    ];
    if spec.port_count > 0 {
        env.push(("BRAID_PORT_BASE", spec.port_base.to_string()));
        env.push(("BRAID_PORT_COUNT", spec.port_count.to_string()));
    }
    env
}

/// Copies the attempt's `include` files into `worktree` and runs its `setup` commands;
/// why the attempt cannot go on, if it cannot.
pub async fn prepare(
    spec: &AttemptSpec,
    launch: &Launch,
    worktree: &Path,
    files: &AttemptFiles,
    cancel: &CancellationToken,
) -> Result<(), String> {
    put_includes(spec, worktree)?;
    run_setup(spec, launch, worktree, files, cancel).await
}

/// Writes the attempt's `include` files into `worktree`.
pub fn put_includes(spec: &AttemptSpec, worktree: &Path) -> Result<(), String> {
    for file in &spec.include {
        let target = crate::builtin::tools::inside(worktree, &file.path)
            .map_err(|why| format!("cannot include {}: {why}", file.path))?;
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot include {}: {e}", file.path))?;
        }
        std::fs::write(&target, &file.content)
            .map_err(|e| format!("cannot include {}: {e}", file.path))?;
        if file.executable {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755));
        }
    }
    Ok(())
}

/// Runs the attempt's `setup` commands in order, in the sandbox; the first that fails
/// ends the attempt.
async fn run_setup(
    spec: &AttemptSpec,
    launch: &Launch,
    worktree: &Path,
    files: &AttemptFiles,
    cancel: &CancellationToken,
) -> Result<(), String> {
    if spec.setup.is_empty() {
        return Ok(());
    }
    tokio::fs::create_dir_all(&files.dir)
        .await
        .map_err(|e| format!("cannot make the log folder: {e}"))?;
    let log = files.dir.join(format!("{}.setup.log", files.stem));
    for step in &spec.setup {
        let timeout = (step.timeout_ms > 0).then(|| Duration::from_millis(step.timeout_ms));
        let cmd = Cmd::new("sh", worktree)
            .args(["-c", step.run.as_str()])
            .output(Output::Log {
                path: log.clone(),
                cap: spec.log_cap_bytes,
            })
            .timeout(timeout)
            .cancel(cancel.clone());
        let done = launch
            .prepare(cmd)
            .run()
            .await
            .map_err(|e| format!("setup `{}` could not run: {e}", step.run))?;
        match done.ending {
            braid_shared::exec::Ending::Exited(0) => {}
            braid_shared::exec::Ending::Exited(code) => {
                return Err(format!(
                    "setup `{}` exited with code {code} (log: {})",
                    step.run,
                    log.display()
                ));
            }
            braid_shared::exec::Ending::Cancelled => return Err("the attempt was cancelled".into()),
            other => {
                return Err(format!("setup `{}` did not finish: {other:?}", step.run));
            }
        }
    }
    Ok(())
}

/// Takes the `include` files out of `worktree` again before braid commits, so they never
/// reach a branch; a sentence for each one the agent changed.
pub fn take_includes(spec: &AttemptSpec, worktree: &Path) -> Vec<String> {
    let mut notes = Vec::new();
    for file in &spec.include {
        let Ok(target) = crate::builtin::tools::inside(worktree, &file.path) else {
            continue;
        };
        if let Ok(now) = std::fs::read(&target)
            && now != file.content
        {
            notes.push(format!(
                "the agent changed the included file {}; braid did not commit it",
                file.path
            ));
        }
        let _ = std::fs::remove_file(&target);
    }
    notes
}
