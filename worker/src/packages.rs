//! Workspace packages, and which of them a change affects: what a check with
//! `per: package` runs for.
//!
//! A repository may hold packages of several kinds at once. Each kind is found the way its
//! own tools find it:
//! - Cargo: `cargo metadata --no-deps` for a workspace at the root (its members, their
//!   path dependencies); crates outside one are read from their own `Cargo.toml`.
//! - npm, pnpm and yarn: the root `package.json`'s `workspaces` or `pnpm-workspace.yaml`'s
//!   `packages`; without either, every `package.json`. Dependencies are the members named in
//!   `dependencies`, `devDependencies`, `peerDependencies` and `optionalDependencies`.
//! - Go: the modules `go.work` uses, or every `go.mod`; a module depends on the modules it
//!   requires.
//! - Python: every `pyproject.toml`; a project depends on the projects its dependencies
//!   name (PEP 503 normalised).
//!
//! A changed path belongs to the package whose folder holds it most closely. A root file
//! a kind's packages share (a lock file, the workspace manifest) affects every package of
//! that kind, and a package that depends on an affected one is affected too.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::Path;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::Bfs;

/// The kinds of package braid knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Cargo,
    Node,
    Go,
    Python,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Cargo => "Cargo",
            Kind::Node => "npm",
            Kind::Go => "Go",
            Kind::Python => "Python",
        })
    }
}

/// One package of the workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    /// Its folder from the repository's root; empty for the root.
    pub dir: String,
    pub kind: Kind,
    /// The workspace packages it depends on, by index into [`Workspace::packages`].
    pub deps: Vec<usize>,
}

/// The packages of a repository, and the root files each kind's packages share.
#[derive(Debug, Clone, Default)]
pub struct Workspace {
    pub packages: Vec<Package>,
    pub shared: BTreeMap<String, Kind>,
}

/// A package a change affects, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Affected {
    pub package: usize,
    pub why: String,
}

/// A package as found, its dependencies still names (or, for Cargo, folders).
#[derive(Debug, Default)]
struct Found {
    name: String,
    dir: String,
    deps: Vec<Dep>,
}

#[derive(Debug)]
enum Dep {
    Name(String),
    Dir(String),
}

/// Folders never searched for manifests: what package managers and builds put there.
const SKIPPED: &[&str] = &["node_modules", "target", "__pycache__", "venv"];

/// The files of the worktree at `root`, from its root, `/`-separated: hidden folders and
/// build folders left out, links not followed.
pub fn files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let walk = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            e.depth() == 0
                || !e.file_type().is_dir()
                || !(e.file_name().to_string_lossy().starts_with('.')
                    || SKIPPED.contains(&e.file_name().to_string_lossy().as_ref()))
        });
    for entry in walk.flatten() {
        if !entry.file_type().is_file() {
            continue;
        }
        if let Ok(rel) = entry.path().strip_prefix(root)
            && let Some(rel) = rel.to_str()
        {
            out.push(rel.replace('\\', "/"));
        }
    }
    out
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

fn file_name(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, name)| name)
}

/// Joins `dir` and a relative path, folding `.` and `..`; `None` when it leaves the root.
fn join(dir: &str, rel: &str) -> Option<String> {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// PEP 503: lower case, runs of `-`, `_` and `.` as one `-`.
fn normal(name: &str) -> String {
    let mut out = String::new();
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// The name a PEP 508 requirement is for (`requests[socks]>=2; python_version<"3.8"`).
fn requirement_name(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .unwrap_or(text.len());
    &text[..end]
}

/// Whether the folder `dir` matches one of a workspace's member globs (`!` ones exclude).
fn member_of(globs: &[String], dir: &str) -> bool {
    let mut included = false;
    for glob in globs {
        let (negated, glob) = match glob.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, glob.as_str()),
        };
        let glob = glob.trim_start_matches("./").trim_end_matches('/');
        let Ok(glob) = braid_shared::paths::glob(glob) else {
            continue;
        };
        if glob.compile_matcher().is_match(dir) {
            included = !negated;
        }
    }
    included
}

/// npm, pnpm and yarn packages.
fn node(files: &[String], read: &dyn Fn(&str) -> Option<String>) -> (Vec<Found>, Vec<String>) {
    let manifest =
        |path: &str| -> Option<serde_json::Value> { serde_json::from_str(&read(path)?).ok() };
    let root = manifest("package.json");
    let mut globs: Option<Vec<String>> = root.as_ref().and_then(|r| {
        let w = r.get("workspaces")?;
        let list = w.get("packages").unwrap_or(w).as_array()?;
        Some(
            list.iter()
                .filter_map(|g| g.as_str().map(str::to_owned))
                .collect(),
        )
    });
    if let Some(text) = read("pnpm-workspace.yaml") {
        #[derive(serde::Deserialize)]
        struct Pnpm {
            #[serde(default)]
            packages: Vec<String>,
        }
        if let Ok(p) = serde_saphyr::from_str::<Pnpm>(&text) {
            globs.get_or_insert_with(Vec::new).extend(p.packages);
        }
    }
    let mut found = Vec::new();
    for path in files.iter().filter(|p| file_name(p) == "package.json") {
        let dir = parent(path);
        let member = match &globs {
            Some(globs) => dir.is_empty() || member_of(globs, dir),
            None => true,
        };
        let Some(m) = manifest(path).filter(|_| member) else {
            continue;
        };
        // A workspace's root is its members' frame, not a package of its own.
        if dir.is_empty() && globs.is_some() {
            continue;
        }
        let mut deps = Vec::new();
        for table in [
            "dependencies",
            "devDependencies",
            "peerDependencies",
            "optionalDependencies",
        ] {
            if let Some(t) = m.get(table).and_then(|t| t.as_object()) {
                deps.extend(t.keys().map(|k| Dep::Name(k.clone())));
            }
        }
        found.push(Found {
            name: m
                .get("name")
                .and_then(|n| n.as_str())
                .map_or_else(|| file_name(dir).to_owned(), str::to_owned),
            dir: dir.to_owned(),
            deps,
        });
    }
    let mut shared: Vec<String> = [
        "package-lock.json",
        "npm-shrinkwrap.json",
        "yarn.lock",
        "pnpm-lock.yaml",
        "pnpm-workspace.yaml",
        ".npmrc",
        ".yarnrc.yml",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if globs.is_some() {
        shared.push("package.json".into());
    }
    (found, shared)
}

/// Go modules.
fn go(files: &[String], read: &dyn Fn(&str) -> Option<String>) -> (Vec<Found>, Vec<String>) {
    let used: Option<Vec<String>> = read("go.work").map(|text| {
        let mut dirs = Vec::new();
        let mut block = false;
        for line in text.lines() {
            let line = line.split("//").next().unwrap_or("").trim();
            if block {
                if line == ")" {
                    block = false;
                } else if !line.is_empty() {
                    dirs.push(line.trim_matches('"').to_owned());
                }
            } else if let Some(rest) = line.strip_prefix("use") {
                let rest = rest.trim();
                if rest == "(" {
                    block = true;
                } else if !rest.is_empty() {
                    dirs.push(rest.trim_matches('"').to_owned());
                }
            }
        }
        dirs.iter().filter_map(|d| join("", d)).collect()
    });
    let mut found = Vec::new();
    for path in files.iter().filter(|p| file_name(p) == "go.mod") {
        let dir = parent(path);
        if used.as_ref().is_some_and(|u| !u.iter().any(|d| d == dir)) {
            continue;
        }
        let Some(text) = read(path) else { continue };
        let mut name = String::new();
        let mut deps = Vec::new();
        let mut block: Option<&str> = None;
        for line in text.lines() {
            let line = line.split("//").next().unwrap_or("").trim();
            let (directive, rest) = match block {
                Some(_) if line == ")" => {
                    block = None;
                    continue;
                }
                Some(d) => (d, line),
                None => match line.split_once(char::is_whitespace) {
                    Some((d, rest)) => (d, rest.trim()),
                    None => continue,
                },
            };
            if rest == "(" {
                block = Some(directive);
                continue;
            }
            match directive {
                "module" => name = rest.trim_matches('"').to_owned(),
                "require" => {
                    if let Some(module) = rest.split_whitespace().next() {
                        deps.push(Dep::Name(module.trim_matches('"').to_owned()));
                    }
                }
                "replace" => {
                    // `replace example.com/x => ../x`: a module of this repository.
                    if let Some((_, to)) = rest.split_once("=>") {
                        let to = to.split_whitespace().next().unwrap_or("");
                        if (to.starts_with("./") || to.starts_with("../"))
                            && let Some(d) = join(dir, to)
                        {
                            deps.push(Dep::Dir(d));
                        }
                    }
                }
                _ => {}
            }
        }
        if name.is_empty() {
            name = file_name(dir).to_owned();
        }
        found.push(Found {
            name,
            dir: dir.to_owned(),
            deps,
        });
    }
    (found, vec!["go.work".into(), "go.work.sum".into()])
}

/// Python projects.
fn python(files: &[String], read: &dyn Fn(&str) -> Option<String>) -> (Vec<Found>, Vec<String>) {
    let mut found = Vec::new();
    for path in files.iter().filter(|p| file_name(p) == "pyproject.toml") {
        let dir = parent(path);
        let Some(doc) = read(path).and_then(|t| t.parse::<toml::Table>().ok()) else {
            continue;
        };
        let at = |keys: &[&str]| -> Option<&toml::Value> {
            let mut value = doc.get(keys[0])?;
            for key in &keys[1..] {
                value = value.get(key)?;
            }
            Some(value)
        };
        let name = at(&["project", "name"])
            .or_else(|| at(&["tool", "poetry", "name"]))
            .and_then(|n| n.as_str())
            .map_or_else(|| file_name(dir).to_owned(), str::to_owned);
        let mut deps = Vec::new();
        let mut strings = |value: Option<&toml::Value>| {
            for item in value.and_then(|v| v.as_array()).into_iter().flatten() {
                if let Some(text) = item.as_str() {
                    deps.push(Dep::Name(normal(requirement_name(text))));
                }
            }
        };
        strings(at(&["project", "dependencies"]));
        for table in [
            at(&["project", "optional-dependencies"]),
            doc.get("dependency-groups"),
        ]
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_table())
        {
            for list in table.values() {
                strings(Some(list));
            }
        }
        for table in [
            at(&["tool", "poetry", "dependencies"]),
            at(&["tool", "poetry", "dev-dependencies"]),
            at(&["tool", "uv", "sources"]),
        ]
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_table())
        {
            deps.extend(table.keys().map(|k| Dep::Name(normal(k))));
        }
        found.push(Found {
            name: normal(&name),
            dir: dir.to_owned(),
            deps,
        });
    }
    (found, vec!["uv.lock".into(), "poetry.lock".into()])
}

/// A crate's path dependencies, from its own `Cargo.toml`.
fn cargo_crate(dir: &str, text: &str) -> Option<Found> {
    let doc = text.parse::<toml::Table>().ok()?;
    let name = doc.get("package")?.get("name")?.as_str()?.to_owned();
    let mut deps = Vec::new();
    let mut tables: Vec<&toml::Table> = ["dependencies", "dev-dependencies", "build-dependencies"]
        .iter()
        .filter_map(|t| doc.get(*t)?.as_table())
        .collect();
    if let Some(targets) = doc.get("target").and_then(|t| t.as_table()) {
        for target in targets.values() {
            for t in ["dependencies", "dev-dependencies", "build-dependencies"] {
                if let Some(table) = target.get(t).and_then(|t| t.as_table()) {
                    tables.push(table);
                }
            }
        }
    }
    for table in tables {
        for spec in table.values() {
            if let Some(path) = spec.get("path").and_then(|p| p.as_str())
                && let Some(d) = join(dir, path)
            {
                deps.push(Dep::Dir(d));
            }
        }
    }
    Some(Found {
        name,
        dir: dir.to_owned(),
        deps,
    })
}

/// The members of a Cargo workspace, from `cargo metadata --no-deps --format-version 1`
/// run at `root`.
pub fn cargo_metadata(
    json: &str,
    root: &Path,
) -> Result<Vec<(String, String, Vec<String>)>, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("cargo metadata printed no JSON: {e}"))?;
    let relative = |path: &str| -> Option<String> {
        let path = Path::new(path);
        let rel = path
            .strip_prefix(root)
            .ok()
            .or_else(|| path.strip_prefix(std::fs::canonicalize(root).ok()?).ok())?;
        Some(rel.to_str()?.replace('\\', "/"))
    };
    let mut out = Vec::new();
    for package in value["packages"].as_array().into_iter().flatten() {
        let name = package["name"].as_str().unwrap_or_default().to_owned();
        let Some(manifest) = package["manifest_path"].as_str().and_then(relative) else {
            continue;
        };
        let deps = package["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| relative(d["path"].as_str()?))
            .collect();
        out.push((name, parent(&manifest).to_owned(), deps));
    }
    Ok(out)
}

impl Workspace {
    /// The packages of a repository whose files are `files`, read with `read`;
    /// `cargo_members` holds a root Cargo workspace's members as [`cargo_metadata`] gives
    /// them.
    pub fn find(
        files: &[String],
        read: &dyn Fn(&str) -> Option<String>,
        cargo_members: Option<Vec<(String, String, Vec<String>)>>,
    ) -> Workspace {
        let mut kinds: Vec<(Kind, Vec<Found>, Vec<String>)> = Vec::new();
        let mut crates = Vec::new();
        let covered: BTreeSet<String> = cargo_members
            .iter()
            .flatten()
            .map(|(_, dir, _)| dir.clone())
            .collect();
        for (name, dir, deps) in cargo_members.into_iter().flatten() {
            crates.push(Found {
                name,
                dir,
                deps: deps.into_iter().map(Dep::Dir).collect(),
            });
        }
        // Without `cargo metadata`, a root workspace's `members` and `exclude` globs say
        // which crates are its members; crates outside it stand alone.
        let root = read("Cargo.toml").and_then(|t| t.parse::<toml::Table>().ok());
        let globs = |key: &str| -> Vec<String> {
            root.as_ref()
                .and_then(|r| r.get("workspace")?.get(key)?.as_array().cloned())
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        };
        let (members, excluded) = (globs("members"), globs("exclude"));
        let declared = root.as_ref().is_some_and(|r| r.contains_key("workspace"));
        let workspace_root = !covered.is_empty() || declared;
        for path in files.iter().filter(|p| file_name(p) == "Cargo.toml") {
            let dir = parent(path);
            if covered.contains(dir) {
                continue;
            }
            if dir.is_empty()
                && workspace_root
                && !root.as_ref().is_some_and(|r| r.contains_key("package"))
            {
                continue;
            }
            // Below a workspace, a crate its globs leave out is not one of its packages.
            let listed = member_of(&members, dir) && !member_of(&excluded, dir);
            if covered.is_empty() && declared && !dir.is_empty() && !listed {
                continue;
            }
            if let Some(found) = read(path).and_then(|t| cargo_crate(dir, &t)) {
                crates.push(found);
            }
        }
        let mut cargo_shared: Vec<String> = [
            "Cargo.lock",
            ".cargo/config.toml",
            "rust-toolchain.toml",
            "rust-toolchain",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if workspace_root {
            cargo_shared.push("Cargo.toml".into());
        }
        kinds.push((Kind::Cargo, crates, cargo_shared));
        let (found, shared) = node(files, read);
        kinds.push((Kind::Node, found, shared));
        let (found, shared) = go(files, read);
        kinds.push((Kind::Go, found, shared));
        let (found, shared) = python(files, read);
        kinds.push((Kind::Python, found, shared));

        let mut ws = Workspace::default();
        for (kind, found, shared) in kinds {
            if found.is_empty() {
                continue;
            }
            let first = ws.packages.len();
            let by_name: HashMap<String, usize> = found
                .iter()
                .enumerate()
                .map(|(i, f)| (f.name.clone(), first + i))
                .collect();
            let by_dir: HashMap<String, usize> = found
                .iter()
                .enumerate()
                .map(|(i, f)| (f.dir.clone(), first + i))
                .collect();
            for (i, f) in found.iter().enumerate() {
                let mut deps: Vec<usize> = f
                    .deps
                    .iter()
                    .filter_map(|d| match d {
                        Dep::Name(n) => by_name.get(n).copied(),
                        Dep::Dir(d) => by_dir.get(d).copied(),
                    })
                    .filter(|&d| d != first + i)
                    .collect();
                deps.sort_unstable();
                deps.dedup();
                ws.packages.push(Package {
                    name: f.name.clone(),
                    dir: f.dir.clone(),
                    kind,
                    deps,
                });
            }
            for file in shared {
                ws.shared.entry(file).or_insert(kind);
            }
        }
        ws
    }

    /// The package that holds `path` most closely.
    fn owner(&self, path: &str) -> Option<usize> {
        self.packages
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                p.dir.is_empty()
                    || path
                        .strip_prefix(p.dir.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .max_by_key(|(_, p)| p.dir.len())
            .map(|(i, _)| i)
    }

    /// The packages a change to `changed` affects, in the order of their folders, each
    /// with why.
    pub fn affected(&self, changed: &[String]) -> Vec<Affected> {
        let mut why: BTreeMap<usize, String> = BTreeMap::new();
        let mut direct: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
        for path in changed {
            if let Some(&kind) = self.shared.get(path.as_str()) {
                for (i, p) in self.packages.iter().enumerate() {
                    if p.kind == kind {
                        why.entry(i).or_insert_with(|| {
                            format!("{path} changed, which every {kind} package shares")
                        });
                    }
                }
                continue;
            }
            if let Some(owner) = self.owner(path) {
                direct.entry(owner).or_default().push(path);
            }
        }
        for (package, paths) in direct {
            let more = match paths.len() {
                1 => String::new(),
                n => format!(" and {} more", n - 1),
            };
            why.entry(package)
                .or_insert_with(|| format!("the change touches {}{more}", paths[0]));
        }
        // Dependents, nearest first.
        let mut graph: DiGraph<usize, ()> = DiGraph::new();
        for i in 0..self.packages.len() {
            graph.add_node(i);
        }
        for (i, p) in self.packages.iter().enumerate() {
            for &d in &p.deps {
                graph.add_edge(NodeIndex::new(d), NodeIndex::new(i), ());
            }
        }
        let starts: Vec<usize> = why.keys().copied().collect();
        for start in starts {
            let mut bfs = Bfs::new(&graph, NodeIndex::new(start));
            while let Some(next) = bfs.next(&graph) {
                let next = next.index();
                if why.contains_key(&next) {
                    continue;
                }
                let via = self.packages[next]
                    .deps
                    .iter()
                    .find(|d| why.contains_key(d))
                    .map_or_else(
                        || self.packages[start].name.clone(),
                        |&d| self.packages[d].name.clone(),
                    );
                why.insert(next, format!("it depends on {via}"));
            }
        }
        let mut out: Vec<Affected> = why
            .into_iter()
            .map(|(package, why)| Affected { package, why })
            .collect();
        out.sort_by(|a, b| {
            let (pa, pb) = (&self.packages[a.package], &self.packages[b.package]);
            (&pa.dir, &pa.name).cmp(&(&pb.dir, &pb.name))
        });
        out
    }

    /// Every package, for a run with no change to measure (a baseline).
    pub fn all(&self) -> Vec<Affected> {
        let mut out: Vec<Affected> = (0..self.packages.len())
            .map(|package| Affected {
                package,
                why: "every package runs on the base".into(),
            })
            .collect();
        out.sort_by(|a, b| {
            let (pa, pb) = (&self.packages[a.package], &self.packages[b.package]);
            (&pa.dir, &pa.name).cmp(&(&pb.dir, &pb.name))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace(
        files: &[(&str, &str)],
        cargo: Option<Vec<(String, String, Vec<String>)>>,
    ) -> Workspace {
        let paths: Vec<String> = files.iter().map(|(p, _)| (*p).to_owned()).collect();
        let map: HashMap<String, String> = files
            .iter()
            .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
            .collect();
        Workspace::find(&paths, &|p| map.get(p).cloned(), cargo)
    }

    fn names(ws: &Workspace, affected: &[Affected]) -> Vec<String> {
        affected
            .iter()
            .map(|a| ws.packages[a.package].name.clone())
            .collect()
    }

    #[test]
    fn npm_workspaces_find_members_and_their_dependents() {
        let ws = workspace(
            &[
                (
                    "package.json",
                    r#"{"name": "root", "workspaces": ["packages/*", "!packages/old"]}"#,
                ),
                ("package-lock.json", "{}"),
                ("packages/ui/package.json", r#"{"name": "@acme/ui"}"#),
                ("packages/ui/index.js", ""),
                (
                    "packages/web/package.json",
                    r#"{"name": "web", "dependencies": {"@acme/ui": "*"}}"#,
                ),
                (
                    "packages/docs/package.json",
                    r#"{"name": "docs", "devDependencies": {"web": "*"}}"#,
                ),
                ("packages/other/package.json", r#"{"name": "other"}"#),
                (
                    "packages/old/package.json",
                    r#"{"name": "old", "dependencies": {"@acme/ui": "*"}}"#,
                ),
            ],
            None,
        );
        assert_eq!(ws.packages.len(), 4, "{ws:#?}");
        let hit = ws.affected(&["packages/ui/index.js".into()]);
        assert_eq!(names(&ws, &hit), ["docs", "@acme/ui", "web"]);
        assert_eq!(hit[1].why, "the change touches packages/ui/index.js");
        assert_eq!(hit[2].why, "it depends on @acme/ui");
        assert_eq!(hit[0].why, "it depends on web");
        let lock = ws.affected(&["package-lock.json".into()]);
        assert_eq!(lock.len(), 4);
        assert!(
            lock[0].why.contains("package-lock.json changed"),
            "{lock:?}"
        );
        assert!(ws.affected(&["README.md".into()]).is_empty());
    }

    #[test]
    fn go_modules_python_projects_and_standalone_crates() {
        let ws = workspace(
            &[
                (
                    "go.work",
                    "go 1.22\n\nuse (\n\t./api\n\t./lib // shared\n)\n",
                ),
                (
                    "api/go.mod",
                    "module example.com/api\n\ngo 1.22\n\nrequire (\n\texample.com/lib v0.0.0\n\tgolang.org/x/text v0.3.0\n)\n",
                ),
                ("lib/go.mod", "module example.com/lib\n"),
                (
                    "unused/go.mod",
                    "module example.com/unused\nrequire example.com/lib v1\n",
                ),
                (
                    "py/core/pyproject.toml",
                    "[project]\nname = \"Acme_Core\"\n",
                ),
                (
                    "py/app/pyproject.toml",
                    "[project]\nname = \"app\"\ndependencies = [\"acme-core>=1; python_version>'3.8'\", \"requests\"]\n",
                ),
                (
                    "rs/a/Cargo.toml",
                    "[package]\nname = \"a\"\n[dependencies]\nb = { path = \"../b\" }\nserde = \"1\"\n",
                ),
                ("rs/b/Cargo.toml", "[package]\nname = \"b\"\n"),
                ("rs/b/src/lib.rs", ""),
            ],
            None,
        );
        let hit = ws.affected(&["lib/x.go".into()]);
        assert_eq!(names(&ws, &hit), ["example.com/api", "example.com/lib"]);
        let hit = ws.affected(&["py/core/src/core.py".into()]);
        assert_eq!(names(&ws, &hit), ["app", "acme-core"]);
        let hit = ws.affected(&["rs/b/src/lib.rs".into()]);
        assert_eq!(names(&ws, &hit), ["a", "b"]);
        assert_eq!(hit[0].why, "it depends on b");
        let hit = ws.affected(&["go.work".into()]);
        assert_eq!(names(&ws, &hit), ["example.com/api", "example.com/lib"]);
    }

    #[test]
    fn a_cargo_workspace_comes_from_cargo_metadata_and_its_lock_affects_all() {
        let members = vec![
            ("core".to_owned(), "crates/core".to_owned(), vec![]),
            (
                "cli".to_owned(),
                "crates/cli".to_owned(),
                vec!["crates/core".to_owned()],
            ),
            ("tool".to_owned(), "tools/tool".to_owned(), vec![]),
        ];
        let ws = workspace(
            &[
                (
                    "Cargo.toml",
                    "[workspace]\nmembers = [\"crates/*\", \"tools/*\"]\n",
                ),
                ("Cargo.lock", ""),
                ("crates/core/Cargo.toml", "[package]\nname = \"core\"\n"),
            ],
            Some(members),
        );
        assert_eq!(ws.packages.len(), 3, "{ws:#?}");
        assert_eq!(
            names(&ws, &ws.affected(&["crates/core/src/lib.rs".into()])),
            ["cli", "core"]
        );
        assert_eq!(
            names(&ws, &ws.affected(&["Cargo.lock".into()])),
            ["cli", "core", "tool"]
        );
        assert_eq!(names(&ws, &ws.affected(&["Cargo.toml".into()])).len(), 3);
    }

    #[test]
    fn without_cargo_metadata_a_workspace_takes_its_members_and_leaves_out_its_exclusions() {
        let ws = workspace(
            &[
                (
                    "Cargo.toml",
                    "[workspace]\nmembers = [\"crates/*\"]\nexclude = [\"crates/old\"]\n",
                ),
                ("crates/a/Cargo.toml", "[package]\nname = \"a\"\n"),
                ("crates/old/Cargo.toml", "[package]\nname = \"old\"\n"),
                ("elsewhere/Cargo.toml", "[package]\nname = \"elsewhere\"\n"),
            ],
            None,
        );
        let names: Vec<&str> = ws.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a"]);
    }

    #[test]
    fn cargo_metadata_output_is_read_relative_to_the_worktree() {
        let json = r#"{"packages": [
            {"name": "core", "manifest_path": "/w/crates/core/Cargo.toml", "dependencies": [{"name": "serde"}]},
            {"name": "cli", "manifest_path": "/w/crates/cli/Cargo.toml", "dependencies": [{"name": "core", "path": "/w/crates/core"}]}
        ]}"#;
        let members = cargo_metadata(json, Path::new("/w")).unwrap();
        assert_eq!(
            members,
            vec![
                ("core".to_owned(), "crates/core".to_owned(), vec![]),
                (
                    "cli".to_owned(),
                    "crates/cli".to_owned(),
                    vec!["crates/core".to_owned()]
                ),
            ]
        );
        assert!(cargo_metadata("warning: no", Path::new("/w")).is_err());
    }
}
