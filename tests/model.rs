//! A scripted model server for tests: loopback only, speaking the four wire formats the agent
//! CLIs and braid's built-in agent use (OpenAI Responses, OpenAI Chat Completions, Anthropic
//! Messages, Gemini `generateContent`), streaming with SSE or answering whole.
//!
//! Its replies follow a [`Script`]: a conversation that has not yet seen a tool result is told
//! to call the agent's own file-writing tool (whichever of the known tools the request offers),
//! and one that has is told it is done. So any number of attempts can talk to one server at
//! once, each in its own conversation. Every reply carries the script's usage, and the server
//! counts what it reported, so a test can compare braid's report with the truth.
//!
//! Faults are scripted too: rate limits with `Retry-After`, server errors, a terminal quota
//! error, a reply that hangs.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

/// Token counts of one reply, as the server reports them (cached tokens are part of input).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Input tokens, cached ones included.
    pub input: u64,
    /// Of those, read from the cache.
    pub cached: u64,
    /// Output tokens.
    pub output: u64,
}

/// A fault the server answers with instead of a reply.
#[derive(Debug, Clone)]
pub enum Fault {
    /// HTTP 429 with `Retry-After: secs` for the first `times` conversation requests.
    RateLimited {
        /// How many requests get it.
        times: u64,
        /// The `Retry-After` header, in seconds.
        secs: u64,
    },
    /// HTTP 500 for the first `times` conversation requests.
    ServerError {
        /// How many requests get it.
        times: u64,
    },
    /// Every conversation request is refused: quota exhausted (429 with the providers'
    /// `insufficient_quota` body, no `Retry-After`).
    QuotaExhausted,
    /// Every conversation request is refused: the key is wrong (401).
    Unauthorized,
    /// The first reply is held back this long before it is sent.
    Hang(Duration),
}

/// What the server says.
#[derive(Debug, Clone)]
pub struct Script {
    /// The file the agent is told to write, relative to its working directory.
    pub path: String,
    /// Its content.
    pub content: String,
    /// The usage reported with the tool-call reply.
    pub tool_turn: Tokens,
    /// The usage reported with the final reply.
    pub final_turn: Tokens,
    /// The agent's final message.
    pub final_text: String,
    /// The prefix of every working directory an agent runs in (braid's cache `work/`), used
    /// to find the directory in a request when a tool wants an absolute path.
    pub root: Option<String>,
    /// A fault, if any.
    pub fault: Option<Fault>,
    /// Tool calls per conversation before the final reply (default 1); more make long
    /// conversations, for turn budgets.
    pub tool_calls: u64,
    /// A shell command line the agent is told to run with its shell tool, instead of
    /// writing the file; `{port}` in it becomes the server's own port.
    pub command: Option<String>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            path: "hello.txt".into(),
            content: "hello from the model\n".into(),
            tool_turn: Tokens {
                input: 1000,
                cached: 200,
                output: 50,
            },
            final_turn: Tokens {
                input: 1200,
                cached: 900,
                output: 20,
            },
            final_text: "Created the file.".into(),
            root: None,
            fault: None,
            tool_calls: 1,
            command: None,
        }
    }
}

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method and path with query.
    pub target: String,
    /// The `authorization`, `x-api-key` or `x-goog-api-key` header.
    pub key: String,
    /// The body, as JSON where it parsed.
    pub body: Value,
    /// What the server answered: `tool`, `final`, `side`, `fault` or `other`.
    pub answer: &'static str,
    /// The usage it reported.
    pub tokens: Tokens,
}

#[derive(Debug, Default)]
struct State {
    port: std::sync::atomic::AtomicU16,
    seen: Mutex<Vec<Seen>>,
    conversation: AtomicU64,
    ids: AtomicU64,
}

/// A running server; it stops when dropped.
#[derive(Debug)]
pub struct ModelServer {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    _server: crate::http::Loopback,
}

impl ModelServer {
    /// Starts a server on a free loopback port.
    pub fn start(script: Script) -> ModelServer {
        let state = Arc::new(State::default());
        let shared = state.clone();
        let script = Arc::new(script);
        let server = crate::http::Loopback::start(move |req| {
            let state = shared.clone();
            let script = script.clone();
            async move { answer(req, &script, &state).await }
        });
        state.port.store(server.addr.port(), Ordering::Relaxed);
        ModelServer {
            addr: server.addr,
            state,
            _server: server,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("seen").clone()
    }

    /// The requests that were part of a conversation (tool and final replies, faults).
    pub fn conversation(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| matches!(s.answer, "tool" | "final" | "fault"))
            .collect()
    }

    /// The sum of the usage the server reported.
    pub fn reported(&self) -> Tokens {
        self.seen().iter().fold(Tokens::default(), |t, s| Tokens {
            input: t.input + s.tokens.input,
            cached: t.cached + s.tokens.cached,
            output: t.output + s.tokens.output,
        })
    }
}

/// The wire formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Responses,
    Chat,
    Anthropic,
    Gemini,
}

use crate::http::Reply;

async fn answer(req: Request<Incoming>, script: &Script, state: &State) -> Reply {
    let target = format!(
        "{} {}",
        req.method(),
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let key = ["authorization", "x-api-key", "x-goog-api-key"]
        .iter()
        .find_map(|h| req.headers().get(*h))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let body = crate::http::json_body(req.into_body()).await;
    let api = if path.ends_with("/responses") {
        Some(Api::Responses)
    } else if path.ends_with("/chat/completions") {
        Some(Api::Chat)
    } else if path.ends_with("/messages") {
        Some(Api::Anthropic)
    } else if path.contains(":streamGenerateContent") || path.contains(":generateContent") {
        Some(Api::Gemini)
    } else {
        None
    };
    let record = |answer: &'static str, tokens: Tokens| {
        state.seen.lock().expect("seen").push(Seen {
            target: target.clone(),
            key: key.clone(),
            body: body.clone(),
            answer,
            tokens,
        });
    };
    let Some(api) = api else {
        record("other", Tokens::default());
        return other(&path);
    };
    let tools = tool_names(api, &body);
    let stream = match api {
        Api::Gemini => path.contains(":streamGenerateContent") || query.contains("alt=sse"),
        _ => body["stream"].as_bool().unwrap_or(false),
    };
    // aider offers no tools: it asks for whole files in its "file listing" format.
    if tools.is_empty() && body.to_string().contains("*file listing*") {
        let n = state.conversation.fetch_add(1, Ordering::SeqCst);
        if let Some(refused) = fault_reply(script, n).await {
            record("fault", Tokens::default());
            return refused;
        }
        let listing = format!(
            "I will create {path}.\n\n{path}\n```\n{}```\n",
            script.content,
            path = script.path
        );
        record("tool", script.tool_turn);
        return reply(
            api,
            &body,
            stream,
            &Turn::Text(listing),
            script.tool_turn,
            state,
        );
    }
    // A request that offers no tools is the CLI's own side business (a title, a summary, a
    // check on who speaks next): answered in text, with no usage.
    if tools.is_empty() {
        record("side", Tokens::default());
        let text = side_text(api, &body);
        return reply(
            api,
            &body,
            stream,
            &Turn::Text(text),
            Tokens::default(),
            state,
        );
    }
    let n = state.conversation.fetch_add(1, Ordering::SeqCst);
    if let Some(refused) = fault_reply(script, n).await {
        record("fault", Tokens::default());
        return refused;
    }
    let done = tool_results(api, &body);
    if done >= script.tool_calls.max(1) {
        record("final", script.final_turn);
        return reply(
            api,
            &body,
            stream,
            &Turn::Text(script.final_text.clone()),
            script.final_turn,
            state,
        );
    }
    let cwd = script
        .root
        .as_deref()
        .and_then(|root| find_dir(&body.to_string(), root));
    let turn = if done == 0 {
        let script = Script {
            command: script
                .command
                .as_ref()
                .map(|c| c.replace("{port}", &state.port.load(Ordering::Relaxed).to_string())),
            ..script.clone()
        };
        write_call(&tools, &script, cwd.as_deref())
    } else {
        // Later calls in a long conversation only look around.
        look_call(&tools)
    };
    record("tool", script.tool_turn);
    reply(api, &body, stream, &turn, script.tool_turn, state)
}

/// The scripted fault for the `n`th conversation request, if it gets one.
async fn fault_reply(script: &Script, n: u64) -> Option<Reply> {
    match script.fault.as_ref()? {
        Fault::RateLimited { times, secs } if n < *times => Some(
            Response::builder()
                .status(StatusCode::TOO_MANY_REQUESTS)
                .header("retry-after", secs.to_string())
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(
                    json!({"error": {"type": "rate_limit_error", "code": "rate_limit_exceeded",
                            "message": "Rate limit reached, retry later."}})
                    .to_string(),
                )))
                .expect("response"),
        ),
        Fault::ServerError { times } if n < *times => Some(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "The server had an error.",
        )),
        Fault::QuotaExhausted => Some(error(
            StatusCode::TOO_MANY_REQUESTS,
            "insufficient_quota",
            "You exceeded your current quota, please check your plan and billing details.",
        )),
        Fault::Unauthorized => Some(error(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "Incorrect API key provided.",
        )),
        Fault::Hang(d) if n == 0 => {
            tokio::time::sleep(*d).await;
            None
        }
        _ => None,
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            json!({"error": {"type": code, "code": code, "message": message,
                    "status": if status == StatusCode::UNAUTHORIZED { "UNAUTHENTICATED" } else { "RESOURCE_EXHAUSTED" }}})
            .to_string(),
        )))
        .expect("response")
}

/// Endpoints besides the conversation: model lists and such.
fn other(path: &str) -> Reply {
    let body = if path.ends_with("/models") {
        json!({"object": "list", "data": [{"id": "test-model", "object": "model", "owned_by": "test"}],
               "models": [{"name": "models/test-model"}]})
    } else if path.contains(":countTokens") {
        json!({"totalTokens": 10})
    } else {
        json!({})
    };
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

/// The text for a side request: JSON where the request asks for JSON.
fn side_text(api: Api, body: &Value) -> String {
    let wants_json = match api {
        Api::Gemini => body["generationConfig"]["responseMimeType"] == "application/json",
        Api::Chat => body["response_format"]["type"].is_string(),
        _ => false,
    };
    if wants_json {
        json!({"reasoning": "The model finished its turn.", "next_speaker": "user"}).to_string()
    } else {
        "Test session".to_owned()
    }
}

/// The names of the tools a request offers.
fn tool_names(api: Api, body: &Value) -> Vec<String> {
    match api {
        Api::Gemini => body["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|t| t["functionDeclarations"].as_array().into_iter().flatten())
            .filter_map(|f| f["name"].as_str())
            .map(str::to_owned)
            .collect(),
        _ => body["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["name"].as_str().or(t["function"]["name"].as_str()))
            .map(str::to_owned)
            .collect(),
    }
}

/// How many tool results the conversation holds.
fn tool_results(api: Api, body: &Value) -> u64 {
    let items = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let n = match api {
        Api::Responses => items(&body["input"])
            .iter()
            .filter(|i| {
                matches!(
                    i["type"].as_str(),
                    Some("function_call_output" | "custom_tool_call_output")
                )
            })
            .count(),
        Api::Chat => items(&body["messages"])
            .iter()
            .filter(|m| m["role"] == "tool")
            .count(),
        Api::Anthropic => items(&body["messages"])
            .iter()
            .flat_map(|m| items(&m["content"]))
            .filter(|c| c["type"] == "tool_result")
            .count(),
        Api::Gemini => items(&body["contents"])
            .iter()
            .flat_map(|c| items(&c["parts"]))
            .filter(|p| p.get("functionResponse").is_some())
            .count(),
    };
    n as u64
}

/// The first worktree under `root` named in `text`: `root/<run>/<worktree>`, not its
/// scratch (`<worktree>.tmp`) or git folder (`<worktree>.git`).
fn find_dir(text: &str, root: &str) -> Option<String> {
    let root = root.trim_end_matches('/');
    let prefix = format!("{root}/");
    text.match_indices(&prefix).find_map(|(at, _)| {
        let rest = &text[at + prefix.len()..];
        let mut parts = rest
            .split(|c: char| c == '/' || c == '"' || c == '\\' || c == '`' || c.is_whitespace());
        let run = parts.next()?;
        let tree = parts.next()?;
        let plain = !run.is_empty() && !tree.is_empty() && !tree.contains('.');
        plain.then(|| format!("{root}/{run}/{tree}"))
    })
}

/// What the model says in one reply.
#[derive(Debug, Clone)]
enum Turn {
    Text(String),
    /// A function call: name and arguments.
    Call(String, Value),
    /// A custom (freeform) tool call of the Responses API: name and input.
    Custom(String, String),
}

/// A call of the first known file-writing tool the request offers.
fn write_call(tools: &[String], script: &Script, cwd: Option<&str>) -> Turn {
    let abs = match cwd {
        Some(dir) => format!("{dir}/{}", script.path),
        None => script.path.clone(),
    };
    let patch = format!(
        "*** Begin Patch\n*** Add File: {}\n{}*** End Patch\n",
        script.path,
        script
            .content
            .lines()
            .map(|l| format!("+{l}\n"))
            .collect::<String>()
    );
    let has = |n: &str| tools.iter().any(|t| t == n);
    if let Some(command) = &script.command {
        return shell_call(tools, command);
    }

    if has("apply_patch") {
        // Codex offers apply_patch as a freeform tool; braid's built-in agent as a function.
        return Turn::Call("apply_patch".into(), json!({"input": patch}));
    }
    for (name, key) in [
        ("Write", "file_path"),
        ("write_file", "file_path"),
        ("write", "filePath"),
    ] {
        if has(name) {
            return Turn::Call(name.into(), json!({key: abs, "content": script.content}));
        }
    }
    let shell = format!(
        "printf '%s' '{}' > '{}'",
        script.content.replace('\'', "'\\''"),
        script.path
    );
    shell_call(tools, &shell)
}

/// A call of the first shell tool the request offers.
fn shell_call(tools: &[String], command: &str) -> Turn {
    let has = |n: &str| tools.iter().any(|t| t == n);
    for name in ["shell", "exec_command", "Bash", "run_shell_command", "bash"] {
        if has(name) {
            let args = match name {
                // braid's built-in agent (it has `finish`) takes a command line; Codex's
                // older shell tool takes an argument vector.
                "shell" if has("finish") => json!({"command": command}),
                "shell" => json!({"command": ["bash", "-lc", command]}),
                "exec_command" => json!({"cmd": command}),
                "bash" => json!({"command": command, "description": "run a command"}),
                _ => json!({"command": command}),
            };
            return Turn::Call(name.into(), args);
        }
    }
    Turn::Text(format!("I have no shell tool among {tools:?}"))
}

/// A harmless call that reads: for long conversations.
fn look_call(tools: &[String]) -> Turn {
    let has = |n: &str| tools.iter().any(|t| t == n);
    for (name, args) in [
        ("list_files", json!({"path": "."})),
        ("LS", json!({"path": "."})),
        ("list_directory", json!({"path": "."})),
        ("shell", json!({"command": ["ls"]})),
        ("Bash", json!({"command": "ls"})),
        ("run_shell_command", json!({"command": "ls"})),
        ("bash", json!({"command": "ls", "description": "list"})),
    ] {
        if has(name) {
            return Turn::Call(name.into(), args);
        }
    }
    Turn::Text("Nothing to look at.".into())
}

/// Custom tool calls: Codex's apply_patch is declared with `type: custom`.
fn as_custom(turn: &Turn, body: &Value) -> Turn {
    if let Turn::Call(name, args) = turn {
        let custom = body["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["type"] == "custom" && t["name"] == name.as_str());
        if custom {
            return Turn::Custom(
                name.clone(),
                args["input"].as_str().unwrap_or_default().to_owned(),
            );
        }
    }
    turn.clone()
}

fn reply(
    api: Api,
    request: &Value,
    stream: bool,
    turn: &Turn,
    tokens: Tokens,
    state: &State,
) -> Reply {
    let id = state.ids.fetch_add(1, Ordering::SeqCst);
    let (content_type, body) = match api {
        Api::Responses => responses(&as_custom(turn, request), tokens, id, stream),
        Api::Chat => chat(turn, tokens, id, stream),
        Api::Anthropic => anthropic(turn, tokens, id, stream),
        Api::Gemini => gemini(turn, tokens, stream),
    };
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}

fn sse(events: &[(Option<&str>, Value)]) -> String {
    let mut out = String::new();
    for (name, data) in events {
        if let Some(name) = name {
            out.push_str(&format!("event: {name}\n"));
        }
        out.push_str(&format!("data: {data}\n\n"));
    }
    out
}

fn responses(turn: &Turn, t: Tokens, id: u64, stream: bool) -> (&'static str, String) {
    let item = match turn {
        Turn::Text(text) => {
            json!({"type": "message", "id": format!("msg_{id}"), "role": "assistant",
            "status": "completed", "content": [{"type": "output_text", "text": text, "annotations": []}]})
        }
        Turn::Call(name, args) => json!({"type": "function_call", "id": format!("fc_{id}"),
            "call_id": format!("call_{id}"), "name": name, "arguments": args.to_string(), "status": "completed"}),
        Turn::Custom(name, input) => json!({"type": "custom_tool_call", "id": format!("ctc_{id}"),
            "call_id": format!("call_{id}"), "name": name, "input": input, "status": "completed"}),
    };
    let usage = json!({"input_tokens": t.input, "input_tokens_details": {"cached_tokens": t.cached},
        "output_tokens": t.output, "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": t.input + t.output});
    let response = json!({"id": format!("resp_{id}"), "object": "response", "created_at": 0,
        "status": "completed", "model": "test-model", "output": [item], "usage": usage});
    if !stream {
        return ("application/json", response.to_string());
    }
    let mut events = vec![(
        Some("response.created"),
        json!({"type": "response.created", "response": {"id": format!("resp_{id}"), "object": "response",
            "status": "in_progress", "model": "test-model", "output": []}}),
    )];
    events.push((
        Some("response.output_item.added"),
        json!({"type": "response.output_item.added", "output_index": 0, "item": item}),
    ));
    if let Turn::Text(text) = turn {
        events.push((
            Some("response.output_text.delta"),
            json!({"type": "response.output_text.delta", "item_id": format!("msg_{id}"),
                "output_index": 0, "content_index": 0, "delta": text}),
        ));
    }
    events.push((
        Some("response.output_item.done"),
        json!({"type": "response.output_item.done", "output_index": 0, "item": item}),
    ));
    events.push((
        Some("response.completed"),
        json!({"type": "response.completed", "response": response}),
    ));
    ("text/event-stream", sse(&events))
}

fn chat(turn: &Turn, t: Tokens, id: u64, stream: bool) -> (&'static str, String) {
    let usage = json!({"prompt_tokens": t.input, "completion_tokens": t.output,
        "total_tokens": t.input + t.output, "prompt_tokens_details": {"cached_tokens": t.cached}});
    let (message, finish) = match turn {
        Turn::Text(text) => (json!({"role": "assistant", "content": text}), "stop"),
        Turn::Call(name, args) => (call_message(name, &args.to_string(), id), "tool_calls"),
        Turn::Custom(name, input) => (
            call_message(name, &json!({"input": input}).to_string(), id),
            "tool_calls",
        ),
    };
    let head = json!({"id": format!("chatcmpl-{id}"), "object": "chat.completion", "created": 0,
        "model": "test-model"});
    if !stream {
        let mut whole = head.clone();
        whole["choices"] = json!([{"index": 0, "message": message, "finish_reason": finish}]);
        whole["usage"] = usage;
        return ("application/json", whole.to_string());
    }
    let chunk = |choices: Value, usage: Value| {
        let mut c = head.clone();
        c["object"] = json!("chat.completion.chunk");
        c["choices"] = choices;
        if !usage.is_null() {
            c["usage"] = usage;
        }
        (None, c)
    };
    let mut delta = message.clone();
    if let Some(calls) = delta["tool_calls"].as_array_mut() {
        for (i, call) in calls.iter_mut().enumerate() {
            call["index"] = json!(i);
        }
    }
    let events = [
        chunk(
            json!([{"index": 0, "delta": delta, "finish_reason": null}]),
            Value::Null,
        ),
        chunk(
            json!([{"index": 0, "delta": {}, "finish_reason": finish}]),
            Value::Null,
        ),
        chunk(json!([]), usage),
    ];
    let mut out = sse(&events);
    out.push_str("data: [DONE]\n\n");
    ("text/event-stream", out)
}

fn call_message(name: &str, args: &str, id: u64) -> Value {
    json!({"role": "assistant", "content": null, "tool_calls": [{"id": format!("call_{id}"),
        "type": "function", "function": {"name": name, "arguments": args}}]})
}

fn anthropic(turn: &Turn, t: Tokens, id: u64, stream: bool) -> (&'static str, String) {
    // Anthropic counts cache reads apart from input.
    let fresh = t.input - t.cached;
    let (block, stop) = match turn {
        Turn::Text(text) => (json!({"type": "text", "text": text}), "end_turn"),
        Turn::Call(name, args) => (
            json!({"type": "tool_use", "id": format!("toolu_{id}"), "name": name, "input": args}),
            "tool_use",
        ),
        Turn::Custom(name, input) => (
            json!({"type": "tool_use", "id": format!("toolu_{id}"), "name": name, "input": {"input": input}}),
            "tool_use",
        ),
    };
    let usage = json!({"input_tokens": fresh, "cache_read_input_tokens": t.cached,
        "cache_creation_input_tokens": 0, "output_tokens": t.output});
    if !stream {
        return (
            "application/json",
            json!({"id": format!("msg_{id}"), "type": "message", "role": "assistant", "model": "test-model",
                "content": [block], "stop_reason": stop, "stop_sequence": null, "usage": usage})
            .to_string(),
        );
    }
    let mut start_block = block.clone();
    let delta = match turn {
        Turn::Text(text) => {
            start_block["text"] = json!("");
            json!({"type": "text_delta", "text": text})
        }
        _ => {
            start_block["input"] = json!({});
            json!({"type": "input_json_delta", "partial_json": block["input"].to_string()})
        }
    };
    let events = [
        (
            Some("message_start"),
            json!({"type": "message_start", "message": {"id": format!("msg_{id}"), "type": "message",
            "role": "assistant", "model": "test-model", "content": [], "stop_reason": null,
            "stop_sequence": null, "usage": {"input_tokens": fresh, "cache_read_input_tokens": t.cached,
            "cache_creation_input_tokens": 0, "output_tokens": 1}}}),
        ),
        (
            Some("content_block_start"),
            json!({"type": "content_block_start", "index": 0, "content_block": start_block}),
        ),
        (
            Some("content_block_delta"),
            json!({"type": "content_block_delta", "index": 0, "delta": delta}),
        ),
        (
            Some("content_block_stop"),
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            Some("message_delta"),
            json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
            "usage": {"output_tokens": t.output}}),
        ),
        (Some("message_stop"), json!({"type": "message_stop"})),
    ];
    ("text/event-stream", sse(&events))
}

fn gemini(turn: &Turn, t: Tokens, stream: bool) -> (&'static str, String) {
    let part = match turn {
        Turn::Text(text) => json!({"text": text}),
        Turn::Call(name, args) => json!({"functionCall": {"name": name, "args": args}}),
        Turn::Custom(name, input) => {
            json!({"functionCall": {"name": name, "args": {"input": input}}})
        }
    };
    let body = json!({"candidates": [{"content": {"role": "model", "parts": [part]},
        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": t.input, "candidatesTokenCount": t.output,
            "cachedContentTokenCount": t.cached, "totalTokenCount": t.input + t.output},
        "modelVersion": "test-model"});
    if stream {
        ("text/event-stream", sse(&[(None, body)]))
    } else {
        ("application/json", body.to_string())
    }
}
