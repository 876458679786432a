//! The merger through the binary: conflict kinds and hunks in the report, trial merges
//! while tasks run, and the `report`, `rebase` and `agent` strategies end to end.

use std::path::Path;

use braid_tests::{TestRepo, braid, stderr, stdout};
use serde_json::{Value, json};

use crate::{BIN, run_plan, task};

/// A repository whose `shared.txt` both tasks of these tests rewrite.
fn repo_with_shared_file() -> TestRepo {
    let repo = TestRepo::init();
    repo.commit(
        &[
            ("shared.txt", "first\nsecond\nthird\n"),
            ("gone.txt", "keep me\n"),
        ],
        "shared files",
    );
    repo
}

fn run_of(report: &Value) -> String {
    report["run"].as_str().expect("run id").to_owned()
}

fn timeline_index(report: &Value, event: &str) -> usize {
    report["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .position(|e| e["event"] == event)
        .unwrap_or_else(|| panic!("no {event} in {:#}", report["timeline"]))
}

#[test]
fn conflicts_are_reported_with_kinds_and_hunks_and_foreseen_while_running() {
    let repo = repo_with_shared_file();
    let before = repo.snapshot();
    // `left` changes line 2 and deletes gone.txt; `right` changes line 2 and edits gone.txt.
    let agent = repo.script(
        "agent.sh",
        r#"sed -i "2s/.*/$BRAID_TASK_ID says hello/" shared.txt
if [ "$BRAID_TASK_ID" = left ]; then rm gone.txt; else echo "$BRAID_TASK_ID edit" >> gone.txt; fi
"#,
    );
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
defaults: {{agent: {{command: ["{agent}"]}}}}
tasks:
  - {{id: left, prompt: greet on line two}}
  - {{id: right, prompt: greet on line two as well}}
"#,
        agent = agent.display()
    ));
    let (out, report) = run_plan(&repo, &plan, &["--workers", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let conflicts = report["result"]["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{conflicts:#?}");
    let c = &conflicts[0];
    assert_eq!(c["tasks"], json!(["left", "right"]));
    assert_eq!(c["paths"], json!(["gone.txt", "shared.txt"]));
    assert_eq!(c["resolution"], "left_out");
    let kinds: Vec<(&str, &str)> = c["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["path"].as_str().unwrap(), d["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [("gone.txt", "modify/delete"), ("shared.txt", "content")]
    );
    let hunk = &c["details"][1]["hunks"][0];
    assert_eq!(hunk["start_line"], 2);
    assert_eq!(hunk["end_line"], 8);
    assert_eq!(hunk["ours"], "left says hello\n");
    assert_eq!(hunk["base"], "second\n");
    assert_eq!(hunk["theirs"], "right says hello\n");

    // The trial merge saw it coming before the integration began.
    let predicted = report["result"]["predicted"].as_array().unwrap();
    assert_eq!(predicted.len(), 1, "{predicted:#?}");
    assert_eq!(predicted[0]["tasks"], json!(["left", "right"]));
    assert_eq!(predicted[0]["paths"], json!(["gone.txt", "shared.txt"]));
    assert!(
        timeline_index(&report, "predicted_conflict")
            < timeline_index(&report, "integration_started")
    );
    assert!(
        stderr(&out).contains("predicted conflict: left × right"),
        "{}",
        stderr(&out)
    );

    // The report tells it readably, from the repository as a user would ask.
    let run = run_of(&report);
    let shown = braid(Path::new(BIN), &repo.path, &["report", &run, "--conflicts"]);
    assert_eq!(shown.status.code(), Some(0), "{}", stderr(&shown));
    let text = stdout(&shown);
    for expected in [
        "conflict 1: left × right at integration (left out)",
        "gone.txt: modify/delete",
        "shared.txt: content",
        "lines 2-8:",
        "ours   | left says hello",
        "base   | second",
        "theirs | right says hello",
        "predicted at",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    let md = std::fs::read_to_string(repo.git_dir().join(format!("braid/runs/{run}/report.md")))
        .unwrap();
    assert!(md.contains("`shared.txt`: content"), "{md}");
    let latest = braid(
        Path::new(BIN),
        &repo.path,
        &["report", "latest", "--format", "json"],
    );
    let latest: Value = serde_json::from_str(&stdout(&latest)).expect("json report");
    assert_eq!(latest["run"], run.as_str());
    let missing = braid(Path::new(BIN), &repo.path, &["report", "no-such-run"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("no report for run \"no-such-run\""),
        "{}",
        stderr(&missing)
    );
    repo.assert_untouched(&before);
}

/// An agent that sets line 2 of shared.txt to the greeting of task `left` or `right`
/// (other tasks only leave a note), after `delay` seconds when it is task `slow`.
fn greeting_agent(repo: &TestRepo, slow: &str, delay: &str) -> String {
    repo.script(
        "agent.sh",
        &format!(
            r#"if [ "$BRAID_TASK_ID" = {slow} ]; then sleep {delay}; fi
case "$BRAID_TASK_ID" in left|right) sed -i "2s/.*/$BRAID_TASK_ID says hello/" shared.txt;; esac
echo "$BRAID_TASK_ID" > "$BRAID_TASK_ID.done"
"#
        ),
    )
    .display()
    .to_string()
}

#[test]
fn rebase_starts_early_when_a_trial_merge_foresees_the_conflict() {
    let repo = repo_with_shared_file();
    let before = repo.snapshot();
    let agent = greeting_agent(&repo, "none", "0");
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
defaults: {{agent: {{command: ["{agent}"]}}}}
tasks:
  - {{id: left, prompt: greet on line two}}
  - {{id: right, prompt: greet on line two as well}}
merge:
  on_conflict: rebase
  verify:
    - {{name: both-done, run: "test -f left.done && test -f right.done"}}
"#
    ));
    let (out, report) = run_plan(&repo, &plan, &["--workers", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(report["status"], "succeeded");
    let predicted = &report["result"]["predicted"][0];
    assert_eq!(predicted["tasks"], json!(["left", "right"]));
    assert_eq!(
        predicted["action"],
        "re-running right on top of the winner of left"
    );
    // The re-run began before the integration, and integration met no conflict.
    assert!(timeline_index(&report, "rebase") < timeline_index(&report, "integration_started"));
    assert_eq!(report["result"]["conflicts"], json!([]));
    let right = task(&report, "right");
    assert_eq!(right["winner"], 2);
    assert_eq!(right["attempts"][1]["round"], 1);
    assert_eq!(report["result"]["integrated"], json!(["left", "right"]));
    let run = run_of(&report);
    assert_eq!(
        repo.show(&format!("braid/{run}/result"), "shared.txt")
            .as_deref(),
        Some("first\nright says hello\nthird\n")
    );
    assert_eq!(report["result"]["verify"][0]["status"], "passed");
    repo.assert_untouched(&before);
}

#[test]
fn rebase_at_integration_reruns_the_later_task_on_the_integration() {
    let repo = repo_with_shared_file();
    let before = repo.snapshot();
    // `left` finishes last, after `after-right` has started from right's winner, so the
    // re-run cannot start early and waits for the integration.
    let agent = greeting_agent(&repo, "left", "1.5");
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
defaults: {{agent: {{command: ["{agent}"]}}}}
tasks:
  - {{id: left, prompt: greet on line two}}
  - {{id: right, prompt: greet on line two as well, on_conflict: rebase}}
  - {{id: after-right, prompt: follow right, deps: [right]}}
"#
    ));
    let (out, report) = run_plan(&repo, &plan, &["--workers", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let predicted = &report["result"]["predicted"][0];
    assert_eq!(predicted["tasks"], json!(["left", "right"]));
    assert!(
        predicted["action"]
            .as_str()
            .unwrap()
            .starts_with("left to the integration"),
        "{predicted:#}"
    );
    let conflict = &report["result"]["conflicts"][0];
    assert_eq!(conflict["tasks"], json!(["left", "right"]));
    assert_eq!(conflict["resolution"], "rebased");
    assert!(timeline_index(&report, "integration_started") < timeline_index(&report, "rebase"));
    let right = task(&report, "right");
    assert_eq!(right["winner"], 2);
    assert_eq!(right["attempts"][1]["round"], 1);
    assert_eq!(
        report["result"]["integrated"],
        json!(["left", "right", "after-right"])
    );
    let run = run_of(&report);
    assert_eq!(
        repo.show(&format!("braid/{run}/result"), "shared.txt")
            .as_deref(),
        Some("first\nright says hello\nthird\n")
    );
    repo.assert_untouched(&before);
}

/// A plan of two conflicting tasks where `right` resolves conflicts with `agent`.
fn agent_plan(repo: &TestRepo, resolver: &str) -> std::path::PathBuf {
    let agent = repo.script(
        "agent.sh",
        &format!(
            r#"if grep -q "Resolve a merge conflict" "$BRAID_PROMPT_FILE"; then
{resolver}
  exit 0
fi
sed -i "2s/.*/$BRAID_TASK_ID says hello/" shared.txt
"#
        ),
    );
    repo.out();
    repo.plan(&format!(
        r#"version: 1
repo: repo
sandbox: {{writable: [out]}}
defaults: {{agent: {{command: ["{agent}"]}}}}
tasks:
  - {{id: left, prompt: greet on line two}}
  - id: right
    prompt: greet on line two as well
    on_conflict: agent
    checks: [{{name: has-file, run: "test -f shared.txt"}}]
merge:
  verify: [{{name: not-empty, run: "test -s shared.txt"}}]
"#,
        agent = agent.display()
    ))
}

#[test]
fn agent_resolution_is_checked_and_integrated() {
    let repo = repo_with_shared_file();
    let before = repo.snapshot();
    let seen = repo.out().join("resolution-prompt.md");
    let plan = agent_plan(
        &repo,
        &format!(
            r#"  cp "$BRAID_PROMPT_FILE" "{seen}"
  cp shared.txt "{seen}.file"
  printf 'first\nleft and right say hello\nthird\n' > shared.txt"#,
            seen = seen.display()
        ),
    );
    let (out, report) = run_plan(&repo, &plan, &["--workers", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let conflict = &report["result"]["conflicts"][0];
    assert_eq!(conflict["resolution"], "resolved", "{conflict:#}");
    let right = task(&report, "right");
    let resolution = &right["attempts"][1];
    assert_eq!(resolution["kind"], "resolution");
    assert_eq!(resolution["status"], "succeeded");
    let checks: Vec<&str> = resolution["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(checks, ["has-file", "not-empty"]);
    let step = report["result"]["steps"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(step["task"], "right");
    assert_eq!(step["route"], "resolved");

    // The agent saw both intents, the paths, and the markers with names.
    let prompt = std::fs::read_to_string(&seen).unwrap();
    assert!(prompt.contains("- shared.txt (content)"), "{prompt}");
    assert!(prompt.contains("greet on line two as well"), "{prompt}");
    assert!(
        prompt.contains("Intent of left (already integrated)"),
        "{prompt}"
    );
    let file = std::fs::read_to_string(format!("{}.file", seen.display())).unwrap();
    assert!(
        file.contains("<<<<<<< integration so far\nleft says hello\n"),
        "{file}"
    );
    assert!(file.contains(">>>>>>> right\n"), "{file}");

    let run = run_of(&report);
    assert_eq!(
        repo.show(&format!("braid/{run}/result"), "shared.txt")
            .as_deref(),
        Some("first\nleft and right say hello\nthird\n")
    );
    let parents = repo.git(&["log", "-1", "--format=%P", &format!("braid/{run}/result")]);
    assert_eq!(
        parents.split(' ').count(),
        2,
        "the resolution is a merge commit"
    );
    repo.assert_untouched(&before);
}

#[test]
fn agent_resolution_that_leaves_markers_is_refused() {
    let repo = repo_with_shared_file();
    let before = repo.snapshot();
    let plan = agent_plan(&repo, "  echo 'looked at it' > notes.txt");
    let (out, report) = run_plan(&repo, &plan, &["--workers", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let conflict = &report["result"]["conflicts"][0];
    assert_eq!(conflict["resolution"], "left_out");
    assert!(
        conflict["outcome"]
            .as_str()
            .unwrap()
            .contains("conflict markers remain in shared.txt"),
        "{conflict:#}"
    );
    let resolution = &task(&report, "right")["attempts"][1];
    assert_eq!(resolution["kind"], "resolution");
    assert_eq!(resolution["status"], "failed");
    assert_eq!(report["result"]["integrated"], json!(["left"]));
    let run = run_of(&report);
    assert_eq!(
        repo.show(&format!("braid/{run}/result"), "shared.txt")
            .as_deref(),
        Some("first\nleft says hello\nthird\n")
    );
    repo.assert_untouched(&before);
}

/// A `git` in front of the real one whose `slow`th `merge-tree` (the merger's every trial
/// merge and integration step) first says so in `merging` and then waits `secs` seconds;
/// the wait's pid is in `sleeper`. Returns the folder to put first on `PATH`.
fn slow_merges(repo: &TestRepo, slow: u32, secs: u32) -> std::path::PathBuf {
    let real = braid_tests::command("sh", repo.outside())
        .args(["-c", "command -v git"])
        .output()
        .expect("sh runs");
    let real = String::from_utf8_lossy(&real.stdout).trim().to_owned();
    let dir = repo.outside().join("slow-git");
    std::fs::create_dir_all(&dir).unwrap();
    let script = repo.script(
        "slow-git/git",
        &format!(
            r#"state={state}
for arg in "$@"; do
  if [ "$arg" = merge-tree ]; then
    n=1
    while ! mkdir "$state/call-$n" 2>/dev/null; do n=$((n+1)); done
    if [ "$n" = {slow} ]; then
      touch "$state/merging"
      sleep {secs} & echo $! > "$state/sleeper"; wait $!
    fi
    break
  fi
done
exec {real} "$@"
"#,
            state = repo.outside().display()
        ),
    );
    assert!(script.starts_with(&dir));
    dir
}

/// `braid run` with `first` put before the `PATH` the tests give braid.
fn run_with_path_first(repo: &TestRepo, first: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = braid_tests::command(BIN, repo.outside());
    let path = cmd
        .get_envs()
        .find(|(k, _)| *k == "PATH")
        .and_then(|(_, v)| v.map(|v| v.to_owned()))
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_default();
    let mut paths = vec![first.to_owned()];
    paths.extend(std::env::split_paths(&path));
    cmd.env("PATH", std::env::join_paths(paths).unwrap())
        .env("BRAID_LOG", "warn")
        .args(args);
    cmd
}

fn at_ms(report: &Value, event: &str, task: &str) -> u64 {
    report["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .find(|e| e["event"] == event && e["task"] == task)
        .and_then(|e| e["at_ms"].as_u64())
        .unwrap_or_else(|| panic!("no {event} of {task} in {:#}", report["timeline"]))
}

#[test]
fn a_slow_trial_merge_holds_up_no_other_task() {
    let repo = repo_with_shared_file();
    let before = repo.snapshot();
    // left and right conflict, so their trial merge runs (and takes 6 s); late ends a
    // second and a half after it starts, well inside that merge.
    let agent = repo.script(
        "agent.sh",
        r#"case "$BRAID_TASK_ID" in
  left|right) sed -i "2s/.*/$BRAID_TASK_ID says hello/" shared.txt;;
  late) sleep 1.5; echo late > late.txt;;
esac
"#,
    );
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
defaults: {{agent: {{command: ["{agent}"]}}}}
tasks:
  - {{id: left, prompt: greet on line two}}
  - {{id: right, prompt: greet on line two as well}}
  - {{id: late, prompt: take your time}}
"#,
        agent = agent.display()
    ));
    let first = slow_merges(&repo, 1, 6);
    let out = run_with_path_first(
        &repo,
        &first,
        &["run", plan.to_str().unwrap(), "--json", "--workers", "3"],
    )
    .output()
    .expect("braid runs");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).expect("report.json");
    assert!(
        repo.outside().join("merging").exists(),
        "the slow merge never ran"
    );
    let predicted = &report["result"]["predicted"];
    assert_eq!(
        predicted[0]["tasks"],
        json!(["left", "right"]),
        "{predicted:#}"
    );
    // late's result was taken and its winner chosen while the trial merge still ran.
    let late_won = at_ms(&report, "winner", "late");
    let foreseen = at_ms(&report, "predicted_conflict", "right");
    assert!(
        late_won < foreseen,
        "late's winner came at {late_won} ms, after the trial merge ended at {foreseen} ms"
    );
    assert_eq!(task(&report, "late")["status"], "succeeded");
    repo.assert_untouched(&before);
}

#[test]
fn an_interrupt_during_a_slow_integration_step_ends_the_run_at_once() {
    let repo = repo_with_shared_file();
    let before = repo.snapshot();
    let agent = greeting_agent(&repo, "none", "0");
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
defaults: {{agent: {{command: ["{agent}"]}}}}
tasks:
  - {{id: left, prompt: greet on line two}}
  - {{id: right, prompt: greet on line two as well}}
"#
    ));
    // The trial merge is the first merge-tree, the integration of right the second.
    let first = slow_merges(&repo, 2, 60);
    let child = run_with_path_first(
        &repo,
        &first,
        &["run", plan.to_str().unwrap(), "--json", "--workers", "2"],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("braid starts");
    let merging = repo.outside().join("merging");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !merging.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the integration never merged"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let interrupted = std::time::Instant::now();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().expect("braid ends");
    let took = interrupted.elapsed();
    let sleeper: i32 = std::fs::read_to_string(repo.outside().join("sleeper"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let sleeper_alive = braid_tests::alive(sleeper);
    if sleeper_alive {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(sleeper),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        took < std::time::Duration::from_secs(20),
        "the run took {took:?} to end after the interrupt: it waited for the merge"
    );
    assert!(!sleeper_alive, "the merge's processes outlived the run");
    let report: Value = serde_json::from_str(&stdout(&out)).expect("report.json");
    assert_eq!(report["status"], "cancelled", "{report:#}");
    repo.assert_untouched(&before);
}
