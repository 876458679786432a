//! The sandbox around every process braid starts for an attempt: agent, checks, score.
//!
//! bubblewrap (`bwrap`) gives each process a read-only view of the whole system, with only
//! the attempt's worktree, its git folder, its scratch folder and the paths the plan adds
//! writable; every other worktree in braid's cache is hidden behind an empty folder. The
//! process gets its own PID namespace and dies with its parent, so when it ends, is
//! stopped or braid itself is killed, everything it started goes too: a daemon that left
//! the process group and dropped every braid variable included. With `network: none` it
//! also gets a network namespace of its own with nothing in it.
//!
//! Measured here: a sandboxed process starts in about 4.6 ms, against about 0.7 ms
//! without (`braid-bench sandbox`).
//!
//! Neither lets a process make hard links (`link` fails with `EXDEV`, as between file
//! systems; see [`braid_shared::seccomp`]), so a file of the worktree changes only through
//! its own name there, where the worker's journal of the worktree sees it.
//!
//! Where bubblewrap cannot make a sandbox (not installed, or no user namespaces) and the
//! kernel has Landlock, the processes are kept from writing outside the same folders by
//! Landlock instead ([`braid_shared::landlock`]); it cannot hide the other worktrees or
//! give them a PID namespace, so braid says so. `BRAID_SANDBOX=landlock` picks it on a
//! machine that has both.
//!
//! Invariant: nothing the sandboxed process does can write outside the folders named here;
//! the user's repository (working tree, refs, config, hooks, index) is read-only to it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use std::sync::{Arc, OnceLock};

use braid_shared::exec::{Cmd, Output};
use braid_shared::landlock::Ruleset;
use braid_shared::proto::SandboxSpec;
use tokio::sync::OnceCell;

/// The sandbox program.
pub const BWRAP: &str = "bwrap";

/// What every sandbox is: a PID and an IPC namespace of its own that die with braid, the
/// whole system read-only, a minimal `/dev` and a `/proc` of its own.
const BASE: [&str; 10] = [
    "--die-with-parent",
    "--unshare-pid",
    "--unshare-ipc",
    "--ro-bind",
    "/",
    "/",
    "--dev",
    "/dev",
    "--proc",
    "/proc",
];

/// What contains an attempt's processes on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// bubblewrap: namespaces, a read-only system, the other worktrees hidden.
    Bubblewrap,
    /// Landlock: writes outside the allowed folders refused; nothing hidden, no PID
    /// namespace.
    Landlock,
}

/// The kind [`available`] found; bubblewrap until it has looked.
static CHOSEN: OnceLock<Kind> = OnceLock::new();

/// What a worker lets a plan ask of its sandbox. The plan comes over the wire; a worker
/// serving someone else's coordinator decides for its own machine.
#[derive(Debug, Clone, Default)]
pub enum Trust {
    /// Whatever the plan says: it is the local user's own (a run's local workers).
    #[default]
    Plan,
    /// Folders a plan's `sandbox.writable` may name (these or inside them), and whether
    /// it may say `sandbox: off` (`braid worker --allow-writable`, `--allow-unsandboxed`).
    Worker {
        writable: Vec<PathBuf>,
        unsandboxed: bool,
    },
}

impl Trust {
    /// Checks what `spec` asks of the sandbox against what this worker allows, and puts
    /// each writable folder as it really is on this machine (links resolved), so that the
    /// sandbox binds what was checked. Says why when the worker does not run it.
    pub fn admit(&self, spec: Option<&mut SandboxSpec>) -> Result<(), String> {
        let (
            Trust::Worker {
                writable,
                unsandboxed,
            },
            Some(spec),
        ) = (self, spec)
        else {
            return Ok(());
        };
        if spec.off && !unsandboxed {
            return Err(
                "this worker runs nothing unsandboxed, and the plan says `sandbox: off` \
                 (start the worker with --allow-unsandboxed to let it)"
                    .into(),
            );
        }
        let mut refused = Vec::new();
        for path in &mut spec.writable {
            let real = Path::new(path.as_str())
                .is_absolute()
                .then(|| std::fs::canonicalize(path.as_str()).ok())
                .flatten()
                .filter(|real| real.is_dir() && writable.iter().any(|a| real.starts_with(a)));
            match real {
                Some(real) => *path = real.to_string_lossy().into_owned(),
                None => refused.push(path.clone()),
            }
        }
        if refused.is_empty() {
            return Ok(());
        }
        let allowed = if writable.is_empty() {
            "nothing outside an attempt's own folders".to_owned()
        } else {
            let dirs: Vec<String> = writable.iter().map(|p| p.display().to_string()).collect();
            format!("only inside {}", dirs.join(", "))
        };
        Err(format!(
            "the plan's `sandbox.writable` names {}, and this worker's sandboxes may write \
             {allowed} (start the worker with --allow-writable DIR to let them)",
            refused.join(", ")
        ))
    }
}

/// How one attempt's processes are contained.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// No containment: the plan said `sandbox: off`.
    off: bool,
    /// The Landlock ruleset, when Landlock contains the processes (or why it could not
    /// be made).
    landlock: Option<Result<Arc<Ruleset>, String>>,
    network: bool,
    /// Folders the processes may write.
    writable: Vec<PathBuf>,
    /// Folders hidden behind an empty one (the other worktrees).
    hidden: Vec<PathBuf>,
    /// Folders under a hidden one that stay in sight, read-only (a read-only job's
    /// worktree).
    visible: Vec<PathBuf>,
    /// The scratch folder, for `TMPDIR`.
    tmp: Option<PathBuf>,
}

impl Sandbox {
    /// The sandbox `spec` asks for (unset: contained, with network), writable in `own`
    /// (the worktree and its git folder), with `tmp` as scratch and `hidden` out of sight.
    pub fn new(spec: Option<&SandboxSpec>, own: &[&Path], tmp: &Path, hidden: &Path) -> Self {
        let default = SandboxSpec {
            off: false,
            network: true,
            writable: Vec::new(),
            model_only: false,
        };
        let spec = spec.unwrap_or(&default);
        let mut writable: Vec<PathBuf> = own.iter().map(|p| p.to_path_buf()).collect();
        writable.push(tmp.to_owned());
        writable.extend(spec.writable.iter().map(PathBuf::from));
        let landlock = (!spec.off && CHOSEN.get() == Some(&Kind::Landlock)).then(|| {
            Ruleset::new(&writable, spec.network)
                .map(Arc::new)
                .map_err(|e| format!("could not make the Landlock sandbox: {e}"))
        });
        Sandbox {
            off: spec.off,
            landlock,
            network: spec.network,
            writable,
            hidden: vec![hidden.to_owned()],
            visible: Vec::new(),
            tmp: Some(tmp.to_owned()),
        }
    }

    /// The sandbox of a read-only job: as [`Sandbox::new`] with nothing of its own
    /// writable, and `seen` (the worktree and its git folder) in sight but read-only.
    pub fn read_only(
        spec: Option<&SandboxSpec>,
        seen: &[&Path],
        tmp: &Path,
        hidden: &Path,
    ) -> Self {
        let mut sandbox = Sandbox::new(spec, &[], tmp, hidden);
        sandbox.visible = seen.iter().map(|p| p.to_path_buf()).collect();
        sandbox
    }

    /// No sandbox at all.
    pub fn off() -> Self {
        Sandbox {
            off: true,
            landlock: None,
            network: true,
            writable: Vec::new(),
            hidden: Vec::new(),
            visible: Vec::new(),
            tmp: None,
        }
    }

    /// Whether every write the processes make to their own folders reaches a file through
    /// the one name it has there: they run sandboxed and can make no hard links
    /// ([`braid_shared::seccomp`]), so the kernel's notes on those folders name every file
    /// they change (see [`crate::journal`]).
    pub fn names_every_write(&self) -> bool {
        !self.off && braid_shared::seccomp::AVAILABLE && !matches!(self.landlock, Some(Err(_)))
    }

    /// Whether the processes run without any sandbox.
    pub fn is_off(&self) -> bool {
        self.off
    }

    /// Whether the processes get a network namespace of their own (bubblewrap does;
    /// Landlock cannot).
    pub fn has_own_network(&self) -> bool {
        !self.off && self.landlock.is_none()
    }

    /// `cmd`, run inside the sandbox.
    pub fn wrap(&self, cmd: Cmd) -> Cmd {
        if self.off {
            return cmd;
        }
        match &self.landlock {
            Some(Ok(ruleset)) => {
                let cmd = cmd.landlock(Arc::clone(ruleset)).no_hard_links();
                return match &self.tmp {
                    Some(tmp) => cmd.env("TMPDIR", tmp),
                    None => cmd,
                };
            }
            // The process must not run uncontained: it fails, saying why.
            Some(Err(why)) => {
                return refused(cmd, why);
            }
            None => {}
        }
        let mut args: Vec<OsString> = std::iter::once(BWRAP)
            .chain(BASE)
            .map(OsString::from)
            .collect();
        if !self.network {
            args.push("--unshare-net".into());
        }
        for dir in &self.hidden {
            if dir.is_dir() {
                args.extend(["--tmpfs".into(), dir.clone().into_os_string()]);
            }
        }
        for dir in &self.visible {
            let dir = dir.clone().into_os_string();
            args.extend(["--ro-bind".into(), dir.clone(), dir]);
        }
        for dir in &self.writable {
            let dir = dir.clone().into_os_string();
            args.extend(["--bind".into(), dir.clone(), dir]);
        }
        if let Some(tmp) = &self.tmp {
            args.extend([
                "--setenv".into(),
                "TMPDIR".into(),
                tmp.clone().into_os_string(),
            ]);
        }
        // The filter that refuses hard links, which bubblewrap reads from a file of its
        // own: one that stays open across exec, closed here once the child has started.
        let filter = match no_hard_links_fd() {
            Ok(fd) => {
                use std::os::fd::AsRawFd;
                args.extend(["--seccomp".into(), fd.as_raw_fd().to_string().into()]);
                Some(fd)
            }
            Err(why) => {
                return refused(cmd, &why);
            }
        };
        // Where bubblewrap names its first process, whose namespaces braid then holds
        // (`Cmd::hold_namespaces`); without it the sandbox still runs, only ends slower.
        let info = info_pipe()
            .map_err(|e| tracing::debug!("no info pipe for the sandbox: {e}"))
            .ok();
        if let Some((_, write)) = &info {
            use std::os::fd::AsRawFd;
            args.extend(["--info-fd".into(), write.as_raw_fd().to_string().into()]);
        }
        args.extend([
            "--chdir".into(),
            cmd.cwd().to_owned().into_os_string(),
            "--".into(),
        ]);
        let mut cmd = cmd.within(args).own_pid_namespace();
        if let Some(fd) = filter {
            cmd = cmd.inherit(fd);
        }
        match info {
            Some((read, write)) => cmd.inherit(write).hold_namespaces(read),
            None => cmd,
        }
    }
}

/// `cmd`, made to fail saying `why` rather than run uncontained.
fn refused(cmd: Cmd, why: &str) -> Cmd {
    cmd.within(
        ["sh", "-c", "echo \"braid: $0\" >&2; exit 126", why]
            .into_iter()
            .map(OsString::from)
            .collect(),
    )
}

/// A file holding the seccomp filter that refuses hard links, open across exec, for
/// bubblewrap's `--seccomp`.
///
/// Open across exec, it is also inherited by whatever else braid starts while it is open
/// (a millisecond): so it is sealed, and no process can change the filter in it. One that
/// moved its offset could only make bubblewrap refuse to start that attempt.
/// A pipe whose write end stays open across exec, for bubblewrap's `--info-fd`; the read
/// end does not.
fn info_pipe() -> rustix::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    let (read, write) = rustix::pipe::pipe()?;
    rustix::io::fcntl_setfd(&read, rustix::io::FdFlags::CLOEXEC)?;
    Ok((read, write))
}

fn no_hard_links_fd() -> Result<std::os::fd::OwnedFd, String> {
    use rustix::fs::{MemfdFlags, SealFlags, fcntl_add_seals, memfd_create};
    let why = |e: rustix::io::Errno| format!("could not make the sandbox's seccomp filter: {e}");
    let fd = memfd_create("braid-no-hard-links", MemfdFlags::ALLOW_SEALING).map_err(why)?;
    let program = braid_shared::seccomp::program();
    let mut written = 0;
    while written < program.len() {
        written += rustix::io::write(&fd, &program[written..]).map_err(why)?;
    }
    let seals = SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL;
    fcntl_add_seals(&fd, seals).map_err(why)?;
    rustix::fs::seek(&fd, rustix::fs::SeekFrom::Start(0)).map_err(why)?;
    Ok(fd)
}

/// How every process of one attempt starts: its variables, its sandbox, its marker and how
/// long it gets to stop.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Variables on top of the inherited environment.
    pub env: Vec<(&'static str, String)>,
    /// The sandbox around it.
    pub sandbox: Sandbox,
    /// The variable that marks the attempt's processes (see [`Cmd::marker`]).
    pub marker: Option<(&'static str, String)>,
    /// Between SIGTERM and SIGKILL when it is stopped.
    pub grace: std::time::Duration,
}

impl Launch {
    /// `cmd` with this launch's variables, marker, grace and sandbox.
    pub fn prepare(&self, mut cmd: Cmd) -> Cmd {
        for (key, value) in &self.env {
            cmd = cmd.env(key, value);
        }
        if let Some((key, value)) = &self.marker {
            cmd = cmd.marker(key, value);
        }
        self.sandbox.wrap(cmd.grace(self.grace))
    }
}

/// What contains attempts on this machine, or why nothing can, in a sentence. Asked once
/// per process: bwrap is started with the namespaces every sandbox uses; where it fails,
/// Landlock is taken if the kernel has it.
pub async fn available() -> Result<Kind, String> {
    static ANSWER: OnceCell<Result<Kind, String>> = OnceCell::const_new();
    ANSWER
        .get_or_init(|| async {
            let wanted = std::env::var("BRAID_SANDBOX").unwrap_or_default();
            let chosen = if wanted == "landlock" {
                landlock_or(Err("BRAID_SANDBOX=landlock".into()))
            } else {
                match bubblewrap().await {
                    Ok(()) => Ok(Kind::Bubblewrap),
                    Err(why) => landlock_or(Err(why)),
                }
            };
            if let Ok(kind) = chosen {
                let _ = CHOSEN.set(kind);
            }
            chosen
        })
        .await
        .clone()
}

/// Landlock if the kernel has it, else `otherwise`.
fn landlock_or(otherwise: Result<Kind, String>) -> Result<Kind, String> {
    match braid_shared::landlock::abi() {
        Some(_) => Ok(Kind::Landlock),
        None => otherwise.map_err(|why| format!("{why}; and the kernel has no Landlock")),
    }
}

/// Whether bubblewrap makes a sandbox here, or why not.
async fn bubblewrap() -> Result<(), String> {
    let probe = Cmd::new(BWRAP, std::env::temp_dir())
        .args(BASE)
        .args(["--unshare-net", "--", "true"])
        .output(Output::Capture);
    match probe.run().await {
        Ok(done) if done.ending.success() => Ok(()),
        Ok(done) => Err(format!(
            "bubblewrap (`bwrap`) cannot make a sandbox on this machine: {}",
            String::from_utf8_lossy(&done.stderr).trim()
        )),
        Err(err) => Err(format!(
            "bubblewrap (`bwrap`) is not installed or cannot start ({err}); \
             install it (Debian and Ubuntu: `apt-get install bubblewrap`)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workers_trust_resolves_links_before_it_checks_a_writable_folder() {
        let dir = tempfile::tempdir().unwrap();
        let (allowed, outside) = (dir.path().join("allowed"), dir.path().join("outside"));
        std::fs::create_dir_all(allowed.join("inner")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, allowed.join("link")).unwrap();
        let trust = Trust::Worker {
            writable: vec![std::fs::canonicalize(&allowed).unwrap()],
            unsandboxed: false,
        };
        let spec = |paths: &[&Path]| SandboxSpec {
            writable: paths.iter().map(|p| p.display().to_string()).collect(),
            ..Default::default()
        };
        let mut inside = spec(&[&allowed.join("inner")]);
        trust.admit(Some(&mut inside)).unwrap();
        assert_eq!(
            inside.writable,
            [std::fs::canonicalize(allowed.join("inner"))
                .unwrap()
                .display()
                .to_string()]
        );
        for bad in [
            allowed.join("link"),
            allowed.join("inner/../../outside"),
            allowed.join("missing"),
            PathBuf::from("relative"),
        ] {
            let mut asked = spec(&[&bad]);
            let why = trust.admit(Some(&mut asked)).unwrap_err();
            assert!(why.contains("--allow-writable"), "{bad:?}: {why}");
        }
        let mut off = SandboxSpec {
            off: true,
            ..Default::default()
        };
        assert!(
            trust
                .admit(Some(&mut off))
                .unwrap_err()
                .contains("--allow-unsandboxed")
        );
        // A run's own workers take the plan as it is.
        assert!(Trust::Plan.admit(Some(&mut off)).is_ok());
    }

    fn sh(dir: &Path, script: &str) -> Cmd {
        Cmd::new("sh", dir).args(["-c", script])
    }

    #[test]
    fn the_filter_bubblewrap_reads_is_sealed_and_whole() {
        let fd = no_hard_links_fd().unwrap();
        assert!(
            rustix::io::write(&fd, b"more").is_err(),
            "the filter can be changed"
        );
        let mut read = vec![0u8; 4096];
        let n = rustix::io::read(&fd, &mut read).unwrap();
        assert_eq!(read[..n], braid_shared::seccomp::program()[..]);
        assert!(n > 0 && n.is_multiple_of(8));
    }

    #[tokio::test]
    async fn a_sandboxed_process_writes_only_its_own_folders() {
        assert_eq!(available().await, Ok(Kind::Bubblewrap), "bwrap works here");
        let root = tempfile::tempdir().unwrap();
        let work = root.path().join("work");
        let (tree, git, tmp) = (work.join("w-1"), work.join("w-1.git"), work.join("w-1.tmp"));
        let other = work.join("w-2");
        let outside = root.path().join("outside");
        for dir in [&tree, &git, &tmp, &other, &outside] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(other.join("secret"), "other attempt").unwrap();
        let sandbox = Sandbox::new(None, &[&tree, &git], &tmp, &work);
        let script = format!(
            "echo ok > mine; echo ok > \"$TMPDIR/scratch\"; \
             echo no > {outside}/x 2>/dev/null && echo wrote-outside; \
             cat {other}/secret 2>/dev/null && echo saw-other; \
             echo no > /tmp/braid-sandbox-test-$$ 2>/dev/null && echo wrote-tmp; true",
            outside = outside.display(),
            other = other.display(),
        );
        let done = sandbox.wrap(sh(&tree, &script)).run().await.unwrap();
        let out = String::from_utf8_lossy(&done.stdout);
        assert!(
            done.ending.success(),
            "{out} {}",
            String::from_utf8_lossy(&done.stderr)
        );
        assert_eq!(out.trim(), "", "the process got out: {out}");
        assert!(tree.join("mine").is_file());
        assert!(tmp.join("scratch").is_file());
        assert!(!outside.join("x").exists());
    }

    #[tokio::test]
    async fn nothing_a_sandboxed_process_started_outlives_it() {
        assert_eq!(available().await, Ok(Kind::Bubblewrap), "bwrap works here");
        let root = tempfile::tempdir().unwrap();
        let tree = root.path().join("w");
        std::fs::create_dir_all(&tree).unwrap();
        let sandbox = Sandbox::new(None, &[&tree], &tree, root.path());
        // A daemon in a session of its own, without the marker: found by nothing but the
        // PID namespace. The folder's name tags its command line.
        let tag = root
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let done = sandbox
            .wrap(sh(
                &tree,
                &format!(
                    "env -i setsid sh -c 'sleep 300; :' {tag} </dev/null >/dev/null 2>&1 & \
                     echo started"
                ),
            ))
            .run()
            .await
            .unwrap();
        assert!(done.ending.success());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let left = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("cmdline")).ok())
            .filter(|cmd| cmd.contains(&tag))
            .count();
        assert_eq!(left, 0, "the daemon outlived its sandbox");
    }

    #[tokio::test]
    async fn what_a_sandbox_started_is_gone_when_its_run_returns() {
        assert_eq!(available().await, Ok(Kind::Bubblewrap), "bwrap works here");
        let root = tempfile::tempdir().unwrap();
        let tree = root.path().join("w");
        std::fs::create_dir_all(&tree).unwrap();
        let sandbox = Sandbox::new(None, &[&tree], &tree, root.path());
        let tag = root
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        // Daemons in sessions of their own that write as fast as they can, still writing
        // when the sandbox's first process ends: each round, nothing of them may be left
        // the moment `run` returns, and the file stays as it is.
        for round in 0..5 {
            let tick = tree.join(format!("tick-{round}"));
            let done = sandbox
                .wrap(sh(
                    &tree,
                    &format!(
                        "for i in 1 2 3; do env -i setsid sh -c 'while :; do echo x >> {}; done' {tag}                          </dev/null >/dev/null 2>&1 & done;                          while [ ! -s {} ]; do :; done",
                        tick.display(),
                        tick.display()
                    ),
                ))
                .run()
                .await
                .unwrap();
            assert!(done.ending.success());
            let left: Vec<String> = std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("cmdline"))
                        .is_ok_and(|cmd| cmd.contains(&tag))
                })
                .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
                .filter(|stat| {
                    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
                    !state.is_some_and(|s| s.starts_with('Z') || s.starts_with('X'))
                })
                .collect();
            assert!(left.is_empty(), "round {round}: still running: {left:?}");
            let size = std::fs::metadata(&tick).unwrap().len();
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            assert_eq!(
                std::fs::metadata(&tick).unwrap().len(),
                size,
                "round {round}"
            );
        }
    }

    #[tokio::test]
    async fn network_none_has_no_network() {
        assert_eq!(available().await, Ok(Kind::Bubblewrap), "bwrap works here");
        let root = tempfile::tempdir().unwrap();
        let spec = SandboxSpec {
            off: false,
            network: false,
            model_only: false,
            writable: Vec::new(),
        };
        let sandbox = Sandbox::new(Some(&spec), &[root.path()], root.path(), root.path());
        let done = sandbox
            .wrap(sh(
                root.path(),
                "cat /proc/net/dev | tail -n +3 | cut -d: -f1",
            ))
            .run()
            .await
            .unwrap();
        let interfaces = String::from_utf8_lossy(&done.stdout);
        assert_eq!(interfaces.split_whitespace().collect::<Vec<_>>(), ["lo"]);
    }
}
