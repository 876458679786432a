//! Test support for braid: hermetic git repositories, fake agents, and a look at everything a
//! run must leave untouched.
//!
//! Every git command here runs with global and system configuration switched off and a fixed
//! identity, so tests behave the same on every machine.
#![allow(clippy::disallowed_methods)] // tests start processes directly, through `command`

pub mod forge;
pub mod http;
pub mod model;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

/// The environment every git and braid process of a test gets.
pub const HERMETIC_ENV: &[(&str, &str)] = &[
    ("GIT_CONFIG_GLOBAL", "/dev/null"),
    ("GIT_CONFIG_NOSYSTEM", "1"),
    ("GIT_AUTHOR_NAME", "Test Author"),
    ("GIT_AUTHOR_EMAIL", "author@example.com"),
    ("GIT_COMMITTER_NAME", "Test Author"),
    ("GIT_COMMITTER_EMAIL", "author@example.com"),
    ("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z"),
    ("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z"),
    // Keeps `git status` from refreshing the index, so snapshots compare the index as the
    // user left it.
    ("GIT_OPTIONAL_LOCKS", "0"),
];

/// A command with the hermetic environment, running in `dir`. Inside a test's folder
/// ([`TestRepo`]), braid's cache is that folder's `cache/`, so each test sees only its own.
pub fn command(program: impl AsRef<std::ffi::OsStr>, dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir);
    if let Some(path) = path_with_agents() {
        cmd.env("PATH", path);
    }
    for (key, value) in HERMETIC_ENV {
        cmd.env(key, value);
    }
    if let Some(cache) = cache_of(dir) {
        cmd.env("BRAID_CACHE", cache);
    }
    cmd
}

/// The folder `tests/agents/install.sh` puts the agent CLIs in.
pub fn agent_tools() -> Option<PathBuf> {
    std::env::var_os("BRAID_AGENT_TOOLS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/braid-agent-tools"))
        })
}

/// `PATH` with the installed agent CLIs first, when they are installed.
pub fn path_with_agents() -> Option<std::ffi::OsString> {
    let bin = agent_tools()?.join("bin");
    if !bin.is_dir() {
        return None;
    }
    let mut dirs = vec![bin];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).ok()
}

/// The cache folder of the test folder that holds `dir`, if one does.
pub fn cache_of(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|a| {
            a.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("braid-test-"))
        })
        .map(|test| test.join("cache"))
}

/// A git repository in its own temporary folder, on branch `main` with one commit.
#[derive(Debug)]
pub struct TestRepo {
    /// Keeps the folder alive; it holds `repo/` and room for plans and scripts beside it.
    pub dir: TempDir,
    /// The repository's working tree.
    pub path: PathBuf,
}

impl TestRepo {
    /// A new repository with a README committed on `main`.
    pub fn init() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("braid-test-")
            .tempdir()
            .expect("temp dir");
        let path = dir.path().join("repo");
        std::fs::create_dir_all(&path).expect("repo dir");
        let repo = TestRepo { dir, path };
        repo.git(&["init", "--quiet", "--initial-branch=main"]);
        repo.commit(&[("README.md", "# test\n")], "initial");
        repo
    }

    /// Runs git in the repository; panics unless it succeeds; returns stdout trimmed.
    pub fn git(&self, args: &[&str]) -> String {
        let out = command("git", &self.path)
            .args(args)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Adds a worktree of the repository at `dir`, its HEAD detached at `rev`.
    pub fn worktree(&self, dir: &Path, rev: &str) {
        let dir = dir.to_str().expect("a UTF-8 path");
        self.git(&["worktree", "add", "--quiet", "--detach", dir, rev]);
    }

    /// Writes files (creating folders) without committing them.
    pub fn write(&self, files: &[(&str, &str)]) {
        for (name, text) in files {
            let path = self.path.join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
            std::fs::write(path, text).expect("write");
        }
    }

    /// Writes files and commits them; returns the commit.
    pub fn commit(&self, files: &[(&str, &str)], message: &str) -> String {
        self.write(files);
        self.git(&["add", "--all"]);
        self.git(&["commit", "--quiet", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    /// The folder beside the repository, for plans and scripts that are not in it.
    pub fn outside(&self) -> &Path {
        self.dir.path()
    }

    /// Writes an executable script beside the repository; returns its path.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.outside().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).expect("script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    /// Writes a plan beside the repository (with `repo: repo`); returns its path.
    pub fn plan(&self, yaml: &str) -> PathBuf {
        let path = self.outside().join("plan.yaml");
        std::fs::write(&path, yaml).expect("plan");
        path
    }

    /// The repository's git directory.
    pub fn git_dir(&self) -> PathBuf {
        self.path.join(".git")
    }

    /// A word unique to this test (its folder's name): a test's agents put it on the
    /// command lines of the processes they start, so [`TestRepo::survivors`] finds them.
    pub fn tag(&self) -> String {
        self.dir
            .path()
            .file_name()
            .expect("a named folder")
            .to_string_lossy()
            .into_owned()
    }

    /// The processes still running whose command line holds [`TestRepo::tag`], as
    /// `pid: command line`.
    pub fn survivors(&self) -> Vec<String> {
        let tag = self.tag();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let pid: i32 = e.file_name().to_str()?.parse().ok()?;
                let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                (cmdline.contains(&tag) && alive(pid)).then(|| format!("{pid}: {cmdline}"))
            })
            .collect()
    }

    /// A folder beside the repository that the plans of tests make writable to their
    /// agents (`sandbox: {writable: [out]}`), for what the agents tell the test.
    pub fn out(&self) -> PathBuf {
        let out = self.outside().join("out");
        std::fs::create_dir_all(&out).expect("out dir");
        out
    }

    /// braid's cache folder for this test's runs (`BRAID_CACHE`).
    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// Every ref under `refs/heads/braid/`.
    pub fn braid_refs(&self) -> Vec<String> {
        self.git(&["for-each-ref", "--format=%(refname)", "refs/heads/braid/"])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The content of `path` at `rev`, or `None` when it has no such file.
    pub fn show(&self, rev: &str, path: &str) -> Option<String> {
        let out = command("git", &self.path)
            .args(["show", &format!("{rev}:{path}")])
            .output()
            .expect("git runs");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Everything a run must leave as it was.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            status: self.git(&[
                "status",
                "--porcelain",
                "--untracked-files=all",
                "--ignored",
            ]),
            head: self.git(&["rev-parse", "HEAD"]),
            head_ref: self.git(&["symbolic-ref", "-q", "HEAD"]),
            index: std::fs::read(self.git_dir().join("index")).unwrap_or_default(),
            refs: self
                .git(&["for-each-ref", "--format=%(refname) %(objectname)"])
                .lines()
                .filter(|l| !l.starts_with("refs/heads/braid/"))
                .map(str::to_owned)
                .collect(),
            config: std::fs::read(self.git_dir().join("config")).unwrap_or_default(),
            hooks: files_under(&self.git_dir().join("hooks")),
            info: files_under(&self.git_dir().join("info")),
            worktrees: files_under(&self.git_dir().join("worktrees")),
        }
    }

    /// Asserts the user's checkout, HEAD, index and non-braid refs are as in `before`, and
    /// that no worktree is registered or left on disk.
    pub fn assert_untouched(&self, before: &Snapshot) {
        let after = self.snapshot();
        assert_eq!(before.status, after.status, "git status changed");
        assert_eq!(before.head, after.head, "HEAD moved");
        assert_eq!(before.head_ref, after.head_ref, "HEAD changed branch");
        assert!(before.index == after.index, "the index changed");
        assert_eq!(before.refs, after.refs, "non-braid refs changed");
        assert!(
            before.config == after.config,
            "the repository's config changed"
        );
        assert_eq!(before.hooks, after.hooks, "hooks changed");
        assert_eq!(before.info, after.info, "info/ changed");
        self.git(&["fsck", "--strict", "--no-progress"]);
        // The user's own worktree records, stale ones too, are as they were: braid makes
        // none and prunes none.
        assert_eq!(
            before.worktrees, after.worktrees,
            "worktree records changed"
        );
        let on_disk = self.cache().join("work");
        let left: Vec<_> = std::fs::read_dir(&on_disk)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "worktree folders left on disk: {left:?}");
        assert!(
            !self.git_dir().join("braid/worktrees").exists(),
            "worktrees inside the git folder"
        );
    }
}

/// What a run must not change in the user's repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    status: String,
    head: String,
    head_ref: String,
    index: Vec<u8>,
    refs: Vec<String>,
    config: Vec<u8>,
    hooks: Vec<(PathBuf, Vec<u8>)>,
    info: Vec<(PathBuf, Vec<u8>)>,
    worktrees: Vec<(PathBuf, Vec<u8>)>,
}

/// Every file under `dir` with its bytes (a link as its target), sorted.
pub fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(root: &Path, at: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        let Ok(entries) = std::fs::read_dir(at) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap_or(&path).to_owned();
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => walk(root, &path, out),
                Ok(m) if m.file_type().is_symlink() => out.push((
                    rel,
                    std::fs::read_link(&path)
                        .map(|t| t.into_os_string().into_encoded_bytes())
                        .unwrap_or_default(),
                )),
                Ok(_) => out.push((rel, std::fs::read(&path).unwrap_or_default())),
                Err(_) => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Runs the braid binary at `bin` with `args` in `dir`, hermetically.
pub fn braid(bin: &Path, dir: &Path, args: &[&str]) -> Output {
    command(bin, dir)
        .args(args)
        .env(
            "BRAID_LOG",
            std::env::var("TEST_BRAID_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .output()
        .expect("braid runs")
}

/// Standard output of a finished command, as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Standard error of a finished command, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Whether a process with this pid is alive (zombies count as gone).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}
