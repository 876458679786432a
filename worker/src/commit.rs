//! An attempt's changes staged, committed and counted, in process.
//!
//! What the agent left is staged as `git add --all` stages it (a gix status, ignore rules,
//! clean filters); what gix does not stage the way git does (nested repositories,
//! submodules) goes to `git add --all`. The rest is object work: the tree is written from
//! the index, the commit from the tree, the worktree's HEAD moved with a reflog entry as
//! `git commit` writes, and the diff counted line by line. No process per attempt is what
//! keeps a chain of short tasks close to the sum of its agents' times (see
//! `cargo run --release -p braid-bench -- makespan`).

use braid_shared::git::{DiffStat, IDENTITY_EMAIL, IDENTITY_NAME};
use gix::ObjectId;
use gix::bstr::{BStr, BString, ByteSlice};
use gix::objs::tree::{Entry, EntryKind, EntryMode};

use crate::checkout::Changes;

/// A failure, in a sentence.
pub type Error = String;

fn err(e: impl std::fmt::Display) -> Error {
    e.to_string()
}

/// What [`stage_all`] staged.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Staged {
    /// How many paths it staged.
    pub paths: usize,
    /// Untracked folders that are git repositories of their own, left out: git would
    /// record each as a link to a commit that exists only there, and its files would be
    /// in no commit braid can keep.
    pub nested: Vec<String>,
    /// The entries the index had, before staging, at the paths it staged (`None`: it had
    /// none there): with them, the index as it was can be told from the one staged.
    pub before: Vec<(BString, Option<crate::checkout::Entry>)>,
}

/// Stages everything in the worktree of `repo` as `git add --all` does: changed and new
/// files (through the clean filters their attributes name), removed ones, and the stat of
/// files that were only touched; ignored files stay out. Nested repositories are left out
/// and named (see [`Staged::nested`]). Only the paths `changes` names are looked at, when
/// it names some. The index is returned, not written: the caller writes it to the index
/// file when something may read it there.
///
/// Fails on what it leaves to git: tracked submodules, unmerged or
/// sparse entries, files of no kind git can track, and file systems without symbolic links.
pub fn stage_all(
    repo: &gix::Repository,
    changes: Changes<'_>,
    original: gix::index::File,
) -> Result<(Staged, gix::index::File, Vec<Edit>), Error> {
    use crate::checkout::{Strays, on_disk, refuse_unusual, survey};
    use gix::dir::entry::Kind;
    use gix::index::entry::{Flags, Mode, Stage};
    let dir = repo.workdir().ok_or("the repository has no worktree")?;
    let caps = repo.filesystem_options().map_err(err)?;
    if !caps.symlink {
        return Err("the file system has no symbolic links".into());
    }
    refuse_unusual(&original)?;
    // What the survey, the attributes and the filters look at: the entries of the paths
    // that changed, when those are known; staging then edits the index itself.
    let view = match changes {
        Changes::Paths(paths) => crate::checkout::part_for(&original, paths),
        _ => gix::index::State::clone(&original),
    };
    let found = survey(repo, &view, Strays::ToAdd, changes)?;
    let mut added = Vec::new();
    let mut nested = Vec::new();
    for (path, kind) in found.strays {
        match kind {
            Some(Kind::File | Kind::Symlink) => added.push(path),
            Some(Kind::Directory) => {}
            Some(Kind::Repository) => nested.push(path.to_string()),
            Some(Kind::Untrackable) | None => {
                return Err(format!("{path} is not a file git can add"));
            }
        }
    }
    if found.dirty.is_empty() && found.refreshed.is_empty() && added.is_empty() {
        let staged = Staged {
            nested,
            ..Staged::default()
        };
        return Ok((staged, original, Vec::new()));
    }

    let mut index = original;
    let before = found
        .dirty
        .iter()
        .chain(found.refreshed.keys())
        .chain(&added)
        .map(|path| {
            (
                path.clone(),
                crate::checkout::entry_at(&index, path.as_ref()),
            )
        })
        .collect();
    // The filters, with attributes read from the index in hand (`Repository::filter_pipeline`
    // would read the index again, checksum and all).
    let attributes = repo
        .attributes_only(
            &view,
            gix::worktree::stack::state::attributes::Source::WorktreeThenIdMapping,
        )
        .map_err(|e| format!("reading the attributes: {e}"))?
        .detach();
    let mut filters = gix::filter::Pipeline::new(repo, attributes)
        .map_err(|e| format!("reading the filters: {e}"))?;
    let mut blob = Vec::new();
    // A path as it would be staged now: its mode, blob and stat; `None` when it is gone.
    let mut read = |path: &BStr,
                    old_mode: Option<Mode>|
     -> Result<Option<(Mode, ObjectId, gix::index::entry::Stat)>, Error> {
        let at = on_disk(dir, path)?;
        let meta = match gix::index::fs::Metadata::from_path_no_follow(&at) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("reading {path}: {e}")),
        };
        if meta.is_dir() {
            return Ok(None);
        }
        let stat = gix::index::entry::Stat::from_fs(&meta).map_err(|e| format!("{path}: {e}"))?;
        blob.clear();
        let mode = if meta.is_symlink() {
            let target = std::fs::read_link(&at).map_err(|e| format!("reading {path}: {e}"))?;
            blob.extend_from_slice(
                gix::path::os_str_into_bstr(target.as_os_str())
                    .map_err(|e| format!("{path}: {e}"))?,
            );
            Mode::SYMLINK
        } else if meta.is_file() {
            let file = std::fs::File::open(&at).map_err(|e| format!("reading {path}: {e}"))?;
            let rela = gix::path::from_bstr(path).map_err(|e| format!("{path}: {e}"))?;
            let mut clean = filters
                .convert_to_git(file, &rela, &view)
                .map_err(|e| format!("filtering {path}: {e}"))?;
            std::io::Read::read_to_end(&mut clean, &mut blob)
                .map_err(|e| format!("reading {path}: {e}"))?;
            let executable = if caps.executable_bit {
                meta.is_executable()
            } else {
                old_mode == Some(Mode::FILE_EXECUTABLE)
            };
            if executable {
                Mode::FILE_EXECUTABLE
            } else {
                Mode::FILE
            }
        } else {
            return Err(format!("{path} is not a file git can add"));
        };
        let id = repo
            .write_blob(&blob)
            .map_err(|e| format!("storing {path}: {e}"))?
            .detach();
        Ok(Some((mode, id, stat)))
    };

    let mut gone = std::collections::HashSet::new();
    let mut staged = 0;
    let mut edits = Vec::new();
    for path in &found.dirty {
        let old_mode = index.entry_by_path(path.as_ref()).map(|e| e.mode);
        match read(path.as_ref(), old_mode)? {
            Some((mode, id, stat)) => {
                if let Some(entry) =
                    index.entry_mut_by_path_and_stage(path.as_ref(), Stage::Unconflicted)
                {
                    if entry.id != id || entry.mode != mode {
                        edits.push((path.clone(), Some((mode, id))));
                    }
                    entry.mode = mode;
                    entry.id = id;
                    entry.stat = stat;
                    entry.flags.remove(Flags::INTENT_TO_ADD);
                }
            }
            None => {
                edits.push((path.clone(), None));
                gone.insert(path.clone());
            }
        }
        staged += 1;
    }
    for (path, stat) in &found.refreshed {
        if let Some(entry) = index.entry_mut_by_path_and_stage(path.as_ref(), Stage::Unconflicted) {
            entry.stat = *stat;
        }
    }
    crate::checkout::remove_paths(&mut index, &gone);
    let sorted = index.entries().len();
    for path in &added {
        if let Some((mode, id, stat)) = read(path.as_ref(), None)? {
            index.dangerously_push_entry(stat, id, Flags::empty(), mode, path.as_ref());
            edits.push((path.clone(), Some((mode, id))));
            staged += 1;
        }
    }
    crate::checkout::sort_in(&mut index, sorted);
    // Cached trees no longer match the entries (git would invalidate the changed folders).
    index.remove_tree();
    index.remove_resolve_undo();
    let staged = Staged {
        paths: staged,
        nested,
        before,
    };
    Ok((staged, index, edits))
}

/// A path staged anew: its mode and blob, or `None` when it went.
pub type Edit = (BString, Option<(gix::index::entry::Mode, ObjectId)>);

/// The tree of `base` with `edits` made: only the folders on the edited paths are
/// written. Removals go first, so a file that became a folder (or the other way round)
/// makes way for what replaced it.
fn edit_tree(repo: &gix::Repository, base: ObjectId, edits: &[Edit]) -> Result<ObjectId, Error> {
    use gix::index::entry::Mode;
    let mut editor = repo
        .edit_tree(base)
        .map_err(|e| format!("reading tree {base}: {e}"))?;
    for (path, _) in edits.iter().filter(|(_, side)| side.is_none()) {
        editor
            .remove(path.as_bstr())
            .map_err(|e| format!("removing {path} from the tree: {e}"))?;
    }
    for (path, side) in edits {
        let Some((mode, id)) = side else { continue };
        let kind = match *mode {
            Mode::FILE => EntryKind::Blob,
            Mode::FILE_EXECUTABLE => EntryKind::BlobExecutable,
            Mode::SYMLINK => EntryKind::Link,
            _ => return Err(format!("{path} has a mode no tree entry has")),
        };
        editor
            .upsert(path.as_bstr(), kind, *id)
            .map_err(|e| format!("writing {path} into the tree: {e}"))?;
    }
    Ok(editor
        .write()
        .map_err(|e| format!("writing the tree: {e}"))?
        .detach())
}

/// Commits `index`, the index of `repo`'s worktree, on top of its HEAD, unless it holds
/// HEAD's tree already. Returns HEAD afterwards and the tree. `edits`, when given, are
/// what was staged onto an index that held HEAD's tree: then the tree is HEAD's with
/// them made, and only the folders they touch are written.
pub fn commit_index(
    repo: &gix::Repository,
    message: &str,
    index: &gix::index::File,
    edits: Option<&[Edit]>,
) -> Result<(String, ObjectId), Error> {
    let head = crate::admin::head(repo)?;
    let head_tree = tree_of(repo, head)?;
    let tree = match edits {
        Some([]) => head_tree,
        Some(edits) => edit_tree(repo, head_tree, edits)?,
        None => write_tree(repo, index)?,
    };
    if tree == head_tree {
        return Ok((head.to_string(), tree));
    }
    let time = gix::date::Time::now_utc();
    let signature = gix::actor::Signature {
        name: IDENTITY_NAME.into(),
        email: IDENTITY_EMAIL.into(),
        time,
    };
    let commit = gix::objs::Commit {
        tree,
        parents: [head].into_iter().collect(),
        author: signature.clone(),
        committer: signature,
        encoding: None,
        message: format!("{}\n", message.trim_end()).into(),
        extra_headers: Vec::new(),
    };
    let id = repo
        .write_object(&commit)
        .map_err(|e| format!("writing the commit: {e}"))?
        .detach();
    let subject = message.lines().next().unwrap_or_default();
    crate::admin::move_head(repo, head, id, &format!("commit: {subject}"), time)?;
    Ok((id.to_string(), tree))
}

/// Writes the trees of `index` (as `git write-tree` does) and returns the root's id.
fn write_tree(repo: &gix::Repository, index: &gix::index::File) -> Result<ObjectId, Error> {
    // Folders being filled, outermost first: (path, entries so far).
    let mut open: Vec<(BString, Vec<Entry>)> = vec![(BString::default(), Vec::new())];
    for entry in index.entries() {
        let path = entry.path(index);
        if entry.stage_raw() != 0 {
            return Err(format!("{path} is unmerged in the index"));
        }
        if entry
            .flags
            .contains(gix::index::entry::Flags::INTENT_TO_ADD)
        {
            continue;
        }
        let Some(mode) = entry.mode.to_tree_entry_mode() else {
            return Err(format!("{path} has an unknown mode in the index"));
        };
        // A sparse index keeps whole folders as one entry, named with a trailing slash.
        let path = match path.strip_suffix(b"/") {
            Some(folder) if mode.is_tree() => folder.as_bstr(),
            _ => path,
        };
        let (dir, name) = match path.rfind_byte(b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (BStr::new(b""), path),
        };
        // Close the folders this entry is not in, then open the ones it is in.
        while !within(dir, open.last().map_or(b"".as_bstr(), |(p, _)| p.as_bstr())) {
            close(repo, &mut open)?;
        }
        // The folders below the innermost open one ("" when the entry is in it).
        let top_len = open.last().map_or(0, |(p, _)| p.len());
        let rest = match top_len {
            0 => dir,
            n if n >= dir.len() => BStr::new(b""),
            n => &dir[n + 1..],
        };
        if !rest.is_empty() {
            let mut at = open.last().map(|(p, _)| p.clone()).unwrap_or_default();
            for part in rest.split_str("/") {
                if !at.is_empty() {
                    at.push(b'/');
                }
                at.extend_from_slice(part);
                open.push((at.clone(), Vec::new()));
            }
        }
        if let Some((_, entries)) = open.last_mut() {
            entries.push(Entry {
                mode,
                filename: name.into(),
                oid: entry.id,
            });
        }
    }
    while open.len() > 1 {
        close(repo, &mut open)?;
    }
    let (_, mut root) = open.pop().unwrap_or_default();
    root.sort();
    let tree = gix::objs::Tree { entries: root };
    Ok(repo.write_object(&tree).map_err(err)?.detach())
}

/// Whether the folder `dir` is `folder` or inside it.
fn within(dir: &BStr, folder: &BStr) -> bool {
    folder.is_empty()
        || dir == folder
        || (dir.len() > folder.len() && dir.starts_with(folder) && dir[folder.len()] == b'/')
}

/// Writes the innermost open folder and enters it in its parent.
fn close(repo: &gix::Repository, open: &mut Vec<(BString, Vec<Entry>)>) -> Result<(), Error> {
    let Some((path, mut entries)) = open.pop() else {
        return Ok(());
    };
    entries.sort();
    let id = repo
        .write_object(&gix::objs::Tree { entries })
        .map_err(err)?
        .detach();
    let name = match path.rfind_byte(b'/') {
        Some(i) => path[i + 1..].into(),
        None => path,
    };
    if let Some((_, parent)) = open.last_mut() {
        parent.push(Entry {
            mode: EntryKind::Tree.into(),
            filename: name,
            oid: id,
        });
    }
    Ok(())
}

/// The commit `rev` (its full hex id).
pub(crate) fn commit_id(rev: &str) -> Result<ObjectId, Error> {
    ObjectId::from_hex(rev.as_bytes()).map_err(|e| format!("{rev}: {e}"))
}

/// The tree of commit `id`.
pub(crate) fn tree_of(repo: &gix::Repository, id: ObjectId) -> Result<ObjectId, Error> {
    repo.find_commit(id)
        .and_then(|c| c.tree_id())
        .map(gix::Id::detach)
        .map_err(|e| format!("reading commit {id}: {e}"))
}

/// What changed from the tree of commit `from` to that of commit `to`, folder by folder;
/// with each change's path when `paths`.
pub(crate) fn tree_changes(
    repo: &gix::Repository,
    from: ObjectId,
    to: ObjectId,
    paths: bool,
) -> Result<Vec<gix::diff::tree::recorder::Change>, Error> {
    let tree = |id| {
        repo.find_tree(tree_of(repo, id)?)
            .map_err(|e| format!("reading commit {id}: {e}"))
    };
    let (old, new) = (tree(from)?, tree(to)?);
    let mut recorder = gix::diff::tree::Recorder::default();
    if !paths {
        recorder = recorder.track_location(None);
    }
    gix::diff::tree(
        gix::objs::TreeRefIter::from_bytes(&old.data, repo.object_hash()),
        gix::objs::TreeRefIter::from_bytes(&new.data, repo.object_hash()),
        &mut gix::diff::tree::State::default(),
        &repo.objects,
        &mut recorder,
    )
    .map_err(|e| format!("comparing {from} and {to}: {e}"))?;
    Ok(recorder.records)
}

/// The objects of commit `head` that `base` lacks, as a git pack (version 2, whole
/// objects), when `head` is one commit on `base` (the commit braid made): the commit, its
/// root tree and every tree and blob the tree diff from `base` names as added or changed.
/// `None` when `head` is anything else (the agent made commits of its own): then git
/// packs it. Written in process: a `git pack-objects` per attempt costs a few
/// milliseconds on the path of every attempt (measured on `braid-bench makespan`).
pub fn pack_one_commit(
    repo: &gix::Repository,
    base: &str,
    head: &str,
) -> Result<Option<Vec<u8>>, Error> {
    use gix::diff::tree::recorder::Change;
    let (base, head) = (commit_id(base)?, commit_id(head)?);
    let commit = repo
        .find_commit(head)
        .map_err(|e| format!("reading commit {head}: {e}"))?;
    let parents: Vec<ObjectId> = commit.parent_ids().map(gix::Id::detach).collect();
    if parents != [base] {
        return Ok(None);
    }
    let mut ids = vec![head, tree_of(repo, head)?];
    for change in tree_changes(repo, base, head, false)? {
        let (mode, oid) = match change {
            Change::Addition {
                entry_mode, oid, ..
            } => (entry_mode, oid),
            Change::Modification {
                entry_mode, oid, ..
            } => (entry_mode, oid),
            Change::Deletion { .. } => continue,
        };
        // A gitlink names a commit of another repository, not an object of this one.
        if !mode.is_commit() && !ids.contains(&oid) {
            ids.push(oid);
        }
    }
    let mut pack = Vec::with_capacity(64 + ids.len() * 128);
    pack.extend_from_slice(b"PACK");
    pack.extend_from_slice(&2u32.to_be_bytes());
    pack.extend_from_slice(&(ids.len() as u32).to_be_bytes());
    for id in ids {
        let object = repo
            .find_object(id)
            .map_err(|e| format!("reading {id}: {e}"))?;
        let kind: u8 = match object.kind {
            gix::objs::Kind::Commit => 1,
            gix::objs::Kind::Tree => 2,
            gix::objs::Kind::Blob => 3,
            gix::objs::Kind::Tag => 4,
        };
        // Type and size: 3 bits of type and 4 of size, then 7 bits of size a byte.
        let mut size = object.data.len();
        let mut byte = (kind << 4) | (size & 0x0f) as u8;
        size >>= 4;
        while size > 0 {
            pack.push(byte | 0x80);
            byte = (size & 0x7f) as u8;
            size >>= 7;
        }
        pack.push(byte);
        let mut zlib = gix::zlib::stream::deflate::Write::new(
            std::mem::take(&mut pack),
            gix::zlib::Compression::BEST_SPEED,
        );
        std::io::Write::write_all(&mut zlib, &object.data).map_err(err)?;
        std::io::Write::flush(&mut zlib).map_err(err)?;
        pack = zlib.into_inner();
    }
    let mut hasher = gix::hash::hasher(repo.object_hash());
    hasher.update(&pack);
    let sum = hasher.try_finalize().map_err(err)?;
    pack.extend_from_slice(sum.as_slice());
    Ok(Some(pack))
}

/// Files and lines changed from commit `from` to commit `to` of `repo`,
/// as `git diff --numstat --no-renames` counts them: a binary file counts no lines.
pub fn diff_stat(repo: &gix::Repository, from: &str, to: &str) -> Result<DiffStat, Error> {
    use gix::diff::tree::recorder::Change;
    let records = tree_changes(repo, commit_id(from)?, commit_id(to)?, true)?;
    type Side = Option<(EntryMode, ObjectId)>;
    let mut changes: Vec<(BString, Side, Side)> = records
        .into_iter()
        .map(|change| match change {
            Change::Addition {
                entry_mode,
                oid,
                path,
                ..
            } => (path, None, Some((entry_mode, oid))),
            Change::Deletion {
                entry_mode,
                oid,
                path,
                ..
            } => (path, Some((entry_mode, oid)), None),
            Change::Modification {
                previous_entry_mode,
                previous_oid,
                entry_mode,
                oid,
                path,
            } => (
                path,
                Some((previous_entry_mode, previous_oid)),
                Some((entry_mode, oid)),
            ),
        })
        .collect();
    // The tree diff goes folder by folder; git lists paths in order (its trees' order).
    changes.sort_by(|a, b| a.0.cmp(&b.0));
    let mut stat = DiffStat::default();
    for (path, before, after) in changes {
        let leaf = |side: Option<(EntryMode, ObjectId)>| side.filter(|(mode, _)| !mode.is_tree());
        let (before, after) = (leaf(before), leaf(after));
        if before.is_none() && after.is_none() {
            continue;
        }
        let (before, after) = (content(repo, before)?, content(repo, after)?);
        stat.files += 1;
        if !is_binary(&before) && !is_binary(&after) {
            let input = gix::diff::blob::InternedInput::new(before.as_slice(), after.as_slice());
            let diff = gix::diff::blob::Diff::compute(gix::diff::blob::Algorithm::Myers, &input);
            stat.insertions += u64::from(diff.count_additions());
            stat.deletions += u64::from(diff.count_removals());
        }
        stat.paths.push(path.to_string());
    }
    Ok(stat)
}

/// What git diffs for an entry: a blob's bytes (a symlink's target), a submodule's line.
fn content(repo: &gix::Repository, side: Option<(EntryMode, ObjectId)>) -> Result<Vec<u8>, Error> {
    match side {
        None => Ok(Vec::new()),
        Some((mode, id)) if mode.is_commit() => {
            Ok(format!("Subproject commit {id}\n").into_bytes())
        }
        Some((_, id)) => Ok(repo
            .find_object(id)
            .map_err(|e| format!("reading {id}: {e}"))?
            .detach()
            .data),
    }
}

/// git's test: a NUL byte in the first 8,000 bytes.
fn is_binary(data: &[u8]) -> bool {
    data[..data.len().min(8000)].contains(&0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_tests::TestRepo;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    /// A repository whose HEAD is detached, as an attempt's worktree is.
    fn repo() -> (TestRepo, String) {
        let repo = TestRepo::init();
        let base = repo.commit(
            &[
                ("a.txt", "one\ntwo\nthree\n"),
                ("a/b.txt", "inner\n"),
                ("a/c/d.txt", "deep\n"),
                ("a/c/e.txt", "beside deep\n"),
                ("a/c/f/g.txt", "deeper\n"),
                ("a/h.txt", "after the folder\n"),
                ("a.b/e.txt", "sorted after a/ by git, before it by bytes\n"),
                ("gone.txt", "x\ny\n"),
                ("bin.dat", "\0\u{1}binary"),
            ],
            "base",
        );
        repo.git(&["checkout", "--quiet", "--detach"]);
        (repo, base)
    }

    #[test]
    fn the_commit_is_git_s_tree_with_head_and_reflog_moved() {
        let (repo, base) = repo();
        // Edits, an addition in a new folder, a deletion, a binary edit, a symlink, a mode
        // change, a file turned into a folder, and an ignored file that must stay out.
        repo.write(&[
            ("a.txt", "one\n2\nthree\nfour\n"),
            ("new/deeper/f.txt", "f\n"),
            ("new/deeper/f2.txt", "f2\n"),
            ("new/z.txt", "z\n"),
            ("a/c/e.txt", "edited beside deep\n"),
            ("bin.dat", "\0\u{2}binary"),
            (".gitignore", "*.log\n"),
            ("build.log", "noise\n"),
        ]);
        std::fs::remove_file(repo.path.join("gone.txt")).unwrap();
        std::fs::remove_file(repo.path.join("a/b.txt")).unwrap();
        repo.write(&[("a/b.txt/inside.txt", "now a folder\n")]);
        std::os::unix::fs::symlink("a.txt", repo.path.join("link")).unwrap();
        let script = repo.path.join("a/c/d.txt");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        repo.git(&["add", "--all"]);
        let expected_tree = repo.git(&["write-tree"]);

        let index = crate::admin::read_index(&open(&repo.path)).unwrap();
        let (head, _) = commit_index(
            &open(&repo.path),
            "braid: t attempt 1\n\nRun r.",
            &index,
            None,
        )
        .unwrap();
        assert_eq!(repo.git(&["rev-parse", "HEAD"]), head);
        assert_eq!(repo.git(&["rev-parse", "HEAD^{tree}"]), expected_tree);
        assert_eq!(repo.git(&["rev-parse", "HEAD^"]), base);
        assert_eq!(
            repo.git(&["log", "-1", "--format=%an <%ae>%n%B"]),
            "braid <braid@localhost>\nbraid: t attempt 1\n\nRun r."
        );
        assert_eq!(
            repo.git(&["reflog", "-1", "--format=%gs", "HEAD"]),
            "commit: braid: t attempt 1"
        );
        assert_eq!(
            repo.git(&["status", "--porcelain"]),
            "",
            "the index matches HEAD"
        );
        repo.git(&["fsck", "--strict", "--no-dangling"]);

        // Nothing staged since: no new commit.
        let index = crate::admin::read_index(&open(&repo.path)).unwrap();
        assert_eq!(
            commit_index(&open(&repo.path), "again", &index, None)
                .unwrap()
                .0,
            head
        );
        assert_eq!(repo.git(&["rev-parse", "HEAD"]), head);
    }

    fn open(dir: &Path) -> gix::Repository {
        crate::checkout::open(dir).unwrap()
    }

    fn disk_index(dir: &Path) -> gix::index::File {
        crate::admin::read_index(&open(dir)).unwrap()
    }

    /// Runs git in `dir` (any worktree); returns its standard output.
    fn git_in(dir: &Path, args: &[&str]) -> String {
        let out = braid_tests::command("git", dir)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn staging_stages_what_git_add_all_stages() {
        let (repo, _) = repo();
        repo.commit(
            &[
                (".gitattributes", "*.crlf text eol=crlf\n"),
                (".gitignore", "*.log\n"),
            ],
            "attributes",
        );
        let worktrees = repo.outside().join("worktrees");
        let (by_git, by_gix) = (worktrees.join("git"), worktrees.join("gix"));
        let by_journal = worktrees.join("journal");
        let mut noted = None;
        for dir in [&by_git, &by_gix, &by_journal] {
            repo.worktree(dir, "HEAD");
            if dir == &by_journal {
                let index = disk_index(dir);
                noted = Some((crate::journal::Journal::start(dir, &index).unwrap(), index));
            }
            let write = |path: &str, text: &str| {
                let at = dir.join(path);
                std::fs::create_dir_all(at.parent().unwrap()).unwrap();
                std::fs::write(at, text).unwrap();
            };
            write("a.txt", "ONE\nTWO\nTHREE\n"); // the same size
            write("new/deeper/f.txt", "f\n");
            write("new/z.txt", "z\n");
            write("text.crlf", "one\r\ntwo\r\n");
            write("build.log", "ignored\n");
            std::fs::remove_file(dir.join("gone.txt")).unwrap();
            std::fs::remove_file(dir.join("a/b.txt")).unwrap();
            write("a/b.txt/inside.txt", "now a folder\n");
            std::os::unix::fs::symlink("a.txt", dir.join("link")).unwrap();
            let script = dir.join("a/c/d.txt");
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
            // Only touched: the same content, a new time.
            write("a/h.txt", "after the folder\n");
        }
        git_in(&by_git, &["add", "--all"]);
        let (staged, _) = stage_written(&open(&by_gix), Changes::Unknown, disk_index(&by_gix));

        assert_eq!(
            git_in(&by_gix, &["ls-files", "--stage"]),
            git_in(&by_git, &["ls-files", "--stage"])
        );
        assert_eq!(
            git_in(&by_gix, &["write-tree"]),
            git_in(&by_git, &["write-tree"])
        );
        assert_eq!(
            git_in(&by_gix, &["status", "--porcelain", "--ignored"]),
            git_in(&by_git, &["status", "--porcelain", "--ignored"])
        );
        // The index's stat matches the files: nothing needs a refresh.
        git_in(&by_gix, &["diff-files", "--quiet"]);
        assert_eq!(
            git_in(&by_gix, &["cat-file", "-p", ":text.crlf"]),
            "one\ntwo\n",
            "the clean side of eol=crlf"
        );
        // a.txt, a/c/d.txt, gone.txt and a/b.txt; the three new files, text.crlf and link.
        assert_eq!(staged.paths, 9);

        // Staged from the journal's paths onto the index braid kept, and committed by
        // editing HEAD's tree: git's index and tree all the same.
        let (mut journal, index) = noted.unwrap();
        let paths = journal.changed().unwrap();
        let (staged, index, edits) =
            stage_all(&open(&by_journal), Changes::Paths(&paths), index).unwrap();
        crate::admin::write_index(&index).unwrap();
        assert_eq!(staged.paths, 9);
        let (_, tree) = commit_index(&open(&by_journal), "m", &index, Some(&edits)).unwrap();
        assert_eq!(
            git_in(&by_journal, &["ls-files", "--stage"]),
            git_in(&by_git, &["ls-files", "--stage"])
        );
        assert_eq!(tree.to_string(), git_in(&by_git, &["write-tree"]).trim());
        assert_eq!(
            git_in(&by_journal, &["status", "--porcelain", "--ignored"]),
            "!! build.log\n"
        );
        git_in(&by_journal, &["diff-files", "--quiet"]);
        assert_eq!(
            stage_all(&open(&by_gix), Changes::Unknown, disk_index(&by_gix))
                .unwrap()
                .0
                .paths,
            0,
            "nothing left to stage"
        );
    }

    /// Stages as [`stage_all`] does and writes the index file, as `git add --all` leaves it.
    fn stage_written(
        repo: &gix::Repository,
        changes: Changes<'_>,
        index: gix::index::File,
    ) -> (Staged, Vec<Edit>) {
        let (staged, index, edits) = stage_all(repo, changes, index).expect("staged in process");
        crate::admin::write_index(&index).unwrap();
        (staged, edits)
    }

    #[test]
    fn the_pack_of_a_commit_is_what_git_takes_and_all_it_needs() {
        let (repo, base) = repo();
        repo.write(&[("a/c/new.txt", "new\n"), ("a.txt", "changed\n")]);
        std::fs::remove_file(repo.path.join("gone.txt")).unwrap();
        repo.git(&["add", "--all"]);
        repo.git(&["commit", "--quiet", "-m", "change"]);
        let head = repo.git(&["rev-parse", "HEAD"]);
        let pack = pack_one_commit(&open(&repo.path), &base, &head)
            .unwrap()
            .expect("one commit on its base");
        // A repository that has the base and nothing else takes it, checked strictly,
        // and then has the whole commit.
        let other = braid_tests::TestRepo::init();
        other.git(&["fetch", "--quiet", repo.path.to_str().unwrap(), &base]);
        let mut child = braid_tests::command("git", &other.path)
            .args(["unpack-objects", "--strict"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), &pack).unwrap();
        assert!(child.wait().unwrap().success());
        other.git(&["fsck", "--strict", "--no-dangling", &head]);
        assert_eq!(other.show(&head, "a/c/new.txt").as_deref(), Some("new\n"));
        // Two commits on the base: left to git.
        repo.commit(&[("b.txt", "b\n")], "another");
        let two = repo.git(&["rev-parse", "HEAD"]);
        assert_eq!(
            pack_one_commit(&open(&repo.path), &base, &two).unwrap(),
            None
        );
    }

    #[test]
    fn a_nested_repository_is_left_out_and_named() {
        let (repo, _) = repo();
        std::fs::write(repo.path.join("a.txt"), "changed\n").unwrap();
        repo.git(&["init", "--quiet", "nested"]);
        std::fs::write(repo.path.join("nested/inner.txt"), "inner\n").unwrap();
        let (staged, _) =
            stage_written(&open(&repo.path), Changes::Unknown, disk_index(&repo.path));
        assert_eq!(staged.nested, ["nested"]);
        assert_eq!(staged.paths, 1);
        let listed = repo.git(&["ls-files", "--stage"]);
        assert!(!listed.contains("nested"), "{listed}");
        assert!(
            repo.git(&["diff", "--cached", "--name-only"])
                .contains("a.txt")
        );
    }

    #[test]
    fn the_diff_counts_what_git_diff_numstat_counts() {
        let (repo, base) = repo();
        repo.write(&[
            ("a.txt", "zero\none\n2\nthree\n"),
            ("a/c/new.txt", "n1\nn2\nn3"),
            ("bin.dat", "\0\u{3}binary"),
        ]);
        std::fs::remove_file(repo.path.join("gone.txt")).unwrap();
        std::os::unix::fs::symlink("a.txt", repo.path.join("link")).unwrap();
        repo.git(&["add", "--all"]);
        repo.git(&["commit", "--quiet", "-m", "change"]);
        let head = repo.git(&["rev-parse", "HEAD"]);

        let stat = diff_stat(&open(&repo.path), &base, &head).unwrap();
        let git = repo.git(&["diff", "--numstat", "--no-renames", &base, &head]);
        let mut expected = DiffStat::default();
        for line in git.lines() {
            let cols: Vec<&str> = line.splitn(3, '\t').collect();
            expected.files += 1;
            expected.insertions += cols[0].parse::<u64>().unwrap_or(0);
            expected.deletions += cols[1].parse::<u64>().unwrap_or(0);
            expected.paths.push(cols[2].to_owned());
        }
        assert_eq!(stat, expected);
        assert_eq!(stat.files, 5, "{stat:?}");
        assert_eq!(
            diff_stat(&open(&repo.path), &head, &head).unwrap(),
            DiffStat::default()
        );
    }
}
