//! braid's cost per attempt with a real agent CLI: the same Codex attempt against the
//! scripted model server, through `braid run` (worktree, sandbox, bridge to the model,
//! event stream, commit, objects packed for the coordinator) and by hand in a prepared
//! worktree (reset it, run codex, commit).

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use braid_tests::model::{ModelServer, Script};

use crate::table::{Baseline, Goal, Row, Unit, secs};
use crate::{braid_local_run, cache, repo::git, report_attempts, say};

/// Attempts per round, each way.
const ATTEMPTS: usize = 10;

const PROMPT: &str = "Create the file hello.txt that says hello.";

/// Runs the scenario `rounds` times.
pub fn run(scratch: &Path, rounds: usize) -> Result<Vec<Row>> {
    // The CLIs `tests/agents/install.sh` installed, for braid and by hand alike.
    if let Some(path) = braid_tests::path_with_agents() {
        let _ = PATH.set(path);
    }
    let repo = scratch.join("repo");
    std::fs::create_dir_all(&repo)?;
    git(&repo, &["init", "-q", "-b", "main"])?;
    std::fs::write(repo.join("README.md"), "# agent bench\n")?;
    git(&repo, &["add", "-A"])?;
    git(
        &repo,
        &[
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.com",
            "commit",
            "-qm",
            "base",
        ],
    )?;
    let server = ModelServer::start(Script {
        root: Some(cache().join("work").to_string_lossy().into_owned()),
        ..Script::default()
    });
    let url = format!("{}/v1", server.url());

    // By hand: one prepared worktree and one Codex home, as a careful user keeps them.
    let hand = scratch.join("hand");
    git(
        &repo,
        &[
            "worktree",
            "add",
            "-q",
            "--detach",
            hand.to_str().context("utf-8")?,
            "main",
        ],
    )?;
    let codex_home = scratch.join("codex-home");
    std::fs::create_dir_all(&codex_home)?;
    std::fs::write(
        codex_home.join("config.toml"),
        format!(
            "check_for_update_on_startup = false\nmodel = \"test-model\"\nmodel_provider = \"bench\"\n\n\
             [model_providers.bench]\nname = \"bench\"\nbase_url = \"{url}\"\nwire_api = \"responses\"\nenv_key = \"BENCH_KEY\"\n\n\
             [analytics]\nenabled = false\n\n[otel]\nexporter = \"none\"\nmetrics_exporter = \"none\"\n"
        ),
    )?;
    let plan = scratch.join("plan.yaml");
    std::fs::write(
        &plan,
        format!(
            "version: 1\nrepo: repo\ntasks:\n  - id: hello\n    prompt: {PROMPT}\n    attempts: {ATTEMPTS}\n    \
             agent: {{preset: codex, model: test-model, base_url: \"{url}\", api_key_env: BENCH_KEY}}\n"
        ),
    )?;
    let (mut by_hand, mut through_braid) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for _ in 0..ATTEMPTS {
            by_hand.push(secs(hand_attempt(&hand, &codex_home)?));
        }
        let mut cmd = braid_local_run(&plan, 1)?;
        let out = with_path(&mut cmd)
            .env("BENCH_KEY", "bench-key")
            .current_dir(scratch)
            .output()?;
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "braid's report; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        let attempts = report_attempts(&report);
        ensure!(attempts.len() == ATTEMPTS, "{report:#}");
        for a in attempts {
            ensure!(a["status"] == "succeeded", "an attempt failed: {a:#}");
            through_braid.push(a["duration_ms"].as_f64().unwrap_or(0.0) / 1e3);
        }
        say(format!(
            "round {}: {} attempts each way",
            round + 1,
            ATTEMPTS
        ));
    }
    Ok(vec![Row {
        scenario: "agent".into(),
        measure: "a Codex attempt through braid run".into(),
        unit: Unit::Seconds,
        samples: through_braid,
        baseline: Some(Baseline {
            name: "the same attempt by hand in a prepared worktree".into(),
            samples: by_hand,
        }),
        goal: Goal::RatioAtMost(1.05),
        note: "codex exec against the scripted model server; braid's attempt time on the worker (worktree, sandbox, model bridge, events, commit, pack); by hand: checkout -f, clean -fdx, codex, add -A, commit".into(),
    }])
}

/// One attempt by hand: the worktree back to the base, codex, a commit.
fn hand_attempt(tree: &Path, codex_home: &Path) -> Result<std::time::Duration> {
    let started = Instant::now();
    git(tree, &["checkout", "-q", "-f", "--detach", "main"])?;
    git(tree, &["clean", "-q", "-fdx"])?;
    let mut child = with_path(&mut Command::new("codex"))
        .args([
            "exec",
            "--json",
            "--ephemeral",
            "--color",
            "never",
            "--skip-git-repo-check",
            "--sandbox",
            "danger-full-access",
            "-c",
            "approval_policy=never",
            "-",
        ])
        .current_dir(tree)
        .env("CODEX_HOME", codex_home)
        .env("BENCH_KEY", "bench-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting codex")?;
    child
        .stdin
        .take()
        .context("codex's stdin")?
        .write_all(PROMPT.as_bytes())?;
    let status = child.wait()?;
    ensure!(status.success(), "codex failed by hand: {status}");
    git(tree, &["add", "-A"])?;
    git(
        tree,
        &[
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.com",
            "commit",
            "-qm",
            "attempt",
        ],
    )?;
    Ok(started.elapsed())
}

/// `PATH` with the installed agent CLIs first, for the processes this scenario starts.
static PATH: std::sync::OnceLock<std::ffi::OsString> = std::sync::OnceLock::new();

/// `cmd` with the agent CLIs on its `PATH`.
fn with_path(cmd: &mut Command) -> &mut Command {
    if let Some(path) = PATH.get() {
        cmd.env("PATH", path);
    }
    cmd
}
