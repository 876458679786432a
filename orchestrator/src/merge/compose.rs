//! The fast path: when two branches changed disjoint sets of paths since their merge base,
//! their merge is the base's tree with both sides' changes applied, and braid builds it by
//! editing trees in process instead of running a full merge. With several merge bases
//! (criss-cross merges, or tasks started from merges of the same deps), the base is the
//! bases composed the same way, as merge-ort's virtual base would be.
//!
//! gix does the object work here: reading and writing trees in process is what makes a
//! disjoint merge cheaper than starting `git merge-tree`. Whenever merge-ort could decide
//! anything (a path both sides touched, a file where the other side has a directory, a
//! directory one side emptied and the other added to, merge bases that do not compose),
//! this path declines and the caller runs merge-ort itself; the merge corpus test holds
//! the two to the same results.

use std::collections::{BTreeSet, HashMap};

use gix::ObjectId;
use gix::bstr::{BString, ByteSlice};
use gix::objs::tree::EntryKind;

/// A failure of the object database.
pub type ObjectError = String;

/// One side's change to a path (files, symlinks and submodules; trees are implied).
#[derive(Debug, Clone)]
enum Change {
    /// The path is gone.
    Delete(BString),
    /// The path holds this entry now.
    Upsert(BString, EntryKind, ObjectId),
}

impl Change {
    fn path(&self) -> &BString {
        match self {
            Change::Delete(path) | Change::Upsert(path, ..) => path,
        }
    }
}

/// How two commits merge without merge-ort, when they can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Composed {
    /// `theirs` is already in `ours`.
    UpToDate,
    /// `ours` is in `theirs`: the merge is `theirs`.
    FastForward,
    /// Disjoint changes, composed into this tree.
    Tree(ObjectId),
}

/// Parses a full hex object id.
pub fn oid(hex: &str) -> Result<ObjectId, ObjectError> {
    ObjectId::from_hex(hex.trim().as_bytes()).map_err(|e| format!("bad object id {hex:?}: {e}"))
}

fn err(e: impl std::fmt::Display) -> ObjectError {
    e.to_string()
}

/// The tree of a commit.
pub fn tree_of(repo: &gix::Repository, commit: ObjectId) -> Result<ObjectId, ObjectError> {
    Ok(repo
        .find_commit(commit)
        .map_err(err)?
        .tree_id()
        .map_err(err)?
        .detach())
}

/// Merges `theirs` into `ours` by tree edits, or says `None` when merge-ort must decide.
pub fn compose(
    repo: &gix::Repository,
    ours: ObjectId,
    theirs: ObjectId,
) -> Result<Option<Composed>, ObjectError> {
    compose_at(repo, ours, theirs, 0)
}

/// How deep merge bases are merged into virtual ones before braid leaves it to merge-ort.
const MAX_VIRTUAL_DEPTH: usize = 4;

fn compose_at(
    repo: &gix::Repository,
    ours: ObjectId,
    theirs: ObjectId,
    depth: usize,
) -> Result<Option<Composed>, ObjectError> {
    let bases: Vec<ObjectId> = repo
        .merge_bases_many(ours, &[theirs])
        .map_err(err)?
        .into_iter()
        .map(|id| id.detach())
        .collect();
    let base_tree = match bases.as_slice() {
        [] => return Ok(None),
        [base] if *base == theirs => return Ok(Some(Composed::UpToDate)),
        [base] if *base == ours => return Ok(Some(Composed::FastForward)),
        [base] => tree_of(repo, *base)?,
        many => match virtual_base(repo, many, depth)? {
            Some(tree) => tree,
            None => return Ok(None),
        },
    };
    let (ours_tree, theirs_tree) = (tree_of(repo, ours)?, tree_of(repo, theirs)?);
    let ours_changes = changes(repo, base_tree, ours_tree)?;
    let theirs_changes = changes(repo, base_tree, theirs_tree)?;
    if overlap(&ours_changes, &theirs_changes)
        || emptied(repo, base_tree, ours_tree, &ours_changes, &theirs_changes)?
        || emptied(repo, base_tree, theirs_tree, &theirs_changes, &ours_changes)?
    {
        return Ok(None);
    }
    apply(repo, ours_tree, &theirs_changes).map(|tree| Some(Composed::Tree(tree)))
}

/// The tree of the virtual merge base that merge-ort would build from several merge bases
/// (as after criss-cross merges, or when tasks start from merges of the same deps): the
/// bases merged with one another. Only when each of those merges composes too, so their
/// order cannot matter; otherwise `None`, and merge-ort decides.
fn virtual_base(
    repo: &gix::Repository,
    bases: &[ObjectId],
    depth: usize,
) -> Result<Option<ObjectId>, ObjectError> {
    let Some((&first, rest)) = bases.split_first() else {
        return Ok(None);
    };
    if depth >= MAX_VIRTUAL_DEPTH {
        return Ok(None);
    }
    let mut acc = first;
    let mut tree = tree_of(repo, first)?;
    for (i, &next) in rest.iter().enumerate() {
        tree = match compose_at(repo, acc, next, depth + 1)? {
            None => return Ok(None),
            Some(Composed::UpToDate) => tree_of(repo, acc)?,
            Some(Composed::FastForward) => tree_of(repo, next)?,
            Some(Composed::Tree(tree)) => tree,
        };
        if i + 1 < rest.len() {
            // The next base merges with this virtual one, whose history is both of its
            // parents: it needs a commit (written, never referenced, like merge-ort's).
            acc = write_commit(repo, tree, &[acc, next], "braid: virtual merge base")?;
        }
    }
    Ok(Some(tree))
}

/// Applies `changes` to `tree` and writes the result; deletions go first, so a file that
/// replaces a directory (or the other way round) lands in the right place.
fn apply(
    repo: &gix::Repository,
    tree: ObjectId,
    changes: &[Change],
) -> Result<ObjectId, ObjectError> {
    let mut editor = repo.edit_tree(tree).map_err(err)?;
    for change in changes {
        if let Change::Delete(path) = change {
            editor.remove(path.as_bstr()).map_err(err)?;
        }
    }
    for change in changes {
        if let Change::Upsert(path, kind, id) = change {
            editor.upsert(path.as_bstr(), *kind, *id).map_err(err)?;
        }
    }
    Ok(editor.write().map_err(err)?.detach())
}

/// The leaf changes from tree `from` to tree `to`, without rename detection.
fn changes(
    repo: &gix::Repository,
    from: ObjectId,
    to: ObjectId,
) -> Result<Vec<Change>, ObjectError> {
    use gix::diff::tree::recorder::Change as Recorded;
    let kind = repo.object_hash();
    let (from, to) = (
        repo.find_tree(from).map_err(err)?,
        repo.find_tree(to).map_err(err)?,
    );
    let mut recorder = gix::diff::tree::Recorder::default();
    gix::diff::tree(
        gix::objs::TreeRefIter::from_bytes(&from.data, kind),
        gix::objs::TreeRefIter::from_bytes(&to.data, kind),
        &mut gix::diff::tree::State::default(),
        &repo.objects,
        &mut recorder,
    )
    .map_err(err)?;
    Ok(recorder
        .records
        .into_iter()
        .filter_map(|record| match record {
            Recorded::Addition {
                entry_mode,
                oid,
                path,
                ..
            } => (!entry_mode.is_tree()).then(|| Change::Upsert(path, entry_mode.kind(), oid)),
            Recorded::Deletion {
                entry_mode, path, ..
            } => (!entry_mode.is_tree()).then_some(Change::Delete(path)),
            Recorded::Modification {
                previous_entry_mode,
                entry_mode,
                oid,
                path,
                ..
            } => match (previous_entry_mode.is_tree(), entry_mode.is_tree()) {
                (_, false) => Some(Change::Upsert(path, entry_mode.kind(), oid)),
                (false, true) => Some(Change::Delete(path)),
                (true, true) => None,
            },
        })
        .collect())
}

/// The gitlinks (submodule entries) that `to` adds or changes against `from`, with the
/// commit each names.
pub fn gitlinks_added(
    repo: &gix::Repository,
    from: ObjectId,
    to: ObjectId,
) -> Result<Vec<(String, ObjectId)>, ObjectError> {
    let changes = changes(repo, tree_of(repo, from)?, tree_of(repo, to)?)?;
    Ok(changes
        .into_iter()
        .filter_map(|c| match c {
            Change::Upsert(path, gix::objs::tree::EntryKind::Commit, id) => {
                Some((path.to_string(), id))
            }
            _ => None,
        })
        .collect())
}

/// The paths (files, symlinks, submodules) that differ between two commits.
pub fn changed_paths(
    repo: &gix::Repository,
    from: ObjectId,
    to: ObjectId,
) -> Result<Vec<String>, ObjectError> {
    let changes = changes(repo, tree_of(repo, from)?, tree_of(repo, to)?)?;
    Ok(changes.iter().map(|c| c.path().to_string()).collect())
}

/// The paths that differ between two commits, each with whether it was deleted.
pub fn changed_paths_deleted(
    repo: &gix::Repository,
    from: ObjectId,
    to: ObjectId,
) -> Result<Vec<(String, bool)>, ObjectError> {
    let changes = changes(repo, tree_of(repo, from)?, tree_of(repo, to)?)?;
    Ok(changes
        .iter()
        .map(|c| (c.path().to_string(), matches!(c, Change::Delete(_))))
        .collect())
}

/// Whether a path of one side is, or is inside, or holds, a path of the other.
fn overlap(ours: &[Change], theirs: &[Change]) -> bool {
    let ours: BTreeSet<&[u8]> = ours.iter().map(|c| c.path().as_slice()).collect();
    theirs.iter().any(|change| {
        let path = change.path().as_slice();
        if ours.contains(path) || ancestors(path).any(|dir| ours.contains(dir)) {
            return true;
        }
        // A path of ours inside `path/`: the bytes after "path/" sort below "path0".
        let mut lo = path.to_vec();
        lo.push(b'/');
        let mut hi = path.to_vec();
        hi.push(b'/' + 1);
        ours.range::<[u8], _>((
            std::ops::Bound::Included(lo.as_slice()),
            std::ops::Bound::Excluded(hi.as_slice()),
        ))
        .next()
        .is_some()
    })
}

/// Whether a change lies in a directory that the base has and the other side removed: git
/// would take that as a directory rename and might move the change. Only directories the
/// other side deleted something in can be gone, so only those are looked up.
fn emptied(
    repo: &gix::Repository,
    base: ObjectId,
    other: ObjectId,
    other_changes: &[Change],
    changes: &[Change],
) -> Result<bool, ObjectError> {
    let deleted_in: BTreeSet<&[u8]> = other_changes
        .iter()
        .filter(|c| matches!(c, Change::Delete(_)))
        .flat_map(|c| ancestors(c.path().as_slice()))
        .collect();
    if deleted_in.is_empty() {
        return Ok(false);
    }
    let (base, other) = (
        repo.find_tree(base).map_err(err)?,
        repo.find_tree(other).map_err(err)?,
    );
    let mut known: HashMap<&[u8], bool> = HashMap::new();
    for change in changes {
        for dir in ancestors(change.path().as_slice()).filter(|d| deleted_in.contains(d)) {
            if let Some(&gone) = known.get(dir) {
                if gone {
                    return Ok(true);
                }
                continue;
            }
            let is_dir = |tree: &gix::Tree<'_>| -> Result<bool, ObjectError> {
                let path = dir.to_str_lossy().into_owned();
                Ok(tree
                    .lookup_entry_by_path(path)
                    .map_err(err)?
                    .is_some_and(|e| e.mode().is_tree()))
            };
            let gone = is_dir(&base)? && !is_dir(&other)?;
            known.insert(dir, gone);
            if gone {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// The directories that hold `path`, innermost last: `a`, `a/b` for `a/b/c`.
fn ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'/')
        .map(move |(i, _)| &path[..i])
}

/// Writes a commit with braid's identity.
pub fn write_commit(
    repo: &gix::Repository,
    tree: ObjectId,
    parents: &[ObjectId],
    message: &str,
) -> Result<ObjectId, ObjectError> {
    // Dated as its newest parent: the same merge of the same commits is the same commit,
    // so a run resumed from its journal makes again exactly the commits it made before.
    let mut time = None::<gix::date::Time>;
    for parent in parents {
        let commit = repo.find_commit(*parent).map_err(err)?;
        let committed = commit.time().map_err(err)?;
        if time.is_none_or(|t| committed.seconds > t.seconds) {
            time = Some(committed);
        }
    }
    let signature = gix::actor::Signature {
        name: braid_shared::git::IDENTITY_NAME.into(),
        email: braid_shared::git::IDENTITY_EMAIL.into(),
        time: time.unwrap_or_else(gix::date::Time::now_utc),
    };
    let commit = gix::objs::Commit {
        tree,
        parents: parents.iter().copied().collect(),
        author: signature.clone(),
        committer: signature,
        encoding: None,
        message: format!("{message}\n").into(),
        extra_headers: Vec::new(),
    };
    Ok(repo.write_object(&commit).map_err(err)?.detach())
}

/// The content of `path` in `tree`, when it is a blob.
pub fn read_path(
    repo: &gix::Repository,
    tree: ObjectId,
    path: &str,
) -> Result<Option<Vec<u8>>, ObjectError> {
    let tree = repo.find_tree(tree).map_err(err)?;
    let Some(entry) = tree.lookup_entry_by_path(path).map_err(err)? else {
        return Ok(None);
    };
    if !entry.mode().is_blob() {
        return Ok(None);
    }
    Ok(Some(entry.object().map_err(err)?.detach().data))
}

/// Writes `tree` with the files in `files` replaced (same mode, new content).
pub fn replace_files(
    repo: &gix::Repository,
    tree: ObjectId,
    files: &[(String, Vec<u8>)],
) -> Result<ObjectId, ObjectError> {
    let root = repo.find_tree(tree).map_err(err)?;
    let mut editor = repo.edit_tree(tree).map_err(err)?;
    for (path, content) in files {
        let kind = root
            .lookup_entry_by_path(path)
            .map_err(err)?
            .map_or(EntryKind::Blob, |e| e.mode().kind());
        let blob = repo.write_blob(content).map_err(err)?.detach();
        editor.upsert(path.as_str(), kind, blob).map_err(err)?;
    }
    Ok(editor.write().map_err(err)?.detach())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_are_the_holding_directories() {
        let dirs: Vec<&[u8]> = ancestors(b"a/b/c").collect();
        assert_eq!(dirs, [b"a".as_slice(), b"a/b".as_slice()]);
        assert_eq!(ancestors(b"top").count(), 0);
    }

    #[test]
    fn overlap_sees_equal_paths_and_files_against_directories() {
        let at = |p: &str| Change::Delete(p.into());
        assert!(overlap(&[at("a/b")], &[at("a/b")]));
        assert!(overlap(&[at("a")], &[at("a/b")]));
        assert!(overlap(&[at("a/b/c")], &[at("a/b")]));
        assert!(!overlap(&[at("a/b")], &[at("a/c"), at("ab"), at("a.b")]));
        assert!(!overlap(&[at("a-b/c")], &[at("a")]));
    }
}
