//! A worktree's files, written in process by gix: a fresh worktree's, and a reused one's
//! moved to the next attempt's commit.
//!
//! `git worktree add` writes the files on one thread. gix writes them on every core, with
//! the same filters and attributes, and records the same index: measured on a 20,000-file
//! repository it is the difference between a fresh attempt start as slow as git's and one
//! well under half of it (see `cargo run --release -p braid-bench -- start`). git still
//! makes the worktree's record (`git worktree add --no-checkout`), so git and every tool
//! built on it see an ordinary worktree.
//!
//! A reused worktree is moved as `git checkout --force --detach` and `git clean -ffdx`
//! would move it, without their two processes: a status (gix) finds what the last attempt
//! changed, and only the files that differ are written. Unit tests hold the result to
//! git's, file by file.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use gix::worktree::stack::state::attributes::Source;

/// Opens the worktree at `dir` for in-process work.
///
/// Stat times are compared to the nanosecond, as git does on Linux: gix compares whole
/// seconds unless told otherwise, and then every file written in the same second as the
/// index counts as possibly changed and is read again (measured: most of the time of a
/// status in a worktree that attempts move through several times a second).
///
/// `dir` is the worktree's git folder (braid's own worktrees are opened by it, never through
/// a `.git` file in the working tree, which an agent can rewrite), or any worktree in tests.
pub(crate) fn open(dir: &Path) -> Result<gix::Repository, String> {
    let options = gix::open::Options::default().config_overrides(["gitoxide.core.useNsec=true"]);
    gix::open_opts(dir, options).map_err(|e| format!("opening {}: {e}", dir.display()))
}

/// Writes the files of `commit` into the empty worktree of `repo`, and its index, which
/// it returns.
pub fn populate(repo: &gix::Repository, commit: &str) -> Result<Known, String> {
    let tree = crate::commit::tree_of(repo, crate::commit::commit_id(commit)?)?;
    let mut index = repo
        .index_from_tree(&tree)
        .map_err(|e| format!("reading tree {tree}: {e}"))?;
    write_entries(repo, &mut index, commit, |options| {
        options.destination_is_initially_empty = true;
    })?;
    index
        .write(crate::admin::WRITE)
        .map_err(|e| format!("writing the index: {e}"))?;
    Ok(Known {
        index,
        tree,
        in_file: true,
        unwritten: None,
    })
}

/// Writes the files of the entries of `index` (of `commit`) into the worktree of `repo`,
/// and their stat into `index`; `configure` sets the checkout's options.
fn write_entries(
    repo: &gix::Repository,
    index: &mut gix::index::State,
    commit: &str,
    configure: impl FnOnce(&mut gix::worktree::state::checkout::Options),
) -> Result<(), String> {
    let dir = repo.workdir().ok_or("the repository has no worktree")?;
    let mut options = repo
        .checkout_options(Source::IdMapping)
        .map_err(|e| format!("reading the checkout options: {e}"))?;
    configure(&mut options);
    let objects = repo
        .objects
        .clone()
        .into_arc()
        .map_err(|e| format!("sharing the object database: {e}"))?;
    let outcome = gix::worktree::state::checkout(
        index,
        dir,
        objects,
        &gix::progress::Discard,
        &gix::progress::Discard,
        &AtomicBool::new(false),
        options,
    )
    .map_err(|e| format!("writing the files of {commit}: {e}"))?;
    if let Some(error) = outcome.errors.first() {
        return Err(format!(
            "writing {} of {commit}: {}",
            error.path, error.error
        ));
    }
    if let Some(collision) = outcome.collisions.first() {
        return Err(format!("{} collides with another path", collision.path));
    }
    Ok(())
}

/// Those of `paths` that are files in `commit`, with their modes and blobs.
fn files_of(
    repo: &gix::Repository,
    commit: &str,
    paths: &[String],
) -> Result<Vec<(String, gix::objs::tree::EntryMode, gix::ObjectId)>, String> {
    let tree = crate::commit::tree_of(repo, crate::commit::commit_id(commit)?)?;
    let tree = repo
        .find_tree(tree)
        .map_err(|e| format!("reading tree {tree}: {e}"))?;
    let mut files = Vec::new();
    for path in paths {
        if let Ok(Some(entry)) = tree.lookup_entry_by_path(path.as_str())
            && entry.mode().is_blob()
        {
            files.push((path.clone(), entry.mode(), entry.object_id()));
        }
    }
    Ok(files)
}

/// Those of `paths` that are files in `commit`.
pub fn files_in(
    repo: &gix::Repository,
    commit: &str,
    paths: &[String],
) -> Result<Vec<String>, String> {
    Ok(files_of(repo, commit, paths)?
        .into_iter()
        .map(|(path, _, _)| path)
        .collect())
}

/// Writes each of `paths` that is a file in `commit` into the worktree of `repo` as
/// `commit` has it, over whatever is there; paths `commit` has no file at are left alone.
/// The score script runs this way: as the base has it, not as the attempt left it.
pub fn restore_paths(repo: &gix::Repository, commit: &str, paths: &[String]) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = repo.workdir().ok_or("the repository has no worktree")?;
    for (path, mode, id) in files_of(repo, commit, paths)? {
        let at = on_disk(dir, path.as_str().into())?;
        let blob = repo
            .find_object(id)
            .map_err(|e| format!("reading {path}: {e}"))?
            .detach();
        remove_path(&at)?;
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("writing {path}: {e}"))?;
        }
        std::fs::write(&at, &blob.data).map_err(|e| format!("writing {path}: {e}"))?;
        let bits = if mode.is_executable() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&at, std::fs::Permissions::from_mode(bits))
            .map_err(|e| format!("writing {path}: {e}"))?;
    }
    Ok(())
}

/// Cleans the worktree of `repo` where it is: what [`move_to`] its own HEAD does. A worktree
/// is cleaned as soon as its attempt is over, while the coordinator decides what comes
/// next, so that moving it then only writes what differs.
pub fn clean(
    repo: &gix::Repository,
    changes: Changes<'_>,
    known: Option<Known>,
) -> Result<(Moved, Known), String> {
    let head = crate::admin::head(repo)?;
    move_or_clean(repo, &head.to_string(), changes, known, true)
}

/// What is known of how a worktree differs from its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changes<'a> {
    /// Nothing: it is clean, as [`clean`] left it and untouched since.
    None,
    /// Only these paths (a folder standing for all beneath it) may differ (see
    /// [`crate::journal`]).
    Paths(&'a [gix::bstr::BString]),
    /// Anything may: every file is compared.
    Unknown,
}

/// Of `worktrees` (folders with their opened repositories), the one whose HEAD is nearest
/// `commit`: the fewest files differ between their trees. `None` when none can be read.
pub fn nearest(
    worktrees: &[(std::path::PathBuf, gix::ThreadSafeRepository)],
    commit: &str,
) -> Option<std::path::PathBuf> {
    let target = gix::ObjectId::from_hex(commit.as_bytes()).ok()?;
    let mut best: Option<(usize, &std::path::PathBuf)> = None;
    for (path, repo) in worktrees {
        let repo = repo.to_thread_local();
        let Ok(distance) = distance(&repo, target) else {
            continue;
        };
        if best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, path));
        }
        if distance == 0 {
            break;
        }
    }
    best.map(|(_, path)| path.clone())
}

/// How many files differ between the tree of `repo`'s HEAD and that of `target`.
fn distance(repo: &gix::Repository, target: gix::ObjectId) -> Result<usize, String> {
    use gix::diff::tree::recorder::Change;
    let head = crate::admin::head(repo)?;
    if head == target {
        return Ok(0);
    }
    let changes = crate::commit::tree_changes(repo, head, target, false)?;
    Ok(changes
        .iter()
        .filter(|change| match change {
            Change::Addition { entry_mode, .. }
            | Change::Deletion { entry_mode, .. }
            | Change::Modification { entry_mode, .. } => !entry_mode.is_tree(),
        })
        .count())
}

/// What moving a worktree did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// Files written (new, changed, or changed by the earlier attempt).
    pub written: usize,
    /// Paths removed: tracked files the target lacks, and untracked or ignored ones.
    pub removed: usize,
}

/// Moves the worktree of `repo` to `commit`, as `git checkout --force --detach` followed by
/// `git clean -ffdx` would, and returns the index it wrote: HEAD detached at `commit`, its
/// tree in the index and on disk, nothing untracked or ignored left. Only what differs is
/// touched: the files whose entry differs between the index and the target, the files the
/// last attempt changed, and the paths the index does not know.
///
/// `changes` says what may differ from the index: with [`Changes::None`] the worktree is
/// not looked at and only the entries that differ are written; with [`Changes::Paths`] only
/// those paths are looked at. `known`, the index braid last wrote, is stepped to the
/// target by the two trees' differences when it holds HEAD's tree; else the
/// index file is read and the target's index made from its tree.
///
/// Fails, touching nothing, on what it leaves to git: submodules, unmerged or sparse
/// entries. A failure after the first file was touched leaves the worktree for git to
/// reset, which it always can.
pub fn move_to(
    repo: &gix::Repository,
    commit: &str,
    changes: Changes<'_>,
    known: Option<Known>,
) -> Result<(Moved, Known), String> {
    move_or_clean(repo, commit, changes, known, false)
}

/// [`move_to`]; with `clean`, a clean that finds nothing to change leaves an index file
/// that does not hold the kept index as it is (see [`Known::unwritten`]): the next move
/// writes it, if it has to.
fn move_or_clean(
    repo: &gix::Repository,
    commit: &str,
    changes: Changes<'_>,
    known: Option<Known>,
    clean: bool,
) -> Result<(Moved, Known), String> {
    use gix::index::entry::Mode;
    let dir = repo.workdir().ok_or("the repository has no worktree")?;
    let target = crate::commit::commit_id(commit)?;
    let old_head = crate::admin::head(repo)?;
    let tree = crate::commit::tree_of(repo, target)?;
    let old_tree = crate::commit::tree_of(repo, old_head)?;
    // The index braid wrote holds HEAD's tree: the target's index is it with the two
    // trees' differences applied, and only those need looking at.
    let (old, from_known, in_file, unwritten) = match known {
        Some(known) if known.tree == old_tree => {
            (known.index, true, known.in_file, known.unwritten)
        }
        _ => (crate::admin::read_index(repo)?, false, false, None),
    };
    refuse_unusual(&old)?;
    let Survey {
        dirty,
        refreshed,
        strays,
    } = survey(repo, &old, Strays::ToRemove, changes)?;
    // The target's index; the paths whose entries it adds or changes, those it lacks and
    // those it adds; and the old index where it was read rather than stepped.
    let (mut next, differ, lacking, new, old) = if from_known {
        let (next, differ, lacking, new) = step(repo, old, old_head, target)?;
        (next, differ, lacking, new, None)
    } else {
        let next = repo
            .index_from_tree(&tree)
            .map_err(|e| format!("reading tree {tree}: {e}"))?;
        let (mut differ, mut new) = (Vec::new(), std::collections::HashSet::new());
        for entry in next.entries() {
            let path = entry.path(&next);
            match old.entry_by_path(path) {
                None => {
                    differ.push(path.to_owned());
                    new.insert(path.to_owned());
                }
                Some(o) if o.id != entry.id || o.mode != entry.mode => differ.push(path.to_owned()),
                Some(_) => {}
            }
        }
        let lacking = old
            .entries()
            .iter()
            .map(|entry| entry.path(&old))
            .filter(|path| next.entry_by_path(path).is_none())
            .map(ToOwned::to_owned)
            .collect();
        (next, differ, lacking, new, Some(old))
    };
    if next.entries().iter().any(|e| e.mode == Mode::COMMIT) {
        return Err(format!("commit {commit} holds submodules"));
    }

    // What differs, and then every attributes file (the checkout reads attributes from
    // the entries it is given).
    let mut part = gix::index::State::new(repo.object_hash());
    let mut wanted: Vec<&gix::bstr::BStr> = differ
        .iter()
        .map(|p| -> &gix::bstr::BStr { p.as_ref() })
        .collect();
    wanted.extend(dirty.iter().map(|p| -> &gix::bstr::BStr { p.as_ref() }));
    if !wanted.is_empty() {
        wanted.extend(
            next.entries()
                .iter()
                .map(|e| e.path(&next))
                .filter(|path| *path == ".gitattributes" || path.ends_with(b"/.gitattributes")),
        );
    }
    wanted.sort();
    wanted.dedup();
    for path in wanted {
        if let Some(entry) = next.entry_by_path(path) {
            part.dangerously_push_entry(
                Default::default(),
                entry.id,
                entry.flags,
                entry.mode,
                path,
            );
        }
    }

    // Remove what the target does not have: strays, and tracked files it lacks. A file
    // that goes is first offered to a path the target adds (see [`reuse`]).
    let mut removed = 0;
    let mut emptied: Vec<std::path::PathBuf> = Vec::new();
    let mut spares: Vec<std::path::PathBuf> = Vec::new();
    for (path, kind) in &strays {
        let at = on_disk(dir, path.as_ref())?;
        if *kind == Some(gix::dir::entry::Kind::File) {
            spares.push(at);
        } else {
            remove_path(&at)?;
            emptied.extend(at.parent().map(Path::to_owned));
        }
        removed += 1;
    }
    for path in &lacking {
        spares.push(on_disk(dir, path.as_ref())?);
        removed += 1;
    }
    let added = part.entries().iter().filter(|e| {
        matches!(e.mode, Mode::FILE | Mode::FILE_EXECUTABLE) && new.contains(e.path(&part))
    });
    let added: Vec<std::path::PathBuf> = added
        .map(|e| on_disk(dir, e.path(&part)))
        .collect::<Result<_, _>>()?;
    emptied.extend(
        spares
            .iter()
            .filter_map(|at| at.parent().map(Path::to_owned)),
    );
    reuse(&mut spares, &added);
    for at in spares {
        remove_path(&at)?;
    }
    // Folders left empty go too, as `git checkout` removes them.
    emptied.sort();
    emptied.dedup();
    for folder in emptied.iter().rev() {
        let mut at = folder.as_path();
        while at != dir && at.starts_with(dir) && std::fs::remove_dir(at).is_ok() {
            match at.parent() {
                Some(parent) => at = parent,
                None => break,
            }
        }
    }

    let written = part.entries().len();
    if written > 0 {
        write_entries(repo, &mut part, commit, |options| {
            options.overwrite_existing = true;
            if written < 100 {
                // Threads cost more than they save on a few files.
                options.thread_limit = Some(1);
            }
        })?;
    }

    // The index: the target's entries, with the stat of each file as it is on disk now.
    if let Some(old) = &old {
        let (entries, paths) = next.entries_mut_and_pathbacking();
        for entry in entries.iter_mut() {
            let path = entry.path_in(paths);
            let stat = match part.entry_by_path(path) {
                Some(written) => Some(written.stat),
                None => refreshed
                    .get(path)
                    .copied()
                    .or_else(|| old.entry_by_path(path).map(|o| o.stat)),
            };
            if let Some(stat) = stat {
                entry.stat = stat;
            }
        }
    } else {
        // Carried over from the old index but for what was refreshed or written (a file
        // written has the stat of its new self, not the one the survey saw).
        let stats = refreshed
            .iter()
            .map(|(path, stat)| (path.as_ref(), *stat))
            .chain(part.entries().iter().map(|e| (e.path(&part), e.stat)));
        for (path, stat) in stats {
            if let Some(entry) =
                next.entry_mut_by_path_and_stage(path, gix::index::entry::Stage::Unconflicted)
            {
                entry.stat = stat;
            }
        }
    }
    let untouched = from_known
        && differ.is_empty()
        && lacking.is_empty()
        && dirty.is_empty()
        && refreshed.is_empty();
    let same = untouched && in_file;
    // A clean that changed nothing in a worktree whose staged index braid did not write:
    // the file stays as it is until the next move.
    let left = clean && untouched && !in_file && unwritten.is_some();
    // Staged but not written, and back where the file is: an attempt that only added
    // files leaves nothing to write (rewriting from a new top-level file on was most of
    // a 20,000-file index, twice an attempt).
    let as_in_file = || {
        let changed = differ
            .iter()
            .chain(&lacking)
            .chain(&dirty)
            .chain(refreshed.keys())
            .map(|p| -> &gix::bstr::BStr { p.as_ref() })
            .chain(part.entries().iter().map(|e| e.path(&part)));
        unwritten
            .as_ref()
            .is_some_and(|u| from_known && u.holds(&next, tree, changed))
    };
    if !same && !left && !as_in_file() {
        crate::admin::write_index(&next)?;
    }
    if old_head != target {
        crate::admin::move_head(
            repo,
            old_head,
            target,
            &format!("checkout: moving from {old_head} to {target}"),
            gix::date::Time::now_utc(),
        )?;
    }
    let known = Known {
        index: next,
        tree,
        in_file: !left,
        unwritten: unwritten.filter(|_| left),
    };
    Ok((Moved { written, removed }, known))
}

/// An index braid wrote, and the tree it holds: what the next move or commit starts from
/// without reading the index file or the tree.
#[derive(Debug, Clone)]
pub struct Known {
    /// The index, with the stat of each file as braid last saw it.
    pub index: gix::index::File,
    /// The tree its entries make.
    pub tree: gix::ObjectId,
    /// Whether the index file holds it as it is (nothing wrote the file since braid).
    pub in_file: bool,
    /// What the index file holds instead, when braid staged onto the index it had written
    /// and did not write the result (nothing runs in the worktree before its next move,
    /// and a move back to the tree in the file then has nothing to write).
    pub unwritten: Option<Unwritten>,
}

/// What an index entry records but its path: stat, blob, flags and mode.
pub type Entry = (
    gix::index::entry::Stat,
    gix::ObjectId,
    gix::index::entry::Flags,
    gix::index::entry::Mode,
);

/// The entry `index` has at `path`, if any.
pub fn entry_at(index: &gix::index::State, path: &gix::bstr::BStr) -> Option<Entry> {
    index
        .entry_by_path(path)
        .map(|e| (e.stat, e.id, e.flags, e.mode))
}

/// The index file, when it does not hold the index braid keeps: the index of `tree` braid
/// wrote there, which has `entries` at these paths (`None`: no entry there) and the kept
/// index's entries everywhere else.
#[derive(Debug, Clone)]
pub struct Unwritten {
    /// The tree the file's entries make.
    pub tree: gix::ObjectId,
    /// Sorted by path.
    pub entries: Vec<(gix::bstr::BString, Option<Entry>)>,
}

impl Unwritten {
    /// The file when it holds the kept index, of `tree`, as it is.
    pub fn same(tree: gix::ObjectId) -> Unwritten {
        Unwritten {
            tree,
            entries: Vec::new(),
        }
    }

    /// The same file, once staging changed the kept index at the paths of `before` (with
    /// the entries it had there): at a path staged before, the file keeps what it had.
    pub fn and(mut self, before: Vec<(gix::bstr::BString, Option<Entry>)>) -> Unwritten {
        // The earlier entries first: the sort is stable, and dedup keeps the first.
        self.entries.extend(before);
        self.entries.sort_by(|a, b| a.0.cmp(&b.0));
        self.entries.dedup_by(|later, first| later.0 == first.0);
        self
    }

    /// Whether the file holds `index`, of `tree`, which differs from the kept index at
    /// most at the paths `changed`.
    fn holds<'a>(
        &self,
        index: &gix::index::State,
        tree: gix::ObjectId,
        mut changed: impl Iterator<Item = &'a gix::bstr::BStr>,
    ) -> bool {
        let known = |path: &gix::bstr::BStr| {
            self.entries
                .binary_search_by(|(p, _)| p.as_slice().cmp(path.as_ref()))
                .is_ok()
        };
        self.tree == tree
            && changed.all(known)
            && self
                .entries
                .iter()
                .all(|(path, entry)| entry_at(index, path.as_ref()) == *entry)
    }
}

/// The paths whose entries differ between the indexes `a` and `b` (present in one only,
/// or with another blob, mode, stage or flags), in one pass over both.
pub fn differing(a: &gix::index::State, b: &gix::index::State) -> Vec<gix::bstr::BString> {
    use std::cmp::Ordering;
    let (mut x, mut y) = (a.entries().iter().peekable(), b.entries().iter().peekable());
    let mut out = Vec::new();
    loop {
        match (x.peek(), y.peek()) {
            (None, None) => break,
            (Some(e), None) => {
                out.push(e.path(a).to_owned());
                x.next();
            }
            (None, Some(f)) => {
                out.push(f.path(b).to_owned());
                y.next();
            }
            (Some(e), Some(f)) => match e.path(a).cmp(f.path(b)) {
                Ordering::Less => {
                    out.push(e.path(a).to_owned());
                    x.next();
                }
                Ordering::Greater => {
                    out.push(f.path(b).to_owned());
                    y.next();
                }
                Ordering::Equal => {
                    if e.id != f.id || e.mode != f.mode || e.flags != f.flags {
                        out.push(e.path(a).to_owned());
                    }
                    x.next();
                    y.next();
                }
            },
        }
    }
    out.dedup();
    out
}

/// The index of commit `to` made from `old`, the index of commit `from`, by the two
/// trees' differences; with the paths whose entries the step added or changed, those it
/// removed, and those it added.
fn step(
    repo: &gix::Repository,
    old: gix::index::File,
    from: gix::ObjectId,
    to: gix::ObjectId,
) -> Result<Stepped, String> {
    use gix::diff::tree::recorder::Change;
    use gix::index::entry::{Flags, Stage};
    let mut next = old;
    let mut upserts = Vec::new();
    let mut gone = std::collections::HashSet::new();
    for change in crate::commit::tree_changes(repo, from, to, true)? {
        match change {
            Change::Addition {
                entry_mode,
                oid,
                path,
                ..
            } if !entry_mode.is_tree() => upserts.push((path, entry_mode, oid)),
            Change::Deletion {
                entry_mode, path, ..
            } if !entry_mode.is_tree() => {
                gone.insert(path);
            }
            Change::Modification {
                previous_entry_mode,
                entry_mode,
                oid,
                path,
                ..
            } => {
                if !previous_entry_mode.is_tree() && entry_mode.is_tree() {
                    gone.insert(path);
                } else if !entry_mode.is_tree() {
                    upserts.push((path, entry_mode, oid));
                }
            }
            _ => {}
        }
    }
    remove_paths(&mut next, &gone);
    // Changed entries first, found while the entries are sorted; new ones after, sorted in.
    let mut new = Vec::new();
    for (path, mode, oid) in &upserts {
        let mode = gix::index::entry::Mode::from(*mode);
        match next.entry_mut_by_path_and_stage(path.as_ref(), Stage::Unconflicted) {
            Some(entry) => {
                entry.id = *oid;
                entry.mode = mode;
            }
            None => new.push((path, mode, *oid)),
        }
    }
    for (path, mode, oid) in &new {
        next.dangerously_push_entry(
            Default::default(),
            *oid,
            Flags::empty(),
            *mode,
            path.as_ref(),
        );
    }
    if !new.is_empty() {
        next.sort_entries();
    }
    // Cached trees no longer match the entries.
    next.remove_tree();
    next.remove_resolve_undo();
    let added = new.iter().map(|(path, _, _)| (*path).clone()).collect();
    let differ = upserts.iter().map(|(path, _, _)| path.clone()).collect();
    Ok((next, differ, gone.into_iter().collect(), added))
}

/// Sorts the entries of `index` that were pushed after its first `sorted` ones (which are
/// in order) into place: each moved to where it belongs, rather than all sorted again
/// (which took 2 ms for one new entry among 20,000: a scratch copy of them all).
pub(crate) fn sort_in(index: &mut gix::index::State, sorted: usize) {
    use std::cmp::Ordering;
    if index.entries().len() - sorted > 32 {
        index.sort_entries();
        return;
    }
    let (entries, paths) = index.entries_mut_and_pathbacking();
    let order = |a: &gix::index::Entry, b: &gix::index::Entry| -> Ordering {
        gix::index::Entry::cmp_filepaths(a.path_in(paths), b.path_in(paths))
            .then_with(|| a.stage().cmp(&b.stage()))
    };
    entries[sorted..].sort_by(order);
    for i in sorted..entries.len() {
        let at = entries[..i].partition_point(|e| order(e, &entries[i]) == Ordering::Less);
        entries[at..=i].rotate_right(1);
    }
}

/// Removes the entries of `index` at `paths`, found by a search each rather than by a
/// look at every path.
pub(crate) fn remove_paths<'a>(
    index: &mut gix::index::State,
    paths: impl IntoIterator<Item = &'a gix::bstr::BString>,
) {
    let mut gone = vec![false; index.entries().len()];
    let mut any = false;
    for path in paths {
        if let Ok(i) = index.entry_index_by_path(path.as_ref()) {
            gone[i] = true;
            any = true;
        }
    }
    if any {
        index.remove_entries(|i, _, _| gone[i]);
    }
}

/// What [`step`] makes.
type Stepped = (
    gix::index::File,
    Vec<gix::bstr::BString>,
    Vec<gix::bstr::BString>,
    std::collections::HashSet<gix::bstr::BString>,
);

/// How a worktree differs from its index.
#[derive(Default)]
pub(crate) struct Survey {
    /// Tracked paths whose file changed, went or changed type.
    pub dirty: std::collections::HashSet<gix::bstr::BString>,
    /// Tracked paths whose file is unchanged but whose stat is not the index's.
    pub refreshed: std::collections::HashMap<gix::bstr::BString, gix::index::entry::Stat>,
    /// Paths the index does not know, with what they are on disk.
    pub strays: Vec<(gix::bstr::BString, Option<gix::dir::entry::Kind>)>,
}

/// From how many index entries a survey checks them on every core.
const PARALLEL_FROM: usize = 2_000;

/// Which paths the index does not know a survey lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strays {
    /// Untracked and ignored ones, a folder standing for all it holds (what `git clean
    /// -ffdx` removes).
    ToRemove,
    /// Each untracked file, none ignored (what `git add --all` adds).
    ToAdd,
}

/// Compares the worktree of `repo` with `index`, where `changes` says it may differ.
pub(crate) fn survey(
    repo: &gix::Repository,
    index: &gix::index::State,
    strays: Strays,
    changes: Changes<'_>,
) -> Result<Survey, String> {
    use gix::dir::walk::EmissionMode;
    // Each path as a pathspec that means only itself (and, for a folder, what it holds);
    // and the part of the index the survey needs (see [`part_for`]).
    let part;
    let (patterns, index): (Vec<gix::bstr::BString>, &gix::index::State) = match changes {
        Changes::None => return Ok(Survey::default()),
        Changes::Unknown => (Vec::new(), index),
        Changes::Paths(paths) => {
            let patterns: Vec<_> = paths
                .iter()
                .filter(|p| p.as_slice() != b".git" && !p.starts_with(b".git/"))
                .map(|p| {
                    let mut pattern = gix::bstr::BString::from(":(literal)");
                    pattern.extend_from_slice(p);
                    pattern
                })
                .collect();
            if patterns.is_empty() {
                return Ok(Survey::default());
            }
            part = part_for(index, paths);
            (patterns, &part)
        }
    };
    let walk = repo
        .dirwalk_options()
        .map_err(|e| format!("reading the status options: {e}"))?
        .emit_pruned(false)
        .emit_tracked(false);
    let walk = match strays {
        Strays::ToRemove => walk
            .emit_untracked(EmissionMode::CollapseDirectory)
            .emit_ignored(Some(EmissionMode::CollapseDirectory))
            .emit_empty_directories(true),
        Strays::ToAdd => walk
            .emit_untracked(EmissionMode::Matching)
            .emit_ignored(None)
            .emit_empty_directories(false),
    };
    let mut survey = Survey::default();
    let mut collect = Collect {
        survey: &mut survey,
        rename: false,
    };
    // The modification check is a stat per file: on this thread for a small index (threads
    // cost more than they save), on every core for a large one. The directory walk runs
    // beside it.
    let options = gix::status::index_worktree::Options {
        dirwalk_options: Some(walk),
        thread_limit: (index.entries().len() < PARALLEL_FROM).then_some(1),
        ..Default::default()
    };
    repo.index_worktree_status(
        index,
        patterns,
        &mut collect,
        gix::status::plumbing::index_as_worktree::traits::FastEq,
        NoSubmodules,
        &mut gix::progress::Discard,
        &AtomicBool::new(false),
        options,
    )
    .map_err(|e| format!("reading the status: {e}"))?;
    if collect.rename {
        return Err("the status tracked a rename".into());
    }
    Ok(survey)
}

/// The entries of `index` a survey of `paths` needs: those at or beneath each path, and
/// one beneath each folder on the way to it, which tells the survey the folder is tracked
/// (it would take a folder with no entry for an untracked one, and its files for strays).
/// A survey then costs what the paths hold, not what the repository does: status and
/// directory walk go over every entry they are given.
pub(crate) fn part_for(
    index: &gix::index::State,
    paths: &[gix::bstr::BString],
) -> gix::index::State {
    use gix::bstr::ByteSlice;
    let mut picked = std::collections::BTreeSet::new();
    for path in paths {
        if let Ok(i) = index.entry_index_by_path(path.as_ref()) {
            picked.insert(i);
        }
        let mut folder = path.clone();
        folder.push(b'/');
        if let Some(range) = index.prefixed_entries_range(folder.as_bstr()) {
            picked.extend(range);
        }
        let mut at = path.as_bstr();
        while let Some(i) = at.rfind_byte(b'/') {
            at = at[..i].as_bstr();
            let mut folder = at.to_owned();
            folder.push(b'/');
            if let Some(range) = index.prefixed_entries_range(folder.as_bstr()) {
                picked.insert(range.start);
            }
        }
    }
    let mut part = gix::index::State::new(index.object_hash());
    for i in picked {
        let entry = &index.entries()[i];
        part.dangerously_push_entry(
            entry.stat,
            entry.id,
            entry.flags,
            entry.mode,
            entry.path(index),
        );
    }
    part
}

/// Fails on an index that holds what only git handles: submodules, unmerged entries, or
/// entries git is told not to look at (sparse checkouts, assumed unchanged).
pub(crate) fn refuse_unusual(index: &gix::index::State) -> Result<(), String> {
    use gix::index::entry::{Flags, Mode};
    let unusual = index.entries().iter().any(|e| {
        e.mode == Mode::COMMIT
            || e.stage_raw() != 0
            || e.flags
                .intersects(Flags::SKIP_WORKTREE | Flags::ASSUME_VALID)
    });
    if unusual {
        return Err("the index holds submodules, unmerged or sparse entries".into());
    }
    Ok(())
}

/// Moves files that are about to be removed onto paths that are about to be written, as
/// many as pair up; takes the moved ones out of `spares`.
///
/// Why: the checkout then writes into an existing file rather than making one, and making
/// a file is slow right after many were deleted. ext4 skips every inode freed in the last
/// minute when it looks for a free one, and a run deletes and creates files in its
/// worktrees all the time: measured on `cargo run --release -p braid-bench -- makespan`,
/// the kernel's search past recently deleted inodes was a fifth of the run's busy time.
fn reuse(spares: &mut Vec<std::path::PathBuf>, added: &[std::path::PathBuf]) {
    let mut added = added.iter();
    let mut kept = Vec::new();
    while let Some(spare) = spares.pop() {
        let moved = std::fs::symlink_metadata(&spare).is_ok_and(|m| m.is_file())
            && loop {
                let Some(to) = added.next() else {
                    break false;
                };
                // A path that exists (it was never in the index) is written over as it is.
                if std::fs::symlink_metadata(to).is_ok() {
                    continue;
                }
                let placed = to
                    .parent()
                    .is_none_or(|folder| std::fs::create_dir_all(folder).is_ok())
                    && std::fs::rename(&spare, to).is_ok();
                break placed;
            };
        if !moved {
            kept.push(spare);
        }
    }
    *spares = kept;
}

/// Sorts what the status finds into a [`Survey`].
struct Collect<'a> {
    survey: &'a mut Survey,
    rename: bool,
}

impl<'index> gix::status::plumbing::index_as_worktree_with_renames::VisitEntry<'index>
    for Collect<'_>
{
    type ContentChange = ();
    type SubmoduleStatus = ();

    fn visit_entry(
        &mut self,
        entry: gix::status::plumbing::index_as_worktree_with_renames::Entry<'index, (), ()>,
    ) {
        use gix::dir::entry::Status as Walked;
        use gix::status::plumbing::index_as_worktree::EntryStatus;
        use gix::status::plumbing::index_as_worktree_with_renames::Entry;
        match entry {
            Entry::Modification {
                rela_path, status, ..
            } => match status {
                EntryStatus::NeedsUpdate(stat) => {
                    self.survey.refreshed.insert(rela_path.to_owned(), stat);
                }
                _ => {
                    self.survey.dirty.insert(rela_path.to_owned());
                }
            },
            Entry::DirectoryContents { entry, .. } => {
                if matches!(entry.status, Walked::Untracked | Walked::Ignored(_)) {
                    self.survey.strays.push((entry.rela_path, entry.disk_kind));
                }
            }
            Entry::Rewrite { .. } => self.rename = true,
        }
    }
}

/// Submodules are refused before a survey, so none is ever asked about.
#[derive(Clone)]
struct NoSubmodules;

impl gix::status::plumbing::index_as_worktree::traits::SubmoduleStatus for NoSubmodules {
    type Output = ();

    fn status(&mut self, _: &gix::index::Entry, _: &gix::bstr::BStr) -> gix::Result<Option<()>> {
        Ok(None)
    }
}

/// Where the repository path `path` is in the worktree at `dir`. Fails when a folder on
/// the way is a symbolic link (an agent replaced a tracked folder with a link to one
/// outside): reading or writing through it would reach outside the worktree, so the
/// caller leaves such a worktree to git, which never follows a link in a path.
pub(crate) fn on_disk(dir: &Path, path: &gix::bstr::BStr) -> Result<std::path::PathBuf, String> {
    let rela = gix::path::from_bstr(path).map_err(|e| format!("{path}: {e}"))?;
    let mut at = dir.to_path_buf();
    let mut parts = rela.components().peekable();
    while let Some(part) = parts.next() {
        at.push(part);
        if parts.peek().is_some()
            && std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink())
        {
            return Err(format!(
                "{path} lies behind the symbolic link {}",
                at.strip_prefix(dir).unwrap_or(&at).display()
            ));
        }
    }
    Ok(at)
}

/// Removes the file, link or folder at `at`, if there is one.
fn remove_path(at: &Path) -> Result<(), String> {
    let removed = match std::fs::symlink_metadata(at) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(at),
        Ok(_) => std::fs::remove_file(at),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    removed.map_err(|e| format!("removing {}: {e}", at.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_tests::{TestRepo, command};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::PathBuf;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = command("git", dir).args(args).output().expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every path under `dir` but `.git`, with its kind, executable bit and content.
    fn listing(dir: &Path) -> Vec<(PathBuf, String)> {
        fn walk(root: &Path, at: &Path, out: &mut Vec<(PathBuf, String)>) {
            for entry in std::fs::read_dir(at).unwrap() {
                let path = entry.unwrap().path();
                let rel = path.strip_prefix(root).unwrap().to_owned();
                if rel == Path::new(".git") {
                    continue;
                }
                let meta = std::fs::symlink_metadata(&path).unwrap();
                if meta.file_type().is_symlink() {
                    let link = std::fs::read_link(&path).unwrap();
                    out.push((rel, format!("link {}", link.display())));
                } else if meta.is_dir() {
                    out.push((rel, "dir".into()));
                    walk(root, &path, out);
                } else {
                    let exec = meta.permissions().mode() & 0o111 != 0;
                    let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
                    out.push((rel, format!("file exec={exec} {text:?}")));
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    /// `dir` is file by file what git left in `by_git`: the same files, the same index,
    /// nothing else, and an index whose stat needs no refresh.
    fn assert_like_git(dir: &Path, by_git: &Path) {
        assert_eq!(listing(dir), listing(by_git));
        assert_eq!(
            git(dir, &["ls-files", "--stage"]),
            git(by_git, &["ls-files", "--stage"])
        );
        assert_eq!(git(dir, &["status", "--porcelain", "--ignored"]), "");
        git(dir, &["diff-files", "--quiet"]);
    }

    /// What an attempt might leave behind in a worktree.
    fn mess(dir: &Path) {
        let write = |path: &str, text: &str| {
            let at = dir.join(path);
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            std::fs::write(at, text).unwrap();
        };
        write("same.txt", "UNCHANGED!\n"); // the same size as before
        write("changed.txt", "before\n"); // only touched, and the target changes it
        write("kept.txt", "edited, not in the target's change\n");
        std::fs::remove_file(dir.join("folder/deleted-by-agent.txt")).unwrap();
        write("untracked.txt", "junk\n");
        write("new-folder/deep/x.txt", "x\n");
        write("target/debug/build.o", "object\n");
        write("notes.log", "ignored file\n");
        std::fs::create_dir_all(dir.join("empty/inner")).unwrap();
        git(&dir.join("new-folder"), &["init", "--quiet", "nested"]);
        // A tracked file the agent turned into a folder.
        std::fs::remove_file(dir.join("turned")).unwrap();
        write("turned/inside.txt", "now a folder\n");
    }

    /// The index file holds `known`'s index, entry by entry, and is what git expects of
    /// a clean worktree at `commit`.
    fn assert_file_holds(dir: &Path, known: &Known, commit: &str) {
        assert!(known.in_file && known.unwritten.is_none());
        let file = crate::admin::read_index(&open(dir).unwrap()).unwrap();
        let entries = |index: &gix::index::State| -> Vec<(String, Entry)> {
            index
                .entries()
                .iter()
                .map(|e| (e.path(index).to_string(), (e.stat, e.id, e.flags, e.mode)))
                .collect()
        };
        assert_eq!(entries(&file), entries(&known.index));
        git(dir, &["diff-index", "--cached", "--quiet", commit]);
        git(dir, &["diff-files", "--quiet"]);
        assert_eq!(git(dir, &["status", "--porcelain", "--ignored"]), "");
    }

    #[test]
    fn an_index_staged_and_left_unwritten_is_written_by_the_next_move_only_if_it_must() {
        let repo = TestRepo::init();
        let base = repo.commit(
            &[("src/a.txt", "a\n"), ("src/b.txt", "b\n"), ("z.txt", "z\n")],
            "base",
        );
        let dir = repo.outside().join("worktree");
        repo.worktree(&dir, &base);
        let index_path = open(&dir).unwrap().index_path();
        let (_, mut known) = move_to(&open(&dir).unwrap(), &base, Changes::Unknown, None).unwrap();
        assert_file_holds(&dir, &known, &base);
        // What attempts do: a new top-level file (sorted before everything), a new file
        // and an edit in place, a removal.
        type Edit = fn(&Path);
        let rounds: [(&str, Edit); 3] = [
            ("added", |dir| {
                std::fs::write(dir.join("0-new.txt"), "new\n").unwrap()
            }),
            ("edited", |dir| {
                std::fs::write(dir.join("1-new.txt"), "new\n").unwrap();
                std::fs::write(dir.join("src/a.txt"), "A\n").unwrap();
            }),
            ("removed", |dir| {
                std::fs::remove_file(dir.join("src/b.txt")).unwrap()
            }),
        ];
        for (round, edit) in rounds {
            let bytes = std::fs::read(&index_path).unwrap();
            let stamp = crate::admin::stamp(&open(&dir).unwrap());
            edit(&dir);
            let paths: Vec<gix::bstr::BString> =
                ["0-new.txt", "1-new.txt", "src"].map(Into::into).to_vec();
            let repo = open(&dir).unwrap();
            let (staged, index, edits) =
                crate::commit::stage_all(&repo, Changes::Paths(&paths), known.index).unwrap();
            let (head, tree) =
                crate::commit::commit_index(&repo, round, &index, Some(&edits)).unwrap();
            assert_ne!(head, base, "{round}");
            let unwritten = Unwritten::same(known.tree).and(staged.before);
            let staged = Known {
                index,
                tree,
                in_file: false,
                unwritten: Some(unwritten),
            };
            // Cleaned where nothing changed since: the file stays as it is.
            let (_, cleaned) = clean(&open(&dir).unwrap(), Changes::None, Some(staged)).unwrap();
            assert!(!cleaned.in_file && cleaned.unwritten.is_some(), "{round}");
            assert_eq!(std::fs::read(&index_path).unwrap(), bytes, "{round}");
            // Back to the base: the file holds the base's index, written only when the
            // entries of the base's files changed.
            let (_, moved) =
                move_to(&open(&dir).unwrap(), &base, Changes::None, Some(cleaned)).unwrap();
            assert_file_holds(&dir, &moved, &base);
            let untouched = crate::admin::stamp(&open(&dir).unwrap()) == stamp;
            assert_eq!(untouched, round == "added", "{round}: written or not");
            if round == "added" {
                assert_eq!(std::fs::read(&index_path).unwrap(), bytes);
            }
            known = moved;
        }
    }

    #[test]
    fn a_moved_worktree_is_what_git_checkout_and_clean_leave() {
        let repo = TestRepo::init();
        let base = repo.commit(
            &[
                (".gitignore", "target/\n*.log\n"),
                (".gitattributes", "*.crlf text eol=crlf\n"),
                ("same.txt", "unchanged!\n"),
                ("kept.txt", "kept\n"),
                ("changed.txt", "before\n"),
                ("removed/only.txt", "its folder goes with it\n"),
                ("folder/deleted-by-agent.txt", "restored\n"),
                ("folder/stays.txt", "stays\n"),
                ("file-then-dir", "a file first\n"),
                ("turned", "a file the agent turns into a folder\n"),
                ("script.sh", "echo hi\n"),
            ],
            "base",
        );
        let target = {
            repo.git(&["rm", "--quiet", "-r", "removed", "file-then-dir"]);
            repo.write(&[
                ("changed.txt", "after\n"),
                ("added/deep/new.txt", "new\n"),
                ("file-then-dir/inner.txt", "now a folder\n"),
                ("text.crlf", "one\ntwo\n"),
            ]);
            std::os::unix::fs::symlink("changed.txt", repo.path.join("link")).unwrap();
            let script = repo.path.join("script.sh");
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
            repo.git(&["add", "--all"]);
            repo.git(&["commit", "--quiet", "-m", "target"]);
            repo.git(&["rev-parse", "HEAD"])
        };
        let worktrees = repo.outside().join("worktrees");
        let (by_git, by_gix) = (worktrees.join("git"), worktrees.join("gix"));
        let (by_journal, by_known) = (worktrees.join("journal"), worktrees.join("known"));
        let (mut noted, mut held) = (None, None);
        for dir in [&by_git, &by_gix, &by_journal, &by_known] {
            repo.worktree(dir, &base);
            if dir == &by_known {
                let repo = open(dir).unwrap();
                let index = crate::admin::read_index(&repo).unwrap();
                let tree = crate::commit::tree_of(&repo, crate::admin::head(&repo).unwrap());
                held = Some(Known {
                    index,
                    tree: tree.unwrap(),
                    in_file: true,
                    unwritten: None,
                });
            }
            if dir == &by_journal {
                // The index as braid keeps it, and the journal, from the clean worktree on.
                let index = crate::admin::read_index(&open(dir).unwrap()).unwrap();
                let journal = crate::journal::Journal::start(dir, &index).unwrap();
                let tree = crate::commit::tree_of(
                    &open(dir).unwrap(),
                    crate::commit::commit_id(&base).unwrap(),
                )
                .unwrap();
                noted = Some((
                    journal,
                    Known {
                        index,
                        tree,
                        in_file: true,
                        unwritten: None,
                    },
                ));
            }
            mess(dir);
        }
        let kept_before = std::fs::metadata(by_gix.join("folder/stays.txt")).unwrap();
        let going = std::fs::metadata(by_gix.join("removed/only.txt")).unwrap();
        let admin = repo.git_dir().join("worktrees/gix");
        let inode = |name: &str| std::fs::metadata(admin.join(name)).unwrap().ino();
        let (index_before, head_before) = (inode("index"), inode("HEAD"));

        git(
            &by_git,
            &["checkout", "--quiet", "--force", "--detach", &target],
        );
        git(&by_git, &["clean", "-ffdxq"]);
        let (moved, _) = move_to(&open(&by_gix).unwrap(), &target, Changes::Unknown, None)
            .expect("moved in process");

        // Surveyed in full from the index braid kept: the same result.
        move_to(&open(&by_known).unwrap(), &target, Changes::Unknown, held)
            .expect("moved from the kept index");
        assert_like_git(&by_known, &by_git);

        // Moved by what the journal noted, from the index braid kept: the same result, and
        // then back to the base with nothing changed since, as `git checkout` leaves it.
        let (mut journal, known) = noted.unwrap();
        let paths = journal.changed().unwrap();
        assert!(paths.len() < 20, "{paths:?}");
        let (_, known) = move_to(
            &open(&by_journal).unwrap(),
            &target,
            Changes::Paths(&paths),
            Some(known),
        )
        .expect("moved by the journal");
        assert_like_git(&by_journal, &by_git);
        journal.settle(&known.index, false).unwrap();
        let paths = journal.changed().unwrap();
        move_to(
            &open(&by_journal).unwrap(),
            &base,
            Changes::Paths(&paths),
            Some(known),
        )
        .expect("moved back by the journal");
        git(
            &by_git,
            &["checkout", "--quiet", "--force", "--detach", &base],
        );
        assert_like_git(&by_journal, &by_git);
        git(
            &by_git,
            &["checkout", "--quiet", "--force", "--detach", &target],
        );

        assert_eq!(listing(&by_gix), listing(&by_git));
        assert_eq!(
            git(&by_gix, &["ls-files", "--stage"]),
            git(&by_git, &["ls-files", "--stage"])
        );
        assert_eq!(git(&by_gix, &["rev-parse", "HEAD"]).trim(), target);
        assert_eq!(git(&by_gix, &["status", "--porcelain", "--ignored"]), "");
        // The index's stat matches the files: nothing needs a refresh.
        git(&by_gix, &["diff-files", "--quiet"]);
        assert_eq!(
            git(&by_gix, &["reflog", "-1", "--format=%gs", "HEAD"]).trim(),
            format!("checkout: moving from {base} to {target}")
        );
        // Only what differs was written: an untouched file kept its inode and time.
        let kept_after = std::fs::metadata(by_gix.join("folder/stays.txt")).unwrap();
        assert_eq!(
            (kept_before.ino(), kept_before.mtime_nsec()),
            (kept_after.ino(), kept_after.mtime_nsec())
        );
        // The index and HEAD were written in place, and a file that went became one that
        // came: the same inodes, other content.
        let added = ["added/deep/new.txt", "file-then-dir/inner.txt", "text.crlf"];
        assert!(
            added
                .iter()
                .any(|p| std::fs::metadata(by_gix.join(p)).unwrap().ino() == going.ino()),
            "no inode was reused"
        );
        assert_eq!((inode("index"), inode("HEAD")), (index_before, head_before));
        // changed, added, file-then-dir/inner, text.crlf, link, script.sh (mode), and what
        // the attempt changed: same.txt, kept.txt, deleted-by-agent, turned; plus
        // .gitattributes, always.
        assert_eq!(moved.written, 11, "{moved:?}");
    }

    #[test]
    fn entries_sorted_in_are_where_a_full_sort_puts_them() {
        use gix::index::entry::{Flags, Mode};
        let id = gix::ObjectId::empty_blob(gix::hash::Kind::Sha1);
        let push = |index: &mut gix::index::State, path: &str| {
            index.dangerously_push_entry(
                Default::default(),
                id,
                Flags::empty(),
                Mode::FILE,
                path.into(),
            );
        };
        let mut index = gix::index::State::new(gix::hash::Kind::Sha1);
        for path in ["b", "d/e", "d/f", "g", "h.txt", "h/i"] {
            push(&mut index, path);
        }
        // Before the first, between, inside a folder, after the last; out of order.
        for path in ["z", "a", "d/ee", "c", "h.a", "d.txt"] {
            push(&mut index, path);
        }
        let mut expected = index.clone();
        expected.sort_entries();
        sort_in(&mut index, 6);
        let paths = |index: &gix::index::State| -> Vec<String> {
            index
                .entries()
                .iter()
                .map(|e| e.path(index).to_string())
                .collect()
        };
        assert_eq!(paths(&index), paths(&expected));
        remove_paths(&mut index, &["d/ee".into(), "z".into(), "missing".into()]);
        assert_eq!(
            paths(&index),
            [
                "a", "b", "c", "d.txt", "d/e", "d/f", "g", "h.a", "h.txt", "h/i"
            ]
        );
    }

    #[test]
    fn an_index_stepped_by_the_trees_differences_is_the_target_s_index() {
        let repo = TestRepo::init();
        let mut files: Vec<(String, String)> = (0..60)
            .map(|i| (format!("d{:02}/f.txt", i * 2), format!("{i}\n")))
            .collect();
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, t)| (p.as_str(), t.as_str()))
            .collect();
        let from = repo.commit(&refs, "from");
        // Every third file changed, the odd folders added between them, some removed.
        for (i, (_, text)) in files.iter_mut().enumerate() {
            if i % 3 == 0 {
                *text = format!("changed {i}\n");
            }
        }
        let mut next: Vec<(String, String)> = files
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % 7 != 5)
            .map(|(_, f)| f)
            .collect();
        next.extend((0..60).map(|i| (format!("d{:02}/new.txt", i * 2 + 1), format!("new {i}\n"))));
        for i in 0..60 {
            if i % 7 == 5 {
                repo.git(&["rm", "--quiet", &format!("d{:02}/f.txt", i * 2)]);
            }
        }
        let refs: Vec<(&str, &str)> = next.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect();
        let to = repo.commit(&refs, "to");
        let repo = open(&repo.path).unwrap();
        let (from, to) = (
            crate::commit::commit_id(&from).unwrap(),
            crate::commit::commit_id(&to).unwrap(),
        );
        let old = repo
            .index_from_tree(&crate::commit::tree_of(&repo, from).unwrap())
            .unwrap();
        let (stepped, differ, lacking, _) = step(&repo, old, from, to).unwrap();
        let target = repo
            .index_from_tree(&crate::commit::tree_of(&repo, to).unwrap())
            .unwrap();
        let entries = |index: &gix::index::State| -> Vec<(String, gix::ObjectId, u32)> {
            index
                .entries()
                .iter()
                .map(|e| (e.path(index).to_string(), e.id, e.mode.bits()))
                .collect()
        };
        assert_eq!(entries(&stepped), entries(&target));
        assert_eq!(differ.len(), 60 + 20 - 3, "{differ:?}");
        assert_eq!(lacking.len(), 8, "{lacking:?}");
    }

    #[test]
    fn a_worktree_with_a_submodule_is_left_to_git() {
        let repo = TestRepo::init();
        let base = repo.git(&["rev-parse", "HEAD"]);
        let gitlink = format!("160000,{base},sub");
        repo.git(&["update-index", "--add", "--cacheinfo", &gitlink]);
        repo.git(&["commit", "--quiet", "-m", "a submodule"]);
        let with_sub = repo.git(&["rev-parse", "HEAD"]);
        let dir = repo.outside().join("wt");
        repo.worktree(&dir, &base);
        let err = move_to(&open(&dir).unwrap(), &with_sub, Changes::Unknown, None).unwrap_err();
        assert!(err.contains("submodules"), "{err}");
        assert_eq!(git(&dir, &["rev-parse", "HEAD"]).trim(), base);
    }
}
