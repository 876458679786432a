//! `for_each`: one task fanned over many targets, each a task `<id>.<slug>` of its own.
//!
//! The targets are found in the plan's base commit, not in the working tree: the folders a
//! glob matches, or the folders holding a marker file. Each target's task is the task as
//! written with `{{dir}}` (the folder, from the repository's root) and `{{name}}` (its last
//! part) filled into its prompt, its agents' command, arguments and environment, its checks,
//! its setup commands, its score, and its `touches` and `protect` globs. A task that depends on a fanned task depends on every target.

use std::collections::BTreeSet;

use braid_shared::paths::PathScope;

use super::Task;
use super::file::ForEachFile;

/// One target of a fanned task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The folder, relative to the repository's root.
    pub dir: String,
    /// Its last part.
    pub name: String,
    /// What the target's task id ends with.
    pub slug: String,
    /// Its repository as the plan names it (`{{repo}}`).
    pub repo: String,
}

/// Longest slug: a task id is at most 63 characters, and so is this.
const SLUG_MAX: usize = 63;

/// The slug of a folder: lower case, `/` as `-`, anything else a task id cannot hold as
/// `-`.
pub fn slug(dir: &str) -> String {
    let mut slug: String = dir
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_' | '-') => c,
            _ => '-',
        })
        .collect();
    slug.truncate(SLUG_MAX);
    slug
}

/// Whether `id` is a fanned task's id: a task id, a dot, a slug.
pub fn valid_target_id(id: &str) -> bool {
    id.split_once('.').is_some_and(|(task, slug)| {
        super::load::valid_id(task)
            && !slug.is_empty()
            && slug.len() <= SLUG_MAX
            && slug
                .chars()
                .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
    })
}

/// The targets `spec` names among the files of the base (`paths`, every file's path);
/// why there are none, in words, when it names none.
pub fn find(spec: &ForEachFile, paths: &[String]) -> Result<Vec<Target>, String> {
    let folders: BTreeSet<&str> = paths
        .iter()
        .flat_map(|p| {
            p.char_indices()
                .filter(|(_, c)| *c == '/')
                .map(move |(i, _)| &p[..i])
        })
        .collect();
    let keys = [
        spec.dirs.is_some(),
        spec.marker.is_some(),
        spec.repos.is_some(),
        spec.workspace.is_some(),
    ];
    if keys.iter().filter(|k| **k).count() != 1 {
        return Err(
            "`for_each` takes exactly one of `dirs` (a glob), `marker` (a file name), `workspace: true` or `repos`"
                .into(),
        );
    }
    let dirs: Vec<String> = match (&spec.dirs, &spec.marker, &spec.repos) {
        (Some(glob), None, None) => {
            let scope = PathScope::new(&[glob.as_str()]).map_err(|e| e.to_string())?;
            let all: Vec<&str> = folders.iter().copied().collect();
            let found: Vec<String> = scope.matches(&all).into_iter().map(str::to_owned).collect();
            if found.is_empty() {
                return Err(format!("`for_each: {{dirs: {glob:?}}}` matches no folder"));
            }
            found
        }
        (None, Some(marker), None) => {
            if marker.is_empty() || marker.contains('/') {
                return Err(format!(
                    "`for_each: {{marker: {marker:?}}}`: a marker is a file name, such as Cargo.toml"
                ));
            }
            let holds = |dir: &str| {
                paths.iter().any(|p| {
                    p.strip_prefix(dir).and_then(|rest| rest.strip_prefix('/'))
                        == Some(marker.as_str())
                })
            };
            let found: Vec<String> = folders
                .iter()
                .filter(|dir| holds(dir))
                .map(|dir| (*dir).to_owned())
                .collect();
            if found.is_empty() {
                return Err(format!(
                    "`for_each: {{marker: {marker:?}}}`: no folder below the root holds a {marker}"
                ));
            }
            found
        }
        (None, None, Some(_)) => {
            return Err(
                "`for_each: {repos: …}` fans a plan over repositories, which `braid run` and `braid validate` do; this command takes a plan of one repository"
                    .into(),
            );
        }
        _ => {
            return Err("`for_each: {workspace: …}` takes `true`: the workspace's packages".into());
        }
    };
    Ok(dirs
        .into_iter()
        .map(|dir| Target {
            name: dir.rsplit('/').next().unwrap_or(&dir).to_owned(),
            slug: slug(&dir),
            dir,
            repo: String::new(),
        })
        .collect())
}

/// The packages of the workspaces among the files of the base (`paths`, with `read`
/// giving a file's text), each a target: its folder, its package's name, and the slug of
/// its folder (of its name, for a package at the root).
pub fn members(
    paths: &[String],
    read: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Target>, String> {
    let ws = braid_worker::packages::Workspace::find(paths, read, None);
    if ws.packages.is_empty() {
        return Err(
            "`for_each: {workspace: true}`: no package found (Cargo, npm, pnpm, yarn, Go or Python)"
                .into(),
        );
    }
    let mut targets: Vec<Target> = ws
        .packages
        .iter()
        .map(|p| Target {
            dir: p.dir.clone(),
            name: p.name.clone(),
            slug: slug(if p.dir.is_empty() { &p.name } else { &p.dir }),
            repo: String::new(),
        })
        .collect();
    targets.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(targets)
}

/// The task of `target`: `task` with its id and every `{{dir}}` and `{{name}}` filled in.
pub fn task_for(task: &Task, target: &Target) -> Task {
    let fill = |text: &str| {
        text.replace("{{dir}}", &target.dir)
            .replace("{{name}}", &target.name)
            .replace("{{repo}}", &target.repo)
    };
    let mut one = task.clone();
    one.id = format!("{}.{}", task.id, target.slug);
    one.target = Some(super::TargetOf {
        task: task.id.clone(),
        dir: target.dir.clone(),
    });
    one.prompt = fill(&one.prompt);
    for agent in &mut one.agents {
        for word in agent.command.iter_mut().chain(agent.args.iter_mut()) {
            *word = fill(word);
        }
        for value in agent.env.values_mut() {
            *value = fill(value);
        }
    }
    for check in &mut one.checks {
        check.run = fill(&check.run);
        check.cwd = fill(&check.cwd);
        for glob in &mut check.paths {
            *glob = fill(glob);
        }
    }
    for (run, _) in &mut one.setup {
        *run = fill(run);
    }
    for glob in one.touches.iter_mut().chain(one.protect.iter_mut()) {
        *glob = fill(glob);
    }
    if let Some(score) = &mut one.score {
        score.run = fill(&score.run);
    }
    one
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(list: &[&str]) -> Vec<String> {
        list.iter().map(|p| (*p).to_owned()).collect()
    }

    #[test]
    fn globs_and_markers_find_folders_at_the_base() {
        let files = paths(&[
            "Cargo.toml",
            "services/Auth/Cargo.toml",
            "services/Auth/src/lib.rs",
            "services/billing/package.json",
            "services/billing/web/package.json",
            "tools/x.sh",
        ]);
        let dirs = |glob: &str| ForEachFile {
            dirs: Some(glob.into()),
            ..Default::default()
        };
        let found = find(&dirs("services/*"), &files).unwrap();
        let shown: Vec<(&str, &str, &str)> = found
            .iter()
            .map(|t| (t.dir.as_str(), t.name.as_str(), t.slug.as_str()))
            .collect();
        assert_eq!(
            shown,
            [
                ("services/Auth", "Auth", "services-auth"),
                ("services/billing", "billing", "services-billing")
            ]
        );
        let marker = |name: &str| ForEachFile {
            marker: Some(name.into()),
            ..Default::default()
        };
        let found: Vec<String> = find(&marker("package.json"), &files)
            .unwrap()
            .into_iter()
            .map(|t| t.dir)
            .collect();
        assert_eq!(found, ["services/billing", "services/billing/web"]);
        // The root's own Cargo.toml is not a target.
        let found: Vec<String> = find(&marker("Cargo.toml"), &files)
            .unwrap()
            .into_iter()
            .map(|t| t.dir)
            .collect();
        assert_eq!(found, ["services/Auth"]);
        assert!(
            find(&dirs("apps/*"), &files)
                .unwrap_err()
                .contains("matches no folder")
        );
        assert!(
            find(&marker("go.mod"), &files)
                .unwrap_err()
                .contains("no folder")
        );
        assert!(
            find(&ForEachFile::default(), &files)
                .unwrap_err()
                .contains("exactly one")
        );
    }

    #[test]
    fn target_ids_are_a_task_id_a_dot_and_a_slug() {
        assert!(valid_target_id("migrate.services-auth"));
        assert!(!valid_target_id("migrate"));
        assert!(!valid_target_id("migrate."));
        assert!(!valid_target_id("Migrate.x"));
        assert!(!valid_target_id("migrate.a.b"));
        assert_eq!(slug("a/B c.d"), "a-b-c-d");
    }
}
