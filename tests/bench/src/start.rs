//! Attempt start: the worktree an attempt gets, fresh and reused, against `git worktree add`
//! on the same repository.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, anyhow};
use braid_worker::worktree_pool::WorktreePool;

use crate::repo::{BigRepo, git};
use crate::table::{Baseline, Goal, Row, Unit, secs};

/// What an agent leaves behind: a changed file and a new one.
fn leave_mess(worktree: &Path) -> Result<()> {
    std::fs::write(worktree.join("src/d000/f000.rs"), "changed by the agent\n")?;
    std::fs::write(worktree.join("notes.txt"), "new file\n")?;
    Ok(())
}

/// Runs the scenario `rounds` times.
pub async fn run(repo: &BigRepo, scratch: &Path, rounds: usize) -> Result<Vec<Row>> {
    let (mut git_add, mut fresh, mut reused) = (Vec::new(), Vec::new(), Vec::new());
    let steady = WorktreePool::new("bench-reused", crate::cache());
    let worktree = steady
        .acquire(&repo.path, "bench-reused", &repo.main)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    steady.release(worktree).await;
    for round in 0..rounds {
        // git worktree add, as a user's script runs it.
        let path = scratch.join(format!("git-{round}"));
        let path_text = path.to_string_lossy().into_owned();
        let started = Instant::now();
        git(
            &repo.path,
            &[
                "worktree", "add", "--quiet", "--detach", &path_text, &repo.main,
            ],
        )?;
        git_add.push(secs(started.elapsed()));
        git(&repo.path, &["worktree", "remove", "--force", &path_text])?;

        // braid's fresh worktree: a pool that has none free.
        let pool = WorktreePool::new("bench-fresh", crate::cache());
        let started = Instant::now();
        let worktree = pool
            .acquire(&repo.path, &format!("bench-fresh-{round}"), &repo.main)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        fresh.push(secs(started.elapsed()));
        check_at(worktree.path(), &repo.main)?;
        pool.release(worktree).await;
        pool.close().await;

        // braid's reused worktree, moved 5 files away after an attempt left a mess.
        let target = if round % 2 == 0 {
            &repo.next
        } else {
            &repo.main
        };
        let worktree = steady
            .acquire(&repo.path, "bench-reused", &repo.main)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        leave_mess(worktree.path())?;
        steady.release(worktree).await;
        let started = Instant::now();
        let worktree = steady
            .acquire(&repo.path, "bench-reused", target)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        reused.push(secs(started.elapsed()));
        check_at(worktree.path(), target)?;
        steady.release(worktree).await;
    }
    steady.close().await;
    let baseline = Baseline {
        name: "git worktree add".into(),
        samples: git_add,
    };
    Ok(vec![
        Row {
            scenario: "attempt start".into(),
            measure: "fresh worktree, 20,000 files".into(),
            unit: Unit::Seconds,
            samples: fresh,
            baseline: Some(baseline.clone()),
            goal: Goal::RatioAtMost(0.5),
            note: String::new(),
        },
        Row {
            scenario: "attempt start".into(),
            measure: "reused worktree moved 5 files away".into(),
            unit: Unit::Seconds,
            samples: reused,
            baseline: Some(baseline),
            goal: Goal::RatioAtMost(0.05),
            note: "the earlier attempt left a changed and a new file".into(),
        },
    ])
}

/// Fails unless the worktree at `path` is clean at `commit`.
fn check_at(path: &Path, commit: &str) -> Result<()> {
    let head = git(path, &["rev-parse", "HEAD"])?;
    let status = git(path, &["status", "--porcelain", "--ignored"])?;
    if head.trim() != commit || !status.is_empty() {
        return Err(anyhow!(
            "worktree {} is not clean at {commit}: HEAD {head}, status {status}",
            path.display()
        ));
    }
    Ok(())
}
