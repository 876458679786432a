//! Batch changes through the binary: one task fanned over the folders of a repository.

use std::path::Path;

use braid_tests::{TestRepo, braid, stderr, stdout};
use serde_json::json;

use crate::{BIN, run_plan, task};

/// A repository with two services (one Cargo, one npm) and a folder of tools.
fn services() -> TestRepo {
    let repo = TestRepo::init();
    repo.commit(
        &[
            ("services/auth/Cargo.toml", "[package]\nname = \"auth\"\n"),
            ("services/auth/src/lib.rs", "pub fn a() {}\n"),
            ("services/billing/package.json", "{\"name\": \"billing\"}\n"),
            ("tools/run.sh", "echo\n"),
        ],
        "two services",
    );
    repo
}

#[test]
fn a_task_fanned_over_folders_runs_once_for_each_and_its_dependents_wait_for_all() {
    let repo = services();
    let before = repo.snapshot();
    let plan = repo.plan(
        r#"version: 1
repo: repo
tasks:
  - id: migrate
    for_each: {dirs: "services/*"}
    prompt: "Leave a note in {{dir}}."
    touches: ["{{dir}}/**"]
    agent: {command: [sh, -c, 'echo "{{name}}" > {{dir}}/NOTE']}
    checks: [{name: noted, run: "test -f NOTE && test -f ../../tools/run.sh", cwd: "{{dir}}", paths: ["{{dir}}/**"]}]
  - id: after
    deps: [migrate]
    prompt: Sum the notes up.
    agent: {command: [sh, -c, 'cat services/auth/NOTE services/billing/NOTE > ALL']}
"#,
    );
    let shown = braid(
        Path::new(BIN),
        repo.outside(),
        &["validate", plan.to_str().unwrap()],
    );
    assert_eq!(shown.status.code(), Some(0), "{}", stderr(&shown));
    let text = stdout(&shown);
    for id in ["migrate.services-auth", "migrate.services-billing"] {
        assert!(text.contains(id), "{id} missing from:\n{text}");
    }
    let (out, report) = run_plan(&repo, &plan, &["--workers", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let ids: Vec<&str> = report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["migrate.services-auth", "migrate.services-billing", "after"]
    );
    assert_eq!(
        task(&report, "after")["deps"],
        json!(["migrate.services-auth", "migrate.services-billing"])
    );
    let result = report["result"]["branch"].as_str().unwrap();
    assert_eq!(
        repo.show(result, "services/auth/NOTE").as_deref(),
        Some("auth\n")
    );
    assert_eq!(repo.show(result, "ALL").as_deref(), Some("auth\nbilling\n"));
    // Each target's check ran on its own folder, scoped to it; the targets' `touches` do
    // not overlap.
    let checks = &task(&report, "migrate.services-billing")["attempts"][0]["checks"];
    assert_eq!(checks[0]["status"], "passed", "{checks:#}");
    assert!(report.get("overlaps").is_none(), "{:#}", report["overlaps"]);
    repo.assert_untouched(&before);
}

#[test]
fn markers_find_projects_and_a_glob_that_matches_nothing_is_a_located_error() {
    let repo = services();
    let before = repo.snapshot();
    let plan = |for_each: &str| {
        repo.plan(&format!(
            "version: 1\nrepo: repo\ntasks:\n  - id: bump\n    prompt: Bump {{{{name}}}}.\n    for_each: {for_each}\n    agent: {{command: [\"true\"]}}\n"
        ))
    };
    let marked = plan("{marker: package.json}");
    let shown = braid(
        Path::new(BIN),
        repo.outside(),
        &["validate", marked.to_str().unwrap()],
    );
    assert_eq!(shown.status.code(), Some(0), "{}", stderr(&shown));
    assert!(
        stdout(&shown).contains("bump.services-billing"),
        "{}",
        stdout(&shown)
    );
    assert!(
        !stdout(&shown).contains("bump.services-auth"),
        "{}",
        stdout(&shown)
    );

    let nothing = plan("{dirs: \"apps/*\"}");
    for command in ["validate", "run"] {
        let out = braid(
            Path::new(BIN),
            repo.outside(),
            &[command, nothing.to_str().unwrap()],
        );
        assert_eq!(out.status.code(), Some(2), "{command}: {}", stderr(&out));
        let said = stderr(&out);
        assert!(
            said.contains("plan.yaml:6:")
                && said.contains("`for_each: {dirs: \"apps/*\"}` matches no folder at the base"),
            "{command}: {said}"
        );
    }
    let both = plan("{dirs: \"services/*\", marker: Cargo.toml}");
    let out = braid(
        Path::new(BIN),
        repo.outside(),
        &["validate", both.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("exactly one of"), "{}", stderr(&out));
    repo.assert_untouched(&before);
}

#[test]
fn a_checks_folder_must_be_inside_the_worktree_when_it_runs() {
    let repo = services();
    let before = repo.snapshot();
    let outside = repo.outside().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("run.sh"), "planted\n").unwrap();
    // The agent swaps the folder the check runs in for a link out of the worktree.
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
tasks:
  - id: swap
    prompt: Replace the tools.
    agent: {{command: [sh, -c, 'rm -rf tools && ln -s {outside} tools']}}
    checks: [{{name: noted, run: "test -f run.sh", cwd: tools}}]
"#,
        outside = outside.display()
    ));
    let (out, report) = run_plan(&repo, &plan, &["--workers", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let check = &task(&report, "swap")["attempts"][0]["checks"][0];
    assert_eq!(check["status"], "failed", "{check:#}");
    assert!(
        check["note"]
            .as_str()
            .unwrap_or_default()
            .contains("not a folder inside the worktree"),
        "{check:#}"
    );
    let bad = repo.plan(
        "version: 1\nrepo: repo\ntasks:\n  - id: up\n    prompt: Up.\n    agent: {command: [\"true\"]}\n    checks: [{name: up, run: \"true\", cwd: ../elsewhere}]\n",
    );
    let out = braid(
        Path::new(BIN),
        repo.outside(),
        &["validate", bad.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("plan.yaml:7:")
            && stderr(&out)
                .contains("`cwd` \"../elsewhere\" must be a folder inside the repository"),
        "{}",
        stderr(&out)
    );
    repo.assert_untouched(&before);
}

#[test]
fn the_report_keeps_a_burndown_of_the_targets_and_why_each_unfinished_one_failed() {
    let repo = services();
    let before = repo.snapshot();
    let plan = repo.plan(
        r#"version: 1
repo: repo
tasks:
  - id: migrate
    for_each: {dirs: "services/*"}
    prompt: "Leave a note in {{dir}}."
    agent: {command: [sh, -c, 'test {{name}} = billing || echo ok > {{dir}}/NOTE; echo tried > {{dir}}/TRIED']}
    checks: [{name: noted, run: "test -f NOTE", cwd: "{{dir}}", baseline: false}]
"#,
    );
    let (out, report) = run_plan(&repo, &plan, &["--workers", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let burndown = &report["targets"];
    assert_eq!(burndown.as_array().map(Vec::len), Some(1), "{burndown:#}");
    let b = &burndown[0];
    assert_eq!(b["task"], "migrate");
    assert_eq!(
        (
            b["total"].as_u64(),
            b["succeeded"].as_u64(),
            b["failed"].as_u64()
        ),
        (Some(2), Some(1), Some(1)),
        "{b:#}"
    );
    let unfinished = &b["unfinished"][0];
    assert_eq!(unfinished["task"], "migrate.services-billing");
    assert_eq!(unfinished["dir"], "services/billing");
    assert_eq!(unfinished["status"], "failed");
    assert!(
        unfinished["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("no attempt passed"),
        "{unfinished:#}"
    );
    let md = std::fs::read_to_string(
        repo.git_dir()
            .join("braid/runs")
            .join(report["run"].as_str().unwrap())
            .join("report.md"),
    )
    .unwrap();
    assert!(
        md.contains("## Targets of `migrate`: 1 of 2 succeeded"),
        "{md}"
    );
    assert!(
        md.contains("`migrate.services-billing` (`services/billing`): failed"),
        "{md}"
    );
    repo.assert_untouched(&before);
}
