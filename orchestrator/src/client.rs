//! The client commands of a coordinator server: `braid submit`, `status`, `watch`,
//! `cancel`, `fetch` and `runs`.
//!
//! The server is `--server URL` or `$BRAID_SERVER`; the client's token is `$BRAID_TOKEN`
//! (or the file `--token-file` names). A submit checks the plan here, with the same
//! located errors as `braid run`, pushes only the objects of the base the server lacks,
//! and sends the checked plan.
//!
//! Invariant: a fetch writes only objects (checked with `--strict`), branches under
//! `refs/heads/braid/<run>/`, and the run's folder in `<git-dir>/braid/runs/`.

use std::path::{Path, PathBuf};

use braid_shared::auth::Bearer;
use braid_shared::git::Git;
use braid_shared::proto::client_service_client::ClientServiceClient;
use braid_shared::proto::{
    CancelRequest, FetchRunRequest, HaveRequest, PushChunk, StatusRequest, SubmitRequest,
    WatchRequest,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::error::{BraidError, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK};
use crate::merge::{BranchMove, Merger};

/// A connected client.
pub type Client = ClientServiceClient<InterceptedService<Channel, Bearer>>;

/// Largest piece of a push in one message.
const CHUNK: usize = 1 << 20;

/// Where to reach the server and with what token.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// `--server`, else `$BRAID_SERVER`.
    pub server: Option<String>,
    /// `--token-file`, else `$BRAID_TOKEN`.
    pub token_file: Option<PathBuf>,
}

/// The token in `file`, else in `$BRAID_TOKEN`; `None` when neither is set.
pub fn token(file: Option<&Path>) -> Result<Option<String>, BraidError> {
    match file {
        Some(file) => std::fs::read_to_string(file)
            .map(|t| Some(t.trim().to_owned()))
            .map_err(BraidError::io(format!(
                "reading the token file {}",
                file.display()
            ))),
        None => Ok(std::env::var("BRAID_TOKEN")
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())),
    }
}

/// Connects to the server `target` names.
pub async fn connect(target: &Target) -> Result<Client, BraidError> {
    let url = match &target.server {
        Some(url) => url.clone(),
        None => std::env::var("BRAID_SERVER")
            .ok()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                BraidError::Usage(
                    "which server? Give --server URL or set BRAID_SERVER (http://host:port or \
                     unix:/path/to.sock)"
                        .into(),
                )
            })?,
    };
    let bearer =
        Bearer::new(token(target.token_file.as_deref())?.as_deref()).map_err(BraidError::Usage)?;
    let channel = braid_worker::runtime::channel(&url)
        .await
        .map_err(|e| match e {
            braid_worker::runtime::WorkerError::Address { .. } => BraidError::Usage(e.to_string()),
            other => {
                BraidError::Environment(other.to_string().replace("the coordinator", "the server"))
            }
        })?;
    Ok(ClientServiceClient::with_interceptor(channel, bearer).max_decoding_message_size(64 << 20))
}

/// A refusal of the server, in words.
fn refused(status: tonic::Status) -> BraidError {
    match status.code() {
        tonic::Code::Unauthenticated
        | tonic::Code::NotFound
        | tonic::Code::InvalidArgument
        | tonic::Code::FailedPrecondition => {
            BraidError::Usage(format!("the server refused: {}", status.message()))
        }
        _ if status.message().contains("h2 protocol error") => BraidError::Environment(format!(
            "the server failed: {} (does it serve TLS? then give https://…)",
            status.message()
        )),
        _ => BraidError::Environment(format!("the server failed: {}", status.message())),
    }
}

/// `braid submit PLAN`: checks the plan, pushes what the server lacks of its base, starts
/// the run; returns its id.
pub async fn submit(
    target: &Target,
    plan_path: &Path,
) -> Result<(String, crate::plan::Plan), BraidError> {
    let plan = crate::plan::load(plan_path).await?;
    let repository = crate::state::repo_id(&plan.git_dir).map_err(BraidError::io(format!(
        "writing the repository's id in {}",
        plan.git_dir.display()
    )))?;
    let mut client = connect(target).await?;
    let git = Git::at(&plan.repo);
    // The base and the history behind it: the server may have some of it from before.
    let history = git
        .run(&[
            "rev-list",
            "--first-parent",
            "--max-count=256",
            &plan.base_commit,
        ])
        .await
        .map_err(|e| BraidError::Environment(e.to_string()))?;
    let history: Vec<String> = history.lines().map(str::to_owned).collect();
    let known = client
        .have(HaveRequest {
            repository: repository.clone(),
            commits: history.clone(),
        })
        .await
        .map_err(refused)?
        .into_inner()
        .known;
    if !known.contains(&plan.base_commit) {
        let pack = git
            .pack_wanted(std::slice::from_ref(&plan.base_commit), &known)
            .await
            .map_err(|e| BraidError::Environment(e.to_string()))?;
        let pieces: Vec<PushChunk> = pack
            .chunks(CHUNK)
            .enumerate()
            .map(|(i, piece)| PushChunk {
                repository: if i == 0 {
                    repository.clone()
                } else {
                    String::new()
                },
                data: piece.to_vec(),
            })
            .collect();
        let pieces = if pieces.is_empty() {
            vec![PushChunk {
                repository: repository.clone(),
                data: Vec::new(),
            }]
        } else {
            pieces
        };
        client
            .push(tokio_stream::iter(pieces))
            .await
            .map_err(refused)?;
    }
    let text = serde_json::to_string(&plan)
        .map_err(|e| BraidError::Internal(format!("cannot send the plan: {e}")))?;
    let run = client
        .submit(SubmitRequest {
            repository,
            plan: text,
            plan_name: plan.path.to_string_lossy().into_owned(),
        })
        .await
        .map_err(refused)?
        .into_inner()
        .run;
    Ok((run, plan))
}

/// Prints a run's progress on standard error until it ends; returns how it ended.
pub async fn watch(target: &Target, run: &str) -> Result<String, BraidError> {
    let mut client = connect(target).await?;
    let mut stream = client
        .watch(WatchRequest {
            run: run.to_owned(),
        })
        .await
        .map_err(refused)?
        .into_inner();
    while let Some(event) = stream.message().await.map_err(refused)? {
        if !event.line.is_empty() {
            eprintln!("{}", event.line);
        }
        if !event.ended.is_empty() {
            return Ok(event.ended);
        }
    }
    Err(BraidError::Environment(
        "the server closed the stream before the run ended".into(),
    ))
}

/// The exit code for a run that ended so.
pub fn exit_code(ended: &str) -> i32 {
    match ended {
        "succeeded" => EXIT_OK,
        "cancelled" => EXIT_INTERRUPTED,
        _ => EXIT_FAILED,
    }
}

/// `braid fetch RUN`: the run's branches and their objects into the repository at `dir`,
/// and its report into the repository's state folder; returns the branches.
pub async fn fetch(target: &Target, run: &str, dir: &Path) -> Result<Vec<String>, BraidError> {
    if run.is_empty() || !run.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(BraidError::Usage(format!("{run:?} is not a run id")));
    }
    let git = Git::at(dir);
    let git_dir = git
        .common_dir()
        .await
        .map_err(|_| BraidError::Usage(format!("{} is not in a git repository", dir.display())))?;
    let mut have = Vec::new();
    if let Ok(Some(head)) = git.resolve_commit("HEAD").await {
        have.push(head);
    }
    let prefix = format!("refs/heads/braid/{run}/");
    let merger = Merger::open(dir).map_err(|e| BraidError::Environment(e.to_string()))?;
    let before = merger
        .refs_under(&prefix)
        .map_err(|e| BraidError::Environment(e.to_string()))?;
    have.extend(before.iter().map(|(_, c)| c.clone()));
    let mut client = connect(target).await?;
    let mut stream = client
        .fetch(FetchRunRequest {
            run: run.to_owned(),
            have,
        })
        .await
        .map_err(refused)?
        .into_inner();
    let mut refs = Vec::new();
    let mut report = String::new();
    let mut pack = Vec::new();
    let mut first = true;
    while let Some(chunk) = stream.message().await.map_err(refused)? {
        if std::mem::take(&mut first) {
            refs = chunk.refs;
            report = chunk.report;
        }
        pack.extend_from_slice(&chunk.data);
    }
    for r in &refs {
        let ok = r.name.starts_with(&format!("braid/{run}/"))
            && braid_worker::cache::is_object_id(&r.commit)
            && !r
                .name
                .split('/')
                .any(|part| part.is_empty() || part.starts_with('.') || part.contains(".."))
            && r.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'));
        if !ok {
            return Err(BraidError::Environment(format!(
                "the server sent the branch {:?} for run {run}, which braid does not take",
                r.name
            )));
        }
    }
    if !pack.is_empty() {
        git.unpack(pack)
            .await
            .map_err(|e| BraidError::Environment(format!("the run's objects were refused: {e}")))?;
    }
    let current: std::collections::HashMap<String, String> = before.into_iter().collect();
    let moves: Vec<BranchMove> = refs
        .iter()
        .map(|r| {
            let refname = format!("refs/heads/{}", r.name);
            BranchMove {
                old: current.get(&refname).cloned(),
                refname,
                commit: r.commit.clone(),
            }
        })
        .filter(|m| m.old.as_deref() != Some(m.commit.as_str()))
        .collect();
    if !moves.is_empty() {
        merger
            .set_refs(&moves)
            .map_err(|e| BraidError::Environment(format!("could not record the branches: {e}")))?;
    }
    if !report.is_empty()
        && let Ok(report) = serde_json::from_str::<crate::report::Report>(&report)
    {
        let run_dir = crate::state::run_dir(&git_dir, run);
        report.write(&run_dir).map_err(BraidError::io(format!(
            "writing the report in {}",
            run_dir.display()
        )))?;
    }
    Ok(refs.into_iter().map(|r| r.name).collect())
}

/// `braid status [RUN]` and `braid runs`: one run, or all, as lines or JSON.
pub async fn status(target: &Target, run: Option<&str>, json: bool) -> Result<i32, BraidError> {
    let mut client = connect(target).await?;
    let reply = client
        .status(StatusRequest {
            run: run.unwrap_or_default().to_owned(),
        })
        .await
        .map_err(refused)?
        .into_inner();
    if json {
        let runs: Vec<serde_json::Value> = reply
            .runs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "run": r.run, "name": r.name, "status": r.status, "started_at": r.started_at,
                    "tasks": r.tasks, "tasks_done": r.tasks_done, "running": r.running,
                    "result": (!r.result.is_empty()).then_some(&r.result),
                })
            })
            .collect();
        let value = match run {
            Some(_) => runs.into_iter().next().unwrap_or_default(),
            None => serde_json::Value::Array(runs),
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return Ok(EXIT_OK);
    }
    if reply.runs.is_empty() {
        println!("no runs");
    }
    for r in &reply.runs {
        let result = if r.result.is_empty() {
            String::new()
        } else {
            format!("  result {}", crate::report::short(&r.result))
        };
        println!(
            "{}  {:<9}  {}/{} task(s) done, {} running  started {}{}{}",
            r.run,
            r.status,
            r.tasks_done,
            r.tasks,
            r.running,
            r.started_at,
            if r.name.is_empty() {
                String::new()
            } else {
                format!("  {}", r.name)
            },
            result
        );
    }
    Ok(EXIT_OK)
}

/// `braid cancel RUN`.
pub async fn cancel(target: &Target, run: &str) -> Result<i32, BraidError> {
    let mut client = connect(target).await?;
    let reply = client
        .cancel(CancelRequest {
            run: run.to_owned(),
        })
        .await
        .map_err(refused)?
        .into_inner();
    if reply.cancelled {
        eprintln!("braid: run {run} is being cancelled");
        Ok(EXIT_OK)
    } else {
        eprintln!("braid: run {run} had ended already");
        Ok(EXIT_FAILED)
    }
}
