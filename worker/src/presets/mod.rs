//! Presets: the agent CLIs braid knows how to drive headless, one module a CLI.
//!
//! A preset knows four things about its CLI, and nothing else in braid does: the command
//! line that runs it non-interactively in a worktree, the config folder it needs (made fresh
//! for every attempt, seeded from the user's own login where there is one, never written
//! back), the variables that name its endpoint and key, and how to read its event stream.
//! Reading happens as the stream arrives ([`Cmd::lines`]), so usage printed last is never
//! lost to the log cap. What it reads becomes [`Event`]s, written one JSON object a line to
//! `logs/<task>.<n>.events.jsonl`, and a [`Tally`]: usage, final message, and the agent's own
//! failure signals (a denied edit, an error result, a provider's refusal).

mod aider;
mod claude;
mod codex;
mod gemini;
mod opencode;

use std::path::{Path, PathBuf};

use braid_shared::proto::{AgentSpec, ProviderFault};
use braid_shared::secret::Secret;
use braid_shared::usage::{Price, Usage};
use serde_json::{Value, json};

/// What a preset knows about its CLI.
pub trait Preset: Sync {
    /// The preset's name in plans: `codex`.
    fn name(&self) -> &'static str;
    /// The program it runs.
    fn program(&self) -> &'static str;
    /// Where the program comes from, for `braid agents` and errors.
    fn package(&self) -> &'static str;
    /// The variable that holds the API key when the plan names none.
    fn key_env(&self) -> &'static str;
    /// The endpoint the CLI talks to when the plan names none (with an API key), for
    /// `network: model`; `None` where it depends on the model or the login.
    fn endpoint(&self) -> Option<&'static str> {
        None
    }
    /// The command line, environment and config folder for one attempt.
    fn invocation(&self, cx: &Context<'_>) -> std::io::Result<Invocation>;
    /// A reader of the CLI's output.
    fn reader(&self) -> Box<dyn Read>;
    /// Files the CLI leaves in the worktree for itself (caches, histories): removed after
    /// it ends unless they were there before, so they are not committed.
    fn litter(&self) -> &'static [&'static str] {
        &[]
    }
}

/// Everything a preset needs to make one attempt's invocation.
#[derive(Debug)]
pub struct Context<'a> {
    /// The plan's agent.
    pub agent: &'a AgentSpec,
    /// The prompt.
    pub prompt: &'a str,
    /// The attempt's worktree.
    pub worktree: &'a Path,
    /// The attempt's own home: an empty folder the CLI's config goes in.
    pub home: &'a Path,
    /// The user's home, for seeding logins.
    pub user_home: Option<PathBuf>,
    /// The API key, when one is set.
    pub key: Option<Secret>,
    /// Prices for the model, for CLIs that want them up front.
    pub price: Option<Price>,
}

impl Context<'_> {
    /// The model, when the plan names one.
    pub fn model(&self) -> Option<&str> {
        Some(self.agent.model.as_str()).filter(|m| !m.is_empty())
    }

    /// The endpoint, when the plan names one, without a trailing `/`.
    pub fn base_url(&self) -> Option<&str> {
        Some(self.agent.base_url.trim_end_matches('/')).filter(|u| !u.is_empty())
    }

    /// Copies `from` (relative to the user's home) to `to` (relative to the attempt's home)
    /// when the user has it: a login the CLI made.
    pub fn seed(&self, from: &str, to: &str) -> std::io::Result<()> {
        let Some(home) = &self.user_home else {
            return Ok(());
        };
        let source = home.join(from);
        if !source.is_file() {
            return Ok(());
        }
        let target = self.home.join(to);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(&source, &target)?;
        Ok(())
    }

    /// Writes `content` to `path` under the attempt's home.
    pub fn write(&self, path: &str, content: &str) -> std::io::Result<PathBuf> {
        let target = self.home.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, content)?;
        Ok(target)
    }
}

/// How to run the CLI for one attempt.
#[derive(Debug, Default)]
pub struct Invocation {
    /// Arguments after the program.
    pub args: Vec<String>,
    /// Variables for the CLI, beside the few braid passes through.
    pub env: Vec<(String, String)>,
    /// Variables that hold secrets.
    pub secrets: Vec<(String, Secret)>,
    /// Whether the prompt goes on standard input.
    pub stdin: bool,
    /// A file the CLI writes its own record to, read once it ended (aider's analytics).
    pub record: Option<PathBuf>,
}

/// The variables of braid's own environment a preset's CLI gets; everything else is left
/// out, so nothing stray (a variable that changes how the CLI behaves) slips through.
pub const PASSED_ENV: &[&str] = &[
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "no_proxy",
];

/// What `PROGRAM --version` printed, or why it could not run.
pub async fn version(preset: &dyn Preset) -> Result<String, String> {
    let cmd = braid_shared::exec::Cmd::new(preset.program(), std::env::temp_dir())
        .args(["--version"])
        .timeout(Some(std::time::Duration::from_secs(30)));
    match cmd.run().await {
        Ok(done) if done.ending.success() => {
            let out = String::from_utf8_lossy(&done.stdout);
            let line = out
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or_default();
            Ok(line.trim().to_owned())
        }
        Ok(done) => Err(format!(
            "`{} --version` failed: {}",
            preset.program(),
            String::from_utf8_lossy(&done.stderr).trim()
        )),
        Err(_) => Err(format!(
            "`{}` is not installed (install {})",
            preset.program(),
            preset.package()
        )),
    }
}

/// Every preset.
pub fn all() -> [&'static dyn Preset; 5] {
    [
        &codex::Codex,
        &claude::Claude,
        &gemini::Gemini,
        &opencode::Opencode,
        &aider::Aider,
    ]
}

/// The preset called `name`.
pub fn find(name: &str) -> Option<&'static dyn Preset> {
    all().into_iter().find(|p| p.name() == name)
}

/// Something the agent did, normalised across CLIs.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The agent said something (the last one is its final message).
    Message(String),
    /// The agent called a tool.
    Tool {
        /// The tool's name.
        name: String,
        /// What it was called with, in a line.
        detail: String,
    },
    /// A tool ended.
    ToolResult {
        /// Whether it succeeded.
        ok: bool,
    },
    /// Usage to add to the running total.
    Usage(Usage),
    /// The total usage so far, replacing the running total.
    Total(Usage),
    /// The agent reported an error (the provider's or its own).
    Error(String),
    /// The agent says its work failed although it may exit 0: a denied edit, an error
    /// result.
    Failed(String),
}

impl Event {
    /// The event as one JSON object for the events file.
    pub fn to_json(&self, at_ms: u64) -> Value {
        let mut v = match self {
            Event::Message(text) => json!({"type": "message", "text": text}),
            Event::Tool { name, detail } => json!({"type": "tool", "name": name, "detail": detail}),
            Event::ToolResult { ok } => json!({"type": "tool_result", "ok": ok}),
            Event::Usage(u) => json!({"type": "usage", "usage": usage_json(u)}),
            Event::Total(u) => json!({"type": "usage_total", "usage": usage_json(u)}),
            Event::Error(text) => json!({"type": "error", "text": text}),
            Event::Failed(text) => json!({"type": "failed", "text": text}),
        };
        v["t_ms"] = json!(at_ms);
        v
    }
}

/// Usage as report.json writes it.
pub fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input,
        "cached_input_tokens": u.cached,
        "output_tokens": u.output,
        "cost_usd": u.cost,
        "turns": u.turns,
    })
}

/// Reads one CLI's output.
pub trait Read: Send {
    /// One line of standard output: the events it holds.
    fn line(&mut self, line: &str) -> Vec<Event>;
    /// The CLI's own record file, once it ended, when the invocation named one.
    fn record(&mut self, _content: &str) -> Vec<Event> {
        Vec::new()
    }
}

/// What the events of one attempt add up to.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Usage so far.
    pub usage: Usage,
    /// The last message.
    pub message: Option<String>,
    /// The agent's own failure signal.
    pub failed: Option<String>,
    /// The last error the agent reported.
    pub error: Option<String>,
    /// How the provider refused, when the agent knows for sure (the built-in agent reads
    /// the HTTP status); else it is judged from the error's words.
    pub fault: Option<ProviderFault>,
}

impl Tally {
    /// Takes in one event.
    pub fn add(&mut self, event: &Event) {
        match event {
            Event::Message(text) if !text.trim().is_empty() => {
                self.message = Some(text.clone());
            }
            Event::Message(_) | Event::Tool { .. } | Event::ToolResult { .. } => {}
            Event::Usage(u) => self.usage = self.usage.plus(*u),
            Event::Total(u) => self.usage = *u,
            Event::Error(text) => self.error = Some(text.clone()),
            Event::Failed(text) => self.failed = Some(text.clone()),
        }
    }

    /// How the provider refused, judged from the agent's errors.
    pub fn fault(&self) -> ProviderFault {
        if let Some(fault) = self.fault {
            return fault;
        }
        let text = [self.error.as_deref(), self.failed.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        fault_of(&text)
    }
}

/// How the provider refused, judged from an error's text.
pub fn fault_of(text: &str) -> ProviderFault {
    let t = text.to_ascii_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| t.contains(w));
    if any(&[
        "insufficient_quota",
        "exceeded your current quota",
        "quota exceeded",
        "billing",
        "credit balance is too low",
        "invalid_api_key",
        "invalid api key",
        "incorrect api key",
        "authentication_error",
        "unauthenticated",
        "unauthorized",
        "401",
        "permission_denied",
        "api key not valid",
    ]) {
        ProviderFault::Terminal
    } else if any(&[
        "429",
        "rate limit",
        "rate_limit",
        "too many requests",
        "overloaded",
        "500",
        "502",
        "503",
        "504",
        "internal server error",
        "service unavailable",
        "resource_exhausted",
    ]) {
        ProviderFault::Transient
    } else {
        ProviderFault::Unspecified
    }
}

/// A field of a JSON object as a count.
pub fn count(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

/// Cuts `text` to at most `max` bytes at a character boundary.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_from_provider_errors() {
        assert_eq!(
            fault_of("You exceeded your current quota, please check your plan"),
            ProviderFault::Terminal
        );
        assert_eq!(
            fault_of("unexpected status 401 Unauthorized"),
            ProviderFault::Terminal
        );
        assert_eq!(
            fault_of("API Error: 429 rate limit reached"),
            ProviderFault::Transient
        );
        assert_eq!(fault_of("the tests failed"), ProviderFault::Unspecified);
    }
}
