//! `braid publish RUN`: pushes a run's result, or each target's own branch, to a remote,
//! and with `--pr` opens or updates their pull requests.
//!
//! The remote branches are the plan's, not the run's (`braid/<plan name>`, per target
//! `braid/<plan name>/<slug>`), so a later run of the same plan moves the same branches and
//! updates the same pull requests. braid records what it pushed where
//! (`<git-dir>/braid/published.json`); a remote branch that is neither absent, nor what
//! braid last pushed there, nor behind what it pushes now was changed by someone else, and
//! is reported and left as it is.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use braid_shared::git::Git;
use serde::{Deserialize, Serialize};

use crate::error::{BraidError, EXIT_FAILED, EXIT_OK};
use crate::forge::{self, Forge};
use crate::report::{Report, RunStatus, TaskReport, TaskStatus, short, word};

/// What `braid publish` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    pub remote: String,
    /// The remote branch (per target: the folder of the targets' branches).
    pub branch: Option<String>,
    pub pr: bool,
    pub per_target: bool,
    /// The branch pull requests go into; default: the remote's default branch.
    pub base: Option<String>,
    /// `github` or `gitlab`, when the remote's URL does not say.
    pub forge: Option<String>,
    /// `owner/name` on the forge, when the remote's URL does not say.
    pub forge_repo: Option<String>,
    pub json: bool,
    /// Push here rather than to the remote of that name (a batch over repositories pushes
    /// from its clones to each repository's own remote).
    pub url: Option<String>,
}

/// How one branch's publishing went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The remote had no such branch.
    Created,
    /// It moved the branch braid published before.
    Updated,
    /// The remote branch already was this commit.
    Unchanged,
    /// Someone else moved it since braid published it: left alone.
    ChangedOnRemote,
    /// Nothing to publish: the target did not succeed, or its change alone does not apply
    /// to the base.
    Skipped,
    /// The push or the forge failed.
    Failed,
}

/// One branch published.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Published {
    /// The task it is of, or `result`.
    pub task: String,
    /// The remote branch.
    pub branch: String,
    pub commit: Option<String>,
    pub outcome: Outcome,
    /// Why, for the outcomes that need it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Its pull request, and whether it was `opened`, `updated` or `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr: Option<PrOutcome>,
}

/// A pull request published.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrOutcome {
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What braid pushed to a remote branch last.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Record {
    commit: String,
    run: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pr: Option<forge::Request>,
}

/// `<git-dir>/braid/published.json`: by remote URL, then branch.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Records {
    #[serde(default)]
    remotes: BTreeMap<String, BTreeMap<String, Record>>,
}

/// When braid last published, for `publish.per_hour`: one clock for every repository of
/// this machine (a batch over repositories publishes to many), in braid's cache.
fn last_published() -> (PathBuf, i64) {
    let path = braid_worker::cache::root().join("published-at");
    let at = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    (path, at)
}

impl Records {
    fn path(git_dir: &Path) -> PathBuf {
        git_dir.join("braid/published.json")
    }

    fn read(git_dir: &Path) -> Records {
        std::fs::read_to_string(Self::path(git_dir))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    fn write(&self, git_dir: &Path) -> Result<(), BraidError> {
        let path = Self::path(git_dir);
        let text =
            serde_json::to_vec_pretty(self).map_err(|e| BraidError::Internal(e.to_string()))?;
        crate::report::write_atomically(&path, &text)
            .map_err(BraidError::io(format!("writing {}", path.display())))
    }
}

/// One branch to publish.
struct Item<'a> {
    task: Option<&'a TaskReport>,
    branch: String,
    commit: Option<String>,
    skipped: Option<String>,
}

/// A ref name git takes as a branch.
async fn valid_branch(git: &Git, name: &str) -> bool {
    matches!(
        git.raw(&["check-ref-format", "--branch", name]).await,
        Ok((0, _, _))
    )
}

/// The name the remote branches are made of: the plan's `name`, else its file's stem.
fn plan_name(report: &Report) -> String {
    report.name.clone().unwrap_or_else(|| {
        Path::new(&report.plan)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "plan".into())
    })
}

/// The slug of a target's task id `<id>.<slug>`.
fn slug(task: &str) -> &str {
    task.split_once('.').map_or(task, |(_, slug)| slug)
}

/// Publishes run `report` of the repository whose git directory is `git_dir`.
pub async fn publish(
    report: &Report,
    git_dir: &Path,
    options: &Options,
) -> Result<Vec<Published>, BraidError> {
    let repo = PathBuf::from(&report.repo);
    let git = Git::at(&repo);
    let url = match &options.url {
        Some(url) => url.clone(),
        None => remote_url(&git, &repo, &options.remote).await?,
    };
    let remote = options
        .url
        .clone()
        .unwrap_or_else(|| options.remote.clone());
    let name = plan_name(report);
    let root = options
        .branch
        .clone()
        .unwrap_or_else(|| format!("braid/{name}"));
    let items = items(report, &root, options.per_target)?;
    for item in &items {
        if !valid_branch(&git, &item.branch).await {
            return Err(BraidError::Usage(format!(
                "{:?} is not a branch name git takes; give one with --branch",
                item.branch
            )));
        }
    }
    let forge = match options.pr {
        true => Some(forge_for(&url, options)?),
        false => None,
    };
    let base = match &options.base {
        Some(base) => base.clone(),
        None => default_branch(&git, &remote, report).await,
    };
    let mut records = Records::read(git_dir);
    // What the remote has under the branches to publish, read once for them all.
    let remote_heads = heads_under(&git, &remote, &root).await;
    let spacing = report
        .publish
        .map(|p| Duration::from_secs_f64(3600.0 / f64::from(p.per_hour.max(1))));
    let mut out = Vec::with_capacity(items.len());
    for item in &items {
        let Some(commit) = item.commit.clone() else {
            out.push(Published {
                task: item.task.map_or("result".into(), |t| t.id.clone()),
                branch: item.branch.clone(),
                commit: None,
                outcome: Outcome::Skipped,
                detail: item.skipped.clone(),
                pr: None,
            });
            continue;
        };
        if let Some(spacing) = spacing {
            pace(spacing).await;
        }
        let mut published = push(
            &git,
            &remote,
            &remote_heads,
            &url,
            item,
            &commit,
            &mut records,
            &report.run,
        )
        .await;
        if let (Some(forge), Outcome::Created | Outcome::Updated | Outcome::Unchanged) =
            (&forge, &published.outcome)
        {
            // Every branch braid publishes starts from the run's base.
            let files = match git
                .raw(&[
                    "diff",
                    "--name-status",
                    "--no-renames",
                    &report.base,
                    &commit,
                ])
                .await
            {
                Ok((0, out, _)) => out.lines().map(str::to_owned).collect(),
                _ => Vec::new(),
            };
            let (title, mut body) = describe(report, item.task, &name, &commit);
            body.push_str(&files_text(&files));
            let pr = pull_request(forge, &item.branch, &base, &title, &body).await;
            if let Some(number) = pr.number
                && let Some(record) = records
                    .remotes
                    .get_mut(&url)
                    .and_then(|r| r.get_mut(&item.branch))
            {
                record.pr = Some(forge::Request {
                    number,
                    url: pr.url.clone().unwrap_or_default(),
                });
            }
            published.pr = Some(pr);
        }
        // The pace runs from the end of one branch's publishing, pull request included.
        let (pace_file, _) = last_published();
        let now = chrono::Utc::now().timestamp_millis().to_string();
        let _ = std::fs::create_dir_all(pace_file.parent().unwrap_or(git_dir))
            .and_then(|()| crate::report::write_atomically(&pace_file, now.as_bytes()));
        records.write(git_dir)?;
        if !options.json {
            eprintln!("{}", line(&published));
        }
        out.push(published);
    }
    if !options.json {
        for p in out.iter().filter(|p| p.outcome == Outcome::Skipped) {
            eprintln!("{}", line(p));
        }
    }
    Ok(out)
}

/// Prints what was published (as JSON with `--json`) and gives the exit code: 0 when every
/// branch (and its pull request) is where braid wanted it.
pub fn conclude(run: &str, remote: &str, out: &[Published], json: bool) -> Result<i32, BraidError> {
    if json {
        let text = serde_json::to_string_pretty(&serde_json::json!({
            "run": run,
            "remote": remote,
            "branches": out,
        }))
        .map_err(|e| BraidError::Internal(e.to_string()))?;
        println!("{text}");
    }
    let clean = out.iter().all(|p| {
        matches!(
            p.outcome,
            Outcome::Created | Outcome::Updated | Outcome::Unchanged
        ) && p.pr.as_ref().is_none_or(|pr| pr.error.is_none())
    });
    Ok(if clean { EXIT_OK } else { EXIT_FAILED })
}

/// The remote's branches `root` and `root/…`, by full name.
async fn heads_under(
    git: &Git,
    remote: &str,
    root: &str,
) -> Result<HashMap<String, String>, String> {
    let exact = format!("refs/heads/{root}");
    let below = format!("refs/heads/{root}/*");
    match git
        .raw(&["ls-remote", "--refs", remote, &exact, &below])
        .await
    {
        Ok((0, out, _)) => Ok(out
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(commit, name)| (name.to_owned(), commit.to_owned()))
            .collect()),
        Ok((_, _, err)) => Err(format!("could not read the remote: {err}")),
        Err(e) => Err(format!("could not read the remote: {e}")),
    }
}

/// The URL of `remote` of the repository at `repo`, as configured (a relative path made
/// absolute).
pub async fn remote_url(git: &Git, repo: &Path, remote: &str) -> Result<String, BraidError> {
    match git
        .raw(&["config", "--get", &format!("remote.{remote}.url")])
        .await
    {
        Ok((0, url, _)) => {
            let url = url.trim();
            let local = !crate::plan::repos::is_url(url);
            Ok(if local && !url.starts_with('/') {
                repo.join(url).display().to_string()
            } else {
                url.to_owned()
            })
        }
        _ => Err(BraidError::Usage(format!(
            "{} has no remote {remote:?}; name one with --remote",
            repo.display()
        ))),
    }
}

/// The branches a run publishes.
fn items<'a>(
    report: &'a Report,
    root: &str,
    per_target: bool,
) -> Result<Vec<Item<'a>>, BraidError> {
    if !per_target {
        if report.status != RunStatus::Succeeded {
            return Err(BraidError::Usage(format!(
                "run {} {}: its result is not one to publish; publish its targets one by one with --per-target, or run the failures again with `braid run PLAN --rerun-failed {}`",
                report.run,
                word(report.status),
                report.run
            )));
        }
        let Some(commit) = report.result.commit.clone() else {
            return Err(BraidError::Usage(format!(
                "run {} has no result commit",
                report.run
            )));
        };
        return Ok(vec![Item {
            task: None,
            branch: root.to_owned(),
            commit: Some(commit),
            skipped: None,
        }]);
    }
    let targets: Vec<&TaskReport> = report.tasks.iter().filter(|t| t.id.contains('.')).collect();
    if targets.is_empty() {
        return Err(BraidError::Usage(format!(
            "run {} has no targets (no task with `for_each`); publish its result without --per-target",
            report.run
        )));
    }
    if targets
        .iter()
        .all(|t| t.own_branch.is_none() && t.status == TaskStatus::Succeeded)
    {
        return Err(BraidError::Usage(format!(
            "run {} made no branch of each target's own; run the plan with `braid run --per-target`",
            report.run
        )));
    }
    Ok(targets
        .into_iter()
        .map(|t| {
            let own = t.own_branch.as_ref();
            let skipped = match (t.status, own) {
                (TaskStatus::Succeeded, Some(own)) if own.commit.is_none() => Some(format!(
                    "its change does not apply to the base without its deps' (conflicts in {})",
                    own.conflicts.join(", ")
                )),
                (TaskStatus::Succeeded, _) => None,
                (status, _) => Some(format!(
                    "it {}: {}",
                    word(status),
                    t.reason.as_deref().unwrap_or("no winner")
                )),
            };
            Item {
                task: Some(t),
                branch: format!("{root}/{}", slug(&t.id)),
                commit: own
                    .and_then(|o| o.commit.clone())
                    .filter(|_| skipped.is_none()),
                skipped,
            }
        })
        .collect())
}

/// Waits until `spacing` has passed since braid last published.
async fn pace(spacing: Duration) {
    let (_, last) = last_published();
    let since = chrono::Utc::now().timestamp_millis() - last;
    let wait = spacing.as_millis() as i64 - since;
    if last > 0 && wait > 0 {
        let wait = Duration::from_millis(wait as u64);
        if wait > Duration::from_secs(2) {
            eprintln!(
                "braid: publish.per_hour: waiting {}s before the next branch",
                wait.as_secs()
            );
        }
        tokio::time::sleep(wait).await;
    }
}

/// Pushes `commit` to the item's branch when the remote branch is absent, braid's own, or
/// behind it.
#[allow(clippy::too_many_arguments)]
async fn push(
    git: &Git,
    remote: &str,
    remote_heads: &Result<HashMap<String, String>, String>,
    url: &str,
    item: &Item<'_>,
    commit: &str,
    records: &mut Records,
    run: &str,
) -> Published {
    let task = item.task.map_or("result".into(), |t| t.id.clone());
    let refname = format!("refs/heads/{}", item.branch);
    let mut published = Published {
        task,
        branch: item.branch.clone(),
        commit: Some(commit.to_owned()),
        outcome: Outcome::Failed,
        detail: None,
        pr: None,
    };
    let there = match remote_heads {
        Ok(heads) => heads.get(&refname).cloned(),
        Err(why) => {
            published.detail = Some(why.clone());
            return published;
        }
    };
    let ours = records
        .remotes
        .get(url)
        .and_then(|r| r.get(&item.branch))
        .map(|r| r.commit.clone());
    if there.as_deref() == Some(commit) {
        published.outcome = Outcome::Unchanged;
    } else {
        let behind = match &there {
            Some(old) => matches!(
                git.raw(&["merge-base", "--is-ancestor", old, commit]).await,
                Ok((0, _, _))
            ),
            None => false,
        };
        let allowed = there.is_none() || there == ours || behind;
        if !allowed {
            published.outcome = Outcome::ChangedOnRemote;
            published.detail = Some(match &ours {
                Some(ours) => format!(
                    "changed on the remote since braid published {} there (now {}); left as it is",
                    short(ours),
                    short(there.as_deref().unwrap_or_default())
                ),
                None => format!(
                    "the remote already has this branch at {}, which braid did not publish; left as it is",
                    short(there.as_deref().unwrap_or_default())
                ),
            });
            return published;
        }
        let lease = format!(
            "--force-with-lease={refname}:{}",
            there.clone().unwrap_or_default()
        );
        let spec = format!("{commit}:{refname}");
        match git
            .raw(&["push", "--porcelain", "--quiet", &lease, remote, &spec])
            .await
        {
            Ok((0, _, _)) => {
                published.outcome = if there.is_some() {
                    Outcome::Updated
                } else {
                    Outcome::Created
                };
            }
            Ok((_, out, err)) => {
                let said = format!("{} {}", out.trim(), err.trim());
                if said.contains("stale info") {
                    published.outcome = Outcome::ChangedOnRemote;
                    published.detail =
                        Some("changed on the remote while braid published; left as it is".into());
                } else if let Some(existing) = beside(&said) {
                    published.detail = Some(format!(
                        "the remote has {existing}, and git cannot hold {} beside it; give another branch with --branch",
                        item.branch
                    ));
                } else {
                    published.detail = Some(format!("git push failed: {}", said.trim()));
                }
                return published;
            }
            Err(e) => {
                published.detail = Some(format!("git push failed: {e}"));
                return published;
            }
        }
    }
    let pr = records
        .remotes
        .get(url)
        .and_then(|r| r.get(&item.branch))
        .and_then(|r| r.pr.clone());
    records.remotes.entry(url.to_owned()).or_default().insert(
        item.branch.clone(),
        Record {
            commit: commit.to_owned(),
            run: run.to_owned(),
            pr,
        },
    );
    published
}

/// The branch a push's refusal says is in the way (`'refs/heads/a/b' exists; cannot create
/// 'refs/heads/a'`).
fn beside(said: &str) -> Option<String> {
    let at = said.find("' exists; cannot create")?;
    let start = said[..at].rfind('\'')? + 1;
    Some(said[start..at].trim_start_matches("refs/heads/").to_owned())
}

/// The forge the remote is on.
fn forge_for(url: &str, options: &Options) -> Result<Forge, BraidError> {
    let place = match (&options.forge_repo, forge::place_of(url)) {
        (Some(path), found) => forge::Place {
            host: found.map_or_else(|| "forge".into(), |p| p.host),
            path: path.clone(),
        },
        (None, Some(place)) => place,
        (None, None) => {
            return Err(BraidError::Usage(format!(
                "the remote's URL {url} names no forge repository; give --forge github|gitlab and --forge-repo OWNER/NAME"
            )));
        }
    };
    let kind = match &options.forge {
        Some(text) => forge::Kind::parse(text)
            .ok_or_else(|| BraidError::Usage(format!("--forge {text:?}: use github or gitlab")))?,
        None => forge::kind_of(&place.host).ok_or_else(|| {
            BraidError::Usage(format!(
                "cannot tell which forge {} is; give --forge github or --forge gitlab",
                place.host
            ))
        })?,
    };
    Forge::new(kind, place).map_err(BraidError::Usage)
}

/// The remote's default branch, else the branch the run's base was, else `main`.
async fn default_branch(git: &Git, remote: &str, report: &Report) -> String {
    if let Ok((0, out, _)) = git
        .raw(&[
            "symbolic-ref",
            "--short",
            &format!("refs/remotes/{remote}/HEAD"),
        ])
        .await
        && let Some((_, branch)) = out.trim().split_once('/')
    {
        return branch.to_owned();
    }
    if let Ok((0, out, _)) = git.raw(&["ls-remote", "--symref", remote, "HEAD"]).await
        && let Some(branch) = out.lines().find_map(|l| {
            l.strip_prefix("ref: refs/heads/")?
                .split_once('\t')
                .map(|(b, _)| b.to_owned())
        })
    {
        return branch;
    }
    if report.base_rev != "HEAD" && !report.base_rev.is_empty() {
        return report.base_rev.clone();
    }
    "main".into()
}

/// Opens the branch's pull request, or updates the one open.
async fn pull_request(
    forge: &Forge,
    branch: &str,
    base: &str,
    title: &str,
    body: &str,
) -> PrOutcome {
    let done = async {
        match forge.find(branch).await? {
            Some(open) => forge
                .update(open.number, title, body)
                .await
                .map(|r| ("updated", r)),
            None => forge
                .create(branch, base, title, body)
                .await
                .map(|r| ("opened", r)),
        }
    }
    .await;
    match done {
        Ok((action, request)) => PrOutcome {
            action: action.into(),
            number: Some(request.number),
            url: Some(request.url),
            error: None,
        },
        Err(why) => PrOutcome {
            action: "failed".into(),
            number: None,
            url: None,
            error: Some(why),
        },
    }
}

/// A pull request's title and body, from the report: what changed, the checks, the
/// winner and why.
fn describe(
    report: &Report,
    task: Option<&TaskReport>,
    name: &str,
    commit: &str,
) -> (String, String) {
    use std::fmt::Write as _;
    let mut body = String::new();
    let marker = format!("<!-- braid: {name} -->");
    let title;
    match task {
        Some(task) => {
            title = format!("{name}: {}", slug(&task.id));
            let _ = writeln!(
                body,
                "{marker}\nbraid run `{}`, task `{}`.\n",
                report.run, task.id
            );
            task_text(&mut body, task);
        }
        None => {
            title = format!("{name} ({} task(s))", report.tasks.len());
            let _ = writeln!(
                body,
                "{marker}\nbraid run `{}`: the integration of {} winner(s) on `{}`.\n",
                report.run,
                report.result.integrated.len(),
                short(&report.base)
            );
            for task in &report.tasks {
                let _ = writeln!(body, "### `{}`\n", task.id);
                task_text(&mut body, task);
            }
            if !report.result.verify.is_empty() {
                let checks: Vec<String> = report
                    .result
                    .verify
                    .iter()
                    .map(|c| format!("`{}` {}", c.label(), word(c.status)))
                    .collect();
                let _ = writeln!(body, "Verified on the result: {}.\n", checks.join(", "));
            }
        }
    }
    let _ = writeln!(body, "Commit `{}`.", short(commit));
    (title, body)
}

fn task_text(body: &mut String, task: &TaskReport) {
    use std::fmt::Write as _;
    let winner = task
        .winner
        .and_then(|n| task.attempts.iter().find(|a| a.n == n));
    let Some(winner) = winner else {
        let _ = writeln!(
            body,
            "No winner: {}.\n",
            task.reason.as_deref().unwrap_or("-")
        );
        return;
    };
    let _ = writeln!(
        body,
        "**What changed**: {} file(s), +{} -{}.\n",
        winner.diff.files, winner.diff.insertions, winner.diff.deletions
    );
    let agent = winner.agent.as_deref().unwrap_or("an agent");
    let _ = writeln!(
        body,
        "**Winner**: attempt {} of {} ({agent}{}): {}.\n",
        winner.n,
        task.attempts.len(),
        winner
            .model
            .as_deref()
            .map(|m| format!(", {m}"))
            .unwrap_or_default(),
        task.reason.as_deref().unwrap_or("-")
    );
    if !winner.checks.is_empty() {
        let _ = writeln!(body, "**Checks**:\n");
        for c in &winner.checks {
            let note = c
                .note
                .as_deref()
                .or(c.affected.as_deref())
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            let _ = writeln!(body, "- `{}`: {}{note}", c.label(), word(c.status));
        }
        body.push('\n');
    }
    if let Some(run) = &task.carried_from {
        let _ = writeln!(body, "Won in run `{run}` and carried over.\n");
    }
}

/// The files a branch changes, as a pull request lists them (the first 100).
fn files_text(files: &[String]) -> String {
    use std::fmt::Write as _;
    if files.is_empty() {
        return String::new();
    }
    let mut text = format!(
        "\n<details><summary>{} file(s) changed</summary>\n\n",
        files.len()
    );
    for line in files.iter().take(100) {
        let (status, path) = line.split_once('\t').unwrap_or(("M", line));
        let _ = writeln!(text, "- `{status}` {path}");
    }
    if files.len() > 100 {
        let _ = writeln!(text, "- and {} more", files.len() - 100);
    }
    text.push_str("\n</details>\n");
    text
}

/// One branch's outcome, as a line for the terminal.
pub fn line(p: &Published) -> String {
    let what = match p.outcome {
        Outcome::Created => "created",
        Outcome::Updated => "updated",
        Outcome::Unchanged => "unchanged",
        Outcome::ChangedOnRemote => "NOT published",
        Outcome::Skipped => "skipped",
        Outcome::Failed => "FAILED",
    };
    let mut text = format!("{what:<13} {} ({})", p.branch, p.task);
    if let Some(c) = &p.commit {
        let _ = std::fmt::Write::write_fmt(&mut text, format_args!(" at {}", short(c)));
    }
    if let Some(detail) = &p.detail {
        text.push_str(": ");
        text.push_str(detail);
    }
    if let Some(pr) = &p.pr {
        match (&pr.url, &pr.error) {
            (Some(url), _) => text.push_str(&format!("; {} {url}", pr.action)),
            (None, Some(e)) => text.push_str(&format!("; pull request failed: {e}")),
            _ => {}
        }
    }
    text
}
