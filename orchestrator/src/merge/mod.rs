//! The merger: git-exact merges of two commits, with every conflict told precisely.
//!
//! A merge takes one of two routes. When both sides changed disjoint paths since their one
//! merge base, [`compose`] builds the result by editing trees in process. Otherwise merge-ort
//! decides ([`ort`]: `git merge-tree --write-tree`), and each conflicted path gets its kind
//! and, for text conflicts, its hunks ([`hunks`]). Both routes give git's own verdict, tree
//! and conflicted paths; the merge corpus test holds them to it.
//!
//! Only objects are written, never the user's index, HEAD or working tree.

pub mod compose;
pub mod footprint;
pub mod hunks;
pub mod ort;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use braid_shared::git::{Git, GitError};
use serde::{Deserialize, Serialize};

pub use hunks::Hunk;
pub use ort::ConflictKind;

use compose::{Composed, ObjectError, oid};

/// A merge that could not be carried out (not a conflict: conflicts are results).
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// A git command failed.
    #[error(transparent)]
    Git(#[from] GitError),
    /// Objects could not be read or written in process.
    #[error("could not read or write objects in {repo}: {detail}")]
    Objects {
        /// The repository.
        repo: PathBuf,
        /// What went wrong.
        detail: String,
    },
}

/// One conflicted path, as reports show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathConflict {
    /// The path in the merged tree.
    pub path: String,
    /// What kind of conflict it is.
    pub kind: ConflictKind,
    /// git's own words about it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<String>,
    /// For a file/directory conflict, where git put each side: the file moved aside to
    /// `path~<commit>`, the folder kept at `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placed: Option<String>,
    /// For a file/directory conflict, the path git moved the file to in the merged tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_to: Option<String>,
    /// For text conflicts, the conflicted regions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hunks: Vec<Hunk>,
    /// Hunks left out past the cap.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more_hunks: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use braid_tests::TestRepo;

    #[test]
    fn branches_are_created_once_and_moved_only_from_where_they_are() {
        let repo = TestRepo::init();
        let first = repo.git(&["rev-parse", "HEAD"]);
        let second = repo.commit(&[("a.txt", "a\n")], "second");
        let merger = super::Merger::open(&repo.path).unwrap();
        let name = "refs/heads/braid/run/task/1";
        merger.set_ref(name, &first, None).unwrap();
        assert_eq!(repo.git(&["rev-parse", name]), first);
        let again = merger.set_ref(name, &second, None).unwrap_err();
        assert!(again.to_string().contains(name), "{again}");
        let stale = merger.set_ref(name, &second, Some(&second)).unwrap_err();
        assert!(stale.to_string().contains(name), "{stale}");
        assert_eq!(
            repo.git(&["rev-parse", name]),
            first,
            "a refused move moves nothing"
        );
        merger.set_ref(name, &second, Some(&first)).unwrap();
        assert_eq!(repo.git(&["rev-parse", name]), second);
        let log = repo.git(&["reflog", "--format=%gs", name]);
        assert_eq!(log.lines().count(), 2, "one reflog entry per change: {log}");
        let missing = "0123456789012345678901234567890123456789";
        let err = merger
            .set_ref("refs/heads/braid/run/other", missing, None)
            .unwrap_err();
        assert!(
            err.to_string().contains("is not in the repository"),
            "{err}"
        );
        assert!(
            repo.git(&["for-each-ref", "refs/heads/braid/run/other"])
                .is_empty()
        );
    }

    #[test]
    fn messages_name_the_sides() {
        let text = "CONFLICT (modify/delete): f deleted in aaa and modified in bbb.  Version bbb of f left in tree.";
        assert_eq!(
            super::name_sides(text, "aaa", "bbb"),
            "CONFLICT (modify/delete): f deleted in ours and modified in theirs.  Version theirs of f left in tree."
        );
        let moved = "directory in the way of fd from aaa; moving it to fd~aaa instead.";
        assert_eq!(
            super::name_sides(moved, "aaa", "bbb"),
            "directory in the way of fd from ours; moving it to fd~aaa instead."
        );
    }
}

/// What a merge of two commits gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No conflict.
    Clean {
        /// The merged tree.
        tree: String,
    },
    /// Conflicts.
    Conflicted {
        /// The merged tree, with conflict markers in conflicted text files.
        tree: String,
        /// The conflicted paths, sorted.
        conflicts: Vec<PathConflict>,
    },
}

impl Verdict {
    /// The conflicted paths; empty for a clean merge.
    pub fn paths(&self) -> Vec<String> {
        match self {
            Verdict::Clean { .. } => Vec::new(),
            Verdict::Conflicted { conflicts, .. } => {
                conflicts.iter().map(|c| c.path.clone()).collect()
            }
        }
    }
}

/// Which way a merge was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The incoming commit was already contained.
    UpToDate,
    /// The current commit was contained in the incoming one.
    FastForward,
    /// Disjoint changes composed by editing trees.
    Composed,
    /// A full merge by merge-ort.
    MergeOrt,
}

/// A merge of two commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwoWay {
    /// The outcome.
    pub verdict: Verdict,
    /// How it was reached.
    pub route: Route,
}

/// A merge step in a chain of merges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The merged commit.
    Merged(String),
    /// A conflict; nothing was committed.
    Conflict {
        /// The merged tree with conflict markers.
        tree: String,
        /// The conflicted paths.
        conflicts: Vec<PathConflict>,
    },
}

/// A branch to point at a commit: created when `old` is `None`, else moved from `old`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchMove {
    /// The full ref name, `refs/heads/...`.
    pub refname: String,
    /// The commit it is to point at.
    pub commit: String,
    /// Where it must point now; `None`: it must not exist yet.
    pub old: Option<String>,
}

/// Merges commits of one repository.
///
/// One handle on the object database is kept and shared, so its caches of decoded trees and
/// commits carry over from merge to merge: an integration merges many times into the same
/// trees.
#[derive(Clone)]
pub struct Merger {
    dir: PathBuf,
    git: Git,
    repo: Arc<Mutex<gix::Repository>>,
}

impl std::fmt::Debug for Merger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Merger").field("dir", &self.dir).finish()
    }
}

impl Merger {
    /// A merger for the repository at `dir` (its working tree or git directory).
    pub fn open(dir: &Path) -> Result<Self, MergeError> {
        let mut repo = gix::open_opts(dir, gix::open::Options::isolated()).map_err(|e| {
            MergeError::Objects {
                repo: dir.to_owned(),
                detail: e.to_string(),
            }
        })?;
        repo.object_cache_size_if_unset(32 << 20);
        Ok(Merger {
            dir: dir.to_owned(),
            git: Git::at(dir),
            repo: Arc::new(Mutex::new(repo)),
        })
    }

    /// The object database; held only for in-process work, never across an await.
    fn repo(&self) -> MutexGuard<'_, gix::Repository> {
        // A panic while holding the lock leaves nothing half-done that later merges read:
        // objects are written whole or not at all.
        self.repo
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn objects<T>(&self, result: Result<T, ObjectError>) -> Result<T, MergeError> {
        result.map_err(|detail| MergeError::Objects {
            repo: self.dir.clone(),
            detail,
        })
    }

    /// Merges commit `theirs` into commit `ours`, as `git merge-tree --write-tree` would.
    pub async fn merge(&self, ours: &str, theirs: &str) -> Result<TwoWay, MergeError> {
        if let Some(done) = self.compose(ours, theirs)? {
            return Ok(done);
        }
        let merged = ort::merge_tree(&self.git, ours, theirs).await?;
        let verdict = if merged.conflicts.is_empty() {
            Verdict::Clean { tree: merged.tree }
        } else {
            let mut conflicts = self.details(&merged)?;
            for conflict in &mut conflicts {
                for message in &mut conflict.messages {
                    *message = name_sides(message, ours, theirs);
                }
            }
            Verdict::Conflicted {
                tree: merged.tree,
                conflicts,
            }
        };
        Ok(TwoWay {
            verdict,
            route: Route::MergeOrt,
        })
    }

    /// The merge by tree edits, when the changes are disjoint.
    fn compose(&self, ours: &str, theirs: &str) -> Result<Option<TwoWay>, MergeError> {
        let repo = self.repo();
        let (o, t) = (self.objects(oid(ours))?, self.objects(oid(theirs))?);
        let Some(composed) = self.objects(compose::compose(&repo, o, t))? else {
            return Ok(None);
        };
        let (tree, route) = match composed {
            Composed::UpToDate => (compose::tree_of(&repo, o), Route::UpToDate),
            Composed::FastForward => (compose::tree_of(&repo, t), Route::FastForward),
            Composed::Tree(tree) => (Ok(tree), Route::Composed),
        };
        Ok(Some(TwoWay {
            verdict: Verdict::Clean {
                tree: self.objects(tree)?.to_string(),
            },
            route,
        }))
    }

    /// Each conflicted path with its kind, and its hunks when it is a text conflict.
    fn details(&self, merged: &ort::OrtMerge) -> Result<Vec<PathConflict>, MergeError> {
        let repo = self.repo();
        let tree = self.objects(oid(&merged.tree))?;
        let mut out = Vec::new();
        for path in &merged.conflicts {
            let mut conflict = PathConflict {
                path: path.path.clone(),
                kind: path.kind,
                messages: path.messages.clone(),
                placed: path.placed.clone(),
                moved_to: path.moved_to.clone(),
                hunks: Vec::new(),
                more_hunks: 0,
            };
            let both_sides = [2, 3]
                .iter()
                .all(|s| path.stages.iter().any(|st| st.stage == *s));
            if matches!(path.kind, ConflictKind::Content | ConflictKind::AddAdd) && both_sides {
                let content = self.objects(compose::read_path(&repo, tree, &path.path))?;
                if let Some(text) = content.as_deref().and_then(text_of) {
                    (conflict.hunks, conflict.more_hunks) = hunks::parse(text);
                }
            }
            out.push(conflict);
        }
        Ok(out)
    }

    /// Merges `incoming` into `current` and commits the merge (parents: both), or reports
    /// the conflict. A contained commit is not merged again, and a fast-forward is taken.
    pub async fn merge_commits(
        &self,
        current: &str,
        incoming: &str,
        message: &str,
    ) -> Result<(Step, Route), MergeError> {
        let merged = self.merge(current, incoming).await?;
        let step = match (merged.route, merged.verdict) {
            (Route::UpToDate, _) => Step::Merged(current.to_owned()),
            (Route::FastForward, _) => Step::Merged(incoming.to_owned()),
            (_, Verdict::Clean { tree }) => {
                Step::Merged(self.commit(&tree, &[current, incoming], message)?)
            }
            (_, Verdict::Conflicted { tree, conflicts }) => Step::Conflict { tree, conflicts },
        };
        Ok((step, merged.route))
    }

    /// Writes a commit of `tree` with braid's identity.
    pub fn commit(
        &self,
        tree: &str,
        parents: &[&str],
        message: &str,
    ) -> Result<String, MergeError> {
        let repo = self.repo();
        let tree = self.objects(oid(tree))?;
        let parents = parents
            .iter()
            .map(|p| self.objects(oid(p)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self
            .objects(compose::write_commit(&repo, tree, &parents, message))?
            .to_string())
    }

    /// Takes the objects of an attempt's `commit` (made on `base`), as a worker's thin
    /// `pack`, into the repository after git's strict checks of every object (duplicate
    /// tree entries, paths with `..` or `.git`, bad modes, missing links). Returns the
    /// problems of the commit that fail the attempt while its objects are sound: gitlinks
    /// (nested repositories) whose commit exists nowhere, so their files are not in it.
    pub async fn import(
        &self,
        pack: Vec<u8>,
        base: &str,
        commit: &str,
    ) -> Result<Vec<String>, MergeError> {
        if !pack.is_empty() {
            self.git.unpack(pack).await?;
        }
        if !self.has_commit(commit) {
            return Err(MergeError::Objects {
                repo: self.dir.clone(),
                detail: format!("the attempt's commit {commit} is not among the objects it sent"),
            });
        }
        let repo = self.repo();
        let (from, to) = (self.objects(oid(base))?, self.objects(oid(commit))?);
        let gitlinks = self.objects(compose::gitlinks_added(&repo, from, to))?;
        Ok(gitlinks
            .into_iter()
            .filter(|(_, id)| !repo.has_object(id))
            .map(|(path, id)| {
                format!(
                    "{path} is a nested git repository, committed as a link to its commit {}, \
                     which is in no repository braid can see: its files are not in the attempt's commit",
                    crate::report::short(&id.to_string())
                )
            })
            .collect())
    }

    /// Whether `commit` names a commit in the repository.
    pub fn has_commit(&self, commit: &str) -> bool {
        let Ok(id) = oid(commit) else {
            return false;
        };
        self.repo()
            .find_header(id)
            .is_ok_and(|header| header.kind() == gix::objs::Kind::Commit)
    }

    /// The tree of a commit.
    pub fn tree_of(&self, commit: &str) -> Result<String, MergeError> {
        let repo = self.repo();
        let commit = self.objects(oid(commit))?;
        Ok(self.objects(compose::tree_of(&repo, commit))?.to_string())
    }

    /// The paths that differ between two commits (no rename detection).
    pub fn changed_paths(&self, from: &str, to: &str) -> Result<Vec<String>, MergeError> {
        let repo = self.repo();
        let (from, to) = (self.objects(oid(from))?, self.objects(oid(to))?);
        self.objects(compose::changed_paths(&repo, from, to))
    }

    /// Points the branch `refname` at `commit`: creates it when `old` is `None` (and fails if
    /// it exists), else moves it from `old` (and fails if it has moved since). In process,
    /// with a reflog entry as `git update-ref` writes.
    pub fn set_ref(
        &self,
        refname: &str,
        commit: &str,
        old: Option<&str>,
    ) -> Result<(), MergeError> {
        self.set_refs(&[BranchMove {
            refname: refname.to_owned(),
            commit: commit.to_owned(),
            old: old.map(str::to_owned),
        }])
    }

    /// The branches whose full names start with `prefix`, and their commits.
    pub fn refs_under(&self, prefix: &str) -> Result<Vec<(String, String)>, MergeError> {
        let failed = |detail: String| MergeError::Objects {
            repo: self.dir.clone(),
            detail,
        };
        let repo = self.repo();
        let platform = repo.references().map_err(|e| failed(e.to_string()))?;
        let mut found = Vec::new();
        for reference in platform
            .prefixed(prefix)
            .map_err(|e| failed(e.to_string()))?
            .flatten()
        {
            if let Some(id) = reference.target().try_id() {
                found.push((reference.name().as_bstr().to_string(), id.to_string()));
            }
        }
        Ok(found)
    }

    /// Makes every move of `moves` in one transaction: all of them or none.
    pub fn set_refs(&self, moves: &[BranchMove]) -> Result<(), MergeError> {
        use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};
        let failed = |detail: String| MergeError::Objects {
            repo: self.dir.clone(),
            detail,
        };
        let repo = self.repo();
        let mut edits = Vec::with_capacity(moves.len());
        for BranchMove {
            refname,
            commit,
            old,
        } in moves
        {
            let id = self.objects(oid(commit))?;
            let expected = match old {
                None => PreviousValue::MustNotExist,
                Some(old) => PreviousValue::MustExistAndMatch(gix::refs::Target::Object(
                    self.objects(oid(old))?,
                )),
            };
            let name = refname.as_str().try_into().map_err(
                |e: gix::validate::reference::name::Error| {
                    failed(format!("bad branch name {refname}: {e}"))
                },
            )?;
            if !repo.has_object(id) {
                return Err(failed(format!("commit {commit} is not in the repository")));
            }
            edits.push(RefEdit {
                change: Change::Update {
                    log: LogChange {
                        mode: RefLog::AndReference,
                        force_create_reflog: false,
                        message: "braid".into(),
                    },
                    expected,
                    new: gix::refs::Target::Object(id),
                },
                name,
                deref: false,
            });
        }
        let time = gix::date::Time::now_utc();
        let mut buf = gix::date::parse::TimeBuf::default();
        let committer = gix::actor::SignatureRef {
            name: braid_shared::git::IDENTITY_NAME.into(),
            email: braid_shared::git::IDENTITY_EMAIL.into(),
            time: time.to_str(&mut buf),
        };
        repo.edit_references_as(edits, Some(committer))
            .map(drop)
            .map_err(|e| {
                let names: Vec<String> = moves
                    .iter()
                    .map(|m| format!("{} to {}", m.refname, m.commit))
                    .collect();
                failed(format!("could not set {}: {e}", names.join(", ")))
            })
    }

    /// The paths that differ between two commits, each with whether it was deleted.
    pub fn changes(&self, from: &str, to: &str) -> Result<Vec<(String, bool)>, MergeError> {
        let repo = self.repo();
        let (from, to) = (self.objects(oid(from))?, self.objects(oid(to))?);
        self.objects(compose::changed_paths_deleted(&repo, from, to))
    }

    /// The text of `path` in `tree`, when it is a text file.
    pub fn read_text(&self, tree: &str, path: &str) -> Result<Option<String>, MergeError> {
        let content = self.read_file(tree, path)?;
        Ok(content.as_deref().and_then(text_of).map(str::to_owned))
    }

    /// The bytes of `path` in `tree`; `None` when it is not a file there.
    pub fn read_file(&self, tree: &str, path: &str) -> Result<Option<Vec<u8>>, MergeError> {
        let repo = self.repo();
        let tree = self.objects(oid(tree))?;
        self.objects(compose::read_path(&repo, tree, path))
    }

    /// `tree` with the given files' contents replaced.
    pub fn replace_files(
        &self,
        tree: &str,
        files: &[(String, Vec<u8>)],
    ) -> Result<String, MergeError> {
        let repo = self.repo();
        let tree = self.objects(oid(tree))?;
        Ok(self
            .objects(compose::replace_files(&repo, tree, files))?
            .to_string())
    }
}

/// git's message with the commit ids it names the sides by replaced by "ours" and
/// "theirs", as the hunks call them; a path git made from an id (`file~<id>`) stays as is.
fn name_sides(message: &str, ours: &str, theirs: &str) -> String {
    let mut out = message.to_owned();
    for (id, name) in [(ours, "ours"), (theirs, "theirs")] {
        let mut result = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(at) = rest.find(id) {
            result.push_str(&rest[..at]);
            result.push_str(if result.ends_with('~') { id } else { name });
            rest = &rest[at + id.len()..];
        }
        result.push_str(rest);
        out = result;
    }
    out
}

/// A file's content as text, unless it looks binary (git's test: a NUL in the first 8000
/// bytes) or is not UTF-8.
fn text_of(bytes: &[u8]) -> Option<&str> {
    if bytes.iter().take(8000).any(|b| *b == 0) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

/// A dependency's winner, as a task's base is built from it.
#[derive(Debug, Clone)]
pub struct DepWinner {
    /// The task's id.
    pub id: String,
    /// The commit the task's attempts started from.
    pub base: String,
    /// The winning attempt's commit.
    pub commit: String,
}

/// The outcome of merging several winners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merged {
    /// They merged cleanly into this commit.
    Commit(String),
    /// They conflict.
    Conflict {
        /// The tasks whose changes conflict.
        tasks: Vec<String>,
        /// The conflicted paths.
        conflicts: Vec<PathConflict>,
    },
}

/// The base of task `task`: its deps' winners merged in the order given.
pub async fn task_base(
    merger: &Merger,
    task: &str,
    deps: &[DepWinner],
) -> Result<Merged, MergeError> {
    let Some((first, rest)) = deps.split_first() else {
        return Err(MergeError::Objects {
            repo: merger.dir.clone(),
            detail: format!("task {task} has no deps to start from"),
        });
    };
    let mut current = first.commit.clone();
    let mut merged = vec![first];
    for dep in rest {
        let names: Vec<&str> = merged.iter().map(|w| w.id.as_str()).collect();
        let message = format!(
            "braid: start {task} from {} and {}",
            names.join(", "),
            dep.id
        );
        match merger
            .merge_commits(&current, &dep.commit, &message)
            .await?
            .0
        {
            Step::Merged(commit) => {
                current = commit;
                merged.push(dep);
            }
            Step::Conflict { conflicts, .. } => {
                let paths: Vec<String> = conflicts.iter().map(|c| c.path.clone()).collect();
                let mut tasks = culprits(merger, &merged, &paths)?;
                tasks.push(dep.id.clone());
                return Ok(Merged::Conflict { tasks, conflicts });
            }
        }
    }
    Ok(Merged::Commit(current))
}

/// Whether a change to `changed` bears on the conflicted `path`: the same path, or one
/// inside the other (a file/directory conflict is told under the user's path).
fn touches(changed: &str, path: &str) -> bool {
    let inside =
        |a: &str, b: &str| a.len() > b.len() && a.starts_with(b) && a.as_bytes()[b.len()] == b'/';
    changed == path || inside(changed, path) || inside(path, changed)
}

/// The tasks among `merged` whose own changes touch one of `paths`.
pub fn culprits(
    merger: &Merger,
    merged: &[&DepWinner],
    paths: &[String],
) -> Result<Vec<String>, MergeError> {
    let mut tasks = Vec::new();
    for winner in merged {
        let changed = merger.changed_paths(&winner.base, &winner.commit)?;
        if changed.iter().any(|c| paths.iter().any(|p| touches(c, p))) {
            tasks.push(winner.id.clone());
        }
    }
    Ok(tasks)
}
