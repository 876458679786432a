//! End-to-end tests: the `braid` binary run as a user would, on hermetic git repositories,
//! with fake agent scripts.

mod agents;
mod batch;
mod containment;
mod corpus;
mod fleet;
mod judging;
mod merging;
mod planner;
mod plans;
mod publish;
mod resume;
mod reviews;
mod runs;

use std::path::Path;
use std::process::Output;

use braid_tests::{TestRepo, braid, stderr, stdout};
use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_braid");

/// A test that holds every inotify instance of the user takes this for writing; a test
/// whose agent CLI cannot start without one (opencode waits forever) takes it for reading.
pub static INOTIFY: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Runs `braid run plan.yaml --json` beside `repo`; returns the output and report.json.
pub fn run_plan(repo: &TestRepo, plan: &Path, extra: &[&str]) -> (Output, Value) {
    let mut args = vec!["run", plan.to_str().expect("utf-8 path"), "--json"];
    args.extend_from_slice(extra);
    let out = braid(Path::new(BIN), repo.outside(), &args);
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| {
        panic!(
            "report.json on stdout ({e}); exit {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status.code(),
            stdout(&out),
            stderr(&out)
        )
    });
    (out, report)
}

/// The task called `id` in a report.
pub fn task<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("no task {id} in {report:#}"))
}

/// Attempt `n` of a task in a report.
pub fn attempt(task: &Value, n: u64) -> &Value {
    task["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .find(|a| a["n"] == n)
        .unwrap_or_else(|| panic!("no attempt {n} in {task:#}"))
}
