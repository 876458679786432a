//! Sample plans: every invalid one gives exactly its expected messages, exit code 2, and
//! writes nothing; every valid one (and every example) validates.

use std::path::{Path, PathBuf};

use braid_tests::{TestRepo, braid, stderr, stdout};

use crate::BIN;

fn samples(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/plans")
        .join(kind);
    let mut plans: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    plans.sort();
    assert!(!plans.is_empty(), "no samples in {}", dir.display());
    plans
}

/// A repository with the plan beside it as `plan.yaml`, a prompt file and a folder that is
/// not a repository, as the samples expect.
fn setup(sample: &Path) -> TestRepo {
    let repo = TestRepo::init();
    std::fs::copy(sample, repo.outside().join("plan.yaml")).unwrap();
    std::fs::write(repo.outside().join("prompt.md"), "A prompt from a file.\n").unwrap();
    std::fs::create_dir_all(repo.outside().join("notgit")).unwrap();
    repo
}

#[test]
fn every_invalid_plan_gives_its_messages_and_changes_nothing() {
    for sample in samples("invalid") {
        let expected = std::fs::read_to_string(sample.with_extension("expected"))
            .unwrap_or_else(|_| panic!("{} has no .expected file", sample.display()));
        let repo = setup(&sample);
        let before = repo.snapshot();
        let dir = repo.outside().to_str().unwrap().to_owned();
        for command in ["validate", "run"] {
            let out = braid(Path::new(BIN), repo.outside(), &[command, "plan.yaml"]);
            let shown = stderr(&out).replace(&dir, "<dir>");
            assert_eq!(shown, expected, "{} with braid {command}", sample.display());
            assert_eq!(
                out.status.code(),
                Some(2),
                "{} with braid {command}",
                sample.display()
            );
            assert!(
                stdout(&out).is_empty(),
                "{}: printed {}",
                sample.display(),
                stdout(&out)
            );
        }
        assert!(
            repo.braid_refs().is_empty(),
            "{}: refs created",
            sample.display()
        );
        assert!(
            !repo.git_dir().join("braid").exists(),
            "{}: state written",
            sample.display()
        );
        repo.assert_untouched(&before);
    }
}

/// The valid sample plans and the examples.
fn valid_plans() -> Vec<PathBuf> {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut plans = samples("valid");
    plans.extend(
        std::fs::read_dir(examples)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml")),
    );
    plans
}

#[test]
fn every_valid_plan_and_example_validates() {
    let plans = valid_plans();
    for sample in plans {
        let repo = setup(&sample);
        // Examples are written to live inside the repository they work on.
        let plan = std::fs::read_to_string(&sample).unwrap();
        let at = if plan.contains("\nrepo:") {
            repo.outside().join("plan.yaml")
        } else {
            let inside = repo.path.join("plan.yaml");
            std::fs::write(&inside, &plan).unwrap();
            inside
        };
        let out = braid(
            Path::new(BIN),
            repo.outside(),
            &["validate", at.to_str().unwrap()],
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            sample.display(),
            stderr(&out)
        );
        assert!(stdout(&out).contains("is valid"), "{}", stdout(&out));
        assert!(
            !repo.git_dir().join("braid").exists(),
            "validate wrote state"
        );
    }
}

#[test]
fn validate_prints_the_dag_in_layers() {
    let repo = setup(
        &samples("valid")
            .into_iter()
            .find(|p| p.ends_with("full.yaml"))
            .unwrap(),
    );
    let out = braid(Path::new(BIN), repo.outside(), &["validate", "plan.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("2 task(s), 5 attempt(s), 2 layer(s):"),
        "{text}"
    );
    assert!(
        text.contains(
            "  layer 1: parser ×3 first-pass +2 retries\n  layer 2: docs ×2 vote (after parser)\n"
        ),
        "{text}"
    );
}

/// A plan file's YAML as JSON, for the schema.
fn as_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_schema_takes_every_valid_plan_and_refuses_wrong_keys() {
    let out = braid(Path::new(BIN), Path::new("/"), &["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(schema["title"], "braid plan");
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    let plans = valid_plans();
    for plan in &plans {
        let errors: Vec<String> = validator
            .iter_errors(&as_json(plan))
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", plan.display());
    }
    let invalid = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/plans/invalid");
    for (name, wrong) in [
        ("unknown-key.yaml", "/tasks/0"),
        ("containment.yaml", "/tasks/0/sandbox"),
    ] {
        let errors: Vec<String> = validator
            .iter_errors(&as_json(&invalid.join(name)))
            .map(|e| e.instance_path.to_string())
            .collect();
        assert!(errors.iter().any(|p| p == wrong), "{name}: {errors:?}");
    }
}

#[test]
fn overlapping_touches_are_told_before_anything_runs_and_can_be_ordered() {
    let repo = TestRepo::init();
    repo.commit(
        &[
            ("src/x.rs", "x\n"),
            ("src/y.rs", "y\n"),
            ("docs/a.md", "a\n"),
        ],
        "files",
    );
    let plan = repo.plan(
        r#"version: 1
repo: repo
defaults:
  agent: {command: [sh, -c, "echo $BRAID_TASK_ID > $BRAID_TASK_ID.txt"]}
  checks: [{name: ok, run: "true"}]
tasks:
  - id: a
    prompt: a
    touches: ["src/**"]
  - id: b
    prompt: b
    touches: [src/x.rs, src/new.rs]
  - id: c
    prompt: c
    deps: [a]
    touches: [src/new.rs]
  - id: d
    prompt: d
    touches: ["docs/**"]
    checks: []
"#,
    );
    let out = braid(
        Path::new(BIN),
        repo.outside(),
        &["validate", plan.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(
            "likely conflict: a and b both touch src/x.rs, src/new.rs and nothing orders them"
        ),
        "{text}"
    );
    // c comes after a, but nothing orders it against b, and both name the new file.
    assert!(
        text.contains("likely conflict: b and c both touch src/new.rs"),
        "{text}"
    );
    assert!(!text.contains("a and c"), "{text}");
    assert!(!text.contains("and d"), "{text}");
    assert!(text.contains("warning: task \"d\" has no checks"), "{text}");

    let out = braid(
        Path::new(BIN),
        repo.outside(),
        &["validate", plan.to_str().unwrap(), "--serialize-overlaps"],
    );
    let text = stdout(&out);
    assert!(
        text.contains("serialized: b now waits for a: both touch src/x.rs, src/new.rs"),
        "{text}"
    );
    assert!(
        text.contains("serialized: c now waits for b: both touch src/new.rs"),
        "{text}"
    );
    assert!(!text.contains("likely conflict"), "{text}");
    assert!(text.contains("layer 3: c"), "{text}");

    // A run reports them before it starts, and keeps them in the report.
    let (out, report) = crate::run_plan(&repo, &plan, &[]);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert!(
        stderr(&out).contains("likely conflict: a and b"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        report["overlaps"].as_array().map(Vec::len),
        Some(2),
        "{report:#}"
    );
    let (_, ordered) = crate::run_plan(&repo, &plan, &["--serialize-overlaps"]);
    assert_eq!(
        crate::task(&ordered, "c")["deps"],
        serde_json::json!(["a", "b"])
    );
    assert!(ordered.get("overlaps").is_none(), "{ordered:#}");
}
