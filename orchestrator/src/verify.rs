//! Verification: the `merge.verify` checks run on the integrated result, in a worktree of
//! its own in braid's cache, sandboxed as the run's checks are, and removed afterwards. A
//! check with `paths` runs when any integrated winner's diff touches one of them.

use std::path::Path;

use braid_shared::git::GitError;
use braid_worker::checks::run_checks;
use braid_worker::sandbox::{Launch, Sandbox};
use braid_worker::worktree_pool::WorktreePool;
use tokio_util::sync::CancellationToken;

use crate::plan::Plan;
use crate::report::CheckReport;
use crate::scheduler::{check_report, check_spec, sandbox_spec};

/// Runs the plan's `merge.verify` checks on `commit` in a worktree in the cache folder
/// `cache`; logs go to `log_dir/verify.<name>.log`. `changed` is the union of the paths the
/// integrated winners changed.
#[allow(clippy::too_many_arguments)]
pub async fn verify(
    plan: &Plan,
    cache: &Path,
    run: &str,
    commit: &str,
    changed: &[String],
    log_dir: &Path,
    log_cap: u64,
    cancel: &CancellationToken,
) -> Result<Vec<CheckReport>, GitError> {
    let pool = WorktreePool::new("verify", cache);
    let worktree = pool.acquire(&plan.repo, run, commit).await?;
    let layout = worktree.layout().clone();
    let sandbox = if plan.sandbox.off {
        Sandbox::off()
    } else {
        let spec = sandbox_spec(&plan.sandbox, None);
        Sandbox::new(
            Some(&spec),
            &[&layout.tree, &layout.git],
            &layout.tmp,
            &cache.join("work"),
        )
    };
    let launch = Launch {
        env: vec![
            ("BRAID_RUN_ID", run.to_owned()),
            ("BRAID_WORKTREE", layout.tree.to_string_lossy().into_owned()),
            ("BRAID_BASE_COMMIT", commit.to_owned()),
        ],
        sandbox,
        marker: None,
        grace: crate::plan::DEFAULT_GRACE,
    };
    let specs: Vec<_> = plan.merge.verify.iter().map(check_spec).collect();
    let results = run_checks(
        &specs,
        &layout.tree,
        &launch,
        log_cap,
        |name| log_dir.join(format!("verify.{name}.log")),
        Some(changed),
        cancel,
    )
    .await;
    pool.release(worktree).await;
    pool.close().await;
    Ok(results
        .into_iter()
        .map(|mut check| {
            check.log_path = crate::scheduler::logs::path_of(log_dir, &check.log_path, "verify")
                .unwrap_or_default();
            check_report(&check)
        })
        .collect())
}
