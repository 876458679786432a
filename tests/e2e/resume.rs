//! Runs that a SIGKILL ended, continued from their journal with `braid resume`.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use braid_tests::{TestRepo, braid, stderr, stdout};

use crate::{BIN, task};

/// A plan whose agents note each start in `calls` (outside the sandbox's reach but for
/// that folder); `slow` waits for `release` to exist before it finishes.
fn plan(repo: &TestRepo, calls: &Path, release: &Path) -> std::path::PathBuf {
    repo.plan(&format!(
        r#"version: 1
repo: repo
sandbox: {{writable: [{calls}]}}
defaults:
  agent:
    command: [sh, -c, 'echo "$BRAID_TASK_ID $BRAID_ATTEMPT" >> {calls}/log; if [ "$BRAID_TASK_ID" = slow ]; then echo started > {calls}/slow-started; while [ ! -e {release} ]; do sleep 0.05; done; fi; echo "$BRAID_TASK_ID $BRAID_ATTEMPT" > "$BRAID_TASK_ID.txt"']
tasks:
  - id: quick
    prompt: q
    attempts: 2
    checks: [{{name: made, run: "test -f quick.txt"}}]
  - id: slow
    prompt: s
    deps: [quick]
    checks: [{{name: made, run: "test -f slow.txt"}}]
  - id: other
    prompt: o
    checks: [{{name: made, run: "test -f other.txt"}}]
"#,
        calls = calls.display(),
        release = release.display()
    ))
}

fn calls(dir: &Path) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(dir.join("log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

#[test]
fn a_killed_run_resumes_without_running_finished_attempts_again() {
    let repo = TestRepo::init();
    let before = repo.snapshot();
    let dir = repo.outside().join("calls");
    std::fs::create_dir_all(&dir).unwrap();
    let release = dir.join("release");
    let plan = plan(&repo, &dir, &release);
    let mut run = braid_tests::command(BIN, repo.outside())
        .args(["run", plan.to_str().unwrap(), "--workers", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed while `slow` runs, once `quick` and `other` are done.
    let deadline = Instant::now() + Duration::from_secs(30);
    let has = |name: &str| {
        braid_tests::command("git", &repo.path)
            .args(["for-each-ref", "--format=%(refname)", "refs/heads/braid/"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(name))
            .unwrap_or(false)
    };
    while !(dir.join("slow-started").exists() && has("/other/1") && has("/quick/2")) {
        assert!(Instant::now() < deadline, "slow never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    run.wait().unwrap();
    assert_eq!(calls(&dir), ["other 1", "quick 1", "quick 2", "slow 1"]);
    let runs = repo.git_dir().join("braid/runs");
    let id = std::fs::read_dir(&runs).unwrap().flatten().next().unwrap();
    let id = id.file_name().to_string_lossy().into_owned();
    let branch = |name: &str| repo.git(&["rev-parse", &format!("braid/{id}/{name}")]);
    let kept = [branch("quick/1"), branch("quick/2"), branch("other/1")];

    std::fs::write(&release, "").unwrap();
    let out = braid(Path::new(BIN), &repo.path, &["resume", &id, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Two baselines and three attempts, and `slow`'s baseline if it ended before the kill.
    let said = stderr(&out);
    assert!(
        said.contains("5 result(s) already in") || said.contains("6 result(s) already in"),
        "{said}"
    );
    // Only the attempt that was running ran again.
    assert_eq!(
        calls(&dir),
        ["other 1", "quick 1", "quick 2", "slow 1", "slow 1"]
    );
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["run"], id.as_str());
    assert_eq!(report["status"], "succeeded");
    for id in ["quick", "slow", "other"] {
        assert_eq!(task(&report, id)["status"], "succeeded", "{id}");
    }
    assert_eq!(
        task(&report, "quick")["attempts"].as_array().unwrap().len(),
        2
    );
    // The finished attempts kept their commits, and the report says the run resumed.
    assert_eq!(
        [branch("quick/1"), branch("quick/2"), branch("other/1")],
        kept
    );
    let resumed: Vec<_> = report["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "resumed")
        .collect();
    assert_eq!(resumed.len(), 1, "{:#}", report["timeline"]);
    let result = report["result"]["branch"].as_str().unwrap();
    assert_eq!(repo.show(result, "slow.txt").as_deref(), Some("slow 1\n"));
    assert!(repo.show(result, "other.txt").is_some());

    // A run that ended is not resumed again.
    let again = braid(Path::new(BIN), &repo.path, &["resume", &id]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stderr(&again).contains("already ended (succeeded)"),
        "{}",
        stderr(&again)
    );
    assert_eq!(calls(&dir).len(), 5);
    repo.assert_untouched(&before);
}

#[test]
fn resume_names_what_it_cannot_resume() {
    let repo = TestRepo::init();
    for (args, message) in [
        (
            vec!["resume", "20260101-000000-abcd"],
            "no run 20260101-000000-abcd",
        ),
        (vec!["resume", "../../etc"], "is not a run id"),
    ] {
        let out = braid(Path::new(BIN), &repo.path, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }
    // A run folder without a journal (an older braid's).
    let old = repo.git_dir().join("braid/runs/20250101-000000-abcd");
    std::fs::create_dir_all(&old).unwrap();
    let out = braid(
        Path::new(BIN),
        &repo.path,
        &["resume", "20250101-000000-abcd"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot be resumed"),
        "{}",
        stderr(&out)
    );
}
