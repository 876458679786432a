//! opencode (`opencode-ai`): `opencode run --format json PROMPT`.
//!
//! Its config, data, cache and state folders follow the XDG variables, all pointed into
//! the attempt's home. An endpoint of the plan's becomes an OpenAI-compatible provider
//! `braid` in the attempt's `opencode.json`. Each `step_finish` event carries that step's
//! tokens (cache reads counted apart from input) and cost.

use serde_json::{Value, json};

use super::{Context, Event, Invocation, Preset, Read, count, cut};
use braid_shared::usage::Usage;

pub struct Opencode;

/// The variable the attempt's config names for the key of a custom endpoint.
const KEY_VAR: &str = "BRAID_OPENCODE_KEY";

impl Preset for Opencode {
    fn name(&self) -> &'static str {
        "opencode"
    }
    fn program(&self) -> &'static str {
        "opencode"
    }
    fn package(&self) -> &'static str {
        "npm opencode-ai"
    }
    fn key_env(&self) -> &'static str {
        "OPENAI_API_KEY"
    }

    fn invocation(&self, cx: &Context<'_>) -> std::io::Result<Invocation> {
        let mut inv = Invocation::default();
        let xdg = [
            ("XDG_CONFIG_HOME", ".config"),
            ("XDG_DATA_HOME", ".local/share"),
            ("XDG_CACHE_HOME", ".cache"),
            ("XDG_STATE_HOME", ".local/state"),
        ];
        for (var, dir) in xdg {
            let path = cx.home.join(dir);
            std::fs::create_dir_all(&path)?;
            inv.env.push((var.into(), path.to_string_lossy().into()));
        }
        cx.seed(
            ".local/share/opencode/auth.json",
            ".local/share/opencode/auth.json",
        )?;
        let mut config = json!({"$schema": "https://opencode.ai/config.json",
            "autoupdate": false, "share": "disabled"});
        match (cx.base_url(), cx.model()) {
            (Some(url), model) => {
                let model = model.unwrap_or("default");
                config["provider"] = json!({"braid": {"npm": "@ai-sdk/openai-compatible",
                    "name": "braid", "options": {"baseURL": url, "apiKey": format!("{{env:{KEY_VAR}}}")},
                    "models": {model: {"name": model}}}});
                config["model"] = json!(format!("braid/{model}"));
                if let Some(key) = &cx.key {
                    inv.secrets.push((KEY_VAR.into(), key.clone()));
                }
            }
            (None, Some(model)) => config["model"] = json!(model),
            (None, None) => {}
        }
        if cx.base_url().is_none()
            && let Some(key) = &cx.key
        {
            inv.secrets.push((self.key_env().into(), key.clone()));
        }
        cx.write(".config/opencode/opencode.json", &config.to_string())?;
        inv.args = ["run", "--format", "json"].map(String::from).to_vec();
        inv.args.extend(cx.agent.args.iter().cloned());
        inv.args.push(cx.prompt.to_owned());
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
        let part = &v["part"];
        match v["type"].as_str().unwrap_or_default() {
            "text" => vec![Event::Message(
                part["text"].as_str().unwrap_or_default().into(),
            )],
            "tool_use" => vec![
                Event::Tool {
                    name: part["tool"].as_str().unwrap_or_default().into(),
                    detail: cut(&part["state"]["input"].to_string(), 200),
                },
                Event::ToolResult {
                    ok: part["state"]["status"] == "completed",
                },
            ],
            "step_finish" => {
                let t = &part["tokens"];
                let read = count(&t["cache"], "read").unwrap_or(0);
                let write = count(&t["cache"], "write").unwrap_or(0);
                let cost = part["cost"].as_f64().filter(|c| *c > 0.0);
                vec![Event::Usage(Usage {
                    input: count(t, "input").map(|i| i + read + write),
                    cached: Some(read),
                    output: count(t, "output").map(|o| o + count(t, "reasoning").unwrap_or(0)),
                    cost,
                    turns: Some(1),
                })]
            }
            "error" => {
                let e = &v["error"];
                let text = e["data"]["message"]
                    .as_str()
                    .or(e["message"].as_str())
                    .map(str::to_owned)
                    .unwrap_or_else(|| e.to_string());
                vec![Event::Failed(format!(
                    "opencode ended with an error: {}",
                    cut(&text, 300)
                ))]
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_add_up() {
        let mut r = Reader;
        let ev = r.line(r#"{"type":"step_finish","part":{"reason":"stop","tokens":{"total":1220,"input":300,"output":20,"reasoning":0,"cache":{"write":0,"read":900}},"cost":0}}"#);
        assert_eq!(
            ev,
            vec![Event::Usage(Usage {
                input: Some(1200),
                cached: Some(900),
                output: Some(20),
                cost: None,
                turns: Some(1),
            })]
        );
    }
}
