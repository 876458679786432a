//! Merge timings on a 20,000-file repository, braid's merger against git in the same run:
//!
//! - a pair of branches that touch different files: `git merge-tree --write-tree` (process
//!   start included) against `Merger::merge`;
//! - a pair with 50 conflicting files, the same two ways;
//! - 100 disjoint branches integrated one after the other: `git merge-tree` +
//!   `git commit-tree` per branch (what a shell loop does) against braid's chain of
//!   `Merger::merge_commits`.
//!
//! Run with `cargo run --release -p braid-orchestrator --example merge_bench`. Not a test:
//! timings on a shared machine are noisy, so it reports medians and ratios.
#![allow(clippy::disallowed_methods)] // a benchmark starts git directly, as a user's script would

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use braid_orchestrator::merge::{Merger, Route, Step};

const DIRS: usize = 200;
const FILES_PER_DIR: usize = 100;
const BRANCHES: usize = 100;
const CONFLICTING: usize = 50;
const ROUNDS: usize = 15;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@localhost")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@localhost")
        .output()
        .expect("git runs");
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The repository: one base commit of 20,000 files, 100 branches each changing one file of
/// its own, and two branches changing the same 50 files differently.
fn build(dir: &Path) {
    git(dir, &["init", "--quiet", "--initial-branch=main"]);
    let mut stream = String::new();
    let commit = |stream: &mut String, reference: &str, from: Option<&str>, mark: usize| {
        stream.push_str(&format!(
            "commit {reference}\nmark :{mark}\ncommitter bench <bench@localhost> 1700000000 +0000\ndata 5\nbench\n"
        ));
        if let Some(from) = from {
            stream.push_str(&format!("from {from}\n"));
        }
    };
    commit(&mut stream, "refs/heads/main", None, 1);
    for d in 0..DIRS {
        for f in 0..FILES_PER_DIR {
            let text = format!("file {d}/{f}\nline two\nline three\n");
            stream.push_str(&format!(
                "M 100644 inline src/d{d:03}/f{f:03}.txt\ndata {}\n{text}\n",
                text.len()
            ));
        }
    }
    for b in 0..BRANCHES {
        commit(
            &mut stream,
            &format!("refs/heads/b{b:03}"),
            Some(":1"),
            10 + b,
        );
        let text = format!("changed on branch {b}\n");
        stream.push_str(&format!(
            "M 100644 inline src/d{:03}/f{:03}.txt\ndata {}\n{text}\n",
            b * 2 % DIRS,
            b,
            text.len()
        ));
    }
    for (side, mark) in [("ours", 1000), ("theirs", 1001)] {
        commit(&mut stream, &format!("refs/heads/{side}"), Some(":1"), mark);
        for f in 0..CONFLICTING {
            let text = format!("file 7/{f}\n{side} rewrote line two\nline three\n");
            stream.push_str(&format!(
                "M 100644 inline src/d007/f{f:03}.txt\ndata {}\n{text}\n",
                text.len()
            ));
        }
    }
    let mut child = Command::new("git")
        .current_dir(dir)
        .args(["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("fast-import");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stream.as_bytes())
        .expect("stream");
    assert!(child.wait().expect("fast-import ends").success());
    // As a user's repository usually is: packed, with a commit-graph.
    git(dir, &["gc", "--quiet"]);
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time<F: FnMut()>(mut f: F) -> Duration {
    median(
        (0..ROUNDS)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed()
            })
            .collect(),
    )
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let started = Instant::now();
    build(dir);
    eprintln!(
        "repository of {} files and {BRANCHES} branches built in {:.1}s",
        DIRS * FILES_PER_DIR,
        started.elapsed().as_secs_f64()
    );
    let rev = |name: &str| git(dir, &["rev-parse", name]).trim().to_owned();
    let branches: Vec<String> = (0..BRANCHES).map(|b| rev(&format!("b{b:03}"))).collect();
    let (ours, theirs) = (rev("ours"), rev("theirs"));
    let base = rev("main");
    let merger = Merger::open(dir).expect("merger");

    // A disjoint pair.
    let git_pair = time(|| {
        git(
            dir,
            &["merge-tree", "--write-tree", &branches[0], &branches[1]],
        );
    });
    let mut braid_pair = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let merged = merger
            .merge(&branches[0], &branches[1])
            .await
            .expect("merge");
        braid_pair.push(start.elapsed());
        assert_eq!(merged.route, Route::Composed);
    }
    let braid_pair = median(braid_pair);

    // A pair with 50 conflicting files.
    let git_conflict = time(|| {
        git(dir, &["merge-tree", "--write-tree", &ours, &theirs]);
    });
    let mut braid_conflict = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let merged = merger.merge(&ours, &theirs).await.expect("merge");
        braid_conflict.push(start.elapsed());
        assert_eq!(merged.verdict.paths().len(), CONFLICTING);
    }
    let braid_conflict = median(braid_conflict);

    // 100 disjoint branches, integrated one at a time.
    let loop_started = Instant::now();
    let mut current = base.clone();
    for branch in &branches {
        let tree = git(dir, &["merge-tree", "--write-tree", &current, branch]);
        let tree = tree.lines().next().expect("tree").to_owned();
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
        )
        .trim()
        .to_owned();
    }
    let git_loop = loop_started.elapsed();
    let git_result = git(dir, &["rev-parse", &format!("{current}^{{tree}}")]);

    let chain_started = Instant::now();
    let mut current = base.clone();
    let mut halfway = Duration::ZERO;
    for (i, branch) in branches.iter().enumerate() {
        if i == BRANCHES / 2 {
            halfway = chain_started.elapsed();
        }
        match merger
            .merge_commits(&current, branch, "integrate")
            .await
            .expect("merge")
        {
            (Step::Merged(commit), _) => current = commit,
            (Step::Conflict { .. }, _) => panic!("disjoint branches conflicted"),
        }
    }
    let braid_chain = chain_started.elapsed();
    eprintln!(
        "braid chain: first half {}, second half {}",
        ms(halfway),
        ms(braid_chain - halfway)
    );
    let braid_result = git(dir, &["rev-parse", &format!("{current}^{{tree}}")]);
    assert_eq!(
        git_result, braid_result,
        "both integrations give the same tree"
    );

    println!(
        "merge timings, {} files, medians of {ROUNDS}:",
        DIRS * FILES_PER_DIR
    );
    println!(
        "  disjoint pair:        git merge-tree {}, braid {} ({:.1}x)",
        ms(git_pair),
        ms(braid_pair),
        git_pair.as_secs_f64() / braid_pair.as_secs_f64()
    );
    println!(
        "  50 conflicting files: git merge-tree {}, braid {} with kinds and hunks ({:.2}x)",
        ms(git_conflict),
        ms(braid_conflict),
        git_conflict.as_secs_f64() / braid_conflict.as_secs_f64()
    );
    println!(
        "  {BRANCHES} disjoint branches:  merge-tree + commit-tree loop {}, braid {} ({:.1}x)",
        ms(git_loop),
        ms(braid_chain),
        git_loop.as_secs_f64() / braid_chain.as_secs_f64()
    );
}
