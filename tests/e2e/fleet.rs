//! Workers as processes of their own, with caches of their own and no view of the
//! coordinator's disk: git objects and logs move over the connection.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use braid_tests::{TestRepo, stderr, stdout};

use crate::{BIN, task};

/// Starts `braid worker` in a mount namespace of its own where `hidden` folders are empty
/// tmpfs mounts: it sees nothing of them, as a worker on another machine would.
fn hidden_worker(dir: &Path, url: &str, cache: &Path, hidden: &[&Path], extra: &[&str]) -> Child {
    let mut script = String::from("set -e\n");
    for i in 1..=hidden.len() {
        script.push_str(&format!("mount -t tmpfs braid-hidden \"${i}\"\n"));
    }
    script.push_str(&format!("shift {}\nexec \"$@\"\n", hidden.len()));
    braid_tests::command("unshare", dir)
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .args(hidden)
        .args([BIN, "worker", "--connect", url, "--cache"])
        .arg(cache)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare runs")
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(Instant::now() < deadline, "nothing at {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_worker_that_cannot_see_the_repository_runs_the_plan() {
    let repo = TestRepo::init();
    repo.commit(&[("src/lib.txt", "one\n")], "a file");
    let before = repo.snapshot();
    let seen = repo.path.join("README.md");
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
tasks:
  - id: first
    prompt: Add a note.
    attempts: 2
    agent:
      command: [sh, -c, 'if test -e {seen}; then echo visible; else echo hidden; fi > seen.txt; echo "working on $BRAID_ATTEMPT"; echo "note $BRAID_ATTEMPT" > note.txt']
    checks:
      - {{name: has-note, run: "echo checking; grep -q note note.txt"}}
  - id: second
    deps: [first]
    prompt: Build on the note.
    agent: {{command: [sh, -c, 'cat note.txt src/lib.txt > both.txt']}}
"#,
        seen = seen.display()
    ));
    let socket = repo.outside().join("coordinator.sock");
    let url = format!("unix:{}", socket.display());
    let run = braid_tests::command(BIN, repo.outside())
        .args(["run", plan.to_str().unwrap(), "--json", "--workers", "0"])
        .args(["--listen", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&socket);
    let own = tempfile::tempdir().unwrap();
    let worker = hidden_worker(
        repo.outside(),
        &url,
        own.path(),
        &[&repo.path, &repo.cache()],
        &["--slots", "2", "--name", "elsewhere"],
    );
    let out = run.wait_with_output().unwrap();
    let worked = worker.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\nworker: {}",
        stderr(&out),
        stderr(&worked)
    );
    assert_eq!(worked.status.code(), Some(0), "{}", stderr(&worked));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["workers"][0]["name"], "elsewhere");
    assert_eq!(task(&report, "first")["status"], "succeeded");
    assert_eq!(task(&report, "second")["status"], "succeeded");
    let result = report["result"]["branch"].as_str().unwrap();
    // The agent could not see the repository; the worker still checked out its files,
    // and the second task the first's winner, which it fetched.
    assert_eq!(repo.show(result, "seen.txt").as_deref(), Some("hidden\n"));
    let both = repo.show(result, "both.txt").unwrap();
    assert!(
        both.starts_with("note ") && both.ends_with("one\n"),
        "{both:?}"
    );
    // The logs came over the connection into the run's folder.
    let logs = repo
        .git_dir()
        .join("braid/runs")
        .join(report["run"].as_str().unwrap())
        .join("logs");
    let agent_log = std::fs::read_to_string(logs.join("first.1.agent.log")).unwrap();
    assert!(agent_log.contains("working on 1"), "{agent_log:?}");
    let check_log = std::fs::read_to_string(logs.join("first.1.check.has-note.log")).unwrap();
    assert!(check_log.contains("checking"), "{check_log:?}");
    let first = task(&report, "first");
    assert_eq!(
        first["attempts"][0]["log"].as_str(),
        Some(logs.join("first.1.agent.log").to_str().unwrap())
    );
    // The worker kept a copy of the repository in its own cache, and no worktree.
    let repos: Vec<_> = std::fs::read_dir(own.path().join("repos"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(repos.len(), 1, "{repos:?}");
    assert!(repos[0].ends_with(".git"));
    let work = own.path().join("work");
    assert!(
        !work.exists() || braid_tests::files_under(&work).is_empty(),
        "worktrees left behind"
    );
    repo.assert_untouched(&before);
}
