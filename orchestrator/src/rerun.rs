//! `braid run PLAN --rerun-failed RUN`: the plan again, from RUN's base, running only what
//! RUN did not win and carrying over the winners of the rest.

use std::collections::BTreeMap;
use std::path::Path;

use braid_shared::git::Git;

use crate::dag::Dag;
use crate::error::BraidError;
use crate::plan::{self, Plan};
use crate::report::{Report, TaskReport, TaskStatus};

/// The plan at `path` as of `earlier`'s base, with every task `earlier` won carried over.
/// A task is carried when it succeeded there, its winner's commit is still in the
/// repository, and every task it starts from is carried too (a dep that runs again gives
/// it a new base, so it runs again as well).
pub async fn plan(path: &Path, earlier: &Report) -> Result<Plan, BraidError> {
    let mut plan = plan::load::load_at(path, &earlier.base).await?;
    let same = |a: &Path, b: &Path| match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    if !same(Path::new(&earlier.repo), &plan.repo) {
        return Err(BraidError::Usage(format!(
            "run {} was a run of {}, not of {}, which the plan names",
            earlier.run,
            earlier.repo,
            plan.repo.display()
        )));
    }
    let git = Git::at(&plan.repo);
    let won: BTreeMap<&str, &TaskReport> = earlier
        .tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Succeeded)
        .map(|t| (t.id.as_str(), t))
        .collect();
    let dag = Dag::new(&plan.tasks);
    let mut carried: BTreeMap<String, TaskReport> = BTreeMap::new();
    for t in dag.order() {
        let task = &plan.tasks[t];
        let Some(old) = won.get(task.id.as_str()) else {
            continue;
        };
        let commit = old
            .winner
            .and_then(|n| old.attempts.iter().find(|a| a.n == n))
            .and_then(|a| a.commit.clone());
        let Some(commit) = commit else { continue };
        let present = git.resolve_commit(&commit).await.ok().flatten().is_some();
        if present && task.deps.iter().all(|d| carried.contains_key(d)) {
            carried.insert(task.id.clone(), (*old).clone());
        }
    }
    plan.rerun_of = Some(earlier.run.clone());
    plan.carried = carried;
    Ok(plan)
}

/// What a re-run will do, in a sentence; `None` when it has nothing to run.
pub fn describe(plan: &Plan) -> Option<String> {
    let run = plan.rerun_of.as_deref()?;
    let again: Vec<&str> = plan
        .tasks
        .iter()
        .filter(|t| !plan.carried.contains_key(&t.id))
        .map(|t| t.id.as_str())
        .collect();
    if again.is_empty() {
        return None;
    }
    let shown = again.iter().take(8).copied().collect::<Vec<_>>().join(", ");
    let more = match again.len() {
        n if n > 8 => format!(" and {} more", n - 8),
        _ => String::new(),
    };
    Some(format!(
        "re-running {} of {} task(s) of run {run} from its base {} ({shown}{more}); carrying over {} winner(s)",
        again.len(),
        plan.tasks.len(),
        crate::report::short(&plan.base_commit),
        plan.carried.len()
    ))
}
