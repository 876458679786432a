//! Which pairs of winners a trial merge can find in conflict.
//!
//! A trial merge of every finished winner with every other is quadratic: 400 tasks make
//! 80,000 merges, each in the coordinator's loop. Two changes can only conflict where they
//! meet: the same path, or a file on one side where the other has a folder, or, through
//! git's directory-rename detection, a folder one side deleted from and the other touched.
//! So a pair whose footprints do not meet is not merged on trial. The integration still
//! merges every winner, so nothing is missed there; a prediction is an early warning.

use std::collections::HashSet;

/// The paths a change touched, with the folders around them.
#[derive(Debug, Default, Clone)]
pub struct Footprint {
    paths: HashSet<String>,
    /// Every folder above each path.
    ancestors: HashSet<String>,
    /// The folder of each path.
    parents: HashSet<String>,
    /// The folder of each deleted path: where a directory rename can start.
    emptied: HashSet<String>,
}

/// The folder that holds `path` ("" at the top).
fn parent(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..i])
}

impl Footprint {
    /// The footprint of a change: its paths (slash-separated, relative to the top), each
    /// with whether it was deleted.
    pub fn of<S: AsRef<str>>(changes: &[(S, bool)]) -> Self {
        let mut footprint = Footprint::default();
        for (path, deleted) in changes {
            let path = path.as_ref();
            footprint.paths.insert(path.to_owned());
            footprint.parents.insert(parent(path).to_owned());
            if *deleted {
                footprint.emptied.insert(parent(path).to_owned());
            }
            for (i, _) in path.match_indices('/') {
                footprint.ancestors.insert(path[..i].to_owned());
            }
        }
        footprint
    }

    /// Whether a change with this footprint can conflict with one with `other`.
    pub fn meets(&self, other: &Footprint) -> bool {
        let one_way = |a: &Footprint, b: &Footprint| {
            a.paths
                .iter()
                .any(|p| b.paths.contains(p) || b.ancestors.contains(p))
                || a.emptied
                    .iter()
                    .any(|d| b.parents.contains(d) || b.ancestors.contains(d))
        };
        one_way(self, other) || one_way(other, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meets(a: &[(&str, bool)], b: &[(&str, bool)]) -> bool {
        let (a, b) = (Footprint::of(a), Footprint::of(b));
        assert_eq!(a.meets(&b), b.meets(&a), "symmetric");
        a.meets(&b)
    }

    #[test]
    fn changes_meet_on_a_path_a_file_in_place_of_a_folder_or_an_emptied_folder() {
        let edit = |p| (p, false);
        let delete = |p| (p, true);
        assert!(meets(
            &[edit("svc/a/x.rs")],
            &[edit("svc/a/x.rs"), edit("svc/b/y.rs")]
        ));
        assert!(
            meets(&[edit("svc/a")], &[edit("svc/a/x.rs")]),
            "a file where a folder is"
        );
        assert!(
            meets(
                &[delete("svc/a/x.rs"), edit("svc/c/x.rs")],
                &[edit("svc/a/new.rs")]
            ),
            "a folder renamed on one side, added to on the other"
        );
        assert!(
            meets(
                &[delete("svc/a/deep/x.rs")],
                &[edit("svc/a/deep/more/y.rs")]
            ),
            "below an emptied folder"
        );
        assert!(
            !meets(&[edit("svc/a/x.rs")], &[edit("svc/a/z.rs")]),
            "neighbours"
        );
        assert!(
            !meets(&[edit("t1.txt")], &[edit("t2.txt")]),
            "new files at the top"
        );
        assert!(!meets(&[edit("svc/a/x.rs")], &[edit("svc/b/x.rs")]));
        assert!(!meets(&[], &[edit("a.txt")]), "no change meets nothing");
    }
}
