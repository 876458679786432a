//! Makespan: a 200-task DAG of sleeping agents (50 to 500 ms each, from a fixed seed) on 8
//! slots, against the lower bound no scheduler can beat: max(critical path, total work /
//! slots). The makespan is read from braid's report: from the run's start to the last
//! result, so it includes starting the coordinator and the worker, every worktree, commit
//! and base merge.

use std::fmt::Write;
use std::path::Path;

use anyhow::{Result, bail};

use crate::repo::SmallRepo;
use crate::table::{Baseline, Goal, Row, Unit};
use crate::{braid_local_run, report_attempts, say};

const TASKS: usize = 200;
const SLOTS: usize = 8;
const SEED: u64 = 5;

/// The DAG: each task's sleep in ms and its deps (earlier tasks only).
fn dag() -> Vec<(u64, Vec<usize>)> {
    let mut rng = fastrand::Rng::with_seed(SEED);
    (0..TASKS)
        .map(|i| {
            let ms = rng.u64(50..=500);
            let mut deps: Vec<usize> = (0..rng.usize(0..=3).min(i))
                .map(|_| rng.usize(i.saturating_sub(24)..i))
                .collect();
            deps.sort_unstable();
            deps.dedup();
            (ms, deps)
        })
        .collect()
}

/// max(critical path, total work / slots), in seconds.
fn bound(dag: &[(u64, Vec<usize>)]) -> (f64, f64) {
    let mut finish = vec![0u64; dag.len()];
    for (i, (ms, deps)) in dag.iter().enumerate() {
        finish[i] = ms + deps.iter().map(|&d| finish[d]).max().unwrap_or(0);
    }
    let critical = finish.iter().copied().max().unwrap_or(0) as f64 / 1e3;
    let work = dag.iter().map(|(ms, _)| *ms).sum::<u64>() as f64 / 1e3;
    (critical, work / SLOTS as f64)
}

fn plan(repo: &SmallRepo, dag: &[(u64, Vec<usize>)]) -> String {
    let mut plan = format!(
        "version: 1\nname: bench-makespan\nrepo: {}\nbase: main\ndefaults:\n  attempts: 1\ntasks:\n",
        repo.path.display()
    );
    for (i, (ms, deps)) in dag.iter().enumerate() {
        let deps: Vec<String> = deps.iter().map(|d| format!("t{d}")).collect();
        let agent = format!(
            r#"sleep {}.{:03}; echo done > "$BRAID_TASK_ID.txt""#,
            ms / 1000,
            ms % 1000
        );
        let _ = writeln!(
            plan,
            "  - id: t{i}\n    prompt: sleep\n    deps: [{}]\n    agent:\n      command: [sh, -c, {}]",
            deps.join(", "),
            serde_json::to_string(&agent).unwrap_or_default()
        );
    }
    plan
}

/// Runs the scenario `rounds` times.
pub fn run(repo: &SmallRepo, scratch: &Path, rounds: usize) -> Result<Vec<Row>> {
    let dag = dag();
    let (critical, per_slot) = bound(&dag);
    let lower = critical.max(per_slot);
    let plan_path = scratch.join("makespan.yaml");
    std::fs::write(&plan_path, plan(repo, &dag))?;
    let mut makespans = Vec::new();
    for _ in 0..rounds {
        let out = braid_local_run(&plan_path, SLOTS)?
            .stderr(std::fs::File::create(scratch.join("braid-progress.txt"))?)
            .output()?;
        if !out.status.success() {
            bail!(
                "braid run failed ({}); see {}",
                out.status,
                scratch.display()
            );
        }
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let attempts = report_attempts(&report);
        if attempts.len() != TASKS || attempts.iter().any(|a| a["status"] != "succeeded") {
            bail!("braid run: not every one of the {TASKS} attempts succeeded");
        }
        let last = attempts
            .iter()
            .filter_map(|a| a["finished_ms"].as_u64())
            .max()
            .unwrap_or(0) as f64
            / 1e3;
        say(format!(
            "  makespan {last:.2} s (whole run {:.2} s)",
            report["duration_ms"].as_u64().unwrap_or(0) as f64 / 1e3
        ));
        makespans.push(last);
    }
    Ok(vec![Row {
        scenario: "makespan".into(),
        measure: "200-task DAG of 50-500 ms agents on 8 slots".into(),
        unit: Unit::Seconds,
        samples: makespans,
        baseline: Some(Baseline {
            name: "max(critical path, work/slots)".into(),
            samples: vec![lower],
        }),
        goal: Goal::RatioAtMost(1.02),
        note: format!("critical path {critical:.2} s, work/slots {per_slot:.2} s"),
    }])
}
