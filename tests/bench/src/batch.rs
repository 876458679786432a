//! Batch: one task fanned over the 200 folders of the 20,000-file repository, each target a
//! one-file change on 2 slots, against 200 plain tasks of one attempt each writing one file,
//! in the same round: a target should cost no more than an attempt.

use std::fmt::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Result, bail};

use crate::repo::{BigRepo, DIRS};
use crate::table::{Baseline, Goal, Row, Unit, secs};
use crate::{braid_local_run, report_attempts, say};

const SLOTS: usize = 2;

fn fanned(repo: &BigRepo) -> String {
    format!(
        "version: 1\nname: bench-batch\nrepo: {}\nbase: main\ntasks:\n  - id: edit\n    for_each: {{dirs: \"src/*\"}}\n    prompt: one file in {{{{dir}}}}\n    agent: {{command: [sh, -c, 'echo changed > {{{{dir}}}}/bench.txt']}}\n",
        repo.path.display()
    )
}

fn plain(repo: &BigRepo) -> String {
    let mut plan = format!(
        "version: 1\nname: bench-plain\nrepo: {}\nbase: main\ndefaults:\n  agent: {{command: [sh, -c, 'echo changed > \"out-$BRAID_TASK_ID.txt\"']}}\ntasks:\n",
        repo.path.display()
    );
    for t in 0..DIRS {
        let _ = writeln!(plan, "  - id: p{t}\n    prompt: one file");
    }
    plan
}

fn braid_run(plan: &Path, scratch: &Path) -> Result<f64> {
    let out = scratch.join("batch-report.json");
    let started = Instant::now();
    let status = braid_local_run(plan, SLOTS)?
        .stdout(std::fs::File::create(&out)?)
        .stderr(std::fs::File::create(scratch.join("batch-progress.txt"))?)
        .status()?;
    let took = secs(started.elapsed());
    if !status.success() {
        bail!(
            "braid run {} failed ({status}); see {}",
            plan.display(),
            scratch.display()
        );
    }
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&out)?)?;
    let succeeded = report_attempts(&report)
        .iter()
        .filter(|a| a["status"] == "succeeded")
        .count();
    if succeeded != DIRS {
        bail!(
            "{}: {succeeded} attempts succeeded, not {DIRS}",
            plan.display()
        );
    }
    Ok(took)
}

/// Runs the scenario `rounds` times, the two plans taking turns at going first.
pub fn run(repo: &BigRepo, scratch: &Path, rounds: usize) -> Result<Vec<Row>> {
    let (targets_plan, plain_plan) = (scratch.join("batch.yaml"), scratch.join("plain.yaml"));
    std::fs::write(&targets_plan, fanned(repo))?;
    std::fs::write(&plain_plan, plain(repo))?;
    let (mut targets, mut plains) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for fanned_first in [round % 2 == 0, round % 2 != 0] {
            if fanned_first {
                targets.push(braid_run(&targets_plan, scratch)?);
                say(format!(
                    "  200 targets: {:.1} s",
                    targets[targets.len() - 1]
                ));
            } else {
                plains.push(braid_run(&plain_plan, scratch)?);
                say(format!(
                    "  200 plain tasks: {:.1} s",
                    plains[plains.len() - 1]
                ));
            }
        }
    }
    Ok(vec![Row {
        scenario: "batch".into(),
        measure: "200 targets of a fanned task, a one-file change each, 2 slots".into(),
        unit: Unit::Seconds,
        samples: targets,
        baseline: Some(Baseline {
            name: "200 plain tasks of one attempt, a one-file change each".into(),
            samples: plains,
        }),
        goal: Goal::RatioAtMost(1.2),
        note: "braid run end to end on the 20,000-file repository, both plans in the same round"
            .into(),
    }])
}
