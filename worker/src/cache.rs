//! The worker's repository cache: every worktree is a repository of its own, in braid's
//! cache folder, borrowing the user's objects read-only through `objects/info/alternates`.
//!
//! Why not linked worktrees of the user's repository: a linked worktree shares the user's
//! refs, config and hooks, so an agent that runs `git update-ref refs/heads/main`, plants a
//! hook or sets `core.fsmonitor` in its worktree changes the user's repository. Here an
//! agent's git commands reach only its own git folder; the user's objects are read, never
//! written (inside the sandbox they are mounted read-only). Attempt commits are written into
//! the worktree's own objects and shipped to the coordinator as a pack
//! ([`pack_since`]), which checks them before it takes them into the user's repository:
//! the same exchange a remote worker with a cache of its own needs.
//!
//! Layout, under `<cache>/work/<run>/`: `<name>/` is the working tree, `<name>.git/` its
//! git folder, `<name>.tmp/` the attempt's scratch (its `/tmp` inside the sandbox).
//!
//! Invariant: braid never trusts what an agent left in a git folder or a `.git` file. It
//! names the git folder to git and gix explicitly, and [`restore`] puts back its config,
//! alternates and refs (and takes away hooks, `info/`, `commondir` and anything else an
//! agent planted) before braid's own code reads the folder again.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where one worktree's files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The working tree.
    pub tree: PathBuf,
    /// Its git folder.
    pub git: PathBuf,
    /// Scratch space for the attempt's processes.
    pub tmp: PathBuf,
}

impl Layout {
    /// The worktree called `name` in the run folder `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        Layout {
            tree: dir.join(name),
            git: dir.join(format!("{name}.git")),
            tmp: dir.join(format!("{name}.tmp")),
        }
    }
}

/// The user's repository, as a worktree's git folder borrows from it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Source {
    /// The repository's common git folder.
    pub common: PathBuf,
}

impl Source {
    /// The object folder the worktrees borrow.
    pub fn objects(&self) -> PathBuf {
        self.common.join("objects")
    }
}

/// The folder of braid's cache: `$BRAID_CACHE`, else `$XDG_CACHE_HOME/braid`, else
/// `~/.cache/braid`.
pub fn root() -> PathBuf {
    let set = |key| {
        std::env::var_os(key)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = set("BRAID_CACHE") {
        return dir;
    }
    if let Some(dir) = set("XDG_CACHE_HOME") {
        return dir.join("braid");
    }
    let home = set("HOME").unwrap_or_else(std::env::temp_dir);
    home.join(".cache/braid")
}

/// The folder of a run's worktrees in the cache at `root`.
pub fn run_dir(root: &Path, run: &str) -> PathBuf {
    root.join("work").join(run)
}

fn config(layout: &Layout) -> String {
    // `core.worktree` tells git and gix where the files are when they are given the git
    // folder; hooks go nowhere, and nothing braid runs here starts an fsmonitor. The index
    // carries no checksum, as braid writes it (see `admin::WRITE`).
    format!(
        "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n\
         \tlogallrefupdates = true\n\tworktree = {}\n\thooksPath = /dev/null\n\
         \tfsmonitor = false\n[index]\n\tskipHash = true\n[gc]\n\tauto = 0\n\
         [maintenance]\n\tauto = false\n",
        quote(&layout.tree)
    )
}

/// A path as a git config value.
fn quote(path: &Path) -> String {
    let text = path.to_string_lossy();
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Makes the git folder and empty working tree of a new worktree at `commit` (no files
/// and no index yet: [`crate::checkout::populate`] writes them). No git process runs, so
/// worktrees are made concurrently without racing over a shared `worktrees/` folder.
pub fn init(layout: &Layout, source: &Source, commit: &str) -> std::io::Result<()> {
    for dir in [&layout.tree, &layout.tmp] {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::create_dir(&layout.git)?;
    write_template(layout, source)?;
    ensure(&layout.git.join("HEAD"), format!("{commit}\n").as_bytes()).map(drop)
}

/// Writes braid's files of a git folder, each only where it is not already as braid wants
/// it: on a disk with online discard, every file made costs more than reading one.
fn write_template(layout: &Layout, source: &Source) -> std::io::Result<bool> {
    let git = &layout.git;
    for dir in ["objects/info", "objects/pack", "refs/heads", "refs/tags"] {
        std::fs::create_dir_all(git.join(dir))?;
    }
    let config_changed = ensure(&git.join("config"), config(layout).as_bytes())?;
    ensure(
        &git.join("objects/info/alternates"),
        format!("{}\n", source.objects().display()).as_bytes(),
    )?;
    // A shallow repository's worktrees must know where its history stops, or git looks for
    // parents that are not there.
    let shallow = source.common.join("shallow");
    if shallow.is_file() {
        ensure(&git.join("shallow"), &std::fs::read(&shallow)?)?;
    }
    ensure(
        &layout.tree.join(".git"),
        format!("gitdir: {}\n", layout.git.display()).as_bytes(),
    )?;
    // Whether the config had to be written: the only one of these an agent's git
    // commands change.
    Ok(config_changed)
}

/// Makes `path` a regular file holding `bytes`: left alone when it is one already,
/// written over in place when it is a file with other bytes, and made anew when it is
/// anything else (a link is removed, never followed). Returns whether it wrote.
fn ensure(path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => {
            if meta.len() == bytes.len() as u64 && std::fs::read(path)? == bytes {
                return Ok(false);
            }
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(path)?;
            file.write_all(bytes)?;
        }
        Ok(_) => {
            remove_any(path)?;
            std::fs::write(path, bytes)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::write(path, bytes)?,
        Err(e) => return Err(e),
    }
    Ok(true)
}

/// What HEAD of the git folder `git` names, detached: the commit, following one symbolic
/// ref (an agent's `git switch -C x`) through loose or packed refs. `None` when it names
/// nothing braid can read.
pub fn head_commit(git: &Path) -> Option<String> {
    let head = read_regular(&git.join("HEAD"))?;
    let head = head.trim();
    let Some(target) = head.strip_prefix("ref:").map(str::trim) else {
        return is_object_id(head).then(|| head.to_owned());
    };
    if !target.starts_with("refs/") || target.split('/').any(|c| c == ".." || c.is_empty()) {
        return None;
    }
    if let Some(loose) = read_regular(&git.join(target)) {
        let id = loose.trim();
        return is_object_id(id).then(|| id.to_owned());
    }
    let packed = read_regular(&git.join("packed-refs"))?;
    packed.lines().find_map(|line| {
        let (id, name) = line.split_once(' ')?;
        (name == target && is_object_id(id)).then(|| id.to_owned())
    })
}

/// Whether `text` is a full object id: 40 hexadecimal digits.
pub fn is_object_id(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The text of `path` if it is a regular file (never through a symbolic link).
fn read_regular(path: &Path) -> Option<String> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    std::fs::read_to_string(path).ok()
}

/// What [`restore`] found an agent had changed in its git folder.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Restored {
    /// Entries of the git folder braid did not make (hooks, `info/`, `commondir`, refs…),
    /// removed, and `config` when braid wrote it back.
    pub removed: Vec<String>,
    /// HEAD pointed at a branch; it now holds that branch's commit, detached.
    pub detached: bool,
    /// The index was not a regular file; it was removed (the next status rebuilds it).
    pub index_dropped: bool,
    /// The working tree's `.git` file pointed elsewhere (or was not a file); it was put back.
    pub dot_git: bool,
}

/// Puts a worktree's git folder back as braid made it, keeping HEAD's commit, the index
/// and the objects: config, alternates and the `.git` file rewritten, refs, hooks and
/// anything else removed. Run after untrusted code (agents, checks) and before braid's
/// own code reads the folder. `fallback` is HEAD when HEAD names nothing readable.
pub fn restore(layout: &Layout, source: &Source, fallback: &str) -> std::io::Result<Restored> {
    let git = &layout.git;
    let mut restored = Restored::default();
    let head = head_commit(git);
    restored.detached = head.is_some()
        && read_regular(&git.join("HEAD")).is_some_and(|h| h.trim_start().starts_with("ref:"));
    let head = head.unwrap_or_else(|| fallback.to_owned());
    for entry in std::fs::read_dir(git)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry.file_type()?;
        let keep = match name.as_str() {
            // An agent may have put a link or a folder where a file of braid's was.
            "index" | "HEAD" | "config" => kind.is_file(),
            // Only the user's repository says where history stops.
            "shallow" => kind.is_file() && source.common.join("shallow").is_file(),
            // `modules/` holds the git folders of submodules the agent cloned: without
            // them git cannot read the gitlinks it staged, and the coordinator then names
            // each gitlink whose commit it cannot find.
            "objects" | "logs" | "modules" => kind.is_dir(),
            "refs" => kind.is_dir() && !refs_beyond_template(&entry.path()),
            _ => false,
        };
        if keep {
            continue;
        }
        if name == "index" {
            restored.index_dropped = true;
        }
        restored.removed.push(name.clone());
        remove_any(&entry.path())?;
    }
    // objects/info may hold alternates or http-alternates an agent wrote.
    let info = git.join("objects/info");
    if let Ok(entries) = std::fs::read_dir(&info) {
        for entry in entries.flatten() {
            if entry.file_name() != "alternates" {
                remove_any(&entry.path())?;
            }
        }
    }
    let dot_git = layout.tree.join(".git");
    let expected = format!("gitdir: {}\n", git.display());
    if read_regular(&dot_git).as_deref() != Some(expected.as_str()) {
        restored.dot_git = true;
        remove_any(&dot_git)?;
    }
    if write_template(layout, source)? {
        restored.removed.push("config".into());
    }
    ensure(&git.join("HEAD"), format!("{head}\n").as_bytes())?;
    Ok(restored)
}

/// Whether a refs folder holds anything but the empty `heads/` and `tags/` braid makes.
fn refs_beyond_template(refs: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(refs) else {
        return true;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let empty_dir = entry.file_type().is_ok_and(|t| t.is_dir())
            && std::fs::read_dir(entry.path()).is_ok_and(|mut d| d.next().is_none());
        !(empty_dir && (name == "heads" || name == "tags"))
    })
}

/// Removes a file, a link (not what it points at) or a folder with everything in it.
pub fn remove_any(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes a worktree for good: its files, git folder and scratch.
pub fn remove(layout: &Layout) {
    crate::admin::forget_index(&layout.git.join("index"));
    for path in [&layout.tree, &layout.git, &layout.tmp] {
        if let Err(err) = remove_any(path) {
            tracing::warn!(path = %path.display(), %err, "could not remove a worktree folder");
        }
    }
}

/// Empties a worktree's scratch folder for the next attempt.
pub fn clear_tmp(layout: &Layout) -> std::io::Result<()> {
    match std::fs::symlink_metadata(&layout.tmp) {
        Ok(meta) if meta.is_dir() => {
            for entry in std::fs::read_dir(&layout.tmp)?.flatten() {
                remove_any(&entry.path())?;
            }
            Ok(())
        }
        _ => {
            remove_any(&layout.tmp)?;
            std::fs::create_dir_all(&layout.tmp)
        }
    }
}

/// The objects of `commit` that `base` lacks, as a thin pack (deltas may name objects of
/// `base`), made by git in the worktree's git folder. The coordinator completes and checks
/// it with `git index-pack --fix-thin --strict`.
pub async fn pack_since(
    layout: &Layout,
    commit: &str,
    base: &str,
) -> Result<Vec<u8>, braid_shared::git::GitError> {
    let git = braid_shared::git::Git::worktree(&layout.git, &layout.tree);
    git.pack(commit, base).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_tests::TestRepo;

    fn made(repo: &TestRepo) -> (tempfile::TempDir, Layout, Source, String) {
        let cache = tempfile::tempdir().unwrap();
        let layout = Layout::new(cache.path(), "w-1");
        let source = Source {
            common: repo.git_dir(),
        };
        let head = repo.git(&["rev-parse", "HEAD"]);
        init(&layout, &source, &head).unwrap();
        (cache, layout, source, head)
    }

    #[test]
    fn restore_undoes_what_an_agent_did_to_its_git_folder() {
        let repo = TestRepo::init();
        let (_cache, layout, source, head) = made(&repo);
        let git = &layout.git;
        // An agent's git commands: a branch it switched to, a hook, config, a commondir
        // pointing at the user's repository, an alternate, a link instead of the index.
        std::fs::write(git.join("refs/heads/feature"), format!("{head}\n")).unwrap();
        std::fs::write(git.join("HEAD"), "ref: refs/heads/feature\n").unwrap();
        std::fs::create_dir_all(git.join("hooks")).unwrap();
        std::fs::write(git.join("hooks/post-checkout"), "#!/bin/sh\n").unwrap();
        std::fs::write(git.join("config"), "[core]\n\tfsmonitor = /bin/evil\n").unwrap();
        std::fs::write(git.join("commondir"), repo.git_dir().display().to_string()).unwrap();
        std::fs::write(git.join("objects/info/alternates"), "/elsewhere\n").unwrap();
        std::os::unix::fs::symlink(repo.git_dir().join("index"), git.join("index")).unwrap();
        std::fs::remove_file(layout.tree.join(".git")).unwrap();
        std::fs::write(
            layout.tree.join(".git"),
            format!("gitdir: {}\n", repo.git_dir().display()),
        )
        .unwrap();

        let restored = restore(&layout, &source, "0".repeat(40).as_str()).unwrap();
        assert!(restored.detached);
        assert!(restored.index_dropped);
        assert!(restored.dot_git);
        for planted in ["hooks", "commondir", "index", "refs"] {
            assert!(
                restored.removed.iter().any(|r| r == planted),
                "{planted} not reported in {restored:?}"
            );
        }
        assert_eq!(
            std::fs::read_to_string(git.join("HEAD")).unwrap(),
            format!("{head}\n")
        );
        assert_eq!(
            std::fs::read_to_string(git.join("config")).unwrap(),
            config(&layout)
        );
        assert!(!git.join("hooks").exists() && !git.join("commondir").exists());
        assert!(!git.join("refs/heads/feature").exists());
        assert!(!git.join("index").exists());
        assert_eq!(
            std::fs::read_to_string(git.join("objects/info/alternates")).unwrap(),
            format!("{}\n", source.objects().display())
        );
        assert_eq!(
            std::fs::read_to_string(layout.tree.join(".git")).unwrap(),
            format!("gitdir: {}\n", git.display())
        );
        // The user's index, which the link pointed at, is still there.
        assert!(repo.git_dir().join("index").is_file());
    }

    #[test]
    fn a_fresh_git_folder_is_a_repository_that_reads_the_users_objects() {
        let repo = TestRepo::init();
        let (_cache, layout, _source, head) = made(&repo);
        let out = braid_tests::command("git", &layout.tree)
            .args(["cat-file", "-t", &head])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "commit");
        assert_eq!(head_commit(&layout.git), Some(head));
    }
}
