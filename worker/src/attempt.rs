//! One attempt from start to result: worktree, agent, commit, checks, score.
//!
//! Whatever the agent left in the worktree is committed, even when it failed or timed out,
//! so no work is lost: every attempt that changed something survives as a commit, which the
//! coordinator records on the attempt's branch. The worker runs the checks but does not
//! judge them: only the coordinator knows which of them already fail on the task's base.
//!
//! A baseline job is the same without the agent: the checks run on the base commit.

use std::path::Path;
use std::time::{Duration, Instant};

use braid_shared::exec::{Ending, KILL_GRACE};
use braid_shared::proto::{AttemptResult, AttemptSpec, AttemptStatus, DiffStat, Phase};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::agent::{AttemptFiles, LEASE_MARKER, attempt_env, run_agent};
use crate::cache;
use crate::checks::{run_checks, run_score, skipped};
use crate::commit;
use crate::sandbox::{Launch, Sandbox};
use crate::worktree_pool::{Worktree, WorktreePool};

/// Where an attempt's objects come from and its log files go, on this worker.
#[derive(Debug, Clone)]
pub struct Place {
    /// The repository the worktree borrows objects from (the worker's mirror).
    pub source: cache::Source,
    /// The folder for the attempt's log files.
    pub logs: std::path::PathBuf,
}

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

/// A tap for the agent's output lines, and the task that forwards them as progress in
/// batches; it ends when the tap is dropped.
pub(crate) fn forward_lines(
    updates: &mpsc::Sender<Update>,
) -> (mpsc::Sender<String>, tokio::task::JoinHandle<()>) {
    let (tap, mut lines) = mpsc::channel::<String>(1024);
    let updates = updates.clone();
    let forward = braid_shared::task::spawn("log-lines", async move {
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
    });
    (tap, forward)
}

/// Runs the attempt `spec` under `lease` and returns its result. Never fails: every failure
/// is a result with a status and a sentence.
pub async fn run_attempt(
    spec: &AttemptSpec,
    lease: &str,
    pool: &WorktreePool,
    place: &Place,
    cancel: CancellationToken,
    updates: mpsc::Sender<Update>,
) -> AttemptResult {
    let started = Instant::now();
    let mut result = AttemptResult {
        lease_id: lease.to_owned(),
        status: AttemptStatus::Failed as i32,
        ..Default::default()
    };
    if let Some(agent) = &spec.agent {
        result.agent = if agent.preset.is_empty() {
            "command".to_owned()
        } else {
            agent.preset.clone()
        };
        result.model = agent.model.clone();
    }
    let _ = updates.send(Update::Phase(Phase::Provisioning)).await;
    let worktree = match pool
        .acquire_from(&place.source, &spec.run_id, &spec.base_commit)
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
    let launch = launch_for(spec, lease, &worktree, pool.root());
    worktree.runs(&launch.sandbox);
    let files = AttemptFiles::of(spec, &place.logs);
    if let Err(why) = crate::agent::prepare(spec, &launch, worktree.path(), &files, &cancel).await {
        result.status = if cancel.is_cancelled() {
            AttemptStatus::Cancelled
        } else {
            AttemptStatus::Failed
        } as i32;
        result.checks = skip_all(spec, &why);
        result.error = why;
        pool.release(worktree).await;
        result.duration_ms = started.elapsed().as_millis() as u64;
        return result;
    }
    if let Some(job) = &spec.read_only {
        let job = crate::read_only::Job {
            spec,
            job,
            files: &files,
        };
        crate::read_only::run(&job, &worktree, &launch, cancel, &updates, &mut result).await;
    } else if spec.baseline {
        run_baseline(
            spec,
            &files,
            &worktree,
            &launch,
            cancel,
            &updates,
            &mut result,
        )
        .await;
    } else {
        run_in(
            spec,
            &files,
            &worktree,
            &launch,
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

/// How the processes of `spec`'s attempt in `worktree` start: its variables, its marker,
/// its grace, and a sandbox that may write only the worktree, its git folder and scratch
/// (and what the plan adds), with every other worktree of the cache at `root` hidden.
fn launch_for(spec: &AttemptSpec, lease: &str, worktree: &Worktree, root: &Path) -> Launch {
    let layout = worktree.layout();
    let sandbox = match &spec.sandbox {
        Some(s) if s.off => Sandbox::off(),
        s if spec.read_only.is_some() => Sandbox::read_only(
            s.as_ref(),
            &[&layout.tree, &layout.git],
            &layout.tmp,
            &root.join("work"),
        ),
        s => Sandbox::new(
            s.as_ref(),
            &[&layout.tree, &layout.git],
            &layout.tmp,
            &root.join("work"),
        ),
    };
    Launch {
        env: attempt_env(spec, &layout.tree),
        sandbox,
        marker: Some((LEASE_MARKER, lease.to_owned())),
        grace: if spec.grace_ms > 0 {
            Duration::from_millis(spec.grace_ms)
        } else {
            KILL_GRACE
        },
    }
}

/// Runs every check on the base commit itself. With a `diff_base` (the verification of a
/// run's result), checks with `paths` run when the commit's diff against it touches one.
async fn run_baseline(
    spec: &AttemptSpec,
    files: &AttemptFiles,
    worktree: &Worktree,
    launch: &Launch,
    cancel: CancellationToken,
    updates: &mpsc::Sender<Update>,
    result: &mut AttemptResult,
) {
    let _ = updates.send(Update::Phase(Phase::Checks)).await;
    let changed = if spec.diff_base.is_empty() {
        None
    } else {
        let (from, to) = (spec.diff_base.clone(), spec.base_commit.clone());
        let listed = in_process(worktree.repo(), move |repo| {
            commit::diff_stat(repo, &from, &to)
                .map_err(|e| format!("could not list what {to} changed since {from}: {e}"))
        })
        .await;
        match listed {
            Ok(stat) => Some(stat.paths),
            Err(why) => {
                result.status = AttemptStatus::Failed as i32;
                result.checks = skip_all(spec, &why);
                result.error = why;
                return;
            }
        }
    };
    result.checks = run_checks(
        &spec.checks,
        worktree.path(),
        launch,
        spec.log_cap_bytes,
        |name| files.check_log(name),
        changed.as_deref(),
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
    files: &AttemptFiles,
    worktree: &Worktree,
    launch: &Launch,
    cancel: CancellationToken,
    updates: &mpsc::Sender<Update>,
    result: &mut AttemptResult,
) {
    let dir = worktree.path();
    result.log_path = AttemptFiles::name(&files.log);
    let _ = updates.send(Update::Phase(Phase::Agent)).await;

    let (tap, forward) = forward_lines(updates);
    let clock = Instant::now();
    let entered = clock;
    let agent = run_agent(
        spec,
        launch,
        dir,
        &worktree.layout().tmp,
        files,
        cancel.clone(),
        tap,
    )
    .await;
    let _ = forward.await;
    let agent_ms = clock.elapsed().as_secs_f64() * 1e3;
    let (ending, tally, over_budget) = match agent {
        Ok(run) => {
            if !run.finished.escaped.is_empty() {
                result.contained.push(format!(
                    "processes the agent started outlived it and were killed: {}",
                    run.finished.escaped.join(", ")
                ));
            }
            (run.finished.ending, run.tally, run.over_budget)
        }
        Err(err) => {
            result.error = format!("the agent could not run: {err}");
            result.checks = skip_all(spec, "the agent could not run");
            return;
        }
    };
    result.agent_exit_code = ending.code();
    if !tally.usage.is_empty() {
        result.usage = Some(tally.usage.into());
    }
    result.final_message = tally
        .message
        .as_deref()
        .map(|m| crate::presets::cut(m, 4096))
        .unwrap_or_default();
    if spec.agent.as_ref().is_some_and(|a| !a.preset.is_empty()) {
        result.events_path = AttemptFiles::name(&files.events);
    }

    result
        .contained
        .extend(crate::agent::take_includes(spec, dir));
    // The agent is gone, and all it started: what it did to its git folder is undone
    // before braid's own code reads it.
    match worktree.restore() {
        Ok(restored) => result.contained.extend(contained(&restored)),
        Err(err) => {
            result.error = err;
            result.infrastructure = true;
            return;
        }
    }

    let t_restored = entered.elapsed();
    let _ = updates.send(Update::Phase(Phase::Committing)).await;
    let clock = Instant::now();
    let recorded = record(spec, worktree).await;
    let record_ms = clock.elapsed().as_secs_f64() * 1e3;
    // What the agent left could not be committed: that is the attempt's failure (git
    // refused its files), not the machine's.
    let (head, stat, nested) = match recorded {
        Ok(recorded) => recorded,
        Err(err) => {
            result.checks = skip_all(spec, &err);
            result.error = err;
            return;
        }
    };
    let changed = head != spec.base_commit;
    let mut touched = Vec::new();
    if let Some(stat) = stat {
        // The coordinator records the commit on the attempt's branch once it accepts the
        // result under a current lease, so a lost worker can never move a branch.
        result.commit = head.clone();
        result.diff = Some(DiffStat {
            files: stat.files,
            insertions: stat.insertions,
            deletions: stat.deletions,
        });
        touched = stat.paths;
    }
    if changed {
        match pack(worktree, &spec.base_commit, &head).await {
            Ok(pack) => result.pack = pack,
            Err(err) => {
                result.error = format!("could not pack the attempt's commit: {err}");
                result.infrastructure = true;
                return;
            }
        }
    }
    tracing::debug!(
        task = %spec.task_id,
        attempt = spec.attempt,
        agent_ms,
        record_ms,
        restored_ms = t_restored.as_secs_f64() * 1e3,
        packed_ms = entered.elapsed().as_secs_f64() * 1e3,
        "attempt phases"
    );

    let (status, error) = match ending {
        _ if over_budget.is_some() => (
            AttemptStatus::OverBudget,
            over_budget.clone().unwrap_or_default(),
        ),
        Ending::Exited(0) if !nested.is_empty() => (
            AttemptStatus::Failed,
            nested
                .iter()
                .map(|path| {
                    format!(
                        "{path} is a nested git repository: its files are not in the attempt's commit (braid committed the rest)"
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        ),
        // The agent's own word that it failed, though it exited 0 (a denied edit).
        Ending::Exited(0) if tally.failed.is_some() => (
            AttemptStatus::Failed,
            tally.failed.clone().unwrap_or_default(),
        ),
        Ending::Exited(0) if !changed => (
            AttemptStatus::Failed,
            match &tally.error {
                Some(error) => format!(
                    "the agent changed nothing; it reported: {}",
                    crate::presets::cut(error, 300)
                ),
                None => "the agent changed nothing".to_owned(),
            },
        ),
        Ending::Exited(0) => match protected(spec, worktree, &touched).await {
            Some(why) => (AttemptStatus::Failed, why),
            None => (AttemptStatus::Finished, String::new()),
        },
        ending => not_finished(&ending, &tally, spec.stall_ms),
    };
    if status == AttemptStatus::Failed {
        result.provider_fault = tally.fault() as i32;
    }
    if status != AttemptStatus::Finished {
        result.status = status as i32;
        result.checks = skip_all(spec, &error);
        result.error = error;
        return;
    }

    let _ = updates.send(Update::Phase(Phase::Checks)).await;
    // The checks get the included files back (the commit does not have them).
    if let Err(why) = crate::agent::put_includes(spec, dir) {
        result.error = why;
        result.infrastructure = true;
        return;
    }
    result.checks = run_checks(
        &spec.checks,
        dir,
        launch,
        spec.log_cap_bytes,
        |name| files.check_log(name),
        Some(&touched),
        &cancel,
    )
    .await;
    if let (Some(score), false) = (&spec.score, cancel.is_cancelled()) {
        // The attempt does not grade itself: the score script is run as the base has it,
        // whatever the agent or the checks did to it.
        let base = measured_from(spec);
        let restored = in_process(worktree.repo(), {
            let paths = score_files(&score.run);
            move |repo| crate::checkout::restore_paths(repo, &base, &paths)
        })
        .await;
        match restored {
            Ok(()) => match run_score(score, dir, launch, &cancel).await {
                Ok(value) => result.score = Some(value),
                Err(why) => result.score_error = why,
            },
            Err(why) => result.score_error = format!("could not restore the score script: {why}"),
        }
    }
    result.status = if cancel.is_cancelled() {
        result.error = "the attempt was cancelled".to_owned();
        AttemptStatus::Cancelled
    } else {
        AttemptStatus::Finished
    } as i32;
}

/// The objects of `head` that `base` lacks, as a pack for the coordinator: in process
/// when `head` is braid's one commit on `base`, by git when the agent made commits too.
async fn pack(worktree: &Worktree, base: &str, head: &str) -> Result<Vec<u8>, String> {
    let (from, to) = (base.to_owned(), head.to_owned());
    let own = in_process(worktree.repo(), move |repo| {
        commit::pack_one_commit(repo, &from, &to)
    })
    .await?;
    match own {
        Some(pack) => Ok(pack),
        None => cache::pack_since(worktree.layout(), head, base)
            .await
            .map_err(|e| e.to_string()),
    }
}

/// How an agent that did not exit with 0 ended, as the attempt's status and a sentence.
pub(crate) fn not_finished(
    ending: &Ending,
    tally: &crate::presets::Tally,
    stall_ms: u64,
) -> (AttemptStatus, String) {
    match ending {
        Ending::Exited(code) => (
            AttemptStatus::Failed,
            match tally.failed.as_ref().or(tally.error.as_ref()) {
                Some(why) => format!(
                    "the agent exited with code {code}: {}",
                    crate::presets::cut(why, 300)
                ),
                None => format!("the agent exited with code {code}"),
            },
        ),
        Ending::Signalled(signal) => (
            AttemptStatus::Failed,
            format!("the agent was killed by signal {signal}"),
        ),
        Ending::TimedOut => (
            AttemptStatus::TimedOut,
            "the agent ran past its timeout and was stopped".to_owned(),
        ),
        Ending::Stalled => (
            AttemptStatus::Stalled,
            format!(
                "the agent printed nothing for {} and was stopped",
                human(stall_ms)
            ),
        ),
        Ending::Cancelled => (
            AttemptStatus::Cancelled,
            "the attempt was cancelled".to_owned(),
        ),
    }
}

/// The commit the attempt is measured against: the task's base.
fn measured_from(spec: &AttemptSpec) -> String {
    if spec.diff_base.is_empty() {
        spec.base_commit.clone()
    } else {
        spec.diff_base.clone()
    }
}

/// The words of a score command line that may name a script in the repository: relative
/// paths (`./score.sh`, `scripts/score.py`), as the worktree's root sees them.
pub fn score_files(run: &str) -> Vec<String> {
    run.split_whitespace()
        .map(|word| word.trim_matches(|c| c == '"' || c == '\''))
        .filter(|word| !word.is_empty() && !word.starts_with('/') && !word.starts_with('-'))
        .map(|word| word.trim_start_matches("./").to_owned())
        .filter(|word| !word.is_empty() && !word.contains("..") && !word.contains('='))
        .collect()
}

/// Why the attempt fails for changing a protected path, if it did. The score script (a
/// file of the base that the score command names) is protected too: an agent that
/// rewrites it fails, whatever it prints.
async fn protected(spec: &AttemptSpec, worktree: &Worktree, touched: &[String]) -> Option<String> {
    let mut globs: Vec<String> = spec.protect.clone();
    if let Some(score) = &spec.score {
        let (words, base) = (score_files(&score.run), measured_from(spec));
        let scripts = in_process(worktree.repo(), move |repo| {
            crate::checkout::files_in(repo, &base, &words)
        })
        .await;
        match scripts {
            Ok(scripts) => globs.extend(scripts.iter().map(|p| glob_escape(p))),
            Err(why) => {
                return Some(format!(
                    "could not read the score script of the base: {why}"
                ));
            }
        }
    }
    if globs.is_empty() || touched.is_empty() {
        return None;
    }
    let scope = match braid_shared::paths::PathScope::new(&globs) {
        Ok(scope) => scope,
        Err(err) => return Some(format!("the protected paths cannot be read: {err}")),
    };
    let hit = scope.matches(touched);
    (!hit.is_empty()).then(|| {
        format!(
            "the attempt changed protected paths: {} (protected: {})",
            hit.join(", "),
            scope.describe()
        )
    })
}

/// `path` as a glob that matches only itself.
fn glob_escape(path: &str) -> String {
    path.chars()
        .map(|c| match c {
            '*' | '?' | '[' | ']' | '{' | '}' | '\\' => format!("\\{c}"),
            c => c.to_string(),
        })
        .collect()
}

/// What [`Worktree::restore`] undid, in sentences for the report.
fn contained(restored: &cache::Restored) -> Vec<String> {
    let mut notes = Vec::new();
    if !restored.removed.is_empty() {
        notes.push(format!(
            "the agent changed its worktree's git folder ({}); braid undid it",
            restored.removed.join(", ")
        ));
    }
    if restored.detached {
        notes.push(
            "the agent switched its worktree to a branch; its commits are kept on the attempt's branch"
                .to_owned(),
        );
    }
    if restored.dot_git {
        notes.push(
            "the agent pointed its worktree's .git elsewhere; braid put it back and never followed it"
                .to_owned(),
        );
    }
    if restored.index_dropped {
        notes.push("the agent replaced its worktree's index; braid rebuilt it".to_owned());
    }
    notes
}

/// Stages and commits what the agent left, and measures the diff when HEAD moved: in
/// process where [`commit::stage_all`] can, with `git add --all` where not. Returns HEAD
/// and the diff (when HEAD moved) and the nested repositories left out, or a sentence.
///
/// Staging starts from the index braid last wrote and looks only at the paths the
/// worktree's journal names, when it knows them (see [`start_index`]).
async fn record(
    spec: &AttemptSpec,
    worktree: &Worktree,
) -> Result<(String, Option<braid_shared::git::DiffStat>, Vec<String>), String> {
    let repo = worktree.repo();
    let message = format!(
        "braid: {} attempt {}\n\nRun {}.",
        spec.task_id, spec.attempt, spec.run_id
    );
    let base = spec.base_commit.clone();
    let diff_base = measured_from(spec);
    let measure = move |repo: &gix::Repository, head: String| {
        if head == base {
            return Ok((head, None));
        }
        let stat = commit::diff_stat(repo, &diff_base, &head)
            .map_err(|e| format!("could not measure the attempt's diff: {e}"))?;
        Ok((head, Some(stat)))
    };
    let (changed, known) = (worktree.changed(), worktree.take_known());
    let stamp = known.as_ref().and_then(|(_, stamp)| *stamp);
    // Nothing runs in the worktree after the commit but checks and a score: without them,
    // the index file need not hold the staged index, and the next move may find nothing
    // to write.
    let defer = spec.checks.is_empty() && spec.score.is_none();
    // One trip off the async threads when staging stays in process.
    let (then, said) = (measure.clone(), message.clone());
    let first = in_process(repo.clone(), move |repo| {
        let t0 = std::time::Instant::now();
        let Ok(Started {
            index: original,
            paths,
            held,
            file,
        }) = start_index(repo, known, changed)
        else {
            return Ok(None);
        };
        let changes = match &paths {
            Some(paths) => crate::checkout::Changes::Paths(paths),
            None => crate::checkout::Changes::Unknown,
        };
        let (staged, index, edits) = match commit::stage_all(repo, changes, original) {
            Ok(staged) => staged,
            Err(why) => {
                tracing::debug!(%why, "staging with git");
                return Ok(None);
            }
        };
        let head_tree = crate::admin::head(repo)
            .and_then(|head| commit::tree_of(repo, head))
            .ok();
        // The edits make the tree when the index held HEAD's tree before them.
        let edits = (held.is_some() && held == head_tree).then_some(edits.as_slice());
        let t_staged = t0.elapsed();
        let (head, tree) = commit::commit_index(repo, &said, &index, edits)
            .map_err(|e| format!("could not commit the attempt's changes: {e}"))?;
        let t_committed = t0.elapsed();
        let intent = index
            .entries()
            .iter()
            .any(|e| e.flags.contains(gix::index::entry::Flags::INTENT_TO_ADD));
        // What the file holds when it is not written now: what it held, but at the paths
        // just staged.
        let unwritten = file
            .filter(|_| defer && !intent && stamp.is_some())
            .map(|file| file.and(staged.before));
        if unwritten.is_none() {
            crate::admin::write_index(&index)?;
        }
        let known = (!intent).then_some(crate::checkout::Known {
            in_file: unwritten.is_none(),
            index,
            tree,
            unwritten,
        });
        let (head, stat) = then(repo, head)?;
        tracing::debug!(
            staged_ms = t_staged.as_secs_f64() * 1e3,
            committed_ms = t_committed.as_secs_f64() * 1e3,
            measured_ms = t0.elapsed().as_secs_f64() * 1e3,
            "attempt recorded"
        );
        Ok(Some((head, stat, staged.nested, known)))
    })
    .await?;
    if let Some((head, stat, nested, known)) = first {
        match known {
            // The file is as braid left it: its stamp stays.
            Some(known) if known.unwritten.is_some() => worktree.keep_known_as(known, stamp),
            Some(known) => worktree.keep_known(known),
            None => {}
        }
        return Ok((head, stat, nested));
    }
    worktree
        .git()
        .add_all()
        .await
        .map_err(|e| format!("could not commit the attempt's changes: {e}"))?;
    let (head, stat) = in_process(repo, move |repo| {
        let index = crate::admin::read_index(repo)?;
        let (head, _) = commit::commit_index(repo, &message, &index, None)
            .map_err(|e| format!("could not commit the attempt's changes: {e}"))?;
        measure(repo, head)
    })
    .await?;
    Ok((head, stat, Vec::new()))
}

/// The index staging starts from, the paths it looks at (`None`: all), the tree the index
/// holds when that is known, and what the index file holds against it.
///
/// That is the index braid last wrote, when the index file is as braid wrote it and the
/// journal knows what changed. When something wrote the index file since (git, run by
/// the agent), staging starts from that file, as `git add --all` would, and looks at the
/// paths whose entries differ from braid's too: elsewhere the worktree is as braid's
/// index has it.
fn start_index(
    repo: &gix::Repository,
    known: Option<(crate::checkout::Known, Option<crate::admin::Stamp>)>,
    changed: Option<Vec<gix::bstr::BString>>,
) -> Result<Started, String> {
    let (Some((known, stamp)), Some(mut paths)) = (known, changed) else {
        return Ok(Started {
            index: crate::admin::read_index(repo)?,
            paths: None,
            held: None,
            file: None,
        });
    };
    if stamp.is_some() && crate::admin::stamp(repo) == stamp {
        let file = if known.in_file {
            Some(crate::checkout::Unwritten::same(known.tree))
        } else {
            known.unwritten
        };
        return Ok(Started {
            index: known.index,
            paths: Some(paths),
            held: Some(known.tree),
            file,
        });
    }
    Ok(match crate::admin::read_index(repo) {
        Ok(index) => {
            paths.extend(crate::checkout::differing(&known.index, &index));
            Started {
                index,
                paths: Some(paths),
                held: None,
                file: None,
            }
        }
        // The agent's index is gone (see `cache::restore`): braid's, compared in full.
        Err(_) => Started {
            index: known.index,
            paths: None,
            held: None,
            file: None,
        },
    })
}

/// What staging starts from.
struct Started {
    /// The index to stage onto.
    index: gix::index::File,
    /// The paths to look at; `None`: all.
    paths: Option<Vec<gix::bstr::BString>>,
    /// The tree the index holds, when known.
    held: Option<gix::ObjectId>,
    /// What the index file holds against `index`, when braid knows it (the file is as
    /// braid left it).
    file: Option<crate::checkout::Unwritten>,
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

/// A duration as plans write it: `90s`, `5m`, `1.5s`.
fn human(ms: u64) -> String {
    if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{}s", ms as f64 / 1000.0)
    }
}
