//! The one way braid starts a child process.
//!
//! Every child gets an explicit working directory, an environment without the variables that
//! would point git at the user's own repository state, its own process group, and optionally
//! a timeout and a cancellation token. When a child ends, whatever it left running in its
//! process group is killed; children that carry a marker variable are also found and killed
//! if they escaped the group. Output is either captured in memory (small commands such as git)
//! or written to a log file with a size cap (agents and checks).

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

/// Environment variables removed from every child: each would redirect git away from the
/// repository or worktree the child runs in, possibly onto the user's own index.
const GIT_REDIRECTS: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
];

/// How long a stopped child gets between SIGTERM and SIGKILL, unless told otherwise
/// ([`Cmd::grace`]).
pub const KILL_GRACE: Duration = Duration::from_millis(500);

/// How long to wait for output pipes to drain after the child is gone.
const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// Longest line sent to a line tap, in bytes.
const TAP_LINE_MAX: usize = 512;

/// Errors starting or supervising a child process.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The program could not be started (missing, not executable, bad working directory).
    #[error("could not start `{program}` in {cwd}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The working directory.
        cwd: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The log file could not be created.
    #[error("could not create log file {path}: {source}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for the child failed.
    #[error("could not wait for `{program}`: {source}")]
    Wait {
        /// The program.
        program: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
}

/// Where a child's standard output and error go.
#[derive(Debug, Clone)]
pub enum Output {
    /// Kept in memory and returned in [`Finished`].
    Capture,
    /// Both streams appended to one file, at most `cap` bytes; the rest is dropped and a
    /// note says so.
    Log {
        /// The log file; created or truncated.
        path: PathBuf,
        /// Largest size in bytes.
        cap: u64,
    },
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It exited by itself with this code.
    Exited(i32),
    /// It was killed by this signal, not by braid.
    Signalled(i32),
    /// It ran past its timeout and braid stopped it.
    TimedOut,
    /// Its cancellation token fired and braid stopped it.
    Cancelled,
    /// It printed nothing for its stall limit and braid stopped it.
    Stalled,
}

impl Ending {
    /// Whether the child exited with code 0.
    pub fn success(self) -> bool {
        self == Ending::Exited(0)
    }

    /// The exit code, when the child exited by itself.
    pub fn code(self) -> Option<i32> {
        match self {
            Ending::Exited(code) => Some(code),
            _ => None,
        }
    }
}

/// A finished child.
#[derive(Debug)]
pub struct Finished {
    /// How it ended.
    pub ending: Ending,
    /// Captured standard output (empty unless [`Output::Capture`]).
    pub stdout: Vec<u8>,
    /// Captured standard error (empty unless [`Output::Capture`]).
    pub stderr: Vec<u8>,
    /// Wall-clock time from start to end.
    pub duration: Duration,
    /// Processes that carried the marker and were still running after the child ended,
    /// outside its process group, each as `pid N (name)`: braid killed them.
    pub escaped: Vec<String>,
}

/// A child process to run. Build it with [`Cmd::new`], then [`Cmd::run`].
#[derive(Debug)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    cwd: PathBuf,
    env: Vec<(OsString, OsString)>,
    stdin: Option<Vec<u8>>,
    output: Output,
    timeout: Option<Duration>,
    cancel: Option<CancellationToken>,
    tap: Option<mpsc::Sender<String>>,
    marker: Option<(String, String)>,
    grace: Duration,
    launcher: Vec<OsString>,
    landlock: Option<Arc<crate::landlock::Ruleset>>,
    no_hard_links: bool,
    own_pid_namespace: bool,
    namespaces: Option<std::os::fd::OwnedFd>,
    inherited: Vec<std::os::fd::OwnedFd>,
    lines: Option<mpsc::Sender<Vec<u8>>>,
    stall: Option<Duration>,
    keep_env: Option<Vec<String>>,
    redact: Arc<Vec<Vec<u8>>>,
}

/// Longest line sent to a line reader ([`Cmd::lines`]), in bytes; the rest of a longer line
/// is dropped.
pub const LINE_MAX: usize = 1 << 20;

impl Cmd {
    /// A command that runs `program` in `cwd`, with captured output and no timeout.
    pub fn new(program: impl AsRef<OsStr>, cwd: impl Into<PathBuf>) -> Self {
        Cmd {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            cwd: cwd.into(),
            env: Vec::new(),
            stdin: None,
            output: Output::Capture,
            timeout: None,
            cancel: None,
            tap: None,
            marker: None,
            grace: KILL_GRACE,
            launcher: Vec::new(),
            landlock: None,
            no_hard_links: false,
            own_pid_namespace: false,
            namespaces: None,
            inherited: Vec::new(),
            lines: None,
            stall: None,
            keep_env: None,
            redact: Arc::new(Vec::new()),
        }
    }

    /// Writes `***` for each of `secrets` wherever the child prints it: in the log, the
    /// line tap and the line reader.
    pub fn redact(mut self, secrets: Vec<String>) -> Self {
        self.redact = Arc::new(
            secrets
                .into_iter()
                .filter(|s| !s.is_empty())
                .map(String::into_bytes)
                .collect(),
        );
        self
    }

    /// Sends every line of standard output, without its line end and cut to [`LINE_MAX`],
    /// to `reader`, none dropped: the child waits while the reader is behind. For agents
    /// whose usage comes last in their event stream, past any log cap.
    pub fn lines(mut self, reader: mpsc::Sender<Vec<u8>>) -> Self {
        self.lines = Some(reader);
        self
    }

    /// Stops the child when it prints nothing, on either stream, for `limit`.
    pub fn stall(mut self, limit: Option<Duration>) -> Self {
        self.stall = limit;
        self
    }

    /// Starts the child with none of braid's environment but the variables named in `keep`
    /// (and those set with [`Cmd::env`]).
    pub fn clear_env(mut self, keep: &[&str]) -> Self {
        self.keep_env = Some(keep.iter().map(|k| (*k).to_owned()).collect());
        self
    }

    /// Restricts the child with a Landlock ruleset before it starts its program.
    pub fn landlock(mut self, ruleset: Arc<crate::landlock::Ruleset>) -> Self {
        self.landlock = Some(ruleset);
        self
    }

    /// Keeps the child, and all it starts, from making hard links ([`crate::seccomp`]).
    pub fn no_hard_links(mut self) -> Self {
        self.no_hard_links = true;
        self
    }

    /// Says the launcher runs the program in a PID namespace of its own that dies with it
    /// (bubblewrap's `--unshare-pid --die-with-parent`): then nothing it started can be
    /// left once it ends, and the look through every process for the marker is skipped.
    pub fn own_pid_namespace(mut self) -> Self {
        self.own_pid_namespace = true;
        self
    }

    /// Holds the namespaces of the process the launcher names on `info` (the read end of
    /// bubblewrap's `--info-fd`, whose `child-pid` heads the sandbox's namespaces) while
    /// the child runs. The last process of a mount namespace tears it down as it exits,
    /// and everything else in the PID namespace dies only after that: held, that teardown
    /// runs afterwards on a thread of its own, and the sandbox is gone sooner (measured
    /// here: 1.5-1.8 ms after bubblewrap exits, 4.5-4.9 ms at the 90th percentile, against
    /// 0.3 ms held). The wait for the sandbox's processes to be gone is then a wait for
    /// that one process, by its pidfd, not a look through every process.
    pub fn hold_namespaces(mut self, info: std::os::fd::OwnedFd) -> Self {
        self.namespaces = Some(info);
        self
    }

    /// Keeps `fd` (open across exec) until the child has started: the launcher reads it
    /// (bubblewrap's `--seccomp FD`).
    pub fn inherit(mut self, fd: std::os::fd::OwnedFd) -> Self {
        self.inherited.push(fd);
        self
    }

    /// Runs the program through `launcher` (a program and its arguments, such as a
    /// sandbox's), which gets the program and its arguments after its own.
    pub fn within(mut self, launcher: Vec<OsString>) -> Self {
        self.launcher = launcher;
        self
    }

    /// How long a stopped child gets between SIGTERM and SIGKILL (agents that flush state
    /// on SIGTERM need seconds).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The working directory.
    pub fn cwd(&self) -> &Path {
        &self.cwd
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable on top of the inherited environment.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Feeds these bytes to standard input, then closes it. Without it, stdin is empty.
    pub fn stdin(mut self, bytes: Vec<u8>) -> Self {
        self.stdin = Some(bytes);
        self
    }

    /// Sets where output goes.
    pub fn output(mut self, output: Output) -> Self {
        self.output = output;
        self
    }

    /// Stops the child (and its process group) after this long. `None` means no limit.
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Stops the child when this token is cancelled.
    pub fn cancel(mut self, token: CancellationToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Sends output lines here too, dropping lines when the channel is full.
    pub fn tap(mut self, tap: mpsc::Sender<String>) -> Self {
        self.tap = Some(tap);
        self
    }

    /// Marks the child and everything it starts with the variable `key=value`, so that
    /// processes that left the process group are still found and stopped at the end.
    pub fn marker(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self.marker = Some((key.to_owned(), value.to_owned()));
        self
    }

    /// Runs the command to its end. Whatever it started is stopped when it ends.
    pub async fn run(mut self) -> Result<Finished, ExecError> {
        let started = Instant::now();
        let program = self.program.to_string_lossy().into_owned();
        let (exe, args) = match self.launcher.split_first() {
            Some((launcher, own)) => {
                let mut args = own.to_vec();
                args.push(self.program.clone());
                args.extend(self.args.iter().cloned());
                (launcher.clone(), args)
            }
            None => (self.program.clone(), self.args.clone()),
        };
        #[allow(clippy::disallowed_methods)] // this is the one wrapper
        let mut command = tokio::process::Command::new(&exe);
        command
            .args(&args)
            .current_dir(&self.cwd)
            .process_group(0)
            .kill_on_drop(true)
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(keep) = &self.keep_env {
            command.env_clear();
            for key in keep {
                if let Some(value) = std::env::var_os(key) {
                    command.env(key, value);
                }
            }
        }
        for key in GIT_REDIRECTS {
            command.env_remove(key);
        }
        if self.no_hard_links {
            #[allow(unsafe_code)]
            // SAFETY: the closure runs in the child between fork and exec, and makes only
            // the two system calls of `no_hard_links`: no allocation, no lock.
            unsafe {
                command.pre_exec(crate::seccomp::no_hard_links);
            }
        }
        if let Some(ruleset) = &self.landlock {
            let fd = ruleset.raw();
            #[allow(unsafe_code)]
            // SAFETY: the closure runs in the child between fork and exec, and makes only
            // the two system calls of `restrict_self`: no allocation, no lock.
            unsafe {
                command.pre_exec(move || crate::landlock::restrict_self(fd));
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));

        let sink = match &self.output {
            Output::Capture => None,
            Output::Log { path, cap } => Some(Arc::new(Mutex::new(
                LogSink::create(path, *cap, self.redact.clone()).await?,
            ))),
        };

        let mut child = command.spawn().map_err(|source| ExecError::Spawn {
            program: program.clone(),
            cwd: self.cwd.clone(),
            source,
        })?;
        // The child has its copies.
        self.inherited.clear();
        let held = self
            .namespaces
            .take()
            .map(|info| crate::task::spawn("namespaces", Held::read(info)));
        let t_spawned = started.elapsed();
        let pgid = child.id().map(|id| Pid::from_raw(id as i32));
        // A caller that stops waiting (its task aborted) takes the child's group with it.
        let mut group = Group(pgid);

        if let (Some(bytes), Some(mut pipe)) = (self.stdin, child.stdin.take()) {
            // A child that does not read its input must not block us: write in the background
            // and ignore a closed pipe.
            crate::task::spawn("stdin", async move {
                let _ = pipe.write_all(&bytes).await;
                let _ = pipe.shutdown().await;
            });
        }
        // Milliseconds from the start to the last output, for the stall limit.
        let active = Arc::new(AtomicU64::new(0));
        let out = child.stdout.take().map(|pipe| {
            let reader = Reader {
                sink: sink.clone(),
                tap: self.tap.clone(),
                lines: self.lines.clone(),
                active: active.clone(),
                started,
                redact: self.redact.clone(),
            };
            crate::task::spawn("stdout", drain(pipe, reader))
        });
        let err = child.stderr.take().map(|pipe| {
            let reader = Reader {
                sink: sink.clone(),
                tap: self.tap.clone(),
                lines: None,
                active: active.clone(),
                started,
                redact: self.redact.clone(),
            };
            crate::task::spawn("stderr", drain(pipe, reader))
        });
        drop(self.lines);
        let stalled = async {
            let Some(limit) = self.stall else {
                return std::future::pending().await;
            };
            loop {
                let last = Duration::from_millis(active.load(Ordering::Relaxed));
                let due = last + limit;
                let now = started.elapsed();
                if now >= due {
                    return;
                }
                tokio::time::sleep(due - now).await;
            }
        };

        let timeout = async {
            match self.timeout {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        let cancelled = async {
            match &self.cancel {
                Some(token) => token.cancelled().await,
                None => std::future::pending().await,
            }
        };
        let wait_error = |source| ExecError::Wait {
            program: program.clone(),
            source,
        };
        let ending = tokio::select! {
            status = child.wait() => ending_of(status.map_err(wait_error)?),
            () = timeout => {
                stop(&mut child, pgid, self.grace).await;
                Ending::TimedOut
            }
            () = cancelled => {
                stop(&mut child, pgid, self.grace).await;
                Ending::Cancelled
            }
            () = stalled => {
                stop(&mut child, pgid, self.grace).await;
                Ending::Stalled
            }
        };
        let t_exited = started.elapsed();
        // Whatever the child left running in its group goes with it, and is gone (not just
        // signalled) before this returns.
        // What the sandbox's namespaces were held by, known if it was read in time.
        let held = match held {
            Some(reader) if reader.is_finished() => reader.await.ok().flatten(),
            Some(reader) => {
                reader.abort();
                None
            }
            None => None,
        };
        if let Some(pgid) = group.0.take()
            && killpg(pgid, Signal::SIGKILL).is_ok()
        {
            match &held {
                // Once the process that heads the PID namespace has exited, every other
                // process in it is gone, and nothing in it could leave the namespace.
                Some(held) => wait_gone(|| !held.exited()).await,
                None => wait_gone(|| group_running(pgid)).await,
            }
        }
        if let Some(held) = held {
            // The teardown the held namespaces saved the sandbox's last process: here, off
            // the async threads and off the caller's way.
            drop(tokio::task::spawn_blocking(move || drop(held)));
        }
        let mut escaped = Vec::new();
        if let Some((key, value)) = self.marker.clone().filter(|_| !self.own_pid_namespace) {
            // A look through every process: off the async threads.
            let killed = tokio::task::spawn_blocking(move || kill_marked(&key, &value))
                .await
                .unwrap_or_default();
            if !killed.is_empty() {
                wait_gone(|| killed.iter().any(|(pid, _)| running(*pid))).await;
            }
            escaped = killed
                .into_iter()
                .map(|(pid, name)| format!("pid {pid} ({name})"))
                .collect();
        }

        let t_swept = started.elapsed();
        let stdout = collect(out).await;
        let stderr = collect(err).await;
        if let Some(sink) = sink {
            sink.lock().await.finish().await;
        }
        tracing::debug!(
            %program,
            spawn_ms = t_spawned.as_secs_f64() * 1e3,
            exited_ms = t_exited.as_secs_f64() * 1e3,
            swept_ms = t_swept.as_secs_f64() * 1e3,
            total_ms = started.elapsed().as_secs_f64() * 1e3,
            "process ended"
        );
        Ok(Finished {
            ending,
            stdout,
            stderr,
            duration: started.elapsed(),
            escaped,
        })
    }
}

fn ending_of(status: std::process::ExitStatus) -> Ending {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Ending::Exited(code),
        (None, Some(signal)) => Ending::Signalled(signal),
        (None, None) => Ending::Exited(-1),
    }
}

/// The namespaces of a sandbox's first process, held open, and a pidfd of that process.
struct Held {
    pidfd: std::os::fd::OwnedFd,
    _namespaces: Vec<std::fs::File>,
}

impl Held {
    /// Reads the launcher's info (`{"child-pid": N, ...}`) from `info` and holds what that
    /// process is in; `None` when it is not there, or the process ended first.
    async fn read(info: std::os::fd::OwnedFd) -> Option<Held> {
        let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(info).ok()?;
        let mut text = Vec::new();
        let mut chunk = [0u8; 512];
        // Whatever else inherited the write end may hold it open: the end is the closing
        // brace, not the end of the stream.
        while !text.contains(&b'}') {
            let n = pipe.read(&mut chunk).await.ok()?;
            if n == 0 || text.len() > 64 * 1024 {
                return None;
            }
            text.extend_from_slice(&chunk[..n]);
        }
        let info: serde_json::Value = serde_json::from_slice(&text).ok()?;
        let pid = i32::try_from(info.get("child-pid")?.as_i64()?).ok()?;
        // The pidfd first: the namespaces opened after it are that process's, not those of
        // another that took its number.
        let pidfd = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(pid)?,
            rustix::process::PidfdFlags::empty(),
        )
        .ok()?;
        let namespaces = ["mnt", "ipc", "net"]
            .iter()
            .filter_map(|ns| std::fs::File::open(format!("/proc/{pid}/ns/{ns}")).ok())
            .collect();
        let held = Held {
            pidfd,
            _namespaces: namespaces,
        };
        (!held.exited()).then_some(held)
    }

    /// Whether the process has exited.
    fn exited(&self) -> bool {
        use rustix::event::{PollFd, PollFlags, poll};
        let mut fds = [PollFd::new(&self.pidfd, PollFlags::IN)];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // A pidfd is readable once its process has exited; an error counts as exited, so
        // a wait on it cannot hang.
        poll(&mut fds, Some(&zero)).map_or(true, |n| n > 0)
    }
}

/// A child's process group, killed when dropped unless taken.
struct Group(Option<Pid>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

/// Asks the child's group to stop, then kills it after `grace`.
async fn stop(child: &mut tokio::process::Child, pgid: Option<Pid>, grace: Duration) {
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, Signal::SIGTERM);
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        if let Some(pgid) = pgid {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        let _ = child.kill().await;
    }
}

/// Waits while `still_there` holds, for at most [`KILL_GRACE`]: a killed process takes a
/// moment to die.
async fn wait_gone(still_there: impl Fn() -> bool) {
    let deadline = Instant::now() + KILL_GRACE;
    // Most are gone within a millisecond (a sandbox's processes die as its namespace
    // goes): look again soon, then less and less often.
    let mut pause = Duration::from_micros(50);
    while Instant::now() < deadline && still_there() {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// The state letter and process group of `pid`, from `/proc/<pid>/stat`.
fn stat_of(pid: &str) -> Option<(String, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name: state, ppid, pgrp, ...
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.to_owned();
    let group = fields.nth(1)?.parse().ok()?;
    Some((state, group))
}

/// Whether `pid` is running (zombies that only wait to be reaped count as gone).
fn running(pid: i32) -> bool {
    stat_of(&pid.to_string()).is_some_and(|(state, _)| !matches!(state.as_str(), "Z" | "X"))
}

/// Whether any process of group `pgid` is still running.
fn group_running(pgid: Pid) -> bool {
    // No process in the group at all, not even a zombie: one system call says so.
    if killpg(pgid, None).is_err() {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        entry
            .file_name()
            .to_str()
            .and_then(stat_of)
            .is_some_and(|(state, group)| {
                group == pgid.as_raw() && !matches!(state.as_str(), "Z" | "X")
            })
    })
}

/// Kills every process of this user whose environment holds `key=value`; returns their
/// pids and names. Processes that put themselves into a new session or group are found
/// this way.
fn kill_marked(key: &str, value: &str) -> Vec<(i32, String)> {
    let needle = format!("{key}={value}");
    let mut killed = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return killed;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ
            .split(|b| *b == 0)
            .any(|var| var == needle.as_bytes())
            && nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL).is_ok()
        {
            let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            killed.push((pid as i32, name.trim().to_owned()));
        }
    }
    killed
}

async fn collect(reader: Option<tokio::task::JoinHandle<Vec<u8>>>) -> Vec<u8> {
    let Some(handle) = reader else {
        return Vec::new();
    };
    let abort = handle.abort_handle();
    match tokio::time::timeout(DRAIN_WAIT, handle).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => Vec::new(),
        Err(_) => {
            // A process outside our reach still holds the pipe; stop reading.
            abort.abort();
            Vec::new()
        }
    }
}

/// Where the output of one pipe goes.
struct Reader {
    sink: Option<Arc<Mutex<LogSink>>>,
    tap: Option<mpsc::Sender<String>>,
    lines: Option<mpsc::Sender<Vec<u8>>>,
    active: Arc<AtomicU64>,
    started: Instant,
    redact: Arc<Vec<Vec<u8>>>,
}

/// Reads a pipe to its end into the log sink, or into memory when there is none.
async fn drain(mut pipe: impl AsyncRead + Unpin, mut to: Reader) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut partial: Vec<u8> = Vec::new();
    let mut line: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        to.active
            .store(to.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let chunk = &buf[..n];
        match &to.sink {
            Some(sink) => sink.lock().await.write(chunk).await,
            None => kept.extend_from_slice(chunk),
        }
        if let Some(tap) = &to.tap {
            partial.extend_from_slice(chunk);
            while let Some(end) = partial.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = partial.drain(..=end).collect();
                send_line(tap, &redacted(&to.redact, &line[..line.len() - 1]));
            }
            if partial.len() > TAP_LINE_MAX {
                send_line(tap, &redacted(&to.redact, &partial));
                partial.clear();
            }
        }
        if let Some(reader) = &to.lines {
            let mut rest = chunk;
            while let Some(end) = rest.iter().position(|b| *b == b'\n') {
                let room = LINE_MAX.saturating_sub(line.len());
                line.extend_from_slice(&rest[..end.min(room)]);
                rest = &rest[end + 1..];
                let whole = redacted(&to.redact, &std::mem::take(&mut line));
                if reader.send(whole).await.is_err() {
                    to.lines = None;
                    break;
                }
            }
            let room = LINE_MAX.saturating_sub(line.len());
            line.extend_from_slice(&rest[..rest.len().min(room)]);
        }
    }
    if let Some(tap) = to.tap.as_ref().filter(|_| !partial.is_empty()) {
        send_line(tap, &redacted(&to.redact, &partial));
    }
    if let Some(reader) = to.lines.as_ref().filter(|_| !line.is_empty()) {
        let _ = reader.send(redacted(&to.redact, &line)).await;
    }
    kept
}

/// `bytes` with every secret replaced by `***`.
fn redacted(secrets: &[Vec<u8>], bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for secret in secrets {
        let mut i = 0;
        let mut next = Vec::with_capacity(out.len());
        while i < out.len() {
            if out[i..].starts_with(secret) {
                next.extend_from_slice(b"***");
                i += secret.len();
            } else {
                next.push(out[i]);
                i += 1;
            }
        }
        out = next;
    }
    out
}

fn send_line(tap: &mpsc::Sender<String>, line: &[u8]) {
    let line = &line[..line.len().min(TAP_LINE_MAX)];
    let _ = tap.try_send(String::from_utf8_lossy(line).into_owned());
}

/// A log file with a size cap.
struct LogSink {
    file: tokio::fs::File,
    written: u64,
    cap: u64,
    dropped: u64,
    redact: Arc<Vec<Vec<u8>>>,
    /// The end of what came so far, held back while it could be the start of a secret.
    held: Vec<u8>,
}

impl LogSink {
    async fn create(path: &Path, cap: u64, redact: Arc<Vec<Vec<u8>>>) -> Result<Self, ExecError> {
        let log_error = |source| ExecError::Log {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(log_error)?;
        }
        let file = tokio::fs::File::create(path).await.map_err(log_error)?;
        Ok(LogSink {
            file,
            written: 0,
            cap,
            dropped: 0,
            redact,
            held: Vec::new(),
        })
    }

    async fn write(&mut self, chunk: &[u8]) {
        if self.redact.is_empty() {
            return self.put(chunk).await;
        }
        self.held.extend_from_slice(chunk);
        let data = redacted(&self.redact, &std::mem::take(&mut self.held));
        let keep = self.redact.iter().map(Vec::len).max().unwrap_or(1) - 1;
        let cut = data.len().saturating_sub(keep);
        self.held = data[cut..].to_vec();
        self.put(&data[..cut]).await;
    }

    async fn put(&mut self, chunk: &[u8]) {
        let room = self.cap.saturating_sub(self.written) as usize;
        let take = room.min(chunk.len());
        if take > 0 && self.file.write_all(&chunk[..take]).await.is_ok() {
            self.written += take as u64;
        }
        self.dropped += (chunk.len() - take) as u64;
    }

    async fn finish(&mut self) {
        let held = std::mem::take(&mut self.held);
        self.put(&held).await;
        if self.dropped > 0 {
            let note = format!(
                "\n[braid: log cut at {} bytes; {} more bytes dropped]\n",
                self.cap, self.dropped
            );
            let _ = self.file.write_all(note.as_bytes()).await;
        }
        let _ = self.file.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Cmd {
        Cmd::new("sh", std::env::temp_dir()).args(["-c", script])
    }

    #[tokio::test]
    async fn captures_output_and_exit_code() {
        let done = sh("echo out; echo err >&2; exit 3").run().await.unwrap();
        assert_eq!(done.ending, Ending::Exited(3));
        assert_eq!(done.stdout, b"out\n");
        assert_eq!(done.stderr, b"err\n");
    }

    #[tokio::test]
    async fn secrets_never_reach_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        // The key is printed in two writes, split inside it.
        let done =
            sh("printf 'key=sk-abc'; sleep 0.1; printf 'def123 end\\n'; echo sk-abcdef123 >&2")
                .output(Output::Log {
                    path: log.clone(),
                    cap: 1 << 20,
                })
                .redact(vec!["sk-abcdef123".into()])
                .run()
                .await
                .unwrap();
        assert!(done.ending.success());
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.contains("sk-abc"), "{text}");
        assert_eq!(text.matches("***").count(), 2, "{text}");
    }

    #[tokio::test]
    async fn feeds_stdin() {
        let done = Cmd::new("cat", std::env::temp_dir())
            .stdin(b"hello".to_vec())
            .run()
            .await
            .unwrap();
        assert_eq!(done.stdout, b"hello");
    }

    #[tokio::test]
    async fn timeout_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let done = sh(&script)
            .timeout(Some(Duration::from_millis(300)))
            .run()
            .await
            .unwrap();
        assert_eq!(done.ending, Ending::TimedOut);
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| s.contains(") Z "))
                    .unwrap_or(true),
            "grandchild {pid} survived"
        );
    }

    #[tokio::test]
    async fn a_run_given_up_by_its_caller_takes_its_group_along() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let running = crate::task::spawn("given-up", sh(&script).run());
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&pidfile).map_or(true, |s| s.trim().is_empty()) {
            assert!(Instant::now() < deadline, "the script never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        running.abort();
        let _ = running.await;
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while running_pid(pid) {
            assert!(Instant::now() < deadline, "grandchild {pid} survived");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether `pid` is a live process (a zombie is not).
    fn running_pid(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
    }

    #[tokio::test]
    async fn log_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        let done = sh("head -c 10000 /dev/zero | tr '\\0' a")
            .output(Output::Log {
                path: log.clone(),
                cap: 100,
            })
            .run()
            .await
            .unwrap();
        assert!(done.ending.success());
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.starts_with(&"a".repeat(100)));
        assert!(text.contains("9900 more bytes dropped"), "{text}");
    }

    #[tokio::test]
    async fn a_stopped_child_gets_its_grace_to_finish() {
        // It takes a second to wind down after SIGTERM: enough with 3 s of grace, not with
        // 200 ms.
        for (grace, finished) in [(3000, true), (200, false)] {
            let dir = tempfile::tempdir().unwrap();
            let done_file = dir.path().join("flushed");
            let script = format!(
                "trap 'sleep 1; touch {}; exit 0' TERM; while :; do sleep 0.05; done",
                done_file.display()
            );
            let done = sh(&script)
                .timeout(Some(Duration::from_millis(200)))
                .grace(Duration::from_millis(grace))
                .run()
                .await
                .unwrap();
            assert_eq!(done.ending, Ending::TimedOut);
            assert_eq!(done_file.exists(), finished, "grace {grace} ms");
        }
    }

    #[tokio::test]
    async fn processes_that_left_the_group_are_killed_and_named() {
        // The child waits until the daemon is in a session of its own, so that it has left
        // the group by the time the child ends.
        let session = |pid: &str| format!("$(cut -d' ' -f6 /proc/{pid}/stat)");
        let script = format!(
            "setsid sleep 30 </dev/null >/dev/null 2>&1 & \
             while [ \"{}\" = \"{}\" ]; do sleep 0.01; done",
            session("$!"),
            session("$$")
        );
        let done = sh(&script)
            .marker("BRAID_TEST_MARK", &format!("{}", std::process::id()))
            .run()
            .await
            .unwrap();
        assert!(done.ending.success());
        assert!(
            done.escaped.iter().any(|e| e.ends_with("(sleep)")),
            "{:?}",
            done.escaped
        );
    }

    #[tokio::test]
    async fn cancel_stops_the_child() {
        let token = CancellationToken::new();
        let cancel = token.clone();
        crate::task::spawn("cancel", async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            cancel.cancel();
        });
        let done = sh("sleep 30").cancel(token).run().await.unwrap();
        assert_eq!(done.ending, Ending::Cancelled);
        assert!(done.duration < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn the_namespaces_of_the_process_bubblewrap_names_are_held_until_it_exits() {
        use std::io::Write;
        #[allow(clippy::disallowed_methods)] // a process that only has to be there, by pid
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let (read, write) = rustix::pipe::pipe().unwrap();
        let mut write = std::fs::File::from(write);
        // As bubblewrap writes it, in two writes, with the end held open.
        write
            .write_all(format!("{{\n    \"child-pid\": {}", child.id()).as_bytes())
            .unwrap();
        let reader = crate::task::spawn("namespaces", Held::read(read));
        tokio::time::sleep(Duration::from_millis(20)).await;
        write
            .write_all(b",\n    \"net-namespace\": 1\n}\n")
            .unwrap();
        let held = reader.await.unwrap().expect("read and held");
        assert_eq!(held._namespaces.len(), 3, "mnt, ipc and net");
        assert!(!held.exited());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(held.exited());
        drop(write);

        // Nothing to hold: not JSON, or a process that is gone.
        for text in ["not json}", "{\"child-pid\": 999999999}"] {
            let (read, write) = rustix::pipe::pipe().unwrap();
            std::fs::File::from(write)
                .write_all(text.as_bytes())
                .unwrap();
            assert!(Held::read(read).await.is_none(), "{text}");
        }
    }
}
