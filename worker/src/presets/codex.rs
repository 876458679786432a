//! Codex CLI (`@openai/codex`): `codex exec --json`, the prompt on standard input.
//!
//! Plain `codex exec` is read-only (a patch is refused and codex still exits 0), so braid
//! asks for full access: braid's sandbox, not Codex's, is what contains it. Provider, model
//! and key go in the attempt's own `CODEX_HOME/config.toml`; one `CODEX_HOME` shared by
//! concurrent attempts races. Events: `item.*` (agent_message, command_execution,
//! file_change), `turn.completed {usage}`, `turn.failed`, `error`; no cost.

use serde_json::Value;

use super::{Context, Event, Invocation, Preset, Read, count, cut};
use braid_shared::usage::Usage;

pub struct Codex;

/// The variable the attempt's config names for the key of a custom endpoint.
const KEY_VAR: &str = "BRAID_CODEX_KEY";

impl Preset for Codex {
    fn name(&self) -> &'static str {
        "codex"
    }
    fn program(&self) -> &'static str {
        "codex"
    }
    fn package(&self) -> &'static str {
        "npm @openai/codex"
    }
    fn key_env(&self) -> &'static str {
        "OPENAI_API_KEY"
    }
    fn endpoint(&self) -> Option<&'static str> {
        Some("https://api.openai.com/v1")
    }

    fn invocation(&self, cx: &Context<'_>) -> std::io::Result<Invocation> {
        let codex_home = cx.home.join(".codex");
        std::fs::create_dir_all(&codex_home)?;
        cx.seed(".codex/auth.json", ".codex/auth.json")?;
        // Nothing beside the model: no update check, no metrics (in a sandbox with only
        // the model's endpoint each would wait out its own timeouts).
        let mut config = String::from("check_for_update_on_startup = false\n");
        if let Some(model) = cx.model() {
            config.push_str(&format!("model = {}\n", toml_str(model)));
        }
        let mut inv = Invocation {
            stdin: true,
            ..Invocation::default()
        };
        if let Some(url) = cx.base_url() {
            config.push_str(&format!(
                "model_provider = \"braid\"\n\n[model_providers.braid]\nname = \"braid\"\nbase_url = {}\nwire_api = \"responses\"\nenv_key = \"{KEY_VAR}\"\n",
                toml_str(url)
            ));
            if let Some(key) = &cx.key {
                inv.secrets.push((KEY_VAR.into(), key.clone()));
            }
        } else if let Some(key) = &cx.key {
            inv.secrets.push(("OPENAI_API_KEY".into(), key.clone()));
            inv.secrets.push(("CODEX_API_KEY".into(), key.clone()));
        }
        config.push_str("\n[analytics]\nenabled = false\n\n[otel]\nexporter = \"none\"\nmetrics_exporter = \"none\"\n");
        cx.write(".codex/config.toml", &config)?;
        inv.env
            .push(("CODEX_HOME".into(), codex_home.to_string_lossy().into()));
        inv.args = [
            "exec",
            "--json",
            "--ephemeral",
            "--color",
            "never",
            "--skip-git-repo-check",
            "--sandbox",
            "danger-full-access",
            "-c",
            "approval_policy=never",
        ]
        .map(String::from)
        .to_vec();
        inv.args.extend(cx.agent.args.iter().cloned());
        inv.args.push("-".into());
        Ok(inv)
    }

    fn reader(&self) -> Box<dyn Read> {
        Box::new(Reader::default())
    }
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

#[derive(Default)]
struct Reader {
    /// Model replies in this turn: each tool call and each message.
    replies: u32,
}

impl Read for Reader {
    fn line(&mut self, line: &str) -> Vec<Event> {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            return Vec::new();
        };
        let item = &v["item"];
        let kind = item["type"].as_str().unwrap_or_default();
        if matches!(
            (v["type"].as_str(), kind),
            (Some("item.started"), "command_execution")
                | (
                    Some("item.completed"),
                    "file_change" | "mcp_tool_call" | "web_search" | "agent_message"
                )
        ) {
            self.replies += 1;
        }
        match (
            v["type"].as_str().unwrap_or_default(),
            item["type"].as_str(),
        ) {
            ("item.started", Some("command_execution")) => vec![Event::Tool {
                name: "shell".into(),
                detail: cut(item["command"].as_str().unwrap_or_default(), 200),
            }],
            ("item.completed", Some("command_execution")) => vec![Event::ToolResult {
                ok: item["exit_code"].as_i64() == Some(0),
            }],
            ("item.completed", Some("file_change")) => vec![
                Event::Tool {
                    name: "apply_patch".into(),
                    detail: cut(&item["changes"].to_string(), 200),
                },
                Event::ToolResult {
                    ok: item["status"] != "failed",
                },
            ],
            ("item.completed", Some("mcp_tool_call" | "web_search")) => vec![Event::Tool {
                name: item["type"].as_str().unwrap_or_default().into(),
                detail: cut(&item.to_string(), 200),
            }],
            ("item.completed", Some("agent_message")) => vec![Event::Message(
                item["text"].as_str().unwrap_or_default().into(),
            )],
            ("turn.completed", _) => {
                let u = &v["usage"];
                // A turn is a model reply: each tool call and the final message.
                vec![Event::Usage(Usage {
                    input: count(u, "input_tokens"),
                    cached: count(u, "cached_input_tokens"),
                    output: count(u, "output_tokens"),
                    cost: None,
                    turns: Some(std::mem::take(&mut self.replies)),
                })]
            }
            ("turn.failed", _) => vec![Event::Failed(
                v["error"]["message"]
                    .as_str()
                    .unwrap_or("the turn failed")
                    .into(),
            )],
            ("error", _) => vec![Event::Error(
                v["message"].as_str().unwrap_or("an error").into(),
            )],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_usage_and_messages() {
        let mut r = Reader::default();
        r.line(r#"{"type":"item.started","item":{"id":"i","type":"command_execution","command":"ls"}}"#);
        r.line(r#"{"type":"item.completed","item":{"id":"i","type":"agent_message","text":"x"}}"#);
        let ev = r.line(r#"{"type":"turn.completed","usage":{"input_tokens":2200,"cached_input_tokens":1100,"output_tokens":70}}"#);
        assert_eq!(
            ev,
            vec![Event::Usage(Usage {
                input: Some(2200),
                cached: Some(1100),
                output: Some(70),
                cost: None,
                turns: Some(2),
            })]
        );
        let ev = r.line(
            r#"{"type":"item.completed","item":{"id":"i","type":"agent_message","text":"Done."}}"#,
        );
        assert_eq!(ev, vec![Event::Message("Done.".into())]);
        assert!(r.line("not json").is_empty());
        let ev = r.line(r#"{"type":"turn.failed","error":{"message":"stream error: 401"}}"#);
        assert_eq!(ev, vec![Event::Failed("stream error: 401".into())]);
    }
}
