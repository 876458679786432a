//! Codex's patch format, as the built-in agent's `apply_patch` tool takes it:
//!
//! ```text
//! *** Begin Patch
//! *** Add File: src/new.rs
//! +line
//! *** Update File: src/old.rs
//! *** Move to: src/renamed.rs
//! @@ fn main
//!  context
//! -removed
//! +added
//! *** Delete File: src/gone.rs
//! *** End Patch
//! ```
//!
//! Every path is relative to the worktree and must stay inside it ([`super::tools::inside`]).
//! The whole patch is checked against the files before anything is written, so a patch that
//! does not apply changes nothing.

use std::path::{Path, PathBuf};

/// One file's change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new file with these lines.
    Add { path: String, lines: Vec<String> },
    /// A file removed.
    Delete { path: String },
    /// Hunks applied to a file, which may move.
    Update {
        path: String,
        to: Option<String>,
        hunks: Vec<Hunk>,
    },
}

/// Lines to find and what replaces them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hunk {
    /// A line to find first (`@@ fn main`), when given.
    pub anchor: Option<String>,
    /// The lines as they are (context and removed).
    pub old: Vec<String>,
    /// The lines as they become (context and added).
    pub new: Vec<String>,
    /// The hunk ends at the end of the file.
    pub at_end: bool,
}

/// Reads a patch.
pub fn parse(text: &str) -> Result<Vec<Change>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim() == "*** Begin Patch")
        .ok_or("the patch does not start with `*** Begin Patch`")?;
    let mut i = start + 1;
    let mut changes = Vec::new();
    let mut ended = false;
    while i < lines.len() {
        let line = lines[i];
        if line.trim() == "*** End Patch" {
            ended = true;
            break;
        }
        if let Some(path) = line.strip_prefix("*** Add File: ") {
            i += 1;
            let mut added = Vec::new();
            while i < lines.len() && !lines[i].starts_with("*** ") {
                let l = lines[i];
                added.push(
                    l.strip_prefix('+')
                        .ok_or_else(|| {
                            format!(
                                "line {}: a line of an added file must start with `+`",
                                i + 1
                            )
                        })?
                        .to_owned(),
                );
                i += 1;
            }
            changes.push(Change::Add {
                path: path.trim().to_owned(),
                lines: added,
            });
        } else if let Some(path) = line.strip_prefix("*** Delete File: ") {
            changes.push(Change::Delete {
                path: path.trim().to_owned(),
            });
            i += 1;
        } else if let Some(path) = line.strip_prefix("*** Update File: ") {
            i += 1;
            let mut to = None;
            if let Some(dest) = lines.get(i).and_then(|l| l.strip_prefix("*** Move to: ")) {
                to = Some(dest.trim().to_owned());
                i += 1;
            }
            let mut hunks = Vec::new();
            let mut hunk = Hunk::default();
            while i < lines.len() {
                let l = lines[i];
                if l == "*** End of File" {
                    hunk.at_end = true;
                    i += 1;
                    continue;
                }
                if l.starts_with("*** ") {
                    break;
                }
                if let Some(anchor) = l.strip_prefix("@@") {
                    if !hunk.old.is_empty() || !hunk.new.is_empty() {
                        hunks.push(std::mem::take(&mut hunk));
                    }
                    let anchor = anchor.trim();
                    hunk.anchor = (!anchor.is_empty()).then(|| anchor.to_owned());
                } else if let Some(rest) = l.strip_prefix('-') {
                    hunk.old.push(rest.to_owned());
                } else if let Some(rest) = l.strip_prefix('+') {
                    hunk.new.push(rest.to_owned());
                } else {
                    let rest = l.strip_prefix(' ').unwrap_or(l);
                    hunk.old.push(rest.to_owned());
                    hunk.new.push(rest.to_owned());
                }
                i += 1;
            }
            if !hunk.old.is_empty() || !hunk.new.is_empty() || hunk.anchor.is_some() {
                hunks.push(hunk);
            }
            if hunks.is_empty() && to.is_none() {
                return Err(format!("`*** Update File: {}` has no hunks", path.trim()));
            }
            changes.push(Change::Update {
                path: path.trim().to_owned(),
                to,
                hunks,
            });
        } else if line.trim().is_empty() {
            i += 1;
        } else {
            return Err(format!("line {}: unexpected {line:?}", i + 1));
        }
    }
    if !ended {
        return Err("the patch does not end with `*** End Patch`".into());
    }
    if changes.is_empty() {
        return Err("the patch changes no file".into());
    }
    Ok(changes)
}

/// What applying a patch will write: each path with its new content, `None` to remove.
type Writes = Vec<(PathBuf, Option<String>)>;

/// Applies `changes` under `root`; returns a line per file changed. Nothing is written
/// unless every change applies.
pub fn apply(root: &Path, changes: &[Change]) -> Result<Vec<String>, String> {
    let mut writes: Writes = Vec::new();
    let mut done = Vec::new();
    for change in changes {
        match change {
            Change::Add { path, lines } => {
                let target = super::tools::inside(root, path)?;
                if target.exists() {
                    return Err(format!(
                        "{path} already exists; update it instead of adding it"
                    ));
                }
                let mut text = lines.join("\n");
                text.push('\n');
                writes.push((target, Some(text)));
                done.push(format!("A {path}"));
            }
            Change::Delete { path } => {
                let target = super::tools::inside(root, path)?;
                if !target.is_file() {
                    return Err(format!("{path} does not exist"));
                }
                writes.push((target, None));
                done.push(format!("D {path}"));
            }
            Change::Update { path, to, hunks } => {
                let target = super::tools::inside(root, path)?;
                let text = std::fs::read_to_string(&target)
                    .map_err(|e| format!("cannot read {path}: {e}"))?;
                let updated = update(&text, hunks).map_err(|e| format!("{path}: {e}"))?;
                match to {
                    Some(dest) => {
                        let dest_path = super::tools::inside(root, dest)?;
                        writes.push((target, None));
                        writes.push((dest_path, Some(updated)));
                        done.push(format!("R {path} -> {dest}"));
                    }
                    None => {
                        writes.push((target, Some(updated)));
                        done.push(format!("M {path}"));
                    }
                }
            }
        }
    }
    for (path, content) in writes {
        match content {
            Some(text) => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| format!("cannot make {}: {e}", parent.display()))?;
                }
                std::fs::write(&path, text)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            }
            None => std::fs::remove_file(&path)
                .map_err(|e| format!("cannot remove {}: {e}", path.display()))?,
        }
    }
    Ok(done)
}

/// `text` with `hunks` applied in order.
fn update(text: &str, hunks: &[Hunk]) -> Result<String, String> {
    let ends_with_newline = text.ends_with('\n') || text.is_empty();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut cursor = 0;
    for hunk in hunks {
        if let Some(anchor) = &hunk.anchor {
            if let Some(at) = find(&lines[cursor..], std::slice::from_ref(anchor)) {
                cursor += at + 1;
            } else if let Some(at) = lines.iter().position(|l| l.trim() == anchor.trim()) {
                cursor = at + 1;
            }
        }
        if hunk.old.is_empty() {
            let at = if hunk.at_end { lines.len() } else { cursor };
            lines.splice(at..at, hunk.new.iter().cloned());
            cursor = at + hunk.new.len();
            continue;
        }
        let at = if hunk.at_end {
            let start = lines
                .len()
                .checked_sub(hunk.old.len())
                .ok_or("the hunk is longer than the file")?;
            same(&lines[start..], &hunk.old).then_some(start)
        } else {
            find(&lines[cursor..], &hunk.old)
                .map(|a| a + cursor)
                .or_else(|| find(&lines, &hunk.old))
        };
        let at = at.ok_or_else(|| {
            format!(
                "the lines to change were not found:\n{}",
                hunk.old.join("\n")
            )
        })?;
        lines.splice(at..at + hunk.old.len(), hunk.new.iter().cloned());
        cursor = at + hunk.new.len();
    }
    let mut out = lines.join("\n");
    if ends_with_newline && !out.is_empty() {
        out.push('\n');
    }
    Ok(out)
}

/// Where `wanted` first appears in `lines`: exactly, or else ignoring trailing whitespace.
fn find(lines: &[String], wanted: &[String]) -> Option<usize> {
    if wanted.len() > lines.len() {
        return None;
    }
    let windows = || lines.windows(wanted.len()).enumerate();
    windows()
        .find(|(_, w)| w == &wanted)
        .or_else(|| windows().find(|(_, w)| same(w, wanted)))
        .map(|(i, _)| i)
}

fn same(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.trim_end() == y.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_updates_moves_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("a.txt"), "one\ntwo\nthree\n").unwrap();
        std::fs::write(root.join("gone.txt"), "x\n").unwrap();
        let patch = "*** Begin Patch\n*** Add File: new/b.txt\n+hello\n+world\n\
                     *** Update File: a.txt\n*** Move to: c.txt\n@@\n one\n-two\n+TWO\n three\n\
                     *** Delete File: gone.txt\n*** End Patch\n";
        let changes = parse(patch).unwrap();
        let done = apply(root, &changes).unwrap();
        assert_eq!(done, ["A new/b.txt", "R a.txt -> c.txt", "D gone.txt"]);
        assert_eq!(
            std::fs::read_to_string(root.join("new/b.txt")).unwrap(),
            "hello\nworld\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("c.txt")).unwrap(),
            "one\nTWO\nthree\n"
        );
        assert!(!root.join("a.txt").exists());
        assert!(!root.join("gone.txt").exists());
    }

    #[test]
    fn a_patch_that_does_not_apply_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("a.txt"), "one\n").unwrap();
        let patch = "*** Begin Patch\n*** Add File: b.txt\n+b\n*** Update File: a.txt\n@@\n-nine\n+ten\n*** End Patch";
        let err = apply(root, &parse(patch).unwrap()).unwrap_err();
        assert!(err.contains("not found"), "{err}");
        assert!(!root.join("b.txt").exists());
    }

    #[test]
    fn paths_stay_inside_the_worktree() {
        let dir = tempfile::tempdir().unwrap();
        let patch = "*** Begin Patch\n*** Add File: ../escape.txt\n+x\n*** End Patch";
        let err = apply(dir.path(), &parse(patch).unwrap()).unwrap_err();
        assert!(err.contains("outside"), "{err}");
        assert!(parse("no patch").is_err());
    }
}
