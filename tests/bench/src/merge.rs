//! Merges on the large repository, braid's merger against git in the same run: a disjoint
//! pair and a pair with 50 conflicting files against `git merge-tree --write-tree` (process
//! start included, as a script pays it), and 100 disjoint branches integrated one after the
//! other against a shell loop of `git merge-tree` and `git commit-tree`.

use std::time::Instant;

use anyhow::{Result, bail};
use braid_orchestrator::merge::{Merger, Route, Step};

use crate::repo::{BigRepo, CONFLICTING, git, rev};
use crate::table::{Baseline, Goal, Row, Unit, secs};

/// Runs the scenario `rounds` times.
pub async fn run(repo: &BigRepo, rounds: usize) -> Result<Vec<Row>> {
    let dir = &repo.path;
    let branches = repo.branches()?;
    let (ours, theirs) = (rev(dir, "ours")?, rev(dir, "theirs")?);
    let merger = Merger::open(dir)?;
    let mut samples: [(Vec<f64>, Vec<f64>); 3] = Default::default();
    for _ in 0..rounds {
        // A disjoint pair.
        let started = Instant::now();
        git(
            dir,
            &["merge-tree", "--write-tree", &branches[0], &branches[1]],
        )?;
        samples[0].1.push(secs(started.elapsed()));
        let started = Instant::now();
        let merged = merger.merge(&branches[0], &branches[1]).await?;
        samples[0].0.push(secs(started.elapsed()));
        if merged.route != Route::Composed {
            bail!("a disjoint pair went by {:?}", merged.route);
        }

        // A pair with 50 conflicting files.
        let started = Instant::now();
        git(dir, &["merge-tree", "--write-tree", &ours, &theirs])?;
        samples[1].1.push(secs(started.elapsed()));
        let started = Instant::now();
        let merged = merger.merge(&ours, &theirs).await?;
        samples[1].0.push(secs(started.elapsed()));
        if merged.verdict.paths().len() != CONFLICTING {
            bail!(
                "expected {CONFLICTING} conflicts, braid found {:?}",
                merged.verdict
            );
        }

        // 100 disjoint branches, one after the other.
        let started = Instant::now();
        let mut current = repo.main.clone();
        for branch in &branches {
            let out = git(dir, &["merge-tree", "--write-tree", &current, branch])?;
            let tree = out.lines().next().unwrap_or_default().to_owned();
            current = git(
                dir,
                &[
                    "commit-tree",
                    &tree,
                    "-p",
                    &current,
                    "-p",
                    branch,
                    "-m",
                    "integrate",
                ],
            )?
            .trim()
            .to_owned();
        }
        samples[2].1.push(secs(started.elapsed()));
        let shell_tree = rev(dir, &format!("{current}^{{tree}}"))?;

        let started = Instant::now();
        let mut current = repo.main.clone();
        for branch in &branches {
            match merger.merge_commits(&current, branch, "integrate").await? {
                (Step::Merged(commit), _) => current = commit,
                (Step::Conflict { .. }, _) => bail!("disjoint branches conflicted"),
            }
        }
        samples[2].0.push(secs(started.elapsed()));
        if rev(dir, &format!("{current}^{{tree}}"))? != shell_tree {
            bail!("braid's integration and the shell loop's differ");
        }
    }
    let [pair, conflict, chain] = samples;
    let row =
        |measure: &str, (braid, base): (Vec<f64>, Vec<f64>), name: &str, goal, note: &str| Row {
            scenario: "merge".into(),
            measure: measure.into(),
            unit: Unit::Seconds,
            samples: braid,
            baseline: Some(Baseline {
                name: name.into(),
                samples: base,
            }),
            goal,
            note: note.into(),
        };
    Ok(vec![
        row(
            "pair touching different files",
            pair,
            "git merge-tree",
            Goal::RatioAtMost(1.0),
            "",
        ),
        row(
            "pair with 50 conflicting files",
            conflict,
            "git merge-tree",
            Goal::None,
            "braid also gives each conflict's kind and hunks",
        ),
        row(
            "100 disjoint branches integrated",
            chain,
            "merge-tree + commit-tree loop",
            Goal::RatioAtMost(0.5),
            "both give the same tree",
        ),
    ])
}
