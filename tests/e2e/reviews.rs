//! `select: judge` through the binary: a reviewing agent (a command) compares passing
//! attempts in both orders; a pick that survives the swap wins, one that flips is a tie
//! settled by `best`; the report keeps every verdict and `braid compare` shows them.

use std::path::Path;

use braid_tests::{TestRepo, braid, stdout};

use crate::{BIN, run_plan, task};

/// A plan of `attempts` attempts, each writing `out.txt` with its number (attempt 2 writes
/// one line more, so `best` prefers the others), judged by `judge`.
fn judged_plan(
    repo: &TestRepo,
    attempts: u32,
    judge: &Path,
    max_pairs: Option<u32>,
) -> std::path::PathBuf {
    let max = max_pairs
        .map(|m| format!(", max_pairs: {m}"))
        .unwrap_or_default();
    repo.plan(&format!(
        r#"version: 1
repo: repo
tasks:
  - id: pick
    prompt: Write out.txt.
    attempts: {attempts}
    agent: {{command: [sh, -c, 'echo "attempt $BRAID_ATTEMPT" > out.txt; [ "$BRAID_ATTEMPT" = 2 ] && echo more >> out.txt; true']}}
    checks: [{{name: has, run: test -f out.txt, baseline: false}}]
    select: judge
    judge: {{agent: {{command: ["{}"]}}, criteria: "Prefer attempt 3."{max}}}
"#,
        judge.display()
    ))
}

#[test]
fn a_judge_that_prefers_attempt_3_in_both_orders_picks_it() {
    let repo = TestRepo::init();
    let judge = repo.script(
        "judge.sh",
        r#"if grep -q "attempt 3" "$BRAID_CANDIDATE_A"; then w=A
elif grep -q "attempt 3" "$BRAID_CANDIDATE_B"; then w=B
else w=tie; fi
grep -q "Prefer attempt 3." "$BRAID_PROMPT_FILE" || w=confused
printf '{"winner": "%s", "reason": "attempt 3 is what the criteria ask for"}' $w > "$BRAID_VERDICT_FILE"
touch planted.txt 2>/dev/null
true
"#,
    );
    let plan = judged_plan(&repo, 3, &judge, None);
    let (out, report) = run_plan(&repo, &plan, &["--workers", "2"]);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    let t = task(&report, "pick");
    assert_eq!(t["winner"], 3, "{t:#}");
    assert_eq!(t["select"], "judge");
    let reason = t["reason"].as_str().unwrap();
    assert!(
        reason.contains("the judge's pick: it won 2 of its 2 pairs in both orders"),
        "{reason}"
    );
    let judge = &t["judge"];
    assert_eq!(judge["pairs_possible"], 3);
    assert_eq!(judge["pairs_judged"], 3);
    assert_eq!(judge["tie_broken_by_best"], false);
    let verdicts = judge["verdicts"].as_array().unwrap();
    assert_eq!(verdicts.len(), 6, "every pair in both orders: {judge:#}");
    for v in verdicts {
        assert_eq!(
            v["reason"], "attempt 3 is what the criteria ask for",
            "{v:#}"
        );
        let (a, b) = (v["a"].as_u64().unwrap(), v["b"].as_u64().unwrap());
        let expected = if a == 3 {
            "A"
        } else if b == 3 {
            "B"
        } else {
            "tie"
        };
        assert_eq!(v["winner"], expected, "{v:#}");
    }
    let orders: std::collections::BTreeSet<(u64, u64)> = verdicts
        .iter()
        .map(|v| (v["a"].as_u64().unwrap(), v["b"].as_u64().unwrap()))
        .collect();
    assert_eq!(orders.len(), 6, "each order once: {orders:?}");
    assert_eq!(judge["standings"][0]["n"], 3);
    assert_eq!(judge["standings"][0]["wins"], 2);
    // Verdict jobs are not attempts, and the judge could not write its worktree.
    assert_eq!(t["attempts"].as_array().unwrap().len(), 3);
    assert!(!repo.path.join("planted.txt").exists());
    // `braid compare` shows the tournament.
    let run = report["run"].as_str().unwrap();
    let compared = braid(Path::new(BIN), &repo.path, &["compare", run, "pick"]);
    let text = stdout(&compared);
    assert!(text.contains("judge: command"), "{text}");
    assert!(text.contains("#3 (A) vs #1 (B): A"), "{text}");
    assert!(text.contains("#1 (A) vs #3 (B): B"), "{text}");
    let json = braid(
        Path::new(BIN),
        &repo.path,
        &["compare", run, "pick", "--json"],
    );
    let value: serde_json::Value = serde_json::from_str(&stdout(&json)).expect("json");
    assert_eq!(value["judge"]["verdicts"].as_array().unwrap().len(), 6);
}

#[test]
fn a_judge_whose_pick_flips_with_the_order_is_a_tie_settled_by_best() {
    let repo = TestRepo::init();
    // Always the first one shown.
    let judge = repo.script(
        "judge.sh",
        r#"printf '{"winner": "A", "reason": "the first looks fine"}' > "$BRAID_VERDICT_FILE"
"#,
    );
    let plan = judged_plan(&repo, 2, &judge, None);
    let (out, report) = run_plan(&repo, &plan, &["--workers", "2"]);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    let t = task(&report, "pick");
    // Attempt 2 wrote more: `best` prefers attempt 1.
    assert_eq!(t["winner"], 1, "{t:#}");
    let reason = t["reason"].as_str().unwrap();
    assert!(reason.contains("a tie in the judge's eyes"), "{reason}");
    assert!(
        reason.contains("the pick flipped with the order in 1 of 1 pair"),
        "{reason}"
    );
    assert!(
        reason.contains("settled by best: smallest diff"),
        "{reason}"
    );
    let judge = &t["judge"];
    assert_eq!(judge["tie_broken_by_best"], true);
    assert_eq!(judge["pairs"][0]["flipped"], true);
    assert_eq!(judge["pairs"][0]["winner"], serde_json::Value::Null);
}

#[test]
fn with_one_passing_attempt_the_judge_is_not_called() {
    let repo = TestRepo::init();
    let calls = repo.out().join("calls");
    let judge = repo.script(
        "judge.sh",
        &format!(
            "echo called >> {}\necho '{{\"winner\": \"A\"}}' > \"$BRAID_VERDICT_FILE\"\n",
            calls.display()
        ),
    );
    let plan = judged_plan(&repo, 1, &judge, None);
    let (out, report) = run_plan(&repo, &plan, &[]);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    let t = task(&report, "pick");
    assert_eq!(t["winner"], 1);
    assert!(
        t["reason"]
            .as_str()
            .unwrap()
            .contains("the judge was not called")
    );
    assert!(t.get("judge").is_none(), "{t:#}");
    assert!(!calls.exists());
}

#[test]
fn max_pairs_caps_the_verdicts_and_a_judge_without_an_answer_is_said() {
    let repo = TestRepo::init();
    // Writes nothing, and says nothing a verdict could be read from.
    let judge = repo.script("judge.sh", "echo thinking\n");
    let plan = judged_plan(&repo, 4, &judge, Some(2));
    let (out, report) = run_plan(&repo, &plan, &["--workers", "2"]);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    let t = task(&report, "pick");
    let judge = &t["judge"];
    assert_eq!(judge["pairs_possible"], 6);
    assert_eq!(judge["pairs_judged"], 2, "{judge:#}");
    let verdicts = judge["verdicts"].as_array().unwrap();
    assert_eq!(verdicts.len(), 4);
    for v in verdicts {
        assert!(
            v["error"].as_str().unwrap().contains("wrote no verdict"),
            "{v:#}"
        );
    }
    let reason = t["reason"].as_str().unwrap();
    assert!(reason.contains("2 of 6 pairs judged"), "{reason}");
    assert!(reason.contains("4 of 4 verdicts missing"), "{reason}");
    assert!(reason.contains("settled by best"), "{reason}");
}

#[test]
fn select_judge_without_a_judge_is_a_located_error() {
    let repo = TestRepo::init();
    let plan = repo.plan(
        "version: 1\nrepo: repo\ntasks:\n  - id: a\n    prompt: p\n    agent: {command: [true]}\n    select: judge\n",
    );
    let out = braid(
        Path::new(BIN),
        repo.outside(),
        &["validate", plan.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = braid_tests::stderr(&out);
    assert!(
        err.contains("plan.yaml:7:13: task \"a\": `select: judge` needs a reviewing agent"),
        "{err}"
    );
}

#[test]
fn claude_judges_in_its_reply() {
    crate::agents::assert_installed("claude");
    let repo = TestRepo::init();
    let server = crate::agents::server_for(
        &repo,
        braid_tests::model::Script {
            command: Some("true".into()),
            final_text:
                "Both work; B is tidier.\n{\"winner\": \"B\", \"reason\": \"B is smaller\"}".into(),
            ..Default::default()
        },
    );
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
tasks:
  - id: pick
    prompt: Write out.txt.
    attempts: 2
    agent: {{command: [sh, -c, 'echo "attempt $BRAID_ATTEMPT" > out.txt']}}
    checks: [{{name: has, run: test -f out.txt, baseline: false}}]
    select: judge
    judge: {{agent: {}}}
"#,
        crate::agents::agent("claude", &server)
    ));
    let home = repo.outside().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let out = braid_tests::command(BIN, repo.outside())
        .args(["run", plan.to_str().unwrap(), "--json"])
        .env("BRAID_LOG", "warn")
        .env("BRAID_TEST_KEY", crate::agents::KEY)
        .env("HOME", &home)
        .output()
        .expect("braid runs");
    let report: serde_json::Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("{e}: {}", braid_tests::stderr(&out)));
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    let judge = &task(&report, "pick")["judge"];
    let verdicts = judge["verdicts"].as_array().expect("verdicts");
    assert_eq!(verdicts.len(), 2, "{judge:#}");
    for v in verdicts {
        assert_eq!(v["winner"], "B", "{v:#}");
        assert_eq!(v["reason"], "B is smaller");
        assert!(
            v["usage"]["input_tokens"].as_u64().unwrap_or(0) > 0,
            "{v:#}"
        );
    }
    // Always B: the pick flips with the order, a tie settled by best.
    assert_eq!(judge["pairs"][0]["flipped"], true);
    assert_eq!(judge["tie_broken_by_best"], true);
    assert_eq!(
        task(&report, "pick")["usage"]["input_tokens"],
        judge["usage"]["input_tokens"],
        "the command attempts report nothing; the task's spending is the judge's"
    );
}
