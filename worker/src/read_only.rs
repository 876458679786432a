//! Read-only jobs: an agent that reads the code and writes only an answer (a planner's
//! plan, a judge's verdict).
//!
//! The job's worktree is checked out at its base like an attempt's, but its processes see it
//! read-only; they may write only their scratch folder, where braid puts the job's inputs
//! and where the agent writes its answer. Nothing is committed and no check runs. The
//! answer comes back as bytes, so nothing of it is a path on the coordinator's side.
//!
//! Invariant: the names of variables and files a job asks for come from fixed lists or are
//! checked here, so a coordinator cannot make a worker write outside the job's scratch.

use std::path::{Path, PathBuf};

use braid_shared::exec::Ending;
use braid_shared::proto::{AttemptResult, AttemptSpec, AttemptStatus, Phase, ReadOnlyJob};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::agent::{AttemptFiles, run_agent};
use crate::attempt::{Update, forward_lines};
use crate::sandbox::Launch;
use crate::worktree_pool::Worktree;

/// The variables that may name an answer file, each with the file's name.
const ANSWERS: [(&str, &str); 2] = [
    ("BRAID_PLAN_FILE", "plan.yaml"),
    ("BRAID_VERDICT_FILE", "verdict.json"),
];

/// The variables that may name an input file.
const INPUTS: [&str; 2] = ["BRAID_CANDIDATE_A", "BRAID_CANDIDATE_B"];

/// Largest answer taken back.
pub const ANSWER_MAX: u64 = 1 << 20;

/// Largest final message of a read-only job sent back (it may hold the answer).
pub const MESSAGE_MAX: usize = 256 << 10;

/// The job's files: the folder they live in, and each variable with its path.
#[derive(Debug, Clone)]
pub struct JobFiles {
    /// The folder, in the job's scratch.
    pub dir: PathBuf,
    /// The answer file.
    pub answer: PathBuf,
    /// Variables naming the answer and the inputs.
    pub env: Vec<(&'static str, String)>,
}

/// Where `job`'s files go in `scratch`, or why the job cannot be run.
pub fn files(job: &ReadOnlyJob, scratch: &Path) -> Result<JobFiles, String> {
    let (answer_env, answer_name) = ANSWERS
        .iter()
        .find(|(env, _)| *env == job.answer_env)
        .ok_or_else(|| {
            format!(
                "a read-only job's answer must be named in one of {}, not {:?}",
                ANSWERS.map(|(e, _)| e).join(", "),
                job.answer_env
            )
        })?;
    let dir = scratch.join("braid-job");
    let answer = dir.join(answer_name);
    let mut env = vec![(*answer_env, answer.to_string_lossy().into_owned())];
    for input in &job.inputs {
        let var = INPUTS
            .iter()
            .find(|v| **v == input.env)
            .ok_or_else(|| format!("a read-only job may not set {:?}", input.env))?;
        if !file_name_ok(&input.name) || ANSWERS.iter().any(|(_, n)| *n == input.name) {
            return Err(format!(
                "{:?} is not a file name a read-only job may use",
                input.name
            ));
        }
        env.push((var, dir.join(&input.name).to_string_lossy().into_owned()));
    }
    Ok(JobFiles { dir, answer, env })
}

/// Letters, digits, `.`, `-` and `_`, not starting with `.`.
fn file_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// A read-only job as [`run`] takes it.
#[derive(Debug)]
pub struct Job<'a> {
    /// The attempt it came in.
    pub spec: &'a AttemptSpec,
    /// The job's part of it.
    pub job: &'a ReadOnlyJob,
    /// Where its log files go.
    pub files: &'a AttemptFiles,
}

/// Runs the read-only job of `spec` in `worktree`: its files written, the agent run, its
/// answer read. `launch` is the job's own, read-only sandbox.
pub async fn run(
    this: &Job<'_>,
    worktree: &Worktree,
    launch: &Launch,
    cancel: CancellationToken,
    updates: &mpsc::Sender<Update>,
    result: &mut AttemptResult,
) {
    let (spec, job, logs) = (this.spec, this.job, this.files);
    let tree = worktree.path();
    let scratch = &worktree.layout().tmp;
    let job_files = match files(job, scratch).and_then(|f| {
        put_inputs(job, &f).map_err(|e| format!("could not write the job's files: {e}"))?;
        Ok(f)
    }) {
        Ok(f) => f,
        Err(why) => {
            result.error = why;
            return;
        }
    };
    let mut launch = launch.clone();
    launch.env.extend(job_files.env.iter().cloned());
    result.log_path = AttemptFiles::name(&logs.log);
    let _ = updates.send(Update::Phase(Phase::Agent)).await;
    let (tap, forward) = forward_lines(updates);
    let agent = run_agent(spec, &launch, tree, scratch, logs, cancel.clone(), tap).await;
    let _ = forward.await;
    let run = match agent {
        Ok(run) => run,
        Err(err) => {
            result.error = format!("the agent could not run: {err}");
            return;
        }
    };
    if !run.finished.escaped.is_empty() {
        result.contained.push(format!(
            "processes the agent started outlived it and were killed: {}",
            run.finished.escaped.join(", ")
        ));
    }
    let tally = run.tally;
    result.agent_exit_code = run.finished.ending.code();
    if !tally.usage.is_empty() {
        result.usage = Some(tally.usage.into());
    }
    result.final_message = tally
        .message
        .as_deref()
        .map(|m| crate::presets::cut(m, MESSAGE_MAX))
        .unwrap_or_default();
    if spec.agent.as_ref().is_some_and(|a| !a.preset.is_empty()) {
        result.events_path = AttemptFiles::name(&logs.events);
    }
    if launch.sandbox.is_off() {
        // Nothing kept the agent from writing: what it changed is said, and the pool
        // throws it away with the worktree's next cleaning.
        if let Ok(status) = worktree
            .git()
            .run(&["status", "--porcelain", "--untracked-files=all"])
            .await
            && !status.trim().is_empty()
        {
            let changed: Vec<&str> = status.lines().map(|l| l.get(3..).unwrap_or(l)).collect();
            result.contained.push(format!(
                "the agent changed files of its read-only worktree ({}); braid discarded them",
                changed.join(", ")
            ));
        }
    }
    if let Ok(restored) = worktree.restore()
        && !restored.removed.is_empty()
    {
        result.contained.push(format!(
            "the agent changed its worktree's git folder ({}); braid undid it",
            restored.removed.join(", ")
        ));
    }
    match read_answer(&job_files.answer) {
        Ok(answer) => result.answer = answer,
        Err(why) => {
            result.error = why;
            return;
        }
    }
    let (status, error) = match run.finished.ending {
        _ if run.over_budget.is_some() => (
            AttemptStatus::OverBudget,
            run.over_budget.unwrap_or_default(),
        ),
        Ending::Exited(0) => match &tally.failed {
            Some(why) => (AttemptStatus::Failed, why.clone()),
            None => (AttemptStatus::Finished, String::new()),
        },
        ref ending => crate::attempt::not_finished(ending, &tally, spec.stall_ms),
    };
    if status == AttemptStatus::Failed {
        result.provider_fault = tally.fault() as i32;
    }
    result.status = status as i32;
    result.error = error;
}

/// Makes the job's folder afresh (an earlier job's answer must not be taken for this
/// one's) and writes its inputs.
fn put_inputs(job: &ReadOnlyJob, files: &JobFiles) -> std::io::Result<()> {
    match std::fs::remove_dir_all(&files.dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(&files.dir)?;
    for input in &job.inputs {
        std::fs::write(files.dir.join(&input.name), &input.content)?;
    }
    Ok(())
}

/// The answer file's bytes (empty when there is none), or why they are refused.
fn read_answer(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(_) => return Ok(Vec::new()),
    };
    if !meta.is_file() {
        return Err(format!(
            "the agent's answer {} is not a plain file",
            path.display()
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(ANSWER_MAX + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("could not read the agent's answer: {e}"))?;
    if bytes.len() as u64 > ANSWER_MAX {
        return Err(format!(
            "the agent's answer is larger than {} KiB",
            ANSWER_MAX >> 10
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_shared::proto::InputFile;

    #[test]
    fn names_from_the_wire_are_checked() {
        let scratch = Path::new("/s");
        let ok = ReadOnlyJob {
            answer_env: "BRAID_VERDICT_FILE".into(),
            inputs: vec![InputFile {
                env: "BRAID_CANDIDATE_A".into(),
                name: "a.diff".into(),
                content: b"x".to_vec(),
            }],
        };
        let f = files(&ok, scratch).unwrap();
        assert_eq!(f.answer, Path::new("/s/braid-job/verdict.json"));
        assert_eq!(
            f.env[1],
            ("BRAID_CANDIDATE_A", "/s/braid-job/a.diff".to_owned())
        );
        let with = |env: &str, name: &str, answer: &str| ReadOnlyJob {
            answer_env: answer.into(),
            inputs: vec![InputFile {
                env: env.into(),
                name: name.into(),
                content: Vec::new(),
            }],
        };
        for bad in [
            with("BRAID_CANDIDATE_A", "../x", "BRAID_PLAN_FILE"),
            with("BRAID_CANDIDATE_A", "/etc/passwd", "BRAID_PLAN_FILE"),
            with("BRAID_CANDIDATE_A", ".bashrc", "BRAID_PLAN_FILE"),
            with("BRAID_CANDIDATE_A", "plan.yaml", "BRAID_PLAN_FILE"),
            with("PATH", "a.diff", "BRAID_PLAN_FILE"),
            with("BRAID_CANDIDATE_A", "a.diff", "LD_PRELOAD"),
        ] {
            assert!(files(&bad, scratch).is_err(), "{bad:?}");
        }
    }
}
