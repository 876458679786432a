//! One attempt from start to result: worktree, agent, commit, checks, score.
//!
//! Whatever the agent left in the worktree is committed, even when it failed or timed out,
//! so no work is lost: every attempt that changed something survives as a commit, which the
//! coordinator records on the attempt's branch. The worker runs the checks but does not
//! judge them: only the coordinator knows which of them already fail on the task's base.
//!
//! A baseline job is the same without the agent: the checks run on the base commit.

use std::path::Path;
use std::time::Instant;

use braid_shared::exec::Ending;
use braid_shared::git::Git;
use braid_shared::proto::{AttemptResult, AttemptSpec, AttemptStatus, DiffStat, Phase};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::agent::{AttemptFiles, attempt_env, run_agent};
use crate::checks::{run_checks, run_score, skipped};
use crate::commit;
use crate::worktree_pool::WorktreePool;

/// Something the attempt reports while it runs.
#[derive(Debug)]
pub enum Update {
    /// It entered a phase.
    Phase(Phase),
    /// The agent printed these lines.
    Lines(Vec<String>),
}

/// Most lines in one batch of progress.
const BATCH_LINES: usize = 64;

/// Runs the attempt `spec` under `lease` and returns its result. Never fails: every failure
/// is a result with a status and a sentence.
pub async fn run_attempt(
    spec: &AttemptSpec,
    lease: &str,
    pool: &WorktreePool,
    cancel: CancellationToken,
    updates: mpsc::Sender<Update>,
) -> AttemptResult {
    let started = Instant::now();
    let mut result = AttemptResult {
        lease_id: lease.to_owned(),
        status: AttemptStatus::Failed as i32,
        ..Default::default()
    };
    let _ = updates.send(Update::Phase(Phase::Provisioning)).await;
    let worktree = match pool
        .acquire(Path::new(&spec.repo), &spec.run_id, &spec.base_commit)
        .await
    {
        Ok(worktree) => worktree,
        Err(err) => {
            result.error = format!("could not prepare a worktree: {err}");
            result.infrastructure = true;
            result.duration_ms = started.elapsed().as_millis() as u64;
            return result;
        }
    };
    let provisioned = started.elapsed();
    if spec.baseline {
        run_baseline(spec, worktree.path(), cancel, &updates, &mut result).await;
    } else {
        let repo = worktree.repo();
        run_in(
            spec,
            lease,
            repo,
            worktree.path(),
            cancel,
            &updates,
            &mut result,
        )
        .await;
    }
    pool.release(worktree).await;
    result.duration_ms = started.elapsed().as_millis() as u64;
    tracing::debug!(
        task = %spec.task_id,
        attempt = spec.attempt,
        worktree_ms = provisioned.as_secs_f64() * 1e3,
        total_ms = started.elapsed().as_secs_f64() * 1e3,
        "attempt timings"
    );
    result
}

/// Runs every check on the base commit itself.
async fn run_baseline(
    spec: &AttemptSpec,
    dir: &Path,
    cancel: CancellationToken,
    updates: &mpsc::Sender<Update>,
    result: &mut AttemptResult,
) {
    let _ = updates.send(Update::Phase(Phase::Checks)).await;
    let files = AttemptFiles::of(spec);
    let env = attempt_env(spec, dir);
    result.checks = run_checks(
        &spec.checks,
        dir,
        &env,
        spec.log_cap_bytes,
        |name| files.check_log(name),
        None,
        &cancel,
    )
    .await;
    result.status = if cancel.is_cancelled() {
        AttemptStatus::Cancelled
    } else {
        AttemptStatus::Finished
    } as i32;
}

async fn run_in(
    spec: &AttemptSpec,
    lease: &str,
    repo: gix::ThreadSafeRepository,
    dir: &Path,
    cancel: CancellationToken,
    updates: &mpsc::Sender<Update>,
    result: &mut AttemptResult,
) {
    let files = AttemptFiles::of(spec);
    result.log_path = files.log.to_string_lossy().into_owned();
    let _ = updates.send(Update::Phase(Phase::Agent)).await;

    let (tap, mut lines) = mpsc::channel::<String>(1024);
    let forward = {
        let updates = updates.clone();
        braid_shared::task::spawn("log-lines", async move {
            let mut batch = Vec::with_capacity(BATCH_LINES);
            while lines.recv_many(&mut batch, BATCH_LINES).await > 0 {
                if updates
                    .send(Update::Lines(std::mem::take(&mut batch)))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        })
    };
    let clock = Instant::now();
    let agent = run_agent(spec, lease, dir, &files, cancel.clone(), tap).await;
    let _ = forward.await;
    let agent_ms = clock.elapsed().as_secs_f64() * 1e3;
    let ending = match agent {
        Ok(done) => done.ending,
        Err(err) => {
            result.error = format!("the agent could not run: {err}");
            result.checks = skip_all(spec, "the agent could not run");
            return;
        }
    };
    result.agent_exit_code = ending.code();

    let _ = updates.send(Update::Phase(Phase::Committing)).await;
    let clock = Instant::now();
    let recorded = record(spec, repo, dir).await;
    let record_ms = clock.elapsed().as_secs_f64() * 1e3;
    let (head, stat) = match recorded {
        Ok(recorded) => recorded,
        Err(err) => {
            result.error = err;
            result.infrastructure = true;
            return;
        }
    };
    let changed = head != spec.base_commit;
    let mut touched = Vec::new();
    if let Some(stat) = stat {
        // The coordinator records the commit on the attempt's branch once it accepts the
        // result under a current lease, so a lost worker can never move a branch.
        result.commit = head;
        result.diff = Some(DiffStat {
            files: stat.files,
            insertions: stat.insertions,
            deletions: stat.deletions,
        });
        touched = stat.paths;
    }
    tracing::debug!(
        task = %spec.task_id,
        attempt = spec.attempt,
        agent_ms,
        record_ms,
        "attempt phases"
    );

    let (status, error) = match ending {
        Ending::Exited(0) if !changed => (
            AttemptStatus::Failed,
            "the agent changed nothing".to_owned(),
        ),
        Ending::Exited(0) => (AttemptStatus::Finished, String::new()),
        Ending::Exited(code) => (
            AttemptStatus::Failed,
            format!("the agent exited with code {code}"),
        ),
        Ending::Signalled(signal) => (
            AttemptStatus::Failed,
            format!("the agent was killed by signal {signal}"),
        ),
        Ending::TimedOut => (
            AttemptStatus::TimedOut,
            "the agent ran past its timeout and was stopped".to_owned(),
        ),
        Ending::Cancelled => (
            AttemptStatus::Cancelled,
            "the attempt was cancelled".to_owned(),
        ),
    };
    if status != AttemptStatus::Finished {
        result.status = status as i32;
        result.checks = skip_all(spec, &error);
        result.error = error;
        return;
    }

    let _ = updates.send(Update::Phase(Phase::Checks)).await;
    let env = attempt_env(spec, dir);
    result.checks = run_checks(
        &spec.checks,
        dir,
        &env,
        spec.log_cap_bytes,
        |name| files.check_log(name),
        Some(&touched),
        &cancel,
    )
    .await;
    if let (Some(score), false) = (&spec.score, cancel.is_cancelled()) {
        match run_score(score, dir, &env, &cancel).await {
            Ok(value) => result.score = Some(value),
            Err(why) => result.score_error = why,
        }
    }
    result.status = if cancel.is_cancelled() {
        result.error = "the attempt was cancelled".to_owned();
        AttemptStatus::Cancelled
    } else {
        AttemptStatus::Finished
    } as i32;
}

/// Stages and commits what the agent left, and measures the diff when HEAD moved: in
/// process where [`commit::stage_all`] can, with `git add --all` where not. Returns HEAD
/// and the diff, or a sentence.
async fn record(
    spec: &AttemptSpec,
    repo: gix::ThreadSafeRepository,
    dir: &Path,
) -> Result<(String, Option<braid_shared::git::DiffStat>), String> {
    let message = format!(
        "braid: {} attempt {}\n\nRun {}.",
        spec.task_id, spec.attempt, spec.run_id
    );
    let base = spec.base_commit.clone();
    let diff_base = if spec.diff_base.is_empty() {
        spec.base_commit.clone()
    } else {
        spec.diff_base.clone()
    };
    let commit_and_measure = move |repo: &gix::Repository| {
        let head = commit::commit_index(repo, &message)
            .map_err(|e| format!("could not commit the attempt's changes: {e}"))?;
        if head == base {
            return Ok((head, None));
        }
        let stat = commit::diff_stat(repo, &diff_base, &head)
            .map_err(|e| format!("could not measure the attempt's diff: {e}"))?;
        Ok((head, Some(stat)))
    };
    // One trip off the async threads when staging stays in process.
    let (tried, then) = (repo.clone(), commit_and_measure.clone());
    let first = in_process(tried, move |repo| match commit::stage_all(repo) {
        Ok(_) => then(repo).map(Some),
        Err(why) => {
            tracing::debug!(%why, "staging with git");
            Ok(None)
        }
    })
    .await?;
    if let Some(recorded) = first {
        return Ok(recorded);
    }
    Git::at(dir)
        .add_all()
        .await
        .map_err(|e| format!("could not commit the attempt's changes: {e}"))?;
    in_process(repo, commit_and_measure).await
}

/// Runs `work` on the opened worktree `repo` off the async threads.
async fn in_process<T: Send + 'static>(
    repo: gix::ThreadSafeRepository,
    work: impl FnOnce(&gix::Repository) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(move || work(&repo.to_thread_local()))
        .await
        .unwrap_or_else(|e| Err(format!("stopped: {e}")))
}

/// Every check of `spec`, skipped for `why`.
fn skip_all(spec: &AttemptSpec, why: &str) -> Vec<braid_shared::proto::CheckResult> {
    spec.checks.iter().map(|c| skipped(c, why)).collect()
}
