//! braid's benchmarks: braid measured against git and the shell pipelines users write by
//! hand, each pair in the same run, on inputs the benchmark generates itself.
//!
//! `cargo run --release -p braid-bench -- all` runs every scenario and prints a table of
//! medians and ratios; the same goes to `target/braid-bench/results.json`. Not a test:
//! timings on a shared machine are noisy, so only ratios measured side by side count.
//!
//! `braid-bench braid ARGS...` is the `braid` binary itself (the same code), so the
//! end-to-end scenarios run braid as a user does, as a separate process.
#![allow(clippy::disallowed_methods)] // a benchmark starts git and shells directly, as users do

mod agent;
mod batch;
mod fanout;
mod fleet;
mod makespan;
mod memory;
mod merge;
mod repo;
mod sandbox;
mod scheduler;
mod start;
mod table;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde::Serialize;

use crate::repo::{BigRepo, SmallRepo};
use crate::table::{Row, markdown, median};

const SCENARIOS: [&str; 10] = [
    "start",
    "sandbox",
    "fanout",
    "merge",
    "scheduler",
    "fleet",
    "batch",
    "makespan",
    "memory",
    "agent",
];

/// braid against git and hand-written shell pipelines, measured side by side.
#[derive(Debug, Parser)]
#[command(name = "braid-bench")]
struct Cli {
    /// Scenarios to run: all, or any of start, sandbox, fanout, merge, scheduler, fleet,
    /// batch, makespan, memory, agent.
    #[arg(default_value = "all")]
    scenarios: Vec<String>,
    /// Rounds per scenario [default: 7 for start, 15 for merge, 1 for fanout (its shell
    /// pipeline takes many minutes a round), 3 for the others].
    #[arg(long)]
    rounds: Option<usize>,
    /// Where to write the results as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Folder for the generated repositories [default: a new temporary folder].
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() {
    // As braid does: the bridge's inner end inside a sandbox, when started as one.
    if let Some(code) = braid_worker::bridge::main_if_bridge() {
        std::process::exit(code);
    }
    let mut args = std::env::args_os();
    let program = args.next().unwrap_or_default();
    let rest: Vec<_> = args.collect();
    if rest.first().is_some_and(|a| a == "braid") {
        std::process::exit(braid_orchestrator::cli::main_from(
            std::iter::once("braid".into()).chain(rest.into_iter().skip(1)),
        ));
    }
    let cli = Cli::parse_from(std::iter::once(program).chain(rest));
    match run(cli) {
        Ok(all_met) => std::process::exit(if all_met { 0 } else { 1 }),
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::exit(3);
        }
    }
}

/// braid's cache folder for this run of the benchmark: beside its repositories, on the
/// same disk.
static CACHE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// The cache folder braid's worktrees go to in this run.
pub fn cache() -> PathBuf {
    CACHE
        .get()
        .cloned()
        .unwrap_or_else(braid_worker::cache::root)
}

/// A `braid` command: this binary playing braid.
pub fn braid() -> Result<Command> {
    let mut cmd = Command::new(std::env::current_exe().context("finding this binary")?);
    cmd.arg("braid").env("BRAID_CACHE", cache());
    Ok(cmd)
}

/// `braid run --workers 1 --slots N --json PLAN`: one local worker, the report on stdout.
pub fn braid_local_run(plan: &Path, slots: usize) -> Result<Command> {
    let mut cmd = braid()?;
    cmd.args([
        "run",
        "--workers",
        "1",
        "--slots",
        &slots.to_string(),
        "--json",
    ])
    .arg(plan);
    Ok(cmd)
}

/// Every attempt of every task in a report.json.
pub fn report_attempts(report: &serde_json::Value) -> Vec<&serde_json::Value> {
    report["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["attempts"].as_array().into_iter().flatten())
        .collect()
}

/// Prints a line of progress on standard error.
pub fn say(line: impl AsRef<str>) {
    eprintln!("[bench] {}", line.as_ref());
}

fn run(cli: Cli) -> Result<bool> {
    let mut chosen: Vec<&str> = Vec::new();
    for name in &cli.scenarios {
        let names: Vec<&str> = match SCENARIOS.iter().find(|s| **s == name.as_str()) {
            Some(scenario) => vec![scenario],
            None if name == "all" => SCENARIOS.to_vec(),
            None => bail!(
                "unknown scenario {name:?}; the scenarios are all, {}",
                SCENARIOS.join(", ")
            ),
        };
        for scenario in names {
            if !chosen.contains(&scenario) {
                chosen.push(scenario);
            }
        }
    }
    let temp = tempfile::Builder::new().prefix("braid-bench-").tempdir()?;
    let dir = cli.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let _ = CACHE.set(dir.join("cache"));
    let machine = Machine::read(&dir);
    say(format!("machine: {}", machine.line()));

    let needs_big = chosen
        .iter()
        .any(|s| matches!(*s, "start" | "fanout" | "merge" | "fleet" | "batch"));
    let big = if needs_big {
        let started = Instant::now();
        let big = BigRepo::create(&dir.join("big"))?;
        say(format!(
            "generated the 20,000-file repository ({:.0} MB of files, {} packed) in {:.1} s",
            big.bytes as f64 / 1e6,
            du(&big.path.join(".git")),
            started.elapsed().as_secs_f64()
        ));
        Some(big)
    } else {
        None
    };
    let small = SmallRepo::create(&dir.join("small"))?;
    let runtime = tokio::runtime::Runtime::new()?;
    let rounds = |default: usize| cli.rounds.unwrap_or(default).max(1);
    let mut rows: Vec<Row> = Vec::new();
    for scenario in chosen {
        let started = Instant::now();
        say(format!("scenario {scenario}"));
        let scratch = dir.join(format!("scratch-{scenario}"));
        std::fs::create_dir_all(&scratch)?;
        let big = || big.as_ref().context("the large repository");
        let new = match scenario {
            "start" => runtime.block_on(start::run(big()?, &scratch, rounds(7)))?,
            "sandbox" => runtime.block_on(sandbox::run(&scratch, rounds(3)))?,
            "fanout" => fanout::run(big()?, &scratch, rounds(1))?,
            "merge" => runtime.block_on(merge::run(big()?, rounds(15)))?,
            "scheduler" => runtime.block_on(scheduler::run(&small, &scratch, rounds(3)))?,
            "fleet" => runtime.block_on(fleet::run(big()?, &small, &scratch, rounds(3)))?,
            "batch" => batch::run(big()?, &scratch, rounds(1))?,
            "makespan" => makespan::run(&small, &scratch, rounds(3))?,
            "memory" => memory::run(&small, &scratch, rounds(3))?,
            "agent" => agent::run(&scratch, rounds(3))?,
            _ => unreachable!("checked above"),
        };
        say(format!(
            "scenario {scenario} took {:.1} s",
            started.elapsed().as_secs_f64()
        ));
        print!("{}", markdown(&new));
        rows.extend(new);
    }
    println!("\nmachine: {}\n", machine.line());
    print!("{}", markdown(&rows));
    let json = cli.json.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/braid-bench/results.json")
    });
    write_json(&json, &machine, &rows)?;
    println!("\nresults: {}", json.display());
    Ok(rows.iter().all(|r| r.met() != Some(false)))
}

#[derive(Debug, Serialize)]
struct JsonRow<'a> {
    #[serde(flatten)]
    row: &'a Row,
    median: f64,
    baseline_median: Option<f64>,
    ratio: Option<f64>,
    met: Option<bool>,
}

fn write_json(path: &Path, machine: &Machine, rows: &[Row]) -> Result<()> {
    let rows: Vec<JsonRow> = rows
        .iter()
        .map(|row| JsonRow {
            row,
            median: row.median(),
            baseline_median: row.baseline.as_ref().map(|b| median(&b.samples)),
            ratio: row.ratio(),
            met: row.met(),
        })
        .collect();
    let value = serde_json::json!({ "machine": machine, "rows": rows });
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(&value)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

/// The machine the numbers come from.
#[derive(Debug, Serialize)]
struct Machine {
    cpu: String,
    cores: usize,
    memory_gib: f64,
    kernel: String,
    git: String,
    /// The mount options of the file system the benchmark works on.
    mount: String,
}

impl Machine {
    fn read(dir: &Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let git = repo::git(dir, &["--version"]).unwrap_or_default();
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: (memory_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            git: git.trim().trim_start_matches("git version ").to_owned(),
            mount: mount_of(dir),
        }
    }

    fn line(&self) -> String {
        format!(
            "{}, {} cores, {} GiB, Linux {}, git {}, file system {}",
            self.cpu, self.cores, self.memory_gib, self.kernel, self.git, self.mount
        )
    }
}

/// The type and options of the mount that holds `dir`.
fn mount_of(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.len() >= 4 && dir.starts_with(cols[1]))
                .then(|| (cols[1].len(), format!("{} ({})", cols[2], cols[3])))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, text)| text)
        .unwrap_or_else(|| "unknown".into())
}

/// The size of a folder, for people.
fn du(dir: &Path) -> String {
    let out = Command::new("du").args(["-sh"]).arg(dir).output();
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("?")
            .to_owned()
    })
    .unwrap_or_else(|_| "?".into())
}
