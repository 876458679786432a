//! Claude Code (`@anthropic-ai/claude-code`): `claude -p --output-format stream-json`.
//!
//! Edits are allowed without asking (`bypassPermissions`, which as root needs
//! `IS_SANDBOX=1`: braid's sandbox is the one that contains it). A denied tool use still
//! exits 0 with `subtype: success` and lists `permission_denials`: that is the attempt's
//! failure. The `result` event has the totals: `total_cost_usd`, `usage` (cache reads counted
//! apart from input), `num_turns`, `is_error`, the final text.

use serde_json::Value;

use super::{Context, Event, Invocation, Preset, Read, count, cut};
use braid_shared::usage::Usage;

pub struct Claude;

impl Preset for Claude {
    fn name(&self) -> &'static str {
        "claude"
    }
    fn program(&self) -> &'static str {
        "claude"
    }
    fn package(&self) -> &'static str {
        "npm @anthropic-ai/claude-code"
    }
    fn key_env(&self) -> &'static str {
        "ANTHROPIC_API_KEY"
    }
    fn endpoint(&self) -> Option<&'static str> {
        Some("https://api.anthropic.com")
    }

    fn invocation(&self, cx: &Context<'_>) -> std::io::Result<Invocation> {
        let config = cx.home.join(".claude");
        std::fs::create_dir_all(&config)?;
        cx.seed(".claude/.credentials.json", ".claude/.credentials.json")?;
        let mut inv = Invocation {
            stdin: true,
            ..Invocation::default()
        };
        inv.env = vec![
            ("CLAUDE_CONFIG_DIR".into(), config.to_string_lossy().into()),
            (
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into(),
                "1".into(),
            ),
            ("DISABLE_AUTOUPDATER".into(), "1".into()),
            ("IS_SANDBOX".into(), "1".into()),
        ];
        if let Some(url) = cx.base_url() {
            inv.env.push(("ANTHROPIC_BASE_URL".into(), url.into()));
        }
        if let Some(key) = &cx.key {
            inv.secrets.push(("ANTHROPIC_API_KEY".into(), key.clone()));
        }
        inv.args = [
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--no-session-persistence",
            "--permission-mode",
            "bypassPermissions",
        ]
        .map(String::from)
        .to_vec();
        if let Some(model) = cx.model() {
            inv.args.extend(["--model".into(), model.into()]);
        }
        inv.args.extend(cx.agent.args.iter().cloned());
        Ok(inv)
    }

    fn reader(&self) -> Box<dyn Read> {
        Box::new(Reader)
    }
}

struct Reader;

impl Read for Reader {
    fn line(&mut self, line: &str) -> Vec<Event> {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            return Vec::new();
        };
        match v["type"].as_str().unwrap_or_default() {
            "assistant" => v["message"]["content"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|block| match block["type"].as_str() {
                    Some("text") => Some(Event::Message(
                        block["text"].as_str().unwrap_or_default().into(),
                    )),
                    Some("tool_use") => Some(Event::Tool {
                        name: block["name"].as_str().unwrap_or_default().into(),
                        detail: cut(&block["input"].to_string(), 200),
                    }),
                    _ => None,
                })
                .collect(),
            "user" => v["message"]["content"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|block| block["type"] == "tool_result")
                .map(|block| Event::ToolResult {
                    ok: block["is_error"] != true,
                })
                .collect(),
            "result" => {
                let u = &v["usage"];
                let fresh = count(u, "input_tokens");
                let read = count(u, "cache_read_input_tokens");
                let made = count(u, "cache_creation_input_tokens");
                let input = fresh.map(|f| f + read.unwrap_or(0) + made.unwrap_or(0));
                let mut events = vec![Event::Total(Usage {
                    input,
                    cached: read,
                    output: count(u, "output_tokens"),
                    cost: v["total_cost_usd"].as_f64(),
                    turns: count(&v, "num_turns").map(|n| n as u32),
                })];
                let text = v["result"].as_str().unwrap_or_default();
                if !text.is_empty() {
                    events.push(Event::Message(text.into()));
                }
                let denials = v["permission_denials"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if v["is_error"] == true || v["subtype"].as_str().is_some_and(|s| s != "success") {
                    let why = if text.is_empty() {
                        v["subtype"].as_str().unwrap_or("error").to_owned()
                    } else {
                        text.to_owned()
                    };
                    events.push(Event::Failed(format!(
                        "Claude Code ended with an error: {}",
                        cut(&why, 300)
                    )));
                } else if !denials.is_empty() {
                    let tools: Vec<String> = denials
                        .iter()
                        .map(|d| {
                            let input = &d["tool_input"];
                            let target = input["file_path"]
                                .as_str()
                                .or(input["command"].as_str())
                                .unwrap_or_default();
                            format!(
                                "{} {}",
                                d["tool_name"].as_str().unwrap_or("a tool"),
                                cut(target, 120)
                            )
                            .trim()
                            .to_owned()
                        })
                        .collect();
                    events.push(Event::Failed(format!(
                        "Claude Code was refused {} tool use{}: {}",
                        tools.len(),
                        if tools.len() == 1 { "" } else { "s" },
                        tools.join(", ")
                    )));
                }
                events
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_count_cache_reads_as_input() {
        let mut r = Reader;
        let ev = r.line(r#"{"type":"result","subtype":"success","is_error":false,"num_turns":2,"result":"Done.","total_cost_usd":0.0078,"usage":{"input_tokens":1100,"cache_creation_input_tokens":0,"cache_read_input_tokens":1100,"output_tokens":70},"permission_denials":[]}"#);
        assert_eq!(
            ev,
            vec![
                Event::Total(Usage {
                    input: Some(2200),
                    cached: Some(1100),
                    output: Some(70),
                    cost: Some(0.0078),
                    turns: Some(2),
                }),
                Event::Message("Done.".into())
            ]
        );
    }

    #[test]
    fn denied_edits_are_a_failure() {
        let mut r = Reader;
        let ev = r.line(r#"{"type":"result","subtype":"success","is_error":false,"num_turns":2,"result":"I could not.","usage":{},"permission_denials":[{"tool_name":"Write","tool_use_id":"t","tool_input":{"file_path":"/w/a.txt","content":"x"}}]}"#);
        assert_eq!(
            ev.last(),
            Some(&Event::Failed(
                "Claude Code was refused 1 tool use: Write /w/a.txt".into()
            ))
        );
    }
}
