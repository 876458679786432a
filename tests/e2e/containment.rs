//! Misbehaving agents and checks, and runs that end badly: each through the binary, each
//! leaving the user's repository (HEAD, index, status, refs, config, hooks, objects) as it
//! was, no process and no worktree behind, and a report that says what happened.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use braid_tests::{TestRepo, braid, files_under, stderr, stdout};
use serde_json::Value;

use crate::{BIN, attempt, run_plan, task};

/// A repository with a tracked folder, and an agent script `body` run for one task.
fn one_task(repo: &TestRepo, body: &str, extra: &str) -> PathBuf {
    let agent = repo.script("agent.sh", body);
    repo.out();
    repo.plan(&format!(
        r#"version: 1
repo: repo
sandbox: {{writable: [out]}}
tasks:
  - id: t
    prompt: misbehave
    agent: {{command: ["{agent}"]}}
{extra}"#,
        agent = agent.display()
    ))
}

/// Everything that must be the same after the run: the repository and the files beside it.
struct Before {
    repo: braid_tests::Snapshot,
    beside: Vec<(PathBuf, Vec<u8>)>,
}

fn before(repo: &TestRepo) -> Before {
    Before {
        repo: repo.snapshot(),
        beside: beside(repo),
    }
}

/// The files beside the repository that no agent may write, with the folder `elsewhere`.
fn beside(repo: &TestRepo) -> Vec<(PathBuf, Vec<u8>)> {
    files_under(&repo.outside().join("elsewhere"))
}

fn assert_contained(repo: &TestRepo, before: &Before) {
    repo.assert_untouched(&before.repo);
    assert_eq!(
        beside(repo),
        before.beside,
        "files outside the worktree changed"
    );
    assert_eq!(repo.survivors(), Vec::<String>::new(), "processes survived");
}

fn contained_notes(attempt: &Value) -> String {
    attempt["contained"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

fn elsewhere(repo: &TestRepo) -> PathBuf {
    let dir = repo.outside().join("elsewhere");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("keep.txt"), "keep\n").unwrap();
    dir
}

#[test]
fn a_git_file_pointed_at_the_users_repository_changes_nothing_there() {
    let repo = TestRepo::init();
    let before = before(&repo);
    let user_git = repo.git_dir();
    let plan = one_task(
        &repo,
        &format!(
            r#"echo "gitdir: {git}" > .git
echo changed > README.md
echo new > new.txt
git add --all 2>/dev/null; git commit -qm sneaky 2>/dev/null
exit 0
"#,
            git = user_git.display()
        ),
        "",
    );
    let (out, report) = run_plan(&repo, &plan, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let a = attempt(task(&report, "t"), 1);
    assert_eq!(a["status"], "succeeded", "{a:#}");
    assert!(contained_notes(a).contains(".git elsewhere"), "{a:#}");
    let commit = a["commit"].as_str().unwrap();
    assert_eq!(repo.show(commit, "new.txt").as_deref(), Some("new\n"));
    assert_eq!(repo.show(commit, "README.md").as_deref(), Some("changed\n"));
    assert_contained(&repo, &before);
}

#[test]
fn refs_branches_hooks_and_config_an_agent_makes_stay_in_its_worktree() {
    let repo = TestRepo::init();
    let before = before(&repo);
    let user_git = repo.git_dir();
    let plan = one_task(
        &repo,
        &format!(
            r#"git update-ref refs/heads/main HEAD~0 2>&1
git commit -q --allow-empty -m moved && git update-ref refs/heads/main HEAD
git update-ref "refs/heads/braid/$BRAID_RUN_ID/t/winner" HEAD
git update-ref "refs/heads/braid/$BRAID_RUN_ID/result" HEAD
git config core.hooksPath /tmp/evil-hooks
git config core.fsmonitor "touch {user}/fsmonitor-ran"
mkdir -p "$(git rev-parse --git-dir)/hooks"
printf '#!/bin/sh\ntouch {user}/hook-ran\n' > "$(git rev-parse --git-dir)/hooks/post-commit"
printf '#!/bin/sh\ntouch hook-ran\n' > {user}/hooks/pre-commit 2>/dev/null
echo "[core] fsmonitor = evil" >> {user}/config 2>/dev/null
git switch -q -C feature
echo work > work.txt
exit 0
"#,
            user = user_git.display()
        ),
        "",
    );
    let (out, report) = run_plan(&repo, &plan, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let a = attempt(task(&report, "t"), 1);
    assert_eq!(a["status"], "succeeded", "{a:#}");
    assert_eq!(a["lost"], 0, "the attempt was not lost: {a:#}");
    let notes = contained_notes(a);
    assert!(
        notes.contains("switched its worktree to a branch"),
        "{notes}"
    );
    assert!(notes.contains("refs"), "{notes}");
    // The attempt's own commit is kept under its work.
    let commit = a["commit"].as_str().unwrap();
    assert_eq!(repo.show(commit, "work.txt").as_deref(), Some("work\n"));
    let run = report["run"].as_str().unwrap();
    let winner = repo.git(&["rev-parse", &format!("braid/{run}/t/winner")]);
    assert_eq!(winner, commit);
    assert!(!repo.git_dir().join("fsmonitor-ran").exists());
    assert!(!repo.git_dir().join("hook-ran").exists());
    assert_contained(&repo, &before);
    // The user's own git commands run no planted hook.
    repo.commit(&[("after.txt", "x\n")], "the user's commit");
    assert!(!repo.git_dir().join("hook-ran").exists());
    assert!(!repo.git_dir().join("fsmonitor-ran").exists());
}

#[test]
fn writes_to_the_users_tree_home_and_elsewhere_fail_and_are_reported() {
    let repo = TestRepo::init();
    let dir = elsewhere(&repo);
    let before = before(&repo);
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let escape = format!("{home}/braid-escape-{}", repo.tag());
    let plan = one_task(
        &repo,
        &format!(
            r#"echo mine > mine.txt
fail=0
echo x > {user}/README.md || fail=1
echo x > {user}/planted.txt || fail=1
echo x > {escape} || fail=1
echo x > {dir}/keep.txt || fail=1
rm -f {dir}/keep.txt || fail=1
exit $fail
"#,
            user = repo.path.display(),
            dir = dir.display(),
        ),
        "",
    );
    let (out, report) = run_plan(&repo, &plan, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let a = attempt(task(&report, "t"), 1);
    assert_eq!(a["status"], "failed");
    assert_eq!(a["error"], "the agent exited with code 1");
    let log = std::fs::read_to_string(a["log"].as_str().unwrap()).unwrap();
    assert!(log.contains("Read-only file system"), "{log}");
    assert!(!Path::new(&escape).exists(), "the agent wrote {escape}");
    assert!(!repo.path.join("planted.txt").exists());
    // What it did in its worktree is kept.
    let commit = a["commit"].as_str().unwrap();
    assert_eq!(repo.show(commit, "mine.txt").as_deref(), Some("mine\n"));
    assert_contained(&repo, &before);
}

#[test]
fn a_tracked_folder_replaced_by_a_link_outside_commits_the_link_and_reaches_nothing() {
    let repo = TestRepo::init();
    repo.commit(&[("src/a.txt", "inside\n"), ("src/b.txt", "b\n")], "src");
    let dir = elsewhere(&repo);
    std::fs::write(dir.join("a.txt"), "outside secret\n").unwrap();
    let before = before(&repo);
    let plan = one_task(
        &repo,
        &format!("rm -rf src\nln -s {} src\n", dir.display()),
        "    attempts: 2\n",
    );
    // Two attempts on one worker: the second reuses the worktree the link was left in.
    let (out, report) = run_plan(&repo, &plan, &["--workers", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for n in [1, 2] {
        let a = attempt(task(&report, "t"), n);
        assert_eq!(a["status"], "succeeded", "{a:#}");
        let commit = a["commit"].as_str().unwrap();
        // As `git add --all` stages it: the link, and the folder's files gone.
        let tree = repo.git(&["ls-tree", "-r", commit]);
        assert!(tree.contains("120000 blob"), "{tree}");
        assert!(!tree.contains("src/a.txt"), "{tree}");
        assert!(!tree.contains("outside secret"));
        assert_eq!(
            repo.show(commit, "src").as_deref(),
            Some(dir.to_str().unwrap())
        );
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("a.txt")).unwrap(),
        "outside secret\n"
    );
    assert_contained(&repo, &before);
}

#[test]
fn a_nested_repository_fails_the_attempt_and_says_why() {
    let repo = TestRepo::init();
    let before = before(&repo);
    let plan = one_task(
        &repo,
        r#"git init -q sub
echo inner > sub/file.txt
git -C sub add file.txt
git -C sub -c user.name=a -c user.email=a@b commit -qm inner
echo outer > outer.txt
"#,
        "",
    );
    let (out, report) = run_plan(&repo, &plan, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let a = attempt(task(&report, "t"), 1);
    assert_eq!(a["status"], "failed", "{a:#}");
    let error = a["error"].as_str().unwrap();
    assert!(
        error.contains("sub is a nested git repository")
            && error.contains("not in the attempt's commit"),
        "{error}"
    );
    assert_contained(&repo, &before);
}

#[test]
fn a_submodule_an_agent_adds_touches_nothing_of_the_users() {
    let repo = TestRepo::init();
    let other = TestRepo::init();
    other.commit(&[("lib.txt", "a library\n")], "its own history");
    let before = before(&repo);
    let plan = one_task(
        &repo,
        &format!(
            "git -c protocol.file.allow=always submodule add -q {} lib 2>&1\n",
            other.path.display()
        ),
        "",
    );
    let (out, report) = run_plan(&repo, &plan, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let a = attempt(task(&report, "t"), 1);
    assert_eq!(a["status"], "failed", "{a:#}");
    assert!(
        a["error"]
            .as_str()
            .unwrap()
            .contains("lib is a nested git repository"),
        "{a:#}"
    );
    assert!(
        !String::from_utf8_lossy(&std::fs::read(repo.git_dir().join("config")).unwrap())
            .contains("submodule")
    );
    assert_contained(&repo, &before);
}

#[test]
fn daemons_of_agents_and_checks_die_with_their_attempt() {
    let repo = TestRepo::init();
    let before = before(&repo);
    let tag = repo.tag();
    let plan = one_task(
        &repo,
        &format!(
            "env -i setsid sh -c 'sleep 300; :' {tag} </dev/null >/dev/null 2>&1 &\n\
             nohup sh -c 'sleep 301; :' {tag} </dev/null >/dev/null 2>&1 &\n\
             echo done > done.txt\n"
        ),
        &format!(
            "    checks:\n      - name: daemon\n        run: \"env -i setsid sh -c 'sleep 302; :' {tag} </dev/null >/dev/null 2>&1 & true\"\n"
        ),
    );
    let (out, report) = run_plan(&repo, &plan, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(attempt(task(&report, "t"), 1)["status"], "succeeded");
    assert_contained(&repo, &before);
}

#[test]
fn an_agent_that_kills_its_parent_does_not_kill_braid() {
    let repo = TestRepo::init();
    let before = before(&repo);
    // Its parent is the sandbox's first process; braid is not even in its world.
    let plan = one_task(
        &repo,
        "echo x > x.txt\nkill -9 $PPID\nkill -9 1\nsleep 0.2\n",
        "",
    );
    let (out, report) = run_plan(&repo, &plan, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let a = attempt(task(&report, "t"), 1);
    assert_eq!(a["status"], "succeeded", "{a:#}");
    assert_contained(&repo, &before);
}

#[test]
fn a_score_script_runs_as_the_base_has_it_and_protected_paths_fail_an_attempt() {
    let repo = TestRepo::init();
    repo.commit(
        &[
            ("score.sh", "#!/bin/sh\necho 1\n"),
            ("tests/goal.txt", "the goal\n"),
        ],
        "score and goal",
    );
    repo.git(&["update-index", "--chmod=+x", "score.sh"]);
    repo.git(&["commit", "-qm", "exec"]);
    let before = before(&repo);
    let agent = repo.script(
        "agent.sh",
        r#"case "$BRAID_ATTEMPT" in
  1) echo one > a.txt ;;
  2) printf '#!/bin/sh\necho 100\n' > score.sh; echo two > a.txt ;;
  3) echo weaker > tests/goal.txt; echo three > a.txt ;;
esac
"#,
    );
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
protect: ["tests/**"]
tasks:
  - id: t
    prompt: score high
    attempts: 3
    agent: {{command: ["{agent}"]}}
    checks:
      - name: rewrite-score
        run: "printf '#!/bin/sh\\necho 50\\n' > score.sh"
    score: {{run: ./score.sh}}
"#,
        agent = agent.display()
    ));
    let (out, report) = run_plan(&repo, &plan, &["--workers", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let t = task(&report, "t");
    // A check rewrote the script, but the score is the base's script's.
    assert_eq!(attempt(t, 1)["score"], 1.0, "{t:#}");
    let second = attempt(t, 2);
    assert_eq!(second["status"], "failed");
    assert_eq!(
        second["error"],
        "the attempt changed protected paths: score.sh (protected: tests/**, score.sh)"
    );
    let third = attempt(t, 3);
    assert_eq!(third["status"], "failed");
    assert_eq!(
        third["error"],
        "the attempt changed protected paths: tests/goal.txt (protected: tests/**, score.sh)"
    );
    assert_eq!(t["winner"], 1);
    assert_contained(&repo, &before);
}

/// Starts `braid run` on a plan whose two attempts wait; returns the child once both
/// agents run.
fn start_waiting_run(repo: &TestRepo) -> std::process::Child {
    let out = repo.out();
    let plan = one_task(
        repo,
        &format!(
            "echo started > \"{out}/$BRAID_ATTEMPT\"\necho part > part.txt\nsh -c 'sleep 300; :' {tag}\n",
            out = out.display(),
            tag = repo.tag()
        ),
        "    attempts: 2\n",
    );
    let child = braid_tests::command(BIN, repo.outside())
        .args(["run", plan.to_str().unwrap(), "--workers", "2", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(out.join("1").exists() && out.join("2").exists()) {
        assert!(Instant::now() < deadline, "the agents did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn signal(pid: u32, name: &str, repo: &TestRepo) {
    let status = braid_tests::command("kill", repo.outside())
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn sigterm_and_sighup_end_a_run_as_sigint_does() {
    for (name, code) in [("TERM", 143), ("HUP", 129)] {
        let repo = TestRepo::init();
        let before = before(&repo);
        let child = start_waiting_run(&repo);
        signal(child.id(), name, &repo);
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(code), "SIG{name}: {}", stderr(&out));
        let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(report["status"], "cancelled");
        for n in [1, 2] {
            let a = attempt(task(&report, "t"), n);
            assert_eq!(a["status"], "cancelled");
            assert!(a["commit"].is_string(), "work is kept: {a:#}");
        }
        let run = report["run"].as_str().unwrap();
        assert!(
            !repo
                .git_dir()
                .join("braid/runs")
                .join(run)
                .join("lock.json")
                .exists()
        );
        assert_contained(&repo, &before);
    }
}

#[test]
fn a_run_killed_with_sigkill_takes_its_agents_and_the_next_command_cleans_up() {
    let repo = TestRepo::init();
    let before = before(&repo);
    let mut child = start_waiting_run(&repo);
    signal(child.id(), "KILL", &repo);
    let _ = child.wait();
    // The agents die with braid: their sandboxes die with their parent.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !repo.survivors().is_empty() {
        assert!(
            Instant::now() < deadline,
            "agents outlived braid: {:?}",
            repo.survivors()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let runs = repo.git_dir().join("braid/runs");
    let run = std::fs::read_dir(&runs)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .file_name()
        .to_string_lossy()
        .into_owned();
    assert!(runs.join(&run).join("lock.json").exists());
    assert!(
        repo.cache().join("work").join(&run).exists(),
        "worktrees left by the kill"
    );

    let shown = braid(
        Path::new(BIN),
        &repo.path,
        &["report", &run, "--format", "json"],
    );
    assert_eq!(shown.status.code(), Some(0), "{}", stderr(&shown));
    assert!(
        stderr(&shown).contains(&format!("run {run} ended without cleaning up")),
        "{}",
        stderr(&shown)
    );
    let report: Value = serde_json::from_str(&stdout(&shown)).unwrap();
    assert_eq!(report["status"], "crashed");
    assert!(!runs.join(&run).join("lock.json").exists());
    assert!(!repo.cache().join("work").join(&run).exists());
    assert_contained(&repo, &before);
}

#[test]
fn gc_removes_what_dead_runs_left_and_says_what_it_freed() {
    let repo = TestRepo::init();
    let mut child = start_waiting_run(&repo);
    signal(child.id(), "KILL", &repo);
    let _ = child.wait();
    let stray = repo.cache().join("work/20200101-000000-dead");
    std::fs::create_dir_all(&stray).unwrap();
    std::fs::write(stray.join("left.txt"), vec![b'x'; 5000]).unwrap();
    let out = braid(Path::new(BIN), &repo.path, &["gc"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("removed ") && text.contains("20200101-000000-dead (5.0 kB)"),
        "{text}"
    );
    assert!(text.contains("freed "), "{text}");
    assert!(
        stderr(&out).contains("marked it crashed"),
        "{}",
        stderr(&out)
    );
    let left: Vec<_> = std::fs::read_dir(repo.cache().join("work"))
        .unwrap()
        .flatten()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn gc_removes_the_copy_of_a_repository_that_is_gone() {
    let repo = TestRepo::init();
    let plan = repo.plan("version: 1\nrepo: repo\ntasks:\n  - id: a\n    prompt: p\n    agent: {command: [sh, -c, 'echo x > x.txt']}\n");
    let (out, _) = crate::run_plan(&repo, &plan, &["--workers", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mirrors = || -> Vec<_> {
        std::fs::read_dir(repo.cache().join("repos"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    assert_eq!(
        mirrors().len(),
        1,
        "the run's worker kept a copy of the repository"
    );
    // While the repository is there, the copy stays.
    let kept = braid(Path::new(BIN), repo.outside(), &["gc"]);
    assert_eq!(kept.status.code(), Some(0), "{}", stderr(&kept));
    assert_eq!(mirrors().len(), 1);
    std::fs::rename(&repo.path, repo.outside().join("moved")).unwrap();
    let out = braid(Path::new(BIN), repo.outside(), &["gc"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("/repos/"), "{}", stdout(&out));
    assert!(mirrors().is_empty(), "{:?}", mirrors());
}

#[test]
fn two_hundred_attempts_at_once_each_get_a_worktree() {
    let repo = TestRepo::init();
    let before = before(&repo);
    let agent = repo.script(
        "agent.sh",
        "echo \"$BRAID_ATTEMPT\" > \"out-$BRAID_TASK_ID.txt\"\nsleep 1\n",
    );
    let mut yaml = format!(
        "version: 1\nrepo: repo\ndefaults:\n  agent: {{command: [\"{}\"]}}\n  attempts: 25\ntasks:\n",
        agent.display()
    );
    for i in 0..8 {
        yaml.push_str(&format!("  - {{id: t{i}, prompt: go}}\n"));
    }
    let plan = repo.plan(&yaml);
    let (out, report) = run_plan(&repo, &plan, &["--workers", "50", "--slots", "4"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut ran = 0;
    for t in report["tasks"].as_array().unwrap() {
        for a in t["attempts"].as_array().unwrap() {
            assert_eq!(a["status"], "succeeded", "{a:#}");
            assert_eq!(a["lost"], 0, "{a:#}");
            ran += 1;
        }
    }
    assert_eq!(ran, 200);
    assert_contained(&repo, &before);
}

#[test]
fn the_users_own_worktrees_are_never_pruned() {
    let repo = TestRepo::init();
    // A worktree of the user's on a disk that is not mounted now: its folder is missing,
    // and `git worktree prune` would forget it.
    let away = repo.outside().join("on-a-usb-stick");
    repo.git(&["worktree", "add", "--quiet", away.to_str().unwrap()]);
    std::fs::remove_dir_all(&away).unwrap();
    let before = before(&repo);
    let plan = one_task(&repo, "echo x > x.txt\n", "");
    let (out, _) = run_plan(&repo, &plan, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(repo.git_dir().join("worktrees/on-a-usb-stick").is_dir());
    assert_contained(&repo, &before);
}

#[test]
fn where_landlock_contains_the_agent_writes_outside_still_fail() {
    let repo = TestRepo::init();
    let dir = elsewhere(&repo);
    let before = before(&repo);
    let plan = one_task(
        &repo,
        &format!(
            "echo mine > mine.txt\necho x > {user}/planted.txt || echo x > {dir}/keep.txt || exit 7\n",
            user = repo.path.display(),
            dir = dir.display(),
        ),
        "",
    );
    let out = braid_tests::command(BIN, repo.outside())
        .args(["run", plan.to_str().unwrap(), "--json"])
        .env("BRAID_SANDBOX", "landlock")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Landlock keeps agents"),
        "{}",
        stderr(&out)
    );
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let a = attempt(task(&report, "t"), 1);
    assert_eq!(a["error"], "the agent exited with code 7");
    assert!(!repo.path.join("planted.txt").exists());
    let commit = a["commit"].as_str().unwrap();
    assert_eq!(repo.show(commit, "mine.txt").as_deref(), Some("mine\n"));
    repo.assert_untouched(&before.repo);
    assert_eq!(beside(&repo), before.beside);
}

/// An agent that changes files the ways a journal of folder notes could miss: a new
/// content of the same size with its time set back, a mode alone, an edit through a
/// rename, a second name of a file (refused in the sandbox: it copies instead), an
/// ignored build folder. First it fails unless its worktree is exactly the base, as the
/// attempt before it in the same worktree left nothing, and its index file is HEAD's with
/// the stat of every file as it is.
const BEHIND: &str = r#"set -e
git diff-index --cached --quiet HEAD || { echo "the index is not HEAD's tree"; exit 6; }
git diff-files --quiet || { echo "the index's stat is not the files'"; exit 6; }
dirty=$(git status --porcelain --ignored)
[ -z "$dirty" ] || { echo "the worktree is not the base: $dirty"; exit 3; }
[ "$(cat a.txt)" = one ] && [ "$(cat hard.txt)" = hard ] && [ ! -x c.sh ] || exit 4
was=$(stat -c %y a.txt)
printf 'ONE\n' > a.txt
touch -d "$was" a.txt
chmod +x c.sh
if ln hard.txt link.txt 2>/dev/null; then
  [ "$LINKS" = yes ] || { echo "a hard link was made in the sandbox"; exit 5; }
  echo more >> link.txt
  rm link.txt
else
  cp hard.txt link.txt
  echo more >> link.txt
fi
printf 'x\n' > d/.swap
mv d/.swap d/e.txt
mkdir -p build
echo object > build/o.o
echo "attempt $BRAID_ATTEMPT" > "new-$BRAID_ATTEMPT.txt"
"#;

fn behind_repo() -> TestRepo {
    let repo = TestRepo::init();
    repo.commit(
        &[
            ("a.txt", "one\n"),
            ("hard.txt", "hard\n"),
            ("c.sh", "echo c\n"),
            ("d/e.txt", "e\n"),
            (".gitignore", "build/\n"),
        ],
        "files",
    );
    repo
}

/// The files of `commit` with their modes, as `git ls-tree -r` lists them.
fn tree_listing(repo: &TestRepo, commit: &str) -> Vec<(String, String, String)> {
    repo.git(&["ls-tree", "-r", commit])
        .lines()
        .map(|line| {
            let (meta, path) = line.split_once('\t').unwrap();
            let mode = meta.split(' ').next().unwrap().to_owned();
            let text = repo.show(commit, path).unwrap_or_default();
            (path.to_owned(), mode, text)
        })
        .collect()
}

#[test]
fn what_an_agent_changes_behind_braids_back_is_committed_as_git_add_all_stages_it() {
    let repo = behind_repo();
    let before = before(&repo);
    let plan = one_task(&repo, BEHIND, "    attempts: 3\n");
    // One slot: each attempt reuses the worktree the one before it left.
    let (out, report) = run_plan(&repo, &plan, &["--workers", "1", "--slots", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for n in 1..=3 {
        let a = attempt(task(&report, "t"), n);
        assert_eq!(a["status"], "succeeded", "{a:#}");
        let commit = a["commit"].as_str().unwrap();
        let s = |x: &str| x.to_owned();
        let new = format!("new-{n}.txt");
        let mut expected = vec![
            (s(".gitignore"), s("100644"), s("build/\n")),
            (s("README.md"), s("100644"), s("# test\n")),
            (s("a.txt"), s("100644"), s("ONE\n")),
            (s("c.sh"), s("100755"), s("echo c\n")),
            (s("d/e.txt"), s("100644"), s("x\n")),
            (s("hard.txt"), s("100644"), s("hard\n")),
            (s("link.txt"), s("100644"), s("hard\nmore\n")),
            (new, s("100644"), format!("attempt {n}\n")),
        ];
        expected.sort();
        assert_eq!(tree_listing(&repo, commit), expected, "attempt {n}");
    }
    assert_contained(&repo, &before);
}

#[test]
fn a_machine_out_of_inotify_instances_still_commits_right_and_says_what_to_raise() {
    use rustix::fs::inotify::{CreateFlags, init};
    let repo = behind_repo();
    let before = before(&repo);
    let plan = one_task(&repo, BEHIND, "    attempts: 3\n");
    // Every inotify instance this user may have, held: braid's worktrees get none. The
    // file limit is raised first, so that the user's limit is the one reached.
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: nofile.maximum,
            maximum: nofile.maximum,
        },
    );
    // No opencode may start meanwhile (it waits forever for an instance).
    let _all = crate::INOTIFY.write().unwrap_or_else(|e| e.into_inner());
    let mut held = Vec::new();
    let reached = loop {
        match init(CreateFlags::CLOEXEC) {
            Ok(fd) => held.push(fd),
            Err(rustix::io::Errno::MFILE) => break held.len(),
            Err(e) => panic!("inotify_init: {e}"),
        }
        assert!(held.len() < 1 << 20, "no limit on inotify instances");
    };
    let limit: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        reached <= limit,
        "{reached} instances held, over the limit {limit}"
    );
    let (out, report) = run_plan(&repo, &plan, &["--workers", "1", "--slots", "1"]);
    drop(held);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Surveyed in full: each attempt still starts at the base and commits what it changed.
    for n in 1..=3 {
        let a = attempt(task(&report, "t"), n);
        assert_eq!(a["status"], "succeeded", "{a:#}");
        let commit = a["commit"].as_str().unwrap();
        assert_eq!(repo.show(commit, "a.txt").as_deref(), Some("ONE\n"));
        assert_eq!(
            repo.show(commit, &format!("new-{n}.txt")),
            Some(format!("attempt {n}\n"))
        );
        assert_eq!(
            repo.show(commit, "link.txt").as_deref(),
            Some("hard\nmore\n")
        );
    }
    let said = stderr(&out);
    assert_eq!(
        said.lines()
            .filter(
                |line| line.contains("limit fs.inotify.max_user_instances (")
                    && line.contains("`sysctl fs.inotify.max_user_instances=<more>`")
            )
            .count(),
        1,
        "said once, with the limit to raise: {said}"
    );
    assert_contained(&repo, &before);
}

#[test]
fn without_a_sandbox_an_edit_through_a_second_name_is_committed_and_undone() {
    let repo = behind_repo();
    let before = before(&repo);
    let plan = one_task(
        &repo,
        &format!("export LINKS=yes\n{BEHIND}"),
        "    attempts: 3\n    sandbox: off\n",
    );
    let (out, report) = run_plan(&repo, &plan, &["--workers", "1", "--slots", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for n in 1..=3 {
        let a = attempt(task(&report, "t"), n);
        let log = std::fs::read_to_string(a["log"].as_str().unwrap()).unwrap_or_default();
        assert_eq!(a["status"], "succeeded", "{a:#}\n{log}\n{}", stderr(&out));
        let commit = a["commit"].as_str().unwrap();
        // Written through a name braid never saw, then that name removed.
        assert_eq!(
            repo.show(commit, "hard.txt").as_deref(),
            Some("hard\nmore\n")
        );
        assert_eq!(repo.show(commit, "link.txt"), None);
        assert_eq!(repo.show(commit, "a.txt").as_deref(), Some("ONE\n"));
    }
    assert_contained(&repo, &before);
}

#[test]
fn what_an_agent_stages_itself_counts_as_git_add_all_takes_it() {
    let repo = behind_repo();
    let before = before(&repo);
    // It drops a file it did not change from the index, forces an ignored file into it,
    // and stages an edit; the next attempt in the worktree starts from the base.
    let script = r#"set -e
git diff-index --cached --quiet HEAD && git diff-files --quiet || exit 6
[ -z "$(git status --porcelain --ignored)" ] || exit 3
git rm --cached --quiet a.txt
mkdir -p build && echo forced > build/forced.o && echo loose > build/loose.o
git add -f build/forced.o
echo staged >> d/e.txt && git add d/e.txt
"#;
    let plan = one_task(&repo, script, "    attempts: 2\n");
    let (out, report) = run_plan(&repo, &plan, &["--workers", "1", "--slots", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for n in 1..=2 {
        let a = attempt(task(&report, "t"), n);
        assert_eq!(a["status"], "succeeded", "{a:#}");
        let commit = a["commit"].as_str().unwrap();
        let paths: Vec<String> = tree_listing(&repo, commit)
            .into_iter()
            .map(|(path, _, _)| path)
            .collect();
        assert_eq!(
            paths,
            [
                ".gitignore",
                "README.md",
                "a.txt",
                "build/forced.o",
                "c.sh",
                "d/e.txt",
                "hard.txt"
            ],
            "attempt {n}"
        );
        assert_eq!(repo.show(commit, "d/e.txt").as_deref(), Some("e\nstaged\n"));
    }
    assert_contained(&repo, &before);
}
