//! A pool of git worktrees, reused from attempt to attempt.
//!
//! A fresh worktree checks out the whole tree (seconds on a large repository, and much worse
//! on a disk with online discard right after other worktrees were deleted); braid writes
//! its files with gix on every core ([`checkout`]). A worktree that is moved to the next
//! attempt's base with `git checkout` rewrites only what differs. So worktrees are created
//! on demand, handed back after each attempt, and removed only when the pool is closed.
//!
//! Each worktree is a repository of its own in braid's cache folder ([`cache`]), so what an
//! agent does to refs, config or hooks stays in a folder braid restores or removes.
//!
//! Invariant: worktrees live under `<cache>/work/<run>/`, never inside the user's working
//! tree or git folder, and the pool never writes the user's repository: it reads its
//! objects, nothing else.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use braid_shared::git::{Git, GitError};

use crate::cache::{self, Layout, Source};
use crate::checkout::{self, Changes};
use crate::journal::Journal;
use gix::bstr::BString;
use tokio::sync::Mutex;

/// What a worktree keeps from one attempt to the next: the journal of what changed in it
/// since it was last clean, where the kernel keeps one, and the index braid last wrote,
/// with the stamp of the file it wrote it to.
#[derive(Debug, Default)]
struct Kept {
    journal: Option<Journal>,
    known: Option<(checkout::Known, Option<crate::admin::Stamp>)>,
}

type Shared = std::sync::Arc<std::sync::Mutex<Kept>>;

/// What `shared` keeps, locked (a thread that panicked holding it left nothing half done
/// that matters: the journal and the index are checked before use).
fn kept(shared: &Shared) -> std::sync::MutexGuard<'_, Kept> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Kept {
    /// The paths changed since the worktree was last clean, when known.
    fn changed(&mut self) -> Option<Vec<BString>> {
        match self.journal.as_mut()?.changed() {
            Ok(paths) => Some(paths),
            Err(why) => {
                tracing::debug!(why, "the worktree is surveyed in full");
                None
            }
        }
    }

    /// The worktree is clean, as `index` has it; `surveyed` when it was compared in full.
    fn settle(&mut self, index: &gix::index::State, surveyed: bool) {
        if let Some(journal) = self.journal.as_mut()
            && let Err(err) = journal.settle(index, surveyed)
        {
            crate::journal::unavailable(&err, "the worktree's journal stops");
            self.journal = None;
        }
    }
}

/// Moves the worktree of `repo` to `commit` (its HEAD when `None`), looking only at what
/// `kept`'s journal says changed when it knows, or at everything when `unknown`; then
/// settles the journal.
fn move_kept(
    repo: &gix::Repository,
    commit: Option<&str>,
    kept: &Shared,
    unknown: bool,
) -> Result<checkout::Moved, String> {
    let mut kept = self::kept(kept);
    let paths = if unknown { None } else { kept.changed() };
    let changes = match &paths {
        Some(paths) => Changes::Paths(paths),
        None => Changes::Unknown,
    };
    // A move writes the index file anew unless it is as braid wrote it and stays so.
    let known = kept.known.take().map(|(mut known, stamp)| {
        let untouched = stamp.is_some() && stamp == crate::admin::stamp(repo);
        known.in_file &= untouched;
        if !untouched {
            known.unwritten = None;
        }
        known
    });
    let (moved, known) = match commit {
        Some(commit) => checkout::move_to(repo, commit, changes, known)?,
        None => checkout::clean(repo, changes, known)?,
    };
    kept.settle(&known.index, paths.is_none());
    kept.known = Some((known, crate::admin::stamp(repo)));
    Ok(moved)
}

/// A worktree lent to one attempt.
#[derive(Debug)]
pub struct Worktree {
    /// The repository the worktree belongs to (its common git directory).
    key: PoolKey,
    /// The worktree's folders.
    layout: Layout,
    /// The worktree opened for in-process work, once for all its attempts.
    repo: gix::ThreadSafeRepository,
    /// The commit it was moved to for this attempt.
    at: String,
    kept: Shared,
}

impl Worktree {
    /// The paths changed in the worktree since it was last clean (a folder standing for
    /// all beneath it), when they are known (see [`crate::journal`]).
    pub fn changed(&self) -> Option<Vec<BString>> {
        kept(&self.kept).changed()
    }

    /// The index braid last wrote and the stamp of its file, taken for staging.
    pub fn take_known(&self) -> Option<(checkout::Known, Option<crate::admin::Stamp>)> {
        kept(&self.kept).known.take()
    }

    /// Keeps `known`, the index braid just wrote to the worktree's index file.
    pub fn keep_known(&self, known: checkout::Known) {
        let stamp = crate::admin::stamp(&self.repo.to_thread_local());
        self.keep_known_as(known, stamp);
    }

    /// Keeps `known`, whose index braid did not write: the index file, as `known` says it
    /// holds, has `stamp` still.
    pub fn keep_known_as(&self, known: checkout::Known, stamp: Option<crate::admin::Stamp>) {
        kept(&self.kept).known = Some((known, stamp));
    }

    /// Says that processes run in the worktree with `sandbox`: unless it keeps them from
    /// changing a file through a name the journal does not watch, the worktree is
    /// surveyed in full until it is clean again.
    pub fn runs(&self, sandbox: &crate::sandbox::Sandbox) {
        if sandbox.names_every_write() {
            return;
        }
        let mut kept = kept(&self.kept);
        if let Some(journal) = kept.journal.as_mut() {
            journal.lose("processes ran in the worktree without a sandbox");
        }
    }

    /// The worktree's folder.
    pub fn path(&self) -> &Path {
        &self.layout.tree
    }

    /// The worktree's folders: files, git folder, scratch.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The repository whose objects the worktree borrows.
    pub fn source(&self) -> Source {
        Source {
            common: self.key.repo.clone(),
        }
    }

    /// The worktree, opened for in-process work (see [`checkout::open`]).
    pub fn repo(&self) -> gix::ThreadSafeRepository {
        self.repo.clone()
    }

    /// git, run in the worktree with its git folder named explicitly.
    pub fn git(&self) -> Git {
        Git::worktree(&self.layout.git, &self.layout.tree)
    }

    /// Puts the worktree's git folder back as braid made it (see [`cache::restore`]).
    pub fn restore(&self) -> Result<cache::Restored, String> {
        cache::restore(&self.layout, &self.source(), &self.at)
            .map_err(|e| format!("restoring {}: {e}", self.layout.git.display()))
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
    layout: Layout,
    repo: gix::ThreadSafeRepository,
    kept: Shared,
    /// Cleans it from the moment it is handed back: `Ok` once it is clean.
    cleaning: tokio::task::JoinHandle<Result<(), String>>,
}

#[derive(Debug, Default)]
struct Slots {
    /// Worktrees not lent out.
    free: Vec<Free>,
    /// Every worktree the pool made and has not removed.
    all: Vec<Layout>,
    /// Number for the next worktree's name.
    next: usize,
}

/// Worktrees per repository and run, owned by one worker.
#[derive(Debug)]
pub struct WorktreePool {
    owner: String,
    /// braid's cache folder, where the worktrees are made.
    root: PathBuf,
    slots: Mutex<HashMap<PoolKey, Slots>>,
    /// Each repository's common git directory, asked of git once.
    commons: Mutex<HashMap<PathBuf, PathBuf>>,
    /// Held while a worktree is made (see [`WorktreePool::acquire`]).
    making: Mutex<()>,
}

impl WorktreePool {
    /// An empty pool whose worktrees go into the cache folder `root`; `owner` names the
    /// worktrees' folders (the worker id).
    pub fn new(owner: impl Into<String>, root: impl Into<PathBuf>) -> Self {
        WorktreePool {
            owner: owner.into(),
            root: root.into(),
            slots: Mutex::new(HashMap::new()),
            commons: Mutex::new(HashMap::new()),
            making: Mutex::new(()),
        }
    }

    /// Lends a worktree of the repository (or worktree) at `repo` checked out at
    /// `commit`, clean of any earlier attempt.
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
        self.acquire_from(&Source { common }, run, commit).await
    }

    /// Lends a worktree borrowing the objects of `source`, checked out at `commit`, clean
    /// of any earlier attempt.
    pub async fn acquire_from(
        &self,
        source: &Source,
        run: &str,
        commit: &str,
    ) -> Result<Worktree, GitError> {
        let key = PoolKey {
            repo: source.common.clone(),
            run: run.to_owned(),
        };
        // The free worktree nearest the commit: moving it writes the fewest files.
        let free: Vec<(PathBuf, gix::ThreadSafeRepository)> = {
            let mut slots = self.slots.lock().await;
            let entry = slots.entry(key.clone()).or_default();
            entry
                .free
                .iter()
                .map(|f| (f.layout.tree.clone(), f.repo.clone()))
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
            match nearest.and_then(|path| free.iter().position(|f| f.layout.tree == path)) {
                Some(i) => Some(free.swap_remove(i)),
                None => free.pop(),
            }
        };
        if let Some(Free {
            layout,
            repo,
            kept,
            cleaning,
        }) = reused
        {
            let t_wait = std::time::Instant::now();
            let clean = match cleaning.await {
                Ok(Ok(())) => true,
                Ok(Err(why)) => {
                    tracing::debug!(path = %layout.tree.display(), %why, "the worktree was not cleaned");
                    false
                }
                Err(_) => false,
            };
            let worktree = Worktree {
                key: key.clone(),
                layout,
                repo,
                at: commit.to_owned(),
                kept,
            };
            tracing::debug!(
                waited_ms = t_wait.elapsed().as_secs_f64() * 1e3,
                "worktree cleaned"
            );
            match reset(&worktree, commit, clean).await {
                Ok(()) => return Ok(worktree),
                Err(err) => {
                    // A worktree that cannot be reset is not trusted again.
                    tracing::warn!(path = %worktree.path().display(), %err, "dropping a worktree that could not be reset");
                    self.discard(worktree).await;
                }
            }
        }
        let run_dir = cache::run_dir(&self.root, run);
        let layout = {
            let mut slots = self.slots.lock().await;
            let entry = slots.entry(key.clone()).or_default();
            entry.next += 1;
            let layout = Layout::new(&run_dir, &format!("{}-{}", self.owner, entry.next));
            entry.all.push(layout.clone());
            layout
        };
        // Each run's folder lands in a part of the disk of its own.
        let work = self.root.join("work");
        let _ = tokio::fs::create_dir_all(&work).await;
        spread_folders(&work);
        let _ = tokio::fs::create_dir_all(&run_dir).await;
        // One worktree is made at a time, in the order attempts were assigned (the highest
        // task first): making one is all disk, so several at once would only share the
        // machine and all be late, the first attempt's included.
        let _making = self.making.lock().await;
        let source = source.clone();
        let (made, at) = (layout.clone(), commit.to_owned());
        let populated = tokio::task::spawn_blocking(move || {
            cache::init(&made, &source, &at)
                .map_err(|e| format!("making {}: {e}", made.git.display()))?;
            let repo = checkout::open(&made.git)?;
            let known = checkout::populate(&repo, &at)?;
            let journal = Journal::start(&made.tree, &known.index)
                .map_err(|err| crate::journal::unavailable(&err, "no journal of the worktree"))
                .ok();
            let stamp = crate::admin::stamp(&repo);
            let kept = Kept {
                journal,
                known: Some((known, stamp)),
            };
            Ok((repo.into_sync(), kept))
        })
        .await
        .unwrap_or_else(|e| Err(format!("the checkout stopped: {e}")));
        let (repo, kept) = match populated {
            Ok(made) => made,
            Err(detail) => {
                cache::remove(&layout);
                self.forget(&key, &layout).await;
                return Err(GitError::Failed {
                    args: format!("checkout {commit}"),
                    dir: layout.tree,
                    stderr: detail,
                });
            }
        };
        Ok(Worktree {
            key,
            layout,
            repo,
            at: commit.to_owned(),
            kept: std::sync::Arc::new(std::sync::Mutex::new(kept)),
        })
    }

    /// Takes a worktree back for the next attempt, and starts cleaning it.
    /// Whatever ran in the worktree (checks, a score) is untrusted: its git folder is
    /// restored first, then the files cleaned.
    pub async fn release(&self, worktree: Worktree) {
        let (repo, kept) = (worktree.repo.clone(), worktree.kept.clone());
        let (layout, source, at) = (
            worktree.layout.clone(),
            worktree.source(),
            worktree.at.clone(),
        );
        let cleaning = tokio::task::spawn_blocking(move || {
            cache::restore(&layout, &source, &at)
                .map_err(|e| format!("restoring {}: {e}", layout.git.display()))?;
            cache::clear_tmp(&layout).map_err(|e| format!("clearing the scratch folder: {e}"))?;
            move_kept(&repo.to_thread_local(), None, &kept, false).map(drop)
        });
        let mut slots = self.slots.lock().await;
        slots
            .entry(worktree.key.clone())
            .or_default()
            .free
            .push(Free {
                layout: worktree.layout,
                repo: worktree.repo,
                kept: worktree.kept,
                cleaning,
            });
    }

    /// Removes a worktree for good.
    async fn discard(&self, worktree: Worktree) {
        cache::remove(&worktree.layout);
        self.forget(&worktree.key, &worktree.layout).await;
    }

    async fn forget(&self, key: &PoolKey, layout: &Layout) {
        let mut slots = self.slots.lock().await;
        if let Some(entry) = slots.get_mut(key) {
            entry.all.retain(|l| l != layout);
            entry.free.retain(|f| f.layout != *layout);
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
            for layout in &slots.all {
                cache::remove(layout);
            }
            // Only removes the folder when no other worker's worktrees are left in it.
            let _ = tokio::fs::remove_dir(cache::run_dir(&self.root, &key.run)).await;
        }
    }

    /// braid's cache folder, where the worktrees are.
    pub fn root(&self) -> &Path {
        &self.root
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
/// ([`checkout::move_to`], looking only at what changed when it was cleaned since its
/// attempt), with `git checkout --force` and `git clean -ffdx` where not.
async fn reset(worktree: &Worktree, commit: &str, clean: bool) -> Result<(), GitError> {
    let (repo, at, kept) = (worktree.repo(), commit.to_owned(), worktree.kept.clone());
    let clock = std::time::Instant::now();
    let moved = tokio::task::spawn_blocking(move || {
        move_kept(&repo.to_thread_local(), Some(&at), &kept, !clean)
    })
    .await
    .unwrap_or_else(|e| Err(format!("the move stopped: {e}")));
    match moved {
        Ok(moved) => {
            tracing::debug!(
                path = %worktree.path().display(),
                commit,
                written = moved.written,
                removed = moved.removed,
                ms = clock.elapsed().as_secs_f64() * 1e3,
                "worktree moved"
            );
            Ok(())
        }
        Err(why) => {
            tracing::debug!(path = %worktree.path().display(), %why, "resetting the worktree with git");
            worktree.git().reset_to(commit).await?;
            // git's own moves are not settled: the next is surveyed in full.
            let mut kept = self::kept(&worktree.kept);
            if let Some(journal) = kept.journal.as_mut() {
                journal.lose("the worktree was reset by git");
            }
            Ok(())
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
        let cache = tempfile::tempdir().unwrap();
        let pool = WorktreePool::new("w1", cache.path());

        let worktree = pool.acquire(&repo.path, "run", &first).await.unwrap();
        let path = worktree.path().to_owned();
        assert!(path.starts_with(cache.path().join("work/run")));
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
        assert!(!cache.path().join("work/run").exists());
        repo.assert_untouched(&before);
    }

    #[tokio::test]
    async fn worktrees_are_made_concurrently_without_losing_one() {
        // 200 worktrees of one repository at once, from pools of 20 workers: git's own
        // `worktree add` races over the shared `worktrees/` folder; these have none.
        let repo = TestRepo::init();
        let head = repo.git(&["rev-parse", "HEAD"]);
        let before = repo.snapshot();
        let cache = tempfile::tempdir().unwrap();
        let pools: Vec<_> = (0..20)
            .map(|i| std::sync::Arc::new(WorktreePool::new(format!("w{i}"), cache.path())))
            .collect();
        let mut made = Vec::new();
        for n in 0..200 {
            let pool = std::sync::Arc::clone(&pools[n % 20]);
            let (dir, head) = (repo.path.clone(), head.clone());
            made.push(braid_shared::task::spawn("acquire", async move {
                let worktree = pool.acquire(&dir, "many", &head).await?;
                Ok::<_, GitError>(worktree)
            }));
        }
        let mut paths = std::collections::HashSet::new();
        let mut held = Vec::new();
        for handle in made {
            let worktree = handle.await.unwrap().expect("every worktree is made");
            assert!(worktree.path().join("README.md").is_file());
            paths.insert(worktree.path().to_owned());
            held.push(worktree);
        }
        assert_eq!(paths.len(), 200);
        for (i, worktree) in held.into_iter().enumerate() {
            pools[i % 20].release(worktree).await;
        }
        for pool in &pools {
            pool.close().await;
        }
        assert!(!cache.path().join("work/many").exists());
        repo.assert_untouched(&before);
    }
}
