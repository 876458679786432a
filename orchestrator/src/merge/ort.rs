//! git's own merge, merge-ort, run as `git merge-tree --write-tree` and read in full: the
//! tree, the conflicted stages and the messages that say what kind each conflict is.
//!
//! Only objects are written. The conflict style is diff3, so a conflicted file in the tree
//! carries the base text between its markers as well as both sides.

use std::collections::BTreeMap;

use braid_shared::git::{Git, GitError};
use serde::{Deserialize, Serialize};

/// What kind of conflict a path has, as merge-ort describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ConflictKind {
    /// Both sides changed the same lines of a text file.
    #[serde(rename = "content")]
    Content,
    /// Both sides added different files at the same path (or a rename met an add there).
    #[serde(rename = "add/add")]
    AddAdd,
    /// One side changed a file the other deleted.
    #[serde(rename = "modify/delete")]
    ModifyDelete,
    /// Both sides renamed the same file, differently, or two files to one path.
    #[serde(rename = "rename/rename")]
    RenameRename,
    /// One side renamed a file the other deleted.
    #[serde(rename = "rename/delete")]
    RenameDelete,
    /// A file on one side where the other has a directory.
    #[serde(rename = "file/directory")]
    FileDirectory,
    /// A path added inside a directory the other side renamed; git leaves it where it was
    /// and asks.
    #[serde(rename = "directory rename")]
    DirectoryRename,
    /// The sides gave the path different types (file, symlink, submodule).
    #[serde(rename = "mode")]
    Mode,
    /// Both sides changed a binary file.
    #[serde(rename = "binary")]
    Binary,
    /// A submodule both sides moved.
    #[serde(rename = "submodule")]
    Submodule,
    /// A conflict git names in a way braid does not know.
    #[serde(rename = "other")]
    Other,
}

impl ConflictKind {
    /// The kind's name, as in report.json.
    pub fn name(self) -> &'static str {
        match self {
            ConflictKind::Content => "content",
            ConflictKind::AddAdd => "add/add",
            ConflictKind::ModifyDelete => "modify/delete",
            ConflictKind::RenameRename => "rename/rename",
            ConflictKind::RenameDelete => "rename/delete",
            ConflictKind::FileDirectory => "file/directory",
            ConflictKind::DirectoryRename => "directory rename",
            ConflictKind::Mode => "mode",
            ConflictKind::Binary => "binary",
            ConflictKind::Submodule => "submodule",
            ConflictKind::Other => "other",
        }
    }

    /// Reads merge-ort's conflict type (a stable string) and the message's text; `None` for
    /// messages that are not conflicts, such as "Auto-merging".
    fn from_message(kind: &str, text: &str) -> Option<Self> {
        if !kind.starts_with("CONFLICT") {
            return None;
        }
        Some(match kind {
            "CONFLICT (contents)" if text.starts_with("CONFLICT (add/add)") => ConflictKind::AddAdd,
            "CONFLICT (contents)" => ConflictKind::Content,
            "CONFLICT (binary)" => ConflictKind::Binary,
            "CONFLICT (modify/delete)" => ConflictKind::ModifyDelete,
            "CONFLICT (file/directory)" => ConflictKind::FileDirectory,
            "CONFLICT (distinct modes)" | "CONFLICT (distinct types)" => ConflictKind::Mode,
            "CONFLICT (rename/rename)" => ConflictKind::RenameRename,
            "CONFLICT (rename involved in collision)" => ConflictKind::AddAdd,
            "CONFLICT (rename/delete)" => ConflictKind::RenameDelete,
            k if k.contains("directory rename") => ConflictKind::DirectoryRename,
            k if k.contains("submodule") => ConflictKind::Submodule,
            _ => ConflictKind::Other,
        })
    }

    /// Which kind names a path best when git gave it several: the most specific first.
    fn rank(self) -> u8 {
        match self {
            ConflictKind::Binary => 0,
            ConflictKind::DirectoryRename => 1,
            ConflictKind::RenameRename => 2,
            ConflictKind::RenameDelete => 3,
            ConflictKind::ModifyDelete => 4,
            ConflictKind::FileDirectory => 5,
            ConflictKind::Mode => 6,
            ConflictKind::Submodule => 7,
            ConflictKind::AddAdd => 8,
            ConflictKind::Content => 9,
            ConflictKind::Other => 10,
        }
    }
}

/// One conflicted index entry of the merge: a path at stage 1 (base), 2 (ours) or 3 (theirs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The entry's mode, in octal.
    pub mode: String,
    /// The object.
    pub oid: String,
    /// 1, 2 or 3.
    pub stage: u8,
}

/// A conflicted path as merge-ort left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrtPath {
    /// The path.
    pub path: String,
    /// Its kind.
    pub kind: ConflictKind,
    /// Its stages.
    pub stages: Vec<Stage>,
    /// git's messages about it.
    pub messages: Vec<String>,
    /// For a file/directory conflict: where git put each side, in a sentence (git moves
    /// the file aside to `path~<side>` and keeps the folder at `path`).
    pub placed: Option<String>,
    /// For a file/directory conflict: the path git moved the file to, `path~<commit>`.
    pub moved_to: Option<String>,
}

/// What `git merge-tree --write-tree` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrtMerge {
    /// The merged tree; conflicted files hold conflict markers.
    pub tree: String,
    /// The conflicted paths, sorted; empty when the merge is clean.
    pub conflicts: Vec<OrtPath>,
}

/// Runs merge-ort on two commits.
pub async fn merge_tree(git: &Git, ours: &str, theirs: &str) -> Result<OrtMerge, GitError> {
    let args = [
        "-c",
        "merge.conflictStyle=diff3",
        "merge-tree",
        "--write-tree",
        "-z",
        ours,
        theirs,
    ];
    let (code, stdout, stderr) = git.raw(&args).await?;
    match code {
        0 | 1 => parse(&stdout).ok_or_else(|| GitError::Unreadable {
            args: args.join(" "),
            detail: "unexpected output from git merge-tree".into(),
        }),
        _ => Err(git.failed(&args, stderr)),
    }
}

/// Reads `git merge-tree --write-tree -z` output: the tree, then (when conflicted) stage
/// entries `<mode> <oid> <stage>\t<path>` up to an empty field, then messages, each
/// `<count>`, that many paths, a conflict type and a text.
fn parse(out: &str) -> Option<OrtMerge> {
    let mut fields = out.split('\0').peekable();
    let tree = fields.next()?.trim().to_owned();
    let mut paths: BTreeMap<String, OrtPath> = BTreeMap::new();
    while let Some(field) = fields.next_if(|f| !f.is_empty()) {
        let (info, path) = field.split_once('\t')?;
        let mut parts = info.split(' ');
        let (mode, oid, stage) = (parts.next()?, parts.next()?, parts.next()?);
        let entry = paths.entry(path.to_owned()).or_insert_with(|| OrtPath {
            path: path.to_owned(),
            kind: ConflictKind::Other,
            stages: Vec::new(),
            messages: Vec::new(),
            placed: None,
            moved_to: None,
        });
        entry.stages.push(Stage {
            mode: mode.to_owned(),
            oid: oid.to_owned(),
            stage: stage.parse().ok()?,
        });
    }
    fields.next_if(|f| f.is_empty());
    let mut kinds: BTreeMap<String, ConflictKind> = BTreeMap::new();
    while let Some(count) = fields.next_if(|f| !f.is_empty()) {
        let count: usize = count.parse().ok()?;
        let named: Vec<&str> = (0..count).map(|_| fields.next()).collect::<Option<_>>()?;
        let (kind, text) = (fields.next()?, fields.next()?);
        let Some(kind) = ConflictKind::from_message(kind, text) else {
            continue;
        };
        for name in named {
            if let Some(entry) = paths.get_mut(name) {
                entry.messages.push(text.trim_end().to_owned());
                let best = kinds.entry(name.to_owned()).or_insert(kind);
                if kind.rank() < best.rank() {
                    *best = kind;
                }
            }
        }
    }
    for (path, kind) in kinds {
        if let Some(entry) = paths.get_mut(&path) {
            entry.kind = kind;
        }
    }
    let mut conflicts: Vec<OrtPath> = paths.into_values().map(at_users_path).collect();
    conflicts.sort_by(|a, b| a.path.cmp(&b.path));
    Some(OrtMerge { tree, conflicts })
}

/// A file/directory conflict is listed by git under the path it moved the file to
/// (`c13~<commit>`); the user's path is `c13`, where the folder stays.
fn at_users_path(mut entry: OrtPath) -> OrtPath {
    if entry.kind != ConflictKind::FileDirectory {
        return entry;
    }
    let moved = entry.messages.iter().find_map(|m| {
        let (_, rest) = m.split_once("moving it to ")?;
        rest.strip_suffix(" instead.").map(str::to_owned)
    });
    let Some(moved) = moved.filter(|m| *m == entry.path) else {
        return entry;
    };
    let Some((user, _)) = moved.rsplit_once('~') else {
        return entry;
    };
    let (file_side, folder_side) = if entry.stages.iter().any(|s| s.stage == 2) {
        ("ours", "theirs")
    } else {
        ("theirs", "ours")
    };
    entry.placed = Some(format!(
        "{file_side}: a file, which git moved to {moved}; {folder_side}: a folder, kept at {user}/"
    ));
    entry.path = user.to_owned();
    entry.moved_to = Some(moved);
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stages_and_kinds() {
        let out = "9fb2\0\
            100644 e61e 2\taddadd\x00100644 e0b3 3\taddadd\0\
            100644 587b 1\tdel\x00100644 b77b 3\tdel\0\
            100644 87ae 1\tbin\x00100644 a1f9 2\tbin\x00100644 8273 3\tbin\0\0\
            1\0addadd\0Auto-merging\0Auto-merging addadd\n\0\
            1\0addadd\0CONFLICT (contents)\0CONFLICT (add/add): Merge conflict in addadd\n\0\
            1\0bin\0CONFLICT (binary)\0warning: Cannot merge binary files: bin (ours vs. theirs)\n\0\
            1\0bin\0CONFLICT (contents)\0CONFLICT (content): Merge conflict in bin\n\0\
            1\0del\0CONFLICT (modify/delete)\0CONFLICT (modify/delete): del deleted in ours\n\0";
        let merge = parse(out).unwrap();
        assert_eq!(merge.tree, "9fb2");
        let kinds: Vec<(&str, ConflictKind, usize)> = merge
            .conflicts
            .iter()
            .map(|p| (p.path.as_str(), p.kind, p.stages.len()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("addadd", ConflictKind::AddAdd, 2),
                ("bin", ConflictKind::Binary, 3),
                ("del", ConflictKind::ModifyDelete, 2),
            ]
        );
        assert_eq!(merge.conflicts[1].messages.len(), 2);
    }

    #[test]
    fn clean_merges_have_no_conflicts() {
        let merge = parse("28dc\0").unwrap();
        assert_eq!(merge.tree, "28dc");
        assert!(merge.conflicts.is_empty());
        let merge = parse("28dc\0\x001\0f\0Auto-merging\0Auto-merging f\n\0").unwrap();
        assert!(merge.conflicts.is_empty());
    }
}
