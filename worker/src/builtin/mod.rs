//! braid's built-in agent: a model loop over HTTP (reqwest, streaming) for the OpenAI
//! Responses, OpenAI Chat Completions and Anthropic Messages APIs, with the tools shell,
//! apply_patch, read_file, list_files and finish ([`tools`]).
//!
//! The model is asked from braid's process; only its `shell` commands run, in the attempt's
//! sandbox, so by default they get no network at all (`network: model`: the one endpoint
//! the agent needs is reached by braid itself). A rate limit or a server error is retried
//! with backoff and jitter, honouring `Retry-After`, without using up the attempt; a refused
//! key or an exhausted quota ends it as the provider's terminal fault. Usage comes from the
//! API's own counts, turn by turn, so a budget stops the loop between turns.

mod patch;
pub mod tools;
pub mod wire;

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use braid_shared::exec::{Ending, Finished};
use braid_shared::proto::{AgentSpec, AttemptSpec, Budget, ProviderFault};
use braid_shared::secret::Secret;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::agent::{AgentRun, AttemptFiles, over_budget};
use crate::presets::{Event, Tally, cut};
use crate::sandbox::Launch;
use wire::{Api, Item, Reply};

/// Turns when the plan sets no limit.
pub const DEFAULT_MAX_TURNS: u32 = 50;

/// Tries of one request before a transient fault ends the attempt.
const TRIES: u32 = 6;

/// The longest wait between tries, whatever `Retry-After` says.
const MAX_WAIT: Duration = Duration::from_secs(120);

const SYSTEM: &str = "You are a coding agent working in a git repository: the current folder is its root. \
Make the change the user asks for with your tools, keep it small and focused, and run the project's \
checks with `shell` where they exist. Do not commit: your changes are committed for you. \
When the work is done, call `finish` with a short summary.";

/// The system prompt of a read-only job (a planner, a judge).
const SYSTEM_READ_ONLY: &str = "You are a reviewing agent in a git repository: the current folder is its root, \
and it is read-only. Read what you need with your tools; change nothing. Do what the user asks, write your \
answer where the user says, and call `finish` with it.";

/// Why a request to the model failed.
#[derive(Debug)]
struct Refusal {
    message: String,
    fault: ProviderFault,
}

/// What a stall or a stop did to the loop.
enum Stop {
    Stalled,
    Refused(Refusal),
}

/// The loop's state, kept across the select that can stop it.
struct Session<'a> {
    spec: &'a AttemptSpec,
    tally: Tally,
    events: Option<std::fs::File>,
    log: Option<std::fs::File>,
    logged: u64,
    started: Instant,
    tap: mpsc::Sender<String>,
    over: Option<String>,
    budget: Budget,
}

impl Session<'_> {
    fn event(&mut self, event: Event) {
        self.tally.add(&event);
        if let Some(file) = self.events.as_mut() {
            let _ = writeln!(
                file,
                "{}",
                event.to_json(self.started.elapsed().as_millis() as u64)
            );
        }
        if self.over.is_none() {
            self.over = over_budget(&self.tally.usage, &self.budget);
        }
    }

    /// A line for the agent's log and the live progress.
    fn say(&mut self, line: &str) {
        let cap = self.spec.log_cap_bytes;
        if let Some(file) = self.log.as_mut()
            && (cap == 0 || self.logged < cap)
        {
            let _ = writeln!(file, "{line}");
            self.logged += line.len() as u64 + 1;
        }
        for l in line.lines() {
            let _ = self.tap.try_send(cut(l, 512));
        }
    }
}

/// Runs the built-in agent of `spec` in `worktree`.
pub async fn run(
    spec: &AttemptSpec,
    agent: &AgentSpec,
    launch: &Launch,
    worktree: &Path,
    files: &AttemptFiles,
    cancel: CancellationToken,
    tap: mpsc::Sender<String>,
) -> AgentRun {
    let started = Instant::now();
    let mut session = Session {
        spec,
        tally: Tally::default(),
        events: std::fs::File::create(&files.events).ok(),
        log: std::fs::File::create(&files.log).ok(),
        logged: 0,
        started,
        tap,
        over: None,
        budget: spec.budget.unwrap_or_default(),
    };
    let ending = {
        let work = converse(&mut session, agent, launch, worktree, &cancel);
        let timeout = async {
            match spec.timeout_ms {
                0 => std::future::pending().await,
                ms => tokio::time::sleep(Duration::from_millis(ms)).await,
            }
        };
        tokio::select! {
            ending = work => ending,
            () = cancel.cancelled() => Ending::Cancelled,
            () = timeout => Ending::TimedOut,
        }
    };
    let price = crate::agent::price_for(agent);
    session.tally.usage = session.tally.usage.priced(price);
    let over = session
        .over
        .clone()
        .or_else(|| over_budget(&session.tally.usage, &session.budget));
    AgentRun {
        finished: Finished {
            ending,
            stdout: Vec::new(),
            stderr: Vec::new(),
            duration: started.elapsed(),
            escaped: Vec::new(),
        },
        tally: session.tally,
        over_budget: over,
    }
}

/// The conversation to its end; the ending as a process's would be.
async fn converse(
    s: &mut Session<'_>,
    agent: &AgentSpec,
    launch: &Launch,
    worktree: &Path,
    cancel: &CancellationToken,
) -> Ending {
    let Some(api) = Api::named(&agent.api) else {
        s.event(Event::Failed(format!(
            "the built-in agent has no API {:?}",
            agent.api
        )));
        return Ending::Exited(2);
    };
    let key_env = if agent.api_key_env.is_empty() {
        api.default_key_env()
    } else {
        &agent.api_key_env
    };
    let Some(key) = Secret::from_env(key_env) else {
        s.tally.fault = Some(ProviderFault::Terminal);
        s.event(Event::Failed(format!(
            "no API key: the variable {key_env} is not set where the attempt runs"
        )));
        return Ending::Exited(2);
    };
    let base = if agent.base_url.is_empty() {
        api.default_base().to_owned()
    } else {
        agent.base_url.clone()
    };
    let url = api.url(&base);
    let model = agent.model.clone();
    let max_turns = if agent.max_turns == 0 {
        DEFAULT_MAX_TURNS
    } else {
        agent.max_turns
    };
    let stall = (s.spec.stall_ms > 0).then(|| Duration::from_millis(s.spec.stall_ms));
    let client = match reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            s.event(Event::Failed(format!("could not make an HTTP client: {e}")));
            return Ending::Exited(2);
        }
    };
    let read_only = s.spec.read_only.is_some();
    let tools = tools::all(read_only);
    let mut prompt = s.spec.prompt.clone();
    // A read-only job's prompt already holds what its feedback says.
    if !s.spec.feedback.is_empty() && !read_only {
        prompt.push_str("\n\nAn earlier attempt at this failed. What its checks said:\n");
        prompt.push_str(&s.spec.feedback);
    }
    let mut items = vec![Item::User(prompt)];
    s.say(&format!("built-in agent: {api:?} at {url}, model {model}"));
    for turn in 1..=max_turns {
        let system = if read_only { SYSTEM_READ_ONLY } else { SYSTEM };
        let body = wire::request(api, &model, system, &items, &tools);
        let reply = match ask(s, &client, api, &url, &key, &body, stall).await {
            Ok(reply) => reply,
            Err(Stop::Stalled) => return Ending::Stalled,
            Err(Stop::Refused(refusal)) => {
                s.tally.fault = Some(refusal.fault);
                s.say(&format!("the provider refused: {}", refusal.message));
                s.event(Event::Failed(refusal.message));
                return Ending::Exited(1);
            }
        };
        s.event(Event::Usage(reply.usage));
        if !reply.text.trim().is_empty() {
            s.say(&reply.text);
            s.event(Event::Message(reply.text.clone()));
        }
        if s.over.is_some() {
            return Ending::Exited(0);
        }
        if reply.calls.is_empty() {
            return Ending::Exited(0);
        }
        let mut results = Vec::new();
        let mut finished = None;
        for call in &reply.calls {
            s.say(&format!(
                "> {} {}",
                call.name,
                cut(&call.args.to_string(), 300)
            ));
            s.event(Event::Tool {
                name: call.name.clone(),
                detail: cut(&call.args.to_string(), 200),
            });
            let outcome =
                tools::call(&call.name, &call.args, worktree, launch, cancel, read_only).await;
            s.say(&cut(&outcome.output, 2000));
            s.event(Event::ToolResult { ok: outcome.ok });
            if let Some(summary) = outcome.finished {
                finished = Some(summary);
            }
            results.push((call.clone(), outcome.output));
        }
        items.push(Item::Assistant {
            text: reply.text,
            calls: reply.calls,
        });
        items.push(Item::Results(results));
        if let Some(summary) = finished {
            if !summary.trim().is_empty() {
                s.event(Event::Message(summary));
            }
            return Ending::Exited(0);
        }
        if turn == max_turns {
            s.event(Event::Failed(format!(
                "the built-in agent reached its limit of {max_turns} turns before it finished"
            )));
        }
    }
    Ending::Exited(0)
}

/// One request with its retries: the streamed reply, or why there is none.
async fn ask(
    s: &mut Session<'_>,
    client: &reqwest::Client,
    api: Api,
    url: &str,
    key: &Secret,
    body: &serde_json::Value,
    stall: Option<Duration>,
) -> Result<Reply, Stop> {
    let mut last = String::new();
    for attempt in 1..=TRIES {
        let mut request = client.post(url).json(body);
        request = match api {
            Api::Anthropic => request
                .header("x-api-key", key.expose())
                .header("anthropic-version", "2023-06-01"),
            _ => request.bearer_auth(key.expose()),
        };
        let sent = match stall {
            Some(limit) => match tokio::time::timeout(limit, request.send()).await {
                Ok(sent) => sent,
                Err(_) => return Err(Stop::Stalled),
            },
            None => request.send().await,
        };
        let transient_wait = match sent {
            Err(err) => {
                last = format!(
                    "could not reach the model at {url}: {}",
                    key.redact(&err.to_string())
                );
                backoff(attempt, None)
            }
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    match read(s, api, response, stall).await {
                        Ok(reply) => match &reply.error {
                            Some(error) => {
                                let fault = crate::presets::fault_of(error);
                                if fault == ProviderFault::Transient {
                                    last = error.clone();
                                    backoff(attempt, None)
                                } else {
                                    return Err(Stop::Refused(Refusal {
                                        message: format!(
                                            "the model's stream ended with an error: {error}"
                                        ),
                                        fault,
                                    }));
                                }
                            }
                            None => return Ok(reply),
                        },
                        Err(ReadError::Stalled) => return Err(Stop::Stalled),
                        Err(ReadError::Broken(why)) => {
                            last = format!("the model's stream broke off: {why}");
                            backoff(attempt, None)
                        }
                    }
                } else {
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .map(Duration::from_secs_f64);
                    let text = response.text().await.unwrap_or_default();
                    let message = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                        .unwrap_or_else(|| cut(text.trim(), 300));
                    let said = format!(
                        "{} {}: {message}",
                        status.as_u16(),
                        status.canonical_reason().unwrap_or("")
                    );
                    let quota = text.contains("insufficient_quota") || text.contains("billing");
                    let code = status.as_u16();
                    if code == 401 || code == 403 || quota {
                        return Err(Stop::Refused(Refusal {
                            message: format!("the provider refused for good: {said}"),
                            fault: ProviderFault::Terminal,
                        }));
                    }
                    if code == 429 || code == 408 || code == 409 || code >= 500 {
                        last = said;
                        backoff(attempt, retry_after)
                    } else {
                        return Err(Stop::Refused(Refusal {
                            message: format!("the provider refused the request: {said}"),
                            fault: ProviderFault::Unspecified,
                        }));
                    }
                }
            }
        };
        if attempt == TRIES {
            break;
        }
        s.say(&format!(
            "{last}; trying again in {:.1}s",
            transient_wait.as_secs_f64()
        ));
        s.event(Event::Error(format!("{last} (try {attempt} of {TRIES})")));
        tokio::time::sleep(transient_wait).await;
    }
    Err(Stop::Refused(Refusal {
        message: format!("the model did not answer after {TRIES} tries: {last}"),
        fault: ProviderFault::Transient,
    }))
}

/// How long to wait before try `attempt + 1`: what `Retry-After` says, else an exponential
/// backoff from half a second, each with jitter, so attempts that met the same limit do not
/// all come back at once.
fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    let jitter = 1.0 + fastrand::f64() * 0.25;
    let wait = match retry_after {
        Some(d) => d.mul_f64(jitter),
        None => Duration::from_millis(500 * 2u64.pow(attempt.min(8) - 1))
            .mul_f64(0.75 + fastrand::f64() * 0.5),
    };
    wait.min(MAX_WAIT)
}

enum ReadError {
    Stalled,
    Broken(String),
}

/// Reads a streamed reply to its end.
async fn read(
    s: &mut Session<'_>,
    api: Api,
    response: reqwest::Response,
    stall: Option<Duration>,
) -> Result<Reply, ReadError> {
    let whole = !response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("event-stream"));
    let mut reader = wire::Reader::new(api);
    let mut stream = response.bytes_stream();
    let mut buf = String::new();
    loop {
        let next = match stall {
            Some(limit) => match tokio::time::timeout(limit, stream.next()).await {
                Ok(next) => next,
                Err(_) => return Err(ReadError::Stalled),
            },
            None => stream.next().await,
        };
        match next {
            None => break,
            Some(Err(e)) => return Err(ReadError::Broken(e.to_string())),
            Some(Ok(chunk)) => {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                if !whole {
                    for data in wire::events(&mut buf) {
                        reader.event(&data);
                    }
                }
            }
        }
    }
    if whole {
        s.say("the model answered without streaming");
        reader.whole(&buf);
    } else if !buf.trim().is_empty() {
        buf.push_str("\n\n");
        for data in wire::events(&mut buf) {
            reader.event(&data);
        }
    }
    Ok(reader.finish())
}
