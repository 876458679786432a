//! The worker's copies of the repositories it works on, so it needs no disk shared with the
//! coordinator: one bare repository per repository id under `<cache>/repos/<id>.git`,
//! filled with the packs the coordinator sends (`FetchObjects`), only with what is missing.
//! A worktree borrows its mirror's objects (see [`crate::cache`]).
//!
//! A worker started beside the coordinator (embedded mode) may be told, in its own options
//! and never over the wire, where a repository's objects already are on this machine; its
//! mirror then borrows them too and asks the coordinator only for what they lack, through
//! the same code.
//!
//! Invariant: a repository id and a commit from the wire are checked before they name a
//! folder or reach git; a mirror is only ever added to (packs checked by git with
//! `--strict`), and one that cannot give what a fetch brought is removed and fetched anew.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use braid_shared::git::Git;
use futures_util::future::BoxFuture;
use tokio::sync::Mutex;

use crate::cache::Source;

/// How many commits a mirror remembers having, to name as `have` in its next fetch.
const HAVES: usize = 32;

/// What a fetch brought: a pack (thin against the `have`s) and the shallow commits.
#[derive(Debug, Default)]
pub struct Fetched {
    /// The pack's bytes.
    pub pack: Vec<u8>,
    /// Where the repository's history is cut, when it is a shallow clone.
    pub shallow: Vec<String>,
}

/// Asks the coordinator for objects: `(repository, want, have)` to a pack.
pub type Fetcher = Arc<
    dyn Fn(String, Vec<String>, Vec<String>) -> BoxFuture<'static, Result<Fetched, String>>
        + Send
        + Sync,
>;

/// A worker's mirrors, one per repository id.
pub struct Mirrors {
    /// `<cache>/repos`.
    root: PathBuf,
    /// Repository ids whose objects are on this machine already, and where (a git folder).
    borrow: HashMap<String, PathBuf>,
    fetch: Fetcher,
    each: Mutex<HashMap<String, Arc<Mutex<Mirror>>>>,
}

impl std::fmt::Debug for Mirrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirrors")
            .field("root", &self.root)
            .field("borrow", &self.borrow)
            .finish_non_exhaustive()
    }
}

/// One mirror, and what braid knows it holds.
#[derive(Debug, Default)]
struct Mirror {
    /// Opened once it exists.
    repo: Option<gix::ThreadSafeRepository>,
    /// Commits found in it, so each is looked up once.
    present: HashSet<String>,
}

/// Whether `id` is a repository id: 32 lowercase hexadecimal digits.
pub fn is_repository_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Mirrors {
    /// Mirrors under `<cache>/repos`, borrowing the repositories in `borrow` where they
    /// are, and fetching the rest with `fetch`.
    pub fn new(cache: &Path, borrow: HashMap<String, PathBuf>, fetch: Fetcher) -> Self {
        Mirrors {
            root: cache.join("repos"),
            borrow,
            fetch,
            each: Mutex::new(HashMap::new()),
        }
    }

    /// The mirror of `repository` holding every commit of `commits` (and all it needs),
    /// fetched as needed, as the source worktrees borrow from.
    pub async fn ensure(&self, repository: &str, commits: &[&str]) -> Result<Source, String> {
        if !is_repository_id(repository) {
            return Err(format!(
                "the coordinator named the repository {repository:?}, which is not a repository id"
            ));
        }
        if let Some(bad) = commits.iter().find(|c| !crate::cache::is_object_id(c)) {
            return Err(format!(
                "the coordinator named the commit {bad:?}, which is not a commit id"
            ));
        }
        let mirror = {
            let mut each = self.each.lock().await;
            Arc::clone(each.entry(repository.to_owned()).or_default())
        };
        // One fetch at a time per repository: attempts on the same base wait for the first.
        let mut mirror = mirror.lock().await;
        let dir = self.root.join(format!("{repository}.git"));
        let source = Source {
            common: dir.clone(),
        };
        let missing = self.missing(&mut mirror, &dir, repository, commits)?;
        if missing.is_empty() {
            return Ok(source);
        }
        match self
            .fetch_into(&mut mirror, &dir, repository, &missing)
            .await
        {
            Ok(()) => Ok(source),
            Err(why) => {
                // A mirror that could not take a pack, or still lacks what it brought, is
                // corrupt or was tampered with: made anew from nothing, once.
                tracing::warn!(%repository, %why, "rebuilding the repository cache");
                *mirror = Mirror::default();
                crate::cache::remove_any(&dir)
                    .map_err(|e| format!("removing the corrupt cache {}: {e}", dir.display()))?;
                let missing = self.missing(&mut mirror, &dir, repository, commits)?;
                self.fetch_into(&mut mirror, &dir, repository, &missing)
                    .await
                    .map_err(|again| format!("{why}; after rebuilding the cache: {again}"))?;
                Ok(source)
            }
        }
    }

    /// Opens (making it first) the mirror at `dir` and lists which of `commits` it lacks.
    fn missing(
        &self,
        mirror: &mut Mirror,
        dir: &Path,
        repository: &str,
        commits: &[&str],
    ) -> Result<Vec<String>, String> {
        if mirror.repo.is_none() {
            init_bare(dir, self.borrow.get(repository).map(PathBuf::as_path))
                .map_err(|e| format!("making the repository cache {}: {e}", dir.display()))?;
            let repo = gix::open_opts(dir, gix::open::Options::isolated())
                .map_err(|e| format!("opening the repository cache {}: {e}", dir.display()))?;
            mirror.repo = Some(repo.into_sync());
        }
        let repo = mirror
            .repo
            .as_ref()
            .expect("opened above")
            .to_thread_local();
        let mut missing = Vec::new();
        for commit in commits {
            if mirror.present.contains(*commit) {
                continue;
            }
            let id = gix::ObjectId::from_hex(commit.as_bytes()).map_err(|e| e.to_string())?;
            if repo.has_object(id) {
                mirror.present.insert((*commit).to_owned());
            } else if !missing.iter().any(|m| m == commit) {
                missing.push((*commit).to_owned());
            }
        }
        Ok(missing)
    }

    /// Fetches `missing` into the mirror at `dir` and checks they are all there now.
    async fn fetch_into(
        &self,
        mirror: &mut Mirror,
        dir: &Path,
        repository: &str,
        missing: &[String],
    ) -> Result<(), String> {
        let haves = read_haves(dir);
        let fetched = (self.fetch)(repository.to_owned(), missing.to_vec(), haves.clone()).await?;
        if !fetched.shallow.is_empty() {
            if let Some(bad) = fetched
                .shallow
                .iter()
                .find(|c| !crate::cache::is_object_id(c))
            {
                return Err(format!("the coordinator named the shallow commit {bad:?}"));
            }
            let mut all: Vec<String> = std::fs::read_to_string(dir.join("shallow"))
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .chain(fetched.shallow)
                .collect();
            all.sort();
            all.dedup();
            replace(&dir.join("shallow"), (all.join("\n") + "\n").as_bytes())
                .map_err(|e| format!("writing {}: {e}", dir.join("shallow").display()))?;
        }
        if !fetched.pack.is_empty() {
            Git::at(dir)
                .unpack(fetched.pack)
                .await
                .map_err(|e| format!("the coordinator's objects were refused: {e}"))?;
        }
        let repo = mirror
            .repo
            .as_ref()
            .expect("opened by missing")
            .to_thread_local();
        for commit in missing {
            let id = gix::ObjectId::from_hex(commit.as_bytes()).map_err(|e| e.to_string())?;
            if !repo.has_object(id) {
                return Err(format!("the coordinator's pack lacks the commit {commit}"));
            }
            mirror.present.insert(commit.clone());
        }
        write_haves(dir, missing, &haves);
        Ok(())
    }
}

/// Makes an empty bare repository at `dir` unless one is there, borrowing the objects of
/// the git folder `borrow`. Workers of several processes may share a cache, so the
/// repository is made beside its place and renamed into it, and a file that changes is
/// written beside it and renamed over it: none ever reads a half-made one.
pub fn init_bare(dir: &Path, borrow: Option<&Path>) -> std::io::Result<()> {
    if !dir.join("HEAD").is_file() {
        let parent = dir.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent)?;
        let fresh = tempfile::Builder::new()
            .prefix(".new-")
            .tempdir_in(parent)?;
        for sub in ["objects/info", "objects/pack", "refs/heads", "refs/tags"] {
            std::fs::create_dir_all(fresh.path().join(sub))?;
        }
        let config = "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = true\n\
                      \thooksPath = /dev/null\n\tfsmonitor = false\n[gc]\n\tauto = 0\n\
                      [maintenance]\n\tauto = false\n";
        std::fs::write(fresh.path().join("config"), config)?;
        std::fs::write(fresh.path().join("HEAD"), "ref: refs/heads/main\n")?;
        if std::fs::rename(fresh.path(), dir).is_err() && !dir.join("HEAD").is_file() {
            // Not made by another worker either: a folder that is no repository is in the way.
            crate::cache::remove_any(dir)?;
            std::fs::rename(fresh.path(), dir)?;
        }
    }
    // A worker that borrows nothing leaves another's borrowing alone: it only adds objects.
    if let Some(git) = borrow {
        let alternates = dir.join("objects/info/alternates");
        let line = format!("{}\n", git.join("objects").display());
        if std::fs::read_to_string(&alternates).ok().as_deref() != Some(line.as_str()) {
            replace(&alternates, line.as_bytes())?;
        }
    }
    Ok(())
}

/// Writes `path` whole: the bytes go beside it and are renamed over it.
fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut file, bytes)?;
    file.persist(path).map(drop).map_err(|e| e.error)
}

/// Whether the mirror at `dir` borrowed the objects of a repository that is gone: with
/// them it lost what it never fetched, so it is of no more use.
pub fn borrows_what_is_gone(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("objects/info/alternates"))
        .ok()
        .is_some_and(|text| text.lines().any(|line| !Path::new(line.trim()).is_dir()))
}

fn haves_file(dir: &Path) -> PathBuf {
    dir.join("braid-haves")
}

/// The commits the mirror got in its last fetches, newest first.
fn read_haves(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(haves_file(dir))
        .unwrap_or_default()
        .lines()
        .filter(|l| crate::cache::is_object_id(l))
        .map(str::to_owned)
        .take(HAVES)
        .collect()
}

fn write_haves(dir: &Path, new: &[String], old: &[String]) {
    let mut all: Vec<&String> = new.iter().collect();
    for have in old {
        if !all.contains(&have) {
            all.push(have);
        }
    }
    let text: String = all.iter().take(HAVES).map(|c| format!("{c}\n")).collect();
    if let Err(err) = replace(&haves_file(dir), text.as_bytes()) {
        tracing::warn!(%err, "could not note the commits a repository cache holds");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_tests::TestRepo;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fetcher that packs from `repo` as the coordinator does, counting its calls.
    fn fetcher(repo: PathBuf, calls: Arc<AtomicUsize>) -> Fetcher {
        Arc::new(move |_id, want, have| {
            let repo = repo.clone();
            let calls = Arc::clone(&calls);
            Box::pin(async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let pack = Git::at(&repo)
                    .pack_wanted(&want, &have)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Fetched {
                    pack,
                    shallow: Vec::new(),
                })
            })
        })
    }

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[tokio::test]
    async fn a_mirror_fetches_only_what_it_lacks_and_rebuilds_when_corrupt() {
        let repo = TestRepo::init();
        let first = repo.git(&["rev-parse", "HEAD"]);
        let cache = tempfile::tempdir().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let mirrors = Mirrors::new(
            cache.path(),
            HashMap::new(),
            fetcher(repo.path.clone(), Arc::clone(&calls)),
        );
        let source = mirrors.ensure(ID, &[&first]).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let show = |commit: &str| {
            braid_tests::command("git", cache.path())
                .args([
                    "--git-dir",
                    &source.common.to_string_lossy(),
                    "cat-file",
                    "-t",
                    commit,
                ])
                .output()
                .unwrap()
        };
        assert_eq!(
            String::from_utf8_lossy(&show(&first).stdout).trim(),
            "commit"
        );
        // Present: no second fetch.
        mirrors.ensure(ID, &[&first]).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // A commit on top: fetched, thin against the first.
        let second = repo.commit(&[("more.txt", "more\n")], "more");
        mirrors.ensure(ID, &[&second, &first]).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(read_haves(&source.common)[0], second);

        // Objects lost behind braid's back: a fresh set of mirrors (a restarted worker)
        // finds the commit missing, fetches thin against haves it no longer has, cannot
        // complete the pack, and rebuilds the cache from nothing.
        for entry in std::fs::read_dir(source.common.join("objects"))
            .unwrap()
            .flatten()
        {
            if entry.file_name() != "info" && entry.file_name() != "pack" {
                std::fs::remove_dir_all(entry.path()).unwrap();
            }
        }
        for entry in std::fs::read_dir(source.common.join("objects/pack"))
            .unwrap()
            .flatten()
        {
            std::fs::remove_file(entry.path()).unwrap();
        }
        let restarted = Mirrors::new(
            cache.path(),
            HashMap::new(),
            fetcher(repo.path.clone(), Arc::clone(&calls)),
        );
        restarted.ensure(ID, &[&second]).await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&show(&second).stdout).trim(),
            "commit"
        );
        assert_eq!(
            String::from_utf8_lossy(&show(&first).stdout).trim(),
            "commit"
        );
    }

    #[tokio::test]
    async fn names_from_the_wire_are_checked_before_they_name_a_folder() {
        let cache = tempfile::tempdir().unwrap();
        let never: Fetcher =
            Arc::new(|_, _, _| Box::pin(async { Err("no fetch expected".to_owned()) }));
        let mirrors = Mirrors::new(cache.path(), HashMap::new(), never);
        for bad in [
            "../../etc",
            "0123456789abcdef0123456789abcde/",
            "",
            "0123456789ABCDEF0123456789ABCDEF",
        ] {
            let err = mirrors.ensure(bad, &[&"a".repeat(40)]).await.unwrap_err();
            assert!(err.contains("not a repository id"), "{err}");
        }
        let err = mirrors.ensure(ID, &["HEAD"]).await.unwrap_err();
        assert!(err.contains("not a commit id"), "{err}");
        assert!(!cache.path().join("repos").exists());
    }

    #[tokio::test]
    async fn a_borrowing_mirror_fetches_nothing_its_repository_has() {
        let repo = TestRepo::init();
        let head = repo.git(&["rev-parse", "HEAD"]);
        let cache = tempfile::tempdir().unwrap();
        let never: Fetcher =
            Arc::new(|_, _, _| Box::pin(async { Err("no fetch expected".to_owned()) }));
        let borrow = HashMap::from([(ID.to_owned(), repo.git_dir())]);
        let mirrors = Mirrors::new(cache.path(), borrow, never);
        mirrors.ensure(ID, &[&head]).await.unwrap();
    }
}
