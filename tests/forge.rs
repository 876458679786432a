//! A scripted forge for tests: the subsets of GitHub's and GitLab's REST APIs that
//! `braid publish --pr` uses (find a repository's open pull or merge requests by branch,
//! create one, update one), on loopback, with a token it wants and rate limits it can be
//! told to answer with.
#![allow(clippy::disallowed_methods)]

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::http::{Loopback, Reply};

/// A pull request the forge holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pull {
    pub number: u64,
    /// `owner/name` of its repository.
    pub repo: String,
    pub head: String,
    pub base: String,
    pub title: String,
    pub body: String,
}

/// A request the forge answered: method, path with query, and the status it gave.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub status: u16,
    /// When, from the forge's start.
    pub at_ms: u128,
}

#[derive(Debug)]
struct State {
    token: String,
    /// Writes (create, update) still to refuse with 429, and the `Retry-After` they give.
    limited: u32,
    retry_after: u32,
    pulls: Vec<Pull>,
    calls: Vec<Call>,
    started: Instant,
}

/// A running forge; it stops when dropped.
#[derive(Debug)]
pub struct Forge {
    state: Arc<Mutex<State>>,
    server: Loopback,
}

impl Forge {
    /// A forge that wants `token` as a bearer token.
    pub fn start(token: &str) -> Forge {
        let state = Arc::new(Mutex::new(State {
            token: token.to_owned(),
            limited: 0,
            retry_after: 0,
            pulls: Vec::new(),
            calls: Vec::new(),
            started: Instant::now(),
        }));
        let shared = state.clone();
        let server = Loopback::start(move |req| {
            let state = shared.clone();
            async move { answer(req, &state).await }
        });
        Forge { state, server }
    }

    /// The API's root, for `GITHUB_API_URL`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The next `times` writes are refused with 429 and `Retry-After: secs`.
    pub fn rate_limit(&self, times: u32, secs: u32) {
        let mut state = self.state.lock().expect("forge");
        state.limited = times;
        state.retry_after = secs;
    }

    /// The pull requests it holds.
    pub fn pulls(&self) -> Vec<Pull> {
        self.state.lock().expect("forge").pulls.clone()
    }

    /// Every request so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().expect("forge").calls.clone()
    }
}

fn reply(status: StatusCode, body: &Value) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

fn pull_json(pull: &Pull, owner: &str) -> Value {
    json!({
        "number": pull.number,
        "html_url": format!("https://forge.test/{}/pull/{}", pull.repo, pull.number),
        "state": "open",
        "title": pull.title,
        "body": pull.body,
        "head": {"ref": pull.head, "label": format!("{owner}:{}", pull.head)},
        "base": {"ref": pull.base},
    })
}

async fn answer(req: Request<hyper::body::Incoming>, state: &Mutex<State>) -> Reply {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let auth = header("authorization");
    let private = header("private-token");
    let body = crate::http::json_body(req.into_body()).await;
    let mut state = state.lock().expect("forge");
    let (status, value, retry) = if path.starts_with("/projects/") {
        gitlab(&mut state, &method, &path, &private, &body)
    } else {
        route(&mut state, &method, &path, &auth, &body)
    };
    let at_ms = state.started.elapsed().as_millis();
    state.calls.push(Call {
        method,
        path,
        status: status.as_u16(),
        at_ms,
    });
    let mut answer = reply(status, &value);
    if let Some(secs) = retry {
        answer
            .headers_mut()
            .insert("retry-after", secs.to_string().parse().expect("header"));
    }
    answer
}

/// A query value with its `%XX` escapes and `+` decoded.
fn decoded(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn route(
    state: &mut State,
    method: &str,
    path: &str,
    auth: &str,
    body: &Value,
) -> (StatusCode, Value, Option<u32>) {
    if auth != format!("Bearer {}", state.token) {
        return (
            StatusCode::UNAUTHORIZED,
            json!({"message": "Bad credentials"}),
            None,
        );
    }
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ["repos", owner, name, "pulls", rest @ ..] = parts.as_slice() else {
        return (StatusCode::NOT_FOUND, json!({"message": "Not Found"}), None);
    };
    let repo = format!("{owner}/{name}");
    if method != "GET" && state.limited > 0 {
        state.limited -= 1;
        return (
            StatusCode::TOO_MANY_REQUESTS,
            json!({"message": "You have exceeded a secondary rate limit."}),
            Some(state.retry_after),
        );
    }
    match (method, rest) {
        ("GET", []) => {
            let mut head = None;
            let mut open = true;
            for pair in query.split('&') {
                match pair.split_once('=') {
                    Some(("head", value)) => head = Some(decoded(value)),
                    Some(("state", value)) => open = value == "open",
                    _ => {}
                }
            }
            let found: Vec<Value> = state
                .pulls
                .iter()
                .filter(|p| p.repo == repo && open)
                .filter(|p| {
                    head.as_ref()
                        .is_none_or(|h| *h == format!("{owner}:{}", p.head))
                })
                .map(|p| pull_json(p, owner))
                .collect();
            (StatusCode::OK, Value::Array(found), None)
        }
        ("POST", []) => {
            let field = |key: &str| body[key].as_str().unwrap_or_default().to_owned();
            let head = field("head");
            let head = head
                .split_once(':')
                .map_or(head.clone(), |(_, b)| b.to_owned());
            if state.pulls.iter().any(|p| p.repo == repo && p.head == head) {
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"message": "Validation Failed", "errors": [{"message": format!("A pull request already exists for {owner}:{head}.")}]}),
                    None,
                );
            }
            let pull = Pull {
                number: state.pulls.len() as u64 + 1,
                repo,
                head,
                base: field("base"),
                title: field("title"),
                body: field("body"),
            };
            let value = pull_json(&pull, owner);
            state.pulls.push(pull);
            (StatusCode::CREATED, value, None)
        }
        ("PATCH", [number]) => {
            let number: u64 = number.parse().unwrap_or(0);
            let Some(pull) = state
                .pulls
                .iter_mut()
                .find(|p| p.repo == repo && p.number == number)
            else {
                return (StatusCode::NOT_FOUND, json!({"message": "Not Found"}), None);
            };
            if let Some(title) = body["title"].as_str() {
                pull.title = title.to_owned();
            }
            if let Some(text) = body["body"].as_str() {
                pull.body = text.to_owned();
            }
            let value = pull_json(pull, owner);
            (StatusCode::OK, value, None)
        }
        _ => (StatusCode::NOT_FOUND, json!({"message": "Not Found"}), None),
    }
}

fn merge_json(pull: &Pull) -> Value {
    json!({
        "iid": pull.number,
        "web_url": format!("https://forge.test/{}/-/merge_requests/{}", pull.repo, pull.number),
        "state": "opened",
        "title": pull.title,
        "description": pull.body,
        "source_branch": pull.head,
        "target_branch": pull.base,
    })
}

/// GitLab's merge requests: `GET|POST /projects/:id/merge_requests`,
/// `PUT /projects/:id/merge_requests/:iid`, with `PRIVATE-TOKEN`.
fn gitlab(
    state: &mut State,
    method: &str,
    path: &str,
    token: &str,
    body: &Value,
) -> (StatusCode, Value, Option<u32>) {
    if token != state.token {
        return (
            StatusCode::UNAUTHORIZED,
            json!({"message": "401 Unauthorized"}),
            None,
        );
    }
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ["projects", project, "merge_requests", rest @ ..] = parts.as_slice() else {
        return (
            StatusCode::NOT_FOUND,
            json!({"message": "404 Not found"}),
            None,
        );
    };
    let repo = decoded(project);
    if method != "GET" && state.limited > 0 {
        state.limited -= 1;
        return (
            StatusCode::TOO_MANY_REQUESTS,
            json!({"message": "429 Too Many Requests"}),
            Some(state.retry_after),
        );
    }
    let field = |key: &str| body[key].as_str().unwrap_or_default().to_owned();
    match (method, rest) {
        ("GET", []) => {
            let branch = query
                .split('&')
                .find_map(|p| p.strip_prefix("source_branch="))
                .map(decoded);
            let found: Vec<Value> = state
                .pulls
                .iter()
                .filter(|p| p.repo == repo && branch.as_ref().is_none_or(|b| *b == p.head))
                .map(merge_json)
                .collect();
            (StatusCode::OK, Value::Array(found), None)
        }
        ("POST", []) => {
            let pull = Pull {
                number: state.pulls.len() as u64 + 1,
                repo,
                head: field("source_branch"),
                base: field("target_branch"),
                title: field("title"),
                body: field("description"),
            };
            let value = merge_json(&pull);
            state.pulls.push(pull);
            (StatusCode::CREATED, value, None)
        }
        ("PUT", [iid]) => {
            let iid: u64 = iid.parse().unwrap_or(0);
            let Some(pull) = state
                .pulls
                .iter_mut()
                .find(|p| p.repo == repo && p.number == iid)
            else {
                return (
                    StatusCode::NOT_FOUND,
                    json!({"message": "404 Not found"}),
                    None,
                );
            };
            pull.title = field("title");
            pull.body = field("description");
            let value = merge_json(pull);
            (StatusCode::OK, value, None)
        }
        _ => (
            StatusCode::NOT_FOUND,
            json!({"message": "404 Not found"}),
            None,
        ),
    }
}
