//! Fan-out: 200 attempts of an agent that writes one file, two at a time, on the 20,000-file
//! repository: `braid run` end to end against the pipeline users write by hand (`git
//! worktree add`, the agent, `git add -A && git commit`, `git worktree remove`, under
//! `xargs -P 2`).

use std::fmt::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::repo::{BigRepo, hermetic_env};
use crate::table::{Baseline, Goal, Row, Unit, secs};
use crate::{braid_local_run, report_attempts, say};

const TASKS: usize = 10;
const ATTEMPTS: usize = 20;
const SLOTS: usize = 2;
/// The agent: writes one file named after its task.
const AGENT: &str = r#"echo "attempt $BRAID_ATTEMPT of $BRAID_TASK_ID" > "out-$BRAID_TASK_ID.txt""#;

/// One job of the hand-written pipeline.
const JOB: &str = r#"set -e
i="$1"
wt="$WT/$i"
git -C "$REPO" worktree add --quiet -b "shell/$ROUND/$i" "$wt" main
cd "$wt"
BRAID_TASK_ID="t$((i / 20))" BRAID_ATTEMPT="$((i % 20 + 1))" sh -c "$AGENT"
git add -A
git commit --quiet -m "attempt $i"
cd "$WT"
git -C "$REPO" worktree remove --force "$wt"
"#;

fn plan(repo: &BigRepo) -> String {
    let mut plan = format!(
        "version: 1\nname: bench-fanout\nrepo: {}\nbase: main\ndefaults:\n  agent:\n    command: [sh, -c, {}]\n  attempts: {ATTEMPTS}\n  timeout: 5m\ntasks:\n",
        repo.path.display(),
        serde_json::to_string(AGENT).unwrap_or_default()
    );
    for t in 0..TASKS {
        let _ = writeln!(plan, "  - id: t{t}\n    prompt: write one file");
    }
    plan
}

fn shell(repo: &BigRepo, scratch: &Path, round: usize) -> Result<f64> {
    let wt = scratch.join(format!("shell-{round}"));
    std::fs::create_dir_all(&wt)?;
    let jobs: String = (0..TASKS * ATTEMPTS).map(|i| format!("{i}\n")).collect();
    let started = Instant::now();
    let mut child = Command::new("xargs")
        .args(["-P", &SLOTS.to_string(), "-n", "1", "sh", "-c", JOB, "job"])
        .envs(hermetic_env())
        .env("REPO", &repo.path)
        .env("WT", &wt)
        .env("ROUND", round.to_string())
        .env("AGENT", AGENT)
        .stdin(Stdio::piped())
        .spawn()
        .context("starting xargs")?;
    std::io::Write::write_all(
        &mut child.stdin.take().context("xargs's input")?,
        jobs.as_bytes(),
    )?;
    if !child.wait()?.success() {
        bail!("the shell pipeline failed");
    }
    Ok(secs(started.elapsed()))
}

fn braid_run(plan_path: &Path, scratch: &Path) -> Result<f64> {
    let out_path = scratch.join("braid-report.json");
    let started = Instant::now();
    let status = braid_local_run(plan_path, SLOTS)?
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(scratch.join("braid-progress.txt"))?)
        .status()?;
    let elapsed = secs(started.elapsed());
    if !status.success() {
        bail!("braid run failed ({status}); see {}", scratch.display());
    }
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&out_path)?)?;
    let succeeded = report_attempts(&report)
        .iter()
        .filter(|a| a["status"] == "succeeded")
        .count();
    if succeeded != TASKS * ATTEMPTS {
        bail!(
            "braid run: {succeeded} attempts succeeded, not {}",
            TASKS * ATTEMPTS
        );
    }
    Ok(elapsed)
}

/// Runs the scenario `rounds` times, braid and the pipeline taking turns at going first.
pub fn run(repo: &BigRepo, scratch: &Path, rounds: usize) -> Result<Vec<Row>> {
    let plan_path = scratch.join("fanout.yaml");
    std::fs::write(&plan_path, plan(repo))?;
    let (mut braid_s, mut shell_s) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for first in [round % 2 == 0, round % 2 != 0] {
            if first {
                braid_s.push(braid_run(&plan_path, scratch)?);
                say(format!("  braid run: {:.1} s", braid_s[braid_s.len() - 1]));
            } else {
                shell_s.push(shell(repo, scratch, round)?);
                say(format!(
                    "  shell pipeline: {:.1} s",
                    shell_s[shell_s.len() - 1]
                ));
            }
        }
    }
    Ok(vec![Row {
        scenario: "fan-out".into(),
        measure: "200 attempts writing one file, 2 slots, 20,000 files".into(),
        unit: Unit::Seconds,
        samples: braid_s,
        baseline: Some(Baseline {
            name: "worktree add/commit/remove under xargs -P 2".into(),
            samples: shell_s,
        }),
        goal: Goal::RatioAtMost(0.1),
        note: "braid end to end: plan, 10 tasks x 20 attempts, judging, integration, report".into(),
    }])
}
