//! Verification: the `merge.verify` checks run on the integrated result, in a worktree of
//! its own that is removed afterwards. A check with `paths` runs when any integrated
//! winner's diff touches one of them.

use std::path::Path;

use braid_shared::git::Git;
use braid_worker::checks::run_checks;
use tokio_util::sync::CancellationToken;

use crate::plan::Check;
use crate::report::CheckReport;
use crate::scheduler::{check_report, check_spec};
use crate::state;

/// Runs `checks` on `commit`; logs go to `log_dir/verify.<name>.log`. `changed` is the
/// union of the paths the integrated winners changed.
#[allow(clippy::too_many_arguments)]
pub async fn verify(
    git_dir: &Path,
    run: &str,
    commit: &str,
    checks: &[Check],
    changed: &[String],
    log_dir: &Path,
    log_cap: u64,
    cancel: &CancellationToken,
) -> Result<Vec<CheckReport>, braid_shared::git::GitError> {
    let path = state::worktrees_dir(git_dir, run).join("verify");
    let git = Git::at(git_dir);
    git.worktree_add(&path, commit).await?;
    let specs: Vec<_> = checks.iter().map(check_spec).collect();
    let env = vec![
        ("BRAID_RUN_ID", run.to_owned()),
        ("BRAID_WORKTREE", path.to_string_lossy().into_owned()),
        ("BRAID_BASE_COMMIT", commit.to_owned()),
    ];
    let results = run_checks(
        &specs,
        &path,
        &env,
        log_cap,
        |name| log_dir.join(format!("verify.{name}.log")),
        Some(changed),
        cancel,
    )
    .await;
    git.worktree_remove(&path).await?;
    Ok(results.iter().map(check_report).collect())
}
