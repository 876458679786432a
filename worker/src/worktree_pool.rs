//! A pool of git worktrees, reused from attempt to attempt.
//!
//! A fresh worktree checks out the whole tree (seconds on a large repository, and much worse
//! on a disk with online discard right after other worktrees were deleted); braid writes
//! its files with gix on every core ([`checkout`]). A worktree that is moved to the next
//! attempt's base with `git checkout` rewrites only what differs. So worktrees are created
//! on demand, handed back after each attempt, and removed only when the pool is closed.
//!
//! Invariant: worktrees live under `<git-common-dir>/braid/worktrees/<run>/`, never inside
//! the user's working tree, and the pool never touches the user's checkout, index or HEAD.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use braid_shared::git::{Git, GitError};

use crate::checkout;
use tokio::sync::Mutex;

/// A worktree lent to one attempt.
#[derive(Debug)]
pub struct Worktree {
    /// The repository the worktree belongs to (its common git directory).
    key: PoolKey,
    /// The worktree's folder.
    path: PathBuf,
    /// The worktree opened for in-process work, once for all its attempts.
    repo: gix::ThreadSafeRepository,
}

impl Worktree {
    /// The worktree's folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The worktree, opened for in-process work (see [`checkout::open`]).
    pub fn repo(&self) -> gix::ThreadSafeRepository {
        self.repo.clone()
    }

    /// git, run inside the worktree.
    pub fn git(&self) -> Git {
        Git::at(&self.path)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    repo: PathBuf,
    run: String,
}

/// A worktree not lent out, being cleaned or clean.
#[derive(Debug)]
struct Free {
    path: PathBuf,
    repo: gix::ThreadSafeRepository,
    /// Cleans it from the moment it is handed back: `Ok` once it is clean.
    cleaning: tokio::task::JoinHandle<Result<(), String>>,
}

#[derive(Debug, Default)]
struct Slots {
    /// Worktrees not lent out.
    free: Vec<Free>,
    /// Every worktree the pool made and has not removed.
    all: Vec<PathBuf>,
    /// Number for the next worktree's name.
    next: usize,
}

/// Worktrees per repository and run, owned by one worker.
#[derive(Debug)]
pub struct WorktreePool {
    owner: String,
    slots: Mutex<HashMap<PoolKey, Slots>>,
    /// Each repository's common git directory, asked of git once.
    commons: Mutex<HashMap<PathBuf, PathBuf>>,
    /// Held while a worktree is made (see [`WorktreePool::acquire`]).
    making: Mutex<()>,
}

impl WorktreePool {
    /// An empty pool; `owner` names the worktrees' folders (the worker id).
    pub fn new(owner: impl Into<String>) -> Self {
        WorktreePool {
            owner: owner.into(),
            slots: Mutex::new(HashMap::new()),
            commons: Mutex::new(HashMap::new()),
            making: Mutex::new(()),
        }
    }

    /// Lends a worktree of `repo` checked out at `commit`, clean of any earlier attempt.
    pub async fn acquire(
        &self,
        repo: &Path,
        run: &str,
        commit: &str,
    ) -> Result<Worktree, GitError> {
        // Asked once, while the others wait in line: attempts keep the order they were
        // assigned in (see `making` below).
        let common = {
            let mut commons = self.commons.lock().await;
            match commons.get(repo) {
                Some(common) => common.clone(),
                None => {
                    let common = Git::at(repo).common_dir().await?;
                    commons.insert(repo.to_owned(), common.clone());
                    common
                }
            }
        };
        let key = PoolKey {
            repo: common.clone(),
            run: run.to_owned(),
        };
        // The free worktree nearest the commit: moving it writes the fewest files.
        let free: Vec<(PathBuf, gix::ThreadSafeRepository)> = {
            let mut slots = self.slots.lock().await;
            let entry = slots.entry(key.clone()).or_default();
            entry
                .free
                .iter()
                .map(|f| (f.path.clone(), f.repo.clone()))
                .collect()
        };
        let nearest = match free.len() {
            0 => None,
            1 => Some(free[0].0.clone()),
            _ => {
                let target = commit.to_owned();
                tokio::task::spawn_blocking(move || checkout::nearest(&free, &target))
                    .await
                    .ok()
                    .flatten()
            }
        };
        let reused = {
            let mut slots = self.slots.lock().await;
            let free = &mut slots.entry(key.clone()).or_default().free;
            // Another attempt may have taken it meanwhile.
            match nearest.and_then(|path| free.iter().position(|f| f.path == path)) {
                Some(i) => Some(free.swap_remove(i)),
                None => free.pop(),
            }
        };
        if let Some(Free {
            path,
            repo,
            cleaning,
        }) = reused
        {
            let clean = match cleaning.await {
                Ok(Ok(())) => true,
                Ok(Err(why)) => {
                    tracing::debug!(path = %path.display(), %why, "the worktree was not cleaned");
                    false
                }
                Err(_) => false,
            };
            let worktree = Worktree {
                key: key.clone(),
                path,
                repo,
            };
            match reset(&worktree, commit, clean).await {
                Ok(()) => return Ok(worktree),
                Err(err) => {
                    // A worktree that cannot be reset is not trusted again.
                    tracing::warn!(path = %worktree.path.display(), %err, "dropping a worktree that could not be reset");
                    self.discard(worktree).await;
                }
            }
        }
        let path = {
            let mut slots = self.slots.lock().await;
            let entry = slots.entry(key.clone()).or_default();
            entry.next += 1;
            let path = common
                .join("braid/worktrees")
                .join(run)
                .join(format!("{}-{}", self.owner, entry.next));
            entry.all.push(path.clone());
            path
        };
        // Each run's folder lands in a part of the disk of its own.
        let worktrees = common.join("braid/worktrees");
        let _ = tokio::fs::create_dir_all(&worktrees).await;
        spread_folders(&worktrees);
        if let Some(parent) = path.parent() {
            let _ = tokio::fs::create_dir_all(parent).await;
        }
        // One worktree is made at a time, in the order attempts were assigned (the highest
        // task first): making one is all processes and disk, so several at once would
        // only share the machine and all be late, the first attempt's included.
        let _making = self.making.lock().await;
        if let Err(err) = Git::at(&common).worktree_add_empty(&path, commit).await {
            self.forget(&key, &path).await;
            return Err(err);
        }
        let (dir, at) = (path.clone(), commit.to_owned());
        let populated = tokio::task::spawn_blocking(move || {
            let repo = checkout::open(&dir)?;
            checkout::populate(&repo, &at)?;
            Ok(repo.into_sync())
        })
        .await
        .unwrap_or_else(|e| Err(format!("the checkout stopped: {e}")));
        let repo = match populated {
            Ok(repo) => repo,
            Err(detail) => {
                remove(&key.repo, &path).await;
                self.forget(&key, &path).await;
                return Err(GitError::Failed {
                    args: format!("checkout {commit}"),
                    dir: path,
                    stderr: detail,
                });
            }
        };
        let worktree = Worktree { key, path, repo };
        Ok(worktree)
    }

    /// Takes a worktree back for the next attempt, and starts cleaning it.
    pub async fn release(&self, worktree: Worktree) {
        let repo = worktree.repo.clone();
        let cleaning =
            tokio::task::spawn_blocking(move || checkout::clean(&repo.to_thread_local()).map(drop));
        let mut slots = self.slots.lock().await;
        slots
            .entry(worktree.key.clone())
            .or_default()
            .free
            .push(Free {
                path: worktree.path,
                repo: worktree.repo,
                cleaning,
            });
    }

    /// Removes a worktree for good.
    async fn discard(&self, worktree: Worktree) {
        remove(&worktree.key.repo, &worktree.path).await;
        self.forget(&worktree.key, &worktree.path).await;
    }

    async fn forget(&self, key: &PoolKey, path: &Path) {
        let mut slots = self.slots.lock().await;
        if let Some(entry) = slots.get_mut(key) {
            entry.all.retain(|p| p != path);
            entry.free.retain(|f| f.path != *path);
        }
    }

    /// Removes every worktree the pool made. Call when no attempt is running.
    pub async fn close(&self) {
        let drained: Vec<(PoolKey, Slots)> = self.slots.lock().await.drain().collect();
        for (key, slots) in drained {
            // No cleaning may run in a worktree being removed.
            for free in slots.free {
                let _ = free.cleaning.await;
            }
            for path in &slots.all {
                remove(&key.repo, path).await;
            }
            let _ = Git::at(&key.repo).worktree_prune().await;
            let run_dir = key.repo.join("braid/worktrees").join(&key.run);
            // Only removes the folder when no other worker's worktrees are left in it.
            let _ = tokio::fs::remove_dir(&run_dir).await;
        }
    }

    /// How many worktrees the pool holds now, lent out or free.
    pub async fn len(&self) -> usize {
        self.slots.lock().await.values().map(|s| s.all.len()).sum()
    }

    /// Whether the pool holds no worktree.
    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }
}

/// Moves a reused worktree to `commit` and cleans it: in process where it can
/// ([`checkout::move_to`]; `clean` when it was cleaned since its attempt), with `git
/// checkout --force` and `git clean -ffdx` where not.
async fn reset(worktree: &Worktree, commit: &str, clean: bool) -> Result<(), GitError> {
    let (repo, at) = (worktree.repo(), commit.to_owned());
    let clock = std::time::Instant::now();
    let moved =
        tokio::task::spawn_blocking(move || checkout::move_to(&repo.to_thread_local(), &at, clean))
            .await
            .unwrap_or_else(|e| Err(format!("the move stopped: {e}")));
    match moved {
        Ok(moved) => {
            tracing::debug!(
                path = %worktree.path.display(),
                commit,
                written = moved.written,
                removed = moved.removed,
                ms = clock.elapsed().as_secs_f64() * 1e3,
                "worktree moved"
            );
            Ok(())
        }
        Err(why) => {
            tracing::debug!(path = %worktree.path.display(), %why, "resetting the worktree with git");
            worktree.git().reset_to(commit).await
        }
    }
}

/// Asks the file system to spread the folders made in `dir` over its disk (ext4's
/// "top directory" flag, `chattr +T`), where it can; elsewhere this does nothing.
///
/// Why: ext4 does not hand out an inode freed in the last minute; it scans past each one.
/// Folders are placed near their parent, so a worktree made soon after others were
/// removed scans past all their inodes for every file it creates: measured here, a
/// 20,000-file checkout took 10 s of kernel time instead of 0.35 s. A spread folder lands
/// in a part of the disk with no such inodes.
fn spread_folders(dir: &Path) {
    use rustix::fs::{IFlags, ioctl_getflags, ioctl_setflags};
    let Ok(folder) = std::fs::File::open(dir) else {
        return;
    };
    if let Ok(flags) = ioctl_getflags(&folder)
        && !flags.contains(IFlags::TOPDIR)
    {
        let _ = ioctl_setflags(&folder, flags | IFlags::TOPDIR);
    }
}

/// Removes a worktree: git's record and the folder, even if git has lost track of it.
async fn remove(common: &Path, path: &Path) {
    if let Err(err) = Git::at(common).worktree_remove(path).await {
        tracing::debug!(path = %path.display(), %err, "git worktree remove failed; removing the folder");
    }
    if tokio::fs::try_exists(path).await.unwrap_or(false) {
        let _ = tokio::fs::remove_dir_all(path).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_tests::TestRepo;

    #[tokio::test]
    async fn worktrees_are_reused_cleaned_and_removed() {
        let repo = TestRepo::init();
        let first = repo.git(&["rev-parse", "HEAD"]);
        let second = repo.commit(&[("a.txt", "a\n"), ("dir/b.txt", "b\n")], "second");
        let before = repo.snapshot();
        let pool = WorktreePool::new("w1");

        let worktree = pool.acquire(&repo.path, "run", &first).await.unwrap();
        let path = worktree.path().to_owned();
        assert!(path.starts_with(repo.git_dir().join("braid/worktrees/run")));
        // A fresh worktree is an ordinary one to git: its files, index and HEAD agree.
        assert_eq!(
            std::fs::read_to_string(path.join("README.md")).unwrap(),
            std::fs::read_to_string(repo.path.join("README.md")).unwrap()
        );
        let fresh = worktree
            .git()
            .run(&["status", "--porcelain"])
            .await
            .unwrap();
        assert_eq!(fresh, "", "a fresh worktree is clean");
        let head = worktree.git().run(&["rev-parse", "HEAD"]).await.unwrap();
        assert_eq!(head.trim(), first);
        // An attempt leaves a mess: a changed file, a new file, an ignored build folder.
        std::fs::write(path.join("README.md"), "changed").unwrap();
        std::fs::write(path.join("junk.txt"), "junk").unwrap();
        std::fs::create_dir_all(path.join("target")).unwrap();
        std::fs::write(path.join(".gitignore"), "target/\n").unwrap();
        pool.release(worktree).await;

        let again = pool.acquire(&repo.path, "run", &second).await.unwrap();
        assert_eq!(again.path(), path, "the worktree is reused");
        assert_eq!(pool.len().await, 1);
        let head = again.git().run(&["rev-parse", "HEAD"]).await.unwrap();
        assert_eq!(head.trim(), second);
        let status = again
            .git()
            .run(&["status", "--porcelain", "--ignored"])
            .await
            .unwrap();
        assert_eq!(status, "", "leftovers of the earlier attempt");
        assert_eq!(
            std::fs::read_to_string(path.join("dir/b.txt")).unwrap(),
            "b\n"
        );

        // A second attempt at once needs a second worktree.
        let other = pool.acquire(&repo.path, "run", &first).await.unwrap();
        assert_ne!(other.path(), path);
        assert_eq!(pool.len().await, 2);
        pool.release(again).await;
        pool.release(other).await;

        pool.close().await;
        assert!(pool.is_empty().await);
        assert!(!path.exists());
        repo.assert_untouched(&before);
    }
}
