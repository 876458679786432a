//! Gemini CLI (`@google/gemini-cli`): `gemini -o stream-json --approval-mode yolo`, the prompt
//! on standard input.
//!
//! With a key, `HOME/.gemini/settings.json` must select `gemini-api-key` auth (else it exits
//! 41 asking for a login). It prints non-JSON lines too. The `result` event's `stats` has
//! the tokens (input with cached ones included), no cost.

use serde_json::{Value, json};

use super::{Context, Event, Invocation, Preset, Read, count, cut};
use braid_shared::usage::Usage;

pub struct Gemini;

impl Preset for Gemini {
    fn name(&self) -> &'static str {
        "gemini"
    }
    fn program(&self) -> &'static str {
        "gemini"
    }
    fn package(&self) -> &'static str {
        "npm @google/gemini-cli"
    }
    fn key_env(&self) -> &'static str {
        "GEMINI_API_KEY"
    }
    fn endpoint(&self) -> Option<&'static str> {
        Some("https://generativelanguage.googleapis.com")
    }

    fn invocation(&self, cx: &Context<'_>) -> std::io::Result<Invocation> {
        let mut inv = Invocation {
            stdin: true,
            ..Invocation::default()
        };
        match &cx.key {
            Some(key) => {
                let settings = json!({"security": {"auth": {"selectedType": "gemini-api-key"}},
                    "general": {"disableAutoUpdate": true}, "privacy": {"usageStatisticsEnabled": false}});
                cx.write(".gemini/settings.json", &settings.to_string())?;
                inv.secrets.push(("GEMINI_API_KEY".into(), key.clone()));
            }
            None => {
                for file in ["settings.json", "oauth_creds.json", "google_accounts.json"] {
                    cx.seed(&format!(".gemini/{file}"), &format!(".gemini/{file}"))?;
                }
            }
        }
        if let Some(url) = cx.base_url() {
            inv.env.push(("GOOGLE_GEMINI_BASE_URL".into(), url.into()));
        }
        inv.args = [
            "-o",
            "stream-json",
            "--skip-trust",
            "--approval-mode",
            "yolo",
        ]
        .map(String::from)
        .to_vec();
        if let Some(model) = cx.model() {
            inv.args.extend(["-m".into(), model.into()]);
        }
        inv.args.extend(cx.agent.args.iter().cloned());
        Ok(inv)
    }

    fn reader(&self) -> Box<dyn Read> {
        Box::new(Reader::default())
    }
}

#[derive(Default)]
struct Reader {
    /// The assistant's message so far: it arrives in deltas.
    text: String,
    tools: u32,
}

impl Read for Reader {
    fn line(&mut self, line: &str) -> Vec<Event> {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            return Vec::new();
        };
        match v["type"].as_str().unwrap_or_default() {
            "message" if v["role"] == "assistant" => {
                let part = v["content"].as_str().unwrap_or_default();
                if v["delta"] == true {
                    self.text.push_str(part);
                } else {
                    self.text = part.to_owned();
                }
                Vec::new()
            }
            "tool_use" => {
                self.tools += 1;
                let mut events = self.flush();
                events.push(Event::Tool {
                    name: v["tool_name"].as_str().unwrap_or_default().into(),
                    detail: cut(&v["parameters"].to_string(), 200),
                });
                events
            }
            "tool_result" => vec![Event::ToolResult {
                ok: v["status"] == "success",
            }],
            "error" => vec![Event::Error(
                v["message"].as_str().unwrap_or("an error").into(),
            )],
            "result" => {
                let mut events = self.flush();
                let s = &v["stats"];
                let has_text = events.iter().any(|e| matches!(e, Event::Message(_)));
                events.push(Event::Total(Usage {
                    input: count(s, "input_tokens"),
                    cached: count(s, "cached"),
                    output: count(s, "output_tokens"),
                    cost: None,
                    // A turn is a model reply: each tool call and the final message.
                    turns: Some(self.tools + u32::from(has_text)),
                }));
                if v["status"] != "success" {
                    let why = v["error"]["message"]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v["status"].to_string());
                    events.push(Event::Failed(format!(
                        "Gemini CLI ended with an error: {}",
                        cut(&why, 300)
                    )));
                }
                events
            }
            _ => Vec::new(),
        }
    }
}

impl Reader {
    fn flush(&mut self) -> Vec<Event> {
        if self.text.trim().is_empty() {
            return Vec::new();
        }
        vec![Event::Message(std::mem::take(&mut self.text))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_make_one_message_and_stats_the_usage() {
        let mut r = Reader::default();
        assert!(
            r.line("Warning: 256-color support not detected.")
                .is_empty()
        );
        r.line(r#"{"type":"tool_use","tool_name":"write_file","parameters":{}}"#);
        r.line(r#"{"type":"message","role":"assistant","content":"Created ","delta":true}"#);
        r.line(r#"{"type":"message","role":"assistant","content":"it.","delta":true}"#);
        let ev = r.line(r#"{"type":"result","status":"success","stats":{"input_tokens":2200,"output_tokens":70,"cached":1100}}"#);
        assert_eq!(
            ev,
            vec![
                Event::Message("Created it.".into()),
                Event::Total(Usage {
                    input: Some(2200),
                    cached: Some(1100),
                    output: Some(70),
                    cost: None,
                    turns: Some(2),
                })
            ]
        );
    }
}
