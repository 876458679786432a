//! What changed in a worktree since it was last clean, from the kernel's notes on its
//! folders (inotify), so that staging an attempt and returning the worktree to a commit
//! look at those paths alone instead of at every file of the repository.
//!
//! Every folder of a clean worktree is watched. A note names the folder and the entry in
//! it that was made, removed, renamed, written, closed after writing, or had its mode or
//! times changed; the journal keeps each such path. A folder made since is kept as a
//! whole (everything under it counts as changed) and watched once the worktree is clean
//! again. The kernel notes a change in the folder of the name it was made through, and
//! sandboxed processes cannot make a second name ([`braid_shared::seccomp`]), so no change
//! is made through a name the journal does not watch.
//!
//! The journal is a superset: a path in it may be unchanged (the survey of it tells). When
//! it may have missed something, it says it does not know, and the worktree is surveyed in
//! full: the kernel dropped notes (its queue overflowed), the worktree's folder itself was
//! moved, or an attempt ran with processes outside a sandbox ([`Journal::lose`]).
//!
//! Invariant: while [`Journal::changed`] returns paths, every path of the worktree whose
//! file, link or folder differs from what it was at the last [`Journal::settle`] is one of
//! them or lies beneath one of them.

use std::collections::{BTreeSet, HashMap};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use gix::bstr::{BString, ByteSlice, ByteVec};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};

/// Says why a worktree has no journal (or lost it): at debug level, and once per process as
/// a warning when it is a limit of the machine's that its owner can raise. Without a
/// journal a worktree is compared file by file after each attempt, which on a large
/// repository costs more than the rest of the attempt.
pub fn unavailable(err: &std::io::Error, what: &str) {
    use std::sync::Once;
    static INSTANCES: Once = Once::new();
    static WATCHES: Once = Once::new();
    let limit = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/fs/inotify/{name}"))
            .map(|n| n.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into())
    };
    let say = |name: &str, what: &str| {
        tracing::warn!(
            "inotify's limit fs.inotify.{name} ({}) is reached: {what}, so worktrees are \
             compared file by file after each attempt (slower on large repositories); \
             `sysctl fs.inotify.{name}=<more>` raises it",
            limit(name)
        );
    };
    // EMFILE is also braid's own limit of open files; that one is said where it is hit.
    let own_files_full = || {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        let open = std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count) as u64;
        limit.is_some_and(|limit| open + 1 >= limit)
    };
    match rustix::io::Errno::from_io_error(err) {
        Some(rustix::io::Errno::MFILE) if !own_files_full() => {
            INSTANCES.call_once(|| say("max_user_instances", "no inotify instance is left"));
        }
        Some(rustix::io::Errno::NOSPC) => {
            WATCHES.call_once(|| say("max_user_watches", "no folder watch is left"));
        }
        _ => {}
    }
    tracing::debug!(%err, "{what}: the worktree is surveyed in full");
}

/// The notes asked for on every folder.
fn mask() -> WatchFlags {
    WatchFlags::CREATE
        | WatchFlags::DELETE
        | WatchFlags::MODIFY
        | WatchFlags::ATTRIB
        | WatchFlags::CLOSE_WRITE
        | WatchFlags::MOVED_FROM
        | WatchFlags::MOVED_TO
        | WatchFlags::DELETE_SELF
        | WatchFlags::MOVE_SELF
        | WatchFlags::ONLYDIR
        | WatchFlags::DONT_FOLLOW
}

/// The paths changed in one worktree since it was last clean.
#[derive(Debug)]
pub struct Journal {
    fd: OwnedFd,
    root: PathBuf,
    /// The watched folders, by watch: their paths in the repository ("" for the root).
    dirs: HashMap<i32, BString>,
    changed: BTreeSet<BString>,
    /// Why the notes may be incomplete, until the worktree is next surveyed in full.
    lost: Option<&'static str>,
}

impl Journal {
    /// Starts a journal of the clean worktree at `root` whose index is `index`: every
    /// folder that holds a tracked path is watched.
    pub fn start(root: &Path, index: &gix::index::State) -> std::io::Result<Journal> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        let mut journal = Journal {
            fd,
            root: root.to_owned(),
            dirs: HashMap::new(),
            changed: BTreeSet::new(),
            lost: None,
        };
        journal.watch_all(index)?;
        Ok(journal)
    }

    /// The paths changed since the last [`Journal::settle`] (a folder standing for all
    /// beneath it), or why they are not known.
    pub fn changed(&mut self) -> Result<Vec<BString>, &'static str> {
        self.drain();
        match self.lost {
            Some(why) => Err(why),
            None => Ok(self.changed.iter().cloned().collect()),
        }
    }

    /// Says the notes may be incomplete until the next full survey: processes ran in the
    /// worktree that may change a file through a name the journal does not watch.
    pub fn lose(&mut self, why: &'static str) {
        self.lost.get_or_insert(why);
    }

    /// The worktree is clean now, its files as `index` has them: forgets what changed
    /// and watches the folders made since. `surveyed`: it was just compared with its
    /// index in full, so notes lost before are found again.
    pub fn settle(&mut self, index: &gix::index::State, surveyed: bool) -> std::io::Result<()> {
        self.drain();
        if self.lost.is_some() && !surveyed {
            return Ok(());
        }
        if self.lost.take().is_some() {
            // Watches may name folders by old paths: start again.
            self.fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
            self.dirs.clear();
            self.changed.clear();
            return self.watch_all(index);
        }
        let changed = std::mem::take(&mut self.changed);
        for path in &changed {
            let mut prefix = path.clone();
            prefix.push(b'/');
            let Some(range) = index.prefixed_entries_range(prefix.as_bstr()) else {
                continue;
            };
            let mut folders = BTreeSet::new();
            folders.insert(path.clone());
            for entry in &index.entries()[range] {
                let mut folder = entry.path(index);
                while let Some(i) = folder.rfind_byte(b'/') {
                    folder = folder[..i].as_bstr();
                    if folder.len() <= path.len() || !folders.insert(folder.to_owned()) {
                        break;
                    }
                }
            }
            // A folder watched already keeps its watch (the kernel returns it again).
            for folder in folders {
                self.watch(folder)?;
            }
        }
        Ok(())
    }

    /// Watches every folder that holds a path of `index`.
    fn watch_all(&mut self, index: &gix::index::State) -> std::io::Result<()> {
        let mut folders = BTreeSet::new();
        folders.insert(BString::default());
        for entry in index.entries() {
            let mut folder = entry.path(index);
            while let Some(i) = folder.rfind_byte(b'/') {
                folder = folder[..i].as_bstr();
                if !folders.insert(folder.to_owned()) {
                    break;
                }
            }
        }
        for folder in folders {
            self.watch(folder)?;
        }
        Ok(())
    }

    fn watch(&mut self, folder: BString) -> std::io::Result<()> {
        let at = if folder.is_empty() {
            self.root.clone()
        } else {
            self.root
                .join(gix::path::from_bstr(folder.as_bstr()).map_err(std::io::Error::other)?)
        };
        match inotify::add_watch(&self.fd, &at, mask()) {
            Ok(wd) => {
                self.dirs.insert(wd, folder);
                Ok(())
            }
            // A folder of the index that is not one on disk (a link, a file, gone): the
            // survey of its path, which the caller made, says so; nothing to watch.
            Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads every note the kernel holds.
    fn drain(&mut self) {
        let mut buf = [MaybeUninit::<u8>::uninit(); 64 * 1024];
        let mut reader = inotify::Reader::new(&self.fd, &mut buf);
        loop {
            let event = match reader.next() {
                Ok(event) => event,
                Err(rustix::io::Errno::AGAIN) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => {
                    self.lost
                        .get_or_insert("the kernel's notes could not be read");
                    break;
                }
            };
            let flags = event.events();
            if flags.intersects(ReadFlags::QUEUE_OVERFLOW | ReadFlags::UNMOUNT) {
                self.lost
                    .get_or_insert("more changed than the kernel keeps notes of");
                continue;
            }
            if flags.contains(ReadFlags::IGNORED) {
                self.dirs.remove(&event.wd());
                continue;
            }
            let Some(folder) = self.dirs.get(&event.wd()) else {
                continue;
            };
            if flags.intersects(ReadFlags::MOVE_SELF | ReadFlags::DELETE_SELF) {
                if folder.is_empty() {
                    self.lost.get_or_insert("the worktree's folder was moved");
                }
                // A folder below is named in its parent's note.
                continue;
            }
            let Some(name) = event.file_name() else {
                continue;
            };
            let mut path = folder.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.push_str(name.to_bytes());
            if flags.contains(ReadFlags::ISDIR) && flags.contains(ReadFlags::MOVED_FROM) {
                // The folder's watches would name what changes in it by its old path: they
                // go, and the folder counts as changed as a whole where it went.
                let below = |p: &BString| {
                    p == &path
                        || (p.starts_with(path.as_slice()) && p.get(path.len()) == Some(&b'/'))
                };
                let stale: Vec<i32> = self
                    .dirs
                    .iter()
                    .filter(|(_, p)| below(p))
                    .map(|(wd, _)| *wd)
                    .collect();
                for wd in stale {
                    let _ = inotify::remove_watch(&self.fd, wd);
                    self.dirs.remove(&wd);
                }
            }
            self.changed.insert(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_tests::TestRepo;

    fn journal(repo: &TestRepo) -> Journal {
        let index = crate::admin::read_index(&crate::checkout::open(&repo.path).unwrap()).unwrap();
        Journal::start(&repo.path, &index).unwrap()
    }

    fn paths(journal: &mut Journal) -> Vec<String> {
        journal
            .changed()
            .unwrap()
            .into_iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn the_journal_names_what_changed_and_nothing_else() {
        let repo = TestRepo::init();
        repo.commit(
            &[
                ("a/b/c.txt", "c\n"),
                ("a/d.txt", "d\n"),
                ("e.txt", "e\n"),
                ("f/g.txt", "g\n"),
                ("h/i/j.txt", "j\n"),
            ],
            "base",
        );
        let mut journal = journal(&repo);
        assert_eq!(paths(&mut journal), Vec::<String>::new());
        // Written, its mode changed, its time set back, removed, made in a new folder,
        // a folder renamed.
        std::fs::write(repo.path.join("a/b/c.txt"), "changed\n").unwrap();
        let mode = std::fs::Permissions::from_mode(0o755);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(repo.path.join("a/d.txt"), mode).unwrap();
        let file = std::fs::File::options()
            .write(true)
            .open(repo.path.join("e.txt"))
            .unwrap();
        file.set_modified(std::time::UNIX_EPOCH).unwrap();
        drop(file);
        std::fs::remove_file(repo.path.join("f/g.txt")).unwrap();
        std::fs::create_dir_all(repo.path.join("new/deep")).unwrap();
        std::fs::write(repo.path.join("new/deep/x.txt"), "x\n").unwrap();
        std::fs::rename(repo.path.join("h"), repo.path.join("k")).unwrap();
        // Written after its folder was renamed: its old folder's watch is gone.
        std::fs::write(repo.path.join("k/i/j.txt"), "j2\n").unwrap();
        assert_eq!(
            paths(&mut journal),
            ["a/b/c.txt", "a/d.txt", "e.txt", "f/g.txt", "h", "k", "new"]
        );
        // Clean again (as its index has it), the new folder is watched too.
        std::fs::rename(repo.path.join("k"), repo.path.join("h")).unwrap();
        repo.git(&["add", "--all"]);
        repo.git(&["commit", "--quiet", "-m", "next"]);
        let index = crate::admin::read_index(&crate::checkout::open(&repo.path).unwrap()).unwrap();
        journal.settle(&index, false).unwrap();
        assert_eq!(paths(&mut journal), Vec::<String>::new());
        std::fs::write(repo.path.join("new/deep/y.txt"), "y\n").unwrap();
        std::fs::write(repo.path.join("h/i/z.txt"), "z\n").unwrap();
        assert_eq!(paths(&mut journal), ["h/i/z.txt", "new/deep/y.txt"]);
    }

    #[test]
    fn a_journal_that_may_have_missed_something_says_so_until_a_full_survey() {
        let repo = TestRepo::init();
        let mut journal = journal(&repo);
        journal.lose("ran without a sandbox");
        assert_eq!(journal.changed(), Err("ran without a sandbox"));
        let index = crate::admin::read_index(&crate::checkout::open(&repo.path).unwrap()).unwrap();
        journal.settle(&index, false).unwrap();
        assert!(
            journal.changed().is_err(),
            "a clean move does not find lost notes"
        );
        journal.settle(&index, true).unwrap();
        assert_eq!(journal.changed(), Ok(Vec::new()));
        // The kernel's queue overflowing loses notes too.
        for i in 0..6_000 {
            std::fs::write(repo.path.join("README.md"), format!("{i}\n")).unwrap();
            std::fs::write(repo.path.join(format!("f{}", i % 50)), "x").unwrap();
        }
        assert!(journal.changed().is_err());
    }
}
