//! Checks and scores: shell command lines run in a worktree.
//!
//! braid runs the checks itself rather than trusting an agent's own "done". Each check's
//! output goes to its own capped log file. All checks run, even after one failed, so a
//! report can show every check of every attempt side by side. A check with `paths` runs
//! only when the change touches one of them.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use braid_shared::exec::{Cmd, Ending, Output};
use braid_shared::paths::PathScope;
use braid_shared::proto::{CheckResult, CheckSpec, CheckStatus, ScoreSpec};
use tokio_util::sync::CancellationToken;

use crate::packages::{self, Workspace};
use crate::sandbox::Launch;

/// Most bytes of a failing check's output kept for feedback.
pub const TAIL_BYTES: u64 = 4096;
/// Most lines of a failing check's output kept for feedback.
pub const TAIL_LINES: usize = 40;
/// Most packages one `per: package` check runs for in an attempt: an agent that makes
/// thousands of manifests does not get thousands of check runs.
pub const MOST_PACKAGE_RUNS: usize = 256;
/// Most bytes of a score command's output read.
const SCORE_OUTPUT_CAP: usize = 64 << 10;

/// Runs `checks` in `dir`, each logging to the file `log_of` names for it. `changed` holds
/// the paths the change touches; a check with `paths` none of them match is skipped. `None`
/// runs every check (a baseline), and a `per_package` check for every package.
pub async fn run_checks(
    checks: &[CheckSpec],
    dir: &Path,
    launch: &Launch,
    log_cap: u64,
    log_of: impl Fn(&str) -> PathBuf,
    changed: Option<&[String]>,
    cancel: &CancellationToken,
) -> Vec<CheckResult> {
    let mut results = Vec::with_capacity(checks.len());
    let mut workspace: Option<Result<Workspace, String>> = None;
    for check in checks {
        if cancel.is_cancelled() {
            results.push(skipped(check, "the attempt was cancelled"));
            continue;
        }
        if let (Some(changed), false) = (changed, check.paths.is_empty()) {
            match PathScope::new(&check.paths) {
                Ok(scope) if scope.first_match(changed).is_none() => {
                    let note = format!("the change touches none of {}", scope.describe());
                    results.push(skipped(check, &note));
                    continue;
                }
                Ok(_) => {}
                Err(err) => {
                    // The coordinator validates globs when it loads the plan; this is a
                    // newer or older coordinator speaking another dialect.
                    results.push(failed(check, err.to_string()));
                    continue;
                }
            }
        }
        if !check.per_package {
            results.push(run_one(check, dir, launch, log_cap, log_of(&check.name), cancel).await);
            continue;
        }
        if workspace.is_none() {
            workspace = Some(find_workspace(dir, launch, cancel).await);
        }
        let ws = match workspace.as_ref().expect("just found") {
            Ok(ws) => ws,
            Err(why) => {
                results.push(failed(check, why.clone()));
                continue;
            }
        };
        let affected = match changed {
            Some(changed) => ws.affected(changed),
            None => ws.all(),
        };
        if affected.is_empty() {
            let note = match ws.packages.len() {
                0 => "`per: package`: no package found in the worktree (Cargo, npm, pnpm, yarn, Go or Python)".to_owned(),
                n => format!("the change affects none of the workspace's {n} package(s)"),
            };
            results.push(skipped(check, &note));
            continue;
        }
        if affected.len() > MOST_PACKAGE_RUNS {
            results.push(failed(
                check,
                format!(
                    "the change affects {} packages; a `per: package` check runs for {MOST_PACKAGE_RUNS} at most",
                    affected.len()
                ),
            ));
            continue;
        }
        for one in affected {
            let package = &ws.packages[one.package];
            // The names come from the attempt's manifests: quoted for the shell wherever
            // they hold more than a name's usual characters.
            let run = check
                .run
                .replace("{{package}}", &shell_word(&package.name))
                .replace(
                    "{{package_dir}}",
                    &shell_word(if package.dir.is_empty() {
                        "."
                    } else {
                        &package.dir
                    }),
                );
            let spec = CheckSpec {
                run,
                cwd: if check.cwd.is_empty() {
                    package.dir.clone()
                } else {
                    check
                        .cwd
                        .replace("{{package}}", &package.name)
                        .replace("{{package_dir}}", &package.dir)
                },
                ..check.clone()
            };
            // By folder: two kinds of package may share a name, never a folder.
            let place = if package.dir.is_empty() {
                &package.name
            } else {
                &package.dir
            };
            let log = log_of(&format!("{}.{}", check.name, log_slug(place)));
            let mut result = if cancel.is_cancelled() {
                skipped(check, "the attempt was cancelled")
            } else {
                run_one(&spec, dir, launch, log_cap, log, cancel).await
            };
            result.package = package.name.clone();
            result.package_dir = package.dir.clone();
            result.affected = one.why;
            results.push(result);
        }
    }
    results
}

/// `text` as one shell word: as it is when it holds only characters no shell treats
/// specially, else in single quotes.
fn shell_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '@' | '/' | '.' | '_' | '-' | '+' | ':')
        });
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// A package's folder (or name) as part of a log file's name.
fn log_slug(name: &str) -> String {
    name.trim_start_matches('@')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The packages of the worktree at `dir`. A Cargo workspace at its root is read with
/// `cargo metadata`, run in the check's sandbox: its manifests are the attempt's.
async fn find_workspace(
    dir: &Path,
    launch: &Launch,
    cancel: &CancellationToken,
) -> Result<Workspace, String> {
    let root = dir.to_owned();
    let files = {
        let root = root.clone();
        tokio::task::spawn_blocking(move || packages::files(&root))
            .await
            .map_err(|e| format!("listing the worktree's files: {e}"))?
    };
    let read = |path: &str| -> Option<String> {
        let full = root.join(path);
        // A manifest that is a link is not read: it could point anywhere.
        let meta = std::fs::symlink_metadata(&full).ok()?;
        if !meta.is_file() || meta.len() > 4 << 20 {
            return None;
        }
        std::fs::read_to_string(full).ok()
    };
    let workspace_root = read("Cargo.toml")
        .and_then(|t| t.parse::<toml::Table>().ok())
        .is_some_and(|t| t.contains_key("workspace"));
    let members = if workspace_root {
        let out = tempfile::NamedTempFile::new()
            .map_err(|e| format!("a file for cargo metadata's output: {e}"))?;
        let cmd = Cmd::new("cargo", dir)
            .args([
                "metadata",
                "--no-deps",
                "--format-version",
                "1",
                "--offline",
            ])
            .output(Output::Log {
                path: out.path().to_owned(),
                cap: 64 << 20,
            })
            .timeout(Some(Duration::from_secs(120)))
            .cancel(cancel.clone());
        let done = launch
            .prepare(cmd)
            .run()
            .await
            .map_err(|e| format!("`per: package`: cargo metadata could not start: {e}"))?;
        let text = std::fs::read_to_string(out.path()).unwrap_or_default();
        if done.ending.code() != Some(0) {
            let said: Vec<&str> = text.lines().filter(|l| !l.starts_with('{')).collect();
            return Err(format!(
                "`per: package`: cargo metadata failed on the workspace: {}",
                said.join(" ").trim()
            ));
        }
        // Its JSON is one line; anything else on the log is what cargo said besides.
        let json = text
            .lines()
            .find(|l| l.starts_with('{'))
            .unwrap_or_default();
        Some(packages::cargo_metadata(json, &root)?)
    } else {
        None
    };
    Ok(Workspace::find(&files, &read, members))
}

/// A check that could not run, and why.
fn failed(check: &CheckSpec, why: String) -> CheckResult {
    CheckResult {
        status: CheckStatus::Failed as i32,
        note: why,
        ..skipped(check, "")
    }
}

/// Runs one check in `dir`, logging to `log`.
async fn run_one(
    check: &CheckSpec,
    dir: &Path,
    launch: &Launch,
    log_cap: u64,
    log: PathBuf,
    cancel: &CancellationToken,
) -> CheckResult {
    let here = match folder_of(dir, &check.cwd) {
        Ok(here) => here,
        Err(why) => return failed(check, why),
    };
    let timeout = (check.timeout_ms > 0).then(|| Duration::from_millis(check.timeout_ms));
    let cmd = Cmd::new("sh", &here)
        .args(["-c", &check.run])
        .output(Output::Log {
            path: log.clone(),
            cap: log_cap,
        })
        .timeout(timeout)
        .cancel(cancel.clone());
    match launch.prepare(cmd).run().await {
        Ok(done) => {
            let status = match done.ending {
                Ending::Exited(0) => CheckStatus::Passed,
                Ending::TimedOut | Ending::Stalled => CheckStatus::TimedOut,
                Ending::Cancelled => CheckStatus::Skipped,
                Ending::Exited(_) | Ending::Signalled(_) => CheckStatus::Failed,
            };
            let output_tail = if matches!(status, CheckStatus::Failed | CheckStatus::TimedOut) {
                tail(&log)
            } else {
                String::new()
            };
            CheckResult {
                status: status as i32,
                exit_code: done.ending.code(),
                duration_ms: done.duration.as_millis() as u64,
                log_path: crate::agent::AttemptFiles::name(&log),
                output_tail,
                ..skipped(check, "")
            }
        }
        Err(err) => {
            tracing::warn!(check = %check.name, %err, "check could not start");
            CheckResult {
                status: CheckStatus::Failed as i32,
                log_path: crate::agent::AttemptFiles::name(&log),
                output_tail: err.to_string(),
                ..skipped(check, "")
            }
        }
    }
}

/// The folder a check with `cwd` runs in: inside the worktree `dir`, as it really is (an
/// agent may have made the folder a link to elsewhere, or removed it).
fn folder_of(dir: &Path, cwd: &str) -> Result<PathBuf, String> {
    if cwd.is_empty() {
        return Ok(dir.to_owned());
    }
    if !braid_shared::paths::plain_relative(cwd) {
        return Err(format!("`cwd` {cwd:?} is not a folder of the repository"));
    }
    let root = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    match std::fs::canonicalize(dir.join(cwd)) {
        Ok(real) if real.is_dir() && real.starts_with(&root) => Ok(real),
        Ok(_) => Err(format!(
            "`cwd` {cwd:?} is not a folder inside the worktree (the attempt left a link or a file there)"
        )),
        Err(_) => Err(format!("`cwd` {cwd:?}: no such folder in the worktree")),
    }
}

/// The record of a check that did not run, and why.
pub fn skipped(check: &CheckSpec, why: &str) -> CheckResult {
    CheckResult {
        name: check.name.clone(),
        status: CheckStatus::Skipped as i32,
        exit_code: None,
        duration_ms: 0,
        log_path: String::new(),
        output_tail: String::new(),
        note: why.to_owned(),
        package: String::new(),
        package_dir: String::new(),
        affected: String::new(),
    }
}

/// The last lines of a log file, at most [`TAIL_LINES`] lines and [`TAIL_BYTES`] bytes.
fn tail(path: &Path) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(TAIL_BYTES);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(from)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    // A cut first line is dropped rather than shown half.
    let text = if from > 0 {
        text.split_once('\n').map_or("", |(_, rest)| rest)
    } else {
        &text
    };
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// Runs the score command `score` in `dir`; returns the number on the last line of its
/// standard output, or why there is none.
pub async fn run_score(
    score: &ScoreSpec,
    dir: &Path,
    launch: &Launch,
    cancel: &CancellationToken,
) -> Result<f64, String> {
    let timeout = (score.timeout_ms > 0).then(|| Duration::from_millis(score.timeout_ms));
    let cmd = Cmd::new("sh", dir)
        .args(["-c", &score.run])
        .output(Output::Capture)
        .timeout(timeout)
        .cancel(cancel.clone());
    let done = launch
        .prepare(cmd)
        .run()
        .await
        .map_err(|err| format!("the score command could not start: {err}"))?;
    match done.ending {
        Ending::Exited(0) => {}
        Ending::Exited(code) => return Err(format!("the score command exited with code {code}")),
        Ending::Signalled(signal) => {
            return Err(format!("the score command was killed by signal {signal}"));
        }
        Ending::TimedOut | Ending::Stalled => {
            return Err("the score command ran past its timeout".into());
        }
        Ending::Cancelled => return Err("the attempt was cancelled".into()),
    }
    let out = &done.stdout[done.stdout.len().saturating_sub(SCORE_OUTPUT_CAP)..];
    parse_score(&String::from_utf8_lossy(out))
}

/// The number on the last non-empty line of `stdout`.
pub fn parse_score(stdout: &str) -> Result<f64, String> {
    let Some(line) = stdout.lines().map(str::trim).rfind(|l| !l.is_empty()) else {
        return Err(
            "the score command printed nothing; it must print a number on its last line".into(),
        );
    };
    match line.parse::<f64>() {
        Ok(n) if n.is_finite() => Ok(n),
        _ => {
            let shown: String = line.chars().take(80).collect();
            Err(format!(
                "the score command's last line {shown:?} is not a number"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_are_quoted_for_the_shell_when_they_need_it() {
        assert_eq!(shell_word("@acme/ui"), "@acme/ui");
        assert_eq!(shell_word("example.com/api"), "example.com/api");
        assert_eq!(shell_word("$(touch x)"), "'$(touch x)'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn scores_are_the_last_line() {
        assert_eq!(parse_score("warming up\n0.93\n\n"), Ok(0.93));
        assert_eq!(parse_score("-4"), Ok(-4.0));
        let err = parse_score("score: high\n").unwrap_err();
        assert!(err.contains("\"score: high\" is not a number"), "{err}");
        assert!(parse_score("").unwrap_err().contains("printed nothing"));
        assert!(parse_score("NaN").is_err());
        assert!(parse_score("inf").is_err());
    }

    #[test]
    fn tails_keep_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let text: String = (1..=100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, text).unwrap();
        let tail = tail(&log);
        assert!(tail.starts_with("line 61\n"), "{tail}");
        assert!(tail.ends_with("line 100"), "{tail}");
        let big: String = (1..=2000).map(|i| format!("{i:09}\n")).collect();
        std::fs::write(&log, big).unwrap();
        let tail = super::tail(&log);
        assert!(tail.len() <= TAIL_BYTES as usize);
        assert!(tail.ends_with("000002000"), "{tail}");
    }
}
