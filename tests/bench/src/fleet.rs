//! Fleet: `braid serve` on TCP, as a fleet meets it. A server always keeps its journal, so
//! every figure here is with the journal on.
//!
//! - 10,000 no-op attempts through TCP: the scheduler scenario's workers (with a worker
//!   token), against a submitted run whose attempt commits were pushed to the server.
//! - A restart with 100,000 attempts queued: the server is killed with SIGKILL and started
//!   again on its state; the time until `Status` answers with the run resumed.
//! - 1,000 simulated workers on 20 connections, each heartbeating every second: the
//!   server's CPU over a window, as a share of one core.
//! - A worker's cold start on the 20,000-file repository (from starting `braid worker` with
//!   an empty cache to the run's report), against `git clone` of the repository over
//!   loopback from `git daemon`, in the same round; then the same warm worker on the same
//!   base (a new run: a fresh worktree) and on a base 5 commits on, whose cost is the
//!   fetch the worker reports in the attempt's `fetch_ms`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use braid_shared::auth::Bearer;
use braid_shared::proto::client_service_client::ClientServiceClient;
use braid_shared::proto::coordinator_message::Kind as Down;
use braid_shared::proto::worker_message::Kind as Up;
use braid_shared::proto::worker_service_client::WorkerServiceClient;
use braid_shared::proto::{Heartbeat, PushChunk, Register, StatusRequest, WorkerMessage};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::repo::{BigRepo, SmallRepo, git, git_command};
use crate::scheduler;
use crate::table::{Baseline, Goal, Row, Unit, secs};
use crate::{braid, say};

/// A `braid serve` of the benchmark's, on loopback TCP.
struct Server {
    child: Child,
    port: u16,
    state: PathBuf,
    worker: String,
    client: String,
}

impl Server {
    /// Starts a server on `state`, on `port` (0: any free port).
    fn start(state: &Path, port: u16) -> Result<Server> {
        std::fs::create_dir_all(state)?;
        let log = state.with_extension(format!("{}.log", fastrand::u32(..)));
        let mut child = braid()?
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--state"])
            .arg(state)
            .env("BRAID_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(120);
        let port = loop {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(rest) = said.split("listening on http://127.0.0.1:").nth(1) {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                break digits.parse::<u16>()?;
            }
            if Instant::now() > deadline || child.try_wait()?.is_some() {
                let _ = child.kill();
                bail!("braid serve did not start; see {}", log.display());
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let tokens = std::fs::read_to_string(state.join("tokens"))?;
        let token = |role: &str| {
            tokens
                .lines()
                .find_map(|l| l.strip_prefix(role).map(|t| t.trim().to_owned()))
                .with_context(|| format!("no {role} token"))
        };
        Ok(Server {
            child,
            port,
            state: state.to_owned(),
            worker: token("worker ")?,
            client: token("client ")?,
        })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Submits `plan` from the repository at `repo`; returns the run's id.
    fn submit(&self, repo: &Path, plan: &Path) -> Result<String> {
        let out = braid()?
            .current_dir(repo)
            .arg("submit")
            .arg(plan)
            .env("BRAID_SERVER", self.url())
            .env("BRAID_TOKEN", &self.client)
            .env("BRAID_LOG", "warn")
            .output()?;
        if !out.status.success() {
            bail!(
                "braid submit failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    async fn client(&self) -> Result<ClientServiceClient<ClientChannel>> {
        let channel = braid_worker::runtime::channel(&self.url()).await?;
        let bearer = Bearer::new(Some(&self.client)).map_err(anyhow::Error::msg)?;
        Ok(ClientServiceClient::with_interceptor(channel, bearer))
    }

    /// The report of run `run`, once it has ended.
    async fn report(&self, run: &str, limit: Duration) -> Result<serde_json::Value> {
        let path = self.state.join("runs").join(run).join("report.json");
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(text) = std::fs::read_to_string(&path)
                && let Ok(report) = serde_json::from_str(&text)
            {
                return Ok(report);
            }
            if Instant::now() > deadline {
                bail!("run {run} did not end within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The server's CPU time so far, in seconds.
    fn cpu(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .context("a stat line")?
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        // SAFETY: sysconf reads a constant of the system.
        #[allow(unsafe_code)]
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Ok(ticks as f64 / per_second)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

type ClientChannel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>;

/// Pushes every object of `repo` into the server's copy of it (the no-op workers report
/// commits made in advance, which a real worker would send up with its result).
async fn push_all(server: &Server, repo: &Path) -> Result<()> {
    let id = std::fs::read_to_string(repo.join(".git/braid/repo-id"))?
        .trim()
        .to_owned();
    let out = git_command(repo)
        .args(["pack-objects", "--revs", "--all", "--stdout", "--quiet"])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!("git pack-objects failed");
    }
    let chunks: Vec<PushChunk> = out
        .stdout
        .chunks(1 << 20)
        .enumerate()
        .map(|(i, data)| PushChunk {
            repository: if i == 0 { id.clone() } else { String::new() },
            data: data.to_vec(),
        })
        .collect();
    server
        .client()
        .await?
        .push(tokio_stream::iter(chunks))
        .await?;
    Ok(())
}

fn write_plan(scratch: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let path = scratch.join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

/// 10,000 no-op attempts through TCP, `rounds` times: attempts/s, p50 and p99.
async fn throughput(
    small: &SmallRepo,
    scratch: &Path,
    rounds: usize,
) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let server = Server::start(&scratch.join("throughput"), 0)?;
    let plan = write_plan(scratch, "fleet-noop.yaml", &scheduler::plan(small))?;
    let changes = Arc::new(small.changes.clone());
    let (mut rates, mut p50s, mut p99s) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let run = server.submit(&small.path, &plan)?;
        if round == 0 {
            push_all(&server, &small.path).await?;
        }
        let all = scheduler::noop_fleet(&server.url(), Some(&server.worker), &changes).await?;
        let (rate, p50, p99) = scheduler::measured(&all)?;
        say(format!(
            "  TCP, journal on: {rate:.0} attempts/s, ready to assigned p50 {:.2} ms, p99 {:.2} ms",
            p50 * 1e3,
            p99 * 1e3
        ));
        let report = server.report(&run, Duration::from_secs(300)).await?;
        if report["status"] != "succeeded" {
            bail!("the no-op run {run} ended {}", report["status"]);
        }
        rates.push(rate);
        p50s.push(p50);
        p99s.push(p99);
    }
    Ok((rates, p50s, p99s))
}

/// Seconds from starting a killed server again until `Status` answers with its run of
/// 100,000 queued attempts, `rounds` times.
async fn restart(small: &SmallRepo, scratch: &Path, rounds: usize) -> Result<Vec<f64>> {
    const TASKS: usize = 3125;
    const ATTEMPTS: usize = 32;
    let mut plan = format!(
        "version: 1\nname: bench-queued\nrepo: {}\nbase: main\ndefaults:\n  agent:\n    command: [\"true\"]\n  attempts: {ATTEMPTS}\ntasks:\n",
        small.path.display()
    );
    for t in 0..TASKS {
        plan.push_str(&format!("  - id: q{t}\n    prompt: nothing\n"));
    }
    let plan = write_plan(scratch, "fleet-queued.yaml", &plan)?;
    let state = scratch.join("restart");
    let mut server = Server::start(&state, 0)?;
    let run = server.submit(&small.path, &plan)?;
    let port = server.port;
    let mut samples = Vec::new();
    for _ in 0..rounds {
        // The run's start is in its journal once Status tells it.
        running(&server, &run, Duration::from_secs(60)).await?;
        server.kill();
        let started = Instant::now();
        server = Server::start(&state, port)?;
        running(&server, &run, Duration::from_secs(60)).await?;
        let took = secs(started.elapsed());
        say(format!(
            "  restart with {} attempts queued: serving again in {:.0} ms",
            TASKS * ATTEMPTS,
            took * 1e3
        ));
        samples.push(took);
    }
    Ok(samples)
}

/// Waits until the server's `Status` answers with `run` running.
async fn running(server: &Server, run: &str, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(mut client) = server.client().await
            && let Ok(reply) = client
                .status(StatusRequest {
                    run: run.to_owned(),
                })
                .await
            && reply
                .get_ref()
                .runs
                .iter()
                .any(|r| r.run == run && r.status == "running")
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("run {run} was not served within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An idle worker that registers and heartbeats every second until `stop`.
async fn idle_worker(
    channel: tonic::transport::Channel,
    token: String,
    name: String,
    registered: mpsc::Sender<()>,
    stop: tokio_util::sync::CancellationToken,
) -> Result<()> {
    let bearer = Bearer::new(Some(&token)).map_err(anyhow::Error::msg)?;
    let (up, rx) = mpsc::channel::<WorkerMessage>(4);
    up.send(WorkerMessage {
        kind: Some(Up::Register(Register {
            name,
            slots: 1,
            labels: Default::default(),
            version: braid_shared::VERSION.to_owned(),
            running: Vec::new(),
        })),
    })
    .await?;
    let mut down = WorkerServiceClient::with_interceptor(channel, bearer)
        .attach(ReceiverStream::new(rx))
        .await?
        .into_inner();
    // Spread over the second, as workers started at different times are.
    tokio::time::sleep(Duration::from_millis(fastrand::u64(..1000))).await;
    let mut beat = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            msg = down.message() => match msg?.and_then(|m| m.kind) {
                Some(Down::Registered(_)) => { let _ = registered.send(()).await; }
                Some(_) => {}
                None => return Ok(()),
            },
            _ = beat.tick() => {
                let _ = up.send(WorkerMessage { kind: Some(Up::Heartbeat(Heartbeat { free_slots: 1, running: Vec::new() })) }).await;
            }
            () = stop.cancelled() => return Ok(()),
        }
    }
}

/// The server's CPU with 1,000 idle workers heartbeating, as a share of one core, over
/// `rounds` windows of 5 s.
async fn heartbeats(scratch: &Path, rounds: usize) -> Result<Vec<f64>> {
    const WORKERS: usize = 1000;
    const CONNECTIONS: usize = 20;
    let server = Server::start(&scratch.join("heartbeats"), 0)?;
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(braid_worker::runtime::channel(&server.url()).await?);
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let (registered, mut joined) = mpsc::channel(WORKERS);
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let channel = channels[w % CONNECTIONS].clone();
            let run = idle_worker(
                channel,
                server.worker.clone(),
                format!("idle-{w}"),
                registered.clone(),
                stop.clone(),
            );
            braid_shared::task::spawn("idle-worker", run)
        })
        .collect();
    for _ in 0..WORKERS {
        tokio::time::timeout(Duration::from_secs(60), joined.recv())
            .await
            .context("1,000 workers did not register within a minute")?;
    }
    // Past the first beats of all of them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut samples = Vec::new();
    for _ in 0..rounds {
        let (cpu, at) = (server.cpu()?, Instant::now());
        tokio::time::sleep(Duration::from_secs(5)).await;
        let share = (server.cpu()? - cpu) / secs(at.elapsed());
        say(format!(
            "  {WORKERS} workers at 1 s heartbeats: {:.1}% of a core",
            share * 100.0
        ));
        samples.push(share);
    }
    stop.cancel();
    for worker in workers {
        worker.await.context("a worker panicked")??;
    }
    Ok(samples)
}

/// Commits `n` one-file changes on top of `main` of the big repository onto `branch`;
/// returns the tip.
fn commits_on(big: &BigRepo, branch: &str, n: usize) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let index = dir.path().join("index");
    let env = [("GIT_INDEX_FILE", index.to_str().context("utf-8")?)];
    let run = |args: &[&str], input: Option<&[u8]>| -> Result<String> {
        let mut cmd = git_command(&big.path);
        cmd.args(args).envs(env);
        let out = if let Some(input) = input {
            let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
            use std::io::Write as _;
            child.stdin.take().context("stdin")?.write_all(input)?;
            child.wait_with_output()?
        } else {
            cmd.output()?
        };
        if !out.status.success() {
            bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let mut tip = big.main.clone();
    run(&["read-tree", &tip], None)?;
    for i in 0..n {
        let path = crate::repo::file_path(i * 11 % 100, i);
        let text = format!("{branch}: change {i}\n");
        let blob = run(&["hash-object", "-w", "--stdin"], Some(text.as_bytes()))?;
        run(
            &[
                "update-index",
                "--add",
                "--cacheinfo",
                &format!("100644,{blob},{path}"),
            ],
            None,
        )?;
        let tree = run(&["write-tree"], None)?;
        tip = run(
            &[
                "commit-tree",
                &tree,
                "-p",
                &tip,
                "-m",
                &format!("change {i}"),
            ],
            None,
        )?;
    }
    git(
        &big.path,
        &["update-ref", &format!("refs/heads/{branch}"), &tip],
    )?;
    Ok(tip)
}

/// How long the worker took to fetch what the run's only attempt needed, in seconds.
fn fetch_secs(report: &serde_json::Value) -> f64 {
    report["tasks"][0]["attempts"][0]["fetch_ms"]
        .as_u64()
        .unwrap_or(0) as f64
        / 1e3
}

/// The seconds from assignment to result of a run's only attempt.
fn attempt_secs(report: &serde_json::Value) -> Result<f64> {
    let attempt = &report["tasks"][0]["attempts"][0];
    if attempt["status"] != "succeeded" {
        bail!(
            "the attempt ended {}: {}",
            attempt["status"],
            attempt["error"]
        );
    }
    let (Some(start), Some(end)) = (
        attempt["started_ms"].as_u64(),
        attempt["finished_ms"].as_u64(),
    ) else {
        bail!("the attempt has no times: {attempt:#}");
    };
    Ok((end - start) as f64 / 1e3)
}

/// Cold starts against `git clone` over loopback, and what a new base costs a warm worker.
struct Starts {
    cold: Vec<f64>,
    clone: Vec<f64>,
    same_base: Vec<f64>,
    new_base: Vec<f64>,
}

async fn starts(big: &BigRepo, scratch: &Path, rounds: usize) -> Result<Starts> {
    let server = Server::start(&scratch.join("starts"), 0)?;
    let one = |base: &str| {
        format!(
            "version: 1\nname: bench-start\nrepo: {}\nbase: {base}\ntasks:\n  - id: one\n    prompt: one file\n    agent: {{command: [sh, -c, 'echo bench > bench.txt']}}\n",
            big.path.display()
        )
    };
    let plan = write_plan(scratch, "fleet-start.yaml", &one("main"))?;
    let token = scratch.join("worker-token");
    std::fs::write(&token, &server.worker)?;
    // git daemon serves the repository's parent folder over loopback.
    let parent = big.path.parent().context("the repository's parent")?;
    let name = big.path.file_name().context("the repository's name")?;
    let port = 30_000 + fastrand::u16(..20_000);
    let mut daemon = Command::new("git")
        .args([
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--listen=127.0.0.1",
            &format!("--port={port}"),
            &format!("--base-path={}", parent.display()),
        ])
        .arg(parent)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let result = async {
        let mut s = Starts {
            cold: Vec::new(),
            clone: Vec::new(),
            same_base: Vec::new(),
            new_base: Vec::new(),
        };
        for round in 0..rounds {
            // The baseline first: git clone over loopback, checkout included.
            let dest = scratch.join(format!("clone-{round}"));
            let url = format!("git://127.0.0.1:{port}/{}", name.to_string_lossy());
            let mut cloned = None;
            for _ in 0..50 {
                let started = Instant::now();
                let ok = git_command(scratch)
                    .args(["clone", "--quiet", &url])
                    .arg(&dest)
                    .status()?
                    .success();
                if ok {
                    cloned = Some(secs(started.elapsed()));
                    break;
                }
                // The daemon may not listen yet.
                let _ = std::fs::remove_dir_all(&dest);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let clone = cloned.context("git clone over loopback failed")?;
            std::fs::remove_dir_all(&dest)?;

            let run = server.submit(&big.path, &plan)?;
            let cache = scratch.join(format!("worker-cache-{round}"));
            let started = Instant::now();
            let mut worker = braid()?
                .args(["worker", "--connect", &server.url(), "--slots", "1", "--name", "bench"])
                .arg("--cache")
                .arg(&cache)
                .arg("--token-file")
                .arg(&token)
                .env("BRAID_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(scratch.join(format!("worker-{round}.log")))?)
                .spawn()?;
            let measured = async {
                let report = server.report(&run, Duration::from_secs(300)).await?;
                let cold = secs(started.elapsed());
                attempt_secs(&report)?;
                let run = server.submit(&big.path, &plan)?;
                let same = attempt_secs(&server.report(&run, Duration::from_secs(120)).await?)?;
                let branch = format!("fleet-{round}-{}", fastrand::u32(..));
                commits_on(big, &branch, 5)?;
                let moved = write_plan(scratch, "fleet-new-base.yaml", &one(&branch))?;
                let run = server.submit(&big.path, &moved)?;
                let report = server.report(&run, Duration::from_secs(120)).await?;
                attempt_secs(&report)?;
                anyhow::Ok((cold, same, fetch_secs(&report)))
            }
            .await;
            let _ = worker.kill();
            let _ = worker.wait();
            let _ = std::fs::remove_dir_all(&cache);
            let (cold, same, new) = measured?;
            say(format!(
                "  cold worker {:.0} ms (git clone over loopback {:.0} ms); warm: an attempt {:.0} ms, fetching a base 5 commits on {:.1} ms",
                cold * 1e3,
                clone * 1e3,
                same * 1e3,
                new * 1e3
            ));
            s.cold.push(cold);
            s.clone.push(clone);
            s.same_base.push(same);
            s.new_base.push(new);
        }
        anyhow::Ok(s)
    }
    .await;
    let _ = daemon.kill();
    let _ = daemon.wait();
    result
}

/// Runs the scenario.
pub async fn run(
    big: &BigRepo,
    small: &SmallRepo,
    scratch: &Path,
    rounds: usize,
) -> Result<Vec<Row>> {
    let (rates, p50s, p99s) = throughput(small, scratch, rounds).await?;
    let restarts = restart(small, scratch, rounds).await?;
    let cpu = heartbeats(scratch, rounds).await?;
    let starts = starts(big, scratch, rounds).await?;
    let row = |measure: &str, unit, samples, baseline, goal, note: &str| Row {
        scenario: "fleet".into(),
        measure: measure.into(),
        unit,
        samples,
        baseline,
        goal,
        note: note.into(),
    };
    let tcp =
        "braid serve on loopback TCP, journal on; 4 gRPC workers x 8 slots with a worker token";
    Ok(vec![
        row(
            "10,000 no-op attempts over TCP: throughput",
            Unit::PerSecond,
            rates,
            None,
            Goal::AtLeast(10_000.0),
            tcp,
        ),
        row(
            "over TCP: ready to assigned, p50",
            Unit::Seconds,
            p50s,
            None,
            Goal::None,
            tcp,
        ),
        row(
            "over TCP: ready to assigned, p99",
            Unit::Seconds,
            p99s,
            None,
            Goal::AtMost(0.005),
            tcp,
        ),
        row(
            "restart with 100,000 attempts queued: serving again",
            Unit::Seconds,
            restarts,
            None,
            Goal::AtMost(2.0),
            "SIGKILL, then braid serve on the same state until Status tells the run resumed",
        ),
        row(
            "1,000 workers at 1 s heartbeats: server CPU (share of a core)",
            Unit::Share,
            cpu,
            None,
            Goal::AtMost(0.20),
            "idle workers on 20 connections, each Register then a Heartbeat a second",
        ),
        row(
            "worker cold start, 20,000 files",
            Unit::Seconds,
            starts.cold,
            Some(Baseline {
                name: "git clone over loopback (git daemon)".into(),
                samples: starts.clone,
            }),
            Goal::RatioAtMost(1.0),
            "from starting braid worker with an empty cache to the run's report: register, fetch, check out, one attempt",
        ),
        row(
            "warm worker, same base: an attempt on 20,000 files",
            Unit::Seconds,
            starts.same_base,
            None,
            Goal::None,
            "assignment to result in a new run: a fresh worktree (runs keep their own), the agent, commit, diff",
        ),
        row(
            "a new base 5 commits on, warm worker: fetching it",
            Unit::Seconds,
            starts.new_base,
            None,
            Goal::AtMost(0.050),
            "the attempt's fetch_ms: asking the server for what the worker's copy lacks, the thin pack, unpacking it --strict",
        ),
    ])
}
