//! `for_each: {repos: [...]}`: one task fanned over many repositories. The plan holds that
//! task alone; each repository becomes a plan of its own (the task once, as
//! `<id>.<slug>`, with `{{repo}}` and `{{name}}` filled in) run on a clone in braid's cache.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use braid_shared::git::Git;

use super::file::PlanFile;
use super::{PlanError, PlanErrors};

/// Where a repository of a batch comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Source {
    /// A local repository, absolute.
    Path(PathBuf),
    /// A clone URL.
    Url(String),
}

/// One repository of a batch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Repo {
    /// As the plan names it (`{{repo}}`).
    pub text: String,
    pub source: Source,
    /// Its name: the last part of its path, without `.git` (`{{name}}`).
    pub name: String,
    /// What its task id ends with.
    pub slug: String,
}

/// A plan fanned over repositories.
#[derive(Debug, Clone)]
pub struct ReposPlan {
    /// The plan's `name`.
    pub name: Option<String>,
    /// The task's id as written.
    pub task: String,
    /// The plan's `base` as written: a revision of each repository.
    pub base: Option<String>,
    pub repos: Vec<Repo>,
}

/// Which repository a plan of a batch is loaded for: its clone and base.
#[derive(Debug, Clone)]
pub struct ForRepo {
    pub repo: Repo,
    /// The clone's working tree.
    pub clone: PathBuf,
    /// The commit to start from.
    pub base: String,
}

/// Whether a repository as written is a clone URL (`https://…`, `git@host:path`) rather
/// than a path.
pub fn is_url(text: &str) -> bool {
    text.contains("://") || (!text.starts_with('/') && text.contains('@') && text.contains(':'))
}

/// The repositories the plan at `path` fans its task over; `None` for a plan of one
/// repository. Problems come back located, all at once.
pub async fn repos_of(path: &Path) -> Result<Option<ReposPlan>, PlanErrors> {
    let shown = path.to_owned();
    let Ok(text) = std::fs::read_to_string(path) else {
        // `load` says why, with the rest.
        return Ok(None);
    };
    let options = serde_saphyr::options! { with_snippet: false };
    let Ok(file) = serde_saphyr::from_str_with_options::<PlanFile>(&text, options) else {
        return Ok(None);
    };
    let dir = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_owned))
        .unwrap_or_else(|| PathBuf::from("/"));
    let tasks = file
        .tasks
        .as_ref()
        .map(|t| t.value.as_slice())
        .unwrap_or(&[]);
    let fanned: Vec<_> = tasks
        .iter()
        .filter_map(|t| {
            let spec = t.for_each.as_ref()?;
            spec.value.repos.as_ref().map(|r| (t, spec, r))
        })
        .collect();
    let Some((task, spec, list)) = fanned.first().copied() else {
        return Ok(None);
    };
    let mut errors = Vec::new();
    let at = Some((
        spec.referenced.line().max(1),
        spec.referenced.column().max(1),
    ));
    let mut error = |message: String| {
        errors.push(PlanError {
            file: shown.clone(),
            at,
            message,
        });
    };
    if tasks.len() > 1 {
        error(format!(
            "task {:?} is fanned over repositories, so the plan holds it alone; put its other tasks in a plan of their own",
            task.id.value
        ));
    }
    if file.repo.is_some() {
        error("`repo` and `for_each: {repos}` both name repositories; leave `repo` out".into());
    }
    if list.is_empty() {
        error("`for_each: {repos: []}` lists no repository".into());
    }
    let mut repos = Vec::new();
    let mut slugs: HashMap<String, String> = HashMap::new();
    for text in list {
        let text = text.trim().to_owned();
        let source = if is_url(&text) {
            Source::Url(text.clone())
        } else {
            let full = dir.join(&text);
            match Git::at(&full).common_dir().await {
                Ok(_) if full.is_dir() => Source::Path(std::path::absolute(&full).unwrap_or(full)),
                _ => {
                    error(format!(
                        "`for_each: {{repos}}`: {text:?} ({}) is not a git repository",
                        full.display()
                    ));
                    continue;
                }
            }
        };
        let last = text
            .trim_end_matches('/')
            .rsplit(['/', ':'])
            .next()
            .unwrap_or(&text);
        let name = last.trim_end_matches(".git").to_owned();
        let slug = super::targets::slug(&name);
        if slug.is_empty() || slug.chars().all(|c| c == '-') {
            error(format!(
                "`for_each: {{repos}}`: {text:?} has no name to make a task id of"
            ));
            continue;
        }
        if let Some(other) = slugs.insert(slug.clone(), text.clone()) {
            error(format!(
                "`for_each: {{repos}}`: {other:?} and {text:?} make the same task id {}.{slug}; the repositories need different names",
                task.id.value
            ));
            continue;
        }
        repos.push(Repo {
            text,
            source,
            name,
            slug,
        });
    }
    if !errors.is_empty() {
        return Err(PlanErrors(errors));
    }
    Ok(Some(ReposPlan {
        name: file.name.as_ref().map(|n| n.value.clone()),
        task: task.id.value.clone(),
        base: file.base.as_ref().map(|b| b.value.clone()),
        repos,
    }))
}
