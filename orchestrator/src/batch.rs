//! Batch changes: with `braid run --per-target`, each target's own branch from the run's
//! base, to publish and review one by one; and a plan fanned over repositories, run once
//! in a clone of each.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use braid_shared::git::Git;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::error::{BraidError, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK};
use crate::merge::Merger;
use crate::plan::Plan;
use crate::plan::repos::{ForRepo, Repo, ReposPlan, Source};
use crate::report::{
    Burndown, OwnBranch, RepoResult, Report, ResultReport, RunStatus, TaskReport, TaskStatus, word,
};
use crate::run::{RunOptions, run_embedded};
use crate::state;

/// The branch of a target's own change: `braid/<run>/<task>/target`.
pub fn own_branch(run: &str, task: &str) -> String {
    format!("braid/{run}/{task}/target")
}

/// Gives every target with a winner its own branch: a commit on the run's base holding
/// just what its winner changed against the base it started from. A target that started
/// from the base is its winner as it is; one that started from its deps' winners has its
/// change alone put on the base, and if that change needs theirs to apply, the paths it
/// conflicts in are recorded instead of a branch.
pub async fn own_branches(plan: &Plan, run: &str, tasks: &mut [TaskReport]) -> Result<(), String> {
    let git = Git::at(&plan.repo);
    let merger = Merger::open(&plan.repo).map_err(|e| e.to_string())?;
    // Written together: one transaction for thousands of targets.
    let mut moves = Vec::new();
    for (report, task) in tasks.iter_mut().zip(&plan.tasks) {
        if task.target.is_none() || report.status != TaskStatus::Succeeded {
            continue;
        }
        let find = |n: u32| report.attempts.iter().find(|a| a.n == n);
        let Some(winner) = report.winner.and_then(find) else {
            continue;
        };
        // A feedback retry starts from the attempt it continues: the change is measured
        // from where its chain began.
        let mut first = winner;
        while let Some(earlier) = first.continues.and_then(find) {
            first = earlier;
        }
        let (Some(commit), Some(task_base)) = (winner.commit.clone(), report.base.clone()) else {
            continue;
        };
        let from = first.base.clone().unwrap_or(task_base);
        let branch = own_branch(run, &report.id);
        let own = if from == plan.base_commit {
            Ok(commit)
        } else {
            change_on_base(
                &git,
                &merger,
                &plan.base_commit,
                &from,
                &commit,
                &report.id,
                run,
            )
            .await?
        };
        report.own_branch = Some(match own {
            Ok(own) => {
                moves.push(crate::merge::BranchMove {
                    refname: format!("refs/heads/{branch}"),
                    commit: own.clone(),
                    old: None,
                });
                OwnBranch {
                    branch,
                    commit: Some(own),
                    conflicts: Vec::new(),
                }
            }
            Err(conflicts) => OwnBranch {
                branch,
                commit: None,
                conflicts,
            },
        });
    }
    merger
        .set_refs(&moves)
        .map_err(|e| format!("could not record the targets' own branches: {e}"))
}

/// The change `from..commit` put on `base` as one commit; `Err` with the conflicted
/// paths when it does not apply there.
async fn change_on_base(
    git: &Git,
    merger: &Merger,
    base: &str,
    from: &str,
    commit: &str,
    task: &str,
    run: &str,
) -> Result<Result<String, Vec<String>>, String> {
    let args = [
        "merge-tree",
        "--write-tree",
        "--name-only",
        "--no-messages",
        &format!("--merge-base={from}"),
        base,
        commit,
    ];
    let (code, out, err) = git.raw(&args).await.map_err(|e| e.to_string())?;
    let mut lines = out.lines();
    let tree = lines.next().unwrap_or_default().to_owned();
    match code {
        0 => {
            let message = format!("{task}: its change alone, on the base of run {run}\n");
            merger
                .commit(&tree, &[base], &message)
                .map(Ok)
                .map_err(|e| e.to_string())
        }
        1 => Ok(Err(lines
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())),
        _ => Err(format!("git merge-tree failed: {err}")),
    }
}

/// Where braid keeps its clone of a batch's repository: `$BRAID_CACHE/clones/<name>-<hash>`,
/// one per source.
pub fn clone_dir(cache: &Path, repo: &Repo) -> PathBuf {
    // FNV-1a of the source: the same folder for the same source, release after release.
    let source = match &repo.source {
        Source::Path(path) => path.display().to_string(),
        Source::Url(url) => url.clone(),
    };
    let hash = source.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    cache
        .join("clones")
        .join(format!("{}-{hash:08x}", repo.slug))
}

/// Clones `repo` into braid's cache, or fetches into the clone it has; returns the clone
/// and the commit `base` (a revision of the repository; default its HEAD) names there.
pub async fn clone_or_fetch(
    cache: &Path,
    repo: &Repo,
    base: Option<&str>,
) -> Result<(PathBuf, String), String> {
    let dir = clone_dir(cache, repo);
    let from = match &repo.source {
        Source::Path(path) => path.display().to_string(),
        Source::Url(url) => url.clone(),
    };
    let git = Git::at(&dir);
    if dir.join(".git").is_dir() {
        git.run(&[
            "fetch",
            "--quiet",
            "--prune",
            "--force",
            "origin",
            "+refs/heads/*:refs/remotes/origin/*",
        ])
        .await
        .map_err(|e| format!("could not fetch {from}: {e}"))?;
        // Its HEAD may have moved to another branch.
        let _ = git.raw(&["remote", "set-head", "origin", "--auto"]).await;
    } else {
        std::fs::create_dir_all(dir.parent().unwrap_or(cache))
            .map_err(|e| format!("could not make {}: {e}", dir.display()))?;
        let partial = dir.with_extension("partial");
        let _ = std::fs::remove_dir_all(&partial);
        let out = Git::at(cache)
            .raw(&[
                "clone",
                "--quiet",
                "--no-checkout",
                "--",
                &from,
                &partial.display().to_string(),
            ])
            .await
            .map_err(|e| format!("could not clone {from}: {e}"))?;
        if out.0 != 0 {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(format!("could not clone {from}: {}", out.2));
        }
        std::fs::rename(&partial, &dir)
            .map_err(|e| format!("could not move the clone of {from} into place: {e}"))?;
    }
    let wanted = base.unwrap_or("HEAD");
    let candidates = match base {
        None => vec!["refs/remotes/origin/HEAD".to_owned(), "HEAD".to_owned()],
        Some(rev) => vec![format!("refs/remotes/origin/{rev}"), rev.to_owned()],
    };
    for rev in &candidates {
        if let Ok(Some(commit)) = git.resolve_commit(rev).await {
            return Ok((dir, commit));
        }
    }
    Err(format!("base {wanted:?} does not name a commit of {from}"))
}

/// What a batch over repositories was asked.
#[derive(Debug, Clone)]
pub struct ReposRun {
    pub options: RunOptions,
    pub per_target: bool,
    /// The earlier run whose failed repositories this one runs again.
    pub rerun: Option<Report>,
}

/// Runs the plan at `path`, fanned over `plan.repos`, once in each repository's clone, at
/// most as many at once as there are workers. Writes the batch's report in the cache.
pub async fn run_repos(
    path: &Path,
    plan: &ReposPlan,
    run: ReposRun,
) -> Result<(Report, PathBuf, i32), BraidError> {
    let started = std::time::Instant::now();
    let started_at = chrono::Utc::now();
    let cache = braid_worker::cache::root();
    let run_id = state::new_run_id();
    let earlier: BTreeMap<String, &RepoResult> = run
        .rerun
        .iter()
        .flat_map(|r| r.repos.iter())
        .map(|r| (r.task.clone(), r))
        .collect();
    // Clone and load every repository's plan before anything runs: a plan error in one
    // stops them all.
    let mut planned: Vec<(Repo, Result<Plan, String>)> = Vec::new();
    let mut errors = Vec::new();
    let mut carried: Vec<(RepoResult, TaskReport)> = Vec::new();
    for repo in &plan.repos {
        let id = format!("{}.{}", plan.task, repo.slug);
        if let (Some(old), Some(report)) = (earlier.get(&id), &run.rerun)
            && old.status == TaskStatus::Succeeded
            && let Some(task) = report.tasks.iter().find(|t| t.id == id)
        {
            let mut result = (*old).clone();
            result.carried_from = Some(result.carried_from.clone().unwrap_or(report.run.clone()));
            let mut task = task.clone();
            task.carried_from = result.carried_from.clone();
            carried.push((result, task));
            continue;
        }
        let base = earlier
            .get(&id)
            .and_then(|old| old.base.clone())
            .or_else(|| plan.base.clone());
        eprintln!(
            "braid: {}: {}",
            repo.text,
            match clone_dir(&cache, repo).join(".git").is_dir() {
                true => "fetching into braid's clone",
                false => "cloning into braid's cache",
            }
        );
        match clone_or_fetch(&cache, repo, base.as_deref()).await {
            Ok((clone, base)) => {
                let one = ForRepo {
                    repo: repo.clone(),
                    clone,
                    base,
                };
                match crate::plan::load::load_for_repo(path, &one).await {
                    Ok(mut loaded) => {
                        loaded.per_target = run.per_target;
                        planned.push((repo.clone(), Ok(loaded)));
                    }
                    Err(e) => errors.extend(e.0),
                }
            }
            Err(why) => planned.push((repo.clone(), Err(why))),
        }
    }
    if !errors.is_empty() {
        errors.dedup();
        return Err(BraidError::Plan(crate::plan::PlanErrors(errors)));
    }
    let total = plan.repos.len();
    if let Some(earlier) = &run.rerun {
        eprintln!(
            "braid: re-running {} of {total} repositories of run {}; carrying over {}",
            planned.len(),
            earlier.run,
            carried.len()
        );
    }
    let interrupted = CancellationToken::new();
    let watcher = {
        let interrupted = interrupted.clone();
        braid_shared::task::spawn("batch-signals", async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupted.cancel();
            }
        })
    };
    let at_once = Arc::new(Semaphore::new(run.options.workers.max(1) as usize));
    let mut running = Vec::new();
    for (repo, loaded) in planned {
        let at_once = Arc::clone(&at_once);
        let interrupted = interrupted.clone();
        let mut options = RunOptions::local(1, run.options.slots);
        options.verbose = run.options.verbose;
        options.scheduler = run.options.scheduler.clone();
        let sub = format!("{run_id}-{}", repo.slug);
        options.run_id = Some(sub.clone());
        let id = format!("{}.{}", plan.task, repo.slug);
        running.push(braid_shared::task::spawn("batch-repo", async move {
            let loaded = match loaded {
                Ok(loaded) => loaded,
                Err(why) => return failed_repo(&repo, &id, None, None, why),
            };
            let clone = loaded.repo.clone();
            let base = loaded.base_commit.clone();
            let _permit = at_once.acquire_owned().await;
            if interrupted.is_cancelled() {
                let mut one = failed_repo(
                    &repo,
                    &id,
                    Some(&clone),
                    Some(base),
                    "the run was interrupted".into(),
                );
                one.0.status = TaskStatus::Cancelled;
                one.1.status = TaskStatus::Cancelled;
                return one;
            }
            match run_embedded(loaded, options).await {
                Ok(finished) => {
                    let r = finished.report;
                    let task = r.tasks.first().cloned().unwrap_or_else(|| empty_task(&id));
                    let status = match (r.status, task.status) {
                        (RunStatus::Succeeded, _) => TaskStatus::Succeeded,
                        (RunStatus::Cancelled, _) => TaskStatus::Cancelled,
                        (_, TaskStatus::Succeeded) => TaskStatus::Failed,
                        (_, status) => status,
                    };
                    let error = match status {
                        TaskStatus::Succeeded => None,
                        _ if task.status == TaskStatus::Succeeded => Some(format!(
                            "the result's verification or integration failed: see {}",
                            r.state_dir
                        )),
                        _ => task.reason.clone(),
                    };
                    (
                        RepoResult {
                            repo: repo.text.clone(),
                            task: id,
                            clone: clone.display().to_string(),
                            run: Some(sub),
                            status,
                            base: Some(r.base.clone()),
                            branch: r.result.commit.as_ref().map(|_| r.result.branch.clone()),
                            commit: r.result.commit.clone(),
                            error,
                            carried_from: None,
                        },
                        task,
                    )
                }
                Err(e) => failed_repo(&repo, &id, Some(&clone), Some(base), e.to_string()),
            }
        }));
    }
    let mut done: Vec<(RepoResult, TaskReport)> = carried;
    for handle in running {
        match handle.await {
            Ok(one) => done.push(one),
            Err(e) => {
                return Err(BraidError::Internal(format!(
                    "a repository's run stopped: {e}"
                )));
            }
        }
    }
    watcher.abort();
    // In the plan's order.
    let order: Vec<String> = plan
        .repos
        .iter()
        .map(|r| format!("{}.{}", plan.task, r.slug))
        .collect();
    done.sort_by_key(|(r, _)| order.iter().position(|id| *id == r.task));
    let (repos, tasks): (Vec<RepoResult>, Vec<TaskReport>) = done.into_iter().unzip();
    let mut burndown = Burndown {
        task: plan.task.clone(),
        ..Default::default()
    };
    for r in &repos {
        burndown.count(&r.task, &r.repo, r.status, r.error.as_deref());
    }
    let status =
        if interrupted.is_cancelled() || repos.iter().any(|r| r.status == TaskStatus::Cancelled) {
            RunStatus::Cancelled
        } else if repos.iter().all(|r| r.status == TaskStatus::Succeeded) {
            RunStatus::Succeeded
        } else {
            RunStatus::Failed
        };
    let dir = cache.join("runs").join(&run_id);
    let report = Report {
        run: run_id,
        name: plan.name.clone(),
        status,
        repo: String::new(),
        base: String::new(),
        base_rev: plan.base.clone().unwrap_or_else(|| "HEAD".into()),
        plan: std::path::absolute(path)
            .unwrap_or_else(|_| path.to_owned())
            .display()
            .to_string(),
        started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        duration_ms: started.elapsed().as_millis() as u64,
        result: ResultReport::default(),
        usage: crate::report::Usage::sum(
            tasks
                .iter()
                .filter(|t| t.carried_from.is_none())
                .map(|t| &t.usage),
        ),
        tasks,
        workers: Vec::new(),
        timeline: Vec::new(),
        state_dir: dir.display().to_string(),
        stopped: Vec::new(),
        overlaps: Vec::new(),
        warnings: Vec::new(),
        planner: None,
        targets: vec![burndown],
        rerun_of: run.rerun.as_ref().map(|r| r.run.clone()),
        publish: None,
        repos,
    };
    let written = report.write(&dir).map_err(BraidError::io(format!(
        "writing the batch's report in {}",
        dir.display()
    )))?;
    let code = match report.status {
        RunStatus::Succeeded => EXIT_OK,
        RunStatus::Cancelled => EXIT_INTERRUPTED,
        _ => EXIT_FAILED,
    };
    Ok((report, written, code))
}

fn empty_task(id: &str) -> TaskReport {
    TaskReport {
        id: id.to_owned(),
        status: TaskStatus::Failed,
        deps: Vec::new(),
        base: None,
        branch: None,
        winner: None,
        reason: None,
        select: String::new(),
        baseline: Vec::new(),
        attempts: Vec::new(),
        usage: Default::default(),
        judge: None,
        carried_from: None,
        own_branch: None,
    }
}

/// A repository that did not run, and why.
fn failed_repo(
    repo: &Repo,
    id: &str,
    clone: Option<&Path>,
    base: Option<String>,
    why: String,
) -> (RepoResult, TaskReport) {
    let mut task = empty_task(id);
    task.reason = Some(why.clone());
    (
        RepoResult {
            repo: repo.text.clone(),
            task: id.to_owned(),
            clone: clone.map(|c| c.display().to_string()).unwrap_or_default(),
            run: None,
            status: TaskStatus::Failed,
            base,
            branch: None,
            commit: None,
            error: Some(why),
            carried_from: None,
        },
        task,
    )
}

/// `braid publish` of a batch over repositories: each repository's result (or target's own
/// branch), pushed from braid's clone to that repository's own remote.
pub async fn publish_repos(
    report: &Report,
    options: &mut crate::publish::Options,
) -> Result<i32, BraidError> {
    use crate::publish::{Outcome, Published};
    let mut out = Vec::new();
    for r in &report.repos {
        let skipped = |why: String| Published {
            task: r.task.clone(),
            branch: String::new(),
            commit: None,
            outcome: Outcome::Skipped,
            detail: Some(why),
            pr: None,
        };
        let (Some(run), TaskStatus::Succeeded) = (&r.run, r.status) else {
            out.push(skipped(format!(
                "{}: {}",
                word(r.status),
                r.error.as_deref().unwrap_or("no result")
            )));
            continue;
        };
        let clone = PathBuf::from(&r.clone);
        let git_dir = clone.join(".git");
        let path = state::run_dir(&git_dir, run).join("report.json");
        let Some(sub) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<Report>(&t).ok())
        else {
            out.push(skipped(format!(
                "its run's report is gone from {}",
                path.display()
            )));
            continue;
        };
        // The repository's own remote: a local one's, as it is configured there; a URL's,
        // the URL itself.
        let url = if !crate::plan::repos::is_url(&r.repo) {
            let plan_dir = Path::new(&report.plan)
                .parent()
                .map(Path::to_owned)
                .unwrap_or_default();
            let local = plan_dir.join(&r.repo);
            crate::publish::remote_url(&Git::at(&local), &local, &options.remote).await?
        } else if options.remote == "origin" {
            r.repo.clone()
        } else {
            return Err(BraidError::Usage(format!(
                "{} is a URL: it is its own remote; leave --remote out",
                r.repo
            )));
        };
        options.url = Some(url);
        let published = crate::publish::publish(&sub, &git_dir, options).await?;
        out.extend(published);
    }
    options.url = None;
    if !options.json {
        for p in out.iter().filter(|p| p.branch.is_empty()) {
            eprintln!("{}", crate::publish::line(p));
        }
    }
    crate::publish::conclude(&report.run, &options.remote, &out, options.json)
}
