//! The command agent: any program, run in the attempt's worktree.
//!
//! It gets the prompt on standard input and in `BRAID_PROMPT_FILE`, the attempt's identity in
//! `BRAID_*` variables, and the worktree as its working directory. Exit code 0 means it
//! finished. Its output goes to the attempt's log file, capped; everything it starts is
//! stopped when it ends or times out.

use std::path::{Path, PathBuf};
use std::time::Duration;

use braid_shared::exec::{Cmd, ExecError, Finished, Output};
use braid_shared::proto::AttemptSpec;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::sandbox::Launch;

/// The variable that marks every process of an attempt, so strays can be found and stopped.
pub const LEASE_MARKER: &str = "BRAID_LEASE";

/// Where an attempt's files go, all outside the worktree so nothing of braid's is committed.
#[derive(Debug, Clone)]
pub struct AttemptFiles {
    /// The agent's log.
    pub log: PathBuf,
    /// The prompt, for `BRAID_PROMPT_FILE`.
    pub prompt: PathBuf,
    /// A retry's feedback, for `BRAID_FEEDBACK_FILE`.
    pub feedback: PathBuf,
    /// The folder for check logs.
    pub dir: PathBuf,
    /// The stem every file of this attempt starts with.
    pub stem: String,
}

impl AttemptFiles {
    /// The files of `spec`'s attempt in its log folder.
    pub fn of(spec: &AttemptSpec) -> Self {
        let dir = PathBuf::from(&spec.log_dir);
        let stem = format!("{}.{}", spec.task_id, spec.attempt);
        AttemptFiles {
            log: dir.join(format!("{stem}.agent.log")),
            prompt: dir.join(format!("{stem}.prompt.md")),
            feedback: dir.join(format!("{stem}.feedback.md")),
            dir,
            stem,
        }
    }

    /// The log file of the check called `name`.
    pub fn check_log(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{}.check.{name}.log", self.stem))
    }
}

/// Runs the agent of `spec` in `worktree` to its end.
pub async fn run_agent(
    spec: &AttemptSpec,
    launch: &Launch,
    worktree: &Path,
    files: &AttemptFiles,
    cancel: CancellationToken,
    tap: mpsc::Sender<String>,
) -> Result<Finished, ExecError> {
    let agent = spec.agent.clone().unwrap_or_default();
    let Some((program, args)) = agent.command.split_first() else {
        return Err(ExecError::Spawn {
            program: String::new(),
            cwd: worktree.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the agent has no command",
            ),
        });
    };
    tokio::fs::create_dir_all(&files.dir)
        .await
        .and(tokio::fs::write(&files.prompt, &spec.prompt).await)
        .map_err(|source| ExecError::Log {
            path: files.prompt.clone(),
            source,
        })?;
    if !spec.feedback.is_empty() {
        tokio::fs::write(&files.feedback, &spec.feedback)
            .await
            .map_err(|source| ExecError::Log {
                path: files.feedback.clone(),
                source,
            })?;
    }
    let timeout = (spec.timeout_ms > 0).then(|| Duration::from_millis(spec.timeout_ms));
    let mut cmd = Cmd::new(program, worktree)
        .args(args)
        .stdin(spec.prompt.clone().into_bytes())
        .output(Output::Log {
            path: files.log.clone(),
            cap: spec.log_cap_bytes,
        })
        .timeout(timeout)
        .cancel(cancel)
        .tap(tap);
    cmd = cmd.env("BRAID_PROMPT_FILE", &files.prompt);
    if !spec.feedback.is_empty() {
        cmd = cmd.env("BRAID_FEEDBACK_FILE", &files.feedback);
    }
    for (key, value) in &agent.env {
        cmd = cmd.env(key, value);
    }
    launch.prepare(cmd).run().await
}

/// The `BRAID_*` variables that tell a process which attempt it serves.
pub fn attempt_env(spec: &AttemptSpec, worktree: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("BRAID_RUN_ID", spec.run_id.clone()),
        ("BRAID_TASK_ID", spec.task_id.clone()),
        ("BRAID_ATTEMPT", spec.attempt.to_string()),
        ("BRAID_WORKTREE", worktree.to_string_lossy().into_owned()),
        ("BRAID_BASE_COMMIT", spec.base_commit.clone()),
    ]
}
