//! Merging winners: a task's base from its deps' winners, and the final integration of all
//! winners into the result.
//!
//! Every merge is git's merge-ort (`git merge-tree --write-tree`), run in memory: only
//! objects are written, never the user's index, HEAD or working tree. A winner that already
//! contains the integration so far is taken as it is (fast-forward); one already contained
//! is skipped.

use braid_shared::git::{Git, GitError, MergeTree};

use crate::report::ConflictReport;

/// A dependency's winner, as a task's base is built from it.
#[derive(Debug, Clone)]
pub struct DepWinner {
    /// The task's id.
    pub id: String,
    /// The commit the task's attempts started from.
    pub base: String,
    /// The winning attempt's commit.
    pub commit: String,
}

/// The outcome of merging several winners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merged {
    /// They merged cleanly into this commit.
    Commit(String),
    /// They conflict.
    Conflict {
        /// The tasks whose changes conflict.
        tasks: Vec<String>,
        /// The conflicted paths.
        paths: Vec<String>,
    },
}

/// The integration of all winners.
#[derive(Debug, Clone, Default)]
pub struct Integration {
    /// The result commit; `None` when nothing was integrated.
    pub commit: Option<String>,
    /// Tasks integrated, in order.
    pub integrated: Vec<String>,
    /// Winners left out, and why.
    pub conflicts: Vec<ConflictReport>,
}

/// Merges `incoming` into `current`: the merged commit, or the conflicted paths.
pub async fn merge_two(
    git: &Git,
    current: &str,
    incoming: &str,
    message: &str,
) -> Result<Result<String, Vec<String>>, GitError> {
    if git.is_ancestor(incoming, current).await? {
        return Ok(Ok(current.to_owned()));
    }
    if git.is_ancestor(current, incoming).await? {
        return Ok(Ok(incoming.to_owned()));
    }
    match git.merge_tree(current, incoming).await? {
        MergeTree::Clean(tree) => Ok(Ok(git
            .commit_tree(&tree, &[current, incoming], message)
            .await?)),
        MergeTree::Conflicted(paths) => Ok(Err(paths)),
    }
}

/// The base of task `task`: its deps' winners merged in the order given.
pub async fn task_base(git: &Git, task: &str, deps: &[DepWinner]) -> Result<Merged, GitError> {
    let Some((first, rest)) = deps.split_first() else {
        return Err(GitError::Unreadable {
            args: "merge".into(),
            detail: format!("task {task} has no deps to start from"),
        });
    };
    let mut current = first.commit.clone();
    let mut merged = vec![first];
    for dep in rest {
        let message = format!("braid: start {task} from {} and {}", names(&merged), dep.id);
        match merge_two(git, &current, &dep.commit, &message).await? {
            Ok(commit) => {
                current = commit;
                merged.push(dep);
            }
            Err(paths) => {
                let mut tasks = culprits(git, &merged, &paths).await?;
                tasks.push(dep.id.clone());
                return Ok(Merged::Conflict { tasks, paths });
            }
        }
    }
    Ok(Merged::Commit(current))
}

/// Integrates `winners` (in dependency order) on top of `base`, one at a time. A winner
/// that conflicts with the integration so far is left out and reported.
pub async fn integrate(
    git: &Git,
    base: &str,
    winners: &[DepWinner],
) -> Result<Integration, GitError> {
    let mut current = base.to_owned();
    let mut done: Vec<&DepWinner> = Vec::new();
    let mut out = Integration::default();
    for winner in winners {
        let message = format!("braid: integrate {}", winner.id);
        // A winner that started from exactly what is integrated so far (a task whose deps
        // were merged just as here) is taken as it is, keeping the history linear.
        let same_start = git.tree_of(&winner.base).await? == git.tree_of(&current).await?;
        let merged = if same_start {
            Ok(winner.commit.clone())
        } else {
            merge_two(git, &current, &winner.commit, &message).await?
        };
        match merged {
            Ok(commit) => {
                current = commit;
                done.push(winner);
                out.integrated.push(winner.id.clone());
            }
            Err(paths) => {
                let mut tasks = culprits(git, &done, &paths).await?;
                tasks.push(winner.id.clone());
                out.conflicts.push(ConflictReport {
                    tasks,
                    paths,
                    stage: "integration".into(),
                    outcome: format!("{} left out of the result", winner.id),
                });
            }
        }
    }
    out.commit = (!done.is_empty()).then_some(current);
    Ok(out)
}

/// The tasks among `merged` whose own changes touch one of `paths`.
async fn culprits(
    git: &Git,
    merged: &[&DepWinner],
    paths: &[String],
) -> Result<Vec<String>, GitError> {
    let mut tasks = Vec::new();
    for winner in merged {
        let changed = git.changed_paths(&winner.base, &winner.commit).await?;
        if changed.iter().any(|p| paths.contains(p)) {
            tasks.push(winner.id.clone());
        }
    }
    Ok(tasks)
}

fn names(winners: &[&DepWinner]) -> String {
    winners
        .iter()
        .map(|w| w.id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
