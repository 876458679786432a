//! Fan-out: 200 attempts of an agent that writes one file, two at a time, on the 20,000-file
//! repository: `braid run` end to end against two pipelines users write by hand, in the
//! same round:
//! - the naive one: `git worktree add`, the agent, `git add -A && git commit`, `git worktree
//!   remove`, under `xargs -P 2`;
//! - the best one: two persistent worktrees, and per attempt `git checkout --detach -f main
//!   && git clean -fdx`, the agent, `git add -A && git commit`, `git update-ref`; its
//!   worktrees' creation counts in its time, and each attempt's time (and the agent's own,
//!   within it) is taken as it runs.

use std::fmt::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::repo::{BigRepo, hermetic_env};
use crate::table::{Baseline, Goal, Row, Unit, median, secs};
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

/// One slot of the best pipeline: a persistent worktree `$SLOT`, reset for each attempt;
/// each attempt's start, agent start, agent end and end (ns) go to `$TIMES`.
const REUSED: &str = r#"set -e
cd "$SLOT"
for i in $JOBS; do
  t0=$(date +%s%N)
  git checkout --quiet --detach -f main
  git clean -fdxq
  t1=$(date +%s%N)
  BRAID_TASK_ID="t$((i / 20))" BRAID_ATTEMPT="$((i % 20 + 1))" sh -c "$AGENT"
  t2=$(date +%s%N)
  git add -A
  git commit --quiet -m "attempt $i"
  git update-ref "refs/heads/reused/$ROUND/$i" HEAD
  t3=$(date +%s%N)
  echo "$t0 $t1 $t2 $t3" >> "$TIMES"
done
"#;

/// What a round of the best pipeline took: end to end, and each attempt's time and its
/// agent's.
struct Reused {
    total: f64,
    attempts: Vec<f64>,
    agents: Vec<f64>,
}

fn reused(repo: &BigRepo, scratch: &Path, round: usize) -> Result<Reused> {
    let dir = scratch.join(format!("reused-{round}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let started = Instant::now();
    let mut slots = Vec::new();
    for slot in 0..SLOTS {
        let wt = dir.join(format!("slot-{slot}"));
        crate::repo::git(
            &repo.path,
            &[
                "worktree",
                "add",
                "--quiet",
                "--detach",
                &wt.display().to_string(),
                "main",
            ],
        )?;
        slots.push(wt);
    }
    let mut children = Vec::new();
    for (slot, wt) in slots.iter().enumerate() {
        let jobs: Vec<String> = (0..TASKS * ATTEMPTS)
            .filter(|i| i % SLOTS == slot)
            .map(|i| i.to_string())
            .collect();
        children.push(
            Command::new("sh")
                .args(["-c", REUSED])
                .envs(hermetic_env())
                .env("SLOT", wt)
                .env("JOBS", jobs.join(" "))
                .env("TIMES", dir.join(format!("times-{slot}")))
                .env("ROUND", round.to_string())
                .env("AGENT", AGENT)
                .spawn()
                .context("starting a slot of the reused pipeline")?,
        );
    }
    for mut child in children {
        if !child.wait()?.success() {
            bail!("the reused-worktree pipeline failed");
        }
    }
    let total = secs(started.elapsed());
    let (mut attempts, mut agents) = (Vec::new(), Vec::new());
    for slot in 0..SLOTS {
        let text = std::fs::read_to_string(dir.join(format!("times-{slot}")))?;
        for line in text.lines() {
            let t: Vec<f64> = line
                .split_whitespace()
                .filter_map(|n| n.parse::<f64>().ok())
                .collect();
            if let [t0, t1, t2, t3] = t[..] {
                attempts.push((t3 - t0) / 1e9);
                agents.push((t2 - t1) / 1e9);
            }
        }
    }
    if attempts.len() != TASKS * ATTEMPTS {
        bail!(
            "the reused pipeline timed {} attempts, not {}",
            attempts.len(),
            TASKS * ATTEMPTS
        );
    }
    for wt in &slots {
        crate::repo::git(
            &repo.path,
            &["worktree", "remove", "--force", &wt.display().to_string()],
        )?;
    }
    Ok(Reused {
        total,
        attempts,
        agents,
    })
}

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

/// braid's run end to end, and each attempt's time on its worker.
fn braid_run(plan_path: &Path, scratch: &Path) -> Result<(f64, Vec<f64>)> {
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
    let attempts = report_attempts(&report)
        .iter()
        .filter_map(|a| a["duration_ms"].as_f64())
        .map(|ms| ms / 1000.0)
        .collect();
    Ok((elapsed, attempts))
}

/// Runs the scenario `rounds` times, braid and the pipelines taking turns at going first.
pub fn run(repo: &BigRepo, scratch: &Path, rounds: usize) -> Result<Vec<Row>> {
    let plan_path = scratch.join("fanout.yaml");
    std::fs::write(&plan_path, plan(repo))?;
    let (mut braid_s, mut shell_s, mut reused_s) = (Vec::new(), Vec::new(), Vec::new());
    let (mut braid_attempts, mut reused_attempts, mut agents) =
        (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut order = [0, 1, 2];
        order.rotate_left(round % 3);
        for which in order {
            match which {
                0 => {
                    let (took, attempts) = braid_run(&plan_path, scratch)?;
                    braid_s.push(took);
                    braid_attempts.extend(attempts);
                    say(format!("  braid run: {took:.1} s"));
                }
                1 => {
                    shell_s.push(shell(repo, scratch, round)?);
                    say(format!(
                        "  naive pipeline: {:.1} s",
                        shell_s[shell_s.len() - 1]
                    ));
                }
                _ => {
                    let r = reused(repo, scratch, round)?;
                    say(format!(
                        "  reused-worktree pipeline: {:.1} s, median attempt {:.0} ms (agent {:.1} ms)",
                        r.total,
                        median(&r.attempts) * 1000.0,
                        median(&r.agents) * 1000.0
                    ));
                    reused_s.push(r.total);
                    reused_attempts.extend(r.attempts);
                    agents.extend(r.agents);
                }
            }
        }
    }
    let agent = median(&agents);
    let beyond: Vec<f64> = braid_attempts.iter().map(|a| a - agent).collect();
    Ok(vec![
        Row {
            scenario: "fan-out".into(),
            measure: "200 attempts writing one file, 2 slots, 20,000 files".into(),
            unit: Unit::Seconds,
            samples: braid_s.clone(),
            baseline: Some(Baseline {
                name: "worktree add/commit/remove under xargs -P 2".into(),
                samples: shell_s,
            }),
            goal: Goal::RatioAtMost(0.1),
            note: "braid end to end: plan, 10 tasks x 20 attempts, judging, integration, report"
                .into(),
        },
        Row {
            scenario: "fan-out".into(),
            measure: "200 attempts writing one file, against the best hand-written pipeline".into(),
            unit: Unit::Seconds,
            samples: braid_s,
            baseline: Some(Baseline {
                name: "2 persistent worktrees: checkout -f + clean -fdx, agent, add + commit, update-ref".into(),
                samples: reused_s,
            }),
            goal: Goal::RatioAtMost(0.25),
            note: "the pipeline's time includes making its two worktrees".into(),
        },
        Row {
            scenario: "fan-out".into(),
            measure: "median attempt beyond the agent's own time".into(),
            unit: Unit::Seconds,
            samples: beyond,
            baseline: None,
            goal: Goal::AtMost(0.020),
            note: format!(
                "braid's attempt on its worker less the agent's {:.1} ms; the reused pipeline's attempt: {:.0} ms",
                agent * 1000.0,
                median(&reused_attempts) * 1000.0
            ),
        },
    ])
}
