//! Path scopes: the `paths:` globs of a check, matched against the paths a change touches.
//!
//! A glob is matched against the whole path from the repository root, with `/` as a
//! separator that `*` does not cross: `src/*.rs` matches `src/a.rs` but not `src/x/a.rs`,
//! `src/**` matches everything under `src/`, and `**/*.md` matches Markdown files anywhere.

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// A set of globs, ready to match.
#[derive(Debug, Clone)]
pub struct PathScope {
    globs: Vec<String>,
    set: GlobSet,
}

/// Many owners' globs in one set: which owners' globs match a path, in one pass over the
/// path however many owners there are.
#[derive(Debug, Clone)]
pub struct GlobIndex {
    set: GlobSet,
    /// The owner of each glob, in the order they were added.
    owners: Vec<usize>,
}

impl GlobIndex {
    /// The index of each owner's globs; globs that do not parse are left out (the plan's
    /// loader reports them).
    pub fn new<S: AsRef<str>>(owners: impl IntoIterator<Item = (usize, S)>) -> Self {
        let mut builder = GlobSetBuilder::new();
        let mut owner_of = Vec::new();
        for (owner, text) in owners {
            if let Ok(g) = glob(text.as_ref()) {
                builder.add(g);
                owner_of.push(owner);
            }
        }
        let set = builder.build().unwrap_or_else(|_| GlobSet::empty());
        GlobIndex {
            set,
            owners: owner_of,
        }
    }

    /// The owners with a glob that matches `path`, ascending, each once.
    pub fn owners_of(&self, path: &str) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .set
            .matches(path)
            .into_iter()
            .map(|g| self.owners[g])
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// A glob that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad glob {glob:?}: {reason}")]
pub struct BadGlob {
    /// The glob as written.
    pub glob: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Parses one glob with braid's rules.
pub fn glob(text: &str) -> Result<Glob, BadGlob> {
    GlobBuilder::new(text)
        .literal_separator(true)
        .backslash_escape(true)
        .empty_alternates(true)
        .build()
        .map_err(|err| BadGlob {
            glob: text.to_owned(),
            reason: err.kind().to_string(),
        })
}

impl PathScope {
    /// The scope of `globs`.
    pub fn new<S: AsRef<str>>(globs: &[S]) -> Result<Self, BadGlob> {
        let mut builder = GlobSetBuilder::new();
        for text in globs {
            builder.add(glob(text.as_ref())?);
        }
        let set = builder.build().map_err(|err| BadGlob {
            glob: globs
                .iter()
                .map(|g| g.as_ref())
                .collect::<Vec<_>>()
                .join(", "),
            reason: err.to_string(),
        })?;
        Ok(PathScope {
            globs: globs.iter().map(|g| g.as_ref().to_owned()).collect(),
            set,
        })
    }

    /// The first of `paths` the scope matches.
    pub fn first_match<'a, S: AsRef<str>>(&self, paths: &'a [S]) -> Option<&'a str> {
        paths
            .iter()
            .map(AsRef::as_ref)
            .find(|p| self.set.is_match(p))
    }

    /// Every one of `paths` the scope matches, in order.
    pub fn matches<'a, S: AsRef<str>>(&self, paths: &'a [S]) -> Vec<&'a str> {
        paths
            .iter()
            .map(AsRef::as_ref)
            .filter(|p| self.set.is_match(p))
            .collect()
    }

    /// The globs, as written, joined for a sentence.
    pub fn describe(&self) -> String {
        self.globs.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_paths() {
        let scope = PathScope::new(&["src/**", "*.toml", "docs/*.md"]).unwrap();
        assert_eq!(
            scope.first_match(&["README.md", "src/a/b.rs"]),
            Some("src/a/b.rs")
        );
        assert_eq!(scope.first_match(&["Cargo.toml"]), Some("Cargo.toml"));
        assert_eq!(scope.first_match(&["x/Cargo.toml"]), None);
        assert_eq!(scope.first_match(&["docs/a/b.md", "srcx/a"]), None);
        assert_eq!(scope.first_match(&["docs/b.md"]), Some("docs/b.md"));
        let anywhere = PathScope::new(&["**/*.md"]).unwrap();
        assert_eq!(anywhere.first_match(&["a/b/c.md"]), Some("a/b/c.md"));
        assert_eq!(anywhere.first_match(&["c.md"]), Some("c.md"));
    }

    #[test]
    fn bad_globs_are_named() {
        let err = PathScope::new(&["src/[a"]).unwrap_err();
        assert_eq!(err.glob, "src/[a");
        assert!(err.reason.contains("unclosed"), "{}", err.reason);
    }
}

/// Whether `path` is a plain relative path: not empty, not absolute, only names between
/// its slashes (no `.`, no `..`), as a folder of a repository is written from its root.
pub fn plain_relative(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

#[cfg(test)]
mod plain_tests {
    use super::plain_relative;

    #[test]
    fn only_names_between_slashes() {
        for good in ["a", "services/auth", "x/y/", "{{dir}}"] {
            assert!(plain_relative(good), "{good}");
        }
        for bad in ["", "/abs", "../up", "a/../b", "./a", "a//b"] {
            assert!(!plain_relative(bad), "{bad}");
        }
    }
}
