//! Checks: shell command lines run in a worktree, judged by their exit code.
//!
//! braid runs the checks itself rather than trusting an agent's own "done". Each check's
//! output goes to its own capped log file. All checks run, even after one failed, so a
//! report can show every check of every attempt side by side.

use std::path::{Path, PathBuf};
use std::time::Duration;

use braid_shared::exec::{Cmd, Ending, Output};
use braid_shared::proto::{CheckResult, CheckSpec, CheckStatus};
use tokio_util::sync::CancellationToken;

/// Runs `checks` in `dir`, each logging to the file `log_of` names for it.
pub async fn run_checks(
    checks: &[CheckSpec],
    dir: &Path,
    env: &[(&str, String)],
    log_cap: u64,
    log_of: impl Fn(&str) -> PathBuf,
    cancel: &CancellationToken,
) -> Vec<CheckResult> {
    let mut results = Vec::with_capacity(checks.len());
    for check in checks {
        let log = log_of(&check.name);
        if cancel.is_cancelled() {
            results.push(skipped(check));
            continue;
        }
        let timeout = (check.timeout_ms > 0).then(|| Duration::from_millis(check.timeout_ms));
        let mut cmd = Cmd::new("sh", dir)
            .args(["-c", &check.run])
            .output(Output::Log {
                path: log.clone(),
                cap: log_cap,
            })
            .timeout(timeout)
            .cancel(cancel.clone());
        for (key, value) in env {
            cmd = cmd.env(key, value);
        }
        let result = match cmd.run().await {
            Ok(done) => {
                let status = match done.ending {
                    Ending::Exited(0) => CheckStatus::Passed,
                    Ending::TimedOut => CheckStatus::TimedOut,
                    Ending::Cancelled => CheckStatus::Skipped,
                    Ending::Exited(_) | Ending::Signalled(_) => CheckStatus::Failed,
                };
                CheckResult {
                    name: check.name.clone(),
                    status: status as i32,
                    exit_code: done.ending.code(),
                    duration_ms: done.duration.as_millis() as u64,
                    log_path: log.to_string_lossy().into_owned(),
                }
            }
            Err(err) => {
                tracing::warn!(check = %check.name, %err, "check could not start");
                CheckResult {
                    name: check.name.clone(),
                    status: CheckStatus::Failed as i32,
                    exit_code: None,
                    duration_ms: 0,
                    log_path: log.to_string_lossy().into_owned(),
                }
            }
        };
        results.push(result);
    }
    results
}

/// The record of a check that did not run.
pub fn skipped(check: &CheckSpec) -> CheckResult {
    CheckResult {
        name: check.name.clone(),
        status: CheckStatus::Skipped as i32,
        exit_code: None,
        duration_ms: 0,
        log_path: String::new(),
    }
}
