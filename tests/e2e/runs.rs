//! Runs through the binary: winners, dependencies, conflicts, timeouts, failures, and the
//! user's repository left as it was.

use std::path::Path;

use braid_tests::{TestRepo, braid, stderr, stdout};

use crate::{BIN, attempt, run_plan, task};

fn run_id(report: &serde_json::Value) -> String {
    report["run"].as_str().expect("run id").to_owned()
}

#[test]
fn best_of_three_where_only_attempt_two_passes() {
    let repo = TestRepo::init();
    // The user has work in progress: staged, unstaged and untracked. braid must not touch it.
    repo.commit(&[("src/lib.txt", "one\n")], "more");
    repo.write(&[("src/lib.txt", "one\ntwo\n")]);
    repo.git(&["add", "src/lib.txt"]);
    repo.write(&[
        ("README.md", "# changed, not staged\n"),
        ("notes.txt", "untracked\n"),
    ]);
    let before = repo.snapshot();

    let seen = repo.out();
    let agent = repo.script(
        "agent.sh",
        &format!(
            r#"cat > "{seen}/stdin.$BRAID_ATTEMPT"
env | grep '^BRAID_' | sort > "{seen}/env.$BRAID_ATTEMPT"
cp "$BRAID_PROMPT_FILE" "{seen}/prompt.$BRAID_ATTEMPT"
echo "attempt $BRAID_ATTEMPT" > answer.txt
"#,
            seen = seen.display()
        ),
    );
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
sandbox: {{writable: [out]}}
tasks:
  - id: answer
    prompt: Write the answer.
    attempts: 3
    agent: {{command: ["{agent}"]}}
    checks:
      - name: right
        run: grep -q "attempt 2" answer.txt
        baseline: false
"#,
        agent = agent.display()
    ));
    let (out, report) = run_plan(&repo, &plan, &["--workers", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run = run_id(&report);
    let answer = task(&report, "answer");
    assert_eq!(answer["status"], "succeeded");
    assert_eq!(answer["winner"], 2);
    for n in [1, 3] {
        let a = attempt(answer, n);
        assert_eq!(a["status"], "failed");
        assert_eq!(a["checks"][0]["status"], "failed");
        assert_eq!(a["checks"][0]["exit_code"], 1);
    }
    let winner = attempt(answer, 2);
    assert_eq!(winner["status"], "succeeded");
    assert_eq!(winner["checks"][0]["status"], "passed");
    assert_eq!(winner["diff"]["files"], 1);
    assert_eq!(winner["branch"], format!("braid/{run}/answer/2"));

    // Every attempt's work survives as a branch; the winner and the result have theirs.
    let mut refs = repo.braid_refs();
    refs.sort();
    let expected: Vec<String> = [
        "answer/1",
        "answer/2",
        "answer/3",
        "answer/winner",
        "result",
    ]
    .iter()
    .map(|r| format!("refs/heads/braid/{run}/{r}"))
    .collect();
    assert_eq!(refs, expected);
    assert_eq!(
        repo.show(&format!("braid/{run}/answer/3"), "answer.txt")
            .as_deref(),
        Some("attempt 3\n")
    );
    assert_eq!(
        repo.show(&format!("braid/{run}/result"), "answer.txt")
            .as_deref(),
        Some("attempt 2\n")
    );
    // The attempts started from the committed base, not from the user's uncommitted work.
    assert_eq!(
        repo.show(&format!("braid/{run}/result"), "src/lib.txt")
            .as_deref(),
        Some("one\n")
    );

    // The command agent's contract: prompt on stdin and in a file, BRAID_* variables.
    let stdin = std::fs::read_to_string(seen.join("stdin.2")).unwrap();
    assert_eq!(stdin, "Write the answer.");
    assert_eq!(
        std::fs::read_to_string(seen.join("prompt.2")).unwrap(),
        stdin
    );
    let env = std::fs::read_to_string(seen.join("env.2")).unwrap();
    for expected in [
        format!("BRAID_RUN_ID={run}"),
        "BRAID_TASK_ID=answer".to_owned(),
        "BRAID_ATTEMPT=2".to_owned(),
        format!("BRAID_BASE_COMMIT={}", repo.git(&["rev-parse", "HEAD"])),
    ] {
        assert!(
            env.lines().any(|l| l == expected),
            "{expected} missing from\n{env}"
        );
    }
    let worktree = env
        .lines()
        .find_map(|l| l.strip_prefix("BRAID_WORKTREE="))
        .expect("BRAID_WORKTREE");
    assert!(
        worktree.starts_with(repo.cache().join("work").to_str().unwrap()),
        "{worktree}"
    );

    // The state directory holds both reports and the logs.
    let state = repo.git_dir().join("braid/runs").join(&run);
    for file in [
        "report.json",
        "report.md",
        "logs/answer.2.agent.log",
        "logs/answer.2.check.right.log",
    ] {
        assert!(state.join(file).exists(), "{file} missing");
    }
    let md = std::fs::read_to_string(state.join("report.md")).unwrap();
    assert!(
        md.contains("Winner: attempt 2 (only attempt passing right)"),
        "{md}"
    );
    repo.assert_untouched(&before);
}

#[test]
fn chain_sees_each_dependency_and_result_holds_all() {
    let repo = TestRepo::init();
    let before = repo.snapshot();
    let agent = repo.script(
        "agent.sh",
        r#"# Each task records what it saw of earlier tasks, then adds its own file.
ls *.txt 2>/dev/null | tr '\n' ' ' > "seen-by-$BRAID_TASK_ID"
echo "$BRAID_TASK_ID was here" > "$BRAID_TASK_ID.txt"
"#,
    );
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
defaults:
  agent: {{command: [sh, "{agent}"]}}
tasks:
  - id: c
    deps: [b]
    prompt: third
    checks: [{{name: sees, run: "test -f a.txt && test -f b.txt"}}]
  - id: a
    prompt: first
  - id: b
    deps: [a]
    prompt: second
    checks: [{{name: sees, run: "test -f a.txt"}}]
"#,
        agent = agent.display()
    ));
    let (out, report) = run_plan(&repo, &plan, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run = run_id(&report);
    for id in ["a", "b", "c"] {
        assert_eq!(task(&report, id)["status"], "succeeded", "{id}");
    }
    let result = format!("braid/{run}/result");
    assert_eq!(repo.show(&result, "seen-by-b").as_deref(), Some("a.txt "));
    assert_eq!(
        repo.show(&result, "seen-by-c").as_deref(),
        Some("a.txt b.txt ")
    );
    for id in ["a", "b", "c"] {
        assert_eq!(
            repo.show(&result, &format!("{id}.txt")),
            Some(format!("{id} was here\n"))
        );
    }
    // b started from a's winner, c from b's.
    let winner_a = attempt(task(&report, "a"), 1)["commit"].clone();
    assert_eq!(task(&report, "b")["base"], winner_a);
    assert_eq!(
        report["result"]["integrated"],
        serde_json::json!(["a", "b", "c"])
    );
    repo.assert_untouched(&before);
}

#[test]
fn independent_tasks_editing_the_same_lines_conflict() {
    let repo = TestRepo::init();
    let before = repo.snapshot();
    let agent = repo.script(
        "agent.sh",
        "echo \"$BRAID_TASK_ID rewrote this\" > README.md\n",
    );
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
defaults: {{agent: {{command: ["{agent}"]}}}}
tasks:
  - {{id: left, prompt: rewrite the readme}}
  - {{id: right, prompt: rewrite the readme too}}
"#,
        agent = agent.display()
    ));
    let (out, report) = run_plan(&repo, &plan, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(report["status"], "failed");
    let conflicts = report["result"]["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{conflicts:#?}");
    assert_eq!(conflicts[0]["tasks"], serde_json::json!(["left", "right"]));
    assert_eq!(conflicts[0]["paths"], serde_json::json!(["README.md"]));
    assert_eq!(report["result"]["integrated"], serde_json::json!(["left"]));
    let run = run_id(&report);
    assert_eq!(
        repo.show(&format!("braid/{run}/result"), "README.md")
            .as_deref(),
        Some("left rewrote this\n")
    );
    // Both winners survive as branches even though one is left out of the result.
    assert!(
        repo.braid_refs()
            .contains(&format!("refs/heads/braid/{run}/right/winner"))
    );
    repo.assert_untouched(&before);
}

#[test]
fn timeout_kills_the_agent_and_its_grandchildren() {
    let repo = TestRepo::init();
    let before = repo.snapshot();
    let agent = repo.script(
        "agent.sh",
        &format!(
            r#"echo partial > partial.txt
sh -c 'sleep 300; :' {tag} &
setsid sh -c 'sleep 301; :' {tag} &
sh -c 'sleep 302; :' {tag}
"#,
            tag = repo.tag()
        ),
    );
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
tasks:
  - id: slow
    prompt: take forever
    timeout: 1s
    agent: {{command: ["{agent}"]}}
"#,
        agent = agent.display()
    ));
    let (out, report) = run_plan(&repo, &plan, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let slow = attempt(task(&report, "slow"), 1);
    assert_eq!(slow["status"], "timed_out");
    // The partial work was kept on the attempt's branch.
    assert!(slow["commit"].is_string(), "{slow:#}");
    assert_eq!(
        repo.survivors(),
        Vec::<String>::new(),
        "processes outlived their attempt"
    );
    repo.assert_untouched(&before);
}

#[test]
fn a_failing_agent_fails_its_task_and_the_run_goes_on() {
    let repo = TestRepo::init();
    let before = repo.snapshot();
    let agent = repo.script(
        "agent.sh",
        r#"if [ "$BRAID_TASK_ID" = broken ]; then echo "no luck" >&2; exit 3; fi
echo fine > "$BRAID_TASK_ID.txt"
"#,
    );
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
defaults: {{agent: {{command: ["{agent}"]}}}}
tasks:
  - {{id: broken, prompt: fail}}
  - {{id: after-broken, prompt: never runs, deps: [broken]}}
  - {{id: fine, prompt: work}}
"#,
        agent = agent.display()
    ));
    let (out, report) = run_plan(&repo, &plan, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let broken = task(&report, "broken");
    assert_eq!(broken["status"], "failed");
    assert_eq!(attempt(broken, 1)["status"], "failed");
    assert_eq!(attempt(broken, 1)["agent_exit_code"], 3);
    assert_eq!(attempt(broken, 1)["commit"], serde_json::Value::Null);
    assert_eq!(task(&report, "after-broken")["status"], "blocked");
    assert_eq!(task(&report, "fine")["status"], "succeeded");
    let log = std::fs::read_to_string(attempt(broken, 1)["log"].as_str().unwrap()).unwrap();
    assert!(log.contains("no luck"), "{log}");
    let run = run_id(&report);
    assert_eq!(
        repo.show(&format!("braid/{run}/result"), "fine.txt")
            .as_deref(),
        Some("fine\n")
    );
    repo.assert_untouched(&before);
}

#[test]
fn verification_failure_fails_the_run_but_keeps_the_result() {
    let repo = TestRepo::init();
    let before = repo.snapshot();
    let agent = repo.script("agent.sh", "echo new > new.txt\n");
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
tasks:
  - {{id: add, prompt: add a file, agent: {{command: ["{agent}"]}}}}
merge:
  verify:
    - {{name: has-new, run: test -f new.txt}}
    - {{name: impossible, run: test -f missing.txt}}
"#,
        agent = agent.display()
    ));
    let (out, report) = run_plan(&repo, &plan, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let verify = report["result"]["verify"].as_array().unwrap();
    assert_eq!(verify[0]["name"], "has-new");
    assert_eq!(verify[0]["status"], "passed");
    assert_eq!(verify[1]["status"], "failed");
    assert!(report["result"]["commit"].is_string());
    repo.assert_untouched(&before);
}

#[test]
fn demo_runs_on_a_fresh_folder() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("demo");
    let out = braid_tests::braid(
        std::path::Path::new(crate::BIN),
        dir.path(),
        &["demo", "--dir", target.to_str().unwrap(), "--json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tasks = report["tasks"].as_array().unwrap();
    assert!(tasks.len() >= 3);
    for t in tasks {
        assert_eq!(t["status"], "succeeded");
        assert_eq!(t["attempts"].as_array().unwrap().len(), 3);
        // Each winner won for a visible reason, over at least one failed attempt.
        assert!(t["reason"].as_str().unwrap().contains("passing"));
    }
    let failed = tasks
        .iter()
        .flat_map(|t| t["attempts"].as_array().unwrap())
        .filter(|a| a["status"] == "failed")
        .count();
    assert!(failed >= 3, "{failed} failed attempts");
    assert!(
        tasks
            .iter()
            .any(|t| !t["deps"].as_array().unwrap().is_empty())
    );
    assert_eq!(report["result"]["verify"][0]["status"], "passed");
    assert!(report["result"]["conflicts"].as_array().unwrap().is_empty());
}

#[test]
fn ctrl_c_stops_agents_writes_the_report_and_exits_130() {
    let repo = TestRepo::init();
    let before = repo.snapshot();
    let pids = repo.out().join("pids");
    let agent = repo.script(
        "agent.sh",
        &format!(
            "echo $$ >> \"{}\"\necho started > started.txt\nsh -c 'sleep 300; :' {}\n",
            pids.display(),
            repo.tag()
        ),
    );
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
sandbox: {{writable: [out]}}
tasks:
  - {{id: long, prompt: wait, attempts: 2, agent: {{command: ["{agent}"]}}}}
  - {{id: later, prompt: never, deps: [long], agent: {{command: ["{agent}"]}}}}
"#,
        agent = agent.display()
    ));
    let child = braid_tests::command(crate::BIN, repo.outside())
        .args(["run", plan.to_str().unwrap(), "--workers", "2", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_to_string(&pids)
        .map(|p| p.lines().count())
        .unwrap_or(0)
        < 2
    {
        assert!(std::time::Instant::now() < deadline, "agents did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let status = braid_tests::command("kill", repo.outside())
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "cancelled");
    assert_eq!(task(&report, "long")["status"], "cancelled");
    assert_eq!(task(&report, "later")["status"], "cancelled");
    for n in [1, 2] {
        let a = attempt(task(&report, "long"), n);
        assert_eq!(a["status"], "cancelled");
        // What the agent had done before it was stopped is kept.
        assert!(a["commit"].is_string(), "{a:#}");
    }
    let run = report["run"].as_str().unwrap();
    assert!(
        repo.git_dir()
            .join("braid/runs")
            .join(run)
            .join("report.json")
            .exists()
    );
    assert_eq!(repo.survivors(), Vec::<String>::new(), "agents survived");
    repo.assert_untouched(&before);
}

#[test]
fn a_task_whose_deps_conflict_is_blocked_and_the_conflict_reported() {
    let repo = TestRepo::init();
    let before = repo.snapshot();
    let agent = repo.script("agent.sh", "echo \"$BRAID_TASK_ID\" > README.md\n");
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
defaults: {{agent: {{command: ["{agent}"]}}}}
tasks:
  - {{id: x, prompt: one}}
  - {{id: y, prompt: two}}
  - {{id: z, prompt: three, deps: [x, y]}}
"#,
        agent = agent.display()
    ));
    let (out, report) = run_plan(&repo, &plan, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let z = task(&report, "z");
    assert_eq!(z["status"], "blocked");
    assert_eq!(z["base"], serde_json::Value::Null);
    assert!(z["reason"].as_str().unwrap().contains("conflict"), "{z:#}");
    let conflicts = report["result"]["conflicts"].as_array().unwrap();
    let stages: Vec<&str> = conflicts
        .iter()
        .map(|c| c["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["dependencies", "integration"], "{conflicts:#?}");
    for c in conflicts {
        assert_eq!(c["tasks"], serde_json::json!(["x", "y"]));
        assert_eq!(c["paths"], serde_json::json!(["README.md"]));
    }
    repo.assert_untouched(&before);
}

/// `--workers 0 --listen`: the run waits for workers to connect over the socket, and one
/// that does (the worker runtime, from this test's process) runs every attempt.
#[test]
fn workers_that_connect_to_listen_run_the_plan() {
    let repo = TestRepo::init();
    let before = repo.snapshot();
    let plan = repo.plan(
        r#"version: 1
repo: repo
tasks:
  - id: note
    prompt: Write a note.
    attempts: 2
    agent: {command: [sh, -c, 'echo "note $BRAID_ATTEMPT" > note.txt']}
"#,
    );
    let socket = repo.outside().join("coordinator.sock");
    let listen = format!("unix:{}", socket.display());
    let run = braid_tests::command(BIN, repo.outside())
        .args(["run", plan.to_str().unwrap(), "--json", "--workers", "0"])
        .args(["--listen", &listen])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !socket.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no socket at {listen}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let options = braid_worker::runtime::WorkerOptions {
        name: "remote-one".into(),
        slots: 2,
        labels: Default::default(),
        cache: repo.cache(),
        borrow: Default::default(),
        auth: Default::default(),
        reconnect: false,
        drain: Default::default(),
        trust: Default::default(),
    };
    runtime
        .block_on(braid_worker::runtime::serve(
            &listen,
            options,
            tokio_util::sync::CancellationToken::new(),
        ))
        .expect("the worker served the run");
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["workers"].as_array().unwrap().len(), 1);
    assert_eq!(report["workers"][0]["name"], "remote-one");
    let note = task(&report, "note");
    assert_eq!(note["status"], "succeeded");
    assert_eq!(note["attempts"].as_array().unwrap().len(), 2);
    assert!(!socket.exists(), "the socket is removed when the run ends");
    repo.assert_untouched(&before);
}

#[test]
fn listen_takes_only_a_unix_socket_and_workers_0_needs_it() {
    let repo = TestRepo::init();
    let plan = repo.plan("version: 1\nrepo: repo\ntasks:\n  - id: a\n    prompt: p\n    agent: {command: [\"true\"]}\n");
    let plan = plan.to_str().unwrap();
    let before = repo.snapshot();
    for (args, message) in [
        (
            vec!["--listen", "127.0.0.1:7000"],
            "give a Unix socket as unix:/path/to.sock",
        ),
        (
            vec!["--workers", "0"],
            "--workers too unless --listen is given",
        ),
    ] {
        let mut all = vec!["run", plan];
        all.extend(args);
        let out = braid(Path::new(BIN), repo.outside(), &all);
        assert_eq!(out.status.code(), Some(2), "{all:?}");
        assert!(stderr(&out).contains(message), "{all:?}: {}", stderr(&out));
    }
    assert!(repo.braid_refs().is_empty());
    assert!(
        !repo.git_dir().join("braid").exists(),
        "nothing was written"
    );
    repo.assert_untouched(&before);
}
