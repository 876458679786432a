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
