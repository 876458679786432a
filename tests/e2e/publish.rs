//! `braid publish`: a run's branches pushed to a remote, and pull requests on a scripted
//! forge.

use std::path::{Path, PathBuf};
use std::process::Output;

use braid_tests::forge::Forge;
use braid_tests::{TestRepo, command, stderr, stdout};
use serde_json::Value;

use crate::{BIN, run_plan, task};

/// A repository with two services and a bare remote, `origin`, that has its main.
fn with_remote() -> (TestRepo, PathBuf) {
    let repo = TestRepo::init();
    repo.commit(
        &[
            ("services/auth/main.rs", "fn main() {}\n"),
            ("services/billing/index.js", "\n"),
        ],
        "two services",
    );
    let remote = repo.outside().join("origin.git");
    let out = command("git", repo.outside())
        .args(["init", "--quiet", "--bare", "origin.git"])
        .output()
        .unwrap();
    assert!(out.status.success());
    repo.git(&["remote", "add", "origin", remote.to_str().unwrap()]);
    repo.git(&["push", "--quiet", "origin", "main"]);
    (repo, remote)
}

/// The plan: a note in each service, saying `word`.
fn notes(repo: &TestRepo, word: &str, per_hour: Option<u32>) -> PathBuf {
    let publish = per_hour.map_or(String::new(), |n| format!("publish: {{per_hour: {n}}}\n"));
    repo.plan(&format!(
        r#"version: 1
name: notes
repo: repo
{publish}tasks:
  - id: note
    for_each: {{dirs: "services/*"}}
    prompt: "Leave a note in {{{{dir}}}}."
    agent: {{command: [sh, -c, 'echo "{word} {{{{name}}}}" > {{{{dir}}}}/NOTE']}}
    checks: [{{name: noted, run: "grep -q {word} NOTE", cwd: "{{{{dir}}}}"}}]
"#
    ))
}

fn publish(repo: &TestRepo, args: &[&str], env: &[(&str, &str)]) -> (Output, Value) {
    let mut cmd = command(BIN, repo.outside());
    cmd.args(["publish", "--json", "--repo", "repo"]).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.env("BRAID_LOG", "warn").output().expect("braid runs");
    let value = serde_json::from_str(&stdout(&out)).unwrap_or(Value::Null);
    (out, value)
}

fn remote_branches(remote: &Path) -> Vec<(String, String)> {
    let out = command("git", remote)
        .args([
            "for-each-ref",
            "--format=%(refname:short) %(objectname)",
            "refs/heads/braid",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect()
}

fn outcomes(published: &Value) -> Vec<(String, String)> {
    published["branches"]
        .as_array()
        .unwrap_or_else(|| panic!("{published:#}"))
        .iter()
        .map(|b| {
            (
                b["branch"].as_str().unwrap().to_owned(),
                b["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn publishing_again_moves_the_same_branches_and_a_branch_someone_changed_is_left_alone() {
    let (repo, remote) = with_remote();
    let (out, first) = run_plan(
        &repo,
        &notes(&repo, "one", None),
        &["--workers", "2", "--per-target"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run = first["run"].as_str().unwrap();
    let (out, published) = publish(&repo, &[run, "--per-target"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        outcomes(&published),
        [
            ("braid/notes/services-auth".to_owned(), "created".to_owned()),
            (
                "braid/notes/services-billing".to_owned(),
                "created".to_owned()
            ),
        ]
    );
    let own = task(&first, "note.services-auth")["own_branch"]["commit"]
        .as_str()
        .unwrap();
    assert_eq!(
        remote_branches(&remote),
        [
            ("braid/notes/services-auth".to_owned(), own.to_owned()),
            (
                "braid/notes/services-billing".to_owned(),
                task(&first, "note.services-billing")["own_branch"]["commit"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            ),
        ]
    );
    // The same run again: nothing to move.
    let (out, again) = publish(&repo, &[run, "--per-target"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        outcomes(&again).iter().all(|(_, o)| o == "unchanged"),
        "{again:#}"
    );

    // A later run of the plan moves the same branches; the whole result goes to braid/notes.
    let (out, second) = run_plan(
        &repo,
        &notes(&repo, "two", None),
        &["--workers", "2", "--per-target"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run2 = second["run"].as_str().unwrap();
    let (out, published) = publish(&repo, &[run2, "--per-target"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        outcomes(&published).iter().all(|(_, o)| o == "updated"),
        "{published:#}"
    );
    // braid/notes cannot sit beside braid/notes/<slug> in git: said, and another branch
    // named takes it.
    let (out, whole) = publish(&repo, &[run2], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(whole["branches"][0]["outcome"], "failed");
    assert!(
        whole["branches"][0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("the remote has braid/notes/services-"),
        "{whole:#}"
    );
    let (out, whole) = publish(&repo, &[run2, "--branch", "braid/notes-all"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        outcomes(&whole),
        [("braid/notes-all".to_owned(), "created".to_owned())]
    );
    let branches = remote_branches(&remote);
    assert_eq!(branches.len(), 3, "{branches:?}");
    assert_eq!(branches[0].1, second["result"]["commit"].as_str().unwrap());

    // Someone else pushes to one target's branch; the next publish leaves it alone, says
    // so, and still moves the other.
    let other = repo.outside().join("other");
    let out = command("git", repo.outside())
        .args(["clone", "--quiet", remote.to_str().unwrap(), "other"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let git = |args: &[&str]| {
        let out = command("git", &other).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["checkout", "--quiet", "braid/notes/services-auth"]);
    std::fs::write(other.join("services/auth/NOTE"), "a reviewer's fix\n").unwrap();
    git(&["commit", "--quiet", "-am", "review"]);
    git(&["push", "--quiet", "origin", "braid/notes/services-auth"]);
    let theirs = remote_branches(&remote)[1].1.clone();
    let (out, third) = run_plan(
        &repo,
        &notes(&repo, "three", None),
        &["--workers", "2", "--per-target"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (out, published) = publish(
        &repo,
        &[third["run"].as_str().unwrap(), "--per-target"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        outcomes(&published),
        [
            (
                "braid/notes/services-auth".to_owned(),
                "changed_on_remote".to_owned()
            ),
            (
                "braid/notes/services-billing".to_owned(),
                "updated".to_owned()
            ),
        ]
    );
    assert!(
        published["branches"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("changed on the remote since braid published"),
        "{published:#}"
    );
    assert_eq!(
        remote_branches(&remote)[1].1,
        theirs,
        "the reviewer's commit stays"
    );
}

#[test]
fn pull_requests_are_opened_once_updated_after_and_a_rate_limit_is_waited_out() {
    let (repo, remote) = with_remote();
    // The remote reads as a GitHub repository; git pushes to the bare one.
    repo.git(&[
        "remote",
        "set-url",
        "origin",
        "https://github.com/acme/notes.git",
    ]);
    repo.git(&[
        "config",
        &format!("url.{}.insteadOf", remote.display()),
        "https://github.com/acme/notes.git",
    ]);
    let forge = Forge::start("sekrit");
    let env = [
        ("GITHUB_API_URL", forge.url()),
        ("GITHUB_TOKEN", "sekrit".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let (out, first) = run_plan(
        &repo,
        &notes(&repo, "one", Some(7200)),
        &["--workers", "2", "--per-target"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    forge.rate_limit(1, 1);
    let (out, published) = publish(
        &repo,
        &[first["run"].as_str().unwrap(), "--per-target", "--pr"],
        &env,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("answered 429"), "{}", stderr(&out));
    let pulls = forge.pulls();
    assert_eq!(pulls.len(), 2, "{pulls:#?}");
    assert_eq!(
        (pulls[0].head.as_str(), pulls[0].base.as_str()),
        ("braid/notes/services-auth", "main")
    );
    assert!(
        pulls[0].body.contains("**Winner**: attempt 1 of 1"),
        "{}",
        pulls[0].body
    );
    assert!(
        pulls[0].body.contains("- `noted`: passed"),
        "{}",
        pulls[0].body
    );
    assert_eq!(published["branches"][0]["pr"]["action"], "opened");
    // The 429 was waited out (Retry-After: 1), and per_hour 7200 spaced the two branches
    // half a second apart.
    let calls = forge.calls();
    let posts: Vec<_> = calls.iter().filter(|c| c.method == "POST").collect();
    assert_eq!(
        posts.iter().map(|c| c.status).collect::<Vec<_>>(),
        [429, 201, 201]
    );
    assert!(posts[1].at_ms - posts[0].at_ms >= 1000, "{posts:#?}");
    assert!(posts[2].at_ms - posts[1].at_ms >= 450, "{posts:#?}");

    // A later run: the same pull requests are updated, none is opened.
    let (out, second) = run_plan(
        &repo,
        &notes(&repo, "two", Some(7200)),
        &["--workers", "2", "--per-target"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (out, published) = publish(
        &repo,
        &[second["run"].as_str().unwrap(), "--per-target", "--pr"],
        &env,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{published:#}",
        stderr(&out)
    );
    assert_eq!(forge.pulls().len(), 2);
    assert_eq!(published["branches"][1]["pr"]["action"], "updated");
    assert!(
        forge.pulls()[1]
            .body
            .contains(second["run"].as_str().unwrap())
    );
    assert_eq!(
        forge.calls().iter().filter(|c| c.method == "PATCH").count(),
        2
    );

    // No token: refused before anything is pushed.
    let (out, _) = publish(
        &repo,
        &[second["run"].as_str().unwrap(), "--per-target", "--pr"],
        &[("GITHUB_API_URL", &forge.url())],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("set GITHUB_TOKEN or GH_TOKEN"),
        "{}",
        stderr(&out)
    );
}

/// A repository `name` beside the test's plan, with a bare remote `<name>.git` holding its
/// main, and a file that says whether its check passes.
fn service(holder: &TestRepo, name: &str, fixme: bool) -> PathBuf {
    let dir = holder.outside().join(name);
    let bare = holder.outside().join(format!("{name}.git"));
    let run = |dir: &Path, args: &[&str]| {
        let out = command("git", dir).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::create_dir_all(&dir).unwrap();
    run(&dir, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(dir.join("VERSION"), "1\n").unwrap();
    std::fs::write(dir.join("main.py"), if fixme { "# FIXME\n" } else { "\n" }).unwrap();
    run(&dir, &["add", "--all"]);
    run(&dir, &["commit", "--quiet", "-m", "first"]);
    run(
        holder.outside(),
        &["init", "--quiet", "--bare", bare.to_str().unwrap()],
    );
    run(&dir, &["remote", "add", "origin", bare.to_str().unwrap()]);
    run(&dir, &["push", "--quiet", "origin", "main"]);
    bare
}

fn braid_in(dir: &Path, args: &[&str]) -> (Output, Value) {
    let out = command(BIN, dir)
        .args(args)
        .env("BRAID_LOG", "warn")
        .output()
        .expect("braid runs");
    let value = serde_json::from_str(&stdout(&out)).unwrap_or(Value::Null);
    (out, value)
}

fn refs(dir: &Path) -> String {
    let out = command("git", dir)
        .args(["for-each-ref", "--format=%(refname) %(objectname)"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_batch_over_three_repositories_is_published_to_their_remotes_and_again_moves_the_same_branches()
{
    let holder = TestRepo::init();
    let names = ["svc-a", "svc-b", "svc-c"];
    let bares: Vec<PathBuf> = names
        .iter()
        .map(|n| service(&holder, n, *n == "svc-c"))
        .collect();
    let before: Vec<String> = names
        .iter()
        .map(|n| refs(&holder.outside().join(n)))
        .collect();
    let plan = |version: u32, clean: bool| {
        let clean = if clean {
            " && sed -i /FIXME/d main.py"
        } else {
            ""
        };
        holder.plan(&format!(
            r#"version: 1
name: bump
tasks:
  - id: bump
    for_each: {{repos: [svc-a, svc-b, svc-c]}}
    prompt: "Bump {{{{name}}}} ({{{{repo}}}})."
    agent: {{command: [sh, -c, 'echo {version} > VERSION{clean}']}}
    checks: [{{name: clean, run: "! grep -q FIXME main.py && grep -qx {version} VERSION", baseline: false}}]
"#
        ))
    };
    let dir = holder.outside();
    let (out, _) = braid_in(dir, &["validate", plan(2, false).to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for id in ["bump.svc-a", "bump.svc-b", "bump.svc-c"] {
        assert!(stdout(&out).contains(id), "{}", stdout(&out));
    }

    // First run: svc-c's check fails.
    let (out, first) = braid_in(
        dir,
        &[
            "run",
            plan(2, false).to_str().unwrap(),
            "--json",
            "--workers",
            "2",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let run = first["run"].as_str().unwrap().to_owned();
    let cached = holder.cache().join("runs").join(&run).join("report.json");
    assert!(cached.is_file(), "{} missing", cached.display());
    let statuses: Vec<&str> = first["repos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["succeeded", "succeeded", "failed"],
        "{:#}",
        first["repos"]
    );
    let b = &first["targets"][0];
    assert_eq!(
        (
            b["total"].as_u64(),
            b["succeeded"].as_u64(),
            b["failed"].as_u64()
        ),
        (Some(3), Some(2), Some(1))
    );
    // Each repository's result branch is in braid's clone, not in the repository.
    let a = &first["repos"][0];
    let clone = PathBuf::from(a["clone"].as_str().unwrap());
    assert!(clone.starts_with(holder.cache()), "{}", clone.display());
    let show = command("git", &clone)
        .args([
            "show",
            &format!("{}:VERSION", a["branch"].as_str().unwrap()),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&show.stdout), "2\n");
    for (name, refs_before) in names.iter().zip(&before) {
        assert_eq!(&refs(&dir.join(name)), refs_before, "{name} was touched");
    }
    let (out, _) = braid_in(dir, &["report", &run]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("Repositories: 3"), "{}", stdout(&out));

    // The fix, for the failure only.
    let (out, again) = braid_in(
        dir,
        &[
            "run",
            plan(2, true).to_str().unwrap(),
            "--json",
            "--rerun-failed",
            &run,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("re-running 1 of 3 repositories"),
        "{}",
        stderr(&out)
    );
    let carried: Vec<&Value> = again["repos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["carried_from"])
        .collect();
    assert_eq!(
        carried,
        [
            &Value::from(run.as_str()),
            &Value::from(run.as_str()),
            &Value::Null
        ]
    );

    // Published: each repository's remote gets braid/bump.
    let rerun = again["run"].as_str().unwrap().to_owned();
    let (out, published) = braid_in(dir, &["publish", &rerun, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        outcomes(&published),
        [
            ("braid/bump".to_owned(), "created".to_owned()),
            ("braid/bump".to_owned(), "created".to_owned()),
            ("braid/bump".to_owned(), "created".to_owned()),
        ]
    );
    let firsts: Vec<Vec<(String, String)>> = bares.iter().map(|b| remote_branches(b)).collect();
    for (branches, r) in firsts.iter().zip(again["repos"].as_array().unwrap()) {
        assert_eq!(branches.len(), 1, "{branches:?}");
        assert_eq!(branches[0].1, r["commit"].as_str().unwrap());
    }

    // A later run of the plan: publishing moves the same branches and makes none.
    let (out, later) = braid_in(dir, &["run", plan(3, true).to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (out, published) = braid_in(dir, &["publish", later["run"].as_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        outcomes(&published).iter().all(|(_, o)| o == "updated"),
        "{published:#}"
    );
    for (bare, before) in bares.iter().zip(&firsts) {
        let now = remote_branches(bare);
        assert_eq!(now.len(), 1, "{now:?}");
        assert_ne!(now[0].1, before[0].1);
        let version = command("git", bare)
            .args(["show", "braid/bump:VERSION"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&version.stdout), "3\n");
    }
    for (name, refs_before) in names.iter().zip(&before) {
        assert_eq!(&refs(&dir.join(name)), refs_before, "{name} was touched");
    }
}

#[test]
fn merge_requests_on_gitlab_are_opened_then_updated() {
    let (repo, _remote) = with_remote();
    let forge = Forge::start("glpat");
    let env = [
        ("GITLAB_API_URL", forge.url()),
        ("GITLAB_TOKEN", "glpat".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let args = [
        "--per-target",
        "--pr",
        "--forge",
        "gitlab",
        "--forge-repo",
        "group/notes",
        "--base",
        "main",
    ];
    for (round, word) in ["one", "two"].iter().enumerate() {
        let (out, report) = run_plan(
            &repo,
            &notes(&repo, word, None),
            &["--workers", "2", "--per-target"],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let mut all = vec![report["run"].as_str().unwrap()];
        all.extend(args);
        let (out, published) = publish(&repo, &all, &env);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}\n{published:#}",
            stderr(&out)
        );
        let want = if round == 0 { "opened" } else { "updated" };
        assert_eq!(
            published["branches"][0]["pr"]["action"], want,
            "{published:#}"
        );
    }
    let pulls = forge.pulls();
    assert_eq!(pulls.len(), 2, "{pulls:#?}");
    assert_eq!(
        (pulls[0].repo.as_str(), pulls[0].head.as_str()),
        ("group/notes", "braid/notes/services-auth")
    );
    assert_eq!(
        forge.calls().iter().filter(|c| c.method == "PUT").count(),
        2
    );
}
