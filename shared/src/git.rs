//! The git operations braid needs, run as `git` commands through [`crate::exec`].
//!
//! braid uses the git CLI rather than libgit2: `git merge-tree --write-tree` is merge-ort
//! itself (rename handling, git's exact verdicts) and was measured 20x faster than libgit2's
//! merge on a 20,000-file repository. The worker does its worktree work in process with gix
//! (a fresh worktree's files, moving and cleaning a reused one, staging, committing and
//! counting an attempt), and comes here for what it leaves to git: `git checkout --force`
//! with `git clean -ffdx`, and `git add --all`, for submodules, linked folders and unmerged
//! or sparse indexes; and for the packs of objects that travel from a worker's cache to
//! the coordinator's repository ([`Git::pack`], [`Git::unpack`]).
//!
//! Every command runs with hooks disabled, signing off, automatic gc off and a fixed
//! identity, so braid's commits are reproducible and no user hook runs on them.

use std::path::PathBuf;

use crate::exec::{Cmd, Ending, ExecError};

/// The identity of every commit braid makes.
pub const IDENTITY_NAME: &str = "braid";
/// The e-mail of every commit braid makes.
pub const IDENTITY_EMAIL: &str = "braid@localhost";

/// A failed git operation.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// git could not be started.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// git ran and reported an error.
    #[error("`git {args}` failed in {dir}: {stderr}")]
    Failed {
        /// The arguments, joined.
        args: String,
        /// Where it ran.
        dir: PathBuf,
        /// What git printed on standard error, trimmed.
        stderr: String,
    },
    /// git printed something braid could not read.
    #[error("could not read the output of `git {args}`: {detail}")]
    Unreadable {
        /// The arguments, joined.
        args: String,
        /// What was wrong.
        detail: String,
    },
}

/// Lines and files changed between two commits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiffStat {
    /// Files changed.
    pub files: u32,
    /// Lines added.
    pub insertions: u64,
    /// Lines removed.
    pub deletions: u64,
    /// The changed paths, in git's order; a rename counts as a deletion and an addition.
    pub paths: Vec<String>,
}

/// A repository or worktree that git commands run in.
#[derive(Debug, Clone)]
pub struct Git {
    dir: PathBuf,
    /// The git directory, named to git outright, so that nothing in the working tree (an
    /// agent-written `.git` file) can point git elsewhere.
    git_dir: Option<PathBuf>,
}

impl Git {
    /// Commands will run in `dir`, which must be inside a repository or worktree.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Git {
            dir: dir.into(),
            git_dir: None,
        }
    }

    /// Commands will run in the working tree `work_tree` of the git directory `git_dir`,
    /// both given to git explicitly: whatever `work_tree/.git` says is not read.
    pub fn worktree(git_dir: impl Into<PathBuf>, work_tree: impl Into<PathBuf>) -> Self {
        Git {
            dir: work_tree.into(),
            git_dir: Some(git_dir.into()),
        }
    }

    fn command<S: AsRef<str>>(&self, args: &[S]) -> Cmd {
        let explicit = self.git_dir.as_ref().map(|git_dir| {
            [
                format!("--git-dir={}", git_dir.display()),
                format!("--work-tree={}", self.dir.display()),
            ]
        });
        Cmd::new("git", &self.dir)
            .args(explicit.into_iter().flatten())
            .args([
                "-c",
                "core.hooksPath=/dev/null",
                "-c",
                "commit.gpgSign=false",
                "-c",
                "gc.auto=0",
                "-c",
                "maintenance.auto=false",
                "-c",
                "core.fsmonitor=false",
            ])
            .args(args.iter().map(AsRef::as_ref))
            .env("GIT_AUTHOR_NAME", IDENTITY_NAME)
            .env("GIT_AUTHOR_EMAIL", IDENTITY_EMAIL)
            .env("GIT_COMMITTER_NAME", IDENTITY_NAME)
            .env("GIT_COMMITTER_EMAIL", IDENTITY_EMAIL)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .env("LC_ALL", "C")
    }

    /// Runs git and returns its exit code and output, whatever the exit code.
    pub async fn raw<S: AsRef<str>>(&self, args: &[S]) -> Result<(i32, String, String), GitError> {
        let done = self.command(args).run().await?;
        let code = match done.ending {
            Ending::Exited(code) => code,
            _ => -1,
        };
        Ok((
            code,
            String::from_utf8_lossy(&done.stdout).into_owned(),
            String::from_utf8_lossy(&done.stderr).trim().to_owned(),
        ))
    }

    /// Runs git and returns its standard output; an exit code other than 0 is an error.
    pub async fn run<S: AsRef<str>>(&self, args: &[S]) -> Result<String, GitError> {
        let (code, stdout, stderr) = self.raw(args).await?;
        if code != 0 {
            return Err(self.failed(args, stderr));
        }
        Ok(stdout)
    }

    /// The error for `args` having failed here with `stderr`.
    pub fn failed<S: AsRef<str>>(&self, args: &[S], stderr: String) -> GitError {
        GitError::Failed {
            args: join(args),
            dir: self.dir.clone(),
            stderr,
        }
    }

    /// The commit `rev` names, or `None` when it names no commit.
    pub async fn resolve_commit(&self, rev: &str) -> Result<Option<String>, GitError> {
        let spec = format!("{rev}^{{commit}}");
        let (code, stdout, _) = self
            .raw(&[
                "rev-parse",
                "--verify",
                "--quiet",
                "--end-of-options",
                &spec,
            ])
            .await?;
        Ok((code == 0).then(|| stdout.trim().to_owned()))
    }

    /// The repository's common git directory (shared by all its worktrees), absolute.
    pub async fn common_dir(&self) -> Result<PathBuf, GitError> {
        let out = self
            .run(&["rev-parse", "--path-format=absolute", "--git-common-dir"])
            .await?;
        Ok(PathBuf::from(out.trim()))
    }

    /// The top of the working tree, absolute.
    pub async fn toplevel(&self) -> Result<PathBuf, GitError> {
        let out = self.run(&["rev-parse", "--show-toplevel"]).await?;
        Ok(PathBuf::from(out.trim()))
    }

    /// Creates `refname` at `commit`; fails if it exists already, so no ref is ever
    /// overwritten.
    pub async fn create_ref(&self, refname: &str, commit: &str) -> Result<(), GitError> {
        // An empty old value means "must not exist yet".
        let (code, _, stderr) = self.raw(&["update-ref", refname, commit, ""]).await?;
        if code != 0 {
            return Err(self.failed(&["update-ref", refname, commit], stderr));
        }
        Ok(())
    }

    /// Files and lines changed from `from` to `to`.
    pub async fn diff_stat(&self, from: &str, to: &str) -> Result<DiffStat, GitError> {
        let args = ["diff", "--numstat", "-z", "--no-renames", from, to, "--"];
        let out = self.run(&args).await?;
        let mut stat = DiffStat::default();
        for record in out.split('\0').filter(|r| !r.is_empty()) {
            let mut cols = record.splitn(3, '\t');
            let (Some(ins), Some(del), Some(path)) = (cols.next(), cols.next(), cols.next()) else {
                return Err(GitError::Unreadable {
                    args: join(&args),
                    detail: format!("unexpected record {record:?}"),
                });
            };
            stat.files += 1;
            // Binary files show "-" for both counts.
            stat.insertions += ins.parse::<u64>().unwrap_or(0);
            stat.deletions += del.parse::<u64>().unwrap_or(0);
            stat.paths.push(path.to_owned());
        }
        Ok(stat)
    }

    /// The objects of `commit` that `base` lacks, as a thin pack: deltas may name objects
    /// of `base`, which the receiving side has.
    pub async fn pack(&self, commit: &str, base: &str) -> Result<Vec<u8>, GitError> {
        let args = ["pack-objects", "--revs", "--thin", "--stdout", "-q"];
        let done = self
            .command(&args)
            .stdin(format!("{commit}\n^{base}\n").into_bytes())
            .run()
            .await?;
        if !done.ending.success() {
            let stderr = String::from_utf8_lossy(&done.stderr).trim().to_owned();
            return Err(self.failed(&args, stderr));
        }
        Ok(done.stdout)
    }

    /// The objects of the commits `want` (with all their history) that the commits `have`
    /// do not hold, as a pack thin against `have`. Every `have` must be in the repository
    /// (see [`Git::known`]).
    pub async fn pack_wanted(&self, want: &[String], have: &[String]) -> Result<Vec<u8>, GitError> {
        let args = ["pack-objects", "--revs", "--thin", "--stdout", "-q"];
        let mut input = String::new();
        for commit in want {
            input.push_str(commit);
            input.push('\n');
        }
        for commit in have {
            input.push('^');
            input.push_str(commit);
            input.push('\n');
        }
        let done = self.command(&args).stdin(input.into_bytes()).run().await?;
        if !done.ending.success() {
            let stderr = String::from_utf8_lossy(&done.stderr).trim().to_owned();
            return Err(self.failed(&args, stderr));
        }
        Ok(done.stdout)
    }

    /// Which of `ids` name commits in the repository.
    pub async fn known_commits(&self, ids: &[String]) -> Result<Vec<String>, GitError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let args = ["cat-file", "--batch-check=%(objectname) %(objecttype)"];
        let input: String = ids.iter().map(|id| format!("{id}\n")).collect();
        let done = self.command(&args).stdin(input.into_bytes()).run().await?;
        if !done.ending.success() {
            let stderr = String::from_utf8_lossy(&done.stderr).trim().to_owned();
            return Err(self.failed(&args, stderr));
        }
        Ok(String::from_utf8_lossy(&done.stdout)
            .lines()
            .filter_map(|line| line.strip_suffix(" commit"))
            .map(str::to_owned)
            .collect())
    }

    /// The commits where the repository's history is cut, when it is a shallow clone.
    pub async fn shallow_commits(&self) -> Result<Vec<String>, GitError> {
        let path = self.run(&["rev-parse", "--git-path", "shallow"]).await?;
        let path = self.dir.join(path.trim());
        Ok(std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect())
    }

    /// Takes the objects of `pack` into the repository, completing a thin pack from the
    /// repository's objects, after git's strictest checks of every object (`--strict`:
    /// duplicate or unsorted tree entries, `..` or `.git` paths, bad modes, broken links).
    /// Small packs become loose objects and large ones a pack, as `git receive-pack` does.
    pub async fn unpack(&self, pack: Vec<u8>) -> Result<(), GitError> {
        // The object count is the pack header's third word.
        let count = pack
            .get(8..12)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0);
        let args: &[&str] = if count < 100 {
            &["unpack-objects", "-q", "--strict"]
        } else {
            &["index-pack", "--stdin", "--fix-thin", "--strict"]
        };
        let done = self.command(args).stdin(pack).run().await?;
        if !done.ending.success() {
            let stderr = String::from_utf8_lossy(&done.stderr).trim().to_owned();
            return Err(self.failed(args, stderr));
        }
        Ok(())
    }

    /// In a worktree: moves to `commit`, discarding local changes and untracked files.
    /// Costs in proportion to what differs from the current checkout.
    pub async fn reset_to(&self, commit: &str) -> Result<(), GitError> {
        self.run(&["checkout", "--quiet", "--force", "--detach", commit])
            .await?;
        self.run(&["clean", "-ffdxq"]).await.map(drop)
    }

    /// In a worktree: stages everything, honouring `.gitignore`.
    pub async fn add_all(&self) -> Result<(), GitError> {
        self.run(&["add", "--all"]).await.map(drop)
    }

    /// In a worktree: stages everything (honouring `.gitignore`) and commits it if anything
    /// changed. Returns the new HEAD.
    pub async fn commit_all(&self, message: &str) -> Result<String, GitError> {
        self.add_all().await?;
        let args = ["diff", "--cached", "--quiet"];
        match self.raw(&args).await? {
            (0, _, _) => {}
            (1, _, _) => {
                self.run(&[
                    "commit",
                    "--quiet",
                    "--no-verify",
                    "--allow-empty-message",
                    "-m",
                    message,
                ])
                .await?;
            }
            (_, _, stderr) => return Err(self.failed(&args, stderr)),
        }
        Ok(self.run(&["rev-parse", "HEAD"]).await?.trim().to_owned())
    }
}

fn join<S: AsRef<str>>(args: &[S]) -> String {
    args.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(" ")
}
