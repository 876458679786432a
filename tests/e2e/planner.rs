//! The planner through the binary: `braid plan` and `braid run --goal`, with command
//! planners and with the built-in agent against the scripted model server. A plan with
//! errors goes back to the agent with them, located; a planner that never gets it right
//! ends with exit 2 and nothing written; the planned plan runs from wherever it is saved.

use std::path::Path;

use braid_tests::model::{ModelServer, Script};
use braid_tests::{TestRepo, braid, command, stderr, stdout};
use serde_json::Value;

use crate::{BIN, task};

/// A plan with a cycle (one → two → one) and an unknown dep (ghost).
const BROKEN: &str = "version: 1
tasks:
  - id: one
    prompt: write one.txt
    deps: [two]
  - id: two
    prompt: write two.txt
    deps: [one, ghost]
";

/// What the planners write once told what was wrong: two tasks, the second after the
/// first, each with a check that fails on the base.
const FIXED: &str = "version: 1
name: two-files
defaults:
  agent: {command: [sh, -c, 'echo \"$BRAID_TASK_ID\" > \"$BRAID_TASK_ID.txt\"']}
tasks:
  - id: one
    prompt: |
      Write one.txt.
    touches: [one.txt]
    checks: [{name: has, run: test -f one.txt, baseline: false}]
  - id: two
    deps: [one]
    prompt: Write two.txt.
    touches: [two.txt]
    checks: [{name: both, run: test -f one.txt && test -f two.txt, baseline: false}]
";

/// A command planner: writes BROKEN, then FIXED once its feedback file names both
/// problems with their places; it also tries to write its worktree and the user's
/// repository, which must fail.
fn planner(repo: &TestRepo) -> std::path::PathBuf {
    std::fs::write(repo.outside().join("broken.yaml"), BROKEN).expect("broken");
    std::fs::write(repo.outside().join("fixed.yaml"), FIXED).expect("fixed");
    repo.script(
        "planner.sh",
        &format!(
            r#"echo planted > planted.txt 2>/dev/null
echo planted > "{repo}/planted.txt" 2>/dev/null
if [ -n "$BRAID_FEEDBACK_FILE" ] \
   && grep -q 'plan.yaml:3:9: dependency cycle: one → two → one' "$BRAID_FEEDBACK_FILE" \
   && grep -q 'plan.yaml:8:17: task "two" depends on unknown task "ghost"' "$BRAID_FEEDBACK_FILE"; then
  cp "{dir}/fixed.yaml" "$BRAID_PLAN_FILE"
else
  cp "{dir}/broken.yaml" "$BRAID_PLAN_FILE"
fi
"#,
            repo = repo.path.display(),
            dir = repo.outside().display()
        ),
    )
}

fn agent_arg(script: &Path) -> String {
    format!("{{command: [\"{}\"]}}", script.display())
}

#[test]
fn a_planner_fixes_its_plan_from_the_located_feedback() {
    let repo = TestRepo::init();
    let script = planner(&repo);
    let before = repo.snapshot();
    let output = repo.outside().join("planned.yaml");
    let out = braid(
        Path::new(BIN),
        &repo.path,
        &[
            "plan",
            "Write one.txt, then two.txt",
            "--agent",
            &agent_arg(&script),
            "-o",
            output.to_str().unwrap(),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    // The first round's errors, located in the agent's own file.
    assert!(
        err.contains("plan.yaml:3:9: dependency cycle: one → two → one"),
        "{err}"
    );
    assert!(
        err.contains("plan.yaml:8:17: task \"two\" depends on unknown task \"ghost\""),
        "{err}"
    );
    // The planner wrote its fixed plan only once its feedback file named both problems.
    // The DAG, with each task's prompt, checks and touches.
    assert!(err.contains("one ×1: Write one.txt."), "{err}");
    assert!(err.contains("two ×1 (after one): Write two.txt."), "{err}");
    assert!(
        err.contains("check both: test -f one.txt && test -f two.txt"),
        "{err}"
    );
    assert!(err.contains("touches: two.txt"), "{err}");
    assert!(err.contains("planned in 2 round(s)"), "{err}");
    // The planner could write neither its worktree nor the user's repository.
    assert!(!repo.path.join("planted.txt").exists());
    repo.assert_untouched(&before);
    // The plan names the repository and base, so it runs from anywhere.
    let text = std::fs::read_to_string(&output).expect("the plan was written");
    let head = repo.git(&["rev-parse", "HEAD"]);
    assert!(text.contains(&format!("base: {head}")), "{text}");
    assert!(
        text.contains(&format!("repo: {}", repo.path.display())),
        "{text}"
    );
    let elsewhere = tempfile::tempdir().expect("tmp");
    let moved = elsewhere.path().join("moved.yaml");
    std::fs::copy(&output, &moved).expect("copy");
    let validated = braid(
        Path::new(BIN),
        elsewhere.path(),
        &["validate", moved.to_str().unwrap()],
    );
    assert_eq!(validated.status.code(), Some(0), "{}", stderr(&validated));
    assert!(stdout(&validated).contains("layer 2: two ×1 (after one)"));
    // Nothing of the planning is left in the cache.
    let work = repo.cache().join("work");
    let left: Vec<_> = std::fs::read_dir(&work)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_planner_that_never_gets_it_right_stops_after_its_rounds() {
    let repo = TestRepo::init();
    std::fs::write(repo.outside().join("broken.yaml"), BROKEN).expect("broken");
    let script = repo.script(
        "planner.sh",
        &format!(
            "cp \"{}/broken.yaml\" \"$BRAID_PLAN_FILE\"\n",
            repo.outside().display()
        ),
    );
    let before = repo.snapshot();
    let output = repo.outside().join("planned.yaml");
    let out = braid(
        Path::new(BIN),
        &repo.path,
        &[
            "plan",
            "anything",
            "--agent",
            &agent_arg(&script),
            "--rounds",
            "2",
            "-o",
            output.to_str().unwrap(),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no valid plan in 2 rounds"), "{err}");
    for round in ["round 1:", "round 2:"] {
        assert!(err.contains(round), "{round}: {err}");
    }
    assert_eq!(
        err.matches("depends on unknown task \"ghost\"").count(),
        4,
        "each round's errors, as they came and at the end: {err}"
    );
    assert!(!output.exists(), "no plan written");
    assert!(stdout(&out).is_empty());
    repo.assert_untouched(&before);
    assert!(repo.braid_refs().is_empty(), "nothing ran");
    assert!(!repo.git_dir().join("braid/runs").exists());
}

#[test]
fn a_planner_that_writes_no_plan_is_told_so() {
    let repo = TestRepo::init();
    let script = repo.script("planner.sh", "echo 'I would rather not.'\n");
    let out = braid(
        Path::new(BIN),
        &repo.path,
        &[
            "plan",
            "anything",
            "--agent",
            &agent_arg(&script),
            "--rounds",
            "1",
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("wrote no plan to $BRAID_PLAN_FILE"), "{err}");
    assert!(
        err.contains("I would rather not."),
        "its last lines are shown: {err}"
    );
}

#[test]
fn a_bad_agent_argument_is_a_located_error() {
    let repo = TestRepo::init();
    let out = braid(
        Path::new(BIN),
        &repo.path,
        &[
            "plan",
            "anything",
            "--agent",
            "{command: [a], preset: codex}",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--agent:1:1: an agent is one of `command`, `preset` and `builtin`"),
        "{}",
        stderr(&out)
    );
    let out = braid(
        Path::new(BIN),
        &repo.path,
        &["plan", "anything", "--agent", "nosuch"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown agent preset \"nosuch\""));
}

#[test]
fn run_goal_yes_plans_runs_and_keeps_the_plan() {
    let repo = TestRepo::init();
    let script = planner(&repo);
    let out = command(BIN, &repo.path)
        .args([
            "run",
            "--goal",
            "Write one.txt, then two.txt",
            "--agent",
            &agent_arg(&script),
            "--yes",
            "--json",
        ])
        .env("BRAID_LOG", "warn")
        .output()
        .expect("braid runs");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let report: Value = serde_json::from_str(&stdout(&out)).expect("report.json");
    assert_eq!(report["status"], "succeeded", "{report:#}");
    let run = report["run"].as_str().unwrap();
    // The plan is kept in the run's folder, and the report says who planned it.
    let kept = repo.git_dir().join(format!("braid/runs/{run}/plan.yaml"));
    assert_eq!(report["plan"], kept.to_str().unwrap());
    assert!(std::fs::read_to_string(&kept).unwrap().contains("id: two"));
    assert_eq!(report["planner"]["agent"], "command");
    assert_eq!(report["planner"]["rounds"], 2);
    assert_eq!(report["planner"]["goal"], "Write one.txt, then two.txt");
    let logs = repo.git_dir().join(format!("braid/runs/{run}/logs"));
    assert!(logs.join("plan.1.agent.log").is_file());
    let feedback = std::fs::read_to_string(logs.join("plan.2.feedback.md")).expect("feedback");
    assert!(
        feedback.contains("plan.yaml:3:9: dependency cycle: one → two → one"),
        "{feedback}"
    );
    assert!(
        feedback.contains("plan.yaml:8:17: task \"two\" depends on unknown task \"ghost\""),
        "{feedback}"
    );
    // From goal to result branch.
    assert_eq!(task(&report, "two")["status"], "succeeded");
    let result = format!("braid/{run}/result");
    assert_eq!(repo.show(&result, "one.txt").as_deref(), Some("one\n"));
    assert_eq!(repo.show(&result, "two.txt").as_deref(), Some("two\n"));
    assert!(
        err.contains("two ×1 (after one)"),
        "the DAG was shown: {err}"
    );
}

#[test]
fn run_goal_asks_first_and_keeps_the_plan_when_it_cannot() {
    let repo = TestRepo::init();
    let script = planner(&repo);
    let out = command(BIN, &repo.path)
        .args([
            "run",
            "--goal",
            "Write one.txt, then two.txt",
            "--agent",
            &agent_arg(&script),
        ])
        .env("BRAID_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("braid runs");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("pass --yes"), "{err}");
    assert!(repo.braid_refs().is_empty(), "nothing ran");
    let plans: Vec<_> = std::fs::read_dir(repo.git_dir().join("braid/plans"))
        .expect("the plan is kept")
        .flatten()
        .collect();
    assert_eq!(plans.len(), 1);
    assert!(
        err.contains(&plans[0].path().display().to_string()),
        "{err}"
    );
    let runs = repo.git_dir().join("braid/runs");
    assert!(
        std::fs::read_dir(&runs).map_or(true, |mut d| d.next().is_none()),
        "no run folder is left"
    );
}

#[test]
fn the_builtin_agent_plans_through_its_shell() {
    let repo = TestRepo::init();
    std::fs::write(repo.outside().join("broken.yaml"), BROKEN).expect("broken");
    std::fs::write(repo.outside().join("fixed.yaml"), FIXED).expect("fixed");
    let dir = repo.outside().display().to_string();
    let server = ModelServer::start(Script {
        command: Some(format!(
            "if [ -n \"$BRAID_FEEDBACK_FILE\" ] && grep -q ghost \"$BRAID_FEEDBACK_FILE\"; then cp {dir}/fixed.yaml \"$BRAID_PLAN_FILE\"; else cp {dir}/broken.yaml \"$BRAID_PLAN_FILE\"; fi"
        )),
        final_text: "The plan is written.".into(),
        ..Script::default()
    });
    let agent = format!(
        "{{builtin: {{api: chat, model: test-model, base_url: \"{}/v1\", api_key_env: BRAID_TEST_KEY}}}}",
        server.url()
    );
    let out = command(BIN, &repo.path)
        .args(["plan", "Write one.txt, then two.txt", "--agent", &agent])
        .env("BRAID_LOG", "warn")
        .env("BRAID_TEST_KEY", "sk-test")
        .output()
        .expect("braid runs");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("depends on unknown task \"ghost\""), "{err}");
    assert!(
        err.contains("planned in 2 round(s) by builtin test-model, spent"),
        "{err}"
    );
    let text = stdout(&out);
    assert!(text.contains("name: two-files"), "{text}");
    // The second round's prompt held the first round's errors.
    let prompts: Vec<String> = server
        .conversation()
        .iter()
        .map(|s| s.body.to_string())
        .collect();
    assert!(
        prompts
            .iter()
            .any(|p| p.contains("Your previous plan had problems") && p.contains("ghost"))
    );
    // A read-only job offers no tool that edits files.
    assert!(
        prompts.iter().all(|p| !p.contains("apply_patch")),
        "{prompts:?}"
    );
}

#[test]
fn codex_plans_in_its_reply() {
    crate::agents::assert_installed("codex");
    let repo = TestRepo::init();
    let server = crate::agents::server_for(
        &repo,
        Script {
            command: Some("true".into()),
            final_text: format!("I read the repository. The plan:\n```yaml\n{FIXED}```\n"),
            ..Script::default()
        },
    );
    let home = repo.outside().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let before = repo.snapshot();
    let out = command(BIN, &repo.path)
        .args([
            "plan",
            "Write one.txt, then two.txt",
            "--agent",
            &crate::agents::agent("codex", &server),
        ])
        .env("BRAID_LOG", "warn")
        .env("BRAID_TEST_KEY", crate::agents::KEY)
        .env("HOME", &home)
        .output()
        .expect("braid runs");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(stdout(&out).contains("name: two-files"), "{}", stdout(&out));
    assert!(
        err.contains("planned in 1 round(s) by codex test-model, spent"),
        "{err}"
    );
    // The prompt reached the CLI, with the goal and the plan format.
    let asked = server.conversation();
    let first = asked
        .first()
        .expect("codex asked the model")
        .body
        .to_string();
    assert!(first.contains("Write one.txt, then two.txt") && first.contains("JSON Schema"));
    repo.assert_untouched(&before);
}
