//! The `braid` command line: one binary, the subcommand picks the role.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::dag::Dag;
use crate::error::{BraidError, EXIT_OK};
use crate::plan::{self, Plan};
use crate::report::compare::compare;
use crate::run::{RunOptions, run_embedded};

/// braid runs coding agents in parallel: a plan becomes a DAG of tasks, each task fans out
/// into attempts in their own git worktrees, braid checks and ranks the attempts, and
/// merges the winners into one result branch.
#[derive(Debug, Parser)]
#[command(name = "braid", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a plan: a coordinator and local workers in this process.
    Run {
        /// The plan file (YAML); or plan one from `--goal`.
        #[arg(required_unless_present = "goal", conflicts_with = "goal")]
        plan: Option<PathBuf>,
        /// Plan from this goal first, with the planning agent `--agent`; the plan is kept
        /// as runs/<run>/plan.yaml.
        #[arg(long, value_name = "GOAL")]
        goal: Option<String>,
        /// With `--goal`: the planning agent, a preset's name or an agent in YAML
        /// (`{command: [./planner.sh]}`); planned tasks that name no agent run on it too.
        #[arg(long, value_name = "AGENT", requires = "goal")]
        agent: Option<String>,
        /// With `--goal`: run the plan without asking first.
        #[arg(long, short, requires = "goal")]
        yes: bool,
        /// With `--goal`: most planning rounds.
        #[arg(long, default_value_t = crate::planner::DEFAULT_ROUNDS, requires = "goal")]
        rounds: u32,
        /// Local workers [default: the number of CPUs]; 0 with `--listen` runs only the
        /// workers that connect.
        #[arg(long)]
        workers: Option<u32>,
        /// Attempts each worker runs at once.
        #[arg(long, default_value_t = 1)]
        slots: u32,
        /// Also take workers that connect to this address, `unix:/path/to.sock`
        /// (`braid worker --connect` and other clients of `braid.v1`).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Print report.json on standard output at the end.
        #[arg(long)]
        json: bool,
        /// Show the agents' output as it comes.
        #[arg(long, short)]
        verbose: bool,
        /// Order the tasks whose `touches` overlap: the later waits for the earlier.
        #[arg(long)]
        serialize_overlaps: bool,
        /// Run only what run RUN (or `latest`) did not win, from its base, and carry over
        /// its winners: the targets that failed, and what depends on them.
        #[arg(long, value_name = "RUN", conflicts_with = "goal")]
        rerun_failed: Option<String>,
        /// Also give each target of a fanned task its own branch from the base,
        /// `braid/<run>/<task>/target`: its change alone, to publish one by one.
        #[arg(long)]
        per_target: bool,
    },
    /// Plan a goal: a planning agent reads the repository (read-only) and writes a plan,
    /// which braid checks and gives back for another round until it is valid.
    Plan {
        /// The goal, in words.
        goal: String,
        /// The planning agent: a preset's name or an agent in YAML
        /// (`{command: [./planner.sh]}`) [default: the first preset installed with its key set].
        #[arg(long, value_name = "AGENT")]
        agent: Option<String>,
        /// Write the plan to this file [default: standard output].
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Most rounds: a plan with errors goes back to the agent with them.
        #[arg(long, default_value_t = crate::planner::DEFAULT_ROUNDS)]
        rounds: u32,
        /// The revision to plan on [default: HEAD].
        #[arg(long)]
        base: Option<String>,
        /// The repository [default: the one holding the current folder].
        #[arg(long)]
        repo: Option<PathBuf>,
        /// Show the planning agent's output as it comes.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Print the JSON Schema of the plan file, for editors and planning agents.
    Schema,
    /// List the agent presets: whether each CLI is installed, its version, and the
    /// variable its API key is read from.
    Agents {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a plan and print its DAG; runs nothing.
    Validate {
        /// The plan file (YAML).
        plan: PathBuf,
        /// Show the DAG as `braid run --serialize-overlaps` would run it.
        #[arg(long)]
        serialize_overlaps: bool,
    },
    /// Show the report of a finished run.
    Report {
        /// The run id, or `latest`.
        run: String,
        /// `md` (the default), `json`, or `html` (writes report.html and prints its path).
        #[arg(long, default_value = "md")]
        format: String,
        /// Show only the conflicts: each path with its kind, and the hunks with both sides.
        #[arg(long)]
        conflicts: bool,
        /// The repository the run belongs to [default: the one holding the current folder].
        #[arg(long)]
        repo: Option<PathBuf>,
    },
    /// Push a run's result (or, with --per-target, each target's own branch) to a remote,
    /// and with --pr open or update its pull requests.
    Publish {
        /// The run id, or `latest`.
        run: String,
        /// The remote to push to.
        #[arg(long, default_value = "origin")]
        remote: String,
        /// The remote branch [default: braid/<plan name>; per target braid/<plan name>/<slug>].
        #[arg(long)]
        branch: Option<String>,
        /// Open a pull request for each branch, or update the one that is open (token from
        /// GITHUB_TOKEN or GH_TOKEN, GITLAB_TOKEN).
        #[arg(long)]
        pr: bool,
        /// Publish each target's own branch (a run made with `braid run --per-target`).
        #[arg(long)]
        per_target: bool,
        /// The branch pull requests go into [default: the remote's default branch].
        #[arg(long)]
        base: Option<String>,
        /// `github` or `gitlab`, when the remote's URL does not tell.
        #[arg(long)]
        forge: Option<String>,
        /// The repository on the forge, `owner/name`, when the remote's URL does not tell.
        #[arg(long, value_name = "OWNER/NAME")]
        forge_repo: Option<String>,
        /// Print what was published as JSON.
        #[arg(long)]
        json: bool,
        /// The repository the run belongs to [default: the one holding the current folder].
        #[arg(long)]
        repo: Option<PathBuf>,
    },
    /// Show a task's attempts side by side: checks, score, diff size, time, cost, the
    /// winner and why, and how alike their changes are.
    Compare {
        /// The run id, or `latest`.
        run: String,
        /// The task's id.
        task: String,
        /// Also show each attempt's diff against the task's base.
        #[arg(long)]
        diff: bool,
        /// Print the comparison as JSON.
        #[arg(long)]
        json: bool,
        /// The repository the run belongs to [default: the one holding the current folder].
        #[arg(long)]
        repo: Option<PathBuf>,
    },
    /// Remove what old runs left: the worktrees and scratch of runs whose process is gone,
    /// in this repository and in braid's cache folder, and the cache's copies of
    /// repositories that are gone; prints what it freed.
    Gc {
        /// The repository whose dead runs to mark `crashed` [default: the one holding the
        /// current folder, if any].
        #[arg(long)]
        repo: Option<PathBuf>,
    },
    /// Continue an embedded run that was killed (SIGKILL, a crash, a lost machine) or
    /// interrupted, from its journal: attempts that finished are not run again.
    Resume {
        /// The run id.
        run: String,
        /// The repository the run belongs to [default: the one holding the current folder].
        #[arg(long)]
        repo: Option<PathBuf>,
        /// Local workers [default: as the run had].
        #[arg(long)]
        workers: Option<u32>,
        /// Attempts each worker runs at once [default: as the run had].
        #[arg(long)]
        slots: Option<u32>,
        /// Print report.json on standard output at the end.
        #[arg(long)]
        json: bool,
        /// Show the agents' output as it comes.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Serve a coordinator's attempts: a worker with its own repository cache, which
    /// fetches the objects it lacks over the connection.
    Worker {
        /// The coordinator: `unix:/path/to.sock`, or `http://host:port`.
        #[arg(long)]
        connect: String,
        /// Attempts run at once.
        #[arg(long, default_value_t = 1)]
        slots: u32,
        /// The worker's cache folder (worktrees, repository copies) [default: $BRAID_CACHE,
        /// else braid's cache folder].
        #[arg(long)]
        cache: Option<PathBuf>,
        /// A name for reports [default: the host's name].
        #[arg(long)]
        name: Option<String>,
        /// A label for placement, `key=value`; may be repeated.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// The file holding the worker token the server takes [default: $BRAID_TOKEN].
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// A folder (with what is inside it) that a plan's `sandbox.writable` may make
        /// writable on this machine; may be repeated [default: none].
        #[arg(long = "allow-writable", value_name = "DIR")]
        allow_writable: Vec<PathBuf>,
        /// Run the attempts of plans that say `sandbox: off`, uncontained, on this machine.
        #[arg(long)]
        allow_unsandboxed: bool,
    },
    /// Serve runs to workers and clients on other machines: a coordinator for many runs
    /// at once, durable across restarts.
    Serve {
        /// Where to listen: `host:port` (port 0: any free port) or `unix:/path/to.sock`.
        #[arg(long)]
        listen: String,
        /// The state folder: runs, reports, journals, the copies of clients' repositories
        /// [default: $XDG_STATE_HOME/braid/server].
        #[arg(long)]
        state: Option<PathBuf>,
        /// The tokens, a line `worker TOKEN` and a line `client TOKEN` [default: the state
        /// folder's `tokens`, made on first use].
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Serve TLS with this certificate (chain), a PEM file; with --tls-key. Clients and
        /// workers then connect to https://…, trusting the system's roots and the
        /// authority in $BRAID_TLS_CA.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key, a PEM file.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Submit a plan to a server; prints the run's id.
    Submit {
        /// The plan file (YAML).
        plan: PathBuf,
        #[command(flatten)]
        target: TargetArgs,
        /// Follow the run to its end, then fetch its branches into this repository.
        #[arg(long)]
        wait: bool,
    },
    /// A run on a server, or every run.
    Status {
        /// The run id [default: every run].
        run: Option<String>,
        #[command(flatten)]
        target: TargetArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The runs on a server.
    Runs {
        #[command(flatten)]
        target: TargetArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Follow a run on a server, line by line, to its end.
    Watch {
        /// The run id.
        run: String,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Stop a run on a server.
    Cancel {
        /// The run id.
        run: String,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Bring a run's branches (and its report) from a server into this repository.
    Fetch {
        /// The run id.
        run: String,
        #[command(flatten)]
        target: TargetArgs,
        /// The repository [default: the one holding the current folder].
        #[arg(long)]
        repo: Option<PathBuf>,
    },
    /// Make a throwaway sample repository and run a small best-of-3 plan on it.
    Demo {
        /// Where to make the sample [default: a new folder in the system's temp folder].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Local workers.
        #[arg(long, default_value_t = 2)]
        workers: u32,
        /// Print report.json on standard output at the end.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the command line; returns the exit code.
pub fn main() -> i32 {
    main_from(std::env::args_os())
}

/// Runs the command line `args` (the first is the program's name); returns the exit code.
pub fn main_from<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                crate::error::EXIT_USAGE
            } else {
                EXIT_OK
            };
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BRAID_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return crate::error::EXIT_ENVIRONMENT;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(err) => {
            match &err {
                BraidError::Plan(errors) => eprintln!("{errors}"),
                other => eprintln!("error: {other}"),
            }
            err.exit_code()
        }
    }
}

async fn dispatch(command: Command) -> Result<i32, BraidError> {
    match command {
        Command::Run {
            plan,
            goal,
            agent,
            yes,
            rounds,
            workers,
            slots,
            listen,
            json,
            verbose,
            serialize_overlaps,
            rerun_failed,
            per_target,
        } => {
            let listen = listen.as_deref().map(listen_path).transpose()?;
            let workers = workers.unwrap_or_else(default_workers);
            if slots == 0 || (workers == 0 && listen.is_none()) {
                return Err(BraidError::Usage(
                    "--slots must be at least 1, and --workers too unless --listen is given".into(),
                ));
            }
            let mut options = RunOptions {
                workers,
                slots,
                verbose,
                listen,
                ..RunOptions::local(workers, slots)
            };
            if let Some(path) = &plan
                && let Some(repos) = crate::plan::repos::repos_of(path).await?
            {
                let rerun = match rerun_failed.as_deref() {
                    // The latest batch, wherever this is run from.
                    Some("latest") => {
                        let runs = braid_worker::cache::root().join("runs");
                        let Some(dir) = latest_in(&runs) else {
                            return Err(BraidError::Usage(format!(
                                "no finished batch over repositories in {}",
                                runs.display()
                            )));
                        };
                        let run = dir
                            .file_name()
                            .unwrap_or_default()
                            .to_string_lossy()
                            .into_owned();
                        Some(load_report(&dir, &run).await?.report)
                    }
                    Some(run) => Some(load_report(&repo_dir(None)?, run).await?.report),
                    None => None,
                };
                if let Some(earlier) = &rerun
                    && earlier.repos.is_empty()
                {
                    return Err(BraidError::Usage(format!(
                        "run {} was not a batch over repositories; this plan is one",
                        earlier.run
                    )));
                }
                if rerun.as_ref().is_some_and(|r| {
                    r.repos
                        .iter()
                        .all(|r| r.status == crate::report::TaskStatus::Succeeded)
                }) {
                    eprintln!(
                        "braid: nothing to re-run: every repository of run {} succeeded",
                        rerun_failed.unwrap_or_default()
                    );
                    return Ok(EXIT_OK);
                }
                let (report, written, code) = crate::batch::run_repos(
                    path,
                    &repos,
                    crate::batch::ReposRun {
                        options,
                        per_target,
                        rerun,
                    },
                )
                .await?;
                let summary = report.summary();
                if json {
                    eprint!("\n{summary}");
                    let text = serde_json::to_string_pretty(&report)
                        .map_err(|e| BraidError::Internal(e.to_string()))?;
                    println!("{text}");
                } else {
                    print!("\n{summary}");
                }
                tracing::debug!(path = %written.display(), "report written");
                return Ok(code);
            }
            let mut plan = match (plan, goal) {
                (Some(path), _) if rerun_failed.is_some() => {
                    let run = rerun_failed.as_deref().unwrap_or_default();
                    let plan = plan::load(&path).await?;
                    let earlier = load_report(&plan.repo, run).await?.report;
                    if !earlier.repos.is_empty() {
                        return Err(BraidError::Usage(format!(
                            "run {} was a batch over repositories; this plan is of one repository",
                            earlier.run
                        )));
                    }
                    let plan = crate::rerun::plan(&path, &earlier).await?;
                    match crate::rerun::describe(&plan) {
                        Some(line) => eprintln!("braid: {line}"),
                        None => {
                            eprintln!(
                                "braid: nothing to re-run: run {} won every task of the plan",
                                earlier.run
                            );
                            return Ok(EXIT_OK);
                        }
                    }
                    plan
                }
                (Some(plan), _) => plan::load(&plan).await?,
                (None, Some(goal)) => {
                    match plan_goal_for_run(
                        &goal,
                        agent.as_deref(),
                        rounds,
                        yes,
                        verbose,
                        &mut options,
                    )
                    .await?
                    {
                        Some(plan) => plan,
                        None => return Ok(EXIT_OK),
                    }
                }
                (None, None) => {
                    return Err(BraidError::Usage("give a plan file or --goal".into()));
                }
            };
            for line in plan_notes(&mut plan, serialize_overlaps) {
                eprintln!("{line}");
            }
            plan.per_target = per_target;
            run_and_print(plan, options, json).await
        }
        Command::Plan {
            goal,
            agent,
            output,
            rounds,
            base,
            repo,
            verbose,
        } => {
            let dir = repo_dir(repo)?;
            let request = plan_request(
                &goal,
                agent.as_deref(),
                rounds,
                &dir,
                base.as_deref(),
                format!("plan-{}", crate::state::new_run_id()),
                None,
                verbose,
            )
            .await?;
            let planned = crate::planner::plan(&request).await?;
            let mut plan = planned_plan(&planned.text, output.as_deref()).await?;
            eprint!("{}", crate::planner::describe(&plan));
            for line in plan_notes(&mut plan, false) {
                eprintln!("{line}");
            }
            eprintln!(
                "planned in {} round(s) by {}{}",
                planned.record.rounds,
                planned.record.agent,
                spent_text(&planned.record.usage)
            );
            match output {
                Some(path) => {
                    crate::report::write_atomically(&path, planned.text.as_bytes())
                        .map_err(BraidError::io(format!("writing {}", path.display())))?;
                    eprintln!(
                        "plan written to {}; run it with: braid run {}",
                        path.display(),
                        path.display()
                    );
                }
                None => print!("{}", planned.text),
            }
            Ok(EXIT_OK)
        }
        Command::Validate {
            plan,
            serialize_overlaps,
        } => {
            if let Some(repos) = crate::plan::repos::repos_of(&plan).await? {
                print!("{}", validate_repos(&plan, &repos).await?);
                return Ok(EXIT_OK);
            }
            let mut plan = plan::load(&plan).await?;
            let notes = plan_notes(&mut plan, serialize_overlaps);
            print!("{}", describe(&plan));
            for line in notes {
                println!("{line}");
            }
            Ok(EXIT_OK)
        }
        Command::Report {
            run,
            format,
            conflicts,
            repo,
        } => {
            let dir = repo_dir(repo)?;
            print!("{}", show_report(&dir, &run, &format, conflicts).await?);
            Ok(EXIT_OK)
        }
        Command::Publish {
            run,
            remote,
            branch,
            pr,
            per_target,
            base,
            forge,
            forge_repo,
            json,
            repo,
        } => {
            let dir = repo_dir(repo)?;
            let stored = load_report(&dir, &run).await?;
            let mut options = crate::publish::Options {
                remote,
                branch,
                pr,
                per_target,
                base,
                forge,
                forge_repo,
                json,
                url: None,
            };
            let report = &stored.report;
            if report.repos.is_empty() {
                let git_dir = braid_shared::git::Git::at(&report.repo)
                    .common_dir()
                    .await
                    .map_err(|e| BraidError::Environment(e.to_string()))?;
                let out = crate::publish::publish(report, &git_dir, &options).await?;
                return crate::publish::conclude(&report.run, &options.remote, &out, json);
            }
            crate::batch::publish_repos(report, &mut options).await
        }
        Command::Compare {
            run,
            task,
            diff,
            json,
            repo,
        } => {
            let dir = repo_dir(repo)?;
            let stored = load_report(&dir, &run).await?;
            let Some(task) = stored.report.tasks.iter().find(|t| t.id == task) else {
                let ids: Vec<&str> = stored.report.tasks.iter().map(|t| t.id.as_str()).collect();
                return Err(BraidError::Usage(format!(
                    "run {} has no task {task:?}; its tasks are {}",
                    stored.report.run,
                    ids.join(", ")
                )));
            };
            let git = braid_shared::git::Git::at(&stored.report.repo);
            let comparison = compare(&stored.report, task, &git, diff).await?;
            if json {
                let text = serde_json::to_string_pretty(&comparison)
                    .map_err(|e| BraidError::Internal(e.to_string()))?;
                println!("{text}");
            } else {
                print!("{}", comparison.text());
            }
            Ok(EXIT_OK)
        }
        Command::Schema => {
            println!("{}", crate::plan::schema());
            Ok(EXIT_OK)
        }
        Command::Agents { json } => {
            let presets = braid_worker::presets::all();
            // Asked at once: each CLI takes a moment to start.
            let asked: Vec<_> = presets
                .iter()
                .map(|p| {
                    let p = *p;
                    braid_shared::task::spawn("agent-version", braid_worker::presets::version(p))
                })
                .collect();
            let mut versions = Vec::new();
            for handle in asked {
                versions.push(handle.await.unwrap_or_else(|e| Err(e.to_string())));
            }
            let rows: Vec<serde_json::Value> = presets
                .iter()
                .zip(versions)
                .map(|(p, v)| {
                    serde_json::json!({
                        "preset": p.name(),
                        "program": p.program(),
                        "installed": v.is_ok(),
                        "version": v.as_ref().ok(),
                        "problem": v.as_ref().err(),
                        "package": p.package(),
                        "key_env": p.key_env(),
                        "key_set": std::env::var_os(p.key_env()).is_some_and(|k| !k.is_empty()),
                    })
                })
                .collect();
            if json {
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!(
                    "{:<9} {:<10} {:<28} {:<30} key",
                    "preset", "installed", "version", "package"
                );
                for r in &rows {
                    println!(
                        "{:<9} {:<10} {:<28} {:<30} {} ({})",
                        r["preset"].as_str().unwrap_or_default(),
                        if r["installed"] == true { "yes" } else { "no" },
                        r["version"].as_str().unwrap_or("-"),
                        r["package"].as_str().unwrap_or_default(),
                        r["key_env"].as_str().unwrap_or_default(),
                        if r["key_set"] == true {
                            "set"
                        } else {
                            "not set"
                        },
                    );
                }
                for r in &rows {
                    if let Some(problem) = r["problem"].as_str() {
                        println!("{}: {problem}", r["preset"].as_str().unwrap_or_default());
                    }
                }
            }
            Ok(EXIT_OK)
        }
        Command::Gc { repo } => {
            let dir = repo_dir(repo)?;
            let git_dir = braid_shared::git::Git::at(&dir).common_dir().await.ok();
            let cache = braid_worker::cache::root();
            let collected = crate::state::collect(git_dir.as_deref(), &cache);
            crate::state::tell_recovered(&collected.recovered);
            let mut freed: u64 = collected.recovered.iter().map(|r| r.freed).sum();
            for (dir, bytes) in &collected.orphans {
                println!(
                    "removed {} ({})",
                    dir.display(),
                    crate::state::human_bytes(*bytes)
                );
                freed += bytes;
            }
            println!(
                "freed {} in {} folder(s); cache: {}",
                crate::state::human_bytes(freed),
                collected.recovered.len() + collected.orphans.len(),
                cache.display()
            );
            Ok(EXIT_OK)
        }
        Command::Resume {
            run,
            repo,
            workers,
            slots,
            json,
            verbose,
        } => resume(&run, repo, workers, slots, json, verbose).await,
        Command::Worker {
            connect,
            slots,
            cache,
            name,
            labels,
            token_file,
            allow_writable,
            allow_unsandboxed,
        } => {
            let trust = worker_trust(&allow_writable, allow_unsandboxed)?;
            worker(connect, slots, cache, name, labels, token_file, trust).await
        }
        Command::Serve {
            listen,
            state,
            token_file,
            tls_cert,
            tls_key,
        } => {
            crate::serve::serve_main(crate::serve::ServeOptions {
                listen,
                state: state.unwrap_or_else(crate::serve::default_state),
                token_file,
                scheduler: Default::default(),
                tls: tls_cert.zip(tls_key),
            })
            .await
        }
        Command::Submit { plan, target, wait } => {
            let target = target.into();
            let (run, plan) = crate::client::submit(&target, &plan).await?;
            println!("{run}");
            if !wait {
                return Ok(EXIT_OK);
            }
            let ended = crate::client::watch(&target, &run).await?;
            let branches = crate::client::fetch(&target, &run, &plan.repo).await?;
            eprintln!(
                "braid: run {run} {ended}; fetched {} branch(es) into {}",
                branches.len(),
                plan.repo.display()
            );
            Ok(crate::client::exit_code(&ended))
        }
        Command::Status { run, target, json } => {
            crate::client::status(&target.into(), run.as_deref(), json).await
        }
        Command::Runs { target, json } => crate::client::status(&target.into(), None, json).await,
        Command::Watch { run, target } => {
            let ended = crate::client::watch(&target.into(), &run).await?;
            Ok(crate::client::exit_code(&ended))
        }
        Command::Cancel { run, target } => crate::client::cancel(&target.into(), &run).await,
        Command::Fetch { run, target, repo } => {
            let dir = repo_dir(repo)?;
            let branches = crate::client::fetch(&target.into(), &run, &dir).await?;
            for branch in &branches {
                println!("{branch}");
            }
            eprintln!("braid: fetched {} branch(es) of run {run}", branches.len());
            Ok(EXIT_OK)
        }
        Command::Demo { dir, workers, json } => {
            let demo = crate::demo::prepare(dir.as_deref()).await?;
            eprintln!("demo repository: {}", demo.repo.display());
            eprintln!("demo plan:       {}", demo.plan.display());
            let mut plan = plan::load(&demo.plan).await?;
            if let Err(why) = braid_worker::sandbox::available().await {
                // The demo's agent is braid's own script, so it may run uncontained; a
                // plan of the user's would be refused here.
                eprintln!(
                    "note: {why}.\nThe demo runs its own agent script without a sandbox; your own plans will need one (or `sandbox: off`)."
                );
                plan.sandbox.off = true;
                for task in &mut plan.tasks {
                    task.sandbox.off = true;
                }
            }
            let options = RunOptions::local(workers.max(1), 1);
            let code = run_and_print(plan, options, json).await?;
            let out = if json { "" } else { "\n" };
            let lines = format!(
                "{out}Look around:\n  git -C {repo} branch --list 'braid/*'\n  git -C {repo} log --oneline --graph --all\n  cat {repo}/.git/braid/runs/*/report.md\n",
                repo = demo.repo.display()
            );
            if json {
                eprint!("{lines}");
            } else {
                print!("{lines}");
            }
            Ok(code)
        }
    }
}

/// What `braid plan` and `braid run --goal` ask the planner for.
#[allow(clippy::too_many_arguments)]
async fn plan_request(
    goal: &str,
    agent: Option<&str>,
    rounds: u32,
    dir: &std::path::Path,
    base: Option<&str>,
    id: String,
    log_dir: Option<PathBuf>,
    verbose: bool,
) -> Result<crate::planner::Request, BraidError> {
    if goal.trim().is_empty() {
        return Err(BraidError::Usage(
            "the goal is empty; say what to do".into(),
        ));
    }
    if rounds == 0 {
        return Err(BraidError::Usage("--rounds must be at least 1".into()));
    }
    let git = braid_shared::git::Git::at(dir);
    let (Ok(repo), Ok(git_dir)) = (git.toplevel().await, git.common_dir().await) else {
        return Err(BraidError::Usage(format!(
            "{} is not inside a git repository with a working tree",
            dir.display()
        )));
    };
    let base_rev = base.unwrap_or("HEAD").to_owned();
    let Some(base_commit) = braid_shared::git::Git::at(&repo)
        .resolve_commit(&base_rev)
        .await?
    else {
        return Err(BraidError::Usage(format!(
            "base {base_rev:?} does not name a commit in {}",
            repo.display()
        )));
    };
    let text = match agent {
        Some(text) => text.to_owned(),
        None => default_planner().await?,
    };
    let (agent, agent_written) = plan::load::agent_arg(&text)?;
    Ok(crate::planner::Request {
        goal: goal.to_owned(),
        agent,
        agent_written,
        repo,
        git_dir,
        base_rev,
        base_commit,
        rounds,
        id,
        log_dir,
        verbose,
    })
}

/// The planning agent when `--agent` names none: the first preset whose CLI is installed
/// and whose API key is set.
async fn default_planner() -> Result<String, BraidError> {
    for preset in braid_worker::presets::all() {
        let key_set = std::env::var_os(preset.key_env()).is_some_and(|k| !k.is_empty());
        if key_set && braid_worker::presets::version(preset).await.is_ok() {
            eprintln!(
                "planning agent: {} ({} is set; --agent picks another)",
                preset.name(),
                preset.key_env()
            );
            return Ok(preset.name().to_owned());
        }
    }
    let names: Vec<&str> = braid_worker::presets::all()
        .iter()
        .map(|p| p.name())
        .collect();
    Err(BraidError::Usage(format!(
        "no planning agent: name one with --agent, a preset ({}) or a command such as --agent '{{command: [./planner.sh]}}'; `braid agents` shows which CLIs are installed and which keys are set",
        names.join(", ")
    )))
}

/// Loads the planned `text` as the plan file it is, from a scratch copy beside `output`
/// (or in the temp folder), so what is written is what was checked.
async fn planned_plan(text: &str, output: Option<&std::path::Path>) -> Result<Plan, BraidError> {
    let dir = output
        .and_then(|o| o.parent())
        .filter(|d| !d.as_os_str().is_empty() && d.is_dir())
        .map(std::path::Path::to_owned)
        .unwrap_or_else(std::env::temp_dir);
    let scratch = tempfile::Builder::new()
        .prefix(".braid-plan-")
        .suffix(".yaml")
        .tempfile_in(&dir)
        .or_else(|_| tempfile::Builder::new().suffix(".yaml").tempfile())
        .map_err(BraidError::io("writing the planned plan"))?;
    std::fs::write(scratch.path(), text).map_err(BraidError::io("writing the planned plan"))?;
    load_written(scratch.path()).await
}

/// The plan braid wrote out from the planner's, loaded as any plan is: it must load.
async fn load_written(path: &std::path::Path) -> Result<Plan, BraidError> {
    plan::load(path).await.map_err(|errors| {
        BraidError::Internal(format!(
            "the plan braid wrote from the planner's does not load:\n{errors}"
        ))
    })
}

/// `braid run --goal`: plans, shows the DAG, asks (unless `--yes`), and returns the plan
/// kept in the run's folder; `None` when the person said no.
async fn plan_goal_for_run(
    goal: &str,
    agent: Option<&str>,
    rounds: u32,
    yes: bool,
    verbose: bool,
    options: &mut RunOptions,
) -> Result<Option<Plan>, BraidError> {
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    let dir = repo_dir(None)?;
    let run_id = crate::state::new_run_id();
    let git_dir = braid_shared::git::Git::at(&dir)
        .common_dir()
        .await
        .map_err(|_| BraidError::Usage(format!("{} is not in a git repository", dir.display())))?;
    let run_dir = crate::state::run_dir(&git_dir, &run_id);
    let log_dir = run_dir.join("logs");
    let request = plan_request(
        goal,
        agent,
        rounds,
        &dir,
        None,
        format!("{run_id}-plan"),
        Some(log_dir),
        verbose,
    )
    .await;
    let planned = match request {
        Ok(request) => crate::planner::plan(&request).await,
        Err(err) => Err(err),
    };
    let planned = match planned {
        Ok(planned) => planned,
        Err(err) => {
            let _ = std::fs::remove_dir_all(&run_dir);
            return Err(err);
        }
    };
    let path = run_dir.join("plan.yaml");
    crate::report::write_atomically(&path, planned.text.as_bytes())
        .map_err(BraidError::io(format!("writing {}", path.display())))?;
    let mut plan = load_written(&path).await?;
    eprint!("{}", crate::planner::describe(&plan));
    eprintln!(
        "planned in {} round(s) by {}{}",
        planned.record.rounds,
        planned.record.agent,
        spent_text(&planned.record.usage)
    );
    if !yes {
        let keep = || -> Result<PathBuf, BraidError> {
            let kept = git_dir.join("braid/plans").join(format!("{run_id}.yaml"));
            std::fs::create_dir_all(kept.parent().unwrap_or(&git_dir))
                .and_then(|()| std::fs::rename(&path, &kept))
                .map_err(BraidError::io(format!(
                    "keeping the plan as {}",
                    kept.display()
                )))?;
            let _ = std::fs::remove_dir_all(&run_dir);
            Ok(kept)
        };
        if !std::io::stdin().is_terminal() {
            let kept = keep()?;
            return Err(BraidError::Usage(format!(
                "braid asks before running a planned plan, and standard input is not a terminal: pass --yes to run at once. The plan is kept as {}; run it with: braid run {}",
                kept.display(),
                kept.display()
            )));
        }
        eprint!("Run this plan? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            let kept = keep()?;
            eprintln!(
                "not run. The plan is kept as {}; edit it and run it with: braid run {}",
                kept.display(),
                kept.display()
            );
            return Ok(None);
        }
    }
    plan.path = path.clone();
    let mut record = planned.record;
    record.plan = path.to_string_lossy().into_owned();
    options.run_id = Some(run_id);
    options.planner = Some(record);
    Ok(Some(plan))
}

/// `, spent 1200 tokens, $0.01` for what a planner spent; empty when nothing is known.
fn spent_text(usage: &crate::report::Usage) -> String {
    if *usage == crate::report::Usage::default() {
        String::new()
    } else {
        format!(", spent {}", usage.text())
    }
}

/// The socket path of a `--listen` address.
fn listen_path(addr: &str) -> Result<PathBuf, BraidError> {
    match addr.strip_prefix("unix:") {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(BraidError::Usage(format!(
            "--listen {addr:?}: give a Unix socket as unix:/path/to.sock (TCP comes with braid serve)"
        ))),
    }
}

async fn run_and_print(plan: Plan, options: RunOptions, json: bool) -> Result<i32, BraidError> {
    let finished = run_embedded(plan, options).await?;
    let summary = finished.report.summary();
    if json {
        eprint!("\n{summary}");
        let text = serde_json::to_string_pretty(&finished.report)
            .map_err(|e| BraidError::Internal(e.to_string()))?;
        println!("{text}");
    } else {
        print!("\n{summary}");
    }
    tracing::debug!(path = %finished.report_path.display(), "report written");
    Ok(finished.exit_code)
}

fn repo_dir(repo: Option<PathBuf>) -> Result<PathBuf, BraidError> {
    match repo {
        Some(repo) => Ok(repo),
        None => std::env::current_dir().map_err(BraidError::io("reading the current folder")),
    }
}

/// A finished run's report as stored.
struct Stored {
    /// Its state directory.
    dir: PathBuf,
    /// report.json as written.
    text: String,
    /// report.json read.
    report: crate::report::Report,
}

/// Reads the report of run `run` (or `latest`) of the repository at `dir`.
async fn load_report(dir: &std::path::Path, run: &str) -> Result<Stored, BraidError> {
    // A batch over repositories keeps its report in braid's cache.
    let cached = braid_worker::cache::root().join("runs");
    let in_repo = braid_shared::git::Git::at(dir).common_dir().await.is_ok();
    let run_dir = match run {
        "latest" if !in_repo => latest_in(&cached),
        "latest" => None,
        run => Some(cached.join(run)),
    };
    if let Some(run_dir) = run_dir.filter(|d| d.join("report.json").is_file()) {
        let path = run_dir.join("report.json");
        let text = std::fs::read_to_string(&path)
            .map_err(BraidError::io(format!("reading {}", path.display())))?;
        let report = serde_json::from_str(&text)
            .map_err(|e| BraidError::Internal(format!("cannot read {}: {e}", path.display())))?;
        return Ok(Stored {
            dir: run_dir,
            text,
            report,
        });
    }
    let git_dir = braid_shared::git::Git::at(dir)
        .common_dir()
        .await
        .map_err(|_| BraidError::Usage(format!("{} is not in a git repository", dir.display())))?;
    crate::state::tell_recovered(&crate::state::recover(&git_dir));
    let runs = git_dir.join("braid/runs");
    let run = if run == "latest" {
        let mut ids: Vec<String> = std::fs::read_dir(&runs)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.path().join("report.json").is_file())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids.pop()
            .ok_or_else(|| BraidError::Usage(format!("no finished run in {}", runs.display())))?
    } else {
        run.to_owned()
    };
    let run_dir = crate::state::run_dir(&git_dir, &run);
    let path = run_dir.join("report.json");
    let text = std::fs::read_to_string(&path).map_err(|_| {
        BraidError::Usage(format!("no report for run {run:?} at {}", path.display()))
    })?;
    let report: crate::report::Report = serde_json::from_str(&text)
        .map_err(|e| BraidError::Internal(format!("cannot read {}: {e}", path.display())))?;
    Ok(Stored {
        dir: run_dir,
        text,
        report,
    })
}

/// The newest run folder under `runs` that holds a report.
fn latest_in(runs: &std::path::Path) -> Option<PathBuf> {
    let mut ids: Vec<PathBuf> = std::fs::read_dir(runs)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("report.json").is_file())
        .collect();
    ids.sort();
    ids.pop()
}

/// `braid validate` of a plan fanned over repositories: its targets, and each local
/// repository's plan checked against it as it is (nothing is cloned).
async fn validate_repos(
    path: &std::path::Path,
    repos: &crate::plan::repos::ReposPlan,
) -> Result<String, BraidError> {
    use crate::plan::repos::{ForRepo, Source};
    let mut out = format!(
        "plan {}: task {} over {} repositories\n",
        path.display(),
        repos.task,
        repos.repos.len()
    );
    let mut errors = Vec::new();
    for repo in &repos.repos {
        let id = format!("{}.{}", repos.task, repo.slug);
        match &repo.source {
            Source::Path(dir) => {
                let rev = repos.base.clone().unwrap_or_else(|| "HEAD".into());
                let base = braid_shared::git::Git::at(dir)
                    .resolve_commit(&rev)
                    .await
                    .ok()
                    .flatten();
                let Some(base) = base else {
                    out.push_str(&format!(
                        "  {id}  {}: base {rev:?} names no commit there\n",
                        repo.text
                    ));
                    continue;
                };
                let one = ForRepo {
                    repo: repo.clone(),
                    clone: dir.clone(),
                    base: base.clone(),
                };
                match plan::load::load_for_repo(path, &one).await {
                    Ok(_) => out.push_str(&format!(
                        "  {id}  {} at {}\n",
                        repo.text,
                        crate::report::short(&base)
                    )),
                    Err(e) => errors.extend(e.0),
                }
            }
            Source::Url(url) => {
                out.push_str(&format!("  {id}  {url} (checked once it is cloned)\n"));
            }
        }
    }
    if !errors.is_empty() {
        errors.dedup();
        return Err(BraidError::Plan(crate::plan::PlanErrors(errors)));
    }
    Ok(out)
}

/// The report of run `run` of the repository at `dir`, as `braid report` prints it. For
/// `html`, writes report.html beside report.json and returns its path.
async fn show_report(
    dir: &std::path::Path,
    run: &str,
    format: &str,
    conflicts: bool,
) -> Result<String, BraidError> {
    if !matches!(format, "md" | "json" | "html") {
        return Err(BraidError::Usage(format!(
            "unknown report format {format:?}; use md, json or html"
        )));
    }
    let Stored { dir, text, report } = load_report(dir, run).await?;
    Ok(match (conflicts, format) {
        (true, "json") => {
            let value = serde_json::json!({
                "run": report.run,
                "conflicts": report.result.conflicts,
                "predicted": report.result.predicted,
            });
            format!("{value:#}\n")
        }
        (true, _) => report.conflicts_text(),
        (false, "json") => text,
        (false, "html") => {
            let git = braid_shared::git::Git::at(&report.repo);
            let mut comparisons = Vec::with_capacity(report.tasks.len());
            for task in &report.tasks {
                comparisons.push(compare(&report, task, &git, true).await?);
            }
            let path = dir.join("report.html");
            crate::report::write_atomically(&path, report.html(&comparisons).as_bytes())
                .map_err(BraidError::io(format!("writing {}", path.display())))?;
            format!("{}\n", path.display())
        }
        (false, _) => report.markdown(),
    })
}

fn default_workers() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(2)
}

/// The plan as `braid validate` prints it: header and the DAG in layers.
pub fn describe(plan: &Plan) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let attempts: u32 = plan.tasks.iter().map(|t| t.attempts).sum();
    let _ = writeln!(out, "plan {} is valid", plan.path.display());
    if let Some(name) = &plan.name {
        let _ = writeln!(out, "name: {name}");
    }
    let _ = writeln!(out, "repo: {}", plan.repo.display());
    let _ = writeln!(
        out,
        "base: {} ({})",
        plan.base_rev,
        crate::report::short(&plan.base_commit)
    );
    let dag = Dag::new(&plan.tasks);
    let layers = dag.layers();
    let _ = writeln!(
        out,
        "{} task(s), {attempts} attempt(s), {} layer(s):",
        plan.tasks.len(),
        layers.len()
    );
    for (i, layer) in layers.iter().enumerate() {
        let tasks: Vec<String> = layer
            .iter()
            .map(|&t| {
                let task = &plan.tasks[t];
                let mut text = format!("{} ×{}", task.id, task.attempts);
                if task.select != plan::Select::Best {
                    let _ = write!(text, " {}", task.select.name());
                }
                if task.retries > 0 {
                    let _ = write!(text, " +{} retries", task.retries);
                }
                if !task.deps.is_empty() {
                    let _ = write!(text, " (after {})", task.deps.join(", "));
                }
                text
            })
            .collect();
        let _ = writeln!(out, "  layer {}: {}", i + 1, tasks.join(", "));
    }
    let agents: Vec<String> = plan
        .tasks
        .iter()
        .map(|t| {
            let names: Vec<String> = t.agents.iter().map(plan::Agent::title).collect();
            format!("{}: {}", t.id, names.join(" / "))
        })
        .collect();
    let _ = writeln!(out, "agents: {}", agents.join(", "));
    if plan.budget.is_set() {
        let _ = writeln!(out, "run budget: {}", budget_text(&plan.budget));
    }
    let overrides: Vec<String> = plan
        .tasks
        .iter()
        .filter(|t| t.on_conflict != plan.merge.on_conflict)
        .map(|t| format!("{} {}", t.id, t.on_conflict.name()))
        .collect();
    let _ = write!(
        out,
        "on conflict: {} (max_rebases {})",
        plan.merge.on_conflict.name(),
        plan.merge.max_rebases
    );
    if !overrides.is_empty() {
        let _ = write!(out, "; {}", overrides.join(", "));
    }
    out.push('\n');
    if !plan.merge.verify.is_empty() {
        let names: Vec<&str> = plan.merge.verify.iter().map(|c| c.name.as_str()).collect();
        let _ = writeln!(out, "verify on the result: {}", names.join(", "));
    }
    out
}

/// A budget in a few words: `$20, 5000000 tokens`.
fn budget_text(b: &plan::Budget) -> String {
    let mut parts = Vec::new();
    if b.usd > 0.0 {
        parts.push(format!("${}", b.usd));
    }
    if b.tokens > 0 {
        parts.push(format!("{} tokens", b.tokens));
    }
    if b.turns > 0 {
        parts.push(format!("{} turns", b.turns));
    }
    parts.join(", ")
}

/// What braid tells about a plan before it runs: its likely conflicts (or the deps that
/// now order them) and its warnings, a line each.
fn plan_notes(plan: &mut plan::Plan, serialize: bool) -> Vec<String> {
    let mut lines = Vec::new();
    if serialize {
        for said in plan.serialize_overlaps() {
            lines.push(format!("serialized: {said}"));
        }
    }
    for overlap in &plan.overlaps {
        lines.push(format!(
            "likely conflict: {} and {} both touch {} and nothing orders them (--serialize-overlaps orders them)",
            overlap.tasks[0],
            overlap.tasks[1],
            overlap.paths.join(", ")
        ));
    }
    for warning in &plan.warnings {
        lines.push(format!("warning: {warning}"));
    }
    lines
}

/// Which server a client command talks to.
#[derive(Debug, clap::Args)]
struct TargetArgs {
    /// The server: `http://host:port` or `unix:/path/to.sock` [default: $BRAID_SERVER].
    #[arg(long)]
    server: Option<String>,
    /// The file holding the client token [default: $BRAID_TOKEN].
    #[arg(long)]
    token_file: Option<PathBuf>,
}

impl From<TargetArgs> for crate::client::Target {
    fn from(args: TargetArgs) -> Self {
        crate::client::Target {
            server: args.server,
            token_file: args.token_file,
        }
    }
}

/// What `braid worker` lets plans ask of its sandboxes: folders that must exist, taken
/// as they really are (a link to elsewhere allows what it points to, and says so).
fn worker_trust(
    writable: &[PathBuf],
    unsandboxed: bool,
) -> Result<braid_worker::sandbox::Trust, BraidError> {
    let mut folders = Vec::new();
    for dir in writable {
        match std::fs::canonicalize(dir) {
            Ok(real) if real.is_dir() => folders.push(real),
            _ => {
                return Err(BraidError::Usage(format!(
                    "--allow-writable {}: not an existing folder",
                    dir.display()
                )));
            }
        }
    }
    Ok(braid_worker::sandbox::Trust::Worker {
        writable: folders,
        unsandboxed,
    })
}

/// `braid worker`: serves the coordinator at `connect` until it says the work is over, or a
/// signal stops the worker (its running attempts are stopped and reported first).
async fn worker(
    connect: String,
    slots: u32,
    cache: Option<PathBuf>,
    name: Option<String>,
    labels: Vec<String>,
    token_file: Option<PathBuf>,
    trust: braid_worker::sandbox::Trust,
) -> Result<i32, BraidError> {
    if slots == 0 {
        return Err(BraidError::Usage("--slots must be at least 1".into()));
    }
    let mut label_map = std::collections::BTreeMap::new();
    for label in &labels {
        match label.split_once('=') {
            Some((key, value)) if !key.is_empty() => {
                label_map.insert(key.to_owned(), value.to_owned());
            }
            _ => {
                return Err(BraidError::Usage(format!(
                    "--label {label:?}: write a label as key=value"
                )));
            }
        }
    }
    let name = name.unwrap_or_else(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "worker".into())
    });
    let options = braid_worker::runtime::WorkerOptions {
        name,
        slots,
        labels: label_map,
        cache: cache.unwrap_or_else(braid_worker::cache::root),
        borrow: Default::default(),
        auth: braid_shared::auth::Bearer::new(
            crate::client::token(token_file.as_deref())?.as_deref(),
        )
        .map_err(BraidError::Usage)?,
        reconnect: true,
        drain: tokio_util::sync::CancellationToken::new(),
        trust,
    };
    // SIGTERM drains: nothing new, what runs finishes. A second SIGTERM, or SIGINT, stops
    // at once, handing back what runs.
    let stop = tokio_util::sync::CancellationToken::new();
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        let (stop, drain) = (stop.clone(), options.drain.clone());
        let mut term =
            signal(SignalKind::terminate()).map_err(BraidError::io("listening for signals"))?;
        let mut int =
            signal(SignalKind::interrupt()).map_err(BraidError::io("listening for signals"))?;
        braid_shared::task::spawn("signals", async move {
            loop {
                tokio::select! {
                    _ = term.recv() => {
                        if drain.is_cancelled() {
                            break;
                        }
                        drain.cancel();
                    }
                    _ = int.recv() => break,
                }
            }
            stop.cancel();
        })
    };
    // A coordinator that restarts or cannot be reached for now is attached to again,
    // after a jittered backoff, with the attempts still running.
    let served = braid_worker::runtime::serve(&connect, options, stop.clone()).await;
    signals.abort();
    match served {
        Ok(_) if stop.is_cancelled() => Ok(crate::error::EXIT_INTERRUPTED),
        Ok(_) => Ok(EXIT_OK),
        Err(
            err @ (braid_worker::runtime::WorkerError::Address { .. }
            | braid_worker::runtime::WorkerError::Refused(_)),
        ) => Err(BraidError::Usage(err.to_string())),
        Err(err) => Err(BraidError::Environment(err.to_string())),
    }
}

/// `braid resume RUN`: the run's plan and what it had done, from its journal, run on.
async fn resume(
    run: &str,
    repo: Option<PathBuf>,
    workers: Option<u32>,
    slots: Option<u32>,
    json: bool,
    verbose: bool,
) -> Result<i32, BraidError> {
    if run.is_empty() || !run.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(BraidError::Usage(format!("{run:?} is not a run id")));
    }
    let dir = repo_dir(repo)?;
    let git_dir = braid_shared::git::Git::at(&dir)
        .common_dir()
        .await
        .map_err(|_| BraidError::Usage(format!("{} is not in a git repository", dir.display())))?;
    let run_dir = crate::state::run_dir(&git_dir, run);
    if !run_dir.is_dir() {
        return Err(BraidError::Usage(format!(
            "no run {run} in {}",
            git_dir.join("braid/runs").display()
        )));
    }
    if let Some(lock) = crate::state::Lock::read(&run_dir).filter(crate::state::Lock::alive) {
        return Err(BraidError::Usage(format!(
            "run {run} is still running (process {})",
            lock.pid
        )));
    }
    let path = run_dir.join(crate::journal::FILE);
    let (record, resume) = crate::journal::Journal::read(&path).map_err(|why| {
        BraidError::Usage(format!("run {run} cannot be resumed: its journal: {why}"))
    })?;
    if let Some(status) = &record.status {
        return Err(BraidError::Usage(format!(
            "run {run} already ended ({status}); see `braid report {run}`"
        )));
    }
    let workers = workers.unwrap_or(record.started.workers);
    let slots = slots.unwrap_or(record.started.slots).max(1);
    if workers == 0 {
        return Err(BraidError::Usage("--workers must be at least 1".into()));
    }
    eprintln!(
        "braid: resuming run {run} from its journal: {} result(s) already in",
        resume.results.len()
    );
    let options = RunOptions {
        verbose,
        run_id: Some(run.to_owned()),
        planner: record.started.planner.clone(),
        resume: Some(crate::run::ResumeFrom {
            started_at: record.started_at.clone(),
            started_unix_ms: record.started_unix_ms,
            resume,
        }),
        ..RunOptions::local(workers, slots)
    };
    run_and_print(record.plan, options, json).await
}
