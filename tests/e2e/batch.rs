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

/// A monorepo of 12 projects of four kinds: Cargo, npm, Go and Python, three each, in
/// `services/`, `libs/` and `tools/`. `services/etl` carries a FIXME.
fn monorepo() -> TestRepo {
    let repo = TestRepo::init();
    let mut files: Vec<(String, String)> = Vec::new();
    let projects = [
        ("services/auth", "cargo"),
        ("services/billing", "cargo"),
        ("libs/core", "cargo"),
        ("services/web", "npm"),
        ("services/admin", "npm"),
        ("libs/ui", "npm"),
        ("services/gateway", "go"),
        ("services/search", "go"),
        ("tools/lint", "go"),
        ("services/ml", "python"),
        ("services/etl", "python"),
        ("tools/report", "python"),
    ];
    for (dir, kind) in projects {
        let name = dir.rsplit('/').next().unwrap();
        let (manifest, text, source, code) = match kind {
            "cargo" => (
                "Cargo.toml",
                format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n"),
                "src/lib.rs",
                "pub fn run() {}\n".to_owned(),
            ),
            "npm" => (
                "package.json",
                format!("{{\"name\": \"{name}\", \"version\": \"1.0.0\"}}\n"),
                "index.js",
                "module.exports = {};\n".to_owned(),
            ),
            "go" => (
                "go.mod",
                format!("module example.com/{name}\n\ngo 1.19\n"),
                "main.go",
                "package main\n\nfunc main() {}\n".to_owned(),
            ),
            _ => (
                "pyproject.toml",
                format!("[project]\nname = \"{name}\"\nversion = \"0.1.0\"\n"),
                "main.py",
                if name == "etl" {
                    "# FIXME: drop the old loader\n".to_owned()
                } else {
                    "print('ok')\n".to_owned()
                },
            ),
        };
        files.push((format!("{dir}/{manifest}"), text));
        files.push((format!("{dir}/{source}"), code));
    }
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    repo.commit(&files, "twelve projects");
    repo
}

/// The monorepo's batch: an OWNERS file in every service (found by glob), whose check
/// also wants no FIXME left, and Go 1.22 in every Go module (found by marker). `clean`
/// says whether the agent also removes FIXMEs.
fn monorepo_plan(repo: &TestRepo, clean: bool) -> std::path::PathBuf {
    let clean = if clean {
        " && sed -i /FIXME/d {{dir}}/*.py 2>/dev/null; true"
    } else {
        ""
    };
    repo.plan(&format!(
        r#"version: 1
name: owners
repo: repo
tasks:
  - id: owners
    for_each: {{dirs: "services/*"}}
    prompt: "Give {{{{dir}}}} an OWNERS file."
    agent: {{command: [sh, -c, 'echo "owner: team-{{{{name}}}}" > {{{{dir}}}}/OWNERS{clean}']}}
    checks:
      - {{name: owned, run: "grep -q '^owner: team-{{{{name}}}}$' OWNERS && ! grep -rq FIXME .", cwd: "{{{{dir}}}}", baseline: false}}
  - id: go
    for_each: {{marker: go.mod}}
    prompt: "Move {{{{dir}}}} to Go 1.22."
    agent: {{command: [sed, -i, 's/^go 1.19$/go 1.22/', '{{{{dir}}}}/go.mod']}}
    checks: [{{name: version, run: "grep -qx 'go 1.22' go.mod", cwd: "{{{{dir}}}}"}}]
"#
    ))
}

fn counts(burndown: &serde_json::Value) -> (u64, u64, u64) {
    (
        burndown["total"].as_u64().unwrap_or(0),
        burndown["succeeded"].as_u64().unwrap_or(0),
        burndown["failed"].as_u64().unwrap_or(0),
    )
}

#[test]
fn a_monorepo_batch_finds_its_targets_and_rerun_failed_runs_only_the_failure() {
    let repo = monorepo();
    let plan = monorepo_plan(&repo, false);
    let shown = braid(
        Path::new(BIN),
        repo.outside(),
        &["validate", plan.to_str().unwrap()],
    );
    assert_eq!(shown.status.code(), Some(0), "{}", stderr(&shown));
    let services = [
        "admin", "auth", "billing", "etl", "gateway", "ml", "search", "web",
    ];
    for id in services.iter().map(|s| format!("owners.services-{s}")) {
        assert!(stdout(&shown).contains(&id), "{id}: {}", stdout(&shown));
    }
    assert!(
        stdout(&shown).contains("go.tools-lint"),
        "{}",
        stdout(&shown)
    );
    assert!(
        !stdout(&shown).contains("go.libs-core") && !stdout(&shown).contains("owners.tools-"),
        "{}",
        stdout(&shown)
    );
    let before = repo.snapshot();
    let (out, first) = run_plan(&repo, &plan, &["--workers", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let run = first["run"].as_str().unwrap().to_owned();
    assert_eq!(
        counts(&first["targets"][0]),
        (8, 7, 1),
        "{:#}",
        first["targets"]
    );
    assert_eq!(
        counts(&first["targets"][1]),
        (3, 3, 0),
        "{:#}",
        first["targets"]
    );
    assert_eq!(first["targets"][0]["unfinished"][0]["dir"], "services/etl");
    repo.assert_untouched(&before);

    // The user's main moves on; the re-run still starts from the first run's base.
    repo.commit(
        &[("services/new/Cargo.toml", "[package]\nname = \"new\"\n")],
        "a new service",
    );
    let before = repo.snapshot();
    let fixed = monorepo_plan(&repo, true);
    let (out, again) = run_plan(&repo, &fixed, &["--workers", "2", "--rerun-failed", &run]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "re-running 1 of 11 task(s) of run {run} from its base"
        )) && stderr(&out).contains("carrying over 10 winner(s)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(again["base"], first["base"]);
    assert_eq!(again["rerun_of"], run.as_str());
    assert_eq!(
        counts(&again["targets"][0]),
        (8, 8, 0),
        "{:#}",
        again["targets"]
    );
    assert_eq!(
        counts(&again["targets"][1]),
        (3, 3, 0),
        "{:#}",
        again["targets"]
    );
    // Only the failed target ran: the rest are the first run's winners, attempts and all.
    let started: Vec<&str> = again["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "task_started")
        .map(|e| e["task"].as_str().unwrap())
        .collect();
    assert_eq!(started, ["owners.services-etl"], "{:#}", again["timeline"]);
    for t in first["tasks"].as_array().unwrap() {
        let id = t["id"].as_str().unwrap();
        let now = task(&again, id);
        if id == "owners.services-etl" {
            assert!(now.get("carried_from").is_none(), "{now:#}");
            assert_eq!(now["status"], "succeeded", "{now:#}");
            continue;
        }
        assert_eq!(now["carried_from"], run.as_str(), "{now:#}");
        assert_eq!(now["attempts"], t["attempts"], "{id}");
        assert_eq!(
            repo.git(&["rev-parse", now["branch"].as_str().unwrap()]),
            repo.git(&["rev-parse", t["branch"].as_str().unwrap()]),
            "{id}"
        );
    }
    let result = again["result"]["branch"].as_str().unwrap();
    for s in services {
        assert_eq!(
            repo.show(result, &format!("services/{s}/OWNERS")),
            Some(format!("owner: team-{s}\n")),
            "{s}"
        );
    }
    assert_eq!(
        repo.show(result, "services/etl/main.py").as_deref(),
        Some("")
    );
    assert!(
        repo.show(result, "tools/lint/go.mod")
            .unwrap()
            .contains("go 1.22")
    );
    assert_eq!(repo.show(result, "services/new/Cargo.toml"), None);
    repo.assert_untouched(&before);

    // Nothing left to run: said, and nothing runs.
    let out = braid(
        Path::new(BIN),
        repo.outside(),
        &[
            "run",
            fixed.to_str().unwrap(),
            "--rerun-failed",
            again["run"].as_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing to re-run"),
        "{}",
        stderr(&out)
    );
    let out = braid(
        Path::new(BIN),
        repo.outside(),
        &[
            "run",
            fixed.to_str().unwrap(),
            "--rerun-failed",
            "20200101-000000-dead",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no report for run"),
        "{}",
        stderr(&out)
    );
    repo.assert_untouched(&before);
}

/// A Cargo workspace (`cli` depends on `core`; `other` stands alone, and already fails its
/// check on the base) beside an npm workspace (`web` depends on `@acme/ui`).
fn workspaces() -> TestRepo {
    let repo = TestRepo::init();
    let krate = |name: &str, deps: &str| {
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n{deps}"
        )
    };
    let (core, cli, other) = (
        krate("core", ""),
        krate("cli", "core = { path = \"../core\" }\n"),
        krate("other", ""),
    );
    repo.commit(
        &[
            (
                "Cargo.toml",
                "[workspace]\nmembers = [\"crates/*\"]\nresolver = \"2\"\n",
            ),
            ("Cargo.lock", "# generated\nversion = 4\n"),
            ("crates/core/Cargo.toml", &core),
            ("crates/core/src/lib.rs", "pub fn core() {}\n"),
            ("crates/cli/Cargo.toml", &cli),
            ("crates/cli/src/main.rs", "fn main() {}\n"),
            ("crates/other/Cargo.toml", &other),
            ("crates/other/src/lib.rs", "\n"),
            ("crates/other/BROKEN", "since before\n"),
            (
                "package.json",
                "{\"name\": \"root\", \"private\": true, \"workspaces\": [\"packages/*\"]}\n",
            ),
            ("packages/ui/package.json", "{\"name\": \"@acme/ui\"}\n"),
            ("packages/ui/index.js", "module.exports = 1;\n"),
            (
                "packages/web/package.json",
                "{\"name\": \"web\", \"dependencies\": {\"@acme/ui\": \"*\"}}\n",
            ),
            ("docs/README.md", "docs\n"),
        ],
        "two workspaces",
    );
    repo
}

#[test]
fn a_per_package_check_runs_for_the_changed_package_its_dependents_and_all_on_a_lock_change() {
    let repo = workspaces();
    let before = repo.snapshot();
    let plan = repo.plan(
        r##"version: 1
repo: repo
defaults:
  checks:
    - {name: unit, per: package, run: 'test "$PWD" = "$(cd "$BRAID_WORKTREE/{{package_dir}}" && pwd)" && test ! -f BROKEN'}
tasks:
  - id: core
    prompt: Change core.
    agent: {command: [sh, -c, 'echo "pub fn more() {}" >> crates/core/src/lib.rs']}
  - id: lock
    prompt: Update the lock.
    agent: {command: [sh, -c, 'echo "# updated" >> Cargo.lock']}
  - id: ui
    prompt: Change the ui.
    agent: {command: [sh, -c, 'echo "// more" >> packages/ui/index.js']}
  - id: breaks
    prompt: Break the cli.
    agent: {command: [sh, -c, 'touch crates/cli/BROKEN']}
  - id: docs
    prompt: Write docs.
    agent: {command: [sh, -c, 'echo more >> docs/README.md']}
"##,
    );
    let (out, report) = run_plan(&repo, &plan, &["--workers", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let ran = |id: &str| -> Vec<(String, String, String)> {
        task(&report, id)["attempts"][0]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["package"].as_str().unwrap_or("-").to_owned(),
                    c["status"].as_str().unwrap().to_owned(),
                    c["affected"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let packages = |id: &str| -> Vec<String> { ran(id).into_iter().map(|(p, _, _)| p).collect() };
    assert_eq!(packages("core"), ["cli", "core"], "{:#?}", ran("core"));
    assert_eq!(ran("core")[0].2, "it depends on core");
    assert_eq!(
        ran("core")[1].2,
        "the change touches crates/core/src/lib.rs"
    );
    assert_eq!(task(&report, "core")["status"], "succeeded");
    // The lock file is the Cargo workspace's: all three crates, no npm package. `other`
    // failed on the base too, so the lock's attempt is not blamed for it.
    assert_eq!(
        packages("lock"),
        ["cli", "core", "other"],
        "{:#?}",
        ran("lock")
    );
    assert!(
        ran("lock")[0].2.contains("Cargo.lock changed"),
        "{:#?}",
        ran("lock")
    );
    assert_eq!(ran("lock")[2].1, "pre_existing", "{:#?}", ran("lock"));
    assert_eq!(task(&report, "lock")["status"], "succeeded");
    assert_eq!(packages("ui"), ["@acme/ui", "web"], "{:#?}", ran("ui"));
    // A failure in one package is that package's.
    assert_eq!(packages("breaks"), ["cli"]);
    assert_eq!(ran("breaks")[0].1, "failed");
    let breaks = &task(&report, "breaks")["attempts"][0];
    assert_eq!(
        breaks["error"], "check unit[cli] did not pass",
        "{breaks:#}"
    );
    // A change no package holds runs the check for none.
    assert_eq!(
        ran("docs"),
        [("-".to_owned(), "skipped".to_owned(), String::new())]
    );
    let md = std::fs::read_to_string(
        repo.git_dir()
            .join("braid/runs")
            .join(report["run"].as_str().unwrap())
            .join("report.md"),
    )
    .unwrap();
    assert!(
        md.contains("- Attempt 1, check `unit`, per package: cli passed (it depends on core); core passed (the change touches crates/core/src/lib.rs)"),
        "{md}"
    );
    // The workspaces' own member lists fan a task too, `{{name}}` the package's name.
    let members = repo.plan(
        "version: 1\nrepo: repo\ntasks:\n  - id: up\n    prompt: Up {{name}} in {{dir}}.\n    agent: {command: [\"true\"]}\n    for_each: {workspace: true}\n",
    );
    let out = braid(
        Path::new(BIN),
        repo.outside(),
        &["validate", members.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for id in [
        "up.crates-cli",
        "up.crates-core",
        "up.crates-other",
        "up.packages-ui",
        "up.packages-web",
    ] {
        assert!(stdout(&out).contains(id), "{id}: {}", stdout(&out));
    }
    assert!(!stdout(&out).contains("up.docs"), "{}", stdout(&out));
    let bad = repo.plan(
        "version: 1\nrepo: repo\ntasks:\n  - id: up\n    prompt: Up.\n    agent: {command: [\"true\"]}\n    checks:\n      - {name: a, run: \"true\", per: packages}\n      - {name: b, run: \"make -C {{package_dir}}\"}\n",
    );
    let out = braid(
        Path::new(BIN),
        repo.outside(),
        &["validate", bad.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    let said = stderr(&out);
    assert!(
        said.contains("plan.yaml:8:") && said.contains("`per: packages` is not known"),
        "{said}"
    );
    assert!(
        said.contains("plan.yaml:9:")
            && said.contains("which only a check with `per: package` has"),
        "{said}"
    );
    repo.assert_untouched(&before);
}

#[test]
fn per_target_gives_each_target_its_own_change_on_the_base() {
    let repo = services();
    let before = repo.snapshot();
    // `prep` adds a shared file first; billing's change edits it, so billing's change
    // alone does not apply to the base.
    let plan = repo.plan(
        r#"version: 1
repo: repo
tasks:
  - id: prep
    prompt: Add a shared list.
    agent: {command: [sh, -c, 'echo "services:" > SERVICES']}
  - id: note
    deps: [prep]
    for_each: {dirs: "services/*"}
    prompt: "Leave a note in {{dir}}."
    agent: {command: [sh, -c, 'echo "{{name}}" > {{dir}}/NOTE; test {{name}} = auth || echo "- {{name}}" >> SERVICES']}
"#,
    );
    let (out, report) = run_plan(&repo, &plan, &["--workers", "2", "--per-target"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let base = report["base"].as_str().unwrap();
    let run = report["run"].as_str().unwrap();
    let auth = &task(&report, "note.services-auth")["own_branch"];
    let branch = format!("braid/{run}/note.services-auth/target");
    assert_eq!(auth["branch"], branch.as_str(), "{auth:#}");
    assert_eq!(repo.git(&["rev-parse", &format!("{branch}^")]), base);
    assert_eq!(
        repo.git(&["diff", "--name-only", base, &branch]),
        "services/auth/NOTE"
    );
    let billing = &task(&report, "note.services-billing")["own_branch"];
    assert!(billing["commit"].is_null(), "{billing:#}");
    assert_eq!(billing["conflicts"], json!(["SERVICES"]), "{billing:#}");
    // The result integrates them all, as without --per-target.
    let result = report["result"]["branch"].as_str().unwrap();
    assert_eq!(
        repo.show(result, "SERVICES").as_deref(),
        Some("services:\n- billing\n")
    );
    assert!(task(&report, "prep").get("own_branch").is_none());
    repo.assert_untouched(&before);
}

#[test]
fn a_targets_own_branch_holds_its_whole_chain_of_feedback_retries() {
    let repo = services();
    // The first attempt leaves a file and a wrong note; its retry fixes the note only.
    let plan = repo.plan(
        r#"version: 1
repo: repo
tasks:
  - id: note
    for_each: {dirs: "services/*"}
    prompt: "Leave a good note in {{dir}}."
    retries: 1
    agent: {command: [sh, -c, 'if [ -n "$BRAID_FEEDBACK_FILE" ]; then echo good > {{dir}}/NOTE; else echo bad > {{dir}}/NOTE; echo first > {{dir}}/FIRST; fi']}
    checks: [{name: good, run: "grep -q good NOTE", cwd: "{{dir}}", baseline: false}]
"#,
    );
    let (out, report) = run_plan(&repo, &plan, &["--workers", "2", "--per-target"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let auth = task(&report, "note.services-auth");
    assert_eq!(auth["winner"], 2, "{auth:#}");
    let branch = auth["own_branch"]["branch"].as_str().unwrap();
    assert_eq!(
        repo.git(&[
            "diff",
            "--name-only",
            report["base"].as_str().unwrap(),
            branch
        ]),
        "services/auth/FIRST\nservices/auth/NOTE"
    );
    assert_eq!(
        repo.show(branch, "services/auth/NOTE").as_deref(),
        Some("good\n")
    );
}

#[test]
fn a_plan_over_repositories_names_real_ones_and_holds_its_task_alone() {
    let repo = services();
    let plan = repo.plan(
        r#"version: 1
repo: repo
tasks:
  - id: bump
    prompt: Bump.
    agent: {command: ["true"]}
    for_each: {repos: [repo, ./missing, other/repo]}
  - id: after
    prompt: After.
    agent: {command: ["true"]}
"#,
    );
    let other = repo.outside().join("other/repo");
    std::fs::create_dir_all(&other).unwrap();
    let out = braid_tests::command("git", &other)
        .args(["init", "--quiet"])
        .output()
        .unwrap();
    assert!(out.status.success());
    for command in ["validate", "run"] {
        let out = braid(
            Path::new(BIN),
            repo.outside(),
            &[command, plan.to_str().unwrap()],
        );
        assert_eq!(out.status.code(), Some(2), "{command}: {}", stderr(&out));
        let said = stderr(&out);
        for want in [
            "plan.yaml:7:15: task \"bump\" is fanned over repositories, so the plan holds it alone",
            "`repo` and `for_each: {repos}` both name repositories",
            "\"./missing\"",
            "\"repo\" and \"other/repo\" make the same task id bump.repo",
        ] {
            assert!(
                said.contains(want),
                "{command}: {want:?} missing from:\n{said}"
            );
        }
    }
    assert!(!repo.cache().join("clones").exists());
}

#[test]
fn each_target_is_judged_against_its_own_folder_on_the_base() {
    let repo = services();
    repo.commit(
        &[("services/auth/BROKEN", "since before\n")],
        "auth is broken",
    );
    // The same check in each target's folder: auth fails it on the base already, billing
    // does not, until its attempt breaks it.
    let plan = repo.plan(
        r#"version: 1
repo: repo
tasks:
  - id: fix
    for_each: {dirs: "services/*"}
    prompt: "Work on {{dir}}."
    agent: {command: [sh, -c, 'echo note > {{dir}}/NOTE; test {{name}} = auth || touch {{dir}}/BROKEN']}
    checks: [{name: sound, run: "test ! -f BROKEN", cwd: "{{dir}}"}]
"#,
    );
    let (out, report) = run_plan(&repo, &plan, &["--workers", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let auth = &task(&report, "fix.services-auth")["attempts"][0]["checks"][0];
    assert_eq!(auth["status"], "pre_existing", "{auth:#}");
    assert_eq!(task(&report, "fix.services-auth")["status"], "succeeded");
    let billing = &task(&report, "fix.services-billing")["attempts"][0]["checks"][0];
    assert_eq!(billing["status"], "failed", "{billing:#}");
    assert_eq!(task(&report, "fix.services-billing")["status"], "failed");
}

#[test]
fn a_per_package_verification_runs_for_what_the_result_changed() {
    let repo = workspaces();
    let plan = repo.plan(
        r#"version: 1
repo: repo
tasks:
  - id: ui
    prompt: Change the ui.
    agent: {command: [sh, -c, 'echo "// more" >> packages/ui/index.js']}
merge:
  verify:
    - {name: all, per: package, run: 'test -f package.json'}
"#,
    );
    let (out, report) = run_plan(&repo, &plan, &["--workers", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let verified: Vec<(&str, &str)> = report["result"]["verify"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["package"].as_str().unwrap_or("-"),
                c["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        verified,
        [("@acme/ui", "passed"), ("web", "passed")],
        "{:#}",
        report["result"]
    );
}

#[test]
fn an_agent_that_makes_hundreds_of_packages_gets_no_check_run_for_each() {
    let repo = services();
    let plan = repo.plan(
        r#"version: 1
repo: repo
tasks:
  - id: flood
    prompt: Make packages.
    agent: {command: [sh, -c, 'i=0; while [ $i -lt 300 ]; do mkdir -p p/$i && echo "{\"name\": \"p$i\"}" > p/$i/package.json; i=$((i+1)); done']}
    checks: [{name: unit, per: package, run: "true", baseline: false}]
"#,
    );
    let (out, report) = run_plan(&repo, &plan, &["--workers", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let checks = &task(&report, "flood")["attempts"][0]["checks"];
    assert_eq!(checks.as_array().map(Vec::len), Some(1), "{checks:#}");
    assert_eq!(checks[0]["status"], "failed");
    assert!(
        checks[0]["note"]
            .as_str()
            .unwrap_or_default()
            .contains("the change affects 300 packages"),
        "{checks:#}"
    );
}
