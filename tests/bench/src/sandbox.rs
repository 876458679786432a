//! The sandbox's cost: a process started in an attempt's sandbox (bubblewrap, as the
//! worker starts agents, checks and scores) against the same process started without it.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, anyhow};
use braid_shared::exec::Cmd;
use braid_worker::cache::Layout;
use braid_worker::sandbox::{Sandbox, available};

use crate::table::{Baseline, Goal, Row, Unit, secs};

/// Processes per round.
const PROCESSES: usize = 50;

/// Runs the scenario `rounds` times.
pub async fn run(scratch: &Path, rounds: usize) -> Result<Vec<Row>> {
    available().await.map_err(|e| anyhow!(e))?;
    let work = scratch.join("work");
    let layout = Layout::new(&work, "w-1");
    for dir in [&layout.tree, &layout.git, &layout.tmp] {
        std::fs::create_dir_all(dir)?;
    }
    let sandbox = Sandbox::new(None, &[&layout.tree, &layout.git], &layout.tmp, &work);
    let (mut plain, mut contained) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for _ in 0..PROCESSES {
            let started = Instant::now();
            let done = Cmd::new("true", &layout.tree).run().await?;
            plain.push(secs(started.elapsed()));
            anyhow::ensure!(done.ending.success(), "true failed");
            let started = Instant::now();
            let done = sandbox.wrap(Cmd::new("true", &layout.tree)).run().await?;
            contained.push(secs(started.elapsed()));
            anyhow::ensure!(done.ending.success(), "true failed in the sandbox");
        }
    }
    Ok(vec![Row {
        scenario: "sandbox".into(),
        measure: "a process started in an attempt's sandbox".into(),
        unit: Unit::Seconds,
        samples: contained,
        baseline: Some(Baseline {
            name: "the same process without one".into(),
            samples: plain,
        }),
        goal: Goal::AtMost(0.015),
        note: "bubblewrap: read-only system, PID and IPC namespaces, the other worktrees hidden"
            .into(),
    }])
}
