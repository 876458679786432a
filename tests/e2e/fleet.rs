//! Workers as processes of their own, with caches of their own and no view of the
//! coordinator's disk: git objects and logs move over the connection.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use braid_tests::{TestRepo, stderr, stdout};

use crate::{BIN, task};

/// Starts `braid worker` in a mount namespace of its own where `hidden` folders are empty
/// tmpfs mounts: it sees nothing of them, as a worker on another machine would.
fn hidden_worker(dir: &Path, url: &str, cache: &Path, hidden: &[&Path], extra: &[&str]) -> Child {
    let script = hiding_script(hidden.len());
    braid_tests::command("unshare", dir)
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .args(hidden)
        .args([BIN, "worker", "--connect", url, "--cache"])
        .arg(cache)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare runs")
}

/// Runs `plan` with `braid run --workers 0` and one `braid worker` given `allow`; returns
/// the report.
fn run_with_worker(repo: &TestRepo, plan: &Path, allow: &[&str]) -> serde_json::Value {
    let socket = repo.outside().join(format!("c{}.sock", fastrand_suffix()));
    let url = format!("unix:{}", socket.display());
    let run = braid_tests::command(BIN, repo.outside())
        .args(["run", plan.to_str().unwrap(), "--json", "--workers", "0"])
        .args(["--listen", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&socket);
    let own = tempfile::tempdir().unwrap();
    let worker = braid_tests::command(BIN, repo.outside())
        .args(["worker", "--connect", &url, "--slots", "3", "--cache"])
        .arg(own.path())
        .args(allow)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = run.wait_with_output().unwrap();
    let worked = worker.wait_with_output().unwrap();
    assert_eq!(worked.status.code(), Some(0), "{}", stderr(&worked));
    serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)))
}

#[test]
fn a_worker_lets_a_plan_write_only_where_it_allows_and_run_unsandboxed_only_if_told() {
    let repo = TestRepo::init();
    let before = repo.snapshot();
    let shared = repo.outside().join("shared");
    let elsewhere = repo.outside().join("elsewhere");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    // A link inside the allowed folder that leads out of it.
    std::os::unix::fs::symlink(&elsewhere, shared.join("out")).unwrap();
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
tasks:
  - id: writes
    prompt: Leave a note beside the repository.
    sandbox: {{writable: [{shared}]}}
    agent: {{command: [sh, -c, 'echo hi > {shared}/note; echo done > done.txt']}}
  - id: escapes
    prompt: Write through the link.
    sandbox: {{writable: [{link}]}}
    agent: {{command: [sh, -c, 'echo hi > {link}/note; echo done > done.txt']}}
  - id: loose
    prompt: Run with no sandbox.
    sandbox: off
    agent: {{command: [sh, -c, 'echo done > done.txt']}}
  - id: plain
    prompt: Nothing special.
    agent: {{command: [sh, -c, 'echo done > done.txt']}}
"#,
        shared = shared.display(),
        link = shared.join("out").display(),
    ));
    let error = |report: &serde_json::Value, id: &str| {
        task(report, id)["attempts"][0]["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    // A worker that allows nothing: only the plain task runs.
    let report = run_with_worker(&repo, &plan, &[]);
    assert_eq!(task(&report, "plain")["status"], "succeeded", "{report:#}");
    for id in ["writes", "escapes", "loose"] {
        assert_eq!(task(&report, id)["status"], "failed", "{id}");
        assert_eq!(
            task(&report, id)["attempts"][0]["lost"],
            0,
            "{id}: not handed back"
        );
    }
    assert!(
        error(&report, "writes").contains("--allow-writable"),
        "{report:#}"
    );
    assert!(
        error(&report, "loose").contains("--allow-unsandboxed"),
        "{report:#}"
    );
    assert!(!shared.join("note").exists());

    // Allowed: the folder may be written, and the plan may run unsandboxed; a link out of
    // the allowed folder still may not.
    let allow = shared.to_str().unwrap();
    let report = run_with_worker(
        &repo,
        &plan,
        &["--allow-writable", allow, "--allow-unsandboxed"],
    );
    for id in ["writes", "loose", "plain"] {
        assert_eq!(task(&report, id)["status"], "succeeded", "{id}: {report:#}");
    }
    assert_eq!(
        std::fs::read_to_string(shared.join("note")).unwrap(),
        "hi\n"
    );
    assert_eq!(task(&report, "escapes")["status"], "failed");
    assert!(
        error(&report, "escapes").contains("--allow-writable"),
        "{report:#}"
    );
    assert!(!elsewhere.join("note").exists());
    repo.assert_untouched(&before);
}

/// A shell script that mounts an empty tmpfs over each of its first `n` arguments (made
/// first when missing), then runs the rest of them.
fn hiding_script(n: usize) -> String {
    let mut script = String::from("set -e\n");
    for i in 1..=n {
        script.push_str(&format!(
            "mkdir -p \"${i}\"; mount -t tmpfs braid-hidden \"${i}\"\n"
        ));
    }
    script.push_str(&format!("shift {n}\nexec \"$@\"\n"));
    script
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(Instant::now() < deadline, "nothing at {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_worker_that_cannot_see_the_repository_runs_the_plan() {
    let repo = TestRepo::init();
    repo.commit(&[("src/lib.txt", "one\n")], "a file");
    let before = repo.snapshot();
    let seen = repo.path.join("README.md");
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
tasks:
  - id: first
    prompt: Add a note.
    attempts: 2
    agent:
      command: [sh, -c, 'if test -e {seen}; then echo visible; else echo hidden; fi > seen.txt; echo "working on $BRAID_ATTEMPT"; echo "note $BRAID_ATTEMPT" > note.txt']
    checks:
      - {{name: has-note, run: "echo checking; grep -q note note.txt"}}
  - id: second
    deps: [first]
    prompt: Build on the note.
    agent: {{command: [sh, -c, 'cat note.txt src/lib.txt > both.txt']}}
"#,
        seen = seen.display()
    ));
    let socket = repo.outside().join("coordinator.sock");
    let url = format!("unix:{}", socket.display());
    let run = braid_tests::command(BIN, repo.outside())
        .args(["run", plan.to_str().unwrap(), "--json", "--workers", "0"])
        .args(["--listen", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&socket);
    let own = tempfile::tempdir().unwrap();
    let worker = hidden_worker(
        repo.outside(),
        &url,
        own.path(),
        &[&repo.path, &repo.cache()],
        &["--slots", "2", "--name", "elsewhere"],
    );
    let out = run.wait_with_output().unwrap();
    let worked = worker.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\nworker: {}",
        stderr(&out),
        stderr(&worked)
    );
    assert_eq!(worked.status.code(), Some(0), "{}", stderr(&worked));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["workers"][0]["name"], "elsewhere");
    assert_eq!(task(&report, "first")["status"], "succeeded");
    assert_eq!(task(&report, "second")["status"], "succeeded");
    let result = report["result"]["branch"].as_str().unwrap();
    // The agent could not see the repository; the worker still checked out its files,
    // and the second task the first's winner, which it fetched.
    assert_eq!(repo.show(result, "seen.txt").as_deref(), Some("hidden\n"));
    let both = repo.show(result, "both.txt").unwrap();
    assert!(
        both.starts_with("note ") && both.ends_with("one\n"),
        "{both:?}"
    );
    // The logs came over the connection into the run's folder.
    let logs = repo
        .git_dir()
        .join("braid/runs")
        .join(report["run"].as_str().unwrap())
        .join("logs");
    let agent_log = std::fs::read_to_string(logs.join("first.1.agent.log")).unwrap();
    assert!(agent_log.contains("working on 1"), "{agent_log:?}");
    let check_log = std::fs::read_to_string(logs.join("first.1.check.has-note.log")).unwrap();
    assert!(check_log.contains("checking"), "{check_log:?}");
    let first = task(&report, "first");
    assert_eq!(
        first["attempts"][0]["log"].as_str(),
        Some(logs.join("first.1.agent.log").to_str().unwrap())
    );
    // The worker kept a copy of the repository in its own cache, and no worktree.
    let repos: Vec<_> = std::fs::read_dir(own.path().join("repos"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(repos.len(), 1, "{repos:?}");
    assert!(repos[0].ends_with(".git"));
    let work = own.path().join("work");
    assert!(
        !work.exists() || braid_tests::files_under(&work).is_empty(),
        "worktrees left behind"
    );
    repo.assert_untouched(&before);
}

/// A coordinator's host and three workers' hosts: network namespaces this test made, each
/// worker's joined to the coordinator's by a link of its own. Removed when dropped.
struct Net {
    tag: String,
}

const PORT: u16 = 7311;

impl Net {
    fn new() -> Net {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let tag = format!("{:x}", (std::process::id() << 4 | n) & 0xffffff);
        let net = Net { tag };
        let c = net.coordinator();
        net.ip(&["netns", "add", &c]);
        net.ip(&["-n", &c, "link", "set", "lo", "up"]);
        for i in 1..=3 {
            let w = net.worker(i);
            let (here, there) = (net.link(i, 'c'), net.link(i, 'w'));
            net.ip(&["netns", "add", &w]);
            net.ip(&["-n", &w, "link", "set", "lo", "up"]);
            net.ip(&["link", "add", &here, "type", "veth", "peer", "name", &there]);
            net.ip(&["link", "set", &here, "netns", &c]);
            net.ip(&["link", "set", &there, "netns", &w]);
            net.ip(&[
                "-n",
                &c,
                "addr",
                "add",
                &format!("10.77.{i}.1/24"),
                "dev",
                &here,
            ]);
            net.ip(&[
                "-n",
                &w,
                "addr",
                "add",
                &format!("10.77.{i}.2/24"),
                "dev",
                &there,
            ]);
            net.ip(&["-n", &c, "link", "set", &here, "up"]);
            net.ip(&["-n", &w, "link", "set", &there, "up"]);
        }
        net
    }

    fn coordinator(&self) -> String {
        format!("braid-c-{}", self.tag)
    }

    fn worker(&self, i: u32) -> String {
        format!("braid-w{i}-{}", self.tag)
    }

    fn link(&self, i: u32, side: char) -> String {
        format!("bv{i}{side}{}", self.tag)
    }

    /// The address worker `i` reaches the coordinator at.
    fn url_for(i: u32) -> String {
        format!("http://10.77.{i}.1:{PORT}")
    }

    fn ip(&self, args: &[&str]) {
        let out = braid_tests::command("ip", Path::new("/"))
            .args(args)
            .output()
            .expect("ip runs");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Takes worker `i`'s link down, or up again.
    fn set_link(&self, i: u32, up: bool) {
        let state = if up { "up" } else { "down" };
        self.ip(&[
            "-n",
            &self.worker(i),
            "link",
            "set",
            &self.link(i, 'w'),
            state,
        ]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [
            self.coordinator(),
            self.worker(1),
            self.worker(2),
            self.worker(3),
        ] {
            // Whatever still runs in a namespace goes with it.
            let _ = braid_tests::command("ip", Path::new("/"))
                .args(["netns", "pids", &ns])
                .output()
                .map(|out| {
                    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                        if let Ok(pid) = pid.parse::<i32>() {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                    }
                });
            let _ = braid_tests::command("ip", Path::new("/"))
                .args(["netns", "del", &ns])
                .output();
        }
    }
}

/// A coordinator server in the coordinator's namespace, its state in `state`.
struct Coordinator {
    child: Child,
    log: std::path::PathBuf,
    state: std::path::PathBuf,
}

impl Coordinator {
    fn start(net: &Net, dir: &Path, state: &Path) -> Coordinator {
        let log = dir.join(format!("serve-{}.log", fastrand_suffix()));
        let file = std::fs::File::create(&log).unwrap();
        let child = braid_tests::command("ip", dir)
            .args([
                "netns",
                "exec",
                &net.coordinator(),
                BIN,
                "serve",
                "--listen",
            ])
            .arg(format!("0.0.0.0:{PORT}"))
            .arg("--state")
            .arg(state)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("listening on")
        {
            assert!(
                Instant::now() < deadline,
                "the server did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Coordinator {
            child,
            log,
            state: state.to_owned(),
        }
    }

    fn token(&self, role: &str) -> String {
        std::fs::read_to_string(self.state.join("tokens"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{role} ")))
            .unwrap()
            .to_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fastrand_suffix() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
}

/// A worker in worker `i`'s namespace, with its own cache, seeing nothing of `hidden`.
fn fleet_worker(
    net: &Net,
    i: u32,
    dir: &Path,
    token: &str,
    hidden: &[&Path],
    slots: u32,
) -> (Child, std::path::PathBuf) {
    fleet_worker_with(net, i, dir, token, hidden, slots, &[])
}

/// [`fleet_worker`] with more arguments (`--label k=v`).
fn fleet_worker_with(
    net: &Net,
    i: u32,
    dir: &Path,
    token: &str,
    hidden: &[&Path],
    slots: u32,
    extra: &[&str],
) -> (Child, std::path::PathBuf) {
    let own = dir.join(format!("worker-{i}"));
    std::fs::create_dir_all(&own).unwrap();
    std::fs::write(own.join("token"), token).unwrap();
    let log = own.join(format!("worker-{}.log", fastrand_suffix()));
    let script = hiding_script(hidden.len());
    let child = braid_tests::command("ip", dir)
        .args([
            "netns",
            "exec",
            &net.worker(i),
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .args(hidden)
        .args([
            BIN,
            "worker",
            "--connect",
            &Net::url_for(i),
            "--slots",
            &slots.to_string(),
            "--name",
            &format!("host-{i}"),
            "--cache",
        ])
        .arg(own.join("cache"))
        .arg("--token-file")
        .arg(own.join("token"))
        // The plans of these tests keep their marks beside the repository.
        .arg("--allow-writable")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (child, log)
}

/// A coordinator and three workers of one slot each, on hosts of their own, none of which
/// sees the repository or the coordinator's state.
struct Hosts {
    net: Net,
    coordinator: Coordinator,
    workers: Vec<(Child, std::path::PathBuf)>,
}

fn three_hosts(repo: &TestRepo) -> Hosts {
    let net = Net::new();
    let state = repo.outside().join("server");
    let coordinator = Coordinator::start(&net, repo.outside(), &state);
    let hidden: [&Path; 2] = [&repo.path, &state];
    let token = coordinator.token("worker");
    let workers = (1..=3)
        .map(|i| fleet_worker(&net, i, repo.outside(), &token, &hidden, 1))
        .collect();
    Hosts {
        net,
        coordinator,
        workers,
    }
}

/// `braid <args>` as a client, in the coordinator's namespace, from `dir`.
fn client(net: &Net, dir: &Path, token: &str, args: &[&str]) -> std::process::Output {
    // However the fleet fails, the test ends.
    braid_tests::command("timeout", dir)
        .args(["120", "ip", "netns", "exec", &net.coordinator(), BIN])
        .args(args)
        .args(["--server", &format!("http://127.0.0.1:{PORT}")])
        .env("BRAID_TOKEN", token)
        .output()
        .unwrap()
}

#[test]
fn a_fleet_of_three_hosts_runs_a_submitted_plan_and_the_client_fetches_it() {
    let repo = TestRepo::init();
    repo.commit(&[("src/lib.txt", "one\n")], "a file");
    let before = repo.snapshot();
    let net = Net::new();
    let state = repo.outside().join("server");
    let coordinator = Coordinator::start(&net, repo.outside(), &state);
    let hidden: [&Path; 2] = [&repo.path, &state];
    // Host 2 alone has a GPU; the second task needs one.
    let workers: Vec<_> = (1..=3)
        .map(|i| {
            let labels: &[&str] = if i == 2 { &["--label", "gpu=yes"] } else { &[] };
            let token = coordinator.token("worker");
            fleet_worker_with(&net, i, repo.outside(), &token, &hidden, 1, labels)
        })
        .collect();
    let plan = repo.plan(
        r#"version: 1
repo: repo
name: fleet
tasks:
  - id: first
    prompt: Add a note.
    attempts: 3
    agent: {command: [sh, -c, 'echo "note $BRAID_ATTEMPT on $(cat /proc/sys/kernel/hostname)" > note.txt; sleep 0.3']}
    checks: [{name: has-note, run: "grep -q note note.txt"}]
  - id: second
    deps: [first]
    prompt: Build on it.
    requires: {gpu: "yes"}
    attempts: 2
    agent: {command: [sh, -c, 'cat note.txt src/lib.txt > both.txt']}
merge:
  verify:
    - {name: on-a-worker, run: 'test -f both.txt && pwd'}
    - {name: scoped-away, run: "false", paths: ["docs/**"]}
"#,
    );
    let out = client(
        &net,
        &repo.path,
        &coordinator.token("client"),
        &["submit", plan.to_str().unwrap(), "--wait"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\nserver:\n{}",
        stderr(&out),
        coordinator.log()
    );
    let run = stdout(&out).trim().to_owned();
    assert!(
        stderr(&out).contains(&format!("run {run} succeeded")),
        "{}",
        stderr(&out)
    );
    // The branches came into the user's repository, the report beside them.
    let result = format!("braid/{run}/result");
    let both = repo
        .show(&result, "both.txt")
        .expect("the result branch was fetched");
    assert!(
        both.starts_with("note ") && both.ends_with("one\n"),
        "{both:?}"
    );
    for n in 1..=3 {
        assert!(
            repo.show(&format!("braid/{run}/first/{n}"), "note.txt")
                .is_some(),
            "attempt {n}"
        );
    }
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo.git_dir().join(format!("braid/runs/{run}/report.json")))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(report["status"], "succeeded");
    // A worker verified the result, and its log came back into the server's run folder;
    // the check whose paths the result does not touch was skipped.
    let verify = &report["result"]["verify"];
    assert_eq!(verify[0]["status"], "passed", "{verify:#}");
    assert_eq!(verify[1]["status"], "skipped", "{verify:#}");
    let log = state
        .join("runs")
        .join(&run)
        .join("logs/result.1.check.on-a-worker.log");
    let said = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let workers_cache = repo.outside().join("worker-");
    assert!(
        said.trim().starts_with(workers_cache.to_str().unwrap()) && said.contains("/cache/"),
        "the verification ran in {said:?}, not in a worker's cache"
    );
    // All three hosts worked on it: each attempt of `first` ran on a worker of its own.
    let workers_used: std::collections::BTreeSet<_> = task(&report, "first")["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["worker"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(workers_used.len(), 3, "{:#}", report["workers"]);
    // Each fetched the repository before its first job and said how long it took; one of
    // them ran the baseline job of `first` before its attempt, and had it by then.
    let fetched = task(&report, "first")["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["fetch_ms"].as_u64().is_some_and(|ms| ms > 0))
        .count();
    assert!(fetched >= 2, "{:#}", task(&report, "first"));
    // The task that needs a GPU ran only on the host that has one.
    let name_of = |id: &str| {
        report["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["id"] == id)
            .map(|w| w["name"].as_str().unwrap().to_owned())
            .unwrap()
    };
    for attempt in task(&report, "second")["attempts"].as_array().unwrap() {
        assert_eq!(
            name_of(attempt["worker"].as_str().unwrap()),
            "host-2",
            "{attempt:#}"
        );
    }
    // `braid runs` and `braid status` say the same.
    let runs = client(
        &net,
        &repo.path,
        &coordinator.token("client"),
        &["runs", "--json"],
    );
    let runs: serde_json::Value = serde_json::from_str(&stdout(&runs)).unwrap();
    assert_eq!(runs[0]["run"], run.as_str());
    assert_eq!(runs[0]["status"], "succeeded");
    drop(workers);
    repo.assert_untouched(&before);
}

#[test]
fn without_the_right_token_nothing_is_served_and_no_token_is_logged() {
    let repo = TestRepo::init();
    let net = Net::new();
    let state = repo.outside().join("server");
    let coordinator = Coordinator::start(&net, repo.outside(), &state);
    let plan = repo.plan("version: 1\nrepo: repo\ntasks:\n  - id: a\n    prompt: p\n    agent: {command: [\"true\"]}\n");
    let (client_token, worker_token) = (coordinator.token("client"), coordinator.token("worker"));
    let wrong = "not-the-token-0123456789";
    for token in ["", wrong, &worker_token] {
        for args in [
            vec!["runs"],
            vec!["submit", plan.to_str().unwrap()],
            vec!["status", "20261201-000000-abcd"],
        ] {
            let out = client(&net, &repo.path, token, &args);
            assert_eq!(out.status.code(), Some(2), "{args:?} with {token:?}");
            assert!(
                stderr(&out).contains("needs a valid client token"),
                "{}",
                stderr(&out)
            );
            // Nothing about the run is told: not even whether there is one.
            assert!(!stderr(&out).contains("no run"), "{}", stderr(&out));
        }
    }
    // A worker with the client's token, or a wrong one, is refused at once.
    for token in [client_token.as_str(), wrong] {
        let (mut worker, log) = fleet_worker(&net, 1, repo.outside(), token, &[], 1);
        let status = worker.wait().unwrap();
        assert_eq!(status.code(), Some(2));
        let said = std::fs::read_to_string(&log).unwrap();
        assert!(
            said.contains("refused this worker") && said.contains("valid worker token"),
            "{said}"
        );
    }
    // No run was made, and no token is in any log.
    let runs = client(&net, &repo.path, &client_token, &["runs"]);
    assert_eq!(stdout(&runs).trim(), "no runs");
    for (path, text) in braid_tests::files_under(repo.outside()) {
        if path.extension().is_some_and(|e| e == "log") {
            let text = String::from_utf8_lossy(&text);
            for token in [&client_token, &worker_token] {
                assert!(
                    !text.contains(token.as_str()),
                    "{} holds a token",
                    path.display()
                );
            }
            assert!(
                !text.contains(wrong),
                "{} holds the wrong token",
                path.display()
            );
        }
    }
}

#[test]
fn a_worker_of_another_version_is_refused_at_register() {
    let repo = TestRepo::init();
    let net = Net::new();
    let state = repo.outside().join("server");
    let coordinator = Coordinator::start(&net, repo.outside(), &state);
    // A worker that says it is another braid: the protocol spoken by hand, from a thread
    // that joined the coordinator's namespace.
    let token = coordinator.token("worker");
    let ns = net.coordinator();
    let refused = std::thread::spawn(move || {
        let file = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            use braid_shared::proto::worker_message::Kind;
            use braid_shared::proto::{Register, WorkerMessage};
            let channel = braid_worker::runtime::channel(&format!("http://127.0.0.1:{PORT}"))
                .await
                .unwrap();
            let mut client =
                braid_shared::proto::worker_service_client::WorkerServiceClient::with_interceptor(
                    channel,
                    braid_shared::auth::Bearer::new(Some(&token)).unwrap(),
                );
            let hello = WorkerMessage {
                kind: Some(Kind::Register(Register {
                    name: "old".into(),
                    slots: 1,
                    labels: Default::default(),
                    version: "0.0.1".into(),
                    running: Vec::new(),
                })),
            };
            client
                .attach(tokio_stream::iter([hello]))
                .await
                .unwrap_err()
        })
    })
    .join()
    .unwrap();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("the worker braid 0.0.1")
            && refused.message().contains(braid_shared::VERSION),
        "{}",
        refused.message()
    );
}

/// A plan of one task with three attempts, each on a host of its own, that note where they
/// run in `marks` (which every worker sees) and take `secs` seconds.
fn marked_plan(repo: &TestRepo, marks: &Path, secs: f32) -> std::path::PathBuf {
    std::fs::create_dir_all(marks).unwrap();
    repo.plan(&format!(
        r#"version: 1
repo: repo
sandbox: {{writable: [{marks}]}}
tasks:
  - id: t
    prompt: Make out.txt.
    attempts: 3
    agent: {{command: [sh, -c, 'u=$(cat /proc/sys/kernel/random/uuid); echo "$BRAID_WORKTREE" > {marks}/.$u; mv {marks}/.$u {marks}/$BRAID_ATTEMPT.$u; sleep {secs}; echo "attempt $BRAID_ATTEMPT" > out.txt']}}
    checks: [{{name: made, run: "test -f out.txt"}}]
"#,
        marks = marks.display()
    ))
}

/// The host (1-3) attempt `n` started on, each time it started, in order.
fn hosts_of(marks: &Path, n: u32) -> Vec<u32> {
    let mut hosts = Vec::new();
    for entry in std::fs::read_dir(marks).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.split('.').next() == Some(&n.to_string()) {
            let path = std::fs::read_to_string(entry.path()).unwrap();
            let host = (1..=3)
                .find(|i| path.contains(&format!("/worker-{i}/")))
                .expect("a host");
            let made = entry.metadata().and_then(|m| m.modified()).unwrap();
            hosts.push((made, host));
        }
    }
    hosts.sort();
    hosts.into_iter().map(|(_, host)| host).collect()
}

/// Waits until attempts 1 to 3 of a marked plan have each started; the host attempt 1
/// started on.
fn all_three_started(marks: &Path) -> u32 {
    wait_until("all three attempts to start", || {
        (1..=3).all(|n| !hosts_of(marks, n).is_empty())
    });
    hosts_of(marks, 1)[0]
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "waited too long for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Submits `plan` and follows it in the background; returns its output when it ends.
fn submit_in_background(
    net: &Net,
    repo: &TestRepo,
    token: &str,
    plan: &Path,
) -> std::thread::JoinHandle<std::process::Output> {
    let (dir, token, plan) = (repo.path.clone(), token.to_owned(), plan.to_owned());
    let ns = net.coordinator();
    std::thread::spawn(move || {
        braid_tests::command("timeout", &dir)
            .args(["120", "ip", "netns", "exec", &ns, BIN, "submit"])
            .arg(&plan)
            .args(["--wait", "--server", &format!("http://127.0.0.1:{PORT}")])
            .env("BRAID_TOKEN", token)
            .output()
            .unwrap()
    })
}

fn fetched_report(repo: &TestRepo, out: &std::process::Output) -> serde_json::Value {
    let run = stdout(out).trim().to_owned();
    let path = repo.git_dir().join(format!("braid/runs/{run}/report.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_worker_killed_mid_attempt_costs_nothing_and_its_attempt_runs_again() {
    let repo = TestRepo::init();
    let Hosts {
        net,
        coordinator,
        mut workers,
    } = three_hosts(&repo);
    let marks = repo.outside().join("marks");
    let plan = marked_plan(&repo, &marks, 1.5);
    let run = submit_in_background(&net, &repo, &coordinator.token("client"), &plan);
    let host = all_three_started(&marks);
    let (worker, _) = &mut workers[host as usize - 1];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    worker.wait().unwrap();
    let out = run.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\nserver:\n{}",
        stderr(&out),
        coordinator.log()
    );
    let report = fetched_report(&repo, &out);
    let t = task(&report, "t");
    assert_eq!(t["status"], "succeeded");
    let attempts = t["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "no attempt was used up");
    let first = crate::attempt(t, 1);
    assert_eq!(first["status"], "succeeded", "{first:#}");
    assert_eq!(first["lost"], 1, "{first:#}");
    // It ran again, on another host, and finished there.
    let hosts = hosts_of(&marks, 1);
    assert_eq!(hosts.len(), 2, "{hosts:?}");
    assert_ne!(hosts[1], host);
    // Merged once: the result is one winner's, and the integration names the task once.
    assert_eq!(report["result"]["integrated"], serde_json::json!(["t"]));
    let result = report["result"]["branch"].as_str().unwrap();
    assert!(
        repo.show(result, "out.txt")
            .unwrap()
            .starts_with("attempt ")
    );
    assert!(stderr(&out).contains("lost"), "{}", stderr(&out));
}

#[test]
fn a_worker_cut_off_loses_its_lease_and_its_late_result_is_refused() {
    let repo = TestRepo::init();
    let Hosts {
        net,
        coordinator,
        workers,
    } = three_hosts(&repo);
    let marks = repo.outside().join("marks");
    let plan = marked_plan(&repo, &marks, 5.0);
    let run = submit_in_background(&net, &repo, &coordinator.token("client"), &plan);
    let host = all_three_started(&marks);
    net.set_link(host, false);
    let cut = Instant::now();
    // Given up within 3 s, and its attempt given to another host.
    wait_until("the attempt to run again", || {
        hosts_of(&marks, 1).len() == 2
    });
    let detected = cut.elapsed();
    net.set_link(host, true);
    let out = run.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\nserver:\n{}",
        stderr(&out),
        coordinator.log()
    );
    assert!(
        stderr(&out).contains("lost: no heartbeat for 2.5s"),
        "{}",
        stderr(&out)
    );
    // Detection, then a free slot: the others' attempts end at 5 s.
    assert!(detected < Duration::from_secs(8), "{detected:?}");
    let report = fetched_report(&repo, &out);
    let first = crate::attempt(task(&report, "t"), 1);
    assert_eq!(first["lost"], 1, "{first:#}");
    assert_eq!(first["status"], "succeeded");
    assert_ne!(hosts_of(&marks, 1)[1], host);
    // The cut-off worker finished its copy and sent the result: refused as stale.
    let (_, log) = &workers[host as usize - 1];
    wait_until("the late result to be refused", || {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains("result refused")
    });
    assert!(
        std::fs::read_to_string(log)
            .unwrap()
            .contains("stale lease")
    );
}

#[test]
fn two_runs_share_the_workers_fairly() {
    let repo = TestRepo::init();
    let Hosts {
        net,
        coordinator,
        workers: _workers,
    } = three_hosts(&repo);
    let marks = repo.outside().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let plan = |id: &str| {
        let path = repo.outside().join(format!("{id}.yaml"));
        std::fs::write(
            &path,
            format!(
                r#"version: 1
repo: repo
sandbox: {{writable: [{marks}]}}
tasks:
  - id: {id}
    prompt: Work.
    attempts: 6
    agent: {{command: [sh, -c, 'u=$(cat /proc/sys/kernel/random/uuid); s=$(date +%s.%N); touch {marks}/started-{id}; sleep 1; e=$(date +%s.%N); echo "$s $e" > {marks}/.$u; mv {marks}/.$u {marks}/{id}.$u; echo "$BRAID_ATTEMPT" > out.txt']}}
"#,
                marks = marks.display()
            ),
        )
        .unwrap();
        path
    };
    let token = coordinator.token("client");
    // `a` has the fleet to itself at first; `b` comes while it runs.
    let a = submit_in_background(&net, &repo, &token, &plan("a"));
    wait_until("a to start", || marks.join("started-a").exists());
    let b = submit_in_background(&net, &repo, &token, &plan("b"));
    for out in [a.join().unwrap(), b.join().unwrap()] {
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}\nserver:\n{}",
            stderr(&out),
            coordinator.log()
        );
    }
    let mut spans: Vec<(char, f64, f64)> = Vec::new();
    for entry in std::fs::read_dir(&marks).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(run) = name
            .chars()
            .next()
            .filter(|c| (*c == 'a' || *c == 'b') && name.as_bytes().get(1) == Some(&b'.'))
        else {
            continue;
        };
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let times: Vec<f64> = text
            .split_whitespace()
            .map(|t| t.parse().unwrap())
            .collect();
        spans.push((run, times[0], times[1]));
    }
    assert_eq!(spans.len(), 12, "{spans:?}");
    // Never more at once than the fleet's three slots, whichever run they belong to.
    let most = spans
        .iter()
        .map(|(_, start, _)| {
            spans
                .iter()
                .filter(|(_, s, e)| s <= start && start < e)
                .count()
        })
        .max()
        .unwrap();
    assert!(most <= 3, "{most} attempts at once on 3 slots");
    // Shared: once `b` wants slots, `a` no longer takes them all; `b` starts before the
    // last of `a`'s attempts does.
    let first = |run: char| {
        spans
            .iter()
            .filter(|s| s.0 == run)
            .map(|s| s.1)
            .fold(f64::MAX, f64::min)
    };
    let last = |run: char| {
        spans
            .iter()
            .filter(|s| s.0 == run)
            .map(|s| s.1)
            .fold(f64::MIN, f64::max)
    };
    assert!(first('b') < last('a'), "{spans:?}");
}

#[test]
fn a_coordinator_killed_mid_run_resumes_and_takes_back_the_attempts_still_running() {
    let repo = TestRepo::init();
    let net = Net::new();
    let state = repo.outside().join("server");
    let coordinator = Coordinator::start(&net, repo.outside(), &state);
    let hidden: [&Path; 2] = [&repo.path, &state];
    let (worker_token, client_token) = (coordinator.token("worker"), coordinator.token("client"));
    let workers: Vec<_> = (1..=3)
        .map(|i| fleet_worker(&net, i, repo.outside(), &worker_token, &hidden, 1))
        .collect();
    let marks = repo.outside().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
sandbox: {{writable: [{marks}]}}
tasks:
  - id: quick
    prompt: Quick.
    agent: {{command: [sh, -c, 'touch {marks}/quick.$(cat /proc/sys/kernel/random/uuid); echo quick > quick.txt']}}
  - id: slow
    prompt: Slow.
    attempts: 2
    agent: {{command: [sh, -c, 'touch {marks}/slow.$(cat /proc/sys/kernel/random/uuid); sleep 4; echo "slow $BRAID_ATTEMPT" > slow.txt']}}
"#,
        marks = marks.display()
    ));
    let count = |prefix: &str| {
        std::fs::read_dir(&marks)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .count()
    };
    let submitted = client(
        &net,
        &repo.path,
        &client_token,
        &["submit", plan.to_str().unwrap()],
    );
    assert_eq!(submitted.status.code(), Some(0), "{}", stderr(&submitted));
    let run = stdout(&submitted).trim().to_owned();
    let journal = state.join(format!("runs/{run}/journal.sqlite"));
    // Killed once `quick` is done (its result is in the journal) and `slow` runs.
    wait_until("quick to finish and slow to start", || {
        count("slow.") == 2 && count("quick.") == 1
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut first = coordinator;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    first.child.wait().unwrap();
    assert!(journal.is_file());
    let second = Coordinator::start(&net, repo.outside(), &state);
    assert!(
        second.log().contains("resumed 1 run(s)"),
        "{}",
        second.log()
    );
    let watched = client(&net, &repo.path, &client_token, &["watch", &run]);
    assert_eq!(
        watched.status.code(),
        Some(0),
        "{}\nserver:\n{}",
        stderr(&watched),
        second.log()
    );
    assert!(
        stderr(&watched).contains("taken back"),
        "{}",
        stderr(&watched)
    );
    // Nothing ran twice: `quick` came back from the journal, `slow`'s attempts were taken
    // back from the workers still running them.
    assert_eq!(count("quick."), 1);
    assert_eq!(count("slow."), 2);
    let fetched = client(&net, &repo.path, &client_token, &["fetch", &run]);
    assert_eq!(fetched.status.code(), Some(0), "{}", stderr(&fetched));
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo.git_dir().join(format!("braid/runs/{run}/report.json")))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(report["status"], "succeeded", "{report:#}");
    for attempt in task(&report, "slow")["attempts"].as_array().unwrap() {
        assert_eq!(attempt["status"], "succeeded", "{attempt:#}");
        assert_eq!(attempt["lost"], 0, "{attempt:#}");
    }
    assert_eq!(
        report["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == "resumed")
            .count(),
        1
    );
    let result = format!("braid/{run}/result");
    assert_eq!(repo.show(&result, "quick.txt").as_deref(), Some("quick\n"));
    assert!(repo.show(&result, "slow.txt").is_some());
    for (_, log) in &workers {
        let said = std::fs::read_to_string(log).unwrap_or_default();
        assert!(!said.contains("result refused"), "{said}");
    }
}

#[test]
fn a_task_no_worker_can_take_is_reported_at_once() {
    let repo = TestRepo::init();
    let plan = repo.plan(
        r#"version: 1
repo: repo
tasks:
  - id: gpu
    prompt: Train.
    requires: {gpu: a100}
    agent: {command: [sh, -c, 'echo x > x.txt']}
  - id: plain
    prompt: Note.
    agent: {command: [sh, -c, 'echo y > y.txt']}
"#,
    );
    let started = Instant::now();
    let (out, report) = crate::run_plan(&repo, &plan, &["--workers", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(20), "it waited");
    let gpu = task(&report, "gpu");
    assert_eq!(gpu["status"], "failed");
    let error = crate::attempt(gpu, 1)["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("no worker can take it: none has the labels gpu=a100"),
        "{error}"
    );
    assert!(error.contains("local-1"), "{error}");
    assert_eq!(task(&report, "plain")["status"], "succeeded");
}

/// A certificate authority and a certificate for 127.0.0.1 it signed, made with openssl in
/// `dir`: (authority, certificate, key).
fn certificates(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let run = |args: &[&str]| {
        let out = braid_tests::command("openssl", dir)
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=braid-test-ca",
    ]);
    ca.extend([
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    run(&ca);
    let mut req = vec!["req"];
    req.extend(ec);
    req.extend([
        "-keyout",
        "key.pem",
        "-out",
        "req.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&req);
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "req.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}

#[test]
fn over_tls_a_worker_and_a_client_that_trust_the_server_run_a_plan() {
    let repo = TestRepo::init();
    let tls = repo.outside().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let (ca, cert, key) = certificates(&tls);
    let state = repo.outside().join("server");
    let log = repo.outside().join("serve.log");
    let mut server = braid_tests::command(BIN, repo.outside())
        .args(["serve", "--listen", "127.0.0.1:0", "--state"])
        .arg(&state)
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut url = String::new();
    wait_until("the server to listen", || {
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        url = said
            .split_whitespace()
            .find(|w| w.starts_with("https://"))
            .map(|w| w.trim_end_matches(';').to_owned())
            .unwrap_or_default();
        !url.is_empty()
    });
    let token = |role: &str| {
        std::fs::read_to_string(state.join("tokens"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{role} ")).map(str::to_owned))
            .unwrap()
    };
    std::fs::write(repo.outside().join("worker.token"), token("worker")).unwrap();
    let mut worker = braid_tests::command(BIN, repo.outside())
        .args(["worker", "--connect", &url, "--token-file"])
        .arg(repo.outside().join("worker.token"))
        .arg("--cache")
        .arg(repo.outside().join("worker-cache"))
        .env("BRAID_TLS_CA", &ca)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let plan = repo.plan("version: 1\nrepo: repo\ntasks:\n  - id: a\n    prompt: p\n    agent: {command: [sh, -c, 'echo tls > a.txt']}\n");
    // Without the authority, the client does not trust the server, and says why.
    let untrusting = braid_tests::command(BIN, &repo.path)
        .args(["runs", "--server", &url])
        .env("BRAID_TOKEN", token("client"))
        .output()
        .unwrap();
    assert_eq!(untrusting.status.code(), Some(3));
    assert!(
        stderr(&untrusting).contains("certificate"),
        "{}",
        stderr(&untrusting)
    );
    let out = braid_tests::command("timeout", &repo.path)
        .args(["60", BIN, "submit"])
        .arg(&plan)
        .args(["--wait", "--server", &url])
        .env("BRAID_TOKEN", token("client"))
        .env("BRAID_TLS_CA", &ca)
        .output()
        .unwrap();
    let _ = worker.kill();
    let _ = server.kill();
    let _ = (worker.wait(), server.wait());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run = stdout(&out).trim().to_owned();
    assert_eq!(
        repo.show(&format!("braid/{run}/result"), "a.txt")
            .as_deref(),
        Some("tls\n")
    );
}

#[test]
fn a_worker_given_sigterm_drains_finishing_what_it_runs_and_taking_nothing_new() {
    let repo = TestRepo::init();
    let Hosts {
        net,
        coordinator,
        mut workers,
    } = three_hosts(&repo);
    let marks = repo.outside().join("marks");
    let plan = marked_plan(&repo, &marks, 1.5);
    let text = std::fs::read_to_string(&plan)
        .unwrap()
        .replace("attempts: 3", "attempts: 6");
    std::fs::write(&plan, text).unwrap();
    let run = submit_in_background(&net, &repo, &coordinator.token("client"), &plan);
    all_three_started(&marks);
    let host = hosts_of(&marks, 1)[0];
    let (worker, log) = &mut workers[host as usize - 1];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let termed = std::time::SystemTime::now();
    let status = worker.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(&*log).unwrap_or_default()
    );
    assert!(std::fs::read_to_string(&*log).unwrap().contains("draining"));
    let out = run.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\nserver:\n{}",
        stderr(&out),
        coordinator.log()
    );
    let report = fetched_report(&repo, &out);
    let t = task(&report, "t");
    assert_eq!(t["attempts"].as_array().unwrap().len(), 6);
    // Its attempt finished there, once, and cost nothing.
    let first = crate::attempt(t, 1);
    assert_eq!(first["status"], "succeeded", "{first:#}");
    assert_eq!(first["lost"], 0, "{first:#}");
    assert_eq!(hosts_of(&marks, 1), [host]);
    // Nothing started on it after SIGTERM.
    for entry in std::fs::read_dir(&marks).unwrap().flatten() {
        let made = entry.metadata().unwrap().modified().unwrap();
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if made > termed {
            assert!(
                !text.contains(&format!("/worker-{host}/")),
                "{text} started after SIGTERM"
            );
        }
    }
}

#[test]
fn a_worker_whose_connection_breaks_attaches_again_and_keeps_its_attempt() {
    let repo = TestRepo::init();
    let Hosts {
        net,
        coordinator,
        workers,
    } = three_hosts(&repo);
    let marks = repo.outside().join("marks");
    let plan = marked_plan(&repo, &marks, 3.0);
    let run = submit_in_background(&net, &repo, &coordinator.token("client"), &plan);
    let host = all_three_started(&marks);
    // Its TCP connection to the coordinator is torn down under it.
    let killed = braid_tests::command("ip", Path::new("/"))
        .args([
            "netns",
            "exec",
            &net.worker(host),
            "ss",
            "-K",
            "dst",
            &format!("10.77.{host}.1"),
        ])
        .output()
        .unwrap();
    assert!(
        killed.status.success(),
        "{}",
        String::from_utf8_lossy(&killed.stderr)
    );
    let out = run.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\nserver:\n{}",
        stderr(&out),
        coordinator.log()
    );
    assert!(
        stderr(&out).contains("attached again with 1 attempt(s)"),
        "{}",
        stderr(&out)
    );
    let report = fetched_report(&repo, &out);
    let first = crate::attempt(task(&report, "t"), 1);
    assert_eq!(first["status"], "succeeded", "{first:#}");
    assert_eq!(first["lost"], 0, "{first:#}");
    // It ran once, where it started.
    assert_eq!(hosts_of(&marks, 1), [host]);
    let (_, log) = &workers[host as usize - 1];
    let said = std::fs::read_to_string(log).unwrap();
    assert!(said.contains("attached again as"), "{said}");
    assert!(!said.contains("result refused"), "{said}");
}
