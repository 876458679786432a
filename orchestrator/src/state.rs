//! The state directory inside the repository's git directory: `<git-dir>/braid/`, holding
//! `runs/<run>/` (reports and logs) and `worktrees/<run>/`, so the working tree stays clean.

use std::path::{Path, PathBuf};

use braid_shared::git::Git;

/// A new run id: UTC time, then four hex digits, so ids sort by time.
pub fn new_run_id() -> String {
    format!(
        "{}-{:04x}",
        chrono::Utc::now().format("%Y%m%d-%H%M%S"),
        fastrand::u16(..)
    )
}

/// The run's folder for reports and logs.
pub fn run_dir(git_dir: &Path, run: &str) -> PathBuf {
    git_dir.join("braid/runs").join(run)
}

/// The run's folder of worktrees.
pub fn worktrees_dir(git_dir: &Path, run: &str) -> PathBuf {
    git_dir.join("braid/worktrees").join(run)
}

/// Removes whatever worktree of the run is still there, so none outlives its run however
/// the run ended.
pub async fn sweep_worktrees(git_dir: &Path, run: &str) {
    let dir = worktrees_dir(git_dir, run);
    let git = Git::at(git_dir);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if git.worktree_remove(&path).await.is_err() && path.exists() {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
    let _ = git.worktree_prune().await;
    let _ = std::fs::remove_dir(&dir);
    let _ = std::fs::remove_dir(git_dir.join("braid/worktrees"));
}
