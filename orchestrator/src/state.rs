//! The state directory inside the repository's git directory, `<git-dir>/braid/`, holding
//! `runs/<run>/` (reports, logs and, while the run lives, its lock), and the run's folder
//! in braid's cache, `<cache>/work/<run>/` (worktrees, scratch, the coordinator's socket).
//!
//! A run holds a lock, `runs/<run>/lock.json`, naming its process (pid and start time, so
//! a reused pid is not taken for it) and its cache folder. A run that ends any way braid
//! sees (success, failure, SIGINT, SIGTERM, SIGHUP) removes both. A run that was killed
//! (SIGKILL, a crash, a power cut) leaves them; the next braid command in the repository
//! finds the lock of a process that is gone ([`recover`]), removes the run's cache folder,
//! marks its report `crashed` and drops the lock.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::report::{Report, ResultReport, RunStatus};

/// A new run id: UTC time, then four hex digits, so ids sort by time.
pub fn new_run_id() -> String {
    format!(
        "{}-{:04x}",
        chrono::Utc::now().format("%Y%m%d-%H%M%S"),
        fastrand::u16(..)
    )
}

/// The id by which workers fetch the objects of the repository whose git folder is
/// `git_dir`: 32 random hexadecimal digits, made once and kept in `<git-dir>/braid/repo-id`,
/// so a worker's cache keeps one copy per repository and never mixes two that share a path
/// on different machines.
pub fn repo_id(git_dir: &Path) -> std::io::Result<String> {
    let path = git_dir.join("braid/repo-id");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim();
        if braid_worker::mirror::is_repository_id(id) {
            return Ok(id.to_owned());
        }
    }
    let id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    std::fs::create_dir_all(git_dir.join("braid"))?;
    let fresh = path.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::write(&fresh, format!("{id}\n"))?;
    // Two runs that start at once agree on whichever id landed first.
    match std::fs::hard_link(&fresh, &path) {
        Ok(()) => {
            let _ = std::fs::remove_file(&fresh);
            Ok(id)
        }
        Err(_) => {
            let _ = std::fs::remove_file(&fresh);
            match std::fs::read_to_string(&path) {
                Ok(text) if braid_worker::mirror::is_repository_id(text.trim()) => {
                    Ok(text.trim().to_owned())
                }
                // Not an id: made anew.
                _ => std::fs::write(&path, format!("{id}\n")).map(|()| id),
            }
        }
    }
}

/// The run's folder for reports and logs.
pub fn run_dir(git_dir: &Path, run: &str) -> PathBuf {
    git_dir.join("braid/runs").join(run)
}

/// What a live run writes about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lock {
    /// The run.
    pub run: String,
    /// The process that runs it.
    pub pid: u32,
    /// When that process started, in clock ticks since boot (`/proc/<pid>/stat`).
    pub started: u64,
    /// The run's folder in braid's cache.
    pub cache_dir: PathBuf,
    /// The repository's working tree.
    pub repo: PathBuf,
    /// The base commit.
    pub base: String,
    /// The plan file.
    pub plan: PathBuf,
    /// When the run started (RFC 3339, UTC).
    pub started_at: String,
}

/// The start time of process `pid`, in clock ticks since boot; `None` when it is gone
/// (zombies count as gone).
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the name: state (3rd of stat), ..., starttime (22nd).
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

impl Lock {
    /// The lock of this process for `run`.
    pub fn new(run: &str, cache_dir: PathBuf, repo: PathBuf, base: String, plan: PathBuf) -> Self {
        let pid = std::process::id();
        Lock {
            run: run.to_owned(),
            pid,
            started: start_ticks(pid).unwrap_or(0),
            cache_dir,
            repo,
            base,
            plan,
            started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }
    }

    /// Writes the lock into the run's folder.
    pub fn write(&self, run_dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(run_dir)?;
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        let tmp = run_dir.join("lock.json.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(tmp, run_dir.join("lock.json"))
    }

    /// Whether the process that holds the lock is still running.
    pub fn alive(&self) -> bool {
        start_ticks(self.pid).is_some_and(|t| t == self.started)
    }

    /// The lock a run left in its folder `run_dir`, if it left one.
    pub fn read(run_dir: &Path) -> Option<Lock> {
        let text = std::fs::read_to_string(run_dir.join("lock.json")).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// A live run's lock: when it is dropped (the run ended, or returned with an error), what
/// the run left in the cache and the lock itself are removed.
#[derive(Debug)]
pub struct Held {
    run_dir: PathBuf,
    lock: Lock,
}

impl Held {
    /// Holds `lock`, written in `run_dir`.
    pub fn new(run_dir: PathBuf, lock: Lock) -> Self {
        Held { run_dir, lock }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        remove_cache_dir(&self.lock.cache_dir);
        let _ = std::fs::remove_file(self.run_dir.join("lock.json"));
    }
}

/// Removes a run's folder in the cache, whatever is in it; returns the bytes it held.
pub fn remove_cache_dir(dir: &Path) -> u64 {
    let size = disk_usage(dir);
    if let Err(err) = braid_worker::cache::remove_any(dir)
        && dir.exists()
    {
        tracing::warn!(dir = %dir.display(), %err, "could not remove a run's cache folder");
    }
    size
}

/// Bytes of the files under `path`, not following links.
pub fn disk_usage(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| disk_usage(&e.path())).sum())
        .unwrap_or(0)
}

/// A dead run found and cleaned up.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The run.
    pub run: String,
    /// The process that held it.
    pub pid: u32,
    /// Bytes its cache folder held.
    pub freed: u64,
}

/// Finds the runs of the repository with git folder `git_dir` whose process is gone,
/// removes their cache folders, marks their reports `crashed` and drops their locks.
pub fn recover(git_dir: &Path) -> Vec<Recovered> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(git_dir.join("braid/runs")) else {
        return found;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let Some(lock) = Lock::read(&dir) else {
            continue;
        };
        if lock.alive() {
            continue;
        }
        let freed = remove_cache_dir(&lock.cache_dir);
        if let Err(err) = mark_crashed(&dir, &lock) {
            tracing::warn!(run = %lock.run, %err, "could not mark a dead run's report");
        }
        let _ = std::fs::remove_file(dir.join("lock.json"));
        found.push(Recovered {
            run: lock.run.clone(),
            pid: lock.pid,
            freed,
        });
    }
    found.sort_by(|a, b| a.run.cmp(&b.run));
    found
}

/// Marks the report of a run that died `crashed`, writing one from its lock when it
/// died before it wrote its own.
fn mark_crashed(run_dir: &Path, lock: &Lock) -> std::io::Result<()> {
    let path = run_dir.join("report.json");
    let report = match std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<Report>(&t).ok())
    {
        Some(mut report) => {
            report.status = RunStatus::Crashed;
            report
        }
        None => Report {
            run: lock.run.clone(),
            name: None,
            status: RunStatus::Crashed,
            repo: lock.repo.to_string_lossy().into_owned(),
            base: lock.base.clone(),
            base_rev: String::new(),
            plan: lock.plan.to_string_lossy().into_owned(),
            started_at: lock.started_at.clone(),
            duration_ms: 0,
            result: ResultReport {
                branch: format!("braid/{}/result", lock.run),
                ..Default::default()
            },
            tasks: Vec::new(),
            workers: Vec::new(),
            usage: Default::default(),
            stopped: Vec::new(),
            overlaps: Vec::new(),
            warnings: Vec::new(),
            planner: None,
            targets: Vec::new(),
            rerun_of: None,
            publish: None,
            repos: Vec::new(),
            timeline: Vec::new(),
            state_dir: run_dir.to_string_lossy().into_owned(),
        },
    };
    report.write(run_dir).map(drop)
}

/// Tells on standard error what [`recover`] cleaned up.
pub fn tell_recovered(recovered: &[Recovered]) {
    for r in recovered {
        eprintln!(
            "braid: run {} ended without cleaning up (its process {} is gone): removed its worktrees ({}) and marked it crashed",
            r.run,
            r.pid,
            human_bytes(r.freed)
        );
    }
}

/// Bytes for people: `1.5 MB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// What `braid gc` removed.
#[derive(Debug, Default)]
pub struct Collected {
    /// Dead runs of the repository, cleaned up.
    pub recovered: Vec<Recovered>,
    /// Folders in the cache that no live run owns, with their sizes.
    pub orphans: Vec<(PathBuf, u64)>,
}

/// Removes what old runs left: dead runs of the repository at `git_dir` (see [`recover`]),
/// and run folders in the cache at `cache` that no live run of any repository holds.
pub fn collect(git_dir: Option<&Path>, cache: &Path) -> Collected {
    let mut collected = Collected {
        recovered: git_dir.map(recover).unwrap_or_default(),
        ..Default::default()
    };
    // The clones of batches over repositories hold runs of their own.
    if let Ok(clones) = std::fs::read_dir(cache.join("clones")) {
        for entry in clones.flatten() {
            let git = entry.path().join(".git");
            if git.is_dir() {
                collected.recovered.extend(recover(&git));
            }
        }
    }
    // Copies of repositories that borrowed from one that is gone (a removed checkout, a
    // demo's throwaway repository).
    if let Ok(mirrors) = std::fs::read_dir(cache.join("repos")) {
        for entry in mirrors.flatten() {
            let dir = entry.path();
            if braid_worker::mirror::borrows_what_is_gone(&dir) {
                let freed = remove_cache_dir(&dir);
                collected.orphans.push((dir, freed));
            }
        }
    }
    let Ok(entries) = std::fs::read_dir(cache.join("work")) else {
        return collected;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let owned = std::fs::read_to_string(dir.join("owner.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Lock>(&t).ok());
        if owned.is_some_and(|lock| lock.alive()) {
            continue;
        }
        let freed = remove_cache_dir(&dir);
        collected.orphans.push((dir, freed));
    }
    collected
}

/// Marks the run's cache folder as the live run's, so `braid gc` leaves it alone.
pub fn own_cache_dir(lock: &Lock) -> std::io::Result<()> {
    std::fs::create_dir_all(&lock.cache_dir)?;
    let text = serde_json::to_string_pretty(lock).map_err(std::io::Error::other)?;
    std::fs::write(lock.cache_dir.join("owner.json"), text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_of_this_process_is_alive_and_a_reused_pid_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut lock = Lock::new(
            "r",
            dir.path().join("c"),
            dir.path().into(),
            "0".repeat(40),
            "p".into(),
        );
        assert!(lock.alive());
        lock.started += 1;
        assert!(
            !lock.alive(),
            "another process with this pid is not the run"
        );
    }

    #[test]
    fn sizes_read_for_people() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
    }
}
