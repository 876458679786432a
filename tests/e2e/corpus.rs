//! The merge corpus: braid's merger against the git CLI on generated commit pairs.
//!
//! Every pair is two branches off a shared history, each with a few random operations
//! (edits, adds, deletes, renames of files and directories, mode and type changes, binary
//! edits, a file where the other side has a directory), plus criss-cross histories with
//! two merge bases and one fixed pair per conflict kind. For each pair braid's verdict
//! (clean or not), its tree when clean and its conflicted paths must equal what
//! `git merge-tree --write-tree` says; the fixed pairs must also be given the right kind.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use braid_orchestrator::merge::{ConflictKind, Merger, Route, Verdict};
use braid_tests::{TestRepo, command};

/// One change a side makes.
#[derive(Debug, Clone)]
enum Op {
    /// Replace line `n` of a file.
    Edit(String, usize, String),
    /// Add (or overwrite) a file.
    Add(String, String),
    Delete(String),
    Rename(String, String),
    /// Move a whole directory.
    RenameDir(String, String),
    /// Flip the executable bit.
    Chmod(String),
    /// Replace a file with a symlink.
    Symlink(String),
    /// Rewrite a binary file.
    Binary(String, String),
}

const FILES: &[&str] = &[
    "top.txt",
    "script.sh",
    "a/one.txt",
    "a/two.txt",
    "a/b/three.txt",
    "c/four.txt",
    "c/five.txt",
    "d/x.txt",
    "d/y.txt",
    "d/sub/z.txt",
];
const NEW_NAMES: &[&str] = &[
    "new.txt",
    "a/new.txt",
    "a/b/new.txt",
    "c/new.txt",
    "e/new.txt",
    "d/new.txt",
    "fresh/dir/file.txt",
    "top.txt/inner.txt",
    "c/four.txt/inner.txt",
    "fd",
    "fd/inner.txt",
];
const DIRS: &[&str] = &["a/b", "c", "d", "d/sub"];

fn base_files() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = FILES
        .iter()
        .map(|f| {
            let text: String = (1..=12).map(|i| format!("{f} line {i}\n")).collect();
            (f.to_string(), text.into_bytes())
        })
        .collect();
    files.push(("bin.dat".into(), b"\0\x01binary\0base\xff".to_vec()));
    files
}

fn apply(dir: &Path, op: &Op) {
    let path = |p: &str| dir.join(p);
    let is_file = |p: &str| path(p).symlink_metadata().is_ok_and(|m| m.is_file());
    // Something that is not a directory where a parent directory would have to be.
    let blocked = |target: &Path| {
        target
            .ancestors()
            .skip(1)
            .take_while(|a| *a != dir)
            .any(|a| a.symlink_metadata().is_ok_and(|m| !m.is_dir()))
    };
    match op {
        Op::Edit(f, n, token) if is_file(f) => {
            let text = std::fs::read_to_string(path(f)).unwrap_or_default();
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            if lines.is_empty() {
                lines.push(String::new());
            }
            let n = n % lines.len();
            lines[n] = format!("{} {token}", lines[n]);
            std::fs::write(path(f), lines.join("\n") + "\n").expect("edit");
        }
        Op::Add(f, text) => {
            let target = path(f);
            // A path under an existing file cannot be made; the op is skipped.
            if blocked(&target) || target.is_dir() {
                return;
            }
            std::fs::create_dir_all(target.parent().expect("parent")).expect("dirs");
            std::fs::write(target, text).expect("add");
        }
        Op::Delete(f) if is_file(f) => std::fs::remove_file(path(f)).expect("delete"),
        Op::Rename(from, to) if is_file(from) && path(to).symlink_metadata().is_err() => {
            let target = path(to);
            if blocked(&target) {
                return;
            }
            std::fs::create_dir_all(target.parent().expect("parent")).expect("dirs");
            std::fs::rename(path(from), target).expect("rename");
        }
        Op::RenameDir(from, to) if path(from).is_dir() && !path(to).exists() => {
            let target = path(to);
            if blocked(&target) || target.starts_with(path(from)) {
                return;
            }
            std::fs::create_dir_all(target.parent().expect("parent")).expect("dirs");
            std::fs::rename(path(from), target).expect("rename dir");
        }
        Op::Chmod(f) if is_file(f) => {
            let meta = std::fs::metadata(path(f)).expect("meta");
            let mode = meta.permissions().mode() ^ 0o111;
            std::fs::set_permissions(path(f), std::fs::Permissions::from_mode(mode))
                .expect("chmod");
        }
        Op::Symlink(f) if is_file(f) => {
            std::fs::remove_file(path(f)).expect("unlink");
            std::os::unix::fs::symlink("somewhere/else", path(f)).expect("symlink");
        }
        Op::Binary(f, token) => {
            let mut bytes = b"\0\x01binary\0".to_vec();
            bytes.extend_from_slice(token.as_bytes());
            if path(f).symlink_metadata().is_ok_and(|m| m.is_file()) {
                std::fs::write(path(f), bytes).expect("binary");
            }
        }
        _ => {}
    }
}

/// Builds commits in one repository from operations.
struct Builder {
    repo: TestRepo,
    counter: usize,
}

impl Builder {
    fn new() -> Self {
        let repo = TestRepo::init();
        let files = base_files();
        for (name, bytes) in &files {
            let path = repo.path.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        std::fs::set_permissions(
            repo.path.join("script.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        repo.git(&["add", "--all"]);
        repo.git(&["commit", "--quiet", "-m", "corpus base"]);
        Builder { repo, counter: 0 }
    }

    /// A commit on top of `parent` with `ops` applied (and a marker file when they changed
    /// nothing, so every side is a real change).
    fn side(&mut self, parent: &str, ops: &[Op]) -> String {
        self.counter += 1;
        let repo = &self.repo;
        repo.git(&["checkout", "--quiet", "--force", "--detach", parent]);
        repo.git(&["clean", "-ffdxq"]);
        for op in ops {
            apply(&repo.path, op);
        }
        repo.git(&["add", "--all"]);
        if repo.git(&["status", "--porcelain"]).is_empty() {
            let marker = format!("side-{}.txt", self.counter);
            std::fs::write(repo.path.join(marker), "side\n").unwrap();
            repo.git(&["add", "--all"]);
        }
        repo.git(&["commit", "--quiet", "-m", &format!("side {}", self.counter)]);
        repo.git(&["rev-parse", "HEAD"])
    }

    /// git's verdict: the tree when clean, else the conflicted paths.
    fn git_merge(&self, ours: &str, theirs: &str) -> Result<String, BTreeSet<String>> {
        let out = command("git", &self.repo.path)
            .args([
                "merge-tree",
                "--write-tree",
                "--name-only",
                "-z",
                ours,
                theirs,
            ])
            .output()
            .expect("git merge-tree runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut fields = text.split('\0');
        let tree = fields.next().unwrap_or_default().trim().to_owned();
        match out.status.code() {
            Some(0) => Ok(tree),
            Some(1) => Err(fields
                .take_while(|f| !f.is_empty())
                .map(str::to_owned)
                .collect()),
            code => panic!(
                "git merge-tree {ours} {theirs} exited {code:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
}

fn random_ops(rng: &mut fastrand::Rng, files: &[&str]) -> Vec<Op> {
    let pick = |rng: &mut fastrand::Rng, from: &[&str]| from[rng.usize(..from.len())].to_owned();
    let count = rng.usize(1..=3);
    (0..count)
        .map(|_| {
            let token = format!("t{}", rng.u32(..1000));
            match rng.u8(..10) {
                0..=2 => Op::Edit(pick(rng, files), rng.usize(..12), token),
                3 => Op::Add(pick(rng, NEW_NAMES), format!("{token}\n")),
                4 => Op::Delete(pick(rng, files)),
                5 => Op::Rename(pick(rng, files), pick(rng, NEW_NAMES)),
                6 => Op::RenameDir(pick(rng, DIRS), pick(rng, &["e", "a/moved", "g"])),
                7 => Op::Chmod(pick(rng, files)),
                8 => Op::Symlink(pick(rng, files)),
                _ => Op::Binary("bin.dat".into(), token),
            }
        })
        .collect()
}

fn s(text: &str) -> String {
    text.to_owned()
}

/// A named pair of sides and the conflicted path and kind braid must report, if any.
type Fixed = (
    &'static str,
    Vec<Op>,
    Vec<Op>,
    Option<(&'static str, ConflictKind)>,
);

/// One pair per conflict kind (and a few clean merges git needs merge-ort for), with the
/// path and kind braid must report.
fn fixed() -> Vec<Fixed> {
    use ConflictKind::*;
    vec![
        (
            "content",
            vec![Op::Edit(s("a/one.txt"), 3, s("ours"))],
            vec![Op::Edit(s("a/one.txt"), 3, s("theirs"))],
            Some(("a/one.txt", Content)),
        ),
        (
            "add/add",
            vec![Op::Add(s("n/new.txt"), s("ours\n"))],
            vec![Op::Add(s("n/new.txt"), s("theirs\n"))],
            Some(("n/new.txt", AddAdd)),
        ),
        (
            "modify/delete",
            vec![Op::Edit(s("c/four.txt"), 1, s("ours"))],
            vec![Op::Delete(s("c/four.txt"))],
            Some(("c/four.txt", ModifyDelete)),
        ),
        (
            "rename/rename",
            vec![Op::Rename(s("top.txt"), s("top-ours.txt"))],
            vec![Op::Rename(s("top.txt"), s("top-theirs.txt"))],
            Some(("top-ours.txt", RenameRename)),
        ),
        (
            "rename/delete",
            vec![Op::Rename(s("c/five.txt"), s("c/six.txt"))],
            vec![Op::Delete(s("c/five.txt"))],
            Some(("c/six.txt", RenameDelete)),
        ),
        (
            "file/directory",
            vec![Op::Add(s("fd"), s("a file\n"))],
            vec![Op::Add(s("fd/inner.txt"), s("in a directory\n"))],
            Some(("fd", FileDirectory)),
        ),
        (
            "directory rename",
            vec![Op::RenameDir(s("d"), s("e"))],
            vec![Op::Add(s("d/new.txt"), s("new\n"))],
            Some(("e/new.txt", DirectoryRename)),
        ),
        (
            "mode",
            vec![Op::Symlink(s("script.sh"))],
            vec![Op::Edit(s("script.sh"), 2, s("theirs"))],
            Some(("script.sh", Mode)),
        ),
        (
            "binary",
            vec![Op::Binary(s("bin.dat"), s("ours"))],
            vec![Op::Binary(s("bin.dat"), s("theirs"))],
            Some(("bin.dat", Binary)),
        ),
        (
            "both deleted",
            vec![Op::Delete(s("a/two.txt"))],
            vec![Op::Delete(s("a/two.txt"))],
            None,
        ),
        (
            "add/add, same content",
            vec![Op::Add(s("same.txt"), s("same\n"))],
            vec![Op::Add(s("same.txt"), s("same\n"))],
            None,
        ),
        (
            "rename against an edit",
            vec![Op::Rename(s("a/b/three.txt"), s("a/three.txt"))],
            vec![Op::Edit(s("a/b/three.txt"), 5, s("theirs"))],
            None,
        ),
        (
            "mode against an edit",
            vec![Op::Chmod(s("script.sh"))],
            vec![Op::Edit(s("script.sh"), 2, s("theirs"))],
            None,
        ),
        (
            "edits far apart in one file",
            vec![Op::Edit(s("a/two.txt"), 1, s("ours"))],
            vec![Op::Edit(s("a/two.txt"), 10, s("theirs"))],
            None,
        ),
        (
            "disjoint files and a new directory",
            vec![
                Op::Edit(s("a/one.txt"), 1, s("ours")),
                Op::Delete(s("d/x.txt")),
            ],
            vec![
                Op::Add(s("fresh/dir/file.txt"), s("new\n")),
                Op::Chmod(s("c/five.txt")),
            ],
            None,
        ),
    ]
}

struct Tally {
    pairs: usize,
    routes: BTreeMap<&'static str, usize>,
    conflicted: usize,
    kinds: BTreeSet<ConflictKind>,
}

async fn compare(
    merger: &Merger,
    builder: &Builder,
    name: &str,
    ours: &str,
    theirs: &str,
    tally: &mut Tally,
) -> Verdict {
    let braid = merger
        .merge(ours, theirs)
        .await
        .unwrap_or_else(|e| panic!("{name}: braid could not merge: {e}"));
    let git = builder.git_merge(ours, theirs);
    tally.pairs += 1;
    *tally
        .routes
        .entry(match braid.route {
            Route::UpToDate => "up-to-date",
            Route::FastForward => "fast-forward",
            Route::Composed => "composed",
            Route::MergeOrt => "merge-ort",
        })
        .or_default() += 1;
    match (&braid.verdict, git) {
        (Verdict::Clean { tree }, Ok(git_tree)) => {
            assert_eq!(
                tree, &git_tree,
                "{name}: merged trees differ ({ours} {theirs})"
            )
        }
        (Verdict::Conflicted { conflicts, .. }, Err(git_paths)) => {
            tally.conflicted += 1;
            // git names a file/directory conflict by where it moved the file.
            let paths: BTreeSet<String> = conflicts
                .iter()
                .map(|c| c.moved_to.clone().unwrap_or_else(|| c.path.clone()))
                .collect();
            assert_eq!(
                paths, git_paths,
                "{name}: conflicted paths differ ({ours} {theirs})"
            );
            tally.kinds.extend(conflicts.iter().map(|c| c.kind));
        }
        (verdict, git) => panic!(
            "{name}: braid says {verdict:?} via {:?}, git says {git:?} ({ours} {theirs})",
            braid.route
        ),
    }
    braid.verdict
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merges_equal_git_merge_tree_on_a_generated_corpus() {
    let mut builder = Builder::new();
    let base = builder.repo.git(&["rev-parse", "HEAD"]);
    let merger = Merger::open(&builder.repo.path).expect("merger opens");
    let mut tally = Tally {
        pairs: 0,
        routes: BTreeMap::new(),
        conflicted: 0,
        kinds: BTreeSet::new(),
    };

    // One pair per kind, each given its kind.
    for (name, ours_ops, theirs_ops, expected) in fixed() {
        let ours = builder.side(&base, &ours_ops);
        let theirs = builder.side(&base, &theirs_ops);
        let verdict = compare(&merger, &builder, name, &ours, &theirs, &mut tally).await;
        match (expected, verdict) {
            (None, Verdict::Clean { .. }) => {}
            (Some((path, kind)), Verdict::Conflicted { conflicts, .. }) => {
                // git moves a file out of a directory's way as `path~<side>`; the
                // conflict is told under the user's path, with where each side went.
                let found = conflicts.iter().find(|c| c.path == path);
                assert_eq!(
                    found.map(|c| c.kind),
                    Some(kind),
                    "{name}: kind of {path} in {conflicts:#?}"
                );
                if kind == braid_orchestrator::merge::ConflictKind::FileDirectory {
                    let placed = found.and_then(|c| c.placed.as_deref()).unwrap_or_default();
                    assert!(
                        placed.starts_with(&format!("ours: a file, which git moved to {path}~"))
                            && placed.ends_with(&format!("theirs: a folder, kept at {path}/")),
                        "{placed}"
                    );
                }
            }
            (expected, verdict) => panic!("{name}: expected {expected:?}, got {verdict:?}"),
        }
    }

    // Random pairs: a third of them on disjoint halves of the tree, the rest anywhere.
    let mut rng = fastrand::Rng::with_seed(0x0062_7261_6964);
    let left: Vec<&str> = FILES
        .iter()
        .copied()
        .filter(|f| !f.starts_with(['c', 'd']))
        .collect();
    let right: Vec<&str> = FILES
        .iter()
        .copied()
        .filter(|f| f.starts_with(['c', 'd']))
        .collect();
    for i in 0..180 {
        let (ours_files, theirs_files) = if i % 3 == 0 {
            (left.as_slice(), right.as_slice())
        } else {
            (FILES, FILES)
        };
        // Some pairs start from a random commit of their own, not the corpus base.
        let start = if i % 5 == 4 {
            let ops = random_ops(&mut rng, FILES);
            builder.side(&base, &ops)
        } else {
            base.clone()
        };
        let ours_ops = random_ops(&mut rng, ours_files);
        let theirs_ops = random_ops(&mut rng, theirs_files);
        let ours = builder.side(&start, &ours_ops);
        let theirs = builder.side(&start, &theirs_ops);
        let name = format!("random pair {i}: {ours_ops:?} × {theirs_ops:?}");
        compare(&merger, &builder, &name, &ours, &theirs, &mut tally).await;
    }

    // Criss-cross: two sides merged into each other both ways, then changed again, so the
    // pair has two merge bases.
    for i in 0..20 {
        let p = builder.side(&base, &random_ops(&mut rng, &left));
        let q = builder.side(&base, &random_ops(&mut rng, &right));
        let Ok(tree) = builder.git_merge(&p, &q) else {
            continue;
        };
        let m1 = builder
            .repo
            .git(&["commit-tree", &tree, "-p", &p, "-p", &q, "-m", "m1"]);
        let m2 = builder
            .repo
            .git(&["commit-tree", &tree, "-p", &q, "-p", &p, "-m", "m2"]);
        let ours = builder.side(&m1, &random_ops(&mut rng, FILES));
        let theirs = builder.side(&m2, &random_ops(&mut rng, FILES));
        let bases = builder.repo.git(&["merge-base", "--all", &ours, &theirs]);
        assert_eq!(
            bases.lines().count(),
            2,
            "criss-cross {i} has two merge bases"
        );
        let name = format!("criss-cross {i}");
        compare(&merger, &builder, &name, &ours, &theirs, &mut tally).await;
    }

    // Several merge bases on disjoint halves, as when tasks start from merges of the same
    // deps: each side starts from its own merge commit of p, q (and r), so the pair has
    // two or three merge bases, and braid merges them into a virtual base by tree edits.
    let composed_before = tally.routes.get("composed").copied().unwrap_or(0);
    for i in 0..16 {
        let p = builder.side(&base, &random_ops(&mut rng, &left));
        let q = builder.side(&base, &random_ops(&mut rng, &right));
        let mut parents = vec![p.clone(), q.clone()];
        let Ok(mut tree) = builder.git_merge(&p, &q) else {
            continue;
        };
        if i % 4 == 3 {
            // A third base, one new file of its own.
            let r = builder.side(&base, &[Op::Add(format!("third-{i}.txt"), "r\n".into())]);
            let pq = builder
                .repo
                .git(&["commit-tree", &tree, "-p", &p, "-p", &q, "-m", "pq"]);
            let Ok(all) = builder.git_merge(&pq, &r) else {
                continue;
            };
            tree = all;
            parents.push(r);
        }
        let merge_commit = |message: &str| {
            let mut args = vec!["commit-tree", tree.as_str()];
            for parent in &parents {
                args.extend(["-p", parent.as_str()]);
            }
            args.extend(["-m", message]);
            builder.repo.git(&args)
        };
        let (m1, m2) = (merge_commit("m1"), merge_commit("m2"));
        let ours = builder.side(&m1, &random_ops(&mut rng, &left));
        let theirs = builder.side(&m2, &random_ops(&mut rng, &right));
        let bases = builder.repo.git(&["merge-base", "--all", &ours, &theirs]);
        assert_eq!(
            bases.lines().count(),
            parents.len(),
            "shared merges {i}: one merge base per parent"
        );
        let name = format!("shared merges {i} ({} bases)", parents.len());
        compare(&merger, &builder, &name, &ours, &theirs, &mut tally).await;
    }
    let composed_virtual = tally.routes.get("composed").copied().unwrap_or(0) - composed_before;
    assert!(
        composed_virtual >= 4,
        "only {composed_virtual} merges with several bases composed"
    );

    eprintln!(
        "corpus: {} pairs, {} conflicted, routes {:?}, kinds {:?}",
        tally.pairs, tally.conflicted, tally.routes, tally.kinds
    );
    assert!(tally.pairs >= 200, "only {} pairs", tally.pairs);
    assert!(
        tally.routes.get("composed").copied().unwrap_or(0) >= 30,
        "{:?}",
        tally.routes
    );
    // Criss-cross pairs on disjoint halves compose through a virtual base; the rest of
    // them, and every pair where the sides meet, still take merge-ort.
    assert!(
        tally.routes.get("merge-ort").copied().unwrap_or(0) >= 50,
        "{:?}",
        tally.routes
    );
    assert!(
        tally.conflicted >= 30,
        "only {} conflicted pairs",
        tally.conflicted
    );
}
