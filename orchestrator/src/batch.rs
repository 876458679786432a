//! What a batch change leaves besides the result: with `braid run --per-target`, each
//! target's own branch from the run's base, to publish and review one by one.

use braid_shared::git::Git;

use crate::merge::Merger;
use crate::plan::Plan;
use crate::report::{OwnBranch, TaskReport, TaskStatus};

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
    for (report, task) in tasks.iter_mut().zip(&plan.tasks) {
        if task.target.is_none() || report.status != TaskStatus::Succeeded {
            continue;
        }
        let winner = report
            .winner
            .and_then(|n| report.attempts.iter().find(|a| a.n == n))
            .and_then(|a| Some((a.commit.clone()?, a.base.clone())));
        let (Some((commit, attempt_base)), Some(task_base)) = (winner, report.base.clone()) else {
            continue;
        };
        let from = attempt_base.unwrap_or(task_base);
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
                merger
                    .set_ref(&format!("refs/heads/{branch}"), &own, None)
                    .map_err(|e| format!("could not record {branch}: {e}"))?;
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
    Ok(())
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
