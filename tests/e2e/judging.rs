//! Judging best-of-N through the binary: checks against the base, path-scoped checks,
//! scores, the three selection policies, feedback retries, `braid compare`, and the HTML
//! report in headless Chromium.

use std::path::Path;

use braid_tests::{TestRepo, braid, stderr, stdout};
use serde_json::{Value, json};

use crate::{BIN, attempt, run_plan, task};

fn run_of(report: &Value) -> String {
    report["run"].as_str().expect("run id").to_owned()
}

fn check<'a>(attempt: &'a Value, name: &str) -> &'a Value {
    attempt["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {attempt:#}"))
}

#[test]
fn a_check_failing_on_the_base_is_not_blamed_unless_baseline_is_off() {
    let repo = TestRepo::init();
    repo.commit(&[("notes.txt", "FIXME: tidy up\n")], "notes with a fixme");
    let before = repo.snapshot();
    // Every attempt writes out.txt; attempt 2 also fixes the FIXME the base already had.
    let agent = repo.script(
        "agent.sh",
        r#"echo done > out.txt
if [ "$BRAID_TASK_ID:$BRAID_ATTEMPT" = "tidy:2" ]; then echo "tidied" > notes.txt; fi
"#,
    );
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
defaults:
  agent: {{command: ["{agent}"]}}
tasks:
  - id: tidy
    prompt: write out.txt
    attempts: 2
    checks:
      - {{name: lint, run: "! grep -q FIXME notes.txt"}}
      - {{name: unit, run: "test -f out.txt", baseline: false}}
  - id: strict
    prompt: write out.txt
    checks:
      - {{name: lint, run: "! grep -q FIXME notes.txt", baseline: false}}
"#,
        agent = agent.display()
    ));
    let (out, report) = run_plan(&repo, &plan, &["--workers", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    let tidy = task(&report, "tidy");
    assert_eq!(tidy["status"], "succeeded");
    assert_eq!(tidy["baseline"][0]["name"], "lint");
    assert_eq!(tidy["baseline"][0]["status"], "failed");
    // Attempt 1 left the base's failure as it was: not blamed, so it passes.
    let first = attempt(tidy, 1);
    assert_eq!(first["status"], "succeeded", "{first:#}");
    assert_eq!(check(first, "lint")["status"], "pre_existing");
    assert!(
        check(first, "lint")["note"]
            .as_str()
            .unwrap()
            .contains("fails on the base"),
        "{first:#}"
    );
    assert_eq!(check(first, "unit")["status"], "passed");
    // Attempt 2 fixed it, and wins over the one that did not.
    let second = attempt(tidy, 2);
    assert_eq!(check(second, "lint")["status"], "passed");
    assert_eq!(tidy["winner"], 2);
    assert_eq!(
        tidy["reason"],
        "only attempt passing lint (the base fails it; the others still do)"
    );

    // With `baseline: false` the same failure is the attempt's.
    let strict = task(&report, "strict");
    assert_eq!(strict["status"], "failed");
    let only = attempt(strict, 1);
    assert_eq!(only["status"], "failed");
    assert_eq!(check(only, "lint")["status"], "failed");
    assert_eq!(only["error"], "check lint did not pass");

    let md = braid(Path::new(BIN), &repo.path, &["report", &run_of(&report)]);
    assert!(stdout(&md).contains("lint pre_existing"), "{}", stdout(&md));
    repo.assert_untouched(&before);
}

#[test]
fn path_scoped_checks_run_only_when_their_paths_are_touched() {
    let repo = TestRepo::init();
    let before = repo.snapshot();
    let agent = repo.script(
        "agent.sh",
        r#"case "$BRAID_TASK_ID" in
  code) mkdir -p src && echo "fn main() {}" > src/main.rs ;;
  docs) mkdir -p docs && echo "Guide" > docs/guide.md ;;
esac
"#,
    );
    // `guide` would fail wherever docs/guide.md is missing, so a pass for `code` could only
    // mean it never ran.
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
defaults:
  agent: {{command: ["{agent}"]}}
  checks:
    - name: guide
      run: grep -q Guide docs/guide.md
      paths: ["docs/**"]
      baseline: false
tasks:
  - {{id: code, prompt: add src/main.rs}}
  - {{id: docs, prompt: add the guide}}
merge:
  verify:
    - {{name: docs-built, run: "test -f docs/guide.md", paths: ["docs/**"]}}
    - {{name: never, run: "exit 1", paths: ["nothing/**"]}}
"#,
        agent = agent.display()
    ));
    let (out, report) = run_plan(&repo, &plan, &["--workers", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let code = attempt(task(&report, "code"), 1);
    assert_eq!(code["status"], "succeeded");
    assert_eq!(check(code, "guide")["status"], "skipped");
    assert_eq!(
        check(code, "guide")["note"],
        "the change touches none of docs/**"
    );
    assert_eq!(check(code, "guide")["duration_ms"], 0);
    let docs = attempt(task(&report, "docs"), 1);
    assert_eq!(check(docs, "guide")["status"], "passed");
    assert_eq!(check(docs, "guide")["exit_code"], 0);
    // For verification, the union of the winners' diffs counts.
    let verify = report["result"]["verify"].as_array().unwrap();
    assert_eq!(verify[0]["name"], "docs-built");
    assert_eq!(verify[0]["status"], "passed");
    assert_eq!(verify[1]["name"], "never");
    assert_eq!(verify[1]["status"], "skipped");
    assert_eq!(report["status"], "succeeded");
    repo.assert_untouched(&before);
}

/// A run of task `pick` whose three attempts score 0.5, 0.93 and "high".
fn scored_run(repo: &TestRepo) -> Value {
    let agent = repo.script(
        "agent.sh",
        r#"case "$BRAID_ATTEMPT" in
  1) printf 'warming up\n0.5\n' > score.txt ;;
  2) printf '0.93\n' > score.txt; echo "extra line" >> notes.txt ;;
  3) printf 'high\n' > score.txt ;;
esac
"#,
    );
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
defaults:
  agent: {{command: ["{agent}"]}}
tasks:
  - id: pick
    prompt: do your best
    attempts: 3
    score: {{run: cat score.txt}}
"#,
        agent = agent.display()
    ));
    let (out, report) = run_plan(repo, &plan, &["--workers", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    report
}

#[test]
fn the_highest_score_wins_and_a_bad_score_is_a_recorded_error() {
    let repo = TestRepo::init();
    let before = repo.snapshot();
    let report = scored_run(&repo);
    let pick = task(&report, "pick");
    // Attempt 2 has the largest diff, but the highest score.
    assert_eq!(pick["winner"], 2);
    assert_eq!(
        pick["reason"],
        "highest score 0.93 of 3 passing attempts (next: 0.5)"
    );
    assert_eq!(attempt(pick, 1)["score"], 0.5);
    assert_eq!(attempt(pick, 2)["score"], 0.93);
    let bad = attempt(pick, 3);
    assert_eq!(bad["status"], "succeeded");
    assert_eq!(bad["score"], Value::Null);
    assert_eq!(
        bad["score_error"],
        "the score command's last line \"high\" is not a number"
    );
    repo.assert_untouched(&before);
}

#[test]
fn compare_prints_a_table_a_similarity_matrix_and_json() {
    let repo = TestRepo::init();
    let report = scored_run(&repo);
    let run = run_of(&report);
    let out = braid(Path::new(BIN), &repo.path, &["compare", &run, "pick"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with(&format!("run {run} task pick (select: best, base ")));
    let header: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "attempt", "status", "agent", "score", "files", "lines", "time", "tokens", "cost",
            "turns", "note"
        ]
    );
    let row = |n: &str| {
        lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(n))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_else(|| panic!("no row {n} in\n{text}"))
    };
    assert_eq!(
        row("1")[..7],
        ["1", "succeeded", "command", "0.5", "1", "+2", "-0"]
    );
    assert_eq!(
        row("2")[..8],
        ["2", "★", "succeeded", "command", "0.93", "2", "+2", "-0"]
    );
    assert_eq!(
        row("3")[..7],
        ["3", "succeeded", "command", "error", "1", "+1", "-0"]
    );
    assert!(
        text.contains("\nwinner: attempt 2: highest score 0.93 of 3 passing attempts"),
        "{text}"
    );
    assert!(
        text.contains("similarity (share of changed lines in common):"),
        "{text}"
    );
    // No two attempts wrote the same line.
    let matrix_row: Vec<&str> = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("2 "))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(matrix_row, ["2", "0.00", "1.00", "0.00"]);

    let out = braid(
        Path::new(BIN),
        &repo.path,
        &["compare", &run, "pick", "--json", "--diff"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["winner"], 2);
    assert_eq!(json["select"], "best");
    let rows = json["attempts"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1]["score"], 0.93);
    assert_eq!(rows[1]["winner"], true);
    assert_eq!(rows[1]["files"], 2);
    assert!(
        rows[1]["diff"].as_str().unwrap().contains("+0.93"),
        "{:#}",
        rows[1]
    );
    let sim = json["similarity"].as_array().unwrap();
    for (i, row) in sim.iter().enumerate() {
        assert_eq!(row[i], 1.0);
    }
    assert_eq!(sim[0][1], sim[1][0]);

    let out = braid(Path::new(BIN), &repo.path, &["compare", &run, "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("has no task \"nope\"; its tasks are pick"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn first_pass_cancels_the_other_attempts_and_leaves_nothing_running() {
    let repo = TestRepo::init();
    let before = repo.snapshot();
    let pids = repo.out();
    // Attempts 2 and 3 would run for a minute; attempt 1 passes once both have started.
    let agent = repo.script(
        "agent.sh",
        &format!(
            r#"pids="{pids}"
if [ "$BRAID_ATTEMPT" = 1 ]; then
  i=0
  while [ ! -f "$pids/2" ] || [ ! -f "$pids/3" ]; do
    i=$((i+1)); [ $i -gt 200 ] && break; sleep 0.05
  done
  echo done > out.txt
else
  echo $$ > "$pids/$BRAID_ATTEMPT"
  sh -c 'sleep 60; :' {tag}
  echo late > out.txt
fi
"#,
            pids = pids.display(),
            tag = repo.tag()
        ),
    );
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
sandbox: {{writable: [out]}}
defaults:
  agent: {{command: ["{agent}"]}}
tasks:
  - id: race
    prompt: write out.txt
    attempts: 3
    select: first-pass
    checks:
      - {{name: unit, run: "test -f out.txt", baseline: false}}
"#,
        agent = agent.display()
    ));
    let (out, report) = run_plan(&repo, &plan, &["--workers", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let race = task(&report, "race");
    assert_eq!(race["winner"], 1);
    assert!(
        race["reason"]
            .as_str()
            .unwrap()
            .starts_with("first attempt to pass at "),
        "{race:#}"
    );
    for n in [2, 3] {
        let a = attempt(race, n);
        assert_eq!(a["status"], "cancelled", "{a:#}");
        assert_eq!(a["error"], "cancelled: attempt 1 passed first");
        assert!(pids.join(n.to_string()).is_file(), "attempt {n} started");
    }
    assert_eq!(
        repo.survivors(),
        Vec::<String>::new(),
        "cancelled agents still run"
    );
    repo.assert_untouched(&before);
}

#[test]
fn vote_takes_the_largest_group_that_made_the_same_change() {
    let repo = TestRepo::init();
    let before = repo.snapshot();
    // 1, 3 and 4 write the same line but for whitespace; 2 writes another one, and would
    // win on score under `best`.
    let agent = repo.script(
        "agent.sh",
        r#"case "$BRAID_ATTEMPT" in
  1) printf 'value = 1\n' > answer.txt ;;
  2) printf 'value = 2\n' > answer.txt ;;
  3) printf 'value  =  1\n\n' > answer.txt ;;
  4) printf '  value = 1\n' > answer.txt ;;
esac
"#,
    );
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
defaults:
  agent: {{command: ["{agent}"]}}
tasks:
  - id: ask
    prompt: what is the value?
    attempts: 4
    select: vote
    score: {{run: "if grep -q 2 answer.txt; then echo 9; else echo 1; fi"}}
"#,
        agent = agent.display()
    ));
    let (out, report) = run_plan(&repo, &plan, &["--workers", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let ask = task(&report, "ask");
    let winner = ask["winner"].as_u64().unwrap();
    assert!([1, 3, 4].contains(&winner), "{ask:#}");
    assert_eq!(ask["select"], "vote");
    assert!(
        ask["reason"].as_str().unwrap().starts_with(
            "largest agreeing group: attempts 1, 3, 4 made the same change (3 of 4 passing)"
        ),
        "{ask:#}"
    );
    repo.assert_untouched(&before);
}

#[test]
fn a_feedback_retry_reads_the_failure_and_passes() {
    let repo = TestRepo::init();
    let before = repo.snapshot();
    let seen = repo.out().join("feedback.md");
    let agent = repo.script(
        "agent.sh",
        &format!(
            r#"if [ -n "$BRAID_FEEDBACK_FILE" ]; then
  cp "$BRAID_FEEDBACK_FILE" "{seen}"
  if grep -q "expected the word fixed" "$BRAID_FEEDBACK_FILE"; then echo fixed > out.txt; fi
else
  echo "first try" > out.txt
fi
"#,
            seen = seen.display()
        ),
    );
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
sandbox: {{writable: [out]}}
defaults:
  agent: {{command: ["{agent}"]}}
tasks:
  - id: fix
    prompt: write out.txt
    retries: 1
    checks:
      - name: unit
        run: 'grep -q fixed out.txt || {{ echo "expected the word fixed in out.txt"; exit 3; }}'
        baseline: false
"#,
        agent = agent.display()
    ));
    let (out, report) = run_plan(&repo, &plan, &["--workers", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let fix = task(&report, "fix");
    let first = attempt(fix, 1);
    assert_eq!(first["status"], "failed");
    assert_eq!(check(first, "unit")["exit_code"], 3);
    let retry = attempt(fix, 2);
    assert_eq!(retry["continues"], 1);
    assert_eq!(retry["status"], "succeeded");
    assert_eq!(retry["base"], first["commit"]);
    // Its diff is measured against the task's base, not the attempt it continues.
    assert_eq!(
        retry["diff"],
        json!({"files": 1, "insertions": 1, "deletions": 0})
    );
    assert_eq!(fix["winner"], 2);
    let feedback = std::fs::read_to_string(&seen).expect("the retry saw its feedback");
    assert!(
        feedback.contains("## Check `unit`: failed with exit code 3"),
        "{feedback}"
    );
    assert!(
        feedback.contains("expected the word fixed in out.txt"),
        "{feedback}"
    );
    let run = run_of(&report);
    assert_eq!(
        repo.show(&format!("braid/{run}/fix/2"), "out.txt")
            .as_deref(),
        Some("fixed\n")
    );
    let retried = report["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["event"] == "retry" && e["detail"] == "attempt 2 continues attempt 1");
    assert!(retried, "{:#}", report["timeline"]);
    repo.assert_untouched(&before);
}

/// Headless Chromium, quiet and offline, with its own profile in `dir`.
fn chromium(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec![
        "--headless".to_owned(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--no-first-run".into(),
        "--hide-scrollbars".into(),
        format!("--user-data-dir={}", dir.join("profile").display()),
        // Any name resolves to nothing: a request can be seen in the log but goes nowhere.
        "--host-resolver-rules=MAP * ~NOTFOUND".into(),
    ];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    braid_tests::command("chromium", dir)
        .args(&all)
        .output()
        .expect("chromium is installed (.ci/run installs Debian's chromium)")
}

/// The URLs a page asked for, from Chromium's network log. Chromium's own background
/// requests carry no origin ("not an origin"); a page's requests carry the page's.
fn page_requests(netlog: &Path) -> Vec<String> {
    let log: Value = serde_json::from_str(&std::fs::read_to_string(netlog).expect("net log"))
        .expect("a whole net log");
    let start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].clone();
    log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == start)
        .filter(|e| {
            e["params"]["initiator"]
                .as_str()
                .is_some_and(|i| i != "not an origin")
        })
        .map(|e| e["params"]["url"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn the_html_report_is_self_contained_and_renders_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let out = braid(
        Path::new(BIN),
        dir.path(),
        &["demo", "--dir", demo.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let repo = demo.join("repo");
    let out = braid(
        Path::new(BIN),
        &repo,
        &["report", "latest", "--format", "html"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let page = std::path::PathBuf::from(stdout(&out).trim());
    assert!(page.ends_with("report.html"), "{}", page.display());
    assert!(page.starts_with(repo.join(".git/braid/runs")));
    let json = page.with_file_name("report.json");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();

    // The detector sees a page that does load something.
    let control = dir.path().join("control.html");
    std::fs::write(
        &control,
        "<html><body><img src=\"http://example.invalid/x.png\"></body></html>",
    )
    .unwrap();
    let control_log = dir.path().join("control.netlog.json");
    chromium(
        dir.path(),
        &[
            &format!("--log-net-log={}", control_log.display()),
            "--dump-dom",
            &format!("file://{}", control.display()),
        ],
    );
    assert_eq!(
        page_requests(&control_log),
        ["http://example.invalid/x.png"]
    );

    let netlog = dir.path().join("report.netlog.json");
    let dom = chromium(
        dir.path(),
        &[
            &format!("--log-net-log={}", netlog.display()),
            "--dump-dom",
            &format!("file://{}", page.display()),
        ],
    );
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert_eq!(
        page_requests(&netlog),
        Vec::<String>::new(),
        "the report made network requests"
    );
    let tasks = report["tasks"].as_array().unwrap();
    assert!(dom.contains("<svg class=\"dag\""), "{dom}");
    for t in tasks {
        let node = format!(
            "<g class=\"node\" data-task=\"{}\" data-status=\"{}\">",
            t["id"].as_str().unwrap(),
            t["status"].as_str().unwrap()
        );
        assert!(dom.contains(&node), "{node} missing");
    }
    assert_eq!(
        dom.matches("<table class=\"attempts\">").count(),
        tasks.len()
    );
    assert_eq!(
        dom.matches("<table class=\"similarity\">").count(),
        tasks.len()
    );
    assert!(dom.matches("<details class=\"diff\">").count() >= 6);
    assert!(dom.contains("<table class=\"verify\">"));
    assert!(dom.contains("class=\"conflicts\""));
    let runs = tasks
        .iter()
        .flat_map(|t| t["attempts"].as_array().unwrap())
        .count();
    assert_eq!(dom.matches("<g class=\"run\"").count(), runs);
    assert!(dom.contains(">w1 slot 1</text>"), "timeline lanes");

    let shot = dir.path().join("report.png");
    chromium(
        dir.path(),
        &[
            "--window-size=1300,2000",
            &format!("--screenshot={}", shot.display()),
            &format!("file://{}", page.display()),
        ],
    );
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
}

#[test]
fn a_check_that_passes_on_the_base_with_baseline_off_is_a_warning() {
    let repo = TestRepo::init();
    let plan = repo.plan(
        r#"version: 1
repo: repo
tasks:
  - id: t
    prompt: Write out.txt.
    attempts: 2
    agent: {command: [sh, -c, "echo x > out.txt"]}
    checks:
      - {name: decides, run: test -f out.txt, baseline: false}
      - {name: always, run: test -f README.md, baseline: false}
"#,
    );
    let (out, report) = run_plan(&repo, &plan, &[]);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    let warnings: Vec<&str> = report["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("check \"always\" of task \"t\" passes on the base")
            && warnings[0].contains("cannot tell attempts apart"),
        "{warnings:?}"
    );
    assert!(
        stderr(&out).contains("warning: check \"always\""),
        "{}",
        stderr(&out)
    );
    // The check that decides the task fails on the base, as it should: no warning for it,
    // and the attempts that pass it win.
    assert_eq!(task(&report, "t")["status"], "succeeded");
    assert!(
        task(&report, "t")["baseline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "decides" && c["status"] == "failed")
    );
}
