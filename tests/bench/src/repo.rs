//! The benchmarks' inputs, generated deterministically: a 20,000-file repository of about
//! 100 MB in 200 folders, and a one-file repository. Both are made with `git fast-import`,
//! so generating them costs seconds, not the minutes a checkout and commit would.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Folders in the large repository.
pub const DIRS: usize = 200;
/// Files per folder.
pub const FILES_PER_DIR: usize = 100;
/// Bytes per file, about: 20,000 files of this size make 100 MB.
const FILE_BYTES: usize = 5_240;
/// Branches that each change one file of their own, for the merge scenarios.
pub const BRANCHES: usize = 100;
/// Files both sides of the conflicting pair change.
pub const CONFLICTING: usize = 50;
/// Files the `next` commit changes against `main`.
pub const NEXT_FILES: usize = 5;

/// git with a fixed identity and no user or system configuration, as every scenario runs it.
pub fn git_command(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir);
    for (key, value) in hermetic_env() {
        cmd.env(key, value);
    }
    cmd
}

/// The environment that makes git's behaviour and commits the same on every machine.
pub fn hermetic_env() -> [(&'static str, &'static str); 6] {
    [
        ("GIT_CONFIG_GLOBAL", "/dev/null"),
        ("GIT_CONFIG_NOSYSTEM", "1"),
        ("GIT_AUTHOR_NAME", "bench"),
        ("GIT_AUTHOR_EMAIL", "bench@localhost"),
        ("GIT_COMMITTER_NAME", "bench"),
        ("GIT_COMMITTER_EMAIL", "bench@localhost"),
    ]
}

/// Runs git in `dir`; fails unless it exits 0 (or 1, which `merge-tree` uses for conflicts).
pub fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = git_command(dir)
        .args(args)
        .output()
        .with_context(|| format!("starting git {args:?}"))?;
    if out.status.code().is_none_or(|c| c > 1) {
        bail!(
            "git {args:?} in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The commit `rev` names in `dir`.
pub fn rev(dir: &Path, rev: &str) -> Result<String> {
    Ok(git(dir, &["rev-parse", rev])?.trim().to_owned())
}

fn import(dir: &Path, stream: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    git(dir, &["init", "--quiet", "--initial-branch=main"])?;
    let mut child = git_command(dir)
        .args(["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .spawn()
        .context("starting git fast-import")?;
    child
        .stdin
        .take()
        .context("fast-import's input")?
        .write_all(stream)?;
    if !child.wait()?.success() {
        bail!("git fast-import failed in {}", dir.display());
    }
    Ok(())
}

/// A fast-import stream under construction.
#[derive(Default)]
struct Stream(Vec<u8>);

impl Stream {
    fn commit(&mut self, reference: &str, mark: usize, from: Option<&str>, time: u64) {
        let _ = write!(
            self.0,
            "commit {reference}\nmark :{mark}\ncommitter bench <bench@localhost> {time} +0000\ndata 5\nbench\n"
        );
        if let Some(from) = from {
            let _ = writeln!(self.0, "from {from}");
        }
    }

    fn file(&mut self, path: &str, text: &[u8]) {
        let _ = write!(self.0, "M 100644 inline {path}\ndata {}\n", text.len());
        self.0.extend_from_slice(text);
        self.0.push(b'\n');
    }
}

/// The path of file `f` in folder `d`.
pub fn file_path(d: usize, f: usize) -> String {
    format!("src/d{d:03}/f{f:03}.rs")
}

/// Source-like text of about [`FILE_BYTES`] bytes, the same for the same seed.
fn text(rng: &mut fastrand::Rng, title: &str) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "let", "value", "count", "index", "parse", "render", "merge", "state", "ok", "err", "some",
        "none", "into", "from", "len", "map",
    ];
    let mut out = format!("// {title}\n").into_bytes();
    while out.len() < FILE_BYTES {
        let _ = write!(out, "    let v{} = ", rng.u32(..100_000));
        for _ in 0..rng.usize(3..9) {
            out.extend_from_slice(WORDS[rng.usize(..WORDS.len())].as_bytes());
            out.push(b'.');
        }
        let _ = writeln!(out, "end({});", rng.u32(..1_000));
    }
    out
}

/// The large repository: `main` (20,000 files), `next` ([`NEXT_FILES`] files changed),
/// `b000`..`b099` (one file each, all different), and `ours`/`theirs` (the same
/// [`CONFLICTING`] files changed differently).
#[derive(Debug)]
pub struct BigRepo {
    /// Its folder.
    pub path: PathBuf,
    /// `main`.
    pub main: String,
    /// `next`.
    pub next: String,
    /// The size of `main`'s files.
    pub bytes: u64,
}

impl BigRepo {
    /// Generates the repository in `dir`.
    pub fn create(dir: &Path) -> Result<BigRepo> {
        let mut rng = fastrand::Rng::with_seed(20_000);
        let mut stream = Stream::default();
        stream.commit("refs/heads/main", 1, None, 1_700_000_000);
        let mut bytes = 0;
        for d in 0..DIRS {
            for f in 0..FILES_PER_DIR {
                let path = file_path(d, f);
                let text = text(&mut rng, &path);
                bytes += text.len() as u64;
                stream.file(&path, &text);
            }
        }
        stream.commit("refs/heads/next", 2, Some(":1"), 1_700_000_100);
        for i in 0..NEXT_FILES {
            let path = file_path(i * 37 % DIRS, i);
            stream.file(&path, &text(&mut rng, &format!("{path}, next")));
        }
        for b in 0..BRANCHES {
            stream.commit(
                &format!("refs/heads/b{b:03}"),
                10 + b,
                Some(":1"),
                1_700_000_200,
            );
            let path = file_path(b * 2 % DIRS, b / 2 % FILES_PER_DIR);
            stream.file(&path, &text(&mut rng, &format!("{path}, branch {b}")));
        }
        for (side, mark) in [("ours", 1000), ("theirs", 1001)] {
            stream.commit(
                &format!("refs/heads/{side}"),
                mark,
                Some(":1"),
                1_700_000_300,
            );
            for f in 0..CONFLICTING {
                let path = file_path(7, f);
                stream.file(&path, &text(&mut rng, &format!("{path}, {side}")));
            }
        }
        import(dir, &stream.0)?;
        // As a user's repository usually is: with a commit-graph.
        git(dir, &["commit-graph", "write", "--reachable"])?;
        Ok(BigRepo {
            path: dir.to_owned(),
            main: rev(dir, "main")?,
            next: rev(dir, "next")?,
            bytes,
        })
    }

    /// The commits of branches `b000`..`b099`.
    pub fn branches(&self) -> Result<Vec<String>> {
        (0..BRANCHES)
            .map(|b| rev(&self.path, &format!("b{b:03}")))
            .collect()
    }
}

/// Tasks of the one-file repository that have a change of their own ready.
pub const SMALL_TASKS: usize = 400;

/// The one-file repository: `main` holds README.md; `task/t0`..`task/t399` each add a
/// file of their own, as the attempts of a task would.
#[derive(Debug)]
pub struct SmallRepo {
    /// Its folder.
    pub path: PathBuf,
    /// The commit of `task/tN` for task `tN`.
    pub changes: std::collections::HashMap<String, String>,
}

impl SmallRepo {
    /// Generates the repository in `dir`.
    pub fn create(dir: &Path) -> Result<SmallRepo> {
        let mut stream = Stream::default();
        stream.commit("refs/heads/main", 1, None, 1_700_000_000);
        stream.file("README.md", b"# bench\n");
        for t in 0..SMALL_TASKS {
            stream.commit(
                &format!("refs/heads/task/t{t}"),
                2 + t,
                Some(":1"),
                1_700_000_100,
            );
            stream.file(&format!("t{t}.txt"), format!("task {t}\n").as_bytes());
        }
        import(dir, &stream.0)?;
        let refs = git(
            dir,
            &[
                "for-each-ref",
                "--format=%(refname:lstrip=3) %(objectname)",
                "refs/heads/task/",
            ],
        )?;
        let changes = refs
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(task, commit)| (task.to_owned(), commit.to_owned()))
            .collect();
        Ok(SmallRepo {
            path: dir.to_owned(),
            changes,
        })
    }
}
