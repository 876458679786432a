//! Memory: the coordinator's peak resident set with 100,000 attempts queued. `braid run`
//! gets a plan of 3,125 tasks x 32 attempts and one slot; the first attempt's agent marks
//! that it started and then sleeps, so every other attempt waits in the queue. The peak
//! (VmHWM) of the braid process is read then, and the run is interrupted.

use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::repo::SmallRepo;
use crate::table::{Goal, Row, Unit};
use crate::{braid, say};

const TASKS: usize = 3_125;
const ATTEMPTS: usize = 32;

fn plan(repo: &SmallRepo, marker: &Path) -> String {
    let agent = format!("touch {}; exec sleep 600", marker.display());
    // The marker's folder is the one place outside its worktree the agent may write.
    let folder = marker.parent().unwrap_or(marker);
    let mut plan = format!(
        "version: 1\nname: bench-memory\nrepo: {}\nbase: main\nsandbox: {{writable: [{}]}}\ndefaults:\n  agent:\n    command: [sh, -c, {}]\n  attempts: {ATTEMPTS}\ntasks:\n",
        repo.path.display(),
        serde_json::to_string(&folder.display().to_string()).unwrap_or_default(),
        serde_json::to_string(&agent).unwrap_or_default()
    );
    for t in 0..TASKS {
        let _ = writeln!(plan, "  - id: t{t}\n    prompt: wait");
    }
    plan
}

/// A `kB` field of /proc/PID/status, in bytes.
fn status_field(pid: u32, field: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kib| kib * 1024.0)
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// Runs the scenario `rounds` times.
pub fn run(repo: &SmallRepo, scratch: &Path, rounds: usize) -> Result<Vec<Row>> {
    let marker = scratch.join("first-attempt-started");
    let plan_path = scratch.join("memory.yaml");
    std::fs::write(&plan_path, plan(repo, &marker))?;
    let mut peaks = Vec::new();
    let mut queued_after = Vec::new();
    for _ in 0..rounds {
        let _ = std::fs::remove_file(&marker);
        let started = Instant::now();
        let mut child = braid()?
            .args(["run", "--workers", "1", "--slots", "1"])
            .arg(&plan_path)
            .stdout(std::fs::File::create(scratch.join("braid-out.txt"))?)
            .stderr(std::fs::File::create(scratch.join("braid-err.txt"))?)
            .spawn()?;
        let pid = child.id();
        while !marker.exists() {
            if started.elapsed() > Duration::from_secs(300) || child.try_wait()?.is_some() {
                let _ = child.kill();
                bail!("the first attempt never started; see {}", scratch.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        queued_after.push(started.elapsed().as_secs_f64());
        // Let the loop settle with the attempt running and the rest queued.
        std::thread::sleep(Duration::from_millis(500));
        let peak = status_field(pid, "VmHWM:")?;
        say(format!(
            "  peak {:.0} MB, {:.0} MB now, queued after {:.1} s",
            peak / 1e6,
            status_field(pid, "VmRSS:")? / 1e6,
            started.elapsed().as_secs_f64()
        ));
        peaks.push(peak);
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(120);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(vec![Row {
        scenario: "memory".into(),
        measure: "coordinator peak RSS, 100,000 queued attempts".into(),
        unit: Unit::Bytes,
        samples: peaks,
        baseline: None,
        goal: Goal::AtMost(300e6),
        note: format!(
            "{TASKS} tasks x {ATTEMPTS} attempts, plan to first attempt {:.1} s",
            crate::table::median(&queued_after)
        ),
    }])
}
