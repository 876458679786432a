//! `braid demo`: a throwaway sample repository, a deterministic agent script and a plan that
//! shows the product: three tasks, one depending on the other two, three attempts each,
//! checks that some attempts fail, and a clean merged result. No network, no API key.

use std::path::{Path, PathBuf};

use braid_shared::git::Git;

use crate::error::BraidError;

/// The files the demo made.
#[derive(Debug)]
pub struct Demo {
    /// The folder holding everything.
    pub root: PathBuf,
    /// The sample repository.
    pub repo: PathBuf,
    /// The plan.
    pub plan: PathBuf,
}

const GREET: &str = "#!/bin/sh\necho \"Hello, $1!\"\n";

const README: &str = "# greeter\n\nA tiny sample project for the braid demo.\n";

/// The demo's agent: edits the worktree according to the task and the attempt number, so
/// every run of the demo picks the same winners for the same reasons.
const AGENT: &str = r#"#!/bin/sh
# The braid demo's agent: a deterministic stand-in for a coding agent. It reads the prompt
# on standard input and edits the worktree according to the task and the attempt number.
set -e
cat > /dev/null
echo "demo agent: task $BRAID_TASK_ID, attempt $BRAID_ATTEMPT, in $BRAID_WORKTREE"
sleep 0.2
case "$BRAID_TASK_ID:$BRAID_ATTEMPT" in
  greeting:1)
    # Greets the world, but with the wrong words: the check fails.
    printf '#!/bin/sh\necho "Hi, ${1:-world}"\n' > greet.sh ;;
  greeting:2)
    # The smallest correct change.
    printf '#!/bin/sh\necho "Hello, ${1:-world}!"\n' > greet.sh ;;
  greeting:3)
    # Correct, but rewrites more than it needs to.
    cat > greet.sh <<'END'
#!/bin/sh
# Greets the person named in the first argument, or the whole world.
name="$1"
if [ -z "$name" ]; then
  name="world"
fi
echo "Hello, $name!"
END
    ;;
  farewell:1)
    # Correct, but long.
    cat > farewell.sh <<'END'
#!/bin/sh
# Says goodbye to the person named in the first argument, or to the world.
who="${1:-world}"
message="Goodbye, $who."
echo "$message"
END
    ;;
  farewell:2)
    echo "demo agent: cannot work out what to do" >&2
    exit 1 ;;
  farewell:3)
    # The smallest correct change.
    printf '#!/bin/sh\necho "Goodbye, ${1:-world}."\n' > farewell.sh ;;
  docs:1)
    # Documents only one of the two scripts: the check fails.
    printf '\n## Usage\n\n    sh greet.sh NAME\n' >> README.md ;;
  docs:2)
    printf '\n## Usage\n\n    sh greet.sh NAME\n    sh farewell.sh NAME\n' >> README.md ;;
  docs:3)
    cat >> README.md <<'END'

## Usage

Greet someone, or the whole world when no name is given:

    sh greet.sh NAME

Say goodbye the same way:

    sh farewell.sh NAME
END
    ;;
  *)
    echo "demo agent: nothing to do for $BRAID_TASK_ID" >&2
    exit 2 ;;
esac
"#;

const PLAN: &str = r#"# The braid demo: three tasks, three attempts each. docs starts from the merged winners of
# greeting and farewell. braid runs the checks itself and picks, per task, the passing
# attempt with the smallest diff. `braid compare RUN greeting` shows the attempts side by
# side; `braid report RUN --format html` draws the whole run.
version: 1
name: demo
repo: repo

defaults:
  agent:
    command: [sh, AGENT_PATH]
  attempts: 3
  timeout: 1m

tasks:
  - id: greeting
    prompt: Make greet.sh greet the world when no name is given, as "Hello, world!".
    checks:
      # Runs only for attempts that change a shell script (docs skips it).
      - name: shebang
        run: for f in *.sh; do head -n 1 "$f" | grep -qx '#!/bin/sh' || exit 1; done
        paths: ["*.sh"]
      # A task's own check fails on the base by design: it must not be excused as
      # pre-existing there, so it opts out of the baseline.
      - name: greets
        run: test "$(sh greet.sh)" = "Hello, world!" && test "$(sh greet.sh Ada)" = "Hello, Ada!"
        baseline: false
  - id: farewell
    prompt: Add farewell.sh, which says "Goodbye, NAME." to the name it is given.
    checks:
      - name: shebang
        run: for f in *.sh; do head -n 1 "$f" | grep -qx '#!/bin/sh' || exit 1; done
        paths: ["*.sh"]
      - name: says-goodbye
        run: test "$(sh farewell.sh Ada)" = "Goodbye, Ada."
        baseline: false
  - id: docs
    deps: [greeting, farewell]
    prompt: Document how to use greet.sh and farewell.sh in README.md.
    checks:
      - name: shebang
        run: for f in *.sh; do head -n 1 "$f" | grep -qx '#!/bin/sh' || exit 1; done
        paths: ["*.sh"]
      - name: documented
        run: grep -q greet.sh README.md && grep -q farewell.sh README.md
        baseline: false

merge:
  verify:
    - name: all
      run: test "$(sh greet.sh)" = "Hello, world!" && test "$(sh farewell.sh Ada)" = "Goodbye, Ada." && grep -q farewell.sh README.md
"#;

/// Makes the demo's folder: a repository with one commit, the agent script and the plan.
pub async fn prepare(dir: Option<&Path>) -> Result<Demo, BraidError> {
    let root = match dir {
        Some(dir) => {
            if dir.exists()
                && std::fs::read_dir(dir)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(true)
            {
                return Err(BraidError::Usage(format!(
                    "{} exists and is not empty; give the demo a new folder",
                    dir.display()
                )));
            }
            std::path::absolute(dir).map_err(BraidError::io("resolving the demo folder"))?
        }
        None => std::env::temp_dir().join(format!("braid-demo-{}", crate::state::new_run_id())),
    };
    let repo = root.join("repo");
    std::fs::create_dir_all(&repo)
        .map_err(BraidError::io(format!("creating {}", repo.display())))?;
    let write = |path: PathBuf, text: &str| {
        std::fs::write(&path, text).map_err(BraidError::io(format!("writing {}", path.display())))
    };
    let git = Git::at(&repo);
    git.run(&["init", "--quiet", "--initial-branch=main"])
        .await?;
    write(repo.join("greet.sh"), GREET)?;
    write(repo.join("README.md"), README)?;
    git.commit_all("Sample project").await?;

    let agent = root.join("agent.sh");
    write(agent.clone(), AGENT)?;
    let plan = root.join("plan.yaml");
    write(
        plan.clone(),
        &PLAN.replace("AGENT_PATH", &yaml_quoted(&agent)),
    )?;
    Ok(Demo { root, repo, plan })
}

fn yaml_quoted(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "''"))
}
