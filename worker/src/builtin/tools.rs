//! The built-in agent's tools. `shell` runs through braid's process wrapper in the attempt's
//! sandbox; the file tools run in braid's own process and so are held to the worktree
//! themselves: no absolute path, no `..`, no symlink that leads out.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use braid_shared::exec::{Cmd, Output};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::sandbox::Launch;

/// Most bytes of a tool's output given back to the model.
const OUTPUT_MAX: usize = 16 * 1024;

/// How long one shell command may run.
const SHELL_TIMEOUT: Duration = Duration::from_secs(600);

/// A tool the model may call: name, description, JSON Schema of its arguments.
pub struct Tool {
    pub name: &'static str,
    pub description: &'static str,
    pub parameters: Value,
}

/// Every tool; without `apply_patch` for a read-only job (a planner, a judge).
pub fn all(read_only: bool) -> Vec<Tool> {
    let mut tools = vec![
        Tool {
            name: "shell",
            description: "Run a shell command line with `sh -c` in the repository's root folder. Returns its exit code and output (cut to 16 KiB).",
            parameters: json!({"type": "object", "properties": {"command": {"type": "string", "description": "The command line."}}, "required": ["command"], "additionalProperties": false}),
        },
        Tool {
            name: "apply_patch",
            description: "Change files with a patch in this format:\n*** Begin Patch\n*** Add File: path\n+line\n*** Update File: path\n@@ optional line to find first\n context line\n-removed line\n+added line\n*** Delete File: path\n*** End Patch\nPaths are relative to the repository's root.",
            parameters: json!({"type": "object", "properties": {"input": {"type": "string", "description": "The whole patch."}}, "required": ["input"], "additionalProperties": false}),
        },
        Tool {
            name: "read_file",
            description: "Read a text file, relative to the repository's root; optionally from line `offset` (1-based) for `limit` lines.",
            parameters: json!({"type": "object", "properties": {"path": {"type": "string"}, "offset": {"type": "integer"}, "limit": {"type": "integer"}}, "required": ["path"], "additionalProperties": false}),
        },
        Tool {
            name: "list_files",
            description: "List the files and folders in a folder, relative to the repository's root (`.` for the root).",
            parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"], "additionalProperties": false}),
        },
        Tool {
            name: "finish",
            description: "Say the work is done, with a short summary of what changed.",
            parameters: json!({"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"], "additionalProperties": false}),
        },
    ];
    if read_only {
        tools.retain(|t| t.name != "apply_patch");
    }
    tools
}

/// `path` (relative) under `root`, or why it may not be used.
pub fn inside(root: &Path, path: &str) -> Result<PathBuf, String> {
    let rel = Path::new(path.trim());
    if path.trim().is_empty() {
        return Err("the path is empty".into());
    }
    if rel.is_absolute() {
        return Err(format!(
            "{path} is absolute; give a path relative to the repository's root"
        ));
    }
    if rel
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
    {
        return Err(format!("{path} leads outside the repository"));
    }
    if rel.components().next() == Some(Component::Normal(".git".as_ref())) {
        return Err(format!("{path} is in the git folder, which is braid's"));
    }
    let real_root = root
        .canonicalize()
        .map_err(|e| format!("the worktree: {e}"))?;
    let joined = root.join(rel);
    // The deepest part of the path that exists must resolve inside the worktree.
    let mut probe = joined.clone();
    loop {
        if std::fs::symlink_metadata(&probe).is_ok() {
            let real = probe
                .canonicalize()
                .map_err(|_| format!("{path} leads outside the repository"))?;
            if !real.starts_with(&real_root) {
                return Err(format!(
                    "{path} leads outside the repository (through a symlink)"
                ));
            }
            break;
        }
        if !probe.pop() {
            break;
        }
    }
    Ok(joined)
}

/// What a tool call did: text for the model, and whether it went well.
pub struct Outcome {
    pub output: String,
    pub ok: bool,
    /// The model called `finish`: its summary.
    pub finished: Option<String>,
}

fn fail(text: impl Into<String>) -> Outcome {
    Outcome {
        output: text.into(),
        ok: false,
        finished: None,
    }
}

fn ok(text: impl Into<String>) -> Outcome {
    Outcome {
        output: text.into(),
        ok: true,
        finished: None,
    }
}

/// Runs tool `name` with `args` in `worktree` (which a read-only job may not change).
pub async fn call(
    name: &str,
    args: &Value,
    worktree: &Path,
    launch: &Launch,
    cancel: &CancellationToken,
    read_only: bool,
) -> Outcome {
    let text = |key: &str| args[key].as_str().map(str::to_owned);
    match name {
        "shell" => {
            let Some(command) = text("command") else {
                return fail("`command` is missing");
            };
            let cmd = Cmd::new("sh", worktree)
                .args(["-c", command.as_str()])
                .output(Output::Capture)
                .timeout(Some(SHELL_TIMEOUT))
                .cancel(cancel.clone());
            match launch.prepare(cmd).run().await {
                Ok(done) => {
                    let mut out = String::from_utf8_lossy(&done.stdout).into_owned();
                    out.push_str(&String::from_utf8_lossy(&done.stderr));
                    let code = done.ending.code();
                    Outcome {
                        output: format!(
                            "exit code: {}\n{}",
                            code.map_or_else(|| format!("{:?}", done.ending), |c| c.to_string()),
                            cut_tail(&out)
                        ),
                        ok: code == Some(0),
                        finished: None,
                    }
                }
                Err(err) => fail(format!("the command could not run: {err}")),
            }
        }
        "apply_patch" if read_only => fail(
            "this job is read-only: the repository cannot be changed; write your answer to the file the prompt names, or give it in `finish`",
        ),
        "apply_patch" => {
            let Some(input) = text("input").or_else(|| text("patch")) else {
                return fail("`input` is missing");
            };
            match super::patch::parse(&input).and_then(|c| super::patch::apply(worktree, &c)) {
                Ok(done) => ok(format!("Done:\n{}", done.join("\n"))),
                Err(why) => fail(format!("The patch was not applied: {why}")),
            }
        }
        "read_file" => {
            let Some(path) = text("path") else {
                return fail("`path` is missing");
            };
            let target = match inside(worktree, &path) {
                Ok(t) => t,
                Err(why) => return fail(why),
            };
            match std::fs::read(&target) {
                Ok(bytes) => {
                    let content = String::from_utf8_lossy(&bytes);
                    let offset = args["offset"].as_u64().unwrap_or(1).max(1) as usize;
                    let limit = args["limit"].as_u64().map(|l| l as usize);
                    let lines: Vec<&str> = content
                        .lines()
                        .skip(offset - 1)
                        .take(limit.unwrap_or(usize::MAX))
                        .collect();
                    ok(cut_head(&lines.join("\n")))
                }
                Err(err) => fail(format!("cannot read {path}: {err}")),
            }
        }
        "list_files" => {
            let path = text("path").unwrap_or_else(|| ".".into());
            let target = if path.trim() == "." || path.trim().is_empty() {
                worktree.to_owned()
            } else {
                match inside(worktree, &path) {
                    Ok(t) => t,
                    Err(why) => return fail(why),
                }
            };
            match std::fs::read_dir(&target) {
                Ok(entries) => {
                    let mut names: Vec<String> = entries
                        .flatten()
                        .filter(|e| e.file_name() != ".git")
                        .map(|e| {
                            let name = e.file_name().to_string_lossy().into_owned();
                            if e.file_type().is_ok_and(|t| t.is_dir()) {
                                format!("{name}/")
                            } else {
                                name
                            }
                        })
                        .collect();
                    names.sort();
                    ok(cut_head(&names.join("\n")))
                }
                Err(err) => fail(format!("cannot list {path}: {err}")),
            }
        }
        "finish" => Outcome {
            output: "Finished.".into(),
            ok: true,
            finished: Some(text("summary").unwrap_or_default()),
        },
        other => fail(format!(
            "there is no tool {other:?}; use shell, apply_patch, read_file, list_files or finish"
        )),
    }
}

fn cut_head(text: &str) -> String {
    if text.len() <= OUTPUT_MAX {
        return text.to_owned();
    }
    let mut end = OUTPUT_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n[cut: {} more bytes]", &text[..end], text.len() - end)
}

fn cut_tail(text: &str) -> String {
    if text.len() <= OUTPUT_MAX {
        return text.to_owned();
    }
    let mut start = text.len() - OUTPUT_MAX;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[cut: {start} bytes before]\n{}", &text[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_held_to_the_worktree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("out")).unwrap();
        assert!(inside(&root, "src/a.rs").is_ok());
        assert!(inside(&root, "new/deep/file").is_ok());
        for bad in [
            "/etc/passwd",
            "../x",
            "src/../../x",
            "out/secret",
            "out",
            ".git/config",
            "",
        ] {
            assert!(inside(&root, bad).is_err(), "{bad} was let through");
        }
    }
}
